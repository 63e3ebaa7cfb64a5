//! PrusaLink (Prusa's printers: MK4, MINI, XL, Core One, and the MK3's Raspberry Pi add-on), over
//! its v1 REST API as its OpenAPI document (prusa3d/Prusa-Link-Web spec/openapi.yaml) describes
//! it: `GET /api/v1/status`, `GET /api/v1/job`, `PUT|DELETE /api/v1/job/{id}[/pause|/resume]`,
//! `PUT /api/v1/files/{storage}/{path}` (raw body, `Print-After-Upload`, `Overwrite`),
//! `POST /api/v1/files/{storage}/{path}` (print it), `GET /api/v1/files/{storage}/{path}` (a
//! file's details; a download fetches the path its `refs.download` names), `GET /api/v1/storage`.
//!
//! Authentication is HTTP Digest (user `maker`, the password the printer shows:
//! [`Credentials::Login`]) or, on older firmware, `X-Api-Key` ([`Credentials::ApiKey`]). Digest
//! is RFC 7616 with MD5 and `qop=auth`, the variant PrusaLink issues; the challenge is kept and
//! answered again only when the server sends a new nonce.
//!
//! A task polls `/api/v1/status` every second into Klipper's objects (PrusaLink has no push
//! channel). PrusaLink has no G-code console, job history or emergency stop in its API: those
//! are [`PrinterError::Unsupported`].

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::future::BoxFuture;
use md5::{Digest as _, Md5};
use reqwest::{Method, RequestBuilder, StatusCode, Url};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::model::{
    BackendKind, FileEntry, FileMetadata, HistoryJob, KlippyState, LinkState, PrintState,
    PrinterBackend, PrinterError, PrinterEvent, PrinterInfo, PrinterResult, Status, StatusHub,
    Webcam, objects,
};

use super::http::{Http, HttpAuth, encode_file_path, parse_json, status_error};
use super::{Credentials, RemoteOptions, Secret};

/// How often the status is polled.
const POLL: Duration = Duration::from_secs(1);

/// Translates `/api/v1/status` into Klipper's objects.
pub fn translate(status: &Value) -> Status {
    let mut out = Status::new();
    let mut put = |object: &str, field: &str, value: Value| {
        out.entry(object.to_owned())
            .or_default()
            .insert(field.to_owned(), value);
    };
    let printer = &status["printer"];
    if let Some(state) = printer["state"].as_str() {
        let klippy = match state {
            "ERROR" => KlippyState::Error,
            _ => KlippyState::Ready,
        };
        put(objects::WEBHOOKS, "state", json!(klippy.as_str()));
        put(
            objects::WEBHOOKS,
            "state_message",
            json!(state.to_ascii_lowercase()),
        );
        let print = match state {
            "PRINTING" | "BUSY" if status["job"].is_object() => PrintState::Printing,
            "PAUSED" | "ATTENTION" if status["job"].is_object() => PrintState::Paused,
            "FINISHED" => PrintState::Complete,
            "STOPPED" => PrintState::Cancelled,
            "ERROR" => PrintState::Error,
            _ => PrintState::Standby,
        };
        put(objects::PRINT_STATS, "state", json!(print.as_str()));
        put(
            objects::VIRTUAL_SDCARD,
            "is_active",
            json!(print == PrintState::Printing),
        );
        put(
            objects::PAUSE_RESUME,
            "is_paused",
            json!(print == PrintState::Paused),
        );
    }
    for (object, temp, target) in [
        (objects::EXTRUDER, "temp_nozzle", "target_nozzle"),
        (objects::HEATER_BED, "temp_bed", "target_bed"),
    ] {
        if let Some(t) = printer[temp].as_f64() {
            put(object, "temperature", json!(t));
            put(
                object,
                "target",
                json!(printer[target].as_f64().unwrap_or(0.0)),
            );
        }
    }
    if let (Some(x), Some(y), Some(z)) = (
        printer["axis_x"].as_f64(),
        printer["axis_y"].as_f64(),
        printer["axis_z"].as_f64(),
    ) {
        put(objects::TOOLHEAD, "position", json!([x, y, z, 0.0]));
    }
    if let Some(speed) = printer["speed"].as_f64() {
        put(objects::GCODE_MOVE, "speed_factor", json!(speed / 100.0));
    }
    if let Some(fan) = printer["fan_print"].as_f64() {
        // PrusaLink reports the print fan in RPM; Klipper's `fan.rpm` is the same quantity.
        put(objects::FAN, "rpm", json!(fan));
    }
    let job = &status["job"];
    if job.is_object() {
        let p = job["progress"].as_f64().unwrap_or(0.0) / 100.0;
        put(objects::VIRTUAL_SDCARD, "progress", json!(p));
        put(objects::DISPLAY_STATUS, "progress", json!(p));
        put(
            objects::PRINT_STATS,
            "print_duration",
            json!(job["time_printing"].as_f64().unwrap_or(0.0)),
        );
    }
    out
}

