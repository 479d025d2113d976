//! Fan-out of one change notification: N connections subscribed to the same
//! collection, K notifications posted to `POST /api/notify` one after
//! another. For each: how long until the first and the last subscriber had
//! it, and how long the HTTP call took to answer.

use std::{
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use clap::Args;
use tokio::sync::Notify;

use crate::{
    client::Socket,
    readers::{self, Readers, Recorder},
    report::{self, Table},
    servers::{self, Artifacts, CpuMeter, CpuUse, Server, Spec},
    subscribers::{self, Notifier, Update},
};

/// How long a notification may take to reach every subscriber before the
/// rest count as missing.
const ROUND_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Args)]
pub struct FanoutArgs {
    /// Connections subscribed to the one collection.
    #[arg(long, default_value_t = 10_000)]
    pub subscribers: usize,

    /// Notifications sent, one after another.
    #[arg(long, default_value_t = 100)]
    pub notifications: u64,

    /// Hosts sharing the subscribers (evenly); more than one needs `--redis`.
    #[arg(long, default_value_t = 1)]
    pub hosts: usize,

    /// Redis URL for the hosts' groups (`--groups`); without it, groups
    /// stay in memory. Notifications are posted to the first host.
    #[arg(long)]
    pub redis: Option<String>,

    /// Rounds, each starting the floor and then the host(s) afresh: the
    /// servers alternate, so that a disturbance of the machine falls on
    /// both.
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,

    /// Measures permessage-deflate instead of the floor: in every round
    /// the host twice, its subscribers offering no compression and then
    /// offering permessage-deflate, as browsers do.
    #[arg(long)]
    pub compression: bool,

    /// The notification's object padded to about this many bytes of JSON
    /// (a list of items, as a change notification carries); 0: a bare
    /// `{"id":1,"seq":N}`.
    #[arg(long, default_value_t = 0)]
    pub object_bytes: usize,

    /// Compares Redis setups instead of the floor: `--hosts` hosts (at
    /// least two) share the subscribers over one `redis-server` and over a
    /// Redis Cluster of three masters (sharded pub/sub), both started by
    /// the bench on free ports, alternating in every round.
    #[arg(long, conflicts_with_all = ["redis", "compression"])]
    pub versus_cluster: bool,
}

/// The arrivals of every notification, shared by all subscribers, so that
/// the one who completes a notification wakes the coordinator, not each.
struct Tally {
    /// The origin of the arrival times.
    origin: Instant,
    subscribers: usize,
    /// By sequence number (index 0 unused).
    rounds: Vec<Arrivals>,
    complete: Notify,
}

/// One notification's arrivals, in microseconds since the origin.
struct Arrivals {
    count: AtomicUsize,
    first_us: AtomicU64,
    last_us: AtomicU64,
}

impl Recorder for Arc<Tally> {
    fn record(&mut self, update: Update, at: Instant) {
        let Some(round) = usize::try_from(update.seq)
            .ok()
            .and_then(|seq| self.rounds.get(seq))
        else {
            return;
        };
        let us = micros(at.saturating_duration_since(self.origin)).into();
        round.first_us.fetch_min(us, Ordering::Relaxed);
        round.last_us.fetch_max(us, Ordering::Relaxed);
        if round.count.fetch_add(1, Ordering::AcqRel) + 1 == self.subscribers {
            self.complete.notify_one();
        }
    }
}

/// One notification's result.
struct Round {
    /// Subscribers that had it within [`ROUND_TIMEOUT`].
    arrived: usize,
    first: Option<Duration>,
    /// Only when every subscriber had it.
    last: Option<Duration>,
    answer: Duration,
}

/// Fails when the open files limit is too low for the subscribers.
pub fn check_open_files(args: &FanoutArgs, open_files: u64) -> Result<()> {
    servers::check_open_files(args.subscribers, "--subscribers", open_files)
}

