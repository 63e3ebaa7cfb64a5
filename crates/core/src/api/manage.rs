//! The `printers.*` section of the API: the printers a user can find, add and remove.
//!
//! - `printers.add` turns an address a user typed (and an optional API key or user and password)
//!   into a fleet printer: [`remote::probe`] finds which API answers, [`remote::connect`] opens
//!   it, and the fleet gets it under the id `kind:host:port`. Every failure is one sentence in
//!   the user's words — refused, timed out, TLS, "needs an API key", the key refused — with what
//!   to do about it.
//! - `printers.remove` takes a remote printer out of the fleet and closes its connection.
//! - With [`ManagerOptions::keep_printers`] (the desktop app, `gantry serve --remember`), every
//!   printer added is saved in the store (address, name, credentials; or the printer.cfg's
//!   path) and forgotten when removed; [`Manager::restore`] puts the saved ones back in the
//!   fleet at start, each connecting in the background ([`crate::saved`]).
//! - `printers.discovered` lists what this machine can find: mDNS advertisements from a
//!   [`Discovery`] started on first use, and USB serial boards from [`crate::printers::list`],
//!   polled while the finder runs.
//! - `printers.subscribe` sends `notify_printers_changed` when the fleet changes, a fleet
//!   printer's link or Klippy state changes, or the discovered set changes.
//!
//! Credentials stay here: they go to the backend and nowhere else — never into a log, an
//! answer, an error or a fleet entry (the address shown has any user and password removed).
//!
//! [`Manager`] owns two tasks, both started on first use and ended by [`Manager::shutdown`]: the
//! fleet monitor (one watcher per fleet printer, keeping its last link state) and the finder
//! (mDNS events and the USB poll).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio::task::{JoinHandle, JoinSet};

use super::methods::{Context, PRINTER_UNAVAILABLE, Params, no_params, no_printer};
use super::rpc::{INTERNAL_ERROR, INVALID_PARAMS, RpcError};
use crate::discovery::{DiscoveredPrinter, Discovery, DiscoveryEvent, DiscoveryOptions};
use crate::fleet::{Fleet, FleetEntry, FleetEvent, FleetPrinter};
use crate::model::{
    BackendKind, KlippyState, LinkState, PrinterBackend as _, PrinterError, PrinterEvent,
};
use crate::printers::{self, PrinterEntry, PrinterKind};
use crate::remote::{self, Credentials, ProbeReport, RemoteOptions, Secret, Url};

/// The environment variable that sets where mDNS browses: unset or empty for every interface,
/// `off` for nowhere, else interface names separated by commas.
pub const MDNS_ENV: &str = "GANTRY_MDNS";

/// Code of an answer that needs credentials, or refused the ones given (HTTP's 401).
pub const NEEDS_CREDENTIALS: i64 = 401;
/// Code of a request the API will not do (removing the built-in printer; HTTP's 403).
pub const FORBIDDEN: i64 = 403;
/// Code of a printer that is already in the list (HTTP's 409).
pub const ALREADY_ADDED: i64 = 409;
/// Code of an address where no printer API answers properly (HTTP's 502).
pub const NO_PRINTER_API: i64 = 502;
/// Code of an address that did not answer in time (HTTP's 504).
pub const TIMED_OUT: i64 = 504;

/// How the printers section finds and connects printers.
#[derive(Debug, Clone, PartialEq)]
pub struct ManagerOptions {
    /// Where mDNS browses; `None`: it does not.
    pub mdns: Option<DiscoveryOptions>,
    /// Timeouts of the remote printers added.
    pub remote: RemoteOptions,
    /// How often the USB serial boards are listed again while the finder runs.
    pub usb_poll: Duration,
    /// Gantry's data folder, for the printers it drives (their G-code folders and job
    /// history); `None`: no history, files in the system's temporary folder.
    pub data_dir: Option<std::path::PathBuf>,
    /// Whether the printers added are saved in the data folder's database and brought back by
    /// [`Manager::restore`] (needs `data_dir`).
    pub keep_printers: bool,
    /// How a saved printer that does not answer at start is retried.
    pub retry: crate::saved::Retry,
}

impl Default for ManagerOptions {
    fn default() -> Self {
        Self {
            mdns: Some(DiscoveryOptions::default()),
            remote: RemoteOptions::default(),
            usb_poll: Duration::from_secs(2),
            data_dir: None,
            keep_printers: false,
            retry: crate::saved::Retry::default(),
        }
    }
}

impl ManagerOptions {
    /// The defaults, with mDNS as [`MDNS_ENV`] says.
    pub fn from_env() -> Self {
        Self {
            mdns: mdns_setting(std::env::var(MDNS_ENV).ok().as_deref()),
            data_dir: crate::store::default_database_path()
                .and_then(|p| p.parent().map(std::path::Path::to_path_buf)),
            ..Self::default()
        }
    }
}

/// Reads [`MDNS_ENV`]'s value.
fn mdns_setting(value: Option<&str>) -> Option<DiscoveryOptions> {
    let value = value.map(str::trim).unwrap_or("");
    if value.eq_ignore_ascii_case("off") {
        return None;
    }
    let names: Vec<String> = value
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect();
    Some(DiscoveryOptions {
        interfaces: (!names.is_empty()).then_some(names),
        ..DiscoveryOptions::default()
    })
}

/// One change, as `notify_printers_changed` carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PrintersChange {
    /// `fleet` (the printers served), `network` (mDNS) or `usb` (serial boards).
    pub source: &'static str,
    /// `added`, `removed`, `updated`, `link` (a fleet printer's connection), `state` (its
    /// Klippy state), `changed` (the USB list) or `resync` (changes were missed: read all).
    pub action: &'static str,
    /// The printer's id, when one printer changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

impl PrintersChange {
    fn new(source: &'static str, action: &'static str, id: Option<String>) -> Self {
        Self { source, action, id }
    }
}

/// Where mDNS browsing stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
enum MdnsState {
    /// Not asked for yet.
    Idle,
    /// Browsing.
    Browsing {
        /// Where: `every interface` or the names.
        interfaces: String,
    },
    /// Turned off.
    Off {
        /// Why.
        message: String,
    },
    /// It could not start.
    Failed {
        /// Why.
        message: String,
    },
}

#[derive(Debug)]
struct Finder {
    discovery: Option<Discovery>,
    mdns: MdnsState,
    task: Option<JoinHandle<()>>,
}

/// The shared part the tasks update.
#[derive(Debug)]
struct Shared {
    changes: broadcast::Sender<PrintersChange>,
    /// A fleet printer's last link state, by id.
    links: Mutex<HashMap<String, LinkState>>,
    /// The USB serial boards as last listed; `None` before the first listing.
    usb: Mutex<Option<Vec<PrinterEntry>>>,
}

impl Shared {
    fn send(&self, change: PrintersChange) {
        // No subscriber is fine: nobody is watching the Printers page.
        let _ = self.changes.send(change);
    }

    fn link(&self, id: &str) -> Option<LinkState> {
        self.links
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
    }

    fn set_link(&self, id: &str, state: Option<LinkState>) {
        let mut links = self.links.lock().unwrap_or_else(PoisonError::into_inner);
        match state {
            Some(s) => links.insert(id.to_owned(), s),
            None => links.remove(id),
        };
    }
}

/// The printers section's state: options, the change feed, the monitor and the finder.
#[derive(Debug)]
pub struct Manager {
    options: ManagerOptions,
    shared: Arc<Shared>,
    monitor: Mutex<Option<JoinHandle<()>>>,
    finder: tokio::sync::Mutex<Finder>,
}

impl Default for Manager {
    fn default() -> Self {
        Self::new(ManagerOptions::default())
    }
}

impl Manager {
    /// A manager; nothing starts until an API call needs it.
    pub fn new(options: ManagerOptions) -> Self {
        Self {
            options,
            shared: Arc::new(Shared {
                changes: broadcast::channel(256).0,
                links: Mutex::new(HashMap::new()),
                usb: Mutex::new(None),
            }),
            monitor: Mutex::new(None),
            finder: tokio::sync::Mutex::new(Finder {
                discovery: None,
                mdns: MdnsState::Idle,
                task: None,
            }),
        }
    }

    /// The options.
    pub fn options(&self) -> &ManagerOptions {
        &self.options
    }

