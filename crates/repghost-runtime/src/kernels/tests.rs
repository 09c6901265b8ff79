//! The 1×1 (packed AVX-512, AVX2 and NEON kernels where this CPU runs them, and the
//! gemm-crate path), stem and squeeze-excite kernels against their definitions, alone and split between
//! the two threads of a team, with padded pixel strides and channel offsets as the executor
//! uses them. (Depthwise has its own tests in `depthwise.rs`, the 12-row AVX2 tile in
//! `gemm256.rs`.) `REPGHOST_SIMD` selects which packed kernels a run covers; CI runs every
//! level.

use super::pointwise::{Kernel, Pointwise};
use super::se::Se;
use super::stem::Stem;
use super::View;
use crate::act::Act;
use crate::team::Team;

struct Rnd(u32);

impl Rnd {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(1664525).wrapping_add(1013904223);
        (self.0 >> 8) as f32 / (1u32 << 24) as f32 - 0.5
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.next()).collect()
    }
}

fn close(got: f32, want: f64) -> bool {
    (got as f64 - want).abs() <= 1e-5 * (1.0 + want.abs())
}

/// Every kernel a `Pointwise` can run on this CPU, for every case: rows from 1 (the head at
/// batch 1, whose columns a team splits by panels) to 100 (rows split at a multiple of 12),
/// channel counts off the vector and panel widths, ReLU, HardSwish (the gemm crate's
/// epilogue), and accumulation onto the residual.
#[test]
fn pointwise_kernels_match_the_definition() {
    let mut r = Rnd(7);
    let team = Team::new().unwrap();
    for (m, cin, cout) in [
        (1, 960, 1280),
        (1, 17, 9),
        (5, 3, 40),
        (13, 64, 130),
        (48, 29, 16),
        (100, 40, 72),
    ] {
        for (act, acc) in [(Act::Relu, false), (Act::None, true), (Act::HardSwish, false)] {
            let w = r.vec(cout * cin);
            let b = r.vec(cout);
            let best = Pointwise::new(&w, cout, cin, b.clone(), act).unwrap();
            // Each CPU's own packed kernel for the activations it fuses.
            let own = match crate::simd::level() {
                crate::simd::Level::Avx512 => Kernel::Avx512,
                crate::simd::Level::Avx2 => Kernel::Avx2,
                _ if cfg!(target_arch = "aarch64") => Kernel::Neon,
                _ => Kernel::Generic,
            };
            let fused = matches!(act, Act::Relu | Act::None);
            assert_eq!(best.kernel(), if fused { own } else { Kernel::Generic });
            let (ld, off) = (cin + 5, 3);
            let src = r.vec(m * ld);
            let (ldd, offd) = (cout + 7, 2);
            let prior = r.vec(m * ldd);
            let mut want = vec![0f64; m * cout];
            for p in 0..m {
                for o in 0..cout {
                    let mut s = b[o] as f64;
                    for i in 0..cin {
                        s += src[p * ld + off + i] as f64 * w[o * cin + i] as f64;
                    }
                    let v = act.apply(s as f32) as f64;
                    want[p * cout + o] = if acc {
                        v + prior[p * ldd + offd + o] as f64
                    } else {
                        v
                    };
                }
            }
            for kernel in [Kernel::Avx512, Kernel::Avx2, Kernel::Neon, Kernel::Generic] {
                let pw = best.copy_with_kernel(kernel);
                for t in [None, Some(&team)] {
                    let mut dst = prior.clone();
                    pw.run(m, View::new(&src, ld, off), &mut dst, ldd, offd, acc, t);
                    for p in 0..m {
                        for o in 0..cout {
                            let got = dst[p * ldd + offd + o];
                            assert!(
                                close(got, want[p * cout + o]),
                                "{kernel:?} team {} m {m} {cin}→{cout} {act:?} acc {acc}: [{p}, {o}] {got} vs {}",
                                t.is_some(),
                                want[p * cout + o]
                            );
                        }
                        // Channels outside `offd..offd + cout` are left as they were.
                        for o in (0..offd).chain(offd + cout..ldd) {
                            assert_eq!(dst[p * ldd + o], prior[p * ldd + o]);
                        }
                    }
                }
            }
        }
    }
}

