//! `cargo xtask dev PLUGIN_DIR [--plugins DIR] [--target-dir DIR] [--debug]
//! [--once]`: the edit-save-reload loop of a plugin author.
//!
//! Builds the plugin crate, installs its library into the plugins directory
//! (write, then rename: a running host loads it within its reload debounce),
//! then watches the crate's `Cargo.toml`, `build.rs` and `src/` and does it
//! again after every change. A build that fails prints cargo's diagnostics
//! and installs nothing, so the host keeps serving the version before.
//! Ctrl-C stops it.

use std::{
    hash::{DefaultHasher, Hash, Hasher},
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::Stdio,
    sync::mpsc::{self, RecvTimeoutError},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use notify::{
    event::{AccessKind, AccessMode, CreateKind},
    Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher,
};
use serde_json::Value;

use crate::{
    args::Args,
    cargo,
    install::{install_as, plugins_dir},
    root, shown,
};

const USAGE: &str =
    "usage: cargo xtask dev PLUGIN_DIR [--plugins DIR] [--target-dir DIR] [--debug] [--once]";

/// How long the sources must be quiet before a rebuild: an editor's save is
/// often several writes and renames.
const DEBOUNCE: Duration = Duration::from_millis(300);

pub fn main(args: &[String]) -> Result<()> {
    let args = Args::parse(args, &["plugins", "target-dir"], &["debug", "once"])?;
    let [dir] = args.positional.as_slice() else {
        bail!("{USAGE}");
    };
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let crate_dir = cwd
        .join(dir)
        .canonicalize()
        .with_context(|| format!("cannot find the plugin crate {dir}"))?;
    let manifest = crate_dir.join("Cargo.toml");
    if !manifest.is_file() {
        bail!("{dir} is not a crate: it has no Cargo.toml");
    }
    let plugins = args
        .option("plugins")
        .map_or_else(|| root().join("plugins.d"), |p| cwd.join(p));
    let target_dir = args.option("target-dir").map(|t| cwd.join(t));
    if !plugins.is_dir() {
        plugins_dir(&plugins)?;
    }
    let name = package_name(&manifest)?;
    let dev = Dev {
        name,
        cwd,
        crate_dir,
        manifest,
        plugins,
        target_dir,
        release: !args.flag("debug"),
    };

    if args.flag("once") {
        return match dev.build_and_install(false)? {
            true => Ok(()),
            false => bail!("the build failed"),
        };
    }
    dev.watch()
}

struct Dev {
    /// The package's name.
    name: String,
    /// Where paths in messages are relative to.
    cwd: PathBuf,
    crate_dir: PathBuf,
    /// The crate's `Cargo.toml`, canonical.
    manifest: PathBuf,
    plugins: PathBuf,
    target_dir: Option<PathBuf>,
    release: bool,
}

impl Dev {
    /// Builds and installs once, then after every change until stopped.
    fn watch(&self) -> Result<()> {
        // Watch before the first build, so that a save during it counts.
        let (tx, rx) = mpsc::channel();
        let mut watcher = notify::recommended_watcher(tx).context("cannot watch files")?;
        watcher
            .watch(&self.crate_dir, RecursiveMode::NonRecursive)
            .with_context(|| format!("cannot watch {}", self.crate_dir.display()))?;
        self.watch_src(&mut watcher);

        let mut built = fingerprint(&self.crate_dir);
        if let Err(e) = self.build_and_install(false) {
            eprintln!("error: {e:#}");
        }
        eprintln!(
            "watching {} (Cargo.toml, src/); Ctrl-C stops",
            shown(&self.crate_dir, &self.cwd)
        );
        loop {
            let event = rx.recv().context("the file watcher stopped")?;
            if !self.relevant(event, &mut watcher) {
                continue;
            }
            // Wait until the sources have been quiet for DEBOUNCE.
            let mut quiet_at = Instant::now() + DEBOUNCE;
            loop {
                let left = quiet_at.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(event) => {
                        if self.relevant(event, &mut watcher) {
                            quiet_at = Instant::now() + DEBOUNCE;
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => bail!("the file watcher stopped"),
                }
            }
            // Events also come from reads (the last build) and from saves
            // that changed nothing: build only when the sources differ.
            let now = fingerprint(&self.crate_dir);
            if now == built {
                continue;
            }
            built = now;
            if let Err(e) = self.build_and_install(true) {
                eprintln!("error: {e:#}");
            }
        }
    }

    fn watch_src(&self, watcher: &mut RecommendedWatcher) {
        let src = self.crate_dir.join("src");
        if src.is_dir() {
            if let Err(e) = watcher.watch(&src, RecursiveMode::Recursive) {
                eprintln!("warning: cannot watch {}: {e}", src.display());
            }
        }
    }

    /// Whether `event` may have changed the sources. A `src/` created anew
    /// is watched again.
    fn relevant(&self, event: notify::Result<Event>, watcher: &mut RecommendedWatcher) -> bool {
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                eprintln!("warning: file watcher: {e}");
                return false;
            }
        };
        let src = self.crate_dir.join("src");
        if matches!(
            event.kind,
            EventKind::Create(CreateKind::Folder | CreateKind::Any)
        ) && event.paths.contains(&src)
        {
            self.watch_src(watcher);
        }
        let mutation = match event.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
            EventKind::Access(_) => false,
            _ => true,
        };
        mutation
            && event.paths.iter().any(|p| {
                p.starts_with(&src) || *p == self.manifest || *p == self.crate_dir.join("build.rs")
            })
    }

    /// Builds the crate and installs its library. `Ok(false)`: the build
    /// failed (cargo has shown why) and nothing was installed.
    fn build_and_install(&self, quiet: bool) -> Result<bool> {
        let start = Instant::now();
        let Some(library) = self.build(quiet)? else {
            eprintln!(
                "build failed ({} ms); the version installed before keeps serving",
                start.elapsed().as_millis()
            );
            return Ok(false);
        };
        let file = library.file_name().context("library without a file name")?;
        let installed = install_as(&library, &self.plugins, file)?;
        let ms = start.elapsed().as_millis();
        let name = &self.name;
        match installed {
            Some(path) => eprintln!("installed {name} ({ms} ms): {}", shown(&path, &self.cwd)),
            None => eprintln!(
                "{name} unchanged ({ms} ms): {} is already this build",
                shown(&self.plugins.join(file), &self.cwd)
            ),
        }
        Ok(true)
    }

    /// Runs `cargo build`; the crate's library, or `None` when the build
    /// failed.
    fn build(&self, quiet: bool) -> Result<Option<PathBuf>> {
        let mut cmd = cargo();
        // The crate's own directory, so that cargo reads the crate's own
        // configuration, as when its author runs cargo there.
        cmd.current_dir(&self.crate_dir)
            .args(["build", "--message-format=json-render-diagnostics"])
            .arg("--manifest-path")
            .arg(&self.manifest);
        if self.release {
            cmd.arg("--release");
        }
        if quiet {
            cmd.arg("--quiet");
        }
        if let Some(dir) = &self.target_dir {
            cmd.arg("--target-dir").arg(dir);
        }
        // Diagnostics go to the terminal as usual; the machine-readable
        // messages (which name the files built) come on standard output.
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot run cargo")?;
        let stdout = child.stdout.take().context("no output from cargo")?;
        let mut artifact = None;
        for line in BufReader::new(stdout).lines() {
            let line = line.context("cannot read cargo's output")?;
            if let Some(found) = self.library_in(&line) {
                artifact = Some(found);
            }
        }
        let status = child.wait().context("cannot wait for cargo")?;
        if !status.success() {
            return Ok(None);
        }
        artifact.map(Some).with_context(|| {
            format!(
                "{} builds no plugin library: its [lib] needs crate-type = [\"cdylib\"]",
                self.manifest.display()
            )
        })
    }

    /// The crate's shared library, if `line` is cargo's message about it.
    fn library_in(&self, line: &str) -> Option<PathBuf> {
        let message: Value = serde_json::from_str(line).ok()?;
        if message["reason"] != "compiler-artifact" {
            return None;
        }
        let manifest = Path::new(message["manifest_path"].as_str()?);
        if manifest != self.manifest && manifest.canonicalize().ok()? != self.manifest {
            return None;
        }
        if !message["target"]["crate_types"]
            .as_array()?
            .iter()
            .any(|t| t == "cdylib")
        {
            return None;
        }
        message["filenames"]
            .as_array()?
            .iter()
            .filter_map(Value::as_str)
            .find(|f| f.ends_with(std::env::consts::DLL_SUFFIX))
            .map(PathBuf::from)
    }
}

