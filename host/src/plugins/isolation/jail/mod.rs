//! The worker's jail: what a plugin's code can reach from inside its
//! worker process. The worker enters it before the library is opened, so a
//! plugin's constructors already run inside.
//!
//! Layers, each a kernel mechanism that needs no privilege (one module
//! each), in the order they are taken:
//! 1. [`namespaces`]: a server started as root hands the worker to an
//!    unprivileged user; the worker gets a user namespace of its own, a PID
//!    namespace in which it is init (whatever it forks dies with it, and no
//!    process outside can be named), and, unless its table grants a port,
//!    a network namespace with no interfaces.
//! 2. [`access`]: Landlock. No file may be written; reads only of the
//!    system's libraries, the worker's own `/proc` entry and what the
//!    plugin's table grants; TCP `connect` only to granted ports, `bind`
//!    never; no signal and no abstract socket outside the worker.
//! 3. [`syscalls`]: a seccomp allow-list. A call outside it (`ptrace`,
//!    `process_vm_*`, `mount`, `bpf`, `unshare`, ...) ends the worker, and
//!    the host's log names the plugin and the call; `execve` fails.
//!
//! Plus `PR_SET_NO_NEW_PRIVS`, no core dumps, a bound on its tasks, and
//! `PR_SET_DUMPABLE` 0. What the kernel lacks is reported, not fatal,
//! unless the operator set `sandbox = "required"`.

pub(crate) mod access;
pub(crate) mod namespaces;
pub(crate) mod syscalls;

use std::{ffi::OsString, io, path::PathBuf};

use thiserror::Error;

pub(crate) use crate::config::{Grants, Sandbox};

/// The jail one worker is started into.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Spec {
    pub sandbox: Sandbox,
    pub grants: Grants,
}

/// Most tasks (threads and processes) one jailed worker may run at once.
/// Its pool has at most `plugin_concurrency` (64 by default) threads.
pub(crate) const MAX_TASKS: u64 = 512;

const SANDBOX_ARG: &str = "--sandbox=";
const READ_ARG: &str = "--read=";
const CONNECT_ARG: &str = "--connect=";

impl Spec {
    /// The worker's command-line arguments that carry this spec.
    pub(crate) fn to_args(&self) -> Vec<OsString> {
        let mut args = vec![OsString::from(format!(
            "{SANDBOX_ARG}{}",
            self.sandbox.as_str()
        ))];
        for path in &self.grants.read {
            let mut arg = OsString::from(READ_ARG);
            arg.push(path);
            args.push(arg);
        }
        for port in &self.grants.connect_ports {
            args.push(format!("{CONNECT_ARG}{port}").into());
        }
        args
    }

    /// Reads what [`Spec::to_args`] wrote; other arguments are skipped.
    pub(crate) fn from_args(args: impl Iterator<Item = OsString>) -> Result<Spec, String> {
        use std::os::unix::ffi::OsStrExt;
        let mut spec = Spec::default();
        for arg in args {
            let bytes = arg.as_bytes();
            if let Some(mode) = bytes.strip_prefix(SANDBOX_ARG.as_bytes()) {
                spec.sandbox = Sandbox::parse(&String::from_utf8_lossy(mode))?;
            } else if let Some(path) = bytes.strip_prefix(READ_ARG.as_bytes()) {
                spec.grants
                    .read
                    .push(PathBuf::from(std::ffi::OsStr::from_bytes(path)));
            } else if let Some(port) = bytes.strip_prefix(CONNECT_ARG.as_bytes()) {
                let port = String::from_utf8_lossy(port);
                spec.grants
                    .connect_ports
                    .push(port.parse().map_err(|_| format!("a bad port {port}"))?);
            }
        }
        Ok(spec)
    }
}

/// Why a worker could not enter its jail.
#[derive(Debug, Error)]
pub(crate) enum JailError {
    #[error("the sandbox could not be set up: {what}: {source}")]
    Step {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("sandbox = \"required\" and this system lacks {}", .0.join(", "))]
    Missing(Vec<String>),
}

