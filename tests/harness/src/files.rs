//! Files the host is given, with the modes it demands whatever the umask:
//! with strict modes on, the host refuses a plugins directory or a plugin
//! file that group or others may write, and a file copied or a directory
//! made under umask 002 is just that.

use std::{
    ffi::OsStr,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use crate::error::{Error, Result};

/// The mode of an installed plugin: readable by all, writable by its owner.
pub const PLUGIN_MODE: u32 = 0o644;

/// The mode of a temp dir: its owner's alone.
const PRIVATE_DIR_MODE: u32 = 0o700;

/// The permissions of an installed plugin, for callers that write the file
/// themselves (e.g. with `tokio::fs`).
pub fn plugin_permissions() -> std::fs::Permissions {
    std::fs::Permissions::from_mode(PLUGIN_MODE)
}

/// Sets a file's or directory's permission bits.
pub fn set_mode(path: &Path, mode: u32) -> Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(Error::file("chmod", path))
}

/// A fresh, empty directory only its owner may enter (mode 0700), removed on
/// drop; named `rohrpost-<label>-<pid>-<n>` in the system's temp dir.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> Result<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "rohrpost-{label}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).map_err(Error::file("create", &path))?;
        let dir = TempDir(path);
        set_mode(dir.path(), PRIVATE_DIR_MODE)?;
        Ok(dir)
    }

    /// A directory `name` inside, with the same mode.
    pub fn subdir(&self, name: &str) -> Result<PathBuf> {
        let path = self.0.join(name);
        std::fs::create_dir_all(&path).map_err(Error::file("create", &path))?;
        set_mode(&path, PRIVATE_DIR_MODE)?;
        Ok(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Copies `from` into `dir` under its own file name; see [`install_as`].
pub fn install(from: &Path, dir: &Path) -> Result<PathBuf> {
    let name = from.file_name().ok_or_else(|| Error::File {
        action: "install",
        path: from.to_owned(),
        error: std::io::Error::new(std::io::ErrorKind::InvalidInput, "no file name"),
    })?;
    install_as(from, dir, name)
}

/// Copies `from` into `dir` as `name` the way deployments should: under a
/// hidden temporary name (which the host ignores), given [`PLUGIN_MODE`],
/// then renamed into place in one step, so that a running host never sees a
/// half-written file or one it would refuse. Returns the installed path.
pub fn install_as(from: &Path, dir: &Path, name: &OsStr) -> Result<PathBuf> {
    let tmp = temporary(dir, name);
    let copied = std::fs::copy(from, &tmp)
        .map(drop)
        .map_err(Error::file("copy a plugin to", &tmp));
    finish(copied, &tmp, dir, name)
}

/// Like [`install_as`], for bytes in memory.
pub fn install_bytes(bytes: &[u8], dir: &Path, name: &OsStr) -> Result<PathBuf> {
    let tmp = temporary(dir, name);
    let written = std::fs::write(&tmp, bytes).map_err(Error::file("write", &tmp));
    finish(written, &tmp, dir, name)
}

/// Hidden, and not ending in the library suffix; one per process, so that
/// concurrent installers do not write into each other's file.
fn temporary(dir: &Path, name: &OsStr) -> PathBuf {
    dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ))
}

fn finish(written: Result<()>, tmp: &Path, dir: &Path, name: &OsStr) -> Result<PathBuf> {
    let target = dir.join(name);
    let done = written
        .and_then(|()| set_mode(tmp, PLUGIN_MODE))
        .and_then(|()| {
            std::fs::rename(tmp, &target).map_err(Error::file("rename into place", &target))
        });
    if done.is_err() {
        let _ = std::fs::remove_file(tmp);
    }
    done.map(|()| target)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
    }

    #[test]
    fn modes_hold_under_a_loose_umask() {
        // SAFETY: umask has no preconditions; this test binary's other
        // tests do not depend on it.
        let old = unsafe { libc::umask(0o002) };
        let dir = TempDir::new("harness-unit").expect("temp dir");
        let source = dir.path().join("source");
        std::fs::write(&source, b"library").expect("write");
        set_mode(&source, 0o775).expect("chmod");
        let copied = install_as(&source, dir.path(), OsStr::new("libx.so")).expect("install");
        let written =
            install_bytes(b"library", dir.path(), OsStr::new("liby.so")).expect("install");
        let sub = dir.subdir("plugins").expect("subdir");
        // SAFETY: as above.
        unsafe { libc::umask(old) };
        assert_eq!(mode(dir.path()), 0o700);
        assert_eq!(mode(&sub), 0o700);
        assert_eq!(mode(&copied), 0o644);
        assert_eq!(mode(&written), 0o644);
        assert_eq!(std::fs::read(&copied).expect("read"), b"library");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(left.is_empty(), "temporary files left: {left:?}");
    }
}
