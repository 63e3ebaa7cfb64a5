//! `gantry sim replay`: a recorded host→MCU stream played through the model.
//!
//! The stream is decoded with the dictionary it was made for (Klipper batch mode writes one with
//! `-d`), each command goes to [`Mcu::handle`] in order, and the report says where every stepper
//! ended: its position in raw dir-bit steps (Klipper's `stepper_position`), its step and move
//! counts, its last step clock — keyed by the step pin's name as the dictionary enumerates it.
//!
//! A recorded stream cannot answer the MCU: nothing extends a trsync (Klipper's host renews
//! `trsync_set_timeout` as `trsync_state` reports arrive), so the replay never lets a trsync time
//! out, and endstops never trigger — the moves play out in full, as batch mode planned them.

use gantry_proto::Dictionary;
use gantry_proto::dump::{self, Decoded};

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

/// What a replay found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Every stepper, by oid.
    pub steppers: Vec<StepperReport>,
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
}

/// Replays `data` (decoded with `dict`) through a fresh model.
pub fn replay(dict: &Dictionary, data: &[u8]) -> Report {
    let mut mcu = Mcu::new();
    let mut problems = Vec::new();
    dump::decode(dict, data, |item| match item {
        Decoded::Message { format, values } => {
            // The first fault is kept in the model; the stream is still read to the end so its
            // own problems are reported too.
            let _ = mcu.handle(format, values);
        }
        Decoded::Unknown { id, .. } => problems.push(format!("unknown message id {id}")),
        Decoded::Invalid { offset, reason } => problems.push(format!("byte {offset}: {reason}")),
    });
    let pin_name = |pin: i64| {
        dict.enumerations
            .get("pin")
            .and_then(|e| e.name_of(pin).map(str::to_owned))
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
                last_step_clock: s.last_step_clock,
                last_step_clock64: s.last_step_clock64,
            })
            .collect(),
        commands: mcu.commands,
        config_crc: mcu.config_crc,
        fault: mcu.fault,
        stream_problems: problems,
    }
}
