//! Settings of the host: command-line flags (or their environment
//! variables), with their defaults, and the optional TOML config file for
//! what does not fit on a command line (per-plugin tables).

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Context;
use clap::Parser;
use serde::Deserialize;

/// A rohrpost WebSocket server that hot-loads handler plugins.
///
/// Plugins are shared libraries (`*.so`) in the plugins directory. Adding,
/// replacing or deleting one takes effect while the server runs. Deploy a new
/// version by writing it under a temporary name and renaming it into place.
#[derive(Debug, Clone, Parser)]
#[command(name = "rohrpost", version, about)]
pub struct Config {
    /// Address and port to listen on.
    #[arg(long, env = "ROHRPOST_LISTEN", default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,

    /// Directory watched for plugin libraries; created if missing.
    #[arg(long, env = "ROHRPOST_PLUGINS", default_value = "plugins.d")]
    pub plugins: PathBuf,

    /// Path of the WebSocket endpoint.
    #[arg(long, env = "ROHRPOST_WS_PATH", default_value = "/ws/rohrpost/")]
    pub ws_path: String,

    /// Largest accepted message in bytes; a bigger frame closes the
    /// connection with code 1009.
    #[arg(long, env = "ROHRPOST_MAX_MESSAGE_SIZE", default_value_t = 1 << 20)]
    pub max_message_size: usize,

    /// How long a caller waits for a handler on the worker pool before it
    /// gets an error reply ("30s", "500ms", or seconds).
    #[arg(long, env = "ROHRPOST_HANDLER_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub handler_timeout: Duration,

    /// Calls of one plugin that may run on the worker pool at once; more
    /// wait (within the handler timeout).
    #[arg(long, env = "ROHRPOST_PLUGIN_CONCURRENCY", default_value_t = 64)]
    pub plugin_concurrency: usize,

    /// An inline handler call that takes longer than this moves the handler
    /// to the worker pool for good.
    #[arg(long, env = "ROHRPOST_INLINE_BUDGET", default_value = "10ms", value_parser = parse_duration)]
    pub inline_budget: Duration,

    /// How long a plugin file must be quiet before it is (re)loaded.
    #[arg(long, env = "ROHRPOST_RELOAD_DEBOUNCE", default_value = "100ms", value_parser = parse_duration)]
    pub reload_debounce: Duration,

    /// Per-connection WebSocket read buffer in bytes (axum's default of
    /// 128 KiB costs that much memory per idle connection).
    #[arg(long, env = "ROHRPOST_READ_BUFFER", default_value_t = 4096)]
    pub read_buffer_size: usize,

    /// Group messages a connection may have waiting to be written; a
    /// connection whose queue is full is closed with code 1013.
    #[arg(long, env = "ROHRPOST_OUTBOUND_QUEUE", default_value_t = 1024)]
    pub outbound_queue: usize,

    /// Bearer token that `POST /api/notify` requires; without one (here or
    /// in the config file's `[notify]` table) the endpoint is disabled.
    #[arg(long, env = "ROHRPOST_NOTIFY_TOKEN", hide_env_values = true)]
    pub notify_token: Option<String>,

    /// TOML config file: `[notify] token = "..."` and one `[plugins.<name>]`
    /// table per plugin, handed to that plugin when it loads.
    #[arg(long, env = "ROHRPOST_CONFIG")]
    pub config: Option<PathBuf>,
}

/// The config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub notify: NotifySection,
    /// Per-plugin settings, by plugin name.
    #[serde(default)]
    pub plugins: BTreeMap<String, toml::Table>,
}

/// `[notify]`: the change-notification endpoint.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifySection {
    pub token: Option<String>,
}

impl FileConfig {
    /// Reads and checks the file; an unknown key is an error.
    pub fn load(path: &std::path::Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    /// Each plugin's table as JSON text, the form plugins receive it in.
    pub fn plugin_settings(&self) -> anyhow::Result<BTreeMap<String, String>> {
        self.plugins
            .iter()
            .map(|(name, table)| {
                let json = serde_json::to_string(table)
                    .with_context(|| format!("[plugins.{name}] cannot be passed on as JSON"))?;
                Ok((name.clone(), json))
            })
            .collect()
    }
}

/// Parses "250ms", "2s", "1.5s" or plain seconds ("30").
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, scale) = if let Some(ms) = text.strip_suffix("ms") {
        (ms, 0.001)
    } else if let Some(s) = text.strip_suffix('s') {
        (s, 1.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("'{text}' is not a duration such as 30s or 500ms"))?;
    Duration::try_from_secs_f64(value * scale).map_err(|e| format!("'{text}': {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_file_tables_reach_plugins_as_json() {
        let file: FileConfig = toml::from_str(
            "[notify]\ntoken = \"t\"\n[plugins.subscriptions]\nauth = \"tokens\"\ntokens = [\"a\"]\n",
        )
        .unwrap();
        assert_eq!(file.notify.token.as_deref(), Some("t"));
        assert_eq!(
            file.plugin_settings().unwrap()["subscriptions"],
            r#"{"auth":"tokens","tokens":["a"]}"#
        );
        assert!(toml::from_str::<FileConfig>("[notfy]\ntoken = \"t\"\n").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
