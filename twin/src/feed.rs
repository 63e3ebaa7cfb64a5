//! The live feed from a printer that core's API serves: `gantry twin --live
//! ws://127.0.0.1:PORT/websocket --token TOKEN` follows the printer's nozzle (Klipper's
//! `motion_report.live_position`: where the MCU's steppers are now) and, while a job runs, shows
//! its file's toolpath as the ghost, printed up to the nozzle: the printer's own file when this
//! machine can read it (`virtual_sdcard.file_path`), else a copy that core fetches from the
//! printer's server on request (`server.files.local_copy`: Moonraker, OctoPrint).
//!
//! The WebSocket client runs on its own thread (a single-threaded tokio runtime): it subscribes
//! with `printer.objects.subscribe`, folds each `notify_status_update` into a
//! [`PrinterSnapshot`] and sends the snapshot through a channel. It reconnects after a lost
//! connection and stops when its [`FeedHandle`] is dropped. The app drains the channel once a
//! frame ([`receive`]); no system ever waits on the network.

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use bevy::prelude::*;
use futures_util::{SinkExt as _, StreamExt as _};
use gantry_core::motion::config::Config;
use gantry_core::motion::toolpath::ToolpathOptions;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::live::LiveState;
use crate::loader::{self, GcodeSource, LoadState};
use crate::playback::{Nozzle, distance_to_segment, segment_near};
use crate::ribbons::RibbonPages;
use crate::timeline::{Phase, Sample};
use crate::toolpath::NozzleCut;

/// How long opening the WebSocket may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The wait before connecting again after a lost or refused connection.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Segments searched back from the host's read position for the nozzle (the host reads ahead).
const CUT_WINDOW: u32 = 4096;
/// A nozzle further than this from the nearest segment of the ghost is on none of the file's
/// moves (heating, a macro's moves), mm: beads are a few tenths wide, and the readings come
/// smoothed, which cuts corners a little.
pub(crate) const ON_PATH_MM: f32 = 1.5;

/// The fields the twin subscribes to, by Klipper object.
const SUBSCRIBED: &[(&str, &[&str])] = &[
    ("motion_report", &["live_position", "live_velocity"]),
    ("toolhead", &["position", "print_time", "homed_axes"]),
    ("print_stats", &["state", "filename", "print_duration"]),
    (
        "virtual_sdcard",
        &["file_path", "file_position", "progress", "is_active"],
    ),
    ("webhooks", &["state", "state_message"]),
];

/// Where the feed comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedTarget {
    /// `ws://127.0.0.1:PORT/websocket` (a `?token=` in it is used as given).
    pub url: String,
    /// The API's per-launch token, sent as `?token=`.
    pub token: Option<String>,
    /// The fleet id of the printer to follow; `None`: the API's first printer.
    pub printer: Option<String>,
}

impl FeedTarget {
    /// The URL the client opens: `url` with the token as its `token` query parameter.
    pub fn connect_url(&self) -> String {
        match &self.token {
            Some(t) if !self.url.contains("token=") => {
                let sep = if self.url.contains('?') { '&' } else { '?' };
                format!("{}{sep}token={t}", self.url)
            }
            _ => self.url.clone(),
        }
    }

    /// The URL without its query (the token stays out of titles and logs).
    pub fn shown(&self) -> &str {
        self.url.split('?').next().unwrap_or(&self.url)
    }
}

/// What the feed knows of the printer: the subscribed Klipper status fields.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PrinterSnapshot {
    /// `motion_report.live_position`: where the steppers are, mm (x, y, z, e).
    pub live_position_mm: Option<[f64; 4]>,
    /// `motion_report.live_velocity`, mm/s.
    pub live_velocity_mm_s: Option<f64>,
    /// `toolhead.position`: the last commanded position, mm.
    pub commanded_mm: Option<[f64; 4]>,
    /// `toolhead.print_time`, s.
    pub print_time_s: Option<f64>,
    /// `toolhead.homed_axes`.
    pub homed_axes: String,
    /// `print_stats.state`: standby, printing, paused, complete, cancelled, error.
    pub print_state: String,
    /// `print_stats.filename`: the job's file, relative to the G-code folder.
    pub filename: String,
    /// `print_stats.print_duration`, s.
    pub print_duration_s: f64,
    /// `virtual_sdcard.file_path`: the job's file on the printer's host.
    pub file_path: Option<String>,
    /// `virtual_sdcard.file_position`: bytes the host has read of it.
    pub file_position: u64,
    /// `virtual_sdcard.progress`, 0–1.
    pub progress: f64,
    /// `webhooks.state`: ready, startup, shutdown, error.
    pub klippy_state: String,
    /// `webhooks.state_message`.
    pub state_message: String,
    /// The server's `eventtime` of the last update, s.
    pub eventtime: f64,
    /// A copy of a job's file on this machine, fetched through the API's
    /// `server.files.local_copy` when the printer's own path is not readable here (a remote
    /// printer): the file's name on the printer and the copy's path.
    pub local_copy: Option<(String, PathBuf)>,
}

