//! Presence: how many members each group has on each host, kept in Redis
//! so that a plugin's `group_size` counts the members of every host that
//! shares the groups, and the hosts themselves, for the status page.
//!
//! Each host writes, in hashes of its own keys (never channels_redis's):
//! - `<ns>group:<name>`: field = host id, value = the host's member count
//!   (removed at 0);
//! - `<ns>hosts`: field = host id, value = `{"connections":n,"seen_ms":t}`.
//!
//! On a Redis Cluster the namespace is one hash tag (`{<prefix>rohrpost-
//! presence}:`), so that every key is in one slot and a pipeline of them
//! goes to one node ([`super::cluster`]).
//!
//! Counts that changed are written within [`FLUSH`]; every count and the
//! host's own entry are written again every [`REFRESH`], and the keys
//! expire after [`KEY_EXPIRY`] without a write. A reader counts a host
//! only while its entry is younger than [`STALE_AFTER`]: another host's
//! members are at most twice [`FLUSH`] plus a round trip late while it
//! runs (a reader keeps what it read for [`FLUSH`]), and
//! a host that died without saying so is counted for [`STALE_AFTER`] at
//! most. A host that stops takes its fields out.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        atomic::{AtomicI64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use tokio::sync::Notify;

use super::{
    bounded_read::{self, HashRead},
    format::Rejected,
    health::{deadline, Connection, Health},
};
use crate::groups::{HostEntry, MemoryGroups};

/// How soon a changed count is written.
const FLUSH: Duration = Duration::from_millis(100);
/// How often everything is written again.
const REFRESH: Duration = Duration::from_secs(5);
/// How old a host's entry may be and still count.
pub(super) const STALE_AFTER: Duration = Duration::from_secs(15);
/// How long the keys live without a write.
const KEY_EXPIRY: Duration = Duration::from_secs(60);
/// How long a plugin's question waits for Redis.
pub(super) const ASK_WAIT: Duration = Duration::from_millis(250);
/// Groups whose recent count of other hosts' members is kept.
const MAX_RECENT: usize = 4096;

