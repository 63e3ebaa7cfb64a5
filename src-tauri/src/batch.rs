//! `gantry batch` and `gantry estimate`: the embedded planner on files.
//!
//! `gantry batch --config printer.cfg --dict mcu.dict -i in.gcode -o out.serial` is Klipper's
//! batch mode (`klippy.py printer.cfg -i in.gcode -o out.serial -d mcu.dict`): the MCU command
//! stream the host would send, as framed message blocks. A printer with several MCUs takes one
//! `--dict NAME=FILE` per extra MCU and writes `out.serial-NAME` for each, as klippy does.
//! `gantry estimate FILE --config printer.cfg [--json]` plans the same G-code without steps.
//! Both read the G-code as they plan and write as they go, so memory does not grow with the
//! file. Before planning, both warn on standard error about what Klipper would refuse in
//! printer.cfg: sections no Klipper module reads and options nobody read in the sections the
//! planner implements (`file:line: warning: Option 'x' is not valid in section 'y'`); `estimate
//! --json` also lists them under `config_warnings`.

use std::fs::File;
use std::io::{BufWriter, Read, Write as _};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, bail};
use gantry_core::motion::bgcode;
use gantry_core::motion::config::Config;
use gantry_core::motion::estimate::{Estimator, LayerRule};
use gantry_core::motion::isa::Isa;
use gantry_core::motion::output::StreamEncoder;
use gantry_core::motion::printer::{
    BATCH_READ_SIZE, ConfigNotice, Printer, RESPONSES_KEPT_PER_TEXT, config_report,
};
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

/// One MCU's output file, written as the planner runs.
struct McuOutput<'a> {
    /// The MCU's name in printer.cfg (`mcu`, or NAME of `[mcu NAME]`).
    name: String,
    path: PathBuf,
    encoder: StreamEncoder<'a>,
    file: BufWriter<File>,
    /// Encoded bytes waiting to be written.
    buf: Vec<u8>,
    /// Messages so far (the config phase included), for error messages.
    messages: usize,
    bytes: usize,
}

impl McuOutput<'_> {
    fn write_buf(&mut self) -> anyhow::Result<()> {
        self.file
            .write_all(&self.buf)
            .with_context(|| format!("cannot write {}", self.path.display()))?;
        self.bytes += self.buf.len();
        self.buf.clear();
        Ok(())
    }
}

/// Fills `buf` from `input` as far as it goes (klippy's batch reads are 4096 bytes until the
/// end of the file); the number of bytes read, short only at the end.
fn read_chunk(input: &mut (impl Read + ?Sized), buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match input.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Where the G-code's responses go as they come: errors to standard error, the rest to the
/// log.
struct Responses<'a> {
    input: &'a Path,
}

impl Responses<'_> {
    fn report(&self, printer: &mut Printer) {
        if printer.responses.is_empty() {
            return;
        }
        let stderr = std::io::stderr();
        let mut err = stderr.lock();
        for r in printer.responses.drain(..) {
            if r.text.starts_with("!!") {
                let _ = writeln!(err, "{}:{}: {}", self.input.display(), r.line, r.text);
            } else {
                tracing::info!("{}:{}: {}", self.input.display(), r.line, r.text);
            }
        }
    }

    /// The responses that came too often to be listed each time: how often.
    fn report_repeated(&self, printer: &Printer) {
        let stderr = std::io::stderr();
        let mut err = stderr.lock();
        for r in printer.repeated_responses() {
            let line = format!(
                "{}: {} (came {} times; the first {RESPONSES_KEPT_PER_TEXT} are listed)",
                self.input.display(),
                r.text,
                r.count
            );
            if r.text.starts_with("!!") {
                let _ = writeln!(err, "{line}");
            } else {
                tracing::info!("{line}");
            }
        }
    }
}

