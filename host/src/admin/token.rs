//! The operator token: with one set, every endpoint but `/healthz` and
//! `/readyz` (and the status page) asks for it, as a Bearer token or as the
//! password of Basic credentials.

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    Json, Router,
};
use serde_json::json;
use tracing::debug;

/// The operator token; none means the endpoints are open.
#[derive(Clone, Debug, Default)]
pub(crate) struct AdminToken(Option<Arc<str>>);

impl AdminToken {
    /// The token of the `admin_token` setting (empty: none).
    pub(crate) fn new(setting: &str) -> Self {
        AdminToken(Some(setting).filter(|t| !t.is_empty()).map(Arc::from))
    }

    /// Whether no token is set.
    pub(crate) fn is_none(&self) -> bool {
        self.0.is_none()
    }

    /// `router` with every route asking for the token (when one is set).
    pub(crate) fn protect(&self, router: Router) -> Router {
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
/// or Basic with the token as the password (any user name), in its one
/// `Authorization` header. A request with several `Authorization` headers is refused: each would
/// otherwise be one more guess.
fn authorized(headers: &HeaderMap, expected: &str) -> bool {
    let mut given = headers.get_all(header::AUTHORIZATION).iter();
    let (Some(value), None) = (given.next(), given.next()) else {
        return false;
    };
    let Some((scheme, credentials)) = value.to_str().ok().and_then(|v| v.split_once(' ')) else {
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
        // The right token among wrong ones is still refused: one header,
        // one guess.
        let mut several = HeaderMap::new();
        for value in ["Bearer wrong", "Bearer s3cret"] {
            several.append(header::AUTHORIZATION, HeaderValue::from_static(value));
        }
        assert!(!authorized(&several, "s3cret"));
    }
}
