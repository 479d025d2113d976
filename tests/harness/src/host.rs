//! The host (`rohrpost`) as a child process with a plugins directory and a
//! temp dir of its own: both private, so that strict modes accept them
//! under any umask, and removed after it.

use std::{path::Path, process::Command};

use crate::{
    error::{Error, Result},
    files::{install, set_mode, TempDir},
    process::{Process, Watch},
};

/// What to start.
#[derive(Debug, Clone, Copy)]
pub struct HostSpec<'a> {
    /// The `rohrpost` binary.
    pub binary: &'a Path,
    /// Libraries installed into its plugins directory before it starts.
    pub libraries: &'a [&'a Path],
    /// Its flags after `--listen 127.0.0.1:0 --plugins DIR`.
    pub args: &'a [&'a str],
    /// Environment variables after `ROHRPOST_LOG`, `TMPDIR` and
    /// `XDG_RUNTIME_DIR`, which they may override.
    pub env: &'a [(&'a str, &'a str)],
    /// Its log filter (`ROHRPOST_LOG`); it must let the `listening` line
    /// of `rohrpost_host::server` through.
    pub log: &'a str,
    /// Names its temp dirs, `rohrpost-<label>-plugins-...`.
    pub label: &'a str,
    /// Run by root, the host runs as this user and group (ids): its
    /// directories and binary are made reachable to it.
    pub user: Option<(u32, u32)>,
}

/// A running host. Dropping it kills the process, then removes its
/// directories.
#[derive(Debug)]
pub struct Host {
    pub process: Process,
    /// Its plugins directory.
    pub plugins: TempDir,
    /// Its temp dir (`TMPDIR`), where it keeps the private copies of the
    /// libraries it loads.
    pub work: TempDir,
    /// Where its binary was put for another user, if it runs as one.
    pub bin: Option<TempDir>,
}

/// Starts a host on a free port of 127.0.0.1 and waits until it listens.
pub fn start_host(spec: &HostSpec<'_>, watch: Watch) -> Result<Host> {
    let plugins = TempDir::new(&format!("{}-plugins", spec.label))?;
    for library in spec.libraries {
        install(library, plugins.path())?;
    }
    let work = TempDir::new(&format!("{}-work", spec.label))?;
    let mut bin = None;
    let mut binary = spec.binary.to_owned();
    let mut watch = watch;
    if let Some((uid, gid)) = spec.user {
        // Root's private directories, opened to the host's user: the
        // plugins directory to read, the temp dir its own.
        set_mode(plugins.path(), 0o755)?;
        std::os::unix::fs::chown(work.path(), Some(uid), Some(gid))
            .map_err(Error::file("chown", work.path()))?;
        let dir = TempDir::new(&format!("{}-bin", spec.label))?;
        set_mode(dir.path(), 0o755)?;
        binary = dir.path().join("rohrpost");
        if std::fs::hard_link(spec.binary, &binary).is_err() {
            std::fs::copy(spec.binary, &binary).map_err(Error::file("copy", &binary))?;
        }
        bin = Some(dir);
        watch = watch.run_as(uid, gid);
    }
    let mut command = Command::new(&binary);
    command
        .args(["--listen", "127.0.0.1:0", "--plugins"])
        .arg(plugins.path())
        .args(spec.args)
        .env("ROHRPOST_LOG", spec.log)
        // The private copies go with this host's own temp dir, not into
        // the user's runtime dir.
        .env("TMPDIR", work.path())
        .env("XDG_RUNTIME_DIR", "")
        .envs(spec.env.iter().copied());
    let process = Process::spawn(&mut command, watch)?;
    Ok(Host {
        process,
        plugins,
        work,
        bin,
    })
}
