//! Finding printers on the local network: mDNS/DNS-SD browsing for Moonraker
//! (`_moonraker._tcp`), OctoPrint (`_octoprint._tcp`), PrusaLink (`_prusalink._tcp`) and other
//! Gantry hosts (`_gantry._tcp`), with their TXT records parsed, one entry per printer, kept
//! current as printers come and go.
//!
//! One printer may advertise several services (the Python PrusaLink also registers as
//! `_octoprint._tcp` for old slicers) and several addresses; entries are keyed by the TXT `uuid`
//! when there is one, else by the first address and port, and carry every service type seen.
//! A service that says goodbye (or whose records expire after their TTL) leaves its entry, and
//! so does one that stops answering: every service found is verified once a minute
//! ([`DiscoveryOptions::verify_every`]). An entry with no service left is removed and
//! announced as [`DiscoveryEvent::Removed`].
//!
//! The browser is mdns-sd's daemon (its own thread, which owns the sockets). It browses on every
//! interface unless [`DiscoveryOptions::interfaces`] names some — the tests pin it to a veth
//! inside a network namespace so that no query leaves the machine.
//!
//! USB printers are listed by [`crate::printers`]; manual addresses are checked by
//! [`crate::remote::probe`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use mdns_sd::{IfKind, ServiceDaemon, ServiceEvent};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

/// The service types browsed.
pub const SERVICE_TYPES: &[&str] = &[
    "_moonraker._tcp.local.",
    "_octoprint._tcp.local.",
    "_prusalink._tcp.local.",
    "_gantry._tcp.local.",
];

/// What kind of server an advertisement stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceKind {
    /// Moonraker.
    Moonraker,
    /// OctoPrint (or something that speaks its API for slicers).
    OctoPrint,
    /// PrusaLink.
    PrusaLink,
    /// Another Gantry.
    Gantry,
}

impl ServiceKind {
    /// The kind a service type stands for.
    pub fn from_service_type(ty: &str) -> Option<Self> {
        Some(match ty.trim_end_matches('.').trim_end_matches(".local") {
            "_moonraker._tcp" => Self::Moonraker,
            "_octoprint._tcp" => Self::OctoPrint,
            "_prusalink._tcp" => Self::PrusaLink,
            "_gantry._tcp" => Self::Gantry,
            _ => return None,
        })
    }

    /// The remote backend for this kind, if Gantry has one.
    pub fn backend(self) -> Option<crate::model::BackendKind> {
        use crate::model::BackendKind;
        match self {
            Self::Moonraker => Some(BackendKind::Moonraker),
            Self::OctoPrint => Some(BackendKind::OctoPrint),
            Self::PrusaLink => Some(BackendKind::PrusaLink),
            Self::Gantry => None,
        }
    }
}

/// One printer found on the network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiscoveredPrinter {
    /// Stable while the printer is seen: `uuid:…` or `addr:IP:PORT`.
    pub id: String,
    /// The best guess of what it is (PrusaLink over OctoPrint when both are advertised).
    pub kind: ServiceKind,
    /// The instance name, such as `OctoPrint instance on octopi` or `Moonraker-6388c43a @ …`.
    pub name: String,
    /// Its mDNS host name (`octopi.local.`).
    pub host: String,
    /// Its addresses, IPv4 first.
    pub addresses: Vec<IpAddr>,
    /// The HTTP port.
    pub port: u16,
    /// The URL to connect to (first address, port, TXT `path` or `route_prefix`).
    pub url: String,
    /// The TXT `uuid`, when advertised.
    pub uuid: Option<String>,
    /// The TXT `version`, when advertised.
    pub version: Option<String>,
    /// Every TXT record of the main service.
    pub txt: BTreeMap<String, String>,
    /// The service types it was seen under.
    pub services: BTreeSet<String>,
}

/// A change in the set of printers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum DiscoveryEvent {
    /// A printer appeared.
    Added(DiscoveredPrinter),
    /// A known printer's data changed (a new address, another service).
    Updated(DiscoveredPrinter),
    /// A printer left.
    Removed {
        /// Its id.
        id: String,
    },
}

/// How often the printers found are asked whether they are still there (see
/// [`DiscoveryOptions::verify_every`]).
pub const VERIFY_EVERY: Duration = Duration::from_secs(60);

/// Where to browse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryOptions {
    /// Only these network interfaces (by name); `None`: every interface.
    pub interfaces: Option<Vec<String>>,
    /// IPv4 only.
    pub ipv4_only: bool,
    /// How often every service found is verified (RFC 6762 §10.4: its SRV and address records
    /// queried; no answer within mdns-sd's 10 s and it is removed), so that a printer whose
    /// server died without a goodbye (a crash, a pulled plug) leaves the list in about a
    /// minute, not only when its records expire (python-zeroconf's TTLs: 2 minutes for SRV and
    /// addresses, 75 for PTR). `None`: never.
    pub verify_every: Option<Duration>,
}

