//! The "echo" test plugin, built against plugin-api 1.0.0: answers `echo`
//! with its version.

use rohrpost_plugin_api::prelude::*;

fn echo(req: &Request, conn: &mut Connection) -> HandlerResult {
    conn.send_success(req.id(), "echo", Some(json!({ "version": "abi-1.0", "data": req.data() })))?;
    Ok(())
}

fn plugin() -> Plugin {
    Plugin::new("echo", "abi-1.0").handler("echo", echo)
}

export_plugin!(plugin);
