//! One WebSocket connection: read a frame, answer it, repeat.
//!
//! Requests of a connection are handled one after another, so replies leave
//! in request order; a slow handler holds up only its own connection. The
//! task owns the socket and nothing else that grows: an idle connection
//! costs its socket buffers and this future.

use std::sync::Arc;

use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket};
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite;
use tracing::debug;

use crate::{
    dispatch::{Dispatcher, Outbound},
    protocol::Rejection,
};

/// Serves one upgraded connection until it closes.
pub async fn serve(mut socket: WebSocket, dispatcher: Arc<Dispatcher>, scope: Arc<str>, id: u64) {
    while let Some(received) = socket.recv().await {
        let message = match received {
            Ok(message) => message,
            Err(error) => {
                if is_too_big(error) {
                    debug!(
                        connection = id,
                        "frame over the size limit; closing with 1009"
                    );
                    let _ = socket
                        .send(Message::Close(Some(CloseFrame {
                            code: close_code::SIZE,
                            reason: "Message too big.".into(),
                        })))
                        .await;
                }
                break;
            }
        };
        let replies = match message {
            Message::Text(text) => dispatcher.handle_text(text, &scope).await,
            Message::Binary(_) => vec![Outbound::Text(Rejection::Binary.reply())],
            // Pings are answered by the WebSocket layer itself; a client's
            // close is echoed by it on the next flush.
            Message::Ping(_) | Message::Pong(_) => continue,
            Message::Close(_) => {
                let _ = socket.flush().await;
                continue;
            }
        };
        if !send_replies(&mut socket, replies).await {
            break;
        }
    }
    debug!(connection = id, "connection closed");
}

/// Writes the replies to one request; false when the connection is done.
async fn send_replies(socket: &mut WebSocket, replies: Vec<Outbound>) -> bool {
    for reply in replies {
        let sent = match reply {
            Outbound::Text(text) => socket.feed(Message::Text(text.into())).await,
            Outbound::Close => {
                let _ = socket
                    .send(Message::Close(Some(CloseFrame {
                        code: close_code::NORMAL,
                        reason: "".into(),
                    })))
                    .await;
                return false;
            }
        };
        if sent.is_err() {
            return false;
        }
    }
    socket.flush().await.is_ok()
}

fn is_too_big(error: axum::Error) -> bool {
    matches!(
        error.into_inner().downcast_ref::<tungstenite::Error>(),
        Some(tungstenite::Error::Capacity(_))
    )
}
