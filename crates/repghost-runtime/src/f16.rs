//! IEEE 754 half precision, widened to f32 as the loader reads it (exactly: every f16 value
//! is an f32 value). Twenty lines of its own, so that the runtime and its fuzz crate need no
//! further dependency.

/// The f32 of the f16 whose bits are `h`.
pub(crate) fn to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x3ff);
    let bits = match (exp, man) {
        (0, 0) => sign,
        // Subnormal: man × 2^-24; normalize so the leading one becomes the implicit bit.
        (0, _) => {
            let shift = man.leading_zeros() - 21;
            sign | ((113 - shift) << 23) | (((man << shift) & 0x3ff) << 13)
        }
        // Infinity and NaN (the payload kept).
        (0x1f, _) => sign | 0x7f80_0000 | (man << 13),
        _ => sign | ((exp + 112) << 23) | (man << 13),
    };
    f32::from_bits(bits)
}

#[cfg(test)]
mod tests {
    use super::to_f32;

    /// Every one of the 65,536 bit patterns against the definition: (-1)^s × 2^(e-15) ×
    /// (1 + m/1024) for normals, 2^-14 × m/1024 for subnormals.
    #[test]
    fn every_bit_pattern_widens_to_its_value() {
        for h in 0..=u16::MAX {
            let s = if h >> 15 == 1 { -1.0f64 } else { 1.0 };
            let e = i32::from((h >> 10) & 0x1f);
            let m = f64::from(h & 0x3ff);
            let got = to_f32(h);
            match e {
                0x1f if m == 0.0 => assert_eq!(got, (s * f64::INFINITY) as f32, "{h:#06x}"),
                0x1f => assert!(got.is_nan(), "{h:#06x}"),
                _ => {
                    let want = if e == 0 {
                        s * 2f64.powi(-14) * m / 1024.0
                    } else {
                        s * 2f64.powi(e - 15) * (1.0 + m / 1024.0)
                    };
                    assert_eq!(got.to_bits(), (want as f32).to_bits(), "{h:#06x}");
                }
            }
        }
    }
}
