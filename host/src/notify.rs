//! `POST /api/notify`: change notifications from any backend (rohrpost's
//! model mixins, for apps that are not Django or not in this process).
//!
//! The body names a model, a primary key, an event and optionally the
//! object, the updated fields and the group; every member of the group gets
//! the same `subscription-update` message (one generated id for all). The
//! answer says which group, which id, and how many connections were reached.
//! A bad request gets a 4xx with a JSON error and sends nothing.

use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::State,
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use rohrpost_plugin_api::{Id, Notification};
use serde_json::json;
use tracing::{info, warn};

use crate::groups::GroupLayer;

/// What the endpoint needs.
pub struct NotifyEndpoint {
    /// The bearer token; `None` disables the endpoint.
    pub token: Option<String>,
    pub groups: Arc<dyn GroupLayer>,
}

fn error(status: StatusCode, text: impl Into<String>) -> Response {
    (status, Json(json!({ "error": text.into() }))).into_response()
}

/// Handles one notification request.
pub async fn notify(
    State(endpoint): State<Arc<NotifyEndpoint>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(expected) = endpoint.token.as_deref() else {
        return error(
            StatusCode::NOT_FOUND,
            "Notifications are disabled: no notify token is configured.",
        );
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token);
    if !given.is_some_and(|given| rohrpost_plugin_api::same_secret(given.trim(), expected)) {
        if crate::log_limit::NOTIFY_BAD_TOKEN.allow() {
            warn!("notification refused: missing or wrong bearer token");
        }
        let mut response = error(StatusCode::UNAUTHORIZED, "Missing or wrong bearer token.");
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return response;
    }
    let invalid = |e: &dyn std::fmt::Display| {
        error(
            StatusCode::BAD_REQUEST,
            format!("Invalid notification: {e}"),
        )
    };
    let notification: Notification = match serde_json::from_slice(&body) {
        Ok(notification) => notification,
        Err(e) if e.is_syntax() || e.is_eof() => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("The body is not valid JSON: {e}"),
            )
        }
        Err(e) => return invalid(&e),
    };
    let id = Id::generate();
    let (group, text) = match notification.addressed(id.clone()) {
        Ok((group, message)) => match message.into_json() {
            Ok(text) => (group, text),
            Err(e) => return invalid(&e),
        },
        Err(e) => return invalid(&e),
    };
    let delivered = endpoint.groups.send(&group, text.into()).await;
    info!(%group, event = notification.event.as_str(), delivered, "notification sent");
    Json(json!({ "group": group, "id": id.to_value(), "delivered": delivered })).into_response()
}
