//! A persistent team of threads: the caller and helper threads that spin (then park) waiting
//! for work, so that splitting a layer between two cores costs about a microsecond instead
//! of a thread-pool wake-up (tens of microseconds, 70 times per image). A single image uses a
//! team of two; a batch, one member per share of its images.
//!
//! A `Team` is `Send` but not `Sync`: one thread at a time posts jobs, so the job slot has
//! one writer. A job cannot reach its own team (a job is `Sync`, and a closure holding a
//! `&Team` is not), so jobs never nest. The assertion below stops the build if `Team` ever
//! becomes `Sync`.

use std::cell::{Cell, UnsafeCell};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Resolves only while `Team` is not `Sync`: with a `Sync` `Team` both impls apply and the
/// type of `_` is ambiguous, a compile error.
trait AmbiguousIfSync<A> {
    fn check() {}
}
impl<T: ?Sized> AmbiguousIfSync<()> for T {}
impl<T: ?Sized + Sync> AmbiguousIfSync<u8> for T {}
const _: fn() = || <Team as AmbiguousIfSync<_>>::check();

/// A job: called with part 0 on the caller's thread and part `p` on helper `p`.
type Job<'a> = &'a (dyn Fn(usize) + Sync);

struct Shared {
    /// Incremented for each job; the helpers run a job when they see a new value.
    posted: AtomicU64,
    /// Per helper: set to the job's number when it has finished its part.
    done: Box<[AtomicU64]>,
    stop: AtomicBool,
    panicked: AtomicBool,
    /// The current job and its number of parts, valid from `posted` until every `done`
    /// reaches its number.
    job: UnsafeCell<Option<(Job<'static>, usize)>>,
}

// SAFETY: `job` is written only by the thread that owns the `Team` (which is not `Sync`, so
// there is one such thread at a time), before publishing `posted` (release) and after every
// `done` reached the previous job (acquire); the helpers read it only between the two.
unsafe impl Sync for Shared {}

pub struct Team {
    shared: Arc<Shared>,
    helpers: Vec<JoinHandle<()>>,
    /// Not `Sync`: `run` takes `&self` but needs to be the only poster.
    _not_sync: PhantomData<Cell<()>>,
}

/// Waits until every helper has finished job `n`, then clears the slot; runs on return and
/// on unwind alike, so `run` never leaves a helper holding a job whose borrow has ended.
struct Wait<'a> {
    shared: &'a Shared,
    n: u64,
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        for done in self.shared.done.iter() {
            while done.load(Ordering::Acquire) != self.n {
                std::hint::spin_loop();
            }
        }
        // SAFETY: every helper finished job `n` (acquire above) and reads the slot again only
        // after a new `posted`, which only the owning thread (this one) can publish.
        unsafe { *self.shared.job.get() = None };
        if std::thread::panicking() {
            // Part 0's panic is the one raised; a helper's panic must not resurface in the
            // next job.
            self.shared.panicked.store(false, Ordering::Release);
        }
    }
}

/// Spins this many times before parking.
const SPIN: u32 = 200_000;

impl Team {
    /// A team of two: the caller and one helper.
    pub fn new() -> std::io::Result<Team> {
        Team::with_size(2)
    }

    /// A team of `size` members (at least 1): the caller and `size - 1` helper threads.
    pub fn with_size(size: usize) -> std::io::Result<Team> {
        let helpers = size.max(1) - 1;
        let shared = Arc::new(Shared {
            posted: AtomicU64::new(0),
            done: (0..helpers).map(|_| AtomicU64::new(0)).collect(),
            stop: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
            job: UnsafeCell::new(None),
        });
        let mut team = Team {
            shared,
            helpers: Vec::with_capacity(helpers),
            _not_sync: PhantomData,
        };
        for i in 0..helpers {
            let s = team.shared.clone();
            // On an error, dropping `team` stops the helpers already started.
            team.helpers.push(
                std::thread::Builder::new()
                    .name(format!("repghost-team-{}", i + 1))
                    .spawn(move || helper(&s, i))?,
            );
        }
        Ok(team)
    }

    /// Members, the caller included.
    pub fn size(&self) -> usize {
        self.helpers.len() + 1
    }

    /// Runs `f(0)` here and `f(1)` on the first helper; returns when both are done. A panic
    /// in either part is raised here, after the helper has finished its part.
    pub fn run(&self, f: &(dyn Fn(usize) + Sync)) {
        self.run_parts(2, f);
    }

    /// Runs `f(0)` here and `f(p)` on helper `p` for every `p < parts` (at most the team's
    /// size); returns when all are done. A panic in any part is raised here, after every
    /// helper has finished its part.
    pub fn run_parts(&self, parts: usize, f: &(dyn Fn(usize) + Sync)) {
        assert!(
            (1..=self.size()).contains(&parts),
            "{parts} parts for a team of {}",
            self.size()
        );
        let s = &*self.shared;
        // SAFETY: the previous job is done (its `Wait` ran), so no helper is reading the
        // slot; they read it from the `posted` store below until their `done` reaches `n`,
        // and `wait` blocks until then on every path out of this function, unwinding
        // included, so the erased lifetime never outlives `f`.
        unsafe { *s.job.get() = Some((std::mem::transmute::<Job<'_>, Job<'static>>(f), parts)) };
        let n = s.posted.load(Ordering::Relaxed) + 1;
        let wait = Wait { shared: s, n };
        s.posted.store(n, Ordering::Release);
        // Every helper acknowledges every job (those past `parts` run nothing), so that none
        // can mistake a later job for this one.
        for h in &self.helpers {
            h.thread().unpark();
        }
        f(0);
        drop(wait);
        if s.panicked.swap(false, Ordering::AcqRel) {
            panic!("a kernel panicked on a helper thread");
        }
    }
}

