//! Fixtures of the runtime's tests, written by `crates/repghost/examples/runtime_fixtures.rs`
//! from burn's deploy forward: deploy weights, and inputs with burn's outputs.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use safetensors::SafeTensors;

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(manifest_dir()).join("tests/fixtures").join(name)
}

/// A safetensors file's f32 tensors (shape, values) and metadata.
pub struct Tensors {
    pub map: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    pub meta: HashMap<String, String>,
}

pub fn read(name: &str) -> Tensors {
    let bytes = std::fs::read(fixture(name)).unwrap();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().clone().unwrap_or_default();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let map = st
        .tensors()
        .into_iter()
        .map(|(k, v)| {
            let data = v
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            (k, (v.shape().to_vec(), data))
        })
        .collect();
    Tensors { map, meta }
}

impl Tensors {
    pub fn get(&self, key: &str) -> &[f32] {
        &self
            .map
            .get(key)
            .unwrap_or_else(|| panic!("fixture lacks {key}"))
            .1
    }

    pub fn shape4(&self, key: &str) -> [usize; 4] {
        self.map[key].0.clone().try_into().unwrap()
    }

    /// The bytes of a safetensors file of these tensors and metadata.
    pub fn to_bytes(&self) -> Vec<u8> {
        let raw: Vec<(String, Vec<usize>, Vec<u8>)> = self
            .map
            .iter()
            .map(|(k, (s, d))| {
                (
                    k.clone(),
                    s.clone(),
                    d.iter().flat_map(|v| v.to_le_bytes()).collect(),
                )
            })
            .collect();
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = raw
            .iter()
            .map(|(k, s, b)| {
                let v = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap();
                (k.clone(), v)
            })
            .collect();
        safetensors::serialize(views, Some(self.meta.clone())).unwrap()
    }
}

/// Largest |got − want| over the largest |want|.
pub fn rel(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0f64, |m, &v| m.max((v as f64).abs()));
    let diff = got
        .iter()
        .zip(want)
        .fold(0f64, |m, (&a, &b)| m.max(((a - b) as f64).abs()));
    if diff.is_nan() || got.iter().any(|v| v.is_nan()) {
        return f64::NAN;
    }
    diff / scale.max(f64::MIN_POSITIVE)
}

pub fn to_nhwc(x: &[f32], [n, c, h, w]: [usize; 4]) -> Vec<f32> {
    let mut y = vec![0.0; x.len()];
    for i in 0..n {
        for ch in 0..c {
            for p in 0..h * w {
                y[(i * h * w + p) * c + ch] = x[(i * c + ch) * h * w + p];
            }
        }
    }
    y
}

/// The package's directory, read when the test runs: a test binary may be reused from a
/// build in another checkout (cargo's fingerprints do not cover the compile-time value).
fn manifest_dir() -> std::ffi::OsString {
    std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR")
}
