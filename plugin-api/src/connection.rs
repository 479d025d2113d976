//! What a handler does to the calling connection: send messages, close it,
//! and group membership and group messages. Effects are collected here and
//! carried out by the host, in order, after the handler returns.

use std::convert::Infallible;

use abi_stable::std_types::RString;

use crate::{
    abi::{
        Effect, EFFECT_CLOSE, EFFECT_CLOSE_WITH, EFFECT_GROUP_SEND, EFFECT_JOIN, EFFECT_LEAVE,
        EFFECT_SEND, EFFECT_SET,
    },
    host,
    message::{Id, Message, MessageError},
    notification::{Notification, NotificationError},
    request::Request,
};

/// The calling connection, as a handler sees it (rohrpost's `consumer`).
///
/// Everything a handler asks for here (messages, group operations, close)
/// is queued and carried out by the host in order once the handler returns
/// `Ok`; if it returns an error or panics, the queue is dropped and the
/// client gets the error reply alone.
///
/// ```
/// use rohrpost_plugin_api::prelude::*;
///
/// /// `{"id":1,"type":"watch","data":{"topic":"news"}}`: joins the group
/// /// `topic-news`, answers, and tells the group.
/// fn watch(req: &Request, conn: &mut Connection) -> HandlerResult {
///     let topic = req.data().and_then(|d| d.get("topic")).and_then(Value::as_str).unwrap_or("all");
///     let group = format!("topic-{topic}");
///     conn.add_to_group(&group);
///     conn.reply(req, json!({ "group": group }));
///     conn.send_to_group(&group, Message::new().kind("watcher").generate_id().with("topic", topic))?;
///     Ok(())
/// }
/// # let _ = Plugin::new("doc", "1.0.0").handle("watch", watch);
/// ```
pub struct Connection {
    effects: Vec<Effect>,
}

impl Connection {
    pub(crate) fn new() -> Self {
        Connection {
            effects: Vec::new(),
        }
    }

    pub(crate) fn into_effects(self) -> Vec<Effect> {
        self.effects
    }

    fn push(&mut self, kind: u32, target: &str, body: String) {
        self.effects.push(Effect {
            kind,
            target: RString::from(target),
            body: RString::from(body),
        });
    }

    /// rohrpost's `send_message`: sends any [`Message`] to the caller;
    /// refuses one it cannot send (see [`MessageError`]).
    ///
    /// ```
    /// use rohrpost_plugin_api::prelude::*;
    ///
    /// fn tick(req: &Request, conn: &mut Connection) -> HandlerResult {
    ///     // Several messages for one request, each with a fresh random id.
    ///     for n in 1..=3 {
    ///         conn.send_message(Message::new().kind("tick").generate_id().with("n", n))?;
    ///     }
    ///     conn.reply(req, ());
    ///     Ok(())
    /// }
    /// # let _ = Plugin::new("doc", "1.0.0").handle("tick", tick).inline();
    /// ```
    pub fn send_message(&mut self, message: Message) -> Result<(), MessageError> {
        let text = message.into_json()?;
        self.push(EFFECT_SEND, "", text);
        Ok(())
    }

    /// rohrpost's `send_success`: `{"id","type","data"}` (`data` left out
    /// when `None`), for any id and type. To answer the request with its
    /// own id and type, [`Connection::reply`] is shorter.
    ///
    /// It cannot fail: the `Result<(), Infallible>` only keeps
    /// `conn.send_success(...)?;` of earlier versions compiling, and may be
    /// ignored without a warning.
    pub fn send_success(
        &mut self,
        id: impl Into<Id>,
        kind: &str,
        data: Option<serde_json::Value>,
    ) -> Result<(), Infallible> {
        self.send_reply(Message::success(id, kind).maybe_data(data));
        Ok(())
    }

    /// [`Connection::send_success`] with `data` as raw JSON text, such as
    /// [`Request::data_json`]'s: written compact, never parsed into a
    /// `Value`, and the message built in one piece. The cheapest reply
    /// there is; the caller promises the text is valid JSON, as for
    /// [`Message::data_json`].
    ///
    /// ```
    /// use rohrpost_plugin_api::prelude::*;
    ///
    /// /// `{"id":1,"type":"echo","data":{"a":1}}` → `{"id":1,"type":"echoed","data":{"a":1}}`.
    /// fn echo(req: &Request, conn: &mut Connection) -> HandlerResult {
    ///     conn.send_success_json(req.id(), "echoed", req.data_json());
    ///     Ok(())
    /// }
    /// # let _ = Plugin::new("doc", "1.0.0").handle("echo", echo).inline();
    /// ```
    pub fn send_success_json(&mut self, id: &Id, kind: &str, data_json: Option<&str>) {
        let text = crate::wire::write_message(Some(id.as_json()), Some(kind), None, data_json);
        self.push(EFFECT_SEND, "", text);
    }

