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

pub(crate) mod group_sizes;
pub(crate) mod notify;
pub(crate) mod plugins_page;
pub(crate) mod sampler;
pub(crate) mod state;
pub(crate) mod stats;
pub(crate) mod stats_api;
pub(crate) mod status;
pub(crate) mod token;

use std::{convert::Infallible, sync::Arc, time::Duration};

use axum::{
    extract::State,
    http::{header, StatusCode},
    response::{
        sse::{Event, KeepAlive, Sse},
        IntoResponse, Response,
    },
    routing::get,
    Json, Router,
};
use futures_util::stream::{self, Stream, StreamExt};
use serde_json::json;
use tokio::sync::{broadcast, OwnedSemaphorePermit};

pub(crate) use self::{state::Admin, token::AdminToken};

/// The operator endpoints.
pub(crate) fn router(admin: Arc<Admin>) -> Router {
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
    Json(admin.plugins_json())
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
    let snapshot = admin.plugins_json();
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
