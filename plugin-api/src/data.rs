//! A request's `data` as the handler's own type, and a handler's answer
//! as JSON: what a typed handler takes ([`Data`]) and returns ([`Json`]),
//! and the one message that says what is wrong with a `data` that does not
//! fit ([`DataError`]).

use serde::{de::DeserializeOwned, Serialize};

use crate::refusal::Refusal;

/// The request's `data`, deserialized into `T`. As a handler's argument
/// (see [`Plugin::handle`](crate::Plugin::handle)) it answers a `data` that
/// does not fit with the error reply
/// `Invalid data: <field>: <what is wrong>`, without running the handler
/// and without logging it: it is the client's mistake. To check something
/// first, or to answer with a text of your own, take
/// `Result<Data<T>, DataError>` instead.
///
/// `T` decides what a request without `data` means: an `Option<T>` (or
/// `()`) accepts it, anything else answers `Invalid data: data is
/// required`.
///
/// ```
/// use rohrpost_plugin_api::prelude::*;
///
/// #[derive(serde::Deserialize)]
/// struct Add {
///     a: i64,
///     b: i64,
/// }
///
/// /// `{"id":1,"type":"add","data":{"a":1,"b":2}}` →
/// /// `{"id":1,"type":"add","data":{"sum":3}}`.
/// fn add(Data(input): Data<Add>) -> Result<Value, Refusal> {
///     let sum = input.a.checked_add(input.b).ok_or(Refusal::new("Too large."))?;
///     Ok(json!({ "sum": sum }))
/// }
/// # let _ = Plugin::new("doc", "1.0.0").handle("add", add).inline();
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Data<T>(pub T);

/// Why a request's `data` does not fit the handler's type, naming the
/// field: `Invalid data: items[1].amount: invalid type: string "2",
/// expected u64`. A handler taking `Result<Data<T>, DataError>` gets it to
/// answer as it likes; `Refusal::from(error)` answers with this text.
///
/// ```
/// use rohrpost_plugin_api::prelude::*;
///
/// #[derive(serde::Deserialize)]
/// struct Join {
///     room: String,
/// }
///
/// /// Only signed-in connections learn what their `data` lacks.
/// fn join(req: &Request, input: Result<Data<Join>, DataError>) -> Result<Value, HandlerError> {
///     if req.get::<String>("user")?.is_none() {
///         return refuse("Sign in first.");
///     }
///     let Data(join) = input.map_err(|_| Refusal::new("Name a room."))?;
///     Ok(json!({ "room": join.room }))
/// }
/// # let _ = Plugin::new("doc", "1.0.0").handle("join", join);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text}")]
pub struct DataError {
    text: String,
    missing: bool,
}

impl DataError {
    /// Whether the request had no `data` at all.
    pub fn is_missing(&self) -> bool {
        self.missing
    }
}

impl From<DataError> for Refusal {
    fn from(error: DataError) -> Self {
        Refusal::new(error.text)
    }
}

/// A handler's answer as the reply's `data`, for any type that serializes
/// (a [`Value`](serde_json::Value) needs no wrapper). A value that
/// serializes to `null` answers without `data`.
///
/// ```
/// use rohrpost_plugin_api::prelude::*;
///
/// #[derive(serde::Serialize)]
/// struct Sum {
///     sum: i64,
/// }
///
/// /// `{"id":1,"type":"sum","data":[1,2]}` → `{"id":1,"type":"sum","data":{"sum":3}}`.
/// fn sum(Data(numbers): Data<Vec<i64>>) -> Result<Json<Sum>, Refusal> {
///     Ok(Json(Sum { sum: numbers.iter().sum() }))
/// }
/// # let _ = Plugin::new("doc", "1.0.0").handle("sum", sum).inline();
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Json<T: Serialize>(pub T);

/// `data` (absent: `null`) as `In`, or what is wrong with it, naming the
/// field: `Invalid data: items[2].amount: invalid type: ...`.
pub(crate) fn decode<In: DeserializeOwned>(data: Option<&str>) -> Result<In, DataError> {
    let text = data.unwrap_or("null");
    let mut json = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(&mut json).map_err(|e| {
        if data.is_none() {
            return DataError {
                text: "Invalid data: data is required".to_owned(),
                missing: true,
            };
        }
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // serde_json says where in the text; the path says it better.
        let what = match inner.rfind(" at line ") {
            Some(at) => &inner[..at],
            None => inner.as_str(),
        };
        let text = if path == "." || path.is_empty() {
            format!("Invalid data: {what}")
        } else {
            format!("Invalid data: {path}: {what}")
        };
        DataError {
            text,
            missing: false,
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
            e.to_string(),
            r#"Invalid data: items[1].amount: invalid type: string "2", expected u64"#
        );
        assert!(!e.is_missing());
        let e = decode::<Order>(Some(r#"{"items":[]}"#)).unwrap_err();
        assert_eq!(e.to_string(), "Invalid data: missing field `name`");
        let e = decode::<Order>(None).unwrap_err();
        assert_eq!(e.to_string(), "Invalid data: data is required");
        assert!(e.is_missing());
        assert_eq!(
            Refusal::from(e),
            Refusal::new("Invalid data: data is required")
        );
        assert!(decode::<Option<Order>>(None).unwrap().is_none());
        assert!(decode::<()>(None).is_ok());
    }
}
