//! Settings of the host, from three places: command-line flags, then
//! `ROHRPOST_*` environment variables, then the TOML config file, then the
//! defaults (the first that sets a value wins).
//!
//! Every setting is declared once, in the `settings!` list below: its type,
//! default, flag, environment variable and help. From that list come the
//! command line, the file's keys, the merge, `--check-config` and the table
//! of settings in docs/configuration.md (a test keeps it in step).
//! The file also holds one `[plugins.<name>]` table per plugin: its
//! `isolation` key is the host's (see [`Isolation`]), every other key is
//! handed to the plugin.

use std::{collections::BTreeMap, net::SocketAddr, path::Path, path::PathBuf, time::Duration};

use anyhow::{bail, Context};
use clap::Parser;
use rohrpost_plugin_api::GroupNameRule;

pub(crate) use crate::base::networks::TrustedProxies;
pub(crate) use crate::base::scheduling::Scheduling;

/// One value of a setting, parsed from its text form (flag, environment
/// variable, or the file's value as text).
type ParseFn<T> = fn(&str) -> Result<T, String>;

macro_rules! settings {
    ($(
        $(#[doc = $doc:literal])+
        $name:ident: $ty:ty = $default:literal, flag $flag:literal, env $env:literal, parse $parse:path;
    )+) => {
        /// A rohrpost WebSocket server that hot-loads handler plugins.
        ///
        /// Plugins are shared libraries (`*.so`) in the plugins directory.
        /// Adding, replacing or deleting one takes effect while the server
        /// runs. Deploy a new version by writing it under a temporary name
        /// and renaming it into place.
        ///
        /// Each setting comes from its flag, else its environment variable,
        /// else the config file, else its default.
        #[derive(Debug, Clone, Default, Parser)]
        #[command(name = "rohrpost", version, about, long_about)]
        pub(crate) struct Cli {
            $(
                #[doc = concat!($($doc, "\n",)+ "\n[default: ", $default, "]")]
                #[arg(long = $flag, env = $env, value_parser = $parse as ParseFn<$ty>,
                    value_name = "VALUE", hide_env_values = true)]
                pub $name: Option<$ty>,
            )+

            /// TOML config file with any of the settings, each under the
            /// file key its help names (`plugins_dir` for `--plugins`), and
            /// one `[plugins.<name>]` table per plugin.
            #[arg(long, env = "ROHRPOST_CONFIG", value_name = "FILE", hide_env_values = true)]
            pub config: Option<PathBuf>,

            /// Check a config file, report every problem with its key, and
            /// exit (0: valid).
            #[arg(long, value_name = "FILE")]
            pub check_config: Option<PathBuf>,
        }

        /// The settings in force.
        #[derive(Debug, Clone)]
        pub(crate) struct Settings {
            $( $(#[doc = $doc])+ pub $name: $ty, )+
        }

        /// What the config file sets.
        #[derive(Debug, Clone, Default)]
        struct FileLayer {
            $( $name: Option<$ty>, )+
        }

        impl FileLayer {
            /// Takes one top-level key; `Ok(false)` for an unknown key.
            fn set(&mut self, key: &str, value: &toml::Value) -> Result<bool, String> {
                match key {
                    $( stringify!($name) => {
                        self.$name = Some($parse(&toml_text(value)?)?);
                        Ok(true)
                    } )+
                    _ => Ok(false),
                }
            }
        }

        fn merge(cli: &Cli, file: FileLayer) -> Settings {
            Settings {
                $( $name: match (&cli.$name, file.$name) {
                    (Some(v), _) => v.clone(),
                    (None, Some(v)) => v,
                    (None, None) => $parse($default)
                        .unwrap_or_else(|e| panic!("default of {}: {e}", stringify!($name))),
                }, )+
            }
        }

        /// Every setting: file key, default, help (and, for the test that
        /// keeps docs/configuration.md in step, flag and environment
        /// variable).
        pub(crate) const SETTINGS: &[SettingInfo] = &[
            $( SettingInfo {
                #[cfg(test)]
                flag: $flag,
                #[cfg(test)]
                env: $env,
                key: stringify!($name),
                default: $default,
                doc: &[$($doc),+],
            }, )+
        ];
    };
}

/// One line of the settings table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SettingInfo {
    #[cfg(test)]
    pub flag: &'static str,
    #[cfg(test)]
    pub env: &'static str,
    pub key: &'static str,
    pub default: &'static str,
    /// Every line of the help.
    pub doc: &'static [&'static str],
}

impl SettingInfo {
    /// The text `--help` shows: the help as one paragraph, the default
    /// (when there is one) and the file key.
    pub(crate) fn help_text(&self) -> String {
        let mut text = self
            .doc
            .iter()
            .map(|line| line.trim())
            .collect::<Vec<_>>()
            .join(" ");
        if !self.default.is_empty() {
            text.push_str(&format!(" [default: {}]", self.default));
        }
        text.push_str(&format!(" [file key: {}]", self.key));
        text
    }
}

/// The command line: [`Cli`] with each setting's help, default and file
/// key (clap's derive does not read the help the `settings!` list writes).
pub(crate) fn command() -> clap::Command {
    SETTINGS.iter().fold(
        <Cli as clap::CommandFactory>::command(),
        |command, setting| command.mut_arg(setting.key, |arg| arg.help(setting.help_text())),
    )
}

impl Cli {
    /// Parses the process's arguments (and environment) with [`command`];
    /// exits with clap's message on `--help`, `--version` or an error.
    pub(crate) fn from_env() -> Cli {
        let matches = command().get_matches();
        <Cli as clap::FromArgMatches>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }
}

