//! One WebSocket connection: read a frame, answer it, repeat.
//!
//! Requests of a connection are handled one after another, so replies leave
//! in request order; a slow handler holds up only its own connection. The
//! task owns the socket and nothing else that grows: an idle connection
//! costs its socket buffers and this future.

use std::{sync::Arc, time::Duration};

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
        match send_replies(&mut socket, replies).await {
            Ok(true) => {}
            Ok(false) => {
                close(socket, close_code::NORMAL, "").await;
                return;
            }
            Err(()) => break,
        }
    }
    debug!(connection = id, "connection closed");
}

/// Starts the closing handshake and waits briefly for the client's answer,
/// so that the close frame is read rather than lost to a reset.
async fn close(mut socket: WebSocket, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    if socket.send(Message::Close(Some(frame))).await.is_ok() {
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            while let Some(Ok(_)) = socket.recv().await {}
        })
        .await;
    }
}

/// How long a closing connection waits for the client's close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Writes the replies to one request. `Ok(false)`: a handler asked to close
/// the connection; `Err`: the connection is gone.
async fn send_replies(socket: &mut WebSocket, replies: Vec<Outbound>) -> Result<bool, ()> {
    for reply in replies {
        match reply {
            Outbound::Text(text) => socket
                .feed(Message::Text(text.into()))
                .await
                .map_err(|_| ())?,
            Outbound::Close => {
                socket.flush().await.map_err(|_| ())?;
                return Ok(false);
            }
        }
    }
    socket.flush().await.map_err(|_| ())?;
    Ok(true)
}

fn is_too_big(error: axum::Error) -> bool {
    matches!(
        error.into_inner().downcast_ref::<tungstenite::Error>(),
        Some(tungstenite::Error::Capacity(_))
    )
}
