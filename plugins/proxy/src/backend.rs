//! The HTTP side: one POST per request or hook to the backend over a
//! keep-alive pool (HTTP/1.1, plain TCP), bounded in time, in calls at
//! once and in the bytes read back, and every way it can fail sorted into
//! one [`Failure`], which is logged with the backend's URL. The client is
//! only ever told that the backend failed.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::{
    contract::{self, ContractError, Effects},
    settings::Config,
};

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
    #[error(transparent)]
    Contract(ContractError),
}

impl Failure {
    /// A short name of the kind, for the log.
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
}

/// The backend, as this load of the plugin talks to it.
pub struct Backend {
    agent: ureq::Agent,
    pub config: Config,
    in_flight: AtomicUsize,
}

/// Holds one of the `max_in_flight` places while a call runs.
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Backend {
    pub fn new(config: Config) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(config.timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .max_idle_connections(config.max_in_flight)
            .max_idle_connections_per_host(config.max_in_flight)
            .user_agent(concat!("rohrpost-proxy/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Backend {
            agent,
            config,
            in_flight: AtomicUsize::new(0),
        }
    }

    /// POSTs `body` to `url`; the effects it answered.
    pub fn post(&self, url: &str, body: &[u8]) -> Result<Effects, Failure> {
        let now = self.in_flight.fetch_add(1, Ordering::AcqRel);
        let _place = InFlight(&self.in_flight);
        if now >= self.config.max_in_flight {
            return Err(Failure::Busy(now));
        }
        let mut request = self
            .agent
            .post(url)
            .header("content-type", "application/json");
        for (name, value) in &self.config.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let mut response = request.send(body).map_err(failure)?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            return Err(Failure::Status(status));
        }
        let bytes = response
            .body_mut()
            .with_config()
            .limit(self.config.max_response_bytes)
            .read_to_vec()
            .map_err(|e| match e {
                ureq::Error::BodyExceedsLimit(_) => {
                    Failure::TooLarge(self.config.max_response_bytes)
                }
                other => failure(other),
            })?;
        contract::parse(&bytes).map_err(|e| match e {
            ContractError::Shape(json) if !json.is_data() => Failure::NotJson(json.to_string()),
            other => Failure::Contract(other),
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
