//! The `rohrpost` command line: the plugin worker mode, `--check-config`,
//! the log format, the async runtime, and the server on it.

use std::{io::IsTerminal, process::ExitCode, time::Duration};

use crate::{
    config::{self, Cli, Config, LogFormat, Workers},
    plugins::isolation::worker::{run as run_plugin_worker, ARG as PLUGIN_WORKER_ARG},
    server,
};
use tracing_subscriber::EnvFilter;

/// The server's `/proc` files (memory, descriptors, environment, command
/// line's process) then belong to root, and no process of its own user can
/// trace it or read its memory: not a plugin outside its jail, not any
/// other program of that user.
fn not_dumpable() {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        eprintln!("warning: cannot make the server not dumpable");
    }
}

/// The second half of `--check-config`: each plugin of the plugins
/// directory the file (or the flags) name is asked about its table, in a
/// jailed worker as loading does; its refusals come back with the line of
/// the key in the file. Skipped when that directory does not exist here.
fn check_plugins(cli: &Cli, path: &std::path::Path) -> Result<(), Vec<String>> {
    use crate::plugins::check;
    let mut with_file = cli.clone();
    with_file.config = Some(path.to_owned());
    with_file.check_config = None;
    let config = Config::load(&with_file).map_err(|e| vec![format!("{e:#}")])?;
    crate::groups::redis::check_settings(&config.settings).map_err(|e| vec![e])?;
    let dir = &config.settings.plugins_dir;
    if !dir.is_dir() {
        println!(
            "{}: the plugins directory {} is not here; plugin tables not checked",
            path.display(),
            dir.display()
        );
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| vec![format!("cannot start a runtime: {e}")])?;
    let found = runtime
        .block_on(check::tables(
            dir,
            &config.plugin_tables,
            &config.granted_files,
            config.settings.sandbox,
        ))
        .map_err(|e| vec![format!("cannot read {}: {e}", dir.display())])?;
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let problems: Vec<String> = found
        .into_iter()
        .map(|problem| match &problem.plugin {
            Some(plugin) => {
                let line = check::line_of(&text, plugin, check::key_in(&problem.text))
                    .map_or_else(String::new, |n| format!(" (line {n})"));
                // The place serde gives is in the JSON made of the table,
                // not in the file.
                let text = match problem.text.rfind(" at line ") {
                    Some(at) if problem.text[at..].contains(" column ") => &problem.text[..at],
                    _ => problem.text.as_str(),
                };
                format!("plugins.{plugin}{line}: {text} (asked {})", problem.file)
            }
            None => format!("{}: {}", problem.file, problem.text),
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// Runs the `rohrpost` command: the server, `--check-config`, or (as
/// `rohrpost --plugin-worker`, started by the server) one plugin's worker.
pub fn main() -> ExitCode {
    if std::env::args_os().nth(1).as_deref() == Some(PLUGIN_WORKER_ARG.as_ref()) {
        run_plugin_worker();
    }
    not_dumpable();
    let cli = Cli::from_env();
    if let Some(path) = &cli.check_config {
        return match config::check_file(path).and_then(|()| check_plugins(&cli, path)) {
            Ok(()) => {
                println!("{}: valid", path.display());
                ExitCode::SUCCESS
            }
            Err(problems) => {
                eprintln!("{}: {} problem(s)", path.display(), problems.len());
                for problem in problems {
                    eprintln!("  {problem}");
                }
                ExitCode::FAILURE
            }
        };
    }
    let config = match Config::load(&cli) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("rohrpost: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    init_logs(config.settings.log_format);
    match serve(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logs(format: LogFormat) {
    let filter = EnvFilter::try_from_env("ROHRPOST_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
}

fn serve(config: Config) -> anyhow::Result<()> {
    // Before any other thread or worker starts: they inherit it.
    if let Err(e) = config.settings.scheduling.apply() {
        tracing::warn!(policy = ?config.settings.scheduling, error = %e, "cannot set the scheduling policy; running with the kernel's default");
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Workers::Count(workers) = config.settings.workers {
        runtime.worker_threads(workers);
    }
    let runtime = runtime.enable_all().build()?;
    let result = runtime.block_on(server::run(config));
    // Handler calls still running on the pool after the shutdown timeout
    // are native code that cannot be stopped; do not wait for them.
    runtime.shutdown_timeout(Duration::from_millis(100));
    result
}
