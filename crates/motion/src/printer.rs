//! A printer as Klipper's host sees it: printer.cfg → MCU objects, G-code → moves → MCU messages.
//!
//! This is the pure core of `gantry batch`: it builds the toolhead, rails, steppers, extruders
//! and outputs from the config (allocating oids and writing the config phase Klipper emits),
//! interprets G-code like klippy (gcode.py, gcode_move.py, homing.py, force_move.py, fan.py,
//! stepper_enable.py) and leaves every MCU command, in order, in the toolhead's per-MCU queues.
//! [`Printer::run_batch`] feeds G-code the way klippy's batch mode reads it (4096-byte chunks with
//! the background flush in between), which decides where the look-ahead is flushed — and so the
//! exact step times Klipper's batch output has.

use std::borrow::Cow;
use std::f64::consts::PI;

mod config_report;
mod exclude_object;
mod gcode_state;
mod heaters;
mod input_shaper;
mod live;
mod print_stats;
mod responses;
mod status;
mod temperature;

pub use config_report::{
    ConfigNotice, KLIPPER_MODULES, KNOWN_UNUSED, NoticeKind, PLANNER_SECTIONS, config_report,
    unknown_modules,
};
pub use heaters::{AnalogInQuery, HeaterSensor};
pub use live::{CLOCK_CALIBRATE_PERIOD_S, LiveEvent, LiveHost, ObserverFn, ResponseSink};
/// A status object's value (what `[gcode_macro]` templates read; serializes as JSON).
pub use minijinja::Value as StatusValue;
pub use print_stats::{JobDirective, PauseResume, PrintState, PrintStats};
pub use responses::{RESPONSES_KEPT_PER_TEXT, RepeatedResponse};

use gantry_proto::dictionary::Dictionary;

use crate::config::{
    Config, ConfigError, FloatBounds, IntBounds, PinDesc, PinFlags, Pull, check_pin_name,
};
use crate::extruder::ExtruderKin;
use crate::gcode::GCodeCommand;
use crate::itersolve::{Kinematics, StepperSolver};
use crate::lookahead::AXES;
use crate::stepcompress::StepCompress;
use crate::toolhead::{
    DeltaLimits, ExtruderMotion, KinLimits, MAX_STEPCOMPRESS_ERROR, McuQueue, MotionStepper,
    MoveError, PwmRequestQueue, TimedAction, Toolhead, TrapqId,
};

/// A configuration problem, in Klipper's words where Klipper has them.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PrinterError {
    /// A config error (missing or bad option, unknown pin…).
    #[error("{0}")]
    Config(String),
}

fn cfg_err(msg: impl Into<String>) -> PrinterError {
    PrinterError::Config(msg.into())
}

/// Typed access to the config with Klipper's defaults and bounds (errors name file:line).
struct Cfg<'a> {
    config: &'a Config,
}

fn above(v: f64) -> FloatBounds {
    FloatBounds::NONE.above(v)
}

fn minval(v: f64) -> FloatBounds {
    FloatBounds::NONE.min(v)
}

fn conf(e: ConfigError) -> PrinterError {
    PrinterError::Config(e.to_string())
}

impl<'a> Cfg<'a> {
    fn has(&self, section: &str) -> bool {
        self.config.has_section(section)
    }

    fn get_opt(&self, section: &str, option: &str) -> Option<&'a str> {
        self.config.section(section).and_then(|s| s.get_opt(option))
    }

    fn get(&self, section: &str, option: &str) -> Result<&'a str, PrinterError> {
        self.config.getsection(section).get(option).map_err(conf)
    }

    fn getfloat(
        &self,
        section: &str,
        option: &str,
        default: Option<f64>,
        b: FloatBounds,
    ) -> Result<f64, PrinterError> {
        self.config
            .getsection(section)
            .getfloat(option, default, b)
            .map_err(conf)
    }

    fn getint(
        &self,
        section: &str,
        option: &str,
        default: Option<i64>,
    ) -> Result<i64, PrinterError> {
        self.config
            .getsection(section)
            .getint(option, default, IntBounds::default())
            .map_err(conf)
    }

    fn getpin(
        &self,
        section: &str,
        option: &str,
        flags: PinFlags,
    ) -> Result<PinDesc, PrinterError> {
        self.config
            .getsection(section)
            .getpin(option, flags)
            .map_err(conf)
    }

    fn getpin_opt(
        &self,
        section: &str,
        option: &str,
        flags: PinFlags,
    ) -> Result<Option<PinDesc>, PrinterError> {
        self.config
            .getsection(section)
            .getpin_opt(option, flags)
            .map_err(conf)
    }

    fn getboolean(&self, section: &str, option: &str) -> Result<Option<bool>, PrinterError> {
        let s = self.config.getsection(section);
        if !s.has_option(option) {
            return Ok(None);
        }
        s.getboolean(option, None).map(Some).map_err(conf)
    }
}

/// An MCU of the printer: its dictionary facts, oids and config commands.
#[derive(Debug)]
pub struct PrinterMcu {
    /// Name (`mcu`, or the part after `mcu ` in the section name).
    pub name: String,
    /// CLOCK_FREQ, Hz.
    pub freq: f64,
    /// Pin names the dictionary enumerates (empty: not checked).
    pub pins: Vec<String>,
    /// Number of oids allocated.
    pub oid_count: u8,
    /// Config commands (sent once; their text makes the CRC), complete after the build.
    pub config_cmds: Vec<String>,
    /// Objects' config callbacks in registration order (Klipper's `register_config_callback`).
    callbacks: Vec<ConfigCallback>,
    /// Oids of objects that allocate theirs at config time, by slot.
    deferred_oids: Vec<u8>,
    /// Commands sent once right after the configuration (Klipper's `is_init` config commands).
    init_cmds: Vec<String>,
    /// Move-queue slots reserved by outputs.
    pub reserved_move_slots: usize,
    /// The commands sent once right after the config phase, in order (Klipper's `is_init`
    /// config commands: heaters' `query_analog_in`, PWM outputs' start values); they are also
    /// the first messages of the toolhead's queue for this MCU.
    pub startup_cmds: Vec<String>,
    /// What the dictionary says about the ADC (`None` without a dictionary).
    adc: Option<heaters::McuAdcFacts>,
    /// The `query_analog_in` of each sampled analog input, by deferred slot.
    analog_queries: Vec<(usize, AnalogInQuery)>,
}

/// One object's part of the config phase. Klipper gives endstops, trsyncs and steppers their
/// oid when they are created, but digital outputs, PWM outputs and ADCs only when their config
/// callback runs — after every object exists. So the oid numbers and the command order (and
/// with them the CRC) follow object creation order, with deferred oids after all immediate ones.
#[derive(Clone, Debug)]
enum ConfigCallback {
    /// Commands of an object whose oid is already known.
    Ready(Vec<String>),
    /// `config_digital_out` (and `set_digital_out_pwm_cycle` for a PWM output).
    DigitalOut {
        slot: usize,
        pin: String,
        value: u8,
        default_value: u8,
        max_duration_ticks: u64,
        cycle_ticks: Option<u64>,
    },
    /// `config_analog_in`, and `query_analog_in` (an init command) for a sampled input.
    AnalogIn {
        slot: usize,
        pin: String,
        sampling: Option<heaters::AdcSampling>,
    },
}

impl PrinterMcu {
    fn create_oid(&mut self) -> u8 {
        let oid = self.oid_count;
        self.oid_count = self.oid_count.wrapping_add(1);
        oid
    }

    /// An object with its oid now: its commands join the callbacks in order.
    fn add_ready(&mut self, cmds: Vec<String>) {
        self.callbacks.push(ConfigCallback::Ready(cmds));
    }

    /// An object whose oid comes at config time; returns its slot.
    fn add_deferred(&mut self, make: impl FnOnce(usize) -> ConfigCallback) -> usize {
        let slot = self.deferred_oids.len();
        self.deferred_oids.push(0);
        self.callbacks.push(make(slot));
        slot
    }

    /// Runs the config callbacks: deferred oids are numbered after the immediate ones, and the
    /// config commands are written in callback order.
    ///
    /// # Errors
    /// An analog input the MCU cannot sample as asked (no `ADC_MAX`, too many samples).
    fn finalize_config(&mut self) -> Result<(), PrinterError> {
        let callbacks = std::mem::take(&mut self.callbacks);
        for cb in &callbacks {
            match cb {
                ConfigCallback::Ready(cmds) => self.config_cmds.extend(cmds.iter().cloned()),
                ConfigCallback::DigitalOut {
                    slot,
                    pin,
                    value,
                    default_value,
                    max_duration_ticks,
                    cycle_ticks,
                } => {
                    let oid = self.create_oid();
                    self.deferred_oids[*slot] = oid;
                    self.config_cmds.push(format!(
                        "config_digital_out oid={oid} pin={pin} value={value} \
                         default_value={default_value} max_duration={max_duration_ticks}"
                    ));
                    if let Some(cycle) = cycle_ticks {
                        self.config_cmds.push(format!(
                            "set_digital_out_pwm_cycle oid={oid} cycle_ticks={cycle}"
                        ));
                        // A software PWM output starts at its start value 200 ms after the
                        // configuration (print time 0 in batch mode).
                        let clock = (PWM_START_DELAY * self.freq) as u64;
                        let on_ticks = u64::from(*value) * cycle;
                        self.init_cmds.push(format!(
                            "queue_digital_out oid={oid} clock={clock} on_ticks={on_ticks}"
                        ));
                    }
                }
                ConfigCallback::AnalogIn {
                    slot,
                    pin,
                    sampling,
                } => {
                    let oid = self.create_oid();
                    self.deferred_oids[*slot] = oid;
                    self.config_cmds
                        .push(format!("config_analog_in oid={oid} pin={pin}"));
                    if let (Some(s), Some(adc)) = (sampling, &self.adc) {
                        let query = adc.query(&self.name, self.freq, oid, s)?;
                        self.init_cmds.push(query.command());
                        self.analog_queries.push((*slot, query));
                    }
                }
            }
        }
        Ok(())
    }

    /// The full config phase: `allocate_oids`, the config commands and `finalize_config` with
    /// Klipper's CRC (zlib CRC-32 of the config commands joined by newlines).
    pub fn config_phase(&self) -> Vec<String> {
        let mut cmds = Vec::with_capacity(self.config_cmds.len() + 2);
        cmds.push(format!("allocate_oids count={}", self.oid_count));
        cmds.extend(self.config_cmds.iter().cloned());
        let crc = gantry_proto::crc::crc32(cmds.join("\n").as_bytes());
        cmds.push(format!("finalize_config crc={crc}"));
        cmds
    }
}

/// Homing parameters of a rail (Klipper's `get_homing_info`).
#[derive(Clone, Debug)]
pub struct Rail {
    /// Section name (`stepper_x`).
    pub name: String,
    /// Steppers on the rail (indices into the toolhead's steppers).
    pub steppers: Vec<usize>,
    /// position_min, mm.
    pub position_min: f64,
    /// position_max, mm.
    pub position_max: f64,
    /// position_endstop, mm.
    pub position_endstop: f64,
    /// homing_speed, mm/s.
    pub homing_speed: f64,
    /// second_homing_speed, mm/s.
    pub second_homing_speed: f64,
    /// homing_retract_speed, mm/s.
    pub homing_retract_speed: f64,
    /// homing_retract_dist, mm.
    pub homing_retract_dist: f64,
    /// homing_positive_dir.
    pub homing_positive_dir: bool,
    /// Endstop oid and its trsync oid, on `mcu`.
    pub endstop: (usize, u8, u8),
    /// The trsyncs of the rail's steppers on other MCUs than the endstop's, `(mcu, oid)` (a
    /// probe on a toolboard homing Z steppers on the mainboard): the host triggers them when
    /// the endstop's fires (Klipper's TriggerDispatch).
    pub stepper_trsyncs: Vec<(usize, u8)>,
    /// Endstop pin inverted (`!`).
    pub endstop_invert: bool,
}

/// A digital output (stepper enable pins).
#[derive(Clone, Debug)]
struct DigitalOut {
    mcu: usize,
    /// Slot of the deferred oid in its MCU.
    slot: usize,
    oid: u8,
    invert: bool,
    last_clock: u64,
}

/// What the G-code position layer keeps (Klipper's gcode_move).
#[derive(Clone, Debug)]
struct GCodeMove {
    absolute_coord: bool,
    absolute_extrude: bool,
    base_position: [f64; AXES],
    last_position: [f64; AXES],
    homing_position: [f64; AXES],
    speed: f64,
    speed_factor: f64,
    extrude_factor: f64,
}

impl Default for GCodeMove {
    fn default() -> Self {
        Self {
            absolute_coord: true,
            absolute_extrude: true,
            base_position: [0.0; AXES],
            last_position: [0.0; AXES],
            homing_position: [0.0; AXES],
            speed: 25.0,
            speed_factor: 1.0 / 60.0,
            extrude_factor: 1.0,
        }
    }
}

/// Which kinematics the printer has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KinematicsKind {
    /// Cartesian.
    Cartesian,
    /// CoreXY.
    CoreXY,
    /// Linear delta.
    Delta,
    /// None (no motion system).
    None,
}

/// A message for the G-code terminal (Klipper's responses), with the line that caused it.
#[derive(Clone, Debug, PartialEq)]
pub struct Response {
    /// 1-based G-code line.
    pub line: u32,
    /// The text (`!! ` prefix for errors, `// ` for info).
    pub text: String,
}

/// Size of klippy's G-code reads in batch mode, bytes.
pub const BATCH_READ_SIZE: usize = 4096;

