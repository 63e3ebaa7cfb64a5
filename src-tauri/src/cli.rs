//! The command line: no subcommand opens the desktop window; each subcommand is a headless job.
//!

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

/// Gantry: make any 3D printer an observable, controllable machine.
#[derive(Debug, Parser)]
#[command(name = "gantry", version, about, long_about = None)]
pub struct Cli {
    /// More log output (-v info, -vv debug); GANTRY_LOG overrides with a tracing filter.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// What to run; without one, the desktop app opens.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The headless jobs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Open the 3D digital twin of a G-code file (its own window), or render it to a PNG.
    Twin(TwinPassArgs),
    /// Run core's local API server without a window; prints its endpoint as one JSON line.
    Serve(crate::serve::ServeArgs),
    /// Klipper's batch mode: printer.cfg + G-code → the MCU command stream, as klippy -o writes it.
    Batch(BatchArgs),
    /// Plan a G-code file with the real planner: print time, layers, filament, top speed.
    Estimate(EstimateArgs),
    /// Decode a raw MCU stream into one message per line, as Klipper's parsedump.py does.
    Parsedump(ParsedumpArgs),
    /// The simulated MCU: serve it on a pseudo-terminal or a TCP port, or replay a recorded stream.
    Sim(SimArgs),
    /// Connect to a printer's MCU as Klipper's host does: identify, clock sync, config phase.
    Connect(crate::connect::ConnectArgs),
    /// Print a G-code file on a printer's MCU with Gantry as the Klipper host (headless).
    Print(crate::print::PrintArgs),
    /// Find printers: mDNS advertisements (Moonraker, OctoPrint, PrusaLink, Gantry) and USB
    /// serial boards.
    Discover(crate::discover::DiscoverArgs),
    /// Control a remote printer (Moonraker, OctoPrint, PrusaLink): status, gcode, upload, print,
    /// pause, resume, cancel, …
    Remote(crate::remote::RemoteArgs),
    /// Print Gantry's version.
    Version(VersionArgs),
}

/// Arguments of `gantry twin`, taken as they come: the twin's own executable parses them
/// (`gantry twin --help` is its help), so that this one does not link the twin's engine.
#[derive(Debug, Args)]
#[command(disable_help_flag = true)]
pub struct TwinPassArgs {
    /// The twin's arguments (`gantry twin --help` lists them).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
    pub args: Vec<std::ffi::OsString>,
}

/// Arguments of `gantry batch`.
#[derive(Debug, Args)]
pub struct BatchArgs {
    /// The printer.cfg (Klipper's format; [include] files are read too).
    #[arg(long, short = 'c')]
    pub config: PathBuf,
    /// The MCU's data dictionary (klipper.dict); NAME=FILE for an [mcu NAME].
    #[arg(long, short = 'd', required = true)]
    pub dict: Vec<String>,
    /// The G-code to run.
    #[arg(long, short = 'i')]
    pub input: PathBuf,
    /// Where the MCU stream goes (others: OUT-NAME).
    #[arg(long, short = 'o')]
    pub output: PathBuf,
    /// Also print one JSON line of timings.
    #[arg(long)]
    pub bench: bool,
    /// Run every line, reporting the commands that fail and skipping them. Without it the run
    /// ends as Klipper's batch mode ends, at the end of the 4096-byte read holding the first
    /// G-code error (the output is what klippy writes then), and exits with status 1.
    #[arg(long)]
    pub keep_going: bool,
}

/// Arguments of `gantry estimate`.
#[derive(Debug, Args)]
pub struct EstimateArgs {
    /// The G-code file.
    pub file: PathBuf,
    /// The printer.cfg whose limits the planner uses.
    #[arg(long, short = 'c')]
    pub config: PathBuf,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// List every layer's time.
    #[arg(long)]
    pub layers: bool,
    /// Take every axis as homed before the file starts (for files that never home).
    #[arg(long)]
    pub assume_homed: bool,
    /// Filament density for the mass, g/cm³ (PLA 1.24).
    #[arg(long, default_value_t = 1.24)]
    pub density: f64,
}

/// Arguments of `gantry parsedump`.
#[derive(Debug, Args)]
pub struct ParsedumpArgs {
    /// The MCU's data dictionary (JSON, such as Klipper's out/klipper.dict).
    pub dict: PathBuf,
    /// The raw stream (such as the output of `klippy.py … -o out.serial`).
    pub serial: PathBuf,
}

/// Arguments of `gantry sim`: one job at a time.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
#[command(group = clap::ArgGroup::new("job").args(["pty", "tcp", "dump_dict", "example_config"]).multiple(false))]
#[command(group = clap::ArgGroup::new("serve").args(["pty", "tcp"]).multiple(false))]
pub struct SimArgs {
    /// `replay`; without it, the options below.
    #[command(subcommand)]
    pub command: Option<SimCommand>,
    /// Serve the simulated MCU in real time on a pseudo-terminal linked at PATH (a host opens it
    /// like a USB board) until SIGINT or SIGTERM.
    #[arg(long, value_name = "PATH")]
    pub pty: Option<PathBuf>,
    /// Serve the simulated MCU in real time on a TCP port (one host at a time; the MCU keeps
    /// running between hosts) until SIGINT or SIGTERM.
    #[arg(long, value_name = "ADDR:PORT")]
    pub tcp: Option<std::net::SocketAddr>,
    /// With --pty or --tcp: the physical world (TOML: steppers, endstops, heaters, fans, faults);
    /// without it, the default world that matches --example-config.
    #[arg(long, value_name = "W.toml", requires = "serve")]
    pub world: Option<PathBuf>,
    /// With --pty or --tcp: on exit, write where every stepper ended, the world's heater
    /// temperatures and any shutdown reason as JSON here.
    #[arg(long, value_name = "R.json", requires = "serve")]
    pub report: Option<PathBuf>,
    /// With --pty or --tcp: also stop when standard input ends — for a program that starts the
    /// sim with a pipe as its input, so that the sim ends with it however it ends.
    #[arg(long, requires = "serve")]
    pub until_stdin_closes: bool,
    /// Write the simulated board's data dictionary (JSON, like Klipper's klipper.dict) and exit.
    #[arg(long, value_name = "FILE")]
    pub dump_dict: Option<PathBuf>,
    /// Print a printer.cfg for the simulated board and its default world and exit.
    #[arg(long)]
    pub example_config: bool,
}

