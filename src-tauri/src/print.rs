//! `gantry print --config printer.cfg FILE.gcode`: print a file headless on a printer's MCU with
//! Gantry as the Klipper host — connect and configure the board, then run the file through the
//! live planner (homing on the endstops, heating with Klipper's PID, steps in real time), with a
//! progress line and the live temperatures. A file adapter over `gantry_core::live`.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use gantry_core::live::job::{self, JobProgress};
use gantry_core::live::serial_host::SerialHost;
use gantry_core::mcu;
use gantry_core::motion::printer::{Printer, Response};
use gantry_core::proto::Dictionary;

/// Arguments of `gantry print`.
#[derive(Debug, Args)]
pub struct PrintArgs {
    /// The printer.cfg; its `[mcu]` section's `serial:` names the port (`tcp:HOST:PORT` for a
    /// TCP MCU such as `gantry sim --tcp`).
    #[arg(long)]
    pub config: PathBuf,
    /// The G-code file to print.
    pub file: PathBuf,
    /// Give up connecting after this many seconds.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
}

/// Runs `gantry print`.
///
/// # Errors
/// An unusable printer.cfg or G-code file, an MCU that cannot be connected, or a printer that
/// halts mid-print (an MCU shutdown, a heater fault, a lost connection), in Klipper's words.
pub fn run(args: &PrintArgs) -> anyhow::Result<()> {
    let config = gantry_core::printer_config::load(&args.config)
        .with_context(|| format!("cannot load {}", args.config.display()))?;
    if config.sections().any(|s| s.name().starts_with("mcu ")) {
        bail!(
            "{}: printers with several MCUs cannot be printed on by `gantry print` yet",
            args.config.display()
        );
    }
    let gcode = read_gcode(&args.file)?;
    let target = crate::connect::mcu_target(&config, "mcu", &args.config)?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let mut out = std::io::stdout();
    writeln!(out, "mcu 'mcu': Starting connect ({target})")?;
    let mut built = None;
    let connected = runtime.block_on(async {
        let mut build = |dict: &Dictionary| -> Result<Vec<String>, String> {
            let printer = Printer::new(&config, &[("mcu", dict)])
                .map_err(|e| format!("printer.cfg not usable with this MCU: {e}"))?;
            let cmds = printer.mcus[0].config_phase();
            built = Some(printer);
            Ok(cmds)
        };
        mcu::connect(
            "mcu",
            &target,
            &mut build,
            Duration::from_secs(args.timeout),
        )
        .await
    })?;
    let Some(mut printer) = built else {
        bail!("the MCU connected without a configuration");
    };
    writeln!(
        out,
        "Configured MCU 'mcu' ({} moves): printing {} ({} bytes)",
        connected.info.move_count,
        args.file.display(),
        gcode.len()
    )?;
    let host = SerialHost::new(
        connected.handle,
        connected.info.dictionary,
        connected.events,
    );
    printer.start_live(Box::new(host), &[usize::from(connected.info.move_count)]);
    let started = Instant::now();
    let mut shown = Instant::now();
    let temps = |p: &Printer| {
        ["extruder", "heater_bed"]
            .iter()
            .filter_map(|h| {
                let (t, target) = p.heater_temperature(h)?;
                Some(format!("{h} {t:.1}/{target:.0} °C"))
            })
            .collect::<Vec<_>>()
            .join("  ")
    };
    let result = job::run(
        &mut printer,
        &gcode,
        |p: &JobProgress| {
            if shown.elapsed() >= Duration::from_millis(500) {
                shown = Instant::now();
                let heat = |h: Option<(f64, f64)>, name: &str| {
                    h.map_or_else(String::new, |(t, target)| {
                        format!("  {name} {t:.1}/{target:.0} °C")
                    })
                };
                let _ = write!(
                    std::io::stderr(),
                    "\r{:5.1} %  line {}  print time {:.1} s{}{}   ",
                    p.fraction() * 100.0,
                    p.lines,
                    p.print_time,
                    heat(p.extruder, "extruder"),
                    heat(p.heater_bed, "bed"),
                );
            }
        },
        |r: &Response| {
            let _ = writeln!(std::io::stdout(), "\r{}", r.text);
        },
    );
    let _ = writeln!(std::io::stderr());
    let report = result.map_err(|e| anyhow::anyhow!("{e}"))?;
    writeln!(
        out,
        "Done: {} lines, {:.1} s of print time in {:.1} s; {}",
        report.lines,
        report.print_time,
        started.elapsed().as_secs_f64(),
        temps(&printer)
    )?;
    Ok(())
}

/// The G-code file, refusing binary G-code (which needs decoding first).
fn read_gcode(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read G-code {}", path.display()))?;
    if bytes.starts_with(b"GCDE") {
        bail!(
            "{}: binary G-code (.bgcode) is not supported yet; export ASCII G-code",
            path.display()
        );
    }
    Ok(bytes)
}
