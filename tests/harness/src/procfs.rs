//! What `/proc` says about a process: the CPU time it has used (utime +
//! stime of `/proc/<pid>/stat`, its live descendants included, such as a
//! host's plugin workers) and its memory (`/proc/<pid>/status`).

use std::time::{Duration, Instant};

use crate::{
    error::{Error, Result},
    process::Process,
};

/// Something with a process id: a running server.
pub trait Pid {
    fn pid(&self) -> u32;
}

impl Pid for Process {
    fn pid(&self) -> u32 {
        Process::pid(self)
    }
}

/// CPU time (user and system) a process has used so far.
pub fn cpu_time(pid: u32) -> Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).map_err(Error::file("read", &path))?;
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
            .ok_or_else(|| Error::Proc {
                path: path.clone(),
                text: stat.clone(),
            })
    };
    let total = ticks(11)? + ticks(12)?;
    // SAFETY: sysconf only reads a system setting.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let per_second = u64::try_from(per_second)
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| Error::System {
            call: "sysconf(_SC_CLK_TCK)",
            error: std::io::Error::last_os_error(),
        })?;
    Ok(Duration::from_micros(total * 1_000_000 / per_second))
}

/// Whether process `pid` runs: it exists and is not a zombie waiting for
/// its parent to reap it.
pub fn is_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| !stat.contains(") Z "))
}

/// The parent of process `pid`, if it can be read.
fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The child processes of `pid` (a host's plugin workers), from every one
/// of its threads' `/proc/<pid>/task/<tid>/children`; none when it cannot
/// be read.
pub fn children(pid: u32) -> std::collections::BTreeSet<u32> {
    let mut found = std::collections::BTreeSet::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return found;
    };
    for task in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            found.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    found
}

/// CPU time of process `pid` and of its live descendants (a host's plugin
/// workers, which in their jail are great-grandchildren): what serving
/// cost, wherever it ran.
pub fn cpu_time_with_children(pid: u32) -> Result<Duration> {
    let mut total = cpu_time(pid)?;
    let entries = std::fs::read_dir("/proc").map_err(Error::file("read", "/proc"))?;
    let parents: Vec<(u32, u32)> = entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|process| Some((process, parent(process)?)))
        .collect();
    let mut ours = vec![pid];
    let mut next = 0;
    while let Some(&ancestor) = ours.get(next) {
        next += 1;
        for &(process, parent) in &parents {
            if parent == ancestor {
                ours.push(process);
                // One that has just ended counts as nothing.
                total += cpu_time(process).unwrap_or_default();
            }
        }
    }
    Ok(total)
}

/// A `kB` field of `/proc/<pid>/status`, such as `VmRSS` or `VmHWM` (the
/// peak), in KiB.
pub fn status_kib(pid: u32, field: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).map_err(Error::file("read", &path))?;
    let bad = |text: &str| Error::Proc {
        path: path.clone(),
        text: text.to_owned(),
    };
    let line = status
        .lines()
        .find(|l| {
            l.strip_prefix(field)
                .is_some_and(|rest| rest.starts_with(':'))
        })
        .ok_or_else(|| bad(&format!("no {field}")))?;
    line.split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| bad(line))
}

/// Measures the CPU time a server and this process use from now on.
#[derive(Debug)]
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
    pub fn start<P: Pid + ?Sized>(server: &P) -> Result<CpuMeter> {
        CpuMeter::of_pid(server.pid())
    }

    /// The same for the process `pid`.
    pub fn of_pid(pid: u32) -> Result<CpuMeter> {
        Ok(CpuMeter {
            pid,
            server: cpu_time_with_children(pid)?,
            own: cpu_time(std::process::id())?,
            started: Instant::now(),
        })
    }

    pub fn stop(&self) -> Result<CpuUse> {
        Ok(CpuUse {
            server: cpu_time_with_children(self.pid)?.saturating_sub(self.server),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_of_this_process_grows_with_work() {
        let before = cpu_time(std::process::id()).expect("own /proc stat");
        let started = Instant::now();
        let mut x = 0u64;
        // Spin until the clock (in ticks) has certainly advanced.
        while started.elapsed() < Duration::from_millis(200) {
            for i in 0..1_000_000u64 {
                x = std::hint::black_box(x.wrapping_add(i));
            }
        }
        let after = cpu_time(std::process::id()).expect("own /proc stat");
        assert!(after > before, "{before:?} -> {after:?}");
    }

    #[test]
    fn the_cpu_time_of_children_counts() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .expect("a shell");
        // Until the child has certainly run for 100 ms (on a busy machine
        // that takes longer than 100 ms).
        let deadline = Instant::now() + Duration::from_secs(30);
        while cpu_time(child.id()).expect("the child's") < Duration::from_millis(100) {
            assert!(Instant::now() < deadline, "the child does not get to run");
            std::thread::sleep(Duration::from_millis(20));
        }
        let own = cpu_time(std::process::id()).expect("own");
        let with = cpu_time_with_children(std::process::id()).expect("with children");
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            with >= own + Duration::from_millis(100),
            "{own:?} / {with:?}"
        );
    }

    #[test]
    fn children_are_listed() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("a sleep");
        let listed = children(std::process::id());
        let _ = child.kill();
        let _ = child.wait();
        assert!(listed.contains(&child.id()), "{listed:?}");
    }

    #[test]
    fn resident_memory_of_this_process() {
        let rss = status_kib(std::process::id(), "VmRSS").expect("own /proc status");
        assert!(rss > 0);
        assert!(status_kib(std::process::id(), "NoSuchField").is_err());
    }
}
