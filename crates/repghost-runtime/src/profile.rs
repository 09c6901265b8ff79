//! Optional per-layer-type timing (`Workspace::profile`), for finding where the time goes.

use std::time::Instant;

/// Milliseconds spent per kind of layer since the last reset.
#[derive(Clone, Debug, Default)]
pub struct Profile {
    pub entries: Vec<(&'static str, f64, u64)>,
}

impl Profile {
    pub fn add(&mut self, kind: &'static str, ms: f64) {
        match self.entries.iter_mut().find(|e| e.0 == kind) {
            Some(e) => {
                e.1 += ms;
                e.2 += 1;
            }
            None => self.entries.push((kind, ms, 1)),
        }
    }
}

/// Runs `f`, charging its time to `kind` when profiling is on.
#[inline]
pub fn timed<R>(p: &mut Option<Profile>, kind: &'static str, f: impl FnOnce() -> R) -> R {
    match p {
        None => f(),
        Some(p) => {
            let t = Instant::now();
            let r = f();
            p.add(kind, t.elapsed().as_secs_f64() * 1e3);
            r
        }
    }
}
