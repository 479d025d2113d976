//! Subscribers of change notifications, as `fanout` and `notify-rate` use
//! them: the host with the ping and subscriptions plugins and the notify
//! endpoint on, N connections subscribed to collection 1 (read by
//! [`crate::readers`]), and the endpoint that notifies them.

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::{
    client::Socket,
    http::HttpClient,
    servers::{Artifacts, Server, Spec, TempDir, HOST_LOG},
    subscribing::{self, Subscribed},
};

/// The bearer token the host is started with.
const NOTIFY_TOKEN: &str = "rohrpost-bench-notify";

/// The group every subscriber joins.
const GROUP: &str = "collection-1";

/// Starts the host and subscribes `count` new connections to collection 1.
pub async fn start(
    artifacts: &Artifacts,
    label: &str,
    count: usize,
) -> Result<(Server, Vec<Socket>)> {
    let (mut servers, sockets) = start_hosts(artifacts, label, count, 1, None, false).await?;
    let server = servers.pop().context("no host started")?;
    Ok((server, sockets))
}

/// Starts `hosts` hosts (sharing their groups through Redis at `redis`
/// when given) and subscribes `count` new connections to collection 1,
/// spread evenly over the hosts, each offering permessage-deflate when
/// `deflate` is set (the host's default, `compression = "auto"`, accepts).
pub async fn start_hosts(
    artifacts: &Artifacts,
    label: &str,
    count: usize,
    hosts: usize,
    redis: Option<&str>,
    deflate: bool,
) -> Result<(Vec<Server>, Vec<Socket>)> {
    eprintln!("{label}: starting {hosts} host(s) with the ping and subscriptions plugins");
    let libraries = [
        artifacts.ping_lib.as_path(),
        artifacts.subscriptions_lib.as_path(),
    ];
    // A channel prefix of this run's own, on a Redis others may share.
    let prefix = format!("rohrpost-bench-{}:", std::process::id());
    // The subscriptions plugin loads only with an explicit `auth`.
    let config_dir = TempDir::new("config")?;
    let config = config_dir.path().join("rohrpost.toml");
    std::fs::write(
        &config,
        "[plugins.subscriptions]\nauth = \"off\"\nisolation = \"none\"\n",
    )
    .with_context(|| format!("cannot write {}", config.display()))?;
    let config = config.display().to_string();
    let mut args = vec!["--notify-token", NOTIFY_TOKEN, "--config", &config];
    if let Some(url) = redis {
        args.extend(["--groups", url, "--groups-prefix", &prefix]);
    }
    let mut servers = Vec::with_capacity(hosts);
    for n in 0..hosts {
        servers.push(Server::start(
            &format!("host {n}, subscriptions"),
            artifacts,
            Spec::Host {
                libraries: &libraries,
                log: HOST_LOG,
                args: &args,
            },
            None,
        )?);
    }
    let mut sockets = Vec::with_capacity(count);
    for (n, server) in servers.iter().enumerate() {
        let share = count / hosts + usize::from(n < count % hosts);
        sockets.extend(connect_subscribed(label, server, share, deflate).await?);
    }
    Ok((servers, sockets))
}

/// Opens `count` connections to `server` and subscribes each to
/// collection 1, offering permessage-deflate when `deflate` is set; any
/// failure fails the benchmark.
pub async fn connect_subscribed(
    label: &str,
    server: &Server,
    count: usize,
    deflate: bool,
) -> Result<Vec<Socket>> {
    subscribe_offering(label, &server.url(), &server.name, count, deflate)
        .await?
        .all(label, &server.name)
}

/// Opens `count` connections to any server speaking rohrpost at `url`
/// whose `subscribe` joins `collection-1` (daphne with the Django test app
/// too), paced and kept read as [`subscribing`] describes, and returns
/// those that subscribed with the failures of the others.
pub async fn subscribe(label: &str, url: &str, name: &str, count: usize) -> Result<Subscribed> {
    subscribe_offering(label, url, name, count, false).await
}

/// [`subscribe`], each connection offering permessage-deflate when
/// `deflate` is set.
async fn subscribe_offering(
    label: &str,
    url: &str,
    name: &str,
    count: usize,
    deflate: bool,
) -> Result<Subscribed> {
    let offering = if deflate {
        ", offering permessage-deflate"
    } else {
        ""
    };
    eprintln!(
        "{label}: opening {count} connections to {name} and subscribing each to {GROUP}, \
         {} at a time{offering}",
        subscribing::WINDOW
    );
    let subscribed =
        subscribing::subscribe_many(url, count, SUBSCRIBE, check_subscribed, deflate).await?;
    eprintln!(
        "{label}: {} of {count} subscribed to {name} in {:.1} s",
        subscribed.sockets.len(),
        subscribed.took.as_secs_f64()
    );
    Ok(subscribed)
}

