//! Change notifications, as rohrpost's model mixins send them: when an
//! object is created, updated or deleted, every member of its group gets one
//! `subscription-update` message.
//!
//! The rules live here once, for both senders: plugins (through
//! [`crate::Connection::notify`]) and the host's HTTP endpoint, which any
//! backend can call.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::message::{Id, Message};

/// What happened to the object.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Event {
    /// The object was created (`"create"`).
    Create,
    /// The object was changed (`"update"`).
    Update,
    /// The object was deleted (`"delete"`).
    Delete,
}

impl Event {
    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Create => "create",
            Event::Update => "update",
            Event::Delete => "delete",
        }
    }
}

/// Why a notification cannot be sent.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NotificationError {
    /// The model name is empty or blank.
    #[error("'model' must not be empty")]
    EmptyModel,
    /// The primary key is neither a string nor an integer.
    #[error("'pk' must be a string or an integer")]
    BadPk,
    /// The group (after `{pk}` was replaced) is empty.
    #[error("'group' must not be empty")]
    EmptyGroup,
    /// The group would be longer than any group name may be once `{pk}`
    /// is replaced (measured before replacing it).
    #[error("'group' would be {0} bytes long once {{pk}} is replaced; the most allowed is {max}", max = crate::RELAXED_NAME_MAX_BYTES)]
    GroupTooLong(usize),
}

/// One change notification: the model, the object's primary key, the event,
/// and optionally the serialized object, the fields a save updated, and the
/// group (a name, or a template with `{pk}`).
///
/// ```
/// use rohrpost_plugin_api::{Event, Id, Notification};
/// use serde_json::json;
///
/// let n = Notification::new("Collection", 52, Event::Update)
///     .object(json!({"id": 52, "name": "Z"}))
///     .updated_fields(["name"]);
/// assert_eq!(n.group_name().unwrap(), "collection-52");
/// let text = n.message(Id::from(7)).unwrap().to_json().unwrap();
/// assert_eq!(text, r#"{"id":7,"type":"subscription-update","data":{"type":"update","group":"collection-52","object":{"id":52,"name":"Z","updated_fields":["name"]}}}"#);
/// ```
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Notification {
    /// The model's name, e.g. `"Collection"`; lower-cased, it starts the
    /// default group name.
    pub model: String,
    /// The object's primary key: a string or an integer.
    pub pk: Value,
    /// What happened to the object.
    pub event: Event,
    /// The serialized object; `{"id": <pk>}` when `None`.
    #[serde(default)]
    pub object: Option<Map<String, Value>>,
    /// The fields a save updated, added to the object as `updated_fields`
    /// unless it has that key already.
    #[serde(default)]
    pub updated_fields: Option<Vec<String>>,
    /// The group: a name, or a template in which `{pk}` is replaced;
    /// `<model lower-cased>-<pk>` when `None`.
    #[serde(default)]
    pub group: Option<String>,
}

impl Notification {
    /// A notification with the default group and object.
    pub fn new(model: impl Into<String>, pk: impl Into<Value>, event: Event) -> Self {
        Notification {
            model: model.into(),
            pk: pk.into(),
            event,
            object: None,
            updated_fields: None,
            group: None,
        }
    }

    /// The serialized object (default `{"id": <pk>}`); a non-object value
    /// is sent as `{"value": ...}`.
    pub fn object(mut self, object: Value) -> Self {
        self.object = Some(match object {
            Value::Object(map) => map,
            other => Map::from_iter([("value".to_owned(), other)]),
        });
        self
    }

    /// The fields the save updated.
    pub fn updated_fields<S: Into<String>>(mut self, fields: impl IntoIterator<Item = S>) -> Self {
        self.updated_fields = Some(fields.into_iter().map(Into::into).collect());
        self
    }

