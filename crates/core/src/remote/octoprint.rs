//! OctoPrint: its REST API with an application key (`X-Api-Key`), the application-keys request
//! flow, and its push socket (`/sockjs/websocket`) for live state.
//!
//! OctoPrint's state is translated into Klipper's status objects so that the UI reads one
//! vocabulary: `webhooks` (operational → `ready`, error → `error`, no printer connection →
//! `disconnected`, with OctoPrint's state text as the message), `print_stats` (state from the
//! state flags and the PrintDone/PrintCancelled/PrintFailed events, filename, print_duration),
//! `virtual_sdcard` (progress, file_position, file_size, is_active), `display_status.progress`,
//! `extruder`, `extruder1`…, `heater_bed` (actual and target temperatures) and
//! `gcode_move.gcode_position[2]` from currentZ.
//!
//! One task owns the push socket: it logs in passively with the key (`POST /api/login
//! {"passive": true}` → `name:session`), sends `{"auth": …}`, applies every `current` and
//! `history` message, and reconnects with backoff when the socket ends. Commands go over REST,
//! each with the request timeout. OctoPrint has no job history of its own
//! ([`PrinterError::Unsupported`]).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::{SinkExt as _, StreamExt as _};
use reqwest::{Method, Url};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::model::{
    BackendKind, FileEntry, FileMetadata, HistoryJob, KlippyState, LinkState, PrintState,
    PrinterBackend, PrinterError, PrinterEvent, PrinterInfo, PrinterResult, Status, StatusHub,
    Webcam, objects,
};

use super::http::{Http, HttpAuth, encode_file_path, status_error};
use super::ws;
use super::{Credentials, RemoteOptions, Secret};

/// Translates OctoPrint's state (a `current` push message, or the REST answers merged into the
/// same shape) into Klipper's status objects. `last_event` is the latest print event
/// (PrintDone, PrintCancelled, PrintFailed, PrintStarted) that tells how a job ended.
pub fn translate(current: &Value, last_event: Option<&str>) -> Status {
    let mut status = Status::new();
    let mut put = |object: &str, field: &str, value: Value| {
        status
            .entry(object.to_owned())
            .or_default()
            .insert(field.to_owned(), value);
    };
    let state = &current["state"];
    let flags = &state["flags"];
    let flag = |name: &str| flags[name].as_bool().unwrap_or(false);
    let text = state["text"].as_str().unwrap_or("").to_owned();
    if state.is_object() {
        let klippy = if flag("error") {
            KlippyState::Error
        } else if flag("operational") {
            KlippyState::Ready
        } else {
            KlippyState::Disconnected
        };
        put(objects::WEBHOOKS, "state", json!(klippy.as_str()));
        put(objects::WEBHOOKS, "state_message", json!(text));
        // Pausing and cancelling are still printing in Klipper's terms: print_stats changes
        // only once the job has stopped (and OctoPrint refuses a resume while pausing).
        let print = if flag("paused") && !flag("pausing") {
            PrintState::Paused
        } else if flag("printing") || flag("pausing") || flag("cancelling") || flag("finishing") {
            PrintState::Printing
        } else {
            match last_event {
                Some("PrintDone") => PrintState::Complete,
                Some("PrintCancelled") => PrintState::Cancelled,
                Some("PrintFailed") => PrintState::Error,
                _ => PrintState::Standby,
            }
        };
        put(objects::PRINT_STATS, "state", json!(print.as_str()));
        put(
            objects::VIRTUAL_SDCARD,
            "is_active",
            json!(flag("printing") && !flag("paused")),
        );
        put(objects::PAUSE_RESUME, "is_paused", json!(flag("paused")));
    }
    let job = &current["job"];
    if job.is_object() {
        let file = &job["file"];
        let name = file["path"]
            .as_str()
            .or_else(|| file["name"].as_str())
            .unwrap_or("");
        put(objects::PRINT_STATS, "filename", json!(name));
        put(
            objects::VIRTUAL_SDCARD,
            "file_size",
            json!(file["size"].as_u64().unwrap_or(0)),
        );
        put(
            objects::VIRTUAL_SDCARD,
            "file_path",
            json!(if name.is_empty() {
                Value::Null
            } else {
                json!(name)
            }),
        );
    }
    let progress = &current["progress"];
    if progress.is_object() {
        let completion = progress["completion"].as_f64().unwrap_or(0.0) / 100.0;
        put(objects::VIRTUAL_SDCARD, "progress", json!(completion));
        put(objects::DISPLAY_STATUS, "progress", json!(completion));
        put(
            objects::VIRTUAL_SDCARD,
            "file_position",
            json!(progress["filepos"].as_u64().unwrap_or(0)),
        );
        put(
            objects::PRINT_STATS,
            "print_duration",
            json!(progress["printTime"].as_f64().unwrap_or(0.0)),
        );
    }
    // Temperatures: the push socket's `temps` list (latest last) or REST's `temperature`.
    let temps = current["temps"]
        .as_array()
        .and_then(|t| t.last())
        .or_else(|| current.get("temperature"));
    if let Some(t) = temps.and_then(Value::as_object) {
        for (key, reading) in t {
            let object = if key == "bed" {
                objects::HEATER_BED.to_owned()
            } else if let Some(n) = key.strip_prefix("tool") {
                match n.parse::<u32>() {
                    Ok(0) => objects::EXTRUDER.to_owned(),
                    Ok(i) => format!("extruder{i}"),
                    Err(_) => continue,
                }
            } else {
                continue;
            };
            if let Some(actual) = reading["actual"].as_f64() {
                put(&object, "temperature", json!(actual));
                put(
                    &object,
                    "target",
                    json!(reading["target"].as_f64().unwrap_or(0.0)),
                );
            }
        }
    }
    if let Some(z) = current["currentZ"].as_f64() {
        put(
            objects::GCODE_MOVE,
            "gcode_position",
            json!([0.0, 0.0, z, 0.0]),
        );
    }
    status
}

