//! The live host on a virtual clock: Gantry's planner drives the simulated MCU in process
//! through proto's host session — connect and configure, home on the sim's endstops (trsync,
//! drip moves, positions read back), print, wait for the moves — and the sim ends where the
//! planner says, to the step.

use gantry_core::live::LiveHost as _;
use gantry_core::live::job::{self, JobOptions};
use gantry_core::live::virtual_host::{VirtualHost, VirtualOptions};
use gantry_core::motion::config::Config;
use gantry_core::motion::printer::Printer;
use gantry_core::printers::SIMULATED_CONFIG;
use gantry_sim::runtime::SimMcu;

const SAMPLE: &str = include_str!("../../../assets/gcode/sample.gcode");

/// Connects a live printer to a fresh sim on a virtual clock.
fn live_printer(options: VirtualOptions) -> (Printer, VirtualHost) {
    let config = Config::parse(SIMULATED_CONFIG, "gantry-sim.cfg").expect("the config parses");
    let host = VirtualHost::new(SimMcu::new(), options);
    let mut built = None;
    let move_count = host
        .connect(|dict| {
            let p = Printer::new(&config, &[("mcu", dict)]).map_err(|e| e.to_string())?;
            let cmds = p.mcus[0].config_phase();
            built = Some(p);
            Ok(cmds)
        })
        .expect("the sim connects and takes the config");
    let mut printer = built.expect("built");
    printer.start_live(Box::new(host.clone()), &[usize::from(move_count)]);
    (printer, host)
}

/// The first `n` lines of the sample print.
fn excerpt(n: usize) -> String {
    SAMPLE.lines().take(n).collect::<Vec<_>>().join("\n") + "\n"
}

/// The sim's carriages are within one step of `pos` (X/Y 80 steps/mm, Z 400).
fn assert_carriages_at(host: &VirtualHost, pos: [f64; 4], what: &str) {
    let sim = host.with_sim(|s| s.report());
    for (axis, name) in ["x", "y", "z"].iter().enumerate() {
        let c = sim
            .carriages
            .iter()
            .find(|c| c.axis == *name)
            .expect("carriage");
        let step = if axis == 2 { 1.0 / 400.0 } else { 1.0 / 80.0 };
        assert!(
            (c.position_mm - pos[axis]).abs() <= step + 1e-9,
            "{name}: sim carriage at {} mm, {what} at {} mm",
            c.position_mm,
            pos[axis]
        );
    }
}

/// Every stepper's position as the planner believes it equals the sim's, to the step.
fn assert_positions_match(printer: &Printer, host: &VirtualHost) {
    let report = host.with_sim(|s| s.report());
    assert!(report.fault.is_none(), "sim fault: {:?}", report.fault);
    for s in &printer.toolhead.steppers {
        let sim = report
            .steppers
            .iter()
            .find(|r| r.oid == usize::from(s.oid))
            .unwrap_or_else(|| panic!("{} (oid {}) not in the sim", s.name, s.oid));
        // The MCU counts dir=1 steps up; the host counts its own direction (the dir pin's `!`).
        let sim_position = if s.sc.invert_dir() {
            -sim.position
        } else {
            sim.position
        };
        assert_eq!(
            sim_position,
            s.mcu_position(),
            "{}: sim at {sim_position} steps, planner at {}",
            s.name,
            s.mcu_position()
        );
    }
}