/// The parts of a `WWW-Authenticate: Digest …` challenge Gantry needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestChallenge {
    realm: String,
    nonce: String,
    opaque: Option<String>,
    qop_auth: bool,
}

impl DigestChallenge {
    /// Parses a challenge header; `None` if it is not Digest.
    pub fn parse(header: &str) -> Option<Self> {
        let rest = header.trim().strip_prefix("Digest")?.trim_start();
        let mut realm = None;
        let mut nonce = None;
        let mut opaque = None;
        let mut qop_auth = false;
        let mut s = rest;
        while !s.is_empty() {
            let (key, after) = s.split_once('=')?;
            let key = key
                .trim()
                .trim_start_matches(',')
                .trim()
                .to_ascii_lowercase();
            let after = after.trim_start();
            let (value, next) = if let Some(q) = after.strip_prefix('"') {
                let end = q.find('"')?;
                (&q[..end], &q[end + 1..])
            } else {
                let end = after.find(',').unwrap_or(after.len());
                (after[..end].trim(), &after[end..])
            };
            match key.as_str() {
                "realm" => realm = Some(value.to_owned()),
                "nonce" => nonce = Some(value.to_owned()),
                "opaque" => opaque = Some(value.to_owned()),
                "qop" => qop_auth = value.split(',').any(|q| q.trim() == "auth"),
                _ => {}
            }
            s = next.trim_start().trim_start_matches(',').trim_start();
        }
        Some(Self {
            realm: realm?,
            nonce: nonce?,
            opaque,
            qop_auth,
        })
    }

    /// The `Authorization` header for one request.
    pub fn answer(
        &self,
        user: &str,
        password: &str,
        method: &str,
        uri: &str,
        nc: u32,
        cnonce: &str,
    ) -> String {
        let hex = |s: String| {
            Md5::digest(s.as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        };
        let ha1 = hex(format!("{user}:{}:{password}", self.realm));
        let ha2 = hex(format!("{method}:{uri}"));
        let mut header = format!(
            "Digest username=\"{user}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\"",
            self.realm, self.nonce
        );
        if self.qop_auth {
            let nc = format!("{nc:08x}");
            let response = hex(format!("{ha1}:{}:{nc}:{cnonce}:auth:{ha2}", self.nonce));
            header.push_str(&format!(
                ", qop=auth, nc={nc}, cnonce=\"{cnonce}\", response=\"{response}\""
            ));
        } else {
            let response = hex(format!("{ha1}:{}:{ha2}", self.nonce));
            header.push_str(&format!(", response=\"{response}\""));
        }
        if let Some(o) = &self.opaque {
            header.push_str(&format!(", opaque=\"{o}\""));
        }
        header.push_str(", algorithm=MD5");
        header
    }
}

struct Inner {
    http: Http,
    credentials: Credentials,
    challenge: Mutex<Option<DigestChallenge>>,
    nc: AtomicU32,
    hub: StatusHub,
    shutdown: watch::Sender<bool>,
}

impl Inner {
    fn url(&self) -> String {
        self.http.base().as_str().to_owned()
    }

