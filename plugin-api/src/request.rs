//! The request a handler receives: the envelope's parts, parsed on demand.

use std::sync::OnceLock;

use serde::de::DeserializeOwned;
use serde_json::{value::RawValue, Map, Value};

use crate::{
    abi::{Call, SCOPE_STATE},
    message::Id,
};

/// One rohrpost request: `id` exactly as sent, `type`, `data`, and every other
/// top-level field. Parsing happens only for the parts a handler reads.
///
/// ```
/// use rohrpost_plugin_api::prelude::*;
///
/// #[derive(serde::Deserialize)]
/// struct Move {
///     x: i64,
///     y: i64,
/// }
///
/// /// `{"id":1,"type":"move","auth_jwt":"...","data":{"x":1,"y":2}}`
/// fn moved(req: &Request) -> Result<Value, HandlerError> {
///     // Into your own type (a handler may take `Data<Move>` instead).
///     let to: Move = req.data_as()?;
///     // Other top-level fields, and who is calling.
///     let signed_in = req.field("auth_jwt").is_some();
///     let from = req.scope().get("remote_addr").cloned().unwrap_or(Value::Null);
///     Ok(json!({ "x": to.x, "y": to.y, "signed_in": signed_in, "from": from }))
/// }
/// # let _ = Plugin::new("doc", "1.0.0").handle("move", moved).inline();
/// ```
pub struct Request<'a> {
    call: &'a Call<'a>,
    id: Id,
    data: OnceLock<Option<Value>>,
    fields: OnceLock<Map<String, Value>>,
    /// The scope, and the plugin's state taken out of it.
    scope: OnceLock<(Map<String, Value>, Map<String, Value>)>,
}

impl<'a> Request<'a> {
    pub(crate) fn new(call: &'a Call<'a>) -> Self {
        Request {
            call,
            id: Id::from_raw_json(call.id.as_str()),
            data: OnceLock::new(),
            fields: OnceLock::new(),
            scope: OnceLock::new(),
        }
    }

    /// The request's id, exactly as the client sent it (any JSON value), to
    /// be echoed in replies.
    pub fn id(&self) -> &Id {
        &self.id
    }

    /// The request's `type`: useful in a handler serving several types.
    pub fn kind(&self) -> &str {
        self.call.kind.as_str()
    }

    /// The request's `data`, or `None` when the request had no `data` key.
    pub fn data(&self) -> Option<&Value> {
        self.data
            .get_or_init(|| {
                let raw = self.call.data.as_str();
                if raw.is_empty() {
                    None
                } else {
                    serde_json::from_str(raw).ok()
                }
            })
            .as_ref()
    }

    /// `data` deserialized into your own type (`null` when the request has
    /// no `data`, so an `Option<T>` accepts that).
    pub fn data_as<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        let raw = self.call.data.as_str();
        serde_json::from_str(if raw.is_empty() { "null" } else { raw })
    }

    /// The raw JSON text of `data`, if present.
    pub fn data_json(&self) -> Option<&str> {
        Some(self.call.data.as_str()).filter(|s| !s.is_empty())
    }

    /// Any top-level field of the request (for example `auth_jwt`), `id`,
    /// `type` and `data` included. Reading one field does not build `data`
    /// (often the largest part) unless `data` is the field asked for.
    pub fn field(&self, name: &str) -> Option<&Value> {
        if name == "data" {
            return self.data();
        }
        self.fields
            .get_or_init(|| {
                top_level(self.call.frame.as_str())
                    .into_iter()
                    .filter(|(key, _)| key != "data")
                    .filter_map(|(key, value)| Some((key, serde_json::from_str(value.get()).ok()?)))
                    .collect()
            })
            .get(name)
    }

    /// The whole request as received.
    pub fn raw(&self) -> &str {
        self.call.frame.as_str()
    }

    /// Who is calling: `connection_id`, `remote_addr`, `scheme` (`ws`, or
    /// `wss` when the client used TLS), `path`, `query_string` and `headers`
    /// (lower-case names; a value that is not UTF-8 is left out) of the
    /// WebSocket handshake, like the `scope` of a Channels consumer. Behind
    /// a reverse proxy the host trusts (`--trusted-proxies`), `remote_addr`
    /// and `scheme` are the client's as the proxy reported them
    /// (`remote_addr` then without a port unless the proxy gave one).
    pub fn scope(&self) -> &Map<String, Value> {
        &self.scope_and_state().0
    }

    /// What this plugin attached to the connection under `key` with
    /// [`Connection::set`](crate::Connection::set) in an earlier call (or
    /// in `on_connect`), deserialized into `T`; `Ok(None)` when nothing is
    /// attached under `key`.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, serde_json::Error> {
        self.get_value(key).map(T::deserialize).transpose()
    }

    /// What [`Request::get`] reads, as JSON.
    pub fn get_value(&self, key: &str) -> Option<&Value> {
        self.scope_and_state().1.get(key)
    }

    /// Everything this plugin attached to the connection, by key (what
    /// [`Request::get`] reads one key of).
    pub fn state(&self) -> &Map<String, Value> {
        &self.scope_and_state().1
    }

    fn scope_and_state(&self) -> &(Map<String, Value>, Map<String, Value>) {
        self.scope
            .get_or_init(|| split_scope(self.call.scope.as_str()))
    }
}

/// A scope's JSON text as the scope and the plugin's state in it.
pub(crate) fn split_scope(text: &str) -> (Map<String, Value>, Map<String, Value>) {
    let mut scope: Map<String, Value> = serde_json::from_str(text).unwrap_or_default();
    let state = match scope.remove(SCOPE_STATE) {
        Some(Value::Object(state)) => state,
        _ => Map::new(),
    };
    (scope, state)
}

/// The top-level fields of a JSON object, each as its raw text.
fn top_level(frame: &str) -> Vec<(String, &RawValue)> {
    serde_json::from_str::<std::collections::BTreeMap<String, &RawValue>>(frame)
        .map(|fields| fields.into_iter().collect())
        .unwrap_or_default()
}
