//! Writing to a client: the stream a connection shares with the group
//! fan-out ([`wire`]) and the outbound queue of group messages waiting for
//! a busy connection, with its limits ([`outbound`]).

pub(crate) mod outbound;
pub(crate) mod wire;

/// An upgraded connection, on its TCP stream (shared with the fan-out once
/// it joined a group, see [`wire`]).
pub(crate) type Socket = tokio_tungstenite::WebSocketStream<wire::Wire>;
