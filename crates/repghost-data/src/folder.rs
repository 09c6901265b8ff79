//! The ImageFolder layout of torchvision: one sub-folder per class, classes sorted by name,
//! files walked in sorted order and kept by extension — so ImageNet's `val/` works as is
//! and class indices agree with the reference.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// torchvision's `IMG_EXTENSIONS` (case-insensitive).
pub const EXTENSIONS: [&str; 9] = [
    ".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp",
];

#[derive(Clone, Debug)]
pub struct ImageFolder {
    pub root: PathBuf,
    pub classes: Vec<String>,
    /// (file, class index), in torchvision's order.
    pub samples: Vec<(PathBuf, usize)>,
}

fn is_image(p: &Path) -> bool {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    EXTENSIONS.iter().any(|e| name.ends_with(e))
}

/// All (directory, sorted file names) below `dir`, sorted by directory path like Python's
/// `sorted(os.walk(dir, followlinks=True))`.
fn walk(dir: &Path, out: &mut Vec<(String, Vec<PathBuf>)>, depth: usize) -> Result<()> {
    if depth > 64 {
        return Err(Error::Dataset(format!(
            "{}: directory tree too deep (symlink loop?)",
            dir.display()
        )));
    }
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let e = e.map_err(|e| Error::io(dir, e))?;
        let p = e.path();
        if p.is_dir() {
            dirs.push(p);
        } else {
            files.push(p);
        }
    }
    files.sort();
    out.push((dir.to_string_lossy().into_owned(), files));
    for d in dirs {
        walk(&d, out, depth + 1)?;
    }
    Ok(())
}

impl ImageFolder {
    pub fn open(root: &Path) -> Result<Self> {
        if !root.is_dir() {
            return Err(Error::Dataset(format!("{}: not a directory", root.display())));
        }
        let mut classes: Vec<String> = std::fs::read_dir(root)
            .map_err(|e| Error::io(root, e))?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        classes.sort();
        if classes.is_empty() {
            return Err(Error::Dataset(format!(
                "{}: no class folders (ImageFolder layout: one sub-folder of images per class)",
                root.display()
            )));
        }
        let mut samples = Vec::new();
        let mut empty = Vec::new();
        for (idx, class) in classes.iter().enumerate() {
            let mut tree = Vec::new();
            walk(&root.join(class), &mut tree, 0)?;
            tree.sort_by(|a, b| a.0.cmp(&b.0));
            let before = samples.len();
            for (_, files) in tree {
                samples.extend(files.into_iter().filter(|f| is_image(f)).map(|f| (f, idx)));
            }
            if samples.len() == before {
                empty.push(class.clone());
            }
        }
        if !empty.is_empty() {
            return Err(Error::Dataset(format!(
                "{}: no images ({}) in class folder(s) {}",
                root.display(),
                EXTENSIONS.join(" "),
                empty.join(", ")
            )));
        }
        Ok(ImageFolder {
            root: root.to_path_buf(),
            classes,
            samples,
        })
    }
}
