//! Fashion-MNIST in its IDX files (gzipped or not), as the Debian package
//! `dataset-fashion-mnist` installs them.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::image::Image;

/// Where `dataset-fashion-mnist` puts the files.
pub const DEBIAN_DIR: &str = "/usr/share/datasets/fashion-mnist";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

/// Grey 28×28 images and their labels.
pub struct Mnist {
    pub rows: usize,
    pub cols: usize,
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
}

impl Mnist {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    pub fn image(&self, i: usize) -> Image {
        let n = self.rows * self.cols;
        Image {
            width: self.cols,
            height: self.rows,
            channels: 1,
            data: self.images[i * n..(i + 1) * n].to_vec(),
        }
    }
}

fn find(dir: &Path, stem: &str) -> Result<PathBuf> {
    for name in [format!("{stem}.gz"), stem.to_string()] {
        let p = dir.join(&name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(Error::Dataset(format!(
        "{}: no {stem}[.gz] (install the Debian package dataset-fashion-mnist, or point --data at a folder with the four IDX files)",
        dir.display()
    )))
}

/// An IDX file (optionally gzipped) in memory: its dimensions and its bytes. `path` only names
/// the source in messages.
pub fn parse_idx(path: &Path, raw: &[u8], magic: u32) -> Result<(Vec<usize>, Vec<u8>)> {
    let mut bytes = Vec::new();
    if raw.starts_with(&[0x1f, 0x8b]) {
        flate2::read::GzDecoder::new(raw)
            .take(1 << 30)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::format(path, format!("corrupt gzip ({e})")))?;
    } else {
        bytes = raw.to_vec();
    }
    let be = |i: usize| {
        bytes
            .get(i..i + 4)
            .map(|b| u32::from_be_bytes(b.try_into().expect("4")) as usize)
    };
    if be(0) != Some(magic as usize) {
        return Err(Error::format(
            path,
            format!("not an IDX file with magic 0x{magic:08x}"),
        ));
    }
    let ndim = (magic & 0xff) as usize;
    let dims: Vec<usize> = (0..ndim)
        .map(|i| be(4 + 4 * i))
        .collect::<Option<_>>()
        .ok_or_else(|| Error::format(path, "truncated IDX header"))?;
    let n = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| Error::format(path, format!("IDX dims {dims:?} overflow")))?;
    let start = 4 + 4 * ndim;
    if bytes.len() != start + n {
        return Err(Error::format(
            path,
            format!(
                "IDX dims {dims:?} need {n} bytes, file has {}",
                bytes.len() - start
            ),
        ));
    }
    Ok((dims, bytes[start..].to_vec()))
}

/// Loads a split from `dir` (the Debian location when `dir` is `None`).
pub fn load(dir: Option<&Path>, split: Split) -> Result<Mnist> {
    let dir = dir.unwrap_or(Path::new(DEBIAN_DIR));
    if !dir.is_dir() {
        return Err(Error::Dataset(format!(
            "{}: Fashion-MNIST not found (install it with `apt-get install dataset-fashion-mnist`)",
            dir.display()
        )));
    }
    let prefix = match split {
        Split::Train => "train",
        Split::Test => "t10k",
    };
    let ipath = find(dir, &format!("{prefix}-images-idx3-ubyte"))?;
    let lpath = find(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
    let read = |p: &Path| std::fs::read(p).map_err(|e| Error::io(p, e));
    from_bytes(&ipath, &read(&ipath)?, &lpath, &read(&lpath)?)
}

/// Images and labels from the bytes of the two IDX files (paths name them in messages).
pub fn from_bytes(ipath: &Path, ibytes: &[u8], lpath: &Path, lbytes: &[u8]) -> Result<Mnist> {
    let (idims, images) = parse_idx(ipath, ibytes, 0x0000_0803)?;
    let (ldims, labels) = parse_idx(lpath, lbytes, 0x0000_0801)?;
    if idims[0] != ldims[0] {
        return Err(Error::format(
            lpath,
            format!("{} labels for {} images", ldims[0], idims[0]),
        ));
    }
    if !(1..=4096).contains(&idims[1]) || !(1..=4096).contains(&idims[2]) {
        return Err(Error::format(
            ipath,
            format!("images of {}×{} pixels", idims[2], idims[1]),
        ));
    }
    if let Some(bad) = labels.iter().find(|&&l| l > 9) {
        return Err(Error::format(lpath, format!("label {bad} out of range 0..10")));
    }
    Ok(Mnist {
        rows: idims[1],
        cols: idims[2],
        images,
        labels,
    })
}
