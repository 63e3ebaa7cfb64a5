//! The simulated MCU behind a link: bytes in, bytes out, at a given MCU clock.
//!
//! [`SimMcu`] puts the firmware's link rules (`gantry_proto::mcu_link`) in front of the
//! [`Mcu`] model and its [`World`], and answers what the link layer itself answers on real
//! firmware: `identify` from the compressed dictionary, `get_config`, `get_clock` and
//! `get_uptime`. Every response goes out in its own block, before the block's ACK, as Klipper
//! firmware sends them. Like firmware, the sim says `starting` when it boots (its first poll) and
//! sends `stats` every 5 s of MCU time; its `count` is the number of polls in the period, and
//! `sum`/`sumsq` (task time on real firmware) are 0 because the sim does not measure load.
//!
//! Each [`SimMcu::poll`] first runs the model's timers up to the clock (steppers, endstops,
//! trsyncs, outputs, analog inputs, the world) and sends what they report (`trsync_state`,
//! `analog_in_state`, `shutdown`), then runs the complete blocks that arrived. A fault shuts the
//! MCU down: it reports `shutdown clock static_string_id` once, and then answers every command
//! that is not allowed in shutdown with `is_shutdown`. Time is an argument (the MCU clock in
//! ticks); nothing here reads a clock.

use std::sync::Arc;

use gantry_proto::mcu_link::McuLink;
use gantry_proto::{Dictionary, Value, vlq};

use crate::dictionary::{self, AnalogInFormat};
use crate::model::{Fault, Mcu, McuConfig, Response};
use crate::report::Report;
use crate::sched::clock32;
use crate::world::World;

/// The period of unsolicited `stats` reports: 5 s of MCU clock.
const STATS_PERIOD_TICKS: u64 = 5 * dictionary::CLOCK_FREQ as u64;

/// Commands a shut-down MCU still runs.
const ALLOWED_IN_SHUTDOWN: &[&str] = &[
    "identify",
    "get_config",
    "get_clock",
    "get_uptime",
    "emergency_stop",
    "clear_shutdown",
    "reset",
];

/// A simulated MCU with its link.
#[derive(Debug, Clone)]
pub struct SimMcu {
    link: McuLink,
    model: Mcu,
    /// Shared so a command's format can be borrowed while the MCU changes (no clone per command).
    dict: Arc<Dictionary>,
    identify_data: Vec<u8>,
    booted: bool,
    next_stats_clock: u64,
    polls: u32,
}

impl Default for SimMcu {
    fn default() -> Self {
        Self::new()
    }
}

impl SimMcu {
    /// A freshly reset simulated MCU in the default world.
    pub fn new() -> Self {
        let dict = dictionary::parsed();
        // The default world is checked against the sim's dictionary by the unit tests.
        let world = World::default_for(&dict)
            .unwrap_or_else(|_| World::empty(f64::from(dictionary::CLOCK_FREQ)));
        Self::with_world(world)
    }

    /// A freshly reset simulated MCU in `world` (wired with the sim's pin names, see
    /// [`dictionary::parsed`]).
    pub fn with_world(world: World) -> Self {
        Self::with_format(world, AnalogInFormat::Current)
    }

    /// A simulated MCU whose dictionary declares Klipper's older or current analog-in formats.
    pub fn with_format(world: World, format: AnalogInFormat) -> Self {
        Self {
            link: McuLink::new(),
            model: Mcu::new(McuConfig::sim(), world),
            dict: Arc::new(dictionary::parsed_with(format)),
            identify_data: dictionary::identify_data_with(format),
            booted: false,
            next_stats_clock: 0,
            polls: 0,
        }
    }

    /// The sim's dictionary.
    pub fn dictionary(&self) -> &Dictionary {
        &self.dict
    }

    /// The model's state (steppers, oids, config CRC, world).
    pub fn model(&self) -> &Mcu {
        &self.model
    }

    /// The model, to inject faults into its world.
    pub fn model_mut(&mut self) -> &mut Mcu {
        &mut self.model
    }

