//! Restart after a crash: from SIGKILL to the ping plugin's worker process
//! (`isolation = "process"`) to the first `pong` that a connected client
//! gets from the next worker. The client pings all along; pings that meet
//! the dead worker are answered with the crash error and asked again.
//!
//! Two rows: the first crash of a worker (a freshly started host for each,
//! so that every crash is a first one, which the supervisor restarts at
//! once), and crashes in a row on one host, where the supervisor's backoff
//! for workers that keep dying young shows.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::{
    client::{self, Reply, Request, Socket},
    report::{median, ms, Table},
    servers::{Artifacts, Server, Spec, TempDir},
};

/// The host's log: the `listening` line, problems, but not the crash lines
/// this benchmark causes on purpose.
const LOG: &str =
    "warn,rohrpost_host::server=info,rohrpost_host::plugins::isolation::supervisor=off";

/// How long a crash may take to be served again before the run fails.
const CRASH_TIMEOUT: Duration = Duration::from_secs(30);

/// The reply to a ping that met the dead worker.
const CRASHED: &str = "Internal error: the plugin 'ping' crashed.";

#[derive(Debug, Clone, Args)]
pub struct RestartArgs {
    /// First crashes measured, each on a freshly started host.
    #[arg(long, default_value_t = 10)]
    pub crashes: u32,

    /// Crashes in a row on one host (the backoff doubles from the second
    /// on: 25 ms, 50 ms, ... up to 5 s).
    #[arg(long, default_value_t = 6)]
    pub in_a_row: u32,
}

pub async fn run(artifacts: &Artifacts, args: &RestartArgs) -> Result<Table> {
    if args.crashes == 0 || args.in_a_row == 0 {
        bail!("--crashes and --in-a-row must be at least 1");
    }
    let config_dir = TempDir::new("bench-restart")?;
    let config = config_dir.path().join("rohrpost.toml");
    std::fs::write(&config, "[plugins.ping]\nisolation = \"process\"\n")
        .with_context(|| format!("cannot write {}", config.display()))?;
    let config = config.display().to_string();
    let ping = [artifacts.ping_lib.as_path()];
    let spec = Spec::Host {
        libraries: &ping,
        log: LOG,
        args: &["--config", config.as_str()],
    };
    // The same without the jail: what entering it adds to a start.
    let unjailed = Spec::Host {
        libraries: &ping,
        log: LOG,
        args: &["--config", config.as_str(), "--sandbox", "off"],
    };

    let mut first = Vec::new();
    let mut first_unjailed = Vec::new();
    for crash in 1..=args.crashes {
        for (spec, times, label) in [
            (spec, &mut first, "jailed"),
            (unjailed, &mut first_unjailed, "sandbox off"),
        ] {
            let mut server = Server::start("host, ping (process)", artifacts, spec, None)?;
            let mut socket = client::connect(&server.url()).await?;
            let mut id = 0;
            let took = crash_and_wait(&server, &mut socket, &mut id).await?;
            eprintln!(
                "restart: first crash {crash} ({label}): served again after {:.1} ms",
                ms(took)
            );
            times.push(took);
            client::close(socket).await;
            server.check_running()?;
            server.stop()?;
        }
    }

    let mut in_a_row = Vec::new();
    let mut server = Server::start("host, ping (process)", artifacts, spec, None)?;
    let mut socket = client::connect(&server.url()).await?;
    let mut id = 0;
    for crash in 1..=args.in_a_row {
        let took = crash_and_wait(&server, &mut socket, &mut id).await?;
        eprintln!(
            "restart: crash {crash} in a row: served again after {:.1} ms",
            ms(took)
        );
        in_a_row.push(took);
    }
    client::close(socket).await;
    server.check_running()?;
    server.stop()?;

    let mut table = Table::new(
        &format!(
            "restart: SIGKILL to the ping plugin's worker to the next pong, {} first crashes, {} in a row",
            args.crashes, args.in_a_row
        ),
        &["crashes", "min", "median", "max", "in crash order"],
    );
    for (name, times) in [
        ("first crash of a worker (a fresh host each)", first),
        (
            "first crash, sandbox = \"off\" (same run, alternating)",
            first_unjailed,
        ),
        ("crashes in a row (one host, with backoff)", in_a_row),
    ] {
        let order = times
            .iter()
            .map(|t| format!("{:.0}", ms(*t)))
            .collect::<Vec<_>>()
            .join(", ");
        let mut sorted = times;
        sorted.sort_unstable();
        table.row(vec![
            name.to_owned(),
            format!("{:.1} ms", ms(sorted[0])),
            format!("{:.1} ms", ms(median(&sorted))),
            format!("{:.1} ms", ms(sorted[sorted.len() - 1])),
            format!("{order} ms"),
        ]);
    }
    Ok(table)
}

/// Makes sure ping is served (so that the worker has had a call: one that
/// dies before any call counts as a failed start), kills the worker, and
/// returns the time from the kill to the next pong.
async fn crash_and_wait(server: &Server, socket: &mut Socket, id: &mut u64) -> Result<Duration> {
    let deadline = Instant::now() + CRASH_TIMEOUT;
    while !ping(socket, id).await? {
        if Instant::now() > deadline {
            bail!("ping is not served within {CRASH_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The process that runs the plugin: the host's child, or in its jail
    // the child's only descendant without children (waiter → init →
    // worker).
    let mut worker = server.pid();
    loop {
        let children: Vec<u32> = rohrpost_harness::children(worker).into_iter().collect();
        match children[..] {
            [] if worker != server.pid() => break,
            [child] => worker = child,
            _ => bail!("the host should have one worker process, {worker} has {children:?}"),
        }
    }
    let pid = libc::pid_t::try_from(worker).context("a process id out of range")?;
    let killed = Instant::now();
    // SAFETY: kill(2) on a descendant of the host that has not been
    // reaped: its parent reaps it only once it has ended.
    if unsafe { libc::kill(pid, libc::SIGKILL) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot kill the worker {pid}"));
    }
    // Gone (or a zombie) before a pong counts: one from the dying worker
    // would not be a restart.
    while rohrpost_harness::is_running(worker) {
        if killed.elapsed() > CRASH_TIMEOUT {
            bail!("the worker {pid} still runs {CRASH_TIMEOUT:?} after SIGKILL");
        }
        tokio::task::yield_now().await;
    }
    while !ping(socket, id).await? {
        if killed.elapsed() > CRASH_TIMEOUT {
            bail!("ping is not served again within {CRASH_TIMEOUT:?} of the crash");
        }
    }
    Ok(killed.elapsed())
}

/// Sends one ping: `true` for its pong, `false` for the crash error;
/// anything else is an error.
async fn ping(socket: &mut Socket, id: &mut u64) -> Result<bool> {
    *id += 1;
    let text = client::request(socket, Request::Ping.frame(*id)).await?;
    let reply = Reply::parse(&text)?;
    if reply.id != Some(*id) {
        bail!("reply with the wrong id (expected {id}): {text}");
    }
    match (reply.kind.as_deref(), reply.error.as_deref()) {
        (Some("pong"), None) => Ok(true),
        (_, Some(CRASHED)) => Ok(false),
        _ => bail!("unexpected reply to a ping: {text}"),
    }
}
