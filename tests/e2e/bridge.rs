//! A Django app's rohrpost handlers served unchanged through the proxy
//! plugin by the rohrpost bridge (`integrations/django`): the same
//! handlers (`tests/django_app/notes/handlers.py`) on daphne with
//! rohrpost's consumer and behind the host, the same requests sent to
//! both, the replies compared; groups shared through channels_redis;
//! connect refused or accepted from the session cookie; disconnect told
//! once; a call without the shared secret. And the bridge's own tests
//! (Django's test client).
//!
//! Real Django, daphne and gunicorn (the virtual environment of
//! `rohrpost_tests::django`), the Redis on 127.0.0.1:6379 (a prefix of
//! its own per test), a real host with the proxy plugin.

use std::time::Duration;

use rohrpost_tests::{
    build,
    django::{self, Django, Gunicorn, Killed},
    install, metric_value, plugin_count,
    redis::{free_port, redis_answers, unique_prefix},
    Client, Host, Received,
};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(20);
const QUIET: Duration = Duration::from_millis(500);
const SHARED_REDIS: &str = "127.0.0.1:6379";
/// The test app's `ROHRPOST_BRIDGE["SECRET"]`.
const SECRET: &str = "bridge-secret";

const TYPES: &str = r#"["echo", "several", "fail", "increment", "whoami", "join", "leave",
    "shout", "bye", "boom", "ping", "nope"]"#;

/// The `[plugins.proxy]` table for the bridge at `backend`, sending
/// `secret`.
fn config(backend: &str, secret: &str, hooks: bool) -> String {
    let hooks = if hooks {
        format!(
            "connect_url = \"{backend}/rohrpost/connect/\"\n\
             disconnect_url = \"{backend}/rohrpost/disconnect/\"\n"
        )
    } else {
        String::new()
    };
    format!(
        "[plugins.proxy]\nurl = \"{backend}/rohrpost/\"\ntypes = {TYPES}\ntimeout = \"10s\"\n\
         headers = {{ X-Rohrpost-Secret = \"{secret}\" }}\nforward_headers = [\"cookie\"]\n{hooks}\
         sandbox = {{ connect_ports = [{}] }}\n",
        rohrpost_tests::port_of(backend)
    )
}

/// The test app behind gunicorn and daphne, and a host with the proxy in
/// front of gunicorn, all on one channels_redis layer.
struct Deployment {
    django: Django,
    gunicorn: String,
    daphne: String,
    prefix: String,
    _servers: (Gunicorn, Killed),
}

impl Deployment {
    async fn start() -> Deployment {
        Deployment::start_with(&[]).await
    }

    /// With more of the app's environment.
    async fn start_with(env: &[(&str, &str)]) -> Deployment {
        assert!(
            redis_answers(SHARED_REDIS).await,
            "no Redis on {SHARED_REDIS}"
        );
        let prefix = unique_prefix("asgi-bridge");
        let mut django =
            Django::new("core", &format!("redis://{SHARED_REDIS}/0"), &prefix).unwrap();
        for (key, value) in env {
            django.set_env(key, value);
        }
        let (g, d) = (free_port(), free_port());
        let servers = (django.gunicorn(g).unwrap(), django.daphne(d).unwrap());
        for port in [g, d] {
            django::listening(port, T).await.unwrap();
        }
        Deployment {
            django,
            gunicorn: format!("http://127.0.0.1:{g}"),
            daphne: format!("ws://127.0.0.1:{d}/ws/rohrpost/"),
            prefix,
            _servers: servers,
        }
    }

    /// A host with the proxy in front of gunicorn, sending `secret`.
    fn host(&self, secret: &str, hooks: bool) -> Host {
        let groups = format!("channels_redis://{SHARED_REDIS}/0");
        Host::start_with_config(
            &["proxy"],
            &config(&self.gunicorn, secret, hooks),
            &["--groups", &groups, "--groups-prefix", &self.prefix],
        )
        .unwrap()
    }

    /// The session cookie of `user` (made if new), logged in.
    fn cookie(&self, user: &str) -> String {
        let key = self.django.manage(&["note", "login", user]).unwrap();
        format!("theme=dark; sessionid={key}")
    }
}