/// Helper `i`'s loop: waits for a new job, runs part `i + 1` of it if the job has that many
/// parts, reports it done.
fn helper(s: &Shared, i: usize) {
    let mut seen = 0;
    loop {
        let mut spins = 0;
        let n = loop {
            let n = s.posted.load(Ordering::Acquire);
            if n != seen || s.stop.load(Ordering::Acquire) {
                break n;
            }
            spins += 1;
            if spins < SPIN {
                std::hint::spin_loop();
            } else {
                std::thread::park_timeout(std::time::Duration::from_millis(50));
            }
        };
        if s.stop.load(Ordering::Acquire) {
            return;
        }
        seen = n;
        // SAFETY: published before `posted` was incremented; alive until `done`.
        let job = unsafe { *s.job.get() };
        if let Some((job, parts)) = job {
            if i + 1 < parts && std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(i + 1))).is_err()
            {
                s.panicked.store(true, Ordering::Release);
            }
        }
        s.done[i].store(n, Ordering::Release);
    }
}

impl Team {
    /// Splits `dst` at `at` and runs `f(0, first half)` here and `f(1, second half)` on the
    /// helper: how the kernels share one output buffer between the two threads.
    pub fn halves<T: Send>(&self, dst: &mut [T], at: usize, f: &(dyn Fn(usize, &mut [T]) + Sync)) {
        let (d0, d1) = dst.split_at_mut(at);
        let parts = [
            (d0.as_mut_ptr() as usize, d0.len()),
            (d1.as_mut_ptr() as usize, d1.len()),
        ];
        self.run(&|p| {
            let (ptr, len) = parts[p];
            // SAFETY: the two parts are disjoint halves of `dst`, each used by one thread.
            let part = unsafe { std::slice::from_raw_parts_mut(ptr as *mut T, len) };
            f(p, part);
        });
    }
}

impl Drop for Team {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        for h in self.helpers.drain(..) {
            h.thread().unpark();
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Team;
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn both_parts_run_and_write_their_halves() {
        let team = Team::new().unwrap();
        let mut dst = vec![0.0f32; 7];
        team.halves(&mut dst, 3, &|p, part| part.fill(p as f32 + 1.0));
        assert_eq!(dst, [1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0]);
    }

    /// Part 0 panics at once while part 1 is still using data borrowed from this frame: `run`
    /// must wait for part 1 before the unwind frees that data, and then raise the panic.
    #[test]
    fn a_panic_on_the_callers_part_waits_for_the_helper() {
        let team = Team::new().unwrap();
        let finished = AtomicUsize::new(0);
        for round in 1..=3 {
            let data = vec![round; 1024];
            let r = catch_unwind(AssertUnwindSafe(|| {
                team.run(&|p| {
                    if p == 0 {
                        panic!("part 0 fails");
                    }
                    std::thread::sleep(Duration::from_millis(30));
                    assert!(data.iter().all(|&v| v == round));
                    finished.fetch_add(1, Ordering::SeqCst);
                })
            }));
            assert!(r.is_err(), "the panic of part 0 must propagate");
            // Read right after `run` unwound: part 1 has finished by then.
            assert_eq!(finished.load(Ordering::SeqCst), round);
        }
        // The team still works, and no panic is left over from the failed jobs.
        let mut dst = vec![0.0f32; 2];
        team.halves(&mut dst, 1, &|p, part| part[0] = p as f32);
        assert_eq!(dst, [0.0, 1.0]);
    }

    /// A team of four runs each part once, on four threads; a job of fewer parts leaves the
    /// other helpers idle.
    #[test]
    fn a_larger_team_runs_every_part_once() {
        let team = Team::with_size(4).unwrap();
        assert_eq!(team.size(), 4);
        for parts in [4, 3, 1] {
            let hits: Vec<AtomicUsize> = (0..4).map(|_| AtomicUsize::new(0)).collect();
            let threads = std::sync::Mutex::new(std::collections::HashSet::new());
            team.run_parts(parts, &|p| {
                hits[p].fetch_add(1, Ordering::SeqCst);
                threads.lock().unwrap().insert(std::thread::current().id());
            });
            let got: Vec<usize> = hits.iter().map(|h| h.load(Ordering::SeqCst)).collect();
            let want: Vec<usize> = (0..4).map(|p| usize::from(p < parts)).collect();
            assert_eq!(got, want);
            assert_eq!(threads.lock().unwrap().len(), parts);
        }
        let r = catch_unwind(AssertUnwindSafe(|| team.run_parts(5, &|_| {})));
        assert!(r.is_err(), "more parts than members is refused");
    }

    #[test]
    fn a_panic_on_the_helper_is_raised_on_the_caller_once() {
        let team = Team::new().unwrap();
        let r = catch_unwind(AssertUnwindSafe(|| {
            team.run(&|p| {
                if p == 1 {
                    panic!("part 1 fails");
                }
            })
        }));
        assert!(r.is_err());
        let calls = AtomicUsize::new(0);
        team.run(&|_| {
            calls.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
}
