//! mDNS discovery against the real advertisements of Moonraker and OctoPrint, in two network
//! namespaces joined by a veth pair, so that nothing reaches the machine's own network:
//! namespace B runs Moonraker (`[zeroconf]`) and OctoPrint (its discovery plugin) on 10.77.x.2;
//! namespace A runs Gantry's browser on its end of the veth. Gantry must find both within 2 s
//! and drop them when they stop (they say goodbye on a clean exit).
//!
//! Needs root and `ip netns` (CI runs as root); elsewhere it says why and skips. Ignored by
//! default like the other peer tests: `cargo xtask test` runs it.

mod support;

use std::os::fd::AsFd as _;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use gantry_core::discovery::{
    DiscoveredPrinter, Discovery, DiscoveryEvent, DiscoveryOptions, ServiceKind,
};
use support::peers::{self, PeerOptions};

/// Two namespaces and a veth pair, removed on drop.
struct Netns {
    a: String,
    b: String,
    veth_a: String,
    subnet: u8,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Netns {
    fn create() -> Result<Self, String> {
        let id = std::process::id() % 100_000;
        let subnet = u8::try_from(id % 200 + 20).unwrap_or(77);
        let n = Self {
            a: format!("gantry-a-{id}"),
            b: format!("gantry-b-{id}"),
            veth_a: format!("gva{id}"),
            subnet,
        };
        let veth_b = format!("gvb{id}");
        let (a, b) = (n.a.as_str(), n.b.as_str());
        let addr_a = format!("10.77.{subnet}.1/24");
        let addr_b = format!("10.77.{subnet}.2/24");
        ip(&["netns", "add", a])?;
        ip(&["netns", "add", b])?;
        ip(&[
            "link", "add", &n.veth_a, "type", "veth", "peer", "name", &veth_b,
        ])?;
        ip(&["link", "set", &n.veth_a, "netns", a])?;
        ip(&["link", "set", &veth_b, "netns", b])?;
        for (ns, dev, addr) in [
            (a, n.veth_a.as_str(), &addr_a),
            (b, veth_b.as_str(), &addr_b),
        ] {
            ip(&["-n", ns, "addr", "add", addr, "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(n)
    }

    fn addr_b(&self) -> std::net::IpAddr {
        std::net::IpAddr::from([10, 77, self.subnet, 2])
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting a namespace removes its end of the veth, which removes the pair.
        let _ = ip(&["netns", "del", &self.a]);
        let _ = ip(&["netns", "del", &self.b]);
    }
}

/// Why this machine cannot run the test, if it cannot.
fn cannot_run() -> Option<String> {
    if !cfg!(target_os = "linux") {
        return Some("network namespaces are Linux only".into());
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned));
    if euid.as_deref() != Some("0") {
        return Some("needs root to create network namespaces".into());
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("needs `ip` (iproute2)".into());
    }
    None
}

/// The network interfaces the calling thread sees.
fn thread_interfaces() -> Vec<String> {
    std::fs::read_to_string("/proc/thread-self/net/dev")
        .unwrap_or_default()
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next().map(|n| n.trim().to_owned()))
        .collect()
}

enum Seen {
    Found(Box<DiscoveredPrinter>, Duration),
    Removed(String),
    Failed(String),
}

/// Runs the browser on a thread inside namespace `ns`, reporting what it sees until `stop`.
fn browse_in(
    ns: &str,
    veth: &str,
    tx: mpsc::Sender<Seen>,
    stop: mpsc::Receiver<()>,
) -> std::thread::JoinHandle<()> {
    let ns_path = format!("/var/run/netns/{ns}");
    let veth = veth.to_owned();
    std::thread::spawn(move || {
        let fail = |m: String| {
            let _ = tx.send(Seen::Failed(m));
        };
        let file = match std::fs::File::open(&ns_path) {
            Ok(f) => f,
            Err(e) => return fail(format!("{ns_path}: {e}")),
        };
        if let Err(e) = nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET) {
            return fail(format!("setns: {e}"));
        }
        // Never browse on the machine's real network: this thread must see only lo and veth.
        let ifaces = thread_interfaces();
        if ifaces.iter().any(|i| i != "lo" && *i != veth) {
            return fail(format!("not inside the namespace: interfaces {ifaces:?}"));
        }
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(r) => r,
            Err(e) => return fail(e.to_string()),
        };
        runtime.block_on(async {
            let options = DiscoveryOptions {
                interfaces: Some(vec![veth.clone()]),
                ipv4_only: true,
            };
            let started = Instant::now();
            let discovery = match Discovery::start(&options) {
                Ok(d) => d,
                Err(e) => return fail(e.to_string()),
            };
            let (initial, mut events) = discovery.subscribe();
            for p in initial {
                let _ = tx.send(Seen::Found(Box::new(p), started.elapsed()));
            }
            loop {
                if stop.try_recv().is_ok() {
                    break;
                }
                match tokio::time::timeout(Duration::from_millis(50), events.recv()).await {
                    Ok(Ok(DiscoveryEvent::Added(p) | DiscoveryEvent::Updated(p))) => {
                        let _ = tx.send(Seen::Found(Box::new(p), started.elapsed()));
                    }
                    Ok(Ok(DiscoveryEvent::Removed { id })) => {
                        let _ = tx.send(Seen::Removed(id));
                    }
                    Ok(Err(_)) => break,
                    Err(_) => {}
                }
            }
            tokio::task::spawn_blocking(move || discovery.stop())
                .await
                .ok();
        });
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, ip netns, Moonraker and OctoPrint; cargo xtask test runs it"]
async fn finds_real_moonraker_and_octoprint_and_drops_them() {
    if let Some(why) = cannot_run() {
        #[allow(clippy::print_stdout)]
        {
            println!("SKIPPED discovery_mdns: {why}");
        }
        return;
    }
    let net = Netns::create().expect("network namespaces");
    let bind = net.addr_b();
    let mut moonraker = peers::Moonraker::start_with(PeerOptions {
        netns: Some(net.b.clone()),
        bind: Some(bind),
        mdns: true,
        port: Some(7125),
    })
    .await;
    let mut octoprint = peers::OctoPrint::start_with(PeerOptions {
        netns: Some(net.b.clone()),
        bind: Some(bind),
        mdns: true,
        port: Some(5000),
    })
    .await;
    // Both have registered (python-zeroconf announces right after start-up).
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let (tx, rx) = mpsc::channel();
    let (stop_tx, stop_rx) = mpsc::channel();
    let browser = browse_in(&net.a, &net.veth_a, tx, stop_rx);
    let mut found: std::collections::BTreeMap<String, (DiscoveredPrinter, Duration)> =
        std::collections::BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(found
        .values()
        .any(|(p, _)| p.kind == ServiceKind::Moonraker)
        && found
            .values()
            .any(|(p, _)| p.kind == ServiceKind::OctoPrint))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Seen::Found(p, at)) => {
                found.entry(p.id.clone()).or_insert((*p, at));
            }
            Ok(Seen::Removed(_)) => {}
            Ok(Seen::Failed(why)) => panic!("browser: {why}"),
            Err(_) => panic!("not found within 10 s: {found:#?}"),
        }
    }
    let mr = found
        .values()
        .find(|(p, _)| p.kind == ServiceKind::Moonraker)
        .cloned()
        .expect("moonraker");
    let op = found
        .values()
        .find(|(p, _)| p.kind == ServiceKind::OctoPrint)
        .cloned()
        .expect("octoprint");
    #[allow(clippy::print_stdout)]
    {
        println!("found Moonraker after {:?}: {:?}", mr.1, mr.0);
        println!("found OctoPrint after {:?}: {:?}", op.1, op.0);
    }
    assert!(
        mr.1 <= Duration::from_secs(2),
        "Moonraker found after {:?}",
        mr.1
    );
    assert!(
        op.1 <= Duration::from_secs(2),
        "OctoPrint found after {:?}",
        op.1
    );
    assert_eq!(mr.0.url, format!("http://{bind}:7125/"));
    assert_eq!(mr.0.version.as_deref(), Some("0.11.0"));
    assert!(mr.0.uuid.is_some(), "{:?}", mr.0);
    assert_eq!(op.0.url, format!("http://{bind}:5000/"));
    assert_eq!(
        op.0.txt.get("model").map(String::as_str),
        Some("Gantry Test")
    );
    assert!(op.0.id.starts_with("uuid:"), "{:?}", op.0);

    // They stop cleanly (SIGTERM): their goodbyes remove them.
    let stopped = Instant::now();
    moonraker.process.stop();
    octoprint.process.stop();
    let mut removed = std::collections::BTreeSet::new();
    while !(removed.contains(&mr.0.id) && removed.contains(&op.0.id)) {
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Seen::Removed(id)) => {
                removed.insert(id);
            }
            Ok(Seen::Failed(why)) => panic!("browser: {why}"),
            Ok(Seen::Found(..)) => {}
            Err(_) => panic!("not dropped within 20 s of stopping: removed {removed:?}"),
        }
    }
    #[allow(clippy::print_stdout)]
    {
        println!("both dropped {:?} after they stopped", stopped.elapsed());
    }
    let _ = stop_tx.send(());
    browser.join().expect("browser thread");
}
