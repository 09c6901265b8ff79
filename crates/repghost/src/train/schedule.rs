//! The learning-rate schedule of the official recipe, per optimizer step: linear warm-up
//! from `warmup_lr` to the peak, then half a cosine down to `min_lr` (timm `CosineLRScheduler`
//! stepped per update rather than per epoch, which is the same curve without the stairs).

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub peak: f64,
    pub warmup_lr: f64,
    pub min_lr: f64,
    pub warmup_steps: usize,
    pub total_steps: usize,
}

impl Schedule {
    /// Learning rate of update `step` (0-based).
    pub fn lr(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            let t = step as f64 / self.warmup_steps as f64;
            return self.warmup_lr + (self.peak - self.warmup_lr) * t;
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
        let t = ((step - self.warmup_steps) as f64 / span).min(1.0);
        self.min_lr + 0.5 * (self.peak - self.min_lr) * (1.0 + (std::f64::consts::PI * t).cos())
    }
}

/// Warm-up length for a run of `total_steps`: the requested epochs, but never more than a
/// tenth of the run, so that a one-epoch smoke run still spends most of its steps learning.
pub fn warmup_steps(warmup_epochs: f64, steps_per_epoch: usize, total_steps: usize) -> usize {
    let asked = (warmup_epochs * steps_per_epoch as f64).round() as usize;
    asked.min(total_steps / 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warms_up_then_decays_to_the_floor() {
        let s = Schedule {
            peak: 0.6,
            warmup_lr: 1e-4,
            min_lr: 1e-5,
            warmup_steps: 10,
            total_steps: 110,
        };
        assert_eq!(s.lr(0), 1e-4);
        assert!((s.lr(5) - (1e-4 + 0.5 * (0.6 - 1e-4))).abs() < 1e-12);
        assert!((s.lr(10) - 0.6).abs() < 1e-12);
        assert!((s.lr(60) - (1e-5 + 0.5 * (0.6 - 1e-5))).abs() < 1e-12);
        assert!((s.lr(110) - 1e-5).abs() < 1e-12);
        let lrs: Vec<f64> = (10..=110).map(|i| s.lr(i)).collect();
        assert!(lrs.windows(2).all(|w| w[1] <= w[0]));
    }

    #[test]
    fn short_runs_get_short_warmups() {
        assert_eq!(warmup_steps(5.0, 1000, 300_000), 5000);
        assert_eq!(warmup_steps(5.0, 94, 94), 9);
    }
}
