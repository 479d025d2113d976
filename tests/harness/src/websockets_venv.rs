//! The Python virtual environment of the compression tests: the pinned
//! `websockets` of `tests/python_client/requirements.txt`, a client that
//! negotiates permessage-deflate by default, made once under the target
//! directory and kept until the requirements change (a stamp file holds
//! those it was made from).

use std::process::Command;

use crate::{
    django_venv::run,
    error::{Error, Result},
    paths::{target_dir, workspace},
};

/// The environment's `python`, made when it is missing or stale.
pub fn python() -> Result<std::path::PathBuf> {
    let requirements = workspace().join("tests/python_client/requirements.txt");
    let wanted = std::fs::read_to_string(&requirements).map_err(|error| Error::File {
        action: "read",
        path: requirements.clone(),
        error,
    })?;
    let venv = target_dir().join("websockets-venv");
    let python = venv.join("bin/python");
    let stamp = venv.join("requirements.stamp");
    if python.exists() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(&wanted) {
        return Ok(python);
    }
    run(Command::new("python3")
        .args(["-m", "venv", "--clear"])
        .arg(&venv))?;
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(&requirements))?;
    std::fs::write(&stamp, wanted).map_err(|error| Error::File {
        action: "write",
        path: stamp,
        error,
    })?;
    Ok(python)
}
