//! A Klippy of our own behind a real Moonraker: Klipper's API server protocol on a Unix socket
//! (JSON messages ended by 0x03; requests `{id, method, params}`, answers `{id, result}` or
//! `{id, error: {error, message}}`; subscriptions answered once in full and then pushed as the
//! caller's `response_template` with `params: {eventtime, status}`), backed by a small printer
//! model whose state lives in `gantry_core::model::PrinterStatus` — so every push is a real
//! delta of the shared model.
//!
//! The printer: heaters that approach their targets at 10 °C/s, G28 and G1 moving the toolhead,
//! M117/M118 messages, `SDCARD_PRINT_FILE` reading the file from Moonraker's G-code directory at
//! a fixed byte rate (so progress, pause, resume and cancel are observable), PAUSE/RESUME/CANCEL
//! through `pause_resume/*`, M112 and `emergency_stop` shutting down, and Klipper's answer to an
//! unknown command. It can start in Klipper's `startup` state for a while, and can be stopped
//! and started again to exercise Moonraker's reconnection.
//!
//! Gantry's own live host will serve this API for real; this model exists to drive Moonraker's
//! `printer.*` paths in tests until then.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gantry_core::model::{Fields, ObjectQuery, PrinterStatus, Status, filter};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Bytes of the file "printed" per second.
pub const PRINT_RATE: usize = 40_000;
const TICK: Duration = Duration::from_millis(100);

struct Client {
    tx: mpsc::UnboundedSender<Vec<u8>>,
    subscription: Option<(ObjectQuery, Value)>,
    gcode_template: Option<Value>,
}

struct Job {
    data: Vec<u8>,
    position: usize,
    paused: bool,
}

struct State {
    status: PrinterStatus,
    clients: HashMap<u64, Client>,
    next_client: u64,
    job: Option<Job>,
    started: Instant,
    ready_at: Instant,
    gcodes: PathBuf,
    gcode_log: Vec<String>,
}

impl State {
    fn eventtime(&self) -> f64 {
        self.started.elapsed().as_secs_f64() + 1000.0
    }

    fn ready(&self) -> bool {
        Instant::now() >= self.ready_at
    }

    /// Merges an update into the model and pushes the delta to every subscriber.
    fn update(&mut self, update: Value) {
        let update: Status = serde_json::from_value(update).unwrap();
        let delta = self.status.merge(update);
        if delta.is_empty() {
            return;
        }
        let eventtime = self.eventtime();
        for client in self.clients.values() {
            if let Some((query, template)) = &client.subscription {
                let part = filter(&delta, query);
                if part.is_empty() {
                    continue;
                }
                let mut msg = template.clone();
                msg["params"] = json!({"eventtime": eventtime, "status": part});
                send(&client.tx, &msg);
            }
        }
    }

    fn respond(&mut self, line: &str) {
        self.gcode_log.push(line.to_owned());
        for client in self.clients.values() {
            if let Some(template) = &client.gcode_template {
                let mut msg = template.clone();
                msg["params"] = json!({"response": line});
                send(&client.tx, &msg);
            }
        }
    }

    fn print_state(&self) -> String {
        self.status
            .str("print_stats", "state")
            .unwrap_or("standby")
            .to_owned()
    }

