//! The 1×1-convolution GEMM for aarch64 NEON with the epilogue fused: `C = act(A·B + bias)`
//! or `C += A·B + bias`, where A is the NHWC activation `[m, k]` (row stride `lda`), B the
//! weights packed once at load time in the AVX2 kernel's panels of 16 columns (four 4-lane
//! registers, [`super::gemm256::pack`]), and C written with any row stride.
//!
//! Rows are taken 5 at a time: 20 accumulators, the 5 rows' next four values of k in 5
//! registers and one panel row's 4 weight registers fill 29 of the 32. Each group of four k
//! steps loads the 5 rows once (`ldr q`) and multiplies by lane (`fmla v.4s, v.4s, v.s[j]`):
//! 80 FMAs against 18 loads. docs/platforms.md compares the instructions it executes per
//! layer with the gemm crate's (which packs A on every call and adds an epilogue pass).

use std::arch::aarch64::*;

use super::gemm256::PANEL;

/// Rows per tile.
const ROWS: usize = 5;

/// Up to this many rows, the panels are the outer loop (each read once while the rows stay
/// in L1/L2), as in the AVX2 kernel.
const FEW_ROWS: usize = 64;

#[derive(Clone, Copy)]
struct Epilogue {
    relu: bool,
    accumulate: bool,
}

/// # Safety
/// `a` must cover `m` rows of `k` floats at stride `lda`, `c` must cover `m` rows of `n`
/// floats at stride `ldc`, `packed` must come from [`super::gemm256::pack`] with the same
/// `k` and `n`, and `bias` from [`super::gemm256::pad_bias`] of `n` floats. (NEON is part of
/// the aarch64 baseline.)
pub unsafe fn gemm(
    m: usize,
    k: usize,
    n: usize,
    a: *const f32,
    lda: usize,
    packed: *const f32,
    bias: *const f32,
    c: *mut f32,
    ldc: usize,
    relu: bool,
    accumulate: bool,
) {
    let e = Epilogue { relu, accumulate };
    let panels = n.div_ceil(PANEL);
    // SAFETY: the caller upholds this function's contract; each tile stays inside the `m`
    // rows and the panels.
    unsafe {
        if m <= FEW_ROWS {
            for p in 0..panels {
                rows(m, p..p + 1, k, n, a, lda, packed, bias, c, ldc, e);
            }
        } else {
            rows(m, 0..panels, k, n, a, lda, packed, bias, c, ldc, e);
        }
    }
}

/// All `m` rows against `panels`, a row tile at a time.
///
/// # Safety
/// As for [`gemm`], with `panels` within `n`'s panels.
#[inline(always)]
unsafe fn rows(
    m: usize,
    panels: std::ops::Range<usize>,
    k: usize,
    n: usize,
    a: *const f32,
    lda: usize,
    packed: *const f32,
    bias: *const f32,
    c: *mut f32,
    ldc: usize,
    e: Epilogue,
) {
    // SAFETY: as for `gemm`; each tile stays inside the `m` rows.
    unsafe {
        let mut i = 0;
        while i + ROWS <= m {
            tile::<ROWS>(i, panels.clone(), k, n, a, lda, packed, bias, c, ldc, e);
            i += ROWS;
        }
        let p = panels;
        match m - i {
            0 => {}
            1 => tile::<1>(i, p, k, n, a, lda, packed, bias, c, ldc, e),
            2 => tile::<2>(i, p, k, n, a, lda, packed, bias, c, ldc, e),
            3 => tile::<3>(i, p, k, n, a, lda, packed, bias, c, ldc, e),
            _ => tile::<4>(i, p, k, n, a, lda, packed, bias, c, ldc, e),
        }
    }
}

