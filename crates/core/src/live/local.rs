//! The local printer: Gantry's own Klipper host driving an MCU — a board on USB or `gantry sim`
//! — served as a [`PrinterBackend`] like any remote printer.
//!
//! One thread owns the live [`Printer`] (CPU work and the MCU's timing stay off the async
//! runtime). Requests reach it over a channel ([`JobRequest`]): G-code scripts, a print to
//! start, pause, resume, cancel. Between requests the thread keeps klippy's reactor running
//! (heaters, clock sync, the flush timer); a print runs through [`job::run`], which serves the
//! same channel between the file's lines. The emergency stop is a flag the reactor checks at
//! every step, so it works while a command waits (homing, M109).
//!
//! Status: the reactor calls an observer every [`STATUS_PERIOD_S`] — also while a command waits
//! — that builds Klipper's status objects (motion's `toolhead`, `gcode_move`, `motion_report`,
//! `print_stats`, heaters, `fan`, … plus the host's `webhooks`, `virtual_sdcard`,
//! `display_status` and `idle_timeout`) and merges them into the [`StatusHub`]; subscribers get
//! the deltas. Responses go to the hub as they are made. Once a second the heaters' readings go
//! to an in-memory temperature store (Moonraker's `server.temperature_store`) and, with a
//! database, to the SQLite history.
//!
//! Files live in a G-code folder on this machine; uploads are written there (through a
//! temporary file, so a failed upload leaves nothing half-written), and the metadata of a file
//! is the planner's own estimate of it on this printer.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, UNIX_EPOCH};

use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use gantry_motion::config::Config;
use gantry_motion::printer::Printer;
use serde::Serialize;
use serde_json::{Value, json};

use super::history::{HistoryRecorder, unix_time};
use super::job::{self, JobOptions, JobRequest, Reply};
use crate::model::{
    BackendKind, Fields, FileEntry, FileMetadata, HistoryJob, KlippyState, PrinterBackend,
    PrinterError, PrinterEvent, PrinterInfo, PrinterResult, Status, StatusHub, Webcam,
};

/// How often the status objects are rebuilt, s of host time (20 Hz: the live position in the
/// UI and the twin stays under 50 ms behind).
pub const STATUS_PERIOD_S: f64 = 0.050;
/// How often the heaters are sampled for the temperature store and the history, s.
pub const TEMPERATURE_PERIOD_S: f64 = 1.0;
/// Samples kept per sensor in memory (Moonraker keeps 1200: 20 minutes at 1 Hz).
pub const TEMPERATURE_STORE_SIZE: usize = 1200;
/// How long a G-code script may run before the API stops waiting for it (it goes on running).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(3600);
/// How long [`LocalPrinter::close`] waits for a running command before it stops the printer.
pub const CLOSE_GRACE: Duration = Duration::from_secs(3);
/// How long the idle loop runs the reactor between looks at its requests, s.
const IDLE_POLL_S: f64 = 0.050;

/// What the local printer is set up with.
#[derive(Debug, Clone)]
pub struct LocalSetup {
    /// Its name in the printer list and the history (`sim`, `serial:/dev/ttyACM0`).
    pub name: String,
    /// Its printer.cfg, as loaded (for the files' estimates and `configfile`).
    pub config: Config,
    /// Where its G-code files are kept.
    pub gcodes_dir: PathBuf,
    /// The MCU's firmware, as klippy prints it.
    pub firmware: String,
}

/// The in-memory temperature series of each heater: Moonraker's `server.temperature_store`.
#[derive(Debug, Default, Clone, Serialize)]
pub struct SensorSeries {
    /// °C, oldest first.
    pub temperatures: VecDeque<f64>,
    /// °C.
    pub targets: VecDeque<f64>,
    /// 0..1.
    pub powers: VecDeque<f64>,
}