    /// Changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<PrintersChange> {
        self.shared.changes.subscribe()
    }

    /// Starts the fleet monitor unless it runs.
    fn ensure_monitor(&self, fleet: &Arc<Fleet>) {
        let mut monitor = self.monitor.lock().unwrap_or_else(PoisonError::into_inner);
        if monitor.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let events = fleet.subscribe();
        *monitor = Some(tokio::spawn(run_monitor(
            Arc::downgrade(fleet),
            events,
            Arc::clone(&self.shared),
        )));
    }

    /// Starts mDNS (as the options say) and the USB poll unless they run, and lists the USB
    /// boards once if that never happened.
    async fn ensure_finder(&self) {
        let mut finder = self.finder.lock().await;
        if finder.task.is_none() {
            let events = match &self.options.mdns {
                None => {
                    finder.mdns = MdnsState::Off {
                        message: format!("mDNS discovery is off ({MDNS_ENV}=off)"),
                    };
                    None
                }
                Some(options) => match Discovery::start(options) {
                    Ok(d) => {
                        let (_, rx) = d.subscribe();
                        finder.mdns = MdnsState::Browsing {
                            interfaces: options
                                .interfaces
                                .as_ref()
                                .map_or_else(|| "every interface".to_owned(), |n| n.join(", ")),
                        };
                        finder.discovery = Some(d);
                        Some(rx)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "mDNS discovery did not start");
                        finder.mdns = MdnsState::Failed {
                            message: e.to_string(),
                        };
                        None
                    }
                },
            };
            finder.task = Some(tokio::spawn(run_finder(
                events,
                Arc::clone(&self.shared),
                self.options.usb_poll,
            )));
        }
        drop(finder);
        let listed = self
            .shared
            .usb
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some();
        if !listed && let Ok(list) = tokio::task::spawn_blocking(usb_boards).await {
            let mut usb = self
                .shared
                .usb
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            usb.get_or_insert(list);
        }
    }

    /// The database that keeps the printers added, when [`ManagerOptions::keep_printers`].
    fn saved_database(&self) -> Option<std::path::PathBuf> {
        let dir = self
            .options
            .data_dir
            .as_ref()
            .filter(|_| self.options.keep_printers)?;
        Some(dir.join("gantry.db"))
    }

    /// Runs `f` on the database of saved printers (on a blocking thread); `None` when printers
    /// are not kept, else `f`'s result or the store's error in words.
    async fn with_saved<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut crate::store::Store) -> Result<T, crate::store::StoreError> + Send + 'static,
    ) -> Option<Result<T, String>> {
        let db = self.saved_database()?;
        let result = tokio::task::spawn_blocking(move || {
            if let Some(dir) = db.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            }
            let mut store = crate::store::Store::open(&db).map_err(|e| e.to_string())?;
            f(&mut store).map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        Some(result)
    }

    /// Puts the saved printers back in the fleet (those not in it already), each under its id
    /// and name, connecting in the background and retried as [`ManagerOptions::retry`] says
    /// while it does not answer. Returns their ids; an unreadable database is logged and
    /// restores nothing (the file is left as it is).
    pub async fn restore(&self, fleet: &Arc<Fleet>) -> Vec<String> {
        let Some(saved) = self.with_saved(|store| store.saved_printers()).await else {
            return Vec::new();
        };
        let saved = match saved {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the saved printers; none restored");
                return Vec::new();
            }
        };
        self.ensure_monitor(fleet);
        let mut restored = Vec::new();
        for printer in saved {
            if fleet.get(Some(&printer.fleet_id)).is_some() {
                continue;
            }
            let (kind, connect) = match self.connector(&printer) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(id = %printer.fleet_id, error = %e, "a saved printer cannot be restored");
                    continue;
                }
            };
            let backend = crate::saved::SavedBackend::start(kind, connect, self.options.retry);
            let id = printer.fleet_id.clone();
            self.shared.set_link(
                &id,
                Some(LinkState::Connecting {
                    reason: "the first try is under way".into(),
                    retry_in_ms: 0,
                }),
            );
            let entry = FleetPrinter {
                id: id.clone(),
                name: printer.name,
                address: printer.address,
                backend: Arc::clone(&backend) as crate::model::SharedBackend,
            };
            if fleet.add(entry).is_err() {
                self.shared.set_link(&id, None);
                backend.close().await;
                continue;
            }
            tracing::info!(%id, "restored a saved printer");
            restored.push(id);
        }
        restored
    }

    /// How a saved printer is connected: its backend kind and the connector.
    fn connector(
        &self,
        printer: &crate::store::SavedPrinter,
    ) -> Result<(BackendKind, crate::saved::Connector), String> {
        if printer.kind == BOARD_KIND {
            let path = std::path::PathBuf::from(&printer.address);
            let id = printer.fleet_id.clone();
            let data_dir = self.options.data_dir.clone();
            let connect: crate::saved::Connector = Box::new(move || {
                let (path, id, data_dir) = (path.clone(), id.clone(), data_dir.clone());
                Box::pin(async move {
                    start_board(&path, id, data_dir)
                        .await
                        .map(|(printer, _)| printer)
                        .map_err(|f| crate::saved::Failed {
                            reason: f.cause,
                            give_up: false,
                        })
                })
            });
            return Ok((BackendKind::Local, connect));
        }
        let kind = match printer.kind.as_str() {
            "moonraker" => BackendKind::Moonraker,
            "octoprint" => BackendKind::OctoPrint,
            "prusalink" => BackendKind::PrusaLink,
            other => return Err(format!("unknown kind '{other}'")),
        };
        let url = Url::parse(&printer.address).map_err(|e| format!("bad address: {e}"))?;
        let credentials: Credentials = serde_json::from_value(printer.credentials.clone())
            .map_err(|e| format!("bad credentials: {e}"))?;
        let options = self.options.remote.clone();
        let connect: crate::saved::Connector = Box::new(move || {
            let (url, credentials, options) = (url.clone(), credentials.clone(), options.clone());
            Box::pin(async move {
                // The cause alone: the fleet entry's problem says what to do.
                remote::connect(kind, url, credentials, options)
                    .await
                    .map_err(|e| crate::saved::Failed {
                        give_up: matches!(e, PrinterError::Unauthorized { .. }),
                        reason: capitalise(&e.to_string()),
                    })
            })
        });
        Ok((kind, connect))
    }

    /// Saves a printer just added, when the call asked for it (`save`, true unless given false)
    /// and printers are kept: whether it was saved (a failure is logged; the printer stays
    /// added).
    async fn save(&self, wanted: bool, printer: crate::store::SavedPrinter) -> Value {
        if !wanted {
            return json!(false);
        }
        let id = printer.fleet_id.clone();
        match self
            .with_saved(move |store| store.save_printer(&printer))
            .await
        {
            None => json!(false),
            Some(Ok(())) => json!(true),
            Some(Err(e)) => {
                tracing::warn!(%id, error = %e, "the printer was added but not saved");
                json!(false)
            }
        }
    }

    /// Ends the monitor and the finder and waits for them; stops mDNS.
    pub async fn shutdown(&self) {
        let monitor = self
            .monitor
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = monitor {
            task.abort();
            let _ = task.await;
        }
        let mut finder = self.finder.lock().await;
        if let Some(task) = finder.task.take() {
            task.abort();
            let _ = task.await;
        }
        if let Some(discovery) = finder.discovery.take() {
            // Stopping waits up to a second for the daemon's thread.
            let _ = tokio::task::spawn_blocking(move || discovery.stop()).await;
        }
        finder.mdns = MdnsState::Idle;
    }
}

/// The USB serial boards `printers::list` sees (blocking: sysfs and udev).
fn usb_boards() -> Vec<PrinterEntry> {
    printers::list()
        .into_iter()
        .filter(|p| p.kind == PrinterKind::Serial)
        .collect()
}

