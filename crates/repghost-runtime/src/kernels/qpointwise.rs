//! INT8 1×1 convolution: u8 activations (per-tensor scale and zero point) times s8 weights
//! (per output channel), exact i32 sums, and the requantizing store of [`super::requant`].
//!
//! On AVX2 the products run through `vpmaddwd`: activations and weights widened to i16 and
//! paired along the input channels, so that one instruction multiplies 16 pairs and adds
//! each pair into an i32 lane. Nothing saturates (a pair sums to at most 2 · 255 · 127),
//! unlike `vpmaddubsw`'s 16-bit sums. A tile is 6 pixels × 16 output channels; the 6 pixels'
//! input pairs are packed once per tile and broadcast, the weights are packed at load time
//! in 16-column panels of pairs. On aarch64 with the dot-product extension, `sdot`
//! (`qpointwise_sdot.rs`). Elsewhere a portable loop computes the same sums.

use super::check_len;
#[cfg(target_arch = "aarch64")]
use super::qpointwise_sdot as sdot;
use super::requant::{store, Requant};
#[cfg(target_arch = "x86_64")]
use crate::act::Act;
use crate::error::{Error, Result};
use crate::team::Team;

/// Pixels per AVX2 tile.
const MR: usize = 6;
/// Output channels per panel.
const NR: usize = 16;
/// Input-channel pairs the AVX2 kernel packs on its stack (inputs of up to 2048 channels).
#[cfg(target_arch = "x86_64")]
const MAX_PAIRS: usize = 1024;

/// An INT8 1×1 conv whose parts agree: `w` of `cout · cin` values, `bias` and
/// `rq.sacc` of at least `cout` (padded to whole panels), and `packed` packed for this
/// shape, for a kernel this CPU runs ([`QPointwise::new`] establishes this).
pub struct QPointwise {
    cin: usize,
    cout: usize,
    /// `[cin][cout]`
    wt: Vec<i16>,
    /// Padded to whole panels; sums over raw inputs (the input zero point folded in).
    bias: Vec<i32>,
    rq: Requant,
    packed: Packed,
}

/// The weights as a fast kernel reads them.
enum Packed {
    /// The portable loop only.
    None,
    /// AVX2 panels: `[cout / 16][cin / 2][16][2]` i16, zero-padded.
    #[cfg(target_arch = "x86_64")]
    Avx2(Vec<i16>),
    /// `sdot` panels `[cout / 16][cin / 4][16][4]` s8, and the bias for inputs `q − 128`.
    #[cfg(target_arch = "aarch64")]
    Sdot(Vec<i8>, Vec<i32>),
}

impl QPointwise {
    /// From an s8 `[cout, cin]` weight, its i32 bias (input zero point folded in, see
    /// [`super::requant::bias`]) and the output's quantization.
    pub fn new(w: &[i8], cout: usize, cin: usize, bias: Vec<i32>, rq: Requant) -> Result<Self> {
        if cin == 0 || cout == 0 {
            return Err(Error::Model(format!("1x1 conv of {cin} → {cout} channels")));
        }
        check_len("int8 1x1 conv", "weight", w.len(), cout * cin)?;
        check_len("int8 1x1 conv", "bias", bias.len(), cout)?;
        check_len("int8 1x1 conv", "scale", rq.sacc.len(), cout.next_multiple_of(NR))?;
        let mut wt = vec![0i16; cin * cout];
        for o in 0..cout {
            for i in 0..cin {
                wt[i * cout + o] = w[o * cin + i] as i16;
            }
        }
        let mut bias = bias;
        bias.resize(cout.next_multiple_of(NR), 0);
        let mut packed = Packed::None;
        #[cfg(target_arch = "x86_64")]
        if crate::simd::level() != crate::simd::Level::Portable
            && matches!(rq.act, Act::None | Act::Relu)
            && cin.div_ceil(2) <= MAX_PAIRS
        {
            packed = Packed::Avx2(pack(w, cout, cin));
        }
        #[cfg(target_arch = "aarch64")]
        if sdot::available() && cin <= sdot::MAX_CIN {
            let (w, b) = sdot::pack(w, cout, cin, &bias);
            packed = Packed::Sdot(w, b);
        }
        Ok(QPointwise {
            cin,
            cout,
            wt,
            bias,
            rq,
            packed,
        })
    }

    pub fn cout(&self) -> usize {
        self.cout
    }

    pub fn cin(&self) -> usize {
        self.cin
    }

    #[cfg(target_arch = "aarch64")]
    pub(super) fn requant(&self) -> &Requant {
        &self.rq
    }