    fn run_script(&mut self, script: &str) -> Result<(), String> {
        for raw in script.lines() {
            let line = raw.split(';').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut words = line.split_whitespace();
            let cmd = words.next().unwrap_or("").to_ascii_uppercase();
            let args: HashMap<String, String> = words
                .filter_map(|w| {
                    if let Some((k, v)) = w.split_once('=') {
                        Some((k.to_ascii_uppercase(), v.trim_matches('"').to_owned()))
                    } else {
                        let mut c = w.chars();
                        let k = c.next()?.to_ascii_uppercase().to_string();
                        Some((k, c.as_str().to_owned()))
                    }
                })
                .collect();
            let num = |k: &str| args.get(k).and_then(|v| v.parse::<f64>().ok());
            if self.status.str("webhooks", "state") == Some("shutdown") && cmd != "FIRMWARE_RESTART"
            {
                return Err("Printer is shutdown".into());
            }
            match cmd.as_str() {
                "M104" | "M109" => self.update(json!({"extruder": {"target": num("S").unwrap_or(0.0)}})),
                "M140" | "M190" => self.update(json!({"heater_bed": {"target": num("S").unwrap_or(0.0)}})),
                "M106" => self.update(json!({"fan": {"speed": num("S").unwrap_or(255.0) / 255.0}})),
                "M107" => self.update(json!({"fan": {"speed": 0.0}})),
                "G28" => self.update(json!({"toolhead": {"homed_axes": "xyz", "position": [0.0, 0.0, 0.0, 0.0]},
                                             "gcode_move": {"gcode_position": [0.0, 0.0, 0.0, 0.0]}})),
                "G0" | "G1" => {
                    let homed = self.status.str("toolhead", "homed_axes").unwrap_or("").to_owned();
                    if homed.is_empty() && (num("X").is_some() || num("Y").is_some() || num("Z").is_some()) {
                        return Err("Must home axis first: 0.000 0.000 0.000 [0.000]".into());
                    }
                    let mut pos: Vec<f64> = self
                        .status
                        .get("toolhead", "position")
                        .and_then(Value::as_array)
                        .map(|a| a.iter().filter_map(Value::as_f64).collect())
                        .unwrap_or_else(|| vec![0.0; 4]);
                    for (i, axis) in ["X", "Y", "Z", "E"].iter().enumerate() {
                        if let Some(v) = num(axis) {
                            pos[i] = v;
                        }
                    }
                    self.update(json!({"toolhead": {"position": pos}, "gcode_move": {"gcode_position": pos}}));
                }
                "M117" => {
                    let msg = line.get(4..).unwrap_or("").trim().to_owned();
                    self.update(json!({"display_status": {"message": msg}}));
                }
                "M118" | "RESPOND" => {
                    let msg = line.get(4..).unwrap_or("").trim();
                    let msg = msg.strip_prefix("MSG=").unwrap_or(msg).trim_matches('"').to_owned();
                    self.respond(&format!("echo: {msg}"));
                }
                "M112" => self.shutdown("Shutdown due to M112 command"),
                "SDCARD_PRINT_FILE" => {
                    let name = args.get("FILENAME").cloned().unwrap_or_default();
                    let path = self.gcodes.join(&name);
                    let data = std::fs::read(&path).map_err(|e| format!("Unable to open file \"{name}\": {e}"))?;
                    if self.job.is_some() {
                        return Err("SD busy".into());
                    }
                    let size = data.len();
                    self.job = Some(Job { data, position: 0, paused: false });
                    self.update(json!({
                        "print_stats": {"state": "printing", "filename": name, "print_duration": 0.0,
                                        "total_duration": 0.0, "filament_used": 0.0, "message": ""},
                        "virtual_sdcard": {"file_path": path.display().to_string(), "file_size": size,
                                           "file_position": 0, "progress": 0.0, "is_active": true},
                        "idle_timeout": {"state": "Printing"},
                    }));
                    self.respond(&format!("File opened:{name} Size:{size}"));
                }
                "PAUSE" => self.pause()?,
                "RESUME" => self.resume()?,
                "CANCEL_PRINT" => self.cancel(),
                "FIRMWARE_RESTART" | "RESTART" => {
                    self.job = None;
                    self.update(json!({"webhooks": {"state": "ready", "state_message": "Printer is ready"}}));
                }
                _ => return Err(format!("Unknown command:\"{cmd}\"")),
            }
        }
        Ok(())
    }

    fn pause(&mut self) -> Result<(), String> {
        match &mut self.job {
            Some(job) if !job.paused => {
                job.paused = true;
                self.update(
                    json!({"print_stats": {"state": "paused"}, "pause_resume": {"is_paused": true},
                                   "virtual_sdcard": {"is_active": false}}),
                );
                Ok(())
            }
            Some(_) => {
                self.respond("// Print already paused");
                Ok(())
            }
            None => Err("Print is not in progress".into()),
        }
    }

