//! The status page in a real headless browser: Chromium, driven over the
//! Chrome DevTools Protocol (CDP), opens the page of a running host, sees the
//! plugins and their live changes, and sends a ping from the page's console;
//! under a short load its charts draw the last minutes, its tables show the
//! plugins' activity and the groups, its search finds a group, and it is
//! photographed at desktop and phone size (PNG files in the target
//! directory).

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use rohrpost_tests::{build, get, install, Host, TempDir};
use serde_json::{json, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_tungstenite::{connect_async, tungstenite::Message, MaybeTlsStream, WebSocketStream};

/// How long the page may take to show something.
const T: Duration = Duration::from_secs(30);

// ---- the browser ----

/// The Chromium binary: `chromium` on `PATH`, else Debian's.
fn find_chromium() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("chromium"))
            .find(|file| file.is_file())
    });
    on_path.or_else(|| {
        let debian = PathBuf::from("/usr/bin/chromium");
        debian.is_file().then_some(debian)
    })
}

/// A headless Chromium, killed when dropped (a failing test included).
struct Browser {
    child: Child,
    /// The browser-level DevTools WebSocket URL.
    devtools_url: String,
    _profile: TempDir,
}

impl Browser {
    fn launch(binary: &Path) -> Result<Browser> {
        let profile = TempDir::new("chromium-profile");
        let mut child = Command::new(binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let stderr = child.stderr.take().context("no stderr")?;
        let (url_tx, url_rx) = std::sync::mpsc::channel();
        // Chromium prints the DevTools URL on stderr; the rest is drained
        // (a full pipe would stall the browser) and kept for a failure report.
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut url_tx = Some(url_tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.split("DevTools listening on ").nth(1) {
                    if let Some(tx) = url_tx.take() {
                        let _ = tx.send(Ok(url.trim().to_owned()));
                    }
                } else if url_tx.is_some() {
                    seen.push(line);
                }
            }
            if let Some(tx) = url_tx {
                let _ = tx.send(Err(seen.join("\n")));
            }
        });
        let mut browser = Browser {
            child,
            devtools_url: String::new(),
            _profile: profile,
        };
        browser.devtools_url = match url_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(url)) => url,
            Ok(Err(output)) => bail!("chromium exited without a DevTools URL:\n{output}"),
            Err(_) => bail!("chromium printed no DevTools URL within 30 s"),
        };
        Ok(browser)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- a small CDP client ----

/// One WebSocket to the browser; page commands go to an attached target's
/// session (`flatten` mode: one socket, a `sessionId` per command).
struct Cdp {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl Cdp {
    async fn connect(devtools_url: &str) -> Result<Cdp> {
        let (ws, _) = connect_async(devtools_url)
            .await
            .context("cannot connect to the DevTools WebSocket")?;
        Ok(Cdp { ws, next_id: 1 })
    }

