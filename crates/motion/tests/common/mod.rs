//! Helpers shared by the oracle tests.

use gantry_motion::steptrace::Comparison;
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

/// Asserts that every stepper of `cmp` steps at exactly Klipper's clocks, as on every oracle case:
/// the comparison's 25 µs tolerance alone lets a change in where steps are flushed or how a time
/// rounds go unnoticed (case j ran within 0.25 µs of the limit that way).
pub(crate) fn assert_bit_exact(case: &str, cmp: &Comparison) {
    let off: Vec<String> = cmp
        .steppers
        .iter()
        .filter(|s| s.max_abs_delta_s != 0.0)
        .map(|s| {
            format!(
                "{} up to {:.3} µs",
                s.expected.step_pin,
                s.max_abs_delta_s * 1e6
            )
        })
        .collect();
    assert!(
        off.is_empty(),
        "{case}: steps off Klipper's clocks: {}\n{cmp}",
        off.join(", ")
    );
}
