//! Reads of a whole collection in Redis, bounded inside Redis: a script
//! reads the sorted set or hash there and hands back at most a given
//! number of entries, each within a given number of bytes, and how many
//! it left out. The Redis client buffers a whole reply before the host
//! sees any of it, so a bound checked on the host's side would come too
//! late: whoever can write to Redis could make one reply of gigabytes.
//!
//! - A channels_redis group's sorted set, which a group send reads
//!   ([`group_channels`]): Channels' channel names only, at most
//!   [`MAX_GROUP_CHANNELS`] of them and [`MAX_GROUP_BYTES`] in all.
//! - The presence hashes ([`hashes`]): fields and values of the sizes
//!   the host writes there, at most [`MAX_HASH_ENTRIES`] of each hash.
//!
//! Every script takes its keys as `KEYS`, so a Redis Cluster runs it on
//! the node of their slot (the presence keys share one hash tag).

use std::{collections::HashMap, sync::LazyLock};

use redis::Script;

use super::{format::MAX_PAYLOAD, health::Connection};

/// Most bytes of a channel name: Channels allows fewer than 100
/// characters (`BaseChannelLayer.MAX_NAME_LENGTH`), ASCII but for the part
/// after a `!`, which may hold any word character (at most 4 bytes each).
pub(super) const MAX_CHANNEL_NAME: usize = 4 * 100;
/// Most channels of a group read for a send. Each is one Django consumer
/// (a connection) or one host (however many members it has there), and
/// channels_redis's own `group_send` goes through every one of them in
/// Python and in one script that blocks Redis meanwhile: a group of that
/// many has long been slow for Django. The bound keeps a send well
/// within the host's deadline for any call ([`super::health`]): reading
/// 100 000 names took Redis alone about 100 ms per send, blocking every
/// other client, and the host several times that unoptimised. At the
/// length of the names channels_redis makes (about 40 bytes), 50 000 are
/// about 2 MB.
pub(super) const MAX_GROUP_CHANNELS: usize = 50_000;
/// Most bytes of all the channel names read for one send: they are
/// named in the messages it writes, and a message larger than
/// [`MAX_PAYLOAD`] would be dropped by a host that reads it.
pub(super) const MAX_GROUP_BYTES: usize = MAX_PAYLOAD;
/// Channels read from the group's set per command inside the script.
const GROUP_CHUNK: usize = 1000;

/// Most entries read from one presence hash: one per host sharing the
/// groups.
pub(super) const MAX_HASH_ENTRIES: usize = 1024;
/// Most bytes of a presence hash's field: a host id (16 hex digits, or
/// `specific.` and 32 hex digits and `!` over the core layer).
pub(super) const MAX_HOST_ID: usize = 128;
/// Most bytes of a host's entry: `{"connections":n,"seen_ms":t}`, two
/// numbers of at most 20 digits.
pub(super) const MAX_HOST_ENTRY: usize = 256;
/// Most bytes of a member count: a number of at most 20 digits.
pub(super) const MAX_COUNT: usize = 32;

