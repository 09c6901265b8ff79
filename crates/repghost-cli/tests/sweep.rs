//! Every subcommand against the usual mistakes: missing files, directories instead of files,
//! empty files, unknown and mismatched model names, unwritable outputs. Each must end in one
//! line naming the problem, exit code 2 for command-line mistakes and 1 for everything else,
//! and never a backtrace.

mod common;

use std::path::Path;

use common::{repghost, s};

fn fixture(name: &str) -> String {
    Path::new(&manifest_dir())
        .join("../repghost/tests/fixtures")
        .join(name)
        .to_str()
        .unwrap()
        .to_string()
}

#[test]
fn every_subcommand_fails_cleanly_on_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let empty = d.join("empty.safetensors");
    std::fs::write(&empty, b"").unwrap();
    let a_file = d.join("plain-file");
    std::fs::write(&a_file, b"x").unwrap();
    let under_file = a_file.join("out.safetensors"); // a file cannot hold a directory entry
    let missing = d.join("missing.pth");
    let ckpt = fixture("repghostnet_050.pth.tar");
    let (e, m, df, uf) = (s(&empty), s(&missing), s(d), s(&under_file));
    let out = s(&d.join("o.safetensors")).to_string();
    let onnx = s(&d.join("o.onnx")).to_string();
    let nope = s(&d.join("nope.jpg")).to_string();
    let no_data = s(&d.join("no-data")).to_string();
    let run = s(&d.join("run")).to_string();
    let onnx_under_file = s(&a_file.join("m.onnx")).to_string();

    // (arguments, exit code, text the message must contain)
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        (vec!["info", "--model", "resnet50"], 2, "unknown model"),
        (vec!["info", "--frobnicate"], 2, "--frobnicate"),
        (vec!["convert", "--weights", m, "--out", &out], 1, "missing.pth"),
        (vec!["convert", "--weights", df, "--out", &out], 1, df),
        (vec!["convert", "--weights", e, "--out", &out], 1, "empty"),
        (
            vec![
                "convert",
                "--weights",
                &ckpt,
                "--model",
                "resnet50",
                "--out",
                &out,
            ],
            2,
            "resnet50",
        ),
        (
            vec![
                "convert",
                "--weights",
                &ckpt,
                "--model",
                "repghostnet_200",
                "--out",
                &out,
            ],
            1,
            "do not fit",
        ),
        (
            vec!["convert", "--weights", &ckpt, "--out", uf],
            1,
            "out.safetensors",
        ),
        (vec!["predict", "--weights", m, s(&a_file)], 1, "missing.pth"),
        (vec!["predict", "--weights", &ckpt, &nope], 1, "nope.jpg"),
        (vec!["predict", "--weights", &ckpt], 2, "give images"),
        (vec!["eval", "--weights", e, "--data", df], 1, "empty"),
        (vec!["eval", "--weights", &ckpt, "--data", &no_data], 1, "no-data"),
        (vec!["bench", "--weights", m], 1, "missing.pth"),
        (vec!["bench", "--model", "resnet50"], 2, "resnet50"),
        (vec!["bench", "--runs", "0"], 2, "--runs"),
        (vec!["export-onnx", "--weights", df, "--out", &onnx], 1, df),
        (
            vec!["export-onnx", "--weights", &ckpt, "--out", &onnx_under_file],
            1,
            "m.onnx",
        ),
        (vec!["train", "--data", &no_data, "--out", &run], 1, "no-data"),
        (
            vec!["train", "--data", df, "--out", &run, "--model", "resnet50"],
            2,
            "resnet50",
        ),
        (
            vec!["train", "--data", df, "--out", &run, "--batch-size", "0"],
            2,
            "--batch-size",
        ),
        (vec!["report", "--out", uf], 1, "out.safetensors"),
    ];
    for (args, code, needle) in cases {
        let o = repghost(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(code), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: '{needle}' not in {err}");
        assert!(
            !err.contains("panicked") && !err.contains("internal error") && !err.contains("RUST_BACKTRACE"),
            "{args:?}: {err}"
        );
        if code == 1 {
            // Progress lines may precede it; the error itself is one line, and the last.
            let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error")).collect();
            assert_eq!(errors.len(), 1, "{args:?}: want one error line, got {err}");
            let last = err.trim_end().lines().last().unwrap_or("");
            assert!(last.starts_with("error: "), "{args:?}: {err}");
        }
    }
    assert!(!Path::new(&out).exists() && !Path::new(&onnx).exists());
}

/// The package's directory, read when the test runs: a test binary may be reused from a
/// build in another checkout (cargo's fingerprints do not cover the compile-time value).
fn manifest_dir() -> std::ffi::OsString {
    std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR")
}