    /// `m` pixels of `src` (row stride `lds`, channels from 0) into `dst` (row stride `ldd`,
    /// channels from 0).
    pub fn run(&self, m: usize, src: &[u8], lds: usize, dst: &mut [u8], ldd: usize, team: Option<&Team>) {
        if m == 0 {
            return;
        }
        assert!(
            lds >= self.cin && src.len() >= (m - 1) * lds + self.cin,
            "int8 1x1 src too small"
        );
        assert!(
            ldd >= self.cout && dst.len() >= (m - 1) * ldd + self.cout,
            "int8 1x1 dst too small"
        );
        match team {
            Some(t) if m >= 2 * MR => {
                let split = (m / 2).next_multiple_of(MR);
                t.halves(dst, split * ldd, &|p, part| {
                    let (r0, r1) = if p == 0 { (0, split) } else { (split, m) };
                    self.rows(r0, r1, src, lds, part, ldd);
                });
            }
            _ => self.rows(0, m, src, lds, dst, ldd),
        }
    }

    /// Pixels `r0..r1` of `src` into `dst`, which starts at pixel `r0`.
    fn rows(&self, r0: usize, r1: usize, src: &[u8], lds: usize, dst: &mut [u8], ldd: usize) {
        match &self.packed {
            // SAFETY: `new` packed the panels only where the CPU has AVX2 (level() checked
            // it), for this layer's shape, with `bias` and `rq.sacc` padded to whole panels;
            // `src` holds rows `r0..r1` of `cin` bytes and `dst` rows `0..r1 - r0` of `cout`
            // bytes (checked by `run`).
            #[cfg(target_arch = "x86_64")]
            Packed::Avx2(w) => unsafe { avx2::rows(self, w, r0, r1, src, lds, dst, ldd) },
            // SAFETY: as above, where the CPU has `sdot` (`sdot::available` checked it) and
            // `cin ≤ sdot::MAX_CIN`.
            #[cfg(target_arch = "aarch64")]
            Packed::Sdot(w, b) => unsafe { sdot::rows(self, (w, b), r0, r1, src, lds, dst, ldd) },
            Packed::None => portable(self, r0, r1, src, lds, dst, ldd),
        }
    }
}

/// Weights `[cout, cin]` as AVX2 panels of input-channel pairs.
#[cfg(target_arch = "x86_64")]
fn pack(w: &[i8], cout: usize, cin: usize) -> Vec<i16> {
    let (panels, pairs) = (cout.div_ceil(NR), cin.div_ceil(2));
    let mut p = vec![0i16; panels * pairs * NR * 2];
    for o in 0..cout {
        let (panel, col) = (o / NR, o % NR);
        for i in 0..cin {
            p[((panel * pairs + i / 2) * NR + col) * 2 + i % 2] = w[o * cin + i] as i16;
        }
    }
    p
}

