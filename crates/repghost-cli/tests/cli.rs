//! End-to-end tests of the `repghost` binary: the "done" criterion (reference
//! logits through predict and convert), the paper table through info, and every loader
//! error as one line with a non-zero exit and no output file.

mod common;
use common::{repghost, s};
use repghost::metrics::rel_diff as rel;
use std::path::{Path, PathBuf};
use std::process::Output;

fn fixture(name: &str) -> PathBuf {
    Path::new(&manifest_dir())
        .join("../repghost/tests/fixtures")
        .join(name)
}

fn read_npy(p: &Path) -> Vec<f32> {
    repghost::npy::read(p).unwrap().data
}

/// A failing run: exit code `code`, exactly one line on stderr containing every `needle`.
fn assert_fails(out: &Output, code: i32, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "want one line, got: {err}");
    for n in needles {
        assert!(err.contains(n), "'{n}' not in: {err}");
    }
    assert!(
        !err.contains("panicked") && !err.contains("internal error"),
        "{err}"
    );
}

#[test]
fn predict_and_convert_reproduce_reference_logits() {
    let dir = tempfile::tempdir().unwrap();
    let input = fixture("input.npy");
    for (weights, model, reference) in [
        ("repghostnet_050.pth.tar", None, "repghostnet_050_logits.npy"),
        (
            "repghostnet_0_2x_fused.pth",
            Some("repghostnet_0_2x"),
            "repghostnet_0_2x_logits.npy",
        ),
        ("ghostnet_050.safetensors", None, "ghostnet_050_logits.npy"),
    ] {
        let want = read_npy(&fixture(reference));
        let w = fixture(weights);
        let mut common = vec!["--weights", s(&w)];
        if let Some(m) = model {
            common.extend(["--model", m]);
        }
        let logits = dir.path().join(format!("{weights}.logits.npy"));
        let mut a = vec!["predict"];
        a.extend(&common);
        a.extend(["--input", s(&input), "--logits", s(&logits)]);
        let out = repghost(&a);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(rel(&read_npy(&logits), &want) < 1e-4, "{weights}: predict");

        let deploy = dir.path().join(format!("{weights}.deploy.safetensors"));
        let mut a = vec!["convert"];
        a.extend(&common);
        a.extend(["--out", s(&deploy), "--check"]);
        let out = repghost(&a);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("check: max |train - deploy|"));

        // The deploy file names its model: no --model needed any more.
        let predict = |w: &Path| {
            let logits = w.with_extension("logits.npy");
            let out = repghost(&[
                "predict",
                "--weights",
                s(w),
                "--input",
                s(&input),
                "--logits",
                s(&logits),
            ]);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            read_npy(&logits)
        };
        assert!(rel(&predict(&deploy), &want) < 1e-4, "{weights}: deploy predict");

        // Stored as f16: half the file, the logits moved by the rounding only (4.7e-3 to
        // 5.3e-3 of the largest logit for these three, measured).
        let half = dir.path().join(format!("{weights}.f16.safetensors"));
        let mut a = vec!["convert"];
        a.extend(&common);
        a.extend(["--out", s(&half), "--dtype", "f16"]);
        let out = repghost(&a);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let size = |p: &std::path::Path| std::fs::metadata(p).unwrap().len() as f64;
        assert!(size(&half) < 0.51 * size(&deploy), "{weights}: f16 file size");
        let err = rel(&predict(&half), &want);
        assert!(err < 7e-3, "{weights}: f16 deploy predict {err:.2e}");
    }
}

#[test]
fn ema_flag_picks_the_ema_weights() {
    let dir = tempfile::tempdir().unwrap();
    let logits = dir.path().join("ema.npy");
    let w = fixture("repghostnet_050.pth.tar");
    let input = fixture("input.npy");
    let out = repghost(&[
        "predict",
        "--weights",
        s(&w),
        "--ema",
        "--input",
        s(&input),
        "--logits",
        s(&logits),
    ]);
    assert!(out.status.success());
    assert!(
        rel(
            &read_npy(&logits),
            &read_npy(&fixture("repghostnet_050_ema_logits.npy"))
        ) < 1e-4
    );
}

