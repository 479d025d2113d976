//! The stable binary interface between the host and a plugin library.
//!
//! Everything that crosses the `dlopen` boundary is declared here, and only
//! here, with `abi_stable` checking at load time that both sides agree on it.
//! The boundary is deliberately small: the host hands a plugin the request as
//! JSON text slices and gets back a list of [`Effect`]s (messages to send,
//! group operations, close). New kinds of effects are new numbers, not new
//! layouts, and new entry points are new names for [`PluginMod::extension`],
//! not new fields: abi_stable refuses a library whose root module has fewer
//! fields than the host's, so the root module's layout is fixed for all of
//! 1.x, and plugins built against an earlier 1.x keep loading.
//!
//! History: 1.0 the root module, effects send and close; 1.1 the
//! `configure` extension, effects join, leave and group send; 1.2 the host's
//! services ([`EXT_HOST`], [`HostAsk`]: group sizes), the connection
//! lifecycle hooks ([`EXT_FEATURES`], [`EXT_ON_CONNECT`],
//! [`EXT_ON_DISCONNECT`]), [`EXT_RETIRE`], and the effects
//! [`EFFECT_SET`] (per-connection state) and [`EFFECT_CLOSE_WITH`]; 1.3
//! the questions [`ASK_COUNT`] (the plugin's own counters in the host's
//! metrics) and [`ASK_LOG`] (log lines through the host's log); 1.4
//! nothing here (a new way to register handlers, in the safe layer).
//!
//! Plugin authors never touch this module: [`crate::export_plugin!`] fills it
//! in from a [`crate::Plugin`].

use abi_stable::{
    declare_root_module_statics,
    library::RootModule,
    sabi_types::VersionStrings,
    std_types::{RResult, RStr, RString, RVec},
    StableAbi,
};

/// Version of the binary interface, which is this crate's version. A host
/// accepts plugins built against the same major version (abi_stable checks
/// it, and checks the crate version of every type crossing the boundary the
/// same way); additive changes bump the minor version.
pub const ABI_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The version of this crate, recorded in every plugin's manifest.
pub const API_CRATE_VERSION: &str = ABI_VERSION;

/// The root module every plugin library exports. Its layout is the same for
/// every 1.x version.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModRef)))]
#[sabi(missing_field(option))]
pub struct PluginMod {
    /// Describes the plugin: name, version, handlers and the types they serve.
    /// Since 1.2 the host reads it again after `configure`: a handler's
    /// types may come from the configuration (the number and order of the
    /// handlers stay the same).
    pub manifest: extern "C" fn() -> Manifest,

