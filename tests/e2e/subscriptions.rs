//! The rohrpost-js subscription flow against the real host and the subscriptions plugin.
//!
//! Every test starts a host with a config file (notify token and a
//! `[plugins.subscriptions]` table), installs the plugin the way users
//! deploy it, and talks to it over WebSockets and `POST /api/notify`.
//! With `auth = "backend"` a real HTTP backend decides
//! (`tests/proxy_backend/backend.py`).

use std::{
    path::PathBuf,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use jsonwebtoken::{encode, EncodingKey, Header};
use rohrpost_tests::{
    plugin_count, proxy_backend::Backend, redis::free_port, wait_for_metric, Client, Host,
};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(10);
const QUIET: Duration = Duration::from_millis(300);
const NOTIFY_TOKEN: &str = "sekrit";
const LIBRARY: &str = "libsubscriptions.so";

/// The plugin's library (the harness builds it with the others).
fn library() -> PathBuf {
    rohrpost_tests::build().plugin("subscriptions")
}

/// A host with ping, the notify token and this `[plugins.subscriptions]`
/// table, before the subscriptions plugin is installed.
fn host_with(table: &str) -> Host {
    let config = format!("notify_token = \"{NOTIFY_TOKEN}\"\n\n[plugins.subscriptions]\n{table}\n");
    let host = Host::start_with_config(&["ping"], &config, &[]).unwrap();
    rohrpost_tests::install(&library(), host.plugins.path(), LIBRARY);
    host
}

/// A host serving subscriptions configured with `table`.
async fn start(table: &str) -> Host {
    let host = host_with(table);
    host.wait_for_log(&["event=\"loaded\"", "plugin=subscriptions"], T)
        .await
        .unwrap();
    host
}

/// An `update` notification for one object, with its serialized form.
fn update(model: &str, pk: Value) -> String {
    json!({"model": model, "pk": pk, "event": "update", "object": {"id": pk, "name": "x"}, "updated_fields": ["name"]})
        .to_string()
}

/// Sends a notification; returns the answer's body after checking the status.
async fn notify(host: &Host, body: &str) -> Value {
    let (status, answer) = host.notify(Some(NOTIFY_TOKEN), body).await.unwrap();
    assert_eq!(status, 200, "{answer}");
    answer
}

/// How many connections a notification reached.
async fn delivered(host: &Host, body: &str) -> u64 {
    notify(host, body).await["delivered"]
        .as_u64()
        .expect("'delivered' is a count")
}

fn subscribe_request(id: u64, kind: &str, object_id: Value, auth_jwt: Option<&str>) -> String {
    let mut request =
        json!({"id": id, "type": "subscribe", "data": {"type": kind, "id": object_id}});
    if let Some(token) = auth_jwt {
        request["auth_jwt"] = json!(token);
    }
    request.to_string()
}

/// The group a subscription joins: `collection-52`, `user-ada`.
fn group_of(kind: &str, object_id: &Value) -> String {
    match object_id.as_str() {
        Some(text) => format!("{kind}-{text}"),
        None => format!("{kind}-{object_id}"),
    }
}

/// Subscribes and checks the success reply.
async fn subscribe(
    client: &mut Client,
    id: u64,
    kind: &str,
    object_id: Value,
    auth_jwt: Option<&str>,
) {
    let group = group_of(kind, &object_id);
    let reply = client
        .request(&subscribe_request(id, kind, object_id, auth_jwt))
        .await
        .unwrap();
    assert_eq!(
        reply,
        json!({"id": id, "type": "subscribe", "data": {"group": group}})
    );
}

/// Subscribes and checks the refusal.
async fn subscribe_denied(
    client: &mut Client,
    id: u64,
    kind: &str,
    object_id: Value,
    auth_jwt: Option<&str>,
) {
    let reply = client
        .request(&subscribe_request(id, kind, object_id, auth_jwt))
        .await
        .unwrap();
    assert_eq!(
        reply,
        json!({"id": id, "type": "subscribe", "error": "ACCESS_DENIED"})
    );
}

/// Unsubscribes and checks the success reply.
async fn unsubscribe(client: &mut Client, id: u64, kind: &str, object_id: Value) {
    let group = group_of(kind, &object_id);
    let reply = client
        .request(
            &json!({"id": id, "type": "unsubscribe", "data": {"type": kind, "id": object_id}})
                .to_string(),
        )
        .await
        .unwrap();
    assert_eq!(
        reply,
        json!({"id": id, "type": "unsubscribe", "data": {"group": group}})
    );
}

/// The `subscription-update` an `update(model, pk)` notification sends.
fn update_message(id: &Value, group: &str, pk: Value) -> Value {
    json!({
        "id": id,
        "type": "subscription-update",
        "data": {"type": "update", "group": group, "object": {"id": pk, "name": "x", "updated_fields": ["name"]}},
    })
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

fn jwt(secret: &str, exp: u64) -> String {
    encode(
        &Header::default(),
        &json!({"sub": "user-1", "exp": exp}),
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn subscribers_get_their_groups_notifications_until_they_unsubscribe() {
    let host = start("auth = \"off\"").await;
    let mut a = host.connect().await.unwrap();
    let mut b = host.connect().await.unwrap();
    subscribe(&mut a, 1, "collection", json!(52), None).await;
    subscribe(&mut b, 1, "collection", json!(53), None).await;

    let body = r#"{"model":"Collection","pk":52,"event":"update","object":{"id":52,"name":"x"},"updated_fields":["name"]}"#;
    let answer = notify(&host, body).await;
    assert_eq!(answer["group"], "collection-52");
    assert_eq!(answer["delivered"], 1);
    let id = answer["id"].as_u64().expect("a generated id");
    assert_eq!(
        a.recv_json(T).await.unwrap(),
        json!({"id": id, "type": "subscription-update", "data": {
            "type": "update", "group": "collection-52",
            "object": {"id": 52, "name": "x", "updated_fields": ["name"]}}})
    );
    b.expect_silence(QUIET).await.unwrap();

    unsubscribe(&mut a, 2, "collection", json!(52)).await;
    assert_eq!(delivered(&host, body).await, 0);
    a.expect_silence(QUIET).await.unwrap();
    // B is still subscribed to its own collection.
    assert_eq!(delivered(&host, &update("Collection", json!(53))).await, 1);
    assert_eq!(
        b.recv_json(T).await.unwrap()["data"]["group"],
        "collection-53"
    );
}

#[tokio::test]
async fn every_subscriber_of_a_group_gets_one_copy_with_the_same_id() {
    let host = start("auth = \"off\"").await;
    let mut a = host.connect().await.unwrap();
    let mut b = host.connect().await.unwrap();
    subscribe(&mut a, 1, "collection", json!(7), None).await;
    subscribe(&mut b, 1, "collection", json!(7), None).await;

    let answer = notify(&host, &update("Collection", json!(7))).await;
    assert_eq!(answer["delivered"], 2);
    let expected = update_message(&answer["id"], "collection-7", json!(7));
    for client in [&mut a, &mut b] {
        assert_eq!(client.recv_json(T).await.unwrap(), expected);
        client.expect_silence(QUIET).await.unwrap();
    }
}

#[tokio::test]
async fn subscribing_twice_delivers_once() {
    let host = start("auth = \"off\"").await;
    let mut a = host.connect().await.unwrap();
    subscribe(&mut a, 1, "collection", json!(52), None).await;
    subscribe(&mut a, 2, "collection", json!(52), None).await;

    let answer = notify(&host, &update("Collection", json!(52))).await;
    assert_eq!(answer["delivered"], 1);
    assert_eq!(
        a.recv_json(T).await.unwrap(),
        update_message(&answer["id"], "collection-52", json!(52))
    );
    a.expect_silence(QUIET).await.unwrap();
    // One unsubscribe is enough to leave.
    unsubscribe(&mut a, 3, "collection", json!(52)).await;
    assert_eq!(delivered(&host, &update("Collection", json!(52))).await, 0);
}

#[tokio::test]
async fn string_ids_name_groups_too() {
    let host = start("auth = \"off\"").await;
    let mut a = host.connect().await.unwrap();
    subscribe(&mut a, 1, "user", json!("ada-7"), None).await;
    let answer = notify(&host, &update("User", json!("ada-7"))).await;
    assert_eq!(answer["group"], "user-ada-7");
    assert_eq!(answer["delivered"], 1);
    assert_eq!(
        a.recv_json(T).await.unwrap(),
        update_message(&answer["id"], "user-ada-7", json!("ada-7"))
    );
}

#[tokio::test]
async fn unsubscribing_from_a_group_one_is_not_in_succeeds() {
    let host = start("auth = \"off\"").await;
    let mut a = host.connect().await.unwrap();
    unsubscribe(&mut a, 1, "collection", json!(99)).await;
    a.ping_ok(2).await.unwrap();
}

#[tokio::test]
async fn a_dropped_connection_leaves_every_group() {
    let host = start("auth = \"off\"").await;
    let mut a = host.connect().await.unwrap();
    subscribe(&mut a, 1, "collection", json!(1), None).await;
    subscribe(&mut a, 2, "item", json!("x"), None).await;
    let bodies = [update("Collection", json!(1)), update("Item", json!("x"))];
    for body in &bodies {
        assert_eq!(delivered(&host, body).await, 1);
    }

    // Gone without a closing handshake.
    drop(a);

    for body in &bodies {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let n = delivered(&host, body).await;
            if n == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "still delivered to {n} connections: {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn with_auth_tokens_only_listed_tokens_subscribe() {
    let host = start("auth = \"tokens\"\ntokens = [\"alpha\", \"beta\"]").await;
    let mut good = host.connect().await.unwrap();
    subscribe(&mut good, 1, "collection", json!(1), Some("beta")).await;

    let mut unlisted = host.connect().await.unwrap();
    subscribe_denied(&mut unlisted, 1, "collection", json!(2), Some("gamma")).await;
    subscribe_denied(&mut unlisted, 2, "collection", json!(2), Some("alph")).await;
    let mut missing = host.connect().await.unwrap();
    subscribe_denied(&mut missing, 1, "collection", json!(3), None).await;
    let not_a_string = json!({"id": 2, "type": "subscribe", "auth_jwt": ["alpha"], "data": {"type": "collection", "id": 3}});
    assert_eq!(
        missing.request(&not_a_string.to_string()).await.unwrap(),
        json!({"id": 2, "type": "subscribe", "error": "ACCESS_DENIED"})
    );

    assert_eq!(delivered(&host, &update("Collection", json!(1))).await, 1);
    assert_eq!(
        good.recv_json(T).await.unwrap()["data"]["group"],
        "collection-1"
    );
    assert_eq!(delivered(&host, &update("Collection", json!(2))).await, 0);
    assert_eq!(delivered(&host, &update("Collection", json!(3))).await, 0);
    unlisted.expect_silence(QUIET).await.unwrap();
    missing.expect_silence(QUIET).await.unwrap();

    // Leaving needs a token too.
    let mut leave =
        json!({"id": 2, "type": "unsubscribe", "data": {"type": "collection", "id": 1}});
    assert_eq!(
        good.request(&leave.to_string()).await.unwrap(),
        json!({"id": 2, "type": "unsubscribe", "error": "ACCESS_DENIED"})
    );
    leave["auth_jwt"] = json!("beta");
    assert_eq!(
        good.request(&leave.to_string()).await.unwrap(),
        json!({"id": 2, "type": "unsubscribe", "data": {"group": "collection-1"}})
    );
    assert_eq!(delivered(&host, &update("Collection", json!(1))).await, 0);
}

#[tokio::test]
async fn with_auth_jwt_only_signed_unexpired_tokens_subscribe() {
    let host = start("auth = \"jwt\"\njwt_secret = \"the-secret\"").await;
    let mut good = host.connect().await.unwrap();
    let valid = jwt("the-secret", now() + 3600);
    subscribe(&mut good, 1, "collection", json!(10), Some(&valid)).await;

    let mut denied = host.connect().await.unwrap();
    let expired = jwt("the-secret", now() - 3600);
    let other_secret = jwt("another-secret", now() + 3600);
    subscribe_denied(&mut denied, 1, "collection", json!(11), Some(&expired)).await;
    subscribe_denied(&mut denied, 2, "collection", json!(12), Some(&other_secret)).await;
    subscribe_denied(&mut denied, 3, "collection", json!(13), Some("garbage")).await;
    subscribe_denied(&mut denied, 4, "collection", json!(14), None).await;

    assert_eq!(delivered(&host, &update("Collection", json!(10))).await, 1);
    assert_eq!(
        good.recv_json(T).await.unwrap()["data"]["group"],
        "collection-10"
    );
    for pk in 11..=14 {
        assert_eq!(
            delivered(&host, &update("Collection", json!(pk))).await,
            0,
            "collection-{pk}"
        );
    }
    denied.expect_silence(QUIET).await.unwrap();
}

#[tokio::test]
async fn malformed_subscription_data_gets_an_error_and_the_socket_stays_open() {
    let host = start("auth = \"off\"").await;
    let mut c = host.connect().await.unwrap();
    let cases = [
        r#"{"id":1,"type":"subscribe"}"#,
        r#"{"id":2,"type":"subscribe","data":5}"#,
        r#"{"id":3,"type":"subscribe","data":{"type":"collection"}}"#,
        r#"{"id":4,"type":"subscribe","data":{"type":"","id":1}}"#,
        r#"{"id":5,"type":"subscribe","data":{"type":"collection","id":1.5}}"#,
        r#"{"id":6,"type":"subscribe","data":{"type":"collection","id":null}}"#,
        r#"{"id":7,"type":"subscribe","data":{"type":"collection","id":{"pk":1}}}"#,
        r#"{"id":8,"type":"unsubscribe","data":{"id":1}}"#,
    ];
    for (n, request) in (1u64..).zip(cases) {
        let reply = c.request(request).await.unwrap();
        let kind = if n == 8 { "unsubscribe" } else { "subscribe" };
        assert_eq!(reply["id"], n, "{request} -> {reply}");
        assert_eq!(reply["type"], kind, "{request} -> {reply}");
        assert!(reply.get("data").is_none(), "{request} -> {reply}");
        let error = reply["error"].as_str().unwrap_or_default();
        assert!(
            error.starts_with("Invalid subscription data"),
            "{request} -> {reply}"
        );
    }
    c.ping_ok(9).await.unwrap();
    // `{"type":"","id":1}` joined no group named "-1".
    let body = r#"{"model":"X","pk":1,"event":"update","group":"-1"}"#;
    assert_eq!(delivered(&host, body).await, 0);
}

/// Starts a host whose `[plugins.subscriptions]` table is invalid and
/// checks that the plugin is refused with `reason_mentions` and serves nothing.
async fn check_rejected(table: &str, reason_mentions: &str) {
    let host = host_with(table);
    let line = host
        .wait_for_log(&["event=\"rejected\"", "plugin=subscriptions"], T)
        .await
        .unwrap();
    assert!(line.contains(reason_mentions), "{line}");
    let mut c = host.connect().await.unwrap();
    assert_eq!(
        c.request(&subscribe_request(1, "collection", json!(52), None))
            .await
            .unwrap(),
        json!({"id": 1, "type": "subscribe", "error": "Unknown message type 'subscribe'."})
    );
}

#[tokio::test]
async fn auth_jwt_without_a_secret_rejects_the_plugin() {
    check_rejected("auth = \"jwt\"", "jwt_secret").await;
}

#[tokio::test]
async fn an_unknown_key_rejects_the_plugin() {
    check_rejected("auth = \"off\"\nsecret = \"x\"", "unknown field `secret`").await;
}

/// The `[plugins.subscriptions]` table of `auth = "backend"` asking
/// `backend` (`http://host:port`).
fn backend_table(backend: &str, isolation: &str) -> String {
    format!(
        "isolation = \"{isolation}\"\nauth = \"backend\"\nurl = \"{backend}/subscribe/\"\n\
         timeout = \"1s\"\nheaders = {{ \"X-Secret\" = \"s3cret\" }}\nforward_headers = [\"Cookie\"]\n\
         sandbox = {{ connect_ports = [{}] }}",
        rohrpost_tests::port_of(backend)
    )
}

/// Waits until the subscriptions plugin's count of `event` of `kind` is `n`.
async fn wait_for_count(host: &Host, event: &str, kind: &str, n: f64) {
    wait_for_metric(
        &host.addr,
        &plugin_count("subscriptions", event, kind),
        n,
        T,
    )
    .await
    .unwrap();
}

/// The backend allows and refuses by group, cookie and auth_jwt, is asked
/// the contract's question, and every way it fails refuses the
/// subscription with `ACCESS_DENIED`, a log line and a count;
/// unsubscribing asks nothing.
async fn decided_by_the_backend(isolation: &str) {
    let backend = Backend::start().unwrap();
    let url = backend.url("/subscribe/");
    let host = start(&backend_table(
        &format!("http://{}", backend.addr),
        isolation,
    ))
    .await;
    let mut ada = Client::connect_with_headers(&host.url(), &[("cookie", "session=ada")])
        .await
        .unwrap();
    let mut bob = Client::connect_with_headers(
        &host.url(),
        &[("cookie", "session=bob"), ("x-private", "not forwarded")],
    )
    .await
    .unwrap();

    subscribe(&mut bob, 1, "news", json!(1), None).await;
    subscribe(&mut ada, 2, "staff", json!(7), Some("t-ada")).await;
    subscribe_denied(&mut bob, 3, "staff", json!(7), None).await;
    subscribe_denied(&mut bob, 4, "closed", json!(1), None).await;
    subscribe(&mut bob, 5, "vip", json!(1), Some("vip")).await;
    subscribe_denied(&mut ada, 6, "vip", json!(1), Some("nope")).await;
    host.wait_for_log(
        &[
            "the backend refused a subscription",
            "plugin=subscriptions",
            "closed group",
        ],
        T,
    )
    .await
    .unwrap();
    assert_eq!(delivered(&host, &update("Staff", json!(7))).await, 1);
    assert_eq!(ada.recv_json(T).await.unwrap()["data"]["group"], "staff-7");
    bob.expect_silence(QUIET).await.unwrap();

    // The contract's question, with the request as sent.
    let asked = backend.get("/asked").await.unwrap();
    let asked = asked.as_array().unwrap();
    assert_eq!(asked.len(), 6, "{asked:#?}");
    let first = &asked[0];
    assert_eq!(first["v"], 1);
    assert_eq!(first["event"], "subscribe");
    assert_eq!(first["group"], "news-1");
    assert_eq!(first["auth_jwt"], Value::Null);
    assert_eq!(
        first["request"],
        serde_json::from_str::<Value>(&subscribe_request(1, "news", json!(1), None)).unwrap()
    );
    let connection = &first["connection"];
    assert!(connection["id"].is_u64(), "{connection}");
    assert!(connection["remote_addr"].is_string(), "{connection}");
    assert_eq!(connection["path"], "/ws/rohrpost/");
    assert_eq!(connection["headers"], json!({"cookie": "session=bob"}));
    assert_eq!(connection["data"], json!({}));
    assert_eq!(asked[1]["auth_jwt"], "t-ada");
    assert_eq!(
        asked[1]["connection"]["headers"],
        json!({"cookie": "session=ada"})
    );

    // A backend that fails refuses (fail closed), and says so in the log.
    let failures = [
        ("garbage", "not JSON", "not_json"),
        ("fail", "HTTP status 500", "status"),
        ("slow", "no answer within the timeout", "timeout"),
        ("future", "contract version 2", "contract"),
    ];
    for (n, (kind, problem, _)) in (10..).zip(failures) {
        subscribe_denied(&mut bob, n, kind, json!(1), None).await;
        host.wait_for_log(
            &["the backend failed", "plugin=subscriptions", &url, problem],
            T,
        )
        .await
        .unwrap();
    }
    for (_, _, failure) in failures {
        wait_for_count(&host, "backend_failures", failure, 1.0).await;
    }
    wait_for_count(&host, "backend_decisions", "allowed", 3.0).await;
    wait_for_count(&host, "backend_decisions", "refused", 3.0).await;
    wait_for_count(&host, "backend_calls", "subscribe", 10.0).await;

    // Leaving asks no one.
    unsubscribe(&mut ada, 20, "staff", json!(7)).await;
    unsubscribe(&mut bob, 21, "closed", json!(1)).await;
    assert_eq!(delivered(&host, &update("Staff", json!(7))).await, 0);
    let asked = backend.get("/asked").await.unwrap();
    assert_eq!(asked.as_array().unwrap().len(), 10);
}

#[tokio::test]
async fn with_auth_backend_the_backend_decides_from_a_worker() {
    decided_by_the_backend("process").await;
}

#[tokio::test]
async fn with_auth_backend_the_backend_decides_in_process() {
    decided_by_the_backend("none").await;
}

/// Nobody listening at `url`: every subscription is refused.
#[tokio::test]
async fn with_auth_backend_a_backend_that_is_down_refuses() {
    let backend = format!("http://127.0.0.1:{}", free_port());
    let host = start(&backend_table(&backend, "process")).await;
    let mut c = host.connect().await.unwrap();
    subscribe_denied(&mut c, 1, "news", json!(1), None).await;
    host.wait_for_log(
        &[
            "the backend failed",
            &format!("{backend}/subscribe/"),
            "cannot reach the backend",
        ],
        T,
    )
    .await
    .unwrap();
    wait_for_count(&host, "backend_failures", "down", 1.0).await;
    // Invalid data is answered before anyone is asked.
    let reply = c
        .request(r#"{"id":2,"type":"subscribe","data":{"type":"news"}}"#)
        .await
        .unwrap();
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .starts_with("Invalid subscription data"),
        "{reply}"
    );
    wait_for_count(&host, "backend_calls", "subscribe", 1.0).await;
}

#[tokio::test]
async fn auth_backend_without_a_url_rejects_the_plugin() {
    check_rejected("auth = \"backend\"", "needs 'url'").await;
}
