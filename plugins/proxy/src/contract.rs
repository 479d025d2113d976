//! The contract with the backend, version 1: the JSON document POSTed for
//! each request and hook, and the effects document the backend answers
//! with. `docs/proxy.md` ("Keeping handlers in your backend") is the
//! reference; this module is the one place that reads and writes it, so
//! that what does not fit is refused here, in one way, before any effect
//! is carried out.

pub use backend_http::ConnectionInfo;
use rohrpost_plugin_api::{prelude::*, CloseCodeError};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The contract's version, in both directions.
pub const VERSION: u32 = 1;

/// The most effects one answer may ask for.
pub const MAX_EFFECTS: usize = 1000;

/// The body of a request's POST: `{"v":1,"request":<as sent>,"connection":{...}}`.
#[derive(Serialize)]
pub struct RequestBody<'a> {
    pub v: u32,
    pub request: &'a RawValue,
    pub connection: ConnectionInfo<'a>,
}

/// The body of a hook's POST: `{"v":1,"event":"connect"|"disconnect",
/// "close_code":<n>,"connection":{...}}`.
#[derive(Serialize)]
pub struct EventBody<'a> {
    pub v: u32,
    pub event: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub close_code: Option<u16>,
    pub connection: ConnectionInfo<'a>,
}

/// The backend's answer.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    v: u32,
    #[serde(default)]
    effects: Vec<EffectDoc>,
}

/// One effect, as `{"<kind>": ...}`.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum EffectDoc {
    Send(OutMessage),
    Join(String),
    Leave(String),
    GroupSend { group: String, message: OutMessage },
    Set { key: String, value: Value },
    Unset(String),
    Close(CloseDoc),
}

/// A rohrpost message the backend sends.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutMessage {
    #[serde(default)]
    id: Option<Value>,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    error: Option<String>,
}

/// `{"close":{}}` closes with 1000; a `code` (4000-4999 or 1008) and a
/// `reason` close with those.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CloseDoc {
    #[serde(default)]
    code: Option<u16>,
    #[serde(default)]
    reason: String,
}

/// What is wrong with an answer, for the log.
#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    #[error("the answer is not an effects document: {0}")]
    Shape(#[from] serde_json::Error),
    #[error("the answer is of contract version {0}, this plugin speaks version {VERSION}")]
    Version(u32),
    #[error("the answer asks for {0} effects, more than {MAX_EFFECTS}")]
    TooMany(usize),
    #[error("effect {index}: {problem}")]
    Effect { index: usize, problem: String },
}

/// Effects checked against the contract, to be carried out.
pub struct Effects(Vec<EffectDoc>);

/// Reads an answer's body.
pub fn parse(body: &[u8]) -> Result<Effects, ContractError> {
    let doc: Document = serde_json::from_slice(body)?;
    if doc.v != VERSION {
        return Err(ContractError::Version(doc.v));
    }
    if doc.effects.len() > MAX_EFFECTS {
        return Err(ContractError::TooMany(doc.effects.len()));
    }
    for (index, effect) in doc.effects.iter().enumerate() {
        let problem = match effect {
            EffectDoc::Join(g) | EffectDoc::Leave(g) | EffectDoc::GroupSend { group: g, .. }
                if g.is_empty() =>
            {
                Some("an empty group name".to_owned())
            }
            EffectDoc::Send(m) | EffectDoc::GroupSend { message: m, .. } => m.problem(),
            EffectDoc::Set { key, .. } | EffectDoc::Unset(key) if key.is_empty() => {
                Some("an empty key".to_owned())
            }
            EffectDoc::Close(CloseDoc {
                code: Some(code), ..
            }) if !(*code == 1008 || (4000..=4999).contains(code)) => {
                Some(CloseCodeError(*code).to_string())
            }
            _ => None,
        };
        if let Some(problem) = problem {
            return Err(ContractError::Effect { index, problem });
        }
    }
    Ok(Effects(doc.effects))
}

impl OutMessage {
    fn problem(&self) -> Option<String> {
        if self.kind.is_empty() {
            return Some("a message with an empty type".into());
        }
        None
    }

    fn into_message(self) -> Message {
        let mut m = Message::new().kind(self.kind);
        if let Some(id) = self.id {
            m = m.id(Id::from(id));
        }
        if let Some(error) = self.error {
            m = m.error_text(error);
        }
        m.maybe_data(self.data)
    }
}

impl Effects {
    /// Queues the effects on the connection, in order (in `on_disconnect`
    /// the host carries out only the group sends).
    pub fn apply(self, conn: &mut Connection) -> Result<(), HandlerError> {
        for effect in self.0 {
            match effect {
                EffectDoc::Send(m) => conn.send_message(m.into_message())?,
                EffectDoc::Join(group) => conn.add_to_group(&group),
                EffectDoc::Leave(group) => conn.remove_from_group(&group),
                EffectDoc::GroupSend { group, message } => {
                    conn.send_to_group(&group, message.into_message())?;
                }
                EffectDoc::Set { key, value } => conn.set(&key, value)?,
                EffectDoc::Unset(key) => conn.unset(&key),
                EffectDoc::Close(CloseDoc { code: None, .. }) => conn.close(),
                EffectDoc::Close(CloseDoc {
                    code: Some(code),
                    reason,
                }) => conn.close_with(code, &reason)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_fits_and_what_does_not() {
        assert!(parse(
            br#"{"v":1,"effects":[{"send":{"id":1,"type":"a","data":{"x":1}}},{"join":"g"},
            {"group_send":{"group":"g","message":{"type":"b"}}},{"set":{"key":"k","value":[1]}},
            {"unset":"k"},{"leave":"g"},{"close":{"code":4001,"reason":"bye"}}]}"#
        )
        .is_ok());
        assert!(parse(br#"{"v":1}"#).is_ok());
        assert!(matches!(
            parse(br#"{"v":2,"effects":[]}"#),
            Err(ContractError::Version(2))
        ));
        assert!(matches!(
            parse(br#"{"v":1,"effects":[{"explode":1}]}"#),
            Err(ContractError::Shape(_))
        ));
        assert!(matches!(
            parse(br#"{"v":1,"effects":[{"send":{"data":1}}]}"#),
            Err(ContractError::Shape(_))
        ));
        assert!(matches!(
            parse(br#"{"v":1,"effects":[{"close":{"code":1000}}]}"#),
            Err(ContractError::Effect { index: 0, .. })
        ));
        assert!(matches!(
            parse(br#"{"v":1,"effects":[{"join":""}]}"#),
            Err(ContractError::Effect { index: 0, .. })
        ));
        assert!(parse(b"<html>").is_err());
    }
}
