//! What can go wrong in the harness, as one type its users turn into their
//! own errors.

use std::{io, path::PathBuf, process::ExitStatus, time::Duration};

/// A harness operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot {action} {}: {error}", path.display())]
    File {
        action: &'static str,
        path: PathBuf,
        error: io::Error,
    },
    #[error("cannot start {name}: {error}")]
    Spawn { name: String, error: io::Error },
    #[error("{name} did not start listening within {timeout:?} (exit status: {status}){log}")]
    NotListening {
        name: String,
        timeout: Duration,
        status: String,
        /// Its log lines so far, when they were kept.
        log: String,
    },
    #[error("{name} failed ({status}): {output}")]
    Failed {
        name: String,
        status: ExitStatus,
        output: String,
    },
    #[error("{what}: not within {timeout:?}")]
    NotReady { what: String, timeout: Duration },
    #[error("{name} exited: {status}")]
    Exited { name: String, status: ExitStatus },
    #[error("cannot query the process of {name}: {error}")]
    Wait { name: String, error: io::Error },
    #[error("unexpected contents of {path}: {text}")]
    Proc { path: String, text: String },
    #[error("{call} failed: {error}")]
    System {
        call: &'static str,
        error: io::Error,
    },
    #[error(
        "the open-files limit is {limit} even after raising it to the hard limit, {needed} are \
         needed; raise the hard limit (ulimit -Hn)"
    )]
    TooFewFiles { limit: u64, needed: u64 },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn file(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> Error {
        let path = path.into();
        move |error| Error::File {
            action,
            path,
            error,
        }
    }
}
