//! Squeeze-excite on an NHWC map, in place: per-image channel means, the two tiny 1×1 convs
//! as dot products, the hard-sigmoid gate `relu6(x + 3) / 6`, and the channel scaling.

use crate::simd::multiversion;

pub struct Se {
    pub c: usize,
    pub r: usize,
    /// `[r][c]`
    pub w1: Vec<f32>,
    pub b1: Vec<f32>,
    /// `[c][r]`
    pub w2: Vec<f32>,
    pub b2: Vec<f32>,
}

impl Se {
    /// `x` holds `n` images of `hw` pixels with row stride `ld`; `scratch` ≥ `c + r` floats.
    pub fn run(&self, n: usize, hw: usize, x: &mut [f32], ld: usize, scratch: &mut [f32]) {
        assert!(x.len() >= (n * hw - 1) * ld + self.c && scratch.len() >= self.c + self.r, "SE buffers too small");
        se(self, n, hw, x, ld, scratch);
    }
}

multiversion! {
    fn se(s: &Se, n: usize, hw: usize, x: &mut [f32], ld: usize, scratch: &mut [f32]) => se_body
}

#[inline(always)]
fn se_body<const FMA: bool>(s: &Se, n: usize, hw: usize, x: &mut [f32], ld: usize, scratch: &mut [f32]) {
    let (c, r) = (s.c, s.r);
    let (mean, hidden) = scratch.split_at_mut(c);
    for img in 0..n {
        let maps = &mut x[img * hw * ld..];
        mean.fill(0.0);
        for p in 0..hw {
            mean.iter_mut().zip(&maps[p * ld..p * ld + c]).for_each(|(m, &v)| *m += v);
        }
        let inv = 1.0 / hw as f32;
        mean.iter_mut().for_each(|m| *m *= inv);
        for (j, h) in hidden[..r].iter_mut().enumerate() {
            let dot: f32 = s.w1[j * c..(j + 1) * c].iter().zip(mean.iter()).map(|(a, b)| a * b).sum();
            *h = (dot + s.b1[j]).max(0.0);
        }
        for i in 0..c {
            let dot: f32 = s.w2[i * r..(i + 1) * r].iter().zip(hidden[..r].iter()).map(|(a, b)| a * b).sum();
            mean[i] = ((dot + s.b2[i] + 3.0).clamp(0.0, 6.0)) / 6.0;
        }
        for p in 0..hw {
            maps[p * ld..p * ld + c].iter_mut().zip(mean.iter()).for_each(|(v, &g)| *v *= g);
        }
    }
}
