//! The API server: a TCP listener on 127.0.0.1, the token check at the WebSocket handshake, and one
//! task per connection.
//!
//! [`ApiServer::bind`] picks a free port; [`ApiServer::run`] serves until its shutdown future
//! resolves, then closes every connection and waits for their tasks. Connection tasks never block:
//! method handlers move blocking work to the blocking pool. A connection must finish its WebSocket
//! handshake within [`HANDSHAKE_TIMEOUT`], and at most [`MAX_CONNECTIONS`] are served at once
//! (more wait in the listen backlog), so a local process cannot pin the server's tasks with idle
//! sockets.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::{Message as WsMessage, protocol::CloseFrame};

use super::methods::{Connection, Context};
use super::rpc::{self, Incoming, Message};
use super::{Token, methods};

/// The WebSocket path, as Moonraker names it.
pub const WEBSOCKET_PATH: &str = "/websocket";
/// How long a new connection may take to complete its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The most connections served at once.
pub const MAX_CONNECTIONS: usize = 64;

/// What went wrong starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The listening socket could not be opened.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// No random token could be drawn.
    #[error("cannot draw the API token from the system's random source: {0}")]
    Token(getrandom::Error),
}

/// Where and how to reach the server: what the shell hands to the webview.
#[derive(Debug, Clone, Serialize)]
pub struct Endpoint {
    /// `ws://127.0.0.1:PORT/websocket`.
    pub ws_url: String,
    /// The per-launch token to send as `?token=`.
    pub token: String,
}

impl Endpoint {
    /// The full URL a client connects to, token included.
    pub fn url_with_token(&self) -> String {
        format!("{}?token={}", self.ws_url, self.token)
    }
}

/// The local API server, bound and ready to run.
#[derive(Debug)]
pub struct ApiServer {
    listener: TcpListener,
    local_addr: SocketAddr,
    token: Token,
    handshake_timeout: Duration,
    context: Arc<Context>,
}

impl ApiServer {
    /// Binds 127.0.0.1 on a free port with a fresh token.
    ///
    /// # Errors
    /// When the socket cannot be opened or no token can be drawn.
    pub async fn bind_localhost() -> Result<Self, ApiError> {
        Self::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0)).await
    }

    /// Binds `addr` (port 0 picks a free one) with a fresh token.
    ///
    /// # Errors
    /// When the socket cannot be opened or no token can be drawn.
    pub async fn bind(addr: SocketAddr) -> Result<Self, ApiError> {
        let token = Token::generate().map_err(ApiError::Token)?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ApiError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| ApiError::Bind { addr, source })?;
        Ok(Self {
            listener,
            local_addr,
            token,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            context: Arc::new(Context::default()),
        })
    }

    /// Sets how long a connection may take to complete its handshake (tests shorten it).
    #[must_use]
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The URL and token a client needs.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint {
            ws_url: format!("ws://{}{WEBSOCKET_PATH}", self.local_addr),
            token: self.token.as_str().to_owned(),
        }
    }

    /// Serves the printers of `context` (the default: none).
    #[must_use]
    pub fn with_context(mut self, context: Arc<Context>) -> Self {
        self.context = context;
        self
    }

    /// Serves until `shutdown` resolves, then closes every connection and waits for them.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut connections = JoinSet::new();
        let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        tracing::info!(addr = %self.local_addr, "API server listening");
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                // Accept only with a free slot; further clients wait in the listen backlog.
                accepted = accept_with_slot(&self.listener, &slots) => match accepted {
                    Ok((stream, peer, slot)) => {
                        let token = self.token.clone();
                        let stop = stop_rx.clone();
                        let timeout = self.handshake_timeout;
                        let context = Arc::clone(&self.context);
                        connections.spawn(async move {
                            if let Err(e) = serve_connection(stream, token, stop, timeout, context).await {
                                tracing::debug!(%peer, error = %e, "API connection ended");
                            }
                            drop(slot);
                        });
                    }
                    Err(e) => tracing::warn!(error = %e, "API server: accept failed"),
                },
                // Reap finished connections so the set does not grow without bound.
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        tracing::info!("API server stopping");
        // A send error means no connection is listening any more: nothing to stop.
        let _ = stop_tx.send(true);
        while connections.join_next().await.is_some() {}
    }
}

async fn accept_with_slot(
    listener: &TcpListener,
    slots: &Arc<Semaphore>,
) -> std::io::Result<(TcpStream, SocketAddr, tokio::sync::OwnedSemaphorePermit)> {
    // The semaphore is never closed, so acquiring can only wait, not fail.
    let slot = Arc::clone(slots)
        .acquire_owned()
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let (stream, peer) = listener.accept().await?;
    Ok((stream, peer, slot))
}

/// Why a handshake was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// Not the API's path.
    NotFound,
    /// No token, or the wrong one.
    Unauthorized,
}

impl Refusal {
    fn response(self) -> ErrorResponse {
        let (status, why) = match self {
            Refusal::NotFound => (StatusCode::NOT_FOUND, "Not found: the API is at /websocket"),
            Refusal::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "Unauthorized: a valid token is required",
            ),
        };
        let mut resp = ErrorResponse::new(Some(why.to_owned()));
        *resp.status_mut() = status;
        resp
    }
}

