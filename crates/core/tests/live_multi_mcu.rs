//! A printer with two MCUs on a virtual clock: the built-in simulated printer with its extruder,
//! hotend and part fan on a toolboard (`[mcu toolboard]`), each board a sim with its own crystal
//! error and boot time. Both boards are identified, then configured from one printer.cfg; the
//! toolboard's print time → clock line is kept in step with the mainboard's (klippy's secondary
//! clock sync). The print homes, heats the toolboard's hotend and the mainboard's bed, prints, and
//! every stepper on either board ends where the planner — and batch mode — say; extrusion stays in
//! time with the axes; a toolboard shutdown stops the mainboard too.

use gantry_core::live::LiveHost as _;
use gantry_core::live::job::{self, JobOptions};
use gantry_core::live::virtual_host::{VirtualHost, VirtualMcuOptions, VirtualOptions};
use gantry_core::motion::config::Config;
use gantry_core::motion::printer::Printer;
use gantry_sim::runtime::SimMcu;
use gantry_sim::world::Stuck;

const SAMPLE: &str = include_str!("../../../assets/gcode/sample.gcode");

/// The mainboard: 50 ppm slow, booted 2 s before the host's time 0.
const MAIN: VirtualMcuOptions = VirtualMcuOptions {
    crystal_ppm: -50.0,
    drift_ppm_per_s: 0.0,
    boot_s: 2.0,
};
/// The toolboard: 150 ppm fast and warming up beside the hotend (its crystal gains 0.02 ppm
/// a second), up for 37 s already (its clock is far from the mainboard's).
const TOOLBOARD: VirtualMcuOptions = VirtualMcuOptions {
    crystal_ppm: 150.0,
    drift_ppm_per_s: 0.02,
    boot_s: 37.0,
};

/// The built-in simulated printer with the extruder, hotend and fan on `[mcu toolboard]`.
const TOOLBOARD_CONFIG: &str = include_str!("../../../tests/fixtures/toolboard.cfg");

fn toolboard_config() -> String {
    TOOLBOARD_CONFIG.to_owned()
}

/// Connects the two-board printer on a virtual clock.
fn live_printer() -> (Printer, VirtualHost) {
    live_printer_with(&toolboard_config())
}

/// Connects a two-board printer of printer.cfg `text` on a virtual clock.
fn live_printer_with(text: &str) -> (Printer, VirtualHost) {
    let config = Config::parse(text, "toolboard.cfg").expect("the config parses");
    let host = VirtualHost::with_mcus(
        vec![(SimMcu::new(), MAIN), (SimMcu::new(), TOOLBOARD)],
        VirtualOptions::default(),
    );
    let mut built = None;
    let move_counts = host
        .connect_all(|dicts| {
            let p = Printer::new(&config, &[("mcu", &dicts[0]), ("toolboard", &dicts[1])])
                .map_err(|e| e.to_string())?;
            let cmds = p.mcus.iter().map(|m| m.config_phase()).collect();
            built = Some(p);
            Ok(cmds)
        })
        .expect("both sims connect and take their configs");
    let mut printer = built.expect("built");
    let counts: Vec<usize> = move_counts.iter().map(|&c| usize::from(c)).collect();
    printer.start_live(Box::new(host.clone()), &counts);
    (printer, host)
}

/// Every stepper's position as the planner believes it equals its board's sim, to the step.
fn assert_positions_match(printer: &Printer, host: &VirtualHost) {
    for s in &printer.toolhead.steppers {
        let report = host.with_sim_at(s.mcu, |sim| sim.report());
        assert!(
            report.fault.is_none(),
            "sim {} fault: {:?}",
            s.mcu,
            report.fault
        );
        let sim = report
            .steppers
            .iter()
            .find(|r| r.oid == usize::from(s.oid))
            .unwrap_or_else(|| panic!("{} (oid {}) not in sim {}", s.name, s.oid, s.mcu));
        let sim_position = if s.sc.invert_dir() {
            -sim.position
        } else {
            sim.position
        };
        assert_eq!(
            sim_position,
            s.mcu_position(),
            "{} on MCU {}: sim at {sim_position} steps, planner at {}",
            s.name,
            s.mcu,
            s.mcu_position()
        );
    }
}

/// The host time of sim clock `clock` of a board with `crystal` (the virtual host's model).
fn host_time(clock: u64, crystal: VirtualMcuOptions) -> f64 {
    crystal.host_time_at(f64::from(gantry_sim::dictionary::CLOCK_FREQ), clock as f64)
}

