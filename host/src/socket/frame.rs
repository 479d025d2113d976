//! RFC 6455 frames, byte by byte: the header of a client's frame read in
//! place, its payload unmasked in place, a server frame's header written.
//!
//! Why the server owns its frames: a ping costs a read, a parse, a call and
//! a write, and a general WebSocket library adds buffers and copies of its
//! own around each (see [`crate::socket::reader`] for the measurement).
//! Everything here is plain functions over byte slices, so that the rules
//! of the RFC are tested without a socket.

/// What a frame carries (RFC 6455, section 5.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpCode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl OpCode {
    fn from_bits(bits: u8) -> Option<Self> {
        Some(match bits {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
        }
    }

    /// Close, ping and pong: at most 125 bytes, never fragmented.
    pub(crate) fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// A client's frame header, read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    pub fin: bool,
    /// RSV1: the message this frame begins is compressed (RFC 7692).
    pub compressed: bool,
    pub opcode: OpCode,
    pub mask: [u8; 4],
    /// Bytes of the header itself.
    pub header_len: usize,
    pub payload_len: usize,
}

/// Why a client's frame header is not acceptable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HeaderError {
    #[error("reserved bits set without an extension that defines them")]
    Reserved,
    #[error("an unknown opcode")]
    UnknownOpcode,
    #[error("a client frame that is not masked")]
    Unmasked,
    #[error("a control frame that is fragmented or longer than 125 bytes")]
    BadControl,
    #[error("a frame longer than the limit")]
    TooBig,
}

/// The header at the start of `bytes`: `Ok(None)` while it is incomplete.
/// A payload longer than `max_payload` is refused from its header alone,
/// before any of it is read. RSV1 is accepted only when `inflate` (the
/// connection negotiated permessage-deflate), and then only on the first
/// frame of a text or binary message (RFC 7692, section 6).
pub(crate) fn parse_header(
    bytes: &[u8],
    max_payload: usize,
    inflate: bool,
) -> Result<Option<Header>, HeaderError> {
    let [first, second, ..] = *bytes else {
        return Ok(None);
    };
    let compressed = first & 0x40 != 0;
    if first & 0x30 != 0 || (compressed && !inflate) {
        return Err(HeaderError::Reserved);
    }
    let fin = first & 0x80 != 0;
    let opcode = OpCode::from_bits(first & 0x0F).ok_or(HeaderError::UnknownOpcode)?;
    if compressed && (opcode.is_control() || opcode == OpCode::Continuation) {
        return Err(HeaderError::Reserved);
    }
    if second & 0x80 == 0 {
        return Err(HeaderError::Unmasked);
    }
    let (len, at) = match second & 0x7F {
        126 => match bytes.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match bytes.get(2..10) {
            Some(b) => {
                let mut be = [0u8; 8];
                be.copy_from_slice(b);
                (u64::from_be_bytes(be), 10)
            }
            None => return Ok(None),
        },
        short => (u64::from(short), 2),
    };
    if opcode.is_control() && (!fin || len > 125) {
        return Err(HeaderError::BadControl);
    }
    let payload_len = match usize::try_from(len) {
        Ok(len) if len <= max_payload => len,
        _ => return Err(HeaderError::TooBig),
    };
    let Some(mask) = bytes.get(at..at + 4) else {
        return Ok(None);
    };
    Ok(Some(Header {
        fin,
        compressed,
        opcode,
        mask: [mask[0], mask[1], mask[2], mask[3]],
        header_len: at + 4,
        payload_len,
    }))
}

/// Unmasks `payload` in place (section 5.3), eight bytes at a time.
pub(crate) fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = payload.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    // The tail starts at a multiple of 8, so the mask starts again at 0.
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
}

/// The longest header a server writes: two bytes and a 64-bit length.
pub(crate) const MAX_HEADER: usize = 10;

/// Appends a final, unmasked (server) frame of `opcode` carrying `payload`.
pub(crate) fn write_frame(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8]) {
    let mut header = [0u8; MAX_HEADER];
    let len = write_header(&mut header, opcode, payload.len());
    out.reserve(len + payload.len());
    out.extend_from_slice(&header[..len]);
    out.extend_from_slice(payload);
}

/// Appends a final, unmasked frame of `opcode` whose `payload` is
/// compressed (RSV1 set, RFC 7692).
pub(crate) fn write_compressed_frame(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8]) {
    let mut header = [0u8; MAX_HEADER];
    let len = write_header(&mut header, opcode, payload.len());
    header[0] |= RSV1;
    out.reserve(len + payload.len());
    out.extend_from_slice(&header[..len]);
    out.extend_from_slice(payload);
}

/// The bit of a frame's first byte that marks a compressed message.
pub(crate) const RSV1: u8 = 0x40;

/// Writes the header of a final, unmasked frame of `opcode` with `len`
/// payload bytes into `header`; returns its length.
pub(crate) fn write_header(header: &mut [u8; MAX_HEADER], opcode: OpCode, len: usize) -> usize {
    header[0] = 0x80 | opcode.bits();
    if len < 126 {
        header[1] = len as u8;
        2
    } else if let Ok(short) = u16::try_from(len) {
        header[1] = 126;
        header[2..4].copy_from_slice(&short.to_be_bytes());
        4
    } else {
        header[1] = 127;
        header[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    }
}

/// A close frame's payload: the code, then the reason (section 5.5.1).
pub(crate) fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(reason.as_bytes());
    payload
}

