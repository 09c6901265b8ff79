//! Depth-first execution of a chain of layers (a bottleneck, or the part of one on either
//! side of its SE), strip of output rows by strip of output rows.
//!
//! Layer by layer, a bottleneck writes its expanded map (up to 112 × 112 × 24 floats at 1.0×,
//! 1.2 MB, more than L2) to memory, reads it back for the depthwise conv, writes that, reads it back
//! for the projection. Here each intermediate map exists only as a window of the few rows the
//! next layer still needs, in a strip buffer that stays in L1/L2: to produce a strip of the
//! chain's output, each layer first produces the rows its consumer needs that it has not
//! produced yet (a depthwise layer needs `k/2` rows of halo on either side), after keeping the
//! rows that the previous strip already produced and this one still reads. Nothing is
//! computed twice except, with two threads, the halo rows at the boundary of their halves.

use std::sync::Mutex;

use crate::kernels::depthwise::{Depthwise, Shape};
use crate::kernels::pointwise::Pointwise;
use crate::kernels::View;
use crate::profile::Profile;
use crate::team::Team;

/// One layer of a chain.
#[derive(Clone, Copy)]
pub(crate) enum Op<'a> {
    Pw(&'a Pointwise),
    Dw(&'a Depthwise),
}

impl Op<'_> {
    fn cout(self) -> usize {
        match self {
            Op::Pw(p) => p.cout(),
            Op::Dw(d) => d.channels(),
        }
    }
    fn out_hw(self, h: usize, w: usize) -> (usize, usize) {
        match self {
            Op::Pw(_) => (h, w),
            Op::Dw(d) => d.out_hw(h, w),
        }
    }
    /// Input rows `lo..hi` (of an input `h` rows high) that output rows `a..b` read; `lo` is
    /// a multiple of the stride, so that a window starting there keeps the output grid.
    fn needs(self, a: usize, b: usize, h: usize) -> (usize, usize) {
        match self {
            Op::Pw(_) => (a, b),
            Op::Dw(d) => {
                let (s, p) = (d.stride(), d.k() / 2);
                let lo = (a * s).saturating_sub(p);
                (lo - lo % s, ((b - 1) * s + d.k() - p).min(h))
            }
        }
    }
    /// Input rows one strip needs at most, for `rows` output rows.
    fn window(self, rows: usize) -> usize {
        match self {
            Op::Pw(_) => rows,
            Op::Dw(d) => (rows - 1) * d.stride() + d.k() + d.stride() - 1,
        }
    }
    fn kind(self) -> &'static str {
        match self {
            Op::Pw(_) => "pointwise",
            Op::Dw(d) if d.stride() > 1 => "depthwise s2",
            Op::Dw(_) => "depthwise",
        }
    }
}

/// Pixel stride of a map of `c` channels (see `exec::ld`).
fn ld(c: usize) -> usize {
    crate::exec::ld(c)
}

/// How the chain's output combines with what is already there.
#[derive(Clone, Copy)]
pub(crate) enum Residual<'r> {
    /// Overwrite.
    None,
    /// Add to what the output holds (a projected shortcut computed before).
    InPlace,
    /// Add this map of the output's shape (the identity shortcut: the block's input), copied
    /// into the output rows first.
    Add(&'r [f32]),
}

/// A chain of at most five layers on a `h × w` input map.
#[derive(Clone, Copy)]
pub(crate) struct Chain<'a> {
    ops: [Option<Op<'a>>; 5],
    len: usize,
    pub h: usize,
    pub w: usize,
}

impl<'a> Chain<'a> {
    pub fn new(ops: &[Op<'a>], h: usize, w: usize) -> Self {
        assert!(!ops.is_empty() && ops.len() <= 5, "a chain has 1 to 5 layers");
        let mut a = [None; 5];
        for (s, o) in a.iter_mut().zip(ops) {
            *s = Some(*o);
        }
        Chain {
            ops: a,
            len: ops.len(),
            h,
            w,
        }
    }
    fn op(&self, i: usize) -> Op<'a> {
        self.ops[i].expect("i < len")
    }
    /// Input shape of layer `i` (`i == len`: the chain's output).
    fn dims(&self, i: usize) -> (usize, usize) {
        (0..i).fold((self.h, self.w), |(h, w), j| self.op(j).out_hw(h, w))
    }
    pub fn out_dims(&self) -> (usize, usize, usize) {
        let (h, w) = self.dims(self.len);
        (h, w, self.op(self.len - 1).cout())
    }
    /// Output rows per strip: about [`STRIP_PIXELS`] output pixels.
    fn strip_rows(&self) -> usize {
        let (_, w, _) = self.out_dims();
        (STRIP_PIXELS / w).max(1)
    }
    /// Floats of strip buffer one thread needs: for each intermediate map, its widest window
    /// of rows, each buffer rounded to whole cache lines.
    pub fn scratch_len(&self) -> usize {
        let mut rows = self.strip_rows();
        let mut total = 0;
        for i in (1..self.len).rev() {
            rows = self.op(i).window(rows);
            let (h, w) = self.dims(i);
            total += (rows.min(h) * w * ld(self.op(i - 1).cout())).next_multiple_of(16);
        }
        total
    }