impl SensorSeries {
    fn push(&mut self, temperature: f64, target: f64, power: f64) {
        if self.temperatures.len() == TEMPERATURE_STORE_SIZE {
            self.temperatures.pop_front();
            self.targets.pop_front();
            self.powers.pop_front();
        }
        self.temperatures.push_back(round2(temperature));
        self.targets.push_back(target);
        self.powers.push_back(round2(power));
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// What the host knows of the running job (virtual_sdcard's part).
#[derive(Debug, Default, Clone)]
struct SdcardState {
    file_path: Option<String>,
    file_position: usize,
    file_size: usize,
    is_active: bool,
}

/// State shared by the printer's thread and the API side.
#[derive(Debug, Default)]
struct Shared {
    sdcard: Mutex<SdcardState>,
    temperatures: Mutex<BTreeMap<String, SensorSeries>>,
    /// The live printer's emergency flag (a new one after each restart).
    emergency: Mutex<Option<Arc<AtomicBool>>>,
    /// The MCU's firmware, as klippy prints it.
    firmware: Mutex<String>,
    /// The G-code folder: a job's `virtual_sdcard.file_path` is its absolute path, as
    /// Klipper's is (the twin reads the job's file from there).
    gcodes_dir: PathBuf,
}

/// Connects the printer again from scratch, blocking: `true` resets the MCU first (klippy's
/// FIRMWARE_RESTART), `false` reconnects as klippy's RESTART does. Returns the live printer and
/// its MCU's firmware, or why not.
pub type Reconnect = Arc<dyn Fn(bool) -> Result<(Printer, String), String> + Send + Sync>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Gantry's own Klipper host as a [`PrinterBackend`]. See the module docs.
pub struct LocalPrinter {
    setup: LocalSetup,
    hub: Arc<StatusHub>,
    shared: Arc<Shared>,
    requests: Mutex<Option<mpsc::Sender<JobRequest>>>,
    history: Option<Arc<HistoryRecorder>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for LocalPrinter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalPrinter")
            .field("name", &self.setup.name)
            .finish_non_exhaustive()
    }
}

/// Why the local printer could not start.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// The printer given is not live.
    #[error("the printer is not connected to its MCU")]
    NotLive,
    /// The G-code folder cannot be made.
    #[error("cannot create the G-code folder {path}: {source}")]
    GcodesDir {
        /// The folder.
        path: PathBuf,
        /// The system's reason.
        source: std::io::Error,
    },
    /// The printer's thread could not start.
    #[error("cannot start the printer's thread: {0}")]
    Thread(std::io::Error),
}

impl LocalPrinter {
    /// Serves the live `printer` (see [`super::connect::connect`]) from its own thread, with
    /// the job history in `history` when given.
    ///
    /// # Errors
    /// A printer that is not live, a G-code folder that cannot be created, a thread that
    /// cannot start.
    pub fn start(
        printer: Printer,
        setup: LocalSetup,
        history: Option<HistoryRecorder>,
        reconnect: Option<Reconnect>,
    ) -> Result<Arc<Self>, LocalError> {
        if !printer.is_live() {
            return Err(LocalError::NotLive);
        }
        std::fs::create_dir_all(&setup.gcodes_dir).map_err(|source| LocalError::GcodesDir {
            path: setup.gcodes_dir.clone(),
            source,
        })?;
        let hub = Arc::new(StatusHub::new());
        let shared = Arc::new(Shared {
            gcodes_dir: setup.gcodes_dir.clone(),
            ..Shared::default()
        });
        *lock(&shared.firmware) = setup.firmware.clone();
        let history = history.map(Arc::new);
        let mut printer = printer;
        attach(&mut printer, &hub, &shared, history.as_ref()).map_err(|_| LocalError::NotLive)?;
        // The status objects are there before the first query (not a period later).
        printer.live_observe_now();

        let (tx, rx) = mpsc::channel();
        let host = Host {
            hub: Arc::clone(&hub),
            shared: Arc::clone(&shared),
            history: history.clone(),
            reconnect,
        };
        let thread = std::thread::Builder::new()
            .name(format!("printer-{}", setup.name))
            .spawn(move || serve(printer, &rx, &host))
            .map_err(LocalError::Thread)?;
        Ok(Arc::new(Self {
            setup,
            hub,
            shared,
            requests: Mutex::new(Some(tx)),
            history,
            thread: Mutex::new(Some(thread)),
        }))
    }

    /// The printer's name.
    pub fn name(&self) -> &str {
        &self.setup.name
    }

    /// The heaters' series of the last [`TEMPERATURE_STORE_SIZE`] seconds.
    pub fn temperature_store(&self) -> BTreeMap<String, SensorSeries> {
        lock(&self.shared.temperatures).clone()
    }

    /// Stops the printer's thread (a running print is cancelled first: its queued moves end)
    /// and waits for it. The MCU's heaters go off by themselves within their max_duration
    /// once nothing refreshes them.
    ///
    /// A command that waits long (M109 heating, a long M400) cannot be interrupted between
    /// its steps: after [`CLOSE_GRACE`] the printer is stopped as by M112.
    pub fn close(&self) {
        if let Some(finish) = self.begin_close() {
            finish();
        }
    }

