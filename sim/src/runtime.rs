//! The simulated MCU behind a link: bytes in, bytes out, at a given MCU clock.
//!
//! [`SimMcu`] puts the firmware's link rules (`gantry_proto::mcu_link`) in front of the
//! [`Mcu`](crate::model::Mcu) model and answers what the link layer itself answers on real
//! firmware: `identify` from the compressed dictionary, `get_config`, `get_clock` and
//! `get_uptime`. Every response goes out in its own block, before the block's ACK, as Klipper
//! firmware sends them. Like firmware, the sim says `starting` when it boots (its first poll) and
//! sends `stats` every 5 s of MCU time; its `count` is the number of polls in the period, and
//! `sum`/`sumsq` (task time on real firmware) are 0 because the sim does not measure load. A fault shuts the MCU down: it reports `shutdown clock static_string_id`
//! once, and then answers every command that is not allowed in shutdown with `is_shutdown`.
//! Time is an argument (the MCU clock in ticks); nothing here reads a clock.

use std::sync::Arc;

use gantry_proto::mcu_link::McuLink;
use gantry_proto::{Dictionary, Value, vlq};

use crate::dictionary::{self, MOVE_COUNT};
use crate::model::{Fault, Mcu};
use crate::report::Report;

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
];

/// A simulated MCU with its link.
#[derive(Debug, Clone)]
pub struct SimMcu {
    link: McuLink,
    model: Mcu,
    /// Shared so a command's format can be borrowed while the MCU changes (no clone per command).
    dict: Arc<Dictionary>,
    identify_data: Vec<u8>,
    shutdown: Option<u16>,
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
    /// A freshly reset simulated MCU.
    pub fn new() -> Self {
        let json = dictionary::json();
        // The dictionary is generated from constants and parses; the unit tests check it.
        let dict = Arc::new(Dictionary::from_json(&json).unwrap_or_default());
        Self {
            link: McuLink::new(),
            model: Mcu::new(),
            dict,
            identify_data: dictionary::identify_data(),
            shutdown: None,
            booted: false,
            next_stats_clock: 0,
            polls: 0,
        }
    }

    /// The sim's dictionary.
    pub fn dictionary(&self) -> &Dictionary {
        &self.dict
    }

    /// The model's state (steppers, oids, config CRC).
    pub fn model(&self) -> &Mcu {
        &self.model
    }

    /// Where the MCU stands now; a link-level shutdown (an unknown command, say) counts as the
    /// fault when the model itself has none.
    pub fn report(&self) -> Report {
        let mut report = Report::from_model(&self.model, &self.dict, Vec::new());
        if report.fault.is_none() {
            report.fault = self.shutdown_reason().map(Fault::Shutdown);
        }
        report
    }

    /// The shutdown reason, if the MCU is shut down.
    pub fn shutdown_reason(&self) -> Option<&'static str> {
        self.shutdown.and_then(|id| {
            dictionary::SHUTDOWN_STRINGS
                .get(usize::from(id) - 2)
                .copied()
        })
    }

    /// Takes bytes from the host.
    pub fn handle_input(&mut self, bytes: &[u8]) {
        self.link.handle_input(bytes);
    }

    /// Runs every complete block at MCU clock `clock` and writes the replies to `out`.
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
                &[Value::Int(i64::from(count)), Value::Int(0), Value::Int(0)],
                out,
            );
        }
        while let Some(payload) = self.link.poll_block(out) {
            let mut pos = 0;
            while pos < payload.len() {
                match self.run_one(&payload[pos..], clock, out) {
                    Some(used) => pos += used,
                    None => break,
                }
            }
            self.link.ack(out);
        }
    }

    /// Runs the message at the front of `bytes`; returns its length, or `None` when the rest of
    /// the block cannot be read (the MCU has shut down).
    fn run_one(&mut self, bytes: &[u8], clock: u64, out: &mut Vec<u8>) -> Option<usize> {
        let Ok((raw_id, id_len)) = vlq::decode(bytes) else {
            self.fail("Command parser error", clock, out);
            return None;
        };
        let dict = Arc::clone(&self.dict);
        let Some(format) = dict.message(raw_id.cast_signed()) else {
            self.fail("Invalid command", clock, out);
            return None;
        };
        let Ok((values, used)) = format.decode(&bytes[id_len..]) else {
            self.fail("Command parser error", clock, out);
            return None;
        };
        if let Some(id) = self.shutdown
            && !ALLOWED_IN_SHUTDOWN.contains(&format.name.as_str())
        {
            self.respond("is_shutdown", &[Value::Int(i64::from(id))], out);
            return Some(id_len + used);
        }
        let int = |i: usize| match values.get(i) {
            Some(Value::Int(v)) => *v,
            _ => 0,
        };
        let clock32 = i64::from(clock as u32);
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
                    &[Value::Int(int(0)), Value::Bytes(data)],
                    out,
                );
            }
            "get_config" => {
                let crc = self.model.config_crc;
                let values = [
                    Value::Int(i64::from(crc.is_some())),
                    Value::Int(i64::from(crc.unwrap_or(0))),
                    Value::Int(i64::from(self.shutdown.is_some())),
                    Value::Int(i64::from(MOVE_COUNT)),
                ];
                self.respond("config", &values, out);
            }
            "get_clock" => self.respond("clock", &[Value::Int(clock32)], out),
            "get_uptime" => {
                self.respond(
                    "uptime",
                    &[
                        Value::Int(i64::from((clock >> 32) as u32)),
                        Value::Int(clock32),
                    ],
                    out,
                );
            }
            "clear_shutdown" => {
                if self.shutdown.take().is_none() {
                    self.fail("Shutdown cleared when not shutdown", clock, out);
                } else {
                    self.model.fault = None;
                }
            }
            _ => match self.model.handle(format, &values) {
                Ok(()) => {}
                Err(Fault::Shutdown(why)) => self.fail(why, clock, out),
                Err(Fault::Unsupported(_)) => self.fail("Invalid command", clock, out),
            },
        }
        Some(id_len + used)
    }

    fn fail(&mut self, why: &'static str, clock: u64, out: &mut Vec<u8>) {
        if self.shutdown.is_some() {
            return;
        }
        let id = dictionary::static_string_id(why).unwrap_or(0);
        self.shutdown = Some(id);
        let clock32 = i64::from(clock as u32);
        self.respond(
            "shutdown",
            &[Value::Int(clock32), Value::Int(i64::from(id))],
            out,
        );
    }

    fn respond(&self, name: &str, values: &[Value], out: &mut Vec<u8>) {
        let Some(format) = self.dict.response(name) else {
            return;
        };
        let mut message = Vec::new();
        if format.encode(values, &mut message).is_ok() {
            // Every response fits a block: the largest is an identify_response of 40 bytes.
            let _ = self.link.respond(&message, out);
        }
    }
}
