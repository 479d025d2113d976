//! The subscribe phase of the notification benchmarks: many connections
//! opened and subscribed, a few at a time, each read from the moment it is
//! open until the measurement takes it over.
//!
//! Reading matters: a server may ping an idle connection and drop it when
//! no pong comes (daphne pings after 20 s and drops after 30 s more), and a
//! connection nobody reads answers nothing. A browser always answers, so
//! every connection here does too. Pacing matters as well: a server has a
//! deadline for each opening handshake (daphne 5 s, including the
//! application's accept), and asking for far more at once than it can
//! answer in that time measures a connection storm, not notifications.
//! Nothing is retried: every connection that fails is counted, by what
//! failed and after how many others were subscribed, and reported.

use std::{
    collections::BTreeMap,
    fmt,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use tokio::{
    sync::{watch, Semaphore},
    task::JoinSet,
};
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, Socket};

/// How many connections are being opened or subscribed at once.
pub const WINDOW: usize = 50;

/// How long the opening handshake of one connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// What failed for one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Failure {
    /// The opening handshake failed (refused, reset, HTTP error).
    Connect,
    /// No opening handshake within [`CONNECT_TIMEOUT`].
    ConnectTimedOut,
    /// The subscribe request could not be sent.
    Send,
    /// No reply to the subscribe request within [`client::REPLY_TIMEOUT`].
    NoReply,
    /// The connection closed before the reply.
    DroppedBeforeReply,
    /// The reply was not the subscription.
    Refused,
    /// The connection closed (or sent a message) after subscribing,
    /// before the measurement began.
    DroppedWhileWaiting,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Failure::Connect => "the opening handshake failed",
            Failure::ConnectTimedOut => "no opening handshake in time",
            Failure::Send => "the subscribe request could not be sent",
            Failure::NoReply => "no subscribe reply in time",
            Failure::DroppedBeforeReply => "closed before the subscribe reply",
            Failure::Refused => "the subscribe reply was not the subscription",
            Failure::DroppedWhileWaiting => "closed after subscribing, before the measurement",
        })
    }
}

/// The failures of one kind.
#[derive(Debug, Clone)]
pub struct Failed {
    pub count: usize,
    /// How many connections were subscribed when the first of them failed.
    pub first_at: usize,
    /// The first one's error, as the client saw it.
    pub first_error: String,
}

/// The outcome of the subscribe phase.
pub struct Subscribed {
    /// The connections subscribed and still open.
    pub sockets: Vec<Socket>,
    pub failures: BTreeMap<Failure, Failed>,
    /// From the first connection attempt to the last reply.
    pub took: Duration,
}

impl Subscribed {
    pub fn failed(&self) -> usize {
        self.failures.values().map(|f| f.count).sum()
    }

    /// Prints the failures, one line per kind.
    pub fn report(&self, label: &str, name: &str) {
        for (failure, failed) in &self.failures {
            eprintln!(
                "{label}: {name}: {} connection(s): {failure} (the first with {} subscribed: {})",
                failed.count, failed.first_at, failed.first_error
            );
        }
    }

    /// The sockets, or an error naming the failures when there are any.
    pub fn all(self, label: &str, name: &str) -> Result<Vec<Socket>> {
        if self.failed() > 0 {
            self.report(label, name);
            bail!(
                "{label}: {} of {} connections to {name} did not subscribe",
                self.failed(),
                self.failed() + self.sockets.len()
            );
        }
        Ok(self.sockets)
    }
}

