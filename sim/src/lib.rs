//! gantry-sim: a simulated Klipper MCU that speaks the real wire protocol.
//!
//! The simulator is a pure model of a Klipper microcontroller driven by messages and clock ticks,
//! with fronts that feed it: today [`replay`], which plays a recorded host→MCU stream (such as
//! Klipper batch mode's `-o` output) through the model and reports where every stepper ended.
//! The link front (the sim's own dictionary, identify, a pseudo-terminal and TCP port, the
//! physical world of heaters and endstops) lands next, on `gantry_proto::mcu_link`.
//!
//! - [`stepper`]: one stepper's queue semantics (`queue_step`, `set_next_step_dir`,
//!   `reset_step_clock`) and its position as the MCU counts it.
//! - [`model`]: the MCU's objects by oid and the command handlers, keyed by message name so any
//!   firmware build's dictionary can drive it.
//! - [`replay`]: a recorded stream through the model, and the report.
//!
//! # Invariants
//! - Depends on `gantry-proto` and nothing else of Gantry's: the simulator agrees with the host only
//!   through the wire protocol, never by sharing the planner.
//! - The model does no I/O and reads no clock; only fronts touch the operating system.
//! - A command the model does not simulate is an error in the report, never silently skipped.

pub mod model;
pub mod replay;
pub mod stepper;
