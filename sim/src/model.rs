//! The MCU's objects and command handlers.
//!
//! Objects live in the oid table that `allocate_oids` creates and the `config_*` commands fill:
//! steppers, endstops, trsyncs, digital outputs and analog inputs. Handlers are looked up by
//! message *name* and read parameters by *name*, so the model runs with whatever dictionary
//! decoded the stream. Errors are Klipper's shutdown messages ("Invalid oid type", "Can't assign
//! oid", …); the first one shuts the model down, and later commands are refused as the firmware
//! refuses them.

use gantry_proto::{MessageFormat, Value};

use crate::stepper::{Stepper, StepperFault};

/// Why the model stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// A firmware shutdown, with Klipper's message.
    Shutdown(&'static str),
    /// A command this model does not simulate yet; named so the gap is visible.
    Unsupported(String),
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Shutdown(why) => write!(f, "shutdown: {why}"),
            Fault::Unsupported(what) => write!(f, "not simulated yet: {what}"),
        }
    }
}

impl From<StepperFault> for Fault {
    fn from(f: StepperFault) -> Self {
        Fault::Shutdown(f.0)
    }
}

/// One object in the oid table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object {
    /// Allocated, not configured yet.
    Free,
    /// A stepper.
    Stepper(Stepper),
    /// An endstop on `pin`.
    Endstop {
        /// The pin's enumeration value.
        pin: i64,
    },
    /// A trigger synchroniser and the steppers it stops.
    Trsync {
        /// Oids of steppers registered with `stepper_stop_on_trigger`.
        steppers: Vec<u8>,
    },
    /// A digital or PWM output.
    DigitalOut {
        /// The pin's enumeration value.
        pin: i64,
        /// The last value (or PWM on-ticks) set.
        value: i64,
    },
    /// An analog input.
    AnalogIn {
        /// The pin's enumeration value.
        pin: i64,
    },
}

/// The simulated MCU's state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mcu {
    /// The oid table (empty until `allocate_oids`).
    pub objects: Vec<Object>,
    /// The config CRC once `finalize_config` ran.
    pub config_crc: Option<u32>,
    /// Set by the first fault.
    pub fault: Option<Fault>,
    /// Commands handled.
    pub commands: u64,
}

struct Args<'a> {
    msg: &'a MessageFormat,
    values: &'a [Value],
}

impl Args<'_> {
    fn int(&self, name: &str) -> Result<i64, Fault> {
        self.msg
            .params
            .iter()
            .zip(self.values)
            .find(|(p, _)| p.name == name)
            .and_then(|(_, v)| match v {
                Value::Int(i) => Some(*i),
                Value::Bytes(_) => None,
            })
            .ok_or_else(|| {
                Fault::Unsupported(format!("'{}' without integer {name}", self.msg.format))
            })
    }

    fn oid(&self, name: &str) -> Result<usize, Fault> {
        usize::try_from(self.int(name)?).map_err(|_| Fault::Shutdown("Invalid oid type"))
    }

    fn u32(&self, name: &str) -> Result<u32, Fault> {
        // Wire integers are 32-bit; a %i value keeps its bits.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Ok(self.int(name)? as u32)
    }
}

impl Mcu {
    /// A freshly reset MCU.
    pub fn new() -> Self {
        Self::default()
    }

    /// Handles one decoded command. After a fault, commands are refused with that fault.
    ///
    /// # Errors
    /// The fault that shut the model down (also kept in [`Mcu::fault`]).
    pub fn handle(&mut self, msg: &MessageFormat, values: &[Value]) -> Result<(), Fault> {
        if let Some(f) = &self.fault {
            return Err(f.clone());
        }
        self.commands += 1;
        let result = self.dispatch(&Args { msg, values });
        if let Err(f) = &result {
            self.fault = Some(f.clone());
        }
        result
    }

