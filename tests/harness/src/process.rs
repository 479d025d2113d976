//! A server run as a child process: started with its stderr read by a
//! thread of ours, which learns its address from its `listening` log line,
//! keeps, counts or echoes its lines; stopped with SIGTERM, then killed.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::{Duration, Instant},
};

use crate::error::{Error, Result};

/// Which of its log lines a [`Process`] copies to our stderr, as
/// `  [name] line`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Echo {
    #[default]
    Nothing,
    /// Lines with `WARN` or `ERROR`.
    Problems,
    Everything,
}

/// How a [`Process`] is started and its log read.
#[derive(Debug, Clone)]
pub struct Watch {
    name: String,
    echo: Echo,
    keep_log: bool,
    count: Option<String>,
    die_with_parent: bool,
    soft_open_files: Option<u64>,
    start_timeout: Duration,
    user: Option<(u32, u32)>,
}

impl Watch {
    /// Named `name` in messages; nothing kept, counted or echoed; 30 s to
    /// start listening.
    pub fn new(name: &str) -> Watch {
        Watch {
            name: name.to_owned(),
            echo: Echo::Nothing,
            keep_log: false,
            count: None,
            die_with_parent: false,
            soft_open_files: None,
            start_timeout: Duration::from_secs(30),
            user: None,
        }
    }

    pub fn echo(mut self, echo: Echo) -> Watch {
        self.echo = echo;
        self
    }

    /// Keeps every log line, for [`Process::log`].
    pub fn keep_log(mut self) -> Watch {
        self.keep_log = true;
        self
    }

    /// Counts the log lines containing `text`, see [`Process::counted`].
    pub fn count(mut self, text: &str) -> Watch {
        self.count = Some(text.to_owned());
        self
    }

    /// The child gets SIGKILL when the thread that started it ends, even
    /// without unwinding (a test that aborts leaves no server behind).
    pub fn die_with_parent(mut self) -> Watch {
        self.die_with_parent = true;
        self
    }

    /// The child starts with this soft limit of open files (at most the
    /// hard limit), set in the child alone: this process's own limit,
    /// which every thread of it shares, stays as it is.
    pub fn soft_open_files(mut self, limit: u64) -> Watch {
        self.soft_open_files = Some(limit);
        self
    }
}

impl Watch {
    /// The child runs as this user and group (ids), with no other groups;
    /// for a test run by root.
    pub fn run_as(mut self, uid: u32, gid: u32) -> Watch {
        self.user = Some((uid, gid));
        self
    }
}

/// A running child process that has logged its listening address.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Child,
    addr: String,
    log: Arc<Mutex<Vec<String>>>,
    counted: Arc<AtomicUsize>,
    /// Set once the child has been reaped: its pid is no longer ours to
    /// signal.
    reaped: AtomicBool,
}

/// How [`Process::stop`] ended the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// It exited after SIGTERM.
    Terminated(ExitStatus),
    /// It was still running after the grace period and was killed.
    Killed,
}

