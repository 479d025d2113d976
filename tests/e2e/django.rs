//! A Django rohrpost app and this host sharing groups through
//! `channels_redis`: the app's model mixins and `send_to_group` reach the
//! host's clients, unchanged, and the host's group messages reach the
//! app's Channels consumers.
//!
//! Real Django (a virtual environment the tests make, see
//! `rohrpost_tests::django`) and daphne, the Redis on 127.0.0.1:6379 (each
//! test with a prefix of its own) or, to restart it, a redis-server of the
//! test's own, real hosts with the subscriptions plugin.

use std::{
    io::{BufRead, BufReader},
    process::Child,
    time::{Duration, Instant},
};

use rohrpost_tests::{
    django::Django,
    get,
    redis::{free_port, redis_answers, unique_prefix, OwnRedis},
    Client, Host, Received,
};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(20);
const QUIET: Duration = Duration::from_millis(500);
const TOKEN: &str = "django-token";
const SHARED_REDIS: &str = "127.0.0.1:6379";

/// A Channels prefix of its own for each test.
fn prefix() -> String {
    unique_prefix("asgi-test")
}

/// A host with the subscriptions plugin (anyone may subscribe) whose
/// groups are in `groups` under `prefix`.
async fn host(groups: &str, prefix: &str) -> Host {
    let config = format!("notify_token = \"{TOKEN}\"\n\n[plugins.subscriptions]\nauth = \"off\"\n");
    let host = Host::start_with_config(
        &["ping"],
        &config,
        &["--groups", groups, "--groups-prefix", prefix],
    )
    .unwrap();
    rohrpost_tests::install(
        &rohrpost_tests::build().plugin("subscriptions"),
        host.plugins.path(),
        "libsubscriptions.so",
    );
    host.wait_for_log(&["event=\"loaded\"", "plugin=subscriptions"], T)
        .await
        .unwrap();
    host
}

/// A client of `host` subscribed to note `pk`'s group.
async fn subscriber(host: &Host, pk: u64) -> Client {
    let mut client = host.connect().await.unwrap();
    let reply = client
        .request(
            &json!({"id": 1, "type": "subscribe", "data": {"type": "note", "id": pk}}).to_string(),
        )
        .await
        .unwrap();
    assert_eq!(reply["data"]["group"], format!("note-{pk}"), "{reply}");
    client
}

async fn text(client: &mut Client) -> String {
    match client.recv(T).await.unwrap() {
        Received::Text(text) => text,
        other => panic!("expected a message, got {other:?}"),
    }
}

