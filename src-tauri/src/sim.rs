//! `gantry sim …`: the simulated MCU from the command line. Today `replay`, which plays a recorded
//! stream through the model (see `gantry_sim::replay`) and prints the report as text or JSON.

use std::io::Write as _;

use anyhow::Context as _;
use gantry_core::proto::Dictionary;
use gantry_sim::replay::{Report, replay as run_replay};

use crate::cli::SimReplayArgs;

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
