//! The frames between the host and a plugin's worker process.
//!
//! Every frame is a little-endian `u32` length, then that many bytes: a
//! one-byte tag and the tag's fields. Numbers are little-endian `u32`/`u64`,
//! text is a `u32` length and UTF-8 bytes. No serialization format: a call
//! is the request's JSON text as received (the `id` and `data` as ranges
//! into it, as the plugin ABI hands them over) and a reply is the plugin's
//! own effects list, field by field, so that the host rebuilds the very
//! [`CallOutcome`] an in-process call returns. Each call carries an id
//! chosen by the host and its reply the same id: many calls are in flight
//! on one worker at once and replies come back in any order.
//!
//! The worker is not trusted: everything read from it is checked (sizes,
//! UTF-8, tags) and anything malformed ends the channel, which the host
//! treats as a crash.

use std::time::Duration;

use abi_stable::std_types::RVec;
use rohrpost_plugin_api::abi::{CallOutcome, Effect};
use thiserror::Error;

use crate::plugins::{manifest::ManifestInfo, outcome::Outcome};

/// The largest frame either side accepts.
pub(crate) const MAX_FRAME: usize = 256 << 20;

/// The largest frame the host reads from a worker (a reply and all its
/// effects): past it, the worker broke the channel and is ended, before
/// the host holds more of it.
pub(crate) const MAX_FROM_WORKER: usize = 64 << 20;

/// Host → worker: configure the plugin with this JSON text.
pub(crate) const CONFIGURE: u8 = 0x01;
/// Host → worker: run a handler.
pub(crate) const CALL: u8 = 0x02;
/// Worker → host: the library is loaded; its manifest.
pub(crate) const HELLO: u8 = 0x81;
/// Worker → host: the library could not be loaded.
pub(crate) const LOAD_FAILED: u8 = 0x82;
/// Worker → host: what `configure` answered; when it accepted, a
/// [`HELLO`] follows with the manifest read again (a handler's types may
/// come from the configuration).
pub(crate) const CONFIGURED: u8 = 0x83;
/// Worker → host: a call's outcome.
pub(crate) const REPLY: u8 = 0x84;
/// Worker → host: the plugin asks the host a question during a call.
pub(crate) const ASK: u8 = 0x85;
/// Host → worker: the answer to an [`ASK`].
pub(crate) const ANSWER: u8 = 0x03;
/// Worker → host: the plugin made a system call its jail forbids (the
/// call's number); the worker ends.
pub(crate) const FORBIDDEN: u8 = 0x86;
/// Worker → host, first: the process id of the process that runs the
/// plugin, as the host sees it (in its jail, the worker is a grandchild),
/// and what of its jail it could not have.
pub(crate) const STARTED: u8 = 0x87;

/// Why a frame from the other side is unusable.
#[derive(Debug, Error, PartialEq, Eq)]
pub(crate) enum FrameError {
    #[error("a frame ends early")]
    Short,
    #[error("text that is not UTF-8")]
    NotUtf8,
    #[error("a frame of {0} bytes, more than the limit")]
    TooLarge(usize),
    #[error("an unknown frame tag {0:#04x}")]
    UnknownTag(u8),
    #[error("an unknown value {0} in a frame")]
    BadValue(u32),
}

/// Builds one frame: [`Writer::finish`] writes its length.
pub(crate) struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub(crate) fn new(tag: u8, capacity: usize) -> Self {
        Writer::reusing(Vec::new(), tag, capacity)
    }

    /// A frame written into `buf`, whatever it held.
    pub(crate) fn reusing(mut buf: Vec<u8>, tag: u8, capacity: usize) -> Self {
        buf.clear();
        buf.reserve_exact(capacity + 5);
        buf.extend_from_slice(&[0; 4]);
        buf.push(tag);
        Writer { buf }
    }

    pub(crate) fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    pub(crate) fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub(crate) fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub(crate) fn str(&mut self, v: &str) -> &mut Self {
        self.len(v.len());
        self.buf.extend_from_slice(v.as_bytes());
        self
    }

    /// A length or count (frames are far below 4 GiB: [`MAX_FRAME`]).
    pub(crate) fn len(&mut self, n: usize) -> &mut Self {
        self.u32(u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// The frame's bytes, its length in front.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        let len = u32::try_from(self.buf.len() - 4).unwrap_or(u32::MAX);
        self.buf[..4].copy_from_slice(&len.to_le_bytes());
        self.buf
    }
}

