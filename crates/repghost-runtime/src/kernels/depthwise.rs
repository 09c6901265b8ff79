//! Depthwise k×k convolution (k = 3 or 5, stride 1 or 2, padding k/2) on NHWC maps with
//! bias, activation and residual add fused. Channels are processed 16 at a time (one
//! AVX-512 register, two AVX2 registers) with the block's k² weight vectors held in
//! registers while it sweeps the image.

use super::{check_len, View};
use crate::act::Act;
use crate::error::{Error, Result};
use crate::simd::vector_dispatch;
use crate::team::Team;
use crate::vector::{act, Vf, F1};

/// A depthwise conv whose fields agree: `k` is 3 or 5, `stride` 1 or 2, `w` holds `k² · c`
/// and `b` holds `c` values ([`Depthwise::new`] checks them, and the kernels rely on it).
pub struct Depthwise {
    c: usize,
    k: usize,
    stride: usize,
    /// `[k*k][c]`
    w: Vec<f32>,
    b: Vec<f32>,
    act: Act,
}

/// Geometry of one call: `n` input maps of `h × w`; output rows `y0..y1` are computed
/// (all by default; a single image may be split between threads by rows).
#[derive(Clone, Copy)]
pub struct Shape {
    pub n: usize,
    pub h: usize,
    pub w: usize,
    pub y0: usize,
    pub y1: usize,
}

impl Shape {
    pub fn new(n: usize, h: usize, w: usize) -> Self {
        Shape {
            n,
            h,
            w,
            y0: 0,
            y1: usize::MAX,
        }
    }
}

impl Depthwise {
    /// From a PyTorch `[c, 1, k, k]` weight; `k` must be 3 or 5 and `stride` 1 or 2.
    pub fn new(w: &[f32], c: usize, k: usize, stride: usize, b: Vec<f32>, act: Act) -> Result<Self> {
        if !(k == 3 || k == 5) || !(stride == 1 || stride == 2) || c == 0 {
            return Err(Error::Model(format!(
                "depthwise conv of {c} channels, {k}x{k}, stride {stride}: the runtime runs 3x3 and 5x5 kernels with stride 1 or 2"
            )));
        }
        check_len("depthwise conv", "weight", w.len(), c * k * k)?;
        check_len("depthwise conv", "bias", b.len(), c)?;
        let mut t = vec![0.0; k * k * c];
        for ch in 0..c {
            for tap in 0..k * k {
                t[tap * c + ch] = w[ch * k * k + tap];
            }
        }
        Ok(Depthwise {
            c,
            k,
            stride,
            w: t,
            b,
            act,
        })
    }

    pub fn channels(&self) -> usize {
        self.c
    }

    pub fn k(&self) -> usize {
        self.k
    }

    pub fn stride(&self) -> usize {
        self.stride
    }

    pub fn out_hw(&self, h: usize, w: usize) -> (usize, usize) {
        let p = self.k / 2;
        (
            (h + 2 * p - self.k) / self.stride + 1,
            (w + 2 * p - self.k) / self.stride + 1,
        )
    }

    /// Convolves channels `0..c` of `src` (`c` ≤ the layer's channels: GhostNet keeps only
    /// part of its cheap branch) into `dst[.., off..off+c]`. With `accumulate` the result is
    /// added to what `dst` holds (the residual, summed in place).
    #[allow(clippy::too_many_arguments)]
    pub fn run(
        &self,
        c: usize,
        s: Shape,
        src: View,
        dst: &mut [f32],
        ld_dst: usize,
        off_dst: usize,
        accumulate: bool,
        team: Option<&Team>,
    ) {
        let (oh, ow) = self.out_hw(s.h, s.w);
        let pixels_in = s.n * s.h * s.w;
        let pixels_out = s.n * oh * ow;
        if pixels_out == 0 || c == 0 {
            return;
        }
        assert!(c <= self.c, "depthwise: {c} channels of {}", self.c);
        assert!(
            src.data.len() >= (pixels_in - 1) * src.ld + src.off + c,
            "depthwise src too small"
        );
        assert!(
            off_dst + c <= ld_dst && dst.len() >= (pixels_out - 1) * ld_dst + off_dst + c,
            "depthwise dst too small"
        );
        match team {
            Some(t) if s.n == 1 && oh >= 4 => {
                // Output rows split in two; each thread gets its own part of `dst`, which
                // the kernel indexes from its first row.
                let split = oh / 2;
                t.halves(dst, split * ow * ld_dst, &|p, part| {
                    let (y0, y1) = if p == 0 { (0, split) } else { (split, oh) };
                    // SAFETY: `c ≤ self.c` and the bounds of `src` and of `dst`'s rows were
                    // checked above; `part` starts at output row `y0` and holds rows
                    // `y0..y1` (`halves` splits `dst` at row `split`).
                    unsafe {
                        dw(
                            self,
                            c,
                            Shape { y0, y1, ..s },
                            src,
                            part,
                            ld_dst,
                            off_dst,
                            accumulate,
                        )
                    };
                });
            }
            // SAFETY: `c ≤ self.c` and the bounds of `src` and `dst` were checked above.
            _ => unsafe {
                dw(
                    self,
                    c,
                    Shape { y0: 0, y1: oh, ..s },
                    src,
                    dst,
                    ld_dst,
                    off_dst,
                    accumulate,
                )
            },
        }
    }
}