    /// rohrpost's `send_error`: `{"id","type","error"}`, for any id and
    /// type ([`Connection::reply_error`] answers the request). The handler still
    /// succeeds, and nothing is logged: the way to answer an expected
    /// refusal (a denied subscription, a missing field). To fail the call,
    /// return an error instead: the client gets the same reply, and the
    /// host logs it and counts it as an error.
    ///
    /// It cannot fail, like [`Connection::send_success`].
    pub fn send_error(
        &mut self,
        id: impl Into<Id>,
        kind: &str,
        error: impl ToString,
    ) -> Result<(), Infallible> {
        self.send_reply(Message::error(id, kind, error));
        Ok(())
    }

    /// Answers `req`: `{"id":<req's id>,"type":<req's type>,"data":<data>}`,
    /// without `data` when it is `null` (`()` or `None` give that). Any
    /// JSON value goes: `json!({...})`, a string, a number; a type of your
    /// own through [`serde_json::to_value`] (or return it from the handler
    /// as [`Json`](crate::Json)).
    ///
    /// ```
    /// use rohrpost_plugin_api::prelude::*;
    ///
    /// /// `{"id":1,"type":"watch","data":{"topic":"news"}}` →
    /// /// `{"id":1,"type":"watch","data":{"group":"topic-news"}}`.
    /// fn watch(req: &Request, conn: &mut Connection) -> HandlerResult {
    ///     let topic = req.data().and_then(|d| d.get("topic")).and_then(Value::as_str);
    ///     let Some(topic) = topic else {
    ///         conn.reply_error(req, "Name a topic.");
    ///         return Ok(());
    ///     };
    ///     let group = format!("topic-{topic}");
    ///     conn.add_to_group(&group);
    ///     conn.reply(req, json!({ "group": group }));
    ///     Ok(())
    /// }
    /// # let _ = Plugin::new("doc", "1.0.0").handle("watch", watch);
    /// ```
    pub fn reply(&mut self, req: &Request<'_>, data: impl Into<serde_json::Value>) {
        let data = data.into();
        let data = (!data.is_null()).then_some(data);
        self.send_reply(Message::success(req.id(), req.kind()).maybe_data(data));
    }

    /// Answers `req` with an error reply,
    /// `{"id":<req's id>,"type":<req's type>,"error":"<error>"}`. The
    /// handler still succeeds, and nothing is logged, as for
    /// [`Connection::send_error`].
    pub fn reply_error(&mut self, req: &Request<'_>, error: impl ToString) {
        self.send_reply(Message::error(req.id(), req.kind(), error));
    }

    /// Sends a reply that always has an id and a type, so always encodes.
    fn send_reply(&mut self, message: Message) {
        match message.into_json() {
            Ok(text) => self.push(EFFECT_SEND, "", text),
            // Unreachable: a message with a type is never empty and these
            // replies merge no fields.
            Err(e) => self.push(
                EFFECT_SEND,
                "",
                crate::wire::write_message(None, None, Some(&e.to_string()), None),
            ),
        }
    }

    /// Closes the connection (code 1000) once the messages sent before this
    /// call have gone out. Anything queued after it is not carried out.
    pub fn close(&mut self) {
        self.push(EFFECT_CLOSE, "", String::new());
    }

    /// rohrpost's `add_to_group`: the connection receives what is sent to
    /// `group` until it leaves or closes (however it closes). Joining twice
    /// delivers once.
    pub fn add_to_group(&mut self, group: &str) {
        self.push(EFFECT_JOIN, group, String::new());
    }

    /// rohrpost's `remove_from_group`; leaving a group one is not in is
    /// not an error.
    pub fn remove_from_group(&mut self, group: &str) {
        self.push(EFFECT_LEAVE, group, String::new());
    }

