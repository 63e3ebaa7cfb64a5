//! `gantry sim …`: the simulated MCU from the command line — served in real time on a
//! pseudo-terminal (`--pty`) or a TCP port (`--tcp`) in a world (`--world`, else the default
//! one), described (`--dump-dict`, `--example-config`), or fed a recorded stream (`replay`, see
//! `gantry_sim::replay`). The shell only reads files, installs the signal flag and serialises the
//! report; the simulation is `gantry_sim`'s.

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context as _;
use gantry_core::proto::Dictionary;
use gantry_sim::replay::replay_in as run_replay;
use gantry_sim::report::Report;
use gantry_sim::runtime::SimMcu;
use gantry_sim::world::World;

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
    if let Some(addr) = args.tcp {
        let sim = SimMcu::with_world(load_world(args.world.as_deref(), None)?);
        let stop = stop_flag(args.until_stdin_closes)?;
        return serve_tcp(addr, sim, args.report.as_deref(), &stop);
    }
    match &args.pty {
        Some(path) => {
            let sim = SimMcu::with_world(load_world(args.world.as_deref(), None)?);
            let stop = stop_flag(args.until_stdin_closes)?;
            serve_pty(path, sim, args.report.as_deref(), &stop)
        }
        None => anyhow::bail!(
            "say what to run: --pty PATH, --tcp ADDR:PORT, --dump-dict FILE, --example-config, or replay (see gantry sim --help)"
        ),
    }
}

/// The world in `path`, wired to an MCU with `dict` (the sim's own when `None`); without a path,
/// the default world.
fn load_world(path: Option<&Path>, dict: Option<&Dictionary>) -> anyhow::Result<World> {
    let own;
    let dict = match dict {
        Some(d) => d,
        None => {
            own = gantry_sim::dictionary::parsed();
            &own
        }
    };
    match path {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the world {}", path.display()))?;
            World::from_toml(&text, dict).with_context(|| format!("{}", path.display()))
        }
        None => World::default_for(dict).context("the default world"),
    }
}

/// A flag raised by SIGINT or SIGTERM, and with `until_stdin_closes` when standard input ends:
/// a process that started the sim with a pipe as its input is gone, however it ended (a
/// killed desktop app cannot stop its child any other way).
fn stop_flag(until_stdin_closes: bool) -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("cannot watch for signals")?;
    }
    if until_stdin_closes {
        gantry_core::lifeline::raise_when_stdin_ends(Arc::clone(&stop))
            .context("cannot watch standard input")?;
    }
    Ok(stop)
}

fn write_report(sim: &SimMcu, report: Option<&Path>) -> anyhow::Result<()> {
    if let Some(report) = report {
        std::fs::write(report, json(&sim.report()).to_string())
            .with_context(|| format!("cannot write the report {}", report.display()))?;
    }
    Ok(())
}

fn serve_tcp(
    addr: std::net::SocketAddr,
    mut sim: SimMcu,
    report: Option<&Path>,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let listener =
        std::net::TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
    let bound = listener.local_addr().context("the listening address")?;
    tracing::info!(%bound, "simulated MCU ready");
    writeln!(std::io::stdout(), "gantry-sim: serving on tcp {bound}")
        .context("cannot write to standard output")?;
    // The report is written each time a host leaves, and on exit.
    let served = gantry_sim::tcp::run(&listener, &mut sim, stop, |sim| {
        if let Err(e) = write_report(sim, report) {
            tracing::warn!("{e:#}");
        }
    });
    write_report(&sim, report)?;
    served.with_context(|| format!("serving on {bound} failed"))
}

/// The simulated printer's printer.cfg with `[mcu] serial:` left for the user.
fn example_config() -> String {
    gantry_core::printers::SIMULATED_CONFIG.replace(
        "serial: gantry-sim",
        "# The path given to `gantry sim --pty`:\nserial: /tmp/gantry-sim",
    )
}

#[cfg(unix)]
fn serve_pty(
    path: &Path,
    mut sim: SimMcu,
    report: Option<&Path>,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
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
    let served = gantry_sim::pty::run(&mut pty, &mut sim, stop);
    write_report(&sim, report)?;
    served.context("the pty failed")
}

#[cfg(not(unix))]
fn serve_pty(
    _path: &Path,
    _sim: SimMcu,
    _report: Option<&Path>,
    _stop: &AtomicBool,
) -> anyhow::Result<()> {
    anyhow::bail!("--pty needs a Unix pseudo-terminal; on this system use --tcp")
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
    let world = match &args.world {
        Some(path) => load_world(Some(path), Some(&dict))?,
        None => World::empty(dict.clock_freq()?),
    };
    if args.bench {
        return bench(&dict, &data, &world);
    }
    let report = run_replay(&dict, &data, world);
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
fn bench(dict: &Dictionary, data: &[u8], world: &World) -> anyhow::Result<()> {
    let mut seconds = Vec::new();
    let mut report = None;
    for _ in 0..5 {
        let start = std::time::Instant::now();
        report = Some(run_replay(dict, data, world.clone()));
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
        "carriages": r.carriages.iter().map(|c| serde_json::json!({
            "name": c.name,
            "axis": c.axis,
            "position_mm": c.position_mm,
        })).collect::<Vec<_>>(),
        "heaters": r.heaters.iter().map(|h| serde_json::json!({
            "name": h.name,
            "temperature_c": h.temperature_c,
            "duty": h.duty,
        })).collect::<Vec<_>>(),
        "fans": r.fans.iter().map(|f| serde_json::json!({
            "name": f.name,
            "duty": f.duty,
        })).collect::<Vec<_>>(),
        "clock": r.clock,
        "commands": r.commands,
        "config_crc": r.config_crc,
        "fault": r.fault.as_ref().map(ToString::to_string),
        "shutdown": r.shutdown(),
        "shutdown_clock": r.shutdown_clock,
        "fault_command": r.fault_command,
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
    lines.extend(
        r.carriages
            .iter()
            .map(|c| format!("carriage {} ({}): {:.3} mm", c.name, c.axis, c.position_mm)),
    );
    lines.extend(r.heaters.iter().map(|h| {
        format!(
            "heater {}: {:.1} °C, duty {:.2}",
            h.name, h.temperature_c, h.duty
        )
    }));
    lines.extend(
        r.fans
            .iter()
            .map(|f| format!("fan {}: duty {:.2}", f.name, f.duty)),
    );
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
