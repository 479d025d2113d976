//! Endpoints for operators, on the same port as the WebSocket endpoint:
//! `/healthz` (the process answers), `/readyz` (the plugins directory has
//! been scanned, and Redis answers when groups go through it), `GET /api/plugins` (every plugin, loaded or rejected, with
//! its counts), `/metrics` (Prometheus) and `/api/events` (a live stream of
//! plugin events and connection counts, for the status page).

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
use tokio::sync::broadcast;

use crate::{monitor::Monitor, registry::Registry};

/// What the endpoints read.
pub struct Admin {
    pub monitor: Arc<Monitor>,
    pub registry: Arc<Registry>,
}

/// The operator endpoints.
pub fn router(admin: Arc<Admin>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/api/plugins", get(plugins))
        .route("/metrics", get(metrics))
        .route("/api/events", get(events))
        .with_state(admin)
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
/// then every plugin event and connection count as it happens.
async fn events(
    State(admin): State<Arc<Admin>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    // Subscribe first: nothing that happens after the snapshot is missed.
    let receiver = admin.monitor.subscribe();
    let snapshot = admin
        .monitor
        .plugins_json(&admin.registry.snapshot().plugins);
    let first = Event::default()
        .event("snapshot")
        .data(snapshot.to_string());
    let live = stream::unfold(receiver, |mut receiver| async move {
        let event = match receiver.recv().await {
            Ok(value) => {
                let name = value["event"].as_str().unwrap_or("message").to_owned();
                Event::default().event(name).data(value.to_string())
            }
            // A slow reader missed some; tell it to reload.
            Err(broadcast::error::RecvError::Lagged(_)) => {
                Event::default().event("lagged").data("{}")
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        Some((Ok(event), receiver))
    });
    Sse::new(stream::once(async move { Ok(first) }).chain(live))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