    /// Where the MCU stands now.
    pub fn report(&self) -> Report {
        Report::from_model(&self.model, &self.dict, Vec::new())
    }

    /// The shutdown reason, if the MCU is shut down.
    pub fn shutdown_reason(&self) -> Option<&'static str> {
        self.model.shutdown_reason()
    }

    /// Takes bytes from the host.
    pub fn handle_input(&mut self, bytes: &[u8]) {
        self.link.handle_input(bytes);
    }

    /// Runs the timers due by MCU clock `clock` and every complete block, and writes the
    /// replies to `out`.
    pub fn poll(&mut self, clock: u64, out: &mut Vec<u8>) {
        self.polls = self.polls.saturating_add(1);
        if !self.booted {
            self.booted = true;
            self.next_stats_clock = clock + STATS_PERIOD_TICKS;
            self.respond("starting", &[], out);
        } else if clock >= self.next_stats_clock {
            self.next_stats_clock = clock + STATS_PERIOD_TICKS;
            let count = std::mem::take(&mut self.polls);
            self.respond(
                "stats",
                &[
                    ("count", Value::Int(i64::from(count))),
                    ("sum", Value::Int(0)),
                    ("sumsq", Value::Int(0)),
                ],
                out,
            );
        }
        self.model.advance(clock);
        self.flush_responses(out);
        while let Some(payload) = self.link.poll_block(out) {
            let mut pos = 0;
            while pos < payload.len() {
                let used = self.run_one(&payload[pos..], clock, out);
                self.flush_responses(out);
                match used {
                    Some(used) => pos += used,
                    None => break,
                }
            }
            if !self.booted {
                // `reset` rebooted the board mid-block: nothing is acknowledged.
                break;
            }
            self.link.ack(out);
        }
    }

    /// Runs the message at the front of `bytes`; returns its length, or `None` when the rest of
    /// the block cannot be read (the MCU has shut down).
    fn run_one(&mut self, bytes: &[u8], clock: u64, out: &mut Vec<u8>) -> Option<usize> {
        let Ok((raw_id, id_len)) = vlq::decode(bytes) else {
            self.model.shutdown("Command parser error");
            return None;
        };
        let dict = Arc::clone(&self.dict);
        let Some(format) = dict.message(raw_id.cast_signed()) else {
            self.model.shutdown("Invalid command");
            return None;
        };
        let Ok((values, used)) = format.decode(&bytes[id_len..]) else {
            self.model.shutdown("Command parser error");
            return None;
        };
        if let Some(reason) = self.model.shutdown_reason()
            && !ALLOWED_IN_SHUTDOWN.contains(&format.name.as_str())
        {
            let id = dictionary::static_string_id(reason).unwrap_or(0);
            self.respond(
                "is_shutdown",
                &[("static_string_id", Value::Int(i64::from(id)))],
                out,
            );
            return Some(id_len + used);
        }
        let int = |i: usize| match values.get(i) {
            Some(Value::Int(v)) => *v,
            _ => 0,
        };
        let clock_low = i64::from(clock32(clock));
        match format.name.as_str() {
            "identify" => {
                let start = usize::try_from(int(0))
                    .unwrap_or(usize::MAX)
                    .min(self.identify_data.len());
                let end = start
                    .saturating_add(usize::try_from(int(1)).unwrap_or(0))
                    .min(self.identify_data.len());
                let data = self.identify_data[start..end].to_vec();
                self.respond(
                    "identify_response",
                    &[("offset", Value::Int(int(0))), ("data", Value::Bytes(data))],
                    out,
                );
            }
            "get_config" => {
                let crc = self.model.config_crc;
                let values = [
                    ("is_config", Value::Int(i64::from(crc.is_some()))),
                    ("crc", Value::Int(i64::from(crc.unwrap_or(0)))),
                    (
                        "is_shutdown",
                        Value::Int(i64::from(self.model.is_shutdown())),
                    ),
                    ("move_count", Value::Int(i64::from(self.model.move_count()))),
                ];
                self.respond("config", &values, out);
            }
            "get_clock" => self.respond("clock", &[("clock", Value::Int(clock_low))], out),
            "get_uptime" => {
                let high = i64::from(clock32(clock >> 32));
                self.respond(
                    "uptime",
                    &[("high", Value::Int(high)), ("clock", Value::Int(clock_low))],
                    out,
                );
            }
            "clear_shutdown" => self.model.clear_shutdown(),
            "reset" => {
                // The board reboots: a fresh link (sequence 0) that says `starting` again.
                self.model.reset();
                self.link = McuLink::new();
                self.booted = false;
                return None;
            }
            _ => match self.model.handle(format, &values) {
                Ok(()) | Err(Fault::Shutdown(_) | Fault::Unsupported(_)) => {}
            },
        }
        Some(id_len + used)
    }

    /// Sends what the model queued.
    fn flush_responses(&mut self, out: &mut Vec<u8>) {
        let responses: Vec<Response> = self.model.take_responses().collect();
        for r in responses {
            self.send(&r, out);
        }
    }

    fn send(&self, r: &Response, out: &mut Vec<u8>) {
        let int = |v: i64| Value::Int(v);
        match r {
            Response::TrsyncState {
                oid,
                can_trigger,
                trigger_reason,
                clock,
            } => self.respond(
                "trsync_state",
                &[
                    ("oid", int(i64::from(*oid))),
                    ("can_trigger", int(i64::from(*can_trigger))),
                    ("trigger_reason", int(i64::from(*trigger_reason))),
                    ("clock", int(i64::from(*clock))),
                ],
                out,
            ),
            Response::EndstopState {
                oid,
                homing,
                next_clock,
                pin_value,
            } => self.respond(
                "endstop_state",
                &[
                    ("oid", int(i64::from(*oid))),
                    ("homing", int(i64::from(*homing))),
                    ("next_clock", int(i64::from(*next_clock))),
                    ("pin_value", int(i64::from(*pin_value))),
                ],
                out,
            ),
            Response::StepperPosition { oid, pos } => self.respond(
                "stepper_position",
                &[("oid", int(i64::from(*oid))), ("pos", int(i64::from(*pos)))],
                out,
            ),
            Response::AnalogInState {
                oid,
                next_clock,
                values,
            } => {
                let batched = self
                    .dict
                    .response("analog_in_state")
                    .is_some_and(|f| f.params.iter().any(|p| p.name == "values"));
                let head = [
                    ("oid", int(i64::from(*oid))),
                    ("next_clock", int(i64::from(*next_clock))),
                ];
                if batched {
                    let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                    let [a, b] = head;
                    self.respond(
                        "analog_in_state",
                        &[a, b, ("values", Value::Bytes(bytes))],
                        out,
                    );
                } else {
                    for v in values {
                        let [a, b] = head.clone();
                        let value = ("value", int(i64::from(*v)));
                        self.respond("analog_in_state", &[a, b, value], out);
                    }
                }
            }
            Response::Shutdown { clock, reason } => {
                let id = dictionary::static_string_id(reason).unwrap_or(0);
                self.respond(
                    "shutdown",
                    &[
                        ("clock", int(i64::from(*clock))),
                        ("static_string_id", int(i64::from(id))),
                    ],
                    out,
                );
            }
        }
    }

    /// Encodes response `name` with its parameters by name (a parameter not given is 0) and
    /// sends it in its own block.
    fn respond(&self, name: &str, values: &[(&str, Value)], out: &mut Vec<u8>) {
        let Some(format) = self.dict.response(name) else {
            return;
        };
        let ordered: Vec<Value> = format
            .params
            .iter()
            .map(|p| {
                values
                    .iter()
                    .find(|(n, _)| *n == p.name)
                    .map_or(Value::Int(0), |(_, v)| v.clone())
            })
            .collect();
        let mut message = Vec::new();
        if format.encode(&ordered, &mut message).is_ok() {
            // Every response fits a block: the largest is an analog_in_state of 48 data bytes.
            let _ = self.link.respond(&message, out);
        }
    }
}