/// Reads the fields of one frame's body (after its length).
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(body: &'a [u8]) -> Self {
        Reader { rest: body }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        if self.rest.len() < n {
            return Err(FrameError::Short);
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u32(&mut self) -> Result<u32, FrameError> {
        let bytes = self.take(4)?;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, FrameError> {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(bytes))
    }

    pub(crate) fn str(&mut self) -> Result<&'a str, FrameError> {
        let len = self.u32()? as usize;
        std::str::from_utf8(self.take(len)?).map_err(|_| FrameError::NotUtf8)
    }

    /// A count of items, each at least `min_size` bytes: never more than
    /// the frame can hold, so a hostile count allocates nothing.
    pub(crate) fn count(&mut self, min_size: usize) -> Result<usize, FrameError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_size.max(1)) > self.rest.len() {
            return Err(FrameError::Short);
        }
        Ok(n)
    }
}

/// The length in front of a frame, checked against [`MAX_FRAME`].
pub(crate) fn body_len(head: [u8; 4]) -> Result<usize, FrameError> {
    let len = u32::from_le_bytes(head) as usize;
    if len == 0 {
        return Err(FrameError::Short);
    }
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    Ok(len)
}

/// One request for a worker, borrowed from the host's frame.
pub(crate) struct CallParts<'a> {
    pub handler: u32,
    /// Run it on the worker's reading thread (declared inline and not
    /// demoted) rather than its pool.
    pub inline: bool,
    pub frame: &'a str,
    /// The `id` and `data` as byte ranges of `frame` (`data` empty when
    /// the request has none).
    pub id: (usize, usize),
    pub data: (usize, usize),
    pub kind: &'a str,
    pub scope: &'a str,
}

/// A [`CALL`] frame; its call id (the first 8 bytes after the tag) is
/// filled in by [`set_call_id`] once the worker is known.
pub(crate) fn call(parts: &CallParts<'_>) -> Vec<u8> {
    // Room for all of it: growing the frame cost a reallocation per call.
    let mut w = Writer::new(
        CALL,
        CALL_FIELDS + parts.frame.len() + parts.kind.len() + parts.scope.len(),
    );
    w.u64(0)
        .u32(parts.handler)
        .u8(u8::from(parts.inline))
        .str(parts.frame)
        .len(parts.id.0)
        .len(parts.id.1)
        .len(parts.data.0)
        .len(parts.data.1)
        .str(parts.kind)
        .str(parts.scope);
    w.finish()
}

/// Bytes of a [`CALL`] body besides its tag and strings: the call id,
/// handler, inline flag, the strings' three lengths and the two ranges.
const CALL_FIELDS: usize = 8 + 4 + 1 + 3 * 4 + 4 * 4;

/// Writes the call id into a frame made by [`call`].
pub(crate) fn set_call_id(frame: &mut [u8], id: u64) {
    frame[5..13].copy_from_slice(&id.to_le_bytes());
}

/// A [`CALL`] frame as the worker reads it.
pub(crate) struct IncomingCall<'a> {
    pub call_id: u64,
    pub handler: u32,
    pub inline: bool,
    pub frame: &'a str,
    pub id: &'a str,
    pub data: &'a str,
    pub kind: &'a str,
    pub scope: &'a str,
}

