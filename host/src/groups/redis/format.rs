//! How group messages look on Redis: the channel a group's messages are
//! published on, and the payload. One layer, several formats, so that the
//! host speaks either its own format or that of Django Channels'
//! `channels_redis` (`RedisPubSubChannelLayer`), and a Django app's
//! `group_send` reaches this host's members unchanged.
//!
//! - [`Format::Rohrpost`]: channel `<prefix>group:<name>`, payload
//!   `<origin>\n<message>`.
//! - [`Format::ChannelsPubSub`]: channel `<prefix>__group__<name>`, payload
//!   the msgpack map of a Channels event. From Django, an event of type
//!   `rohrpost.message` (what rohrpost's `send_to_group` and its model
//!   mixins send) is delivered as its `message`: the text as it is, or a
//!   map turned into JSON text, as rohrpost's consumer does. Other events
//!   are counted and skipped. To Django, a message is published as
//!   `{"type": "rohrpost.message", "message": <text>, "rohrpost_host":
//!   <origin>}`.
//!
//! Whoever can write to Redis controls what the host reads there, so every
//! payload is checked before anything is built from it: at most
//! [`MAX_PAYLOAD`] bytes, msgpack nested at most [`MAX_DEPTH`] deep, a
//! message within the same bound, and from another host JSON text. Anything else is
//! [`Received::Rejected`]: dropped, counted and logged (rate-limited) by
//! the caller, never delivered.
//!
//! Why the extra `rohrpost_host` key: Redis hands a publisher its own
//! messages back on every channel it subscribes to, and the host has
//! already delivered them to its own members. The key marks the host's
//! own publications so that it skips them, and Django is not disturbed by
//! it: Channels routes an event on its `type` alone, and rohrpost's
//! consumer reads only `message`.

use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// The event type rohrpost's Python side sends and handles.
pub(super) const ROHRPOST_MESSAGE: &str = "rohrpost.message";

/// Most bytes of one payload read from Redis, and of the message made of
/// it: bigger ones are dropped.
pub(super) const MAX_PAYLOAD: usize = 8 << 20;
/// Deepest nesting of msgpack read from Redis (an event is a flat map; its
/// message may hold some structure).
const MAX_DEPTH: usize = 32;

/// Why a payload was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rejected {
    /// Larger than [`MAX_PAYLOAD`] (its size).
    Oversized(usize),
    /// What is wrong with it.
    Malformed(&'static str),
    /// Entries of a set or hash that a bounded read left unread: too
    /// many, or too long (how many).
    LeftOut(u64),
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rejected::Oversized(bytes) => {
                write!(f, "{bytes} bytes, more than the {MAX_PAYLOAD} accepted")
            }
            Rejected::Malformed(why) => f.write_str(why),
            Rejected::LeftOut(count) => write!(
                f,
                "{count} entries left unread: more than a read takes, longer than allowed, or not UTF-8"
            ),
        }
    }
}

/// A format of group messages on Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// This host's own, between hosts only.
    Rohrpost,
    /// `channels_redis`'s `RedisPubSubChannelLayer`.
    ChannelsPubSub,
}

/// What a payload from Redis holds, for this host.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Received {
    /// A message for the group's local members.
    Message(Utf8Bytes),
    /// This host published it: its members have it.
    Own,
    /// Not a rohrpost message: an event of another type (named, when it
    /// has a type).
    Foreign(Option<String>),
    /// Too large or malformed: dropped.
    Rejected(Rejected),
}

/// Reads msgpack under [`MAX_DEPTH`].
fn from_msgpack<'a, T: Deserialize<'a>>(packed: &'a [u8]) -> Option<T> {
    let mut reader = rmp_serde::Deserializer::from_read_ref(packed);
    reader.set_max_depth(MAX_DEPTH);
    T::deserialize(&mut reader).ok()
}

/// `text` as a message for members, within [`MAX_PAYLOAD`]. From Django
/// a text goes to members as it is (rohrpost's consumer sends it so).
fn text_message(text: String) -> Received {
    if text.len() > MAX_PAYLOAD {
        return Received::Rejected(Rejected::Oversized(text.len()));
    }
    Received::Message(Utf8Bytes::from(text))
}

/// `text` from another host: the JSON text of a frame that host made.
fn json_message(text: &str) -> Received {
    if serde_json::from_str::<serde::de::IgnoredAny>(text).is_err() {
        return Received::Rejected(Rejected::Malformed("the message is not JSON text"));
    }
    Received::Message(Utf8Bytes::from(text))
}

