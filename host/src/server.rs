//! The server as a whole: builds the shared parts from the settings, loads
//! the plugins, serves HTTP through [`crate::net::accept`] (the WebSocket
//! endpoint, the notification endpoint, the operator endpoints), and shuts
//! down gracefully on SIGTERM or SIGINT.

use std::sync::{atomic::AtomicU64, Arc};

use anyhow::Context;
use axum::{
    extract::DefaultBodyLimit,
    routing::{get, post},
    Router,
};
use tokio::{net::TcpListener, sync::Semaphore};
use tracing::{info, warn};

use crate::plugins::asks::Answers;
use crate::{
    admin::notify::{self, NotifyEndpoint},
    admin::sampler,
    admin::status,
    admin::{self, Admin, AdminToken},
    base::shutdown::Shutdown,
    config::{Config, Groups, Sandbox},
    conn::Common,
    dispatch::inline_watch,
    dispatch::Dispatcher,
    groups::redis::{self as redis_groups, CoreSettings, Format},
    groups::{GroupLayer, MemoryGroups, QueueLimits},
    net::accept::{self, Limits},
    net::admission::Pending,
    net::client_limits::PerClient,
    net::handshake::{self, Endpoint},
    net::rlimit,
    plugins::isolation::{jail, WorkerLimits},
    plugins::registry::Registry,
    plugins::watcher::{self, WatchSettings},
    telemetry::Monitor,
};

/// Loads the plugins, then serves until SIGTERM or SIGINT.
/// Says what the plugin workers' jail has on this system: a loud warning
/// for each missing layer, or (`sandbox = "required"`) no start.
async fn check_sandbox(sandbox: Sandbox) -> anyhow::Result<()> {
    if sandbox == Sandbox::Off {
        warn!("sandbox = \"off\": plugin workers are not jailed; a plugin can read and signal whatever the server's user can");
        return Ok(());
    }
    match jail::probe(sandbox).await {
        Ok(missing) if missing.is_empty() => {
            info!("plugin workers are jailed: user, PID and network namespaces, Landlock, seccomp");
            Ok(())
        }
        Ok(missing) => {
            warn!(missing = %missing.join("; "), "THE PLUGIN SANDBOX IS INCOMPLETE on this system: plugin workers run without what is missing (sandbox = \"required\" refuses to start instead); see docs/security.md");
            Ok(())
        }
        Err(why) if sandbox == Sandbox::Required => anyhow::bail!("{why}"),
        Err(why) => {
            warn!(%why, "THE PLUGIN SANDBOX COULD NOT BE CHECKED; see docs/security.md");
            Ok(())
        }
    }
}

