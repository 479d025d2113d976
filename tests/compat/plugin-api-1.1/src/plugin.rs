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
        EXT_CONFIGURE, EXT_UNSUPPORTED, MODE_INLINE, MODE_POOLED,
    },
    connection::Connection,
    load_warning::collecting,
    request::Request,
};

/// What a handler returns: `Ok(())` after sending its replies, or an error
/// whose text goes back to the client as `{"id","type","error"}` (and into
/// the host's log, with the plugin, its version and the message type). Any
/// error type converts with `?`, and so do `&str` and `String`:
///
/// ```
/// use rohrpost_plugin_api::prelude::*;
///
/// fn parse(req: &Request, conn: &mut Connection) -> HandlerResult {
///     let text = req.data().and_then(Value::as_str).ok_or("data must be a string")?;
///     let n: i64 = text.parse()?;
///     conn.send_success(req.id(), req.kind(), Some(json!(n)))?;
///     Ok(())
/// }
/// # let _ = Plugin::new("doc", "1.0.0").inline_handler("parse", parse);
/// ```
pub type HandlerResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

type HandlerFn = Box<dyn Fn(&Request<'_>, &mut Connection) -> HandlerResult + Send + Sync>;

type ConfigFn = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

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
///     .handler("a", handler)
///     .handler(["b", "b2"], handler)
///     .handler(Types::from(types), handler);
/// # let _ = plugin;
/// ```
pub struct Types(Vec<String>);

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

struct Handler {
    types: Vec<String>,
    mode: u8,
    run: HandlerFn,
}

/// A plugin: a name, a version and its handlers. Build one in a function and
/// export it with [`crate::export_plugin!`].
///
/// ```
/// use rohrpost_plugin_api::{Connection, HandlerResult, Plugin, Request};
///
/// fn hello(req: &Request, conn: &mut Connection) -> HandlerResult {
///     conn.send_success(req.id(), "hello", Some(serde_json::json!({"hi": true})))?;
///     Ok(())
/// }
///
/// fn plugin() -> Plugin {
///     Plugin::new("hello", "1.0.0")
///         .handler("hello", hello)
///         .handler(["hi", "hey"], hello)
/// }
/// # let _ = plugin();
/// ```
pub struct Plugin {
    name: String,
    version: String,
    handlers: Vec<Handler>,
    config: Option<ConfigFn>,
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
        }
    }

    /// Takes the plugin's configuration: the host's `[plugins.<name>]`
    /// table, deserialized into `T` (an empty table when the host has none),
    /// once per load and before any handler runs. Store what you need, for
    /// example in a `static OnceLock`; each load of a library starts with
    /// fresh statics. An `Err`, or a table that does not fit `T`, rejects
    /// the load with that reason and the previous version keeps serving.
    ///
    /// ```
    /// use std::sync::OnceLock;
    /// use rohrpost_plugin_api::Plugin;
    ///
    /// #[derive(serde::Deserialize)]
    /// #[serde(deny_unknown_fields)]
    /// struct Settings {
    ///     #[serde(default)]
    ///     greeting: Option<String>,
    /// }
    ///
    /// static GREETING: OnceLock<String> = OnceLock::new();
    ///
    /// let plugin = Plugin::new("hello", "1.0.0").with_config(|s: Settings| {
    ///     let _ = GREETING.set(s.greeting.unwrap_or_else(|| "Hello".into()));
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

    /// Adds a handler for one or several message types. It may block (a
    /// database call, a sleep): the host runs it on a worker pool with a
    /// timeout, so it never holds up other connections.
    ///
    /// ```
    /// use rohrpost_plugin_api::prelude::*;
    ///
    /// fn slow(req: &Request, conn: &mut Connection) -> HandlerResult {
    ///     std::thread::sleep(std::time::Duration::from_millis(5));
    ///     conn.send_success(req.id(), req.kind(), None)?;
    ///     Ok(())
    /// }
    ///
    /// let plugin = Plugin::new("doc", "1.0.0")
    ///     .handler("slow", slow)
    ///     // A closure works as well.
    ///     .handler(["now", "today"], |req: &Request, conn: &mut Connection| {
    ///         conn.send_success(req.id(), req.kind(), Some(json!({ "asked": req.kind() })))?;
    ///         Ok(())
    ///     });
    /// # let _ = plugin;
    /// ```
    pub fn handler<F>(self, types: impl Into<Types>, f: F) -> Self
    where
        F: Fn(&Request<'_>, &mut Connection) -> HandlerResult + Send + Sync + 'static,
    {
        self.add(types.into(), MODE_POOLED, Box::new(f))
    }

    /// Adds a handler that only computes (no I/O, no locks held long, done
    /// in microseconds). The host runs it on the connection's own task,
    /// which is several times cheaper than a pool hand-off; one that is
    /// repeatedly slower than the host's `--inline-budget` is moved to the
    /// pool until it is fast again, with a warning in the log.
    ///
    /// ```
    /// use rohrpost_plugin_api::prelude::*;
    ///
    /// fn ping(req: &Request, conn: &mut Connection) -> HandlerResult {
    ///     conn.send_success(req.id(), "pong", req.data().cloned())?;
    ///     Ok(())
    /// }
    ///
    /// let plugin = Plugin::new("ping", "1.0.0").inline_handler("ping", ping);
    /// # let _ = plugin;
    /// ```
    pub fn inline_handler<F>(self, types: impl Into<Types>, f: F) -> Self
    where
        F: Fn(&Request<'_>, &mut Connection) -> HandlerResult + Send + Sync + 'static,
    {
        self.add(types.into(), MODE_INLINE, Box::new(f))
    }

    fn add(mut self, types: Types, mode: u8, run: HandlerFn) -> Self {
        self.handlers.push(Handler {
            types: types.0,
            mode,
            run,
        });
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
                .map(|h| HandlerDecl {
                    types: h.types.iter().map(|t| RString::from(t.as_str())).collect(),
                    mode: h.mode,
                })
                .collect(),
            panic_unwind: cfg!(panic = "unwind"),
        }
    }
}

/// The plugin of this library. Each plugin library links its own copy of
/// this crate, so each has its own.
static PLUGIN: OnceLock<Plugin> = OnceLock::new();

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
        _ => Err(EXT_UNSUPPORTED.to_owned()),
    }));
    match outcome {
        Ok(Ok(output)) => ROk(RString::from(output)),
        Ok(Err(error)) => RErr(RString::from(error)),
        Err(payload) => RErr(RString::from(format!(
            "{name} panicked: {}",
            take_panic_text(payload)
        ))),
    }
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
        let Some(h) = PLUGIN.get().and_then(|p| p.handlers.get(handler as usize)) else {
            return CallOutcome::Failed(RString::from(format!("no handler number {handler}")));
        };
        let request = Request::new(call);
        let mut conn = Connection::new();
        match (h.run)(&request, &mut conn) {
            Ok(()) => CallOutcome::Done(RVec::from(conn.into_effects())),
            Err(e) => CallOutcome::Failed(RString::from(e.to_string())),
        }
    }));
    outcome.unwrap_or_else(|payload| CallOutcome::Panicked(RString::from(take_panic_text(payload))))
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
