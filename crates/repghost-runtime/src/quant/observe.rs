//! What calibration records at each quantization point, and the clipping rules that turn it
//! into a per-tensor u8 scale and zero point.
//!
//! Values are counted in two histograms of magnitudes anchored at zero, one per sign, whose
//! bins double in width when a value falls beyond their range (pairs of bins merge exactly),
//! so that no first pass is needed to find the range.

/// Bins per sign.
const BINS: usize = 2048;

/// How the range of an activation is chosen from its calibration values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Clip {
    /// The smallest and largest values seen.
    MinMax,
    /// The `lower` and `100 - lower` percentiles of all values seen (`lower` in percent).
    Percentile { lower: f64 },
    /// The range, a fraction of the min/max one, whose quantization error (clipping plus
    /// rounding) over the values seen is least.
    Mse,
}

impl Clip {
    /// `minmax`, `mse` or `percentile:P` (P the upper percentile, e.g. `percentile:99.99`).
    pub fn parse(s: &str) -> Option<Clip> {
        match s {
            "minmax" => Some(Clip::MinMax),
            "mse" => Some(Clip::Mse),
            _ => {
                let p: f64 = s.strip_prefix("percentile:")?.parse().ok()?;
                (p > 50.0 && p <= 100.0).then_some(Clip::Percentile { lower: 100.0 - p })
            }
        }
    }

    pub fn name(&self) -> String {
        match self {
            Clip::MinMax => "minmax".into(),
            Clip::Mse => "mse".into(),
            Clip::Percentile { lower } => format!("percentile:{}", 100.0 - lower),
        }
    }
}

/// Magnitudes of one sign: `counts[i]` values in `[i, i + 1) · width`.
#[derive(Clone, Debug)]
struct Half {
    width: f64,
    counts: Vec<u64>,
    max: f64,
}

impl Half {
    fn new() -> Half {
        Half {
            width: 0.0,
            counts: vec![0; BINS],
            max: 0.0,
        }
    }

    fn add(&mut self, v: f64) {
        self.add_n(v, 1);
    }

    /// `n` values of magnitude `v`.
    fn add_n(&mut self, v: f64, n: u64) {
        self.max = self.max.max(v);
        if self.width == 0.0 {
            if v == 0.0 {
                self.counts[0] += n;
                return;
            }
            self.width = v / (BINS / 2) as f64;
        }
        while v >= self.width * BINS as f64 {
            for i in 0..BINS / 2 {
                self.counts[i] = self.counts[2 * i] + self.counts[2 * i + 1];
            }
            self.counts[BINS / 2..].fill(0);
            self.width *= 2.0;
        }
        self.counts[(v / self.width) as usize] += n;
    }

    fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The magnitude below which `n` of the values lie (bin upper edge, capped at the max).
    fn quantile(&self, n: u64) -> f64 {
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= n {
                return ((i + 1) as f64 * self.width).min(self.max);
            }
        }
        self.max
    }

    /// Sum of squared errors of quantizing these magnitudes onto steps of `s` clipped at `hi`:
    /// `s² / 12` per value within, the squared distance to `hi` beyond.
    fn error(&self, s: f64, hi: f64) -> f64 {
        let mut e = 0.0;
        for (i, &c) in self.counts.iter().enumerate() {
            if c == 0 {
                continue;
            }
            let v = (i as f64 + 0.5) * self.width;
            e += c as f64 * if v > hi { (v - hi).powi(2) } else { s * s / 12.0 };
        }
        e
    }
}

/// The values seen at one quantization point.
#[derive(Clone, Debug)]
pub(crate) struct Observed {
    pos: Half,
    neg: Half,
}

impl Observed {
    pub(crate) fn new() -> Observed {
        Observed {
            pos: Half::new(),
            neg: Half::new(),
        }
    }

    pub(crate) fn add(&mut self, values: &[f32]) {
        for &v in values {
            if v < 0.0 {
                self.neg.add(-v as f64);
            } else {
                self.pos.add(v as f64);
            }
        }
    }

    /// Adds `other`'s counts (each bin's at its centre: exact up to that bin's width).
    pub(crate) fn merge(&mut self, other: &Observed) {
        for (a, b) in [(&mut self.pos, &other.pos), (&mut self.neg, &other.neg)] {
            for (i, &c) in b.counts.iter().enumerate() {
                if c > 0 {
                    a.add_n(((i as f64 + 0.5) * b.width).min(b.max), c);
                }
            }
            a.max = a.max.max(b.max);
        }
    }

