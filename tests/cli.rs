//! The `gantry` command line as a user meets it: help, version, and clear errors on bad input.

use std::process::Command;

fn gantry(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(args)
        .output()
        .expect("gantry runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_lists_the_subcommands() {
    let (ok, stdout, _) = gantry(&["--help"]);
    assert!(ok);
    for sub in ["twin", "serve", "parsedump", "sim", "version"] {
        assert!(
            stdout.lines().any(|l| l.trim_start().starts_with(sub)),
            "--help lacks {sub}:\n{stdout}"
        );
    }
}

#[test]
fn version_in_text_and_json() {
    let (ok, stdout, _) = gantry(&["version"]);
    assert!(ok);
    assert_eq!(
        stdout.trim(),
        format!("gantry {}", env!("CARGO_PKG_VERSION"))
    );
    let (ok, stdout, _) = gantry(&["version", "--json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    let (ok, stdout, _) = gantry(&["--version"]);
    assert!(ok);
    assert!(stdout.contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn twin_reports_a_missing_file_clearly() {
    let (ok, _, stderr) = gantry(&[
        "twin",
        "/nonexistent/part.gcode",
        "--screenshot",
        "/tmp/never.png",
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("cannot read G-code file /nonexistent/part.gcode"),
        "unclear error: {stderr}"
    );
}

#[test]
fn twin_reports_a_bad_printer_config_with_its_place() {
    let dir = std::env::temp_dir().join(format!("gantry-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let cfg = dir.join("printer.cfg");
    // The simulated board's config, one value broken: the twin builds the whole printer (as
    // klippy does), so the rest must be complete for the stepper's error to be the first.
    let (ok, example, _) = gantry(&["sim", "--example-config"]);
    assert!(ok, "the example config");
    let mut section = String::new();
    let mut broken_line = 0;
    let text: Vec<String> = example
        .lines()
        .enumerate()
        .map(|(i, line)| {
            if line.starts_with('[') {
                section = line.to_owned();
            }
            if section == "[stepper_x]" && line.starts_with("position_max") {
                broken_line = i + 1;
                "position_max: wide".to_owned()
            } else {
                line.to_owned()
            }
        })
        .collect();
    assert!(broken_line > 0, "stepper_x has a position_max: {example}");
    std::fs::write(&cfg, text.join("\n")).expect("write");
    let (ok, _, stderr) = gantry(&[
        "twin",
        "--config",
        cfg.to_str().expect("utf-8"),
        "--screenshot",
        "/tmp/never.png",
    ]);
    assert!(!ok);
    let expected = format!(
        "printer.cfg:{broken_line}: Unable to parse option 'position_max' in section 'stepper_x'"
    );
    assert!(stderr.contains(&expected), "unclear error: {stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_sizes_are_refused_by_the_parser() {
    let (ok, _, stderr) = gantry(&["twin", "--size", "big", "--screenshot", "/tmp/never.png"]);
    assert!(!ok);
    assert!(stderr.contains("WIDTHxHEIGHT"), "{stderr}");
}

#[test]
fn sim_replay_reports_where_the_steppers_ended() {
    let oracle = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/oracle");
    let dict = oracle.join("dict/atmega2560.dict");
    let serial = oracle.join("cases/b_cartesian_shaper_pa/output.serial");
    let (ok, stdout, stderr) = gantry(&[
        "sim",
        "replay",
        "--json",
        "--dict",
        dict.to_str().expect("utf-8"),
        serial.to_str().expect("utf-8"),
    ]);
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(v["fault"], serde_json::Value::Null);
    let positions: Vec<i64> = v["steppers"]
        .as_array()
        .expect("steppers")
        .iter()
        .map(|s| s["position"].as_i64().expect("int"))
        .collect();
    assert_eq!(
        positions,
        [0, 0, 4000, 72],
        "X, Y, Z and extruder, as the oracle README lists"
    );
}

#[test]
fn sim_replay_bench_times_the_print_alike_at_16_and_180_mhz() {
    // Cases a and g are the same moves on a 16 MHz AVR and a 180 MHz STM32: the last step must
    // come at the same print time (the README gives 8.385 s for the whole print, dwell included).
    let oracle = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/oracle");
    let bench = |case: &str, dict: &str| -> serde_json::Value {
        let (ok, stdout, stderr) = gantry(&[
            "sim",
            "replay",
            "--bench",
            "--dict",
            oracle.join("dict").join(dict).to_str().expect("utf-8"),
            oracle
                .join("cases")
                .join(case)
                .join("output.serial")
                .to_str()
                .expect("utf-8"),
        ]);
        assert!(ok, "{stderr}");
        serde_json::from_str(&stdout).expect("JSON")
    };
    let a = bench("a_cartesian_moves", "atmega2560.dict");
    let g = bench("g_cartesian_moves_stm32f446", "stm32f446.dict");
    let (ta, tg) = (
        a["print_time_s"].as_f64().expect("a time"),
        g["print_time_s"].as_f64().expect("g time"),
    );
    assert!((ta - tg).abs() < 1e-6, "16 MHz {ta} s vs 180 MHz {tg} s");
    assert!(ta > 7.9 && ta < 8.385, "last step at {ta} s");
    assert_eq!(a["steps"], 76_960);
    assert!(a["steps_per_s"].as_f64().expect("rate") > 0.0);
}
