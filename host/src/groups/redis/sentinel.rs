//! Redis Sentinel: the groups' Redis is whichever server the sentinels
//! name master, looked up again on every (re)connect, so that the links'
//! reconnecting ([`super::link`], [`super::core_link`]) follows a failover
//! with nothing of its own.
//!
//! The URL, `redis+sentinel://[[USER]:PASSWORD@]S1[:PORT],S2[:PORT]/MASTER_NAME[/DB]`
//! (`rediss+sentinel://` over TLS), says what channels_redis's host entry
//! `{"sentinels": [...], "master_name": ..., "db": ..., "password": ...}`
//! says. As there: the password and the DB are the master's, the sentinels
//! are asked without a password (channels_redis's default, without
//! `sentinel_kwargs`), and a sentinel's port is 26379 unless given.
//! With TLS, the sentinels and the master are reached over TLS with the
//! same `redis_tls_*` files.
//!
//! Finding the master: the sentinels are asked in order, starting with the
//! one that answered last, `SENTINEL get-master-addr-by-name`, each call
//! under the broker deadline ([`super::health`]); the first that names an address wins, and the
//! server there must say `ROLE` master (a demoted master, or one a
//! sentinel names before the others have agreed, is refused: the link
//! tries again after its backoff).
//!
//! While a link is up, the sentinels are asked again every second (one
//! kept connection to one of them): when they name another master than the
//! link's, the link ends as if a call had failed, and reconnects to the new
//! one. Sentinel closes the connections of a master it demotes, but not of
//! one it cannot reach when it promotes a replica (a partition, a manual
//! failover before the old master is reconfigured); the watch bounds how
//! long a host stays on such a master to about a second.
//!
//! Written by hand over the plain connections [`super::access`] makes,
//! rather than with the `redis` crate's `sentinel` feature: every call
//! then runs under the same deadline as any other Redis call, the master
//! and the sentinels get the same TLS files, password file and socket
//! settings as a single server, and the `ROLE` check and the order of the
//! sentinels are ours to state.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex, Weak,
    },
    time::Duration,
};

use redis::aio::MultiplexedConnection;
use tokio::time::MissedTickBehavior;
use tracing::{info, warn};

use super::{
    access::{self, Access, AccessError},
    health::{deadline, Failure, Health},
};
use crate::base::lock::lock;

/// The URL schemes, plain and TLS, as the configuration hands them over.
const PLAIN: &str = "redis+sentinel://";
const TLS: &str = "rediss+sentinel://";
/// A sentinel's port unless the URL gives one.
const SENTINEL_PORT: u16 = 26379;
/// Most sentinels in one URL.
pub(crate) const MAX_SENTINELS: usize = 16;
/// Longest master name.
const MAX_NAME: usize = 256;
/// How often a link's master is checked against what the sentinels say.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// Why a Sentinel URL cannot be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SentinelUrlError {
    #[error("invalid Redis Sentinel URL for groups '{url}': {why}")]
    Url { url: String, why: String },
}

/// Whether `url` names its Redis through sentinels.
pub(super) fn is_sentinel(url: &str) -> bool {
    url.starts_with(PLAIN) || url.starts_with(TLS)
}

/// A parsed Sentinel URL.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SentinelUrl {
    tls: bool,
    /// `USER:PASSWORD` or `:PASSWORD` as written (percent-encoded), for
    /// the master.
    userinfo: Option<String>,
    /// `HOST:PORT` of each sentinel (an IPv6 host in brackets).
    sentinels: Vec<String>,
    master_name: String,
    db: u32,
}

fn parse(url: &str) -> Result<SentinelUrl, SentinelUrlError> {
    let refuse = |why: &str| SentinelUrlError::Url {
        url: access::redacted(url),
        why: why.to_owned(),
    };
    let (tls, rest) = match (url.strip_prefix(PLAIN), url.strip_prefix(TLS)) {
        (Some(rest), _) => (false, rest),
        (None, Some(rest)) => (true, rest),
        (None, None) => return Err(refuse("not a redis+sentinel:// or rediss+sentinel:// URL")),
    };
    if rest.contains(['?', '#']) {
        return Err(refuse("takes no query or fragment"));
    }
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => (Some(userinfo.to_owned()), hosts),
        None => (None, authority),
    };
    if userinfo.as_deref().is_some_and(|u| !u.contains(':')) {
        return Err(refuse(
            "the part before @ is USER:PASSWORD or :PASSWORD (the master's)",
        ));
    }
    let mut sentinels = Vec::new();
    for host in hosts.split(',').map(str::trim) {
        let address = sentinel_address(host).map_err(|why| refuse(&why))?;
        if sentinels.contains(&address) {
            return Err(refuse(&format!("lists the sentinel {address} twice")));
        }
        sentinels.push(address);
    }
    if sentinels.len() > MAX_SENTINELS {
        return Err(refuse(&format!(
            "lists more than {MAX_SENTINELS} sentinels"
        )));
    }
    let mut parts = path.split('/');
    let master_name = parts.next().unwrap_or("");
    if master_name.is_empty() {
        return Err(refuse(
            "names no master: redis+sentinel://SENTINEL:PORT,.../MASTER_NAME/DB",
        ));
    }
    if master_name.len() > MAX_NAME || !master_name.chars().all(|c| c.is_ascii_graphic()) {
        return Err(refuse(&format!(
            "the master name is printable ASCII without spaces, at most {MAX_NAME} characters"
        )));
    }
    let db = match parts.next() {
        None | Some("") => 0,
        Some(db) => db
            .parse::<u32>()
            .map_err(|_| refuse(&format!("'{db}' is not a database number")))?,
    };
    if parts.next().is_some() {
        return Err(refuse("has more after the database number"));
    }
    Ok(SentinelUrl {
        tls,
        userinfo,
        sentinels,
        master_name: master_name.to_owned(),
        db,
    })
}

