//! `rohrpost-bench`: measures the rohrpost host against `baseline-ping`, a
//! plugin-free server with the same parser, measures hot reload, the
//! restart of a plugin's worker process after a crash, and change
//! notifications (`POST /api/notify` to many subscribers) against
//! `baseline-fanout`, the least a server can do for them.
//!
//! Every benchmark starts the servers it needs as child processes, prints
//! its results as Markdown tables on stdout and its progress on stderr.
//! The modules: [`servers`] (child processes), [`client`] and [`load`]
//! (the WebSocket side), [`subscribers`], [`subscribing`], [`readers`],
//! [`frames`] and [`http`] (change notifications), one module per
//! benchmark ([`channels`] against daphne with Django, [`django`] its
//! Python side), and [`report`].

mod channels;
mod client;
mod deflate;
mod django;
mod fanout;
mod frames;
mod http;
mod load;
mod memory;
mod new_plugin;
mod notify_rate;
mod proxy;
mod readers;
mod reload;
mod report;
mod restart;
mod servers;
mod subscribers;
mod subscribing;
mod throughput;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, FromArgMatches, Parser, Subcommand};

use crate::{
    channels::ChannelsArgs, fanout::FanoutArgs, memory::MemoryArgs, new_plugin::NewPluginArgs,
    notify_rate::NotifyRateArgs, proxy::ProxyArgs, reload::ReloadArgs, report::Table,
    restart::RestartArgs, servers::Artifacts, throughput::ThroughputArgs,
};

/// Benchmarks of the rohrpost host.
///
/// The programs and libraries default to files next to this program (as
/// `cargo build --release -p rohrpost-bench -p rohrpost-host -p ping -p
/// fixture-testkit -p subscriptions -p proxy` puts them).
#[derive(Debug, Parser)]
#[command(name = "rohrpost-bench", version, about)]
struct Cli {
    #[command(flatten)]
    paths: Paths,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct Paths {
    /// The host binary (`rohrpost`).
    #[arg(long, global = true)]
    host_bin: Option<PathBuf>,

    /// The baseline server (`baseline-ping`).
    #[arg(long, global = true)]
    baseline_bin: Option<PathBuf>,

    /// The yardstick server (`bench/yardstick`, built by `cargo xtask
    /// bench` into `target/yardstick/release/yardstick`).
    #[arg(long, global = true)]
    yardstick_bin: Option<PathBuf>,

    /// A reference server measured next to the yardstick by `throughput`
    /// (it takes `--port P --threads N` and serves `/ws/rohrpost/`, as
    /// the yardstick the project's targets are judged by does).
    #[arg(long, global = true)]
    reference_bin: Option<PathBuf>,

    /// The fan-out floor server (`baseline-fanout`).
    #[arg(long, global = true)]
    fanout_baseline_bin: Option<PathBuf>,

    /// The ping plugin library.
    #[arg(long, global = true)]
    ping_lib: Option<PathBuf>,

    /// The testkit plugin library, whose `sleep` runs on the worker pool.
    #[arg(long, global = true)]
    pool_lib: Option<PathBuf>,

    /// The subscriptions plugin library, for the notification benchmarks.
    #[arg(long, global = true)]
    subscriptions_lib: Option<PathBuf>,

    /// The proxy plugin library, for the backend proxy benchmark.
    #[arg(long, global = true)]
    proxy_lib: Option<PathBuf>,
}

/// Where `all` looks for Redis for the two-host fan-out.
const LOCAL_REDIS: &str = "127.0.0.1:6379";

#[derive(Debug, Subcommand)]
enum Command {
    /// Replies per second and latency: baseline, host inline, host pooled.
    Throughput(ThroughputArgs),
    /// Resident memory per idle connection: baseline and host.
    Memory(MemoryArgs),
    /// Replacing the ping plugin over and over under load.
    Reload(ReloadArgs),
    /// Time from deploying a new plugin to its first reply.
    NewPlugin(NewPluginArgs),
    /// Time from a crash of the ping plugin's worker to its next reply.
    Restart(RestartArgs),
    /// Time for one change notification to reach every subscriber.
    Fanout(FanoutArgs),
    /// Change notifications at a steady rate: latency, losses, duplicates.
    NotifyRate(NotifyRateArgs),
    /// Django's group_send to subscribers of the host and of daphne.
    Channels(ChannelsArgs),
    /// A Python handler behind the proxy plugin and on daphne.
    Proxy(ProxyArgs),
    /// Every benchmark with its default settings (not `channels` and
    /// `proxy`, which need the Django environment).
    All,
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let artifacts = cli.paths.resolve()?;
    artifacts.check()?;
    // Before any server starts, so that the servers inherit it.
    let open_files = servers::raise_open_files_limit()?;

