//! The planner against real Klipper on the extra cases in tests/fixtures/oracle-extra: arcs,
//! corexy with EI shapers and pressure advance, velocity limits and factors, firmware retraction,
//! a 520 MHz MCU, Jinja macros, a delta printing arcs, a delta homing with input shaping, a
//! G-code error, temperature sensors, and excerpts of real slicer files (Orca,
//! PrusaSlicer with arcs, Bambu with an excluded object, PrusaSlicer M486 labels through a macro).
//! `v_hunt_corexy_mzv` is case 3036 of the differential hunt (hunt.py: a corexy STM32F446
//! printer with MZV on X and 2HUMP_EI on Y and pressure advance, on the first lines of the
//! Bambu corpus file), kept because it took Klipper's MZV amplitudes (its generalised train's
//! least-squares solve) and its shaper's time walk, bit for bit, to put every step on Klipper's
//! clock. `w_hunt_commands` is case 10013 of its sixth kind: a cartesian printer with an input
//! shaper, firmware retraction and pressure advance, on the first lines of the PrusaSlicer screw
//! file with speed and flow factors, velocity limits, shaper, pressure advance and retraction
//! changes, dwells, offsets and Jinja macros spliced in.
//! Each case's output.serial was written by unmodified Klipper (`make.py --run` in that folder
//! says how); the comparison is per stepper, as for the main oracle: same step count and
//! directions, every step within 25 µs, end of motion within 1 ms — and every step at exactly
//! Klipper's clock, with no more `queue_step`s than Klipper.

#![allow(clippy::print_stderr)] // ORACLE_SHOW_CONFIG prints our config phase

use std::path::PathBuf;

use gantry_motion::config::Config;
use gantry_motion::output::encode_stream;
use gantry_motion::printer::Printer;
use gantry_motion::steptrace::{Trace, compare};
use gantry_proto::Dictionary;

mod common;
use common::{assert_close_to_klipper, assert_startup_matches};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn check(case: &str) {
    check_dir(case, &fixtures().join("oracle-extra").join(case), None);
}

/// Runs `dir`'s case as Klipper's batch mode does — stopping at the read with the first
/// G-code error — and compares the stream with Klipper's. `error_exit`: the line of the
/// error the case must stop at (`None`: no error at all).
fn check_dir(case: &str, dir: &std::path::Path, error_exit: Option<u32>) {
    let read =
        |name: &str| std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{case}/{name}: {e}"));
    let dict_name = String::from_utf8(read("dict")).expect("dict names a file");
    let dict_text = std::fs::read_to_string(fixtures().join("oracle/dict").join(dict_name.trim()))
        .expect("dictionary");
    let dict = Dictionary::from_json(&dict_text).expect("valid dictionary");
    let cfg_text = String::from_utf8(read("printer.cfg")).expect("utf-8 config");
    let config = Config::parse(&cfg_text, "printer.cfg").expect("config parses");
    let mut printer = Printer::new(&config, &[("mcu", &dict)]).expect("printer builds");
    printer.stop_batch_on_error(true);
    printer.emulate_batch_homing(true);
    printer.run_batch(&read("input.gcode")).expect("batch runs");
    let errors: Vec<_> = printer
        .responses
        .iter()
        .filter(|r| r.text.starts_with("!!"))
        .collect();
    match error_exit {
        None => assert!(errors.is_empty(), "{case}: G-code errors {errors:?}"),
        Some(line) => {
            assert_eq!(printer.batch_error_exit, Some(line), "{case}: {errors:?}");
            assert_eq!(errors.first().map(|e| e.line), Some(line), "{case}");
        }
    }
    let startup = printer.mcus[0].startup_cmds.clone();
    let (config_phase, messages) = printer.take_output(0);
    if std::env::var_os("ORACLE_SHOW_CONFIG").is_some() {
        eprintln!("{}\n{}", config_phase.join("\n"), startup.join("\n"));
    }
    if let Some(path) = std::env::var_os("ORACLE_WRITE_OURS") {
        let ours = encode_stream(&dict, &config_phase, &messages).expect("stream encodes");
        std::fs::write(path, ours).expect("write our stream");
    }
    let ours = encode_stream(&dict, &config_phase, &messages).expect("stream encodes");
    // The config phase, oids and CRC included, and the startup commands after it (each heater's
    // query_analog_in, PWM start values) are Klipper's message for message.
    let theirs = read("output.serial");
    assert_startup_matches(case, &dict, &config_phase, &startup, &ours, &theirs);
    let freq = dict.clock_freq().expect("CLOCK_FREQ");
    let expected = Trace::from_stream(&dict, &read("output.serial")).expect("oracle trace");
    let actual = Trace::from_stream(&dict, &ours).expect("our stream decodes");
    let cmp = compare(&expected, &actual, freq, freq);
    assert!(cmp.passes(), "{case}:\n{cmp}");
    assert_close_to_klipper(case, &expected, &actual);
    assert_eq!(expected.total_steps(), actual.total_steps(), "{case}");
}

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                check(stringify!($name));
            }
        )*
    };
}