pub async fn run(artifacts: &Artifacts, args: &FanoutArgs, open_files: u64) -> Result<Table> {
    check_open_files(args, open_files)?;
    if args.hosts == 0 || (args.hosts > 1 && args.redis.is_none() && !args.versus_cluster) {
        anyhow::bail!(
            "--hosts {} needs --redis URL (and at least one host)",
            args.hosts
        );
    }
    if args.compression {
        return compression(artifacts, args).await;
    }
    if args.versus_cluster {
        return versus_cluster(artifacts, args).await;
    }
    let mut floor: Option<Measured> = None;
    let mut hosts: Option<Measured> = None;
    for round in 1..=args.rounds.max(1) {
        eprintln!("fanout: round {round} of {}", args.rounds.max(1));
        // The floor, for the ratio: with groups in memory on one host, the
        // same subscribers and notifications through `baseline-fanout`.
        if args.hosts == 1 && args.redis.is_none() {
            let server = Server::start("baseline-fanout", artifacts, Spec::FanoutBaseline, None)?;
            let sockets =
                subscribers::connect_subscribed("fanout", &server, args.subscribers, false).await?;
            let result = measure(args, vec![server], sockets, &[]).await?;
            floor = Some(Measured::merged(floor, result));
        }
        let result = measure_hosts(artifacts, args, false).await?;
        hosts = Some(Measured::merged(hosts, result));
    }
    let mut measured = Vec::new();
    if let Some(floor) = floor {
        measured.push(("baseline-fanout (floor)", floor));
    }
    measured.extend(hosts.map(|hosts| ("host", hosts)));
    Ok(table(args, &measured))
}

/// One round on fresh hosts, their subscribers offering compression when
/// `deflate`.
async fn measure_hosts(
    artifacts: &Artifacts,
    args: &FanoutArgs,
    deflate: bool,
) -> Result<Measured> {
    measure_hosts_with(artifacts, args, deflate, &[]).await
}

/// [`measure_hosts`], metering the processes `brokers` (Redis) as well.
async fn measure_hosts_with(
    artifacts: &Artifacts,
    args: &FanoutArgs,
    deflate: bool,
    brokers: &[u32],
) -> Result<Measured> {
    let (servers, sockets) = subscribers::start_hosts(
        artifacts,
        "fanout",
        args.subscribers,
        args.hosts,
        args.redis.as_deref(),
        deflate,
    )
    .await?;
    measure(args, servers, sockets, brokers).await
}

/// Two or more hosts over one Redis and over a 3-master Redis Cluster, the
/// bench's own, alternating in every round.
async fn versus_cluster(artifacts: &Artifacts, args: &FanoutArgs) -> Result<Table> {
    use rohrpost_harness::redis_servers::{RedisCluster, RedisServer};
    let hosts = args.hosts.max(2);
    eprintln!("fanout: starting one redis-server and a Redis Cluster of 3 masters");
    let server = RedisServer::start()?;
    let cluster = RedisCluster::start(3)?;
    let setups = [
        (
            "one Redis",
            format!("redis://{}/0", server.addr()),
            server.pid().into_iter().collect::<Vec<_>>(),
        ),
        ("3-master Redis Cluster", cluster.url(), cluster.pids()),
    ];
    let mut measured: Vec<Option<Measured>> = vec![None, None];
    for round in 1..=args.rounds.max(1) {
        for ((name, url, pids), slot) in setups.iter().zip(measured.iter_mut()) {
            eprintln!(
                "fanout: round {round} of {}, {hosts} hosts over {name}",
                args.rounds.max(1)
            );
            let run = FanoutArgs {
                hosts,
                redis: Some(url.clone()),
                versus_cluster: false,
                ..args.clone()
            };
            let result = measure_hosts_with(artifacts, &run, false, pids).await?;
            *slot = Some(Measured::merged(slot.take(), result));
        }
    }
    let mut rows = Vec::new();
    for ((name, _, _), m) in setups.iter().zip(measured) {
        rows.push((*name, m.context("no round measured")?));
    }
    Ok(versus_table(args, hosts, &rows))
}

