//! ping/pong, the first rohrpost plugin: echoes `data` back in a `pong`.
//!
//! An object `data` is echoed as it is (`{}` included); any other `data` is
//! wrapped as `{"data": <value>}`; no `data` gives a `pong` without one.

use rohrpost_plugin_api::prelude::*;

fn ping(req: &Request, conn: &mut Connection) {
    let data = match req.data() {
        None => None,
        Some(Value::Object(object)) => Some(Value::Object(object.clone())),
        Some(other) => Some(json!({ "data": other })),
    };
    conn.send_success(req.id(), "pong", data);
}

fn plugin() -> Plugin {
    Plugin::new("ping", env!("CARGO_PKG_VERSION"))
        .handle("ping", ping)
        .inline()
}

export_plugin!(plugin);
