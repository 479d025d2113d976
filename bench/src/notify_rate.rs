//! A steady stream of change notifications: N subscribers of one
//! collection, notifications posted to `POST /api/notify` at a fixed rate.
//! Each carries its sequence number and the time it was sent, so every
//! subscriber can tell its latency, a gap, or a duplicate.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use clap::Args;
use humantime::parse_duration;
use tokio::time::MissedTickBehavior;

use crate::{
    readers::{self, Ending, Readers, Recorder},
    report::{self, Latency, Table},
    servers::{self, Artifacts, CpuMeter, CpuUse},
    subscribers::{self, Notifier, Update},
};

/// How long deliveries may trail the last notification.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest sequence number a subscriber keeps track of.
const MAX_SEQ: u64 = 1 << 28;

#[derive(Debug, Clone, Args)]
pub struct NotifyRateArgs {
    /// Connections subscribed to the one collection.
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,

    /// Notifications per second.
    #[arg(long, default_value_t = 500)]
    pub rate: u32,

    /// How long notifications are sent ("10s", "500ms").
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Keep-alive HTTP connections sharing the rate, each posting one
    /// notification at a time (one alone falls behind 500/s with 1000
    /// subscribers).
    #[arg(long, default_value_t = 4)]
    pub http_connections: u32,
}

/// Sequence numbers seen, as a bit set.
#[derive(Default)]
struct Seen(Vec<u64>);

impl Seen {
    /// True when `seq` was not seen before.
    fn insert(&mut self, seq: u64) -> bool {
        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if self.0.len() <= word {
            self.0.resize(word + 1, 0);
        }
        let new = self.0[word] & bit == 0;
        self.0[word] |= bit;
        new
    }
}

/// One subscriber's deliveries.
struct Deliveries {
    start: Instant,
    seen: Seen,
    duplicates: u64,
    /// Out of range or without `sent_us`.
    malformed: u64,
    latencies_us: Vec<u32>,
    /// Distinct deliveries of all subscribers together.
    received: Arc<AtomicU64>,
}

impl Recorder for Deliveries {
    fn record(&mut self, update: Update, at: Instant) {
        let Some(sent_us) = update.sent_us.filter(|_| update.seq <= MAX_SEQ) else {
            self.malformed += 1;
            return;
        };
        if !self.seen.insert(update.seq) {
            self.duplicates += 1;
            return;
        }
        let now_us = at.saturating_duration_since(self.start).as_micros();
        let latency = now_us.saturating_sub(u128::from(sent_us));
        self.latencies_us
            .push(u32::try_from(latency).unwrap_or(u32::MAX));
        self.received.fetch_add(1, Ordering::Relaxed);
    }
}

/// What one HTTP connection sent.
#[derive(Default)]
struct Sent {
    notifications: u64,
    /// Answers whose `delivered` was not the number of subscribers.
    short_answers: u64,
    answers_us: Vec<u32>,
    /// When its last answer came.
    done: Option<Instant>,
}

pub async fn run(artifacts: &Artifacts, args: &NotifyRateArgs, open_files: u64) -> Result<Table> {
    servers::check_open_files(args.subscribers, "--subscribers", open_files)?;
    if args.rate == 0 || args.http_connections == 0 {
        bail!("--rate and --http-connections must be at least 1");
    }
    let (mut server, sockets) =
        subscribers::start(artifacts, "notify-rate", args.subscribers).await?;
    let received = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let readers = Readers::start(sockets, || Deliveries {
        start,
        seen: Seen::default(),
        duplicates: 0,
        malformed: 0,
        latencies_us: Vec::new(),
        received: received.clone(),
    })?;
    let mut notifiers = Vec::new();
    for _ in 0..args.http_connections {
        notifiers.push(Notifier::connect(&server).await?);
    }
    eprintln!(
        "notify-rate: {} notifications/s to {} subscribers for {:?} over {} HTTP connection(s)",
        args.rate, args.subscribers, args.duration, args.http_connections
    );

    let meter = CpuMeter::start(&server)?;
    let first_tick = Instant::now();
    let deadline = first_tick + args.duration;
    let mut senders = Vec::new();
    for (index, notifier) in notifiers.into_iter().enumerate() {
        let plan = Plan {
            index: index as u64,
            connections: u64::from(args.http_connections),
            rate: args.rate,
            first_tick,
            deadline,
            start,
            subscribers: args.subscribers as u64,
        };
        senders.push(tokio::spawn(send(notifier, plan)));
    }
    let mut sent = Vec::new();
    for sender in senders {
        sent.push(sender.await.context("a notifying connection panicked")??);
    }
    let cpu = meter.stop()?;
    let notifications: u64 = sent.iter().map(|s| s.notifications).sum();
    let expected = notifications * args.subscribers as u64;

    let drain_deadline = Instant::now() + DRAIN_TIMEOUT;
    while received.load(Ordering::Relaxed) < expected && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let endings = readers.finish().await?;
    let dropped = readers::report_endings("notify-rate", &endings);
    server.check_running()?;
    server.stop()?;

    let summary = summarize(&sent, endings, first_tick, expected, dropped, cpu);
    Ok(table(args, &summary))
}

