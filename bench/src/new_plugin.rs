//! Time to serve a new plugin: from the rename that deploys the ping plugin
//! into a running host's directory to the first `pong` a connected client
//! gets.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::{
    client::{self, Reply, Request, Socket},
    report::{median, ms, Table},
    servers::{Artifacts, Server, Spec, HOST_LOG},
};

/// How long a round may wait for the plugin to come or go.
const ROUND_TIMEOUT: Duration = Duration::from_secs(10);

/// The host's answer while no plugin serves `ping`.
const UNKNOWN: &str = "Unknown message type 'ping'.";

#[derive(Debug, Clone, Args)]
pub struct NewPluginArgs {
    /// How many times the plugin is deployed.
    #[arg(long, default_value_t = 10)]
    pub rounds: u32,
}

/// What the host makes of a ping right now.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Pong,
    Unknown,
}

pub async fn run(artifacts: &Artifacts, args: &NewPluginArgs) -> Result<Table> {
    if args.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    eprintln!("new-plugin: starting the host on an empty plugins directory");
    let mut server = Server::start(
        "host, empty",
        artifacts,
        Spec::Host {
            libraries: &[],
            log: HOST_LOG,
            args: &[],
        },
        None,
    )?;
    let dir = server.plugins_dir()?.to_owned();
    let installed = dir.join(
        artifacts
            .ping_lib
            .file_name()
            .context("the ping library has no file name")?,
    );
    let tmp = dir.join(".ping.so.tmp");
    let mut socket = client::connect(&server.url()).await?;
    let mut id = 0u64;
    let mut times = Vec::new();

    for round in 1..=args.rounds {
        match tokio::fs::remove_file(&installed).await {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                return Err(error).with_context(|| format!("cannot remove {}", installed.display()))
            }
        }
        let deadline = Instant::now() + ROUND_TIMEOUT;
        while ping(&mut socket, &mut id).await? != Answer::Unknown {
            if Instant::now() > deadline {
                bail!("round {round}: ping still answered {ROUND_TIMEOUT:?} after removing the plugin");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        tokio::fs::copy(&artifacts.ping_lib, &tmp)
            .await
            .with_context(|| format!("cannot copy the ping library to {}", tmp.display()))?;
        // The copy has the build's mode; the host refuses files others may
        // write.
        tokio::fs::set_permissions(&tmp, rohrpost_harness::plugin_permissions())
            .await
            .with_context(|| format!("cannot chmod {}", tmp.display()))?;
        let started = Instant::now();
        tokio::fs::rename(&tmp, &installed)
            .await
            .with_context(|| format!("cannot rename {} into place", tmp.display()))?;
        while ping(&mut socket, &mut id).await? != Answer::Pong {
            if started.elapsed() > ROUND_TIMEOUT {
                bail!("round {round}: no pong within {ROUND_TIMEOUT:?} of deploying the plugin");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let took = started.elapsed();
        eprintln!(
            "new-plugin: round {round}: first pong after {:.1} ms",
            ms(took)
        );
        times.push(took);
    }
    client::close(socket).await;
    server.check_running()?;
    server.stop()?;

    times.sort_unstable();
    let mut table = Table::new(
        &format!(
            "new-plugin: rename into the plugins directory to first pong, {} rounds",
            args.rounds
        ),
        &["rounds", "min", "median", "max"],
    );
    table.row(vec![
        times.len().to_string(),
        format!("{:.1} ms", ms(times[0])),
        format!("{:.1} ms", ms(median(&times))),
        format!("{:.1} ms", ms(times[times.len() - 1])),
    ]);
    Ok(table)
}

/// Sends one ping and classifies the answer; anything else is an error.
async fn ping(socket: &mut Socket, id: &mut u64) -> Result<Answer> {
    *id += 1;
    let text = client::request(socket, Request::Ping.frame(*id)).await?;
    let reply = Reply::parse(&text)?;
    if reply.id != Some(*id) {
        bail!("reply with the wrong id (expected {id}): {text}");
    }
    match (reply.kind.as_deref(), reply.error.as_deref()) {
        (Some("pong"), None) => Ok(Answer::Pong),
        (_, Some(UNKNOWN)) => Ok(Answer::Unknown),
        _ => bail!("unexpected reply to a ping: {text}"),
    }
}
