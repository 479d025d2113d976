//! Futures that are polled only when they asked to be.
//!
//! `tokio::select!` polls every branch each time its task wakes, and a
//! connection's task wakes for every frame. Some of its branches are not
//! free to poll: the shutdown signal locks a mutex that all connections
//! share, the idle timer goes through the timer wheel. A [`WokenOnly`]
//! future gets a waker of its own ([`Wakes`], one per task, shared by its
//! wrapped futures) and is polled again only after that waker fired, so a
//! frame costs such a branch three plain atomic loads.
//!
//! The task's waker stays registered once it is ([`TaskSlot`]): a wake does
//! not take it away, as `AtomicWaker`'s does, so a poll need not register
//! it again (two atomic read-modify-writes on a line that the connection's
//! two runtime threads then pass between them, on every frame); it only
//! compares the waker with the one registered, which does not change while
//! the same task polls.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicPtr, AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll, Wake, Waker},
};

use crate::base::lock::lock;

/// How often the wrapped futures were woken, and the task to wake then.
#[derive(Default)]
struct Flag {
    generation: AtomicU64,
    task: TaskSlot,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.task.wake();
    }
}

/// The task to wake, kept across wakes.
#[derive(Default)]
struct TaskSlot {
    waker: std::sync::Mutex<Option<Waker>>,
    /// The registered waker's data and vtable, read without the lock to
    /// tell whether a poll's waker is the one registered.
    data: AtomicPtr<()>,
    vtable: AtomicPtr<std::task::RawWakerVTable>,
}

impl TaskSlot {
    /// Makes `waker` the one woken, unless it already is.
    fn register(&self, waker: &Waker) {
        let vtable = std::ptr::from_ref(waker.vtable()).cast_mut();
        if self.data.load(Ordering::Acquire) == waker.data().cast_mut()
            && self.vtable.load(Ordering::Acquire) == vtable
        {
            return;
        }
        let mut slot = lock(&self.waker);
        *slot = Some(waker.clone());
        self.data.store(waker.data().cast_mut(), Ordering::Release);
        self.vtable.store(vtable, Ordering::Release);
    }

    fn wake(&self) {
        if let Some(waker) = lock(&self.waker).as_ref() {
            waker.wake_by_ref();
        }
    }
}

/// The waker that the [`WokenOnly`] futures of one task share: a wake of
/// any of them has all of them polled once more, which is cheap and rare.
#[derive(Clone)]
pub(crate) struct Wakes {
    flag: Arc<Flag>,
    waker: Waker,
}

impl Wakes {
    pub(crate) fn new() -> Self {
        let flag = Arc::new(Flag::default());
        Wakes {
            waker: Waker::from(flag.clone()),
            flag,
        }
    }

    /// How often the wrapped futures were woken so far.
    pub(crate) fn generation(&self) -> u64 {
        self.flag.generation.load(Ordering::Acquire)
    }

    /// Ready once a wrapped future was woken after `seen` (a
    /// [`generation`](Self::generation)), without polling any of them:
    /// they are polled where they are waited for.
    pub(crate) fn poll_woken_since(&self, cx: &mut Context<'_>, seen: u64) -> Poll<()> {
        if self.generation() != seen {
            return Poll::Ready(());
        }
        self.flag.task.register(cx.waker());
        if self.generation() != seen {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

pin_project_lite::pin_project! {
    /// Polls `F` on its first poll and afterwards only when a future of
    /// its [`Wakes`] woke.
    pub struct WokenOnly<F> {
        #[pin]
        inner: F,
        wakes: Wakes,
        // The generation last polled at; `None` before the first poll.
        seen: Option<u64>,
    }
}

impl<F: Future> WokenOnly<F> {
    pub(crate) fn new(inner: F, wakes: &Wakes) -> Self {
        WokenOnly {
            inner,
            wakes: wakes.clone(),
            seen: None,
        }
    }

    /// The future itself, for a change that needs it polled again (a timer
    /// reset): it is, on the next poll.
    pub(crate) fn inner(self: Pin<&mut Self>) -> Pin<&mut F> {
        let this = self.project();
        *this.seen = None;
        this.inner
    }
}

impl<F: Future> Future for WokenOnly<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        this.wakes.flag.task.register(cx.waker());
        // Read before polling: a wake during the poll moves it on, and
        // the next poll sees that.
        let generation = this.wakes.generation();
        if *this.seen == Some(generation) {
            return Poll::Pending;
        }
        *this.seen = Some(generation);
        let polled = this.inner.poll(&mut Context::from_waker(&this.wakes.waker));
        if polled.is_ready() {
            // A finished future may be reset and polled again.
            *this.seen = None;
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Wakes, WokenOnly};

    #[tokio::test]
    async fn a_timer_fires_and_a_reset_is_seen() {
        let wakes = Wakes::new();
        let sleep = WokenOnly::new(tokio::time::sleep(Duration::from_millis(10)), &wakes);
        tokio::pin!(sleep);
        sleep.as_mut().await;
        sleep
            .as_mut()
            .inner()
            .reset(tokio::time::Instant::now() + Duration::from_millis(10));
        sleep.as_mut().await;
    }

    #[tokio::test]
    async fn a_signal_reaches_one_of_two_waiting_futures() {
        let (sender, mut receiver) = tokio::sync::watch::channel(false);
        let wakes = Wakes::new();
        let task = tokio::spawn(async move {
            let never = WokenOnly::new(std::future::pending::<()>(), &wakes);
            let signal = WokenOnly::new(
                async move {
                    let _ = receiver.wait_for(|stopping| *stopping).await;
                },
                &wakes,
            );
            tokio::select! {
                () = never => false,
                () = signal => true,
            }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        sender.send_replace(true);
        let signalled = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the signal woke the future")
            .expect("the task ran");
        assert!(signalled);
    }
}
