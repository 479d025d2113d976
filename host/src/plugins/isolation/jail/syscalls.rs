//! The seccomp allow-list of a jailed worker: the system calls a plugin
//! (Rust's standard library, glibc, an HTTP client) needs, and no other.
//!
//! A call outside the list raises `SIGSYS`; the worker's handler writes
//! the call's number to the host as one [`FORBIDDEN`](super::super::frame::FORBIDDEN)
//! frame and exits, and the host logs the plugin and the call by name. A
//! plugin that ignores or blocks `SIGSYS` is killed by it (the host logs
//! the signal); one that installs a handler of its own (as `posix_spawn`
//! must be able to reset it) only gets the call skipped: never made.
//!
//! Filters, stacked (the strictest answer of all wins):
//! - the allow-list (anything else traps), some calls only with certain
//!   arguments: `clone` without namespace flags (and only for threads
//!   outside a PID namespace), `kill`/`tgkill` only to itself, `ioctl`
//!   only for a few harmless requests, `prctl` only for thread names,
//!   `fcntl` without `F_SETOWN` (a signal to another process);
//! - `clone3` answers `ENOSYS`: its flags are out of a filter's reach, and
//!   glibc then uses `clone`;
//! - `execve` and `execveat` answer `EACCES`: no program can be run (a
//!   plugin that looks for a helper gets an error, not its end);
//! - `socket` outside IPv4/IPv6 answers `EAFNOSUPPORT` (a Unix socket could
//!   reach a path no Landlock rule covers).

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use crate::plugins::isolation::worker::CHANNEL_FD;

/// The exit code of a worker ended for a forbidden call.
pub(crate) const FORBIDDEN_EXIT: i32 = 159;

#[cfg(target_arch = "x86_64")]
const ARCH: TargetArch = TargetArch::x86_64;
#[cfg(target_arch = "aarch64")]
const ARCH: TargetArch = TargetArch::aarch64;

/// Calls allowed whatever their arguments.
const ALWAYS: &[libc::c_long] = &[
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_close,
    libc::SYS_close_range,
    libc::SYS_openat,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_statfs,
    libc::SYS_fstatfs,
    libc::SYS_lseek,
    libc::SYS_getdents64,
    libc::SYS_readlinkat,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    libc::SYS_getcwd,
    libc::SYS_dup,
    libc::SYS_dup3,
    libc::SYS_pipe2,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_flock,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mprotect,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_mincore,
    libc::SYS_msync,
    libc::SYS_brk,
    libc::SYS_membarrier,
    libc::SYS_futex,
    libc::SYS_futex_waitv,
    libc::SYS_set_robust_list,
    libc::SYS_get_robust_list,
    libc::SYS_set_tid_address,
    libc::SYS_rseq,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_sched_getparam,
    libc::SYS_sched_getscheduler,
    libc::SYS_getcpu,
    libc::SYS_nanosleep,
    libc::SYS_clock_nanosleep,
    libc::SYS_clock_gettime,
    libc::SYS_clock_getres,
    libc::SYS_gettimeofday,
    libc::SYS_timer_create,
    libc::SYS_timer_settime,
    libc::SYS_timer_gettime,
    libc::SYS_timer_getoverrun,
    libc::SYS_timer_delete,
    libc::SYS_timerfd_create,
    libc::SYS_timerfd_settime,
    libc::SYS_timerfd_gettime,
    libc::SYS_getpid,
    libc::SYS_getppid,
    libc::SYS_gettid,
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    libc::SYS_getresuid,
    libc::SYS_getresgid,
    libc::SYS_getgroups,
    libc::SYS_getpgid,
    libc::SYS_getsid,
    libc::SYS_setsid,
    libc::SYS_setpgid,
    libc::SYS_uname,
    libc::SYS_sysinfo,
    libc::SYS_getrusage,
    libc::SYS_times,
    libc::SYS_getrandom,
    libc::SYS_capget,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigpending,
    libc::SYS_rt_sigtimedwait,
    libc::SYS_rt_sigsuspend,
    libc::SYS_sigaltstack,
    libc::SYS_restart_syscall,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_wait4,
    libc::SYS_waitid,
    libc::SYS_ppoll,
    libc::SYS_pselect6,
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_pwait2,
    libc::SYS_eventfd2,
    libc::SYS_socket,
    libc::SYS_socketpair,
    libc::SYS_connect,
    libc::SYS_shutdown,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    libc::SYS_getsockopt,
    libc::SYS_setsockopt,
    libc::SYS_sendto,
    libc::SYS_recvfrom,
    libc::SYS_sendmsg,
    libc::SYS_recvmsg,
    libc::SYS_sendmmsg,
    libc::SYS_recvmmsg,
    libc::SYS_clone3,
    libc::SYS_execve,
    libc::SYS_execveat,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_open,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_stat,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_lstat,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_access,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_readlink,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_poll,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_select,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_pipe,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_dup2,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_getdents,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_epoll_create,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_epoll_wait,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_eventfd,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_time,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_getrlimit,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_arch_prctl,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_getpgrp,
];

