//! The decode + resize + crop pipeline against Pillow/torchvision crops written by
//! scripts/make_image_fixtures.py (Pillow 13, torchvision 0.29): every format the pipeline
//! accepts, odd sizes, portrait and landscape, grey, RGBA, palette, 16-bit, CMYK, EXIF.

use std::path::{Path, PathBuf};

use repghost_data::{decode, Preprocess};

fn fixtures() -> PathBuf {
    Path::new(&manifest_dir()).join("tests/fixtures")
}

fn expected(name: &str) -> Vec<u8> {
    image::open(fixtures().join("expected").join(name))
        .unwrap()
        .to_rgb8()
        .into_raw()
}

fn crop(name: &str, img_size: usize) -> Vec<u8> {
    let bytes = std::fs::read(fixtures().join("images").join(name)).unwrap();
    let img = decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    let p = Preprocess {
        img_size,
        ..Preprocess::imagenet()
    };
    p.crop(&img).data
}

/// (max |Δ|, fraction of values that differ)
fn diff(a: &[u8], b: &[u8]) -> (u8, f64) {
    assert_eq!(a.len(), b.len());
    let max = a.iter().zip(b).map(|(x, y)| x.abs_diff(*y)).max().unwrap_or(0);
    let n = a.iter().zip(b).filter(|(x, y)| x != y).count();
    (max, n as f64 / a.len() as f64)
}

#[test]
fn every_format_matches_pillow_exactly() {
    let names = [
        "landscape.jpg",
        "portrait_progressive.jpg",
        "cmyk.jpg",
        "grey.png",
        "rgba.png",
        "palette.png",
        "bitmap.bmp",
        "photo.tiff",
        "anim.gif",
        "lossless.webp",
        "lossy.webp",
        "rotated.jpg",
        "grey16.png",
        "rgb16.png",
    ];
    let mut report = Vec::new();
    for name in names {
        let (max, frac) = diff(&crop(name, 64), &expected(&format!("{name}.64.png")));
        report.push(format!("{name}: max {max}, {:.1}% differ", frac * 100.0));
        assert!(
            max <= 1,
            "{name}: max difference {max} levels ({:.1}% of values differ)",
            frac * 100.0
        );
    }
    eprintln!("{}", report.join("\n"));
}

#[test]
fn full_imagenet_pipeline_on_a_500x375_photo() {
    let (max, frac) = diff(&crop("landscape.jpg", 224), &expected("landscape.jpg.224.png"));
    assert_eq!(max, 0, "max {max}, {:.1}% differ", frac * 100.0);
}

#[test]
fn corrupt_and_foreign_files_are_errors() {
    let good = std::fs::read(fixtures().join("images/landscape.jpg")).unwrap();
    assert!(decode(&good[..good.len() / 3]).is_err());
    assert!(decode(b"GIF89a\x01").is_err());
    assert!(decode(b"plain text, not an image")
        .unwrap_err()
        .contains("supported format"));
    assert!(decode(&[]).is_err());
}

/// The package's directory, read when the test runs: a test binary may be reused from a
/// build in another checkout (cargo's fingerprints do not cover the compile-time value).
fn manifest_dir() -> std::ffi::OsString {
    std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR")
}
