//! Explicit SIMD vectors for the hand-written kernels: 16 lanes (AVX-512), 8 (AVX2+FMA),
//! 4 (the 128-bit registers of either), 8 and 4 on aarch64 (NEON: two registers or one, with
//! `fmla` fused multiply-adds) and 1 (portable). A kernel is written once over [`Vf`] and
//! instantiated inside functions compiled for the matching target features.

#[cfg(target_arch = "aarch64")]
use std::arch::aarch64::*;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// A vector of `L` f32 lanes.
///
/// # Safety
/// Every method is `unsafe`: the caller guarantees that the CPU supports the vector's
/// instruction set and that pointers cover `L` floats.
pub trait Vf: Copy {
    const L: usize;
    unsafe fn load(p: *const f32) -> Self;
    unsafe fn store(self, p: *mut f32);
    unsafe fn splat(v: f32) -> Self;
    /// `a * b + c`
    unsafe fn fma(a: Self, b: Self, c: Self) -> Self;
    unsafe fn add(a: Self, b: Self) -> Self;
    unsafe fn max(a: Self, b: Self) -> Self;
}

/// Applies activation code `A` (see `Act::code`) lane-wise.
///
/// # Safety
/// The CPU must support `V`'s instruction set.
#[inline(always)]
pub unsafe fn act<V: Vf, const A: u8>(v: V) -> V {
    // SAFETY: the caller guarantees `V`'s instruction set; `t` holds 16 ≥ `L` floats.
    unsafe {
        match A {
            0 => v,
            1 => V::max(v, V::splat(0.0)),
            _ => {
                let mut t = [0f32; 16];
                v.store(t.as_mut_ptr());
                for x in t.iter_mut().take(V::L) {
                    *x = crate::act::Act::apply_code::<A>(*x);
                }
                V::load(t.as_ptr())
            }
        }
    }
}

#[derive(Clone, Copy)]
pub struct F1(f32);

impl Vf for F1 {
    const L: usize = 1;
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: the caller upholds the trait's contract: the CPU has the vector's
        // instruction set and the pointer covers `L` floats.
        unsafe { F1(*p) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        // SAFETY: the caller upholds the trait's contract: the CPU has the vector's
        // instruction set and the pointer covers `L` floats.
        unsafe { *p = self.0 }
    }
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        F1(v)
    }
    #[inline(always)]
    unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
        F1(a.0 * b.0 + c.0)
    }
    #[inline(always)]
    unsafe fn add(a: Self, b: Self) -> Self {
        F1(a.0 + b.0)
    }
    #[inline(always)]
    unsafe fn max(a: Self, b: Self) -> Self {
        F1(a.0.max(b.0))
    }
}

