//! Plugin state without statics: a value built from the plugin's
//! configuration once per load, handed to every handler and hook as
//! `&State` (the way `zellij-tile` gives a plugin `load(&mut self, config)`).
//!
//! The state lives in a slot of this load of the library. Each call takes
//! a reference-counted handle on it, so when the host retires this version
//! ([`EXT_RETIRE`](crate::abi::EXT_RETIRE)) the slot is emptied and the
//! state is dropped as soon as the last running call ends.

use std::sync::{Arc, RwLock};

use serde::{de::DeserializeOwned, Serialize};

use crate::{
    abi::{MODE_INLINE, MODE_POOLED},
    connection::Connection,
    handle::{check_connections, Handler},
    lifecycle::ConnectionEvent,
    plugin::{HandlerFn, HandlerResult, Plugin, Types},
    request::Request,
    typed,
};

/// The state of one load, shared by the handlers.
struct Slot<S> {
    current: RwLock<Option<Arc<S>>>,
}

impl<S> Slot<S> {
    fn get(&self) -> Result<Arc<S>, &'static str> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(NOT_CONFIGURED)
    }

    fn put(&self, state: Option<S>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = state.map(Arc::new);
    }
}

/// What a handler answers when the state was never built: the host did not
/// configure the plugin (one older than plugin-api 1.1).
const NOT_CONFIGURED: &str = "The plugin was not configured by this server.";

/// A [`Plugin`] whose handlers receive its state, made by
/// [`Plugin::with_state`]. Export it like a plugin: the function given to
/// [`export_plugin!`](crate::export_plugin) may return either.
///
/// ```
/// use std::sync::atomic::{AtomicI64, Ordering};
///
/// use rohrpost_plugin_api::prelude::*;
///
/// /// The `[plugins.counter]` table of the host's config file.
/// #[derive(serde::Deserialize)]
/// #[serde(deny_unknown_fields)]
/// struct Settings {
///     #[serde(default)]
///     start: i64,
/// }
///
/// /// Built once per load from the settings; a new version of the plugin
/// /// starts with a fresh one.
/// struct Counter {
///     value: AtomicI64,
/// }
///
/// #[derive(serde::Deserialize)]
/// struct Increment {
///     by: i64,
/// }
///
/// /// `{"id":1,"type":"increment","data":{"by":2}}` →
/// /// `{"id":1,"type":"increment","data":{"value":2}}`.
/// fn increment(counter: &Counter, Data(input): Data<Increment>) -> Result<Value, Refusal> {
///     let value = counter.value.fetch_add(input.by, Ordering::Relaxed) + input.by;
///     Ok(json!({ "value": value }))
/// }
///
/// fn plugin() -> Stateful<Counter> {
///     Plugin::new("counter", env!("CARGO_PKG_VERSION"))
///         .with_state(|settings: Settings| -> Result<Counter, String> {
///             Ok(Counter { value: AtomicI64::new(settings.start) })
///         })
///         .handle("increment", increment)
///         .inline()
/// }
///
/// export_plugin!(plugin);
/// # fn main() {}
/// ```
pub struct Stateful<S> {
    plugin: Plugin,
    slot: Arc<Slot<S>>,
}

impl Plugin {
    /// Builds the plugin's state from its configuration: the host's
    /// `[plugins.<name>]` table deserialized into `T` (an empty table when
    /// there is none), once per load and before any handler or hook runs.
    /// An `Err`, or a table that does not fit `T`, rejects the load with
    /// that reason, and the version loaded before keeps serving. Replaces
    /// [`Plugin::with_config`]; handlers added before it do not see the
    /// state (add them on the [`Stateful`] it returns).
    pub fn with_state<T, S, E, F>(mut self, build: F) -> Stateful<S>
    where
        T: DeserializeOwned,
        S: Send + Sync + 'static,
        E: std::fmt::Display,
        F: Fn(T) -> Result<S, E> + Send + Sync + 'static,
    {
        let slot = Arc::new(Slot {
            current: RwLock::new(None),
        });
        let configured = slot.clone();
        self.config = Some(Box::new(move |text: &str| {
            let settings: T =
                serde_json::from_str(text).map_err(|e| format!("invalid configuration: {e}"))?;
            let state = build(settings).map_err(|e| e.to_string())?;
            configured.put(Some(state));
            Ok(())
        }));
        let retired = slot.clone();
        self.retire = Some(Box::new(move || retired.put(None)));
        Stateful { plugin: self, slot }
    }
}

