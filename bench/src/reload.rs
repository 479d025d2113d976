//! Hot reload under load: the ping plugin is replaced again and again while
//! closed-loop pings run. No request may fail, and latency during the
//! reloads is compared with an equally long phase without reloads in the
//! same run.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use clap::Args;
use humantime::parse_duration;

use crate::{
    client::{self, Request},
    load::{self, Load, PhaseStats},
    report::{self, Latency, Table},
    servers::{Artifacts, CpuMeter, CpuUse, Server, Spec, HOST_LOG_WITH_WATCHER},
};

/// The host's log of a replacement.
const REPLACED: &str = "event=\"replaced\"";

/// Load phases of a run after the warm-up (phase 0).
const STEADY: usize = 1;
const RELOADING: usize = 2;

#[derive(Debug, Clone, Args)]
pub struct ReloadArgs {
    /// Concurrent connections, each with one request in flight.
    #[arg(long, default_value_t = 100)]
    pub connections: usize,

    /// How many times the plugin is replaced.
    #[arg(long, default_value_t = 50)]
    pub reloads: u32,

    /// Time between two replacements.
    #[arg(long, default_value = "200ms", value_parser = parse_duration)]
    pub interval: Duration,

    /// Load before the phase without reloads.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,
}

pub async fn run(artifacts: &Artifacts, args: &ReloadArgs) -> Result<Vec<Table>> {
    let library = tokio::fs::read(&artifacts.ping_lib)
        .await
        .with_context(|| format!("cannot read {}", artifacts.ping_lib.display()))?;
    let libraries = [artifacts.ping_lib.as_path()];
    let name = "host, ping";
    eprintln!("reload: starting the host");
    let mut server = Server::start(
        name,
        artifacts,
        Spec::Host {
            libraries: &libraries,
            log: HOST_LOG_WITH_WATCHER,
            args: &[],
        },
        Some(REPLACED),
    )?;
    let dir = server.plugins_dir()?.to_owned();
    let installed = dir.join(
        artifacts
            .ping_lib
            .file_name()
            .context("the ping library has no file name")?,
    );

    let sockets = client::connect_many(&server.url(), args.connections).await?;
    let phase_length = args.interval * args.reloads;
    eprintln!(
        "reload: {} connections; warm-up {:?}, then {phase_length:?} without and {phase_length:?} with reloads",
        sockets.len(),
        args.warmup
    );
    let load = Load::start(sockets, Request::Ping, 3);
    tokio::time::sleep(args.warmup).await;
    load.set_phase(STEADY);
    let meter = CpuMeter::start(&server)?;
    tokio::time::sleep(phase_length).await;
    load.set_phase(RELOADING);
    let steady_cpu = meter.stop()?;
    let meter = CpuMeter::start(&server)?;
    let started = Instant::now();
    let mut done = 0u32;
    for round in 1..=args.reloads {
        replace(&library, &dir, &installed, round).await?;
        done += 1;
        tokio::time::sleep_until((started + args.interval * round).into()).await;
    }
    let reloading_cpu = meter.stop()?;
    let phases = load.finish().await?;
    server.check_running()?;

    // The last replacement is picked up after the debounce.
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.counted() < done as usize && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let logged = server.counted();
    server.stop()?;

    Ok(tables(
        args,
        done,
        logged,
        &phases,
        [steady_cpu, reloading_cpu],
    ))
}

/// Writes the library plus a trailer naming the round (bytes after the end
/// of an ELF file are ignored by the loader but change the content, so the
/// host loads it as a new version) under a hidden name, then renames it
/// over the installed file.
async fn replace(library: &[u8], dir: &Path, installed: &Path, round: u32) -> Result<()> {
    let mut bytes = Vec::with_capacity(library.len() + 8);
    bytes.extend_from_slice(library);
    bytes.extend_from_slice(&u64::from(round).to_le_bytes());
    let tmp = dir.join(".ping.so.tmp");
    tokio::fs::write(&tmp, &bytes)
        .await
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    // Whatever the umask: the host refuses files others may write.
    tokio::fs::set_permissions(&tmp, rohrpost_harness::plugin_permissions())
        .await
        .with_context(|| format!("cannot chmod {}", tmp.display()))?;
    tokio::fs::rename(&tmp, installed)
        .await
        .with_context(|| format!("cannot rename {} into place", tmp.display()))?;
    Ok(())
}

/// The tables; `cpu` is the server's CPU in the phase without and the one
/// with reloads.
fn tables(
    args: &ReloadArgs,
    done: u32,
    logged: usize,
    phases: &[PhaseStats],
    cpu: [CpuUse; 2],
) -> Vec<Table> {
    let sent: u64 = phases.iter().map(|p| p.sent).sum();
    let replies: u64 = phases.iter().map(|p| p.replies).sum();
    let errors = load::all_errors(phases);

    let mut summary = Table::new(
        &format!(
            "reload: {} connections, {} replacements every {:?}",
            args.connections, args.reloads, args.interval
        ),
        &["what", "count"],
    );
    for (what, value) in [
        ("replacements written", done.to_string()),
        ("replacements logged by the host", logged.to_string()),
        ("requests sent", report::count(sent)),
        ("good replies", report::count(replies)),
        ("errors", errors.describe()),
    ] {
        summary.row(vec![what.to_owned(), value]);
    }

    let mut latency = Table::new(
        "reload: latency without and with replacements (same run)",
        &[
            "phase",
            "replies",
            "p50",
            "p99",
            "p999",
            "max",
            "server CPU per reply",
        ],
    );
    let phase_cpu = [("without reloads", STEADY), ("with reloads", RELOADING)]
        .into_iter()
        .zip(cpu);
    for ((name, index), cpu) in phase_cpu {
        let l = Latency::of_sorted(&phases[index].sorted_latencies());
        let per_reply = report::micros_per(cpu.server, phases[index].replies);
        latency.row(vec![
            name.to_owned(),
            report::count(l.count as u64),
            report::micros(l.p50),
            report::micros(l.p99),
            report::micros(l.p999),
            report::micros(l.max),
            format!("{per_reply:.2} µs"),
        ]);
    }
    vec![summary, latency]
}
