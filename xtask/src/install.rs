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
    // Hidden, and not ending in the library suffix: the host ignores it.
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = std::fs::write(&tmp, &bytes)
        .with_context(|| format!("cannot write {}", tmp.display()))
        // The host refuses plugin files that others than their owner may write.
        .and_then(|()| set_mode(&tmp, 0o644))
        .and_then(|()| {
            std::fs::rename(&tmp, &target)
                .with_context(|| format!("cannot rename into {}", target.display()))
        });
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map(|()| Some(target))
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
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot chmod {}", path.display()))
}

/// Creates the plugins directory, writable by its owner only.
pub fn plugins_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    set_mode(dir, 0o755)
}