/// Reads a [`CALL`] body (after the tag).
pub(crate) fn read_call<'a>(r: &mut Reader<'a>) -> Result<IncomingCall<'a>, FrameError> {
    let call_id = r.u64()?;
    let handler = r.u32()?;
    let inline = r.u8()? != 0;
    let frame = r.str()?;
    let range = |r: &mut Reader<'a>| -> Result<&'a str, FrameError> {
        let start = r.u32()? as usize;
        let len = r.u32()? as usize;
        start
            .checked_add(len)
            .and_then(|end| frame.get(start..end))
            .ok_or(FrameError::Short)
    };
    let id = range(r)?;
    let data = range(r)?;
    Ok(IncomingCall {
        call_id,
        handler,
        inline,
        frame,
        id,
        data,
        kind: r.str()?,
        scope: r.str()?,
    })
}

const DONE: u8 = 0;
const FAILED: u8 = 1;
const PANICKED: u8 = 2;

/// A [`REPLY`] frame: the call's id, how long the handler ran, and its
/// outcome.
#[cfg(test)]
pub(crate) fn reply(call_id: u64, ran_for: Duration, outcome: &CallOutcome) -> Vec<u8> {
    reply_in(Vec::new(), call_id, ran_for, outcome)
}

/// A [`REPLY`] frame written into `buf` (the worker keeps one buffer for
/// all its replies).
pub(crate) fn reply_in(
    buf: Vec<u8>,
    call_id: u64,
    ran_for: Duration,
    outcome: &CallOutcome,
) -> Vec<u8> {
    // Room for all of it: growing the frame cost a reallocation per reply.
    let room = match outcome {
        CallOutcome::Done(effects) => effects
            .iter()
            .map(|e| 12 + e.target.len() + e.body.len())
            .sum(),
        CallOutcome::Failed(text) | CallOutcome::Panicked(text) => 4 + text.len(),
    };
    let mut w = Writer::reusing(buf, REPLY, 32 + room);
    w.u64(call_id)
        .u64(u64::try_from(ran_for.as_nanos()).unwrap_or(u64::MAX));
    match outcome {
        CallOutcome::Done(effects) => {
            w.u8(DONE).len(effects.len());
            for effect in effects.iter() {
                w.u32(effect.kind)
                    .str(effect.target.as_str())
                    .str(effect.body.as_str());
            }
        }
        CallOutcome::Failed(text) => {
            w.u8(FAILED).str(text.as_str());
        }
        CallOutcome::Panicked(text) => {
            w.u8(PANICKED).str(text.as_str());
        }
    }
    w.finish()
}

/// A [`REPLY`] as the host reads it, its texts still in the frame.
pub(crate) struct Reply<'a> {
    pub call_id: u64,
    pub ran_for: Duration,
    pub outcome: ReplyOutcome<'a>,
}

/// What a reply says the call came to.
pub(crate) enum ReplyOutcome<'a> {
    /// The plugin's effects.
    Done(ReplyEffects<'a>),
    /// Anything else: failed, panicked, or too many effects to read.
    Other(Outcome),
}

impl ReplyOutcome<'_> {
    /// The outcome, owning its texts.
    pub(crate) fn into_outcome(self) -> Outcome {
        match self {
            ReplyOutcome::Done(effects) => {
                Outcome::Returned(CallOutcome::Done(effects.into_owned()))
            }
            ReplyOutcome::Other(outcome) => outcome,
        }
    }
}

impl From<Outcome> for ReplyOutcome<'_> {
    fn from(outcome: Outcome) -> Self {
        ReplyOutcome::Other(outcome)
    }
}

/// Most effects a reply may have and still be read without allocating
/// (a pong has one). Few: the list is moved with the reply, by value.
pub(crate) const FEW: usize = 4;

/// One effect of a reply, borrowed from its frame.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct EffectRef<'a> {
    pub kind: u32,
    pub target: &'a str,
    pub body: &'a str,
}

impl<'a> EffectRef<'a> {
    /// An owned effect, borrowed.
    pub(crate) fn of(effect: &'a Effect) -> Self {
        EffectRef {
            kind: effect.kind,
            target: effect.target.as_str(),
            body: effect.body.as_str(),
        }
    }
}

impl From<EffectRef<'_>> for Effect {
    fn from(e: EffectRef<'_>) -> Self {
        Effect {
            kind: e.kind,
            target: e.target.into(),
            body: e.body.into(),
        }
    }
}

