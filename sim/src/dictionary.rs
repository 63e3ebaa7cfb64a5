//! The simulated board's data dictionary: what `gantry-sim` reports through `identify`.
//!
//! The formats are Klipper's, byte for byte (a host looks commands up by their exact text); the ids
//! are the sim's own, numbered from 2 like a firmware build (0 and 1 are fixed). The board is an
//! AVR-like 16 MHz MCU with ports PA..PL of 8 pins each, the names `assets/printers/gantry-sim.cfg`
//! uses, and a UART-sized receive window.

use gantry_proto::Dictionary;
use serde_json::{Map, Value, json};

/// The board name the dictionary reports as `MCU`.
pub const MCU_NAME: &str = "gantry-sim";
/// The simulated clock, ticks per second.
pub const CLOCK_FREQ: u32 = 16_000_000;
/// The move queue's size, as `get_config` reports it after `finalize_config`.
pub const MOVE_COUNT: u16 = 1024;
/// The ADC's full scale (12 bits).
pub const ADC_MAX: u16 = 4095;

/// The commands, in id order from 2.
pub const COMMANDS: &[&str] = &[
    "get_config",
    "allocate_oids count=%c",
    "finalize_config crc=%u",
    "get_clock",
    "get_uptime",
    "emergency_stop",
    "clear_shutdown",
    "config_stepper oid=%c step_pin=%c dir_pin=%c invert_step=%c step_pulse_ticks=%u",
    "queue_step oid=%c interval=%u count=%hu add=%hi",
    "set_next_step_dir oid=%c dir=%c",
    "reset_step_clock oid=%c clock=%u",
    "stepper_get_position oid=%c",
    "stepper_stop_on_trigger oid=%c trsync_oid=%c",
    "config_endstop oid=%c pin=%c pull_up=%c",
    "endstop_home oid=%c clock=%u sample_ticks=%u sample_count=%c rest_ticks=%u pin_value=%c trsync_oid=%c trigger_reason=%c",
    "endstop_query_state oid=%c",
    "config_trsync oid=%c",
    "trsync_start oid=%c report_clock=%u report_ticks=%u expire_reason=%c",
    "trsync_set_timeout oid=%c clock=%u",
    "trsync_trigger oid=%c reason=%c",
    "config_digital_out oid=%c pin=%u value=%c default_value=%c max_duration=%u",
    "queue_digital_out oid=%c clock=%u on_ticks=%u",
    "update_digital_out oid=%c value=%c",
    "set_digital_out_pwm_cycle oid=%c cycle_ticks=%u",
    "config_analog_in oid=%c pin=%u",
    QUERY_ANALOG_IN,
    "reset",
];

/// `query_analog_in` as current firmware declares it (batched reports since 2026-02).
const QUERY_ANALOG_IN: &str = "query_analog_in oid=%c clock=%u sample_ticks=%u sample_count=%c rest_ticks=%u bytes_per_report=%c min_value=%hu max_value=%hu range_check_count=%c";
/// `query_analog_in` as older firmware declares it (one value per report).
const QUERY_ANALOG_IN_LEGACY: &str = "query_analog_in oid=%c clock=%u sample_ticks=%u sample_count=%c rest_ticks=%u min_value=%hu max_value=%hu range_check_count=%c";
/// `analog_in_state` as current firmware declares it.
const ANALOG_IN_STATE: &str = "analog_in_state oid=%c next_clock=%u values=%*s";
/// `analog_in_state` as older firmware declares it.
const ANALOG_IN_STATE_LEGACY: &str = "analog_in_state oid=%c next_clock=%u value=%hu";

/// Which of Klipper's two analog-in formats a dictionary declares.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AnalogInFormat {
    /// Current firmware: `bytes_per_report` in the query, `values=%*s` (little-endian u16 sums)
    /// in the report. The sim's own dictionary uses this one.
    #[default]
    Current,
    /// Firmware before 2026-02: no `bytes_per_report`, one `value=%hu` per report.
    Legacy,
}

/// The responses, in id order after the commands.
pub const RESPONSES: &[&str] = &[
    "starting",
    "is_shutdown static_string_id=%hu",
    "shutdown clock=%u static_string_id=%hu",
    "stats count=%u sum=%u sumsq=%u",
    "uptime high=%u clock=%u",
    "clock clock=%u",
    "config is_config=%c crc=%u is_shutdown=%c move_count=%hu",
    "stepper_position oid=%c pos=%i",
    "endstop_state oid=%c homing=%c next_clock=%u pin_value=%c",
    "trsync_state oid=%c can_trigger=%c trigger_reason=%c clock=%u",
    ANALOG_IN_STATE,
];

/// The shutdown messages the sim can raise, numbered from 2 as a firmware build numbers them.
pub const SHUTDOWN_STRINGS: &[&str] = &[
    "Timer too close",
    "Rescheduled timer in the past",
    "Invalid command",
    "Command parser error",
    "Command request",
    "oids already allocated",
    "Can't assign oid",
    "Invalid oid type",
    "Already finalized",
    "Move queue overflow",
    "Invalid count parameter",
    "Stepper too far in past",
    "Can't reset time when stepper active",
    "Missed scheduling of next digital out event",
    "Scheduled digital out event will exceed max_duration",
    "ADC out of range",
    "Shutdown cleared when not shutdown",
    "Can't add signal that is already active",
    "Can not set soft pwm cycle ticks while updates pending",
    "update_digital_out not valid with active queue",
    "Invalid analog_in bytes_per_report",
];