/// Watches the fleet: one watcher per printer, which keeps its last link state and reports
/// link and Klippy-state changes. Ends when the fleet is gone.
async fn run_monitor(
    fleet: Weak<Fleet>,
    mut events: broadcast::Receiver<FleetEvent>,
    shared: Arc<Shared>,
) {
    let mut watchers: HashMap<String, tokio::task::AbortHandle> = HashMap::new();
    let mut tasks = JoinSet::new();
    let watch = |printer: &FleetPrinter,
                 watchers: &mut HashMap<String, tokio::task::AbortHandle>,
                 tasks: &mut JoinSet<()>| {
        if watchers.contains_key(&printer.id) {
            return;
        }
        let (_, rx) = printer.backend.subscribe();
        let handle = tasks.spawn(watch_printer(printer.id.clone(), rx, Arc::clone(&shared)));
        watchers.insert(printer.id.clone(), handle);
    };
    if let Some(f) = fleet.upgrade() {
        for entry in f.list() {
            if let Some(p) = f.get(Some(&entry.id)) {
                watch(&p, &mut watchers, &mut tasks);
            }
        }
    }
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(FleetEvent::Added { id }) => {
                    let printer = fleet.upgrade().and_then(|f| f.get(Some(&id)));
                    if let Some(p) = printer {
                        watch(&p, &mut watchers, &mut tasks);
                    }
                    shared.send(PrintersChange::new("fleet", "added", Some(id)));
                }
                Ok(FleetEvent::Removed { id }) => {
                    if let Some(w) = watchers.remove(&id) {
                        w.abort();
                    }
                    shared.set_link(&id, None);
                    shared.send(PrintersChange::new("fleet", "removed", Some(id)));
                }
                Ok(FleetEvent::Renamed { id }) => {
                    shared.send(PrintersChange::new("fleet", "renamed", Some(id)));
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Missed fleet changes: watch whatever is there now.
                    if let Some(f) = fleet.upgrade() {
                        for entry in f.list() {
                            if let Some(p) = f.get(Some(&entry.id)) {
                                watch(&p, &mut watchers, &mut tasks);
                            }
                        }
                    }
                    shared.send(PrintersChange::new("fleet", "resync", None));
                }
                Err(broadcast::error::RecvError::Closed) => break,
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {
                watchers.retain(|_, h| !h.is_finished());
            }
        }
    }
    tasks.shutdown().await;
}

