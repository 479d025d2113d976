//! permessage-deflate (RFC 7692) against the real host: the negotiation
//! and the bytes on the wire seen by a raw client (RSV1, the compressed
//! payloads, one compression shared by every compressed member of a
//! group), the inflate bomb and bad compressed data, clients that offer
//! nothing or something else, and the Python `websockets` client, which
//! negotiates the extension by default.

use std::{process::Command, time::Duration};

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use rohrpost_tests::{client_frame, metric_value, Host};
use serde_json::{json, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const T: Duration = Duration::from_secs(20);
const TOKEN: &str = "deflate-token";
const ANSWER: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
const RSV1: u8 = 0x40;

fn host() -> Host {
    Host::start_with(&["ping", "fixture-testkit"], &["--notify-token", TOKEN]).unwrap()
}

/// A change notification's object of about 3 KB, as JSON.
fn object() -> Value {
    let items: Vec<Value> = (0..40)
        .map(|n| json!({"id": n, "title": format!("item {n}"), "done": n % 3 == 0, "tags": ["a", "b"]}))
        .collect();
    json!({"id": 7, "name": "shopping list", "items": items})
}

/// A raw client: the handshake by hand, then frames byte by byte.
struct Raw {
    stream: TcpStream,
    buffered: Vec<u8>,
    /// The handshake's response head.
    head: String,
}

/// One server frame: its first byte (FIN, RSV, opcode) and payload.
struct Frame {
    first: u8,
    payload: Vec<u8>,
}

impl Raw {
    async fn connect(host: &Host, offer: Option<&str>) -> Raw {
        let mut stream = TcpStream::connect(&host.addr).await.unwrap();
        let extensions = offer
            .map(|offer| format!("Sec-WebSocket-Extensions: {offer}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "GET /ws/rohrpost/ HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extensions}\r\n",
            host.addr
        );
        stream.write_all(request.as_bytes()).await.unwrap();
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
        let head = String::from_utf8_lossy(&read[..end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        Raw {
            stream,
            buffered: read[end..].to_vec(),
            head,
        }
    }

    /// The `Sec-WebSocket-Extensions` of the handshake's response.
    fn extensions(&self) -> Option<String> {
        self.head.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-extensions")
                .then(|| value.trim().to_owned())
        })
    }

    /// Sends a masked frame with this first byte.
    async fn send(&mut self, first: u8, payload: &[u8]) {
        let out = client_frame(first, payload, true);
        // The server may already have closed.
        let _ = self.stream.write_all(&out).await;
    }

    async fn fill(&mut self, len: usize) -> bool {
        let mut chunk = [0u8; 4096];
        while self.buffered.len() < len {
            match tokio::time::timeout(T, self.stream.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => self.buffered.extend_from_slice(&chunk[..n]),
                _ => return false,
            }
        }
        true
    }

    /// The server's next frame; `None` when the connection ended first.
    async fn next_frame(&mut self) -> Option<Frame> {
        if !self.fill(2).await {
            return None;
        }
        let (header, len) = match self.buffered[1] & 0x7f {
            126 => {
                self.fill(4).await.then_some(())?;
                (
                    4,
                    u16::from_be_bytes([self.buffered[2], self.buffered[3]]) as usize,
                )
            }
            127 => {
                self.fill(10).await.then_some(())?;
                let mut be = [0u8; 8];
                be.copy_from_slice(&self.buffered[2..10]);
                (10, u64::from_be_bytes(be) as usize)
            }
            n => (2, n as usize),
        };
        if !self.fill(header + len).await {
            return None;
        }
        let first = self.buffered[0];
        let payload = self.buffered.drain(..header + len).skip(header).collect();
        Some(Frame { first, payload })
    }

    /// The next text frame's message, inflated when it has RSV1, and
    /// whether it had.
    async fn next_text(&mut self) -> (bool, Value) {
        let frame = self.next_frame().await.expect("a frame");
        assert_eq!(frame.first & 0x0F, 0x1, "a text frame");
        let compressed = frame.first & RSV1 != 0;
        let bytes = if compressed {
            inflate(&frame.payload, 15)
        } else {
            frame.payload
        };
        (compressed, serde_json::from_slice(&bytes).expect("JSON"))
    }

    /// The code of the server's close frame (skipping other frames).
    async fn close_code(&mut self) -> Option<u16> {
        loop {
            let frame = self.next_frame().await?;
            if frame.first & 0x0F == 0x8 {
                let p = frame.payload;
                return (p.len() >= 2).then(|| u16::from_be_bytes([p[0], p[1]]));
            }
        }
    }
}

/// `data` compressed as a permessage-deflate message: raw DEFLATE, sync
/// flushed, without the flush's last four bytes.
fn deflate(data: &[u8]) -> Vec<u8> {
    let mut compress = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(data.len() + 1024);
    let mut at = 0;
    loop {
        let before = compress.total_in();
        compress
            .compress_vec(&data[at..], &mut out, FlushCompress::Sync)
            .unwrap();
        at += (compress.total_in() - before) as usize;
        if at == data.len() && out.len() < out.capacity() {
            break;
        }
        out.reserve(out.capacity());
    }
    assert!(out.ends_with(&[0, 0, 0xFF, 0xFF]));
    out.truncate(out.len() - 4);
    out
}

/// A permessage-deflate message inflated with a window of `bits`.
fn inflate(data: &[u8], bits: u8) -> Vec<u8> {
    let mut input = data.to_vec();
    input.extend_from_slice(&[0, 0, 0xFF, 0xFF]);
    let mut inflater = Decompress::new_with_window_bits(false, bits);
    let mut out = Vec::with_capacity(64 * 1024);
    let mut at = 0;
    loop {
        let before = inflater.total_in();
        inflater
            .decompress_vec(&input[at..], &mut out, FlushDecompress::Sync)
            .expect("valid DEFLATE within the window");
        at += (inflater.total_in() - before) as usize;
        if at == input.len() && out.len() < out.capacity() {
            return out;
        }
        out.reserve(out.capacity());
    }
}

async fn metric(host: &Host, name: &str) -> f64 {
    metric_value(&host.addr, &format!("rohrpost_compression_{name}_total"))
        .await
        .unwrap()
}

/// Posts an update of the list to the group `lists`, which must reach
/// `members` connections.
async fn notify_lists(host: &Host, members: u64) {
    let body =
        json!({"model": "List", "pk": 7, "event": "update", "group": "lists", "object": object()})
            .to_string();
    let (status, answer) = host.notify(Some(TOKEN), &body).await.unwrap();
    assert_eq!(
        (status, answer["delivered"].as_u64()),
        (200, Some(members)),
        "{answer}"
    );
}

#[tokio::test]
async fn replies_and_group_messages_go_compressed_once_for_every_compressed_member() {
    let host = host();
    let mut a = Raw::connect(&host, Some("permessage-deflate; client_max_window_bits")).await;
    assert_eq!(a.extensions().as_deref(), Some(ANSWER));

    // A compressed request of 3 KB; its reply comes compressed, a third or
    // less of its size on the wire.
    let request = json!({"id": 1, "type": "ping", "data": object()}).to_string();
    a.send(0x80 | RSV1 | 0x1, &deflate(request.as_bytes()))
        .await;
    let frame = a.next_frame().await.unwrap();
    assert_eq!(frame.first, 0x80 | RSV1 | 0x1, "FIN, RSV1, text");
    let reply: Value = serde_json::from_slice(&inflate(&frame.payload, 15)).unwrap();
    assert_eq!(reply, json!({"id": 1, "type": "pong", "data": object()}));
    let plain = reply.to_string().len();
    assert!(
        frame.payload.len() * 10 < plain * 3,
        "{} bytes on the wire for {plain}",
        frame.payload.len()
    );

    // A small reply goes as it is.
    a.send(0x81, br#"{"id":2,"type":"ping"}"#).await;
    assert_eq!(
        a.next_text().await,
        (false, json!({"id": 2, "type": "pong"}))
    );

    // Three members: two compressed, one that offered nothing.
    let mut b = Raw::connect(&host, Some("permessage-deflate")).await;
    let mut plain_member = Raw::connect(&host, None).await;
    assert_eq!(plain_member.extensions(), None);
    for (n, member) in [&mut a, &mut b, &mut plain_member].into_iter().enumerate() {
        let join = json!({"id": n, "type": "join", "data": {"group": "lists"}}).to_string();
        member.send(0x81, join.as_bytes()).await;
        assert_eq!(member.next_text().await.1["type"], "join");
    }
    let compressed_before = metric(&host, "sent_plain_bytes").await;
    notify_lists(&host, 3).await;
    let to_a = a.next_frame().await.unwrap();
    let to_b = b.next_frame().await.unwrap();
    let to_plain = plain_member.next_frame().await.unwrap();
    assert_eq!(to_a.first, 0x80 | RSV1 | 0x1);
    assert_eq!(to_a.payload, to_b.payload, "the same compressed bytes");
    assert_eq!(to_plain.first, 0x81);
    assert_eq!(inflate(&to_a.payload, 15), to_plain.payload);
    let update: Value = serde_json::from_slice(&to_plain.payload).unwrap();
    assert_eq!(update["type"], "subscription-update");
    // Compressed once for both compressed members.
    let compressed = metric(&host, "sent_plain_bytes").await - compressed_before;
    assert_eq!(compressed as usize, to_plain.payload.len());
}

#[tokio::test]
async fn the_servers_window_is_what_the_client_allows() {
    let host = host();
    let mut client =
        Raw::connect(&host, Some("permessage-deflate; server_max_window_bits=10")).await;
    assert_eq!(
        client.extensions(),
        Some(format!("{ANSWER}; server_max_window_bits=10"))
    );
    // Repeats 3 KB apart: a larger window would reach back to them.
    let block: String = (0..300).map(|n| format!("{:x}", n * 7919 % 4096)).collect();
    let request = json!({"id": 1, "type": "ping", "data": {"a": block, "b": block}}).to_string();
    client.send(0x81, request.as_bytes()).await;
    let frame = client.next_frame().await.unwrap();
    assert_eq!(frame.first, 0x80 | RSV1 | 0x1);
    let reply: Value = serde_json::from_slice(&inflate(&frame.payload, 10)).unwrap();
    assert_eq!(reply["data"]["b"], json!(block));
    // An offer it cannot honour (an 8-bit window) is declined for the next.
    let client = Raw::connect(
        &host,
        Some("permessage-deflate; server_max_window_bits=8, permessage-deflate"),
    )
    .await;
    assert_eq!(client.extensions().as_deref(), Some(ANSWER));
}

#[tokio::test]
async fn a_fragmented_compressed_message_is_put_together_and_inflated() {
    let host = host();
    let mut client = Raw::connect(&host, Some("permessage-deflate")).await;
    let request = json!({"id": 1, "type": "ping", "data": object()}).to_string();
    let compressed = deflate(request.as_bytes());
    let (head, tail) = compressed.split_at(compressed.len() / 2);
    client.send(RSV1 | 0x1, head).await;
    client.send(0x89, b"between").await;
    client.send(0x80, tail).await;
    let pong = client.next_frame().await.unwrap();
    assert_eq!(
        (pong.first, pong.payload.as_slice()),
        (0x8A, &b"between"[..])
    );
    let (_, reply) = client.next_text().await;
    assert_eq!(reply, json!({"id": 1, "type": "pong", "data": object()}));
}

#[tokio::test]
async fn an_inflate_bomb_is_closed_with_1009_at_the_size_limit() {
    let host = host();
    let peak_before = host.memory("VmHWM").unwrap();
    // 64 MiB of zeros in about 64 KB: inflating stops at the 1 MiB limit.
    let bomb = deflate(&vec![0u8; 64 << 20]);
    assert!(bomb.len() < 1 << 20, "{} bytes", bomb.len());
    let mut clients = Vec::new();
    for _ in 0..4 {
        let mut client = Raw::connect(&host, Some("permessage-deflate")).await;
        client.send(0x80 | RSV1 | 0x1, &bomb).await;
        clients.push(client);
    }
    for client in &mut clients {
        assert_eq!(client.close_code().await, Some(1009));
    }
    let grown = host.memory("VmHWM").unwrap().saturating_sub(peak_before);
    assert!(grown < 32 << 20, "the peak grew by {grown} bytes");
    host.connect().await.unwrap().ping_ok(1).await.unwrap();
}

#[tokio::test]
async fn bad_compressed_data_and_misplaced_rsv1_close_the_connection() {
    let host = host();
    let request = deflate(br#"{"id":1,"type":"ping"}"#);
    // Not DEFLATE (a reserved block type): 1007.
    let mut client = Raw::connect(&host, Some("permessage-deflate")).await;
    client.send(0x80 | RSV1 | 0x1, &[0xFF, 0xFF, 0xFF]).await;
    assert_eq!(client.close_code().await, Some(1007));
    // RSV1 on a continuation, on a ping: 1002.
    let mut client = Raw::connect(&host, Some("permessage-deflate")).await;
    client.send(0x01, b"{").await;
    client.send(0x80 | RSV1, b"}").await;
    assert_eq!(client.close_code().await, Some(1002));
    let mut client = Raw::connect(&host, Some("permessage-deflate")).await;
    client.send(0x80 | RSV1 | 0x9, b"").await;
    assert_eq!(client.close_code().await, Some(1002));
    // RSV1 without the extension: 1002.
    let mut client = Raw::connect(&host, None).await;
    client.send(0x80 | RSV1 | 0x1, &request).await;
    assert_eq!(client.close_code().await, Some(1002));
}

#[tokio::test]
async fn a_client_offering_nothing_or_something_else_gets_plain_frames() {
    let host = host();
    let request = json!({"id": 1, "type": "ping", "data": object()}).to_string();
    for offer in [
        None,
        Some("x-webkit-deflate-frame"),
        Some("permessage-deflate; unknown_parameter"),
        Some("permessage-deflate; server_max_window_bits=8"),
    ] {
        let mut client = Raw::connect(&host, offer).await;
        assert_eq!(client.extensions(), None, "{offer:?}");
        client.send(0x81, request.as_bytes()).await;
        let (compressed, reply) = client.next_text().await;
        assert!(!compressed, "{offer:?}");
        assert_eq!(reply["data"], object());
    }
    // Nor with compression off.
    let off = Host::start_with(&["ping"], &["--compression", "off"]).unwrap();
    let mut client = Raw::connect(&off, Some("permessage-deflate")).await;
    assert_eq!(client.extensions(), None);
    client.send(0x81, request.as_bytes()).await;
    assert!(!client.next_text().await.0);
}

#[tokio::test]
async fn the_python_websockets_client_talks_compressed() {
    let host = host();
    let python = rohrpost_harness::websockets_venv::python().unwrap();
    let script = rohrpost_tests::workspace().join("tests/python_client/compressed_client.py");
    let url = host.url();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python).arg(script).arg(url).output().unwrap()
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(
        seen["extensions"]
            .as_str()
            .is_some_and(|e| e.starts_with("permessage-deflate; server_no_context_takeover")),
        "{seen}"
    );
    assert_eq!(seen["negotiated"], json!(["PerMessageDeflate"]), "{seen}");
    for check in ["pong_data_equal", "group_payload_equal", "large_pong_equal"] {
        assert_eq!(seen[check], true, "{check}: {seen}");
    }
    // The host inflated what the client sent and compressed what it got.
    assert!(metric(&host, "received_compressed_bytes").await > 0.0);
    assert!(
        metric(&host, "received_plain_bytes").await > 360_000.0,
        "the large message inflated"
    );
    assert!(metric(&host, "sent_compressed_bytes").await > 0.0);
}

#[tokio::test]
async fn a_group_message_is_compressed_once_when_members_are_busy() {
    let host = host();
    let mut free = Raw::connect(&host, Some("permessage-deflate")).await;
    let mut busy = Vec::new();
    for _ in 0..2 {
        busy.push(Raw::connect(&host, Some("permessage-deflate")).await);
    }
    for (n, member) in std::iter::once(&mut free)
        .chain(busy.iter_mut())
        .enumerate()
    {
        let join = json!({"id": n, "type": "join", "data": {"group": "lists"}}).to_string();
        member.send(0x81, join.as_bytes()).await;
        assert_eq!(member.next_text().await.1["type"], "join");
    }
    // The busy members are answering a request when the message comes:
    // their lines are held, and the message waits in their queues.
    for member in &mut busy {
        member
            .send(0x81, br#"{"id":9,"type":"sleep","data":{"ms":1500}}"#)
            .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = metric(&host, "sent_plain_bytes").await;
    notify_lists(&host, 3).await;
    let to_free = free.next_frame().await.unwrap();
    assert_eq!(to_free.first, 0x80 | RSV1 | 0x1);
    let plain = inflate(&to_free.payload, 15);
    for member in &mut busy {
        // The group message and the sleep's reply, in either order.
        let mut update = None;
        for _ in 0..2 {
            let frame = member.next_frame().await.unwrap();
            if frame.first & RSV1 != 0 {
                update = Some(frame.payload);
            }
        }
        assert_eq!(
            update.as_deref(),
            Some(&to_free.payload[..]),
            "the same compressed bytes"
        );
    }
    // Compressed once for the free member and both busy ones.
    let compressed = metric(&host, "sent_plain_bytes").await - before;
    assert_eq!(compressed as usize, plain.len());
}