/// The printer.
#[derive(Debug)]
pub struct Printer {
    /// The motion side.
    pub toolhead: Toolhead,
    /// The MCUs (index 0 is `[mcu]`).
    pub mcus: Vec<PrinterMcu>,
    /// Rails in kinematics order.
    pub rails: Vec<Rail>,
    /// Kinematics.
    pub kinematics: KinematicsKind,
    enable_pins: Vec<Option<usize>>,
    /// Enable outputs by MCU and pin name (with their polarity), for sharing.
    shared_enable_pins: Vec<(usize, String, bool, usize)>,
    digital_outs: Vec<DigitalOut>,
    stepper_enabled: Vec<bool>,
    gcode: GCodeMove,
    fan_queue: Option<usize>,
    fan_out: Option<usize>,
    /// Messages for the terminal: errors and info, each text at most
    /// [`RESPONSES_KEPT_PER_TEXT`] times (a caller may take them as they come; the counts
    /// stay with the printer).
    pub responses: Vec<Response>,
    /// How often each response text came.
    response_counts: responses::ResponseCounts,
    current_line: u32,
    partial_line: Vec<u8>,
    line_no: u32,
    /// A last line of batch input without a line end, which Klipper does not run (see
    /// [`Printer::finish_batch`]): its number and text.
    pub unterminated_line: Option<(u32, String)>,
    /// Whether batch input ends at its first G-code error, as in Klipper's batch mode (see
    /// [`Printer::stop_batch_on_error`]).
    batch_stops_on_error: bool,
    /// G-code errors (`!!` responses) so far, and how many there were when the current batch
    /// read began.
    errors_reported: u64,
    errors_before_read: u64,
    /// The line of the current batch read's first error.
    read_error_line: u32,
    /// The line of the first batch error, once batch input has ended there.
    pub batch_error_exit: Option<u32>,
    /// When `Some`, the numbers of the batch input's layer-change comments
    /// ([`crate::estimate::is_layer_change_comment`]) are recorded here (for `estimate`).
    pub layer_marks: Option<Vec<u32>>,
    /// Heater targets by section name, °C (set by M104/M140; batch mode cannot heat).
    pub heater_targets: Vec<(String, f64)>,
    /// Heaters' sensors in creation order (see [`Printer::heater_sensor`]).
    heater_sensors: Vec<HeaterSensor>,
    /// Deferred slot of each heater sensor's analog input.
    heater_sensor_slots: Vec<usize>,
    /// Sensor types known so far (filled while the printer is built).
    sensor_types: heaters::SensorRegistry,
    /// The sensors of `[temperature_sensor]` and `[temperature_fan]` sections, and the
    /// deferred slots of their analog inputs.
    sensors: Vec<HeaterSensor>,
    sensor_slots: Vec<usize>,
    /// `[temperature_fan]` settings.
    temperature_fans: Vec<temperature::TemperatureFan>,
    extruder_pa: Vec<(f64, f64)>,
    input_shaper: Option<input_shaper::InputShaperState>,
    /// Steps by which klippy's idea of a stepper's MCU position (from its commanded position)
    /// exceeds the steps it sent, by toolhead stepper: nonzero where `[input_shaper]` wrapped
    /// a stepper whose position at the origin is not 0 (a delta tower). See
    /// [`Printer::note_shaper_position_skew`].
    shaper_position_skew: Vec<(usize, i64)>,
    /// Whether homing reproduces that skew, as Klipper's batch mode does (see
    /// [`Printer::emulate_batch_homing`]).
    batch_homing_skew: bool,
    saved_states: Vec<gcode_state::SavedState>,
    firmware_retraction: Option<gcode_state::FirmwareRetraction>,
    exclude_object: Option<exclude_object::ExcludeObject>,
    /// `[gcode_macro]`s.
    macros: crate::macros::MacroSet,
    /// `rename_existing` of the macros: (new name, the command it reaches).
    renamed: Vec<(String, String)>,
    /// The commands the macros register (upper-case), for a quick check of each line.
    macro_commands: std::collections::HashSet<String>,
    /// Macros being run (Klipper refuses recursion).
    macro_stack: Vec<String>,
    /// The config as text, for `printer.configfile` in templates: (section, [(option, value)]).
    config_snapshot: Vec<(String, Vec<(String, String)>)>,
    /// `[gcode_arcs] resolution`, mm, when arcs are enabled.
    arc_resolution: Option<f64>,
    arc_plane: crate::arcs::ArcPlane,
    /// Print time when the input ended, before batch mode's closing dwell: what klippy reports
    /// as "print time" when it exits, s.
    pub end_print_time: f64,
    /// Heater outputs: (heater section, digital output index, PWM cycle ticks).
    heater_outputs: Vec<(String, usize, u64)>,
    /// Last temperature each heater sensor reported (index as `heater_sensors`), °C.
    heater_temps: Vec<Option<f64>>,
    /// Each heater's control (index as `heater_sensors`): Klipper's PID or bang-bang, run on
    /// a live printer's temperature reports.
    heaters: Vec<crate::heater_control::Heater>,
    /// Each heater's runaway check and when it runs next (host time).
    heater_checks: Vec<(crate::heater_control::VerifyHeater, f64)>,
    /// The reactor of a live printer (`None`: batch mode).
    live: Option<Box<live::LiveState>>,
    /// The current job (`print_stats`).
    print_stats: print_stats::PrintStats,
    /// `PAUSE` / `RESUME` (`pause_resume`).
    pause_resume: print_stats::PauseResume,
    /// `display_status`: the M117 message and the M73 progress (0..1).
    display_message: String,
    display_progress: Option<f64>,
    /// The error of the last line run (see [`Printer::line_error`]).
    line_error: Option<String>,
}

const HOMING_START_DELAY: f64 = 0.001;
/// The move queue size klippy assumes in batch mode.
const BATCH_MOVE_COUNT: usize = 500;
const ENDSTOP_SAMPLE_TIME: f64 = 0.000_015;
const ENDSTOP_SAMPLE_COUNT: u32 = 4;
const TRSYNC_SINGLE_MCU_TIMEOUT: f64 = 0.250;
/// A homing trsync's timeout when the homing move involves several MCUs, s (Klipper's
/// TRSYNC_TIMEOUT): the host relays the trigger between them.
const TRSYNC_TIMEOUT: f64 = 0.025;
const DISABLE_STALL_TIME: f64 = 0.100;
/// Delay before a PWM output's start value applies, s (Klipper's MCU_pwm).
const PWM_START_DELAY: f64 = 0.200;

/// `[printer] max_z_velocity` and `max_z_accel`: default and capped by the toolhead's limits.
fn z_limits(cfg: &Cfg<'_>, max_velocity: f64, max_accel: f64) -> Result<(f64, f64), PrinterError> {
    let v = cfg.getfloat(
        "printer",
        "max_z_velocity",
        Some(max_velocity),
        above(0.0).max(max_velocity),
    )?;
    let a = cfg.getfloat(
        "printer",
        "max_z_accel",
        Some(max_accel),
        above(0.0).max(max_accel),
    )?;
    Ok((v, a))
}

/// The MCUs of `config` in the order [`Printer::new`] takes their dictionaries: `mcu`, then
/// each `[mcu NAME]` in file order.
pub fn mcu_names(config: &Config) -> Vec<String> {
    let mut names = vec!["mcu".to_owned()];
    for s in config.sections() {
        if let Some(n) = s.name().strip_prefix("mcu ") {
            names.push(n.trim().to_owned());
        }
    }
    names
}

impl Printer {
    /// A printer for planning only (estimates, the twin's timing): no dictionaries, no pin checks,
    /// no step generation. MCU clocks are taken as 16 MHz.
    ///
    /// # Errors
    /// Missing or invalid options, unknown kinematics.
    pub fn for_planning(config: &Config) -> Result<Self, PrinterError> {
        let mut p = Self::build(config, None)?;
        p.toolhead.step_generation = false;
        p.toolhead.record = Some(Vec::new());
        p.keep_motion_history(false);
        Ok(p)
    }

    /// Builds the printer from `config` with one dictionary per MCU name (`mcu`, `extruder_board`).
    ///
    /// # Errors
    /// Missing or invalid options, unknown kinematics, pins the dictionary does not know.
    pub fn new(config: &Config, dicts: &[(&str, &Dictionary)]) -> Result<Self, PrinterError> {
        Self::build(config, Some(dicts))
    }

    fn build(config: &Config, dicts: Option<&[(&str, &Dictionary)]>) -> Result<Self, PrinterError> {
        let cfg = Cfg { config };
        let mut mcus = Vec::new();
        for name in &mcu_names(config) {
            let Some(dicts) = dicts else {
                mcus.push(PrinterMcu {
                    name: name.clone(),
                    freq: 16_000_000.0,
                    pins: Vec::new(),
                    oid_count: 0,
                    config_cmds: Vec::new(),
                    callbacks: Vec::new(),
                    deferred_oids: Vec::new(),
                    init_cmds: Vec::new(),
                    reserved_move_slots: 0,
                    startup_cmds: Vec::new(),
                    adc: None,
                    analog_queries: Vec::new(),
                });
                continue;
            };
            let dict = dicts.iter().find(|(n, _)| n == name).map(|(_, d)| *d);
            let Some(dict) = dict else {
                return Err(cfg_err(format!("No dictionary for mcu '{name}'")));
            };
            let freq = dict
                .clock_freq()
                .map_err(|e| cfg_err(format!("mcu '{name}': {e}")))?;
            let pins = dict
                .enumerations
                .get("pin")
                .map(|e| e.names().map(str::to_owned).collect())
                .unwrap_or_default();
            mcus.push(PrinterMcu {
                name: name.clone(),
                freq,
                pins,
                oid_count: 0,
                config_cmds: Vec::new(),
                callbacks: Vec::new(),
                deferred_oids: Vec::new(),
                init_cmds: Vec::new(),
                reserved_move_slots: 0,
                startup_cmds: Vec::new(),
                adc: Some(heaters::McuAdcFacts::of(dict)),
                analog_queries: Vec::new(),
            });
        }
        let max_velocity = cfg.getfloat("printer", "max_velocity", None, above(0.0))?;
        let max_accel = cfg.getfloat("printer", "max_accel", None, above(0.0))?;
        let min_cruise_ratio = cfg.getfloat(
            "printer",
            "minimum_cruise_ratio",
            Some(0.5),
            FloatBounds::NONE.min(0.0).below(1.0),
        )?;
        let scv = cfg.getfloat("printer", "square_corner_velocity", Some(5.0), minval(0.0))?;
        let kin_name = cfg.get("printer", "kinematics")?.trim().to_owned();
        let kinematics = match kin_name.as_str() {
            "cartesian" => KinematicsKind::Cartesian,
            "corexy" => KinematicsKind::CoreXY,
            "delta" => KinematicsKind::Delta,
            "none" => KinematicsKind::None,
            other => {
                return Err(cfg_err(format!("Error loading kinematics '{other}'")));
            }
        };
        let toolhead = Toolhead::new(
            max_velocity,
            max_accel,
            min_cruise_ratio,
            scv,
            KinLimits::None,
        );
        let mut p = Printer {
            toolhead,
            mcus,
            rails: Vec::new(),
            kinematics,
            enable_pins: Vec::new(),
            shared_enable_pins: Vec::new(),
            digital_outs: Vec::new(),
            stepper_enabled: Vec::new(),
            gcode: GCodeMove::default(),
            fan_queue: None,
            fan_out: None,
            responses: Vec::new(),
            response_counts: responses::ResponseCounts::default(),
            current_line: 0,
            partial_line: Vec::new(),
            line_no: 0,
            unterminated_line: None,
            batch_stops_on_error: false,
            errors_reported: 0,
            errors_before_read: 0,
            read_error_line: 0,
            batch_error_exit: None,
            layer_marks: None,
            heater_targets: Vec::new(),
            heater_sensors: Vec::new(),
            heater_sensor_slots: Vec::new(),
            sensor_types: heaters::SensorRegistry::default(),
            sensors: Vec::new(),
            sensor_slots: Vec::new(),
            temperature_fans: Vec::new(),
            extruder_pa: Vec::new(),
            input_shaper: None,
            shaper_position_skew: Vec::new(),
            batch_homing_skew: false,
            saved_states: Vec::new(),
            firmware_retraction: None,
            exclude_object: None,
            print_stats: print_stats::PrintStats::default(),
            pause_resume: print_stats::PauseResume::default(),
            display_message: String::new(),
            display_progress: None,
            line_error: None,
            end_print_time: 0.0,
            heater_outputs: Vec::new(),
            heater_temps: Vec::new(),
            heaters: Vec::new(),
            heater_checks: Vec::new(),
            live: None,
            arc_resolution: None,
            arc_plane: crate::arcs::ArcPlane::default(),
            macros: crate::macros::MacroSet::from_config(config)
                .map_err(|e| cfg_err(e.to_string()))?,
            renamed: Vec::new(),
            macro_commands: std::collections::HashSet::new(),
            macro_stack: Vec::new(),
            config_snapshot: config
                .sections()
                .map(|s| {
                    (
                        s.name().to_lowercase(),
                        s.options()
                            .map(|(k, v)| (k.to_lowercase(), v.to_owned()))
                            .collect(),
                    )
                })
                .collect(),
        };
        for m in &p.mcus {
            p.toolhead
                .mcus
                .push(McuQueue::new(m.freq, BATCH_MOVE_COUNT));
        }
        // Klipper's creation order: modules of the config's sections in file order, then the
        // toolhead (kinematics rails, then extruders with their heaters).
        let section_names: Vec<String> = config.sections().map(|s| s.name().to_owned()).collect();
        for name in &section_names {
            p.sensor_types.section_reached(config, name)?;
            match name.as_str() {
                "heater_bed" => {
                    p.heater_targets.push(("heater_bed".to_owned(), 0.0));
                    p.build_heater(&cfg, "heater_bed")?;
                }
                "fan" => p.build_fan(&cfg)?,
                n if n.starts_with("temperature_sensor ") => p.build_temperature_sensor(&cfg, n)?,
                n if n.starts_with("temperature_fan ") => p.build_temperature_fan(&cfg, n)?,
                n if n.split_whitespace().next() == Some("heater_generic")
                    && n.split_whitespace().nth(1).is_some() =>
                {
                    p.heater_targets.push((n.to_owned(), 0.0));
                    p.build_heater(&cfg, n)?;
                }
                _ => {}
            }
        }
        p.build_kinematics(&cfg, max_velocity, max_accel)?;
        p.build_extruders(&cfg, max_velocity, max_accel)?;
        for m in &mut p.mcus {
            m.finalize_config()?;
        }
        let sensors = p.heater_sensors.iter_mut().zip(&p.heater_sensor_slots);
        for (h, &slot) in sensors.chain(p.sensors.iter_mut().zip(&p.sensor_slots)) {
            let m = &p.mcus[h.mcu];
            h.oid = m.deferred_oids[slot];
            h.query = m
                .analog_queries
                .iter()
                .find(|(s, _)| *s == slot)
                .map(|(_, q)| q.clone());
        }
        for (mi, m) in p.mcus.iter_mut().enumerate() {
            m.startup_cmds = std::mem::take(&mut m.init_cmds);
            for cmd in &m.startup_cmds {
                p.toolhead.send(mi, 0, 0, cmd.clone());
            }
        }
        for d in &mut p.digital_outs {
            d.oid = p.mcus[d.mcu].deferred_oids[d.slot];
        }
        if let (Some(qi), Some(d)) = (p.fan_queue, p.fan_out) {
            p.toolhead.pwm_queues[qi].oid = p.digital_outs[d].oid;
        }
        p.build_input_shaper(&cfg)?;
        p.firmware_retraction = gcode_state::FirmwareRetraction::from_config(&cfg)?;
        p.renamed = p
            .macros
            .macros()
            .iter()
            .filter_map(|m| Some((m.rename_existing.clone()?, m.command.clone())))
            .collect();
        p.macro_commands = p
            .macros
            .macros()
            .iter()
            .map(|m| m.command.clone())
            .collect();
        if cfg.has("gcode_arcs") {
            p.arc_resolution = Some(cfg.getfloat(
                "gcode_arcs",
                "resolution",
                Some(crate::arcs::DEFAULT_RESOLUTION_MM),
                above(0.0),
            )?);
        }
        if cfg.has("exclude_object") {
            p.exclude_object = Some(exclude_object::ExcludeObject::default());
        }
        if cfg.has("pause_resume") {
            p.pause_resume.recover_velocity = cfg.getfloat(
                "pause_resume",
                "recover_velocity",
                Some(50.0),
                FloatBounds::NONE,
            )?;
        }
        // The step budget: the MCU's move queue less the slots outputs reserve (klippy uses 500
        // moves in batch mode, where no MCU answers get_config).
        for (q, m) in p.toolhead.mcus.iter_mut().zip(&p.mcus) {
            q.set_move_count(BATCH_MOVE_COUNT.saturating_sub(m.reserved_move_slots));
        }
        Ok(p)
    }

