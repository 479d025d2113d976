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
//! The `rohrpost` binary is a thin command line over [`server::run`].

pub mod accept;
pub mod admin;
pub mod config;
pub mod connection;
pub mod dispatch;
pub mod effects;
pub mod elf_check;
pub mod groups;
pub mod handshake;
pub mod linger;
pub mod log_limit;
pub mod monitor;
pub mod notify;
pub mod outbound;
pub mod pending;
pub mod plugin;
pub mod protocol;
pub mod redis_groups;
pub mod registry;
pub mod rlimit;
pub mod safety;
pub mod server;
pub mod shadow;
pub mod shutdown;
pub mod status;
pub mod watcher;
