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

use crate::model::Mcu;
use crate::report::Report;

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
    Report::from_model(&mcu, dict, problems)
}
