//! Unit tests of [`crate::model`]: commands, timers and Klipper's shutdowns on a virtual clock,
//! in the default world, with commands encoded from the sim's own dictionary.

use gantry_proto::{Dictionary, Value};

use super::*;
use crate::dictionary::{self, AnalogInFormat};

const MS: u64 = 16_000;
const S: u64 = 16_000_000;

struct Bench {
    mcu: Mcu,
    dict: Dictionary,
}

impl Bench {
    fn new() -> Self {
        Self::with_format(AnalogInFormat::Current)
    }

    fn with_format(format: AnalogInFormat) -> Self {
        let dict = dictionary::parsed_with(format);
        let world = World::default_for(&dict).expect("the default world");
        Self {
            mcu: Mcu::new(McuConfig::sim(), world),
            dict,
        }
    }

    fn pin(&self, name: &str) -> i64 {
        self.dict.enumerations["pin"].value_of(name).expect("a pin")
    }

    fn cmd(&mut self, name: &str, values: &[i64]) -> Result<(), Fault> {
        let msg = self.dict.command(name).expect("declared").clone();
        let values: Vec<Value> = values.iter().map(|v| Value::Int(*v)).collect();
        self.mcu.handle(&msg, &values)
    }

    fn ok(&mut self, name: &str, values: &[i64]) {
        if let Err(e) = self.cmd(name, values) {
            panic!("{name} {values:?}: {e}");
        }
    }

    fn responses(&mut self) -> Vec<Response> {
        self.mcu.take_responses().collect()
    }

    /// Allocates `count` oids and configures with `configure`, then finalizes.
    fn configure(&mut self, count: i64, configure: impl FnOnce(&mut Self)) {
        self.ok("allocate_oids", &[count]);
        configure(self);
        self.ok("finalize_config", &[0x1234]);
    }
}

fn clock(c: u64) -> i64 {
    i64::from(clock32(c))
}

#[test]
fn config_then_motion() {
    let mut b = Bench::new();
    assert_eq!(
        b.mcu.move_count(),
        0,
        "no move queue before finalize_config"
    );
    b.configure(3, |b| {
        let (step, dir) = (b.pin("PD7"), b.pin("PC5"));
        b.ok("config_stepper", &[1, step, dir, 0, 32]);
    });
    assert_eq!(b.mcu.move_count(), 1024);
    b.ok("set_next_step_dir", &[1, 1]);
    b.ok("reset_step_clock", &[1, clock(100 * MS)]);
    b.ok("queue_step", &[1, 100, 4, 10]);
    b.mcu.advance(S);
    let (oid, s) = b.mcu.steppers().next().expect("a stepper");
    assert_eq!((oid, s.position), (1, 4));
    assert_eq!(s.last_step_clock64, 100 * MS + 460);
    b.ok("stepper_get_position", &[1]);
    assert_eq!(
        b.responses(),
        [Response::StepperPosition { oid: 1, pos: 4 }]
    );
    assert_eq!(b.mcu.config_crc, Some(0x1234));
    assert_eq!(
        b.cmd("config_trsync", &[0]),
        Err(Fault::Shutdown("Can't assign oid")),
        "no configuring after finalize_config"
    );
}

#[test]
fn klipper_shutdowns_and_refusals() {
    let mut b = Bench::new();
    b.ok("allocate_oids", &[2]);
    assert_eq!(
        b.cmd("queue_step", &[0, 1, 1, 0]),
        Err(Fault::Shutdown("Invalid oid type"))
    );
    assert_eq!(
        b.responses(),
        [Response::Shutdown {
            clock: 0,
            reason: "Invalid oid type"
        }]
    );
    assert_eq!(
        b.cmd("get_clock", &[]),
        Err(Fault::Shutdown("Invalid oid type")),
        "after a shutdown every command is refused"
    );
    b.mcu.clear_shutdown();
    assert!(!b.mcu.is_shutdown());
    b.mcu.clear_shutdown();
    assert_eq!(
        b.mcu.shutdown_reason(),
        Some("Shutdown cleared when not shutdown")
    );

    let mut b = Bench::new();
    b.ok("allocate_oids", &[1]);
    assert_eq!(
        b.cmd("config_trsync", &[4]),
        Err(Fault::Shutdown("Can't assign oid"))
    );
    let mut b = Bench::new();
    let msg = MessageFormat::parse_message(99, "spi_send oid=%c").expect("valid");
    assert_eq!(
        b.mcu.handle(&msg, &[Value::Int(0)]),
        Err(Fault::Unsupported("spi_send".into()))
    );
    assert_eq!(b.mcu.shutdown_reason(), Some("Invalid command"));
}

