//! Serves message types from an HTTP backend, so that handlers written
//! for the backend (a Django app's rohrpost handlers) keep running there
//! while the sockets move to this server: each request of a configured
//! type is POSTed to `url` as `{"v":1,"request":...,"connection":...}`,
//! and the backend's effects document (messages, groups, per-connection
//! data, close) is carried out as a Rust handler's effects would be. The
//! contract is in [`contract`] and in the README ("Keeping handlers in
//! your backend").
//!
//! Two things a plugin usually fixes when it is built come from the
//! `[plugins.proxy]` table here:
//! - The message types: declared with
//!   [`Stateful::configured_handler`], which reads them from the state
//!   built from the table; the host reads the plugin's manifest again after
//!   the configuration and routes what it says then.
//! - Which plugin wins a type: the proxy is [`Stateful::yielding`], so a
//!   type that another plugin serves stays that plugin's, and a plugin
//!   dropped in later that claims one of the proxy's types takes it over,
//!   with no reconnect (and gives it back when it is removed). That is the
//!   way from a handler in the backend to a handler in Rust, one type at a
//!   time.
//!
//! Failures of the backend never reach the client as details: it gets
//! one error reply, `The backend failed to handle '<type>'.`, and the log a
//! warning naming the backend's URL and the problem ([`backend::Failure`]).

mod backend;
mod contract;
mod settings;

use rohrpost_plugin_api::prelude::*;
use serde_json::value::RawValue;

use crate::{
    backend::{Backend, Failure},
    contract::{ConnectionInfo, EventBody, RequestBody},
    settings::{Config, Settings},
};

/// Builds this load's backend from the table.
fn configure(settings: Settings) -> Result<Backend, String> {
    logs();
    let config = Config::try_from(settings)?;
    Ok(Backend::new(config))
}

/// The plugin's log lines go to the server's standard error. Each load of
/// the library has its own copy of `tracing`, so this is the plugin's own
/// subscriber (set once; a second load's attempt changes nothing).
fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
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
    match backend.post(url, &body) {
        Ok(effects) => effects.apply(conn).map_err(|e| {
            logged(url, req.kind(), &e.to_string(), "contract");
            failed()
        }),
        Err(failure) => {
            logged(url, req.kind(), &failure.to_string(), failure.kind());
            Err(failed())
        }
    }
}

/// The warning for a failed backend call.
fn logged(url: &str, kind: &str, problem: &str, failure: &str) {
    tracing::warn!(plugin = "proxy", backend = %url, r#type = %kind, failure, problem,
        "the backend failed; the client was answered with an error");
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
    let applied = backend.post(url, &body).and_then(|effects| {
        effects
            .apply(conn)
            .map_err(|e| Failure::Down(e.to_string()))
    });
    applied.map_err(|failure| {
        logged(url, "connect", &failure.to_string(), failure.kind());
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
    match backend.post(url, &body) {
        Ok(effects) => {
            if let Err(e) = effects.apply(conn) {
                logged(url, "disconnect", &e.to_string(), "contract");
            }
        }
        Err(failure) => logged(url, "disconnect", &failure.to_string(), failure.kind()),
    }
    Ok(())
}

fn plugin() -> Stateful<Backend> {
    Plugin::new("proxy", env!("CARGO_PKG_VERSION"))
        .with_state(configure)
        .yielding()
        .configured_handler(types, forward)
        .on_connect(connected)
        .on_disconnect(disconnected)
}

export_plugin!(plugin);