/// What Klipper would refuse in `config` (unknown sections, unknown options of the sections the
/// planner implements; see motion's `config_report`), each written to standard error as
/// `file:line: warning: message`. Call it once the planner is built from `config`, so that the
/// options it read are recorded.
///
/// # Errors
/// Standard error cannot be written.
fn warn_config(config: &Config) -> anyhow::Result<Vec<ConfigNotice>> {
    let notices: Vec<ConfigNotice> = config_report(config)
        .into_iter()
        .filter(ConfigNotice::is_error_for_klipper)
        .collect();
    let stderr = std::io::stderr();
    let mut err = stderr.lock();
    for n in &notices {
        writeln!(err, "{}: warning: {}", n.location, n.message)
            .context("cannot write to standard error")?;
    }
    Ok(notices)
}

/// The notices as `estimate --json` lists them under `config_warnings`.
fn notices_json(notices: &[ConfigNotice]) -> serde_json::Value {
    notices
        .iter()
        .map(|n| {
            serde_json::json!({
                "file": n.location.file,
                "line": n.location.line,
                "kind": n.kind.as_str(),
                "message": n.message,
            })
        })
        .collect()
}

/// A G-code file: text, or Prusa's binary G-code (`.bgcode`, which begins with the magic
/// `GCDE`; its G-code is decoded a block at a time as it is read).
enum GcodeFile {
    Text(File),
    Binary(Vec<u8>),
}

/// Opens a G-code file for reading from its start; binary G-code is recognised by its magic,
/// whatever the file's name.
fn open_gcode(path: &Path) -> anyhow::Result<GcodeFile> {
    use std::io::{Read as _, Seek as _};
    let mut file =
        File::open(path).with_context(|| format!("cannot read G-code {}", path.display()))?;
    let mut magic = [0_u8; 4];
    let n = read_chunk(&mut file, &mut magic)
        .with_context(|| format!("cannot read G-code {}", path.display()))?;
    if n == 4 && bgcode::is_bgcode(&magic) {
        // Binary G-code is compressed: the file is read whole, its text decoded as it is planned.
        let mut bytes = magic.to_vec();
        file.read_to_end(&mut bytes)
            .with_context(|| format!("cannot read G-code {}", path.display()))?;
        return Ok(GcodeFile::Binary(bytes));
    }
    file.rewind()
        .with_context(|| format!("cannot read G-code {}", path.display()))?;
    Ok(GcodeFile::Text(file))
}

impl GcodeFile {
    /// The file's G-code text, as a reader.
    fn text(&mut self, path: &Path) -> anyhow::Result<Box<dyn Read + '_>> {
        Ok(match self {
            // Read 64 KiB at a time (the planner still takes klippy's 4096-byte chunks): a
            // system call per 4096 bytes cost a batch run 1–2 % of its time.
            Self::Text(file) => Box::new(std::io::BufReader::with_capacity(1 << 16, file)),
            Self::Binary(bytes) => Box::new(BgcodeText {
                reader: bgcode::BgcodeReader::new(bytes)
                    .with_context(|| format!("{}: cannot read binary G-code", path.display()))?,
                text: Vec::new(),
                pos: 0,
            }),
        })
    }
}

/// The G-code text of a binary G-code file, decoded one block at a time as it is read.
struct BgcodeText<'a> {
    reader: bgcode::BgcodeReader<'a>,
    /// The decoded block being read.
    text: Vec<u8>,
    pos: usize,
}

