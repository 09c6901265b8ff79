//! The ImageFolder layout of torchvision: one sub-folder per class, classes sorted by name,
//! files walked in sorted order and kept by extension — so ImageNet's `val/` works as is
//! and class indices agree with the reference.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// torchvision's `IMG_EXTENSIONS` (case-insensitive).
pub const EXTENSIONS: [&str; 9] = [
    ".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp",
];

/// What [`collect_images`] keeps from a folder: [`EXTENSIONS`] and GIF, every format
/// [`crate::decode`] reads. (An [`ImageFolder`] keeps torchvision's list, so that its samples
/// and class indices agree with the reference's.)
pub const DECODED_EXTENSIONS: [&str; 10] = [
    ".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif",
];

/// The images named by `paths`: a file as it is, a folder walked in sorted order (every
/// depth, with the [`ImageFolder`]'s guard against symlink loops) for the files with one of
/// [`DECODED_EXTENSIONS`]. A folder with no image is an error.
pub fn collect_images(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if !p.is_dir() {
            out.push(p.clone());
            continue;
        }
        let mut dirs = Vec::new();
        walk(p, &mut dirs, 0)?;
        dirs.sort_by(|a, b| a.0.cmp(&b.0));
        let before = out.len();
        for (_, files) in dirs {
            out.extend(
                files
                    .into_iter()
                    .filter(|f| has_extension(f, &DECODED_EXTENSIONS)),
            );
        }
        if out.len() == before {
            return Err(Error::Dataset(format!(
                "{}: no images in this folder",
                p.display()
            )));
        }
    }
    Ok(out)
}

#[derive(Clone, Debug)]
pub struct ImageFolder {
    pub root: PathBuf,
    pub classes: Vec<String>,
    /// (file, class index), in torchvision's order.
    pub samples: Vec<(PathBuf, usize)>,
}

fn has_extension(p: &Path, extensions: &[&str]) -> bool {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    extensions.iter().any(|e| name.ends_with(e))
}

fn is_image(p: &Path) -> bool {
    has_extension(p, &EXTENSIONS)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Files as given, folders walked at every depth in sorted order keeping decodable
    /// extensions (GIF too, unlike an ImageFolder), and a folder without images refused.
    #[test]
    fn collect_images_walks_folders_and_keeps_decodable_files() {
        let root = std::env::temp_dir().join(format!("repghost-collect-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("b/deeper")).unwrap();
        std::fs::create_dir_all(root.join("empty")).unwrap();
        for f in ["z.PNG", "notes.txt", "b/a.gif", "b/deeper/c.jpeg", "b/skip.npy"] {
            std::fs::write(root.join(f), b"").unwrap();
        }
        let given = root.join("notes.txt");
        let got = collect_images(&[root.clone(), given.clone()]).unwrap();
        let want: Vec<PathBuf> = ["z.PNG", "b/a.gif", "b/deeper/c.jpeg"]
            .iter()
            .map(|f| root.join(f))
            .chain([given])
            .collect();
        assert_eq!(got, want);
        let e = collect_images(&[root.join("empty")]).unwrap_err().to_string();
        assert!(e.contains("no images in this folder"), "{e}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
