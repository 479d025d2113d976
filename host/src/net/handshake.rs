//! The WebSocket handshake: the limits checked before a connection exists
//! (allowed origins, the connection limit), the upgrade itself, and the
//! scope a connection's handlers see.
//!
//! permessage-deflate is negotiated here ([`crate::net::deflate_offer`]).
//!
//! The upgrade is done here rather than with axum's `WebSocketUpgrade`:
//! the connection then reads and writes its frames itself
//! ([`crate::socket`]), on the raw socket that closing well needs (see
//! [`crate::conn::linger`]).

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use axum::{
    body::Body,
    extract::{ConnectInfo, Request, State},
    http::{header, HeaderMap, HeaderValue, StatusCode, Uri},
    response::{IntoResponse, Response},
};
use hyper::upgrade::OnUpgrade;
use serde_json::{json, Map, Value};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tracing::{debug, warn};

use crate::{
    base::shutdown::Shutdown,
    config::{Compression, Settings},
    conn::{self, Common},
    net::accept,
    net::client_limits::PerClient,
    net::deflate_offer,
    net::forwarded::{self, Client},
    socket::{deflate::Deflate, Socket},
};

/// What the WebSocket endpoint shares.
pub(crate) struct Endpoint {
    pub shared: Arc<Common>,
    pub settings: Settings,
    /// One permit per open connection.
    pub slots: Arc<Semaphore>,
    /// Places per client address, when limited.
    pub per_client: Option<Arc<PerClient>>,
    pub shutdown: Arc<Shutdown>,
    pub next_connection: AtomicU64,
}

