//! gantry-core: the async side of Gantry.
//!
//! Core owns every I/O resource the app uses: serial ports, the local API server, and (as later
//! issues land) MCU sessions, heaters, jobs, SQLite storage, discovery and remote-printer clients.
//! The desktop shell (`src-tauri/`) and the twin (`twin/`) are thin clients of this crate; they never
//! open a socket or a port of their own.
//!
//! # Layout
//! - [`api`]: the local JSON-RPC 2.0 server over a WebSocket on 127.0.0.1, guarded by a per-launch
//!   token. The web UI and the twin talk to core only through it. Method names follow Moonraker's.
//! - [`discovery`]: mDNS browsing for Moonraker, OctoPrint, PrusaLink and Gantry hosts, one entry
//!   per printer, kept current as printers come and go.
//! - [`mcu`]: a live connection to one MCU — the thread that owns its port, the protocol session,
//!   and klippy's connect sequence (identify, clock sync, config phase or reuse).
//! - [`live`]: the live host — the planner driving MCUs in real time ([`live::serial_host`]) or
//!   the simulated MCU in process on a virtual clock ([`live::virtual_host`]), and print jobs.
//! - [`model`]: the one printer model — Klipper's status objects, their deltas, the
//!   [`model::PrinterBackend`] trait every printer (remote or local) implements.
//! - [`remote`]: Moonraker, OctoPrint and PrusaLink clients (each a `PrinterBackend`) and the
//!   probe that says which API answers at an address.
//! - [`lifeline`]: a child process that stops when the process that started it is gone (its
//!   standard input, a pipe the parent holds, ends).
//! - [`printers`]: the printers this machine can reach: serial ports with their USB identity and the
//!   built-in simulated printer.
//!
//! # Invariants
//! - Core depends on neither Tauri nor Bevy; shells depend on core, never the reverse.
//! - CPU work and blocking calls (port enumeration, file parsing) leave the async tasks through
//!   `spawn_blocking` or a dedicated thread.
//! - Every spawned task has an owner that awaits it; shutdown is explicit (see [`api::ApiServer::run`]).
//!
//! The pure crates are re-exported so the shells reach them through core: [`motion`] (printer.cfg,
//! G-code, the planner) and [`proto`] (Klipper's MCU wire protocol).

pub mod api;
pub mod discovery;
pub mod fleet;
pub mod lifeline;
pub mod live;
pub mod mcu;
pub mod model;
pub mod printer_config;
pub mod printers;
pub mod remote;
pub mod saved;
pub mod store;

pub use gantry_motion as motion;
pub use gantry_proto as proto;

/// Gantry's version, as the workspace's `Cargo.toml` gives it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