#[test]
fn a_toolboard_printer_homes_heats_and_prints_to_the_step() {
    let (mut printer, host) = live_printer();
    assert_eq!(
        printer
            .toolhead
            .steppers
            .iter()
            .filter(|s| s.mcu == 1)
            .count(),
        1
    );
    let mut gcode = SAMPLE.lines().take(120).collect::<Vec<_>>().join("\n");
    // A last move that extrudes hard while X moves: both boards' final steps come together.
    gcode.push_str("\nG90\nM83\nG1 X20 Y20 F6000\nG1 X70 E12 F3000\nM400\n");
    let report = job::run(
        &mut printer,
        gcode.as_bytes(),
        JobOptions::default(),
        |_| {},
        |_| {},
    )
    .unwrap_or_else(|e| {
        let main = host.with_sim_at(0, |s| s.report());
        let tool = host.with_sim_at(1, |s| s.report());
        panic!(
            "job: {e}; mainboard fault {:?}, toolboard fault {:?} ({:?}); recent: {:#?}",
            main.fault,
            tool.fault,
            tool.fault_command,
            host.recent_messages()
        )
    });
    let errors: Vec<_> = report
        .responses
        .iter()
        .filter(|r| r.text.starts_with("!!"))
        .collect();
    assert!(errors.is_empty(), "errors: {errors:?}");
    assert_positions_match(&printer, &host);
    let main = host.with_sim_at(0, |s| s.report());
    let tool = host.with_sim_at(1, |s| s.report());
    assert!(main.shutdown_clock.is_none() && tool.shutdown_clock.is_none());
    // The hotend is the toolboard's heater, the bed the mainboard's: both held their targets.
    for (heater, target, sim) in [("extruder", 200.0, &tool), ("heater_bed", 60.0, &main)] {
        let (temp, set) = printer.heater_temperature(heater).expect("heater");
        assert_eq!(set, target, "{heater} target");
        assert!((temp - target).abs() <= 1.0, "{heater} at {temp:.2} °C");
        let world = sim
            .heaters
            .iter()
            .find(|h| h.name == heater)
            .expect("world heater");
        assert!(
            (world.temperature_c - target).abs() <= 1.5,
            "{heater}: its board's model is at {:.2} °C",
            world.temperature_c
        );
    }
    // Extrusion in time with the axes: the final move's last X step (mainboard) and last
    // extruder step (toolboard) are as far apart in host time as the planner put them in print
    // time — though the toolboard's clock runs 35 s ahead of the mainboard's, 200 ppm apart at
    // first and 203 ppm after its crystal warmed up for the 150 s of the print.
    let stepper = |name: &str| {
        printer
            .toolhead
            .steppers
            .iter()
            .find(|s| s.name == name)
            .expect("stepper")
    };
    let sim_last = |r: &gantry_sim::report::Report, name: &str| {
        let oid = usize::from(stepper(name).oid);
        r.steppers
            .iter()
            .find(|x| x.oid == oid)
            .expect("sim stepper")
            .last_step_clock64
    };
    let (x, e) = (stepper("stepper_x"), stepper("extruder"));
    assert_eq!(sim_last(&main, "stepper_x"), x.sc.last_step_clock());
    assert_eq!(sim_last(&tool, "extruder"), e.sc.last_step_clock());
    let planned = printer.toolhead.mcus[0].clock_to_print_time(x.sc.last_step_clock())
        - printer.toolhead.mcus[1].clock_to_print_time(e.sc.last_step_clock());
    let actual = host_time(sim_last(&main, "stepper_x"), MAIN)
        - host_time(sim_last(&tool, "extruder"), TOOLBOARD);
    assert!(
        (actual - planned).abs() < 0.000_1,
        "last X step − last extruder step: planned {:.4} ms, executed {:.4} ms",
        planned * 1e3,
        actual * 1e3
    );

    // Batch mode plans the same file to the same extruder steps.
    let text = toolboard_config();
    let config = Config::parse(&text, "toolboard.cfg").expect("parses");
    let dict = SimMcu::new().dictionary().clone();
    let mut batch =
        Printer::new(&config, &[("mcu", &dict), ("toolboard", &dict)]).expect("batch planner");
    batch.run_batch(gcode.as_bytes()).expect("batch");
    let e = |p: &Printer| {
        p.toolhead
            .steppers
            .iter()
            .find(|s| s.name == "extruder")
            .map(|s| s.mcu_position())
    };
    assert_eq!(e(&printer), e(&batch), "extruder net steps, live vs batch");
}

