//! One rohrpost client connection as the benchmarks use it: connect, send a
//! request, wait for the next text frame, and tell a good reply from a bad
//! one.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::{net::TcpStream, task::JoinSet};
use tokio_tungstenite::{
    connect_async_with_config,
    tungstenite::{
        client::IntoClientRequest, http::HeaderValue, protocol::WebSocketConfig, Message,
    },
    MaybeTlsStream, WebSocketStream,
};

/// How long a request may wait for its reply.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// How many connections are opened at once.
const CONNECT_BATCH: usize = 200;

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What a request is: its frame and the reply type it expects.
#[derive(Debug, Clone, Copy)]
pub enum Request {
    /// `ping` with `{"seq": n}`, answered by a `pong` echoing it.
    Ping,
    /// The testkit plugin's `sleep` with `{"ms": 0}`: a handler run on the
    /// host's worker pool.
    PooledSleep,
    /// `increment` with `{"by": 1}`, answered with the same type and the
    /// connection's count (the Django test app's rohrpost handler, served
    /// by daphne or through the proxy plugin).
    Increment,
}

impl Request {
    pub fn frame(self, id: u64) -> String {
        match self {
            Request::Ping => format!(r#"{{"id":{id},"type":"ping","data":{{"seq":{id}}}}}"#),
            Request::PooledSleep => format!(r#"{{"id":{id},"type":"sleep","data":{{"ms":0}}}}"#),
            Request::Increment => {
                format!(r#"{{"id":{id},"type":"increment","data":{{"by":1}}}}"#)
            }
        }
    }

    pub fn reply_type(self) -> &'static str {
        match self {
            Request::Ping => "pong",
            Request::PooledSleep => "sleep",
            Request::Increment => "increment",
        }
    }
}

/// The parts of a reply that are checked.
#[derive(Debug, Deserialize)]
pub struct Reply {
    pub id: Option<u64>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub error: Option<String>,
}

impl Reply {
    pub fn parse(text: &str) -> Result<Reply> {
        serde_json::from_str(text)
            .with_context(|| format!("reply is not a rohrpost message: {text}"))
    }
}

/// How a reply compares with what was expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    /// The reply carries an `error`.
    ErrorReply,
    /// Wrong id or type, or not a rohrpost message at all.
    Wrong,
}

pub fn judge(text: &str, id: u64, request: Request) -> Verdict {
    match Reply::parse(text) {
        Ok(reply) if reply.error.is_some() => Verdict::ErrorReply,
        Ok(reply)
            if reply.id == Some(id) && reply.kind.as_deref() == Some(request.reply_type()) =>
        {
            Verdict::Ok
        }
        _ => Verdict::Wrong,
    }
}

/// A connection setting that reads at most 4 KiB per read call. The
/// default (128 KiB) zero-fills the whole buffer before every read, which
/// costs more than the rest of reading a small message.
pub fn small_reads() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(4096)
}

/// Opens a WebSocket connection with Nagle's algorithm off.
pub async fn connect(url: &str) -> Result<Socket> {
    connect_with(url, None).await
}

/// [`connect`] with these settings instead of the defaults.
pub async fn connect_with(url: &str, config: Option<WebSocketConfig>) -> Result<Socket> {
    let (socket, _) = connect_async_with_config(url, config, true)
        .await
        .with_context(|| format!("cannot connect to {url}"))?;
    Ok(socket)
}

/// [`connect_with`], offering permessage-deflate when `deflate` is set
/// ([`crate::deflate::OFFER`]); fails when the server does not accept it.
pub async fn connect_offering(
    url: &str,
    config: Option<WebSocketConfig>,
    deflate: bool,
) -> Result<Socket> {
    if !deflate {
        return connect_with(url, config).await;
    }
    let mut request = url
        .into_client_request()
        .with_context(|| format!("not a WebSocket URL: {url}"))?;
    request.headers_mut().insert(
        "Sec-WebSocket-Extensions",
        HeaderValue::from_static(crate::deflate::OFFER),
    );
    let (socket, response) = connect_async_with_config(request, config, true)
        .await
        .with_context(|| format!("cannot connect to {url}"))?;
    let answer = response
        .headers()
        .get("Sec-WebSocket-Extensions")
        .and_then(|value| value.to_str().ok());
    if !crate::deflate::accepted(answer) {
        bail!("{url} did not accept permessage-deflate (answered {answer:?})");
    }
    Ok(socket)
}

