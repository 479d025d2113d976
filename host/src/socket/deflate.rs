//! permessage-deflate (RFC 7692) on the wire: a message compressed for
//! sending, a client's compressed message inflated within the size limit.
//!
//! Why it is shaped this way: the server always sends with
//! `server_no_context_takeover` and asks clients for
//! `client_no_context_takeover` (see [`crate::net::deflate_offer`]), so
//! every compressed message stands alone. Then no connection needs a
//! deflate or inflate state of its own: each worker thread keeps one
//! compressor per window size and one inflater, reset for every message,
//! and a group message compressed once is the same bytes for every member
//! (see [`crate::socket::group_frames`]). A connection that negotiated the
//! extension costs no more memory than one that did not, until it sends or
//! receives a message, and not after.
//!
//! The codec is flate2 over zlib-rs, which supports the smaller windows
//! that `server_max_window_bits` asks for.

use std::cell::RefCell;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::frame::{self, OpCode};
use crate::telemetry::metrics::COMPRESSION;

/// What a connection negotiated for the messages the server sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Deflate {
    /// Messages shorter than this go uncompressed.
    pub threshold: u32,
    /// The LZ77 window of what the server compresses, 9 to 15 bits.
    pub window_bits: u8,
    /// zlib's compression level, 1 to 9.
    pub level: u8,
}

impl Deflate {
    /// Whether a message of `len` bytes goes uncompressed for its size.
    pub(crate) fn too_short(&self, len: usize) -> bool {
        len < self.threshold as usize
    }
}

/// The smallest window zlib writes raw deflate with.
pub(crate) const MIN_WINDOW_BITS: u8 = 9;
/// The largest window of DEFLATE.
pub(crate) const MAX_WINDOW_BITS: u8 = 15;

/// The four bytes a sync flush ends with: taken off a compressed message
/// and put back before inflating one (RFC 7692, section 7.2.1).
const TAIL: [u8; 4] = [0x00, 0x00, 0xFF, 0xFF];
/// Room added to an inflated message per step: the bomb's cost is bounded
/// by the size limit, and a small message costs a small buffer.
const INFLATE_STEP: usize = 16 * 1024;

/// Why a client's compressed message cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum InflateError {
    /// It inflates to more than the message size limit: close with 1009.
    #[error("a compressed message that inflates past the size limit")]
    TooBig,
    /// Not valid DEFLATE data: close with 1007.
    #[error("compressed data that is not valid DEFLATE")]
    Invalid,
}

struct Compressor {
    level: u8,
    state: Compress,
}

thread_local! {
    /// One compressor per window size, made on first use on this thread.
    static COMPRESSORS: RefCell<[Option<Compressor>; 7]> = const { RefCell::new([None, None, None, None, None, None, None]) };
    /// The output of one compression, before its frame header is known.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// The inflater, made on first use on this thread.
    static INFLATER: RefCell<Option<Decompress>> = const { RefCell::new(None) };
}

/// A scratch buffer grown past this by a large message is freed.
const SCRATCH_KEPT: usize = 64 * 1024;

/// Appends `payload` as a final frame of `opcode`: compressed when it is
/// at least `deflate.threshold` bytes and compressing makes it smaller,
/// else as it is. True when it went compressed.
pub(crate) fn write_frame(
    out: &mut Vec<u8>,
    opcode: OpCode,
    payload: &[u8],
    deflate: Deflate,
) -> bool {
    if deflate.too_short(payload.len()) {
        frame::write_frame(out, opcode, payload);
        return false;
    }
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        scratch.clear();
        let compressed = compress(payload, deflate, &mut scratch) && scratch.len() < payload.len();
        if compressed {
            frame::write_compressed_frame(out, opcode, &scratch);
        } else {
            frame::write_frame(out, opcode, payload);
        }
        if scratch.capacity() > SCRATCH_KEPT {
            *scratch = Vec::new();
        }
        compressed
    })
}

