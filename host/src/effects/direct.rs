//! A worker's reply written to its caller's socket by the reader of
//! replies, without the caller's task (see
//! [`crate::plugins::isolation::slot`]): only a reply that does what
//! [`Effects::carry_out_now`](super::Effects::carry_out_now) writes at
//! once, sends of JSON objects to the caller and nothing else, framed as
//! the connection's [`Writer`](crate::socket::writer::Writer) frames them;
//! and only a small one, that no connection would compress.

use super::only_sends;
use crate::{
    plugins::isolation::{
        frame::EffectRef,
        slot::{Direct, ReplyLine},
    },
    socket::{
        buffers,
        frame::{self, OpCode},
        line::{Line, Wrote},
    },
};
use rohrpost_protocol::is_json_object;

/// The most bytes of messages a reply written by the reader of replies
/// may have.
const MAX_DIRECT: usize = 2048;

impl ReplyLine for Line {
    fn write_sends(&self, effects: &[EffectRef<'_>]) -> Direct {
        if effects.is_empty() {
            return Direct::Written;
        }
        // Small and never compressed: one reader of replies writes for
        // every caller of its worker, so what it does per reply must stay
        // as little as a pong's. Larger replies go to their callers' tasks.
        let bytes: usize = effects.iter().map(|e| e.body.len()).sum();
        let plain = self
            .deflate()
            .is_none_or(|d| effects.iter().all(|e| d.too_short(e.body.len())));
        if bytes > MAX_DIRECT
            || !plain
            || !only_sends(effects.iter().map(|e| (e.kind, e.body.len())))
            || !effects.iter().all(|e| is_json_object(e.body))
        {
            return Direct::Declined;
        }
        let room = effects
            .iter()
            .map(|e| e.body.len() + frame::MAX_HEADER)
            .sum();
        let mut out = buffers::take(room);
        for effect in effects {
            frame::write_frame(&mut out, OpCode::Text, effect.body.as_bytes());
        }
        let wrote = self.write_reply(&out);
        buffers::give(out);
        match wrote {
            Wrote::All => Direct::Written,
            Wrote::Part => Direct::Part,
            // The connection's task finds the socket full or gone itself.
            Wrote::Nothing | Wrote::Gone => Direct::Declined,
        }
    }
}
