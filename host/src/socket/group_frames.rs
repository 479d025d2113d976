//! A batch of group messages encoded as frames once for all members: as
//! they are, for members that negotiated no compression, and compressed,
//! made on the first compressed member's turn and shared by every other.
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
    plain: Vec<u8>,
    /// By window size, 9 to 15 bits.
    compressed: [OnceLock<Vec<u8>>; 7],
}

impl GroupFrames {
    /// The frames of `messages`, one after another.
    pub(crate) fn new(messages: &[Utf8Bytes]) -> Self {
        let mut plain =
            Vec::with_capacity(messages.iter().map(|m| m.len() + frame::MAX_HEADER).sum());
        for message in messages {
            frame::write_frame(&mut plain, OpCode::Text, message.as_bytes());
        }
        GroupFrames {
            messages: messages.to_vec(),
            plain,
            compressed: Default::default(),
        }
    }

    /// The frames as they are.
    #[cfg(test)]
    pub(crate) fn plain(&self) -> &[u8] {
        &self.plain
    }

    /// The frames for a member that negotiated `deflate`.
    pub(crate) fn for_member(&self, deflate: Option<Deflate>) -> &[u8] {
        let Some(deflate) = deflate else {
            return &self.plain;
        };
        let slot = usize::from(deflate.window_bits.saturating_sub(MIN_WINDOW_BITS))
            .min(self.compressed.len() - 1);
        self.compressed[slot].get_or_init(|| {
            let mut out = Vec::with_capacity(self.plain.len() / 2);
            for message in &self.messages {
                deflate::write_frame(&mut out, OpCode::Text, message.as_bytes(), deflate);
            }
            out
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_follow_one_another() {
        let messages = ["{}".into(), "{\"a\":1}".into()];
        let frames = GroupFrames::new(&messages);
        let all = frames.plain();
        assert_eq!(&all[..4], &[0x81, 2, b'{', b'}']);
        assert_eq!(&all[4..6], &[0x81, 7]);
        assert_eq!(&all[6..], b"{\"a\":1}");
    }

    #[test]
    fn compressed_frames_are_made_once_and_shared() {
        let big: Utf8Bytes = format!("{{\"x\":\"{}\"}}", "ab".repeat(500)).into();
        let messages = ["{}".into(), big];
        let frames = GroupFrames::new(&messages);
        let deflate = Deflate {
            threshold: 100,
            window_bits: 15,
            level: 6,
        };
        let one = frames.for_member(Some(deflate)).as_ptr();
        let two = frames.for_member(Some(deflate)).as_ptr();
        assert_eq!(one, two);
        let compressed = frames.for_member(Some(deflate));
        assert_eq!(
            &compressed[..4],
            &[0x81, 2, b'{', b'}'],
            "below the threshold"
        );
        assert_eq!(compressed[4], 0x80 | frame::RSV1 | 0x1);
        assert!(compressed.len() < frames.plain().len() / 4);
        assert_eq!(frames.for_member(None), frames.plain());
    }
}
