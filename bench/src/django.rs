//! What the channels benchmark needs of the Django test app beyond
//! [`DjangoApp`]: the Redis read timeout channels_redis needs with
//! redis-py 8, daphne with its log kept, and the sender
//! (`manage.py bench_send --wait-for-go`), which starts up, says `ready`,
//! and sends only when told, so that no server's CPU is measured while
//! Python starts.

use std::{path::Path, process::Stdio, time::Duration};

use anyhow::{bail, Context, Result};
use rohrpost_harness::django_app::{self, DjangoApp, Killed};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

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

/// daphne serving `app` on `port` with its default settings (those a
/// deployment that sets none runs with), its log (warnings and errors;
/// the access log goes to stdout, not kept) written to `log`, once it
/// listens.
pub fn daphne(app: &DjangoApp, port: u16, log: &Path) -> Result<Killed> {
    let log =
        std::fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let child = app
        .command()
        .args(["-m", "daphne", "-b", "127.0.0.1", "-p", &port.to_string()])
        .arg("notesite.asgi:application")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("cannot start daphne")?;
    let mut daphne = Killed(child);
    django_app::wait_listening(port, &mut daphne, "daphne", LISTEN_TIMEOUT)?;
    Ok(daphne)
}

/// The sender, started and ready.
pub struct Sender {
    child: tokio::process::Child,
    /// Kept open, so that what it prints last (`sent`) is not an error.
    _stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Sender {
    /// Starts `manage.py bench_send` and waits until it is ready to send
    /// `count` messages to `group`, stamped in microseconds after
    /// `start_unix_us`.
    pub async fn start(
        app: &DjangoApp,
        group: &str,
        count: u64,
        start_unix_us: u128,
    ) -> Result<Sender> {
        let count = count.to_string();
        let start_unix_us = start_unix_us.to_string();
        let mut command = tokio::process::Command::from(app.manage_command(&[
            "bench_send",
            "--wait-for-go",
            group,
            &count,
            &start_unix_us,
        ]));
        command
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
