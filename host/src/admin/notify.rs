//! `POST /api/notify`: change notifications from any backend (rohrpost's
//! model mixins, for apps that are not Django or not in this process).
//!
//! The body names a model, a primary key, an event and optionally the
//! object, the updated fields and the group; every member of the group gets
//! the same `subscription-update` message (one generated id for all). The
//! answer says which group, which id, and how many connections were reached.
//! A bad request gets a 4xx with a JSON error and sends nothing; so does a
//! group name that breaks the host's rule ([`GroupNameRule`]). A `{pk}`
//! template is measured before it is expanded: `{pk}` 100,000 times with a
//! 500 KB pk would otherwise ask for gigabytes.

use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::State,
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use rohrpost_plugin_api::{GroupNameRule, Id, Notification};
use serde_json::{json, Value};
use tracing::{info, warn};

use crate::groups::GroupLayer;

/// What the endpoint needs.
pub(crate) struct NotifyEndpoint {
    /// The bearer token; `None` disables the endpoint.
    pub token: Option<String>,
    pub groups: Arc<dyn GroupLayer>,
    /// Which group names are accepted.
    pub group_names: GroupNameRule,
}

fn error(status: StatusCode, text: impl Into<String>) -> Response {
    (status, Json(json!({ "error": text.into() }))).into_response()
}

/// Handles one notification request.
pub(crate) async fn notify(
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
        if crate::base::log_limit::NOTIFY_BAD_TOKEN.allow() {
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
    if let Err(e) = expanded_len_fits(&notification, endpoint.group_names) {
        return invalid(&e);
    }
    let id = Id::generate();
    let (group, text) = match notification.addressed(id.clone()) {
        Ok((group, message)) => match message.into_json() {
            Ok(text) => (group, text),
            Err(e) => return invalid(&e),
        },
        Err(e) => return invalid(&e),
    };
    if let Err(e) = endpoint.group_names.check(&group) {
        return invalid(&e);
    }
    let delivered = endpoint.groups.send(&group, text.into()).await;
    // With groups shared through Redis, the other hosts' members as their
    // presence says (this host's alone when Redis does not answer).
    let members = delivered + endpoint.groups.remote_members(&group).await.unwrap_or(0);
    info!(%group, event = notification.event.as_str(), delivered, members, "notification sent");
    Json(json!({ "group": group, "id": id.to_value(), "delivered": delivered, "members": members }))
        .into_response()
}

/// Refuses a group template whose expansion would be longer than any name
/// the rule accepts, before expanding it.
fn expanded_len_fits(notification: &Notification, rule: GroupNameRule) -> Result<(), String> {
    let Some(template) = notification.group.as_deref() else {
        // The default group, `<model>-<pk>`, is no longer than the body.
        return Ok(());
    };
    let pk_len = match &notification.pk {
        Value::String(s) => s.len(),
        Value::Number(n) => n.to_string().len(),
        // Refused with its own reason when the group is worked out.
        _ => return Ok(()),
    };
    let slots = template.matches("{pk}").count();
    let len = (template.len() - slots * "{pk}".len()).saturating_add(slots.saturating_mul(pk_len));
    let max = rule.max_len();
    if len > max {
        return Err(format!(
            "the group name would be {len} bytes long once {{pk}} is replaced; the most allowed is {max}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(template: &str, pk: Value) -> Notification {
        let mut n = Notification::new("M", pk, rohrpost_plugin_api::Event::Update);
        n.group = Some(template.to_owned());
        n
    }

    #[test]
    fn templates_are_measured_before_they_are_expanded() {
        let rule = GroupNameRule::Channels;
        assert!(expanded_len_fits(&with("col-{pk}", Value::from(52)), rule).is_ok());
        let fits = "x".repeat(95);
        assert!(expanded_len_fits(&with("{pk}-abc", Value::from(fits.as_str())), rule).is_ok());
        assert!(expanded_len_fits(&with("{pk}-abcd", Value::from(fits.as_str())), rule).is_err());
        let attack = with(&"{pk}".repeat(100_000), Value::from("p".repeat(500_000)));
        let error = expanded_len_fits(&attack, GroupNameRule::Relaxed).unwrap_err();
        assert!(error.contains("50000000000 bytes"), "{error}");
    }
}