/// The stem conv with its ReLU, from NCHW and NHWC input, strides 1 and 2, kernels 3 and 5,
/// on odd sizes, a single image split by rows between two threads.
#[test]
fn stem_matches_the_definition() {
    let mut r = Rnd(11);
    let team = Team::new().unwrap();
    for (k, stride) in [(3, 2), (3, 1), (5, 2)] {
        for (n, cin, cout, h, w) in [(1, 3, 16, 9, 13), (2, 1, 8, 7, 5), (1, 3, 20, 32, 31)] {
            let wt = r.vec(cout * cin * k * k);
            let b = r.vec(cout);
            let stem = Stem::new(&wt, cout, cin, k, stride, b.clone()).unwrap();
            let (oh, ow) = stem.out_hw(h, w);
            let nchw = r.vec(n * cin * h * w);
            let mut nhwc = vec![0.0; nchw.len()];
            for img in 0..n {
                for c in 0..cin {
                    for px in 0..h * w {
                        nhwc[(img * h * w + px) * cin + c] = nchw[(img * cin + c) * h * w + px];
                    }
                }
            }
            let p = (k / 2) as isize;
            let ld = cout + 3;
            for (input, is_nchw) in [(&nchw, true), (&nhwc, false)] {
                for t in [None, Some(&team)] {
                    let mut dst = vec![f32::NAN; n * oh * ow * ld];
                    stem.run(n, h, w, input, is_nchw, &mut dst, ld, t);
                    for img in 0..n {
                        for (oy, ox, o) in
                            (0..oh).flat_map(|y| (0..ow).flat_map(move |x| (0..cout).map(move |o| (y, x, o))))
                        {
                            let mut s = b[o] as f64;
                            for c in 0..cin {
                                for ky in 0..k {
                                    for kx in 0..k {
                                        let iy = (oy * stride) as isize + ky as isize - p;
                                        let ix = (ox * stride) as isize + kx as isize - p;
                                        if iy >= 0 && ix >= 0 && iy < h as isize && ix < w as isize {
                                            let x =
                                                nchw[(img * cin + c) * h * w + iy as usize * w + ix as usize];
                                            s += x as f64 * wt[((o * cin + c) * k + ky) * k + kx] as f64;
                                        }
                                    }
                                }
                            }
                            let got = dst[(img * oh * ow + oy * ow + ox) * ld + o];
                            assert!(
                                close(got, s.max(0.0)),
                                "k {k} s {stride} {n}x{cin}x{h}x{w} nchw {is_nchw} team {}: [{img}, {oy}, {ox}, {o}] {got} vs {s}",
                                t.is_some()
                            );
                        }
                    }
                }
            }
        }
    }
}

/// Squeeze-excite in place: per-image means, ReLU, hard-sigmoid gate, scaling; a large single
/// image split by pixels between two threads.
#[test]
fn se_matches_the_definition() {
    let mut r = Rnd(5);
    let team = Team::new().unwrap();
    for (n, hw, c, rd) in [(2, 9, 20, 8), (1, 1, 5, 4), (1, 784, 72, 20), (3, 49, 40, 12)] {
        let (w1, b1, w2, b2) = (r.vec(rd * c), r.vec(rd), r.vec(c * rd), r.vec(c));
        let se = Se::new(&w1, b1.clone(), &w2, b2.clone(), c, rd).unwrap();
        let ld = c + 4;
        let x = r.vec(n * hw * ld);
        let mut want = x.iter().map(|&v| v as f64).collect::<Vec<_>>();
        for img in 0..n {
            let mean: Vec<f64> = (0..c)
                .map(|ch| (0..hw).map(|p| x[(img * hw + p) * ld + ch] as f64).sum::<f64>() / hw as f64)
                .collect();
            let hidden: Vec<f64> = (0..rd)
                .map(|j| {
                    (b1[j] as f64 + (0..c).map(|i| w1[j * c + i] as f64 * mean[i]).sum::<f64>()).max(0.0)
                })
                .collect();
            for ch in 0..c {
                let e = b2[ch] as f64 + (0..rd).map(|j| w2[ch * rd + j] as f64 * hidden[j]).sum::<f64>();
                let g = (e + 3.0).clamp(0.0, 6.0) / 6.0;
                for p in 0..hw {
                    want[(img * hw + p) * ld + ch] *= g;
                }
            }
        }
        for t in [None, Some(&team)] {
            let mut got = x.clone();
            let mut scratch = vec![f32::NAN; 2 * c + rd];
            se.run(n, hw, &mut got, ld, &mut scratch, t);
            for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    close(g, w),
                    "{n}x{hw}x{c} team {}: element {i}: {g} vs {w}",
                    t.is_some()
                );
            }
        }
    }
}