#[test]
fn a_toolboard_shutdown_stops_the_mainboard_too() {
    let (mut printer, host) = live_printer();
    printer.live_run_line("M140 S60", 1).expect("bed on");
    printer.live_run_line("M104 S200", 2).expect("hotend on");
    printer.live_idle(2.0).expect("heating");
    // The hotend's thermistor wire breaks: the toolboard shuts down on its ADC range check.
    host.with_sim_at(1, |s| {
        let world = s.model_mut().world_mut();
        if let Some(h) = world.heaters.iter_mut().find(|h| h.name == "extruder") {
            h.open_thermistor = true;
        }
    });
    let halted = printer.live_idle(10.0);
    let why = halted.expect_err("the printer halts");
    assert!(
        why.to_string().contains("MCU 'toolboard' shutdown"),
        "halted with: {why}"
    );
    assert_eq!(printer.halted(), Some(why.to_string().as_str()));
    // The mainboard was told to stop (once the wire carried it): its bed heater is off and it
    // reports the shutdown.
    let mut wire = host.clone();
    let now = wire.now();
    while wire.wait(now + 0.1).is_some() {}
    let main = host.with_sim_at(0, |s| s.report());
    assert!(main.shutdown_clock.is_some(), "the mainboard still runs");
    let bed = main
        .heaters
        .iter()
        .find(|h| h.name == "heater_bed")
        .expect("bed");
    assert_eq!(bed.duty, 0.0, "bed heater left on");
}

/// A Z probe on the toolboard (a Voron's Tap or Klicky on a CAN toolboard) homes the Z stepper
/// on the mainboard: the probe's trsync on the toolboard fires, the host relays the trigger to
/// the mainboard's trsync (Klipper's trdispatch), the Z stepper stops, and the position is read
/// back from both boards — twice (the second, slower approach). The toolboard's sim sees the bed
/// where the mainboard's Z carriage is.
#[test]
fn a_probe_on_the_toolboard_homes_z_on_the_mainboard() {
    let text = toolboard_config().replace("endstop_pin: ^PC4", "endstop_pin: ^toolboard:PC4");
    let (mut printer, host) = live_printer_with(&text);
    let z_rail = printer
        .rails
        .iter()
        .find(|r| r.name == "stepper_z")
        .expect("z rail");
    assert_eq!(z_rail.endstop.0, 1, "the Z endstop is the toolboard's");
    assert_eq!(z_rail.stepper_trsyncs.len(), 1, "a trsync on the mainboard");
    // The lowest the Z carriage went: how far past the probe's trigger it travelled.
    let lowest = std::sync::Arc::new(std::sync::Mutex::new(f64::INFINITY));
    let lowest_seen = std::sync::Arc::clone(&lowest);
    host.link_worlds(move |sims| {
        let Some(z) = sims[0]
            .report()
            .carriages
            .iter()
            .find(|c| c.axis == "z")
            .map(|c| c.position_mm)
        else {
            return;
        };
        if let Ok(mut low) = lowest_seen.lock() {
            *low = low.min(z);
        }
        let probe = sims[1]
            .model_mut()
            .world_mut()
            .carriages
            .iter_mut()
            .find(|c| c.name == "stepper_z")
            .and_then(|c| c.endstop.as_mut());
        if let Some(probe) = probe {
            probe.stuck = Some(if z <= 0.0 {
                Stuck::Triggered
            } else {
                Stuck::Open
            });
        }
    });
    let gcode = "G28\nG90\nG1 X30 Y40 Z2 F3000\nM400\n";
    let report = job::run(
        &mut printer,
        gcode.as_bytes(),
        JobOptions::default(),
        |_| {},
        |_| {},
    )
    .unwrap_or_else(|e| panic!("job: {e}; recent: {:#?}", host.recent_messages()));
    let errors: Vec<_> = report
        .responses
        .iter()
        .filter(|r| r.text.starts_with("!!"))
        .collect();
    assert!(errors.is_empty(), "errors: {errors:?}");
    assert_positions_match(&printer, &host);
    // The mainboard's Z carriage is where the toolhead is: homing stopped it at the probe.
    let main = host.with_sim_at(0, |s| s.report());
    let z = main
        .carriages
        .iter()
        .find(|c| c.axis == "z")
        .expect("z")
        .position_mm;
    assert!(
        (z - 2.0).abs() <= 1.0 / 400.0 + 1e-9,
        "Z carriage at {z} mm"
    );
    // The mainboard's trsync stopped Z within a few milliseconds of the toolboard's trigger (at
    // 5 mm/s: 0.025 mm in 5 ms), not at the end of the steps already queued.
    let lowest = *lowest.lock().expect("lowest");
    assert!(
        lowest > -0.025,
        "Z travelled {:.3} mm past the probe",
        -lowest
    );
}

#[test]
fn a_rail_split_across_mcus_is_refused_as_klipper_refuses_it() {
    let text = toolboard_config().replace(
        "[extruder]",
        "[stepper_z1]\nstep_pin: toolboard:PC0\ndir_pin: toolboard:PC1\nenable_pin: !toolboard:PA5\nmicrosteps: 16\nrotation_distance: 8\n\n[extruder]",
    );
    let config = Config::parse(&text, "toolboard.cfg").expect("parses");
    let dict = SimMcu::new().dictionary().clone();
    let err = Printer::new(&config, &[("mcu", &dict), ("toolboard", &dict)]).expect_err("refused");
    assert!(
        err.to_string()
            .contains("Multi-mcu homing not supported on multi-mcu shared axis"),
        "{err}"
    );
}
