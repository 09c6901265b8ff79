//! The store of a quantized convolution: its exact i32 sum becomes the real value
//! `y = act(acc · sacc[o])` (plus a dequantized residual), and `y` the u8
//! `clamp(round_half_even(clamp(y / scale, ±1024)) + zero_point, 0, 255)`. Every INT8 kernel
//! stores through these operations, in this order, so that each computes the same bytes as
//! the scalar definition here.

use crate::act::Act;

/// Quantization of a kernel's output, and what turns its sums into real values.
#[derive(Clone, Debug)]
pub struct Requant {
    /// Per output channel `s_in · s_w[o]`, zero-padded to whole 16-channel panels.
    pub sacc: Vec<f32>,
    pub act: Act,
    /// `1 / s_out`.
    pub inv: f32,
    pub zp: i32,
}

/// A residual added before the store: `(r − zp) · scale` of the u8 `r` already in `dst`.
#[derive(Clone, Copy, Debug)]
pub struct Residual {
    pub zp: i32,
    pub scale: f32,
}

impl Requant {
    /// `sacc` for `cout` channels, padded.
    pub fn new(mut sacc: Vec<f32>, act: Act, scale: f32, zp: u8) -> Requant {
        sacc.resize(sacc.len().next_multiple_of(16), 0.0);
        Requant {
            sacc,
            act,
            inv: 1.0 / scale,
            zp: zp as i32,
        }
    }
}

/// `y` (real) as a u8 of inverse scale `inv` and zero point `zp`.
#[inline(always)]
pub fn quantize(y: f32, inv: f32, zp: i32) -> u8 {
    ((y * inv).clamp(-1024.0, 1024.0).round_ties_even() as i32 + zp).clamp(0, 255) as u8
}

/// The stored byte of sum `acc` (bias included) of channel `o`, with the residual byte `r`.
#[inline(always)]
pub fn store(rq: &Requant, o: usize, acc: i32, res: Option<(Residual, u8)>) -> u8 {
    let mut y = rq.act.apply(acc as f32 * rq.sacc[o]);
    if let Some((r, v)) = res {
        y += (v as i32 - r.zp) as f32 * r.scale;
    }
    quantize(y, rq.inv, rq.zp)
}

/// A conv's i32 bias: the float bias in units of `s_in · s_w[o]`, rounded, less
/// `zp_in · Σ w[o]` so that sums over raw u8 inputs come out as sums over `q − zp_in`.
pub fn bias(b: &[f32], sacc: &[f32], zp_in: u8, w: &[i8], per: usize) -> Vec<i32> {
    b.iter()
        .enumerate()
        .map(|(o, &b)| {
            let q = (b as f64 / sacc[o] as f64)
                .round()
                .clamp(-(1i64 << 30) as f64, (1i64 << 30) as f64) as i64;
            let sum: i64 = w[o * per..(o + 1) * per].iter().map(|&v| v as i64).sum();
            (q - zp_in as i64 * sum) as i32
        })
        .collect()
}
