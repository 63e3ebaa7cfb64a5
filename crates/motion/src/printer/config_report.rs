//! Unknown sections and options of a printer.cfg, reported the way Klipper reports them.
//!
//! Klipper refuses to start when printer.cfg has a section no module loads ("Section 'x' is not
//! a valid config section") or an option nobody read ("Option 'x' is not valid in section 'y'").
//! Gantry's planner implements only part of Klipper, so it cannot judge every option: an
//! option of `[tmc2209 stepper_x]` that nobody read here may be perfectly valid for Klipper.
//! [`config_report`] therefore sorts what it finds into three kinds:
//!
//! - [`NoticeKind::UnknownSection`]: the section's module (the word before the first space,
//!   `gcode_macro` in `[gcode_macro START]`) is not one Klipper loads: neither a module in
//!   klippy/extras nor one of the sections Klipper's core reads ([`KLIPPER_MODULES`]). Rail
//!   sections (`stepper_x`, `stepper_z1`, …) and extruders (`extruder`, `extruder1`, …) exist
//!   only where the kinematics or the extruder chain reads them; since the planner reads the
//!   same ones, such a section the planner never looked into is unknown too.
//! - [`NoticeKind::UnknownOption`]: an option nobody read in a section the planner implements
//!   ([`PLANNER_SECTIONS`]), unless it is a valid Klipper option the planner has no use for
//!   ([`KNOWN_UNUSED`]). These are the typos Klipper would stop on.
//! - [`NoticeKind::NotImplemented`]: one notice per kind of section (`tmc2209`, `bltouch`, …)
//!   that Klipper knows and the planner does not implement: its options are not checked, so none
//!   is reported, rather than reporting valid options as errors.
//!
//! The report depends on which options were read, so make it after the planner has been built
//! from the same [`Config`] ([`super::Printer::new`], [`super::Printer::for_planning`] or an
//! estimator built on them). Made before, or after a build that failed part way, every option of
//! the planner's sections would look unread. [`unknown_modules`] needs no build: it reports the
//! sections whose module Klipper lacks, for a config the planner refused.
//!
//! Where this is laxer than Klipper (it never reports what Klipper accepts): a module is
//! accepted for `[name]` and `[name suffix]` alike, though Klipper loads each form only where
//! the module has the matching `load_config`/`load_config_prefix`; sections Klipper reads only
//! alongside another (`[display_template]` with a display or LEDs, `[dual_carriage]` with
//! cartesian kinematics) are accepted alone; options of the kinds in [`KNOWN_UNUSED`] are
//! accepted in any setup. Checked against Klipper's 228 example configs: no unknown section or
//! option in any of them.

use std::collections::HashMap;
use std::fmt;

use crate::config::{Config, ConfigError, Location, Section};

