//! The one printer model every backend feeds: Klipper's status objects, their deltas, and the
//! [`PrinterBackend`] trait that Moonraker, OctoPrint, PrusaLink and Gantry's own live host
//! implement.
//!
//! # Status objects
//! A printer's state is what Klipper's `printer.objects.query` returns: a map from object name
//! (`webhooks`, `toolhead`, `extruder`, `heater_bed`, `fan`, `print_stats`, `virtual_sdcard`,
//! `display_status`, `gcode_move`, …) to a map of fields (`temperature`, `target`, `state`, …) with
//! JSON values, exactly as Klipper names and shapes them (see Klipper's docs/Status_Reference.md).
//! [`Status`] is that map. Backends that are not Klipper (OctoPrint, PrusaLink) translate their
//! own state into the same objects, so the UI and the API read one vocabulary.
//!
//! [`PrinterStatus::merge`] applies a partial update and returns the **delta**: the fields whose
//! values actually changed, which is what Moonraker sends as `notify_status_update` (fields are
//! compared and replaced whole, as Klipper does: a changed `position` list is sent in full).
//! [`filter`] cuts a status or a delta down to one client's subscription
//! (`{objects: {name: null | [fields]}}`, [`ObjectQuery`]).
//!
//! # Backends
//! [`StatusHub`] holds one printer's [`PrinterStatus`] and a broadcast channel of
//! [`PrinterEvent`]s (status deltas, G-code responses, connection changes). A backend owns one
//! hub and feeds it; [`StatusHub::subscribe`] hands a client the current snapshot and a receiver
//! atomically, so no delta is lost or applied twice between the two.
//!
//! [`PrinterBackend`] is the control surface: G-code scripts, print start/pause/resume/cancel,
//! emergency stop, files, history, webcams. It is object-safe (`Arc<dyn PrinterBackend>`) — the
//! async methods return boxed futures — so the API server can hold printers of every kind in
//! one list and serve them with Moonraker's method names. A backend that cannot do something
//! (OctoPrint has no job history) returns [`PrinterError::Unsupported`], never a fake answer.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::broadcast;

/// One status object's fields: field name → JSON value (Klipper's shapes).
pub type Fields = serde_json::Map<String, Value>;

/// Status objects: object name → fields. Also the shape of a delta (only changed fields).
pub type Status = BTreeMap<String, Fields>;

/// Which objects and fields a client wants: object name → `None` (every field) or a field list.
/// Moonraker's `printer.objects.query` / `subscribe` parameter `objects`.
pub type ObjectQuery = BTreeMap<String, Option<Vec<String>>>;

/// Klipper's object names used across Gantry.
pub mod objects {
    /// Klippy's state: `state` (startup/ready/error/shutdown), `state_message`.
    pub const WEBHOOKS: &str = "webhooks";
    /// `position`, `homed_axes`, `print_time`, `estimated_print_time`, `axis_minimum`, …
    pub const TOOLHEAD: &str = "toolhead";
    /// The first extruder: `temperature`, `target`, `power`, `pressure_advance`, `can_extrude`.
    pub const EXTRUDER: &str = "extruder";
    /// `temperature`, `target`, `power`.
    pub const HEATER_BED: &str = "heater_bed";
    /// The part-cooling fan: `speed` (0..1).
    pub const FAN: &str = "fan";
    /// The job: `filename`, `state`, `print_duration`, `total_duration`, `filament_used`,
    /// `message`, `info.{current_layer,total_layer}`.
    pub const PRINT_STATS: &str = "print_stats";
    /// `progress` (0..1 by file position), `file_position`, `file_size`, `is_active`, `file_path`.
    pub const VIRTUAL_SDCARD: &str = "virtual_sdcard";
    /// `progress` (0..1), `message` (M117).
    pub const DISPLAY_STATUS: &str = "display_status";
    /// `gcode_position`, `position`, `homing_origin`, `speed`, `speed_factor`, `extrude_factor`,
    /// `absolute_coordinates`, `absolute_extrude`.
    pub const GCODE_MOVE: &str = "gcode_move";
    /// `is_paused`.
    pub const PAUSE_RESUME: &str = "pause_resume";
}

