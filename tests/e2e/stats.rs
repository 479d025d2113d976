//! `GET /api/stats` and `GET /api/stats/groups` against a real host: after
//! real requests over WebSockets the totals and the per-second samples add
//! up to what was sent, each plugin's calls and crashes are its own, the
//! groups are listed with their sizes and found by name, and the endpoints
//! ask for the operator token when one is set.

use std::time::{Duration, Instant};

use rohrpost_tests::{get, Client, Host};
use serde_json::{json, Value};

/// How long the sampler may take to show what happened.
const T: Duration = Duration::from_secs(20);

/// Replies seen, by whether they carry an error.
#[derive(Default)]
struct Tally {
    ok: u64,
    error: u64,
}

impl Tally {
    /// Sends `request` and counts its reply.
    async fn request(&mut self, client: &mut Client, request: Value) -> Value {
        let reply = client.request(&request.to_string()).await.unwrap();
        if reply.get("error").is_some() {
            self.error += 1;
        } else {
            self.ok += 1;
        }
        reply
    }
}

async fn get_json(host: &Host, path: &str) -> (u16, Value) {
    let (status, body) = get(&host.addr, path).await.unwrap();
    let value = serde_json::from_str(&body).unwrap_or(Value::Null);
    (status, value)
}

/// `GET /api/stats` until `done` accepts it.
async fn wait_for_stats(host: &Host, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + T;
    loop {
        let (status, value) = get_json(host, "/api/stats").await;
        assert_eq!(status, 200, "{value}");
        if done(&value) {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "the stats never got there: {value}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The numbers of a series (nulls left out).
fn numbers(series: &Value) -> Vec<f64> {
    series
        .as_array()
        .unwrap_or_else(|| panic!("not a series: {series}"))
        .iter()
        .filter_map(Value::as_f64)
        .collect()
}

/// What the per-second rates of `series` add up to: each rate times the
/// seconds its sample covers.
fn counted(series: &Value, seconds: &Value) -> f64 {
    let rates = series.as_array().unwrap();
    let seconds = seconds.as_array().unwrap();
    assert_eq!(rates.len(), seconds.len());
    rates
        .iter()
        .zip(seconds)
        .map(|(rate, s)| rate.as_f64().unwrap_or(0.0) * s.as_f64().unwrap())
        .sum()
}

fn plugin<'a>(stats: &'a Value, name: &str) -> &'a Value {
    stats["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no plugin {name}: {stats}"))
}

