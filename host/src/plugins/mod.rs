//! The plugins: what a loaded library is ([`loaded`]), which plugin serves
//! which type ([`registry`]), the plugins directory and its events
//! ([`watcher`]), the files a library is loaded from ([`files`]), the worker
//! processes plugins run in ([`isolation`]), the connection hooks
//! ([`hooks`]), how a call ended ([`outcome`]) and what a plugin may ask the host during a call ([`asks`]).

pub mod asks;
pub mod files;
pub mod handler;
pub mod hooks;
pub mod isolation;
pub mod library;
pub mod load;
pub mod loaded;
pub mod manifest;
pub mod outcome;
pub mod registry;
pub mod watcher;
