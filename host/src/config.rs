//! Command-line settings of the host, with their defaults.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;

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
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
