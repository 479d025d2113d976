//! What `cargo xtask run` hands the server: the user's own choice of
//! plugins directory wins (a `--plugins` flag after `run`, else
//! `ROHRPOST_PLUGINS`, else `plugins_dir` in the config file given by
//! `--config` or `ROHRPOST_CONFIG`), and only when there is none does it
//! pass `plugins.d/` itself. The shipped plugins are installed wherever the
//! server will look.
//!
//! Without a config file of the user's, it passes one of its own that lets
//! anyone subscribe (`[plugins.subscriptions] auth = "off"`), for trying
//! the server locally; the shipped subscriptions plugin refuses to load
//! without an explicit `auth`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The config file `cargo xtask run` passes when the user passes none.
pub const LOCAL_CONFIG: &str = "\
# Written by `cargo xtask run` for trying the server locally: anyone may
# subscribe to any group. Pass --config FILE to use a config of your own.
# The shipped plugins are trusted: they run in the server's own process
# (`isolation = \"none\"`); any other plugin runs in a worker process.
[plugins.ping]
isolation = \"none\"

[plugins.subscriptions]
auth = \"off\"
isolation = \"none\"
";

/// How the server is started.
#[derive(Debug, PartialEq, Eq)]
pub struct ServerArgs {
    /// Where the shipped plugins go: the directory the server will watch.
    pub plugins_dir: PathBuf,
    /// The server's arguments: the user's, plus what is missing.
    pub args: Vec<String>,
    /// Whether `args` name [`LOCAL_CONFIG`] (to be written first).
    pub local_config: bool,
    /// The plugins the config in use has a `[plugins.NAME]` table for.
    pub configured: Vec<String>,
}

/// Decides the server's arguments from the user's `args` (those after
/// `run`), the environment (`env`) and the working directory `cwd`;
/// `default_dir` is used when the user chose no plugins directory, and
/// `local_config` is where [`LOCAL_CONFIG`] is written when the user gave
/// no config file.
pub fn server_args(
    args: &[String],
    env: impl Fn(&str) -> Option<String>,
    cwd: &Path,
    default_dir: &Path,
    local_config: &Path,
) -> Result<ServerArgs> {
    let env = |name: &str| env(name).filter(|v| !v.is_empty());
    let config = option(args, "config").or_else(|| env("ROHRPOST_CONFIG"));
    let (dir_of_config, configured) = match &config {
        Some(file) => {
            let file = cwd.join(file);
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read the config file {}", file.display()))?;
            read_config(&text, &file)?
        }
        None => read_config(LOCAL_CONFIG, local_config)?,
    };
    let chosen = match option(args, "plugins").or_else(|| env("ROHRPOST_PLUGINS")) {
        Some(dir) => Some(PathBuf::from(dir)),
        None => dir_of_config,
    };
    let mut server = args.to_vec();
    let plugins_dir = match chosen {
        // The server reads the user's choice itself, relative to the same
        // working directory.
        Some(dir) => cwd.join(dir),
        None => {
            server.push("--plugins".into());
            server.push(default_dir.display().to_string());
            default_dir.to_owned()
        }
    };
    if config.is_none() {
        server.push("--config".into());
        server.push(local_config.display().to_string());
    }
    Ok(ServerArgs {
        plugins_dir,
        args: server,
        local_config: config.is_none(),
        configured,
    })
}

/// The value of `--name VALUE` or `--name=VALUE` in `args` (the last one,
/// though the server refuses it twice).
fn option(args: &[String], name: &str) -> Option<String> {
    let flag = format!("--{name}");
    let mut found = None;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        if *arg == flag {
            found = rest.next().cloned();
        } else if let Some(value) = arg.strip_prefix(&flag).and_then(|v| v.strip_prefix('=')) {
            found = Some(value.to_owned());
        }
    }
    found
}