/// The sections Klipper loads, by module: every module in klippy/extras (Klipper at commit
/// 84104bbbd: `extras/*.py` and the `extras/display/` package) that has a `load_config` or
/// `load_config_prefix` function, and the sections Klipper's core reads itself (`printer`,
/// `mcu`, generic_cartesian's `carriage`, `dual_carriage`, `extra_carriage` and
/// `stepper`, the display's `display_data`, `display_glyph`, `display_template` and `menu`).
/// Sorted, for binary search. Klipper loads a module for `[name]` with `load_config` and for
/// `[name suffix]` with `load_config_prefix`; which of the two a module has is not checked
/// here (some modules read named sections of their own, as `[bed_mesh default]`).
///
/// Not in the list, matched by pattern instead: the kinematics' `stepper_*` rails (a module of
/// the list, as `stepper_enable`, is not a rail) and the extruders `extruder`, `extruder1`, …
pub const KLIPPER_MODULES: &[&str] = &[
    "ad5206",
    "adc_scaled",
    "adc_temperature",
    "ads1x1x",
    "adxl345",
    "aht10",
    "aio_executor",
    "angle",
    "axis_twist_compensation",
    "bed_mesh",
    "bed_screws",
    "bed_tilt",
    "bltouch",
    "bme280",
    "bmi160",
    "board_pins",
    "buttons",
    "canbus_ids",
    "canbus_stats",
    "carriage",
    "controller_fan",
    "dac084S085",
    "delayed_gcode",
    "delta_calibrate",
    "display",
    "display_data",
    "display_glyph",
    "display_status",
    "display_template",
    "dotstar",
    "ds18b20",
    "dual_carriage",
    "duplicate_pin_override",
    "endstop_phase",
    "error_mcu",
    "exclude_object",
    "extra_carriage",
    "extruder_stepper",
    "fan",
    "fan_generic",
    "filament_motion_sensor",
    "filament_switch_sensor",
    "firmware_retraction",
    "force_move",
    "garbage_collection",
    "gcode_arcs",
    "gcode_button",
    "gcode_macro",
    "gcode_move",
    "hall_filament_width_sensor",
    "heater_bed",
    "heater_fan",
    "heater_generic",
    "heaters",
    "homing",
    "homing_heaters",
    "homing_override",
    "htu21d",
    "icm20948",
    "idle_timeout",
    "input_shaper",
    "led",
    "lis2dw",
    "lis3dh",
    "lm75",
    "load_cell",
    "load_cell_probe",
    "manual_probe",
    "manual_stepper",
    "mcp4018",
    "mcp4451",
    "mcp4728",
    "mcu",
    "menu",
    "motion_queuing",
    "motion_report",
    "mpu9250",
    "multi_pin",
    "neopixel",
    "output_pin",
    "palette2",
    "pause_resume",
    "pca9533",
    "pca9632",
    "pid_calibrate",
    "print_stats",
    "printer",
    "probe",
    "probe_eddy_current",
    "pwm_cycle_time",
    "pwm_tool",
    "quad_gantry_level",
    "query_adc",
    "query_endstops",
    "replicape",
    "resonance_tester",
    "respond",
    "safe_z_home",
    "samd_sercom",
    "save_variables",
    "screws_tilt_adjust",
    "sdcard_loop",
    "servo",
    "sht3x",
    "skew_correction",
    "smart_effector",
    "spi_temperature",
    "static_digital_output",
    "static_pwm_clock",
    "statistics",
    "stepper",
    "stepper_enable",
    "sx1509",
    "temperature_combined",
    "temperature_fan",
    "temperature_host",
    "temperature_mcu",
    "temperature_probe",
    "temperature_sensor",
    "thermistor",
    "tmc2130",
    "tmc2208",
    "tmc2209",
    "tmc2240",
    "tmc2660",
    "tmc5160",
    "tsl1401cl_filament_width_sensor",
    "tuning_tower",
    "verify_heater",
    "virtual_sdcard",
    "z_thermal_adjust",
    "z_tilt",
];

/// The kinds of section the planner implements, whose every option it reads where Klipper
/// would (rails and extruders by pattern: `stepper_*`, `extruder`, `extruder1`, …). Sorted.
pub const PLANNER_SECTIONS: &[&str] = &[
    "adc_temperature",
    "exclude_object",
    "fan",
    "firmware_retraction",
    "gcode_arcs",
    "gcode_macro",
    "heater_bed",
    "heater_generic",
    "input_shaper",
    "printer",
    "temperature_fan",
    "temperature_sensor",
    "thermistor",
];

