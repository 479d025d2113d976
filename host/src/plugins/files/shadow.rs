//! The private directory the plugin copies are loaded from.
//!
//! Each plugin version is loaded from a copy of its file (see `plugin`), and
//! whoever can change that copy between writing it and `dlopen` runs code
//! as the server. So the directory is never one that may already exist: it
//! is made fresh with `mkdir` (which fails if the name is taken) under an
//! unpredictable name, mode 0700, checked with `lstat` afterwards, in a
//! parent nobody else can rename it out of (`$XDG_RUNTIME_DIR` when it is
//! private to the server's user, else the temporary directory). Each copy is
//! created exclusively (`O_EXCL`, `O_NOFOLLOW`), mode 0600.
//!
//! While the server runs it holds an `flock` on a lock file inside; the
//! directory is removed on exit, and a directory of the server's user whose
//! lock nobody holds (a killed server's) is removed by the next start.

use std::{
    fs::{DirBuilder, File, OpenOptions},
    io::{self, Write},
    os::{
        fd::AsRawFd,
        unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt},
    },
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex, TryLockError,
    },
    time::{Duration, Instant},
};

use thiserror::Error;
use tracing::{debug, info, warn};

/// How the directories' names begin: the prefix, the server's pid, a dash
/// and a random suffix.
pub(crate) const PREFIX: &str = "rohrpost-shadow-";

/// The lock file inside the directory, locked while its server runs.
const LOCK: &str = "lock";

/// How long removing the directory waits for a load in progress.
const REMOVE_WAIT: Duration = Duration::from_secs(2);

/// Why the copies' directory or a copy could not be made.
#[derive(Debug, Error)]
pub(crate) enum ShadowError {
    #[error("refusing {path} for the plugin copies: {reason}")]
    Unsafe { path: PathBuf, reason: String },
    #[error("cannot create the plugin copies' directory in {parent}: {source}")]
    Create {
        parent: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write the plugin copy {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the plugin copies' directory is removed: the server is stopping")]
    Closed,
}

/// This server's directory of plugin copies; removed on drop.
pub(crate) struct ShadowDir {
    path: PathBuf,
    /// Holds the `flock` that tells other starts this directory is in use.
    _lock: File,
    next: AtomicU64,
    /// Whether the directory is still there. A copy holds the lock from its
    /// creation until it is loaded, so the directory is never removed (and
    /// its name never free for someone else) under a load.
    open: Mutex<bool>,
}

impl std::fmt::Debug for ShadowDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShadowDir")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl ShadowDir {
    /// Creates this process's directory in `$XDG_RUNTIME_DIR` when that is
    /// private to the server's user, else in the temporary directory, after
    /// removing this user's stale ones there.
    pub(crate) fn create() -> Result<Self, ShadowError> {
        let parent = match std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
            Some(runtime) => {
                let runtime = PathBuf::from(runtime);
                match check_runtime_dir(&runtime) {
                    Ok(()) => runtime,
                    Err(reason) => {
                        warn!(dir = %runtime.display(), %reason,
                            "not using XDG_RUNTIME_DIR for the plugin copies");
                        std::env::temp_dir()
                    }
                }
            }
            None => std::env::temp_dir(),
        };
        Self::create_in(&parent)
    }

    /// Creates this process's directory in `parent`.
    pub(crate) fn create_in(parent: &Path) -> Result<Self, ShadowError> {
        let parent = parent
            .canonicalize()
            .map_err(|source| ShadowError::Create {
                parent: parent.to_owned(),
                source,
            })?;
        check_ancestors(&parent)?;
        remove_stale(&parent);
        let path = make_dir(&parent)?;
        let lock = match lock_dir(&path) {
            Ok(lock) => lock,
            Err(source) => {
                let _ = std::fs::remove_dir_all(&path);
                return Err(ShadowError::Create { parent, source });
            }
        };
        info!(dir = %path.display(), "plugin copies go to a private directory");
        Ok(ShadowDir {
            path,
            _lock: lock,
            next: AtomicU64::new(1),
            open: Mutex::new(true),
        })
    }