    fn mcu_index(&self, name: &str) -> Result<usize, PrinterError> {
        self.mcus
            .iter()
            .position(|m| m.name == name)
            .ok_or_else(|| cfg_err(format!("Unknown pin chip name '{name}'")))
    }

    /// The MCU a pin is on, after checking the pin against that MCU's dictionary.
    /// A virtual endstop as the physical pin behind it: `probe:z_virtual_endstop` is the
    /// `[probe]` (or `[bltouch]`) sensor, whose `z_offset` becomes the rail's default
    /// position_endstop; `tmcXXXX_stepper_x:virtual_endstop` is that driver's diag pin
    /// (sensorless homing). Batch homing never waits for a trigger, so the pin only matters for
    /// the config phase.
    fn resolve_virtual_endstop(
        &self,
        cfg: &Cfg<'_>,
        section: &str,
        es: PinDesc,
    ) -> Result<(PinDesc, Option<f64>), PrinterError> {
        let chip = es.chip.to_ascii_lowercase();
        if chip == "probe" {
            if es.pin != "z_virtual_endstop" {
                return Err(cfg_err(format!(
                    "Probe virtual endstop only useful as endstop pin (section '{section}')"
                )));
            }
            let (probe, option) = if cfg.has("probe") {
                ("probe", "pin")
            } else if cfg.has("bltouch") {
                ("bltouch", "sensor_pin")
            } else {
                return Err(cfg_err(format!(
                    "Unknown pin chip name 'probe' in section '{section}' (no [probe] or \
                     [bltouch] section)"
                )));
            };
            let pin = cfg.getpin(probe, option, PinFlags::ENDSTOP)?;
            let z_offset = cfg.getfloat(probe, "z_offset", None, FloatBounds::NONE)?;
            return Ok((pin, Some(z_offset)));
        }
        if chip.starts_with("tmc") && es.pin == "virtual_endstop" {
            let driver = chip.replacen('_', " ", 1);
            if !cfg.has(&driver) {
                return Err(cfg_err(format!(
                    "Unknown pin chip name '{}' in section '{section}'",
                    es.chip
                )));
            }
            for option in ["diag_pin", "diag0_pin", "diag1_pin"] {
                if let Some(pin) = cfg.getpin_opt(&driver, option, PinFlags::ENDSTOP)? {
                    return Ok((pin, None));
                }
            }
            return Err(cfg_err(format!(
                "Section '{driver}' needs a diag pin for its virtual endstop"
            )));
        }
        Ok((es, None))
    }

    fn pin_mcu(&self, pin: &PinDesc) -> Result<usize, PrinterError> {
        let mi = self.mcu_index(&pin.chip)?;
        let mcu = &self.mcus[mi];
        if !mcu.pins.is_empty() {
            check_pin_name(&pin.pin, &mcu.name, mcu.pins.iter().map(String::as_str))
                .map_err(|e| cfg_err(e.message))?;
        }
        Ok(mi)
    }

    fn add_stepper(
        &mut self,
        cfg: &Cfg<'_>,
        section: &str,
        kin: Kinematics,
        trapq: Option<TrapqId>,
    ) -> Result<usize, PrinterError> {
        let step = cfg.getpin(section, "step_pin", PinFlags::INVERT)?;
        let dir = cfg.getpin(section, "dir_pin", PinFlags::INVERT)?;
        let mi = self.pin_mcu(&step)?;
        self.pin_mcu(&dir)?;
        if dir.chip != step.chip {
            return Err(cfg_err("Stepper dir pin must be on same mcu as step pin"));
        }
        let rotation_distance = cfg.getfloat(section, "rotation_distance", None, above(0.0))?;
        let microsteps = cfg.getint(section, "microsteps", None)?;
        if microsteps < 1 {
            return Err(cfg_err(format!(
                "Option 'microsteps' in section '{section}' must have minimum of 1"
            )));
        }
        let full_steps = cfg.getint(section, "full_steps_per_rotation", Some(200))?;
        if full_steps < 1 || full_steps % 4 != 0 {
            return Err(cfg_err(format!(
                "full_steps_per_rotation invalid in section '{section}'"
            )));
        }
        let mut gearing = 1.0;
        if let Some(gr) = cfg.get_opt(section, "gear_ratio") {
            for pair in gr.split(',') {
                let Some((a, b)) = pair.split_once(':') else {
                    return Err(cfg_err(format!(
                        "Unable to parse option 'gear_ratio' in section '{section}'"
                    )));
                };
                let a: f64 = a.trim().parse().map_err(|_| {
                    cfg_err(format!(
                        "Unable to parse option 'gear_ratio' in section '{section}'"
                    ))
                })?;
                let b: f64 = b.trim().parse().map_err(|_| {
                    cfg_err(format!(
                        "Unable to parse option 'gear_ratio' in section '{section}'"
                    ))
                })?;
                gearing *= a / b;
            }
        }
        let step_dist = rotation_distance / (full_steps as f64 * microsteps as f64 * gearing);
        let pulse = cfg.getfloat(
            section,
            "step_pulse_duration",
            Some(0.000_002),
            FloatBounds::NONE.min(0.0).max(0.001),
        )?;
        let oid = self.mcus[mi].create_oid();
        let mcu = &mut self.mcus[mi];
        let step_pulse_ticks = (pulse * mcu.freq) as u64;
        mcu.add_ready(vec![format!(
            "config_stepper oid={oid} step_pin={} dir_pin={} invert_step={} step_pulse_ticks={step_pulse_ticks}",
            step.pin,
            dir.pin,
            u8::from(step.invert)
        )]);
        let max_error = (MAX_STEPCOMPRESS_ERROR * mcu.freq) as u32;
        let mut sc = StepCompress::new(max_error, dir.invert);
        sc.set_time(0.0, mcu.freq);
        let idx = self.toolhead.steppers.len();
        self.toolhead.steppers.push(MotionStepper {
            name: section.to_owned(),
            mcu: mi,
            oid,
            solver: StepperSolver::new(kin, step_dist),
            sc,
            trapq,
            mcu_position_offset: 0.0,
            enable_pending: true,
            last_clocks: (0, 0),
        });
        // Enable pin: steppers naming the same pin share one output (Klipper's
        // stepper_enable.lookup_enable_pin), which stays on while any of them is enabled.
        let enable = match cfg.getpin_opt(section, "enable_pin", PinFlags::INVERT)? {
            Some(pin) => {
                let emi = self.pin_mcu(&pin)?;
                let shared = self
                    .shared_enable_pins
                    .iter()
                    .find(|(m, name, _, _)| *m == emi && *name == pin.pin);
                match shared {
                    Some(&(_, _, invert, out)) if invert == pin.invert => Some(out),
                    Some(_) => {
                        return Err(cfg_err(format!(
                            "Shared pin {} must have same polarity",
                            pin.pin
                        )));
                    }
                    None => {
                        let out = self.add_digital_out(emi, &pin);
                        self.shared_enable_pins
                            .push((emi, pin.pin.clone(), pin.invert, out));
                        Some(out)
                    }
                }
            }
            None => None,
        };
        self.enable_pins.push(enable);
        self.stepper_enabled.push(false);
        Ok(idx)
    }

    /// A digital (or software-PWM) output that starts and shuts down off; its oid is known
    /// after the config callbacks run.
    fn add_digital_out_with(
        &mut self,
        mi: usize,
        pin: &PinDesc,
        max_duration_ticks: u64,
        cycle_ticks: Option<u64>,
    ) -> usize {
        let off = pin.invert;
        self.add_output(mi, pin, max_duration_ticks, cycle_ticks, (off, off))
    }

    /// A software-PWM output with its start and shutdown pin levels (after inversion).
    fn add_pwm_out(
        &mut self,
        mi: usize,
        pin: &PinDesc,
        max_duration_ticks: u64,
        cycle_ticks: u64,
        start: bool,
        shutdown: bool,
    ) -> usize {
        self.add_output(
            mi,
            pin,
            max_duration_ticks,
            Some(cycle_ticks),
            (start, shutdown),
        )
    }

    fn add_output(
        &mut self,
        mi: usize,
        pin: &PinDesc,
        max_duration_ticks: u64,
        cycle_ticks: Option<u64>,
        (start, shutdown): (bool, bool),
    ) -> usize {
        let mcu = &mut self.mcus[mi];
        mcu.reserved_move_slots += 1;
        let pin_name = pin.pin.clone();
        let slot = mcu.add_deferred(|slot| ConfigCallback::DigitalOut {
            slot,
            pin: pin_name,
            value: u8::from(start),
            default_value: u8::from(shutdown),
            max_duration_ticks,
            cycle_ticks,
        });
        self.digital_outs.push(DigitalOut {
            mcu: mi,
            slot,
            oid: 0,
            invert: pin.invert,
            last_clock: 0,
        });
        self.digital_outs.len() - 1
    }

    fn add_digital_out(&mut self, mi: usize, pin: &PinDesc) -> usize {
        self.add_digital_out_with(mi, pin, 0, None)
    }

    fn set_digital(&mut self, out: usize, print_time: f64, value: bool) {
        let d = &mut self.digital_outs[out];
        let clock = self.toolhead.mcus[d.mcu].print_time_to_clock(print_time);
        let v = u8::from(value ^ d.invert);
        let (mcu, oid, min_clock) = (d.mcu, d.oid, d.last_clock);
        d.last_clock = clock;
        self.toolhead.send(
            mcu,
            clock,
            min_clock,
            format!("queue_digital_out oid={oid} clock={clock} on_ticks={v}"),
        );
    }

    fn add_rail(
        &mut self,
        cfg: &Cfg<'_>,
        section: &str,
        kin: Kinematics,
        need_position_minmax: bool,
        default_position_endstop: Option<f64>,
    ) -> Result<usize, PrinterError> {
        // Endstop and trsync oids come before the stepper's, as in Klipper.
        let es = cfg.getpin(section, "endstop_pin", PinFlags::ENDSTOP)?;
        let (es, probe_z_offset) = self.resolve_virtual_endstop(cfg, section, es)?;
        let default_position_endstop = probe_z_offset.or(default_position_endstop);
        let emi = self.pin_mcu(&es)?;
        let pull_up = match es.pull {
            Pull::Up => 1,
            Pull::Down => -1,
            Pull::None => 0,
        };
        let es_oid = self.mcus[emi].create_oid();
        let trsync_oid = self.mcus[emi].create_oid();
        self.mcus[emi].add_ready(vec![
            format!(
                "config_endstop oid={es_oid} pin={} pull_up={}",
                es.pin, pull_up
            ),
            format!("config_trsync oid={trsync_oid}"),
        ]);
        let stepper = self.add_stepper(cfg, section, kin, Some(TrapqId::Toolhead))?;
        let mut stepper_trsyncs = Vec::new();
        self.add_stepper_trsync(emi, stepper, &mut stepper_trsyncs)?;
        let position_endstop = cfg.getfloat(
            section,
            "position_endstop",
            default_position_endstop,
            FloatBounds::NONE,
        )?;
        let (position_min, position_max) = if need_position_minmax {
            let min = cfg.getfloat(section, "position_min", Some(0.0), FloatBounds::NONE)?;
            let max = cfg.getfloat(section, "position_max", None, above(min))?;
            (min, max)
        } else {
            (0.0, position_endstop)
        };
        if position_endstop < position_min || position_endstop > position_max {
            return Err(cfg_err(format!(
                "position_endstop in section '{section}' must be between position_min and position_max"
            )));
        }
        let homing_speed = cfg.getfloat(section, "homing_speed", Some(5.0), above(0.0))?;
        let second_homing_speed = cfg.getfloat(
            section,
            "second_homing_speed",
            Some(homing_speed / 2.0),
            above(0.0),
        )?;
        let homing_retract_speed = cfg.getfloat(
            section,
            "homing_retract_speed",
            Some(homing_speed),
            above(0.0),
        )?;
        let homing_retract_dist =
            cfg.getfloat(section, "homing_retract_dist", Some(5.0), minval(0.0))?;
        let homing_positive_dir = match cfg.getboolean(section, "homing_positive_dir")? {
            Some(d) => {
                if (d && position_endstop == position_min)
                    || (!d && position_endstop == position_max)
                {
                    return Err(cfg_err(format!(
                        "Invalid homing_positive_dir / position_endstop in '{section}'"
                    )));
                }
                d
            }
            None => {
                let len = position_max - position_min;
                if position_endstop <= position_min + len / 4.0 {
                    false
                } else if position_endstop >= position_max - len / 4.0 {
                    true
                } else {
                    return Err(cfg_err(format!(
                        "Unable to infer homing_positive_dir in section '{section}'"
                    )));
                }
            }
        };
        let mut steppers = vec![stepper];
        // stepper_x1, stepper_x2 … share the rail.
        for i in 1..99 {
            let extra = format!("{section}{i}");
            if !cfg.has(&extra) {
                break;
            }
            let kin2 = self.toolhead.steppers[stepper].solver.kinematics().clone();
            let extra_stepper = self.add_stepper(cfg, &extra, kin2, Some(TrapqId::Toolhead))?;
            self.add_stepper_trsync(emi, extra_stepper, &mut stepper_trsyncs)?;
            steppers.push(extra_stepper);
        }
        // Klipper's TriggerDispatch: the steppers of one rail on two MCUs cannot stop together.
        let stepper_mcus: Vec<usize> = steppers
            .iter()
            .map(|&si| self.toolhead.steppers[si].mcu)
            .collect();
        if stepper_mcus.iter().any(|&m| m != stepper_mcus[0]) {
            return Err(cfg_err(
                "Multi-mcu homing not supported on multi-mcu shared axis".to_owned(),
            ));
        }
        self.rails.push(Rail {
            name: section.to_owned(),
            steppers,
            position_min,
            position_max,
            position_endstop,
            homing_speed,
            second_homing_speed,
            homing_retract_speed,
            homing_retract_dist,
            homing_positive_dir,
            endstop: (emi, es_oid, trsync_oid),
            stepper_trsyncs,
            endstop_invert: es.invert,
        });
        Ok(self.rails.len() - 1)
    }

