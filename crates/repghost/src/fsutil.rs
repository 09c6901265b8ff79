//! Crash-safe output: every file is written to a temporary sibling and renamed into place,
//! so an interrupted run never leaves a half-written file under the final name.

use std::io::Write;
use std::path::Path;

use crate::error::{Error, Result};

pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| Error::Invalid(format!("{}: not a file path", path.display())))?;
    let tmp = dir.join(format!(".{}.tmp-{}", name.to_string_lossy(), std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        fault_point(path, &mut f, bytes)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

/// Fault injection for the crash-safety tests: when `REPGHOST_FAULT_WRITE` is set and the
/// destination's file name contains its value, half the bytes are written and synced, then
/// the process aborts, as a kill or a power cut mid-write would leave things.
fn fault_point(path: &Path, f: &mut std::fs::File, bytes: &[u8]) -> std::io::Result<()> {
    let Ok(pattern) = std::env::var("REPGHOST_FAULT_WRITE") else {
        return Ok(());
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !pattern.is_empty() && name.contains(&pattern) {
        f.write_all(&bytes[..bytes.len() / 2])?;
        f.sync_all()?;
        std::process::abort();
    }
    Ok(())
}
