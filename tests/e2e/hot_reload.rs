//! Adding, replacing and deleting plugin files while the host serves: no
//! restart, no dropped connection, exactly one reply per request.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use rohrpost_tests::{build, install, Client, Host};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(10);

/// Sends `request` until the reply satisfies `done`, for up to 10 s.
async fn eventually(c: &mut Client, request: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + T;
    loop {
        let reply = c.request(request).await.unwrap();
        if done(&reply) {
            return reply;
        }
        assert!(Instant::now() < deadline, "still {reply} after {T:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn echo_version(reply: &Value) -> Option<&str> {
    reply["data"]["version"].as_str()
}

#[tokio::test]
async fn a_plugin_moved_into_an_empty_directory_starts_serving() {
    let host = Host::start(&[]).unwrap();
    let mut c = host.connect().await.unwrap();
    assert_eq!(
        c.request(r#"{"id":1,"type":"ping"}"#).await.unwrap(),
        json!({"id":1,"type":"ping","error":"Unknown message type 'ping'."})
    );
    install(&build().plugin("ping"), host.plugins.path(), "libping.so");
    eventually(&mut c, r#"{"id":2,"type":"ping"}"#, |r| r["type"] == "pong").await;
    host.wait_for_log(
        &[
            "event=\"loaded\"",
            "plugin=ping",
            "version=0.1.0",
            "types=[\"ping\"]",
        ],
        T,
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_plugin_copied_in_place_or_hard_linked_starts_serving() {
    let host = Host::start(&[]).unwrap();
    let mut c = host.connect().await.unwrap();
    // `cp` straight into the directory: written in several steps.
    std::fs::copy(
        build().plugin("ping"),
        host.plugins.path().join("libping.so"),
    )
    .unwrap();
    eventually(&mut c, r#"{"id":1,"type":"ping"}"#, |r| r["type"] == "pong").await;
    // A hard link, as cargo makes its outputs.
    std::fs::hard_link(
        build().plugin("fixture-echo-v1"),
        host.plugins.path().join("echo.so"),
    )
    .unwrap();
    eventually(&mut c, r#"{"id":2,"type":"echo"}"#, |r| {
        echo_version(r) == Some("1.0.0")
    })
    .await;
}

#[tokio::test]
async fn a_replaced_plugin_serves_new_requests_and_finishes_running_ones() {
    let host = Host::start(&[]).unwrap();
    let dir = host.plugins.path();
    install(&build().plugin("fixture-echo-v1"), dir, "echo.so");
    let mut a = host.connect().await.unwrap();
    let mut b = host.connect().await.unwrap();
    eventually(&mut b, r#"{"id":0,"type":"echo"}"#, |r| {
        echo_version(r) == Some("1.0.0")
    })
    .await;

    // A call is running on version 1 when version 2 replaces it.
    a.send_text(r#"{"id":"slow","type":"slow-echo","data":{"ms":1500}}"#)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    install(&build().plugin("fixture-echo-v2"), dir, "echo.so");
    host.wait_for_log(
        &[
            "event=\"replaced\"",
            "plugin=echo",
            "version=2.0.0",
            "previous_version=1.0.0",
        ],
        T,
    )
    .await
    .unwrap();
    // New requests go to version 2 at once...
    let reply = b.request(r#"{"id":1,"type":"echo"}"#).await.unwrap();
    assert_eq!(echo_version(&reply), Some("2.0.0"));
    // ...while the running call finishes on version 1, on an open connection.
    let reply = a.recv_json(T).await.unwrap();
    assert_eq!(
        reply,
        json!({"id":"slow","type":"slow-echo","data":{"version":"1.0.0"}})
    );
    let reply = a
        .request(r#"{"id":2,"type":"slow-echo","data":{"ms":1}}"#)
        .await
        .unwrap();
    assert_eq!(echo_version(&reply), Some("2.0.0"));
}

#[tokio::test]
async fn a_deleted_plugin_file_unregisters_its_types() {
    let host = Host::start(&["ping", "fixture-echo-v1"]).unwrap();
    let mut c = host.connect().await.unwrap();
    assert_eq!(
        echo_version(&c.request(r#"{"id":1,"type":"echo"}"#).await.unwrap()),
        Some("1.0.0")
    );
    std::fs::remove_file(
        build()
            .plugin("fixture-echo-v1")
            .file_name()
            .map(|n| host.plugins.path().join(n))
            .unwrap(),
    )
    .unwrap();
    let reply = eventually(&mut c, r#"{"id":2,"type":"slow-echo"}"#, |r| {
        r.get("error").is_some()
    })
    .await;
    assert_eq!(
        reply,
        json!({"id":2,"type":"slow-echo","error":"Unknown message type 'slow-echo'."})
    );
    host.wait_for_log(&["event=\"removed\"", "plugin=echo"], T)
        .await
        .unwrap();
    c.ping_ok(3).await.unwrap();
}

#[tokio::test]
async fn unchanged_content_is_not_reloaded() {
    // A debounce longer than the in-place copy of the library takes on a
    // busy machine: a half-written copy is a change of content.
    let host = Host::start_with(&["ping"], &["--reload-debounce", "1s"]).unwrap();
    let file = host.plugins.path().join("libping.so");
    std::fs::copy(build().plugin("ping"), &file).unwrap();
    install(&build().plugin("ping"), host.plugins.path(), "libping.so");
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let loads = host
        .log()
        .iter()
        .filter(|l| l.contains("plugin=ping") && l.contains("event="))
        .count();
    assert_eq!(loads, 1, "{:#?}", host.log());
}

/// Clients send continuously while the plugin is replaced again and again:
/// every request gets exactly one reply, and no connection drops.
#[tokio::test]
async fn replacing_under_load_loses_and_duplicates_nothing() {
    let host = Host::start(&["fixture-echo-v1"]).unwrap();
    let dir = host.plugins.path().to_owned();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for n in 0..4u64 {
        let mut c = host.connect().await.unwrap();
        let stop = stop.clone();
        clients.push(tokio::spawn(async move {
            let mut sent = 0u64;
            let mut versions = std::collections::BTreeSet::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Four requests in flight, then their four replies in order.
                for k in 0..4 {
                    c.send_text(&format!(
                        r#"{{"id":{},"type":"echo","data":{n}}}"#,
                        sent + k
                    ))
                    .await
                    .unwrap();
                }
                for k in 0..4 {
                    let reply = c.recv_json(T).await.unwrap();
                    assert_eq!(reply["id"], sent + k, "{reply}");
                    assert_eq!(reply["type"], "echo", "{reply}");
                    assert_eq!(reply["data"]["data"], n, "{reply}");
                    versions.insert(echo_version(&reply).unwrap().to_owned());
                }
                sent += 4;
            }
            c.expect_silence(Duration::from_millis(200)).await.unwrap();
            // The connection is still open and served after every
            // replacement.
            let last = c.request(r#"{"id":"last","type":"echo"}"#).await.unwrap();
            assert_eq!(
                (&last["id"], &last["type"]),
                (&json!("last"), &json!("echo")),
                "{last}"
            );
            (sent, versions)
        }));
    }
    let libraries = [
        build().plugin("fixture-echo-v2"),
        build().plugin("fixture-echo-v1"),
    ];
    let replaced = |host: &Host| {
        host.log()
            .iter()
            .filter(|l| l.contains("event=\"replaced\""))
            .count()
    };
    for round in 0..10 {
        replace(&libraries[round % 2], &dir);
        // Each version is in place before the next is written (two writes
        // within one debounce period would be one reload, or none when the
        // second restores the first), however slow the machine is today.
        let deadline = std::time::Instant::now() + T;
        while replaced(&host) < round + 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "replacement {} not logged: {:#?}",
                round + 1,
                host.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in clients {
        let (sent, versions) = c.await.unwrap();
        assert!(sent > 0);
        assert_eq!(versions.len(), 2, "saw {versions:?}");
    }
    assert_eq!(replaced(&host), 10, "{:#?}", host.log());
}

/// Installs `library` under the file name the host started with.
fn replace(library: &Path, dir: &Path) {
    let name = build().plugin("fixture-echo-v1");
    let name = name.file_name().unwrap().to_string_lossy();
    install(library, dir, &name);
}

/// The plugin's `[plugins.<name>]` table reaches it on load and again on
/// every reload; a table it refuses rejects that version only.
#[tokio::test]
async fn configuration_reaches_the_plugin_on_load_and_on_every_reload() {
    let config = "[plugins.testkit]\ngreeting = \"hi\"\nlimits = { max = 3 }\n";
    let host = Host::start_with_config(&["fixture-testkit"], config, &[]).unwrap();
    let mut c = host.connect().await.unwrap();
    let expected = json!({"id":1,"type":"config","data":{"greeting":"hi","limits":{"max":3}}});
    assert_eq!(
        c.request(r#"{"id":1,"type":"config"}"#).await.unwrap(),
        expected
    );

    // A new build of the same plugin (here: the same library with other
    // trailing bytes, which changes the file but not the code).
    let file = build().plugin("fixture-testkit");
    let mut bytes = std::fs::read(&file).unwrap();
    bytes.extend_from_slice(b"another build");
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    let tmp = host.plugins.path().join(".testkit.tmp");
    std::fs::write(&tmp, &bytes).unwrap();
    std::fs::rename(&tmp, host.plugins.path().join(&name)).unwrap();
    host.wait_for_log(&["event=\"replaced\"", "plugin=testkit"], T)
        .await
        .unwrap();
    assert_eq!(
        c.request(r#"{"id":1,"type":"config"}"#).await.unwrap(),
        expected
    );
}

#[tokio::test]
async fn a_refused_configuration_rejects_the_plugin() {
    let config = "[plugins.testkit]\nrefuse = true\n";
    let host = Host::start_with_config(&["ping", "fixture-testkit"], config, &[]).unwrap();
    host.wait_for_log(
        &[
            "event=\"rejected\"",
            "plugin=testkit",
            "version=1.0.0",
            "its configuration was refused: told to refuse this configuration",
        ],
        T,
    )
    .await
    .unwrap();
    let mut c = host.connect().await.unwrap();
    assert_eq!(
        c.request(r#"{"id":1,"type":"config"}"#).await.unwrap()["error"],
        "Unknown message type 'config'."
    );
    c.ping_ok(2).await.unwrap();
}