/// An event as Channels' layers carry it; other keys are ignored.
#[derive(Deserialize)]
struct Event {
    #[serde(rename = "type")]
    kind: Option<String>,
    message: Option<serde_json::Value>,
    rohrpost_host: Option<String>,
    /// The core layer's routing: the channels of the receiving process
    /// the event is for (a list from `group_send`, one name from `send`).
    #[serde(rename = "__asgi_channel__")]
    channels: Option<OneOrMore>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMore {
    One(String),
    More(Vec<String>),
}

/// Bytes of random prefix before the msgpack of a core layer message
/// (`channels_redis` keeps messages in sorted sets, whose members must
/// differ).
pub(super) const CORE_RANDOM_PREFIX: usize = 12;

#[derive(Serialize)]
struct CoreOutgoing<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    message: &'a str,
    #[serde(rename = "__asgi_channel__")]
    channels: &'a [&'a str],
}

/// A core layer message for `channels` of one process (one sorted set):
/// the random prefix, then the msgpack of the event.
pub(super) fn core_message(message: &str, channels: &[&str]) -> Vec<u8> {
    let mut payload: Vec<u8> = (0..CORE_RANDOM_PREFIX).map(|_| rand::random()).collect();
    let event = CoreOutgoing {
        kind: ROHRPOST_MESSAGE,
        message,
        channels,
    };
    // Texts and a list of texts always encode.
    let _ = rmp_serde::encode::write_named(&mut payload, &event);
    payload
}

/// Reads a core layer message: the message, and the channels it is for.
pub(super) fn read_core_message(payload: &[u8]) -> (Received, Vec<String>) {
    if payload.len() > MAX_PAYLOAD {
        return (
            Received::Rejected(Rejected::Oversized(payload.len())),
            Vec::new(),
        );
    }
    let Some(packed) = payload.get(CORE_RANDOM_PREFIX..) else {
        return (
            Received::Rejected(Rejected::Malformed("shorter than the random prefix")),
            Vec::new(),
        );
    };
    let Some(mut event) = from_msgpack::<Event>(packed) else {
        return (
            Received::Rejected(Rejected::Malformed("not a msgpack map of an event")),
            Vec::new(),
        );
    };
    let channels = match event.channels.take() {
        Some(OneOrMore::One(channel)) => vec![channel],
        Some(OneOrMore::More(channels)) => channels,
        None => Vec::new(),
    };
    // Core layer messages come only from others: no origin to compare.
    (rohrpost_message(event, ""), channels)
}

#[derive(Serialize)]
struct Outgoing<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    message: &'a str,
    rohrpost_host: &'a str,
}

impl Format {
    /// What a group's channel name starts with, before the group's name.
    pub(crate) fn channel_prefix(self, prefix: &str) -> String {
        match self {
            Format::Rohrpost => format!("{prefix}group:"),
            Format::ChannelsPubSub => format!("{prefix}__group__"),
        }
    }

    /// The payload that carries `message` from the host `origin`.
    pub(crate) fn encode(self, origin: &str, message: &str) -> Vec<u8> {
        match self {
            Format::Rohrpost => format!("{origin}\n{message}").into_bytes(),
            Format::ChannelsPubSub => channels_event(origin, message),
        }
    }

    /// Reads a payload for a host whose id is `origin`.
    pub(super) fn decode(self, origin: &str, payload: &[u8]) -> Received {
        if payload.len() > MAX_PAYLOAD {
            return Received::Rejected(Rejected::Oversized(payload.len()));
        }
        match self {
            Format::Rohrpost => {
                let Ok(text) = std::str::from_utf8(payload) else {
                    return Received::Rejected(Rejected::Malformed("not UTF-8 text"));
                };
                let Some((from, message)) = text.split_once('\n') else {
                    return Received::Rejected(Rejected::Malformed("no origin line"));
                };
                if from == origin {
                    Received::Own
                } else {
                    json_message(message)
                }
            }
            Format::ChannelsPubSub => read_event(origin, payload),
        }
    }
}

/// The msgpack map of a `rohrpost.message` event (keys as text, as
/// Python's `msgpack.packb` writes them).
pub(super) fn channels_event(origin: &str, message: &str) -> Vec<u8> {
    let event = Outgoing {
        kind: ROHRPOST_MESSAGE,
        message,
        rohrpost_host: origin,
    };
    // A struct of three texts always encodes.
    rmp_serde::to_vec_named(&event).unwrap_or_default()
}

/// Reads a Channels event (msgpack, as `channels_redis` writes it).
pub(super) fn read_event(origin: &str, payload: &[u8]) -> Received {
    if payload.len() > MAX_PAYLOAD {
        return Received::Rejected(Rejected::Oversized(payload.len()));
    }
    let Some(event) = from_msgpack::<Event>(payload) else {
        return Received::Rejected(Rejected::Malformed("not a msgpack map of an event"));
    };
    rohrpost_message(event, origin)
}

