//! A Redis that stops answering (SIGSTOP) while hosts share their groups
//! through it: no reply waits on it, the hosts notice within seconds and
//! report it as they report a lost Redis, and everything recovers when it
//! answers again.
//!
//! The test starts a `redis-server` of its own on a free port, to stop and
//! continue it; the shared Redis is never touched.

use std::time::{Duration, Instant};

use rohrpost_tests::{
    get,
    redis::{free_port, redis_answers, OwnRedis},
    Client, Host,
};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(10);
const TOKEN: &str = "stall-token";
/// Requests sent while Redis is stopped. Before deadlines and background
/// publishing, each group send waited about 0.5 s for Redis and each join
/// of a new group 2 s: together at least 4 s and 6 s.
const SENDS: u64 = 8;
const JOINS: usize = 3;
/// A bound for all of them together: far above what they take now (a few
/// milliseconds) and below what they took before.
const ALL_SENDS_WITHIN: Duration = Duration::from_millis(2500);
const ALL_JOINS_WITHIN: Duration = Duration::from_millis(3500);

fn host_on(redis: &OwnRedis) -> Host {
    let url = format!("redis://{}/0", redis.addr());
    Host::start_with(
        &["ping", "fixture-testkit"],
        &[
            "--groups",
            &url,
            "--groups-prefix",
            "stall:",
            "--notify-token",
            TOKEN,
        ],
    )
    .unwrap()
}

async fn readyz(host: &Host) -> (u16, String) {
    get(&host.addr, "/readyz").await.unwrap()
}

/// A sample of `/metrics`, by its full name.
async fn metric(host: &Host, name: &str) -> f64 {
    let (_, text) = get(&host.addr, "/metrics").await.unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

async fn until(what: &str, within: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn group_send(sender: &mut Client, group: &str, payload: &str) {
    let request = json!({"id": 1, "type": "group-send",
        "data": {"group": group, "message": payload}});
    let reply = sender.request(&request.to_string()).await.unwrap();
    assert_eq!(reply, json!({"id": 1, "type": "group-send"}));
}

async fn notify(host: &Host, group: &str, pk: u64) -> Value {
    let body = json!({"model": "News", "pk": pk, "event": "create", "group": group}).to_string();
    let (status, reply) = host.notify(Some(TOKEN), &body).await.unwrap();
    assert_eq!(status, 200, "{reply}");
    reply
}

/// Reads until a message matches; messages sent while Redis was stopped
/// may or may not arrive (at most once), so others are skipped.
async fn expect(client: &mut Client, what: &str, matches: impl Fn(&Value) -> bool) {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let m = client
            .recv_json(left)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        if matches(&m) {
            return;
        }
    }
}

fn payload_is(payload: &'static str) -> impl Fn(&Value) -> bool {
    move |m| m["type"] == "group-message" && m["data"]["payload"] == payload
}

fn update_of(pk: u64) -> impl Fn(&Value) -> bool {
    move |m| m["type"] == "subscription-update" && m["data"]["object"]["id"] == pk
}

#[tokio::test]
async fn a_stalled_redis_delays_no_reply_shows_in_readyz_and_recovers() {
    let redis = OwnRedis::start(free_port()).await;
    let (a, b) = (host_on(&redis), host_on(&redis));
    let mut on_a = a.connect().await.unwrap();
    let mut on_b = b.connect().await.unwrap();
    on_a.join("room").await.unwrap();
    on_b.join("room").await.unwrap();
    let mut sender = a.connect().await.unwrap();
    group_send(&mut sender, "room", "before").await;
    expect(&mut on_a, "local before", payload_is("before")).await;
    expect(&mut on_b, "remote before", payload_is("before")).await;
    for host in [&a, &b] {
        assert_eq!(readyz(host).await.0, 200);
        assert_eq!(metric(host, "rohrpost_broker_up").await, 1.0);
    }

    redis.stall();

    // (1) Group sends from a handler and from POST /api/notify answer at
    // once, and local members get them, while Redis answers nothing.
    let started = Instant::now();
    for n in 0..SENDS {
        group_send(&mut sender, "room", "stalled").await;
        expect(&mut on_a, "local during the stall", payload_is("stalled")).await;
        assert_eq!(notify(&a, "room", 100 + n).await["delivered"], 1);
        expect(&mut on_a, "local notify", update_of(100 + n)).await;
    }
    let took = started.elapsed();
    assert!(
        took < ALL_SENDS_WITHIN,
        "{} group sends took {took:?}",
        2 * SENDS
    );
    // (2) Joining groups that are new to the host answers soon too.
    let mut joiner = b.connect().await.unwrap();
    let started = Instant::now();
    for n in 0..JOINS {
        joiner.join(&format!("late-{n}")).await.unwrap();
    }
    let took = started.elapsed();
    assert!(took < ALL_JOINS_WITHIN, "{JOINS} joins took {took:?}");
    assert!(
        !redis_answers(&redis.addr()).await,
        "Redis was stopped all along"
    );

    // (3) Both hosts see that Redis does not answer, as for a lost one.
    for host in [&a, &b] {
        until("readyz 503", T, async || readyz(host).await.0 == 503).await;
        let (_, body) = readyz(host).await;
        assert!(body.contains("not answering"), "{body}");
        assert_eq!(metric(host, "rohrpost_broker_up").await, 0.0);
    }
    until("lost messages are counted", T, async || {
        metric(&a, "rohrpost_broker_drops_total").await > 0.0
    })
    .await;
    a.wait_for_log(&["lost the connection to Redis"], T)
        .await
        .unwrap();
    sender.ping_ok(2).await.unwrap();
    on_b.ping_ok(3).await.unwrap();

    redis.resume();

    for host in [&a, &b] {
        until("readyz 200 again", Duration::from_secs(20), async || {
            readyz(host).await.0 == 200
        })
        .await;
        assert_eq!(metric(host, "rohrpost_broker_up").await, 1.0);
    }
    b.wait_for_log(&["connected to Redis again", "subscriptions restored"], T)
        .await
        .unwrap();
    // Across hosts again, both ways, and for a group joined while Redis
    // was stopped (subscribed on reconnection).
    group_send(&mut sender, "room", "after").await;
    expect(&mut on_b, "remote after", payload_is("after")).await;
    expect(&mut on_a, "local after", payload_is("after")).await;
    notify(&b, "room", 7).await;
    expect(&mut on_a, "remote notify after", update_of(7)).await;
    notify(&a, "late-0", 8).await;
    expect(&mut joiner, "group joined during the stall", update_of(8)).await;
}
