//! `yardstick`: what `cargo xtask bench throughput` judges the host by.
//!
//! The least work a correct rohrpost ping server does: axum's WebSocket
//! with a 4 KiB read buffer, each text frame parsed by `serde_json` into a
//! `Value`, the pong written back (`data` echoed when it is an object,
//! wrapped otherwise), rohrpost's error for anything else. No plugins,
//! routing table, groups, middleware or logging on the request path;
//! built with fat LTO and one codegen unit. Its own workspace, so that
//! `serde_json` keeps its default features.
//!
//!     yardstick --listen 127.0.0.1:8102 --workers 2 --ws-path /ws/rohrpost/

use std::net::SocketAddr;

use axum::{
    extract::ws::{Message, WebSocket, WebSocketUpgrade},
    response::Response,
    routing::get,
    serve::ListenerExt,
    Router,
};
use serde::Serialize;
use serde_json::Value;

/// A reply, written straight from borrowed parts (no tree is built).
#[derive(Serialize)]
struct Reply<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a Value>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Data<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

/// A pong's `data`: the request's object as it is, anything else wrapped.
#[derive(Serialize)]
#[serde(untagged)]
enum Data<'a> {
    Object(&'a Value),
    Wrapped { data: &'a Value },
}

fn text(reply: &Reply<'_>) -> String {
    serde_json::to_string(reply).unwrap_or_default()
}

/// The reply to one text frame.
fn reply(frame: &str) -> String {
    let error = |id, kind, error| {
        text(&Reply {
            id,
            kind,
            data: None,
            error: Some(error),
        })
    };
    let Ok(Value::Object(message)) = serde_json::from_str::<Value>(frame) else {
        return error(None, None, "Expected a JSON object as message.");
    };
    let id = message.get("id");
    match message.get("type") {
        Some(Value::String(kind)) if kind == "ping" => text(&Reply {
            id,
            kind: Some("pong"),
            data: message.get("data").map(|data| match data {
                Value::Object(_) => Data::Object(data),
                other => Data::Wrapped { data: other },
            }),
            error: None,
        }),
        Some(Value::String(kind)) => {
            error(id, Some(kind), &format!("Unknown message type '{kind}'."))
        }
        _ => error(id, None, "Missing required field 'type'."),
    }
}

async fn serve(mut socket: WebSocket) {
    while let Some(Ok(message)) = socket.recv().await {
        let answer = match message {
            Message::Text(text) => reply(text.as_str()),
            Message::Close(_) => return,
            _ => continue,
        };
        if socket.send(Message::Text(answer.into())).await.is_err() {
            return;
        }
    }
}

async fn upgrade(ws: WebSocketUpgrade) -> Response {
    ws.read_buffer_size(4096).on_upgrade(serve)
}

/// `--listen ADDR`, `--workers N` and `--ws-path PATH`; nothing else.
fn arguments() -> Result<(SocketAddr, usize, String), String> {
    let mut listen: SocketAddr = ([127, 0, 0, 1], 0).into();
    let mut workers = 2;
    let mut path = "/ws/rohrpost/".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().ok_or(format!("{arg} needs a value"))?;
        match arg.as_str() {
            "--listen" => listen = value.parse().map_err(|e| format!("--listen: {e}"))?,
            "--workers" => workers = value.parse().map_err(|e| format!("--workers: {e}"))?,
            "--ws-path" => path = value,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok((listen, workers, path))
}

fn main() {
    let (listen, workers, path) = match arguments() {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("yardstick: {e}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .unwrap_or_else(|e| panic!("cannot listen on {listen}: {e}"));
        let address = listener.local_addr().expect("a bound address");
        // The line the bench waits for.
        eprintln!("yardstick listening address={address}");
        let app = Router::new().route(&path, get(upgrade));
        // Replies go out at once (no Nagle delay), as every server here.
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, app).await.expect("the server");
    });
}
