//! A Python virtual environment under the target directory, made once and
//! kept until what it was made from changes: a stamp file in it holds the
//! text of the files it was made from. The Django environment and the
//! compression tests' `websockets` environment are both made here.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use crate::{
    error::{Error, Result},
    paths::target_dir,
};

/// One `pip install` into the environment: its options, then the path.
pub struct Install<'a> {
    pub options: &'a [&'a str],
    pub path: &'a Path,
}

/// The `python` of the environment `name` (a directory of the target
/// directory), made with `installs` when missing or when one of `sources`
/// changed; `purpose` names it in the error when no Python is found.
pub fn python(
    name: &str,
    sources: &[PathBuf],
    installs: &[Install<'_>],
    purpose: &str,
) -> Result<PathBuf> {
    let mut wanted = String::new();
    for file in sources {
        let text = std::fs::read_to_string(file).map_err(|error| Error::File {
            action: "read",
            path: file.clone(),
            error,
        })?;
        wanted.push_str(&text);
    }
    let venv = target_dir().join(name);
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
            name: format!("python3 (needed for {purpose})"),
            error: std::io::ErrorKind::NotFound.into(),
        })?;
    run(Command::new(interpreter)
        .args(["-m", "venv", "--clear"])
        .arg(&venv))?;
    for install in installs {
        run(Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(install.options)
            .arg(install.path))?;
    }
    std::fs::write(&stamp, wanted).map_err(|error| Error::File {
        action: "write",
        path: stamp,
        error,
    })?;
    Ok(python)
}

/// Runs `command` to its end; an error unless it succeeded.
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