#[test]
fn homes_on_the_sims_endstops_and_prints_to_the_step() {
    let (mut printer, host) = live_printer(VirtualOptions::default());
    let gcode = excerpt(120);
    let report = job::run(
        &mut printer,
        gcode.as_bytes(),
        JobOptions::default(),
        |_| {},
        |_| {},
    )
    .unwrap_or_else(|e| {
        let r = host.with_sim(|s| s.report());
        panic!(
            "job: {e}; sim fault {:?} at {:?} (now {:.4})",
            r.fault,
            r.shutdown_clock,
            host.now()
        )
    });
    let errors: Vec<_> = report
        .responses
        .iter()
        .filter(|r| r.text.starts_with("!!"))
        .take(5)
        .collect();
    assert!(errors.is_empty(), "errors: {errors:?}");
    assert_positions_match(&printer, &host);
    // Homing found the endstops: the sim's carriages are where the toolhead is.
    let sim = host.with_sim(|s| s.report());
    let pos = printer.toolhead.commanded_pos;
    assert_carriages_at(&host, pos, "toolhead");
    assert!(
        sim.shutdown_clock.is_none(),
        "the sim shut down: {:?}",
        sim.fault
    );
    // M190 S60 and M109 S200 waited for the sim's thermal model; the PID holds the targets.
    for (heater, target) in [("extruder", 200.0), ("heater_bed", 60.0)] {
        let (temp, set) = printer.heater_temperature(heater).expect("heater");
        assert_eq!(set, target, "{heater} target");
        assert!(
            (temp - target).abs() <= 1.0,
            "{heater} at {temp:.2} °C, target {target}"
        );
        let world = sim
            .heaters
            .iter()
            .find(|h| h.name == heater)
            .expect("world heater");
        assert!(
            (world.temperature_c - target).abs() <= 1.5,
            "{heater}: the sim's model is at {:.2} °C",
            world.temperature_c
        );
    }
    let waits = report
        .responses
        .iter()
        .filter(|r| r.text.starts_with("B:"))
        .count();
    assert!(waits > 0, "M190/M109 reported temperatures while waiting");
}

/// The file as `gantry batch` plans it (homed by G28 first, as the live print): the final
/// toolhead position and every stepper's net steps.
fn batch_plan(gcode: &[u8]) -> ([f64; 4], Vec<(String, i64)>) {
    let config = Config::parse(SIMULATED_CONFIG, "gantry-sim.cfg").expect("the config parses");
    let sim = SimMcu::new();
    let mut printer = Printer::new(&config, &[("mcu", sim.dictionary())]).expect("planner");
    printer.run_batch(gcode).expect("batch");
    let steps = printer
        .toolhead
        .steppers
        .iter()
        .map(|s| (s.name.clone(), s.mcu_position()))
        .collect();
    (printer.toolhead.commanded_pos, steps)
}

#[test]
fn a_whole_corpus_print_on_a_virtual_clock_ends_where_batch_mode_does() {
    let file =
        include_bytes!("../../../tests/fixtures/gcode/superslicer-2.3.56_klipper_arcwelder.gcode");
    let mut gcode = b"G28\n".to_vec();
    gcode.extend_from_slice(file);
    let (mut printer, host) = live_printer(VirtualOptions::default());
    let wall = std::time::Instant::now();
    let report = job::run(&mut printer, &gcode, JobOptions::default(), |_| {}, |_| {})
        .unwrap_or_else(|e| {
            let r = host.with_sim(|s| s.report());
            panic!("job: {e}; sim fault {:?}", r.fault)
        });
    let wall_s = wall.elapsed().as_secs_f64();
    let errors: Vec<_> = report
        .responses
        .iter()
        .filter(|r| r.text.starts_with("!!"))
        .collect();
    assert!(errors.is_empty(), "errors: {errors:?}");
    assert_positions_match(&printer, &host);
    let (batch_pos, batch_steps) = batch_plan(&gcode);
    assert_eq!(
        printer.toolhead.commanded_pos, batch_pos,
        "final toolhead position"
    );
    // The extruder never homes: its net steps are batch mode's, exactly.
    let live_e = printer
        .toolhead
        .steppers
        .iter()
        .find(|s| s.name == "extruder")
        .map(|s| s.mcu_position());
    let batch_e = batch_steps
        .iter()
        .find(|(n, _)| n == "extruder")
        .map(|&(_, p)| p);
    assert_eq!(live_e, batch_e, "extruder net steps");
    assert_carriages_at(&host, batch_pos, "batch mode ends");
    // Faster than real time by far (the goal is 100×; timing is reported, not asserted on,
    // beyond a floor no machine misses).
    let virtual_s = host.now();
    assert!(
        virtual_s / wall_s > 10.0,
        "{virtual_s:.0} s of printing took {wall_s:.1} s"
    );
}