/// The table of Redis setups: latency, deliveries per second of the
/// notifications' time, and CPU per delivery of the hosts and of Redis.
fn versus_table(args: &FanoutArgs, hosts: usize, measured: &[(&str, Measured)]) -> Table {
    let rounds = args.rounds.max(1) as u64;
    let expected = args.subscribers as u64 * args.notifications * rounds;
    let mut table = Table::new(
        &format!(
            "fanout over Redis: {} subscribers of one collection split over {hosts} hosts, \
             {} notifications one after another to the first, {rounds} alternating round(s) \
             (times from the start of the HTTP call)",
            args.subscribers, args.notifications
        ),
        &[
            "groups through",
            "received / expected",
            "last delivery p50",
            "last delivery p99",
            "first delivery p50",
            "deliveries / s",
            "CPU per delivery: hosts / Redis / bench",
        ],
    );
    for (name, m) in measured {
        let arrived: u64 = m.rounds.iter().map(|r| r.arrived as u64).sum();
        let last = sorted(m.rounds.iter().filter_map(|r| r.last));
        let first = sorted(m.rounds.iter().filter_map(|r| r.first));
        let time = |sorted: &[u32], q: f64| {
            if sorted.is_empty() {
                "–".to_owned()
            } else {
                report::micros(report::percentile(sorted, q))
            }
        };
        let busy: Duration = m.rounds.iter().filter_map(|r| r.last).sum();
        let per_second = if busy.is_zero() {
            "–".to_owned()
        } else {
            report::count((arrived as f64 / busy.as_secs_f64()) as u64)
        };
        table.row(vec![
            (*name).to_owned(),
            format!("{} / {}", report::count(arrived), report::count(expected)),
            time(&last, 0.5),
            time(&last, 0.99),
            time(&first, 0.5),
            per_second,
            format!(
                "{:.2} µs / {:.2} µs / {:.2} µs",
                report::micros_per(m.cpu.server, arrived),
                report::micros_per(m.broker, arrived),
                report::micros_per(m.cpu.own, arrived)
            ),
        ]);
    }
    table
}

/// The host with compression off and on, alternating in every round.
async fn compression(artifacts: &Artifacts, args: &FanoutArgs) -> Result<Table> {
    let mut off: Option<Measured> = None;
    let mut on: Option<Measured> = None;
    for round in 1..=args.rounds.max(1) {
        for deflate in [false, true] {
            eprintln!(
                "fanout: round {round} of {}, compression {}",
                args.rounds.max(1),
                if deflate { "on" } else { "off" }
            );
            let result = measure_hosts(artifacts, args, deflate).await?;
            let mode = if deflate { &mut on } else { &mut off };
            *mode = Some(Measured::merged(mode.take(), result));
        }
    }
    let off = off.context("no round measured")?;
    let on = on.context("no round measured")?;
    Ok(compression_table(args, &off, &on))
}

/// One server's (or cluster's) rounds and CPU use.
struct Measured {
    rounds: Vec<Round>,
    cpu: CpuUse,
    /// CPU time of the Redis processes metered with the hosts.
    broker: Duration,
    /// Bytes the subscribers read off their sockets.
    bytes: u64,
    /// Messages that came compressed.
    compressed: u64,
}

impl Measured {
    /// `earlier` and `later` as one measurement.
    fn merged(earlier: Option<Measured>, later: Measured) -> Measured {
        let Some(mut all) = earlier else {
            return later;
        };
        all.rounds.extend(later.rounds);
        all.cpu.server += later.cpu.server;
        all.cpu.own += later.cpu.own;
        all.cpu.wall += later.cpu.wall;
        all.broker += later.broker;
        all.bytes += later.bytes;
        all.compressed += later.compressed;
        all
    }
}

