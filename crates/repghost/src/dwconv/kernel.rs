//! Depthwise k×k convolution on contiguous NCHW `f32` buffers: the forward pass and the
//! gradients with respect to input and kernel.
//!
//! Each image plane is zero-padded and split into `s × s` phases (rows and columns by their
//! remainder mod the stride `s`), each phase a grid of `pitch` columns. A tap then reads one
//! phase at a fixed offset, and every output of the plane, laid out with the same pitch, is one
//! contiguous window of that phase: a pass is one long multiply-add (or dot product) per tap,
//! however small the plane. Columns past the output width are computed and discarded.

use rayon::prelude::*;

use crate::lanes::lane_sum;

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
}

/// Where each value of a pass lives, computed once per pass (a plane of a few pixels costs
/// less than the integer divisions that would place it).
struct Layout {
    s: usize,
    w: usize,
    wo: usize,
    /// Columns of a phase, and of an output row in the phase layout: `⌈(w + 2p) / s⌉`, at
    /// least `wo`.
    pitch: usize,
    /// Outputs of a plane in the phase layout: `ho · pitch`.
    window: usize,
    /// Values of all `s²` phases. A phase has `⌈(h + 2p) / s⌉` rows and one more, since the
    /// window of a tap right of column 0 runs past its last row by up to
    /// `(k − 1) / s ≤ pitch` columns.
    len: usize,
    /// Start of each tap's window (taps row-major in the kernel). Output `(i, j)` reads
    /// padded input `(s·i + kh, s·j + kw)`: row `i + kh / s`, column `j + kw / s` of phase
    /// `(kh mod s, kw mod s)`.
    taps: Vec<usize>,
    /// Input row `r`'s part of the index of its values in the phases, and column `c`'s part.
    rows: Vec<usize>,
    cols: Vec<usize>,
}

impl Layout {
    fn new(g: &Geometry) -> Self {
        let (s, p) = (g.s, g.p);
        let [ho, wo] = g.out();
        let pitch = (g.w + 2 * p).div_ceil(s);
        let phase = ((g.h + 2 * p).div_ceil(s) + 1) * pitch;
        let taps = (0..g.k * g.k)
            .map(|t| {
                let (kh, kw) = (t / g.k, t % g.k);
                ((kh % s) * s + kw % s) * phase + (kh / s) * pitch + kw / s
            })
            .collect();
        Self {
            s,
            w: g.w,
            wo,
            pitch,
            window: ho * pitch,
            len: s * s * phase,
            taps,
            rows: (p..g.h + p)
                .map(|r| (r % s) * s * phase + (r / s) * pitch)
                .collect(),
            cols: (p..g.w + p).map(|c| (c % s) * phase + c / s).collect(),
        }
    }

    /// A buffer for one plane's phases, zero (padding included).
    fn phases(&self) -> Vec<f32> {
        vec![0f32; self.len]
    }

    /// Writes the `h × w` plane into the interior of `phases`; padding is left as it is.
    fn split(&self, plane: &[f32], phases: &mut [f32]) {
        for (row, &base) in plane.chunks_exact(self.w).zip(&self.rows) {
            if self.s == 1 {
                phases[base + self.cols[0]..][..self.w].copy_from_slice(row);
            } else {
                for (&v, &c) in row.iter().zip(&self.cols) {
                    phases[base + c] = v;
                }
            }
        }
    }

    /// Reads the interior of `phases` back into an `h × w` plane.
    fn merge(&self, phases: &[f32], plane: &mut [f32]) {
        for (row, &base) in plane.chunks_exact_mut(self.w).zip(&self.rows) {
            if self.s == 1 {
                row.copy_from_slice(&phases[base + self.cols[0]..][..self.w]);
            } else {
                for (v, &c) in row.iter_mut().zip(&self.cols) {
                    *v = phases[base + c];
                }
            }
        }
    }

    /// Copies a `ho × wo` plane into the phase layout (`pitch` columns per row); the columns
    /// past `wo` are left as they are.
    fn spread(&self, plane: &[f32], rows: &mut [f32]) {
        for (src, dst) in plane.chunks_exact(self.wo).zip(rows.chunks_exact_mut(self.pitch)) {
            dst[..self.wo].copy_from_slice(src);
        }
    }

