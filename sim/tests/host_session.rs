//! proto's [`HostSession`] against the simulated MCU, in process, on a virtual clock: it connects,
//! downloads the dictionary, synchronises clocks, runs the config phase, and streams timed
//! `queue_step` commands that the sim executes on time — on a clean wire and with 1 % of the
//! bytes corrupted. A second session to the same MCU finds it configured with the same CRC
//! (what a host reconnecting reuses), and a shutdown is reported with Klipper's message.

use gantry_proto::crc::crc32;
use gantry_proto::session::{ConfigState, HostSession, SessionEvent};
use gantry_sim::faulty::FaultyWire;
use gantry_sim::runtime::SimMcu;

/// Host time → sim clock: the sim's crystal runs 50 ppm slow and booted 2 s before host time 0.
fn mcu_clock(now_s: f64) -> u64 {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let c = ((now_s + 2.0) * 16e6 * (1.0 - 50e-6)) as u64;
    c
}

struct Wire {
    to_mcu: FaultyWire,
    to_host: FaultyWire,
}

/// Runs host and sim in 0.5 ms steps from `start_s` until `done` says so (or `limit_s`);
/// returns the host time reached.
fn run(
    host: &mut HostSession,
    sim: &mut SimMcu,
    wire: &mut Wire,
    start_s: f64,
    limit_s: f64,
    mut on_event: impl FnMut(&mut HostSession, SessionEvent, f64) -> bool,
) -> f64 {
    let mut buf = Vec::new();
    let mut tick = 0_u32;
    loop {
        let now_s = start_s + f64::from(tick) * 0.0005;
        tick += 1;
        assert!(now_s < limit_s, "the session did not finish by {limit_s} s");
        buf.clear();
        host.poll_transmit(now_s, &mut buf);
        wire.to_mcu.write(now_s, &buf);
        sim.handle_input(&wire.to_mcu.read(now_s));
        buf.clear();
        sim.poll(mcu_clock(now_s), &mut buf);
        wire.to_host.write(now_s, &buf);
        host.handle_input(&wire.to_host.read(now_s), now_s);
        while let Some(event) = host.poll_event() {
            if on_event(host, event, now_s) {
                return now_s;
            }
        }
    }
}

fn config_phase() -> (Vec<String>, u32) {
    // Two steppers on the default world's X and Y (step PD7/PC6, dir PC5/PC7) and an endstop.
    let mut cmds = vec![
        "allocate_oids count=3".to_owned(),
        "config_stepper oid=0 step_pin=PD7 dir_pin=PC5 invert_step=0 step_pulse_ticks=32".into(),
        "config_stepper oid=1 step_pin=PC6 dir_pin=PC7 invert_step=0 step_pulse_ticks=32".into(),
        "config_endstop oid=2 pin=PC2 pull_up=1".into(),
    ];
    let crc = crc32(cmds.join("\n").as_bytes());
    cmds.push(format!("finalize_config crc={crc}"));
    (cmds, crc)
}

/// Connects, configures when needed, and returns the config state seen at connect and the host
/// time reached.
fn connect(
    host: &mut HostSession,
    sim: &mut SimMcu,
    wire: &mut Wire,
    start_s: f64,
) -> (ConfigState, f64) {
    let (cmds, crc) = config_phase();
    let mut first = None;
    let end = run(host, sim, wire, start_s, start_s + 60.0, |h, event, now| {
        match event {
            SessionEvent::ClockSynced { freq_hz, .. } => {
                let truth = 16e6 * (1.0 - 50e-6);
                let ppm = (freq_hz / truth - 1.0) * 1e6;
                // Eight samples over 0.35 s with the wire's jitter: klippy accepts 1 %.
                assert!(
                    ppm.abs() < 2000.0,
                    "clock synced at {freq_hz:.0} Hz ({ppm:+.1} ppm)"
                );
                h.query_config(now).expect("identified");
            }
            SessionEvent::Config(state) if first.is_none() => {
                first = Some(state);
                if state.is_config {
                    assert_eq!(state.crc, crc, "same config, same CRC");
                    return true;
                }
                for c in &cmds {
                    h.send_text(c)
                        .expect("the sim declares the config commands");
                }
                h.query_config(now).expect("identified");
            }
            SessionEvent::Config(state) => {
                assert!(state.is_config && state.crc == crc && !state.is_shutdown);
                assert_eq!(state.move_count, 1024);
                return true;
            }
            SessionEvent::Lost { why } => panic!("lost: {why}"),
            SessionEvent::Shutdown { reason, .. } => panic!("shutdown: {reason}"),
            _ => {}
        }
        false
    });
    (first.expect("a config answer"), end)
}