/// `HOST[:PORT]` of one sentinel, with the default port made explicit.
fn sentinel_address(text: &str) -> Result<String, String> {
    if text.is_empty() {
        return Err("lists an empty sentinel address".to_owned());
    }
    let (host, port) = if let Some(v6) = text.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("'{text}' is not HOST:PORT"))?;
        (format!("[{host}]"), after.strip_prefix(':'))
    } else {
        match text.split_once(':') {
            Some((host, port)) => (host.to_owned(), Some(port)),
            None => (text.to_owned(), None),
        }
    };
    let bad_host = host.is_empty()
        || host
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '@' | '/' | '\\'));
    if bad_host {
        return Err(format!("'{text}' is not HOST:PORT"));
    }
    let port = match port {
        None => SENTINEL_PORT,
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|port| *port != 0)
            .ok_or_else(|| format!("'{text}' has no valid port"))?,
    };
    Ok(format!("{host}:{port}"))
}

impl SentinelUrl {
    fn scheme(&self) -> &'static str {
        if self.tls {
            "rediss://"
        } else {
            "redis://"
        }
    }

    /// The URL of the master at `address` (`HOST:PORT`), with the
    /// password and the DB.
    fn master_url(&self, address: &str) -> String {
        let userinfo = self
            .userinfo
            .as_deref()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        format!("{}{userinfo}{address}/{}", self.scheme(), self.db)
    }
}

/// The sentinels of one groups URL, and what the master's client needs.
pub(super) struct Sentinel {
    url: SentinelUrl,
    access: Access,
    /// A client for each sentinel, and its address for logs.
    sentinels: Vec<(String, redis::Client)>,
    /// The sentinel that answered last: asked first next time.
    first: AtomicUsize,
    /// The master found last: what the link reached (see [`Sentinel::watch`]),
    /// logged when it changes.
    master: Mutex<Option<String>>,
}

impl Sentinel {
    /// Clients for the sentinels, and the checks of the master's settings,
    /// as at start: nothing connects.
    pub(super) fn new(url: &str, access: &Access) -> Result<Sentinel, AccessError> {
        let url = parse(url)?;
        // The sentinels are asked without the master's password.
        let unauthenticated = Access {
            password_file: None,
            ..access.clone()
        };
        let mut sentinels = Vec::with_capacity(url.sentinels.len());
        for address in &url.sentinels {
            let (client, _) =
                access::client(&format!("{}{address}", url.scheme()), &unauthenticated)?;
            sentinels.push((address.clone(), client));
        }
        // The master's client is made for an address the sentinels name
        // later; the same settings are checked now, on the first sentinel's.
        if let Some(first) = url.sentinels.first() {
            access::client(&url.master_url(first), access)?;
        }
        Ok(Sentinel {
            url,
            access: access.clone(),
            sentinels,
            first: AtomicUsize::new(0),
            master: Mutex::new(None),
        })
    }

    /// A client for the server that is master now: the sentinels name it,
    /// and it says so itself.
    pub(super) async fn master(&self) -> Result<redis::Client, Failure> {
        let count = self.sentinels.len();
        let start = self.first.load(Ordering::Relaxed) % count.max(1);
        let mut why = Vec::new();
        for index in (0..count).map(|i| (start + i) % count) {
            let Some((sentinel, client)) = self.sentinels.get(index) else {
                continue;
            };
            match self.ask(client).await {
                Ok(Some(address)) => {
                    self.first.store(index, Ordering::Relaxed);
                    return self.check(&address, sentinel).await;
                }
                Ok(None) => why.push(format!(
                    "{sentinel} knows no master '{}'",
                    self.url.master_name
                )),
                Err(failure) => why.push(format!("{sentinel}: {failure}")),
            }
        }
        Err(Failure::Lost(format!(
            "no sentinel named the master '{}': {}",
            self.url.master_name,
            why.join("; ")
        )))
    }