settings! {
    /// Address and port to listen on (WebSocket, notifications, status).
    listen: SocketAddr = "127.0.0.1:8000", flag "listen", env "ROHRPOST_LISTEN", parse parse_addr;
    /// Directory watched for plugin libraries; created if missing.
    plugins_dir: PathBuf = "plugins.d", flag "plugins", env "ROHRPOST_PLUGINS", parse parse_path;
    /// Path of the WebSocket endpoint.
    ws_path: String = "/ws/rohrpost/", flag "ws-path", env "ROHRPOST_WS_PATH", parse parse_ws_path;
    /// Largest accepted message in bytes; a bigger one closes the connection with 1009.
    max_message_size: usize = "1048576", flag "max-message-size", env "ROHRPOST_MAX_MESSAGE_SIZE", parse parse_positive;
    /// Most open WebSocket connections; the next handshake gets 503.
    max_connections: usize = "10000", flag "max-connections", env "ROHRPOST_MAX_CONNECTIONS", parse parse_positive;
    /// A connection with no frame from the client for this long is closed
    /// (1001); the server pings a quiet client well before. 0 disables it.
    idle_timeout: Duration = "60s", flag "idle-timeout", env "ROHRPOST_IDLE_TIMEOUT", parse parse_duration;
    /// Bytes one read from a client asks for; its buffer is lent only while it holds bytes.
    read_buffer_size: usize = "4096", flag "read-buffer-size", env "ROHRPOST_READ_BUFFER", parse parse_positive;
    /// Group messages a connection may have waiting; when full, the connection is closed (1013).
    outbound_queue: usize = "1024", flag "outbound-queue", env "ROHRPOST_OUTBOUND_QUEUE", parse parse_positive;
    /// How long a caller waits for a pooled handler (any handler of a plugin in a worker process) before an error reply.
    handler_timeout: Duration = "30s", flag "handler-timeout", env "ROHRPOST_HANDLER_TIMEOUT", parse parse_duration;
    /// Calls of one plugin that may run on the worker pool at once.
    plugin_concurrency: usize = "64", flag "plugin-concurrency", env "ROHRPOST_PLUGIN_CONCURRENCY", parse parse_positive;
    /// What an inline handler call may take (plus `inline_budget_per_mib`); 3 slower calls among 32 move the handler to the pool until it is fast again.
    inline_budget: Duration = "10ms", flag "inline-budget", env "ROHRPOST_INLINE_BUDGET", parse parse_duration;
    /// How long a plugin file must be quiet before it is (re)loaded.
    reload_debounce: Duration = "100ms", flag "reload-debounce", env "ROHRPOST_RELOAD_DEBOUNCE", parse parse_duration;
    /// Bearer token of `POST /api/notify`; empty disables the endpoint.
    notify_token: String = "", flag "notify-token", env "ROHRPOST_NOTIFY_TOKEN", parse parse_string;
    /// File whose first line is the notify token, instead of `notify_token`: the token is then on no command line and in no environment.
    notify_token_file: String = "", flag "notify-token-file", env "ROHRPOST_NOTIFY_TOKEN_FILE", parse parse_string;
    /// Origins allowed to open WebSockets from a browser (comma-separated,
    /// e.g. `https://app.example.com`); empty allows any origin.
    allowed_origins: Origins = "", flag "allowed-origins", env "ROHRPOST_ALLOWED_ORIGINS", parse parse_origins;
    /// On SIGTERM or SIGINT, how long running handler calls may take to finish.
    shutdown_timeout: Duration = "10s", flag "shutdown-timeout", env "ROHRPOST_SHUTDOWN_TIMEOUT", parse parse_duration;
    /// Where groups live: `memory` (this host only), a Redis URL such as
    /// `redis://127.0.0.1:6379/0` (several hosts share their groups), or,
    /// shared with a Django app in the format of its Channels layer,
    /// `channels_redis://127.0.0.1:6379/0` (`RedisChannelLayer`) or
    /// `channels_redis_pubsub://127.0.0.1:6379/0` (`RedisPubSubChannelLayer`).
    /// Over TLS: `rediss://`, `channels_redis+tls://`, `channels_redis_pubsub+tls://`.
    /// Several Redis servers (shards, as channels_redis's `hosts`, in their order): comma-separated, or a list in the file, all of one kind.
    /// A Redis Cluster (7 or later, sharded pub/sub): `redis+cluster://host:port,host:port/` with some of its nodes; over TLS to every node, `rediss+cluster://`.
    groups: Groups = "memory", flag "groups", env "ROHRPOST_GROUPS", parse parse_groups;
    /// Prefix of the Redis channel names, so that deployments can share one Redis; empty: `rohrpost:` for `redis://`, Channels' `asgi` for the `channels_redis` layers (set it to the layer's `prefix` in Django's `CHANNEL_LAYERS`).
    groups_prefix: String = "", flag "groups-prefix", env "ROHRPOST_GROUPS_PREFIX", parse parse_string;
    /// With Redis groups over TLS (`rediss://`, `rediss+cluster://`, `channels_redis+tls://`, `channels_redis_pubsub+tls://`): a PEM file of CA certificates trusted besides the system's.
    redis_tls_ca: String = "", flag "redis-tls-ca", env "ROHRPOST_REDIS_TLS_CA", parse parse_string;
    /// With Redis groups over TLS: a PEM client certificate (chain), for a Redis that asks for one (`tls-auth-clients yes`); with `redis_tls_key`.
    redis_tls_cert: String = "", flag "redis-tls-cert", env "ROHRPOST_REDIS_TLS_CERT", parse parse_string;
    /// With Redis groups over TLS: the PEM private key of `redis_tls_cert`.
    redis_tls_key: String = "", flag "redis-tls-key", env "ROHRPOST_REDIS_TLS_KEY", parse parse_string;
    /// A file whose first line is Redis's password, instead of a password in the groups URL: it is then on no command line and in no environment.
    redis_password_file: String = "", flag "redis-password-file", env "ROHRPOST_REDIS_PASSWORD_FILE", parse parse_string;
    /// With `channels_redis://` groups: how long a group membership lasts in Redis (channels_redis's `group_expiry`); the host refreshes its own well before.
    channels_group_expiry: Duration = "86400s", flag "channels-group-expiry", env "ROHRPOST_CHANNELS_GROUP_EXPIRY", parse parse_whole_seconds;
    /// With `channels_redis://` groups: most messages waiting for one process (channels_redis's `capacity`); a message for a full one is dropped.
    channels_capacity: usize = "100", flag "channels-capacity", env "ROHRPOST_CHANNELS_CAPACITY", parse parse_positive;
    /// With `channels_redis://` groups: how long a message may wait for its process (channels_redis's `expiry`).
    channels_expiry: Duration = "60s", flag "channels-expiry", env "ROHRPOST_CHANNELS_EXPIRY", parse parse_whole_seconds;
    /// With `channels_redis` groups: the layer's `symmetric_encryption_keys` (comma-separated): not supported yet; the host refuses to start with any, as it could not read the app's messages.
    channels_symmetric_encryption_keys: String = "", flag "channels-symmetric-encryption-keys", env "ROHRPOST_CHANNELS_SYMMETRIC_ENCRYPTION_KEYS", parse parse_string;
    /// Refuse plugin files and a plugins directory writable by others than
    /// the server's user or root, and symlinks leading out of the directory.
    strict_modes: bool = "true", flag "strict-modes", env "ROHRPOST_STRICT_MODES", parse parse_bool;
    /// Log format: `text` (for people) or `json` (one object per line).
    log_format: LogFormat = "text", flag "log-format", env "ROHRPOST_LOG_FORMAT", parse parse_log_format;
    /// Worker threads of the server's async runtime: a number, or `auto` for one per CPU core.
    workers: Workers = "auto", flag "workers", env "ROHRPOST_WORKERS", parse parse_workers;
    /// How the kernel schedules the server's threads and its plugin workers: `batch` (a thread that wakes does not preempt a running one: under full CPU, fewer switches per call to a worker; a policy set with `chrt` or systemd is kept) or `normal` (as started).
    scheduling: Scheduling = "batch", flag "scheduling", env "ROHRPOST_SCHEDULING", parse parse_scheduling;
    /// Most arrays and objects in one message; a message with more gets an error reply (each costs a handler that reads `data` memory).
    max_json_containers: usize = "10000", flag "max-json-containers", env "ROHRPOST_MAX_JSON_CONTAINERS", parse parse_positive;
    /// How long a client may take to send its HTTP request (headers, and the
    /// body for the HTTP endpoints); a slower one is disconnected.
    handshake_timeout: Duration = "10s", flag "handshake-timeout", env "ROHRPOST_HANDSHAKE_TIMEOUT", parse parse_nonzero_duration;
    /// Most connections that are not yet WebSockets; at the bound, the oldest idle one is closed to admit a new one.
    max_pending_connections: usize = "1024", flag "max-pending-connections", env "ROHRPOST_MAX_PENDING_CONNECTIONS", parse parse_positive;
    /// Largest HTTP request head (request line and headers) in bytes; a bigger one gets 431.
    max_header_size: usize = "16384", flag "max-header-size", env "ROHRPOST_MAX_HEADER_SIZE", parse parse_positive;
    /// Which group names are accepted: `channels` (Django Channels' rule: ASCII letters, digits, `-`, `_`, `.`, under 100 characters) or `relaxed` (any printable UTF-8 without whitespace, up to 1024 bytes).
    group_names: GroupNameRule = "channels", flag "group-names", env "ROHRPOST_GROUP_NAMES", parse parse_group_names;
    /// Added to `inline_budget` for each MiB of a request, so that a large request is not judged slow for its size.
    inline_budget_per_mib: Duration = "250ms", flag "inline-budget-per-mib", env "ROHRPOST_INLINE_BUDGET_PER_MIB", parse parse_duration;
    /// Bytes of group messages a connection may have waiting; beyond, the connection is closed (1013) as for `outbound_queue`.
    outbound_queue_bytes: usize = "4194304", flag "outbound-queue-bytes", env "ROHRPOST_OUTBOUND_QUEUE_BYTES", parse parse_positive;
    /// Subscribers `/api/events` serves at once; the next one gets 503.
    max_event_streams: usize = "16", flag "max-event-streams", env "ROHRPOST_MAX_EVENT_STREAMS", parse parse_positive;
    /// Reverse proxies whose `Forwarded` / `X-Forwarded-For` and `X-Forwarded-Proto` headers are believed (addresses or CIDR networks, comma-separated, e.g. `127.0.0.1, 10.0.0.0/8`); from other peers the headers are ignored.
    trusted_proxies: TrustedProxies = "", flag "trusted-proxies", env "ROHRPOST_TRUSTED_PROXIES", parse parse_trusted_proxies;
    /// Most open WebSockets per client address (behind a trusted proxy, the client's); the next handshake gets 429. 0: no limit.
    max_connections_per_client: usize = "0", flag "max-connections-per-client", env "ROHRPOST_MAX_CONNECTIONS_PER_CLIENT", parse parse_count;
    /// Most messages one connection may send per second (a burst of one second's worth passes); beyond, each gets an error reply, and a second's worth of them in a row closes the connection (1008). 0: no limit.
    max_messages_per_second: u32 = "0", flag "max-messages-per-second", env "ROHRPOST_MAX_MESSAGES_PER_SECOND", parse parse_count_u32;
    /// Most bytes one plugin may attach to one connection (`conn.set`, keys and values as JSON); a call that would keep more fails with an error reply and none of its effects.
    max_connection_state_bytes: u64 = "64K", flag "max-connection-state-bytes", env "ROHRPOST_MAX_CONNECTION_STATE_BYTES", parse parse_size;
    /// Most effects (replies, joins, leaves, group sends, ...) one handler call or hook may ask for; a call that asks for more fails with an error reply and none of its effects.
    max_effects_per_call: usize = "4096", flag "max-effects-per-call", env "ROHRPOST_MAX_EFFECTS_PER_CALL", parse parse_positive;
    /// Most groups one connection may be in at once; a call that would join more fails with an error reply and none of its effects. 0: no limit.
    max_groups_per_connection: usize = "1000", flag "max-groups-per-connection", env "ROHRPOST_MAX_GROUPS_PER_CONNECTION", parse parse_count;
    /// Operator token: when set, `/`, `/api/plugins`, `/api/events` and `/metrics` ask for it (bearer, or HTTP Basic password); empty leaves them open.
    admin_token: String = "", flag "admin-token", env "ROHRPOST_ADMIN_TOKEN", parse parse_string;
    /// File whose first line is the operator token, instead of `admin_token`: the token is then on no command line and in no environment.
    admin_token_file: String = "", flag "admin-token-file", env "ROHRPOST_ADMIN_TOKEN_FILE", parse parse_string;
    /// Address space of each plugin worker process in bytes (`512M`, `2G`); an allocation beyond it fails and ends the worker, not the server. 0: no limit.
    worker_memory_limit: u64 = "0", flag "worker-memory-limit", env "ROHRPOST_WORKER_MEMORY_LIMIT", parse parse_size;
    /// Open files of each plugin worker process.
    worker_open_files: u64 = "1024", flag "worker-open-files", env "ROHRPOST_WORKER_OPEN_FILES", parse parse_size;
    /// The plugin workers' jail: best-effort (what the kernel has, a warning for the rest), required (all of it, or no start), or off.
    sandbox: Sandbox = "best-effort", flag "sandbox", env "ROHRPOST_SANDBOX", parse parse_sandbox;
    /// permessage-deflate (RFC 7692): `auto` accepts it when a client offers it (every browser does), `off` never does.
    compression: Compression = "auto", flag "compression", env "ROHRPOST_COMPRESSION", parse parse_compression;
    /// On a connection that negotiated compression, messages shorter than this many bytes go uncompressed.
    compression_threshold: u32 = "512", flag "compression-threshold", env "ROHRPOST_COMPRESSION_THRESHOLD", parse parse_count_u32;
    /// The window of what the server compresses, 9 to 15 bits (a client may ask for less): smaller compresses a little less and costs the client less memory.
    compression_window_bits: u8 = "15", flag "compression-window-bits", env "ROHRPOST_COMPRESSION_WINDOW_BITS", parse parse_window_bits;
    /// zlib's compression level, 1 (fastest) to 9 (smallest).
    compression_level: u8 = "6", flag "compression-level", env "ROHRPOST_COMPRESSION_LEVEL", parse parse_compression_level;
}