/// The group send's read of a group's sorted set (`KEYS[1]`): drops the
/// memberships scored at most `ARGV[1]` (expired), then reads the others
/// in order of score, as channels_redis's `group_send` does, a chunk at a
/// time, looking at the first `ARGV[2]` only: a name longer than
/// `ARGV[3]` bytes, or past `ARGV[4]` bytes of names in all, is left out.
/// Returns how many were left out and the names read.
const GROUP_CHANNELS: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, ARGV[1])
local most = tonumber(ARGV[2])
local longest = tonumber(ARGV[3])
local budget = tonumber(ARGV[4])
local chunk = tonumber(ARGV[5])
local total = redis.call('ZCARD', KEYS[1])
local names = {}
local start = 0
while start < total and start < most and budget > 0 do
    local stop = math.min(start + chunk, most) - 1
    local batch = redis.call('ZRANGE', KEYS[1], start, stop)
    if #batch == 0 then
        break
    end
    for i = 1, #batch do
        local name = batch[i]
        if #name <= longest and #name <= budget then
            names[#names + 1] = name
            budget = budget - #name
        end
    end
    start = start + #batch
end
return {total - #names, names}
";

/// Reads of hashes (`KEYS`): for each, at most `ARGV[1]` entries, of as
/// many fields as Redis picks (all of a smaller hash); an entry whose
/// field is longer than `ARGV[2]` bytes or whose value is longer than
/// `ARGV[2 + i]` bytes (for `KEYS[i]`) is left out. The fields are picked
/// without their values (`HRANDFIELD`) and a value is measured before it
/// is read (`HSTRLEN`): a scan copies every value it passes into the
/// script, and one value of 50 MB took Redis a quarter of a second per
/// read, blocking every other client, where this takes under 10 ms.
/// Redis before 6.2 has no `HRANDFIELD`: there the script scans, looking
/// at `ARGV[1]` entries (and what the last scan step brought).
/// Returns, for each hash, how many entries were left out and the fields
/// and values read, one after the other.
const HASHES: &str = r"
local most = tonumber(ARGV[1])
local longest = tonumber(ARGV[2])
local replies = {}
for k = 1, #KEYS do
    local longest_value = tonumber(ARGV[2 + k])
    local entries = {}
    local taken = 0
    local take = function(field, value)
        if taken < most and #field <= longest and #value <= longest_value then
            entries[#entries + 1] = field
            entries[#entries + 1] = value
            taken = taken + 1
        end
    end
    local fields = redis.pcall('HRANDFIELD', KEYS[k], most)
    if type(fields) == 'table' and fields.err == nil then
        for i = 1, #fields do
            local field = fields[i]
            if #field <= longest and redis.call('HSTRLEN', KEYS[k], field) <= longest_value then
                take(field, redis.call('HGET', KEYS[k], field))
            end
        end
    else
        local seen = 0
        local cursor = '0'
        repeat
            local scan = redis.call('HSCAN', KEYS[k], cursor, 'COUNT', 128)
            cursor = scan[1]
            local batch = scan[2]
            for i = 1, #batch, 2 do
                seen = seen + 1
                take(batch[i], batch[i + 1])
            end
        until cursor == '0' or seen >= most
    end
    replies[k] = {math.max(redis.call('HLEN', KEYS[k]) - taken, 0), entries}
end
return replies
";

static GROUP_CHANNELS_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(GROUP_CHANNELS));
static HASHES_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(HASHES));

/// What a bounded read got, and how many entries it left out.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Bounded<T> {
    pub entries: T,
    pub left_out: u64,
}

/// The channels of the group whose set is `key`, in order of score,
/// after the memberships scored at most `expired` are dropped: Channels'
/// names (fewer than 100 characters of UTF-8), within [`MAX_GROUP_CHANNELS`]
/// and [`MAX_GROUP_BYTES`].
pub(super) async fn group_channels(
    connection: &mut Connection,
    key: &str,
    expired: i64,
) -> redis::RedisResult<Bounded<Vec<String>>> {
    let (left_out, names): (u64, Vec<Vec<u8>>) = GROUP_CHANNELS_SCRIPT
        .key(key)
        .arg(expired)
        .arg(MAX_GROUP_CHANNELS)
        .arg(MAX_CHANNEL_NAME)
        .arg(MAX_GROUP_BYTES)
        .arg(GROUP_CHUNK)
        .invoke_async(connection)
        .await?;
    Ok(channel_names(left_out, names))
}

/// The names a script read, within the bounds again (a script of another
/// version could have read more) and in UTF-8; the others are left out.
fn channel_names(left_out: u64, names: Vec<Vec<u8>>) -> Bounded<Vec<String>> {
    let read = names.len();
    let mut budget = MAX_GROUP_BYTES;
    let entries: Vec<String> = names
        .into_iter()
        .take(MAX_GROUP_CHANNELS)
        .filter(|name| name.len() <= MAX_CHANNEL_NAME)
        .filter_map(|name| String::from_utf8(name).ok())
        .filter(|name| {
            let fits = name.len() <= budget;
            if fits {
                budget -= name.len();
            }
            fits
        })
        .collect();
    let left_out = left_out.saturating_add((read - entries.len()) as u64);
    Bounded { entries, left_out }
}

/// A presence hash to read: its key and the most bytes of one value.
pub(super) struct HashRead<'a> {
    pub key: &'a str,
    pub longest_value: usize,
}

