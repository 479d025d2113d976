//! The worker's own user, PID and network namespaces, and the process
//! settings that go with them (user, limits, capabilities, dumpable).
//!
//! A PID namespace takes effect for the children of the process that
//! enters it, so the worker forks: see [`become_init`]. When the
//! namespace's init ends, the kernel kills everything else in it: a
//! plugin's forks cannot outlive its worker, whatever they do.

use std::io;

/// The unprivileged user a server started as root runs its workers as.
const NOBODY: libc::uid_t = 65534;

fn check(result: libc::c_int) -> io::Result<()> {
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// As root, becomes `nobody`: a plugin never gets root, nor any of root's
/// files, whatever its user namespace maps.
pub(crate) fn drop_root() -> io::Result<()> {
    // SAFETY: these calls take no pointers but setgroups' (empty).
    unsafe {
        if libc::geteuid() != 0 {
            return Ok(());
        }
        check(libc::setgroups(0, std::ptr::null()))?;
        check(libc::setresgid(NOBODY, NOBODY, NOBODY))?;
        check(libc::setresuid(NOBODY, NOBODY, NOBODY))?;
    }
    Ok(())
}

/// Sets both the soft and the hard limit of `resource` (never above the
/// hard limit it has).
pub(crate) fn set_limit(resource: libc::__rlimit_resource_t, value: u64) -> io::Result<()> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct given.
    unsafe {
        check(libc::getrlimit(resource, &mut limit))?;
        let value = (value as libc::rlim_t).min(limit.rlim_max);
        limit.rlim_cur = value;
        limit.rlim_max = value;
        check(libc::setrlimit(resource, &limit))
    }
}

/// Enters new user and PID namespaces (and a network namespace of no
/// interfaces when `network`), mapping the worker's user to one id inside.
pub(crate) fn unshare(network: bool) -> io::Result<()> {
    // SAFETY: plain system calls; the ids are read before the unshare.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let mut flags = libc::CLONE_NEWUSER | libc::CLONE_NEWPID;
    if network {
        flags |= libc::CLONE_NEWNET;
    }
    // SAFETY: the process is single-threaded here (a user namespace
    // requires it); unshare takes no pointers.
    check(unsafe { libc::unshare(flags) })?;
    // After a change of user the process is not dumpable, and its /proc
    // files belong to root: the maps below could not be written.
    // SAFETY: prctl with integer arguments.
    check(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) })?;
    std::fs::write("/proc/self/setgroups", "deny")?;
    std::fs::write("/proc/self/uid_map", format!("{NOBODY} {uid} 1"))?;
    std::fs::write("/proc/self/gid_map", format!("{NOBODY} {gid} 1"))?;
    Ok(())
}

/// Forks twice: a small init for the new PID namespace, and under it the
/// worker, which alone returns. This process stays outside as the waiter.
///
/// Init of a PID namespace ignores the signals it has no handler for,
/// even its own `abort`: the plugin must not run as init, or a crash would
/// not end it the way the host reports. Init only reaps (orphans too) and
/// passes the worker's wait status to the waiter through a pipe; the
/// waiter then ends as the worker did, which the host sees.
pub(crate) fn become_init() -> io::Result<()> {
    let mut report = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array.
    check(unsafe { libc::pipe2(report.as_mut_ptr(), libc::O_CLOEXEC) })?;
    let [read, write] = report;
    // SAFETY: the process is single-threaded, so a child may go on with
    // any code; the parents below only make system calls.
    unsafe {
        match libc::fork() {
            -1 => Err(io::Error::last_os_error()),
            0 => {
                libc::close(read);
                // Killed with the waiter, or if it is already gone.
                check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0))?;
                match libc::fork() {
                    -1 => Err(io::Error::last_os_error()),
                    0 => {
                        libc::close(write);
                        Ok(())
                    }
                    worker => init(worker, write),
                }
            }
            init => wait_for(init, read),
        }
    }
}

