//! The INT8 1×1 kernel on aarch64 CPUs with the dot-product extension (ARMv8.2 `sdot`):
//! each `sdot` multiplies 16 pairs of s8 values and adds each group of four into an i32
//! lane. The u8 activations are shifted into s8 (`q − 128`, an XOR of the top bit) and the
//! shift is folded into the bias (`+ 128 · Σ w`), so the sums are the same exact integers
//! as the other kernels'. A tile is 4 pixels × 16 output channels; the weights are packed at
//! load time in 16-column panels of groups of four input channels, the 4 pixels' inputs
//! per tile.

use std::arch::aarch64::*;
use std::arch::asm;

use super::qpointwise::QPointwise;
use super::requant::store;

/// Pixels per tile.
const MR: usize = 4;
/// Output channels per panel.
pub(super) const NR: usize = 16;
/// Input channels the kernel packs on its stack (inputs of up to 4096 channels).
pub(super) const MAX_CIN: usize = 4096;

/// Whether this CPU has `sdot` (ARMv8.2 dot product).
pub(super) fn available() -> bool {
    std::arch::is_aarch64_feature_detected!("dotprod")
}

/// Weights `[cout, cin]` as panels `[cout / 16][cin / 4][16][4]` of s8, zero-padded, and the
/// bias `bias[o] + 128 · Σ_i w[o][i]` for sums over `q − 128`.
pub(super) fn pack(w: &[i8], cout: usize, cin: usize, bias: &[i32]) -> (Vec<i8>, Vec<i32>) {
    let (panels, groups) = (cout.div_ceil(NR), cin.div_ceil(4));
    let mut p = vec![0i8; panels * groups * NR * 4];
    for o in 0..cout {
        let (panel, col) = (o / NR, o % NR);
        for i in 0..cin {
            p[((panel * groups + i / 4) * NR + col) * 4 + i % 4] = w[o * cin + i];
        }
    }
    let b = bias
        .iter()
        .enumerate()
        .map(|(o, &b)| {
            let sum: i32 = if o < cout {
                w[o * cin..(o + 1) * cin].iter().map(|&v| v as i32).sum()
            } else {
                0
            };
            b + 128 * sum
        })
        .collect();
    (p, b)
}

/// Pixels `r0..r1` of `src` into `dst` (from its row 0), tile by tile.
///
/// # Safety
/// The CPU has `sdot` ([`available`]); `w` and `bias` are [`pack`]'s output for `l`, whose
/// `cin` is at most [`MAX_CIN`]; `src` holds rows `r0..r1` of `l.cin()` bytes at stride
/// `lds`; `dst` holds `r1 − r0` rows of `l.cout()` bytes at stride `ldd`.
#[target_feature(enable = "dotprod")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn rows(
    l: &QPointwise,
    (w, bias): (&[i8], &[i32]),
    r0: usize,
    r1: usize,
    src: &[u8],
    lds: usize,
    dst: &mut [u8],
    ldd: usize,
) {
    let (cin, cout) = (l.cin(), l.cout());
    let groups = cin.div_ceil(4);
    // The tile's inputs as s8, each pixel's groups of four at stride `groups`.
    let mut xs = [0u32; MR * MAX_CIN / 4];
    let mut r = r0;
    while r < r1 {
        let rows = (r1 - r).min(MR);
        for t in 0..MR {
            let to = &mut xs[t * groups..(t + 1) * groups];
            if t >= rows {
                to.fill(0);
                continue;
            }
            let x = &src[(r + t) * lds..][..cin];
            for (g, v) in to.iter_mut().enumerate() {
                let mut b = [0x80u8; 4];
                let n = (cin - 4 * g).min(4);
                b[..n].copy_from_slice(&x[4 * g..4 * g + n]);
                *v = u32::from_le_bytes(b) ^ 0x8080_8080;
            }
        }
        for panel in 0..cout.div_ceil(NR) {
            let mut acc = [[0i32; NR]; MR];
            // SAFETY: the panel holds `groups` groups of 16 × 4 bytes; `xs` holds `groups`
            // values for each of the MR pixels; the CPU has `sdot`.
            unsafe {
                tile(
                    &w[panel * groups * NR * 4..][..groups * NR * 4],
                    &xs,
                    groups,
                    &mut acc,
                )
            };
            let o0 = panel * NR;
            let n = (cout - o0).min(NR);
            for (t, a) in acc.iter().enumerate().take(rows) {
                let out = &mut dst[(r - r0 + t) * ldd + o0..][..n];
                for (j, v) in out.iter_mut().enumerate() {
                    *v = store(l.requant(), o0 + j, a[j] + bias[o0 + j], None);
                }
            }
        }
        r += rows;
    }
}

/// The sums of one tile: `acc[t][j]` over the groups, of pixel `t`'s inputs times column
/// `j`'s weights.
///
/// # Safety
/// The CPU has `sdot`; `w` holds `groups · 64` bytes and `xs` `MR · groups` values.
#[target_feature(enable = "dotprod")]
#[inline]
unsafe fn tile(w: &[i8], xs: &[u32], groups: usize, acc: &mut [[i32; NR]; MR]) {
    // SAFETY: every load is within `w` (group `g < groups`, 64 bytes) or `xs`; the CPU has
    // NEON (the aarch64 baseline) and `sdot`.
    unsafe {
        let z = vdupq_n_s32(0);
        let mut a = [[z; 4]; MR];
        for g in 0..groups {
            let wp = w.as_ptr().add(g * NR * 4);
            let wv = [0, 1, 2, 3].map(|q| vld1q_s8(wp.add(16 * q)));
            for (t, at) in a.iter_mut().enumerate() {
                let x = vreinterpretq_s8_u32(vdupq_n_u32(*xs.get_unchecked(t * groups + g)));
                for (q, aq) in at.iter_mut().enumerate() {
                    asm!(
                        "sdot {acc:v}.4s, {w:v}.16b, {x:v}.16b",
                        acc = inout(vreg) *aq,
                        w = in(vreg) wv[q],
                        x = in(vreg) x,
                        options(pure, nomem, nostack)
                    );
                }
            }
        }
        for (t, at) in a.iter().enumerate() {
            for (q, aq) in at.iter().enumerate() {
                vst1q_s32(acc[t].as_mut_ptr().add(4 * q), *aq);
            }
        }
    }
}
