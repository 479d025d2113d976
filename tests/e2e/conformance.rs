//! Every test vector of the protocol's conformance suite, against the real
//! host with only the ping plugin loaded.

use std::{path::PathBuf, time::Duration};

use rohrpost_tests::{json, workspace, Host, Received};
use serde_json::Value;

/// The suite as shipped with the repository, relative to the workspace.
const VENDORED: &str = "tests/conformance/cases.json";

/// Where the protocol's own copy is looked for when
/// `ROHRPOST_PROTOCOL_SUITE` does not name it, relative to the workspace.
const UPSTREAM: &str = "../shared/conformance/cases.json";

/// The suite has at least this many cases; fewer means a damaged copy.
const MIN_CASES: usize = 50;

/// The vendored suite's text; a missing or empty file fails the test.
fn vendored_text() -> String {
    let path = workspace().join(VENDORED);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{VENDORED} cannot be read ({e}): the conformance vectors ship with the \
             repository; restore them with `git checkout -- {VENDORED}`"
        )
    });
    assert!(
        !text.trim().is_empty(),
        "{VENDORED} is empty: restore it with `git checkout -- {VENDORED}`"
    );
    text
}

/// The vendored suite's cases: at least [`MIN_CASES`], each with a name and
/// frames to send.
fn cases() -> Vec<Value> {
    let doc: Value = serde_json::from_str(&vendored_text())
        .unwrap_or_else(|e| panic!("{VENDORED} is not JSON: {e}"));
    let cases = doc["cases"]
        .as_array()
        .unwrap_or_else(|| panic!("{VENDORED} has no \"cases\" array"))
        .clone();
    assert!(
        cases.len() >= MIN_CASES,
        "{VENDORED} has {} cases, the suite has at least {MIN_CASES}",
        cases.len()
    );
    for case in &cases {
        assert!(
            case["name"].is_string() && case["send"].is_array(),
            "{VENDORED}: a case without name or send: {case}"
        );
    }
    cases
}

#[test]
fn the_vendored_cases_are_present() {
    cases();
}

/// The protocol's own copy: named by `ROHRPOST_PROTOCOL_SUITE` (then it
/// must exist), else [`UPSTREAM`] when it exists.
fn upstream() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("ROHRPOST_PROTOCOL_SUITE") {
        return Some(PathBuf::from(path));
    }
    let path = workspace().join(UPSTREAM);
    path.exists().then_some(path)
}

#[test]
fn vendored_cases_match_the_protocol_suite() {
    // Where the protocol's own copy is at hand, the vendored one must be
    // the same file. A clone of the repository alone has only the vendored
    // copy, which the other tests check and run.
    let Some(path) = upstream() else {
        eprintln!(
            "notice: no protocol suite at {UPSTREAM} and ROHRPOST_PROTOCOL_SUITE is unset; \
             {VENDORED} is not compared with it"
        );
        return;
    };
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read the protocol suite {}: {e}", path.display()));
    assert_eq!(
        json(&text),
        json(&vendored_text()),
        "{VENDORED} is out of date: copy {} over it",
        path.display()
    );
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
