//! The proxy plugin against the real host and a real HTTP backend
//! (`tests/proxy_backend/backend.py`): requests of the configured types
//! answered by the backend's effects (replies, errors, several messages,
//! close, groups, per-connection data), the connect and disconnect hooks,
//! every way the backend can fail, and a Rust plugin taking a type over
//! from the proxy while clients stay connected.

use std::time::{Duration, Instant};

use rohrpost_tests::{
    build, install, plugin_count, proxy_backend::Backend, redis::free_port, wait_for_metric,
    Client, Host, Received,
};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(10);

const TYPES: &str = r#"["echo", "increment", "several", "error", "bye", "join", "leave", "shout",
    "whoami", "ping", "hangup", "slow", "garbage", "fail500", "huge", "misfit", "future"]"#;

/// The `[plugins.proxy]` table for `backend`.
fn config(backend: &str, isolation: &str, hooks: bool) -> String {
    let hooks = if hooks {
        format!(
            "connect_url = \"{backend}/connect/\"\ndisconnect_url = \"{backend}/disconnect/\"\n"
        )
    } else {
        String::new()
    };
    format!(
        "[plugins.proxy]\nisolation = \"{isolation}\"\nurl = \"{backend}/rohrpost/\"\ntypes = {TYPES}\n\
         timeout = \"1s\"\nmax_response_bytes = 4096\nheaders = {{ \"X-Secret\" = \"s3cret\" }}\n\
         forward_headers = [\"cookie\", \"X-Trace\"]\n{hooks}\
         sandbox = {{ connect_ports = [{}] }}\n",
        rohrpost_tests::port_of(backend)
    )
}

/// A host with the proxy (and `others`) for `backend`.
fn start(backend: &Backend, isolation: &str, others: &[&str]) -> Host {
    let config = config(&format!("http://{}", backend.addr), isolation, true);
    let mut plugins = vec!["proxy"];
    plugins.extend_from_slice(others);
    Host::start_with_config(&plugins, &config, &[]).unwrap()
}

/// A client with a session cookie, past its welcome message.
async fn signed_in(host: &Host, user: &str) -> Client {
    let cookie = format!("theme=dark; session={user}");
    let mut c = Client::connect_with_headers(
        &host.url(),
        &[
            ("cookie", &cookie),
            ("x-trace", "t-1"),
            ("x-private", "not forwarded"),
        ],
    )
    .await
    .unwrap();
    let welcome = c.recv_json(T).await.unwrap();
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    assert_eq!(welcome["data"], json!({"user": user}));
    c
}

async fn request(c: &mut Client, id: u64, kind: &str, data: Value) -> Value {
    let text = json!({"id": id, "type": kind, "data": data}).to_string();
    c.request(&text).await.unwrap()
}