/// Closes every descriptor above the standard streams but `keep`.
///
/// # Safety
/// Closes descriptors others in this process may own: only for the
/// waiter and init, which run nothing else.
unsafe fn close_all_but(keep: libc::c_int) {
    let keep = keep as u32;
    if keep > 3 {
        libc::syscall(libc::SYS_close_range, 3u32, keep - 1, 0u32);
    }
    libc::syscall(libc::SYS_close_range, keep + 1, u32::MAX, 0u32);
}

/// Init of the worker's PID namespace: reaps every process of the
/// namespace; when the worker ends, writes its wait status to `report`
/// and exits, which ends everything else in the namespace.
///
/// # Safety
/// Call in a process that runs nothing else.
unsafe fn init(worker: libc::pid_t, report: libc::c_int) -> ! {
    close_all_but(report);
    loop {
        let mut status = 0;
        let reaped = libc::waitpid(-1, &mut status, 0);
        if reaped == worker {
            libc::write(report, (&status as *const libc::c_int).cast(), 4);
            libc::_exit(0);
        }
        if reaped < 0 && *libc::__errno_location() != libc::EINTR {
            libc::_exit(2);
        }
    }
}

/// The waiter: waits for `init` and exits as the worker did (its status
/// comes through `report`). When the host is gone (the waiter is adopted)
/// it kills init, and with it everything in the namespace, which may be
/// stuck in a call.
///
/// # Safety
/// Call in a process that runs nothing else.
unsafe fn wait_for(init: libc::pid_t, report: libc::c_int) -> ! {
    let host = libc::getppid();
    close_all_but(report);
    let pidfd = libc::syscall(libc::SYS_pidfd_open, init, 0) as libc::c_int;
    loop {
        let mut status = 0;
        let reaped = libc::waitpid(init, &mut status, libc::WNOHANG);
        if reaped == init {
            let mut worker = 0;
            if libc::read(report, (&mut worker as *mut libc::c_int).cast(), 4) == 4 {
                mirror(worker);
            }
            mirror(status);
        }
        if reaped < 0 && *libc::__errno_location() != libc::EINTR {
            libc::_exit(2);
        }
        if pidfd >= 0 {
            let mut poll = libc::pollfd {
                fd: pidfd,
                events: libc::POLLIN,
                revents: 0,
            };
            libc::poll(&mut poll, 1, 250);
        } else {
            libc::usleep(50_000);
        }
        if libc::getppid() != host {
            libc::kill(init, libc::SIGKILL);
        }
    }
}

/// Ends this process as the wait status `status` says its child ended.
///
/// # Safety
/// Ends the process; call with nothing left to clean up.
unsafe fn mirror(status: libc::c_int) -> ! {
    if libc::WIFSIGNALED(status) {
        let signal = libc::WTERMSIG(status);
        libc::signal(signal, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, signal);
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        libc::kill(libc::getpid(), signal);
        libc::_exit(128 + signal);
    }
    libc::_exit(libc::WEXITSTATUS(status))
}

/// Drops every capability the new user namespace gave (in it, and the
/// bounding and ambient sets): the plugin gets none.
pub(crate) fn drop_capabilities() -> io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    // SAFETY: prctl with integer arguments; capset reads the header and
    // two data structs, as version 3 defines.
    unsafe {
        check(libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        ))?;
        for cap in 0..64 {
            if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 {
                break;
            }
        }
        let header = Header {
            version: VERSION_3,
            pid: 0,
        };
        let data = [Data {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        }; 2];
        check(libc::syscall(libc::SYS_capset, &header, data.as_ptr()) as libc::c_int)
    }
}

/// No privilege can be gained any more (set-user-id files, file
/// capabilities); a seccomp filter requires it.
pub(crate) fn no_new_privs() -> io::Result<()> {
    // SAFETY: prctl with integer arguments.
    check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })
}

/// Its `/proc` files belong to root and no process of the same user may
/// trace it or read its memory.
pub(crate) fn not_dumpable() -> io::Result<()> {
    // SAFETY: prctl with integer arguments.
    check(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) })
}
