//! `gantry connect` against `gantry sim --pty`, in real time, as a user meets it: the host opens
//! the pty named by printer.cfg's `serial:`, identifies the board, synchronises clocks and sends
//! the config phase built from printer.cfg; a second connect finds the MCU running the same
//! configuration and reuses it (and, watching, reads the heaters' temperatures through the ADC
//! queries it starts); a connect with another printer.cfg makes the host reset the board
//! (the sim's `reset`, as klippy's FIRMWARE_RESTART does) and configure it afresh.

#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The sim process, killed if the test fails before it ends it (so no stray process keeps the
/// test's pipes open).
struct Sim(Option<std::process::Child>);

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn gantry() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gantry"))
}

fn temp_dir(name: &str) -> PathBuf {
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// `gantry sim --example-config` with its `serial:` pointed at `tty` and `(from, to)` replaced.
fn write_config(path: &Path, tty: &Path, edit: Option<(&str, &str)>) {
    let out = gantry()
        .args(["sim", "--example-config"])
        .output()
        .expect("gantry sim --example-config runs");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    let text = text.replace(
        "serial: /tmp/gantry-sim",
        &format!("serial: {}", tty.display()),
    );
    let text = match edit {
        Some((from, to)) => {
            assert!(text.contains(from), "the example config has {from:?}");
            text.replace(from, to)
        }
        None => text,
    };
    std::fs::write(path, text).expect("write printer.cfg");
}

fn connect(config: &Path, extra: &[&str]) -> Output {
    gantry()
        .args(["connect", "--timeout", "20", "--config"])
        .arg(config)
        .args(extra)
        .output()
        .expect("gantry connect runs")
}

fn stdout_of(out: &Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "gantry connect failed: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[test]
fn gantry_connects_configures_reuses_and_resets_the_simulated_board() {
    let dir = temp_dir("mcu-connect");
    let tty = dir.join("tty");
    let report = dir.join("report.json");
    let mut sim = Sim(Some(
        gantry()
            .args(["sim", "--pty"])
            .arg(&tty)
            .arg("--report")
            .arg(&report)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("gantry sim starts"),
    ));
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::symlink_metadata(&tty).is_err() {
        assert!(Instant::now() < deadline, "no pty link within 20 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    let config = dir.join("printer.cfg");
    write_config(&config, &tty, None);

    let first = stdout_of(&connect(&config, &[]));
    assert!(
        first.contains("Loaded MCU 'mcu' ") && first.contains("(gantry-sim-"),
        "{first}"
    );
    assert!(first.contains("CLOCK_FREQ=16000000"), "{first}");
    assert!(
        first.contains("Configured MCU 'mcu' (1024 moves)"),
        "{first}"
    );
    // The start-up estimate of the clock is rough on a loaded machine (the in-process session
    // tests bound it); here the line must be there and say how long the board has been up.
    assert!(first.contains("MCU 'mcu' clock: up "), "{first}");

    // Reused, and with --watch the heaters' ADC queries start at the live clock: the sim's
    // thermistors at room temperature read back through Klipper's curves.
    let second = stdout_of(&connect(&config, &["--watch", "3"]));
    assert!(
        second.contains("already runs this configuration (same CRC): reused (1024 moves)"),
        "{second}"
    );
    let temps = second
        .lines()
        .rfind(|l| l.starts_with("heater_bed: "))
        .unwrap_or_else(|| panic!("no temperature line: {second}"));
    for heater in ["heater_bed", "extruder"] {
        let value: f64 = temps
            .split(&format!("{heater}: "))
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {heater} reading in {temps:?}"));
        assert!(
            (value - 25.0).abs() < 0.5,
            "{heater} at {value} °C: {temps}"
        );
    }

    // Another printer.cfg (the part fan on another pin): another CRC, so the board is reset and
    // configured afresh.
    let other = dir.join("other.cfg");
    write_config(&other, &tty, Some(("[fan]\npin: PB4", "[fan]\npin: PB5")));
    let third = stdout_of(&connect(&other, &[]));
    assert!(
        third.contains("Configured MCU 'mcu' (1024 moves)"),
        "{third}"
    );

    let mut child = sim.0.take().expect("running");
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    assert!(child.wait().expect("the sim exits").success());
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("the report")).expect("JSON");
    assert_eq!(report["shutdown"], serde_json::Value::Null);
    assert!(
        report["config_crc"].as_u64().is_some(),
        "configured at exit"
    );
}