    fn authorise(&self, method: &Method, path: &str, req: RequestBuilder) -> RequestBuilder {
        match &self.credentials {
            Credentials::ApiKey { key } => req.header("X-Api-Key", key.expose()),
            Credentials::Login { username, password } => {
                let challenge = self
                    .challenge
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                match challenge {
                    Some(c) => {
                        let nc = self.nc.fetch_add(1, Ordering::Relaxed) + 1;
                        let uri = self.http.url(path);
                        let uri = match uri.query() {
                            Some(q) => format!("{}?{q}", uri.path()),
                            None => uri.path().to_owned(),
                        };
                        let cnonce = format!("{:016x}", rand_u64());
                        req.header(
                            "Authorization",
                            c.answer(
                                username,
                                password.expose(),
                                method.as_str(),
                                &uri,
                                nc,
                                &cnonce,
                            ),
                        )
                    }
                    None => req,
                }
            }
            Credentials::None => req,
        }
    }

    /// Sends a request (built by `make`), answering a Digest challenge once. Returns the status
    /// and the body as text.
    async fn exchange(
        &self,
        method: Method,
        path: &str,
        make: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> PrinterResult<(StatusCode, String)> {
        let (status, body) = self.exchange_bytes(method, path, make).await?;
        let text = String::from_utf8(body)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
        Ok((status, text))
    }

    /// [`Inner::exchange`] with the body's bytes (a file, which may be binary G-code).
    async fn exchange_bytes(
        &self,
        method: Method,
        path: &str,
        make: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> PrinterResult<(StatusCode, Vec<u8>)> {
        let what = format!("{method} {path}");
        for attempt in 0..2 {
            let req = self.http.request(method.clone(), path, &HttpAuth::None);
            let req = make(self.authorise(&method, path, req));
            let resp = self.http.send(&what, req).await?;
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED
                && attempt == 0
                && matches!(self.credentials, Credentials::Login { .. })
                && let Some(c) = resp
                    .headers()
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok())
                    .and_then(DigestChallenge::parse)
            {
                *self
                    .challenge
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(c);
                self.nc.store(0, Ordering::Relaxed);
                continue;
            }
            let body = self.http.body_bytes(&what, resp).await?;
            return Ok((status, body));
        }
        Err(PrinterError::Unauthorized {
            url: self.url(),
            message: "the password was refused".into(),
        })
    }

    async fn json(&self, method: Method, path: &str, body: Option<Value>) -> PrinterResult<Value> {
        let what = format!("{method} {path}");
        let (status, text) = self
            .exchange(method, path, |r| match &body {
                Some(b) => r.json(b),
                None => r,
            })
            .await?;
        if !status.is_success() {
            return Err(status_error(
                &self.url(),
                status,
                &text,
                self.credentials.is_some(),
            ));
        }
        parse_json(&self.url(), &what, &text)
    }

    /// A file's details (`GET /api/v1/files/{storage}/{path}`): its size, time, metadata and
    /// `refs`.
    async fn file_details(&self, path: &str) -> PrinterResult<Value> {
        self.json(
            Method::GET,
            &format!("/api/v1/files/{}", encode_file_path(path)),
            None,
        )
        .await
    }

    async fn poll(&self) -> PrinterResult<()> {
        let status = self.json(Method::GET, "/api/v1/status", None).await?;
        let mut update = translate(&status);
        if status["job"].is_object()
            && let Ok(job) = self.json(Method::GET, "/api/v1/job", None).await
        {
            let file = &job["file"];
            let name = file["path"]
                .as_str()
                .zip(file["name"].as_str())
                .map(|(dir, name)| format!("{}/{name}", dir.trim_matches('/')))
                .or_else(|| file["display_name"].as_str().map(str::to_owned))
                .unwrap_or_default();
            update
                .entry(objects::PRINT_STATS.to_owned())
                .or_default()
                .insert("filename".into(), json!(name));
        }
        self.hub.apply(update, None);
        Ok(())
    }

    async fn job_id(&self) -> PrinterResult<u64> {
        let job = self.json(Method::GET, "/api/v1/job", None).await?;
        job["id"]
            .as_u64()
            .ok_or_else(|| PrinterError::NotReady("no job is running".into()))
    }
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b)
}

async fn run(inner: Arc<Inner>) {
    let mut shutdown = inner.shutdown.subscribe();
    let mut failing = false;
    loop {
        match inner.poll().await {
            Ok(()) if failing => {
                failing = false;
                inner.hub.emit(PrinterEvent::Link(LinkState::Connected));
            }
            Ok(()) => {}
            Err(e) => {
                failing = true;
                inner.hub.emit(PrinterEvent::Link(LinkState::Reconnecting {
                    reason: e.to_string(),
                    retry_in_ms: u64::try_from(POLL.as_millis()).unwrap_or(1000),
                }));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            () = super::stopped(&mut shutdown) => break,
        }
    }
}

/// A PrusaLink printer. Dropping it stops the polling.
pub struct PrusaLink {
    inner: Arc<Inner>,
    task: super::BackendTask,
}

impl std::fmt::Debug for PrusaLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrusaLink")
            .field("url", &self.inner.url())
            .field("credentials", &self.inner.credentials)
            .finish_non_exhaustive()
    }
}

