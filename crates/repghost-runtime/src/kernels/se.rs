//! Squeeze-excite on an NHWC map, in place: per-image channel means, the two tiny 1×1 convs,
//! the hard-sigmoid gate `relu6(x + 3) / 6`, and the channel scaling. The matrix-vector
//! products run over output lanes (`out += x[i] * W[i, :]`), which vectorizes, rather than
//! as dot products, whose float reductions the compiler must keep sequential.

use super::check_len;
use crate::error::Result;
use crate::simd::{fmadd, multiversion};
use crate::team::Team;

/// Squeeze-excite weights whose lengths agree with `c` and `r` ([`Se::new`] checks them).
pub struct Se {
    c: usize,
    r: usize,
    /// `[c][r]` (input-major)
    w1: Vec<f32>,
    b1: Vec<f32>,
    /// `[r][c]` (input-major)
    w2: Vec<f32>,
    b2: Vec<f32>,
}

impl Se {
    /// From PyTorch `conv_reduce` `[r, c, 1, 1]` and `conv_expand` `[c, r, 1, 1]` weights.
    pub fn new(
        reduce: &[f32],
        b1: Vec<f32>,
        expand: &[f32],
        b2: Vec<f32>,
        c: usize,
        r: usize,
    ) -> Result<Self> {
        check_len("se.conv_reduce", "weight", reduce.len(), r * c)?;
        check_len("se.conv_reduce", "bias", b1.len(), r)?;
        check_len("se.conv_expand", "weight", expand.len(), c * r)?;
        check_len("se.conv_expand", "bias", b2.len(), c)?;
        let mut w1 = vec![0.0; c * r];
        let mut w2 = vec![0.0; r * c];
        for i in 0..c {
            for j in 0..r {
                w1[i * r + j] = reduce[j * c + i];
                w2[j * c + i] = expand[i * r + j];
            }
        }
        Ok(Se { c, r, w1, b1, w2, b2 })
    }

    pub fn channels(&self) -> usize {
        self.c
    }

    /// Turns the channel sums of one image of `hw` pixels in `g` (`c` floats) into its
    /// gates, in place; `hidden` holds the reduced channels' floats.
    pub fn gates(&self, g: &mut [f32], hidden: &mut [f32], hw: usize) {
        assert!(g.len() == self.c && hidden.len() == self.r, "SE gate buffers");
        gate(self, g, hidden, hw);
    }

    /// Floats of the reduced layer.
    pub fn reduced(&self) -> usize {
        self.r
    }

    /// `x` holds `n` images of `hw` pixels with row stride `ld`; `scratch` ≥ `2c + r` floats.
    /// With a team, a single image's two passes over the map (channel sums, scaling) are
    /// split between the threads by pixels; the tiny gate runs on the caller's thread.
    pub fn run(
        &self,
        n: usize,
        hw: usize,
        x: &mut [f32],
        ld: usize,
        scratch: &mut [f32],
        team: Option<&Team>,
    ) {
        let c = self.c;
        if n * hw == 0 {
            return;
        }
        assert!(
            x.len() >= (n * hw - 1) * ld + c && scratch.len() >= 2 * c + self.r,
            "SE buffers too small"
        );
        let (sums, hidden) = scratch.split_at_mut(2 * c);
        let hidden = &mut hidden[..self.r];
        match team {
            Some(t) if n == 1 && hw >= 2 && hw * c >= 16384 => {
                let split = hw / 2;
                let halves = [(0, split), (split, hw - split)];
                // Each thread sums its half of the pixels into its own `c` floats.
                let xr = &*x;
                t.halves(sums, c, &|p, acc| {
                    let (p0, px) = halves[p];
                    sums_of(&xr[p0 * ld..], px, ld, &mut acc[..c]);
                });
                let (mean, part) = sums.split_at_mut(c);
                mean.iter_mut().zip(part.iter()).for_each(|(m, &q)| *m += q);
                gate(self, mean, hidden, hw);
                let g = &*mean;
                t.halves(x, split * ld, &|p, xs| scale(xs, halves[p].1, ld, g));
            }
            _ => {
                let mean = &mut sums[..c];
                for img in 0..n {
                    let maps = &mut x[img * hw * ld..];
                    sums_of(maps, hw, ld, mean);
                    gate(self, mean, hidden, hw);
                    scale(maps, hw, ld, mean);
                }
            }
        }
    }
}

multiversion! {
    /// `acc[..] = Σ_p x[p, ..]` over `px` pixels of stride `ld`.
    fn sums_of(x: &[f32], px: usize, ld: usize, acc: &mut [f32]) => sums_body
}

multiversion! {
    /// Turns the channel sums of `hw` pixels in `g` into the gate, in place.
    fn gate(s: &Se, g: &mut [f32], hidden: &mut [f32], hw: usize) => gate_body
}

multiversion! {
    /// `x[p, ..] *= g[..]` over `px` pixels.
    fn scale(x: &mut [f32], px: usize, ld: usize, g: &[f32]) => scale_body
}

#[inline(always)]
fn sums_body<const FMA: bool>(x: &[f32], px: usize, ld: usize, acc: &mut [f32]) {
    let c = acc.len();
    acc.fill(0.0);
    for p in 0..px {
        acc.iter_mut()
            .zip(&x[p * ld..p * ld + c])
            .for_each(|(m, &v)| *m += v);
    }
}

#[inline(always)]
fn gate_body<const FMA: bool>(s: &Se, g: &mut [f32], hidden: &mut [f32], hw: usize) {
    let (c, r) = (s.c, s.r);
    let inv = 1.0 / hw as f32;
    hidden.copy_from_slice(&s.b1);
    for (i, &m) in g.iter().enumerate() {
        let m = m * inv;
        hidden
            .iter_mut()
            .zip(&s.w1[i * r..(i + 1) * r])
            .for_each(|(h, &w)| *h = fmadd::<FMA>(m, w, *h));
    }
    hidden.iter_mut().for_each(|h| *h = h.max(0.0));
    g.copy_from_slice(&s.b2);
    for (j, &hj) in hidden.iter().enumerate() {
        g.iter_mut()
            .zip(&s.w2[j * c..(j + 1) * c])
            .for_each(|(g, &w)| *g = fmadd::<FMA>(hj, w, *g));
    }
    g.iter_mut().for_each(|g| *g = (*g + 3.0).clamp(0.0, 6.0) / 6.0);
}

#[inline(always)]
fn scale_body<const FMA: bool>(x: &mut [f32], px: usize, ld: usize, g: &[f32]) {
    let c = g.len();
    for p in 0..px {
        x[p * ld..p * ld + c]
            .iter_mut()
            .zip(g.iter())
            .for_each(|(v, &g)| *v *= g);
    }
}
