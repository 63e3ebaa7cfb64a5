//! Where a simulated MCU ended: every stepper (by oid, named by its step pin), the world's
//! carriages, heaters and fans, the config CRC, the fault that stopped it (with Klipper's shutdown
//! message and clock), and problems in the stream that fed it. Both fronts — a replay and a live
//! run — report with this one type.

use gantry_proto::Dictionary;

use crate::model::{Fault, Mcu};

/// Where one stepper ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepperReport {
    /// Its oid.
    pub oid: usize,
    /// Its step pin's name (`PF0`), or `?N` when the dictionary has no name for it.
    pub step_pin: String,
    /// Steps with dir=1 minus steps with dir=0.
    pub position: i64,
    /// Steps taken.
    pub steps: u64,
    /// Moves (`queue_step` commands) taken.
    pub moves: u64,
    /// The clock of the last step.
    pub last_step_clock: u32,
    /// The same clock extended to 64 bits.
    pub last_step_clock64: u64,
}

/// Where one carriage of the world ended.
#[derive(Debug, Clone, PartialEq)]
pub struct CarriageReport {
    /// The stepper's name in the world (`stepper_x`).
    pub name: String,
    /// The axis.
    pub axis: String,
    /// The position, mm.
    pub position_mm: f64,
}

/// A heater of the world.
#[derive(Debug, Clone, PartialEq)]
pub struct HeaterReport {
    /// Its name.
    pub name: String,
    /// Its temperature, °C.
    pub temperature_c: f64,
    /// The duty cycle it was last driven with.
    pub duty: f64,
}

/// A fan of the world.
#[derive(Debug, Clone, PartialEq)]
pub struct FanReport {
    /// Its name.
    pub name: String,
    /// The duty cycle it was last driven with.
    pub duty: f64,
}

/// What a simulated MCU ended with.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Every stepper, by oid.
    pub steppers: Vec<StepperReport>,
    /// The world's carriages.
    pub carriages: Vec<CarriageReport>,
    /// The world's heaters.
    pub heaters: Vec<HeaterReport>,
    /// The world's fans.
    pub fans: Vec<FanReport>,
    /// The MCU clock the model reached.
    pub clock: u64,
    /// The clock of the shutdown, if any.
    pub shutdown_clock: Option<u64>,
    /// The command whose handling faulted (text, with the clock it was handled at).
    pub fault_command: Option<String>,
    /// Commands handled.
    pub commands: u64,
    /// The config CRC from `finalize_config`.
    pub config_crc: Option<u32>,
    /// The fault that stopped the model, if any.
    pub fault: Option<Fault>,
    /// Problems in the stream itself (skipped bytes, unknown ids), with their offsets.
    pub stream_problems: Vec<String>,
}

impl Report {
    /// Steps taken by all steppers.
    pub fn total_steps(&self) -> u64 {
        self.steppers.iter().map(|s| s.steps).sum()
    }

    /// The MCU clock of the last step of any stepper (64-bit).
    pub fn last_step_clock64(&self) -> u64 {
        self.steppers
            .iter()
            .map(|s| s.last_step_clock64)
            .max()
            .unwrap_or(0)
    }

    /// The report of `mcu`, naming step pins from `dict`'s `pin` enumeration (`?N` when it has
    /// no name).
    pub fn from_model(mcu: &Mcu, dict: &Dictionary, stream_problems: Vec<String>) -> Self {
        let pins = dict.enumerations.get("pin");
        let world = mcu.world();
        let pin_name = |pin: i64| {
            pins.and_then(|e| e.name_of(pin).map(str::to_owned))
                .unwrap_or_else(|| format!("?{pin}"))
        };
        Report {
            steppers: mcu
                .steppers()
                .map(|(oid, s)| StepperReport {
                    oid,
                    step_pin: pin_name(s.step_pin),
                    position: s.position,
                    steps: s.steps,
                    moves: s.moves,
                    last_step_clock: s.last_step_clock(),
                    last_step_clock64: s.last_step_clock64,
                })
                .collect(),
            carriages: world
                .carriages
                .iter()
                .map(|c| CarriageReport {
                    name: c.name.clone(),
                    axis: c.axis.clone(),
                    position_mm: c.position_mm(
                        mcu.steppers()
                            .find(|(_, s)| s.step_pin == c.step_pin)
                            .map_or(0, |(_, s)| s.position),
                    ),
                })
                .collect(),
            heaters: world
                .heaters
                .iter()
                .map(|h| HeaterReport {
                    name: h.name.clone(),
                    temperature_c: h.temperature_c,
                    duty: h.duty,
                })
                .collect(),
            fans: world
                .fans
                .iter()
                .map(|f| FanReport {
                    name: f.name.clone(),
                    duty: f.duty,
                })
                .collect(),
            clock: mcu.now(),
            shutdown_clock: mcu.fault.as_ref().and(mcu.shutdown_clock),
            fault_command: mcu.fault.as_ref().and(mcu.fault_command.clone()),
            commands: mcu.commands,
            config_crc: mcu.config_crc,
            fault: mcu.fault.clone(),
            stream_problems,
        }
    }

    /// Klipper's shutdown message, when the MCU is shut down (an unsupported command is
    /// "Invalid command", as the firmware says).
    pub fn shutdown(&self) -> Option<&'static str> {
        match self.fault {
            Some(Fault::Shutdown(why)) => Some(why),
            Some(Fault::Unsupported(_)) => Some("Invalid command"),
            None => None,
        }
    }
}
