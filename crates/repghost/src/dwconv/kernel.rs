//! Depthwise k×k convolution on contiguous NCHW `f32` buffers: the forward pass and the
//! gradients with respect to input and kernel. One image plane per task; every plane's taps
//! run as row segments, so that at stride 1 the inner loops are contiguous and vectorize.

use rayon::prelude::*;

/// Multiply-adds per parallel task: enough that rayon's scheduling cost stays small next to
/// the work (planes at the end of the network have 16 pixels or fewer).
const TASK_MACS: usize = 1 << 16;

/// Image planes per task, for planes of `plane` outputs and `kk` taps.
fn planes_per_task(plane: usize, kk: usize) -> usize {
    (TASK_MACS / (plane * kk).max(1)).max(1)
}

/// Shapes of one depthwise conv: input `[n, c, h, w]`, kernel `[c, 1, k, k]`, symmetric
/// zero padding `p`, stride `s`, output `[n, c, ho, wo]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Geometry {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub k: usize,
    pub s: usize,
    pub p: usize,
}

impl Geometry {
    pub fn out(&self) -> [usize; 2] {
        [
            (self.h + 2 * self.p - self.k) / self.s + 1,
            (self.w + 2 * self.p - self.k) / self.s + 1,
        ]
    }

    /// Output indices `o` (of `len` outputs) whose tap `t` reads an input index
    /// `o·s + t − p` inside `0..size`.
    fn valid(&self, t: usize, size: usize, len: usize) -> std::ops::Range<usize> {
        let (s, p) = (self.s as isize, self.p as isize);
        let off = t as isize - p;
        let lo = if off >= 0 { 0 } else { (-off + s - 1) / s };
        let hi = (size as isize - 1 - off).div_euclid(s) + 1;
        let hi = hi.clamp(0, len as isize) as usize;
        (lo as usize).min(hi)..hi
    }

    /// Calls `f(out_row, in_row, taps_start_in_row, range_of_output_columns, tap_index)` for
    /// every tap and every output row that reads a valid input row.
    fn for_each_tap(&self, mut f: impl FnMut(usize, usize, usize, std::ops::Range<usize>, usize)) {
        let [ho, wo] = self.out();
        for kh in 0..self.k {
            let rows = self.valid(kh, self.h, ho);
            for kw in 0..self.k {
                let cols = self.valid(kw, self.w, wo);
                if cols.is_empty() {
                    continue;
                }
                for i in rows.clone() {
                    let r = i * self.s + kh - self.p;
                    let c0 = cols.start * self.s + kw - self.p;
                    f(i, r, c0, cols.clone(), kh * self.k + kw);
                }
            }
        }
    }
}

/// `y[n, c] = Σ_taps w[c, tap] · shifted x[n, c]`.
pub(crate) fn forward(g: &Geometry, x: &[f32], wt: &[f32]) -> Vec<f32> {
    let [ho, wo] = g.out();
    let (plane_in, plane_out, kk) = (g.h * g.w, ho * wo, g.k * g.k);
    let mut y = vec![0f32; g.n * g.c * plane_out];
    let per = planes_per_task(plane_out, kk);
    y.par_chunks_mut(plane_out * per)
        .enumerate()
        .for_each(|(task, chunk)| {
            for (q, out) in chunk.chunks_mut(plane_out).enumerate() {
                let nc = task * per + q;
                let input = &x[nc * plane_in..][..plane_in];
                let taps = &wt[(nc % g.c) * kk..][..kk];
                g.for_each_tap(|i, r, c0, cols, t| {
                    let o = &mut out[i * wo..][cols.clone()];
                    let row = &input[r * g.w + c0..];
                    let v = taps[t];
                    if g.s == 1 {
                        o.iter_mut().zip(row).for_each(|(o, &a)| *o += v * a);
                    } else {
                        o.iter_mut()
                            .zip(row.iter().step_by(g.s))
                            .for_each(|(o, &a)| *o += v * a);
                    }
                });
            }
        });
    y
}

/// `∂L/∂x` from `∂L/∂y`: every output gradient scattered back through the taps it used.
pub(crate) fn input_grad(g: &Geometry, wt: &[f32], dy: &[f32]) -> Vec<f32> {
    let [ho, wo] = g.out();
    let (plane_in, plane_out, kk) = (g.h * g.w, ho * wo, g.k * g.k);
    let mut dx = vec![0f32; g.n * g.c * plane_in];
    let per = planes_per_task(plane_out, kk);
    dx.par_chunks_mut(plane_in * per)
        .enumerate()
        .for_each(|(task, chunk)| {
            for (q, dxp) in chunk.chunks_mut(plane_in).enumerate() {
                let nc = task * per + q;
                let dyp = &dy[nc * plane_out..][..plane_out];
                let taps = &wt[(nc % g.c) * kk..][..kk];
                g.for_each_tap(|i, r, c0, cols, t| {
                    let d = &dyp[i * wo..][cols.clone()];
                    let row = &mut dxp[r * g.w + c0..];
                    let v = taps[t];
                    if g.s == 1 {
                        row.iter_mut().zip(d).for_each(|(o, &a)| *o += v * a);
                    } else {
                        row.iter_mut().step_by(g.s).zip(d).for_each(|(o, &a)| *o += v * a);
                    }
                });
            }
        });
    dx
}