impl PrusaLink {
    /// Reads the status once (which checks the credentials) and starts polling.
    ///
    /// # Errors
    /// Unreachable, timeout, TLS, refused credentials, or not PrusaLink.
    pub async fn connect(
        url: Url,
        credentials: Credentials,
        options: RemoteOptions,
    ) -> PrinterResult<Self> {
        let inner = Arc::new(Inner {
            http: Http::new(url, &options)?,
            credentials,
            challenge: Mutex::new(None),
            nc: AtomicU32::new(0),
            hub: StatusHub::new(),
            shutdown: watch::channel(false).0,
        });
        inner.poll().await?;
        inner.hub.emit(PrinterEvent::Link(LinkState::Connected));
        let task = tokio::spawn(run(Arc::clone(&inner)));
        Ok(Self {
            inner,
            task: super::BackendTask::new(task),
        })
    }

    /// Stops polling and waits for the task.
    pub async fn shutdown(&self) {
        self.task.stop(&self.inner.shutdown).await;
    }

    /// The first storage's path (`usb`, `local`), where uploads go.
    async fn storage(&self) -> PrinterResult<String> {
        let v = self
            .inner
            .json(Method::GET, "/api/v1/storage", None)
            .await?;
        v["storage_list"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| {
                s["available"].as_bool().unwrap_or(true)
                    && !s["read_only"].as_bool().unwrap_or(false)
            })
            .find_map(|s| s["path"].as_str())
            .map(|p| p.trim_matches('/').to_owned())
            .ok_or_else(|| {
                PrinterError::NotReady(
                    "the printer has no writable storage (insert a USB drive)".into(),
                )
            })
    }

    fn unsupported<T>(what: &'static str) -> BoxFuture<'static, PrinterResult<T>>
    where
        T: Send + 'static,
    {
        Box::pin(async move {
            Err(PrinterError::Unsupported {
                backend: BackendKind::PrusaLink,
                what,
            })
        })
    }
}

impl Drop for PrusaLink {
    fn drop(&mut self) {
        let _ = self.inner.shutdown.send(true);
    }
}

impl PrinterBackend for PrusaLink {
    fn kind(&self) -> BackendKind {
        BackendKind::PrusaLink
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.shutdown())
    }

    fn hub(&self) -> &StatusHub {
        &self.inner.hub
    }

