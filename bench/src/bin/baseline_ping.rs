//! `baseline-ping`: the yardstick of `rohrpost-bench`.
//!
//! A WebSocket server that answers rohrpost pings the way the host with the
//! ping plugin does, with the host's own envelope parser and reply writer,
//! but without plugins, a registry or a watcher. The distance between this
//! server and the host is what the plugin machinery costs.

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
use rohrpost_host::protocol::{self, Rejection};
use rohrpost_plugin_api::wire;
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
        .with_state(config.read_buffer_size);
    // As the host: small writes leave at once.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router).await.context("server error")
}

async fn upgrade(upgrade: WebSocketUpgrade, State(read_buffer_size): State<usize>) -> Response {
    upgrade.read_buffer_size(read_buffer_size).on_upgrade(serve)
}

/// Serves one connection: read a frame, answer it, repeat (as the host's
/// connection task does).
async fn serve(mut socket: WebSocket) {
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

#[cfg(test)]
mod tests {
    use super::answer;

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