/// `ioctl` requests allowed: non-blocking mode, close-on-exec, bytes
/// readable, and the two a terminal check makes. (The request type
/// differs between architectures.)
#[allow(clippy::unnecessary_cast)]
const IOCTLS: &[u64] = &[
    libc::FIONBIO as u64,
    libc::FIOCLEX as u64,
    libc::FIONCLEX as u64,
    libc::FIONREAD as u64,
    libc::TCGETS as u64,
    libc::TIOCGWINSZ as u64,
];

/// `prctl` options allowed: a thread's name, and reading a few settings.
const PRCTLS: &[u64] = &[
    libc::PR_SET_NAME as u64,
    libc::PR_GET_NAME as u64,
    libc::PR_GET_DUMPABLE as u64,
    libc::PR_GET_NO_NEW_PRIVS as u64,
    libc::PR_GET_SECCOMP as u64,
    libc::PR_CAPBSET_READ as u64,
    0x5356_4d41, // PR_SET_VMA (glibc names its anonymous mappings)
];

/// `fcntl` commands glibc's headers have and the libc crate lacks (the
/// same on every Linux architecture).
const F_SETOWN_EX: u64 = 15;
const F_SETSIG: u64 = 10;

/// Flags of a `clone` that would leave the jail's namespaces.
const NAMESPACE_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWTIME) as u64;