    /// rohrpost's `send_to_group`: sends `message` to every connection in
    /// `group` (the caller too, if it is a member), at most once each.
    ///
    /// Returns how many connections of this host it goes to: the group's
    /// members here now, with the joins and leaves this call made before
    /// it (0 on a host older than plugin-api 1.2). Like every effect, the
    /// message goes out once the handler returns `Ok`.
    pub fn send_to_group(&mut self, group: &str, message: Message) -> Result<usize, MessageError> {
        let text = message.into_json()?;
        let reached = self.size(group, false).local;
        self.push(EFFECT_GROUP_SEND, group, text);
        Ok(reached)
    }

    /// [`Connection::send_to_group`] that also says how many connections
    /// are in the group across every host (as [`Connection::group_size`]),
    /// asking the host once for both.
    ///
    /// ```
    /// use rohrpost_plugin_api::prelude::*;
    ///
    /// #[derive(serde::Deserialize)]
    /// struct Say {
    ///     group: String,
    ///     text: String,
    /// }
    ///
    /// /// `{"id":1,"type":"say","data":{"group":"news","text":"hi"}}` →
    /// /// `{"id":1,"type":"say","data":{"receivers":3}}`.
    /// fn say(Data(say): Data<Say>, conn: &mut Connection) -> Result<Value, HandlerError> {
    ///     let message = Message::new().kind("said").generate_id().with("text", say.text);
    ///     let published = conn.publish(&say.group, message)?;
    ///     Ok(json!({ "receivers": published.members }))
    /// }
    /// # let _ = Plugin::new("doc", "1.0.0").handle("say", say);
    /// ```
    pub fn publish(&mut self, group: &str, message: Message) -> Result<Published, MessageError> {
        let text = message.into_json()?;
        let size = self.size(group, true);
        self.push(EFFECT_GROUP_SEND, group, text);
        Ok(Published {
            members: size.members,
            local: size.local,
        })
    }

    /// How many connections are in `group` now, across every host sharing
    /// the groups (exact on one host; with groups over Redis, other hosts'
    /// members as they last reported them, within the staleness bound the
    /// host's `docs/groups.md` gives), counting this call's own joins and leaves made
    /// before it. Asks the host, so it costs a round trip; 0 on a host older
    /// than plugin-api 1.2.
    ///
    /// ```
    /// use rohrpost_plugin_api::prelude::*;
    ///
    /// /// `{"id":1,"type":"enter","data":{"group":"news","text":"hi"}}`
    /// /// joins the group, says hi to it, and answers how many are in it.
    /// fn enter(req: &Request, conn: &mut Connection) -> HandlerResult {
    ///     let group = req.data().and_then(|d| d.get("group")).and_then(Value::as_str).ok_or("data.group is required")?;
    ///     let text = req.data().and_then(|d| d.get("text")).cloned().unwrap_or(Value::Null);
    ///     conn.add_to_group(group);
    ///     // Counts the join above; `publish` would count and send at once.
    ///     let members = conn.group_size(group);
    ///     conn.send_to_group(group, Message::new().kind("message").generate_id().with("text", text))?;
    ///     conn.reply(req, json!({ "members": members }));
    ///     Ok(())
    /// }
    /// # let _ = Plugin::new("doc", "1.0.0").handle("enter", enter);
    /// ```
    pub fn group_size(&self, group: &str) -> usize {
        self.size(group, true).members
    }

    /// The host's count for `group`, with this call's joins and leaves.
    fn size(&self, group: &str, everywhere: bool) -> host::GroupSize {
        let mut size = host::group_size(group, everywhere);
        for effect in self.effects.iter().filter(|e| e.target.as_str() == group) {
            match effect.kind {
                EFFECT_JOIN if !size.caller => {
                    size.caller = true;
                    size.members += 1;
                    size.local += 1;
                }
                EFFECT_LEAVE if size.caller => {
                    size.caller = false;
                    size.members = size.members.saturating_sub(1);
                    size.local = size.local.saturating_sub(1);
                }
                _ => {}
            }
        }
        size
    }

