//! Moonraker: Klipper's API server, over its websocket JSON-RPC (and HTTP for login and uploads).
//!
//! One task owns the websocket. It follows Moonraker's documented start-up
//! (docs/external_api/introduction.md, "Websocket setup"):
//! 1. open `/websocket` and `server.connection.identify` as a `desktop` client, with the API key
//!    or the JWT access token;
//! 2. `server.info`: if `klippy_state` is `ready` (or `shutdown`, whose objects still answer),
//!    `printer.objects.list` and `printer.objects.subscribe` to every object but the menus —
//!    the answer is the full status, after which `notify_status_update` brings deltas; if
//!    `startup`, ask again in 2 s; if `error` or `disconnected`, show Klippy's message and wait;
//! 3. `notify_klippy_ready` / `notify_klippy_disconnected` start step 2 again.
//!
//! Notifications that arrive before the subscription's answer are dropped (they are older than
//! the snapshot it carries, as Fluidd also reasons). A lost connection is retried with doubling
//! backoff ([`RemoteOptions::min_backoff`] to `max_backoff`); credentials the server refuses end
//! the task instead ([`LinkState::Closed`]). A connection with no traffic for
//! [`RemoteOptions::idle_timeout`] (pings go out at a third of it) counts as lost.
//!
//! Authentication: an API key (`X-Api-Key`, `api_key` in identify) or a user login
//! (`access.login` → a one-hour EdDSA JWT and a refresh token). The access token is refreshed
//! with `/access/refresh_jwt` shortly before its `exp` and whenever the server answers 401 (its
//! clock decides expiry, not ours); a refused refresh logs in again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use futures_util::{SinkExt as _, StreamExt as _};
use reqwest::{Method, Url};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::Message;

use crate::model::{
    BackendKind, FileEntry, FileMetadata, HistoryJob, KlippyState, LinkState, ObjectQuery,
    PrinterBackend, PrinterError, PrinterEvent, PrinterInfo, PrinterResult, Status, StatusHub,
    Webcam, objects,
};

use super::http::{Http, HttpAuth, encode_file_path, parse_json, status_error};
use super::ws::{self, Socket};
use super::{Credentials, RemoteOptions, Secret};

/// How long before the access token's `exp` it is refreshed.
const REFRESH_MARGIN_S: u64 = 60;
/// How often `server.info` is asked again while Klippy is starting or absent.
const KLIPPY_POLL: Duration = Duration::from_secs(2);

type Reply = Result<Value, PrinterError>;

/// A JWT pair from `access.login`.
#[derive(Debug, Clone)]
struct Tokens {
    access: Secret,
    refresh: Secret,
    /// The access token's `exp` claim (Unix seconds), when readable.
    exp: Option<u64>,
}

/// The `exp` claim of a JWT, read without checking the signature (only to time the refresh).
fn jwt_exp(token: &str) -> Option<u64> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice::<Value>(&bytes)
        .ok()?
        .get("exp")?
        .as_u64()
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

struct Inner {
    http: Http,
    credentials: Credentials,
    tokens: tokio::sync::Mutex<Option<Tokens>>,
    hub: StatusHub,
    /// Calls waiting for their reply: id → (method, where the reply goes).
    pending: Mutex<HashMap<u64, (String, oneshot::Sender<Reply>)>>,
    writer: Mutex<Option<mpsc::UnboundedSender<String>>>,
    next_id: AtomicU64,
    subscribed: AtomicBool,
    reinit: Notify,
    shutdown: watch::Sender<bool>,
    /// Set once the first pass of the Klippy start-up has finished (whatever its outcome).
    first_pass: watch::Sender<bool>,
}

impl Inner {
    fn url(&self) -> String {
        self.http.base().as_str().to_owned()
    }

    fn options(&self) -> &RemoteOptions {
        self.http.options()
    }

