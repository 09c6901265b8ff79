//! One core's multiply-accumulate peak for the instruction sequences the 1×1 kernels are
//! built from, on x86-64 with AVX2: 12 independent accumulators (as in a 6×16 tile) updated
//! in a loop by
//! - `vfmadd231ps` (f32, 8 MACs per instruction), as the FP32 kernels do;
//! - `vpmaddwd` + `vpaddd` (i16 pairs, 16 MACs), as the INT8 kernel does on AVX2;
//! - `vpmaddubsw` + `vpmaddwd` (by ones) + `vpaddd` (u8 × s8, 32 MACs, saturating in 16 bits
//!   unless the weights have 7 bits).
//!
//! It prints GMAC/s for each, so that the INT8 kernel's speed can be read against what the
//! core can do (docs/performance.md).
//!
//!     cargo run --release -p repghost-runtime --example mac_peak

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    use std::hint::black_box;

    const ITERS: usize = 20_000_000;

    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn fma() -> f32 {
        let mut xs = [_mm256_set1_ps(1.0001); 12];
        let w = _mm256_set1_ps(black_box(0.9999));
        let mut a = [_mm256_setzero_ps(); 12];
        for _ in 0..ITERS {
            let xs = black_box(&mut xs);
            for (a, x) in a.iter_mut().zip(xs.iter()) {
                *a = _mm256_fmadd_ps(*x, w, *a);
            }
        }
        let mut s = _mm256_setzero_ps();
        for a in a {
            s = _mm256_add_ps(s, a);
        }
        _mm256_cvtss_f32(s)
    }

    /// # Safety
    /// The CPU has AVX2.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn madd_wd() -> i32 {
        let mut xs = [_mm256_set1_epi16(3); 12];
        let w = _mm256_set1_epi16(black_box(-5));
        let mut a = [_mm256_setzero_si256(); 12];
        for _ in 0..ITERS {
            // Operands from memory that may have changed, as a tile's broadcasts are.
            let xs = black_box(&mut xs);
            for (a, x) in a.iter_mut().zip(xs.iter()) {
                *a = _mm256_add_epi32(*a, _mm256_madd_epi16(*x, w));
            }
        }
        let mut s = _mm256_setzero_si256();
        for a in a {
            s = _mm256_add_epi32(s, a);
        }
        _mm256_cvtsi256_si32(s)
    }

    /// # Safety
    /// The CPU has AVX2.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn madd_ubsw() -> i32 {
        let mut xs = [_mm256_set1_epi8(3); 12];
        let w = _mm256_set1_epi8(black_box(-5));
        let ones = _mm256_set1_epi16(1);
        let mut a = [_mm256_setzero_si256(); 12];
        for _ in 0..ITERS {
            let xs = black_box(&mut xs);
            for (a, x) in a.iter_mut().zip(xs.iter()) {
                let p = _mm256_madd_epi16(_mm256_maddubs_epi16(*x, w), ones);
                *a = _mm256_add_epi32(*a, p);
            }
        }
        let mut s = _mm256_setzero_si256();
        for a in a {
            s = _mm256_add_epi32(s, a);
        }
        _mm256_cvtsi256_si32(s)
    }

    /// GMAC/s of `f`, which performs `macs` multiply-accumulates per accumulator update.
    pub fn rate<T: std::fmt::Debug>(name: &str, macs: usize, f: unsafe fn() -> T) {
        let t = std::time::Instant::now();
        // SAFETY: `main` checked that the CPU has AVX2 and FMA.
        let r = unsafe { f() };
        let s = t.elapsed().as_secs_f64();
        let gmacs = (ITERS * 12 * macs) as f64 / s / 1e9;
        println!("{name:<34} {gmacs:7.1} GMAC/s  ({:?})", black_box(r));
    }
}

fn main() {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        use x86::*;
        for _ in 0..2 {
            rate("f32 vfmadd231ps", 8, fma);
            rate("i16 vpmaddwd + vpaddd", 16, madd_wd);
            rate("u8*s8 vpmaddubsw + vpmaddwd + vpaddd", 32, madd_ubsw);
        }
        return;
    }
    eprintln!("mac_peak measures AVX2 instruction sequences; this CPU has no AVX2");
    std::process::exit(2);
}
