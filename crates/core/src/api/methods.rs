//! The method table: each JSON-RPC method's name and handler.
//!
//! Names follow Moonraker's where one fits (`server.info`, `printer.objects.subscribe`,
//! `printer.gcode.script`, `server.files.list`, …), so a client written for Moonraker finds
//! familiar ground; results have Moonraker's shapes. Gantry controls several printers, so every
//! `printer.*`, `server.files.*`, `server.history.*`, `server.temperature_store` and
//! `server.webcams.*` method takes an optional `printer` parameter (a fleet id; the first
//! printer when absent), and every notification carries the printer's id as its last
//! parameter. Handlers that block (port enumeration, file reads) run on the blocking pool,
//! never on the connection's task.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Instant;

use base64::Engine as _;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use super::manage::{self, Manager, ManagerOptions};
use super::rpc::{INTERNAL_ERROR, INVALID_PARAMS, METHOD_NOT_FOUND, RpcError};
use crate::fleet::{Fleet, FleetPrinter};
use crate::model::{self, ObjectQuery, PrinterError, PrinterEvent};
use crate::printers;

/// The version of this API: bumped in its minor part when methods are added.
pub const API_VERSION: [u32; 3] = [0, 4, 0];

/// Every method the server answers, sorted.
pub const METHODS: &[&str] = &[
    "printer.emergency_stop",
    "printer.gcode.script",
    "printer.info",
    "printer.objects.list",
    "printer.objects.query",
    "printer.objects.subscribe",
    "printer.print.cancel",
    "printer.print.pause",
    "printer.print.resume",
    "printer.print.start",
    "printers.add",
    "printers.discovered",
    "printers.fleet",
    "printers.list",
    "printers.remove",
    "printers.rename",
    "printers.subscribe",
    "server.files.delete_file",
    "server.files.list",
    "server.files.local_copy",
    "server.files.metadata",
    "server.files.upload",
    "server.history.list",
    "server.info",
    "server.temperature_store",
    "server.webcams.list",
];

/// A JSON-RPC error code for a printer that refused a command (Moonraker answers 400).
pub const PRINTER_REFUSED: i64 = 400;
/// The code for a printer that is not there or not ready (Moonraker: 503).
pub const PRINTER_UNAVAILABLE: i64 = 503;

/// Seconds since the server started: the `eventtime` of answers that have no printer's own.
fn eventtime() -> f64 {
    static START: LazyLock<Instant> = LazyLock::new(Instant::now);
    START.elapsed().as_secs_f64()
}

/// What every connection shares: the printers.
#[derive(Debug, Default)]
pub struct Context {
    /// The printers served.
    pub fleet: Arc<Fleet>,
    /// Adding, removing and finding printers (`printers.add`, `printers.discovered`, …).
    pub manager: Manager,
}

impl Context {
    /// An empty fleet, with the printers section set by `options`.
    pub fn new(options: ManagerOptions) -> Self {
        Self {
            fleet: Arc::default(),
            manager: Manager::new(options),
        }
    }

    /// An empty fleet, with mDNS browsing where `GANTRY_MDNS` says (every interface by
    /// default; see [`manage::MDNS_ENV`]).
    pub fn from_env() -> Self {
        Self::new(ManagerOptions::from_env())
    }

    /// Stops the printers section's tasks and closes every printer (removing it from the
    /// fleet): remote ones and the boards Gantry drives.
    pub async fn shutdown(&self) {
        self.manager.shutdown().await;
        // Every printer closes, boards served here included (their MCUs' ports are closed when
        // this returns; the built-in simulated printer's owner finds it closed).
        for entry in self.fleet.list() {
            if let Ok(printer) = self.fleet.remove(&entry.id) {
                printer.backend.close().await;
            }
        }
    }
}

