//! The HTTP side: one POST per request, hook or question to the backend
//! over a keep-alive pool (HTTP/1.1, plain TCP), bounded in time, in calls
//! at once and in the bytes read back, and every way it can fail sorted
//! into one [`Failure`]. A client is only ever told that the backend
//! failed; the log gets the details.

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use crate::resolver::BackendResolver;

/// How a backend call failed.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("{0} calls are in flight already (max_in_flight)")]
    Busy(usize),
    #[error("cannot reach the backend: {0}")]
    Down(String),
    #[error("no answer within the timeout")]
    Timeout,
    #[error("the backend answered with HTTP status {0}")]
    Status(u16),
    #[error("the answer is larger than max_response_bytes ({0} bytes)")]
    TooLarge(u64),
    #[error("the answer is not JSON: {0}")]
    NotJson(String),
    /// JSON that does not fit the contract.
    #[error("{0}")]
    Contract(String),
}

impl Failure {
    /// The kind's name, for the log and the `kind` of the
    /// `backend_failures` counter.
    pub fn kind(&self) -> &'static str {
        match self {
            Failure::Busy(_) => "busy",
            Failure::Down(_) => "down",
            Failure::Timeout => "timeout",
            Failure::Status(_) => "status",
            Failure::TooLarge(_) => "too_large",
            Failure::NotJson(_) => "not_json",
            Failure::Contract(_) => "contract",
        }
    }

    /// A JSON answer that could not be read into the contract's type:
    /// `not_json` when it is no JSON at all, `contract` when it is JSON of
    /// another shape.
    pub fn of_json(e: serde_json::Error) -> Failure {
        if e.is_data() {
            Failure::Contract(format!("the answer does not fit the contract: {e}"))
        } else {
            Failure::NotJson(e.to_string())
        }
    }
}

/// What bounds the agent.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    /// How long one call may take, connecting and reading included.
    pub timeout: Duration,
    /// Calls at once; past it a call fails at once as [`Failure::Busy`].
    pub max_in_flight: usize,
    /// Sent with every call (a shared secret, for instance).
    pub headers: Vec<(String, String)>,
    /// The largest answer read, in bytes.
    pub max_response_bytes: u64,
}

/// The backend, as one load of a plugin talks to it.
pub struct Agent {
    agent: ureq::Agent,
    settings: AgentSettings,
    in_flight: AtomicUsize,
}

/// Holds one of the `max_in_flight` places while a call runs.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Agent {
    /// An agent that introduces itself as `user_agent`.
    pub fn new(settings: AgentSettings, user_agent: &str) -> Self {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(settings.timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .max_idle_connections(settings.max_in_flight)
            .max_idle_connections_per_host(settings.max_in_flight)
            .user_agent(user_agent)
            .build();
        let agent = ureq::Agent::with_parts(
            config,
            ureq::unversioned::transport::DefaultConnector::default(),
            BackendResolver::default(),
        );
        Agent {
            agent,
            settings,
            in_flight: AtomicUsize::new(0),
        }
    }

    /// POSTs the JSON `body` to `url`; the answer's body, from a 2xx
    /// answer only.
    pub fn post(&self, url: &str, body: &[u8]) -> Result<Vec<u8>, Failure> {
        let now = self.in_flight.fetch_add(1, Ordering::AcqRel);
        let _place = InFlight(&self.in_flight);
        if now >= self.settings.max_in_flight {
            return Err(Failure::Busy(now));
        }
        let mut request = self
            .agent
            .post(url)
            .header("content-type", "application/json");
        for (name, value) in &self.settings.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let mut response = request.send(body).map_err(failure)?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            return Err(Failure::Status(status));
        }
        let limit = self.settings.max_response_bytes;
        response
            .body_mut()
            .with_config()
            .limit(limit)
            .read_to_vec()
            .map_err(|e| match e {
                ureq::Error::BodyExceedsLimit(_) => Failure::TooLarge(limit),
                other => failure(other),
            })
    }
}

/// ureq's error as a failure.
fn failure(e: ureq::Error) -> Failure {
    match e {
        ureq::Error::Timeout(_) => Failure::Timeout,
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => Failure::Timeout,
        ureq::Error::BodyExceedsLimit(_) => Failure::TooLarge(0),
        other => Failure::Down(other.to_string()),
    }
}