async fn client(url: &str, cookie: &str) -> Client {
    Client::connect_with_headers(url, &[("cookie", cookie)])
        .await
        .unwrap()
}

/// Sends `text` and reads `replies` messages.
async fn exchange(c: &mut Client, text: &str, replies: usize) -> Vec<Value> {
    c.send_text(text).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..replies {
        got.push(c.recv_json(T).await.unwrap());
    }
    got
}

/// The requests both sides get, with how many messages each answers.
const REQUESTS: &[(&str, usize)] = &[
    (
        r#"{"id":1,"type":"echo","data":{"n":1.50,"s":"\u00fc","l":[1,null]}}"#,
        1,
    ),
    (r#"{"id":"a-string","type":"echo"}"#, 1),
    (
        r#"{"id":12345678901234567890,"type":"echo","data":[1,2]}"#,
        1,
    ),
    (r#"{"id":0,"type":"echo","data":1}"#, 1),
    (r#"{"id":2,"type":"fail"}"#, 1),
    (r#"{"id":3,"type":"several"}"#, 3),
    (r#"{"id":4,"type":"nope"}"#, 1),
    (r#"{"id":5,"type":"ping","data":{"a":1}}"#, 1),
    (r#"{"id":6,"type":"ping","data":"x"}"#, 1),
    (r#"{"id":7,"type":"whoami","auth_jwt":"x"}"#, 1),
    (r#"{"id":8,"type":"increment","data":{"by":2}}"#, 1),
    (r#"{"id":9,"type":"increment","data":{"by":3}}"#, 1),
];

/// Every request answered through the proxy exactly as rohrpost answers
/// it on daphne: replies, errors, several messages, per-connection data,
/// the user of the session cookie, and the close a handler asks for.
#[tokio::test]
async fn the_same_requests_get_the_same_replies_on_daphne_and_through_the_proxy() {
    let d = Deployment::start().await;
    let host = d.host(SECRET, true);
    let cookie = d.cookie("ada");
    let mut proxied = client(&host.url(), &cookie).await;
    let mut daphne = client(&d.daphne, &cookie).await;

    for (text, replies) in REQUESTS {
        let through_proxy = exchange(&mut proxied, text, *replies).await;
        let on_daphne = exchange(&mut daphne, text, *replies).await;
        assert_eq!(through_proxy, on_daphne, "{text}");
    }
    // What was compared is what rohrpost answers.
    let who = exchange(&mut proxied, r#"{"id":7,"type":"whoami"}"#, 1).await;
    assert_eq!(
        who[0]["data"],
        json!({"user": "ada", "authenticated": true, "path": "/ws/rohrpost/",
            "data": {"count": 5}})
    );
    let value = exchange(
        &mut proxied,
        r#"{"id":1,"type":"increment","data":{"by":1}}"#,
        1,
    )
    .await;
    assert_eq!(value[0]["data"]["value"], 6);

    // Data stays the connection's own: a second connection starts at 0.
    let bob = d.cookie("bob");
    let mut second_proxied = client(&host.url(), &bob).await;
    let mut second_daphne = client(&d.daphne, &bob).await;
    let text = r#"{"id":1,"type":"increment","data":{"by":1}}"#;
    let a = exchange(&mut second_proxied, text, 1).await;
    assert_eq!(a, exchange(&mut second_daphne, text, 1).await);
    assert_eq!(a[0]["data"]["value"], 1);

    // The reply, then the close the handler asked for.
    let text = r#"{"id":10,"type":"bye"}"#;
    assert_eq!(
        exchange(&mut proxied, text, 1).await,
        exchange(&mut daphne, text, 1).await
    );
    for c in [&mut proxied, &mut daphne] {
        assert_eq!(c.recv(T).await.unwrap(), Received::Close(Some(4001)));
    }

    // A handler that raises: through the proxy, an error reply (logged by
    // Django), and the connection goes on.
    let text = r#"{"id":11,"type":"boom"}"#;
    assert_eq!(
        exchange(&mut second_proxied, text, 1).await,
        vec![json!({"id": 11, "type": "boom",
            "error": "Internal error: the handler for 'boom' failed."})]
    );
    // (On daphne, the consumer's crash closes the socket.)
    second_daphne.send_text(text).await.unwrap();
    assert_eq!(
        second_daphne.recv(T).await.unwrap(),
        Received::Close(Some(1011))
    );
    assert_eq!(
        exchange(
            &mut second_proxied,
            text.replace("boom", "ping").as_str(),
            1
        )
        .await[0]["type"],
        "pong"
    );
}

/// Groups through the app's channels_redis layer: members on daphne and
/// on the host, joined by `consumer.add_to_group`, each get a
/// `send_to_group` of a handler on either side once; after leaving,
/// nothing.
#[tokio::test]
async fn send_to_group_from_a_handler_reaches_members_on_daphne_and_on_the_host() {
    let d = Deployment::start().await;
    let host = d.host(SECRET, true);
    let cookie = d.cookie("ada");
    let mut member_proxied = client(&host.url(), &cookie).await;
    let mut member_daphne = client(&d.daphne, &cookie).await;
    let mut sender_proxied = client(&host.url(), &cookie).await;
    let mut sender_daphne = client(&d.daphne, &cookie).await;

    let join = r#"{"id":1,"type":"join","data":{"group":"room"}}"#;
    assert_eq!(
        exchange(&mut member_proxied, join, 1).await,
        exchange(&mut member_daphne, join, 1).await
    );

    for (n, sender) in [&mut sender_proxied, &mut sender_daphne]
        .into_iter()
        .enumerate()
    {
        let text = json!({"id": 2, "type": "shout", "data": {"group": "room", "text": n}});
        assert_eq!(
            exchange(sender, &text.to_string(), 1).await,
            vec![json!({"id": 2, "type": "shout"})]
        );
        let want = json!({"type": "shout", "data": {"text": n}});
        for member in [&mut member_proxied, &mut member_daphne] {
            assert_eq!(member.recv_json(T).await.unwrap(), want);
        }
    }
    for member in [&mut member_proxied, &mut member_daphne] {
        member.expect_silence(QUIET).await.unwrap();
    }

    let leave = r#"{"id":3,"type":"leave","data":{"group":"room"}}"#;
    assert_eq!(
        exchange(&mut member_proxied, leave, 1).await,
        exchange(&mut member_daphne, leave, 1).await
    );
    let text = r#"{"id":4,"type":"shout","data":{"group":"room","text":"anyone?"}}"#;
    exchange(&mut sender_proxied, text, 1).await;
    for member in [&mut member_proxied, &mut member_daphne] {
        member.expect_silence(QUIET).await.unwrap();
    }
}

/// The connect hook refuses a connection without a session cookie (the
/// bridge's default, 4003) and admits one with; the disconnect hook is
/// told once per connection, with its close code (the test app's hook
/// sends it to the group `disconnects`).
#[tokio::test]
async fn connect_refused_or_accepted_from_the_session_cookie_and_disconnect_told_once() {
    let d = Deployment::start().await;
    let host = d.host(SECRET, true);
    let mut watcher = client(&host.url(), &d.cookie("watcher")).await;
    let join = r#"{"id":1,"type":"join","data":{"group":"disconnects"}}"#;
    exchange(&mut watcher, join, 1).await;

    let mut anonymous = Client::connect(&host.url()).await.unwrap();
    assert_eq!(
        anonymous.recv(T).await.unwrap(),
        Received::Close(Some(4003))
    );
    let mut forged = client(&host.url(), "sessionid=forged").await;
    assert_eq!(forged.recv(T).await.unwrap(), Received::Close(Some(4003)));
    for _ in 0..2 {
        let gone = watcher.recv_json(T).await.unwrap();
        assert_eq!(gone["type"], "gone", "{gone}");
        assert_eq!(
            (&gone["data"]["user"], &gone["data"]["code"]),
            (&json!(""), &json!(4003))
        );
    }

    let mut ada = client(&host.url(), &d.cookie("ada")).await;
    let who = exchange(&mut ada, r#"{"id":2,"type":"whoami"}"#, 1).await;
    assert_eq!(who[0]["data"]["user"], "ada");
    ada.close_with(4100).await.unwrap();
    assert_eq!(ada.recv(T).await.unwrap(), Received::Close(Some(4100)));
    let gone = watcher.recv_json(T).await.unwrap();
    assert_eq!(gone["data"]["user"], "ada", "{gone}");
    assert_eq!(gone["data"]["code"], 4100, "{gone}");
    assert!(gone["data"]["connection"].is_u64(), "{gone}");
    // Once.
    watcher.expect_silence(QUIET).await.unwrap();
}

/// The app's own connect hook (`CONNECT`, written as a consumer's
/// `connect()`): refuses anonymous users with its code, joins the others to
/// their group, attaches data and welcomes them.
#[tokio::test]
async fn a_connect_hook_of_the_app_refuses_joins_attaches_and_welcomes() {
    let d =
        Deployment::start_with(&[("NOTES_BRIDGE_CONNECT", "notes.bridge.connect_with_welcome")])
            .await;
    let host = d.host(SECRET, true);
    let mut anonymous = Client::connect(&host.url()).await.unwrap();
    assert_eq!(
        anonymous.recv(T).await.unwrap(),
        Received::Close(Some(4001))
    );

    let mut ada = client(&host.url(), &d.cookie("ada")).await;
    assert_eq!(
        ada.recv_json(T).await.unwrap(),
        json!({"type": "welcome", "data": {"user": "ada"}})
    );
    // Data attached on connect stays beside what handlers attach.
    let text = r#"{"id":1,"type":"increment","data":{"by":2}}"#;
    assert_eq!(exchange(&mut ada, text, 1).await[0]["data"]["value"], 2);
    let who = exchange(&mut ada, r#"{"id":1,"type":"whoami"}"#, 1).await;
    assert_eq!(who[0]["data"]["data"], json!({"user": "ada", "count": 2}));
    let mut bob = client(&host.url(), &d.cookie("bob")).await;
    bob.recv_json(T).await.unwrap();
    let text = r#"{"id":2,"type":"shout","data":{"group":"user-ada","text":"psst"}}"#;
    exchange(&mut bob, text, 1).await;
    assert_eq!(
        ada.recv_json(T).await.unwrap(),
        json!({"type": "shout", "data": {"text": "psst"}})
    );
    bob.expect_silence(QUIET).await.unwrap();
}

/// A proxy without the bridge's secret: each call answered 403, so the
/// client gets the proxy's error reply and the log names the status; a
/// connect hook answered 403 refuses the connection.
#[tokio::test]
async fn without_the_secret_the_bridge_answers_403_and_the_client_the_proxy_s_error() {
    let d = Deployment::start().await;
    let host = d.host("not-the-secret", false);
    let mut c = client(&host.url(), &d.cookie("ada")).await;
    assert_eq!(
        exchange(&mut c, r#"{"id":1,"type":"echo"}"#, 1).await,
        vec![json!({"id": 1, "type": "echo", "error": "The backend failed to handle 'echo'."})]
    );
    host.wait_for_log(
        &[
            "the backend failed",
            "plugin=proxy",
            r#""type":"echo""#,
            "HTTP status 403",
        ],
        T,
    )
    .await
    .unwrap();

    let hooked = d.host("not-the-secret", true);
    let mut refused = client(&hooked.url(), &d.cookie("ada")).await;
    assert_eq!(refused.recv(T).await.unwrap(), Received::Close(Some(1011)));
}

/// The subscriptions plugin with `auth = "backend"` asks the bridge's
/// subscribe view, which resolves the user from the forwarded session
/// cookie: a logged-in user may join a group, an anonymous one (or a
/// forged cookie) gets `ACCESS_DENIED`; unsubscribing asks no one.
#[tokio::test]
async fn subscribes_are_decided_by_the_bridge_from_the_session_cookie() {
    let d = Deployment::start().await;
    let config = format!(
        "{}\n[plugins.subscriptions]\nauth = \"backend\"\nurl = \"{}/rohrpost/subscribe/\"\n\
         headers = {{ X-Rohrpost-Secret = \"{SECRET}\" }}\nforward_headers = [\"cookie\"]\n\
         sandbox = {{ connect_ports = [{}] }}\n",
        config(&d.gunicorn, SECRET, false),
        d.gunicorn,
        rohrpost_tests::port_of(&d.gunicorn)
    );
    let groups = format!("channels_redis://{SHARED_REDIS}/0");
    let host = Host::start_with_config(
        &["proxy", "subscriptions"],
        &config,
        &["--groups", &groups, "--groups-prefix", &d.prefix],
    )
    .unwrap();
    let subscribe = r#"{"id":1,"type":"subscribe","data":{"type":"collection","id":52}}"#;
    let asked = plugin_count("subscriptions", "backend_calls", "subscribe");

    let mut ada = client(&host.url(), &d.cookie("ada")).await;
    assert_eq!(
        exchange(&mut ada, subscribe, 1).await,
        vec![json!({"id": 1, "type": "subscribe", "data": {"group": "collection-52"}})]
    );
    for cookie in ["theme=dark", "sessionid=forged"] {
        let mut anonymous = client(&host.url(), cookie).await;
        assert_eq!(
            exchange(&mut anonymous, subscribe, 1).await,
            vec![json!({"id": 1, "type": "subscribe", "error": "ACCESS_DENIED"})],
            "{cookie}"
        );
    }
    assert_eq!(metric_value(&host.addr, &asked).await.unwrap(), 3.0);
    assert_eq!(
        exchange(
            &mut ada,
            r#"{"id":2,"type":"unsubscribe","data":{"type":"collection","id":52}}"#,
            1
        )
        .await[0]["type"],
        "unsubscribe"
    );
    assert_eq!(metric_value(&host.addr, &asked).await.unwrap(), 3.0);
}

/// Porting a handler from Python to Rust while clients stay connected:
/// rohrpost's `ping`, served by Django through the proxy, moves to the
/// Rust ping plugin dropped into the plugins directory; the same
/// connection gets the same replies, now without a backend call, and gets
/// Django's again when the plugin is removed.
#[tokio::test]
async fn a_handler_ported_to_a_rust_plugin_takes_its_type_over_without_a_reconnect() {
    let d = Deployment::start().await;
    let host = d.host(SECRET, false);
    let mut c = client(&host.url(), &d.cookie("ada")).await;
    let calls = plugin_count("proxy", "backend_calls", "request");
    let ping = r#"{"id":5,"type":"ping","data":{"a":1}}"#;
    let pong = json!({"id": 5, "type": "pong", "data": {"a": 1}});
    assert_eq!(exchange(&mut c, ping, 1).await, vec![pong.clone()]);
    assert_eq!(metric_value(&host.addr, &calls).await.unwrap(), 1.0);

    install(&build().plugin("ping"), host.plugins.path(), "libping.so");
    host.wait_for_log(
        &["message type moved", "type=ping", "from=proxy", "to=ping"],
        T,
    )
    .await
    .unwrap();
    for _ in 0..3 {
        assert_eq!(exchange(&mut c, ping, 1).await, vec![pong.clone()]);
    }
    assert_eq!(
        metric_value(&host.addr, &calls).await.unwrap(),
        1.0,
        "the ported type still went to the backend"
    );
    // The proxy still serves the types it was not relieved of.
    assert_eq!(
        exchange(&mut c, r#"{"id":6,"type":"increment","data":{"by":2}}"#, 1).await,
        vec![json!({"id": 6, "type": "increment", "data": {"value": 2}})]
    );

    std::fs::remove_file(host.plugins.path().join("libping.so")).unwrap();
    let deadline = std::time::Instant::now() + T;
    while metric_value(&host.addr, &calls).await.unwrap() < 3.0 {
        assert_eq!(exchange(&mut c, ping, 1).await, vec![pong.clone()]);
        assert!(
            std::time::Instant::now() < deadline,
            "ping did not go back to the backend"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The bridge's own tests, with Django's test client.
#[test]
fn the_bridge_s_own_tests_pass() {
    let out = std::process::Command::new(django::python())
        .current_dir(django::bridge_dir())
        .args(["-m", "django", "test", "-v", "1"])
        .env("DJANGO_SETTINGS_MODULE", "tests.settings")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
