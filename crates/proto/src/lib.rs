//! gantry-proto: Klipper's MCU wire protocol, sans-IO.
//!
//! Everything needed to speak to unmodified Klipper firmware and to Gantry's simulated MCU, as
//! pure functions and state machines over byte slices:
//!
//! - [`crc`]: the CRC-16 Klipper puts on every block (CRC-16/MCRF4XX, sent high byte first).
//! - [`vlq`]: Klipper's variable-length integers, with their sign rule on the first byte.
//! - [`block`]: message blocks — length, sequence nibble, payload, CRC, sync byte — and the
//!   receiver's checks that decide between "wait for more", "a block" and "skip these bytes".
//! - [`msgformat`]: one message's format string (`queue_step oid=%c interval=%u …`), encoding and
//!   decoding of its parameters, and Klipper's text form of a decoded message.
//! - [`dictionary`]: the data dictionary a firmware build reports through `identify`: commands,
//!   responses, output formats, enumerations (with ranges) and constants.
//! - [`dump`]: a whole host→MCU stream decoded line by line, as Klipper's `parsedump.py` prints.
//!
//! - [`identify`]: the identify flow that downloads the dictionary in 40-byte chunks.
//! - [`link`]: the host's link state machine — sequence adoption, ACK/NAK, retransmission with
//!   Klipper's timeout rules, the in-flight window — driven by bytes and time.
//! - [`mcu_link`]: the MCU's side of the same rules, for the simulated MCU.
//! - [`clocksync`]: the MCU clock against host time (Klipper's weighted regression with outlier
//!   filtering), 32→64-bit clock extension, print time ↔ clock.
//! - [`session`]: the host's whole session with one MCU — link, identify, clock synchronisation,
//!   queries asked again until answered, and the transmit schedule of timed commands
//!   (`min_clock`/`req_clock`) — as one state machine.
//!
//! # Invariants
//! - No I/O, no threads, no clock reads: bytes come in as slices and go out into caller buffers;
//!   time, where it matters, is an argument.
//! - No async runtime, serial, HTTP or SQL crate in this crate's dependency tree.
//! - Never panics on any input bytes; malformed input is an error value (property-tested).

pub mod block;
pub mod clocksync;
pub mod crc;
pub mod dictionary;
pub mod dump;
pub mod identify;
pub mod link;
pub mod mcu_link;
pub mod msgformat;
pub mod session;
pub mod vlq;

pub use dictionary::Dictionary;
pub use msgformat::{MessageFormat, ParamType, Value};