/// Valid Klipper options of the planner's sections that the planner leaves unread, as
/// `(kind, options)`. A kind is a section's module, or `heater` for every heater (`extruder`,
/// `extruder1`, …, `heater_bed`, `heater_generic NAME`), `sensor` for every section with a
/// temperature sensor (the heaters, `temperature_sensor`, `temperature_fan`) and `stepper_` for
/// every rail. Klipper
/// reads some of these only in some setups (a PID gain only with `control: pid`), so accepting
/// them always may let a misplaced one pass; a misspelt one is still reported. An entry leaves
/// this list when the planner starts reading the option.
pub const KNOWN_UNUSED: &[(&str, &[&str])] = &[
    (
        "fan",
        &[
            // The planner drives the fan with software PWM and models no enable pin, shutdown
            // value or tachometer.
            "enable_pin",
            "hardware_pwm",
            "shutdown_speed",
            "tachometer_pin",
            "tachometer_poll_interval",
            "tachometer_ppr",
        ],
    ),
    (
        "heater",
        &[
            // Heater control (klippy's heaters.py): the planner keeps no temperatures.
            "control",
            "max_delta",
            "max_power",
            "min_extrude_temp",
            "pid_kd",
            "pid_ki",
            "pid_kp",
            "smooth_time",
            // Read by the planner only for a sensor on a `sensor_pin`; a heater whose sensor
            // has none (on the MCU itself, the host, a 1-wire bus) is not built.
            "heater_pin",
            "max_temp",
            "min_temp",
            "pwm_cycle_time",
            "sensor_type",
        ],
    ),
    (
        "sensor",
        &[
            // The sensor's own options, read by Klipper's sensor modules: SPI and I2C buses
            // (bus.py), thermocouple and RTD amplifiers (spi_temperature.py), temperature_mcu,
            // temperature_host, ds18b20, temperature_combined and the I2C sensors.
            "aht10_report_time",
            "bme280_gas_heat_duration",
            "bme280_gas_target_temp",
            "bme280_iir_filter",
            "bme280_oversample_hum",
            "bme280_oversample_pressure",
            "bme280_oversample_temp",
            "combination_method",
            "ds18_report_time",
            "htu21d_hold_master",
            "htu21d_report_time",
            "htu21d_resolution",
            "i2c_address",
            "i2c_bus",
            "i2c_mcu",
            "i2c_software_scl_pin",
            "i2c_software_sda_pin",
            "i2c_speed",
            "lm75_report_time",
            "maximum_deviation",
            "rtd_nominal_r",
            "rtd_num_of_wires",
            "rtd_reference_r",
            "rtd_use_50hz_filter",
            "sensor_adc1",
            "sensor_adc2",
            "sensor_list",
            "sensor_mcu",
            "sensor_path",
            "sensor_temperature1",
            "sensor_temperature2",
            "serial_no",
            "sht3x_report_time",
            "spi_bus",
            "spi_software_miso_pin",
            "spi_software_mosi_pin",
            "spi_software_sclk_pin",
            "spi_speed",
            "tc_averaging_count",
            "tc_type",
            "tc_use_50hz_filter",
        ],
    ),
    // A generic heater's M105 letter (Klipper gives the bed `B` and extruders `T0`, … itself).
    ("heater_generic", &["gcode_id"]),
    // Temperature fans drive their fan with software PWM, like `[fan]`; M105 letters.
    (
        "temperature_fan",
        &[
            "enable_pin",
            "gcode_id",
            "hardware_pwm",
            "tachometer_pin",
            "tachometer_poll_interval",
            "tachometer_ppr",
        ],
    ),
    ("temperature_sensor", &["gcode_id"]),
    // The endstop of a rail's second and further steppers (`[stepper_z1]`): batch homing
    // waits for no endstop, and the planner configures only the rail's first one.
    ("stepper_", &["endstop_pin"]),
];

/// What a [`ConfigNotice`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NoticeKind {
    /// A section Klipper would refuse: "Section 'x' is not a valid config section".
    UnknownSection,
    /// An option nobody read in a section the planner implements: "Option 'x' is not valid in
    /// section 'y'".
    UnknownOption,
    /// A kind of section Klipper knows and the planner does not implement (one notice per kind,
    /// at its first section): its options are not checked.
    NotImplemented,
}

impl NoticeKind {
    /// The kind in snake case, for machine-readable output (`unknown_section`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownSection => "unknown_section",
            Self::UnknownOption => "unknown_option",
            Self::NotImplemented => "not_implemented",
        }
    }
}

/// One finding of [`config_report`]; displays as `file:line: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigNotice {
    /// The section's header or the option's line.
    pub location: Location,
    /// What the notice is about.
    pub kind: NoticeKind,
    /// Klipper's sentence for unknown sections and options; Gantry's for the rest.
    pub message: String,
}

impl fmt::Display for ConfigNotice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

impl ConfigNotice {
    /// Whether Klipper would refuse the config for this (an unknown section or option).
    pub fn is_error_for_klipper(&self) -> bool {
        matches!(
            self.kind,
            NoticeKind::UnknownSection | NoticeKind::UnknownOption
        )
    }
}

