//! How many WebSockets one client address may hold open, off by default.
//! Why: `--max-connections` bounds everyone together, so a single address
//! could take every place. (The other limit per client, a connection's
//! message rate, is [`crate::conn::rate`].)

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
};

/// Open WebSockets per client address.
pub(crate) struct PerClient {
    limit: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One client's place; given back when dropped (the connection ended).
pub(crate) struct ClientSlot {
    per_client: Arc<PerClient>,
    client: IpAddr,
}

impl PerClient {
    /// `limit` connections per address; `None` for 0 (no limit).
    pub(crate) fn new(limit: usize) -> Option<Arc<PerClient>> {
        (limit > 0).then(|| {
            Arc::new(PerClient {
                limit,
                open: Mutex::new(HashMap::new()),
            })
        })
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    fn open(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place for one more connection of `client`, if it has one left.
    pub(crate) fn admit(self: &Arc<Self>, client: IpAddr) -> Option<ClientSlot> {
        let mut open = self.open();
        let count = open.entry(client).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(ClientSlot {
            per_client: self.clone(),
            client,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.per_client.open();
        if let Some(count) = open.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_per_client_are_counted_and_given_back() {
        let per_client = PerClient::new(2).expect("a limit");
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        let first = per_client.admit(a).expect("a place");
        let _second = per_client.admit(a).expect("a place");
        assert!(per_client.admit(a).is_none());
        assert!(per_client.admit(b).is_some(), "others are not affected");
        drop(first);
        assert!(per_client.admit(a).is_some());
        assert!(PerClient::new(0).is_none());
    }
}