/// The definition: for each pixel, 64 output channels at a time, sums over the input
/// channels (zero inputs skipped), then the store.
fn portable(l: &QPointwise, r0: usize, r1: usize, src: &[u8], lds: usize, dst: &mut [u8], ldd: usize) {
    let mut acc = [0i32; 64];
    for r in r0..r1 {
        let x = &src[r * lds..r * lds + l.cin];
        let out = &mut dst[(r - r0) * ldd..];
        for o0 in (0..l.cout).step_by(64) {
            let n = (l.cout - o0).min(64);
            let acc = &mut acc[..n];
            acc.copy_from_slice(&l.bias[o0..o0 + n]);
            for (i, &v) in x.iter().enumerate() {
                if v != 0 {
                    let w = &l.wt[i * l.cout + o0..][..n];
                    acc.iter_mut()
                        .zip(w)
                        .for_each(|(a, &w)| *a += v as i32 * w as i32);
                }
            }
            for (j, &a) in acc.iter().enumerate() {
                out[o0 + j] = store(&l.rq, o0 + j, a, None);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{QPointwise, MAX_PAIRS, MR, NR};
    use crate::act::Act;
    use crate::kernels::requant::avx2::{eight, load_bytes, pack8, quantize16, store_bytes};
    use std::arch::x86_64::*;

    /// Pixels `r0..r1` of `src` into `dst` (from its row 0), tile by tile.
    ///
    /// # Safety
    /// The CPU has AVX2; `packed` holds `l`'s panels; `src` holds rows `r0..r1` of
    /// `l.cin` bytes at stride `lds`; `dst` holds `r1 - r0` rows of `l.cout` bytes at stride
    /// `ldd`.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn rows(
        l: &QPointwise,
        packed: &[i16],
        r0: usize,
        r1: usize,
        src: &[u8],
        lds: usize,
        dst: &mut [u8],
        ldd: usize,
    ) {
        let pairs = l.cin.div_ceil(2);
        // Each pixel's pairs, zero-extended, at stride `ps` (an odd multiple of 8 pairs, so
        // that the tile's rows do not all fall in the same cache sets).
        let ps = pairs.next_multiple_of(8) | 8;
        let mut ap = [0u32; MR * (MAX_PAIRS + 8)];
        let mut r = r0;
        while r < r1 {
            let rows = (r1 - r).min(MR);
            for t in 0..rows {
                // SAFETY: row `r + t < r1` of `src` holds `cin` bytes (the caller's
                // contract); the 16 pairs written per step lie within the row's `ps ≥
                // pairs rounded up to 8` slots of `ap`.
                unsafe { widen(&src[(r + t) * lds..][..l.cin], ap.as_mut_ptr().add(t * ps)) };
            }
            for panel in 0..l.cout.div_ceil(NR) {
                // A last panel of at most 8 channels computes its first half only.
                let half = l.cout - panel * NR <= NR / 2;
                // SAFETY: `ap` holds `pairs` pairs of each of the tile's pixels at stride
                // `ps`; the panel and its bias and scales exist (`new` padded them to whole
                // panels); the rows of `dst` written lie within it (the caller's contract).
                unsafe {
                    let dst_tile = dst.as_mut_ptr().add((r - r0) * ldd + panel * NR);
                    let tile = if half { tile::<false> } else { tile::<true> };
                    tile(l, packed, &ap, (pairs, ps), panel, rows, dst_tile, ldd)
                };
            }
            r += rows;
        }
    }

    /// The bytes of `x` zero-extended to u16 at `to`, followed by zeros up to a whole number
    /// of 8 pairs.
    ///
    /// # Safety
    /// The CPU has AVX2; `to` has room for `x.len()` rounded up to 16 u16 values.
    #[inline(always)]
    unsafe fn widen(x: &[u8], to: *mut u32) {
        // SAFETY: as the caller guarantees; loads read `x` only.
        unsafe {
            let to = to as *mut u16;
            let mut i = 0;
            while i + 16 <= x.len() {
                let v = _mm_loadu_si128(x.as_ptr().add(i) as *const __m128i);
                _mm256_storeu_si256(to.add(i) as *mut __m256i, _mm256_cvtepu8_epi16(v));
                i += 16;
            }
            if i < x.len() {
                let v = load_bytes(x.as_ptr().add(i), x.len() - i);
                _mm256_storeu_si256(to.add(i) as *mut __m256i, _mm256_cvtepu8_epi16(v));
            }
        }
    }

    /// One tile: MR pixels (`rows` of them stored) × one panel of 16 output channels (the
    /// first 8 only unless `TWO`; the other 8 are then not stored).
    ///
    /// # Safety
    /// As for [`rows`], with `dst` at the tile's first byte and `rows` rows there (a tile
    /// writes the panel's `min(16, cout − 16 · panel)` bytes of each).
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile<const TWO: bool>(
        l: &QPointwise,
        packed: &[i16],
        ap: &[u32],
        (pairs, ps): (usize, usize),
        panel: usize,
        rows: usize,
        dst: *mut u8,
        ldd: usize,
    ) {
        // SAFETY: every pointer below stays within `packed` (`panel < cout / 16` rounded
        // up, `p < pairs`), `ap` (`MR` rows of `ps ≥ pairs`), the padded `bias` and `sacc`,
        // and the caller's `dst` rows.
        unsafe {
            let wp = packed.as_ptr().add(panel * pairs * NR * 2);
            let mut acc = [[_mm256_setzero_si256(); 2]; MR];
            for p in 0..pairs {
                let w0 = _mm256_loadu_si256(wp.add(p * 32) as *const __m256i);
                let w1 = if TWO {
                    _mm256_loadu_si256(wp.add(p * 32 + 16) as *const __m256i)
                } else {
                    w0
                };
                for (t, a) in acc.iter_mut().enumerate() {
                    let x = _mm256_set1_epi32(*ap.get_unchecked(t * ps + p) as i32);
                    a[0] = _mm256_add_epi32(a[0], _mm256_madd_epi16(x, w0));
                    if TWO {
                        a[1] = _mm256_add_epi32(a[1], _mm256_madd_epi16(x, w1));
                    }
                }
            }
            let o = panel * NR;
            let b0 = _mm256_loadu_si256(l.bias.as_ptr().add(o) as *const __m256i);
            let b1 = _mm256_loadu_si256(l.bias.as_ptr().add(o + 8) as *const __m256i);
            let relu = l.rq.act == Act::Relu;
            let n = (l.cout - o).min(NR);
            for (t, a) in acc.iter().enumerate().take(rows) {
                let sums = [_mm256_add_epi32(a[0], b0), _mm256_add_epi32(a[1], b1)];
                let sacc = l.rq.sacc.as_ptr().add(o);
                let bytes = if TWO {
                    quantize16(sums, sacc, relu, l.rq.inv, l.rq.zp, None)
                } else {
                    pack8(eight(sums[0], sacc, relu, l.rq.inv, l.rq.zp, None, false))
                };
                let out = dst.add(t * ldd);
                store_bytes(out, bytes, n);
            }
        }
    }
}
