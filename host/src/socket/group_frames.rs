//! A batch of group messages encoded as frames once for all members: as
//! they are, for members that negotiated no compression, and compressed,
//! made on the first compressed member's turn and shared by every other,
//! whether the fan-out writes it to the member's socket or the member's
//! own task writes it from its queue.
//!
//! Why: a fan-out to 10,000 members that compressed for each would cost
//! 10,000 compressions. Every compressed message the server sends stands
//! alone (`server_no_context_takeover`, see [`crate::socket::deflate`]),
//! so one compressed frame is right for every member that negotiated the
//! same window; the threshold and level are the server's, the same for all.

use std::sync::OnceLock;

use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::{
    deflate::{self, Deflate, MIN_WINDOW_BITS},
    frame::{self, OpCode},
};

/// The frames of one batch of group messages.
pub(crate) struct GroupFrames {
    messages: Vec<Utf8Bytes>,
    plain: Encoded,
    /// By window size, 9 to 15 bits.
    compressed: [OnceLock<Encoded>; 7],
}

/// The frames of every message, one after another, and where each ends.
struct Encoded {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Encoded {
    fn frame(&self, index: usize) -> &[u8] {
        let start = match index.checked_sub(1) {
            Some(before) => self.ends.get(before).copied().unwrap_or(self.bytes.len()),
            None => 0,
        };
        let end = self.ends.get(index).copied().unwrap_or(start);
        self.bytes.get(start..end).unwrap_or_default()
    }
}

impl GroupFrames {
    /// The frames of `messages`, one after another.
    pub(crate) fn new(messages: &[Utf8Bytes]) -> Self {
        let mut bytes =
            Vec::with_capacity(messages.iter().map(|m| m.len() + frame::MAX_HEADER).sum());
        let mut ends = Vec::with_capacity(messages.len());
        for message in messages {
            frame::write_frame(&mut bytes, OpCode::Text, message.as_bytes());
            ends.push(bytes.len());
        }
        GroupFrames {
            messages: messages.to_vec(),
            plain: Encoded { bytes, ends },
            compressed: Default::default(),
        }
    }

    /// How many messages the batch holds.
    pub(crate) fn len(&self) -> usize {
        self.messages.len()
    }

    /// Message `index` as text (empty past the end).
    pub(crate) fn message(&self, index: usize) -> &str {
        self.messages.get(index).map_or("", |m| m.as_str())
    }

    /// The frames as they are.
    #[cfg(test)]
    pub(crate) fn plain(&self) -> &[u8] {
        &self.plain.bytes
    }

    /// The frames of every message for a member that negotiated `deflate`.
    pub(crate) fn for_member(&self, deflate: Option<Deflate>) -> &[u8] {
        &self.encoded(deflate).bytes
    }

    /// The frame of message `index` for a member that negotiated `deflate`
    /// (empty past the end).
    pub(crate) fn frame_for_member(&self, index: usize, deflate: Option<Deflate>) -> &[u8] {
        self.encoded(deflate).frame(index)
    }

    fn encoded(&self, deflate: Option<Deflate>) -> &Encoded {
        let Some(deflate) = deflate else {
            return &self.plain;
        };
        let slot = usize::from(deflate.window_bits.saturating_sub(MIN_WINDOW_BITS))
            .min(self.compressed.len() - 1);
        self.compressed[slot].get_or_init(|| {
            let mut bytes = Vec::with_capacity(self.plain.bytes.len() / 2);
            let mut ends = Vec::with_capacity(self.messages.len());
            for message in &self.messages {
                deflate::write_frame(&mut bytes, OpCode::Text, message.as_bytes(), deflate);
                ends.push(bytes.len());
            }
            Encoded { bytes, ends }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFLATE: Deflate = Deflate {
        threshold: 100,
        window_bits: 15,
        level: 6,
    };

    #[test]
    fn frames_follow_one_another() {
        let messages = ["{}".into(), "{\"a\":1}".into()];
        let frames = GroupFrames::new(&messages);
        let all = frames.plain();
        assert_eq!(&all[..4], &[0x81, 2, b'{', b'}']);
        assert_eq!(&all[4..6], &[0x81, 7]);
        assert_eq!(&all[6..], b"{\"a\":1}");
        assert_eq!(frames.frame_for_member(0, None), &all[..4]);
        assert_eq!(frames.frame_for_member(1, None), &all[4..]);
        assert!(frames.frame_for_member(2, None).is_empty());
        assert_eq!((frames.len(), frames.message(1)), (2, "{\"a\":1}"));
    }

    #[test]
    fn compressed_frames_are_made_once_and_shared() {
        let big: Utf8Bytes = format!("{{\"x\":\"{}\"}}", "ab".repeat(500)).into();
        let messages = ["{}".into(), big];
        let frames = GroupFrames::new(&messages);
        let one = frames.for_member(Some(DEFLATE)).as_ptr();
        let two = frames.for_member(Some(DEFLATE)).as_ptr();
        assert_eq!(one, two);
        let compressed = frames.for_member(Some(DEFLATE));
        assert_eq!(
            &compressed[..4],
            &[0x81, 2, b'{', b'}'],
            "below the threshold"
        );
        assert_eq!(compressed[4], 0x80 | frame::RSV1 | 0x1);
        assert!(compressed.len() < frames.plain().len() / 4);
        assert_eq!(frames.for_member(None), frames.plain());
        // Each message's frame is a slice of the same bytes.
        let second = frames.frame_for_member(1, Some(DEFLATE));
        assert_eq!(second.as_ptr(), compressed[4..].as_ptr());
        assert_eq!(second.len(), compressed.len() - 4);
    }
}
