//! The Django test app as the benchmarks against Django use it: its
//! `manage.py`, daphne serving its rohrpost consumer, and gunicorn serving
//! it over WSGI (the `rohrpost_bridge` views behind the proxy plugin).

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use rohrpost_harness::django_venv;

use crate::servers::TempDir;

/// The Django test app with one channel layer prefix and database.
pub struct DjangoSide {
    python: PathBuf,
    env: Vec<(String, String)>,
}

/// A child process killed and waited for when dropped.
pub struct Killed(Child);

impl Killed {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl DjangoSide {
    /// The app on the core layer of `redis` under `prefix`, with its
    /// database migrated and these further environment variables.
    pub fn new(
        python: &Path,
        redis: &str,
        prefix: &str,
        work: &TempDir,
        extra_env: &[(&str, &str)],
    ) -> Result<DjangoSide> {
        let mut env = vec![
            ("NOTES_LAYER".to_owned(), "core".to_owned()),
            ("NOTES_REDIS".to_owned(), redis.to_owned()),
            ("NOTES_PREFIX".to_owned(), prefix.to_owned()),
            (
                "NOTES_DB".to_owned(),
                work.path()
                    .join(format!("{prefix}.sqlite3"))
                    .display()
                    .to_string(),
            ),
            ("PYTHONDONTWRITEBYTECODE".to_owned(), "1".to_owned()),
        ];
        env.extend(
            extra_env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let side = DjangoSide {
            python: python.to_owned(),
            env,
        };
        side.manage(&["migrate", "-v0"])?;
        Ok(side)
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.python);
        command
            .current_dir(django_venv::app_dir())
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    pub fn manage(&self, args: &[&str]) -> Result<()> {
        let out = self
            .command()
            .arg("manage.py")
            .args(args)
            .output()
            .context("cannot run manage.py")?;
        if !out.status.success() {
            bail!(
                "manage.py {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// daphne serving the app's rohrpost consumer on `port`.
    pub fn daphne(&self, port: u16) -> Result<Killed> {
        let child = self
            .command()
            .args(["-m", "daphne", "-b", "127.0.0.1", "-p", &port.to_string()])
            .arg("notesite.asgi:application")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start daphne")?;
        Ok(Killed(child))
    }

    /// gunicorn serving the app over WSGI on `port` with `workers`
    /// processes; threaded workers, so that the proxy's connections are
    /// kept alive between requests.
    pub fn gunicorn(&self, port: u16, workers: usize) -> Result<Killed> {
        let child = self
            .command()
            .args([
                "-m",
                "gunicorn",
                "--worker-class",
                "gthread",
                "--threads",
                "2",
            ])
            .args(["--workers", &workers.to_string()])
            .args(["--keep-alive", "30", "--log-level", "warning"])
            .args(["--bind", &format!("127.0.0.1:{port}")])
            .arg("notesite.wsgi:application")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start gunicorn")?;
        Ok(Killed(child))
    }
}

pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Waits until `server` accepts connections on `port`.
pub fn wait_listening(port: u16, server: &mut Killed, name: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if let Some(status) = server.0.try_wait()? {
            bail!("{name} exited: {status}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("{name} did not listen on {port} within 30 s")
}
