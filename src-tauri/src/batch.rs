//! `gantry batch` and `gantry estimate`: the embedded planner on files.
//!
//! `gantry batch --config printer.cfg --dict mcu.dict -i in.gcode -o out.serial` is Klipper's
//! batch mode (`klippy.py printer.cfg -i in.gcode -o out.serial -d mcu.dict`): the MCU command
//! stream the host would send, as framed message blocks. A printer with several MCUs takes one
//! `--dict NAME=FILE` per extra MCU and writes `out.serial-NAME` for each, as klippy does.
//! `gantry estimate FILE --config printer.cfg [--json]` plans the same G-code without steps.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, bail};
use gantry_core::motion::estimate::estimate;
use gantry_core::motion::output::encode_stream;
use gantry_core::motion::printer::Printer;
use gantry_core::proto::Dictionary;

use crate::cli::{BatchArgs, EstimateArgs};

/// Parses one `--dict` value: `FILE` (the main MCU) or `NAME=FILE`.
fn split_dict(value: &str) -> (String, PathBuf) {
    match value.split_once('=') {
        Some((name, file)) if !name.contains('/') => (name.to_owned(), PathBuf::from(file)),
        _ => ("mcu".to_owned(), PathBuf::from(value)),
    }
}

fn read_dictionary(path: &Path) -> anyhow::Result<Dictionary> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read dictionary {}", path.display()))?;
    Dictionary::from_json(&text).with_context(|| format!("invalid dictionary {}", path.display()))
}

/// `gantry batch`.
///
/// # Errors
/// Unreadable inputs, a config the planner rejects, a dictionary lacking a needed command, an
/// internal planner error, or an output that cannot be written.
pub fn run_batch(args: &BatchArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let config = gantry_core::printer_config::load(&args.config)
        .with_context(|| format!("cannot load {}", args.config.display()))?;
    let mut dicts = Vec::new();
    for d in &args.dict {
        let (name, path) = split_dict(d);
        dicts.push((name, read_dictionary(&path)?));
    }
    if !dicts.iter().any(|(n, _)| n == "mcu") {
        bail!("no dictionary for the main MCU: give --dict FILE (and --dict NAME=FILE for others)");
    }
    let gcode = std::fs::read(&args.input)
        .with_context(|| format!("cannot read G-code {}", args.input.display()))?;
    let refs: Vec<(&str, &Dictionary)> = dicts.iter().map(|(n, d)| (n.as_str(), d)).collect();
    let mut printer = Printer::new(&config, &refs)
        .with_context(|| format!("{}: printer.cfg not usable", args.config.display()))?;
    let loaded = started.elapsed();
    let plan_start = Instant::now();
    printer
        .run_batch(&gcode)
        .context("internal planner error (Klipper: \"Internal error in stepcompress\")")?;
    let planned = plan_start.elapsed();
    let stderr = std::io::stderr();
    let mut err = stderr.lock();
    for r in &printer.responses {
        if r.text.starts_with("!!") {
            let _ = writeln!(err, "{}:{}: {}", args.input.display(), r.line, r.text);
        } else {
            tracing::info!("{}:{}: {}", args.input.display(), r.line, r.text);
        }
    }
    let mut bytes_out = 0usize;
    let mut messages = 0usize;
    for (i, m) in printer
        .mcus
        .iter()
        .map(|m| m.name.clone())
        .collect::<Vec<_>>()
        .iter()
        .enumerate()
    {
        let dict = &refs
            .iter()
            .find(|(n, _)| n == m)
            .with_context(|| format!("no dictionary for mcu '{m}'"))?
            .1;
        let (config_phase, msgs) = printer.take_output(i);
        messages += config_phase.len() + msgs.len();
        let data = encode_stream(dict, &config_phase, &msgs)
            .with_context(|| format!("cannot encode the stream for mcu '{m}'"))?;
        let path = if m == "mcu" {
            args.output.clone()
        } else {
            PathBuf::from(format!("{}-{m}", args.output.display()))
        };
        std::fs::write(&path, &data).with_context(|| format!("cannot write {}", path.display()))?;
        bytes_out += data.len();
    }
    if args.bench {
        let total = started.elapsed();
        let line = serde_json::json!({
            "gcode_bytes": gcode.len(),
            "gcode_lines": printer.lines_read(),
            "messages": messages,
            "output_bytes": bytes_out,
            "print_time_s": printer.toolhead.print_time,
            "load_s": loaded.as_secs_f64(),
            "plan_s": planned.as_secs_f64(),
            "total_s": total.as_secs_f64(),
            "realtime_factor": printer.toolhead.print_time / planned.as_secs_f64().max(1e-9),
        });
        writeln!(std::io::stdout(), "{line}").context("cannot write to standard output")?;
    }
    if printer.responses.iter().any(|r| r.text.starts_with("!!")) && args.strict {
        bail!("the G-code had errors (see above)");
    }
    Ok(())
}

/// `gantry estimate`.
///
/// # Errors
/// Unreadable inputs, a config the planner rejects, an internal planner error.
pub fn run_estimate(args: &EstimateArgs) -> anyhow::Result<()> {
    let config = gantry_core::printer_config::load(&args.config)
        .with_context(|| format!("cannot load {}", args.config.display()))?;
    let gcode = std::fs::read(&args.file)
        .with_context(|| format!("cannot read G-code {}", args.file.display()))?;
    let planned = if args.assume_homed {
        gantry_core::motion::estimate::estimate_assuming_homed(&config, &gcode)
    } else {
        estimate(&config, &gcode)
    };
    let est = planned.with_context(|| {
        format!(
            "{}: cannot plan with this printer.cfg",
            args.config.display()
        )
    })?;
    let grams = est.filament_mm3 / 1000.0 * args.density;
    let mut out = std::io::stdout().lock();
    if args.json {
        let mut v = serde_json::to_value(&est).context("cannot serialise the estimate")?;
        v["filament_g"] = serde_json::json!(grams);
        v["density_g_cm3"] = serde_json::json!(args.density);
        writeln!(out, "{v}").context("cannot write to standard output")?;
        return Ok(());
    }
    let t = est.print_time_s;
    writeln!(
        out,
        "print time: {} ({t:.1} s of motion; Klipper batch mode would report {:.3} s)\nfilament: {:.2} m, {:.1} g at {} g/cm³\nhighest speed: {:.1} mm/s\nlayers: {}\nmoves: {}",
        hms(t),
        est.klipper_print_time_s,
        est.filament_mm / 1000.0,
        grams,
        args.density,
        est.max_speed_mm_s,
        est.layers.len(),
        est.moves
    )
    .context("cannot write to standard output")?;
    if args.layers {
        for l in &est.layers {
            writeln!(
                out,
                "  layer {:>4}  z {:>8.3}  {:>10}  (line {})",
                l.layer,
                l.z_mm,
                hms(l.time_s),
                l.first_line
            )
            .context("cannot write to standard output")?;
        }
    }
    for (line, m) in est.messages.iter().filter(|(_, m)| m.starts_with("!!")) {
        writeln!(std::io::stderr(), "{}:{line}: {m}", args.file.display())
            .context("cannot write to standard error")?;
    }
    Ok(())
}

fn hms(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    format!("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dict_arguments_name_their_mcu() {
        assert_eq!(
            split_dict("a/b.dict"),
            ("mcu".to_owned(), PathBuf::from("a/b.dict"))
        );
        assert_eq!(
            split_dict("toolboard=tb.dict"),
            ("toolboard".to_owned(), PathBuf::from("tb.dict"))
        );
        assert_eq!(hms(3725.4), "1:02:05");
    }
}