struct Inner {
    http: Http,
    key: Option<Secret>,
    hub: StatusHub,
    shutdown: watch::Sender<bool>,
    last_event: Mutex<Option<String>>,
}

impl Inner {
    fn url(&self) -> String {
        self.http.base().as_str().to_owned()
    }

    fn auth(&self) -> HttpAuth {
        self.key.clone().map_or(HttpAuth::None, HttpAuth::ApiKey)
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> PrinterResult<Value> {
        let what = format!("{method} {path}");
        let mut req = self.http.request(method, path, &self.auth());
        if let Some(b) = body {
            req = req.json(&b);
        }
        self.http.json(&what, req, self.key.is_some()).await
    }

    fn last_event(&self) -> Option<String> {
        self.last_event
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Reads the printer's state over REST and applies it (used at connect and after a push
    /// socket reconnects).
    async fn poll(&self) -> PrinterResult<()> {
        let mut current = json!({});
        match self
            .request(Method::GET, "/api/printer?exclude=sd", None)
            .await
        {
            Ok(p) => {
                current["state"] = p["state"].clone();
                current["temperature"] = p["temperature"].clone();
            }
            Err(PrinterError::NotReady(_)) => {
                let c = self.request(Method::GET, "/api/connection", None).await?;
                let text = c["current"]["state"].as_str().unwrap_or("Offline");
                current["state"] = json!({"text": text, "flags": {
                    "operational": false, "error": text.to_ascii_lowercase().contains("error")}});
            }
            Err(e) => return Err(e),
        }
        let job = self.request(Method::GET, "/api/job", None).await?;
        current["job"] = job["job"].clone();
        current["progress"] = job["progress"].clone();
        let status = translate(&current, self.last_event().as_deref());
        self.hub.apply(status, None);
        Ok(())
    }

    /// One push-socket session: passive login, auth, then messages until the socket ends.
    async fn push_session(&self) -> PrinterResult<()> {
        let login = self
            .request(Method::POST, "/api/login", Some(json!({"passive": true})))
            .await?;
        let (Some(name), Some(session)) = (login["name"].as_str(), login["session"].as_str())
        else {
            return Err(PrinterError::Protocol {
                url: self.url(),
                message: "the passive login returned no session".into(),
            });
        };
        let url = ws::ws_url(self.http.base(), "/sockjs/websocket");
        let socket = ws::connect(&url, &[], self.http.options()).await?;
        let (mut sink, mut stream) = socket.split();
        let shown = self.url();
        let auth = json!({"auth": format!("{name}:{session}")}).to_string();
        sink.send(Message::text(auth))
            .await
            .map_err(|e| ws::ws_error(&shown, e))?;
        self.hub.emit(PrinterEvent::Link(LinkState::Connected));
        // A REST poll right after the socket is up closes any gap since the last message.
        self.poll().await?;
        let idle = self.http.options().idle_timeout;
        let mut shutdown = self.shutdown.subscribe();
        loop {
            tokio::select! {
                msg = tokio::time::timeout(idle, stream.next()) => match msg {
                    Err(_) => return Err(PrinterError::Timeout {
                        url: shown, what: "waiting for OctoPrint's push socket".into(), after: idle }),
                    Ok(None) | Ok(Some(Ok(Message::Close(_)))) => return Err(PrinterError::Closed(shown)),
                    Ok(Some(Err(e))) => return Err(ws::ws_error(&shown, e)),
                    Ok(Some(Ok(Message::Text(text)))) => self.on_push(&text),
                    Ok(Some(Ok(_))) => {}
                },
                () = super::stopped(&mut shutdown) => {
                    let _ = sink.send(Message::Close(None)).await;
                    return Ok(());
                }
            }
        }
    }

    /// Applies one push message.
    fn on_push(&self, text: &str) {
        let Ok(v) = serde_json::from_str::<Value>(text) else {
            tracing::warn!(url = %self.url(), "OctoPrint's push socket sent a frame that is not JSON");
            return;
        };
        if let Some(event) = v.get("event") {
            let kind = event["type"].as_str().unwrap_or("");
            // OctoPrint reports a cancel as PrintFailed (reason "cancelled") and PrintCancelled.
            let kind = if kind == "PrintFailed" && event["payload"]["reason"] == "cancelled" {
                "PrintCancelled"
            } else {
                kind
            };
            match kind {
                "PrintStarted" | "PrintDone" | "PrintCancelled" | "PrintFailed" => {
                    *self
                        .last_event
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = Some(kind.to_owned());
                }
                "UpdatedFiles" => self.hub.emit(PrinterEvent::FilesChanged),
                _ => {}
            }
        }
        for key in ["history", "current"] {
            if let Some(current) = v.get(key) {
                let status = translate(current, self.last_event().as_deref());
                self.hub.apply(status, None);
                // `history` replays the session's whole log: only `current` lines are new.
                if key == "history" {
                    continue;
                }
                if let Some(logs) = current["logs"].as_array() {
                    for line in logs.iter().filter_map(Value::as_str) {
                        // "Recv: ok" / "Send: G28": the printer's side is what Klipper's console
                        // shows.
                        if let Some(recv) = line.strip_prefix("Recv: ") {
                            self.hub.emit(PrinterEvent::GcodeResponse {
                                line: recv.to_owned(),
                            });
                        }
                    }
                }
            }
        }
    }
}

async fn run(inner: Arc<Inner>) {
    let opts = inner.http.options().clone();
    let mut backoff = opts.min_backoff;
    let mut shutdown = inner.shutdown.subscribe();
    loop {
        let started = tokio::time::Instant::now();
        let ended = inner.push_session().await;
        if *inner.shutdown.borrow() {
            break;
        }
        let reason = match ended {
            Ok(()) => "closed".to_owned(),
            Err(e @ PrinterError::Unauthorized { .. }) => {
                inner.hub.emit(PrinterEvent::Link(LinkState::Closed {
                    reason: e.to_string(),
                }));
                return;
            }
            Err(e) => e.to_string(),
        };
        if started.elapsed() > opts.max_backoff {
            backoff = opts.min_backoff;
        }
        tracing::warn!(url = %inner.url(), %reason, "OctoPrint's push socket ended");
        inner.hub.emit(PrinterEvent::Link(LinkState::Reconnecting {
            reason,
            retry_in_ms: u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX),
        }));
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            () = super::stopped(&mut shutdown) => break,
        }
        backoff = (backoff * 2).min(opts.max_backoff);
    }
    inner.hub.emit(PrinterEvent::Link(LinkState::Closed {
        reason: "shut down".into(),
    }));
}