/// One job on a wire that damages `rate` of the bytes both ways from the first command of the
/// job on (homing included); returns the report and the link's counters.
fn print_on_a_damaged_wire(
    seed: u64,
    rate: f64,
    gcode: &str,
) -> (
    job::JobReport,
    gantry_proto::link::LinkStats,
    Printer,
    VirtualHost,
) {
    let (mut printer, host) = live_printer(VirtualOptions {
        seed,
        ..VirtualOptions::default()
    });
    host.set_corruption(rate);
    let report = job::run(
        &mut printer,
        gcode.as_bytes(),
        JobOptions::default(),
        |_| {},
        |_| {},
    )
    .unwrap_or_else(|e| {
        let r = host.with_sim(|s| s.report());
        panic!(
            "seed {seed}: job: {e}; sim fault {:?} ({:?}); link {:?}; last sent:\n{}",
            r.fault,
            r.fault_command,
            host.link_stats(),
            host.recent_messages().join("\n")
        )
    });
    let stats = host.link_stats();
    (report, stats, printer, host)
}

#[test]
fn one_percent_of_the_bytes_damaged_still_prints_every_step() {
    // 1 % of the bytes corrupted both ways: half of all full 64-byte blocks would be lost.
    // Homing (trsync, endstop and position queries), heating (PWM 0.3 s after each report) and
    // printing all run through it, and the MCU executes the same steps as on a clean wire. What
    // makes it hold (proto's link and session, motion's live reactor): NAKs honoured a round trip
    // after a retransmission, a bounded back-off, shorter blocks while blocks are lost and
    // commands sent further ahead, queries asked again (klippy's send_with_response), a heater
    // value re-sent when the reports that would refresh it were lost, and a late report's PWM
    // moved forward instead of into the past.
    let gcode = excerpt(400);
    let (batch_pos, batch_steps) = batch_plan(gcode.as_bytes());
    for seed in [3, 8] {
        let (report, stats, printer, host) = print_on_a_damaged_wire(seed, 0.01, &gcode);
        let errors: Vec<_> = report
            .responses
            .iter()
            .filter(|r| r.text.starts_with("!!"))
            .take(5)
            .collect();
        assert!(errors.is_empty(), "seed {seed}: errors: {errors:?}");
        assert_positions_match(&printer, &host);
        // Homing counts from where the carriages stood, so only the extruder's net steps
        // compare with batch mode's; the carriages end where batch mode ends them.
        let extruder =
            |steps: &[(String, i64)]| steps.iter().find(|(n, _)| n == "extruder").map(|&(_, p)| p);
        let live_steps: Vec<(String, i64)> = printer
            .toolhead
            .steppers
            .iter()
            .map(|s| (s.name.clone(), s.mcu_position()))
            .collect();
        assert_eq!(
            extruder(&live_steps),
            extruder(&batch_steps),
            "seed {seed}: extruder net steps as batch mode"
        );
        assert_carriages_at(&host, batch_pos, "batch mode ends");
        assert!(
            stats.retransmits > 50,
            "seed {seed}: the damage was noticed: {stats:?}"
        );
    }
}

/// Regression: the start-up commands (PWM start values 200 ms ahead, the heaters' first
/// queries) were held until the first G-code line ran; a host that took longer than that to
/// start its job (reading the file, a slow desktop) sent them late and the MCU shut down with
/// "Timer too close". They go out as soon as the printer is live.
#[test]
fn start_up_commands_go_out_at_once() {
    let (mut printer, host) = live_printer(VirtualOptions::default());
    // Half a second passes before the job's first line (the wire runs; nothing is handled).
    let mut wire = host.clone();
    let start = wire.now();
    while wire.now() < start + 0.5 {
        let _ = wire.wait(start + 0.5);
    }
    printer
        .live_run_line("G4 P1000", 1)
        .expect("the dwell runs");
    printer.live_wait_moves().expect("the moves end");
    let report = host.with_sim(|s| s.report());
    assert!(
        report.fault.is_none(),
        "sim fault: {:?} ({:?})",
        report.fault,
        report.fault_command
    );
}