pub(crate) async fn run(config: Config) -> anyhow::Result<()> {
    let settings = config.settings;
    let open_files =
        rlimit::raise_open_files(settings.max_connections + settings.max_pending_connections);
    let registry = Arc::new(Registry::default());
    let monitor = Arc::new(Monitor::default());
    // Before anything else: an unreachable Redis is a start-up error.
    if matches!(
        settings.groups,
        Groups::ChannelsPubSub(_) | Groups::ChannelsCore(_)
    ) && !settings
        .channels_symmetric_encryption_keys
        .trim()
        .is_empty()
    {
        anyhow::bail!("channels_symmetric_encryption_keys is set, but encrypted channels_redis messages (Fernet) are not supported yet: remove symmetric_encryption_keys from the app's CHANNEL_LAYERS and the setting here");
    }
    check_sandbox(settings.sandbox).await?;
    let groups: Arc<dyn GroupLayer> = match &settings.groups {
        Groups::Memory => Arc::new(MemoryGroups::counting(monitor.group_deliveries())),
        Groups::Redis(urls) | Groups::ChannelsPubSub(urls) => {
            let wire = match settings.groups {
                Groups::ChannelsPubSub(_) => Format::ChannelsPubSub,
                _ => Format::Rohrpost,
            };
            redis_groups::connect_pubsub(
                urls,
                &crate::groups::redis::access_from_settings(&settings),
                wire,
                groups_prefix(&settings),
                monitor.clone(),
            )
            .await?
        }
        Groups::RedisCluster(seeds) => {
            redis_groups::connect_cluster(
                seeds,
                &crate::groups::redis::access_from_settings(&settings),
                groups_prefix(&settings),
                monitor.clone(),
            )
            .await?
        }
        Groups::ChannelsCore(urls) => {
            let core = CoreSettings {
                group_expiry: settings.channels_group_expiry,
                capacity: settings.channels_capacity,
                expiry: settings.channels_expiry,
            };
            redis_groups::connect_core(
                urls,
                &crate::groups::redis::access_from_settings(&settings),
                groups_prefix(&settings),
                core,
                monitor.clone(),
            )
            .await?
        }
    };
    let answers = Arc::new(Answers {
        groups: groups.clone(),
        reports: monitor.plugin_reports(),
    });
    let _watcher = watcher::start(
        WatchSettings {
            dir: settings.plugins_dir.clone(),
            debounce: settings.reload_debounce,
            pool_size: settings.plugin_concurrency,
            plugin_settings: Arc::new(config.plugin_tables),
            isolation: Arc::new(config.isolation),
            in_process_files: Arc::new(config.in_process_files),
            granted_files: Arc::new(config.granted_files),
            sandbox: settings.sandbox,
            worker_limits: WorkerLimits {
                memory: settings.worker_memory_limit,
                open_files: settings.worker_open_files,
                max_effects: settings.max_effects_per_call,
            },
            strict_modes: settings.strict_modes,
            answers: answers.clone(),
        },
        registry.clone(),
        monitor.clone(),
    )
    .await?;

    // An inline call a hundred times over its budget (a second at least)
    // is stuck, not slow.
    inline_watch::start(
        (settings.inline_budget * 100).max(std::time::Duration::from_secs(1)),
        registry.clone(),
        monitor.clone(),
        tokio::runtime::Handle::current(),
    );

    let history = sampler::start(monitor.clone(), registry.clone(), groups.clone());

    let shutdown = Arc::new(Shutdown::default());
    let endpoint = Arc::new(Endpoint {
        per_client: PerClient::new(settings.max_connections_per_client),
        shared: Arc::new(Common {
            dispatcher: Dispatcher {
                registry: registry.clone(),
                handler_timeout: settings.handler_timeout,
                inline_budget: settings.inline_budget,
                inline_budget_per_mib: settings.inline_budget_per_mib,
                group_names: settings.group_names,
                max_json_containers: settings.max_json_containers,
                max_effects: settings.max_effects_per_call,
                monitor: monitor.clone(),
                answers,
            },
            groups: groups.clone(),
            outbound_queue: QueueLimits {
                messages: settings.outbound_queue,
                bytes: settings.outbound_queue_bytes,
            },
            idle_timeout: settings.idle_timeout,
            max_messages_per_second: settings.max_messages_per_second,
            max_connection_state_bytes: usize::try_from(settings.max_connection_state_bytes)
                .unwrap_or(usize::MAX),
            max_groups_per_connection: settings.max_groups_per_connection,
            monitor: monitor.clone(),
        }),
        settings: settings.clone(),
        slots: Arc::new(Semaphore::new(settings.max_connections)),
        shutdown: shutdown.clone(),
        next_connection: AtomicU64::new(1),
    });
    if settings.notify_token.is_empty() {
        info!("POST /api/notify is disabled: no notify token is configured");
    }
    if settings.allowed_origins.0.is_empty() && !settings.listen.ip().is_loopback() {
        warn!("any browser origin may connect: set allowed_origins to your site's origins");
    }
    let closing = groups.clone();
    let sized = groups.clone();
    let notify_endpoint = Arc::new(NotifyEndpoint {
        token: Some(settings.notify_token.clone()).filter(|t| !t.is_empty()),
        groups,
        group_names: settings.group_names,
    });
    let admin_token = AdminToken::new(&settings.admin_token);
    if admin_token.is_none() && !settings.listen.ip().is_loopback() {
        warn!("the operator endpoints (/, /api/plugins, /api/events, /api/stats, /metrics) need no credentials: set admin_token, or keep them internal");
    }
    let router = Router::new()
        .route(&settings.ws_path, get(handshake::upgrade))
        .with_state(endpoint)
        .merge(
            Router::new()
                .route("/api/notify", post(notify::notify))
                .layer(DefaultBodyLimit::max(settings.max_message_size))
                .with_state(notify_endpoint),
        )
        .merge(admin::router(Arc::new(Admin {
            monitor,
            history,
            registry,
            groups: sized,
            token: admin_token.clone(),
            event_streams: Arc::new(Semaphore::new(settings.max_event_streams)),
        })))
        .merge(admin_token.protect(status::router(&settings.ws_path)));

    let listener = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    // Installed before the server says it listens: a SIGTERM right after
    // that line must shut it down in order, not kill it.
    let signals = ShutdownSignals::install();
    info!(address = %listener.local_addr()?, path = %settings.ws_path, "listening");
    let stop = shutdown.clone();
    tokio::spawn(async move {
        signals.received().await;
        info!(
            "shutting down: no new connections; open ones finish their request and close with 1001"
        );
        stop.begin();
    });
    accept::serve(
        listener,
        router,
        Limits {
            request_timeout: settings.handshake_timeout,
            max_header_size: settings.max_header_size,
        },
        Pending::new(rlimit::pending_bound(
            settings.max_pending_connections,
            open_files,
        )),
        shutdown.clone(),
    )
    .await;
    shutdown.wait(settings.shutdown_timeout).await;
    closing.close().await;
    info!("stopped");
    Ok(())
}

/// `groups_prefix`, or the layer's own when it is empty.
fn groups_prefix(settings: &crate::config::Settings) -> &str {
    match settings.groups_prefix.as_str() {
        "" => settings.groups.default_prefix(),
        prefix => prefix,
    }
}

/// SIGINT and SIGTERM, listened for from the moment they are installed.
struct ShutdownSignals {
    #[cfg(unix)]
    interrupt: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    terminate: Option<tokio::signal::unix::Signal>,
}

impl ShutdownSignals {
    fn install() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            ShutdownSignals {
                interrupt: signal(SignalKind::interrupt()).ok(),
                terminate: signal(SignalKind::terminate()).ok(),
            }
        }
        #[cfg(not(unix))]
        ShutdownSignals {}
    }

    /// Resolves at the first of them.
    async fn received(self) {
        #[cfg(unix)]
        {
            async fn next(signal: Option<tokio::signal::unix::Signal>) {
                match signal {
                    Some(mut signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                () = next(self.interrupt) => {}
                () = next(self.terminate) => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}
