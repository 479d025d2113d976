//! The `[plugins.proxy]` table: what the operator writes, checked once per
//! load into what the plugin uses, so that a bad table rejects the load
//! with its reason instead of failing requests later.

use std::{collections::BTreeMap, time::Duration};

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

/// A timeout as a duration text or a number of seconds.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Timeout {
    Seconds(f64),
    Text(String),
}

fn default_max_in_flight() -> usize {
    256
}

fn default_max_response_bytes() -> u64 {
    1024 * 1024
}

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
const MAX_IN_FLIGHT: usize = 65_536;
const MAX_RESPONSE_BYTES: u64 = 64 * 1024 * 1024;
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
        let timeout = match s.timeout {
            None => DEFAULT_TIMEOUT,
            Some(Timeout::Seconds(n)) => Duration::try_from_secs_f64(n)
                .map_err(|_| format!("timeout = {n} is not a number of seconds"))?,
            Some(Timeout::Text(text)) => parse_duration(&text)?,
        };
        if timeout.is_zero() || timeout > MAX_TIMEOUT {
            return Err(format!(
                "timeout must be above 0 and at most {} s",
                MAX_TIMEOUT.as_secs()
            ));
        }
        if !(1..=MAX_IN_FLIGHT).contains(&s.max_in_flight) {
            return Err(format!("max_in_flight must be 1 to {MAX_IN_FLIGHT}"));
        }
        if !(1..=MAX_RESPONSE_BYTES).contains(&s.max_response_bytes) {
            return Err(format!(
                "max_response_bytes must be 1 to {MAX_RESPONSE_BYTES}"
            ));
        }
        for (name, value) in &s.headers {
            if name.is_empty() || !name.bytes().all(is_token_byte) {
                return Err(format!("headers: '{name}' is not a header name"));
            }
            if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                return Err(format!("headers: the value of '{name}' holds a line break"));
            }
        }
        let forward_headers: Vec<String> = s
            .forward_headers
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect();
        if let Some(bad) = forward_headers
            .iter()
            .find(|h| h.is_empty() || !h.bytes().all(is_token_byte))
        {
            return Err(format!("forward_headers: '{bad}' is not a header name"));
        }
        Ok(Config {
            url: s.url,
            types: s.types,
            timeout,
            max_in_flight: s.max_in_flight,
            headers: s.headers.into_iter().collect(),
            forward_headers,
            max_response_bytes: s.max_response_bytes,
            connect_url: s.connect_url,
            disconnect_url: s.disconnect_url,
        })
    }
}

/// Plain HTTP only: the backend sits next to the server.
fn check_url(name: &str, url: &str) -> Result<(), String> {
    match url.strip_prefix("http://") {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') => Ok(()),
        _ if url.starts_with("https://") => Err(format!(
            "{name} = \"{url}\": only http:// is supported (put the backend next to the server, or a TLS proxy in between)"
        )),
        _ => Err(format!("{name} = \"{url}\" is not an http:// URL")),
    }
}

/// A header name's characters (RFC 9110 token).
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `"10s"`, `"500ms"`, `"2m"`, or a bare number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (number, scale) = if let Some(ms) = t.strip_suffix("ms") {
        (ms, 0.001)
    } else if let Some(s) = t.strip_suffix('s') {
        (s, 1.0)
    } else if let Some(m) = t.strip_suffix('m') {
        (m, 60.0)
    } else {
        (t, 1.0)
    };
    number
        .trim()
        .parse::<f64>()
        .ok()
        .and_then(|v| Duration::try_from_secs_f64(v * scale).ok())
        .ok_or_else(|| format!("timeout = \"{text}\" is not a duration such as 10s or 500ms"))
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