    fn lock_pending(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<u64, (String, oneshot::Sender<Reply>)>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock_writer(&self) -> std::sync::MutexGuard<'_, Option<mpsc::UnboundedSender<String>>> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A JSON-RPC call over the live websocket, with `timeout`.
    async fn call_with(&self, method: &str, params: Value, timeout: Duration) -> Reply {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let text =
            json!({"jsonrpc": "2.0", "method": method, "params": params, "id": id}).to_string();
        let (tx, rx) = oneshot::channel();
        self.lock_pending().insert(id, (method.to_owned(), tx));
        let sent = match &*self.lock_writer() {
            Some(w) => w.send(text).is_ok(),
            None => false,
        };
        if !sent {
            self.lock_pending().remove(&id);
            return Err(PrinterError::NotReady(format!(
                "not connected to Moonraker at {} (reconnecting)",
                self.url()
            )));
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => Err(PrinterError::Closed(self.url())),
            Err(_) => {
                self.lock_pending().remove(&id);
                Err(PrinterError::Timeout {
                    url: self.url(),
                    what: method.to_owned(),
                    after: timeout,
                })
            }
        }
    }

    async fn call(&self, method: &str, params: Value) -> Reply {
        self.call_with(method, params, self.options().request_timeout)
            .await
    }

    /// Fails every waiting call (the connection ended).
    fn fail_pending(&self) {
        let pending: Vec<_> = self.lock_pending().drain().collect();
        for (_, (_, tx)) in pending {
            let _ = tx.send(Err(PrinterError::Closed(self.url())));
        }
    }

    /// The current access token, refreshed first when it expires within the margin.
    async fn access_token(&self) -> PrinterResult<Option<Secret>> {
        if !matches!(self.credentials, Credentials::Login { .. }) {
            return Ok(None);
        }
        let stale = {
            let tokens = self.tokens.lock().await;
            match &*tokens {
                None => true,
                Some(t) => t.exp.is_some_and(|exp| exp <= now_s() + REFRESH_MARGIN_S),
            }
        };
        if stale {
            self.refresh_or_login().await?;
        }
        Ok(self.tokens.lock().await.as_ref().map(|t| t.access.clone()))
    }

    /// HTTP credentials for the next request.
    async fn http_auth(&self) -> PrinterResult<HttpAuth> {
        Ok(match &self.credentials {
            Credentials::None => HttpAuth::None,
            Credentials::ApiKey { key } => HttpAuth::ApiKey(key.clone()),
            Credentials::Login { .. } => match self.access_token().await? {
                Some(t) => HttpAuth::Bearer(t),
                None => HttpAuth::None,
            },
        })
    }

    /// `POST /access/login`.
    async fn login(&self) -> PrinterResult<()> {
        let Credentials::Login { username, password } = &self.credentials else {
            return Ok(());
        };
        let body =
            json!({"username": username, "password": password.expose(), "source": "moonraker"});
        let req = self
            .http
            .request(Method::POST, "/access/login", &HttpAuth::None)
            .json(&body);
        let v = self
            .http
            .json("POST /access/login", req, true)
            .await
            .map_err(|e| match e {
                PrinterError::Unauthorized { url, message }
                | PrinterError::Http {
                    url,
                    status: 400,
                    message,
                } => PrinterError::Unauthorized {
                    url,
                    message: format!("login as {username} failed: {message}"),
                },
                other => other,
            })?;
        let result = &v["result"];
        let (Some(access), Some(refresh)) =
            (result["token"].as_str(), result["refresh_token"].as_str())
        else {
            return Err(PrinterError::Protocol {
                url: self.url(),
                message: "access.login returned no token".into(),
            });
        };
        *self.tokens.lock().await = Some(Tokens {
            access: Secret::new(access),
            refresh: Secret::new(refresh),
            exp: jwt_exp(access),
        });
        tracing::info!(url = %self.url(), user = %username, "logged in to Moonraker");
        Ok(())
    }

    /// `POST /access/refresh_jwt`, or a fresh login when there is no refresh token or the
    /// server refuses it.
    async fn refresh_or_login(&self) -> PrinterResult<()> {
        let refresh = self.tokens.lock().await.as_ref().map(|t| t.refresh.clone());
        if let Some(refresh) = refresh {
            let req = self
                .http
                .request(Method::POST, "/access/refresh_jwt", &HttpAuth::None)
                .json(&json!({"refresh_token": refresh.expose()}));
            match self.http.json("POST /access/refresh_jwt", req, true).await {
                Ok(v) => {
                    if let Some(access) = v["result"]["token"].as_str() {
                        let mut tokens = self.tokens.lock().await;
                        if let Some(t) = tokens.as_mut() {
                            t.access = Secret::new(access);
                            t.exp = jwt_exp(access);
                        }
                        tracing::info!(url = %self.url(), "refreshed the Moonraker access token");
                        return Ok(());
                    }
                }
                Err(PrinterError::Unauthorized { .. }) => {
                    tracing::info!(url = %self.url(), "refresh token refused; logging in again");
                }
                Err(e) => return Err(e),
            }
        }
        self.login().await
    }

    /// An HTTP request with JSON answer; with a login, a 401 refreshes the token and retries
    /// once. `make` builds the request for the given credentials.
    async fn http_json(
        &self,
        what: &str,
        make: impl Fn(&HttpAuth) -> reqwest::RequestBuilder,
    ) -> PrinterResult<Value> {
        let body = self.http_bytes(what, make).await?;
        parse_json(&self.url(), what, &String::from_utf8_lossy(&body))
    }

    /// Sends an HTTP request made by `make` with the current credentials (refreshing a refused
    /// JWT once) and returns the body of a 2xx answer.
    async fn http_bytes(
        &self,
        what: &str,
        make: impl Fn(&HttpAuth) -> reqwest::RequestBuilder,
    ) -> PrinterResult<Vec<u8>> {
        let auth = self.http_auth().await?;
        let resp = self.http.send(what, make(&auth)).await?;
        let (status, body) = (resp.status(), self.http.body_bytes(what, resp).await?);
        let (status, body) = if status == reqwest::StatusCode::UNAUTHORIZED
            && matches!(self.credentials, Credentials::Login { .. })
        {
            self.refresh_or_login().await?;
            let auth = self.http_auth().await?;
            let resp = self.http.send(what, make(&auth)).await?;
            (resp.status(), self.http.body_bytes(what, resp).await?)
        } else {
            (status, body)
        };
        if !status.is_success() {
            return Err(status_error(
                &self.url(),
                status,
                &String::from_utf8_lossy(&body),
                self.credentials.is_some(),
            ));
        }
        Ok(body)
    }

    /// Opens the websocket and identifies (refreshing a refused JWT once).
    async fn open(&self) -> PrinterResult<Socket> {
        let mut refreshed = false;
        loop {
            let url = ws::ws_url(self.http.base(), "/websocket");
            let mut socket = ws::connect(&url, &[], self.options()).await?;
            let mut params = json!({
                "client_name": self.options().client_name,
                "version": crate::VERSION,
                "type": "desktop",
                "url": env!("CARGO_PKG_REPOSITORY"),
            });
            match &self.credentials {
                Credentials::None => {}
                Credentials::ApiKey { key } => params["api_key"] = json!(key.expose()),
                Credentials::Login { .. } => {
                    if let Some(t) = self.access_token().await? {
                        params["access_token"] = json!(t.expose());
                    }
                }
            }
            match self.identify(&mut socket, params).await {
                Ok(()) => return Ok(socket),
                Err(PrinterError::Unauthorized { .. })
                    if !refreshed && matches!(self.credentials, Credentials::Login { .. }) =>
                {
                    refreshed = true;
                    self.refresh_or_login().await?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// `server.connection.identify` on a socket no task reads yet.
    async fn identify(&self, socket: &mut Socket, params: Value) -> PrinterResult<()> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let text = json!({"jsonrpc": "2.0", "method": "server.connection.identify",
                          "params": params, "id": id})
        .to_string();
        let url = self.url();
        let exchange = async {
            socket
                .send(Message::text(text))
                .await
                .map_err(|e| ws::ws_error(&url, e))?;
            while let Some(msg) = socket.next().await {
                let msg = msg.map_err(|e| ws::ws_error(&url, e))?;
                let Message::Text(text) = msg else { continue };
                let v = parse_json(&url, "server.connection.identify", &text)?;
                if v.get("id").and_then(Value::as_u64) == Some(id) {
                    return rpc_result(&url, "server.connection.identify", v).map(drop);
                }
            }
            Err(PrinterError::Closed(url.clone()))
        };
        tokio::time::timeout(self.options().request_timeout, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(PrinterError::Timeout {
                    url: self.url(),
                    what: "server.connection.identify".into(),
                    after: self.options().request_timeout,
                })
            })
    }

    /// Sets `webhooks` (Klippy's state as the hub shows it).
    fn set_klippy_state(&self, state: KlippyState, message: &str) {
        let mut update = Status::new();
        let mut fields = serde_json::Map::new();
        fields.insert("state".into(), json!(state.as_str()));
        fields.insert("state_message".into(), json!(message));
        update.insert(objects::WEBHOOKS.into(), fields);
        self.hub.apply(update, None);
    }

    /// Step 2 of the start-up, again whenever Klippy's state changes. Never returns.
    async fn klippy_loop(&self) -> PrinterResult<()> {
        loop {
            self.subscribed.store(false, Ordering::SeqCst);
            let info = self.call("server.info", json!({})).await?;
            let state = info["klippy_state"]
                .as_str()
                .and_then(KlippyState::parse)
                .unwrap_or(KlippyState::Disconnected);
            match state {
                KlippyState::Ready | KlippyState::Shutdown => match self.subscribe_all().await {
                    Ok(()) => {
                        let _ = self.first_pass.send(true);
                        self.reinit.notified().await;
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(url = %self.url(), error = %e, "subscribing to Klippy's objects failed");
                    }
                },
                KlippyState::Startup => {
                    self.set_klippy_state(state, "Klipper is starting");
                }
                KlippyState::Error | KlippyState::Disconnected => {
                    let message = if state == KlippyState::Error {
                        self.call("printer.info", json!({}))
                            .await
                            .ok()
                            .and_then(|v| v["state_message"].as_str().map(str::to_owned))
                            .unwrap_or_else(|| "Klipper reported an error".into())
                    } else {
                        "Klipper is not connected to Moonraker".to_owned()
                    };
                    let mut only = Status::new();
                    only.insert(objects::WEBHOOKS.into(), serde_json::Map::new());
                    self.hub.reset(only);
                    self.set_klippy_state(state, &message);
                }
            }
            let _ = self.first_pass.send(true);
            let _ = tokio::time::timeout(KLIPPY_POLL, self.reinit.notified()).await;
        }
    }

    /// `printer.objects.list`, then `printer.objects.subscribe` to all but the menus.
    async fn subscribe_all(&self) -> PrinterResult<()> {
        let list = self.call("printer.objects.list", json!({})).await?;
        let query: ObjectQuery = list["objects"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter(|name| *name != "menu" && !name.starts_with("menu "))
            .map(|name| (name.to_owned(), None))
            .collect();
        let sub = self
            .call("printer.objects.subscribe", json!({"objects": query}))
            .await?;
        let status: Status =
            serde_json::from_value(sub["status"].clone()).map_err(|e| PrinterError::Protocol {
                url: self.url(),
                message: format!("printer.objects.subscribe: {e}"),
            })?;
        self.hub.reset(status);
        self.subscribed.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Handles one text frame: a reply to a call, or a notification.
    fn dispatch(&self, text: &str) {
        let Ok(v) = serde_json::from_str::<Value>(text) else {
            tracing::warn!(url = %self.url(), "Moonraker sent a frame that is not JSON");
            return;
        };
        if let Some(id) = v.get("id").and_then(Value::as_u64) {
            let waiting = self.lock_pending().remove(&id);
            if let Some((method, tx)) = waiting {
                let _ = tx.send(rpc_result(&self.url(), &method, v));
            }
            return;
        }
        let params = &v["params"];
        match v["method"].as_str().unwrap_or("") {
            "notify_status_update" => {
                if !self.subscribed.load(Ordering::SeqCst) {
                    return;
                }
                match serde_json::from_value::<Status>(params[0].clone()) {
                    Ok(delta) => {
                        self.hub.apply(delta, params[1].as_f64());
                    }
                    Err(e) => {
                        tracing::warn!(url = %self.url(), error = %e, "malformed notify_status_update");
                    }
                }
            }
            "notify_gcode_response" => {
                if let Some(line) = params[0].as_str() {
                    self.hub.emit(PrinterEvent::GcodeResponse {
                        line: line.to_owned(),
                    });
                }
            }
            "notify_klippy_ready" => self.reinit.notify_one(),
            "notify_klippy_disconnected" => {
                self.subscribed.store(false, Ordering::SeqCst);
                self.set_klippy_state(KlippyState::Disconnected, "Klipper disconnected");
                self.reinit.notify_one();
            }
            "notify_klippy_shutdown" => {
                self.set_klippy_state(KlippyState::Shutdown, "Klipper shut down");
            }
            "notify_filelist_changed" => self.hub.emit(PrinterEvent::FilesChanged),
            "notify_history_changed" => self.hub.emit(PrinterEvent::HistoryChanged),
            _ => {}
        }
    }

    /// Serves one identified connection until it ends (`Err`) or shutdown (`Ok`).
    async fn serve(&self, socket: Socket) -> PrinterResult<()> {
        let (mut sink, mut stream) = socket.split();
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        *self.lock_writer() = Some(tx);
        let idle = self.options().idle_timeout;
        let mut ping = tokio::time::interval(idle / 3);
        ping.tick().await;
        let mut shutdown = self.shutdown.subscribe();
        let klippy = self.klippy_loop();
        tokio::pin!(klippy);
        let url = self.url();
        let result = loop {
            tokio::select! {
                msg = tokio::time::timeout(idle, stream.next()) => match msg {
                    Err(_) => break Err(PrinterError::Timeout {
                        url: url.clone(), what: "waiting for Moonraker".into(), after: idle }),
                    Ok(None) => break Err(PrinterError::Closed(url.clone())),
                    Ok(Some(Err(e))) => break Err(ws::ws_error(&url, e)),
                    Ok(Some(Ok(Message::Text(text)))) => self.dispatch(&text),
                    Ok(Some(Ok(Message::Close(_)))) => break Err(PrinterError::Closed(url.clone())),
                    Ok(Some(Ok(_))) => {}
                },
                out = rx.recv() => {
                    let Some(text) = out else { break Err(PrinterError::Closed(url.clone())) };
                    if let Err(e) = sink.send(Message::text(text)).await {
                        break Err(ws::ws_error(&url, e));
                    }
                }
                _ = ping.tick() => {
                    if let Err(e) = sink.send(Message::Ping(Vec::new().into())).await {
                        break Err(ws::ws_error(&url, e));
                    }
                }
                r = &mut klippy => {
                    // The start-up loop only ends on a failed call: the connection is broken.
                    break r;
                }
                () = super::stopped(&mut shutdown) => {
                    let _ = sink.send(Message::Close(None)).await;
                    break Ok(());
                }
            }
        };
        *self.lock_writer() = None;
        self.subscribed.store(false, Ordering::SeqCst);
        self.fail_pending();
        result
    }

    fn is_shut_down(&self) -> bool {
        *self.shutdown.borrow()
    }
}

/// The `result` of a JSON-RPC reply, or its error mapped.
fn rpc_result(url: &str, method: &str, v: Value) -> Reply {
    if let Some(err) = v.get("error") {
        let code = err["code"].as_i64().unwrap_or(0);
        let message = err["message"]
            .as_str()
            .unwrap_or("unknown error")
            .to_owned();
        return Err(match code {
            401 | 403 => PrinterError::Unauthorized {
                url: url.to_owned(),
                message: format!("the credentials were refused: {message}"),
            },
            c if c < 0 && is_auth_message(&message) => PrinterError::Unauthorized {
                url: url.to_owned(),
                message: if message.contains("Unauthorized") {
                    format!("needs an API key or a login: {message}")
                } else {
                    format!("the credentials were refused: {message}")
                },
            },
            // Moonraker registers Klippy's methods (printer.*) only while Klippy is connected.
            -32601 if method.starts_with("printer.") => PrinterError::NotReady(format!(
                "Moonraker has no {method} now: Klipper is not connected to it"
            )),
            -32601 => PrinterError::Unsupported {
                backend: BackendKind::Moonraker,
                what: "such method",
            },
            503 => PrinterError::NotReady(message),
            404 => PrinterError::InvalidInput(message),
            400 => PrinterError::Rejected(message),
            _ => PrinterError::Http {
                url: url.to_owned(),
                status: u16::try_from(code).unwrap_or(0),
                message: format!("{method}: {message}"),
            },
        });
    }
    v.get("result")
        .cloned()
        .ok_or_else(|| PrinterError::Protocol {
            url: url.to_owned(),
            message: format!("{method}: a reply with neither result nor error"),
        })
}

/// Whether a JSON-RPC error message is about credentials (Moonraker sends them with JSON-RPC's
/// generic codes).
fn is_auth_message(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    ["unauthorized", "api key", "token", "jwt", "login"]
        .iter()
        .any(|w| m.contains(w))
}

/// The connection task: serve, and on loss reconnect with backoff.
async fn run(inner: Arc<Inner>, first: Socket) {
    let mut socket = Some(first);
    let opts = inner.options().clone();
    let mut backoff = opts.min_backoff;
    let mut shutdown = inner.shutdown.subscribe();
    while let Some(s) = socket.take() {
        inner.hub.emit(PrinterEvent::Link(LinkState::Connected));
        let ended = inner.serve(s).await;
        if inner.is_shut_down() {
            break;
        }
        let mut reason = match ended {
            Ok(()) => "closed".to_owned(),
            Err(e) => e.to_string(),
        };
        tracing::warn!(url = %inner.url(), %reason, "lost the connection to Moonraker");
        inner.set_klippy_state(
            KlippyState::Disconnected,
            &format!("Gantry lost its connection to Moonraker: {reason}"),
        );
        loop {
            inner.hub.emit(PrinterEvent::Link(LinkState::Reconnecting {
                reason: reason.clone(),
                retry_in_ms: u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX),
            }));
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                () = super::stopped(&mut shutdown) => return,
            }
            match inner.open().await {
                Ok(s) => {
                    backoff = opts.min_backoff;
                    socket = Some(s);
                    break;
                }
                Err(e @ PrinterError::Unauthorized { .. }) => {
                    inner.hub.emit(PrinterEvent::Link(LinkState::Closed {
                        reason: e.to_string(),
                    }));
                    return;
                }
                Err(e) => {
                    reason = e.to_string();
                    backoff = (backoff * 2).min(opts.max_backoff);
                }
            }
        }
    }
    inner.hub.emit(PrinterEvent::Link(LinkState::Closed {
        reason: "shut down".into(),
    }));
}

/// A Moonraker printer. Dropping it closes the connection.
pub struct Moonraker {
    inner: Arc<Inner>,
    task: super::BackendTask,
}

impl std::fmt::Debug for Moonraker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Moonraker")
            .field("url", &self.inner.url())
            .field("credentials", &self.inner.credentials)
            .finish_non_exhaustive()
    }
}

impl Moonraker {
    /// Logs in (with a login), opens and identifies the websocket, and waits (up to the
    /// request timeout) for the first pass of the Klippy start-up, so that the status is filled
    /// when Klippy is ready. Reconnection after that is automatic.
    ///
    /// # Errors
    /// The first connection's failure: unreachable, timeout, TLS, refused credentials.
    pub async fn connect(
        url: Url,
        credentials: Credentials,
        options: RemoteOptions,
    ) -> PrinterResult<Self> {
        let http = Http::new(url, &options)?;
        let inner = Arc::new(Inner {
            http,
            credentials,
            tokens: tokio::sync::Mutex::new(None),
            hub: StatusHub::new(),
            pending: Mutex::new(HashMap::new()),
            writer: Mutex::new(None),
            next_id: AtomicU64::new(1),
            subscribed: AtomicBool::new(false),
            reinit: Notify::new(),
            shutdown: watch::channel(false).0,
            first_pass: watch::channel(false).0,
        });
        if matches!(inner.credentials, Credentials::Login { .. }) {
            inner.login().await?;
        }
        let socket = inner.open().await?;
        let mut first_pass = inner.first_pass.subscribe();
        let task = tokio::spawn(run(Arc::clone(&inner), socket));
        let _ =
            tokio::time::timeout(options.request_timeout, first_pass.wait_for(|done| *done)).await;
        Ok(Self {
            inner,
            task: super::BackendTask::new(task),
        })
    }

