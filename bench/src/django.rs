//! What the channels benchmark needs of the Django test app beyond
//! [`DjangoApp`]: daphne with its log kept, and the sender
//! (`manage.py bench_send --wait-for-go`), which starts up, says `ready`,
//! and sends only when told, so that no server's CPU is measured while
//! Python starts.

use std::{path::Path, process::Stdio, time::Duration};

use anyhow::{bail, Context, Result};
use rohrpost_harness::django_app::{self, DjangoApp, Killed};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// How long the sender may take to start (Python, Django, the layer's
/// first connection to Redis).
const SENDER_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the sender may take to exit once its sends are done.
const SENDER_EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long daphne may take to listen.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(30);

/// daphne serving `app` on `port` with its default settings (those a
/// deployment that sets none runs with), its log (warnings and errors;
/// the access log goes to stdout, not kept) written to `log`, once it
/// listens.
pub fn daphne(app: &DjangoApp, port: u16, log: &Path) -> Result<Killed> {
    let log =
        std::fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let mut daphne = app.daphne_logging(port, log)?;
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
