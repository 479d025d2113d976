//! The plugin a library exports: its name, version and handlers, and the
//! glue that turns them into the stable root module the host loads.

use std::{
    panic::{catch_unwind, AssertUnwindSafe},
    sync::OnceLock,
};

use abi_stable::{
    prefix_type::PrefixTypeTrait,
    std_types::{RErr, ROk, RResult, RStr, RString, RVec},
};

use crate::{
    abi::{
        Call, CallOutcome, HandlerDecl, Manifest, PluginMod, PluginModRef, API_CRATE_VERSION,
        EXT_CONFIGURE, EXT_FEATURES, EXT_HOST, EXT_ON_CONNECT, EXT_ON_DISCONNECT, EXT_RETIRE,
        EXT_UNSUPPORTED, MODE_INLINE, MODE_POOLED,
    },
    connection::Connection,
    handle::{check_connections, Handler},
    host,
    lifecycle::{self, ConnectionEvent},
    load_warning::collecting,
    refusal::Refusal,
    request::Request,
    typed,
};

/// What a handler that answers itself returns: `Ok(())` after sending its
/// replies, or an error whose text goes back to the client as
/// `{"id","type","error"}` (and into the host's log, with the plugin, its
/// version and the message type). Any error type converts with `?`, and
/// so do `&str` and `String`:
///
/// ```
/// use rohrpost_plugin_api::prelude::*;
///
/// fn parse(req: &Request, conn: &mut Connection) -> HandlerResult {
///     let text = req.data().and_then(Value::as_str).ok_or("data must be a string")?;
///     let n: i64 = text.parse()?;
///     conn.reply(req, n);
///     Ok(())
/// }
/// # let _ = Plugin::new("doc", "1.0.0").handle("parse", parse).inline();
/// ```
pub type HandlerResult = Result<(), HandlerError>;

/// Any error, as a handler returns it: `?` converts every error type (a
/// [`Refusal`], a [`MessageError`](crate::MessageError), a
/// [`DataError`](crate::DataError), `serde_json`'s), and `&str` and
/// `String`, into it; [`refuse`](crate::refuse) returns a refusal as one.
/// A [`Refusal`] in it still answers without being logged.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync>;

