//! Attacks on the phase before a connection is a WebSocket: slow and silent
//! sockets, slow request bodies, more sockets than the server should hold,
//! and oversized request heads.

use std::time::{Duration, Instant};

use rohrpost_tests::{get, raise_fd_limit, Host};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// How an attacking socket ended.
#[derive(Debug, PartialEq)]
enum Ended {
    /// The server closed it (end of stream or reset), after this long.
    Closed(Duration),
    /// Still open at the end of the test's patience.
    Open,
}

/// Opens a socket that sends nothing (`drip: None`), or the start of a
/// request and then one header byte per `drip`, and reports when the server
/// closed it.
async fn attacker(addr: String, drip: Option<Duration>, patience: Duration) -> Ended {
    let started = Instant::now();
    let Ok(mut stream) = TcpStream::connect(&addr).await else {
        // Refused outright: closed at once.
        return Ended::Closed(Duration::ZERO);
    };
    if drip.is_some()
        && stream
            .write_all(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
            .await
            .is_err()
    {
        return Ended::Closed(started.elapsed());
    }
    let mut buf = [0u8; 512];
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        let step = drip.unwrap_or(patience);
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                // A 408 or similar before the close is fine: keep reading.
                Ok(n) if n > 0 => continue,
                _ => return Ended::Closed(started.elapsed()),
            },
            () = tokio::time::sleep(step) => {
                if tokio::time::Instant::now() >= deadline {
                    return Ended::Open;
                }
                if drip.is_some() && stream.write_all(b"a").await.is_err() {
                    return Ended::Closed(started.elapsed());
                }
            }
        }
    }
}

/// Starts `n` attackers, a batch at a time (the listen backlog is finite).
async fn attackers(
    host: &Host,
    n: usize,
    drip: impl Fn(usize) -> Option<Duration>,
    patience: Duration,
) -> Vec<tokio::task::JoinHandle<Ended>> {
    let mut started = Vec::new();
    for i in 0..n {
        started.push(tokio::spawn(attacker(host.addr.clone(), drip(i), patience)));
        if i % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    started
}

#[tokio::test]
async fn slow_and_silent_sockets_are_closed_after_the_handshake_timeout() {
    raise_fd_limit(4096).unwrap();
    let host = Host::start_with(&["ping"], &["--handshake-timeout", "1s"]).unwrap();
    let before = host.sockets();
    // Generous: the machine may be busy; without the timeout they stay
    // open for good.
    let patience = Duration::from_secs(15);
    let drip = |i: usize| i.is_multiple_of(2).then_some(Duration::from_millis(200));
    let started = attackers(&host, 600, drip, patience).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let during = host.sockets();
    assert!(
        during > before + 300,
        "the host never held the attackers' sockets: {during}"
    );
    let mut closed = 0;
    for attacker in started {
        if let Ended::Closed(_) = attacker.await.unwrap() {
            closed += 1;
        }
    }
    let after = host.sockets();
    assert!(
        after <= before + 5,
        "the host still holds {after} sockets ({before} before the attack) {patience:?} into a 1 s handshake timeout"
    );
    assert!(
        closed >= 300,
        "only {closed} of 600 attackers saw their socket closed"
    );
    // Meanwhile, and afterwards, real clients are served.
    host.connect().await.unwrap().ping_ok(1).await.unwrap();
    assert_eq!(get(&host.addr, "/healthz").await.unwrap().0, 200);
}

#[tokio::test]
async fn a_request_body_that_does_not_arrive_in_time_closes_the_connection() {
    let host = Host::start_with(
        &["ping"],
        &["--handshake-timeout", "1s", "--notify-token", "secret"],
    )
    .unwrap();
    let mut stream = TcpStream::connect(&host.addr).await.unwrap();
    let head = "POST /api/notify HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer secret\r\n\
                Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"model\":";
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "a partial body was held for 10 s");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "closed after {took:?}, before the timeout"
    );
    // A complete request on another connection is answered as usual.
    let (status, body) = host
        .notify(
            Some("secret"),
            r#"{"model":"Collection","pk":1,"event":"update"}"#,
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn at_the_bound_of_pending_connections_the_oldest_idle_ones_make_room() {
    raise_fd_limit(4096).unwrap();
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
    let patience = Duration::from_secs(6);
    let started = attackers(&host, 300, |_| None, patience).await;
    // While the attackers hold (or keep taking) every pending place, the
    // health check and new WebSocket clients still get through.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..10 {
        assert_eq!(get(&host.addr, "/healthz").await.unwrap().0, 200);
        host.connect().await.unwrap().ping_ok(i).await.unwrap();
    }
    for attacker in started {
        attacker.await.unwrap();
    }
    // At most the bound survives (counted on the host's side); the rest
    // were closed long before the 60 s handshake timeout.
    let held = host.sockets();
    assert!(
        held <= 50 + 5,
        "the host holds {held} sockets with a bound of 50"
    );
    host.wait_for_log(&["closing the oldest idle"], Duration::from_secs(5))
        .await
        .unwrap();
}

/// A request for `/healthz` with `headers` extra bytes of headers, as one
/// header or as `count` headers; the status, or `None` when the server
/// closed without one.
async fn healthz_with_headers(addr: &str, bytes: usize, count: usize) -> Option<u16> {
    let mut request = String::from("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    let each = bytes / count;
    for i in 0..count {
        request.push_str(&format!("X-Filler-{i}: {}\r\n", "v".repeat(each)));
    }
    request.push_str("\r\n");
    let mut stream = TcpStream::connect(addr).await.ok()?;
    // The server may close before it has read everything.
    let _ = stream.write_all(request.as_bytes()).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await;
    String::from_utf8_lossy(&response)
        .split_whitespace()
        .nth(1)
        .and_then(|status| status.parse().ok())
}

#[tokio::test]
async fn request_heads_are_bounded_in_size_and_count() {
    let host = Host::start(&["ping"]).unwrap();
    // Ordinary requests, even with a good deal of headers, are served.
    assert_eq!(
        healthz_with_headers(&host.addr, 12 * 1024, 1).await,
        Some(200)
    );
    assert_eq!(
        healthz_with_headers(&host.addr, 4 * 1024, 50).await,
        Some(200)
    );
    // A 380 KiB header, more than 16 KiB of headers, or too many headers
    // get 431 (or a plain close), never an answer.
    for (bytes, count) in [(380 * 1024, 1), (20 * 1024, 10), (2 * 1024, 200)] {
        let status = healthz_with_headers(&host.addr, bytes, count).await;
        assert!(
            matches!(status, Some(431) | None),
            "{bytes} bytes in {count} headers: {status:?}"
        );
    }
    assert_eq!(get(&host.addr, "/healthz").await.unwrap().0, 200);
}
