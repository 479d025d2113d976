//! The open-files limit: every connection is a file descriptor, and the
//! usual soft limit (1024) is far below what `--max-connections` allows.
//! At start the soft limit is raised to the hard limit, and the server says
//! when even that is too low for its connection bounds.

use tracing::{info, warn};

/// Descriptors kept for everything that is not a connection: the listener,
/// plugin files, the watcher, logs, Redis.
const RESERVE: u64 = 256;

/// Raises the soft open-files limit to the hard one and logs both; warns
/// when the limit cannot hold `connections` sockets. Returns the soft
/// limit in force (`None` when it cannot be read).
pub(crate) fn raise_open_files(connections: usize) -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        warn!(error = %std::io::Error::last_os_error(), "cannot read the open-files limit");
        return None;
    }
    let before = limit.rlim_cur;
    let mut wanted = limit.rlim_max;
    if wanted == libc::RLIM_INFINITY {
        // The kernel refuses more than fs.nr_open for an "unlimited" hard
        // limit.
        wanted = std::fs::read_to_string("/proc/sys/fs/nr_open")
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(1 << 20);
    }
    if wanted > before {
        let raised = libc::rlimit {
            rlim_cur: wanted,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit.rlim_cur = wanted;
        } else {
            warn!(error = %std::io::Error::last_os_error(), soft = before, hard = limit.rlim_max,
                "cannot raise the open-files limit");
        }
    }
    info!(
        soft_before = before,
        soft = limit.rlim_cur,
        hard = limit.rlim_max,
        "open-files limit"
    );
    let needed = connections as u64 + RESERVE;
    if limit.rlim_cur < needed {
        warn!(
            limit = limit.rlim_cur,
            needed,
            "the open-files limit is lower than the connection bounds allow: raise the hard limit (LimitNOFILE= in systemd) or lower max_connections"
        );
    }
    Some(limit.rlim_cur)
}

/// The bound on connections not yet upgraded that the open-files limit can
/// hold: `wanted`, or fewer when the limit leaves less than that beside
/// [`RESERVE`], so that the bound (which makes room by closing the oldest
/// idle connection) is reached before `accept` runs out of descriptors.
pub(crate) fn pending_bound(wanted: usize, open_files: Option<u64>) -> usize {
    let Some(open_files) = open_files else {
        return wanted;
    };
    let room = usize::try_from(open_files.saturating_sub(RESERVE)).unwrap_or(usize::MAX);
    let bound = wanted.min(room.max(MIN_PENDING));
    if bound < wanted {
        warn!(
            max_pending_connections = wanted,
            bound, open_files, "the open-files limit holds fewer connections that are not WebSockets yet: lowering their bound"
        );
    }
    bound
}

/// The lowest bound [`pending_bound`] lowers to.
const MIN_PENDING: usize = 16;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pending_bound_fits_the_open_files_limit() {
        assert_eq!(pending_bound(1024, None), 1024);
        assert_eq!(pending_bound(1024, Some(20_000)), 1024);
        assert_eq!(pending_bound(1024, Some(300)), 44);
        assert_eq!(pending_bound(1024, Some(100)), MIN_PENDING);
    }
}
