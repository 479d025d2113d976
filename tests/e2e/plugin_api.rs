//! plugin-api 1.2 to 1.4 against the real host, in both isolation modes: a
//! plugin in the 1.4 style (`tests/fixtures/reference`: state from its
//! configuration, handlers that take what they need, some inline, its own
//! error texts, group sizes, per-connection state and connection hooks)
//! serving the rohrpost reference app's handlers; and
//! the bounds on what a plugin counts and logs through the host
//! (`tests/fixtures/testkit`).

use std::time::Duration;

use rohrpost_tests::{redis::unique_prefix, Client, Host, Received};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(10);

/// The config of a host running the reference plugin in `isolation`.
fn config(isolation: &str) -> String {
    format!("[plugins.reference]\nisolation = \"{isolation}\"\ntoken = \"t0ken\"\nstart = 40\n")
}

fn start(isolation: &str, args: &[&str]) -> Host {
    Host::start_with_config(&["fixture-reference"], &config(isolation), args).unwrap()
}

async fn connect(host: &Host, query: &str) -> Client {
    Client::connect(&format!("{}?{query}", host.url()))
        .await
        .unwrap()
}

async fn request(c: &mut Client, kind: &str, data: Value) -> Value {
    let text = json!({"id": kind, "type": kind, "data": data}).to_string();
    c.request(&text).await.unwrap()
}

async fn subscribe(c: &mut Client, group: &str) -> Value {
    request(c, "subscribe", json!({"group": group, "token": "t0ken"})).await
}