#[test]
fn a_timer_in_the_past_is_timer_too_close() {
    type Setup = fn(&mut Bench) -> Result<(), Fault>;
    let cases: [(&str, Setup); 5] = [
        ("a stepper's first step", |b| {
            let (step, dir) = (b.pin("PD7"), b.pin("PC5"));
            b.ok("config_stepper", &[0, step, dir, 0, 32]);
            b.ok("finalize_config", &[0]);
            b.ok("reset_step_clock", &[0, clock(S - 10 * MS)]);
            b.cmd("queue_step", &[0, 4000, 1, 0])
        }),
        ("queue_digital_out", |b| {
            let pin = b.pin("PB4");
            b.ok("config_digital_out", &[0, pin, 0, 0, 0]);
            b.ok("finalize_config", &[0]);
            b.cmd("queue_digital_out", &[0, clock(S - 2 * MS), 1])
        }),
        ("endstop_home", |b| {
            let pin = b.pin("PC2");
            b.ok("config_endstop", &[0, pin, 1]);
            b.ok("config_trsync", &[1]);
            b.ok("finalize_config", &[0]);
            b.cmd("endstop_home", &[0, clock(S / 2), 240, 4, 4000, 1, 1, 1])
        }),
        ("trsync_set_timeout", |b| {
            b.ok("config_trsync", &[0]);
            b.ok("finalize_config", &[0]);
            b.ok("trsync_start", &[0, 0, 0, 4]);
            b.cmd("trsync_set_timeout", &[0, clock(S - 5 * MS)])
        }),
        ("query_analog_in", |b| {
            let pin = b.pin("PA7");
            b.ok("config_analog_in", &[0, pin]);
            b.ok("finalize_config", &[0]);
            b.cmd(
                "query_analog_in",
                &[
                    0,
                    clock(S - 100 * MS),
                    MS as i64,
                    8,
                    300 * MS as i64,
                    2,
                    0,
                    65535,
                    4,
                ],
            )
        }),
    ];
    for (what, setup) in cases {
        let mut b = Bench::new();
        b.ok("allocate_oids", &[2]);
        b.mcu.advance(S);
        assert_eq!(
            setup(&mut b),
            Err(Fault::Shutdown("Timer too close")),
            "{what}"
        );
    }
    // Within the 1 ms slack the event runs late instead.
    let mut b = Bench::new();
    b.ok("allocate_oids", &[1]);
    let pin = b.pin("PB4");
    b.ok("config_digital_out", &[0, pin, 0, 0, 0]);
    b.ok("finalize_config", &[0]);
    b.mcu.advance(S);
    b.ok("queue_digital_out", &[0, clock(S - MS / 2), 1]);
    b.mcu.advance(S + 1);
    assert_eq!(b.mcu.world().fans[0].duty, 1.0);
}

#[test]
fn the_move_queue_overflows_at_move_count() {
    let mut b = Bench::new();
    b.ok("allocate_oids", &[1]);
    let (step, dir) = (b.pin("PD7"), b.pin("PC5"));
    b.ok("config_stepper", &[0, step, dir, 0, 32]);
    assert_eq!(
        b.cmd("queue_step", &[0, 4000, 1, 0]),
        Err(Fault::Shutdown("Move queue overflow")),
        "no move queue before finalize_config"
    );
    let mut b = Bench::new();
    b.configure(1, |b| b.ok("config_stepper", &[0, step, dir, 0, 32]));
    b.ok("reset_step_clock", &[0, clock(S / 2)]);
    // The first move loads at once (its slot is free again); the next 1024 wait in the queue.
    for _ in 0..=1024 {
        b.ok("queue_step", &[0, 4000, 10, 0]);
    }
    assert_eq!(b.mcu.free_moves(), 0);
    assert_eq!(
        b.cmd("queue_step", &[0, 4000, 10, 0]),
        Err(Fault::Shutdown("Move queue overflow"))
    );
    // Once moves load, their slots come back.
    let mut b = Bench::new();
    b.configure(1, |b| b.ok("config_stepper", &[0, step, dir, 0, 32]));
    b.ok("reset_step_clock", &[0, clock(S / 2)]);
    for _ in 0..=1024 {
        b.ok("queue_step", &[0, 4000, 10, 0]);
    }
    // 30 moves of 10 steps have ended; each next move loads just after the last step's pulse.
    b.mcu.advance(S / 2 + 30 * 40_000 + 100);
    assert_eq!(b.mcu.free_moves(), 30);
    b.ok("queue_step", &[0, 4000, 10, 0]);
}

