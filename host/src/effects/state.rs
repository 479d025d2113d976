//! What plugins attached to one connection (plugin-api 1.2's
//! `conn.set(key, value)`), kept per plugin name so that a plugin sees only
//! its own, also across its reloads, and dropped with the connection.
//!
//! A plugin reads it from the scope of its calls, under
//! [`SCOPE_STATE`]: each plugin with state has a scope text of its own,
//! rebuilt when its state changes, so that a call costs no copy.
//! What one plugin keeps on one connection is bounded in bytes (keys and
//! values as JSON text): a call that would go past the bound fails whole.

use std::{collections::HashMap, sync::Arc};

use rohrpost_plugin_api::abi::SCOPE_STATE;
use serde_json::{value::RawValue, Map, Value};

/// One connection's state, per plugin.
#[derive(Default)]
pub(crate) struct ConnState {
    plugins: HashMap<String, PluginState>,
    /// Each plugin's scope with its state in it; shared with the calls
    /// running, replaced when a state changes.
    scopes: Arc<Scopes>,
}

/// The scopes of the plugins with state, by plugin name.
pub(crate) type Scopes = HashMap<String, Arc<str>>;

struct PluginState {
    values: Map<String, Value>,
}

/// One change a call asks for: a key, and its new value as JSON text
/// (`None` removes it).
pub(crate) type Change<'a> = (&'a str, Option<&'a str>);

/// Why a call's changes were refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// More than the bound would be kept.
    TooLarge { limit: usize },
    /// A value that is not JSON (only a library bypassing plugin-api).
    NotJson,
}

impl ConnState {
    /// The scopes of the plugins with state, for the calls to come.
    pub(crate) fn scopes(&self) -> Arc<Scopes> {
        self.scopes.clone()
    }

    /// The scope a call of `plugin` gets.
    pub(crate) fn scope_for<'a>(&'a self, plugin: &str, base: &'a Arc<str>) -> &'a Arc<str> {
        self.scopes.get(plugin).unwrap_or(base)
    }

    /// Applies `changes` for `plugin`, all or none: refused when the state
    /// would then be over `limit` bytes.
    pub(crate) fn apply(
        &mut self,
        plugin: &str,
        changes: &[Change<'_>],
        limit: usize,
        base: &str,
    ) -> Result<(), Refused> {
        let mut values = self
            .plugins
            .get(plugin)
            .map(|p| p.values.clone())
            .unwrap_or_default();
        for (key, value) in changes {
            match value {
                Some(text) => {
                    let value: Value = serde_json::from_str(text).map_err(|_| Refused::NotJson)?;
                    values.insert((*key).to_owned(), value);
                }
                None => {
                    values.remove(*key);
                }
            }
        }
        if values.is_empty() {
            self.plugins.remove(plugin);
            Arc::make_mut(&mut self.scopes).remove(plugin);
            return Ok(());
        }
        let text = Value::Object(values).to_string();
        if text.len() > limit {
            return Err(Refused::TooLarge { limit });
        }
        let Ok(Value::Object(values)) = serde_json::from_str::<Value>(&text) else {
            return Err(Refused::NotJson);
        };
        Arc::make_mut(&mut self.scopes).insert(plugin.to_owned(), with_state(base, &text));
        self.plugins
            .insert(plugin.to_owned(), PluginState { values });
        Ok(())
    }
}

/// `base` (a JSON object) with `state` (a JSON object) under
/// [`SCOPE_STATE`].
fn with_state(base: &str, state: &str) -> Arc<str> {
    let trimmed = base.trim_end();
    let Some(open) = trimmed.strip_suffix('}') else {
        return Arc::from(base);
    };
    let empty = open.trim_end().ends_with('{');
    let mut out = String::with_capacity(base.len() + state.len() + 24);
    out.push_str(open);
    if !empty {
        out.push(',');
    }
    out.push('"');
    out.push_str(SCOPE_STATE);
    out.push_str("\":");
    out.push_str(state);
    out.push('}');
    // Checked once here: the scope stays a valid object.
    match serde_json::from_str::<&RawValue>(&out) {
        Ok(_) => Arc::from(out),
        Err(_) => Arc::from(base),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_is_per_plugin_bounded_and_in_the_scope() {
        let base: Arc<str> = Arc::from(r#"{"connection_id":1}"#);
        let mut state = ConnState::default();
        state
            .apply("a", &[("user", Some("\"ada\""))], 64, &base)
            .unwrap();
        assert_eq!(
            state.scope_for("a", &base).as_ref(),
            r#"{"connection_id":1,"rohrpost.state":{"user":"ada"}}"#
        );
        assert_eq!(state.scope_for("b", &base).as_ref(), base.as_ref());
        let big = format!("\"{}\"", "x".repeat(100));
        assert_eq!(
            state.apply("a", &[("more", Some(big.as_str()))], 64, &base),
            Err(Refused::TooLarge { limit: 64 })
        );
        assert_eq!(
            state.scope_for("a", &base).as_ref(),
            r#"{"connection_id":1,"rohrpost.state":{"user":"ada"}}"#,
            "all or none"
        );
        state.apply("a", &[("user", None)], 64, &base).unwrap();
        assert_eq!(state.scope_for("a", &base).as_ref(), base.as_ref());
        assert_eq!(
            state.apply("a", &[("k", Some("{"))], 64, &base),
            Err(Refused::NotJson)
        );
        assert_eq!(
            with_state("{}", "{\"k\":1}").as_ref(),
            r#"{"rohrpost.state":{"k":1}}"#
        );
    }
}
