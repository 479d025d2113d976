//! The proxy's backend: the shared agent ([`backend_http::Agent`]) with
//! the answers read as effects documents. A client is only ever told that
//! the backend failed; the failure is logged and counted by
//! [`backend_http::report`].

use backend_http::{Agent, AgentSettings, Failure};

use crate::{
    contract::{self, ContractError, Effects},
    settings::Config,
};

/// The backend, as this load of the plugin talks to it.
pub struct Backend {
    agent: Agent,
    pub config: Config,
}

impl Backend {
    pub fn new(config: Config) -> Self {
        let agent = Agent::new(
            AgentSettings {
                timeout: config.timeout,
                max_in_flight: config.max_in_flight,
                headers: config.headers.clone(),
                max_response_bytes: config.max_response_bytes,
            },
            concat!("rohrpost-proxy/", env!("CARGO_PKG_VERSION")),
        );
        Backend { agent, config }
    }

    /// POSTs `body` to `url` for `what` (counted); the effects it answered.
    pub fn post(&self, url: &str, what: &str, body: &[u8]) -> Result<Effects, Failure> {
        backend_http::report::called(what);
        let bytes = self.agent.post(url, body)?;
        contract::parse(&bytes).map_err(|e| match e {
            ContractError::Shape(json) if !json.is_data() => Failure::NotJson(json.to_string()),
            other => Failure::Contract(other.to_string()),
        })
    }
}
