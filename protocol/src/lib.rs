//! The rohrpost protocol as the host speaks it (docs/protocol.md), in a
//! crate of its own so that the benchmarks' baseline server reads requests
//! with the very same code.
//!
//! The rohrpost envelope: turning one text frame into `id`, `type` and
//! `data`, or into the exact error reply docs/protocol.md prescribes; and every
//! other text the server puts on the wire of its own accord (the error
//! replies for requests its handlers could not answer, the close frames).
//!
//! The frame is read once, without building a JSON tree: `id` and `data` stay
//! raw text slices of the frame (so big integers and `"123"` go back exactly
//! as sent), and the handler parses only what it needs.

mod scan;

use std::{borrow::Cow, time::Duration};

use rohrpost_plugin_api::{wire, GroupNameError};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

use self::scan::Parts;

/// A request whose envelope is valid.
#[derive(Debug, PartialEq, Eq)]
pub struct Envelope<'a> {
    pub id: &'a str,
    pub kind: Cow<'a, str>,
    pub data: Option<&'a str>,
}

/// Why a frame gets an error reply instead of reaching a handler. The
/// `Display` texts are the exact wire texts of docs/protocol.md.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Rejection<'a> {
    #[error("Received empty message.")]
    Empty,
    #[error("Expected a text frame: rohrpost messages are JSON text.")]
    Binary,
    #[error("Could not decode JSON message. Error: {0}")]
    Decode(String),
    #[error("Expected a JSON object as message.")]
    NotObject,
    #[error("Missing required field 'type'.")]
    MissingType,
    #[error("Missing required field 'id'.")]
    MissingId,
    #[error("Field 'type' must be a string.")]
    TypeNotString { id: &'a str },
    #[error("Message too complex: more than {0} arrays and objects.")]
    TooComplex(usize),
}

impl Rejection<'_> {
    /// The error reply for this rejection.
    pub fn reply(&self) -> String {
        let id = match self {
            Rejection::TypeNotString { id } => Some(*id),
            _ => None,
        };
        wire::write_message(id, None, Some(&self.to_string()), None)
    }
}

