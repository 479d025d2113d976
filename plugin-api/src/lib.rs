//! Write rohrpost message handlers in plain Rust and ship them as plugins
//! that a running rohrpost host loads, replaces and unloads without a restart.
//!
//! A plugin is a `cdylib` crate: a few handler functions, a [`Plugin`] that
//! names them and the message types they serve, and one [`export_plugin!`]
//! line. The repository's `docs/plugins.md` ("Writing a plugin") has the
//! way from nothing to a served plugin (`cargo xtask new-plugin`,
//! `cargo xtask dev`); this page is the reference.
//!
//! ```
//! use rohrpost_plugin_api::prelude::*;
//!
//! #[derive(serde::Deserialize)]
//! struct Greet {
//!     name: String,
//! }
//!
//! /// `{"id":1,"type":"greet","data":{"name":"Ada"}}` →
//! /// `{"id":1,"type":"greet","data":{"text":"Hello, Ada!"}}`.
//! fn greet(Data(greet): Data<Greet>) -> Result<Value, Refusal> {
//!     if greet.name.is_empty() {
//!         return refuse("Say who you are.");
//!     }
//!     Ok(json!({ "text": format!("Hello, {}!", greet.name) }))
//! }
//!
//! fn plugin() -> Plugin {
//!     Plugin::new("greeter", env!("CARGO_PKG_VERSION"))
//!         .handle("greet", greet)
//!         .inline()
//! }
//!
//! export_plugin!(plugin);
//! # fn main() {}
//! ```
//!
//! The crate's `Cargo.toml` needs `crate-type = ["cdylib"]` under `[lib]`
//! and this crate as a dependency; `cargo build --release` then makes
//! `target/release/lib<crate>.so`, which a host loads once it is renamed
//! into its plugins directory.
//!
//! # Handlers
//!
//! [`Plugin::handle`] registers a handler for one message type or several
//! ([`Types`]): a function or a closure whose arguments are what it needs,
//! in any order, and whose return value is its answer (since 1.4; the
//! methods of earlier versions still work, deprecated).
//!
//! Its arguments may be:
//!
//! - [`&Request`](Request): the message as the client sent it:
//!   [`Request::id`], [`Request::kind`] (the type), [`Request::data`],
//!   [`Request::field`] for any other top-level field such as `auth_jwt`,
//!   [`Request::get`] for what the plugin attached to the connection, and
//!   [`Request::scope`]: the connection id, remote address, path, query
//!   string and headers of the WebSocket handshake.
//! - [`&mut Connection`](Connection): the caller: [`Connection::reply`]
//!   and [`Connection::reply_error`] answer the request,
//!   [`Connection::send_message`] sends any other [`Message`] (with a
//!   [generated id](Message::generate_id) for instance),
//!   [`Connection::close`] and [`Connection::close_with`] end it; the groups
//!   ([`Connection::add_to_group`], [`Connection::remove_from_group`],
//!   [`Connection::send_to_group`], [`Connection::publish`],
//!   [`Connection::group_size`]), state kept on the connection
//!   ([`Connection::set`]) and change notifications
//!   ([`Connection::notify`]). What it asks for is carried out in order
//!   once the handler returns successfully.
//! - [`Data<T>`]: `data` deserialized into your type. A `data` that does
//!   not fit gets an error reply naming the field (`Invalid data:
//!   items[1].amount: invalid type: string "2", expected u64`) and the
//!   handler does not run. `Result<Data<T>, DataError>` leaves that to the
//!   handler: it can check a token first, and answer with a text of its
//!   own.
//! - The plugin's state ([`Plugin::with_state`]): `&S` as the first
//!   argument, or [`State<S>`](State) anywhere.
//!
//! It returns:
//!
//! - `()` or a [`HandlerResult`] when it answered itself (or has nothing
//!   to answer);
//! - `Result<T, E>`: `Ok` is the reply's `data` (a [`Value`](serde_json::Value),
//!   or any serializable type as [`Json`]; `null` answers without `data`),
//!   `Err` any error, `&str` or `String`, which becomes the error reply
//!   `{"id","type","error":"<its text>"}`. An error discards everything the
//!   handler had queued: the client gets the error reply alone.
//!
//! **A refusal or an error?** An error is a failed call: the host logs it
//! (a warning naming the plugin, the type and the text) and counts it as an
//! error in `/metrics` and `/api/plugins`. An expected refusal, such as a
//! denied subscription or a missing field, is not a failure: return a
//! [`Refusal`] ([`refuse`]`("...")`), or answer with
//! [`Connection::reply_error`]: the same reply without the log line and the
//! count. [`HandlerError`] is the error type that takes both: `?` converts
//! a refusal, a [`MessageError`] and any other error into it.
//!
//! A handler may block (a database query, a call to another service): the
//! host runs it on a worker pool, a bounded number of calls per plugin at
//! once, and answers its caller with an error after `--handler-timeout`.
//! [`Plugin::inline`] declares the handler just added one that only
//! computes and returns within microseconds: the host runs it on the
//! connection's own task, several times cheaper than the hand-off to the
//! pool, and moves it to the pool while it is repeatedly slower than
//! `--inline-budget`. Either way the requests of one connection are answered
//! one after another, in order.
//!
//! # State, hooks, connection state, groups, reports (since 1.2)
//!
//! - **State without statics.** [`Plugin::with_state`] builds a value from
//!   the plugin's `[plugins.<name>]` table once per load; the handlers and
//!   hooks of the [`Stateful`] plugin it returns may take it. A new version
//!   of the plugin starts with a fresh state; the old one is dropped when
//!   its last call ends. The message types may come from it too
//!   ([`Types::configured`]).
//! - **Connection hooks.** [`Plugin::on_connect`] runs before a
//!   connection's first message is read and may refuse it
//!   ([`Connection::close_with`]), join groups, send messages and attach
//!   data; [`Plugin::on_disconnect`] runs once after it ended, however it
//!   ended ([`ConnectionEvent`]).
//! - **Connection state.** [`Connection::set`] attaches a JSON value to the
//!   connection for the plugin's later calls on it ([`Request::get`]),
//!   invisible to other plugins, dropped with the connection, bounded by
//!   the host (`max_connection_state_bytes`, 64 KiB by default).
//! - **Group sizes.** [`Connection::group_size`] asks the host how many
//!   connections are in a group, across all hosts sharing the groups
//!   through Redis, counting the call's own earlier joins and leaves;
//!   [`Connection::send_to_group`] returns how many connections of this
//!   host the message goes to, and [`Connection::publish`] tells both,
//!   asking once.
//! - **Counters and log lines through the host** (since 1.3).
//!   [`host::count`] counts an event of the plugin in the host's
//!   `/metrics` (`rohrpost_plugin_counts_total{plugin,event,kind}`), and
//!   [`host::log`] writes a line through the host's log, in its format
//!   (text or JSON) and with the plugin's name; both bounded by the host
//!   (see [`host`]). With the `tracing` feature, `host::HostSubscriber`
//!   sends the plugin's `tracing` events there too.
//!
//! ```
//! use std::sync::atomic::{AtomicU64, Ordering};
//!
//! use rohrpost_plugin_api::prelude::*;
//!
//! #[derive(serde::Deserialize)]
//! struct Settings {
//!     #[serde(default)]
//!     token: String,
//! }
//!
//! struct News {
//!     token: String,
//!     published: AtomicU64,
//! }
//!
//! #[derive(serde::Deserialize)]
//! struct Publish {
//!     group: String,
//!     text: String,
//! }
//!
//! /// `{"id":1,"type":"publish","data":{"group":"news","text":"hi"}}` →
//! /// `{"id":1,"type":"publish","data":{"receivers":3}}`; only for
//! /// connections that signed in, who alone learn what their `data` lacks.
//! fn publish(
//!     news: &News,
//!     req: &Request,
//!     input: Result<Data<Publish>, DataError>,
//!     conn: &mut Connection,
//! ) -> Result<Value, HandlerError> {
//!     if req.get::<bool>("signed_in")? != Some(true) {
//!         return refuse("Sign in first.");
//!     }
//!     let Data(input) = input.map_err(Refusal::from)?;
//!     let message = Message::new().kind("message").generate_id().with("text", input.text);
//!     let published = conn.publish(&input.group, message)?;
//!     news.published.fetch_add(1, Ordering::Relaxed);
//!     Ok(json!({ "receivers": published.members }))
//! }
//!
//! /// Signs the connection in with `?token=...`, or refuses it.
//! fn connected(news: &News, event: &ConnectionEvent, conn: &mut Connection) -> HandlerResult {
//!     let query = event.scope().get("query_string").and_then(Value::as_str).unwrap_or("");
//!     match query.strip_prefix("token=") {
//!         Some(token) if rohrpost_plugin_api::same_secret(token, &news.token) => conn.set("signed_in", true)?,
//!         _ => conn.close_with(4001, "Unknown token.")?,
//!     }
//!     Ok(())
//! }
//!
//! fn plugin() -> Stateful<News> {
//!     Plugin::new("news", env!("CARGO_PKG_VERSION"))
//!         .with_state(|settings: Settings| -> Result<News, String> {
//!             Ok(News { token: settings.token, published: AtomicU64::new(0) })
//!         })
//!         .handle("publish", publish)
//!         .on_connect(connected)
//! }
//!
//! export_plugin!(plugin);
//! # fn main() {}
//! ```
//!
//! # What the host gives a plugin, plainly
//!
//! - **The scope's `connection_id`** is a JSON number (`u64`), unique among
//!   the connections of one host while it runs (it restarts at 1 with the
//!   host, and two hosts sharing groups may use the same number): use it to
//!   tell connections apart in logs and messages, not as a key that
//!   survives a restart. [`ConnectionEvent::connection_id`] reads it.
//! - **Group names** follow Django Channels' rule ([`check_group_name`],
//!   [`GroupNameRule`]): ASCII letters, digits, `-`, `_` and `.`, under
//!   100 characters. A call that uses a name breaking the host's rule gets
//!   the error reply `Invalid group name: <why>.`, and none of its effects
//!   are carried out (no half-done joins); an `on_connect` doing so refuses
//!   the connection with 1011; an `on_disconnect`'s group sends are dropped.
//! - **JSON numbers and key order.** This crate enables serde_json's
//!   `arbitrary_precision` and `preserve_order` features, and a plugin
//!   inherits them (Cargo unifies features): a number is kept as the text
//!   the client sent (`Number::to_string()` is that literal, `1.50` stays
//!   `1.50`, an integer beyond `u64` is not rounded), and objects keep their
//!   keys in the order received. Deserializing into your own types works as
//!   usual; code that matches on `Value::Number` internals or relies on
//!   sorted keys may see a difference.
//!
//! # A complete example
//!
//! Chat rooms: two handlers, one of them for two types; data replies, an
//! error reply, typed `data` and a returned error; several messages from
//! one request, generated ids, closing the connection; groups and a change
//! notification; the caller's scope and the plugin's configuration.
//!
//! ```
//! use rohrpost_plugin_api::prelude::*;
//!
//! /// The `[plugins.rooms]` table of the host's config file (its fields
//! /// need `serde` with the `derive` feature in the plugin's Cargo.toml).
//! #[derive(serde::Deserialize)]
//! #[serde(deny_unknown_fields)]
//! struct Settings {
//!     /// Told to every connection that joins a room.
//!     #[serde(default = "default_welcome")]
//!     welcome: String,
//! }
//!
//! fn default_welcome() -> String {
//!     "Welcome".to_owned()
//! }
//!
//! /// Built from the settings each time the plugin is loaded, before any
//! /// handler runs, and handed to every handler that takes it: no statics.
//! struct Rooms {
//!     welcome: String,
//! }
//!
//! /// `room.join` and `room.leave`: one handler for two types.
//! ///
//! /// `{"id":1,"type":"room.join","data":{"room":"lobby"}}` joins the group
//! /// `room-lobby`, is answered with
//! /// `{"id":1,"type":"room.join","data":{"room":"lobby","welcome":"Welcome"}}`
//! /// and tells every member
//! /// `{"id":<random>,"type":"room.joined","data":{"room":"lobby","connection":<id>}}`.
//! fn membership(rooms: &Rooms, req: &Request, conn: &mut Connection) -> HandlerResult {
//!     let Some(room) = req.data().and_then(|d| d.get("room")).and_then(Value::as_str) else {
//!         // An error reply: {"id":1,"type":"room.join","error":"data.room is required"}.
//!         conn.reply_error(req, "data.room is required");
//!         return Ok(());
//!     };
//!     let group = format!("room-{room}");
//!     // The caller, from the scope of its WebSocket handshake.
//!     let caller = req.scope().get("connection_id").cloned().unwrap_or(Value::Null);
//!     let (event, reply) = if req.kind() == "room.join" {
//!         conn.add_to_group(&group);
//!         ("room.joined", json!({ "room": room, "welcome": rooms.welcome }))
//!     } else {
//!         conn.remove_from_group(&group);
//!         ("room.left", json!({ "room": room }))
//!     };
//!     conn.reply(req, reply);
//!     // A second message, to the whole group, with a generated id and
//!     // fields merged into its data.
//!     let news = Message::new()
//!         .kind(event)
//!         .generate_id()
//!         .with("room", room)
//!         .with("connection", caller);
//!     conn.send_to_group(&group, news)?;
//!     Ok(())
//! }
//!
//! /// `room.say`: `{"id":2,"type":"room.say","data":{"room":"lobby","text":"hi"}}`
//! /// sends the text to the room, notifies the subscribers of the room, and
//! /// answers `{"id":2,"type":"room.say","data":{"sent":true}}`. With
//! /// `"last": true` it then says goodbye and closes the connection. A
//! /// `data` without `text` is answered
//! /// `{"id":2,"type":"room.say","error":"Invalid data: missing field `text`"}`.
//! fn say(Data(say): Data<Say>, req: &Request, conn: &mut Connection) -> HandlerResult {
//!     // A returned error is the error reply, and a failed call in the log.
//!     if say.text.trim().is_empty() {
//!         return Err("nothing to say".into());
//!     }
//!     let group = format!("room-{}", say.room);
//!     let message = Message::new()
//!         .kind("room.message")
//!         .generate_id()
//!         .data(json!({ "room": say.room, "text": say.text }));
//!     conn.send_to_group(&group, message)?;
//!     // rohrpost's subscription-update, to the group `room-<name>`, as the
//!     // host's POST /api/notify would send it.
//!     let change = Notification::new("Room", say.room.as_str(), Event::Update)
//!         .updated_fields(["last_message"]);
//!     conn.notify(&change)?;
//!     // Answered here, before the goodbye: a returned answer would come last.
//!     conn.reply(req, json!({ "sent": true }));
//!     if say.last {
//!         conn.send_message(Message::new().kind("bye").generate_id())?;
//!         // After the messages above: close code 1000.
//!         conn.close();
//!     }
//!     Ok(())
//! }
//!
//! #[derive(serde::Deserialize)]
//! struct Say {
//!     room: String,
//!     text: String,
//!     #[serde(default)]
//!     last: bool,
//! }
//!
//! fn plugin() -> Stateful<Rooms> {
//!     Plugin::new("rooms", env!("CARGO_PKG_VERSION"))
//!         .with_state(|settings: Settings| -> Result<Rooms, String> {
//!             Ok(Rooms { welcome: settings.welcome })
//!         })
//!         // Only computes: runs on the connection's own task.
//!         .handle(["room.join", "room.leave"], membership)
//!         .inline()
//!         // A handler that might block runs on the worker pool.
//!         .handle("room.say", say)
//! }
//!
//! export_plugin!(plugin);
//! #
//! # // What the host does with the plugin, checked here through the plugin
//! # // interface (abi) the way the host calls it.
//! # fn main() {
//! #     use rohrpost_plugin_api::abi::{self, Call, CallOutcome};
//! #     use serde_json::Value;
//! #     let module = rohrpost_plugin_api::__private::root_module(|| Plugin::from(plugin()));
//! #     let configured = module.extension()(abi::EXT_CONFIGURE.into(), r#"{"welcome":"Howdy"}"#.into());
//! #     assert!(configured.is_ok());
//! #     let manifest = module.manifest()();
//! #     assert_eq!(manifest.name.as_str(), "rooms");
//! #     let call = |frame: &str| -> Result<Vec<(u32, String, Value)>, String> {
//! #         let request: Value = serde_json::from_str(frame).unwrap();
//! #         let kind = request["type"].as_str().unwrap();
//! #         let id = request["id"].to_string();
//! #         let data = request.get("data").map(Value::to_string).unwrap_or_default();
//! #         let handler = manifest.handlers.iter()
//! #             .position(|h| h.types.iter().any(|t| t.as_str() == kind)).unwrap();
//! #         let call = Call {
//! #             frame: frame.into(), id: id.as_str().into(), kind: kind.into(),
//! #             data: data.as_str().into(), scope: r#"{"connection_id":7,"path":"/ws/rohrpost/"}"#.into(),
//! #         };
//! #         match module.call()(handler as u32, &call) {
//! #             CallOutcome::Done(effects) => Ok(effects.into_iter().map(|e| {
//! #                 let body = serde_json::from_str(e.body.as_str()).unwrap_or(Value::Null);
//! #                 (e.kind, e.target.into_string(), body)
//! #             }).collect()),
//! #             CallOutcome::Failed(error) => Err(error.into_string()),
//! #             CallOutcome::Panicked(message) => panic!("{message}"),
//! #         }
//! #     };
//! #     let generated = |v: &Value| v["id"].as_u64().is_some_and(|id| id >= 1);
//! #
//! #     let joined = call(r#"{"id":1,"type":"room.join","data":{"room":"lobby"}}"#).unwrap();
//! #     assert_eq!(joined.len(), 3);
//! #     assert_eq!((joined[0].0, joined[0].1.as_str()), (abi::EFFECT_JOIN, "room-lobby"));
//! #     assert_eq!(joined[1], (abi::EFFECT_SEND, String::new(),
//! #         serde_json::json!({"id":1,"type":"room.join","data":{"room":"lobby","welcome":"Howdy"}})));
//! #     assert_eq!((joined[2].0, joined[2].1.as_str()), (abi::EFFECT_GROUP_SEND, "room-lobby"));
//! #     assert!(generated(&joined[2].2));
//! #     assert_eq!(joined[2].2["type"], "room.joined");
//! #     assert_eq!(joined[2].2["data"], serde_json::json!({"room":"lobby","connection":7}));
//! #
//! #     let left = call(r#"{"id":"x","type":"room.leave","data":{"room":"lobby"}}"#).unwrap();
//! #     assert_eq!((left[0].0, left[0].1.as_str()), (abi::EFFECT_LEAVE, "room-lobby"));
//! #     assert_eq!(left[1].2, serde_json::json!({"id":"x","type":"room.leave","data":{"room":"lobby"}}));
//! #     assert_eq!(left[2].2["type"], "room.left");
//! #
//! #     let refused = call(r#"{"id":3,"type":"room.join"}"#).unwrap();
//! #     assert_eq!(refused, vec![(abi::EFFECT_SEND, String::new(),
//! #         serde_json::json!({"id":3,"type":"room.join","error":"data.room is required"}))]);
//! #
//! #     let said = call(r#"{"id":2,"type":"room.say","data":{"room":"lobby","text":"hi","last":true}}"#).unwrap();
//! #     let kinds: Vec<u32> = said.iter().map(|e| e.0).collect();
//! #     assert_eq!(kinds, [abi::EFFECT_GROUP_SEND, abi::EFFECT_GROUP_SEND, abi::EFFECT_SEND, abi::EFFECT_SEND, abi::EFFECT_CLOSE]);
//! #     assert_eq!(said[0].2["data"], serde_json::json!({"room":"lobby","text":"hi"}));
//! #     assert!(generated(&said[0].2));
//! #     assert_eq!(said[1].1, "room-lobby");
//! #     assert_eq!(said[1].2["type"], "subscription-update");
//! #     assert_eq!(said[1].2["data"], serde_json::json!({"type":"update","group":"room-lobby",
//! #         "object":{"id":"lobby","updated_fields":["last_message"]}}));
//! #     assert_eq!(said[2].2, serde_json::json!({"id":2,"type":"room.say","data":{"sent":true}}));
//! #     assert_eq!(said[3].2["type"], "bye");
//! #     assert!(generated(&said[3].2));
//! #
//! #     let refused = call(r#"{"id":4,"type":"room.say","data":{"room":"lobby"}}"#).unwrap();
//! #     assert_eq!(refused, vec![(abi::EFFECT_SEND, String::new(),
//! #         serde_json::json!({"id":4,"type":"room.say","error":"Invalid data: missing field `text`"}))]);
//! #     let failed = call(r#"{"id":5,"type":"room.say","data":{"room":"lobby","text":" "}}"#).unwrap_err();
//! #     assert_eq!(failed, "nothing to say");
//! # }
//! ```
//!
//! # Errors: what the client and the log see
//!
//! A handler cannot break its connection, its plugin or the server. Every
//! failure answers the request with an error reply in rohrpost's form,
//! `{"id":<as sent>,"type":"<type>","error":"<text>"}`, and the host logs
//! one line naming the plugin, its version, the message type and the cause:
//!
//! | the handler | the client gets as `error` | the host's log line |
//! | --- | --- | --- |
//! | returns `Err(e)` | `e`'s text | a warning with `cause` = `e`'s text |
//! | panics | `Internal error: the handler for '<type>' panicked.` | an error with the panic message |
//! | runs past `--handler-timeout` (pooled handlers) | `The handler for '<type>' did not finish within <n> ms.` | a warning with the timeout |
//! | uses a feature the host does not have (a plugin built against a newer 1.x) | `The handler for '<type>' used a feature this server does not support.` | a warning with the effect's number |
//! | uses a group name that breaks the host's rule ([`GroupNameRule`]; [`check_group_name`] checks the default one) | `Invalid group name: <why>.`, and none of the call's effects are carried out | a warning with the reason |
//!
//! The plugin keeps serving afterwards. Messages a handler sends cannot be
//! malformed: [`Message`] always writes valid rohrpost JSON, and refuses what
//! it cannot write (an empty message, fields merged into a `data` that is
//! not an object) with a [`MessageError`], which `?` turns into the error
//! reply. (A library that bypasses this crate and hands the host something
//! that is not a JSON object gets `Internal error: the handler for '<type>'
//! produced an invalid message.` instead, and an error in the log.)
//!
//! # Configuration
//!
//! The host's config file may hold a table per plugin, `[plugins.<name>]`,
//! `<name>` being the name given to [`Plugin::new`]. [`Plugin::with_state`]
//! receives it, deserialized into your type (an empty table when the file
//! has none), each time the plugin is loaded and before any handler runs,
//! and builds the state every handler is handed ([`Plugin::with_config`]
//! only checks it). Returning an error, or a table that does not fit the
//! type, rejects that load with the reason in the log; the version loaded
//! before keeps serving. Each load runs in a fresh copy of the library.
//! A plugin with neither ignores its table. A setting that is
//! valid but risky can be reported with [`config_warning`]: the host logs it
//! as a warning naming the plugin.
//!
//! # Compatibility policy
//!
//! This crate's version is the version of the plugin ABI, the binary
//! interface in [`abi`] ([`abi::ABI_VERSION`]). Every plugin records the
//! version it was built against; the host logs it as `api=` when it loads
//! the plugin.
//!
//! - **Same major version: compatible both ways.** A host loads plugins
//!   built against any plugin-api of its own major version, older or newer
//!   than its own: a plugin built against 1.0 in a 1.1 host, and one built
//!   against 1.1 in a 1.0 host.
//! - **A minor version only adds**: new named entry points reached through
//!   [`abi::PluginMod::extension`] (1.1 added [`abi::EXT_CONFIGURE`], the
//!   configuration; 1.2 the host's services [`abi::EXT_HOST`], the hooks
//!   and [`abi::EXT_RETIRE`]), new effect kinds (1.1 added joining, leaving
//!   and sending to groups; 1.2 [`abi::EFFECT_SET`] and
//!   [`abi::EFFECT_CLOSE_WITH`]), new questions to the host (1.2:
//!   [`abi::ASK_GROUP_SIZE`]; 1.3: [`abi::ASK_COUNT`] and
//!   [`abi::ASK_LOG`]), and new helpers in this crate's safe layer
//!   built on them (1.4 added to the safe layer only: [`Plugin::handle`]
//!   and the handler arguments, [`Connection::reply`]). It never changes
//!   the layout of the root module
//!   ([`abi::PluginMod`]), [`abi::Manifest`], [`abi::HandlerDecl`],
//!   [`abi::Call`], [`abi::Effect`] or [`abi::CallOutcome`], nor what an
//!   existing effect kind or extension name means.
//! - **An older plugin in a newer host** lacks the newer entry points: the
//!   host asks, gets [`abi::EXT_UNSUPPORTED`] and does without (a 1.0 plugin
//!   is not configured; a `[plugins.<name>]` table for it is ignored with a
//!   warning; a 1.1 plugin has no hooks).
//! - **A newer plugin in an older host** loads and serves; the older host
//!   never calls the entry points it does not know (so the plugin runs
//!   unconfigured, and should answer with an error when it needs its
//!   configuration, [`Connection::group_size`] answers 0 there, and in a
//!   host older than 1.3 [`host::count`] answers
//!   [`host::HostError::Unavailable`] and [`host::log`] writes to standard
//!   error), and a
//!   handler that asks for an effect the host does not know gets the error
//!   reply `The handler for '<type>' used a feature this
//!   server does not support.` for that request.
//! - **Anything else is breaking and takes a new major version**: a field
//!   added to, removed from or changed in any of the types above, or a
//!   changed meaning. The host rejects a plugin of another major version at
//!   load, before calling into it, with one `event="rejected"` log
//!   line that names the file and both versions, for example
//!   `built against an incompatible plugin ABI: the plugin uses ABI 2.0.0,
//!   this host speaks ABI 1.1.0`; whatever served before keeps serving.
//!   Rebuild the plugin against the host's plugin-api. (A layout that
//!   differs within one major version, which would be a broken release, is
//!   rejected the same way: `its plugin interface layout differs from this
//!   host's`.)
//!
//! Build plugins with `panic = "unwind"`, Rust's default: the host refuses
//! a plugin built with `panic = "abort"`, in which one panicking handler
//! would end the whole server.
//!
//! The repository tests this policy: `tests/compat/` keeps frozen copies of
//! plugin-api 1.0.0 and 1.1.0 and a plugin built against each outside the
//! workspace, which `tests/e2e/compat.rs` loads into today's host and talks
//! to, and
//! `tests/e2e/bad_plugins.rs` checks that a plugin of ABI 2.0 is rejected
//! with both versions in the log.

