//! Sums over a pair of slices in eight `f32` lanes, for the CPU kernels.

/// `Σ f(a[i], b[i])` in eight independent `f32` lanes (so that it vectorizes), the lanes and
/// the tail added in `f64`.
#[inline(always)]
pub(crate) fn lane_sum(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f64 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += f(x[l], y[l]);
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(&x, &y)| f(x, y)).sum();
    acc.iter().map(|&v| v as f64).sum::<f64>() + tail as f64
}
