//! The Django test app (`tests/django_app`) as a child process, the same
//! for the interop tests and the benchmarks against Django: its
//! environment (channel layer, Redis, prefix, database file), `manage.py`,
//! daphne serving rohrpost's consumer, and gunicorn serving the WSGI side
//! (the rohrpost bridge behind the proxy plugin).

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{
    django_venv::{app_dir, python},
    error::{Error, Result},
};

/// How long channels_redis's Redis client may wait for a reply by
/// default: longer than the 5 s its receive blocks in `BZPOPMIN`. redis-py
/// 8 made 5 s its default (it had none), so an idle consumer's receive
/// fails, and daphne closes that connection with 1011, one every 5 idle
/// seconds (django/channels_redis#422, open for channels_redis 4.3.0);
/// what deployments set is a longer timeout or none.
pub const REDIS_SOCKET_TIMEOUT_S: u32 = 60;

/// The Redis URL with this read timeout for Django's Redis client (0: none
/// added, redis-py's default).
pub fn with_socket_timeout(redis: &str, seconds: u32) -> String {
    if seconds == 0 {
        return redis.to_owned();
    }
    let separator = if redis.contains('?') { '&' } else { '?' };
    format!("{redis}{separator}socket_timeout={seconds}")
}

/// One deployment of the test app: the environment its processes get.
pub struct DjangoApp {
    python: PathBuf,
    env: Vec<(String, String)>,
}

impl DjangoApp {
    /// `layer` is `pubsub` or `core`, `redis` a `redis://` URL, `db` the
    /// sqlite file; the database is migrated.
    pub fn new(layer: &str, redis: &str, prefix: &str, db: &Path) -> Result<DjangoApp> {
        let app = DjangoApp {
            python: python()?,
            env: vec![
                ("NOTES_LAYER".to_owned(), layer.to_owned()),
                ("NOTES_REDIS".to_owned(), redis.to_owned()),
                ("NOTES_PREFIX".to_owned(), prefix.to_owned()),
                ("NOTES_DB".to_owned(), db.display().to_string()),
                ("PYTHONDONTWRITEBYTECODE".to_owned(), "1".to_owned()),
            ],
        };
        app.manage(&["migrate", "-v0"])?;
        Ok(app)
    }

    /// One more variable of the app's environment (for what is started
    /// after).
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.push((key.to_owned(), value.to_owned()));
    }

    /// The app's `python` in its directory with its environment.
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.python);
        command
            .current_dir(app_dir())
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        command
    }

    /// `manage.py` with these arguments, not started.
    pub fn manage_command(&self, args: &[&str]) -> Command {
        let mut command = self.command();
        command.arg("manage.py").args(args);
        command
    }

    /// Runs `manage.py` to the end; its standard output.
    pub fn manage(&self, args: &[&str]) -> Result<String> {
        let name = format!("manage.py {}", args.join(" "));
        let out = self
            .manage_command(args)
            .output()
            .map_err(|error| Error::Spawn {
                name: name.clone(),
                error,
            })?;
        if !out.status.success() {
            return Err(Error::Failed {
                name,
                status: out.status,
                output: format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// daphne serving the app (rohrpost's consumer at `/ws/rohrpost/`) on
    /// `port`; killed when dropped.
    pub fn daphne(&self, port: u16) -> Result<Killed> {
        self.daphne_logging(port, Stdio::null())
    }

    /// [`DjangoApp::daphne`] with its log (warnings and errors; the access
    /// log goes to stdout, not kept) written to `log`.
    pub fn daphne_logging(&self, port: u16, log: impl Into<Stdio>) -> Result<Killed> {
        let child = self
            .command()
            .args(["-m", "daphne", "-b", "127.0.0.1", "-p", &port.to_string()])
            .arg("notesite.asgi:application")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|error| Error::Spawn {
                name: "daphne".to_owned(),
                error,
            })?;
        Ok(Killed(child))
    }

    /// gunicorn serving the app's WSGI side, the rohrpost bridge at
    /// `/rohrpost/`, on `port`: `workers` processes of `threads` threads
    /// (threaded workers keep the proxy's connections alive between
    /// requests), no control socket (its default path is shared between
    /// runs). Its log goes to standard error.
    pub fn gunicorn(&self, port: u16, workers: usize, threads: usize) -> Result<Gunicorn> {
        let child = self
            .command()
            .args(["-m", "gunicorn", "--no-control-socket"])
            .args(["--workers", &workers.to_string()])
            .args([
                "--worker-class",
                "gthread",
                "--threads",
                &threads.to_string(),
            ])
            .args(["--bind", &format!("127.0.0.1:{port}")])
            .args(["--log-level", "warning"])
            .arg("notesite.wsgi:application")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|error| Error::Spawn {
                name: "gunicorn".to_owned(),
                error,
            })?;
        Ok(Gunicorn(child))
    }
}

/// A child process killed (and waited for) when dropped.
pub struct Killed(pub Child);

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

/// A gunicorn master, stopped with its workers when dropped (SIGQUIT, its
/// quick shutdown; killed if it is still there after 5 s).
pub struct Gunicorn(Child);

impl Gunicorn {
    /// The master's pid (its workers are its children).
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Gunicorn {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            // SAFETY: a signal to our own child, which has not been waited for.
            unsafe { libc::kill(pid, libc::SIGQUIT) };
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A child that must be running: daphne or gunicorn.
pub trait Running {
    fn child(&mut self) -> &mut Child;
}

impl Running for Killed {
    fn child(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Running for Gunicorn {
    fn child(&mut self) -> &mut Child {
        &mut self.0
    }
}

/// Waits (blocking) until `server`, named `name`, accepts connections on
/// `127.0.0.1:port`; fails at once when it exited.
pub fn wait_listening(
    port: u16,
    server: &mut impl Running,
    name: &str,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if let Some(status) = server.child().try_wait().map_err(|error| Error::Wait {
            name: name.to_owned(),
            error,
        })? {
            return Err(Error::Exited {
                name: name.to_owned(),
                status,
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(Error::NotListening {
        name: name.to_owned(),
        timeout,
        status: "running".to_owned(),
        log: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_redis_url_gets_the_read_timeout() {
        assert_eq!(
            with_socket_timeout("redis://127.0.0.1:6379/0", 60),
            "redis://127.0.0.1:6379/0?socket_timeout=60"
        );
        assert_eq!(
            with_socket_timeout("redis://127.0.0.1:6379/0?protocol=3", 60),
            "redis://127.0.0.1:6379/0?protocol=3&socket_timeout=60"
        );
        assert_eq!(
            with_socket_timeout("redis://127.0.0.1:6379/0", 0),
            "redis://127.0.0.1:6379/0"
        );
    }
}