    /// A trsync on stepper `si`'s MCU when that is not the endstop's MCU `emi` (one per MCU,
    /// created right after the MCU's first stepper of the rail, as Klipper's `add_stepper`).
    fn add_stepper_trsync(
        &mut self,
        emi: usize,
        si: usize,
        trsyncs: &mut Vec<(usize, u8)>,
    ) -> Result<(), PrinterError> {
        let mi = self.toolhead.steppers[si].mcu;
        if mi == emi || trsyncs.iter().any(|&(m, _)| m == mi) {
            return Ok(());
        }
        let oid = self.mcus[mi].create_oid();
        self.mcus[mi].add_ready(vec![format!("config_trsync oid={oid}")]);
        trsyncs.push((mi, oid));
        Ok(())
    }

    fn build_kinematics(
        &mut self,
        cfg: &Cfg<'_>,
        max_velocity: f64,
        max_accel: f64,
    ) -> Result<(), PrinterError> {
        match self.kinematics {
            KinematicsKind::Cartesian | KinematicsKind::CoreXY => {
                let corexy = self.kinematics == KinematicsKind::CoreXY;
                for (axis, name) in ["stepper_x", "stepper_y", "stepper_z"].iter().enumerate() {
                    let kin = if corexy && axis < 2 {
                        Kinematics::CoreXY { plus: axis == 0 }
                    } else {
                        Kinematics::Cartesian { axis }
                    };
                    self.add_rail(cfg, name, kin, true, None)?;
                }
                let (max_z_velocity, max_z_accel) = z_limits(cfg, max_velocity, max_accel)?;
                self.toolhead.kin_limits = KinLimits::Cartesian {
                    max_z_velocity,
                    max_z_accel,
                };
            }
            KinematicsKind::Delta => self.build_delta(cfg, max_velocity, max_accel)?,
            KinematicsKind::None => {}
        }
        Ok(())
    }

    fn build_delta(
        &mut self,
        cfg: &Cfg<'_>,
        max_velocity: f64,
        max_accel: f64,
    ) -> Result<(), PrinterError> {
        let radius = cfg.getfloat("printer", "delta_radius", None, above(0.0))?;
        let print_radius = cfg.getfloat("printer", "print_radius", Some(radius), above(0.0))?;
        let arm_a = cfg.getfloat("stepper_a", "arm_length", None, above(radius))?;
        let names = ["stepper_a", "stepper_b", "stepper_c"];
        let mut arms = [0.0; 3];
        let mut towers = [(0.0, 0.0); 3];
        for (i, name) in names.iter().enumerate() {
            arms[i] = cfg.getfloat(name, "arm_length", Some(arm_a), above(radius))?;
            let angle = cfg.getfloat(
                name,
                "angle",
                Some([210.0, 330.0, 90.0][i]),
                FloatBounds::NONE,
            )?;
            let a = angle.to_radians();
            towers[i] = (a.cos() * radius, a.sin() * radius);
        }
        let mut a_endstop = None;
        for (i, name) in names.iter().enumerate() {
            let kin = Kinematics::Delta {
                arm2: arms[i] * arms[i],
                tower_x: towers[i].0,
                tower_y: towers[i].1,
            };
            let r = self.add_rail(cfg, name, kin, false, a_endstop)?;
            if i == 0 {
                a_endstop = Some(self.rails[r].position_endstop);
            }
        }
        let (max_z_velocity, max_z_accel) = z_limits(cfg, max_velocity, max_accel)?;
        let endstops: Vec<f64> = self.rails.iter().map(|r| r.position_endstop).collect();
        let abs_endstops: Vec<f64> = (0..3)
            .map(|i| endstops[i] + (arms[i] * arms[i] - radius * radius).sqrt())
            .collect();
        let arm2: Vec<f64> = arms.iter().map(|a| a * a).collect();
        let spheres: Vec<[f64; 3]> = (0..3)
            .map(|i| [towers[i].0, towers[i].1, abs_endstops[i]])
            .collect();
        let home = trilateration(&spheres, &arm2);
        let max_z = endstops.iter().cloned().fold(f64::INFINITY, f64::min);
        let min_z = cfg.getfloat(
            "printer",
            "minimum_z_position",
            Some(0.0),
            FloatBounds::NONE.max(max_z),
        )?;
        let limit_z = (0..3)
            .map(|i| abs_endstops[i] - arms[i])
            .fold(f64::INFINITY, f64::min);
        let min_arm_length = arms.iter().cloned().fold(f64::INFINITY, f64::min);
        let half_min_step_dist = self
            .rails
            .iter()
            .map(|r| self.toolhead.steppers[r.steppers[0]].solver.step_dist())
            .fold(f64::INFINITY, f64::min)
            * 0.5;
        let ratio_to_xy = |ratio: f64| {
            ratio
                * (min_arm_length * min_arm_length / (ratio * ratio + 1.0)
                    - half_min_step_dist * half_min_step_dist)
                    .sqrt()
                + half_min_step_dist
                - radius
        };
        let slow_ratio = 3.0;
        let slow_xy2 = ratio_to_xy(slow_ratio).powi(2);
        let very_slow_xy2 = ratio_to_xy(2.0 * slow_ratio).powi(2);
        let max_xy2 = print_radius
            .min(min_arm_length - radius)
            .min(ratio_to_xy(4.0 * slow_ratio))
            .powi(2);
        self.toolhead.kin_limits = KinLimits::Delta(DeltaLimits {
            max_z_velocity,
            max_z_accel,
            max_velocity,
            max_accel,
            radius,
            min_arm_length,
            max_xy2,
            slow_xy2,
            very_slow_xy2,
            limit_z,
            min_z,
            max_z,
            home_position: home,
            limit_xy2: -1.0,
            need_home: true,
        });
        // Klipper's delta starts at 0,0,0.
        let _ = self.toolhead.set_position([0.0; AXES], &[]);
        Ok(())
    }

    fn build_extruders(
        &mut self,
        cfg: &Cfg<'_>,
        max_velocity: f64,
        max_accel: f64,
    ) -> Result<(), PrinterError> {
        for i in 0..99 {
            let section = if i == 0 {
                "extruder".to_owned()
            } else {
                format!("extruder{i}")
            };
            if !cfg.has(&section) {
                break;
            }
            let s = section.as_str();
            let nozzle_diameter = cfg.getfloat(s, "nozzle_diameter", None, above(0.0))?;
            let filament_diameter =
                cfg.getfloat(s, "filament_diameter", None, minval(nozzle_diameter))?;
            let filament_area = PI * (filament_diameter * 0.5).powi(2);
            let def_max_cross_section = 4.0 * nozzle_diameter * nozzle_diameter;
            let def_max_extrude_ratio = def_max_cross_section / filament_area;
            let max_cross_section = cfg.getfloat(
                s,
                "max_extrude_cross_section",
                Some(def_max_cross_section),
                above(0.0),
            )?;
            let max_e_velocity = cfg.getfloat(
                s,
                "max_extrude_only_velocity",
                Some(max_velocity * def_max_extrude_ratio),
                above(0.0),
            )?;
            let max_e_accel = cfg.getfloat(
                s,
                "max_extrude_only_accel",
                Some(max_accel * def_max_extrude_ratio),
                above(0.0),
            )?;
            let max_e_dist =
                cfg.getfloat(s, "max_extrude_only_distance", Some(50.0), minval(0.0))?;
            let instant_corner_v =
                cfg.getfloat(s, "instantaneous_corner_velocity", Some(1.0), minval(0.0))?;
            let pa = cfg.getfloat(s, "pressure_advance", Some(0.0), minval(0.0))?;
            let smooth = cfg.getfloat(
                s,
                "pressure_advance_smooth_time",
                Some(0.040),
                FloatBounds::NONE.max(0.200).above(0.0),
            )?;
            let ei = self.toolhead.extruders.len();
            self.toolhead.extruders.push(ExtruderMotion {
                name: section.clone(),
                trapq: crate::trapq::TrapQ::new(),
                max_extrude_ratio: max_cross_section / filament_area,
                nozzle_diameter,
                filament_area,
                max_e_velocity,
                max_e_accel,
                max_e_dist,
                instant_corner_v,
                last_position: 0.0,
            });
            self.extruder_pa.push((pa, smooth));
            self.build_heater(cfg, s)?;
            let has_stepper = cfg.get_opt(s, "step_pin").is_some()
                || cfg.get_opt(s, "dir_pin").is_some()
                || cfg.get_opt(s, "rotation_distance").is_some();
            if has_stepper {
                let idx = self.add_stepper(
                    cfg,
                    s,
                    Kinematics::Extruder(ExtruderKin::new()),
                    Some(TrapqId::Extruder(ei)),
                )?;
                if pa != 0.0 {
                    // Klipper sets the configured pressure advance at connect (a flush, then
                    // the new smoothing window).
                    if let Kinematics::Extruder(k) =
                        self.toolhead.steppers[idx].solver.kinematics_mut()
                    {
                        k.set_pressure_advance(0.0, 0.0, pa, smooth);
                    }
                    self.toolhead.steppers[idx].solver.update_windows();
                }
            }
            if i == 0 {
                self.toolhead.active_extruder = Some(0);
            }
            self.heater_targets.push((section, 0.0));
        }
        self.toolhead.check_step_generation_scan_windows();
        Ok(())
    }

    /// A heater's sensor (ADC, sampled with its `min_temp`/`max_temp` range) and heater output
    /// (software PWM, `pwm_cycle_time` cycle, 3 s max_duration), created in that order as
    /// Klipper's `setup_heater` does. A sensor Gantry does not model keeps a plain
    /// `config_analog_in` on its `sensor_pin`.
    fn build_heater(&mut self, cfg: &Cfg<'_>, s: &str) -> Result<(), PrinterError> {
        let (Some(sensor), Some(heater)) = (
            cfg.getpin_opt(s, "sensor_pin", PinFlags::PLAIN)?,
            cfg.getpin_opt(s, "heater_pin", PinFlags::INVERT)?,
        ) else {
            return Ok(());
        };
        let section = cfg.config.getsection(s);
        let curve = self.sensor_types.setup_sensor(&section)?;
        let smi = self.pin_mcu(&sensor)?;
        let min_temp = cfg.getfloat(
            s,
            "min_temp",
            None,
            minval(crate::thermistor::KELVIN_TO_CELSIUS),
        )?;
        let max_temp = cfg.getfloat(s, "max_temp", None, above(min_temp))?;
        let sampling = curve
            .as_ref()
            .map(|c| heaters::heater_sampling(c, min_temp, max_temp));
        let sensor_pin = sensor.pin.clone();
        let slot = self.mcus[smi].add_deferred(|slot| ConfigCallback::AnalogIn {
            slot,
            pin: sensor_pin,
            sampling,
        });
        self.heater_sensors.push(HeaterSensor {
            heater: s.to_owned(),
            sensor_type: cfg.get(s, "sensor_type")?.trim().to_owned(),
            min_temp,
            max_temp,
            mcu: smi,
            oid: 0,
            curve: curve.clone(),
            query: None,
        });
        self.heater_sensor_slots.push(slot);
        let hmi = self.pin_mcu(&heater)?;
        // The PWM cycle may not exceed the sensor's report time (Klipper's pwm_delay).
        let cycle_bounds = if curve.is_some() {
            above(0.0).max(crate::thermistor::REPORT_TIME)
        } else {
            above(0.0)
        };
        let cycle_time = cfg.getfloat(s, "pwm_cycle_time", Some(0.100), cycle_bounds)?;
        let freq = self.mcus[hmi].freq;
        let max_duration = (3.0 * freq) as u64;
        let cycle = (cycle_time * freq) as u64;
        let out = self.add_digital_out_with(hmi, &heater, max_duration, Some(cycle));
        self.heater_outputs.push((s.to_owned(), out, cycle));
        self.heater_temps.push(None);
        let control = crate::heater_control::HeaterConfig::from_section(
            &section,
            crate::thermistor::REPORT_TIME,
        )
        .map_err(conf)?;
        self.heaters
            .push(crate::heater_control::Heater::new(control));
        let verify =
            crate::heater_control::VerifyHeaterConfig::from_config(cfg.config, s).map_err(conf)?;
        self.heater_checks
            .push((crate::heater_control::VerifyHeater::new(verify), 0.0));
        Ok(())
    }

    fn build_fan(&mut self, cfg: &Cfg<'_>) -> Result<(), PrinterError> {
        if !cfg.has("fan") {
            return Ok(());
        }
        let pin = cfg.getpin("fan", "pin", PinFlags::INVERT)?;
        let mi = self.pin_mcu(&pin)?;
        let max_power = cfg.getfloat(
            "fan",
            "max_power",
            Some(1.0),
            FloatBounds::NONE.max(1.0).above(0.0),
        )?;
        let kick = cfg.getfloat("fan", "kick_start_time", Some(0.1), minval(0.0))?;
        let off_below = cfg.getfloat(
            "fan",
            "off_below",
            Some(0.0),
            FloatBounds::NONE.min(0.0).max(1.0),
        )?;
        let cycle_time = cfg.getfloat("fan", "cycle_time", Some(0.010), above(0.0))?;
        let cycle = (cycle_time * self.mcus[mi].freq) as u64;
        let out = self.add_digital_out_with(mi, &pin, 0, Some(cycle));
        self.fan_out = Some(out);
        // The oid is filled in once the config callbacks have run.
        let mut q = PwmRequestQueue::new(mi, 0, cycle, max_power, kick);
        q.invert = pin.invert;
        q.off_below = off_below;
        self.toolhead.pwm_queues.push(q);
        self.fan_queue = Some(self.toolhead.pwm_queues.len() - 1);
        Ok(())
    }

    // ---- G-code --------------------------------------------------------------------------

    fn respond_error(&mut self, msg: &str) {
        if self.errors_reported == self.errors_before_read {
            self.read_error_line = self.current_line;
        }
        self.errors_reported += 1;
        self.respond(format_args!("!! {msg}"));
    }

    fn respond_info(&mut self, msg: &str) {
        self.respond(format_args!("// {msg}"));
    }

    /// Records a response for the current line: kept in [`Printer::responses`] the first
    /// [`RESPONSES_KEPT_PER_TEXT`] times this exact text comes, then only counted (see
    /// [`Printer::repeated_responses`]).
    fn respond(&mut self, text: std::fmt::Arguments<'_>) {
        if let Some(sink) = self.live.as_mut().and_then(|l| l.response_sink.as_mut()) {
            sink(&Response {
                line: self.current_line,
                text: text.to_string(),
            });
            return;
        }
        if let Some(text) = self.response_counts.record(text) {
            self.responses.push(Response {
                line: self.current_line,
                text,
            });
        }
    }