/// What an event holds for this host.
fn rohrpost_message(event: Event, origin: &str) -> Received {
    if event.kind.as_deref() != Some(ROHRPOST_MESSAGE) {
        return Received::Foreign(event.kind);
    }
    if !origin.is_empty() && event.rohrpost_host.as_deref() == Some(origin) {
        return Received::Own;
    }
    match event.message {
        Some(serde_json::Value::String(text)) => text_message(text),
        Some(serde_json::Value::Null) | None => Received::Foreign(event.kind),
        Some(other) => text_message(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `msgpack.packb({"type": "rohrpost.message", "message": "{\"a\": 1}"})`
    /// in Python, byte for byte.
    const FROM_DJANGO: &[u8] = b"\x82\xa4type\xb0rohrpost.message\xa7message\xa8{\"a\": 1}";

    #[test]
    fn a_django_event_is_read() {
        assert_eq!(
            read_event("me", FROM_DJANGO),
            Received::Message("{\"a\": 1}".into())
        );
    }

    #[test]
    fn a_dict_message_becomes_json_text() {
        // {"type": "rohrpost.message", "message": {"a": [1, "x"]}}
        let payload = b"\x82\xa4type\xb0rohrpost.message\xa7message\x81\xa1a\x92\x01\xa1x";
        assert_eq!(
            read_event("me", payload),
            Received::Message(r#"{"a":[1,"x"]}"#.into())
        );
    }

    #[test]
    fn other_events_and_garbage_are_foreign() {
        // {"type": "chat.message", "text": b"\x00"}
        let payload = b"\x82\xa4type\xacchat.message\xa4text\xc4\x01\x00";
        assert_eq!(
            read_event("me", payload),
            Received::Foreign(Some("chat.message".into()))
        );
        assert!(matches!(read_event("me", b"\xc1"), Received::Rejected(_)));
    }

    #[test]
    fn own_events_are_recognised_and_others_delivered() {
        let payload = channels_event("me", "{\"x\":1}");
        assert_eq!(read_event("me", &payload), Received::Own);
        assert_eq!(
            read_event("other", &payload),
            Received::Message("{\"x\":1}".into())
        );
    }

    #[test]
    fn core_messages_round_trip_with_their_channels() {
        let payload = core_message("{}", &["specific.a!1", "specific.a!2"]);
        assert_eq!(
            read_core_message(&payload),
            (
                Received::Message("{}".into()),
                vec!["specific.a!1".to_owned(), "specific.a!2".to_owned()]
            )
        );
        // From Django's `send`: one channel name; too short: unreadable.
        let mut one = vec![0u8; CORE_RANDOM_PREFIX];
        one.extend_from_slice(
            b"\x83\xa4type\xb0rohrpost.message\xa7message\xa3\"m\"\xb0__asgi_channel__\xa3x!y",
        );
        assert_eq!(
            read_core_message(&one),
            (Received::Message("\"m\"".into()), vec!["x!y".to_owned()])
        );
        assert!(matches!(
            read_core_message(b"short").0,
            Received::Rejected(Rejected::Malformed(_))
        ));
    }

    #[test]
    fn the_host_format_round_trips() {
        let payload = Format::Rohrpost.encode("me", "[\"m\",\n1]");
        assert_eq!(Format::Rohrpost.decode("me", &payload), Received::Own);
        assert_eq!(
            Format::Rohrpost.decode("you", &payload),
            Received::Message("[\"m\",\n1]".into())
        );
    }

    #[test]
    fn hostile_payloads_are_rejected_without_building_them() {
        let rejected = |r: Received| matches!(r, Received::Rejected(_));
        // Not JSON, not UTF-8, no origin line.
        assert!(rejected(Format::Rohrpost.decode("me", b"other\nnot json")));
        assert!(rejected(Format::Rohrpost.decode("me", b"other\n\xff")));
        assert!(rejected(Format::Rohrpost.decode("me", b"{}")));
        // Too large, whatever it holds.
        let huge = vec![b' '; MAX_PAYLOAD + 1];
        assert_eq!(
            Format::Rohrpost.decode("me", &huge),
            Received::Rejected(Rejected::Oversized(MAX_PAYLOAD + 1))
        );
        assert!(rejected(read_event("me", &huge)));
        // Nested deeper than allowed: 100 000 one-element arrays.
        let mut deep = b"\x82\xa4type\xb0rohrpost.message\xa7message".to_vec();
        deep.extend(std::iter::repeat_n(0x91u8, 100_000));
        deep.push(0x01);
        assert!(rejected(read_event("me", &deep)));
        // A map claiming four billion entries, and a string claiming 4 GiB.
        assert!(rejected(read_event("me", b"\xdf\xff\xff\xff\xff")));
        assert!(rejected(read_event(
            "me",
            b"\x82\xa4type\xb0rohrpost.message\xa7message\xdb\xff\xff\xff\xff"
        )));
        // A message of bytes; a text that is not JSON goes as it is, as
        // rohrpost's consumer sends it.
        assert!(rejected(read_event(
            "me",
            b"\x82\xa4type\xb0rohrpost.message\xa7message\xc4\x03abc"
        )));
        assert_eq!(
            read_event("me", b"\x82\xa4type\xb0rohrpost.message\xa7message\xa3abc"),
            Received::Message("abc".into())
        );
    }
}
