//! Groups over several Redis servers, as channels_redis shards them when
//! its `hosts` lists more than one: each group lives on one server, picked
//! by a hash of its name ([`shard_of`]), the same as channels_redis's so
//! that a Django app and this host read and write every group on the same
//! server.
//!
//! Each shard is a whole layer of its own ([`super::RedisGroups`] or
//! [`super::CoreGroups`]) with its own link, publisher and presence; they
//! share this host's members ([`MemoryGroups`]), and [`ShardedGroups`]
//! hands each group to its shard. A shard that is down loses the messages
//! to and from other hosts of the groups that live on it only.

use std::sync::Arc;

use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::groups::{ConnectionId, GroupFuture, GroupLayer, HostEntry, MemoryGroups, Outbox};

/// CRC-32 (IEEE, as zlib's and Python's `binascii.crc32`).
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

/// The shard of `name` among `count`: channels_redis's
/// `_consistent_hash`, `int((crc32(name) & 0xFFF) / (4096 / count))`.
pub(super) fn shard_of(name: &str, count: usize) -> usize {
    if count <= 1 {
        return 0;
    }
    let value = f64::from(crc32(name.as_bytes()) & 0xFFF);
    let divisor = 4096.0 / count as f64;
    ((value / divisor) as usize).min(count - 1)
}

/// A host's place among the shards, for one shard's layer.
#[derive(Clone)]
pub(super) struct Place {
    pub index: usize,
    pub count: usize,
    /// This host's members, shared by every shard.
    pub local: MemoryGroups,
}

/// Several shards as one layer.
pub(crate) struct ShardedGroups {
    shards: Vec<Arc<dyn GroupLayer>>,
    local: MemoryGroups,
    /// What is hashed is this followed by the group's name: the name of
    /// its channel for the pub/sub layer, the name alone for the core one.
    hashed_prefix: String,
}

impl ShardedGroups {
    pub(super) fn new(
        shards: Vec<Arc<dyn GroupLayer>>,
        local: MemoryGroups,
        hashed_prefix: String,
    ) -> ShardedGroups {
        ShardedGroups {
            shards,
            local,
            hashed_prefix,
        }
    }

    fn shard(&self, group: &str) -> &Arc<dyn GroupLayer> {
        let index = shard_of(&format!("{}{group}", self.hashed_prefix), self.shards.len());
        &self.shards[index.min(self.shards.len().saturating_sub(1))]
    }
}

impl GroupLayer for ShardedGroups {
    fn join<'a>(
        &'a self,
        group: &'a str,
        connection: ConnectionId,
        outbox: &'a Outbox,
    ) -> GroupFuture<'a, ()> {
        self.shard(group).join(group, connection, outbox)
    }

    fn leave(&self, group: &str, connection: ConnectionId) {
        self.shard(group).leave(group, connection);
    }

    fn leave_all(&self, connection: ConnectionId) {
        for group in self.local.groups_of(connection) {
            self.shard(&group).leave(&group, connection);
        }
    }

    fn send<'a>(&'a self, group: &'a str, message: Utf8Bytes) -> GroupFuture<'a, usize> {
        self.shard(group).send(group, message)
    }

    fn close(&self) -> GroupFuture<'_, ()> {
        Box::pin(async move {
            for shard in &self.shards {
                shard.close().await;
            }
        })
    }

    fn local(&self) -> &MemoryGroups {
        &self.local
    }

    fn remote_members<'a>(&'a self, group: &'a str) -> GroupFuture<'a, Option<usize>> {
        self.shard(group).remote_members(group)
    }

    /// Every shard holds every host's entry (under an id of that shard):
    /// the first shard that answers tells.
    fn hosts(&self) -> GroupFuture<'_, Vec<HostEntry>> {
        Box::pin(async move {
            for shard in &self.shards {
                let hosts = shard.hosts().await;
                if !hosts.is_empty() {
                    return hosts;
                }
            }
            Vec::new()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Computed with channels_redis 4.3.0's own function:
    /// `python3 -c 'from channels_redis.utils import _consistent_hash as h;
    /// print([(n, h(n, 2), h(n, 3)) for n in [...]])'`.
    #[test]
    fn shards_as_channels_redis_picks_them() {
        let known: &[(&str, usize, usize)] = &[
            ("news", 1, 1),
            ("alpha", 1, 1),
            ("beta", 0, 0),
            ("room-1", 1, 1),
            ("room-2", 1, 1),
            ("asgi__group__news", 0, 0),
            ("asgi__group__alpha", 0, 0),
            ("specific.abc!", 1, 2),
            ("\u{dc}n\u{ef}code", 0, 1),
        ];
        for (name, of_two, of_three) in known {
            assert_eq!(shard_of(name, 2), *of_two, "{name}");
            assert_eq!(shard_of(name, 3), *of_three, "{name}");
        }
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(shard_of("anything", 1), 0);
    }
}