/// Whether connections may negotiate permessage-deflate (`compression`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Compression {
    /// Accepted when the client offers it.
    #[default]
    Auto,
    /// Never: the offer is declined.
    Off,
}

fn parse_compression(text: &str) -> Result<Compression, String> {
    match text.trim() {
        "auto" => Ok(Compression::Auto),
        "off" => Ok(Compression::Off),
        other => Err(format!("'{other}' is not a compression: auto or off")),
    }
}

fn parse_window_bits(text: &str) -> Result<u8, String> {
    match text.trim().parse::<u8>() {
        Ok(bits @ 9..=15) => Ok(bits),
        _ => Err(format!("'{text}' is not a window size: 9 to 15")),
    }
}

fn parse_compression_level(text: &str) -> Result<u8, String> {
    match text.trim().parse::<u8>() {
        Ok(level @ 1..=9) => Ok(level),
        _ => Err(format!("'{text}' is not a compression level: 1 to 9")),
    }
}

/// How much of the jail the operator requires (`sandbox`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Sandbox {
    /// Every layer the kernel has; a missing one is warned about.
    #[default]
    BestEffort,
    /// Every layer, or no worker starts (nor the server).
    Required,
    /// No jail: workers are a fault boundary only.
    Off,
}

impl Sandbox {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Sandbox::BestEffort => "best-effort",
            Sandbox::Required => "required",
            Sandbox::Off => "off",
        }
    }

    pub(crate) fn parse(text: &str) -> Result<Sandbox, String> {
        match text {
            "best-effort" => Ok(Sandbox::BestEffort),
            "required" => Ok(Sandbox::Required),
            "off" => Ok(Sandbox::Off),
            other => Err(format!(
                "\"{other}\" is not one of \"best-effort\", \"required\", \"off\""
            )),
        }
    }
}

/// What one plugin's `[plugins.<name>.sandbox]` table grants its worker
/// (see `plugins::isolation::jail`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Grants {
    /// Files and directories it may read (a directory: all beneath it).
    pub read: Vec<PathBuf>,
    /// TCP ports it may connect to, on any address (Landlock filters TCP
    /// by port).
    pub connect_ports: Vec<u16>,
}