/// Klippy's state as `webhooks.state` and Moonraker's `klippy_state` give it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KlippyState {
    /// Klippy is starting (reading the config, connecting MCUs).
    Startup,
    /// Ready to print.
    Ready,
    /// Failed to start: see `webhooks.state_message`.
    Error,
    /// Shut down (an MCU error, an emergency stop): a firmware restart is needed.
    Shutdown,
    /// No Klippy (or no printer connection) behind the server.
    Disconnected,
}

impl KlippyState {
    /// Klipper's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Startup => "startup",
            Self::Ready => "ready",
            Self::Error => "error",
            Self::Shutdown => "shutdown",
            Self::Disconnected => "disconnected",
        }
    }

    /// Parses Klipper's spelling; anything else is `None`.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "startup" => Self::Startup,
            "ready" => Self::Ready,
            "error" => Self::Error,
            "shutdown" => Self::Shutdown,
            "disconnected" => Self::Disconnected,
            _ => return None,
        })
    }
}

impl fmt::Display for KlippyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `print_stats.state`: the planner's type, shared by every backend.
pub use gantry_motion::printer::PrintState;

/// A heater's reading, from an `extruder*`, `heater_bed` or `heater_generic` object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeaterReading {
    /// The object name (`extruder`, `heater_bed`, …).
    pub name: String,
    /// Measured temperature, °C.
    pub temperature: f64,
    /// Target temperature, °C (0 = off).
    pub target: f64,
    /// PWM duty 0..1, when the backend knows it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub power: Option<f64>,
}

/// A one-screen summary of a printer's status: what `gantry remote URL status` prints and what a
/// printer card shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusSummary {
    /// `webhooks.state`, when known.
    pub klippy_state: Option<KlippyState>,
    /// `webhooks.state_message` when it is not empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_message: Option<String>,
    /// `print_stats.state`, when known.
    pub print_state: Option<PrintState>,
    /// `print_stats.filename` when not empty.
    pub filename: Option<String>,
    /// Job progress 0..1 (`display_status.progress`, else `virtual_sdcard.progress`).
    pub progress: Option<f64>,
    /// `print_stats.print_duration`, seconds.
    pub print_duration: Option<f64>,
    /// Every heater object, sorted by name.
    pub heaters: Vec<HeaterReading>,
    /// `toolhead.position` (x, y, z, e), when known.
    pub position: Option<Vec<f64>>,
    /// `display_status.message` or `print_stats.message` when not empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl fmt::Display for StatusSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let klippy = self.klippy_state.map_or("unknown", KlippyState::as_str);
        write!(f, "printer: {klippy}")?;
        if let Some(msg) = &self.state_message {
            write!(f, " ({})", msg.trim())?;
        }
        let job = self.print_state.map_or("unknown", PrintState::as_str);
        write!(f, "\njob: {job}")?;
        if let Some(name) = &self.filename {
            write!(f, " {name}")?;
        }
        if let Some(p) = self.progress {
            write!(f, " {:.1}%", p * 100.0)?;
        }
        if let Some(d) = self.print_duration {
            write!(f, " ({d:.0} s printing)")?;
        }
        for h in &self.heaters {
            write!(
                f,
                "\n{}: {:.1} °C / {:.1} °C",
                h.name, h.temperature, h.target
            )?;
        }
        if let Some(pos) = &self.position {
            let parts: Vec<String> = pos.iter().map(|v| format!("{v:.2}")).collect();
            write!(f, "\nposition: {}", parts.join(" "))?;
        }
        if let Some(m) = &self.message {
            write!(f, "\nmessage: {m}")?;
        }
        Ok(())
    }
}

/// A printer's status objects, merged from full snapshots and partial updates.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PrinterStatus {
    objects: Status,
}

impl PrinterStatus {
    /// An empty status (no objects).
    pub fn new() -> Self {
        Self::default()
    }

    /// A status holding these objects.
    pub fn from_status(objects: Status) -> Self {
        Self { objects }
    }

    /// Applies a partial update — each object's listed fields replace the stored ones, other
    /// fields stay — and returns the delta: the objects and fields whose values changed (a
    /// field equal to the stored value is left out; an object new to the status appears even
    /// with no fields, so that clients learn of it). An empty delta means nothing changed.
    pub fn merge(&mut self, update: Status) -> Status {
        let mut delta = Status::new();
        for (name, fields) in update {
            let (stored, is_new) = match self.objects.get_mut(&name) {
                Some(stored) => (stored, false),
                None => (self.objects.entry(name.clone()).or_default(), true),
            };
            let mut changed = Fields::new();
            for (field, value) in fields {
                if stored.get(&field) != Some(&value) {
                    stored.insert(field.clone(), value.clone());
                    changed.insert(field, value);
                }
            }
            if is_new || !changed.is_empty() {
                delta.insert(name, changed);
            }
        }
        delta
    }

