//! Training-mode BatchNorm on contiguous `[n, c, hw]` `f32` buffers: batch statistics, the
//! normalization, and its backward pass, one channel (reductions) or one image plane
//! (element-wise passes) per task. Sums run in `f64`.

use rayon::prelude::*;

use crate::lanes::lane_sum;

/// Shapes: `n` images, `c` channels, `hw` pixels per plane.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Shape {
    pub n: usize,
    pub c: usize,
    pub hw: usize,
}

impl Shape {
    fn plane<'a>(&self, t: &'a [f32], img: usize, ch: usize) -> &'a [f32] {
        &t[(img * self.c + ch) * self.hw..][..self.hw]
    }

    fn count(&self) -> f64 {
        (self.n * self.hw) as f64
    }
}

/// Per-channel mean and biased variance (two passes: the variance sums squares of the
/// centred values).
pub(crate) fn stats(s: &Shape, x: &[f32]) -> (Vec<f32>, Vec<f32>) {
    (0..s.c)
        .into_par_iter()
        .map(|ch| {
            let planes = || (0..s.n).map(|i| s.plane(x, i, ch));
            let mean = planes().map(|p| lane_sum(p, p, |v, _| v)).sum::<f64>() / s.count();
            let m = mean as f32;
            let var = planes()
                .map(|p| lane_sum(p, p, |v, _| (v - m) * (v - m)))
                .sum::<f64>()
                / s.count();
            (m, var as f32)
        })
        .unzip()
}

/// `1 / sqrt(var + eps)` per channel.
pub(crate) fn inv_std(var: &[f32], eps: f64) -> Vec<f64> {
    var.iter().map(|&v| 1.0 / (v as f64 + eps).sqrt()).collect()
}

/// `y = (x − mean) · inv_std · gamma + beta`.
pub(crate) fn forward(
    s: &Shape,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    inv: &[f64],
) -> Vec<f32> {
    let scale: Vec<f32> = (0..s.c).map(|ch| (inv[ch] * gamma[ch] as f64) as f32).collect();
    let shift: Vec<f32> = (0..s.c)
        .map(|ch| (beta[ch] as f64 - mean[ch] as f64 * inv[ch] * gamma[ch] as f64) as f32)
        .collect();
    let mut y = vec![0.0f32; x.len()];
    y.par_chunks_mut(s.c * s.hw)
        .zip(x.par_chunks(s.c * s.hw))
        .for_each(|(out, src)| {
            for (ch, (out, src)) in out.chunks_exact_mut(s.hw).zip(src.chunks_exact(s.hw)).enumerate() {
                let (a, b) = (scale[ch], shift[ch]);
                out.iter_mut().zip(src).for_each(|(o, &v)| *o = v * a + b);
            }
        });
    y
}

/// Gradients of the loss with respect to `x`, `gamma` and `beta`, given `dy`. The batch
/// statistics depend on `x`, so `dx = gamma · inv_std · (dy − mean(dy) − x̂ · mean(dy · x̂))`
/// with `x̂ = (x − mean) · inv_std` and means over the channel's `n · hw` values.
pub(crate) fn backward(
    s: &Shape,
    x: &[f32],
    dy: &[f32],
    gamma: &[f32],
    mean: &[f32],
    inv: &[f64],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (dgamma, dbeta): (Vec<f64>, Vec<f64>) = (0..s.c)
        .into_par_iter()
        .map(|ch| {
            let m = mean[ch];
            let (mut sg, mut sb) = (0.0f64, 0.0f64);
            for i in 0..s.n {
                let (xs, ds) = (s.plane(x, i, ch), s.plane(dy, i, ch));
                sg += lane_sum(xs, ds, |v, d| d * (v - m));
                sb += lane_sum(ds, ds, |d, _| d);
            }
            (sg * inv[ch], sb)
        })
        .unzip();
    // Per channel: gamma · inv_std, mean(dy), mean(dy · x̂) / inv_std.
    let cnt = s.count();
    let k: Vec<f32> = (0..s.c).map(|ch| (gamma[ch] as f64 * inv[ch]) as f32).collect();
    let mdy: Vec<f32> = dbeta.iter().map(|&v| (v / cnt) as f32).collect();
    let mdyx: Vec<f32> = dgamma.iter().map(|&v| (v / cnt) as f32).collect();
    let mut dx = vec![0.0f32; x.len()];
    dx.par_chunks_mut(s.c * s.hw)
        .zip(x.par_chunks(s.c * s.hw).zip(dy.par_chunks(s.c * s.hw)))
        .for_each(|(out, (xs, ds))| {
            let planes = out
                .chunks_exact_mut(s.hw)
                .zip(xs.chunks_exact(s.hw).zip(ds.chunks_exact(s.hw)));
            for (ch, (out, (xs, ds))) in planes.enumerate() {
                let (m, is, k, mdy, mdyx) = (mean[ch], inv[ch] as f32, k[ch], mdy[ch], mdyx[ch]);
                for ((o, &v), &d) in out.iter_mut().zip(xs).zip(ds) {
                    *o = k * (d - mdy - (v - m) * is * mdyx);
                }
            }
        });
    let f = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect();
    (dx, f(dgamma), f(dbeta))
}
