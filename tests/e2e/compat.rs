//! Plugins built against an earlier plugin-api release keep loading and
//! working in this host.

use std::time::Duration;

use rohrpost_tests::{build_compat_plugin, install, Host};
use serde_json::json;

#[tokio::test]
async fn a_plugin_built_against_plugin_api_1_0_loads_and_serves() {
    let old = build_compat_plugin("echo-1.0", "echo-abi-1-0");
    let host = Host::start(&["ping"]).unwrap();
    install(&old, host.plugins.path(), "echo.so");
    host.wait_for_log(
        &[
            "event=\"loaded\"",
            "plugin=echo",
            "version=abi-1.0",
            "api=1.0.0",
        ],
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let mut c = host.connect().await.unwrap();
    assert_eq!(
        c.request(r#"{"id":1,"type":"echo","data":[1]}"#)
            .await
            .unwrap(),
        json!({"id":1,"type":"echo","data":{"version":"abi-1.0","data":[1]}})
    );
    c.ping_ok(2).await.unwrap();
}