    fn info(&self) -> BoxFuture<'_, PrinterResult<PrinterInfo>> {
        Box::pin(async move {
            let version = self.inner.json(Method::GET, "/api/version", None).await?;
            let info = self
                .inner
                .json(Method::GET, "/api/v1/info", None)
                .await
                .unwrap_or(Value::Null);
            let status = self.inner.json(Method::GET, "/api/v1/status", None).await?;
            let state = status["printer"]["state"].as_str().unwrap_or("").to_owned();
            Ok(PrinterInfo {
                kind: BackendKind::PrusaLink,
                server_version: format!("PrusaLink {}", version["server"].as_str().unwrap_or("?")),
                firmware: version["firmware"].as_str().map(str::to_owned),
                hostname: info["hostname"].as_str().map(str::to_owned),
                state: if state == "ERROR" {
                    KlippyState::Error
                } else {
                    KlippyState::Ready
                },
                state_message: state.to_ascii_lowercase(),
            })
        })
    }

    fn gcode_script<'a>(&'a self, _script: &'a str) -> BoxFuture<'a, PrinterResult<()>> {
        Self::unsupported("G-code console")
    }

    fn print_start<'a>(&'a self, path: &'a str) -> BoxFuture<'a, PrinterResult<()>> {
        Box::pin(async move {
            let path = if path.contains('/') {
                path.trim_start_matches('/').to_owned()
            } else {
                format!("{}/{path}", self.storage().await?)
            };
            self.inner
                .json(
                    Method::POST,
                    &format!("/api/v1/files/{}", encode_file_path(&path)),
                    None,
                )
                .await
                .map(drop)
        })
    }

    fn print_pause(&self) -> BoxFuture<'_, PrinterResult<()>> {
        Box::pin(async move {
            let id = self.inner.job_id().await?;
            self.inner
                .json(Method::PUT, &format!("/api/v1/job/{id}/pause"), None)
                .await
                .map(drop)
        })
    }

    fn print_resume(&self) -> BoxFuture<'_, PrinterResult<()>> {
        Box::pin(async move {
            let id = self.inner.job_id().await?;
            self.inner
                .json(Method::PUT, &format!("/api/v1/job/{id}/resume"), None)
                .await
                .map(drop)
        })
    }

    fn print_cancel(&self) -> BoxFuture<'_, PrinterResult<()>> {
        Box::pin(async move {
            let id = self.inner.job_id().await?;
            self.inner
                .json(Method::DELETE, &format!("/api/v1/job/{id}"), None)
                .await
                .map(drop)
        })
    }

    fn emergency_stop(&self) -> BoxFuture<'_, PrinterResult<()>> {
        Self::unsupported("emergency stop in its API (cancel the job, or use the printer's knob)")
    }

    fn files_list(&self) -> BoxFuture<'_, PrinterResult<Vec<FileEntry>>> {
        Box::pin(async move {
            let storage = self.storage().await?;
            let v = self
                .inner
                .json(
                    Method::GET,
                    &format!("/api/v1/files/{}", encode_file_path(&storage)),
                    None,
                )
                .await?;
            let mut files: Vec<FileEntry> = v["children"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|f| f["type"].as_str() != Some("FOLDER"))
                .filter_map(|f| {
                    Some(FileEntry {
                        path: format!("{storage}/{}", f["name"].as_str()?),
                        size: f["size"].as_u64().unwrap_or(0),
                        modified: f["m_timestamp"].as_f64().unwrap_or(0.0),
                    })
                })
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
            let name = path.trim_start_matches('/');
            if name.is_empty() {
                return Err(PrinterError::InvalidInput("the file name is empty".into()));
            }
            let full = format!("{}/{name}", self.storage().await?);
            let size = data.len() as u64;
            let timeout = self.inner.http.options().upload_timeout;
            let (status, text) = self
                .inner
                .exchange(
                    Method::PUT,
                    &format!("/api/v1/files/{}", encode_file_path(&full)),
                    |r| {
                        r.timeout(timeout)
                            .header("Content-Type", "application/octet-stream")
                            .header("Print-After-Upload", if start_print { "?1" } else { "?0" })
                            .header("Overwrite", "?1")
                            .body(data.clone())
                    },
                )
                .await?;
            if !status.is_success() {
                return Err(status_error(
                    &self.inner.url(),
                    status,
                    &text,
                    self.inner.credentials.is_some(),
                ));
            }
            Ok(FileEntry {
                path: full,
                size,
                modified: 0.0,
            })
        })
    }

    fn file_metadata<'a>(&'a self, path: &'a str) -> BoxFuture<'a, PrinterResult<FileMetadata>> {
        Box::pin(async move {
            let v = self.inner.file_details(path).await?;
            let meta = &v["meta"];
            Ok(FileMetadata {
                path: path.to_owned(),
                size: v["size"].as_u64(),
                modified: v["m_timestamp"].as_f64(),
                slicer: None,
                slicer_version: None,
                estimated_time_s: meta["estimated print time"]
                    .as_f64()
                    .or_else(|| meta["estimated_print_time"].as_f64()),
                filament_total_mm: meta["filament used [mm]"].as_f64(),
                layer_height_mm: meta["layer_height"].as_f64(),
                object_height_mm: None,
                raw: v,
            })
        })
    }

    fn file_delete<'a>(&'a self, path: &'a str) -> BoxFuture<'a, PrinterResult<()>> {
        Box::pin(async move {
            self.inner
                .json(
                    Method::DELETE,
                    &format!("/api/v1/files/{}", encode_file_path(path)),
                    None,
                )
                .await
                .map(drop)
        })
    }

    fn file_download<'a>(&'a self, path: &'a str) -> BoxFuture<'a, PrinterResult<Vec<u8>>> {
        // The file's details name where to fetch it (`refs.download` in Prusa-Link-Web's API
        // description: `/api/files/local/…/raw` on the Python PrusaLink, a path under the
        // storage on the printer's own), a path on the same server with the same credentials.
        Box::pin(async move {
            let info = self.inner.file_details(path).await?;
            let link = download_link(&info).ok_or_else(|| PrinterError::Protocol {
                url: self.inner.url(),
                message: format!(
                    "the details of '{path}' give no download link (refs.download, a path on this server)"
                ),
            })?;
            let timeout = self.inner.http.options().upload_timeout;
            let (status, body) = self
                .inner
                .exchange_bytes(Method::GET, link, |r| r.timeout(timeout))
                .await?;
            if !status.is_success() {
                return Err(status_error(
                    &self.inner.url(),
                    status,
                    &String::from_utf8_lossy(&body),
                    self.inner.credentials.is_some(),
                ));
            }
            Ok(body)
        })
    }

    fn history(&self, _limit: usize) -> BoxFuture<'_, PrinterResult<Vec<HistoryJob>>> {
        Self::unsupported("job history")
    }

    fn webcams(&self) -> BoxFuture<'_, PrinterResult<Vec<Webcam>>> {
        Self::unsupported("webcam streams (only snapshots for Prusa Connect)")
    }
}

