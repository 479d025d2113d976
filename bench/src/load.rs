//! Closed-loop load: every connection sends a request, waits for its reply,
//! and sends the next one at once. The run is cut into phases (warm-up,
//! measurement, ...) switched from outside; every reply is booked to the
//! phase in which it arrived, so the phases of one run can be compared.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Instant,
};

use anyhow::{Context, Result};
use futures_util::SinkExt;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, NoReply, Request, Socket, Verdict, REPLY_TIMEOUT};

/// What went wrong, by kind.
#[derive(Debug, Default, Clone, Copy)]
pub struct Errors {
    /// Replies with an `error` key.
    pub error_replies: u64,
    /// Replies with the wrong id or type.
    pub wrong_replies: u64,
    /// Requests without a reply within [`REPLY_TIMEOUT`]; the connection
    /// stops there.
    pub timeouts: u64,
    /// Connections that closed or broke; each stops there.
    pub dropped: u64,
}

impl Errors {
    pub fn total(&self) -> u64 {
        self.error_replies + self.wrong_replies + self.timeouts + self.dropped
    }

    pub fn add(&mut self, other: &Errors) {
        self.error_replies += other.error_replies;
        self.wrong_replies += other.wrong_replies;
        self.timeouts += other.timeouts;
        self.dropped += other.dropped;
    }

    /// "0", or the total with its kinds.
    pub fn describe(&self) -> String {
        if self.total() == 0 {
            return "0".to_owned();
        }
        let mut parts = Vec::new();
        for (count, what) in [
            (self.error_replies, "error replies"),
            (self.wrong_replies, "wrong replies"),
            (self.timeouts, "timeouts"),
            (self.dropped, "dropped"),
        ] {
            if count > 0 {
                parts.push(format!("{count} {what}"));
            }
        }
        format!("{} ({})", self.total(), parts.join(", "))
    }
}

/// What happened in one phase.
#[derive(Debug, Default, Clone)]
pub struct PhaseStats {
    /// Requests sent in this phase.
    pub sent: u64,
    /// Good replies received in this phase.
    pub replies: u64,
    /// Round-trip times of the good replies, in microseconds.
    pub latencies_us: Vec<u32>,
    pub errors: Errors,
}

impl PhaseStats {
    fn merge(&mut self, other: PhaseStats) {
        self.sent += other.sent;
        self.replies += other.replies;
        self.latencies_us.extend(other.latencies_us);
        self.errors.add(&other.errors);
    }

    /// The latencies, sorted.
    pub fn sorted_latencies(&self) -> Vec<u32> {
        let mut sorted = self.latencies_us.clone();
        sorted.sort_unstable();
        sorted
    }
}

/// The errors of all phases together.
pub fn all_errors(phases: &[PhaseStats]) -> Errors {
    let mut errors = Errors::default();
    for phase in phases {
        errors.add(&phase.errors);
    }
    errors
}

/// A running load. Phases are numbered from 0 (the one it starts in); the
/// last slot collects what arrives after [`Load::finish`] was called.
pub struct Load {
    phase: Arc<AtomicUsize>,
    phases: usize,
    connections: Vec<JoinHandle<Vec<PhaseStats>>>,
}

impl Load {
    /// Starts the load on these connections, in phase 0 of `phases`.
    pub fn start(sockets: Vec<Socket>, request: Request, phases: usize) -> Load {
        let phase = Arc::new(AtomicUsize::new(0));
        let connections = sockets
            .into_iter()
            .map(|socket| {
                let phase = phase.clone();
                tokio::spawn(run_connection(socket, request, phase, phases))
            })
            .collect();
        Load {
            phase,
            phases,
            connections,
        }
    }

    /// Moves every connection on to `phase`.
    pub fn set_phase(&self, phase: usize) {
        self.phase
            .store(phase.min(self.phases - 1), Ordering::Relaxed);
    }

    /// Stops sending, waits for the requests in flight, closes the
    /// connections, and returns the merged stats of each phase plus one
    /// last slot for replies that arrived after the stop.
    pub async fn finish(self) -> Result<Vec<PhaseStats>> {
        self.phase.store(self.phases, Ordering::Relaxed);
        let mut merged = vec![PhaseStats::default(); self.phases + 1];
        for connection in self.connections {
            let stats = connection.await.context("a load connection panicked")?;
            for (total, part) in merged.iter_mut().zip(stats) {
                total.merge(part);
            }
        }
        Ok(merged)
    }
}

async fn run_connection(
    mut socket: Socket,
    request: Request,
    phase: Arc<AtomicUsize>,
    phases: usize,
) -> Vec<PhaseStats> {
    let mut stats = vec![PhaseStats::default(); phases + 1];
    let mut id = 0u64;
    loop {
        let sent_in = phase.load(Ordering::Relaxed);
        if sent_in >= phases {
            break;
        }
        id += 1;
        let started = Instant::now();
        stats[sent_in].sent += 1;
        if socket.send(Message::text(request.frame(id))).await.is_err() {
            stats[sent_in].errors.dropped += 1;
            return stats;
        }
        let reply = client::next_text(&mut socket, REPLY_TIMEOUT).await;
        let took = started.elapsed();
        let slot = &mut stats[phase.load(Ordering::Relaxed).min(phases)];
        match reply {
            Ok(text) => match client::judge(&text, id, request) {
                Verdict::Ok => {
                    slot.replies += 1;
                    let micros = u32::try_from(took.as_micros()).unwrap_or(u32::MAX);
                    slot.latencies_us.push(micros);
                }
                Verdict::ErrorReply => {
                    report_first_error(&text);
                    slot.errors.error_replies += 1;
                }
                Verdict::Wrong => {
                    report_first_error(&text);
                    slot.errors.wrong_replies += 1;
                }
            },
            Err(NoReply::TimedOut) => {
                slot.errors.timeouts += 1;
                return stats;
            }
            Err(NoReply::Dropped) => {
                slot.errors.dropped += 1;
                return stats;
            }
        }
    }
    client::close(socket).await;
    stats
}

/// Prints the first bad reply of the process, as a sample.
fn report_first_error(text: &str) {
    static SHOWN: std::sync::Once = std::sync::Once::new();
    SHOWN.call_once(|| eprintln!("  first bad reply: {text}"));
}
