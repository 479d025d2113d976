//! The Django side of the interop tests: the test app of
//! [`rohrpost_harness::django_app`] with a database file of its own per
//! test, in the virtual environment of [`rohrpost_harness::django_venv`]
//! (made once, kept under the target directory until the requirements
//! change).

use std::{
    path::{Path, PathBuf},
    process::{Child, Stdio},
    sync::OnceLock,
};

use anyhow::{bail, Result};
use rohrpost_harness::django_app::{with_socket_timeout, DjangoApp, REDIS_SOCKET_TIMEOUT_S};
pub use rohrpost_harness::{
    django_app::{Gunicorn, Killed},
    django_venv::{app_dir, bridge_dir},
};

/// The virtual environment's `python`, made on first use.
pub fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        rohrpost_harness::django_venv::python().expect("the Django test environment")
    })
}

/// One Django deployment of the test app: its layer, Redis database,
/// prefix and database file.
pub struct Django {
    app: DjangoApp,
    _dir: crate::TempDir,
}

impl Django {
    /// `layer` is `pubsub` or `core`; `redis` a `redis://` URL, to which
    /// the read timeout channels_redis needs with redis-py 8 is added (see
    /// [`REDIS_SOCKET_TIMEOUT_S`]: without it daphne closes idle
    /// consumers' sockets every 5 s).
    pub fn new(layer: &str, redis: &str, prefix: &str) -> Result<Django> {
        python();
        let dir = crate::TempDir::new("django");
        let redis = redis
            .split(',')
            .map(|url| with_socket_timeout(url, REDIS_SOCKET_TIMEOUT_S))
            .collect::<Vec<_>>()
            .join(",");
        let app = DjangoApp::new(layer, &redis, prefix, &dir.path().join("notes.sqlite3"))?;
        Ok(Django { app, _dir: dir })
    }

    /// One more variable of the app's environment (for what is started
    /// after).
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.app.set_env(key, value);
    }

    /// Runs `manage.py` to the end; its standard output.
    pub fn manage(&self, args: &[&str]) -> Result<String> {
        Ok(self.app.manage(args)?)
    }

    /// Starts daphne serving the app (rohrpost's consumer at
    /// `/ws/rohrpost/`) on `port`; killed when dropped.
    pub fn daphne(&self, port: u16) -> Result<Killed> {
        Ok(self.app.daphne(port)?)
    }

    /// Starts gunicorn (2 workers of 4 threads) serving the app's WSGI
    /// side, the rohrpost bridge at `/rohrpost/`, on `port`; stopped when
    /// dropped. Its log goes to the test's standard error.
    pub fn gunicorn(&self, port: u16) -> Result<Gunicorn> {
        Ok(self.app.gunicorn(port, 2, 4)?)
    }

    /// Starts `manage.py` with its standard output piped.
    pub fn spawn(&self, args: &[&str]) -> Result<Child> {
        Ok(self
            .app
            .manage_command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?)
    }
}

/// Waits until something accepts TCP connections on `127.0.0.1:port`.
pub async fn listening(port: u16, timeout: std::time::Duration) -> Result<()> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            Ok(_) => return Ok(()),
            Err(error) if std::time::Instant::now() >= deadline => {
                bail!("nothing listens on port {port}: {error}")
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    }
}
