//! The WebSocket handshake: the limits checked before a connection exists
//! (allowed origins, the connection limit) and the scope a connection's
//! handlers see.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use axum::{
    extract::{ConnectInfo, State, WebSocketUpgrade},
    http::{header, HeaderMap, StatusCode, Uri},
    response::{IntoResponse, Response},
};
use serde_json::{json, Map, Value};
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use crate::{
    config::Settings,
    connection::{self, Shared},
    shutdown::Shutdown,
};

/// What the WebSocket endpoint shares.
pub struct Endpoint {
    pub shared: Arc<Shared>,
    pub settings: Settings,
    /// One permit per open connection.
    pub slots: Arc<Semaphore>,
    pub shutdown: Arc<Shutdown>,
    pub next_connection: AtomicU64,
}

/// Accepts or refuses one WebSocket handshake.
pub async fn upgrade(
    upgrade: WebSocketUpgrade,
    State(endpoint): State<Arc<Endpoint>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let settings = &endpoint.settings;
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        if !settings.allowed_origins.allows(origin) {
            if crate::log_limit::ORIGIN_REFUSED.allow() {
                warn!(%remote, origin, "handshake refused: origin not allowed");
            }
            return (StatusCode::FORBIDDEN, "Origin not allowed.\n").into_response();
        }
    }
    let Ok(slot) = endpoint.slots.clone().try_acquire_owned() else {
        if crate::log_limit::CONNECTIONS_REFUSED.allow() {
            warn!(%remote, limit = settings.max_connections, "handshake refused: too many connections");
        }
        return (StatusCode::SERVICE_UNAVAILABLE, "Too many connections.\n").into_response();
    };
    let id = endpoint.next_connection.fetch_add(1, Ordering::Relaxed);
    debug!(connection = id, %remote, "connection opened");
    let scope: Arc<str> = scope_json(id, remote, &uri, &headers).into();
    let shared = endpoint.shared.clone();
    let stopping = endpoint.shutdown.handle();
    upgrade
        .read_buffer_size(settings.read_buffer_size)
        .max_message_size(settings.max_message_size)
        .max_frame_size(settings.max_message_size)
        .on_upgrade(move |socket| async move {
            connection::serve(socket, shared, scope, id, stopping).await;
            drop(slot);
        })
}

/// The connection's scope as plugins see it, built once per connection.
fn scope_json(id: u64, remote: SocketAddr, uri: &Uri, headers: &HeaderMap) -> String {
    let headers: Map<String, Value> = headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                Value::String(String::from_utf8_lossy(value.as_bytes()).into_owned()),
            )
        })
        .collect();
    json!({
        "connection_id": id,
        "remote_addr": remote.to_string(),
        "path": uri.path(),
        "query_string": uri.query().unwrap_or(""),
        "headers": headers,
    })
    .to_string()
}