/// Posts the notifications to the first server, one after another, while
/// `sockets` (subscribed, spread over `servers`) read; then stops the
/// servers. The CPU time of `brokers` is metered over the same time.
async fn measure(
    args: &FanoutArgs,
    servers: Vec<Server>,
    sockets: Vec<Socket>,
    brokers: &[u32],
) -> Result<Measured> {
    let label = &servers.first().context("no server started")?.name;
    // Notifications go to the first server; it counts its own subscribers.
    let hosts = servers.len();
    let local = args.subscribers / hosts + usize::from(!args.subscribers.is_multiple_of(hosts));
    let tally = Arc::new(Tally {
        origin: Instant::now(),
        subscribers: args.subscribers,
        rounds: (0..=args.notifications)
            .map(|_| Arrivals {
                count: AtomicUsize::new(0),
                first_us: AtomicU64::new(u64::MAX),
                last_us: AtomicU64::new(0),
            })
            .collect(),
        complete: Notify::new(),
    });
    let readers = Readers::start(sockets, || tally.clone())?;
    let padding = padding(args.object_bytes);
    let mut notifier = Notifier::connect(servers.first().context("no server started")?).await?;
    eprintln!(
        "fanout: {} notifications to {} subscribers of {label}",
        args.notifications, args.subscribers
    );

    let meters = servers
        .iter()
        .map(CpuMeter::start)
        .collect::<Result<Vec<_>, _>>()?;
    let broker_meters = brokers
        .iter()
        .map(|&pid| CpuMeter::of_pid(pid))
        .collect::<Result<Vec<_>, _>>()?;
    let mut rounds = Vec::new();
    for seq in 1..=args.notifications {
        let round = notify(&mut notifier, &tally, seq, local, &padding).await?;
        if seq == 1 {
            eprintln!(
                "fanout: first notification: answer after {}, last delivery after {}",
                report::micros(micros(round.answer)),
                round
                    .last
                    .map_or("–".to_owned(), |d| report::micros(micros(d)))
            );
        }
        rounds.push(round);
    }
    let mut cpu: Option<CpuUse> = None;
    for meter in meters {
        let used = meter.stop()?;
        cpu = Some(match cpu {
            None => used,
            Some(sum) => CpuUse {
                server: sum.server + used.server,
                ..sum
            },
        });
    }
    let cpu = cpu.context("no server measured")?;
    let mut broker = Duration::ZERO;
    for meter in broker_meters {
        broker += meter.stop()?.server;
    }
    let endings = readers.finish().await?;
    readers::report_endings("fanout", &endings);
    let bytes = endings.iter().map(|e| e.bytes).sum();
    let compressed = endings.iter().map(|e| e.compressed).sum();
    let arrived: usize = rounds.iter().map(|r| r.arrived).sum();
    let late = tally
        .rounds
        .iter()
        .map(|r| r.count.load(Ordering::Acquire))
        .sum::<usize>()
        .saturating_sub(arrived);
    if late > 0 {
        eprintln!("fanout: {late} deliveries arrived after their round had timed out");
    }
    for mut server in servers {
        server.check_running()?;
        server.stop()?;
    }
    Ok(Measured {
        rounds,
        cpu,
        broker,
        bytes,
        compressed,
    })
}

/// What follows `"seq":N` in a notification's object for it to be about
/// `bytes` long: items of a list, as a change notification of a list
/// carries (repetitive JSON, as real ones are); empty for 0.
fn padding(bytes: usize) -> String {
    if bytes == 0 {
        return String::new();
    }
    let mut padding = r#","name":"shopping list","items":["#.to_owned();
    let mut n = 0;
    // `{"id":1,"seq":100` and the closing `]}` are about 20 bytes.
    while padding.len() + 20 < bytes {
        if n > 0 {
            padding.push(',');
        }
        padding.push_str(&format!(
            r#"{{"id":{n},"title":"item {n}","done":{},"tags":["a","b"]}}"#,
            n % 3 == 0
        ));
        n += 1;
    }
    padding.push(']');
    padding
}