/// Heats the extruder to 200 °C on a virtual clock with `fault` applied to the sim's hotend,
/// and returns how the printer halted.
fn heat_with_fault(fault: impl FnOnce(&mut gantry_sim::world::Heater)) -> String {
    let (mut printer, host) = live_printer(VirtualOptions::default());
    host.with_sim(|s| {
        let heater = s
            .model_mut()
            .world_mut()
            .heaters
            .iter_mut()
            .find(|h| h.name == "extruder")
            .expect("hotend");
        fault(heater);
    });
    let err = printer
        .live_run_line("M109 S200", 1)
        .expect_err("the printer halts");
    let halted = printer.halted().map(str::to_owned);
    assert_eq!(halted.as_deref(), Some(err.to_string().as_str()));
    // The sim's heater is off once the wire carried the stop: klippy's emergency stop, or the
    // MCU's own shutdown.
    let mut wire = host.clone();
    let now = wire.now();
    while wire.wait(now + 0.1).is_some() {}
    let duty = host.with_sim(|s| {
        s.model()
            .world()
            .heaters
            .iter()
            .find(|h| h.name == "extruder")
            .map(|h| h.duty)
    });
    assert_eq!(duty, Some(0.0), "heater off after the shutdown");
    err.to_string()
}

#[test]
fn a_disconnected_heater_trips_verify_heater() {
    let why = heat_with_fault(|h| h.disconnected = true);
    assert!(
        why.starts_with("Heater extruder not heating at expected rate"),
        "{why}"
    );
}

#[test]
fn an_open_thermistor_shuts_the_mcu_down() {
    let why = heat_with_fault(|h| h.open_thermistor = true);
    assert_eq!(why, "MCU 'mcu' shutdown: ADC out of range", "{why}");
}

/// The sim's X/Y/Z carriage positions, mm.
fn sim_carriages(host: &VirtualHost) -> [f64; 3] {
    let sim = host.with_sim(|s| s.report());
    let mut pos = [0.0; 3];
    for (axis, name) in ["x", "y", "z"].iter().enumerate() {
        pos[axis] = sim
            .carriages
            .iter()
            .find(|c| c.axis == *name)
            .expect("carriage")
            .position_mm;
    }
    pos
}

#[test]
fn pause_jog_and_resume_come_back_to_the_exact_position() {
    use gantry_core::live::job::{JobOutcome, JobRequest};
    use gantry_core::motion::printer::PrintState;

    let (mut printer, host) = live_printer(VirtualOptions::default());
    let gcode = excerpt(160);
    let (tx, rx) = std::sync::mpsc::channel();
    // The UI's part, from the job's progress callback: pause at line 140, wait for the moves,
    // note where the carriages stopped, jog away, resume and pause again at once to look.
    let mut step = 0;
    let mut at_pause = [0.0; 3];
    let mut checks = Vec::new();
    let mut states = Vec::new();
    let probe = host.clone();
    let report = job::run(
        &mut printer,
        gcode.as_bytes(),
        JobOptions {
            filename: "sample.gcode",
            requests: Some(&rx),
            history: None,
            record_temperatures: false,
        },
        |p| {
            states.push(p.state);
            match (step, p.state) {
                (0, PrintState::Printing) if p.lines == 140 => {
                    tx.send(JobRequest::Pause).expect("send");
                    tx.send(JobRequest::Gcode("M400".into())).expect("send");
                    step = 1;
                }
                (1, PrintState::Paused) => {
                    at_pause = sim_carriages(&probe);
                    tx.send(JobRequest::Gcode(
                        "G91\nG1 Z5 F600\nG90\nG1 X20 Y30 F6000\nM400".into(),
                    ))
                    .expect("send");
                    step = 2;
                }
                (2, PrintState::Paused) => {
                    checks.push(("jogged away", sim_carriages(&probe)));
                    for r in [
                        JobRequest::Resume,
                        JobRequest::Gcode("M400".into()),
                        JobRequest::Pause,
                    ] {
                        tx.send(r).expect("send");
                    }
                    step = 3;
                }
                (3, PrintState::Paused) => {
                    checks.push(("resumed", sim_carriages(&probe)));
                    tx.send(JobRequest::Resume).expect("send");
                    step = 4;
                }
                _ => {}
            }
        },
        |_| {},
    )
    .unwrap_or_else(|e| panic!("job: {e}"));
    assert_eq!(report.outcome, JobOutcome::Complete);
    assert_eq!(step, 4, "every stage ran");
    let errors: Vec<_> = report
        .responses
        .iter()
        .filter(|r| r.text.starts_with("!!"))
        .collect();
    assert!(errors.is_empty(), "errors: {errors:?}");
    assert_eq!(checks[0].0, "jogged away");
    assert!(
        (checks[0].1[2] - at_pause[2] - 5.0).abs() < 0.01 && checks[0].1[0] == 20.0,
        "the jog moved the carriages: {:?} from {at_pause:?}",
        checks[0].1
    );
    // RESUME's return move ends exactly where the pause left the carriages.
    assert_eq!(checks[1].1, at_pause, "back at the paused position");
    assert!(states.contains(&PrintState::Paused));
    assert_eq!(printer.print_stats().state, PrintState::Complete);
    // And the print ends where batch mode ends it, every step accounted for.
    assert_positions_match(&printer, &host);
    let (batch_pos, _) = batch_plan(gcode.as_bytes());
    assert_carriages_at(&host, batch_pos, "batch mode ends");
}

