//! `baseline-ping`: the yardstick of `rohrpost-bench`.
//!
//! A WebSocket server that answers rohrpost pings the way the host with the
//! ping plugin does, with the host's own envelope parser and reply writer,
//! but without plugins, a registry or a watcher. The distance between this
//! server and the host is what the plugin machinery costs.
//!
//! With `--minimal` it is the smallest reasonable ping server instead: the
//! frame parsed into a `serde_json::Value`, the pong built with `json!`.
//! That is the yardstick for the cost of the whole request path.

use std::net::SocketAddr;

use anyhow::Context;
use axum::{
    extract::{
        ws::{Message, WebSocket},
        State, WebSocketUpgrade,
    },
    response::Response,
    routing::get,
    serve::ListenerExt,
    Router,
};
use clap::Parser;
use futures_util::SinkExt;
use rohrpost_plugin_api::wire;
use rohrpost_protocol::{self as protocol, Rejection};
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// A plugin-free rohrpost ping server, the baseline of the benchmarks.
#[derive(Debug, Parser)]
#[command(name = "baseline-ping", version, about)]
struct Config {
    /// Address and port to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,

    /// Path of the WebSocket endpoint.
    #[arg(long, default_value = "/ws/rohrpost/")]
    ws_path: String,

    /// Per-connection WebSocket read buffer in bytes (as the host's).
    #[arg(long, default_value_t = 4096)]
    read_buffer_size: usize,

    /// Worker threads of the async runtime (default: one per CPU core), so
    /// that it can be compared with the host at equal worker counts.
    #[arg(long)]
    workers: Option<usize>,

    /// Answer with plain serde_json instead of the host's parser and writer.
    #[arg(long)]
    minimal: bool,
}

/// What the server answers with.
#[derive(Clone, Copy)]
struct Answering {
    read_buffer_size: usize,
    answer: fn(&str) -> String,
}

fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = config.workers {
        runtime.worker_threads(workers.max(1));
    }
    let runtime = runtime.enable_all().build()?;
    runtime.block_on(run(config))
}

async fn run(config: Config) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    // The same line the host logs; the benchmark reads the address from it.
    eprintln!(
        "listening address={} path={}",
        listener.local_addr()?,
        config.ws_path
    );
    let router = Router::new()
        .route(&config.ws_path, get(upgrade))
        .with_state(Answering {
            read_buffer_size: config.read_buffer_size,
            answer: if config.minimal { minimal } else { answer },
        });
    // As the host: small writes leave at once.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router).await.context("server error")
}

async fn upgrade(upgrade: WebSocketUpgrade, State(answering): State<Answering>) -> Response {
    upgrade
        .read_buffer_size(answering.read_buffer_size)
        .on_upgrade(move |socket| serve(socket, answering.answer))
}

/// Serves one connection: read a frame, answer it, repeat (as the host's
/// connection task does).
async fn serve(mut socket: WebSocket, answer: fn(&str) -> String) {
    while let Some(Ok(message)) = socket.recv().await {
        let reply = match message {
            Message::Text(text) => answer(text.as_str()),
            Message::Binary(_) => Rejection::Binary.reply(),
            Message::Ping(_) | Message::Pong(_) => continue,
            Message::Close(_) => {
                let _ = socket.flush().await;
                continue;
            }
        };
        if socket.feed(Message::Text(reply.into())).await.is_err() {
            break;
        }
        if socket.flush().await.is_err() {
            break;
        }
    }
}

/// The reply to one text frame: a pong for `ping`, the host's error replies
/// for everything else.
fn answer(text: &str) -> String {
    let envelope = match protocol::parse(text) {
        Ok(envelope) => envelope,
        Err(rejection) => return rejection.reply(),
    };
    if envelope.kind != "ping" {
        let error = format!("Unknown message type '{}'.", envelope.kind);
        return wire::write_message(Some(envelope.id), Some(&envelope.kind), Some(&error), None);
    }
    // As the ping plugin: an object is echoed, any other value is wrapped.
    let data_text = match envelope.data.map(serde_json::from_str::<Value>) {
        None => None,
        Some(Ok(Value::Object(object))) => Some(Value::Object(object).to_string()),
        Some(Ok(other)) => Some(json!({ "data": other }).to_string()),
        Some(Err(error)) => {
            let error = format!("Could not read 'data': {error}");
            return wire::write_message(
                Some(envelope.id),
                Some(&envelope.kind),
                Some(&error),
                None,
            );
        }
    };
    wire::write_message(Some(envelope.id), Some("pong"), None, data_text.as_deref())
}

/// The minimal server's reply: a pong for an object with `"type":"ping"`,
/// its data echoed, and a short error for anything else.
fn minimal(text: &str) -> String {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(mut message)) if message.get("type") == Some(&json!("ping")) => {
            let mut pong = json!({ "id": message.remove("id"), "type": "pong" });
            if let Some(data) = message.remove("data") {
                pong["data"] = data;
            }
            pong.to_string()
        }
        _ => json!({ "error": "Expected a ping." }).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::{answer, minimal};

    #[test]
    fn the_minimal_server_answers_pings() {
        assert_eq!(
            minimal(r#"{"id":1,"type":"ping","data":{"seq":1}}"#),
            r#"{"id":1,"type":"pong","data":{"seq":1}}"#
        );
        assert_eq!(minimal("[]"), r#"{"error":"Expected a ping."}"#);
    }

    #[test]
    fn pings_are_answered_like_the_ping_plugin() {
        assert_eq!(
            answer(r#"{"id":1,"type":"ping","data":{"seq":1}}"#),
            r#"{"id":1,"type":"pong","data":{"seq":1}}"#
        );
        assert_eq!(
            answer(r#"{"id":"a","type":"ping","data":[1]}"#),
            r#"{"id":"a","type":"pong","data":{"data":[1]}}"#
        );
        assert_eq!(
            answer(r#"{"id":2,"type":"ping"}"#),
            r#"{"id":2,"type":"pong"}"#
        );
    }

    #[test]
    fn other_frames_get_the_host_error_replies() {
        assert_eq!(
            answer(r#"{"id":3,"type":"nope"}"#),
            r#"{"id":3,"type":"nope","error":"Unknown message type 'nope'."}"#
        );
        assert_eq!(
            answer("42"),
            r#"{"error":"Expected a JSON object as message."}"#
        );
    }
}