impl Depthwise {
    /// Output rows `s.y0..s.y1` of a single map (`s.n == 1`) of `s.h` rows held in `src`,
    /// written from `dst[0]` on (row `s.y0` first): a strip of a larger map, whose rows above
    /// and below `src` are read as zero padding, so the caller asks only for rows whose taps
    /// lie in `src` or in the real padding.
    pub fn rows(
        &self,
        s: Shape,
        src: View,
        dst: &mut [f32],
        ld_dst: usize,
        off_dst: usize,
        accumulate: bool,
    ) {
        let c = self.c;
        let (oh, ow) = self.out_hw(s.h, s.w);
        if s.y0 >= s.y1 {
            return;
        }
        assert!(
            s.n == 1 && s.y1 <= oh,
            "depthwise rows {}..{} of {oh}",
            s.y0,
            s.y1
        );
        assert!(
            src.off + c <= src.ld && src.data.len() >= (s.h * s.w - 1) * src.ld + src.off + c,
            "depthwise strip src too small"
        );
        assert!(
            off_dst + c <= ld_dst && dst.len() >= ((s.y1 - s.y0) * ow - 1) * ld_dst + off_dst + c,
            "depthwise strip dst too small"
        );
        // SAFETY: the rows asked for exist, and `src` and `dst` cover them (checked above).
        unsafe { dw(self, c, s, src, dst, ld_dst, off_dst, accumulate) };
    }
}

vector_dispatch! {
    fn dw(d: &Depthwise, c: usize, s: Shape, src: View, dst: &mut [f32], ld: usize, off: usize, res: bool) => by_kernel
}

/// Picks the kernel for this layer's size and activation.
///
/// # Safety
/// The CPU supports `A`, `B` and `C`; `c ≤ d.c`; and the bounds that
/// [`Depthwise::run`] checked: `src` covers every input pixel the taps of shape `s` read,
/// and `dst` with row stride `ld` and offset `off` covers every output pixel of rows
/// `s.y0..s.y1` (and holds the residual there when `res`).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn by_kernel<A: Vf, B: Vf, C: Vf>(
    d: &Depthwise,
    c: usize,
    s: Shape,
    src: View,
    dst: &mut [f32],
    ld: usize,
    off: usize,
    res: bool,
) {
    // SAFETY: the caller upholds this function's `# Safety` contract.
    unsafe {
        match (d.k, d.act.code()) {
            (3, 0) => channels::<3, 0, A, B, C>(d, c, s, src, dst, ld, off, res),
            (3, 1) => channels::<3, 1, A, B, C>(d, c, s, src, dst, ld, off, res),
            (5, 0) => channels::<5, 0, A, B, C>(d, c, s, src, dst, ld, off, res),
            (5, 1) => channels::<5, 1, A, B, C>(d, c, s, src, dst, ld, off, res),
            (3, 2) => channels::<3, 2, A, B, C>(d, c, s, src, dst, ld, off, res),
            (3, 3) => channels::<3, 3, A, B, C>(d, c, s, src, dst, ld, off, res),
            (3, 4) => channels::<3, 4, A, B, C>(d, c, s, src, dst, ld, off, res),
            (5, 2) => channels::<5, 2, A, B, C>(d, c, s, src, dst, ld, off, res),
            (5, 3) => channels::<5, 3, A, B, C>(d, c, s, src, dst, ld, off, res),
            (5, 4) => channels::<5, 4, A, B, C>(d, c, s, src, dst, ld, off, res),
            (k, a) => unreachable!("Depthwise::new admits no {k}x{k} kernel with activation {a}"),
        }
    }
}