    /// Writes `bytes` to a new file of the directory (named after `stem`,
    /// unique in this process), calls `load` with its path, and removes the
    /// file again: a loaded library's mapping outlives its file.
    pub(crate) fn with_copy<T>(
        &self,
        stem: &str,
        bytes: &[u8],
        load: impl FnOnce(&Path) -> T,
    ) -> Result<T, ShadowError> {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if !*open {
            return Err(ShadowError::Closed);
        }
        let (path, mut file) = loop {
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            let path = self
                .path
                .join(format!("{stem}-{n}.{}", std::env::consts::DLL_EXTENSION));
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
            {
                Ok(file) => break (path, file),
                // Only this process writes here; skip a name it used.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(source) => return Err(ShadowError::Write { path, source }),
            }
        };
        let written = file.write_all(bytes);
        drop(file);
        if let Err(source) = written {
            let _ = std::fs::remove_file(&path);
            return Err(ShadowError::Write { path, source });
        }
        let loaded = load(&path);
        let _ = std::fs::remove_file(&path);
        drop(open);
        Ok(loaded)
    }

    /// Removes the directory now (later copies fail). Waits a little for a
    /// load in progress; if it does not end, the directory stays and the
    /// next start removes it.
    pub(crate) fn remove(&self) {
        let deadline = Instant::now() + REMOVE_WAIT;
        let mut open = loop {
            match self.open.try_lock() {
                Ok(open) => break open,
                Err(TryLockError::Poisoned(p)) => break p.into_inner(),
                Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(TryLockError::WouldBlock) => {
                    warn!(dir = %self.path.display(),
                        "a plugin is still loading; its copies' directory is left for the next start to remove");
                    return;
                }
            }
        };
        if !std::mem::replace(&mut *open, false) {
            return;
        }
        match std::fs::remove_dir_all(&self.path) {
            Ok(()) => debug!(dir = %self.path.display(), "removed the plugin copies' directory"),
            Err(error) => {
                warn!(dir = %self.path.display(), %error, "cannot remove the plugin copies' directory")
            }
        }
    }
}

impl Drop for ShadowDir {
    fn drop(&mut self) {
        self.remove();
    }
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

/// `$XDG_RUNTIME_DIR` is used only when it is a directory of the server's
/// user that nobody else may write.
fn check_runtime_dir(dir: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(dir).map_err(|e| format!("cannot read it: {e}"))?;
    if !meta.is_dir() {
        return Err("not a directory".into());
    }
    if meta.uid() != euid() {
        return Err(format!(
            "owned by uid {}, not by the server's user (uid {})",
            meta.uid(),
            euid()
        ));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(format!("writable by group or others (mode {mode:04o})"));
    }
    Ok(())
}

/// Nobody but the server's user and root may rename or replace the parent
/// or anything on its way: each directory from `/` down is theirs, and not
/// writable by others unless sticky (like `/tmp`, where only an entry's
/// owner may rename it).
fn check_ancestors(parent: &Path) -> Result<(), ShadowError> {
    let me = euid();
    for dir in parent.ancestors() {
        let unsafe_dir = |reason: String| ShadowError::Unsafe {
            path: parent.to_owned(),
            reason,
        };
        let meta = std::fs::symlink_metadata(dir)
            .map_err(|e| unsafe_dir(format!("cannot read {}: {e}", dir.display())))?;
        if !meta.is_dir() {
            return Err(unsafe_dir(format!("{} is not a directory", dir.display())));
        }
        let owner = meta.uid();
        if owner != me && owner != 0 {
            return Err(unsafe_dir(format!(
                "{} is owned by uid {owner}, not by the server's user (uid {me}) or root",
                dir.display()
            )));
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o022 != 0 && mode & 0o1000 == 0 {
            return Err(unsafe_dir(format!(
                "{} is writable by group or others without the sticky bit (mode {mode:04o}); \
                 point TMPDIR or XDG_RUNTIME_DIR at a directory only the server's user can write",
                dir.display()
            )));
        }
    }
    Ok(())
}

/// Makes the directory with a name nobody can guess, failing rather than
/// reusing one that exists, and checks what was made.
fn make_dir(parent: &Path) -> Result<PathBuf, ShadowError> {
    let mut tries = 0;
    let path = loop {
        let name = format!(
            "{PREFIX}{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        );
        let path = parent.join(name);
        match DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => break path,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < 16 => tries += 1,
            Err(source) => {
                return Err(ShadowError::Create {
                    parent: parent.to_owned(),
                    source,
                })
            }
        }
    };
    // The umask may have taken bits away; set exactly 0700.
    let set = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700));
    let verdict = set
        .map_err(|e| format!("cannot set its mode: {e}"))
        .and_then(|()| check_made(&path));
    match verdict {
        Ok(()) => Ok(path),
        Err(reason) => {
            let _ = std::fs::remove_dir(&path);
            Err(ShadowError::Unsafe { path, reason })
        }
    }
}