/// Appends `payload` compressed as one message on its own (no context
/// from earlier messages), without the sync flush's tail. False when the
/// compressor failed (nothing then is appended).
fn compress(payload: &[u8], deflate: Deflate, out: &mut Vec<u8>) -> bool {
    let bits = deflate.window_bits.clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS);
    let level = deflate.level.clamp(1, 9);
    let start = out.len();
    let done = COMPRESSORS.with(|all| {
        let mut all = all.borrow_mut();
        let slot = &mut all[usize::from(bits - MIN_WINDOW_BITS)];
        let compressor = match slot {
            Some(compressor) if compressor.level == level => compressor,
            _ => slot.insert(Compressor {
                level,
                state: Compress::new_with_window_bits(
                    Compression::new(u32::from(level)),
                    false,
                    bits,
                ),
            }),
        };
        let state = &mut compressor.state;
        state.reset();
        // A little over the payload: DEFLATE's stored blocks add 5 bytes
        // per 64 KiB, and the flush a few more.
        out.reserve(payload.len() + payload.len() / 1024 + 64);
        let mut consumed = 0;
        loop {
            let before = state.total_in();
            let status = state.compress_vec(&payload[consumed..], out, FlushCompress::Sync);
            consumed += (state.total_in() - before) as usize;
            match status {
                Ok(Status::Ok | Status::BufError) => {
                    if consumed == payload.len() && out.len() < out.capacity() {
                        return true;
                    }
                    out.reserve(out.capacity().max(1024));
                }
                Ok(Status::StreamEnd) | Err(_) => return false,
            }
        }
    });
    if !done || !out[start..].ends_with(&TAIL) {
        out.truncate(start);
        return false;
    }
    out.truncate(out.len() - TAIL.len());
    COMPRESSION.sent_plain.inc_by(payload.len() as u64);
    COMPRESSION
        .sent_compressed
        .inc_by((out.len() - start) as u64);
    true
}

/// Inflates the compressed message `payload` into `out` (emptied first),
/// at most `max` bytes of it.
pub(crate) fn inflate(payload: &[u8], max: usize, out: &mut Vec<u8>) -> Result<(), InflateError> {
    out.clear();
    let inflated = INFLATER.with(|inflater| {
        let mut inflater = inflater.borrow_mut();
        let state = inflater
            .get_or_insert_with(|| Decompress::new_with_window_bits(false, MAX_WINDOW_BITS));
        state.reset(false);
        let (ended, consumed) = inflate_part(state, payload, max, out)?;
        if ended {
            // A final block: nothing may follow it in the message.
            return if consumed == payload.len() {
                Ok(())
            } else {
                Err(InflateError::Invalid)
            };
        }
        inflate_part(state, &TAIL, max, out).map(|_| ())
    });
    if inflated.is_err() {
        out.clear();
    }
    inflated?;
    COMPRESSION.received_compressed.inc_by(payload.len() as u64);
    COMPRESSION.received_plain.inc_by(out.len() as u64);
    Ok(())
}

