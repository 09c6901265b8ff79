//! Squeeze-excite on an NHWC map, in place: per-image channel means, the two tiny 1×1 convs,
//! the hard-sigmoid gate `relu6(x + 3) / 6`, and the channel scaling. The matrix-vector
//! products run over output lanes (`out += x[i] * W[i, :]`), which vectorizes, rather than
//! as dot products, whose float reductions the compiler must keep sequential.

use crate::simd::{fmadd, multiversion};

pub struct Se {
    pub c: usize,
    pub r: usize,
    /// `[c][r]` (input-major)
    pub w1: Vec<f32>,
    pub b1: Vec<f32>,
    /// `[r][c]` (input-major)
    pub w2: Vec<f32>,
    pub b2: Vec<f32>,
}

impl Se {
    /// From PyTorch `conv_reduce` `[r, c, 1, 1]` and `conv_expand` `[c, r, 1, 1]` weights.
    pub fn new(reduce: &[f32], b1: Vec<f32>, expand: &[f32], b2: Vec<f32>, c: usize, r: usize) -> Self {
        let mut w1 = vec![0.0; c * r];
        let mut w2 = vec![0.0; r * c];
        for i in 0..c {
            for j in 0..r {
                w1[i * r + j] = reduce[j * c + i];
                w2[j * c + i] = expand[i * r + j];
            }
        }
        Se { c, r, w1, b1, w2, b2 }
    }

    /// `x` holds `n` images of `hw` pixels with row stride `ld`; `scratch` ≥ `c + r` floats.
    pub fn run(&self, n: usize, hw: usize, x: &mut [f32], ld: usize, scratch: &mut [f32]) {
        assert!(
            x.len() >= (n * hw - 1) * ld + self.c && scratch.len() >= self.c + self.r,
            "SE buffers too small"
        );
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
    let hidden = &mut hidden[..r];
    for img in 0..n {
        let maps = &mut x[img * hw * ld..];
        mean.fill(0.0);
        for p in 0..hw {
            mean.iter_mut()
                .zip(&maps[p * ld..p * ld + c])
                .for_each(|(m, &v)| *m += v);
        }
        let inv = 1.0 / hw as f32;
        hidden.copy_from_slice(&s.b1);
        for (i, &m) in mean.iter().enumerate() {
            let m = m * inv;
            hidden
                .iter_mut()
                .zip(&s.w1[i * r..(i + 1) * r])
                .for_each(|(h, &w)| *h = fmadd::<FMA>(m, w, *h));
        }
        hidden.iter_mut().for_each(|h| *h = h.max(0.0));
        mean.copy_from_slice(&s.b2);
        for (j, &hj) in hidden.iter().enumerate() {
            mean.iter_mut()
                .zip(&s.w2[j * c..(j + 1) * c])
                .for_each(|(g, &w)| *g = fmadd::<FMA>(hj, w, *g));
        }
        mean.iter_mut()
            .for_each(|g| *g = (*g + 3.0).clamp(0.0, 6.0) / 6.0);
        for p in 0..hw {
            maps[p * ld..p * ld + c]
                .iter_mut()
                .zip(mean.iter())
                .for_each(|(v, &g)| *v *= g);
        }
    }
}