/// One client connection's state: where its notifications go and what it subscribed to.
#[derive(Debug)]
pub struct Connection {
    ctx: Arc<Context>,
    notify: mpsc::UnboundedSender<Value>,
    /// Printer id → the task forwarding its events.
    subscriptions: HashMap<String, tokio::task::AbortHandle>,
    /// The task forwarding `notify_printers_changed`, after `printers.subscribe`.
    printers_feed: Option<tokio::task::AbortHandle>,
}

impl Connection {
    /// A connection whose notifications go to `notify`.
    pub fn new(ctx: Arc<Context>, notify: mpsc::UnboundedSender<Value>) -> Self {
        Self {
            ctx,
            notify,
            subscriptions: HashMap::new(),
            printers_feed: None,
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        for (_, task) in self.subscriptions.drain() {
            task.abort();
        }
        if let Some(task) = self.printers_feed.take() {
            task.abort();
        }
    }
}

/// Runs one method and returns its result or error.
pub async fn call(conn: &mut Connection, method: &str, params: &Value) -> Result<Value, RpcError> {
    match method {
        "server.info" => {
            no_params(method, params)?;
            Ok(server_info(&conn.ctx))
        }
        "printers.list" => {
            no_params(method, params)?;
            let list = tokio::task::spawn_blocking(printers::list)
                .await
                .map_err(|e| RpcError::new(INTERNAL_ERROR, format!("printers.list failed: {e}")))?;
            Ok(json!({ "printers": list }))
        }
        "printers.fleet" => {
            no_params(method, params)?;
            Ok(manage::fleet_json(&conn.ctx))
        }
        _ if manage::METHODS.contains(&method) => {
            let ctx = Arc::clone(&conn.ctx);
            manage::call(&ctx, method, params, &conn.notify, &mut conn.printers_feed).await
        }
        _ if method.starts_with("printer.") || method.starts_with("server.") => {
            printer_method(conn, method, params).await
        }
        other => Err(RpcError::new(
            METHOD_NOT_FOUND,
            format!("Method not found: {other}"),
        )),
    }
}

async fn printer_method(
    conn: &mut Connection,
    method: &str,
    params: &Value,
) -> Result<Value, RpcError> {
    if !METHODS.contains(&method) {
        return Err(RpcError::new(
            METHOD_NOT_FOUND,
            format!("Method not found: {method}"),
        ));
    }
    let params = Params::new(method, params)?;
    let printer = select(&conn.ctx.fleet, params.opt_str("printer")?)?;
    let backend = Arc::clone(&printer.backend);
    let ok = || Ok(json!("ok"));
    match method {
        "printer.info" => {
            let info = backend.info().await.map_err(printer_error)?;
            Ok(json!({
                "state": info.state,
                "state_message": info.state_message,
                "hostname": info.hostname,
                "software_version": info.firmware,
                "server_version": info.server_version,
                "kind": info.kind,
                "printer": printer.id,
            }))
        }
        "printer.objects.list" => Ok(json!({ "objects": backend.status().names() })),
        "printer.objects.query" => {
            let query = params.objects()?;
            let status = backend.status();
            Ok(json!({ "eventtime": eventtime(), "status": status.query(&query) }))
        }
        "printer.objects.subscribe" => {
            let query = params.objects()?;
            Ok(subscribe(conn, &printer, query))
        }
        "printer.gcode.script" => {
            let script = params.str("script")?;
            backend.gcode_script(&script).await.map_err(printer_error)?;
            ok()
        }
        "printer.print.start" => {
            let file = params.str("filename")?;
            backend.print_start(&file).await.map_err(printer_error)?;
            ok()
        }
        "printer.print.pause" => {
            backend.print_pause().await.map_err(printer_error)?;
            ok()
        }
        "printer.print.resume" => {
            backend.print_resume().await.map_err(printer_error)?;
            ok()
        }
        "printer.print.cancel" => {
            backend.print_cancel().await.map_err(printer_error)?;
            ok()
        }
        "printer.emergency_stop" => {
            backend.emergency_stop().await.map_err(printer_error)?;
            ok()
        }
        "server.files.list" => {
            let files = backend.files_list().await.map_err(printer_error)?;
            Ok(Value::Array(
                files
                    .into_iter()
                    .map(|f| json!({ "path": f.path, "size": f.size, "modified": f.modified, "permissions": "rw" }))
                    .collect(),
            ))
        }
        "server.files.local_copy" => {
            let file = params.str("filename")?;
            if let Some(path) = backend.local_file(&file) {
                return Ok(json!({ "filename": file, "path": path, "copied": false }));
            }
            let target = local_copy_path(
                conn.ctx.manager.options().data_dir.as_deref(),
                &printer.id,
                &file,
            )
            .ok_or_else(|| {
                RpcError::new(
                    INVALID_PARAMS,
                    format!("{method}: '{file}' is not a file name under the G-code folder"),
                )
            })?;
            let data = backend.file_download(&file).await.map_err(printer_error)?;
            let size = data.len();
            let written = target.clone();
            tokio::task::spawn_blocking(move || {
                crate::live::local::write_atomically(&written, &data)
            })
            .await
            .map_err(|e| RpcError::new(INTERNAL_ERROR, e.to_string()))?
            .map_err(|e| {
                RpcError::new(
                    INTERNAL_ERROR,
                    format!("cannot write {}: {e}", target.display()),
                )
            })?;
            Ok(json!({ "filename": file, "path": target, "copied": true, "size": size }))
        }
        "server.files.metadata" => {
            let file = params.str("filename")?;
            let meta = backend.file_metadata(&file).await.map_err(printer_error)?;
            Ok(json!({
                "filename": meta.path,
                "size": meta.size,
                "modified": meta.modified,
                "slicer": meta.slicer,
                "slicer_version": meta.slicer_version,
                "estimated_time": meta.estimated_time_s,
                "filament_total": meta.filament_total_mm,
                "layer_height": meta.layer_height_mm,
                "object_height": meta.object_height_mm,
            }))
        }
        "server.files.upload" => {
            let file = params.str("filename")?;
            let encoded = params.str("content_base64")?;
            let data = base64::engine::general_purpose::STANDARD
                .decode(encoded.as_bytes())
                .map_err(|e| {
                    RpcError::new(
                        INVALID_PARAMS,
                        format!("{method}: 'content_base64' is not base64: {e}"),
                    )
                })?;
            let print = params.opt_bool("print")?.unwrap_or(false);
            let entry = backend
                .file_upload(&file, data, print)
                .await
                .map_err(printer_error)?;
            Ok(json!({
                "item": { "path": entry.path, "size": entry.size, "modified": entry.modified, "root": "gcodes" },
                "print_started": print,
                "action": "create_file",
            }))
        }
        "server.files.delete_file" => {
            let file = params.str("path")?;
            let file = file.strip_prefix("gcodes/").unwrap_or(&file).to_owned();
            backend.file_delete(&file).await.map_err(printer_error)?;
            Ok(json!({ "item": { "path": file, "root": "gcodes" }, "action": "delete_file" }))
        }
        "server.history.list" => {
            let limit = params.opt_u64("limit")?.unwrap_or(50);
            let limit = usize::try_from(limit).unwrap_or(usize::MAX);
            let jobs = backend.history(limit).await.map_err(printer_error)?;
            Ok(json!({ "count": jobs.len(), "jobs": jobs }))
        }
        "server.temperature_store" => Ok(temperature_store(&printer)),
        "server.webcams.list" => {
            let cams = backend.webcams().await.map_err(printer_error)?;
            Ok(json!({ "webcams": cams }))
        }
        other => Err(RpcError::new(
            METHOD_NOT_FOUND,
            format!("Method not found: {other}"),
        )),
    }
}

/// The printer a call names, or the first.
/// Where `server.files.local_copy` keeps a copy of printer `id`'s file `file`:
/// `<data dir>/remote-files/<id>/<file>` (the id with anything but letters, digits, `.`, `-`
/// and `_` made `_`); `None` for a name that is not a plain relative path.
fn local_copy_path(
    data_dir: Option<&std::path::Path>,
    id: &str,
    file: &str,
) -> Option<std::path::PathBuf> {
    let relative = std::path::Path::new(file);
    let plain = !file.is_empty()
        && relative
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
    if !plain {
        return None;
    }
    let folder: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let root = data_dir.map_or_else(
        || std::env::temp_dir().join("gantry"),
        std::path::Path::to_path_buf,
    );
    Some(root.join("remote-files").join(folder).join(relative))
}

fn select(fleet: &Fleet, id: Option<String>) -> Result<FleetPrinter, RpcError> {
    match (fleet.get(id.as_deref()), id) {
        (Some(p), _) => Ok(p),
        (None, Some(id)) => Err(no_printer(&id)),
        (None, None) => Err(RpcError::new(
            PRINTER_UNAVAILABLE,
            "No printer is connected",
        )),
    }
}

/// The error for a fleet id that names no printer (503, as Moonraker answers).
pub(super) fn no_printer(id: &str) -> RpcError {
    RpcError::new(
        PRINTER_UNAVAILABLE,
        format!("No printer '{id}': see printers.fleet for the printers served"),
    )
}

/// The heaters' last 20 minutes, where the backend keeps them (the local printer); other
/// backends answer from their status: one sample, the current one.
fn temperature_store(printer: &FleetPrinter) -> Value {
    if let Some(series) = printer.backend.temperature_store() {
        return series;
    }
    let mut out = serde_json::Map::new();
    for h in printer.backend.status().heaters() {
        out.insert(
            h.name,
            json!({
                "temperatures": [h.temperature],
                "targets": [h.target],
                "powers": [h.power.unwrap_or(0.0)],
            }),
        );
    }
    Value::Object(out)
}

/// Replaces the connection's subscription to `printer`: the filtered snapshot now, then every
/// delta, G-code response and change as notifications.
fn subscribe(conn: &mut Connection, printer: &FleetPrinter, query: ObjectQuery) -> Value {
    if let Some(old) = conn.subscriptions.remove(&printer.id) {
        old.abort();
    }
    let (snapshot, rx) = printer.backend.subscribe();
    let initial = snapshot.query(&query);
    let task = tokio::spawn(forward(
        Arc::clone(&printer.backend),
        printer.id.clone(),
        query,
        rx,
        conn.notify.clone(),
    ));
    conn.subscriptions
        .insert(printer.id.clone(), task.abort_handle());
    json!({ "eventtime": eventtime(), "status": initial })
}

fn notification(method: &str, params: Value) -> Value {
    json!({ "jsonrpc": "2.0", "method": method, "params": params })
}

/// Forwards one printer's events to one connection until either goes away.
async fn forward(
    backend: model::SharedBackend,
    id: String,
    query: ObjectQuery,
    mut rx: broadcast::Receiver<PrinterEvent>,
    notify: mpsc::UnboundedSender<Value>,
) {
    loop {
        let message = match rx.recv().await {
            Ok(PrinterEvent::Status {
                delta,
                eventtime: t,
            }) => {
                let delta = model::filter(&delta, &query);
                if delta.is_empty() {
                    continue;
                }
                notification(
                    "notify_status_update",
                    json!([delta, t.unwrap_or_else(eventtime), id]),
                )
            }
            Ok(PrinterEvent::GcodeResponse { line }) => {
                notification("notify_gcode_response", json!([line, id]))
            }
            Ok(PrinterEvent::Reset) | Err(broadcast::error::RecvError::Lagged(_)) => {
                // Missed or replaced deltas: the whole subscribed status again.
                let status = backend.status().query(&query);
                notification("notify_status_update", json!([status, eventtime(), id]))
            }
            Ok(PrinterEvent::Link(state)) => {
                notification("notify_printer_link", json!([state, id]))
            }
            Ok(PrinterEvent::FilesChanged) => notification(
                "notify_filelist_changed",
                json!([{ "action": "changed", "item": { "root": "gcodes" } }, id]),
            ),
            Ok(PrinterEvent::HistoryChanged) => notification(
                "notify_history_changed",
                json!([{ "action": "changed" }, id]),
            ),
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if notify.send(message).is_err() {
            return;
        }
    }
}

/// A printer's error as a JSON-RPC error, with Moonraker's HTTP-like codes.
fn printer_error(e: PrinterError) -> RpcError {
    let code = match &e {
        PrinterError::InvalidInput(_) | PrinterError::Rejected(_) => PRINTER_REFUSED,
        PrinterError::Unauthorized { .. } => 401,
        PrinterError::Unsupported { .. } => 501,
        PrinterError::Protocol { .. } | PrinterError::Tls { .. } => 502,
        PrinterError::Timeout { .. } => 504,
        PrinterError::Http { status, .. } => i64::from(*status),
        PrinterError::NotReady(_) | PrinterError::Unreachable { .. } | PrinterError::Closed(_) => {
            PRINTER_UNAVAILABLE
        }
    };
    RpcError::new(code, e.to_string())
}

/// A method's params: an object (or absent).
pub(super) struct Params<'a> {
    method: &'a str,
    map: Option<&'a serde_json::Map<String, Value>>,
}

impl<'a> Params<'a> {
    pub(super) fn new(method: &'a str, params: &'a Value) -> Result<Self, RpcError> {
        match params {
            Value::Null => Ok(Self { method, map: None }),
            Value::Object(map) => Ok(Self {
                method,
                map: Some(map),
            }),
            Value::Array(a) if a.is_empty() => Ok(Self { method, map: None }),
            _ => Err(RpcError::new(
                INVALID_PARAMS,
                format!("{method} takes its parameters by name (an object)"),
            )),
        }
    }

