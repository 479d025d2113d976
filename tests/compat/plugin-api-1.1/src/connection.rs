//! What a handler does to the calling connection: send messages, close it,
//! and group membership and group messages. Effects are collected here and
//! carried out by the host, in order, after the handler returns.

use abi_stable::std_types::RString;

use crate::{
    abi::{Effect, EFFECT_CLOSE, EFFECT_GROUP_SEND, EFFECT_JOIN, EFFECT_LEAVE, EFFECT_SEND},
    message::{Id, Message, MessageError},
    notification::{Notification, NotificationError},
};

/// The calling connection, as a handler sees it (rohrpost's `consumer`).
///
/// Everything a handler asks for here (messages, group operations, close)
/// is queued and carried out by the host in order once the handler returns
/// `Ok`; if it returns an error or panics, the queue is dropped and the
/// client gets the error reply alone.
///
/// ```
/// use rohrpost_plugin_api::prelude::*;
///
/// /// `{"id":1,"type":"watch","data":{"topic":"news"}}`: joins the group
/// /// `topic-news`, answers, and tells the group.
/// fn watch(req: &Request, conn: &mut Connection) -> HandlerResult {
///     let topic = req.data().and_then(|d| d.get("topic")).and_then(Value::as_str).unwrap_or("all");
///     let group = format!("topic-{topic}");
///     conn.add_to_group(&group);
///     conn.send_success(req.id(), req.kind(), Some(json!({ "group": group })))?;
///     conn.send_to_group(&group, Message::new().kind("watcher").generate_id().with("topic", topic))?;
///     Ok(())
/// }
/// # let _ = Plugin::new("doc", "1.0.0").handler("watch", watch);
/// ```
pub struct Connection {
    effects: Vec<Effect>,
}

impl Connection {
    pub(crate) fn new() -> Self {
        Connection {
            effects: Vec::new(),
        }
    }

    pub(crate) fn into_effects(self) -> Vec<Effect> {
        self.effects
    }

    fn push(&mut self, kind: u32, target: &str, body: String) {
        self.effects.push(Effect {
            kind,
            target: RString::from(target),
            body: RString::from(body),
        });
    }

    /// rohrpost's `send_message`: sends any [`Message`] to the caller;
    /// refuses one it cannot send (see [`MessageError`]).
    ///
    /// ```
    /// use rohrpost_plugin_api::prelude::*;
    ///
    /// fn tick(req: &Request, conn: &mut Connection) -> HandlerResult {
    ///     // Several messages for one request, each with a fresh random id.
    ///     for n in 1..=3 {
    ///         conn.send_message(Message::new().kind("tick").generate_id().with("n", n))?;
    ///     }
    ///     conn.send_success(req.id(), req.kind(), None)?;
    ///     Ok(())
    /// }
    /// # let _ = Plugin::new("doc", "1.0.0").inline_handler("tick", tick);
    /// ```
    pub fn send_message(&mut self, message: Message) -> Result<(), MessageError> {
        let text = message.into_json()?;
        self.push(EFFECT_SEND, "", text);
        Ok(())
    }

    /// rohrpost's `send_success`: `{"id","type","data"}` (`data` left out
    /// when `None`). Pass [`Request::id`](crate::Request::id) to answer a
    /// request.
    pub fn send_success(
        &mut self,
        id: impl Into<Id>,
        kind: &str,
        data: Option<serde_json::Value>,
    ) -> Result<(), MessageError> {
        self.send_message(Message::success(id, kind).maybe_data(data))
    }

    /// rohrpost's `send_error`: `{"id","type","error"}`. The handler still
    /// succeeds; to fail it, return an error instead, which sends the same
    /// reply and is logged.
    pub fn send_error(
        &mut self,
        id: impl Into<Id>,
        kind: &str,
        error: impl ToString,
    ) -> Result<(), MessageError> {
        self.send_message(Message::error(id, kind, error))
    }

    /// Closes the connection (code 1000) once the messages sent before this
    /// call have gone out. Anything queued after it is not carried out.
    pub fn close(&mut self) {
        self.push(EFFECT_CLOSE, "", String::new());
    }

    /// rohrpost's `add_to_group`: the connection receives what is sent to
    /// `group` until it leaves or closes (however it closes). Joining twice
    /// delivers once.
    pub fn add_to_group(&mut self, group: &str) {
        self.push(EFFECT_JOIN, group, String::new());
    }

    /// rohrpost's `remove_from_group`; leaving a group one is not in is
    /// not an error.
    pub fn remove_from_group(&mut self, group: &str) {
        self.push(EFFECT_LEAVE, group, String::new());
    }

    /// rohrpost's `send_to_group`: sends `message` to every connection in
    /// `group` (the caller too, if it is a member), at most once each.
    pub fn send_to_group(&mut self, group: &str, message: Message) -> Result<(), MessageError> {
        let text = message.into_json()?;
        self.push(EFFECT_GROUP_SEND, group, text);
        Ok(())
    }

    /// Sends a change notification (rohrpost's model mixins) to its group:
    /// one `subscription-update` message with one generated id for all, the
    /// same message as the host's `POST /api/notify`.
    ///
    /// ```
    /// use rohrpost_plugin_api::prelude::*;
    ///
    /// /// Renames a collection, then tells the subscribers of
    /// /// `collection-<pk>`.
    /// fn rename(req: &Request, conn: &mut Connection) -> HandlerResult {
    ///     let pk = req.data().and_then(|d| d.get("pk")).and_then(Value::as_u64).ok_or("data.pk is required")?;
    ///     // ... store the new name ...
    ///     conn.notify(&Notification::new("Collection", pk, Event::Update).updated_fields(["name"]))?;
    ///     conn.send_success(req.id(), req.kind(), None)?;
    ///     Ok(())
    /// }
    /// # let _ = Plugin::new("doc", "1.0.0").handler("rename", rename);
    /// ```
    pub fn notify(&mut self, notification: &Notification) -> Result<(), NotifyError> {
        let (group, message) = notification.addressed(Id::generate())?;
        self.send_to_group(&group, message)?;
        Ok(())
    }
}

/// Why a notification could not be sent. Like every error here, `?` in a
/// handler turns it into the handler's error reply.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The notification itself is invalid (an empty model, a pk that is
    /// neither a string nor an integer, an empty group).
    #[error(transparent)]
    Notification(#[from] NotificationError),
    /// Its message could not be built.
    #[error(transparent)]
    Message(#[from] MessageError),
}