/// A reply's effects: borrowed from the frame when there are few (a pong
/// written to its caller by the reader of replies then costs no
/// allocation), owned when there are more.
pub(crate) enum ReplyEffects<'a> {
    Few([EffectRef<'a>; FEW], usize),
    Many(RVec<Effect>),
}

impl ReplyEffects<'_> {
    /// The effects as the plugin ABI has them.
    pub(crate) fn into_owned(self) -> RVec<Effect> {
        match self {
            ReplyEffects::Few(list, len) => list.into_iter().take(len).map(Effect::from).collect(),
            ReplyEffects::Many(effects) => effects,
        }
    }
}

/// A plugin's question, as the host reads it.
#[derive(Debug)]
pub(crate) struct Ask {
    pub call_id: u64,
    pub question: String,
    pub input: String,
}

/// An [`ASK`] frame: the question of the call `call_id`.
pub(crate) fn ask(call_id: u64, question: &str, input: &str) -> Vec<u8> {
    let mut w = Writer::new(ASK, 16 + question.len() + input.len());
    w.u64(call_id).str(question).str(input);
    w.finish()
}

/// Reads an [`ASK`] body (after the tag).
pub(crate) fn read_ask(r: &mut Reader<'_>) -> Result<Ask, FrameError> {
    Ok(Ask {
        call_id: r.u64()?,
        question: r.str()?.to_owned(),
        input: r.str()?.to_owned(),
    })
}

/// An [`ANSWER`] frame.
pub(crate) fn answer(call_id: u64, answered: &Result<String, String>) -> Vec<u8> {
    let (ok, text) = match answered {
        Ok(text) => (1, text.as_str()),
        Err(text) => (0, text.as_str()),
    };
    let mut w = Writer::new(ANSWER, 16 + text.len());
    w.u64(call_id).u8(ok).str(text);
    w.finish()
}

/// Reads an [`ANSWER`] body (after the tag): the call and the answer.
pub(crate) fn read_answer(r: &mut Reader<'_>) -> Result<(u64, Result<String, String>), FrameError> {
    let call_id = r.u64()?;
    let ok = r.u8()? != 0;
    let text = r.str()?.to_owned();
    Ok((call_id, if ok { Ok(text) } else { Err(text) }))
}

/// Reads a [`REPLY`] body (after the tag); a reply with more than
/// `max_effects` effects is not decoded further.
pub(crate) fn read_reply<'a>(
    r: &mut Reader<'a>,
    max_effects: usize,
) -> Result<Reply<'a>, FrameError> {
    let call_id = r.u64()?;
    let ran_for = Duration::from_nanos(r.u64()?);
    let outcome = match r.u8()? {
        DONE => {
            let n = r.count(12)?;
            if n > max_effects {
                let too_many = Outcome::TooManyEffects {
                    count: n,
                    limit: max_effects,
                };
                return Ok(Reply {
                    call_id,
                    ran_for,
                    outcome: too_many.into(),
                });
            }
            let effect = |r: &mut Reader<'a>| -> Result<EffectRef<'a>, FrameError> {
                Ok(EffectRef {
                    kind: r.u32()?,
                    target: r.str()?,
                    body: r.str()?,
                })
            };
            let effects = if n <= FEW {
                let mut list = [EffectRef::default(); FEW];
                for slot in list.iter_mut().take(n) {
                    *slot = effect(r)?;
                }
                ReplyEffects::Few(list, n)
            } else {
                let mut owned = RVec::with_capacity(n);
                for _ in 0..n {
                    owned.push(effect(r)?.into());
                }
                ReplyEffects::Many(owned)
            };
            return Ok(Reply {
                call_id,
                ran_for,
                outcome: ReplyOutcome::Done(effects),
            });
        }
        FAILED => CallOutcome::Failed(r.str()?.into()),
        PANICKED => CallOutcome::Panicked(r.str()?.into()),
        other => return Err(FrameError::BadValue(other.into())),
    };
    Ok(Reply {
        call_id,
        ran_for,
        outcome: Outcome::Returned(outcome).into(),
    })
}