    /// Replaces the whole status with `full` and returns the delta from the old one to it.
    /// Objects missing from `full` are dropped (they are not in the delta: a client that must
    /// know uses a fresh snapshot, as after a Klippy restart).
    pub fn replace(&mut self, full: Status) -> Status {
        self.objects.retain(|name, _| full.contains_key(name));
        self.merge(full)
    }

    /// Removes every object (Klippy disconnected) and returns what was there.
    pub fn clear(&mut self) -> Status {
        std::mem::take(&mut self.objects)
    }

    /// All objects.
    pub fn objects(&self) -> &Status {
        &self.objects
    }

    /// The object names, sorted (`printer.objects.list`).
    pub fn names(&self) -> Vec<String> {
        self.objects.keys().cloned().collect()
    }

    /// One object's fields.
    pub fn object(&self, name: &str) -> Option<&Fields> {
        self.objects.get(name)
    }

    /// One field of one object.
    pub fn get(&self, object: &str, field: &str) -> Option<&Value> {
        self.objects.get(object)?.get(field)
    }

    /// A number field.
    pub fn f64(&self, object: &str, field: &str) -> Option<f64> {
        self.get(object, field)?.as_f64()
    }

    /// A string field.
    pub fn str(&self, object: &str, field: &str) -> Option<&str> {
        self.get(object, field)?.as_str()
    }

    /// The objects and fields `query` asks for (`printer.objects.query`): unknown objects come
    /// back empty, as Klipper answers them; unknown fields are left out.
    pub fn query(&self, query: &ObjectQuery) -> Status {
        query
            .iter()
            .map(|(name, fields)| {
                let stored = self.objects.get(name);
                let picked = match (stored, fields) {
                    (None, _) => Fields::new(),
                    (Some(all), None) => all.clone(),
                    (Some(all), Some(wanted)) => wanted
                        .iter()
                        .filter_map(|f| all.get(f).map(|v| (f.clone(), v.clone())))
                        .collect(),
                };
                (name.clone(), picked)
            })
            .collect()
    }

    /// `webhooks.state`.
    pub fn klippy_state(&self) -> Option<KlippyState> {
        KlippyState::parse(self.str(objects::WEBHOOKS, "state")?)
    }

    /// `print_stats.state`.
    pub fn print_state(&self) -> Option<PrintState> {
        PrintState::parse(self.str(objects::PRINT_STATS, "state")?)
    }

    /// Every heater object (`extruder`, `extruder1`…, `heater_bed`, `heater_generic NAME`) that
    /// has a temperature, sorted by name.
    pub fn heaters(&self) -> Vec<HeaterReading> {
        self.objects
            .iter()
            .filter(|(name, _)| {
                name.starts_with("extruder")
                    || name.as_str() == objects::HEATER_BED
                    || name.starts_with("heater_generic ")
            })
            .filter_map(|(name, fields)| {
                Some(HeaterReading {
                    name: name.clone(),
                    temperature: fields.get("temperature")?.as_f64()?,
                    target: fields.get("target").and_then(Value::as_f64).unwrap_or(0.0),
                    power: fields.get("power").and_then(Value::as_f64),
                })
            })
            .collect()
    }

    /// Job progress 0..1: `display_status.progress` (M73 or file position), else
    /// `virtual_sdcard.progress`.
    pub fn progress(&self) -> Option<f64> {
        self.f64(objects::DISPLAY_STATUS, "progress")
            .or_else(|| self.f64(objects::VIRTUAL_SDCARD, "progress"))
    }

    /// The summary a status line shows.
    pub fn summary(&self) -> StatusSummary {
        let non_empty = |s: Option<&str>| s.filter(|s| !s.trim().is_empty()).map(str::to_owned);
        StatusSummary {
            klippy_state: self.klippy_state(),
            state_message: non_empty(self.str(objects::WEBHOOKS, "state_message")),
            print_state: self.print_state(),
            filename: non_empty(self.str(objects::PRINT_STATS, "filename")),
            progress: self.progress(),
            print_duration: self.f64(objects::PRINT_STATS, "print_duration"),
            heaters: self.heaters(),
            position: self
                .get(objects::TOOLHEAD, "position")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_f64).collect()),
            message: non_empty(self.str(objects::DISPLAY_STATUS, "message"))
                .or_else(|| non_empty(self.str(objects::PRINT_STATS, "message"))),
        }
    }
}