/// An OctoPrint server. Dropping it closes the push socket.
pub struct OctoPrint {
    inner: Arc<Inner>,
    task: super::BackendTask,
}

impl std::fmt::Debug for OctoPrint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OctoPrint")
            .field("url", &self.inner.url())
            .field("key", &self.inner.key)
            .finish_non_exhaustive()
    }
}

impl OctoPrint {
    /// Checks the key with `GET /api/version`, reads the state once over REST, and starts the
    /// push-socket task.
    ///
    /// # Errors
    /// Unreachable, timeout, TLS, "needs an API key", or a server that is not OctoPrint.
    pub async fn connect(
        url: Url,
        credentials: Credentials,
        options: RemoteOptions,
    ) -> PrinterResult<Self> {
        let key = match credentials {
            Credentials::None => None,
            Credentials::ApiKey { key } => Some(key),
            Credentials::Login { .. } => {
                return Err(PrinterError::InvalidInput(
                    "OctoPrint takes an application key (--api-key), not a user login; \
                     `gantry remote URL request-key` asks OctoPrint for one"
                        .into(),
                ));
            }
        };
        let inner = Arc::new(Inner {
            http: Http::new(url, &options)?,
            key,
            hub: StatusHub::new(),
            shutdown: watch::channel(false).0,
            last_event: Mutex::new(None),
        });
        let version = inner.request(Method::GET, "/api/version", None).await?;
        let text = version["text"].as_str().unwrap_or("");
        if !text.starts_with("OctoPrint") {
            return Err(PrinterError::Protocol {
                url: inner.url(),
                message: format!("/api/version says '{text}', not OctoPrint"),
            });
        }
        inner.poll().await?;
        let task = tokio::spawn(run(Arc::clone(&inner)));
        Ok(Self {
            inner,
            task: super::BackendTask::new(task),
        })
    }

