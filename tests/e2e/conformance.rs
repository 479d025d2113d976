//! Every test vector of the protocol's conformance suite, against the real
//! host with only the ping plugin loaded.

use std::time::Duration;

use rohrpost_tests::{json, Host, Received};
use serde_json::Value;

/// The suite as shipped with the repository.
const CASES: &str = include_str!("../conformance/cases.json");

fn cases() -> Vec<Value> {
    let doc = json(CASES);
    doc["cases"].as_array().expect("cases array").clone()
}

#[test]
fn vendored_cases_match_the_protocol_suite() {
    // Where the protocol's own copy is at hand, the vendored one must be
    // the same file.
    let upstream = rohrpost_tests::workspace().join("../shared/conformance/cases.json");
    if let Ok(text) = std::fs::read_to_string(upstream) {
        assert_eq!(
            json(&text),
            json(CASES),
            "tests/conformance/cases.json is out of date"
        );
    }
}

async fn run_case(host: &Host, case: &Value) -> anyhow::Result<()> {
    let name = case["name"].as_str().unwrap_or("?");
    let mut client = host.connect().await?;
    let binary = case["frame"].as_str() == Some("binary");
    for frame in case["send"].as_array().expect("send") {
        let text = frame.as_str().expect("frame text");
        if binary {
            client.send_binary(text.as_bytes()).await?;
        } else {
            client.send_text(text).await?;
        }
    }
    let timeout = Duration::from_secs(5);
    if let Some(prefix) = case["expect_error_prefix"].as_str() {
        let reply = client.recv_json(timeout).await?;
        let object = reply.as_object().expect("reply object");
        anyhow::ensure!(
            object.len() == 1,
            "{name}: expected only 'error', got {reply}"
        );
        let error = reply["error"].as_str().unwrap_or("");
        anyhow::ensure!(error.starts_with(prefix), "{name}: got {reply}");
    } else {
        for expected in case["expect"].as_array().expect("expect") {
            let reply = client.recv_json(timeout).await?;
            match expected {
                Value::Null => {
                    let error = reply["error"].as_str().unwrap_or("");
                    anyhow::ensure!(
                        error.starts_with("Could not decode JSON message. Error: ")
                            && reply.as_object().map(|o| o.len()) == Some(1),
                        "{name}: got {reply}"
                    );
                }
                Value::String(text) => {
                    anyhow::ensure!(reply == json(text), "{name}: expected {text}, got {reply}");
                }
                other => anyhow::bail!("{name}: bad expectation {other}"),
            }
        }
    }
    client
        .expect_silence(Duration::from_millis(150))
        .await
        .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    // The socket still answers a ping after every case.
    client
        .ping_ok(424242)
        .await
        .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
    Ok(())
}

#[tokio::test]
async fn every_conformance_case_passes() {
    let host = Host::start(&["ping"]).expect("host");
    let cases = cases();
    assert!(cases.len() >= 50, "the suite has {} cases", cases.len());
    let results = futures_util::future::join_all(cases.iter().map(|c| run_case(&host, c))).await;
    let failures: Vec<String> = results
        .into_iter()
        .filter_map(|r| r.err().map(|e| e.to_string()))
        .collect();
    assert!(
        failures.is_empty(),
        "{} failing cases:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn replies_are_compact_json_in_protocol_key_order() {
    let host = Host::start(&["ping"]).expect("host");
    let mut client = host.connect().await.expect("connect");
    client
        .send_text(
            r#"{ "data" : { "b" : [1, 2] , "a" : 1 } , "type" : "ping" , "id" : [ 1 , "x" ] }"#,
        )
        .await
        .expect("send");
    let reply = client.recv(Duration::from_secs(5)).await.expect("reply");
    assert_eq!(
        reply,
        Received::Text(r#"{"id":[1,"x"],"type":"pong","data":{"b":[1,2],"a":1}}"#.into())
    );
    client
        .send_text(r#"{"id":1,"type":"nope"}"#)
        .await
        .expect("send");
    assert_eq!(
        client.recv(Duration::from_secs(5)).await.expect("reply"),
        Received::Text(r#"{"id":1,"type":"nope","error":"Unknown message type 'nope'."}"#.into())
    );
}

#[tokio::test]
async fn deeply_nested_json_is_a_decode_error() {
    let host = Host::start(&["ping"]).expect("host");
    let mut client = host.connect().await.expect("connect");
    let deep = format!(
        r#"{{"id":1,"type":"ping","data":{}{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let reply = client.request(&deep).await.expect("reply");
    let error = reply["error"].as_str().expect("error");
    assert!(
        error.starts_with("Could not decode JSON message. Error: "),
        "{reply}"
    );
    client.ping_ok(2).await.expect("still open");
}
