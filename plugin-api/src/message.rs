//! Building the messages a handler sends: rohrpost's `send_message`,
//! `send_success` and `send_error`, as a value you can check before sending.

use rand::Rng;
use serde_json::{Map, Value};

use crate::wire;

/// A message id: any JSON value, kept as compact JSON text so that the id of
/// a request goes back exactly as the client wrote it.
///
/// ```
/// use rohrpost_plugin_api::Id;
///
/// assert_eq!(Id::from(7).as_json(), "7");
/// assert_eq!(Id::from("7").as_json(), r#""7""#);
/// // Exact, even where a JavaScript number would not be.
/// assert_eq!(Id::from_raw_json("12345678901234567890").as_json(), "12345678901234567890");
/// assert!(Id::generate().to_value().as_u64().is_some());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Id(String);

/// The range generated ids are drawn from: positive, and exact as a
/// JavaScript number (rohrpost draws from 1..=1000; a wider range makes a
/// clash with a client's own ids unlikely).
pub const GENERATED_ID_MAX: u64 = (1 << 31) - 1;

impl Id {
    /// A random positive integer id, as rohrpost's `generate_id=True`.
    pub fn generate() -> Self {
        Id(rand::rng().random_range(1..=GENERATED_ID_MAX).to_string())
    }

    /// An id from raw JSON text. The caller promises the text is valid JSON.
    pub fn from_raw_json(raw: &str) -> Self {
        Id(wire::compact_json(raw).into_owned())
    }

    /// The id as compact JSON text.
    pub fn as_json(&self) -> &str {
        &self.0
    }

    /// The id as a JSON value.
    pub fn to_value(&self) -> Value {
        serde_json::from_str(&self.0).unwrap_or(Value::Null)
    }
}

impl From<&Id> for Id {
    fn from(id: &Id) -> Self {
        id.clone()
    }
}

impl From<Value> for Id {
    fn from(v: Value) -> Self {
        Id(v.to_string())
    }
}

impl From<&str> for Id {
    /// A string id (`"abc"` on the wire).
    fn from(s: &str) -> Self {
        let mut out = String::with_capacity(s.len() + 2);
        wire::push_json_string(&mut out, s);
        Id(out)
    }
}

impl From<String> for Id {
    fn from(s: String) -> Self {
        Id::from(s.as_str())
    }
}

macro_rules! id_from_integer {
    ($($t:ty),*) => {$(
        impl From<$t> for Id {
            fn from(n: $t) -> Self {
                Id(n.to_string())
            }
        }
    )*};
}
id_from_integer!(i32, i64, u32, u64, usize);

/// Why a message could not be sent.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MessageError {
    /// rohrpost refuses a message without id, type, error and data.
    #[error("cannot send an empty message")]
    Empty,
    /// Extra fields are merged into `data`, which must then be an object.
    #[error("extra fields can only be merged into an object `data`, not {0}")]
    DataNotObject(&'static str),
}

/// `send_success` and `send_error` cannot fail; this keeps `?` on them
/// working in functions that return a `MessageError`.
impl From<std::convert::Infallible> for MessageError {
    fn from(never: std::convert::Infallible) -> Self {
        match never {}
    }
}

/// A rohrpost message: `{"id","type","error","data"}`, each part optional.
///
/// ```
/// use rohrpost_plugin_api::{Message, Id};
/// use serde_json::json;
///
/// let m = Message::new()
///     .kind("notice")
///     .id(Id::from(7))
///     .data(json!({"a": 1}))
///     .with("b", 2);
/// assert_eq!(m.to_json().unwrap(), r#"{"id":7,"type":"notice","data":{"a":1,"b":2}}"#);
/// assert!(Message::new().to_json().is_err());
/// ```
#[derive(Clone, Debug, Default)]
pub struct Message {
    id: Option<Id>,
    generate_id: bool,
    kind: Option<String>,
    error: Option<String>,
    data: Option<Value>,
    /// `data` as raw JSON text, set by [`Message::data_json`] instead of
    /// `data`.
    data_json: Option<String>,
    extra: Map<String, Value>,
}

impl Message {
    /// An empty message; add parts with the builder methods.
    pub fn new() -> Self {
        Self::default()
    }

    /// rohrpost's `send_success`: a reply with an id and a type.
    pub fn success(id: impl Into<Id>, kind: impl Into<String>) -> Self {
        Self::new().id(id).kind(kind)
    }

    /// rohrpost's `send_error`: a reply with an id, a type and an error text.
    pub fn error(id: impl Into<Id>, kind: impl Into<String>, error: impl ToString) -> Self {
        Self::success(id, kind).error_text(error)
    }