    /// Closes the push socket and waits for its task.
    pub async fn shutdown(&self) {
        self.task.stop(&self.inner.shutdown).await;
    }

    /// Connects OctoPrint to its printer (`POST /api/connection`), on `port` (`None`: OctoPrint's
    /// own choice, AUTO) at `baudrate`, and waits up to the request timeout until it is
    /// operational.
    ///
    /// # Errors
    /// OctoPrint's refusal, or the printer not becoming operational in time.
    pub async fn connect_printer(
        &self,
        port: Option<&str>,
        baudrate: Option<u32>,
    ) -> PrinterResult<()> {
        let mut body = json!({"command": "connect"});
        if let Some(p) = port {
            body["port"] = json!(p);
        }
        if let Some(b) = baudrate {
            body["baudrate"] = json!(b);
        }
        self.inner
            .request(Method::POST, "/api/connection", Some(body))
            .await?;
        let timeout = self.inner.http.options().request_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let c = self
                .inner
                .request(Method::GET, "/api/connection", None)
                .await?;
            let state = c["current"]["state"].as_str().unwrap_or("").to_owned();
            if state == "Operational" || state.starts_with("Printing") {
                self.inner.poll().await?;
                return Ok(());
            }
            if state.contains("Error") || tokio::time::Instant::now() >= deadline {
                return Err(PrinterError::NotReady(format!(
                    "OctoPrint could not connect to the printer: {state}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A REST call with the key (for what the trait does not cover).
    ///
    /// # Errors
    /// Transport, status or JSON errors.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> PrinterResult<Value> {
        self.inner.request(method, path, body).await
    }

    async fn job(&self, body: Value) -> PrinterResult<()> {
        self.inner
            .request(Method::POST, "/api/job", Some(body))
            .await
            .map(drop)
    }
}

impl Drop for OctoPrint {
    fn drop(&mut self) {
        let _ = self.inner.shutdown.send(true);
    }
}

/// OctoPrint's file tree flattened to machine-code files.
fn collect_files(list: &Value, out: &mut Vec<FileEntry>) {
    for f in list.as_array().into_iter().flatten() {
        match f["type"].as_str() {
            Some("folder") => collect_files(&f["children"], out),
            Some("machinecode") => {
                if let Some(path) = f["path"].as_str() {
                    out.push(FileEntry {
                        path: path.to_owned(),
                        size: f["size"].as_u64().unwrap_or(0),
                        modified: f["date"].as_f64().unwrap_or(0.0),
                    });
                }
            }
            _ => {}
        }
    }
}

impl PrinterBackend for OctoPrint {
    fn kind(&self) -> BackendKind {
        BackendKind::OctoPrint
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.shutdown())
    }

    fn hub(&self) -> &StatusHub {
        &self.inner.hub
    }

    fn info(&self) -> BoxFuture<'_, PrinterResult<PrinterInfo>> {
        Box::pin(async move {
            let version = self
                .inner
                .request(Method::GET, "/api/version", None)
                .await?;
            let conn = self
                .inner
                .request(Method::GET, "/api/connection", None)
                .await?;
            let text = conn["current"]["state"].as_str().unwrap_or("").to_owned();
            let state = match text.as_str() {
                t if t.contains("Error") => KlippyState::Error,
                "Closed" | "Offline" | "" => KlippyState::Disconnected,
                t if t.starts_with("Detecting")
                    || t.starts_with("Connecting")
                    || t.starts_with("Opening") =>
                {
                    KlippyState::Startup
                }
                _ => KlippyState::Ready,
            };
            Ok(PrinterInfo {
                kind: BackendKind::OctoPrint,
                server_version: version["text"].as_str().unwrap_or("OctoPrint").to_owned(),
                firmware: None,
                hostname: None,
                state,
                state_message: text,
            })
        })
    }

    fn gcode_script<'a>(&'a self, script: &'a str) -> BoxFuture<'a, PrinterResult<()>> {
        Box::pin(async move {
            let commands: Vec<&str> = script
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            if commands.is_empty() {
                return Err(PrinterError::InvalidInput(
                    "the G-code script is empty".into(),
                ));
            }
            self.inner
                .request(
                    Method::POST,
                    "/api/printer/command",
                    Some(json!({"commands": commands})),
                )
                .await
                .map(drop)
        })
    }

    fn print_start<'a>(&'a self, path: &'a str) -> BoxFuture<'a, PrinterResult<()>> {
        Box::pin(async move {
            self.inner
                .request(
                    Method::POST,
                    &format!("/api/files/local/{}", encode_file_path(path)),
                    Some(json!({"command": "select", "print": true})),
                )
                .await
                .map(drop)
        })
    }

    fn print_pause(&self) -> BoxFuture<'_, PrinterResult<()>> {
        Box::pin(self.job(json!({"command": "pause", "action": "pause"})))
    }

    fn print_resume(&self) -> BoxFuture<'_, PrinterResult<()>> {
        Box::pin(self.job(json!({"command": "pause", "action": "resume"})))
    }

