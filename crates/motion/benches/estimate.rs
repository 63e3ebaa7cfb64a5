//! B2 benchmark: `estimate` (the planner with step generation off) on a large G-code file.
//!
//! The input is a file path, or a corpus file repeated N times in memory (the project's
//! `orca_x50` is 50 copies of the OrcaSlicer file, 88 MB):
//!
//! `cargo bench -p gantry-motion --bench estimate [-- FILE [COPIES [RUNS]]]`, or the environment
//! variables `GANTRY_BENCH_GCODE`, `GANTRY_BENCH_COPIES` (default 50), `GANTRY_BENCH_RUNS` and
//! `GANTRY_BENCH_CFG` (a printer.cfg; default: a 350 mm cartesian with the limits the
//! klipper_estimator anchor was measured with; it has no `[gcode_arcs]`, so G2/G3 count as
//! unknown commands and the numbers stay comparable with the first measurements: give a
//! printer.cfg with `[gcode_arcs]` to plan the arcs). Without arguments it runs both corpus
//! files the goal names, from `/work/shared/corpus`; a missing file is skipped with a message.
//! Prints one JSON line per input (best of RUNS), with the estimate's totals for checking that a
//! change left the plan bit-identical.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use gantry_motion::config::Config;
use gantry_motion::estimate::estimate_assuming_homed;

/// A cartesian printer with the anchor's limits (max_velocity 300, max_accel 3000,
/// minimum_cruise_ratio 0.5, square_corner_velocity 5, Z 5 mm/s and 100 mm/s², extrude-only
/// 80 mm/s and 800 mm/s²), large enough for a K1 Max's files.
const BENCH_CFG: &str = "[printer]\nkinematics: cartesian\nmax_velocity: 300\nmax_accel: 3000\n\
    minimum_cruise_ratio: 0.5\nsquare_corner_velocity: 5\nmax_z_velocity: 5\nmax_z_accel: 100\n\
    [stepper_x]\nstep_pin: PA0\ndir_pin: PA1\nendstop_pin: PA2\nmicrosteps: 16\nrotation_distance: 40\nposition_endstop: 0\nposition_min: -10\nposition_max: 350\n\
    [stepper_y]\nstep_pin: PA3\ndir_pin: PA4\nendstop_pin: PA5\nmicrosteps: 16\nrotation_distance: 40\nposition_endstop: 0\nposition_min: -10\nposition_max: 350\n\
    [stepper_z]\nstep_pin: PA6\ndir_pin: PA7\nendstop_pin: PB0\nmicrosteps: 16\nrotation_distance: 8\nposition_endstop: 0\nposition_min: -5\nposition_max: 350\n\
    [extruder]\nstep_pin: PB1\ndir_pin: PB2\nmicrosteps: 16\nrotation_distance: 33.5\nnozzle_diameter: 0.4\nfilament_diameter: 1.75\n\
    max_extrude_only_velocity: 80\nmax_extrude_only_accel: 800\nmax_extrude_only_distance: 1000\nmax_extrude_cross_section: 1000\n\
    [mcu]\nserial: /dev/null\n";

const CORPUS: &str = "/work/shared/corpus";
const DEFAULT_FILES: [&str; 2] = [
    "orcaslicer-2.3.0_k1max_klipper_arcs_exclude.gcode",
    "cura-5.9.1_k1max_absE.gcode",
];

fn env_or<T: std::str::FromStr>(name: &str, arg: Option<&String>, default: T) -> T {
    arg.and_then(|a| a.parse().ok())
        .or_else(|| std::env::var(name).ok().and_then(|v| v.parse().ok()))
        .unwrap_or(default)
}

fn bench_file(
    out: &mut impl std::io::Write,
    config: &Config,
    path: &PathBuf,
    copies: usize,
    runs: usize,
) {
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let one = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            let _ = writeln!(
                out,
                "{{\"bench\":\"estimate\",\"file\":\"{name}\",\"skipped\":\"cannot read {}: {e}\"}}",
                path.display()
            );
            return;
        }
    };
    let mut gcode = Vec::with_capacity(one.len() * copies);
    for _ in 0..copies {
        gcode.extend_from_slice(&one);
    }
    drop(one);
    let mut best = f64::INFINITY;
    let mut result = None;
    for _ in 0..runs {
        let t = Instant::now();
        let est = estimate_assuming_homed(config, &gcode);
        best = best.min(t.elapsed().as_secs_f64());
        result = Some(est);
    }
    let est = match result {
        Some(Ok(e)) => e,
        Some(Err(e)) => {
            let _ = writeln!(
                out,
                "{{\"bench\":\"estimate\",\"file\":\"{name}\",\"error\":\"{}\"}}",
                e.to_string().replace('"', "'")
            );
            return;
        }
        None => return,
    };
    let mb = gcode.len() as f64 / 1e6;
    let errors = est
        .messages
        .iter()
        .filter(|(_, m)| m.starts_with("!!"))
        .count();
    let layer_sum: f64 = est.layers.iter().map(|l| l.time_s).sum();
    let _ = writeln!(
        out,
        "{{\"bench\":\"estimate\",\"file\":\"{name}\",\"copies\":{copies},\"runs\":{runs},\
         \"bytes\":{},\"lines\":{},\"seconds\":{best:.4},\"mb_per_s\":{:.1},\"mlines_per_s\":{:.2},\
         \"moves\":{},\"print_time_s\":{},\"filament_mm\":{},\"max_speed_mm_s\":{},\"layers\":{},\
         \"layer_time_sum_s\":{},\"messages\":{},\"errors\":{errors}}}",
        gcode.len(),
        est.lines,
        mb / best,
        f64::from(est.lines) / best / 1e6,
        est.moves,
        est.print_time_s,
        est.filament_mm,
        est.max_speed_mm_s,
        est.layers.len(),
        layer_sum,
        est.messages.len(),
    );
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let mut out = std::io::stdout().lock();
    let cfg_text = match std::env::var("GANTRY_BENCH_CFG") {
        Ok(p) => match std::fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) => {
                let _ = writeln!(
                    out,
                    "{{\"bench\":\"estimate\",\"skipped\":\"cannot read {p}: {e}\"}}"
                );
                return;
            }
        },
        Err(_) => BENCH_CFG.to_owned(),
    };
    let config = match Config::parse(&cfg_text, "printer.cfg") {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(
                out,
                "{{\"bench\":\"estimate\",\"skipped\":\"printer.cfg: {}\"}}",
                e.to_string().replace('"', "'")
            );
            return;
        }
    };
    let copies = env_or("GANTRY_BENCH_COPIES", args.get(1), 50usize).max(1);
    let runs = env_or("GANTRY_BENCH_RUNS", args.get(2), 1usize).max(1);
    let files: Vec<PathBuf> = match args
        .first()
        .cloned()
        .or_else(|| std::env::var("GANTRY_BENCH_GCODE").ok())
    {
        Some(f) => vec![PathBuf::from(f)],
        None => DEFAULT_FILES
            .iter()
            .map(|f| PathBuf::from(CORPUS).join(f))
            .collect(),
    };
    for f in &files {
        bench_file(&mut out, &config, f, copies, runs);
    }
}
