//! The status page: a small HTML page embedded in the binary.

use axum::Router;

/// The status page's routes.
pub fn router() -> Router {
    Router::new()
}