/// The `plugins_dir` the config text of `file` sets, if any, and the
/// plugins it has a table for.
fn read_config(text: &str, file: &Path) -> Result<(Option<PathBuf>, Vec<String>)> {
    let table: toml::Table =
        toml::from_str(text).with_context(|| format!("{} is not valid TOML", file.display()))?;
    let dir = match table.get("plugins_dir") {
        None => None,
        Some(toml::Value::String(dir)) => Some(PathBuf::from(dir)),
        Some(_) => anyhow::bail!("{}: plugins_dir must be a string", file.display()),
    };
    let configured = match table.get("plugins") {
        Some(toml::Value::Table(plugins)) => plugins.keys().cloned().collect(),
        _ => Vec::new(),
    };
    Ok((dir, configured))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: &str = "/repo/plugins.d";
    const LOCAL: &str = "/repo/target/rohrpost-run.toml";

    fn decide(args: &[&str], env: &[(&str, &str)], cwd: &Path) -> ServerArgs {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let env = |name: &str| {
            env.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        };
        server_args(&args, env, cwd, Path::new(DEFAULT), Path::new(LOCAL)).unwrap()
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    /// A real directory with a real config file in it, removed on drop.
    struct Dir(PathBuf);

    impl Dir {
        fn with_config(text: &str) -> Dir {
            let dir = std::env::temp_dir().join(format!(
                "xtask-server-args-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("my.toml"), text).unwrap();
            Dir(dir)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn without_a_choice_the_default_directory_and_the_local_config_are_passed() {
        let run = decide(&["--listen", "0.0.0.0:8000"], &[], Path::new("/cwd"));
        assert_eq!(run.plugins_dir, Path::new(DEFAULT));
        assert_eq!(
            run.args,
            strings(&[
                "--listen",
                "0.0.0.0:8000",
                "--plugins",
                DEFAULT,
                "--config",
                LOCAL
            ])
        );
        assert!(run.local_config);
        assert!(LOCAL_CONFIG.contains("[plugins.subscriptions]\nauth = \"off\""));
        assert!(LOCAL_CONFIG.contains("[plugins.ping]\nisolation = \"none\""));
    }

    #[test]
    fn a_plugins_flag_wins_and_is_passed_once() {
        for args in [&["--plugins", "mine"][..], &["--plugins=mine"][..]] {
            let run = decide(args, &[("ROHRPOST_PLUGINS", "/env")], Path::new("/cwd"));
            assert_eq!(run.plugins_dir, Path::new("/cwd/mine"));
            let flags = run
                .args
                .iter()
                .filter(|a| a.starts_with("--plugins"))
                .count();
            assert_eq!(flags, 1, "{:?}", run.args);
            assert!(run.args.starts_with(&strings(args)));
        }
    }

    #[test]
    fn the_environment_variable_wins_over_the_default() {
        let run = decide(
            &[],
            &[("ROHRPOST_PLUGINS", "/srv/plugins")],
            Path::new("/cwd"),
        );
        assert_eq!(run.plugins_dir, Path::new("/srv/plugins"));
        assert_eq!(run.args, strings(&["--config", LOCAL]));
        // An empty variable is no choice.
        let run = decide(&[], &[("ROHRPOST_PLUGINS", "")], Path::new("/cwd"));
        assert_eq!(run.plugins_dir, Path::new(DEFAULT));
    }

    #[test]
    fn a_config_file_s_plugins_dir_wins_over_the_default() {
        let dir = Dir::with_config(
            "plugins_dir = \"from-file\"\n[plugins.subscriptions]\nauth = \"off\"\n",
        );
        let run = decide(&["--config", "my.toml"], &[], &dir.0);
        assert_eq!(run.plugins_dir, dir.0.join("from-file"));
        assert_eq!(run.args, strings(&["--config", "my.toml"]));
        assert!(!run.local_config);
        let run = decide(&[], &[("ROHRPOST_CONFIG", "my.toml")], &dir.0);
        assert_eq!(run.plugins_dir, dir.0.join("from-file"));
        assert!(run.args.is_empty(), "{:?}", run.args);
        // The flag and the variable still win over the file.
        let run = decide(
            &["--config=my.toml"],
            &[("ROHRPOST_PLUGINS", "/env")],
            &dir.0,
        );
        assert_eq!(run.plugins_dir, Path::new("/env"));
    }

    #[test]
    fn the_configured_plugins_are_those_of_the_config_in_use() {
        let dir = Dir::with_config("[plugins.proxy]\nurl = \"http://127.0.0.1:1/\"\n");
        let run = decide(&["--config", "my.toml"], &[], &dir.0);
        assert_eq!(run.configured, ["proxy"]);
        let run = decide(&[], &[], &dir.0);
        assert_eq!(run.configured, ["ping", "subscriptions"]);
    }

    #[test]
    fn a_config_file_without_plugins_dir_gets_the_default_directory() {
        let dir = Dir::with_config("listen = \"127.0.0.1:9000\"\n");
        let run = decide(&["--config", "my.toml"], &[], &dir.0);
        assert_eq!(run.plugins_dir, Path::new(DEFAULT));
        assert_eq!(
            run.args,
            strings(&["--config", "my.toml", "--plugins", DEFAULT])
        );
    }

    #[test]
    fn an_unreadable_config_file_is_an_error() {
        let args = strings(&["--config", "/nonexistent/rohrpost.toml"]);
        let error = server_args(
            &args,
            |_| None,
            Path::new("/"),
            Path::new(DEFAULT),
            Path::new(LOCAL),
        )
        .unwrap_err();
        assert!(format!("{error:#}").contains("/nonexistent/rohrpost.toml"));
    }
}
