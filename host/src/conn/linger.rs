//! Closing a connection so that its close frame reaches the client.
//!
//! When the server closes a socket while the client is still sending (a
//! frame over the size limit, a protocol violation), the kernel answers the
//! unread bytes with a reset, and the reset destroys the close frame before
//! the client reads it. Like nginx's `lingering_close`, the server instead
//! shuts down its side for writing after the close frame and keeps reading
//! and discarding what the client still sends, for a bounded time, before it
//! lets the socket go.

use std::time::Duration;

use tokio::{
    io::{AsyncRead, AsyncReadExt},
    time::Instant,
};

/// Give up lingering when the client has sent nothing for this long...
pub(crate) const QUIET: Duration = Duration::from_secs(5);
/// ...or after this long in all.
pub(crate) const TOTAL: Duration = Duration::from_secs(30);

/// Reads and discards (once the caller has shut down writing) until the
/// client closes its side, stays quiet for [`QUIET`], or [`TOTAL`] has
/// passed.
pub(crate) async fn drain<S: AsyncRead + Unpin>(io: &mut S) {
    let end = Instant::now() + TOTAL;
    let mut scratch = vec![0u8; 16 * 1024];
    loop {
        let until = (Instant::now() + QUIET).min(end);
        match tokio::time::timeout_at(until, io.read(&mut scratch)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
            Ok(Ok(_)) => {}
        }
    }
}