fn groups(answer: &Value) -> Vec<(String, u64)> {
    answer
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {answer}"))
        .iter()
        .map(|g| {
            (
                g["name"].as_str().unwrap().to_owned(),
                g["members"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 0.01
}

#[tokio::test]
async fn the_stats_add_up_to_the_requests_sent_and_list_the_groups() {
    let host = Host::start(&["ping", "fixture-testkit"]).unwrap();
    let mut tally = Tally::default();
    let mut pingers = Vec::new();
    for _ in 0..3 {
        pingers.push(host.connect().await.unwrap());
    }
    let mut pings = 0;
    for (n, client) in pingers.iter_mut().enumerate() {
        for i in 0..40 {
            let reply = tally
                .request(client, json!({"id": i, "type": "ping"}))
                .await;
            assert_eq!(reply, json!({"id": i, "type": "pong"}), "client {n}");
            pings += 1;
        }
    }
    // Failures count as errors: a handler error, an unknown type.
    let mut other = host.connect().await.unwrap();
    for i in 0..4 {
        tally
            .request(&mut other, json!({"id": i, "type": "fail"}))
            .await;
    }
    for i in 0..3 {
        tally
            .request(&mut other, json!({"id": i, "type": "no-such-type"}))
            .await;
    }

    // Groups: room-big 4 members, room-small 2, lobby 1.
    let mut members = Vec::new();
    for (group, size) in [("room-big", 4), ("room-small", 2), ("lobby", 1)] {
        for _ in 0..size {
            let mut member = host.connect().await.unwrap();
            let reply = tally
                .request(
                    &mut member,
                    json!({"id": "j", "type": "join", "data": {"group": group}}),
                )
                .await;
            assert!(reply.get("error").is_none(), "{reply}");
            members.push(member);
        }
    }
    for i in 0..10 {
        let reply = tally
            .request(
                &mut other,
                json!({"id": i, "type": "group-send", "data": {"group": "room-big", "message": i}}),
            )
            .await;
        assert!(reply.get("error").is_none(), "{reply}");
    }
    for member in members.iter_mut().take(4) {
        for _ in 0..10 {
            let message = member.recv_json(T).await.unwrap();
            assert_eq!(message["type"], "group-message", "{message}");
        }
    }
    assert_eq!(tally.error, 7);
    let open = (pingers.len() + 1 + members.len()) as i64;

    // Once a sample after the load is in, the samples add up to the totals
    // and the totals to the replies.
    let stats = wait_for_stats(&host, |s| {
        s["totals"]["ok"] == tally.ok
            && s["totals"]["error"] == tally.error
            && close(
                counted(&s["series"]["ok"], &s["series"]["seconds"]),
                tally.ok as f64,
            )
            && close(
                counted(&s["series"]["error"], &s["series"]["seconds"]),
                tally.error as f64,
            )
            && close(
                counted(&s["series"]["group_messages"], &s["series"]["seconds"]),
                40.0,
            )
            && s["series"]["connections"]
                .as_array()
                .and_then(|c| c.last())
                .and_then(Value::as_i64)
                == Some(open)
    })
    .await;
    assert_eq!(stats["interval_seconds"], 1.0);
    assert_eq!(stats["capacity"], 300);
    assert_eq!(stats["connections"], open);
    assert_eq!(stats["totals"]["group_messages"], 40);
    let series = &stats["series"];
    let length = series["at"].as_array().unwrap().len();
    assert!((1..=300).contains(&length), "{series}");
    for key in [
        "seconds",
        "ok",
        "error",
        "p50",
        "p99",
        "connections",
        "group_messages",
        "groups",
    ] {
        assert_eq!(series[key].as_array().unwrap().len(), length, "{key}");
    }
    let at = numbers(&series["at"]);
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{at:?}");
    assert_eq!(numbers(&series["groups"]).last(), Some(&3.0));
    // Percentiles where there were calls, in order, in seconds.
    let p50 = numbers(&series["p50"]);
    let p99 = numbers(&series["p99"]);
    assert!(!p50.is_empty() && p50.len() == p99.len(), "{series}");
    for (p50, p99) in p50.iter().zip(&p99) {
        assert!(0.0 < *p50 && p50 <= p99 && *p99 < 5.0, "{p50} {p99}");
    }

    // Each plugin: its own calls, its worker's crashes and restarts.
    let ping = plugin(&stats, "ping");
    assert_eq!(ping["calls"], pings, "{ping}");
    assert_eq!(ping["isolation"], "process", "{ping}");
    assert_eq!(
        (ping["crashes"].as_u64(), ping["restarts"].as_u64()),
        (Some(0), Some(0))
    );
    let calls = counted(&ping["series"]["calls_per_second"], &series["seconds"]);
    assert!(close(calls, pings as f64), "{calls} {ping}");
    let (p50, p99) = (ping["p50"].as_f64().unwrap(), ping["p99"].as_f64().unwrap());
    assert!(0.0 < p50 && p50 <= p99, "{ping}");
    let testkit = plugin(&stats, "testkit");
    assert_eq!(testkit["calls"], 4 + 7 + 10, "{testkit}");

    // The largest groups, with this host's members.
    assert_eq!(stats["groups"]["count"], 3);
    assert_eq!(
        groups(&stats["groups"]["largest"]),
        [
            ("room-big".to_owned(), 4),
            ("room-small".to_owned(), 2),
            ("lobby".to_owned(), 1)
        ]
    );

    // Search by name, ASCII case-insensitive, bounded by the limit.
    let (status, found) = get_json(&host, "/api/stats/groups?search=ROOM").await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(
        (found["count"].as_u64(), found["matched"].as_u64()),
        (Some(3), Some(2))
    );
    assert_eq!(
        groups(&found["groups"]),
        [("room-big".to_owned(), 4), ("room-small".to_owned(), 2)]
    );
    let (_, found) = get_json(&host, "/api/stats/groups?search=room-s&limit=1").await;
    assert_eq!(groups(&found["groups"]), [("room-small".to_owned(), 2)]);
    let (_, found) = get_json(&host, "/api/stats/groups?search=room&limit=1").await;
    assert_eq!(found["matched"], 2);
    assert_eq!(groups(&found["groups"]), [("room-big".to_owned(), 4)]);
    let (_, found) = get_json(&host, "/api/stats/groups?search=nobody").await;
    assert_eq!(
        (found["matched"].as_u64(), groups(&found["groups"])),
        (Some(0), vec![])
    );
    let (_, found) = get_json(&host, "/api/stats/groups").await;
    assert_eq!(found["matched"], 3);
    for bad in [
        "limit=0",
        "limit=1000",
        "colour=red",
        "search=%zz",
        "search=a&search=b",
    ] {
        let (status, answer) = get_json(&host, &format!("/api/stats/groups?{bad}")).await;
        assert_eq!(status, 400, "{bad}: {answer}");
        assert!(answer["error"].is_string(), "{bad}: {answer}");
    }

    // A member leaves (its connection closes): the size follows.
    drop(members.remove(0));
    wait_for_stats(&host, |s| {
        groups(&s["groups"]["largest"]).first() == Some(&("room-big".to_owned(), 3))
    })
    .await;
}

#[tokio::test]
async fn a_plugins_worker_crash_and_restart_are_in_its_stats() {
    let host = Host::start(&["ping", "fixture-faults"]).unwrap();
    let mut c = host.connect().await.unwrap();
    let reply = c.request(r#"{"id":1,"type":"abort"}"#).await.unwrap();
    assert!(
        reply["error"].as_str().unwrap().contains("crashed"),
        "{reply}"
    );
    let stats = wait_for_stats(&host, |s| {
        plugin(s, "faults")["restarts"] == 1 && s["totals"]["error"] == 1
    })
    .await;
    let faults = plugin(&stats, "faults");
    assert_eq!(faults["crashes"], 1, "{faults}");
    assert_eq!(faults["calls"], 1, "{faults}");
    assert_eq!(faults["status"], "loaded", "{faults}");
    assert_eq!(plugin(&stats, "ping")["crashes"], 0);
}

/// A raw GET with extra headers: the status.
async fn status_with(addr: &str, path: &str, authorization: Option<&str>) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = authorization.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    String::from_utf8_lossy(&response)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn with_an_admin_token_the_stats_ask_for_it() {
    let host = Host::start_with(&["ping"], &["--admin-token", "op-token"]).unwrap();
    // "admin:op-token".
    let basic = "Basic YWRtaW46b3AtdG9rZW4=";
    for path in ["/api/stats", "/api/stats/groups?search=a"] {
        assert_eq!(status_with(&host.addr, path, None).await, 401, "{path}");
        for wrong in ["Bearer nope", "Basic YWRtaW46d3Jvbmc="] {
            assert_eq!(
                status_with(&host.addr, path, Some(wrong)).await,
                401,
                "{path}"
            );
        }
        for right in ["Bearer op-token", basic] {
            assert_eq!(
                status_with(&host.addr, path, Some(right)).await,
                200,
                "{path}"
            );
        }
    }
}