    /// The responses that came more than [`RESPONSES_KEPT_PER_TEXT`] times, in the order they
    /// first came: each text and how many times it came in all (only the first
    /// [`RESPONSES_KEPT_PER_TEXT`] are in [`Printer::responses`]).
    pub fn repeated_responses(&self) -> impl Iterator<Item = &RepeatedResponse> {
        self.response_counts.repeated()
    }

    /// Runs one line of G-code (its 1-based number is used in responses).
    ///
    /// # Errors
    /// Only internal errors (step generation); command errors become responses as in Klipper.
    pub fn run_line(&mut self, line: &str, line_no: u32) -> Result<(), MoveError> {
        self.current_line = line_no;
        self.line_error = None;
        let Some(cmd) = Command::parse(line) else {
            return Ok(());
        };
        match self.dispatch(&cmd) {
            Ok(()) => Ok(()),
            Err(CommandError::User(msg)) => {
                self.respond_error(&msg);
                // gcode:command_error → gcode_move resets its position.
                self.reset_last_position();
                self.line_error = Some(msg);
                Ok(())
            }
            Err(CommandError::Move(MoveError::StepCompress(e))) => Err(MoveError::StepCompress(e)),
            Err(CommandError::Move(MoveError::Halted(why))) => Err(MoveError::Halted(why)),
            Err(CommandError::Move(e)) => {
                let msg = e.to_string();
                self.respond_error(&msg);
                self.reset_last_position();
                self.line_error = Some(msg);
                Ok(())
            }
        }
    }

    /// The error of the last line run, if its command failed (the text of its `!!` response).
    pub fn line_error(&self) -> Option<&str> {
        self.line_error.as_deref()
    }

    /// Runs a G-code script from inside a command (Klipper's `run_script_from_command`): line
    /// by line; the first error aborts the rest and becomes the calling command's error.
    fn run_script(&mut self, script: &str) -> Result<(), CommandError> {
        for line in script.split('\n') {
            if let Some(cmd) = Command::parse(line) {
                self.dispatch(&cmd)?;
            }
        }
        Ok(())
    }

    /// The axis ranges of the rails (Klipper's `axis_minimum` / `axis_maximum`).
    fn rails_limits(&self) -> Vec<(f64, f64)> {
        self.rails
            .iter()
            .map(|r| (r.position_min, r.position_max))
            .collect()
    }

    /// Klipper's `rawparams`: the command line after the command name (line number and
    /// checksum skipped).
    fn rawparams(cmd: &Command<'_>) -> String {
        let orig = cmd.raw();
        let name = cmd.name();
        let mut start = name.len();
        let mut end = orig.len();
        let head_matches = orig
            .get(..start)
            .is_some_and(|h| h.eq_ignore_ascii_case(name));
        if !head_matches {
            if let Some(pos) = orig.to_uppercase().find(name) {
                start += pos;
            }
            if let Some(star) = orig.rfind('*')
                && orig[star + 1..].chars().all(|c| c.is_ascii_digit())
                && star + 1 < orig.len()
            {
                end = star;
            }
        }
        let start = start.min(end);
        let mut text = orig.get(start..end).unwrap_or("");
        if text.starts_with(char::is_whitespace) {
            text = &text[1..];
        }
        text.to_owned()
    }

    /// Runs `[gcode_macro]` `cmd`: renders its template with the printer's state, answers its
    /// actions, then runs the script it produced.
    fn run_macro(&mut self, cmd: &Command<'_>) -> Result<(), CommandError> {
        let name = cmd.name();
        if self.macro_stack.iter().any(|m| m == name) {
            return Err(CommandError::User(format!(
                "Macro {name} called recursively"
            )));
        }
        let rawparams = Self::rawparams(cmd);
        let params = cmd.params_owned();
        let mut actions = Vec::new();
        let script = {
            let status = status::PrinterStatus { printer: self };
            self.macros
                .render(name, &params, &rawparams, &status, &mut actions)
        };
        for action in actions {
            match action {
                crate::macros::MacroAction::RespondInfo(msg) => self.respond_info(&msg),
                crate::macros::MacroAction::EmergencyStop(msg) => {
                    return Err(CommandError::User(format!("Shutdown due to {msg}")));
                }
                crate::macros::MacroAction::RaiseError(_)
                | crate::macros::MacroAction::CallRemoteMethod { .. } => {}
            }
        }
        let script = script.map_err(|e| CommandError::User(e.to_string()))?;
        self.macro_stack.push(name.to_owned());
        let result = self.run_script(&script);
        self.macro_stack.pop();
        result
    }

    /// Whether command `name` is a `[gcode_macro]` (`MacroSet::contains`, without its
    /// upper-casing copy for the usual ASCII names, which the split has upper-cased already).
    fn is_macro(&self, name: &str) -> bool {
        if self.macro_commands.is_empty() {
            return false;
        }
        if name.is_ascii() {
            self.macro_commands.contains(name)
        } else {
            self.macros.contains(name)
        }
    }

    fn dispatch(&mut self, cmd: &Command<'_>) -> Result<(), CommandError> {
        let name = cmd.name();
        if self.is_macro(name) {
            return self.run_macro(cmd);
        }
        if name == "SET_GCODE_VARIABLE" {
            return self
                .macros
                .cmd_set_gcode_variable(&cmd.params_owned(), cmd.raw())
                .map_err(|e| CommandError::User(e.to_string()));
        }
        // A command a macro took over is reachable under its rename_existing name.
        if let Some((_, original)) = self.renamed.iter().find(|(new, _)| new == name) {
            let mut c = cmd.clone();
            c.renamed = Some(original.clone());
            return self.dispatch_builtin(&c);
        }
        self.dispatch_builtin(cmd)
    }

    fn dispatch_builtin(&mut self, cmd: &Command<'_>) -> Result<(), CommandError> {
        // Byte-string patterns: matched by length, then byte by byte.
        match cmd.name().as_bytes() {
            b"G0" | b"G1" => self.cmd_g1(cmd),
            b"G4" => {
                let p = cmd.get_float("P", Some(0.0))?.unwrap_or(0.0);
                if p < 0.0 {
                    return Err(CommandError::User(
                        "Error on 'G4': P must have minimum of 0".into(),
                    ));
                }
                Ok(self.toolhead.dwell(p / 1000.0)?)
            }
            b"G20" => Err(CommandError::User(
                "Machine does not support G20 (inches) command".into(),
            )),
            b"M117" => {
                // display_status: the rest of the line is the message; none clears it.
                self.display_message = Self::rawparams(cmd).trim().to_owned();
                Ok(())
            }
            b"M73" => {
                if let Some(p) = cmd.get_float("P", None)? {
                    self.display_progress = Some((p / 100.0).clamp(0.0, 1.0));
                }
                Ok(())
            }
            b"M114" => {
                // gcode_move's M114: the G-code position, raw.
                let p = self.gcode_position();
                self.respond(format_args!(
                    "X:{:.3} Y:{:.3} Z:{:.3} E:{:.3}",
                    p[0], p[1], p[2], p[3]
                ));
                Ok(())
            }
            b"M105" => {
                // heaters' M105: the temperatures as Marlin-style hosts read them (a batch run
                // has no sensors to report).
                if let Ok(now) = self.host_time() {
                    let line = self.temperature_line(now);
                    self.respond(format_args!("{line}"));
                }
                Ok(())
            }
            b"M115" => {
                self.respond(format_args!(
                    "FIRMWARE_NAME:Klipper FIRMWARE_VERSION:gantry-{}",
                    env!("CARGO_PKG_VERSION")
                ));
                Ok(())
            }
            b"G21" | b"M110" | b"M21" => Ok(()),
            b"G28" => self.cmd_g28(cmd),
            b"G90" => {
                self.gcode.absolute_coord = true;
                Ok(())
            }
            b"G91" => {
                self.gcode.absolute_coord = false;
                Ok(())
            }
            b"G92" => self.cmd_g92(cmd),
            b"M82" => {
                self.gcode.absolute_extrude = true;
                Ok(())
            }
            b"M83" => {
                self.gcode.absolute_extrude = false;
                Ok(())
            }
            b"M18" | b"M84" => self.cmd_m84(),
            b"M104" => self.cmd_set_temp(cmd, "extruder", false),
            b"M109" => self.cmd_set_temp(cmd, "extruder", true),
            b"M140" => self.cmd_set_temp(cmd, "heater_bed", false),
            b"M190" => self.cmd_set_temp(cmd, "heater_bed", true),
            b"SET_HEATER_TEMPERATURE" => self.cmd_set_heater_temperature(cmd),
            b"SET_TEMPERATURE_FAN_TARGET" if !self.temperature_fans.is_empty() => {
                self.cmd_set_temperature_fan_target(cmd)
            }
            b"TEMPERATURE_WAIT" => self.cmd_temperature_wait(cmd),
            b"M106" => {
                let s = cmd.get_float("S", Some(255.0))?.unwrap_or(255.0);
                self.set_fan(s / 255.0)
            }
            b"M107" => self.set_fan(0.0),
            b"M204" => {
                let accel = match cmd.get_float("S", None)? {
                    Some(s) => s,
                    None => match (cmd.get_float("P", None)?, cmd.get_float("T", None)?) {
                        (Some(p), Some(t)) => p.min(t),
                        _ => {
                            self.respond_info(&format!("Invalid M204 command \"{}\"", cmd.raw()));
                            return Ok(());
                        }
                    },
                };
                if accel <= 0.0 {
                    return Err(CommandError::User(
                        "Error on 'M204': S must be above 0".into(),
                    ));
                }
                self.toolhead
                    .set_max_velocities(None, Some(accel), None, None);
                Ok(())
            }
            b"M220" => {
                let v = cmd.get_float("S", Some(100.0))?.unwrap_or(100.0) / (60.0 * 100.0);
                if v <= 0.0 {
                    return Err(CommandError::User(
                        "Error on 'M220': S must be above 0".into(),
                    ));
                }
                self.gcode.speed = self.gcode.speed / self.gcode.speed_factor * v;
                self.gcode.speed_factor = v;
                Ok(())
            }
            b"M221" => {
                let f = cmd.get_float("S", Some(100.0))?.unwrap_or(100.0) / 100.0;
                if f <= 0.0 {
                    return Err(CommandError::User(
                        "Error on 'M221': S must be above 0".into(),
                    ));
                }
                let last_e = self.gcode.last_position[3];
                let e_value = (last_e - self.gcode.base_position[3]) / self.gcode.extrude_factor;
                self.gcode.base_position[3] = last_e - e_value * f;
                self.gcode.extrude_factor = f;
                Ok(())
            }
            b"M400" if self.live.is_some() => Ok(self.live_wait_moves()?),
            b"M400" => Ok(self.toolhead.wait_moves()?),
            b"SET_VELOCITY_LIMIT" => {
                let [v, a, scv, mcr] = cmd.get_floats([
                    "VELOCITY",
                    "ACCEL",
                    "SQUARE_CORNER_VELOCITY",
                    "MINIMUM_CRUISE_RATIO",
                ])?;
                self.toolhead.set_max_velocities(v, a, scv, mcr);
                Ok(())
            }
            b"SET_KINEMATIC_POSITION" => self.cmd_set_kinematic_position(cmd),
            b"SET_PRESSURE_ADVANCE" => self.cmd_set_pressure_advance(cmd),
            b"SET_INPUT_SHAPER" if self.input_shaper.is_some() => self.cmd_set_input_shaper(cmd),
            b"G2" if self.arc_resolution.is_some() => self.cmd_arc(cmd, true),
            b"G3" if self.arc_resolution.is_some() => self.cmd_arc(cmd, false),
            b"G17" | b"G18" | b"G19" if self.arc_resolution.is_some() => {
                if let Some(plane) = crate::arcs::ArcPlane::from_command(cmd.name()) {
                    self.arc_plane = plane;
                }
                Ok(())
            }
            b"PAUSE" => self.cmd_pause(),
            b"RESUME" => self.cmd_resume(cmd),
            b"CLEAR_PAUSE" => {
                self.cmd_clear_pause();
                Ok(())
            }
            b"CANCEL_PRINT" => {
                self.cmd_cancel_print();
                Ok(())
            }
            b"TURN_OFF_HEATERS" => self.cmd_turn_off_heaters(),
            b"M112" if self.live.is_some() => {
                self.emergency_stop()?;
                Ok(())
            }
            b"SAVE_GCODE_STATE" => self.cmd_save_gcode_state(cmd),
            b"RESTORE_GCODE_STATE" => self.cmd_restore_gcode_state(cmd),
            b"SET_GCODE_OFFSET" => self.cmd_set_gcode_offset(cmd),
            b"G10" if self.firmware_retraction.is_some() => self.cmd_g10(),
            b"G11" if self.firmware_retraction.is_some() => self.cmd_g11(),
            b"SET_RETRACTION" if self.firmware_retraction.is_some() => self.cmd_set_retraction(cmd),
            b"GET_RETRACTION" if self.firmware_retraction.is_some() => self.cmd_get_retraction(),
            b"EXCLUDE_OBJECT_DEFINE" if self.exclude_object.is_some() => {
                self.cmd_exclude_object_define(cmd)
            }
            b"EXCLUDE_OBJECT_START" if self.exclude_object.is_some() => {
                self.cmd_exclude_object_start(cmd)
            }
            b"EXCLUDE_OBJECT_END" if self.exclude_object.is_some() => {
                self.cmd_exclude_object_end(cmd)
            }
            b"EXCLUDE_OBJECT" if self.exclude_object.is_some() => self.cmd_exclude_object(cmd),
            b"" => Ok(()),
            _ => {
                let other = cmd.name();
                self.respond(format_args!("// Unknown command:\"{other}\""));
                Ok(())
            }
        }
    }

    fn cmd_g1(&mut self, cmd: &Command<'_>) -> Result<(), CommandError> {
        // X Y Z E F in one pass over the words, then taken in Klipper's order.
        let [x, y, z, e, f] = cmd.line.letter_floats(*b"XYZEF");
        // Klipper updates the position axis by axis: a bad value after a good one leaves the
        // earlier axes changed until the command error resets the position.
        let mut values = [None; AXES];
        for (value, read) in values.iter_mut().zip([x, y, z, e]) {
            match read {
                None => {}
                Some(Ok(v)) => *value = Some(v),
                Some(Err(_)) => {
                    self.apply_g1_position(values);
                    return Err(Self::bad_move(cmd));
                }
            }
        }
        let f = match f {
            None => None,
            Some(Ok(f)) => Some(f),
            Some(Err(_)) => {
                self.apply_g1_position(values);
                return Err(Self::bad_move(cmd));
            }
        };
        self.g1_values(values, f, cmd.raw())
    }

