//! Django's `group_send` through channels_redis's default layer, to 1,000
//! subscribers of the host (`--groups channels_redis://`) and, in the same
//! run, to 1,000 subscribers of daphne serving the same app with rohrpost's
//! own consumer: what moving the sockets of a Django rohrpost app to the
//! host changes for its notifications.
//!
//! The sender is the app's `manage.py bench_send` (in the Django test
//! app): N messages, one `group_send` after another, each with its
//! sequence number and when it was sent. Every subscriber records its
//! latency; deliveries per second are all deliveries over the time from
//! the first send to the last delivery (the sender's start-up is not
//! counted). The two sides run one after the
//! other, each with its own key prefix on the shared Redis.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context, Result};
use clap::Args;
use rohrpost_harness::django_app::{self, DjangoApp};

use crate::{
    django,
    readers::{self, Readers, Recorder},
    report::{self, Latency, Table},
    servers::{self, Artifacts, CpuMeter, CpuUse, Server, Spec, TempDir, HOST_LOG},
    subscribers::{self, Update},
    subscribing::Subscribed,
};

/// The group both sides' subscribers join (the subscribe handlers of the
/// subscriptions plugin and of the Django app both name it so).
const GROUP: &str = "collection-1";

/// How long the deliveries may go on: they end when all have come, when
/// none came for [`STALL_TIMEOUT`], or after this.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(600);

/// How long without any delivery ends the wait for the rest.
const STALL_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Args)]
pub struct ChannelsArgs {
    /// Subscribers on each side.
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,

    /// Messages Django sends to the group on each side.
    #[arg(long, default_value_t = 100)]
    pub messages: u64,

    /// The Redis both sides use (their keys apart by prefix).
    #[arg(long, default_value = "redis://127.0.0.1:6379/0")]
    pub redis: String,

    /// How long (seconds) Django's Redis client may wait for a reply;
    /// 0 leaves redis-py's default (5 s since redis-py 8), with which
    /// daphne's idle consumers fail (see `REDIS_SOCKET_TIMEOUT_S`).
    #[arg(long, default_value_t = django_app::REDIS_SOCKET_TIMEOUT_S)]
    pub django_socket_timeout: u32,
}

/// One subscriber's deliveries.
struct Deliveries {
    start: Instant,
    latencies_us: Vec<u32>,
    /// The earliest send it saw (microseconds after `start`) and its
    /// last delivery.
    first_sent_us: Option<u64>,
    last: Option<Instant>,
    received: Arc<AtomicU64>,
}

impl Recorder for Deliveries {
    fn record(&mut self, update: Update, at: Instant) {
        let Some(sent_us) = update.sent_us else {
            return;
        };
        let now_us = at.saturating_duration_since(self.start).as_micros();
        let latency = now_us.saturating_sub(u128::from(sent_us));
        self.latencies_us
            .push(u32::try_from(latency).unwrap_or(u32::MAX));
        self.first_sent_us = Some(self.first_sent_us.map_or(sent_us, |f| f.min(sent_us)));
        self.last = Some(at);
        self.received.fetch_add(1, Ordering::Relaxed);
    }
}

/// What one side measured.
struct Side {
    name: String,
    /// Connections that subscribed, of those opened.
    subscribed: usize,
    wanted: usize,
    deliveries: u64,
    expected: u64,
    elapsed: Duration,
    latency: Latency,
    cpu: CpuUse,
}

