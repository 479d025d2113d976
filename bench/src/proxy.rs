//! Handlers that stay in a Django backend: the same rohrpost `increment`
//! handler served through the host's proxy plugin by Django under
//! gunicorn (the `rohrpost_bridge` app), and by daphne with rohrpost's own
//! consumer, same connections, same run: what moving the sockets of a
//! Django rohrpost app to the host, before porting any handler, changes for
//! its requests.
//!
//! Closed loop, as the throughput benchmark: each connection sends an
//! `increment`, waits for its reply and sends the next. The two sides are
//! measured in alternating rounds, both started once. Each row gives the
//! CPU per reply of the socket server and of the whole stack (host +
//! gunicorn's workers; daphne alone runs everything on its side).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use humantime::parse_duration;
use rohrpost_harness::django_app;

use crate::{
    channels,
    client::{self, Request},
    django,
    load::{self, Errors, Load, PhaseStats},
    report::{self, Latency, Table},
    servers::{self, Artifacts, CpuMeter, Server, Spec, TempDir, HOST_LOG},
};

/// The secret the proxy sends and the bridge checks.
const SECRET: &str = "bench-secret";

/// How long gunicorn may take to listen.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Args)]
pub struct ProxyArgs {
    /// Concurrent connections, each with one request in flight.
    #[arg(long, default_value_t = 100)]
    pub connections: usize,

    /// How long replies are counted in each round ("10s", "500ms").
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Load before counting starts.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,

    /// Rounds over both sides, alternating; each row sums its rounds.
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,

    /// gunicorn's worker processes behind the proxy.
    #[arg(long, default_value_t = 2)]
    pub backend_workers: usize,

    /// Threads of each gunicorn worker.
    #[arg(long, default_value_t = 4)]
    pub backend_threads: usize,

    /// The Redis of the Django app's channel layer (the `increment`
    /// handler does not use it; Django's settings name one).
    #[arg(long, default_value = "redis://127.0.0.1:6379/0")]
    pub redis: String,
}

/// One side's results, summed over its rounds.
#[derive(Default)]
struct Outcome {
    replies: u64,
    measured: Duration,
    latencies_us: Vec<u32>,
    /// The socket server's CPU (the host with its plugin workers, or
    /// daphne).
    server_cpu: Duration,
    /// The backend's CPU (gunicorn and its workers; none for daphne).
    backend_cpu: Duration,
    errors: Errors,
}

impl Outcome {
    fn replies_per_s(&self) -> f64 {
        self.replies as f64 / self.measured.as_secs_f64().max(f64::MIN_POSITIVE)
    }
}

/// What a round measures CPU on: the socket server and, behind a proxy,
/// the backend.
struct Side<'a> {
    name: &'static str,
    url: String,
    server_pid: u32,
    backend_pid: Option<u32>,
    outcome: &'a mut Outcome,
}

pub async fn run(artifacts: &Artifacts, args: &ProxyArgs) -> Result<Table> {
    let run_id = std::process::id();
    let work = TempDir::new("proxy-bench")?;
    // daphne's idle consumers need it, as in the channels benchmark.
    let redis = django_app::with_socket_timeout(&args.redis, django_app::REDIS_SOCKET_TIMEOUT_S);

    let mut bridged = channels::app(&redis, &format!("rohrpost-bench-proxy-{run_id}"), &work)?;
    bridged.set_env("NOTES_BRIDGE_SECRET", SECRET);
    let backend_port = servers::free_port()?;
    let mut gunicorn =
        bridged.gunicorn(backend_port, args.backend_workers, args.backend_threads)?;
    django_app::wait_listening(backend_port, &mut gunicorn, "gunicorn", LISTEN_TIMEOUT)?;

    let config = work.path().join("rohrpost.toml");
    std::fs::write(
        &config,
        format!(
            "[plugins.proxy]\n\
             isolation = \"none\"\n\
             url = \"http://127.0.0.1:{backend_port}/rohrpost/\"\n\
             types = [\"increment\"]\n\
             headers = {{ X-Rohrpost-Secret = \"{SECRET}\" }}\n"
        ),
    )
    .with_context(|| format!("cannot write {}", config.display()))?;
    let config = config.display().to_string();
    let libraries = [artifacts.proxy_lib.as_path()];
    let host_args = ["--config", config.as_str()];
    let mut host = Server::start(
        "host + proxy",
        artifacts,
        Spec::Host {
            libraries: &libraries,
            log: HOST_LOG,
            args: &host_args,
        },
        None,
    )?;

    let direct = channels::app(&redis, &format!("rohrpost-bench-daphne-{run_id}"), &work)?;
    let daphne_port = servers::free_port()?;
    let daphne_log = work.path().join("daphne.log");
    let daphne = django::daphne(&direct, daphne_port, &daphne_log)?;

    let mut proxied = Outcome::default();
    let mut on_daphne = Outcome::default();
    let proxied_name = "host + proxy → Django (gunicorn)";
    let daphne_name = "daphne + rohrpost";
    for round in 1..=args.rounds.max(1) {
        for side in [
            Side {
                name: proxied_name,
                url: host.url(),
                server_pid: host.pid(),
                backend_pid: Some(gunicorn.pid()),
                outcome: &mut proxied,
            },
            Side {
                name: daphne_name,
                url: format!("ws://127.0.0.1:{daphne_port}/ws/rohrpost/"),
                server_pid: daphne.pid(),
                backend_pid: None,
                outcome: &mut on_daphne,
            },
        ] {
            eprintln!("proxy: round {round}: {}", side.name);
            measure(side, args).await?;
        }
    }
    host.check_running()?;
    host.stop()?;
    drop(gunicorn);
    drop(daphne);
    django::report_log("daphne", &daphne_log);

    Ok(table(
        args,
        &[(proxied_name, proxied), (daphne_name, on_daphne)],
    ))
}