/// The subscribe request.
const SUBSCRIBE: &str = r#"{"id":1,"type":"subscribe","data":{"type":"collection","id":1}}"#;

/// Accepts only `{"id":1,"type":"subscribe","data":{"group":"collection-1"}}`.
fn check_subscribed(reply: &str) -> Result<()> {
    let value: serde_json::Value = serde_json::from_str(reply)
        .with_context(|| format!("the subscribe reply is not JSON: {reply}"))?;
    let good = value["id"] == 1
        && value["type"] == "subscribe"
        && value.get("error").is_none()
        && value["data"]["group"] == GROUP;
    if !good {
        bail!("unexpected reply to subscribe (is the subscriptions plugin loaded?): {reply}");
    }
    Ok(())
}

/// What the benchmarks put into a notification's object, as a subscriber
/// reads it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Update {
    pub seq: u64,
    /// Microseconds since the benchmark's start when it was sent.
    pub sent_us: Option<u64>,
}

/// The `seq` and `sent_us` of a `subscription-update`; `None` for any
/// other message.
pub fn parse_update(text: &str) -> Option<Update> {
    #[derive(Deserialize)]
    struct Envelope<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
        data: Data,
    }
    #[derive(Deserialize)]
    struct Data {
        object: Object,
    }
    #[derive(Deserialize)]
    struct Object {
        seq: u64,
        sent_us: Option<u64>,
    }
    let envelope: Envelope<'_> = serde_json::from_str(text).ok()?;
    (envelope.kind == "subscription-update").then_some(Update {
        seq: envelope.data.object.seq,
        sent_us: envelope.data.object.sent_us,
    })
}

/// The notify endpoint of one host, over one keep-alive connection.
pub struct Notifier {
    client: HttpClient,
}

impl Notifier {
    /// Connects to the host's notify endpoint.
    pub async fn connect(server: &Server) -> Result<Notifier> {
        let mut client = HttpClient::new(server.addr());
        client.connect().await?;
        Ok(Notifier { client })
    }

    /// Notifies an update of collection 1 with this object (JSON) and
    /// returns to how many connections the host delivered it.
    pub async fn update(&mut self, object: &str) -> Result<u64> {
        #[derive(Deserialize)]
        struct Answer {
            delivered: u64,
        }
        let body = format!(r#"{{"model":"Collection","pk":1,"event":"update","object":{object}}}"#);
        let response = self
            .client
            .post_json("/api/notify", NOTIFY_TOKEN, &body)
            .await?;
        if response.status != 200 {
            bail!(
                "POST /api/notify answered {}: {}",
                response.status,
                response.text()
            );
        }
        let answer: Answer = serde_json::from_slice(&response.body)
            .with_context(|| format!("unexpected notify answer: {}", response.text()))?;
        Ok(answer.delivered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_are_recognised() {
        let text = r#"{"id":617,"type":"subscription-update","data":{"type":"update",
            "group":"collection-1","object":{"id":1,"seq":7,"sent_us":1234}}}"#;
        assert_eq!(
            parse_update(text),
            Some(Update {
                seq: 7,
                sent_us: Some(1234)
            })
        );
        let text = r#"{"id":"x","type":"subscription-update","data":{"type":"update",
            "group":"collection-1","object":{"id":1,"seq":8}}}"#;
        assert_eq!(
            parse_update(text).map(|u| (u.seq, u.sent_us)),
            Some((8, None))
        );
        assert_eq!(
            parse_update(r#"{"id":1,"type":"pong","data":{"seq":1}}"#),
            None
        );
        assert_eq!(parse_update("nonsense"), None);
    }

    #[test]
    fn subscribe_replies_are_checked() {
        assert!(
            check_subscribed(r#"{"id":1,"type":"subscribe","data":{"group":"collection-1"}}"#)
                .is_ok()
        );
        assert!(
            check_subscribed(r#"{"id":1,"type":"subscribe","error":"ACCESS_DENIED"}"#).is_err()
        );
        assert!(check_subscribed(
            r#"{"id":1,"type":"subscribe","error":"Unknown message type 'subscribe'."}"#
        )
        .is_err());
    }
}