/// Browser origins allowed to connect; empty means any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Origins(pub Vec<String>);

impl Origins {
    /// Whether a handshake's `Origin` header value may connect. An entry
    /// without a scheme (`app.example.com`) stands for the scheme the
    /// client used: `https` when it came over TLS (`secure`, as a trusted
    /// proxy reports it), else `http`.
    pub(crate) fn allows(&self, origin: &str, secure: bool) -> bool {
        self.0.is_empty()
            || self.0.iter().any(|allowed| {
                if allowed.contains("://") {
                    return allowed.eq_ignore_ascii_case(origin);
                }
                let scheme = if secure { "https://" } else { "http://" };
                origin
                    .get(..scheme.len())
                    .is_some_and(|s| s.eq_ignore_ascii_case(scheme))
                    && origin[scheme.len()..].eq_ignore_ascii_case(allowed)
            })
    }
}

fn parse_trusted_proxies(text: &str) -> Result<TrustedProxies, String> {
    TrustedProxies::parse(text)
}

/// The most Redis servers one groups setting may list.
pub(crate) const MAX_REDIS_SERVERS: usize = 64;

/// Where groups live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Groups {
    /// In this process: one host.
    Memory,
    /// In Redis pub/sub at these URLs (one, or shards): several hosts.
    Redis(Vec<String>),
    /// In a Redis Cluster's sharded pub/sub, reached through these seed
    /// nodes (`redis://` URLs, one node each): several hosts.
    RedisCluster(Vec<String>),
    /// In Redis pub/sub at these URLs, as Django Channels'
    /// `RedisPubSubChannelLayer` keeps them: several hosts and Django.
    ChannelsPubSub(Vec<String>),
    /// In Redis at these URLs, as Django Channels' `RedisChannelLayer`
    /// keeps them: several hosts and Django.
    ChannelsCore(Vec<String>),
}

impl Groups {
    /// The channel prefix when `groups_prefix` is empty.
    pub(crate) fn default_prefix(&self) -> &'static str {
        match self {
            Groups::Memory | Groups::Redis(_) | Groups::RedisCluster(_) => "rohrpost:",
            Groups::ChannelsPubSub(_) | Groups::ChannelsCore(_) => "asgi",
        }
    }
}

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

/// Where a plugin's code runs: `[plugins.<name>] isolation = ...`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Isolation {
    /// In a worker process of its own, supervised by the host: a crash,
    /// an exit or a hung call takes down the worker, never the server.
    #[default]
    Process,
    /// In the server's own process, for code the operator trusts: the
    /// fastest calls, but a native fault in the plugin ends the server.
    None,
}

impl Isolation {
    /// The name in the config file and on `/api/plugins`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Isolation::Process => "process",
            Isolation::None => "none",
        }
    }
}

fn parse_isolation(value: &toml::Value) -> Result<Isolation, String> {
    let value = value
        .as_str()
        .map_or_else(|| "this value".to_owned(), |v| format!("'{v}'"));
    match value.trim_matches('\'') {
        "process" => Ok(Isolation::Process),
        "none" => Ok(Isolation::None),
        _ => Err(format!(
            "{} is not an isolation: \"process\" or \"none\"",
            value
        )),
    }
}

/// The settings, the plugins' tables, and where they came from.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub settings: Settings,
    /// Each plugin's `[plugins.<name>]` table as JSON text, by plugin name,
    /// without the host's own keys.
    pub plugin_tables: BTreeMap<String, String>,
    /// Each plugin's `isolation`, by plugin name, where the file sets one
    /// (the others run in [`Isolation::Process`]).
    pub isolation: BTreeMap<String, Isolation>,
    /// For each plugin configured `isolation = "none"`, the one file of the
    /// plugins directory that may run in the server's process under its
    /// name (`library`, by default `lib<name>.so`).
    pub in_process_files: BTreeMap<String, String>,
    /// For each file a `[plugins.<name>.sandbox]` table grants to (its
    /// `library`, by default `lib<name>.so`): the plugin and its grants.
    pub granted_files: BTreeMap<String, (String, Grants)>,
}

impl Config {
    /// Merges flags, environment and the config file named by `cli`.
    pub(crate) fn load(cli: &Cli) -> anyhow::Result<Config> {
        let parts = match &cli.config {
            Some(path) => {
                let table = read_table(path)?;
                match check_table(&table) {
                    Ok(parsed) => parsed,
                    Err(problems) => bail!(
                        "invalid config file {}:\n  {}",
                        path.display(),
                        problems.join("\n  ")
                    ),
                }
            }
            None => FileParts::default(),
        };
        let mut settings = merge(cli, parts.layer);
        let notify_file = settings.notify_token_file.clone();
        read_secret(&mut settings.notify_token, &notify_file, "notify_token")?;
        let admin_file = settings.admin_token_file.clone();
        read_secret(&mut settings.admin_token, &admin_file, "admin_token")?;
        Ok(Config {
            settings,
            plugin_tables: parts.tables,
            isolation: parts.isolation,
            in_process_files: parts.in_process_files,
            granted_files: parts.granted_files,
        })
    }
}

/// Sets `token` (the setting `name`) from the first line of `file`, when a
/// file is given: one or the other, not both.
fn read_secret(token: &mut String, file: &str, name: &str) -> anyhow::Result<()> {
    if file.is_empty() {
        return Ok(());
    }
    if !token.is_empty() {
        bail!("set {name} or {name}_file, not both");
    }
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {name}_file {file}"))?;
    let line = text.lines().next().unwrap_or("").trim();
    if line.is_empty() {
        bail!("{name}_file {file} holds no token on its first line");
    }
    *token = line.to_owned();
    Ok(())
}

/// `--check-config`: every problem of the file, each naming its key.
pub(crate) fn check_file(path: &Path) -> Result<(), Vec<String>> {
    let table = read_table(path).map_err(|e| vec![format!("{e:#}")])?;
    check_table(&table).map(|_| ())
}

fn read_table(path: &Path) -> anyhow::Result<toml::Table> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("{} is not valid TOML", path.display()))
}

/// What a config file holds.
#[derive(Debug, Default)]
struct FileParts {
    /// The settings it sets.
    layer: FileLayer,
    /// The plugins' tables, as JSON text.
    tables: BTreeMap<String, String>,
    isolation: BTreeMap<String, Isolation>,
    /// The file granted `none`, by plugin.
    in_process_files: BTreeMap<String, String>,
    /// Each file a sandbox table grants to: the plugin and its grants.
    granted_files: BTreeMap<String, (String, Grants)>,
}

/// Reads a `[plugins.<name>.sandbox]` table; an error starts with the key
/// it is about (".read: ...").
fn parse_grants(value: &toml::Value) -> Result<Grants, String> {
    let toml::Value::Table(table) = value else {
        return Err(": must be a table with read and connect_ports".into());
    };
    let mut grants = Grants::default();
    for (key, value) in table {
        let items = value
            .as_array()
            .ok_or_else(|| format!(".{key}: must be a list"))?;
        match key.as_str() {
            "read" => {
                for item in items {
                    match item.as_str() {
                        Some(path) if path.starts_with('/') => grants.read.push(path.into()),
                        _ => return Err(".read: each item an absolute path".into()),
                    }
                }
            }
            "connect_ports" => {
                for item in items {
                    match item.as_integer().and_then(|p| u16::try_from(p).ok()) {
                        Some(port @ 1..) => grants.connect_ports.push(port),
                        _ => return Err(".connect_ports: each item a TCP port, 1 to 65535".into()),
                    }
                }
            }
            other => return Err(format!(".{other}: unknown key (read, connect_ports)")),
        }
    }
    Ok(grants)
}