/// Cuts `status` (a snapshot or a delta) down to what `query` subscribes to; objects left with
/// no fields are dropped, so an empty result means "nothing for this subscriber".
pub fn filter(status: &Status, query: &ObjectQuery) -> Status {
    let mut out = Status::new();
    for (name, wanted) in query {
        let Some(fields) = status.get(name) else {
            continue;
        };
        let picked: Fields = match wanted {
            None => fields.clone(),
            Some(wanted) => fields
                .iter()
                .filter(|(k, _)| wanted.iter().any(|w| w == *k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        if !picked.is_empty() {
            out.insert(name.clone(), picked);
        }
    }
    out
}

/// The state of the link between Gantry and a printer's server (not the printer's own state).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum LinkState {
    /// Connected and identified.
    Connected,
    /// Not connected yet since Gantry started (a saved printer that does not answer); the
    /// next try is in `retry_in_ms`.
    Connecting {
        /// Why the last try failed.
        reason: String,
        /// Milliseconds until the next try.
        retry_in_ms: u64,
    },
    /// The connection was lost; the next try is in `retry_in_ms`.
    Reconnecting {
        /// Why the last connection ended or the last try failed.
        reason: String,
        /// Milliseconds until the next try (the backoff).
        retry_in_ms: u64,
    },
    /// Closed for good (the backend was shut down, or the credentials were refused).
    Closed {
        /// Why.
        reason: String,
    },
}

/// What a backend tells its subscribers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum PrinterEvent {
    /// Changed fields (Moonraker's `notify_status_update`). `eventtime` is the server's clock
    /// when it sent one.
    Status {
        /// The delta.
        delta: Status,
        /// Klipper's eventtime, seconds, when known.
        #[serde(skip_serializing_if = "Option::is_none")]
        eventtime: Option<f64>,
    },
    /// A line of G-code output (Moonraker's `notify_gcode_response`).
    GcodeResponse {
        /// The line, such as `ok` or `!! Must home axis first`.
        line: String,
    },
    /// The set of objects changed wholesale (Klippy restarted, the link came back): take a fresh
    /// snapshot instead of applying deltas.
    Reset,
    /// The link to the server changed.
    Link(LinkState),
    /// The server's file list changed (Moonraker's `notify_filelist_changed`).
    FilesChanged,
    /// The server's job history changed (Moonraker's `notify_history_changed`).
    HistoryChanged,
}

/// How many events a slow subscriber may fall behind before it sees `Lagged` and must take a
/// fresh snapshot.
pub const EVENT_CAPACITY: usize = 1024;

/// One printer's status and its event channel (see the module docs).
#[derive(Debug)]
pub struct StatusHub {
    status: Mutex<PrinterStatus>,
    events: broadcast::Sender<PrinterEvent>,
}

impl Default for StatusHub {
    fn default() -> Self {
        Self::new()
    }
}

impl StatusHub {
    /// An empty hub.
    pub fn new() -> Self {
        Self {
            status: Mutex::new(PrinterStatus::new()),
            events: broadcast::channel(EVENT_CAPACITY).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PrinterStatus> {
        // The status stays consistent under any panic (merge either ran or not): go on.
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Merges a partial update, broadcasts the delta when it is not empty, and returns it.
    pub fn apply(&self, update: Status, eventtime: Option<f64>) -> Status {
        let mut status = self.lock();
        let delta = status.merge(update);
        if !delta.is_empty() {
            let _ = self.events.send(PrinterEvent::Status {
                delta: delta.clone(),
                eventtime,
            });
        }
        delta
    }

    /// Replaces the whole status (a fresh subscription) and broadcasts [`PrinterEvent::Reset`].
    pub fn reset(&self, full: Status) {
        let mut status = self.lock();
        status.replace(full);
        let _ = self.events.send(PrinterEvent::Reset);
    }

    /// Broadcasts an event that is not a status change.
    pub fn emit(&self, event: PrinterEvent) {
        let _guard = self.lock();
        let _ = self.events.send(event);
    }

    /// A copy of the current status.
    pub fn snapshot(&self) -> PrinterStatus {
        self.lock().clone()
    }

    /// The current status and a receiver of every event after it, taken atomically.
    pub fn subscribe(&self) -> (PrinterStatus, broadcast::Receiver<PrinterEvent>) {
        let status = self.lock();
        (status.clone(), self.events.subscribe())
    }
}

/// Which kind of server a backend talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Moonraker (Klipper's API server).
    Moonraker,
    /// OctoPrint.
    OctoPrint,
    /// PrusaLink (Prusa MK4/MINI/XL/Core One, or the MK3's Raspberry Pi add-on).
    PrusaLink,
    /// Gantry's own Klipper host on this machine.
    Local,
}

impl BackendKind {
    /// The product's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Moonraker => "Moonraker",
            Self::OctoPrint => "OctoPrint",
            Self::PrusaLink => "PrusaLink",
            Self::Local => "Gantry",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Who a backend is: what `server.info` and `printer.info` say.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrinterInfo {
    /// The server's kind.
    pub kind: BackendKind,
    /// The server software and version, such as `Moonraker v0.11.0` or `OctoPrint 1.11.8`.
    pub server_version: String,
    /// The printer's firmware or host (Klipper's `software_version`, the firmware's name), when
    /// known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firmware: Option<String>,
    /// The server's host name, when it says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Klippy's state (OctoPrint and PrusaLink map theirs: operational → ready, error → error,
    /// not connected → disconnected).
    pub state: KlippyState,
    /// A human-readable word on the state (Klippy's `state_message`, OctoPrint's state text).
    pub state_message: String,
}

/// One file on the printer's server (in the G-code root).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path relative to the G-code root, `/`-separated.
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// Last modification, seconds since the Unix epoch (0 when unknown).
    pub modified: f64,
}

/// What the server knows about a G-code file (Moonraker's `server.files.metadata`, OctoPrint's
/// analysis). Every field but `path` is optional: slicers differ.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct FileMetadata {
    /// Path relative to the G-code root.
    pub path: String,
    /// Bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Seconds since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modified: Option<f64>,
    /// The slicer's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slicer: Option<String>,
    /// The slicer's version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slicer_version: Option<String>,
    /// Estimated print time, seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimated_time_s: Option<f64>,
    /// Filament length, mm.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filament_total_mm: Option<f64>,
    /// Layer height, mm.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer_height_mm: Option<f64>,
    /// Height of the printed object, mm.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object_height_mm: Option<f64>,
    /// The server's whole answer, for fields not above (thumbnails, temperatures, …).
    pub raw: Value,
}

/// One finished, cancelled or running job from the server's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryJob {
    /// The server's id for the job.
    pub job_id: String,
    /// The G-code file.
    pub filename: String,
    /// `completed`, `cancelled`, `error`, `klippy_shutdown`, `in_progress`, … as the server says.
    pub status: String,
    /// Seconds since the Unix epoch.
    pub start_time: f64,
    /// Seconds since the Unix epoch; `None` while running.
    pub end_time: Option<f64>,
    /// Seconds spent printing (without pauses).
    pub print_duration: f64,
    /// Seconds from start to end.
    pub total_duration: f64,
    /// Filament used, mm.
    pub filament_used: f64,
}

/// A camera the printer's server knows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Webcam {
    /// The name the server gives it.
    pub name: String,
    /// The streamer (`mjpegstreamer`, `webrtc-camerastreamer`, `classic`, …).
    pub service: String,
    /// Whether it is enabled.
    pub enabled: bool,
    /// The stream's URL, made absolute against the server's address.
    pub stream_url: String,
    /// The snapshot's URL, made absolute, when there is one.
    pub snapshot_url: Option<String>,
    /// Mirror left-right.
    pub flip_horizontal: bool,
    /// Mirror top-bottom.
    pub flip_vertical: bool,
    /// Rotation in degrees (0, 90, 180, 270).
    pub rotation: u32,
}

