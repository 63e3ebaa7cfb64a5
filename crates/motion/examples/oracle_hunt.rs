//! Differential hunt against real Klipper: runs each case directory given on the command line
//! (printer.cfg, input.gcode, a `dict` file naming a dictionary in tests/fixtures/oracle/dict,
//! and Klipper's output.serial) through the planner as `gantry batch` does, and compares the
//! streams per stepper as the oracle tests do. Prints one line per case that fails, sends more
//! `queue_step`s than Klipper or has steps off Klipper's exact clock, and a summary; exits 1
//! when a case fails.
//!
//! The cases come from tests/fixtures/oracle-extra/hunt.py, which writes random config ×
//! corpus cases and runs Klipper on them:
//!
//! ```text
//! python3 tests/fixtures/oracle-extra/hunt.py /tmp/hunt 0 60     # needs KLIPPER and PY
//! cargo run --release -p gantry-motion --example oracle_hunt -- /tmp/hunt/*
//! ```

#![allow(clippy::print_stdout)] // the report of a command-line tool

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use gantry_motion::config::Config;
use gantry_motion::output::encode_stream;
use gantry_motion::printer::Printer;
use gantry_motion::steptrace::{Trace, compare};
use gantry_proto::Dictionary;

/// What one case gave.
struct Outcome {
    passes: bool,
    report: String,
    error_exit: Option<u32>,
    queue_steps: (usize, usize),
    /// Steps not at exactly Klipper's clock (steppers paired by step pin), of all steps.
    off_clock: (usize, usize),
    /// The step pins of the steppers with steps off Klipper's clock, with how many.
    off_pins: String,
}

fn run_case(dir: &Path) -> Result<Outcome, String> {
    let read = |name: &str| {
        std::fs::read(dir.join(name)).map_err(|e| format!("{}: {e}", dir.join(name).display()))
    };
    let dicts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/oracle/dict");
    let dict_name = String::from_utf8_lossy(&read("dict")?).trim().to_owned();
    let dict_text = std::fs::read_to_string(dicts.join(&dict_name))
        .map_err(|e| format!("dictionary {dict_name}: {e}"))?;
    let dict = Dictionary::from_json(&dict_text).map_err(|e| e.to_string())?;
    let config = Config::parse(
        &String::from_utf8_lossy(&read("printer.cfg")?),
        "printer.cfg",
    )
    .map_err(|e| e.to_string())?;
    let mut printer = Printer::new(&config, &[("mcu", &dict)]).map_err(|e| e.to_string())?;
    printer.stop_batch_on_error(true);
    printer.emulate_batch_homing(true);
    printer
        .run_batch(&read("input.gcode")?)
        .map_err(|e| e.to_string())?;
    let (config_phase, messages) = printer.take_output(0);
    let ours = encode_stream(&dict, &config_phase, &messages).map_err(|e| e.to_string())?;
    let freq = dict.clock_freq().map_err(|e| e.to_string())?;
    let expected = Trace::from_stream(&dict, &read("output.serial")?).map_err(|e| e.to_string())?;
    let actual = Trace::from_stream(&dict, &ours).map_err(|e| e.to_string())?;
    let cmp = compare(&expected, &actual, freq, freq);
    let (mut off_clock, mut off_pins) = ((0, 0), String::new());
    for e in &expected.steppers {
        let theirs = actual.steppers.iter().find(|a| a.step_pin == e.step_pin);
        let same = theirs.map_or(0, |a| {
            e.clocks
                .iter()
                .zip(&a.clocks)
                .filter(|(x, y)| x == y)
                .count()
        });
        let off = e.clocks.len() - same;
        if off > 0 {
            let first = theirs.and_then(|a| {
                e.clocks
                    .iter()
                    .zip(&a.clocks)
                    .position(|(x, y)| x != y)
                    .map(|i| (i, e.clocks[i], a.clocks[i]))
            });
            off_pins += &format!(" {}:{off}", e.step_pin);
            if let Some((i, klipper, ours)) = first {
                off_pins += &format!(" (first: step {i}, Klipper {klipper}, ours {ours})");
            }
        }
        off_clock.0 += off;
        off_clock.1 += e.clocks.len();
    }
    Ok(Outcome {
        passes: cmp.passes() && expected.total_steps() == actual.total_steps(),
        off_clock,
        off_pins,
        report: cmp.to_string(),
        error_exit: printer.batch_error_exit,
        queue_steps: (actual.total_queue_steps(), expected.total_queue_steps()),
    })
}

fn main() -> ExitCode {
    let (mut cases, mut failed, mut exits, mut over, mut inexact) = (0, 0, 0, 0, 0);
    let mut out = String::new();
    for arg in std::env::args().skip(1) {
        let dir = PathBuf::from(arg);
        if !dir.join("output.serial").is_file() {
            continue;
        }
        cases += 1;
        let name = dir.display();
        match run_case(&dir) {
            Ok(o) => {
                exits += usize::from(o.error_exit.is_some());
                if o.queue_steps.0 > o.queue_steps.1 {
                    over += 1;
                    out += &format!(
                        "{name}: {} queue_step, Klipper {}\n",
                        o.queue_steps.0, o.queue_steps.1
                    );
                }
                if o.off_clock.0 > 0 {
                    inexact += 1;
                    out += &format!(
                        "{name}: {} of {} steps not at Klipper's clock ({})\n",
                        o.off_clock.0,
                        o.off_clock.1,
                        o.off_pins.trim()
                    );
                }
                if !o.passes {
                    failed += 1;
                    out += &format!("{name}: FAIL\n{}\n", o.report);
                }
            }
            Err(e) => {
                failed += 1;
                out += &format!("{name}: cannot run: {e}\n");
            }
        }
    }
    out += &format!(
        "{cases} cases: {failed} failed, {exits} ended at a G-code error, {over} with more \
         queue_step than Klipper, {inexact} with steps off Klipper's clock\n"
    );
    print!("{out}");
    if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
