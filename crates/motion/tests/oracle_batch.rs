//! The planner against real Klipper: every oracle case (tests/fixtures/oracle) run through
//! `Printer::run_batch`, written as a Klipper message stream and compared per stepper with
//! klippy's own batch output — same step count and directions, every step within 25 µs, end of
//! motion within 1 ms, every step at exactly Klipper's clock (step times are solved in closed
//! form where Klipper iterates, but only where that gives the clock Klipper's search gives), and
//! no more `queue_step`s than Klipper. Also:
//! the config phase (oids, commands, CRC) and the startup commands after it (each heater's
//! `query_analog_in`, PWM start values) are Klipper's message for message.

use std::path::PathBuf;

use gantry_motion::config::Config;
use gantry_motion::output::encode_stream;
use gantry_motion::printer::Printer;
use gantry_motion::steptrace::{Trace, compare};
use gantry_proto::Dictionary;

mod common;
use common::{assert_close_to_klipper, assert_startup_matches};

fn oracle() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/oracle")
}

fn dictionary(case: &str) -> Dictionary {
    let name = if case.starts_with("g_") {
        "stm32f446.dict"
    } else {
        "atmega2560.dict"
    };
    let text = std::fs::read_to_string(oracle().join("dict").join(name)).expect("dictionary");
    Dictionary::from_json(&text).expect("valid dictionary")
}

/// What a case run gives: our stream, Klipper's stream, the dictionary, our config phase and our
/// startup commands.
struct Run {
    ours: Vec<u8>,
    theirs: Vec<u8>,
    dict: Dictionary,
    config_phase: Vec<String>,
    startup: Vec<String>,
}

/// Runs `case`.
fn run(case: &str) -> Run {
    let dir = oracle().join("cases").join(case);
    let cfg_text = std::fs::read_to_string(dir.join("printer.cfg")).expect("printer.cfg");
    let gcode = std::fs::read(dir.join("input.gcode")).expect("input.gcode");
    let theirs = std::fs::read(dir.join("output.serial")).expect("output.serial");
    let dict = dictionary(case);
    let config = Config::parse(&cfg_text, "printer.cfg").expect("config parses");
    let mut printer = Printer::new(&config, &[("mcu", &dict)]).expect("printer builds");
    printer.stop_batch_on_error(true);
    printer.emulate_batch_homing(true);
    printer.run_batch(&gcode).expect("batch runs");
    let errors: Vec<_> = printer
        .responses
        .iter()
        .filter(|r| r.text.starts_with("!!"))
        .collect();
    assert!(errors.is_empty(), "{case}: G-code errors {errors:?}");
    let startup = printer.mcus[0].startup_cmds.clone();
    let (config_phase, messages) = printer.take_output(0);
    let ours = encode_stream(&dict, &config_phase, &messages).expect("stream encodes");
    Run {
        ours,
        theirs,
        dict,
        config_phase,
        startup,
    }
}

fn check(case: &str) {
    let Run {
        ours,
        theirs,
        dict,
        config_phase,
        startup,
    } = run(case);
    // The config phase, oids and CRC included, and the startup commands are Klipper's.
    assert_startup_matches(case, &dict, &config_phase, &startup, &ours, &theirs);
    let freq = dict.clock_freq().expect("CLOCK_FREQ");
    let expected = Trace::from_stream(&dict, &theirs).expect("oracle trace");
    let actual = Trace::from_stream(&dict, &ours).expect("our stream decodes");
    let cmp = compare(&expected, &actual, freq, freq);
    assert!(cmp.passes(), "{case}:\n{cmp}");
    assert_close_to_klipper(case, &expected, &actual);
    assert_eq!(expected.total_steps(), actual.total_steps(), "{case}");
}

#[test]
fn a_cartesian_moves() {
    check("a_cartesian_moves");
}

#[test]
fn b_cartesian_shaper_pa() {
    check("b_cartesian_shaper_pa");
}

#[test]
fn c_corexy() {
    check("c_corexy");
}

#[test]
fn d_delta() {
    check("d_delta");
}

#[test]
fn e_cartesian_home_print_square() {
    check("e_cartesian_home_print_square");
}

#[test]
fn f_large_cylinder() {
    check("f_large_cylinder");
}

#[test]
fn g_cartesian_moves_stm32f446() {
    check("g_cartesian_moves_stm32f446");
}

/// Klipper's config phase for case a: the commands Klipper sends and a `finalize_config` CRC
/// computed the way Klipper computes it (every case also compares the whole phase exactly).
#[test]
fn config_phase_has_the_commands_klipper_sends() {
    let ours = run("a_cartesian_moves").config_phase;
    assert!(ours[0].starts_with("allocate_oids count="));
    let last = ours.last().expect("finalize_config");
    assert!(last.starts_with("finalize_config crc="), "{last}");
    for pin in ["PF0", "PF6", "PL3", "PA4"] {
        assert!(
            ours.iter()
                .any(|c| c.starts_with("config_stepper") && c.contains(&format!("step_pin={pin} "))),
            "no config_stepper for {pin}: {ours:?}"
        );
    }
    for expected in [
        "config_endstop oid=0 pin=PE5 pull_up=1",
        "config_trsync oid=1",
        "config_stepper oid=2 step_pin=PF0 dir_pin=PF1 invert_step=0 step_pulse_ticks=32",
    ] {
        assert!(
            ours.iter().any(|c| c == expected),
            "missing {expected}: {ours:?}"
        );
    }
    let text = ours[..ours.len() - 1].join("\n");
    let crc = gantry_proto::crc::crc32(text.as_bytes());
    assert_eq!(*last, format!("finalize_config crc={crc}"));
}
