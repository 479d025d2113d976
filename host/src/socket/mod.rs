//! A client's WebSocket, after the handshake: frames read in place
//! ([`reader`], over [`frame`]), the connection's own writes ([`writer`]),
//! the socket's writing side shared with the group fan-out ([`line`]),
//! the group messages waiting for a busy connection ([`outbound`]), the
//! buffers lent to all of them while they have bytes ([`buffers`]), and
//! permessage-deflate ([`deflate`], and [`group_frames`] for a group
//! message compressed once for all its members).

pub(crate) mod buffers;
pub(crate) mod deflate;
pub(crate) mod frame;
pub(crate) mod group_frames;
pub(crate) mod line;
pub(crate) mod outbound;
pub(crate) mod reader;
pub(crate) mod writer;

use std::sync::Arc;

use tokio::net::TcpStream;

use self::{deflate::Deflate, line::Line, reader::Reader, writer::Writer};

/// An upgraded connection's two halves.
pub(crate) struct Socket {
    pub reader: Reader,
    pub writer: Writer,
}

impl Socket {
    /// The WebSocket on `stream`, whose first bytes (`already`) came with
    /// the handshake; messages up to `max_message` bytes, read `read_size`
    /// bytes at a time; compressed as `deflate` says when the handshake
    /// negotiated permessage-deflate.
    pub(crate) fn new(
        stream: TcpStream,
        already: Vec<u8>,
        max_message: usize,
        read_size: usize,
        deflate: Option<Deflate>,
    ) -> Self {
        let (read, write) = stream.into_split();
        Socket {
            reader: Reader::new(read, already, max_message, read_size, deflate.is_some()),
            writer: Writer::new(Arc::new(Line::new(write, deflate))),
        }
    }
}
