//! `gantry connect`: connect to a printer's MCU as Klipper's host does at start-up — identify,
//! clock synchronisation, the config phase from printer.cfg (or reuse of an MCU that already runs
//! it) — and say what was found, in klippy's words; with `--watch`, start the heaters' ADC queries
//! as klippy's start-up does and print the temperatures the MCU reports. A file adapter over
//! `gantry_core::mcu`.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use gantry_core::mcu::{self, ConfigOutcome, McuEvent};
use gantry_core::motion::printer::{HeaterSensor, Printer};
use gantry_core::proto::dictionary::Constant;
use gantry_core::proto::session::SessionEvent;
use gantry_core::proto::{Dictionary, Value};

/// Arguments of `gantry connect`.
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// The printer.cfg; its `[mcu]` section's `serial:` names the port (`tcp:HOST:PORT` for a
    /// TCP MCU such as `gantry sim --tcp`).
    #[arg(long)]
    pub config: PathBuf,
    /// Which MCU: `mcu` (the main one) or the NAME of an `[mcu NAME]` section.
    #[arg(long, default_value = "mcu")]
    pub mcu: String,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
    /// Stay connected this many seconds and print the heaters' temperatures as the MCU reports
    /// them (klippy's start-up `query_analog_in`, at the live clock).
    #[arg(long, value_name = "SECONDS")]
    pub watch: Option<f64>,
}

/// Runs `gantry connect`.
///
/// # Errors
/// An unreadable or unusable printer.cfg, a port that does not open, or an MCU that is shut
/// down, runs another configuration, refuses the config, or does not answer.
pub fn run(args: &ConnectArgs) -> anyhow::Result<()> {
    let config = gantry_core::printer_config::load(&args.config)
        .with_context(|| format!("cannot load {}", args.config.display()))?;
    let target = gantry_core::live::connect::mcu_target(&config, &args.mcu, &args.config)?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    writeln!(
        std::io::stdout(),
        "mcu '{}': Starting connect ({target})",
        args.mcu
    )?;
    let name = args.mcu.clone();
    let mut sensors = Vec::new();
    runtime.block_on(async {
        let mut build = |dict: &Dictionary| -> Result<Vec<String>, String> {
            let printer = Printer::new(&config, &[(name.as_str(), dict)])
                .map_err(|e| format!("printer.cfg not usable with this MCU: {e}"))?;
            // This MCU's heater sensors that Gantry can read.
            sensors = printer
                .heater_sensors()
                .iter()
                .filter(|s| s.mcu == 0 && s.query.is_some() && s.curve.is_some())
                .cloned()
                .collect();
            printer
                .mcus
                .iter()
                .find(|m| m.name == name)
                .map(gantry_core::motion::printer::PrinterMcu::config_phase)
                .ok_or_else(|| format!("printer.cfg has no MCU named '{name}'"))
        };
        let mut connected = mcu::connect(
            &name,
            &target,
            &mut build,
            Duration::from_secs(args.timeout),
        )
        .await?;
        report_connect(&mut std::io::stdout().lock(), &args.mcu, &connected.info)?;
        let watched = match args.watch {
            Some(seconds) => watch_heaters(&mut connected, &sensors, seconds).await,
            None => Ok(()),
        };
        connected.handle.close().await;
        watched
    })?;
    Ok(())
}

/// Prints what the start-up found, in klippy's words.
fn report_connect(
    out: &mut impl std::io::Write,
    mcu_name: &str,
    info: &mcu::McuInfo,
) -> anyhow::Result<()> {
    let dict = &info.dictionary;
    let (commands, _, _) = dict.counts();
    writeln!(
        out,
        "Loaded MCU '{}' {commands} commands ({} / {})",
        mcu_name,
        dict.version.as_deref().unwrap_or("?"),
        dict.build_versions.as_deref().unwrap_or("?")
    )?;
    let constants: Vec<String> = dict
        .config
        .iter()
        .map(|(k, v)| match v {
            Constant::Int(i) => format!("{k}={i}"),
            Constant::Float(f) => format!("{k}={f}"),
            Constant::Str(s) => format!("{k}={s}"),
        })
        .collect();
    writeln!(out, "MCU '{}' config: {}", mcu_name, constants.join(" "))?;
    match info.outcome {
        ConfigOutcome::Configured => {
            writeln!(
                out,
                "Configured MCU '{}' ({} moves)",
                mcu_name, info.move_count
            )?;
        }
        ConfigOutcome::Reused => writeln!(
            out,
            "MCU '{}' already runs this configuration (same CRC): reused ({} moves)",
            mcu_name, info.move_count
        )?,
    }
    let nominal = dict.clock_freq().unwrap_or(0.0);
    #[allow(clippy::cast_precision_loss)]
    let uptime_s = if nominal > 0.0 {
        info.uptime_clock as f64 / nominal
    } else {
        0.0
    };
    let ppm = if nominal > 0.0 {
        (info.measured_freq_hz / nominal - 1.0) * 1e6
    } else {
        0.0
    };
    // Eight samples over 0.35 s can be far off on a loaded host (klippy refines its estimate every
    // second while connected); a figure beyond klippy's 1 % sanity bound is not worth showing.
    let frequency = if ppm.abs() < 10_000.0 {
        format!(
            "{:.0} Hz measured ({ppm:+.0} ppm from CLOCK_FREQ)",
            info.measured_freq_hz
        )
    } else {
        format!("frequency still settling ({ppm:+.0} ppm)")
    };
    writeln!(
        out,
        "MCU '{}' clock: up {uptime_s:.1} s, {frequency}",
        mcu_name
    )?;
    Ok(())
}