impl Read for BgcodeText<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.text.len() {
            self.text.clear();
            self.pos = 0;
            let more = self
                .reader
                .next_gcode(&mut self.text)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            if !more {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.text.len() - self.pos);
        buf[..n].copy_from_slice(&self.text[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Says on standard error that the input's last line has no line end and did not run (as in
/// Klipper).
fn warn_unterminated(input: &Path, line: Option<&(u32, String)>) -> anyhow::Result<()> {
    if let Some((n, text)) = line {
        writeln!(
            std::io::stderr(),
            "{}:{n}: warning: the last line has no line end and was not run, as Klipper does not \
             run it (batch mode and SD-card prints alike): {text}",
            input.display()
        )
        .context("cannot write to standard error")?;
    }
    Ok(())
}

/// `gantry batch`.
///
/// The G-code is read in klippy's 4096-byte chunks and each MCU's messages are encoded and
/// written after every chunk, so memory stays flat however long the file is. A failed run
/// removes the outputs it had begun. A G-code error ends the run as it ends Klipper's batch
/// mode (unless `--keep-going`): the outputs then hold what klippy would have written, and
/// the run fails.
///
/// # Errors
/// Unreadable inputs, a config the planner rejects, a dictionary lacking a needed command, an
/// internal planner error, an output that cannot be written, or a G-code error.
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
    let mut gcode_file = open_gcode(&args.input)?;
    let mut input = gcode_file.text(&args.input)?;
    let refs: Vec<(&str, &Dictionary)> = dicts.iter().map(|(n, d)| (n.as_str(), d)).collect();
    let mut printer = Printer::new(&config, &refs)
        .with_context(|| format!("{}: printer.cfg not usable", args.config.display()))?;
    // Nothing reads positions back in a batch run.
    printer.keep_motion_history(false);
    printer.stop_batch_on_error(!args.keep_going);
    printer.emulate_batch_homing(true);
    warn_config(&config)?;
    let loaded = started.elapsed();
    let plan_start = Instant::now();
    let mut outputs = Vec::new();
    let result = stream_batch(args, &mut input, &refs, &mut printer, &mut outputs);
    if result.is_err() {
        // Leave no truncated stream behind.
        for o in outputs.drain(..) {
            drop(o.file);
            let _ = std::fs::remove_file(&o.path);
        }
    }
    let gcode_bytes = result?;
    let planned = plan_start.elapsed();
    if args.bench {
        let total = started.elapsed();
        let line = serde_json::json!({
            "gcode_bytes": gcode_bytes,
            "gcode_lines": printer.lines_read(),
            "messages": outputs.iter().map(|o| o.messages).sum::<usize>(),
            "output_bytes": outputs.iter().map(|o| o.bytes).sum::<usize>(),
            "print_time_s": printer.toolhead.print_time,
            "load_s": loaded.as_secs_f64(),
            "plan_s": planned.as_secs_f64(),
            "total_s": total.as_secs_f64(),
            "realtime_factor": printer.toolhead.print_time / planned.as_secs_f64().max(1e-9),
            // Which copy of the step loops ran: it differs between machines.
            "isa": Isa::detect().name(),
        });
        writeln!(std::io::stdout(), "{line}").context("cannot write to standard output")?;
    }
    if let Some(line) = printer.batch_error_exit {
        bail!(
            "stopped at the G-code error on line {line} of {}, as Klipper's batch mode does: {} \
             holds what klippy would have sent (--keep-going runs the rest of the file)",
            args.input.display(),
            args.output.display()
        );
    }
    Ok(())
}

/// The batch run proper: opens each MCU's output (into `outputs`, so that the caller can
/// remove them on failure), writes the config phases, then plans the input chunk by chunk,
/// writing each MCU's new messages after every chunk, until the input ends or (as in Klipper)
/// the read holding the first G-code error. Returns the bytes of G-code read.
fn stream_batch<'a>(
    args: &BatchArgs,
    input: &mut dyn Read,
    refs: &[(&str, &'a Dictionary)],
    printer: &mut Printer,
    outputs: &mut Vec<McuOutput<'a>>,
) -> anyhow::Result<usize> {
    for m in &printer.mcus {
        let dict = refs
            .iter()
            .find(|(n, _)| *n == m.name)
            .with_context(|| format!("no dictionary for mcu '{}'", m.name))?
            .1;
        let path = if m.name == "mcu" {
            args.output.clone()
        } else {
            PathBuf::from(format!("{}-{}", args.output.display(), m.name))
        };
        let encoder = StreamEncoder::new(dict)
            .with_context(|| format!("cannot encode the stream for mcu '{}'", m.name))?;
        let file =
            File::create(&path).with_context(|| format!("cannot write {}", path.display()))?;
        outputs.push(McuOutput {
            name: m.name.clone(),
            path,
            encoder,
            file: BufWriter::with_capacity(1 << 16, file),
            buf: Vec::new(),
            messages: 0,
            bytes: 0,
        });
    }
    for (m, o) in printer.mcus.iter().zip(outputs.iter_mut()) {
        for text in m.config_phase() {
            o.encoder
                .push_text(o.messages, &text, &mut o.buf)
                .with_context(|| format!("cannot encode the stream for mcu '{}'", o.name))?;
            o.messages += 1;
        }
        o.write_buf()?;
    }
    let responses = Responses { input: &args.input };
    let mut chunk = vec![0_u8; BATCH_READ_SIZE];
    let mut gcode_bytes = 0;
    loop {
        let n = read_chunk(input, &mut chunk)
            .with_context(|| format!("cannot read G-code {}", args.input.display()))?;
        if n == 0 {
            break;
        }
        gcode_bytes += n;
        printer
            .feed_batch_chunk(&chunk[..n])
            .context(PLANNER_ERROR)?;
        responses.report(printer);
        drain(printer, outputs)?;
        if n < chunk.len() || printer.batch_error_exit.is_some() {
            break;
        }
    }
    printer.finish_batch().context(PLANNER_ERROR)?;
    warn_unterminated(&args.input, printer.unterminated_line.as_ref())?;
    responses.report(printer);
    responses.report_repeated(printer);
    drain(printer, outputs)?;
    for o in outputs.iter_mut() {
        o.encoder.finish(&mut o.buf);
        o.write_buf()?;
        o.file
            .flush()
            .with_context(|| format!("cannot write {}", o.path.display()))?;
    }
    Ok(gcode_bytes)
}

const PLANNER_ERROR: &str = "internal planner error (Klipper: \"Internal error in stepcompress\")";

/// Encodes and writes every MCU's messages so far, emptying the planner's queues (their
/// buffers are kept for reuse).
fn drain(printer: &mut Printer, outputs: &mut [McuOutput<'_>]) -> anyhow::Result<()> {
    for (queue, o) in printer.toolhead.mcus.iter_mut().zip(outputs.iter_mut()) {
        o.encoder
            .push_all(o.messages, &queue.out, &mut o.buf)
            .with_context(|| format!("cannot encode the stream for mcu '{}'", o.name))?;
        o.messages += queue.out.len();
        queue.out.clear();
        o.write_buf()?;
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
    let mut gcode_file = open_gcode(&args.file)?;
    let mut input = gcode_file.text(&args.file)?;
    let planner_error = || {
        format!(
            "{}: cannot plan with this printer.cfg",
            args.config.display()
        )
    };
    // The file is planned as it is read, a block at a time.
    let mut estimator = Estimator::new(&config, args.assume_homed).with_context(planner_error)?;
    let config_warnings = warn_config(&config)?;
    let mut block = vec![0_u8; 1 << 16];
    loop {
        let n = read_chunk(&mut *input, &mut block)
            .with_context(|| format!("cannot read G-code {}", args.file.display()))?;
        if n == 0 {
            break;
        }
        estimator.feed(&block[..n]).with_context(planner_error)?;
    }
    let est = estimator.finish().with_context(planner_error)?;
    warn_unterminated(&args.file, est.unterminated_line.as_ref())?;
    let grams = est.filament_mm3 / 1000.0 * args.density;
    let mut out = std::io::stdout().lock();
    if args.json {
        let mut v = serde_json::to_value(&est).context("cannot serialise the estimate")?;
        v["filament_g"] = serde_json::json!(grams);
        v["density_g_cm3"] = serde_json::json!(args.density);
        v["config_warnings"] = notices_json(&config_warnings);
        writeln!(out, "{v}").context("cannot write to standard output")?;
        return Ok(());
    }
    let t = est.print_time_s;
    writeln!(
        out,
        "print time: {} ({t:.1} s of motion; Klipper batch mode would report {:.3} s)\nfilament: {:.2} m, {:.1} g at {} g/cm³\nhighest speed: {:.1} mm/s\nlayers: {} ({})\nmoves: {}",
        hms(t),
        est.klipper_print_time_s,
        est.filament_mm / 1000.0,
        grams,
        args.density,
        est.max_speed_mm_s,
        est.layers.len(),
        match est.layer_rule {
            LayerRule::Comments => "from the slicer's layer-change comments",
            LayerRule::ZHeights => "from the heights of the extruding moves",
        },
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
    for (m, count) in est
        .repeated_messages
        .iter()
        .filter(|(m, _)| m.starts_with("!!"))
    {
        writeln!(
            std::io::stderr(),
            "{}: {m} (came {count} times; the first {RESPONSES_KEPT_PER_TEXT} are listed)",
            args.file.display()
        )
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

    /// Regression: a `.bgcode` file was read as text and estimated at 0 s without a word. Now
    /// binary G-code is decoded, and a damaged one is a clear error.
    #[test]
    fn binary_gcode_is_decoded_or_refused_and_text_is_read_from_its_start() {
        let dir = std::env::temp_dir().join(format!("gantry-bgcode-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let read_all = |path: &Path| -> anyhow::Result<String> {
            let mut file = open_gcode(path)?;
            let mut text = String::new();
            file.text(path)?.read_to_string(&mut text)?;
            Ok(text)
        };
        let damaged = dir.join("part.bgcode");
        std::fs::write(&damaged, b"GCDE\x01\x00\x00\x00rest").expect("write");
        let err = read_all(&damaged).expect_err("a damaged binary G-code is refused");
        assert!(
            format!("{err:#}").contains("cannot read binary G-code"),
            "{err:#}"
        );
        // One stored G-code block (CRC-32 checked).
        let mut block = vec![1, 0, 0, 0, 6, 0, 0, 0, 0, 0];
        block.extend_from_slice(b"G1 X1\n");
        let crc = gantry_core::proto::crc::crc32(&block);
        let mut file = b"GCDE\x01\x00\x00\x00\x01\x00".to_vec();
        file.extend_from_slice(&block);
        file.extend_from_slice(&crc.to_le_bytes());
        let binary = dir.join("named-as-text.gcode");
        std::fs::write(&binary, &file).expect("write");
        assert_eq!(read_all(&binary).expect("decodes"), "G1 X1\n");
        let text = dir.join("part.gcode");
        std::fs::write(&text, b"G1 X1\n").expect("write");
        assert_eq!(
            read_all(&text).expect("reads"),
            "G1 X1\n",
            "read from the first byte"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn config_warnings_name_file_line_and_kind() {
        let text = "[printer]\nkinematics: none\nmax_velocity: 300\nmax_accel: 3000\n\
                    max_acel: 3000\n[foo_bar]\nx: 1\n[tmc2209 stepper_x]\nuart_pin: PA1\n";
        let config = Config::parse(text, "printer.cfg").expect("config");
        Printer::for_planning(&config).expect("the planner builds");
        let notices = warn_config(&config).expect("stderr");
        let json = notices_json(&notices);
        assert_eq!(
            json,
            serde_json::json!([
                {
                    "file": "printer.cfg",
                    "line": 5,
                    "kind": "unknown_option",
                    "message": "Option 'max_acel' is not valid in section 'printer'",
                },
                {
                    "file": "printer.cfg",
                    "line": 6,
                    "kind": "unknown_section",
                    "message": "Section 'foo_bar' is not a valid config section",
                },
            ])
        );
    }

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

    #[test]
    fn a_streamed_batch_writes_what_a_whole_run_encodes() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let case = fixtures.join("oracle-extra/r_prusa_m486_voron");
        let dict_name = std::fs::read_to_string(case.join("dict")).expect("dict names a file");
        let dict_path = fixtures.join("oracle/dict").join(dict_name.trim());
        let output =
            std::env::temp_dir().join(format!("gantry-batch-stream-{}.serial", std::process::id()));
        let args = BatchArgs {
            config: case.join("printer.cfg"),
            dict: vec![dict_path.display().to_string()],
            input: case.join("input.gcode"),
            output: output.clone(),
            bench: false,
            keep_going: false,
        };
        run_batch(&args).expect("batch runs");
        let streamed = std::fs::read(&output).expect("output written");
        let _ = std::fs::remove_file(&output);

        let config = gantry_core::printer_config::load(&args.config).expect("config");
        let dict = read_dictionary(&dict_path).expect("dictionary");
        let mut printer = Printer::new(&config, &[("mcu", &dict)]).expect("printer");
        let gcode = std::fs::read(&args.input).expect("input");
        assert!(gcode.len() > 4 * BATCH_READ_SIZE);
        printer.run_batch(&gcode).expect("batch");
        let (config_phase, messages) = printer.take_output(0);
        let whole = gantry_core::motion::output::encode_stream(&dict, &config_phase, &messages)
            .expect("encodes");
        assert!(streamed == whole, "the streamed output differs");
    }

    /// A G-code error ends the run where Klipper's batch mode ends (the oracle test
    /// t_error_exit compares that stream with Klipper's): the run fails, naming the line and
    /// `--keep-going`, and keeps the output; `--keep-going` runs the rest of the file.
    #[test]
    fn a_gcode_error_ends_the_batch_as_in_klipper() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let case = fixtures.join("oracle-extra/t_error_exit");
        let output =
            std::env::temp_dir().join(format!("gantry-batch-error-{}.serial", std::process::id()));
        let mut args = BatchArgs {
            config: case.join("printer.cfg"),
            dict: vec![
                fixtures
                    .join("oracle/dict/stm32f446.dict")
                    .display()
                    .to_string(),
            ],
            input: case.join("input.gcode"),
            output: output.clone(),
            bench: false,
            keep_going: false,
        };
        let err = run_batch(&args).expect_err("the G-code has an error");
        let message = format!("{err:#}");
        assert!(message.contains("line 84"), "{message}");
        assert!(message.contains("--keep-going"), "{message}");
        let stopped = std::fs::read(&output).expect("the output is kept");
        let dict = read_dictionary(&fixtures.join("oracle/dict/stm32f446.dict")).expect("dict");
        let steps = |stream: &[u8]| {
            gantry_core::motion::steptrace::Trace::from_stream(&dict, stream)
                .expect("decodes")
                .total_steps()
        };
        let klipper = std::fs::read(case.join("output.serial")).expect("Klipper's stream");
        assert_eq!(steps(&stopped), steps(&klipper));
        args.keep_going = true;
        run_batch(&args).expect("--keep-going runs the rest");
        let whole = std::fs::read(&output).expect("output");
        let _ = std::fs::remove_file(&output);
        assert!(steps(&whole) > steps(&stopped) + 100_000);
    }

    #[test]
    fn a_failed_batch_leaves_no_output() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let case = fixtures.join("oracle/cases/a_cartesian_moves");
        let output =
            std::env::temp_dir().join(format!("gantry-batch-fail-{}.serial", std::process::id()));
        // A dictionary that lacks `finalize_config`: the output is begun, then the config
        // phase cannot be encoded.
        let mut json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(fixtures.join("oracle/dict/atmega2560.dict"))
                .expect("dictionary"),
        )
        .expect("JSON");
        let commands = json["commands"].as_object_mut().expect("commands");
        commands.retain(|k, _| !k.starts_with("finalize_config"));
        let dict =
            std::env::temp_dir().join(format!("gantry-batch-fail-{}.dict", std::process::id()));
        std::fs::write(&dict, json.to_string()).expect("write dictionary");
        let args = BatchArgs {
            config: case.join("printer.cfg"),
            dict: vec![dict.display().to_string()],
            input: case.join("input.gcode"),
            output: output.clone(),
            bench: false,
            keep_going: false,
        };
        let err = run_batch(&args).expect_err("finalize_config cannot be encoded");
        assert!(format!("{err:#}").contains("finalize_config"), "{err:#}");
        let _ = std::fs::remove_file(&dict);
        assert!(!output.exists(), "a partial output was left: {err:#}");
    }
}