pub(crate) type HandlerFn =
    Box<dyn Fn(&Request<'_>, &mut Connection) -> HandlerResult + Send + Sync>;

type ConfigFn = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

pub(crate) type HookFn =
    Box<dyn Fn(&ConnectionEvent, &mut Connection) -> HandlerResult + Send + Sync>;

/// The message types one handler serves: one (`"x"`) or several
/// (`["x", "y"]`), like rohrpost's `@rohrpost_handler`. Types are matched
/// exactly (case-sensitive) and belong to one loaded plugin at a time.
///
/// ```
/// use rohrpost_plugin_api::{Plugin, Types};
/// # use rohrpost_plugin_api::{Connection, HandlerResult, Request};
/// # fn handler(_: &Request, _: &mut Connection) -> HandlerResult { Ok(()) }
///
/// let types: Vec<String> = vec!["c".into(), "d".into()];
/// let plugin = Plugin::new("doc", "1.0.0")
///     .handle("a", handler)
///     .handle(["b", "b2"], handler)
///     .handle(Types::from(types), handler);
/// # let _ = plugin;
/// ```
///
/// A plugin with state may also read them from its state once it is
/// built: [`Types::configured`].
pub struct Types(pub(crate) Vec<String>);

impl From<&str> for Types {
    fn from(t: &str) -> Self {
        Types(vec![t.to_owned()])
    }
}

impl From<String> for Types {
    fn from(t: String) -> Self {
        Types(vec![t])
    }
}

impl<const N: usize> From<[&str; N]> for Types {
    fn from(ts: [&str; N]) -> Self {
        Types(ts.iter().map(|t| (*t).to_owned()).collect())
    }
}

impl From<&[&str]> for Types {
    fn from(ts: &[&str]) -> Self {
        Types(ts.iter().map(|t| (*t).to_owned()).collect())
    }
}

impl From<Vec<String>> for Types {
    fn from(ts: Vec<String>) -> Self {
        Types(ts)
    }
}

struct Registered {
    types: Vec<String>,
    /// Types read from the plugin's state once it is configured
    /// ([`Types::configured`](crate::Types::configured)),
    /// added to `types` in the manifest.
    configured: Option<TypesFn>,
    mode: u8,
    run: HandlerFn,
}

/// The message types a handler serves, as the configuration names them.
pub(crate) type TypesFn = Box<dyn Fn() -> Vec<String> + Send + Sync>;

/// A plugin: a name, a version and its handlers. Build one in a function and
/// export it with [`crate::export_plugin!`].
///
/// ```
/// use rohrpost_plugin_api::prelude::*;
///
/// fn hello(req: &Request) -> Result<Value, Refusal> {
///     Ok(json!({ "hi": req.kind() }))
/// }
///
/// fn plugin() -> Plugin {
///     Plugin::new("hello", "1.0.0").handle(["hello", "hi", "hey"], hello).inline()
/// }
/// # let _ = plugin();
/// ```
pub struct Plugin {
    name: String,
    version: String,
    handlers: Vec<Registered>,
    pub(crate) config: Option<ConfigFn>,
    on_connect: Option<HookFn>,
    on_disconnect: Option<HookFn>,
    pub(crate) retire: Option<Box<dyn Fn() + Send + Sync>>,
    yields: bool,
}

impl Plugin {
    /// A plugin with a name and a version. The name is unique among the
    /// plugins a host has loaded, and names its `[plugins.<name>]` table in
    /// the host's config file; the version (free-form, usually
    /// `env!("CARGO_PKG_VERSION")`) appears in the host's log lines.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Plugin {
            name: name.into(),
            version: version.into(),
            handlers: Vec::new(),
            config: None,
            on_connect: None,
            on_disconnect: None,
            retire: None,
            yields: false,
        }
    }

    /// Checks the plugin's configuration: the host's `[plugins.<name>]`
    /// table, deserialized into `T` (an empty table when the host has none),
    /// once per load and before any handler runs. An `Err`, or a table that
    /// does not fit `T`, rejects the load with that reason and the previous
    /// version keeps serving. To keep what the table says, build the
    /// plugin's state from it with [`Plugin::with_state`] instead: no
    /// statics needed.
    ///
    /// ```
    /// use rohrpost_plugin_api::Plugin;
    ///
    /// #[derive(serde::Deserialize)]
    /// #[serde(deny_unknown_fields)]
    /// struct Settings {
    ///     #[serde(default)]
    ///     rooms: Vec<String>,
    /// }
    ///
    /// let plugin = Plugin::new("rooms", "1.0.0").with_config(|s: Settings| {
    ///     if s.rooms.iter().any(|room| room.is_empty()) {
    ///         return Err("rooms: a room needs a name".into());
    ///     }
    ///     Ok(())
    /// });
    /// # let _ = plugin;
    /// ```
    pub fn with_config<T, F>(mut self, f: F) -> Self
    where
        T: serde::de::DeserializeOwned,
        F: Fn(T) -> HandlerResult + Send + Sync + 'static,
    {
        self.config = Some(Box::new(move |text: &str| {
            let value: T =
                serde_json::from_str(text).map_err(|e| format!("invalid configuration: {e}"))?;
            f(value).map_err(|e| e.to_string())
        }));
        self
    }

    /// Adds a handler for one or several message types: a function or a
    /// closure whose arguments are what it needs, in any order, and whose
    /// return value is the answer. Its arguments may be:
    ///
    /// - [`&Request`](Request): the request as sent (id, type, `data`,
    ///   other fields, the caller's scope, what the plugin attached to the
    ///   connection);
    /// - [`&mut Connection`](Connection): replies, other messages, groups,
    ///   connection state, close (at most one such argument);
    /// - [`Data<T>`](crate::Data): `data` deserialized into your type; a
    ///   `data` that does not fit is answered with an error reply naming
    ///   the field (`Invalid data: amount: invalid type: string "x",
    ///   expected u64`), and the handler does not run;
    /// - `Result<Data<T>, DataError>`: the same, left to the handler, which
    ///   can check something first and choose its own error text;
    /// - for a plugin with state ([`Plugin::with_state`]), the state:
    ///   `&S` as the first argument, or [`State<S>`](crate::State) anywhere.
    ///
    /// It returns `()` or [`HandlerResult`] when it answered itself
    /// ([`Connection::reply`]), or `Result<T, E>` whose `Ok` is the reply's
    /// `data` (a [`Value`](serde_json::Value) or a [`Json`](crate::Json);
    /// `null` gives a reply without `data`). An `Err` is the error reply
    /// `{"id","type","error":"<text>"}`, logged and counted as a failed
    /// call unless it is a [`Refusal`]. `E` is any error, `&str` or
    /// `String` (a closure names it: `-> HandlerResult`, `-> Result<Value,
    /// Refusal>`).
    ///
    /// The handler may block (a database call, a sleep): the host runs it
    /// on a worker pool with a timeout, so it never holds up other
    /// connections. One that only computes is declared
    /// [`inline`](Plugin::inline).
    ///
    /// ```
    /// use rohrpost_plugin_api::prelude::*;
    ///
    /// #[derive(serde::Deserialize)]
    /// struct Add {
    ///     a: i64,
    ///     b: i64,
    /// }
    ///
    /// /// `{"id":1,"type":"add","data":{"a":1,"b":2}}` →
    /// /// `{"id":1,"type":"add","data":{"sum":3}}`.
    /// fn add(Data(input): Data<Add>) -> Result<Value, Refusal> {
    ///     let sum = input.a.checked_add(input.b).ok_or(Refusal::new("Too large."))?;
    ///     Ok(json!({ "sum": sum }))
    /// }
    ///
    /// /// Joins the group `data` names and tells its members.
    /// fn join(req: &Request, Data(group): Data<String>, conn: &mut Connection) -> HandlerResult {
    ///     conn.add_to_group(&group);
    ///     conn.reply(req, json!({ "group": group }));
    ///     conn.send_to_group(&group, Message::new().kind("joined").generate_id())?;
    ///     Ok(())
    /// }
    ///
    /// fn slow(req: &Request, conn: &mut Connection) -> HandlerResult {
    ///     std::thread::sleep(std::time::Duration::from_millis(5));
    ///     conn.reply(req, ());
    ///     Ok(())
    /// }
    ///
    /// let plugin = Plugin::new("doc", "1.0.0")
    ///     .handle("add", add)
    ///     .inline()
    ///     .handle(["join", "enter"], join)
    ///     .handle("slow", slow)
    ///     // A closure works as well.
    ///     .handle("now", |req: &Request| -> Result<Value, Refusal> { Ok(json!({ "asked": req.kind() })) })
    ///     .inline();
    /// # let _ = plugin;
    /// ```
    pub fn handle<M, H>(self, types: impl Into<Types>, handler: H) -> Self
    where
        H: Handler<(), M>,
    {
        check_connections(H::CONNECTIONS);
        self.add(
            types.into(),
            MODE_POOLED,
            Box::new(move |req: &Request<'_>, conn: &mut Connection| handler.call(req, conn, &())),
        )
    }

    /// Declares the handler just added with [`Plugin::handle`] one that
    /// only computes (no I/O, no locks held long, done in microseconds).
    /// The host runs it on the connection's own task, which is several
    /// times cheaper than a pool hand-off; one that is repeatedly slower
    /// than the host's `--inline-budget` is moved to the pool until it is
    /// fast again, with a warning in the log.
    ///
    /// ```
    /// use rohrpost_plugin_api::prelude::*;
    ///
    /// fn ping(req: &Request, conn: &mut Connection) {
    ///     let _ = conn.send_success(req.id(), "pong", req.data().cloned());
    /// }
    ///
    /// let plugin = Plugin::new("ping", "1.0.0").handle("ping", ping).inline();
    /// # let _ = plugin;
    /// ```
    ///
    /// # Panics
    ///
    /// Without a handler added before it: the host then rejects the load
    /// with this message.
    pub fn inline(mut self) -> Self {
        match self.handlers.last_mut() {
            Some(handler) => handler.mode = MODE_INLINE,
            None => {
                panic!("inline() applies to the handler added just before it, and there is none")
            }
        }
        self
    }

    /// Adds a handler that may block, as [`Plugin::handle`] does for one
    /// taking the request and the connection.
    #[deprecated(
        since = "1.4.0",
        note = "use `handle(types, f)`, which takes the same functions"
    )]
    pub fn handler<F>(self, types: impl Into<Types>, f: F) -> Self
    where
        F: Fn(&Request<'_>, &mut Connection) -> HandlerResult + Send + Sync + 'static,
    {
        self.add(types.into(), MODE_POOLED, Box::new(f))
    }

    /// Adds a handler that only computes, as `handle(types, f).inline()`.
    #[deprecated(
        since = "1.4.0",
        note = "use `handle(types, f).inline()`, which takes the same functions"
    )]
    pub fn inline_handler<F>(self, types: impl Into<Types>, f: F) -> Self
    where
        F: Fn(&Request<'_>, &mut Connection) -> HandlerResult + Send + Sync + 'static,
    {
        self.add(types.into(), MODE_INLINE, Box::new(f))
    }

    /// Adds a typed handler (plugin-api 1.2): `f` takes the request's
    /// `data` deserialized into `In` and returns `Out` or an error, which
    /// the host answers as `{"id","type","data":<Out>}` (without `data`
    /// for `()` or `None`) or `{"id","type","error":"<e>"}`. Runs on the
    /// worker pool.
    #[deprecated(
        since = "1.4.0",
        note = "use `handle(types, |Data(input): Data<In>| ...)`: its `Ok` is the reply's data (a `Value` or `Json(out)`)"
    )]
    pub fn typed<In, Out, E, F>(self, types: impl Into<Types>, f: F) -> Self
    where
        In: serde::de::DeserializeOwned,
        Out: serde::Serialize,
        E: std::fmt::Display + 'static,
        F: Fn(In) -> Result<Out, E> + Send + Sync + 'static,
    {
        self.add(
            types.into(),
            MODE_POOLED,
            Box::new(move |req: &Request<'_>, conn: &mut Connection| {
                typed::answer(req, conn, |input, _, _| f(input))
            }),
        )
    }

    /// The typed handler of plugin-api 1.2 that also takes the request and
    /// the connection: `f(data, req, conn)`.
    #[deprecated(
        since = "1.4.0",
        note = "use `handle(types, |Data(input): Data<In>, req: &Request, conn: &mut Connection| ...)`"
    )]
    pub fn typed_handler<In, Out, E, F>(self, types: impl Into<Types>, f: F) -> Self
    where
        In: serde::de::DeserializeOwned,
        Out: serde::Serialize,
        E: std::fmt::Display + 'static,
        F: Fn(In, &Request<'_>, &mut Connection) -> Result<Out, E> + Send + Sync + 'static,
    {
        self.add(
            types.into(),
            MODE_POOLED,
            Box::new(move |req: &Request<'_>, conn: &mut Connection| typed::answer(req, conn, &f)),
        )
    }

    /// Runs `f` when a connection opens, before its first message is read
    /// (a Channels consumer's `connect`). It may refuse the connection
    /// ([`Connection::close_with`], a code 4000-4999 or 1008), join groups,
    /// send messages and attach data ([`Connection::set`]). Returning an
    /// error or panicking refuses the connection with 1011 (the host logs
    /// why). The host runs the hooks of all plugins that have one in the
    /// order of their names, each under `--handler-timeout`; the first
    /// refusal ends the round.
    pub fn on_connect<F>(mut self, f: F) -> Self
    where
        F: Fn(&ConnectionEvent, &mut Connection) -> HandlerResult + Send + Sync + 'static,
    {
        self.on_connect = Some(Box::new(f));
        self
    }

    /// Runs `f` once after a connection ended, however it ended (client
    /// close, idle timeout, a client too slow, shutdown, refused by an
    /// `on_connect`), with its close code and what the plugin attached to
    /// it (a Channels consumer's `disconnect`). Only its group sends are
    /// carried out: the connection is gone. Order as for
    /// [`Plugin::on_connect`].
    pub fn on_disconnect<F>(mut self, f: F) -> Self
    where
        F: Fn(&ConnectionEvent, &mut Connection) -> HandlerResult + Send + Sync + 'static,
    {
        self.on_disconnect = Some(Box::new(f));
        self
    }

    pub(crate) fn add(mut self, types: Types, mode: u8, run: HandlerFn) -> Self {
        self.handlers.push(Registered {
            types: types.0,
            configured: None,
            mode,
            run,
        });
        self
    }

    /// Adds a handler whose types `configured` reads once the plugin is
    /// configured (empty before).
    pub(crate) fn add_configured(mut self, configured: TypesFn, mode: u8, run: HandlerFn) -> Self {
        self.handlers.push(Registered {
            types: Vec::new(),
            configured: Some(configured),
            mode,
            run,
        });
        self
    }

    /// Declares that this plugin gives up a message type it serves to any
    /// other plugin that claims it, when that one is loaded or later: a
    /// plugin that forwards messages somewhere else (the proxy) yields to
    /// one that handles them itself. Without it, a second plugin claiming a
    /// type is rejected. The host asks through
    /// [`EXT_FEATURES`](crate::abi::EXT_FEATURES) (`"yields": true`); a host
    /// older than plugin-api 1.2 rejects the second plugin as before.
    pub fn yielding(mut self) -> Self {
        self.yields = true;
        self
    }

    fn manifest(&self) -> Manifest {
        Manifest {
            name: RString::from(self.name.as_str()),
            version: RString::from(self.version.as_str()),
            api_version: RString::from(API_CRATE_VERSION),
            handlers: self
                .handlers
                .iter()
                .map(|h| {
                    let configured = h.configured.as_ref().map(|f| f()).unwrap_or_default();
                    HandlerDecl {
                        types: h
                            .types
                            .iter()
                            .chain(&configured)
                            .map(|t| RString::from(t.as_str()))
                            .collect(),
                        mode: h.mode,
                    }
                })
                .collect(),
            panic_unwind: cfg!(panic = "unwind"),
        }
    }
}

/// The plugin of this library. Each plugin library links its own copy of
/// this crate, so each has its own.
static PLUGIN: OnceLock<Plugin> = OnceLock::new();

/// The name this library's plugin was given, once built.
pub(crate) fn plugin_name() -> Option<&'static str> {
    PLUGIN.get().map(|plugin| plugin.name.as_str())
}