/// One host's presence, written by its task and read by its questions.
pub(super) struct Presence {
    /// Where the keys start (after the layer's prefix).
    namespace: String,
    host: String,
    health: Arc<Health>,
    /// Groups whose count changed since the last write.
    dirty: Mutex<HashSet<String>>,
    changed: Notify,
    /// This host's open connections, for its entry.
    connections: Arc<AtomicI64>,
    /// The other hosts' members of a group as last read, for [`FLUSH`]:
    /// they write their counts no more often, so reading again sooner
    /// tells nothing new, and a notification sent after another (each
    /// answering `members`) does not wait for Redis every time.
    recent: Mutex<HashMap<String, (Instant, usize)>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Presence {
    pub(super) fn new(
        namespace: String,
        host: String,
        health: Arc<Health>,
        connections: Arc<AtomicI64>,
    ) -> Arc<Presence> {
        Arc::new(Presence {
            namespace,
            host,
            health,
            dirty: Mutex::new(HashSet::new()),
            changed: Notify::new(),
            connections,
            recent: Mutex::new(HashMap::new()),
        })
    }

    /// The members of `group` on the other hosts that `ask` reads from
    /// Redis, or its answer of less than [`FLUSH`] ago; none when Redis
    /// gave none (which is not kept).
    pub(super) async fn members_recently(
        &self,
        group: &str,
        ask: impl std::future::Future<Output = Option<usize>>,
    ) -> Option<usize> {
        let lock = || self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, members)) = lock().get(group) {
            if at.elapsed() < FLUSH {
                return Some(*members);
            }
        }
        let members = ask.await?;
        let mut recent = lock();
        if recent.len() >= MAX_RECENT {
            recent.retain(|_, (at, _)| at.elapsed() < FLUSH);
            if recent.len() >= MAX_RECENT {
                recent.clear();
            }
        }
        recent.insert(group.to_owned(), (Instant::now(), members));
        Some(members)
    }

    fn group_key(&self, group: &str) -> String {
        format!("{}group:{group}", self.namespace)
    }

    fn hosts_key(&self) -> String {
        format!("{}hosts", self.namespace)
    }

    /// The local count of `group` changed.
    pub(super) fn changed(&self, group: &str) {
        let first = {
            let mut dirty = self.dirty.lock().unwrap_or_else(|p| p.into_inner());
            dirty.insert(group.to_owned())
        };
        if first {
            self.changed.notify_one();
        }
    }

    fn connection(&self) -> Option<Connection> {
        self.health.publishing().map(|p| p.connection)
    }

    /// Writes what changed, and everything every [`REFRESH`]; runs while
    /// the layer does.
    pub(super) async fn run(self: Arc<Self>, local: MemoryGroups) {
        let mut refresh = tokio::time::interval(REFRESH);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let all = tokio::select! {
                _ = refresh.tick() => true,
                () = self.changed.notified() => false,
            };
            if !all {
                // Gathers the changes of a burst into one write.
                tokio::time::sleep(FLUSH).await;
            }
            let groups: Vec<String> = if all {
                let mut dirty = self.dirty.lock().unwrap_or_else(|p| p.into_inner());
                dirty.clear();
                local.group_names()
            } else {
                let mut dirty = self.dirty.lock().unwrap_or_else(|p| p.into_inner());
                dirty.drain().collect()
            };
            let Some(mut connection) = self.connection() else {
                // Redis is down: everything is written again once it is up.
                continue;
            };
            let mut pipe = redis::pipe();
            for group in &groups {
                let key = self.group_key(group);
                let count = local.count(group);
                if count == 0 {
                    pipe.cmd("HDEL").arg(&key).arg(&self.host).ignore();
                } else {
                    pipe.cmd("HSET")
                        .arg(&key)
                        .arg(&self.host)
                        .arg(count)
                        .ignore();
                    pipe.cmd("PEXPIRE")
                        .arg(&key)
                        .arg(KEY_EXPIRY.as_millis() as u64)
                        .ignore();
                }
            }
            let entry = HostEntry {
                id: String::new(),
                connections: self.connections.load(Ordering::Relaxed),
                seen_ms: now_ms(),
            };
            let entry = serde_json::to_string(&entry).unwrap_or_default();
            pipe.cmd("HSET")
                .arg(self.hosts_key())
                .arg(&self.host)
                .arg(entry)
                .ignore();
            pipe.cmd("PEXPIRE")
                .arg(self.hosts_key())
                .arg(KEY_EXPIRY.as_millis() as u64)
                .ignore();
            if deadline(pipe.query_async::<()>(&mut connection))
                .await
                .is_err()
            {
                // Written again at the next refresh.
                let mut dirty = self.dirty.lock().unwrap_or_else(|p| p.into_inner());
                dirty.extend(groups);
            }
        }
    }

    /// Reads `reads` within their bounds ([`bounded_read::hashes`]) in
    /// [`ASK_WAIT`], counting and logging what was left out; `None` when
    /// Redis is down or did not answer in time.
    async fn read(&self, reads: &[HashRead<'_>]) -> Option<Vec<HashMap<String, String>>> {
        let mut connection = self.connection()?;
        let hashes = tokio::time::timeout(ASK_WAIT, bounded_read::hashes(&mut connection, reads))
            .await
            .ok()?
            .ok()?;
        Some(
            hashes
                .into_iter()
                .zip(reads)
                .map(|(hash, read)| {
                    if hash.left_out > 0 {
                        self.health
                            .rejected(read.key, &Rejected::LeftOut(hash.left_out));
                    }
                    hash.entries
                })
                .collect(),
        )
    }

    fn hosts_read(key: &str) -> HashRead<'_> {
        HashRead {
            key,
            longest_value: bounded_read::MAX_HOST_ENTRY,
        }
    }

    /// The hosts whose entries are fresh, this one included.
    pub(super) async fn hosts(&self) -> Vec<HostEntry> {
        let key = self.hosts_key();
        let Some(entries) = self
            .read(&[Self::hosts_read(&key)])
            .await
            .and_then(|hashes| hashes.into_iter().next())
        else {
            return Vec::new();
        };
        fresh_hosts(entries, now_ms())
    }

    /// The members of `group` on the other hosts whose entries are fresh,
    /// and how many such hosts have members; `None` when Redis did not
    /// answer within [`ASK_WAIT`].
    pub(super) async fn others(&self, group: &str) -> Option<(usize, usize)> {
        let counts_key = self.group_key(group);
        let hosts_key = self.hosts_key();
        let reads = [
            HashRead {
                key: &counts_key,
                longest_value: bounded_read::MAX_COUNT,
            },
            Self::hosts_read(&hosts_key),
        ];
        let mut hashes = self.read(&reads).await?.into_iter();
        let (counts, hosts) = (hashes.next()?, hashes.next()?);
        Some(other_members(&self.host, &counts, &hosts, now_ms()))
    }

    /// Takes this host's fields out (the host stops).
    pub(super) async fn remove(&self, local: &MemoryGroups) {
        let Some(mut connection) = self.connection() else {
            return;
        };
        let mut pipe = redis::pipe();
        for group in local.group_names() {
            pipe.cmd("HDEL")
                .arg(self.group_key(&group))
                .arg(&self.host)
                .ignore();
        }
        pipe.cmd("HDEL")
            .arg(self.hosts_key())
            .arg(&self.host)
            .ignore();
        let _ = deadline(pipe.query_async::<()>(&mut connection)).await;
    }
}