fn coord4(v: &Value) -> Option<[f64; 4]> {
    let a = v.as_array()?;
    let mut out = [0.0; 4];
    for (o, x) in out.iter_mut().zip(a) {
        *o = x.as_f64()?;
    }
    (a.len() >= 3).then_some(out)
}

impl PrinterSnapshot {
    /// Folds a status object (`{object: {field: value}}`: a subscription's answer or a
    /// notification's delta) into the snapshot; fields not named stay as they were.
    pub fn apply(&mut self, status: &Value) {
        let Some(objects) = status.as_object() else {
            return;
        };
        for (object, fields) in objects {
            let Some(fields) = fields.as_object() else {
                continue;
            };
            for (field, v) in fields {
                self.apply_field(object, field, v);
            }
        }
    }

    fn apply_field(&mut self, object: &str, field: &str, v: &Value) {
        let text = || v.as_str().unwrap_or_default().to_owned();
        match (object, field) {
            ("motion_report", "live_position") => self.live_position_mm = coord4(v),
            ("motion_report", "live_velocity") => self.live_velocity_mm_s = v.as_f64(),
            ("toolhead", "position") => self.commanded_mm = coord4(v),
            ("toolhead", "print_time") => self.print_time_s = v.as_f64(),
            ("toolhead", "homed_axes") => self.homed_axes = text(),
            ("print_stats", "state") => self.print_state = text(),
            ("print_stats", "filename") => self.filename = text(),
            ("print_stats", "print_duration") => {
                self.print_duration_s = v.as_f64().unwrap_or(0.0);
            }
            ("virtual_sdcard", "file_path") => {
                self.file_path = v.as_str().filter(|s| !s.is_empty()).map(str::to_owned);
            }
            ("virtual_sdcard", "file_position") => self.file_position = v.as_u64().unwrap_or(0),
            ("virtual_sdcard", "progress") => self.progress = v.as_f64().unwrap_or(0.0),
            ("webhooks", "state") => self.klippy_state = text(),
            ("webhooks", "state_message") => self.state_message = text(),
            _ => {}
        }
    }

    /// The job's file, when this machine can read it (the printer is served from here, or the
    /// path is shared): the ghost to show.
    pub fn readable_file(&self) -> Option<PathBuf> {
        if self.filename.is_empty() {
            return None;
        }
        let own = self
            .file_path
            .as_deref()
            .map(PathBuf::from)
            .filter(|p| p.is_absolute() && p.is_file());
        own.or_else(|| {
            self.local_copy
                .as_ref()
                .filter(|(name, path)| *name == self.filename && path.is_file())
                .map(|(_, path)| path.clone())
        })
    }

    /// Whether the printer's server says where the toolhead is at all (OctoPrint, for one,
    /// does not: then there is no nozzle to wait for).
    pub fn reports_position(&self) -> bool {
        self.live_position_mm.is_some() || self.commanded_mm.is_some()
    }

    /// The job's file that the twin should ask core to copy here: a job is named, and neither
    /// the printer's own path nor a copy of it is readable.
    fn wants_local_copy(&self) -> Option<&str> {
        (!self.filename.is_empty() && self.readable_file().is_none())
            .then_some(self.filename.as_str())
    }
}

/// What the client thread tells the app.
#[derive(Debug, Clone, PartialEq)]
pub enum FeedEvent {
    /// Subscribed: the printer's status as it is now.
    Connected(Box<PrinterSnapshot>),
    /// The status after an update.
    Status(Box<PrinterSnapshot>),
    /// The connection failed or ended (why); the client tries again.
    Disconnected(String),
}