    /// The clipping range `[lo, hi]` (`lo ≤ 0 ≤ hi`) the rule picks.
    pub(crate) fn range(&self, clip: Clip) -> (f64, f64) {
        let (np, nn) = (self.pos.total(), self.neg.total());
        match clip {
            Clip::MinMax => (-self.neg.max, self.pos.max),
            Clip::Percentile { lower } => {
                let cut = ((np + nn) as f64 * lower / 100.0).floor() as u64;
                let hi = if np > cut {
                    self.pos.quantile(np - cut)
                } else {
                    0.0
                };
                let lo = if nn > cut {
                    -self.neg.quantile(nn - cut)
                } else {
                    0.0
                };
                (lo, hi)
            }
            Clip::Mse => {
                let (lo0, hi0) = (-self.neg.max, self.pos.max);
                let mut best = (f64::INFINITY, (lo0, hi0));
                for step in 1..=100 {
                    let a = step as f64 / 100.0;
                    let (lo, hi) = (lo0 * a, hi0 * a);
                    let s = (hi - lo) / 255.0;
                    let e = self.pos.error(s, hi) + self.neg.error(s, -lo);
                    if e < best.0 {
                        best = (e, (lo, hi));
                    }
                }
                best.1
            }
        }
    }
}

/// A u8 quantization `real = scale · (q − zero_point)` of the range `[lo, hi]`, which must
/// hold zero: zero is then exactly representable (padding, ReLU's floor).
pub(crate) fn params(lo: f64, hi: f64) -> (f32, u8) {
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    if hi - lo <= f64::MIN_POSITIVE {
        return (1.0, 0);
    }
    let scale = (hi - lo) / 255.0;
    let zp = (-lo / scale).round().clamp(0.0, 255.0);
    (scale as f32, zp as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_the_rule() {
        let mut o = Observed::new();
        let vals: Vec<f32> = (0..10000)
            .map(|i| i as f32 / 1000.0)
            .chain([-1.0, 100.0])
            .collect();
        o.add(&vals);
        assert_eq!(o.range(Clip::MinMax), (-1.0, 100.0));
        let (lo, hi) = o.range(Clip::Percentile { lower: 0.1 });
        // 10 of 10002 values cut from each side: the top 10 (≈ 9.99 and 100) and the one negative.
        assert_eq!(lo, 0.0);
        assert!(hi > 9.9 && hi < 10.1, "{hi}");
        // One value clipped by 90 costs more than the rounding of all the others at the
        // coarser step: the MSE rule keeps (nearly) the whole range here.
        let (lo, hi) = o.range(Clip::Mse);
        assert!(hi >= 95.0 && lo <= -0.95, "{lo} {hi}");
        // Two values far out among 200000 small ones: clipping them by a tenth of the range
        // saves more rounding error on the others than it costs.
        let mut t = Observed::new();
        let v: Vec<f32> = (0..200000)
            .map(|i| (i % 1000) as f32 / 1000.0)
            .chain([100.0; 2])
            .collect();
        t.add(&v);
        let hi = t.range(Clip::Mse).1;
        assert!(hi > 80.0 && hi < 95.0, "{hi}");
    }

    #[test]
    fn bins_merge_when_the_range_grows() {
        let mut a = Observed::new();
        a.add(&[1.0, 2.0, 3.0]);
        a.add(&[4000.0]);
        assert_eq!(a.pos.total(), 4);
        assert_eq!(a.range(Clip::MinMax), (0.0, 4000.0));
        let mut b = Observed::new();
        b.add(&[-5.0, 0.5]);
        a.merge(&b);
        assert_eq!(a.pos.total() + a.neg.total(), 6);
        assert_eq!(a.range(Clip::MinMax), (-5.0, 4000.0));
    }

    #[test]
    fn zero_is_representable() {
        let (s, zp) = params(-1.0, 3.0);
        assert_eq!(zp, 64);
        assert!((s - 4.0 / 255.0).abs() < 1e-7);
        assert_eq!(params(0.0, 0.0), (1.0, 0));
        assert_eq!(params(0.5, 2.0).1, 0);
    }
}