    fn resume(&mut self) -> Result<(), String> {
        match &mut self.job {
            Some(job) if job.paused => {
                job.paused = false;
                self.update(json!({"print_stats": {"state": "printing"}, "pause_resume": {"is_paused": false},
                                   "virtual_sdcard": {"is_active": true}}));
                Ok(())
            }
            _ => Err("Print is not paused, resume aborted".into()),
        }
    }

    fn cancel(&mut self) {
        if self.job.take().is_some() {
            self.update(json!({"print_stats": {"state": "cancelled"}, "pause_resume": {"is_paused": false},
                               "virtual_sdcard": {"is_active": false}, "idle_timeout": {"state": "Ready"}}));
        }
    }

    fn shutdown(&mut self, why: &str) {
        self.job = None;
        self.update(
            json!({"webhooks": {"state": "shutdown", "state_message": why},
                           "extruder": {"target": 0.0}, "heater_bed": {"target": 0.0},
                           "print_stats": {"state": "error", "message": why}}),
        );
    }

    /// One tick of the physical world and the job.
    fn tick(&mut self, dt: f64) {
        let mut update = json!({});
        for heater in ["extruder", "heater_bed"] {
            let t = self.status.f64(heater, "temperature").unwrap_or(25.0);
            let target = self.status.f64(heater, "target").unwrap_or(0.0);
            let goal = if target > 0.0 { target } else { 25.0 };
            let step = 10.0 * dt;
            let next = if (goal - t).abs() <= step {
                goal
            } else {
                t + step * (goal - t).signum()
            };
            let next = (next * 10.0).round() / 10.0;
            update[heater] =
                json!({"temperature": next, "power": if target > next { 1.0 } else { 0.0 }});
        }
        let mut finished = false;
        if let Some(job) = &mut self.job
            && !job.paused
        {
            let step = (PRINT_RATE as f64 * dt) as usize;
            job.position = (job.position + step).min(job.data.len());
            let progress = job.position as f64 / job.data.len().max(1) as f64;
            let duration = self
                .status
                .f64("print_stats", "print_duration")
                .unwrap_or(0.0)
                + dt;
            update["virtual_sdcard"] = json!({"file_position": job.position, "progress": progress});
            update["display_status"] = json!({"progress": progress});
            update["print_stats"] = json!({"print_duration": duration, "total_duration": duration,
                                           "filament_used": duration * 10.0});
            finished = job.position >= job.data.len();
        }
        self.update(update);
        if finished {
            self.job = None;
            self.update(
                json!({"print_stats": {"state": "complete"}, "virtual_sdcard": {"is_active": false},
                               "idle_timeout": {"state": "Ready"}}),
            );
            self.respond("Done printing file");
        }
    }
}

fn send(tx: &mpsc::UnboundedSender<Vec<u8>>, v: &Value) {
    let mut bytes = serde_json::to_vec(v).unwrap();
    bytes.push(0x03);
    let _ = tx.send(bytes);
}