fn arg(index: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, seccompiler::Error> {
    SeccompCondition::new(index, SeccompCmpArgLen::Qword, op, value).map_err(Into::into)
}

fn arg32(index: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, seccompiler::Error> {
    SeccompCondition::new(index, SeccompCmpArgLen::Dword, op, value).map_err(Into::into)
}

fn rule(conditions: Vec<SeccompCondition>) -> Result<SeccompRule, seccompiler::Error> {
    SeccompRule::new(conditions).map_err(Into::into)
}

/// The allow-list; `in_pid_namespace`: a fork cannot outlive the worker,
/// so processes may be started (never executed: `execve` is not allowed).
fn allow_list(
    in_pid_namespace: bool,
    pid: libc::pid_t,
) -> Result<SeccompFilter, seccompiler::Error> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        ALWAYS.iter().map(|&nr| (nr, Vec::new())).collect();
    let pid = pid as u32 as u64;
    let mut clone = vec![arg(0, SeccompCmpOp::MaskedEq(NAMESPACE_FLAGS), 0)?];
    if !in_pid_namespace {
        let thread = libc::CLONE_THREAD as u64;
        clone.push(arg(0, SeccompCmpOp::MaskedEq(thread), thread)?);
    }
    rules.insert(libc::SYS_clone, vec![rule(clone)?]);
    rules.insert(
        libc::SYS_kill,
        vec![
            rule(vec![arg32(0, SeccompCmpOp::Eq, pid)?])?,
            rule(vec![arg32(0, SeccompCmpOp::Eq, 0)?])?,
        ],
    );
    rules.insert(
        libc::SYS_tgkill,
        vec![rule(vec![arg32(0, SeccompCmpOp::Eq, pid)?])?],
    );
    rules.insert(
        libc::SYS_ioctl,
        IOCTLS
            .iter()
            .map(|&request| rule(vec![arg32(1, SeccompCmpOp::Eq, request)?]))
            .collect::<Result<_, _>>()?,
    );
    rules.insert(
        libc::SYS_prctl,
        PRCTLS
            .iter()
            .map(|&option| rule(vec![arg32(0, SeccompCmpOp::Eq, option)?]))
            .collect::<Result<_, _>>()?,
    );
    // Any command but those that make the kernel signal a process when a
    // descriptor is ready (F_SETOWN: a way to signal what `kill` may not).
    rules.insert(
        libc::SYS_fcntl,
        vec![rule(vec![
            arg32(1, SeccompCmpOp::Ne, libc::F_SETOWN as u64)?,
            arg32(1, SeccompCmpOp::Ne, F_SETOWN_EX)?,
            arg32(1, SeccompCmpOp::Ne, F_SETSIG)?,
        ])?],
    );
    // Reading its own limits; setting none.
    rules.insert(
        libc::SYS_prlimit64,
        vec![rule(vec![
            arg32(0, SeccompCmpOp::Eq, 0)?,
            arg(2, SeccompCmpOp::Eq, 0)?,
        ])?],
    );
    #[cfg(target_arch = "x86_64")]
    if in_pid_namespace {
        rules.insert(libc::SYS_fork, Vec::new());
        rules.insert(libc::SYS_vfork, Vec::new());
    }
    Ok(SeccompFilter::new(
        rules,
        SeccompAction::Trap,
        SeccompAction::Allow,
        ARCH,
    )?)
}

/// One call answered with an error number.
fn refuse(
    nr: libc::c_long,
    rules: Vec<SeccompRule>,
    errno: i32,
) -> Result<BpfProgram, seccompiler::Error> {
    let filter = SeccompFilter::new(
        BTreeMap::from([(nr, rules)]),
        SeccompAction::Allow,
        SeccompAction::Errno(errno as u32),
        ARCH,
    )?;
    Ok(filter.try_into()?)
}

/// Installs the handler and the filters on this (the only) thread; every
/// thread started later inherits them.
pub(crate) fn install(in_pid_namespace: bool) -> Result<(), seccompiler::Error> {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let allow: BpfProgram = allow_list(in_pid_namespace, pid)?.try_into()?;
    let clone3 = refuse(libc::SYS_clone3, Vec::new(), libc::ENOSYS)?;
    let exec = refuse(libc::SYS_execve, Vec::new(), libc::EACCES)?;
    let exec_at = refuse(libc::SYS_execveat, Vec::new(), libc::EACCES)?;
    let socket = refuse(
        libc::SYS_socket,
        vec![rule(vec![
            arg32(0, SeccompCmpOp::Ne, libc::AF_INET as u64)?,
            arg32(0, SeccompCmpOp::Ne, libc::AF_INET6 as u64)?,
        ])?],
        libc::EAFNOSUPPORT,
    )?;
    install_handler().map_err(seccompiler::Error::Prctl)?;
    for program in [&socket, &exec, &exec_at, &clone3, &allow] {
        seccompiler::apply_filter(program)?;
    }
    Ok(())
}

/// `SIGSYS` with `SA_SIGINFO`: the number of the forbidden call is in the
/// signal's information.
fn install_handler() -> std::io::Result<()> {
    // SAFETY: a zeroed sigaction with a handler and flags set is valid;
    // the handler only makes async-signal-safe calls.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_forbidden as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(libc::SIGSYS, &action, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Tells the host which call was forbidden (one write of one frame) and
/// ends the worker.
extern "C" fn on_forbidden(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: for SIGSYS the kernel fills `_sigsys`: the call's address
    // (a pointer) at offset 16, then its number (an int) at offset 24.
    let nr = unsafe { (info as *const u8).add(24).cast::<i32>().read_unaligned() };
    let frame = crate::plugins::isolation::frame::forbidden(nr as u32);
    // SAFETY: write and _exit are async-signal-safe.
    unsafe {
        libc::write(CHANNEL_FD, frame.as_ptr().cast(), frame.len());
        libc::_exit(FORBIDDEN_EXIT);
    }
}

/// The name of system call `nr` on this architecture, for the log.
pub(crate) fn name(nr: u32) -> String {
    let nr = nr as libc::c_long;
    let known: &[(libc::c_long, &str)] = &[
        (libc::SYS_ptrace, "ptrace"),
        (libc::SYS_process_vm_readv, "process_vm_readv"),
        (libc::SYS_process_vm_writev, "process_vm_writev"),
        (libc::SYS_kill, "kill"),
        (libc::SYS_tkill, "tkill"),
        (libc::SYS_tgkill, "tgkill"),
        (libc::SYS_execve, "execve"),
        (libc::SYS_execveat, "execveat"),
        (libc::SYS_mount, "mount"),
        (libc::SYS_umount2, "umount2"),
        (libc::SYS_pivot_root, "pivot_root"),
        (libc::SYS_chroot, "chroot"),
        (libc::SYS_bpf, "bpf"),
        (libc::SYS_keyctl, "keyctl"),
        (libc::SYS_add_key, "add_key"),
        (libc::SYS_request_key, "request_key"),
        (libc::SYS_perf_event_open, "perf_event_open"),
        (libc::SYS_unshare, "unshare"),
        (libc::SYS_setns, "setns"),
        (libc::SYS_clone, "clone"),
        (libc::SYS_bind, "bind"),
        (libc::SYS_listen, "listen"),
        (libc::SYS_accept4, "accept4"),
        (libc::SYS_ioctl, "ioctl"),
        (libc::SYS_fcntl, "fcntl"),
        (libc::SYS_prctl, "prctl"),
        (libc::SYS_prlimit64, "prlimit64"),
        (libc::SYS_rt_sigaction, "rt_sigaction"),
        (libc::SYS_setuid, "setuid"),
        (libc::SYS_setresuid, "setresuid"),
        (libc::SYS_pidfd_open, "pidfd_open"),
        (libc::SYS_pidfd_getfd, "pidfd_getfd"),
        (libc::SYS_pidfd_send_signal, "pidfd_send_signal"),
        (libc::SYS_memfd_create, "memfd_create"),
        (libc::SYS_unlinkat, "unlinkat"),
        (libc::SYS_renameat2, "renameat2"),
        (libc::SYS_mkdirat, "mkdirat"),
        (libc::SYS_symlinkat, "symlinkat"),
        (libc::SYS_linkat, "linkat"),
        (libc::SYS_fchmodat, "fchmodat"),
        (libc::SYS_fchownat, "fchownat"),
        (libc::SYS_ftruncate, "ftruncate"),
        (libc::SYS_io_uring_setup, "io_uring_setup"),
        (libc::SYS_userfaultfd, "userfaultfd"),
        (libc::SYS_seccomp, "seccomp"),
        #[cfg(target_arch = "x86_64")]
        (libc::SYS_fork, "fork"),
        #[cfg(target_arch = "x86_64")]
        (libc::SYS_vfork, "vfork"),
        #[cfg(target_arch = "x86_64")]
        (libc::SYS_unlink, "unlink"),
        #[cfg(target_arch = "x86_64")]
        (libc::SYS_rename, "rename"),
        #[cfg(target_arch = "x86_64")]
        (libc::SYS_mkdir, "mkdir"),
        #[cfg(target_arch = "x86_64")]
        (libc::SYS_chmod, "chmod"),
        #[cfg(target_arch = "x86_64")]
        (libc::SYS_creat, "creat"),
    ];
    match known.iter().find(|(n, _)| *n == nr) {
        Some((_, name)) => format!("{name} ({nr})"),
        None => format!("system call {nr}"),
    }
}