    /// Runs the chain on `src` (its input map, pixel stride `ld(cin)`) into `dst` (output
    /// pixel stride `ld(cout)`), splitting the output rows between the team's two threads.
    /// `scratch` holds one strip buffer per thread, each of [`Chain::scratch_len`] floats at
    /// least, 64-byte aligned.
    pub fn run(
        &self,
        src: &[f32],
        cin: usize,
        dst: &mut [f32],
        residual: Residual,
        scratch: &[Mutex<&mut [f32]>; 2],
        team: Option<&Team>,
        profile: &mut Option<Profile>,
    ) {
        let (oh, ow, cout) = self.out_dims();
        match team {
            Some(t) if oh >= 2 => {
                let split = oh / 2;
                crate::profile::timed(profile, "depth-first (2 threads)", || {
                    t.halves(dst, split * ow * ld(cout), &|p, part| {
                        let (y0, y1) = if p == 0 { (0, split) } else { (split, oh) };
                        let mut s = scratch[p].lock().unwrap_or_else(|e| e.into_inner());
                        self.rows(src, cin, y0, y1, part, residual, &mut s, &mut None);
                    })
                });
            }
            _ => {
                let mut s = scratch[0].lock().unwrap_or_else(|e| e.into_inner());
                self.rows(src, cin, 0, oh, dst, residual, &mut s, profile);
            }
        }
    }

    /// Output rows `y0..y1` into `dst` (which starts at row `y0`), strip by strip.
    #[allow(clippy::too_many_arguments)]
    fn rows(
        &self,
        src: &[f32],
        cin: usize,
        y0: usize,
        y1: usize,
        dst: &mut [f32],
        residual: Residual,
        scratch: &mut [f32],
        profile: &mut Option<Profile>,
    ) {
        let n = self.len;
        let (_, ow, cout) = self.out_dims();
        let step = self.strip_rows();
        // Strip buffer of each intermediate map (the output of layer i < n-1), and the rows
        // `lo..hi` of that map it holds.
        let mut bufs: [&mut [f32]; 4] = Default::default();
        let mut rest = scratch;
        let mut cap = step;
        let mut sizes = [0; 4];
        for i in (1..n).rev() {
            cap = self.op(i).window(cap);
            let (h, w) = self.dims(i);
            sizes[i - 1] = (cap.min(h) * w * ld(self.op(i - 1).cout())).next_multiple_of(16);
        }
        for (b, &size) in bufs.iter_mut().zip(&sizes).take(n - 1) {
            let (a, r) = std::mem::take(&mut rest).split_at_mut(size);
            *b = a;
            rest = r;
        }
        let mut held = [(y0, y0); 4];
        let mut y = y0;
        while y < y1 {
            let ye = (y + step).min(y1);
            // Rows each layer's output must hold for this strip, from the last layer back.
            let mut want = [(0, 0); 5];
            want[n - 1] = (y, ye);
            for i in (1..n).rev() {
                let (h, _) = self.dims(i);
                want[i - 1] = self.op(i).needs(want[i].0, want[i].1, h);
            }
            for i in 0..n - 1 {
                let (lo, hi) = want[i];
                let (hlo, hhi) = held[i];
                let (h, w) = self.dims(i + 1);
                let row = w * ld(self.op(i).cout());
                // Keep the rows this strip still reads; produce the rest.
                let from = if lo < hhi && hlo <= lo {
                    bufs[i].copy_within((lo - hlo) * row..(hhi - hlo) * row, 0);
                    hhi
                } else {
                    lo
                };
                debug_assert!(hi <= h);
                held[i] = (lo, hi);
                let (before, after) = bufs.split_at_mut(i);
                let input = match i {
                    0 => In::Map(src, cin),
                    _ => In::Window(&*before[i - 1], held[i - 1].0, self.op(i - 1).cout()),
                };
                let out = &mut after[0][(from - lo) * row..];
                self.layer(i, input, from, hi, out, false, profile);
            }
            // The last layer writes the chain's output.
            let off = (y - y0) * ow * ld(cout);
            let out = &mut dst[off..];
            if let Residual::Add(map) = residual {
                let len = (ye - y) * ow * ld(cout);
                out[..len].copy_from_slice(&map[y * ow * ld(cout)..][..len]);
            }
            let input = match n {
                1 => In::Map(src, cin),
                _ => In::Window(&*bufs[n - 2], held[n - 2].0, self.op(n - 2).cout()),
            };
            let add = !matches!(residual, Residual::None);
            self.layer(n - 1, input, y, ye, out, add, profile);
            y = ye;
        }
    }

