//! A heater's live control, as a pure state machine: what klippy's `extras/heaters.py`
//! (`Heater`, `ControlPID`, `ControlBangBang`) and `extras/verify_heater.py` (`HeaterCheck`) do
//! with each temperature report, written anew from their behaviour (facts, formulas, constants
//! and messages are Klipper's).
//!
//! - [`HeaterConfig`] and [`VerifyHeaterConfig`] read a heater's section and its
//!   `[verify_heater NAME]` section with Klipper's option names, defaults and bounds.
//! - [`Heater`] takes every sensor report ([`Heater::temperature_update`]): it runs the control
//!   algorithm (PID or bang-bang "watermark"), smooths the temperature for display and
//!   `can_extrude`, and answers with the PWM value to schedule on the heater pin, if one must be
//!   sent ([`PwmCommand`]). It also answers M105/M109/TEMPERATURE_WAIT's questions
//!   ([`Heater::get_temp`], [`Heater::check_busy`]) and `get_status`.
//! - [`VerifyHeater`] is the once-a-second thermal-runaway check: a heater that does not gain
//!   heat when asked to, or cannot hold its target, shuts the printer down with Klipper's message.
//!
//! # Time
//! Nothing here reads a clock. Host times (`read_time`, `eventtime`, seconds of the host's
//! monotonic clock) and MCU print times (`print_time`) come in as arguments, kept apart:
//! - the control loop, the smoothing and the PWM schedule run on the report's print time (the
//!   MCU's sample time, as in Klipper, where `read_time` is a print time);
//! - staleness (a reading older than [`QUELL_STALE_TIME_S`] reads 0 °C), the main-loop watchdog
//!   ([`MAX_MAINTHREAD_TIME_S`]) and [`VerifyHeater`] run on host time. Klipper converts host
//!   time to print time for these comparisons; comparing host times directly is the same check.
//!
//! # The PWM rules (Klipper's `set_pwm`)
//! A value is scheduled [`HeaterConfig::pwm_delay_s`] (the sensor's report period, 0.3 s for an
//! ADC sensor) after the report's print time. The heater pin is configured with a
//! `max_duration` of [`MAX_HEAT_TIME_S`], so the MCU shuts down if the host stops refreshing a
//! heater that is on; the host therefore re-sends an unchanged value before that runs out. A
//! change smaller than [`MIN_PWM_CHANGE_RATIO`] of `max_power` is not sent. The value is 0 when
//! the target is 0, after [`Heater::shutdown`], and when the host's main loop has not called
//! [`Heater::stats`] within [`MAX_MAINTHREAD_TIME_S`] (the watchdog starts expired, as in
//! Klipper: a heater stays off until the first `stats`).
//!
//! # Invalid input
//! Klipper trusts its sensors; this module does not panic on any `f64`. A report with a
//! non-finite time is ignored; a non-finite temperature is treated as a sensor fault (PWM 0, no
//! other state changes); the outputs are always within `[0, max_power]`.

use crate::config::{Config, ConfigError, FloatBounds, Section};
use crate::thermistor::KELVIN_TO_CELSIUS;

/// The heater pin's `max_duration`, s: the MCU shuts down if a heater that is on is not
/// refreshed within it (Klipper's MAX_HEAT_TIME).
pub const MAX_HEAT_TIME_S: f64 = 3.0;
/// The temperature PID control assumes before the first report, °C (AMBIENT_TEMP).
pub const AMBIENT_TEMP_C: f64 = 25.0;
/// The divisor of the configured PID gains (PID_PARAM_BASE): `pid_Kp` etc. are written in PWM
/// steps of 1/255 per °C.
pub const PID_PARAM_BASE: f64 = 255.0;
/// The host's main loop must call [`Heater::stats`] at least this often, s, or the heater is
/// turned off (MAX_MAINTHREAD_TIME).
pub const MAX_MAINTHREAD_TIME_S: f64 = 5.0;
/// A temperature last read longer ago than this, s, is reported as 0 °C (QUELL_STALE_TIME).
pub const QUELL_STALE_TIME_S: f64 = 7.0;
/// PWM changes smaller than this fraction of `max_power` are not sent (MIN_PWM_CHANGE_RATIO).
pub const MIN_PWM_CHANGE_RATIO: f64 = 0.05;
/// The oldest last reading with which [`Heater::keepalive`] still re-sends a PWM value, s.
pub const KEEPALIVE_MAX_STALE_S: f64 = 1.5;
/// PID control is settled within this distance of the target, °C (PID_SETTLE_DELTA).
pub const PID_SETTLE_DELTA_C: f64 = 1.0;
/// … and with the temperature changing slower than this, °C/s (PID_SETTLE_SLOPE).
pub const PID_SETTLE_SLOPE_C_PER_S: f64 = 0.1;
/// How often [`VerifyHeater::check`] runs, s (it returns the next check's time).
pub const VERIFY_HEATER_INTERVAL_S: f64 = 1.0;
/// The hint Klipper appends to verify_heater's shutdown message (HINT_THERMAL).
pub const HINT_THERMAL: &str = "\nSee the 'verify_heater' section in docs/Config_Reference.md\n\
                                for the parameters that control this check.\n";

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// The control algorithm of a heater (`control:`), with its own options.
#[derive(Clone, Debug, PartialEq)]
pub enum HeaterControl {
    /// `control: pid`: the gains as written in the config (before the division by
    /// [`PID_PARAM_BASE`]).
    Pid {
        /// `pid_Kp`.
        kp: f64,
        /// `pid_Ki`.
        ki: f64,
        /// `pid_Kd`.
        kd: f64,
    },
    /// `control: watermark` (bang-bang): full power below `target - max_delta`, off above
    /// `target + max_delta`.
    Watermark {
        /// `max_delta`, °C (default 2.0, above 0).
        max_delta_c: f64,
    },
}

/// A heater's control options (`[extruder]`, `[heater_bed]`, `[heater_generic NAME]`), read
/// as Klipper's `Heater` reads them.
#[derive(Clone, Debug, PartialEq)]
pub struct HeaterConfig {
    /// The section's name (`extruder`, `heater_bed`, `heater_generic chamber`).
    pub name: String,
    /// `min_temp`, °C (required, at least −273.15).
    pub min_temp_c: f64,
    /// `max_temp`, °C (required, above `min_temp`).
    pub max_temp_c: f64,
    /// `min_extrude_temp`, °C (default 170, within `min_temp..=max_temp`); read for every
    /// heater, meaningful for extruders.
    pub min_extrude_temp_c: f64,
    /// `max_power`, the largest PWM value (default 1, `0 < max_power <= 1`).
    pub max_power: f64,
    /// `smooth_time`, s (default 1, above 0): the smoothing of the reported temperature and
    /// PID's derivative window.
    pub smooth_time_s: f64,
    /// `control` and its options.
    pub control: HeaterControl,
    /// `pwm_cycle_time`, s (default 0.100, `0 < x <= pwm_delay`): the pin's software-PWM cycle.
    pub pwm_cycle_time_s: f64,
    /// The delay from a report to the PWM change it causes, s: the sensor's report period
    /// (Klipper's `pwm_delay`, `get_report_time_delta`; [`crate::thermistor::REPORT_TIME`] for
    /// an ADC sensor). Not an option.
    pub pwm_delay_s: f64,
}

