//! The backend's address without a thread per call.
//!
//! ureq resolves the backend's host on every call, and with a timeout set
//! (ours always is) it does so on a thread of its own, to be able to give
//! up: one new thread per call, which cost more CPU than the rest of the
//! call. The backend is an address literal (`127.0.0.1:8001`) in most
//! deployments, which needs no lookup at all; a name is looked up as ureq
//! does and kept for [`KEPT_FOR`], so that a moved backend is found again
//! soon.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use ureq::{
    config::Config,
    http::Uri,
    unversioned::{
        resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver},
        transport::NextTimeout,
    },
    Error,
};

/// How long a looked-up name's addresses are used.
pub const KEPT_FOR: Duration = Duration::from_secs(5);

/// Names kept at most (a plugin talks to a few URLs).
const MAX_NAMES: usize = 16;

/// Address literals parsed, names looked up by ureq's own resolver and
/// kept a little while.
#[derive(Debug, Default)]
pub struct BackendResolver {
    lookups: DefaultResolver,
    kept: Mutex<HashMap<String, (Instant, ResolvedSocketAddrs)>>,
}

impl Resolver for BackendResolver {
    fn resolve(
        &self,
        uri: &Uri,
        config: &Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, Error> {
        let port = uri
            .port_u16()
            .or_else(|| (uri.scheme_str() == Some("http")).then_some(80));
        let (Some(authority), Some(port)) = (uri.authority(), port) else {
            // Let ureq say what is wrong with it.
            return self.lookups.resolve(uri, config, timeout);
        };
        let host = authority.host();
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = literal.parse() {
            let mut addrs = self.empty();
            addrs.push(SocketAddr::new(ip, port));
            return Ok(addrs);
        }
        let key = format!("{host}:{port}");
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, addrs)) = kept.get(&key) {
            if at.elapsed() < KEPT_FOR {
                return Ok(addrs.clone());
            }
        }
        drop(kept);
        let addrs = self.lookups.resolve(uri, config, timeout)?;
        kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() >= MAX_NAMES {
            kept.clear();
        }
        kept.insert(key, (Instant::now(), addrs.clone()));
        Ok(addrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved(url: &str) -> Vec<SocketAddr> {
        let uri: Uri = url.parse().expect("a URI");
        BackendResolver::default()
            .resolve(&uri, &Config::default(), NextTimeout::default())
            .expect("resolved")
            .iter()
            .copied()
            .collect()
    }

    #[test]
    fn address_literals_are_parsed() {
        assert_eq!(
            resolved("http://127.0.0.1:8001/rohrpost/"),
            vec!["127.0.0.1:8001".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(
            resolved("http://[::1]:9000/"),
            vec!["[::1]:9000".parse::<SocketAddr>().unwrap()]
        );
    }

    #[test]
    fn names_are_looked_up() {
        let found = resolved("http://localhost:8001/");
        assert!(!found.is_empty());
        assert!(found
            .iter()
            .all(|a| a.port() == 8001 && a.ip().is_loopback()));
    }
}