impl JailError {
    fn step(what: &'static str) -> impl FnOnce(io::Error) -> JailError {
        move |source| JailError::Step { what, source }
    }
}

/// The jail a worker is in.
#[derive(Debug, Default)]
pub(crate) struct Entered {
    /// The layers the kernel did not give, each as the docs name it.
    pub missing: Vec<String>,
    /// The worker is init of its own PID namespace (its parent is a waiter
    /// outside it).
    pub pid_namespace: bool,
}

/// Takes the worker into its jail. In a PID namespace the process forks:
/// only the worker returns from here. The plugin's library, a sealed
/// memory file open on a descriptor, needs no rule: Landlock governs
/// files with a path, and no one can write it.
pub(crate) fn enter(spec: &Spec) -> Result<Entered, JailError> {
    let mut entered = Entered::default();
    if spec.sandbox == Sandbox::Off {
        return Ok(entered);
    }
    // Nothing of the server's working directory is reachable by a
    // relative path.
    std::env::set_current_dir("/").map_err(JailError::step("chdir /"))?;
    // Where `nobody` has no id (a user namespace that maps root alone),
    // the worker stays root of that namespace: a missing layer.
    if let Err(e) = namespaces::drop_root() {
        entered
            .missing
            .push(format!("an unprivileged user for the workers ({e})"));
    }
    namespaces::set_limit(libc::RLIMIT_CORE, 0).map_err(JailError::step("RLIMIT_CORE"))?;
    let own_network = spec.grants.connect_ports.is_empty();
    match namespaces::unshare(own_network) {
        Ok(()) => {
            namespaces::set_limit(libc::RLIMIT_NPROC, MAX_TASKS)
                .map_err(JailError::step("RLIMIT_NPROC"))?;
            namespaces::become_init().map_err(JailError::step("the PID namespace"))?;
            entered.pid_namespace = true;
            namespaces::drop_capabilities().map_err(JailError::step("capabilities"))?;
        }
        Err(e) => entered.missing.push(format!("user namespaces ({e})")),
    }
    namespaces::no_new_privs().map_err(JailError::step("PR_SET_NO_NEW_PRIVS"))?;
    match access::restrict(&spec.grants) {
        Ok(access::Enforced::Fully) => {}
        Ok(access::Enforced::Partly) => entered
            .missing
            .push("Landlock ABI 6 (network rules and scopes)".into()),
        Ok(access::Enforced::Not) => entered.missing.push("Landlock".into()),
        Err(e) => entered.missing.push(format!("Landlock ({e})")),
    }
    namespaces::not_dumpable().map_err(JailError::step("PR_SET_DUMPABLE"))?;
    if let Err(e) = syscalls::install(entered.pid_namespace) {
        entered.missing.push(format!("seccomp ({e})"));
    }
    if spec.sandbox == Sandbox::Required && !entered.missing.is_empty() {
        return Err(JailError::Missing(entered.missing));
    }
    Ok(entered)
}

/// How the server learns at start what the kernel gives: a worker that
/// enters the jail with nothing to load and says what was missing (each
/// layer as the docs name it; empty when nothing).
pub(crate) async fn probe(sandbox: Sandbox) -> Result<Vec<String>, String> {
    let spec = Spec {
        sandbox,
        grants: Grants::default(),
    };
    let run = tokio::process::Command::new("/proc/self/exe")
        .arg(super::worker::ARG)
        .arg(super::worker::PROBE_ARG)
        .args(spec.to_args())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(10), run)
        .await
        .map_err(|_| "the probe did not finish within 10 s".to_owned())?
        .map_err(|e| format!("cannot start the probe: {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    if !output.status.success() {
        return Err(if text.is_empty() {
            format!("the probe ended with {}", output.status)
        } else {
            text
        });
    }
    Ok(text
        .split("; ")
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect())
}