    /// Closes the connection and waits for its task.
    pub async fn shutdown(&self) {
        self.task.stop(&self.inner.shutdown).await;
    }

    /// A JSON-RPC call with Moonraker's method name, over the websocket.
    ///
    /// # Errors
    /// Not connected, timeout, or Moonraker's error.
    pub async fn call(&self, method: &str, params: Value) -> PrinterResult<Value> {
        self.inner.call(method, params).await
    }

    /// `server.info`.
    ///
    /// # Errors
    /// As [`Moonraker::call`].
    pub async fn server_info(&self) -> PrinterResult<Value> {
        self.call("server.info", json!({})).await
    }

    /// The current JWT pair after a login (to keep the refresh token in the keychain).
    pub async fn tokens(&self) -> Option<(Secret, Secret)> {
        self.inner
            .tokens
            .lock()
            .await
            .as_ref()
            .map(|t| (t.access.clone(), t.refresh.clone()))
    }

    /// An authenticated HTTP GET of a Moonraker endpoint (the refresh-on-401 path included).
    ///
    /// # Errors
    /// Transport, status or JSON errors.
    pub async fn http_get(&self, path: &str) -> PrinterResult<Value> {
        let http = &self.inner.http;
        self.inner
            .http_json(&format!("GET {path}"), |auth| {
                http.request(Method::GET, path, auth)
            })
            .await
    }