    /// Attaches `value` to the connection under `key`, for this plugin's
    /// later calls on it ([`Request::get`](crate::Request::get)); another
    /// plugin cannot see it. Dropped when the connection ends (after
    /// `on_disconnect`, which still sees it). The host bounds what one
    /// plugin attaches to one connection (`max_connection_state_bytes`,
    /// keys and values as JSON text): a call that would go past it fails
    /// with `Connection state too large: ...` and none of its effects are
    /// carried out. Like every effect, it applies once the handler returns
    /// `Ok`: the same call still reads the value from before.
    ///
    /// ```
    /// use rohrpost_plugin_api::prelude::*;
    ///
    /// fn login(req: &Request, conn: &mut Connection) -> HandlerResult {
    ///     let user = req.data().and_then(|d| d.get("user")).and_then(Value::as_str).ok_or("data.user is required")?;
    ///     conn.set("user", user)?;
    ///     conn.reply(req, ());
    ///     Ok(())
    /// }
    ///
    /// fn whoami(req: &Request) -> Result<Value, HandlerError> {
    ///     let user: Option<String> = req.get("user")?;
    ///     Ok(json!({ "user": user }))
    /// }
    /// # let _ = Plugin::new("doc", "1.0.0").handle("login", login).handle("whoami", whoami);
    /// ```
    pub fn set(
        &mut self,
        key: &str,
        value: impl serde::Serialize,
    ) -> Result<(), serde_json::Error> {
        let text = serde_json::to_string(&value)?;
        self.push(EFFECT_SET, key, text);
        Ok(())
    }

    /// Removes what [`Connection::set`] attached under `key`, if anything.
    pub fn unset(&mut self, key: &str) {
        self.push(EFFECT_SET, key, String::new());
    }

    /// Closes the connection with a close code of the application's range
    /// (4000-4999) or 1008 (policy violation) and a reason (at most 123
    /// bytes, cut at a character boundary), once the messages sent before
    /// have gone out. In `on_connect` it refuses the connection. Anything
    /// queued after it is not carried out. A host older than plugin-api 1.2
    /// answers the call with `The handler for '<type>' used a feature this
    /// server does not support.` instead.
    pub fn close_with(&mut self, code: u16, reason: &str) -> Result<(), CloseCodeError> {
        if !(code == 1008 || (4000..=4999).contains(&code)) {
            return Err(CloseCodeError(code));
        }
        let mut end = reason.len().min(MAX_CLOSE_REASON);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        self.push(
            EFFECT_CLOSE_WITH,
            &code.to_string(),
            reason[..end].to_owned(),
        );
        Ok(())
    }

    /// Sends a change notification (rohrpost's model mixins) to its group:
    /// one `subscription-update` message with one generated id for all, the
    /// same message as the host's `POST /api/notify`.
    ///
    /// ```
    /// use rohrpost_plugin_api::prelude::*;
    ///
    /// /// Renames a collection, then tells the subscribers of
    /// /// `collection-<pk>`.
    /// fn rename(req: &Request, conn: &mut Connection) -> HandlerResult {
    ///     let pk = req.data().and_then(|d| d.get("pk")).and_then(Value::as_u64).ok_or("data.pk is required")?;
    ///     // ... store the new name ...
    ///     conn.notify(&Notification::new("Collection", pk, Event::Update).updated_fields(["name"]))?;
    ///     conn.reply(req, ());
    ///     Ok(())
    /// }
    /// # let _ = Plugin::new("doc", "1.0.0").handle("rename", rename);
    /// ```
    pub fn notify(&mut self, notification: &Notification) -> Result<(), NotifyError> {
        let (group, message) = notification.addressed(Id::generate())?;
        // Not counted: a notification does not ask the host.
        let text = message.into_json()?;
        self.push(EFFECT_GROUP_SEND, &group, text);
        Ok(())
    }
}

/// Whom a message [published](Connection::publish) to a group reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Published {
    /// The group's members across every host sharing the groups, as
    /// [`Connection::group_size`] counts them.
    pub members: usize,
    /// Its members on this host, which the message goes to from here, as
    /// [`Connection::send_to_group`] counts them.
    pub local: usize,
}

/// The longest close reason a WebSocket close frame carries.
const MAX_CLOSE_REASON: usize = 123;

/// A close code [`Connection::close_with`] does not accept.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("close code {0} is not an application code (4000-4999) or 1008")]
pub struct CloseCodeError(pub u16);

/// Why a notification could not be sent. Like every error here, `?` in a
/// handler turns it into the handler's error reply.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The notification itself is invalid (an empty model, a pk that is
    /// neither a string nor an integer, an empty group).
    #[error(transparent)]
    Notification(#[from] NotificationError),
    /// Its message could not be built.
    #[error(transparent)]
    Message(#[from] MessageError),
}

impl From<Infallible> for NotifyError {
    fn from(never: Infallible) -> Self {
        match never {}
    }
}
