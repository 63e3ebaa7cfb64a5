//! `gantry sim replay`: a recorded host→MCU stream played through the model.
//!
//! The stream is decoded with the dictionary it was made for (Klipper batch mode writes one with
//! `-d`), each command goes to [`Mcu::handle`] in order, and the report says where every stepper
//! ended: its position in raw dir-bit steps (Klipper's `stepper_position`), its step and move
//! counts, its last step clock — keyed by the step pin's name as the dictionary enumerates it —
//! and, with a world, where its carriages, heaters and fans ended.
//!
//! A recording has no arrival times and cannot answer the MCU, so the model runs in
//! [`Mode::Replay`](crate::model::Mode): each move is walked as soon as it is queued, and timing
//! that depends on when a command arrived ("Timer too close", "Stepper too far in past", the move
//! queue's size) is not checked. Nothing extends a trsync (Klipper's host renews
//! `trsync_set_timeout` as `trsync_state` reports arrive), so trsyncs never time out, endstops
//! are never sampled — the moves play out in full, as batch mode planned them — and analog inputs
//! are not sampled. Timed outputs run in clock order, as far behind the stream's latest clock as
//! a host may schedule ahead (2^30 ticks), with their `max_duration` rules; the world's heaters
//! and fans follow them.

use gantry_proto::Dictionary;
use gantry_proto::dump::{self, Decoded};

use crate::model::{Mcu, McuConfig};
use crate::report::Report;
use crate::world::World;

/// How far behind the stream's latest clock timed events run: a host keeps every clock it sends
/// within 2^31 ticks of the MCU's, so events this far back are certainly due.
const LAG_TICKS: u64 = 1 << 30;

/// Replays `data` (decoded with `dict`) through a fresh model with no world.
pub fn replay(dict: &Dictionary, data: &[u8]) -> Report {
    let freq = dict.clock_freq().unwrap_or(1.0);
    replay_in(dict, data, World::empty(freq))
}

/// Replays `data` (decoded with `dict`) through a fresh model wired to `world`.
pub fn replay_in(dict: &Dictionary, data: &[u8], world: World) -> Report {
    let freq = dict.clock_freq().unwrap_or(1.0);
    let mut mcu = Mcu::new(McuConfig::replay(freq), world);
    let mut problems = Vec::new();
    dump::decode(dict, data, |item| match item {
        Decoded::Message { format, values } => {
            // The first fault is kept in the model; the stream is still read to the end so its
            // own problems are reported too.
            let _ = mcu.handle(format, values);
            let horizon = mcu.reference_clock().saturating_sub(LAG_TICKS);
            if horizon > mcu.now() {
                mcu.advance(horizon);
            }
        }
        Decoded::Unknown { id, .. } => problems.push(format!("unknown message id {id}")),
        Decoded::Invalid { offset, reason } => problems.push(format!("byte {offset}: {reason}")),
    });
    mcu.advance(mcu.reference_clock());
    Report::from_model(&mcu, dict, problems)
}
