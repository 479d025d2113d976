//! What plugins report through the host (plugin-api 1.3's questions
//! [`ASK_COUNT`](rohrpost_plugin_api::abi::ASK_COUNT) and
//! [`ASK_LOG`](rohrpost_plugin_api::abi::ASK_LOG)): their own counters,
//! shown in `/metrics` as `rohrpost_plugin_counts_total{plugin,event,kind}`,
//! and their log lines, written by the host's logger (so
//! `--log-format json` applies) with the plugin's name.
//!
//! A plugin runs code the operator deployed, but it may put a client's text
//! into what it reports by mistake, so everything is bounded per plugin:
//! names and kinds keep to a small character set and length, a plugin has
//! at most [`MAX_SERIES`] counter series (a new one past them is refused
//! with an error answer and counted), a log line's text is cut at
//! [`MAX_MESSAGE_BYTES`] and its fields at [`MAX_FIELDS`] of
//! [`MAX_FIELD_BYTES`], and a plugin's lines are rate-limited
//! ([`LINES_PER_INTERVAL`] per [`crate::base::log_limit::INTERVAL`]); the
//! dropped ones are counted.
//!
//! The plugin's name comes from the host, never from the plugin: the
//! thread of an in-process call is marked with it, a worker's supervisor
//! knows its plugin.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
    registry::Registry,
};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::base::log_limit::{LogDecision, LogLimit, INTERVAL};

/// Counter series (event and kind pairs) one plugin may have.
pub(crate) const MAX_SERIES: usize = 100;
/// The longest event name and kind, in bytes.
pub(crate) const MAX_NAME_BYTES: usize = 64;
/// The most one question may add to a counter.
pub(crate) const MAX_BY: u64 = 1_000_000;
/// A log line's message is cut here.
pub(crate) const MAX_MESSAGE_BYTES: usize = 2048;
/// Fields kept per log line; the rest are dropped.
pub(crate) const MAX_FIELDS: usize = 16;
/// A field's value is cut here.
pub(crate) const MAX_FIELD_BYTES: usize = 512;
/// The largest log question read at all.
pub(crate) const MAX_LOG_INPUT_BYTES: usize = 64 * 1024;
/// Log lines of one plugin per interval.
pub(crate) const LINES_PER_INTERVAL: u64 = 100;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CountLabels {
    plugin: String,
    event: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabel {
    plugin: String,
}

/// Every plugin's reports.
pub(crate) struct PluginReports {
    counts: Family<CountLabels, Counter>,
    refused: Family<PluginLabel, Counter>,
    dropped: Family<PluginLabel, Counter>,
    plugins: Mutex<HashMap<String, Arc<Reporter>>>,
}

/// One plugin's reports, across its versions.
struct Reporter {
    name: String,
    series: Mutex<HashMap<(String, String), Counter>>,
    lines: LogLimit,
    refused: Counter,
    dropped: Counter,
}

/// `ASK_COUNT`'s input.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CountInput {
    event: String,
    #[serde(default)]
    kind: String,
    #[serde(default = "one")]
    by: u64,
}

fn one() -> u64 {
    1
}

/// `ASK_LOG`'s input.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogInput {
    level: String,
    message: String,
    #[serde(default)]
    fields: Map<String, Value>,
}

impl PluginReports {
    /// Registers the families in `registry`.
    pub(crate) fn register(registry: &mut Registry) -> PluginReports {
        let counts = Family::<CountLabels, Counter>::default();
        registry.register(
            "plugin_counts",
            "Events counted by plugins themselves (plugin-api count), by plugin, event and kind",
            counts.clone(),
        );
        let refused = Family::<PluginLabel, Counter>::default();
        registry.register(
            "plugin_counts_refused",
            "Counts refused because the plugin had its maximum of counter series already, or named one against the rule, by plugin",
            refused.clone(),
        );
        let dropped = Family::<PluginLabel, Counter>::default();
        registry.register(
            "plugin_log_lines_dropped",
            "Plugin log lines dropped by the host's rate limit per plugin, by plugin",
            dropped.clone(),
        );
        PluginReports {
            counts,
            refused,
            dropped,
            plugins: Mutex::default(),
        }
    }

    fn reporter(&self, plugin: &str) -> Arc<Reporter> {
        let mut plugins = crate::base::lock::lock(&self.plugins);
        if let Some(reporter) = plugins.get(plugin) {
            return reporter.clone();
        }
        let label = PluginLabel {
            plugin: plugin.to_owned(),
        };
        let reporter = Arc::new(Reporter {
            name: plugin.to_owned(),
            series: Mutex::default(),
            lines: LogLimit::with_lines("plugin_log", LINES_PER_INTERVAL),
            refused: self.refused.get_or_create(&label).clone(),
            dropped: self.dropped.get_or_create(&label).clone(),
        });
        plugins.insert(plugin.to_owned(), reporter.clone());
        reporter
    }

