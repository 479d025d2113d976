//! Groups in Django Channels' default layer, `channels_redis`'s
//! `RedisChannelLayer` (the "core" layer), so that a Django app using it
//! and this host share groups without a change to the app.
//!
//! The core layer has no pub/sub: a group is a sorted set of channel names
//! (`<prefix>:group:<name>`, scored by the time each joined, members older
//! than `group_expiry` are dropped by the next `group_send`), and a message
//! for a channel `specific.<process>!<suffix>` is put in its process's
//! sorted set `<prefix>specific.<process>!`, naming the channels it is for
//! in `__asgi_channel__`; the process pops them (`BZPOPMIN`).
//!
//! This host is one such process. It has one channel per group with local
//! members (`specific.<host id>!<n>`, a number never reused, so that a
//! late message cannot reach another group), adds it to the group's set
//! when the group gets its first local member and refreshes every
//! membership well before `group_expiry`, removes it when the last local
//! member leaves and when the host stops, and pops its own set
//! ([`super::core_link`]). Sending delivers to local members at once and
//! queues a `group_send` to the group's other channels (Django's and other
//! hosts'), in channels_redis's format and with its capacity rule, for the
//! publisher ([`super::publisher`]). The host never sends to its own
//! channel, so no member gets a message twice.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tracing::debug;

use super::{
    bounded_read,
    format::{self, Received},
    health::{deadline, Health},
    shards::{shard_of, Place},
};
use crate::groups::MemoryGroups;

/// channels_redis's settings that the host follows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CoreSettings {
    /// How long a group membership lasts without a refresh.
    pub group_expiry: Duration,
    /// Most messages waiting in one process's set; more are dropped.
    pub capacity: usize,
    /// How long a message waits in a set before it may be dropped.
    pub expiry: Duration,
}

/// The host's side of the core layer, shared by its tasks.
pub(super) struct Core {
    pub local: MemoryGroups,
    pub settings: CoreSettings,
    /// The layer's `prefix` (`asgi` unless set otherwise).
    prefix: String,
    /// `specific.<host id>!`: the start of this host's channel names.
    own: String,
    names: Mutex<Names>,
    pub health: Arc<Health>,
    /// Every shard's health (this one's at `index`), for the connections
    /// to the shards where other processes' sets live.
    shards: Arc<Vec<Arc<Health>>>,
    index: usize,
}

#[derive(Default)]
struct Names {
    by_group: HashMap<String, String>,
    by_channel: HashMap<String, String>,
    next: u64,
}

/// A process's set and its channels that a group send is for.
type ProcessSet<'a> = (String, Vec<&'a str>);

/// One membership in Redis: the group's key and the host's channel in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CoreEntry {
    pub key: String,
    pub channel: String,
}

/// The Lua script of a group send: for each process's set (`KEYS[i]`),
/// its message (`ARGV[i]`) is added, scored now, unless the set holds
/// its capacity (`ARGV[#KEYS + i]`) already; the set then expires after
/// `expiry`. Returns how many sets were full. The same rule as
/// channels_redis's `group_send`.
const GROUP_SEND: &str = r"
local n = #KEYS
local now = ARGV[2 * n + 1]
local expiry = ARGV[2 * n + 2]
local full = 0
for i = 1, n do
    if redis.call('ZCARD', KEYS[i]) < tonumber(ARGV[n + i]) then
        redis.call('ZADD', KEYS[i], now, ARGV[i])
        redis.call('EXPIRE', KEYS[i], expiry)
    else
        full = full + 1
    end
end
return full
";

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64())
}

impl Core {
    /// The core layer's side on the only Redis server.
    #[cfg(test)]
    pub(super) fn new(
        prefix: &str,
        settings: CoreSettings,
        health: Arc<Health>,
        local: MemoryGroups,
    ) -> Core {
        let place = Place {
            index: 0,
            count: 1,
            local,
        };
        Core::sharded(prefix, settings, place, Arc::new(vec![health]))
    }

    /// The core layer's side on shard `place.index`. Its channels start
    /// with a name that channels_redis hashes to this shard, as Django
    /// sends to a process's set on the shard of `specific.<process>!`:
    /// a random one is drawn until it does (`count` draws on average).
    pub(super) fn sharded(
        prefix: &str,
        settings: CoreSettings,
        place: Place,
        shards: Arc<Vec<Arc<Health>>>,
    ) -> Core {
        let own = loop {
            let own = format!("specific.{:032x}!", rand::random::<u128>());
            if shard_of(&own, place.count) == place.index {
                break own;
            }
        };
        let health = shards
            .get(place.index)
            .cloned()
            .unwrap_or_else(|| Arc::new(Health::new(Arc::default())));
        Core {
            local: place.local,
            settings,
            prefix: prefix.to_owned(),
            own,
            names: Mutex::new(Names::default()),
            health,
            shards,
            index: place.index,
        }
    }

