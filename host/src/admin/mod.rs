//! Endpoints for operators, on the same port as the WebSocket endpoint:
//! `/healthz` (the process answers), `/readyz` (the plugins directory has
//! been scanned, and Redis answers when groups go through it), `GET /api/plugins` (every plugin, loaded or rejected, with
//! its counts), `/metrics` (Prometheus), `/api/events` (a live stream of
//! plugin events and connection counts, for the status page) and
//! `/api/stats` (the last minutes, for its charts; see [`crate::admin::stats_api`]).
//!
//! With an operator token set ([`AdminToken`]), everything but `/healthz`
//! and `/readyz` asks for it, as a bearer token or as the password of HTTP
//! Basic authentication (so that a browser can open the status page). The
//! live stream takes a bounded number of subscribers.

pub mod group_sizes;
pub mod notify;
pub mod sampler;
pub mod stats_api;
pub mod status;

use std::{convert::Infallible, sync::Arc, time::Duration};

use axum::{
    extract::{Request, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    middleware::{self, Next},
    response::{
        sse::{Event, KeepAlive, Sse},
        IntoResponse, Response,
    },
    routing::get,
    Json, Router,
};
use futures_util::stream::{self, Stream, StreamExt};
use serde_json::json;
use tokio::sync::{broadcast, OwnedSemaphorePermit, Semaphore};
use tracing::debug;

use crate::{groups::GroupLayer, plugins::registry::Registry, telemetry::Monitor};

/// What the endpoints read.
pub struct Admin {
    pub monitor: Arc<Monitor>,
    pub registry: Arc<Registry>,
    /// For the group sizes of `/api/stats` and the hosts of `/api/hosts`.
    pub groups: Arc<dyn GroupLayer>,
    /// Guards every endpoint but `/healthz` and `/readyz`.
    pub token: AdminToken,
    /// One permit per `/api/events` subscriber.
    pub event_streams: Arc<Semaphore>,
}

/// The operator endpoints.
pub fn router(admin: Arc<Admin>) -> Router {
    let guarded = admin.token.protect(
        Router::new()
            .route("/api/plugins", get(plugins))
            .route("/metrics", get(metrics))
            .route("/api/events", get(events))
            .route("/api/hosts", get(hosts))
            .route("/api/stats", get(stats_api::stats))
            .route("/api/stats/groups", get(stats_api::groups))
            .with_state(admin.clone()),
    );
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(admin)
        .merge(guarded)
}

/// The operator token; none means the endpoints are open.
#[derive(Clone, Debug, Default)]
pub struct AdminToken(Option<Arc<str>>);

impl AdminToken {
    /// The token of the `admin_token` setting (empty: none).
    pub fn new(setting: &str) -> Self {
        AdminToken(Some(setting).filter(|t| !t.is_empty()).map(Arc::from))
    }

    /// Whether no token is set.
    pub fn is_none(&self) -> bool {
        self.0.is_none()
    }

    /// `router` with every route asking for the token (when one is set).
    pub fn protect(&self, router: Router) -> Router {
        router.route_layer(middleware::from_fn_with_state(self.clone(), require_token))
    }
}

async fn require_token(State(token): State<AdminToken>, request: Request, next: Next) -> Response {
    match token.0.as_deref() {
        Some(expected) if !authorized(request.headers(), expected) => {
            debug!(path = %request.uri().path(), "operator endpoint refused: missing or wrong token");
            let mut response = (
                StatusCode::UNAUTHORIZED,
                Json(json!({ "error": "Missing or wrong operator token." })),
            )
                .into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Basic realm="rohrpost""#),
            );
            response
        }
        _ => next.run(request).await,
    }
}

/// Whether a request carries the token: `Authorization: Bearer <token>`,
/// or Basic with the token as the password (any user name).
fn authorized(headers: &HeaderMap, expected: &str) -> bool {
    headers.get_all(header::AUTHORIZATION).iter().any(|value| {
        let Some((scheme, credentials)) = value.to_str().ok().and_then(|v| v.split_once(' '))
        else {
            return false;
        };
        let credentials = credentials.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            rohrpost_plugin_api::same_secret(credentials, expected)
        } else if scheme.eq_ignore_ascii_case("basic") {
            decode_base64(credentials)
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .and_then(|pair| {
                    pair.split_once(':')
                        .map(|(_, password)| rohrpost_plugin_api::same_secret(password, expected))
                })
                .unwrap_or(false)
        } else {
            false
        }
    })
}