#[test]
fn a_move_far_behind_the_last_step_is_stepper_too_far_in_past() {
    let mut b = Bench::new();
    let (step, dir) = (b.pin("PD7"), b.pin("PC5"));
    b.configure(1, |b| b.ok("config_stepper", &[0, step, dir, 0, 32]));
    b.ok("reset_step_clock", &[0, clock(S / 2)]);
    b.ok("queue_step", &[0, 4000, 100, 0]);
    // -2 ms as the MCU's signed arithmetic reads the interval.
    b.ok("queue_step", &[0, -32_000, 1, 0]);
    b.mcu.advance(S);
    assert_eq!(b.mcu.shutdown_reason(), Some("Stepper too far in past"));
    assert!(b.mcu.steppers().all(|(_, s)| !s.is_active()), "stopped");
}

#[test]
fn max_duration_expiry_and_overrun() {
    let setup = |b: &mut Bench| {
        let pin = b.pin("PD5");
        b.configure(1, |b| {
            b.ok("config_digital_out", &[0, pin, 0, 0, 3 * S as i64]);
            b.ok("set_digital_out_pwm_cycle", &[0, 100 * MS as i64]);
        });
    };
    // On at 0.1 s and never refreshed: at 3.1 s the output has run out of time.
    let mut b = Bench::new();
    setup(&mut b);
    b.ok("queue_digital_out", &[0, clock(100 * MS), 50 * MS as i64]);
    b.mcu.advance(3 * S + 99 * MS);
    assert!(!b.mcu.is_shutdown());
    assert_eq!(b.mcu.world().heaters[0].duty, 0.5);
    b.mcu.advance(3 * S + 100 * MS);
    assert_eq!(
        b.mcu.shutdown_reason(),
        Some("Missed scheduling of next digital out event")
    );
    assert_eq!(
        b.mcu.world().heaters[0].duty,
        0.0,
        "shutdown restores the default"
    );
    // Refreshed within max_duration, it runs on.
    let mut b = Bench::new();
    setup(&mut b);
    for k in 0..10 {
        b.ok(
            "queue_digital_out",
            &[0, clock(100 * MS + k * 2 * S), 50 * MS as i64],
        );
        b.mcu.advance(k * 2 * S + S);
    }
    b.ok("queue_digital_out", &[0, clock(20 * S), 0]);
    b.mcu.advance(60 * S);
    assert!(!b.mcu.is_shutdown(), "{:?}", b.mcu.shutdown_reason());
    // The next update is queued past the deadline.
    let mut b = Bench::new();
    setup(&mut b);
    b.ok("queue_digital_out", &[0, clock(100 * MS), 50 * MS as i64]);
    b.ok("queue_digital_out", &[0, clock(4 * S), 50 * MS as i64]);
    b.mcu.advance(S);
    assert_eq!(
        b.mcu.shutdown_reason(),
        Some("Scheduled digital out event will exceed max_duration")
    );
    // update_digital_out starts the deadline too, and a later queued update is refused at once.
    let mut b = Bench::new();
    setup(&mut b);
    b.mcu.advance(S);
    b.ok("update_digital_out", &[0, 1]);
    assert_eq!(
        b.cmd("queue_digital_out", &[0, clock(5 * S), 0]),
        Err(Fault::Shutdown(
            "Scheduled digital out event will exceed max_duration"
        ))
    );
}

