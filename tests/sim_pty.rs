//! `gantry sim --pty` and `gantry sim --tcp` as a host meets them, in real time: the host opens
//! the pty path like a USB board (or connects to the port), synchronises the link, downloads the
//! dictionary with identify, configures a stepper and queues moves; on SIGTERM the sim writes a
//! report saying where the stepper ended, where the world's carriages and heaters are, and why it
//! shut down if it did.

#![cfg(unix)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use gantry_proto::identify::Identify;
use gantry_proto::link::{HostLink, LinkEvent};
use gantry_proto::{Dictionary, Value};

/// Configures a stepper on PD7/PC5 (stepper_x of the default world), starts its clock 200 ms
/// after `clock` (a move must start in the future) and queues 3 moves: +100, +50 and -30 steps.
fn session(clock: i64) -> Vec<(&'static str, Vec<i64>)> {
    vec![
        ("allocate_oids", vec![1]),
        ("config_stepper", vec![0, 31, 21, 0, 32]),
        ("finalize_config", vec![0x00c0_ffee]),
        (
            "reset_step_clock",
            vec![0, (clock + 3_200_000) & 0xffff_ffff],
        ),
        ("set_next_step_dir", vec![0, 1]),
        ("queue_step", vec![0, 16_000, 100, 0]),
        ("queue_step", vec![0, 16_000, 50, 0]),
        ("set_next_step_dir", vec![0, 0]),
        ("queue_step", vec![0, 16_000, 30, 0]),
    ]
}

fn encode(dict: &Dictionary, name: &str, values: &[i64]) -> Vec<u8> {
    let values: Vec<Value> = values.iter().map(|v| Value::Int(*v)).collect();
    dict.encode_command(name, &values)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// A host session over `port` (a pty or a socket): identify, then the clock and `session`; returns once every
/// command is acknowledged.
fn drive<P: std::io::Read + std::io::Write + Send + 'static>(
    mut port: P,
    mut reader: P,
) -> Dictionary {
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0_u8; 1024];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let start = Instant::now();
    let mut host = HostLink::new();
    let mut identify = Identify::new();
    let mut dict: Option<Dictionary> = None;
    let mut configured_at: Option<f64> = None;
    let mut asked_at = f64::NEG_INFINITY;
    let mut out = Vec::new();
    loop {
        let now_s = start.elapsed().as_secs_f64();
        assert!(now_s < 30.0, "the session did not finish in 30 s");
        while let Ok(bytes) = rx.try_recv() {
            host.handle_input(&bytes, now_s);
        }
        while let Some(event) = host.poll_event() {
            let LinkEvent::Received { payload, .. } = event else {
                continue;
            };
            match &dict {
                None => {
                    dict = identify
                        .handle_message(&payload)
                        .expect("valid identify data");
                }
                Some(d) if configured_at.is_none() => {
                    let (id, n) = gantry_proto::vlq::decode(&payload).expect("an id");
                    let format = d.message(id.cast_signed()).expect("a known response");
                    if format.name != "clock" {
                        continue;
                    }
                    let Value::Int(clock) = format.decode(&payload[n..]).expect("decodes").0[0]
                    else {
                        panic!("clock is an integer");
                    };
                    for (cmd, args) in session(clock) {
                        host.send(encode(d, cmd, &args)).expect("fits");
                    }
                    configured_at = Some(now_s);
                }
                Some(_) => {}
            }
        }
        if host.is_synchronised() {
            match &dict {
                None => {
                    if let Some(request) = identify.poll_request(now_s) {
                        host.send(request).expect("fits");
                    }
                }
                // Responses are not retransmitted: ask again until the clock arrives.
                Some(d) if configured_at.is_none() && now_s - asked_at > 0.1 => {
                    host.send(encode(d, "get_clock", &[])).expect("fits");
                    asked_at = now_s;
                }
                Some(_) => {}
            }
        }
        host.handle_timeout(now_s);
        out.clear();
        if host.poll_transmit(now_s, &mut out) {
            port.write_all(&out).expect("write to the sim");
        }
        if configured_at.is_some_and(|t| now_s > t + 0.5) && host.pending_messages() == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    dict.expect("identify finished")
}

