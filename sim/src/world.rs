//! The physical world around the simulated MCU, from a small TOML file.
//!
//! - **Steppers** (`[[stepper]]`, found by their step pin) each drive a carriage along an axis:
//!   its position is `start_mm ± steps / steps_per_mm` (the sign flips with `dir_inverted`, the
//!   `!` on the dir pin in printer.cfg). A carriage may carry an endstop on a pin, at a position:
//!   at the `min` end it reads triggered at or below that position, at the `max` end at or above.
//!   A triggered endstop reads high, an open one low; a pin the world does not drive reads its
//!   pull-up. Cartesian carriages only: corexy and delta mixing is not modelled.
//! - **Heaters** (`[[heater]]`) follow `C·dT/dt = P·duty − k·(T − T_ambient)`, integrated exactly
//!   between output changes (the duty is constant in between), and read through their thermistor
//!   ([`crate::thermistor`]) on the sensor pin. A pin no thermistor sits on reads 0.
//! - **Fans** (`[[fan]]`) report the duty cycle they are driven with.
//! - **Faults**: `open_thermistor` (the ADC reads full scale), `disconnected` (the heater draws no
//!   power), `stuck_endstop = "triggered" | "open"`; set them in the file or with
//!   [`World::inject`].
//!
//! The world is pure: time is the MCU clock, given as an argument. Pin names are resolved against
//! the dictionary of the MCU the world is wired to, so a wrong name is an error at load time.

use gantry_proto::Dictionary;
use serde::Deserialize;

use crate::thermistor::{Curve, Thermistor, klipper_sensor};

/// The default world: the simulated printer of `gantry sim --example-config`.
pub const DEFAULT_WORLD: &str = include_str!("../../assets/sim/default-world.toml");

