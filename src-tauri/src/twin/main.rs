//! `gantry-twin`: the 3D digital twin (Bevy), a window or an offscreen render.
//!
//! Users start it as `gantry twin …` (`gantry_lib::launch::run_twin` runs this executable from
//! beside itself with the same arguments), and the desktop app starts it for its twin windows.
//! It is its own executable so that the other subcommands do not load the engine: see
//! ARCHITECTURE.md, "Three executables".

use std::process::ExitCode;

use clap::Parser as _;

mod args;

/// The twin's command line: `gantry twin`'s arguments (named so in help and errors, since
/// users meet it as that).
#[derive(Debug, clap::Parser)]
#[command(
    name = "gantry twin",
    bin_name = "gantry twin",
    version,
    about = "Open the 3D digital twin of a G-code file (its own window), or render it to a PNG"
)]
struct TwinCli {
    /// More log output (-v info, -vv debug); GANTRY_LOG overrides with a tracing filter.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(flatten)]
    args: args::TwinArgs,
}

fn main() -> ExitCode {
    let cli = TwinCli::parse();
    gantry_lib::init_tracing(cli.verbose);
    gantry_lib::exit_code(gantry_twin::run(cli.args.into_options()))
}