/// What `mkdir` made is a real directory of the server's user, mode 0700.
fn check_made(path: &Path) -> Result<(), String> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| format!("cannot read it: {e}"))?;
    if meta.file_type().is_symlink() || !meta.is_dir() {
        return Err("it is not a directory".into());
    }
    if meta.uid() != euid() {
        return Err(format!(
            "it is owned by uid {}, not by the server's user (uid {})",
            meta.uid(),
            euid()
        ));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode != 0o700 {
        return Err(format!("its mode is {mode:04o}, not 0700"));
    }
    Ok(())
}

/// Creates the lock file locked: under another name first, renamed once
/// locked, so another start never finds it unlocked while this one runs.
fn lock_dir(dir: &Path) -> io::Result<File> {
    let fresh = dir.join(format!("{LOCK}.new"));
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&fresh)?;
    if !try_flock(&file)? {
        return Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            "the new lock file is locked by someone else",
        ));
    }
    std::fs::rename(&fresh, dir.join(LOCK))?;
    Ok(file)
}

/// Takes an exclusive `flock` without waiting; false if someone holds it.
fn try_flock(file: &File) -> io::Result<bool> {
    // SAFETY: flock on a descriptor this function borrows.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let error = io::Error::last_os_error();
    if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(error)
    }
}

/// Removes the directories in `parent` left by this user's servers that are
/// gone. Only real directories (not symlinks) named with the prefix and
/// owned by the server's user are looked at; one is stale when nobody holds
/// its lock, or (made by an older server, without a lock file) when the
/// process its name gives is gone.
fn remove_stale(parent: &Path) {
    let entries = match std::fs::read_dir(parent) {
        Ok(entries) => entries,
        Err(error) => {
            warn!(dir = %parent.display(), %error, "cannot look for stale plugin copies' directories");
            return;
        }
    };
    let me = euid();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
            continue;
        };
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.file_type().is_symlink() || !meta.is_dir() || meta.uid() != me {
            continue;
        }
        // Held while removing, so no other start takes the directory for
        // its own.
        let _lock = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path.join(LOCK))
        {
            Ok(lock) => match try_flock(&lock) {
                Ok(true) => Some(lock),
                Ok(false) | Err(_) => continue,
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if !process_gone(rest) {
                    continue;
                }
                None
            }
            Err(_) => continue,
        };
        match std::fs::remove_dir_all(&path) {
            Ok(()) => info!(dir = %path.display(),
                "removed the plugin copies' directory of a server that is gone"),
            Err(error) => warn!(dir = %path.display(), %error,
                "cannot remove a stale plugin copies' directory"),
        }
    }
}

/// Whether the process whose pid begins `rest` (`<pid>` or
/// `<pid>-<suffix>`) certainly no longer exists.
fn process_gone(rest: &str) -> bool {
    let digits = rest.split('-').next().unwrap_or_default();
    let Ok(pid) = digits.parse::<libc::pid_t>() else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists.
    let alive = unsafe { libc::kill(pid, 0) } == 0;
    !alive && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pid_that_does_not_parse_is_not_gone() {
        assert!(!process_gone("abc"));
        assert!(!process_gone("0-1"));
        assert!(!process_gone(""));
        assert!(!process_gone(&format!("{}-x", std::process::id())));
    }
}
