//! Requests that cost the server far more than they cost the client: group
//! names of any size and content, `{pk}` templates that expand to
//! gigabytes, one large ping that used to move ping off the connection
//! task for good, a member that never reads while large group messages
//! pile up, and the live events stream.

use std::time::{Duration, Instant};

use rohrpost_tests::{Host, Received, TempDir};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(10);
const TOKEN: &str = "s3cret-token";

/// Sends a notification to an explicit group; the status and the answer.
async fn notify_group(host: &Host, group: &str) -> (u16, Value) {
    let body = json!({"model": "M", "pk": 1, "event": "update", "group": group}).to_string();
    host.notify(Some(TOKEN), &body).await.unwrap()
}

#[tokio::test]
async fn notify_refuses_invalid_group_names_and_huge_templates() {
    let mut host =
        Host::start_with(&["ping", "fixture-testkit"], &["--notify-token", TOKEN]).unwrap();
    let mut member = host.connect().await.unwrap();
    member.join("fine-1").await.unwrap();

    let long = "x".repeat(100_000);
    for bad in ["../..", "a\nb", "a\0b", "a b", "", long.as_str()] {
        let (status, reply) = notify_group(&host, bad).await;
        assert_eq!(status, 400, "{bad:.40?}: {reply}");
        let error = reply["error"].as_str().unwrap();
        assert!(
            error.contains("'group'") || error.contains("group name"),
            "{error}"
        );
        assert!(
            error.len() < 300,
            "the error repeats the name: {error:.300}"
        );
    }
    let (status, reply) = notify_group(&host, &"y".repeat(99)).await;
    assert_eq!(status, 200, "{reply}");

    // `{pk}` 100,000 times with a 500 KB pk: 50 GB once expanded.
    let body = json!({
        "model": "M", "pk": "p".repeat(500_000), "event": "update",
        "group": "{pk}".repeat(100_000),
    })
    .to_string();
    assert!(body.len() > 900_000 && body.len() < 1 << 20);
    let (status, reply) = host.notify(Some(TOKEN), &body).await.unwrap();
    assert_eq!(status, 400, "{reply}");
    assert!(
        reply["error"].as_str().unwrap().contains("bytes long"),
        "{reply}"
    );
    // A template that expands just past the limit is refused too.
    let body = json!({"model": "M", "pk": "p".repeat(50), "event": "update",
        "group": "{pk}-{pk}"})
    .to_string();
    assert_eq!(host.notify(Some(TOKEN), &body).await.unwrap().0, 400);

    assert!(host.is_running());
    let peak = host.memory("VmHWM").unwrap();
    assert!(peak < 256 << 20, "peak RSS {peak} bytes");
    member
        .expect_silence(Duration::from_millis(200))
        .await
        .unwrap();
    let (status, reply) = notify_group(&host, "fine-1").await;
    assert_eq!((status, reply["delivered"].as_u64()), (200, Some(1)));
    assert_eq!(
        member.recv_json(T).await.unwrap()["type"],
        "subscription-update"
    );
}

