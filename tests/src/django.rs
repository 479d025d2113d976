//! The Django side of the interop tests: a virtual environment with the
//! pinned packages of `tests/django_app/requirements.txt` (made once, kept
//! under the target directory until the requirements change), and the
//! test app's `manage.py`, each test with its own sqlite file, served by
//! daphne (rohrpost's consumer) or gunicorn (the rohrpost bridge's views
//! for the proxy plugin).

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::OnceLock,
};

use anyhow::{bail, Context, Result};

pub use rohrpost_harness::django_venv::{app_dir, bridge_dir};

/// The virtual environment's `python`, made on first use (see
/// [`rohrpost_harness::django_venv`]).
pub fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        rohrpost_harness::django_venv::python().expect("the Django test environment")
    })
}

fn run(command: &mut Command) -> Result<Output> {
    let out = command.output().context("cannot run")?;
    if !out.status.success() {
        bail!(
            "{command:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

/// One Django deployment of the test app: its layer, Redis database,
/// prefix and database file.
pub struct Django {
    env: Vec<(String, String)>,
    _dir: crate::TempDir,
}

impl Django {
    /// `layer` is `pubsub` or `core`; `redis` a `redis://` URL.
    pub fn new(layer: &str, redis: &str, prefix: &str) -> Result<Django> {
        let dir = crate::TempDir::new("django");
        let env = vec![
            ("NOTES_LAYER".to_owned(), layer.to_owned()),
            ("NOTES_REDIS".to_owned(), redis.to_owned()),
            ("NOTES_PREFIX".to_owned(), prefix.to_owned()),
            (
                "NOTES_DB".to_owned(),
                dir.path().join("notes.sqlite3").display().to_string(),
            ),
        ];
        let django = Django { env, _dir: dir };
        django.manage(&["migrate", "-v0"])?;
        Ok(django)
    }

    /// One more variable of the app's environment (for what is started
    /// after).
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.push((key.to_owned(), value.to_owned()));
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(python());
        command
            .current_dir(app_dir())
            .arg("manage.py")
            .args(args)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    /// Runs `manage.py` to the end; its standard output.
    pub fn manage(&self, args: &[&str]) -> Result<String> {
        let out = run(&mut self.command(args))?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Starts daphne serving the app (rohrpost's consumer at
    /// `/ws/rohrpost/`) on `port`; killed when dropped.
    pub fn daphne(&self, port: u16) -> Result<Killed> {
        let mut command = Command::new(python());
        command
            .current_dir(app_dir())
            .args(["-m", "daphne", "-b", "127.0.0.1", "-p", &port.to_string()])
            .arg("notesite.asgi:application")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        Ok(Killed(command.spawn()?))
    }

    /// Starts gunicorn (2 workers of 4 threads) serving the app's WSGI
    /// side, the rohrpost bridge at `/rohrpost/`, on `port`; killed when
    /// dropped. Its log goes to the test's standard error.
    pub fn gunicorn(&self, port: u16) -> Result<Gunicorn> {
        let mut command = Command::new(python());
        command
            .current_dir(app_dir())
            .args(["-m", "gunicorn", "--no-control-socket", "--workers", "2"])
            .args(["--worker-class", "gthread", "--threads", "4"])
            .args(["--bind", &format!("127.0.0.1:{port}")])
            .args(["--log-level", "warning"])
            .arg("notesite.wsgi:application")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        Ok(Gunicorn(command.spawn()?))
    }

    /// Starts `manage.py` with its standard output piped.
    pub fn spawn(&self, args: &[&str]) -> Result<Child> {
        Ok(self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?)
    }
}

/// A child process killed (and waited for) when dropped.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A gunicorn master, stopped with its workers when dropped (SIGQUIT, its
/// quick shutdown; killed if it is still there after 5 s).
pub struct Gunicorn(Child);

impl Drop for Gunicorn {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            // SAFETY: a signal to our own child, which has not been waited for.
            unsafe { libc::kill(pid, libc::SIGQUIT) };
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
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
