//! What the plugins that ask an HTTP backend share (the proxy, and the
//! subscriptions plugin's `auth = "backend"`), so that both talk to a
//! backend, describe a connection and fail in one way:
//! - [`agent`]: one POST over a keep-alive pool, bounded in time, in calls
//!   at once and in the bytes read back, and every way it can fail sorted
//!   into one [`Failure`].
//!   [`resolver`]: the backend's address without a thread per call.
//! - [`connection`]: the `connection` document both send.
//! - [`settings`]: the checks of the settings both tables have (URLs,
//!   headers, timeouts).
//! - [`report`]: a failure's warning (naming the URL and the problem)
//!   through the host's log, and its count in the host's `/metrics`.

pub mod agent;
pub mod connection;
pub mod report;
pub mod resolver;
pub mod settings;

pub use agent::{Agent, AgentSettings, Failure};
pub use connection::ConnectionInfo;