impl Default for DiscoveryOptions {
    fn default() -> Self {
        Self {
            interfaces: None,
            ipv4_only: false,
            verify_every: Some(VERIFY_EVERY),
        }
    }
}

/// Why discovery could not start.
#[derive(Debug, thiserror::Error)]
#[error("mDNS discovery could not start: {0}")]
pub struct DiscoveryError(String);

/// One service instance as resolved.
#[derive(Debug, Clone)]
struct Service {
    ty: String,
    name: String,
    host: String,
    addresses: Vec<IpAddr>,
    port: u16,
    txt: BTreeMap<String, String>,
}

impl Service {
    fn kind(&self) -> Option<ServiceKind> {
        ServiceKind::from_service_type(&self.ty)
    }

    fn key(&self) -> String {
        match self.txt.get("uuid").filter(|u| !u.is_empty()) {
            Some(uuid) => format!("uuid:{}", uuid.to_ascii_lowercase()),
            None => match self.addresses.first() {
                Some(ip) => format!("addr:{ip}:{}", self.port),
                None => format!("host:{}:{}", self.host, self.port),
            },
        }
    }
}

/// The instance label of a full service name (`Foo @ bar._moonraker._tcp.local.` → `Foo @ bar`).
fn instance_name(fullname: &str, ty: &str) -> String {
    fullname
        .strip_suffix(ty)
        .unwrap_or(fullname)
        .trim_end_matches('.')
        .replace("\\032", " ")
}

/// Builds the printer entry from the services that share its key.
fn merge(key: &str, services: &[&Service]) -> Option<DiscoveredPrinter> {
    // The service that decides kind and name: PrusaLink > Moonraker > OctoPrint > Gantry.
    let rank = |k: Option<ServiceKind>| match k {
        Some(ServiceKind::PrusaLink) => 0,
        Some(ServiceKind::Moonraker) => 1,
        Some(ServiceKind::OctoPrint) => 2,
        Some(ServiceKind::Gantry) => 3,
        None => 4,
    };
    let main = services
        .iter()
        .min_by_key(|s| (rank(s.kind()), s.name.clone()))?;
    let kind = main.kind()?;
    let mut addresses: Vec<IpAddr> = services
        .iter()
        .flat_map(|s| s.addresses.iter().copied())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    // IPv4 first, link-local IPv6 last: the first is the one to connect to.
    addresses.sort_by_key(|ip| match ip {
        IpAddr::V4(_) => 0,
        IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80 => 2,
        IpAddr::V6(_) => 1,
    });
    let first = addresses.first()?;
    let host = match first {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    };
    let path = main
        .txt
        .get("path")
        .or_else(|| main.txt.get("route_prefix"))
        .map(|p| p.trim_matches('/'))
        .filter(|p| !p.is_empty())
        .map_or_else(|| "/".to_owned(), |p| format!("/{p}/"));
    Some(DiscoveredPrinter {
        id: key.to_owned(),
        kind,
        name: main.name.clone(),
        host: main.host.clone(),
        url: format!("http://{host}:{}{path}", main.port),
        addresses,
        port: main.port,
        uuid: main.txt.get("uuid").filter(|u| !u.is_empty()).cloned(),
        version: main.txt.get("version").filter(|v| !v.is_empty()).cloned(),
        txt: main.txt.clone(),
        services: services.iter().map(|s| s.ty.clone()).collect(),
    })
}

/// The resolved services and the printers made of them.
#[derive(Debug, Default)]
struct Registry {
    /// Full service name → service.
    services: HashMap<String, Service>,
    /// Printer id → entry as last announced.
    printers: BTreeMap<String, DiscoveredPrinter>,
}

impl Registry {
    /// Rebuilds the printers and returns the events that turn the old set into the new one.
    fn refresh(&mut self) -> Vec<DiscoveryEvent> {
        let mut groups: BTreeMap<String, Vec<&Service>> = BTreeMap::new();
        // Services without uuid but on the address of a uuid'd one belong to that printer.
        let uuid_by_addr: HashMap<(IpAddr, u16), String> = self
            .services
            .values()
            .filter(|s| s.txt.get("uuid").is_some_and(|u| !u.is_empty()))
            .flat_map(|s| s.addresses.iter().map(move |ip| ((*ip, s.port), s.key())))
            .collect();
        for s in self.services.values() {
            let key = if s.txt.get("uuid").is_some_and(|u| !u.is_empty()) {
                s.key()
            } else {
                s.addresses
                    .iter()
                    .find_map(|ip| uuid_by_addr.get(&(*ip, s.port)).cloned())
                    .unwrap_or_else(|| s.key())
            };
            groups.entry(key).or_default().push(s);
        }
        let fresh: BTreeMap<String, DiscoveredPrinter> = groups
            .iter()
            .filter_map(|(k, ss)| merge(k, ss).map(|p| (k.clone(), p)))
            .collect();
        let mut events = Vec::new();
        for (id, p) in &fresh {
            match self.printers.get(id) {
                None => events.push(DiscoveryEvent::Added(p.clone())),
                Some(old) if old != p => events.push(DiscoveryEvent::Updated(p.clone())),
                Some(_) => {}
            }
        }
        for id in self.printers.keys() {
            if !fresh.contains_key(id) {
                events.push(DiscoveryEvent::Removed { id: id.clone() });
            }
        }
        self.printers = fresh;
        events
    }
}

