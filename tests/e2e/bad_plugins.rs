//! Bad files in the plugins directory are rejected with a clear logged
//! reason; what was served before keeps serving; the host never crashes.

use std::time::Duration;

use rohrpost_tests::{build, install, Host};
use serde_json::json;

const T: Duration = Duration::from_secs(10);

/// Drops `bytes` into the directory as `name` (write, then rename).
fn drop_file(host: &Host, name: &str, bytes: &[u8]) {
    let tmp = host.plugins.path().join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, host.plugins.path().join(name)).unwrap();
}

async fn still_serving(host: &mut Host) {
    assert!(host.is_running(), "the host died");
    let mut c = host.connect().await.unwrap();
    c.ping_ok(1).await.unwrap();
    let reply = c.request(r#"{"id":2,"type":"echo"}"#).await.unwrap();
    assert_eq!(reply["data"]["version"], "1.0.0", "{reply}");
}

#[tokio::test]
async fn files_that_are_not_plugins_are_rejected_with_a_reason() {
    let mut host = Host::start(&["ping", "fixture-echo-v1"]).unwrap();
    drop_file(&host, "notes.so", b"this is not a library\n");
    host.wait_for_log(&["event=\"rejected\"", "notes.so", "not an ELF file"], T)
        .await
        .unwrap();
    still_serving(&mut host).await;

    install(
        &build().plugin("fixture-no-root"),
        host.plugins.path(),
        "noroot.so",
    );
    host.wait_for_log(
        &[
            "event=\"rejected\"",
            "noroot.so",
            "does not export a plugin root module",
        ],
        T,
    )
    .await
    .unwrap();
    still_serving(&mut host).await;

    // Files not named *.so are not looked at at all.
    drop_file(&host, "README.txt", b"hello");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!host
        .log()
        .iter()
        .any(|l| l.contains("README.txt") && l.contains("rejected")));
}

#[tokio::test]
async fn truncated_copies_of_a_real_plugin_are_rejected() {
    let mut host = Host::start(&["ping", "fixture-echo-v1"]).unwrap();
    let real = std::fs::read(build().plugin("fixture-echo-v2")).unwrap();
    for (n, cut) in [
        real.len() / 100,
        real.len() / 2,
        real.len() * 9 / 10,
        real.len() - 1,
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("cut{n}.so");
        drop_file(&host, &name, &real[..cut]);
        host.wait_for_log(&["event=\"rejected\"", &name, "truncated"], T)
            .await
            .unwrap();
        still_serving(&mut host).await;
    }
}

#[tokio::test]
async fn a_plugin_of_an_incompatible_abi_is_rejected() {
    let mut host = Host::start(&["ping", "fixture-echo-v1"]).unwrap();
    install(
        &build().plugin("fixture-abi-v2"),
        host.plugins.path(),
        "future.so",
    );
    let line = host
        .wait_for_log(
            &["event=\"rejected\"", "future.so", "incompatible plugin ABI"],
            T,
        )
        .await
        .unwrap();
    assert!(
        line.contains("uses ABI 2.0.0") && line.contains("speaks ABI 1."),
        "{line}"
    );
    still_serving(&mut host).await;
}

#[tokio::test]
async fn a_plugin_built_with_panic_abort_is_rejected() {
    let aborting = rohrpost_tests::build_echo_with_panic_abort();
    let mut host = Host::start(&["ping"]).unwrap();
    install(&aborting, host.plugins.path(), "aborting.so");
    host.wait_for_log(
        &[
            "event=\"rejected\"",
            "aborting.so",
            "plugin=echo",
            "panic = \"abort\"",
        ],
        T,
    )
    .await
    .unwrap();
    assert!(host.is_running());
    let mut c = host.connect().await.unwrap();
    c.ping_ok(1).await.unwrap();
    assert_eq!(
        c.request(r#"{"id":2,"type":"echo"}"#).await.unwrap()["error"],
        "Unknown message type 'echo'."
    );
}

#[tokio::test]
async fn a_plugin_claiming_a_served_type_is_rejected() {
    let mut host = Host::start(&["ping", "fixture-echo-v1"]).unwrap();
    install(
        &build().plugin("fixture-dup-ping"),
        host.plugins.path(),
        "dup.so",
    );
    host.wait_for_log(
        &[
            "event=\"rejected\"",
            "plugin=dup-ping",
            "message type 'ping' is already served by plugin 'ping'",
        ],
        T,
    )
    .await
    .unwrap();
    still_serving(&mut host).await;
    // None of its types were registered, not even the free one.
    let mut c = host.connect().await.unwrap();
    assert_eq!(
        c.request(r#"{"id":1,"type":"impostor"}"#).await.unwrap(),
        json!({"id":1,"type":"impostor","error":"Unknown message type 'impostor'."})
    );
    // Once the owner of "ping" is gone, the waiting plugin gets its turn.
    std::fs::remove_file(host.plugins.path().join("libping.so")).unwrap();
    host.wait_for_log(&["event=\"loaded\"", "plugin=dup-ping"], T)
        .await
        .unwrap();
    assert_eq!(
        c.request(r#"{"id":2,"type":"ping"}"#).await.unwrap(),
        json!({"id":2,"type":"impostor"})
    );
}

#[tokio::test]
async fn a_bad_replacement_keeps_the_previous_version_serving() {
    let mut host = Host::start(&["ping", "fixture-echo-v1"]).unwrap();
    let file = build().plugin("fixture-echo-v1");
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    let real = std::fs::read(build().plugin("fixture-echo-v2")).unwrap();
    drop_file(&host, &name, &real[..real.len() / 3]);
    let line = host
        .wait_for_log(&["event=\"rejected\"", &name], T)
        .await
        .unwrap();
    assert!(line.contains("still_serving=echo 1.0.0"), "{line}");
    still_serving(&mut host).await;
    // A good file under the same name is then taken.
    install(
        &build().plugin("fixture-echo-v2"),
        host.plugins.path(),
        &name,
    );
    host.wait_for_log(&["event=\"replaced\"", "version=2.0.0"], T)
        .await
        .unwrap();
}