    /// Runs handler number `handler` (an index into `Manifest::handlers`).
    /// Never unwinds: a panicking handler comes back as
    /// `CallOutcome::Panicked`.
    pub call: extern "C" fn(handler: u32, call: &Call<'_>) -> CallOutcome,

    /// Every other entry point, by name, with JSON text in and out; a name
    /// the plugin does not know answers `RErr(EXT_UNSUPPORTED)`. Never
    /// unwinds. Names: [`EXT_CONFIGURE`], [`EXT_HOST`], [`EXT_FEATURES`],
    /// [`EXT_ON_CONNECT`], [`EXT_ON_DISCONNECT`], [`EXT_RETIRE`].
    #[sabi(last_prefix_field)]
    pub extension: extern "C" fn(name: RStr<'_>, input: RStr<'_>) -> RResult<RString, RString>,
}

/// The answer of [`PluginMod::extension`] for a name the plugin does not
/// know (it was built against an earlier version).
pub const EXT_UNSUPPORTED: &str = "rohrpost: unsupported extension";

/// Since 1.1: the plugin's configuration, a JSON object (the host's
/// `[plugins.<name>]` table, `{}` when there is none), handed over once per
/// load before any call. An error rejects the load. The success text holds
/// the plugin's warnings about its configuration, one per line (empty for
/// none), which the host logs.
pub const EXT_CONFIGURE: &str = "configure";

/// Since 1.2: the host's services, handed over once per load before
/// `configure`. The input is the address of a [`HostAsk`] function, in
/// decimal; the plugin keeps it for the life of the library. A host that
/// never sends it (older than 1.2) leaves the plugin without services, and
/// the plugin-api answers as documented there (a group size of 0).
pub const EXT_HOST: &str = "host";

/// A question to the host during a call, a hook or `configure`: `question`
/// is one of the `ASK_*` names, `input` its JSON text; the answer is JSON
/// text, or an error text (`ASK_UNSUPPORTED` for a question the host does
/// not know). The host knows which connection asks from the thread the
/// call runs on, so a plugin can only ask about its caller. This type is
/// frozen for all of 1.x: new services are new question names.
pub type HostAsk = extern "C" fn(question: RStr<'_>, input: RStr<'_>) -> RResult<RString, RString>;

/// The answer of [`HostAsk`] to a question it does not know.
pub const ASK_UNSUPPORTED: &str = "rohrpost: unsupported question";

/// How many connections are in a group: the input is the group name as a
/// JSON string, the answer `{"members":<n>,"local":<n>,"caller":<bool>}`:
/// the members across every host sharing the groups (see the host's
/// documentation for how fresh other hosts' counts are), those on the
/// caller's host, and whether the calling connection is one of them
/// (before the effects of the running call).
pub const ASK_GROUP_SIZE: &str = "group_size";

/// The error text of [`HostAsk`] for a question asked outside a call, a
/// hook or a handler of the host (from a thread the plugin started, or
/// during `configure`): there is no caller to answer about.
pub const ASK_OUTSIDE_CALL: &str = "asked outside a call of the host";

/// [`ASK_GROUP_SIZE`] for this host only: the same input and answer, with
/// `members` equal to `local`, and never waiting on other hosts.
pub const ASK_LOCAL_GROUP_SIZE: &str = "local_group_size";

/// Since 1.3: counts one event of the plugin in the host's metrics. The
/// input is `{"event":"<name>","kind":"<kind>","by":<n>}` (`kind` may be
/// empty or missing, `by` is 1 when missing); the answer is `{}`. The host
/// shows it as `rohrpost_plugin_counts_total{plugin,event,kind}`. An
/// `event` is 1 to 64 characters of `a-z`, `0-9` and `_`, starting with a
/// letter; a `kind` 0 to 64 characters of ASCII letters, digits, `_`, `-`
/// and `.`. The host keeps a bounded number of series (event and kind
/// pairs) per plugin and answers an error for a new one beyond it, or for
/// a name that breaks the rule.
pub const ASK_COUNT: &str = "count";

/// Since 1.3: one log line through the host's log, which names the
/// plugin and writes it in the host's format (text or JSON). The input is
/// `{"level":"error"|"warn"|"info"|"debug"|"trace","message":"<text>",
/// "fields":{"<name>":"<text>",...}}` (`fields` may be missing); the answer
/// is `{"logged":<bool>}`: `false` when the host's rate limit for the
/// plugin's lines dropped it, or its level filters the line out. Field
/// names follow the rule of [`ASK_COUNT`]'s `event` (others are left out).
/// The host bounds the bytes of a line (longer text is cut), its fields
/// and the lines per plugin per interval.
pub const ASK_LOG: &str = "log";

/// Since 1.2: which optional entry points the plugin has, as JSON
/// `{"on_connect":<bool>,"on_disconnect":<bool>,"yields":<bool>}`; asked
/// once per load. `yields`: the plugin gives up any of its message types
/// that another plugin claims (a missing key is `false`).
pub const EXT_FEATURES: &str = "features";

/// Since 1.2: a connection opened. The input is its scope (as in
/// [`Call::scope`]). Runs before the connection's first message is read.
///
/// The answer of both hooks is JSON text:
/// `{"effects":[[<kind>,"<target>","<body>"],...]}`, effects of the same
/// kinds and meaning as a call's; `{"failed":"<text>"}` when the hook
/// returned an error; `{"panicked":"<text>"}` when it panicked. In
/// `on_connect`, an [`EFFECT_CLOSE_WITH`] refuses the connection.
pub const EXT_ON_CONNECT: &str = "on_connect";

/// Since 1.2: a connection ended. The input is
/// `{"scope":<scope>,"close_code":<n>}`; the answer has
/// the same form as [`EXT_ON_CONNECT`]'s, of which the host carries out
/// only the group sends (the connection is gone).
pub const EXT_ON_DISCONNECT: &str = "on_disconnect";

/// Since 1.2: this version of the plugin is retired (a new version took its
/// place, or its file was removed); it drops its state once its running
/// calls end. Input and answer are empty.
pub const EXT_RETIRE: &str = "retire";

impl RootModule for PluginModRef {
    declare_root_module_statics! {PluginModRef}
    const BASE_NAME: &'static str = "rohrpost_plugin";
    const NAME: &'static str = "rohrpost plugin";
    const VERSION_STRINGS: VersionStrings = VersionStrings {
        version: RStr::from_str(ABI_VERSION),
    };
}

/// What a plugin declares about itself.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct Manifest {
    /// The plugin's name, unique among loaded plugins.
    pub name: RString,
    /// The plugin's own version, free-form (usually its crate version).
    pub version: RString,
    /// The `rohrpost-plugin-api` crate version the plugin was built with.
    pub api_version: RString,
    /// The handlers, in the order `PluginMod::call` numbers them.
    pub handlers: RVec<HandlerDecl>,
    /// Whether the plugin was built with `panic = "unwind"`. With
    /// `panic = "abort"` a panicking handler would end the whole server, so
    /// the host refuses such a plugin.
    pub panic_unwind: bool,
}

