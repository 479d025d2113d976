//! What a handler does to the calling connection: send messages and close
//! it. Effects are collected here and
//! carried out by the host, in order, after the handler returns.

use abi_stable::std_types::RString;

use crate::{
    abi::{Effect, EFFECT_CLOSE, EFFECT_SEND},
    message::{Id, Message, MessageError},
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
}