/// How a section's name classifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class<'n> {
    /// No Klipper module reads it.
    Unknown,
    /// A rail or an extruder: valid only if the planner looked into it.
    ReadIfValid,
    /// A section the planner implements.
    Planner,
    /// A section Klipper knows and the planner does not implement.
    Elsewhere(&'n str),
}

/// The section's module: the word before the first space (Klipper's `section.split()[0]`).
fn module_of(name: &str) -> &str {
    name.split_whitespace().next().unwrap_or("")
}

/// `stepper_` followed by something: a rail of some kinematics.
fn is_rail(module: &str) -> bool {
    module
        .strip_prefix("stepper_")
        .is_some_and(|s| !s.is_empty())
}

/// `extruder`, `extruder1`, `extruder2`, …
fn is_extruder(module: &str) -> bool {
    module
        .strip_prefix("extruder")
        .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
}

/// Sorts one section name (as written: Klipper finds module files case-sensitively).
fn classify(name: &str) -> Class<'_> {
    let module = module_of(name);
    let known = KLIPPER_MODULES.binary_search(&module).is_ok();
    if module == name && (is_extruder(module) || (is_rail(module) && !known)) {
        return Class::ReadIfValid;
    }
    if !known {
        return Class::Unknown;
    }
    if PLANNER_SECTIONS.binary_search(&module).is_ok() {
        Class::Planner
    } else {
        Class::Elsewhere(module)
    }
}

/// Whether `option` of the planner section `section` (lower-case) is in [`KNOWN_UNUSED`].
fn known_unused(section: &str, option: &str) -> bool {
    let module = module_of(section);
    let kinds: &[&str] = if is_rail(module) {
        &["stepper_"]
    } else if is_extruder(module) || module == "heater_bed" {
        &["heater", "sensor"]
    } else if module == "heater_generic" {
        &["heater", "sensor", "heater_generic"]
    } else if module == "temperature_sensor" || module == "temperature_fan" {
        &["sensor", module]
    } else {
        &[module]
    };
    KNOWN_UNUSED
        .iter()
        .filter(|(kind, _)| kinds.contains(kind))
        .any(|(_, options)| options.contains(&option))
}

/// The sections whose module Klipper does not have at all, as
/// [`NoticeKind::UnknownSection`] notices in file order. This needs no reads, so it also serves
/// for a config the planner could not be built from; rails (`stepper_*`) and extruders
/// (`extruder`, `extruder1`, …) pass here by their pattern alone.
pub fn unknown_modules(config: &Config) -> Vec<ConfigNotice> {
    config
        .sections()
        .filter(|s| classify(s.name()) == Class::Unknown)
        .map(|s| unknown_section(config, &s))
        .collect()
}

/// Klipper's "Section 'x' is not a valid config section" at the section's header.
fn unknown_section(config: &Config, section: &Section<'_>) -> ConfigNotice {
    ConfigNotice {
        location: header(config, section),
        kind: NoticeKind::UnknownSection,
        message: format!(
            "Section '{}' is not a valid config section",
            section.name().to_lowercase()
        ),
    }
}

/// Where the section's header is (always known for a section of the config).
fn header(config: &Config, section: &Section<'_>) -> Location {
    section.header_location().unwrap_or_else(|| Location {
        file: config.file.clone(),
        line: 0,
    })
}

