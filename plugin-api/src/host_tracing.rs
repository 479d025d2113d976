//! With the `tracing` feature: a `tracing` subscriber that hands a
//! plugin's events to [`host::log`](crate::host::log), so that a plugin
//! (or a library it uses) that logs with `tracing::warn!` and friends
//! logs through the host: in its format, with the plugin's name, within
//! its bounds, and to standard error outside a call. Spans are not kept;
//! an event's `message` is the line, its other fields the line's fields.

use std::fmt::{Debug, Write as _};

use tracing::{
    field::{Field, Visit},
    span, Event, Level, Metadata, Subscriber,
};

use crate::host::{self, Level as HostLevel};

/// The subscriber; install it once per load with [`HostSubscriber::install`].
#[derive(Debug, Clone, Copy)]
pub struct HostSubscriber {
    max: Level,
}

impl HostSubscriber {
    /// A subscriber that passes events up to `max` (the host filters
    /// further by its own level).
    pub fn new(max: Level) -> Self {
        HostSubscriber { max }
    }

    /// Makes it this library's global subscriber (each load of a plugin
    /// has its own copy of `tracing`); `false` when one was set already.
    pub fn install(self) -> bool {
        tracing::subscriber::set_global_default(self).is_ok()
    }
}

impl Default for HostSubscriber {
    /// Up to `info`.
    fn default() -> Self {
        HostSubscriber::new(Level::INFO)
    }
}

/// The most fields of one event kept (the host keeps fewer still).
const MAX_FIELDS: usize = 32;

/// An event's message and fields, as text.
#[derive(Default)]
struct Collected {
    message: String,
    fields: Vec<(&'static str, String)>,
}

impl Visit for Collected {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else if self.fields.len() < MAX_FIELDS {
            self.fields.push((field.name(), value.to_owned()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else if self.fields.len() < MAX_FIELDS {
            self.fields.push((field.name(), format!("{value:?}")));
        }
    }
}

impl Subscriber for HostSubscriber {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= self.max
    }

    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(1)
    }

    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}

    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut collected = Collected::default();
        event.record(&mut collected);
        let level = match *event.metadata().level() {
            Level::ERROR => HostLevel::Error,
            Level::WARN => HostLevel::Warn,
            Level::INFO => HostLevel::Info,
            Level::DEBUG => HostLevel::Debug,
            Level::TRACE => HostLevel::Trace,
        };
        let fields: Vec<(&str, &str)> = collected
            .fields
            .iter()
            .map(|(name, value)| (*name, value.as_str()))
            .collect();
        host::log(level, &collected.message, &fields);
    }

    fn enter(&self, _: &span::Id) {}

    fn exit(&self, _: &span::Id) {}
}