/// Posts notification `seq` and waits for it to reach every subscriber
/// (or for [`ROUND_TIMEOUT`]).
async fn notify(
    notifier: &mut Notifier,
    tally: &Tally,
    seq: u64,
    local: usize,
    padding: &str,
) -> Result<Round> {
    let arrivals = usize::try_from(seq)
        .ok()
        .and_then(|index| tally.rounds.get(index))
        .context("sequence number out of range")?;
    let object = format!(r#"{{"id":1,"seq":{seq}{padding}}}"#);
    let t0 = Instant::now();
    let post = async {
        let delivered = notifier.update(&object).await;
        (delivered, t0.elapsed())
    };
    let all_in = async {
        while arrivals.count.load(Ordering::Acquire) < tally.subscribers {
            tally.complete.notified().await;
        }
    };
    let all_in = tokio::time::timeout(ROUND_TIMEOUT, all_in);
    let ((delivered, answer), _) = tokio::join!(post, all_in);
    let delivered = delivered.with_context(|| format!("notification {seq}"))?;
    if delivered != local as u64 {
        eprintln!(
            "fanout: notification {seq} was delivered to {delivered} of {local} on the first host"
        );
    }
    let arrived = arrivals.count.load(Ordering::Acquire);
    let since_t0 = |us: &AtomicU64| {
        let at = tally.origin + Duration::from_micros(us.load(Ordering::Relaxed));
        at.saturating_duration_since(t0)
    };
    Ok(Round {
        arrived,
        first: (arrived > 0).then(|| since_t0(&arrivals.first_us)),
        last: (arrived == tally.subscribers).then(|| since_t0(&arrivals.last_us)),
        answer,
    })
}

fn micros(duration: Duration) -> u32 {
    u32::try_from(duration.as_micros()).unwrap_or(u32::MAX)
}

fn sorted(times: impl Iterator<Item = Duration>) -> Vec<u32> {
    let mut values: Vec<u32> = times.map(micros).collect();
    values.sort_unstable();
    values
}

fn table(args: &FanoutArgs, measured: &[(&str, Measured)]) -> Table {
    let rounds = args.rounds.max(1) as u64;
    let expected = args.subscribers as u64 * args.notifications * rounds;
    let mut table = Table::new(
        &format!(
            "fanout: {} subscribers of one collection on {}, {} notifications one after \
             another, {rounds} alternating round(s) (times from the start of the HTTP call)",
            args.subscribers,
            match (&args.redis, args.hosts) {
                (None, _) => "one host, groups in memory".to_owned(),
                (Some(_), hosts) => format!("{hosts} host(s), groups through Redis"),
            },
            args.notifications
        ),
        &[
            "server",
            "received / expected",
            "missing",
            "last delivery p50",
            "last delivery max",
            "p50 ÷ floor",
            "first delivery p50",
            "HTTP answer p50",
            "CPU per delivery, server / bench",
        ],
    );
    let time = |sorted: &[u32], q: f64| {
        if sorted.is_empty() {
            "–".to_owned()
        } else {
            report::micros(report::percentile(sorted, q))
        }
    };
    let mut floor = None;
    for (name, Measured { rounds, cpu, .. }) in measured {
        let arrived: u64 = rounds.iter().map(|r| r.arrived as u64).sum();
        let last = sorted(rounds.iter().filter_map(|r| r.last));
        let first = sorted(rounds.iter().filter_map(|r| r.first));
        let answer = sorted(rounds.iter().map(|r| r.answer));
        let p50 = (!last.is_empty()).then(|| report::percentile(&last, 0.5));
        let ratio = match (floor, p50) {
            (Some(floor), Some(p50)) => format!("{:.2}x", f64::from(p50) / f64::from(floor)),
            _ => "–".to_owned(),
        };
        if floor.is_none() && name.contains("floor") {
            floor = p50.filter(|&p50| p50 > 0);
        }
        table.row(vec![
            (*name).to_owned(),
            format!("{} / {}", report::count(arrived), report::count(expected)),
            report::count(expected.saturating_sub(arrived)),
            time(&last, 0.5),
            time(&last, 1.0),
            ratio,
            time(&first, 0.5),
            time(&answer, 0.5),
            format!(
                "{:.1} µs / {:.1} µs",
                report::micros_per(cpu.server, arrived),
                report::micros_per(cpu.own, arrived)
            ),
        ]);
    }
    table
}

/// The compression table: the host with compression off and on, and the
/// ratios the compression work is judged by.
fn compression_table(args: &FanoutArgs, off: &Measured, on: &Measured) -> Table {
    let rounds = args.rounds.max(1) as u64;
    let expected = args.subscribers as u64 * args.notifications * rounds;
    let mut table = Table::new(
        &format!(
            "fanout, compression: {} subscribers of one collection, {} notifications of a \
             {}-byte object one after another, {rounds} round(s) of off then on",
            args.subscribers,
            args.notifications,
            r#"{"id":1,"seq":100"#.len() + padding(args.object_bytes).len() + 1,
        ),
        &[
            "compression",
            "received / expected",
            "compressed",
            "bytes read per delivery",
            "last delivery p50",
            "last delivery max",
            "server CPU per delivery",
            "bench CPU per delivery",
        ],
    );
    let last_p50 = |m: &Measured| {
        let last = sorted(m.rounds.iter().filter_map(|r| r.last));
        (!last.is_empty()).then(|| (report::percentile(&last, 0.5), last))
    };
    let arrived = |m: &Measured| m.rounds.iter().map(|r| r.arrived as u64).sum::<u64>();
    let per = |value: u64, m: &Measured| value as f64 / arrived(m).max(1) as f64;
    let cpu = |m: &Measured| report::micros_per(m.cpu.server, arrived(m));
    let ratio = |on: f64, off: f64| {
        if off > 0.0 {
            format!(" ({:.2}x)", on / off)
        } else {
            String::new()
        }
    };
    let off_p50 = last_p50(off).map(|(p50, _)| f64::from(p50));
    for (name, m) in [("off", off), ("on", on)] {
        let is_on = name == "on";
        let (p50, max) = match last_p50(m) {
            Some((p50, last)) => {
                let against = match (is_on, off_p50) {
                    (true, Some(off)) => ratio(f64::from(p50), off),
                    _ => String::new(),
                };
                (
                    format!("{}{against}", report::micros(p50)),
                    report::micros(report::percentile(&last, 1.0)),
                )
            }
            None => ("–".to_owned(), "–".to_owned()),
        };
        let bytes = per(m.bytes, m);
        let cpu_on = cpu(m);
        table.row(vec![
            name.to_owned(),
            format!(
                "{} / {}",
                report::count(arrived(m)),
                report::count(expected)
            ),
            report::count(m.compressed),
            format!(
                "{bytes:.0}{}",
                if is_on {
                    ratio(bytes, per(off.bytes, off))
                } else {
                    String::new()
                }
            ),
            p50,
            max,
            format!(
                "{cpu_on:.1} µs{}",
                if is_on {
                    ratio(cpu_on, cpu(off))
                } else {
                    String::new()
                }
            ),
            format!("{:.1} µs", report::micros_per(m.cpu.own, arrived(m))),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_objects_are_about_the_size_asked_and_parse() {
        for bytes in [0, 2000, 3000, 4000] {
            let object = format!(r#"{{"id":1,"seq":100{}}}"#, padding(bytes));
            let value: serde_json::Value = serde_json::from_str(&object).expect("JSON");
            assert_eq!(value["seq"], 100);
            if bytes > 0 {
                assert!(
                    object.len().abs_diff(bytes) < 100,
                    "{} for {bytes}",
                    object.len()
                );
            }
        }
    }
}