/// Builds the root module; called once by the loader the export macro
/// generates.
#[doc(hidden)]
pub fn root_module(build: fn() -> Plugin) -> PluginModRef {
    if let Err(payload) = catch_unwind(|| {
        PLUGIN.get_or_init(build);
    }) {
        // The loader catches this panic and drops its payload where a panic
        // in that drop would abort: hand it a payload that cannot.
        let text = take_panic_text(payload);
        std::panic::resume_unwind(Box::new(format!("building the plugin panicked: {text}")));
    }
    PluginMod {
        manifest: manifest_shim,
        call: call_shim,
        extension: extension_shim,
    }
    .leak_into_prefix()
}

extern "C" fn extension_shim(name: RStr<'_>, input: RStr<'_>) -> RResult<RString, RString> {
    let outcome = catch_unwind(AssertUnwindSafe(|| match (name.as_str(), PLUGIN.get()) {
        (EXT_CONFIGURE, Some(plugin)) => match &plugin.config {
            Some(apply) => {
                let (outcome, warnings) = collecting(|| apply(input.as_str()));
                outcome.map(|()| warnings)
            }
            None => Ok(String::new()),
        },
        (EXT_HOST, _) => host::bind(input.as_str()).map(|()| String::new()),
        (EXT_FEATURES, Some(plugin)) => Ok(serde_json::json!({
            "on_connect": plugin.on_connect.is_some(),
            "on_disconnect": plugin.on_disconnect.is_some(),
            "yields": plugin.yields,
        })
        .to_string()),
        (EXT_ON_CONNECT, Some(plugin)) => Ok(run_hook(
            plugin.on_connect.as_ref(),
            &ConnectionEvent::opened(input.as_str()),
        )),
        (EXT_ON_DISCONNECT, Some(plugin)) => Ok(run_hook(
            plugin.on_disconnect.as_ref(),
            &ConnectionEvent::closed(input.as_str()),
        )),
        (EXT_RETIRE, Some(plugin)) => {
            if let Some(retire) = &plugin.retire {
                retire();
            }
            Ok(String::new())
        }
        _ => Err(EXT_UNSUPPORTED.to_owned()),
    }));
    match outcome {
        Ok(Ok(output)) => ROk(RString::from(output)),
        Ok(Err(error)) => RErr(RString::from(error)),
        Err(payload) => {
            let text = take_panic_text(payload);
            if matches!(name.as_str(), EXT_ON_CONNECT | EXT_ON_DISCONNECT) {
                ROk(RString::from(lifecycle::panicked(&text)))
            } else {
                RErr(RString::from(format!("{name} panicked: {text}")))
            }
        }
    }
}