    /// Output rows `a..b` of layer `i` into `out` (which starts at row `a`).
    #[allow(clippy::too_many_arguments)]
    fn layer(
        &self,
        i: usize,
        input: In,
        a: usize,
        b: usize,
        out: &mut [f32],
        accumulate: bool,
        profile: &mut Option<Profile>,
    ) {
        if a >= b {
            return;
        }
        let op = self.op(i);
        let (h, w) = self.dims(i);
        let ldo = ld(op.cout());
        // The input rows this layer reads, as a window starting at row `lo`.
        let (data, lo, hi, ldi) = match input {
            In::Map(m, c) => {
                let (lo, hi) = op.needs(a, b, h);
                (&m[lo * w * ld(c)..], lo, hi, ld(c))
            }
            In::Window(buf, lo, c) => (buf, lo, op.needs(a, b, h).1, ld(c)),
        };
        let start = profile.as_ref().map(|_| std::time::Instant::now());
        match op {
            Op::Pw(p) => p.run(
                (b - a) * w,
                View::new(&data[(a - lo) * w * ldi..], ldi, 0),
                out,
                ldo,
                0,
                accumulate,
                None,
            ),
            Op::Dw(d) => {
                let s = d.stride();
                let shape = Shape {
                    n: 1,
                    h: hi - lo,
                    w,
                    y0: a - lo / s,
                    y1: b - lo / s,
                };
                let len = (hi - lo) * w * ldi;
                d.rows(shape, View::new(&data[..len], ldi, 0), out, ldo, 0, accumulate);
            }
        }
        if let (Some(p), Some(t)) = (profile.as_mut(), start) {
            p.add(op.kind(), t.elapsed().as_secs_f64() * 1e3);
        }
    }
}