fn initial_status(gcodes: &Path) -> Status {
    serde_json::from_value(json!({
        "webhooks": {"state": "ready", "state_message": "Printer is ready"},
        "configfile": {"config": {"virtual_sdcard": {"path": gcodes.display().to_string()},
                                   "printer": {"kinematics": "cartesian"}},
                       "settings": {"printer": {"kinematics": "cartesian"}}},
        "toolhead": {"position": [0.0, 0.0, 0.0, 0.0], "homed_axes": "", "print_time": 0.0,
                     "estimated_print_time": 0.0, "max_velocity": 300.0, "max_accel": 3000.0,
                     "axis_minimum": [0.0, 0.0, 0.0, 0.0], "axis_maximum": [220.0, 220.0, 250.0, 0.0]},
        "gcode_move": {"gcode_position": [0.0, 0.0, 0.0, 0.0], "position": [0.0, 0.0, 0.0, 0.0],
                       "homing_origin": [0.0, 0.0, 0.0, 0.0], "speed": 1500.0, "speed_factor": 1.0,
                       "extrude_factor": 1.0, "absolute_coordinates": true, "absolute_extrude": true},
        "extruder": {"temperature": 25.0, "target": 0.0, "power": 0.0, "pressure_advance": 0.0,
                     "can_extrude": false},
        "heater_bed": {"temperature": 25.0, "target": 0.0, "power": 0.0},
        "fan": {"speed": 0.0},
        "print_stats": {"filename": "", "state": "standby", "print_duration": 0.0, "total_duration": 0.0,
                        "filament_used": 0.0, "message": "",
                        "info": {"total_layer": null, "current_layer": null}},
        "virtual_sdcard": {"file_path": null, "progress": 0.0, "is_active": false, "file_position": 0,
                           "file_size": 0},
        "display_status": {"progress": 0.0, "message": null},
        "pause_resume": {"is_paused": false},
        "idle_timeout": {"state": "Idle", "printing_time": 0.0},
    }))
    .unwrap()
}

const ENDPOINTS: &[&str] = &[
    "info",
    "emergency_stop",
    "list_endpoints",
    "gcode/help",
    "gcode/script",
    "gcode/restart",
    "gcode/firmware_restart",
    "gcode/subscribe_output",
    "objects/list",
    "objects/query",
    "objects/subscribe",
    "pause_resume/pause",
    "pause_resume/resume",
    "pause_resume/cancel",
    "register_remote_method",
];

/// The fake Klippy: serving until dropped or [`FakeKlippy::stop`].
pub struct FakeKlippy {
    state: Arc<Mutex<State>>,
    tasks: Vec<JoinHandle<()>>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    socket: PathBuf,
}

impl FakeKlippy {
    /// Serves at `socket`, reading print files from `gcodes`; `startup` is how long it answers
    /// `info` with Klipper's `startup` state first.
    pub fn start(socket: &Path, gcodes: &Path, startup: Duration) -> Self {
        let _ = std::fs::remove_file(socket);
        let listener = UnixListener::bind(socket).unwrap();
        let now = Instant::now();
        let state = Arc::new(Mutex::new(State {
            status: PrinterStatus::from_status(initial_status(gcodes)),
            clients: HashMap::new(),
            next_client: 0,
            job: None,
            started: now,
            ready_at: now + startup,
            gcodes: gcodes.to_path_buf(),
            gcode_log: Vec::new(),
        }));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = {
            let state = Arc::clone(&state);
            let conns = Arc::clone(&conns);
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let task = tokio::spawn(serve(Arc::clone(&state), stream));
                    conns.lock().unwrap().push(task);
                }
            })
        };
        let ticker = {
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                let mut interval = tokio::time::interval(TICK);
                loop {
                    interval.tick().await;
                    state.lock().unwrap().tick(TICK.as_secs_f64());
                }
            })
        };
        Self {
            state,
            tasks: vec![accept, ticker],
            conns,
            socket: socket.to_path_buf(),
        }
    }

    /// Stops serving and closes every connection (Moonraker sees Klippy disconnect).
    pub fn stop(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        for t in self.conns.lock().unwrap().drain(..) {
            t.abort();
        }
        // Dropping the senders ends each connection's writer, which closes the socket.
        self.state.lock().unwrap().clients.clear();
        let _ = std::fs::remove_file(&self.socket);
    }

    /// One field of the model.
    pub fn field(&self, object: &str, field: &str) -> Option<Value> {
        self.state
            .lock()
            .unwrap()
            .status
            .get(object, field)
            .cloned()
    }

    /// Every G-code response sent so far.
    pub fn responses(&self) -> Vec<String> {
        self.state.lock().unwrap().gcode_log.clone()
    }
}