    /// Asks the printer's thread to stop; returns what waits for it (blocking: see
    /// [`LocalPrinter::close`]), or `None` once closed.
    fn begin_close(&self) -> Option<impl FnOnce() + Send + 'static> {
        if let Some(tx) = lock(&self.requests).take() {
            drop(tx);
        }
        let thread = lock(&self.thread).take()?;
        let shared = Arc::clone(&self.shared);
        let name = self.setup.name.clone();
        Some(move || {
            let deadline = std::time::Instant::now() + CLOSE_GRACE;
            while !thread.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if !thread.is_finished()
                && let Some(flag) = lock(&shared.emergency).as_ref()
            {
                tracing::warn!(printer = %name, "closing a busy printer: emergency stop");
                flag.store(true, Ordering::Relaxed);
            }
            let _ = thread.join();
        })
    }

    fn send(&self, request: JobRequest) -> PrinterResult<()> {
        lock(&self.requests)
            .as_ref()
            .ok_or_else(|| PrinterError::Closed(self.setup.name.clone()))?
            .send(request)
            .map_err(|_| PrinterError::Closed(self.setup.name.clone()))
    }

    /// Sends a request that answers, and waits for its answer.
    async fn ask(&self, make: impl FnOnce(Reply) -> JobRequest) -> PrinterResult<()> {
        let (done, answer) = tokio::sync::oneshot::channel();
        self.send(make(done))?;
        match tokio::time::timeout(SCRIPT_TIMEOUT, answer).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(message))) => Err(rejected(message)),
            Ok(Err(_)) => Err(PrinterError::Closed(self.setup.name.clone())),
            Err(_) => Err(PrinterError::Timeout {
                url: format!("local:{}", self.setup.name),
                what: "a G-code script".into(),
                after: SCRIPT_TIMEOUT,
            }),
        }
    }

    /// A file's path under the G-code folder, refusing anything that leaves it.
    fn file_path(&self, path: &str) -> PrinterResult<PathBuf> {
        let relative = Path::new(path);
        let safe = !path.is_empty()
            && relative
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !safe {
            return Err(PrinterError::InvalidInput(format!(
                "invalid file name {path:?}: a path inside the G-code folder, such as part.gcode"
            )));
        }
        Ok(self.setup.gcodes_dir.join(relative))
    }
}

impl Drop for LocalPrinter {
    fn drop(&mut self) {
        self.close();
    }
}

/// A Klipper error message as the API reports it: halts are "not ready", the rest refusals.
fn rejected(message: String) -> PrinterError {
    if message.starts_with("MCU ") || message.starts_with("Lost communication") {
        PrinterError::NotReady(message)
    } else {
        PrinterError::Rejected(message)
    }
}

/// A status object (motion's template value) as JSON fields.
fn to_fields(v: &gantry_motion::printer::StatusValue) -> Fields {
    match serde_json::to_value(v) {
        Ok(Value::Object(map)) => map,
        _ => Fields::new(),
    }
}

/// Builds the status objects at every reactor tick.
struct StatusObserver {
    hub: Arc<StatusHub>,
    shared: Arc<Shared>,
    history: Option<Arc<HistoryRecorder>>,
    next_temperatures: f64,
}

impl StatusObserver {
    fn observe(&mut self, printer: &Printer, now: f64) {
        let mut status = Status::new();
        for name in printer.status_object_names() {
            if name == "configfile" {
                continue;
            }
            if let Some(v) = printer.status_object(&name) {
                status.insert(name, to_fields(&v));
            }
        }
        let (state, message) = match printer.halted() {
            Some(why) => (KlippyState::Shutdown, why.to_owned()),
            None => (KlippyState::Ready, "Printer is ready".to_owned()),
        };
        status.insert(
            "webhooks".into(),
            fields(json!({ "state": state.as_str(), "state_message": message })),
        );
        let sd = lock(&self.shared.sdcard).clone();
        let progress = if sd.file_size == 0 {
            0.0
        } else {
            sd.file_position as f64 / sd.file_size as f64
        };
        status.insert(
            "virtual_sdcard".into(),
            fields(json!({
                "file_path": sd.file_path,
                "progress": progress,
                "is_active": sd.is_active,
                "file_position": sd.file_position,
                "file_size": sd.file_size,
            })),
        );
        if let Some(display) = status.get_mut("display_status")
            && display.get("progress").and_then(Value::as_f64) == Some(0.0)
        {
            display.insert("progress".into(), json!(progress));
        }
        let printing = sd.is_active;
        status.insert(
            "idle_timeout".into(),
            fields(json!({ "state": if printing { "Printing" } else { "Ready" } })),
        );
        self.hub.apply(status, Some(now));

        if now >= self.next_temperatures {
            self.next_temperatures = now + TEMPERATURE_PERIOD_S;
            let readings: Vec<(String, f64, f64, f64)> = printer
                .heater_statuses()
                .into_iter()
                .map(|(n, t, target, power)| (n.to_owned(), t, target, power))
                .collect();
            {
                let mut store = lock(&self.shared.temperatures);
                for (name, t, target, power) in &readings {
                    store
                        .entry(name.clone())
                        .or_default()
                        .push(*t, *target, *power);
                }
            }
            if let Some(h) = &self.history {
                h.temperatures(readings);
            }
        }
    }
}

