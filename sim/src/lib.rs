//! gantry-sim: a simulated Klipper MCU that speaks the real wire protocol.
//!
//! The simulator is a pure model of a Klipper microcontroller — its data dictionary, its command
//! handlers (steppers, endstops, digital out, analog in, heaters) and a small physical world —
//! driven by bytes and virtual clock ticks, plus a pseudo-terminal/TCP front so Gantry's host and
//! real klippy can both talk to it. It lands with the protocol issue.
//!
//! # Invariants
//! - Depends on `gantry-proto` and nothing else of Gantry's: the simulator agrees with the host only
//!   through the wire protocol, never by sharing the planner.
//! - The model does no I/O and reads no clock; only the front (pty/TCP) touches the operating system.
