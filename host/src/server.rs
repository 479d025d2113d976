//! The HTTP side: the listener, the WebSocket endpoint and its limits, the
//! connection scope handed to plugins, and the notification endpoint.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use anyhow::Context;
use axum::{
    extract::{ConnectInfo, DefaultBodyLimit, State, WebSocketUpgrade},
    http::{HeaderMap, Uri},
    response::Response,
    routing::{get, post},
    Router,
};
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tracing::info;

use crate::{
    config::{Config, FileConfig},
    connection::{self, Shared},
    dispatch::Dispatcher,
    groups::{GroupLayer, MemoryGroups},
    notify::{self, NotifyEndpoint},
    registry::Registry,
    watcher::{self, WatchSettings},
};

/// What the WebSocket endpoint shares.
struct App {
    shared: Arc<Shared>,
    config: Config,
    next_connection: AtomicU64,
}

/// Loads the plugins, then serves until interrupted.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let file = match &config.config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let registry = Arc::new(Registry::default());
    let _watcher = watcher::start(
        WatchSettings {
            dir: config.plugins.clone(),
            debounce: config.reload_debounce,
            pool_size: config.plugin_concurrency,
            plugin_settings: Arc::new(file.plugin_settings()?),
        },
        registry.clone(),
    )
    .await?;

    let groups: Arc<dyn GroupLayer> = Arc::new(MemoryGroups::default());
    let app = Arc::new(App {
        shared: Arc::new(Shared {
            dispatcher: Dispatcher {
                registry,
                handler_timeout: config.handler_timeout,
                inline_budget: config.inline_budget,
            },
            groups: groups.clone(),
            outbound_queue: config.outbound_queue,
        }),
        config: config.clone(),
        next_connection: AtomicU64::new(1),
    });
    let notify_token = config.notify_token.clone().or(file.notify.token);
    if notify_token.is_none() {
        info!("POST /api/notify is disabled: no notify token is configured");
    }
    let endpoint = Arc::new(NotifyEndpoint {
        token: notify_token,
        groups,
    });
    let router = Router::new()
        .route(&config.ws_path, get(upgrade))
        .with_state(app)
        .merge(
            Router::new()
                .route("/api/notify", post(notify::notify))
                .layer(DefaultBodyLimit::max(config.max_message_size))
                .with_state(endpoint),
        );

    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    info!(address = %listener.local_addr()?, path = %config.ws_path, "listening");
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await
    .context("server error")?;
    info!("stopped");
    Ok(())
}

async fn upgrade(
    upgrade: WebSocketUpgrade,
    State(app): State<Arc<App>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let id = app.next_connection.fetch_add(1, Ordering::Relaxed);
    let scope: Arc<str> = scope_json(id, remote, &uri, &headers).into();
    let shared = app.shared.clone();
    upgrade
        .read_buffer_size(app.config.read_buffer_size)
        .max_message_size(app.config.max_message_size)
        .max_frame_size(app.config.max_message_size)
        .on_upgrade(move |socket| connection::serve(socket, shared, scope, id))
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

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    info!("shutting down");
}
