//! gantry-sim: a simulated Klipper MCU that speaks the real wire protocol.
//!
//! The simulator is a pure model of a Klipper microcontroller driven by messages and an MCU clock
//! given as an argument, wired to a small physical [`world`] (carriages with endstops, heaters
//! with thermistors, fans), with fronts that feed it: [`replay`] plays a recorded host→MCU stream
//! (such as Klipper batch mode's `-o` output) through the model and reports where everything
//! ended; [`runtime`] puts the model behind the firmware's link rules with the sim's own
//! dictionary, and `pty` and [`tcp`] serve it in real time.
//!
//! - [`stepper`]: one stepper's move queue, every step walked at its exact clock, and its
//!   position as the MCU counts it.
//! - [`sched`]: the MCU's timer list on a 64-bit clock; widening 32-bit wire clocks.
//! - [`objects`]: endstops, trsyncs, digital outputs and analog inputs.
//! - [`model`]: the oid table, the command handlers (keyed by message name so any firmware
//!   build's dictionary can drive it), the timers and Klipper's shutdowns and timing faults.
//! - [`world`] and [`thermistor`]: the printer around the MCU, from a TOML file.
//! - [`replay`]: a recorded stream through the model.
//! - [`report`]: where a simulated MCU ended, for every front.
//! - [`dictionary`]: the `gantry-sim` board's dictionary (Klipper's formats, the sim's ids).
//! - [`runtime`]: the model behind the firmware's link rules, answering identify, config and
//!   clock queries at an MCU clock given as an argument.
//! - [`faulty`]: a wire that delays, corrupts and drops bytes, for fault tests.
//! - `pty` (Unix) and [`tcp`]: the real-time fronts, a pseudo-terminal and a TCP port.
//!
//! # Invariants
//! - Depends on `gantry-proto` and nothing else of Gantry's: the simulator agrees with the host only
//!   through the wire protocol, never by sharing the planner.
//! - The model, the world and the runtime do no I/O and read no clock; only the fronts (`pty`,
//!   `tcp`) touch the operating system.
//! - A command the model does not simulate is an error in the report, never silently skipped.
//! - The per-step walk allocates nothing and logs nothing.

pub mod dictionary;
pub mod faulty;
pub mod model;
pub mod objects;
#[cfg(unix)]
pub mod pty;
pub mod replay;
pub mod report;
pub mod runtime;
pub mod sched;
pub mod stepper;
pub mod tcp;
pub mod thermistor;
pub mod world;