/// `∂L/∂w[c, tap] = Σ_n Σ_pixels ∂L/∂y[n, c] · shifted x[n, c]`.
pub(crate) fn weight_grad(g: &Geometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let [ho, wo] = g.out();
    let (plane_in, plane_out, kk) = (g.h * g.w, ho * wo, g.k * g.k);
    let mut dw = vec![0f32; g.c * kk];
    dw.par_chunks_mut(kk).enumerate().for_each(|(c, acc)| {
        for n in 0..g.n {
            let nc = n * g.c + c;
            let input = &x[nc * plane_in..][..plane_in];
            let dyp = &dy[nc * plane_out..][..plane_out];
            g.for_each_tap(|i, r, c0, cols, t| {
                let d = &dyp[i * wo..][cols.clone()];
                let row = &input[r * g.w + c0..];
                let sum: f32 = if g.s == 1 {
                    d.iter().zip(row).map(|(&a, &b)| a * b).sum()
                } else {
                    d.iter().zip(row.iter().step_by(g.s)).map(|(&a, &b)| a * b).sum()
                };
                acc[t] += sum;
            });
        }
    });
    dw
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct definition, one output at a time.
    fn naive(g: &Geometry, x: &[f32], wt: &[f32]) -> Vec<f32> {
        let [ho, wo] = g.out();
        let mut y = vec![0f32; g.n * g.c * ho * wo];
        for nc in 0..g.n * g.c {
            for i in 0..ho {
                for j in 0..wo {
                    let mut acc = 0f32;
                    for kh in 0..g.k {
                        for kw in 0..g.k {
                            let r = (i * g.s + kh) as isize - g.p as isize;
                            let q = (j * g.s + kw) as isize - g.p as isize;
                            if r < 0 || q < 0 || r >= g.h as isize || q >= g.w as isize {
                                continue;
                            }
                            let v = x[nc * g.h * g.w + r as usize * g.w + q as usize];
                            acc += wt[(nc % g.c) * g.k * g.k + kh * g.k + kw] * v;
                        }
                    }
                    y[nc * ho * wo + i * wo + j] = acc;
                }
            }
        }
        y
    }

    fn data(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                let v = (i as u32)
                    .wrapping_mul(2654435761)
                    .wrapping_add(seed.wrapping_mul(40503));
                (v >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    }

    fn geometries() -> Vec<Geometry> {
        let mut v = Vec::new();
        for (h, w) in [(7, 7), (8, 5), (1, 1), (2, 3)] {
            for (k, s) in [(3, 1), (3, 2), (5, 2), (5, 1), (1, 1)] {
                v.push(Geometry {
                    n: 2,
                    c: 3,
                    h,
                    w,
                    k,
                    s,
                    p: k / 2,
                });
            }
        }
        v
    }

    #[test]
    fn forward_is_the_definition() {
        for g in geometries() {
            let x = data(g.n * g.c * g.h * g.w, 1);
            let wt = data(g.c * g.k * g.k, 2);
            let (a, b) = (forward(&g, &x, &wt), naive(&g, &x, &wt));
            assert_eq!(a.len(), b.len());
            for (a, b) in a.iter().zip(&b) {
                assert!((a - b).abs() < 1e-5, "{g:?}: {a} vs {b}");
            }
        }
    }

    /// `<dy, conv(x, w)>` is linear in `x` and in `w`, so its gradients are exact adjoints:
    /// `<dx, e_i> = <dy, conv(e_i, w)>` and likewise for the kernel.
    #[test]
    fn gradients_are_adjoints_of_the_forward_pass() {
        for g in geometries() {
            let x = data(g.n * g.c * g.h * g.w, 3);
            let wt = data(g.c * g.k * g.k, 4);
            let [ho, wo] = g.out();
            let dy = data(g.n * g.c * ho * wo, 5);
            let dot = |y: &[f32]| y.iter().zip(&dy).map(|(a, b)| a * b).sum::<f32>();
            let dx = input_grad(&g, &wt, &dy);
            for i in 0..x.len() {
                let mut e = vec![0f32; x.len()];
                e[i] = 1.0;
                let want = dot(&naive(&g, &e, &wt));
                assert!((dx[i] - want).abs() < 1e-5, "{g:?} dx[{i}]: {} vs {want}", dx[i]);
            }
            let dw = weight_grad(&g, &x, &dy);
            for i in 0..wt.len() {
                let mut e = vec![0f32; wt.len()];
                e[i] = 1.0;
                let want = dot(&naive(&g, &x, &e));
                assert!((dw[i] - want).abs() < 1e-4, "{g:?} dw[{i}]: {} vs {want}", dw[i]);
            }
        }
    }
}
