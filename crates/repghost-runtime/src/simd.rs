//! Runtime choice of instruction set. Kernels are written once as `#[inline(always)]`
//! bodies and compiled three times: for AVX-512, for AVX2+FMA, and portable. On aarch64 the
//! portable level is NEON, the baseline there: the explicit-vector kernels use NEON vectors
//! (`vector::N8`, `N4`) and the others are compiled with fused multiply-adds.

use std::sync::OnceLock;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Avx512,
    Avx2,
    Portable,
}

impl Level {
    /// Whether a CPU at this level runs code built for `other`.
    pub fn covers(self, other: Level) -> bool {
        let rank = |l: Level| match l {
            Level::Portable => 0,
            Level::Avx2 => 1,
            Level::Avx512 => 2,
        };
        rank(self) >= rank(other)
    }

    pub fn name(self) -> &'static str {
        match self {
            Level::Avx512 => "avx512",
            Level::Avx2 => "avx2+fma",
            Level::Portable => {
                if cfg!(target_arch = "aarch64") {
                    "neon"
                } else {
                    "portable"
                }
            }
        }
    }
}

/// The best level this CPU supports; `REPGHOST_SIMD=avx2|portable` caps it (for tests and
/// comparisons).
pub fn level() -> Level {
    static L: OnceLock<Level> = OnceLock::new();
    *L.get_or_init(|| {
        let cap = std::env::var("REPGHOST_SIMD").unwrap_or_default();
        #[cfg(target_arch = "x86_64")]
        {
            if cap != "avx2"
                && cap != "portable"
                && is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("fma")
            {
                return Level::Avx512;
            }
            if cap != "portable" && is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return Level::Avx2;
            }
        }
        let _ = cap;
        Level::Portable
    })
}

/// `a * b + c`, fused where the target has FMA (a libm call would be slow elsewhere).
#[inline(always)]
pub fn fmadd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// Defines `$name(args)` that dispatches to an AVX-512, an AVX2+FMA or a portable build of
/// `$body::<FMA>(args)`.
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) => $body:ident) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                /// # Safety
                /// The CPU must have AVX-512F/VL, FMA and AVX2.
                #[target_feature(enable = "avx512f,avx512vl,fma,avx2")]
                unsafe fn avx512($($arg: $ty),*) { $body::<true>($($arg),*) }
                /// # Safety
                /// The CPU must have AVX2 and FMA.
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) { $body::<true>($($arg),*) }
                match $crate::simd::level() {
                    // SAFETY: level() checked that the CPU has these features.
                    $crate::simd::Level::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: level() checked that the CPU has these features.
                    $crate::simd::Level::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::simd::Level::Portable => {}
                }
            }
            $body::<{ cfg!(target_arch = "aarch64") }>($($arg),*)
        }
    };
}
pub(crate) use multiversion;

/// Defines `unsafe fn $name(args)` that runs `$body::<A, B, C>(args)` with the widest
/// explicit vector types the CPU has: `A` for the bulk of the channels, `B` and `C` for the
/// tail (AVX-512: 16/8/4 lanes, AVX2: 8/8/4, aarch64: NEON 8/4/4, portable x86: scalar). The dispatcher checks the
/// CPU; the arguments' contract is `$body`'s, so the dispatcher is `unsafe` too and its
/// caller checks them.
macro_rules! vector_dispatch {
    ($(#[$m:meta])* fn $name:ident($($arg:ident : $ty:ty),* $(,)?) => $body:ident) => {
        $(#[$m])*
        ///
        /// # Safety
        #[doc = concat!("The arguments meet `", stringify!($body), "`'s contract, less the CPU's part.")]
        unsafe fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                use $crate::vector::{F16, F4, F8};
                /// # Safety
                /// The CPU must have AVX-512F/VL, FMA and AVX2, and the arguments must meet
                /// `$body`'s contract.
                #[target_feature(enable = "avx512f,avx512vl,fma,avx2")]
                unsafe fn avx512($($arg: $ty),*) {
                    // SAFETY: the vector types match the features this function is built
                    // for; the caller meets the rest of `$body`'s contract.
                    unsafe { $body::<F16, F8, F4>($($arg),*) }
                }
                /// # Safety
                /// The CPU must have AVX2 and FMA, and the arguments must meet `$body`'s
                /// contract.
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) {
                    // SAFETY: as for `avx512`, with 8- and 4-lane vectors.
                    unsafe { $body::<F8, F8, F4>($($arg),*) }
                }
                match $crate::simd::level() {
                    // SAFETY: level() checked that the CPU has these features; this
                    // function's caller meets the rest of the contract.
                    $crate::simd::Level::Avx512 => return unsafe { avx512($($arg),*) },
                    // SAFETY: as above.
                    $crate::simd::Level::Avx2 => return unsafe { avx2($($arg),*) },
                    $crate::simd::Level::Portable => {}
                }
            }
            #[cfg(target_arch = "aarch64")]
            {
                use $crate::vector::{N4, N8};
                // SAFETY: NEON is part of the aarch64 baseline; this function's caller meets
                // the rest of the contract.
                unsafe { $body::<N8, N4, N4>($($arg),*) }
            }
            #[cfg(not(target_arch = "aarch64"))]
            {
                use $crate::vector::F1;
                // SAFETY: F1 is plain scalar code, which any CPU runs; this function's caller
                // meets the rest of the contract.
                unsafe { $body::<F1, F1, F1>($($arg),*) }
            }
        }
    };
}
pub(crate) use vector_dispatch;
