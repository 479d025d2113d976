//! The servers under test, run as child processes: the host with a fresh
//! plugins directory, or the baseline. Each is started fresh for one
//! measurement and stopped after it, so no run inherits another's state.
//! Starting, installing plugins, temp dirs and `/proc` readings come from
//! `rohrpost-harness`, which the end-to-end tests share.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{anyhow, bail, Context, Result};
pub use rohrpost_harness::{CpuMeter, CpuUse, TempDir};
use rohrpost_harness::{Echo, Ended, HostSpec, Pid, Process, Watch};

/// Log filter for the host: warnings, plus the `listening` line (the
/// host's log targets are its module paths).
pub const HOST_LOG: &str = "warn,rohrpost_host::server=info";

/// [`HOST_LOG`] plus the watcher's plugin events (`event="replaced"`, ...).
pub const HOST_LOG_WITH_WATCHER: &str =
    "warn,rohrpost_host::server=info,rohrpost_host::plugins::watcher=info";

/// The WebSocket path both servers serve.
const WS_PATH: &str = "/ws/rohrpost/";

/// How long a server may take to stop after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// The programs and plugin libraries the benchmarks run.
#[derive(Debug, Clone)]
pub struct Artifacts {
    pub host: PathBuf,
    pub baseline: PathBuf,
    /// The yardstick (`bench/yardstick`, a workspace of its own).
    pub yardstick: PathBuf,
    /// A reference server to measure next to the yardstick (`--port P
    /// --threads N`, serving `/ws/rohrpost/`), when given: the one the
    /// yardstick is checked against.
    pub reference: Option<PathBuf>,
    pub fanout_baseline: PathBuf,
    pub ping_lib: PathBuf,
    pub pool_lib: PathBuf,
    pub subscriptions_lib: PathBuf,
    pub proxy_lib: PathBuf,
}

impl Artifacts {
    /// Fails with a clear message when a file is missing.
    pub fn check(&self) -> Result<()> {
        for (flag, path) in [
            ("--host-bin", &self.host),
            ("--baseline-bin", &self.baseline),
            ("--yardstick-bin", &self.yardstick),
            ("--fanout-baseline-bin", &self.fanout_baseline),
            ("--ping-lib", &self.ping_lib),
            ("--pool-lib", &self.pool_lib),
            ("--subscriptions-lib", &self.subscriptions_lib),
            ("--proxy-lib", &self.proxy_lib),
        ]
        .into_iter()
        .chain(self.reference.iter().map(|path| ("--reference-bin", path)))
        {
            if !path.is_file() {
                bail!(
                    "{} does not exist (set it with {flag}; build with `cargo build --release \
                     -p rohrpost-bench -p rohrpost-host -p ping -p fixture-testkit \
                     -p subscriptions -p proxy`)",
                    path.display()
                );
            }
        }
        Ok(())
    }
}

/// What to start.
#[derive(Clone, Copy)]
pub enum Spec<'a> {
    /// `baseline-ping` with these further flags.
    Baseline { args: &'a [&'a str] },
    /// The yardstick with these further flags.
    Yardstick { args: &'a [&'a str] },
    /// The reference server (see [`Artifacts::reference`]) with this many
    /// runtime threads.
    Reference { threads: &'a str },
    /// The floor of the fan-out benchmark (`baseline-fanout`).
    FanoutBaseline,
    /// The host with copies of these libraries in its plugins directory,
    /// logging with this filter, with these further flags.
    Host {
        libraries: &'a [&'a Path],
        log: &'a str,
        args: &'a [&'a str],
    },
}

/// A running server process.
pub struct Server {
    pub name: String,
    /// First, so that it is killed before its directories go.
    process: Process,
    /// The host's plugins directory and temp dir.
    dirs: Option<(TempDir, TempDir)>,
    /// The host's config file, when the benchmark gave none.
    _config: Option<TempDir>,
}

/// The config of a host whose benchmark gives none: the plugins measured
/// run in the server's own process (`isolation = "none"`), as the
/// numbers in `docs/benchmarks.md` were measured.
const IN_PROCESS: &str = "\
[plugins.ping]
isolation = \"none\"

[plugins.subscriptions]
isolation = \"none\"
auth = \"off\"

[plugins.testkit]
isolation = \"none\"
library = \"libfixture_testkit.so\"
";