    fn print_cancel(&self) -> BoxFuture<'_, PrinterResult<()>> {
        Box::pin(self.job(json!({"command": "cancel"})))
    }

    fn emergency_stop(&self) -> BoxFuture<'_, PrinterResult<()>> {
        Box::pin(async move { self.gcode_script("M112").await })
    }

    fn files_list(&self) -> BoxFuture<'_, PrinterResult<Vec<FileEntry>>> {
        Box::pin(async move {
            let v = self
                .inner
                .request(Method::GET, "/api/files/local?recursive=true", None)
                .await?;
            let mut files = Vec::new();
            collect_files(&v["files"], &mut files);
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
            let size = data.len() as u64;
            let part = reqwest::multipart::Part::bytes(data)
                .file_name(name.to_owned())
                .mime_str("application/octet-stream")
                .map_err(|e| PrinterError::InvalidInput(e.to_string()))?;
            let mut form = reqwest::multipart::Form::new().part("file", part);
            if !dir.is_empty() {
                form = form.text("path", dir.to_owned());
            }
            if start_print {
                form = form.text("select", "true").text("print", "true");
            }
            let http = &self.inner.http;
            let req = http
                .request(Method::POST, "/api/files/local", &self.inner.auth())
                .timeout(http.options().upload_timeout)
                .multipart(form);
            let resp = http.send("POST /api/files/local", req).await?;
            let status = resp.status();
            let body = http.body_text("POST /api/files/local", resp).await?;
            if !status.is_success() {
                return Err(status_error(
                    &self.inner.url(),
                    status,
                    &body,
                    self.inner.key.is_some(),
                ));
            }
            let v = super::http::parse_json(&self.inner.url(), "POST /api/files/local", &body)?;
            let stored = v["files"]["local"]["path"].as_str().unwrap_or(path);
            Ok(FileEntry {
                path: stored.to_owned(),
                size,
                modified: 0.0,
            })
        })
    }

    fn file_metadata<'a>(&'a self, path: &'a str) -> BoxFuture<'a, PrinterResult<FileMetadata>> {
        Box::pin(async move {
            let v = self
                .inner
                .request(
                    Method::GET,
                    &format!("/api/files/local/{}", encode_file_path(path)),
                    None,
                )
                .await
                .map_err(|e| match e {
                    PrinterError::Http { status: 404, .. } => {
                        PrinterError::InvalidInput(format!("no file {path} on OctoPrint"))
                    }
                    other => other,
                })?;
            let analysis = &v["gcodeAnalysis"];
            let filament_mm = analysis["filament"]
                .as_object()
                .map(|tools| tools.values().filter_map(|t| t["length"].as_f64()).sum());
            Ok(FileMetadata {
                path: path.to_owned(),
                size: v["size"].as_u64(),
                modified: v["date"].as_f64(),
                slicer: None,
                slicer_version: None,
                estimated_time_s: analysis["estimatedPrintTime"].as_f64(),
                filament_total_mm: filament_mm,
                layer_height_mm: None,
                object_height_mm: analysis["dimensions"]["height"].as_f64(),
                raw: v,
            })
        })
    }

    fn file_delete<'a>(&'a self, path: &'a str) -> BoxFuture<'a, PrinterResult<()>> {
        Box::pin(async move {
            self.inner
                .request(
                    Method::DELETE,
                    &format!("/api/files/local/{}", encode_file_path(path)),
                    None,
                )
                .await
                .map(drop)
        })
    }

    fn file_download<'a>(&'a self, path: &'a str) -> BoxFuture<'a, PrinterResult<Vec<u8>>> {
        Box::pin(async move {
            let inner = &self.inner;
            let route = format!("/downloads/files/local/{}", encode_file_path(path));
            let req = inner
                .http
                .request(Method::GET, &route, &inner.auth())
                .timeout(inner.http.options().upload_timeout);
            inner
                .http
                .bytes(&format!("GET {route}"), req, inner.key.is_some())
                .await
        })
    }

    fn history(&self, _limit: usize) -> BoxFuture<'_, PrinterResult<Vec<HistoryJob>>> {
        Box::pin(async move {
            Err(PrinterError::Unsupported {
                backend: BackendKind::OctoPrint,
                what: "job history",
            })
        })
    }

    fn webcams(&self) -> BoxFuture<'_, PrinterResult<Vec<Webcam>>> {
        Box::pin(async move {
            let v = self
                .inner
                .request(Method::GET, "/api/settings", None)
                .await?;
            let w = &v["webcam"];
            let stream = w["streamUrl"].as_str().unwrap_or("");
            if stream.is_empty() {
                return Ok(Vec::new());
            }
            let abs = |u: &str| {
                self.inner
                    .http
                    .base()
                    .join(u)
                    .map_or_else(|_| u.to_owned(), |x| x.to_string())
            };
            Ok(vec![Webcam {
                name: "webcam".into(),
                service: "classic".into(),
                enabled: w["webcamEnabled"].as_bool().unwrap_or(true),
                stream_url: abs(stream),
                snapshot_url: w["snapshotUrl"].as_str().filter(|s| !s.is_empty()).map(abs),
                flip_horizontal: w["flipH"].as_bool().unwrap_or(false),
                flip_vertical: w["flipV"].as_bool().unwrap_or(false),
                rotation: if w["rotate90"].as_bool().unwrap_or(false) {
                    90
                } else {
                    0
                },
            }])
        })
    }
}