/// The unknown sections, unknown options and unimplemented kinds of section of `config`, in
/// file order (section by section, each section's options in order), each with its `file:line`.
///
/// Call it after the planner has been built from `config` (see the module documentation).
pub fn config_report(config: &Config) -> Vec<ConfigNotice> {
    // Sections nobody looked into (no getter ran on them), by lower-case name.
    let untouched: Vec<String> = config
        .unknown_sections(&[])
        .into_iter()
        .filter_map(|e| match e {
            ConfigError::InvalidSection { section, .. } => Some(section),
            _ => None,
        })
        .collect();
    // Unread options, by lower-case section name, in file order.
    let mut unread: HashMap<String, Vec<(Location, String)>> = HashMap::new();
    for e in config.unused_options() {
        if let ConfigError::NotValid {
            at,
            section,
            option,
        } = e
        {
            unread.entry(section).or_default().push((at, option));
        }
    }
    // Each unimplemented kind: its notice's index and how many sections it has.
    let mut kinds: Vec<(String, usize, usize)> = Vec::new();
    let mut notices = Vec::new();
    for section in config.sections() {
        let name = section.name();
        let lower = name.to_lowercase();
        match classify(name) {
            Class::Unknown => notices.push(unknown_section(config, &section)),
            Class::ReadIfValid if untouched.contains(&lower) => {
                notices.push(unknown_section(config, &section));
            }
            Class::ReadIfValid | Class::Planner => {
                for (location, option) in unread.remove(&lower).unwrap_or_default() {
                    if known_unused(&lower, &option) {
                        continue;
                    }
                    notices.push(ConfigNotice {
                        location,
                        kind: NoticeKind::UnknownOption,
                        message: format!("Option '{option}' is not valid in section '{lower}'"),
                    });
                }
            }
            Class::Elsewhere(module) => match kinds.iter_mut().find(|(m, _, _)| *m == module) {
                Some((_, _, count)) => *count += 1,
                None => {
                    kinds.push((module.to_owned(), notices.len(), 1));
                    notices.push(ConfigNotice {
                        location: header(config, &section),
                        kind: NoticeKind::NotImplemented,
                        message: String::new(),
                    });
                }
            },
        }
    }
    for (module, index, count) in kinds {
        notices[index].message = if count == 1 {
            format!(
                "Section '{module}' is not used by Gantry's planner; its options are not checked"
            )
        } else {
            format!(
                "{count} '{module}' sections are not used by Gantry's planner; their options \
                 are not checked"
            )
        };
    }
    notices
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MemorySource;
    use crate::printer::Printer;

    const CFG: &str = "[mcu]\nserial: /dev/null\n\
        [printer]\nkinematics: cartesian\nmax_velocity: 300\nmax_accel: 3000\nsquare_corner_velocty: 5\n\
        [stepper_x]\nstep_pin: PA0\ndir_pin: PA1\nendstop_pin: PA2\nmicrosteps: 16\nrotation_distance: 40\nposition_endstop: 0\nposition_max: 200\n\
        [stepper_y]\nstep_pin: PA3\ndir_pin: PA4\nendstop_pin: PA5\nmicrosteps: 16\nrotation_distance: 40\nposition_endstop: 0\nposition_max: 200\n\
        [stepper_z]\nstep_pin: PA6\ndir_pin: PA7\nendstop_pin: PB0\nmicrosteps: 16\nrotation_distance: 8\nposition_endstop: 0\nposition_max: 200\n\
        [extruder]\nstep_pin: PB1\ndir_pin: PB2\nmicrosteps: 16\nrotation_distance: 33.5\nnozzle_diameter: 0.4\nfilament_diameter: 1.75\n\
        heater_pin: PB3\nsensor_pin: PK5\nsensor_type: EPCOS 100K B57560G104F\ncontrol: pid\npid_Kp: 22\npid_Ki: 1\npid_Kd: 114\nmin_temp: 0\nmax_temp: 250\n\
        [include extra.cfg]\n";

    const EXTRA: &str = "[foo_bar]\nx: 1\n\
        [tmc2209 stepper_x]\nuart_pin: PC1\nrun_current: 0.8\n\
        [tmc2209 stepper_y]\nuart_pin: PC2\nrun_curent: 0.8\n\
        [gcode_macro START]\ngcode:\n  G28\ndescrption: home\n\
        [stepper_q]\nstep_pin: PD0\n\
        [extruder2]\nstep_pin: PD1\n\
        [fan]\npin: PD2\nshutdown_speed: 0\n";

    fn built() -> Config {
        let source = MemorySource::new()
            .with("printer.cfg", CFG)
            .with("extra.cfg", EXTRA);
        let config = Config::load("printer.cfg", &source).expect("config");
        Printer::for_planning(&config).expect("the planner builds");
        config
    }

    #[test]
    fn typos_and_made_up_sections_are_reported_in_klippers_words() {
        let config = built();
        let lines: Vec<String> = config_report(&config)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            lines,
            [
                "printer.cfg:1: Section 'mcu' is not used by Gantry's planner; its options are \
                 not checked",
                "printer.cfg:7: Option 'square_corner_velocty' is not valid in section 'printer'",
                "extra.cfg:1: Section 'foo_bar' is not a valid config section",
                "extra.cfg:3: 2 'tmc2209' sections are not used by Gantry's planner; their \
                 options are not checked",
                "extra.cfg:12: Option 'descrption' is not valid in section 'gcode_macro start'",
                "extra.cfg:13: Section 'stepper_q' is not a valid config section",
                "extra.cfg:15: Section 'extruder2' is not a valid config section",
            ]
        );
        let kinds: Vec<NoticeKind> = config_report(&config).iter().map(|n| n.kind).collect();
        assert_eq!(
            kinds,
            [
                NoticeKind::NotImplemented,
                NoticeKind::UnknownOption,
                NoticeKind::UnknownSection,
                NoticeKind::NotImplemented,
                NoticeKind::UnknownOption,
                NoticeKind::UnknownSection,
                NoticeKind::UnknownSection,
            ]
        );
        assert_eq!(
            config_report(&config)
                .iter()
                .filter(|n| n.is_error_for_klipper())
                .count(),
            5
        );
        assert_eq!(NoticeKind::UnknownOption.as_str(), "unknown_option");
    }

    #[test]
    fn unknown_modules_need_no_build() {
        let source = MemorySource::new()
            .with("printer.cfg", CFG)
            .with("extra.cfg", EXTRA);
        let config = Config::load("printer.cfg", &source).expect("config");
        let notices = unknown_modules(&config);
        assert_eq!(notices.len(), 1);
        assert_eq!(
            notices[0].to_string(),
            "extra.cfg:1: Section 'foo_bar' is not a valid config section"
        );
        assert_eq!(notices[0].kind, NoticeKind::UnknownSection);
        // Klipper finds module files by the name as written.
        let config = Config::parse("[Gcode_macro X]\ngcode: G28\n", "p.cfg").expect("config");
        assert_eq!(unknown_modules(&config).len(), 1);
    }

    #[test]
    fn the_tables_are_sorted_and_consistent() {
        let sorted = |names: &[&str]| names.windows(2).all(|w| w[0] < w[1]);
        assert!(sorted(KLIPPER_MODULES));
        assert!(sorted(PLANNER_SECTIONS));
        assert!(
            PLANNER_SECTIONS
                .iter()
                .all(|s| KLIPPER_MODULES.binary_search(s).is_ok())
        );
        for (kind, options) in KNOWN_UNUSED {
            assert!(
                ["heater", "sensor", "stepper_"].contains(kind) || PLANNER_SECTIONS.contains(kind),
                "{kind}"
            );
            assert!(options.iter().all(|o| *o == o.to_lowercase()), "{kind}");
        }
        assert_eq!(classify("stepper_z1"), Class::ReadIfValid);
        assert_eq!(
            classify("stepper_enable"),
            Class::Elsewhere("stepper_enable")
        );
        assert_eq!(
            classify("extruder_stepper belt"),
            Class::Elsewhere("extruder_stepper")
        );
        assert_eq!(classify("extruder12"), Class::ReadIfValid);
        assert_eq!(classify("extruder_x"), Class::Unknown);
        assert_eq!(classify("extruder x"), Class::Unknown);
        assert_eq!(classify("mcu toolboard"), Class::Elsewhere("mcu"));
        assert_eq!(classify("heater_generic chamber"), Class::Planner);
        assert!(known_unused("heater_generic chamber", "gcode_id"));
        assert!(!known_unused("extruder", "gcode_id"));
        assert!(known_unused("stepper_z1", "endstop_pin"));
        assert!(known_unused("temperature_sensor mcu", "sensor_mcu"));
        assert!(known_unused("temperature_fan board", "tachometer_pin"));
        assert!(!known_unused("temperature_sensor x", "tachometer_pin"));
    }
}
