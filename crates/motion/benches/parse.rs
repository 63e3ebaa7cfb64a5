//! B1 benchmark: G-code lexing throughput, splitting lines the way the planner reads them.
//!
//! The input (a file, or a corpus file repeated N times in memory; default: 50 copies of the
//! OrcaSlicer corpus file, 88 MB) is cut at `\n` ([`gantry_motion::gcode::lines`], as the
//! planner cuts its input), each line checked as UTF-8 and read with
//! [`gantry_motion::gcode::parse_command`] (the planner's klippy split). Variants: the split
//! alone, the split plus reading `G1`'s numbers as `cmd_g1` does (`X Y Z E F` read in one pass
//! over the words), and the twin's
//! [`gantry_motion::gcode::lex`]. Prints one JSON line per variant (best of RUNS).
//!
//! `cargo bench -p gantry-motion --bench parse [-- FILE [COPIES [RUNS]]]`; a missing file is
//! skipped with a message.

use std::hint::black_box;
use std::io::Write as _;
use std::time::Instant;

use gantry_motion::gcode::{Line, lex, lines, parse_command};

const DEFAULT_FILE: &str = "/work/shared/corpus/orcaslicer-2.3.0_k1max_klipper_arcs_exclude.gcode";

/// Each line of `input` as text (lossy only where it is not UTF-8), as a planner reading
/// 4 KiB chunks would get them: each chunk's complete lines are checked as UTF-8 at once.
/// A named parse routine: returns a checksum so the work is not optimised away.
type Variant = (&'static str, fn(&[u8]) -> u64);

fn for_each_line(input: &[u8], mut f: impl FnMut(&str)) {
    let mut rest = input;
    while !rest.is_empty() {
        // Up to the last newline of the next 4 KiB (or the next newline, for longer lines).
        let window = &rest[..rest.len().min(4096)];
        let cut = match window.iter().rposition(|&b| b == b'\n') {
            Some(nl) => nl + 1,
            None => rest
                .iter()
                .position(|&b| b == b'\n')
                .map_or(rest.len(), |nl| nl + 1),
        };
        let (block, tail) = rest.split_at(cut);
        rest = tail;
        let block = block.strip_suffix(b"\n").unwrap_or(block);
        match std::str::from_utf8(block) {
            Ok(text) => lines(text).for_each(&mut f),
            Err(_) => block
                .split(|&b| b == b'\n')
                .for_each(|line| f(&String::from_utf8_lossy(line))),
        }
    }
}

fn split_only(input: &[u8]) -> u64 {
    let mut n = 0u64;
    for_each_line(input, |line| n += line.len() as u64);
    n
}

fn klippy_split(input: &[u8]) -> u64 {
    let mut n = 0u64;
    for_each_line(input, |line| {
        if let Some(cmd) = parse_command(line) {
            n += cmd.name().len() as u64;
            black_box(&cmd);
        }
    });
    n
}

fn klippy_split_and_g1_numbers(input: &[u8]) -> u64 {
    let mut n = 0u64;
    let mut sum = 0.0;
    for_each_line(input, |line| {
        let Some(cmd) = parse_command(line) else {
            return;
        };
        n += 1;
        if matches!(cmd.name(), "G0" | "G1") {
            // As cmd_g1 reads them: the five letters in one pass, then each number.
            for v in cmd.letter_floats(*b"XYZEF").into_iter().flatten().flatten() {
                sum += v;
            }
        }
    });
    black_box(sum);
    n
}

fn twin_lex(input: &[u8]) -> u64 {
    let mut n = 0u64;
    for_each_line(input, |line| {
        if let Line::Classic(c) = lex(line) {
            n += c.words.len() as u64;
        }
    });
    n
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let path = args
        .first()
        .cloned()
        .or_else(|| std::env::var("GANTRY_BENCH_GCODE").ok())
        .unwrap_or_else(|| DEFAULT_FILE.to_owned());
    let copies: usize = args
        .get(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(50)
        .max(1);
    let runs: usize = args.get(2).and_then(|r| r.parse().ok()).unwrap_or(3).max(1);
    let mut out = std::io::stdout().lock();
    let one = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) => {
            let _ = writeln!(
                out,
                "{{\"bench\":\"parse\",\"skipped\":\"cannot read {path}: {e}\"}}"
            );
            return;
        }
    };
    let mut input = Vec::with_capacity(one.len() * copies);
    for _ in 0..copies {
        input.extend_from_slice(&one);
    }
    let lines = input.iter().filter(|&&b| b == b'\n').count();
    let variants: [Variant; 4] = [
        ("split_lines", split_only),
        ("parse_command", klippy_split),
        ("parse_command_g1_floats", klippy_split_and_g1_numbers),
        ("twin_lex", twin_lex),
    ];
    for (name, f) in variants {
        let mut best = f64::INFINITY;
        for _ in 0..runs {
            let t = Instant::now();
            black_box(f(black_box(&input)));
            best = best.min(t.elapsed().as_secs_f64());
        }
        let _ = writeln!(
            out,
            "{{\"bench\":\"parse\",\"variant\":\"{name}\",\"bytes\":{},\"lines\":{lines},\
             \"copies\":{copies},\"runs\":{runs},\"seconds\":{best:.4},\"mb_per_s\":{:.1},\
             \"mlines_per_s\":{:.2}}}",
            input.len(),
            input.len() as f64 / 1e6 / best,
            lines as f64 / 1e6 / best,
        );
    }
}