impl Drop for FakeKlippy {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn serve(state: Arc<Mutex<State>>, stream: UnixStream) {
    let (read, mut write) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let id = {
        let mut s = state.lock().unwrap();
        let id = s.next_client;
        s.next_client += 1;
        s.clients.insert(
            id,
            Client {
                tx: tx.clone(),
                subscription: None,
                gcode_template: None,
            },
        );
        id
    };
    let writer = tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            if write.write_all(&bytes).await.is_err() {
                break;
            }
        }
    });
    let mut reader = BufReader::new(read);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(0x03, &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if buf.last() == Some(&0x03) {
            buf.pop();
        }
        let Ok(req) = serde_json::from_slice::<Value>(&buf) else {
            continue;
        };
        let answer = handle(&state, id, &req);
        let mut msg = json!({"id": req["id"]});
        match answer {
            Ok(result) => msg["result"] = result,
            Err(message) => msg["error"] = json!({"error": "WebRequestError", "message": message}),
        }
        send(&tx, &msg);
    }
    state.lock().unwrap().clients.remove(&id);
    writer.abort();
}

fn handle(state: &Mutex<State>, client: u64, req: &Value) -> Result<Value, String> {
    let mut s = state.lock().unwrap();
    let params = &req["params"];
    let method = req["method"].as_str().unwrap_or("");
    if !s.ready() && method != "info" && method != "list_endpoints" {
        return Err("Klippy is starting".into());
    }
    match method {
        "info" => {
            let (state_name, message) = if s.ready() {
                let st = s
                    .status
                    .str("webhooks", "state")
                    .unwrap_or("ready")
                    .to_owned();
                let msg = s
                    .status
                    .str("webhooks", "state_message")
                    .unwrap_or("")
                    .to_owned();
                (st, msg)
            } else {
                ("startup".to_owned(), "Printer is not ready".to_owned())
            };
            Ok(json!({
                "state": state_name, "state_message": message, "hostname": "gantry-test",
                "klipper_path": "/opt/gantry-test-klipper", "python_path": "/usr/bin/python3",
                "log_file": "/tmp/klippy.log", "config_file": "/tmp/printer.cfg",
                "software_version": "v0.13.0-gantry-test", "cpu_info": "test", "app": "Klipper",
            }))
        }
        "list_endpoints" => Ok(json!({"endpoints": ENDPOINTS})),
        "objects/list" => Ok(json!({"objects": s.status.names()})),
        "objects/query" => {
            let query: ObjectQuery =
                serde_json::from_value(params["objects"].clone()).map_err(|e| e.to_string())?;
            Ok(json!({"eventtime": s.eventtime(), "status": s.status.query(&query)}))
        }
        "objects/subscribe" => {
            let query: ObjectQuery =
                serde_json::from_value(params["objects"].clone()).map_err(|e| e.to_string())?;
            let template = params["response_template"].clone();
            let status = s.status.query(&query);
            let eventtime = s.eventtime();
            if let Some(c) = s.clients.get_mut(&client) {
                c.subscription = Some((query, template));
            }
            Ok(json!({"eventtime": eventtime, "status": status}))
        }
        "gcode/subscribe_output" => {
            let template = params["response_template"].clone();
            if let Some(c) = s.clients.get_mut(&client) {
                c.gcode_template = Some(template);
            }
            Ok(json!({}))
        }
        "register_remote_method" => Ok(json!({})),
        "gcode/script" => {
            let script = params["script"].as_str().unwrap_or("").to_owned();
            s.run_script(&script).map(|()| json!({}))
        }
        "gcode/help" => Ok(json!({"G28": "Home", "M104": "Set extruder temperature"})),
        "gcode/restart" | "gcode/firmware_restart" => {
            s.run_script("FIRMWARE_RESTART").map(|()| json!({}))
        }
        "pause_resume/pause" => s.pause().map(|()| json!({})),
        "pause_resume/resume" => s.resume().map(|()| json!({})),
        "pause_resume/cancel" => {
            s.cancel();
            Ok(json!({}))
        }
        "emergency_stop" => {
            s.shutdown("Shutdown due to webhooks request");
            Ok(json!({}))
        }
        other => Err(format!("No registered endpoint '{other}'")),
    }
}

/// Unused helper kept for callers that want an empty field map.
pub fn fields() -> Fields {
    Fields::new()
}