/// A running mDNS browser. Dropping it stops the daemon.
pub struct Discovery {
    daemon: ServiceDaemon,
    registry: Arc<Mutex<Registry>>,
    events: broadcast::Sender<DiscoveryEvent>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery").finish_non_exhaustive()
    }
}

impl Discovery {
    /// Starts browsing every service type in [`SERVICE_TYPES`]. Must run inside a tokio runtime.
    ///
    /// # Errors
    /// When the daemon cannot open its sockets.
    pub fn start(options: &DiscoveryOptions) -> Result<Self, DiscoveryError> {
        let daemon = ServiceDaemon::new().map_err(|e| DiscoveryError(e.to_string()))?;
        let err = |e: mdns_sd::Error| DiscoveryError(e.to_string());
        if let Some(names) = &options.interfaces {
            daemon.disable_interface(IfKind::All).map_err(err)?;
            for name in names {
                daemon
                    .enable_interface(IfKind::Name(name.clone()))
                    .map_err(err)?;
            }
        }
        if options.ipv4_only {
            daemon.disable_interface(IfKind::IPv6).map_err(err)?;
        }
        let registry = Arc::new(Mutex::new(Registry::default()));
        let events = broadcast::channel(256).0;
        let mut tasks = Vec::new();
        for ty in SERVICE_TYPES {
            let rx = daemon.browse(ty).map_err(err)?;
            let registry = Arc::clone(&registry);
            let events = events.clone();
            tasks.push(tokio::spawn(async move {
                while let Ok(event) = rx.recv_async().await {
                    let changes = {
                        let mut reg = registry.lock().unwrap_or_else(PoisonError::into_inner);
                        if !apply(&mut reg, event) {
                            continue;
                        }
                        reg.refresh()
                    };
                    for c in changes {
                        tracing::debug!(?c, "mDNS");
                        let _ = events.send(c);
                    }
                }
            }));
        }
        if let Some(every) = options.verify_every {
            tasks.push(tokio::spawn(verify_found(
                daemon.clone(),
                Arc::clone(&registry),
                every,
            )));
        }
        Ok(Self {
            daemon,
            registry,
            events,
            tasks,
        })
    }

    /// The printers known now, sorted by id.
    pub fn printers(&self) -> Vec<DiscoveredPrinter> {
        self.registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .printers
            .values()
            .cloned()
            .collect()
    }

    /// The printers known now and every change after, taken atomically.
    pub fn subscribe(&self) -> (Vec<DiscoveredPrinter>, broadcast::Receiver<DiscoveryEvent>) {
        let reg = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        (
            reg.printers.values().cloned().collect(),
            self.events.subscribe(),
        )
    }

    /// Stops the daemon (it says goodbye to nothing: it only browses) and the tasks.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        if let Ok(rx) = self.daemon.shutdown() {
            let _ = rx.recv_timeout(Duration::from_secs(1));
        }
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        if !self.tasks.is_empty() {
            self.stop_inner();
        }
    }
}

/// Every `every`, asks the daemon to verify each service found; one that does not answer is
/// flushed by the daemon, and its `ServiceRemoved` reaches the browse tasks like a goodbye.
/// Ends with the daemon.
async fn verify_found(daemon: ServiceDaemon, registry: Arc<Mutex<Registry>>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is now: nothing to verify yet.
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let names: Vec<String> = registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .services
            .keys()
            .cloned()
            .collect();
        for name in names {
            match daemon.verify(name, mdns_sd::VERIFY_TIMEOUT_DEFAULT) {
                Ok(()) => {}
                Err(mdns_sd::Error::Again) => break,
                Err(_) => return,
            }
        }
    }
}