/// The `static_string_id` of a shutdown message (`None` for a message the sim does not raise).
pub fn static_string_id(message: &str) -> Option<u16> {
    SHUTDOWN_STRINGS
        .iter()
        .position(|s| *s == message)
        .and_then(|i| u16::try_from(i + 2).ok())
}

/// The dictionary as compact JSON with sorted keys, as Klipper's build writes it.
pub fn json() -> String {
    json_with(AnalogInFormat::Current)
}

/// The sim's dictionary, parsed.
pub fn parsed() -> Dictionary {
    parsed_with(AnalogInFormat::Current)
}

/// The sim's dictionary with the given analog-in format, parsed.
pub fn parsed_with(format: AnalogInFormat) -> Dictionary {
    // Generated from constants; the unit tests check that it parses.
    Dictionary::from_json(&json_with(format)).unwrap_or_default()
}

/// The dictionary as [`json`] writes it, declaring the given analog-in format (the ids stay the
/// same).
pub fn json_with(format: AnalogInFormat) -> String {
    let legacy = |text: &'static str| match (format, text) {
        (AnalogInFormat::Legacy, QUERY_ANALOG_IN) => QUERY_ANALOG_IN_LEGACY,
        (AnalogInFormat::Legacy, ANALOG_IN_STATE) => ANALOG_IN_STATE_LEGACY,
        _ => text,
    };
    let mut commands = Map::new();
    commands.insert("identify offset=%u count=%c".into(), json!(1));
    let mut next_id = 2;
    for c in COMMANDS {
        commands.insert(legacy(c).into(), json!(next_id));
        next_id += 1;
    }
    let mut responses = Map::new();
    responses.insert("identify_response offset=%u data=%.*s".into(), json!(0));
    for r in RESPONSES {
        responses.insert(legacy(r).into(), json!(next_id));
        next_id += 1;
    }
    let pins: Map<String, Value> = "ABCDEFGHJKL"
        .chars()
        .enumerate()
        .map(|(i, port)| (format!("P{port}0"), json!([i * 8, 8])))
        .collect();
    let strings: Map<String, Value> = SHUTDOWN_STRINGS
        .iter()
        .enumerate()
        .map(|(i, s)| ((*s).to_owned(), json!(i + 2)))
        .collect();
    // serde_json's Map keeps keys sorted (no `preserve_order`), matching Klipper's sort_keys.
    json!({
        "app": "Gantry simulated MCU",
        "build_versions": "gantry-sim",
        "commands": commands,
        "config": {
            "CLOCK_FREQ": CLOCK_FREQ,
            "MCU": MCU_NAME,
            "ADC_MAX": ADC_MAX,
            "PWM_MAX": 255,
            "RECEIVE_WINDOW": 192,
            "STATS_SUMSQ_BASE": 256,
        },
        "enumerations": { "pin": pins, "static_string_id": strings },
        "license": "GNU GPLv3",
        "responses": responses,
        "version": concat!("gantry-sim-", env!("CARGO_PKG_VERSION")),
    })
    .to_string()
}

/// The zlib-compressed dictionary the sim sends through `identify`.
pub fn identify_data() -> Vec<u8> {
    identify_data_with(AnalogInFormat::Current)
}

/// [`identify_data`] for a dictionary with the given analog-in format.
pub fn identify_data_with(format: AnalogInFormat) -> Vec<u8> {
    miniz_oxide::deflate::compress_to_vec_zlib(json_with(format).as_bytes(), 9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dictionary_parses_and_uses_klippers_formats() {
        let d = Dictionary::from_json(&json()).expect("valid");
        assert_eq!(d.mcu(), Some(MCU_NAME));
        assert_eq!(d.clock_freq(), Ok(16e6));
        assert_eq!(d.command("identify").map(|m| m.id), Some(1));
        assert_eq!(d.response("identify_response").map(|m| m.id), Some(0));
        // Every format the sim declares is byte-identical to a real Klipper build's.
        let real_text = include_str!("../../tests/fixtures/oracle/dict/atmega2560.dict");
        let real = Dictionary::from_json(real_text).expect("valid");
        for m in d.messages() {
            let theirs = real
                .messages()
                .find(|r| r.name == m.name)
                .map(|r| r.format.as_str());
            assert_eq!(theirs, Some(m.format.as_str()), "format of {}", m.name);
        }
        let pin = &d.enumerations["pin"];
        assert_eq!(pin.value_of("PD7"), Some(31));
        assert_eq!(pin.value_of("PL7"), Some(87));
        assert_eq!(static_string_id("Timer too close"), Some(2));
        assert_eq!(
            Dictionary::from_identify_data(&identify_data()).expect("valid"),
            d
        );
        assert_eq!(parsed(), d);
    }

    #[test]
    fn the_legacy_variant_declares_klippers_older_analog_formats() {
        let d = parsed_with(AnalogInFormat::Legacy);
        let current = parsed();
        let q = d.command("query_analog_in").expect("declared");
        assert_eq!(q.format, QUERY_ANALOG_IN_LEGACY);
        assert_eq!(q.id, current.command("query_analog_in").map_or(0, |m| m.id));
        let r = d.response("analog_in_state").expect("declared");
        assert_eq!(r.format, ANALOG_IN_STATE_LEGACY);
        assert!(r.params.iter().any(|p| p.name == "value"));
    }
}
