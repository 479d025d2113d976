//! The typed handlers of plugin-api 1.2 and 1.3 (`Plugin::typed`,
//! `Plugin::typed_handler` and their stateful forms), kept so that plugins
//! written for them still build: `data` in as the author's type, the
//! answer out as JSON, written here once. New handlers take
//! [`Data`](crate::Data) through [`Plugin::handle`](crate::Plugin::handle).

use crate::{
    connection::Connection, data::decode, plugin::HandlerResult, refusal::Refusal, request::Request,
};
use serde::{de::DeserializeOwned, Serialize};

/// Decodes `data`, runs `f`, answers the request with its outcome.
pub(crate) fn answer<In, Out, E>(
    req: &Request<'_>,
    conn: &mut Connection,
    f: impl FnOnce(In, &Request<'_>, &mut Connection) -> Result<Out, E>,
) -> HandlerResult
where
    In: DeserializeOwned,
    Out: Serialize,
    E: std::fmt::Display + 'static,
{
    let input: In = match decode(req.data_json()) {
        Ok(input) => input,
        Err(problem) => {
            // The client's mistake: an error reply, not a failed call.
            conn.reply_error(req, problem);
            return Ok(());
        }
    };
    let out = match f(input, req, conn) {
        Ok(out) => out,
        Err(e) => {
            if let Some(refusal) = Refusal::of(&e) {
                conn.reply_error(req, refusal);
                return Ok(());
            }
            return Err(e.to_string().into());
        }
    };
    let data = serde_json::to_value(out)?;
    conn.reply(req, data);
    Ok(())
}