/// A file's download path from its details (`refs.download`): only a path on the server
/// itself (starting with one `/`), never a link elsewhere that would get its credentials.
fn download_link(info: &Value) -> Option<&str> {
    info["refs"]["download"]
        .as_str()
        .filter(|l| l.starts_with('/') && !l.starts_with("//") && !l.contains(['\r', '\n']))
}

/// A PrusaLink password credential (user `maker` unless given).
pub fn credentials(password: &str) -> Credentials {
    Credentials::Login {
        username: "maker".into(),
        password: Secret::new(password),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_follows_rfc_2617s_example() {
        // RFC 2617 §3.5: Mufasa / "Circle Of Life".
        let c = DigestChallenge::parse(
            "Digest realm=\"testrealm@host.com\", qop=\"auth,auth-int\", \
             nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"",
        )
        .expect("a challenge");
        let h = c.answer(
            "Mufasa",
            "Circle Of Life",
            "GET",
            "/dir/index.html",
            1,
            "0a4f113b",
        );
        assert!(
            h.contains("response=\"6629fae49393a05397450978507c4ef1\""),
            "{h}"
        );
        assert!(h.contains("nc=00000001"), "{h}");
        assert!(
            h.contains("opaque=\"5ccc069c403ebaf9f0171e9517f40e41\""),
            "{h}"
        );
        assert_eq!(DigestChallenge::parse("Basic realm=\"x\""), None);
    }

    #[test]
    fn status_becomes_klipper_objects() {
        let s = crate::model::PrinterStatus::from_status(translate(&json!({
            "printer": {"state": "PRINTING", "temp_nozzle": 214.9, "target_nozzle": 215.0,
                        "temp_bed": 59.8, "target_bed": 60.0, "axis_x": 10.0, "axis_y": 20.0,
                        "axis_z": 0.2, "speed": 100, "fan_print": 3000},
            "job": {"id": 7, "progress": 12.0, "time_printing": 300}
        })));
        assert_eq!(s.print_state(), Some(PrintState::Printing));
        assert_eq!(s.progress(), Some(0.12));
        assert_eq!(s.f64("extruder", "target"), Some(215.0));
        assert_eq!(s.f64("heater_bed", "temperature"), Some(59.8));
        assert_eq!(s.f64("print_stats", "print_duration"), Some(300.0));
    }
}