pub async fn run(artifacts: &Artifacts, args: &ChannelsArgs, open_files: u64) -> Result<Table> {
    servers::check_open_files(args.subscribers, "--subscribers", open_files)?;
    let run_id = std::process::id();
    let work = TempDir::new("channels-bench")?;

    let host_prefix = format!("rohrpost-bench-host-{run_id}");
    let redis = django_app::with_socket_timeout(&args.redis, args.django_socket_timeout);
    let django = app(&redis, &host_prefix, &work)?;
    let config = work.path().join("rohrpost.toml");
    std::fs::write(
        &config,
        "[plugins.subscriptions]\nauth = \"off\"\nisolation = \"none\"\n",
    )?;
    let config = config.display().to_string();
    let groups = format!(
        "channels_redis://{}",
        args.redis.trim_start_matches("redis://")
    );
    let libraries = [artifacts.subscriptions_lib.as_path()];
    let host_args = [
        "--config",
        config.as_str(),
        "--groups",
        groups.as_str(),
        "--groups-prefix",
        host_prefix.as_str(),
    ];
    let mut host = Server::start(
        "host, channels_redis",
        artifacts,
        Spec::Host {
            libraries: &libraries,
            log: HOST_LOG,
            args: &host_args,
        },
        None,
    )?;
    let subscribed =
        subscribers::subscribe("channels", &host.url(), &host.name, args.subscribers).await?;
    let host_side = measure(
        "host (channels_redis core layer)",
        &django,
        subscribed,
        host.pid(),
        args,
    )
    .await?;
    host.check_running()?;
    host.stop()?;

    let daphne_prefix = format!("rohrpost-bench-daphne-{run_id}");
    let django = app(&redis, &daphne_prefix, &work)?;
    let port = servers::free_port()?;
    let daphne_log = work.path().join("daphne.log");
    let mut daphne = django::daphne(&django, port, &daphne_log)?;
    let url = format!("ws://127.0.0.1:{port}/ws/rohrpost/");
    let subscribed = subscribers::subscribe("channels", &url, "daphne", args.subscribers).await?;
    let daphne_side = measure("daphne + rohrpost", &django, subscribed, daphne.pid(), args).await?;
    if let Some(status) = daphne.0.try_wait()? {
        bail!("daphne exited during the measurement: {status}");
    }
    drop(daphne);
    django::report_log("daphne", &daphne_log);

    Ok(table(args, &[host_side, daphne_side]))
}

/// Sends the messages through Django and waits for every delivery to the
/// connections that subscribed (those that did not are reported, and
/// counted in the table).
async fn measure(
    name: &str,
    django: &DjangoApp,
    subscribed: Subscribed,
    server_pid: u32,
    args: &ChannelsArgs,
) -> Result<Side> {
    subscribed.report("channels", name);
    let sockets = subscribed.sockets;
    let count = sockets.len();
    let received = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let start_unix_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the clock")?
        .as_micros();
    let readers = Readers::start(sockets, || Deliveries {
        start,
        latencies_us: Vec::new(),
        first_sent_us: None,
        last: None,
        received: received.clone(),
    })?;
    let expected = args.messages * count as u64;
    let mut sender = django::Sender::start(django, GROUP, args.messages, start_unix_us).await?;
    eprintln!(
        "channels: {name}: Django sends {} messages to {count} subscribers",
        args.messages
    );
    // From the sender's go, so that its start-up is not the server's.
    let meter = CpuMeter::of_pid(server_pid)?;
    sender.go().await?;
    wait_for_deliveries(name, &received, expected).await;
    let cpu = meter.stop()?;
    sender.finish().await?;
    let endings = readers.finish().await?;
    readers::report_endings("channels", &endings);
    let last = endings.iter().filter_map(|e| e.recorder.last).max();
    // From the first send (not the sender's start-up) to the last delivery.
    let first_sent = endings
        .iter()
        .filter_map(|e| e.recorder.first_sent_us)
        .min()
        .map(|us| start + Duration::from_micros(us));
    let mut latencies: Vec<u32> = endings
        .into_iter()
        .flat_map(|e| e.recorder.latencies_us)
        .collect();
    latencies.sort_unstable();
    Ok(Side {
        name: name.to_owned(),
        subscribed: count,
        wanted: args.subscribers,
        deliveries: latencies.len() as u64,
        expected,
        elapsed: match (first_sent, last) {
            (Some(first), Some(last)) => last.saturating_duration_since(first),
            _ => Duration::ZERO,
        },
        latency: Latency::of_sorted(&latencies),
        cpu,
    })
}

