//! Attacks on the hardened host, each reproduced against the real binary:
//! what a hostile client can still cause, and what it gets now.

use std::time::Duration;

use rohrpost_tests::Host;
use serde_json::json;

const T: Duration = Duration::from_secs(20);

/// A handler that relays a client's group name (as many do) must not let
/// the client write one log line per request: the invalid-name warning is
/// rate-limited like every other line a client can cause.
#[tokio::test]
async fn a_thousand_invalid_group_names_make_a_few_log_lines() {
    let host = Host::start(&["ping", "fixture-testkit"]).unwrap();
    let before = host.log().len();
    let mut client = host.connect().await.unwrap();
    let request = json!({"id": 1, "type": "join", "data": {"group": "../.."}}).to_string();
    for _ in 0..1000 {
        client.send_text(&request).await.unwrap();
    }
    for _ in 0..1000 {
        let reply = client.recv_json(T).await.unwrap();
        let error = reply["error"].as_str().unwrap_or_default();
        assert!(error.starts_with("Invalid group name"), "{reply}");
    }
    client.ping_ok(2).await.unwrap();
    host.wait_for_log(&["WARN", "kind=\"invalid_group_name\"", "suppressing"], T)
        .await
        .unwrap();
    let warned = host
        .log()
        .into_iter()
        .skip(before)
        .filter(|line| line.contains("handler used an invalid group name"))
        .count();
    assert!(
        (1..=20).contains(&warned),
        "1000 requests with an invalid group name logged {warned} warnings"
    );
}
