//! Groups over a Redis Cluster (`redis+cluster://`): two hosts share
//! groups whose channels live on every master, each channel subscribed on
//! the master of its slot only (sharded pub/sub); hostile payloads are
//! dropped and counted as on one Redis; a slot that moves to
//! another master takes its subscriptions along; and a master that is
//! killed and started again serves its groups again without members
//! joining again, as does a replica that takes over from a master that
//! stays dead. Over TLS (`rediss+cluster://`), two hosts that trust the
//! cluster's CA share groups on every master, a host that trusts another
//! CA does not start and says why, and once the nodes ask for client
//! certificates a host with one shares the groups too.
//!
//! The cluster is the test's own: three `redis-server` masters on free
//! ports (and free bus ports), made a cluster with `redis-cli --cluster
//! create`; over TLS, with a CA and a certificate for 127.0.0.1 made with
//! the `openssl` command.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use rohrpost_harness::redis_servers::{redis_cli, RedisCluster};
use rohrpost_tests::{
    get, metric_value, run_host,
    tls::{refused_with_ca, TestTls},
    Client, Host, TempDir,
};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(10);
/// Groups per master.
const PER_MASTER: usize = 3;

fn host_on(url: &str) -> Host {
    Host::start_with(&["ping", "fixture-testkit"], &["--groups", url]).unwrap()
}

/// The channel of `group` with the default prefix.
fn channel(group: &str) -> String {
    format!("rohrpost:group:{group}")
}

async fn readyz(host: &Host) -> u16 {
    get(&host.addr, "/readyz")
        .await
        .map_or(0, |(status, _)| status)
}

