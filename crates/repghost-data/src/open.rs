//! Opening a dataset from the one string a user gives (`--data`): `fashion-mnist` (the Debian
//! package dataset-fashion-mnist), a folder holding the Fashion-MNIST IDX files, or an
//! ImageFolder directory (one sub-folder per class, or `train/` and `val/`/`test/` inside).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::dataset::Dataset;
use crate::error::{Error, Result};
use crate::folder::ImageFolder;
use crate::idx::{self, Split};

/// Whether `dir` holds Fashion-MNIST IDX files (plain or gzipped).
fn has_idx(dir: &Path) -> bool {
    ["t10k-images-idx3-ubyte", "train-images-idx3-ubyte"]
        .iter()
        .any(|s| dir.join(s).is_file() || dir.join(format!("{s}.gz")).is_file())
}

/// The `split` of the dataset named by `data`.
pub fn open(data: &str, split: Split) -> Result<Arc<dyn Dataset>> {
    if data == "fashion-mnist" {
        return Ok(Arc::new(idx::load(None, split)?));
    }
    let root = PathBuf::from(data);
    if !root.exists() {
        return Err(Error::Dataset(format!(
            "{data}: no such directory (give an ImageFolder directory or `fashion-mnist`)"
        )));
    }
    if has_idx(&root) {
        return Ok(Arc::new(idx::load(Some(&root), split)?));
    }
    let sub: &[&str] = match split {
        Split::Test => &["val", "test", "validation"],
        Split::Train => &["train"],
    };
    let dir = sub
        .iter()
        .map(|s| root.join(s))
        .find(|p| p.is_dir())
        .unwrap_or(root);
    Ok(Arc::new(ImageFolder::open(&dir)?))
}
