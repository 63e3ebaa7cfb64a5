//! B4/B5 benchmark: `gantry batch` on an oracle case (default: case f, the large cylinder).
//!
//! Runs what `gantry batch` runs — `Printer::new`, then the input in 4096-byte chunks through
//! `feed_batch_chunk`, each chunk's messages encoded as they come — and prints one JSON line:
//! wall time per phase, process CPU time and peak RSS (Linux, from `/proc/self`), `queue_step`
//! count (B5: Klipper sends 242,063 for case f) and an FNV-1a hash of the encoded stream, so
//! that a change can be checked for bit-identical output; `isa` names the instruction set the
//! step loops ran with (`isa::Isa::detect`: it differs between machines, so compare timings
//! only where it is the same).
//!
//! `cargo bench -p gantry-motion --bench batch [-- CASE [RUNS [MODE [COPIES]]]]`: CASE is a
//! directory name under `tests/fixtures/oracle/cases` (or a path to one); MODE `stream` (the
//! default, as `gantry batch` does it: messages are encoded after every input chunk with
//! `output::StreamEncoder`, so memory stays flat) or `collect` (the whole stream is kept, then
//! encoded: `Printer::run_batch`, `take_output`, `encode_stream`); COPIES repeats the input that
//! many times (for memory growth). `GANTRY_BENCH_PA=K` adds `pressure_advance: K` to the
//! case's `[extruder]` (the extruder's steps then come from its smoothed pressure-advance
//! position: most real prints). Plain `std::time::Instant`, no harness.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use gantry_motion::config::Config;
use gantry_motion::isa::Isa;
use gantry_motion::output::{StreamEncoder, encode_stream};
use gantry_motion::printer::{BATCH_READ_SIZE, Printer};
use gantry_motion::stepcompress::StepCommand;
use gantry_motion::toolhead::{McuCommand, McuMessage};
use gantry_proto::Dictionary;

fn oracle() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/oracle")
}

/// User + system CPU seconds of this process so far (Linux; 0 elsewhere).
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    match (ticks(11), ticks(12)) {
        // Linux reports in USER_HZ, which is 100 on every mainstream configuration.
        (Some(u), Some(s)) => (u + s) / 100.0,
        _ => 0.0,
    }
}

