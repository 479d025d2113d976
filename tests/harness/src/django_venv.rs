//! The Python virtual environment of the Django interop tests and of the
//! channels benchmark: the pinned packages of
//! `tests/django_app/requirements.txt` (Django, channels, channels_redis,
//! rohrpost, daphne, gunicorn) and the rohrpost bridge of
//! `integrations/django` (installed editable, so that its sources are
//! used as they are), made once under the target directory and kept until
//! the requirements or the bridge's `pyproject.toml` change (a stamp file
//! holds those it was made from).

use std::path::PathBuf;

use crate::{
    error::Result,
    paths::workspace,
    venv::{self, Install},
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
    venv::python(
        "django-venv",
        &[requirements.clone(), bridge.join("pyproject.toml")],
        &[
            Install {
                options: &["-r"],
                path: &requirements,
            },
            Install {
                options: &["--no-deps", "-e"],
                path: &bridge,
            },
        ],
        "the Django environment",
    )
}
