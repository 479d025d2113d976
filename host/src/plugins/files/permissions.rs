//! Who may put code into this process: the plugins directory and its files
//! must be writable only by the server's user (or root), as OpenSSH's
//! `StrictModes` demands of `authorized_keys`. Otherwise any user who can
//! write there runs code as the server. A symlink may point only inside the
//! directory.

use std::{
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::Path,
};

/// Checks the plugins directory itself.
pub(crate) fn check_dir(dir: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(dir)
        .map_err(|e| format!("cannot read the plugins directory {}: {e}", dir.display()))?;
    check_owner_and_mode(&meta, "the plugins directory")
}

/// Checks one plugin file of `dir` (canonical): where it leads, its owner
/// and its mode.
pub(crate) fn check_file(path: &Path, dir: &Path) -> Result<(), String> {
    let link = std::fs::symlink_metadata(path).map_err(|e| format!("cannot read it: {e}"))?;
    if link.file_type().is_symlink() {
        let target = path
            .canonicalize()
            .map_err(|e| format!("a symlink that cannot be followed: {e}"))?;
        if target.parent() != Some(dir) {
            return Err(format!(
                "a symlink leading out of the plugins directory (to {})",
                target.display()
            ));
        }
    }
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read it: {e}"))?;
    check_owner_and_mode(&meta, "the file")
}

fn check_owner_and_mode(meta: &std::fs::Metadata, what: &str) -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let owner = meta.uid();
    if owner != me && owner != 0 {
        return Err(format!(
            "{what} is owned by uid {owner}, not by the server's user (uid {me}) or root"
        ));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(format!(
            "{what} is writable by group or others (mode {mode:04o}); allow writing only to its owner, e.g. chmod go-w"
        ));
    }
    Ok(())
}