    /// The group: a name, or a template in which `{pk}` is replaced.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    fn pk_text(&self) -> Result<String, NotificationError> {
        match &self.pk {
            Value::String(s) => Ok(s.clone()),
            Value::Number(n) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
            Value::Number(n) if !n.to_string().contains(['.', 'e', 'E']) => Ok(n.to_string()),
            _ => Err(NotificationError::BadPk),
        }
    }

    /// The group the notification goes to: the explicit group (with `{pk}`
    /// replaced), or the lower-cased model name, a dash and the pk.
    pub fn group_name(&self) -> Result<String, NotificationError> {
        if self.model.trim().is_empty() {
            return Err(NotificationError::EmptyModel);
        }
        let pk = self.pk_text()?;
        let name = match &self.group {
            Some(template) => {
                // Measured first: `{pk}` 100,000 times with a 500 KB pk
                // would ask for 50 GB.
                let slots = template.matches("{pk}").count();
                let len = (template.len() - slots * "{pk}".len())
                    .saturating_add(slots.saturating_mul(pk.len()));
                if len > crate::RELAXED_NAME_MAX_BYTES {
                    return Err(NotificationError::GroupTooLong(len));
                }
                template.replace("{pk}", &pk)
            }
            None => format!("{}-{pk}", self.model.to_lowercase()),
        };
        if name.is_empty() {
            return Err(NotificationError::EmptyGroup);
        }
        Ok(name)
    }

    /// The `subscription-update` message, with `id` for every receiver.
    pub fn message(&self, id: Id) -> Result<Message, NotificationError> {
        self.addressed(id).map(|(_, message)| message)
    }

    /// The group and the `subscription-update` message for it, with `id`
    /// for every receiver: what a sender needs, the group worked out once.
    pub fn addressed(&self, id: Id) -> Result<(String, Message), NotificationError> {
        let group = self.group_name()?;
        let mut object = self
            .object
            .clone()
            .unwrap_or_else(|| Map::from_iter([("id".to_owned(), self.pk.clone())]));
        if let Some(fields) = self.updated_fields.as_ref().filter(|f| !f.is_empty()) {
            if !object.contains_key("updated_fields") {
                object.insert("updated_fields".to_owned(), Value::from(fields.clone()));
            }
        }
        let mut data = Map::new();
        data.insert("type".to_owned(), Value::from(self.event.as_str()));
        data.insert("group".to_owned(), Value::from(group.clone()));
        data.insert("object".to_owned(), Value::Object(object));
        let message = Message::new()
            .id(id)
            .kind("subscription-update")
            .data(Value::Object(data));
        Ok((group, message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<Notification, serde_json::Error> {
        serde_json::from_value(v)
    }

    #[test]
    fn default_group_template_and_explicit_group() {
        let n = parse(json!({"model": "Collection", "pk": 52, "event": "create"})).unwrap();
        assert_eq!(n.group_name().unwrap(), "collection-52");
        let n = n.group("col-{pk}-x");
        assert_eq!(n.group_name().unwrap(), "col-52-x");
        let n = Notification::new("M", "abc", Event::Delete).group("fixed");
        assert_eq!(n.group_name().unwrap(), "fixed");
    }

    #[test]
    fn object_defaults_to_the_pk_and_updated_fields_merge_only_when_absent() {
        let m = Notification::new("Item", 3, Event::Delete)
            .message(Id::from(1))
            .unwrap();
        assert_eq!(
            m.to_json().unwrap(),
            r#"{"id":1,"type":"subscription-update","data":{"type":"delete","group":"item-3","object":{"id":3}}}"#
        );
        let m = Notification::new("Item", 3, Event::Update)
            .object(json!({"updated_fields": "kept"}))
            .updated_fields(["a"])
            .message(Id::from(1))
            .unwrap();
        assert!(m
            .to_json()
            .unwrap()
            .contains(r#""object":{"updated_fields":"kept"}"#));
    }

    #[test]
    fn bad_notifications_are_refused() {
        assert!(parse(json!({"model": "M", "pk": 1, "event": "updated"})).is_err());
        assert!(parse(json!({"model": "M", "event": "create"})).is_err());
        assert!(parse(json!({"model": "M", "pk": 1, "event": "create", "extra": 1})).is_err());
        let n = parse(json!({"model": "M", "pk": null, "event": "create"})).unwrap();
        assert_eq!(n.group_name(), Err(NotificationError::BadPk));
        let n = parse(json!({"model": "M", "pk": 1.5, "event": "create"})).unwrap();
        assert_eq!(n.group_name(), Err(NotificationError::BadPk));
        let n = parse(json!({"model": " ", "pk": 1, "event": "create"})).unwrap();
        assert_eq!(n.group_name(), Err(NotificationError::EmptyModel));
        let huge = Notification::new("M", "p".repeat(500_000), Event::Update)
            .group("{pk}".repeat(100_000));
        assert_eq!(
            huge.group_name(),
            Err(NotificationError::GroupTooLong(50_000_000_000))
        );
    }
}