/// Whether a client may send `code` in a close frame (section 7.4, and
/// the codes registered with IANA since: 1012 to 1014).
pub(crate) fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

#[cfg(test)]
/// A client's frame, masked with `mask`: what the socket tests send.
pub(crate) fn client_frame(first: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = vec![first];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_masked_text_frame_reads_back_at_every_length_form() {
        for len in [0, 5, 125, 126, 300, 65535, 65536, 70000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mask = [0x12, 0x34, 0x56, 0x78];
            let mut frame = client_frame(0x81, &payload, mask);
            let header = parse_header(&frame, 1 << 20, false)
                .expect("acceptable")
                .expect("complete");
            assert!(header.fin);
            assert_eq!(header.opcode, OpCode::Text);
            assert_eq!(header.payload_len, len);
            assert_eq!(header.header_len + len, frame.len());
            let body = &mut frame[header.header_len..];
            unmask(body, header.mask);
            assert_eq!(body, &payload[..], "length {len}");
        }
    }

    #[test]
    fn an_incomplete_header_asks_for_more() {
        let frame = client_frame(0x81, &[b'x'; 300], [1, 2, 3, 4]);
        for cut in 0..8 {
            assert_eq!(
                parse_header(&frame[..cut], 1 << 20, false),
                Ok(None),
                "cut at {cut}"
            );
        }
        assert!(matches!(
            parse_header(&frame[..8], 1 << 20, false),
            Ok(Some(_))
        ));
    }

    #[test]
    fn what_the_rfc_forbids_is_refused() {
        let mask = [9, 9, 9, 9];
        let refused = |frame: Vec<u8>| parse_header(&frame, 1000, false).err();
        assert_eq!(
            refused(client_frame(0xC1, b"x", mask)),
            Some(HeaderError::Reserved)
        );
        assert_eq!(
            refused(client_frame(0x83, b"x", mask)),
            Some(HeaderError::UnknownOpcode)
        );
        assert_eq!(refused(vec![0x81, 0x01, b'x']), Some(HeaderError::Unmasked));
        assert_eq!(
            refused(client_frame(0x09, b"x", mask)),
            Some(HeaderError::BadControl)
        );
        assert_eq!(
            refused(client_frame(0x89, &[0; 126], mask)),
            Some(HeaderError::BadControl)
        );
        assert_eq!(
            refused(client_frame(0x82, &[0; 1001], mask)),
            Some(HeaderError::TooBig)
        );
        // Refused from the header alone, before the payload is there.
        let mut huge = vec![0x82, 0xFF];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(refused(huge), Some(HeaderError::TooBig));
    }

    #[test]
    fn rsv1_only_on_the_first_frame_of_a_data_message_and_only_when_negotiated() {
        let mask = [3, 1, 4, 1];
        let parse = |first: u8, inflate: bool| {
            parse_header(&client_frame(first, b"x", mask), 1000, inflate)
                .map(|h| h.map(|h| h.compressed))
        };
        assert_eq!(parse(0xC1, true), Ok(Some(true)));
        assert_eq!(parse(0x42, true), Ok(Some(true)), "a first fragment");
        assert_eq!(parse(0x81, true), Ok(Some(false)));
        assert_eq!(parse(0xC1, false), Err(HeaderError::Reserved));
        assert_eq!(
            parse(0xC0, true),
            Err(HeaderError::Reserved),
            "a continuation"
        );
        assert_eq!(parse(0xC9, true), Err(HeaderError::Reserved), "a ping");
        assert_eq!(parse(0xC8, true), Err(HeaderError::Reserved), "a close");
        assert_eq!(parse(0xA1, true), Err(HeaderError::Reserved), "RSV2");
        assert_eq!(parse(0x91, true), Err(HeaderError::Reserved), "RSV3");
    }

    #[test]
    fn server_headers_use_the_shortest_length_form() {
        let mut out = Vec::new();
        write_frame(&mut out, OpCode::Text, b"{}");
        assert_eq!(out, [0x81, 2, b'{', b'}']);
        let mut header = [0u8; MAX_HEADER];
        assert_eq!(write_header(&mut header, OpCode::Text, 300), 4);
        assert_eq!(&header[..4], &[0x81, 126, 1, 44]);
        assert_eq!(write_header(&mut header, OpCode::Binary, 70000), 10);
        assert_eq!(&header[..2], &[0x82, 127]);
        assert_eq!(u64::from_be_bytes(header[2..10].try_into().unwrap()), 70000);
    }

    #[test]
    fn close_codes_follow_the_rfc() {
        for ok in [1000, 1001, 1002, 1003, 1007, 1011, 1013, 1014, 3000, 4999] {
            assert!(valid_close_code(ok), "{ok}");
        }
        for bad in [0, 999, 1004, 1005, 1006, 1015, 2999, 5000] {
            assert!(!valid_close_code(bad), "{bad}");
        }
    }
}