async fn until(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Subscribers of `channel` on the node at `port` (`PUBSUB SHARDNUMSUB`).
fn shard_subscribers(port: u16, channel: &str) -> u64 {
    shard_subscribers_in(redis_cli(port, &["PUBSUB", "SHARDNUMSUB", channel]))
}

/// A member of every group of `by_master` on each host, once both hosts
/// are subscribed to each group's channel on its master (`subscribers`
/// counts a channel's subscribers on the node at a port).
async fn join_on_both(
    a: &Host,
    b: &Host,
    by_master: &BTreeMap<u16, Vec<String>>,
    subscribers: impl Fn(u16, &str) -> u64,
) -> (Client, Client) {
    let (mut on_a, mut on_b) = (a.connect().await.unwrap(), b.connect().await.unwrap());
    for group in by_master.values().flatten() {
        on_a.join(group).await.unwrap();
        on_b.join(group).await.unwrap();
    }
    for (owner, of_owner) in by_master {
        for group in of_owner {
            let channel = channel(group);
            until("both hosts subscribed on the owner", T, async || {
                subscribers(*owner, &channel) == 2
            })
            .await;
        }
    }
    (on_a, on_b)
}

/// The count of `PUBSUB SHARDNUMSUB`'s answer.
fn shard_subscribers_in(out: String) -> u64 {
    out.lines()
        .nth(1)
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// `SPUBLISH channel payload` on the node at `port`, the payload read
/// from stdin (it may be larger than an argument can be).
fn spublish(port: u16, channel: &str, payload: &[u8]) {
    let mut child = Command::new("redis-cli")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-x",
            "SPUBLISH",
            channel,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-cli");
    if let Some(mut input) = child.stdin.take() {
        input.write_all(payload).unwrap();
    }
    assert!(child.wait().unwrap().success());
}

async fn rejected(host: &Host) -> f64 {
    metric_value(&host.addr, "rohrpost_broker_rejected_total")
        .await
        .unwrap_or(0.0)
}

/// Sends `text` to `group` from `sender`.
async fn group_send(sender: &mut Client, group: &str, text: &str) {
    let request = json!({"id": 1, "type": "group-send", "data": {"group": group, "message": text}});
    let reply = sender.request(&request.to_string()).await.unwrap();
    assert_eq!(reply, json!({"id": 1, "type": "group-send"}));
}

/// The payloads of the next `count` group messages of `member`.
async fn payloads(member: &mut Client, count: usize) -> BTreeSet<String> {
    let mut got = BTreeSet::new();
    for _ in 0..count {
        let m: Value = member.recv_json(T).await.unwrap();
        assert_eq!(m["type"], "group-message", "{m}");
        got.insert(m["data"]["payload"].as_str().unwrap_or_default().to_owned());
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_share_groups_over_a_cluster_through_a_slot_move_and_a_master_restart() {
    let mut cluster = tokio::task::spawn_blocking(|| RedisCluster::start(3))
        .await
        .unwrap()
        .unwrap();
    let ports = cluster.ports();
    let by_master = groups_on_every_master(&cluster, PER_MASTER);
    let groups: Vec<String> = by_master.values().flatten().cloned().collect();

    let url = cluster.url();
    let (a, b) = (host_on(&url), host_on(&url));
    let (mut on_a, mut on_b) = join_on_both(&a, &b, &by_master, |port, channel| {
        shard_subscribers(port, channel)
    })
    .await;
    // Sharded: each channel has both hosts' subscriptions on its master and
    // none elsewhere.
    for (owner, of_owner) in &by_master {
        for group in of_owner {
            let channel = channel(group);
            for port in ports.iter().filter(|p| *p != owner) {
                assert_eq!(shard_subscribers(*port, &channel), 0, "{channel} on {port}");
            }
        }
    }

    // Both directions, every group: the sender's host delivers to its own
    // member, the other host gets it through the group's master.
    let (mut from_a, mut from_b) = (a.connect().await.unwrap(), b.connect().await.unwrap());
    for group in &groups {
        group_send(&mut from_a, group, &format!("A to {group}")).await;
    }
    let expected: BTreeSet<String> = groups.iter().map(|g| format!("A to {g}")).collect();
    assert_eq!(payloads(&mut on_b, groups.len()).await, expected);
    assert_eq!(payloads(&mut on_a, groups.len()).await, expected);
    for group in &groups {
        group_send(&mut from_b, group, &format!("B to {group}")).await;
    }
    let expected: BTreeSet<String> = groups.iter().map(|g| format!("B to {g}")).collect();
    assert_eq!(payloads(&mut on_a, groups.len()).await, expected);
    assert_eq!(payloads(&mut on_b, groups.len()).await, expected);
    on_a.expect_silence(Duration::from_millis(300))
        .await
        .unwrap();
    on_b.expect_silence(Duration::from_millis(100))
        .await
        .unwrap();

    // Hostile payloads on a group's channel, SPUBLISHed on its master: too
    // large (rejected before it is queued), not UTF-8, not JSON. Each is
    // dropped and counted; a good message still arrives.
    let (owner, target) = by_master
        .iter()
        .next()
        .map(|(p, g)| (*p, g[0].clone()))
        .unwrap();
    let before = rejected(&a).await;
    for payload in [
        vec![b'['; 9 << 20],
        b"\xc1\xff\x00".to_vec(),
        b"host\nnot json".to_vec(),
    ] {
        spublish(owner, &channel(&target), &payload);
    }
    until("A counts the hostile payloads", T, async || {
        rejected(&a).await >= before + 3.0
    })
    .await;
    group_send(&mut from_b, &target, "good after the hostile").await;
    for member in [&mut on_a, &mut on_b] {
        let got = member.recv_json(T).await.unwrap();
        assert_eq!(got["data"]["payload"], "good after the hostile", "{got}");
    }

    // Presence works on the cluster: each host sees both.
    until("both hosts in each other's presence", T, async || {
        let (_, body) = get(&a.addr, "/api/stats").await.unwrap();
        let stats: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        stats["hosts"].as_array().is_some_and(|h| h.len() == 2)
    })
    .await;

    // A slot moves to another master: its old one drops the subscriptions
    // (a sunsubscribe push), the hosts subscribe again on the new one.
    let moved = &by_master[&ports[1]][0];
    let slot = cluster.slot_of(&channel(moved)).expect("a slot");
    cluster.move_slot(slot, ports[2]).unwrap();
    until("both hosts subscribed where the slot went", T, async || {
        shard_subscribers(ports[2], &channel(moved)) == 2
    })
    .await;
    assert_eq!(shard_subscribers(ports[1], &channel(moved)), 0);
    for (sender, label) in [(&mut from_a, "A"), (&mut from_b, "B")] {
        let text = format!("{label} to {moved} after the move");
        group_send(sender, moved, &text).await;
        for member in [&mut on_a, &mut on_b] {
            let got = member.recv_json(T).await.unwrap();
            assert_eq!(got["data"]["payload"], text.as_str(), "{got}");
        }
    }
    a.wait_for_log(&["a slot moved"], T).await.unwrap();

    // One master dies: both hosts report it; it comes back on its port and
    // directory, rejoins from nodes.conf, and the hosts subscribe again.
    let (killed, killed_port) = (0, ports[0]);
    cluster.kill(killed);
    until("A reports the node down", T, async || {
        readyz(&a).await == 503
    })
    .await;
    until("B reports the node down", T, async || {
        readyz(&b).await == 503
    })
    .await;
    on_a.ping_ok(2).await.unwrap();
    on_b.ping_ok(3).await.unwrap();
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.restart(killed).unwrap();
        cluster.wait_ok().unwrap();
        cluster
    })
    .await
    .unwrap();
    until("A is ready again", Duration::from_secs(20), async || {
        readyz(&a).await == 200
    })
    .await;
    until("B is ready again", Duration::from_secs(20), async || {
        readyz(&b).await == 200
    })
    .await;
    b.wait_for_log(&["subscriptions restored"], T)
        .await
        .unwrap();
    let on_killed = &by_master[&killed_port];
    for group in on_killed {
        let channel = channel(group);
        until("both hosts subscribed again", T, async || {
            shard_subscribers(killed_port, &channel) == 2
        })
        .await;
    }
    // Messages of the restarted master's groups go between hosts again, in
    // both directions; the members never joined again.
    for group in on_killed {
        for (sender, label) in [(&mut from_a, "A"), (&mut from_b, "B")] {
            let text = format!("{label} to {group} after the restart");
            group_send(sender, group, &text).await;
            for member in [&mut on_a, &mut on_b] {
                let got = member.recv_json(T).await.unwrap();
                assert_eq!(got["data"]["payload"], text.as_str(), "{got}");
            }
        }
    }
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_taking_over_from_a_dead_master_carries_its_groups() {
    let mut cluster = tokio::task::spawn_blocking(|| RedisCluster::start_with_replicas(3, 1))
        .await
        .unwrap()
        .unwrap();
    let group = "failover-room";
    let slot = cluster.slot_of(&channel(group)).expect("a slot");
    let master = cluster.owner_of_slot(slot).expect("an owner");
    let url = cluster.url();
    let (a, b) = (host_on(&url), host_on(&url));
    let (mut on_a, mut on_b) = (a.connect().await.unwrap(), b.connect().await.unwrap());
    on_a.join(group).await.unwrap();
    on_b.join(group).await.unwrap();
    until("both hosts subscribed on the master", T, async || {
        shard_subscribers(master, &channel(group)) == 2
    })
    .await;
    let mut from_a = a.connect().await.unwrap();
    group_send(&mut from_a, group, "before").await;
    assert_eq!(
        payloads(&mut on_b, 1).await,
        BTreeSet::from(["before".to_owned()])
    );
    assert_eq!(
        payloads(&mut on_a, 1).await,
        BTreeSet::from(["before".to_owned()])
    );

    // The master dies and stays dead: its replica takes over its slots
    // after the node timeout, and the hosts follow it.
    cluster.kill(cluster.index_of(master).expect("the master's node"));
    until("A reports the master down", T, async || {
        readyz(&a).await == 503
    })
    .await;
    // Not ready while the dead master still owns the slot.
    for _ in 0..10 {
        if cluster.owner_of_slot(slot) != Some(master) {
            break;
        }
        assert_eq!(readyz(&a).await, 503, "ready while a master is down");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let replica = {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match cluster.owner_of_slot(slot) {
                Some(owner) if owner != master => break owner,
                _ => {
                    assert!(Instant::now() < deadline, "no replica took over");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    };
    let long = Duration::from_secs(30);
    until("A is ready again", long, async || readyz(&a).await == 200).await;
    until("B is ready again", long, async || readyz(&b).await == 200).await;
    until("both hosts subscribed on the new master", T, async || {
        shard_subscribers(replica, &channel(group)) == 2
    })
    .await;
    let mut from_b = b.connect().await.unwrap();
    for (sender, text) in [
        (&mut from_a, "A after the failover"),
        (&mut from_b, "B after the failover"),
    ] {
        group_send(sender, group, text).await;
        for member in [&mut on_a, &mut on_b] {
            let got = member.recv_json(T).await.unwrap();
            assert_eq!(got["data"]["payload"], text, "{got}");
        }
    }
    drop(cluster);
}

/// Groups on every master: `per_master` group names whose channels hash
/// to slots of each master of `cluster`.
fn groups_on_every_master(cluster: &RedisCluster, per_master: usize) -> BTreeMap<u16, Vec<String>> {
    let masters = cluster.ports().len();
    let mut by_master: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    for n in 0.. {
        if by_master.len() == masters && by_master.values().all(|g| g.len() >= per_master) {
            break;
        }
        assert!(n < 1000, "no groups on every master: {by_master:?}");
        let group = format!("room-{n}");
        let owner = cluster.owner_of(&channel(&group)).expect("an owner");
        let groups = by_master.entry(owner).or_default();
        if groups.len() < per_master {
            groups.push(group);
        }
    }
    by_master
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_share_groups_over_a_tls_cluster_and_a_host_with_another_ca_does_not_start() {
    let tls = TestTls::new("cluster");
    let files = tls.redis_files();
    let cluster = tokio::task::spawn_blocking(move || RedisCluster::start_tls(3, files))
        .await
        .unwrap()
        .unwrap();
    let by_master = groups_on_every_master(&cluster, 1);
    let groups: Vec<String> = by_master.values().flatten().cloned().collect();
    let url = cluster.url();
    assert!(url.starts_with("rediss+cluster://"), "{url}");
    let ca = tls.ca_cert.to_string_lossy().into_owned();
    let host = || {
        Host::start_with(
            &["ping", "fixture-testkit"],
            &["--groups", &url, "--redis-tls-ca", &ca],
        )
        .unwrap()
    };
    let (a, b) = (host(), host());
    // Both hosts subscribed on each group's master, over TLS.
    let (mut on_a, mut on_b) = join_on_both(&a, &b, &by_master, |port, channel| {
        shard_subscribers_in(cluster.cli(port, &["PUBSUB", "SHARDNUMSUB", channel]))
    })
    .await;
    let (mut from_a, mut from_b) = (a.connect().await.unwrap(), b.connect().await.unwrap());
    for (sender, label) in [(&mut from_a, "A"), (&mut from_b, "B")] {
        for group in &groups {
            group_send(sender, group, &format!("{label} to {group} over tls")).await;
        }
        let expected: BTreeSet<String> = groups
            .iter()
            .map(|g| format!("{label} to {g} over tls"))
            .collect();
        assert_eq!(payloads(&mut on_a, groups.len()).await, expected);
        assert_eq!(payloads(&mut on_b, groups.len()).await, expected);
    }
    assert_eq!(readyz(&a).await, 200);
    assert_eq!(readyz(&b).await, 200);

    // A host that trusts another CA does not start, and says why.
    let other = TestTls::new("other");
    let plugins = TempDir::new("cluster-wrong-ca");
    let (code, stderr) = refused_with_ca(&url, &other.ca_cert, plugins.path());
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot reach Redis at rediss+cluster(rediss://127.0.0.1:"),
        "{stderr}"
    );
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");

    // Nodes that ask for a client certificate: a host with one
    // (`--redis-tls-cert`, `--redis-tls-key`) shares the groups; the
    // hosts already connected go on.
    for port in cluster.ports() {
        let out = cluster.cli(port, &["CONFIG", "SET", "tls-auth-clients", "yes"]);
        assert_eq!(out, "OK", "on {port}");
    }
    let (cert, key) = (
        tls.server_cert.to_string_lossy().into_owned(),
        tls.server_key.to_string_lossy().into_owned(),
    );
    let c = Host::start_with(
        &["ping", "fixture-testkit"],
        &[
            "--groups",
            &url,
            "--redis-tls-ca",
            &ca,
            "--redis-tls-cert",
            &cert,
            "--redis-tls-key",
            &key,
        ],
    )
    .unwrap();
    let mut on_c = c.connect().await.unwrap();
    let group = &groups[0];
    on_c.join(group).await.unwrap();
    let owner = cluster.owner_of(&channel(group)).expect("an owner");
    until(
        "the host with a client certificate subscribed",
        T,
        async || {
            shard_subscribers_in(cluster.cli(owner, &["PUBSUB", "SHARDNUMSUB", &channel(group)]))
                == 3
        },
    )
    .await;
    group_send(&mut from_a, group, "to a client certificate").await;
    for member in [&mut on_c, &mut on_a, &mut on_b] {
        let got = member.recv_json(T).await.unwrap();
        assert_eq!(got["data"]["payload"], "to a client certificate", "{got}");
    }
    drop(cluster);
}

#[test]
fn check_config_takes_a_cluster_with_or_without_tls() {
    let dir = TempDir::new("check-cluster");
    let file = dir.path().join("rohrpost.toml");
    let tls = TestTls::new("check-cluster");
    let ca = tls.ca_cert.display();
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let check = |settings: &str| {
        std::fs::write(&file, format!("groups = {settings}\n")).unwrap();
        run_host(&["--check-config".as_ref(), file.as_os_str()])
    };
    for taken in [
        "\"redis+cluster://127.0.0.1:7000,127.0.0.1:7001/\"".to_owned(),
        "\"rediss+cluster://:pw@127.0.0.1:7000,127.0.0.1:7001/\"".to_owned(),
        format!("\"rediss+cluster://127.0.0.1:7000/\"\nredis_tls_ca = \"{ca}\""),
    ] {
        let (code, stderr) = check(&taken);
        assert_eq!(code, Some(0), "{taken}: {stderr}");
    }
    for (refused, why) in [
        (
            "\"redis+cluster://127.0.0.1:7000/3\"".to_owned(),
            "database 0 only",
        ),
        ("\"redis+cluster://127.0.0.1/\"".to_owned(), "host:port"),
        (
            "\"rediss+cluster://:pw@127.0.0.1/\"".to_owned(),
            "host:port",
        ),
        (
            format!("\"redis+cluster://:pw@127.0.0.1:7000/\"\nredis_tls_ca = \"{ca}\""),
            "not a TLS one",
        ),
        (
            format!(
                "\"rediss+cluster://:pw@127.0.0.1:7000/\"\nredis_tls_ca = \"{}\"",
                junk.display()
            ),
            "redis_tls_ca",
        ),
        (
            format!("\"rediss+cluster://:pw@127.0.0.1:7000/\"\nredis_tls_cert = \"{ca}\""),
            "go together",
        ),
        (
            "\"rediss+cluster://:pw@127.0.0.1:7000/\"\nredis_password_file = \"/nonexistent/pw\""
                .to_owned(),
            "one or the other",
        ),
    ] {
        let (code, stderr) = check(&refused);
        assert_eq!(code, Some(1), "{refused}: {stderr}");
        assert!(stderr.contains(why), "{refused}: {stderr}");
        assert!(!stderr.contains(":pw@"), "{stderr}");
    }
}
