//! Throughput and latency under closed-loop load: the yardstick
//! (`bench/yardstick`: axum + serde_json with default features, fat LTO,
//! the least work a correct ping server does; every ratio is against it),
//! the bench's older minimal server and baseline, the host
//! with an inline handler (ping), the same after one client sent a single
//! ~960 KB ping (which must not move ping off its inline path for everyone),
//! and the host with a handler on its worker pool (the testkit's `sleep`
//! with 0 ms), each on a freshly started server.
//!
//! A load generator that saturates makes every server look alike, so each
//! row also reports what does not depend on the generator's speed: the
//! server's CPU time per reply (utime + stime over the measured window,
//! divided by the replies). The generator runs on its own runtime with
//! `--generator-threads` workers (one by default) and its own CPU is shown
//! too, marked when it kept its threads busy (it was the bottleneck). The
//! servers run with the same `--workers`, and the cases alternate over
//! `--rounds` rounds, so that a slow moment of the machine hits them all.
//!
//! The ratios to the yardstick are taken round by round and the table
//! shows their median and range: the machine's speed drifts by 10% and
//! more over a run, which a ratio of sums would take for a difference
//! between servers. The yardstick runs first in each round and once more
//! after the last, and each case is compared with the yardstick as it was
//! when the case ran, between its runs before and after ([`Yardstick`]);
//! the two cases the targets judge run right after it, and a light
//! in-process case right before it (the case before the yardstick moved
//! its CPU per reply by 6%). Replies/s,
//! latencies and CPU per reply are over all rounds.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use humantime::parse_duration;

use crate::{
    client::{self, Request},
    load::{self, Errors, Load, PhaseStats},
    report::{self, Latency, Table},
    servers::{Artifacts, CpuMeter, CpuUse, Server, Spec, TempDir, HOST_LOG},
};

/// Bytes of data in the one large ping (under the default 1 MiB limit).
const HUGE_PING: usize = 960 * 1024;

/// A generator busier than this share of its threads was the bottleneck.
const SATURATED: f64 = 0.9;

#[derive(Debug, Clone, Args)]
pub struct ThroughputArgs {
    /// Concurrent connections, each with one request in flight.
    #[arg(long, default_value_t = 100)]
    pub connections: usize,

    /// How long replies are counted in each round ("10s", "500ms").
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Load before counting starts.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,

    /// Worker threads of every server's runtime (default: one per core).
    #[arg(long)]
    pub workers: Option<usize>,

    /// Threads of the load generator.
    #[arg(long, default_value_t = 1)]
    pub generator_threads: usize,

    /// Rounds over all servers, alternating; each row sums its rounds,
    /// and its ratios are the median of the rounds' ratios.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,

    /// Run only the cases whose name contains this text (the first case,
    /// the yardstick of the ratios, always runs).
    #[arg(long)]
    pub only: Option<String>,
}

/// One case: a server to start, the request to send, and whether one huge
/// ping goes first.
struct Case<'a> {
    name: &'static str,
    spec: Spec<'a>,
    request: Request,
    huge_first: bool,
}

/// One case's results, summed over its rounds.
#[derive(Default)]
struct Outcome {
    replies: u64,
    measured: Duration,
    latencies_us: Vec<u32>,
    server_cpu: Duration,
    generator_cpu: Duration,
    errors: Errors,
    /// Each round's replies/s and CPU per reply (µs), for the ratios.
    rounds: Vec<(f64, f64)>,
}

