//! `gantry print --config printer.cfg FILE.gcode`: print a file headless on a printer's MCU with
//! Gantry as the Klipper host — connect and configure the board, then run the file through the
//! live planner (homing on the endstops, heating with Klipper's PID, steps in real time), with a
//! progress line and the live temperatures. A file adapter over `gantry_core::live`.

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use gantry_core::live::history::HistoryRecorder;
use gantry_core::live::job::{self, JobOptions, JobOutcome, JobProgress, JobRequest};
use gantry_core::motion::printer::{PrintState, Printer, Response};
use gantry_core::store;
use indicatif::{ProgressBar, ProgressStyle};

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
    /// The job history database (default: gantry.db in the data folder).
    #[arg(long, value_name = "FILE")]
    pub db: Option<PathBuf>,
    /// Record no job history or temperatures.
    #[arg(long, conflicts_with = "db")]
    pub no_history: bool,
}

/// Runs `gantry print`.
///
/// # Errors
/// An unusable printer.cfg or G-code file, an MCU that cannot be connected, or a printer that
/// halts mid-print (an MCU shutdown, a heater fault, a lost connection), in Klipper's words.
pub fn run(args: &PrintArgs) -> anyhow::Result<()> {
    let config = gantry_core::printer_config::load(&args.config)
        .with_context(|| format!("cannot load {}", args.config.display()))?;
    let gcode = read_gcode(&args.file)?;
    let target = gantry_core::live::connect::mcu_target(&config, "mcu", &args.config)?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let mut out = std::io::stdout();
    writeln!(out, "mcu 'mcu': Starting connect ({target})")?;
    for name in gantry_core::motion::printer::mcu_names(&config)
        .iter()
        .skip(1)
    {
        let t = gantry_core::live::connect::mcu_target(&config, name, &args.config)?;
        writeln!(out, "mcu '{name}': Starting connect ({t})")?;
    }
    let live = runtime.block_on(gantry_core::live::connect::connect(
        &config,
        &args.config,
        Some(target),
        Duration::from_secs(args.timeout),
        false,
    ))?;
    writeln!(
        out,
        "Configured MCU 'mcu' ({} moves): printing {} ({} bytes)",
        live.info.move_count,
        args.file.display(),
        gcode.len()
    )?;
    for (name, info) in &live.secondaries {
        writeln!(out, "Configured MCU '{name}' ({} moves)", info.move_count)?;
    }
    let mut printer = live.printer;
    // The history keeps the config as the user wrote it (includes not expanded).
    let config_text = std::fs::read_to_string(&args.config).unwrap_or_default();
    let history = open_history(args, &config_text);
    let outcome = print_file(args, &mut printer, &gcode, history.as_ref());
    if let Some(h) = history {
        for e in h.close() {
            let _ = writeln!(std::io::stderr(), "gantry: job history: {e}");
        }
    }
    let report = outcome?;
    let what = match report.outcome {
        JobOutcome::Complete => "Done",
        JobOutcome::Cancelled => "Cancelled",
    };
    writeln!(
        out,
        "{what}: {} lines, {:.1} s of print time ({} printing, {} in all), {:.1} mm of filament; {}",
        report.lines,
        report.print_time,
        clock_time(report.print_duration_s),
        clock_time(report.total_duration_s),
        report.filament_used_mm,
        temperatures(&printer)
    )?;
    Ok(())
}

/// The job history database, unless `--no-history`; a database that cannot be opened is
/// reported and the print goes on without it.
fn open_history(args: &PrintArgs, config_text: &str) -> Option<HistoryRecorder> {
    if args.no_history {
        return None;
    }
    let path = args.db.clone().or_else(store::default_database_path)?;
    if let Some(dir) = path.parent()
        && let Err(e) = std::fs::create_dir_all(dir)
    {
        let _ = writeln!(
            std::io::stderr(),
            "gantry: job history off: cannot create {}: {e}",
            dir.display()
        );
        return None;
    }
    let name = args.config.file_stem().map_or_else(
        || "printer".to_owned(),
        |s| s.to_string_lossy().into_owned(),
    );
    match store::Store::open(&path)
        .map_err(|e| e.to_string())
        .and_then(|s| {
            HistoryRecorder::spawn(s, &name, "serial", config_text).map_err(|e| e.to_string())
        }) {
        Ok(h) => Some(h),
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "gantry: job history off: {e}");
            None
        }
    }
}