#![warn(missing_docs)]
pub mod abi;
mod connection;
mod data;
mod group_name;
mod handle;
#[cfg(test)]
mod handle_tests;
pub mod host;
#[cfg(feature = "tracing")]
mod host_tracing;
mod lifecycle;
mod load_warning;
mod message;
mod notification;
mod plugin;
mod refusal;
mod request;
mod secret;
mod state;
mod typed;
pub mod wire;

pub use connection::{CloseCodeError, Connection, NotifyError, Published};
pub use data::{Data, DataError, Json};
pub use group_name::{
    check_group_name, GroupNameError, GroupNameRule, NamePreview, CHANNELS_NAME_LIMIT,
    RELAXED_NAME_MAX_BYTES,
};
pub use handle::{Answer, FromCall, Handler, Reply, State};
pub use lifecycle::ConnectionEvent;
pub use load_warning::config_warning;
pub use message::{Id, Message, MessageError, GENERATED_ID_MAX};
pub use notification::{Event, Notification, NotificationError};
pub use plugin::{HandlerError, HandlerResult, Plugin, Types};
pub use refusal::{refuse, Refusal};
pub use request::Request;
pub use secret::same_secret;
pub use state::{StateTypes, Stateful};

/// Everything a plugin usually needs, plus `serde_json`'s `json!`, `Value`
/// and `Number`: `use rohrpost_plugin_api::prelude::*;`.
pub mod prelude {
    pub use crate::{
        export_plugin, refuse, Connection, ConnectionEvent, Data, DataError, Event, HandlerError,
        HandlerResult, Id, Json, Message, MessageError, Notification, NotifyError, Plugin, Refusal,
        Request, State, Stateful, Types,
    };
    pub use serde_json::{json, Number, Value};
}