/// The entries of each hash of `reads` (all in one slot on a Redis
/// Cluster), at most [`MAX_HASH_ENTRIES`] of each, fields within
/// [`MAX_HOST_ID`] bytes and values within each read's bound, in UTF-8.
pub(super) async fn hashes(
    connection: &mut Connection,
    reads: &[HashRead<'_>],
) -> redis::RedisResult<Vec<Bounded<HashMap<String, String>>>> {
    let mut invocation = HASHES_SCRIPT.prepare_invoke();
    for read in reads {
        invocation.key(read.key);
    }
    invocation.arg(MAX_HASH_ENTRIES).arg(MAX_HOST_ID);
    for read in reads {
        invocation.arg(read.longest_value);
    }
    let replies: Vec<(u64, Vec<Vec<u8>>)> = invocation.invoke_async(connection).await?;
    Ok(replies
        .into_iter()
        .zip(reads)
        .map(|((left_out, flat), read)| hash_entries(left_out, flat, read.longest_value))
        .collect())
}

/// A hash's entries from the fields and values a script read one after
/// the other, within the bounds again and in UTF-8; the others are left
/// out.
fn hash_entries(
    left_out: u64,
    flat: Vec<Vec<u8>>,
    longest_value: usize,
) -> Bounded<HashMap<String, String>> {
    let mut entries = HashMap::new();
    let mut dropped = (flat.len() % 2) as u64;
    let mut items = flat.into_iter();
    while let (Some(field), Some(value)) = (items.next(), items.next()) {
        let fits = entries.len() < MAX_HASH_ENTRIES
            && field.len() <= MAX_HOST_ID
            && value.len() <= longest_value;
        match (fits, String::from_utf8(field), String::from_utf8(value)) {
            (true, Ok(field), Ok(value)) => {
                entries.insert(field, value);
            }
            _ => dropped += 1,
        }
    }
    Bounded {
        entries,
        left_out: left_out.saturating_add(dropped),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_keep_their_order_and_bounds() {
        let names = vec![
            b"specific.a!1".to_vec(),
            b"specific.b!2".to_vec(),
            b"\xff\xfe".to_vec(),
            vec![b'x'; MAX_CHANNEL_NAME + 1],
            b"specific.a!3".to_vec(),
        ];
        let read = channel_names(7, names);
        assert_eq!(
            read.entries,
            ["specific.a!1", "specific.b!2", "specific.a!3"]
        );
        assert_eq!(read.left_out, 9, "7 left in Redis, 2 here");
    }

    #[test]
    fn channel_names_past_the_count_or_bytes_are_left_out() {
        let many = vec![b"c".to_vec(); MAX_GROUP_CHANNELS + 5];
        let read = channel_names(0, many);
        assert_eq!(read.entries.len(), MAX_GROUP_CHANNELS);
        assert_eq!(read.left_out, 5);
        let long = vec![vec![b'n'; MAX_CHANNEL_NAME]; MAX_GROUP_BYTES / MAX_CHANNEL_NAME + 3];
        let read = channel_names(0, long);
        assert_eq!(read.entries.len(), MAX_GROUP_BYTES / MAX_CHANNEL_NAME);
        assert_eq!(read.left_out, 3);
    }

    #[test]
    fn hash_entries_pair_fields_and_values_within_bounds() {
        let flat = vec![
            b"a".to_vec(),
            b"1".to_vec(),
            b"b".to_vec(),
            b"\xff".to_vec(),
            vec![b'h'; MAX_HOST_ID + 1],
            b"2".to_vec(),
            b"c".to_vec(),
            b"12345".to_vec(),
            b"d".to_vec(),
            b"3".to_vec(),
            b"odd".to_vec(),
        ];
        let read = hash_entries(4, flat, 4);
        let expected: HashMap<String, String> = [("a", "1"), ("d", "3")]
            .into_iter()
            .map(|(f, v)| (f.to_owned(), v.to_owned()))
            .collect();
        assert_eq!(read.entries, expected);
        assert_eq!(
            read.left_out,
            4 + 3 + 1,
            "in Redis, over a bound here, unpaired"
        );
    }

    #[test]
    fn hash_entries_past_the_count_are_left_out() {
        let flat: Vec<Vec<u8>> = (0..MAX_HASH_ENTRIES + 2)
            .flat_map(|n| [n.to_string().into_bytes(), b"1".to_vec()])
            .collect();
        let read = hash_entries(0, flat, MAX_COUNT);
        assert_eq!(read.entries.len(), MAX_HASH_ENTRIES);
        assert_eq!(read.left_out, 2);
    }
}
