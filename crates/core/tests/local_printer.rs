//! The local printer as a `PrinterBackend`, on the simulated MCU in process (virtual clock, so
//! the reactor runs as fast as it can): the console, status objects and their deltas, files and
//! their estimates, a print with its history, and the errors a user sees.

use std::sync::Arc;
use std::time::Duration;

use gantry_core::live::history::HistoryRecorder;
use gantry_core::live::local::{LocalPrinter, LocalSetup};
use gantry_core::live::virtual_host::{VirtualHost, VirtualOptions};
use gantry_core::model::{PrinterBackend, PrinterError, PrinterEvent};
use gantry_core::motion::config::Config;
use gantry_core::motion::printer::Printer;
use gantry_core::printers::SIMULATED_CONFIG;
use gantry_core::store::Store;
use gantry_sim::runtime::SimMcu;

struct Fixture {
    printer: Arc<LocalPrinter>,
    dir: std::path::PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.printer.close();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start(name: &str) -> Fixture {
    let dir = std::env::temp_dir().join(format!("gantry-local-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = Config::parse(SIMULATED_CONFIG, "gantry-sim.cfg").expect("the config parses");
    let host = VirtualHost::new(SimMcu::new(), VirtualOptions::default());
    let mut built = None;
    let moves = host
        .connect(|dict| {
            let p = Printer::new(&config, &[("mcu", dict)]).map_err(|e| e.to_string())?;
            let cmds = p.mcus[0].config_phase();
            built = Some(p);
            Ok(cmds)
        })
        .expect("the sim connects");
    let mut printer = built.expect("built");
    printer.start_live(Box::new(host), &[usize::from(moves)]);
    let history = HistoryRecorder::spawn(
        Store::open(dir.join("gantry.db")).expect("store"),
        "sim",
        "simulated",
        SIMULATED_CONFIG,
    )
    .expect("history");
    let printer = LocalPrinter::start(
        printer,
        LocalSetup {
            name: "sim".into(),
            config,
            gcodes_dir: dir.join("gcodes"),
            firmware: "gantry-sim".into(),
        },
        Some(history),
        None,
    )
    .expect("the local printer starts");
    Fixture { printer, dir }
}

/// Waits (real time) until `f` holds for the printer's status.
async fn wait_for(
    p: &LocalPrinter,
    what: &str,
    f: impl Fn(&gantry_core::model::PrinterStatus) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !f(&p.status()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {:?}",
            p.status().summary()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_runs_gcode_and_the_status_follows() {
    let f = start("console");
    let p = &f.printer;
    wait_for(p, "webhooks ready", |s| {
        s.str("webhooks", "state") == Some("ready")
    })
    .await;
    let (_, mut events) = p.subscribe();
    p.gcode_script("G28\nG1 X50 Y60 Z10 F6000\nM400")
        .await
        .expect("homes and moves");
    let s = p.status();
    assert_eq!(s.str("toolhead", "homed_axes"), Some("xyz"));
    let pos = s.get("toolhead", "position").expect("position");
    assert_eq!(pos[0], 50.0, "{pos}");
    // After M400 the MCU has run the move: motion_report's live position is there too.
    wait_for(p, "the live position at the target", |s| {
        s.get("motion_report", "live_position")
            .is_some_and(|v| v[0] == 50.0 && v[1] == 60.0 && v[2] == 10.0)
    })
    .await;
    // Heating: the sim's thermal model answers through the status objects.
    p.gcode_script("M104 S60").await.expect("target set");
    wait_for(p, "the extruder warming", |s| {
        s.f64("extruder", "target") == Some(60.0)
            && s.f64("extruder", "temperature").is_some_and(|t| t > 30.0)
    })
    .await;
    // Errors come back in Klipper's words, and as a `!!` response.
    let err = p.gcode_script("G1 X900").await.expect_err("out of range");
    assert!(
        matches!(&err, PrinterError::Rejected(m) if m.starts_with("Move out of range")),
        "{err}"
    );
    // An unknown command is no error in Klipper, only a notice.
    p.gcode_script("FROBNICATE").await.expect("not an error");
    let mut saw_unknown = false;
    let mut saw_error = false;
    let mut saw_delta = false;
    while let Ok(e) = events.try_recv() {
        match e {
            PrinterEvent::GcodeResponse { line } if line.starts_with("!! Move out of range") => {
                saw_error = true;
            }
            PrinterEvent::GcodeResponse { line } if line.contains("Unknown command") => {
                saw_unknown = true;
            }
            PrinterEvent::Status { delta, .. } if delta.contains_key("toolhead") => {
                saw_delta = true;
            }
            _ => {}
        }
    }
    assert!(saw_error, "the error reached the subscribers");
    assert!(saw_unknown, "the notice reached the subscribers");
    assert!(saw_delta, "status deltas reached the subscribers");
    // M112: Klipper's shutdown, and the printer says so.
    p.emergency_stop().await.expect("stops");
    wait_for(p, "shutdown", |s| {
        s.str("webhooks", "state") == Some("shutdown")
    })
    .await;
    let err = p.gcode_script("G1 X10").await.expect_err("halted");
    assert!(err.to_string().contains("M112"), "{err}");
    assert!(err.to_string().contains("FIRMWARE_RESTART"), "{err}");
    // No way to reconnect a printer started without one: said so.
    let err = p
        .gcode_script("FIRMWARE_RESTART")
        .await
        .expect_err("no reconnect");
    assert!(err.to_string().contains("cannot be restarted"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_print_from_the_gcode_folder_completes_and_is_in_the_history() {
    let f = start("print");
    let p = &f.printer;
    let gcode = "G28\nM83\nG1 Z0.3 F600\nM117 Printing a square\nG1 X60 Y40 F6000\n\
                 G1 X90 Y40 E1.2 F1800\nG1 X90 Y70 E1.2\nG1 X60 Y70 E1.2\nG1 X60 Y40 E1.2\n";
    p.file_upload("square.gcode", gcode.as_bytes().to_vec(), false)
        .await
        .expect("uploaded");
    let files = p.files_list().await.expect("listed");
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].path, "square.gcode");
    let meta = p.file_metadata("square.gcode").await.expect("metadata");
    assert!(
        meta.estimated_time_s.is_some_and(|t| t > 0.0),
        "the planner estimated it: {meta:?}"
    );
    assert!((meta.filament_total_mm.expect("filament") - 4.8).abs() < 1e-6);
    assert!(matches!(
        p.file_metadata("../etc/passwd").await,
        Err(PrinterError::InvalidInput(_))
    ));
    p.print_start("square.gcode").await.expect("started");
    wait_for(p, "the print to complete", |s| {
        s.str("print_stats", "state") == Some("complete")
    })
    .await;
    let s = p.status();
    assert_eq!(s.str("print_stats", "filename"), Some("square.gcode"));
    assert!((s.f64("print_stats", "filament_used").expect("filament") - 4.8).abs() < 1e-6);
    assert_eq!(s.f64("virtual_sdcard", "progress"), Some(1.0));
    assert_eq!(
        s.str("display_status", "message"),
        Some("Printing a square")
    );
    let jobs = p.history(10).await.expect("history");
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].status, "completed");
    assert_eq!(jobs[0].filename, "square.gcode");
    let err = p.print_start("missing.gcode").await.expect_err("no file");
    assert!(
        err.to_string().contains("cannot read missing.gcode"),
        "{err}"
    );
    assert!(
        !p.temperature_store().is_empty(),
        "the heaters were sampled"
    );
}