/// Publishes until the answer's `receivers` is `expected` (other hosts'
/// counts arrive within a bounded delay), and returns that answer.
async fn publish_until(
    c: &mut Client,
    group: &str,
    expected: u64,
    readers: &mut [&mut Client],
) -> Value {
    let deadline = std::time::Instant::now() + T;
    loop {
        let reply = request(c, "publish", json!({"group": group, "message": {"n": 1}})).await;
        for reader in readers.iter_mut() {
            let got = reader.recv_json(T).await.unwrap();
            assert_eq!(got["type"], "message", "{got}");
        }
        if reply["data"]["receivers"] == expected {
            return reply;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "receivers never {expected}: {reply}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `publish` answers how many connections got the message, before and
/// after a subscriber disconnects; the caller's own earlier join counts.
async fn receivers(isolation: &str) {
    let host = start(isolation, &[]);
    let mut a = connect(&host, "").await;
    let mut b = connect(&host, "").await;
    let mut publisher = connect(&host, "").await;
    assert_eq!(
        subscribe(&mut a, "news").await,
        json!({"id": "subscribe", "type": "subscribe", "data": {"group": "news", "members": 1}})
    );
    assert_eq!(subscribe(&mut b, "news").await["data"]["members"], 2);
    let reply = request(
        &mut publisher,
        "publish",
        json!({"group": "news", "message": {"text": "hi"}}),
    )
    .await;
    assert_eq!(
        reply,
        json!({"id": "publish", "type": "publish", "data": {"receivers": 2, "local": 2}})
    );
    for c in [&mut a, &mut b] {
        let got = c.recv_json(T).await.unwrap();
        assert_eq!(
            (got["type"].clone(), got["data"].clone()),
            (json!("message"), json!({"text": "hi"}))
        );
    }
    b.close_with(1000).await.unwrap();
    assert_eq!(b.recv(T).await.unwrap(), Received::Close(Some(1000)));
    drop(b);
    let reply = publish_until(&mut publisher, "news", 1, &mut [&mut a]).await;
    assert_eq!(reply["data"]["local"], 1);
    // A wrong token is an error reply, and nothing is joined.
    let refused = request(
        &mut publisher,
        "subscribe",
        json!({"group": "news", "token": "nope"}),
    )
    .await;
    assert_eq!(
        refused,
        json!({"id": "subscribe", "type": "subscribe", "error": "Invalid token."})
    );
    // The token is checked before the rest of `data`: a wrong one says
    // nothing about the data; with the right one, the app's own text.
    assert_eq!(
        request(
            &mut publisher,
            "subscribe",
            json!({"token": "nope", "group": 7})
        )
        .await["error"],
        "Invalid token."
    );
    assert_eq!(
        request(&mut publisher, "subscribe", json!({"token": "t0ken"})).await["error"],
        r#"Name a group: {"group": "<name>", "token": "<token>"}."#
    );
    assert_eq!(
        request(
            &mut publisher,
            "unsubscribe",
            json!({"token": "t0ken", "group": 7})
        )
        .await["error"],
        r#"Name a group: {"group": "<name>", "token": "<token>"}."#
    );
    publisher
        .expect_silence(Duration::from_millis(100))
        .await
        .unwrap();
    let reply = request(
        &mut publisher,
        "publish",
        json!({"group": "news", "message": {}}),
    )
    .await;
    assert_eq!(reply["data"]["receivers"], 1);
}

#[tokio::test]
async fn publish_counts_its_receivers_in_a_worker() {
    receivers("process").await;
}

#[tokio::test]
async fn publish_counts_its_receivers_in_process() {
    receivers("none").await;
}

/// Typed handlers: the answer is the output as `data`, malformed data an
/// error reply naming the field; the state is built from the plugin's
/// table (`start = 40`) and shared by the calls of every connection.
async fn typed_and_state(isolation: &str) {
    let host = start(isolation, &[]);
    let mut a = connect(&host, "").await;
    let mut b = connect(&host, "").await;
    assert_eq!(
        request(&mut a, "increment", json!({"by": 1})).await,
        json!({"id": "increment", "type": "increment", "data": {"value": 41}})
    );
    assert_eq!(
        request(&mut b, "increment", json!({"by": 2})).await["data"]["value"],
        43
    );
    assert_eq!(
        request(&mut a, "increment", json!({"by": "x"})).await,
        json!({"id": "increment", "type": "increment",
               "error": "Invalid data: by: invalid type: string \"x\", expected i64"})
    );
    assert_eq!(
        request(&mut a, "increment", json!({})).await["error"],
        "Invalid data: missing field `by`"
    );
    let no_data = a.request(r#"{"id":1,"type":"increment"}"#).await.unwrap();
    assert_eq!(no_data["error"], "Invalid data: data is required");
    // `.inline()` applies to the handler before it, typed ones included.
    let (status, body) = rohrpost_tests::get(&host.addr, "/api/plugins")
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let list: Value = serde_json::from_str(&body).unwrap();
    let mut modes: Vec<(String, String)> = list["plugins"][0]["handlers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["types"][0].to_string(), h["mode"].to_string()))
        .collect();
    modes.sort();
    assert_eq!(
        modes,
        [
            (r#""increment""#, r#""inline""#),
            (r#""login""#, r#""inline""#),
            (r#""publish""#, r#""pooled""#),
            (r#""subscribe""#, r#""pooled""#),
            (r#""whoami""#, r#""inline""#),
        ]
        .map(|(t, m)| (t.to_owned(), m.to_owned())),
        "{body}"
    );
}

#[tokio::test]
async fn typed_handlers_and_state_in_a_worker() {
    typed_and_state("process").await;
}

#[tokio::test]
async fn typed_handlers_and_state_in_process() {
    typed_and_state("none").await;
}

/// Per-connection state: set by one call, read by the next on the same
/// connection, invisible to other connections, bounded.
async fn connection_state(isolation: &str) {
    let host = start(isolation, &["--max-connection-state-bytes", "64"]);
    let mut a = connect(&host, "").await;
    let mut b = connect(&host, "").await;
    assert_eq!(
        request(&mut a, "whoami", Value::Null).await["data"],
        json!({"user": null})
    );
    assert_eq!(
        a.request(r#"{"id":1,"type":"login","data":{"user":"ada"}}"#)
            .await
            .unwrap(),
        json!({"id": 1, "type": "login"})
    );
    assert_eq!(
        request(&mut a, "whoami", Value::Null).await["data"],
        json!({"user": "ada"})
    );
    assert_eq!(
        request(&mut b, "whoami", Value::Null).await["data"],
        json!({"user": null})
    );
    assert_eq!(
        request(&mut b, "login", json!({"name": "bo"})).await["error"],
        r#"Who are you? {"user": "<name>"}."#
    );
    let long = "x".repeat(100);
    assert_eq!(
        request(&mut a, "login", json!({"user": long})).await["error"],
        "Connection state too large: a plugin may attach at most 64 bytes to a connection."
    );
    assert_eq!(
        request(&mut a, "whoami", Value::Null).await["data"],
        json!({"user": "ada"}),
        "unchanged"
    );
}

#[tokio::test]
async fn connection_state_in_a_worker() {
    connection_state("process").await;
}

#[tokio::test]
async fn connection_state_in_process() {
    connection_state("none").await;
}

/// `on_connect` refuses, fails (1011), or admits with state, a group and
/// a message; `on_disconnect` runs once for every end, refused included,
/// with the close code and the state.
async fn hooks(isolation: &str) {
    let host = start(isolation, &[]);
    let mut watcher = connect(&host, "").await;
    assert_eq!(
        subscribe(&mut watcher, "departures").await["data"]["members"],
        1
    );

    let mut refused = connect(&host, "refuse=1").await;
    assert_eq!(refused.recv(T).await.unwrap(), Received::Close(Some(4003)));
    let departed = watcher.recv_json(T).await.unwrap();
    assert_eq!(departed["type"], "departed", "{departed}");
    assert_eq!(departed["data"], json!({"user": null, "close_code": 4003}));

    let mut failing = connect(&host, "panic=1").await;
    assert_eq!(failing.recv(T).await.unwrap(), Received::Close(Some(1011)));
    let departed = watcher.recv_json(T).await.unwrap();
    assert_eq!(departed["data"]["close_code"], 1011);
    host.wait_for_log(&["connection hook failed", "asked to panic"], T)
        .await
        .unwrap();

    let mut ada = connect(&host, "user=ada").await;
    let welcome = ada.recv_json(T).await.unwrap();
    assert_eq!(
        (welcome["type"].clone(), welcome["data"].clone()),
        (json!("welcome"), json!({"user": "ada"}))
    );
    assert_eq!(
        request(&mut ada, "whoami", Value::Null).await["data"],
        json!({"user": "ada"})
    );
    let mut other = connect(&host, "").await;
    assert_eq!(
        request(
            &mut other,
            "publish",
            json!({"group": "user-ada", "message": {}})
        )
        .await["data"]["receivers"],
        1,
        "on_connect joined user-ada"
    );
    assert_eq!(ada.recv_json(T).await.unwrap()["type"], "message");
    ada.close_with(4100).await.unwrap();
    assert_eq!(ada.recv(T).await.unwrap(), Received::Close(Some(4100)));
    let departed = watcher.recv_json(T).await.unwrap();
    assert_eq!(departed["data"], json!({"user": "ada", "close_code": 4100}));
    // Its groups were left before on_disconnect ran.
    assert_eq!(
        request(
            &mut other,
            "publish",
            json!({"group": "user-ada", "message": {}})
        )
        .await["data"]["receivers"],
        0
    );
    watcher
        .expect_silence(Duration::from_millis(200))
        .await
        .unwrap();
}

#[tokio::test]
async fn connection_hooks_in_a_worker() {
    hooks("process").await;
}

#[tokio::test]
async fn connection_hooks_in_process() {
    hooks("none").await;
}

/// Across two hosts sharing groups through Redis, `receivers` counts the
/// members of both (from the presence each host keeps in Redis).
#[tokio::test]
async fn receivers_across_two_hosts() {
    let prefix = format!("{}:", unique_prefix("presence"));
    let args = [
        "--groups",
        "redis://127.0.0.1:6379",
        "--groups-prefix",
        prefix.as_str(),
        "--notify-token",
        "n0tify",
    ];
    let one = start("process", &args);
    let two = start("none", &args);
    let mut a = connect(&one, "").await;
    let mut b = connect(&one, "").await;
    let mut c = connect(&two, "").await;
    let mut publisher = connect(&two, "").await;
    for client in [&mut a, &mut b, &mut c] {
        assert!(subscribe(client, "everywhere").await["data"].is_object());
    }
    let reply = publish_until(
        &mut publisher,
        "everywhere",
        3,
        &mut [&mut a, &mut b, &mut c],
    )
    .await;
    assert_eq!(reply["data"]["local"], 1);
    drop(b);
    let reply = publish_until(&mut publisher, "everywhere", 2, &mut [&mut a, &mut c]).await;
    assert_eq!(reply["data"]["local"], 1);
    // POST /api/notify says how many it reached here and everywhere.
    let (status, body) = two
        .notify(
            Some("n0tify"),
            r#"{"model":"Thing","pk":1,"event":"update","group":"everywhere"}"#,
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["delivered"].clone(), body["members"].clone()),
        (json!(1), json!(2)),
        "{body}"
    );
    for client in [&mut a, &mut c] {
        assert_eq!(
            client.recv_json(T).await.unwrap()["type"],
            "subscription-update"
        );
    }
    // Each host lists both, with their connections (a: 1 + its watcher
    // counted on the other).
    let (status, body) = rohrpost_tests::get(&one.addr, "/api/hosts").await.unwrap();
    assert_eq!(status, 200, "{body}");
    let hosts: Value = serde_json::from_str(&body).unwrap();
    let mut connections: Vec<u64> = hosts["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["connections"].as_u64().unwrap())
        .collect();
    connections.sort();
    assert_eq!(connections, [1, 2], "{body}");
    // The status page's data has them too.
    let (status, body) = rohrpost_tests::get(&two.addr, "/api/stats").await.unwrap();
    assert_eq!(status, 200, "{body}");
    let stats: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        stats["hosts"].as_array().map(Vec::len),
        Some(2),
        "{}",
        stats["hosts"]
    );
}

/// Two plugins with hooks: theirs run in the order of the plugins' names
/// (`early` before `reference`), the first refusal ends the round, every
/// `on_disconnect` runs, and one plugin's connection state is not the
/// other's.
#[tokio::test]
async fn hooks_of_several_plugins_run_in_name_order() {
    let host = Host::start_with_config(
        &["fixture-reference", "fixture-early"],
        &format!(
            "{}[plugins.early]\nisolation = \"none\"\nlibrary = \"libfixture_early.so\"\n",
            config("process")
        ),
        &[],
    )
    .unwrap();
    let mut watcher = connect(&host, "").await;
    assert_eq!(watcher.recv_json(T).await.unwrap()["type"], "early.hello");
    assert!(subscribe(&mut watcher, "departures").await["data"].is_object());

    let mut ada = connect(&host, "user=ada").await;
    assert_eq!(ada.recv_json(T).await.unwrap()["type"], "early.hello");
    assert_eq!(ada.recv_json(T).await.unwrap()["type"], "welcome");
    assert_eq!(
        request(&mut ada, "whoami", Value::Null).await["data"],
        json!({"user": "ada"})
    );
    assert_eq!(
        request(&mut ada, "early.whoami", Value::Null).await["data"],
        json!({"user": null})
    );
    drop(ada);
    let mut departed = Vec::new();
    for _ in 0..2 {
        let message = watcher.recv_json(T).await.unwrap();
        departed.push((
            message["type"].clone(),
            message["data"]["close_code"].clone(),
        ));
    }
    assert_eq!(
        departed,
        [
            (json!("early.departed"), json!(1006)),
            (json!("departed"), json!(1006))
        ],
        "on_disconnect in name order, 1006 for a socket gone without a close frame"
    );

    // `early` refuses: `reference`'s on_connect never runs (no welcome, no
    // state), both on_disconnect hooks do.
    let mut refused = connect(&host, "early_refuse=1&user=bob").await;
    assert_eq!(refused.recv(T).await.unwrap(), Received::Close(Some(4004)));
    let early = watcher.recv_json(T).await.unwrap();
    assert_eq!(
        (early["type"].clone(), early["data"]["close_code"].clone()),
        (json!("early.departed"), json!(4004))
    );
    let late = watcher.recv_json(T).await.unwrap();
    assert_eq!(late["data"], json!({"user": null, "close_code": 4004}));
}

/// plugin-api 1.3's reports: a plugin that floods counters and log lines
/// through the host gets no more than the bounds (series per plugin, lines
/// per interval, bytes per line), the same in both isolation modes; a line
/// from a thread of its own goes to standard error without the host.
async fn reports_are_bounded(isolation: &str) {
    use rohrpost_tests::{metric_series, metric_value};
    let config = format!("[plugins.testkit]\nisolation = \"{isolation}\"\n");
    let host = Host::start_with_config(&["fixture-testkit"], &config, &[]).unwrap();
    let mut c = host.connect().await.unwrap();
    let reply = request(
        &mut c,
        "report",
        json!({"counts": 150, "kinds": 150, "lines": 300, "bytes": 5000}),
    )
    .await;
    // 100 series at most: 50 of the 150 kinds were refused.
    assert_eq!(reply["data"]["refused"], 50, "{reply}");
    let bad = reply["data"]["bad_name"].as_str().unwrap();
    assert!(bad.contains("event name"), "{bad}");
    let series = metric_series(&host.addr, "rohrpost_plugin_counts_total")
        .await
        .unwrap();
    let ours: Vec<_> = series
        .iter()
        .filter(|(s, _)| s.contains(r#"plugin="testkit""#))
        .collect();
    assert_eq!(ours.len(), 100, "{ours:?}");
    assert!(ours.iter().all(|(_, v)| *v == 1.0), "{ours:?}");
    let refused = metric_value(
        &host.addr,
        r#"rohrpost_plugin_counts_refused_total{plugin="testkit"}"#,
    )
    .await
    .unwrap();
    assert_eq!(refused, 51.0);

    // Lines: the rate limit lets 100 per interval through (the first is
    // the line through `tracing`; an interval may end during the flood,
    // letting up to 100 more), each cut to its bound; the rest are counted
    // as dropped.
    host.wait_for_log(
        &["the plugin logs more than 100 lines", "plugin=testkit"],
        T,
    )
    .await
    .unwrap();
    let line = host
        .wait_for_log(&["from a thread of its own"], T)
        .await
        .unwrap();
    assert!(
        line.contains("WARN testkit: from a thread of its own where=outside"),
        "{line}"
    );
    let flood: Vec<String> = host
        .log()
        .into_iter()
        .filter(|l| l.contains("flood ") && l.contains("plugin=testkit"))
        .collect();
    assert!((99..=199).contains(&flood.len()), "{}", flood.len());
    assert!(flood
        .iter()
        .all(|l| l.len() < 2048 + 300 && l.contains('…')));
    let dropped = metric_value(
        &host.addr,
        r#"rohrpost_plugin_log_lines_dropped_total{plugin="testkit"}"#,
    )
    .await
    .unwrap();
    assert_eq!(dropped as usize + flood.len(), 300);
}

#[tokio::test]
async fn reports_are_bounded_in_a_worker() {
    reports_are_bounded("process").await;
}

#[tokio::test]
async fn reports_are_bounded_in_process() {
    reports_are_bounded("none").await;
}
