//! A connection opening and ending, as a plugin's hooks see them
//! ([`Plugin::on_connect`](crate::Plugin::on_connect),
//! [`Plugin::on_disconnect`](crate::Plugin::on_disconnect)), like the
//! `connect` and `disconnect` of a Channels consumer; and the JSON the hook
//! entry points answer the host with (see
//! [`EXT_ON_CONNECT`](crate::abi::EXT_ON_CONNECT)).

use serde::de::DeserializeOwned;
use serde_json::{json, Map, Value};

use crate::{connection::Connection, request::split_scope};

/// The connection a hook runs for.
///
/// ```
/// use rohrpost_plugin_api::prelude::*;
///
/// /// Refuses connections without a `token` in the query string, and
/// /// remembers who connected.
/// fn connected(event: &ConnectionEvent, conn: &mut Connection) -> HandlerResult {
///     let query = event.scope().get("query_string").and_then(Value::as_str).unwrap_or("");
///     match query.strip_prefix("token=") {
///         Some(user) if !user.is_empty() => {
///             conn.set("user", user)?;
///             conn.add_to_group(&format!("user-{user}"));
///         }
///         _ => conn.close_with(4001, "a token is required")?,
///     }
///     Ok(())
/// }
///
/// fn disconnected(event: &ConnectionEvent, conn: &mut Connection) -> HandlerResult {
///     if let Some(user) = event.get::<String>("user")? {
///         let gone = Message::new().kind("user.left").generate_id().with("user", user.as_str());
///         conn.send_to_group("lobby", gone)?;
///     }
///     Ok(())
/// }
/// # let _ = Plugin::new("doc", "1.0.0").on_connect(connected).on_disconnect(disconnected);
/// ```
pub struct ConnectionEvent {
    scope: Map<String, Value>,
    state: Map<String, Value>,
    close_code: Option<u16>,
}

impl ConnectionEvent {
    /// The event of `on_connect`, from the scope's JSON text.
    pub(crate) fn opened(scope: &str) -> Self {
        let (scope, state) = split_scope(scope);
        ConnectionEvent {
            scope,
            state,
            close_code: None,
        }
    }

    /// The event of `on_disconnect`, from `{"scope":...,"close_code":n}`.
    pub(crate) fn closed(input: &str) -> Self {
        #[derive(serde::Deserialize)]
        struct Closed<'a> {
            #[serde(borrow)]
            scope: &'a serde_json::value::RawValue,
            close_code: Option<u16>,
        }
        match serde_json::from_str::<Closed<'_>>(input) {
            Ok(closed) => ConnectionEvent {
                close_code: closed.close_code,
                ..ConnectionEvent::opened(closed.scope.get())
            },
            Err(_) => ConnectionEvent {
                scope: Map::new(),
                state: Map::new(),
                close_code: None,
            },
        }
    }

    /// The connection's scope, as [`Request::scope`](crate::Request::scope)
    /// gives it.
    pub fn scope(&self) -> &Map<String, Value> {
        &self.scope
    }

    /// The connection's id (`scope()["connection_id"]`), unique within its
    /// host while the host runs.
    pub fn connection_id(&self) -> Option<u64> {
        self.scope.get("connection_id").and_then(Value::as_u64)
    }

    /// In `on_disconnect`: the close code the connection ended with (the
    /// client's, or the server's: 1001 at shutdown, 1013 for a client too
    /// slow to read, 4000-4999 or 1008 when refused); 1006 when the socket
    /// went away without a close frame. `None` in `on_connect`.
    pub fn close_code(&self) -> Option<u16> {
        self.close_code
    }

    /// In `on_disconnect`: what this plugin attached to the connection
    /// under `key`, as [`Request::get`](crate::Request::get).
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, serde_json::Error> {
        self.state.get(key).map(T::deserialize).transpose()
    }

    /// Everything this plugin attached to the connection, by key (empty in
    /// `on_connect`).
    pub fn state(&self) -> &Map<String, Value> {
        &self.state
    }
}

/// What a hook answers the host: its effects, or why it failed.
pub(crate) fn outcome(result: Result<Connection, String>) -> String {
    match result {
        Ok(conn) => {
            let effects: Vec<Value> = conn
                .into_effects()
                .into_iter()
                .map(|e| json!([e.kind, e.target.as_str(), e.body.as_str()]))
                .collect();
            json!({ "effects": effects }).to_string()
        }
        Err(text) => json!({ "failed": text }).to_string(),
    }
}

/// What a panicking hook answers.
pub(crate) fn panicked(text: &str) -> String {
    json!({ "panicked": text }).to_string()
}