/// Where a layer reads from: the chain's input map (`data`, channels), or the window of the
/// previous layer's output that starts at row `lo`.
#[derive(Clone, Copy)]
enum In<'b> {
    Map(&'b [f32], usize),
    Window(&'b [f32], usize, usize),
}

/// Target output pixels per strip: 9 output rows at 56 × 56, 4 at 112 × 112; the chain's
/// intermediate windows then hold a few rows more each (the halos), a few hundred KB together
/// at 1.0×.
const STRIP_PIXELS: usize = 512;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::act::Act;

    fn rnd(seed: &mut u32, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| {
                *seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
                (*seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    }

    /// The chain's layers one after the other on whole maps, the last one accumulating onto
    /// `dst` where `acc`.
    fn layer_by_layer(ops: &[Op], src: &[f32], cin: usize, h: usize, w: usize, dst: &mut [f32], acc: bool) {
        let (mut x, mut c, mut hw) = (src.to_vec(), cin, (h, w));
        for (i, op) in ops.iter().enumerate() {
            let (oh, ow) = op.out_hw(hw.0, hw.1);
            let co = op.cout();
            let last = i + 1 == ops.len();
            let mut y = if last {
                dst.to_vec()
            } else {
                vec![0.0; oh * ow * ld(co)]
            };
            match op {
                Op::Pw(p) => p.run(
                    hw.0 * hw.1,
                    View::new(&x, ld(c), 0),
                    &mut y,
                    ld(co),
                    0,
                    last && acc,
                    None,
                ),
                Op::Dw(d) => d.run(
                    co,
                    Shape::new(1, hw.0, hw.1),
                    View::new(&x, ld(c), 0),
                    &mut y,
                    ld(co),
                    0,
                    last && acc,
                    None,
                ),
            }
            (x, c, hw) = (y, co, (oh, ow));
        }
        dst.copy_from_slice(&x);
    }

    /// A bottleneck-shaped chain (1×1, depthwise 3×3, strided depthwise 5×5, 1×1, depthwise
    /// 3×3) and a stride-1 one with an identity residual, run depth-first strip by strip
    /// (on one thread and split between two) against the same kernels layer by layer, on maps
    /// whose strips end mid-map: the halo rows, the kept rows and the residual modes agree.
    #[test]
    fn depth_first_equals_layer_by_layer() {
        let mut seed = 3;
        let team = Team::new().unwrap();
        let (cin, mid, cout) = (12, 36, 20);
        // Weights then biases drawn from one stream, layer by layer; `k == 1` is a 1×1 conv.
        let mut layer = |cin: usize, cout: usize, k: usize, stride: usize, act: Act| {
            let w = rnd(&mut seed, cout * if k == 1 { cin } else { k * k });
            let b = rnd(&mut seed, cout);
            if k == 1 {
                (Some(Pointwise::new(&w, cout, cin, b, act).unwrap()), None)
            } else {
                (None, Some(Depthwise::new(&w, cout, k, stride, b, act).unwrap()))
            }
        };
        let p1 = layer(cin, mid, 1, 1, Act::Relu).0.unwrap();
        let d1 = layer(mid, mid, 3, 1, Act::Relu).1.unwrap();
        let d2 = layer(mid, mid, 5, 2, Act::None).1.unwrap();
        let p2 = layer(mid, cout, 1, 1, Act::None).0.unwrap();
        let d3 = layer(cout, cout, 3, 1, Act::None).1.unwrap();
        let q1 = layer(cout, mid, 1, 1, Act::Relu).0.unwrap();
        let q2 = layer(mid, cout, 1, 1, Act::None).0.unwrap();
        let strided = [Op::Pw(&p1), Op::Dw(&d1), Op::Dw(&d2), Op::Pw(&p2), Op::Dw(&d3)];
        let flat = [Op::Pw(&q1), Op::Dw(&d1), Op::Pw(&q2), Op::Dw(&d3)];
        for (h, w) in [(37, 23), (8, 8), (3, 50), (64, 9)] {
            for (ops, c0, identity) in [(&strided[..], cin, false), (&flat[..], cout, true)] {
                let chain = Chain::new(ops, h, w);
                let (oh, ow, co) = chain.out_dims();
                let src = rnd(&mut seed, h * w * ld(c0));
                let shortcut = rnd(&mut seed, oh * ow * ld(co));
                let modes: &[&str] = if identity {
                    &["none", "add"]
                } else {
                    &["none", "in-place"]
                };
                for &mode in modes {
                    let mut want = if mode == "in-place" {
                        shortcut.clone()
                    } else {
                        vec![0.0; oh * ow * ld(co)]
                    };
                    layer_by_layer(ops, &src, c0, h, w, &mut want, mode == "in-place");
                    if mode == "add" {
                        for px in 0..oh * ow {
                            for c in 0..co {
                                want[px * ld(co) + c] += src[px * ld(c0) + c];
                            }
                        }
                    }
                    for t in [None, Some(&team)] {
                        let mut dst = if mode == "in-place" {
                            shortcut.clone()
                        } else {
                            vec![f32::NAN; oh * ow * ld(co)]
                        };
                        let residual = match mode {
                            "in-place" => Residual::InPlace,
                            "add" => Residual::Add(&src),
                            _ => Residual::None,
                        };
                        let mut bufs: Vec<Vec<f32>> =
                            (0..2).map(|_| vec![f32::NAN; chain.scratch_len() + 16]).collect();
                        let [b0, b1] = &mut bufs[..] else { unreachable!() };
                        let (o0, o1) = (
                            b0.as_ptr().align_offset(64).min(15),
                            b1.as_ptr().align_offset(64).min(15),
                        );
                        let scratch = [Mutex::new(&mut b0[o0..]), Mutex::new(&mut b1[o1..])];
                        chain.run(&src, c0, &mut dst, residual, &scratch, t, &mut None);
                        for px in 0..oh * ow {
                            for c in 0..co {
                                let (g, e) = (dst[px * ld(co) + c], want[px * ld(co) + c]);
                                assert!(
                                    (g - e).abs() <= 1e-5 * (1.0 + e.abs()),
                                    "{h}x{w} {mode} team {}: pixel {px} channel {c}: {g} vs {e}",
                                    t.is_some()
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