/// The file a plugin named `name` is built into by cargo: `lib<name>.so`,
/// dashes as underscores.
pub(crate) fn library_file_name(name: &str) -> String {
    format!(
        "{}{}{}",
        std::env::consts::DLL_PREFIX,
        name.replace('-', "_"),
        std::env::consts::DLL_SUFFIX
    )
}

/// A bare file name: no directory, not empty, not hidden.
fn is_file_name(text: &str) -> bool {
    !text.is_empty() && !text.starts_with('.') && !text.contains('/') && !text.contains('\0')
}

/// Reads a parsed file, collecting every problem rather than the first.
fn check_table(table: &toml::Table) -> Result<FileParts, Vec<String>> {
    let mut layer = FileLayer::default();
    let mut plugins = BTreeMap::new();
    let mut isolation = BTreeMap::new();
    let mut in_process_files = BTreeMap::new();
    let mut granted_files = BTreeMap::new();
    let mut problems = Vec::new();
    for (key, value) in table {
        if key == "plugins" {
            match value {
                toml::Value::Table(tables) => {
                    for (name, plugin_table) in tables {
                        match plugin_table {
                            toml::Value::Table(t) => {
                                let mut t = t.clone();
                                let own = t.remove("isolation");
                                let library = t.remove("library");
                                let had_sandbox = t.contains_key("sandbox");
                                if let Some(value) = &own {
                                    match parse_isolation(value) {
                                        Ok(mode) => {
                                            isolation.insert(name.clone(), mode);
                                        }
                                        Err(e) => {
                                            problems.push(format!("plugins.{name}.isolation: {e}"))
                                        }
                                    }
                                }
                                let grants = match t.remove("sandbox") {
                                    Some(value) => match parse_grants(&value) {
                                        Ok(grants) => Some(grants),
                                        Err(e) => {
                                            problems.push(format!("plugins.{name}.sandbox{e}"));
                                            None
                                        }
                                    },
                                    None => None,
                                };
                                let in_process = isolation.get(name) == Some(&Isolation::None);
                                let file = match &library {
                                    Some(toml::Value::String(file)) if is_file_name(file) => {
                                        Some(file.clone())
                                    }
                                    None => Some(library_file_name(name)),
                                    Some(_) => {
                                        problems.push(format!(
                                            "plugins.{name}.library: the name of a file of the plugins directory, such as \"{}\"",
                                            library_file_name(name)
                                        ));
                                        None
                                    }
                                };
                                if library.is_some() && !in_process && grants.is_none() {
                                    problems.push(format!(
                                        "plugins.{name}.library: names the file that isolation = \"none\" or the sandbox grants go to, and this table has neither"
                                    ));
                                }
                                if let Some(file) = file {
                                    if in_process {
                                        in_process_files.insert(name.clone(), file.clone());
                                    }
                                    if let Some(grants) = grants {
                                        if let Some((other, _)) = granted_files.get(&file) {
                                            problems.push(format!(
                                                "plugins.{name}.library: {file} is already the file of plugins.{other}"
                                            ));
                                        }
                                        granted_files.insert(file, (name.clone(), grants));
                                    }
                                }
                                // A table with only the host's keys is
                                // none of the plugin's business.
                                if (own.is_some() || library.is_some() || had_sandbox)
                                    && t.is_empty()
                                {
                                    continue;
                                }
                                match serde_json::to_string(&t) {
                                    Ok(json) => {
                                        plugins.insert(name.clone(), json);
                                    }
                                    Err(e) => problems.push(format!("plugins.{name}: {e}")),
                                }
                            }
                            _ => problems.push(format!("plugins.{name}: must be a table")),
                        }
                    }
                }
                _ => {
                    problems.push("plugins: must hold one [plugins.<name>] table per plugin".into())
                }
            }
            continue;
        }
        match layer.set(key, value) {
            Ok(true) => {}
            Ok(false) => problems.push(format!("{key}: unknown key")),
            Err(e) => problems.push(format!("{key}: {e}")),
        }
    }
    if problems.is_empty() {
        Ok(FileParts {
            layer,
            tables: plugins,
            isolation,
            in_process_files,
            granted_files,
        })
    } else {
        Err(problems)
    }
}

/// A file value as the text a flag would carry: strings as they are,
/// numbers and booleans written out, arrays of strings comma-separated.
fn toml_text(value: &toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(n) => Ok(n.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        toml::Value::Array(items) => items
            .iter()
            .map(|item| match item {
                toml::Value::String(s) if !s.contains(',') => Ok(s.clone()),
                _ => Err("expected a list of strings without commas".to_owned()),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|items| items.join(",")),
        _ => Err("expected a string, a number or a list of strings".to_owned()),
    }
}

fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("'{text}' is not an address such as 127.0.0.1:8000"))
}

fn parse_path(text: &str) -> Result<PathBuf, String> {
    if text.trim().is_empty() {
        return Err("must not be empty".into());
    }
    Ok(PathBuf::from(text))
}

fn parse_ws_path(text: &str) -> Result<String, String> {
    if !text.starts_with('/') || text.starts_with("/api/") || text == "/" {
        return Err(format!(
            "'{text}' must be a path starting with '/', other than '/' and '/api/...'"
        ));
    }
    Ok(text.to_owned())
}

fn parse_positive(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("'{text}' is not a positive whole number")),
    }
}

fn parse_count(text: &str) -> Result<usize, String> {
    text.trim()
        .parse::<usize>()
        .map_err(|_| format!("'{text}' is not a whole number (0 for no limit)"))
}

fn parse_count_u32(text: &str) -> Result<u32, String> {
    text.trim()
        .parse::<u32>()
        .map_err(|_| format!("'{text}' is not a whole number up to 4294967295 (0 for no limit)"))
}

/// A size: bytes, or with a `K`, `M` or `G` suffix (powers of 1024).
fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, scale) = match text.char_indices().last() {
        Some((at, 'K' | 'k')) => (&text[..at], 1u64 << 10),
        Some((at, 'M' | 'm')) => (&text[..at], 1 << 20),
        Some((at, 'G' | 'g')) => (&text[..at], 1 << 30),
        _ => (text, 1),
    };
    number
        .trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| format!("'{text}' is not a size such as 4096, 512M or 2G"))
}

fn parse_string(text: &str) -> Result<String, String> {
    Ok(text.to_owned())
}

fn parse_origins(text: &str) -> Result<Origins, String> {
    let origins: Vec<String> = text
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(str::to_owned)
        .collect();
    for origin in &origins {
        let host = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .unwrap_or(origin);
        let ok = !host.is_empty()
            && !host.contains("://")
            && !host.contains('/')
            && !origin
                .trim_end_matches('/')
                .contains(|c: char| c.is_whitespace())
            && !origin.ends_with('/');
        if !ok {
            return Err(format!(
                "'{origin}' is not an origin such as https://app.example.com (scheme, host, optional port, no path) or app.example.com (the scheme the client used)"
            ));
        }
    }
    Ok(Origins(origins))
}