fn stream_steps(corrupt: f64, seed: u64) {
    let mut sim = SimMcu::new();
    let mut wire = Wire {
        to_mcu: FaultyWire::new(0.0005, corrupt, 0.0, seed),
        to_host: FaultyWire::new(0.0005, corrupt, 0.0, seed + 7),
    };
    let mut host = HostSession::new();
    let (state, now) = connect(&mut host, &mut sim, &mut wire, 0.0);
    assert!(!state.is_config, "a fresh MCU is not configured");

    // 400 queue_step commands (4 000 steps per stepper) over 4 s, starting 0.5 s ahead, each
    // released by its move-queue slot (min_clock) and due by its first step (req_clock).
    let sync = host.clock_sync().expect("synchronised");
    let start_clock = sync.print_time_to_clock(sync.estimated_print_time(now) + 0.5);
    let interval = 16_000_u64; // 1 ms per step
    for oid in 0..2 {
        host.send_text(&format!("set_next_step_dir oid={oid} dir=1"))
            .expect("declared");
        host.send_text(&format!(
            "reset_step_clock oid={oid} clock={}",
            start_clock & 0xffff_ffff
        ))
        .expect("declared");
    }
    for i in 0..400_u64 {
        let first_step = start_clock + i * 10 * interval;
        for oid in 0..2 {
            let msg = host
                .encode(&format!(
                    "queue_step oid={oid} interval={interval} count=10 add=0"
                ))
                .expect("declared");
            // Klipper lets a command go once the slot it needs has freed: here, 200 moves back.
            let min_clock = if i >= 200 {
                first_step - 200 * 10 * interval
            } else {
                0
            };
            host.send_timed(msg, min_clock, first_step).expect("fits");
        }
    }
    let end_clock = start_clock + 4000 * interval;
    let mut done = false;
    run(
        &mut host,
        &mut sim,
        &mut wire,
        now,
        now + 30.0,
        |_, event, t| {
            match event {
                SessionEvent::Shutdown { reason, .. } => panic!("shutdown: {reason}"),
                SessionEvent::Lost { why } => panic!("lost: {why}"),
                _ => {}
            }
            if mcu_clock(t) > end_clock + 16_000_000 {
                done = true;
            }
            done
        },
    );
    assert_eq!(sim.shutdown_reason(), None);
    let positions: Vec<i64> = sim.model().steppers().map(|(_, s)| s.position).collect();
    assert_eq!(
        positions,
        [4000, 4000],
        "every step arrived once and in order"
    );
    assert!(host.link_stats().blocks_sent > 0);
    if corrupt > 0.0 {
        assert!(
            host.link_stats().retransmits > 0,
            "corruption was recovered"
        );
    }

    // A second host session: the MCU keeps its configuration and sequence; the host sees the
    // same CRC and would reuse it.
    let mut again = HostSession::new();
    let (state, _) = connect(&mut again, &mut sim, &mut wire, now + 40.0);
    assert!(state.is_config && !state.is_shutdown);
}

#[test]
fn a_session_configures_and_streams_steps_on_a_clean_wire() {
    stream_steps(0.0, 1);
}

#[test]
fn a_session_configures_and_streams_steps_with_one_percent_corruption() {
    stream_steps(0.01, 5);
}

#[test]
fn a_late_command_is_reported_as_klippers_shutdown() {
    let mut sim = SimMcu::new();
    let mut wire = Wire {
        to_mcu: FaultyWire::new(0.0005, 0.0, 0.0, 1),
        to_host: FaultyWire::new(0.0005, 0.0, 0.0, 2),
    };
    let mut host = HostSession::new();
    let (_, now) = connect(&mut host, &mut sim, &mut wire, 0.0);
    let sync = host.clock_sync().expect("synchronised");
    // A step clock one second in the past.
    let past = sync.print_time_to_clock(sync.estimated_print_time(now) - 1.0);
    host.send_text(&format!(
        "reset_step_clock oid=0 clock={}",
        past & 0xffff_ffff
    ))
    .expect("declared");
    host.send_text("queue_step oid=0 interval=100 count=1 add=0")
        .expect("declared");
    let mut reason = None;
    run(
        &mut host,
        &mut sim,
        &mut wire,
        now,
        now + 5.0,
        |_, event, _| {
            if let SessionEvent::Shutdown { reason: r, clock } = event {
                assert!(clock.is_some(), "`shutdown` carries its clock");
                reason = Some(r);
                return true;
            }
            false
        },
    );
    assert_eq!(reason.as_deref(), Some("Timer too close"));
}
