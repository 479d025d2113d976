//! Checks of the settings every backend table has, so that a bad value
//! rejects the plugin's load with its reason instead of failing calls
//! later: the URLs (plain `http://`), the static headers, the forwarded
//! header names, the timeout and the answer's size.

use std::{collections::BTreeMap, time::Duration};

use serde::Deserialize;

/// The longest timeout a table may set.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);
/// The largest `max_response_bytes`.
pub const MAX_RESPONSE_BYTES: u64 = 64 * 1024 * 1024;
/// The most calls at once a table may allow.
pub const MAX_IN_FLIGHT: usize = 65_536;

/// A timeout as written: a duration text or a number of seconds.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Timeout {
    Seconds(f64),
    Text(String),
}

/// The timeout, `default` when unset; above 0 and at most [`MAX_TIMEOUT`].
pub fn timeout(written: Option<Timeout>, default: Duration) -> Result<Duration, String> {
    let timeout = match written {
        None => default,
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
    Ok(timeout)
}

/// Plain HTTP only: the backend sits next to the server.
pub fn check_url(name: &str, url: &str) -> Result<(), String> {
    match url.strip_prefix("http://") {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') => Ok(()),
        _ if url.starts_with("https://") => Err(format!(
            "{name} = \"{url}\": only http:// is supported (put the backend next to the server, or a TLS proxy in between)"
        )),
        _ => Err(format!("{name} = \"{url}\" is not an http:// URL")),
    }
}

/// The static headers, checked: token names, values without line breaks.
pub fn headers(written: BTreeMap<String, String>) -> Result<Vec<(String, String)>, String> {
    for (name, value) in &written {
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err(format!("headers: '{name}' is not a header name"));
        }
        if value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(format!("headers: the value of '{name}' holds a line break"));
        }
    }
    Ok(written.into_iter().collect())
}

/// The forwarded handshake headers' names, lower-case, checked.
pub fn forward_headers(written: &[String]) -> Result<Vec<String>, String> {
    let names: Vec<String> = written.iter().map(|h| h.to_ascii_lowercase()).collect();
    if let Some(bad) = names
        .iter()
        .find(|h| h.is_empty() || !h.bytes().all(is_token_byte))
    {
        return Err(format!("forward_headers: '{bad}' is not a header name"));
    }
    Ok(names)
}

/// `max_response_bytes`, checked.
pub fn max_response_bytes(bytes: u64) -> Result<u64, String> {
    if !(1..=MAX_RESPONSE_BYTES).contains(&bytes) {
        return Err(format!(
            "max_response_bytes must be 1 to {MAX_RESPONSE_BYTES}"
        ));
    }
    Ok(bytes)
}

/// `max_in_flight`, checked.
pub fn max_in_flight(calls: usize) -> Result<usize, String> {
    if !(1..=MAX_IN_FLIGHT).contains(&calls) {
        return Err(format!("max_in_flight must be 1 to {MAX_IN_FLIGHT}"));
    }
    Ok(calls)
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

    #[test]
    fn checks() {
        assert_eq!(
            timeout(None, Duration::from_secs(5)).unwrap(),
            Duration::from_secs(5)
        );
        assert_eq!(
            timeout(Some(Timeout::Text("250ms".into())), Duration::ZERO).unwrap(),
            Duration::from_millis(250)
        );
        assert!(timeout(Some(Timeout::Seconds(0.0)), Duration::ZERO).is_err());
        assert!(check_url("url", "https://b/")
            .unwrap_err()
            .contains("only http://"));
        assert!(check_url("url", "http://b/").is_ok());
        assert!(check_url("url", "b/").is_err());
        let bad = BTreeMap::from([("X".to_owned(), "a\nb".to_owned())]);
        assert!(headers(bad).is_err());
        assert_eq!(forward_headers(&["Cookie".into()]).unwrap(), ["cookie"]);
        assert!(forward_headers(&["a b".into()]).is_err());
    }
}