    /// Answers `ASK_COUNT` for `plugin`.
    pub(crate) fn count(&self, plugin: &str, input: &str) -> Result<String, String> {
        let reporter = self.reporter(plugin);
        let refuse = |why: String| {
            reporter.refused.inc();
            Err(why)
        };
        if input.len() > 4 * MAX_NAME_BYTES + 64 {
            return refuse("the count question is too large".into());
        }
        let input: CountInput = match serde_json::from_str(input) {
            Ok(input) => input,
            Err(e) => return refuse(format!("not a count question: {e}")),
        };
        if let Err(why) = check_event(&input.event) {
            return refuse(why);
        }
        if let Err(why) = check_kind(&input.kind) {
            return refuse(why);
        }
        if input.by > MAX_BY {
            return refuse(format!("by = {} is more than {MAX_BY}", input.by));
        }
        let counter = {
            let mut series = crate::base::lock::lock(&reporter.series);
            let key = (input.event, input.kind);
            match series.get(&key) {
                Some(counter) => counter.clone(),
                None if series.len() >= MAX_SERIES => {
                    drop(series);
                    return refuse(format!(
                        "the plugin has {MAX_SERIES} counter series already, the most it may have"
                    ));
                }
                None => {
                    let counter = self
                        .counts
                        .get_or_create(&CountLabels {
                            plugin: plugin.to_owned(),
                            event: key.0.clone(),
                            kind: key.1.clone(),
                        })
                        .clone();
                    series.insert(key, counter.clone());
                    counter
                }
            }
        };
        counter.inc_by(input.by);
        Ok("{}".to_owned())
    }

    /// Answers `ASK_LOG` for `plugin`: logs the line unless the plugin's
    /// rate limit drops it.
    pub(crate) fn log(&self, plugin: &str, input: &str) -> Result<String, String> {
        if input.len() > MAX_LOG_INPUT_BYTES {
            return Err(format!(
                "the log question is larger than {MAX_LOG_INPUT_BYTES} bytes"
            ));
        }
        let input: LogInput =
            serde_json::from_str(input).map_err(|e| format!("not a log question: {e}"))?;
        let level = match input.level.as_str() {
            "error" => tracing::Level::ERROR,
            "warn" => tracing::Level::WARN,
            "info" => tracing::Level::INFO,
            "debug" => tracing::Level::DEBUG,
            "trace" => tracing::Level::TRACE,
            other => return Err(format!("not a log level: {:?}", cut(other, 16))),
        };
        if !enabled(level) {
            return Ok(r#"{"logged":false}"#.to_owned());
        }
        let reporter = self.reporter(plugin);
        match reporter.lines.verdict() {
            LogDecision::Log { suppressed: 0 } => {}
            LogDecision::Log { suppressed } => {
                tracing::warn!(plugin = %reporter.name, suppressed,
                    "{suppressed} log lines of the plugin were dropped by the rate limit");
            }
            LogDecision::Suppress { first } => {
                reporter.dropped.inc();
                if first {
                    tracing::warn!(plugin = %reporter.name, limit = LINES_PER_INTERVAL,
                        interval_s = INTERVAL.as_secs(),
                        "the plugin logs more than {LINES_PER_INTERVAL} lines in {} s; dropping its lines for the rest of the interval",
                        INTERVAL.as_secs());
                }
                return Ok(r#"{"logged":false}"#.to_owned());
            }
        }
        let message = cut(&input.message, MAX_MESSAGE_BYTES);
        let fields = fields_text(&input.fields);
        emit(level, &reporter.name, &message, fields.as_deref());
        Ok(r#"{"logged":true}"#.to_owned())
    }
}

/// An event name: `a-z`, `0-9`, `_`, a letter first.
fn check_event(event: &str) -> Result<(), String> {
    let ok = !event.is_empty()
        && event.len() <= MAX_NAME_BYTES
        && event.as_bytes()[0].is_ascii_lowercase()
        && event
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "the event name {:?} is not 1 to {MAX_NAME_BYTES} characters of a-z, 0-9 and _ starting with a letter",
            cut(event, MAX_NAME_BYTES)
        ))
    }
}

/// A kind: ASCII letters, digits, `_`, `-`, `.`; may be empty.
fn check_kind(kind: &str) -> Result<(), String> {
    let ok = kind.len() <= MAX_NAME_BYTES
        && kind
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "the kind {:?} is not up to {MAX_NAME_BYTES} characters of ASCII letters, digits, _, - and .",
            cut(kind, MAX_NAME_BYTES)
        ))
    }
}