    /// `server.webcams.post_item`: adds or changes a webcam.
    ///
    /// # Errors
    /// As [`Moonraker::call`].
    pub async fn webcam_add(&self, webcam: &Webcam) -> PrinterResult<()> {
        self.call(
            "server.webcams.post_item",
            json!({
                "name": webcam.name, "service": webcam.service, "enabled": webcam.enabled,
                "stream_url": webcam.stream_url, "snapshot_url": webcam.snapshot_url,
                "flip_horizontal": webcam.flip_horizontal, "flip_vertical": webcam.flip_vertical,
                "rotation": webcam.rotation,
            }),
        )
        .await
        .map(drop)
    }

    fn absolute(&self, url: &str) -> String {
        if url.is_empty() {
            return String::new();
        }
        self.inner
            .http
            .base()
            .join(url)
            .map_or_else(|_| url.to_owned(), |u| u.to_string())
    }
}

impl Drop for Moonraker {
    fn drop(&mut self) {
        let _ = self.inner.shutdown.send(true);
    }
}

fn file_entry(v: &Value) -> Option<FileEntry> {
    Some(FileEntry {
        path: v
            .get("path")
            .or_else(|| v.get("filename"))?
            .as_str()?
            .to_owned(),
        size: v["size"].as_u64().unwrap_or(0),
        modified: v["modified"].as_f64().unwrap_or(0.0),
    })
}

/// Moonraker's `server.files.metadata` answer as [`FileMetadata`].
fn file_metadata(path: &str, v: Value) -> FileMetadata {
    FileMetadata {
        path: path.to_owned(),
        size: v["size"].as_u64(),
        modified: v["modified"].as_f64(),
        slicer: v["slicer"].as_str().map(str::to_owned),
        slicer_version: v["slicer_version"].as_str().map(str::to_owned),
        estimated_time_s: v["estimated_time"].as_f64(),
        filament_total_mm: v["filament_total"].as_f64(),
        layer_height_mm: v["layer_height"].as_f64(),
        object_height_mm: v["object_height"].as_f64(),
        raw: v,
    }
}

fn history_job(v: &Value) -> Option<HistoryJob> {
    Some(HistoryJob {
        job_id: v["job_id"].as_str()?.to_owned(),
        filename: v["filename"].as_str().unwrap_or("").to_owned(),
        status: v["status"].as_str().unwrap_or("").to_owned(),
        start_time: v["start_time"].as_f64().unwrap_or(0.0),
        end_time: v["end_time"].as_f64(),
        print_duration: v["print_duration"].as_f64().unwrap_or(0.0),
        total_duration: v["total_duration"].as_f64().unwrap_or(0.0),
        filament_used: v["filament_used"].as_f64().unwrap_or(0.0),
    })
}

impl PrinterBackend for Moonraker {
    fn kind(&self) -> BackendKind {
        BackendKind::Moonraker
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.shutdown())
    }

