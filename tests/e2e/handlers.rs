//! What handlers can do through plugin-api, seen from a client: several
//! messages, generated ids, extra fields, error replies, close, scope and
//! request fields, and every way a handler can fail.

use std::time::Duration;

use rohrpost_tests::{json, Host, Received};
use serde_json::json;

const T: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_handler_sends_several_messages_in_order() {
    let host = Host::start(&["ping", "fixture-testkit"]).unwrap();
    let mut c = host.connect().await.unwrap();
    c.send_text(r#"{"id":"m","type":"many"}"#).await.unwrap();
    for n in 1..=3 {
        assert_eq!(
            c.recv_json(T).await.unwrap(),
            json!({"id":"m","type":"many","data":{"n":n}})
        );
    }
    c.expect_silence(Duration::from_millis(100)).await.unwrap();
    c.ping_ok(1).await.unwrap();
}

#[tokio::test]
async fn generated_ids_and_extra_fields() {
    let host = Host::start(&["fixture-testkit"]).unwrap();
    let mut c = host.connect().await.unwrap();
    let mut ids = std::collections::HashSet::new();
    for i in 0..20 {
        let reply = c
            .request(&format!(r#"{{"id":{i},"type":"notice"}}"#))
            .await
            .unwrap();
        assert_eq!(reply["type"], "notice");
        assert_eq!(reply["data"], json!({"about": i, "extra": true}));
        let id = reply["id"]
            .as_u64()
            .expect("generated id is a positive integer");
        assert!(id >= 1);
        ids.insert(id);
    }
    assert!(ids.len() > 1, "generated ids are random");
}

#[tokio::test]
async fn error_replies_from_send_error_and_from_returned_errors() {
    let host = Host::start(&["fixture-testkit"]).unwrap();
    let mut c = host.connect().await.unwrap();
    assert_eq!(
        c.request(r#"{"id":1,"type":"error-reply"}"#).await.unwrap(),
        json!({"id":1,"type":"error-reply","error":"bad input","data":{"field":"x"}})
    );
    assert_eq!(
        c.request(r#"{"id":2,"type":"fail"}"#).await.unwrap(),
        json!({"id":2,"type":"fail","error":"something went wrong"})
    );
    host.wait_for_log(
        &[
            "handler returned an error",
            "plugin=testkit",
            "version=1.0.0",
            "type=fail",
            "cause=something went wrong",
        ],
        T,
    )
    .await
    .unwrap();
    // An empty message is refused inside the plugin; the refusal is the error.
    assert_eq!(
        c.request(r#"{"id":3,"type":"empty"}"#).await.unwrap(),
        json!({"id":3,"type":"empty","error":"cannot send an empty message"})
    );
}

#[tokio::test]
async fn a_handler_may_answer_nothing() {
    let host = Host::start(&["ping", "fixture-testkit"]).unwrap();
    let mut c = host.connect().await.unwrap();
    c.send_text(r#"{"id":1,"type":"silent"}"#).await.unwrap();
    c.send_text(r#"{"id":2,"type":"ping"}"#).await.unwrap();
    assert_eq!(c.recv_json(T).await.unwrap(), json!({"id":2,"type":"pong"}));
}

#[tokio::test]
async fn a_handler_closes_the_connection_after_its_reply() {
    let host = Host::start(&["fixture-testkit"]).unwrap();
    let mut c = host.connect().await.unwrap();
    c.send_text(r#"{"id":1,"type":"close"}"#).await.unwrap();
    assert_eq!(
        c.recv_json(T).await.unwrap(),
        json!({"id":1,"type":"close"})
    );
    assert_eq!(c.recv(T).await.unwrap(), Received::Close(Some(1000)));
}

#[tokio::test]
async fn handlers_read_data_fields_and_scope() {
    let host = Host::start(&["fixture-testkit"]).unwrap();
    let url = format!("{}?token=abc", host.url());
    let mut c = rohrpost_tests::Client::connect(&url).await.unwrap();
    let reply = c
        .request(r#"{"id":1,"type":"inspect-too","auth_jwt":"jwt-1","data":{"big":123456789012345678901234567890}}"#)
        .await
        .unwrap();
    assert_eq!(reply["type"], "inspect-too");
    let data = &reply["data"];
    assert_eq!(data["type"], "inspect-too");
    assert_eq!(
        data["data"],
        json("{\"big\":123456789012345678901234567890}")
    );
    assert_eq!(data["auth_jwt"], "jwt-1");
    let scope = &data["scope"];
    assert_eq!(scope["path"], "/ws/rohrpost/");
    assert_eq!(scope["query_string"], "token=abc");
    assert!(scope["connection_id"].as_u64().is_some());
    assert!(scope["remote_addr"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    assert_eq!(scope["headers"]["upgrade"], "websocket");
}

#[tokio::test]
async fn header_values_that_are_not_utf8_are_left_out_of_the_scope() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{client::IntoClientRequest, http::HeaderValue, Message};
    let host = Host::start(&["fixture-testkit"]).unwrap();
    let mut request = host.url().into_client_request().unwrap();
    let headers = request.headers_mut();
    // 15 KB of 0xFF would be 45 KB in the scope, for the connection's life.
    headers.insert("x-bytes", HeaderValue::from_bytes(&[0xff; 15_000]).unwrap());
    headers.insert("x-name", HeaderValue::from_bytes("Zoë".as_bytes()).unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    ws.send(Message::text(r#"{"id":1,"type":"inspect-too"}"#))
        .await
        .unwrap();
    let reply = loop {
        match ws.next().await.unwrap().unwrap() {
            Message::Text(text) => break json(text.as_str()),
            _ => continue,
        }
    };
    let headers = &reply["data"]["scope"]["headers"];
    assert_eq!(headers["x-name"], "Zoë", "{reply}");
    assert!(headers.get("x-bytes").is_none(), "{reply}");
    assert_eq!(headers["upgrade"], "websocket");
}

#[tokio::test]
async fn a_panicking_handler_gets_an_error_reply_and_everything_keeps_serving() {
    let host = Host::start(&["ping", "fixture-testkit"]).unwrap();
    let mut c = host.connect().await.unwrap();
    let mut other = host.connect().await.unwrap();
    for (i, kind) in ["panic", "panic-too", "panic-inline", "panic"]
        .iter()
        .enumerate()
    {
        let reply = c
            .request(&format!(r#"{{"id":{i},"type":"{kind}"}}"#))
            .await
            .unwrap();
        assert_eq!(reply["id"], i);
        assert_eq!(reply["type"], *kind);
        assert!(
            reply["error"].as_str().unwrap().contains("panicked"),
            "{reply}"
        );
        assert!(reply.get("data").is_none());
    }
    // The same connection, another connection, and the same plugin go on.
    c.ping_ok(10).await.unwrap();
    other.ping_ok(11).await.unwrap();
    assert_eq!(
        c.request(r#"{"id":12,"type":"fail"}"#).await.unwrap()["error"],
        "something went wrong"
    );
    host.wait_for_log(
        &[
            "handler panicked",
            "plugin=testkit",
            "cause=testkit panics on purpose",
        ],
        T,
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_slow_inline_handler_is_moved_to_the_pool() {
    let host = Host::start(&["fixture-testkit"]).unwrap();
    let mut c = host.connect().await.unwrap();
    for i in 0..3 {
        let reply = c
            .request(&format!(r#"{{"id":{i},"type":"slow-inline"}}"#))
            .await
            .unwrap();
        assert_eq!(reply, json!({"id": i, "type": "slow-inline"}));
    }
    host.wait_for_log(&["running it on the worker pool", "type=slow-inline"], T)
        .await
        .unwrap();
}

/// `std::panic::panic_any(p)` where dropping `p` panics too: the shim must
/// not drop it where that second panic would abort the server.
#[tokio::test]
async fn a_panic_whose_payload_panics_when_dropped_gets_an_error_reply() {
    let mut host = Host::start(&["ping", "fixture-testkit"]).unwrap();
    let mut c = host.connect().await.unwrap();
    let mut other = host.connect().await.unwrap();
    for (i, kind) in ["panic-drop", "panic-drop-inline", "panic-drop"]
        .iter()
        .enumerate()
    {
        assert_eq!(
            c.request(&format!(r#"{{"id":{i},"type":"{kind}"}}"#))
                .await
                .unwrap(),
            json!({"id": i, "type": kind,
                "error": format!("Internal error: the handler for '{kind}' panicked.")})
        );
    }
    c.ping_ok(10).await.unwrap();
    other.ping_ok(11).await.unwrap();
    host.connect().await.unwrap().ping_ok(12).await.unwrap();
    assert!(host.is_running());
    host.wait_for_log(
        &[
            "handler panicked",
            "plugin=testkit",
            "type=panic-drop-inline",
            "cause=a panic without a message",
        ],
        T,
    )
    .await
    .unwrap();
}

/// The same payload from the plugin's configuration, or from building the
/// plugin, rejects that plugin only.
#[tokio::test]
async fn a_payload_that_panics_when_dropped_while_configuring_rejects_only_the_plugin() {
    let config = "[plugins.testkit]\npanic_drop = true\n";
    let mut host = Host::start_with_config(&["ping", "fixture-testkit"], config, &[]).unwrap();
    host.wait_for_log(
        &[
            "event=\"rejected\"",
            "plugin=testkit",
            "configure panicked: a panic without a message",
        ],
        T,
    )
    .await
    .unwrap();
    host.connect().await.unwrap().ping_ok(1).await.unwrap();
    assert!(host.is_running());
}

#[tokio::test]
async fn a_payload_that_panics_when_dropped_while_building_rejects_only_the_plugin() {
    let mut host = Host::start_with_env(
        &["ping", "fixture-testkit"],
        &[],
        &[("TESTKIT_PANIC_DROP_IN_BUILD", "1")],
    )
    .unwrap();
    host.wait_for_log(&["event=\"rejected\"", "libfixture_testkit"], T)
        .await
        .unwrap();
    let mut c = host.connect().await.unwrap();
    c.ping_ok(2).await.unwrap();
    assert_eq!(
        c.request(r#"{"id":3,"type":"panic-drop"}"#).await.unwrap()["error"],
        "Unknown message type 'panic-drop'."
    );
    assert!(host.is_running());
}
