//! Helpers shared by the CLI test files.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// Runs the built `repghost` binary.
pub fn repghost(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_repghost"))
        .args(args)
        .output()
        .expect("binary runs")
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Writes an IDX dataset of 16×16 grey bars (four classes) in Fashion-MNIST's file layout.
pub fn write_idx(dir: &Path, n_train: usize, n_test: usize) {
    let write = |prefix: &str, n: usize, seed: u32| {
        let mut img = vec![0, 0, 8, 3];
        img.extend((n as u32).to_be_bytes());
        img.extend(16u32.to_be_bytes());
        img.extend(16u32.to_be_bytes());
        let mut lab = vec![0, 0, 8, 1];
        lab.extend((n as u32).to_be_bytes());
        let mut state = seed;
        for i in 0..n {
            let label = i % 4;
            lab.push(label as u8);
            for y in 0..16 {
                for x in 0..16 {
                    state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    let noise = (state >> 16) % 60;
                    let on = match label {
                        0 => y < 5,
                        1 => y >= 11,
                        2 => x < 5,
                        _ => x >= 11,
                    };
                    img.push(if on { 160 + noise as u8 } else { 20 + noise as u8 });
                }
            }
        }
        std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte")), img).unwrap();
        std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), lab).unwrap();
    };
    write("train", n_train, 1);
    write("t10k", n_test, 2);
}
