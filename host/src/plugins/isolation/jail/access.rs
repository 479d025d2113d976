//! Landlock: which files a jailed worker may open, which TCP ports it may
//! connect to, and that its signals and abstract sockets stay inside.
//!
//! Every file-system right the kernel knows is handled, so whatever no
//! rule grants is denied: nothing may be written, created or removed, and
//! only these may be read: the system's shared libraries, the worker's own `/proc` entry, `/dev/null`
//! and `/dev/urandom`, and what the plugin's table grants. A plugin granted
//! a port may also read what name resolution and TLS read.

use std::path::Path;

use landlock::{
    Access, AccessFs, AccessNet, CompatLevel, Compatible, NetPort, PathBeneath, PathFd, Ruleset,
    RulesetAttr, RulesetCreatedAttr, RulesetError, RulesetStatus, Scope, ABI,
};

use super::Grants;

/// The newest Landlock ABI the jail uses (network rules: 4, scopes: 6).
const ABI_USED: ABI = ABI::V6;

/// Read by the dynamic loader and by the libraries a plugin links.
const SYSTEM: &[&str] = &[
    "/lib",
    "/lib64",
    "/usr/lib",
    "/usr/lib64",
    "/usr/local/lib",
    "/etc/ld.so.cache",
];

/// Read for name resolution and TLS, by a plugin granted a port.
const NETWORK: &[&str] = &[
    "/etc/hosts",
    "/etc/resolv.conf",
    "/etc/nsswitch.conf",
    "/etc/host.conf",
    "/etc/gai.conf",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/usr/share/ca-certificates",
];

/// How much of the ruleset the kernel enforces.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Enforced {
    Fully,
    /// An older ABI: files, but not all of network and scopes.
    Partly,
    Not,
}

/// Restricts this process (single-threaded here, so every later thread
/// too) to the rules above.
pub(crate) fn restrict(grants: &Grants) -> Result<Enforced, RulesetError> {
    let file = AccessFs::ReadFile | AccessFs::Execute;
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(ABI_USED))?
        .handle_access(AccessNet::from_all(ABI_USED))?
        .scope(Scope::from_all(ABI_USED))?
        .create()?;
    let read_paths = SYSTEM
        .iter()
        .map(Path::new)
        .chain(Some(Path::new("/proc/self")))
        .chain(Some(Path::new("/dev/urandom")))
        .chain(
            NETWORK
                .iter()
                .map(Path::new)
                .filter(|_| !grants.connect_ports.is_empty()),
        )
        .chain(grants.read.iter().map(|p| p.as_path()));
    for path in read_paths {
        // What this system does not have is not granted.
        let Ok(fd) = PathFd::new(path) else { continue };
        let access = if path.is_dir() {
            AccessFs::from_read(ABI_USED)
        } else {
            file
        };
        ruleset = ruleset.add_rule(PathBeneath::new(fd, access))?;
    }
    if let Ok(fd) = PathFd::new("/dev/null") {
        ruleset = ruleset.add_rule(PathBeneath::new(
            fd,
            AccessFs::ReadFile | AccessFs::WriteFile,
        ))?;
    }
    for &port in &grants.connect_ports {
        ruleset = ruleset.add_rule(NetPort::new(port, AccessNet::ConnectTcp))?;
    }
    let status = ruleset.restrict_self()?;
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => Enforced::Fully,
        RulesetStatus::PartiallyEnforced => Enforced::Partly,
        RulesetStatus::NotEnforced => Enforced::Not,
    })
}
