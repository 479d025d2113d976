//! Memory per idle connection: how much a server's resident set grows with
//! N open, fully set-up WebSocket connections that then sit idle; for the
//! host also with connections that negotiated permessage-deflate, which
//! must cost no more.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use futures_util::SinkExt;
use tokio::{io::AsyncReadExt, task::JoinSet};
use tokio_tungstenite::{tungstenite::Message, MaybeTlsStream};

use crate::{
    client::{self, Request, Socket, Verdict},
    deflate::Inflater,
    frames::{self, Frame},
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
    let host = || Spec::Host {
        libraries: &ping,
        log: HOST_LOG,
        args: &[],
    };
    // The last: connections that offer permessage-deflate, with a reply
    // large enough to go compressed before they sit idle.
    let cases: [(&'static str, Spec<'_>, bool); 3] = [
        ("baseline", Spec::Baseline { args: &[] }, false),
        ("host, ping", host(), false),
        ("host, ping, compressed", host(), true),
    ];
    let mut outcomes = Vec::new();
    for (name, spec, deflate) in cases {
        outcomes.push(measure(artifacts, name, spec, args.connections, deflate).await?);
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
    deflate: bool,
) -> Result<Outcome> {
    eprintln!("memory: {name}: starting the server");
    let mut server = Server::start(name, artifacts, spec, None)?;
    let before_kib = servers::rss_kib(server.pid())?;
    let sockets = client::connect_many_offering(&server.url(), connections, deflate).await?;
    eprintln!("memory: {name}: {connections} connections open; one ping on each");
    let sockets = ping_each(sockets, deflate).await?;
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
/// [`PING_BATCH`] connections at a time. With `deflate` the ping carries
/// data enough for its pong to go compressed.
async fn ping_each(sockets: Vec<Socket>, deflate: bool) -> Result<Vec<Socket>> {
    let mut done = Vec::with_capacity(sockets.len());
    let mut rest = sockets.into_iter().enumerate();
    loop {
        let mut pending = JoinSet::new();
        for (index, mut socket) in rest.by_ref().take(PING_BATCH) {
            pending.spawn(async move {
                let id = index as u64 + 1;
                if deflate {
                    compressed_ping(&mut socket, id).await?;
                    return Ok(socket);
                }
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

/// A ping whose pong (about 2 KB of JSON) goes compressed: the connection
/// has compressed a message before it sits idle. tungstenite cannot read a
/// compressed message, so the pong is read off the TCP stream under it
/// (nothing else is on its way), inflated and checked.
async fn compressed_ping(socket: &mut Socket, id: u64) -> Result<()> {
    let items = vec![r#"{"title":"item","done":false}"#; 60].join(",");
    let frame = format!(r#"{{"id":{id},"type":"ping","data":{{"seq":{id},"items":[{items}]}}}}"#);
    socket
        .send(Message::text(frame))
        .await
        .context("cannot send a ping")?;
    let MaybeTlsStream::Plain(stream) = socket.get_mut() else {
        bail!("the benchmarks use plain TCP only");
    };
    let mut read = Vec::with_capacity(4096);
    let payload = tokio::time::timeout(client::REPLY_TIMEOUT, async {
        loop {
            if let Some((frame, _)) = frames::parse(&read)? {
                return match frame {
                    Frame::Compressed(payload) => Ok(payload.to_vec()),
                    _ => bail!("the pong did not come compressed"),
                };
            }
            if stream.read_buf(&mut read).await? == 0 {
                bail!("closed before the pong");
            }
        }
    })
    .await
    .context("no pong in time")??;
    let mut inflater = Inflater::default();
    let pong = std::str::from_utf8(inflater.inflate(&payload)?)
        .context("a pong that is not UTF-8")?
        .to_owned();
    if client::judge(&pong, id, Request::Ping) != Verdict::Ok {
        bail!("unexpected reply to a ping: {pong}");
    }
    Ok(())
}
