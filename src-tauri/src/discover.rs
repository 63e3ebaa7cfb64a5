//! `gantry discover`: the printers this machine can find — mDNS advertisements of Moonraker,
//! OctoPrint, PrusaLink and other Gantry hosts on the local network, and USB serial boards with
//! what their VID:PID usually is. A thin adapter over `gantry_core::discovery` and
//! `gantry_core::printers`.

use std::io::Write as _;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use gantry_core::discovery::{self, DiscoveryOptions};
use gantry_core::printers::{self, PrinterKind};

/// Arguments of `gantry discover`.
#[derive(Debug, Args)]
pub struct DiscoverArgs {
    /// How long to listen for mDNS advertisements, seconds.
    #[arg(long, default_value_t = 3.0, value_parser = parse_seconds)]
    pub timeout: f64,
    /// Print one JSON object: `{"network": [...], "usb": [...]}`.
    #[arg(long)]
    pub json: bool,
    /// Browse only on this network interface (repeatable); default: every interface.
    #[arg(long = "interface", value_name = "NAME")]
    pub interfaces: Vec<String>,
    /// Skip the network (list USB serial boards only).
    #[arg(long)]
    pub no_network: bool,
}

fn parse_seconds(text: &str) -> Result<f64, String> {
    let v: f64 = text
        .parse()
        .map_err(|_| format!("'{text}' is not a number of seconds"))?;
    if (0.0..=600.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is outside 0..=600 seconds"))
    }
}

/// Runs `gantry discover`.
///
/// # Errors
/// When mDNS cannot start, or standard output cannot be written.
pub fn run(args: &DiscoverArgs) -> anyhow::Result<()> {
    let usb: Vec<_> = printers::list()
        .into_iter()
        .filter(|p| p.kind == PrinterKind::Serial)
        .collect();
    let network = if args.no_network {
        Vec::new()
    } else {
        let options = DiscoveryOptions {
            interfaces: (!args.interfaces.is_empty()).then(|| args.interfaces.clone()),
            ..DiscoveryOptions::default()
        };
        let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
        runtime
            .block_on(discovery::discover(
                Duration::from_secs_f64(args.timeout),
                &options,
            ))
            .context("browsing mDNS")?
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        let v = serde_json::json!({ "network": network, "usb": usb });
        writeln!(out, "{v}")?;
        return Ok(());
    }
    if args.no_network {
        writeln!(out, "network: not browsed (--no-network)")?;
    } else if network.is_empty() {
        writeln!(
            out,
            "network: no Moonraker, OctoPrint, PrusaLink or Gantry advertisement in {:.1} s \
             (add one by address: gantry remote URL probe)",
            args.timeout
        )?;
    } else {
        writeln!(out, "network:")?;
        for p in &network {
            let kind = format!("{:?}", p.kind).to_lowercase();
            let version = p.version.as_deref().unwrap_or("");
            writeln!(out, "  {kind:<10} {:<40} {} {version}", p.name, p.url)?;
        }
    }
    let (usb_ports, other): (Vec<_>, Vec<_>) = usb
        .iter()
        .partition(|p| p.port_type == Some(printers::PortType::Usb));
    if usb_ports.is_empty() {
        writeln!(out, "usb: no USB serial device")?;
    } else {
        writeln!(out, "usb:")?;
        for p in &usb_ports {
            let port = p.by_id.as_deref().or(p.port.as_deref()).unwrap_or("?");
            let ids = p
                .usb
                .as_ref()
                .map(|u| format!("{}:{}", u.vid, u.pid))
                .unwrap_or_default();
            let hint = p.board.as_deref().unwrap_or("unknown device");
            writeln!(out, "  {ids}  {hint}  {}  {port}", p.name)?;
        }
    }
    if !other.is_empty() {
        let names: Vec<&str> = other.iter().filter_map(|p| p.port.as_deref()).collect();
        writeln!(out, "other serial ports: {}", names.join(" "))?;
    }
    Ok(())
}