/// Checks path and token during the handshake, before the upgrade.
fn check_handshake(token: &Token, req: &Request) -> Result<(), Refusal> {
    if req.uri().path() != WEBSOCKET_PATH {
        return Err(Refusal::NotFound);
    }
    let presented = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
        .unwrap_or("");
    if token.matches(presented) {
        Ok(())
    } else {
        Err(Refusal::Unauthorized)
    }
}

async fn serve_connection(
    stream: TcpStream,
    token: Token,
    mut stop: watch::Receiver<bool>,
    handshake_timeout: Duration,
    context: Arc<Context>,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    // The error type is tungstenite's `Callback` contract, large or not.
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, resp: Response| {
        check_handshake(&token, req)
            .map(|()| resp)
            .map_err(Refusal::response)
    };
    let handshake = tokio_tungstenite::accept_hdr_async(stream, callback);
    let mut ws = tokio::time::timeout(handshake_timeout, handshake)
        .await
        .map_err(|_| {
            tokio_tungstenite::tungstenite::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the WebSocket handshake took too long",
            ))
        })??;
    let (notify_tx, mut notify_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut conn = Connection::new(context, notify_tx);
    loop {
        tokio::select! {
            Some(note) = notify_rx.recv() => {
                ws.send(WsMessage::text(note.to_string())).await?;
            }
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    let frame = CloseFrame { code: 1001.into(), reason: "server shutting down".into() };
                    ws.close(Some(frame)).await?;
                    return Ok(());
                }
            }
            msg = ws.next() => match msg {
                None => return Ok(()),
                Some(Err(e)) => return Err(e),
                Some(Ok(WsMessage::Text(text))) => {
                    if let Some(reply) = answer(&mut conn, text.as_str()).await {
                        ws.send(WsMessage::text(reply.to_string())).await?;
                    }
                }
                Some(Ok(WsMessage::Binary(_))) => {
                    let e = rpc::RpcError::new(rpc::INVALID_REQUEST, "Invalid request: send JSON as text frames");
                    ws.send(WsMessage::text(rpc::error(Value::Null, &e).to_string())).await?;
                }
                // Pings are answered by tungstenite itself; pongs and close frames need nothing.
                Some(Ok(_)) => {}
            },
        }
    }
}

/// Answers one text message; `None` when it held only notifications.
pub async fn answer(conn: &mut Connection, text: &str) -> Option<Value> {
    match rpc::parse(text) {
        Message::Single(incoming) => answer_one(conn, incoming).await,
        Message::Batch(items) => {
            let mut replies = Vec::with_capacity(items.len());
            for item in items {
                if let Some(reply) = answer_one(conn, item).await {
                    replies.push(reply);
                }
            }
            (!replies.is_empty()).then_some(Value::Array(replies))
        }
    }
}

async fn answer_one(conn: &mut Connection, incoming: Incoming) -> Option<Value> {
    match incoming {
        Incoming::Invalid { id, error } => Some(rpc::error(id, &error)),
        Incoming::Call(req) => {
            let outcome = methods::call(conn, &req.method, &req.params).await;
            let id = req.id?;
            Some(match outcome {
                Ok(result) => rpc::result(id, result),
                Err(error) => rpc::error(id, &error),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(uri: &str) -> Request {
        Request::builder()
            .uri(uri)
            .body(())
            .expect("a valid request")
    }

    #[test]
    fn handshake_needs_the_path_and_the_token() {
        let token = Token::generate().expect("random source");
        let good = format!("/websocket?token={}", token.as_str());
        assert!(check_handshake(&token, &request(&good)).is_ok());
        let other_first = format!("/websocket?x=1&token={}", token.as_str());
        assert!(check_handshake(&token, &request(&other_first)).is_ok());

        let status =
            |uri: &str| check_handshake(&token, &request(uri)).map_err(|e| e.response().status());
        assert_eq!(status("/websocket"), Err(StatusCode::UNAUTHORIZED));
        assert_eq!(status("/websocket?token="), Err(StatusCode::UNAUTHORIZED));
        assert_eq!(status("/websocket?token=00"), Err(StatusCode::UNAUTHORIZED));
        assert_eq!(
            status(&format!("/other?token={}", token.as_str())),
            Err(StatusCode::NOT_FOUND)
        );
    }

    #[tokio::test]
    async fn batches_answer_calls_and_skip_notifications() {
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let mut conn = Connection::new(Arc::new(Context::default()), tx);
        let reply = answer(
            &mut conn,
            r#"[{"jsonrpc":"2.0","method":"server.info","id":1},
                {"jsonrpc":"2.0","method":"server.info"},
                {"jsonrpc":"2.0","method":"nope","id":2}]"#,
        )
        .await
        .expect("a reply");
        let replies = reply.as_array().expect("a batch reply");
        assert_eq!(replies.len(), 2);
        assert_eq!(replies[0]["id"], 1);
        assert_eq!(replies[1]["error"]["code"], json!(rpc::METHOD_NOT_FOUND));
        assert!(
            answer(&mut conn, r#"{"jsonrpc":"2.0","method":"server.info"}"#)
                .await
                .is_none()
        );
    }
}