impl Outcome {
    fn replies_per_s(&self) -> f64 {
        self.replies as f64 / self.measured.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    /// Server CPU time per reply, in microseconds.
    fn cpu_per_reply_us(&self) -> f64 {
        report::micros_per(self.server_cpu, self.replies)
    }

    /// Cores the generator kept busy on average.
    fn generator_cores(&self) -> f64 {
        self.generator_cpu.as_secs_f64() / self.measured.as_secs_f64().max(f64::MIN_POSITIVE)
    }
}

pub async fn run(artifacts: &Artifacts, args: &ThroughputArgs) -> Result<Table> {
    let workers = args.workers.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(1)
    });
    let workers_text = workers.to_string();
    let worker_args = ["--workers", workers_text.as_str()];
    let minimal_args = ["--workers", workers_text.as_str(), "--minimal"];
    let ping = [artifacts.ping_lib.as_path()];
    let pool = [artifacts.pool_lib.as_path()];
    let host_ping = Spec::Host {
        libraries: &ping,
        log: HOST_LOG,
        args: &worker_args,
    };
    // Ping in a worker process of the host (its CPU counted with the
    // host's), against ping in the host's own process.
    let process_config = TempDir::new("bench-process")?;
    let process_file = process_config.path().join("rohrpost.toml");
    std::fs::write(&process_file, "[plugins.ping]\nisolation = \"process\"\n")
        .with_context(|| format!("cannot write {}", process_file.display()))?;
    let process_file = process_file.display().to_string();
    let process_args = [
        "--workers",
        workers_text.as_str(),
        "--config",
        process_file.as_str(),
    ];
    // The kernel's default scheduling, against the host's default `batch`.
    let normal_args = ["--workers", workers_text.as_str(), "--scheduling", "normal"];
    let process_normal_args = [
        "--workers",
        workers_text.as_str(),
        "--config",
        process_file.as_str(),
        "--scheduling",
        "normal",
    ];
    let unjailed_args = [
        "--workers",
        workers_text.as_str(),
        "--config",
        process_file.as_str(),
        "--sandbox",
        "off",
    ];
    let reference = Case {
        name: "reference yardstick (--reference-bin)",
        spec: Spec::Reference {
            threads: workers_text.as_str(),
        },
        request: Request::Ping,
        huge_first: false,
    };
    let cases = [
        Case {
            name: "yardstick (axum + serde_json, LTO)",
            spec: Spec::Yardstick { args: &worker_args },
            request: Request::Ping,
            huge_first: false,
        },
        // The two cases the targets judge, next to the yardstick.
        Case {
            name: "host, ping (inline)",
            spec: host_ping,
            request: Request::Ping,
            huge_first: false,
        },
        Case {
            name: "host, ping (process)",
            spec: Spec::Host {
                libraries: &ping,
                log: HOST_LOG,
                args: &process_args,
            },
            request: Request::Ping,
            huge_first: false,
        },
        Case {
            name: "minimal (axum + serde_json)",
            spec: Spec::Baseline {
                args: &minimal_args,
            },
            request: Request::Ping,
            huge_first: false,
        },
        Case {
            name: "baseline",
            spec: Spec::Baseline { args: &worker_args },
            request: Request::Ping,
            huge_first: false,
        },
        Case {
            name: "host, ping (process, sandbox off)",
            spec: Spec::Host {
                libraries: &ping,
                log: HOST_LOG,
                args: &unjailed_args,
            },
            request: Request::Ping,
            huge_first: false,
        },
        Case {
            name: "host, ping (inline, normal scheduling)",
            spec: Spec::Host {
                libraries: &ping,
                log: HOST_LOG,
                args: &normal_args,
            },
            request: Request::Ping,
            huge_first: false,
        },
        Case {
            name: "host, ping (process, normal scheduling)",
            spec: Spec::Host {
                libraries: &ping,
                log: HOST_LOG,
                args: &process_normal_args,
            },
            request: Request::Ping,
            huge_first: false,
        },
        Case {
            name: "host, sleep 0 ms (pool)",
            spec: Spec::Host {
                libraries: &pool,
                log: HOST_LOG,
                args: &worker_args,
            },
            request: Request::PooledSleep,
            huge_first: false,
        },
        // Last: the yardstick of the next round runs after it. After the
        // pool case (a jailed worker) the yardstick took 6% more CPU per
        // reply than `limit` run right after it, in each of 6 rounds; after
        // this in-process case, as much as `limit`.
        Case {
            name: "host, ping after one 960 KB ping",
            spec: host_ping,
            request: Request::Ping,
            huge_first: true,
        },
    ];
    let mut cases: Vec<Case<'_>> = cases
        .into_iter()
        .enumerate()
        .filter(|(index, case)| {
            *index == 0
                || args
                    .only
                    .as_ref()
                    .is_none_or(|only| case.name.contains(only.as_str()))
        })
        .map(|(_, case)| case)
        .collect();
    // The reference, when given, runs second: next to the yardstick,
    // whatever `--only` says.
    if artifacts.reference.is_some() {
        cases.insert(1.min(cases.len()), reference);
    }
    let mut outcomes: Vec<Outcome> = cases.iter().map(|_| Outcome::default()).collect();
    let rounds = args.rounds.max(1);
    for round in 1..=rounds {
        for (case, outcome) in cases.iter().zip(&mut outcomes) {
            eprintln!("throughput: round {round}: {}", case.name);
            let (phase, cpu) = measure(artifacts, case, args).await?;
            outcome.rounds.push(figures(&phase, &cpu));
            outcome.replies += phase.replies;
            outcome.measured += cpu.wall;
            outcome.latencies_us.extend_from_slice(&phase.latencies_us);
            outcome.server_cpu += cpu.server;
            outcome.generator_cpu += cpu.own;
            outcome.errors.add(&phase.errors);
        }
    }
    // The yardstick once more after the last round: each case's ratio is
    // to the yardstick as it was when the case ran, between its runs
    // before and after.
    eprintln!("throughput: closing: {}", cases[0].name);
    let (phase, cpu) = measure(artifacts, &cases[0], args).await?;
    let closing = figures(&phase, &cpu);
    // Its errors count in the yardstick's row; its figures only in the
    // ratios.
    outcomes[0].errors.add(&phase.errors);

    let mut table = Table::new(
        &format!(
            "throughput: {} connections, closed loop, {} rounds of {:?} after {:?} warm-up, {workers} server workers, {} generator thread(s)",
            args.connections, rounds, args.duration, args.warmup, args.generator_threads
        ),
        &[
            "server",
            "replies/s",
            "p50",
            "p99",
            "server CPU per reply",
            "generator CPU",
            "replies/s vs yardstick (median, range of rounds)",
            "CPU per reply vs yardstick (median, range of rounds)",
            "p99 vs yardstick",
            "errors",
        ],
    );
    let latencies: Vec<Latency> = outcomes
        .iter_mut()
        .map(|outcome| {
            outcome.latencies_us.sort_unstable();
            Latency::of_sorted(&outcome.latencies_us)
        })
        .collect();
    let yardstick = Yardstick {
        rounds: &outcomes[0].rounds,
        closing,
        cases: cases.len(),
    };
    let base_latency = latencies[0];
    for (at, ((case, outcome), latency)) in cases.iter().zip(&outcomes).zip(&latencies).enumerate()
    {
        let cores = outcome.generator_cores();
        let saturated = cores >= SATURATED * args.generator_threads as f64;
        table.row(vec![
            case.name.to_owned(),
            report::count(outcome.replies_per_s().round() as u64),
            report::micros(latency.p50),
            report::micros(latency.p99),
            format!("{:.2} µs", outcome.cpu_per_reply_us()),
            format!(
                "{cores:.2} cores{}",
                if saturated { " (saturated)" } else { "" }
            ),
            round_ratios(&outcome.rounds, &yardstick, at, |round| round.0),
            round_ratios(&outcome.rounds, &yardstick, at, |round| round.1),
            report::ratio(f64::from(latency.p99), f64::from(base_latency.p99)),
            outcome.errors.describe(),
        ]);
    }
    Ok(table)
}

