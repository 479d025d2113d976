//! Several hosts sharing their groups through Redis: every member on every
//! host gets a group message once, and a Redis outage costs only the
//! messages between hosts while it lasts.
//!
//! These tests need a Redis server: the shared one on 127.0.0.1:6379 (each
//! test uses its own channel prefix), or one they start themselves on a
//! free port when they must stop it.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use rohrpost_tests::{
    build, get,
    redis::{free_port, redis_answers, unique_prefix, OwnRedis},
    Client, Host,
};
use serde_json::json;

const T: Duration = Duration::from_secs(10);
const TOKEN: &str = "cluster-token";
const SHARED_REDIS: &str = "127.0.0.1:6379";

/// A channel prefix of its own for each host group of a test.
fn prefix() -> String {
    format!("{}:", unique_prefix("test"))
}

fn host_on(redis: &str, prefix: &str) -> Host {
    let url = format!("redis://{redis}/0");
    Host::start_with(
        &["ping", "fixture-testkit"],
        &[
            "--groups",
            &url,
            "--groups-prefix",
            prefix,
            "--notify-token",
            TOKEN,
        ],
    )
    .unwrap()
}

async fn notify(host: &Host, group: &str, n: u64) -> serde_json::Value {
    let body = json!({"model": "News", "pk": n, "event": "create", "group": group}).to_string();
    let (status, reply) = host.notify(Some(TOKEN), &body).await.unwrap();
    assert_eq!(status, 200, "{reply}");
    reply
}

async fn expect_update(c: &mut Client, n: u64) -> serde_json::Value {
    let m = c.recv_json(T).await.unwrap();
    assert_eq!(m["type"], "subscription-update", "{m}");
    assert_eq!(m["data"]["object"]["id"], n, "{m}");
    m
}

#[tokio::test]
async fn a_notification_posted_to_any_host_reaches_every_member_once() {
    assert!(
        redis_answers(SHARED_REDIS).await,
        "no Redis on {SHARED_REDIS}"
    );
    let prefix = prefix();
    let (a, b, c) = (
        host_on(SHARED_REDIS, &prefix),
        host_on(SHARED_REDIS, &prefix),
        host_on(SHARED_REDIS, &prefix),
    );
    let mut on_a = a.connect().await.unwrap();
    let mut on_b = b.connect().await.unwrap();
    let mut left = b.connect().await.unwrap();
    let mut dropped = a.connect().await.unwrap();
    on_a.join("news").await.unwrap();
    on_b.join("news").await.unwrap();
    left.join("news").await.unwrap();
    dropped.join("news").await.unwrap();
    left.request(r#"{"id":1,"type":"leave","data":{"group":"news"}}"#)
        .await
        .unwrap();
    drop(dropped);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let reply = notify(&c, "news", 1).await;
    assert_eq!(reply["delivered"], 0, "C has no members of its own");
    let (ma, mb) = (
        expect_update(&mut on_a, 1).await,
        expect_update(&mut on_b, 1).await,
    );
    assert_eq!(ma, mb, "one message, one id, on every host");
    assert_eq!(ma["id"], reply["id"]);
    for client in [&mut on_a, &mut on_b, &mut left] {
        client
            .expect_silence(Duration::from_millis(400))
            .await
            .unwrap();
    }

    // Posted to a host with a member: it counts its own.
    let reply = notify(&b, "news", 2).await;
    assert_eq!(reply["delivered"], 1);
    expect_update(&mut on_a, 2).await;
    expect_update(&mut on_b, 2).await;
    on_a.expect_silence(Duration::from_millis(300))
        .await
        .unwrap();
    on_b.expect_silence(Duration::from_millis(300))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_plugin_sending_to_a_group_reaches_members_on_other_hosts() {
    assert!(
        redis_answers(SHARED_REDIS).await,
        "no Redis on {SHARED_REDIS}"
    );
    let prefix = prefix();
    let (a, b) = (
        host_on(SHARED_REDIS, &prefix),
        host_on(SHARED_REDIS, &prefix),
    );
    let mut member = b.connect().await.unwrap();
    member.join("room").await.unwrap();
    let mut sender = a.connect().await.unwrap();
    let reply = sender
        .request(r#"{"id":5,"type":"group-send","data":{"group":"room","message":"from A"}}"#)
        .await
        .unwrap();
    assert_eq!(reply, json!({"id":5,"type":"group-send"}));
    let m = member.recv_json(T).await.unwrap();
    assert_eq!(m["type"], "group-message");
    assert_eq!(m["data"], json!({"payload": "from A"}));
    member
        .expect_silence(Duration::from_millis(300))
        .await
        .unwrap();
    sender
        .expect_silence(Duration::from_millis(100))
        .await
        .unwrap();
}

async fn readyz(host: &Host) -> u16 {
    get(&host.addr, "/readyz").await.unwrap().0
}

async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within 20 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn hosts_survive_a_redis_outage_and_recover() {
    let port = free_port();
    let mut redis = OwnRedis::start(port).await;
    let prefix = prefix();
    let (mut a, mut b) = (
        host_on(&redis.addr(), &prefix),
        host_on(&redis.addr(), &prefix),
    );
    let mut member = b.connect().await.unwrap();
    member.join("live").await.unwrap();
    let mut sender = a.connect().await.unwrap();
    notify(&a, "live", 1).await;
    expect_update(&mut member, 1).await;
    assert_eq!((readyz(&a).await, readyz(&b).await), (200, 200));

    redis.stop();
    until("A reports the outage", || async { readyz(&a).await == 503 }).await;
    until("B reports the outage", || async { readyz(&b).await == 503 }).await;
    // Both keep serving; local delivery goes on; connections stay open.
    sender.ping_ok(2).await.unwrap();
    member.ping_ok(3).await.unwrap();
    assert_eq!(notify(&b, "live", 2).await["delivered"], 1);
    expect_update(&mut member, 2).await;
    // What goes between hosts during the outage is lost (at most once).
    assert_eq!(notify(&a, "live", 3).await["delivered"], 0);
    member
        .expect_silence(Duration::from_millis(300))
        .await
        .unwrap();
    assert!(a.is_running() && b.is_running());
    a.wait_for_log(&["lost the connection to Redis"], T)
        .await
        .unwrap();

    let _redis = OwnRedis::start(port).await;
    until("A is ready again", || async { readyz(&a).await == 200 }).await;
    until("B is ready again", || async { readyz(&b).await == 200 }).await;
    b.wait_for_log(&["connected to Redis again", "subscriptions restored"], T)
        .await
        .unwrap();
    // B subscribed again: messages from A reach its member.
    notify(&a, "live", 4).await;
    expect_update(&mut member, 4).await;
    sender.ping_ok(5).await.unwrap();
}

#[test]
fn redis_unreachable_at_start_is_a_clear_error() {
    let port = free_port();
    let plugins = rohrpost_tests::TempDir::new("no-redis");
    let out = Command::new(build().host())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--groups",
            &format!("redis://127.0.0.1:{port}/0"),
        ])
        .arg("--plugins")
        .arg(plugins.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot reach Redis at redis://127.0.0.1:{port}/0")),
        "{stderr}"
    );
}
