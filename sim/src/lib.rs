//! gantry-sim: a simulated Klipper MCU that speaks the real wire protocol.
//!
//! The simulator is a pure model of a Klipper microcontroller driven by messages and clock ticks,
//! with fronts that feed it: today [`replay`], which plays a recorded host→MCU stream (such as
//! Klipper batch mode's `-o` output) through the model and reports where every stepper ended.
//! [`runtime`] puts the model behind the firmware's link rules with the sim's own dictionary, and
//! `pty` serves it in real time on a pseudo-terminal; the physical world of heaters and endstops
//! lands next.
//!
//! - [`stepper`]: one stepper's queue semantics (`queue_step`, `set_next_step_dir`,
//!   `reset_step_clock`) and its position as the MCU counts it.
//! - [`model`]: the MCU's objects by oid and the command handlers, keyed by message name so any
//!   firmware build's dictionary can drive it.
//! - [`replay`]: a recorded stream through the model.
//! - [`report`]: where a simulated MCU ended, for both fronts.
//! - [`dictionary`]: the `gantry-sim` board's dictionary (Klipper's formats, the sim's ids).
//! - [`runtime`]: the model behind the firmware's link rules, answering identify, config and
//!   clock queries at an MCU clock given as an argument.
//! - [`faulty`]: a wire that delays, corrupts and drops bytes, for fault tests.
//! - `pty` (Unix): the real-time front behind a pseudo-terminal.
//!
//! # Invariants
//! - Depends on `gantry-proto` and nothing else of Gantry's: the simulator agrees with the host only
//!   through the wire protocol, never by sharing the planner.
//! - The model and the runtime do no I/O and read no clock; only the fronts (`pty`) touch the
//!   operating system.
//! - A command the model does not simulate is an error in the report, never silently skipped.

pub mod dictionary;
pub mod faulty;
pub mod model;
#[cfg(unix)]
pub mod pty;
pub mod replay;
pub mod report;
pub mod runtime;
pub mod stepper;
