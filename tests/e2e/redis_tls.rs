//! Groups over a Redis that speaks TLS only: two hosts share their groups
//! through it when they trust its CA (from `--redis-tls-ca`), in their own
//! format and in channels_redis's core layer (whose inbox the host pops
//! over a connection of its own, with the same CA, password and DB), a
//! host that
//! trusts another CA does not start and says why, and `--check-config`
//! refuses the TLS settings the server could not start with.
//!
//! The test makes its CA with the `openssl` command and starts a
//! `redis-server` of its own on a free port.

use std::{path::Path, time::Duration};

use rohrpost_tests::{
    redis::{free_port, tls_cli, OwnRedis},
    tls::{refused_with_ca, TestTls},
    Client, Host, TempDir,
};
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(10);

fn host_over_tls(url: &str, ca: &Path) -> Host {
    Host::start_with(
        &["ping", "fixture-testkit"],
        &[
            "--groups",
            url,
            "--groups-prefix",
            "tls:",
            "--redis-tls-ca",
            &ca.to_string_lossy(),
        ],
    )
    .unwrap()
}

async fn expect_payload(client: &mut Client, payload: &str) {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let m: Value = client.recv_json(left).await.unwrap();
        if m["type"] == "group-message" && m["data"]["payload"] == payload {
            return;
        }
    }
}

#[tokio::test]
async fn two_hosts_share_groups_over_tls_with_a_ca_file() {
    let tls = TestTls::new("shared");
    let port = free_port();
    let _redis = OwnRedis::start_tls(port, &tls).await;
    let url = format!("rediss://127.0.0.1:{port}/0");
    let (a, b) = (
        host_over_tls(&url, &tls.ca_cert),
        host_over_tls(&url, &tls.ca_cert),
    );
    let mut on_a = a.connect().await.unwrap();
    let mut on_b = b.connect().await.unwrap();
    on_a.join("room").await.unwrap();
    on_b.join("room").await.unwrap();
    let mut sender = a.connect().await.unwrap();
    let request = json!({"id": 1, "type": "group-send",
        "data": {"group": "room", "message": "over tls"}});
    let reply = sender.request(&request.to_string()).await.unwrap();
    assert_eq!(reply, json!({"id": 1, "type": "group-send"}));
    expect_payload(&mut on_a, "over tls").await;
    expect_payload(&mut on_b, "over tls").await;
    // Both hosts are subscribed on the TLS server itself.
    let ca = tls.ca_cert.to_string_lossy();
    let numsub = tls_cli(port, &ca, &["PUBSUB", "NUMSUB", "tls:group:room"]);
    assert!(numsub.ends_with('2'), "{numsub}");
    // And the reverse way.
    let mut on_b_sender = b.connect().await.unwrap();
    let request = json!({"id": 2, "type": "group-send",
        "data": {"group": "room", "message": "back"}});
    on_b_sender.request(&request.to_string()).await.unwrap();
    expect_payload(&mut on_a, "back").await;
}

#[tokio::test]
async fn two_hosts_share_core_layer_groups_over_tls_with_a_password_and_a_db() {
    let tls = TestTls::new("core");
    let port = free_port();
    let _redis = OwnRedis::start_tls_with(port, &tls, &["--requirepass", "s3cret"]).await;
    let dir = TempDir::new("redis-password");
    let password = dir.path().join("password");
    std::fs::write(&password, "s3cret\n").unwrap();
    let url = format!("channels_redis+tls://127.0.0.1:{port}/3");
    let host = || {
        Host::start_with(
            &["ping", "fixture-testkit"],
            &[
                "--groups",
                &url,
                "--redis-tls-ca",
                &tls.ca_cert.to_string_lossy(),
                "--redis-password-file",
                &password.to_string_lossy(),
            ],
        )
        .unwrap()
    };
    let (a, b) = (host(), host());
    let mut on_a = a.connect().await.unwrap();
    let mut on_b = b.connect().await.unwrap();
    on_a.join("room").await.unwrap();
    on_b.join("room").await.unwrap();
    let mut sender = a.connect().await.unwrap();
    let request = json!({"id": 1, "type": "group-send",
        "data": {"group": "room", "message": "core over tls"}});
    sender.request(&request.to_string()).await.unwrap();
    expect_payload(&mut on_a, "core over tls").await;
    expect_payload(&mut on_b, "core over tls").await;
    let mut from_b = b.connect().await.unwrap();
    let request = json!({"id": 2, "type": "group-send",
        "data": {"group": "room", "message": "and back"}});
    from_b.request(&request.to_string()).await.unwrap();
    expect_payload(&mut on_a, "and back").await;
    // The group's set is in DB 3, behind the password.
    let ca = tls.ca_cert.to_string_lossy();
    let members = tls_cli(
        port,
        &ca,
        &["-a", "s3cret", "-n", "3", "ZCARD", "asgi:group:room"],
    );
    assert!(members.ends_with('2'), "{members}");
}

#[tokio::test]
async fn a_host_that_trusts_another_ca_does_not_start_and_says_why() {
    let tls = TestTls::new("server");
    let other = TestTls::new("other");
    let port = free_port();
    let _redis = OwnRedis::start_tls(port, &tls).await;
    let plugins = TempDir::new("wrong-ca");
    let url = format!("rediss://127.0.0.1:{port}/0");
    let (code, stderr) = refused_with_ca(&url, &other.ca_cert, plugins.path());
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot reach Redis at {url}")),
        "{stderr}"
    );
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");
}

#[test]
fn check_config_refuses_tls_settings_the_server_cannot_start_with() {
    let tls = TestTls::new("check");
    let dir = TempDir::new("check-tls");
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let check = |toml: &str| rohrpost_tests::check_config(dir.path(), toml);
    let ca = tls.ca_cert.to_string_lossy();
    let (code, stderr) = check(&format!(
        "groups = \"rediss://127.0.0.1:1/0\"\nredis_tls_ca = \"{ca}\"\n"
    ));
    assert_eq!(code, Some(0), "{stderr}");
    let (code, stderr) = check(&format!(
        "groups = \"channels_redis+tls://127.0.0.1:1/0\"\nredis_tls_ca = \"{ca}\"\n"
    ));
    assert_eq!(code, Some(0), "{stderr}");
    let refused = [
        (
            format!("groups = \"rediss://127.0.0.1:1/0\"\nredis_tls_ca = \"{}\"\n", junk.display()),
            "redis_tls_ca",
        ),
        (
            "groups = \"rediss://127.0.0.1:1/0\"\nredis_tls_ca = \"/nonexistent/ca.pem\"\n"
                .to_owned(),
            "cannot read redis_tls_ca",
        ),
        (
            format!("groups = \"redis://127.0.0.1:1/0\"\nredis_tls_ca = \"{ca}\"\n"),
            "not a TLS one",
        ),
        (
            format!("groups = \"rediss://127.0.0.1:1/0\"\nredis_tls_cert = \"{ca}\"\n"),
            "go together",
        ),
        (
            format!(
                "groups = \"rediss://127.0.0.1:1/0\"\nredis_tls_cert = \"{}\"\nredis_tls_key = \"{}\"\n",
                tls.server_cert.display(),
                tls.ca_cert.display()
            ),
            "redis_tls_key",
        ),
    ];
    for (toml, expected) in refused {
        let (code, stderr) = check(&toml);
        assert_eq!(code, Some(1), "{toml}: {stderr}");
        assert!(stderr.contains(expected), "{toml}: {stderr}");
    }
}
