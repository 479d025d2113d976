//! Putting a library into a plugins directory the way the host expects:
//! written under a hidden temporary name, made readable by all and writable
//! by its owner only, then renamed into place in one step, so that a running
//! host never sees a half-written file.

use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};

/// Copies `from` into `dir` as `name` by write-then-rename. Returns the
/// installed path, or `None` when `dir` already holds the same bytes under
/// that name (the host would not reload it anyway).
pub fn install_as(from: &Path, dir: &Path, name: &OsStr) -> Result<Option<PathBuf>> {
    let target = dir.join(name);
    let bytes = std::fs::read(from).with_context(|| format!("cannot read {}", from.display()))?;
    if std::fs::read(&target).is_ok_and(|old| old == bytes) {
        return Ok(None);
    }
    // Under a hidden name first, mode 0644 (the host refuses plugin files
    // that others than their owner may write), then renamed into place.
    Ok(Some(rohrpost_harness::install_bytes(&bytes, dir, name)?))
}

/// Copies `from` into `dir` under its own file name (see [`install_as`]) and
/// says so when it wrote it.
pub fn install(from: &Path, dir: &Path) -> Result<()> {
    let name = from.file_name().context("library without a file name")?;
    if let Some(target) = install_as(from, dir, name)? {
        eprintln!("installed {}", target.display());
    }
    Ok(())
}

/// Sets a file's or directory's permission bits.
pub fn set_mode(path: &Path, mode: u32) -> Result<()> {
    Ok(rohrpost_harness::set_mode(path, mode)?)
}

/// Creates the plugins directory, writable by its owner only.
pub fn plugins_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    set_mode(dir, 0o755)
}
