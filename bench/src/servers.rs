//! The servers under test, run as child processes: the host with a fresh
//! plugins directory, or the baseline. Each is started fresh for one
//! measurement and stopped after it, so no run inherits another's state.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context, Result};

/// Log filter for the host: warnings, plus the `listening` line (the
/// host's log targets are its module paths).
pub const HOST_LOG: &str = "warn,rohrpost_host::server=info";

/// [`HOST_LOG`] plus the watcher's plugin events (`event="replaced"`, ...).
pub const HOST_LOG_WITH_WATCHER: &str =
    "warn,rohrpost_host::server=info,rohrpost_host::watcher=info";

/// The WebSocket path both servers serve.
const WS_PATH: &str = "/ws/rohrpost/";

/// How long a server may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The programs and plugin libraries the benchmarks run.
#[derive(Debug, Clone)]
pub struct Artifacts {
    pub host: PathBuf,
    pub baseline: PathBuf,
    pub fanout_baseline: PathBuf,
    pub ping_lib: PathBuf,
    pub pool_lib: PathBuf,
    pub subscriptions_lib: PathBuf,
}

impl Artifacts {
    /// Fails with a clear message when a file is missing.
    pub fn check(&self) -> Result<()> {
        for (flag, path) in [
            ("--host-bin", &self.host),
            ("--baseline-bin", &self.baseline),
            ("--fanout-baseline-bin", &self.fanout_baseline),
            ("--ping-lib", &self.ping_lib),
            ("--pool-lib", &self.pool_lib),
            ("--subscriptions-lib", &self.subscriptions_lib),
        ] {
            if !path.is_file() {
                bail!(
                    "{} does not exist (set it with {flag}; build with `cargo build --release \
                     -p rohrpost-bench -p rohrpost-host -p ping -p fixture-testkit \
                     -p subscriptions`)",
                    path.display()
                );
            }
        }
        Ok(())
    }
}

/// A fresh, empty directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> Result<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "rohrpost-bench-{label}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(TempDir(path))
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

/// What to start.
#[derive(Clone, Copy)]
pub enum Spec<'a> {
    /// `baseline-ping` with these further flags.
    Baseline { args: &'a [&'a str] },
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
    child: Child,
    addr: String,
    plugins: Option<PathBuf>,
    /// Lines of its stderr that contained [`Server::count_lines`]'s text.
    counted: Arc<AtomicUsize>,
    /// Holds the plugins directory and the host's own temp files.
    _work: TempDir,
}

impl Server {
    /// Starts a server and waits until it listens. Lines of its stderr
    /// containing `count` (if given) are counted, see [`Server::counted`].
    pub fn start(
        name: &str,
        artifacts: &Artifacts,
        spec: Spec<'_>,
        count: Option<&str>,
    ) -> Result<Server> {
        let work = TempDir::new(name)?;
        let mut command;
        let mut plugins = None;
        match spec {
            Spec::Baseline { args } => {
                command = Command::new(&artifacts.baseline);
                command
                    .args(["--listen", "127.0.0.1:0", "--ws-path", WS_PATH])
                    .args(args);
            }
            Spec::FanoutBaseline => {
                command = Command::new(&artifacts.fanout_baseline);
                command.args(["--listen", "127.0.0.1:0", "--ws-path", WS_PATH]);
            }
            Spec::Host {
                libraries,
                log,
                args,
            } => {
                let dir = work.path().join("plugins");
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                for library in libraries {
                    install(library, &dir)?;
                }
                // The host keeps shadow copies of loaded libraries in the
                // temp dir; point it at ours so that they go with it.
                let tmp = work.path().join("tmp");
                std::fs::create_dir_all(&tmp)
                    .with_context(|| format!("cannot create {}", tmp.display()))?;
                command = Command::new(&artifacts.host);
                command
                    .args(["--listen", "127.0.0.1:0", "--ws-path", WS_PATH, "--plugins"])
                    .arg(&dir)
                    .args(args)
                    .env("ROHRPOST_LOG", log)
                    .env("TMPDIR", &tmp);
                plugins = Some(dir);
            }
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        let stderr = child.stderr.take().context("no stderr of the server")?;
        let counted = Arc::new(AtomicUsize::new(0));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let counter = counted.clone();
        let count = count.map(str::to_owned);
        let label = name.to_owned();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("listening") {
                    if let Some(addr) = field(&line, "address") {
                        let _ = addr_tx.send(addr);
                    }
                }
                if count.as_deref().is_some_and(|c| line.contains(c)) {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                if line.contains("WARN") || line.contains("ERROR") {
                    eprintln!("  [{label}] {line}");
                }
            }
        });
        let addr = match addr_rx.recv_timeout(START_TIMEOUT) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().ok();
                bail!("{name} did not start listening (exit status: {status:?})");
            }
        };
        Ok(Server {
            name: name.to_owned(),
            child,
            addr,
            plugins,
            counted,
            _work: work,
        })
    }

    /// The address it listens on (`host:port`).
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The WebSocket URL of the rohrpost endpoint.
    pub fn url(&self) -> String {
        format!("ws://{}{WS_PATH}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The host's plugins directory.
    pub fn plugins_dir(&self) -> Result<&Path> {
        self.plugins
            .as_deref()
            .ok_or_else(|| anyhow!("{} has no plugins directory", self.name))
    }

    /// How many stderr lines contained the text given at start.
    pub fn counted(&self) -> usize {
        self.counted.load(Ordering::Relaxed)
    }

    /// Fails when the process is gone.
    pub fn check_running(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => bail!("{} exited: {status}", self.name),
            Err(error) => Err(error).context("cannot query the server process"),
        }
    }

    /// Asks the server to stop (SIGTERM), then kills it after a grace
    /// period.
    pub fn stop(mut self) -> Result<()> {
        self.check_running()?;
        let pid = libc::pid_t::try_from(self.child.id()).context("process id out of range")?;
        // SAFETY: plain kill(2) on our own child, which has not been reaped
        // (try_wait above saw it running), so the id is still its own.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(20));
        }
        eprintln!("  {} did not stop within 3 s; killing it", self.name);
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Copies a library into the plugins directory the way deployments should:
/// under a hidden temporary name first, then renamed into place.
pub fn install(library: &Path, dir: &Path) -> Result<PathBuf> {
    let name = library
        .file_name()
        .with_context(|| format!("{} has no file name", library.display()))?;
    let target = dir.join(name);
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    std::fs::copy(library, &tmp)
        .with_context(|| format!("cannot copy {} to {}", library.display(), tmp.display()))?;
    std::fs::rename(&tmp, &target)
        .with_context(|| format!("cannot rename {} into place", tmp.display()))?;
    Ok(target)
}

/// The value of `key=value` in a log line.
fn field(line: &str, key: &str) -> Option<String> {
    let start = line.find(&format!("{key}="))? + key.len() + 1;
    let rest = &line[start..];
    let end = rest.find(' ').unwrap_or(rest.len());
    Some(rest[..end].trim_matches('"').to_owned())
}

/// Resident memory of a process in KiB, from `/proc/<pid>/status`.
pub fn rss_kib(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .with_context(|| format!("no VmRSS in {path}"))?;
    line.trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .with_context(|| format!("cannot read the VmRSS line '{line}'"))
}

/// CPU time (user and system) a process has used so far, from
/// `/proc/<pid>/stat`.
pub fn cpu_time(pid: u32) -> Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    // The fields after the command name, which is in parentheses and may
    // contain anything: state, ppid, ... utime and stime are the 14th and
    // 15th fields of the whole line, so the 12th and 13th of these.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |index: usize| -> Result<u64> {
        fields
            .get(index)
            .and_then(|field| field.parse().ok())
            .with_context(|| format!("unexpected contents of {path}: {stat}"))
    };
    let total = ticks(11)? + ticks(12)?;
    // SAFETY: sysconf only reads a system setting.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let per_second = u64::try_from(per_second)
        .ok()
        .filter(|&n| n > 0)
        .context("sysconf(_SC_CLK_TCK) failed")?;
    Ok(Duration::from_micros(total * 1_000_000 / per_second))
}