impl<S: Send + Sync + 'static> Stateful<S> {
    /// [`Plugin::handle`], on the plugin with state: the handler may take
    /// the state, as `&S` first or as [`State<S>`](crate::State) anywhere.
    /// Its types may also come from the state
    /// ([`Types::configured`]).
    ///
    /// ```
    /// use rohrpost_plugin_api::prelude::*;
    ///
    /// struct Greeter {
    ///     greeting: String,
    /// }
    ///
    /// fn greet(greeter: &Greeter, Data(name): Data<String>) -> Result<Value, Refusal> {
    ///     Ok(json!({ "text": format!("{}, {name}!", greeter.greeting) }))
    /// }
    ///
    /// let plugin = Plugin::new("doc", "1.0.0")
    ///     .with_state(|_: Value| -> Result<Greeter, String> { Ok(Greeter { greeting: "Hello".into() }) })
    ///     .handle("greet", greet)
    ///     .inline();
    /// # let _ = plugin;
    /// ```
    pub fn handle<M, H>(self, types: impl Into<StateTypes<S>>, handler: H) -> Self
    where
        H: Handler<S, M>,
    {
        check_connections(H::CONNECTIONS);
        let slot = self.slot.clone();
        let run: HandlerFn = Box::new(move |req: &Request<'_>, conn: &mut Connection| {
            handler.call(req, conn, &*slot.get()?)
        });
        match types.into().0 {
            TypesOf::Fixed(types) => self.map(|plugin| plugin.add(types, MODE_POOLED, run)),
            TypesOf::Configured(types) => {
                let read = self.slot.clone();
                self.map(|plugin| {
                    plugin.add_configured(
                        Box::new(move || read.get().map(|s| types(&s)).unwrap_or_default()),
                        MODE_POOLED,
                        run,
                    )
                })
            }
        }
    }

    /// [`Plugin::inline`]: the handler just added only computes.
    pub fn inline(self) -> Self {
        self.map(Plugin::inline)
    }

    /// [`Plugin::handler`], with the state.
    #[deprecated(
        since = "1.4.0",
        note = "use `handle(types, f)`, which takes the same functions"
    )]
    pub fn handler<F>(self, types: impl Into<Types>, f: F) -> Self
    where
        F: Fn(&S, &Request<'_>, &mut Connection) -> HandlerResult + Send + Sync + 'static,
    {
        self.add(types, false, f)
    }

    /// [`Plugin::inline_handler`], with the state.
    #[deprecated(
        since = "1.4.0",
        note = "use `handle(types, f).inline()`, which takes the same functions"
    )]
    pub fn inline_handler<F>(self, types: impl Into<Types>, f: F) -> Self
    where
        F: Fn(&S, &Request<'_>, &mut Connection) -> HandlerResult + Send + Sync + 'static,
    {
        self.add(types, true, f)
    }

    /// [`Plugin::typed`], with the state.
    #[deprecated(
        since = "1.4.0",
        note = "use `handle(types, |state: &S, Data(input): Data<In>| ...)`: its `Ok` is the reply's data (a `Value` or `Json(out)`)"
    )]
    pub fn typed<In, Out, E, F>(self, types: impl Into<Types>, f: F) -> Self
    where
        In: DeserializeOwned,
        Out: Serialize,
        E: std::fmt::Display + 'static,
        F: Fn(&S, In) -> Result<Out, E> + Send + Sync + 'static,
    {
        self.add(
            types,
            false,
            move |state: &S, req: &Request<'_>, conn: &mut Connection| {
                typed::answer(req, conn, |input, _, _| f(state, input))
            },
        )
    }

    /// [`Plugin::typed_handler`], with the state.
    #[deprecated(
        since = "1.4.0",
        note = "use `handle(types, |state: &S, Data(input): Data<In>, req: &Request, conn: &mut Connection| ...)`"
    )]
    pub fn typed_handler<In, Out, E, F>(self, types: impl Into<Types>, f: F) -> Self
    where
        In: DeserializeOwned,
        Out: Serialize,
        E: std::fmt::Display + 'static,
        F: Fn(&S, In, &Request<'_>, &mut Connection) -> Result<Out, E> + Send + Sync + 'static,
    {
        self.add(
            types,
            false,
            move |state: &S, req: &Request<'_>, conn: &mut Connection| {
                typed::answer(req, conn, |input, req, conn| f(state, input, req, conn))
            },
        )
    }

    /// A handler for the message types the configuration names
    /// (plugin-api 1.2).
    #[deprecated(since = "1.4.0", note = "use `handle(Types::configured(types), f)`")]
    pub fn configured_handler<T, F>(self, types: T, f: F) -> Self
    where
        T: Fn(&S) -> Vec<String> + Send + Sync + 'static,
        F: Fn(&S, &Request<'_>, &mut Connection) -> HandlerResult + Send + Sync + 'static,
    {
        let (read, run) = (self.slot.clone(), self.slot.clone());
        let plugin = self.plugin.add_configured(
            Box::new(move || read.get().map(|s| types(&s)).unwrap_or_default()),
            MODE_POOLED,
            Box::new(move |req: &Request<'_>, conn: &mut Connection| f(&*run.get()?, req, conn)),
        );
        Stateful {
            plugin,
            slot: self.slot,
        }
    }

    /// [`Plugin::yielding`], on the stateful plugin.
    pub fn yielding(self) -> Self {
        self.map(Plugin::yielding)
    }

    /// [`Plugin::on_connect`], with the state.
    pub fn on_connect<F>(self, f: F) -> Self
    where
        F: Fn(&S, &ConnectionEvent, &mut Connection) -> HandlerResult + Send + Sync + 'static,
    {
        let hook = self.with_state(f);
        self.map(|plugin| plugin.on_connect(hook))
    }

    /// [`Plugin::on_disconnect`], with the state.
    pub fn on_disconnect<F>(self, f: F) -> Self
    where
        F: Fn(&S, &ConnectionEvent, &mut Connection) -> HandlerResult + Send + Sync + 'static,
    {
        let hook = self.with_state(f);
        self.map(|plugin| plugin.on_disconnect(hook))
    }

    /// A hook taking the state, as a hook of the plain plugin.
    fn with_state<F>(&self, f: F) -> impl Fn(&ConnectionEvent, &mut Connection) -> HandlerResult
    where
        F: Fn(&S, &ConnectionEvent, &mut Connection) -> HandlerResult + Send + Sync + 'static,
    {
        let slot = self.slot.clone();
        move |event, conn| f(&*slot.get()?, event, conn)
    }

    /// The same state, on the plugin `change` makes.
    fn map(self, change: impl FnOnce(Plugin) -> Plugin) -> Self {
        Stateful {
            plugin: change(self.plugin),
            slot: self.slot,
        }
    }

    fn add<F>(self, types: impl Into<Types>, inline: bool, f: F) -> Self
    where
        F: Fn(&S, &Request<'_>, &mut Connection) -> HandlerResult + Send + Sync + 'static,
    {
        let slot = self.slot.clone();
        let run = move |req: &Request<'_>, conn: &mut Connection| f(&*slot.get()?, req, conn);
        let mode = if inline { MODE_INLINE } else { MODE_POOLED };
        self.map(|plugin| plugin.add(types.into(), mode, Box::new(run)))
    }
}

/// The message types of a handler of a plugin with state: fixed, as
/// [`Types`] are (`"x"`, `["x", "y"]`), or read from the state once it is
/// built ([`Types::configured`]).
pub struct StateTypes<S>(TypesOf<S>);

enum TypesOf<S> {
    /// Known when the plugin is built.
    Fixed(Types),
    /// Read from the state once the configuration built it.
    Configured(ReadTypes<S>),
}

type ReadTypes<S> = Box<dyn Fn(&S) -> Vec<String> + Send + Sync>;

impl<S, T: Into<Types>> From<T> for StateTypes<S> {
    fn from(types: T) -> Self {
        StateTypes(TypesOf::Fixed(types.into()))
    }
}

impl Types {
    /// Message types that the configuration names, which are not known
    /// when the plugin is built: `types` reads them from the state once it
    /// is built, and the host routes them to the handler (it reads the
    /// plugin's handlers again after the configuration). A load whose
    /// `types` gives no type is rejected (`a handler declares no message
    /// type`), as is one in a host that reads the handlers only before the
    /// configuration.
    ///
    /// ```
    /// use rohrpost_plugin_api::prelude::*;
    ///
    /// #[derive(serde::Deserialize)]
    /// struct Settings {
    ///     types: Vec<String>,
    /// }
    ///
    /// let plugin = Plugin::new("doc", "1.0.0")
    ///     .with_state(|settings: Settings| -> Result<Settings, String> { Ok(settings) })
    ///     .handle(
    ///         Types::configured(|settings: &Settings| settings.types.clone()),
    ///         |req: &Request| -> Result<Value, Refusal> { Ok(json!({ "served": req.kind() })) },
    ///     );
    /// # let _ = plugin;
    /// ```
    pub fn configured<S, F>(types: F) -> StateTypes<S>
    where
        F: Fn(&S) -> Vec<String> + Send + Sync + 'static,
    {
        StateTypes(TypesOf::Configured(Box::new(types)))
    }
}

impl<S> From<Stateful<S>> for Plugin {
    fn from(stateful: Stateful<S>) -> Self {
        stateful.plugin
    }
}