    fn get(&self, name: &str) -> Option<&'a Value> {
        self.map.and_then(|m| m.get(name)).filter(|v| !v.is_null())
    }

    fn invalid(&self, name: &str, what: &str) -> RpcError {
        RpcError::new(
            INVALID_PARAMS,
            format!("{}: parameter '{name}' must be {what}", self.method),
        )
    }

    pub(super) fn opt_str(&self, name: &str) -> Result<Option<String>, RpcError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(self.invalid(name, "a string")),
        }
    }

    pub(super) fn str(&self, name: &str) -> Result<String, RpcError> {
        self.opt_str(name)?.ok_or_else(|| {
            RpcError::new(
                INVALID_PARAMS,
                format!("{}: parameter '{name}' is required", self.method),
            )
        })
    }

    pub(super) fn opt_bool(&self, name: &str) -> Result<Option<bool>, RpcError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(self.invalid(name, "true or false")),
        }
    }

    fn opt_u64(&self, name: &str) -> Result<Option<u64>, RpcError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| self.invalid(name, "a whole number ≥ 0")),
        }
    }

    /// Moonraker's `objects`: `{name: null | [fields]}`.
    fn objects(&self) -> Result<ObjectQuery, RpcError> {
        let Some(v) = self.get("objects") else {
            return Ok(ObjectQuery::new());
        };
        serde_json::from_value(v.clone()).map_err(|_| {
            self.invalid(
                "objects",
                "an object of object names to null or field lists",
            )
        })
    }
}