/// Puts together what the HTTP connections sent and the subscribers got.
fn summarize(
    sent: &[Sent],
    endings: Vec<Ending<Deliveries>>,
    first_tick: Instant,
    expected: u64,
    dropped: u64,
    cpu: CpuUse,
) -> Summary {
    let mut latencies = Vec::with_capacity(usize::try_from(expected).unwrap_or(0));
    let (mut duplicates, mut malformed) = (0, 0);
    for ending in endings {
        duplicates += ending.recorder.duplicates;
        malformed += ending.recorder.malformed;
        latencies.extend(ending.recorder.latencies_us);
    }
    if malformed > 0 {
        eprintln!("notify-rate: {malformed} deliveries without a usable seq or sent_us");
    }
    latencies.sort_unstable();
    let mut answers: Vec<u32> = sent
        .iter()
        .flat_map(|s| s.answers_us.iter().copied())
        .collect();
    answers.sort_unstable();
    let notifications: u64 = sent.iter().map(|s| s.notifications).sum();
    let sending = sent
        .iter()
        .filter_map(|s| s.done)
        .max()
        .map_or(Duration::ZERO, |done| done - first_tick);
    Summary {
        notifications,
        expected,
        received: latencies.len() as u64,
        duplicates,
        dropped,
        short_answers: sent.iter().map(|s| s.short_answers).sum(),
        latency: Latency::of_sorted(&latencies),
        answer: Latency::of_sorted(&answers),
        rate: notifications as f64 / sending.as_secs_f64().max(f64::MIN_POSITIVE),
        cpu,
    }
}

/// When one HTTP connection sends: every `connections`-th tick of the
/// rate, starting with tick `index`.
struct Plan {
    index: u64,
    connections: u64,
    rate: u32,
    first_tick: Instant,
    deadline: Instant,
    /// The shared origin of `sent_us`.
    start: Instant,
    subscribers: u64,
}

async fn send(mut notifier: Notifier, plan: Plan) -> Result<Sent> {
    let tick = Duration::from_secs(1) / plan.rate;
    let first = plan.first_tick + tick * u32::try_from(plan.index)?;
    let mut interval =
        tokio::time::interval_at(first.into(), tick * u32::try_from(plan.connections)?);
    // Catch up after a slow answer: every tick before the deadline is
    // sent, and the achieved rate shows how late.
    interval.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut sent = Sent::default();
    let mut seq = plan.index + 1;
    loop {
        if interval.tick().await.into_std() >= plan.deadline {
            break;
        }
        let posted = Instant::now();
        let sent_us = posted.saturating_duration_since(plan.start).as_micros();
        let object = format!(r#"{{"id":1,"seq":{seq},"sent_us":{sent_us}}}"#);
        let delivered = notifier
            .update(&object)
            .await
            .with_context(|| format!("notification {seq}"))?;
        let done = Instant::now();
        sent.answers_us
            .push(u32::try_from((done - posted).as_micros()).unwrap_or(u32::MAX));
        sent.done = Some(done);
        sent.notifications += 1;
        if delivered != plan.subscribers {
            sent.short_answers += 1;
        }
        seq += plan.connections;
    }
    Ok(sent)
}

struct Summary {
    notifications: u64,
    expected: u64,
    received: u64,
    duplicates: u64,
    dropped: u64,
    short_answers: u64,
    latency: Latency,
    answer: Latency,
    rate: f64,
    /// While sending.
    cpu: CpuUse,
}

fn table(args: &NotifyRateArgs, s: &Summary) -> Table {
    let connections = match args.http_connections {
        1 => "one keep-alive HTTP connection".to_owned(),
        n => format!("{n} keep-alive HTTP connections"),
    };
    let mut table = Table::new(
        &format!(
            "notify-rate: {} subscribers, {} notifications/s for {:?} over {connections}",
            args.subscribers, args.rate, args.duration
        ),
        &["what", "value"],
    );
    let l = &s.latency;
    for (what, value) in [
        ("notifications sent", report::count(s.notifications)),
        ("achieved rate", format!("{:.0} notifications/s", s.rate)),
        (
            "deliveries expected (sent × subscribers)",
            report::count(s.expected),
        ),
        ("deliveries received", report::count(s.received)),
        (
            "missing",
            report::count(s.expected.saturating_sub(s.received)),
        ),
        ("duplicates", report::count(s.duplicates)),
        ("subscribers dropped by the host", report::count(s.dropped)),
        (
            "answers with delivered ≠ subscribers",
            report::count(s.short_answers),
        ),
        (
            "delivery latency p50 / p99 / p999 / max",
            format!(
                "{} / {} / {} / {}",
                report::micros(l.p50),
                report::micros(l.p99),
                report::micros(l.p999),
                report::micros(l.max)
            ),
        ),
        (
            "HTTP answer p50 / p99 / max",
            format!(
                "{} / {} / {}",
                report::micros(s.answer.p50),
                report::micros(s.answer.p99),
                report::micros(s.answer.max)
            ),
        ),
        ("CPU while sending, host / bench", s.cpu.cores()),
    ] {
        table.row(vec![what.to_owned(), value]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_tells_duplicates() {
        let mut seen = Seen::default();
        assert!(seen.insert(1));
        assert!(seen.insert(64));
        assert!(seen.insert(1000));
        assert!(!seen.insert(1));
        assert!(!seen.insert(64));
        assert!(seen.insert(2));
    }
}
