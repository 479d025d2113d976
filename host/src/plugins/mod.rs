//! The plugins: what a loaded library is ([`loaded`]), which plugin serves
//! which type ([`registry`]), the plugins directory and its events
//! ([`watcher`]), the files a library is loaded from ([`files`]), the worker
//! processes plugins run in ([`isolation`]), the connection hooks
//! ([`hooks`]), how a call ended ([`outcome`]) and what a plugin may ask the host during a call ([`asks`]).

pub(crate) mod asks;
pub(crate) mod check;
pub(crate) mod files;
pub(crate) mod handler;
pub(crate) mod hooks;
pub(crate) mod isolation;
pub(crate) mod library;
pub(crate) mod load;
pub(crate) mod loaded;
pub(crate) mod manifest;
pub(crate) mod outcome;
pub(crate) mod registry;
pub(crate) mod watcher;
