//! Plugins in worker processes (the default isolation): every native fault
//! of a plugin ends only its worker. The host lives, other connections are
//! answered, calls in flight get exactly one reply, and the plugin serves
//! again from a new worker; the counters say what happened.

use std::os::unix::fs::PermissionsExt;
use std::{collections::HashSet, time::Duration};

use futures_util::future::join_all;
use rohrpost_tests::{connect_many, get, install, Client, Host, TempDir};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(10);

const CRASHED: &str = "Internal error: the plugin 'faults' crashed.";

/// The `/api/plugins` entry of the plugin `name`.
async fn plugin_entry(host: &Host, name: &str) -> Value {
    let (status, body) = get(&host.addr, "/api/plugins").await.unwrap();
    assert_eq!(status, 200, "{body}");
    let page: Value = serde_json::from_str(&body).unwrap();
    page["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .cloned()
        .unwrap_or(Value::Null)
}

/// Waits until the `/api/plugins` entry of `name` satisfies `done`.
async fn wait_for_entry(host: &Host, name: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + T;
    loop {
        let entry = plugin_entry(host, name).await;
        if done(&entry) {
            return entry;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name} never got there: {entry}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The process id the faults plugin runs in, asked until it answers.
async fn worker_pid(c: &mut Client) -> u64 {
    let deadline = std::time::Instant::now() + T;
    loop {
        let reply = c.request(r#"{"id":"p","type":"pid"}"#).await.unwrap();
        if let Some(pid) = reply["data"]["pid"].as_u64() {
            return pid;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the faults plugin does not serve again: {reply}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every bystander pings at once and gets its pong.
async fn bystanders_answered(bystanders: &mut [Client], round: u64) {
    let pings = bystanders
        .iter_mut()
        .enumerate()
        .map(|(i, c)| c.ping_ok(round * 100 + i as u64));
    for result in join_all(pings).await {
        result.unwrap();
    }
}

/// The metric line's value for `name{plugin="<plugin>"}`.
async fn metric(host: &Host, name: &str, plugin: &str) -> f64 {
    let (_, text) = get(&host.addr, "/metrics").await.unwrap();
    let prefix = format!("{name}{{plugin=\"{plugin}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn plugins_run_in_a_worker_process_by_default() {
    let host = Host::start(&["fixture-faults"]).unwrap();
    let mut c = host.connect().await.unwrap();
    let pid = worker_pid(&mut c).await;
    assert_ne!(pid, u64::from(host.pid()));
    let entry = plugin_entry(&host, "faults").await;
    assert_eq!(entry["isolation"], "process", "{entry}");
    assert_eq!(entry["worker"]["pid"], pid, "{entry}");
    assert_eq!(entry["worker"]["state"], "running", "{entry}");
}

#[tokio::test]
async fn isolation_none_runs_the_plugin_in_the_server() {
    let host = Host::start_with_config(
        &["fixture-faults"],
        "[plugins.faults]\nisolation = \"none\"\nlibrary = \"libfixture_faults.so\"\n",
        &[],
    )
    .unwrap();
    let mut c = host.connect().await.unwrap();
    assert_eq!(worker_pid(&mut c).await, u64::from(host.pid()));
    assert!(mapped_libraries(&host, "faults") > 0);
    let entry = plugin_entry(&host, "faults").await;
    assert_eq!(entry["isolation"], "none", "{entry}");
    assert!(entry.get("worker").is_none(), "{entry}");
}

#[tokio::test]
async fn every_fault_ends_only_the_plugins_worker() {
    let mut host = Host::start(&["ping", "fixture-faults"]).unwrap();
    let mut bystanders = connect_many(&host, 20).await.unwrap();
    let mut c = host.connect().await.unwrap();
    let mut pid = worker_pid(&mut c).await;
    let faults = [
        "segfault",
        "segfault-inline",
        "abort",
        "stack-overflow",
        "stack-overflow-inline",
        "exit",
    ];
    for (n, fault) in faults.iter().enumerate() {
        let request = json!({"id": n, "type": fault}).to_string();
        let (reply, ()) = tokio::join!(
            c.request(&request),
            bystanders_answered(&mut bystanders, n as u64)
        );
        assert_eq!(
            reply.unwrap(),
            json!({"id": n, "type": fault, "error": CRASHED}),
            "{fault}"
        );
        let next = worker_pid(&mut c).await;
        assert_ne!(next, pid, "{fault}: a new worker serves");
        pid = next;
        bystanders_answered(&mut bystanders, 50 + n as u64).await;
        assert!(host.is_running(), "{fault} took the host down");
        let crashes = n as u64 + 1;
        let entry = plugin_entry(&host, "faults").await;
        assert_eq!(entry["crashes"], crashes, "{fault}: {entry}");
        assert_eq!(entry["restarts"], crashes, "{fault}: {entry}");
        assert_eq!(entry["status"], "loaded", "{entry}");
    }
    let line = host
        .wait_for_log(&["plugin worker crashed", "exit code 3"], T)
        .await
        .unwrap();
    assert!(line.contains("faults") && line.contains("1.0.0"), "{line}");
    assert!(line.contains("exit"), "{line}");
    host.wait_for_log(
        &[
            "plugin worker crashed",
            "SIGSEGV",
            "types=[\"segfault-inline\"]",
        ],
        T,
    )
    .await
    .unwrap();
    host.wait_for_log(&["plugin worker crashed", "SIGABRT"], T)
        .await
        .unwrap();
    assert_eq!(
        metric(&host, "rohrpost_plugin_worker_crashes_total", "faults").await,
        faults.len() as f64
    );
    assert_eq!(
        metric(&host, "rohrpost_plugin_worker_restarts_total", "faults").await,
        faults.len() as f64
    );
    // The ping plugin's own worker never noticed.
    let ping = plugin_entry(&host, "ping").await;
    assert_eq!(ping["crashes"], 0, "{ping}");
    for c in &mut bystanders {
        c.expect_silence(Duration::from_millis(10)).await.unwrap();
    }
}

#[tokio::test]
async fn a_panic_whose_payload_panics_on_drop_harms_nobody() {
    let mut host = Host::start(&["ping", "fixture-faults"]).unwrap();
    let mut bystanders = connect_many(&host, 20).await.unwrap();
    let mut c = host.connect().await.unwrap();
    let request = r#"{"id":1,"type":"panic-drop"}"#;
    let (reply, ()) = tokio::join!(c.request(request), bystanders_answered(&mut bystanders, 0));
    let reply = reply.unwrap();
    assert_eq!(reply["id"], 1);
    assert_eq!(reply["type"], "panic-drop");
    let error = reply["error"].as_str().unwrap_or_default().to_owned();
    assert!(
        error == CRASHED || error == "Internal error: the handler for 'panic-drop' panicked.",
        "{reply}"
    );
    worker_pid(&mut c).await;
    bystanders_answered(&mut bystanders, 1).await;
    assert!(host.is_running());
}

#[tokio::test]
async fn a_thread_that_crashes_after_its_handler_returned_is_a_crash_too() {
    let mut host = Host::start(&["ping", "fixture-faults"]).unwrap();
    let mut bystanders = connect_many(&host, 20).await.unwrap();
    let mut c = host.connect().await.unwrap();
    let before = worker_pid(&mut c).await;
    assert_eq!(
        c.request(r#"{"id":1,"type":"late-segfault"}"#)
            .await
            .unwrap(),
        json!({"id":1,"type":"late-segfault"})
    );
    bystanders_answered(&mut bystanders, 0).await;
    wait_for_entry(&host, "faults", |e| e["crashes"] == 1 && e["restarts"] == 1).await;
    let after = worker_pid(&mut c).await;
    assert_ne!(after, before);
    bystanders_answered(&mut bystanders, 1).await;
    assert!(host.is_running());
}

#[tokio::test]
async fn a_crash_amid_100_concurrent_calls_answers_each_exactly_once() {
    let host = Host::start(&["fixture-faults"]).unwrap();
    let mut callers = connect_many(&host, 100).await.unwrap();
    let mut crasher = host.connect().await.unwrap();
    worker_pid(&mut crasher).await;
    for (i, c) in callers.iter_mut().enumerate() {
        c.send_text(&json!({"id": i, "type": "sleep", "data": {"ms": 600}}).to_string())
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        crasher
            .request(r#"{"id":"x","type":"segfault"}"#)
            .await
            .unwrap()["error"],
        CRASHED
    );
    let replies = join_all(callers.iter_mut().map(|c| c.recv_json(T))).await;
    let mut crashed = 0;
    let mut ids = HashSet::new();
    for (i, reply) in replies.into_iter().enumerate() {
        let reply = reply.unwrap();
        assert_eq!(reply["type"], "sleep", "{reply}");
        // Its own call's reply.
        assert_eq!(reply["id"], i, "{reply}");
        assert!(ids.insert(reply["id"].as_u64().unwrap()), "{reply}");
        match reply["error"].as_str() {
            Some(CRASHED) => crashed += 1,
            Some(other) => panic!("unexpected error {other}"),
            None => assert_eq!(reply["data"]["slept_ms"], 600, "{reply}"),
        }
    }
    assert_eq!(ids.len(), 100);
    assert!(crashed > 0, "the crash hit no call in flight");
    // Nothing more: not a second reply to anyone.
    tokio::time::sleep(Duration::from_millis(800)).await;
    for c in &mut callers {
        c.expect_silence(Duration::from_millis(10)).await.unwrap();
    }
    worker_pid(&mut crasher).await;
}

#[tokio::test]
async fn a_call_past_the_timeout_gets_its_worker_replaced() {
    let mut host =
        Host::start_with(&["ping", "fixture-faults"], &["--handler-timeout", "1s"]).unwrap();
    let mut bystanders = connect_many(&host, 20).await.unwrap();
    let mut c = host.connect().await.unwrap();
    let mut pid = worker_pid(&mut c).await;
    for (n, kind) in ["hang", "hang-inline"].iter().enumerate() {
        let request = json!({"id": n, "type": kind}).to_string();
        let (reply, ()) = tokio::join!(
            c.request(&request),
            bystanders_answered(&mut bystanders, n as u64)
        );
        assert_eq!(
            reply.unwrap(),
            json!({"id": n, "type": kind,
                "error": format!("The handler for '{kind}' did not finish within 1000 ms.")})
        );
        let next = worker_pid(&mut c).await;
        assert_ne!(next, pid, "{kind}: a new worker serves");
        pid = next;
        let entry = plugin_entry(&host, "faults").await;
        assert_eq!(entry["worker"]["kills"], n as u64 + 1, "{entry}");
        assert_eq!(entry["crashes"], 0, "{entry}");
        assert_eq!(entry["timeouts"], n as u64 + 1, "{entry}");
    }
    host.wait_for_log(&["plugin worker killed", "faults", "SIGKILL"], T)
        .await
        .unwrap();
    assert!(host.is_running());
}

#[tokio::test]
async fn a_plugin_whose_workers_crash_before_any_call_is_marked_failed() {
    let dir = TempDir::new("marker");
    // Reachable by the worker, which a server started as root runs as
    // `nobody`.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let marker = dir.path().join("crash-soon");
    let marker_text = marker.to_string_lossy().into_owned();
    let host = Host::start_with_env(
        &["ping", "fixture-faults"],
        &[],
        &[("FAULTS_CRASH_SOON", marker_text.as_str())],
    )
    .unwrap();
    let mut c = host.connect().await.unwrap();
    worker_pid(&mut c).await;
    std::fs::write(&marker, "").unwrap();
    // This worker crashes for the call; the next ones on their own.
    assert_eq!(
        c.request(r#"{"id":1,"type":"segfault"}"#).await.unwrap()["error"],
        CRASHED
    );
    let entry = wait_for_entry(&host, "faults", |e| e["status"] == "failed").await;
    let reason = entry["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("before its first call") && reason.contains("SIGSEGV"),
        "{entry}"
    );
    assert_eq!(entry["crashes"], 4, "{entry}");
    assert_eq!(
        c.request(r#"{"id":2,"type":"pid"}"#).await.unwrap()["error"],
        "Internal error: the plugin 'faults' is out of service."
    );
    c.ping_ok(3).await.unwrap();
}

#[tokio::test]
async fn a_plugin_that_crashes_at_every_start_is_marked_failed() {
    let dir = TempDir::new("marker");
    // Reachable by the worker, which a server started as root runs as
    // `nobody`.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let marker = dir.path().join("crash-at-start");
    let marker_text = marker.to_string_lossy().into_owned();
    let host = Host::start_with_env(
        &["ping", "fixture-faults"],
        &[],
        &[("FAULTS_CRASH_AT_START", marker_text.as_str())],
    )
    .unwrap();
    let mut c = host.connect().await.unwrap();
    worker_pid(&mut c).await;
    std::fs::write(&marker, "").unwrap();
    assert_eq!(
        c.request(r#"{"id":1,"type":"segfault"}"#).await.unwrap()["error"],
        CRASHED
    );
    let entry = wait_for_entry(&host, "faults", |e| e["status"] == "failed").await;
    let reason = entry["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("SIGSEGV"), "{entry}");
    assert_eq!(entry["worker"]["state"], "failed", "{entry}");
    assert_eq!(
        c.request(r#"{"id":2,"type":"pid"}"#).await.unwrap(),
        json!({"id":2,"type":"pid","error":"Internal error: the plugin 'faults' is out of service."})
    );
    host.wait_for_log(&["fails at every start", "faults"], T)
        .await
        .unwrap();
    c.ping_ok(3).await.unwrap();
}

#[tokio::test]
async fn a_library_whose_constructor_crashes_is_rejected_and_the_host_lives() {
    let mut host = Host::start(&["ping", "fixture-bad-init"]).unwrap();
    let mut c = host.connect().await.unwrap();
    c.ping_ok(1).await.unwrap();
    let (_, body) = get(&host.addr, "/api/plugins").await.unwrap();
    let page: Value = serde_json::from_str(&body).unwrap();
    let rejected = page["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["status"] == "rejected")
        .cloned()
        .unwrap_or(Value::Null);
    let reason = rejected["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("crashed while loading") && reason.contains("SIGSEGV"),
        "{page}"
    );
    // Also when it arrives while the host serves.
    let built = rohrpost_tests::build();
    install(
        &built.plugin("fixture-bad-init"),
        host.plugins.path(),
        "late.so",
    );
    host.wait_for_log(&["plugin rejected", "late.so", "crashed while loading"], T)
        .await
        .unwrap();
    c.ping_ok(2).await.unwrap();
    assert!(host.is_running());
}

#[tokio::test]
async fn a_replaced_version_gets_a_new_worker_and_the_old_one_exits() {
    let host = Host::start(&["fixture-echo-v1"]).unwrap();
    let mut c = host.connect().await.unwrap();
    assert_eq!(
        c.request(r#"{"id":1,"type":"echo"}"#).await.unwrap()["data"]["version"],
        "1.0.0"
    );
    let old = host.children();
    assert_eq!(old.len(), 1, "one worker: {old:?}");
    // A call running on the old version while it is replaced.
    let mut slow = host.connect().await.unwrap();
    slow.send_text(r#"{"id":"s","type":"slow-echo","data":{"ms":800}}"#)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let built = rohrpost_tests::build();
    install(
        &built.plugin("fixture-echo-v2"),
        host.plugins.path(),
        &rohrpost_tests::library_file_name("fixture-echo-v1"),
    );
    host.wait_for_log(&["plugin replaced", "2.0.0"], T)
        .await
        .unwrap();
    assert_eq!(
        c.request(r#"{"id":2,"type":"echo"}"#).await.unwrap()["data"]["version"],
        "2.0.0"
    );
    // The old worker finishes its call, then exits.
    assert_eq!(
        slow.recv_json(T).await.unwrap(),
        json!({"id":"s","type":"slow-echo","data":{"version":"1.0.0"}})
    );
    let deadline = std::time::Instant::now() + T;
    loop {
        let now = host.children();
        if now.len() == 1 && now.is_disjoint(&old) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "old {old:?}, now {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let entry = plugin_entry(&host, "echo").await;
    assert_eq!(entry["retired_versions"], 0, "{entry}");
}

#[tokio::test]
async fn the_live_stream_tells_of_crashes_and_restarts() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = Host::start(&["fixture-faults"]).unwrap();
    let mut stream = tokio::net::TcpStream::connect(&host.addr).await.unwrap();
    let request = format!("GET /api/events HTTP/1.1\r\nHost: {}\r\n\r\n", host.addr);
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    // The snapshot first: subscribed.
    while !seen.contains("event: snapshot") {
        let n = tokio::time::timeout(T, stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "{seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let mut c = host.connect().await.unwrap();
    assert_eq!(
        c.request(r#"{"id":1,"type":"abort"}"#).await.unwrap()["error"],
        CRASHED
    );
    while !(seen.contains("event: crashed") && seen.contains("event: restarted")) {
        let n = tokio::time::timeout(T, stream.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no crash and restart in {seen}"))
            .unwrap();
        assert!(n > 0, "{seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let crashed = seen
        .lines()
        .skip_while(|l| *l != "event: crashed")
        .nth(1)
        .unwrap_or_default();
    assert!(
        crashed.contains("SIGABRT") && crashed.contains(r#""types":["abort"]"#),
        "{crashed}"
    );
}

#[tokio::test]
async fn a_worker_does_not_see_the_servers_settings() {
    let host = Host::start_with_env(
        &["fixture-faults"],
        &[],
        &[
            ("ROHRPOST_NOTIFY_TOKEN", "the-servers-secret"),
            ("FAULTS_GREETING", "hello"),
        ],
    )
    .unwrap();
    let mut c = host.connect().await.unwrap();
    let ask = |name: &str| json!({"id": name, "type": "env", "data": {"name": name}}).to_string();
    assert_eq!(
        c.request(&ask("ROHRPOST_NOTIFY_TOKEN")).await.unwrap()["data"]["value"],
        Value::Null
    );
    assert_eq!(
        c.request(&ask("FAULTS_GREETING")).await.unwrap()["data"]["value"],
        "hello"
    );
}

#[tokio::test]
async fn a_stuck_call_does_not_take_the_other_calls_on_its_worker_with_it() {
    let host = Host::start_with(&["fixture-faults"], &["--handler-timeout", "2s"]).unwrap();
    let mut stuck = host.connect().await.unwrap();
    let mut c = host.connect().await.unwrap();
    let before = worker_pid(&mut c).await;
    stuck
        .send_text(r#"{"id":"h","type":"hang"}"#)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // Calls that start on the same worker and finish after the stuck one's
    // timeout.
    let mut sleepers = connect_many(&host, 5).await.unwrap();
    for (i, s) in sleepers.iter_mut().enumerate() {
        s.send_text(&json!({"id": i, "type": "sleep", "data": {"ms": 1500}}).to_string())
            .await
            .unwrap();
    }
    assert_eq!(
        stuck.recv_json(T).await.unwrap(),
        json!({"id":"h","type":"hang","error":"The handler for 'hang' did not finish within 2000 ms."})
    );
    // A new worker serves at once...
    let after = worker_pid(&mut c).await;
    assert_ne!(after, before);
    // ...while the old one finishes the calls it had.
    for (i, s) in sleepers.iter_mut().enumerate() {
        assert_eq!(
            s.recv_json(T).await.unwrap(),
            json!({"id": i, "type": "sleep", "data": {"slept_ms": 1500}})
        );
    }
    // Then it is killed.
    host.wait_for_log(&["plugin worker killed", "SIGKILL", "calls_lost=0"], T)
        .await
        .unwrap();
    let entry = plugin_entry(&host, "faults").await;
    assert_eq!(
        (&entry["crashes"], &entry["worker"]["kills"]),
        (&json!(0), &json!(1)),
        "{entry}"
    );
    assert!(!host.children().contains(&(before as u32)));
}

#[tokio::test]
async fn an_allocation_beyond_the_workers_memory_limit_ends_only_the_worker() {
    let mut host = Host::start_with(
        &["ping", "fixture-faults"],
        &["--worker-memory-limit", "2G", "--worker-open-files", "256"],
    )
    .unwrap();
    let mut bystanders = connect_many(&host, 20).await.unwrap();
    let mut c = host.connect().await.unwrap();
    let before = worker_pid(&mut c).await;
    assert_eq!(
        c.request(r#"{"id":0,"type":"open-files"}"#).await.unwrap()["data"]["soft"],
        256
    );
    // Within the limit, fine.
    assert_eq!(
        c.request(r#"{"id":1,"type":"alloc","data":{"mb":64}}"#)
            .await
            .unwrap(),
        json!({"id":1,"type":"alloc","data":{"mb":64}})
    );
    let request = r#"{"id":2,"type":"alloc","data":{"mb":4096}}"#;
    let (reply, ()) = tokio::join!(c.request(request), bystanders_answered(&mut bystanders, 0));
    assert_eq!(
        reply.unwrap(),
        json!({"id":2,"type":"alloc","error":CRASHED})
    );
    assert_ne!(worker_pid(&mut c).await, before);
    bystanders_answered(&mut bystanders, 1).await;
    host.wait_for_log(&["plugin worker crashed", "SIGABRT", "alloc"], T)
        .await
        .unwrap();
    assert!(host.is_running());
    // The server itself has no such limit.
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", host.pid())).unwrap();
    let address_space = limits
        .lines()
        .find(|l| l.starts_with("Max address space"))
        .unwrap_or_default();
    assert!(address_space.contains("unlimited"), "{address_space}");
}

/// The resident memory of the host's workers together, in KiB.
fn workers_rss_kib(host: &Host) -> u64 {
    host.children()
        .iter()
        .filter_map(|pid| rohrpost_harness::status_kib(*pid, "VmRSS").ok())
        .sum()
}

/// How many of the server's own mappings are of a plugin library whose
/// file name contains `name`.
fn mapped_libraries(host: &Host, name: &str) -> usize {
    std::fs::read_to_string(format!("/proc/{}/maps", host.pid()))
        .unwrap()
        .lines()
        .filter(|l| l.contains(name))
        .count()
}

/// Clients that ask all along, one request in flight each, alternating the
/// inline `echo` and a pooled `slow-echo` of 30 ms; each request must get
/// exactly one reply, without error, from either version. Each client's
/// task returns how many replies it got.
fn keep_asking(
    clients: Vec<Client>,
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<tokio::task::JoinHandle<u64>> {
    clients
        .into_iter()
        .enumerate()
        .map(|(k, mut c)| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    n += 1;
                    let id = k as u64 * 1_000_000 + n;
                    let request = if n.is_multiple_of(2) {
                        json!({"id": id, "type": "echo"})
                    } else {
                        json!({"id": id, "type": "slow-echo", "data": {"ms": 30}})
                    };
                    let reply = c.request(&request.to_string()).await.unwrap();
                    assert_eq!(reply["id"], id, "{reply}");
                    assert_eq!(reply["type"], request["type"], "{reply}");
                    assert!(reply["error"].is_null(), "{reply}");
                    let version = reply["data"]["version"].as_str().unwrap_or_default();
                    assert!(version == "1.0.0" || version == "2.0.0", "{reply}");
                }
                // Not a second reply to anything.
                c.expect_silence(Duration::from_millis(200)).await.unwrap();
                n
            })
        })
        .collect()
}

#[tokio::test]
async fn reloads_under_load_lose_no_reply_and_give_the_old_workers_memory_back() {
    let host = Host::start(&["fixture-echo-v1"]).unwrap();
    let mut clients = connect_many(&host, 10).await.unwrap();
    for c in &mut clients {
        assert_eq!(
            c.request(r#"{"id":0,"type":"echo"}"#).await.unwrap()["data"]["version"],
            "1.0.0"
        );
    }
    let first = host.children();
    assert_eq!(first.len(), 1, "one worker: {first:?}");
    let before = workers_rss_kib(&host);
    assert!(before > 0);
    let name = rohrpost_tests::library_file_name("fixture-echo-v1");
    let built = rohrpost_tests::build();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = keep_asking(clients, &stop);
    // Every worker seen, and the most memory the workers held together.
    let mut seen = first.clone();
    let mut peak = before;
    let replaced = || {
        host.log()
            .iter()
            .filter(|l| l.contains("plugin replaced"))
            .count()
    };
    for round in 0..6 {
        let (crate_name, version) = if round % 2 == 0 {
            ("fixture-echo-v2", "2.0.0")
        } else {
            ("fixture-echo-v1", "1.0.0")
        };
        let before_round = replaced();
        install(&built.plugin(crate_name), host.plugins.path(), &name);
        let deadline = std::time::Instant::now() + T;
        while replaced() == before_round {
            assert!(
                std::time::Instant::now() < deadline,
                "no reload to {version}"
            );
            seen.extend(host.children());
            peak = peak.max(workers_rss_kib(&host));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for _ in 0..20 {
            seen.extend(host.children());
            peak = peak.max(workers_rss_kib(&host));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut answered = 0;
    for client in join_all(load).await {
        let n = client.unwrap();
        assert!(n > 10, "{n}");
        answered += n;
    }
    assert_eq!(replaced(), 6);
    // One worker is left, none of the earlier ones, and the old ones'
    // memory went with them.
    let deadline = std::time::Instant::now() + T;
    while host.children().len() != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            host.children()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let last = host.children();
    assert!(last.is_disjoint(&first), "{first:?} {last:?}");
    assert!(seen.len() >= 7, "a worker per version: {seen:?}");
    let after = workers_rss_kib(&host);
    assert!(
        after < before * 3 / 2 + 1024,
        "workers' RSS {before} KiB before 6 reloads under load ({answered} replies), \
         {peak} KiB at most during them, {after} KiB after"
    );
    // Nor does the server itself hold any version: it never mapped one.
    assert_eq!(mapped_libraries(&host, "echo"), 0);
}

#[tokio::test]
async fn a_stuck_inline_call_in_the_servers_process_is_noticed_while_it_runs() {
    let host = Host::start_with_config(
        &["ping", "fixture-testkit"],
        "[plugins.testkit]\nisolation = \"none\"\nlibrary = \"libfixture_testkit.so\"\n",
        &[],
    )
    .unwrap();
    let mut c = host.connect().await.unwrap();
    c.send_text(r#"{"id":1,"type":"nap-inline","data":{"ms":3000}}"#)
        .await
        .unwrap();
    // Logged while the call still runs.
    let line = host
        .wait_for_log(&["inline handler call is still running"], T)
        .await
        .unwrap();
    assert!(
        line.contains("testkit") && line.contains("nap-inline"),
        "{line}"
    );
    // Not ready meanwhile (unless it returned already).
    let (status, body) = get(&host.addr, "/readyz").await.unwrap();
    if !host.log().iter().any(|l| l.contains("ready again")) {
        assert_eq!(status, 503, "{body}");
    }
    assert_eq!(
        c.recv_json(T).await.unwrap(),
        json!({"id":1,"type":"nap-inline"})
    );
    host.wait_for_log(&["no inline handler call is stuck any more"], T)
        .await
        .unwrap();
    assert_eq!(get(&host.addr, "/readyz").await.unwrap().0, 200);
    c.ping_ok(2).await.unwrap();
}

/// A server with the faults and ping plugins in its own process and two
/// runtime threads, 20 bystanders, and one connection whose inline call
/// never returns: the health check, every bystander and a new connection
/// are answered all the same, and `/readyz` says why the server is not
/// ready.
async fn serves_around_an_inline_call_that_never_returns() {
    let mut host = Host::start_with_config(
        &["ping", "fixture-faults"],
        "[plugins.faults]\nisolation = \"none\"\nlibrary = \"libfixture_faults.so\"\n\n[plugins.ping]\nisolation = \"none\"\n",
        &["--workers", "2"],
    )
    .unwrap();
    let mut bystanders = connect_many(&host, 20).await.unwrap();
    bystanders_answered(&mut bystanders, 0).await;
    let mut stuck = host.connect().await.unwrap();
    stuck
        .send_text(r#"{"id":"h","type":"hang-inline"}"#)
        .await
        .unwrap();
    // The call is on its thread (it blocks it from now on).
    let line = host
        .wait_for_log(&["inline handler call is still running"], T)
        .await
        .unwrap();
    assert!(
        line.contains("faults") && line.contains("hang-inline"),
        "{line}"
    );
    let (status, body) = tokio::time::timeout(T, get(&host.addr, "/healthz"))
        .await
        .expect("the health check is answered")
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let (status, body) = tokio::time::timeout(T, get(&host.addr, "/readyz"))
        .await
        .expect("the readiness check is answered")
        .unwrap();
    assert_eq!(status, 503, "{body}");
    tokio::time::timeout(T, bystanders_answered(&mut bystanders, 1))
        .await
        .expect("every bystander is answered");
    let mut newcomer = tokio::time::timeout(T, host.connect())
        .await
        .expect("a new handshake is answered")
        .unwrap();
    newcomer.ping_ok(1).await.unwrap();
    assert!(host.is_running());
}

#[tokio::test]
async fn an_inline_call_that_never_returns_in_the_servers_process_stops_no_one_else() {
    // It used to hang the whole server in 18 of 20 runs; a few runs make a
    // return of that visible.
    for _ in 0..3 {
        serves_around_an_inline_call_that_never_returns().await;
    }
}

#[tokio::test]
async fn a_worker_that_floods_questions_without_reading_answers_is_ended() {
    let host = Host::start(&["ping", "fixture-faults"]).unwrap();
    let mut c = host.connect().await.unwrap();
    let first = worker_pid(&mut c).await;
    let mut bystander = host.connect().await.unwrap();
    let before = host.memory("VmRSS").unwrap();
    c.send_text(r#"{"id":1,"type":"ask-flood","data":{"count":200000,"ms":20000}}"#)
        .await
        .unwrap();
    // Ended long before its sleep is over: the call gets the crash reply.
    let reply = c.recv_json(T).await.unwrap();
    assert_eq!(reply["error"], CRASHED, "{reply}");
    // Too many questions at once, or too many answers left unread: which
    // comes first depends on how fast the answers are made.
    let line = host
        .wait_for_log(&["killed for breaking the channel", "more than"], T)
        .await
        .unwrap();
    assert!(
        line.contains("faults")
            && (line.contains("questions at once") || line.contains("answers not read")),
        "{line}"
    );
    bystander.ping_ok(2).await.unwrap();
    assert_ne!(worker_pid(&mut c).await, first, "a new worker serves");
    let grown = host.memory("VmRSS").unwrap().saturating_sub(before);
    assert!(grown < 64 << 20, "the server grew by {grown} bytes");
}

#[tokio::test]
async fn what_a_plugin_forked_ends_with_its_worker() {
    // Without the sandbox (which forbids `exec` and has a PID namespace
    // of its own, see the `sandbox` tests), the worker's process group
    // goes with it.
    let host = Host::start_with(&["fixture-faults"], &["--sandbox", "off"]).unwrap();
    let mut c = host.connect().await.unwrap();
    let first = worker_pid(&mut c).await;
    let reply = c
        .request(r#"{"id":1,"type":"fork","data":{"count":5}}"#)
        .await
        .unwrap();
    let pids = rohrpost_tests::forked_pids(&reply);
    assert_eq!(pids.len(), 5, "{reply}");
    let alive = |pid: &u32| std::path::Path::new(&format!("/proc/{pid}")).exists();
    assert!(pids.iter().all(alive), "{pids:?}");
    let reply = c.request(r#"{"id":2,"type":"segfault"}"#).await.unwrap();
    assert_eq!(reply["error"], CRASHED, "{reply}");
    assert_ne!(worker_pid(&mut c).await, first);
    // Gone, or at most a zombie until its parent (init) reaps it.
    rohrpost_tests::wait_until_ended(&pids, T).await;
}

#[tokio::test]
async fn isolation_none_is_granted_to_one_file_not_to_the_name_a_library_reports() {
    // Configured `none` for its name, but in a file the table does not
    // grant it to (`libdup_ping.so` by default): a worker.
    let host = Host::start_with_config(
        &["fixture-dup-ping"],
        "[plugins.dup-ping]\nisolation = \"none\"\n",
        &[],
    )
    .unwrap();
    host.wait_for_log(&["granted to another file", "plugin=dup-ping"], T)
        .await
        .unwrap();
    let entry = wait_for_entry(&host, "dup-ping", |e| e["status"] == "loaded").await;
    assert_eq!(entry["isolation"], "process", "{entry}");
    // The file the table names runs in the server's process.
    let host = Host::start_with_config(
        &["fixture-dup-ping"],
        "[plugins.dup-ping]\nisolation = \"none\"\nlibrary = \"libfixture_dup_ping.so\"\n",
        &[],
    )
    .unwrap();
    let entry = wait_for_entry(&host, "dup-ping", |e| e["status"] == "loaded").await;
    assert_eq!(entry["isolation"], "none", "{entry}");
}