/// Channel block by channel block (widest vector first), then row by row: a block's k²
/// weight vectors are loaded into registers once and sweep the whole map, whose K input rows
/// per output row stay in L1 (each block reads its own cache lines: pixel strides are padded
/// to 16 floats).
///
/// # Safety
/// As for [`by_kernel`].
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn channels<const K: usize, const ACT: u8, A: Vf, B: Vf, C: Vf>(
    d: &Depthwise,
    c: usize,
    s: Shape,
    src: View,
    dst: &mut [f32],
    ld: usize,
    off: usize,
    res: bool,
) {
    // SAFETY: the caller upholds this function's `# Safety` contract.
    unsafe {
        let mut cb = 0;
        while cb + A::L <= c {
            block::<K, ACT, A>(d, s, src, dst, ld, off, res, cb);
            cb += A::L;
        }
        while cb + B::L <= c {
            block::<K, ACT, B>(d, s, src, dst, ld, off, res, cb);
            cb += B::L;
        }
        while cb + C::L <= c {
            block::<K, ACT, C>(d, s, src, dst, ld, off, res, cb);
            cb += C::L;
        }
        while cb < c {
            block::<K, ACT, F1>(d, s, src, dst, ld, off, res, cb);
            cb += 1;
        }
    }
}

/// Channels `cb..cb+V::L` of every output row of the call.
///
/// # Safety
/// As for [`by_kernel`], with `V` for the vector type and `cb + V::L ≤ d.c`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn block<const K: usize, const ACT: u8, V: Vf>(
    d: &Depthwise,
    s: Shape,
    src: View,
    dst: &mut [f32],
    ld: usize,
    off: usize,
    res: bool,
    cb: usize,
) {
    // SAFETY: the caller upholds this function's `# Safety` contract.
    unsafe {
        let zero = V::splat(0.0);
        let mut wt = [zero; 25];
        for (tap, w) in wt.iter_mut().enumerate().take(K * K) {
            *w = V::load(d.w.as_ptr().add(tap * d.c + cb));
        }
        let bias = V::load(d.b.as_ptr().add(cb));
        let (oh, _) = d.out_hw(s.h, s.w);
        for img in 0..s.n {
            for oy in s.y0..s.y1.min(oh) {
                row::<K, ACT, V>(d, s, src, dst, ld, off, res, cb, img, oy, &wt, bias);
            }
        }
    }
}