fn fields(v: Value) -> Fields {
    match v {
        Value::Object(map) => map,
        _ => Fields::new(),
    }
}

/// What the printer's thread shares with the API side.
struct Host {
    hub: Arc<StatusHub>,
    shared: Arc<Shared>,
    history: Option<Arc<HistoryRecorder>>,
    reconnect: Option<Reconnect>,
}

/// Hooks a live printer up to the hub: its responses as they come, its status objects (and the
/// configuration once), its emergency flag.
fn attach(
    printer: &mut Printer,
    hub: &Arc<StatusHub>,
    shared: &Arc<Shared>,
    history: Option<&Arc<HistoryRecorder>>,
) -> Result<(), gantry_motion::toolhead::MoveError> {
    let mut first = Status::new();
    if let Some(v) = printer.status_object("configfile") {
        first.insert("configfile".into(), to_fields(&v));
    }
    hub.reset(first);
    *lock(&shared.emergency) = printer.emergency_flag().ok();
    let sink_hub = Arc::clone(hub);
    printer.set_response_sink(Box::new(move |r| {
        sink_hub.emit(PrinterEvent::GcodeResponse {
            line: r.text.clone(),
        });
    }))?;
    let mut observer = StatusObserver {
        hub: Arc::clone(hub),
        shared: Arc::clone(shared),
        history: history.cloned(),
        next_temperatures: 0.0,
    };
    printer.set_live_observer(
        STATUS_PERIOD_S,
        Box::new(move |p, now| observer.observe(p, now)),
    )
}

/// Which restart a console script asks for, if it is one: klippy handles FIRMWARE_RESTART and
/// RESTART itself, also while the printer is shut down.
fn restart_kind(script: &str) -> Option<bool> {
    match script.trim().to_ascii_uppercase().as_str() {
        "FIRMWARE_RESTART" => Some(true),
        "RESTART" => Some(false),
        _ => None,
    }
}

fn set_webhooks(hub: &StatusHub, state: KlippyState, message: &str) {
    let mut status = Status::new();
    status.insert(
        "webhooks".into(),
        fields(json!({ "state": state.as_str(), "state_message": message })),
    );
    hub.apply(status, None);
}