/// One handler and the message types it serves.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct HandlerDecl {
    /// Message types routed to this handler (exact, case-sensitive).
    pub types: RVec<RString>,
    /// How the host runs it: [`MODE_POOLED`] or [`MODE_INLINE`].
    pub mode: u8,
}

/// The handler may block: the host runs it on a worker pool, bounded per
/// plugin, with a timeout.
pub const MODE_POOLED: u8 = 0;
/// The handler returns within microseconds and never blocks: the host runs it
/// on the connection's own task (and moves it to the pool if it turns out slow).
pub const MODE_INLINE: u8 = 1;

/// One request, as JSON text slices borrowed from the host for the call.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct Call<'a> {
    /// The whole request object as received.
    pub frame: RStr<'a>,
    /// The raw JSON of the request's `id`.
    pub id: RStr<'a>,
    /// The request's `type`, already decoded from JSON.
    pub kind: RStr<'a>,
    /// The raw JSON of the request's `data`; empty when the request had none.
    pub data: RStr<'a>,
    /// The connection's scope as a JSON object (connection id, remote
    /// address, path, query string, handshake headers). Since 1.2 it also
    /// holds, under [`SCOPE_STATE`], what this plugin attached to the
    /// connection ([`EFFECT_SET`]), when it attached anything.
    pub scope: RStr<'a>,
}

/// The key of the scope that holds the plugin's per-connection state: an
/// object of the keys it set.
pub const SCOPE_STATE: &str = "rohrpost.state";

/// What a handler call produced.
#[repr(C)]
#[derive(StableAbi, Debug)]
pub enum CallOutcome {
    /// The handler succeeded; apply these effects in order.
    Done(RVec<Effect>),
    /// The handler returned an error; the text goes to the client.
    Failed(RString),
    /// The handler panicked; the text is the panic message (for the log).
    Panicked(RString),
}

/// Something the host does on the handler's behalf, in order.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct Effect {
    /// One of the `EFFECT_*` constants.
    pub kind: u32,
    /// The group name for group effects; empty otherwise.
    pub target: RString,
    /// A message as compact JSON text for sending effects; the close reason for
    /// [`EFFECT_CLOSE`]; empty otherwise.
    pub body: RString,
}

/// Send `body` (a rohrpost message) to the calling connection.
pub const EFFECT_SEND: u32 = 1;
/// Close the calling connection (code 1000) after the messages before it.
pub const EFFECT_CLOSE: u32 = 2;
/// Add the calling connection to group `target`.
pub const EFFECT_JOIN: u32 = 3;
/// Remove the calling connection from group `target`.
pub const EFFECT_LEAVE: u32 = 4;
/// Send `body` to every connection in group `target`.
pub const EFFECT_GROUP_SEND: u32 = 5;
/// Since 1.2: attach the JSON value `body` to the calling connection under
/// the key `target`, for this plugin's later calls on it; an empty `body`
/// removes the key.
pub const EFFECT_SET: u32 = 6;
/// Since 1.2: close the calling connection with the code `target` (decimal,
/// 4000-4999 or 1008) and the reason `body`, after the messages before it;
/// in `on_connect`, refuse the connection.
pub const EFFECT_CLOSE_WITH: u32 = 7;