    /// Sets the message id.
    pub fn id(mut self, id: impl Into<Id>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Uses a random id when no id was set (rohrpost's `generate_id=True`).
    pub fn generate_id(mut self) -> Self {
        self.generate_id = true;
        self
    }

    /// Sets the message type (rohrpost's `handler` argument).
    pub fn kind(mut self, kind: impl Into<String>) -> Self {
        self.kind = Some(kind.into());
        self
    }

    /// Sets the `error` field.
    pub fn error_text(mut self, error: impl ToString) -> Self {
        self.error = Some(error.to_string());
        self
    }

    /// Sets `data`.
    pub fn data(mut self, data: impl Into<Value>) -> Self {
        self.data = Some(data.into());
        self.data_json = None;
        self
    }

    /// Sets `data` when `data` is `Some`.
    pub fn maybe_data(mut self, data: Option<Value>) -> Self {
        self.data = data;
        self.data_json = None;
        self
    }

    /// Sets `data` from raw JSON text, such as [`Request::data_json`]'s:
    /// written compact, never parsed into a [`Value`], which is the
    /// cheapest way to pass a client's data on. The caller promises the
    /// text is valid JSON, as for [`Id::from_raw_json`].
    ///
    /// ```
    /// use rohrpost_plugin_api::{Id, Message};
    ///
    /// let m = Message::success(Id::from(1), "pong").data_json(r#"{ "a": [1, 2] }"#);
    /// assert_eq!(m.to_json().unwrap(), r#"{"id":1,"type":"pong","data":{"a":[1,2]}}"#);
    /// ```
    ///
    /// [`Request::data_json`]: crate::Request::data_json
    pub fn data_json(mut self, json: impl Into<String>) -> Self {
        self.data = None;
        self.data_json = Some(json.into());
        self
    }

    /// Adds a named field to `data` (rohrpost's `**additional_data`); `data`
    /// becomes an object if it was not set.
    pub fn with(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.extra.insert(key.into(), value.into());
        self
    }

    /// The message as compact JSON text, or why it cannot be sent.
    pub fn to_json(&self) -> Result<String, MessageError> {
        self.clone().into_json()
    }

    /// Like [`Message::to_json`], consuming the message (no copies).
    pub fn into_json(mut self) -> Result<String, MessageError> {
        if let Some(json) = self.data_json.take() {
            if self.extra.is_empty() {
                let id = self.id.or_else(|| self.generate_id.then(Id::generate));
                return Ok(wire::write_message(
                    id.as_ref().map(Id::as_json),
                    self.kind.as_deref(),
                    self.error.as_deref(),
                    Some(&json),
                ));
            }
            // Fields to merge: the slow way, through a value.
            let value = serde_json::from_str(&json)
                .map_err(|_| MessageError::DataNotObject("invalid JSON text"))?;
            self.data = Some(value);
        }
        let data = match (self.data, self.extra.is_empty()) {
            (data, true) => data,
            (None, false) => Some(Value::Object(self.extra)),
            (Some(Value::Object(mut map)), false) => {
                map.extend(self.extra);
                Some(Value::Object(map))
            }
            (Some(other), false) => return Err(MessageError::DataNotObject(json_kind(&other))),
        };
        let id = match (self.id, self.generate_id) {
            (Some(id), _) => Some(id),
            (None, true) => Some(Id::generate()),
            (None, false) => None,
        };
        if id.is_none() && self.kind.is_none() && self.error.is_none() && data.is_none() {
            return Err(MessageError::Empty);
        }
        let data_text = data.as_ref().map(Value::to_string);
        Ok(wire::write_message(
            id.as_ref().map(Id::as_json),
            self.kind.as_deref(),
            self.error.as_deref(),
            data_text.as_deref(),
        ))
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn generated_ids_are_positive_integers() {
        for _ in 0..100 {
            let n: u64 = Id::generate().as_json().parse().unwrap();
            assert!((1..=GENERATED_ID_MAX).contains(&n));
        }
        let m = Message::new().kind("x").generate_id().to_json().unwrap();
        let v: Value = serde_json::from_str(&m).unwrap();
        assert!(v["id"].as_u64().unwrap() >= 1);
    }

    #[test]
    fn explicit_id_wins_over_generated() {
        let m = Message::success(5, "t").generate_id().to_json().unwrap();
        assert_eq!(m, r#"{"id":5,"type":"t"}"#);
    }

    #[test]
    fn extra_fields_merge_into_data() {
        let m = Message::success("a", "t")
            .data(json!({"x": 1}))
            .with("y", 2);
        assert_eq!(
            m.to_json().unwrap(),
            r#"{"id":"a","type":"t","data":{"x":1,"y":2}}"#
        );
        let bad = Message::success(1, "t").data(json!([1])).with("y", 2);
        assert_eq!(bad.to_json(), Err(MessageError::DataNotObject("an array")));
    }

    #[test]
    fn empty_message_is_refused() {
        assert_eq!(Message::new().to_json(), Err(MessageError::Empty));
        assert_eq!(
            Message::new().error_text("e").to_json().unwrap(),
            r#"{"error":"e"}"#
        );
    }

    #[test]
    fn error_message_has_all_parts() {
        let m = Message::error(Id::from_raw_json("[1, 2]"), "t", "nope").data(json!({}));
        assert_eq!(
            m.to_json().unwrap(),
            r#"{"id":[1,2],"type":"t","error":"nope","data":{}}"#
        );
    }
}
