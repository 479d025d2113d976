//! How the kernel schedules the server's threads and, since the policy is
//! inherited by every thread and process started after, its plugin
//! workers.
//!
//! Why `batch` is the default: a call to a worker wakes the worker, and its
//! reply wakes a server thread. Under the kernel's normal policy each of
//! those wake-ups preempts whatever runs on that CPU, which on a machine
//! with fewer cores than busy threads is often the very thread that would
//! have sent the worker more calls: the CPU switches back and forth once
//! per call. A `SCHED_BATCH` thread that wakes waits for the running one's
//! turn to end instead, so the worker finds several calls when it runs and
//! the server several replies. Measured on the 2-core machine with the
//! plugin in its worker (docs/benchmarks.md, "Scheduling"): about a third
//! less CPU per reply and 20 to 30% more replies per second; with the
//! plugin in the server's process, the same CPU and a lower p99. Nothing
//! changes while a CPU is idle: a woken thread then runs at once. The
//! policy needs no privilege, and takes no share of the CPU from anyone.
//! A policy the operator chose (`chrt`, systemd's `CPUSchedulingPolicy=`)
//! is kept: only the kernel's default is changed.

use std::io;

/// The policy of the server's threads: `scheduling = ...`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Scheduling {
    /// `SCHED_BATCH`: a thread that wakes does not preempt a running one.
    #[default]
    Batch,
    /// As the server was started: the kernel's default, or what the
    /// operator set.
    Normal,
}

impl Scheduling {
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        match text {
            "batch" => Ok(Scheduling::Batch),
            "normal" => Ok(Scheduling::Normal),
            other => Err(format!(
                "'{other}' is not a scheduling policy: batch or normal"
            )),
        }
    }

    /// Gives the calling thread this policy if it runs under the kernel's
    /// default; the threads and processes it starts afterwards inherit it.
    pub(crate) fn apply(self) -> io::Result<()> {
        if self == Scheduling::Normal {
            return Ok(());
        }
        // SAFETY: pid 0 is this thread.
        if unsafe { libc::sched_getscheduler(0) } != libc::SCHED_OTHER {
            return Ok(());
        }
        set(libc::SCHED_BATCH)
    }
}

/// Sets the calling thread's policy.
fn set(policy: libc::c_int) -> io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid `sched_param`; pid 0 is this thread.
    if unsafe { libc::sched_setscheduler(0, policy, &param) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::Scheduling;

    #[test]
    fn a_thread_takes_the_policy_and_passes_it_on() {
        std::thread::spawn(|| {
            // SAFETY: pid 0 is this thread.
            let policy = || unsafe { libc::sched_getscheduler(0) };
            super::set(libc::SCHED_OTHER).expect("the kernel's default");
            Scheduling::Normal.apply().expect("nothing to do");
            assert_eq!(policy(), libc::SCHED_OTHER);
            Scheduling::Batch
                .apply()
                .expect("SCHED_BATCH needs no privilege");
            assert_eq!(policy(), libc::SCHED_BATCH);
            let child = std::thread::spawn(policy);
            assert_eq!(child.join().expect("joined"), libc::SCHED_BATCH);
        })
        .join()
        .expect("joined");
    }

    #[test]
    fn a_policy_the_operator_chose_is_kept() {
        std::thread::spawn(|| {
            super::set(libc::SCHED_OTHER).expect("the kernel's default");
            super::set(libc::SCHED_IDLE).expect("SCHED_IDLE needs no privilege");
            Scheduling::Batch.apply().expect("nothing to do");
            // SAFETY: pid 0 is this thread.
            assert_eq!(unsafe { libc::sched_getscheduler(0) }, libc::SCHED_IDLE);
        })
        .join()
        .expect("joined");
    }

    #[test]
    fn names() {
        assert_eq!(Scheduling::parse("batch"), Ok(Scheduling::Batch));
        assert_eq!(Scheduling::parse("normal"), Ok(Scheduling::Normal));
        assert!(Scheduling::parse("fifo").is_err());
    }
}