/// One run's replies per second and server CPU per reply (µs), the
/// figures its ratios compare.
fn figures(phase: &PhaseStats, cpu: &CpuUse) -> (f64, f64) {
    (
        phase.replies as f64 / cpu.wall.as_secs_f64().max(f64::MIN_POSITIVE),
        report::micros_per(cpu.server, phase.replies),
    )
}

/// The yardstick's runs: one at the start of each round (it is the
/// first case) and one after the last.
struct Yardstick<'a> {
    rounds: &'a [(f64, f64)],
    closing: (f64, f64),
    cases: usize,
}

impl Yardstick<'_> {
    /// A figure of the yardstick when the case at position `at` of round
    /// `round` ran: between its run at the start of that round and its
    /// next run, in proportion to the case's place in the round (on a
    /// log scale, as the figure is compared by ratio). A machine whose
    /// speed drifts over a round then moves a case's ratio no more than
    /// the yardstick's.
    fn at(&self, round: usize, at: usize, figure: impl Fn(&(f64, f64)) -> f64) -> Option<f64> {
        let start = figure(self.rounds.get(round)?);
        let next = figure(self.rounds.get(round + 1).unwrap_or(&self.closing));
        if start <= 0.0 || next <= 0.0 {
            return None;
        }
        let weight = at as f64 / self.cases.max(1) as f64;
        Some((start.ln() * (1.0 - weight) + next.ln() * weight).exp())
    }
}

/// The median and range of a figure's ratio to the yardstick's, round by
/// round, for the case at position `at` of each round: "1.02× (0.97–1.05)".
fn round_ratios(
    case: &[(f64, f64)],
    yardstick: &Yardstick<'_>,
    at: usize,
    figure: impl Fn(&(f64, f64)) -> f64,
) -> String {
    let mut ratios: Vec<f64> = case
        .iter()
        .enumerate()
        .filter_map(|(round, own)| Some(figure(own) / yardstick.at(round, at, &figure)?))
        .collect();
    ratios.sort_by(f64::total_cmp);
    let (Some(low), Some(high)) = (ratios.first(), ratios.last()) else {
        return "–".to_owned();
    };
    let middle = ratios.len() / 2;
    let median = if ratios.len().is_multiple_of(2) {
        (ratios[middle - 1] + ratios[middle]) / 2.0
    } else {
        ratios[middle]
    };
    format!("{median:.2}× ({low:.2}–{high:.2})")
}