/// Opens `count` connections, [`CONNECT_BATCH`] at a time.
pub async fn connect_many(url: &str, count: usize) -> Result<Vec<Socket>> {
    connect_many_with(url, count, None).await
}

/// [`connect_many`] with these settings instead of the defaults.
pub async fn connect_many_with(
    url: &str,
    count: usize,
    config: Option<WebSocketConfig>,
) -> Result<Vec<Socket>> {
    let mut sockets = Vec::with_capacity(count);
    while sockets.len() < count {
        let batch = CONNECT_BATCH.min(count - sockets.len());
        let mut pending = JoinSet::new();
        for _ in 0..batch {
            let url = url.to_owned();
            pending.spawn(async move { connect_with(&url, config).await });
        }
        while let Some(done) = pending.join_next().await {
            sockets.push(done.context("a connection attempt panicked")??);
        }
    }
    Ok(sockets)
}

/// [`connect_many`], each connection offering permessage-deflate when
/// `deflate` is set.
pub async fn connect_many_offering(url: &str, count: usize, deflate: bool) -> Result<Vec<Socket>> {
    let mut sockets = Vec::with_capacity(count);
    while sockets.len() < count {
        let batch = CONNECT_BATCH.min(count - sockets.len());
        let mut pending = JoinSet::new();
        for _ in 0..batch {
            let url = url.to_owned();
            pending.spawn(async move { connect_offering(&url, None, deflate).await });
        }
        while let Some(done) = pending.join_next().await {
            sockets.push(done.context("a connection attempt panicked")??);
        }
    }
    Ok(sockets)
}

/// Why no reply came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoReply {
    TimedOut,
    /// Closed, reset, or a frame that is not text.
    Dropped,
}

/// The next text frame, skipping WebSocket pings and pongs.
pub async fn next_text(socket: &mut Socket, timeout: Duration) -> Result<String, NoReply> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, socket.next()).await {
            Err(_) => return Err(NoReply::TimedOut),
            Ok(Some(Ok(Message::Text(text)))) => return Ok(text.to_string()),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)))) => continue,
            Ok(Some(Ok(Message::Binary(_) | Message::Close(_)))) | Ok(Some(Err(_))) | Ok(None) => {
                return Err(NoReply::Dropped)
            }
        }
    }
}

/// Sends one frame and returns the reply text.
pub async fn request(socket: &mut Socket, frame: String) -> Result<String> {
    socket
        .send(Message::text(frame))
        .await
        .context("cannot send a request")?;
    match next_text(socket, REPLY_TIMEOUT).await {
        Ok(text) => Ok(text),
        Err(NoReply::TimedOut) => bail!("no reply within {REPLY_TIMEOUT:?}"),
        Err(NoReply::Dropped) => bail!("the connection was dropped"),
    }
}

/// Closes a connection politely, waiting briefly for the server's close.
pub async fn close(mut socket: Socket) {
    if socket.close(None).await.is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while let Some(Ok(_)) = socket.next().await {}
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_judged() {
        let ping = Request::Ping;
        assert_eq!(
            judge(r#"{"id":7,"type":"pong","data":{"seq":7}}"#, 7, ping),
            Verdict::Ok
        );
        assert_eq!(judge(r#"{"id":8,"type":"pong"}"#, 7, ping), Verdict::Wrong);
        assert_eq!(judge(r#"{"id":7,"type":"sleep"}"#, 7, ping), Verdict::Wrong);
        assert_eq!(judge("nonsense", 7, ping), Verdict::Wrong);
        assert_eq!(
            judge(
                r#"{"id":7,"type":"ping","error":"Unknown message type 'ping'."}"#,
                7,
                ping
            ),
            Verdict::ErrorReply
        );
        assert_eq!(
            judge(
                r#"{"id":3,"type":"sleep","data":{"slept_ms":0}}"#,
                3,
                Request::PooledSleep
            ),
            Verdict::Ok
        );
    }
}
