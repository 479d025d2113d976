//! Write rohrpost message handlers in plain Rust and ship them as plugins
//! that a running rohrpost host loads, replaces and unloads without a restart.
//!
//! A plugin is a `cdylib` crate: a few handler functions, a [`Plugin`] that
//! names them, and one [`export_plugin!`] line.
//!
//! ```
//! use rohrpost_plugin_api::prelude::*;
//!
//! /// Answers `{"id":1,"type":"greet","data":{"name":"Ada"}}` with a greeting.
//! fn greet(req: &Request, conn: &mut Connection) -> HandlerResult {
//!     let name = req.data().and_then(|d| d.get("name")).and_then(|n| n.as_str());
//!     match name {
//!         Some(name) => conn.send_success(req.id(), "greet", Some(json!({"text": format!("Hello, {name}!")})))?,
//!         None => conn.send_error(req.id(), "greet", "data.name is required")?,
//!     }
//!     Ok(())
//! }
//!
//! fn plugin() -> Plugin {
//!     Plugin::new("greeter", env!("CARGO_PKG_VERSION")).handler("greet", greet)
//! }
//!
//! export_plugin!(plugin);
//! # fn main() {}
//! ```
//!
//! The host passes each handler the [`Request`] and a [`Connection`] to
//! reply on. A handler may send zero, one or several messages, close the
//! connection, or fail: an `Err` becomes `{"id","type","error"}` for the
//! client, and so does a panic (with a generic text; the panic message goes
//! to the host's log).
//!
//! # Compatibility
//!
//! The binary interface has its own version, [`abi::ABI_VERSION`]. A host
//! loads plugins built against the same ABI major version; entry points and
//! effect kinds added later are optional for old plugins. A plugin built
//! against another major version is rejected at load with a clear reason.

pub mod abi;
mod connection;
mod message;
mod notification;
mod plugin;
mod request;
pub mod wire;

pub use connection::{Connection, NotifyError};
pub use message::{Id, Message, MessageError, GENERATED_ID_MAX};
pub use notification::{Event, Notification, NotificationError};
pub use plugin::{HandlerResult, Plugin, Types};
pub use request::Request;

/// Everything a plugin usually needs, plus `serde_json`'s `json!` and `Value`.
pub mod prelude {
    pub use crate::{
        export_plugin, Connection, Event, HandlerResult, Id, Message, Notification, Plugin, Request,
    };
    pub use serde_json::{json, Value};
}

#[doc(hidden)]
pub mod __private {
    pub use crate::plugin::root_module;
    pub use abi_stable::library::{
        __call_root_module_loader, CheckTypeLayout, LibHeader, RootModuleResult,
    };
}

/// Exports a plugin from a `cdylib` crate. Takes a function returning the
/// [`Plugin`]; use it once per library.
///
/// ```ignore
/// rohrpost_plugin_api::export_plugin!(plugin);
/// ```
#[macro_export]
macro_rules! export_plugin {
    ($build:path) => {
        #[doc(hidden)]
        #[unsafe(export_name = "_1as_0lib_1header_0root_bmodule_bloader")]
        pub static __ROHRPOST_ROOT_MODULE_LOADER: $crate::__private::LibHeader = {
            extern "C" fn __rohrpost_loader() -> $crate::__private::RootModuleResult {
                fn __rohrpost_root() -> $crate::abi::PluginModRef {
                    $crate::__private::root_module($build)
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

/// The README's plugin example compiles as it is written.
#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