/// The printer's thread: the reactor between requests, a job when one starts, a reconnection
/// on FIRMWARE_RESTART / RESTART.
fn serve(printer: Printer, rx: &mpsc::Receiver<JobRequest>, host: &Host) {
    let mut printer = Some(printer);
    let mut halt_reported = false;
    loop {
        // Requests first, then the reactor for a little while.
        loop {
            match rx.try_recv() {
                Ok(request) => dispatch(request, &mut printer, rx, host, &mut halt_reported),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => return,
            }
        }
        match printer.as_mut() {
            Some(p) if p.halted().is_none() => {
                if let Err(e) = p.live_idle(IDLE_POLL_S) {
                    tracing::warn!(error = %e, "printer halted");
                }
                continue;
            }
            // A halted printer has no reactor to run: report the halt once, then only
            // requests (refused until a restart).
            Some(p) if !halt_reported => {
                halt_reported = true;
                p.live_observe_now();
            }
            Some(_) | None => {}
        }
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(request) => dispatch(request, &mut printer, rx, host, &mut halt_reported),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// One request: a restart, or what the printer does with it (refused without a printer).
fn dispatch(
    request: JobRequest,
    printer: &mut Option<Printer>,
    rx: &mpsc::Receiver<JobRequest>,
    host: &Host,
    halt_reported: &mut bool,
) {
    let request = match request {
        JobRequest::Script { script, done } => match restart_kind(&script) {
            Some(firmware) => {
                let answer = restart(printer, host, firmware);
                *halt_reported = false;
                let _ = done.send(answer);
                return;
            }
            None => JobRequest::Script { script, done },
        },
        other => other,
    };
    match printer.as_mut() {
        Some(p) => handle_idle_request(p, request, rx, host),
        None => refuse(
            request,
            "The printer is not connected; FIRMWARE_RESTART connects it again",
        ),
    }
}

/// Answers a request that cannot run with `why`.
fn refuse(request: JobRequest, why: &str) {
    match request {
        JobRequest::Script { done, .. } | JobRequest::Start { done, .. } => {
            let _ = done.send(Err(why.to_owned()));
        }
        JobRequest::Pause | JobRequest::Resume | JobRequest::Cancel | JobRequest::Gcode(_) => {}
    }
}

/// Drops the printer and connects it again (`firmware`: reset the MCU first).
fn restart(printer: &mut Option<Printer>, host: &Host, firmware: bool) -> Result<(), String> {
    let Some(reconnect) = &host.reconnect else {
        return Err("This printer cannot be restarted from here".into());
    };
    let what = if firmware {
        "Firmware restart"
    } else {
        "Restart"
    };
    set_webhooks(
        &host.hub,
        KlippyState::Startup,
        &format!("{what}: connecting to the MCU"),
    );
    // The old connection closes before the new one opens the port.
    *printer = None;
    *lock(&host.shared.emergency) = None;
    match reconnect(firmware) {
        Ok((mut p, version)) => {
            if let Err(e) = attach(&mut p, &host.hub, &host.shared, host.history.as_ref()) {
                let why = format!("{what} failed: {e}");
                set_webhooks(&host.hub, KlippyState::Error, &why);
                return Err(why);
            }
            *lock(&host.shared.firmware) = version;
            // The status objects at once, so a query right after the restart sees the printer
            // ready (`attach` starts the hub afresh; the observer would publish 50 ms later).
            p.live_observe_now();
            *printer = Some(p);
            tracing::info!("{what}: the printer is ready");
            Ok(())
        }
        Err(e) => {
            let why = format!("{what} failed: {e}");
            set_webhooks(&host.hub, KlippyState::Error, &why);
            Err(why)
        }
    }
}

fn handle_idle_request(
    printer: &mut Printer,
    request: JobRequest,
    rx: &mpsc::Receiver<JobRequest>,
    host: &Host,
) {
    let console = |printer: &mut Printer, script: &str| {
        job::run_script(printer, script, |p, line| p.live_run_line(line, 0))
    };
    if let Some(why) = printer.halted().map(str::to_owned) {
        // Nothing runs on a halted printer: answers say why.
        refuse(
            request,
            &format!("{why}; FIRMWARE_RESTART brings the printer back"),
        );
        return;
    }
    match request {
        JobRequest::Pause => drop(console(printer, "PAUSE")),
        JobRequest::Resume => drop(console(printer, "RESUME")),
        JobRequest::Cancel => drop(console(printer, "CANCEL_PRINT")),
        JobRequest::Gcode(script) => drop(console(printer, &script)),
        JobRequest::Script { script, done } => {
            let answer = match console(printer, &script) {
                Ok(answer) => answer,
                Err(e) => Err(e.to_string()),
            };
            let _ = done.send(answer);
        }
        JobRequest::Start {
            filename,
            gcode,
            done,
        } => {
            let _ = done.send(Ok(()));
            print(printer, &filename, &gcode, rx, host);
        }
    }
}

/// Runs one job to its end (complete, cancelled, failed or halted).
fn print(
    printer: &mut Printer,
    filename: &str,
    gcode: &[u8],
    rx: &mpsc::Receiver<JobRequest>,
    host: &Host,
) {
    let (hub, shared) = (&host.hub, &host.shared);
    *lock(&shared.sdcard) = SdcardState {
        file_path: Some(shared.gcodes_dir.join(filename).display().to_string()),
        file_position: 0,
        file_size: gcode.len(),
        is_active: true,
    };
    hub.emit(PrinterEvent::HistoryChanged);
    let result = job::run(
        printer,
        gcode,
        JobOptions {
            filename,
            requests: Some(rx),
            history: host.history.as_deref(),
            record_temperatures: false,
        },
        |p| {
            lock(&shared.sdcard).file_position = p.file_position;
        },
        // The printer's own responses reach the hub through its sink; what comes here is the
        // job's (a last line without a line end, not run).
        |r| {
            hub.emit(PrinterEvent::GcodeResponse {
                line: r.text.clone(),
            });
        },
    );
    lock(&shared.sdcard).is_active = false;
    match result {
        Ok(report) => tracing::info!(
            file = filename,
            outcome = ?report.outcome,
            lines = report.lines,
            "print ended"
        ),
        Err(e) => {
            tracing::warn!(file = filename, error = %e, "print failed");
            hub.emit(PrinterEvent::GcodeResponse {
                line: format!("!! Print of {filename} stopped: {e}"),
            });
        }
    }
    hub.emit(PrinterEvent::HistoryChanged);
}

impl PrinterBackend for LocalPrinter {
    fn kind(&self) -> BackendKind {
        BackendKind::Local
    }

    /// Stops the printer's thread (as [`LocalPrinter::close`], off the async runtime): its
    /// MCUs' ports are closed when this resolves.
    fn close(&self) -> BoxFuture<'_, ()> {
        let finish = self.begin_close();
        Box::pin(async move {
            if let Some(finish) = finish {
                let _ = tokio::task::spawn_blocking(finish).await;
            }
        })
    }

    fn hub(&self) -> &StatusHub {
        &self.hub
    }

    fn info(&self) -> BoxFuture<'_, PrinterResult<PrinterInfo>> {
        async move {
            let status = self.hub.snapshot();
            let state = status.klippy_state().unwrap_or(KlippyState::Startup);
            let message = status
                .str("webhooks", "state_message")
                .unwrap_or_default()
                .to_owned();
            Ok(PrinterInfo {
                kind: BackendKind::Local,
                server_version: format!("Gantry {}", crate::VERSION),
                firmware: Some(lock(&self.shared.firmware).clone()),
                hostname: None,
                state,
                state_message: message,
            })
        }
        .boxed()
    }

    fn gcode_script<'a>(&'a self, script: &'a str) -> BoxFuture<'a, PrinterResult<()>> {
        async move {
            self.ask(|done| JobRequest::Script {
                script: script.to_owned(),
                done,
            })
            .await
        }
        .boxed()
    }

    fn print_start<'a>(&'a self, path: &'a str) -> BoxFuture<'a, PrinterResult<()>> {
        async move {
            let file = self.file_path(path)?;
            let read = file.clone();
            let gcode = tokio::task::spawn_blocking(move || std::fs::read(read))
                .await
                .map_err(|e| PrinterError::Closed(e.to_string()))?
                .map_err(|e| PrinterError::InvalidInput(format!("cannot read {path}: {e}")))?;
            if gcode.starts_with(b"GCDE") {
                return Err(PrinterError::InvalidInput(format!(
                    "{path} is binary G-code (.bgcode), which Gantry cannot print yet; export ASCII G-code"
                )));
            }
            self.ask(|done| JobRequest::Start {
                filename: path.to_owned(),
                gcode,
                done,
            })
            .await
        }
        .boxed()
    }

    fn print_pause(&self) -> BoxFuture<'_, PrinterResult<()>> {
        async move { self.ask(|done| script("PAUSE", done)).await }.boxed()
    }

    fn print_resume(&self) -> BoxFuture<'_, PrinterResult<()>> {
        async move { self.ask(|done| script("RESUME", done)).await }.boxed()
    }

    fn print_cancel(&self) -> BoxFuture<'_, PrinterResult<()>> {
        async move { self.ask(|done| script("CANCEL_PRINT", done)).await }.boxed()
    }

    fn emergency_stop(&self) -> BoxFuture<'_, PrinterResult<()>> {
        async move {
            match lock(&self.shared.emergency).as_ref() {
                Some(flag) => {
                    flag.store(true, Ordering::Relaxed);
                    Ok(())
                }
                None => Err(PrinterError::NotReady("the printer is not live".into())),
            }
        }
        .boxed()
    }

    fn files_list(&self) -> BoxFuture<'_, PrinterResult<Vec<FileEntry>>> {
        async move {
            let dir = self.setup.gcodes_dir.clone();
            tokio::task::spawn_blocking(move || list_gcodes(&dir))
                .await
                .map_err(|e| PrinterError::Closed(e.to_string()))?
        }
        .boxed()
    }

    fn file_upload<'a>(
        &'a self,
        path: &'a str,
        data: Vec<u8>,
        start_print: bool,
    ) -> BoxFuture<'a, PrinterResult<FileEntry>> {
        async move {
            let file = self.file_path(path)?;
            let size = data.len() as u64;
            let written = file.clone();
            tokio::task::spawn_blocking(move || write_atomically(&written, &data))
                .await
                .map_err(|e| PrinterError::Closed(e.to_string()))?
                .map_err(|e| {
                    PrinterError::InvalidInput(format!("cannot write {}: {e}", file.display()))
                })?;
            self.hub.emit(PrinterEvent::FilesChanged);
            if start_print {
                self.print_start(path).await?;
            }
            Ok(FileEntry {
                path: path.to_owned(),
                size,
                modified: unix_time(),
            })
        }
        .boxed()
    }

    fn file_download<'a>(&'a self, path: &'a str) -> BoxFuture<'a, PrinterResult<Vec<u8>>> {
        async move {
            let file = self.file_path(path)?;
            let read = file.clone();
            tokio::task::spawn_blocking(move || std::fs::read(&read))
                .await
                .map_err(|e| PrinterError::Closed(e.to_string()))?
                .map_err(|e| {
                    PrinterError::InvalidInput(format!("cannot read {}: {e}", file.display()))
                })
        }
        .boxed()
    }

    fn local_file(&self, path: &str) -> Option<PathBuf> {
        self.file_path(path).ok().filter(|f| f.is_file())
    }

    fn file_metadata<'a>(&'a self, path: &'a str) -> BoxFuture<'a, PrinterResult<FileMetadata>> {
        async move {
            let file = self.file_path(path)?;
            let config = self.setup.config.clone();
            let path = path.to_owned();
            tokio::task::spawn_blocking(move || metadata_of(&config, &file, &path))
                .await
                .map_err(|e| PrinterError::Closed(e.to_string()))?
        }
        .boxed()
    }

    fn file_delete<'a>(&'a self, path: &'a str) -> BoxFuture<'a, PrinterResult<()>> {
        async move {
            let file = self.file_path(path)?;
            tokio::task::spawn_blocking(move || std::fs::remove_file(file))
                .await
                .map_err(|e| PrinterError::Closed(e.to_string()))?
                .map_err(|e| PrinterError::InvalidInput(format!("cannot delete {path}: {e}")))?;
            self.hub.emit(PrinterEvent::FilesChanged);
            Ok(())
        }
        .boxed()
    }

    fn history(&self, limit: usize) -> BoxFuture<'_, PrinterResult<Vec<HistoryJob>>> {
        async move {
            let Some(h) = self.history.clone() else {
                return Err(PrinterError::Unsupported {
                    backend: BackendKind::Local,
                    what: "job history (no database is open)",
                });
            };
            let printer = h.printer();
            let jobs = tokio::task::spawn_blocking(move || {
                let limit = u32::try_from(limit).unwrap_or(u32::MAX);
                h.read(move |store| store.job_history(Some(printer), limit, None))
            })
            .await
            .map_err(|e| PrinterError::Closed(e.to_string()))?
            .ok_or_else(|| PrinterError::Closed("the job history".into()))?
            .map_err(|e| PrinterError::Protocol {
                url: "job history".into(),
                message: e.to_string(),
            })?;
            Ok(jobs
                .into_iter()
                .map(|j| HistoryJob {
                    job_id: j.job_id.to_string(),
                    filename: j.filename,
                    status: j.status.as_str().to_owned(),
                    start_time: j.start_time,
                    end_time: j.end_time,
                    print_duration: j.print_duration_s,
                    total_duration: j.total_duration_s,
                    filament_used: j.filament_used_mm,
                })
                .collect())
        }
        .boxed()
    }

    fn temperature_store(&self) -> Option<Value> {
        serde_json::to_value(LocalPrinter::temperature_store(self)).ok()
    }

    fn webcams(&self) -> BoxFuture<'_, PrinterResult<Vec<Webcam>>> {
        // A local printer has no camera server; none configured is the truthful answer.
        async move { Ok(Vec::new()) }.boxed()
    }
}