/// Follows one printer's events until its backend goes away.
async fn watch_printer(id: String, mut rx: broadcast::Receiver<PrinterEvent>, shared: Arc<Shared>) {
    loop {
        match rx.recv().await {
            Ok(PrinterEvent::Link(state)) => {
                shared.set_link(&id, Some(state));
                shared.send(PrintersChange::new("fleet", "link", Some(id.clone())));
            }
            Ok(PrinterEvent::Status { delta, .. }) => {
                if delta.contains_key("webhooks") {
                    shared.send(PrintersChange::new("fleet", "state", Some(id.clone())));
                }
            }
            Ok(PrinterEvent::Reset) | Err(broadcast::error::RecvError::Lagged(_)) => {
                shared.send(PrintersChange::new("fleet", "state", Some(id.clone())));
            }
            Ok(_) => {}
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Forwards mDNS changes and polls the USB boards.
async fn run_finder(
    mut mdns: Option<broadcast::Receiver<DiscoveryEvent>>,
    shared: Arc<Shared>,
    poll: Duration,
) {
    let mut tick = tokio::time::interval(poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            event = async {
                match mdns.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => match event {
                Ok(DiscoveryEvent::Added(p)) => {
                    shared.send(PrintersChange::new("network", "added", Some(p.id)));
                }
                Ok(DiscoveryEvent::Updated(p)) => {
                    shared.send(PrintersChange::new("network", "updated", Some(p.id)));
                }
                Ok(DiscoveryEvent::Removed { id }) => {
                    shared.send(PrintersChange::new("network", "removed", Some(id)));
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    shared.send(PrintersChange::new("network", "resync", None));
                }
                Err(broadcast::error::RecvError::Closed) => mdns = None,
            },
            _ = tick.tick() => {
                let Ok(list) = tokio::task::spawn_blocking(usb_boards).await else {
                    continue;
                };
                let changed = {
                    let mut usb = shared.usb.lock().unwrap_or_else(PoisonError::into_inner);
                    let changed = usb.as_ref().is_some_and(|old| *old != list);
                    *usb = Some(list);
                    changed
                };
                if changed {
                    shared.send(PrintersChange::new("usb", "changed", None));
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The fleet as the Printers page shows it
// ---------------------------------------------------------------------------------------------

/// What is wrong with a printer, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The cause, as the server or the connection said it.
    pub cause: String,
    /// What the user can do.
    pub advice: String,
}

/// A fleet entry with its link state and, when something is wrong, the problem.
fn entry_json(entry: &FleetEntry, link: Option<&LinkState>) -> Value {
    let mut v = serde_json::to_value(entry).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut v {
        map.insert(
            "link".into(),
            serde_json::to_value(link).unwrap_or(Value::Null),
        );
        map.insert(
            "problem".into(),
            serde_json::to_value(problem(entry, link)).unwrap_or(Value::Null),
        );
    }
    v
}

/// The fleet, each printer with its link state and problem.
pub(super) fn fleet_json(ctx: &Context) -> Value {
    ctx.manager.ensure_monitor(&ctx.fleet);
    let shared = &ctx.manager.shared;
    let list: Vec<Value> = ctx
        .fleet
        .list()
        .iter()
        .map(|e| entry_json(e, shared.link(&e.id).as_ref()))
        .collect();
    json!({ "printers": list })
}

/// What is wrong with a printer (the link first: without it the state is stale), or `None`.
pub fn problem(entry: &FleetEntry, link: Option<&LinkState>) -> Option<Problem> {
    let product = entry.kind.name();
    match link {
        Some(LinkState::Reconnecting {
            reason,
            retry_in_ms,
        }) => {
            return Some(Problem {
                cause: format!("Gantry lost the connection: {reason}"),
                advice: format!(
                    "Gantry tries again by itself (next try in {:.0} s). Check that {product} is \
                     running at {} and that this computer can reach it.",
                    (*retry_in_ms as f64 / 1000.0).ceil(),
                    entry.address
                ),
            });
        }
        Some(LinkState::Connecting {
            reason,
            retry_in_ms,
        }) => {
            let next = if *retry_in_ms == 0 {
                "Gantry is trying now".to_owned()
            } else {
                format!(
                    "Gantry keeps trying (next try in {:.0} s)",
                    (*retry_in_ms as f64 / 1000.0).ceil()
                )
            };
            let what = if entry.kind == BackendKind::Local {
                format!(
                    "Check that the boards of {} are plugged in and that no other program has their ports open",
                    entry.address
                )
            } else {
                format!(
                    "Check that {product} is running at {} and that this computer can reach it",
                    entry.address
                )
            };
            return Some(Problem {
                cause: format!("Not connected since Gantry started: {reason}"),
                advice: format!("{next}. {what}; or remove the printer if it is gone."),
            });
        }
        Some(LinkState::Closed { reason }) => {
            let credentials = reason.contains("API key")
                || reason.contains("login")
                || reason.contains("password")
                || reason.contains("credentials");
            return Some(Problem {
                cause: format!("The connection is closed: {reason}"),
                advice: if credentials {
                    format!(
                        "Remove the printer and add it again with credentials {product} accepts."
                    )
                } else {
                    "Remove the printer and add it again to reconnect.".to_owned()
                },
            });
        }
        Some(LinkState::Connected) | None => {}
    }
    let message = entry.state_message.clone().unwrap_or_default();
    let said = |fallback: &str| {
        if message.is_empty() {
            fallback.to_owned()
        } else {
            message.clone()
        }
    };
    match (entry.state?, entry.kind) {
        (KlippyState::Ready | KlippyState::Startup, _) => None,
        (KlippyState::Disconnected, BackendKind::OctoPrint) => Some(Problem {
            cause: format!(
                "OctoPrint is not connected to its printer ({})",
                said("Offline")
            ),
            advice: "Connect the printer in OctoPrint (its Connection panel); it shows here \
                     as soon as OctoPrint reports it operational."
                .to_owned(),
        }),
        (KlippyState::Disconnected, BackendKind::Moonraker) => Some(Problem {
            cause: "Moonraker answers, but Klipper is not running behind it".to_owned(),
            advice: "Start the Klipper service on the printer's computer (or read klippy.log \
                     there to see why it stopped)."
                .to_owned(),
        }),
        (KlippyState::Disconnected, _) => Some(Problem {
            cause: said("The printer is not connected"),
            advice: format!("Check the printer and its connection to {product}."),
        }),
        (KlippyState::Error, BackendKind::OctoPrint) => Some(Problem {
            cause: said("OctoPrint reports an error"),
            advice: "Reconnect the printer in OctoPrint once the cause is fixed.".to_owned(),
        }),
        (KlippyState::Error | KlippyState::Shutdown, BackendKind::Local) => Some(Problem {
            cause: said("Klipper stopped"),
            advice: "Fix the cause the message names, then restart Gantry to connect the \
                     printer again."
                .to_owned(),
        }),
        (KlippyState::Error, _) => Some(Problem {
            cause: said("Klipper could not start"),
            advice: "Fix what the message names (usually printer.cfg), then send \
                     FIRMWARE_RESTART from the Console."
                .to_owned(),
        }),
        (KlippyState::Shutdown, _) => Some(Problem {
            cause: said("Klipper shut down"),
            advice: "Find the cause in the message, then send FIRMWARE_RESTART from the \
                     Console."
                .to_owned(),
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// The methods
// ---------------------------------------------------------------------------------------------

/// Every method of this section, sorted.
pub const METHODS: &[&str] = &[
    "printers.add",
    "printers.discovered",
    "printers.remove",
    "printers.rename",
    "printers.subscribe",
];

/// Runs one method of this section.
pub(super) async fn call(
    ctx: &Context,
    method: &str,
    params: &Value,
    notify: &mpsc::UnboundedSender<Value>,
    feed: &mut Option<tokio::task::AbortHandle>,
) -> Result<Value, RpcError> {
    ctx.manager.ensure_monitor(&ctx.fleet);
    let raw = params;
    let params = Params::new(method, params)?;
    match method {
        "printers.add" => add(ctx, &params).await,
        "printers.remove" => remove(ctx, &params.str("id")?).await,
        "printers.rename" => rename(ctx, &params.str("id")?, &params.str("name")?).await,
        "printers.discovered" => {
            no_params(method, raw)?;
            Ok(discovered(ctx).await)
        }
        "printers.subscribe" => {
            no_params(method, raw)?;
            let rx = ctx.manager.subscribe();
            if let Some(old) = feed.take() {
                old.abort();
            }
            *feed = Some(tokio::spawn(forward(rx, notify.clone())).abort_handle());
            let mut state = discovered(ctx).await;
            if let Value::Object(map) = &mut state {
                map.insert("fleet".into(), fleet_json(ctx)["printers"].take());
            }
            Ok(state)
        }
        other => Err(RpcError::new(
            super::rpc::METHOD_NOT_FOUND,
            format!("Method not found: {other}"),
        )),
    }
}

/// Sends every change to one connection until either goes away.
async fn forward(
    mut rx: broadcast::Receiver<PrintersChange>,
    notify: mpsc::UnboundedSender<Value>,
) {
    loop {
        let change = match rx.recv().await {
            Ok(c) => c,
            Err(broadcast::error::RecvError::Lagged(_)) => {
                PrintersChange::new("fleet", "resync", None)
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let message = json!({
            "jsonrpc": "2.0",
            "method": "notify_printers_changed",
            "params": [change],
        });
        if notify.send(message).is_err() {
            return;
        }
    }
}

/// `printers.discovered`: mDNS (with each entry's backend and fleet id when added) and USB.
async fn discovered(ctx: &Context) -> Value {
    ctx.manager.ensure_finder().await;
    let (network, mdns) = {
        let finder = ctx.manager.finder.lock().await;
        (
            finder
                .discovery
                .as_ref()
                .map(Discovery::printers)
                .unwrap_or_default(),
            finder.mdns.clone(),
        )
    };
    let network: Vec<Value> = network
        .iter()
        .map(|p| network_json(p, &ctx.fleet))
        .collect();
    let usb = ctx
        .manager
        .shared
        .usb
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
        .unwrap_or_default();
    json!({ "mdns": mdns, "network": network, "usb": usb })
}

fn network_json(p: &DiscoveredPrinter, fleet: &Fleet) -> Value {
    let backend = p.kind.backend();
    let added = backend
        .zip(Url::parse(&p.url).ok())
        .map(|(kind, url)| printer_id(kind, &url))
        .filter(|id| fleet.get(Some(id)).is_some());
    let mut v = serde_json::to_value(p).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut v {
        map.insert("backend".into(), json!(backend));
        map.insert("added".into(), json!(added));
    }
    v
}

/// The fleet id of a remote printer: `kind:host:port`, and its path when it has one
/// (`octoprint:octopi.local:80/octo`).
pub fn printer_id(kind: BackendKind, url: &Url) -> String {
    let kind = kind_name(kind);
    let host = url.host_str().unwrap_or("");
    let port = url.port_or_known_default().unwrap_or(80);
    let path = url.path().trim_end_matches('/');
    format!("{kind}:{host}:{port}{path}")
}

/// A backend kind as ids and the saved printers name it.
fn kind_name(kind: BackendKind) -> &'static str {
    match kind {
        BackendKind::Moonraker => "moonraker",
        BackendKind::OctoPrint => "octoprint",
        BackendKind::PrusaLink => "prusalink",
        BackendKind::Local => "local",
    }
}

/// The saved kind of a printer.cfg Gantry drives.
const BOARD_KIND: &str = "klipper";

/// The credentials a `printers.add` call gives (empty strings count as absent).
fn credentials(params: &Params<'_>, url: &mut Url) -> Result<Credentials, RpcError> {
    let given = |name: &str| -> Result<Option<String>, RpcError> {
        Ok(params.opt_str(name)?.filter(|s| !s.trim().is_empty()))
    };
    let key = given("api_key")?;
    let mut user = given("username")?;
    let mut password = given("password")?;
    // A user and password in the address (`http://me:pw@host`) count as given, and leave it.
    if !url.username().is_empty() || url.password().is_some() {
        if user.is_none() && password.is_none() && key.is_none() {
            user = Some(url.username().to_owned()).filter(|u| !u.is_empty());
            password = url.password().map(str::to_owned);
        }
        let _ = url.set_username("");
        let _ = url.set_password(None);
    }
    let invalid = |m: &str| RpcError::new(INVALID_PARAMS, format!("printers.add: {m}"));
    match (key, user, password) {
        (None, None, None) => Ok(Credentials::None),
        (Some(k), None, None) => Ok(Credentials::ApiKey {
            key: Secret::new(k.trim()),
        }),
        (None, Some(username), Some(p)) => Ok(Credentials::Login {
            username: username.trim().to_owned(),
            password: Secret::new(p),
        }),
        (None, Some(_), None) => Err(invalid("give the password with the user name")),
        (None, None, Some(_)) => Err(invalid("give the user name with the password")),
        (Some(_), _, _) => Err(invalid(
            "give an API key or a user name and password, not both",
        )),
    }
}

/// Where a product's credentials are found.
fn where_credentials(kind: BackendKind) -> &'static str {
    match kind {
        BackendKind::OctoPrint => {
            "In OctoPrint, open Settings › Application Keys and generate a key for Gantry \
             (or copy the global key under Settings › API)."
        }
        BackendKind::Moonraker => {
            "Enter Moonraker's API key (a trusted client reads it at /access/api_key), or a \
             Moonraker user name and password."
        }
        BackendKind::PrusaLink => {
            "Enter the printer's user name (usually maker) and the password its screen shows \
             under Settings › Network › PrusaLink, or its API key."
        }
        BackendKind::Local => "",
    }
}

/// Refuses a printer the fleet already has under `id` (adding it twice).
fn not_in_fleet(ctx: &Context, id: &str) -> Result<(), RpcError> {
    match ctx.fleet.get(Some(id)) {
        Some(p) => Err(RpcError::new(
            ALREADY_ADDED,
            format!(
                "This printer is already in the list, as '{}' ({id})",
                p.name
            ),
        )),
        None => Ok(()),
    }
}

/// A failed probe as an error in the user's words.
fn probe_error(report: &ProbeReport, credentials: &Credentials) -> RpcError {
    let Some(kind) = report.kind else {
        let m = report.message.as_str();
        let code = if m.starts_with("nothing answers") {
            PRINTER_UNAVAILABLE
        } else if m.contains("did not answer within") {
            TIMED_OUT
        } else {
            NO_PRINTER_API
        };
        let advice = if code == PRINTER_UNAVAILABLE {
            " Check the address and port, and that the printer's server is running."
        } else {
            ""
        };
        return RpcError::new(code, format!("{}.{advice}", capitalise(m)));
    };
    let product = kind.name();
    let url = &report.url;
    let message = match credentials {
        Credentials::None => format!(
            "{product} answered at {url} and needs an API key. {}",
            where_credentials(kind)
        ),
        _ => format!(
            "{product} answered at {url}, but refused the API key. Check the key. {}",
            where_credentials(kind)
        ),
    };
    RpcError::new(NEEDS_CREDENTIALS, message)
}

/// A failed connection as an error in the user's words.
fn connect_error(kind: BackendKind, url: &Url, e: &PrinterError) -> RpcError {
    let product = kind.name();
    let (code, advice) = match e {
        PrinterError::Unauthorized { .. } => (NEEDS_CREDENTIALS, where_credentials(kind)),
        PrinterError::Timeout { .. } => (TIMED_OUT, "Try again; check the network."),
        PrinterError::Unreachable { .. } | PrinterError::Closed(_) => (
            PRINTER_UNAVAILABLE,
            "Check that the server is running and reachable.",
        ),
        PrinterError::Tls { .. } => (
            NO_PRINTER_API,
            "Try http:// instead, or make this computer trust the printer's certificate.",
        ),
        PrinterError::InvalidInput(_) | PrinterError::Rejected(_) => (INVALID_PARAMS, ""),
        _ => (NO_PRINTER_API, ""),
    };
    let advice = if advice.is_empty() {
        String::new()
    } else {
        format!(" {advice}")
    };
    RpcError::new(
        code,
        format!("Could not connect to {product} at {url}: {e}.{advice}"),
    )
}

fn capitalise(s: &str) -> String {
    let mut chars = s.chars();
    chars.next().map_or_else(String::new, |c| {
        c.to_uppercase().collect::<String>() + chars.as_str()
    })
}

/// `printers.add`.
async fn add(ctx: &Context, params: &Params<'_>) -> Result<Value, RpcError> {
    let save = params.opt_bool("save")?.unwrap_or(true);
    if let Some(config) = params.opt_str("config")? {
        if params.opt_str("url")?.is_some() {
            return Err(RpcError::new(
                INVALID_PARAMS,
                "printers.add: give either 'url' (a printer server) or 'config' (a printer.cfg for boards Gantry drives), not both",
            ));
        }
        let name = params
            .opt_str("name")?
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty());
        return add_board(ctx, config.trim(), name, save).await;
    }
    let text = params.str("url")?;
    let mut url = remote::parse_address(&text)
        .map_err(|e| RpcError::new(INVALID_PARAMS, format!("printers.add: {e}")))?;
    let credentials = credentials(params, &mut url)?;
    let name = params
        .opt_str("name")?
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty());
    let options = &ctx.manager.options.remote;

    let report = remote::probe(&url, &credentials, options).await;
    let Some(kind) = report.kind else {
        return Err(probe_error(&report, &credentials));
    };
    // The probe sends only API keys; a login is checked by connecting.
    if report.needs_credentials && !matches!(credentials, Credentials::Login { .. }) {
        return Err(probe_error(&report, &credentials));
    }
    let id = printer_id(kind, &url);
    not_in_fleet(ctx, &id)?;
    tracing::info!(%url, ?kind, "adding a remote printer");
    let saved_credentials = serde_json::to_value(&credentials).unwrap_or(Value::Null);
    let backend = remote::connect(kind, url.clone(), credentials, options.clone())
        .await
        .map_err(|e| connect_error(kind, &url, &e))?;
    let name = match name {
        Some(n) => n,
        None => default_name(kind, &url, backend.as_ref()).await,
    };
    let printer = FleetPrinter {
        id: id.clone(),
        name: name.clone(),
        address: url.as_str().to_owned(),
        backend: Arc::clone(&backend),
    };
    let entry = join_fleet(ctx, printer).await?;
    let saved = ctx
        .manager
        .save(
            save,
            crate::store::SavedPrinter {
                fleet_id: id,
                name,
                kind: kind_name(kind).to_owned(),
                address: url.as_str().to_owned(),
                credentials: saved_credentials,
                added_at: crate::store::unix_now_s(),
            },
        )
        .await;
    Ok(json!({
        "printer": entry,
        "probe": { "kind": kind, "version": report.version, "message": report.message },
        "saved": saved,
    }))
}

/// Adds `printer` to the fleet, connected; when its id is taken meanwhile, its backend is
/// closed and the clash is the error. Returns the fleet entry as `printers.fleet` lists it.
async fn join_fleet(ctx: &Context, printer: FleetPrinter) -> Result<Value, RpcError> {
    let id = printer.id.clone();
    let backend = Arc::clone(&printer.backend);
    ctx.manager.shared.set_link(&id, Some(LinkState::Connected));
    if let Err(e) = ctx.fleet.add(printer) {
        ctx.manager.shared.set_link(&id, None);
        backend.close().await;
        return Err(RpcError::new(ALREADY_ADDED, capitalise(&e.to_string())));
    }
    listed(ctx, &id)
        .ok_or_else(|| RpcError::new(INTERNAL_ERROR, "the printer left the list at once"))
}

/// The fleet entry of `id` as `printers.fleet` lists it, if it is in the fleet.
fn listed(ctx: &Context, id: &str) -> Option<Value> {
    let entry = ctx.fleet.list().into_iter().find(|e| e.id == id)?;
    Some(entry_json(&entry, ctx.manager.shared.link(id).as_ref()))
}

/// How long the boards of a printer.cfg added through `printers.add` may take to connect.
const BOARD_CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// `printers.add` with `config`: Gantry becomes the Klipper host of the boards the printer.cfg
/// at `path` names (its `[mcu]` and `[mcu NAME]` ports) and serves them as printer
/// `klipper:PATH`.
async fn add_board(
    ctx: &Context,
    path: &str,
    name: Option<String>,
    save: bool,
) -> Result<Value, RpcError> {
    let path = std::path::PathBuf::from(path);
    if !path.is_absolute() {
        return Err(RpcError::new(
            INVALID_PARAMS,
            format!(
                "printers.add: give the printer.cfg by its full path, not '{}'",
                path.display()
            ),
        ));
    }
    let id = format!("klipper:{}", path.display());
    not_in_fleet(ctx, &id)?;
    let (printer, port) = start_board(&path, id.clone(), ctx.manager.options.data_dir.clone())
        .await
        .map_err(|f| f.into_rpc(&path))?;
    let file = path.file_name().map_or_else(
        || path.display().to_string(),
        |f| f.to_string_lossy().into_owned(),
    );
    let name = name.unwrap_or_else(|| format!("{file} on {port}"));
    let entry = join_fleet(
        ctx,
        FleetPrinter {
            id: id.clone(),
            name: name.clone(),
            address: port,
            backend: printer,
        },
    )
    .await?;
    let saved = ctx
        .manager
        .save(
            save,
            crate::store::SavedPrinter {
                fleet_id: id,
                name,
                kind: BOARD_KIND.to_owned(),
                address: path.display().to_string(),
                credentials: json!({}),
                added_at: crate::store::unix_now_s(),
            },
        )
        .await;
    Ok(json!({ "printer": entry, "saved": saved }))
}

/// Why the boards of a printer.cfg did not start: the API's code and the cause alone (what to
/// do about it is the caller's: `printers.add` answers with it, a saved printer's problem says
/// it).
#[derive(Debug)]
struct BoardFailure {
    code: i64,
    cause: String,
}

impl BoardFailure {
    /// As `printers.add` answers it: boards that did not connect with what to check.
    fn into_rpc(self, path: &std::path::Path) -> RpcError {
        if self.code != PRINTER_UNAVAILABLE {
            return RpcError::new(self.code, self.cause);
        }
        RpcError::new(
            self.code,
            format!(
                "Could not start the printer of {}: {}. Check that the board is plugged in, runs Klipper's firmware, and that no other program (Klipper, a slicer, a terminal) has its port open.",
                path.display(),
                self.cause
            ),
        )
    }
}

/// Reads the printer.cfg at `path` and starts Gantry's Klipper host on its boards, as printer
/// `id`: the backend and the main MCU's port.
async fn start_board(
    path: &std::path::Path,
    id: String,
    data_dir: Option<std::path::PathBuf>,
) -> Result<(crate::model::SharedBackend, String), BoardFailure> {
    let load_path = path.to_path_buf();
    let (config_text, config) = tokio::task::spawn_blocking(move || {
        let text = std::fs::read_to_string(&load_path)
            .map_err(|e| format!("Cannot read {}: {e}", load_path.display()))?;
        let config =
            crate::printer_config::load(&load_path).map_err(|e| capitalise(&e.to_string()))?;
        Ok::<_, String>((text, config))
    })
    .await
    .map_err(|e| BoardFailure {
        code: INTERNAL_ERROR,
        cause: e.to_string(),
    })?
    .map_err(|cause| BoardFailure {
        code: INVALID_PARAMS,
        cause,
    })?;
    let port = config.get_str("mcu", "serial").unwrap_or("?").to_owned();
    let setup = crate::live::board::BoardSetup {
        id,
        config,
        config_path: path.to_path_buf(),
        config_text,
        target: None,
        data_dir,
        gcodes_folder: board_folder(path),
        timeout: BOARD_CONNECT_TIMEOUT,
    };
    tracing::info!(config = %path.display(), %port, "starting a printer driven by Gantry");
    let printer = crate::live::board::start(setup)
        .await
        .map_err(|e| BoardFailure {
            code: PRINTER_UNAVAILABLE,
            cause: e.to_string(),
        })?;
    Ok((printer, port))
}

/// A board printer's G-code folder under `gcodes/`: the printer.cfg's folder and file name,
/// made safe for a file name (`home-me-printer_data-config-printer.cfg`).
fn board_folder(path: &std::path::Path) -> String {
    let text = path.display().to_string();
    let safe: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    safe.trim_matches('-').to_owned()
}

/// `OctoPrint on octopi`, or `OctoPrint at 10.0.0.5:80` when the server names no host.
async fn default_name(
    kind: BackendKind,
    url: &Url,
    backend: &dyn crate::model::PrinterBackend,
) -> String {
    let info = tokio::time::timeout(Duration::from_secs(5), backend.info()).await;
    let hostname = info
        .ok()
        .and_then(Result::ok)
        .and_then(|i| i.hostname)
        .filter(|h| !h.is_empty());
    match hostname {
        Some(h) => format!("{} on {h}", kind.name()),
        None => format!(
            "{} at {}:{}",
            kind.name(),
            url.host_str().unwrap_or("?"),
            url.port_or_known_default().unwrap_or(80)
        ),
    }
}

/// `printers.remove`.
async fn remove(ctx: &Context, id: &str) -> Result<Value, RpcError> {
    let Some(printer) = ctx.fleet.get(Some(id)) else {
        return Err(no_printer(id));
    };
    if id == "sim" {
        return Err(RpcError::new(
            FORBIDDEN,
            format!(
                "'{}' is Gantry's own printer and stays in the list while Gantry runs",
                printer.name
            ),
        ));
    }
    let printer = ctx
        .fleet
        .remove(id)
        .map_err(|e| RpcError::new(PRINTER_UNAVAILABLE, capitalise(&e.to_string())))?;
    printer.backend.close().await;
    ctx.manager.shared.set_link(id, None);
    let owned = id.to_owned();
    if let Some(Err(e)) = ctx
        .manager
        .with_saved(move |store| store.forget_printer(&owned))
        .await
    {
        // Removed now, but back at the next start: say so.
        return Err(RpcError::new(
            INTERNAL_ERROR,
            format!(
                "'{}' was removed, but Gantry could not forget it and will bring it back at its next start: {e}",
                printer.name
            ),
        ));
    }
    tracing::info!(%id, "removed a printer");
    Ok(json!({ "removed": id }))
}

/// The longest printer name `printers.rename` takes, in characters.
pub const NAME_MAX_CHARS: usize = 80;

/// `printers.rename`: gives a printer of the fleet another name, kept with it when it is saved.
async fn rename(ctx: &Context, id: &str, name: &str) -> Result<Value, RpcError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(RpcError::new(
            INVALID_PARAMS,
            "printers.rename: the name is empty; give the name to show for the printer",
        ));
    }
    let chars = name.chars().count();
    if chars > NAME_MAX_CHARS {
        return Err(RpcError::new(
            INVALID_PARAMS,
            format!(
                "printers.rename: the name has {chars} characters; at most {NAME_MAX_CHARS} fit"
            ),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(RpcError::new(
            INVALID_PARAMS,
            "printers.rename: the name holds a control character (a line break, a tab); give it on one line",
        ));
    }
    ctx.fleet.rename(id, name).map_err(|_| no_printer(id))?;
    let (owned, new_name) = (id.to_owned(), name.to_owned());
    let saved = match ctx
        .manager
        .with_saved(move |store| store.rename_printer(&owned, &new_name))
        .await
    {
        None => false,
        Some(Ok(kept)) => kept,
        Some(Err(e)) => {
            // Renamed now, but under its old name at the next start: say so.
            return Err(RpcError::new(
                INTERNAL_ERROR,
                format!(
                    "'{name}' is the printer's name now, but Gantry could not keep it and will show the old one at its next start: {e}"
                ),
            ));
        }
    };
    tracing::info!(%id, %name, "renamed a printer");
    let printer = listed(ctx, id).ok_or_else(|| no_printer(id))?;
    Ok(json!({ "printer": printer, "saved": saved }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mdns_setting_reads_off_names_and_default() {
        assert_eq!(mdns_setting(None), Some(DiscoveryOptions::default()));
        assert_eq!(mdns_setting(Some("  ")), Some(DiscoveryOptions::default()));
        assert_eq!(mdns_setting(Some("OFF")), None);
        assert_eq!(
            mdns_setting(Some("eth0, wlan0")).and_then(|o| o.interfaces),
            Some(vec!["eth0".to_owned(), "wlan0".to_owned()])
        );
    }

    #[test]
    fn ids_are_kind_host_port_and_path() {
        let url = |s: &str| Url::parse(s).expect("url");
        assert_eq!(
            printer_id(BackendKind::OctoPrint, &url("http://127.0.0.1:5000/")),
            "octoprint:127.0.0.1:5000"
        );
        assert_eq!(
            printer_id(BackendKind::Moonraker, &url("https://voron.local/")),
            "moonraker:voron.local:443"
        );
        assert_eq!(
            printer_id(BackendKind::OctoPrint, &url("http://octopi.local/octo/")),
            "octoprint:octopi.local:80/octo"
        );
        assert_eq!(
            printer_id(BackendKind::PrusaLink, &url("http://[fe80::1]:8080")),
            "prusalink:[fe80::1]:8080"
        );
    }

    fn entry(kind: BackendKind, state: Option<KlippyState>, message: &str) -> FleetEntry {
        FleetEntry {
            id: "x".into(),
            name: "X".into(),
            address: "http://10.0.0.5/".into(),
            kind,
            state,
            state_message: Some(message.to_owned()).filter(|m| !m.is_empty()),
        }
    }

    #[test]
    fn problems_name_the_cause_and_what_to_do() {
        let ready = entry(
            BackendKind::OctoPrint,
            Some(KlippyState::Ready),
            "Operational",
        );
        assert_eq!(problem(&ready, Some(&LinkState::Connected)), None);
        let p = problem(
            &ready,
            Some(&LinkState::Reconnecting {
                reason: "cannot reach http://10.0.0.5/: connection refused".into(),
                retry_in_ms: 4000,
            }),
        )
        .expect("a problem");
        assert!(p.cause.contains("connection refused"), "{p:?}");
        assert!(p.advice.contains("next try in 4 s"), "{p:?}");
        assert!(
            p.advice
                .contains("OctoPrint is running at http://10.0.0.5/")
        );
        let p = problem(
            &ready,
            Some(&LinkState::Closed {
                reason: "http://10.0.0.5/: the API key was refused".into(),
            }),
        )
        .expect("a problem");
        assert!(p.advice.contains("add it again with credentials"), "{p:?}");
        let offline = entry(
            BackendKind::OctoPrint,
            Some(KlippyState::Disconnected),
            "Offline",
        );
        let p = problem(&offline, None).expect("a problem");
        assert_eq!(
            p.cause,
            "OctoPrint is not connected to its printer (Offline)"
        );
        assert!(p.advice.contains("Connection panel"));
        let shutdown = entry(
            BackendKind::Moonraker,
            Some(KlippyState::Shutdown),
            "MCU 'mcu' shutdown: Timer too close",
        );
        let p = problem(&shutdown, Some(&LinkState::Connected)).expect("a problem");
        assert_eq!(p.cause, "MCU 'mcu' shutdown: Timer too close");
        assert!(p.advice.contains("FIRMWARE_RESTART"));
        assert_eq!(problem(&entry(BackendKind::Local, None, ""), None), None);
    }

    #[test]
    fn probe_failures_read_as_sentences_with_codes() {
        let report = |kind, needs, message: &str| ProbeReport {
            url: "http://10.0.0.5/".into(),
            kind,
            version: None,
            needs_credentials: needs,
            message: message.into(),
            error: None,
            attempts: Vec::new(),
            elapsed_ms: 1,
        };
        let e = probe_error(
            &report(
                None,
                false,
                "nothing answers at http://10.0.0.5/: connection refused",
            ),
            &Credentials::None,
        );
        assert_eq!(e.code, PRINTER_UNAVAILABLE);
        assert!(e.message.starts_with("Nothing answers at"), "{}", e.message);
        assert!(e.message.contains("Check the address"), "{}", e.message);
        let e = probe_error(
            &report(
                None,
                false,
                "http://10.0.0.5/ did not answer within 5.0 s (wrong address, or a firewall)",
            ),
            &Credentials::None,
        );
        assert_eq!(e.code, TIMED_OUT);
        let e = probe_error(
            &report(Some(BackendKind::OctoPrint), true, ""),
            &Credentials::None,
        );
        assert_eq!(e.code, NEEDS_CREDENTIALS);
        assert!(e.message.contains("needs an API key"), "{}", e.message);
        assert!(e.message.contains("Application Keys"), "{}", e.message);
        let e = probe_error(
            &report(Some(BackendKind::OctoPrint), true, ""),
            &Credentials::api_key("WRONGKEY"),
        );
        assert!(e.message.contains("refused the API key"), "{}", e.message);
        assert!(!e.message.contains("WRONGKEY"));
    }

    /// A backend with no server: Gantry's own kind, or a remote kind whose link a test moves.
    struct Fake {
        kind: BackendKind,
        hub: crate::model::StatusHub,
        closed: std::sync::atomic::AtomicBool,
    }

    fn nothing<T: Send + 'static>()
    -> futures_util::future::BoxFuture<'static, crate::model::PrinterResult<T>> {
        Box::pin(async {
            Err(PrinterError::Unsupported {
                backend: BackendKind::Local,
                what: "anything",
            })
        })
    }

    impl crate::model::PrinterBackend for Fake {
        fn kind(&self) -> BackendKind {
            self.kind
        }
        fn hub(&self) -> &crate::model::StatusHub {
            &self.hub
        }
        fn info(
            &self,
        ) -> futures_util::future::BoxFuture<
            '_,
            crate::model::PrinterResult<crate::model::PrinterInfo>,
        > {
            nothing()
        }
        fn gcode_script<'a>(
            &'a self,
            _: &'a str,
        ) -> futures_util::future::BoxFuture<'a, crate::model::PrinterResult<()>> {
            nothing()
        }
        fn print_start<'a>(
            &'a self,
            _: &'a str,
        ) -> futures_util::future::BoxFuture<'a, crate::model::PrinterResult<()>> {
            nothing()
        }
        fn print_pause(
            &self,
        ) -> futures_util::future::BoxFuture<'_, crate::model::PrinterResult<()>> {
            nothing()
        }
        fn print_resume(
            &self,
        ) -> futures_util::future::BoxFuture<'_, crate::model::PrinterResult<()>> {
            nothing()
        }
        fn print_cancel(
            &self,
        ) -> futures_util::future::BoxFuture<'_, crate::model::PrinterResult<()>> {
            nothing()
        }
        fn emergency_stop(
            &self,
        ) -> futures_util::future::BoxFuture<'_, crate::model::PrinterResult<()>> {
            nothing()
        }
        fn files_list(
            &self,
        ) -> futures_util::future::BoxFuture<
            '_,
            crate::model::PrinterResult<Vec<crate::model::FileEntry>>,
        > {
            nothing()
        }
        fn file_upload<'a>(
            &'a self,
            _: &'a str,
            _: Vec<u8>,
            _: bool,
        ) -> futures_util::future::BoxFuture<'a, crate::model::PrinterResult<crate::model::FileEntry>>
        {
            nothing()
        }
        fn file_metadata<'a>(
            &'a self,
            _: &'a str,
        ) -> futures_util::future::BoxFuture<
            'a,
            crate::model::PrinterResult<crate::model::FileMetadata>,
        > {
            nothing()
        }
        fn file_delete<'a>(
            &'a self,
            _: &'a str,
        ) -> futures_util::future::BoxFuture<'a, crate::model::PrinterResult<()>> {
            nothing()
        }
        fn file_download<'a>(
            &'a self,
            _: &'a str,
        ) -> futures_util::future::BoxFuture<'a, crate::model::PrinterResult<Vec<u8>>> {
            nothing()
        }
        fn history(
            &self,
            _: usize,
        ) -> futures_util::future::BoxFuture<
            '_,
            crate::model::PrinterResult<Vec<crate::model::HistoryJob>>,
        > {
            nothing()
        }
        fn webcams(
            &self,
        ) -> futures_util::future::BoxFuture<
            '_,
            crate::model::PrinterResult<Vec<crate::model::Webcam>>,
        > {
            nothing()
        }
        fn close(&self) -> futures_util::future::BoxFuture<'_, ()> {
            self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
            Box::pin(async {})
        }
    }

    fn fake(kind: BackendKind) -> Arc<Fake> {
        Arc::new(Fake {
            kind,
            hub: crate::model::StatusHub::new(),
            closed: std::sync::atomic::AtomicBool::new(false),
        })
    }

    fn context() -> (
        super::super::methods::Connection,
        mpsc::UnboundedReceiver<Value>,
        Arc<Context>,
    ) {
        let ctx = Arc::new(Context::new(ManagerOptions {
            mdns: None,
            usb_poll: Duration::from_millis(200),
            data_dir: None,
            remote: RemoteOptions {
                connect_timeout: Duration::from_secs(2),
                request_timeout: Duration::from_secs(2),
                ..RemoteOptions::default()
            },
            ..ManagerOptions::default()
        }));
        let (tx, rx) = mpsc::unbounded_channel();
        (
            super::super::methods::Connection::new(Arc::clone(&ctx), tx),
            rx,
            ctx,
        )
    }

    async fn next_change(rx: &mut mpsc::UnboundedReceiver<Value>, action: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let msg = tokio::time::timeout_at(deadline, rx.recv())
                .await
                .unwrap_or_else(|_| panic!("no '{action}' change within 5 s"))
                .expect("the channel stays open");
            assert_eq!(msg["method"], "notify_printers_changed", "{msg}");
            if msg["params"][0]["action"] == action {
                return msg["params"][0].clone();
            }
        }
    }

    /// `printers.rename` renames in the list and in the feed; a saved printer keeps the new
    /// name across a restart; bad names and unknown ids are refused with the reason.
    #[tokio::test]
    async fn a_renamed_printer_keeps_its_name_across_a_restart() {
        let dir = std::env::temp_dir().join(format!("gantry-rename-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let options = || ManagerOptions {
            mdns: None,
            data_dir: Some(dir.clone()),
            keep_printers: true,
            retry: crate::saved::Retry {
                first: Duration::from_secs(60),
                longest: Duration::from_secs(60),
            },
            remote: RemoteOptions {
                connect_timeout: Duration::from_millis(200),
                request_timeout: Duration::from_millis(200),
                ..RemoteOptions::default()
            },
            ..ManagerOptions::default()
        };
        let id = "moonraker:127.0.0.1:9";
        std::fs::create_dir_all(&dir).expect("data dir");
        crate::store::Store::open(dir.join("gantry.db"))
            .expect("store")
            .save_printer(&crate::store::SavedPrinter {
                fleet_id: id.into(),
                name: "Moonraker on 127.0.0.1".into(),
                kind: "moonraker".into(),
                address: "http://127.0.0.1:9/".into(),
                credentials: json!({"kind": "none"}),
                added_at: 1.0,
            })
            .expect("saved");
        let start = || {
            let ctx = Arc::new(Context::new(options()));
            let (tx, rx) = mpsc::unbounded_channel();
            (
                super::super::methods::Connection::new(Arc::clone(&ctx), tx),
                rx,
                ctx,
            )
        };
        use super::super::methods::call;

        let (mut conn, mut rx, ctx) = start();
        assert_eq!(ctx.manager.restore(&ctx.fleet).await, [id]);
        call(&mut conn, "printers.subscribe", &json!({}))
            .await
            .expect("subscribed");
        let renamed = call(
            &mut conn,
            "printers.rename",
            &json!({"id": id, "name": "  Farm #3  "}),
        )
        .await
        .expect("renamed");
        assert_eq!(renamed["printer"]["name"], "Farm #3", "{renamed}");
        assert_eq!(renamed["saved"], true, "{renamed}");
        assert_eq!(
            next_change(&mut rx, "renamed").await,
            json!({"source": "fleet", "action": "renamed", "id": id})
        );
        let fleet = call(&mut conn, "printers.fleet", &Value::Null)
            .await
            .expect("fleet");
        assert_eq!(fleet["printers"][0]["name"], "Farm #3", "{fleet}");

        for (name, says) in [
            ("   ", "the name is empty"),
            ("two\nlines", "control character"),
            (&"x".repeat(NAME_MAX_CHARS + 1), "at most 80"),
        ] {
            let e = call(
                &mut conn,
                "printers.rename",
                &json!({"id": id, "name": name}),
            )
            .await
            .expect_err("refused");
            assert_eq!(e.code, INVALID_PARAMS, "{}", e.message);
            assert!(e.message.contains(says), "{}", e.message);
        }
        let e = call(
            &mut conn,
            "printers.rename",
            &json!({"id": "nope", "name": "X"}),
        )
        .await
        .expect_err("unknown");
        assert_eq!(e.code, PRINTER_UNAVAILABLE, "{}", e.message);
        let e = call(&mut conn, "printers.rename", &json!({"id": id}))
            .await
            .expect_err("no name");
        assert_eq!(e.code, INVALID_PARAMS, "{}", e.message);
        ctx.shutdown().await;

        let (mut conn, _rx, ctx) = start();
        assert_eq!(ctx.manager.restore(&ctx.fleet).await, [id]);
        let fleet = call(&mut conn, "printers.fleet", &Value::Null)
            .await
            .expect("fleet");
        assert_eq!(fleet["printers"][0]["name"], "Farm #3", "{fleet}");
        ctx.shutdown().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn the_fleet_feed_reports_adds_links_states_and_removals() {
        let (mut conn, mut rx, ctx) = context();
        let sim = fake(BackendKind::Local);
        ctx.fleet
            .add(FleetPrinter {
                id: "sim".into(),
                name: "Gantry simulated printer".into(),
                address: "gantry sim".into(),
                backend: sim.clone(),
            })
            .expect("added");
        let state = super::super::methods::call(&mut conn, "printers.subscribe", &json!({}))
            .await
            .expect("subscribed");
        assert_eq!(state["fleet"][0]["id"], "sim");
        assert_eq!(state["mdns"]["state"], "off");
        assert!(state["usb"].is_array(), "{state}");
        assert_eq!(state["network"], json!([]));

        // A remote printer joins, loses its link and gets it back: each is a change, and the
        // fleet entry says the cause and what to do meanwhile.
        let remote = fake(BackendKind::OctoPrint);
        ctx.fleet
            .add(FleetPrinter {
                id: "octoprint:10.0.0.5:80".into(),
                name: "OctoPrint".into(),
                address: "http://10.0.0.5/".into(),
                backend: remote.clone(),
            })
            .expect("added");
        let c = next_change(&mut rx, "added").await;
        assert_eq!(
            c,
            json!({"source": "fleet", "action": "added", "id": "octoprint:10.0.0.5:80"})
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        remote.hub.emit(PrinterEvent::Link(LinkState::Reconnecting {
            reason: "cannot reach http://10.0.0.5/: connection refused".into(),
            retry_in_ms: 2000,
        }));
        next_change(&mut rx, "link").await;
        let fleet = super::super::methods::call(&mut conn, "printers.fleet", &Value::Null)
            .await
            .expect("fleet");
        let entry = &fleet["printers"][1];
        assert_eq!(entry["link"]["state"], "reconnecting");
        assert!(
            entry["problem"]["cause"]
                .as_str()
                .is_some_and(|c| c.contains("connection refused")),
            "{entry}"
        );
        assert!(fleet["printers"][0]["problem"].is_null());
        remote.hub.apply(
            [(
                "webhooks".to_owned(),
                [("state".to_owned(), json!("shutdown"))]
                    .into_iter()
                    .collect(),
            )]
            .into_iter()
            .collect(),
            None,
        );
        next_change(&mut rx, "state").await;

        // The built-in printer stays; a remote one goes and its connection closes.
        let e = super::super::methods::call(&mut conn, "printers.remove", &json!({"id": "sim"}))
            .await
            .expect_err("sim stays");
        assert_eq!(e.code, FORBIDDEN);
        assert!(!sim.closed.load(std::sync::atomic::Ordering::SeqCst));
        let r = super::super::methods::call(
            &mut conn,
            "printers.remove",
            &json!({"id": "octoprint:10.0.0.5:80"}),
        )
        .await
        .expect("removed");
        assert_eq!(r["removed"], "octoprint:10.0.0.5:80");
        assert!(remote.closed.load(std::sync::atomic::Ordering::SeqCst));
        next_change(&mut rx, "removed").await;
        let e = super::super::methods::call(&mut conn, "printers.remove", &json!({"id": "nope"}))
            .await
            .expect_err("unknown");
        assert_eq!(e.code, PRINTER_UNAVAILABLE);
        ctx.manager.shutdown().await;
    }

    #[tokio::test]
    async fn adding_checks_its_input_and_says_why_nothing_answers() {
        let (mut conn, _rx, _ctx) = context();
        let conn = &mut conn;
        macro_rules! add {
            ($p:expr) => {
                super::super::methods::call(conn, "printers.add", &$p)
            };
        }
        let e = add!(json!({})).await.expect_err("no url");
        assert_eq!(e.code, INVALID_PARAMS);
        let e = add!(json!({"url": "ftp://x"})).await.expect_err("scheme");
        assert!(e.message.contains("not ftp"), "{}", e.message);
        let e = add!(json!({"url": "10.0.0.5", "username": "me"}))
            .await
            .expect_err("no password");
        assert!(e.message.contains("give the password"), "{}", e.message);
        let e = add!(json!({"url": "10.0.0.5", "api_key": "K", "username": "me", "password": "p"}))
            .await
            .expect_err("both");
        assert!(e.message.contains("not both"), "{}", e.message);

        // A closed port on loopback: refused, at once, in words.
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        drop(l);
        let started = std::time::Instant::now();
        let e = add!(json!({"url": format!("http://{addr}"), "api_key": "SECRETKEY123"}))
            .await
            .expect_err("refused");
        assert_eq!(e.code, PRINTER_UNAVAILABLE, "{}", e.message);
        assert!(e.message.starts_with("Nothing answers at"), "{}", e.message);
        assert!(e.message.contains("refused"), "{}", e.message);
        assert!(!e.message.contains("SECRETKEY123"));
        assert!(started.elapsed() < Duration::from_secs(5));

        // A server that accepts and never answers: a timeout, not a hang.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = silent.local_addr().expect("addr");
        let keep = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = silent.accept().await {
                held.push(s);
            }
        });
        let e = add!(json!({"url": format!("http://{addr}")}))
            .await
            .expect_err("silent");
        assert_eq!(e.code, TIMED_OUT, "{}", e.message);
        assert!(e.message.contains("did not answer within"), "{}", e.message);
        keep.abort();
    }
}
