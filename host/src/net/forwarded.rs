//! Who the client is when the server sits behind a reverse proxy.
//!
//! Behind nginx or a load balancer every connection comes from the proxy's
//! address. When the peer is one of the `--trusted-proxies`, the client's
//! address is read from `Forwarded` (RFC 7239) or else `X-Forwarded-For`:
//! the right-most hop that is not itself a trusted proxy (hops to its left
//! are whatever the client chose to send, and cannot be believed), and
//! whether the client used TLS from `proto=` or `X-Forwarded-Proto`. From
//! any other peer these headers are ignored: anyone can send them.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;

use crate::base::networks::canonical;
pub(crate) use crate::base::networks::TrustedProxies;

/// The client behind a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Client {
    /// Its address: the peer's, or the one a trusted proxy reported (then
    /// with the port only where the proxy gave one).
    pub addr: ClientAddr,
    /// Whether it spoke TLS (to the proxy, when there is one).
    pub secure: bool,
}

/// A client's address, with or without a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientAddr {
    Socket(SocketAddr),
    Ip(IpAddr),
}

impl ClientAddr {
    pub(crate) fn ip(&self) -> IpAddr {
        match self {
            ClientAddr::Socket(addr) => addr.ip(),
            ClientAddr::Ip(ip) => *ip,
        }
    }
}

impl std::fmt::Display for ClientAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientAddr::Socket(addr) => addr.fmt(f),
            ClientAddr::Ip(ip) => ip.fmt(f),
        }
    }
}

/// One hop of a forwarding header: its address (none when the proxy hid
/// it: `unknown`, an obfuscated name) and the scheme it reported.
struct Hop {
    addr: Option<ClientAddr>,
    proto: Option<String>,
}

/// The client of a connection from `peer` that sent `headers`.
pub(crate) fn client(peer: SocketAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> Client {
    let direct = Client {
        addr: ClientAddr::Socket(peer),
        secure: false,
    };
    if trusted.is_empty() || !trusted.contains(peer.ip()) {
        return direct;
    }
    let mut hops = forwarded_hops(headers);
    if hops.is_empty() {
        hops = x_forwarded_hops(headers);
    }
    // The nearest proxy reports the scheme of the hop it received.
    let mut secure = hops
        .last()
        .and_then(|hop| hop.proto.as_deref())
        .map(|proto| proto.eq_ignore_ascii_case("https") || proto.eq_ignore_ascii_case("wss"));
    let mut addr = ClientAddr::Socket(peer);
    for hop in hops.iter().rev() {
        let Some(hop_addr) = hop.addr else {
            // A hidden hop: nothing further left can be traced.
            break;
        };
        addr = hop_addr;
        if let Some(proto) = hop.proto.as_deref() {
            secure = Some(proto.eq_ignore_ascii_case("https") || proto.eq_ignore_ascii_case("wss"));
        }
        if !trusted.contains(hop_addr.ip()) {
            break;
        }
    }
    Client {
        addr,
        secure: secure.unwrap_or(false),
    }
}

/// The hops of `Forwarded`, left to right (every such header in order).
fn forwarded_hops(headers: &HeaderMap) -> Vec<Hop> {
    let mut hops = Vec::new();
    for value in headers.get_all("forwarded") {
        let Ok(value) = value.to_str() else { continue };
        for element in value.split(',') {
            let mut hop = Hop {
                addr: None,
                proto: None,
            };
            let mut has_for = false;
            for pair in element.split(';') {
                let Some((key, val)) = pair.split_once('=') else {
                    continue;
                };
                let val = val.trim().trim_matches('"');
                match key.trim().to_ascii_lowercase().as_str() {
                    "for" => {
                        has_for = true;
                        hop.addr = parse_node(val);
                    }
                    "proto" => hop.proto = Some(val.to_owned()),
                    _ => {}
                }
            }
            if has_for {
                hops.push(hop);
            }
        }
    }
    hops
}

/// The hops of `X-Forwarded-For`, left to right, the last with the scheme
/// of `X-Forwarded-Proto`.
fn x_forwarded_hops(headers: &HeaderMap) -> Vec<Hop> {
    let mut hops: Vec<Hop> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|node| !node.is_empty())
        .map(|node| Hop {
            addr: parse_node(node),
            proto: None,
        })
        .collect();
    let proto = headers
        .get_all("x-forwarded-proto")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .rfind(|proto| !proto.is_empty());
    if let (Some(last), Some(proto)) = (hops.last_mut(), proto) {
        last.proto = Some(proto.to_owned());
    }
    hops
}

