//! Two network namespaces joined by a veth pair, for tests that must send mDNS (or anything
//! else) without reaching the machine's own network: namespace A gets 10.77.N.1 on its end,
//! namespace B 10.77.N.2. A thread enters A with [`enter`]; peers run in B with
//! `ip netns exec`. Needs root and `ip` (iproute2): [`cannot_run`] says why not.
#![allow(dead_code, unreachable_pub)]

use std::os::fd::AsFd as _;
use std::process::Command;

/// The namespaces and the veth pair, removed on drop.
#[derive(Debug)]
pub struct Netns {
    /// Namespace A (Gantry's side).
    pub a: String,
    /// Namespace B (the peers' side).
    pub b: String,
    /// A's end of the veth.
    pub veth_a: String,
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
    /// Creates the pair; `tag` (one letter) tells apart pairs of tests in one process.
    pub fn create(tag: char) -> Result<Self, String> {
        let id = std::process::id() % 100_000;
        let subnet = u8::try_from(id % 200 + 20).unwrap_or(77);
        let n = Self {
            a: format!("gantry-a{tag}-{id}"),
            b: format!("gantry-b{tag}-{id}"),
            veth_a: format!("gva{tag}{id}"),
            subnet,
        };
        let veth_b = format!("gvb{tag}{id}");
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

    /// B's address.
    pub fn addr_b(&self) -> std::net::IpAddr {
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

/// Why this machine cannot run a namespace test, if it cannot.
pub fn cannot_run() -> Option<String> {
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
pub fn thread_interfaces() -> Vec<String> {
    std::fs::read_to_string("/proc/thread-self/net/dev")
        .unwrap_or_default()
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next().map(|n| n.trim().to_owned()))
        .collect()
}

/// Moves the calling thread into namespace `ns` and checks that it sees only `lo` and `veth`
/// (threads it starts afterwards are there too).
pub fn enter(ns: &str, veth: &str) -> Result<(), String> {
    let path = format!("/var/run/netns/{ns}");
    let file = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
    nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("setns: {e}"))?;
    // Never go on the machine's real network: this thread must see only lo and the veth.
    let ifaces = thread_interfaces();
    if ifaces.iter().any(|i| i != "lo" && i != veth) {
        return Err(format!("not inside the namespace: interfaces {ifaces:?}"));
    }
    Ok(())
}