/// Why a printer operation failed. Every variant reads as a sentence a user can act on.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PrinterError {
    /// Nothing answered at the address (refused, no route, unknown host).
    #[error("cannot reach {url}: {reason}")]
    Unreachable {
        /// Where.
        url: String,
        /// The system's reason.
        reason: String,
    },
    /// The server did not answer in time.
    #[error("{what} at {url} timed out after {:.1} s", after.as_secs_f64())]
    Timeout {
        /// Where.
        url: String,
        /// What was asked (`connecting`, `GET /server/info`, …).
        what: String,
        /// The limit that ran out.
        after: Duration,
    },
    /// The TLS handshake failed (certificate not trusted, wrong protocol).
    #[error("TLS with {url} failed: {reason}")]
    Tls {
        /// Where.
        url: String,
        /// The reason.
        reason: String,
    },
    /// The server wants credentials, or refused the ones given.
    #[error("{url}: {message}")]
    Unauthorized {
        /// Where.
        url: String,
        /// "needs an API key", "the API key was refused", "login failed: …".
        message: String,
    },
    /// The server answered with an HTTP error that is not about credentials.
    #[error("{url}: HTTP {status}: {message}")]
    Http {
        /// Where.
        url: String,
        /// The status code.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// The server's answer was not what its API documents (malformed JSON, missing fields).
    #[error("{url}: unexpected answer: {message}")]
    Protocol {
        /// Where.
        url: String,
        /// What was wrong.
        message: String,
    },
    /// The printer refused the command (a Klipper error such as "Must home axis first").
    #[error("the printer refused: {0}")]
    Rejected(String),
    /// The printer cannot do this now (Klippy not ready, OctoPrint not connected to a printer).
    #[error("the printer is not ready: {0}")]
    NotReady(String),
    /// This backend has no such feature.
    #[error("{backend} has no {what}")]
    Unsupported {
        /// The backend.
        backend: BackendKind,
        /// The missing feature.
        what: &'static str,
    },
    /// The caller's input was wrong (an empty file name, an unknown file).
    #[error("{0}")]
    InvalidInput(String),
    /// The backend was shut down or its connection closed while the call was waiting.
    #[error("the connection to {0} closed")]
    Closed(String),
}