/// `1:02:03` / `2:03` for a duration in seconds.
fn clock_time(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

fn temperatures(p: &Printer) -> String {
    p.heater_statuses()
        .iter()
        .map(|(h, t, target, _)| format!("{h} {t:.1}/{target:.0} °C"))
        .collect::<Vec<_>>()
        .join("  ")
}

/// Ctrl-C (or SIGTERM): the first asks the job to cancel after the current command, the next
/// stops the printer at once (an emergency stop, as M112). Returns a flag that ends the watcher.
fn watch_interrupts(
    requests: mpsc::Sender<JobRequest>,
    emergency: Option<Arc<AtomicBool>>,
    bar: ProgressBar,
) -> Arc<AtomicBool> {
    let done = Arc::new(AtomicBool::new(false));
    let interrupted = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(signal, Arc::clone(&interrupted)) {
            tracing::warn!(%e, "cannot catch Ctrl-C; it will kill the print");
        }
    }
    let watcher_done = Arc::clone(&done);
    let spawned = std::thread::Builder::new()
        .name("gantry-print-signals".into())
        .spawn(move || {
            let mut count = 0;
            while !watcher_done.load(Ordering::Relaxed) {
                if interrupted.swap(false, Ordering::Relaxed) {
                    count += 1;
                    if count == 1 {
                        bar.println(
                            "Cancelling after the current command (Ctrl-C again for an emergency stop)",
                        );
                        let _ = requests.send(JobRequest::Cancel);
                    } else if let Some(flag) = &emergency {
                        bar.println("Emergency stop");
                        flag.store(true, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(%e, "cannot watch for Ctrl-C");
    }
    done
}

/// How long `gantry print` waits at the end for its MCUs to switch the heaters off.
const HEATERS_OFF_TIMEOUT_S: f64 = 5.0;

/// Runs the job with a progress bar (a plain line every few seconds when stderr is not a
/// terminal), then turns the heaters off: nothing holds them once this command exits.
fn print_file(
    args: &PrintArgs,
    printer: &mut Printer,
    gcode: &[u8],
    history: Option<&HistoryRecorder>,
) -> anyhow::Result<job::JobReport> {
    let terminal = std::io::stderr().is_terminal();
    let bar = if terminal {
        ProgressBar::new(gcode.len() as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:30.cyan/blue} {percent:>3}% {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let (tx, rx) = mpsc::channel();
    let emergency = printer.emergency_flag().ok();
    let done = watch_interrupts(tx, emergency, bar.clone());
    let filename = args
        .file
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let mut last_line = Instant::now();
    let result = job::run(
        printer,
        gcode,
        JobOptions {
            filename: &filename,
            requests: Some(&rx),
            history,
            record_temperatures: true,
        },
        |p: &JobProgress| {
            let heat = |h: Option<(f64, f64)>, name: &str| {
                h.map_or_else(String::new, |(t, target)| {
                    format!("  {name} {t:.1}/{target:.0} °C")
                })
            };
            let left = p
                .remaining_s()
                .map_or_else(String::new, |s| format!("  ~{} left", clock_time(s)));
            let paused = if p.state == PrintState::Paused {
                "  [paused]"
            } else {
                ""
            };
            let msg = format!(
                "line {}  {}{left}{}{}{paused}",
                p.lines,
                clock_time(p.total_duration_s),
                heat(p.extruder, "extruder"),
                heat(p.heater_bed, "bed"),
            );
            if terminal {
                bar.set_position(p.file_position as u64);
                bar.set_message(msg);
            } else if last_line.elapsed() >= Duration::from_secs(5) {
                last_line = Instant::now();
                let _ = writeln!(std::io::stderr(), "{:5.1} %  {msg}", p.fraction() * 100.0);
            }
        },
        |r: &Response| bar.println(&r.text),
    );
    bar.finish_and_clear();
    let report = result.map_err(|e| anyhow::anyhow!("{e}"));
    if report.is_ok() {
        // Targets to 0, then until every MCU has switched its heaters off (a temperature
        // report, then the PWM update it brings, 0.3 s each, longer on a loaded machine):
        // once this command exits, only the MCU's max_duration would cut a heater left on.
        let off = printer
            .live_run_line("TURN_OFF_HEATERS", 0)
            .and_then(|()| printer.live_wait_heaters_off(HEATERS_OFF_TIMEOUT_S));
        match off {
            Ok(true) => {}
            Ok(false) => {
                let _ = writeln!(
                    std::io::stderr(),
                    "gantry: a heater was not yet off after {HEATERS_OFF_TIMEOUT_S} s; its MCU \
                     cuts it when its max_duration runs out"
                );
            }
            Err(e) => {
                let _ = writeln!(std::io::stderr(), "gantry: turning the heaters off: {e}");
            }
        }
    }
    done.store(true, Ordering::Relaxed);
    report
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
