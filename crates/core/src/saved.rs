//! Printers kept across launches: a printer a user added is saved in the store, and at the next
//! start it is back in the fleet at once, under its id and name, whether or not it answers yet.
//!
//! [`SavedBackend`] is that fleet entry. It owns one task that connects the printer's real
//! backend (a remote server's, or the boards of a printer.cfg) and tries again with a growing
//! wait while that fails — the printer is off, the network not up yet, the board unplugged —
//! telling each failure as [`LinkState::Connecting`] with its reason and the wait, as a remote
//! backend tells of a connection it lost — except credentials the server refuses, which no wait
//! mends: the link is then [`LinkState::Closed`] with the reason, as a remote backend does. Once connected, every call goes to the real
//! backend and its status and events are passed on through this entry's own [`StatusHub`], so
//! that the API's subscribers (taken when the printer joined the fleet) follow it unchanged. From
//! then on the real backend keeps its connection itself. Until then every call fails with
//! [`PrinterError::NotReady`] naming why.
//!
//! Shutdown is explicit: [`PrinterBackend::close`] stops the task (a connection being made is
//! dropped) and closes the real backend.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::Value;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use crate::model::{
    BackendKind, FileEntry, FileMetadata, HistoryJob, LinkState, PrinterBackend, PrinterError,
    PrinterEvent, PrinterInfo, PrinterResult, SharedBackend, StatusHub, Webcam,
};

/// Makes the real backend of a saved printer: one try.
pub type Connector =
    Box<dyn Fn() -> BoxFuture<'static, Result<SharedBackend, Failed>> + Send + Sync>;

/// Why a try failed, in the user's words, and whether trying again can help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    /// The cause.
    pub reason: String,
    /// No: the server refused the saved credentials (a new key is needed), so the printer's
    /// link is closed instead of retried.
    pub give_up: bool,
}

/// How a saved printer's connection is retried: the first wait, doubled after each failure up
/// to the longest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// The wait after the first failure.
    pub first: Duration,
    /// The longest wait.
    pub longest: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            first: Duration::from_secs(2),
            longest: Duration::from_secs(60),
        }
    }
}

/// What the entry and its task share.
struct Shared {
    hub: StatusHub,
    /// The real backend, once connected.
    backend: RwLock<Option<SharedBackend>>,
    /// Why it is not connected yet (the last failure).
    waiting: RwLock<String>,
}

/// A saved printer's fleet entry (see the module docs).
pub struct SavedBackend {
    kind: BackendKind,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    task: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for SavedBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SavedBackend")
            .field("kind", &self.kind)
            .field("connected", &self.connected().is_ok())
            .finish()
    }
}

impl SavedBackend {
    /// An entry of `kind` whose task starts connecting at once (on the current runtime).
    pub fn start(kind: BackendKind, connect: Connector, retry: Retry) -> Arc<Self> {
        let shared = Arc::new(Shared {
            hub: StatusHub::new(),
            backend: RwLock::new(None),
            waiting: RwLock::new("connecting".to_owned()),
        });
        let (shutdown, stopped) = watch::channel(false);
        let task = tokio::spawn(run(Arc::clone(&shared), connect, retry, stopped));
        Arc::new(Self {
            kind,
            shared,
            shutdown,
            task: std::sync::Mutex::new(Some(task)),
        })
    }

    /// The real backend, or why there is none yet.
    fn connected(&self) -> PrinterResult<SharedBackend> {
        let backend = self
            .shared
            .backend
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        backend.ok_or_else(|| {
            let why = self
                .shared
                .waiting
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            PrinterError::NotReady(format!("Gantry has not connected to it yet ({why})"))
        })
    }
}

impl Drop for SavedBackend {
    fn drop(&mut self) {
        // Not closed: the task ends by itself (dropping what it holds).
        let _ = self.shutdown.send(true);
    }
}

