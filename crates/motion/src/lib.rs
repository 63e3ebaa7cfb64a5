//! gantry-motion: Klipper-compatible motion, pure and deterministic.
//!
//! This crate turns a printer's configuration and G-code into the step stream Klipper would send:
//! printer.cfg ([`config`]) and G-code ([`printer`]) → moves and look-ahead ([`lookahead`]) →
//! print-time bookkeeping and motion queuing ([`toolhead`], with [`batch_reader`] for where batch
//! mode runs its background flush between reads of G-code) → trapezoid queues ([`trapq`]) →
//! step times per stepper ([`itersolve`], with [`shaper`] and [`extruder`] pressure advance) →
//! `queue_step` compression ([`stepcompress`]) → Klipper message blocks ([`output`]).
//! [`steptrace`] expands and compares step streams (the oracle check); [`toolpath`] and
//! [`gcode`] serve the twin; [`bgcode`] decodes Prusa's binary G-code into G-code text. [`thermistor`] converts heater sensor readings to temperatures and
//! back (the ADC limits a heater's `query_analog_in` sends).
//!
//! # Invariants
//! - No I/O: no files, sockets, threads or clock reads. Text comes in as `&str`, time as an argument.
//! - Parsing never panics: bad input becomes an error or a diagnostic with its line number.
//! - Klipper's vocabulary and units in names (`_mm`, `print_time`).

pub mod arcs;
pub mod batch_reader;
pub mod bgcode;
pub mod config;
pub mod estimate;
pub mod extruder;
pub mod gcode;
pub mod heater_control;
pub mod isa;
pub mod itersolve;
pub mod lookahead;
pub mod macros;
pub mod output;
pub mod printer;
pub mod shaper;
pub mod stepcompress;
pub mod steptrace;
pub mod thermistor;
pub mod toolhead;
pub mod toolpath;
pub mod trapq;
