//! Throughput and latency under closed-loop load: the baseline, the host
//! with an inline handler (ping), the same after one client sent a single
//! ~960 KB ping (which must not move ping off its inline path for everyone),
//! and the host with a handler on its worker pool (the testkit's `sleep`
//! with 0 ms), each on a freshly started server.

use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Args;
use rohrpost_host::config::parse_duration;

use crate::{
    client::{self, Request},
    load::{self, Errors, Load},
    report::{self, Latency, Table},
    servers::{Artifacts, Server, Spec, HOST_LOG},
};

/// Bytes of data in the one large ping (under the default 1 MiB limit).
const HUGE_PING: usize = 960 * 1024;

#[derive(Debug, Clone, Args)]
pub struct ThroughputArgs {
    /// Concurrent connections, each with one request in flight.
    #[arg(long, default_value_t = 100)]
    pub connections: usize,

    /// How long replies are counted ("10s", "500ms").
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Load before counting starts.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
}

/// One server's result.
struct Outcome {
    name: &'static str,
    replies_per_s: f64,
    latency: Latency,
    errors: Errors,
}

pub async fn run(artifacts: &Artifacts, args: &ThroughputArgs) -> Result<Table> {
    let ping = [artifacts.ping_lib.as_path()];
    let pool = [artifacts.pool_lib.as_path()];
    let host_ping = Spec::Host {
        libraries: &ping,
        log: HOST_LOG,
        args: &[],
    };
    let cases: [(&'static str, Spec<'_>, Request, bool); 4] = [
        ("baseline", Spec::Baseline, Request::Ping, false),
        ("host, ping (inline)", host_ping, Request::Ping, false),
        (
            "host, ping after one 960 KB ping",
            host_ping,
            Request::Ping,
            true,
        ),
        (
            "host, sleep 0 ms (pool)",
            Spec::Host {
                libraries: &pool,
                log: HOST_LOG,
                args: &[],
            },
            Request::PooledSleep,
            false,
        ),
    ];
    let mut outcomes = Vec::new();
    for (name, spec, request, huge_first) in cases {
        outcomes.push(measure(artifacts, name, spec, request, huge_first, args).await?);
    }

    let mut table = Table::new(
        &format!(
            "throughput: {} connections, closed loop, {:?} after {:?} warm-up",
            args.connections, args.duration, args.warmup
        ),
        &[
            "server",
            "replies/s",
            "p50",
            "p99",
            "p999",
            "replies/s vs baseline",
            "p99 vs baseline",
            "errors",
        ],
    );
    let base = &outcomes[0];
    for outcome in &outcomes {
        table.row(vec![
            outcome.name.to_owned(),
            report::count(outcome.replies_per_s.round() as u64),
            report::micros(outcome.latency.p50),
            report::micros(outcome.latency.p99),
            report::micros(outcome.latency.p999),
            report::ratio(outcome.replies_per_s, base.replies_per_s),
            report::ratio(f64::from(outcome.latency.p99), f64::from(base.latency.p99)),
            outcome.errors.describe(),
        ]);
    }
    Ok(table)
}

async fn measure(
    artifacts: &Artifacts,
    name: &'static str,
    spec: Spec<'_>,
    request: Request,
    huge_first: bool,
    args: &ThroughputArgs,
) -> Result<Outcome> {
    eprintln!("throughput: {name}: starting the server");
    let mut server = Server::start(name, artifacts, spec, None)?;
    if huge_first {
        // One client, one large request, answered before the load starts.
        let mut socket = client::connect(&server.url()).await?;
        let frame = format!(
            r#"{{"id":0,"type":"ping","data":"{}"}}"#,
            "x".repeat(HUGE_PING)
        );
        client::request(&mut socket, frame).await?;
        client::close(socket).await;
    }
    let sockets = client::connect_many(&server.url(), args.connections).await?;
    eprintln!(
        "throughput: {name}: {} connections; warming up for {:?}",
        sockets.len(),
        args.warmup
    );
    let load = Load::start(sockets, request, 2);
    tokio::time::sleep(args.warmup).await;
    load.set_phase(1);
    let started = Instant::now();
    tokio::time::sleep(args.duration).await;
    let elapsed = started.elapsed();
    let phases = load.finish().await?;
    server.check_running()?;
    server.stop()?;

    let measured = &phases[1];
    let outcome = Outcome {
        name,
        replies_per_s: measured.replies as f64 / elapsed.as_secs_f64(),
        latency: Latency::of_sorted(&measured.sorted_latencies()),
        errors: load::all_errors(&phases),
    };
    eprintln!(
        "throughput: {name}: {:.0} replies/s, p99 {}",
        outcome.replies_per_s,
        report::micros(outcome.latency.p99)
    );
    Ok(outcome)
}
