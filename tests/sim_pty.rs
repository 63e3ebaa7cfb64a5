//! `gantry sim --pty` as a host meets it, in real time: the host opens the pty path like a USB
//! board, synchronises the link, downloads the dictionary with identify, configures a stepper and
//! queues moves; on SIGTERM the sim writes a report saying where the stepper ended.

#![cfg(unix)]

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use gantry_proto::identify::Identify;
use gantry_proto::link::{HostLink, LinkEvent};
use gantry_proto::{Dictionary, Value};

fn encode(dict: &Dictionary, name: &str, values: &[i64]) -> Vec<u8> {
    let values: Vec<Value> = values.iter().map(|v| Value::Int(*v)).collect();
    dict.encode_command(name, &values)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn a_host_drives_the_simulated_mcu_over_a_pty() {
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("sim-pty-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let tty = dir.join("tty");
    let report = dir.join("report.json");
    let _ = std::fs::remove_file(&report);
    let mut sim = Command::new(env!("CARGO_BIN_EXE_gantry"))
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
    let mut port = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&tty)
        .expect("opens like a serial port");
    let mut reader = port.try_clone().expect("clone");
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
    let mut out = Vec::new();
    loop {
        let now_s = start.elapsed().as_secs_f64();
        assert!(now_s < 30.0, "the session did not finish in 30 s");
        while let Ok(bytes) = rx.try_recv() {
            host.handle_input(&bytes, now_s);
        }
        while let Some(event) = host.poll_event() {
            if let LinkEvent::Received { payload, .. } = event
                && dict.is_none()
                && let Some(d) = identify
                    .handle_message(&payload)
                    .expect("valid identify data")
            {
                // Configure a stepper on PD7/PC5 and queue 3 moves: +100, +50, -30 steps.
                for (cmd, args) in [
                    ("allocate_oids", vec![1]),
                    ("config_stepper", vec![0, 31, 21, 0, 32]),
                    ("finalize_config", vec![0x00c0_ffee]),
                    ("set_next_step_dir", vec![0, 1]),
                    ("queue_step", vec![0, 16_000, 100, 0]),
                    ("queue_step", vec![0, 16_000, 50, 0]),
                    ("set_next_step_dir", vec![0, 0]),
                    ("queue_step", vec![0, 16_000, 30, 0]),
                ] {
                    host.send(encode(&d, cmd, &args)).expect("fits");
                }
                dict = Some(d);
                configured_at = Some(now_s);
            }
        }
        if dict.is_none()
            && host.is_synchronised()
            && let Some(request) = identify.poll_request(now_s)
        {
            host.send(request).expect("fits");
        }
        host.handle_timeout(now_s);
        out.clear();
        if host.poll_transmit(now_s, &mut out) {
            port.write_all(&out).expect("write to the pty");
        }
        if configured_at.is_some_and(|t| now_s > t + 0.5) && host.pending_messages() == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let dict = dict.expect("identify finished");
    assert_eq!(dict.mcu(), Some("gantry-sim"));

    let killed = Command::new("kill")
        .args(["-TERM", &sim.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let status = sim.wait().expect("the sim exits");
    assert!(status.success(), "gantry sim exited with {status}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("the report was written"))
            .expect("JSON");
    assert_eq!(report["shutdown"], serde_json::Value::Null);
    assert_eq!(report["config_crc"], 0x00c0_ffee);
    let stepper = &report["steppers"][0];
    assert_eq!(stepper["step_pin"], "PD7");
    assert_eq!(stepper["position"], 120);
    assert_eq!(stepper["steps"], 180);
    assert!(
        std::fs::symlink_metadata(&tty).is_err(),
        "the pty link is removed on exit"
    );
}