    fn dispatch(&mut self, a: &Args<'_>) -> Result<(), Fault> {
        match a.msg.name.as_str() {
            "allocate_oids" => {
                if !self.objects.is_empty() {
                    return Err(Fault::Shutdown("oids already allocated"));
                }
                let count = usize::try_from(a.int("count")?).unwrap_or(0);
                self.objects = vec![Object::Free; count];
            }
            "finalize_config" => {
                if self.config_crc.is_some() {
                    return Err(Fault::Shutdown("Already finalized"));
                }
                self.config_crc = Some(a.u32("crc")?);
            }
            "config_stepper" => {
                let s = Stepper::new(a.int("step_pin")?, a.int("dir_pin")?);
                self.assign(a.oid("oid")?, Object::Stepper(s))?;
            }
            "config_endstop" => {
                self.assign(a.oid("oid")?, Object::Endstop { pin: a.int("pin")? })?
            }
            "config_trsync" => self.assign(
                a.oid("oid")?,
                Object::Trsync {
                    steppers: Vec::new(),
                },
            )?,
            "config_digital_out" => {
                let object = Object::DigitalOut {
                    pin: a.int("pin")?,
                    value: a.int("value")?,
                };
                self.assign(a.oid("oid")?, object)?;
            }
            "config_analog_in" => {
                self.assign(a.oid("oid")?, Object::AnalogIn { pin: a.int("pin")? })?
            }
            "queue_step" => {
                let (interval, count, add) = (a.u32("interval")?, a.int("count")?, a.int("add")?);
                let count =
                    u16::try_from(count).map_err(|_| Fault::Shutdown("Invalid count parameter"))?;
                let add =
                    i16::try_from(add).map_err(|_| Fault::Shutdown("Command parser error"))?;
                self.stepper(a.oid("oid")?)?
                    .queue_step(interval, count, add)?;
            }
            "set_next_step_dir" => {
                let dir = a.int("dir")? != 0;
                self.stepper(a.oid("oid")?)?.set_next_dir(dir);
            }
            "reset_step_clock" => {
                let clock = a.u32("clock")?;
                self.stepper(a.oid("oid")?)?.reset_step_clock(clock);
            }
            "stepper_stop_on_trigger" => {
                let stepper = a.oid("oid")?;
                self.stepper(stepper)?;
                match self.objects.get_mut(a.oid("trsync_oid")?) {
                    Some(Object::Trsync { steppers }) => {
                        // Oids are bytes on the wire; `oid` came from one.
                        #[allow(clippy::cast_possible_truncation)]
                        steppers.push(stepper as u8);
                    }
                    _ => return Err(Fault::Shutdown("Invalid oid type")),
                }
            }
            "trsync_start" | "trsync_set_timeout" => {
                // Recorded streams cannot answer trsync_state, so a replay never lets a trsync
                // time out (see `replay`); the live front will.
                self.expect(a.oid("oid")?, |o| matches!(o, Object::Trsync { .. }))?;
            }
            "trsync_trigger" => {
                let oid = a.oid("oid")?;
                let steppers = match self.objects.get(oid) {
                    Some(Object::Trsync { steppers }) => steppers.clone(),
                    _ => return Err(Fault::Shutdown("Invalid oid type")),
                };
                for s in steppers {
                    if let Some(Object::Stepper(st)) = self.objects.get_mut(usize::from(s)) {
                        st.stop();
                    }
                }
            }
            "endstop_home" | "endstop_query_state" => {
                self.expect(a.oid("oid")?, |o| matches!(o, Object::Endstop { .. }))?;
            }
            "queue_digital_out" | "update_digital_out" => {
                let key = if a.msg.name == "queue_digital_out" {
                    "on_ticks"
                } else {
                    "value"
                };
                let new = a.int(key)?;
                match self.objects.get_mut(a.oid("oid")?) {
                    Some(Object::DigitalOut { value, .. }) => *value = new,
                    _ => return Err(Fault::Shutdown("Invalid oid type")),
                }
            }
            "set_digital_out_pwm_cycle" => {
                self.expect(a.oid("oid")?, |o| matches!(o, Object::DigitalOut { .. }))?;
            }
            "query_analog_in" => {
                self.expect(a.oid("oid")?, |o| matches!(o, Object::AnalogIn { .. }))?;
            }
            "emergency_stop" => return Err(Fault::Shutdown("Command request")),
            // Link-level queries change no state here; the live front answers them.
            "identify" | "get_config" | "get_clock" | "get_uptime" | "clear_shutdown" => {}
            other => return Err(Fault::Unsupported(other.to_owned())),
        }
        Ok(())
    }

