//! The files in `deploy/` are what an operator installs: the example
//! configuration must pass the check the service runs before every start
//! and serve as it is (only its address and directories moved for the
//! test), and the systemd unit must be one systemd accepts without a
//! warning.

use std::process::Command;

use rohrpost_tests::{build, workspace, Host, TempDir};

fn deploy_file(name: &str) -> String {
    std::fs::read_to_string(workspace().join("deploy").join(name))
        .unwrap_or_else(|e| panic!("deploy/{name}: {e}"))
}

#[test]
fn the_example_config_passes_the_services_check() {
    let output = Command::new(build().host())
        .arg("--check-config")
        .arg(workspace().join("deploy/rohrpost.toml"))
        .output()
        .expect("the host runs");
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn the_example_config_serves() {
    // The test's own address and plugins directory instead of the
    // machine's; everything else as shipped.
    let config: String = deploy_file("rohrpost.toml")
        .lines()
        .filter(|line| !line.starts_with("listen") && !line.starts_with("plugins_dir"))
        .map(|line| format!("{line}\n"))
        .collect();
    let host = Host::start_with_config(&["ping", "subscriptions"], &config, &[]).unwrap();
    let mut client = host.connect().await.unwrap();
    client.ping_ok(1).await.unwrap();
    // The subscriptions plugin loaded with its table (JWT, so an unsigned
    // subscription is refused).
    let reply = client
        .request(r#"{"id":2,"type":"subscribe","data":{"type":"room","id":1}}"#)
        .await
        .unwrap();
    assert_eq!(reply["error"], "ACCESS_DENIED", "{reply}");
}

#[test]
fn systemd_accepts_the_unit() {
    let unit = deploy_file("rohrpost.service");
    assert!(unit.contains(
        "ExecStartPre=/usr/local/bin/rohrpost --check-config /etc/rohrpost/rohrpost.toml"
    ));
    assert!(unit.contains("ExecStart=/usr/local/bin/rohrpost --config /etc/rohrpost/rohrpost.toml"));
    // systemd checks that the programs exist: point it at the built one.
    let host = build().host();
    let dir = TempDir::new("unit");
    let file = dir.path().join("rohrpost.service");
    std::fs::write(
        &file,
        unit.replace("/usr/local/bin/rohrpost", &host.to_string_lossy()),
    )
    .expect("written");
    let output = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&file)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "systemd-analyze cannot run ({e}): install Debian's systemd \
                 (`apt-get install systemd`, as .ci/run does)"
            )
        });
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success() && said.trim().is_empty(), "{said}");
}
