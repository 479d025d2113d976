//! permessage-deflate (RFC 7692) as the fan-out's subscribers speak it: the
//! offer a browser makes in its handshake, and the inflating of the
//! server's compressed messages, so that the benchmark can measure the
//! host's compression as browsers receive it.
//!
//! The host answers every offer with `server_no_context_takeover`, so each
//! compressed message stands alone: one inflater per reading thread, reset
//! for every message, reads them all. The codec is flate2 over zlib-rs, the
//! host's own backend.
//!
//! A message standing alone inflates to the same text wherever it arrives,
//! so the inflater keeps the last payload and its text: a payload equal to
//! the last one (compared byte for byte) gives the same text without
//! inflating it again. A fan-out writes one compressed frame to every
//! member; each browser inflates its own copy once, on its own core, while
//! the benchmark's one reading thread would otherwise inflate all 10,000
//! copies one after another on the cores the server needs, and measure
//! that as the server's latency.

use flate2::{Decompress, FlushDecompress, Status};
use thiserror::Error;

/// What Chromium and Firefox offer.
pub const OFFER: &str = "permessage-deflate; client_max_window_bits";

/// The extension's name, as the server's answer starts.
const NAME: &str = "permessage-deflate";

/// The four bytes a sync flush ends with, taken off by the sender and put
/// back before inflating (RFC 7692, section 7.2.2).
const TAIL: [u8; 4] = [0x00, 0x00, 0xFF, 0xFF];

/// The largest message inflated; a notification is a few KB.
const MAX_MESSAGE: usize = 1 << 20;

/// Whether the server's `Sec-WebSocket-Extensions` answer accepted the
/// offer.
pub fn accepted(answer: Option<&str>) -> bool {
    answer.is_some_and(|answer| {
        answer
            .split(',')
            .any(|element| element.split(';').next().map(str::trim) == Some(NAME))
    })
}

/// Why a compressed message could not be read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum InflateError {
    #[error("compressed data that is not valid DEFLATE")]
    Invalid,
    #[error("a compressed message that inflates past {MAX_MESSAGE} bytes")]
    TooBig,
}

/// Inflates the server's compressed messages, one at a time.
pub struct Inflater {
    state: Decompress,
    out: Vec<u8>,
    /// The payload `out` was inflated from (empty: none yet, or it failed).
    last: Vec<u8>,
}

impl Default for Inflater {
    fn default() -> Self {
        Inflater {
            state: Decompress::new_with_window_bits(false, 15),
            out: Vec::with_capacity(16 * 1024),
            last: Vec::new(),
        }
    }
}

impl Inflater {
    /// The message whose compressed payload is `payload`.
    pub fn inflate(&mut self, payload: &[u8]) -> Result<&[u8], InflateError> {
        if !self.last.is_empty() && self.last == payload {
            return Ok(&self.out);
        }
        self.last.clear();
        self.inflate_anew(payload)?;
        self.last.extend_from_slice(payload);
        Ok(&self.out)
    }

    fn inflate_anew(&mut self, payload: &[u8]) -> Result<(), InflateError> {
        self.state.reset(false);
        self.out.clear();
        for input in [payload, &TAIL] {
            let mut consumed = 0;
            loop {
                if self.out.len() == self.out.capacity() {
                    if self.out.len() >= MAX_MESSAGE {
                        return Err(InflateError::TooBig);
                    }
                    self.out.reserve(self.out.capacity().max(4096));
                }
                let before = self.state.total_in();
                let status = self
                    .state
                    .decompress_vec(&input[consumed..], &mut self.out, FlushDecompress::Sync)
                    .map_err(|_| InflateError::Invalid)?;
                consumed += usize::try_from(self.state.total_in() - before)
                    .map_err(|_| InflateError::Invalid)?;
                let room = self.out.len() < self.out.capacity();
                match status {
                    Status::StreamEnd => break,
                    _ if consumed == input.len() && room => break,
                    Status::BufError if room => return Err(InflateError::Invalid),
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::{Compress, Compression, FlushCompress};

    fn compressed(data: &[u8]) -> Vec<u8> {
        let mut compress = Compress::new_with_window_bits(Compression::default(), false, 15);
        let mut out = Vec::with_capacity(data.len() + 1024);
        compress
            .compress_vec(data, &mut out, FlushCompress::Sync)
            .expect("compressed");
        assert!(out.ends_with(&TAIL));
        out.truncate(out.len() - TAIL.len());
        out
    }

    #[test]
    fn messages_inflate_one_after_another() {
        let mut inflater = Inflater::default();
        let big = r#"{"id":1,"title":"item"},"#.repeat(2000);
        for text in ["{\"a\":1}", big.as_str(), big.as_str(), "{\"a\":1}"] {
            let payload = compressed(text.as_bytes());
            assert_eq!(inflater.inflate(&payload), Ok(text.as_bytes()));
        }
        assert_eq!(inflater.inflate(&[0xFF, 0xFF]), Err(InflateError::Invalid));
    }

    #[test]
    fn answers_are_recognised() {
        assert!(accepted(Some(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        )));
        assert!(!accepted(None));
        assert!(!accepted(Some("x-webkit-deflate-frame")));
    }
}
