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
#[derive(Default)]
pub struct Connection {
    effects: Vec<Effect>,
}

impl Connection {
    pub(crate) fn new() -> Self {
        Self::default()
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

    /// rohrpost's `send_message`: sends any message; refuses an empty one.
    pub fn send_message(&mut self, message: Message) -> Result<(), MessageError> {
        let text = message.into_json()?;
        self.push(EFFECT_SEND, "", text);
        Ok(())
    }

    /// rohrpost's `send_success`: `{"id","type","data"}` (`data` left out
    /// when `None`).
    pub fn send_success(
        &mut self,
        id: impl Into<Id>,
        kind: &str,
        data: Option<serde_json::Value>,
    ) -> Result<(), MessageError> {
        self.send_message(Message::success(id, kind).maybe_data(data))
    }

    /// rohrpost's `send_error`: `{"id","type","error"}`.
    pub fn send_error(
        &mut self,
        id: impl Into<Id>,
        kind: &str,
        error: impl ToString,
    ) -> Result<(), MessageError> {
        self.send_message(Message::error(id, kind, error))
    }

    /// Closes the connection (code 1000) once the messages sent before this
    /// call have gone out.
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
    /// one `subscription-update` message with one generated id for all.
    pub fn notify(&mut self, notification: &Notification) -> Result<(), NotifyError> {
        let group = notification.group_name()?;
        let message = notification.message(Id::generate())?;
        self.send_to_group(&group, message)?;
        Ok(())
    }
}

/// Why a notification could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error(transparent)]
    Notification(#[from] NotificationError),
    #[error(transparent)]
    Message(#[from] MessageError),
}