/// Accepts or refuses one WebSocket handshake.
pub(crate) async fn upgrade(
    State(endpoint): State<Arc<Endpoint>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    mut request: Request,
) -> Response {
    let settings = &endpoint.settings;
    let headers = request.headers();
    let key = match websocket_key(headers) {
        Ok(key) => key,
        Err(refusal) => return refusal.into_response(),
    };
    let client = forwarded::client(remote, headers, &settings.trusted_proxies);
    let remote = client.addr;
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        if !settings.allowed_origins.allows(origin, client.secure) {
            if crate::base::log_limit::ORIGIN_REFUSED.allow() {
                warn!(%remote, origin, "handshake refused: origin not allowed");
            }
            return (StatusCode::FORBIDDEN, "Origin not allowed.\n").into_response();
        }
    }
    let Some(on_upgrade) = request.extensions_mut().remove::<OnUpgrade>() else {
        return (
            StatusCode::UPGRADE_REQUIRED,
            "This connection cannot be upgraded.\n",
        )
            .into_response();
    };
    let client_slot = match &endpoint.per_client {
        None => None,
        Some(per_client) => match per_client.admit(remote.ip()) {
            Some(place) => Some(place),
            None => {
                if crate::base::log_limit::CLIENT_LIMITED.allow() {
                    warn!(%remote, limit = per_client.limit(), "handshake refused: too many connections from this client");
                }
                return (
                    StatusCode::TOO_MANY_REQUESTS,
                    "Too many connections from your address.\n",
                )
                    .into_response();
            }
        },
    };
    let Ok(slot) = endpoint.slots.clone().try_acquire_owned() else {
        if crate::base::log_limit::CONNECTIONS_REFUSED.allow() {
            warn!(%remote, limit = settings.max_connections, "handshake refused: too many connections");
        }
        return (StatusCode::SERVICE_UNAVAILABLE, "Too many connections.\n").into_response();
    };
    let id = endpoint.next_connection.fetch_add(1, Ordering::Relaxed);
    debug!(connection = id, %remote, "connection opened");
    let scope: Arc<str> = scope_json(id, &client, request.uri(), request.headers()).into();
    let shared = endpoint.shared.clone();
    let stopping = endpoint.shutdown.handle();
    let (max_message, read_size) = (settings.max_message_size, settings.read_buffer_size);
    let negotiated = match settings.compression {
        Compression::Off => None,
        Compression::Auto => deflate_offer::negotiate(
            request
                .headers()
                .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
                .iter(),
            Deflate {
                threshold: settings.compression_threshold,
                window_bits: settings.compression_window_bits,
                level: settings.compression_level,
            },
        ),
    };
    let (deflate, extensions) = match negotiated
        .and_then(|(deflate, answer)| Some((deflate, HeaderValue::from_str(&answer).ok()?)))
    {
        Some((deflate, answer)) => (Some(deflate), Some(answer)),
        None => (None, None),
    };
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(error) => {
                debug!(connection = id, %error, "upgrade failed");
                return;
            }
        };
        let Some((stream, read_past)) = accept::upgraded_stream(upgraded) else {
            warn!(
                connection = id,
                "upgraded connection of an unknown kind; closing it"
            );
            return;
        };
        // Frames a client sent before it read the answer are the first
        // bytes the WebSocket reads.
        let socket = Socket::new(stream, read_past, max_message, read_size, deflate);
        conn::serve(socket, shared, scope, id, stopping).await;
        drop(slot);
        drop(client_slot);
    });
    let mut answer = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(
            header::SEC_WEBSOCKET_ACCEPT,
            derive_accept_key(key.as_bytes()),
        );
    if let Some(extensions) = extensions {
        answer = answer.header(header::SEC_WEBSOCKET_EXTENSIONS, extensions);
    }
    answer
        .body(Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Why a request to the WebSocket endpoint is not a WebSocket handshake.
enum NotWebSocket {
    NoUpgrade,
    Version,
    NoKey,
}

impl IntoResponse for NotWebSocket {
    fn into_response(self) -> Response {
        match self {
            NotWebSocket::NoUpgrade => (
                StatusCode::UPGRADE_REQUIRED,
                [(header::UPGRADE, "websocket")],
                "This endpoint speaks WebSocket only.\n",
            )
                .into_response(),
            NotWebSocket::Version => (
                StatusCode::BAD_REQUEST,
                [(header::SEC_WEBSOCKET_VERSION, "13")],
                "Sec-WebSocket-Version must be 13.\n",
            )
                .into_response(),
            NotWebSocket::NoKey => {
                (StatusCode::BAD_REQUEST, "Sec-WebSocket-Key is missing.\n").into_response()
            }
        }
    }
}

/// The `Sec-WebSocket-Key` of a valid WebSocket handshake (RFC 6455, 4.2.1).
fn websocket_key(headers: &HeaderMap) -> Result<HeaderValue, NotWebSocket> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|value| {
            value.to_str().is_ok_and(|value| {
                value
                    .split(',')
                    .any(|part| part.trim().eq_ignore_ascii_case(token))
            })
        })
    };
    if !has_token(header::UPGRADE, "websocket") || !has_token(header::CONNECTION, "upgrade") {
        return Err(NotWebSocket::NoUpgrade);
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|version| version.as_bytes() != b"13")
    {
        return Err(NotWebSocket::Version);
    }
    match headers.get(header::SEC_WEBSOCKET_KEY) {
        Some(key) if !key.is_empty() => Ok(key.clone()),
        _ => Err(NotWebSocket::NoKey),
    }
}

/// The connection's scope as plugins see it, built once per connection and
/// kept for its lifetime. A header value that is not UTF-8 is left out:
/// replacing each bad byte would triple its size in memory.
fn scope_json(id: u64, client: &Client, uri: &Uri, headers: &HeaderMap) -> String {
    let headers: Map<String, Value> = headers
        .iter()
        .filter_map(|(name, value)| {
            let value = std::str::from_utf8(value.as_bytes()).ok()?;
            Some((name.as_str().to_owned(), Value::String(value.to_owned())))
        })
        .collect();
    json!({
        "connection_id": id,
        "remote_addr": client.addr.to_string(),
        "scheme": if client.secure { "wss" } else { "ws" },
        "path": uri.path(),
        "query_string": uri.query().unwrap_or(""),
        "headers": headers,
    })
    .to_string()
}