/// A [`HELLO`] frame with the plugin's manifest.
pub(crate) fn hello(manifest: &ManifestInfo) -> Vec<u8> {
    let mut w = Writer::new(HELLO, 256);
    w.str(&manifest.name)
        .str(&manifest.version)
        .str(&manifest.api_version)
        .u8(u8::from(manifest.panic_unwind))
        .len(manifest.handlers.len());
    for (types, inline) in &manifest.handlers {
        w.u8(u8::from(*inline)).len(types.len());
        for t in types {
            w.str(t);
        }
    }
    w.u8(u8::from(manifest.hooks.on_connect))
        .u8(u8::from(manifest.hooks.on_disconnect))
        .u8(u8::from(manifest.hooks.yields));
    w.finish()
}

/// Reads a [`HELLO`] body (after the tag).
pub(crate) fn read_hello(r: &mut Reader<'_>) -> Result<ManifestInfo, FrameError> {
    let name = r.str()?.to_owned();
    let version = r.str()?.to_owned();
    let api_version = r.str()?.to_owned();
    let panic_unwind = r.u8()? != 0;
    let n = r.count(5)?;
    let mut handlers = Vec::with_capacity(n);
    for _ in 0..n {
        let inline = r.u8()? != 0;
        let k = r.count(4)?;
        let mut types = Vec::with_capacity(k);
        for _ in 0..k {
            types.push(r.str()?.to_owned());
        }
        handlers.push((types, inline));
    }
    let hooks = crate::plugins::manifest::Hooks {
        on_connect: r.u8()? != 0,
        on_disconnect: r.u8()? != 0,
        yields: r.u8()? != 0,
    };
    Ok(ManifestInfo {
        name,
        version,
        api_version,
        panic_unwind,
        handlers,
        hooks,
    })
}

/// A frame with one byte and one text: [`LOAD_FAILED`], [`CONFIGURED`].
pub(crate) fn coded(tag: u8, code: u8, text: &str) -> Vec<u8> {
    let mut w = Writer::new(tag, 5 + text.len());
    w.u8(code).str(text);
    w.finish()
}

/// A [`FORBIDDEN`] frame, built without allocating (it is written from a
/// signal handler).
pub(crate) fn forbidden(nr: u32) -> [u8; 9] {
    let mut frame = [0; 9];
    frame[..4].copy_from_slice(&5u32.to_le_bytes());
    frame[4] = FORBIDDEN;
    frame[5..].copy_from_slice(&nr.to_le_bytes());
    frame
}

/// A [`STARTED`] frame: the pid, and what of its jail the worker could
/// not have (empty when nothing).
pub(crate) fn started(pid: u32, missing: &str) -> Vec<u8> {
    let mut w = Writer::new(STARTED, 8 + missing.len());
    w.u32(pid).str(missing);
    w.finish()
}