fn parse_groups(text: &str) -> Result<Groups, String> {
    let text = text.trim();
    if text == "memory" {
        return Ok(Groups::Memory);
    }
    if let Some(seeds) = parse_cluster_url(text) {
        return seeds.map(Groups::RedisCluster);
    }
    // Several Redis servers (shards, as channels_redis's `hosts`): one URL
    // each, comma-separated, in the order of the app's `hosts`.
    let mut kind = None;
    let mut urls: Vec<String> = Vec::new();
    for item in group_url_items(text) {
        let item = item.as_str();
        if item.is_empty() {
            return Err(format!("'{text}' holds an empty Redis URL"));
        }
        let (this, url) = parse_group_url(item)?;
        match kind {
            None => kind = Some(this),
            Some(first) if first != this => {
                return Err(format!(
                    "'{text}': every groups URL must be of the same kind (redis://, channels_redis://, channels_redis_pubsub://, with or without TLS)"
                ))
            }
            Some(_) => {}
        }
        if urls.contains(&url) {
            return Err(format!("'{text}' lists {item} twice"));
        }
        urls.push(url);
    }
    if urls.len() > MAX_REDIS_SERVERS {
        return Err(format!(
            "'{text}' lists more than {} Redis servers",
            MAX_REDIS_SERVERS
        ));
    }
    Ok(match kind {
        Some(GroupsKind::Redis) => Groups::Redis(urls),
        Some(GroupsKind::ChannelsPubSub) => Groups::ChannelsPubSub(urls),
        Some(GroupsKind::ChannelsCore) => Groups::ChannelsCore(urls),
        None => return Err("no groups URL".to_owned()),
    })
}

/// The comma-separated groups URLs of `text`. A Sentinel URL lists its
/// sentinels comma-separated as well: what follows a comma and has no
/// scheme, while the Sentinel URL before it has not reached its path,
/// is one more of its sentinels.
fn group_url_items(text: &str) -> Vec<String> {
    let mut items: Vec<String> = Vec::new();
    for piece in text.split(',').map(str::trim) {
        match items.last_mut() {
            Some(last) if !piece.contains("://") && lists_sentinels(last) => {
                last.push(',');
                last.push_str(piece);
            }
            _ => items.push(piece.to_owned()),
        }
    }
    items
}

/// Whether `item` is a Sentinel URL still in its list of sentinels.
fn lists_sentinels(item: &str) -> bool {
    match item.split_once("://") {
        Some((scheme, rest)) => scheme.contains("+sentinel") && !rest.contains('/'),
        None => false,
    }
}

/// The kind of one groups URL; TLS or not may differ between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GroupsKind {
    Redis,
    ChannelsPubSub,
    ChannelsCore,
}

/// One groups URL: its kind, and the URL the Redis client takes.
fn parse_group_url(text: &str) -> Result<(GroupsKind, String), String> {
    if text == "memory" {
        return Err("memory goes alone, not in a list of Redis URLs".to_owned());
    }
    if text.starts_with("redis://") || text.starts_with("rediss://") || text.starts_with("unix://")
    {
        return Ok((GroupsKind::Redis, text.to_owned()));
    }
    if text.starts_with("redis+sentinel://") || text.starts_with("rediss+sentinel://") {
        return Ok((GroupsKind::Redis, text.to_owned()));
    }
    let channels = [
        (
            "channels_redis_pubsub+sentinel+tls://",
            GroupsKind::ChannelsPubSub,
            "rediss+sentinel://",
        ),
        (
            "channels_redis+sentinel+tls://",
            GroupsKind::ChannelsCore,
            "rediss+sentinel://",
        ),
        (
            "channels_redis_pubsub+sentinel://",
            GroupsKind::ChannelsPubSub,
            "redis+sentinel://",
        ),
        (
            "channels_redis+sentinel://",
            GroupsKind::ChannelsCore,
            "redis+sentinel://",
        ),
        (
            "channels_redis_pubsub+tls://",
            GroupsKind::ChannelsPubSub,
            "rediss://",
        ),
        (
            "channels_redis+tls://",
            GroupsKind::ChannelsCore,
            "rediss://",
        ),
        (
            "channels_redis_pubsub://",
            GroupsKind::ChannelsPubSub,
            "redis://",
        ),
        ("channels_redis://", GroupsKind::ChannelsCore, "redis://"),
    ];
    for (scheme, kind, client) in channels {
        if let Some(rest) = text.strip_prefix(scheme) {
            return Ok((kind, format!("{client}{rest}")));
        }
    }
    Err(format!(
        "'{text}' is neither memory nor a redis://, rediss://, channels_redis://, channels_redis+tls://, channels_redis_pubsub:// or channels_redis_pubsub+tls:// URL, nor one of those through Redis Sentinel (redis+sentinel://, rediss+sentinel://, channels_redis+sentinel://, channels_redis+sentinel+tls://, channels_redis_pubsub+sentinel://, channels_redis_pubsub+sentinel+tls://), nor a Redis Cluster's (redis+cluster://, rediss+cluster://)"
    ))
}

/// `redis+cluster://[user:password@]host:port,host:port/`, or
/// `rediss+cluster://` over TLS: the seed nodes of a Redis Cluster, as one
/// client URL each (`redis://` or `rediss://`); `None` for another scheme.
fn parse_cluster_url(text: &str) -> Option<Result<Vec<String>, String>> {
    let (scheme, client, rest) = [
        ("redis+cluster://", "redis://"),
        ("rediss+cluster://", "rediss://"),
    ]
    .into_iter()
    .find_map(|(scheme, client)| text.strip_prefix(scheme).map(|rest| (scheme, client, rest)))?;
    let shown = redacted_url(text);
    let (authority, database) = rest.split_once('/').unwrap_or((rest, ""));
    if !matches!(database, "" | "0") {
        return Some(Err(format!(
            "'{shown}': a Redis Cluster has database 0 only"
        )));
    }
    let (credentials, nodes) = match authority.rsplit_once('@') {
        Some((credentials, nodes)) => (format!("{credentials}@"), nodes),
        None => (String::new(), authority),
    };
    let mut seeds = Vec::new();
    for node in nodes.split(',').map(str::trim) {
        let port = node.rsplit_once(':').map(|(_, port)| port);
        let host = node.strip_suffix(port.map_or("", |p| p)).unwrap_or(node);
        let host = host.strip_suffix(':').unwrap_or(host);
        if host.is_empty()
            || host.contains(['/', '@', '?', '#'])
            || port.is_none_or(|port| port.parse::<u16>().map_or(true, |p| p == 0))
        {
            return Some(Err(format!(
                "'{shown}': every seed node of {scheme} is host:port, comma-separated ('{node}' is not)"
            )));
        }
        let seed = format!("{client}{credentials}{node}/");
        if seeds.contains(&seed) {
            return Some(Err(format!("'{shown}' lists {node} twice")));
        }
        seeds.push(seed);
    }
    if seeds.len() > MAX_REDIS_SERVERS {
        return Some(Err(format!(
            "'{shown}' lists more than {MAX_REDIS_SERVERS} seed nodes"
        )));
    }
    Some(Ok(seeds))
}

/// `text` without the password of a URL in it, for messages.
fn redacted_url(text: &str) -> String {
    match (text.find("://"), text.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***{}", &text[..scheme + 3], &text[at..])
        }
        _ => text.to_owned(),
    }
}