/// Resolves when `stopped` says stop (or its sender is gone).
async fn stop_requested(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// The entry's task: connect (retrying), then pass the real backend's events on.
async fn run(
    shared: Arc<Shared>,
    connect: Connector,
    retry: Retry,
    mut stopped: watch::Receiver<bool>,
) {
    let mut wait = retry.first;
    let backend = loop {
        let attempt = tokio::select! {
            attempt = connect() => attempt,
            () = stop_requested(&mut stopped) => return,
        };
        match attempt {
            Ok(backend) => break backend,
            Err(Failed {
                reason,
                give_up: true,
            }) => {
                tracing::warn!(%reason, "a saved printer refused its credentials; not retried");
                *shared
                    .waiting
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = reason.clone();
                shared
                    .hub
                    .emit(PrinterEvent::Link(LinkState::Closed { reason }));
                return;
            }
            Err(Failed { reason, .. }) => {
                tracing::info!(%reason, retry_in_s = wait.as_secs_f64(), "a saved printer did not connect");
                *shared
                    .waiting
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = reason.clone();
                shared.hub.emit(PrinterEvent::Link(LinkState::Connecting {
                    reason,
                    retry_in_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                }));
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = stop_requested(&mut stopped) => return,
                }
                wait = (wait * 2).min(retry.longest);
            }
        }
    };
    let (status, mut events) = backend.subscribe();
    *shared
        .backend
        .write()
        .unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&backend));
    shared.hub.reset(status.objects().clone());
    shared.hub.emit(PrinterEvent::Link(LinkState::Connected));
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            () = stop_requested(&mut stopped) => return,
        };
        match event {
            Ok(PrinterEvent::Status { delta, eventtime }) => {
                shared.hub.apply(delta, eventtime);
            }
            Ok(PrinterEvent::Reset) | Err(broadcast::error::RecvError::Lagged(_)) => {
                shared.hub.reset(backend.status().objects().clone());
            }
            Ok(other) => shared.hub.emit(other),
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// A call on the real backend, or the reason there is none yet.
macro_rules! forward {
    ($self:ident, |$backend:ident| $call:expr) => {{
        let found = $self.connected();
        Box::pin(async move {
            let $backend = found?;
            $call.await
        })
    }};
}

impl PrinterBackend for SavedBackend {
    fn kind(&self) -> BackendKind {
        self.kind
    }

    fn hub(&self) -> &StatusHub {
        &self.shared.hub
    }

    fn info(&self) -> BoxFuture<'_, PrinterResult<PrinterInfo>> {
        forward!(self, |b| b.info())
    }

    fn gcode_script<'a>(&'a self, script: &'a str) -> BoxFuture<'a, PrinterResult<()>> {
        forward!(self, |b| b.gcode_script(script))
    }

    fn print_start<'a>(&'a self, path: &'a str) -> BoxFuture<'a, PrinterResult<()>> {
        forward!(self, |b| b.print_start(path))
    }

    fn print_pause(&self) -> BoxFuture<'_, PrinterResult<()>> {
        forward!(self, |b| b.print_pause())
    }

    fn print_resume(&self) -> BoxFuture<'_, PrinterResult<()>> {
        forward!(self, |b| b.print_resume())
    }

    fn print_cancel(&self) -> BoxFuture<'_, PrinterResult<()>> {
        forward!(self, |b| b.print_cancel())
    }

    fn emergency_stop(&self) -> BoxFuture<'_, PrinterResult<()>> {
        forward!(self, |b| b.emergency_stop())
    }

    fn files_list(&self) -> BoxFuture<'_, PrinterResult<Vec<FileEntry>>> {
        forward!(self, |b| b.files_list())
    }

    fn file_upload<'a>(
        &'a self,
        path: &'a str,
        data: Vec<u8>,
        start_print: bool,
    ) -> BoxFuture<'a, PrinterResult<FileEntry>> {
        forward!(self, |b| b.file_upload(path, data, start_print))
    }

    fn file_metadata<'a>(&'a self, path: &'a str) -> BoxFuture<'a, PrinterResult<FileMetadata>> {
        forward!(self, |b| b.file_metadata(path))
    }

    fn file_delete<'a>(&'a self, path: &'a str) -> BoxFuture<'a, PrinterResult<()>> {
        forward!(self, |b| b.file_delete(path))
    }

    fn file_download<'a>(&'a self, path: &'a str) -> BoxFuture<'a, PrinterResult<Vec<u8>>> {
        forward!(self, |b| b.file_download(path))
    }

    fn local_file(&self, path: &str) -> Option<std::path::PathBuf> {
        self.connected().ok()?.local_file(path)
    }

    fn history(&self, limit: usize) -> BoxFuture<'_, PrinterResult<Vec<HistoryJob>>> {
        forward!(self, |b| b.history(limit))
    }

    fn webcams(&self) -> BoxFuture<'_, PrinterResult<Vec<Webcam>>> {
        forward!(self, |b| b.webcams())
    }

    fn temperature_store(&self) -> Option<Value> {
        self.connected().ok()?.temperature_store()
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let _ = self.shutdown.send(true);
            let task = self
                .task
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(task) = task {
                let _ = task.await;
            }
            let backend = self
                .shared
                .backend
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(backend) = backend {
                backend.close().await;
            }
            self.shared.hub.emit(PrinterEvent::Link(LinkState::Closed {
                reason: "shut down".into(),
            }));
        })
    }
}
