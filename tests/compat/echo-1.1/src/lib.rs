//! The "echo" test plugin, built against plugin-api 1.1.0, with what that
//! release offers a plugin: its configuration (`with_config`), groups
//! (join, leave, send to a group) and change notifications (`notify`).
//!
//! - `echo`: answers with its version, its configured greeting and the data.
//! - `echo.join` / `echo.leave` `{"room": R}`: joins or leaves `room-R`.
//! - `echo.say` `{"room": R, "text": T}`: sends `echo.said` to `room-R`.
//! - `echo.notify` `{"room": R}`: the change notification of the `Room` R
//!   (to `room-R`), its field `text` updated.

use std::sync::OnceLock;

use rohrpost_plugin_api::prelude::*;

/// The `[plugins.echo]` table of the host's config file.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default = "default_greeting")]
    greeting: String,
}

fn default_greeting() -> String {
    "hello".to_owned()
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();

fn configure(settings: Settings) -> HandlerResult {
    SETTINGS.set(settings).map_err(|_| "configured twice")?;
    Ok(())
}

fn greeting() -> &'static str {
    SETTINGS
        .get()
        .map_or("unconfigured", |s| s.greeting.as_str())
}

fn echo(req: &Request, conn: &mut Connection) -> HandlerResult {
    let data = json!({ "version": "abi-1.1", "greeting": greeting(), "data": req.data() });
    conn.send_success(req.id(), "echo", Some(data))?;
    Ok(())
}

/// The `room` of the request's data.
fn room<'a>(req: &'a Request) -> Result<&'a str, &'static str> {
    req.data()
        .and_then(|d| d.get("room"))
        .and_then(Value::as_str)
        .ok_or("data.room is required")
}

fn membership(req: &Request, conn: &mut Connection) -> HandlerResult {
    let room = room(req)?;
    let group = format!("room-{room}");
    if req.kind() == "echo.join" {
        conn.add_to_group(&group);
    } else {
        conn.remove_from_group(&group);
    }
    conn.send_success(req.id(), req.kind(), Some(json!({ "group": group })))?;
    Ok(())
}

fn say(req: &Request, conn: &mut Connection) -> HandlerResult {
    let room = room(req)?;
    let text = req
        .data()
        .and_then(|d| d.get("text"))
        .cloned()
        .unwrap_or(Value::Null);
    let said = Message::new()
        .kind("echo.said")
        .generate_id()
        .data(json!({ "room": room, "text": text, "greeting": greeting() }));
    conn.send_to_group(&format!("room-{room}"), said)?;
    conn.send_success(req.id(), req.kind(), None)?;
    Ok(())
}

fn notify(req: &Request, conn: &mut Connection) -> HandlerResult {
    let room = room(req)?;
    conn.notify(&Notification::new("Room", room, Event::Update).updated_fields(["text"]))?;
    conn.send_success(req.id(), req.kind(), None)?;
    Ok(())
}

fn plugin() -> Plugin {
    Plugin::new("echo", "abi-1.1")
        .with_config(configure)
        .inline_handler("echo", echo)
        .inline_handler(["echo.join", "echo.leave"], membership)
        .handler("echo.say", say)
        .handler("echo.notify", notify)
}

export_plugin!(plugin);
