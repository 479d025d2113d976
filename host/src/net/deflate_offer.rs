//! Negotiating permessage-deflate (RFC 7692, sections 5 to 7) in the
//! handshake: the first offer the server can honour is accepted, the
//! others are declined, and a client that offers nothing, or only
//! extensions the server does not know, gets no extension.
//!
//! The answer always carries `server_no_context_takeover` and
//! `client_no_context_takeover` (the RFC lets a server add both to any
//! offer it accepts, 7.1.1.1 and 7.1.1.2): every compressed message then
//! stands alone, so a group message is compressed once for all members and
//! no connection keeps a deflate or inflate state between messages (see
//! [`crate::socket::deflate`]). The client's window (`client_max_window_bits`)
//! needs no answer: the server inflates with the largest window, which
//! reads what any smaller one wrote. The server's window is the smaller of
//! its setting and the client's `server_max_window_bits`; zlib writes no
//! raw DEFLATE with an 8-bit window, so an offer that asks for 8 is
//! declined.

use axum::http::HeaderValue;

use crate::socket::deflate::{Deflate, MAX_WINDOW_BITS, MIN_WINDOW_BITS};

/// The extension's name in the handshake.
const NAME: &str = "permessage-deflate";

/// What one acceptable offer asks of the server.
#[derive(Debug, Default, PartialEq, Eq)]
struct Offer {
    /// `server_max_window_bits`, when the client limits the server's window.
    server_max_window_bits: Option<u8>,
}

/// The settings a connection compresses with, and the
/// `Sec-WebSocket-Extensions` answer, for the first offer in `offers` (the
/// request's header values) that `server` can honour; `None` when there is
/// none.
pub(crate) fn negotiate<'a>(
    offers: impl Iterator<Item = &'a HeaderValue>,
    server: Deflate,
) -> Option<(Deflate, String)> {
    offers
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(parse_offer)
        .find_map(|offer| accept(&offer, server))
}

/// The answer to `offer`, unless it asks for what the server cannot do.
fn accept(offer: &Offer, server: Deflate) -> Option<(Deflate, String)> {
    let mut answer = format!("{NAME}; server_no_context_takeover; client_no_context_takeover");
    let mut window_bits = server.window_bits.clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS);
    if let Some(bits) = offer.server_max_window_bits {
        window_bits = window_bits.min(bits);
        if window_bits < MIN_WINDOW_BITS {
            return None;
        }
        answer.push_str(&format!("; server_max_window_bits={window_bits}"));
    }
    Some((
        Deflate {
            window_bits,
            ..server
        },
        answer,
    ))
}

/// One element of the extension list, when it is a valid permessage-deflate
/// offer (section 7.1: known parameters, each at most once, with valid
/// values).
fn parse_offer(element: &str) -> Option<Offer> {
    let mut parts = element.split(';');
    let name = parts.next()?.trim();
    if !name.eq_ignore_ascii_case(NAME) {
        return None;
    }
    let mut offer = Offer::default();
    let mut seen = [false; 4];
    for param in parts {
        let (key, value) = match param.split_once('=') {
            Some((key, value)) => (key.trim(), Some(unquote(value.trim())?)),
            None => (param.trim(), None),
        };
        let index = match key {
            "server_no_context_takeover" => 0,
            "client_no_context_takeover" => 1,
            "server_max_window_bits" => 2,
            "client_max_window_bits" => 3,
            _ => return None,
        };
        if std::mem::replace(&mut seen[index], true) {
            return None;
        }
        match (index, value) {
            (0 | 1, None) => {}
            (2, Some(value)) => offer.server_max_window_bits = Some(window_bits(value)?),
            (3, None) => {}
            (3, Some(value)) => {
                window_bits(value)?;
            }
            _ => return None,
        }
    }
    Some(offer)
}

/// A quoted-string's content, or a token as it is.
fn unquote(value: &str) -> Option<&str> {
    match value.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"'),
        None => Some(value),
    }
}

/// A window size: a decimal from 8 to 15, without leading zeros.
fn window_bits(value: &str) -> Option<u8> {
    if value.is_empty() || value.starts_with('0') || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok().filter(|bits| (8..=15).contains(bits))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: Deflate = Deflate {
        threshold: 512,
        window_bits: 15,
        level: 6,
    };

    fn answer(offers: &[&str]) -> Option<(u8, String)> {
        let values: Vec<HeaderValue> = offers
            .iter()
            .map(|o| HeaderValue::from_str(o).expect("a header value"))
            .collect();
        negotiate(values.iter(), SERVER).map(|(deflate, answer)| (deflate.window_bits, answer))
    }

    const PLAIN: &str =
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

    #[test]
    fn what_browsers_offer_is_accepted() {
        assert_eq!(
            answer(&["permessage-deflate; client_max_window_bits"]),
            Some((15, PLAIN.to_owned()))
        );
        assert_eq!(
            answer(&["permessage-deflate"]),
            Some((15, PLAIN.to_owned()))
        );
    }

    #[test]
    fn the_servers_window_follows_the_client() {
        assert_eq!(
            answer(&["permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"]),
            Some((12, format!("{PLAIN}; server_max_window_bits=12")))
        );
        assert_eq!(
            answer(&["permessage-deflate; server_max_window_bits=\"10\""]),
            Some((10, format!("{PLAIN}; server_max_window_bits=10")))
        );
    }

    #[test]
    fn an_offer_it_cannot_honour_is_declined_for_the_next() {
        assert_eq!(
            answer(&["permessage-deflate; server_max_window_bits=8, permessage-deflate"]),
            Some((15, PLAIN.to_owned()))
        );
        assert_eq!(
            answer(&["permessage-deflate; server_max_window_bits=8"]),
            None
        );
    }

    #[test]
    fn invalid_offers_are_declined() {
        for offer in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; unknown_parameter",
            "x-webkit-deflate-frame",
            "",
        ] {
            assert_eq!(answer(&[offer]), None, "{offer}");
        }
        assert_eq!(answer(&[]), None);
    }

    #[test]
    fn other_extensions_are_passed_over() {
        assert_eq!(
            answer(&[
                "foo; bar=1",
                "permessage-deflate; client_no_context_takeover"
            ]),
            Some((15, PLAIN.to_owned()))
        );
    }
}
