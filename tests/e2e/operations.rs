//! Running the server in production: settings and their precedence,
//! limits, the origin check, the idle timeout, graceful shutdown, logs.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use rohrpost_tests::{build, Client, Host, Received, TempDir};
use serde_json::{json, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest, http};

const T: Duration = Duration::from_secs(10);

/// The HTTP status of a refused handshake.
async fn handshake_status(url: &str, origin: Option<&str>) -> Option<u16> {
    let mut request = url.into_client_request().unwrap();
    if let Some(origin) = origin {
        request
            .headers_mut()
            .insert(http::header::ORIGIN, origin.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => None,
        Err(tungstenite::Error::Http(response)) => Some(response.status().as_u16()),
        Err(other) => panic!("unexpected handshake error: {other}"),
    }
}

#[tokio::test]
async fn the_connection_limit_refuses_the_next_handshake_with_503() {
    let host = Host::start_with(&["ping"], &["--max-connections", "2"]).unwrap();
    let mut a = host.connect().await.unwrap();
    let mut b = host.connect().await.unwrap();
    assert_eq!(handshake_status(&host.url(), None).await, Some(503));
    a.ping_ok(1).await.unwrap();
    b.close_with(1000).await.unwrap();
    assert_eq!(b.recv(T).await.unwrap(), Received::Close(Some(1000)));
    // Once a connection has gone, its place is free again.
    let deadline = Instant::now() + T;
    let mut c = loop {
        match Client::connect(&host.url()).await {
            Ok(c) => break c,
            Err(e) if Instant::now() < deadline => {
                assert!(
                    e.to_string().contains("503") || format!("{e:#}").contains("503"),
                    "{e:#}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("no place freed: {e:#}"),
        }
    };
    c.ping_ok(2).await.unwrap();
    host.wait_for_log(&["too many connections"], T)
        .await
        .unwrap();
}

#[tokio::test]
async fn only_allowed_origins_may_connect_from_a_browser() {
    let host = Host::start_with(
        &["ping"],
        &[
            "--allowed-origins",
            "https://app.example.com,http://localhost:3000",
        ],
    )
    .unwrap();
    assert_eq!(
        handshake_status(&host.url(), Some("https://evil.example.com")).await,
        Some(403)
    );
    assert_eq!(
        handshake_status(&host.url(), Some("https://app.example.com")).await,
        None
    );
    assert_eq!(
        handshake_status(&host.url(), Some("http://localhost:3000")).await,
        None
    );
    // Clients that are not browsers send no Origin.
    assert_eq!(handshake_status(&host.url(), None).await, None);
    host.wait_for_log(&["origin not allowed", "https://evil.example.com"], T)
        .await
        .unwrap();
}

/// A WebSocket client that never answers anything: it reads raw frames.
struct Mute {
    stream: TcpStream,
}

impl Mute {
    async fn connect(addr: &str) -> Mute {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "GET /ws/rohrpost/ HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(stream.read_u8().await.unwrap());
        }
        assert!(
            head.starts_with(b"HTTP/1.1 101"),
            "{}",
            String::from_utf8_lossy(&head)
        );
        Mute { stream }
    }

    /// The next frame's opcode and payload (server frames are unmasked).
    async fn frame(&mut self) -> Option<(u8, Vec<u8>)> {
        let first = self.stream.read_u8().await.ok()?;
        let len = match self.stream.read_u8().await.ok()? & 0x7f {
            126 => u64::from(self.stream.read_u16().await.ok()?),
            127 => self.stream.read_u64().await.ok()?,
            n => u64::from(n),
        };
        let mut payload = vec![0; usize::try_from(len).ok()?];
        self.stream.read_exact(&mut payload).await.ok()?;
        Some((first & 0x0f, payload))
    }
}

#[tokio::test]
async fn a_silent_client_is_pinged_then_closed_and_a_live_one_stays() {
    let host = Host::start_with(&["ping"], &["--idle-timeout", "1s"]).unwrap();
    // A client that answers pings (as browsers and rohrpost-js do) stays,
    // even without sending a message of its own.
    let mut live = host.connect().await.unwrap();
    let live = tokio::spawn(async move {
        live.expect_silence(Duration::from_millis(2500))
            .await
            .unwrap();
        live.ping_ok(1).await.unwrap();
    });
    let mut mute = Mute::connect(&host.addr).await;
    let started = Instant::now();
    let (opcode, _) = mute.frame().await.expect("a ping");
    assert_eq!(opcode, 0x9, "first the server pings");
    let (opcode, payload) = mute.frame().await.expect("a close frame");
    assert_eq!(opcode, 0x8);
    assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1001);
    assert_eq!(&payload[2..], b"Idle timeout.");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    live.await.unwrap();
}

#[tokio::test]
async fn sigterm_lets_the_running_request_finish_then_closes_with_1001() {
    let mut host = Host::start(&["ping", "fixture-testkit"]).unwrap();
    let mut busy = host.connect().await.unwrap();
    let mut idle = host.connect().await.unwrap();
    idle.ping_ok(1).await.unwrap();
    busy.send_text(r#"{"id":1,"type":"sleep","data":{"ms":1500}}"#)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    host.signal(libc::SIGTERM);

    // The idle connection is closed at once, the busy one after its reply.
    assert_eq!(idle.recv(T).await.unwrap(), Received::Close(Some(1001)));
    assert_eq!(
        busy.recv_json(T).await.unwrap(),
        json!({"id":1,"type":"sleep","data":{"slept_ms":1500}})
    );
    assert_eq!(busy.recv(T).await.unwrap(), Received::Close(Some(1001)));
    assert_eq!(host.exit_code(T).await.unwrap(), Some(0));
    assert!(host
        .log()
        .iter()
        .any(|l| l.contains("every connection has closed")));
}

#[tokio::test]
async fn shutdown_stops_waiting_for_a_handler_after_the_shutdown_timeout() {
    let mut host = Host::start_with(
        &["fixture-testkit"],
        &["--shutdown-timeout", "500ms", "--handler-timeout", "30s"],
    )
    .unwrap();
    let mut c = host.connect().await.unwrap();
    c.send_text(r#"{"id":1,"type":"sleep","data":{"ms":20000}}"#)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    host.signal(libc::SIGINT);
    assert_eq!(host.exit_code(T).await.unwrap(), Some(0));
    assert!(host
        .log()
        .iter()
        .any(|l| l.contains("still open at the end of the shutdown timeout")));
}

#[tokio::test]
async fn a_plugin_runs_at_most_its_concurrency_limit_of_calls_at_once() {
    // In the server's process, where a call past its timeout cannot be
    // stopped (in a worker, the worker is killed and the slot freed).
    let host = Host::start_with_config(
        &["fixture-testkit"],
        "[plugins.testkit]\nisolation = \"none\"\nlibrary = \"libfixture_testkit.so\"\n",
        &["--plugin-concurrency", "1", "--handler-timeout", "1s"],
    )
    .unwrap();
    let mut a = host.connect().await.unwrap();
    let mut b = host.connect().await.unwrap();
    a.send_text(r#"{"id":1,"type":"sleep","data":{"ms":2500}}"#)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The only slot is taken: b's call waits, then times out.
    let reply = b
        .request(r#"{"id":2,"type":"sleep","data":{"ms":1}}"#)
        .await
        .unwrap();
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .contains("did not finish within 1000 ms"),
        "{reply}"
    );
    // a's call times out for a too, but keeps its slot until it returns.
    assert!(a.recv_json(T).await.unwrap()["error"].is_string());
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(
        b.request(r#"{"id":3,"type":"sleep","data":{"ms":1}}"#)
            .await
            .unwrap(),
        json!({"id":3,"type":"sleep","data":{"slept_ms":1}})
    );
}

#[tokio::test]
async fn flags_win_over_the_environment_which_wins_over_the_config_file() {
    let frame = format!(r#"{{"id":1,"type":"ping","data":"{}"}}"#, "x".repeat(1500));
    // The file alone: 1000 bytes, the frame is too big.
    let host = Host::start_with_config(&["ping"], "max_message_size = 1000\n", &[]).unwrap();
    let mut c = host.connect().await.unwrap();
    c.send_text(&frame).await.unwrap();
    assert_eq!(c.recv(T).await.unwrap(), Received::Close(Some(1009)));

    // The environment over the file: 4000 bytes, it fits.
    let dir = TempDir::new("precedence");
    let file = dir.path().join("rohrpost.toml");
    std::fs::write(&file, "max_message_size = 1000\n").unwrap();
    let file = file.to_string_lossy().into_owned();
    let host = Host::start_with_env(
        &["ping"],
        &["--config", &file],
        &[("ROHRPOST_MAX_MESSAGE_SIZE", "4000")],
    )
    .unwrap();
    let mut c = host.connect().await.unwrap();
    assert_eq!(c.request(&frame).await.unwrap()["type"], "pong");

    // The flag over both: 1200 bytes, too big again.
    let host = Host::start_with_env(
        &["ping"],
        &["--config", &file, "--max-message-size", "1200"],
        &[("ROHRPOST_MAX_MESSAGE_SIZE", "4000")],
    )
    .unwrap();
    let mut c = host.connect().await.unwrap();
    c.send_text(&frame).await.unwrap();
    assert_eq!(c.recv(T).await.unwrap(), Received::Close(Some(1009)));
}

#[test]
fn check_config_asks_each_plugin_about_its_table_and_names_the_line() {
    let dir = TempDir::new("check-plugins");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    rohrpost_tests::install(
        &build().plugin("subscriptions"),
        &plugins,
        "libsubscriptions.so",
    );
    rohrpost_tests::install(&build().plugin("ping"), &plugins, "libping.so");
    let file = dir.path().join("rohrpost.toml");
    let check = |toml: &str| {
        std::fs::write(&file, toml).unwrap();
        Command::new(build().host())
            .arg("--check-config")
            .arg(&file)
            .arg("--plugins")
            .arg(&plugins)
            .output()
            .unwrap()
    };
    let out = check("listen = \"127.0.0.1:9000\"\n\n[plugins.subscriptions]\nauth = \"tokens\"\ntokn = [\"a\"]\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "plugins.subscriptions (line 5): invalid configuration: unknown field `tokn`"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("column"), "{stderr}");
    let out = check("[plugins.subscriptions]\nauth = \"tokens\"\ntokens = [\"a\"]\n");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_config_reports_every_problem_with_its_key() {
    let dir = TempDir::new("check");
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "listen = \"nowhere\"\nmax_conections = 5\nidle_timeout = \"soon\"\n[plugins.x]\nanything = 1\n",
    )
    .unwrap();
    let out = Command::new(build().host())
        .arg("--check-config")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("3 problem(s)"), "{stderr}");
    for key in ["listen:", "max_conections: unknown key", "idle_timeout:"] {
        assert!(stderr.contains(key), "{key} in {stderr}");
    }

    let good = dir.path().join("good.toml");
    std::fs::write(&good, "listen = \"0.0.0.0:9000\"\nallowed_origins = [\"https://a.example\"]\n[plugins.x]\nk = 1\n").unwrap();
    let out = Command::new(build().host())
        .arg("--check-config")
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Starting with a bad file fails at once, naming the problem.
    let out = Command::new(build().host())
        .arg("--config")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_conections: unknown key"));
}

#[tokio::test]
async fn logs_can_be_json_lines() {
    let host = Host::start_with(&["ping"], &["--log-format", "json"]).unwrap();
    let mut c: Client = host.connect().await.unwrap();
    c.ping_ok(1).await.unwrap();
    let line = host
        .wait_for_log(&["\"event\":\"loaded\""], T)
        .await
        .unwrap();
    let value: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(value["plugin"], "ping");
    assert_eq!(value["level"], "INFO");
}

#[tokio::test]
async fn one_client_address_gets_at_most_its_share_of_connections() {
    let host = Host::start_with(&["ping"], &["--max-connections-per-client", "2"]).unwrap();
    let mut a = host.connect().await.unwrap();
    let _b = host.connect().await.unwrap();
    assert_eq!(handshake_status(&host.url(), None).await, Some(429));
    // Another address has places of its own.
    let source = "127.0.0.2".parse().unwrap();
    let mut other = Client::connect_from(&host.addr, source, None)
        .await
        .unwrap();
    other.ping_ok(1).await.unwrap();
    // A place is given back when its connection ends.
    a.close_with(1000).await.unwrap();
    assert_eq!(a.recv(T).await.unwrap(), Received::Close(Some(1000)));
    let deadline = Instant::now() + T;
    // Connecting itself is the probe: a probe connection of its own would
    // hold the place until the server saw it go.
    let mut again = loop {
        match host.connect().await {
            Ok(client) => break client,
            Err(e) if Instant::now() < deadline && format!("{e:#}").contains("429") => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("the place was not given back: {e:#}"),
        }
    };
    again.ping_ok(2).await.unwrap();
    host.wait_for_log(&["too many connections from this client"], T)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_connection_sending_too_fast_is_answered_then_closed() {
    let host = Host::start_with(&["ping"], &["--max-messages-per-second", "5"]).unwrap();
    let mut c = host.connect().await.unwrap();
    // A burst of a second's worth passes.
    for id in 1..=5 {
        c.ping_ok(id).await.unwrap();
    }
    // Then each message gets the error, with its id and type.
    let reply = c.request(r#"{"id":6,"type":"ping"}"#).await.unwrap();
    assert_eq!(
        reply,
        json!({"id": 6, "type": "ping", "error": "Too many messages: at most 5 per second."})
    );
    // After a while, messages pass again.
    tokio::time::sleep(Duration::from_millis(450)).await;
    c.ping_ok(7).await.unwrap();
    // A second's worth of refused messages in a row closes the connection.
    for id in 100..110 {
        c.send_text(&json!({"id": id, "type": "ping"}).to_string())
            .await
            .unwrap();
    }
    let mut refused = 0;
    let code = loop {
        match c.recv(T).await.unwrap() {
            Received::Text(text) => {
                let m: Value = serde_json::from_str(&text).unwrap();
                if m.get("error").is_some() {
                    refused += 1;
                }
            }
            Received::Close(code) => break code,
            Received::Gone => panic!("closed without a close frame"),
        }
    };
    assert_eq!(code, Some(1008));
    assert!(refused >= 5, "{refused} refused before the close");
    // Other connections are not affected.
    host.connect().await.unwrap().ping_ok(1).await.unwrap();
}
