//! Comparing secrets (tokens, passwords) without telling an attacker, by
//! the time it takes, how much of a guess was right. For plugins that check
//! tokens, and for the host's own bearer token.

/// Whether `given` equals `expected`, taking the same time wherever they
/// differ (only the length shows).
///
/// ```
/// use rohrpost_plugin_api::same_secret;
///
/// assert!(same_secret("s3cret", "s3cret"));
/// assert!(!same_secret("s3creT", "s3cret"));
/// assert!(!same_secret("s3c", "s3cret"));
/// ```
pub fn same_secret(given: &str, expected: &str) -> bool {
    given.len() == expected.len()
        && given
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}
