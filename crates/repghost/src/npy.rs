//! Minimal `.npy` (format 1.0–3.0) reading and writing of little-endian float arrays.

use std::path::Path;

use crate::error::{Error, Result};

/// A float32 array and its shape.
#[derive(Clone, Debug, PartialEq)]
pub struct Array {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Reads an `.npy` of `<f4` or `<f8` (C order).
pub fn read(path: &Path) -> Result<Array> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse(&bytes).map_err(|m| Error::format(path, m))
}

pub fn parse(bytes: &[u8]) -> Result<Array, String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not a .npy file".into());
    }
    let (hlen, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(format!("unsupported .npy version {v}")),
    };
    let header = bytes.get(start..start + hlen).ok_or("truncated .npy header")?;
    let header = std::str::from_utf8(header).map_err(|_| "corrupt .npy header")?;
    let field = |name: &str| -> Option<&str> {
        let i = header.find(&format!("'{name}'"))?;
        Some(
            header[i + name.len() + 2..]
                .trim_start()
                .trim_start_matches(':')
                .trim_start(),
        )
    };
    let descr = field("descr").ok_or("no descr in .npy header")?;
    let elem = if descr.starts_with("'<f4'") {
        4
    } else if descr.starts_with("'<f8'") {
        8
    } else {
        return Err(format!(
            "unsupported dtype {} (need float32 or float64)",
            descr.split(',').next().unwrap_or("")
        ));
    };
    if field("fortran_order").is_some_and(|f| f.starts_with("True")) {
        return Err("Fortran-ordered arrays are not supported".into());
    }
    let shape_s = field("shape").ok_or("no shape in .npy header")?;
    let inner = shape_s
        .trim_start_matches('(')
        .split(')')
        .next()
        .ok_or("bad shape")?;
    let shape: Vec<usize> = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>().map_err(|_| format!("bad shape entry '{s}'")))
        .collect::<Result<_, _>>()?;
    let numel = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or("absurd shape")?;
    let body = &bytes[start + hlen..];
    if numel.checked_mul(elem).is_none_or(|n| n != body.len()) {
        return Err(format!(
            "shape {shape:?} needs {} bytes of data, file has {}",
            numel.saturating_mul(elem),
            body.len()
        ));
    }
    let data = if elem == 4 {
        body.chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4")))
            .collect()
    } else {
        body.chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8")) as f32)
            .collect()
    };
    Ok(Array { shape, data })
}

pub fn to_bytes(a: &Array) -> Vec<u8> {
    let dims: Vec<String> = a.shape.iter().map(|d| d.to_string()).collect();
    let shape = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    out.extend(a.data.iter().flat_map(|v| v.to_le_bytes()));
    out
}

/// Writes crash-safely.
pub fn write(path: &Path, a: &Array) -> Result<()> {
    crate::fsutil::write_atomic(path, &to_bytes(a))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_errors() {
        let a = Array {
            shape: vec![2, 3],
            data: vec![1.0, 2.0, 3.0, 4.0, 5.0, -6.5],
        };
        let b = to_bytes(&a);
        assert_eq!(parse(&b).unwrap(), a);
        assert!(parse(&b[..b.len() - 1]).unwrap_err().contains("needs"));
        assert!(parse(b"hello world").is_err());
    }
}