/// `192.0.2.1`, `192.0.2.1:4711`, `[2001:db8::1]`, `[2001:db8::1]:4711`,
/// `2001:db8::1`; `None` for `unknown` and obfuscated names.
fn parse_node(node: &str) -> Option<ClientAddr> {
    if let Ok(addr) = node.parse::<SocketAddr>() {
        return Some(ClientAddr::Socket(SocketAddr::new(
            canonical(addr.ip()),
            addr.port(),
        )));
    }
    let bare = node.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>()
        .ok()
        .map(|ip| ClientAddr::Ip(canonical(ip)))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    fn peer(text: &str) -> SocketAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn networks_parse_and_match() {
        let trusted = TrustedProxies::parse("10.0.0.0/8, 127.0.0.1, fd00::/8").expect("valid");
        assert!(trusted.contains("10.1.2.3".parse().expect("ip")));
        assert!(trusted.contains("127.0.0.1".parse().expect("ip")));
        assert!(trusted.contains("::ffff:127.0.0.1".parse().expect("ip")));
        assert!(trusted.contains("fd12::1".parse().expect("ip")));
        assert!(!trusted.contains("11.0.0.1".parse().expect("ip")));
        assert!(!trusted.contains("127.0.0.2".parse().expect("ip")));
        assert!(TrustedProxies::parse("").expect("none").is_empty());
        assert!(TrustedProxies::parse("0.0.0.0/0")
            .expect("all")
            .contains("8.8.8.8".parse().expect("ip")));
        for bad in ["10.0.0.0/33", "nope", "::1/129", "10.0.0.0/x"] {
            assert!(TrustedProxies::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn headers_from_an_untrusted_peer_are_ignored() {
        let trusted = TrustedProxies::parse("127.0.0.1").expect("valid");
        let h = headers(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
        ]);
        let client = client(peer("192.0.2.9:5000"), &h, &trusted);
        assert_eq!(client.addr, ClientAddr::Socket(peer("192.0.2.9:5000")));
        assert!(!client.secure);
        let nobody = client_of(&h, &TrustedProxies::default());
        assert_eq!(nobody.addr.to_string(), "127.0.0.1:5000");
    }

    fn client_of(h: &HeaderMap, trusted: &TrustedProxies) -> Client {
        client(peer("127.0.0.1:5000"), h, trusted)
    }

    #[test]
    fn the_right_most_untrusted_hop_is_the_client() {
        let trusted = TrustedProxies::parse("127.0.0.1, 10.0.0.0/8").expect("valid");
        // The client claims 6.6.6.6; the first proxy saw 1.2.3.4.
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6, 1.2.3.4"),
            ("x-forwarded-for", "10.0.0.2"),
            ("x-forwarded-proto", "https"),
        ]);
        let client = client_of(&h, &trusted);
        assert_eq!(client.addr, ClientAddr::Ip("1.2.3.4".parse().expect("ip")));
        assert!(client.secure);
        // Only proxies: the left-most.
        let client = client_of(
            &headers(&[("x-forwarded-for", "10.0.0.3, 10.0.0.2")]),
            &trusted,
        );
        assert_eq!(client.addr.to_string(), "10.0.0.3");
        // No header: the peer.
        assert_eq!(
            client_of(&HeaderMap::new(), &trusted).addr.to_string(),
            "127.0.0.1:5000"
        );
    }

    #[test]
    fn forwarded_is_read_with_ports_brackets_and_unknown_hops() {
        let trusted = TrustedProxies::parse("127.0.0.1").expect("valid");
        let h = headers(&[(
            "forwarded",
            "for=6.6.6.6, for=\"[2001:db8::1]:4711\";proto=https, for=127.0.0.1;proto=http",
        )]);
        let client = client_of(&h, &trusted);
        assert_eq!(client.addr.to_string(), "[2001:db8::1]:4711");
        assert!(client.secure);
        let hidden = headers(&[("forwarded", "for=1.2.3.4, for=unknown")]);
        // Nothing can be traced past a hidden hop: the peer stays.
        assert_eq!(
            client_of(&hidden, &trusted).addr.to_string(),
            "127.0.0.1:5000"
        );
    }
}
