//! `gantry print` against `gantry sim --pty` in real time, as a user meets it: the host connects
//! and configures the board, homes on its endstops, heats with Klipper's PID on the sim's thermal
//! model (M109 waits), prints, turns the heaters off, and the sim's carriages end where the G-code
//! said. And the safety net: a host killed mid-print (kill -9) leaves the MCU to cut the heater
//! itself once its max_duration passes without a refresh, with Klipper's shutdown message.

#![cfg(unix)]

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process killed if the test ends before it does.
struct Proc(Option<Child>);

impl Drop for Proc {
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
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Starts `gantry sim --pty DIR/tty --report DIR/report.json` and waits for its pty.
fn start_sim(dir: &Path) -> (Proc, PathBuf) {
    start_named_sim(dir, "")
}

/// Starts `gantry sim --pty DIR/{name}tty --report DIR/{name}report.json` and waits for its
/// pty.
fn start_named_sim(dir: &Path, name: &str) -> (Proc, PathBuf) {
    let tty = dir.join(format!("{name}tty"));
    let sim = Proc(Some(
        gantry()
            .args(["sim", "--pty"])
            .arg(&tty)
            .arg("--report")
            .arg(dir.join(format!("{name}report.json")))
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
    (sim, tty)
}

/// `gantry sim --example-config` with its `serial:` at `tty`.
fn write_config(dir: &Path, tty: &Path) -> PathBuf {
    let out = gantry()
        .args(["sim", "--example-config"])
        .output()
        .expect("gantry sim --example-config runs");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("UTF-8").replace(
        "serial: /tmp/gantry-sim",
        &format!("serial: {}", tty.display()),
    );
    let path = dir.join("printer.cfg");
    std::fs::write(&path, text).expect("write printer.cfg");
    path
}

/// Ends the sim with SIGTERM (it writes its report) and reads the report.
fn stop_sim(sim: Proc, dir: &Path) -> serde_json::Value {
    stop_named_sim(sim, dir, "")
}

/// [`stop_sim`] for [`start_named_sim`]'s sim.
fn stop_named_sim(mut sim: Proc, dir: &Path, name: &str) -> serde_json::Value {
    let mut child = sim.0.take().expect("running");
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let status = child.wait().expect("the sim exits");
    assert!(status.success(), "gantry sim exited with {status}");
    let text = std::fs::read_to_string(dir.join(format!("{name}report.json")))
        .expect("the report was written");
    serde_json::from_str(&text).expect("JSON")
}

fn carriage(report: &serde_json::Value, axis: &str) -> f64 {
    report["carriages"]
        .as_array()
        .expect("carriages")
        .iter()
        .find(|c| c["axis"] == axis)
        .and_then(|c| c["position_mm"].as_f64())
        .unwrap_or_else(|| panic!("no {axis} carriage in {report}"))
}

fn heater<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["heaters"]
        .as_array()
        .expect("heaters")
        .iter()
        .find(|h| h["name"] == name)
        .unwrap_or_else(|| panic!("no heater {name} in {report}"))
}

#[test]
fn gantry_print_homes_heats_and_prints_on_the_simulated_board() {
    let dir = temp_dir("live-print");
    let (sim, tty) = start_sim(&dir);
    let config = write_config(&dir, &tty);
    let gcode = dir.join("square.gcode");
    std::fs::write(
        &gcode,
        "G28\nM140 S30\nM109 S50\nG90\nM83\nG1 Z0.3 F600\nG1 X60 Y60 F6000\n\
         G1 X100 Y60 E1.6 F3000\nG1 X100 Y100 E1.6\nG1 X60 Y100 E1.6\nG1 X60 Y60 E1.6\n\
         G1 Z5 F600\nG1 X30 Y140 F6000\n",
    )
    .expect("write the G-code");
    let out = gantry()
        .args(["print", "--no-history", "--timeout", "20", "--config"])
        .arg(&config)
        .arg(&gcode)
        .output()
        .expect("gantry print runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "gantry print failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("Configured MCU 'mcu'"), "{stdout}");
    assert!(stdout.contains("Done: 13 lines"), "{stdout}");
    assert!(stdout.contains("6.4 mm of filament"), "{stdout}");
    let report = stop_sim(sim, &dir);
    assert_eq!(report["shutdown"], serde_json::Value::Null, "{report}");
    // Where the last move put the toolhead, to the step.
    assert!((carriage(&report, "x") - 30.0).abs() < 1e-9, "{report}");
    assert!((carriage(&report, "y") - 140.0).abs() < 1e-9, "{report}");
    assert!((carriage(&report, "z") - 5.0).abs() < 1e-9, "{report}");
    // M109 held the hotend at its target; at the end the heaters were turned off.
    let hotend = heater(&report, "extruder");
    assert!(
        hotend["temperature_c"].as_f64().expect("°C") > 45.0,
        "{hotend}"
    );
    assert_eq!(hotend["duty"], 0.0, "{hotend}");
}

/// A printer with two boards, each a `gantry sim` behind its own pty: the mainboard (X, Y, Z,
/// bed) and a toolboard (extruder, hotend, fan). `gantry print` connects and configures both,
/// homes, heats the toolboard's hotend, prints with the toolboard's extruder in step with the
/// mainboard's axes, and both boards end where the G-code said, without a shutdown.
#[test]
fn gantry_print_drives_a_mainboard_and_a_toolboard() {
    let dir = temp_dir("live-print-toolboard");
    let (main, main_tty) = start_named_sim(&dir, "main-");
    let (tool, tool_tty) = start_named_sim(&dir, "tool-");
    let text = include_str!("fixtures/toolboard.cfg")
        .replace(
            "serial: gantry-sim-toolboard",
            &format!("serial: {}", tool_tty.display()),
        )
        .replace(
            "serial: gantry-sim\n",
            &format!("serial: {}\n", main_tty.display()),
        );
    let config = dir.join("printer.cfg");
    std::fs::write(&config, text).expect("write printer.cfg");
    let gcode = dir.join("square.gcode");
    std::fs::write(
        &gcode,
        "G28\nM109 S50\nG90\nM83\nG1 Z0.3 F600\nG1 X60 Y60 F6000\n\
         G1 X100 Y60 E1.6 F3000\nG1 X100 Y100 E1.6\nG1 X60 Y100 E1.6\nG1 X60 Y60 E1.6\n\
         G1 Z5 F600\nG1 X30 Y140 F6000\n",
    )
    .expect("write the G-code");
    let out = gantry()
        .args(["print", "--no-history", "--timeout", "20", "--config"])
        .arg(&config)
        .arg(&gcode)
        .output()
        .expect("gantry print runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "gantry print failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("Configured MCU 'toolboard'"), "{stdout}");
    assert!(stdout.contains("6.4 mm of filament"), "{stdout}");
    let main = stop_named_sim(main, &dir, "main-");
    let tool = stop_named_sim(tool, &dir, "tool-");
    for report in [&main, &tool] {
        assert_eq!(report["shutdown"], serde_json::Value::Null, "{report}");
    }
    assert!((carriage(&main, "x") - 30.0).abs() < 1e-9, "{main}");
    assert!((carriage(&main, "y") - 140.0).abs() < 1e-9, "{main}");
    assert!((carriage(&main, "z") - 5.0).abs() < 1e-9, "{main}");
    // 6.4 mm of filament at 3200 / 33.5 steps per mm, on the toolboard's extruder.
    let e = carriage(&tool, "e");
    assert!((e - 6.4).abs() < 0.011, "extruder at {e} mm: {tool}");
    // The hotend is the toolboard's: heated, then off at the end; the mainboard's is untouched.
    let hotend = heater(&tool, "extruder");
    assert!(
        hotend["temperature_c"].as_f64().expect("°C") > 45.0,
        "{hotend}"
    );
    assert_eq!(hotend["duty"], 0.0, "{hotend}");
    let unused = heater(&main, "extruder");
    assert!(
        unused["temperature_c"].as_f64().expect("°C") < 30.0,
        "{unused}"
    );
}

#[test]
fn a_host_killed_mid_print_leaves_the_mcu_to_cut_the_heater() {
    let dir = temp_dir("live-kill");
    let (sim, tty) = start_sim(&dir);
    let config = write_config(&dir, &tty);
    let gcode = dir.join("heat.gcode");
    // Heat and hold: the heater is on (PWM refreshed by the host) when the host dies.
    std::fs::write(&gcode, "M104 S120\nG4 P60000\n").expect("write the G-code");
    let mut host = Proc(Some(
        gantry()
            .args(["print", "--no-history", "--timeout", "20", "--config"])
            .arg(&config)
            .arg(&gcode)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("gantry print starts"),
    ));
    let stdout = host
        .0
        .as_mut()
        .and_then(|c| c.stdout.take())
        .expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let connected = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.contains("Configured MCU 'mcu'"));
    assert!(connected, "gantry print did not connect");
    // Heating for a while, then kill -9 the host.
    std::thread::sleep(Duration::from_secs(4));
    let mut child = host.0.take().expect("running");
    child.kill().expect("SIGKILL the host");
    let _ = child.wait();
    // The heater pin's max_duration (3 s) runs out without a refresh: the MCU shuts down and
    // turns the heater off by itself.
    std::thread::sleep(Duration::from_secs(5));
    let report = stop_sim(sim, &dir);
    assert_eq!(
        report["shutdown"], "Missed scheduling of next digital out event",
        "{report}"
    );
    let hotend = heater(&report, "extruder");
    assert_eq!(hotend["duty"], 0.0, "{hotend}");
    assert!(
        hotend["temperature_c"].as_f64().expect("°C") > 30.0,
        "it was heating: {hotend}"
    );
}

/// `gantry serve --printer printer.cfg`: a windowless host for a board (a print farm's), here
/// `gantry sim` behind a pty. The API serves it as printer `klipper:PATH`, ready, and runs G-code
/// on it; SIGTERM stops the host cleanly. A printer.cfg that cannot be read stops `serve` at once,
/// saying why.
#[test]
fn gantry_serve_drives_the_boards_of_a_printer_cfg() {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;

    let missing = gantry()
        .args(["serve", "--printer", "/nonexistent/printer.cfg"])
        .env("GANTRY_MDNS", "off")
        .output()
        .expect("gantry serve runs");
    assert!(!missing.status.success());
    let why = String::from_utf8_lossy(&missing.stderr);
    assert!(
        why.contains("Cannot read /nonexistent/printer.cfg"),
        "{why}"
    );

    let dir = temp_dir("serve-printer");
    let (sim, tty) = start_sim(&dir);
    let config = write_config(&dir, &tty);
    let mut serve = Proc(Some(
        gantry()
            .args(["serve", "--printer"])
            .arg(&config)
            .env("GANTRY_MDNS", "off")
            .env("GANTRY_DATA_DIR", dir.join("data"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("gantry serve starts"),
    ));
    let stdout = serve
        .0
        .as_mut()
        .and_then(|c| c.stdout.take())
        .expect("piped");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("the endpoint line");
    let endpoint: serde_json::Value = serde_json::from_str(&line).expect("JSON endpoint");
    let url = format!(
        "{}?token={}",
        endpoint["ws_url"].as_str().expect("ws_url"),
        endpoint["token"].as_str().expect("token")
    );
    let id = format!("klipper:{}", config.display());
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let (fleet, position) = runtime.block_on(async {
        let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .expect("connects");
        let mut next_id = 0;
        let mut call = async |method: &str, params: serde_json::Value| {
            next_id += 1;
            let request = serde_json::json!({"jsonrpc": "2.0", "id": next_id, "method": method, "params": params});
            ws.send(Message::text(request.to_string())).await.expect("send");
            loop {
                let msg = tokio::time::timeout(Duration::from_secs(60), ws.next())
                    .await
                    .expect("an answer in time")
                    .expect("open")
                    .expect("a frame");
                if let Message::Text(text) = msg {
                    let reply: serde_json::Value = serde_json::from_str(text.as_str()).expect("JSON");
                    if reply["id"] == next_id {
                        return reply;
                    }
                }
            }
        };
        let fleet = call("printers.fleet", serde_json::json!({})).await;
        let script = serde_json::json!({"printer": id, "script": "G28\nG1 X25 Y35 F6000\nM400"});
        let done = call("printer.gcode.script", script).await;
        assert!(done["error"].is_null(), "{done}");
        let query = serde_json::json!({"printer": id, "objects": {"toolhead": ["position"]}});
        let position = call("printer.objects.query", query).await;
        (fleet, position)
    });
    let entry = fleet["result"]["printers"]
        .as_array()
        .and_then(|l| l.iter().find(|p| p["id"] == id.as_str()))
        .cloned()
        .unwrap_or_else(|| panic!("{id} not in {fleet}"));
    assert_eq!(entry["kind"], "local", "{entry}");
    assert_eq!(entry["state"], "ready", "{entry}");
    let pos = &position["result"]["status"]["toolhead"]["position"];
    assert_eq!(
        (pos[0].as_f64(), pos[1].as_f64()),
        (Some(25.0), Some(35.0)),
        "{position}"
    );
    let mut child = serve.0.take().expect("running");
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let status = child.wait().expect("serve exits");
    assert!(status.success(), "gantry serve exited with {status}");
    let report = stop_sim(sim, &dir);
    assert_eq!(report["shutdown"], serde_json::Value::Null, "{report}");
    assert!((carriage(&report, "x") - 25.0).abs() < 1e-9, "{report}");
}