/// Two square objects, `layers` layers each, with Klipper's exclude_object labels.
fn two_objects(layers: usize) -> String {
    let mut g = String::from(
        "G28\nM109 S200\nG90\nM83\n\
         EXCLUDE_OBJECT_DEFINE NAME=left CENTER=60,60 POLYGON=[[50,50],[70,50],[70,70],[50,70]]\n\
         EXCLUDE_OBJECT_DEFINE NAME=right CENTER=160,60 POLYGON=[[150,50],[170,50],[170,70],[150,70]]\n",
    );
    for layer in 0..layers {
        let z = 0.2 * (layer + 1) as f64;
        for (name, x0) in [("left", 50.0), ("right", 150.0)] {
            g +=
                &format!("EXCLUDE_OBJECT_START NAME={name}\nG1 Z{z:.1} F600\nG1 X{x0} Y50 F9000\n");
            for (x, y) in [(x0 + 20.0, 50.0), (x0 + 20.0, 70.0), (x0, 70.0), (x0, 50.0)] {
                g += &format!("G1 X{x} Y{y} E0.8 F2400\n");
            }
            g += &format!("EXCLUDE_OBJECT_END NAME={name}\n");
        }
    }
    g
}

#[test]
fn an_object_excluded_mid_print_is_skipped_as_batch_mode_skips_it() {
    use gantry_core::live::job::JobRequest;

    let gcode = two_objects(6);
    let at_line = 40;
    let (mut printer, host) = live_printer(VirtualOptions::default());
    let (tx, rx) = std::sync::mpsc::channel();
    let report = job::run(
        &mut printer,
        gcode.as_bytes(),
        JobOptions {
            filename: "two.gcode",
            requests: Some(&rx),
            history: None,
            record_temperatures: false,
        },
        |p| {
            if p.lines == at_line {
                tx.send(JobRequest::Gcode("EXCLUDE_OBJECT NAME=right".into()))
                    .expect("send");
            }
        },
        |_| {},
    )
    .unwrap_or_else(|e| panic!("job: {e}"));
    let errors: Vec<_> = report
        .responses
        .iter()
        .filter(|r| r.text.starts_with("!!"))
        .collect();
    assert!(errors.is_empty(), "errors: {errors:?}");
    assert_positions_match(&printer, &host);
    // Batch mode with the same command at the same place in the file.
    let mut lines: Vec<&str> = gcode.lines().collect();
    lines.insert(at_line as usize, "EXCLUDE_OBJECT NAME=right");
    let edited = lines.join("\n") + "\n";
    let (batch_pos, batch_steps) = batch_plan(edited.as_bytes());
    let (_, full_steps) = batch_plan(gcode.as_bytes());
    let e_of =
        |steps: &[(String, i64)]| steps.iter().find(|(n, _)| n == "extruder").map(|&(_, p)| p);
    let live_e = printer
        .toolhead
        .steppers
        .iter()
        .find(|s| s.name == "extruder")
        .map(|s| s.mcu_position());
    assert_eq!(live_e, e_of(&batch_steps), "extruder net steps");
    assert!(
        e_of(&batch_steps) < e_of(&full_steps),
        "the excluded object was not extruded"
    );
    assert_eq!(printer.toolhead.commanded_pos, batch_pos);
}