/// Standard base64 (RFC 4648, padding optional), for Basic credentials.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    const MAX: usize = 4096;
    let text = text.trim_end_matches('=');
    if text.len() > MAX || text.len() % 4 == 1 {
        return None;
    }
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for chunk in text.as_bytes().chunks(4) {
        let mut bits = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            bits |= value(c)? << (18 - 6 * i);
        }
        let bytes = bits.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(admin): State<Arc<Admin>>) -> Response {
    match admin.monitor.readiness() {
        Ok(()) => Json(json!({ "status": "ready" })).into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not ready", "reason": reason })),
        )
            .into_response(),
    }
}

async fn plugins(State(admin): State<Arc<Admin>>) -> Json<serde_json::Value> {
    Json(
        admin
            .monitor
            .plugins_json(&admin.registry.snapshot().plugins),
    )
}

/// The hosts sharing the groups through Redis, from their presence (none
/// for groups of this host only).
async fn hosts(State(admin): State<Arc<Admin>>) -> Json<serde_json::Value> {
    Json(json!({ "hosts": admin.groups.hosts().await }))
}

async fn metrics(State(admin): State<Arc<Admin>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        admin.monitor.metrics_text(),
    )
        .into_response()
}

/// Server-sent events: first a `snapshot` (what `/api/plugins` answers),
/// then every plugin event as it happens and the connection count when it
/// changed (a few times a second at most). 503 when the subscribers allowed
/// are all there.
async fn events(State(admin): State<Arc<Admin>>) -> Response {
    let Ok(permit) = admin.event_streams.clone().try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": "Too many subscribers to /api/events; try again later." })),
        )
            .into_response();
    };
    live(&admin, permit).into_response()
}

fn live(
    admin: &Admin,
    permit: OwnedSemaphorePermit,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    // Subscribe first: nothing that happens after the snapshot is missed.
    let receiver = admin.monitor.subscribe();
    let snapshot = admin
        .monitor
        .plugins_json(&admin.registry.snapshot().plugins);
    let first = Event::default()
        .event("snapshot")
        .data(snapshot.to_string());
    // The permit lives as long as the stream.
    let live = stream::unfold((receiver, permit), |(mut receiver, permit)| async move {
        let event = match receiver.recv().await {
            Ok(event) => Event::default().event(&event.name).data(&event.json),
            // A slow reader missed some; tell it to reload.
            Err(broadcast::error::RecvError::Lagged(_)) => {
                Event::default().event("lagged").data("{}")
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok(event), (receiver, permit)))
    });
    Sse::new(stream::once(async move { Ok(first) }).chain(live))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_as_in_basic_credentials() {
        assert_eq!(decode_base64("YWRtaW46czNjcmV0").unwrap(), b"admin:s3cret");
        assert_eq!(decode_base64("OnRva2Vu").unwrap(), b":token");
        assert_eq!(decode_base64("YQ==").unwrap(), b"a");
        assert_eq!(decode_base64("YWI").unwrap(), b"ab");
        assert_eq!(decode_base64("").unwrap(), b"");
        assert!(decode_base64("Y").is_none());
        assert!(decode_base64("YW!i").is_none());
    }

    #[test]
    fn bearer_or_basic_password() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
            authorized(&headers, "s3cret")
        };
        assert!(with("Bearer s3cret"));
        assert!(with("bearer  s3cret "));
        assert!(with("Basic YWRtaW46czNjcmV0"));
        assert!(with("Basic OnMzY3JldA=="));
        assert!(!with("Bearer s3creT"));
        assert!(!with("Basic czNjcmV0"));
        assert!(!with("Basic YWRtaW46d3Jvbmc="));
        assert!(!with("Token s3cret"));
        assert!(!authorized(&HeaderMap::new(), "s3cret"));
    }
}
