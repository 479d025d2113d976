//! ping/pong, the first rohrpost plugin: echoes `data` back in a `pong`.
//!
//! An object `data` is echoed as written (compacted, never parsed); any other
//! `data` is wrapped as `{"data": <value>}`; none gives a `pong` without one.

use rohrpost_plugin_api::prelude::*;

fn ping(req: &Request, conn: &mut Connection) -> HandlerResult {
    match req.data_json() {
        Some(other) if !other.starts_with('{') => {
            let wrapped = format!(r#"{{"data":{other}}}"#);
            conn.send_success_json(req.id(), "pong", Some(&wrapped));
        }
        data => conn.send_success_json(req.id(), "pong", data),
    }
    Ok(())
}

fn plugin() -> Plugin {
    Plugin::new("ping", env!("CARGO_PKG_VERSION"))
        .handle("ping", ping)
        .inline()
}

export_plugin!(plugin);