/// Opens `count` connections to `url` and sends each `frame`, at most
/// [`WINDOW`] at a time; `check` judges the reply. The subscribed ones are
/// kept read (pings answered) until all are done. With `deflate`, each
/// offers permessage-deflate, and one the server does not accept fails.
pub async fn subscribe_many(
    url: &str,
    count: usize,
    frame: &'static str,
    check: fn(&str) -> Result<()>,
    deflate: bool,
) -> Result<Subscribed> {
    let start = Instant::now();
    let window = Arc::new(Semaphore::new(WINDOW));
    let subscribed = Arc::new(AtomicUsize::new(0));
    let (release, released) = watch::channel(false);
    let mut tasks = JoinSet::new();
    for _ in 0..count {
        let permit = window
            .clone()
            .acquire_owned()
            .await
            .context("the subscribe window closed")?;
        let url = url.to_owned();
        let subscribed = subscribed.clone();
        let released = released.clone();
        tasks.spawn(async move {
            let outcome = open_and_subscribe(&url, frame, check, deflate).await;
            drop(permit);
            let at = subscribed.load(Ordering::Relaxed);
            let socket = outcome.map_err(|(failure, error)| (failure, at, error))?;
            subscribed.fetch_add(1, Ordering::Relaxed);
            keep_reading(socket, released).await.map_err(|error| {
                let at = subscribed.fetch_sub(1, Ordering::Relaxed) - 1;
                (Failure::DroppedWhileWaiting, at, error)
            })
        });
    }
    // Every permit back: every connection has its reply or has failed.
    let all = u32::try_from(WINDOW).context("the subscribe window")?;
    let _all = window
        .acquire_many(all)
        .await
        .context("the subscribe window closed")?;
    let took = start.elapsed();
    release
        .send(true)
        .context("the connections stopped listening")?;
    let mut sockets = Vec::with_capacity(count);
    let mut failures: BTreeMap<Failure, Failed> = BTreeMap::new();
    while let Some(joined) = tasks.join_next().await {
        match joined.context("a subscribing connection panicked")? {
            Ok(socket) => sockets.push(socket),
            Err((failure, at, error)) => {
                let failed = failures.entry(failure).or_insert(Failed {
                    count: 0,
                    first_at: at,
                    first_error: error.clone(),
                });
                failed.count += 1;
                if at < failed.first_at {
                    failed.first_at = at;
                    failed.first_error = error;
                }
            }
        }
    }
    Ok(Subscribed {
        sockets,
        failures,
        took,
    })
}

/// One connection: the opening handshake, the request and its reply.
async fn open_and_subscribe(
    url: &str,
    frame: &str,
    check: fn(&str) -> Result<()>,
    deflate: bool,
) -> Result<Socket, (Failure, String)> {
    let connected = tokio::time::timeout(
        CONNECT_TIMEOUT,
        client::connect_offering(url, Some(client::small_reads()), deflate),
    )
    .await;
    let mut socket = match connected {
        Err(_) => return Err((Failure::ConnectTimedOut, format!("{CONNECT_TIMEOUT:?}"))),
        Ok(Err(error)) => return Err((Failure::Connect, format!("{error:#}"))),
        Ok(Ok(socket)) => socket,
    };
    if let Err(error) = socket.send(Message::text(frame)).await {
        return Err((Failure::Send, error.to_string()));
    }
    let reply = match client::next_text(&mut socket, client::REPLY_TIMEOUT).await {
        Ok(reply) => reply,
        Err(client::NoReply::TimedOut) => {
            return Err((Failure::NoReply, format!("{:?}", client::REPLY_TIMEOUT)))
        }
        Err(client::NoReply::Dropped) => {
            return Err((Failure::DroppedBeforeReply, "closed or reset".to_owned()))
        }
    };
    check(&reply).map_err(|error| (Failure::Refused, format!("{error:#}")))?;
    Ok(socket)
}

/// Reads the connection, answering pings at once, until `released`; an
/// error when it closes or a message comes first.
async fn keep_reading(
    mut socket: Socket,
    mut released: watch::Receiver<bool>,
) -> Result<Socket, String> {
    loop {
        let read = tokio::select! {
            biased;
            // A closed sender counts as the release too.
            _ = released.wait_for(|go| *go) => None,
            read = socket.next() => Some(read),
        };
        match read {
            None => return Ok(socket),
            Some(Some(Ok(Message::Ping(_)))) => {
                // The pong is queued by the read; send it now, not with
                // the next read (which may be the measurement's).
                socket
                    .flush()
                    .await
                    .map_err(|error| format!("cannot send a pong: {error}"))?;
            }
            Some(Some(Ok(Message::Pong(_) | Message::Frame(_)))) => {}
            Some(Some(Ok(Message::Text(text)))) => {
                return Err(format!("a message before the measurement: {text}"))
            }
            Some(Some(Ok(Message::Binary(_)))) => {
                return Err("a binary message before the measurement".to_owned())
            }
            Some(Some(Ok(Message::Close(close)))) => return Err(format!("closed: {close:?}")),
            Some(Some(Err(error))) => return Err(error.to_string()),
            Some(None) => return Err("closed".to_owned()),
        }
    }
}