/// `acc[j] += w[j] * x[L]` for the four registers of one panel row.
#[inline(always)]
fn step<const L: i32>(acc: &mut [float32x4_t; 4], w: &[float32x4_t; 4], x: float32x4_t) {
    // SAFETY: NEON is baseline on aarch64; plain register arithmetic.
    unsafe {
        for j in 0..4 {
            acc[j] = vfmaq_laneq_f32::<L>(acc[j], w[j], x);
        }
    }
}

/// Rows `i..i+R` against `panels`, four registers per row.
///
/// # Safety
/// As for [`gemm`], with `i + R ≤ m`.
#[inline(always)]
#[allow(clippy::needless_range_loop)]
unsafe fn tile<const R: usize>(
    i: usize,
    panels: std::ops::Range<usize>,
    k: usize,
    n: usize,
    a: *const f32,
    lda: usize,
    packed: *const f32,
    bias: *const f32,
    c: *mut f32,
    ldc: usize,
    e: Epilogue,
) {
    // SAFETY: the caller's contract: A's rows i..i+R hold k floats (the 4-wide loads stop at
    // k), every panel holds k × 16 floats, the bias whole panels; `store` writes C only in
    // its `n` columns.
    unsafe {
        let ap = a.add(i * lda);
        for p in panels {
            let col = p * PANEL;
            let width = PANEL.min(n - col);
            let bp = packed.add(p * k * PANEL);
            let b: [float32x4_t; 4] = std::array::from_fn(|j| vld1q_f32(bias.add(col + 4 * j)));
            let mut acc = [b; R];
            let w = |kk: usize| -> [float32x4_t; 4] {
                std::array::from_fn(|j| vld1q_f32(bp.add(kk * PANEL + 4 * j)))
            };
            let mut kk = 0;
            while kk + 4 <= k {
                let x: [float32x4_t; R] = std::array::from_fn(|r| vld1q_f32(ap.add(r * lda + kk)));
                // One panel row at a time, so that 4 weight registers are live, not 16.
                let w0 = w(kk);
                for r in 0..R {
                    step::<0>(&mut acc[r], &w0, x[r]);
                }
                let w1 = w(kk + 1);
                for r in 0..R {
                    step::<1>(&mut acc[r], &w1, x[r]);
                }
                let w2 = w(kk + 2);
                for r in 0..R {
                    step::<2>(&mut acc[r], &w2, x[r]);
                }
                let w3 = w(kk + 3);
                for r in 0..R {
                    step::<3>(&mut acc[r], &w3, x[r]);
                }
                kk += 4;
            }
            while kk < k {
                let w0 = w(kk);
                for r in 0..R {
                    let x = vld1q_dup_f32(ap.add(r * lda + kk));
                    step::<0>(&mut acc[r], &w0, x);
                }
                kk += 1;
            }
            for r in 0..R {
                store(&acc[r], c.add((i + r) * ldc + col), width, e);
            }
        }
    }
}

/// The first `width` (1 to 16) columns of one row's accumulators through the epilogue.
///
/// # Safety
/// `out` covers `width` floats.
#[inline(always)]
unsafe fn store(acc: &[float32x4_t; 4], out: *mut f32, width: usize, e: Epilogue) {
    // SAFETY: whole registers are stored only where all four lanes lie within `width`; the
    // rest goes lane by lane through a stack copy.
    unsafe {
        for (j, &v) in acc.iter().enumerate() {
            let lanes = width.saturating_sub(4 * j).min(4);
            if lanes == 0 {
                break;
            }
            let mut v = if e.relu { vmaxq_f32(v, vdupq_n_f32(0.0)) } else { v };
            let o = out.add(4 * j);
            if lanes == 4 {
                if e.accumulate {
                    v = vaddq_f32(v, vld1q_f32(o));
                }
                vst1q_f32(o, v);
            } else {
                let mut t = [0f32; 4];
                vst1q_f32(t.as_mut_ptr(), v);
                for (l, &x) in t.iter().enumerate().take(lanes) {
                    *o.add(l) = if e.accumulate { *o.add(l) + x } else { x };
                }
            }
        }
    }
}
