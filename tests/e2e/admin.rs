//! What operators see: health and readiness, the plugins list with counts
//! and rejection reasons, Prometheus metrics, and the plugin-directory
//! safety rules (OpenSSH `StrictModes` as the model).

use std::time::{Duration, Instant};

use rohrpost_tests::{build, get, install, set_mode, Host};
use serde_json::Value;

const T: Duration = Duration::from_secs(10);

async fn plugins(host: &Host) -> Vec<Value> {
    let (status, body) = get(&host.addr, "/api/plugins").await.unwrap();
    assert_eq!(status, 200);
    let value: Value = serde_json::from_str(&body).unwrap();
    value["plugins"].as_array().unwrap().clone()
}

fn named<'a>(list: &'a [Value], name: &str) -> Option<&'a Value> {
    list.iter().find(|p| p["name"] == name)
}

/// Waits until `/api/plugins` satisfies `done`.
async fn plugins_until(host: &Host, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + T;
    loop {
        let list = plugins(host).await;
        if done(&list) {
            return list;
        }
        assert!(Instant::now() < deadline, "still {list:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn metric(host: &Host, line_start: &str) -> f64 {
    let (status, body) = get(&host.addr, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    body.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric {line_start} in:\n{body}"))
}

#[tokio::test]
async fn health_readiness_and_the_plugins_list() {
    // ping in the server's process: a replaced version stays mapped and
    // is counted (a worker's version goes with its worker).
    let host = Host::start_with_config(
        &["ping", "fixture-testkit"],
        "[plugins.ping]\nisolation = \"none\"\n",
        &[],
    )
    .unwrap();
    assert_eq!(get(&host.addr, "/healthz").await.unwrap().0, 200);
    let (status, body) = get(&host.addr, "/readyz").await.unwrap();
    assert_eq!((status, body.contains("ready")), (200, true));

    let mut c = host.connect().await.unwrap();
    for i in 0..3 {
        c.ping_ok(i).await.unwrap();
    }
    c.request(r#"{"id":1,"type":"fail"}"#).await.unwrap();
    c.request(r#"{"id":2,"type":"panic"}"#).await.unwrap();
    let list = plugins(&host).await;
    let ping = named(&list, "ping").expect("ping listed");
    assert_eq!(ping["status"], "loaded");
    assert_eq!(ping["types"], serde_json::json!(["ping"]));
    assert_eq!(ping["calls"], 3);
    assert!(ping["loaded_at"].as_f64().unwrap() > 1.0e9);
    let testkit = named(&list, "testkit").unwrap();
    assert_eq!(
        (testkit["errors"].as_u64(), testkit["panics"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(testkit["retired_versions"], 0);
    assert_eq!(
        (&ping["isolation"], &testkit["isolation"]),
        (&serde_json::json!("none"), &serde_json::json!("process"))
    );

    // A bad file is listed with its reason; a replacement counts a retired version.
    std::fs::write(host.plugins.path().join("junk.so"), b"junk").unwrap();
    let mut bytes = std::fs::read(build().plugin("ping")).unwrap();
    bytes.extend_from_slice(b"rebuilt");
    let tmp = host.plugins.path().join(".ping.tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, host.plugins.path().join("libping.so")).unwrap();
    let list = plugins_until(&host, |l| {
        l.iter().any(|p| p["status"] == "rejected")
            && named(l, "ping").is_some_and(|p| p["retired_versions"] == 1)
    })
    .await;
    let junk = list.iter().find(|p| p["status"] == "rejected").unwrap();
    assert!(junk["file"].as_str().unwrap().ends_with("junk.so"));
    assert!(
        junk["reason"].as_str().unwrap().contains("not an ELF file"),
        "{junk}"
    );
}

#[tokio::test]
async fn prometheus_metrics_count_connections_messages_and_plugin_events() {
    let host = Host::start(&["ping", "fixture-testkit"]).unwrap();
    let mut a = host.connect().await.unwrap();
    let _b = host.connect().await.unwrap();
    a.ping_ok(1).await.unwrap();
    a.ping_ok(2).await.unwrap();
    a.request(r#"{"id":3,"type":"nope"}"#).await.unwrap();
    a.request("[]").await.unwrap();
    a.request(r#"{"id":4,"type":"fail"}"#).await.unwrap();
    assert_eq!(metric(&host, "rohrpost_connections ").await, 2.0);
    assert_eq!(
        metric(
            &host,
            r#"rohrpost_messages_total{type="ping",outcome="ok"}"#
        )
        .await,
        2.0
    );
    assert_eq!(
        metric(
            &host,
            r#"rohrpost_messages_total{type="fail",outcome="error"}"#
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(
            &host,
            r#"rohrpost_messages_total{type="",outcome="unknown_type"}"#
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(
            &host,
            r#"rohrpost_messages_total{type="",outcome="invalid"}"#
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(
            &host,
            r#"rohrpost_handler_duration_seconds_count{plugin="ping"}"#
        )
        .await,
        2.0
    );
    assert_eq!(
        metric(&host, r#"rohrpost_plugin_events_total{event="loaded"}"#).await,
        2.0
    );
    assert_eq!(
        metric(&host, "rohrpost_outbound_queue_drops_total").await,
        0.0
    );
}

#[tokio::test]
async fn plugin_files_others_could_write_are_refused_until_fixed() {
    let mut host = Host::start(&["ping"]).unwrap();
    let dir = host.plugins.path().to_owned();
    let mut c = host.connect().await.unwrap();

    // Group-writable: refused, with the reason in the log and the list.
    let file = dir.join("echo.so");
    let tmp = dir.join(".echo.tmp");
    std::fs::copy(build().plugin("fixture-echo-v1"), &tmp).unwrap();
    set_mode(&tmp, 0o664);
    std::fs::rename(&tmp, &file).unwrap();
    host.wait_for_log(
        &[
            "event=\"rejected\"",
            "echo.so",
            "writable by group or others (mode 0664)",
        ],
        T,
    )
    .await
    .unwrap();
    let list = plugins_until(&host, |l| l.iter().any(|p| p["status"] == "rejected")).await;
    assert!(list.iter().any(|p| p["reason"]
        .as_str()
        .is_some_and(|r| r.contains("mode 0664"))));
    assert_eq!(
        c.request(r#"{"id":1,"type":"echo"}"#).await.unwrap()["error"],
        "Unknown message type 'echo'."
    );

    // Fixed: loaded, without touching the content.
    set_mode(&file, 0o644);
    host.wait_for_log(&["event=\"loaded\"", "plugin=echo"], T)
        .await
        .unwrap();
    assert_eq!(
        c.request(r#"{"id":2,"type":"echo"}"#).await.unwrap()["type"],
        "echo"
    );

    // Owned by another user (only root can arrange that).
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let other = dir.join("other.so");
        std::fs::copy(build().plugin("fixture-testkit"), &other).unwrap();
        set_mode(&other, 0o644);
        std::os::unix::fs::chown(&other, Some(65534), Some(65534)).unwrap();
        host.wait_for_log(&["event=\"rejected\"", "other.so", "owned by uid 65534"], T)
            .await
            .unwrap();
    }
    assert!(host.is_running());
    c.ping_ok(3).await.unwrap();
}

#[tokio::test]
async fn a_plugins_directory_others_could_write_loads_nothing() {
    let host = Host::start(&[]).unwrap();
    set_mode(host.plugins.path(), 0o777);
    install(&build().plugin("ping"), host.plugins.path(), "libping.so");
    host.wait_for_log(
        &[
            "event=\"rejected\"",
            "the plugins directory is writable by group or others",
        ],
        T,
    )
    .await
    .unwrap();
    let mut c = host.connect().await.unwrap();
    assert_eq!(
        c.request(r#"{"id":1,"type":"ping"}"#).await.unwrap()["error"],
        "Unknown message type 'ping'."
    );
}

#[tokio::test]
async fn symlinks_may_point_inside_the_directory_only() {
    let outside = rohrpost_tests::TempDir::new("outside");
    let host = Host::start(&[]).unwrap();
    let dir = host.plugins.path();
    install(&build().plugin("ping"), outside.path(), "libping.so");
    std::os::unix::fs::symlink(outside.path().join("libping.so"), dir.join("escape.so")).unwrap();
    host.wait_for_log(
        &[
            "event=\"rejected\"",
            "escape.so",
            "a symlink leading out of the plugins directory",
        ],
        T,
    )
    .await
    .unwrap();

    // A link to a file beside it (a versioned deploy) is fine.
    install(&build().plugin("fixture-echo-v1"), dir, ".echo-1.0.so");
    std::os::unix::fs::symlink(dir.join(".echo-1.0.so"), dir.join("echo.so")).unwrap();
    host.wait_for_log(&["event=\"loaded\"", "plugin=echo"], T)
        .await
        .unwrap();
}