impl Process {
    /// Starts `command` (stdin and stdout to `/dev/null`, stderr read by
    /// us) and waits until a log line containing `listening` gives its
    /// `address`.
    pub fn spawn(command: &mut Command, watch: Watch) -> Result<Process> {
        if let Some((uid, gid)) = watch.user {
            // SAFETY: setgroups, setgid and setuid are async-signal-safe;
            // nothing else runs in the child before exec.
            unsafe {
                use std::os::unix::process::CommandExt;
                command.pre_exec(move || {
                    if libc::setgroups(0, std::ptr::null()) != 0
                        || libc::setgid(gid) != 0
                        || libc::setuid(uid) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        if watch.die_with_parent {
            // SAFETY: prctl is async-signal-safe; nothing else runs in the
            // child before exec.
            unsafe {
                use std::os::unix::process::CommandExt;
                command.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
        }
        if let Some(soft) = watch.soft_open_files {
            // SAFETY: getrlimit and setrlimit are async-signal-safe system
            // calls on a local struct; nothing else runs in the child before
            // exec.
            unsafe {
                use std::os::unix::process::CommandExt;
                command.pre_exec(move || {
                    let mut limit = libc::rlimit {
                        rlim_cur: 0,
                        rlim_max: 0,
                    };
                    if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    limit.rlim_cur = limit.rlim_max.min(soft);
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let name = watch.name.clone();
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|error| Error::Spawn {
                name: name.clone(),
                error,
            })?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let counted = Arc::new(AtomicUsize::new(0));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        if let Some(stderr) = child.stderr.take() {
            let (log, counted) = (log.clone(), counted.clone());
            let watch = watch.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if line.contains("listening") {
                        if let Some(addr) = field(&line, "address") {
                            let _ = addr_tx.send(addr);
                        }
                    }
                    if watch.count.as_deref().is_some_and(|c| line.contains(c)) {
                        counted.fetch_add(1, Ordering::Relaxed);
                    }
                    let echo = match watch.echo {
                        Echo::Nothing => false,
                        Echo::Problems => line.contains("WARN") || line.contains("ERROR"),
                        Echo::Everything => true,
                    };
                    if echo {
                        eprintln!("  [{}] {line}", watch.name);
                    }
                    if watch.keep_log {
                        log.lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push(line);
                    }
                }
            });
        } else {
            drop(addr_tx);
        }
        // Also returns at once when the child closes its stderr (exits).
        let Ok(addr) = addr_rx.recv_timeout(watch.start_timeout) else {
            let _ = child.kill();
            let status = child
                .wait()
                .map_or_else(|e| format!("unknown: {e}"), |s| s.to_string());
            let lines = log.lock().unwrap_or_else(PoisonError::into_inner);
            let log = if lines.is_empty() {
                String::new()
            } else {
                format!("; its log:\n{}", lines.join("\n"))
            };
            return Err(Error::NotListening {
                name,
                timeout: watch.start_timeout,
                status,
                log,
            });
        };
        Ok(Process {
            name,
            child,
            addr,
            log,
            counted,
            reaped: AtomicBool::new(false),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The address it listens on (`host:port`).
    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its log lines so far (none unless [`Watch::keep_log`]).
    pub fn log(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How many log lines contained the [`Watch::count`] text.
    pub fn counted(&self) -> usize {
        self.counted.load(Ordering::Relaxed)
    }

    /// Its exit status once it has exited.
    pub fn try_exit(&mut self) -> Result<Option<ExitStatus>> {
        let status = self.child.try_wait().map_err(|error| Error::Wait {
            name: self.name.clone(),
            error,
        })?;
        if status.is_some() {
            self.reaped.store(true, Ordering::Relaxed);
        }
        Ok(status)
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.try_exit(), Ok(None))
    }

    /// Fails when it has exited.
    pub fn check_running(&mut self) -> Result<()> {
        match self.try_exit()? {
            None => Ok(()),
            Some(status) => Err(Error::Exited {
                name: self.name.clone(),
                status,
            }),
        }
    }

    /// Sends it a signal (e.g. `libc::SIGTERM`); nothing once it has been
    /// reaped.
    pub fn signal(&self, signal: i32) -> Result<()> {
        if self.reaped.load(Ordering::Relaxed) {
            return Ok(());
        }
        let pid = libc::pid_t::try_from(self.child.id()).map_err(|_| Error::System {
            call: "kill",
            error: std::io::Error::from(std::io::ErrorKind::InvalidInput),
        })?;
        // SAFETY: kill(2) on our own child, not yet reaped, so the id is
        // still its own.
        if unsafe { libc::kill(pid, signal) } != 0 {
            return Err(Error::System {
                call: "kill",
                error: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// Asks it to stop (SIGTERM), then kills it when it is still running
    /// after `grace`. Fails when it had exited already.
    pub fn stop(&mut self, grace: Duration) -> Result<Ended> {
        self.check_running()?;
        self.signal(libc::SIGTERM)?;
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = self.try_exit()? {
                return Ok(Ended::Terminated(status));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        Ok(Ended::Killed)
    }

    /// Kills it and waits for it.
    pub fn kill(&mut self) {
        if !self.reaped.load(Ordering::Relaxed) {
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.reaped.store(true, Ordering::Relaxed);
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The value of `key=value` in a log line, or of `"key": value` in a JSON
/// log line.
fn field(line: &str, key: &str) -> Option<String> {
    // Servers that are not ours say where they listen as a URL:
    // `listening on ws://127.0.0.1:8102/ws/rohrpost/`.
    if key == "address" && !line.contains("address") {
        let url = &line[line.find("listening on ws://")? + "listening on ws://".len()..];
        let end = url.find(['/', ' ']).unwrap_or(url.len());
        return Some(url[..end].to_owned());
    }
    if line.starts_with('{') {
        let value: serde_json::Value = serde_json::from_str(line).ok()?;
        return value.get(key)?.as_str().map(str::to_owned);
    }
    let start = line.find(&format!("{key}="))? + key.len() + 1;
    let rest = &line[start..];
    let end = rest.find(' ').unwrap_or(rest.len());
    Some(rest[..end].trim_matches('"').to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_from_the_listening_line() {
        let line = "2025 INFO rohrpost_host::server: listening address=127.0.0.1:4242 path=/ws/";
        assert_eq!(field(line, "address").as_deref(), Some("127.0.0.1:4242"));
        assert_eq!(
            field("listening address=127.0.0.1:1", "address").as_deref(),
            Some("127.0.0.1:1")
        );
        let json = r#"{"level":"INFO","message":"listening","address":"127.0.0.1:7"}"#;
        assert_eq!(field(json, "address").as_deref(), Some("127.0.0.1:7"));
        let url = "limit: listening on ws://127.0.0.1:8102/ws/rohrpost/ (threads=2)";
        assert_eq!(field(url, "address").as_deref(), Some("127.0.0.1:8102"));
        assert_eq!(field("listening on port 80", "address"), None);
    }

    #[test]
    fn a_process_that_never_listens_is_reported_with_its_log() {
        let mut command = Command::new("sh");
        command.args(["-c", "echo starting >&2; exit 3"]);
        let error = Process::spawn(&mut command, Watch::new("sh").keep_log())
            .expect_err("sh never listens");
        let text = error.to_string();
        assert!(text.contains("did not start listening"), "{text}");
        assert!(text.contains("starting"), "{text}");
    }

    #[test]
    fn stop_terminates_a_listening_process() {
        let mut command = Command::new("sh");
        command.args([
            "-c",
            "echo 'listening address=127.0.0.1:9' >&2; echo 'WARN counted' >&2; exec sleep 60",
        ]);
        let watch = Watch::new("sh").keep_log().count("counted");
        let mut process = Process::spawn(&mut command, watch).expect("starts");
        assert_eq!(process.addr(), "127.0.0.1:9");
        let deadline = Instant::now() + Duration::from_secs(10);
        while process.counted() == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(process.counted(), 1);
        assert_eq!(process.log().len(), 2);
        let ended = process.stop(Duration::from_secs(10)).expect("stops");
        assert!(matches!(ended, Ended::Terminated(_)), "{ended:?}");
        assert!(!process.is_running());
    }

    /// The soft limit of open files, as `/proc/<pid>/limits` gives it.
    fn soft_open_files_of(pid: u32) -> u64 {
        let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
        let line = limits
            .lines()
            .find(|line| line.starts_with("Max open files"))
            .expect("an open-files line");
        line.split_whitespace()
            .nth(3)
            .and_then(|soft| soft.parse().ok())
            .expect("a number")
    }

    #[test]
    fn the_child_starts_with_the_soft_open_files_limit() {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct it is given.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
            0
        );
        let mut command = Command::new("sh");
        command.args([
            "-c",
            "echo 'listening address=127.0.0.1:9' >&2; exec sleep 60",
        ]);
        let watch = Watch::new("sh").soft_open_files(100);
        let mut process = Process::spawn(&mut command, watch).expect("starts");
        let child = soft_open_files_of(process.pid());
        process.kill();
        assert_eq!(child, limit.rlim_max.min(100));
    }
}