/// A frame with one text: [`CONFIGURE`].
pub(crate) fn text(tag: u8, text: &str) -> Vec<u8> {
    let mut w = Writer::new(tag, 4 + text.len());
    w.str(text);
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(frame: &[u8]) -> (u8, &[u8]) {
        let len = body_len([frame[0], frame[1], frame[2], frame[3]]).unwrap();
        assert_eq!(len, frame.len() - 4);
        (frame[4], &frame[5..])
    }

    #[test]
    fn a_call_round_trips_with_its_ranges() {
        let text = r#"{"id":7,"type":"ping","data":{"a":1}}"#;
        let mut frame = call(&CallParts {
            handler: 3,
            inline: true,
            frame: text,
            id: (text.find('7').unwrap(), 1),
            data: (text.find("{\"a\"").unwrap(), 7),
            kind: "ping",
            scope: "{}",
        });
        // Made in one allocation, never regrown.
        assert_eq!(frame.len(), frame.capacity());
        set_call_id(&mut frame, 42);
        let (tag, rest) = body(&frame);
        assert_eq!(tag, CALL);
        let call = read_call(&mut Reader::new(rest)).unwrap();
        assert_eq!(call.call_id, 42);
        assert_eq!(call.handler, 3);
        assert!(call.inline);
        assert_eq!(call.id, "7");
        assert_eq!(call.data, r#"{"a":1}"#);
        assert_eq!(call.kind, "ping");
        assert_eq!(call.scope, "{}");
    }

    #[test]
    fn a_reply_round_trips_every_outcome() {
        let effects: RVec<Effect> = vec![Effect {
            kind: 5,
            target: "room".into(),
            body: "{}".into(),
        }]
        .into();
        for outcome in [
            CallOutcome::Done(effects),
            CallOutcome::Failed("no".into()),
            CallOutcome::Panicked("boom".into()),
        ] {
            let frame = reply(9, Duration::from_micros(3), &outcome);
            let (tag, rest) = body(&frame);
            assert_eq!(tag, REPLY);
            let back = read_reply(&mut Reader::new(rest), 4096).unwrap();
            assert_eq!(back.call_id, 9);
            assert_eq!(back.ran_for, Duration::from_micros(3));
            assert_eq!(
                format!("{:?}", back.outcome.into_outcome()),
                format!("Returned({outcome:?})")
            );
        }
    }

    #[test]
    fn a_reply_past_the_effects_limit_is_not_decoded() {
        let effect = || Effect {
            kind: 1,
            target: "".into(),
            body: "{}".into(),
        };
        let effects: RVec<Effect> = (0..3).map(|_| effect()).collect();
        let frame = reply(7, Duration::ZERO, &CallOutcome::Done(effects));
        let (_, rest) = body(&frame);
        let back = read_reply(&mut Reader::new(rest), 2).unwrap();
        assert_eq!(back.call_id, 7);
        assert!(matches!(
            back.outcome.into_outcome(),
            Outcome::TooManyEffects { count: 3, limit: 2 }
        ));
        let back = read_reply(&mut Reader::new(rest), 3).unwrap();
        let ReplyOutcome::Done(effects) = back.outcome else {
            panic!("done");
        };
        assert!(matches!(effects, ReplyEffects::Few(_, 3)));
        assert_eq!(effects.into_owned().len(), 3);
    }

    #[test]
    fn many_effects_are_read_as_few_are() {
        for n in [FEW - 1, FEW, FEW + 1, 100] {
            let effects: RVec<Effect> = (0..n)
                .map(|i| Effect {
                    kind: i as u32,
                    target: format!("g{i}").into(),
                    body: format!("{{\"n\":{i}}}").into(),
                })
                .collect();
            let frame = reply(1, Duration::ZERO, &CallOutcome::Done(effects.clone()));
            let back = read_reply(&mut Reader::new(body(&frame).1), 1000).unwrap();
            let ReplyOutcome::Done(read) = back.outcome else {
                panic!("done");
            };
            assert_eq!(matches!(read, ReplyEffects::Few(..)), n <= FEW, "{n}");
            assert_eq!(format!("{:?}", read.into_owned()), format!("{effects:?}"));
        }
    }

    #[test]
    fn hostile_frames_are_refused_without_allocating() {
        // A reply claiming four billion effects in a few bytes.
        let mut w = Writer::new(REPLY, 0);
        w.u64(1).u64(0).u8(DONE).u32(u32::MAX);
        let frame = w.finish();
        let (_, rest) = body(&frame);
        assert_eq!(
            read_reply(&mut Reader::new(rest), usize::MAX).err(),
            Some(FrameError::Short)
        );
        assert_eq!(
            body_len((MAX_FRAME as u32 + 1).to_le_bytes()),
            Err(FrameError::TooLarge(MAX_FRAME + 1))
        );
        let mut w = Writer::new(HELLO, 0);
        w.u32(2).u8(0xff).u8(0xfe);
        let frame = w.finish();
        assert_eq!(
            read_hello(&mut Reader::new(body(&frame).1)).err(),
            Some(FrameError::NotUtf8)
        );
    }
}
