//! Plugins built against an earlier plugin-api release keep loading and
//! working in this host: 1.0 (a plain handler) and 1.1 (configuration,
//! groups, change notifications), the latter in both isolation modes.

use std::time::Duration;

use rohrpost_tests::{build_compat_plugin, install, Client, Host};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_plugin_built_against_plugin_api_1_0_loads_and_serves() {
    let old = build_compat_plugin("echo-1.0", "echo-abi-1-0");
    let host = Host::start(&["ping"]).unwrap();
    install(&old, host.plugins.path(), "echo.so");
    host.wait_for_log(
        &[
            "event=\"loaded\"",
            "plugin=echo",
            "version=abi-1.0",
            "api=1.0.0",
        ],
        T,
    )
    .await
    .unwrap();
    let mut c = host.connect().await.unwrap();
    assert_eq!(
        c.request(r#"{"id":1,"type":"echo","data":[1]}"#)
            .await
            .unwrap(),
        json!({"id":1,"type":"echo","data":{"version":"abi-1.0","data":[1]}})
    );
    c.ping_ok(2).await.unwrap();
}

/// The next `count` messages `c` receives, in the order of their types
/// (a reply and a group message may arrive either way round).
async fn next_messages(c: &mut Client, count: usize) -> Vec<Value> {
    let mut messages = Vec::new();
    for _ in 0..count {
        messages.push(c.recv_json(T).await.unwrap());
    }
    messages.sort_by_key(|m| m["type"].as_str().unwrap_or_default().to_owned());
    messages
}

/// The plugin built against 1.1, with `isolation`, gets its configuration,
/// joins, leaves and sends to groups, and notifies.
async fn serves_what_1_1_offers(isolation: &str) {
    let plugin = build_compat_plugin("echo-1.1", "echo-abi-1-1");
    let config = format!("[plugins.echo]\nisolation = \"{isolation}\"\ngreeting = \"Howdy\"\n");
    let host = Host::start_with_config(&["ping"], &config, &[]).unwrap();
    install(&plugin, host.plugins.path(), "echo.so");
    host.wait_for_log(
        &[
            "event=\"loaded\"",
            "plugin=echo",
            "version=abi-1.1",
            "api=1.1.0",
        ],
        T,
    )
    .await
    .unwrap();
    let mut a = host.connect().await.unwrap();
    let mut b = host.connect().await.unwrap();

    // Its configuration.
    assert_eq!(
        a.request(r#"{"id":1,"type":"echo","data":[1]}"#)
            .await
            .unwrap(),
        json!({"id":1,"type":"echo",
            "data":{"version":"abi-1.1","greeting":"Howdy","data":[1]}})
    );

    // Groups: both join, one says something, both hear it.
    for (n, c) in [&mut a, &mut b].into_iter().enumerate() {
        let join = json!({"id": 10 + n, "type": "echo.join", "data": {"room": "lobby"}});
        assert_eq!(
            c.request(&join.to_string()).await.unwrap(),
            json!({"id": 10 + n, "type": "echo.join", "data": {"group": "room-lobby"}})
        );
    }
    b.send_text(r#"{"id":20,"type":"echo.say","data":{"room":"lobby","text":"hi"}}"#)
        .await
        .unwrap();
    let said = |m: &Value| {
        assert_eq!(m["type"], "echo.said", "{m}");
        assert!(m["id"].as_u64().is_some_and(|id| id >= 1), "{m}");
        assert_eq!(
            m["data"],
            json!({"room":"lobby","text":"hi","greeting":"Howdy"}),
            "{m}"
        );
    };
    let to_b = next_messages(&mut b, 2).await;
    said(&to_b[0]);
    assert_eq!(to_b[1], json!({"id":20,"type":"echo.say"}));
    said(&a.recv_json(T).await.unwrap());

    // A change notification, to the room's group.
    a.send_text(r#"{"id":30,"type":"echo.notify","data":{"room":"lobby"}}"#)
        .await
        .unwrap();
    let update = json!({"type":"update","group":"room-lobby",
        "object":{"id":"lobby","updated_fields":["text"]}});
    let to_a = next_messages(&mut a, 2).await;
    assert_eq!(to_a[0], json!({"id":30,"type":"echo.notify"}));
    for m in [&to_a[1], &b.recv_json(T).await.unwrap()] {
        assert_eq!(m["type"], "subscription-update", "{m}");
        assert_eq!(m["data"], update, "{m}");
    }

    // After leaving, a hears nothing more from the room.
    assert_eq!(
        a.request(r#"{"id":40,"type":"echo.leave","data":{"room":"lobby"}}"#)
            .await
            .unwrap(),
        json!({"id":40,"type":"echo.leave","data":{"group":"room-lobby"}})
    );
    b.send_text(r#"{"id":41,"type":"echo.say","data":{"room":"lobby","text":"hi"}}"#)
        .await
        .unwrap();
    let to_b = next_messages(&mut b, 2).await;
    said(&to_b[0]);
    assert_eq!(to_b[1], json!({"id":41,"type":"echo.say"}));
    a.expect_silence(Duration::from_millis(300)).await.unwrap();
    a.ping_ok(50).await.unwrap();
}

#[tokio::test]
async fn a_plugin_built_against_plugin_api_1_1_serves_in_a_worker_process() {
    serves_what_1_1_offers("process").await;
}

#[tokio::test]
async fn a_plugin_built_against_plugin_api_1_1_serves_in_the_servers_process() {
    serves_what_1_1_offers("none").await;
}
