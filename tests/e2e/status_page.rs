//! The status page in a real headless browser: Chromium, driven over the
//! Chrome DevTools Protocol (CDP), opens the page of a running host, sees the
//! plugins and their live changes, and sends a ping from the page's console.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
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
const T: Duration = Duration::from_secs(15);

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
            "console-input",
            "console-send",
            "console-output",
        ] {
            assert!(body.contains(&format!(r#"id="{id}""#)), "no #{id}");
        }
    }
    assert_eq!(get(&host.addr, "/nope").await.unwrap().0, 404);
}
