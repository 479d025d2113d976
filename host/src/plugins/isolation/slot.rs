//! Where a worker call's end goes: the caller's slot, and, for a reply
//! that only sends its caller messages, straight to the caller's socket.
//!
//! Why: a pong from a worker used to take two hand-offs, the reader of
//! replies waking the connection's task and that task writing the frame;
//! on a small machine the wake-up, with the second poll of the task and
//! the runtime's notice to its other thread, was a good part of what a
//! call to a worker cost over an inline one. Now the reader of replies
//! writes such a reply itself, under the connection's line lock
//! ([`ReplyLine`]), and wakes the caller at once only when the caller
//! asked for that ([`Slot::poll_end`] with `eager`). A caller that waits
//! quietly is woken by whatever else it waits for ([`Attention`]: the
//! client's next frame, its stop or idle timer) and then finds its call
//! ended; most clients send their next frame soon after an answer. The
//! wake-up it was spared is only put off: the reader of replies keeps the
//! slot and wakes a caller that has not come for its end after
//! [`LINGER`] ([`Owed`]), so that no caller holds a call's plugin
//! version (a replaced one) for longer. The call is counted in the
//! metrics and judged (inline or not) when the caller takes its end,
//! before the connection's next frame is read: others may see its counts
//! that much after its reply. Anything else (an error, effects
//! beyond sending, a socket that takes only part of the reply or none)
//! ends in the slot as before and wakes the caller, which carries it out
//! itself.
//!
//! The reply's messages are written from the reply's frame as the reader
//! read it ([`super::frame::ReplyEffects`]): a pong's text is never
//! copied out of it. They are turned into the plugin ABI's owned effects
//! only for a caller that carries them out itself.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};

use rohrpost_plugin_api::abi::CallOutcome;

use super::frame::{EffectRef, ReplyEffects, ReplyOutcome};
use crate::plugins::outcome::Outcome;

/// What became of a reply written for its caller.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Direct {
    /// Its messages are on the socket.
    Written,
    /// They are in part; the line keeps the rest for the caller's next
    /// flush.
    Part,
    /// Nothing was written: the caller carries the reply out itself.
    Declined,
}

/// Most messages one reply may send and still be written at once, by the
/// reader of replies or by the caller without waiting.
pub(crate) const MOST_SENDS_AT_ONCE: usize = 16;

