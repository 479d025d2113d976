//! The status page: one HTML file with its styles and script inline,
//! embedded in the binary and served at `/` and `/status`. In the browser it
//! follows `/api/events` (re-reading `/api/plugins` when a plugin changes)
//! and its console talks to the WebSocket endpoint, whose configured path is
//! written into the page when the router is built.

use axum::{
    body::Bytes,
    http::header,
    response::IntoResponse,
    routing::{get, MethodRouter},
    Router,
};

/// The page as written; [`WS_PATH_SLOT`] stands for the WebSocket path.
const PAGE: &str = include_str!("status.html");

/// Where the page expects the WebSocket path (inside an HTML attribute).
const WS_PATH_SLOT: &str = "{{ws_path}}";

/// The status page's routes. `ws_path` is the WebSocket endpoint's path,
/// which the page's console connects to.
pub(crate) fn router(ws_path: &str) -> Router {
    let page = Bytes::from(render(ws_path));
    let serve: MethodRouter = get(move || {
        let page = page.clone();
        async move { page_response(page) }
    });
    let router = Router::new().route("/", serve.clone());
    // The WebSocket endpoint may be configured at `/status`; it wins.
    if ws_path == "/status" {
        router
    } else {
        router.route("/status", serve)
    }
}

/// The page with the WebSocket path written in.
fn render(ws_path: &str) -> String {
    debug_assert_eq!(PAGE.matches(WS_PATH_SLOT).count(), 1);
    PAGE.replacen(WS_PATH_SLOT, &escape_html(ws_path), 1)
}

fn page_response(page: Bytes) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            // The console sends messages as whoever opened the page: no
            // other site may frame it.
            (
                header::CONTENT_SECURITY_POLICY,
                "frame-ancestors 'none'; base-uri 'none'; form-action 'none'; object-src 'none'",
            ),
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        page,
    )
}

/// Escapes text for an HTML attribute value in double quotes (or for text
/// content).
fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_carries_the_ws_path_once_and_escaped() {
        assert_eq!(PAGE.matches(WS_PATH_SLOT).count(), 1);
        let page = render("/ws/rohrpost/");
        assert!(page.contains(r#"content="/ws/rohrpost/""#));
        assert!(!page.contains(WS_PATH_SLOT));

        let page = render(r#"/a"b<c>&'d"#);
        assert!(page.contains(r#"content="/a&quot;b&lt;c&gt;&amp;&#39;d""#));
        assert!(!page.contains(r#"/a"b"#));
    }

    #[test]
    fn a_websocket_endpoint_at_status_keeps_its_path() {
        // Overlapping routes would panic here.
        let _ = Router::new()
            .route("/status", get(|| async {}))
            .merge(router("/status"));
        let _ = Router::new()
            .route("/ws/rohrpost/", get(|| async {}))
            .merge(router("/ws/rohrpost/"));
    }

    #[test]
    fn the_page_needs_nothing_from_elsewhere() {
        for needle in [
            "http://",
            "https://",
            "src=",
            "href=",
            "@import",
            "innerHTML",
        ] {
            assert!(!PAGE.contains(needle), "the page contains {needle}");
        }
    }
}