    /// What one sentinel says the master's address is.
    async fn ask(&self, client: &redis::Client) -> Result<Option<String>, Failure> {
        let mut connection = connect(client).await?;
        self.ask_on(&mut connection).await
    }

    /// What the sentinel on `connection` says the master's address is.
    async fn ask_on(
        &self,
        connection: &mut MultiplexedConnection,
    ) -> Result<Option<String>, Failure> {
        let named: Option<(String, String)> = deadline(
            redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(&self.url.master_name)
                .query_async(connection),
        )
        .await?;
        let Some((host, port)) = named else {
            return Ok(None);
        };
        let port = port
            .parse::<u16>()
            .map_err(|_| Failure::Lost(format!("a sentinel named the port '{port}'")))?;
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host
        };
        Ok(Some(format!("{host}:{port}")))
    }

    /// A client for `address` once the server there says it is master.
    async fn check(&self, address: &str, sentinel: &str) -> Result<redis::Client, Failure> {
        let (client, _) = access::client(&self.url.master_url(address), &self.access)
            .map_err(|e| Failure::Lost(e.to_string()))?;
        let mut connection = connect(&client)
            .await
            .map_err(|failure| in_context(failure, address))?;
        let role: Vec<redis::Value> = deadline(redis::cmd("ROLE").query_async(&mut connection))
            .await
            .map_err(|failure| in_context(failure, address))?;
        let said = match role.first() {
            Some(redis::Value::BulkString(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
            Some(redis::Value::SimpleString(text)) => text.clone(),
            _ => String::new(),
        };
        if said != "master" {
            return Err(Failure::Lost(format!(
                "{sentinel} names {address} master of '{}', but it says it is {}",
                self.url.master_name,
                if said.is_empty() { "no master" } else { &said }
            )));
        }
        let mut last = lock(&self.master);
        if last.as_deref() != Some(address) {
            info!(master = %address, name = %self.url.master_name, sentinel, "the sentinels name the Redis master");
            *last = Some(address.to_owned());
        }
        Ok(client)
    }
}

impl Sentinel {
    /// Ends the link of `health` whenever the sentinels name another master
    /// than the one it reached, until the layer is gone. One sentinel is
    /// asked at a time, on a kept connection; when it fails, the next.
    pub(super) async fn watch(self: Arc<Self>, health: Weak<Health>) {
        let mut tick = tokio::time::interval(WATCH_EVERY);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let count = self.sentinels.len().max(1);
        let mut index = 0;
        let mut asking: Option<MultiplexedConnection> = None;
        loop {
            tick.tick().await;
            let Some(health) = health.upgrade() else {
                return;
            };
            // Without a link, reconnecting asks the sentinels anyway.
            let Some(publishing) = health.publishing() else {
                continue;
            };
            let Some(current) = lock(&self.master).clone() else {
                continue;
            };
            let connection = match asking.as_mut() {
                Some(connection) => connection,
                None => {
                    let Some((_, client)) = self.sentinels.get(index % count) else {
                        return;
                    };
                    match connect(client).await {
                        Ok(connection) => asking.insert(connection),
                        Err(_) => {
                            index += 1;
                            continue;
                        }
                    }
                }
            };
            match self.ask_on(connection).await {
                Ok(Some(named)) if named != current => {
                    warn!(old = %current, new = %named, name = %self.url.master_name, "the sentinels name another Redis master: reconnecting");
                    health.publish_failed(
                        publishing.link,
                        Failure::Lost(format!(
                            "the sentinels name {named} master instead of {current}"
                        )),
                    );
                }
                Ok(_) => {}
                Err(_) => {
                    asking = None;
                    index += 1;
                }
            }
        }
    }
}

/// A connection with no timeouts of its own (the caller's deadline
/// covers every call), opened within the deadline.
async fn connect(client: &redis::Client) -> Result<MultiplexedConnection, Failure> {
    deadline(
        client.get_multiplexed_async_connection_with_config(
            &redis::AsyncConnectionConfig::new()
                .set_connection_timeout(None)
                .set_response_timeout(None),
        ),
    )
    .await
}

fn in_context(failure: Failure, address: &str) -> Failure {
    match failure {
        Failure::Lost(error) => Failure::Lost(format!("master {address}: {error}")),
        Failure::Stalled => Failure::Stalled,
    }
}

/// Where a layer's connections go.
pub(super) enum Target {
    /// One server, always the same.
    Server(Box<redis::Client>),
    /// The master the sentinels name now.
    Sentinel(Arc<Sentinel>),
}

impl Target {
    /// The target of `url`: sentinels or one server (see [`access`]).
    pub(super) fn new(url: &str, access: &Access) -> Result<Target, AccessError> {
        if is_sentinel(url) {
            Ok(Target::Sentinel(Arc::new(Sentinel::new(url, access)?)))
        } else {
            access::client(url, access).map(|(client, _)| Target::Server(Box::new(client)))
        }
    }

    /// With Sentinel, watches the sentinels for a new master while the
    /// layer of `health` lives (see [`Sentinel::watch`]).
    pub(super) fn watch(&self, health: &Arc<Health>) {
        if let Target::Sentinel(sentinel) = self {
            tokio::spawn(sentinel.clone().watch(Arc::downgrade(health)));
        }
    }

    /// The client to connect with now.
    pub(super) async fn client(&self) -> Result<redis::Client, Failure> {
        match self {
            Target::Server(client) => Ok(client.as_ref().clone()),
            Target::Sentinel(sentinel) => sentinel.master().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(url: &str) -> String {
        match parse(url) {
            Ok(parsed) => panic!("{url} was accepted: {parsed:?}"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn urls_name_sentinels_a_master_and_a_db() {
        let url = parse("redis+sentinel://s1:26380,s2,[::1]:26381/mymaster/3").unwrap();
        assert_eq!(
            url,
            SentinelUrl {
                tls: false,
                userinfo: None,
                sentinels: vec!["s1:26380".into(), "s2:26379".into(), "[::1]:26381".into()],
                master_name: "mymaster".into(),
                db: 3,
            }
        );
        assert_eq!(url.master_url("10.0.0.5:6379"), "redis://10.0.0.5:6379/3");
        let url = parse("rediss+sentinel://:s3cret@s1:26379/mymaster").unwrap();
        assert!(url.tls);
        assert_eq!(url.db, 0);
        assert_eq!(
            url.master_url("[::1]:6380"),
            "rediss://:s3cret@[::1]:6380/0"
        );
        let url = parse("redis+sentinel://app:pw@s1:26379/m/0").unwrap();
        assert_eq!(url.userinfo.as_deref(), Some("app:pw"));
    }

    #[test]
    fn what_cannot_be_used_is_refused_clearly() {
        assert!(refused("redis+sentinel:///mymaster/0").contains("empty sentinel"));
        assert!(refused("redis+sentinel://s1:26379").contains("names no master"));
        assert!(refused("redis+sentinel://s1:26379/").contains("names no master"));
        assert!(refused("redis+sentinel://s1:26379/m/x").contains("not a database number"));
        assert!(refused("redis+sentinel://s1:26379/m/-1").contains("not a database number"));
        assert!(refused("redis+sentinel://s1:26379/m/0/1").contains("more after"));
        assert!(refused("redis+sentinel://s1:0/m/0").contains("no valid port"));
        assert!(refused("redis+sentinel://s1:99999/m/0").contains("no valid port"));
        assert!(refused("redis+sentinel://s1,,s2/m/0").contains("empty sentinel"));
        assert!(refused("redis+sentinel://s1,s1:26379/m/0").contains("twice"));
        assert!(refused("redis+sentinel://s1/m/0?protocol=resp3").contains("query"));
        assert!(refused("redis+sentinel://pw@s1/m/0").contains("PASSWORD"));
        let many = (0..=MAX_SENTINELS)
            .map(|i| format!("s{i}"))
            .collect::<Vec<_>>()
            .join(",");
        assert!(refused(&format!("redis+sentinel://{many}/m/0")).contains("more than"));
        // The password does not show in the message.
        let message = refused("redis+sentinel://:s3cret@s1:26379");
        assert!(!message.contains("s3cret"), "{message}");
    }

    #[test]
    fn the_access_settings_are_checked_for_the_master_and_the_sentinels() {
        let tls_file = Access {
            tls_ca: Some("/nonexistent/ca.pem".into()),
            ..Access::default()
        };
        assert!(matches!(
            Target::new("redis+sentinel://127.0.0.1:1/m/0", &tls_file),
            Err(AccessError::NotTls("redis_tls_ca"))
        ));
        assert!(matches!(
            Target::new("rediss+sentinel://127.0.0.1:1/m/0", &tls_file),
            Err(AccessError::Read { .. })
        ));
        assert!(Target::new("rediss+sentinel://127.0.0.1:1/m/0", &Access::default()).is_ok());
        let password_file = Access {
            password_file: Some("/nonexistent/password".into()),
            ..Access::default()
        };
        assert!(matches!(
            Target::new("redis+sentinel://127.0.0.1:1/m/0", &password_file),
            Err(AccessError::Read {
                setting: "redis_password_file",
                ..
            })
        ));
        assert!(matches!(
            Target::new("redis+sentinel://:pw@127.0.0.1:1/m/0", &password_file),
            Err(AccessError::TwoPasswords)
        ));
    }
}
