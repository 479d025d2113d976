//! Wall-clock time as the operator surface shows it: seconds since the
//! Unix epoch, for events and samples that a browser puts on a time axis.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch (zero on a clock set before it).
pub(crate) fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
