//! What a `subscribe` or `unsubscribe` request is about: the `data` of
//! rohrpost-js, `{"type": "collection", "id": 52}`, and the group it names
//! (`collection-52`, the group change notifications of that object go to).
//! A group name keeps to Django Channels' rule (plugin-api's
//! [`check_group_name`], the rule the host applies too),
//! so a client cannot make names that are huge or that mean something
//! elsewhere (`../..`, line breaks).

use std::fmt;

use rohrpost_plugin_api::check_group_name;
use serde_json::Value;

/// The shape every refusal repeats, so a client author sees what to send.
const EXPECTED: &str = r#"expected {"type": <non-empty string>, "id": <string or integer>}"#;

/// One object a client subscribes to.
#[derive(Debug, PartialEq, Eq)]
pub struct Subject {
    kind: String,
    id: String,
}

/// Why a request's `data` names no object.
#[derive(Debug, PartialEq, Eq)]
pub enum SubjectError {
    MissingData,
    NotAnObject,
    BadType,
    BadId,
    BadGroup,
}

impl fmt::Display for SubjectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let problem = match self {
            SubjectError::MissingData => "'data' is missing",
            SubjectError::NotAnObject => "'data' is not an object",
            SubjectError::BadType => "'type' must be a non-empty string",
            SubjectError::BadId => "'id' must be a non-empty string or an integer",
            SubjectError::BadGroup => {
                "the group name '<type>-<id>' must be shorter than 100 characters, all ASCII letters, digits, '-', '_' or '.'"
            }
        };
        write!(f, "Invalid subscription data: {problem}; {EXPECTED}.")
    }
}

impl std::error::Error for SubjectError {}

impl Subject {
    /// Reads the request's `data`.
    pub fn from_data(data: Option<&Value>) -> Result<Subject, SubjectError> {
        let object = match data {
            None => return Err(SubjectError::MissingData),
            Some(Value::Object(object)) => object,
            Some(_) => return Err(SubjectError::NotAnObject),
        };
        let kind = match object.get("type") {
            Some(Value::String(kind)) if !kind.trim().is_empty() => kind.clone(),
            _ => return Err(SubjectError::BadType),
        };
        let id = match object.get("id") {
            Some(Value::String(id)) if !id.is_empty() => id.clone(),
            Some(Value::Number(n)) if is_integer(n) => n.to_string(),
            _ => return Err(SubjectError::BadId),
        };
        let subject = Subject { kind, id };
        if check_group_name(&subject.group()).is_err() {
            return Err(SubjectError::BadGroup);
        }
        Ok(subject)
    }

    /// The group of the object: type, a dash, id.
    pub fn group(&self) -> String {
        format!("{}-{}", self.kind, self.id)
    }
}

/// Whether a JSON number is an integer, of any size (numbers are kept as
/// written, so `52` is one and `52.0` or `5.2e1` are not).
fn is_integer(n: &serde_json::Number) -> bool {
    n.is_i64() || n.is_u64() || !n.to_string().contains(['.', 'e', 'E'])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn group(data: Value) -> Result<String, SubjectError> {
        Subject::from_data(Some(&data)).map(|s| s.group())
    }

    #[test]
    fn integer_and_string_ids_name_a_group() {
        assert_eq!(
            group(json!({"type": "collection", "id": 52})).unwrap(),
            "collection-52"
        );
        assert_eq!(
            group(json!({"type": "collection", "id": "ab"})).unwrap(),
            "collection-ab"
        );
        assert_eq!(group(json!({"type": "item", "id": -3})).unwrap(), "item--3");
        let big: Value =
            serde_json::from_str(r#"{"type":"t","id":123456789012345678901234567890}"#).unwrap();
        assert_eq!(group(big).unwrap(), "t-123456789012345678901234567890");
    }

    #[test]
    fn malformed_data_is_refused() {
        assert_eq!(Subject::from_data(None), Err(SubjectError::MissingData));
        assert_eq!(group(json!(5)), Err(SubjectError::NotAnObject));
        assert_eq!(group(json!({"id": 1})), Err(SubjectError::BadType));
        assert_eq!(
            group(json!({"type": "", "id": 1})),
            Err(SubjectError::BadType)
        );
        assert_eq!(
            group(json!({"type": 7, "id": 1})),
            Err(SubjectError::BadType)
        );
        assert_eq!(group(json!({"type": "c"})), Err(SubjectError::BadId));
        assert_eq!(
            group(json!({"type": "c", "id": 1.5})),
            Err(SubjectError::BadId)
        );
        assert_eq!(
            group(json!({"type": "c", "id": null})),
            Err(SubjectError::BadId)
        );
        assert_eq!(
            group(json!({"type": "c", "id": {}})),
            Err(SubjectError::BadId)
        );
        assert_eq!(
            group(json!({"type": "c", "id": ""})),
            Err(SubjectError::BadId)
        );
        let text = SubjectError::BadId.to_string();
        assert!(text.starts_with("Invalid subscription data: "), "{text}");
    }

    #[test]
    fn group_names_keep_to_the_channels_rule() {
        assert_eq!(
            group(json!({"type": "a/b", "id": 1})),
            Err(SubjectError::BadGroup)
        );
        assert_eq!(
            group(json!({"type": "..", "id": "../etc"})),
            Err(SubjectError::BadGroup)
        );
        for bad in ["a b", "a\nb", "a\u{0}b", "é"] {
            assert_eq!(
                group(json!({"type": bad, "id": 1})),
                Err(SubjectError::BadGroup),
                "{bad:?}"
            );
        }
        let long = "t".repeat(97);
        assert_eq!(group(json!({"type": long, "id": 1})).unwrap().len(), 99);
        let too_long = "t".repeat(98);
        assert_eq!(
            group(json!({"type": too_long, "id": 1})),
            Err(SubjectError::BadGroup)
        );
        assert_eq!(
            group(json!({"type": "Model_1.v2", "id": "a-b"})).unwrap(),
            "Model_1.v2-a-b"
        );
        let text = SubjectError::BadGroup.to_string();
        assert!(text.starts_with("Invalid subscription data: "), "{text}");
    }
}
