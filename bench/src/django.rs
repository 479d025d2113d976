//! The Django side of the channels benchmark: the test app with one
//! channel layer prefix, its `manage.py`, daphne serving it, and the
//! sender (`manage.py bench_send`), which starts up, says `ready`, and
//! sends only when told, so that no server's CPU is measured while Python
//! starts.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use rohrpost_harness::django_venv;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::servers::TempDir;

/// How long channels_redis's Redis client may wait for a reply by
/// default: longer than the 5 s its receive blocks in `BZPOPMIN`. redis-py
/// 8 made 5 s its default (it had none), so an idle consumer's receive
/// fails, and daphne closes that connection with 1011, one every 5 idle
/// seconds (django/channels_redis#422, open for channels_redis 4.3.0);
/// what deployments set is a longer timeout or none.
pub const REDIS_SOCKET_TIMEOUT_S: u32 = 60;

/// How long the sender may take to start (Python, Django, the layer's
/// first connection to Redis).
const SENDER_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the sender may take to exit once its sends are done.
const SENDER_EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long daphne may take to listen.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(30);

/// The Redis URL with this read timeout for Django's Redis client (0: none
/// added, redis-py's default).
pub fn with_socket_timeout(redis: &str, seconds: u32) -> String {
    if seconds == 0 {
        return redis.to_owned();
    }
    let separator = if redis.contains('?') { '&' } else { '?' };
    format!("{redis}{separator}socket_timeout={seconds}")
}

/// The Django test app with one layer prefix: `manage.py` and daphne.
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

    /// Fails when the process has exited.
    pub fn check_running(&mut self, name: &str) -> Result<()> {
        if let Some(status) = self.0.try_wait()? {
            bail!("{name} exited: {status}");
        }
        Ok(())
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl DjangoSide {
    /// The app on the core layer at `redis` with this prefix, its database
    /// migrated.
    pub fn new(python: &Path, redis: &str, prefix: &str, work: &TempDir) -> Result<DjangoSide> {
        let env = vec![
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

    fn manage(&self, args: &[&str]) -> Result<()> {
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

    /// Starts `manage.py bench_send` and waits until it is ready to send
    /// `count` messages to `group`, stamped in microseconds after
    /// `start_unix_us`.
    pub async fn sender(&self, group: &str, count: u64, start_unix_us: u128) -> Result<Sender> {
        let mut command = tokio::process::Command::from(self.command());
        command
            .args(["manage.py", "bench_send", "--wait-for-go", group])
            .arg(count.to_string())
            .arg(start_unix_us.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .context("cannot start manage.py bench_send")?;
        let stdout = child.stdout.take().context("the sender's stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(SENDER_READY_TIMEOUT, async {
            while let Some(line) = lines.next_line().await? {
                if line.trim() == "ready" {
                    return Ok(true);
                }
            }
            Ok::<_, std::io::Error>(false)
        })
        .await;
        match ready {
            Ok(Ok(true)) => Ok(Sender {
                child,
                _stdout: lines,
            }),
            Ok(Ok(false)) => bail!(
                "manage.py bench_send ended before it was ready: {}",
                stderr_of(&mut child).await
            ),
            Ok(Err(error)) => Err(error).context("cannot read the sender's output"),
            Err(_) => bail!("manage.py bench_send was not ready within {SENDER_READY_TIMEOUT:?}"),
        }
    }

    /// daphne with its default settings (those a deployment that sets
    /// none runs with), its log (warnings and errors; the access log goes
    /// to stdout, not kept) written to `log`, once it listens.
    pub fn daphne(&self, port: u16, log: &Path) -> Result<Killed> {
        let log = std::fs::File::create(log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let child = self
            .command()
            .args(["-m", "daphne", "-b", "127.0.0.1", "-p", &port.to_string()])
            .arg("notesite.asgi:application")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("cannot start daphne")?;
        let mut daphne = Killed(child);
        wait_listening(port, &mut daphne)?;
        Ok(daphne)
    }
}

/// The sender, started and ready.
pub struct Sender {
    child: tokio::process::Child,
    /// Kept open, so that what it prints last (`sent`) is not an error.
    _stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Sender {
    /// Tells it to send.
    pub async fn go(&mut self) -> Result<()> {
        let stdin = self.child.stdin.as_mut().context("the sender's stdin")?;
        stdin.write_all(b"go\n").await?;
        stdin.flush().await?;
        Ok(())
    }

    /// Waits for it to exit after its sends; fails unless it succeeded.
    pub async fn finish(mut self) -> Result<()> {
        let status = tokio::time::timeout(SENDER_EXIT_TIMEOUT, self.child.wait())
            .await
            .with_context(|| format!("the sender did not exit within {SENDER_EXIT_TIMEOUT:?}"))??;
        if !status.success() {
            bail!(
                "manage.py bench_send failed ({status}): {}",
                stderr_of(&mut self.child).await
            );
        }
        Ok(())
    }
}

/// What a child wrote to stderr (it has exited or is about to).
async fn stderr_of(child: &mut tokio::process::Child) -> String {
    let mut text = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        let read = stderr.read_to_string(&mut text);
        let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
    }
    text
}

/// Prints how many lines of `log` are warnings or errors, and the first
/// few of them.
pub fn report_log(name: &str, log: &Path) {
    let Ok(text) = std::fs::read_to_string(log) else {
        return;
    };
    let problems: Vec<&str> = text
        .lines()
        .filter(|line| line.contains("WARNING") || line.contains("ERROR"))
        .collect();
    if problems.is_empty() {
        return;
    }
    eprintln!(
        "channels: {name} logged {} warnings or errors; the first:",
        problems.len()
    );
    for line in problems.iter().take(5) {
        eprintln!("  {line}");
    }
}

/// A port nothing listens on now.
pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Waits until daphne accepts connections on `port`.
fn wait_listening(port: u16, daphne: &mut Killed) -> Result<()> {
    let deadline = Instant::now() + LISTEN_TIMEOUT;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        daphne.check_running("daphne")?;
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("daphne did not listen on {port} within {LISTEN_TIMEOUT:?}")
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
