//! The Python virtual environment of the compression tests: the pinned
//! `websockets` of `tests/python_client/requirements.txt`, a client that
//! negotiates permessage-deflate by default, made once under the target
//! directory and kept until the requirements change (a stamp file holds
//! those it was made from).

use crate::{
    error::Result,
    paths::workspace,
    venv::{self, Install},
};

/// The environment's `python`, made when it is missing or stale.
pub fn python() -> Result<std::path::PathBuf> {
    let requirements = workspace().join("tests/python_client/requirements.txt");
    venv::python(
        "websockets-venv",
        std::slice::from_ref(&requirements),
        &[Install {
            options: &["-r"],
            path: &requirements,
        }],
        "the compression tests",
    )
}