/// The running client: dropping it stops the thread (it ends within a moment).
#[derive(Debug)]
pub struct FeedHandle {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FeedHandle {
    /// Stops the client and waits for its thread.
    pub fn stop(mut self) {
        self.signal();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    fn signal(&mut self) {
        if let Some(stop) = self.stop.take() {
            // The thread may have ended already: nothing to stop then.
            let _ = stop.send(());
        }
    }
}

impl Drop for FeedHandle {
    fn drop(&mut self) {
        self.signal();
    }
}

/// Starts the client thread; its events go to `tx`.
///
/// # Errors
/// When the thread or its runtime cannot be started.
pub fn spawn(target: FeedTarget, tx: Sender<FeedEvent>) -> std::io::Result<FeedHandle> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("twin-live-feed".into())
        .spawn(move || runtime.block_on(run(target, tx, stop_rx)))?;
    Ok(FeedHandle {
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}

/// Why a session ended.
enum Ended {
    /// Asked to stop, or nobody listens any more.
    Stop,
    /// Lost or refused: try again.
    Lost(String),
}

async fn run(
    target: FeedTarget,
    tx: Sender<FeedEvent>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    loop {
        match session(&target, &tx, &mut stop).await {
            Ended::Stop => return,
            Ended::Lost(why) => {
                if tx.send(FeedEvent::Disconnected(why)).is_err() {
                    return;
                }
            }
        }
        tokio::select! {
            _ = &mut stop => return,
            () = tokio::time::sleep(RETRY_AFTER) => {}
        }
    }
}

fn subscribe_request(printer: Option<&str>) -> Value {
    let objects: serde_json::Map<String, Value> = SUBSCRIBED
        .iter()
        .map(|(o, fields)| ((*o).to_owned(), json!(fields)))
        .collect();
    let mut params = json!({ "objects": objects });
    if let Some(p) = printer {
        params["printer"] = json!(p);
    }
    json!({ "jsonrpc": "2.0", "method": "printer.objects.subscribe", "params": params, "id": 1 })
}

/// The request id of `server.files.local_copy` (the subscription is 1).
const LOCAL_COPY_ID: i64 = 2;

fn local_copy_request(filename: &str, printer: Option<&str>) -> Value {
    let mut params = json!({ "filename": filename });
    if let Some(p) = printer {
        params["printer"] = json!(p);
    }
    json!({ "jsonrpc": "2.0", "method": "server.files.local_copy", "params": params,
            "id": LOCAL_COPY_ID })
}

async fn session(
    target: &FeedTarget,
    tx: &Sender<FeedEvent>,
    stop: &mut tokio::sync::oneshot::Receiver<()>,
) -> Ended {
    use tokio_tungstenite::tungstenite::Error as E;
    let shown = target.shown();
    let connect = tokio_tungstenite::connect_async(target.connect_url());
    let mut ws = tokio::select! {
        _ = &mut *stop => return Ended::Stop,
        r = tokio::time::timeout(CONNECT_TIMEOUT, connect) => match r {
            Err(_) => return Ended::Lost(format!("{shown}: no answer within {CONNECT_TIMEOUT:?}")),
            Ok(Err(E::Http(resp))) if resp.status().as_u16() == 401 => {
                return Ended::Lost(format!(
                    "{shown} refused the token (HTTP 401): pass the API's token with --token"
                ));
            }
            Ok(Err(e)) => return Ended::Lost(format!("{shown}: {e}")),
            Ok(Ok((ws, _))) => ws,
        },
    };
    let request = subscribe_request(target.printer.as_deref()).to_string();
    if let Err(e) = ws.send(WsMessage::text(request)).await {
        return Ended::Lost(format!("{shown}: {e}"));
    }
    let mut snapshot = PrinterSnapshot::default();
    let mut subscribed = false;
    // The file last asked to be copied here.
    let mut asked: Option<String> = None;
    loop {
        let msg = tokio::select! {
            _ = &mut *stop => {
                // Best effort: the server drops the subscription with the connection anyway.
                let _ = ws.close(None).await;
                return Ended::Stop;
            }
            msg = ws.next() => msg,
        };
        let text = match msg {
            None => return Ended::Lost(format!("{shown} closed the connection")),
            Some(Err(e)) => return Ended::Lost(format!("{shown}: {e}")),
            Some(Ok(WsMessage::Text(t))) => t,
            Some(Ok(WsMessage::Close(frame))) => {
                let why = frame.map(|f| f.reason.to_string()).unwrap_or_default();
                return Ended::Lost(format!("{shown} closed the connection {why}"));
            }
            Some(Ok(_)) => continue,
        };
        let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else {
            continue; // not JSON: nothing the feed can use
        };
        let event = match handle_message(&v, target.printer.as_deref(), &mut snapshot) {
            Handled::Subscribed => {
                subscribed = true;
                FeedEvent::Connected(Box::new(snapshot.clone()))
            }
            Handled::Update | Handled::LocalCopy if subscribed => {
                FeedEvent::Status(Box::new(snapshot.clone()))
            }
            Handled::Update | Handled::LocalCopy | Handled::Other => continue,
            Handled::NoLocalCopy(why) => {
                bevy::log::warn!("live feed: the job's file cannot be shown as the ghost: {why}");
                continue;
            }
            Handled::Refused(why) => return Ended::Lost(format!("{shown}: {why}")),
        };
        // A job whose file is not readable here: ask core for a copy, once per file.
        if let Some(name) = snapshot.wants_local_copy()
            && asked.as_deref() != Some(name)
        {
            asked = Some(name.to_owned());
            let request = local_copy_request(name, target.printer.as_deref()).to_string();
            if let Err(e) = ws.send(WsMessage::text(request)).await {
                return Ended::Lost(format!("{shown}: {e}"));
            }
        }
        if tx.send(event).is_err() {
            return Ended::Stop;
        }
    }
}

/// What one message from the server meant.
#[derive(Debug, PartialEq)]
enum Handled {
    /// The subscription's answer, folded in.
    Subscribed,
    /// A status update for the followed printer, folded in.
    Update,
    /// The subscription was refused (the server's message).
    Refused(String),
    /// A copy of the job's file is on this machine now, folded in.
    LocalCopy,
    /// The job's file could not be copied here (core's message).
    NoLocalCopy(String),
    /// Anything else (other printers, G-code responses, …).
    Other,
}

/// Folds one JSON-RPC message into `snapshot`. Notifications carry the printer's id last;
/// those of other printers are skipped when one is followed by name.
fn handle_message(v: &Value, printer: Option<&str>, snapshot: &mut PrinterSnapshot) -> Handled {
    if v.get("id").and_then(Value::as_i64) == Some(1) {
        if let Some(result) = v.get("result") {
            snapshot.apply(&result["status"]);
            snapshot.eventtime = result["eventtime"].as_f64().unwrap_or(0.0);
            return Handled::Subscribed;
        }
        let message = v["error"]["message"].as_str().unwrap_or("refused");
        return Handled::Refused(message.to_owned());
    }
    if v.get("id").and_then(Value::as_i64) == Some(LOCAL_COPY_ID) {
        let result = &v["result"];
        return match (result["filename"].as_str(), result["path"].as_str()) {
            (Some(name), Some(path)) => {
                snapshot.local_copy = Some((name.to_owned(), PathBuf::from(path)));
                Handled::LocalCopy
            }
            _ => Handled::NoLocalCopy(
                v["error"]["message"]
                    .as_str()
                    .unwrap_or("no path in the answer")
                    .to_owned(),
            ),
        };
    }
    if v.get("method").and_then(Value::as_str) != Some("notify_status_update") {
        return Handled::Other;
    }
    let Some(params) = v.get("params").and_then(Value::as_array) else {
        return Handled::Other;
    };
    let from = params.get(2).and_then(Value::as_str);
    if let (Some(want), Some(from)) = (printer, from)
        && want != from
    {
        return Handled::Other;
    }
    if let Some(delta) = params.first() {
        snapshot.apply(delta);
    }
    if let Some(t) = params.get(1).and_then(Value::as_f64) {
        snapshot.eventtime = t;
    }
    Handled::Update
}

/// The feed in the app: the client, what it said last, and the ghost it loaded.
#[derive(Resource)]
pub struct LiveFeed {
    rx: Mutex<Receiver<FeedEvent>>,
    _client: FeedHandle,
    /// The printer's status as last received.
    pub status: PrinterSnapshot,
    /// Whether the client is subscribed now.
    pub connected: bool,
    /// Where the feed comes from (no token).
    pub shown: String,
    /// The two newest live positions and when they came, for a smooth nozzle.
    readings: [Option<(Instant, [f64; 3])>; 2],
    /// The file shown as the ghost.
    pub ghost: Option<PathBuf>,
    /// The host's read position and the ghost's line there, as last looked up.
    read_at: Option<(u64, u32)>,
    config: Config,
    options: ToolpathOptions,
}

impl LiveFeed {
    /// Whether the feed has said where the printer is (when its server reports a position) and
    /// the ghost is the job's file (when that is readable here): what a screenshot waits for.
    pub fn settled(&self) -> bool {
        self.connected
            && (self.readings[0].is_some() || !self.status.reports_position())
            && self
                .status
                .readable_file()
                .is_none_or(|f| self.ghost.as_ref() == Some(&f))
    }
}

/// Connects to the printer at `target`; the app follows it.
///
/// # Errors
/// When the client thread cannot start.
pub fn start(
    app: &mut App,
    target: FeedTarget,
    config: Config,
    options: ToolpathOptions,
    ghost: Option<PathBuf>,
) -> anyhow::Result<()> {
    let (tx, rx) = channel();
    let shown = target.shown().to_owned();
    let client = spawn(target, tx)?;
    app.insert_resource(LiveFeed {
        rx: Mutex::new(rx),
        _client: client,
        status: PrinterSnapshot::default(),
        connected: false,
        shown: shown.clone(),
        readings: [None, None],
        ghost,
        read_at: None,
        config,
        options,
    })
    .insert_resource(LiveState::remote(format!("printer at {shown}")))
    .add_systems(Update, receive.after(crate::playback::PlaybackSystems));
    Ok(())
}

/// The position shown now: between the two newest readings, one update period behind, so the
/// nozzle glides at the server's update rate (20 Hz) instead of jumping.
fn smoothed(readings: &[Option<(Instant, [f64; 3])>; 2], now: Instant) -> Option<[f64; 3]> {
    match readings {
        [Some((t1, p1)), Some((t0, p0))] if t1 > t0 => {
            let period = (*t1 - *t0).as_secs_f64().min(0.5);
            let f = ((now - *t1).as_secs_f64() / period).clamp(0.0, 1.0);
            Some(std::array::from_fn(|i| p0[i] + (p1[i] - p0[i]) * f))
        }
        [Some((_, p)), _] => Some(*p),
        _ => None,
    }
}

/// Takes what the client sent, moves the nozzle and loads the job's file as the ghost.
#[allow(clippy::too_many_arguments)]
pub fn receive(
    mut commands: Commands,
    mut feed: ResMut<LiveFeed>,
    mut live: ResMut<LiveState>,
    state: Res<LoadState>,
    pages: Res<RibbonPages>,
    mut nozzle: ResMut<Nozzle>,
    mut cut: ResMut<NozzleCut>,
) {
    let now = Instant::now();
    let events: Vec<FeedEvent> = {
        let rx = feed.rx.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = Vec::new();
        // A bounded number a frame, so a flood cannot stall one.
        for _ in 0..512 {
            match rx.try_recv() {
                Ok(e) => out.push(e),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        out
    };
    for event in events {
        match event {
            FeedEvent::Connected(s) | FeedEvent::Status(s) => {
                feed.connected = true;
                let moved = s.live_position_mm.map(|p| [p[0], p[1], p[2]]);
                if let Some(p) = moved
                    && feed.readings[0].is_none_or(|(_, q)| q != p)
                {
                    feed.readings = [Some((now, p)), feed.readings[0]];
                }
                feed.status = *s;
            }
            FeedEvent::Disconnected(why) => {
                feed.connected = false;
                live.message = format!("not connected: {why} (retrying)");
            }
        }
    }
    let s = &feed.status;
    if feed.connected {
        live.message = describe(s);
    }
    // The job's file as the ghost, once, when it is readable here.
    if let Some(file) = s.readable_file()
        && feed.ghost.as_ref() != Some(&file)
    {
        bevy::log::info!("live feed: showing {} as the ghost", file.display());
        loader::replace(
            &mut commands,
            &pages,
            state.generation + 1,
            file.display().to_string(),
            GcodeSource::File(file.clone()),
            feed.config.clone(),
            feed.options,
        );
        feed.ghost = Some(file);
        feed.read_at = None;
        return;
    }
    let Some(pos) = smoothed(&feed.readings, now) else {
        return;
    };
    let s = &feed.status;
    live.position_mm = Some(pos);
    live.time = s.print_duration_s;
    nozzle.live = true;
    let speed = s.live_velocity_mm_s.unwrap_or(0.0);
    nozzle.sample = Sample {
        time: s.print_duration_s,
        pos_mm: pos,
        speed_mm_s: speed,
        accel_mm_s2: 0.0,
        phase: if speed > 0.01 {
            Phase::Moving
        } else {
            Phase::Idle
        },
        move_index: None,
        line: 0,
    };
    // While the ghost's job runs, the toolpath is coloured up to the nozzle, and the HUD shows
    // the line of the move the nozzle is on: the host's read position (`file_position`) runs
    // ahead of the nozzle by the planner's lookahead, so it only says where to look.
    let printing = matches!(s.print_state.as_str(), "printing" | "paused");
    let (at, printed_line, read_line) = match (&state.meta, printing && feed.ghost.is_some()) {
        (Some(meta), true) => {
            let offset = s.file_position;
            if feed.read_at.is_none_or(|(o, _)| o != offset) {
                feed.read_at = state
                    .line_index
                    .line_at_byte(&state.source, offset)
                    .map(|l| (offset, l));
            }
            let read_line = feed.read_at.map_or(0, |(_, l)| l);
            let search_from = if read_line > 0 {
                read_line
            } else {
                state.line_index.line_at_offset(offset)
            };
            let near = segment_near(&state, meta, pos, search_from, CUT_WINDOW);
            #[allow(clippy::cast_possible_truncation)]
            let p = pos.map(|v| v as f32);
            let on_path = near.filter(|(i, _)| {
                distance_to_segment(&state, *i, p).is_some_and(|d| d <= ON_PATH_MM)
            });
            let printed = on_path
                .and_then(|(i, _)| meta.lines.get(i as usize).copied())
                .unwrap_or(0);
            (near.or(cut.at), printed, read_line)
        }
        _ => (None, 0, 0),
    };
    cut.at = at;
    nozzle.sample.line = printed_line;
    live.line = read_line;
}

/// The HUD's line about the printer.
fn describe(s: &PrinterSnapshot) -> String {
    let mut out = if s.klippy_state.is_empty() || s.klippy_state == "ready" {
        String::from("connected")
    } else {
        format!("{}: {}", s.klippy_state, s.state_message)
    };
    if !s.filename.is_empty() {
        out.push_str(&format!(
            " · {} {} ({:.0} %)",
            s.print_state,
            s.filename,
            s.progress * 100.0
        ));
    } else if s.homed_axes.is_empty() {
        out.push_str(" · not homed");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn the_token_goes_into_the_query() {
        let t = FeedTarget {
            url: "ws://127.0.0.1:7125/websocket".into(),
            token: Some("abc".into()),
            printer: None,
        };
        assert_eq!(t.connect_url(), "ws://127.0.0.1:7125/websocket?token=abc");
        let t = FeedTarget {
            url: "ws://127.0.0.1:7125/websocket?token=xyz".into(),
            ..t
        };
        assert_eq!(t.connect_url(), "ws://127.0.0.1:7125/websocket?token=xyz");
        assert_eq!(t.shown(), "ws://127.0.0.1:7125/websocket");
    }

    #[test]
    fn updates_fold_into_the_snapshot_and_other_printers_are_skipped() {
        let mut s = PrinterSnapshot::default();
        let answer = json!({"jsonrpc": "2.0", "id": 1, "result": {"eventtime": 3.5, "status": {
            "motion_report": {"live_position": [1.0, 2.0, 3.0, 0.0], "live_velocity": 0.0},
            "print_stats": {"state": "standby", "filename": ""},
            "webhooks": {"state": "ready"}
        }}});
        assert_eq!(
            handle_message(&answer, Some("sim"), &mut s),
            Handled::Subscribed
        );
        assert_eq!(s.live_position_mm, Some([1.0, 2.0, 3.0, 0.0]));
        let delta = |id: &str| {
            json!({"jsonrpc": "2.0", "method": "notify_status_update", "params": [
                {"motion_report": {"live_position": [50.0, 60.0, 3.0, 0.0], "live_velocity": 12.5}},
                4.0, id]})
        };
        assert_eq!(
            handle_message(&delta("other"), Some("sim"), &mut s),
            Handled::Other
        );
        assert_eq!(s.live_position_mm, Some([1.0, 2.0, 3.0, 0.0]));
        assert_eq!(
            handle_message(&delta("sim"), Some("sim"), &mut s),
            Handled::Update
        );
        assert_eq!(s.live_position_mm, Some([50.0, 60.0, 3.0, 0.0]));
        assert_eq!(s.live_velocity_mm_s, Some(12.5));
        assert_eq!(s.eventtime, 4.0);
        assert_eq!(s.print_state, "standby", "fields not in a delta stay");
        let refused = json!({"jsonrpc": "2.0", "id": 1,
            "error": {"code": 503, "message": "No printer is connected"}});
        assert_eq!(
            handle_message(&refused, None, &mut s),
            Handled::Refused("No printer is connected".into())
        );
    }

    /// A remote printer's job: its own path is on the printer's host, so the twin asks core
    /// for a copy, once, and shows the copy once it is there.
    #[test]
    fn a_job_not_readable_here_is_asked_for_and_its_copy_shown() {
        let mut s = PrinterSnapshot::default();
        let update = json!({"jsonrpc": "2.0", "method": "notify_status_update", "params": [
            {"print_stats": {"state": "printing", "filename": "cube.gcode"},
             "virtual_sdcard": {"file_path": "/home/pi/printer_data/gcodes/cube.gcode"}},
            5.0, "moonraker:voron.local:7125"]});
        assert_eq!(handle_message(&update, None, &mut s), Handled::Update);
        assert_eq!(s.readable_file(), None);
        assert_eq!(s.wants_local_copy(), Some("cube.gcode"));
        // (A server that reports no position: a screenshot waits for no nozzle.)
        assert!(!s.reports_position());
        assert_eq!(
            local_copy_request("cube.gcode", Some("moonraker:voron.local:7125")),
            json!({"jsonrpc": "2.0", "method": "server.files.local_copy", "id": 2,
                   "params": {"filename": "cube.gcode", "printer": "moonraker:voron.local:7125"}})
        );

        let dir = std::env::temp_dir().join(format!("gantry-feed-copy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let copy = dir.join("cube.gcode");
        std::fs::write(&copy, "G28\n").expect("copy");
        let answer = json!({"jsonrpc": "2.0", "id": 2,
            "result": {"filename": "cube.gcode", "path": copy, "copied": true, "size": 4}});
        assert_eq!(handle_message(&answer, None, &mut s), Handled::LocalCopy);
        assert_eq!(s.readable_file(), Some(copy.clone()));
        assert_eq!(s.wants_local_copy(), None);

        // The next job is another file: the copy of the last one is not it.
        let next = json!({"jsonrpc": "2.0", "method": "notify_status_update", "params": [
            {"print_stats": {"filename": "other.gcode"}}, 6.0]});
        assert_eq!(handle_message(&next, None, &mut s), Handled::Update);
        assert_eq!(s.readable_file(), None);
        assert_eq!(s.wants_local_copy(), Some("other.gcode"));

        let refused = json!({"jsonrpc": "2.0", "id": 2,
            "error": {"code": 503, "message": "Cannot reach http://10.0.0.5/: connection refused"}});
        assert_eq!(
            handle_message(&refused, None, &mut s),
            Handled::NoLocalCopy("Cannot reach http://10.0.0.5/: connection refused".into())
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_nozzle_glides_between_readings() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_millis(50);
        let r = [Some((t1, [10.0, 0.0, 0.0])), Some((t0, [0.0, 0.0, 0.0]))];
        assert_eq!(smoothed(&r, t1), Some([0.0, 0.0, 0.0]));
        let mid = smoothed(&r, t1 + Duration::from_millis(25)).expect("a position");
        assert!((mid[0] - 5.0).abs() < 1e-9, "{mid:?}");
        assert_eq!(
            smoothed(&r, t1 + Duration::from_secs(1)),
            Some([10.0, 0.0, 0.0])
        );
        assert_eq!(smoothed(&[None, None], t1), None);
    }

    /// End to end, no GPU: core's API server in this process with the simulated printer (its
    /// MCU on a virtual clock), the feed's client subscribed; a move run through the API's
    /// G-code reaches the client as the nozzle's live position, and a job's file as a path the
    /// twin can read.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_client_follows_a_printer_served_by_the_api() {
        use gantry_core::api::ApiServer;
        use gantry_core::api::methods::Context;
        use gantry_core::fleet::FleetPrinter;
        use gantry_core::live::local::{LocalPrinter, LocalSetup};
        use gantry_core::live::virtual_host::{VirtualHost, VirtualOptions};
        use gantry_core::model::PrinterBackend as _;
        use gantry_core::motion::printer::Printer;
        use gantry_sim::runtime::SimMcu;

        let dir = std::env::temp_dir().join(format!("gantry-twin-feed-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config = crate::load_config(None).expect("config");
        let host = VirtualHost::new(SimMcu::new(), VirtualOptions::default());
        let mut built = None;
        let moves = host
            .connect(|dict| {
                let p = Printer::new(&config, &[("mcu", dict)]).map_err(|e| e.to_string())?;
                let cmds = p.mcus[0].config_phase();
                built = Some(p);
                Ok(cmds)
            })
            .expect("the sim connects");
        let mut printer = built.expect("built");
        printer.start_live(Box::new(host), &[usize::from(moves)]);
        let local = LocalPrinter::start(
            printer,
            LocalSetup {
                name: "sim".into(),
                config,
                gcodes_dir: dir.join("gcodes"),
                firmware: "gantry-sim".into(),
            },
            None,
            None,
        )
        .expect("the local printer starts");
        let context = Arc::new(Context::default());
        context
            .fleet
            .add(FleetPrinter {
                id: "sim".into(),
                name: "simulated".into(),
                address: "in process".into(),
                backend: Arc::clone(&local) as _,
            })
            .expect("added");
        let server = ApiServer::bind_localhost()
            .await
            .expect("binds")
            .with_context(context);
        let endpoint = server.endpoint();
        let (stop_server, stopped) = tokio::sync::oneshot::channel::<()>();
        let serving = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));

        // A wrong token is refused, and said so.
        let (tx, rx) = channel();
        let bad = spawn(
            FeedTarget {
                url: endpoint.ws_url.clone(),
                token: Some("00".into()),
                printer: None,
            },
            tx,
        )
        .expect("client");
        let why = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(20)))
            .await
            .expect("join")
            .expect("an event");
        assert!(
            matches!(&why, FeedEvent::Disconnected(m) if m.contains("401")),
            "{why:?}"
        );
        bad.stop();

        let (tx, rx) = channel();
        let client = spawn(
            FeedTarget {
                url: endpoint.ws_url.clone(),
                token: Some(endpoint.token.clone()),
                printer: Some("sim".into()),
            },
            tx,
        )
        .expect("client");
        // Waits (real time) for a snapshot that satisfies `f`.
        let wait = |rx: Receiver<FeedEvent>,
                    what: &'static str,
                    f: fn(&PrinterSnapshot) -> bool| {
            tokio::task::spawn_blocking(move || {
                let deadline = Instant::now() + Duration::from_secs(60);
                let mut last = None;
                while Instant::now() < deadline {
                    match rx.recv_timeout(Duration::from_millis(200)) {
                        Ok(FeedEvent::Connected(s) | FeedEvent::Status(s)) => {
                            if f(&s) {
                                return (rx, *s);
                            }
                            last = Some(s);
                        }
                        Ok(FeedEvent::Disconnected(why)) => panic!("{what}: disconnected: {why}"),
                        Err(_) => {}
                    }
                }
                panic!("timed out waiting for {what}; last: {last:?}");
            })
        };
        let (rx, _) = wait(rx, "the subscription", |s| s.klippy_state == "ready")
            .await
            .expect("join");
        local
            .gcode_script("G28\nG1 X50 Y60 F6000")
            .await
            .expect("homes and moves");
        let (rx, s) = wait(rx, "the nozzle at X50 Y60", |s| {
            s.live_position_mm
                .is_some_and(|p| (p[0] - 50.0).abs() < 1e-6 && (p[1] - 60.0).abs() < 1e-6)
        })
        .await
        .expect("join");
        assert_eq!(s.homed_axes, "xyz");

        // A job: its file is where the twin can read it.
        let job = b"G90\nG1 X20 Y20 Z0.3 F3000\nG1 X40 E1 F1200\nG1 Y40 E2\n";
        local
            .file_upload("part.gcode", job.to_vec(), true)
            .await
            .expect("uploaded and started");
        let (_rx, s) = wait(rx, "the job's file", |s| s.readable_file().is_some())
            .await
            .expect("join");
        assert_eq!(s.filename, "part.gcode");
        let file = s.readable_file().expect("the job's file is readable here");
        assert_eq!(std::fs::read(&file).expect("read"), job);

        client.stop();
        let _ = stop_server.send(());
        serving.await.expect("the server stops");
        local.close();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
