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

use anyhow::{Context, Result};
use clap::Args;
use rohrpost_harness::django_app::{self, DjangoApp};

use crate::{
    client,
    readers::{self, Readers, Recorder},
    report::{self, Latency, Table},
    servers::{self, Artifacts, CpuMeter, CpuUse, Server, Spec, TempDir, HOST_LOG},
    subscribers::{self, Update},
};

/// The group both sides' subscribers join (the subscribe handlers of the
/// subscriptions plugin and of the Django app both name it so).
const GROUP: &str = "collection-1";

/// How long daphne may take to listen.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(30);

/// How long deliveries may trail the last send.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);

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
    let django = app(&args.redis, &host_prefix, &work)?;
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
    let sockets = subscribers::connect_subscribed("channels", &host, args.subscribers).await?;
    let host_side = measure(
        "host (channels_redis core layer)",
        &django,
        sockets,
        CpuMeter::start(&host)?,
        args,
    )
    .await?;
    host.check_running()?;
    host.stop()?;

    let daphne_prefix = format!("rohrpost-bench-daphne-{run_id}");
    let django = app(&args.redis, &daphne_prefix, &work)?;
    let port = servers::free_port()?;
    let mut daphne = django.daphne(port)?;
    let url = format!("ws://127.0.0.1:{port}/ws/rohrpost/");
    django_app::wait_listening(port, &mut daphne, "daphne", LISTEN_TIMEOUT)?;
    let sockets =
        subscribers::connect_subscribed_url("channels", &url, "daphne", args.subscribers).await?;
    let meter = CpuMeter::of_pid(daphne.pid())?;
    let daphne_side = measure("daphne + rohrpost", &django, sockets, meter, args).await?;
    drop(daphne);

    Ok(table(args, &[host_side, daphne_side]))
}

/// Sends the messages through Django and waits for every delivery.
async fn measure(
    name: &str,
    django: &DjangoApp,
    sockets: Vec<client::Socket>,
    meter: CpuMeter,
    args: &ChannelsArgs,
) -> Result<Side> {
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
    let expected = args.messages * args.subscribers as u64;
    eprintln!(
        "channels: {name}: Django sends {} messages to {} subscribers",
        args.messages, args.subscribers
    );
    django.manage(&[
        "bench_send",
        GROUP,
        &args.messages.to_string(),
        &start_unix_us.to_string(),
    ])?;
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while received.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cpu = meter.stop()?;
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

fn table(args: &ChannelsArgs, sides: &[Side]) -> Table {
    let mut table = Table::new(
        &format!(
            "Django group_send of {} messages to {} subscribers (channels_redis core layer)",
            args.messages, args.subscribers
        ),
        &[
            "server",
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
            report::ratio(rate(host), rate(daphne)),
            report::ratio(f64::from(host.latency.p50), f64::from(daphne.latency.p50)),
            report::ratio(f64::from(host.latency.p99), f64::from(daphne.latency.p99)),
            report::ratio(
                report::micros_per(host.cpu.server, host.deliveries),
                report::micros_per(daphne.cpu.server, daphne.deliveries),
            ),
        ]);
    }
    table
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
