//! Expected refusals (a wrong token, a denied subscription): the error
//! reply without the log line and the error count a failed call gets.

use crate::plugin::HandlerError;

/// An expected refusal: returned as a handler's error, it answers
/// `{"id","type","error":"<text>"}` like
/// [`Connection::reply_error`](crate::Connection::reply_error), and is
/// neither logged nor counted as an error, unlike any other error a
/// handler returns.
///
/// A handler may return it alone (`Result<Value, Refusal>`), or next to
/// other errors as a [`HandlerError`], the error type every error of this
/// crate, `&str` and `String` convert to with `?`: [`refuse`] returns it
/// from either without a conversion, and `?` passes on one that a helper
/// returned.
///
/// ```
/// use rohrpost_plugin_api::prelude::*;
///
/// #[derive(serde::Deserialize)]
/// struct Join {
///     room: String,
/// }
///
/// /// Whether the connection may join `room`.
/// fn allowed(room: &str) -> Result<(), Refusal> {
///     if room.starts_with("staff-") {
///         return refuse("Permission denied.");
///     }
///     Ok(())
/// }
///
/// fn join(Data(input): Data<Join>, conn: &mut Connection) -> Result<Value, HandlerError> {
///     allowed(&input.room)?;
///     conn.add_to_group(&input.room);
///     let joined = Message::new().kind("joined").generate_id().with("room", input.room.as_str());
///     conn.send_to_group(&input.room, joined)?;
///     Ok(json!({ "room": input.room }))
/// }
/// # let _ = Plugin::new("doc", "1.0.0").handle("join", join);
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
        any.downcast_ref::<HandlerError>()
            .and_then(|boxed| boxed.downcast_ref::<Refusal>())
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refusal {}

/// `Err` of a [`Refusal`] with `text`, as whatever error type the handler
/// returns (a [`Refusal`], a [`HandlerError`]): `return refuse("Invalid
/// token.");`.
pub fn refuse<T, E: From<Refusal>>(text: impl Into<String>) -> Result<T, E> {
    Err(E::from(Refusal::new(text)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_found_directly_or_boxed() {
        let direct: Result<(), Refusal> = refuse("No.");
        let direct = direct.unwrap_err();
        assert_eq!(Refusal::of(&direct), Some(&Refusal::new("No.")));
        let boxed: Result<(), HandlerError> = refuse("No.");
        let boxed = boxed.unwrap_err();
        assert_eq!(
            Refusal::of(&boxed).map(ToString::to_string),
            Some("No.".to_owned())
        );
        let other: HandlerError = "broken".into();
        assert!(Refusal::of(&other).is_none());
    }
}
