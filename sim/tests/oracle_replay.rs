//! Every oracle case replays through the simulated MCU with no fault and ends where Klipper's own
//! output says: the expected positions (raw dir-bit steps per oid) and step totals below were
//! summed from the `output.txt` that Klipper's parsedump.py wrote (a decoding independent of
//! ours), and the totals equal the oracle README's table; for a, b, e and g the README lists the
//! positions too (its figures flip the sign for `!` dir pins such as stepper_y's `!PF7`).

use std::path::PathBuf;

use gantry_proto::Dictionary;
use gantry_sim::replay::replay;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/oracle")
}

fn check(case: &str, dict: &str, positions: &[(usize, i64)], total_steps: u64, step_pins: &[&str]) {
    let dict_text =
        std::fs::read_to_string(fixtures().join("dict").join(dict)).expect("dictionary");
    let dict = Dictionary::from_json(&dict_text).expect("valid dictionary");
    let data =
        std::fs::read(fixtures().join("cases").join(case).join("output.serial")).expect("stream");
    let report = replay(&dict, &data);
    assert_eq!(report.fault, None, "{case}");
    assert!(
        report.stream_problems.is_empty(),
        "{case}: {:?}",
        report.stream_problems
    );
    assert!(report.config_crc.is_some(), "{case}: finalize_config seen");
    let got: Vec<(usize, i64)> = report
        .steppers
        .iter()
        .map(|s| (s.oid, s.position))
        .collect();
    assert_eq!(got, positions, "{case}: final positions by oid");
    assert_eq!(
        report.steppers.iter().map(|s| s.steps).sum::<u64>(),
        total_steps,
        "{case}: steps"
    );
    let pins: Vec<&str> = report
        .steppers
        .iter()
        .map(|s| s.step_pin.as_str())
        .collect();
    assert_eq!(pins, step_pins, "{case}: step pins");
}

const RAMPS_PINS: &[&str] = &["PF0", "PF6", "PL3", "PA4"];

#[test]
fn a_cartesian_moves() {
    check(
        "a_cartesian_moves",
        "atmega2560.dict",
        &[(2, 0), (5, 0), (8, 4000), (9, 0)],
        76_960,
        RAMPS_PINS,
    );
}

#[test]
fn b_cartesian_shaper_pa() {
    check(
        "b_cartesian_shaper_pa",
        "atmega2560.dict",
        &[(2, 0), (5, 0), (8, 4000), (9, 72)],
        117_076,
        RAMPS_PINS,
    );
}

#[test]
fn c_corexy() {
    check(
        "c_corexy",
        "atmega2560.dict",
        &[(2, -48_800), (5, 0), (8, -117_900), (9, 287)],
        349_801,
        RAMPS_PINS,
    );
}

#[test]
fn d_delta() {
    check(
        "d_delta",
        "atmega2560.dict",
        &[(2, 43_633), (5, 43_633), (8, 43_633), (9, 287)],
        330_716,
        RAMPS_PINS,
    );
}

#[test]
fn e_cartesian_home_print_square() {
    check(
        "e_cartesian_home_print_square",
        "atmega2560.dict",
        &[(2, -24_400), (5, 8_400), (8, -117_900), (9, 278)],
        246_592,
        RAMPS_PINS,
    );
}

#[test]
fn f_large_cylinder() {
    check(
        "f_large_cylinder",
        "atmega2560.dict",
        &[(2, -24_400), (5, 8_400), (8, -116_260), (9, 22_297)],
        7_057_619,
        RAMPS_PINS,
    );
}

#[test]
fn g_cartesian_moves_stm32f446() {
    check(
        "g_cartesian_moves_stm32f446",
        "stm32f446.dict",
        &[(2, 0), (5, 0), (8, 4000), (9, 0)],
        76_960,
        &["PF13", "PG0", "PF11", "PG4"],
    );
}

/// Case e in a world that matches its printer.cfg: the carriages end where the G-code left them
/// (homing starts from a pretend position 1.5 × the range plus 5 mm away, so X starts at 305 mm
/// and ends at 0; Y, with `!PF7`, ends at 200), batch mode never heats, and the fan was last set
/// to off.
#[test]
fn e_in_a_world() {
    let dict_text = std::fs::read_to_string(fixtures().join("dict/atmega2560.dict")).expect("dict");
    let dict = Dictionary::from_json(&dict_text).expect("valid dictionary");
    let world = gantry_sim::world::World::from_toml(
        r#"
        [[stepper]]
        name = "stepper_x"
        step_pin = "PF0"
        axis = "x"
        steps_per_mm = 80.0
        start_mm = 305.0
        endstop_pin = "PE5"

        [[stepper]]
        name = "stepper_y"
        step_pin = "PF6"
        axis = "y"
        steps_per_mm = 80.0
        dir_inverted = true
        start_mm = 305.0
        endstop_pin = "PJ1"

        [[heater]]
        name = "extruder"
        heater_pin = "PB4"
        sensor_pin = "PK5"
        power_w = 40.0
        heat_capacity_j_k = 15.0
        loss_w_k = 0.15
        sensor = "EPCOS 100K B57560G104F"

        [[fan]]
        name = "fan"
        pin = "PH6"
        "#,
        &dict,
    )
    .expect("a valid world");
    let data = std::fs::read(
        fixtures()
            .join("cases")
            .join("e_cartesian_home_print_square")
            .join("output.serial"),
    )
    .expect("stream");
    let report = gantry_sim::replay::replay_in(&dict, &data, world);
    assert_eq!(report.fault, None);
    assert_eq!(report.total_steps(), 246_592);
    let at = |name: &str| {
        report
            .carriages
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.position_mm)
    };
    assert!(
        at("stepper_x").is_some_and(|x| x.abs() < 1e-9),
        "{:?}",
        at("stepper_x")
    );
    assert!(at("stepper_y").is_some_and(|y| (y - 200.0).abs() < 1e-9));
    assert!((report.heaters[0].temperature_c - 25.0).abs() < 1e-9);
    assert_eq!(report.fans[0].duty, 0.0);
    // The replay ran the outputs to the end of the print (214.7 s).
    assert!(report.clock as f64 / 16e6 > 200.0, "{}", report.clock);
}
