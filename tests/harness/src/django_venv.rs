//! The Python virtual environment of the Django interop tests and of the
//! channels benchmark: the pinned packages of
//! `tests/django_app/requirements.txt` (Django, channels, channels_redis,
//! rohrpost, daphne, gunicorn) and the rohrpost bridge of
//! `integrations/django` (installed editable, so that its sources are
//! used as they are), made once under the target directory and kept until
//! the requirements or the bridge's `pyproject.toml` change (a stamp file
//! holds those it was made from).

use std::{path::PathBuf, process::Command};

use crate::{
    error::{Error, Result},
    paths::{target_dir, workspace},
};

/// The test app's directory (`manage.py`, `notesite`, `notes`).
pub fn app_dir() -> PathBuf {
    workspace().join("tests/django_app")
}

/// The rohrpost bridge's package (`pyproject.toml`, `rohrpost_bridge`).
pub fn bridge_dir() -> PathBuf {
    workspace().join("integrations/django")
}

/// The environment's `python`, made when it is missing or stale.
pub fn python() -> Result<PathBuf> {
    let requirements = app_dir().join("requirements.txt");
    let bridge = bridge_dir();
    let mut wanted = String::new();
    for file in [requirements.clone(), bridge.join("pyproject.toml")] {
        let text = std::fs::read_to_string(&file).map_err(|error| Error::File {
            action: "read",
            path: file,
            error,
        })?;
        wanted.push_str(&text);
    }
    let venv = target_dir().join("django-venv");
    let python = venv.join("bin/python");
    let stamp = venv.join("requirements.stamp");
    if python.exists() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(&wanted) {
        return Ok(python);
    }
    let interpreter = ["python3.11", "python3"]
        .into_iter()
        .find(|name| {
            Command::new(name)
                .arg("--version")
                .output()
                .is_ok_and(|out| out.status.success())
        })
        .ok_or_else(|| Error::Spawn {
            name: "python3 (needed for the Django environment)".into(),
            error: std::io::ErrorKind::NotFound.into(),
        })?;
    run(Command::new(interpreter)
        .args(["-m", "venv", "--clear"])
        .arg(&venv))?;
    let pip_install = |args: &[&str], path: &std::path::Path| {
        run(Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(args)
            .arg(path))
    };
    pip_install(&["-r"], &requirements)?;
    pip_install(&["--no-deps", "-e"], &bridge)?;
    std::fs::write(&stamp, wanted).map_err(|error| Error::File {
        action: "write",
        path: stamp,
        error,
    })?;
    Ok(python)
}

pub(crate) fn run(command: &mut Command) -> Result<()> {
    let name = format!("{command:?}");
    let status = command.status().map_err(|error| Error::Spawn {
        name: name.clone(),
        error,
    })?;
    if !status.success() {
        return Err(Error::Exited { name, status });
    }
    Ok(())
}