#[cfg(target_arch = "x86_64")]
macro_rules! x86_vector {
    ($name:ident, $ty:ty, $l:expr, $load:ident, $store:ident, $set1:ident, $fma:ident, $add:ident, $max:ident) => {
        #[derive(Clone, Copy)]
        pub struct $name($ty);
        impl Vf for $name {
            const L: usize = $l;
            #[inline(always)]
            unsafe fn load(p: *const f32) -> Self {
                // SAFETY: the caller upholds the trait's contract: the CPU has the vector's
                // instruction set and the pointer covers `L` floats.
                unsafe { $name($load(p)) }
            }
            #[inline(always)]
            unsafe fn store(self, p: *mut f32) {
                // SAFETY: the caller upholds the trait's contract: the CPU has the vector's
                // instruction set and the pointer covers `L` floats.
                unsafe { $store(p, self.0) }
            }
            #[inline(always)]
            unsafe fn splat(v: f32) -> Self {
                // SAFETY: the caller upholds the trait's contract: the CPU has the vector's
                // instruction set and the pointer covers `L` floats.
                unsafe { $name($set1(v)) }
            }
            #[inline(always)]
            unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
                // SAFETY: the caller upholds the trait's contract: the CPU has the vector's
                // instruction set and the pointer covers `L` floats.
                unsafe { $name($fma(a.0, b.0, c.0)) }
            }
            #[inline(always)]
            unsafe fn add(a: Self, b: Self) -> Self {
                // SAFETY: the caller upholds the trait's contract: the CPU has the vector's
                // instruction set and the pointer covers `L` floats.
                unsafe { $name($add(a.0, b.0)) }
            }
            #[inline(always)]
            unsafe fn max(a: Self, b: Self) -> Self {
                // SAFETY: the caller upholds the trait's contract: the CPU has the vector's
                // instruction set and the pointer covers `L` floats.
                unsafe { $name($max(a.0, b.0)) }
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
x86_vector!(
    F16,
    __m512,
    16,
    _mm512_loadu_ps,
    _mm512_storeu_ps,
    _mm512_set1_ps,
    _mm512_fmadd_ps,
    _mm512_add_ps,
    _mm512_max_ps
);
#[cfg(target_arch = "x86_64")]
x86_vector!(
    F8,
    __m256,
    8,
    _mm256_loadu_ps,
    _mm256_storeu_ps,
    _mm256_set1_ps,
    _mm256_fmadd_ps,
    _mm256_add_ps,
    _mm256_max_ps
);
#[cfg(target_arch = "x86_64")]
x86_vector!(
    F4,
    __m128,
    4,
    _mm_loadu_ps,
    _mm_storeu_ps,
    _mm_set1_ps,
    _mm_fmadd_ps,
    _mm_add_ps,
    _mm_max_ps
);

/// NEON, four lanes: one `float32x4_t`. NEON is part of the aarch64 baseline, so these run on
/// every aarch64 CPU.
#[cfg(target_arch = "aarch64")]
#[derive(Clone, Copy)]
pub struct N4(float32x4_t);

#[cfg(target_arch = "aarch64")]
impl Vf for N4 {
    const L: usize = 4;
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: the caller guarantees that `p` covers 4 floats; NEON is baseline.
        unsafe { N4(vld1q_f32(p)) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        // SAFETY: as for `load`.
        unsafe { vst1q_f32(p, self.0) }
    }
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        // SAFETY: NEON is baseline on aarch64.
        unsafe { N4(vdupq_n_f32(v)) }
    }
    #[inline(always)]
    unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
        // SAFETY: NEON is baseline on aarch64; `vfmaq_f32(c, a, b)` is `c + a * b`, one `fmla`.
        unsafe { N4(vfmaq_f32(c.0, a.0, b.0)) }
    }
    #[inline(always)]
    unsafe fn add(a: Self, b: Self) -> Self {
        // SAFETY: NEON is baseline on aarch64.
        unsafe { N4(vaddq_f32(a.0, b.0)) }
    }
    #[inline(always)]
    unsafe fn max(a: Self, b: Self) -> Self {
        // SAFETY: NEON is baseline on aarch64.
        unsafe { N4(vmaxq_f32(a.0, b.0)) }
    }
}

/// NEON, eight lanes as two `float32x4_t`: twice the independent accumulators per tile, so
/// that the four-cycle `fmla` latency of common Arm cores is hidden with two or more FMA pipes.
#[cfg(target_arch = "aarch64")]
#[derive(Clone, Copy)]
pub struct N8(float32x4_t, float32x4_t);

#[cfg(target_arch = "aarch64")]
impl Vf for N8 {
    const L: usize = 8;
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        // SAFETY: the caller guarantees that `p` covers 8 floats; NEON is baseline.
        unsafe { N8(vld1q_f32(p), vld1q_f32(p.add(4))) }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        // SAFETY: as for `load`.
        unsafe {
            vst1q_f32(p, self.0);
            vst1q_f32(p.add(4), self.1);
        }
    }
    #[inline(always)]
    unsafe fn splat(v: f32) -> Self {
        // SAFETY: NEON is baseline on aarch64.
        unsafe { N8(vdupq_n_f32(v), vdupq_n_f32(v)) }
    }
    #[inline(always)]
    unsafe fn fma(a: Self, b: Self, c: Self) -> Self {
        // SAFETY: NEON is baseline on aarch64.
        unsafe { N8(vfmaq_f32(c.0, a.0, b.0), vfmaq_f32(c.1, a.1, b.1)) }
    }
    #[inline(always)]
    unsafe fn add(a: Self, b: Self) -> Self {
        // SAFETY: NEON is baseline on aarch64.
        unsafe { N8(vaddq_f32(a.0, b.0), vaddq_f32(a.1, b.1)) }
    }
    #[inline(always)]
    unsafe fn max(a: Self, b: Self) -> Self {
        // SAFETY: NEON is baseline on aarch64.
        unsafe { N8(vmaxq_f32(a.0, b.0), vmaxq_f32(a.1, b.1)) }
    }
}