    fn names(&self) -> std::sync::MutexGuard<'_, Names> {
        self.names
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn group_key(&self, group: &str) -> String {
        format!("{}:group:{group}", self.prefix)
    }

    /// This host's id in the presence data: the start of its channels.
    pub(super) fn host_id(&self) -> &str {
        &self.own
    }

    /// The live members of `group`'s set: Django's consumers and the
    /// channels of the hosts with members. `None` when Redis is down or
    /// fails.
    pub(super) async fn set_size(&self, group: &str) -> Option<usize> {
        let mut connection = self.health.publishing()?.connection;
        let since = now() - self.settings.group_expiry.as_secs_f64();
        redis::cmd("ZCOUNT")
            .arg(self.group_key(group))
            .arg(since)
            .arg("+inf")
            .query_async(&mut connection)
            .await
            .ok()
    }

    /// The key of this host's set: where Django sends to its channels.
    pub(super) fn inbox(&self) -> String {
        format!("{}{}", self.prefix, self.own)
    }

    /// The membership of a group that got its first local member.
    pub(super) fn joined(&self, group: &str) -> CoreEntry {
        let mut names = self.names();
        let channel = match names.by_group.get(group) {
            Some(channel) => channel.clone(),
            None => {
                names.next += 1;
                let channel = format!("{}{}", self.own, names.next);
                names.by_group.insert(group.to_owned(), channel.clone());
                names.by_channel.insert(channel.clone(), group.to_owned());
                channel
            }
        };
        CoreEntry {
            key: self.group_key(group),
            channel,
        }
    }

    /// The membership of a group whose last local member left.
    pub(super) fn left(&self, group: &str) -> Option<CoreEntry> {
        let mut names = self.names();
        let channel = names.by_group.remove(group)?;
        names.by_channel.remove(&channel);
        Some(CoreEntry {
            key: self.group_key(group),
            channel,
        })
    }

    /// Every membership the host holds now.
    pub(super) fn memberships(&self) -> Vec<CoreEntry> {
        self.names()
            .by_group
            .iter()
            .map(|(group, channel)| CoreEntry {
                key: self.group_key(group),
                channel: channel.clone(),
            })
            .collect()
    }

    /// A message popped from this host's set: for the local members of the
    /// groups of the channels it names.
    pub(super) async fn received(&self, payload: &[u8]) {
        let (message, channels) = format::read_core_message(payload);
        let message = match message {
            Received::Message(message) => message,
            Received::Own => return,
            Received::Rejected(why) => {
                self.health.rejected(&self.inbox(), &why);
                return;
            }
            Received::Foreign(kind) => {
                self.health.foreign();
                debug!(
                    event_type = kind.as_deref().unwrap_or("(unreadable)"),
                    "skipped an event that is not a rohrpost message"
                );
                return;
            }
        };
        let groups: Vec<String> = {
            let names = self.names();
            channels
                .iter()
                .filter_map(|channel| names.by_channel.get(channel).cloned())
                .collect()
        };
        for group in groups {
            self.local.deliver(&group, &message).await;
        }
    }

    /// A member of this host's set was larger than any message: thrown
    /// away unread ([`super::bounded_pop`]), counted and logged.
    pub(super) fn too_large(&self, size: usize) {
        self.health
            .rejected(&self.inbox(), &format::Rejected::Oversized(size));
    }