/// Why a world file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorldError {
    /// The TOML does not parse or has the wrong shape.
    #[error("world file: {0}")]
    Toml(String),
    /// A value is invalid.
    #[error("world file: {section} '{name}': {message}")]
    Invalid {
        /// `stepper`, `heater` or `fan`.
        section: &'static str,
        /// The entry's name.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// The dictionary has no CLOCK_FREQ.
    #[error("the MCU's dictionary has no CLOCK_FREQ")]
    NoClock,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorldFile {
    #[serde(default = "default_ambient")]
    ambient_c: f64,
    #[serde(default)]
    stepper: Vec<StepperFile>,
    #[serde(default)]
    heater: Vec<HeaterFile>,
    #[serde(default)]
    fan: Vec<FanFile>,
}

fn default_ambient() -> f64 {
    25.0
}

fn default_pullup() -> f64 {
    4700.0
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StepperFile {
    name: String,
    step_pin: String,
    axis: String,
    steps_per_mm: f64,
    #[serde(default)]
    dir_inverted: bool,
    #[serde(default)]
    start_mm: f64,
    endstop_pin: Option<String>,
    #[serde(default)]
    endstop_mm: f64,
    #[serde(default)]
    endstop_at: EndstopEnd,
    stuck_endstop: Option<Stuck>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum EndstopEnd {
    #[default]
    Min,
    Max,
}

/// How a stuck endstop reads.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Stuck {
    /// Always triggered.
    Triggered,
    /// Never triggered.
    Open,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaterFile {
    name: String,
    heater_pin: String,
    sensor_pin: String,
    power_w: f64,
    heat_capacity_j_k: f64,
    loss_w_k: f64,
    initial_c: Option<f64>,
    sensor: Option<String>,
    thermistor: Option<CurveFile>,
    #[serde(default = "default_pullup")]
    pullup_ohm: f64,
    #[serde(default)]
    inline_ohm: f64,
    #[serde(default)]
    open_thermistor: bool,
    #[serde(default)]
    disconnected: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CurveFile {
    t1: f64,
    r1: f64,
    t2: Option<f64>,
    r2: Option<f64>,
    t3: Option<f64>,
    r3: Option<f64>,
    beta: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FanFile {
    name: String,
    pin: String,
}

/// An endstop on a carriage.
#[derive(Debug, Clone, PartialEq)]
pub struct EndstopSpec {
    /// The pin's enumeration value.
    pub pin: i64,
    /// Where it triggers, mm.
    pub position_mm: f64,
    /// Whether it sits at the high end of travel.
    pub at_max: bool,
    /// A stuck endstop's reading.
    pub stuck: Option<Stuck>,
}

/// A carriage driven by one stepper.
#[derive(Debug, Clone, PartialEq)]
pub struct Carriage {
    /// The stepper's name (`stepper_x`).
    pub name: String,
    /// The axis it moves (`x`).
    pub axis: String,
    /// The step pin's enumeration value.
    pub step_pin: i64,
    /// Microsteps per mm.
    pub steps_per_mm: f64,
    /// Whether dir=1 moves toward lower positions.
    pub dir_inverted: bool,
    /// The position at MCU reset, mm.
    pub start_mm: f64,
    /// Its endstop, if any.
    pub endstop: Option<EndstopSpec>,
}

impl Carriage {
    /// The position after `steps` (Klipper's `stepper_position`: dir=1 steps minus dir=0 steps).
    pub fn position_mm(&self, steps: i64) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let moved = steps as f64 / self.steps_per_mm;
        if self.dir_inverted {
            self.start_mm - moved
        } else {
            self.start_mm + moved
        }
    }
}

/// A heater with its thermistor.
#[derive(Debug, Clone, PartialEq)]
pub struct Heater {
    /// Its name (`extruder`).
    pub name: String,
    /// The heater pin's enumeration value.
    pub heater_pin: i64,
    /// The sensor pin's enumeration value.
    pub sensor_pin: i64,
    /// Power at full duty, W.
    pub power_w: f64,
    /// Heat capacity, J/K.
    pub heat_capacity_j_k: f64,
    /// Loss to ambient, W/K.
    pub loss_w_k: f64,
    /// The thermistor.
    pub thermistor: Thermistor,
    /// The temperature now, °C.
    pub temperature_c: f64,
    /// The duty cycle it is driven with (0..1).
    pub duty: f64,
    /// Fault: the thermistor is open (the ADC reads full scale).
    pub open_thermistor: bool,
    /// Fault: the heater is disconnected (draws no power).
    pub disconnected: bool,
}

/// A fan.
#[derive(Debug, Clone, PartialEq)]
pub struct Fan {
    /// Its name.
    pub name: String,
    /// The pin's enumeration value.
    pub pin: i64,
    /// The duty cycle it is driven with (0..1).
    pub duty: f64,
}

/// A fault to inject while running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorldFault {
    /// The named heater's thermistor opens.
    OpenThermistor(String),
    /// The named heater is disconnected.
    DisconnectedHeater(String),
    /// The named stepper's endstop sticks.
    StuckEndstop(String, Stuck),
}

/// The world: carriages, heaters and fans, at an MCU clock.
#[derive(Debug, Clone, PartialEq)]
pub struct World {
    clock_freq: f64,
    /// The MCU clock the world has been run to.
    pub clock: u64,
    /// Ambient temperature, °C.
    pub ambient_c: f64,
    /// The carriages.
    pub carriages: Vec<Carriage>,
    /// The heaters.
    pub heaters: Vec<Heater>,
    /// The fans.
    pub fans: Vec<Fan>,
}

impl World {
    /// A world with nothing in it, for an MCU at `clock_freq` Hz.
    pub fn empty(clock_freq: f64) -> Self {
        Self {
            clock_freq,
            clock: 0,
            ambient_c: default_ambient(),
            carriages: Vec::new(),
            heaters: Vec::new(),
            fans: Vec::new(),
        }
    }

    /// The default world ([`DEFAULT_WORLD`]) wired to an MCU with dictionary `dict`.
    ///
    /// # Errors
    /// When `dict` lacks a pin the default world uses, or CLOCK_FREQ.
    pub fn default_for(dict: &Dictionary) -> Result<Self, WorldError> {
        Self::from_toml(DEFAULT_WORLD, dict)
    }

    /// A world from TOML text, wired to an MCU with dictionary `dict` (pin names are resolved
    /// with its `pin` enumeration).
    ///
    /// # Errors
    /// A parse error (with line and column), an unknown pin or sensor, or an invalid value.
    pub fn from_toml(text: &str, dict: &Dictionary) -> Result<Self, WorldError> {
        let file: WorldFile = toml::from_str(text).map_err(|e| WorldError::Toml(e.to_string()))?;
        let clock_freq = dict.clock_freq().map_err(|_| WorldError::NoClock)?;
        let mut world = Self::empty(clock_freq);
        world.ambient_c = file.ambient_c;
        for s in file.stepper {
            let bad = |message: String| WorldError::Invalid {
                section: "stepper",
                name: s.name.clone(),
                message,
            };
            let step_pin = pin(dict, "step_pin", &s.step_pin).map_err(bad)?;
            if !(s.steps_per_mm > 0.0 && s.steps_per_mm.is_finite()) {
                return Err(bad(format!(
                    "steps_per_mm must be > 0, not {}",
                    s.steps_per_mm
                )));
            }
            let endstop = match &s.endstop_pin {
                Some(name) => Some(EndstopSpec {
                    pin: pin(dict, "endstop_pin", name).map_err(bad)?,
                    position_mm: s.endstop_mm,
                    at_max: s.endstop_at == EndstopEnd::Max,
                    stuck: s.stuck_endstop,
                }),
                None => None,
            };
            world.carriages.push(Carriage {
                name: s.name.clone(),
                axis: s.axis.clone(),
                step_pin,
                steps_per_mm: s.steps_per_mm,
                dir_inverted: s.dir_inverted,
                start_mm: s.start_mm,
                endstop,
            });
        }
        for h in file.heater {
            let bad = |message: String| WorldError::Invalid {
                section: "heater",
                name: h.name.clone(),
                message,
            };
            let heater_pin = pin(dict, "heater_pin", &h.heater_pin).map_err(bad)?;
            let sensor_pin = pin(dict, "sensor_pin", &h.sensor_pin).map_err(bad)?;
            for (what, v, min) in [
                ("power_w", h.power_w, 0.0),
                ("heat_capacity_j_k", h.heat_capacity_j_k, f64::MIN_POSITIVE),
                ("loss_w_k", h.loss_w_k, 0.0),
            ] {
                if !(v >= min && v.is_finite()) {
                    return Err(bad(format!("{what} must be >= {min}, not {v}")));
                }
            }
            let curve = match (&h.sensor, &h.thermistor) {
                (Some(name), None) => klipper_sensor(name).ok_or_else(|| {
                    bad(format!(
                        "sensor '{name}' is not one of Klipper's thermistors"
                    ))
                })?,
                (None, Some(c)) => curve(c).map_err(bad)?,
                _ => {
                    return Err(bad(
                        "give either sensor = \"<Klipper sensor_type>\" or thermistor = { … }"
                            .to_owned(),
                    ));
                }
            };
            let thermistor =
                Thermistor::new(curve, h.pullup_ohm, h.inline_ohm).map_err(|e| bad(e.0))?;
            world.heaters.push(Heater {
                name: h.name.clone(),
                heater_pin,
                sensor_pin,
                power_w: h.power_w,
                heat_capacity_j_k: h.heat_capacity_j_k,
                loss_w_k: h.loss_w_k,
                thermistor,
                temperature_c: h.initial_c.unwrap_or(file.ambient_c),
                duty: 0.0,
                open_thermistor: h.open_thermistor,
                disconnected: h.disconnected,
            });
        }
        for f in file.fan {
            let p = pin(dict, "pin", &f.pin).map_err(|message| WorldError::Invalid {
                section: "fan",
                name: f.name.clone(),
                message,
            })?;
            world.fans.push(Fan {
                name: f.name,
                pin: p,
                duty: 0.0,
            });
        }
        Ok(world)
    }

    /// Injects a fault.
    ///
    /// # Errors
    /// When no heater or stepper has that name.
    pub fn inject(&mut self, fault: &WorldFault) -> Result<(), String> {
        match fault {
            WorldFault::OpenThermistor(name) | WorldFault::DisconnectedHeater(name) => {
                let h = self
                    .heaters
                    .iter_mut()
                    .find(|h| &h.name == name)
                    .ok_or_else(|| format!("no heater '{name}'"))?;
                if matches!(fault, WorldFault::OpenThermistor(_)) {
                    h.open_thermistor = true;
                } else {
                    h.disconnected = true;
                }
            }
            WorldFault::StuckEndstop(name, stuck) => {
                let e = self
                    .carriages
                    .iter_mut()
                    .find(|c| &c.name == name)
                    .and_then(|c| c.endstop.as_mut())
                    .ok_or_else(|| format!("no stepper '{name}' with an endstop"))?;
                e.stuck = Some(*stuck);
            }
        }
        Ok(())
    }

    /// Runs the heaters' thermal models to `clock` (nothing happens for an earlier clock).
    pub fn advance(&mut self, clock: u64) {
        if clock <= self.clock {
            return;
        }
        #[allow(clippy::cast_precision_loss)]
        let dt_s = (clock - self.clock) as f64 / self.clock_freq;
        self.clock = clock;
        for h in &mut self.heaters {
            let power = if h.disconnected {
                0.0
            } else {
                h.power_w * h.duty
            };
            if h.loss_w_k > 0.0 {
                // Exact for a constant duty: an exponential approach to the equilibrium.
                let equilibrium = self.ambient_c + power / h.loss_w_k;
                let decay = (-h.loss_w_k * dt_s / h.heat_capacity_j_k).exp();
                h.temperature_c = equilibrium + (h.temperature_c - equilibrium) * decay;
            } else {
                h.temperature_c += power * dt_s / h.heat_capacity_j_k;
            }
        }
    }

    /// Drives `pin` with `duty` (0..1) from `clock` on.
    pub fn set_output(&mut self, pin: i64, duty: f64, clock: u64) {
        self.advance(clock);
        for h in self.heaters.iter_mut().filter(|h| h.heater_pin == pin) {
            h.duty = duty;
        }
        for f in self.fans.iter_mut().filter(|f| f.pin == pin) {
            f.duty = duty;
        }
    }

    /// The ADC reading on `pin` as a fraction of full scale, if a thermistor sits on it.
    pub fn adc_fraction(&self, pin: i64) -> Option<f64> {
        let h = self.heaters.iter().find(|h| h.sensor_pin == pin)?;
        Some(if h.open_thermistor {
            1.0
        } else {
            h.thermistor.adc_fraction(h.temperature_c)
        })
    }

    /// The level of endstop `pin` (triggered = high), if a carriage's endstop is on it;
    /// `steps(i)` gives carriage `i`'s stepper position (`None` while it is not configured).
    pub fn endstop_level(&self, pin: i64, steps: impl Fn(usize) -> Option<i64>) -> Option<bool> {
        self.carriages.iter().enumerate().find_map(|(i, c)| {
            let e = c.endstop.as_ref().filter(|e| e.pin == pin)?;
            Some(match e.stuck {
                Some(Stuck::Triggered) => true,
                Some(Stuck::Open) => false,
                None => {
                    let at = c.position_mm(steps(i).unwrap_or(0));
                    if e.at_max {
                        at >= e.position_mm
                    } else {
                        at <= e.position_mm
                    }
                }
            })
        })
    }
}

fn pin(dict: &Dictionary, what: &str, name: &str) -> Result<i64, String> {
    dict.enumerations
        .get("pin")
        .and_then(|e| e.value_of(name))
        .ok_or_else(|| format!("{what} '{name}' is not a pin of this MCU"))
}

fn curve(c: &CurveFile) -> Result<Curve, String> {
    match (c.beta, c.t2, c.r2, c.t3, c.r3) {
        (Some(beta), None, None, None, None) => Ok(Curve::Beta {
            point: (c.t1, c.r1),
            beta,
        }),
        (None, Some(t2), Some(r2), Some(t3), Some(r3)) => {
            Ok(Curve::Points([(c.t1, c.r1), (t2, r2), (t3, r3)]))
        }
        _ => Err("thermistor needs t1, r1 and either beta or t2, r2, t3, r3".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dict() -> Dictionary {
        crate::dictionary::parsed()
    }

    #[test]
    fn the_default_world_loads_and_matches_the_example_printer() {
        let w = World::default_for(&dict()).expect("valid");
        let names: Vec<&str> = w.carriages.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["stepper_x", "stepper_y", "stepper_z", "extruder"]);
        let x = &w.carriages[0];
        assert_eq!(x.steps_per_mm, 80.0);
        assert!(x.dir_inverted, "printer.cfg has dir_pin: !PC5");
        let heaters: Vec<&str> = w.heaters.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(heaters, ["extruder", "heater_bed"]);
        assert_eq!(w.fans.len(), 1);
    }

    #[test]
    fn heaters_heat_with_power_and_cool_without() {
        let mut w = World::default_for(&dict()).expect("valid");
        let pin = w.heaters[0].heater_pin;
        let freq = 16_000_000;
        w.set_output(pin, 1.0, 0);
        w.advance(10 * freq);
        let hot = w.heaters[0].temperature_c;
        assert!(hot > 40.0, "{hot}");
        w.set_output(pin, 0.0, 10 * freq);
        w.advance(20 * freq);
        let cooler = w.heaters[0].temperature_c;
        assert!(cooler < hot && cooler > 25.0, "{cooler}");
        // Stepped or in one go, the exact solution is the same.
        let mut a = World::default_for(&dict()).expect("valid");
        let mut b = a.clone();
        a.set_output(pin, 0.5, 0);
        b.set_output(pin, 0.5, 0);
        for k in 1..=100 {
            a.advance(k * freq / 10);
        }
        b.advance(10 * freq);
        assert!((a.heaters[0].temperature_c - b.heaters[0].temperature_c).abs() < 1e-9);
        // A disconnected heater stays cold whatever it is driven with.
        let mut w = World::default_for(&dict()).expect("valid");
        w.inject(&WorldFault::DisconnectedHeater("extruder".into()))
            .expect("exists");
        w.set_output(pin, 1.0, 0);
        w.advance(60 * freq);
        assert_eq!(w.heaters[0].temperature_c, 25.0);
        assert_eq!(
            w.heaters[0].duty, 1.0,
            "the duty still shows what it was driven with"
        );
    }

    #[test]
    fn faults_and_endstops() {
        let mut w = World::default_for(&dict()).expect("valid");
        let sensor = w.heaters[0].sensor_pin;
        let room = w.adc_fraction(sensor).expect("a thermistor");
        assert!((room - 0.955).abs() < 0.01, "{room}");
        w.inject(&WorldFault::OpenThermistor("extruder".into()))
            .expect("exists");
        assert_eq!(w.adc_fraction(sensor), Some(1.0));
        let endstop = w.carriages[0].endstop.clone().expect("an endstop");
        // stepper_x starts mid-travel; dir is inverted, so +steps move toward 0.
        assert_eq!(endstop_at(&w, endstop.pin, 0), Some(false));
        let to_zero = (w.carriages[0].start_mm * 80.0) as i64;
        assert_eq!(endstop_at(&w, endstop.pin, to_zero), Some(true));
        w.inject(&WorldFault::StuckEndstop("stepper_x".into(), Stuck::Open))
            .expect("exists");
        assert_eq!(endstop_at(&w, endstop.pin, to_zero), Some(false));
        assert!(
            w.inject(&WorldFault::DisconnectedHeater("nope".into()))
                .is_err()
        );
    }

    fn endstop_at(w: &World, pin: i64, steps: i64) -> Option<bool> {
        w.endstop_level(pin, |i| (i == 0).then_some(steps))
    }

    #[test]
    fn bad_worlds_are_clear_errors() {
        let d = dict();
        let err = |text: &str| World::from_toml(text, &d).expect_err("invalid").to_string();
        assert!(err("[[fan]]\nname = \"f\"\npin = \"PZ9\"\n").contains("'PZ9' is not a pin"));
        assert!(err("[[fan]]\nname = \"f\"\n").contains("missing field `pin`"));
        assert!(err("colour = 3\n").contains("unknown field"));
        let heater = "[[heater]]\nname = \"h\"\nheater_pin = \"PA0\"\nsensor_pin = \"PA1\"\n\
                      power_w = 40\nheat_capacity_j_k = 10\nloss_w_k = 0.1\n";
        assert!(err(heater).contains("give either sensor"));
        assert!(err(&format!("{heater}sensor = \"Nope\"\n")).contains("not one of Klipper's"));
        let ok = format!("{heater}thermistor = {{ t1 = 25, r1 = 100000, beta = 3950 }}\n");
        assert!(World::from_toml(&ok, &d).is_ok());
    }
}