/// Runs a lifecycle hook (none: no effects); its answer to the host.
fn run_hook(hook: Option<&HookFn>, event: &ConnectionEvent) -> String {
    let mut conn = Connection::new();
    let result = match hook {
        Some(hook) => hook(event, &mut conn)
            .map(|()| conn)
            .map_err(|e| e.to_string()),
        None => Ok(conn),
    };
    lifecycle::outcome(result)
}

extern "C" fn manifest_shim() -> Manifest {
    match PLUGIN.get() {
        Some(plugin) => plugin.manifest(),
        None => Manifest {
            name: RString::new(),
            version: RString::new(),
            api_version: RString::from(API_CRATE_VERSION),
            handlers: RVec::new(),
            panic_unwind: cfg!(panic = "unwind"),
        },
    }
}

extern "C" fn call_shim(handler: u32, call: &Call<'_>) -> CallOutcome {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        match PLUGIN.get().and_then(|p| p.handlers.get(handler as usize)) {
            Some(h) => run_handler(h, call),
            None => CallOutcome::Failed(RString::from(format!("no handler number {handler}"))),
        }
    }));
    outcome.unwrap_or_else(|payload| CallOutcome::Panicked(RString::from(take_panic_text(payload))))
}

/// Runs one handler for one call: its effects, or why it failed.
fn run_handler(h: &Registered, call: &Call<'_>) -> CallOutcome {
    let request = Request::new(call);
    let mut conn = Connection::new();
    match (h.run)(&request, &mut conn) {
        Ok(()) => CallOutcome::Done(RVec::from(conn.into_effects())),
        Err(e) => match e.downcast_ref::<Refusal>() {
            // Expected: the error reply alone, not a failed call.
            Some(refusal) => {
                let mut reply = Connection::new();
                reply.reply_error(&request, refusal);
                CallOutcome::Done(RVec::from(reply.into_effects()))
            }
            None => CallOutcome::Failed(RString::from(e.to_string())),
        },
    }
}