#[test]
fn homing_stops_the_stepper_at_the_endstop() {
    let mut b = Bench::new();
    let (step, dir, endstop) = (b.pin("PD7"), b.pin("PC5"), b.pin("PC2"));
    b.configure(3, |b| {
        b.ok("config_stepper", &[0, step, dir, 0, 32]);
        b.ok("config_endstop", &[1, endstop, 1]);
        b.ok("config_trsync", &[2]);
    });
    // Klipper's sequence: arm the trsync (reports every 75 ms, timeout 10 s), register the
    // stepper, arm the endstop (sample every 2000 ticks, confirm 4 times 240 ticks apart).
    b.ok("trsync_start", &[2, clock(100 * MS), 75 * MS as i64, 4]);
    b.ok("stepper_stop_on_trigger", &[0, 2]);
    b.ok("trsync_set_timeout", &[2, clock(10 * S)]);
    b.ok("endstop_home", &[1, clock(100 * MS), 240, 4, 2000, 1, 2, 1]);
    // stepper_x starts at 110 mm; dir=1 moves toward 0 (dir_pin !PC5); 50 mm/s at 80 steps/mm
    // is 4000 ticks a step. Queue 150 mm of travel.
    b.ok("set_next_step_dir", &[0, 1]);
    b.ok("reset_step_clock", &[0, clock(100 * MS)]);
    for _ in 0..12 {
        b.ok("queue_step", &[0, 4000, 1000, 0]);
    }
    b.mcu.advance(150 * MS);
    let first = b.responses();
    assert!(
        matches!(
            first.as_slice(),
            [Response::TrsyncState {
                oid: 2,
                can_trigger: true,
                trigger_reason: 0,
                ..
            }]
        ),
        "{first:?}"
    );
    b.mcu.advance(5 * S);
    assert!(!b.mcu.is_shutdown());
    let (_, s) = b.mcu.steppers().next().expect("a stepper");
    // 110 mm at 80 steps/mm; the confirmation takes less than a step.
    assert!((8800..=8801).contains(&s.position), "{}", s.position);
    assert!(!s.is_active(), "stopped, its queue flushed");
    let hit_at = s.last_step_clock64;
    let triggers: Vec<Response> = b
        .responses()
        .into_iter()
        .filter(|r| {
            matches!(
                r,
                Response::TrsyncState {
                    can_trigger: false,
                    ..
                }
            )
        })
        .collect();
    let Some(Response::TrsyncState {
        trigger_reason: 1,
        clock: trigger_clock,
        ..
    }) = triggers.first()
    else {
        panic!("no trigger report: {triggers:?}");
    };
    assert!(u64::from(*trigger_clock) >= hit_at);
    // The host's follow-up: stop the trsync, disarm, read the state and the position.
    b.ok("trsync_trigger", &[2, 2]);
    b.ok("endstop_home", &[1, 0, 0, 0, 0, 0, 0, 0]);
    b.ok("endstop_query_state", &[1]);
    b.ok("stepper_get_position", &[0]);
    let replies = b.responses();
    assert!(matches!(
        replies[0],
        Response::TrsyncState {
            can_trigger: false,
            trigger_reason: 1,
            clock: 0,
            ..
        }
    ));
    let Response::EndstopState {
        homing: false,
        next_clock,
        pin_value: true,
        ..
    } = replies[1]
    else {
        panic!("{replies:?}");
    };
    // next_clock − rest_ticks is the first matching sample: at or after the step that hit.
    let first_match = u64::from(next_clock) - 2000;
    assert!((hit_at..hit_at + 4000).contains(&first_match));
    let report = crate::report::Report::from_model(&b.mcu, &b.dict, Vec::new());
    let x = &report.carriages[0];
    assert!(x.position_mm.abs() < 0.02, "{}", x.position_mm);
    // Moves are discarded until reset_step_clock.
    let stopped_at = b.mcu.steppers().next().map(|(_, s)| s.steps);
    b.ok("queue_step", &[0, 4000, 10, 0]);
    b.mcu.advance(6 * S);
    assert_eq!(b.mcu.steppers().next().map(|(_, s)| s.steps), stopped_at);
    b.ok("reset_step_clock", &[0, clock(6 * S + 100 * MS)]);
    b.ok("queue_step", &[0, 4000, 10, 0]);
    b.mcu.advance(7 * S);
    assert_eq!(
        b.mcu.steppers().next().map(|(_, s)| s.steps),
        stopped_at.map(|n| n + 10)
    );
}

