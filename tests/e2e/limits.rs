//! Limits and isolation: oversized frames, slow handlers, timeouts.

use std::time::{Duration, Instant};

use rohrpost_tests::{Host, Received};
use serde_json::json;

const T: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_frame_over_the_limit_closes_with_1009_and_nothing_else_is_affected() {
    let host = Host::start_with(&["ping"], &["--max-message-size", "65536"]).unwrap();
    let mut bystander = host.connect().await.unwrap();
    bystander.ping_ok(1).await.unwrap();

    let mut c = host.connect().await.unwrap();
    c.ping_ok(2).await.unwrap();
    let big = format!(
        r#"{{"id":3,"type":"ping","data":"{}"}}"#,
        "x".repeat(70_000)
    );
    c.send_text(&big).await.unwrap();
    assert_eq!(c.recv(T).await.unwrap(), Received::Close(Some(1009)));

    // Just under the limit is fine.
    let mut d = host.connect().await.unwrap();
    let fits = format!(
        r#"{{"id":4,"type":"ping","data":"{}"}}"#,
        "y".repeat(60_000)
    );
    let reply = d.request(&fits).await.unwrap();
    assert_eq!(reply["data"]["data"].as_str().map(str::len), Some(60_000));

    bystander.ping_ok(5).await.unwrap();
    host.connect().await.unwrap().ping_ok(6).await.unwrap();
}