fn terminate(mut sim: std::process::Child) {
    let killed = Command::new("kill")
        .args(["-TERM", &sim.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let status = sim.wait().expect("the sim exits");
    assert!(status.success(), "gantry sim exited with {status}");
}

fn read_report(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("the report was written"))
        .expect("JSON")
}

fn temp_dir(name: &str) -> PathBuf {
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn a_host_drives_the_simulated_mcu_over_a_pty() {
    let dir = temp_dir("sim-pty");
    let tty = dir.join("tty");
    let report = dir.join("report.json");
    let _ = std::fs::remove_file(&report);
    let sim = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["sim", "--pty"])
        .arg(&tty)
        .arg("--report")
        .arg(&report)
        .stdout(Stdio::null())
        .spawn()
        .expect("gantry sim starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::symlink_metadata(&tty).is_err() {
        assert!(Instant::now() < deadline, "no pty link within 20 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    let port = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&tty)
        .expect("opens like a serial port");
    let reader = port.try_clone().expect("clone");
    let dict = drive(port, reader);
    assert_eq!(dict.mcu(), Some("gantry-sim"));

    // The moves take 180 ms from 200 ms after the clock query.
    std::thread::sleep(Duration::from_millis(500));
    terminate(sim);
    let report = read_report(&report);
    assert_eq!(report["shutdown"], serde_json::Value::Null);
    assert_eq!(report["config_crc"], 0x00c0_ffee);
    let stepper = &report["steppers"][0];
    assert_eq!(stepper["step_pin"], "PD7");
    assert_eq!(stepper["position"], 120);
    assert_eq!(stepper["steps"], 180);
    // The default world: stepper_x (dir inverted) moved 120 steps at 80 steps/mm toward 0 from
    // 110 mm; the heaters sit at room temperature.
    let x = &report["carriages"][0];
    assert_eq!(x["name"], "stepper_x");
    assert!((x["position_mm"].as_f64().expect("a number") - 108.5).abs() < 1e-9);
    let extruder = &report["heaters"][0];
    assert_eq!(extruder["name"], "extruder");
    assert!((extruder["temperature_c"].as_f64().expect("a number") - 25.0).abs() < 0.01);
    assert!(
        std::fs::symlink_metadata(&tty).is_err(),
        "the pty link is removed on exit"
    );
}

#[test]
fn a_host_drives_the_simulated_mcu_over_tcp_in_a_world_file() {
    let dir = temp_dir("sim-tcp");
    let report = dir.join("report.json");
    let world = dir.join("world.toml");
    let _ = std::fs::remove_file(&report);
    // One carriage whose endstop is stuck, one heater with an open thermistor.
    std::fs::write(
        &world,
        "[[stepper]]\nname = \"stepper_x\"\nstep_pin = \"PD7\"\naxis = \"x\"\n\
         steps_per_mm = 100.0\nstart_mm = 5.0\nendstop_pin = \"PC2\"\n\
         stuck_endstop = \"triggered\"\n\
         [[heater]]\nname = \"hotend\"\nheater_pin = \"PD5\"\nsensor_pin = \"PA7\"\n\
         power_w = 30.0\nheat_capacity_j_k = 10.0\nloss_w_k = 0.1\ninitial_c = 30.0\n\
         sensor = \"Generic 3950\"\nopen_thermistor = true\n",
    )
    .expect("world written");
    let mut sim = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["sim", "--tcp", "127.0.0.1:0", "--world"])
        .arg(&world)
        .arg("--report")
        .arg(&report)
        .stdout(Stdio::piped())
        .spawn()
        .expect("gantry sim starts");
    // "gantry-sim: serving on tcp 127.0.0.1:PORT"
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(sim.stdout.take().expect("stdout")),
        &mut line,
    )
    .expect("the address line");
    let addr = line
        .trim()
        .rsplit(' ')
        .next()
        .expect("an address")
        .to_owned();
    let socket = std::net::TcpStream::connect(&addr).expect("connects");
    let reader = socket.try_clone().expect("clone");
    let dict = drive(socket, reader);
    assert_eq!(dict.mcu(), Some("gantry-sim"));
    std::thread::sleep(Duration::from_millis(500));
    terminate(sim);
    let report = read_report(&report);
    assert_eq!(report["shutdown"], serde_json::Value::Null);
    assert_eq!(report["steppers"][0]["position"], 120);
    // Not inverted here: +120 steps at 100 steps/mm from 5 mm.
    let x = &report["carriages"][0];
    assert!((x["position_mm"].as_f64().expect("a number") - 6.2).abs() < 1e-9);
    let hotend = &report["heaters"][0];
    assert_eq!(hotend["name"], "hotend");
    // It starts at initial_c and cools toward the 25 °C ambient.
    let t = hotend["temperature_c"].as_f64().expect("a number");
    assert!(t > 25.0 && t < 30.0, "{t}");
}
