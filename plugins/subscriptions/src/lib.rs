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

mod auth;
mod backend;
mod subject;

use rohrpost_plugin_api::{config_warning, prelude::*, MessageError};

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

/// Parses `data` into a subject, or answers with an error and returns `None`.
fn subject_or_reply(req: &Request, conn: &mut Connection) -> Result<Option<Subject>, MessageError> {
    match Subject::from_data(req.data()) {
        Ok(subject) => Ok(Some(subject)),
        Err(error) => {
            conn.send_error(req.id(), req.kind(), error)?;
            Ok(None)
        }
    }
}

/// Whether the request may go on; answers `ACCESS_DENIED` when not.
fn authorized(
    authorization: &Authorization,
    req: &Request,
    conn: &mut Connection,
) -> Result<bool, HandlerError> {
    if authorization.allows(req.field("auth_jwt")) {
        return Ok(true);
    }
    conn.send_error(req.id(), req.kind(), ACCESS_DENIED)?;
    Ok(false)
}

fn subscribe(authorization: &Authorization, req: &Request, conn: &mut Connection) -> HandlerResult {
    if let Authorization::Backend(decider) = authorization {
        let Some(subject) = subject_or_reply(req, conn)? else {
            return Ok(());
        };
        let group = subject.group();
        if !decider.allows(&group, req) {
            conn.send_error(req.id(), req.kind(), ACCESS_DENIED)?;
            return Ok(());
        }
        conn.add_to_group(&group);
        conn.send_success(req.id(), req.kind(), Some(json!({ "group": group })))?;
        return Ok(());
    }
    if !authorized(authorization, req, conn)? {
        return Ok(());
    }
    let Some(subject) = subject_or_reply(req, conn)? else {
        return Ok(());
    };
    let group = subject.group();
    conn.add_to_group(&group);
    conn.send_success(req.id(), req.kind(), Some(json!({ "group": group })))?;
    Ok(())
}

fn unsubscribe(
    authorization: &Authorization,
    req: &Request,
    conn: &mut Connection,
) -> HandlerResult {
    let asks_no_one = matches!(authorization, Authorization::Backend(_));
    if !asks_no_one && !authorized(authorization, req, conn)? {
        return Ok(());
    }
    let Some(subject) = subject_or_reply(req, conn)? else {
        return Ok(());
    };
    let group = subject.group();
    conn.remove_from_group(&group);
    conn.send_success(req.id(), req.kind(), Some(json!({ "group": group })))?;
    Ok(())
}

fn plugin() -> Stateful<Authorization> {
    Plugin::new("subscriptions", env!("CARGO_PKG_VERSION"))
        .with_state(configure)
        .handler("subscribe", subscribe)
        .handler("unsubscribe", unsubscribe)
}

export_plugin!(plugin);