    fn bad_move(cmd: &Command<'_>) -> CommandError {
        CommandError::User(format!("Unable to parse move '{}'", cmd.raw()))
    }

    fn apply_g1_position(&mut self, values: [Option<f64>; AXES]) {
        let g = &mut self.gcode;
        for (axis, v) in values.into_iter().enumerate() {
            let Some(mut v) = v else {
                continue;
            };
            let mut absolute = g.absolute_coord;
            if axis == 3 {
                v *= g.extrude_factor;
                if !g.absolute_extrude {
                    absolute = false;
                }
            }
            if absolute {
                g.last_position[axis] = v + g.base_position[axis];
            } else {
                g.last_position[axis] += v;
            }
        }
    }

    /// Klipper's `cmd_G1` from parsed values (`commandline` for its messages).
    fn g1_values(
        &mut self,
        values: [Option<f64>; AXES],
        f_mm_per_min: Option<f64>,
        commandline: &str,
    ) -> Result<(), CommandError> {
        self.apply_g1_position(values);
        if let Some(f) = f_mm_per_min {
            if f.is_nan() || f <= 0.0 {
                return Err(CommandError::User(format!(
                    "Invalid speed in '{commandline}'"
                )));
            }
            self.gcode.speed = f * self.gcode.speed_factor;
        }
        let (pos, speed) = (self.gcode.last_position, self.gcode.speed);
        self.move_with_transform(pos, speed)
    }

    /// G2/G3 through `[gcode_arcs]`: the arc split into G1 segments exactly as Klipper does.
    fn cmd_arc(&mut self, cmd: &Command<'_>, clockwise: bool) -> Result<(), CommandError> {
        let Some(resolution) = self.arc_resolution else {
            return Ok(());
        };
        let g = &self.gcode;
        let state = crate::arcs::ArcState::from_gcode_move(
            g.last_position,
            g.base_position,
            g.extrude_factor,
            g.absolute_coord,
            g.absolute_extrude,
            self.arc_plane,
        );
        let params = |c: char| -> Result<Option<f64>, String> {
            match cmd.get_float(&c.to_string(), None) {
                Ok(v) => Ok(v),
                Err(CommandError::User(m)) => Err(m),
                Err(CommandError::Move(e)) => Err(e.to_string()),
            }
        };
        let segments = crate::arcs::ArcSegments::new(clockwise, &params, &state, resolution)
            .map_err(|e| CommandError::User(e.to_string()))?;
        for seg in segments {
            let [x, y, z] = seg.position_mm;
            self.g1_values(
                [Some(x), Some(y), Some(z), seg.e_mm],
                seg.f_mm_per_min,
                crate::arcs::SEGMENT_COMMANDLINE,
            )?;
        }
        Ok(())
    }

    fn cmd_g92(&mut self, cmd: &Command<'_>) -> Result<(), CommandError> {
        let mut any = false;
        for (i, letter) in ["X", "Y", "Z", "E"].iter().enumerate() {
            if let Some(mut off) = cmd.get_float(letter, None)? {
                if i == 3 {
                    off *= self.gcode.extrude_factor;
                }
                self.gcode.base_position[i] = self.gcode.last_position[i] - off;
                any = true;
            }
        }
        if !any {
            self.gcode.base_position = self.gcode.last_position;
        }
        Ok(())
    }

    fn reset_last_position(&mut self) {
        self.gcode.last_position = self.position_with_transform();
    }

    fn cmd_set_kinematic_position(&mut self, cmd: &Command<'_>) -> Result<(), CommandError> {
        self.toolhead.get_last_move_time()?;
        let cur = self.toolhead.commanded_pos;
        let x = cmd.get_float("X", Some(cur[0]))?.unwrap_or(cur[0]);
        let y = cmd.get_float("Y", Some(cur[1]))?.unwrap_or(cur[1]);
        let z = cmd.get_float("Z", Some(cur[2]))?.unwrap_or(cur[2]);
        let set_homed = cmd
            .param("SET_HOMED")
            .as_deref()
            .unwrap_or("xyz")
            .to_ascii_lowercase();
        let clear = cmd
            .param("CLEAR_HOMED")
            .or_else(|| cmd.param("CLEAR"))
            .as_deref()
            .unwrap_or("")
            .to_ascii_lowercase();
        let homed: Vec<usize> = (0..3)
            .filter(|&a| set_homed.contains(["x", "y", "z"][a]))
            .collect();
        let cleared: Vec<usize> = (0..3)
            .filter(|&a| clear.contains(["x", "y", "z"][a]))
            .collect();
        let mut pos = cur;
        pos[0] = x;
        pos[1] = y;
        pos[2] = z;
        self.set_position(pos, &homed)?;
        self.clear_homing_state(&cleared);
        Ok(())
    }

    fn set_position(&mut self, pos: [f64; AXES], homing_axes: &[usize]) -> Result<(), MoveError> {
        self.toolhead.set_position(pos, homing_axes)?;
        if matches!(
            self.kinematics,
            KinematicsKind::Cartesian | KinematicsKind::CoreXY
        ) {
            for &a in homing_axes {
                let r = &self.rails[a];
                self.toolhead.axis_limits[a] = (r.position_min, r.position_max);
            }
        }
        self.reset_last_position();
        Ok(())
    }

    fn clear_homing_state(&mut self, axes: &[usize]) {
        for &a in axes {
            self.toolhead.axis_limits[a] = (1.0, -1.0);
        }
        if !axes.is_empty()
            && let KinLimits::Delta(d) = &mut self.toolhead.kin_limits
        {
            d.limit_xy2 = -1.0;
            d.need_home = true;
        }
    }

    fn cmd_set_pressure_advance(&mut self, cmd: &Command<'_>) -> Result<(), CommandError> {
        let Some(ei) = self.toolhead.active_extruder else {
            return Err(CommandError::User(
                "Active extruder does not have a stepper".into(),
            ));
        };
        let (old_pa, old_smooth) = self.extruder_pa[ei];
        let pa = cmd.get_float("ADVANCE", Some(old_pa))?.unwrap_or(old_pa);
        let smooth = cmd
            .get_float("SMOOTH_TIME", Some(old_smooth))?
            .unwrap_or(old_smooth);
        if pa < 0.0 || !(0.0..=0.2).contains(&smooth) {
            return Err(CommandError::User(
                "Error on 'SET_PRESSURE_ADVANCE': value out of range".into(),
            ));
        }
        let old_eff = if old_pa != 0.0 { old_smooth } else { 0.0 };
        let new_eff = if pa != 0.0 { smooth } else { 0.0 };
        if new_eff != old_eff {
            self.toolhead.flush_step_generation()?;
            for st in &mut self.toolhead.steppers {
                if st.trapq == Some(TrapqId::Extruder(ei)) {
                    if let Kinematics::Extruder(k) = st.solver.kinematics_mut() {
                        k.set_pressure_advance(0.0, 0.0, pa, new_eff);
                    }
                    st.solver.update_windows();
                }
            }
            self.toolhead.check_step_generation_scan_windows();
        } else {
            self.toolhead
                .register_lookahead_callback(TimedAction::PressureAdvance {
                    extruder: ei,
                    pressure_advance: pa,
                    smooth_time: new_eff,
                })?;
        }
        self.extruder_pa[ei] = (pa, smooth);
        self.respond_info(&format!(
            "pressure_advance: {pa:.6}\npressure_advance_smooth_time: {smooth:.6}"
        ));
        Ok(())
    }

    fn cmd_set_temp(
        &mut self,
        cmd: &Command<'_>,
        default_heater: &str,
        wait: bool,
    ) -> Result<(), CommandError> {
        let temp = cmd.get_float("S", Some(0.0))?.unwrap_or(0.0);
        let name = match cmd.get_float("T", None)? {
            Some(t) if default_heater == "extruder" && t >= 1.0 => format!("extruder{}", t as u32),
            _ => default_heater.to_owned(),
        };
        if !self.heater_targets.iter().any(|(n, _)| *n == name) {
            if temp <= 0.0 {
                return Ok(());
            }
            return Err(CommandError::User(if default_heater == "extruder" {
                "Extruder not configured".into()
            } else {
                format!("Unknown heater '{name}'")
            }));
        }
        self.set_temperature(&name, temp, wait)
    }

    /// heaters.py's `set_temperature`: a look-ahead callback (it can flush an idle look-ahead),
    /// the new target, and on a live printer M109/M190's wait.
    fn set_temperature(&mut self, name: &str, temp: f64, wait: bool) -> Result<(), CommandError> {
        self.toolhead
            .register_lookahead_callback(TimedAction::Nothing)?;
        if let Some(i) = self.heater_outputs.iter().position(|(n, _, _)| n == name) {
            self.heaters[i]
                .set_target(temp)
                .map_err(CommandError::User)?;
        }
        if let Some(entry) = self.heater_targets.iter_mut().find(|(n, _)| n == name) {
            entry.1 = temp;
        }
        if wait
            && temp != 0.0
            && self.live.is_some()
            && let Some(i) = self.heater_outputs.iter().position(|(n, _, _)| n == name)
        {
            self.live_wait_for_heater(i)?;
        }
        Ok(())
    }

    /// SET_HEATER_TEMPERATURE HEATER= TARGET=.
    fn cmd_set_heater_temperature(&mut self, cmd: &Command<'_>) -> Result<(), CommandError> {
        let Some(heater) = cmd.param("HEATER") else {
            return Err(CommandError::User(
                "The value 'HEATER' must be specified".into(),
            ));
        };
        let name = self
            .heater_outputs
            .iter()
            .map(|(n, _, _)| n.as_str())
            .find(|n| heater_short_name(n) == heater.as_ref())
            .map(str::to_owned)
            .ok_or_else(|| {
                CommandError::User(format!("The value '{heater}' is not valid for HEATER"))
            })?;
        let temp = cmd.get_float("TARGET", Some(0.0))?.unwrap_or(0.0);
        self.set_temperature(&name, temp, false)
    }

    /// TEMPERATURE_WAIT SENSOR= [MINIMUM=] [MAXIMUM=]: batch mode checks the command only.
    fn cmd_temperature_wait(&mut self, cmd: &Command<'_>) -> Result<(), CommandError> {
        let Some(sensor) = cmd.param("SENSOR") else {
            return Err(cmd.error_on(format_args!("missing SENSOR")));
        };
        let minimum = cmd.get_float("MINIMUM", None)?.unwrap_or(f64::NEG_INFINITY);
        let maximum = match cmd.get_float("MAXIMUM", None)? {
            Some(m) if m <= minimum => {
                return Err(
                    cmd.error_on(format_args!("MAXIMUM must be above {}", py_float(minimum)))
                );
            }
            Some(m) => m,
            None => f64::INFINITY,
        };
        if minimum == f64::NEG_INFINITY && maximum == f64::INFINITY {
            return Err(CommandError::User(
                "Error on 'TEMPERATURE_WAIT': missing MINIMUM or MAXIMUM.".into(),
            ));
        }
        if self.live.is_none() {
            return Ok(());
        }
        let index = self
            .heater_outputs
            .iter()
            .position(|(n, _, _)| n == sensor.as_ref() || heater_short_name(n) == sensor.as_ref())
            .ok_or_else(|| CommandError::User(format!("Unknown config object '{sensor}'")))?;
        Ok(self.live_temperature_wait(index, minimum, maximum)?)
    }

    fn set_fan(&mut self, value: f64) -> Result<(), CommandError> {
        let Some(q) = self.fan_queue else {
            return Ok(());
        };
        self.toolhead.queue_pwm_request(q, value)?;
        Ok(())
    }

    fn cmd_m84(&mut self) -> Result<(), CommandError> {
        self.toolhead.flush_step_generation()?;
        self.apply_enable_events();
        let mut print_time = None;
        let mut did_change = false;
        for i in 0..self.toolhead.steppers.len() {
            if !self.stepper_enabled[i] {
                continue;
            }
            let t = match print_time {
                Some(t) => t,
                None => {
                    self.toolhead.dwell(DISABLE_STALL_TIME)?;
                    let t = self.toolhead.get_last_move_time()?;
                    print_time = Some(t);
                    t
                }
            };
            self.stepper_enabled[i] = false;
            if let Some(out) = self.enable_pins[i]
                && self.enable_users(out) == 0
            {
                self.set_digital(out, t, false);
            }
            self.toolhead.steppers[i].enable_pending = true;
            did_change = true;
        }
        if did_change {
            self.toolhead.dwell(DISABLE_STALL_TIME)?;
        }
        self.clear_homing_state(&[0, 1, 2]);
        Ok(())
    }

    /// Number of enabled steppers sharing enable output `out`.
    fn enable_users(&self, out: usize) -> usize {
        self.enable_pins
            .iter()
            .zip(&self.stepper_enabled)
            .filter(|(p, e)| **p == Some(out) && **e)
            .count()
    }

    /// Turns on the enable pins of steppers that started moving.
    fn apply_enable_events(&mut self) {
        if self.toolhead.enabled.is_empty() {
            return;
        }
        let events = std::mem::take(&mut self.toolhead.enabled);
        for (i, t) in events {
            if self.stepper_enabled[i] {
                continue;
            }
            if let Some(out) = self.enable_pins[i]
                && self.enable_users(out) == 0
            {
                self.set_digital(out, t, true);
            }
            self.stepper_enabled[i] = true;
        }
    }

    // ---- homing ----------------------------------------------------------------------------

    fn cmd_g28(&mut self, cmd: &Command<'_>) -> Result<(), CommandError> {
        let mut axes: Vec<usize> = Vec::new();
        for (i, l) in ["X", "Y", "Z"].iter().enumerate() {
            if cmd.has(l) {
                axes.push(i);
            }
        }
        if axes.is_empty() {
            axes = vec![0, 1, 2];
        }
        match self.kinematics {
            KinematicsKind::Cartesian | KinematicsKind::CoreXY => {
                for axis in axes {
                    let r = self.rails[axis].clone();
                    let mut homepos: [Option<f64>; 4] = [None; 4];
                    homepos[axis] = Some(r.position_endstop);
                    let mut forcepos = homepos;
                    forcepos[axis] = Some(if r.homing_positive_dir {
                        r.position_endstop - 1.5 * (r.position_endstop - r.position_min)
                    } else {
                        r.position_endstop + 1.5 * (r.position_max - r.position_endstop)
                    });
                    self.home_rails(&[axis], forcepos, homepos)?;
                }
            }
            KinematicsKind::Delta => {
                let KinLimits::Delta(d) = &self.toolhead.kin_limits else {
                    return Ok(());
                };
                let home = d.home_position;
                let max_arm2 = self
                    .toolhead
                    .steppers
                    .iter()
                    .filter_map(|s| match s.solver.kinematics() {
                        Kinematics::Delta { arm2, .. } => Some(*arm2),
                        _ => None,
                    })
                    .fold(0.0_f64, f64::max);
                let mut forcepos = [Some(home[0]), Some(home[1]), Some(home[2]), None];
                forcepos[2] = Some(-1.5 * (max_arm2 - d.max_xy2).sqrt());
                let homepos = [Some(home[0]), Some(home[1]), Some(home[2]), None];
                self.home_rails(&[0, 1, 2], forcepos, homepos)?;
            }
            KinematicsKind::None => {}
        }
        Ok(())
    }

