//! `gantry-desktop`: the desktop window (Tauri 2 around the Svelte web UI), with core's API server
//! and the built-in simulated printer in process.
//!
//! Users start it as `gantry` with no subcommand (`gantry_lib::launch` runs this executable from
//! beside itself). It is its own executable so that the headless subcommands do not load the
//! desktop's libraries (WebKitGTK and what it pulls in): see ARCHITECTURE.md, "Three executables".

// Release builds on Windows must not open a console window next to the app.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

use std::process::ExitCode;

use clap::Parser as _;

mod app;
mod commands;

/// The desktop app's command line: only the log level (`gantry -v` passes it on).
#[derive(Debug, clap::Parser)]
#[command(name = "gantry-desktop", version, about = "Gantry's desktop window")]
struct DesktopCli {
    /// More log output (-v info, -vv debug); GANTRY_LOG overrides with a tracing filter.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

fn main() -> ExitCode {
    let cli = DesktopCli::parse();
    gantry_lib::init_tracing(cli.verbose);
    gantry_lib::exit_code(app::run())
}