/// Starts the heaters' ADC queries as klippy's start-up does (first sample at the whole print
/// second 1.5 s ahead plus the oid's slot) and prints their temperatures for `seconds`.
async fn watch_heaters(
    connected: &mut mcu::Connected,
    sensors: &[HeaterSensor],
    seconds: f64,
) -> anyhow::Result<()> {
    if sensors.is_empty() {
        bail!("printer.cfg has no heater with a sensor Gantry can read on this MCU");
    }
    let handle = &connected.handle;
    let print_time = handle
        .estimated_print_time()
        .context("clock synchronisation has no estimate yet")?;
    #[allow(clippy::cast_possible_truncation)]
    let whole_second = (print_time + 1.5).trunc();
    let base = handle
        .print_time_to_clock(whole_second)
        .context("clock synchronisation has no estimate yet")?;
    for s in sensors {
        if let Some(q) = &s.query {
            handle.send_text(q.command_at(base + q.slot_ticks))?;
        }
    }
    let mut latest: Vec<Option<f64>> = vec![None; sensors.len()];
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(seconds.max(0.0));
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => return Ok(()),
            _ = tick.tick() => {
                if latest.iter().any(Option::is_some) {
                    let line: Vec<String> = sensors
                        .iter()
                        .zip(&latest)
                        .map(|(s, t)| match t {
                            Some(t) => format!("{}: {t:.1} °C", s.heater),
                            None => format!("{}: (no report yet)", s.heater),
                        })
                        .collect();
                    writeln!(std::io::stdout(), "{}", line.join("  "))?;
                }
            }
            event = connected.events.recv() => match event {
                None => bail!("the connection to MCU '{}' closed", handle.name()),
                Some(McuEvent::Disconnected { why }) => bail!("MCU '{}' disconnected: {why}", handle.name()),
                Some(McuEvent::Session(SessionEvent::Shutdown { reason, .. })) => {
                    bail!("MCU '{}' shut down: {reason}", handle.name());
                }
                Some(McuEvent::Session(SessionEvent::Lost { why })) => bail!("MCU '{}': {why}", handle.name()),
                Some(McuEvent::Session(SessionEvent::Response { name, values, .. })) if name == "analog_in_state" => {
                    if let Some((oid, value)) = last_adc_value(&values)
                        && let Some(i) = sensors.iter().position(|s| s.oid == oid)
                    {
                        latest[i] = sensors[i].temperature_of_report(value);
                    }
                }
                Some(_) => {}
            },
        }
    }
}

/// The oid and the newest value of an `analog_in_state` report, in either of Klipper's formats
/// (`values=%*s`: little-endian sums, oldest first; older firmware: `value=%hu`).
fn last_adc_value(values: &[Value]) -> Option<(u8, u16)> {
    let oid = match values.first()? {
        Value::Int(oid) => u8::try_from(*oid).ok()?,
        Value::Bytes(_) => return None,
    };
    let value = match values.get(2)? {
        Value::Int(v) => u16::try_from(*v).ok()?,
        Value::Bytes(b) => {
            let pair = b.rchunks_exact(2).next()?;
            u16::from_le_bytes([pair[0], pair[1]])
        }
    };
    Some((oid, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adc_reports_in_both_formats() {
        let batched = [
            Value::Int(3),
            Value::Int(1000),
            Value::Bytes(vec![0x10, 0x00, 0x34, 0x12]),
        ];
        assert_eq!(last_adc_value(&batched), Some((3, 0x1234)));
        let legacy = [Value::Int(4), Value::Int(1000), Value::Int(777)];
        assert_eq!(last_adc_value(&legacy), Some((4, 777)));
        assert_eq!(last_adc_value(&[Value::Int(4)]), None);
        let empty = [Value::Int(3), Value::Int(0), Value::Bytes(vec![])];
        assert_eq!(last_adc_value(&empty), None);
    }
}