/// Channels `cb..cb+V::L` of output row `oy` of image `img`. Bounds were checked by
/// [`Depthwise::run`].
///
/// # Safety
/// As for [`block`], with `img < s.n` and `oy` below the output height.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn row<const K: usize, const ACT: u8, V: Vf>(
    d: &Depthwise,
    s: Shape,
    src: View,
    dst: &mut [f32],
    ld: usize,
    off: usize,
    res: bool,
    cb: usize,
    img: usize,
    oy: usize,
    wt: &[V; 25],
    bias: V,
) {
    // SAFETY: the caller upholds this function's `# Safety` contract.
    unsafe {
        let zero = V::splat(0.0);
        let (oh, ow) = d.out_hw(s.h, s.w);
        let pad = K / 2;
        let st = d.stride;
        let sp = src.data.as_ptr().add(src.off + cb);
        let dp = dst.as_mut_ptr().add(off + cb);
        let sld = src.ld;
        let base_in = img * s.h * s.w;
        let base_out = img * oh * ow;
        let iy0 = (oy * st) as isize - pad as isize;
        // Which of the K input rows exist (all of them away from the top and bottom edges).
        let mut row_ok = [false; 5];
        for (ky, ok) in row_ok.iter_mut().enumerate().take(K) {
            let iy = iy0 + ky as isize;
            *ok = iy >= 0 && iy < s.h as isize;
        }
        // Clamped row index, so that address arithmetic stays in range for skipped rows.
        let rbase = |ky: usize| base_in + (iy0 + ky as isize).clamp(0, s.h as isize - 1) as usize * s.w;
        // Output columns whose K taps all lie inside the input row.
        let ox_lo = pad.div_ceil(st).min(ow);
        let ox_hi = if s.w + pad >= K {
            ((s.w + pad - K) / st + 1).min(ow)
        } else {
            0
        }
        .max(ox_lo);
        let step = st * sld;
        // Macros, not closures: a closure is a function of its own, compiled without the
        // caller's target features, and would turn every vector op into a call.
        macro_rules! finish {
            ($acc:expr, $ox:expr) => {{
                // `dst` starts at output row `s.y0` (0 unless the rows are split between threads).
                let o = dp.add((base_out + (oy - s.y0) * ow + $ox) * ld);
                let v = act::<V, ACT>($acc);
                if res {
                    V::add(V::load(o), v).store(o);
                } else {
                    v.store(o);
                }
            }};
        }
        // One pixel with its columns clipped (left and right edges).
        macro_rules! edge {
            ($ox:expr) => {{
                let ix0 = ($ox * st) as isize - pad as isize;
                let mut acc = bias;
                for ky in 0..K {
                    if !row_ok[ky] {
                        continue;
                    }
                    let r = rbase(ky);
                    for kx in 0..K {
                        let ix = ix0 + kx as isize;
                        if ix >= 0 && ix < s.w as isize {
                            acc = V::fma(
                                V::load(sp.add((r + ix as usize) * sld)),
                                wt[ky * K + kx],
                                acc,
                            );
                        }
                    }
                }
                acc
            }};
        }
        for ox in 0..ox_lo {
            finish!(edge!(ox), ox);
        }
        let mut ox = ox_lo;
        // A sliding window (rows above or below the image are skipped). The 3·stride + K input pixels
        // of each row are loaded once and feed the four outputs they overlap, so a multiply-add
        // needs half a load (stride 1) or three quarters (stride 2) instead of one; loads, not
        // FMAs, bound the plain tile below. The stride must be a constant here, or the window
        // is indexed at run time and lives on the stack. (5×5 at stride 2 would need 11 inputs
        // + 25 weights + 4 sums, more registers than there are.)
        macro_rules! slide {
            ($st:literal) => {
                while ox + 4 <= ox_hi {
                    let mut a = [bias; 4];
                    let ix0 = ox * $st - pad;
                    for ky in 0..K {
                        if !row_ok[ky] {
                            continue;
                        }
                        let p = sp.add((rbase(ky) + ix0) * sld);
                        let mut x = [zero; 3 * $st + 5];
                        for (j, xj) in x.iter_mut().enumerate().take(3 * $st + K) {
                            *xj = V::load(p.add(j * sld));
                        }
                        for kx in 0..K {
                            let w = wt[ky * K + kx];
                            for (i, ai) in a.iter_mut().enumerate() {
                                *ai = V::fma(x[i * $st + kx], w, *ai);
                            }
                        }
                    }
                    for (i, ai) in a.iter().enumerate() {
                        finish!(*ai, ox + i);
                    }
                    ox += 4;
                }
            };
        }
        match st {
            1 => slide!(1),
            2 if K == 3 => slide!(2),
            _ => {}
        }
        // Four output pixels at a time: four independent FMA chains hide the FMA latency.
        while ox + 4 <= ox_hi {
            let (mut a0, mut a1, mut a2, mut a3) = (bias, bias, bias, bias);
            let ix0 = ox * st - pad;
            for ky in 0..K {
                if !row_ok[ky] {
                    continue;
                }
                let r = rbase(ky) + ix0;
                for kx in 0..K {
                    let w = wt[ky * K + kx];
                    let p = sp.add((r + kx) * sld);
                    a0 = V::fma(V::load(p), w, a0);
                    a1 = V::fma(V::load(p.add(step)), w, a1);
                    a2 = V::fma(V::load(p.add(2 * step)), w, a2);
                    a3 = V::fma(V::load(p.add(3 * step)), w, a3);
                }
            }
            finish!(a0, ox);
            finish!(a1, ox + 1);
            finish!(a2, ox + 2);
            finish!(a3, ox + 3);
            ox += 4;
        }
        // Remaining interior columns: two chains, then one.
        while ox + 2 <= ox_hi {
            let (mut a0, mut a1) = (bias, bias);
            let ix0 = ox * st - pad;
            for ky in 0..K {
                if !row_ok[ky] {
                    continue;
                }
                let r = rbase(ky) + ix0;
                for kx in 0..K {
                    let w = wt[ky * K + kx];
                    let p = sp.add((r + kx) * sld);
                    a0 = V::fma(V::load(p), w, a0);
                    a1 = V::fma(V::load(p.add(step)), w, a1);
                }
            }
            finish!(a0, ox);
            finish!(a1, ox + 1);
            ox += 2;
        }
        while ox < ox_hi {
            let mut acc = bias;
            let ix0 = ox * st - pad;
            for ky in 0..K {
                if !row_ok[ky] {
                    continue;
                }
                let r = rbase(ky) + ix0;
                for kx in 0..K {
                    acc = V::fma(V::load(sp.add((r + kx) * sld)), wt[ky * K + kx], acc);
                }
            }
            finish!(acc, ox);
            ox += 1;
        }
        for ox in ox_hi..ow {
            finish!(edge!(ox), ox);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct definition: zero padding, bias, activation, optional residual.
    #[allow(clippy::too_many_arguments)]
    fn naive(
        d: &Depthwise,
        c: usize,
        n: usize,
        h: usize,
        w: usize,
        src: &[f32],
        ld: usize,
        res: &[f32],
    ) -> Vec<f32> {
        let (oh, ow) = d.out_hw(h, w);
        let (k, p) = (d.k as isize, (d.k / 2) as isize);
        let mut out = vec![0.0; n * oh * ow * c];
        for img in 0..n {
            for oy in 0..oh {
                for ox in 0..ow {
                    for ch in 0..c {
                        let mut acc = d.b[ch] as f64;
                        for ky in 0..k {
                            for kx in 0..k {
                                let iy = (oy * d.stride) as isize + ky - p;
                                let ix = (ox * d.stride) as isize + kx - p;
                                if iy >= 0 && ix >= 0 && iy < h as isize && ix < w as isize {
                                    let px = img * h * w + iy as usize * w + ix as usize;
                                    let wv = d.w[(ky * k + kx) as usize * d.c + ch];
                                    acc += src[px * ld + 3 + ch] as f64 * wv as f64;
                                }
                            }
                        }
                        let o = (img * oh * ow + oy * ow + ox) * c + ch;
                        out[o] = d.act.apply(acc as f32) + res[o];
                    }
                }
            }
        }
        out
    }

    /// Only layers a kernel exists for can be built: the 1-tap depthwise layer that once ran
    /// the 5×5 kernel over its weight is refused, and so are weights and biases of the wrong
    /// length and strides other than 1 and 2.
    #[test]
    fn new_refuses_what_no_kernel_runs() {
        let w = vec![0.5; 16 * 25];
        for (k, stride, wlen, blen) in [
            (1, 1, 16, 16),
            (7, 1, 16 * 49, 16),
            (3, 3, 144, 16),
            (3, 1, 143, 16),
            (5, 2, 400, 15),
        ] {
            let r = Depthwise::new(&w[..wlen.min(w.len())], 16, k, stride, vec![0.0; blen], Act::Relu);
            assert!(
                r.is_err(),
                "k {k} stride {stride} weight {wlen} bias {blen} accepted"
            );
        }
        assert!(Depthwise::new(&w[..144], 16, 3, 2, vec![0.0; 16], Act::HardSwish).is_ok());
    }

    /// Every path of the kernel (sliding windows, 4/2/1-pixel tiles, clipped edges, vector
    /// tails of 8, 4 and 1 channels) against the definition, on maps from 1×1 up, with
    /// channel offsets and padded pixel strides as the executor uses them.
    #[test]
    fn matches_definition() {
        let mut seed = 1u32;
        let mut rnd = move || {
            seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        for (k, stride) in [(3, 1), (3, 2), (5, 1), (5, 2)] {
            for (h, w) in [(1, 1), (2, 3), (4, 4), (5, 9), (7, 7), (13, 6), (11, 17)] {
                for c in [1, 5, 16, 29, 40] {
                    for (act, res) in [(Act::Relu, false), (Act::None, true)] {
                        let n = 2;
                        let wt: Vec<f32> = (0..c * k * k).map(|_| rnd()).collect();
                        let b: Vec<f32> = (0..c).map(|_| rnd()).collect();
                        let d = Depthwise::new(&wt, c, k, stride, b, act).unwrap();
                        let ld = c + 7;
                        let src: Vec<f32> = (0..n * h * w * ld).map(|_| rnd()).collect();
                        let (oh, ow) = d.out_hw(h, w);
                        let resid: Vec<f32> = (0..n * oh * ow * c)
                            .map(|_| if res { rnd() } else { 0.0 })
                            .collect();
                        let want = naive(&d, c, n, h, w, &src, ld, &resid);
                        // Output pixel stride c + 5, channels written at offset 2.
                        let (dld, doff) = (c + 5, 2);
                        let mut dst = vec![f32::NAN; n * oh * ow * dld];
                        for (i, r) in resid.iter().enumerate() {
                            dst[(i / c) * dld + doff + i % c] = *r;
                        }
                        d.run(
                            c,
                            Shape::new(n, h, w),
                            View::new(&src, ld, 3),
                            &mut dst,
                            dld,
                            doff,
                            res,
                            None,
                        );
                        for (i, want) in want.iter().enumerate() {
                            let got = dst[(i / c) * dld + doff + i % c];
                            assert!(
                                (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                                "k{k} s{stride} {h}x{w}x{c} {act:?} res {res}: element {i}: {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }
}
