//! Groups and change notifications: membership, fan-out, slow receivers.

use std::time::{Duration, Instant};

use rohrpost_tests::{connect_many, raise_fd_limit, Client, Host, Received};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(10);
const TOKEN: &str = "test-token";
const QUIET: Duration = Duration::from_millis(300);

fn host() -> Host {
    Host::start_with(&["ping", "fixture-testkit"], &["--notify-token", TOKEN]).unwrap()
}

/// Sends a notification to `group` (explicit group name) and returns how
/// many connections it reached.
async fn delivered(host: &Host, group: &str) -> u64 {
    let body = json!({"model": "Probe", "pk": 1, "event": "update", "group": group}).to_string();
    let (status, reply) = host.notify(Some(TOKEN), &body).await.unwrap();
    assert_eq!(status, 200, "{reply}");
    reply["delivered"].as_u64().unwrap()
}

/// Reads the next message and checks it is a `subscription-update`.
async fn update(c: &mut Client) -> Value {
    let m = c.recv_json(T).await.unwrap();
    assert_eq!(m["type"], "subscription-update", "{m}");
    m
}

#[tokio::test]
async fn handlers_join_leave_and_send_to_groups() {
    let host = host();
    let mut a = host.connect().await.unwrap();
    let mut b = host.connect().await.unwrap();
    let mut c = host.connect().await.unwrap();
    a.join("room").await.unwrap();
    b.join("room").await.unwrap();
    // Joining twice, even in one call, delivers once.
    a.request(r#"{"id":1,"type":"join","data":{"group":"room","times":2}}"#)
        .await
        .unwrap();

    let send = r#"{"id":2,"type":"group-send","data":{"group":"room","message":"hi"}}"#;
    assert_eq!(
        c.request(send).await.unwrap(),
        json!({"id":2,"type":"group-send"})
    );
    let to_a = a.recv_json(T).await.unwrap();
    let to_b = b.recv_json(T).await.unwrap();
    assert_eq!(to_a["type"], "group-message");
    assert_eq!(to_a["data"], json!({"payload": "hi"}));
    assert_eq!(to_a, to_b, "one message, one generated id for all members");
    assert!(to_a["id"].as_u64().is_some());
    a.expect_silence(QUIET).await.unwrap();
    b.expect_silence(QUIET).await.unwrap();
    c.expect_silence(QUIET).await.unwrap();

    // A member sending to its own group gets its copy too.
    b.send_text(send).await.unwrap();
    let mut got = [b.recv_json(T).await.unwrap(), b.recv_json(T).await.unwrap()];
    got.sort_by_key(|m| m["type"].as_str().map(str::to_owned));
    assert_eq!(got[0]["type"], "group-message");
    assert_eq!(got[1], json!({"id":2,"type":"group-send"}));
    a.recv_json(T).await.unwrap();

    // After leaving, nothing more arrives; leaving again is fine.
    for _ in 0..2 {
        let reply = b
            .request(r#"{"id":3,"type":"leave","data":{"group":"room"}}"#)
            .await
            .unwrap();
        assert_eq!(reply["type"], "leave");
    }
    c.request(send).await.unwrap();
    a.recv_json(T).await.unwrap();
    b.expect_silence(QUIET).await.unwrap();
    assert_eq!(delivered(&host, "room").await, 1);
}

#[tokio::test]
async fn membership_ends_however_the_connection_ends() {
    let host = host();
    // A client that closes with a close frame.
    let mut closing = host.connect().await.unwrap();
    closing.join("g-close").await.unwrap();
    // A client whose TCP connection just goes away.
    let mut dropped = host.connect().await.unwrap();
    dropped.join("g-drop").await.unwrap();
    dropped.join("g-drop-2").await.unwrap();
    // A connection the server closes (a handler asks for it).
    let mut closed_by_server = host.connect().await.unwrap();
    let reply = closed_by_server
        .request(r#"{"id":1,"type":"join-and-close","data":{"group":"g-server"}}"#)
        .await
        .unwrap();
    assert_eq!(reply["type"], "join-and-close");

    assert_eq!(delivered(&host, "g-close").await, 1);
    assert_eq!(delivered(&host, "g-drop").await, 1);
    closing.close_with(1000).await.unwrap();
    drop(dropped);

    let deadline = Instant::now() + T;
    for group in ["g-close", "g-drop", "g-drop-2", "g-server"] {
        while delivered(&host, group).await != 0 {
            assert!(Instant::now() < deadline, "{group} still has members");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn notification_bodies_follow_the_model_mixin_rules() {
    let host = host();
    let mut a = host.connect().await.unwrap();
    let mut b = host.connect().await.unwrap();
    for c in [&mut a, &mut b] {
        c.join("collection-52").await.unwrap();
        c.join("col-52-x").await.unwrap();
        c.join("fixed").await.unwrap();
    }

    // Default group: lower-cased model, a dash, the pk; object defaults to
    // {"id": pk}; one generated id for every receiver.
    let (status, reply) = host
        .notify(
            Some(TOKEN),
            r#"{"model":"Collection","pk":52,"event":"create"}"#,
        )
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(reply["group"], "collection-52");
    assert_eq!(reply["delivered"], 2);
    let (ma, mb) = (update(&mut a).await, update(&mut b).await);
    assert_eq!(ma, mb);
    assert_eq!(ma["id"], reply["id"]);
    assert_eq!(
        ma["data"],
        json!({"type":"create","group":"collection-52","object":{"id":52}})
    );

    // A {pk} template, and updated_fields added to the object.
    let body = r#"{"model":"Collection","pk":52,"event":"update","group":"col-{pk}-x",
        "object":{"id":52,"name":"n"},"updated_fields":["name"]}"#;
    let (_, reply) = host.notify(Some(TOKEN), body).await.unwrap();
    assert_eq!(reply["group"], "col-52-x");
    let m = update(&mut a).await;
    assert_eq!(
        m["data"],
        json!({"type":"update","group":"col-52-x","object":{"id":52,"name":"n","updated_fields":["name"]}})
    );
    update(&mut b).await;

    // An explicit group; updated_fields already in the object stays as it is.
    let body = r#"{"model":"Collection","pk":"k","event":"delete","group":"fixed",
        "object":{"updated_fields":"mine"},"updated_fields":["a"]}"#;
    host.notify(Some(TOKEN), body).await.unwrap();
    let m = update(&mut a).await;
    assert_eq!(
        m["data"],
        json!({"type":"delete","group":"fixed","object":{"updated_fields":"mine"}})
    );
    update(&mut b).await;

    // Plugins send the same notification through plugin-api.
    let mut c = host.connect().await.unwrap();
    let reply = c
        .request(r#"{"id":9,"type":"notify","data":{"model":"Collection","pk":52,"event":"update","updated_fields":["x"]}}"#)
        .await
        .unwrap();
    assert_eq!(reply, json!({"id":9,"type":"notify"}));
    let (ma, mb) = (update(&mut a).await, update(&mut b).await);
    assert_eq!(ma, mb);
    assert_eq!(
        ma["data"],
        json!({"type":"update","group":"collection-52","object":{"id":52,"updated_fields":["x"]}})
    );
    a.expect_silence(QUIET).await.unwrap();
}

#[tokio::test]
async fn bad_notification_requests_get_a_4xx_and_send_nothing() {
    let host = host();
    let mut a = host.connect().await.unwrap();
    a.join("collection-52").await.unwrap();
    let good = r#"{"model":"Collection","pk":52,"event":"create"}"#;
    let cases: &[(Option<&str>, &str, u16, &str)] = &[
        (None, good, 401, "bearer token"),
        (Some("wrong"), good, 401, "bearer token"),
        (Some(TOKEN), "{not json", 400, "not valid JSON"),
        (Some(TOKEN), r#"{"pk":52,"event":"create"}"#, 400, "model"),
        (
            Some(TOKEN),
            r#"{"model":"Collection","event":"create"}"#,
            400,
            "pk",
        ),
        (
            Some(TOKEN),
            r#"{"model":"Collection","pk":52}"#,
            400,
            "event",
        ),
        (
            Some(TOKEN),
            r#"{"model":"Collection","pk":52,"event":"saved"}"#,
            400,
            "saved",
        ),
        (
            Some(TOKEN),
            r#"{"model":"Collection","pk":52,"event":"create","x":1}"#,
            400,
            "x",
        ),
        (
            Some(TOKEN),
            r#"{"model":"Collection","pk":null,"event":"create"}"#,
            400,
            "pk",
        ),
        (Some(TOKEN), r#"[1]"#, 400, "Invalid notification"),
    ];
    for (token, body, status, mentions) in cases {
        let (got, reply) = host.notify(*token, body).await.unwrap();
        assert_eq!(got, *status, "{body}: {reply}");
        let error = reply["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{body}: {reply}"));
        assert!(error.contains(mentions), "{body}: {error}");
    }
    a.expect_silence(QUIET).await.unwrap();

    // Without a configured token the endpoint is off.
    let off = Host::start(&["ping"]).unwrap();
    let (status, reply) = off.notify(Some(TOKEN), good).await.unwrap();
    assert_eq!(status, 404);
    assert!(reply["error"].as_str().unwrap().contains("disabled"));
}

#[tokio::test]
async fn fan_out_reaches_1000_connections_exactly_once() {
    raise_fd_limit(2_500).unwrap();
    let host = host();
    let mut clients = connect_many(&host, 1000).await.unwrap();
    for c in clients.iter_mut() {
        c.send_text(r#"{"id":0,"type":"join","data":{"group":"big"}}"#)
            .await
            .unwrap();
    }
    for c in clients.iter_mut() {
        assert_eq!(c.recv_json(T).await.unwrap()["type"], "join");
    }
    for round in 1..=2u64 {
        let body =
            json!({"model": "Big", "pk": round, "event": "update", "group": "big"}).to_string();
        let (status, reply) = host.notify(Some(TOKEN), &body).await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(reply["delivered"], 1000);
        // Each client's next message is this round's: none missing, none twice.
        for c in clients.iter_mut() {
            let m = update(c).await;
            assert_eq!(m["id"], reply["id"]);
            assert_eq!(m["data"]["object"]["id"], round);
        }
    }
}

#[tokio::test]
async fn a_slow_receiver_does_not_delay_the_others_and_is_disconnected() {
    let host = Host::start_with(
        &["ping", "fixture-testkit"],
        &["--notify-token", TOKEN, "--outbound-queue", "16"],
    )
    .unwrap();
    let mut slow = host.connect().await.unwrap();
    slow.join("feed").await.unwrap();
    let mut fast = Vec::new();
    for _ in 0..3 {
        let mut c = host.connect().await.unwrap();
        c.join("feed").await.unwrap();
        fast.push(c);
    }
    // The slow client stops reading. Big messages fill its socket buffers,
    // then its queue.
    let filler = "x".repeat(64 * 1024);
    let rounds = 300u64;
    let readers: Vec<_> = fast
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                for n in 1..=rounds {
                    let m = c.recv_json(T).await.unwrap();
                    assert_eq!(m["data"]["object"]["n"], n, "in order, none missing");
                }
                c
            })
        })
        .collect();
    for n in 1..=rounds {
        let body = json!({"model": "Feed", "pk": 1, "event": "update", "group": "feed",
            "object": {"n": n, "filler": filler}})
        .to_string();
        let (status, _) = host.notify(Some(TOKEN), &body).await.unwrap();
        assert_eq!(status, 200);
    }
    let mut still_here = Vec::new();
    for reader in readers {
        let mut c = reader.await.unwrap();
        c.ping_ok(1).await.unwrap();
        still_here.push(c);
    }
    host.wait_for_log(&["outbound queue is full"], T)
        .await
        .unwrap();
    assert_eq!(
        delivered(&host, "feed").await,
        3,
        "the slow client left the group"
    );

    // What the slow client finds when it reads again: part of the feed, then
    // the end of the connection (a 1013 close, or a reset once the server
    // gave up on a socket nobody read).
    let mut got = 0u64;
    loop {
        match slow.recv(T).await {
            Ok(Received::Text(_)) => got += 1,
            Ok(Received::Close(code)) => {
                assert_eq!(code, Some(1013));
                break;
            }
            Ok(Received::Gone) => break,
            Err(e) => panic!("the slow client's connection was not ended: {e}"),
        }
    }
    assert!(got < rounds, "the slow client got all {got} messages");
}

/// A member that stops reading while big messages arrive: what the socket
/// takes is written straight to it, down to a frame cut in the middle when
/// its buffers fill, the rest waits in its queue. When it reads again,
/// every message is there, whole and in order.
#[tokio::test]
async fn a_paused_reader_gets_every_message_whole_and_in_order() {
    let host = host();
    let mut paused = host.connect().await.unwrap();
    paused.join("feed").await.unwrap();
    // 48 messages of 64 KiB: more than loopback buffers hold, less than the
    // default queue limits (1024 messages, 4 MiB).
    let filler = "y".repeat(64 * 1024);
    let rounds = 48u64;
    for n in 1..=rounds {
        let body = json!({"model": "Feed", "pk": 1, "event": "update", "group": "feed",
            "object": {"n": n, "filler": filler}})
        .to_string();
        let (status, reply) = host.notify(Some(TOKEN), &body).await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(reply["delivered"], 1, "{reply}");
    }
    for n in 1..=rounds {
        let m = update(&mut paused).await;
        assert_eq!(m["data"]["object"]["n"], n, "in order, none missing");
        assert_eq!(
            m["data"]["object"]["filler"].as_str().map(str::len),
            Some(filler.len())
        );
    }
    // And the connection's own replies still come through in one piece.
    paused.ping_ok(7).await.unwrap();
    paused.expect_silence(QUIET).await.unwrap();
}

/// Group messages written straight to a member's socket never cut into
/// what the connection writes itself: a client sending big pings and
/// reading slowly, so that the pongs leave in pieces, while notifications
/// stream to it, gets every reply and every message whole, each in order.
#[tokio::test]
async fn replies_and_group_messages_interleave_whole() {
    let host = host();
    let mut member = host.connect().await.unwrap();
    member.join("feed").await.unwrap();
    let rounds = 400u64;
    let notifications: Vec<String> = (1..=rounds)
        .map(|n| {
            json!({"model": "Feed", "pk": 1, "event": "update", "group": "feed",
                "object": {"n": n}})
            .to_string()
        })
        .collect();
    let pings = 60u64;
    let big = "p".repeat(256 * 1024);
    let sending = async {
        for body in &notifications {
            let (status, _) = host.notify(Some(TOKEN), body).await.unwrap();
            assert_eq!(status, 200);
        }
    };
    let talking = async {
        let (mut next_update, mut next_pong, mut sent) = (1u64, 1u64, 0u64);
        while next_update <= rounds || next_pong <= pings {
            while sent < pings && sent < next_pong + 4 {
                sent += 1;
                let ping = json!({"id": sent, "type": "ping", "data": {"big": big}});
                member.send_text(&ping.to_string()).await.unwrap();
            }
            let m = member.recv_json(T).await.unwrap();
            match m["type"].as_str() {
                Some("pong") => {
                    assert_eq!(m["id"], next_pong, "replies in request order");
                    assert_eq!(m["data"]["big"].as_str().map(str::len), Some(big.len()));
                    next_pong += 1;
                    // Slowly: the next pongs meet full socket buffers.
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Some("subscription-update") => {
                    assert_eq!(m["data"]["object"]["n"], next_update, "in order");
                    next_update += 1;
                }
                _ => panic!("unexpected message {m}"),
            }
        }
    };
    tokio::join!(sending, talking);
    member.expect_silence(QUIET).await.unwrap();
}