    /// Sends one command and returns its `result`; events arriving
    /// meanwhile are skipped.
    async fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        let mut command = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            command["sessionId"] = json!(session);
        }
        self.ws.send(Message::text(command.to_string())).await?;
        let reply = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let Some(frame) = self.ws.next().await else {
                    bail!("the DevTools WebSocket closed");
                };
                if let Message::Text(text) = frame? {
                    let message: Value = serde_json::from_str(&text)?;
                    if message["id"].as_u64() == Some(id) {
                        return Ok(message);
                    }
                }
            }
        })
        .await
        .map_err(|_| anyhow!("no answer to {method} within 10 s"))??;
        if let Some(error) = reply.get("error") {
            bail!("{method} failed: {error}");
        }
        Ok(reply["result"].clone())
    }

    /// Opens `url` in a new tab and attaches to it; the session id.
    async fn open_page(&mut self, url: &str) -> Result<String> {
        let target = self
            .call(None, "Target.createTarget", json!({ "url": url }))
            .await?;
        let target_id = target["targetId"].as_str().context("no targetId")?;
        let attached = self
            .call(
                None,
                "Target.attachToTarget",
                json!({ "targetId": target_id, "flatten": true }),
            )
            .await?;
        Ok(attached["sessionId"]
            .as_str()
            .context("no sessionId")?
            .to_owned())
    }

    /// Evaluates a JavaScript expression in the page; its value as JSON.
    async fn eval(&mut self, session: &str, expression: &str) -> Result<Value> {
        let result = self
            .call(
                Some(session),
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true }),
            )
            .await?;
        if let Some(exception) = result.get("exceptionDetails") {
            bail!("{expression} threw: {exception}");
        }
        Ok(result["result"]["value"].clone())
    }

    /// Evaluates `expression` every 100 ms until `done` accepts its value.
    async fn wait_for(
        &mut self,
        session: &str,
        expression: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + T;
        loop {
            // The page may still be loading: an error is "not yet".
            let last = self.eval(session, expression).await;
            if let Ok(value) = &last {
                if done(value) {
                    return value.clone();
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "waited {T:?} for `{expression}`; last: {last:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

// ---- what the tests read from the page ----

/// The plugins table: one array of cell texts per row.
const PLUGIN_ROWS: &str = "Array.from(document.querySelectorAll('#plugins tr'), \
     tr => Array.from(tr.cells, td => td.textContent))";

/// The frames the console received.
const RECEIVED: &str =
    "Array.from(document.querySelectorAll('#console-output li.received'), li => li.textContent)";

fn rows(value: &Value) -> Vec<Vec<String>> {
    serde_json::from_value(value.clone()).unwrap_or_default()
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

/// A headless browser; a missing Chromium fails the test.
fn browser() -> Browser {
    let binary = find_chromium().unwrap_or_else(|| {
        panic!(
            "chromium is not installed: this test drives a headless Chromium; install \
             Debian's with `apt-get install chromium` (as .ci/run does) or put a \
             `chromium` on PATH"
        )
    });
    Browser::launch(&binary).expect("cannot launch chromium")
}

#[tokio::test]
async fn the_page_lists_plugins_follows_changes_and_pings_from_its_console() {
    let browser = browser();
    let host = Host::start(&["ping"]).unwrap();
    let mut cdp = Cdp::connect(&browser.devtools_url).await.unwrap();
    let page = cdp
        .open_page(&format!("http://{}/", host.addr))
        .await
        .unwrap();

    // The ping plugin is listed, loaded, with its type.
    let list = cdp
        .wait_for(&page, PLUGIN_ROWS, |v| {
            rows(v)
                .iter()
                .any(|row| row.first().is_some_and(|name| name == "ping"))
        })
        .await;
    let list = rows(&list);
    let ping = list.iter().find(|row| row[0] == "ping").unwrap();
    assert_eq!((ping[2].as_str(), ping[3].as_str()), ("loaded", "ping"));
    assert!(text(
        &cdp.eval(&page, "document.querySelector('#plugins').textContent")
            .await
            .unwrap()
    )
    .contains("ping"));

    // The console's socket opens; a ping sent from it is answered.
    cdp.wait_for(
        &page,
        "document.querySelector('#console-state').textContent",
        |v| text(v) == "open",
    )
    .await;
    let message = r#"{"id": 7, "type": "ping", "data": {"from": "browser"}}"#;
    cdp.eval(
        &page,
        &format!(
            "document.querySelector('#console-input').value = {}; \
             document.querySelector('#console-send').click(); true",
            json!(message)
        ),
    )
    .await
    .unwrap();
    let received = cdp
        .wait_for(&page, RECEIVED, |v| {
            v.as_array().is_some_and(|frames| {
                frames.iter().any(|f| {
                    text(f).contains(r#""type":"pong""#) && text(f).contains(r#""from":"browser""#)
                })
            })
        })
        .await;
    let pong = received
        .as_array()
        .unwrap()
        .iter()
        .find(|f| text(f).contains("pong"))
        .unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(text(pong)).unwrap(),
        json!({"id": 7, "type": "pong", "data": {"from": "browser"}})
    );
    let output = cdp
        .eval(
            &page,
            "document.querySelector('#console-output').textContent",
        )
        .await
        .unwrap();
    assert!(text(&output).contains(r#""type":"pong""#), "{output}");

    // The connection count counts the console's own socket.
    cdp.wait_for(
        &page,
        "Number(document.querySelector('#connections').textContent)",
        |v| v.as_f64().is_some_and(|n| n >= 1.0),
    )
    .await;

    // Live: a new plugin appears, a bad file is listed as rejected with its
    // reason, and both are in the event log, without reloading the page.
    install(
        &build().plugin("fixture-echo-v1"),
        host.plugins.path(),
        "echo.so",
    );
    std::fs::write(host.plugins.path().join("junk.so"), b"junk").unwrap();
    let list = cdp
        .wait_for(&page, PLUGIN_ROWS, |v| {
            let rows = rows(v);
            rows.iter()
                .any(|row| row[0] == "echo" && row[2] == "loaded")
                && rows.iter().any(|row| row[2] == "rejected")
        })
        .await;
    let junk = rows(&list)
        .into_iter()
        .find(|row| row[2] == "rejected")
        .unwrap();
    assert!(junk.iter().any(|cell| cell == "junk.so"), "{junk:?}");
    assert!(
        junk.iter().any(|cell| cell.contains("not an ELF file")),
        "{junk:?}"
    );
    cdp.wait_for(
        &page,
        "document.querySelector('#events').textContent",
        |v| text(v).contains("loaded") && text(v).contains("rejected"),
    )
    .await;

    // More connections: the count follows without a reload.
    let before = cdp
        .eval(
            &page,
            "Number(document.querySelector('#connections').textContent)",
        )
        .await
        .unwrap()
        .as_f64()
        .unwrap();
    let _other = host.connect().await.unwrap();
    cdp.wait_for(
        &page,
        "Number(document.querySelector('#connections').textContent)",
        |v| v.as_f64() == Some(before + 1.0),
    )
    .await;
}

/// The raw HTTP response (head and body) of `GET path`.
async fn raw_get(addr: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    String::from_utf8(response).unwrap()
}

#[tokio::test]
async fn the_page_is_html_at_root_and_status_and_knows_the_ws_path() {
    let host = Host::start_with(&[], &["--ws-path", "/live/"]).unwrap();
    for path in ["/", "/status"] {
        let response = raw_get(&host.addr, path).await;
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: text/html; charset=utf-8"),
            "{head}"
        );
        assert!(
            body.contains(r#"<meta name="rohrpost-ws-path" content="/live/">"#),
            "{body}"
        );
        for id in [
            "plugins",
            "connections",
            "chart-messages",
            "chart-latency",
            "chart-connections",
            "chart-group-messages",
            "plugin-activity",
            "groups-largest",
            "group-search",
            "group-results",
            "console-input",
            "console-send",
            "console-output",
        ] {
            assert!(body.contains(&format!(r#"id="{id}""#)), "no #{id}");
        }
    }
    assert_eq!(get(&host.addr, "/nope").await.unwrap().0, 404);
}

// ---- charts, tables and screenshots under load ----

/// Keeps clients busy until dropped: pings (and a failing request now and
/// then) from a few connections, and messages to a group whose members
/// read them.
struct Load {
    stop: Arc<AtomicBool>,
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Joins `group` with `n` new connections that read whatever comes.
async fn members(host: &Host, group: &str, n: usize) {
    for _ in 0..n {
        let mut member = host.connect().await.unwrap();
        member.join(group).await.unwrap();
        tokio::spawn(async move { while member.recv(Duration::from_secs(120)).await.is_ok() {} });
    }
}

async fn start_load(host: &Host) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    members(host, "room-lobby", 5).await;
    members(host, "room-quiet", 2).await;
    for n in 0..3u64 {
        let mut client = host.connect().await.unwrap();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut id = 0;
            while !stop.load(Ordering::Relaxed) {
                id += 1;
                let request = if id % 10 == 0 {
                    json!({"id": id, "type": "fail"})
                } else if n == 0 {
                    json!({"id": id, "type": "group-send",
                        "data": {"group": "room-lobby", "message": id}})
                } else {
                    json!({"id": id, "type": "ping"})
                };
                if client.request(&request.to_string()).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
    }
    Load { stop }
}

/// How many pixels of `canvas` are close to the CSS colour `var` (the
/// charts draw their lines in the page's colours).
fn pixels_like(canvas: &str, var: &str) -> String {
    format!(
        "(() => {{
            const canvas = document.querySelector('{canvas}');
            const probe = document.createElement('div');
            probe.style.color = getComputedStyle(document.documentElement).getPropertyValue('{var}');
            document.body.appendChild(probe);
            const [r, g, b] = getComputedStyle(probe).color.match(/\\d+/g).map(Number);
            probe.remove();
            const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
            let n = 0;
            for (let i = 0; i < data.length; i += 4) {{
                if (data[i + 3] > 200 && Math.abs(data[i] - r) + Math.abs(data[i + 1] - g) + Math.abs(data[i + 2] - b) < 60) n++;
            }}
            return n;
        }})()"
    )
}

fn number(value: &Value) -> f64 {
    value.as_f64().unwrap_or(0.0)
}

/// Emulates a viewport of `width` x `height` CSS pixels.
async fn viewport(cdp: &mut Cdp, page: &str, width: u32, height: u32, scale: u32, mobile: bool) {
    cdp.call(
        Some(page),
        "Emulation.setDeviceMetricsOverride",
        json!({ "width": width, "height": height, "deviceScaleFactor": scale, "mobile": mobile }),
    )
    .await
    .unwrap();
    // The page redraws its charts a little after a resize.
    cdp.wait_for(
        page,
        "[innerWidth, document.querySelector('#chart-messages').width]",
        |v| {
            v[0].as_u64() == Some(u64::from(width))
                && v[1]
                    .as_u64()
                    .is_some_and(|w| w > 0 && w <= u64::from(width * scale))
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
}

/// Takes a screenshot of the viewport (or of the whole page, `clip`: its
/// CSS size) into the target directory; its path.
async fn screenshot(cdp: &mut Cdp, page: &str, name: &str, clip: Option<(f64, f64)>) -> PathBuf {
    let mut params = json!({ "format": "png" });
    if let Some((width, height)) = clip {
        params["captureBeyondViewport"] = json!(true);
        params["clip"] = json!({ "x": 0, "y": 0, "width": width, "height": height, "scale": 1 });
    }
    let shot = cdp
        .call(Some(page), "Page.captureScreenshot", params)
        .await
        .unwrap();
    let bytes = decode_base64(shot["data"].as_str().expect("screenshot data"));
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    } as u32;
    let text = text.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for chunk in text.chunks(4) {
        let mut bits = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            bits |= value(c) << (18 - 6 * i);
        }
        out.extend_from_slice(&bits.to_be_bytes()[1..chunk.len()]);
    }
    out
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Checks that `path` is a whole PNG of `width` x `height` pixels with a
/// picture in it (a blank page compresses to almost nothing): the
/// signature, every chunk's CRC, IHDR first, IEND last.
fn check_png(path: &Path, width: u32, height: u32) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{}", path.display());
    let mut at = 8;
    let mut kinds = Vec::new();
    let mut image_bytes = 0;
    while at < bytes.len() {
        let length = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let kind = &bytes[at + 4..at + 8];
        let data = &bytes[at + 8..at + 8 + length];
        let crc = u32::from_be_bytes(bytes[at + 8 + length..at + 12 + length].try_into().unwrap());
        assert_eq!(crc32(&bytes[at + 4..at + 8 + length]), crc, "chunk CRC");
        if kind == b"IHDR" {
            let w = u32::from_be_bytes(data[0..4].try_into().unwrap());
            let h = u32::from_be_bytes(data[4..8].try_into().unwrap());
            assert_eq!((w, h), (width, height), "{}", path.display());
        }
        if kind == b"IDAT" {
            image_bytes += length;
        }
        kinds.push(String::from_utf8_lossy(kind).into_owned());
        at += 12 + length;
    }
    assert_eq!(at, bytes.len());
    assert_eq!(kinds.first().map(String::as_str), Some("IHDR"));
    assert_eq!(kinds.last().map(String::as_str), Some("IEND"));
    assert!(
        image_bytes > 20_000,
        "{}: {image_bytes} bytes of image data",
        path.display()
    );
}

#[tokio::test]
async fn the_page_charts_a_short_load_lists_groups_and_reads_on_a_phone() {
    let browser = browser();
    let host = Host::start(&["ping", "fixture-testkit"]).unwrap();
    let _load = start_load(&host).await;
    let mut cdp = Cdp::connect(&browser.devtools_url).await.unwrap();
    let page = cdp
        .open_page(&format!("http://{}/", host.addr))
        .await
        .unwrap();
    viewport(&mut cdp, &page, 1280, 1000, 1, false).await;

    // A few seconds of samples with traffic: every chart has points and a
    // maximum above zero, and its lines are on the canvas.
    cdp.wait_for(
        &page,
        "['messages', 'latency', 'connections', 'group-messages'].map(id => \
         [Number(document.querySelector('#chart-' + id).dataset.points || 0), \
          Number(document.querySelector('#chart-' + id).dataset.max || 0)])",
        |v| {
            let charts = v.as_array().cloned().unwrap_or_default();
            charts.len() == 4
                && charts
                    .iter()
                    .all(|c| number(&c[0]) >= 8.0 && number(&c[1]) > 0.0)
        },
    )
    .await;
    for chart in [
        "#chart-messages",
        "#chart-latency",
        "#chart-connections",
        "#chart-group-messages",
    ] {
        let drawn = cdp
            .eval(&page, &pixels_like(chart, "--accent"))
            .await
            .unwrap();
        // Anti-aliased lines of 1.6 px: a few dozen pixels at full colour.
        assert!(number(&drawn) > 20.0, "{chart}: {drawn} pixels of its line");
    }
    // The failing requests are the error line.
    let errors = cdp
        .wait_for(&page, &pixels_like("#chart-messages", "--bad"), |v| {
            number(v) > 20.0
        })
        .await;
    assert!(number(&errors) > 20.0);
    let connections = cdp
        .eval(
            &page,
            "document.querySelector('#now-connections').textContent",
        )
        .await
        .unwrap();
    // 7 members, 3 load clients and the console's own socket.
    assert!(
        text(&connections).parse::<u32>().is_ok_and(|n| n >= 10),
        "{connections}"
    );

    // The plugins' activity: calls per second, percentiles, a trend.
    let activity = cdp
        .wait_for(
            &page,
            "Array.from(document.querySelectorAll('#plugin-activity tr'), \
             tr => Array.from(tr.cells, td => td.textContent))",
            |v| {
                rows(v).iter().any(|row| {
                    row[0].starts_with("ping ") && row[1].ends_with("/s") && row[1] != "0.0/s"
                })
            },
        )
        .await;
    let activity = rows(&activity);
    let ping = activity
        .iter()
        .find(|row| row[0].starts_with("ping "))
        .unwrap();
    assert!(ping[3].ends_with("s") && ping[4].ends_with("s"), "{ping:?}");
    assert_eq!(
        (ping[6].as_str(), ping[7].as_str(), ping[8].as_str()),
        ("0", "0", "worker")
    );
    assert!(
        activity.iter().any(|row| row[0].starts_with("testkit ")),
        "{activity:?}"
    );

    // The largest groups, and a search by name.
    cdp.wait_for(
        &page,
        "Array.from(document.querySelectorAll('#groups-largest tr'), \
         tr => [tr.cells[0].textContent, tr.cells[1].textContent])",
        |v| {
            rows(v)
                == [
                    vec!["room-lobby".to_owned(), "5".to_owned()],
                    vec!["room-quiet".to_owned(), "2".to_owned()],
                ]
        },
    )
    .await;
    cdp.eval(
        &page,
        "const box = document.querySelector('#group-search'); box.value = 'QUIET'; \
         box.dispatchEvent(new Event('input')); true",
    )
    .await
    .unwrap();
    cdp.wait_for(
        &page,
        "[Array.from(document.querySelectorAll('#group-results tr'), \
          tr => [tr.cells[0].textContent, tr.cells[1].textContent]), \
          document.querySelector('#group-search-state').textContent]",
        |v| {
            rows(&v[0]) == [vec!["room-quiet".to_owned(), "2".to_owned()]]
                && text(&v[1]) == "1 group matches."
        },
    )
    .await;

    let desktop = screenshot(&mut cdp, &page, "status-page-desktop.png", None).await;
    check_png(&desktop, 1280, 1000);
    let height = cdp
        .eval(&page, "document.documentElement.scrollHeight")
        .await
        .unwrap();
    let height = number(&height);
    let whole = screenshot(
        &mut cdp,
        &page,
        "status-page-desktop-full.png",
        Some((1280.0, height)),
    )
    .await;
    check_png(&whole, 1280, height as u32);

    // A phone: one column, nothing wider than the screen, the charts
    // redrawn at the new size.
    viewport(&mut cdp, &page, 390, 844, 2, true).await;
    let layout = cdp
        .eval(
            &page,
            "[document.documentElement.scrollWidth, \
              document.querySelector('#chart-messages').clientWidth, \
              document.querySelector('#chart-latency').getBoundingClientRect().top > \
              document.querySelector('#chart-messages').getBoundingClientRect().bottom, \
              Number(document.querySelector('#chart-messages').dataset.points)]",
        )
        .await
        .unwrap();
    assert!(
        number(&layout[0]) <= 390.0,
        "the page scrolls sideways: {layout}"
    );
    assert!((300.0..=390.0).contains(&number(&layout[1])), "{layout}");
    assert_eq!(layout[2], true, "charts stacked: {layout}");
    assert!(number(&layout[3]) >= 5.0, "{layout}");
    let drawn = cdp
        .eval(&page, &pixels_like("#chart-messages", "--accent"))
        .await
        .unwrap();
    assert!(number(&drawn) > 20.0, "{drawn}");
    let phone = screenshot(&mut cdp, &page, "status-page-phone.png", None).await;
    check_png(&phone, 780, 1688);
    println!(
        "screenshots: {} {} {}",
        desktop.display(),
        whole.display(),
        phone.display()
    );
}

/// The browser offers permessage-deflate on every socket: the page's
/// console works through a compressed one, and a page socket that speaks
/// rohrpost-js's subscription protocol gets a compressed notification.
#[tokio::test]
async fn the_browser_negotiates_compression_and_the_page_works_through_it() {
    let browser = browser();
    let config = "notify_token = \"deflate\"\n\n[plugins.subscriptions]\nauth = \"off\"\n";
    let host = Host::start_with_config(&["ping"], config, &[]).unwrap();
    install(
        &build().plugin("subscriptions"),
        host.plugins.path(),
        "libsubscriptions.so",
    );
    host.wait_for_log(&["event=\"loaded\"", "plugin=subscriptions"], T)
        .await
        .unwrap();
    let mut cdp = Cdp::connect(&browser.devtools_url).await.unwrap();
    let page = cdp
        .open_page(&format!("http://{}/", host.addr))
        .await
        .unwrap();
    cdp.wait_for(
        &page,
        "document.querySelector('#console-state').textContent",
        |v| text(v) == "open",
    )
    .await;

    // The console: a ping large enough to be compressed both ways.
    let filler = "compressed ".repeat(300);
    let message = json!({"id": 8, "type": "ping", "data": {"filler": filler}}).to_string();
    cdp.eval(
        &page,
        &format!(
            "document.querySelector('#console-input').value = {}; \
             document.querySelector('#console-send').click(); true",
            json!(message)
        ),
    )
    .await
    .unwrap();
    cdp.wait_for(&page, RECEIVED, |v| {
        v.as_array()
            .is_some_and(|frames| frames.iter().any(|f| text(f).contains(&filler)))
    })
    .await;

    // A socket of the page's own, as rohrpost-js opens it: the extension
    // is named, and a subscription's notification arrives whole.
    let url = format!("ws://{}/ws/rohrpost/", host.addr);
    cdp.eval(
        &page,
        &format!(
            "window.sub = {{log: []}}; \
             const ws = new WebSocket({url}); \
             ws.onopen = () => {{ window.sub.extensions = ws.extensions; \
               ws.send(JSON.stringify({{id: 1, type: 'subscribe', data: {{type: 'collection', id: 52}}}})); }}; \
             ws.onmessage = (event) => window.sub.log.push(event.data); true",
            url = json!(url)
        ),
    )
    .await
    .unwrap();
    cdp.wait_for(&page, "window.sub.log.length", |v| {
        v.as_u64().is_some_and(|n| n >= 1)
    })
    .await;
    let extensions = cdp.eval(&page, "window.sub.extensions").await.unwrap();
    assert_eq!(
        text(&extensions),
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
    );
    let items: Vec<Value> = (0..40)
        .map(|n| json!({"id": n, "title": format!("item {n}"), "done": n % 2 == 0}))
        .collect();
    let object = json!({"id": 52, "name": "list", "items": items});
    let body =
        json!({"model": "Collection", "pk": 52, "event": "update", "object": object}).to_string();
    let (status, answer) = host.notify(Some("deflate"), &body).await.unwrap();
    assert_eq!(
        (status, answer["delivered"].as_u64()),
        (200, Some(1)),
        "{answer}"
    );
    let log = cdp
        .wait_for(&page, "window.sub.log", |v| {
            v.as_array().is_some_and(|log| log.len() >= 2)
        })
        .await;
    let update: Value = serde_json::from_str(text(&log[1])).unwrap();
    assert_eq!(update["type"], "subscription-update", "{update}");
    assert_eq!(update["data"]["object"]["items"], object["items"]);
    // Both ways went compressed.
    for name in ["sent_compressed_bytes", "received_compressed_bytes"] {
        let series = format!("rohrpost_compression_{name}_total");
        let value = rohrpost_tests::metric_value(&host.addr, &series)
            .await
            .unwrap();
        assert!(value > 0.0, "{series} is {value}");
    }
}