/// A duration in whole seconds, at least one (Redis expires keys by the
/// second).
fn parse_whole_seconds(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration.subsec_nanos() != 0 || duration.is_zero() {
        return Err(format!(
            "'{}' is not a whole number of seconds, at least 1s",
            text.trim()
        ));
    }
    Ok(duration)
}

fn parse_bool(text: &str) -> Result<bool, String> {
    match text.trim() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        other => Err(format!("'{other}' is not true or false")),
    }
}

fn parse_scheduling(text: &str) -> Result<Scheduling, String> {
    Scheduling::parse(text.trim())
}

fn parse_log_format(text: &str) -> Result<LogFormat, String> {
    match text.trim() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        other => Err(format!("'{other}' is not a log format: text or json")),
    }
}

fn parse_sandbox(text: &str) -> Result<Sandbox, String> {
    Sandbox::parse(text.trim())
}

fn parse_group_names(text: &str) -> Result<GroupNameRule, String> {
    text.parse()
}

/// Parses "250ms", "2s", "1.5s", "2m" or plain seconds ("30").
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, scale) = if let Some(ms) = text.strip_suffix("ms") {
        (ms, 0.001)
    } else if let Some(s) = text.strip_suffix('s') {
        (s, 1.0)
    } else if let Some(m) = text.strip_suffix('m') {
        (m, 60.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("'{text}' is not a duration such as 30s or 500ms"))?;
    Duration::try_from_secs_f64(value * scale).map_err(|e| format!("'{text}': {e}"))
}

/// How many worker threads the async runtime has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Workers {
    /// One per CPU core (tokio's default).
    Auto,
    Count(usize),
}

fn parse_workers(text: &str) -> Result<Workers, String> {
    if text.trim().eq_ignore_ascii_case("auto") {
        return Ok(Workers::Auto);
    }
    parse_positive(text)
        .map(Workers::Count)
        .map_err(|_| format!("'{text}' is neither `auto` nor a positive whole number"))
}