/// The hosts of `entries` (host id → entry) seen since [`STALE_AFTER`]
/// before `now`, by id; entries that are not a host's are skipped.
fn fresh_hosts(entries: HashMap<String, String>, now: u64) -> Vec<HostEntry> {
    let fresh_since = now.saturating_sub(STALE_AFTER.as_millis() as u64);
    let mut hosts: Vec<HostEntry> = entries
        .into_iter()
        .filter_map(|(id, text)| {
            let mut entry: HostEntry = serde_json::from_str(&text).ok()?;
            entry.id = id;
            (entry.seen_ms >= fresh_since).then_some(entry)
        })
        .collect();
    hosts.sort_by(|a, b| a.id.cmp(&b.id));
    hosts
}

/// The members counted in `counts` (host id → count) on hosts other than
/// `own` whose entries in `hosts` are fresh at `now`, and how many such
/// hosts have members; counts that are not numbers are skipped.
fn other_members(
    own: &str,
    counts: &HashMap<String, String>,
    hosts: &HashMap<String, String>,
    now: u64,
) -> (usize, usize) {
    let fresh_since = now.saturating_sub(STALE_AFTER.as_millis() as u64);
    let live = |host: &str| {
        hosts
            .get(host)
            .and_then(|text| serde_json::from_str::<HostEntry>(text).ok())
            .is_some_and(|entry| entry.seen_ms >= fresh_since)
    };
    let others: Vec<usize> = counts
        .iter()
        .filter(|(host, _)| host.as_str() != own && live(host))
        .filter_map(|(_, count)| count.parse::<u64>().ok())
        .filter(|count| *count > 0)
        .map(|count| count as usize)
        .collect();
    (others.iter().sum(), others.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(entries: &[(&str, &str)]) -> HashMap<String, String> {
        entries
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn fresh_hosts_are_read_by_id_and_stale_or_broken_ones_skipped() {
        let now = 100_000;
        let entries = map(&[
            ("b", r#"{"connections":2,"seen_ms":99000}"#),
            ("a", r#"{"connections":1,"seen_ms":90000}"#),
            ("old", r#"{"connections":5,"seen_ms":1000}"#),
            ("junk", "not json"),
        ]);
        let hosts = fresh_hosts(entries, now);
        let ids: Vec<(&str, i64)> = hosts
            .iter()
            .map(|h| (h.id.as_str(), h.connections))
            .collect();
        assert_eq!(ids, [("a", 1), ("b", 2)]);
    }

    #[test]
    fn other_members_count_fresh_hosts_but_this_one() {
        let now = 100_000;
        let hosts = map(&[
            ("me", r#"{"connections":1,"seen_ms":99000}"#),
            ("b", r#"{"connections":1,"seen_ms":99000}"#),
            ("c", r#"{"connections":1,"seen_ms":99000}"#),
            ("old", r#"{"connections":1,"seen_ms":1}"#),
        ]);
        let counts = map(&[
            ("me", "7"),
            ("b", "3"),
            ("c", "4"),
            ("old", "9"),
            ("gone", "2"),
        ]);
        assert_eq!(other_members("me", &counts, &hosts, now), (7, 2));
        let broken = map(&[("b", "x"), ("c", "0")]);
        assert_eq!(other_members("me", &broken, &hosts, now), (0, 0));
    }
}
