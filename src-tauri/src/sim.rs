//! `gantry sim …`: the simulated MCU from the command line — served in real time on a
//! pseudo-terminal (`--pty`), described (`--dump-dict`, `--example-config`), or fed a recorded
//! stream (`replay`, see `gantry_sim::replay`).

use std::io::Write as _;

use anyhow::Context as _;
use gantry_core::proto::Dictionary;
use gantry_sim::replay::replay as run_replay;
use gantry_sim::report::Report;

use crate::cli::{SimArgs, SimCommand, SimReplayArgs};

/// Runs `gantry sim` as its arguments ask.
///
/// # Errors
/// When the chosen job fails; when no job was chosen.
pub fn run(args: &SimArgs) -> anyhow::Result<()> {
    if let Some(SimCommand::Replay(replay_args)) = &args.command {
        return replay(replay_args);
    }
    if let Some(path) = &args.dump_dict {
        std::fs::write(path, gantry_sim::dictionary::json())
            .with_context(|| format!("cannot write {}", path.display()))?;
        return Ok(());
    }
    if args.example_config {
        writeln!(std::io::stdout(), "{}", example_config())
            .context("cannot write to standard output")?;
        return Ok(());
    }
    match &args.pty {
        Some(path) => serve_pty(path, args.report.as_deref()),
        None => anyhow::bail!(
            "say what to run: --pty PATH, --dump-dict FILE, --example-config, or replay (see gantry sim --help)"
        ),
    }
}

/// The simulated printer's printer.cfg with `[mcu] serial:` left for the user.
fn example_config() -> String {
    gantry_core::printers::SIMULATED_CONFIG.replace(
        "serial: gantry-sim",
        "# The path given to `gantry sim --pty`:\nserial: /tmp/gantry-sim",
    )
}

#[cfg(unix)]
fn serve_pty(path: &std::path::Path, report: Option<&std::path::Path>) -> anyhow::Result<()> {
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("cannot watch for signals")?;
    }
    let mut pty = gantry_sim::pty::open(path)
        .with_context(|| format!("cannot open a pty at {}", path.display()))?;
    tracing::info!(path = %path.display(), device = %pty.device().display(), "simulated MCU ready");
    writeln!(
        std::io::stdout(),
        "gantry-sim: serving on {} ({})",
        pty.path().display(),
        pty.device().display()
    )
    .context("cannot write to standard output")?;
    let mut sim = gantry_sim::runtime::SimMcu::new();
    let served = gantry_sim::pty::run(&mut pty, &mut sim, &stop);
    if let Some(report) = report {
        std::fs::write(report, json(&sim.report()).to_string())
            .with_context(|| format!("cannot write the report {}", report.display()))?;
    }
    served.context("the pty failed")
}

#[cfg(not(unix))]
fn serve_pty(_path: &std::path::Path, _report: Option<&std::path::Path>) -> anyhow::Result<()> {
    anyhow::bail!("--pty needs a Unix pseudo-terminal; on this system use the in-process sim")
}

/// `gantry sim replay`.
///
/// # Errors
/// When a file cannot be read, the dictionary is invalid, standard output is closed, or the model
/// stopped with a fault (the report is printed first).
pub fn replay(args: &SimReplayArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.dict)
        .with_context(|| format!("cannot read dictionary {}", args.dict.display()))?;
    let dict = Dictionary::from_json(&text)
        .with_context(|| format!("invalid dictionary {}", args.dict.display()))?;
    let data = std::fs::read(&args.serial)
        .with_context(|| format!("cannot read {}", args.serial.display()))?;
    if args.bench {
        return bench(&dict, &data);
    }
    let report = run_replay(&dict, &data);
    let out = if args.json {
        json(&report).to_string()
    } else {
        text_report(&report)
    };
    writeln!(std::io::stdout(), "{out}").context("cannot write to standard output")?;
    match &report.fault {
        Some(fault) => anyhow::bail!(
            "{}: the simulated MCU stopped: {fault}",
            args.serial.display()
        ),
        None => Ok(()),
    }
}

/// Times 5 in-process replays (decode + model, every step walked) and prints the median.
fn bench(dict: &Dictionary, data: &[u8]) -> anyhow::Result<()> {
    let mut seconds = Vec::new();
    let mut report = None;
    for _ in 0..5 {
        let start = std::time::Instant::now();
        report = Some(run_replay(dict, data));
        seconds.push(start.elapsed().as_secs_f64());
    }
    seconds.sort_by(f64::total_cmp);
    let median_s = seconds[seconds.len() / 2];
    let report = report.context("no replay ran")?;
    #[allow(clippy::cast_precision_loss)]
    let (steps, print_time_s) = (
        report.total_steps() as f64,
        report.last_step_clock64() as f64 / dict.clock_freq()?,
    );
    let out = serde_json::json!({
        "bytes": data.len(),
        "commands": report.commands,
        "steps": report.total_steps(),
        "print_time_s": print_time_s,
        "replay_s_median": median_s,
        "steps_per_s": steps / median_s,
        "times_real_time": print_time_s / median_s,
        "fault": report.fault.as_ref().map(ToString::to_string),
    });
    writeln!(std::io::stdout(), "{out}").context("cannot write to standard output")
}

fn json(r: &Report) -> serde_json::Value {
    serde_json::json!({
        "steppers": r.steppers.iter().map(|s| serde_json::json!({
            "oid": s.oid,
            "step_pin": s.step_pin,
            "position": s.position,
            "steps": s.steps,
            "moves": s.moves,
            "last_step_clock": s.last_step_clock,
        })).collect::<Vec<_>>(),
        "commands": r.commands,
        "config_crc": r.config_crc,
        "fault": r.fault.as_ref().map(ToString::to_string),
        "shutdown": r.shutdown(),
        "stream_problems": r.stream_problems,
    })
}

fn text_report(r: &Report) -> String {
    let mut lines: Vec<String> = r
        .steppers
        .iter()
        .map(|s| {
            format!(
                "stepper {} (oid {}): position {} steps, {} steps in {} moves, last step at clock {}",
                s.step_pin, s.oid, s.position, s.steps, s.moves, s.last_step_clock
            )
        })
        .collect();
    lines.push(format!(
        "{} commands; config crc {}; {}",
        r.commands,
        r.config_crc
            .map_or_else(|| "none".to_owned(), |c| c.to_string()),
        r.fault
            .as_ref()
            .map_or_else(|| "no fault".to_owned(), ToString::to_string)
    ));
    lines.extend(
        r.stream_problems
            .iter()
            .map(|p| format!("stream problem: {p}")),
    );
    lines.join("\n")
}