impl PrinterError {
    /// Whether trying again later may help (the network, a busy or restarting server).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Unreachable { .. } | Self::Timeout { .. } | Self::Closed(_) | Self::NotReady(_)
        ) || matches!(self, Self::Http { status, .. } if *status >= 500)
    }
}

/// A result of a printer operation.
pub type PrinterResult<T> = Result<T, PrinterError>;

/// A printer Gantry can control, wherever it is. See the module docs.
///
/// Status reads are synchronous (the backend keeps its [`StatusHub`] current); commands are
/// async and each has a timeout inside the backend, so no call waits forever.
pub trait PrinterBackend: Send + Sync {
    /// Which kind of server this is.
    fn kind(&self) -> BackendKind;

    /// The backend's status hub (snapshot and events).
    fn hub(&self) -> &StatusHub;

    /// The current status objects.
    fn status(&self) -> PrinterStatus {
        self.hub().snapshot()
    }

    /// The current status and every event after it.
    fn subscribe(&self) -> (PrinterStatus, broadcast::Receiver<PrinterEvent>) {
        self.hub().subscribe()
    }

    /// Who the server is and its state now (asks the server).
    fn info(&self) -> BoxFuture<'_, PrinterResult<PrinterInfo>>;

    /// Runs a G-code script (one or more lines) and returns when the printer has run it; the
    /// printer's output arrives as [`PrinterEvent::GcodeResponse`].
    fn gcode_script<'a>(&'a self, script: &'a str) -> BoxFuture<'a, PrinterResult<()>>;

    /// Starts printing a file already on the server (a path from [`PrinterBackend::files_list`]).
    fn print_start<'a>(&'a self, path: &'a str) -> BoxFuture<'a, PrinterResult<()>>;

    /// Pauses the running job.
    fn print_pause(&self) -> BoxFuture<'_, PrinterResult<()>>;

    /// Resumes the paused job.
    fn print_resume(&self) -> BoxFuture<'_, PrinterResult<()>>;

    /// Cancels the running or paused job.
    fn print_cancel(&self) -> BoxFuture<'_, PrinterResult<()>>;

    /// Stops the printer at once (Klipper's M112: heaters and motors off, shutdown state).
    fn emergency_stop(&self) -> BoxFuture<'_, PrinterResult<()>>;

    /// The G-code files on the server.
    fn files_list(&self) -> BoxFuture<'_, PrinterResult<Vec<FileEntry>>>;

