//! Group sizes for the status page: the largest groups of this host and a
//! search by name, each bounded in what it returns. Both read the
//! membership once under its lock and keep only the best few (a small heap,
//! a name copied only when it enters), so an answer costs one pass over the
//! groups and never grows with their number.

use std::{cmp::Reverse, collections::BinaryHeap};

use serde::Serialize;

use crate::groups::MemoryGroups;

/// How many groups `/api/stats` lists.
pub(crate) const LARGEST: usize = 20;
/// The most groups one answer lists.
pub(crate) const MAX_LIMIT: usize = 100;
/// The longest search text, in bytes.
pub(crate) const MAX_SEARCH: usize = 200;

/// A group and its members on this host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct GroupSize {
    pub name: String,
    pub members: usize,
}

/// The answer: the groups that matched, how many did, how many there are.
#[derive(Debug, Serialize)]
pub(crate) struct Sizes {
    /// Groups with members on this host.
    pub count: usize,
    /// Groups that matched the search (all of them without one).
    pub matched: usize,
    /// The largest of those, at most the limit: most members first, then
    /// by name.
    pub groups: Vec<GroupSize>,
}

/// Orders groups best first: more members, then the smaller name.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Rank(usize, Reverse<String>);

/// The `limit` largest groups whose name contains `search` (ASCII
/// case-insensitive; empty: every group).
pub(crate) fn largest(groups: &MemoryGroups, search: &str, limit: usize) -> Sizes {
    let needle = search.as_bytes();
    let mut count = 0;
    let mut matched = 0;
    // A min-heap of the best `limit`: its top is the first to go.
    let mut best: BinaryHeap<Reverse<Rank>> = BinaryHeap::with_capacity(limit + 1);
    groups.visit_sizes(|name, members| {
        count += 1;
        if !contains_ignoring_case(name.as_bytes(), needle) {
            return;
        }
        matched += 1;
        if limit == 0 {
            return;
        }
        if best.len() == limit {
            let Some(Reverse(worst)) = best.peek() else {
                return;
            };
            let better = members > worst.0 || (members == worst.0 && name < worst.1 .0.as_str());
            if !better {
                return;
            }
            best.pop();
        }
        best.push(Reverse(Rank(members, Reverse(name.to_owned()))));
    });
    let mut groups: Vec<GroupSize> = best
        .into_iter()
        .map(|Reverse(Rank(members, Reverse(name)))| GroupSize { name, members })
        .collect();
    groups.sort_by(|a, b| b.members.cmp(&a.members).then_with(|| a.name.cmp(&b.name)));
    Sizes {
        count,
        matched,
        groups,
    }
}

fn contains_ignoring_case(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty()
        || haystack
            .windows(needle.len())
            .any(|window| window.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;

    use super::*;
    use crate::{
        groups::{ConnectionId, QueueLimits},
        socket::outbound::outbound_queue,
    };

    fn with_sizes(sizes: &[(&str, usize)]) -> MemoryGroups {
        let groups = MemoryGroups::default();
        let limits = QueueLimits {
            messages: 8,
            bytes: 1 << 20,
        };
        let (outbox, _inbox) = outbound_queue(limits, Counter::default(), None);
        let mut id: ConnectionId = 0;
        for (name, members) in sizes {
            for _ in 0..*members {
                id += 1;
                groups.add(name, id, &outbox);
            }
        }
        groups
    }

    fn names(sizes: &Sizes) -> Vec<(&str, usize)> {
        sizes
            .groups
            .iter()
            .map(|g| (g.name.as_str(), g.members))
            .collect()
    }

    #[test]
    fn the_largest_first_ties_by_name_bounded() {
        let groups = with_sizes(&[("b", 3), ("a", 3), ("c", 1), ("d", 5), ("e", 2)]);
        let top = largest(&groups, "", 3);
        assert_eq!((top.count, top.matched), (5, 5));
        assert_eq!(names(&top), [("d", 5), ("a", 3), ("b", 3)]);
        assert_eq!(largest(&groups, "", 0).groups, []);
        assert_eq!(largest(&groups, "", 100).groups.len(), 5);
    }

    #[test]
    fn search_is_a_substring_ignoring_ascii_case() {
        let groups = with_sizes(&[("Room-1", 2), ("room-22", 1), ("lobby", 4)]);
        let found = largest(&groups, "ROOM", 10);
        assert_eq!((found.count, found.matched), (3, 2));
        assert_eq!(names(&found), [("Room-1", 2), ("room-22", 1)]);
        assert_eq!(largest(&groups, "m-2", 10).matched, 1);
        assert_eq!(largest(&groups, "nothing", 10).matched, 0);
        let limited = largest(&groups, "o", 1);
        assert_eq!((limited.matched, names(&limited)), (3, vec![("lobby", 4)]));
    }
}