/// Measures the CPU time a server and this process use from now on.
pub struct CpuMeter {
    pid: u32,
    server: Duration,
    own: Duration,
    started: Instant,
}

/// CPU time used by a server and by this process over `wall`.
#[derive(Debug, Clone, Copy)]
pub struct CpuUse {
    pub server: Duration,
    pub own: Duration,
    pub wall: Duration,
}

impl CpuMeter {
    pub fn start(server: &Server) -> Result<CpuMeter> {
        CpuMeter::of_pid(server.pid())
    }

    /// The same for the process `pid`.
    pub fn of_pid(pid: u32) -> Result<CpuMeter> {
        Ok(CpuMeter {
            pid,
            server: cpu_time(pid)?,
            own: cpu_time(std::process::id())?,
            started: Instant::now(),
        })
    }

    pub fn stop(&self) -> Result<CpuUse> {
        Ok(CpuUse {
            server: cpu_time(self.pid)?.saturating_sub(self.server),
            own: cpu_time(std::process::id())?.saturating_sub(self.own),
            wall: self.started.elapsed(),
        })
    }
}

impl CpuUse {
    /// "0.93 / 0.71 cores": how many cores the server and this process kept
    /// busy on average.
    pub fn cores(&self) -> String {
        let wall = self.wall.as_secs_f64().max(f64::MIN_POSITIVE);
        format!(
            "{:.2} / {:.2} cores",
            self.server.as_secs_f64() / wall,
            self.own.as_secs_f64() / wall
        )
    }
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
pub fn raise_open_files_limit() -> Result<libc::rlim_t> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error()).context("getrlimit(RLIMIT_NOFILE)");
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        } else {
            eprintln!(
                "cannot raise the open files limit to {}: {}",
                limit.rlim_max,
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(limit.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::field;

    #[test]
    fn cpu_time_of_this_process() {
        let before = super::cpu_time(std::process::id()).expect("own /proc stat");
        let mut x = 0u64;
        for i in 0..10_000_000u64 {
            x = std::hint::black_box(x.wrapping_add(i));
        }
        let after = super::cpu_time(std::process::id()).expect("own /proc stat");
        assert!(after >= before);
    }

    #[test]
    fn address_from_the_listening_line() {
        let line = "2025 INFO rohrpost_host::server: listening address=127.0.0.1:4242 path=/ws/";
        assert_eq!(field(line, "address").as_deref(), Some("127.0.0.1:4242"));
        assert_eq!(
            field("listening address=127.0.0.1:1", "address").as_deref(),
            Some("127.0.0.1:1")
        );
    }
}
