//! Warnings a plugin's configuration step hands the host: settings that are
//! valid but that an operator should hear about (for example one that lets
//! everyone in). The host logs each one, naming the plugin, when the
//! configuration step succeeds.

use std::cell::RefCell;

thread_local! {
    /// The warnings of the configuration step running on this thread;
    /// `None` outside one.
    static WARNINGS: RefCell<Option<Vec<String>>> = const { RefCell::new(None) };
}

/// Called from a [`Plugin::with_config`](crate::Plugin::with_config)
/// closure: a warning the host logs with the plugin's name when the step
/// returns `Ok` (one line each; line breaks become spaces). Outside a
/// configuration step it does nothing. A host older than plugin-api 1.1
/// does not configure plugins, and one that does not know warnings ignores
/// them.
///
/// ```
/// use rohrpost_plugin_api::{config_warning, Plugin};
///
/// let plugin = Plugin::new("hello", "1.0.0").with_config(|open: bool| {
///     if open {
///         config_warning("open = true: anyone may say hello");
///     }
///     Ok(())
/// });
/// # let _ = plugin;
/// ```
pub fn config_warning(text: impl Into<String>) {
    let text = text.into().replace(['\n', '\r'], " ");
    WARNINGS.with(|warnings| {
        if let Some(warnings) = warnings.borrow_mut().as_mut() {
            warnings.push(text);
        }
    });
}

/// Runs a configuration step, collecting its warnings: one line each.
pub(crate) fn collecting<T>(step: impl FnOnce() -> T) -> (T, String) {
    WARNINGS.with(|warnings| *warnings.borrow_mut() = Some(Vec::new()));
    // Should `step` unwind, the list stays behind until the next step
    // starts a fresh one.
    let outcome = step();
    let collected = WARNINGS
        .with(|warnings| warnings.borrow_mut().take())
        .unwrap_or_default();
    (outcome, collected.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_of_a_step_are_collected_one_per_line() {
        config_warning("before: ignored");
        let ((), warnings) = collecting(|| {
            config_warning("first");
            config_warning("second\nline");
        });
        assert_eq!(warnings, "first\nsecond line");
        config_warning("after: ignored");
        let ((), warnings) = collecting(|| {});
        assert_eq!(warnings, "");
    }
}
