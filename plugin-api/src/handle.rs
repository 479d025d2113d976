//! One way to register a handler: [`Plugin::handle`](crate::Plugin::handle)
//! takes a function whose arguments say what it needs (the request, the
//! connection, the plugin's state, `data` as the handler's own type), in
//! any order, the way axum's extractors do, and whose return value is the
//! answer. The traits here resolve the argument list at compile time; the
//! call itself is the same as a hand-written handler's.

use std::cell::Cell;

use serde::{de::DeserializeOwned, Serialize};

use crate::{
    connection::Connection,
    data::{decode, Data, DataError, Json},
    plugin::{HandlerError, HandlerResult},
    request::Request,
};

/// The plugin's state, as a handler's argument in any position (the
/// first argument may also be the plain `&S`): what
/// [`Plugin::with_state`](crate::Plugin::with_state) built from the
/// configuration.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
///
/// use rohrpost_plugin_api::prelude::*;
///
/// struct Hits(AtomicU64);
///
/// fn hit(req: &Request, State(hits): State<Hits>) -> Result<Value, Refusal> {
///     let n = hits.0.fetch_add(1, Ordering::Relaxed) + 1;
///     Ok(json!({ "type": req.kind(), "hits": n }))
/// }
///
/// let plugin = Plugin::new("doc", "1.0.0")
///     .with_state(|_: Value| -> Result<Hits, String> { Ok(Hits(AtomicU64::new(0))) })
///     .handle("hit", hit)
///     .inline();
/// # let _ = plugin;
/// ```
#[derive(Debug)]
pub struct State<'a, S>(pub &'a S);

impl<S> std::ops::Deref for State<'_, S> {
    type Target = S;

    fn deref(&self) -> &S {
        self.0
    }
}

/// What one call offers a handler's arguments.
#[doc(hidden)]
pub struct CallParts<'a, S> {
    req: &'a Request<'a>,
    /// Taken by the one argument that is the connection.
    conn: Cell<Option<&'a mut Connection>>,
    state: &'a S,
}

/// Why a call ended before its handler ran.
#[doc(hidden)]
pub enum Rejected {
    /// The client's mistake: this error reply, not a failed call.
    Reply(String),
    /// A failed call.
    Failed(HandlerError),
}

/// A type a handler may take as an argument: [`&Request`](crate::Request),
/// [`&mut Connection`](crate::Connection), [`State<S>`], [`Data<T>`], and
/// `Result<Data<T>, DataError>`. Implemented by this crate only.
pub trait FromCall<S>: sealed::Sealed {
    /// The argument as the handler receives it during one call.
    #[doc(hidden)]
    type Item<'a>
    where
        S: 'a;

    /// How many times it takes the connection (at most once per handler).
    #[doc(hidden)]
    const CONNECTIONS: usize = 0;

    /// The argument, from the call's parts.
    #[doc(hidden)]
    fn from_call<'a>(parts: &'a CallParts<'a, S>) -> Result<Self::Item<'a>, Rejected>;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for &crate::Request<'_> {}
    impl Sealed for &mut crate::Connection {}
    impl<S> Sealed for super::State<'_, S> {}
    impl<T> Sealed for crate::Data<T> {}
    impl<T> Sealed for Result<crate::Data<T>, crate::DataError> {}
}

impl<S> FromCall<S> for &Request<'_> {
    type Item<'a>
        = &'a Request<'a>
    where
        S: 'a;

    fn from_call<'a>(parts: &'a CallParts<'a, S>) -> Result<&'a Request<'a>, Rejected> {
        Ok(parts.req)
    }
}

impl<S> FromCall<S> for &mut Connection {
    type Item<'a>
        = &'a mut Connection
    where
        S: 'a;

    const CONNECTIONS: usize = 1;

    fn from_call<'a>(parts: &'a CallParts<'a, S>) -> Result<&'a mut Connection, Rejected> {
        parts.conn.take().ok_or_else(|| {
            Rejected::Failed("the handler takes the connection more than once".into())
        })
    }
}

impl<S> FromCall<S> for State<'_, S> {
    type Item<'a>
        = State<'a, S>
    where
        S: 'a;

    fn from_call<'a>(parts: &'a CallParts<'a, S>) -> Result<State<'a, S>, Rejected> {
        Ok(State(parts.state))
    }
}

impl<S, T: DeserializeOwned> FromCall<S> for Data<T> {
    type Item<'a>
        = Data<T>
    where
        S: 'a;

    fn from_call<'a>(parts: &'a CallParts<'a, S>) -> Result<Data<T>, Rejected> {
        decode(parts.req.data_json())
            .map(Data)
            .map_err(|e| Rejected::Reply(e.to_string()))
    }
}

impl<S, T: DeserializeOwned> FromCall<S> for Result<Data<T>, DataError> {
    type Item<'a>
        = Result<Data<T>, DataError>
    where
        S: 'a;

    fn from_call<'a>(parts: &'a CallParts<'a, S>) -> Result<Self::Item<'a>, Rejected> {
        Ok(decode(parts.req.data_json()).map(Data))
    }
}

