//! Memory per idle connection: how much a server's resident set grows with
//! N open, fully set-up WebSocket connections that then sit idle.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use tokio::task::JoinSet;

use crate::{
    client::{self, Request, Socket, Verdict},
    report::{self, Table},
    servers::{self, Artifacts, Server, Spec, HOST_LOG},
};

/// How many connections exchange their first ping at once.
const PING_BATCH: usize = 200;

#[derive(Debug, Clone, Args)]
pub struct MemoryArgs {
    /// Idle connections to open.
    #[arg(long, default_value_t = 5000)]
    pub connections: usize,
}

struct Outcome {
    name: &'static str,
    before_kib: u64,
    after_kib: u64,
}

impl Outcome {
    fn per_connection_kib(&self, connections: usize) -> f64 {
        (self.after_kib as f64 - self.before_kib as f64) / connections as f64
    }
}

/// Fails when `open_files` (this process's limit, which the servers
/// inherit) is too low for the connections.
pub fn check_open_files(args: &MemoryArgs, open_files: u64) -> Result<()> {
    servers::check_open_files(args.connections, "--connections", open_files)
}

pub async fn run(artifacts: &Artifacts, args: &MemoryArgs, open_files: u64) -> Result<Table> {
    check_open_files(args, open_files)?;
    let ping = [artifacts.ping_lib.as_path()];
    let cases: [(&'static str, Spec<'_>); 2] = [
        ("baseline", Spec::Baseline { args: &[] }),
        (
            "host, ping",
            Spec::Host {
                libraries: &ping,
                log: HOST_LOG,
                args: &[],
            },
        ),
    ];
    let mut outcomes = Vec::new();
    for (name, spec) in cases {
        outcomes.push(measure(artifacts, name, spec, args.connections).await?);
    }

    let mut table = Table::new(
        &format!(
            "memory: {} idle connections (VmRSS after - before)",
            args.connections
        ),
        &[
            "server",
            "RSS before",
            "RSS after",
            "KB per connection",
            "vs baseline",
        ],
    );
    let base = outcomes[0].per_connection_kib(args.connections);
    for outcome in &outcomes {
        let per = outcome.per_connection_kib(args.connections);
        table.row(vec![
            outcome.name.to_owned(),
            format!("{:.1} MB", outcome.before_kib as f64 / 1024.0),
            format!("{:.1} MB", outcome.after_kib as f64 / 1024.0),
            format!("{per:.1}"),
            report::ratio(per, base),
        ]);
    }
    Ok(table)
}

async fn measure(
    artifacts: &Artifacts,
    name: &'static str,
    spec: Spec<'_>,
    connections: usize,
) -> Result<Outcome> {
    eprintln!("memory: {name}: starting the server");
    let mut server = Server::start(name, artifacts, spec, None)?;
    let before_kib = servers::rss_kib(server.pid())?;
    let sockets = client::connect_many(&server.url(), connections).await?;
    eprintln!("memory: {name}: {connections} connections open; one ping on each");
    let sockets = ping_each(sockets).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after_kib = servers::rss_kib(server.pid())?;
    server.check_running()?;
    eprintln!("memory: {name}: VmRSS {before_kib} KiB -> {after_kib} KiB; closing the connections");
    drop(sockets);
    server.stop()?;
    Ok(Outcome {
        name,
        before_kib,
        after_kib,
    })
}

/// Sends one ping on every connection and checks its pong,
/// [`PING_BATCH`] connections at a time.
async fn ping_each(sockets: Vec<Socket>) -> Result<Vec<Socket>> {
    let mut done = Vec::with_capacity(sockets.len());
    let mut rest = sockets.into_iter().enumerate();
    loop {
        let mut pending = JoinSet::new();
        for (index, mut socket) in rest.by_ref().take(PING_BATCH) {
            pending.spawn(async move {
                let id = index as u64 + 1;
                let reply = client::request(&mut socket, Request::Ping.frame(id)).await?;
                if client::judge(&reply, id, Request::Ping) != Verdict::Ok {
                    bail!("unexpected reply to a ping: {reply}");
                }
                Ok(socket)
            });
        }
        if pending.is_empty() {
            return Ok(done);
        }
        while let Some(joined) = pending.join_next().await {
            done.push(joined.context("a first ping panicked")??);
        }
    }
}
