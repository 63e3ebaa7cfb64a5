//! Helpers shared by the oracle tests.

use gantry_motion::steptrace::Trace;
use gantry_proto::Dictionary;

/// The messages of `stream` up to and including `finalize_config`, as text.
pub(crate) fn config_phase_of(dict: &Dictionary, stream: &[u8]) -> Vec<String> {
    let mut lines = Vec::new();
    let mut done = false;
    gantry_proto::dump::dump(dict, stream, |e| {
        if let gantry_proto::dump::Event::Message(m) = e
            && !done
        {
            done = m.starts_with("finalize_config");
            lines.push(m.to_owned());
        }
    });
    lines
}

/// The first `count` messages of `stream`, as text.
pub(crate) fn first_messages(dict: &Dictionary, stream: &[u8], count: usize) -> Vec<String> {
    let mut lines = Vec::new();
    gantry_proto::dump::dump(dict, stream, |e| {
        if let gantry_proto::dump::Event::Message(m) = e
            && lines.len() < count
        {
            lines.push(m.to_owned());
        }
    });
    lines
}

/// How many messages of `stream` start with `prefix`.
pub(crate) fn count_messages(dict: &Dictionary, stream: &[u8], prefix: &str) -> usize {
    let mut n = 0;
    gantry_proto::dump::dump(dict, stream, |e| {
        if let gantry_proto::dump::Event::Message(m) = e
            && m.starts_with(prefix)
        {
            n += 1;
        }
    });
    n
}

/// Asserts that the start of Klipper's stream `theirs` is, message for message, our config
/// phase (oids and CRC included) followed by our startup commands (`query_analog_in` for each
/// heater's sensor, PWM start values), that our encoded stream `ours` starts the same way, and
/// that Klipper sends no `query_analog_in` we do not.
pub(crate) fn assert_startup_matches(
    case: &str,
    dict: &Dictionary,
    config_phase: &[String],
    startup: &[String],
    ours: &[u8],
    theirs: &[u8],
) {
    assert_eq!(
        config_phase,
        config_phase_of(dict, theirs).as_slice(),
        "{case}: config phase"
    );
    let expected: Vec<String> = config_phase.iter().chain(startup).cloned().collect();
    assert_eq!(
        first_messages(dict, theirs, expected.len()),
        expected,
        "{case}: config phase and startup commands"
    );
    assert_eq!(
        first_messages(dict, ours, expected.len()),
        expected,
        "{case}: our stream's start"
    );
    let queries = |cmds: &[String]| {
        cmds.iter()
            .filter(|c| c.starts_with("query_analog_in "))
            .count()
    };
    assert_eq!(
        count_messages(dict, theirs, "query_analog_in "),
        queries(startup),
        "{case}: query_analog_in count"
    );
}

/// Asserts, beyond the 25 µs comparison, that our stream is Klipper's step for step: every
/// stepper's steps at exactly Klipper's clocks (steppers paired by step pin, as the comparison
/// pairs them; step times in closed form are taken only where they give the search's clock,
/// so nothing may be a tick away), and no more `queue_step` commands than Klipper sends
/// (benchmark B5).
pub(crate) fn assert_close_to_klipper(case: &str, expected: &Trace, actual: &Trace) {
    let mut off = Vec::new();
    for e in &expected.steppers {
        let Some(a) = actual.steppers.iter().find(|a| a.step_pin == e.step_pin) else {
            off.push(format!("{}: no stepper with this step pin", e.step_pin));
            continue;
        };
        if e.clocks.is_empty() {
            continue;
        }
        let exact = e
            .clocks
            .iter()
            .zip(&a.clocks)
            .filter(|(x, y)| x == y)
            .count();
        if exact < e.clocks.len() || a.clocks.len() != e.clocks.len() {
            let share = exact as f64 / e.clocks.len() as f64;
            off.push(format!(
                "{}: {exact} of {} steps at Klipper's clock ({:.3} %)",
                e.step_pin,
                e.clocks.len(),
                share * 100.0
            ));
        }
    }
    assert!(
        off.is_empty(),
        "{case}: too far from Klipper's clocks: {}",
        off.join("; ")
    );
    assert_no_more_queue_steps(case, expected, actual);
}

/// Asserts benchmark B5: no more `queue_step` commands than Klipper sends.
pub(crate) fn assert_no_more_queue_steps(case: &str, expected: &Trace, actual: &Trace) {
    assert!(
        actual.total_queue_steps() <= expected.total_queue_steps(),
        "{case}: {} queue_step commands, Klipper sends {}",
        actual.total_queue_steps(),
        expected.total_queue_steps()
    );
}
