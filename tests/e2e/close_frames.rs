//! Closes that the client must see: the 1009 of an oversized frame sent by
//! a client that keeps writing, and the 1002 / 1007 of RFC 6455 for every
//! kind of protocol violation, sent as raw frames; and, on the same raw
//! client, frames sent in one write with the handshake.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rohrpost_tests::{client_frame, Host};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_tungstenite::{connect_async, tungstenite::Message};

const T: Duration = Duration::from_secs(20);

/// One client that sends an oversized message in one task while it reads
/// in another, as a browser does; the close code it read.
async fn oversized_sender(url: String, size: usize) -> Option<u16> {
    let (ws, _) = connect_async(&url).await.ok()?;
    let (mut sink, mut stream) = ws.split();
    let big = format!(r#"{{"id":1,"type":"ping","data":"{}"}}"#, "x".repeat(size));
    let sending = tokio::spawn(async move {
        let _ = sink.send(Message::text(big)).await;
        // Keep the sink (and so the socket's writing side) alive.
        tokio::time::sleep(T).await;
        drop(sink);
    });
    let code = tokio::time::timeout(T, async {
        while let Some(message) = stream.next().await {
            match message {
                Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
        None
    })
    .await
    .ok()
    .flatten();
    sending.abort();
    code
}

#[tokio::test]
async fn every_client_sending_an_oversized_frame_reads_its_1009() {
    let host = Host::start(&["ping"]).unwrap();
    for size in [2 << 20, 8 << 20] {
        let clients: Vec<_> = (0..20)
            .map(|_| tokio::spawn(oversized_sender(host.url(), size)))
            .collect();
        let mut codes = Vec::new();
        for client in clients {
            codes.push(client.await.unwrap());
        }
        let seen = codes.iter().filter(|c| **c == Some(1009)).count();
        assert_eq!(seen, 20, "{size} bytes: close codes read {codes:?}");
    }
    host.connect().await.unwrap().ping_ok(1).await.unwrap();
}

/// A raw client: the handshake by hand, then frames byte by byte.
struct Raw {
    stream: TcpStream,
    /// Bytes read past the handshake's response.
    buffered: Vec<u8>,
}

impl Raw {
    async fn connect(host: &Host) -> Raw {
        Raw::connect_sending(host, &[]).await
    }

    /// Connects, sending `early` (frames) in the same write as the
    /// handshake's request, before its response has been read.
    async fn connect_sending(host: &Host, early: &[u8]) -> Raw {
        let mut stream = TcpStream::connect(&host.addr).await.unwrap();
        let request = format!(
            "GET /ws/rohrpost/ HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            host.addr
        );
        let mut bytes = request.into_bytes();
        bytes.extend_from_slice(early);
        stream.write_all(&bytes).await.unwrap();
        let mut read = Vec::new();
        let mut chunk = [0u8; 1024];
        let end = loop {
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed during the handshake");
            read.extend_from_slice(&chunk[..n]);
            if let Some(at) = read.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
        };
        let head = String::from_utf8_lossy(&read[..end]);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        Raw {
            stream,
            buffered: read[end..].to_vec(),
        }
    }

    /// Sends a frame (see [`client_frame`]).
    async fn frame(&mut self, first: u8, payload: &[u8], masked: bool) {
        let bytes = client_frame(first, payload, masked);
        // The server may already have closed.
        let _ = self.stream.write_all(&bytes).await;
    }

    async fn fill(&mut self, len: usize) -> bool {
        let mut chunk = [0u8; 1024];
        while self.buffered.len() < len {
            match tokio::time::timeout(T, self.stream.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => self.buffered.extend_from_slice(&chunk[..n]),
                _ => return false,
            }
        }
        true
    }

    /// The code of the server's close frame (skipping other frames), or
    /// `None` when the connection ended without one.
    async fn close_code(&mut self) -> Option<u16> {
        loop {
            let (opcode, payload) = self.next_frame().await?;
            if opcode == 0x8 {
                return (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
            }
        }
    }

    /// The server's next frame: its opcode and payload; `None` when the
    /// connection ended before one.
    async fn next_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        if !self.fill(2).await {
            return None;
        }
        let opcode = self.buffered[0] & 0x0f;
        let len = (self.buffered[1] & 0x7f) as usize;
        let (header, len) = match len {
            126 => {
                if !self.fill(4).await {
                    return None;
                }
                (
                    4,
                    u16::from_be_bytes([self.buffered[2], self.buffered[3]]) as usize,
                )
            }
            127 => return None,
            n => (2, n),
        };
        if !self.fill(header + len).await {
            return None;
        }
        let payload: Vec<u8> = self.buffered.drain(..header + len).skip(header).collect();
        Some((opcode, payload))
    }

    /// Whether the server then ends the stream (rather than keeping the
    /// socket open or resetting it).
    async fn ends_cleanly(&mut self) -> bool {
        let mut chunk = [0u8; 64];
        matches!(
            tokio::time::timeout(T, self.stream.read(&mut chunk)).await,
            Ok(Ok(0))
        )
    }
}

/// A frame to send raw: first byte (FIN, RSV, opcode), payload, masked.
type RawFrame<'a> = (u8, &'a [u8], bool);

#[tokio::test]
async fn protocol_violations_get_1002_or_1007_before_the_socket_closes() {
    let host = Host::start(&["ping"]).unwrap();
    // (what, frames to send as (first byte, payload, masked), close code)
    let long_ping = vec![b'p'; 126];
    let cases: Vec<(&str, Vec<RawFrame>, u16)> = vec![
        (
            "invalid UTF-8 in a text frame",
            vec![(0x81, b"ok\xff\xfe", true)],
            1007,
        ),
        (
            "invalid UTF-8 across fragments",
            vec![(0x01, b"ab\xc3", true), (0x80, b"\x28", true)],
            1007,
        ),
        ("a reserved bit set", vec![(0xc1, b"{}", true)], 1002),
        ("a reserved data opcode", vec![(0x83, b"x", true)], 1002),
        ("a reserved control opcode", vec![(0x8b, b"", true)], 1002),
        (
            "an unmasked client frame",
            vec![(0x81, br#"{"type":"ping"}"#, false)],
            1002,
        ),
        (
            "a control frame over 125 bytes",
            vec![(0x89, &long_ping, true)],
            1002,
        ),
        ("a fragmented ping", vec![(0x09, b"p", true)], 1002),
        ("a stray continuation", vec![(0x80, b"x", true)], 1002),
        (
            "a text frame inside a fragmented message",
            vec![(0x01, b"ab", true), (0x81, b"cd", true)],
            1002,
        ),
        ("a 1-byte close payload", vec![(0x88, b"\x03", true)], 1002),
        (
            "a close reason that is not UTF-8",
            vec![(0x88, b"\x03\xe8\xff\xfe", true)],
            1007,
        ),
    ];
    for (what, frames, expected) in cases {
        let mut raw = Raw::connect(&host).await;
        for (first, payload, masked) in frames {
            raw.frame(first, payload, masked).await;
        }
        assert_eq!(raw.close_code().await, Some(expected), "{what}");
        assert!(
            raw.ends_cleanly().await,
            "{what}: no clean end after the close frame"
        );
    }
    // Valid traffic on the raw path works, and other clients are unaffected.
    let mut raw = Raw::connect(&host).await;
    raw.frame(0x81, br#"{"id":1,"type":"ping"}"#, true).await;
    raw.frame(0x88, b"\x03\xe8", true).await;
    assert_eq!(raw.close_code().await, Some(1000));
    host.connect().await.unwrap().ping_ok(2).await.unwrap();
}

#[tokio::test]
async fn frames_sent_with_the_handshake_are_read_after_it() {
    let host = Host::start(&["ping"]).unwrap();
    let mut early = client_frame(0x81, br#"{"id":7,"type":"ping"}"#, true);
    early.extend(client_frame(0x88, b"\x03\xe8", true));
    let mut raw = Raw::connect_sending(&host, &early).await;
    let (opcode, reply) = raw.next_frame().await.expect("a reply to the early ping");
    assert_eq!(opcode, 0x1);
    let reply = String::from_utf8(reply).unwrap();
    assert!(
        reply.contains(r#""type":"pong""#) && reply.contains(r#""id":7"#),
        "{reply}"
    );
    assert_eq!(raw.close_code().await, Some(1000));
}

#[tokio::test]
async fn the_open_files_soft_limit_is_raised_to_the_hard_limit() {
    // Start the host with a low soft limit, as most systems give: in its
    // own process, as this one's is shared by the tests beside this one.
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    assert_eq!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
        0
    );
    let low = limit.rlim_max.min(1024);
    let host = Host::start_with_soft_open_files(&["ping"], low).unwrap();
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", host.pid())).unwrap();
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .unwrap();
    // "Max open files <soft> <hard> files"
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields[3], fields[4], "{line}");
    let logged = host
        .wait_for_log(&["open-files limit"], Duration::from_secs(5))
        .await
        .unwrap();
    assert!(logged.contains(&format!("soft_before={low}")), "{logged}");
}