impl Server {
    /// Starts a server and waits until it listens. Lines of its stderr
    /// containing `count` (if given) are counted, see [`Server::counted`].
    pub fn start(
        name: &str,
        artifacts: &Artifacts,
        spec: Spec<'_>,
        count: Option<&str>,
    ) -> Result<Server> {
        let mut watch = Watch::new(name).echo(Echo::Problems);
        if let Some(text) = count {
            watch = watch.count(text);
        }
        let mut config_dir = None;
        let (process, dirs) = match spec {
            Spec::Baseline { args } => {
                let mut command = Command::new(&artifacts.baseline);
                command
                    .args(["--listen", "127.0.0.1:0", "--ws-path", WS_PATH])
                    .args(args);
                (Process::spawn(&mut command, watch)?, None)
            }
            Spec::Yardstick { args } => {
                let mut command = Command::new(&artifacts.yardstick);
                command
                    .args(["--listen", "127.0.0.1:0", "--ws-path", WS_PATH])
                    .args(args);
                (Process::spawn(&mut command, watch)?, None)
            }
            Spec::Reference { threads } => {
                let Some(reference) = &artifacts.reference else {
                    bail!("no reference server was given (--reference-bin)");
                };
                let port = free_port()?.to_string();
                let mut command = Command::new(reference);
                command.args(["--port", port.as_str(), "--threads", threads]);
                (Process::spawn(&mut command, watch)?, None)
            }
            Spec::FanoutBaseline => {
                let mut command = Command::new(&artifacts.fanout_baseline);
                command.args(["--listen", "127.0.0.1:0", "--ws-path", WS_PATH]);
                (Process::spawn(&mut command, watch)?, None)
            }
            Spec::Host {
                libraries,
                log,
                args,
            } => {
                let mut all = vec!["--ws-path", WS_PATH];
                all.extend_from_slice(args);
                let config_file;
                if !args.contains(&"--config") {
                    let dir = TempDir::new("bench-config")?;
                    let file = dir.path().join("rohrpost.toml");
                    std::fs::write(&file, IN_PROCESS)
                        .with_context(|| format!("cannot write {}", file.display()))?;
                    config_file = file.display().to_string();
                    all.extend_from_slice(&["--config", &config_file]);
                    config_dir = Some(dir);
                }
                let spec = HostSpec {
                    binary: &artifacts.host,
                    libraries,
                    args: &all,
                    env: &[],
                    log,
                    label: "bench",
                    user: None,
                };
                let host = rohrpost_harness::start_host(&spec, watch)?;
                (host.process, Some((host.plugins, host.work)))
            }
        };
        Ok(Server {
            name: name.to_owned(),
            process,
            dirs,
            _config: config_dir,
        })
    }

    /// The address it listens on (`host:port`).
    pub fn addr(&self) -> &str {
        self.process.addr()
    }

    /// The WebSocket URL of the rohrpost endpoint.
    pub fn url(&self) -> String {
        format!("ws://{}{WS_PATH}", self.addr())
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The host's plugins directory.
    pub fn plugins_dir(&self) -> Result<&Path> {
        self.dirs
            .as_ref()
            .map(|(plugins, _)| plugins.path())
            .ok_or_else(|| anyhow!("{} has no plugins directory", self.name))
    }

    /// How many stderr lines contained the text given at start.
    pub fn counted(&self) -> usize {
        self.process.counted()
    }

    /// Fails when the process is gone.
    pub fn check_running(&mut self) -> Result<()> {
        Ok(self.process.check_running()?)
    }

    /// Asks the server to stop (SIGTERM), then kills it after a grace
    /// period.
    pub fn stop(mut self) -> Result<()> {
        if self.process.stop(STOP_GRACE)? == Ended::Killed {
            eprintln!(
                "  {} did not stop within {STOP_GRACE:?}; killed it",
                self.name
            );
        }
        Ok(())
    }
}

impl Pid for Server {
    fn pid(&self) -> u32 {
        self.process.pid()
    }
}

/// Resident memory of a process in KiB, from `/proc/<pid>/status`.
pub fn rss_kib(pid: u32) -> Result<u64> {
    Ok(rohrpost_harness::status_kib(pid, "VmRSS")?)
}

/// File descriptors a process needs besides its connections.
const SPARE_FDS: u64 = 100;

/// Fails when `open_files` (this process's limit, which the servers
/// inherit) is too low for `connections` sockets; `flag` names the setting
/// that asks for them.
pub fn check_open_files(connections: usize, flag: &str, open_files: u64) -> Result<()> {
    if connections == 0 {
        bail!("{flag} must be at least 1");
    }
    let needed = connections as u64 + SPARE_FDS;
    if open_files < needed {
        bail!(
            "{connections} connections need at least {needed} open files per process, but the \
             limit is {open_files} even after raising it to the hard limit; raise the hard \
             limit (ulimit -Hn) or use a smaller {flag}"
        );
    }
    Ok(())
}

/// Raises this process's soft limit of open files to its hard limit and
/// returns the new soft limit. Children started afterwards inherit it.
pub fn raise_open_files_limit() -> Result<u64> {
    Ok(rohrpost_harness::raise_open_files_limit()?)
}

/// A TCP port free on 127.0.0.1 a moment ago, for a server that takes its
/// port as a flag (daphne, gunicorn).
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}