/// Where an application-key request stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppKeyProgress {
    /// The request is open: the user approves it in OctoPrint (a dialog there), or at this URL.
    AwaitingApproval {
        /// OctoPrint's page for the decision.
        auth_dialog: String,
    },
}

/// Asks OctoPrint for an application key (the appkeys plugin's flow): the user approves the
/// request in OctoPrint's UI; polls every second (OctoPrint drops requests not polled within
/// 5 s) until the key arrives, the user denies, or `wait` runs out. `progress` hears once that
/// the request is open.
///
/// # Errors
/// Unreachable/timeout/TLS; OctoPrint without the plugin; denied or expired; rate-limited.
pub async fn request_app_key(
    url: Url,
    app: &str,
    user: Option<&str>,
    options: &RemoteOptions,
    wait: Duration,
    mut progress: impl FnMut(AppKeyProgress) + Send,
) -> PrinterResult<Secret> {
    let http = Http::new(url, options)?;
    let shown = http.base().as_str().to_owned();
    let probe = http
        .send(
            "GET /plugin/appkeys/probe",
            http.request(Method::GET, "/plugin/appkeys/probe", &HttpAuth::None),
        )
        .await?;
    if probe.status() != reqwest::StatusCode::NO_CONTENT {
        return Err(PrinterError::Unsupported {
            backend: BackendKind::OctoPrint,
            what: "application-key requests here (the appkeys plugin did not answer)",
        });
    }
    let mut body = json!({"app": app});
    if let Some(u) = user {
        body["user"] = json!(u);
    }
    let req = http
        .request(Method::POST, "/plugin/appkeys/request", &HttpAuth::None)
        .json(&body);
    let v = http
        .json("POST /plugin/appkeys/request", req, false)
        .await
        .map_err(|e| match e {
            PrinterError::Http {
                status: 429, url, ..
            } => PrinterError::Http {
                url,
                status: 429,
                message: "too many key requests; OctoPrint allows 3 a minute".into(),
            },
            other => other,
        })?;
    let Some(token) = v["app_token"].as_str() else {
        return Err(PrinterError::Protocol {
            url: shown,
            message: "the key request returned no app_token".into(),
        });
    };
    progress(AppKeyProgress::AwaitingApproval {
        auth_dialog: v["auth_dialog"].as_str().unwrap_or("").to_owned(),
    });
    let deadline = tokio::time::Instant::now() + wait;
    let path = format!("/plugin/appkeys/request/{token}");
    loop {
        let resp = http
            .send(
                "polling the key request",
                http.request(Method::GET, &path, &HttpAuth::None),
            )
            .await?;
        match resp.status().as_u16() {
            200 => {
                let body = http.body_text("polling the key request", resp).await?;
                let v = super::http::parse_json(&shown, "polling the key request", &body)?;
                return v["api_key"].as_str().map(Secret::new).ok_or_else(|| {
                    PrinterError::Protocol {
                        url: shown.clone(),
                        message: "the approved request carried no api_key".into(),
                    }
                });
            }
            202 => {}
            404 => {
                return Err(PrinterError::Unauthorized {
                    url: shown,
                    message: "the key request was denied in OctoPrint, or expired".into(),
                });
            }
            code => {
                let body = http.body_text("polling the key request", resp).await?;
                return Err(PrinterError::Http {
                    url: shown,
                    status: code,
                    message: super::http::server_message(&body),
                });
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(PrinterError::Timeout {
                url: shown,
                what: "waiting for the key request's approval".into(),
                after: wait,
            });
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_push_message_becomes_klipper_objects() {
        let current = json!({
            "state": {"text": "Printing", "flags": {"operational": true, "printing": true,
                      "paused": false, "error": false}},
            "job": {"file": {"name": "cube.gcode", "path": "sub/cube.gcode", "size": 1000}},
            "progress": {"completion": 42.5, "filepos": 425, "printTime": 30},
            "temps": [{"time": 1, "tool0": {"actual": 180.0, "target": 200.0}},
                      {"time": 2, "tool0": {"actual": 190.0, "target": 200.0},
                       "tool1": {"actual": 25.0, "target": 0.0},
                       "bed": {"actual": 55.0, "target": 60.0}}],
            "currentZ": 0.3
        });
        let s = crate::model::PrinterStatus::from_status(translate(&current, None));
        assert_eq!(s.klippy_state(), Some(KlippyState::Ready));
        assert_eq!(s.print_state(), Some(PrintState::Printing));
        assert_eq!(s.str("print_stats", "filename"), Some("sub/cube.gcode"));
        assert_eq!(s.progress(), Some(0.425));
        assert_eq!(s.f64("extruder", "temperature"), Some(190.0));
        assert_eq!(s.f64("extruder1", "target"), Some(0.0));
        assert_eq!(s.f64("heater_bed", "target"), Some(60.0));
        assert_eq!(s.f64("virtual_sdcard", "file_position"), Some(425.0));
    }

    #[test]
    fn how_a_job_ended_comes_from_the_last_event() {
        let idle = json!({"state": {"text": "Operational", "flags": {"operational": true}}});
        let status =
            |event| crate::model::PrinterStatus::from_status(translate(&idle, event)).print_state();
        assert_eq!(status(None), Some(PrintState::Standby));
        assert_eq!(status(Some("PrintDone")), Some(PrintState::Complete));
        assert_eq!(status(Some("PrintCancelled")), Some(PrintState::Cancelled));
        let closed = json!({"state": {"text": "Offline", "flags": {"operational": false}}});
        let s = crate::model::PrinterStatus::from_status(translate(&closed, None));
        assert_eq!(s.klippy_state(), Some(KlippyState::Disconnected));
    }

    #[test]
    fn paths_are_percent_encoded_per_segment() {
        assert_eq!(encode_file_path("/a b/c#1.gcode"), "a%20b/c%231.gcode");
    }

    #[test]
    fn the_file_tree_is_flattened() {
        let tree = json!([
            {"type": "folder", "children": [
                {"type": "machinecode", "path": "d/x.gcode", "size": 3, "date": 1}]},
            {"type": "machinecode", "path": "y.gcode", "size": 5, "date": 2},
            {"type": "model", "path": "z.stl"}
        ]);
        let mut files = Vec::new();
        collect_files(&tree, &mut files);
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["d/x.gcode", "y.gcode"]);
    }
}