/// `text`, cut to at most `max` bytes at a character boundary, with `…`
/// when cut.
fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The fields as one JSON object text (names as given, checked; values
/// as text, cut); `None` without fields.
fn fields_text(fields: &Map<String, Value>) -> Option<String> {
    let kept: Map<String, Value> = fields
        .iter()
        .filter(|(name, _)| check_event(name).is_ok())
        .take(MAX_FIELDS)
        .map(|(name, value)| {
            let text = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (name.clone(), Value::from(cut(&text, MAX_FIELD_BYTES)))
        })
        .collect();
    (!kept.is_empty()).then(|| Value::Object(kept).to_string())
}

/// Whether the host's filter lets lines of the plugins at `level` through.
fn enabled(level: tracing::Level) -> bool {
    match level {
        tracing::Level::ERROR => {
            tracing::enabled!(target: "rohrpost::plugin", tracing::Level::ERROR)
        }
        tracing::Level::WARN => tracing::enabled!(target: "rohrpost::plugin", tracing::Level::WARN),
        tracing::Level::INFO => tracing::enabled!(target: "rohrpost::plugin", tracing::Level::INFO),
        tracing::Level::DEBUG => {
            tracing::enabled!(target: "rohrpost::plugin", tracing::Level::DEBUG)
        }
        tracing::Level::TRACE => {
            tracing::enabled!(target: "rohrpost::plugin", tracing::Level::TRACE)
        }
    }
}

/// Writes one plugin line through the host's logger.
fn emit(level: tracing::Level, plugin: &str, message: &str, fields: Option<&str>) {
    macro_rules! at {
        ($level:expr) => {
            match fields {
                Some(fields) => tracing::event!(target: "rohrpost::plugin", $level,
                    plugin = %plugin, fields = %fields, "{message}"),
                None => tracing::event!(target: "rohrpost::plugin", $level,
                    plugin = %plugin, "{message}"),
            }
        };
    }
    match level {
        tracing::Level::ERROR => at!(tracing::Level::ERROR),
        tracing::Level::WARN => at!(tracing::Level::WARN),
        tracing::Level::INFO => at!(tracing::Level::INFO),
        tracing::Level::DEBUG => at!(tracing::Level::DEBUG),
        tracing::Level::TRACE => at!(tracing::Level::TRACE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reports() -> PluginReports {
        PluginReports::register(&mut Registry::default())
    }

    #[test]
    fn counts_are_bounded_per_plugin() {
        let r = reports();
        assert!(r.count("p", r#"{"event":"calls","kind":"ok"}"#).is_ok());
        assert!(r
            .count("p", r#"{"event":"calls","kind":"ok","by":3}"#)
            .is_ok());
        let ok = r
            .counts
            .get_or_create(&CountLabels {
                plugin: "p".into(),
                event: "calls".into(),
                kind: "ok".into(),
            })
            .get();
        assert_eq!(ok, 4);
        for bad in [
            r#"{"event":"Calls"}"#,
            r#"{"event":"1a"}"#,
            r#"{"event":""}"#,
            r#"{"event":"a","kind":"x y"}"#,
            r#"{"event":"a","by":10000000}"#,
            r#"{"event":"a","extra":1}"#,
            "not json",
        ] {
            assert!(r.count("p", bad).is_err(), "{bad}");
        }
        let long = format!(r#"{{"event":"{}"}}"#, "a".repeat(65));
        assert!(r.count("p", &long).is_err());
        for i in 1..MAX_SERIES {
            let input = format!(r#"{{"event":"e","kind":"k{i}"}}"#);
            assert!(r.count("p", &input).is_ok(), "{i}");
        }
        let refused = r.count("p", r#"{"event":"e","kind":"one_more"}"#);
        assert!(refused.unwrap_err().contains("counter series"));
        // Existing series still count, and another plugin has its own.
        assert!(r.count("p", r#"{"event":"calls","kind":"ok"}"#).is_ok());
        assert!(r.count("q", r#"{"event":"e","kind":"one_more"}"#).is_ok());
    }

    #[test]
    fn text_is_cut_at_a_character_boundary() {
        assert_eq!(cut("abc", 3), "abc");
        let cut_text = cut(&"é".repeat(10), 7);
        assert!(cut_text.len() <= 7, "{cut_text}");
        assert!(cut_text.ends_with('…'));
        let fields: Map<String, Value> =
            serde_json::from_str(r#"{"ok":"v","Bad Name":"x","n":5}"#).unwrap();
        assert_eq!(fields_text(&fields).unwrap(), r#"{"ok":"v","n":"5"}"#);
        assert_eq!(fields_text(&Map::new()), None);
    }

    #[test]
    fn log_questions_are_checked() {
        let r = reports();
        assert!(r.log("p", r#"{"level":"loud","message":"x"}"#).is_err());
        assert!(r.log("p", "{}").is_err());
        let huge = format!(
            r#"{{"level":"warn","message":"{}"}}"#,
            "x".repeat(MAX_LOG_INPUT_BYTES)
        );
        assert!(r.log("p", &huge).is_err());
    }
}
