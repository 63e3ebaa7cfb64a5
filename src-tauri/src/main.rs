//! The `gantry` binary: the desktop app with no arguments, headless jobs as subcommands.
//! All of it lives in the library (`src-tauri/src/lib.rs`), so tests can drive it.

// Release builds on Windows must not open a console window next to the app.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

fn main() -> std::process::ExitCode {
    gantry_lib::main()
}