    fn hub(&self) -> &StatusHub {
        &self.inner.hub
    }

    fn info(&self) -> BoxFuture<'_, PrinterResult<PrinterInfo>> {
        Box::pin(async move {
            let server = self.server_info().await?;
            let state = server["klippy_state"]
                .as_str()
                .and_then(KlippyState::parse)
                .unwrap_or(KlippyState::Disconnected);
            let printer = if server["klippy_connected"].as_bool() == Some(true) {
                self.call("printer.info", json!({})).await.ok()
            } else {
                None
            };
            let p = printer.unwrap_or(Value::Null);
            Ok(PrinterInfo {
                kind: BackendKind::Moonraker,
                server_version: format!(
                    "Moonraker {}",
                    server["moonraker_version"].as_str().unwrap_or("?")
                ),
                firmware: p["software_version"]
                    .as_str()
                    .map(|v| format!("Klipper {v}")),
                hostname: p["hostname"].as_str().map(str::to_owned),
                state,
                state_message: p["state_message"].as_str().map_or_else(
                    || match state {
                        KlippyState::Disconnected => "Klipper is not connected".to_owned(),
                        other => other.to_string(),
                    },
                    |m| m.trim().to_owned(),
                ),
            })
        })
    }

    fn gcode_script<'a>(&'a self, script: &'a str) -> BoxFuture<'a, PrinterResult<()>> {
        Box::pin(async move {
            self.inner
                .call_with(
                    "printer.gcode.script",
                    json!({"script": script}),
                    self.inner.options().gcode_timeout,
                )
                .await
                .map(drop)
        })
    }

    fn print_start<'a>(&'a self, path: &'a str) -> BoxFuture<'a, PrinterResult<()>> {
        Box::pin(async move {
            self.call("printer.print.start", json!({"filename": path}))
                .await
                .map(drop)
        })
    }

    fn print_pause(&self) -> BoxFuture<'_, PrinterResult<()>> {
        Box::pin(async move { self.call("printer.print.pause", json!({})).await.map(drop) })
    }

    fn print_resume(&self) -> BoxFuture<'_, PrinterResult<()>> {
        Box::pin(async move { self.call("printer.print.resume", json!({})).await.map(drop) })
    }

    fn print_cancel(&self) -> BoxFuture<'_, PrinterResult<()>> {
        Box::pin(async move { self.call("printer.print.cancel", json!({})).await.map(drop) })
    }

    fn emergency_stop(&self) -> BoxFuture<'_, PrinterResult<()>> {
        Box::pin(async move {
            self.call("printer.emergency_stop", json!({}))
                .await
                .map(drop)
        })
    }

    fn files_list(&self) -> BoxFuture<'_, PrinterResult<Vec<FileEntry>>> {
        Box::pin(async move {
            let v = self
                .call("server.files.list", json!({"root": "gcodes"}))
                .await?;
            let mut files: Vec<FileEntry> = v
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(file_entry)
                .collect();
            files.sort_by(|a, b| a.path.cmp(&b.path));
            Ok(files)
        })
    }

    fn file_upload<'a>(
        &'a self,
        path: &'a str,
        data: Vec<u8>,
        start_print: bool,
    ) -> BoxFuture<'a, PrinterResult<FileEntry>> {
        Box::pin(async move {
            let path = path.trim_start_matches('/');
            if path.is_empty() {
                return Err(PrinterError::InvalidInput("the file name is empty".into()));
            }
            let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
            let http = &self.inner.http;
            let timeout = self.inner.options().upload_timeout;
            let v = self
                .inner
                .http_json("POST /server/files/upload", |auth| {
                    let part = reqwest::multipart::Part::bytes(data.clone())
                        .file_name(name.to_owned())
                        .mime_str("application/octet-stream")
                        .unwrap_or_else(|_| reqwest::multipart::Part::bytes(Vec::new()));
                    let mut form = reqwest::multipart::Form::new()
                        .text("root", "gcodes")
                        .text("print", if start_print { "true" } else { "false" });
                    if !dir.is_empty() {
                        form = form.text("path", dir.to_owned());
                    }
                    http.request(Method::POST, "/server/files/upload", auth)
                        .timeout(timeout)
                        .multipart(form.part("file", part))
                })
                .await?;
            let item = v.get("result").unwrap_or(&v);
            file_entry(&item["item"]).ok_or_else(|| PrinterError::Protocol {
                url: self.inner.url(),
                message: "the upload's answer names no file".into(),
            })
        })
    }

    fn file_metadata<'a>(&'a self, path: &'a str) -> BoxFuture<'a, PrinterResult<FileMetadata>> {
        Box::pin(async move {
            let v = self
                .call("server.files.metadata", json!({"filename": path}))
                .await?;
            Ok(file_metadata(path, v))
        })
    }

    fn file_delete<'a>(&'a self, path: &'a str) -> BoxFuture<'a, PrinterResult<()>> {
        Box::pin(async move {
            self.call(
                "server.files.delete_file",
                json!({"path": format!("gcodes/{}", path.trim_start_matches('/'))}),
            )
            .await
            .map(drop)
        })
    }

    fn file_download<'a>(&'a self, path: &'a str) -> BoxFuture<'a, PrinterResult<Vec<u8>>> {
        Box::pin(async move {
            let route = format!("/server/files/gcodes/{}", encode_file_path(path));
            let http = &self.inner.http;
            let timeout = self.inner.options().upload_timeout;
            self.inner
                .http_bytes(&format!("GET {route}"), |auth| {
                    http.request(Method::GET, &route, auth).timeout(timeout)
                })
                .await
        })
    }

    fn history(&self, limit: usize) -> BoxFuture<'_, PrinterResult<Vec<HistoryJob>>> {
        Box::pin(async move {
            let v = self
                .call(
                    "server.history.list",
                    json!({"limit": limit, "order": "desc"}),
                )
                .await?;
            Ok(v["jobs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(history_job)
                .collect())
        })
    }

    fn webcams(&self) -> BoxFuture<'_, PrinterResult<Vec<Webcam>>> {
        Box::pin(async move {
            let v = self.call("server.webcams.list", json!({})).await?;
            Ok(v["webcams"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|w| Webcam {
                    name: w["name"].as_str().unwrap_or("").to_owned(),
                    service: w["service"].as_str().unwrap_or("").to_owned(),
                    enabled: w["enabled"].as_bool().unwrap_or(true),
                    stream_url: self.absolute(w["stream_url"].as_str().unwrap_or("")),
                    snapshot_url: w["snapshot_url"]
                        .as_str()
                        .filter(|s| !s.is_empty())
                        .map(|s| self.absolute(s)),
                    flip_horizontal: w["flip_horizontal"].as_bool().unwrap_or(false),
                    flip_vertical: w["flip_vertical"].as_bool().unwrap_or(false),
                    rotation: w["rotation"]
                        .as_u64()
                        .and_then(|r| u32::try_from(r).ok())
                        .unwrap_or(0),
                })
                .collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_exp_is_read_from_the_payload() {
        use base64::Engine as _;
        let enc = |v: Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string().as_bytes())
        };
        let token = format!(
            "{}.{}.sig",
            enc(json!({"alg": "EdDSA", "typ": "JWT"})),
            enc(json!({"exp": 1_700_000_000u64, "username": "u"}))
        );
        assert_eq!(jwt_exp(&token), Some(1_700_000_000));
        assert_eq!(jwt_exp("not a token"), None);
    }

    #[test]
    fn rpc_errors_map_to_what_they_mean() {
        let e = rpc_result(
            "u",
            "m",
            json!({"error": {"code": 400, "message": "Must home axis first"}}),
        );
        assert_eq!(
            e,
            Err(PrinterError::Rejected("Must home axis first".into()))
        );
        let e = rpc_result(
            "u",
            "m",
            json!({"error": {"code": -32602, "message": "Unauthorized"}}),
        );
        assert!(matches!(e, Err(PrinterError::Unauthorized { .. })));
        let e = rpc_result(
            "u",
            "printer.gcode.script",
            json!({"error": {"code": -32601, "message": "Method not found"}}),
        );
        assert_eq!(
            e,
            Err(PrinterError::NotReady(
                "Moonraker has no printer.gcode.script now: Klipper is not connected to it".into()
            ))
        );
        let e = rpc_result(
            "u",
            "server.nope",
            json!({"error": {"code": -32601, "message": "Method not found"}}),
        );
        assert!(matches!(e, Err(PrinterError::Unsupported { .. })));
        assert_eq!(
            rpc_result("u", "m", json!({"result": "ok"})),
            Ok(json!("ok"))
        );
        assert!(matches!(
            rpc_result("u", "m", json!({"id": 1})),
            Err(PrinterError::Protocol { .. })
        ));
    }

    #[test]
    fn moonraker_answers_become_model_types() {
        let job = history_job(&json!({
            "job_id": "000001", "filename": "cube.gcode", "status": "completed",
            "start_time": 1.0, "end_time": 61.0, "print_duration": 55.0,
            "total_duration": 60.0, "filament_used": 120.5
        }))
        .expect("a job");
        assert_eq!(job.end_time, Some(61.0));
        let f =
            file_entry(&json!({"path": "a/b.gcode", "modified": 5.5, "size": 42})).expect("a file");
        assert_eq!(f.path, "a/b.gcode");
        let m = file_metadata(
            "b.gcode",
            json!({"slicer": "PrusaSlicer", "estimated_time": 120.0}),
        );
        assert_eq!(m.slicer.as_deref(), Some("PrusaSlicer"));
        assert_eq!(m.estimated_time_s, Some(120.0));
    }
}
