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

/// Waits up to `patience` for the host to hold at most `at_most` sockets;
/// the count at the end.
async fn host_sockets_fall_to(host: &Host, at_most: usize, patience: Duration) -> usize {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        let held = host.sockets();
        if held <= at_most || tokio::time::Instant::now() >= deadline {
            return held;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A socket bound to this loopback address (all of 127/8 routes to `lo`),
/// connected to the host: a client from another address.
async fn connect_from(source: &str, host: &Host) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(
        format!("{source}:0")
            .parse()
            .map_err(std::io::Error::other)?,
    )?;
    socket
        .connect(host.addr.parse().map_err(std::io::Error::other)?)
        .await
}

/// Pipelined requests whose answers are never read used to hold their
/// connection for good: hyper waited to write the answers, no timer ran
/// meanwhile, and each socket kept its full kernel buffers. Writes that
/// make no progress for the handshake timeout now close the connection.
#[tokio::test]
async fn a_client_that_pipelines_requests_and_never_reads_is_disconnected() {
    use tokio::io::AsyncWriteExt;

    let host = Host::start_with(&["ping"], &["--handshake-timeout", "1s"]).unwrap();
    let before = host.sockets();
    // About 12 MB of answers (the status page is 12 KB), more than the
    // kernel buffers on both sides hold.
    let requests = "GET / HTTP/1.1\r\nHost: x\r\n\r\n".repeat(1000);
    let mut readers = Vec::new();
    for _ in 0..5 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(16 * 1024).unwrap();
        let mut stream = socket.connect(host.addr.parse().unwrap()).await.unwrap();
        stream.write_all(requests.as_bytes()).await.unwrap();
        // Kept open and never read.
        readers.push(stream);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        host.sockets() >= before + 5,
        "the host never held the clients' sockets"
    );
    // Generous: a few seconds of writes stalled on a 1 s timeout.
    let held = host_sockets_fall_to(&host, before, Duration::from_secs(15)).await;
    assert!(
        held <= before,
        "the host still holds {held} sockets ({before} before) 15 s after 5 clients stopped reading"
    );
    drop(readers);
    // Real clients are served as ever.
    host.connect().await.unwrap().ping_ok(1).await.unwrap();
    assert_eq!(
        rohrpost_tests::get(&host.addr, "/status").await.unwrap().0,
        200
    );
}

/// The request's deadline used to run per phase: the head could take the
/// whole timeout, and the body the whole timeout again. The body's deadline
/// now counts from when the request began.
#[tokio::test]
async fn head_and_body_together_must_arrive_within_the_handshake_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let host = Host::start_with(
        &["ping"],
        &["--handshake-timeout", "1s", "--notify-token", "secret"],
    )
    .unwrap();
    let body = r#"{"model":"Collection","pk":1,"event":"update"}"#;
    let head = format!(
        "POST /api/notify HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer secret\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    // Each part in ten pieces over about 0.7 s: each alone within the
    // timeout, both together well beyond it.
    async fn trickle(stream: &mut tokio::net::TcpStream, part: &[u8]) -> bool {
        for piece in part.chunks(part.len().div_ceil(10)) {
            tokio::time::sleep(Duration::from_millis(70)).await;
            if stream.write_all(piece).await.is_err() {
                return false;
            }
        }
        true
    }
    let mut stream = tokio::net::TcpStream::connect(&host.addr).await.unwrap();
    if trickle(&mut stream, head.as_bytes()).await {
        trickle(&mut stream, body.as_bytes()).await;
    }
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(read.is_ok(), "the connection was held for 10 s: {answer}");
    assert!(
        !answer.starts_with("HTTP/1.1 200"),
        "1.4 s of request with a 1 s timeout was answered: {answer}"
    );
    // The same request sent at once is answered.
    let (status, reply) = host.notify(Some("secret"), body).await.unwrap();
    assert_eq!(status, 200, "{reply}");
}

/// At the pending bound the oldest idle connection used to be closed
/// whoever it belonged to: a reconnect flood from one address evicted a
/// slow but legitimate client from another. The address that holds the
/// most places now gives one up.
#[tokio::test]
async fn a_flood_from_one_address_does_not_evict_a_client_from_another() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    rohrpost_tests::raise_fd_limit(4096).unwrap();
    let host = Host::start_with(
        &["ping"],
        &[
            "--max-pending-connections",
            "50",
            "--handshake-timeout",
            "60s",
        ],
    )
    .unwrap();
    let flooding = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flood = {
        let flooding = flooding.clone();
        let addr = host.addr.clone();
        tokio::spawn(async move {
            let host_addr: std::net::SocketAddr = addr.parse().unwrap();
            let mut silent = std::collections::VecDeque::new();
            let mut opened = 0usize;
            while flooding.load(std::sync::atomic::Ordering::Relaxed) {
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
                if let Ok(Ok(stream)) =
                    tokio::time::timeout(Duration::from_secs(1), socket.connect(host_addr)).await
                {
                    silent.push_back(stream);
                    opened += 1;
                }
                if silent.len() > 200 {
                    silent.pop_front();
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            opened
        })
    };
    // Let the flood fill the bound first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut stream = connect_from("127.0.0.3", &host).await.unwrap();
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: slow\r\nConnection: close\r\n\r\n";
    // The request in twenty pieces over about 2 s, while the flood goes on.
    let mut sent = true;
    for piece in request.chunks(request.len().div_ceil(20)) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if stream.write_all(piece).await.is_err() {
            sent = false;
            break;
        }
    }
    let mut answer = Vec::new();
    if sent {
        let _ =
            tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    }
    flooding.store(false, std::sync::atomic::Ordering::Relaxed);
    let opened = flood.await.unwrap();
    assert!(
        opened > 100,
        "the flood opened only {opened} connections: the bound was never pressed"
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "the slow client from another address was not answered (sent all: {sent}): {answer:?}"
    );
    host.wait_for_log(&["closing the oldest idle"], Duration::from_secs(5))
        .await
        .unwrap();
}

/// The write deadline of the HTTP phase stays behind on an upgraded
/// connection's stream: it must be off there, or a WebSocket client that
/// stops reading for longer than the handshake timeout would be cut off
/// although its queue is within its bounds.
#[tokio::test]
async fn a_websocket_that_reads_late_is_not_cut_off_by_the_handshake_timeout() {
    use rohrpost_tests::Received;

    let host = Host::start_with(
        &["ping", "fixture-testkit"],
        &[
            "--handshake-timeout",
            "1s",
            "--notify-token",
            "secret",
            "--outbound-queue-bytes",
            "100000000",
        ],
    )
    .unwrap();
    let mut sleeper = host.connect().await.unwrap();
    sleeper.join("big").await.unwrap();
    // About 18 MB, more than the kernel buffers hold: the host's writes
    // stall while the sleeper reads nothing.
    let blob = "b".repeat(900_000);
    for pk in 0..20 {
        let body = json!({"model": "Big", "pk": pk, "event": "update", "group": "big",
            "object": {"blob": blob}})
        .to_string();
        let (status, reply) = host.notify(Some("secret"), &body).await.unwrap();
        assert_eq!(
            (status, reply["delivered"].as_u64()),
            (200, Some(1)),
            "{reply}"
        );
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    for pk in 0..20 {
        match sleeper.recv(T).await {
            Ok(Received::Text(_)) => {}
            other => panic!("message {pk} of 20 after a 3 s pause: {other:?}"),
        }
    }
    sleeper.ping_ok(1).await.unwrap();
}
