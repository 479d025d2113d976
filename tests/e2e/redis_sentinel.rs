//! Groups over a Redis that Redis Sentinel watches: hosts find the master
//! through the sentinels, share a group through it, and when the master
//! dies and the sentinels promote its replica, they find the new master,
//! subscribe again (or add their memberships again) and the same group
//! works in both directions, without its members joining again. The same
//! over channels_redis's core layer with a failover the sentinels are asked
//! for while the old master keeps running, and `--check-config` on
//! Sentinel URLs.
//!
//! Each test starts its own master, replica and three sentinels on free
//! ports, each in a directory of its own; the shared Redis is never
//! touched.

use std::{
    collections::HashMap,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use rohrpost_tests::{
    get,
    redis::{free_port, tls_cli, unique_prefix, OwnRedis},
    run_host,
    tls::TestTls,
    Client, Host, TempDir,
};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(10);
/// How long the sentinels may take to see each other, to agree that the
/// master is down and to promote the replica, and the hosts to follow.
const FAILOVER: Duration = Duration::from_secs(30);

/// A master, its replica and three sentinels watching them.
struct Sentinels {
    name: String,
    master: OwnRedis,
    replica: OwnRedis,
    sentinels: Vec<OwnRedis>,
    _dirs: Vec<TempDir>,
}

/// `redis-cli` on `port`: its output lines (empty when it fails).
fn cli(port: u16, command: &[&str]) -> Vec<String> {
    Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(command)
        .stderr(Stdio::null())
        .output()
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

async fn until(what: &str, within: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Sentinels {
    /// Starts them all, and waits until every sentinel knows the replica
    /// and the two other sentinels (what a failover needs).
    async fn start(label: &str) -> Sentinels {
        let name = unique_prefix(label);
        let mut dirs = Vec::new();
        let dir = TempDir::new("sentinel-master");
        let master_port = free_port();
        let master = OwnRedis::start_with(
            master_port,
            &[
                "--port",
                &master_port.to_string(),
                "--dir",
                &dir.path().to_string_lossy(),
            ],
            || cli(master_port, &["PING"]) == ["PONG"],
        )
        .await;
        dirs.push(dir);
        let dir = TempDir::new("sentinel-replica");
        let replica_port = free_port();
        let replica = OwnRedis::start_with(
            replica_port,
            &[
                "--port",
                &replica_port.to_string(),
                "--dir",
                &dir.path().to_string_lossy(),
                "--replicaof",
                "127.0.0.1",
                &master_port.to_string(),
            ],
            || cli(replica_port, &["PING"]) == ["PONG"],
        )
        .await;
        dirs.push(dir);
        let mut sentinels = Vec::new();
        for _ in 0..3 {
            let dir = TempDir::new("sentinel");
            let port = free_port();
            let config = dir.path().join("sentinel.conf");
            std::fs::write(
                &config,
                format!(
                    "bind 127.0.0.1\n\
                     port {port}\n\
                     dir {dir}\n\
                     sentinel monitor {name} 127.0.0.1 {master_port} 2\n\
                     sentinel down-after-milliseconds {name} 1000\n\
                     sentinel failover-timeout {name} 3000\n\
                     sentinel parallel-syncs {name} 1\n",
                    dir = dir.path().display()
                ),
            )
            .unwrap();
            let ready = || cli(port, &["PING"]) == ["PONG"];
            sentinels.push(OwnRedis::start_sentinel(port, &config, ready).await);
            dirs.push(dir);
        }
        let set = Sentinels {
            name,
            master,
            replica,
            sentinels,
            _dirs: dirs,
        };
        until("the replica is in sync", T, async || {
            cli(replica_port, &["INFO", "replication"])
                .iter()
                .any(|line| line.trim() == "master_link_status:up")
        })
        .await;
        for sentinel in &set.sentinels {
            until(
                "every sentinel knows the others and the replica",
                T,
                async || {
                    let said = set.master_state(sentinel.port());
                    said.get("num-other-sentinels").map(String::as_str) == Some("2")
                        && said.get("num-slaves").map(String::as_str) == Some("1")
                },
            )
            .await;
        }
        set
    }

    /// What the sentinel on `port` knows of the master, field by field.
    fn master_state(&self, port: u16) -> HashMap<String, String> {
        let lines = cli(port, &["SENTINEL", "MASTER", &self.name]);
        lines
            .chunks(2)
            .filter_map(|pair| Some((pair.first()?.clone(), pair.get(1)?.clone())))
            .collect()
    }

    /// The groups URL with `scheme` (`redis+sentinel`, ...).
    fn url(&self, scheme: &str) -> String {
        let sentinels = self
            .sentinels
            .iter()
            .map(OwnRedis::addr)
            .collect::<Vec<_>>()
            .join(",");
        format!("{scheme}://{sentinels}/{}/0", self.name)
    }

    /// Kills the master (SIGKILL), or asks the sentinels for a failover
    /// while it runs, and waits until the sentinels name the replica master
    /// and it says so.
    async fn fail_over(&mut self, how: Failover) {
        match how {
            Failover::Kill => self.master.stop(),
            Failover::Asked => {
                let sentinel = self.sentinels[0].port();
                until("a sentinel starts a failover", T, async || {
                    cli(sentinel, &["SENTINEL", "FAILOVER", &self.name]) == ["OK"]
                })
                .await;
            }
        }
        let replica = self.replica.port();
        until("the sentinels promote the replica", FAILOVER, async || {
            let named = cli(
                self.sentinels[0].port(),
                &["SENTINEL", "get-master-addr-by-name", &self.name],
            );
            named.get(1).map(String::as_str) == Some(replica.to_string().as_str())
                && cli(replica, &["ROLE"]).first().map(String::as_str) == Some("master")
        })
        .await;
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Failover {
    /// The master dies.
    Kill,
    /// `SENTINEL FAILOVER`: the old master runs on until the sentinels
    /// make it a replica.
    Asked,
}

fn host_on(groups: &str, prefix: &str) -> Host {
    Host::start_with(
        &["ping", "fixture-testkit"],
        &["--groups", groups, "--groups-prefix", prefix],
    )
    .unwrap()
}

async fn readyz(host: &Host) -> u16 {
    get(&host.addr, "/readyz").await.unwrap().0
}

async fn send(client: &mut Client, id: u64, group: &str, message: &str) {
    let request = json!({"id": id, "type": "group-send",
        "data": {"group": group, "message": message}});
    let reply = client.request(&request.to_string()).await.unwrap();
    assert_eq!(reply, json!({"id": id, "type": "group-send"}));
}

async fn expect_payload(client: &mut Client, payload: &str) {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let m: Value = client.recv_json(left).await.unwrap();
        if m["type"] == "group-message" && m["data"]["payload"] == payload {
            return;
        }
    }
}

/// Two hosts on `groups` share "room" both ways, then the master fails
/// over `how`: both reach the promoted replica (when the master died,
/// reporting not ready until then), and the room works again both ways
/// with the same members. `restored` is what the host logs once it has
/// subscribed (or added its memberships) again.
async fn share_a_group_through_a_failover(
    set: &mut Sentinels,
    how: Failover,
    groups: &str,
    restored: &str,
) {
    let prefix = format!("{}:", unique_prefix("sentinel"));
    let (a, b) = (host_on(groups, &prefix), host_on(groups, &prefix));
    let mut on_a = a.connect().await.unwrap();
    let mut on_b = b.connect().await.unwrap();
    on_a.join("room").await.unwrap();
    on_b.join("room").await.unwrap();
    let mut from_a = a.connect().await.unwrap();
    let mut from_b = b.connect().await.unwrap();
    send(&mut from_a, 1, "room", "a to b").await;
    expect_payload(&mut on_b, "a to b").await;
    send(&mut from_b, 2, "room", "b to a").await;
    expect_payload(&mut on_a, "b to a").await;
    assert_eq!((readyz(&a).await, readyz(&b).await), (200, 200));
    a.wait_for_log(&["the sentinels name the Redis master"], T)
        .await
        .unwrap();

    set.fail_over(how).await;
    if how == Failover::Kill {
        // The hosts notice at once (the dead master's connections close)
        // and stay not ready until they reach the new master, at least
        // until the sentinels agree that the old one is down.
        let (mut a_down, mut b_down) = (false, false);
        until("both hosts report the lost master", FAILOVER, async || {
            a_down |= readyz(&a).await == 503;
            b_down |= readyz(&b).await == 503;
            a_down && b_down
        })
        .await;
    }
    until("both hosts are ready again", FAILOVER, async || {
        readyz(&a).await == 200 && readyz(&b).await == 200
    })
    .await;
    let new_master = set.replica.addr();
    for host in [&a, &b] {
        host.wait_for_log(&["the sentinels name the Redis master", &new_master], T)
            .await
            .unwrap();
        host.wait_for_log(&["connected to Redis again", restored], T)
            .await
            .unwrap();
    }
    send(&mut from_a, 3, "room", "a to b again").await;
    expect_payload(&mut on_b, "a to b again").await;
    send(&mut from_b, 4, "room", "b to a again").await;
    expect_payload(&mut on_a, "b to a again").await;
}

#[tokio::test]
async fn hosts_follow_a_failover_over_their_own_format() {
    let mut set = Sentinels::start("native").await;
    let groups = set.url("redis+sentinel");
    share_a_group_through_a_failover(&mut set, Failover::Kill, &groups, "subscriptions restored")
        .await;
}

#[tokio::test]
async fn hosts_follow_an_asked_failover_over_the_channels_redis_core_layer() {
    let mut set = Sentinels::start("core").await;
    let groups = set.url("channels_redis+sentinel");
    share_a_group_through_a_failover(
        &mut set,
        Failover::Asked,
        &groups,
        "group memberships restored",
    )
    .await;
}

#[tokio::test]
async fn hosts_find_the_master_over_tls() {
    let tls = TestTls::new("sentinel");
    let ca = tls.ca_cert.to_string_lossy().into_owned();
    let master_port = free_port();
    let _master = OwnRedis::start_tls(master_port, &tls).await;
    let dir = TempDir::new("sentinel-tls");
    let port = free_port();
    let name = unique_prefix("tls");
    let config = dir.path().join("sentinel.conf");
    std::fs::write(
        &config,
        format!(
            "bind 127.0.0.1\n\
             port 0\n\
             tls-port {port}\n\
             dir {dir}\n\
             tls-cert-file {cert}\n\
             tls-key-file {key}\n\
             tls-ca-cert-file {ca}\n\
             tls-auth-clients no\n\
             tls-replication yes\n\
             sentinel monitor {name} 127.0.0.1 {master_port} 1\n",
            dir = dir.path().display(),
            cert = tls.server_cert.display(),
            key = tls.server_key.display(),
        ),
    )
    .unwrap();
    let _sentinel =
        OwnRedis::start_sentinel(port, &config, || tls_cli(port, &ca, &["PING"]) == "PONG").await;
    let groups = format!("rediss+sentinel://127.0.0.1:{port}/{name}/0");
    let prefix = format!("{}:", unique_prefix("sentinel-tls"));
    let host = || {
        Host::start_with(
            &["ping", "fixture-testkit"],
            &[
                "--groups",
                &groups,
                "--groups-prefix",
                &prefix,
                "--redis-tls-ca",
                &ca,
            ],
        )
        .unwrap()
    };
    let (a, b) = (host(), host());
    a.wait_for_log(
        &[
            "the sentinels name the Redis master",
            &format!("127.0.0.1:{master_port}"),
        ],
        T,
    )
    .await
    .unwrap();
    let mut on_b = b.connect().await.unwrap();
    on_b.join("room").await.unwrap();
    let mut from_a = a.connect().await.unwrap();
    send(&mut from_a, 1, "room", "over tls").await;
    expect_payload(&mut on_b, "over tls").await;
    // Subscribed on the master itself, over TLS.
    let numsub = tls_cli(
        master_port,
        &ca,
        &["PUBSUB", "NUMSUB", &format!("{prefix}group:room")],
    );
    assert!(numsub.ends_with('1'), "{numsub}");
}

#[test]
fn check_config_takes_the_sentinel_urls_the_server_can_start_with() {
    let dir = TempDir::new("check-sentinel");
    let check = |toml: &str| rohrpost_tests::check_config(dir.path(), toml);
    for accepted in [
        "redis+sentinel://127.0.0.1:1,127.0.0.1:2,127.0.0.1:3/mymaster/0",
        "channels_redis+sentinel://:pw@127.0.0.1:1/mymaster/2",
        "channels_redis_pubsub+sentinel://127.0.0.1/mymaster",
        "rediss+sentinel://127.0.0.1:1/mymaster/0",
        "channels_redis+sentinel://127.0.0.1:1/m1/0,channels_redis+sentinel://127.0.0.1:1/m2/0",
    ] {
        let (code, stderr) = check(&format!("groups = \"{accepted}\"\n"));
        assert_eq!(code, Some(0), "{accepted}: {stderr}");
    }
    let refused = [
        ("redis+sentinel://127.0.0.1:1", "names no master"),
        (
            "redis+sentinel://127.0.0.1:1/mymaster/x",
            "not a database number",
        ),
        (
            "redis+sentinel://127.0.0.1:1,,127.0.0.1:2/m/0",
            "empty sentinel",
        ),
        ("redis+sentinel://127.0.0.1:0/m/0", "no valid port"),
        ("redis+sentinel:///m/0", "empty sentinel"),
        ("sentinel://127.0.0.1:1/m/0", "Redis Sentinel"),
    ];
    for (url, expected) in refused {
        let (code, stderr) = check(&format!("groups = \"{url}\"\n"));
        assert_eq!(code, Some(1), "{url}: {stderr}");
        assert!(stderr.contains(expected), "{url}: {stderr}");
    }
    let (code, stderr) = check(
        "groups = \"redis+sentinel://127.0.0.1:1/m/0\"\nredis_tls_ca = \"/nonexistent/ca.pem\"\n",
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("not a TLS one"), "{stderr}");
}

#[test]
fn no_sentinel_answering_at_start_is_a_clear_error() {
    let (one, two) = (free_port(), free_port());
    let plugins = TempDir::new("no-sentinel");
    let url = format!("redis+sentinel://127.0.0.1:{one},127.0.0.1:{two}/mymaster/0");
    let (code, stderr) = run_host(&[
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--groups".as_ref(),
        url.as_ref(),
        "--plugins".as_ref(),
        plugins.path().as_os_str(),
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot reach Redis at {url}"))
            && stderr.contains("no sentinel named the master 'mymaster'"),
        "{stderr}"
    );
}