/// Applies one daemon event; whether anything changed.
fn apply(reg: &mut Registry, event: ServiceEvent) -> bool {
    match event {
        ServiceEvent::ServiceResolved(info) => {
            let ty = info.ty_domain.clone();
            let mut addresses: Vec<IpAddr> = info
                .addresses
                .iter()
                .map(mdns_sd::ScopedIp::to_ip_addr)
                .collect();
            addresses.sort();
            let txt = info
                .txt_properties
                .iter()
                .map(|p| (p.key().to_owned(), p.val_str().to_owned()))
                .collect();
            let service = Service {
                name: instance_name(&info.fullname, &ty),
                ty,
                host: info.host.clone(),
                addresses,
                port: info.port,
                txt,
            };
            reg.services.insert(info.fullname.clone(), service);
            true
        }
        ServiceEvent::ServiceRemoved(_, fullname) => reg.services.remove(&fullname).is_some(),
        _ => false,
    }
}

/// Browses for `timeout` and returns what was found (the CLI's `gantry discover`).
///
/// # Errors
/// When the daemon cannot start.
pub async fn discover(
    timeout: Duration,
    options: &DiscoveryOptions,
) -> Result<Vec<DiscoveredPrinter>, DiscoveryError> {
    let discovery = Discovery::start(options)?;
    tokio::time::sleep(timeout).await;
    let found = discovery.printers();
    tokio::task::spawn_blocking(move || discovery.stop())
        .await
        .map_err(|e| DiscoveryError(e.to_string()))?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(ty: &str, name: &str, ip: &str, port: u16, txt: &[(&str, &str)]) -> Service {
        Service {
            ty: ty.to_owned(),
            name: name.to_owned(),
            host: "printer.local.".to_owned(),
            addresses: vec![ip.parse().expect("ip")],
            port,
            txt: txt
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn one_entry_per_printer_and_goodbyes_remove_it() {
        let mut reg = Registry::default();
        reg.services.insert(
            "PrusaLink at mk3._octoprint._tcp.local.".into(),
            service(
                "_octoprint._tcp.local.",
                "PrusaLink at mk3",
                "10.0.0.7",
                80,
                &[("path", "/")],
            ),
        );
        reg.services.insert(
            "PrusaLink at mk3._prusalink._tcp.local.".into(),
            service(
                "_prusalink._tcp.local.",
                "PrusaLink at mk3",
                "10.0.0.7",
                80,
                &[],
            ),
        );
        reg.services.insert(
            "Moonraker-63 @ voron._moonraker._tcp.local.".into(),
            service(
                "_moonraker._tcp.local.",
                "Moonraker-63 @ voron",
                "10.0.0.9",
                7125,
                &[
                    ("uuid", "6388C43A"),
                    ("version", "v0.11.0"),
                    ("route_prefix", ""),
                ],
            ),
        );
        let events = reg.refresh();
        assert_eq!(events.len(), 2, "{events:?}");
        let printers: Vec<_> = reg.printers.values().collect();
        let prusa = printers
            .iter()
            .find(|p| p.id == "addr:10.0.0.7:80")
            .expect("prusa");
        assert_eq!(
            prusa.kind,
            ServiceKind::PrusaLink,
            "PrusaLink wins over its _octoprint alias"
        );
        assert_eq!(prusa.services.len(), 2);
        let voron = printers
            .iter()
            .find(|p| p.id == "uuid:6388c43a")
            .expect("voron");
        assert_eq!(voron.url, "http://10.0.0.9:7125/");
        assert_eq!(voron.version.as_deref(), Some("v0.11.0"));

        assert!(reg.refresh().is_empty(), "no change, no event");
        reg.services
            .remove("Moonraker-63 @ voron._moonraker._tcp.local.");
        assert_eq!(
            reg.refresh(),
            vec![DiscoveryEvent::Removed {
                id: "uuid:6388c43a".into()
            }]
        );
    }

    #[test]
    fn a_uuid_gathers_services_on_the_same_address() {
        let mut reg = Registry::default();
        reg.services.insert(
            "a".into(),
            service(
                "_octoprint._tcp.local.",
                "OctoPrint instance on pi",
                "10.0.0.3",
                80,
                &[("uuid", "2c3d8ab1"), ("path", "/octo")],
            ),
        );
        reg.services.insert(
            "b".into(),
            service("_gantry._tcp.local.", "gantry on pi", "10.0.0.3", 80, &[]),
        );
        reg.refresh();
        let p = reg.printers.get("uuid:2c3d8ab1").expect("one printer");
        assert_eq!(p.services.len(), 2);
        assert_eq!(p.url, "http://10.0.0.3:80/octo/");
        assert_eq!(reg.printers.len(), 1);
    }

    #[test]
    fn instance_names_drop_the_type() {
        assert_eq!(
            instance_name(
                "Moonraker-6388c43a @ 10.77.0.2._moonraker._tcp.local.",
                "_moonraker._tcp.local."
            ),
            "Moonraker-6388c43a @ 10.77.0.2"
        );
        assert_eq!(
            ServiceKind::from_service_type("_octoprint._tcp.local."),
            Some(ServiceKind::OctoPrint)
        );
        assert_eq!(ServiceKind::from_service_type("_http._tcp.local."), None);
    }
}