/// A caller's socket, for the reader of replies.
pub(crate) trait ReplyLine: Send + Sync {
    /// Writes `effects` (lent from the reply's frame) if they only send
    /// the caller messages that go out as they are, in order; else writes
    /// nothing.
    fn write_sends(&self, effects: &[EffectRef<'_>]) -> Direct;
}

/// Whatever else a caller waiting quietly waits for.
pub(crate) trait Attention: Sync {
    /// Ready when the caller has something to do besides its call (then
    /// it waits for the call's end eagerly).
    fn poll_wanted(&self, cx: &mut Context<'_>) -> Poll<()>;
}

/// How a call in a worker ended.
pub(crate) struct Ended {
    pub outcome: Outcome,
    /// How long the handler ran, as the worker measured it.
    pub ran_for: Option<Duration>,
    /// When the reader of replies wrote the reply's messages itself; the
    /// outcome then has no effects left.
    pub written: Option<Instant>,
}

impl From<Outcome> for Ended {
    /// A call that ended without a reply from the worker.
    fn from(outcome: Outcome) -> Self {
        Ended {
            outcome,
            ran_for: None,
            written: None,
        }
    }
}

/// One call's end, between the reader of replies and the caller.
#[derive(Default)]
pub(crate) struct Slot(Mutex<State>);

#[derive(Default)]
struct State {
    end: Option<Ended>,
    waker: Option<Waker>,
    /// The caller wants a wake-up for a reply written for it too.
    eager: bool,
    /// The caller stopped waiting: nothing may be written for it.
    gone: bool,
}

impl Slot {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Nothing under the lock can panic; recover anyway.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends the call with `outcome`; its messages go straight to `line`
    /// when they only send some and the line takes them whole. True when
    /// the caller's wake-up is put off: see [`Owed`].
    #[must_use]
    pub(crate) fn end(
        &self,
        outcome: ReplyOutcome<'_>,
        ran_for: Option<Duration>,
        line: Option<&Arc<dyn ReplyLine>>,
    ) -> bool {
        // Nothing to write for the caller: its texts are copied before the
        // lock is taken.
        let (outcome, line) = match (outcome, line) {
            (done @ ReplyOutcome::Done(_), Some(line)) => (done, Some(line)),
            (outcome, _) => (outcome.into_outcome().into(), None),
        };
        let mut state = self.state();
        if state.gone || state.end.is_some() {
            return false;
        }
        let mut written = None;
        let mut wake = true;
        if let (Some(line), ReplyOutcome::Done(effects)) = (line, &outcome) {
            // Under the slot's lock: a caller that has stopped waiting
            // (its connection ended) is never written to.
            let direct =
                lend(effects, |effects| line.write_sends(effects)).unwrap_or(Direct::Declined);
            if direct != Direct::Declined {
                written = Some(Instant::now());
                wake = state.eager || direct == Direct::Part;
            }
        }
        let outcome = match written {
            // Nothing left to carry out: no texts to copy.
            Some(_) => Outcome::Returned(CallOutcome::Done(Default::default())),
            None => outcome.into_outcome(),
        };
        state.end = Some(Ended {
            outcome,
            ran_for,
            written,
        });
        if !wake {
            return true;
        }
        let waker = state.waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
        false
    }

    /// Wakes the caller if it has not taken the call's end yet.
    pub(crate) fn wake_if_unclaimed(&self) {
        let mut state = self.state();
        let waker = match state.end {
            Some(_) if !state.gone => state.waker.take(),
            _ => None,
        };
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Whether the caller took the call's end, or stopped waiting.
    fn claimed(&self) -> bool {
        let state = self.state();
        state.gone || state.end.is_none()
    }

    /// The call's end, if it came; else the caller's task is woken when
    /// it does (for a reply written for it, only when `eager`).
    pub(crate) fn poll_end(&self, cx: &mut Context<'_>, eager: bool) -> Poll<Ended> {
        let mut state = self.state();
        if let Some(end) = state.end.take() {
            state.waker = None;
            return Poll::Ready(end);
        }
        state.eager = eager;
        match &state.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => state.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// The caller stopped waiting.
    pub(crate) fn leave(&self) {
        let mut state = self.state();
        state.gone = true;
        state.waker = None;
    }
}

/// Runs `f` on a reply's effects as borrowed slices, the few read in
/// place as they are, more (up to [`MOST_SENDS_AT_ONCE`]) lent from
/// their owned copies; `None` for a reply with more.
fn lend<R>(effects: &ReplyEffects<'_>, f: impl FnOnce(&[EffectRef<'_>]) -> R) -> Option<R> {
    match effects {
        ReplyEffects::Few(list, len) => list.get(..*len).map(f),
        ReplyEffects::Many(owned) if owned.len() <= MOST_SENDS_AT_ONCE => {
            let mut list = [EffectRef::default(); MOST_SENDS_AT_ONCE];
            for (slot, effect) in list.iter_mut().zip(owned.iter()) {
                *slot = EffectRef::of(effect);
            }
            list.get(..owned.len()).map(f)
        }
        ReplyEffects::Many(_) => None,
    }
}

/// How long a caller waiting quietly may leave a reply written for it
/// unclaimed before it is woken anyway.
pub(crate) const LINGER: Duration = Duration::from_millis(5);

/// Most put-off wake-ups one reader of replies keeps; beyond, the oldest
/// is woken.
const MAX_OWED: usize = 4096;

/// The wake-ups a reader of replies has put off, oldest first. Every one
/// is made, at the latest, [`LINGER`] after its reply, or when this is
/// dropped (the reader ends).
#[derive(Default)]
pub(crate) struct Owed(VecDeque<(Arc<Slot>, Instant)>);

impl Owed {
    /// Puts off the wake-up of `slot`, whose reply was written `at`.
    pub(crate) fn push(&mut self, slot: Arc<Slot>, at: Instant) {
        if self.0.len() >= MAX_OWED {
            if let Some((oldest, _)) = self.0.pop_front() {
                oldest.wake_if_unclaimed();
            }
        }
        self.0.push_back((slot, at));
    }

    /// Lets go of the slots whose callers came for their ends, and wakes
    /// those that have lingered [`LINGER`] by `now`; when the next of them
    /// is due, if any waits.
    pub(crate) fn settle(&mut self, now: Instant) -> Option<Instant> {
        while let Some((slot, at)) = self.0.front() {
            let due = *at + LINGER;
            if due > now && !slot.claimed() {
                return Some(due);
            }
            slot.wake_if_unclaimed();
            self.0.pop_front();
        }
        None
    }
}

impl Drop for Owed {
    fn drop(&mut self) {
        for (slot, _) in self.0.drain(..) {
            slot.wake_if_unclaimed();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::plugins::isolation::frame::FEW;
    use rohrpost_plugin_api::abi::{Effect, EFFECT_SEND};

    /// A line that takes or declines everything, and counts its writes.
    struct Counting(Direct, AtomicUsize);

    impl ReplyLine for Counting {
        fn write_sends(&self, _: &[EffectRef<'_>]) -> Direct {
            self.1.fetch_add(1, Ordering::Relaxed);
            match self.0 {
                Direct::Written => Direct::Written,
                Direct::Part => Direct::Part,
                Direct::Declined => Direct::Declined,
            }
        }
    }

    /// A waker that counts its wakes.
    struct Wakes(AtomicUsize);

    impl std::task::Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn pong() -> ReplyOutcome<'static> {
        let mut list = [EffectRef::default(); FEW];
        list[0] = EffectRef {
            kind: EFFECT_SEND,
            target: "",
            body: "{}",
        };
        ReplyOutcome::Done(ReplyEffects::Few(list, 1))
    }

    fn line(direct: Direct) -> (Arc<Counting>, Arc<dyn ReplyLine>) {
        let counting = Arc::new(Counting(direct, AtomicUsize::new(0)));
        let line: Arc<dyn ReplyLine> = counting.clone();
        (counting, line)
    }

    fn waker() -> (Arc<Wakes>, Waker) {
        let wakes = Arc::new(Wakes(AtomicUsize::new(0)));
        (wakes.clone(), Waker::from(wakes))
    }

    #[test]
    fn a_written_reply_wakes_an_eager_caller_at_once_and_a_quiet_one_later() {
        for eager in [false, true] {
            let slot = Slot::default();
            let (wakes, waker) = waker();
            let mut cx = Context::from_waker(&waker);
            assert!(slot.poll_end(&mut cx, eager).is_pending());
            let (_, line) = line(Direct::Written);
            let put_off = slot.end(pong(), Some(Duration::ZERO), Some(&line));
            assert_eq!(put_off, !eager);
            assert_eq!(wakes.0.load(Ordering::Relaxed), usize::from(eager));
            // The put-off wake-up, made by the reader of replies.
            slot.wake_if_unclaimed();
            assert_eq!(wakes.0.load(Ordering::Relaxed), 1);
            let Poll::Ready(end) = slot.poll_end(&mut cx, eager) else {
                panic!("ended");
            };
            assert!(end.written.is_some());
            assert!(matches!(end.outcome, Outcome::Returned(CallOutcome::Done(e)) if e.is_empty()));
        }
    }

    #[test]
    fn a_reply_written_in_part_or_declined_wakes_the_caller_with_what_is_left() {
        for (direct, written) in [(Direct::Part, true), (Direct::Declined, false)] {
            let slot = Slot::default();
            let (wakes, waker) = waker();
            let mut cx = Context::from_waker(&waker);
            assert!(slot.poll_end(&mut cx, false).is_pending());
            let (_, line) = line(direct);
            assert!(!slot.end(pong(), None, Some(&line)));
            assert_eq!(wakes.0.load(Ordering::Relaxed), 1);
            let Poll::Ready(end) = slot.poll_end(&mut cx, false) else {
                panic!("ended");
            };
            assert_eq!(end.written.is_some(), written);
            let Outcome::Returned(CallOutcome::Done(effects)) = end.outcome else {
                panic!("done");
            };
            assert_eq!(effects.is_empty(), written);
        }
    }

    #[test]
    fn a_reply_of_many_sends_is_written_too_and_a_longer_one_is_not() {
        let most = MOST_SENDS_AT_ONCE;
        for (n, written) in [(FEW + 1, true), (most, true), (most + 1, false)] {
            let effects = (0..n)
                .map(|_| Effect {
                    kind: EFFECT_SEND,
                    target: "".into(),
                    body: "{}".into(),
                })
                .collect();
            let slot = Slot::default();
            let (counting, line) = line(Direct::Written);
            let outcome = ReplyOutcome::Done(ReplyEffects::Many(effects));
            assert_eq!(slot.end(outcome, None, Some(&line)), written, "{n}");
            assert_eq!(counting.1.load(Ordering::Relaxed), usize::from(written));
            let (_, waker) = waker();
            let Poll::Ready(end) = slot.poll_end(&mut Context::from_waker(&waker), false) else {
                panic!("ended");
            };
            let Outcome::Returned(CallOutcome::Done(left)) = end.outcome else {
                panic!("done");
            };
            assert_eq!(left.len(), if written { 0 } else { n });
        }
    }

    #[test]
    fn effects_are_lent_whole_and_in_order_up_to_the_most_sent_at_once() {
        use crate::plugins::isolation::frame::{self, Reader};
        for n in [
            FEW - 1,
            FEW,
            FEW + 1,
            MOST_SENDS_AT_ONCE,
            MOST_SENDS_AT_ONCE + 1,
        ] {
            let effects: abi_stable::std_types::RVec<Effect> = (0..n)
                .map(|i| Effect {
                    kind: i as u32,
                    target: format!("g{i}").into(),
                    body: format!("{{\"n\":{i}}}").into(),
                })
                .collect();
            let done = CallOutcome::Done(effects.clone());
            let bytes = frame::reply_in(Vec::new(), 1, Duration::ZERO, &done);
            let read = frame::read_reply(&mut Reader::new(&bytes[5..]), 1000).expect("a reply");
            let ReplyOutcome::Done(read) = read.outcome else {
                panic!("done");
            };
            let as_tuples = |list: &[EffectRef<'_>]| {
                format!(
                    "{:?}",
                    list.iter()
                        .map(|e| (e.kind, e.target, e.body))
                        .collect::<Vec<_>>()
                )
            };
            let expected: Vec<EffectRef<'_>> = effects.iter().map(EffectRef::of).collect();
            assert_eq!(
                lend(&read, as_tuples),
                (n <= MOST_SENDS_AT_ONCE).then(|| as_tuples(&expected)),
                "{n}"
            );
        }
    }

    #[test]
    fn nothing_is_written_for_a_caller_that_left_or_for_an_error() {
        let slot = Slot::default();
        let (counting, line) = line(Direct::Written);
        slot.leave();
        assert!(!slot.end(pong(), None, Some(&line)));
        assert_eq!(counting.1.load(Ordering::Relaxed), 0);

        let slot = Slot::default();
        assert!(!slot.end(Outcome::Crashed.into(), None, Some(&line)));
        assert_eq!(counting.1.load(Ordering::Relaxed), 0);
        // The first end stays.
        assert!(!slot.end(pong(), None, Some(&line)));
        let (_, waker) = waker();
        let Poll::Ready(end) = slot.poll_end(&mut Context::from_waker(&waker), false) else {
            panic!("ended");
        };
        assert!(matches!(end.outcome, Outcome::Crashed));
    }

    #[test]
    fn put_off_wake_ups_are_made_after_the_linger_or_when_dropped_never_twice() {
        let (_, line) = line(Direct::Written);
        let start = Instant::now();
        let mut owed = Owed::default();
        let mut callers = Vec::new();
        for _ in 0..3 {
            let slot = Arc::new(Slot::default());
            let (wakes, waker) = waker();
            assert!(slot
                .poll_end(&mut Context::from_waker(&waker), false)
                .is_pending());
            assert!(slot.end(pong(), None, Some(&line)));
            owed.push(slot.clone(), start);
            callers.push((slot, wakes, waker));
        }
        // The first caller comes for its end by itself.
        let (slot, _, waker) = &callers[0];
        assert!(slot
            .poll_end(&mut Context::from_waker(waker), false)
            .is_ready());
        assert_eq!(owed.settle(start), Some(start + LINGER));
        let woken = |callers: &[(Arc<Slot>, Arc<Wakes>, Waker)]| {
            callers
                .iter()
                .map(|(_, wakes, _)| wakes.0.load(Ordering::Relaxed))
                .collect::<Vec<_>>()
        };
        assert_eq!(woken(&callers), [0, 0, 0]);
        // The second has lingered long enough.
        owed.0.get_mut(1).expect("the third").1 = start + LINGER;
        assert_eq!(owed.settle(start + LINGER), Some(start + 2 * LINGER));
        assert_eq!(woken(&callers), [0, 1, 0]);
        drop(owed);
        assert_eq!(woken(&callers), [0, 1, 1]);
    }
}
