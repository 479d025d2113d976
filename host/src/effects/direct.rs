//! A worker's reply written to its caller's socket by the reader of
//! replies, without the caller's task (see
//! [`crate::plugins::isolation::slot`]): only a reply that does what
//! [`Effects::carry_out_now`](super::Effects::carry_out_now) writes at
//! once, sends of JSON objects to the caller and nothing else, framed as
//! the connection's [`Writer`](crate::socket::writer::Writer) frames them.

use rohrpost_plugin_api::abi::Effect;

use super::{action::is_json_object, only_sends};
use crate::{
    plugins::isolation::slot::{Direct, ReplyLine},
    socket::{
        buffers, deflate,
        frame::{self, OpCode},
        line::{Line, Wrote},
    },
};

impl ReplyLine for Line {
    fn write_sends(&self, effects: &[Effect]) -> Direct {
        if effects.is_empty() {
            return Direct::Written;
        }
        if !only_sends(effects) || !effects.iter().all(|e| is_json_object(e.body.as_str())) {
            return Direct::Declined;
        }
        let room = effects
            .iter()
            .map(|e| e.body.len() + frame::MAX_HEADER)
            .sum();
        let mut out = buffers::take(room);
        for effect in effects {
            let body = effect.body.as_bytes();
            match self.deflate() {
                Some(settings) => {
                    deflate::write_frame(&mut out, OpCode::Text, body, settings);
                }
                None => frame::write_frame(&mut out, OpCode::Text, body),
            }
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