/// `gantry sim` subcommands.
#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// Play a recorded host→MCU stream through the simulated MCU and report where every stepper
    /// ended (position in raw dir-bit steps, step and move counts, last step clock).
    Replay(SimReplayArgs),
}

/// Arguments of `gantry sim replay`.
#[derive(Debug, Args)]
pub struct SimReplayArgs {
    /// The dictionary the stream was made for (Klipper batch mode's `-d`).
    #[arg(long)]
    pub dict: PathBuf,
    /// The stream (Klipper batch mode's `-o` output).
    pub serial: PathBuf,
    /// A physical world (TOML, pins named as the dictionary names them) whose heaters and fans
    /// follow the stream's outputs; its carriages and heaters join the report.
    #[arg(long, value_name = "W.toml")]
    pub world: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Replay 5 times and print one JSON object: steps, seconds (median), steps per second, and
    /// how many times faster than the print itself.
    #[arg(long, conflicts_with = "json")]
    pub bench: bool,
}

/// Arguments of `gantry version`.
#[derive(Debug, Args)]
pub struct VersionArgs {
    /// Print a JSON object instead of a line of text.
    #[arg(long)]
    pub json: bool,
}

/// `gantry version`.
///
/// # Errors
/// When standard output cannot be written.
pub fn print_version(json: bool) -> anyhow::Result<()> {
    use std::io::Write as _;
    let text = if json {
        serde_json::json!({
            "name": "gantry",
            "version": gantry_core::VERSION,
            "target_os": std::env::consts::OS,
            "target_arch": std::env::consts::ARCH,
            "debug_build": cfg!(debug_assertions),
        })
        .to_string()
    } else {
        format!("gantry {}", gantry_core::VERSION)
    };
    writeln!(std::io::stdout(), "{text}").context("cannot write to standard output")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn sim_jobs_do_not_combine() {
        assert!(
            Cli::try_parse_from(["gantry", "sim", "--pty", "/tmp/x", "--dump-dict", "d"]).is_err()
        );
        assert!(
            Cli::try_parse_from(["gantry", "sim", "--report", "r.json"]).is_err(),
            "--report needs --pty"
        );
        assert!(
            Cli::try_parse_from(["gantry", "sim", "--pty", "/tmp/x", "--report", "r.json"]).is_ok()
        );
        assert!(
            Cli::try_parse_from(["gantry", "sim", "--pty", "/tmp/x", "--tcp", "127.0.0.1:1"])
                .is_err(),
            "one front at a time"
        );
        assert!(
            Cli::try_parse_from(["gantry", "sim", "--world", "w.toml"]).is_err(),
            "--world needs a front"
        );
        assert!(
            Cli::try_parse_from([
                "gantry",
                "sim",
                "--tcp",
                "127.0.0.1:7000",
                "--world",
                "w.toml",
                "--report",
                "r"
            ])
            .is_ok()
        );
        assert!(Cli::try_parse_from(["gantry", "sim", "--tcp", "not-an-address"]).is_err());
        assert!(
            Cli::try_parse_from([
                "gantry", "sim", "replay", "--dict", "d", "--world", "w.toml", "s.serial"
            ])
            .is_ok()
        );
    }

    #[test]
    fn remote_and_discover_parse() {
        let cli = Cli::try_parse_from([
            "gantry",
            "remote",
            "http://octopi.local",
            "--api-key",
            "K",
            "gcode",
            "G28",
        ])
        .expect("valid");
        assert!(matches!(cli.command, Some(Command::Remote(_))));
        assert!(Cli::try_parse_from(["gantry", "remote", "10.0.0.5", "print", "a.gcode"]).is_ok());
        assert!(
            Cli::try_parse_from(["gantry", "remote", "10.0.0.5", "--user", "u", "status"]).is_err(),
            "--user needs --password"
        );
        assert!(Cli::try_parse_from(["gantry", "discover", "--timeout", "1.5", "--json"]).is_ok());
        assert!(Cli::try_parse_from(["gantry", "discover", "--timeout", "-1"]).is_err());
    }

    #[test]
    fn no_arguments_means_the_desktop() {
        let cli = Cli::try_parse_from(["gantry"]).expect("valid");
        assert!(cli.command.is_none());
        // The twin's arguments, help included, are the twin's to parse.
        let cli = Cli::try_parse_from(["gantry", "twin", "x.gcode", "--screenshot", "o.png"])
            .expect("valid");
        let Some(Command::Twin(twin)) = cli.command else {
            panic!("twin");
        };
        assert_eq!(twin.args, ["x.gcode", "--screenshot", "o.png"]);
        let cli = Cli::try_parse_from(["gantry", "twin", "--help"]).expect("valid");
        assert!(matches!(cli.command, Some(Command::Twin(t)) if t.args == ["--help"]));
    }
}