/// Replies, error replies, several messages for one request, data kept
/// per connection, groups, and close with a code.
async fn served(isolation: &str) {
    let backend = Backend::start().unwrap();
    let host = start(&backend, isolation, &[]);
    let mut ada = signed_in(&host, "ada").await;
    let mut bob = signed_in(&host, "bob").await;

    // The request exactly as sent: extra fields and big numbers too.
    let reply = ada
        .request(r#"{"id":12345678901234567890,"type":"echo","auth_jwt":"x","data":{"n":1.50}}"#)
        .await
        .unwrap();
    assert_eq!(
        reply,
        json!({"id": 12345678901234567890u64, "type": "echo", "data": {"echo": {"n": 1.5}}})
    );
    let seen = backend.get("/seen").await.unwrap();
    assert_eq!(seen["request"]["auth_jwt"], "x");

    assert_eq!(
        request(&mut ada, 2, "error", Value::Null).await,
        json!({"id": 2, "type": "error", "error": "Something went wrong."})
    );

    ada.send_text(r#"{"id":3,"type":"several"}"#).await.unwrap();
    for n in [1, 2] {
        assert_eq!(
            ada.recv_json(T).await.unwrap(),
            json!({"id": n, "type": "tick", "data": {"n": n}})
        );
    }
    assert_eq!(
        ada.recv_json(T).await.unwrap(),
        json!({"id": 3, "type": "several", "data": {"sent": 2}})
    );

    // Data attached by the backend comes back with the connection's
    // later requests, and stays the connection's own.
    assert_eq!(
        request(&mut ada, 4, "increment", json!({"by": 2})).await["data"]["value"],
        2
    );
    assert_eq!(
        request(&mut ada, 5, "increment", json!({"by": 3})).await["data"]["value"],
        5
    );
    assert_eq!(
        request(&mut bob, 6, "increment", json!({"by": 1})).await["data"]["value"],
        1
    );

    let who = request(&mut ada, 7, "whoami", Value::Null).await;
    assert_eq!(
        who["data"],
        json!({
            "path": "/ws/rohrpost/",
            "query_string": "",
            "headers": {"cookie": "theme=dark; session=ada", "x-trace": "t-1"},
            "data": {"user": "ada", "count": 5},
            "has_id": true,
            "has_remote_addr": true,
        })
    );

    // Groups: joined by a request, and by the connect hook.
    assert_eq!(
        request(&mut bob, 8, "join", json!({"group": "room"})).await["data"]["group"],
        "room"
    );
    assert_eq!(
        request(&mut ada, 9, "shout", json!({"group": "room", "text": "hi"})).await["type"],
        "shout"
    );
    let shouted = bob.recv_json(T).await.unwrap();
    assert_eq!(
        (shouted["type"].clone(), shouted["data"].clone()),
        (json!("shout"), json!({"text": "hi"}))
    );
    request(
        &mut ada,
        10,
        "shout",
        json!({"group": "user-bob", "text": "psst"}),
    )
    .await;
    assert_eq!(bob.recv_json(T).await.unwrap()["data"]["text"], "psst");
    request(&mut bob, 11, "leave", json!({"group": "room"})).await;
    request(
        &mut ada,
        12,
        "shout",
        json!({"group": "room", "text": "anyone?"}),
    )
    .await;
    bob.expect_silence(Duration::from_millis(200))
        .await
        .unwrap();

    // The reply, then the close the backend asked for.
    ada.send_text(r#"{"id":13,"type":"bye"}"#).await.unwrap();
    assert_eq!(
        ada.recv_json(T).await.unwrap(),
        json!({"id": 13, "type": "bye"})
    );
    assert_eq!(ada.recv(T).await.unwrap(), Received::Close(Some(4001)));
}

#[tokio::test]
async fn served_by_the_backend_from_a_worker() {
    served("process").await;
}

#[tokio::test]
async fn served_by_the_backend_in_process() {
    served("none").await;
}

/// What `/disconnect/` was told that `about` picks, once it was told.
async fn told(backend: &Backend, about: impl Fn(&Value) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + T;
    loop {
        let all = backend.get("/told").await.unwrap();
        let picked: Vec<Value> = all
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| about(t))
            .cloned()
            .collect();
        if !picked.is_empty() {
            return picked;
        }
        assert!(Instant::now() < deadline, "never told: {all}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The connect hook refuses a connection without a session cookie and
/// admits one with; the disconnect hook is told once, with the close code
/// and the connection's data.
#[tokio::test]
async fn connect_refused_or_accepted_by_the_backend_and_disconnect_told_once() {
    let backend = Backend::start().unwrap();
    let host = start(&backend, "process", &[]);

    let mut refused = Client::connect(&host.url()).await.unwrap();
    assert_eq!(refused.recv(T).await.unwrap(), Received::Close(Some(4003)));
    // Gone from our side too: its end is complete.
    drop(refused);
    let about = told(&backend, |t| t["close_code"] == 4003).await;
    assert_eq!(about.len(), 1, "{about:?}");
    assert_eq!(about[0]["data"], json!({}));

    let mut ada = signed_in(&host, "ada").await;
    let who = request(&mut ada, 1, "whoami", Value::Null).await;
    assert_eq!(who["data"]["data"], json!({"user": "ada"}));
    let seen = backend.get("/seen").await.unwrap();
    let id = seen["connection"]["id"].as_u64().unwrap();
    ada.close_with(4100).await.unwrap();
    assert_eq!(ada.recv(T).await.unwrap(), Received::Close(Some(4100)));
    let about = told(&backend, |t| t["id"] == id).await;
    assert_eq!(
        about,
        vec![json!({"close_code": 4100, "id": id, "data": {"user": "ada"}})]
    );
    // Once: nothing more arrives about it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(told(&backend, |t| t["id"] == id).await.len(), 1);
}

/// The error reply every failure of the backend gets.
fn failed(id: u64, kind: &str) -> Value {
    json!({"id": id, "type": kind, "error": format!("The backend failed to handle '{kind}'.")})
}

/// Waits until the proxy's count of `event` of `kind` is `n`.
async fn wait_for_count(host: &Host, event: &str, kind: &str, n: f64) {
    wait_for_metric(&host.addr, &plugin_count("proxy", event, kind), n, T)
        .await
        .unwrap();
}

/// A backend that hangs up, is too slow, answers garbage, 500, too much,
/// or a document outside the contract: one error reply without details,
/// a log line through the host naming the plugin, the backend and the
/// problem, a count of the failure's kind in /metrics, and everything
/// else goes on.
async fn misbehaving(isolation: &str) {
    let backend = Backend::start().unwrap();
    let host = start(&backend, isolation, &[]);
    let mut ada = signed_in(&host, "ada").await;
    let mut bob = signed_in(&host, "bob").await;
    let url = backend.url("/rohrpost/");

    // Slow: another connection is answered meanwhile.
    ada.send_text(r#"{"id":1,"type":"slow"}"#).await.unwrap();
    assert_eq!(
        request(&mut bob, 2, "echo", json!(1)).await["data"]["echo"],
        1
    );
    assert_eq!(ada.recv_json(T).await.unwrap(), failed(1, "slow"));
    host.wait_for_log(
        &[
            "the backend failed",
            "plugin=proxy",
            &url,
            r#""type":"slow""#,
            "timeout",
        ],
        T,
    )
    .await
    .unwrap();

    let cases = [
        ("hangup", "down", "down"),
        ("garbage", "not JSON", "not_json"),
        ("fail500", "HTTP status 500", "status"),
        ("huge", "larger than max_response_bytes", "too_large"),
        ("misfit", "not an effects document", "contract"),
        ("future", "contract version 2", "contract"),
    ];
    for (n, (kind, problem, _)) in (10..).zip(cases) {
        assert_eq!(
            request(&mut ada, n, kind, Value::Null).await,
            failed(n, kind)
        );
        host.wait_for_log(
            &[
                "the backend failed",
                &url,
                &format!(r#""type":"{kind}""#),
                problem,
            ],
            T,
        )
        .await
        .unwrap();
        // Nothing more for that request, and the next one is served.
        assert_eq!(
            request(&mut ada, n + 100, "echo", json!(n)).await["data"]["echo"],
            n
        );
    }
    ada.expect_silence(Duration::from_millis(200))
        .await
        .unwrap();

    // Each kind counted, in either isolation mode alike.
    for (kind, n) in [
        ("timeout", 1.0),
        ("down", 1.0),
        ("not_json", 1.0),
        ("status", 1.0),
        ("too_large", 1.0),
        ("contract", 2.0),
    ] {
        wait_for_count(&host, "backend_failures", kind, n).await;
    }
    // Every request POSTed is counted (7 failed, 7 echoes), and so are the
    // two connections' connect hooks.
    wait_for_count(&host, "backend_calls", "request", 14.0).await;
    wait_for_count(&host, "backend_calls", "connect", 2.0).await;
    // The plugin does not log on its own any more: every line of it came
    // through the host.
    assert!(
        !host.log().iter().any(|l| l.contains("WARN proxy")),
        "{:#?}",
        host.log()
    );
}

#[tokio::test]
async fn a_misbehaving_backend_gets_the_client_one_error_reply_from_a_worker() {
    misbehaving("process").await;
}

#[tokio::test]
async fn a_misbehaving_backend_gets_the_client_one_error_reply_in_process() {
    misbehaving("none").await;
}

/// Under `--log-format json` the proxy's lines are the host's JSON lines,
/// naming the plugin; calls past `max_in_flight` are counted as `busy`.
#[tokio::test]
async fn the_proxys_lines_are_the_hosts_json_lines() {
    let backend = Backend::start().unwrap();
    let url = format!("http://{}", backend.addr);
    // The slow call holds the one place for 2.5 s (then times out), long
    // enough for bob to find it taken on a loaded machine.
    let config = format!(
        "{}max_in_flight = 1\n",
        config(&url, "process", false).replace("timeout = \"1s\"", "timeout = \"2500ms\"")
    );
    let host = Host::start_with_config(&["proxy"], &config, &["--log-format", "json"]).unwrap();
    let mut ada = host.connect().await.unwrap();
    let mut bob = host.connect().await.unwrap();
    ada.send_text(r#"{"id":1,"type":"slow"}"#).await.unwrap();
    // Bob starts once ada's call has taken the place: a call of his that
    // came first would take it, and ada's would be the one refused.
    tokio::time::sleep(Duration::from_millis(500)).await;
    // While ada's call holds the one place, bob's is refused at once.
    let deadline = Instant::now() + T;
    loop {
        let reply = request(&mut bob, 2, "echo", json!(2)).await;
        if reply == failed(2, "echo") {
            break;
        }
        assert!(Instant::now() < deadline, "never busy: {reply}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(ada.recv_json(T).await.unwrap(), failed(1, "slow"));
    wait_for_count(&host, "backend_failures", "busy", 1.0).await;
    wait_for_count(&host, "backend_failures", "timeout", 1.0).await;

    let line = host
        .wait_for_log(&[r#""plugin":"proxy""#, "the backend failed", "busy"], T)
        .await
        .unwrap();
    let line: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(line["level"], "WARN", "{line}");
    assert_eq!(line["target"], "rohrpost::plugin", "{line}");
    assert_eq!(
        line["message"],
        "the backend failed; the client was answered with an error"
    );
    let fields: Value = serde_json::from_str(line["fields"].as_str().unwrap()).unwrap();
    assert_eq!(fields["backend"], format!("{url}/rohrpost/"), "{fields}");
    assert_eq!(fields["type"], "echo");
    assert_eq!(fields["failure"], "busy");
    // Every line of the host is JSON, the plugin's too.
    for l in host.log() {
        assert!(serde_json::from_str::<Value>(&l).is_ok(), "not JSON: {l}");
    }
}

/// A backend nobody listens for: the error reply, and the log says so.
#[tokio::test]
async fn a_backend_that_is_down_gets_the_client_one_error_reply() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let host = Host::start_with_config(&["proxy"], &config(&url, "process", false), &[]).unwrap();
    let mut c = host.connect().await.unwrap();
    assert_eq!(
        request(&mut c, 1, "echo", json!(1)).await,
        failed(1, "echo")
    );
    host.wait_for_log(&["the backend failed", &url, "cannot reach the backend"], T)
        .await
        .unwrap();
    wait_for_count(&host, "backend_failures", "down", 1.0).await;
    // Types the proxy does not serve are answered as before.
    assert_eq!(
        request(&mut c, 2, "other", Value::Null).await,
        json!({"id": 2, "type": "other", "error": "Unknown message type 'other'."})
    );
}

/// Sends ping until the reply satisfies `done`.
async fn ping_until(c: &mut Client, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + T;
    loop {
        let reply = c
            .request(r#"{"id":1,"type":"ping","data":"x"}"#)
            .await
            .unwrap();
        if done(&reply) {
            return reply;
        }
        assert!(Instant::now() < deadline, "still {reply}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A Rust plugin dropped in that claims one of the proxy's types takes it
/// over without a reconnect, and gives it back when it is removed; a type
/// another plugin serves from the start stays that plugin's.
#[tokio::test]
async fn a_plugin_dropped_in_takes_a_type_over_from_the_proxy() {
    let backend = Backend::start().unwrap();
    let host = start(&backend, "process", &[]);
    let mut ada = signed_in(&host, "ada").await;
    assert_eq!(
        ping_until(&mut ada, |_| true).await["data"],
        json!({"via": "backend"})
    );

    install(&build().plugin("ping"), host.plugins.path(), "libping.so");
    let pong = ping_until(&mut ada, |r| r["type"] == "pong").await;
    assert_eq!(pong["id"], 1, "{pong}");
    host.wait_for_log(
        &["message type moved", "type=ping", "from=proxy", "to=ping"],
        T,
    )
    .await
    .unwrap();
    // The proxy still serves its other types.
    assert_eq!(
        request(&mut ada, 2, "echo", json!(2)).await["data"]["echo"],
        2
    );

    std::fs::remove_file(host.plugins.path().join("libping.so")).unwrap();
    let back = ping_until(&mut ada, |r| r["type"] == "ping").await;
    assert_eq!(back["data"], json!({"via": "backend"}));

    let both = start(&backend, "process", &["ping"]);
    let mut bob = signed_in(&both, "bob").await;
    assert_eq!(ping_until(&mut bob, |_| true).await["type"], "pong");
    assert_eq!(
        request(&mut bob, 3, "echo", json!(3)).await["data"]["echo"],
        3
    );
}