#[doc(hidden)]
pub mod __private {
    pub use crate::plugin::root_module;
    pub use abi_stable::library::{
        __call_root_module_loader, CheckTypeLayout, LibHeader, RootModuleResult,
    };
}

/// Exports a plugin from a `cdylib` crate. Takes a function returning the
/// [`Plugin`] (or a [`Stateful`] plugin); use it once per library, at the
/// crate's top level.
///
/// The function runs once each time the host loads the library, before
/// anything else; the host then reads the plugin's name, version and
/// handlers, and hands it its configuration.
///
/// ```
/// use rohrpost_plugin_api::prelude::*;
///
/// fn plugin() -> Plugin {
///     Plugin::new("hello", env!("CARGO_PKG_VERSION"))
///         .handle("hello", |req: &Request, conn: &mut Connection| conn.reply(req, json!({ "text": "Hello!" })))
///         .inline()
/// }
///
/// export_plugin!(plugin);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! export_plugin {
    ($build:path) => {
        #[doc(hidden)]
        #[unsafe(export_name = "_1as_0lib_1header_0root_bmodule_bloader")]
        pub static __ROHRPOST_ROOT_MODULE_LOADER: $crate::__private::LibHeader = {
            extern "C" fn __rohrpost_loader() -> $crate::__private::RootModuleResult {
                fn __rohrpost_root() -> $crate::abi::PluginModRef {
                    $crate::__private::root_module(|| $crate::Plugin::from($build()))
                }
                $crate::__private::__call_root_module_loader(__rohrpost_root)
            }
            unsafe {
                $crate::__private::LibHeader::from_constructor::<$crate::abi::PluginModRef>(
                    __rohrpost_loader,
                    $crate::__private::CheckTypeLayout::Yes,
                )
            }
        };
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn export_macro_uses_abi_stable_symbol_name() {
        let src = include_str!("lib.rs");
        let needle = format!(
            "export_name = \"{}\"",
            abi_stable::library::ROOT_MODULE_LOADER_NAME
        );
        assert!(src.contains(&needle), "expected {needle}");
    }
}

/// The plugin examples of `docs/plugins.md` compile as they are written.
#[doc = include_str!("../../docs/plugins.md")]
#[cfg(doctest)]
pub struct PluginsDocDoctests;
