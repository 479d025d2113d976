//! Graceful shutdown, as its own small type (the shape of mini-redis's
//! `shutdown.rs`): one signal tells every connection the server is stopping,
//! and the server waits until the last connection has let go.

use std::{sync::Mutex, time::Duration};

use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

/// The server side: start the shutdown, then wait for the connections.
pub(crate) struct Shutdown {
    stopping: watch::Sender<bool>,
    /// Cloned into every connection's handle; dropped here by `wait`.
    alive: Mutex<Option<mpsc::Sender<()>>>,
    /// Resolves (with `None`) once every clone of `alive` is gone.
    all_gone: tokio::sync::Mutex<mpsc::Receiver<()>>,
}

/// A connection's side: learn that the server is stopping; while held, the
/// server waits for this connection.
pub(crate) struct Stopping {
    stopping: watch::Receiver<bool>,
    _alive: Option<mpsc::Sender<()>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        let (stopping, _) = watch::channel(false);
        let (alive, all_gone) = mpsc::channel(1);
        Shutdown {
            stopping,
            alive: Mutex::new(Some(alive)),
            all_gone: tokio::sync::Mutex::new(all_gone),
        }
    }
}

impl Shutdown {
    /// A handle for one more connection.
    pub(crate) fn handle(&self) -> Stopping {
        let alive = self
            .alive
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        Stopping {
            stopping: self.stopping.subscribe(),
            _alive: alive,
        }
    }

    /// Learns that the server is stopping without holding up its end (for
    /// the listener itself).
    pub(crate) fn watch(&self) -> Stopping {
        Stopping {
            stopping: self.stopping.subscribe(),
            _alive: None,
        }
    }

    /// Tells every connection to finish what it is doing and close.
    pub(crate) fn begin(&self) {
        self.stopping.send_replace(true);
    }

    /// Waits until every connection has closed, or `limit` has passed.
    pub(crate) async fn wait(&self, limit: Duration) {
        drop(
            self.alive
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .take(),
        );
        let mut all_gone = self.all_gone.lock().await;
        match tokio::time::timeout(limit, all_gone.recv()).await {
            Ok(_) => info!("every connection has closed"),
            Err(_) => warn!(
                timeout_ms = limit.as_millis() as u64,
                "connections still open at the end of the shutdown timeout; stopping anyway"
            ),
        }
    }
}

impl Stopping {
    /// Resolves once the server is stopping (at once if it already is).
    pub(crate) async fn stopped(&mut self) {
        // An error means the server is gone, which is as good as stopping.
        let _ = self.stopping.wait_for(|stopping| *stopping).await;
    }
}