    /// channels_redis's `group_send` of a rohrpost message to the group's
    /// channels other than this host's: drops memberships older than
    /// `group_expiry` and messages older than `expiry`, then adds one
    /// message per process's set, within its capacity. How many sets were
    /// full (their process misses the message).
    pub(super) async fn group_send(
        &self,
        connection: &mut super::health::Connection,
        group: &str,
        message: &str,
    ) -> redis::RedisResult<usize> {
        let key = self.group_key(group);
        let started = now();
        let expired = started as i64 - self.settings.group_expiry.as_secs() as i64;
        let read = bounded_read::group_channels(connection, &key, expired).await?;
        if read.left_out > 0 {
            self.health
                .rejected(&key, &format::Rejected::LeftOut(read.left_out));
        }
        // Each process's set, and its channels in this group, in order
        // (and where each set is in `sets`).
        let mut sets: Vec<(String, Vec<&str>)> = Vec::new();
        let mut places: HashMap<String, usize> = HashMap::new();
        let channels = read
            .entries
            .iter()
            .map(String::as_str)
            .filter(|name| !name.starts_with(&self.own));
        for channel in channels {
            let set = match channel.find('!') {
                Some(bang) => format!("{}{}", self.prefix, &channel[..=bang]),
                None => format!("{}{channel}", self.prefix),
            };
            match places.get(&set).and_then(|&place| sets.get_mut(place)) {
                Some((_, names)) => names.push(channel),
                None => {
                    places.insert(set.clone(), sets.len());
                    sets.push((set, vec![channel]));
                }
            }
        }
        if sets.is_empty() {
            return Ok(0);
        }
        // Each process's set is on the shard of its name (less the prefix).
        let mut here = Vec::new();
        let mut missed = 0;
        let mut elsewhere: Vec<(usize, Vec<ProcessSet<'_>>)> = Vec::new();
        for (set, names) in sets {
            let name = set.strip_prefix(&self.prefix).unwrap_or(&set);
            let shard = shard_of(name, self.shards.len());
            if shard == self.index {
                here.push((set, names));
            } else {
                match elsewhere.iter_mut().find(|(index, _)| *index == shard) {
                    Some((_, sets)) => sets.push((set, names)),
                    None => elsewhere.push((shard, vec![(set, names)])),
                }
            }
        }
        for (shard, sets) in elsewhere {
            missed += self.send_on_shard(shard, message, started, &sets).await;
        }
        if here.is_empty() {
            return Ok(missed);
        }
        Ok(missed
            + self
                .send_to_sets(connection, message, started, &here)
                .await?)
    }

    /// A group send's part for sets on another shard, through that shard's
    /// connection: how many sets were full. While that shard is down the
    /// sets miss the message, counted as dropped there; a failure ends that
    /// shard's link, not this one.
    async fn send_on_shard(
        &self,
        shard: usize,
        message: &str,
        started: f64,
        sets: &[(String, Vec<&str>)],
    ) -> usize {
        let Some(health) = self.shards.get(shard) else {
            return sets.len();
        };
        let Some(mut publishing) = health.publishing() else {
            health.dropped(sets.len(), "the Redis shard of their processes is down");
            return 0;
        };
        match deadline(self.send_to_sets(&mut publishing.connection, message, started, sets)).await
        {
            Ok(full) => full,
            Err(failure) => {
                health.dropped(sets.len(), "publishing failed");
                health.publish_failed(publishing.link, failure);
                0
            }
        }
    }

    /// Adds `message` to each process's set of `sets` (all on the server of
    /// `connection`), within its capacity: how many were full.
    async fn send_to_sets(
        &self,
        connection: &mut super::health::Connection,
        message: &str,
        started: f64,
        sets: &[(String, Vec<&str>)],
    ) -> redis::RedisResult<usize> {
        let mut pipe = redis::pipe();
        let oldest = started as i64 - self.settings.expiry.as_secs() as i64;
        for (set, _) in sets {
            pipe.cmd("ZREMRANGEBYSCORE")
                .arg(set)
                .arg(0)
                .arg(oldest)
                .ignore();
        }
        let mut send = redis::cmd("EVAL");
        send.arg(GROUP_SEND).arg(sets.len());
        for (set, _) in sets {
            send.arg(set);
        }
        for (_, names) in sets {
            send.arg(format::core_message(message, names));
        }
        for _ in sets {
            send.arg(self.settings.capacity);
        }
        send.arg(now()).arg(self.settings.expiry.as_secs().max(1));
        pipe.add_command(send);
        let (full,): (usize,) = pipe.query_async(connection).await?;
        Ok(full)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::Monitor;

    fn core() -> Core {
        let settings = CoreSettings {
            group_expiry: Duration::from_secs(86400),
            capacity: 100,
            expiry: Duration::from_secs(60),
        };
        Core::new(
            "asgi",
            settings,
            Arc::new(Health::new(Arc::new(Monitor::default()))),
            MemoryGroups::default(),
        )
    }

    #[test]
    fn channel_names_are_channels_and_never_reused() {
        let core = core();
        let first = core.joined("news");
        assert_eq!(first.key, "asgi:group:news");
        assert!(first.channel.starts_with("specific.") && first.channel.len() < 100);
        assert_eq!(core.joined("news"), first, "one channel per group");
        assert!(core.inbox().starts_with("asgispecific."));
        assert!(core.inbox().ends_with('!'));
        assert_eq!(core.left("news"), Some(first.clone()));
        assert_eq!(core.left("news"), None);
        assert_ne!(core.joined("news").channel, first.channel);
    }
}
