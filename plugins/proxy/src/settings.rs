//! The `[plugins.proxy]` table: what the operator writes, checked once per
//! load into what the plugin uses, so that a bad table rejects the load
//! with its reason instead of failing requests later.

use std::{collections::BTreeMap, time::Duration};

use backend_http::settings::{self as checks, check_url, Timeout};
use serde::Deserialize;

/// The table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Where each request is POSTed, `http://host:port/path`.
    url: String,
    /// The message types served through the backend.
    types: Vec<String>,
    /// How long one backend call may take, `"10s"`, `"500ms"` or seconds.
    #[serde(default)]
    timeout: Option<Timeout>,
    /// Backend calls at once; past it a request is answered at once with
    /// the backend's error reply.
    #[serde(default = "default_max_in_flight")]
    max_in_flight: usize,
    /// Sent with every backend call (a shared secret, for instance).
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// Handshake headers passed on to the backend (none by default).
    #[serde(default)]
    forward_headers: Vec<String>,
    /// The largest backend answer read, in bytes.
    #[serde(default = "default_max_response_bytes")]
    max_response_bytes: u64,
    /// Told when a connection opens; may refuse it.
    #[serde(default)]
    connect_url: Option<String>,
    /// Told once when a connection ended.
    #[serde(default)]
    disconnect_url: Option<String>,
}

fn default_max_in_flight() -> usize {
    256
}

fn default_max_response_bytes() -> u64 {
    1024 * 1024
}

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_TYPES: usize = 10_000;

/// The checked settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub url: String,
    pub types: Vec<String>,
    pub timeout: Duration,
    pub max_in_flight: usize,
    pub headers: Vec<(String, String)>,
    /// Lower-case names.
    pub forward_headers: Vec<String>,
    pub max_response_bytes: u64,
    pub connect_url: Option<String>,
    pub disconnect_url: Option<String>,
}

impl TryFrom<Settings> for Config {
    type Error = String;

    fn try_from(s: Settings) -> Result<Self, String> {
        check_url("url", &s.url)?;
        for (name, url) in [
            ("connect_url", &s.connect_url),
            ("disconnect_url", &s.disconnect_url),
        ] {
            if let Some(url) = url {
                check_url(name, url)?;
            }
        }
        if s.types.is_empty() {
            return Err("types must name at least one message type".into());
        }
        if s.types.len() > MAX_TYPES {
            return Err(format!("types names more than {MAX_TYPES} message types"));
        }
        if s.types.iter().any(|t| t.is_empty()) {
            return Err("types holds an empty message type".into());
        }
        let timeout = checks::timeout(s.timeout, DEFAULT_TIMEOUT)?;
        let max_in_flight = checks::max_in_flight(s.max_in_flight)?;
        let max_response_bytes = checks::max_response_bytes(s.max_response_bytes)?;
        let headers = checks::headers(s.headers)?;
        let forward_headers = checks::forward_headers(&s.forward_headers)?;
        Ok(Config {
            url: s.url,
            types: s.types,
            timeout,
            max_in_flight,
            headers,
            forward_headers,
            max_response_bytes,
            connect_url: s.connect_url,
            disconnect_url: s.disconnect_url,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: serde_json::Value) -> Result<Config, String> {
        let settings: Settings = serde_json::from_value(json).map_err(|e| e.to_string())?;
        Config::try_from(settings)
    }

    #[test]
    fn defaults_and_checks() {
        let c =
            config(serde_json::json!({"url": "http://127.0.0.1:8001/rohrpost/", "types": ["a"]}))
                .unwrap();
        assert_eq!(c.timeout, DEFAULT_TIMEOUT);
        assert_eq!(c.max_in_flight, 256);
        assert!(c.forward_headers.is_empty());
        let c = config(
            serde_json::json!({"url": "http://b/", "types": ["a"], "timeout": "250ms",
            "forward_headers": ["Cookie"]}),
        )
        .unwrap();
        assert_eq!(c.timeout, Duration::from_millis(250));
        assert_eq!(c.forward_headers, ["cookie"]);
        assert!(
            config(serde_json::json!({"url": "https://b/", "types": ["a"]}))
                .unwrap_err()
                .contains("only http://")
        );
        assert!(config(serde_json::json!({"url": "http://b/", "types": []})).is_err());
        assert!(
            config(serde_json::json!({"url": "http://b/", "types": ["a"], "timeout": 0})).is_err()
        );
        assert!(config(
            serde_json::json!({"url": "http://b/", "types": ["a"], "headers": {"X": "a\nb"}})
        )
        .is_err());
        assert!(
            config(serde_json::json!({"url": "http://b/", "types": ["a"], "typo": 1})).is_err()
        );
    }
}
