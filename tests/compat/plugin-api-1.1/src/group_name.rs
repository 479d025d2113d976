//! What a group name may be, in one place for the host and for plugins.
//!
//! Group names come from clients (through handlers), from backends (through
//! the host's `POST /api/notify`) and from other hosts (through Redis), and
//! end up as map keys, log fields and Redis channel names. Without a rule,
//! `../..`, a newline, a NUL byte or a 100 MB name would all be accepted.
//! The default rule is Django Channels': ASCII letters, digits, `-`, `_` and
//! `.`, at least one and fewer than 100 characters. A host may widen it to
//! [`GroupNameRule::Relaxed`].

use std::fmt;

/// Django Channels' bound: a group name is shorter than this.
pub const CHANNELS_NAME_LIMIT: usize = 100;

/// The relaxed rule's bound: a group name is at most this many bytes.
pub const RELAXED_NAME_MAX_BYTES: usize = 1024;

/// Which group names are accepted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GroupNameRule {
    /// Django Channels' rule: ASCII letters, digits, `-`, `_` and `.`;
    /// not empty and shorter than [`CHANNELS_NAME_LIMIT`] characters.
    #[default]
    Channels,
    /// Any printable UTF-8 without whitespace or control characters; not
    /// empty and at most [`RELAXED_NAME_MAX_BYTES`] bytes.
    Relaxed,
}

/// Why a group name is refused. The text names the problem without
/// repeating a long name in full.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GroupNameError {
    /// The name is empty.
    #[error("the group name is empty")]
    Empty,
    /// The name is too long.
    #[error("the group name {shown} is {len} bytes long; the most allowed is {max}")]
    TooLong {
        /// The start of the name, quoted and escaped.
        shown: NamePreview,
        /// Its length in bytes.
        len: usize,
        /// The most bytes the rule allows.
        max: usize,
    },
    /// The name contains a character the rule does not allow.
    #[error("the group name {shown} contains {found:?} at byte {at}; {allowed}")]
    BadCharacter {
        /// The start of the name, quoted and escaped.
        shown: NamePreview,
        /// The first character not allowed.
        found: char,
        /// Where it is, in bytes from the start.
        at: usize,
        /// What the rule allows.
        allowed: &'static str,
    },
}

/// The start of a name for an error text or a log line: quoted, escaped,
/// and cut after a few dozen characters.
#[derive(Clone, PartialEq, Eq)]
pub struct NamePreview(String);

impl NamePreview {
    /// How many characters of a name are shown.
    const CHARS: usize = 40;

    /// The start of `name`, ready to print.
    pub fn new(name: &str) -> Self {
        let mut chars = name.chars();
        let head: String = chars.by_ref().take(Self::CHARS).collect();
        let cut = if chars.next().is_some() { "..." } else { "" };
        NamePreview(format!("{:?}{cut}", head))
    }
}

impl fmt::Display for NamePreview {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NamePreview {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl GroupNameRule {
    /// The most bytes a name may have under this rule.
    pub fn max_len(self) -> usize {
        match self {
            GroupNameRule::Channels => CHANNELS_NAME_LIMIT - 1,
            GroupNameRule::Relaxed => RELAXED_NAME_MAX_BYTES,
        }
    }

    /// The setting's value: `channels` or `relaxed`.
    pub fn as_str(self) -> &'static str {
        match self {
            GroupNameRule::Channels => "channels",
            GroupNameRule::Relaxed => "relaxed",
        }
    }

    /// Whether `name` is a group name under this rule; the error says why
    /// not.
    ///
    /// ```
    /// use rohrpost_plugin_api::GroupNameRule;
    ///
    /// assert!(GroupNameRule::Channels.check("collection-52").is_ok());
    /// assert!(GroupNameRule::Channels.check("../..").is_err());
    /// assert!(GroupNameRule::Channels.check("room:één").is_err());
    /// assert!(GroupNameRule::Relaxed.check("room:één").is_ok());
    /// assert!(GroupNameRule::Relaxed.check("a b").is_err());
    /// ```
    pub fn check(self, name: &str) -> Result<(), GroupNameError> {
        if name.is_empty() {
            return Err(GroupNameError::Empty);
        }
        let max = self.max_len();
        if name.len() > max {
            return Err(GroupNameError::TooLong {
                shown: NamePreview::new(name),
                len: name.len(),
                max,
            });
        }
        let (allowed, ok): (&'static str, fn(char) -> bool) = match self {
            GroupNameRule::Channels => (
                "group names may contain only ASCII letters, digits, '-', '_' and '.'",
                |c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'),
            ),
            GroupNameRule::Relaxed => (
                "group names may not contain whitespace or control characters",
                |c| !c.is_whitespace() && !c.is_control(),
            ),
        };
        match name.char_indices().find(|&(_, c)| !ok(c)) {
            None => Ok(()),
            Some((at, found)) => Err(GroupNameError::BadCharacter {
                shown: NamePreview::new(name),
                found,
                at,
                allowed,
            }),
        }
    }
}

impl std::str::FromStr for GroupNameRule {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim() {
            "channels" => Ok(GroupNameRule::Channels),
            "relaxed" => Ok(GroupNameRule::Relaxed),
            other => Err(format!(
                "'{other}' is not a group name rule: channels or relaxed"
            )),
        }
    }
}

/// Whether `name` is a group name under the default rule (Django
/// Channels').
///
/// ```
/// use rohrpost_plugin_api::check_group_name;
///
/// assert!(check_group_name("user-ada.7_x").is_ok());
/// let error = check_group_name("a\nb").unwrap_err();
/// assert_eq!(
///     error.to_string(),
///     r#"the group name "a\nb" contains '\n' at byte 1; group names may contain only ASCII letters, digits, '-', '_' and '.'"#
/// );
/// ```
pub fn check_group_name(name: &str) -> Result<(), GroupNameError> {
    GroupNameRule::Channels.check(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_rule() {
        let rule = GroupNameRule::Channels;
        for good in ["a", "A-z_0.9", "collection-52", &"x".repeat(99)] {
            assert_eq!(rule.check(good), Ok(()), "{good}");
        }
        assert_eq!(rule.check(""), Err(GroupNameError::Empty));
        assert!(matches!(
            rule.check(&"x".repeat(100)),
            Err(GroupNameError::TooLong {
                len: 100,
                max: 99,
                ..
            })
        ));
        for bad in [
            "../..", "a/b", "a b", "a\n", "\n", "a\0b", "é", "٣", "a:b", "a!b",
        ] {
            assert!(
                matches!(rule.check(bad), Err(GroupNameError::BadCharacter { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn relaxed_rule() {
        let rule = GroupNameRule::Relaxed;
        for good in ["room:één", "a/b", "../..", "😀", &"x".repeat(1024)] {
            assert_eq!(rule.check(good), Ok(()), "{good}");
        }
        assert_eq!(rule.check(""), Err(GroupNameError::Empty));
        assert!(rule.check(&"x".repeat(1025)).is_err());
        for bad in [
            "a b", "a\tb", "a\n", "a\0b", "\u{7f}", "a\u{a0}b", "\u{2028}",
        ] {
            assert!(rule.check(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn errors_show_only_the_start_of_a_long_name() {
        let long = format!("{}\n", "x".repeat(100_000));
        let text = GroupNameRule::Relaxed.check(&long).unwrap_err().to_string();
        assert!(text.len() < 200, "{text}");
        assert!(text.contains("100001 bytes long"), "{text}");
        let text = GroupNameRule::Channels
            .check("a\0")
            .unwrap_err()
            .to_string();
        assert!(text.contains(r#""a\0""#), "{text}");
    }
}
