//! The INT8 kernels against their integer definitions: exact i32 sums of `(q − zp) · w`
//! plus the bias, stored through `requant::store`, byte for byte — alone and split between
//! a team's two threads, at odd sizes, with the extreme inputs and weights that would
//! saturate 16-bit pair sums. `REPGHOST_SIMD` selects the kernels a run covers; CI runs
//! every level.

use super::depthwise::Shape;
use super::qdepthwise::QDepthwise;
use super::qmaps;
use super::qpointwise::QPointwise;
use super::requant::{self, store, Requant, Residual};
use crate::act::Act;
use crate::team::Team;

struct Rnd(u32);

impl Rnd {
    fn next(&mut self) -> u32 {
        self.0 = self.0.wrapping_mul(1664525).wrapping_add(1013904223);
        self.0 >> 8
    }
    fn u8s(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    fn s8s(&mut self, n: usize) -> Vec<i8> {
        (0..n)
            .map(|_| (self.next() % 255) as i32 - 127)
            .map(|v| v as i8)
            .collect()
    }
    fn f32s(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
        (0..n)
            .map(|_| lo + (hi - lo) * (self.next() as f32 / (1u32 << 24) as f32))
            .collect()
    }
}

/// Inputs and weights of one case: random, or the extremes (every input 255, every weight
/// ±127 of one sign per channel).
fn data(r: &mut Rnd, extreme: bool, nx: usize, nw: usize, per: usize) -> (Vec<u8>, Vec<i8>) {
    if extreme {
        let w = (0..nw)
            .map(|i| if (i / per).is_multiple_of(2) { 127 } else { -127 })
            .collect();
        (vec![255; nx], w)
    } else {
        (r.u8s(nx), r.s8s(nw))
    }
}

#[test]
fn int8_pointwise_matches_the_definition() {
    let mut r = Rnd(11);
    let team = Team::new().unwrap();
    for (m, cin, cout) in [
        (1usize, 8usize, 16usize),
        (7, 3, 5),
        (13, 64, 130),
        (25, 37, 48),
        (100, 160, 24),
        (12, 961, 20),
    ] {
        for (act, extreme) in [
            (Act::Relu, false),
            (Act::None, false),
            (Act::None, true),
            (Act::HardSwish, false),
        ] {
            let (lds, ldd) = (cin + 3, cout.next_multiple_of(16) + 16);
            let (x, w) = data(&mut r, extreme, m * lds, cout * cin, cin);
            let zp_in = r.next() as u8;
            let sacc = r.f32s(cout, 1e-5, 1e-4);
            let b = r.f32s(cout, -0.5, 0.5);
            let bias = requant::bias(&b, &sacc, zp_in, &w, cin);
            let rq = Requant::new(sacc.clone(), act, 0.02, r.next() as u8);
            let l = QPointwise::new(&w, cout, cin, bias, rq.clone()).unwrap();
            // The definition: sums over `q − zp`, the bias rounded in units of sacc.
            let mut want = vec![0u8; m * ldd];
            for p in 0..m {
                for o in 0..cout {
                    let mut acc = (b[o] as f64 / sacc[o] as f64).round() as i32;
                    for i in 0..cin {
                        acc += (x[p * lds + i] as i32 - zp_in as i32) * w[o * cin + i] as i32;
                    }
                    want[p * ldd + o] = store(&rq, o, acc, None);
                }
            }
            if extreme {
                // The sums reach 255 · 127 · cin: beyond what 16-bit pair sums would hold.
                assert!(want.iter().step_by(ldd).any(|&v| v != rq.zp as u8));
            }
            for t in [None, Some(&team)] {
                let mut got = vec![0xA5u8; m * ldd];
                l.run(m, &x, lds, &mut got, ldd, t);
                for p in 0..m {
                    assert_eq!(
                        got[p * ldd..p * ldd + cout],
                        want[p * ldd..p * ldd + cout],
                        "m {m} cin {cin} cout {cout} {act:?} pixel {p} team {}",
                        t.is_some()
                    );
                    assert!(
                        got[p * ldd + cout..(p + 1) * ldd].iter().all(|&v| v == 0xA5),
                        "wrote past cout"
                    );
                }
            }
        }
    }
}

#[test]
fn int8_depthwise_matches_the_definition() {
    let mut r = Rnd(5);
    let team = Team::new().unwrap();
    for (n, h, w, c) in [
        (1usize, 9usize, 7usize, 16usize),
        (2, 5, 6, 37),
        (1, 12, 11, 5),
        (1, 4, 4, 48),
    ] {
        for (k, stride) in [(3, 1), (3, 2), (5, 1), (5, 2)] {
            for (act, res, extreme) in [
                (Act::Relu, false, false),
                (Act::None, true, false),
                (Act::None, false, true),
            ] {
                let (lds, ldd) = (c + 5, c.next_multiple_of(16));
                let (x, wq) = data(&mut r, extreme, n * h * w * lds, c * k * k, k * k);
                let zp_in = if extreme { 0 } else { r.next() as u8 };
                let sacc = r.f32s(c, 1e-4, 1e-3);
                let b = r.f32s(c, -0.2, 0.2);
                let bias = requant::bias(&b, &sacc, 0, &wq, k * k);
                let rq = Requant::new(sacc.clone(), act, 0.05, r.next() as u8);
                let l = QDepthwise::new(&wq, c, k, stride, bias, zp_in, rq.clone()).unwrap();
                let resid = res.then_some(Residual { zp: 7, scale: 0.03 });
                let (oh, ow) = l.out_hw(h, w);
                let start = r.u8s(n * oh * ow * ldd);
                let mut want = start.clone();
                let p = k / 2;
                for img in 0..n {
                    for oy in 0..oh {
                        for ox in 0..ow {
                            for ch in 0..c {
                                let mut acc = (b[ch] as f64 / sacc[ch] as f64).round() as i32;
                                for ky in 0..k {
                                    for kx in 0..k {
                                        let (iy, ix) = (
                                            (oy * stride + ky) as isize - p as isize,
                                            (ox * stride + kx) as isize - p as isize,
                                        );
                                        if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                            continue;
                                        }
                                        let q =
                                            x[((img * h + iy as usize) * w + ix as usize) * lds + ch] as i32;
                                        acc += (q - zp_in as i32) * wq[ch * k * k + ky * k + kx] as i32;
                                    }
                                }
                                let at = ((img * oh + oy) * ow + ox) * ldd + ch;
                                want[at] = store(&rq, ch, acc, resid.map(|r| (r, start[at])));
                            }
                        }
                    }
                }
                let mut ring = vec![f32::NAN; 2 * l.ring_len(w)];
                for t in [None, Some(&team)] {
                    let mut got = start.clone();
                    l.run(Shape::new(n, h, w), &x, lds, &mut got, ldd, resid, &mut ring, t);
                    assert_eq!(
                        got,
                        want,
                        "{n}x{h}x{w}x{c} k {k} s {stride} {act:?} res {res} team {}",
                        t.is_some()
                    );
                }
            }
        }
    }
}

