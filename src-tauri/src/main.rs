//! The `gantry` executable: headless jobs as subcommands, and with no subcommand the desktop app
//! (which it starts from beside itself, `gantry-desktop`; `gantry twin` likewise runs
//! `gantry-twin`). All of it lives in the library (`src-tauri/src/lib.rs`), so tests can drive
//! it. It links no desktop library (no Tauri, no WebKitGTK) and not the twin's engine (Bevy), so
//! a subcommand starts lean and runs on headless machines.

fn main() -> std::process::ExitCode {
    gantry_lib::main()
}
