//! A two-thread team for single images: one helper thread that spins (then parks) waiting
//! for work, so that splitting a layer between two cores costs about a microsecond instead
//! of a thread-pool wake-up (tens of microseconds, 70 times per image).

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

/// A job: called with part 0 on the caller's thread and part 1 on the helper.
type Job<'a> = &'a (dyn Fn(usize) + Sync);

struct Shared {
    /// Incremented for each job; the helper runs a job when it sees a new value.
    posted: AtomicU64,
    /// Set to the job's number when the helper has finished it.
    done: AtomicU64,
    stop: AtomicBool,
    panicked: AtomicBool,
    /// The current job, valid from `posted` until `done` reaches its number.
    job: UnsafeCell<Option<Job<'static>>>,
}

// SAFETY: `job` is written only by the owner before publishing `posted` (release) and read
// by the helper after observing it (acquire); the owner does not write it again until `done`.
unsafe impl Sync for Shared {}

pub struct Team {
    shared: Arc<Shared>,
    helper: Option<JoinHandle<()>>,
}

/// Spins this many times before parking.
const SPIN: u32 = 200_000;

impl Team {
    pub fn new() -> std::io::Result<Team> {
        let shared = Arc::new(Shared {
            posted: AtomicU64::new(0),
            done: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
            job: UnsafeCell::new(None),
        });
        let s = shared.clone();
        let helper = std::thread::Builder::new()
            .name("repghost-team".into())
            .spawn(move || {
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
                    if let Some(job) = job {
                        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(1))).is_err() {
                            s.panicked.store(true, Ordering::Release);
                        }
                    }
                    s.done.store(n, Ordering::Release);
                }
            })?;
        Ok(Team {
            shared,
            helper: Some(helper),
        })
    }

    /// Runs `f(0)` here and `f(1)` on the helper; returns when both are done.
    pub fn run(&self, f: &(dyn Fn(usize) + Sync)) {
        let s = &self.shared;
        // SAFETY: the helper reads the job only between `posted` and `done`, and this call
        // does not return before `done`, so the erased lifetime never outlives `f`.
        unsafe { *s.job.get() = Some(std::mem::transmute::<Job<'_>, Job<'static>>(f)) };
        let n = s.posted.load(Ordering::Relaxed) + 1;
        s.posted.store(n, Ordering::Release);
        if let Some(h) = &self.helper {
            h.thread().unpark();
        }
        f(0);
        while s.done.load(Ordering::Acquire) != n {
            std::hint::spin_loop();
        }
        // SAFETY: the helper is done with the job.
        unsafe { *s.job.get() = None };
        if s.panicked.swap(false, Ordering::AcqRel) {
            panic!("a kernel panicked on the helper thread");
        }
    }
}

impl Team {
    /// Splits `dst` at `at` and runs `f(0, first half)` here and `f(1, second half)` on the
    /// helper: how the kernels share one output buffer between the two threads.
    pub fn halves(&self, dst: &mut [f32], at: usize, f: &(dyn Fn(usize, &mut [f32]) + Sync)) {
        let (d0, d1) = dst.split_at_mut(at);
        let parts = [
            (d0.as_mut_ptr() as usize, d0.len()),
            (d1.as_mut_ptr() as usize, d1.len()),
        ];
        self.run(&|p| {
            let (ptr, len) = parts[p];
            // SAFETY: the two parts are disjoint halves of `dst`, each used by one thread.
            let part = unsafe { std::slice::from_raw_parts_mut(ptr as *mut f32, len) };
            f(p, part);
        });
    }
}

impl Drop for Team {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(h) = self.helper.take() {
            h.thread().unpark();
            let _ = h.join();
        }
    }
}
