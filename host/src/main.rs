//! `rohrpost`: the rohrpost WebSocket server with hot-loaded handler plugins.
//!
//! The data path, one file each: `server` (listener, upgrade) →
//! `connection` (one task per socket) → `protocol` (envelope and its errors)
//! → `dispatch` (route, run the handler, replies) → `registry` (type →
//! plugin) ← `watcher` (plugins directory) → `plugin` (loading a library
//! safely, `elf_check` first).

mod config;
mod connection;
mod dispatch;
mod elf_check;
mod plugin;
mod protocol;
mod registry;
mod server;
mod watcher;

use std::io::IsTerminal;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    let config = config::Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("ROHRPOST_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(server::run(config))
}