/// The name of the package whose manifest is `manifest` (canonical).
fn package_name(manifest: &Path) -> Result<String> {
    let output = cargo()
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--manifest-path",
        ])
        .arg(manifest)
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run cargo metadata")?;
    if !output.status.success() {
        bail!("cargo cannot read {}", manifest.display());
    }
    let metadata: Value =
        serde_json::from_slice(&output.stdout).context("cannot parse cargo metadata")?;
    metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| {
            p["manifest_path"]
                .as_str()
                .and_then(|m| Path::new(m).canonicalize().ok())
                .is_some_and(|m| m == manifest)
        })
        .and_then(|p| p["name"].as_str())
        .map(str::to_owned)
        .with_context(|| format!("{} has no [package]", manifest.display()))
}

/// A hash of everything the watcher watches: `Cargo.toml`, `build.rs` and
/// every file under `src/`, names and contents.
fn fingerprint(crate_dir: &Path) -> u64 {
    let mut files = vec![crate_dir.join("Cargo.toml"), crate_dir.join("build.rs")];
    collect_files(&crate_dir.join("src"), &mut files);
    files.sort();
    let mut hasher = DefaultHasher::new();
    for file in files {
        file.hash(&mut hasher);
        std::fs::read(&file).ok().hash(&mut hasher);
    }
    hasher.finish()
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => collect_files(&path, out),
            Ok(_) => out.push(path),
            Err(_) => {}
        }
    }
}