    /// Copies the first `wo` columns of each row of the phase layout into a `ho × wo` plane.
    fn gather(&self, rows: &[f32], plane: &mut [f32]) {
        for (src, dst) in rows.chunks_exact(self.pitch).zip(plane.chunks_exact_mut(self.wo)) {
            dst.copy_from_slice(&src[..self.wo]);
        }
    }
}

/// `acc += v · a`, element by element (a multiply, then an add).
#[inline(always)]
fn axpy(acc: &mut [f32], v: f32, a: &[f32]) {
    acc.iter_mut().zip(a).for_each(|(o, &a)| *o += v * a);
}

/// `y[n, c] = Σ_taps w[c, tap] · shifted x[n, c]`, taps added in kernel order.
pub(crate) fn forward(g: &Geometry, x: &[f32], wt: &[f32]) -> Vec<f32> {
    let [ho, wo] = g.out();
    let (plane_in, plane_out, kk) = (g.h * g.w, ho * wo, g.k * g.k);
    let mut y = vec![0f32; g.n * g.c * plane_out];
    let per = planes_per_task(plane_out, kk);
    let l = Layout::new(g);
    y.par_chunks_mut(plane_out * per)
        .enumerate()
        .for_each(|(task, chunk)| {
            let mut phases = l.phases();
            let mut acc = vec![0f32; l.window];
            for (q, out) in chunk.chunks_mut(plane_out).enumerate() {
                let nc = task * per + q;
                l.split(&x[nc * plane_in..][..plane_in], &mut phases);
                let taps = &wt[(nc % g.c) * kk..][..kk];
                acc.fill(0.0);
                for (&v, &start) in taps.iter().zip(&l.taps) {
                    axpy(&mut acc, v, &phases[start..][..l.window]);
                }
                l.gather(&acc, out);
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
    let l = Layout::new(g);
    dx.par_chunks_mut(plane_in * per)
        .enumerate()
        .for_each(|(task, chunk)| {
            let mut phases = l.phases();
            let mut rows = vec![0f32; l.window];
            for (q, dxp) in chunk.chunks_mut(plane_in).enumerate() {
                let nc = task * per + q;
                l.spread(&dy[nc * plane_out..][..plane_out], &mut rows);
                let taps = &wt[(nc % g.c) * kk..][..kk];
                phases.fill(0.0);
                for (&v, &start) in taps.iter().zip(&l.taps) {
                    axpy(&mut phases[start..][..l.window], v, &rows);
                }
                l.merge(&phases, dxp);
            }
        });
    dx
}

/// `∂L/∂w[c, tap] = Σ_n Σ_pixels ∂L/∂y[n, c] · shifted x[n, c]`; each plane's sum runs in
/// eight `f32` lanes, planes are summed in `f64`.
pub(crate) fn weight_grad(g: &Geometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let [ho, wo] = g.out();
    let (plane_in, plane_out, kk) = (g.h * g.w, ho * wo, g.k * g.k);
    let mut dw = vec![0f32; g.c * kk];
    let l = Layout::new(g);
    dw.par_chunks_mut(kk).enumerate().for_each(|(c, out)| {
        let mut phases = l.phases();
        let mut rows = vec![0f32; l.window];
        let mut acc = vec![0f64; kk];
        for n in 0..g.n {
            let nc = n * g.c + c;
            l.split(&x[nc * plane_in..][..plane_in], &mut phases);
            l.spread(&dy[nc * plane_out..][..plane_out], &mut rows);
            for (a, &start) in acc.iter_mut().zip(&l.taps) {
                *a += lane_sum(&rows, &phases[start..][..l.window], |x, y| x * y);
            }
        }
        out.iter_mut().zip(&acc).for_each(|(o, &a)| *o = a as f32);
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
            // Both add the taps in kernel order, each product rounded before its add.
            assert_eq!(forward(&g, &x, &wt), naive(&g, &x, &wt), "{g:?}");
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
