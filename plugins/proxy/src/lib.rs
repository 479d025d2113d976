//! Serves message types from an HTTP backend, so that handlers written
//! for the backend (a Django app's rohrpost handlers) keep running there
//! while the sockets move to this server: each request of a configured
//! type is POSTed to `url` as `{"v":1,"request":...,"connection":...}`,
//! and the backend's effects document (messages, groups, per-connection
//! data, close) is carried out as a Rust handler's effects would be. The
//! contract is in [`contract`] and in `docs/proxy.md` ("Keeping handlers
//! in your backend").
//!
//! Two things a plugin usually fixes when it is built come from the
//! `[plugins.proxy]` table here:
//! - The message types: declared with [`Types::configured`], which reads
//!   them from the state built from the table; the host reads the plugin's
//!   manifest again after the configuration and routes what it says then.
//! - Which plugin wins a type: the proxy is [`Stateful::yielding`], so a
//!   type that another plugin serves stays that plugin's, and a plugin
//!   dropped in later that claims one of the proxy's types takes it over,
//!   with no reconnect (and gives it back when it is removed). That is the
//!   way from a handler in the backend to a handler in Rust, one type at a
//!   time.
//!
//! Failures of the backend never reach the client as details: it gets
//! one error reply, `The backend failed to handle '<type>'.`, the host's
//! log a warning naming the plugin, the backend's URL and the problem, and
//! the host's `/metrics` a count of the failure's kind
//! (`rohrpost_plugin_counts_total{plugin="proxy",event="backend_failures",
//! kind="timeout"}`; [`backend_http::report`]).

// The crate's map links its private modules, for readers of
// `cargo doc --document-private-items`.
#![allow(rustdoc::private_intra_doc_links)]

mod backend;
mod contract;
mod settings;

use rohrpost_plugin_api::prelude::*;
use serde_json::value::RawValue;

use backend_http::{report, Failure};

use crate::{
    backend::Backend,
    contract::{ConnectionInfo, EventBody, RequestBody},
    settings::{Config, Settings},
};

/// What the client of a failed request was told, for the log.
const ANSWERED: &str = "the client was answered with an error";

/// Builds this load's backend from the table.
fn configure(settings: Settings) -> Result<Backend, String> {
    let config = Config::try_from(settings)?;
    Ok(Backend::new(config))
}

/// The types the table names.
fn types(backend: &Backend) -> Vec<String> {
    backend.config.types.clone()
}

/// One request of a configured type: POST it, carry out the answer.
fn forward(backend: &Backend, req: &Request, conn: &mut Connection) -> HandlerResult {
    let failed =
        || -> HandlerError { format!("The backend failed to handle '{}'.", req.kind()).into() };
    let request = serde_json::from_str::<&RawValue>(req.raw()).map_err(|_| failed())?;
    let body = RequestBody {
        v: contract::VERSION,
        request,
        connection: ConnectionInfo::new(req.scope(), req.state(), &backend.config.forward_headers),
    };
    let body = serde_json::to_vec(&body)?;
    let url = &backend.config.url;
    match backend.post(url, "request", &body) {
        Ok(effects) => effects.apply(conn).map_err(|e| {
            report::failed(url, req.kind(), &Failure::Contract(e.to_string()), ANSWERED);
            failed()
        }),
        Err(failure) => {
            report::failed(url, req.kind(), &failure, ANSWERED);
            Err(failed())
        }
    }
}

/// A connection opened: tell `connect_url`, which may refuse it, join
/// it to groups, attach data and send it messages. A backend that fails
/// refuses the connection (1011), as an authentication that cannot be
/// checked must.
fn connected(backend: &Backend, event: &ConnectionEvent, conn: &mut Connection) -> HandlerResult {
    let Some(url) = &backend.config.connect_url else {
        return Ok(());
    };
    let body = EventBody {
        v: contract::VERSION,
        event: "connect",
        close_code: None,
        connection: ConnectionInfo::new(
            event.scope(),
            event.state(),
            &backend.config.forward_headers,
        ),
    };
    let body = serde_json::to_vec(&body)?;
    let applied = backend.post(url, "connect", &body).and_then(|effects| {
        effects
            .apply(conn)
            .map_err(|e| Failure::Contract(e.to_string()))
    });
    applied.map_err(|failure| {
        report::failed(
            url,
            "connect",
            &failure,
            "the connection was refused (1011)",
        );
        "The backend failed to accept the connection.".into()
    })
}

/// A connection ended: tell `disconnect_url` once, with the close code.
/// Only its group sends are carried out (the connection is gone).
fn disconnected(
    backend: &Backend,
    event: &ConnectionEvent,
    conn: &mut Connection,
) -> HandlerResult {
    let Some(url) = &backend.config.disconnect_url else {
        return Ok(());
    };
    let body = EventBody {
        v: contract::VERSION,
        event: "disconnect",
        close_code: event.close_code(),
        connection: ConnectionInfo::new(
            event.scope(),
            event.state(),
            &backend.config.forward_headers,
        ),
    };
    let body = serde_json::to_vec(&body)?;
    let told = "its effects were not carried out";
    match backend.post(url, "disconnect", &body) {
        Ok(effects) => {
            if let Err(e) = effects.apply(conn) {
                report::failed(url, "disconnect", &Failure::Contract(e.to_string()), told);
            }
        }
        Err(failure) => report::failed(url, "disconnect", &failure, told),
    }
    Ok(())
}

fn plugin() -> Stateful<Backend> {
    Plugin::new("proxy", env!("CARGO_PKG_VERSION"))
        .with_state(configure)
        .yielding()
        .handle(Types::configured(types), forward)
        .on_connect(connected)
        .on_disconnect(disconnected)
}

export_plugin!(plugin);