#[test]
fn info_reproduces_the_paper_table() {
    let out = repghost(&["info", "--format", "json"]);
    assert!(out.status.success());
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let get = |name: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["model"] == name)
            .unwrap()
            .clone()
    };
    for (name, params, macs) in [
        ("repghostnet_050", 2_302_956u64, 43_314_720u64),
        ("repghostnet_100", 4_051_648, 142_394_128),
        ("repghostnet_200", 9_752_212, 515_869_856),
        ("ghostnet_100", 5_171_524, 141_150_512),
    ] {
        let r = get(name);
        assert_eq!(r["params"].as_u64(), Some(params), "{name}");
        assert_eq!(r["macs"].as_u64(), Some(macs), "{name}");
    }
    let table = repghost(&["info"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("repghostnet_1_11x") && text.contains("170.12"),
        "{text}"
    );
}

#[test]
fn bad_inputs_fail_with_one_line_and_leave_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = std::fs::read(fixture("repghostnet_050.pth.tar")).unwrap();
    let input = fixture("input.npy");
    let out = d.join("out.safetensors");

    let truncated = d.join("truncated.pth.tar");
    std::fs::write(&truncated, &good[..good.len() / 2]).unwrap();
    let empty = d.join("empty.pth");
    std::fs::write(&empty, b"").unwrap();
    let foreign = d.join("foreign.bin");
    std::fs::write(&foreign, b"this is not a checkpoint at all, just some text").unwrap();
    let missing = d.join("does-not-exist.pth");
    let ckpt = fixture("repghostnet_050.pth.tar");
    let ghost = fixture("ghostnet_050.safetensors");

    let cases: Vec<(Vec<&str>, i32, Vec<&str>)> = vec![
        (vec!["--weights", s(&truncated)], 1, vec!["truncated.pth.tar"]),
        (vec!["--weights", s(&empty)], 1, vec!["empty.pth", "empty"]),
        (vec!["--weights", s(&foreign)], 1, vec!["foreign.bin", "neither"]),
        (vec!["--weights", s(&missing)], 1, vec!["does-not-exist.pth"]),
        (vec!["--weights", s(d)], 1, vec![s(d)]),
        (
            vec!["--weights", s(&ckpt), "--model", "repghostnet_100"],
            1,
            vec!["do not fit repghostnet_100", "mis-shaped", "conv_stem.weight"],
        ),
        (
            vec!["--weights", s(&ckpt), "--model", "resnet50"],
            2,
            vec!["unknown model 'resnet50'"],
        ),
        (vec!["--weights", s(&ghost), "--ema"], 1, vec!["--ema"]),
    ];
    for (extra, code, needles) in cases {
        let mut a = vec!["convert", "--out", s(&out)];
        a.extend(&extra);
        assert_fails(&repghost(&a), code, &needles);
        assert!(!out.exists(), "output written despite error for {extra:?}");
        // no temp files either
        assert!(std::fs::read_dir(d).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains(".tmp-")));
    }

    // Input problems in predict.
    let w = fixture("repghostnet_050.pth.tar");
    let bad_npy = d.join("bad.npy");
    std::fs::write(
        &bad_npy,
        repghost::npy::to_bytes(&repghost::npy::Array {
            shape: vec![2, 1, 8, 8],
            data: vec![0.0; 128],
        }),
    )
    .unwrap();
    assert_fails(
        &repghost(&["predict", "--weights", s(&w), "--input", s(&bad_npy)]),
        1,
        &["bad.npy", "does not fit"],
    );
    let nan_npy = d.join("nan.npy");
    let mut data = vec![0.0f32; 2 * 3 * 8 * 8];
    data[5] = f32::NAN;
    std::fs::write(
        &nan_npy,
        repghost::npy::to_bytes(&repghost::npy::Array {
            shape: vec![2, 3, 8, 8],
            data,
        }),
    )
    .unwrap();
    assert_fails(
        &repghost(&["predict", "--weights", s(&w), "--input", s(&nan_npy)]),
        1,
        &["nan.npy", "NaN"],
    );
    let logits_dir = d.join("no-such-dir").join("l.npy");
    assert_fails(
        &repghost(&[
            "predict",
            "--weights",
            s(&w),
            "--input",
            s(&input),
            "--logits",
            s(&logits_dir),
        ]),
        1,
        &["l.npy"],
    );
    // A flag that contradicts another is refused before anything runs or is written.
    let logits = d.join("l.npy");
    let saved = d.join("saved.npy");
    assert_fails(
        &repghost(&[
            "predict",
            "--weights",
            s(&w),
            "--input",
            s(&input),
            "--logits",
            s(&logits),
            "--save-input",
            s(&saved),
        ]),
        2,
        &["--save-input"],
    );
    assert!(
        !logits.exists() && !saved.exists(),
        "predict wrote files before refusing"
    );
    // Usage errors exit with 2.
    let out = repghost(&["convert", "--weights", s(&w)]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn nan_weights_and_foreign_state_dicts_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Convert a good file to native safetensors, then poison one tensor.
    let good = d.join("good.safetensors");
    let w = fixture("ghostnet_050.safetensors");
    let mut bytes = std::fs::read(&w).unwrap();
    // Overwrite the last 4 bytes (inside the final tensor's data) with a NaN.
    let n = bytes.len();
    bytes[n - 4..].copy_from_slice(&f32::NAN.to_le_bytes());
    let nan = d.join("nan.safetensors");
    std::fs::write(&nan, &bytes).unwrap();
    let out = repghost(&["convert", "--weights", s(&nan), "--out", s(&good)]);
    assert_fails(&out, 1, &["nan.safetensors", "NaN"]);
    assert!(!good.exists());

    // A zip archive that is not a torch checkpoint.
    let zip_path = d.join("foreign.zip");
    {
        let f = std::fs::File::create(&zip_path).unwrap();
        let mut z = zip::ZipWriter::new(f);
        z.start_file("hello.txt", zip::write::SimpleFileOptions::default())
            .unwrap();
        std::io::Write::write_all(&mut z, b"hi").unwrap();
        z.finish().unwrap();
    }
    assert_fails(
        &repghost(&["convert", "--weights", s(&zip_path), "--out", s(&good)]),
        1,
        &["data.pkl"],
    );
}

