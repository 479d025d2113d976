//! The rohrpost host: a WebSocket server that routes rohrpost messages to
//! hot-loaded handler plugins.
//!
//! The data path, one module each: [`server`] (start, shutdown) →
//! [`accept`] (the listener, every phase before the upgrade bounded, with
//! [`pending`]) →
//! [`handshake`] (origin check, connection limit, scope) →
//! [`connection`] (one task per socket) → [`protocol`] (envelope, error
//! replies, close frames) → [`dispatch`] (route, run the handler, its
//! outcome) → [`effects`] (the outcome carried out on the socket and the
//! groups, writes guarded by the [`outbound`] queue) → [`registry`] (type → plugin) ← [`watcher`] (plugins directory,
//! its events reported to [`monitor`]) → [`plugin`] (loading a library
//! safely, [`elf_check`] first). Group messages, from handlers or
//! from [`notify`] (`POST /api/notify`), go through [`groups`] to each
//! member connection's outbound queue.
//!
//! A plugin runs in a supervised worker process unless configured
//! otherwise: [`isolation`]. What a plugin may ask the host during a call
//! is [`host_services`]; what it attached to a connection, [`conn_state`];
//! its hooks when a connection opens and ends, [`lifecycle`].
//!
//! Operators read [`admin`]'s endpoints and the [`status`] page; the
//! page's charts come from [`stats_api`] (`/api/stats`), whose history the
//! [`sampler`] takes once a second from the counters in [`monitor`], and
//! whose group sizes [`group_sizes`] counts on request.
//!
//! The `rohrpost` binary is a thin command line over [`server::run`], and,
//! as `rohrpost --plugin-worker`, the worker process of one plugin.

mod accept;
mod admin;
mod client_limits;
pub mod config;
mod conn_state;
mod connection;
mod dispatch;
mod effects;
mod elf_check;
mod fanout;
mod forwarded;
mod group_sizes;
mod groups;
mod handshake;
mod host_services;
mod inline_watch;
mod isolation;
mod lifecycle;
mod linger;
pub mod log_limit;
mod monitor;
mod notify;
mod outbound;
mod pending;
mod plugin;
pub mod protocol;
mod redis_groups;
mod registry;
mod rlimit;
mod safety;
mod sampler;
pub mod server;
mod shadow;
mod shutdown;
mod stats_api;
mod status;
mod watcher;
mod wire;
mod woken;

pub use isolation::worker::{run as run_plugin_worker, ARG as PLUGIN_WORKER_ARG};
