//! Typed handlers: `data` in as the author's type, the answer out as JSON,
//! so that a handler is `fn(In) -> Result<Out, E>` and the reply, the
//! error reply and the message for malformed `data` are written here once.

use crate::{connection::Connection, plugin::HandlerResult, request::Request};
use serde::{de::DeserializeOwned, Serialize};

/// Decodes `data`, runs `f`, answers the request with its outcome.
pub(crate) fn answer<In, Out, E>(
    req: &Request<'_>,
    conn: &mut Connection,
    f: impl FnOnce(In, &Request<'_>, &mut Connection) -> Result<Out, E>,
) -> HandlerResult
where
    In: DeserializeOwned,
    Out: Serialize,
    E: std::fmt::Display + 'static,
{
    let input: In = match decode(req.data_json()) {
        Ok(input) => input,
        Err(problem) => {
            // The client's mistake: an error reply, not a failed call.
            let _ = conn.send_error(req.id(), req.kind(), problem);
            return Ok(());
        }
    };
    let out = match f(input, req, conn) {
        Ok(out) => out,
        Err(e) => {
            if let Some(refusal) = Refusal::of(&e) {
                let _ = conn.send_error(req.id(), req.kind(), refusal);
                return Ok(());
            }
            return Err(e.to_string().into());
        }
    };
    let data = serde_json::to_value(out)?;
    let data = (!data.is_null()).then_some(data);
    let _ = conn.send_success(req.id(), req.kind(), data);
    Ok(())
}

/// An expected refusal (a wrong token, a denied subscription): returned as
/// a handler's error (`Err(Refusal::new("Invalid token."))`, or with `?`
/// from a function returning [`HandlerError`](crate::HandlerError)), it
/// answers `{"id","type","error":"<text>"}` like
/// [`Connection::send_error`], and is neither logged nor counted as an
/// error, unlike any other error a handler returns.
///
/// ```
/// use rohrpost_plugin_api::prelude::*;
///
/// #[derive(serde::Deserialize)]
/// struct Join {
///     room: String,
/// }
///
/// fn join(input: Join, _: &Request, conn: &mut Connection) -> Result<Value, HandlerError> {
///     if input.room.starts_with("staff-") {
///         return Err(Refusal::new("Permission denied.").into());
///     }
///     conn.add_to_group(&input.room);
///     Ok(json!({ "room": input.room }))
/// }
/// # let _ = Plugin::new("doc", "1.0.0").typed_handler("join", join);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(String);

impl Refusal {
    /// A refusal whose text the client gets as `error`.
    pub fn new(text: impl Into<String>) -> Self {
        Refusal(text.into())
    }

    /// The refusal an error is, directly or boxed as a handler error.
    pub(crate) fn of<E: 'static>(error: &E) -> Option<&Refusal> {
        let any: &dyn std::any::Any = error;
        if let Some(refusal) = any.downcast_ref::<Refusal>() {
            return Some(refusal);
        }
        any.downcast_ref::<crate::HandlerError>()
            .and_then(|boxed| boxed.downcast_ref::<Refusal>())
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refusal {}

/// `data` (absent: `null`) as `In`, or what is wrong with it, naming the
/// field: `Invalid data: items[2].amount: invalid type: ...`.
pub(crate) fn decode<In: DeserializeOwned>(data: Option<&str>) -> Result<In, String> {
    let text = data.unwrap_or("null");
    let mut json = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(&mut json).map_err(|e| {
        if data.is_none() {
            return "Invalid data: data is required".to_owned();
        }
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // serde_json says where in the text; the path says it better.
        let what = match inner.rfind(" at line ") {
            Some(at) => &inner[..at],
            None => inner.as_str(),
        };
        if path == "." || path.is_empty() {
            format!("Invalid data: {what}")
        } else {
            format!("Invalid data: {path}: {what}")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Item {
        amount: u64,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Order {
        name: String,
        items: Vec<Item>,
    }

    #[test]
    fn malformed_data_names_the_field() {
        let e = decode::<Order>(Some(
            r#"{"name":"x","items":[{"amount":1},{"amount":"2"}]}"#,
        ))
        .unwrap_err();
        assert_eq!(
            e,
            r#"Invalid data: items[1].amount: invalid type: string "2", expected u64"#
        );
        let e = decode::<Order>(Some(r#"{"items":[]}"#)).unwrap_err();
        assert_eq!(e, "Invalid data: missing field `name`");
        let e = decode::<Order>(None).unwrap_err();
        assert_eq!(e, "Invalid data: data is required");
        assert!(decode::<Option<Order>>(None).unwrap().is_none());
        assert!(decode::<()>(None).is_ok());
    }
}