    match cli.command {
        Command::Throughput(args) => print(&throughput::run(&artifacts, &args).await?),
        Command::Memory(args) => print(&memory::run(&artifacts, &args, open_files).await?),
        Command::Reload(args) => {
            for table in reload::run(&artifacts, &args).await? {
                print(&table);
            }
        }
        Command::NewPlugin(args) => print(&new_plugin::run(&artifacts, &args).await?),
        Command::Restart(args) => print(&restart::run(&artifacts, &args).await?),
        Command::Fanout(args) => print(&fanout::run(&artifacts, &args, open_files).await?),
        Command::NotifyRate(args) => print(&notify_rate::run(&artifacts, &args, open_files).await?),
        Command::Channels(args) => print(&channels::run(&artifacts, &args, open_files).await?),
        Command::Proxy(args) => print(&proxy::run(&artifacts, &args).await?),
        Command::All => {
            let memory_args = defaults()?;
            let fanout_args = defaults()?;
            // Fail now rather than after the throughput runs.
            memory::check_open_files(&memory_args, open_files)?;
            fanout::check_open_files(&fanout_args, open_files)?;
            print(&throughput::run(&artifacts, &defaults()?).await?);
            print(&memory::run(&artifacts, &memory_args, open_files).await?);
            for table in reload::run(&artifacts, &defaults()?).await? {
                print(&table);
            }
            print(&new_plugin::run(&artifacts, &defaults()?).await?);
            print(&restart::run(&artifacts, &defaults()?).await?);
            print(&fanout::run(&artifacts, &fanout_args, open_files).await?);
            // The same subscribers on two hosts whose groups go through
            // the local Redis, when one answers.
            if std::net::TcpStream::connect(LOCAL_REDIS).is_ok() {
                let cluster_args = fanout::FanoutArgs {
                    hosts: 2,
                    redis: Some(format!("redis://{LOCAL_REDIS}/0")),
                    ..fanout_args.clone()
                };
                print(&fanout::run(&artifacts, &cluster_args, open_files).await?);
            } else {
                eprintln!("fanout: no Redis on {LOCAL_REDIS}; skipping the two-host run");
            }
            print(&notify_rate::run(&artifacts, &defaults()?, open_files).await?);
        }
    }
    Ok(())
}

fn print(table: &Table) {
    println!("{table}");
}

/// A benchmark's settings as its flags' defaults give them.
fn defaults<T: Args + FromArgMatches>() -> Result<T> {
    let matches = T::augment_args(clap::Command::new("defaults"))
        .try_get_matches_from(["defaults"])
        .context("default settings")?;
    Ok(T::from_arg_matches(&matches)?)
}

impl Paths {
    fn resolve(self) -> Result<Artifacts> {
        let exe = std::env::current_exe().context("cannot find this program's path")?;
        let dir = exe
            .parent()
            .context("this program's path has no directory")?
            .to_owned();
        let library = |crate_name: &str| dir.join(rohrpost_harness::library_file_name(crate_name));
        Ok(Artifacts {
            host: self.host_bin.unwrap_or_else(|| dir.join("rohrpost")),
            baseline: self
                .baseline_bin
                .unwrap_or_else(|| dir.join("baseline-ping")),
            yardstick: self.yardstick_bin.unwrap_or_else(|| {
                dir.join("..")
                    .join("yardstick")
                    .join("release")
                    .join("yardstick")
            }),
            reference: self.reference_bin,
            fanout_baseline: self
                .fanout_baseline_bin
                .unwrap_or_else(|| dir.join("baseline-fanout")),
            ping_lib: self.ping_lib.unwrap_or_else(|| library("ping")),
            pool_lib: self.pool_lib.unwrap_or_else(|| library("fixture_testkit")),
            subscriptions_lib: self
                .subscriptions_lib
                .unwrap_or_else(|| library("subscriptions")),
            proxy_lib: self.proxy_lib.unwrap_or_else(|| library("proxy")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_flag_defaults() {
        let args: ThroughputArgs = defaults().expect("defaults parse");
        assert_eq!(args.connections, 100);
        assert_eq!(args.duration, std::time::Duration::from_secs(10));
        let args: ReloadArgs = defaults().expect("defaults parse");
        assert_eq!(args.reloads, 50);
        let args: RestartArgs = defaults().expect("defaults parse");
        assert_eq!((args.crashes, args.in_a_row), (10, 6));
        let args: FanoutArgs = defaults().expect("defaults parse");
        assert_eq!((args.subscribers, args.notifications), (10_000, 100));
        let args: NotifyRateArgs = defaults().expect("defaults parse");
        assert_eq!((args.subscribers, args.rate), (1000, 500));
        assert_eq!(args.duration, std::time::Duration::from_secs(10));
    }

    #[test]
    fn flags_are_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