/// The text rohrpost's mixins send (`json.dumps` of `build_message`),
/// for the id it drew.
fn rohrpost_text(received: &str, kind: &str, object: &str) -> String {
    let id = serde_json::from_str::<Value>(received).unwrap()["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("a generated id in {received}"));
    assert!((1..=1000).contains(&id), "{received}");
    format!(
        r#"{{"id": {id}, "type": "subscription-update", "data": {{"group": "note-1", "type": "{kind}", "object": {object}}}}}"#
    )
}

/// Which of channels_redis's layers.
#[derive(Clone, Copy)]
enum Layer {
    /// `RedisChannelLayer`, Channels' default.
    Core,
    /// `RedisPubSubChannelLayer`.
    PubSub,
}

/// The host's `--groups` and the Django app, on one layer of Redis
/// `redis` (`host:port`).
fn deployment(layer: Layer, redis: &str, prefix: &str) -> (String, Django) {
    let (name, scheme) = match layer {
        Layer::Core => ("core", "channels_redis"),
        Layer::PubSub => ("pubsub", "channels_redis_pubsub"),
    };
    let django = Django::new(name, &format!("redis://{redis}/0"), prefix).unwrap();
    (format!("{scheme}://{redis}/0"), django)
}

#[tokio::test]
async fn model_changes_reach_host_subscribers_over_the_core_layer() {
    model_changes_reach_host_subscribers(Layer::Core).await;
}

#[tokio::test]
async fn model_changes_reach_host_subscribers_over_the_pubsub_layer() {
    model_changes_reach_host_subscribers(Layer::PubSub).await;
}

/// Exactly the text rohrpost's mixins send, once, after the commit.
async fn model_changes_reach_host_subscribers(layer: Layer) {
    assert!(
        redis_answers(SHARED_REDIS).await,
        "no Redis on {SHARED_REDIS}"
    );
    let prefix = prefix();
    let (groups, django) = deployment(layer, SHARED_REDIS, &prefix);
    let host = host(&groups, &prefix).await;
    let mut client = subscriber(&host, 1).await;

    assert_eq!(django.manage(&["note", "create", "first"]).unwrap(), "1");
    let created = text(&mut client).await;
    assert_eq!(created, rohrpost_text(&created, "create", r#"{"id": 1}"#));

    django.manage(&["note", "update", "1", "second"]).unwrap();
    let updated = text(&mut client).await;
    assert_eq!(
        updated,
        rohrpost_text(
            &updated,
            "update",
            r#"{"id": 1, "updated_fields": ["title"]}"#
        )
    );

    // A save in a transaction that is rolled back notifies nobody (the
    // next note would be note 2: the client also listens there).
    let mut second = subscriber(&host, 2).await;
    assert_eq!(
        django
            .manage(&["note", "create", "x", "--rollback"])
            .unwrap(),
        "rolled back"
    );
    second.expect_silence(QUIET).await.unwrap();

    django.manage(&["note", "delete", "1"]).unwrap();
    let deleted = text(&mut client).await;
    assert_eq!(deleted, rohrpost_text(&deleted, "delete", r#"{"id": 1}"#));
    client.expect_silence(QUIET).await.unwrap();
}

/// Reads lines of a `manage.py note listen` until one is an event.
fn next_event(lines: &mut impl Iterator<Item = std::io::Result<String>>) -> Value {
    let line = lines.next().expect("the listener's output").unwrap();
    serde_json::from_str(&line).unwrap_or_else(|_| panic!("an event, not {line}"))
}

/// Starts a Channels consumer of the group in Django (through the layer)
/// and waits until it is a member.
async fn listener(
    django: &Django,
    group: &str,
    count: usize,
) -> (Child, impl Iterator<Item = std::io::Result<String>>) {
    let mut child = django
        .spawn(&["note", "listen", group, &count.to_string()])
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::task::block_in_place(|| lines.next());
    assert_eq!(first.unwrap().unwrap(), "listening");
    (child, lines)
}

#[tokio::test(flavor = "multi_thread")]
async fn send_to_group_and_host_messages_over_the_core_layer() {
    send_to_group_reaches_every_host_and_host_messages_reach_django(Layer::Core).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn send_to_group_and_host_messages_over_the_pubsub_layer() {
    send_to_group_reaches_every_host_and_host_messages_reach_django(Layer::PubSub).await;
}

/// Two hosts and a Channels consumer in one group: each member gets each
/// message once, whichever side sent it.
async fn send_to_group_reaches_every_host_and_host_messages_reach_django(layer: Layer) {
    assert!(
        redis_answers(SHARED_REDIS).await,
        "no Redis on {SHARED_REDIS}"
    );
    let prefix = prefix();
    let (groups, django) = deployment(layer, SHARED_REDIS, &prefix);
    let (a, b) = (host(&groups, &prefix).await, host(&groups, &prefix).await);
    let mut on_a = subscriber(&a, 7).await;
    let mut on_b = subscriber(&b, 7).await;
    let (mut consumer, mut events) = listener(&django, "note-7", 2).await;

    // From Django (a management command), text and dict messages.
    django
        .manage(&["note", "send", "note-7", r#"{"hello": "hosts"}"#])
        .unwrap();
    for client in [&mut on_a, &mut on_b] {
        assert_eq!(text(client).await, r#"{"hello": "hosts"}"#);
    }
    let event = tokio::task::block_in_place(|| next_event(&mut events));
    assert_eq!(event["message"], r#"{"hello": "hosts"}"#);
    django
        .manage(&["note", "send", "--dict", "note-7", r#"{"n": 2}"#])
        .unwrap();
    for client in [&mut on_a, &mut on_b] {
        assert_eq!(text(client).await, r#"{"n":2}"#);
    }
    let _ = tokio::task::block_in_place(|| next_event(&mut events));

    // From a host: its own members, the other host's, and Django's.
    let (mut consumer2, mut events2) = listener(&django, "note-7", 1).await;
    let body = json!({"model": "Note", "pk": 7, "event": "update", "group": "note-7"}).to_string();
    let (status, reply) = a.notify(Some(TOKEN), &body).await.unwrap();
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["delivered"], 1);
    let on_host = text(&mut on_a).await;
    assert_eq!(text(&mut on_b).await, on_host);
    let event = tokio::task::block_in_place(|| next_event(&mut events2));
    assert_eq!(event["type"], "rohrpost.message", "{event}");
    assert_eq!(event["message"], on_host.as_str(), "{event}");
    for client in [&mut on_a, &mut on_b] {
        client.expect_silence(QUIET).await.unwrap();
    }
    for child in [&mut consumer, &mut consumer2] {
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn delivery_resumes_after_a_redis_restart_over_the_core_layer() {
    delivery_resumes_after_a_redis_restart(Layer::Core).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn delivery_resumes_after_a_redis_restart_over_the_pubsub_layer() {
    delivery_resumes_after_a_redis_restart(Layer::PubSub).await;
}

/// A Redis of the test's own is restarted (empty): the host reports it
/// in `/readyz`, reconnects, restores its memberships or subscriptions,
/// and Django's messages reach its members again, with nothing
/// restarted but Redis.
async fn delivery_resumes_after_a_redis_restart(layer: Layer) {
    let port = free_port();
    let mut redis = OwnRedis::start(port).await;
    let prefix = prefix();
    let (groups, django) = deployment(layer, &redis.addr(), &prefix);
    let host = host(&groups, &prefix).await;
    let mut client = subscriber(&host, 3).await;
    django
        .manage(&["note", "send", "note-3", "before"])
        .unwrap();
    assert_eq!(text(&mut client).await, "before");

    redis.stop();
    host.wait_for_log(&["lost the connection to Redis"], T)
        .await
        .unwrap();
    let (status, body) = get(&host.addr, "/readyz").await.unwrap();
    assert_eq!(status, 503, "{body}");
    redis = OwnRedis::start(port).await;
    host.wait_for_log(&["connected to Redis again"], T)
        .await
        .unwrap();
    let (status, body) = get(&host.addr, "/readyz").await.unwrap();
    assert_eq!(status, 200, "{body}");
    django.manage(&["note", "send", "note-3", "after"]).unwrap();
    assert_eq!(text(&mut client).await, "after");
    client.expect_silence(QUIET).await.unwrap();
    drop(redis);
}

#[tokio::test(flavor = "multi_thread")]
async fn daphne_and_the_host_serve_one_group_over_the_core_layer() {
    daphne_and_the_host_serve_one_group(Layer::Core).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn daphne_and_the_host_serve_one_group_over_the_pubsub_layer() {
    daphne_and_the_host_serve_one_group(Layer::PubSub).await;
}

/// The mixed deployment of a migration: a client on daphne (rohrpost's
/// own consumer) and one on the host, in one group, both get every
/// message once, from the host's side and from Django's.
async fn daphne_and_the_host_serve_one_group(layer: Layer) {
    assert!(
        redis_answers(SHARED_REDIS).await,
        "no Redis on {SHARED_REDIS}"
    );
    let prefix = prefix();
    let (groups, django) = deployment(layer, SHARED_REDIS, &prefix);
    let host = host(&groups, &prefix).await;
    let port = free_port();
    let _daphne = django.daphne(port).unwrap();
    let url = format!("ws://127.0.0.1:{port}/ws/rohrpost/");
    let deadline = Instant::now() + T;
    let mut on_daphne = loop {
        match Client::connect(&url).await {
            Ok(client) => break client,
            Err(error) => {
                assert!(Instant::now() < deadline, "daphne did not start: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let reply = on_daphne
        .request(
            &json!({"id": 1, "type": "subscribe", "data": {"type": "note", "id": 1}}).to_string(),
        )
        .await
        .unwrap();
    assert_eq!(reply["data"]["group"], "note-1", "{reply}");
    let mut on_host = subscriber(&host, 1).await;

    // From Django: a model change.
    assert_eq!(django.manage(&["note", "create", "mixed"]).unwrap(), "1");
    let created = text(&mut on_host).await;
    assert_eq!(created, rohrpost_text(&created, "create", r#"{"id": 1}"#));
    assert_eq!(text(&mut on_daphne).await, created);

    // From the host.
    let body = json!({"model": "Note", "pk": 1, "event": "update", "group": "note-1"}).to_string();
    let (status, reply) = host.notify(Some(TOKEN), &body).await.unwrap();
    assert_eq!(status, 200, "{reply}");
    let from_host = text(&mut on_host).await;
    assert_eq!(text(&mut on_daphne).await, from_host);
    for client in [&mut on_host, &mut on_daphne] {
        client.expect_silence(QUIET).await.unwrap();
    }
}

/// `redis-cli` on the shared Redis: its output lines.
fn redis_cli(args: &[&str]) -> Vec<String> {
    let (host, port) = SHARED_REDIS.split_once(':').unwrap();
    let out = std::process::Command::new("redis-cli")
        .args(["-h", host, "-p", port])
        .args(args)
        .output()
        .expect("redis-cli (with redis-server)");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The core layer's memberships, as Django sees them: the host's channel
/// is in a group's sorted set while the group has members on the host,
/// its score (the join time) is refreshed well before `group_expiry`, and
/// it is taken out when the last member leaves and when the host stops.
#[tokio::test]
async fn the_hosts_channel_is_in_the_groups_set_while_it_has_members() {
    assert!(
        redis_answers(SHARED_REDIS).await,
        "no Redis on {SHARED_REDIS}"
    );
    let prefix = prefix();
    let key = format!("{prefix}:group:note-4");
    let config = format!("notify_token = \"{TOKEN}\"\n\n[plugins.subscriptions]\nauth = \"off\"\n");
    let groups = format!("channels_redis://{SHARED_REDIS}/0");
    let mut host = Host::start_with_config(
        &["ping", "subscriptions"],
        &config,
        &[
            "--groups",
            &groups,
            "--groups-prefix",
            &prefix,
            "--channels-group-expiry",
            "4s",
        ],
    )
    .unwrap();
    host.wait_for_log(&["event=\"loaded\"", "plugin=subscriptions"], T)
        .await
        .unwrap();
    let mut first = subscriber(&host, 4).await;
    let mut second = subscriber(&host, 4).await;
    let members = redis_cli(&["ZRANGE", &key, "0", "-1", "WITHSCORES"]);
    assert_eq!(members.len(), 2, "one channel for the host: {members:?}");
    let channel = members[0].clone();
    assert!(
        channel.starts_with("specific.") && channel.contains('!'),
        "{channel}"
    );
    let joined: f64 = members[1].parse().unwrap();
    let ttl: i64 = redis_cli(&["TTL", &key])[0].parse().unwrap();
    assert!((1..=4).contains(&ttl), "expires with group_expiry: {ttl}");

    // Refreshed every quarter of group_expiry: never expires meanwhile.
    tokio::time::sleep(Duration::from_millis(5000)).await;
    let score: f64 = redis_cli(&["ZSCORE", &key, &channel])[0].parse().unwrap();
    assert!(score > joined + 2.0, "refreshed: {joined} then {score}");

    // The last member leaving takes the channel out.
    let leave = json!({"id": 2, "type": "unsubscribe", "data": {"type": "note", "id": 4}});
    first.request(&leave.to_string()).await.unwrap();
    assert_eq!(redis_cli(&["ZCARD", &key]), ["1"]);
    second.request(&leave.to_string()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(redis_cli(&["ZCARD", &key]), ["0"]);

    // And so does stopping.
    let _third = subscriber(&host, 4).await;
    assert_eq!(redis_cli(&["ZCARD", &key]), ["1"]);
    host.signal(libc::SIGTERM);
    assert_eq!(host.exit_code(T).await.unwrap(), Some(0));
    assert_eq!(redis_cli(&["ZCARD", &key]), ["0"]);
}

async fn metric(host: &Host, name: &str) -> f64 {
    let (_, text) = get(&host.addr, "/metrics").await.unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

/// Events of other types than `rohrpost.message` reach no client: they are
/// counted.
#[tokio::test]
async fn other_event_types_are_counted_and_skipped() {
    assert!(
        redis_answers(SHARED_REDIS).await,
        "no Redis on {SHARED_REDIS}"
    );
    for layer in [Layer::Core, Layer::PubSub] {
        let prefix = prefix();
        let (groups, django) = deployment(layer, SHARED_REDIS, &prefix);
        let host = host(&groups, &prefix).await;
        let mut client = subscriber(&host, 5).await;
        django
            .manage(&["note", "event", "note-5", "chat.message"])
            .unwrap();
        django.manage(&["note", "send", "note-5", "then"]).unwrap();
        assert_eq!(text(&mut client).await, "then");
        assert_eq!(
            metric(&host, "rohrpost_broker_foreign_events_total").await,
            1.0
        );
    }
}

/// The host's sends follow channels_redis's capacity rule: a Django
/// process whose set holds `capacity` messages gets no more, and what it
/// misses is counted.
#[tokio::test]
async fn a_full_django_channel_gets_no_more_than_its_capacity() {
    assert!(
        redis_answers(SHARED_REDIS).await,
        "no Redis on {SHARED_REDIS}"
    );
    let prefix = prefix();
    let (groups, django) = deployment(Layer::Core, SHARED_REDIS, &prefix);
    let config = format!("notify_token = \"{TOKEN}\"\n\n[plugins.subscriptions]\nauth = \"off\"\n");
    let host = Host::start_with_config(
        &["ping", "subscriptions"],
        &config,
        &[
            "--groups",
            &groups,
            "--groups-prefix",
            &prefix,
            "--channels-capacity",
            "3",
        ],
    )
    .unwrap();
    let channel = django.manage(&["note", "join", "note-6"]).unwrap();
    let (process, _) = channel.split_once('!').unwrap();
    let set = format!("{prefix}{process}!");
    for n in 0..5 {
        let body =
            json!({"model": "Note", "pk": n, "event": "update", "group": "note-6"}).to_string();
        let (status, reply) = host.notify(Some(TOKEN), &body).await.unwrap();
        assert_eq!(status, 200, "{reply}");
    }
    let deadline = Instant::now() + T;
    while metric(&host, "rohrpost_broker_drops_total").await < 2.0 {
        assert!(Instant::now() < deadline, "the drops are not counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(redis_cli(&["ZCARD", &set]), ["3"]);
    let ttl: i64 = redis_cli(&["TTL", &set])[0].parse().unwrap();
    assert!((1..=60).contains(&ttl), "expires after expiry: {ttl}");
}

#[test]
fn encryption_keys_are_refused_at_start() {
    let plugins = rohrpost_tests::TempDir::new("encrypted");
    let out = std::process::Command::new(rohrpost_tests::build().host())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--groups",
            &format!("channels_redis://{SHARED_REDIS}/0"),
            "--channels-symmetric-encryption-keys",
            "a-key",
        ])
        .arg("--plugins")
        .arg(plugins.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("symmetric_encryption_keys") && stderr.contains("not supported"),
        "{stderr}"
    );
}

/// Between hosts over the core layer, a burst (within the capacity)
/// arrives whole, once, in order.
#[tokio::test]
async fn a_burst_between_hosts_over_the_core_layer_arrives_whole_and_in_order() {
    assert!(
        redis_answers(SHARED_REDIS).await,
        "no Redis on {SHARED_REDIS}"
    );
    let prefix = prefix();
    let groups = format!("channels_redis://{SHARED_REDIS}/0");
    let (a, b) = (host(&groups, &prefix).await, host(&groups, &prefix).await);
    let mut on_b = subscriber(&b, 8).await;
    for n in 0..60 {
        let body =
            json!({"model": "Note", "pk": n, "event": "update", "group": "note-8"}).to_string();
        let (status, reply) = a.notify(Some(TOKEN), &body).await.unwrap();
        assert_eq!(status, 200, "{reply}");
    }
    for n in 0..60 {
        let m: Value = serde_json::from_str(&text(&mut on_b).await).unwrap();
        assert_eq!(m["data"]["object"]["id"], n, "{m}");
    }
    on_b.expect_silence(QUIET).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn two_redis_shards_over_the_core_layer() {
    two_redis_shards(Layer::Core).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_redis_shards_over_the_pubsub_layer() {
    two_redis_shards(Layer::PubSub).await;
}

/// The shard channels_redis's own `_consistent_hash` gives `name` among
/// `count` hosts, computed by the app's Python.
fn channels_redis_shard(name: &str, count: usize) -> usize {
    let output = std::process::Command::new(rohrpost_tests::django::python())
        .args([
            "-c",
            "import sys; from channels_redis.utils import _consistent_hash as h; print(h(sys.argv[1], int(sys.argv[2])))",
            name,
            &count.to_string(),
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap()
}

/// A Django app whose `CHANNEL_LAYERS` lists two Redis servers and a host
/// given the same two, in the same order: for a group on each shard,
/// Django's messages reach the host's subscribers and the host's reach
/// Django's consumers. With one shard down, `/readyz` says so and the
/// groups of the other go on.
async fn two_redis_shards(layer: Layer) {
    let ports = [free_port(), free_port()];
    let first = OwnRedis::start(ports[0]).await;
    let mut second = OwnRedis::start(ports[1]).await;
    let prefix = prefix();
    let (name, scheme) = match layer {
        Layer::Core => ("core", "channels_redis"),
        Layer::PubSub => ("pubsub", "channels_redis_pubsub"),
    };
    let django_hosts = format!("redis://{}/0,redis://{}/0", first.addr(), second.addr());
    let django = Django::new(name, &django_hosts, &prefix).unwrap();
    let groups = format!(
        "{scheme}://{}/0,{scheme}://{}/0",
        first.addr(),
        second.addr()
    );
    let host = host(&groups, &prefix).await;

    // What channels_redis hashes: the group's name for the core layer,
    // its channel for the pub/sub one.
    let hashed = |group: &str| match layer {
        Layer::Core => group.to_owned(),
        Layer::PubSub => format!("{prefix}__group__{group}"),
    };
    let mut on_shard = [None, None];
    for pk in 1..64u64 {
        let shard = channels_redis_shard(&hashed(&format!("note-{pk}")), 2);
        on_shard[shard].get_or_insert(pk);
        if on_shard.iter().all(Option::is_some) {
            break;
        }
    }
    let pks = on_shard.map(|pk| pk.expect("a group on each shard"));

    for pk in pks {
        let group = format!("note-{pk}");
        let mut client = subscriber(&host, pk).await;
        django
            .manage(&["note", "send", &group, &format!("to {group}")])
            .unwrap();
        assert_eq!(text(&mut client).await, format!("to {group}"));

        let (mut consumer, mut events) = listener(&django, &group, 1).await;
        let body =
            json!({"model": "Note", "pk": pk, "event": "update", "group": group}).to_string();
        let (status, reply) = host.notify(Some(TOKEN), &body).await.unwrap();
        assert_eq!(status, 200, "{reply}");
        let on_host = text(&mut client).await;
        let event = tokio::task::block_in_place(|| next_event(&mut events));
        assert_eq!(event["type"], "rohrpost.message", "{event}");
        assert_eq!(event["message"], on_host.as_str(), "{event}");
        client.expect_silence(QUIET).await.unwrap();
        let _ = consumer.kill();
        let _ = consumer.wait();
    }

    // The second shard goes away: not ready, and the first shard's group
    // still gets Django's messages.
    let mut client = subscriber(&host, pks[0]).await;
    second.stop();
    host.wait_for_log(&["lost the connection to Redis"], T)
        .await
        .unwrap();
    let (status, body) = get(&host.addr, "/readyz").await.unwrap();
    assert_eq!(status, 503, "{body}");
    let group = format!("note-{}", pks[0]);
    django
        .manage(&["note", "send", &group, "still here"])
        .unwrap();
    assert_eq!(text(&mut client).await, "still here");

    second = OwnRedis::start(ports[1]).await;
    host.wait_for_log(&["connected to Redis again"], T)
        .await
        .unwrap();
    let (status, body) = get(&host.addr, "/readyz").await.unwrap();
    assert_eq!(status, 200, "{body}");
    drop((first, second));
}