impl HeaterConfig {
    /// Reads a heater's options from its section, in Klipper's order (`min_temp`, `max_temp`,
    /// `min_extrude_temp`, `max_power`, `smooth_time`, `control` and its options,
    /// `pwm_cycle_time`); `pwm_delay_s` is the sensor's report period, the upper bound of
    /// `pwm_cycle_time`. The heater's pins and sensor are read elsewhere.
    ///
    /// # Errors
    /// A missing required option (`min_temp`, `max_temp`, `control`, the PID gains), an
    /// unparsable value, an invalid `control` choice or a value out of bounds, in Klipper's words
    /// naming the section and option.
    pub fn from_section(section: &Section<'_>, pwm_delay_s: f64) -> Result<Self, ConfigError> {
        let none = FloatBounds::NONE;
        let min_temp_c = section.getfloat("min_temp", None, none.min(KELVIN_TO_CELSIUS))?;
        let max_temp_c = section.getfloat("max_temp", None, none.above(min_temp_c))?;
        let min_extrude_temp_c = section.getfloat(
            "min_extrude_temp",
            Some(170.0),
            none.min(min_temp_c).max(max_temp_c),
        )?;
        let max_power = section.getfloat("max_power", Some(1.0), none.above(0.0).max(1.0))?;
        let smooth_time_s = section.getfloat("smooth_time", Some(1.0), none.above(0.0))?;
        let control = match section.getchoice("control", &["watermark", "pid"], None)? {
            "pid" => HeaterControl::Pid {
                kp: section.getfloat("pid_Kp", None, none)?,
                ki: section.getfloat("pid_Ki", None, none)?,
                kd: section.getfloat("pid_Kd", None, none)?,
            },
            _ => HeaterControl::Watermark {
                max_delta_c: section.getfloat("max_delta", Some(2.0), none.above(0.0))?,
            },
        };
        let pwm_cycle_time_s = section.getfloat(
            "pwm_cycle_time",
            Some(0.100),
            none.above(0.0).max(pwm_delay_s),
        )?;
        Ok(Self {
            name: section.name().to_owned(),
            min_temp_c,
            max_temp_c,
            min_extrude_temp_c,
            max_power,
            smooth_time_s,
            control,
            pwm_cycle_time_s,
            pwm_delay_s,
        })
    }

    /// The heater's short name, the last word of its section (`extruder`, `heater_bed`,
    /// `chamber`): the name of its `[verify_heater]` section and its G-code mux key.
    pub fn short_name(&self) -> &str {
        short_name(&self.name)
    }
}

fn short_name(name: &str) -> &str {
    name.split_whitespace().last().unwrap_or(name)
}

/// A heater's thermal-runaway check options (`[verify_heater NAME]`, Klipper's defaults when
/// the section is absent).
#[derive(Clone, Debug, PartialEq)]
pub struct VerifyHeaterConfig {
    /// The heater's short name (`extruder`, `heater_bed`, `chamber`).
    pub heater_name: String,
    /// `max_error`, °C·checks (default 120, at least 0): accumulated shortfall below
    /// `target - hysteresis` before a shutdown.
    pub max_error: f64,
    /// `check_gain_time`, s (default 20, 60 for `heater_bed`; at least 1): how long a heater
    /// approaching its target may take to gain `heating_gain`.
    pub check_gain_time_s: f64,
    /// `hysteresis`, °C (default 5, at least 0): the band around the target counted as reached.
    pub hysteresis_c: f64,
    /// `heating_gain`, °C (default 2, above 0): the gain expected within `check_gain_time`.
    pub heating_gain_c: f64,
}

impl VerifyHeaterConfig {
    /// Klipper's defaults for the heater with short name `heater_name`.
    pub fn defaults(heater_name: &str) -> Self {
        Self {
            heater_name: heater_name.to_owned(),
            max_error: 120.0,
            check_gain_time_s: default_gain_time_s(heater_name),
            hysteresis_c: 5.0,
            heating_gain_c: 2.0,
        }
    }

    /// Reads `[verify_heater HEATER_NAME]` (defaults for what it lacks, or all of it when the
    /// section is absent), in Klipper's order.
    ///
    /// # Errors
    /// An unparsable value or one out of bounds, in Klipper's words.
    pub fn from_config(config: &Config, heater_name: &str) -> Result<Self, ConfigError> {
        let section = config.getsection(&format!("verify_heater {heater_name}"));
        let none = FloatBounds::NONE;
        let hysteresis_c = section.getfloat("hysteresis", Some(5.0), none.min(0.0))?;
        let max_error = section.getfloat("max_error", Some(120.0), none.min(0.0))?;
        let heating_gain_c = section.getfloat("heating_gain", Some(2.0), none.above(0.0))?;
        let check_gain_time_s = section.getfloat(
            "check_gain_time",
            Some(default_gain_time_s(heater_name)),
            none.min(1.0),
        )?;
        Ok(Self {
            heater_name: heater_name.to_owned(),
            max_error,
            check_gain_time_s,
            hysteresis_c,
            heating_gain_c,
        })
    }
}

fn default_gain_time_s(heater_name: &str) -> f64 {
    if heater_name == "heater_bed" {
        60.0
    } else {
        20.0
    }
}

// ---------------------------------------------------------------------------------------------
// The heater
// ---------------------------------------------------------------------------------------------

/// A PWM value for the heater pin, to be queued at an MCU print time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PwmCommand {
    /// When the value takes effect, MCU print time (s): the report's print time plus
    /// [`HeaterConfig::pwm_delay_s`].
    pub print_time: f64,
    /// The duty cycle, `0..=max_power`.
    pub value: f64,
}

/// A heater's `get_status` (what `query_objects`/Moonraker show).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct HeaterStatus {
    /// The smoothed temperature, °C, rounded to 2 decimals.
    pub temperature: f64,
    /// The target, °C (0: off).
    pub target: f64,
    /// The last PWM value sent.
    pub power: f64,
}

/// What a heater's `stats` says once a second (the line in klippy's log).
#[derive(Clone, Debug, PartialEq)]
pub struct HeaterStats {
    /// Whether the heater is worth logging: a target is set, or the last reading is above 50 °C.
    pub is_active: bool,
    /// `"extruder: target=200 temp=199.8 pwm=0.412"`.
    pub message: String,
}

/// PID state (Klipper's ControlPID), gains already divided by [`PID_PARAM_BASE`].
#[derive(Clone, Debug, PartialEq)]
struct Pid {
    kp: f64,
    ki: f64,
    kd: f64,
    min_deriv_time_s: f64,
    integ_max: f64,
    prev_temp_c: f64,
    prev_print_time: f64,
    prev_deriv_c_per_s: f64,
    prev_integ: f64,
}

impl Pid {
    fn new(kp: f64, ki: f64, kd: f64, smooth_time_s: f64, max_power: f64) -> Self {
        let ki = ki / PID_PARAM_BASE;
        let integ_max = if ki != 0.0 { max_power / ki } else { 0.0 };
        Self {
            kp: kp / PID_PARAM_BASE,
            ki,
            kd: kd / PID_PARAM_BASE,
            min_deriv_time_s: smooth_time_s,
            integ_max: if integ_max.is_finite() {
                integ_max
            } else {
                0.0
            },
            prev_temp_c: AMBIENT_TEMP_C,
            prev_print_time: 0.0,
            prev_deriv_c_per_s: 0.0,
            prev_integ: 0.0,
        }
    }

    /// One report: the output in `[0, max_power]`.
    fn update(&mut self, print_time: f64, temp_c: f64, target_c: f64, max_power: f64) -> f64 {
        // Klipper does not guard against time running backwards; a report older than the
        // previous one counts as simultaneous here.
        let dt = (print_time - self.prev_print_time).max(0.0);
        let temp_diff = temp_c - self.prev_temp_c;
        // The derivative is filtered over at least min_deriv_time.
        let deriv = if dt >= self.min_deriv_time_s {
            temp_diff / dt
        } else {
            (self.prev_deriv_c_per_s * (self.min_deriv_time_s - dt) + temp_diff)
                / self.min_deriv_time_s
        };
        let err = target_c - temp_c;
        // Anti-windup: the integral stays within [0, max_power / Ki]. `max`/`min` also turn a
        // NaN (from non-finite arithmetic) into a bound instead of spreading it.
        let integ = (self.prev_integ + err * dt).max(0.0).min(self.integ_max);
        let co = self.kp * err + self.ki * integ - self.kd * deriv;
        let bounded = co.max(0.0).min(max_power);
        self.prev_temp_c = temp_c;
        self.prev_print_time = print_time;
        self.prev_deriv_c_per_s = if deriv.is_finite() { deriv } else { 0.0 };
        // Conditional integration: the integral moves only while the output is not clamped.
        if co == bounded {
            self.prev_integ = integ;
        }
        bounded
    }

    fn check_busy(&self, smoothed_temp_c: f64, target_c: f64) -> bool {
        (target_c - smoothed_temp_c).abs() > PID_SETTLE_DELTA_C
            || self.prev_deriv_c_per_s.abs() > PID_SETTLE_SLOPE_C_PER_S
    }
}

