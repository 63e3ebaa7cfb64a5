//! gantry-proto: Klipper's MCU wire protocol, sans-IO.
//!
//! This crate will hold everything needed to speak to unmodified Klipper firmware and to Gantry's
//! simulated MCU: message blocks (length, sequence, CRC-16, sync byte), VLQ integers, the data
//! dictionary and its format strings, the identify flow, the link state machine (ACK/NAK,
//! retransmission) and clock synchronisation. It lands with the protocol issue; today it states the
//! boundary every later module keeps.
//!
//! # Invariants
//! - No I/O, no threads, no clock reads: bytes come in through `handle_input`, go out through
//!   `poll_transmit`, and time is always an argument (`now`), in the quinn-proto style.
//! - No async runtime, serial, HTTP or SQL crate in this crate's dependency tree.
//! - Never panics on any input bytes; malformed input is an error value.
