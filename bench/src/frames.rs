//! WebSocket frames as a server sends them (RFC 6455, section 5), decoded
//! in place for [`crate::readers`], and the one frame those readers send
//! back: the pong.
//!
//! Only what the subscribers need: servers never mask, and the host sends
//! every message as a single frame, so a fragment is just "other". A text
//! frame with RSV1 is a message compressed with permessage-deflate, which
//! only a connection that negotiated it gets (see [`crate::deflate`]).

use thiserror::Error;

/// A decoded frame, borrowing its payload.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A whole text message.
    Text(&'a [u8]),
    /// A whole text message, compressed (RSV1).
    Compressed(&'a [u8]),
    Ping(&'a [u8]),
    Close,
    /// Binary, pong, or a fragment.
    Other,
}

/// A frame no server may send.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BadFrame {
    #[error("a server frame is masked")]
    Masked,
    #[error("a frame is longer than this machine can address")]
    TooLong,
    #[error("a frame has RSV2 or RSV3 set, or RSV1 on anything but a whole text message")]
    Reserved,
}

const RSV1: u8 = 0x40;
const RSV2: u8 = 0x20;
const RSV3: u8 = 0x10;

/// Decodes the frame at the start of `bytes`: the frame and its length in
/// bytes, or `None` when it is not complete yet.
pub fn parse(bytes: &[u8]) -> Result<Option<(Frame<'_>, usize)>, BadFrame> {
    let [first, second, rest @ ..] = bytes else {
        return Ok(None);
    };
    if second & 0x80 != 0 {
        return Err(BadFrame::Masked);
    }
    let (length, header) = match second & 0x7f {
        126 => match rest {
            [a, b, ..] => (u64::from(u16::from_be_bytes([*a, *b])), 4),
            _ => return Ok(None),
        },
        127 => match rest.get(..8) {
            Some(eight) => {
                let mut array = [0; 8];
                array.copy_from_slice(eight);
                (u64::from_be_bytes(array), 10)
            }
            None => return Ok(None),
        },
        short => (u64::from(short), 2),
    };
    let length = usize::try_from(length).map_err(|_| BadFrame::TooLong)?;
    let total = header + length;
    let Some(payload) = bytes.get(header..total) else {
        return Ok(None);
    };
    let fin = first & 0x80 != 0;
    let rsv1 = first & RSV1 != 0;
    if first & (RSV2 | RSV3) != 0 || (rsv1 && !(fin && first & 0x0f == 0x1)) {
        return Err(BadFrame::Reserved);
    }
    let frame = match (fin, first & 0x0f) {
        (true, 0x1) if rsv1 => Frame::Compressed(payload),
        (true, 0x1) => Frame::Text(payload),
        (_, 0x8) => Frame::Close,
        (_, 0x9) => Frame::Ping(payload),
        _ => Frame::Other,
    };
    Ok(Some((frame, total)))
}

/// The client's answer to a ping: a pong with the same payload, masked as
/// every client frame must be (with a zero mask, which leaves the payload
/// as it is; pings carry at most 125 bytes).
pub fn pong(payload: &[u8]) -> Vec<u8> {
    let payload = &payload[..payload.len().min(125)];
    let mut frame = Vec::with_capacity(6 + payload.len());
    frame.push(0x8a);
    // At most 125, so it fits the seven bits.
    frame.push(0x80 | payload.len() as u8);
    frame.extend_from_slice(&[0; 4]);
    frame.extend_from_slice(payload);
    frame
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::{
        protocol::frame::{
            coding::{Data, OpCode},
            Frame as Encoded,
        },
        Bytes,
    };

    /// A frame as tungstenite (the host's WebSocket layer) encodes it.
    fn encoded(frame: Encoded) -> Vec<u8> {
        let mut bytes = Vec::new();
        frame.format(&mut bytes).expect("a frame encodes");
        bytes
    }

    #[test]
    fn text_frames_of_every_length_form_decode() {
        for size in [0, 5, 125, 126, 300, 65_535, 65_536, 70_000] {
            let text = "x".repeat(size);
            let bytes = encoded(Encoded::message(
                Bytes::from(text.clone()),
                OpCode::Data(Data::Text),
                true,
            ));
            assert_eq!(
                parse(&bytes),
                Ok(Some((Frame::Text(text.as_bytes()), bytes.len()))),
                "{size} bytes"
            );
            for cut in [0, 1, bytes.len() / 2, bytes.len() - 1] {
                if cut < bytes.len() {
                    assert_eq!(parse(&bytes[..cut]), Ok(None), "{size} bytes cut at {cut}");
                }
            }
        }
    }

    #[test]
    fn control_frames_decode() {
        let ping = encoded(Encoded::ping(b"hi".to_vec()));
        assert_eq!(parse(&ping), Ok(Some((Frame::Ping(b"hi"), ping.len()))));
        let close = encoded(Encoded::close(None));
        assert_eq!(parse(&close), Ok(Some((Frame::Close, close.len()))));
        let pong = encoded(Encoded::pong(b"x".to_vec()));
        assert_eq!(parse(&pong), Ok(Some((Frame::Other, pong.len()))));
    }

    #[test]
    fn two_frames_in_one_read_decode_one_after_the_other() {
        let mut bytes = encoded(Encoded::ping(b"a".to_vec()));
        let first = bytes.len();
        bytes.extend(encoded(Encoded::ping(b"b".to_vec())));
        assert_eq!(parse(&bytes), Ok(Some((Frame::Ping(b"a"), first))));
        assert_eq!(
            parse(&bytes[first..]),
            Ok(Some((Frame::Ping(b"b"), bytes.len() - first)))
        );
    }

    #[test]
    fn compressed_text_frames_decode_and_misplaced_reserved_bits_are_refused() {
        let frame = [0x80 | RSV1 | 0x1, 3, 1, 2, 3];
        assert_eq!(parse(&frame), Ok(Some((Frame::Compressed(&[1, 2, 3]), 5))));
        let ping = [0x80 | RSV1 | 0x9, 0];
        assert_eq!(parse(&ping), Err(BadFrame::Reserved));
        let text = [0x80 | RSV2 | 0x1, 0];
        assert_eq!(parse(&text), Err(BadFrame::Reserved));
    }

    #[test]
    fn masked_frames_are_refused() {
        assert_eq!(parse(&pong(b"x")), Err(BadFrame::Masked));
    }

    #[test]
    fn pongs_are_masked_client_frames() {
        assert_eq!(pong(b"abc"), vec![0x8a, 0x83, 0, 0, 0, 0, b'a', b'b', b'c']);
        assert_eq!(pong(&[7; 200]).len(), 6 + 125);
    }
}