    fn fill_coord(&self, coord: [Option<f64>; 4]) -> [f64; AXES] {
        let mut p = self.toolhead.commanded_pos;
        for i in 0..4 {
            if let Some(v) = coord[i] {
                p[i] = v;
            }
        }
        p
    }

    fn home_rails(
        &mut self,
        rails: &[usize],
        forcepos: [Option<f64>; 4],
        movepos: [Option<f64>; 4],
    ) -> Result<(), CommandError> {
        let homepos = self.fill_coord(movepos);
        let homing_axes: Vec<usize> = (0..3).filter(|&a| forcepos[a].is_some()).collect();
        let startpos = self.fill_coord(forcepos);
        self.set_position(startpos, &homing_axes)?;
        let info = self.rails[rails[0]].clone();
        self.homing_move(rails, homepos, info.homing_speed)?;
        if info.homing_retract_dist != 0.0 {
            // Retract, then home again slower.
            let startpos = self.fill_coord(forcepos);
            let homepos = self.fill_coord(movepos);
            let mut axes_d = [0.0; AXES];
            for i in 0..AXES {
                axes_d[i] = homepos[i] - startpos[i];
            }
            let move_d =
                (axes_d[0] * axes_d[0] + axes_d[1] * axes_d[1] + axes_d[2] * axes_d[2]).sqrt();
            let retract_r = (info.homing_retract_dist / move_d).min(1.0);
            let mut retractpos = [0.0; AXES];
            let mut newstart = [0.0; AXES];
            for i in 0..AXES {
                retractpos[i] = homepos[i] - axes_d[i] * retract_r;
                newstart[i] = retractpos[i] - axes_d[i] * retract_r;
            }
            self.toolhead
                .move_to(retractpos, info.homing_retract_speed, self.current_line)?;
            self.set_position(newstart, &[])?;
            self.homing_move(rails, homepos, info.second_homing_speed)?;
        }
        self.toolhead.flush_step_generation()?;
        self.apply_enable_events();
        // homing:home_rails_end → gcode_move resets and re-applies homing offsets.
        self.reset_last_position();
        for (a, f) in forcepos.iter().take(3).enumerate() {
            if f.is_some() {
                self.gcode.base_position[a] = self.gcode.homing_position[a];
            }
        }
        Ok(())
    }

    fn homing_move(
        &mut self,
        rails: &[usize],
        movepos: [f64; AXES],
        speed: f64,
    ) -> Result<(), CommandError> {
        if self.live.is_some() {
            return self.homing_move_live(rails, movepos, speed);
        }
        self.toolhead.flush_step_generation()?;
        self.apply_enable_events();
        let print_time = self.toolhead.get_last_move_time()?;
        for &ri in rails {
            let rest_time = self.endstop_rest_time(ri, movepos, speed);
            let (mi, _, trsync_oid) = self.rails[ri].endstop;
            // The endstop's trsync, then one on each other MCU its steppers are on (Klipper's
            // TriggerDispatch; several MCUs shorten the timeout and stagger the reports).
            let mut members = vec![(mi, trsync_oid)];
            members.extend(self.rails[ri].stepper_trsyncs.iter().copied());
            let timeout = if members.len() > 1 {
                TRSYNC_TIMEOUT
            } else {
                TRSYNC_SINGLE_MCU_TIMEOUT
            };
            let count = members.len();
            for (k, &(tmi, toid)) in members.iter().enumerate() {
                let q = &self.toolhead.mcus[tmi];
                let clock = q.print_time_to_clock(print_time);
                let expire = q.print_time_to_clock(print_time + timeout);
                let report_ticks = q.seconds_to_clock(timeout * 0.3);
                #[allow(clippy::cast_precision_loss)]
                let offset = k as f64 / count as f64;
                let report_clock = clock + (report_ticks as f64 * offset + 0.5) as u64;
                // (klippy's batch output has the stop requests at clock 0.)
                self.send_trsync_arm(
                    ri,
                    (tmi, toid),
                    clock,
                    (report_clock, report_ticks),
                    expire,
                    0,
                );
            }
            self.send_endstop_home(ri, print_time, rest_time);
        }
        self.toolhead.dwell(HOMING_START_DELAY)?;
        self.toolhead
            .drip_move([movepos[0], movepos[1], movepos[2]], speed)?;
        self.apply_enable_events();
        let _move_end = self.toolhead.get_last_move_time()?;
        for &ri in rails {
            let (mi, es_oid, _) = self.rails[ri].endstop;
            self.toolhead.send(
                mi,
                0,
                0,
                format!(
                    "endstop_home oid={es_oid} clock=0 sample_ticks=0 sample_count=0 rest_ticks=0 pin_value=0 trsync_oid=0 trigger_reason=0"
                ),
            );
        }
        self.toolhead.flush_step_generation()?;
        self.apply_enable_events();
        // Batch mode: the endstop "triggers" at the end of the move, so no overshoot — but
        // klippy takes each stepper's halt position from its commanded position and the
        // trigger position from the steps sent, and where those disagree (see
        // `shaper_position_skew`) it puts the toolhead where the difference says.
        self.set_position(movepos, &[])?;
        if let Some(haltpos) = self.skewed_halt_position(rails) {
            self.set_position(haltpos, &[])?;
        }
        Ok(())
    }

    /// Records Klipper's MCU position skew for the steppers `[input_shaper]` wraps (all that
    /// follow the toolhead). input_shaper.py installs its stepper kinematics at connect by
    /// `set_stepper_kinematics` before copying the old kinematics' commanded position into it,
    /// so the MCU position offset is computed against 0: from then on klippy's
    /// `get_mcu_position` exceeds the steps sent by the stepper's position at the origin,
    /// in steps (rounded as klippy rounds). That is 0 for cartesian and corexy steppers and
    /// the tower height for a delta's (283.46 mm for the example config), which batch-mode
    /// homing then reads as overshoot ([`Printer::emulate_batch_homing`]; a live klippy
    /// re-reads the position from the MCU after homing, stepper.py `note_homing_end`).
    pub(crate) fn note_shaper_position_skew(&mut self) {
        let origin = crate::trapq::Coord::default();
        self.shaper_position_skew = self
            .toolhead
            .steppers
            .iter()
            .enumerate()
            .filter(|(_, st)| st.trapq == Some(crate::toolhead::TrapqId::Toolhead))
            .filter_map(|(i, st)| {
                let steps = crate::toolhead::klippy_round_steps(
                    st.solver.position_from_coord(origin) / st.solver.step_dist(),
                );
                (steps != 0).then_some((i, steps))
            })
            .collect();
    }

    /// Where klippy's batch-mode homing leaves the toolhead after a homing move of `rails`
    /// (the toolhead set at the move's end): homing.py's `calc_toolhead_pos` with the position
    /// skew of the rails' steppers as `over_steps`. `None` when there is none (every printer
    /// without `[input_shaper]`, and cartesian and corexy ones with it).
    fn skewed_halt_position(&self, rails: &[usize]) -> Option<[f64; AXES]> {
        if !self.batch_homing_skew {
            return None;
        }
        let over_steps: Vec<(usize, i64)> = self
            .shaper_position_skew
            .iter()
            .filter(|(si, _)| rails.iter().any(|&r| self.rails[r].steppers.contains(si)))
            .copied()
            .collect();
        (!over_steps.is_empty()).then(|| self.calc_toolhead_pos(&over_steps))
    }

    // ---- batch mode ------------------------------------------------------------------------

    /// Feeds G-code as klippy's batch mode reads it: 4096-byte chunks, the background flush
    /// after each. Call [`Printer::finish_batch`] at the end of input.
    ///
    /// # Errors
    /// Internal step generation errors (Klipper's "Internal error in stepcompress").
    pub fn feed_batch_chunk(&mut self, chunk: &[u8]) -> Result<(), MoveError> {
        if self.batch_error_exit.is_some() {
            return Ok(());
        }
        self.errors_before_read = self.errors_reported;
        self.toolhead.batch_chunk_read(chunk);
        let mut rest = chunk;
        // A line begun in an earlier chunk: complete it (or keep gathering it).
        if !self.partial_line.is_empty() {
            let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
                self.partial_line.extend_from_slice(rest);
                return self.batch_chunk_done();
            };
            let mut line = std::mem::take(&mut self.partial_line);
            line.extend_from_slice(&rest[..nl]);
            rest = &rest[nl + 1..];
            let result = self.run_batch_line_bytes(&line);
            // Keep the buffer (and its capacity) for the next partial line.
            line.clear();
            self.partial_line = line;
            result?;
        }
        // The chunk's complete lines, read in place; the text after the last newline waits
        // for the next chunk.
        let tail = match rest.iter().rposition(|&b| b == b'\n') {
            Some(last) => {
                let block = &rest[..last];
                // Every line is checked as UTF-8 at once; a block with bad bytes is read line
                // by line, each made valid (bad bytes become U+FFFD).
                match std::str::from_utf8(block) {
                    Ok(text) => {
                        for line in crate::gcode::lines(text) {
                            self.run_batch_line(line)?;
                        }
                    }
                    Err(_) => {
                        for line in block.split(|&b| b == b'\n') {
                            self.run_batch_line_bytes(line)?;
                        }
                    }
                }
                &rest[last + 1..]
            }
            None => rest,
        };
        self.partial_line.extend_from_slice(tail);
        self.batch_chunk_done()
    }

    /// One complete line of batch input, as bytes (bad UTF-8 becomes U+FFFD).
    fn run_batch_line_bytes(&mut self, line: &[u8]) -> Result<(), MoveError> {
        match String::from_utf8_lossy(line) {
            Cow::Borrowed(text) => self.run_batch_line(text),
            Cow::Owned(text) => self.run_batch_line(&text),
        }
    }

    /// One complete line of batch input.
    #[inline(always)]
    fn run_batch_line(&mut self, line: &str) -> Result<(), MoveError> {
        self.line_no += 1;
        if let Some(marks) = &mut self.layer_marks
            && crate::estimate::is_layer_change_comment(line)
        {
            marks.push(self.line_no);
        }
        self.run_line(line, self.line_no)?;
        self.apply_enable_events();
        Ok(())
    }

    /// The end of a batch read: the background flush when its timer is due — or, when the
    /// read gave a G-code error and batch input stops on errors, the end of the run: klippy
    /// asks its reactor to stop at the error and stops once the read's lines are done,
    /// before any timer runs again.
    fn batch_chunk_done(&mut self) -> Result<(), MoveError> {
        if self.toolhead.batch_chunk_done()? {
            self.apply_enable_events();
        }
        if self.batch_stops_on_error && self.errors_reported > self.errors_before_read {
            self.batch_error_exit = Some(self.read_error_line);
        }
        Ok(())
    }

    /// Makes batch input end at the end of the read (4096-byte block) holding its first G-code
    /// error, as Klipper's batch mode does (gcode.py: an error response with file input asks
    /// for `error_exit`, which stops the reactor once the block's lines are run): the rest of
    /// the input is not read, no flush timer runs again and the exit sequence (M84, the 0.5 s
    /// dwell, the final flush) is skipped, so that the MCU stream is what klippy would have
    /// written. [`Printer::batch_error_exit`] then holds the error's line. Off by default
    /// (the estimate and the twin run every line).
    pub fn stop_batch_on_error(&mut self, stop: bool) {
        self.batch_stops_on_error = stop;
    }

    /// Makes homing end where Klipper's batch mode ends it on a printer whose steppers have a
    /// position skew (a delta with `[input_shaper]`, see `note_shaper_position_skew`): after
    /// each homing move the toolhead is put as far above the endstops as the towers' height at
    /// the origin, and the retract comes down from there. A real printer does not do this
    /// (klippy re-reads each stepper's position from the MCU after homing, which batch mode
    /// cannot), so it is off by default: `gantry batch` and the oracle tests turn it on, the
    /// estimate and the twin leave it off.
    pub fn emulate_batch_homing(&mut self, on: bool) {
        self.batch_homing_skew = on;
    }

    /// Runs a whole G-code input in batch mode and flushes every step (Klipper's exit path:
    /// a final 0.5 s dwell and a flush of all motion).
    ///
    /// # Errors
    /// Internal step generation errors.
    pub fn run_batch(&mut self, input: &[u8]) -> Result<(), MoveError> {
        for chunk in input.chunks(BATCH_READ_SIZE) {
            self.feed_batch_chunk(chunk)?;
        }
        self.finish_batch()
    }

    /// End of batch input: Klipper's exit sequence.
    ///
    /// A last line without a line end is not run: klippy's batch reader (gcode.py
    /// `_process_data`) keeps the text after the last `'\n'` as a partial line and exits at
    /// the end of the file without running it, and so does an SD-card print
    /// (virtual_sdcard.py's `work_handler`). When that text holds a command, it is kept in
    /// [`Printer::unterminated_line`] so that callers can say that it did not run.
    ///
    /// # Errors
    /// Internal step generation errors.
    pub fn finish_batch(&mut self) -> Result<(), MoveError> {
        if self.batch_error_exit.is_some() {
            // No exit sequence: klippy ended where the error was.
            return Ok(());
        }
        if !self.partial_line.is_empty() {
            let text = String::from_utf8_lossy(&self.partial_line).into_owned();
            self.partial_line.clear();
            if Command::parse(&text).is_some() {
                self.unterminated_line = Some((self.line_no + 1, text));
            }
        }
        self.end_print_time = self.toolhead.get_last_move_time()?;
        // klippy's exit ("gcode:request_restart"): the motors are switched off (the fan's
        // handler runs too, but leaves an idle fan alone).
        match self.cmd_m84() {
            Ok(()) => {}
            Err(CommandError::Move(e)) => return Err(e),
            Err(CommandError::User(msg)) => self.respond_error(&msg),
        }
        self.toolhead.dwell(0.5)?;
        self.toolhead.wait_moves()?;
        self.toolhead.flush_step_generation()?;
        self.apply_enable_events();
        let t = self.toolhead.need_flush_time() + 0.25;
        self.toolhead.advance_flush_time(t, 0.0)?;
        Ok(())
    }

    /// Declares every axis homed at X0 Y0 Z0 (estimates of files whose start macros the planner
    /// does not know: real prints home first).
    ///
    /// # Errors
    /// Internal planner errors only.
    pub fn assume_homed(&mut self) -> Result<(), MoveError> {
        let mut pos = self.toolhead.commanded_pos;
        pos[..3].fill(0.0);
        if let KinLimits::Delta(d) = &self.toolhead.kin_limits {
            pos[..3].copy_from_slice(&[0.0, 0.0, d.max_z.min(d.home_position[2])]);
        }
        self.set_position(pos, &[0, 1, 2])
    }

    /// Whether the trapezoid queues keep their finished segments and the steppers their
    /// emitted commands (the motion history behind position queries, motion reports and
    /// homing's trigger positions); on by default, off for planning only. A batch run that
    /// reads no positions back can switch it off: the output stays the same.
    pub fn keep_motion_history(&mut self, keep: bool) {
        self.toolhead.trapq.set_keep_history(keep);
        for e in &mut self.toolhead.extruders {
            e.trapq.set_keep_history(keep);
        }
        for s in &mut self.toolhead.steppers {
            s.sc.set_keep_history(keep);
        }
    }

    /// G-code lines read so far.
    pub fn lines_read(&self) -> u32 {
        self.line_no
    }

    /// Every MCU's messages in order: the config phase, then the runtime commands.
    pub fn take_output(&mut self, mcu: usize) -> (Vec<String>, Vec<crate::toolhead::McuMessage>) {
        let config = self.mcus[mcu].config_phase();
        let out = std::mem::take(&mut self.toolhead.mcus[mcu].out);
        (config, out)
    }
}