#[test]
fn export_onnx_writes_deploy_and_train_graphs() {
    let dir = tempfile::tempdir().unwrap();
    let w = fixture("repghostnet_050.pth.tar");
    let deploy = dir.path().join("d.onnx");
    let out = repghost(&[
        "export-onnx",
        "--weights",
        s(&w),
        "--out",
        s(&deploy),
        "--dynamic-batch",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let train = dir.path().join("t.onnx");
    let out = repghost(&[
        "export-onnx",
        "--weights",
        s(&w),
        "--out",
        s(&train),
        "--form",
        "train",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    use prost::Message;
    let ops = |p: &Path| -> Vec<String> {
        let m = repghost::onnx::proto::ModelProto::decode(&std::fs::read(p).unwrap()[..]).unwrap();
        m.graph.unwrap().node.into_iter().map(|n| n.op_type).collect()
    };
    assert!(!ops(&deploy).iter().any(|o| o == "BatchNormalization"));
    assert!(ops(&train).iter().any(|o| o == "BatchNormalization"));
    // A deploy file has lost its train form: refused, nothing written.
    let native = dir.path().join("d.safetensors");
    assert!(repghost(&["convert", "--weights", s(&w), "--out", s(&native)])
        .status
        .success());
    let again = dir.path().join("x.onnx");
    assert_fails(
        &repghost(&[
            "export-onnx",
            "--weights",
            s(&native),
            "--out",
            s(&again),
            "--form",
            "train",
        ]),
        1,
        &["train form"],
    );
    assert!(!again.exists());
    assert_fails(
        &repghost(&[
            "export-onnx",
            "--weights",
            s(&w),
            "--out",
            s(&again),
            "--opset",
            "7",
        ]),
        1,
        &["opset 7"],
    );
}

#[test]
fn report_tables_cover_the_family_with_exact_counts() {
    // Timings at 32² (the counts are the 224² ones regardless): the test checks the tables
    // and plots, not the machine's speed.
    let dir = tempfile::tempdir().unwrap();
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, "mine").unwrap();
    let out = repghost(&["report", "--out", s(dir.path()), "--runs", "3", "--size", "32"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let md = std::fs::read_to_string(dir.path().join("REPORT.md")).unwrap();
    for (name, params) in [
        ("repghostnet_050", 2302956),
        ("repghostnet_100", 4051648),
        ("repghostnet_200", 9752212),
        ("ghostnet_100", 5171524),
    ] {
        let row = md
            .lines()
            .find(|l| l.starts_with(&format!("| {name} |")))
            .unwrap_or_else(|| panic!("no row for {name}"));
        assert!(row.contains(&format!("| {params} |")), "{row}");
    }
    assert!(md.contains("| 80 × 28 × 28 | 64 |"));
    assert!(md.contains("input 32²"), "{md}");
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "mine");
    for png in ["latency_accuracy.png", "concat_vs_add.png"] {
        let img = image::open(dir.path().join(png)).unwrap();
        assert_eq!((img.width(), img.height()), (900, 600), "{png}");
    }
}

/// The package's directory, read when the test runs: a test binary may be reused from a
/// build in another checkout (cargo's fingerprints do not cover the compile-time value).
fn manifest_dir() -> std::ffi::OsString {
    std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR")
}