/// Methods without parameters accept absent, empty-object or empty-array params.
pub(super) fn no_params(method: &str, params: &Value) -> Result<(), RpcError> {
    let empty = match params {
        Value::Null => true,
        Value::Object(o) => o.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    };
    if empty {
        Ok(())
    } else {
        Err(RpcError::new(
            INVALID_PARAMS,
            format!("{method} takes no parameters"),
        ))
    }
}

fn server_info(ctx: &Context) -> Value {
    let [major, minor, patch] = API_VERSION;
    // Moonraker's fields, for the default printer: Gantry is the Klipper host of a local one.
    let state = ctx
        .fleet
        .get(None)
        .and_then(|p| p.backend.status().klippy_state())
        .unwrap_or(model::KlippyState::Disconnected);
    json!({
        "gantry_version": crate::VERSION,
        "api_version": API_VERSION,
        "api_version_string": format!("{major}.{minor}.{patch}"),
        "klippy_connected": state != model::KlippyState::Disconnected,
        "klippy_state": state,
        "hostname": hostname(),
        "platform": std::env::consts::OS,
        "methods": METHODS,
    })
}

fn hostname() -> String {
    // /proc is Linux's; elsewhere the environment usually names the host.
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connection() -> (Connection, mpsc::UnboundedReceiver<Value>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Connection::new(Arc::new(Context::default()), tx), rx)
    }

    #[tokio::test]
    async fn server_info_names_version_and_methods() {
        let (mut conn, _rx) = connection();
        let info = call(&mut conn, "server.info", &Value::Null)
            .await
            .expect("server.info");
        assert_eq!(info["gantry_version"], crate::VERSION);
        assert_eq!(info["api_version_string"], "0.4.0");
        assert_eq!(info["methods"], json!(METHODS));
        assert_eq!(info["klippy_state"], "disconnected");
    }

    #[tokio::test]
    async fn printers_list_always_has_the_simulated_printer() {
        let (mut conn, _rx) = connection();
        let v = call(&mut conn, "printers.list", &json!({}))
            .await
            .expect("printers.list");
        let printers = v["printers"].as_array().expect("an array");
        assert_eq!(printers[0]["id"], "sim");
        assert_eq!(printers[0]["kind"], "simulated");
    }

    #[tokio::test]
    async fn unknown_methods_stray_params_and_missing_printers_are_errors() {
        let (mut conn, _rx) = connection();
        let e = call(&mut conn, "printer.frobnicate", &Value::Null)
            .await
            .expect_err("unknown");
        assert_eq!(e.code, METHOD_NOT_FOUND);
        assert_eq!(e.message, "Method not found: printer.frobnicate");
        let e = call(&mut conn, "server.info", &json!({"x": 1}))
            .await
            .expect_err("params");
        assert_eq!(e.code, INVALID_PARAMS);
        let e = call(&mut conn, "printer.emergency_stop", &Value::Null)
            .await
            .expect_err("no printer");
        assert_eq!(e.code, PRINTER_UNAVAILABLE);
        assert_eq!(e.message, "No printer is connected");
        let e = call(
            &mut conn,
            "printer.objects.query",
            &json!({"printer": "voron"}),
        )
        .await
        .expect_err("unknown printer");
        assert!(e.message.starts_with("No printer 'voron'"), "{}", e.message);
        let e = call(&mut conn, "printer.gcode.script", &json!([1, 2]))
            .await
            .expect_err("positional");
        assert_eq!(e.code, INVALID_PARAMS);
    }

    #[test]
    fn method_table_is_sorted_and_unique() {
        let mut sorted = METHODS.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted, METHODS);
    }

    #[test]
    fn local_copies_stay_in_their_printers_folder() {
        let root = std::path::Path::new("/data");
        assert_eq!(
            local_copy_path(Some(root), "moonraker:voron.local:7125", "parts/a b.gcode"),
            Some(root.join("remote-files/moonraker_voron.local_7125/parts/a b.gcode"))
        );
        for bad in [
            "",
            "../x.gcode",
            "/etc/passwd",
            "a/../../x.gcode",
            "./x.gcode",
        ] {
            assert_eq!(
                local_copy_path(Some(root), "octoprint:h:80", bad),
                None,
                "{bad}"
            );
        }
        let fallback = local_copy_path(None, "sim", "x.gcode").expect("a path");
        assert!(
            fallback.starts_with(std::env::temp_dir()),
            "{}",
            fallback.display()
        );
    }
}
