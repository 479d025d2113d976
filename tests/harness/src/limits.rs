//! The open-files limit: raised once, before any server starts, so that the
//! servers inherit it and many connections fit.

use crate::error::{Error, Result};

/// Raises this process's soft limit of open files to its hard limit and
/// returns the soft limit now in force (the old one when the system refuses,
/// as it does when the hard limit is above `fs.nr_open`). Children started
/// afterwards inherit it.
pub fn raise_open_files_limit() -> Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(Error::System {
            call: "getrlimit(RLIMIT_NOFILE)",
            error: std::io::Error::last_os_error(),
        });
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    Ok(limit.rlim_cur)
}

/// Raises the limit (see [`raise_open_files_limit`]) and fails when it is
/// still below `needed`.
pub fn ensure_open_files(needed: u64) -> Result<()> {
    let limit = raise_open_files_limit()?;
    if limit < needed {
        return Err(Error::TooFewFiles { limit, needed });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_raised_limit_is_the_hard_limit() {
        let soft = raise_open_files_limit().expect("raise");
        assert!(soft > 0);
        assert!(ensure_open_files(soft).is_ok());
        assert!(matches!(
            ensure_open_files(u64::MAX),
            Err(Error::TooFewFiles { .. })
        ));
    }
}