#[tokio::test]
async fn a_frame_far_over_the_default_limit_still_gets_its_close_frame() {
    let host = Host::start(&["ping"]).unwrap();
    for size in [2 << 20, 8 << 20] {
        let mut c = host.connect().await.unwrap();
        let big = format!(r#"{{"id":1,"type":"ping","data":"{}"}}"#, "x".repeat(size));
        // The server may stop reading before the whole frame is written.
        let _ = c.send_text(&big).await;
        assert_eq!(
            c.recv(T).await.unwrap(),
            Received::Close(Some(1009)),
            "{size} bytes"
        );
    }
    host.connect().await.unwrap().ping_ok(1).await.unwrap();
}

#[tokio::test]
async fn a_sleeping_handler_does_not_hold_up_other_connections_and_times_out() {
    let host =
        Host::start_with(&["ping", "fixture-testkit"], &["--handler-timeout", "2s"]).unwrap();
    let mut sleeper = host.connect().await.unwrap();
    let started = Instant::now();
    sleeper
        .send_text(r#"{"id":"zz","type":"sleep","data":{"ms":10000}}"#)
        .await
        .unwrap();

    // Meanwhile, other connections are answered promptly, many times over.
    let mut others = Vec::new();
    for _ in 0..4 {
        others.push(host.connect().await.unwrap());
    }
    let mut slowest = Duration::ZERO;
    for round in 0..20u64 {
        for c in &mut others {
            let t = Instant::now();
            c.ping_ok(round).await.unwrap();
            slowest = slowest.max(t.elapsed());
        }
    }
    assert!(
        slowest < Duration::from_millis(1500),
        "a ping waited {slowest:?} behind a sleeping handler"
    );

    // The caller gets an error reply after the timeout, not after 10 s.
    let reply = sleeper.recv_json(T).await.unwrap();
    let waited = started.elapsed();
    assert_eq!(reply["id"], "zz");
    assert_eq!(reply["type"], "sleep");
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .contains("did not finish within 2000 ms"),
        "{reply}"
    );
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(8),
        "{waited:?}"
    );

    // The connection goes on; a later short call works.
    sleeper.ping_ok(99).await.unwrap();
    let ok = sleeper
        .request(r#"{"id":1,"type":"sleep","data":{"ms":10}}"#)
        .await
        .unwrap();
    assert_eq!(ok, json!({"id":1,"type":"sleep","data":{"slept_ms":10}}));
    host.wait_for_log(&["handler timed out", "plugin=testkit", "type=sleep"], T)
        .await
        .unwrap();
}

#[tokio::test]
async fn replies_keep_request_order_across_slow_and_fast_handlers() {
    let host = Host::start(&["ping", "fixture-testkit"]).unwrap();
    let mut c = host.connect().await.unwrap();
    c.send_text(r#"{"id":1,"type":"sleep","data":{"ms":300}}"#)
        .await
        .unwrap();
    c.send_text(r#"{"id":2,"type":"ping"}"#).await.unwrap();
    c.send_text(r#"{"id":3,"type":"sleep","data":{"ms":10}}"#)
        .await
        .unwrap();
    c.send_text(r#"{"id":4,"type":"ping"}"#).await.unwrap();
    let ids: Vec<u64> = {
        let mut ids = Vec::new();
        for _ in 0..4 {
            ids.push(c.recv_json(T).await.unwrap()["id"].as_u64().unwrap());
        }
        ids
    };
    assert_eq!(ids, vec![1, 2, 3, 4]);
}

#[tokio::test]
async fn a_client_close_is_echoed_with_its_code() {
    let host = Host::start(&["ping"]).unwrap();
    let mut c = host.connect().await.unwrap();
    c.ping_ok(1).await.unwrap();
    c.close_with(4001).await.unwrap();
    assert_eq!(c.recv(T).await.unwrap(), Received::Close(Some(4001)));
}

#[tokio::test]
async fn a_connection_may_be_in_so_many_groups_and_a_call_past_that_joins_none() {
    let host =
        Host::start_with(&["fixture-testkit"], &["--max-groups-per-connection", "3"]).unwrap();
    let mut c = host.connect().await.unwrap();
    let mut sender = host.connect().await.unwrap();
    let reply = c
        .request(r#"{"id":1,"type":"join-all","data":{"groups":["a","b","c"]}}"#)
        .await
        .unwrap();
    assert_eq!(reply["type"], "join-all", "{reply}");
    let too_many = "Too many groups: a connection may be in at most 3 groups.";
    // A fourth group, alone or with one more: refused, and nothing joined.
    for request in [
        r#"{"id":2,"type":"join","data":{"group":"d"}}"#,
        r#"{"id":3,"type":"join-all","data":{"groups":["e","f"]}}"#,
    ] {
        let reply = c.request(request).await.unwrap();
        assert_eq!(reply["error"], too_many, "{reply}");
    }
    for group in ["d", "e", "f"] {
        let send = json!({"id": 4, "type": "group-send",
            "data": {"group": group, "message": "hello"}})
        .to_string();
        sender.request(&send).await.unwrap();
    }
    c.expect_silence(Duration::from_millis(300)).await.unwrap();
    // A group it is in already takes no place; a leave gives one back, in
    // the same call too.
    let reply = c
        .request(r#"{"id":5,"type":"join","data":{"group":"a"}}"#)
        .await
        .unwrap();
    assert_eq!(reply["type"], "join", "{reply}");
    let reply = c
        .request(r#"{"id":6,"type":"leave","data":{"group":"a"}}"#)
        .await
        .unwrap();
    assert_eq!(reply["type"], "leave", "{reply}");
    let reply = c
        .request(r#"{"id":7,"type":"join","data":{"group":"d"}}"#)
        .await
        .unwrap();
    assert_eq!(reply["type"], "join", "{reply}");
    let send = json!({"id": 8, "type": "group-send",
        "data": {"group": "d", "message": "in"}})
    .to_string();
    sender.request(&send).await.unwrap();
    let message = c.recv_json(T).await.unwrap();
    assert_eq!(message["data"]["payload"], "in", "{message}");
}

#[tokio::test]
async fn by_default_a_connection_may_be_in_a_thousand_groups() {
    let host = Host::start(&["fixture-testkit"]).unwrap();
    let mut c = host.connect().await.unwrap();
    let groups = |range: std::ops::Range<usize>| -> Vec<String> {
        range.map(|n| format!("g-{n}")).collect()
    };
    let join_all = |id: u64, groups: Vec<String>| {
        json!({"id": id, "type": "join-all", "data": {"groups": groups}}).to_string()
    };
    let reply = c.request(&join_all(1, groups(0..1000))).await.unwrap();
    assert_eq!(reply["type"], "join-all", "{reply:.200}");
    let reply = c.request(&join_all(2, groups(1000..1001))).await.unwrap();
    assert_eq!(
        reply["error"], "Too many groups: a connection may be in at most 1000 groups.",
        "{reply:.200}"
    );
}

#[tokio::test]
async fn a_call_asking_for_too_many_effects_fails_whole_in_both_isolation_modes() {
    let in_worker =
        Host::start_with(&["fixture-testkit"], &["--max-effects-per-call", "100"]).unwrap();
    let in_process = Host::start_with_config(
        &["fixture-testkit"],
        "[plugins.testkit]\nisolation = \"none\"\nlibrary = \"libfixture_testkit.so\"\n",
        &["--max-effects-per-call", "100"],
    )
    .unwrap();
    for host in [&in_worker, &in_process] {
        let mut c = host.connect().await.unwrap();
        let mut sender = host.connect().await.unwrap();
        // 100 joins and the reply: one effect too many.
        let reply = c
            .request(r#"{"id":1,"type":"join","data":{"group":"g","times":100}}"#)
            .await
            .unwrap();
        assert_eq!(
            reply["error"],
            "Internal error: the handler for 'join' asked for more than 100 effects.",
            "{reply}"
        );
        let send = json!({"id": 2, "type": "group-send",
            "data": {"group": "g", "message": "hello"}})
        .to_string();
        sender.request(&send).await.unwrap();
        c.expect_silence(Duration::from_millis(300)).await.unwrap();
        // Within the limit it is carried out.
        let reply = c
            .request(r#"{"id":3,"type":"join","data":{"group":"g","times":99}}"#)
            .await
            .unwrap();
        assert_eq!(reply["type"], "join", "{reply}");
        sender.request(&send).await.unwrap();
        let message = c.recv_json(T).await.unwrap();
        assert_eq!(message["data"]["payload"], "hello", "{message}");
        host.wait_for_log(
            &["more effects than max_effects_per_call", "effects=101"],
            T,
        )
        .await
        .unwrap();
    }
}
