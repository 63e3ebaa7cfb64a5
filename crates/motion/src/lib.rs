//! gantry-motion: Klipper-compatible motion, pure and deterministic.
//!
//! This crate turns a printer's configuration and G-code into motion: today the printer.cfg reader
//! ([`config`]), the G-code lexer ([`gcode`]) and the toolpath the twin draws ([`toolpath`]); the
//! planner (lookahead, kinematics, input shaping, pressure advance, step compression) lands here too.
//!
//! # Invariants
//! - No I/O: no files, sockets, threads or clock reads. Text comes in as `&str`, time as an argument.
//! - Parsing never panics: bad input becomes an error or a diagnostic with its line number.
//! - Klipper's vocabulary and units in names (`_mm`, `print_time`).

pub mod config;
pub mod extruder;
pub mod gcode;
pub mod shaper;
pub mod stepcompress;
pub mod steptrace;
pub mod toolpath;
pub mod trapq;
