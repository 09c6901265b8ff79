//! `predict` on image files and `eval` on datasets, against the PyTorch reference
//! (scripts/make_image_fixtures.py: timm's eval transform, torchvision's ImageFolder).

mod common;
use common::{repghost, s};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Output;

fn data_fixture(name: &str) -> PathBuf {
    Path::new(&manifest_dir())
        .join("../repghost-data/tests/fixtures")
        .join(name)
}

fn weights() -> PathBuf {
    Path::new(&manifest_dir()).join("../repghost/tests/fixtures/repghostnet_050.pth.tar")
}

fn reference() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(data_fixture("reference.json")).unwrap()).unwrap()
}

#[test]
fn predict_on_images_matches_reference_logits_and_top5() {
    let dir = tempfile::tempdir().unwrap();
    let logits = dir.path().join("logits.npy");
    let names = [
        "landscape.jpg",
        "portrait_progressive.jpg",
        "grey.png",
        "rgba.png",
    ];
    let paths: Vec<PathBuf> = names.iter().map(|n| data_fixture("images").join(n)).collect();
    let w = weights();
    let mut args = vec![
        "predict",
        "--weights",
        s(&w),
        "--logits",
        s(&logits),
        "--format",
        "json",
    ];
    args.extend(paths.iter().map(|p| s(p)));
    let out = repghost(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let got = repghost::npy::read(&logits).unwrap();
    assert_eq!(got.shape, vec![4, 10]);
    let r = reference();
    for (i, name) in names.iter().enumerate() {
        let want: Vec<f32> = r["predictions_224"][name]["logits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let row = &got.data[i * 10..(i + 1) * 10];
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let err = row.iter().zip(&want).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale;
        assert!(err < 1e-4, "{name}: relative error {err:.2e}");
        let top5: Vec<u64> = printed[i]["top"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["index"].as_u64().unwrap())
            .collect();
        let want5: Vec<u64> = r["predictions_224"][name]["top5"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(top5, want5, "{name}");
    }
}

#[test]
fn save_input_writes_the_preprocessed_batch() {
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("x.npy");
    let img = data_fixture("images/grey.png");
    let w = weights();
    let out = repghost(&[
        "predict",
        "--weights",
        s(&w),
        s(&img),
        "--img-size",
        "64",
        "--save-input",
        s(&saved),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let x = repghost::npy::read(&saved).unwrap();
    assert_eq!(x.shape, vec![1, 3, 64, 64]);
    // Un-normalized, it is the Pillow crop (grey, so all channels agree).
    let crop = image::open(data_fixture("expected/grey.png.64.png"))
        .unwrap()
        .to_rgb8()
        .into_raw();
    let (mean, std) = ([0.485f32, 0.456, 0.406], [0.229f32, 0.224, 0.225]);
    for c in 0..3 {
        for i in 0..64 * 64 {
            let v = (x.data[c * 4096 + i] * std[c] + mean[c]) * 255.0;
            assert!(
                (v - crop[i * 3 + c] as f32).abs() < 0.01,
                "channel {c} pixel {i}: {v}"
            );
        }
    }
}

#[test]
fn eval_on_an_image_folder_matches_the_reference() {
    let w = weights();
    let folder = data_fixture("folder");
    let out = repghost(&[
        "eval",
        "--weights",
        s(&w),
        "--data",
        s(&folder),
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let want = &reference()["folder"];
    assert_eq!(got["images"], want["n"]);
    assert_eq!(got["top1"].as_f64(), want["top1"].as_f64());
    assert_eq!(got["top5"].as_f64(), want["top5"].as_f64());
    assert!((got["loss"].as_f64().unwrap() - want["loss"].as_f64().unwrap()).abs() < 1e-4);
    let classes: Vec<&str> = got["per_class"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["class"].as_str().unwrap())
        .collect();
    assert_eq!(classes, ["cat", "dog", "zebra"]);
}

fn idx(path: &Path, magic: u32, dims: &[u32], body: &[u8]) {
    let mut raw = magic.to_be_bytes().to_vec();
    for d in dims {
        raw.extend(d.to_be_bytes());
    }
    raw.extend(body);
    let mut gz =
        flate2::write::GzEncoder::new(std::fs::File::create(path).unwrap(), flate2::Compression::fast());
    gz.write_all(&raw).unwrap();
    gz.finish().unwrap();
}

#[test]
fn eval_reads_fashion_mnist_idx_files() {
    let dir = tempfile::tempdir().unwrap();
    let n = 12u32;
    let images: Vec<u8> = (0..n * 28 * 28).map(|i| (i * 7 % 251) as u8).collect();
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    idx(
        &dir.path().join("t10k-images-idx3-ubyte.gz"),
        0x803,
        &[n, 28, 28],
        &images,
    );
    idx(
        &dir.path().join("t10k-labels-idx1-ubyte.gz"),
        0x801,
        &[n],
        &labels,
    );
    let w = weights();
    let out = repghost(&[
        "eval",
        "--weights",
        s(&w),
        "--data",
        s(dir.path()),
        "--img-size",
        "32",
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["images"].as_u64(), Some(12));
    assert_eq!(got["per_class"][0]["class"].as_str(), Some("T-shirt/top"));
    assert_eq!(got["per_class"][3]["images"].as_u64(), Some(1));

    // A labels file that disagrees with the images is refused by name.
    idx(
        &dir.path().join("t10k-labels-idx1-ubyte.gz"),
        0x801,
        &[n - 1],
        &labels[..11],
    );
    let out = repghost(&["eval", "--weights", s(&w), "--data", s(dir.path())]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("t10k-labels-idx1-ubyte.gz"));
}

#[test]
fn bad_data_gives_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let w = weights();
    let one_line = |out: &Output, needle: &str| {
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(needle), "'{needle}' not in {err}");
        assert!(!err.contains("panicked"), "{err}");
    };
    // Missing directory.
    let missing = dir.path().join("nope");
    one_line(
        &repghost(&["eval", "--weights", s(&w), "--data", s(&missing)]),
        "no such directory",
    );
    // A class folder without images.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(empty.join("a")).unwrap();
    std::fs::create_dir_all(empty.join("b")).unwrap();
    std::fs::copy(data_fixture("images/grey.png"), empty.join("a/x.png")).unwrap();
    one_line(
        &repghost(&["eval", "--weights", s(&w), "--data", s(&empty)]),
        "no images",
    );
    // A corrupt image: reported by name, the rest evaluated, non-zero exit.
    std::fs::write(empty.join("b/broken.jpg"), b"\xff\xd8\xff\xe0 not really").unwrap();
    std::fs::copy(data_fixture("images/rgba.png"), empty.join("b/y.png")).unwrap();
    let out = repghost(&[
        "eval",
        "--weights",
        s(&w),
        "--data",
        s(&empty),
        "--format",
        "json",
    ]);
    one_line(&out, "broken.jpg");
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["images"].as_u64(), Some(2));
    // A folder with neither class folders nor IDX files.
    let bare = dir.path().join("bare");
    std::fs::create_dir_all(&bare).unwrap();
    std::fs::write(bare.join("readme.txt"), b"hi").unwrap();
    one_line(
        &repghost(&["eval", "--weights", s(&w), "--data", s(&bare)]),
        "no class folders",
    );
}

#[test]
fn runtime_and_burn_engines_agree() {
    let w = weights();
    let folder = data_fixture("folder");
    let mut results = Vec::new();
    for engine in ["runtime", "burn"] {
        let out = repghost(&[
            "eval",
            "--weights",
            s(&w),
            "--data",
            s(&folder),
            "--format",
            "json",
            "--engine",
            engine,
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["engine"].as_str(), Some(engine));
        results.push(v["loss"].as_f64().unwrap());
    }
    assert!((results[0] - results[1]).abs() < 1e-4, "{results:?}");
}

/// The package's directory, read when the test runs: a test binary may be reused from a
/// build in another checkout (cargo's fingerprints do not cover the compile-time value).
fn manifest_dir() -> std::ffi::OsString {
    std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR")
}