#[test]
fn a_trsync_times_out_with_its_expire_reason() {
    let mut b = Bench::new();
    let (step, dir) = (b.pin("PD7"), b.pin("PC5"));
    b.configure(2, |b| {
        b.ok("config_stepper", &[0, step, dir, 0, 32]);
        b.ok("config_trsync", &[1]);
    });
    b.ok("trsync_start", &[1, 0, 0, 4]);
    b.ok("stepper_stop_on_trigger", &[0, 1]);
    b.ok("trsync_set_timeout", &[1, clock(250 * MS)]);
    b.ok("reset_step_clock", &[0, clock(100 * MS)]);
    b.ok("queue_step", &[0, 4000, 1000, 0]);
    b.mcu.advance(S);
    assert_eq!(
        b.responses(),
        [Response::TrsyncState {
            oid: 1,
            can_trigger: false,
            trigger_reason: 4,
            clock: clock(250 * MS) as u32,
        }]
    );
    let (_, s) = b.mcu.steppers().next().expect("a stepper");
    assert_eq!(s.steps, 150 * MS / 4000, "stopped at the timeout");
}

#[test]
fn a_heater_heats_with_pwm_and_cools_without() {
    let mut b = Bench::new();
    let pin = b.pin("PD5");
    b.configure(1, |b| {
        b.ok("config_digital_out", &[0, pin, 0, 0, 3 * S as i64]);
        b.ok("set_digital_out_pwm_cycle", &[0, 100 * MS as i64]);
    });
    // Full power, refreshed every 2 s as Klipper's heater code does, for 30 s.
    for k in 0..15 {
        b.ok(
            "queue_digital_out",
            &[0, clock(100 * MS + k * 2 * S), 100 * MS as i64],
        );
        b.mcu.advance(k * 2 * S + S);
    }
    b.ok("queue_digital_out", &[0, clock(30 * S + 100 * MS), 0]);
    b.mcu.advance(30 * S + 100 * MS);
    let hot = b.mcu.world().heaters[0].temperature_c;
    assert!(hot > 80.0, "{hot}");
    b.mcu.advance(90 * S);
    let cooled = b.mcu.world().heaters[0].temperature_c;
    assert!(cooled < hot - 20.0 && cooled > 25.0, "{cooled}");
    assert!(!b.mcu.is_shutdown());
}

fn analog_setup(b: &mut Bench) {
    let pin = b.pin("PA7");
    b.configure(1, |b| b.ok("config_analog_in", &[0, pin]));
}

/// Klipper's defaults for a thermistor: 8 samples 1 ms apart every 300 ms, range 0..250 °C.
fn query(bytes_per_report: Option<i64>, min: i64, max: i64) -> Vec<i64> {
    let mut v = vec![0, clock(100 * MS), MS as i64, 8, 300 * MS as i64];
    v.extend(bytes_per_report);
    v.extend([min, max, 4]);
    v
}

