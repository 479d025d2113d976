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

/// With an open-files limit below the pending bound, silent sockets used
/// to hold every descriptor until their deadline: the pending bound never
/// evicted, `accept` failed, and `/healthz` waited behind them. Out of
/// descriptors, the host now closes the oldest idle connection instead.
#[tokio::test]
async fn out_of_file_descriptors_the_oldest_idle_connections_make_room() {
    rohrpost_tests::raise_fd_limit(2048).unwrap();
    // A deadline far beyond the test: only eviction can free a descriptor.
    let host = Host::start_with(&["ping"], &["--handshake-timeout", "60s"]).unwrap();
    let limit = libc::rlimit {
        rlim_cur: 300,
        rlim_max: 300,
    };
    // SAFETY: prlimit reads the struct it is given and writes nothing.
    let set = unsafe {
        libc::prlimit(
            host.pid() as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &limit,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(set, 0, "prlimit: {}", std::io::Error::last_os_error());
    // More than the descriptors and the listen backlog hold: some of these
    // never get through, and are dropped after a while.
    let connects = (0..500).map(|_| {
        tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect(&host.addr),
        )
    });
    let silent: Vec<_> = futures_util::future::join_all(connects)
        .await
        .into_iter()
        .filter_map(|connected| connected.ok()?.ok())
        .collect();
    assert!(
        silent.len() > 300,
        "only {} sockets connected",
        silent.len()
    );
    for _ in 0..3 {
        let answer = tokio::time::timeout(
            Duration::from_secs(10),
            rohrpost_tests::get(&host.addr, "/healthz"),
        )
        .await;
        assert!(
            matches!(answer, Ok(Ok((200, _)))),
            "/healthz behind 500 silent sockets, 300 open files: {answer:?}"
        );
        let mut client = tokio::time::timeout(Duration::from_secs(10), host.connect())
            .await
            .expect("a handshake within 10 s")
            .unwrap();
        client.ping_ok(1).await.unwrap();
    }
    drop(silent);
}