#[tokio::test]
async fn a_handler_using_an_invalid_group_name_gets_an_error_and_changes_nothing() {
    let host = Host::start_with(&["fixture-testkit"], &["--notify-token", TOKEN]).unwrap();
    let mut c = host.connect().await.unwrap();

    let reply = c
        .request(r#"{"id":1,"type":"join-all","data":{"groups":["good-1","../..","good-2"]}}"#)
        .await
        .unwrap();
    let error = reply["error"].as_str().unwrap_or_else(|| panic!("{reply}"));
    assert!(error.contains("Invalid group name"), "{error}");
    assert!(error.contains(r#""../..""#), "{error}");
    assert_eq!(reply["id"], 1);
    // None of the call's effects were carried out.
    assert_eq!(notify_group(&host, "good-1").await.1["delivered"], 0);
    host.wait_for_log(&["invalid group name", "type=join-all"], T)
        .await
        .unwrap();

    let long = "z".repeat(100_000);
    for bad in ["a\nb", "a\0b", long.as_str(), ""] {
        let request = json!({"id": 2, "type": "group-send", "data": {"group": bad}});
        let reply = c.request(&request.to_string()).await.unwrap();
        let error = reply["error"].as_str().unwrap_or_else(|| panic!("{reply}"));
        assert!(error.contains("group name"), "{error}");
        assert!(error.len() < 300, "{error:.300}");
    }
    c.join("good-3").await.unwrap();
    assert_eq!(notify_group(&host, "good-3").await.1["delivered"], 1);
}

#[tokio::test]
async fn relaxed_group_names_allow_more_but_not_everything() {
    let host = Host::start_with(
        &["fixture-testkit"],
        &["--notify-token", TOKEN, "--group-names", "relaxed"],
    )
    .unwrap();
    let mut c = host.connect().await.unwrap();
    c.join("room:één/1").await.unwrap();
    let (status, reply) = notify_group(&host, "room:één/1").await;
    assert_eq!((status, reply["delivered"].as_u64()), (200, Some(1)));
    assert_eq!(c.recv_json(T).await.unwrap()["data"]["group"], "room:één/1");
    assert_eq!(notify_group(&host, "a b").await.0, 400);
    assert_eq!(notify_group(&host, &"x".repeat(1025)).await.0, 400);
    let reply = c
        .request(r#"{"id":1,"type":"join","data":{"group":"a\tb"}}"#)
        .await
        .unwrap();
    assert!(reply["error"].as_str().is_some(), "{reply}");
}

/// The `mode` of the handler serving `kind`, from `/api/plugins`.
async fn mode(host: &Host, kind: &str) -> String {
    let (status, body) = rohrpost_tests::get(&host.addr, "/api/plugins")
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let list: Value = serde_json::from_str(&body).unwrap();
    list["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["handlers"].as_array())
        .flatten()
        .find(|h| h["types"].as_array().unwrap().iter().any(|t| t == kind))
        .and_then(|h| h["mode"].as_str())
        .unwrap_or_else(|| panic!("no handler for {kind} in {body}"))
        .to_owned()
}

#[tokio::test]
async fn one_huge_ping_leaves_ping_inline() {
    let host = Host::start(&["ping"]).unwrap();
    let mut c = host.connect().await.unwrap();
    c.ping_ok(1).await.unwrap();
    assert_eq!(mode(&host, "ping").await, "inline");
    let big = format!(
        r#"{{"id":2,"type":"ping","data":"{}"}}"#,
        "x".repeat(900_000)
    );
    let reply = c.request(&big).await.unwrap();
    assert_eq!(reply["data"]["data"].as_str().map(str::len), Some(900_000));
    for i in 3..10 {
        c.ping_ok(i).await.unwrap();
    }
    assert_eq!(mode(&host, "ping").await, "inline");
    assert!(
        !host
            .log()
            .iter()
            .any(|l| l.contains("running it on the worker pool")),
        "ping was demoted"
    );
}

#[tokio::test]
async fn slow_calls_on_large_frames_do_not_demote_a_handler() {
    let host = Host::start(&["fixture-testkit"]).unwrap();
    let mut c = host.connect().await.unwrap();
    // Slow each time, but each frame is over 64 KiB: any client can send
    // those, so they are not judged.
    let padding = "p".repeat(100 * 1024);
    for i in 0..6 {
        let nap = json!({"id": i, "type": "nap-inline", "data": {"ms": 60}, "padding": padding});
        assert_eq!(
            c.request(&nap.to_string()).await.unwrap(),
            json!({"id": i, "type": "nap-inline"})
        );
    }
    assert_eq!(mode(&host, "nap-inline").await, "inline");
}

#[tokio::test]
async fn a_message_of_too_many_arrays_and_objects_is_refused_before_any_handler() {
    let host = Host::start(&["ping"]).unwrap();
    let mut c = host.connect().await.unwrap();
    // 300,000 arrays: over 100 MB for a handler that reads `data` to build.
    let many = format!(
        r#"{{"id":1,"type":"ping","data":[{}0]}}"#,
        "[[0]],".repeat(150_000)
    );
    assert!(many.len() < 1 << 20);
    for _ in 0..3 {
        assert_eq!(
            c.request(&many).await.unwrap(),
            json!({"error": "Message too complex: more than 10000 arrays and objects."})
        );
    }
    // Up to the bound, the same shape is served.
    let fits = format!(
        r#"{{"id":2,"type":"ping","data":[{}0]}}"#,
        "[0],".repeat(9_000)
    );
    assert_eq!(c.request(&fits).await.unwrap()["id"], 2);
    c.ping_ok(3).await.unwrap();
    let peak = host.memory("VmHWM").unwrap();
    assert!(peak < 64 << 20, "peak memory {peak} bytes");
}

#[tokio::test]
async fn a_slow_inline_handler_is_demoted_after_a_few_calls_and_promoted_when_fast() {
    let host = Host::start(&["fixture-testkit"]).unwrap();
    let mut c = host.connect().await.unwrap();
    let nap =
        |id: u32, ms: u64| json!({"id": id, "type": "nap-inline", "data": {"ms": ms}}).to_string();
    // One slow call is not enough.
    c.request(&nap(0, 50)).await.unwrap();
    assert_eq!(mode(&host, "nap-inline").await, "inline");
    for i in 1..3 {
        assert_eq!(
            c.request(&nap(i, 50)).await.unwrap(),
            json!({"id": i, "type": "nap-inline"})
        );
    }
    // A reply the worker's reader wrote itself is counted and judged when
    // the connection's task next runs: the log line says when.
    host.wait_for_log(&["running it on the worker pool", "type=nap-inline"], T)
        .await
        .unwrap();
    assert_eq!(mode(&host, "nap-inline").await, "demoted");
    // Fast again, on the pool, for long enough: back inline.
    for i in 3..70 {
        assert_eq!(
            c.request(&nap(i, 0)).await.unwrap(),
            json!({"id": i, "type": "nap-inline"})
        );
    }
    assert_eq!(mode(&host, "nap-inline").await, "inline");
    host.wait_for_log(&["fast again", "type=nap-inline"], T)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_member_that_never_reads_cannot_hold_the_servers_memory() {
    let mut host =
        Host::start_with(&["ping", "fixture-testkit"], &["--notify-token", TOKEN]).unwrap();
    let mut sleeper = host.connect().await.unwrap();
    sleeper.join("big").await.unwrap();
    // From here on the sleeper reads nothing.
    let blob = "b".repeat(900_000);
    let mut reached = Vec::new();
    for pk in 0..200 {
        let body = json!({"model": "Big", "pk": pk, "event": "update", "group": "big",
            "object": {"blob": blob}})
        .to_string();
        let (status, reply) = host.notify(Some(TOKEN), &body).await.unwrap();
        assert_eq!(status, 200, "{reply}");
        reached.push(reply["delivered"].as_u64().unwrap());
    }
    // 180 MB were sent to it; a few MB were queued before it was dropped.
    let queued = reached.iter().filter(|&&n| n == 1).count();
    assert!(
        queued < 50,
        "{queued} messages queued for a member that never reads"
    );
    assert_eq!(reached.last(), Some(&0));
    let rss = host.memory("VmRSS").unwrap();
    assert!(rss < 120 << 20, "RSS {rss} bytes");
    assert!(host.is_running());

    // The sleeper finds its messages, then the end.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match sleeper.recv(T).await {
            Ok(Received::Text(_)) => assert!(Instant::now() < deadline),
            Ok(end) => {
                assert!(
                    matches!(end, Received::Close(Some(1013)) | Received::Gone),
                    "{end:?}"
                );
                break;
            }
            Err(e) => panic!("the sleeper's connection was not ended: {e}"),
        }
    }
    let mut reader = host.connect().await.unwrap();
    reader.join("big").await.unwrap();
    let (status, reply) = notify_group(&host, "big").await;
    assert_eq!((status, reply["delivered"].as_u64()), (200, Some(1)));
    assert_eq!(
        reader.recv_json(T).await.unwrap()["type"],
        "subscription-update"
    );
}

/// A GET with extra headers: the status, the response head and the body.
async fn get_with(addr: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{extra}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_owned(), body.to_owned())
}

/// An `/api/events` subscription: its status, and the stream when it was
/// accepted.
async fn subscribe(addr: &str, headers: &[(&str, &str)]) -> (u16, tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let request = format!("GET /api/events HTTP/1.1\r\nHost: {addr}\r\n{extra}\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(T, stream.read(&mut byte))
            .await
            .expect("no response head")
            .unwrap();
        assert_eq!(n, 1, "closed before the end of the head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, stream)
}

/// What an events stream carries until it has been quiet for `quiet`.
async fn read_events(stream: &mut tokio::net::TcpStream, quiet: Duration) -> String {
    use tokio::io::AsyncReadExt;
    let mut text = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(Ok(n)) = tokio::time::timeout(quiet, stream.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        text.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&text).into_owned()
}

#[tokio::test]
async fn the_events_stream_takes_16_subscribers_and_coalesces_connection_counts() {
    let host = Host::start(&["ping"]).unwrap();
    let mut streams = Vec::new();
    for _ in 0..16 {
        let (status, stream) = subscribe(&host.addr, &[]).await;
        assert_eq!(status, 200);
        streams.push(stream);
    }
    let (status, _) = subscribe(&host.addr, &[]).await;
    assert_eq!(status, 503);
    for stream in &mut streams {
        assert!(read_events(stream, Duration::from_millis(300))
            .await
            .contains("event: snapshot"));
    }

    // 100 connects and closes: a handful of count events, the last one right.
    let mut clients = Vec::new();
    for _ in 0..100 {
        clients.push(host.connect().await.unwrap());
    }
    clients.truncate(10);
    let events = read_events(&mut streams[0], Duration::from_secs(2)).await;
    let counts: Vec<&str> = events
        .lines()
        .filter(|l| l.starts_with("data: {\"event\":\"connections\""))
        .collect();
    assert!(
        !counts.is_empty() && counts.len() < 30,
        "{} count events: {events}",
        counts.len()
    );
    assert!(counts.last().unwrap().contains("\"open\":10"), "{events}");

    // A subscriber that leaves frees its place.
    streams.truncate(15);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, stream) = subscribe(&host.addr, &[]).await;
        if status == 200 {
            streams.push(stream);
            break;
        }
        assert_eq!(status, 503);
        assert!(Instant::now() < deadline, "the place was not freed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    clients[0].ping_ok(1).await.unwrap();
}

#[tokio::test]
async fn with_an_admin_token_the_operator_endpoints_ask_for_it() {
    const ADMIN: &str = "op-token";
    let host = Host::start_with(
        &["ping", "fixture-testkit"],
        &["--admin-token", ADMIN, "--notify-token", TOKEN],
    )
    .unwrap();
    let bearer = format!("Bearer {ADMIN}");
    // "admin:op-token" and "admin:wrong".
    let basic = "Basic YWRtaW46b3AtdG9rZW4=";
    let wrong_basic = "Basic YWRtaW46d3Jvbmc=";
    for path in ["/", "/status", "/api/plugins", "/metrics"] {
        let (status, head, _) = get_with(&host.addr, path, &[]).await;
        assert_eq!(status, 401, "{path}");
        assert!(
            head.contains(r#"www-authenticate: Basic realm="rohrpost""#),
            "{path}: {head}"
        );
        for wrong in ["Bearer nope", wrong_basic, "Bearer", TOKEN] {
            let (status, _, _) = get_with(&host.addr, path, &[("Authorization", wrong)]).await;
            assert_eq!(status, 401, "{path} with {wrong}");
        }
        for right in [bearer.as_str(), basic] {
            let (status, _, _) = get_with(&host.addr, path, &[("Authorization", right)]).await;
            assert_eq!(status, 200, "{path} with {right}");
        }
        // One header, one guess: the right token among wrong ones is refused.
        let several = [
            ("Authorization", "Bearer guess-1"),
            ("Authorization", bearer.as_str()),
        ];
        assert_eq!(get_with(&host.addr, path, &several).await.0, 401, "{path}");
    }
    assert_eq!(subscribe(&host.addr, &[]).await.0, 401);
    assert_eq!(
        subscribe(&host.addr, &[("Authorization", basic)]).await.0,
        200
    );
    for open in ["/healthz", "/readyz"] {
        assert_eq!(get_with(&host.addr, open, &[]).await.0, 200, "{open}");
    }
    // The notify endpoint keeps its own token; WebSockets need none.
    let (status, _) = notify_group(&host, "anyone").await;
    assert_eq!(status, 200);
    host.connect().await.unwrap().ping_ok(1).await.unwrap();
}

#[tokio::test]
async fn the_tokens_can_come_from_files_instead_and_not_from_both() {
    let dir = TempDir::new("tokens");
    let notify = dir.path().join("notify-token");
    std::fs::write(&notify, format!("{TOKEN}\n")).unwrap();
    let admin = dir.path().join("admin-token");
    std::fs::write(&admin, "op-from-a-file\nthe first line only\n").unwrap();
    let (notify, admin) = (notify.to_str().unwrap(), admin.to_str().unwrap());
    let host = Host::start_with(
        &["ping"],
        &["--notify-token-file", notify, "--admin-token-file", admin],
    )
    .unwrap();
    assert_eq!(notify_group(&host, "anyone").await.0, 200);
    let body = json!({"model": "M", "pk": 1, "event": "update"}).to_string();
    assert_eq!(host.notify(Some("wrong"), &body).await.unwrap().0, 401);
    let bearer = [("Authorization", "Bearer op-from-a-file")];
    assert_eq!(get_with(&host.addr, "/api/plugins", &bearer).await.0, 200);
    assert_eq!(get_with(&host.addr, "/api/plugins", &[]).await.0, 401);
    // A token and its file together: which one was meant? Neither starts.
    let both = std::process::Command::new(rohrpost_tests::build().host())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--notify-token",
            "x",
            "--notify-token-file",
            notify,
        ])
        .env_clear()
        .output()
        .unwrap();
    assert!(!both.status.success());
    let said = String::from_utf8_lossy(&both.stderr);
    assert!(
        said.contains("set notify_token or notify_token_file, not both"),
        "{said}"
    );
}

#[tokio::test]
async fn a_plugin_relaying_a_huge_template_gets_an_error_not_an_abort() {
    let mut host = Host::start(&["fixture-testkit"]).unwrap();
    let mut c = host.connect().await.unwrap();
    let request = json!({"id": 1, "type": "notify", "data": {
        "model": "M", "pk": "p".repeat(500_000), "event": "update",
        "group": "{pk}".repeat(100_000),
    }})
    .to_string();
    assert!(request.len() < 1 << 20);
    let reply = c.request(&request).await.unwrap();
    let error = reply["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{reply:.300}"));
    assert!(error.contains("bytes long"), "{error:.300}");
    assert!(host.is_running());
    assert!(host.memory("VmHWM").unwrap() < 256 << 20);
}