fn sums(responses: &[Response]) -> Vec<Vec<u16>> {
    responses
        .iter()
        .filter_map(|r| match r {
            Response::AnalogInState { values, .. } => Some(values.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn analog_in_reports_thermistor_sums_in_both_formats() {
    // Room temperature through EPCOS behind 4700 Ω: 0.95511 of full scale, times 8 samples.
    let expected = (0.955_11_f64 * 4095.0).round() as u16 * 8;
    let mut b = Bench::new();
    analog_setup(&mut b);
    b.ok("query_analog_in", &query(Some(2), 1000, 32500));
    b.mcu.advance(100 * MS + 7 * MS);
    let r = b.responses();
    assert_eq!(
        r,
        [Response::AnalogInState {
            oid: 0,
            next_clock: clock(400 * MS) as u32,
            values: vec![expected]
        }]
    );
    // Batched: three sums per report of 6 bytes.
    let mut b = Bench::new();
    analog_setup(&mut b);
    b.ok("query_analog_in", &query(Some(6), 1000, 32500));
    b.mcu.advance(S);
    assert_eq!(sums(&b.responses()), [vec![expected; 3]]);
    // The older format: no bytes_per_report, one sum per report.
    let mut b = Bench::with_format(AnalogInFormat::Legacy);
    analog_setup(&mut b);
    b.ok("query_analog_in", &query(None, 1000, 32500));
    b.mcu.advance(S);
    assert_eq!(sums(&b.responses()), vec![vec![expected]; 3]);
}

#[test]
fn an_open_thermistor_is_adc_out_of_range() {
    let mut b = Bench::new();
    analog_setup(&mut b);
    b.ok("query_analog_in", &query(Some(2), 1000, 32500));
    b.mcu.advance(S);
    b.mcu
        .world_mut()
        .inject(&crate::world::WorldFault::OpenThermistor("extruder".into()))
        .expect("a heater");
    // Four reports out of range in a row (range_check_count) shut the MCU down.
    b.mcu.advance(S + 3 * 300 * MS);
    assert!(!b.mcu.is_shutdown());
    b.mcu.advance(S + 4 * 300 * MS);
    assert_eq!(b.mcu.shutdown_reason(), Some("ADC out of range"));
    // Sampling goes on while shut down.
    b.responses();
    b.mcu.advance(3 * S);
    assert_eq!(sums(&b.responses()).last(), Some(&vec![8 * 4095]));
}

#[test]
fn a_stuck_endstop_triggers_at_once_or_never() {
    for stuck in [crate::world::Stuck::Triggered, crate::world::Stuck::Open] {
        let mut b = Bench::new();
        b.mcu
            .world_mut()
            .inject(&crate::world::WorldFault::StuckEndstop(
                "stepper_x".into(),
                stuck,
            ))
            .expect("stepper_x has an endstop");
        let (step, dir, endstop) = (b.pin("PD7"), b.pin("PC5"), b.pin("PC2"));
        b.configure(3, |b| {
            b.ok("config_stepper", &[0, step, dir, 0, 32]);
            b.ok("config_endstop", &[1, endstop, 1]);
            b.ok("config_trsync", &[2]);
        });
        b.ok("trsync_start", &[2, 0, 0, 4]);
        b.ok("stepper_stop_on_trigger", &[0, 2]);
        b.ok("trsync_set_timeout", &[2, clock(2 * S)]);
        b.ok("endstop_home", &[1, clock(100 * MS), 240, 4, 2000, 1, 2, 1]);
        b.ok("set_next_step_dir", &[0, 1]);
        b.ok("reset_step_clock", &[0, clock(100 * MS)]);
        for _ in 0..12 {
            b.ok("queue_step", &[0, 4000, 1000, 0]);
        }
        b.mcu.advance(5 * S);
        let reasons: Vec<u8> = b
            .responses()
            .iter()
            .filter_map(|r| match r {
                Response::TrsyncState {
                    can_trigger: false,
                    trigger_reason,
                    ..
                } => Some(*trigger_reason),
                _ => None,
            })
            .collect();
        let steps = b.mcu.steppers().next().map_or(0, |(_, s)| s.steps);
        match stuck {
            // Triggered from the first sample: confirmed within 720 ticks, before any step.
            crate::world::Stuck::Triggered => assert_eq!((reasons, steps), (vec![1], 0)),
            // Never triggered: the trsync times out at 2 s (expire reason 4) and stops the move.
            crate::world::Stuck::Open => {
                assert_eq!(reasons, [4]);
                assert_eq!(steps, (2 * S - 100 * MS) / 4000);
            }
        }
    }
}

#[test]
fn reset_forgets_the_config_but_not_the_world() {
    let mut b = Bench::new();
    b.configure(2, |b| {
        let (step, dir) = (b.pin("PD7"), b.pin("PC5"));
        b.ok("config_stepper", &[1, step, dir, 0, 32]);
    });
    b.ok("set_next_step_dir", &[1, 1]);
    b.ok("reset_step_clock", &[1, clock(100 * MS)]);
    b.ok("queue_step", &[1, 100, 800, 0]);
    b.mcu.advance(S);
    let pd7 = b.pin("PD7");
    let carriage = |mcu: &Mcu| {
        mcu.world()
            .carriages
            .iter()
            .find(|c| c.step_pin == pd7)
            .expect("PD7 drives a carriage")
            .clone()
    };
    let moved_mm = carriage(&b.mcu).position_mm(800);
    assert!((moved_mm - carriage(&b.mcu).start_mm).abs() > 1.0);

    // Shut down (the host died), then FIRMWARE_RESTART's `reset`.
    b.mcu.shutdown("Command request");
    b.mcu.reset();
    assert!(!b.mcu.is_shutdown());
    assert_eq!(b.mcu.config_crc, None);
    assert_eq!(b.mcu.move_count(), 0);
    assert_eq!(b.mcu.steppers().count(), 0);
    assert!(
        (carriage(&b.mcu).start_mm - moved_mm).abs() < 1e-9,
        "the carriage stays where the steps took it"
    );
    // A new configuration is accepted.
    b.configure(1, |_| {});
    assert_eq!(b.mcu.config_crc, Some(0x1234));
    // A reset of a running board needs no shutdown first.
    b.mcu.reset();
    assert!(!b.mcu.is_shutdown());
    assert_eq!(b.mcu.config_crc, None);
}
