//! `cargo xtask`: the project's own commands, in Rust so they run wherever
//! cargo does.
//!
//! - `cargo xtask run [HOST ARGS...]`: builds the host and every plugin under
//!   `plugins/` (release), installs the plugins into the host's plugins
//!   directory (`plugins.d/` unless the arguments, the environment or the
//!   config file choose another; write, then rename, so a running host
//!   reloads them cleanly) and starts the host (see [`server_args()`]).
//! - `cargo xtask install-plugins [DIR]`: the build-and-install step alone,
//!   for a host that is already running.
//! - `cargo xtask bench [ARGS...]`: builds everything in release and runs the
//!   load generator (`rohrpost-bench`) against the host and the baseline.
//! - `cargo xtask new-plugin NAME [--dir DIR]`: creates a plugin crate that
//!   builds and answers at once (in `plugins/NAME` unless `--dir` says
//!   otherwise).
//! - `cargo xtask dev PLUGIN_DIR [--plugins DIR]`: builds a plugin crate,
//!   installs its library into the plugins directory, and does it again
//!   every time its sources change.

mod args;
mod dev;
mod install;
mod new_plugin;
mod server_args;

use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{bail, Context, Result};

use crate::{
    install::{install, plugins_dir},
    server_args::{server_args, LOCAL_CONFIG},
};

const USAGE: &str = "\
usage: cargo xtask run [HOST ARGS...]
       cargo xtask install-plugins [DIR]
       cargo xtask bench [all|isolation|throughput|memory|reload|new-plugin|restart|fanout|notify-rate|channels|proxy] [ARGS...]
       cargo xtask new-plugin NAME [--dir DIR]
       cargo xtask dev PLUGIN_DIR [--plugins DIR] [--target-dir DIR] [--debug] [--once]";

fn main() -> ExitCode {
    match run_command() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_command() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let command = args.next().unwrap_or_default();
    let rest: Vec<String> = args.collect();
    let help = |first_only: bool| {
        let asked = |a: &String| a == "--help" || a == "-h";
        if first_only {
            rest.first().is_some_and(asked)
        } else {
            rest.iter().any(asked)
        }
    };
    // `--help` on a command: its usage, before anything is built. (`run`
    // hands every other argument to the host; `bench PART --help` to the
    // bench, which lists that part's options.)
    if matches!(command.as_str(), "run" | "bench") && help(true)
        || matches!(command.as_str(), "install-plugins" | "new-plugin" | "dev") && help(false)
    {
        let prefix = format!("cargo xtask {command}");
        for line in USAGE.lines() {
            let line = line.trim_start_matches("usage:").trim_start();
            if line.starts_with(&prefix) {
                println!("usage: {line}");
            }
        }
        if command == "run" {
            println!("HOST ARGS: the server's flags, listed in docs/configuration.md");
        }
        return Ok(());
    }
    match command.as_str() {
        "run" => run(&rest),
        "install-plugins" => {
            let dir = rest
                .first()
                .map_or_else(|| root().join("plugins.d"), PathBuf::from);
            install_plugins(&dir)
        }
        "bench" => bench(&rest),
        "new-plugin" => new_plugin::main(&rest),
        "dev" => dev::main(&rest),
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(())
        }
        _ => {
            eprintln!("{USAGE}");
            bail!("unknown command '{command}'")
        }
    }
}

/// The workspace root.
pub(crate) fn root() -> PathBuf {
    rohrpost_harness::workspace()
}

/// `path` relative to `cwd` when it is below it, for messages.
pub(crate) fn shown(path: &Path, cwd: &Path) -> String {
    let cwd = cwd.canonicalize().unwrap_or_else(|_| cwd.to_owned());
    match path.strip_prefix(&cwd) {
        Ok(rel) if !rel.as_os_str().is_empty() => rel.display().to_string(),
        _ => path.display().to_string(),
    }
}

fn release_dir() -> PathBuf {
    rohrpost_harness::target_dir().join("release")
}

/// A shipped plugin: its package name, and whether it declares that it
/// needs a table in the config to load (`[package.metadata.rohrpost]
/// needs-configuration = true`).
struct Shipped {
    name: String,
    needs_configuration: bool,
}

/// The shipped plugins: every `cdylib` crate under `plugins/` (the others
/// are libraries the plugins share), by package name.
fn shipped_plugins() -> Result<Vec<Shipped>> {
    let mut plugins = Vec::new();
    for entry in std::fs::read_dir(root().join("plugins")).context("cannot list plugins/")? {
        let manifest = entry?.path().join("Cargo.toml");
        let Ok(text) = std::fs::read_to_string(&manifest) else {
            continue;
        };
        let table: toml::Table = toml::from_str(&text)
            .with_context(|| format!("{} is not valid TOML", manifest.display()))?;
        let cdylib = table
            .get("lib")
            .and_then(|l| l.get("crate-type"))
            .and_then(toml::Value::as_array)
            .is_some_and(|types| types.iter().any(|t| t.as_str() == Some("cdylib")));
        if !cdylib {
            continue;
        }
        let package = table.get("package");
        let name = package
            .and_then(|p| p.get("name"))
            .and_then(toml::Value::as_str)
            .with_context(|| format!("no package name in {}", manifest.display()))?;
        let needs_configuration = package
            .and_then(|p| p.get("metadata"))
            .and_then(|m| m.get("rohrpost"))
            .and_then(|r| r.get("needs-configuration"))
            .and_then(toml::Value::as_bool)
            .unwrap_or(false);
        plugins.push(Shipped {
            name: name.to_owned(),
            needs_configuration,
        });
    }
    plugins.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(plugins)
}