/// Why a valid request gets an error reply from the server rather than
/// (or among) its handler's own messages. The `Display` texts are the wire
/// texts; the reply carries the request's `id` and `type`.
#[derive(Debug, thiserror::Error)]
pub enum Failure<'a> {
    #[error("Unknown message type '{kind}'.")]
    UnknownType { kind: &'a str },
    /// The handler's own error text, as it gave it.
    #[error("{0}")]
    Failed(&'a str),
    #[error("Internal error: the handler for '{kind}' panicked.")]
    Panicked { kind: &'a str },
    #[error("The handler for '{kind}' did not finish within {} ms.", after.as_millis())]
    TimedOut { kind: &'a str, after: Duration },
    #[error("Internal error: the handler for '{kind}' did not complete.")]
    Lost { kind: &'a str },
    /// The worker process running the plugin died (or was replaced) while
    /// the call was in flight.
    #[error("Internal error: the plugin '{plugin}' crashed.")]
    Crashed { plugin: &'a str },
    /// The plugin's worker crashes at every start: it is out of service
    /// until a new version is deployed.
    #[error("Internal error: the plugin '{plugin}' is out of service.")]
    OutOfService { plugin: &'a str },
    #[error("Invalid group name: {problem}.")]
    InvalidGroup { problem: &'a GroupNameError },
    #[error("Internal error: the handler for '{kind}' produced an invalid message.")]
    InvalidMessage { kind: &'a str },
    #[error("The handler for '{kind}' used a feature this server does not support.")]
    Unsupported { kind: &'a str },
    #[error("Too many messages: at most {per_second} per second.")]
    RateLimited { per_second: u32 },
    /// The call would attach more to the connection than a plugin may.
    #[error(
        "Connection state too large: a plugin may attach at most {limit} bytes to a connection."
    )]
    StateTooLarge { limit: usize },
    /// The handler asked for more effects than a call may have; none was
    /// carried out.
    #[error("Internal error: the handler for '{kind}' asked for more than {limit} effects.")]
    TooManyEffects { kind: &'a str, limit: usize },
    /// The call would put the connection in more groups than it may be in.
    #[error("Too many groups: a connection may be in at most {limit} groups.")]
    TooManyGroups { limit: usize },
}

impl Failure<'_> {
    /// The error reply to `request`.
    pub fn reply(&self, request: &Envelope<'_>) -> String {
        let text;
        let error = match self {
            Failure::Failed(own) => *own,
            _ => {
                text = self.to_string();
                &text
            }
        };
        wire::write_message(Some(request.id), Some(&request.kind), Some(error), None)
    }
}

/// A close frame the server sends of its own accord: code (RFC 6455) and
/// reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Close {
    pub code: u16,
    /// Owned only for a plugin's reason ([`Close::with`]).
    pub reason: std::borrow::Cow<'static, str>,
}

impl Close {
    /// A handler asked to close the connection.
    pub const NORMAL: Close = Close::new(1000, "");
    /// The server is shutting down.
    pub const SHUTDOWN: Close = Close::new(1001, "Server shutting down.");
    /// No frame from the client for the whole idle timeout.
    pub const IDLE: Close = Close::new(1001, "Idle timeout.");
    /// The connection's outbound queue overflowed: 1013, "try again later".
    /// The client missed messages and should reconnect and resubscribe.
    pub const QUEUE_FULL: Close =
        Close::new(1013, "Outbound queue full: the client reads too slowly.");
    /// The client broke RFC 6455 (section 7.4.1 names the codes).
    pub const PROTOCOL_ERROR: Close = Close::new(1002, "Protocol error.");
    pub const INVALID_UTF8: Close =
        Close::new(1007, "Invalid UTF-8 in a text message or close reason.");
    pub const TOO_BIG: Close = Close::new(1009, "Message too big.");
    /// The client kept sending faster than `max_messages_per_second`.
    pub const RATE_EXCEEDED: Close = Close::new(1008, "Message rate exceeded.");
    /// A plugin's `on_connect` failed (an error, a panic, a timeout, a
    /// crash): the connection is refused.
    pub const HOOK_FAILED: Close = Close::new(1011, "Internal error.");

    const fn new(code: u16, reason: &'static str) -> Self {
        Close {
            code,
            reason: std::borrow::Cow::Borrowed(reason),
        }
    }

    /// A plugin's close: its code (checked by the caller) and reason.
    pub fn with(code: u16, reason: String) -> Self {
        Close {
            code,
            reason: std::borrow::Cow::Owned(reason),
        }
    }
}

/// Arrays and objects a message may hold by default. Each costs a handler
/// that reads `data` an allocation of a few hundred bytes, so a 1 MiB
/// message of nested brackets would cost it about 180 MB; ordinary
/// messages hold a handful.
pub const MAX_CONTAINERS: usize = 10_000;

/// Reads one text frame, with the default bound on arrays and objects.
pub fn parse(frame: &str) -> Result<Envelope<'_>, Rejection<'_>> {
    parse_bounded(frame, MAX_CONTAINERS)
}

/// Reads one text frame holding at most `max_containers` arrays and objects.
pub fn parse_bounded(frame: &str, max_containers: usize) -> Result<Envelope<'_>, Rejection<'_>> {
    // Most frames are read in one pass; the rest, errors included, by
    // serde_json.
    match scan::parts(frame, max_containers) {
        Some(parts) => envelope(parts),
        None => parse_full(frame, max_containers),
    }
}

/// Whether `text` is a JSON object, as a message a plugin sends must be.
pub fn is_json_object(text: &str) -> bool {
    text.starts_with('{')
        && (scan::object(text).is_some() || serde_json::from_str::<IgnoredAny>(text).is_ok())
}

/// Reads one text frame with serde_json: any frame, with the exact error.
fn parse_full(frame: &str, max_containers: usize) -> Result<Envelope<'_>, Rejection<'_>> {
    if frame.is_empty() {
        return Err(Rejection::Empty);
    }
    let decode = |e: serde_json::Error| Rejection::Decode(e.to_string());
    if !frame
        .trim_start_matches([' ', '\t', '\n', '\r'])
        .starts_with('{')
    {
        // Not an object, but the decode error comes first when it is not
        // JSON at all.
        serde_json::from_str::<IgnoredAny>(frame).map_err(decode)?;
        return Err(Rejection::NotObject);
    }
    let parts: Parts<'_> = serde_json::from_str(frame).map_err(decode)?;
    check_raw_parts(frame, max_containers)?;
    envelope(parts)
}

/// The envelope of a valid JSON object's raw top-level fields, or what is
/// wrong with them.
fn envelope(parts: Parts<'_>) -> Result<Envelope<'_>, Rejection<'_>> {
    let kind = parts.kind.ok_or(Rejection::MissingType)?;
    let id = parts.id.ok_or(Rejection::MissingId)?;
    let kind = decode_string(kind).ok_or(Rejection::TypeNotString { id })?;
    Ok(Envelope {
        id,
        kind,
        data: parts.data,
    })
}

/// How deep arrays and objects may nest: serde_json's own limit, which
/// handlers parsing `data` run into.
const MAX_DEPTH: usize = 128;

/// What a full parse would reject but reading raw parts does not: nesting
/// deeper than [`MAX_DEPTH`], and `\u` escapes of lone UTF-16 surrogates.
/// Checked here so that the request fails as docs/protocol.md says, instead of
/// reaching a handler with `data` it cannot read. Also the bound on arrays
/// and objects, in the same pass. `frame` is valid JSON.
fn check_raw_parts(frame: &str, max_containers: usize) -> Result<(), Rejection<'static>> {
    let bytes = frame.as_bytes();
    let mut depth = 0usize;
    let mut containers = 0usize;
    let mut in_string = false;
    let mut at = 0;
    while at < bytes.len() {
        let b = bytes[at];
        if in_string {
            match b {
                b'\\' if bytes.get(at + 1) == Some(&b'u') => {
                    let unit = hex4(bytes, at + 2);
                    if (0xD800..0xDC00).contains(&unit) {
                        let low = (bytes.get(at + 6..at + 8) == Some(b"\\u"))
                            .then(|| hex4(bytes, at + 8));
                        if !low.is_some_and(|l| (0xDC00..0xE000).contains(&l)) {
                            return Err(decode_at("lone leading surrogate in hex escape", at));
                        }
                        at += 12;
                        continue;
                    }
                    if (0xDC00..0xE000).contains(&unit) {
                        return Err(decode_at("lone trailing surrogate in hex escape", at));
                    }
                    at += 6;
                    continue;
                }
                b'\\' => at += 1,
                b'"' => in_string = false,
                _ => {}
            }
        } else {
            match b {
                b'"' => in_string = true,
                b'[' | b'{' => {
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return Err(decode_at("recursion limit exceeded", at));
                    }
                    containers += 1;
                    if containers > max_containers {
                        return Err(Rejection::TooComplex(max_containers));
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        at += 1;
    }
    Ok(())
}

fn hex4(bytes: &[u8], at: usize) -> u32 {
    bytes
        .get(at..at + 4)
        .and_then(|h| std::str::from_utf8(h).ok())
        .and_then(|h| u32::from_str_radix(h, 16).ok())
        .unwrap_or(0)
}

fn decode_at(what: &str, at: usize) -> Rejection<'static> {
    Rejection::Decode(format!("{what} at byte {}", at + 1))
}

/// The text of a JSON string literal, borrowed when it has no escapes.
fn decode_string(raw: &str) -> Option<Cow<'_, str>> {
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    if !inner.contains('\\') {
        return Some(Cow::Borrowed(inner));
    }
    serde_json::from_str::<String>(raw).ok().map(Cow::Owned)
}

/// The top-level fields read by serde_json, as [`scan`] reads them.
impl<'de> serde::Deserialize<'de> for Parts<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(PartsVisitor)
    }
}

struct PartsVisitor;

impl<'de> Visitor<'de> for PartsVisitor {
    type Value = Parts<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut fields = Parts::default();
        while let Some(key) = map.next_key::<Key>()? {
            let slot = match key {
                Key::Id => &mut fields.id,
                Key::Type => &mut fields.kind,
                Key::Data => &mut fields.data,
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            *slot = Some(map.next_value::<&'de RawValue>()?.get());
        }
        Ok(fields)
    }
}

enum Key {
    Id,
    Type,
    Data,
    Other,
}

impl<'de> serde::Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_identifier(KeyVisitor)
    }
}

struct KeyVisitor;

impl Visitor<'_> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
        Ok(match v {
            "id" => Key::Id,
            "type" => Key::Type,
            "data" => Key::Data,
            _ => Key::Other,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_envelope_keeps_raw_parts() {
        let e = parse(r#"{"type":"ping","id": 9007199254740993 ,"data":{"a": 1}}"#).unwrap();
        assert_eq!(e.id, "9007199254740993");
        assert_eq!(e.kind, "ping");
        assert_eq!(e.data, Some(r#"{"a": 1}"#));
    }

    #[test]
    fn escaped_keys_and_type_are_decoded() {
        let e = parse(r#"{"\u0074ype":"p\u0069ng","id":1}"#).unwrap();
        assert_eq!(e.kind, "ping");
    }

    #[test]
    fn errors_in_protocol_order() {
        assert_eq!(parse(""), Err(Rejection::Empty));
        assert!(matches!(parse("   "), Err(Rejection::Decode(_))));
        assert!(matches!(parse("[1,"), Err(Rejection::Decode(_))));
        assert_eq!(parse("42"), Err(Rejection::NotObject));
        assert_eq!(parse("{\"id\":1}"), Err(Rejection::MissingType));
        assert_eq!(parse("{\"type\":5}"), Err(Rejection::MissingId));
        assert_eq!(
            parse("{\"type\":5,\"id\":[1]}").unwrap_err().reply(),
            r#"{"id":[1],"error":"Field 'type' must be a string."}"#
        );
    }

    #[test]
    fn failures_answer_with_the_request_id_and_type() {
        let request = parse(r#"{"type":"slow","id":"a"}"#).unwrap();
        let timed_out = Failure::TimedOut {
            kind: "slow",
            after: Duration::from_millis(250),
        };
        assert_eq!(
            timed_out.reply(&request),
            r#"{"id":"a","type":"slow","error":"The handler for 'slow' did not finish within 250 ms."}"#
        );
        assert_eq!(
            Failure::Failed("no such room").reply(&request),
            r#"{"id":"a","type":"slow","error":"no such room"}"#
        );
        assert_eq!(
            Failure::UnknownType { kind: "slow" }.to_string(),
            "Unknown message type 'slow'."
        );
    }

    #[test]
    fn deep_nesting_is_a_decode_error_not_a_crash() {
        let deep = format!(
            "{{\"id\":1,\"type\":\"x\",\"data\":{}{}}}",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        assert!(matches!(parse(&deep), Err(Rejection::Decode(_))));
        let deep_array = "[".repeat(100_000);
        assert!(matches!(parse(&deep_array), Err(Rejection::Decode(_))));
    }

    #[test]
    fn arrays_and_objects_are_bounded_in_number() {
        let frame = |n: usize| format!(r#"{{"id":1,"type":"t","data":[{}0]}}"#, "[0],".repeat(n));
        // The envelope and `data` are two; strings do not count.
        assert!(parse_bounded(&frame(8), 10).is_ok());
        assert_eq!(parse_bounded(&frame(9), 10), Err(Rejection::TooComplex(10)));
        assert!(parse_bounded(r#"{"id":1,"type":"t","data":"[[[[[[[[[[[[[["}"#, 2).is_ok());
        assert_eq!(
            Rejection::TooComplex(10).reply(),
            r#"{"error":"Message too complex: more than 10 arrays and objects."}"#
        );
    }

    #[test]
    fn lone_surrogate_is_a_decode_error() {
        for bad in [
            r#""\ud800""#,
            r#""\udc00x""#,
            r#""\ud800\u0041""#,
            r#"{"\ud83d":1}"#,
        ] {
            let frame = format!(r#"{{"id":1,"type":"ping","data":{bad}}}"#);
            assert!(
                matches!(parse(&frame), Err(Rejection::Decode(_))),
                "{frame}"
            );
        }
        let ok = r#"{"id":1,"type":"ping","data":"\ud83d\ude00 \\ud800 \u00e9"}"#;
        assert!(parse(ok).is_ok());
    }
}
