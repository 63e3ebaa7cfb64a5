//! Project automation for Gantry: `cargo xtask run` starts the app (or, on a headless machine,
//! renders the bundled sample print), and `cargo xtask test` runs every check the project has.
//!
//! Both install what a fresh Debian/Ubuntu machine lacks (system packages, the UI's npm
//! dependencies) and build the web UI before cargo builds the app, which embeds `ui/dist`.
//! Kept to std + anyhow so that it builds in seconds on a fresh clone.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "xtask is a command-line tool: printing progress and results is its job"
)]

mod cmd_run;
mod cmd_test;
mod context;
mod counts;
mod klipper;
mod peers;
mod process;
mod setup;
mod summary;
mod xvfb;

use std::ffi::OsString;
use std::process::ExitCode;

use anyhow::{Result, bail};

use crate::process::Reported;

const HELP: &str = "\
cargo xtask — Gantry's project automation

USAGE:
    cargo xtask run [-- GANTRY_ARGS...]
    cargo xtask test [--quick]
    cargo xtask peers
    cargo xtask klipper-mcu
    cargo xtask help

COMMANDS:
    run     Set up (system packages, Node/npm, UI build), build the `gantry` binary and start it.
            With DISPLAY or WAYLAND_DISPLAY set (or on macOS/Windows) it starts the desktop app;
            arguments after `--` are passed to gantry (e.g. `cargo xtask run -- twin FILE`).
            On a headless Linux machine without arguments it renders the bundled sample print
            offscreen (`gantry twin assets/gcode/sample.gcode --screenshot TARGET/gantry-sample.png`).
    test    Run everything, keep going after a failure, print a summary table and, as the last
            line, `total: N passed, N failed`; exits non-zero if anything failed. Steps:
            ui build, ui check, cargo fmt, cargo clippy, tauri-driver, Xvfb, peer servers
            (OctoPrint and Moonraker from PyPI in ~/.cache/gantry/peers, pinned by xtask/peers/),
            cargo test --workspace -- --include-ignored, ui tests (npm test).
            --quick  skip tauri-driver and Xvfb and run cargo test without --include-ignored
                     (no desktop end-to-end, twin screenshot or remote-printer test): the inner
                     loop.
    peers   Install the peer servers the remote-printer tests start (OctoPrint and Moonraker from
            PyPI, pinned by xtask/peers/*.txt, in ~/.cache/gantry/peers) and print the variables
            that point the tests at them (`cargo xtask test` does this itself).
    klipper-mcu
            The check against real Klipper firmware (not run by CI): build Klipper's Linux-process
            MCU (src/linux) from KLIPPER_SRC, or else from a shallow clone of
            https://github.com/Klipper3d/klipper in ~/.cache/gantry/klipper, out of tree in
            TARGET/klipper-linux-mcu (needs make, gcc, python3); print the path of klipper.elf;
            run crates/core/tests/klipper_linux_mcu.rs against it (identify, clock sync, config,
            reuse by CRC, FIRMWARE_RESTART).
    help    Print this text.

SETUP (both commands):
    Missing Debian/Ubuntu packages are installed with apt-get when running as root; otherwise the
    sudo command to run is printed. Node.js >= 18 and npm are required; `npm ci` runs when
    ui/node_modules is missing or stale, then `npm run build` (Vite -> ui/dist).

ENVIRONMENT:
    KLIPPER_SRC       klipper-mcu: a Klipper checkout to build the Linux MCU from (not written to)
    CI=true           when CARGO_TARGET_DIR is unset, build into ~/.cache/gantry/ci-target
                      (outside the checkout, so fresh clones on the same machine build incrementally)
    CARGO_TARGET_DIR  honoured (absolute, or relative to the workspace root)
";

/// What the command line asked for.
#[derive(Debug, PartialEq, Eq)]
enum Task {
    Help,
    Run { gantry_args: Vec<OsString> },
    Test { quick: bool },
    Peers,
    KlipperMcu,
}

/// Parses the arguments after `cargo xtask`.
fn parse_args(args: Vec<OsString>) -> Result<Task> {
    let mut args = args.into_iter();
    let Some(command) = args.next() else {
        return Ok(Task::Help);
    };
    match command.to_str() {
        Some("help" | "-h" | "--help") => Ok(Task::Help),
        Some("run") => {
            let mut gantry_args = Vec::new();
            let mut after_separator = false;
            for arg in args {
                if after_separator {
                    gantry_args.push(arg);
                    continue;
                }
                match arg.to_str() {
                    Some("--") => after_separator = true,
                    Some("-h" | "--help") => return Ok(Task::Help),
                    _ => bail!(
                        "unexpected argument {arg:?} for `run`; pass arguments for gantry after \
                         `--`, e.g. `cargo xtask run -- --help`"
                    ),
                }
            }
            Ok(Task::Run { gantry_args })
        }
        Some("test") => {
            let mut quick = false;
            for arg in args {
                match arg.to_str() {
                    Some("--quick") => quick = true,
                    Some("-h" | "--help") => return Ok(Task::Help),
                    _ => bail!("unexpected argument {arg:?} for `test` (known: --quick)"),
                }
            }
            Ok(Task::Test { quick })
        }
        Some("peers") => Ok(Task::Peers),
        Some("klipper-mcu") => Ok(Task::KlipperMcu),
        _ => bail!("unknown command {command:?}; known: run, test, peers, klipper-mcu, help"),
    }
}

fn main() -> ExitCode {
    let task = match parse_args(std::env::args_os().skip(1).collect()) {
        Ok(task) => task,
        Err(err) => {
            eprintln!("error: {err:#}\n\n{HELP}");
            return ExitCode::from(2);
        }
    };
    let result = match task {
        Task::Help => {
            print!("{HELP}");
            Ok(ExitCode::SUCCESS)
        }
        Task::Run { gantry_args } => cmd_run::run(&gantry_args),
        Task::Test { quick } => cmd_test::test(quick),
        Task::Peers => context::Ctx::new()
            .and_then(|ctx| peers::install(&ctx))
            .map(|vars| {
                for (name, path) in vars {
                    println!("export {name}={}", path.display());
                }
                ExitCode::SUCCESS
            }),
        Task::KlipperMcu => klipper::run(),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            if err.downcast_ref::<Reported>().is_none() {
                eprintln!("error: {err:#}");
            }
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Option<Task> {
        parse_args(args.iter().map(OsString::from).collect()).ok()
    }

    #[test]
    fn parses_commands() {
        assert_eq!(parse(&[]), Some(Task::Help));
        assert_eq!(parse(&["help"]), Some(Task::Help));
        assert_eq!(parse(&["peers"]), Some(Task::Peers));
        assert_eq!(parse(&["klipper-mcu"]), Some(Task::KlipperMcu));
        assert_eq!(parse(&["test"]), Some(Task::Test { quick: false }));
        assert_eq!(
            parse(&["test", "--quick"]),
            Some(Task::Test { quick: true })
        );
        assert_eq!(
            parse(&["run"]),
            Some(Task::Run {
                gantry_args: vec![]
            })
        );
        assert_eq!(
            parse(&["run", "--", "twin", "--help"]),
            Some(Task::Run {
                gantry_args: vec!["twin".into(), "--help".into()]
            })
        );
    }

    #[test]
    fn rejects_unknown_arguments() {
        assert_eq!(parse(&["build"]), None);
        assert_eq!(parse(&["test", "--slow"]), None);
        assert_eq!(parse(&["run", "twin"]), None);
    }
}
