//! The server side of rohrpost-js subscriptions: `subscribe` joins a
//! connection to the group of one object (`{"type":"collection","id":52}`
//! joins `collection-52`), so that it receives the object's change
//! notifications; `unsubscribe` leaves it again.
//!
//! ```text
//! {"id":1,"type":"subscribe","auth_jwt":"<token>","data":{"type":"collection","id":52}}
//!   -> {"id":1,"type":"subscribe","data":{"group":"collection-52"}}
//!   -> {"id":1,"type":"subscribe","error":"ACCESS_DENIED"}       (refused)
//! {"id":2,"type":"unsubscribe","auth_jwt":"<token>","data":{"type":"collection","id":52}}
//!   -> {"id":2,"type":"unsubscribe","data":{"group":"collection-52"}}
//! ```
//!
//! Both are authorized by the request's `auth_jwt` as the
//! `[plugins.subscriptions]` table says (see [`auth`]), which must set
//! `auth`; authorization comes first, so a refused client learns nothing
//! more than `ACCESS_DENIED`. Invalid subscription data then gets an error
//! reply naming the expected shape, and so does a group name outside
//! Django Channels' rule (ASCII letters, digits, `-`, `_`, `.`, shorter
//! than 100 characters).
//!
//! With `auth = "backend"` the application's backend decides each
//! subscribe, knowing the group ([`backend`]): the data is read first,
//! then the backend is asked; a refusal and a backend that fails both
//! answer `ACCESS_DENIED`. Unsubscribing is never refused there (leaving
//! a group gives nothing away) and asks no one.

// The crate's map links its private modules, for readers of
// `cargo doc --document-private-items`.
#![allow(rustdoc::private_intra_doc_links)]

mod auth;
mod backend;
mod subject;

use rohrpost_plugin_api::{config_warning, prelude::*};

use crate::{
    auth::{AuthConfig, Authorization},
    subject::Subject,
};

/// The error text rohrpost-js clients expect when a subscription is refused.
const ACCESS_DENIED: &str = "ACCESS_DENIED";

/// This load's state: its authorization settings, built from the plugin's
/// config table before any handler runs.
fn configure(config: AuthConfig) -> Result<Authorization, HandlerError> {
    let authorization = Authorization::try_from(config)?;
    if matches!(authorization, Authorization::Off) {
        config_warning(
            "auth = \"off\": anyone may subscribe to any group and receive its change notifications; set auth = \"tokens\" or \"jwt\" in production",
        );
    }
    Ok(authorization)
}

/// The subject `data` names, or a refusal naming the expected shape.
fn subject(req: &Request) -> Result<Subject, Refusal> {
    Subject::from_data(req.data()).map_err(|error| Refusal::new(error.to_string()))
}

/// Refuses with `ACCESS_DENIED` unless the request's `auth_jwt` passes.
fn authorized(authorization: &Authorization, req: &Request) -> Result<(), Refusal> {
    match authorization.allows(req.field("auth_jwt")) {
        true => Ok(()),
        false => refuse(ACCESS_DENIED),
    }
}

fn subscribe(
    authorization: &Authorization,
    req: &Request,
    conn: &mut Connection,
) -> Result<Value, Refusal> {
    let group = match authorization {
        Authorization::Backend(decider) => {
            let group = subject(req)?.group();
            if !decider.allows(&group, req) {
                return refuse(ACCESS_DENIED);
            }
            group
        }
        _ => {
            authorized(authorization, req)?;
            subject(req)?.group()
        }
    };
    conn.add_to_group(&group);
    Ok(json!({ "group": group }))
}

fn unsubscribe(
    authorization: &Authorization,
    req: &Request,
    conn: &mut Connection,
) -> Result<Value, Refusal> {
    // The backend is not asked: leaving a group gives nothing away.
    if !matches!(authorization, Authorization::Backend(_)) {
        authorized(authorization, req)?;
    }
    let group = subject(req)?.group();
    conn.remove_from_group(&group);
    Ok(json!({ "group": group }))
}

fn plugin() -> Stateful<Authorization> {
    Plugin::new("subscriptions", env!("CARGO_PKG_VERSION"))
        .with_state(configure)
        .handle("subscribe", subscribe)
        .handle("unsubscribe", unsubscribe)
}

export_plugin!(plugin);
