//! `baseline-fanout`: the floor of the fan-out benchmark.
//!
//! The least any server must do to send one notification to N WebSocket
//! subscribers: encode the frame once and write it to each socket, straight
//! from the notifying call, on two threads. No task or queue per
//! connection, no plugins, no groups (every subscriber is in the one group
//! it asked for). What this server takes on a machine is what that
//! machine's TCP stack takes; the host's time divided by it is what the
//! host's design costs on top.
//!
//! It speaks just enough of the host's protocol for `rohrpost-bench
//! fanout`: `subscribe` (answered as the subscriptions plugin does) and
//! `POST /api/notify` (answered with `{"delivered": n}`).

use std::{
    convert::Infallible,
    io::Write,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
};

use anyhow::Context;
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::{
    body::Incoming, header, server::conn::http1, service::service_fn, Method, Request, Response,
    StatusCode,
};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::{
    tungstenite::{
        handshake::derive_accept_key,
        protocol::{
            frame::{
                coding::{Data, OpCode},
                Frame,
            },
            Role,
        },
        Bytes, Message,
    },
    WebSocketStream,
};

/// The fan-out floor server.
#[derive(Debug, Parser)]
#[command(name = "baseline-fanout", version, about)]
struct Config {
    /// Address and port to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,

    /// Path of the WebSocket endpoint.
    #[arg(long, default_value = "/ws/rohrpost/")]
    ws_path: String,
}

/// Threads writing one notification (as the host's two workers).
const WRITERS: usize = 2;

struct State {
    ws_path: String,
    /// Subscribed connections, in blocking mode: nothing reads them after
    /// the subscription, and a small frame never fills a socket buffer.
    members: Mutex<Vec<std::net::TcpStream>>,
    next_id: AtomicU64,
}

type Answer = Response<Full<Bytes>>;

fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(config))
}

async fn run(config: Config) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    // The line the benchmark reads the address from, as the host's.
    eprintln!(
        "listening address={} path={}",
        listener.local_addr()?,
        config.ws_path
    );
    let state = Arc::new(State {
        ws_path: config.ws_path,
        members: Mutex::new(Vec::new()),
        next_id: AtomicU64::new(1),
    });
    loop {
        let (stream, _) = listener.accept().await.context("cannot accept")?;
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| route(request, state.clone()));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}

async fn route(request: Request<Incoming>, state: Arc<State>) -> Result<Answer, Infallible> {
    Ok(match (request.method(), request.uri().path()) {
        (&Method::POST, "/api/notify") => notify(request, &state).await,
        (&Method::GET, path) if path == state.ws_path => upgrade(request, state),
        _ => answer(StatusCode::NOT_FOUND, "{}".to_owned()),
    })
}

fn answer(status: StatusCode, json: String) -> Answer {
    let mut response = Response::new(Full::new(Bytes::from(json)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// Accepts the WebSocket handshake; the connection is then served by
/// [`subscribe`] on the raw TCP stream.
fn upgrade(mut request: Request<Incoming>, state: Arc<State>) -> Answer {
    let Some(key) = request.headers().get(header::SEC_WEBSOCKET_KEY) else {
        return answer(StatusCode::BAD_REQUEST, "{}".to_owned());
    };
    let accept = derive_accept_key(key.as_bytes());
    let upgraded = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let Ok(upgraded) = upgraded.await else {
            return;
        };
        // The stream hyper was given: the accepted TCP connection.
        let Ok(parts) = upgraded.downcast::<TokioIo<TcpStream>>() else {
            eprintln!("an upgraded connection is not a TCP stream");
            return;
        };
        if !parts.read_buf.is_empty() {
            eprintln!("a client sent frames before the handshake finished");
            return;
        }
        if let Err(error) = subscribe(parts.io.into_inner(), &state).await {
            eprintln!("a subscription failed: {error:#}");
        }
    });
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(
        header::UPGRADE,
        header::HeaderValue::from_static("websocket"),
    );
    headers.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("upgrade"),
    );
    if let Ok(accept) = header::HeaderValue::from_str(&accept) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}

/// Answers the connection's `subscribe` and makes it a member.
async fn subscribe(stream: TcpStream, state: &State) -> anyhow::Result<()> {
    let mut socket = WebSocketStream::from_raw_socket(stream, Role::Server, None).await;
    let reply = loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => break subscribed(&text)?,
            Some(Ok(_)) => continue,
            Some(Err(error)) => return Err(error).context("cannot read the subscription"),
            None => anyhow::bail!("the connection closed before subscribing"),
        }
    };
    socket.send(Message::text(reply)).await?;
    let stream = socket.into_inner().into_std()?;
    stream.set_nonblocking(false)?;
    state
        .members
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(stream);
    Ok(())
}