cases!(
    h_arcs,
    i_corexy_ei_pa,
    j_velocity_factors,
    k_firmware_retraction,
    l_stm32h723_520mhz,
    m_macros,
    n_delta_arcs_pa,
    o_orca_k1max,
    p_prusa_screw_arcs,
    q_bambu_exclude,
    r_prusa_m486_voron,
    s_temperature_sensors,
    u_delta_shaper_home,
    v_hunt_corexy_mzv,
    w_hunt_commands,
);

/// A G-code error in batch mode: Klipper stops at the end of the read holding it (its flush
/// timer runs once more), skips the exit sequence and never runs the rest of the file. The
/// K1 Max config's `max_extrude_cross_section` rejects the Cura file's purge moves from line
/// 84 on; Klipper's stream ends with the motion queued by then (17 errors in its log, the
/// same as here), and the 450 lines after the first read are not run.
#[test]
fn t_error_exit() {
    let dir = fixtures().join("oracle-extra").join("t_error_exit");
    check_dir("t_error_exit", &dir, Some(84));
}

/// The planner builds for every real printer config in tests/fixtures/klipper-config, except
/// fragments without a `[printer]` section, kinematics it does not implement yet, and pin chips
/// of special boards; each refusal is a clear config error.
#[test]
fn the_planner_builds_for_real_printer_configs() {
    let dir = fixtures().join("klipper-config");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .expect("configs")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "cfg"))
        .collect();
    names.sort();
    let mut built = 0;
    for path in &names {
        let text = std::fs::read_to_string(path).expect("read");
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let config = Config::parse(&text, name).expect("every real config parses");
        match Printer::for_planning(&config) {
            Ok(_) => built += 1,
            Err(e) => {
                let msg = e.to_string();
                let known = msg
                    .contains("Option 'max_velocity' in section 'printer' must be specified")
                    || msg.contains("Error loading kinematics")
                    || ["vref_scaled", "replicape", "multi_pin"]
                        .iter()
                        .any(|chip| msg.contains(&format!("Unknown pin chip name '{chip}'")));
                assert!(known, "{name}: {msg}");
            }
        }
    }
    assert!(
        built >= 192,
        "only {built} of {} configs build",
        names.len()
    );
}

/// `estimate` reports the print time klippy reports at the end of batch mode ("Exiting (print
/// time …)") within 0.05 % on every oracle case (the figures from each run's log).
#[test]
fn estimates_match_klippers_print_time() {
    let cases: [(&str, f64); 17] = [
        ("oracle/cases/a_cartesian_moves", 8.385),
        ("oracle/cases/b_cartesian_shaper_pa", 14.485),
        ("oracle/cases/c_corexy", 91.062),
        ("oracle/cases/d_delta", 27.121),
        ("oracle/cases/e_cartesian_home_print_square", 214.692),
        ("oracle/cases/g_cartesian_moves_stm32f446", 8.385),
        ("oracle-extra/h_arcs", 14.235),
        ("oracle-extra/i_corexy_ei_pa", 185.830),
        ("oracle-extra/j_velocity_factors", 19.758),
        ("oracle-extra/k_firmware_retraction", 17.495),
        ("oracle-extra/l_stm32h723_520mhz", 215.186),
        ("oracle-extra/m_macros", 482.196),
        ("oracle-extra/n_delta_arcs_pa", 58.516),
        ("oracle-extra/o_orca_k1max", 1763.115),
        ("oracle-extra/p_prusa_screw_arcs", 816.902),
        ("oracle-extra/q_bambu_exclude", 118.464),
        ("oracle-extra/r_prusa_m486_voron", 253.782),
    ];
    for (case, klipper_s) in cases {
        let dir = fixtures().join(case);
        let cfg_text = std::fs::read_to_string(dir.join("printer.cfg")).expect("printer.cfg");
        let config = Config::parse(&cfg_text, "printer.cfg").expect("config parses");
        let gcode = std::fs::read(dir.join("input.gcode")).expect("input");
        let est = gantry_motion::estimate::estimate(&config, &gcode).expect("estimate");
        let rel = (est.klipper_print_time_s - klipper_s).abs() / klipper_s;
        assert!(
            rel <= 0.0005,
            "{case}: estimate {:.3} s vs Klipper {klipper_s:.3} s ({:.4} %)",
            est.klipper_print_time_s,
            rel * 100.0
        );
    }
}
