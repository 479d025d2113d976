//! `auth = "backend"`: the application's backend decides each
//! subscription (Centrifugo's subscribe proxy). The plugin POSTs
//!
//! ```json
//! {"v":1,"event":"subscribe","group":"<group>","auth_jwt":<as sent, or null>,
//!  "request":<the subscribe request as the client sent it>,
//!  "connection":{"id","remote_addr","path","query_string","headers":{...},"data":{}}}
//! ```
//!
//! to `url` (the `connection` document is the proxy's, from
//! [`backend_http::ConnectionInfo`]), and the backend answers 2xx with
//! `{"v":1,"allow":true}` or `{"v":1,"allow":false,"reason":"<for the
//! log>"}`. Anything else, or no answer in time, refuses the subscription
//! (fail closed): the client gets the same `ACCESS_DENIED` as a refused
//! token, the log a warning naming the URL and the problem, and
//! `/metrics` a count of the failure's kind.

use std::{collections::BTreeMap, time::Duration};

use backend_http::{
    report,
    settings::{self as checks, Timeout},
    Agent, AgentSettings, ConnectionInfo, Failure,
};
use rohrpost_plugin_api::{
    host::{self, Level},
    Request,
};
use serde::{Deserialize, Serialize};
use serde_json::{value::RawValue, Value};

/// The contract's version, in both directions.
pub const VERSION: u32 = 1;
/// The default `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The default `max_response_bytes`.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 64 * 1024;
/// Questions to the backend at once; past it a subscription is refused.
const MAX_IN_FLIGHT: usize = 256;

/// The settings of `auth = "backend"`, as written.
#[derive(Debug, Default)]
pub struct BackendTable {
    pub url: Option<String>,
    pub timeout: Option<Timeout>,
    pub headers: Option<BTreeMap<String, String>>,
    pub forward_headers: Option<Vec<String>>,
    pub max_response_bytes: Option<u64>,
}

/// The backend that decides.
pub struct Decider {
    agent: Agent,
    url: String,
    forward_headers: Vec<String>,
}

/// The body POSTed for one subscription.
#[derive(Serialize)]
struct Question<'a> {
    v: u32,
    event: &'static str,
    group: &'a str,
    auth_jwt: Option<&'a Value>,
    request: &'a RawValue,
    connection: ConnectionInfo<'a>,
}

/// The backend's answer.
#[derive(Deserialize)]
struct Answer {
    v: u32,
    allow: bool,
    #[serde(default)]
    reason: Option<String>,
}

impl Decider {
    /// Checks the table; `Err` rejects the load.
    pub fn new(table: BackendTable) -> Result<Decider, String> {
        let Some(url) = table.url else {
            return Err("auth = \"backend\" needs 'url', where each subscription is POSTed".into());
        };
        checks::check_url("url", &url)?;
        let timeout = checks::timeout(table.timeout, DEFAULT_TIMEOUT)?;
        let headers = checks::headers(table.headers.unwrap_or_default())?;
        let forward_headers = checks::forward_headers(&table.forward_headers.unwrap_or_default())?;
        let max_response_bytes = checks::max_response_bytes(
            table
                .max_response_bytes
                .unwrap_or(DEFAULT_MAX_RESPONSE_BYTES),
        )?;
        let agent = Agent::new(
            AgentSettings {
                timeout,
                max_in_flight: MAX_IN_FLIGHT,
                headers,
                max_response_bytes,
            },
            concat!("rohrpost-subscriptions/", env!("CARGO_PKG_VERSION")),
        );
        Ok(Decider {
            agent,
            url,
            forward_headers,
        })
    }

    /// Whether the backend lets the caller of `req` join `group`; a
    /// failure is a refusal, logged and counted.
    pub fn allows(&self, group: &str, req: &Request) -> bool {
        match self.ask(group, req) {
            Ok(Answer { allow: true, .. }) => {
                let _ = host::count("backend_decisions", "allowed");
                true
            }
            Ok(Answer { reason, .. }) => {
                let _ = host::count("backend_decisions", "refused");
                let reason = reason.unwrap_or_default();
                host::log(
                    Level::Info,
                    "the backend refused a subscription",
                    &[("group", group), ("reason", &reason)],
                );
                false
            }
            Err(failure) => {
                report::failed(
                    &self.url,
                    "subscribe",
                    &failure,
                    "the subscription was refused",
                );
                false
            }
        }
    }

    fn ask(&self, group: &str, req: &Request) -> Result<Answer, Failure> {
        let request = serde_json::from_str::<&RawValue>(req.raw())
            .map_err(|e| Failure::Contract(format!("the request is not JSON: {e}")))?;
        let question = Question {
            v: VERSION,
            event: "subscribe",
            group,
            auth_jwt: req.field("auth_jwt"),
            request,
            connection: ConnectionInfo::new(req.scope(), req.state(), &self.forward_headers),
        };
        let body = serde_json::to_vec(&question)
            .map_err(|e| Failure::Contract(format!("the question cannot be written: {e}")))?;
        report::called("subscribe");
        let bytes = self.agent.post(&self.url, &body)?;
        let answer: Answer = serde_json::from_slice(&bytes).map_err(Failure::of_json)?;
        if answer.v != VERSION {
            return Err(Failure::Contract(format!(
                "the answer is of contract version {}, this plugin speaks version {VERSION}",
                answer.v
            )));
        }
        Ok(answer)
    }
}