/// What a handler returns: `()`, or a `Result` whose `Ok` is the answer
/// ([`Reply`]) and whose `Err` is any error (a [`Refusal`](crate::Refusal)
/// answers without being logged; anything else is a failed call, logged
/// and counted).
pub trait Answer: sealed_answer::Sealed {
    /// Sends the answer, or hands back the error.
    #[doc(hidden)]
    fn answer(self, req: &Request<'_>, conn: &mut Connection) -> HandlerResult;
}

mod sealed_answer {
    pub trait Sealed {}
    impl Sealed for () {}
    impl<T, E> Sealed for Result<T, E> {}
}

impl Answer for () {
    fn answer(self, _: &Request<'_>, _: &mut Connection) -> HandlerResult {
        Ok(())
    }
}

impl<T: Reply, E: Into<HandlerError>> Answer for Result<T, E> {
    fn answer(self, req: &Request<'_>, conn: &mut Connection) -> HandlerResult {
        self.map_err(Into::into)?.reply(req, conn)
    }
}

/// The `Ok` of a handler's `Result`: `()` sends nothing (the handler
/// answered itself, with [`Connection::reply`](crate::Connection::reply),
/// or has nothing to answer); a [`Value`](serde_json::Value) or a
/// [`Json`] is the reply's `data` (`null`: a reply without `data`).
pub trait Reply: sealed_reply::Sealed {
    /// Sends the reply.
    #[doc(hidden)]
    fn reply(self, req: &Request<'_>, conn: &mut Connection) -> HandlerResult;
}

mod sealed_reply {
    pub trait Sealed {}
    impl Sealed for () {}
    impl Sealed for serde_json::Value {}
    impl<T: serde::Serialize> Sealed for crate::Json<T> {}
}

impl Reply for () {
    fn reply(self, _: &Request<'_>, _: &mut Connection) -> HandlerResult {
        Ok(())
    }
}

impl Reply for serde_json::Value {
    fn reply(self, req: &Request<'_>, conn: &mut Connection) -> HandlerResult {
        conn.reply(req, self);
        Ok(())
    }
}

impl<T: Serialize> Reply for Json<T> {
    fn reply(self, req: &Request<'_>, conn: &mut Connection) -> HandlerResult {
        conn.reply(req, serde_json::to_value(self.0)?);
        Ok(())
    }
}

/// A function [`Plugin::handle`](crate::Plugin::handle) accepts: up to six
/// arguments, each a [`FromCall`] type (for a plugin with state, the first
/// may also be `&S`), returning an [`Answer`]. `M` only tells the shapes
/// apart.
pub trait Handler<S, M>: Send + Sync + 'static {
    /// How many of its arguments take the connection.
    #[doc(hidden)]
    const CONNECTIONS: usize;

    /// Runs the handler for one call.
    #[doc(hidden)]
    fn call(&self, req: &Request<'_>, conn: &mut Connection, state: &S) -> HandlerResult;
}

/// Runs `f` with the arguments taken from the call's parts, then sends
/// its answer; a rejected argument answers instead.
macro_rules! run {
    ($req:ident, $conn:ident, $state:ident, |$($A:ident),*| $call:expr) => {{
        let out = 'call: {
            let parts = CallParts {
                req: $req,
                conn: Cell::new(Some(&mut *$conn)),
                state: $state,
            };
            $(
                let $A = match $A::from_call(&parts) {
                    Ok(arg) => arg,
                    Err(rejected) => break 'call Err(rejected),
                };
            )*
            Ok($call)
        };
        match out {
            Ok(out) => out.answer($req, $conn),
            Err(Rejected::Reply(text)) => {
                $conn.reply_error($req, text);
                Ok(())
            }
            Err(Rejected::Failed(e)) => Err(e),
        }
    }};
}

/// The state-first shape tells apart from the others.
#[doc(hidden)]
pub struct StateFirst;

macro_rules! handlers {
    ($($A:ident),*) => {
        #[allow(non_snake_case, unused_variables, unused_mut, unused_labels)]
        impl<S, F, R, $($A),*> Handler<S, (R, $($A,)*)> for F
        where
            F: Fn($($A),*) -> R + for<'a> Fn($($A::Item<'a>),*) -> R + Send + Sync + 'static,
            R: Answer,
            $($A: FromCall<S>,)*
        {
            const CONNECTIONS: usize = 0 $(+ $A::CONNECTIONS)*;

            fn call(&self, req: &Request<'_>, conn: &mut Connection, state: &S) -> HandlerResult {
                run!(req, conn, state, |$($A),*| (self)($($A),*))
            }
        }

        #[allow(non_snake_case, unused_variables, unused_mut, unused_labels)]
        impl<S, F, R, $($A),*> Handler<S, (StateFirst, R, $($A,)*)> for F
        where
            F: Fn(&S, $($A),*) -> R + for<'a> Fn(&'a S, $($A::Item<'a>),*) -> R + Send + Sync + 'static,
            R: Answer,
            $($A: FromCall<S>,)*
        {
            const CONNECTIONS: usize = 0 $(+ $A::CONNECTIONS)*;

            fn call(&self, req: &Request<'_>, conn: &mut Connection, state: &S) -> HandlerResult {
                run!(req, conn, state, |$($A),*| (self)(state, $($A),*))
            }
        }
    };
}

handlers!();
handlers!(A1);
handlers!(A1, A2);
handlers!(A1, A2, A3);
handlers!(A1, A2, A3, A4);
handlers!(A1, A2, A3, A4, A5);
handlers!(A1, A2, A3, A4, A5, A6);

/// Refuses, while the plugin is built, a handler that takes the
/// connection twice (two `&mut` to one connection).
pub(crate) fn check_connections(connections: usize) {
    assert!(
        connections <= 1,
        "a handler may take `&mut Connection` once, this one takes it {connections} times"
    );
}