/// The element-wise map operations against `requant::quantize` value by value: float rows
/// quantized (values far outside the range, and exact halves of a step, which round to
/// even), channel sums, and rows scaled by gates; channel counts below, at and above 16.
#[test]
fn map_operations_match_the_definition() {
    let mut r = Rnd(9);
    for c in [5usize, 16, 37] {
        let (px, lds, ldd) = (7, c + 3, c.next_multiple_of(16));
        let (inv, zp) = (4.0, 100u8);
        let mut src = r.f32s(px * lds, -40.0, 40.0);
        // Exact halves of a step (x · inv = k + 0.5) and values beyond ±1024 steps.
        for (i, v) in src.iter_mut().enumerate().step_by(3) {
            *v = ((i % 50) as f32 - 25.0 + 0.5) / inv;
        }
        src[1] = 1e9;
        src[2] = -1e9;
        let mut got = vec![0xA5u8; px * ldd];
        qmaps::quantize_rows(&src, lds, &mut got, ldd, (px, c), inv, zp);
        for p in 0..px {
            for ch in 0..ldd {
                let want = if ch < c {
                    requant::quantize(src[p * lds + ch], inv, zp as i32)
                } else {
                    0xA5
                };
                assert_eq!(got[p * ldd + ch], want, "quantize c {c} pixel {p} channel {ch}");
            }
        }
        let map = r.u8s(px * ldd);
        let mut sums = vec![0.0; c];
        qmaps::dequantized_sums(&map, ldd, zp, 0.5, &mut sums);
        for (ch, s) in sums.iter().enumerate() {
            let want: i32 = (0..px).map(|p| map[p * ldd + ch] as i32 - zp as i32).sum();
            assert_eq!(*s, want as f32 * 0.5, "sum of channel {ch} of {c}");
        }
        let mut g = r.f32s(c.next_multiple_of(16), 0.0, 1.0);
        g[0] = 0.5;
        g[c..].fill(0.0);
        let mut got = map.clone();
        qmaps::scale_rows(&mut got, ldd, &g, c, zp);
        for p in 0..px {
            for ch in 0..ldd {
                let v = map[p * ldd + ch];
                let want = if ch < c {
                    requant::quantize((v as i32 - zp as i32) as f32 * g[ch], 1.0, zp as i32)
                } else {
                    v
                };
                assert_eq!(got[p * ldd + ch], want, "scale c {c} pixel {p} channel {ch}");
            }
        }
    }
}