#[cfg(test)]
impl Plugin {
    /// Runs handler number `handler` as the host would, without a host.
    pub(crate) fn run(&self, handler: usize, call: &Call<'_>) -> CallOutcome {
        match self.handlers.get(handler) {
            Some(h) => run_handler(h, call),
            None => CallOutcome::Failed(RString::from("no such handler")),
        }
    }

    /// Configures the plugin as the host would.
    pub(crate) fn configure(&self, table: &str) -> Result<(), String> {
        self.config.as_ref().map_or(Ok(()), |apply| apply(table))
    }

    /// Its manifest.
    pub(crate) fn declared(&self) -> Manifest {
        self.manifest()
    }
}

/// The panic's message; the payload is dropped in a way that cannot unwind
/// out of the shim (which would abort the host): a payload's `Drop` may
/// panic too (`std::panic::panic_any`).
fn take_panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    let text = panic_text(payload.as_ref());
    if let Err(again) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        // That panic's payload may be just as bad: leak it.
        std::mem::forget(again);
    }
    text
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct DropPanics;

    impl Drop for DropPanics {
        fn drop(&mut self) {
            std::panic::panic_any(DropPanics);
        }
    }

    #[test]
    fn a_payload_whose_drop_panics_is_dropped_without_unwinding() {
        let payload = catch_unwind(|| std::panic::panic_any(DropPanics)).unwrap_err();
        assert_eq!(take_panic_text(payload), "a panic without a message");
        let payload = catch_unwind(|| panic!("plain")).unwrap_err();
        assert_eq!(take_panic_text(payload), "plain");
    }
}