/// A G-code command as the interpreter reads it: klippy's split of one line, borrowed from the
/// line ([`GCodeCommand`]; nothing is copied for ordinary lines), and the name it runs under.
#[derive(Clone, Debug)]
struct Command<'a> {
    line: GCodeCommand<'a>,
    /// The name it runs under when that is not the line's own: a `rename_existing` name
    /// reaches the command the macro took over.
    renamed: Option<String>,
}

impl<'a> Command<'a> {
    /// One G-code line (klippy's split rules, in [`crate::gcode::parse_command`]); `None` for
    /// a blank or comment-only line.
    #[inline(always)]
    fn parse(line: &'a str) -> Option<Self> {
        Some(Self {
            line: crate::gcode::parse_command(line)?,
            renamed: None,
        })
    }

    /// The command name, upper-case.
    fn name(&self) -> &str {
        self.renamed.as_deref().unwrap_or_else(|| self.line.name())
    }

    /// The whole line, trimmed (for messages).
    fn raw(&self) -> &'a str {
        self.line.raw()
    }

    /// Parameter `key` as Klipper's `gcmd.get` has it (a classic command's value
    /// upper-cased); the last one if repeated.
    fn param(&self, key: &str) -> Option<Cow<'a, str>> {
        self.line.param(key)
    }

    /// Whether parameter `key` is given.
    fn has(&self, key: &str) -> bool {
        self.line.param_text(key).is_some()
    }

    /// Whether the command has any parameter.
    fn has_params(&self) -> bool {
        self.line.param_count() > 0
    }

    /// Every parameter in order, as owned text (for macros).
    fn params_owned(&self) -> Vec<(String, String)> {
        self.line
            .params()
            .into_iter()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    fn error_on(&self, what: std::fmt::Arguments<'_>) -> CommandError {
        CommandError::User(format!("Error on '{}': {what}", self.raw()))
    }

    /// An integer parameter (Python's `int()`: digits with an optional sign).
    fn get_int(&self, key: &str, default: i64) -> Result<i64, CommandError> {
        match self.param(key) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse::<i64>()
                .map_err(|_| self.error_on(format_args!("unable to parse {v}"))),
        }
    }

    /// A float parameter that must be above `above`.
    fn get_float_above(&self, key: &str, default: f64, above: f64) -> Result<f64, CommandError> {
        let v = self.get_float(key, Some(default))?.unwrap_or(default);
        if v <= above {
            return Err(self.error_on(format_args!("{key} must be above {}", py_float(above))));
        }
        Ok(v)
    }

    /// A float parameter with a minimum.
    fn get_float_min(&self, key: &str, default: f64, min: f64) -> Result<f64, CommandError> {
        let v = self.get_float(key, Some(default))?.unwrap_or(default);
        if v < min {
            return Err(self.error_on(format_args!("{key} must have minimum of {}", py_float(min))));
        }
        Ok(v)
    }

    /// A float parameter. The number is read from the text as written (case does not change
    /// a number); the error message quotes the value as Klipper has it.
    fn get_float(&self, key: &str, default: Option<f64>) -> Result<Option<f64>, CommandError> {
        match self.line.param_text(key) {
            None => Ok(default),
            Some(text) => self.float_of(key, text).map(Some),
        }
    }

    /// Float parameters `keys` (no default), read in one pass: what `get_float` gives for each
    /// in turn, the first bad one in `keys` order the error.
    fn get_floats<const N: usize>(
        &self,
        keys: [&str; N],
    ) -> Result<[Option<f64>; N], CommandError> {
        let texts = self.line.param_texts(keys);
        let mut out = [None; N];
        for ((value, text), key) in out.iter_mut().zip(texts).zip(keys) {
            if let Some(text) = text {
                *value = Some(self.float_of(key, text)?);
            }
        }
        Ok(out)
    }

    /// Parameter `key`'s `text` as a float, or Klipper's error.
    fn float_of(&self, key: &str, text: &str) -> Result<f64, CommandError> {
        parse_py_float(text).ok_or_else(|| {
            CommandError::User(format!(
                "Unable to parse '{}' as a float in '{}'",
                self.param(key).unwrap_or_default(),
                self.raw()
            ))
        })
    }
}

enum CommandError {
    User(String),
    Move(MoveError),
}

impl From<MoveError> for CommandError {
    fn from(e: MoveError) -> Self {
        Self::Move(e)
    }
}

/// A heater's name in commands: the section's last word (`heater_generic chamber` → `chamber`).
fn heater_short_name(section: &str) -> &str {
    section.rsplit(' ').next().unwrap_or(section)
}

/// Python's `str()` of a float bound (`0.0`, `1.0`, `0.25`).
fn py_float(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e16 {
        format!("{v:.1}")
    } else {
        format!("{v}")
    }
}

fn parse_py_float(text: &str) -> Option<f64> {
    crate::gcode::parse_float(text)
}

/// Intersection of three spheres (centres, radii²): the point on the +Z side (Klipper's
/// `mathutil.trilateration`).
pub fn trilateration(spheres: &[[f64; 3]], radius2: &[f64]) -> [f64; 3] {
    let sub = |a: [f64; 3], b: [f64; 3]| [a[0] - b[0], a[1] - b[1], a[2] - b[2]];
    let dot = |a: [f64; 3], b: [f64; 3]| a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
    let cross = |a: [f64; 3], b: [f64; 3]| {
        [
            a[1] * b[2] - a[2] * b[1],
            a[2] * b[0] - a[0] * b[2],
            a[0] * b[1] - a[1] * b[0],
        ]
    };
    let scale = |a: [f64; 3], s: f64| [a[0] * s, a[1] * s, a[2] * s];
    let add = |a: [f64; 3], b: [f64; 3]| [a[0] + b[0], a[1] + b[1], a[2] + b[2]];
    let (s1, s2, s3) = (spheres[0], spheres[1], spheres[2]);
    let s21 = sub(s2, s1);
    let s31 = sub(s3, s1);
    let d = dot(s21, s21).sqrt();
    let ex = scale(s21, 1.0 / d);
    let i = dot(ex, s31);
    let vect_ey = sub(s31, scale(ex, i));
    let ey = scale(vect_ey, 1.0 / dot(vect_ey, vect_ey).sqrt());
    let ez = cross(ex, ey);
    let j = dot(ey, s31);
    let x = (radius2[0] - radius2[1] + d * d) / (2.0 * d);
    let y = (radius2[0] - radius2[2] - x * x + (x - i) * (x - i) + j * j) / (2.0 * j);
    let z = -(radius2[0] - x * x - y * y).max(0.0).sqrt();
    let ex_x = scale(ex, x);
    let ey_y = scale(ey, y);
    let ez_z = scale(ez, z);
    add(s1, add(ex_x, add(ey_y, ez_z)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_like_klippy() {
        let c = Command::parse("N12 g1 x10.5 Y-3 E.2 F3000*55 ; move").expect("command");
        assert_eq!(c.name(), "G1");
        assert_eq!(c.param("X").as_deref(), Some("10.5"));
        assert_eq!(c.param("E").as_deref(), Some(".2"));
        assert_eq!(
            c.line.letter_floats(*b"XYZEF"),
            [
                Some(Ok(10.5)),
                Some(Ok(-3.0)),
                None,
                Some(Ok(0.2)),
                Some(Ok(3000.0))
            ]
        );
        let c = Command::parse("SET_KINEMATIC_POSITION X=0 y=\"1\" ; c").expect("command");
        assert_eq!(c.name(), "SET_KINEMATIC_POSITION");
        assert_eq!(c.param("Y").as_deref(), Some("1"));
        assert!(Command::parse("   ; only a comment").is_none());
        let c = Command::parse("G1X1Y2").expect("command");
        assert_eq!(c.param("Y").as_deref(), Some("2"));
    }

    #[test]
    fn pins_parse() {
        // Pins go through config.rs's parser (Klipper's syntax and errors).
        let p = crate::config::parse_pin("^!PA1", PinFlags::ENDSTOP).expect("valid pin");
        assert_eq!(p.pin, "PA1");
        assert!(p.invert);
        assert_eq!(p.pull, Pull::Up);
        let p = crate::config::parse_pin("ebb:PB2", PinFlags::INVERT).expect("valid pin");
        assert_eq!(p.chip, "ebb");
    }

    const SHARED_ENABLE: &str = "
[mcu]
serial: /dev/null
[printer]
kinematics: cartesian
max_velocity: 300
max_accel: 3000
[stepper_x]
step_pin: PD7
dir_pin: PC5
enable_pin: !PD6
microsteps: 16
rotation_distance: 40
endstop_pin: ^PC2
position_endstop: 0
position_max: 200
[stepper_y]
step_pin: PC6
dir_pin: PC7
enable_pin: !PD6
microsteps: 16
rotation_distance: 40
endstop_pin: ^PC3
position_endstop: 0
position_max: 200
[stepper_z]
step_pin: PB3
dir_pin: PB2
enable_pin: !PA5
microsteps: 16
rotation_distance: 8
endstop_pin: ^PC4
position_endstop: 0
position_max: 200
";

    /// The RAMPS board's real dictionary (the oracle's).
    fn atmega2560() -> Dictionary {
        Dictionary::from_json(include_str!(
            "../../../tests/fixtures/oracle/dict/atmega2560.dict"
        ))
        .expect("a real dictionary")
    }

    /// Klipper's batch mode ends at the read (4096-byte block) holding the first G-code error:
    /// the lines after that read do not run and there is no exit sequence; with
    /// `stop_batch_on_error(false)` every line runs.
    #[test]
    fn batch_input_stops_at_the_read_with_the_first_error() {
        let dict = atmega2560();
        let config = Config::parse(SHARED_ENABLE, "printer.cfg").expect("config");
        // Line 3 is out of range; the read after the first 4096 bytes moves on to X50.
        let mut gcode = String::from("G28\nG1 X10 F6000\nG1 X500\n");
        while gcode.len() < BATCH_READ_SIZE + 100 {
            gcode.push_str("; padding to the next read\n");
        }
        gcode.push_str("G1 X50\n");
        let run = |stop: bool| {
            let mut printer = Printer::new(&config, &[("mcu", &dict)]).expect("printer");
            printer.stop_batch_on_error(stop);
            printer.run_batch(gcode.as_bytes()).expect("batch");
            printer
        };
        let stopped = run(true);
        assert_eq!(stopped.batch_error_exit, Some(3));
        assert_eq!(stopped.toolhead.commanded_pos[0], 10.0);
        let kept_going = run(false);
        assert_eq!(kept_going.batch_error_exit, None);
        assert_eq!(kept_going.toolhead.commanded_pos[0], 50.0);
        assert!(
            kept_going
                .responses
                .iter()
                .any(|r| r.line == 3 && r.text.starts_with("!! Move out of range"))
        );
    }

    /// A delta with `[input_shaper]` homes as a real printer does (5 mm retract), unless batch
    /// homing is emulated: then, as in Klipper's batch mode (oracle case u_delta_shaper_home),
    /// the retract starts from the towers' height at the origin above the endstops.
    #[test]
    fn batch_homing_emulation_is_only_for_batch_output() {
        let dict = atmega2560();
        let text =
            include_str!("../../../tests/fixtures/oracle-extra/u_delta_shaper_home/printer.cfg");
        let config = Config::parse(text, "printer.cfg").expect("config");
        let tower_steps = |emulate: bool| {
            let mut printer = Printer::new(&config, &[("mcu", &dict)]).expect("printer");
            printer.emulate_batch_homing(emulate);
            printer.run_batch(b"G28\n").expect("batch");
            let (_, messages) = printer.take_output(0);
            messages
                .iter()
                .filter_map(|m| match m.command {
                    crate::toolhead::McuCommand::Step {
                        message: crate::stepcompress::StepCommand::QueueStep { count, .. },
                        ..
                    } => Some(u64::from(count)),
                    _ => None,
                })
                .sum::<u64>()
        };
        let real = tower_steps(false);
        let batch = tower_steps(true);
        // Each of the three towers retracts 22,677 steps (283.46 mm, its height at the origin)
        // further; the second homing move is the same.
        assert_eq!(batch, real + 3 * 22_677);
    }

    /// Regression: steppers sharing an enable pin got one `config_digital_out` each, so the
    /// config phase (and its CRC) differed from Klipper's for most bed-slingers.
    #[test]
    fn steppers_sharing_an_enable_pin_share_one_output() {
        let dict = atmega2560();
        let config = Config::parse(SHARED_ENABLE, "printer.cfg").expect("config");
        let printer = Printer::new(&config, &[("mcu", &dict)]).expect("printer");
        let cmds = printer.mcus[0].config_phase();
        let enables = |pin: &str| {
            cmds.iter()
                .filter(|c| {
                    c.starts_with("config_digital_out") && c.contains(&format!("pin={pin} "))
                })
                .count()
        };
        assert_eq!(enables("PD6"), 1, "{cmds:#?}");
        assert_eq!(enables("PA5"), 1);

        let clash = SHARED_ENABLE.replacen("enable_pin: !PD6", "enable_pin: PD6", 1);
        let config = Config::parse(&clash, "printer.cfg").expect("config");
        let err = Printer::new(&config, &[("mcu", &dict)]).expect_err("polarity clash");
        assert!(
            err.to_string()
                .contains("Shared pin PD6 must have same polarity"),
            "{err}"
        );
    }
}
