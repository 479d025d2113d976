//! The rohrpost host: a WebSocket server that routes rohrpost messages to
//! hot-loaded handler plugins.
//!
//! The folders follow a request, and import only the ones below them:
//!
//! - [`cli`] reads the command line; [`server`] starts and stops
//!   everything, from the [`config`].
//! - [`admin`]: the operator's HTTP surface (health, metrics, plugins,
//!   stats, the status page, `POST /api/notify`).
//! - [`net`]: before the upgrade: the listener, admission, handshake.
//! - [`conn`]: one connection's task: read, dispatch, apply, deliver,
//!   hooks at open and close, idle timer, close.
//! - [`dispatch`]: a text frame to how its request ended: parse, route,
//!   run the handler (inline, on the pool, in a worker), count.
//! - [`effects`]: what a plugin asked for, decoded once and carried out in
//!   one place (replies, groups, state, close).
//! - [`plugins`]: loading, the registry, the directory watcher, worker
//!   processes, hooks, what plugins may ask the host.
//! - [`groups`]: the group trait, in memory and over Redis, and the
//!   fan-out to members.
//! - [`socket`]: the write line shared with the fan-out and the outbound
//!   queue.
//! - [`telemetry`]: the counters and states operators read; they name none
//!   of their writers.
//! - [`base`]: the envelope codec, log rate limits, shutdown.
//!
//! The `rohrpost` binary is [`main`] ([`cli`]): the server, and, as
//! `rohrpost --plugin-worker`, the worker process of one plugin. The
//! rohrpost envelope, the error replies and the close frames are the
//! `rohrpost-protocol` crate.

#![warn(unreachable_pub)]
// The map above links the private folders, for readers of
// `cargo doc --document-private-items`.
#![allow(rustdoc::private_intra_doc_links)]

mod admin;
mod base;
mod cli;
mod config;
mod conn;
mod dispatch;
mod effects;
mod groups;
mod net;
mod plugins;
mod server;
mod socket;
mod telemetry;

pub use cli::main;
