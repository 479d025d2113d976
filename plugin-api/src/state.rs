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
    connection::Connection,
    lifecycle::ConnectionEvent,
    plugin::{HandlerResult, Plugin, Types},
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
/// fn increment(counter: &Counter, input: Increment) -> Result<Value, String> {
///     let value = counter.value.fetch_add(input.by, Ordering::Relaxed) + input.by;
///     Ok(json!({ "value": value }))
/// }
///
/// fn plugin() -> Stateful<Counter> {
///     Plugin::new("counter", env!("CARGO_PKG_VERSION"))
///         .with_state(|settings: Settings| -> Result<Counter, String> {
///             Ok(Counter { value: AtomicI64::new(settings.start) })
///         })
///         .typed("increment", increment)
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
    /// [`Plugin::handler`], with the state.
    pub fn handler<F>(self, types: impl Into<Types>, f: F) -> Self
    where
        F: Fn(&S, &Request<'_>, &mut Connection) -> HandlerResult + Send + Sync + 'static,
    {
        self.add(types, false, f)
    }

    /// [`Plugin::inline_handler`], with the state.
    pub fn inline_handler<F>(self, types: impl Into<Types>, f: F) -> Self
    where
        F: Fn(&S, &Request<'_>, &mut Connection) -> HandlerResult + Send + Sync + 'static,
    {
        self.add(types, true, f)
    }

    /// [`Plugin::typed`], with the state.
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

    /// A handler for the message types the configuration names, which are
    /// not known when the plugin is built: `types` reads them from the
    /// state once it is built, and the host routes them to `f` (it reads
    /// the plugin's handlers again after the configuration). Runs on the
    /// worker pool, like [`Plugin::handler`]. A load whose `types` gives no
    /// type is rejected (`a handler declares no message type`), as is one
    /// in a host that reads the handlers only before the configuration.
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
    ///     .configured_handler(
    ///         |settings: &Settings| settings.types.clone(),
    ///         |_: &Settings, req: &Request, conn: &mut Connection| {
    ///             conn.send_success(req.id(), req.kind(), None)?;
    ///             Ok(())
    ///         },
    ///     );
    /// # let _ = plugin;
    /// ```
    pub fn configured_handler<T, F>(self, types: T, f: F) -> Self
    where
        T: Fn(&S) -> Vec<String> + Send + Sync + 'static,
        F: Fn(&S, &Request<'_>, &mut Connection) -> HandlerResult + Send + Sync + 'static,
    {
        let (read, run) = (self.slot.clone(), self.slot.clone());
        let plugin = self.plugin.add_configured(
            Box::new(move || read.get().map(|s| types(&s)).unwrap_or_default()),
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
        let plugin = if inline {
            self.plugin.inline_handler(types, run)
        } else {
            self.plugin.handler(types, run)
        };
        Stateful {
            plugin,
            slot: self.slot,
        }
    }
}

impl<S> From<Stateful<S>> for Plugin {
    fn from(stateful: Stateful<S>) -> Self {
        stateful.plugin
    }
}
