//! Writing to a client: the stream a connection shares with the group
//! fan-out ([`stream`]) and the outbound queue of group messages waiting for
//! a busy connection, with its limits ([`outbound`]).

pub(crate) mod outbound;
pub(crate) mod stream;

/// An upgraded connection, on its TCP stream (shared with the fan-out once
/// it joined a group, see [`stream`]).
pub(crate) type Socket = tokio_tungstenite::WebSocketStream<stream::SharedStream>;