/// Waits until `expected` deliveries came, none came for
/// [`STALL_TIMEOUT`], or [`DRAIN_TIMEOUT`] passed.
async fn wait_for_deliveries(name: &str, received: &AtomicU64, expected: u64) {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    let mut seen = 0;
    let mut last_change = Instant::now();
    loop {
        let now_received = received.load(Ordering::Relaxed);
        if now_received >= expected {
            return;
        }
        let now = Instant::now();
        if now_received != seen {
            seen = now_received;
            last_change = now;
        }
        if now.duration_since(last_change) >= STALL_TIMEOUT {
            eprintln!(
                "channels: {name}: no delivery for {STALL_TIMEOUT:?}; {seen} of {expected} came"
            );
            return;
        }
        if now >= deadline {
            eprintln!("channels: {name}: {seen} of {expected} came within {DRAIN_TIMEOUT:?}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn table(args: &ChannelsArgs, sides: &[Side]) -> Table {
    let mut table = Table::new(
        &format!(
            "Django group_send of {} messages to {} subscribers (channels_redis core layer)",
            args.messages, args.subscribers
        ),
        &[
            "server",
            "subscribed",
            "delivered",
            "deliveries/s",
            "p50",
            "p99",
            "server CPU per delivery",
        ],
    );
    let rate = |s: &Side| s.deliveries as f64 / s.elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
    for side in sides {
        table.row(vec![
            side.name.clone(),
            format!(
                "{} of {}",
                report::count(side.subscribed as u64),
                report::count(side.wanted as u64)
            ),
            format!(
                "{} of {}",
                report::count(side.deliveries),
                report::count(side.expected)
            ),
            report::count(rate(side) as u64),
            report::micros(side.latency.p50),
            report::micros(side.latency.p99),
            format!(
                "{:.2} µs",
                report::micros_per(side.cpu.server, side.deliveries)
            ),
        ]);
    }
    if let [host, daphne] = sides {
        table.row(vec![
            "host / daphne".to_owned(),
            String::new(),
            String::new(),
            ratio(rate(host), rate(daphne)),
            ratio(f64::from(host.latency.p50), f64::from(daphne.latency.p50)),
            ratio(f64::from(host.latency.p99), f64::from(daphne.latency.p99)),
            ratio(
                report::micros_per(host.cpu.server, host.deliveries),
                report::micros_per(daphne.cpu.server, daphne.deliveries),
            ),
        ]);
    }
    table
}

/// `a / b` to three significant digits ("477×", "0.00155×"): the sides
/// differ by more than the two decimals of [`report::ratio`] show.
fn ratio(a: f64, b: f64) -> String {
    if b == 0.0 || !(a / b).is_finite() {
        return "–".to_owned();
    }
    let r = a / b;
    if r == 0.0 || r >= 100.0 {
        return format!("{r:.0}×");
    }
    let decimals = (2.0 - r.log10().floor()).max(0.0) as usize;
    format!("{r:.decimals$}×")
}

/// The Django app on the core layer of `redis` under `prefix`, its
/// database in `work`.
pub fn app(redis: &str, prefix: &str, work: &TempDir) -> Result<DjangoApp> {
    DjangoApp::new(
        "core",
        redis,
        prefix,
        &work.path().join(format!("{prefix}.sqlite3")),
    )
    .context("the Django app (its environment: python3 -m venv, pip)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_keep_three_digits() {
        assert_eq!(ratio(477.4, 1.0), "477×");
        assert_eq!(ratio(75.53, 1.0), "75.5×");
        assert_eq!(ratio(5.084, 1.0), "5.08×");
        assert_eq!(ratio(0.0292, 1.0), "0.0292×");
        assert_eq!(ratio(48.5, 31324.0), "0.00155×");
        assert_eq!(ratio(1.0, 0.0), "–");
    }
}