/// The package names of `plugins`.
fn names(plugins: &[Shipped]) -> Vec<String> {
    plugins.iter().map(|p| p.name.clone()).collect()
}

/// The cargo that runs this program, so that the same toolchain builds.
pub(crate) fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn cargo_build_release(packages: &[String]) -> Result<()> {
    let mut cmd = cargo();
    cmd.current_dir(root()).args(["build", "--release"]);
    for p in packages {
        cmd.args(["-p", p]);
    }
    let status = cmd.status().context("cannot run cargo")?;
    if !status.success() {
        bail!("cargo build failed");
    }
    Ok(())
}

/// Builds `bench/yardstick`, a workspace of its own (its `serde_json`
/// keeps its default features), into `target/yardstick`, where the bench
/// looks for it.
fn build_yardstick() -> Result<()> {
    let status = cargo()
        .current_dir(root().join("bench").join("yardstick"))
        .args(["build", "--release"])
        .env(
            "CARGO_TARGET_DIR",
            rohrpost_harness::target_dir().join("yardstick"),
        )
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("cargo build of bench/yardstick failed");
    }
    Ok(())
}

fn install_plugins(dir: &Path) -> Result<()> {
    let plugins = names(&shipped_plugins()?);
    cargo_build_release(&plugins)?;
    plugins_dir(dir)?;
    for p in &plugins {
        install(
            &release_dir().join(rohrpost_harness::library_file_name(p)),
            dir,
        )?;
    }
    Ok(())
}

fn run(host_args: &[String]) -> Result<()> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let target = release_dir();
    let local_config = target
        .parent()
        .map_or_else(|| target.clone(), Path::to_owned)
        .join("rohrpost-run.toml");
    let server = server_args(
        host_args,
        |name| std::env::var(name).ok(),
        &cwd,
        &root().join("plugins.d"),
        &local_config,
    )?;
    let shipped = shipped_plugins()?;
    let mut packages = names(&shipped);
    packages.push("rohrpost-host".into());
    cargo_build_release(&packages)?;
    let dir = &server.plugins_dir;
    plugins_dir(dir)?;
    for Shipped {
        name: p,
        needs_configuration,
    } in shipped
    {
        // A plugin that cannot work without settings (the proxy needs its
        // backend) is left out until the config has its table.
        if needs_configuration && !server.configured.contains(&p) {
            eprintln!(
                "note: the {p} plugin is not installed: it needs a [plugins.{p}] table in the config (see docs/configuration.md)"
            );
            continue;
        }
        install(
            &release_dir().join(rohrpost_harness::library_file_name(&p)),
            dir,
        )?;
    }
    if server.local_config {
        std::fs::write(&local_config, LOCAL_CONFIG)
            .with_context(|| format!("cannot write {}", local_config.display()))?;
        eprintln!(
            "warning: anyone may subscribe to any group ({} sets auth = \"off\" for the subscriptions plugin); pass --config FILE to choose",
            shown(&local_config, &cwd)
        );
    }
    let status = Command::new(release_dir().join("rohrpost"))
        .args(&server.args)
        .status()
        .context("cannot start the host")?;
    if !status.success() {
        bail!("the host exited with {status}");
    }
    Ok(())
}

fn bench(args: &[String]) -> Result<()> {
    let packages = [
        "rohrpost-host",
        "rohrpost-bench",
        "ping",
        "fixture-testkit",
        "subscriptions",
        "proxy",
    ];
    cargo_build_release(&packages.map(String::from))?;
    build_yardstick()?;
    let runs: Vec<Vec<String>> = match args.split_first() {
        None => vec![vec!["all".into()]],
        // Ping with the plugin in a worker process next to in process,
        // then the worker's restart after a crash.
        Some((first, rest)) if first == "isolation" => {
            let mut throughput: Vec<String> =
                vec!["throughput".into(), "--only".into(), "host, ping (".into()];
            throughput.extend_from_slice(rest);
            vec![throughput, vec!["restart".into()]]
        }
        Some(_) => vec![args.to_vec()],
    };
    for run in runs {
        run_bench(&run)?;
    }
    Ok(())
}

/// One run of `rohrpost-bench` with these arguments, on the release build.
fn run_bench(args: &[String]) -> Result<()> {
    let release = release_dir();
    let status = Command::new(release.join("rohrpost-bench"))
        .args(args)
        .arg("--host-bin")
        .arg(release.join("rohrpost"))
        .arg("--baseline-bin")
        .arg(release.join("baseline-ping"))
        .arg("--fanout-baseline-bin")
        .arg(release.join("baseline-fanout"))
        .arg("--ping-lib")
        .arg(release.join(rohrpost_harness::library_file_name("ping")))
        .arg("--pool-lib")
        .arg(release.join(rohrpost_harness::library_file_name("fixture-testkit")))
        .arg("--subscriptions-lib")
        .arg(release.join(rohrpost_harness::library_file_name("subscriptions")))
        .arg("--proxy-lib")
        .arg(release.join(rohrpost_harness::library_file_name("proxy")))
        .status()
        .context("cannot start rohrpost-bench")?;
    if !status.success() {
        bail!("the benchmark failed: {status}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_plugins_are_the_cdylib_crates_and_say_what_they_need() {
        let shipped: Vec<(String, bool)> = shipped_plugins()
            .expect("plugins/ reads")
            .into_iter()
            .map(|p| (p.name, p.needs_configuration))
            .collect();
        // The shipped ones; a plugin made with `cargo xtask new-plugin` in
        // plugins/ joins them without breaking this test.
        for expected in [("ping", false), ("proxy", true), ("subscriptions", false)] {
            assert!(
                shipped.contains(&(expected.0.to_owned(), expected.1)),
                "{expected:?} missing in {shipped:?}"
            );
        }
    }
}