/// Peak resident set size of this process, MB (Linux; 0 elsewhere).
fn max_rss_mb() -> f64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return 0.0;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// FNV-1a, fed in pieces.
struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a {
    fn write(&mut self, data: &[u8]) {
        for &b in data {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

fn fnv1a(data: &[u8]) -> u64 {
    let mut h = Fnv1a::default();
    h.write(data);
    h.0
}

struct Run {
    load_s: f64,
    plan_s: f64,
    encode_s: f64,
    messages: usize,
    queue_steps: usize,
    bytes: usize,
    hash: u64,
    print_time_s: f64,
}

fn count_queue_steps(messages: &[McuMessage]) -> usize {
    messages
        .iter()
        .filter(|m| {
            matches!(
                m.command,
                McuCommand::Step {
                    message: StepCommand::QueueStep { .. },
                    ..
                }
            )
        })
        .count()
}

fn run_case(
    dir: &Path,
    dict: &Dictionary,
    stream: bool,
    copies: usize,
    pressure_advance: Option<f64>,
) -> Result<Run, String> {
    let t0 = Instant::now();
    let mut cfg_text =
        std::fs::read_to_string(dir.join("printer.cfg")).map_err(|e| e.to_string())?;
    if let Some(k) = pressure_advance {
        if !cfg_text.contains("[extruder]\n") {
            return Err("GANTRY_BENCH_PA: the case has no [extruder] section".into());
        }
        cfg_text = cfg_text.replacen(
            "[extruder]\n",
            &format!("[extruder]\npressure_advance: {k}\n"),
            1,
        );
    }
    let one = std::fs::read(dir.join("input.gcode")).map_err(|e| e.to_string())?;
    let gcode = one.repeat(copies);
    drop(one);
    let config = Config::parse(&cfg_text, "printer.cfg").map_err(|e| e.to_string())?;
    let mut printer = Printer::new(&config, &[("mcu", dict)]).map_err(|e| e.to_string())?;
    // As `gantry batch`: nothing reads positions back.
    printer.keep_motion_history(false);
    let t1 = Instant::now();
    if !stream {
        printer.run_batch(&gcode).map_err(|e| e.to_string())?;
        let t2 = Instant::now();
        let (config_phase, messages) = printer.take_output(0);
        let queue_steps = count_queue_steps(&messages);
        let data = encode_stream(dict, &config_phase, &messages).map_err(|e| e.to_string())?;
        let t3 = Instant::now();
        return Ok(Run {
            load_s: (t1 - t0).as_secs_f64(),
            plan_s: (t2 - t1).as_secs_f64(),
            encode_s: (t3 - t2).as_secs_f64(),
            messages: config_phase.len() + messages.len(),
            queue_steps,
            bytes: data.len(),
            hash: fnv1a(&data),
            print_time_s: printer.toolhead.print_time,
        });
    }
    // Streaming: the config phase first, then each chunk's messages as they come; the bytes
    // go to a hash and a counter (a file, in a real run), so nothing grows with the input.
    let mut enc = StreamEncoder::new(dict).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let (mut hash, mut bytes, mut index, mut queue_steps) = (Fnv1a::default(), 0, 0, 0);
    let config_phase = printer.mcus[0].config_phase();
    for text in &config_phase {
        enc.push_text(index, text, &mut buf)
            .map_err(|e| e.to_string())?;
        index += 1;
    }
    let mut drain = |printer: &mut Printer, buf: &mut Vec<u8>, last: bool| -> Result<(), String> {
        let out = std::mem::take(&mut printer.toolhead.mcus[0].out);
        queue_steps += count_queue_steps(&out);
        enc.push_all(index, &out, buf).map_err(|e| e.to_string())?;
        index += out.len();
        if last {
            enc.finish(buf);
        }
        hash.write(buf);
        bytes += buf.len();
        buf.clear();
        // Give the emptied buffer back so that its capacity is reused.
        printer.toolhead.mcus[0].out = out;
        printer.toolhead.mcus[0].out.clear();
        Ok(())
    };
    for chunk in gcode.chunks(BATCH_READ_SIZE) {
        printer.feed_batch_chunk(chunk).map_err(|e| e.to_string())?;
        drain(&mut printer, &mut buf, false)?;
    }
    printer.finish_batch().map_err(|e| e.to_string())?;
    drain(&mut printer, &mut buf, true)?;
    let t2 = Instant::now();
    Ok(Run {
        load_s: (t1 - t0).as_secs_f64(),
        plan_s: (t2 - t1).as_secs_f64(),
        encode_s: 0.0,
        messages: index,
        queue_steps,
        bytes,
        hash: hash.0,
        print_time_s: printer.toolhead.print_time,
    })
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let case = args.first().map_or("f_large_cylinder", String::as_str);
    let runs: usize = args.get(1).and_then(|r| r.parse().ok()).unwrap_or(1).max(1);
    let mode = args.get(2).map_or("stream", String::as_str);
    let stream = mode != "collect";
    let copies: usize = args.get(3).and_then(|c| c.parse().ok()).unwrap_or(1).max(1);
    let pressure_advance: Option<f64> = std::env::var("GANTRY_BENCH_PA")
        .ok()
        .and_then(|k| k.parse().ok());
    let dir = if Path::new(case).is_dir() {
        PathBuf::from(case)
    } else {
        oracle().join("cases").join(case)
    };
    let dict_name = if case.contains("g_") {
        "stm32f446.dict"
    } else {
        "atmega2560.dict"
    };
    let mut out = std::io::stdout().lock();
    let dict = match std::fs::read_to_string(oracle().join("dict").join(dict_name))
        .map_err(|e| e.to_string())
        .and_then(|t| Dictionary::from_json(&t).map_err(|e| e.to_string()))
    {
        Ok(d) => d,
        Err(e) => {
            let _ = writeln!(
                out,
                "{{\"bench\":\"batch\",\"skipped\":\"dictionary: {e}\"}}"
            );
            return;
        }
    };
    let cpu0 = cpu_seconds();
    let wall0 = Instant::now();
    let mut best: Option<Run> = None;
    for _ in 0..runs {
        let run = match run_case(&dir, &dict, stream, copies, pressure_advance) {
            Ok(r) => r,
            Err(e) => {
                let _ = writeln!(
                    out,
                    "{{\"bench\":\"batch\",\"case\":\"{case}\",\"skipped\":\"{}\"}}",
                    e.replace('"', "'")
                );
                return;
            }
        };
        let total = |r: &Run| r.load_s + r.plan_s + r.encode_s;
        if best.as_ref().is_none_or(|b| total(&run) < total(b)) {
            best = Some(run);
        }
    }
    let Some(r) = best else { return };
    let cpu = (cpu_seconds() - cpu0) / runs as f64;
    let wall = wall0.elapsed().as_secs_f64() / runs as f64;
    let _ = writeln!(
        out,
        "{{\"bench\":\"batch\",\"case\":\"{case}\",\"mode\":\"{mode}\",\"copies\":{copies},\"runs\":{runs},\
         \"isa\":\"{}\",\"pressure_advance\":{},\
         \"load_s\":{:.4},\"plan_s\":{:.4},\
         \"encode_s\":{:.4},\"total_s\":{:.4},\"mean_wall_s\":{wall:.4},\"mean_cpu_s\":{cpu:.3},\
         \"max_rss_mb\":{:.1},\"messages\":{},\"queue_step\":{},\"output_bytes\":{},\
         \"output_fnv1a\":\"{:016x}\",\"print_time_s\":{}}}",
        Isa::detect().name(),
        pressure_advance.map_or("null".to_string(), |k| k.to_string()),
        r.load_s,
        r.plan_s,
        r.encode_s,
        r.load_s + r.plan_s + r.encode_s,
        max_rss_mb(),
        r.messages,
        r.queue_steps,
        r.bytes,
        r.hash,
        r.print_time_s,
    );
}