#[test]
fn cancel_stops_the_job_and_the_history_records_it() {
    use gantry_core::live::history::HistoryRecorder;
    use gantry_core::live::job::{JobOutcome, JobRequest};
    use gantry_core::store::{JobStatus, Store};

    let dir = std::env::temp_dir().join(format!("gantry-live-history-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let db = dir.join("gantry.db");
    let _ = std::fs::remove_file(&db);
    let history = HistoryRecorder::spawn(
        Store::open(&db).expect("store"),
        "gantry-sim",
        "simulated",
        SIMULATED_CONFIG,
    )
    .expect("recorder");
    let (mut printer, _host) = live_printer(VirtualOptions::default());
    let gcode = excerpt(200);
    let (tx, rx) = std::sync::mpsc::channel();
    let report = job::run(
        &mut printer,
        gcode.as_bytes(),
        JobOptions {
            filename: "sample.gcode",
            requests: Some(&rx),
            history: Some(&history),
            record_temperatures: true,
        },
        |p| {
            if p.lines == 150 {
                tx.send(JobRequest::Cancel).expect("send");
            }
        },
        |_| {},
    )
    .unwrap_or_else(|e| panic!("job: {e}"));
    assert_eq!(report.outcome, JobOutcome::Cancelled);
    assert_eq!(report.lines, 150, "no line after the cancel ran");
    assert!(report.filament_used_mm > 0.0);
    let printer_id = history.printer();
    assert!(history.close().is_empty(), "history written");
    let store = Store::open(&db).expect("reopen");
    let jobs = store.job_history(None, 0, None).expect("jobs");
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].status, JobStatus::Cancelled);
    assert_eq!(jobs[0].filename, "sample.gcode");
    assert!((jobs[0].filament_used_mm - report.filament_used_mm).abs() < 1e-6);
    // One sample a second of host time while heating and printing.
    let temps = store
        .temperature_series(printer_id, "extruder", 0.0, f64::MAX)
        .expect("series");
    assert!(temps.len() >= 10, "{} extruder samples", temps.len());
    assert!(temps.iter().all(|t| t.job == Some(jobs[0].job_id)));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_failing_command_in_the_file_stops_the_print_as_klipper_does() {
    use gantry_core::live::job::JobError;
    use gantry_core::motion::printer::PrintState;

    let (mut printer, host) = live_printer(VirtualOptions::default());
    let gcode = "G28\nG1 X20 Y20 F6000\nG1 X500\nG1 X30\n";
    let err = job::run(
        &mut printer,
        gcode.as_bytes(),
        JobOptions::default(),
        |_| {},
        |_| {},
    )
    .expect_err("the move out of range stops the job");
    match err {
        JobError::Gcode { line, message } => {
            assert_eq!(line, 3);
            assert!(message.starts_with("Move out of range"), "{message}");
        }
        other => panic!("expected a G-code error, got {other}"),
    }
    assert_eq!(printer.print_stats().state, PrintState::Error);
    assert!(
        printer
            .print_stats()
            .message
            .starts_with("Move out of range")
    );
    // The line after the error never ran: the toolhead stopped at X20.
    assert_eq!(printer.toolhead.commanded_pos[0], 20.0);
    assert_carriages_at(
        &host,
        [20.0, 20.0, printer.toolhead.commanded_pos[2], 0.0],
        "line 2",
    );
}

/// Regression: a stepper's first enable waited for the heaters' start values (its `min_clock`
/// was their clock, ~0.2 s ahead), so it reached the MCU only ~50 ms before it was due — and
/// late on a loaded desktop ("Timer too close"). An output with nothing queued before its first
/// command may go out at once.
#[test]
fn a_first_stepper_enable_is_not_held_behind_other_outputs() {
    let (mut printer, host) = live_printer(VirtualOptions::default());
    for (i, line) in ["SET_KINEMATIC_POSITION X=100 Y=100 Z=10", "G1 Z10.3 F600"]
        .iter()
        .enumerate()
    {
        printer
            .live_run_line(line, u32::try_from(i + 1).expect("few lines"))
            .expect("runs");
    }
    printer.live_wait_moves().expect("the moves end");
    let sent = host.recent_messages();
    let enable = sent
        .iter()
        .find(|m| m.contains("queue_digital_out") && !m.contains(" req=0 "))
        .unwrap_or_else(|| panic!("the Z stepper is enabled: {sent:#?}"));
    assert!(
        enable.contains(" min=0 "),
        "the first enable has nothing to wait for: {enable}"
    );
    let report = host.with_sim(|s| s.report());
    assert!(report.fault.is_none(), "sim fault: {:?}", report.fault);
}