    /// Uploads `data` as `path` (relative to the G-code root), optionally starting the print.
    fn file_upload<'a>(
        &'a self,
        path: &'a str,
        data: Vec<u8>,
        start_print: bool,
    ) -> BoxFuture<'a, PrinterResult<FileEntry>>;

    /// What the server knows about a file.
    fn file_metadata<'a>(&'a self, path: &'a str) -> BoxFuture<'a, PrinterResult<FileMetadata>>;

    /// Deletes a file.
    fn file_delete<'a>(&'a self, path: &'a str) -> BoxFuture<'a, PrinterResult<()>>;

    /// A file's content, fetched from the server.
    fn file_download<'a>(&'a self, path: &'a str) -> BoxFuture<'a, PrinterResult<Vec<u8>>>;

    /// Where this machine can read a file as it is (a printer served from here); `None` for a
    /// remote server's files, which [`PrinterBackend::file_download`] fetches.
    fn local_file(&self, path: &str) -> Option<std::path::PathBuf> {
        let _ = path;
        None
    }

    /// The last `limit` jobs, newest first.
    fn history(&self, limit: usize) -> BoxFuture<'_, PrinterResult<Vec<HistoryJob>>>;

    /// The cameras the server knows.
    fn webcams(&self) -> BoxFuture<'_, PrinterResult<Vec<Webcam>>>;

    /// The heaters' recent series, Moonraker's `server.temperature_store` shape
    /// (`{heater: {temperatures, targets, powers}}`), where the backend keeps one.
    fn temperature_store(&self) -> Option<Value> {
        None
    }

    /// Closes the connection to the server and waits for the backend's tasks (when a printer
    /// is removed from the fleet). Calls after it fail as closed. The default does nothing:
    /// backends that own no connection, or are stopped by their owner.
    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// A shared backend.