/// One round of one side.
async fn measure(side: Side<'_>, args: &ProxyArgs) -> Result<()> {
    let sockets = client::connect_many(&side.url, args.connections).await?;
    let load = Load::start(sockets, Request::Increment, 2);
    tokio::time::sleep(args.warmup).await;
    load.set_phase(1);
    let server = CpuMeter::of_pid(side.server_pid)?;
    let backend = side.backend_pid.map(CpuMeter::of_pid).transpose()?;
    let started = Instant::now();
    tokio::time::sleep(args.duration).await;
    let server_cpu = server.stop()?;
    let backend_cpu = backend.map(|m| m.stop()).transpose()?;
    let wall = started.elapsed();
    let phases = load.finish().await?;
    let errors = load::all_errors(&phases);
    let measured: PhaseStats = phases
        .into_iter()
        .nth(1)
        .context("the load has no measured phase")?;
    eprintln!(
        "proxy: {}: {:.0} replies/s, errors {}",
        side.name,
        measured.replies as f64 / wall.as_secs_f64(),
        errors.describe()
    );
    let outcome = side.outcome;
    outcome.replies += measured.replies;
    outcome.measured += wall;
    outcome.latencies_us.extend(measured.latencies_us);
    outcome.server_cpu += server_cpu.server;
    outcome.backend_cpu += backend_cpu.map(|c| c.server).unwrap_or_default();
    outcome.errors.add(&errors);
    Ok(())
}

fn table(args: &ProxyArgs, sides: &[(&str, Outcome)]) -> Table {
    let mut table = Table::new(
        &format!(
            "a Python `increment` handler: {} connections, closed loop, {} rounds of {:?} after {:?} warm-up, gunicorn with {} workers of {} threads",
            args.connections,
            args.rounds.max(1),
            args.duration,
            args.warmup,
            args.backend_workers,
            args.backend_threads
        ),
        &[
            "server",
            "replies/s",
            "p50",
            "p99",
            "socket server CPU per reply",
            "whole stack CPU per reply",
            "errors",
        ],
    );
    let mut latencies = Vec::new();
    for (name, outcome) in sides {
        let mut sorted = outcome.latencies_us.clone();
        sorted.sort_unstable();
        let latency = Latency::of_sorted(&sorted);
        table.row(vec![
            (*name).to_owned(),
            report::count(outcome.replies_per_s().round() as u64),
            report::micros(latency.p50),
            report::micros(latency.p99),
            format!(
                "{:.1} µs",
                report::micros_per(outcome.server_cpu, outcome.replies)
            ),
            format!(
                "{:.1} µs",
                report::micros_per(outcome.server_cpu + outcome.backend_cpu, outcome.replies)
            ),
            outcome.errors.describe(),
        ]);
        latencies.push(latency);
    }
    if let ([(_, proxied), (_, daphne)], [proxied_latency, daphne_latency]) =
        (sides, latencies.as_slice())
    {
        table.row(vec![
            "proxy / daphne".to_owned(),
            report::ratio(proxied.replies_per_s(), daphne.replies_per_s()),
            report::ratio(
                f64::from(proxied_latency.p50),
                f64::from(daphne_latency.p50),
            ),
            report::ratio(
                f64::from(proxied_latency.p99),
                f64::from(daphne_latency.p99),
            ),
            report::ratio(
                report::micros_per(proxied.server_cpu, proxied.replies),
                report::micros_per(daphne.server_cpu, daphne.replies),
            ),
            report::ratio(
                report::micros_per(proxied.server_cpu + proxied.backend_cpu, proxied.replies),
                report::micros_per(daphne.server_cpu, daphne.replies),
            ),
            String::new(),
        ]);
    }
    table
}
