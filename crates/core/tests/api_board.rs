//! A Klipper board added to the fleet from its printer.cfg through the API (`printers.add` with
//! `config`), as the Printers page does for a board found on USB: the board here is the simulated
//! MCU served in real time on a pseudo-terminal in this process, the printer.cfg the built-in
//! one with its `serial:` at that pty. Gantry connects and configures it, serves it like any
//! printer (status objects, G-code through the console path, its job history in the data folder),
//! and removing it closes the port — so it can be added again at once.

#![cfg(unix)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use gantry_core::api::manage::ManagerOptions;
use gantry_core::api::methods::{self, Connection, Context};
use gantry_core::printers::SIMULATED_CONFIG;
use gantry_sim::runtime::SimMcu;
use serde_json::{Value, json};
use tokio::sync::mpsc;

fn temp_dir(name: &str) -> PathBuf {
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// The simulated MCU served on a pty at `path` until `stop` is raised.
fn serve_sim(path: PathBuf, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<SimMcu> {
    let mut pty = gantry_sim::pty::open(&path).expect("the sim's pty");
    std::thread::spawn(move || {
        let mut sim = SimMcu::new();
        gantry_sim::pty::run(&mut pty, &mut sim, &stop).expect("the sim serves its pty");
        sim
    })
}

/// The built-in printer.cfg with its board at `tty`, written as `dir/printer.cfg`.
fn write_config(dir: &std::path::Path, tty: &std::path::Path) -> PathBuf {
    let cfg = dir.join("printer.cfg");
    std::fs::write(
        &cfg,
        SIMULATED_CONFIG.replace(
            "serial: gantry-sim\n",
            &format!("serial: {}\n", tty.display()),
        ),
    )
    .expect("write printer.cfg");
    cfg
}

/// Stops the simulated MCU and checks that it ran without a fault and left X at `x_mm`.
fn stop_sim_at_x(stop: &AtomicBool, sim: std::thread::JoinHandle<SimMcu>, x_mm: f64) {
    stop.store(true, Ordering::Relaxed);
    let report = sim.join().expect("the sim thread").report();
    assert!(report.fault.is_none(), "sim fault: {:?}", report.fault);
    let x = report
        .carriages
        .iter()
        .find(|c| c.axis == "x")
        .expect("x carriage");
    assert!(
        (x.position_mm - x_mm).abs() < 1e-9,
        "x at {}",
        x.position_mm
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_board_added_from_its_printer_cfg_is_driven_served_and_removed() {
    let dir = temp_dir("api-board");
    let stop = Arc::new(AtomicBool::new(false));
    let tty = dir.join("board-tty");
    let sim = serve_sim(tty.clone(), Arc::clone(&stop));
    let cfg = write_config(&dir, &tty);
    let data = dir.join("data");
    let ctx = Arc::new(Context::new(ManagerOptions {
        mdns: None,
        data_dir: Some(data.clone()),
        ..ManagerOptions::default()
    }));
    let (tx, _rx) = mpsc::unbounded_channel::<Value>();
    let mut conn = Connection::new(Arc::clone(&ctx), tx);

    // Bad input first: a relative path, a missing file, a config error with its line.
    for (params, expect) in [
        (json!({"config": "printer.cfg"}), "full path"),
        (
            json!({"config": dir.join("nope.cfg").display().to_string()}),
            "Cannot read",
        ),
        (
            json!({"config": cfg.display().to_string(), "url": "10.0.0.5"}),
            "not both",
        ),
    ] {
        let e = methods::call(&mut conn, "printers.add", &params)
            .await
            .expect_err("refused");
        assert!(e.message.contains(expect), "{params}: {}", e.message);
    }

    let id = format!("klipper:{}", cfg.display());
    let added = add_bench_printer(&mut conn, &cfg).await;
    assert_eq!(added["printer"]["id"], id, "{added}");
    assert_eq!(added["printer"]["name"], "Bench printer");
    assert_eq!(added["printer"]["kind"], "local", "{added}");
    let again = methods::call(
        &mut conn,
        "printers.add",
        &json!({"config": cfg.display().to_string()}),
    )
    .await
    .expect_err("already added");
    assert!(
        again.message.contains("already in the list"),
        "{}",
        again.message
    );

    // Served like any printer: G-code runs on the board, the status objects follow.
    methods::call(
        &mut conn,
        "printer.gcode.script",
        &json!({"printer": id, "script": "G28\nG1 X40 Y50 F6000\nM400"}),
    )
    .await
    .unwrap_or_else(|e| panic!("G-code: {}", e.message));
    let status = methods::call(
        &mut conn,
        "printer.objects.query",
        &json!({"printer": id, "objects": {"toolhead": ["position", "homed_axes"]}}),
    )
    .await
    .unwrap_or_else(|e| panic!("query: {}", e.message));
    let toolhead = &status["status"]["toolhead"];
    assert_eq!(toolhead["homed_axes"], "xyz", "{status}");
    assert_eq!(toolhead["position"][0], 40.0, "{status}");
    assert_eq!(toolhead["position"][1], 50.0, "{status}");
    // Its job history lives in the data folder.
    assert!(data.join("gantry.db").is_file(), "no history database");

    // Removed: the port is closed, so the same board can be added again at once.
    methods::call(&mut conn, "printers.remove", &json!({"id": id}))
        .await
        .unwrap_or_else(|e| panic!("remove: {}", e.message));
    let re = tokio::time::timeout(
        Duration::from_secs(30),
        methods::call(
            &mut conn,
            "printers.add",
            &json!({"config": cfg.display().to_string()}),
        ),
    )
    .await
    .expect("in time")
    .unwrap_or_else(|e| panic!("added again: {}", e.message));
    assert_eq!(re["printer"]["id"], id);
    let name = re["printer"]["name"].as_str().unwrap_or("");
    assert!(name.starts_with("printer.cfg on "), "default name: {name}");
    ctx.shutdown().await;
    stop_sim_at_x(&stop, sim, 40.0);
}

/// A pin the board lacks is the printer.cfg's error (with the pin); a port that is not there is
/// the connection's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_errors_and_connection_errors_are_told_apart() {
    use gantry_core::live::connect::{ConnectError, connect};
    use gantry_core::motion::config::Config;

    let dir = temp_dir("connect-errors");
    let stop = Arc::new(AtomicBool::new(false));
    let tty = dir.join("board-tty");
    let sim = serve_sim(tty.clone(), Arc::clone(&stop));
    let text = SIMULATED_CONFIG
        .replace(
            "serial: gantry-sim\n",
            &format!("serial: {}\n", tty.display()),
        )
        .replace("step_pin: PD7", "step_pin: PZ9");
    let config = Config::parse(&text, "printer.cfg").expect("parses");
    let path = dir.join("printer.cfg");
    let err = connect(&config, &path, None, Duration::from_secs(20), false)
        .await
        .expect_err("PZ9 is not a pin of the sim");
    assert!(
        matches!(&err, ConnectError::Config { message, .. } if message.contains("PZ9")),
        "{err}"
    );
    let missing = SIMULATED_CONFIG.replace(
        "serial: gantry-sim\n",
        &format!("serial: {}\n", dir.join("no-such-port").display()),
    );
    let config = Config::parse(&missing, "printer.cfg").expect("parses");
    let err = connect(&config, &path, None, Duration::from_secs(5), false)
        .await
        .expect_err("no port");
    assert!(matches!(err, ConnectError::Mcu(_)), "{err}");
    stop.store(true, Ordering::Relaxed);
    sim.join().expect("the sim thread");
}

/// `printers.add` of the board printer of `cfg`, named "Bench printer"; its answer.
async fn add_bench_printer(conn: &mut Connection, cfg: &std::path::Path) -> Value {
    methods::call(
        conn,
        "printers.add",
        &json!({"config": cfg.display().to_string(), "name": "Bench printer"}),
    )
    .await
    .unwrap_or_else(|e| panic!("printers.add: {}", e.message))
}

/// A board printer added with `keep_printers` (as the desktop app runs) is back after a restart
/// under its name: not connected while its board does not answer, then driven as soon as it
/// does, with no call from the user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_board_is_back_after_a_restart_once_it_answers() {
    let dir = temp_dir("api-board-saved");
    let tty = dir.join("board-tty");
    let cfg = write_config(&dir, &tty);
    let context = || {
        let ctx = Arc::new(Context::new(ManagerOptions {
            mdns: None,
            data_dir: Some(dir.join("data")),
            keep_printers: true,
            retry: gantry_core::saved::Retry {
                first: Duration::from_millis(200),
                longest: Duration::from_secs(1),
            },
            ..ManagerOptions::default()
        }));
        let (tx, _rx) = mpsc::unbounded_channel::<Value>();
        (Connection::new(Arc::clone(&ctx), tx), ctx)
    };
    let id = format!("klipper:{}", cfg.display());

    let stop = Arc::new(AtomicBool::new(false));
    let sim = serve_sim(tty.clone(), Arc::clone(&stop));
    let (mut conn, ctx) = context();
    let added = add_bench_printer(&mut conn, &cfg).await;
    assert_eq!(added["saved"], true, "{added}");
    ctx.shutdown().await;
    stop.store(true, Ordering::Relaxed);
    sim.join().expect("the sim thread");
    let _ = std::fs::remove_file(&tty);

    // The board is unplugged at the next start: listed, not connected, saying why.
    let (mut conn, ctx) = context();
    assert_eq!(ctx.manager.restore(&ctx.fleet).await, [id.as_str()]);
    let entry = |fleet: Value| {
        fleet["printers"]
            .as_array()
            .and_then(|l| l.iter().find(|p| p["id"] == id.as_str()))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let fleet = methods::call(&mut conn, "printers.fleet", &Value::Null)
            .await
            .expect("fleet");
        let e = entry(fleet);
        assert_eq!(e["name"], "Bench printer", "{e}");
        if e["link"]["state"] == "connecting" && e["link"]["retry_in_ms"].as_u64() > Some(0) {
            assert!(
                e["problem"]["advice"]
                    .as_str()
                    .is_some_and(|a| a.contains("plugged in")),
                "{e}"
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no failed try: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Plugged in again: Gantry connects and drives it by itself.
    let stop = Arc::new(AtomicBool::new(false));
    let sim = serve_sim(tty.clone(), Arc::clone(&stop));
    loop {
        let ran = methods::call(
            &mut conn,
            "printer.gcode.script",
            &json!({"printer": id, "script": "G28\nG1 X30 F6000\nM400"}),
        )
        .await;
        match ran {
            Ok(_) => break,
            Err(e) => assert!(
                tokio::time::Instant::now() < deadline + Duration::from_secs(30),
                "not driven: {}",
                e.message
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let fleet = methods::call(&mut conn, "printers.fleet", &Value::Null)
        .await
        .expect("fleet");
    assert_eq!(entry(fleet)["link"]["state"], "connected");
    ctx.shutdown().await;
    stop_sim_at_x(&stop, sim, 30.0);
}