fn script(text: &str, done: Reply) -> JobRequest {
    JobRequest::Script {
        script: text.to_owned(),
        done,
    }
}

/// The G-code files under `dir` (recursively), by path.
fn list_gcodes(dir: &Path) -> PrinterResult<Vec<FileEntry>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d)
            .map_err(|e| PrinterError::InvalidInput(format!("cannot list {}: {e}", d.display())))?;
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.is_dir() {
                stack.push(path);
                continue;
            }
            let is_gcode = path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "gcode" | "g" | "gco"));
            if !is_gcode {
                continue;
            }
            let Ok(relative) = path.strip_prefix(dir) else {
                continue;
            };
            out.push(FileEntry {
                path: relative.to_string_lossy().replace('\\', "/"),
                size: meta.len(),
                modified: meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map_or(0.0, |d| d.as_secs_f64()),
            });
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Writes `data` to `path` through a temporary file beside it and a rename.
pub(crate) fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("gcode.part");
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// A file's metadata: its size, the slicer named in its header, and the planner's estimate of
/// it on this printer.
fn metadata_of(config: &Config, file: &Path, path: &str) -> PrinterResult<FileMetadata> {
    let data = std::fs::read(file)
        .map_err(|e| PrinterError::InvalidInput(format!("cannot read {path}: {e}")))?;
    let modified = std::fs::metadata(file)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs_f64());
    let (slicer, slicer_version) = slicer_of(&data);
    let estimate = gantry_motion::estimate::estimate(config, &data).ok();
    let raw = json!({
        "size": data.len(),
        "slicer": slicer,
        "slicer_version": slicer_version,
        "estimated_time": estimate.as_ref().map(|e| e.print_time_s),
        "filament_total": estimate.as_ref().map(|e| e.filament_mm),
        "layer_count": estimate.as_ref().map(|e| e.layers.len()),
        "object_height": estimate.as_ref().and_then(|e| e.layers.last().map(|l| l.z_mm)),
    });
    Ok(FileMetadata {
        path: path.to_owned(),
        size: Some(data.len() as u64),
        modified,
        slicer,
        slicer_version,
        estimated_time_s: estimate.as_ref().map(|e| e.print_time_s),
        filament_total_mm: estimate.as_ref().map(|e| e.filament_mm),
        layer_height_mm: None,
        object_height_mm: estimate
            .as_ref()
            .and_then(|e| e.layers.last().map(|l| l.z_mm)),
        raw,
    })
}

