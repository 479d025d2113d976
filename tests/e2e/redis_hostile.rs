//! Hostile or broken data in Redis (another service with write access, a
//! bug, another version of channels_redis): payloads that are malformed,
//! nested too deep or too large, injected with `redis-cli` on every
//! channel and key a host reads, are dropped and counted, and the host
//! goes on serving and delivering good messages.
//!
//! Each test starts a `redis-server` of its own on a free port.

use std::{
    io::Write,
    process::{Command, Stdio},
    time::Duration,
};

use rohrpost_tests::{
    metric_value,
    redis::{free_port, OwnRedis},
    Client, Host,
};
use serde_json::Value;

const T: Duration = Duration::from_secs(10);

/// `redis-cli` on `port` with `args`, the last one read from `stdin`
/// (`-x`) when given: its output.
fn cli(port: u16, args: &[&str], stdin: Option<&[u8]>) -> String {
    let mut command = Command::new("redis-cli");
    command.args(["-h", "127.0.0.1", "-p", &port.to_string()]);
    if stdin.is_some() {
        command.arg("-x");
    }
    let mut child = command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("redis-cli");
    if let Some(mut input) = child.stdin.take() {
        if let Some(bytes) = stdin {
            input.write_all(bytes).unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The hostile payloads of one format: (what, bytes).
fn hostile(good_prefix: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let mut deep = b"\x82\xa4type\xb0rohrpost.message\xa7message".to_vec();
    deep.extend(std::iter::repeat_n(0x91u8, 200_000));
    deep.push(0x01);
    let mut not_json = good_prefix.to_vec();
    not_json.extend_from_slice(b"not json at all");
    vec![
        ("garbage", b"\xc1\xff\x00garbage".to_vec()),
        ("deep msgpack", deep),
        ("huge map claim", b"\xdf\xff\xff\xff\xff".to_vec()),
        ("huge", vec![b'['; 9 << 20]),
        ("not json or bytes", not_json),
    ]
}

async fn expect_payload(client: &mut Client, payload: &str) {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let m: Value = client.recv_json(left).await.unwrap();
        assert_eq!(m["type"], "group-message", "only good messages arrive: {m}");
        if m["data"]["payload"] == payload {
            return;
        }
    }
}

async fn rejected(host: &Host) -> f64 {
    metric_value(&host.addr, "rohrpost_broker_rejected_total")
        .await
        .unwrap_or(0.0)
}

/// A host with a member in `room`, hostile payloads on the room's
/// channel, then a good message from another host.
async fn pubsub_case(scheme: &str, channel: &str, good_prefix: &[u8]) {
    let port = free_port();
    let _redis = OwnRedis::start(port).await;
    let url = format!("{scheme}://127.0.0.1:{port}/0");
    let args = ["--groups", &url, "--groups-prefix", "h:"];
    let a = Host::start_with(&["ping", "fixture-testkit"], &args).unwrap();
    let b = Host::start_with(&["ping", "fixture-testkit"], &args).unwrap();
    let mut member = a.connect().await.unwrap();
    member.join("room").await.unwrap();
    let cases = hostile(good_prefix);
    for (what, bytes) in &cases {
        let receivers = cli(port, &["PUBLISH", channel], Some(bytes));
        assert_eq!(receivers, "1", "{what}: one host subscribed");
    }
    let deadline = tokio::time::Instant::now() + T;
    while rejected(&a).await < cases.len() as f64 {
        assert!(tokio::time::Instant::now() < deadline, "not all rejected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    member.ping_ok(7).await.unwrap();
    let mut sender = b.connect().await.unwrap();
    let request = r#"{"id":1,"type":"group-send","data":{"group":"room","message":"still here"}}"#;
    sender.request(request).await.unwrap();
    expect_payload(&mut member, "still here").await;
    a.wait_for_log(&["dropped a payload from Redis"], T)
        .await
        .unwrap();
}

#[tokio::test]
async fn hostile_payloads_on_a_group_channel_are_dropped_and_counted() {
    pubsub_case("redis", "h:group:room", b"someone\n").await;
}

#[tokio::test]
async fn hostile_events_on_a_channels_pubsub_group_are_dropped_and_counted() {
    pubsub_case(
        "channels_redis_pubsub",
        "h:__group__room",
        // A message of bytes (a text goes to members as it is).
        b"\x82\xa4type\xb0rohrpost.message\xa7message\xc4\x0f",
    )
    .await;
}

/// Two hosts whose groups are in channels_redis's core layer on the Redis
/// at `port`, each with a member of `room`.
async fn two_core_hosts(port: u16) -> (Host, Host, Client, Client) {
    let url = format!("channels_redis://127.0.0.1:{port}/0");
    let args = ["--groups", &url];
    let a = Host::start_with(&["ping", "fixture-testkit"], &args).unwrap();
    let b = Host::start_with(&["ping", "fixture-testkit"], &args).unwrap();
    let mut member = a.connect().await.unwrap();
    member.join("room").await.unwrap();
    let mut other = b.connect().await.unwrap();
    other.join("room").await.unwrap();
    (a, b, member, other)
}

#[tokio::test]
async fn hostile_messages_in_the_core_inbox_are_dropped_and_counted() {
    let port = free_port();
    let _redis = OwnRedis::start(port).await;
    let (a, b, mut member, mut other) = two_core_hosts(port).await;
    let inboxes = inboxes(port, "room");
    assert_eq!(inboxes.len(), 2, "{inboxes:?}");
    let cases = hostile(b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00");
    for inbox in &inboxes {
        for (n, (_, bytes)) in cases.iter().enumerate() {
            cli(port, &["ZADD", inbox, &n.to_string()], Some(bytes));
        }
    }
    let deadline = tokio::time::Instant::now() + T;
    while rejected(&a).await < cases.len() as f64 || rejected(&b).await < cases.len() as f64 {
        assert!(tokio::time::Instant::now() < deadline, "not all rejected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let request = r#"{"id":1,"type":"group-send","data":{"group":"room","message":"still here"}}"#;
    let mut sender = b.connect().await.unwrap();
    sender.request(request).await.unwrap();
    expect_payload(&mut member, "still here").await;
    expect_payload(&mut other, "still here").await;
}

/// The inboxes of the hosts in `group`'s set: each is its channel's
/// process part, under the prefix.
fn inboxes(port: u16, group: &str) -> Vec<String> {
    let members = cli(
        port,
        &["ZRANGE", &format!("asgi:group:{group}"), "0", "-1"],
        None,
    );
    members
        .lines()
        .filter_map(|channel| {
            channel
                .find('!')
                .map(|bang| format!("asgi{}", &channel[..=bang]))
        })
        .collect()
}

/// The inbox of the only host in `group`'s set.
fn only_inbox(port: u16, group: &str) -> String {
    let inboxes = inboxes(port, group);
    assert_eq!(inboxes.len(), 1, "{inboxes:?}");
    inboxes.into_iter().next().unwrap_or_default()
}

/// `ZADD key 1 <size bytes of x>`, the member written a chunk at a time:
/// Redis's reply.
async fn zadd_generated(port: u16, key: &str, size: usize) -> String {
    command_generated(port, &["ZADD", key, "1"], size).await
}

/// The command `args` with a last argument of `size` bytes of `x`, that
/// argument written a chunk at a time: the first 4 bytes of Redis's reply
/// (`:1\r\n` when one was added).
async fn command_generated(port: u16, args: &[&str], size: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut head = format!("*{}\r\n", args.len() + 1);
    for arg in args {
        head.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    head.push_str(&format!("${size}\r\n"));
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b'x'; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len());
        stream.write_all(&chunk[..n]).await.unwrap();
        left -= n;
    }
    stream.write_all(b"\r\n").await.unwrap();
    let mut reply = [0u8; 4];
    tokio::time::timeout(T, stream.read_exact(&mut reply))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&reply).into_owned()
}

/// A member of 128 MB in a host's inbox (twice the peak memory the test
/// allows, 16 times what a message may be) is popped and thrown away as
/// it is read, never held: the
/// host's peak memory hardly moves, the member is counted and logged, and
/// the host goes on serving and receiving group messages.
#[tokio::test]
async fn a_huge_member_in_the_core_inbox_is_thrown_away_unread() {
    let port = free_port();
    let _redis = OwnRedis::start(port).await;
    let url = format!("channels_redis://127.0.0.1:{port}/0");
    let args = ["--groups", &url];
    let a = Host::start_with(&["ping", "fixture-testkit"], &args).unwrap();
    let b = Host::start_with(&["ping", "fixture-testkit"], &args).unwrap();
    let mut member = a.connect().await.unwrap();
    member.join("room").await.unwrap();
    let mut bystander = a.connect().await.unwrap();
    bystander.ping_ok(1).await.unwrap();
    let inbox = only_inbox(port, "room");
    let peak_before = a.memory("VmHWM").unwrap();
    // Redis itself is busy for a fraction of a second with a member this
    // large (it copies it in, and out into the reply; on a loaded machine
    // longer, which is why the member is no larger). When that passes
    // the host's deadline, the host drops its connections and Redis may
    // hand the member to the popping one it gave up, uncounted: then
    // another is sent.
    let mut counted = false;
    for _ in 0..5 {
        let rejected_before = rejected(&a).await;
        let lost_before = lost(&a);
        // Sent in chunks: a script that made it (`string.rep`) would keep
        // Redis busy for seconds.
        let added = zadd_generated(port, &inbox, 128 << 20).await;
        assert_eq!(added, ":1\r\n", "the member was added");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if rejected(&a).await > rejected_before {
                counted = true;
                break;
            }
            if lost(&a) > lost_before && cli(port, &["ZCARD", &inbox], None) == "0" {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the huge member was neither counted nor lost; log:\n{}",
                a.log().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if counted {
            break;
        }
    }
    assert!(
        counted,
        "Redis stalled past the deadline five times; log:\n{}",
        a.log().join("\n")
    );
    assert_eq!(cli(port, &["ZCARD", &inbox], None), "0", "popped and gone");
    let grown = a.memory("VmHWM").unwrap().saturating_sub(peak_before);
    assert!(
        grown < 64 << 20,
        "the host's peak memory grew by {} MB",
        grown >> 20
    );
    bystander.ping_ok(7).await.unwrap();
    // A group send from the other host: channels_redis's format, into
    // the same inbox.
    let mut sender = b.connect().await.unwrap();
    let request =
        r#"{"id":1,"type":"group-send","data":{"group":"room","message":"after the flood"}}"#;
    sender.request(request).await.unwrap();
    expect_payload(&mut member, "after the flood").await;
    let line = a
        .wait_for_log(&["dropped a payload from Redis", "134217728 bytes"], T)
        .await
        .unwrap();
    assert!(line.contains(&inbox), "{line}");
}

/// How often the host lost its connection to Redis so far.
fn lost(host: &Host) -> usize {
    host.log()
        .iter()
        .filter(|line| line.contains("lost the connection to Redis"))
        .count()
}

/// `count` members or fields added to `key` by `command` (`ZADD` with
/// `score`, or `HSET` with `value`), named `<name><n>`, by scripts of
/// 10 000 at a time (Redis stays responsive between them).
fn stuff(port: u16, command: &str, key: &str, name: &str, count: usize, other: &str) {
    let script = if command == "ZADD" {
        "for i = ARGV[1], ARGV[2] do redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4] .. i) end return 1"
    } else {
        "for i = ARGV[1], ARGV[2] do redis.call('HSET', KEYS[1], ARGV[4] .. i, ARGV[3]) end return 1"
    };
    let mut first = 0;
    while first < count {
        let last = (first + 10_000).min(count) - 1;
        let reply = cli(
            port,
            &[
                "EVAL",
                script,
                "1",
                key,
                &first.to_string(),
                &last.to_string(),
                other,
                name,
            ],
            None,
        );
        assert_eq!(reply, "1", "stuffing {key}");
        first = last + 1;
    }
}

/// A channels_redis group's set stuffed with 300 000 members and one of
/// 50 MB: a group send reads the first 50 000 of them inside Redis,
/// skipping the huge one, so the sending host's peak memory hardly moves;
/// what it left out is counted, and the other host's member still gets
/// the message.
#[tokio::test]
async fn a_stuffed_group_set_is_read_within_bounds() {
    let port = free_port();
    let _redis = OwnRedis::start(port).await;
    let (_a, b, mut member, mut other) = two_core_hosts(port).await;
    let key = "asgi:group:room";
    let members = cli(port, &["ZRANGE", key, "0", "-1"], None);
    assert_eq!(members.lines().count(), 2, "{members}");
    // Both hosts joined now; the flood joined later (scored in the
    // future), the huge member in between.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let huge = command_generated(port, &["ZADD", key, &(now + 500).to_string()], 50 << 20).await;
    assert_eq!(huge, ":1\r\n");
    stuff(
        port,
        "ZADD",
        key,
        "specific.flood!",
        300_000,
        &(now + 1000).to_string(),
    );
    assert_eq!(cli(port, &["ZCARD", key], None), "300003");
    let peak_before = b.memory("VmHWM").unwrap();
    let rejected_before = rejected(&b).await;
    let request =
        r#"{"id":1,"type":"group-send","data":{"group":"room","message":"past the flood"}}"#;
    let mut sender = b.connect().await.unwrap();
    sender.request(request).await.unwrap();
    expect_payload(&mut member, "past the flood").await;
    expect_payload(&mut other, "past the flood").await;
    // Read: the two hosts' channels and 49 997 of the flood; left out:
    // the huge member and the 250 003 past the first 50 000.
    let deadline = tokio::time::Instant::now() + T;
    while rejected(&b).await < rejected_before + 250_004.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "left out entries not counted: {}; log:\n{}",
            rejected(&b).await,
            b.log().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let line = b
        .wait_for_log(&["dropped a payload from Redis", "250004 entries"], T)
        .await
        .unwrap();
    assert!(line.contains(key), "{line}");
    let grown = b.memory("VmHWM").unwrap().saturating_sub(peak_before);
    assert!(
        grown < 64 << 20,
        "the host's peak memory grew by {} MB",
        grown >> 20
    );
    // The flood's process got the message once, naming its channels read.
    assert_eq!(cli(port, &["ZCARD", "asgispecific.flood!"], None), "1");
}

/// Waits until the presence hash of hosts `key` on `port` holds one entry.
async fn wait_for_own_presence(port: u16, key: &str) {
    let deadline = tokio::time::Instant::now() + T;
    while cli(port, &["HLEN", key], None) != "1" {
        assert!(tokio::time::Instant::now() < deadline, "no presence entry");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The hosts `host` lists in `/api/hosts`, once it answers with some (a
/// read that does not answer within its wait lists none), or none after
/// [`T`].
async fn listed_hosts(host: &Host) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let (status, body) = rohrpost_tests::get(&host.addr, "/api/hosts").await.unwrap();
        assert_eq!(status, 200, "{body}");
        let hosts: Value = serde_json::from_str(&body).unwrap();
        let hosts = hosts["hosts"].as_array().cloned().unwrap_or_default();
        if !hosts.is_empty() || tokio::time::Instant::now() > deadline {
            return hosts;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `/api/hosts` reads the presence hash of hosts within bounds: a value
/// of 50 MB is left in Redis (and never copied), and of a hash of
/// 200 000 fields only 1 024 are read; both are counted, the answer
/// still comes, and the host's peak memory hardly moves.
#[tokio::test]
async fn a_stuffed_presence_hash_is_read_within_bounds() {
    let port = free_port();
    let _redis = OwnRedis::start(port).await;
    let url = format!("redis://127.0.0.1:{port}/0");
    let a = Host::start_with(&["ping"], &["--groups", &url, "--groups-prefix", "h:"]).unwrap();
    let key = "h:group:rohrpost-presence:hosts";
    wait_for_own_presence(port, key).await;
    assert_eq!(listed_hosts(&a).await.len(), 1);
    let peak_before = a.memory("VmHWM").unwrap();
    let rejected_before = rejected(&a).await;
    let huge = command_generated(port, &["HSET", key, "huge"], 50 << 20).await;
    assert_eq!(huge, ":1\r\n");
    assert_eq!(
        listed_hosts(&a).await.len(),
        1,
        "the host itself is still listed"
    );
    let after_huge = rejected(&a).await;
    assert!(after_huge > rejected_before, "the huge value is counted");
    // Many fields: 1 024 of those Redis picks are read (the host's
    // own among them or not), the others counted.
    stuff(port, "HSET", key, "flood-", 200_000, "x");
    let (status, body) = rohrpost_tests::get(&a.addr, "/api/hosts").await.unwrap();
    assert_eq!(status, 200, "{body}");
    let deadline = tokio::time::Instant::now() + T;
    while rejected(&a).await < after_huge + 190_000.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the fields left out are not counted: {}",
            rejected(&a).await - after_huge
        );
        let _ = rohrpost_tests::get(&a.addr, "/api/hosts").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    a.wait_for_log(&["dropped a payload from Redis", key], T)
        .await
        .unwrap();
    let grown = a.memory("VmHWM").unwrap().saturating_sub(peak_before);
    assert!(
        grown < 64 << 20,
        "the host's peak memory grew by {} MB",
        grown >> 20
    );
}

/// On a Redis without `HRANDFIELD` (before 6.2; here the command is
/// renamed away) the presence hash is read by a scan: the host still
/// lists itself, and a value over its bound is left out and counted.
#[tokio::test]
async fn presence_is_read_on_a_redis_without_hrandfield() {
    let port = free_port();
    let port_text = port.to_string();
    let _redis = OwnRedis::start_with(
        port,
        &["--port", &port_text, "--rename-command", "HRANDFIELD", ""],
        || cli(port, &["PING"], None) == "PONG",
    )
    .await;
    let missing = cli(port, &["HRANDFIELD", "any", "1"], None);
    assert!(missing.contains("unknown command"), "{missing}");
    let url = format!("redis://127.0.0.1:{port}/0");
    let a = Host::start_with(&["ping"], &["--groups", &url, "--groups-prefix", "h:"]).unwrap();
    let key = "h:group:rohrpost-presence:hosts";
    wait_for_own_presence(port, key).await;
    let long_value = "x".repeat(1000);
    assert_eq!(cli(port, &["HSET", key, "long", &long_value], None), "1");
    let before = rejected(&a).await;
    let hosts = listed_hosts(&a).await;
    assert_eq!(hosts.len(), 1, "the host lists itself: {hosts:?}");
    assert!(rejected(&a).await > before, "the long value is counted");
    a.wait_for_log(&["dropped a payload from Redis", key], T)
        .await
        .unwrap();
}