/// The reply to `{"id": i, "type": "subscribe", "data": {"type": t, "id": n}}`
/// as the subscriptions plugin gives it.
fn subscribed(text: &str) -> anyhow::Result<String> {
    #[derive(Deserialize)]
    struct Request<'a> {
        #[serde(borrow)]
        id: &'a RawValue,
        data: Target<'a>,
    }
    #[derive(Deserialize)]
    struct Target<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
        id: &'a RawValue,
    }
    let request: Request<'_> =
        serde_json::from_str(text).with_context(|| format!("not a subscription: {text}"))?;
    let group = format!(
        "{}-{}",
        request.data.kind,
        request.data.id.get().trim_matches('"')
    );
    Ok(format!(
        r#"{{"id":{},"type":"subscribe","data":{{"group":{}}}}}"#,
        request.id.get(),
        serde_json::to_string(&group)?
    ))
}

/// Sends a `subscription-update` to every member.
async fn notify(request: Request<Incoming>, state: &Arc<State>) -> Answer {
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(error) => {
            return answer(
                StatusCode::BAD_REQUEST,
                format!(r#"{{"error":{}}}"#, quoted(&error.to_string())),
            )
        }
    };
    let frame = match update_frame(&body, state.next_id.fetch_add(1, Ordering::Relaxed)) {
        Ok(frame) => frame,
        Err(error) => {
            return answer(
                StatusCode::BAD_REQUEST,
                format!(r#"{{"error":{}}}"#, quoted(&format!("{error:#}"))),
            )
        }
    };
    let state = state.clone();
    let delivered = tokio::task::spawn_blocking(move || write_to_all(&state, &frame))
        .await
        .unwrap_or(0);
    answer(StatusCode::OK, format!(r#"{{"delivered":{delivered}}}"#))
}

fn quoted(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"?\"".to_owned())
}

/// The WebSocket frame of the notification in `body`, with this id.
fn update_frame(body: &[u8], id: u64) -> anyhow::Result<Vec<u8>> {
    #[derive(Deserialize)]
    struct Notification<'a> {
        model: &'a str,
        pk: &'a RawValue,
        event: &'a str,
        object: &'a RawValue,
    }
    let notification: Notification<'_> =
        serde_json::from_slice(body).context("not a notification")?;
    let group = format!(
        "{}-{}",
        notification.model.to_lowercase(),
        notification.pk.get().trim_matches('"')
    );
    let text = format!(
        r#"{{"id":{id},"type":"subscription-update","data":{{"type":{},"group":{},"object":{}}}}}"#,
        quoted(notification.event),
        quoted(&group),
        notification.object.get()
    );
    let mut frame = Vec::with_capacity(text.len() + 10);
    Frame::message(Bytes::from(text), OpCode::Data(Data::Text), true)
        .format(&mut frame)
        .context("cannot encode the frame")?;
    Ok(frame)
}

/// Writes `frame` to every member, [`WRITERS`] threads sharing them;
/// returns to how many it was written.
fn write_to_all(state: &State, frame: &[u8]) -> usize {
    let members = state.members.lock().unwrap_or_else(PoisonError::into_inner);
    let share = members.len().div_ceil(WRITERS).max(1);
    std::thread::scope(|scope| {
        let writers: Vec<_> = members
            .chunks(share)
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .filter(|&stream| {
                            let mut stream: &std::net::TcpStream = stream;
                            stream.write_all(frame).is_ok()
                        })
                        .count()
                })
            })
            .collect();
        writers
            .into_iter()
            .map(|writer| writer.join().unwrap_or(0))
            .sum()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_are_answered_like_the_plugin() {
        assert_eq!(
            subscribed(r#"{"id":1,"type":"subscribe","data":{"type":"collection","id":1}}"#)
                .expect("a subscription"),
            r#"{"id":1,"type":"subscribe","data":{"group":"collection-1"}}"#
        );
        assert!(subscribed("{}").is_err());
    }

    #[test]
    fn notifications_become_one_frame() {
        let body = br#"{"model":"Collection","pk":1,"event":"update","object":{"seq":3}}"#;
        let frame = update_frame(body, 7).expect("a notification");
        let text = r#"{"id":7,"type":"subscription-update","data":{"type":"update","group":"collection-1","object":{"seq":3}}}"#;
        // A final text frame with a seven-bit length, then the text.
        assert!(text.len() < 126);
        assert_eq!(&frame[..2], &[0x81, text.len() as u8]);
        assert_eq!(&frame[2..], text.as_bytes());
        assert!(update_frame(b"{}", 1).is_err());
    }
}