/// Feeds `input` to `state`, growing `out` a step at a time and never
/// past `max + 1` bytes. Whether the stream ended (a final block), and how
/// much of `input` it took.
fn inflate_part(
    state: &mut Decompress,
    input: &[u8],
    max: usize,
    out: &mut Vec<u8>,
) -> Result<(bool, usize), InflateError> {
    let mut consumed = 0;
    loop {
        if out.len() > max {
            return Err(InflateError::TooBig);
        }
        if out.len() == out.capacity() {
            let room = (max + 1 - out.len()).min(INFLATE_STEP);
            out.reserve_exact(room);
        }
        let (before_in, before_out) = (state.total_in(), state.total_out());
        let status = state
            .decompress_vec(&input[consumed..], out, FlushDecompress::None)
            .map_err(|_| InflateError::Invalid)?;
        let took = (state.total_in() - before_in) as usize;
        let made = state.total_out() - before_out;
        consumed += took;
        match status {
            Status::StreamEnd => return Ok((true, consumed)),
            Status::Ok | Status::BufError => {
                let room_left = out.len() < out.capacity();
                if consumed == input.len() && room_left {
                    return Ok((false, consumed));
                }
                if took == 0 && made == 0 && room_left {
                    // No progress with input and room: the data is cut.
                    return Err(InflateError::Invalid);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFLATE: Deflate = Deflate {
        threshold: 64,
        window_bits: 15,
        level: 6,
    };

    fn payload_of(frame: &[u8]) -> (u8, &[u8]) {
        let at = match frame[1] {
            126 => 4,
            127 => 10,
            _ => 2,
        };
        (frame[0], &frame[at..])
    }

    #[test]
    fn a_large_message_goes_compressed_and_inflates_back() {
        let json = format!(
            "{{\"items\":[{}]}}",
            r#"{"id":1,"name":"same again"},"#.repeat(100)
        );
        for bits in MIN_WINDOW_BITS..=MAX_WINDOW_BITS {
            let mut out = Vec::new();
            let deflate = Deflate {
                window_bits: bits,
                ..DEFLATE
            };
            assert!(write_frame(
                &mut out,
                OpCode::Text,
                json.as_bytes(),
                deflate
            ));
            let (first, payload) = payload_of(&out);
            assert_eq!(first, 0x80 | frame::RSV1 | 0x1);
            assert!(payload.len() < json.len() / 5, "{} bytes", payload.len());
            let mut inflated = Vec::new();
            inflate(payload, 1 << 20, &mut inflated).expect("inflates");
            assert_eq!(inflated, json.as_bytes());
        }
    }

    #[test]
    fn a_small_message_goes_as_it_is() {
        let mut out = Vec::new();
        assert!(!write_frame(
            &mut out,
            OpCode::Text,
            b"{\"type\":\"pong\"}",
            DEFLATE
        ));
        assert_eq!(out[0], 0x81);
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        let zeros = vec![0u8; 10 << 20];
        let mut compressed = Vec::new();
        assert!(compress(&zeros, DEFLATE, &mut compressed));
        assert!(compressed.len() < 20_000);
        let mut out = Vec::new();
        assert_eq!(
            inflate(&compressed, 1 << 20, &mut out),
            Err(InflateError::TooBig)
        );
        assert!(out.capacity() <= (1 << 20) + 1);
        let mut out = Vec::new();
        inflate(&compressed, 10 << 20, &mut out).expect("exactly at the limit");
        assert_eq!(out.len(), 10 << 20);
    }

    #[test]
    fn bad_data_is_refused() {
        let mut out = Vec::new();
        // BTYPE 11 is reserved.
        assert_eq!(
            inflate(&[0xFF, 0xFF], 1000, &mut out),
            Err(InflateError::Invalid)
        );
        // A final block with bytes after it.
        let mut finished = Compress::new_with_window_bits(Compression::default(), false, 15);
        let mut data = Vec::with_capacity(100);
        finished
            .compress_vec(b"hello", &mut data, FlushCompress::Finish)
            .expect("compressed");
        inflate(&data, 1000, &mut out).expect("a final block alone is fine");
        assert_eq!(out, b"hello");
        data.extend_from_slice(b"junk");
        assert_eq!(inflate(&data, 1000, &mut out), Err(InflateError::Invalid));
    }

    #[test]
    fn messages_stand_alone() {
        let text = "abcdefghij".repeat(20);
        let mut first = Vec::new();
        let mut second = Vec::new();
        write_frame(&mut first, OpCode::Text, text.as_bytes(), DEFLATE);
        write_frame(&mut second, OpCode::Text, text.as_bytes(), DEFLATE);
        assert_eq!(first, second, "no context carried from one to the next");
    }
}