/// A duration that must not be zero (a timer that never fires is no bound).
fn parse_nonzero_duration(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        d if d.is_zero() => Err(format!("'{text}' must be longer than zero")),
        d => Ok(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_redis_servers_are_one_kind_each_once() {
        assert_eq!(
            parse_groups("channels_redis://h1:6379/0, channels_redis+tls://h2:6379/0"),
            Ok(Groups::ChannelsCore(vec![
                "redis://h1:6379/0".to_owned(),
                "rediss://h2:6379/0".to_owned()
            ]))
        );
        let file = toml::Value::Array(vec![
            toml::Value::String("channels_redis_pubsub://h1/0".to_owned()),
            toml::Value::String("channels_redis_pubsub://h2/0".to_owned()),
        ]);
        assert_eq!(
            parse_groups(&toml_text(&file).unwrap()),
            Ok(Groups::ChannelsPubSub(vec![
                "redis://h1/0".to_owned(),
                "redis://h2/0".to_owned()
            ]))
        );
        for refused in [
            "channels_redis://h1/0,channels_redis_pubsub://h2/0",
            "redis://h1/0,channels_redis://h2/0",
            "channels_redis://h1/0,,channels_redis://h2/0",
            "channels_redis://h1/0,channels_redis://h1/0",
            "memory,redis://h1/0",
            "",
        ] {
            assert!(parse_groups(refused).is_err(), "{refused}");
        }
    }

    #[test]
    fn sentinel_urls_keep_their_list_of_sentinels() {
        assert_eq!(
            parse_groups("redis+sentinel://s1:26379, s2:26379,s3/mymaster/0"),
            Ok(Groups::Redis(vec![
                "redis+sentinel://s1:26379,s2:26379,s3/mymaster/0".to_owned()
            ]))
        );
        assert_eq!(
            parse_groups(
                "channels_redis+sentinel://s1,s2/m1/0,channels_redis+sentinel+tls://s1,s2/m2/1"
            ),
            Ok(Groups::ChannelsCore(vec![
                "redis+sentinel://s1,s2/m1/0".to_owned(),
                "rediss+sentinel://s1,s2/m2/1".to_owned()
            ]))
        );
        assert_eq!(
            parse_groups("channels_redis_pubsub+sentinel://:pw@s1,s2/m"),
            Ok(Groups::ChannelsPubSub(vec![
                "redis+sentinel://:pw@s1,s2/m".to_owned()
            ]))
        );
        // A shard listed after a Sentinel URL's path is a URL of its own;
        // a sentinel without a scheme after the path is no URL.
        assert_eq!(
            parse_groups("rediss+sentinel://s1/m/0,redis://h2/0"),
            Ok(Groups::Redis(vec![
                "rediss+sentinel://s1/m/0".to_owned(),
                "redis://h2/0".to_owned()
            ]))
        );
        for refused in [
            "redis+sentinel://s1/m/0,s2/m/0",
            "redis+sentinel://s1/m/0,channels_redis+sentinel://s1/m2/0",
            "redis+sentinel://s1,s2/m/0,redis+sentinel://s1,s2/m/0",
            "sentinel://s1/m/0",
        ] {
            assert!(parse_groups(refused).is_err(), "{refused}");
        }
    }

    #[test]
    fn a_redis_cluster_is_its_seed_nodes() {
        assert_eq!(
            parse_groups("redis+cluster://n1:7000,n2:7001, n3:7002/"),
            Ok(Groups::RedisCluster(vec![
                "redis://n1:7000/".to_owned(),
                "redis://n2:7001/".to_owned(),
                "redis://n3:7002/".to_owned()
            ]))
        );
        assert_eq!(
            parse_groups("redis+cluster://:pw@127.0.0.1:7000,[::1]:7001/0"),
            Ok(Groups::RedisCluster(vec![
                "redis://:pw@127.0.0.1:7000/".to_owned(),
                "redis://:pw@[::1]:7001/".to_owned()
            ]))
        );
        assert_eq!(
            parse_groups("redis+cluster://n1:7000"),
            Ok(Groups::RedisCluster(vec!["redis://n1:7000/".to_owned()]))
        );
        assert_eq!(
            Groups::RedisCluster(Vec::new()).default_prefix(),
            "rohrpost:"
        );
        for refused in [
            "redis+cluster://n1:7000,,n2:7001/",
            "redis+cluster://n1:7000,n1:7000/",
            "redis+cluster://n1/",
            "redis+cluster://n1:0/",
            "redis+cluster://n1:seven/",
            "redis+cluster://n1:7000/1",
            "redis+cluster://n1:7000,redis://n2:7001/",
            "redis+cluster:///",
            "redis://n1:7000/0,redis+cluster://n2:7001/",
        ] {
            assert!(parse_groups(refused).is_err(), "{refused}");
        }
        // Over TLS: every seed is a rediss:// URL.
        assert_eq!(
            parse_groups("rediss+cluster://:pw@127.0.0.1:7000,n2:7001/"),
            Ok(Groups::RedisCluster(vec![
                "rediss://:pw@127.0.0.1:7000/".to_owned(),
                "rediss://:pw@n2:7001/".to_owned()
            ]))
        );
        for refused in [
            "rediss+cluster://:secret@n1/",
            "rediss+cluster://:secret@n1:7000/2",
            "rediss+cluster://:secret@n1:7000,n1:7000/",
        ] {
            let error = parse_groups(refused).unwrap_err();
            assert!(!error.contains("secret"), "{error}");
        }
        let error = parse_groups("rediss+cluster://n1/").unwrap_err();
        assert!(error.contains("seed node of rediss+cluster://"), "{error}");
    }

    fn cli(args: &[&str]) -> Cli {
        let mut all = vec!["rohrpost"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).unwrap()
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("-1").is_err());
    }

    #[test]
    fn every_default_parses() {
        let settings = merge(&Cli::default(), FileLayer::default());
        assert_eq!(settings.listen.to_string(), "127.0.0.1:8000");
        assert_eq!(settings.max_message_size, 1 << 20);
        assert_eq!(settings.allowed_origins, Origins::default());
    }

    #[test]
    fn flags_win_over_the_file_which_wins_over_defaults() {
        let table: toml::Table = toml::from_str(
            "max_message_size = 2000\nhandler_timeout = \"2s\"\nallowed_origins = [\"https://a.example\", \"http://b.example:8080\"]\n",
        )
        .unwrap();
        let file = check_table(&table).unwrap();
        let s = merge(&cli(&["--max-message-size", "3000"]), file.layer);
        assert_eq!(s.max_message_size, 3000);
        assert_eq!(s.handler_timeout, Duration::from_secs(2));
        assert!(s.allowed_origins.allows("https://a.example", false));
        assert!(!s.allowed_origins.allows("https://evil.example", false));
        assert!(!s.allowed_origins.allows("http://a.example", true));
        let bare = parse_origins("app.example, https://other.example").expect("valid");
        assert!(bare.allows("https://app.example", true));
        assert!(!bare.allows("http://app.example", true));
        assert!(bare.allows("http://app.example", false));
        assert!(!bare.allows("https://app.example.evil", true));
        assert!(parse_origins("https://a.example/path").is_err());
        assert_eq!(s.plugin_concurrency, 64);
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let table: toml::Table = toml::from_str(
            "listen = \"nowhere\"\nmax_conections = 5\nidle_timeout = \"soon\"\nplugins = 3\n\
             [notify]\ntoken = \"x\"\n",
        )
        .unwrap();
        let problems = check_table(&table).unwrap_err();
        let text = problems.join("\n");
        for key in [
            "listen:",
            "max_conections: unknown key",
            "idle_timeout:",
            "plugins:",
            "notify: unknown key",
        ] {
            assert!(text.contains(key), "{key} missing in:\n{text}");
        }
        assert_eq!(problems.len(), 5);
    }

    #[test]
    fn plugin_tables_reach_plugins_as_json() {
        let table: toml::Table =
            toml::from_str("[plugins.subscriptions]\nauth = \"tokens\"\ntokens = [\"a\"]\n")
                .unwrap();
        let plugins = check_table(&table).unwrap().tables;
        assert_eq!(
            plugins["subscriptions"],
            r#"{"auth":"tokens","tokens":["a"]}"#
        );
    }

    #[test]
    fn a_sandbox_table_grants_to_the_plugins_file() {
        let table: toml::Table = toml::from_str(
            "[plugins.proxy]\nbackend = \"http://127.0.0.1:8001\"\n[plugins.proxy.sandbox]\nread = [\"/etc/app\"]\nconnect_ports = [8001]\n\
             [plugins.sub]\nlibrary = \"libsub_v2.so\"\nsandbox = { connect_ports = [443] }\n",
        )
        .unwrap();
        let parts = check_table(&table).unwrap();
        let (plugin, grants) = &parts.granted_files["libproxy.so"];
        assert_eq!(plugin, "proxy");
        assert_eq!(grants.read, vec![PathBuf::from("/etc/app")]);
        assert_eq!(grants.connect_ports, vec![8001]);
        assert_eq!(parts.granted_files["libsub_v2.so"].0, "sub");
        assert_eq!(
            parts.tables["proxy"],
            r#"{"backend":"http://127.0.0.1:8001"}"#
        );
        assert!(!parts.tables.contains_key("sub"), "{:?}", parts.tables);
        for (bad, key) in [
            (
                "[plugins.p.sandbox]\nread = [\"etc\"]\n",
                "plugins.p.sandbox.read:",
            ),
            (
                "[plugins.p.sandbox]\nconnect_ports = [0]\n",
                "plugins.p.sandbox.connect_ports:",
            ),
            (
                "[plugins.p.sandbox]\nwrite = [\"/tmp\"]\n",
                "plugins.p.sandbox.write:",
            ),
            ("[plugins.p]\nsandbox = 1\n", "plugins.p.sandbox:"),
        ] {
            let problems = check_table(&toml::from_str(bad).unwrap()).unwrap_err();
            assert!(problems[0].starts_with(key), "{bad}: {problems:?}");
        }
    }

    #[test]
    fn isolation_is_the_hosts_key_and_defaults_to_process() {
        let table: toml::Table = toml::from_str(
            "[plugins.ping]\nisolation = \"none\"\n[plugins.other]\nisolation = \"process\"\nx = 1\n[plugins.third]\ny = 2\n",
        )
        .unwrap();
        let FileParts {
            tables: plugins,
            isolation,
            in_process_files: files,
            ..
        } = check_table(&table).unwrap();
        assert!(!plugins.contains_key("ping"));
        assert_eq!(plugins["other"], r#"{"x":1}"#);
        assert_eq!(isolation.get("ping"), Some(&Isolation::None));
        assert_eq!(isolation.get("other"), Some(&Isolation::Process));
        assert_eq!(isolation.get("third"), None);
        // `none` is granted to the plugin's own file, or the one it names.
        assert_eq!(files.get("ping").map(String::as_str), Some("libping.so"));
        assert_eq!(files.get("other"), None);
        let named: toml::Table = toml::from_str(
            "[plugins.faults]\nisolation = \"none\"\nlibrary = \"libfixture_faults.so\"\n",
        )
        .unwrap();
        let FileParts {
            tables: plugins,
            in_process_files: files,
            ..
        } = check_table(&named).unwrap();
        assert_eq!(files["faults"], "libfixture_faults.so");
        assert!(!plugins.contains_key("faults"), "{plugins:?}");
        for bad in [
            "[plugins.ping]\nisolation = \"none\"\nlibrary = \"../libping.so\"\n",
            "[plugins.ping]\nlibrary = \"libping.so\"\n",
        ] {
            let table: toml::Table = toml::from_str(bad).unwrap();
            let problems = check_table(&table).unwrap_err();
            assert!(
                problems[0].starts_with("plugins.ping.library:"),
                "{problems:?}"
            );
        }
        assert_eq!(Isolation::default(), Isolation::Process);
        let bad: toml::Table = toml::from_str("[plugins.ping]\nisolation = \"thread\"\n").unwrap();
        let problems = check_table(&bad).unwrap_err();
        assert!(
            problems[0].starts_with("plugins.ping.isolation:"),
            "{problems:?}"
        );
    }

    #[test]
    fn the_configuration_doc_lists_every_setting() {
        let readme = include_str!("../../docs/configuration.md");
        for s in SETTINGS {
            let default = match s.default {
                "" => "none".to_owned(),
                default => format!("`{default}`"),
            };
            let row = format!("| `--{}` | `{}` | `{}` | {default} |", s.flag, s.env, s.key);
            assert!(
                readme.contains(&row),
                "docs/configuration.md lacks the row for --{}: {row}",
                s.flag
            );
        }
    }
}
