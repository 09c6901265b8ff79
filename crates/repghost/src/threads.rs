//! The CPU threads a command computes with. One meaning everywhere: the deploy runtime's
//! threads (a batch split in one share per thread; a single image uses two), burn's CPU
//! backend and the data loader (both on rayon's global pool).

use std::num::NonZeroUsize;

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Threads(NonZeroUsize);

impl Threads {
    /// One per core this process may use.
    pub fn all() -> Threads {
        Threads(std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN))
    }

    /// `n` threads; 0 is an error.
    pub fn new(n: usize) -> Result<Threads> {
        NonZeroUsize::new(n)
            .map(Threads)
            .ok_or_else(|| Error::Invalid("--threads must be at least 1".into()))
    }

    /// `n` threads, or [`Threads::all`] where `None`.
    pub fn or_all(n: Option<usize>) -> Result<Threads> {
        n.map_or(Ok(Threads::all()), Threads::new)
    }

    pub fn get(self) -> usize {
        self.0.get()
    }

    /// Sizes rayon's global pool, which burn's CPU backend and the data loader use, to these
    /// threads. The pool is built once per process, on its first use: call this first. A
    /// second call with the same count is accepted; with another count it is an error.
    pub fn install(self) -> Result<()> {
        match rayon::ThreadPoolBuilder::new()
            .num_threads(self.get())
            .build_global()
        {
            Ok(()) => Ok(()),
            Err(_) if rayon::current_num_threads() == self.get() => Ok(()),
            Err(_) => Err(Error::Invalid(format!(
                "the CPU thread pool already runs {} threads; {} asked for",
                rayon::current_num_threads(),
                self.get()
            ))),
        }
    }
}

impl std::fmt::Display for Threads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::Threads;

    #[test]
    fn zero_threads_is_an_error_and_none_means_every_core() {
        assert!(Threads::new(0).is_err());
        assert_eq!(Threads::new(3).unwrap().get(), 3);
        assert_eq!(Threads::or_all(None).unwrap(), Threads::all());
        assert_eq!(Threads::or_all(Some(2)).unwrap().get(), 2);
    }
}