/// Bang-bang state (Klipper's ControlBangBang).
#[derive(Clone, Debug, PartialEq)]
struct BangBang {
    max_delta_c: f64,
    heating: bool,
}

impl BangBang {
    fn update(&mut self, temp_c: f64, target_c: f64, max_power: f64) -> f64 {
        if self.heating && temp_c >= target_c + self.max_delta_c {
            self.heating = false;
        } else if !self.heating && temp_c <= target_c - self.max_delta_c {
            self.heating = true;
        }
        if self.heating { max_power } else { 0.0 }
    }

    fn check_busy(&self, smoothed_temp_c: f64, target_c: f64) -> bool {
        smoothed_temp_c < target_c - self.max_delta_c
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Control {
    Pid(Pid),
    BangBang(BangBang),
}

/// One heater's live state: target, temperatures, control algorithm and PWM schedule
/// (Klipper's `Heater` with its control object). See the module documentation for the rules.
#[derive(Clone, Debug, PartialEq)]
pub struct Heater {
    config: HeaterConfig,
    control: Control,
    target_c: f64,
    last_temp_c: f64,
    smoothed_temp_c: f64,
    /// Host time of the last valid report; `None` before the first.
    last_read_time: Option<f64>,
    /// Print time of the last valid report (Klipper starts it at 0).
    last_print_time: f64,
    /// Print time from which an unchanged value is sent again.
    next_pwm_time: f64,
    last_pwm_value: f64,
    /// Print time at which the last value sent takes effect on the MCU (0 before any).
    last_pwm_time: f64,
    /// Host time after which the PWM is forced to 0 (Klipper's verify_mainthread_time).
    mainthread_deadline: f64,
    shut_down: bool,
    can_extrude: bool,
}

impl Heater {
    /// A heater at rest: target 0, temperature 0 (until the first report), PWM 0, the
    /// main-loop watchdog expired until the first [`Heater::stats`].
    pub fn new(config: HeaterConfig) -> Self {
        let control = match config.control {
            HeaterControl::Pid { kp, ki, kd } => {
                Control::Pid(Pid::new(kp, ki, kd, config.smooth_time_s, config.max_power))
            }
            HeaterControl::Watermark { max_delta_c } => Control::BangBang(BangBang {
                max_delta_c,
                heating: false,
            }),
        };
        let can_extrude = config.min_extrude_temp_c <= 0.0;
        Self {
            config,
            control,
            target_c: 0.0,
            last_temp_c: 0.0,
            smoothed_temp_c: 0.0,
            last_read_time: None,
            last_print_time: 0.0,
            next_pwm_time: 0.0,
            last_pwm_value: 0.0,
            last_pwm_time: 0.0,
            mainthread_deadline: f64::NEG_INFINITY,
            shut_down: false,
            can_extrude,
        }
    }

    /// The configuration the heater was made from.
    pub fn config(&self) -> &HeaterConfig {
        &self.config
    }

    /// The heater's section name (`extruder`, `heater_generic chamber`).
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Sets the target, °C; 0 turns the heater off (Klipper's `set_temp`).
    ///
    /// # Errors
    /// A non-zero target outside `min_temp..=max_temp`:
    /// `"Requested temperature (300.0) out of range (0.0:280.0)"`. A non-finite target is
    /// refused with the same message.
    pub fn set_target(&mut self, temp_c: f64) -> Result<(), String> {
        let allowed = temp_c == 0.0
            || (temp_c.is_finite()
                && temp_c >= self.config.min_temp_c
                && temp_c <= self.config.max_temp_c);
        if !allowed {
            return Err(format!(
                "Requested temperature ({}) out of range ({}:{})",
                py_fixed(temp_c, 1),
                py_fixed(self.config.min_temp_c, 1),
                py_fixed(self.config.max_temp_c, 1)
            ));
        }
        self.target_c = temp_c;
        Ok(())
    }

    /// Whether a temperature report has come (before the first, the temperature reads 0).
    pub fn has_reading(&self) -> bool {
        self.last_read_time.is_some()
    }

    /// The target, °C (0: off).
    pub fn target(&self) -> f64 {
        self.target_c
    }

    /// A temperature report (Klipper's `temperature_callback`): `read_time` is when the host
    /// got it (host seconds), `print_time` the sample's MCU print time, `temp_c` the sensor's
    /// temperature. Runs the control algorithm, then the smoothing, and returns the PWM value
    /// to queue if one must be sent (see the module documentation).
    ///
    /// A report with a non-finite time is ignored (`None`); a non-finite temperature turns the
    /// heater off and changes nothing else.
    pub fn temperature_update(
        &mut self,
        read_time: f64,
        print_time: f64,
        temp_c: f64,
    ) -> Option<PwmCommand> {
        if !read_time.is_finite() || !print_time.is_finite() {
            return None;
        }
        if !temp_c.is_finite() {
            return self.set_pwm(read_time, print_time, 0.0);
        }
        let dt = (print_time - self.last_print_time).max(0.0);
        self.last_temp_c = temp_c;
        self.last_read_time = Some(read_time);
        self.last_print_time = print_time;
        let max_power = self.config.max_power;
        let value = match &mut self.control {
            Control::Pid(pid) => pid.update(print_time, temp_c, self.target_c, max_power),
            Control::BangBang(bb) => bb.update(temp_c, self.target_c, max_power),
        };
        let command = self.set_pwm(read_time, print_time, value);
        let adj = (dt / self.config.smooth_time_s).min(1.0);
        let smoothed = self.smoothed_temp_c + (temp_c - self.smoothed_temp_c) * adj;
        self.smoothed_temp_c = if smoothed.is_finite() {
            smoothed
        } else {
            temp_c
        };
        self.can_extrude = self.smoothed_temp_c >= self.config.min_extrude_temp_c;
        command
    }

    /// Klipper's `set_pwm`: forces 0 when off, shut down or abandoned by the main loop; sends
    /// only significant changes, and refreshes an unchanged non-zero value before the pin's
    /// max_duration runs out.
    fn set_pwm(&mut self, read_time: f64, print_time: f64, value: f64) -> Option<PwmCommand> {
        let value = if self.target_c <= 0.0
            || self.shut_down
            || read_time > self.mainthread_deadline
            || value.is_nan()
        {
            0.0
        } else {
            value.max(0.0).min(self.config.max_power)
        };
        let min_change = self.config.max_power * MIN_PWM_CHANGE_RATIO;
        let insignificant = (value - self.last_pwm_value).abs() < min_change;
        if (print_time < self.next_pwm_time || self.last_pwm_value == 0.0) && insignificant {
            return None;
        }
        let pwm_time = print_time + self.config.pwm_delay_s;
        self.next_pwm_time = pwm_time + MAX_HEAT_TIME_S - (3.0 * self.config.pwm_delay_s + 0.001);
        self.last_pwm_value = value;
        self.last_pwm_time = pwm_time;
        Some(PwmCommand {
            print_time: pwm_time,
            value,
        })
    }

    /// A refresh of the heater's unchanged PWM value when the temperature reports that would have
    /// refreshed it were lost on the wire (Gantry's addition; Klipper refreshes only from
    /// reports). `now` is host time, `est_print_time` the MCU's print time now.
    ///
    /// Reports come every `pwm_delay_s`; the one due after `next_pwm_time` re-sends the value
    /// before the pin's max_duration ([`MAX_HEAT_TIME_S`]) runs out, with `pwm_delay_s` of
    /// margin for each of three reports. On a noisy link three lost reports in a row shut the
    /// MCU down although host and heater are fine. So when the MCU's clock is past
    /// `next_pwm_time` by a report period and a little, and no report refreshed the value, the
    /// host re-sends it — but only while its last reading is at most
    /// [`KEEPALIVE_MAX_STALE_S`] old, so a heater whose reports stopped for good is still cut
    /// by the MCU, and never when the value is 0, the heater is off or shut down, or the main
    /// loop's watchdog has expired.
    pub fn keepalive(&mut self, now: f64, est_print_time: f64) -> Option<PwmCommand> {
        let fresh = self
            .last_read_time
            .is_some_and(|t| now - t <= KEEPALIVE_MAX_STALE_S);
        let due = est_print_time >= self.next_pwm_time + self.config.pwm_delay_s * 1.2;
        if !due
            || !fresh
            || self.last_pwm_value <= 0.0
            || self.target_c <= 0.0
            || self.shut_down
            || now > self.mainthread_deadline
        {
            return None;
        }
        let pwm_time = est_print_time + self.config.pwm_delay_s;
        self.next_pwm_time = pwm_time + MAX_HEAT_TIME_S - (3.0 * self.config.pwm_delay_s + 0.001);
        self.last_pwm_time = pwm_time;
        Some(PwmCommand {
            print_time: pwm_time,
            value: self.last_pwm_value,
        })
    }

    /// The temperature and target as M105 and TEMPERATURE_WAIT see them at host time
    /// `eventtime`: (smoothed °C, target °C); the temperature reads 0 when the last report is
    /// older than [`QUELL_STALE_TIME_S`] (or there was none).
    pub fn get_temp(&self, eventtime: f64) -> (f64, f64) {
        match self.last_read_time {
            Some(t) if t >= eventtime - QUELL_STALE_TIME_S => (self.smoothed_temp_c, self.target_c),
            _ => (0.0, self.target_c),
        }
    }

    /// Whether the heater is still settling on its target (Klipper's `check_busy`; `eventtime`
    /// is unused, as there): PID — more than [`PID_SETTLE_DELTA_C`] from the target or
    /// changing faster than [`PID_SETTLE_SLOPE_C_PER_S`]; bang-bang — below
    /// `target - max_delta`.
    pub fn check_busy(&self, _eventtime: f64) -> bool {
        match &self.control {
            Control::Pid(pid) => pid.check_busy(self.smoothed_temp_c, self.target_c),
            Control::BangBang(bb) => bb.check_busy(self.smoothed_temp_c, self.target_c),
        }
    }

    /// Whether an M109/M190 (`SET_HEATER_TEMPERATURE` with a wait) must keep waiting: as
    /// klippy's `_wait_for_temperature`, not after a shutdown, not for a target of 0 (no wait
    /// is started), otherwise [`Heater::check_busy`].
    pub fn is_busy(&self, eventtime: f64) -> bool {
        !self.shut_down && self.target_c != 0.0 && self.check_busy(eventtime)
    }

    /// Whether TEMPERATURE_WAIT with `MINIMUM`/`MAXIMUM` (°C; `-inf`/`inf` when absent) is
    /// done at host time `eventtime`: the [`Heater::get_temp`] temperature is within them.
    pub fn temperature_wait_done(&self, eventtime: f64, minimum_c: f64, maximum_c: f64) -> bool {
        let (temp_c, _) = self.get_temp(eventtime);
        temp_c >= minimum_c && temp_c <= maximum_c
    }

    /// The last PWM value sent, `0..=max_power`.
    pub fn power(&self) -> f64 {
        self.last_pwm_value
    }

    /// The print time from which the heater is off on its MCU — when the last value sent was
    /// 0, the time that command takes effect (0 when nothing was ever sent); `None` while the
    /// last value sent heats.
    pub fn off_from(&self) -> Option<f64> {
        (self.last_pwm_value == 0.0).then_some(self.last_pwm_time)
    }

    /// The last reported temperature, °C, unsmoothed (0 before the first report).
    pub fn last_temp(&self) -> f64 {
        self.last_temp_c
    }

    /// The smoothed temperature, °C (0 before the first report).
    pub fn smoothed_temp(&self) -> f64 {
        self.smoothed_temp_c
    }

    /// Whether the smoothed temperature has reached `min_extrude_temp` (always true when that
    /// is 0 or below).
    pub fn can_extrude(&self) -> bool {
        self.can_extrude
    }

    /// Klipper's once-a-second `stats` from the host's main loop at `eventtime`: re-arms the
    /// main-loop watchdog (unless shut down) and gives the log line.
    pub fn stats(&mut self, eventtime: f64) -> HeaterStats {
        if !self.shut_down {
            self.mainthread_deadline = eventtime + MAX_MAINTHREAD_TIME_S;
        }
        HeaterStats {
            is_active: self.target_c != 0.0 || self.last_temp_c > 50.0,
            message: format!(
                "{}: target={} temp={} pwm={}",
                self.config.short_name(),
                py_fixed(self.target_c, 0),
                py_fixed(self.last_temp_c, 1),
                py_fixed(self.last_pwm_value, 3)
            ),
        }
    }

    /// Klipper's `get_status`: smoothed temperature (2 decimals), target and power.
    pub fn get_status(&self) -> HeaterStatus {
        let rounded = format!("{:.2}", self.smoothed_temp_c)
            .parse()
            .unwrap_or(self.smoothed_temp_c);
        HeaterStatus {
            temperature: rounded,
            target: self.target_c,
            power: self.last_pwm_value,
        }
    }

    /// The printer shut down (`klippy:shutdown`): from now on every PWM value is 0 and
    /// [`Heater::stats`] no longer re-arms the watchdog.
    pub fn shutdown(&mut self) {
        self.shut_down = true;
        self.mainthread_deadline = f64::NEG_INFINITY;
    }

    /// Whether [`Heater::shutdown`] was called.
    pub fn is_shutdown(&self) -> bool {
        self.shut_down
    }

    /// Whether `temp_c` is within `min_temp..=max_temp`. Klipper leaves this check to the MCU
    /// (its ADC range check shuts down with "ADC out of range"); the error is the explanation
    /// klippy adds to that shutdown.
    ///
    /// # Errors
    /// `"Sensor 'extruder' temperature 290.000 not in range 0.000:280.000"`.
    pub fn check_range(&self, temp_c: f64) -> Result<(), String> {
        if temp_c >= self.config.min_temp_c && temp_c <= self.config.max_temp_c {
            return Ok(());
        }
        Err(format!(
            "Sensor '{}' temperature {} not in range {}:{}",
            self.config.name,
            py_fixed(temp_c, 3),
            py_fixed(self.config.min_temp_c, 3),
            py_fixed(self.config.max_temp_c, 3)
        ))
    }
}

/// Python's `'%.Nf' % v`, including `nan`, `inf` and `-inf`.
fn py_fixed(v: f64, decimals: usize) -> String {
    if v.is_nan() {
        "nan".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "inf" } else { "-inf" }.to_owned()
    } else {
        format!("{v:.decimals$}")
    }
}

// ---------------------------------------------------------------------------------------------
// verify_heater
// ---------------------------------------------------------------------------------------------

/// The thermal-runaway check of one heater (Klipper's `HeaterCheck`), run every
/// [`VERIFY_HEATER_INTERVAL_S`] of host time with the heater's [`Heater::get_temp`].
///
/// - At or above `target - hysteresis` (or with no target) all is well: the approach ends, and
///   within `target ± hysteresis` the error is cleared.
/// - Below it, the shortfall `(target - hysteresis) - temp` is added to the error. A new target
///   starts an *approach*: the heater must gain `heating_gain` within `check_gain_time`; each
///   time it does, the error is cleared and the goal moves on. Missing a goal only ends the
///   approach.
/// - Outside an approach, an error of `max_error` shuts the printer down.
#[derive(Clone, Debug, PartialEq)]
pub struct VerifyHeater {
    config: VerifyHeaterConfig,
    approaching_target: bool,
    starting_approach: bool,
    last_target_c: f64,
    goal_temp_c: f64,
    goal_systime: f64,
    error: f64,
    failed: bool,
}

impl VerifyHeater {
    /// A check with no history (last target 0).
    pub fn new(config: VerifyHeaterConfig) -> Self {
        Self {
            config,
            approaching_target: false,
            starting_approach: false,
            last_target_c: 0.0,
            goal_temp_c: 0.0,
            goal_systime: f64::INFINITY,
            error: 0.0,
            failed: false,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &VerifyHeaterConfig {
        &self.config
    }

    /// The accumulated error, °C·checks.
    pub fn error(&self) -> f64 {
        self.error
    }

    /// Whether the heater is approaching a new target (the `heating_gain` rule applies).
    pub fn is_approaching(&self) -> bool {
        self.approaching_target
    }

    /// Klipper's shutdown message for this heater: `"Heater extruder not heating at expected
    /// rate"` followed by [`HINT_THERMAL`].
    pub fn fault_message(&self) -> String {
        format!(
            "Heater {} not heating at expected rate{HINT_THERMAL}",
            self.config.heater_name
        )
    }

    /// One check at host time `eventtime` with the heater's temperature and target (°C, as
    /// [`Heater::get_temp`] reports them).
    ///
    /// Returns the host time of the next check (`eventtime + 1`). A non-finite temperature or
    /// target (which [`Heater`] never reports) is skipped: nothing changes.
    ///
    /// # Errors
    /// The shutdown message ([`VerifyHeater::fault_message`]) when the heater fails; Klipper
    /// then stops checking, and every later call repeats the error.
    pub fn check(&mut self, eventtime: f64, temp_c: f64, target_c: f64) -> Result<f64, String> {
        if self.failed {
            return Err(self.fault_message());
        }
        let next = eventtime + VERIFY_HEATER_INTERVAL_S;
        if !temp_c.is_finite() || !target_c.is_finite() {
            return Ok(next);
        }
        let cfg = &self.config;
        if temp_c >= target_c - cfg.hysteresis_c || target_c <= 0.0 {
            // Near (or above) the target: the approach is over.
            self.approaching_target = false;
            self.starting_approach = false;
            if temp_c <= target_c + cfg.hysteresis_c {
                self.error = 0.0;
            }
            self.last_target_c = target_c;
            return Ok(next);
        }
        self.error += (target_c - cfg.hysteresis_c) - temp_c;
        if !self.approaching_target {
            if target_c != self.last_target_c {
                // A new target: start approaching it.
                self.approaching_target = true;
                self.starting_approach = true;
                self.goal_temp_c = temp_c + cfg.heating_gain_c;
                self.goal_systime = eventtime + cfg.check_gain_time_s;
            } else if self.error >= cfg.max_error {
                self.failed = true;
                return Err(self.fault_message());
            }
        } else if temp_c >= self.goal_temp_c {
            // Gained heating_gain in time: the next goal.
            self.starting_approach = false;
            self.error = 0.0;
            self.goal_temp_c = temp_c + cfg.heating_gain_c;
            self.goal_systime = eventtime + cfg.check_gain_time_s;
        } else if eventtime >= self.goal_systime {
            // No longer approaching the target.
            self.approaching_target = false;
        } else if self.starting_approach {
            self.goal_temp_c = self.goal_temp_c.min(temp_c + cfg.heating_gain_c);
        }
        self.last_target_c = target_c;
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::thermistor::REPORT_TIME;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    const EXTRUDER: &str = "[extruder]\n\
        heater_pin: PA1\n\
        sensor_type: EPCOS 100K B57560G104F\n\
        sensor_pin: PA2\n\
        control: pid\n\
        pid_Kp: 22.2\n\
        pid_Ki: 1.08\n\
        pid_Kd: 114\n\
        min_temp: 0\n\
        max_temp: 280\n";

    fn heater_config(text: &str, section: &str) -> Result<HeaterConfig, ConfigError> {
        let config = Config::parse(text, "printer.cfg")?;
        HeaterConfig::from_section(&config.getsection(section), REPORT_TIME)
    }

    fn extruder() -> Heater {
        Heater::new(heater_config(EXTRUDER, "extruder").expect("valid config"))
    }

    /// `off_from` tells when the MCU has the heater off: from the start (nothing sent), not
    /// while a heating value is the last sent, and from the time the 0 sent after the target
    /// went to 0 takes effect — which needs a report first.
    #[test]
    fn off_from_is_when_the_zero_sent_takes_effect() {
        let mut h = extruder();
        assert_eq!(h.off_from(), Some(0.0), "nothing sent yet");
        h.set_target(200.0).expect("in range");
        let _ = h.stats(HOST_OFFSET_S);
        let t0 = (0..100)
            .map(|i| f64::from(i) * REPORT_TIME)
            .find(|&t| {
                let _ = h.stats(HOST_OFFSET_S + t);
                h.temperature_update(HOST_OFFSET_S + t, t, 150.0).is_some()
            })
            .expect("a heating value");
        assert_eq!(h.off_from(), None, "heating");
        h.set_target(0.0).expect("in range");
        assert_eq!(
            h.off_from(),
            None,
            "no report since: still heating on the MCU"
        );
        let t = t0 + REPORT_TIME;
        let _ = h.stats(HOST_OFFSET_S + t);
        let off = h
            .temperature_update(HOST_OFFSET_S + t, t, 150.0)
            .expect("the 0 is sent");
        assert_eq!(off.value, 0.0);
        assert_eq!(h.off_from(), Some(off.print_time));
        assert!(off.print_time > t);
    }

    #[test]
    fn keepalive_resends_a_value_whose_refreshing_reports_were_lost() {
        let mut h = extruder();
        h.set_target(200.0).expect("in range");
        let _ = h.stats(HOST_OFFSET_S);
        // Reports until a PWM value goes out (0.3 s after its sample): the PID's derivative
        // of the first jump from 0 °C holds it at 0 for a few seconds.
        let (t0, first) = (0..100)
            .find_map(|i| {
                let t = f64::from(i) * REPORT_TIME;
                let _ = h.stats(HOST_OFFSET_S + t);
                h.temperature_update(HOST_OFFSET_S + t, t, 150.0)
                    .map(|c| (t, c))
            })
            .expect("a value");
        assert!(first.value > 0.0);
        let due = first.print_time + MAX_HEAT_TIME_S - 3.0 * REPORT_TIME;
        assert_eq!(
            h.keepalive(HOST_OFFSET_S + t0 + 1.0, t0 + 1.0),
            None,
            "not due yet"
        );
        // Due, but the last reading is 2 s old: the MCU is left to cut the heater.
        assert_eq!(
            h.keepalive(HOST_OFFSET_S + t0 + 2.0, due + 0.5),
            None,
            "too stale"
        );
        // A fresh reading that changed little, then its successors lost: the keepalive sends
        // the same value before the pin's max_duration runs out.
        let _ = h.stats(HOST_OFFSET_S + t0 + 1.5);
        let _ = h.temperature_update(HOST_OFFSET_S + t0 + 1.5, t0 + 1.5, 150.0);
        let last = h.get_status().power;
        let c = h
            .keepalive(HOST_OFFSET_S + t0 + 2.2, due + REPORT_TIME * 1.2)
            .expect("a refresh");
        assert!(c.print_time < first.print_time + MAX_HEAT_TIME_S, "{c:?}");
        assert_eq!(c.value, last);
        // Once: the next is a max_duration later.
        assert_eq!(h.keepalive(HOST_OFFSET_S + t0 + 2.3, due + 0.5), None);
        // Never for a heater that is off.
        h.set_target(0.0).expect("off");
        assert_eq!(h.keepalive(HOST_OFFSET_S + t0 + 2.4, due + 5.0), None);
    }

    fn bang_bang() -> Heater {
        let text = "[heater_bed]\ncontrol: watermark\nmin_temp: 0\nmax_temp: 130\n";
        Heater::new(heater_config(text, "heater_bed").expect("valid config"))
    }

    /// Host time runs 500 s ahead of print time, so that mixing the two up shows.
    const HOST_OFFSET_S: f64 = 500.0;

    /// A first-order hotend: `C·dT/dt = P·power − k·(T − ambient)`, with PWM changes applied
    /// at their print time and the MCU's max_duration check on the heater pin.
    struct Hotend {
        temp_c: f64,
        heater_w: f64,
        loss_w_per_k: f64,
        capacity_j_per_k: f64,
        ambient_c: f64,
        power: f64,
        /// Print time of the last PWM update applied.
        last_update: f64,
        pending: VecDeque<PwmCommand>,
        now: f64,
    }

    impl Hotend {
        /// A hotend: with a 40 W cartridge ~3 °C/s at full power from cold, ~44% duty to hold
        /// 200 °C.
        fn new(heater_w: f64) -> Self {
            Self::with(heater_w, 0.1, 13.0)
        }

        /// A bed: 200 W, 0.3 °C/s from cold, ~38% duty to hold 100 °C.
        fn bed() -> Self {
            Self::with(200.0, 1.0, 400.0)
        }

        fn with(heater_w: f64, loss_w_per_k: f64, capacity_j_per_k: f64) -> Self {
            Self {
                temp_c: 25.0,
                heater_w,
                loss_w_per_k,
                capacity_j_per_k,
                ambient_c: 25.0,
                power: 0.0,
                last_update: 0.0,
                pending: VecDeque::new(),
                now: 0.0,
            }
        }

        fn queue(&mut self, cmd: PwmCommand) {
            assert!(
                cmd.print_time >= self.now,
                "PWM scheduled in the past: {cmd:?}"
            );
            self.pending.push_back(cmd);
        }

        fn advance_to(&mut self, print_time: f64) {
            const STEP_S: f64 = 0.005;
            while self.now < print_time {
                if let Some(cmd) = self.pending.front().copied()
                    && cmd.print_time <= self.now
                {
                    self.pending.pop_front();
                    self.power = cmd.value;
                    self.last_update = cmd.print_time;
                }
                // The MCU's max_duration: a heater left on without refresh shuts down.
                if self.power > 0.0 {
                    assert!(
                        self.now - self.last_update < MAX_HEAT_TIME_S,
                        "max_duration expired at {}",
                        self.now
                    );
                }
                let flow =
                    self.power * self.heater_w - (self.temp_c - self.ambient_c) * self.loss_w_per_k;
                self.temp_c += flow / self.capacity_j_per_k * STEP_S;
                self.now += STEP_S;
            }
        }
    }

    /// One simulated run: reports every 0.3 s, `stats` and verify_heater every host second.
    struct Run {
        heater: Heater,
        verify: VerifyHeater,
        hotend: Hotend,
        print_time: f64,
        next_second: f64,
        next_check: f64,
        /// (print time, reported temperature) of every report.
        trace: Vec<(f64, f64)>,
        commands: Vec<PwmCommand>,
        verify_error: Option<(f64, String)>,
    }

    impl Run {
        fn new(heater: Heater, hotend: Hotend) -> Self {
            let verify =
                VerifyHeater::new(VerifyHeaterConfig::defaults(heater.config().short_name()));
            Self {
                heater,
                verify,
                hotend,
                print_time: 1.0,
                next_second: 0.0,
                next_check: 0.0,
                trace: Vec::new(),
                commands: Vec::new(),
                verify_error: None,
            }
        }

        fn host(&self) -> f64 {
            self.print_time + HOST_OFFSET_S
        }

        fn run_for(&mut self, seconds: f64) {
            let end = self.print_time + seconds;
            while self.print_time < end {
                self.hotend.advance_to(self.print_time);
                let host = self.host();
                if host >= self.next_second {
                    self.heater.stats(host);
                    self.next_second = host + 1.0;
                }
                let temp = self.hotend.temp_c;
                if let Some(cmd) = self.heater.temperature_update(host, self.print_time, temp) {
                    assert!((0.0..=self.heater.config().max_power).contains(&cmd.value));
                    assert!((cmd.print_time - (self.print_time + REPORT_TIME)).abs() < 1e-9);
                    self.hotend.queue(cmd);
                    self.commands.push(cmd);
                }
                self.trace.push((self.print_time, temp));
                if host >= self.next_check && self.verify_error.is_none() {
                    let (t, target) = self.heater.get_temp(host);
                    match self.verify.check(host, t, target) {
                        Ok(next) => self.next_check = next,
                        Err(e) => self.verify_error = Some((host, e)),
                    }
                }
                self.print_time += REPORT_TIME;
            }
        }
    }

    #[test]
    fn config_defaults_and_options() {
        let c = heater_config(EXTRUDER, "extruder").expect("valid");
        assert_eq!(c.name, "extruder");
        assert_eq!((c.min_temp_c, c.max_temp_c), (0.0, 280.0));
        assert_eq!(c.min_extrude_temp_c, 170.0);
        assert_eq!(c.max_power, 1.0);
        assert_eq!(c.smooth_time_s, 1.0);
        assert_eq!(c.pwm_cycle_time_s, 0.1);
        assert_eq!(c.pwm_delay_s, REPORT_TIME);
        assert_eq!(
            c.control,
            HeaterControl::Pid {
                kp: 22.2,
                ki: 1.08,
                kd: 114.0
            }
        );
        let bed = bang_bang();
        assert_eq!(
            bed.config().control,
            HeaterControl::Watermark { max_delta_c: 2.0 }
        );
        let chamber = heater_config(
            "[heater_generic chamber]\ncontrol: watermark\nmax_delta: 0.5\nmax_power: 0.6\n\
             smooth_time: 2\npwm_cycle_time: 0.3\nmin_temp: -10\nmax_temp: 80\n\
             min_extrude_temp: 0\n",
            "heater_generic chamber",
        )
        .expect("valid");
        assert_eq!(chamber.short_name(), "chamber");
        assert_eq!(
            chamber.control,
            HeaterControl::Watermark { max_delta_c: 0.5 }
        );
        assert_eq!(
            (
                chamber.max_power,
                chamber.smooth_time_s,
                chamber.pwm_cycle_time_s
            ),
            (0.6, 2.0, 0.3)
        );
        assert!(Heater::new(chamber).can_extrude());
    }

    #[test]
    fn config_errors_name_section_and_option() {
        let err = |extra: &str, drop: &str| {
            let text: String = EXTRUDER
                .lines()
                .filter(|l| drop.is_empty() || !l.starts_with(drop))
                .map(|l| format!("{l}\n"))
                .collect::<String>()
                + extra;
            heater_config(&text, "extruder")
                .expect_err("invalid")
                .to_string()
        };
        assert_eq!(
            err("", "pid_Ki"),
            "printer.cfg:1: Option 'pid_Ki' in section 'extruder' must be specified"
        );
        assert_eq!(
            err("", "max_temp"),
            "printer.cfg:1: Option 'max_temp' in section 'extruder' must be specified"
        );
        assert!(
            err("max_power: 1.5\n", "")
                .ends_with("Option 'max_power' in section 'extruder' must have maximum of 1.0")
        );
        assert!(
            err("max_power: 0\n", "")
                .ends_with("Option 'max_power' in section 'extruder' must be above 0.0")
        );
        assert!(
            err("smooth_time: 0\n", "")
                .ends_with("Option 'smooth_time' in section 'extruder' must be above 0.0")
        );
        assert!(
            err("pwm_cycle_time: 0.5\n", "").ends_with(
                "Option 'pwm_cycle_time' in section 'extruder' must have maximum of 0.3"
            )
        );
        assert!(err("min_extrude_temp: 300\n", "").ends_with(
            "Option 'min_extrude_temp' in section 'extruder' must have maximum of 280.0"
        ));
        assert!(err("control: pi\n", "control").ends_with(
            "Choice 'pi' for option 'control' in section 'extruder' is not a valid choice"
        ));
        let text = "[heater_bed]\ncontrol: watermark\nmin_temp: 100\nmax_temp: 100\n";
        assert!(
            heater_config(text, "heater_bed")
                .expect_err("invalid")
                .to_string()
                .ends_with("Option 'max_temp' in section 'heater_bed' must be above 100.0")
        );
    }

    #[test]
    fn verify_heater_config() {
        let config = Config::parse(
            "[verify_heater extruder]\nmax_error: 60\ncheck_gain_time: 10\nhysteresis: 3\n\
             heating_gain: 1\n",
            "printer.cfg",
        )
        .expect("parses");
        let v = VerifyHeaterConfig::from_config(&config, "extruder").expect("valid");
        assert_eq!(
            (
                v.max_error,
                v.check_gain_time_s,
                v.hysteresis_c,
                v.heating_gain_c
            ),
            (60.0, 10.0, 3.0, 1.0)
        );
        let bed = VerifyHeaterConfig::from_config(&config, "heater_bed").expect("defaults");
        assert_eq!(bed, VerifyHeaterConfig::defaults("heater_bed"));
        assert_eq!(bed.check_gain_time_s, 60.0);
        assert_eq!(
            (bed.max_error, bed.hysteresis_c, bed.heating_gain_c),
            (120.0, 5.0, 2.0)
        );
        assert_eq!(
            VerifyHeaterConfig::defaults("extruder").check_gain_time_s,
            20.0
        );
        let bad = Config::parse(
            "[verify_heater extruder]\ncheck_gain_time: 0.5\n",
            "printer.cfg",
        )
        .expect("parses");
        let e = VerifyHeaterConfig::from_config(&bad, "extruder").expect_err("invalid");
        assert_eq!(
            e.to_string(),
            "printer.cfg:2: Option 'check_gain_time' in section 'verify_heater extruder' \
             must have minimum of 1.0"
        );
    }

    #[test]
    fn set_target_range_message() {
        let mut h = extruder();
        assert_eq!(
            h.set_target(300.0),
            Err("Requested temperature (300.0) out of range (0.0:280.0)".to_owned())
        );
        assert_eq!(
            h.set_target(-5.25),
            Err("Requested temperature (-5.2) out of range (0.0:280.0)".to_owned())
        );
        assert_eq!(
            h.set_target(f64::NAN),
            Err("Requested temperature (nan) out of range (0.0:280.0)".to_owned())
        );
        assert_eq!(h.target(), 0.0);
        h.set_target(280.0).expect("in range");
        h.set_target(0.0).expect("off is always allowed");
        let mut bed = Heater::new(
            heater_config(
                "[heater_bed]\ncontrol: watermark\nmin_temp: 10\nmax_temp: 130\n\
                 min_extrude_temp: 10\n",
                "heater_bed",
            )
            .expect("valid"),
        );
        bed.set_target(0.0).expect("0 is off, even below min_temp");
        assert!(bed.set_target(5.0).is_err());
    }

    #[test]
    fn check_range_message() {
        let h = extruder();
        assert_eq!(h.check_range(25.0), Ok(()));
        assert_eq!(
            h.check_range(290.0),
            Err("Sensor 'extruder' temperature 290.000 not in range 0.000:280.000".to_owned())
        );
        assert!(h.check_range(f64::NAN).is_err());
    }

    #[test]
    fn pid_step_matches_klippers_formula() {
        let mut h = extruder();
        h.stats(HOST_OFFSET_S);
        h.set_target(200.0).expect("in range");
        // First report: dt = 1 s (from print time 0), no temperature change from AMBIENT_TEMP.
        let cmd = h.temperature_update(HOST_OFFSET_S + 1.0, 1.0, 25.0);
        assert_eq!(
            cmd,
            Some(PwmCommand {
                print_time: 1.3,
                value: 1.0
            })
        );
        let Control::Pid(pid) = &h.control else {
            panic!("PID")
        };
        // Saturated: the integral (175 °C·s) was not kept.
        assert_eq!(pid.prev_integ, 0.0);
        assert!((pid.integ_max - 255.0 / 1.08).abs() < 1e-9);
        // Near the target the output is proportional, integral and derivative.
        let mut h = extruder();
        h.stats(HOST_OFFSET_S + 10.0);
        h.set_target(200.0).expect("in range");
        let Control::Pid(pid) = &mut h.control else {
            panic!("PID")
        };
        pid.prev_temp_c = 199.0;
        pid.prev_print_time = 10.0;
        pid.prev_deriv_c_per_s = 0.5;
        pid.prev_integ = 100.0;
        let cmd = h
            .temperature_update(HOST_OFFSET_S + 10.3, 10.3, 199.2)
            .expect("a change");
        let deriv = (0.5 * (1.0 - 0.3) + 0.2) / 1.0;
        let integ = 100.0 + 0.8 * 0.3;
        let co = (22.2 * 0.8 + 1.08 * integ - 114.0 * deriv) / 255.0;
        assert!((cmd.value - co).abs() < 1e-12, "{} vs {co}", cmd.value);
        let Control::Pid(pid) = &h.control else {
            panic!("PID")
        };
        assert!((pid.prev_integ - integ).abs() < 1e-12);
        assert!((pid.prev_deriv_c_per_s - deriv).abs() < 1e-12);
    }

    #[test]
    fn pid_reaches_and_holds_200() {
        let mut run = Run::new(extruder(), Hotend::new(40.0));
        run.run_for(5.0);
        run.heater.set_target(200.0).expect("in range");
        run.run_for(595.0);
        assert!(run.verify_error.is_none(), "{:?}", run.verify_error);
        // Reached within 2 minutes (about 80 s), little overshoot, settled within 5 minutes.
        let start = 6.0;
        let reached = run
            .trace
            .iter()
            .find(|(_, t)| *t >= 199.0)
            .map(|(pt, _)| pt - start)
            .expect("reaches 200 °C");
        assert!(reached < 120.0, "took {reached} s");
        let overshoot = run.trace.iter().map(|(_, t)| *t).fold(0.0, f64::max);
        assert!(overshoot < 205.0, "overshoot to {overshoot}");
        for &(pt, t) in run.trace.iter().filter(|(pt, _)| *pt > start + 300.0) {
            assert!((t - 200.0).abs() <= 1.0, "{t} °C at {pt}");
        }
        assert!(!run.heater.check_busy(run.host()));
        assert!(!run.heater.is_busy(run.host()));
        let (temp, target) = run.heater.get_temp(run.host());
        assert!((temp - 200.0).abs() < 0.5 && target == 200.0);
        assert!(run.heater.can_extrude());
        let status = run.heater.get_status();
        assert_eq!(status.target, 200.0);
        assert!(status.power > 0.2 && status.power < 0.7, "{status:?}");
        assert!(
            run.heater
                .temperature_wait_done(run.host(), 195.0, f64::INFINITY)
        );
        let stats = run.heater.stats(run.host());
        assert!(stats.is_active);
        assert!(
            stats.message.starts_with("extruder: target=200 temp=2")
                || stats.message.starts_with("extruder: target=200 temp=19"),
            "{}",
            stats.message
        );
        // Busy while heating: M109 would have waited.
        run.heater.set_target(250.0).expect("in range");
        run.run_for(3.0);
        assert!(run.heater.is_busy(run.host()));
        run.run_for(300.0);
        assert!(!run.heater.is_busy(run.host()));
        assert!(run.verify_error.is_none(), "{:?}", run.verify_error);
    }

    #[test]
    fn disconnected_heater_fails_verify_heater() {
        let mut run = Run::new(extruder(), Hotend::new(0.0));
        run.run_for(5.0);
        run.heater.set_target(200.0).expect("in range");
        let set_at = run.host();
        run.run_for(60.0);
        let (at, message) = run.verify_error.expect("verify_heater fails");
        let check_gain_time = run.verify.config().check_gain_time_s;
        assert!(
            at - set_at <= check_gain_time + 3.0 && at - set_at >= check_gain_time,
            "failed {} s after the target was set",
            at - set_at
        );
        assert_eq!(
            message,
            "Heater extruder not heating at expected rate\n\
             See the 'verify_heater' section in docs/Config_Reference.md\n\
             for the parameters that control this check.\n"
        );
        // Sticky, as Klipper stops its timer.
        assert_eq!(run.verify.check(at + 1.0, 300.0, 200.0), Err(message));
    }

    #[test]
    fn verify_heater_loses_heat_while_holding() {
        let mut v = VerifyHeater::new(VerifyHeaterConfig::defaults("extruder"));
        let mut t = 0.0;
        // Holding: no error.
        for _ in 0..5 {
            t = v.check(t, 199.0, 200.0).expect("fine");
        }
        assert_eq!(v.error(), 0.0);
        // The heater falls 10 °C below the hysteresis band: 120/10 = 12 checks to fail.
        let mut failures = 0;
        for i in 1..=20 {
            match v.check(t, 185.0, 200.0) {
                Ok(next) => t = next,
                Err(_) => {
                    failures = i;
                    break;
                }
            }
        }
        assert_eq!(failures, 12);
    }

    #[test]
    fn verify_heater_slow_approach_then_holds() {
        let mut v = VerifyHeater::new(VerifyHeaterConfig::defaults("heater_bed"));
        let mut t = 0.0;
        let mut temp = 25.0;
        // A bed gaining 0.05 °C/s (3 °C per minute) satisfies heating_gain within 60 s.
        while temp < 100.0 {
            t = v.check(t, temp, 100.0).expect("slow but steady");
            assert!(v.is_approaching() || temp >= 95.0);
            temp += 0.05;
        }
        // A bed stalling halfway fails once the approach ends and the error mounts.
        let mut v = VerifyHeater::new(VerifyHeaterConfig::defaults("heater_bed"));
        let mut t = 0.0;
        let failed_at = loop {
            match v.check(t, 60.0, 100.0) {
                Ok(next) => t = next,
                Err(_) => break t,
            }
        };
        assert_eq!(failed_at, 61.0);
    }

    #[test]
    fn pwm_refreshed_before_max_duration() {
        // A heater that cannot reach its target: the value stays max_power.
        let mut run = Run::new(bang_bang(), Hotend::new(5.0));
        run.heater.set_target(100.0).expect("in range");
        run.run_for(30.0);
        assert!(run.commands.len() > 5, "{:?}", run.commands);
        assert!(run.commands.iter().all(|c| c.value == 1.0));
        for pair in run.commands.windows(2) {
            let gap = pair[1].print_time - pair[0].print_time;
            assert!(gap < MAX_HEAT_TIME_S, "gap {gap}");
            // … but not sent at every report.
            assert!(gap > 2.0, "gap {gap}");
        }
    }

    #[test]
    fn small_changes_suppressed_and_off_is_sent_once() {
        let mut h = extruder();
        h.stats(0.0);
        h.set_target(200.0).expect("in range");
        let Control::Pid(pid) = &mut h.control else {
            panic!("PID")
        };
        pid.prev_temp_c = 200.0;
        pid.prev_print_time = 0.7;
        pid.prev_integ = 100.0;
        let first = h.temperature_update(1.0, 1.0, 200.0).expect("first value");
        assert!((first.value - 1.08 * 100.0 / 255.0).abs() < 1e-12);
        // 0.05 °C lower: P +0.0044, D +0.0224 — less than 5% of max_power.
        assert_eq!(h.temperature_update(1.3, 1.3, 199.95), None);
        h.set_target(0.0).expect("off");
        let off = h.temperature_update(1.6, 1.6, 199.95).expect("off is sent");
        assert_eq!(off.value, 0.0);
        assert!((off.print_time - 1.9).abs() < 1e-9);
        assert_eq!(h.power(), 0.0);
        for i in 0..30 {
            let t = 1.9 + f64::from(i) * 0.3;
            assert_eq!(h.temperature_update(t, t, 199.0), None);
        }
    }

    #[test]
    fn main_loop_watchdog_and_shutdown_turn_off() {
        let mut h = bang_bang();
        h.set_target(60.0).expect("in range");
        // Never armed: stays off.
        assert_eq!(h.temperature_update(10.0, 5.0, 25.0), None);
        h.stats(10.0);
        assert_eq!(
            h.temperature_update(10.3, 5.3, 25.0).map(|c| c.value),
            Some(1.0)
        );
        // The main loop stalls: reports past eventtime + 5 s turn the heater off.
        assert_eq!(h.temperature_update(15.0, 5.6, 25.0), None);
        assert_eq!(
            h.temperature_update(15.3, 5.9, 25.0).map(|c| c.value),
            Some(0.0)
        );
        h.stats(15.5);
        assert_eq!(
            h.temperature_update(15.6, 6.2, 25.0).map(|c| c.value),
            Some(1.0)
        );
        h.shutdown();
        assert!(h.is_shutdown());
        assert_eq!(
            h.temperature_update(15.9, 6.5, 25.0).map(|c| c.value),
            Some(0.0)
        );
        h.stats(16.0);
        assert_eq!(h.temperature_update(16.2, 6.8, 25.0), None);
        assert!(!h.is_busy(16.2));
        // A non-finite reading turns an active heater off.
        let mut h = bang_bang();
        h.set_target(60.0).expect("in range");
        h.stats(0.0);
        assert!(h.temperature_update(0.3, 0.3, 25.0).is_some());
        assert_eq!(
            h.temperature_update(0.6, 0.6, f64::NAN).map(|c| c.value),
            Some(0.0)
        );
        assert_eq!(h.last_temp(), 25.0);
    }

    #[test]
    fn stale_temperature_reads_zero() {
        let mut h = extruder();
        assert_eq!(h.get_temp(100.0), (0.0, 0.0));
        h.temperature_update(100.0, 3.0, 30.0);
        assert_eq!(h.get_temp(100.5), (30.0, 0.0));
        assert_eq!(h.get_temp(107.0), (30.0, 0.0));
        assert_eq!(h.get_temp(107.1), (0.0, 0.0));
        assert!(!h.temperature_wait_done(107.1, 25.0, f64::INFINITY));
        assert!(h.temperature_wait_done(100.5, 25.0, f64::INFINITY));
    }

    #[test]
    fn smoothing_follows_smooth_time() {
        let mut h = extruder();
        h.temperature_update(0.0, 10.0, 100.0);
        // The first report is taken whole (dt from print time 0 exceeds smooth_time).
        assert_eq!(h.smoothed_temp(), 100.0);
        h.temperature_update(0.3, 10.3, 110.0);
        assert!((h.smoothed_temp() - 103.0).abs() < 1e-9);
        assert!(!h.can_extrude());
        assert_eq!(h.get_status().temperature, 103.0);
    }

    #[test]
    fn bang_bang_holds_within_max_delta() {
        let mut run = Run::new(bang_bang(), Hotend::bed());
        run.heater.set_target(100.0).expect("in range");
        run.run_for(900.0);
        assert!(run.verify_error.is_none(), "{:?}", run.verify_error);
        // Switches at the band's edges: on at or below 98 °C, off at or above 102 °C; the
        // 0.3 s report period and 0.3 s PWM delay add an overshoot of a fraction of a degree.
        let settled: Vec<f64> = run
            .trace
            .iter()
            .filter(|(pt, _)| *pt > 500.0)
            .map(|(_, t)| *t)
            .collect();
        let max = settled.iter().copied().fold(f64::MIN, f64::max);
        let min = settled.iter().copied().fold(f64::MAX, f64::min);
        assert!((102.0..102.5).contains(&max), "max {max}");
        assert!(min <= 98.0 && min > 97.5, "min {min}");
        assert!(!run.heater.check_busy(run.host()));
        // It cycles.
        let ons = run.commands.iter().filter(|c| c.value == 1.0).count();
        let offs = run.commands.iter().filter(|c| c.value == 0.0).count();
        assert!(ons > 3 && offs > 3, "{ons} on, {offs} off");
    }

    fn any_f64() -> impl Strategy<Value = f64> {
        prop_oneof![
            4 => -50.0f64..400.0,
            1 => prop::num::f64::ANY,
            1 => Just(f64::NAN),
            1 => Just(f64::INFINITY),
            1 => Just(f64::NEG_INFINITY),
            1 => Just(f64::MAX),
            1 => Just(-f64::MAX),
        ]
    }

    fn any_time() -> impl Strategy<Value = f64> {
        prop_oneof![
            4 => 0.0f64..1000.0,
            1 => prop::num::f64::ANY,
            1 => Just(f64::NAN),
            1 => Just(f64::MAX),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 256,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn temperature_update_stays_in_bounds(
            pid in any::<bool>(),
            max_power in 0.01f64..=1.0,
            steps in prop::collection::vec(
                (any_time(), any_time(), any_f64(), prop::option::of(any_f64()), any::<bool>()),
                1..60,
            ),
        ) {
            let text = if pid {
                format!("{EXTRUDER}max_power: {max_power}\n")
            } else {
                format!("[extruder]\ncontrol: watermark\nmin_temp: 0\nmax_temp: 280\n\
                         max_power: {max_power}\n")
            };
            let config = heater_config(&text, "extruder").expect("valid");
            let max_power = config.max_power;
            let mut h = Heater::new(config);
            let mut v = VerifyHeater::new(VerifyHeaterConfig::defaults("extruder"));
            for (read_time, print_time, temp, target, stats) in steps {
                if let Some(target) = target {
                    let _ = h.set_target(target);
                }
                if stats {
                    h.stats(read_time);
                }
                if let Some(cmd) = h.temperature_update(read_time, print_time, temp) {
                    prop_assert!((0.0..=max_power).contains(&cmd.value), "{cmd:?}");
                    prop_assert!(cmd.print_time.is_finite());
                }
                prop_assert!((0.0..=max_power).contains(&h.power()));
                let (t, target) = h.get_temp(read_time);
                prop_assert!(!t.is_nan() && !target.is_nan());
                let _ = h.check_busy(read_time);
                let _ = h.get_status();
                let _ = v.check(read_time, t, target);
                let _ = v.check(read_time, temp, target);
            }
        }
    }
}