/// The slicer and its version from the first lines' comments (`; generated by PrusaSlicer
/// 2.7.4 on …`, `;Generated with Cura_SteamEngine 5.9.1`, `; OrcaSlicer 2.3.0`).
fn slicer_of(data: &[u8]) -> (Option<String>, Option<String>) {
    const SLICERS: [&str; 11] = [
        "PrusaSlicer",
        "SuperSlicer",
        "OrcaSlicer",
        "BambuStudio",
        "Cura_SteamEngine",
        "Simplify3D",
        "ideaMaker",
        "Slic3r",
        "FullControl",
        "IdeaMaker",
        "KISSlicer",
    ];
    let head = String::from_utf8_lossy(&data[..data.len().min(4096)]);
    for line in head.lines().filter(|l| l.starts_with(';')) {
        for name in SLICERS {
            if let Some(pos) = line.find(name) {
                let rest = line[pos + name.len()..].trim_start_matches([' ', ':', '-', 'v', 'V']);
                let version: String = rest
                    .chars()
                    .take_while(|c| {
                        c.is_ascii_alphanumeric() || *c == '.' || *c == '-' || *c == '+'
                    })
                    .collect();
                let name = if name == "Cura_SteamEngine" {
                    "Cura"
                } else {
                    name
                };
                return (
                    Some(name.to_owned()),
                    (!version.is_empty()).then_some(version),
                );
            }
        }
    }
    (None, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slicers_are_named_from_their_header_comments() {
        assert_eq!(
            slicer_of(b"; generated by PrusaSlicer 2.7.4+win64 on 2024-01-01\nG28\n"),
            (Some("PrusaSlicer".into()), Some("2.7.4+win64".into()))
        );
        assert_eq!(
            slicer_of(b";FLAVOR:Marlin\n;Generated with Cura_SteamEngine 5.9.1\n"),
            (Some("Cura".into()), Some("5.9.1".into()))
        );
        assert_eq!(slicer_of(b"G28\nG1 X1\n"), (None, None));
    }

    #[test]
    fn the_temperature_store_keeps_the_last_samples() {
        let mut s = SensorSeries::default();
        for i in 0..(TEMPERATURE_STORE_SIZE + 5) {
            s.push(i as f64, 200.0, 0.5);
        }
        assert_eq!(s.temperatures.len(), TEMPERATURE_STORE_SIZE);
        assert_eq!(s.temperatures.front().copied(), Some(5.0));
    }
}
