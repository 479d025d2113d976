//! ping/pong, the first rohrpost plugin: echoes `data` back in a `pong`.
//!
//! An object `data` is echoed as written (compacted, never parsed); any other
//! `data` is wrapped as `{"data": <value>}`; none gives a `pong` without one.

use rohrpost_plugin_api::prelude::*;

fn ping(req: &Request, conn: &mut Connection) -> HandlerResult {
    let pong = Message::success(req.id(), "pong");
    let pong = match req.data_json() {
        None => pong,
        Some(object) if object.starts_with('{') => pong.data_json(object),
        Some(other) => pong.data_json(format!(r#"{{"data":{other}}}"#)),
    };
    conn.send_message(pong)?;
    Ok(())
}

fn plugin() -> Plugin {
    Plugin::new("ping", env!("CARGO_PKG_VERSION"))
        .handle("ping", ping)
        .inline()
}

export_plugin!(plugin);