    fn assign(&mut self, oid: usize, object: Object) -> Result<(), Fault> {
        match self.objects.get_mut(oid) {
            Some(slot @ Object::Free) => {
                *slot = object;
                Ok(())
            }
            _ => Err(Fault::Shutdown("Can't assign oid")),
        }
    }

    fn expect(&self, oid: usize, is: impl Fn(&Object) -> bool) -> Result<(), Fault> {
        match self.objects.get(oid) {
            Some(o) if is(o) => Ok(()),
            _ => Err(Fault::Shutdown("Invalid oid type")),
        }
    }

    fn stepper(&mut self, oid: usize) -> Result<&mut Stepper, Fault> {
        match self.objects.get_mut(oid) {
            Some(Object::Stepper(s)) => Ok(s),
            _ => Err(Fault::Shutdown("Invalid oid type")),
        }
    }

    /// The steppers with their oids.
    pub fn steppers(&self) -> impl Iterator<Item = (usize, &Stepper)> {
        self.objects
            .iter()
            .enumerate()
            .filter_map(|(oid, o)| match o {
                Object::Stepper(s) => Some((oid, s)),
                _ => None,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(mcu: &mut Mcu, format: &str, values: &[i64]) -> Result<(), Fault> {
        let msg = MessageFormat::parse_message(9, format).expect("valid");
        let values: Vec<Value> = values.iter().map(|v| Value::Int(*v)).collect();
        mcu.handle(&msg, &values)
    }

    #[test]
    fn config_then_motion() {
        let mut m = Mcu::new();
        cmd(&mut m, "allocate_oids count=%c", &[3]).expect("ok");
        cmd(
            &mut m,
            "config_stepper oid=%c step_pin=%c dir_pin=%c invert_step=%c step_pulse_ticks=%u",
            &[1, 5, 6, 0, 32],
        )
        .expect("ok");
        cmd(&mut m, "finalize_config crc=%u", &[1234]).expect("ok");
        cmd(&mut m, "set_next_step_dir oid=%c dir=%c", &[1, 1]).expect("ok");
        cmd(
            &mut m,
            "queue_step oid=%c interval=%u count=%hu add=%hi",
            &[1, 100, 4, 10],
        )
        .expect("ok");
        let (oid, s) = m.steppers().next().expect("a stepper");
        assert_eq!((oid, s.position, s.last_step_clock), (1, 4, 460));
        assert_eq!(m.config_crc, Some(1234));
    }

    #[test]
    fn klipper_shutdowns() {
        let mut m = Mcu::new();
        cmd(&mut m, "allocate_oids count=%c", &[2]).expect("ok");
        assert_eq!(
            cmd(
                &mut m,
                "queue_step oid=%c interval=%u count=%hu add=%hi",
                &[0, 1, 1, 0]
            ),
            Err(Fault::Shutdown("Invalid oid type"))
        );
        assert_eq!(
            cmd(&mut m, "get_clock", &[]),
            Err(Fault::Shutdown("Invalid oid type")),
            "after a shutdown every command is refused"
        );
        let mut m = Mcu::new();
        cmd(&mut m, "allocate_oids count=%c", &[1]).expect("ok");
        assert_eq!(
            cmd(&mut m, "config_trsync oid=%c", &[4]),
            Err(Fault::Shutdown("Can't assign oid"))
        );
        let mut m = Mcu::new();
        assert_eq!(
            cmd(&mut m, "spi_send oid=%c", &[0]),
            Err(Fault::Unsupported("spi_send".into()))
        );
    }
}
