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