pub type SharedBackend = Arc<dyn PrinterBackend>;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn status(v: Value) -> Status {
        serde_json::from_value(v).expect("a status map")
    }

    #[test]
    fn merge_returns_only_what_changed() {
        let mut s = PrinterStatus::new();
        let first = s.merge(status(json!({
            "extruder": {"temperature": 20.5, "target": 0.0},
            "print_stats": {"state": "standby", "filename": ""}
        })));
        assert_eq!(first.len(), 2, "everything is new the first time");
        let delta = s.merge(status(json!({
            "extruder": {"temperature": 21.0, "target": 0.0},
            "print_stats": {"state": "standby"}
        })));
        assert_eq!(delta, status(json!({"extruder": {"temperature": 21.0}})));
        assert_eq!(
            s.f64("extruder", "target"),
            Some(0.0),
            "untouched fields stay"
        );
        assert!(
            s.merge(status(json!({"extruder": {"temperature": 21.0}})))
                .is_empty()
        );
    }

    #[test]
    fn lists_are_replaced_whole_as_klipper_does() {
        let mut s = PrinterStatus::new();
        s.merge(status(
            json!({"toolhead": {"position": [0.0, 0.0, 0.0, 0.0]}}),
        ));
        let delta = s.merge(status(
            json!({"toolhead": {"position": [10.0, 0.0, 0.0, 0.0]}}),
        ));
        assert_eq!(
            delta,
            status(json!({"toolhead": {"position": [10.0, 0.0, 0.0, 0.0]}}))
        );
    }

    #[test]
    fn a_new_object_appears_in_the_delta_even_without_fields() {
        let mut s = PrinterStatus::new();
        let delta = s.merge(status(json!({"pause_resume": {}})));
        assert_eq!(delta, status(json!({"pause_resume": {}})));
        assert_eq!(s.names(), vec!["pause_resume".to_owned()]);
    }

    #[test]
    fn replace_drops_objects_that_are_gone() {
        let mut s = PrinterStatus::from_status(status(json!({
            "extruder": {"temperature": 20.0}, "fan": {"speed": 0.5}
        })));
        let delta = s.replace(status(json!({"extruder": {"temperature": 20.0}})));
        assert!(delta.is_empty());
        assert_eq!(s.names(), vec!["extruder".to_owned()]);
    }

    #[test]
    fn query_and_filter_follow_moonraker() {
        let s = PrinterStatus::from_status(status(json!({
            "extruder": {"temperature": 200.0, "target": 210.0, "power": 0.4},
            "toolhead": {"position": [1.0, 2.0, 3.0, 4.0], "homed_axes": "xyz"}
        })));
        let q: ObjectQuery = serde_json::from_value(json!({
            "extruder": ["target", "nope"], "toolhead": null, "heater_bed": null
        }))
        .expect("query");
        assert_eq!(
            s.query(&q),
            status(json!({
                "extruder": {"target": 210.0},
                "toolhead": {"position": [1.0, 2.0, 3.0, 4.0], "homed_axes": "xyz"},
                "heater_bed": {}
            }))
        );
        let delta = status(json!({"extruder": {"power": 0.5}, "fan": {"speed": 1.0}}));
        assert!(
            filter(&delta, &q).is_empty(),
            "power and fan are not subscribed"
        );
        let delta = status(json!({"extruder": {"target": 0.0, "power": 0.0}}));
        assert_eq!(
            filter(&delta, &q),
            status(json!({"extruder": {"target": 0.0}}))
        );
    }

    #[test]
    fn the_summary_reads_klipper_objects() {
        let s = PrinterStatus::from_status(status(json!({
            "webhooks": {"state": "ready", "state_message": "Printer is ready"},
            "print_stats": {"state": "printing", "filename": "cube.gcode", "print_duration": 61.0,
                            "message": ""},
            "virtual_sdcard": {"progress": 0.25},
            "extruder": {"temperature": 209.6, "target": 210.0, "power": 0.31},
            "heater_bed": {"temperature": 60.1, "target": 60.0},
            "heater_generic chamber": {"temperature": 30.0, "target": 0.0},
            "toolhead": {"position": [10.0, 20.0, 0.3, 100.0]}
        })));
        let sum = s.summary();
        assert_eq!(sum.klippy_state, Some(KlippyState::Ready));
        assert_eq!(sum.print_state, Some(PrintState::Printing));
        assert_eq!(sum.filename.as_deref(), Some("cube.gcode"));
        assert_eq!(sum.progress, Some(0.25));
        assert_eq!(sum.message, None);
        let names: Vec<&str> = sum.heaters.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["extruder", "heater_bed", "heater_generic chamber"]);
        let text = sum.to_string();
        assert!(text.contains("job: printing cube.gcode 25.0%"), "{text}");
        assert!(text.contains("extruder: 209.6 °C / 210.0 °C"), "{text}");
    }

    #[test]
    fn the_hub_hands_out_a_snapshot_and_every_later_delta() {
        let hub = StatusHub::new();
        hub.apply(status(json!({"fan": {"speed": 0.0}})), None);
        let (snap, mut rx) = hub.subscribe();
        assert_eq!(snap.f64("fan", "speed"), Some(0.0));
        hub.apply(status(json!({"fan": {"speed": 0.0}})), Some(1.0));
        hub.apply(status(json!({"fan": {"speed": 1.0}})), Some(2.0));
        hub.emit(PrinterEvent::GcodeResponse { line: "ok".into() });
        assert_eq!(
            rx.try_recv().expect("a delta"),
            PrinterEvent::Status {
                delta: status(json!({"fan": {"speed": 1.0}})),
                eventtime: Some(2.0)
            },
            "an unchanged update sends nothing"
        );
        assert!(matches!(
            rx.try_recv(),
            Ok(PrinterEvent::GcodeResponse { .. })
        ));
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn events_serialise_with_a_tag() {
        let e = PrinterEvent::Link(LinkState::Reconnecting {
            reason: "refused".into(),
            retry_in_ms: 500,
        });
        assert_eq!(
            serde_json::to_value(&e).expect("json"),
            json!({"event": "link", "state": "reconnecting", "reason": "refused", "retry_in_ms": 500})
        );
    }

    #[test]
    fn errors_read_as_sentences() {
        let e = PrinterError::Unauthorized {
            url: "http://10.0.0.5".into(),
            message: "needs an API key".into(),
        };
        assert_eq!(e.to_string(), "http://10.0.0.5: needs an API key");
        let e = PrinterError::Timeout {
            url: "http://x".into(),
            what: "GET /api/version".into(),
            after: Duration::from_millis(2500),
        };
        assert_eq!(
            e.to_string(),
            "GET /api/version at http://x timed out after 2.5 s"
        );
        assert!(e.is_transient());
        let e = PrinterError::Unsupported {
            backend: BackendKind::OctoPrint,
            what: "job history",
        };
        assert_eq!(e.to_string(), "OctoPrint has no job history");
    }
}