/// One round of one case: the measured phase and the CPU used in it.
async fn measure(
    artifacts: &Artifacts,
    case: &Case<'_>,
    args: &ThroughputArgs,
) -> Result<(PhaseStats, CpuUse)> {
    let mut server = Server::start(case.name, artifacts, case.spec, None)?;
    if case.huge_first {
        // One client, one large request, answered before the load starts.
        let mut socket = client::connect(&server.url()).await?;
        let frame = format!(
            r#"{{"id":0,"type":"ping","data":"{}"}}"#,
            "x".repeat(HUGE_PING)
        );
        client::request(&mut socket, frame).await?;
        client::close(socket).await;
    }
    let url = server.url();
    let pid = server.pid();
    let (connections, warmup, duration) = (args.connections, args.warmup, args.duration);
    let (request, threads) = (case.request, args.generator_threads.max(1));
    // The generator on a runtime of its own, so that its thread count is
    // the one asked for whatever this program's runtime has.
    let generator = std::thread::spawn(move || -> Result<(Vec<PhaseStats>, CpuUse)> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            // 4 KiB reads, like the servers: the default 128 KiB buffer is
            // zero-filled before every read, which costs the generator more
            // than the rest of a small reply.
            let sockets =
                client::connect_many_with(&url, connections, Some(client::small_reads())).await?;
            let load = Load::start(sockets, request, 2);
            tokio::time::sleep(warmup).await;
            load.set_phase(1);
            let meter = CpuMeter::of_pid(pid)?;
            let started = Instant::now();
            tokio::time::sleep(duration).await;
            let mut cpu = meter.stop()?;
            cpu.wall = started.elapsed();
            let phases = load.finish().await?;
            Ok((phases, cpu))
        })
    });
    let (phases, cpu) = tokio::task::spawn_blocking(move || generator.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the load generator panicked"))??;
    server.check_running()?;
    server.stop()?;
    // Errors of every phase count, replies and latencies of the measured one.
    let errors = load::all_errors(&phases);
    let mut measured = phases
        .into_iter()
        .nth(1)
        .context("the load has no measured phase")?;
    measured.errors = errors;
    eprintln!(
        "throughput: {}: {:.0} replies/s, {:.2} µs server CPU per reply",
        case.name,
        measured.replies as f64 / cpu.wall.as_secs_f64(),
        report::micros_per(cpu.server, measured.replies)
    );
    Ok((measured, cpu))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_steady_drift_over_the_rounds_moves_no_ratio() {
        // The machine slows by 10% per round, evenly over each round of 4
        // cases; the case at position 2 costs 1.2x the yardstick.
        let cost = |round: usize, at: usize| 10.0 * 1.1f64.powf(round as f64 + at as f64 / 4.0);
        let rounds: Vec<(f64, f64)> = (0..3).map(|round| (1.0, cost(round, 0))).collect();
        let yardstick = Yardstick {
            rounds: &rounds,
            closing: (1.0, cost(3, 0)),
            cases: 4,
        };
        let case: Vec<(f64, f64)> = (0..3).map(|round| (1.0, 1.2 * cost(round, 2))).collect();
        assert_eq!(
            round_ratios(&case, &yardstick, 2, |r| r.1),
            "1.20× (1.20–1.20)"
        );
        assert_eq!(
            round_ratios(&rounds, &yardstick, 0, |r| r.1),
            "1.00× (1.00–1.00)"
        );
        // Against the yardstick of each round's start alone, as before,
        // the drift showed up as a difference between the servers.
        let naive = case[0].1 / rounds[0].1;
        assert!(naive > 1.25, "{naive}");
    }

    #[test]
    fn a_yardstick_run_without_replies_gives_no_ratio() {
        let rounds = [(0.0, 0.0), (1.0, 10.0)];
        let yardstick = Yardstick {
            rounds: &rounds,
            closing: (1.0, 10.0),
            cases: 2,
        };
        let case = [(1.0, 12.0), (1.0, 12.0)];
        assert_eq!(
            round_ratios(&case, &yardstick, 1, |r| r.1),
            "1.20× (1.20–1.20)"
        );
    }
}
