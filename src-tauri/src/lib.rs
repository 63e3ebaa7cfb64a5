//! The Gantry app's command line: `gantry` with no subcommand opens the desktop window (the
//! `gantry-desktop` executable beside it, [`launch`]), `gantry twin` the 3D twin (the
//! `gantry-twin` executable); each other subcommand runs a headless job (`gantry --help` lists
//! them).
//!
//! This is the thin shell of the architecture: it parses the command line ([`cli`]) and runs a
//! subcommand as a file or process adapter to core, motion and the twin. The desktop window
//! (Tauri 2, and the webview's commands) is `src-tauri/src/desktop/`, its own executable, which
//! uses this library for what both share. Logic that is not about windows, processes or the
//! command line belongs in `gantry-core`.

use std::process::ExitCode;

use clap::Parser as _;

pub mod batch;
pub mod cli;
pub mod connect;
pub mod discover;
pub mod launch;
pub mod parsedump;
pub mod print;
pub mod remote;
pub mod serve;
pub mod sim;
pub mod sim_printer;

/// Runs the app as the command line asks and returns the process's exit code.
pub fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    init_tracing(cli.verbose);
    let result = match cli.command {
        None => launch::run(cli.verbose),
        // The arguments are the twin's: its own executable parses and runs them.
        Some(cli::Command::Twin(_)) => launch::run_twin(),
        Some(cli::Command::Serve(args)) => serve::run(&args),
        Some(cli::Command::Batch(args)) => batch::run_batch(&args),
        Some(cli::Command::Estimate(args)) => batch::run_estimate(&args),
        Some(cli::Command::Parsedump(args)) => parsedump::run(&args.dict, &args.serial),
        Some(cli::Command::Sim(args)) => sim::run(&args),
        Some(cli::Command::Connect(args)) => connect::run(&args),
        Some(cli::Command::Print(args)) => print::run(&args),
        Some(cli::Command::Discover(args)) => discover::run(&args),
        Some(cli::Command::Remote(args)) => remote::run(&args),
        Some(cli::Command::Version(args)) => cli::print_version(args.json),
    };
    exit_code(result)
}

/// The exit code for a command's result; an error is logged and printed as the last line a
/// terminal user sees.
pub fn exit_code(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            // The error is also the last thing a terminal user sees, without log decoration.
            #[allow(clippy::print_stderr)]
            {
                eprintln!("gantry: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Installs the log subscriber: `verbose` × `-v` raises the level; `GANTRY_LOG` overrides it.
pub fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn,gantry=info,gantry_lib=info,gantry_core=info",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("GANTRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // A second initialisation (tests that call main twice) is harmless; ignore it.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}
