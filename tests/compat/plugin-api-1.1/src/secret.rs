//! Comparing secrets (tokens, passwords) without telling an attacker, by
//! the time it takes, how much of a guess was right. For plugins that check
//! tokens, and for the host's own bearer token.

/// Whether `given` equals `expected`, taking the same time wherever they
/// differ, and a time set by the longer of the two, so that a caller who
/// sends a long guess learns nothing of the secret's length either.
///
/// ```
/// use rohrpost_plugin_api::same_secret;
///
/// assert!(same_secret("s3cret", "s3cret"));
/// assert!(!same_secret("s3creT", "s3cret"));
/// assert!(!same_secret("s3c", "s3cret"));
/// assert!(!same_secret("s3cret!", "s3cret"));
/// assert!(!same_secret("", "s3cret"));
/// ```
pub fn same_secret(given: &str, expected: &str) -> bool {
    let (given, expected) = (given.as_bytes(), expected.as_bytes());
    let longest = given.len().max(expected.len());
    let mut differ = u8::from(given.len() != expected.len());
    for at in 0..longest {
        let a = given.get(at).copied().unwrap_or(0);
        let b = expected.get(at).copied().unwrap_or(0);
        differ |= a ^ b;
    }
    // Keep the loop from being cut short by the optimiser.
    std::hint::black_box(differ) == 0
}
