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
    Twin(TwinArgs),
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

/// Arguments of `gantry twin`.
#[derive(Debug, Args)]
pub struct TwinArgs {
    /// The G-code file; without one, the bundled sample print.
    pub file: Option<PathBuf>,
    /// The printer.cfg: the machine drawn, its build volume and the planner's limits (default:
    /// the simulated printer's).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Render offscreen (no window, no display needed), save this PNG and exit.
    #[arg(long, value_name = "OUT.png")]
    pub screenshot: Option<PathBuf>,
    /// Window or image size.
    #[arg(long, value_name = "WxH", default_value = "1280x800", value_parser = parse_size)]
    pub size: (u32, u32),
    /// Start at this point of the print: a fraction of the print time (0.5), seconds (90s), or
    /// a G-code line (line:1234).
    #[arg(long, value_name = "WHEN", value_parser = parse_at)]
    pub at: Option<gantry_twin::playback::Jump>,
    /// Show layers 1 to N only, layer N highlighted (the layer slider).
    #[arg(long, value_name = "N")]
    pub layer: Option<usize>,
    /// Colour the toolpath by feature, speed, layer or flow.
    #[arg(long, value_name = "BY", default_value = "feature", value_parser = parse_color)]
    pub color: gantry_twin::toolpath::ColorMode,
    /// Draw travel moves.
    #[arg(long)]
    pub travel: bool,
    /// Start in teaching mode (large high-contrast HUD, auto-orbit, explanations).
    #[arg(long)]
    pub teach: bool,
    /// Hide the HUD.
    #[arg(long)]
    pub no_hud: bool,
    /// The camera to start with: iso, top, front or follow.
    #[arg(long, value_name = "VIEW", default_value = "iso", value_parser = parse_view)]
    pub view: gantry_twin::camera::Preset,
    /// Start playing at this speed (1 to 1000 times real time).
    #[arg(long, value_name = "SPEED")]
    pub play: Option<f64>,
    /// Measure offscreen and print one JSON object: file_bytes, segments, load_s,
    /// bytes_per_segment, first_frame_s, frame_ms_median, adapter, ….
    #[arg(long)]
    pub bench: bool,
    /// The most segments a frame draws before coarser levels of detail take over (default:
    /// by the graphics adapter).
    #[arg(long, value_name = "SEGMENTS")]
    pub budget: Option<u64>,
    /// Print FILE on the simulated MCU in this process and show where its steppers are, with
    /// the planned toolpath as a ghost.
    #[arg(long, value_name = "FILE", conflicts_with = "file")]
    pub live_sim: Option<PathBuf>,
    /// With --live-sim: virtual seconds per real second.
    #[arg(
        long,
        value_name = "SPEED",
        default_value_t = 1.0,
        requires = "live_sim"
    )]
    pub sim_speed: f64,
    /// Follow a printer served by Gantry's API (`gantry serve` prints its ws_url and token): its
    /// live nozzle, and its job's file as the ghost when this machine can read it. FILE, if
    /// given, is the ghost until a job names another.
    #[arg(long, value_name = "WS_URL", conflicts_with = "live_sim")]
    pub live: Option<String>,
    /// With --live: the API's per-launch token.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "GANTRY_API_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// With --live: the fleet id of the printer to follow (default: the API's first printer).
    #[arg(long, value_name = "ID", requires = "live")]
    pub printer: Option<String>,
}

impl TwinArgs {
    /// The twin's options from these arguments.
    pub fn into_options(self) -> gantry_twin::TwinOptions {
        gantry_twin::TwinOptions {
            gcode: self.file,
            config: self.config,
            screenshot: self.screenshot,
            size: self.size,
            at: self.at,
            layer: self.layer,
            color: self.color,
            travel: self.travel,
            teach: self.teach,
            no_hud: self.no_hud,
            view: self.view,
            play: self.play,
            bench: self.bench,
            budget: self.budget,
            live_sim: self.live_sim,
            sim_speed: self.sim_speed,
            live: self.live.map(|url| gantry_twin::feed::FeedTarget {
                url,
                token: self.token,
                printer: self.printer,
            }),
        }
    }
}

/// `--at`: `0.5` (fraction of the print time), `90s` (seconds), `line:1234`.
///
/// # Errors
/// Text that is none of these.
pub fn parse_at(text: &str) -> Result<gantry_twin::playback::Jump, String> {
    use gantry_twin::playback::Jump;
    let t = text.trim();
    if let Some(line) = t.strip_prefix("line:") {
        return line
            .trim()
            .parse()
            .map(Jump::Line)
            .map_err(|_| format!("'{line}' is not a line number"));
    }
    if let Some(s) = t.strip_suffix('s') {
        return match s.trim().parse::<f64>() {
            Ok(v) if v.is_finite() && v >= 0.0 => Ok(Jump::Seconds(v)),
            _ => Err(format!("'{s}' is not a number of seconds")),
        };
    }
    match t.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(Jump::Fraction(v)),
        _ => Err(format!(
            "'{t}' is not a fraction 0–1 (0.5), seconds (90s) or a line (line:1234)"
        )),
    }
}

fn parse_color(text: &str) -> Result<gantry_twin::toolpath::ColorMode, String> {
    gantry_twin::toolpath::ColorMode::parse(text)
        .ok_or_else(|| format!("'{text}' is not feature, speed, layer or flow"))
}

fn parse_view(text: &str) -> Result<gantry_twin::camera::Preset, String> {
    gantry_twin::camera::Preset::parse(text)
        .ok_or_else(|| format!("'{text}' is not iso, top, front or follow"))
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
    /// Fail (exit 1) when the G-code had errors; without it they are reported and skipped, as
    /// Klipper's batch mode does.
    #[arg(long)]
    pub strict: bool,
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

/// Parses `WxH` (each 16 to 8192 pixels).
pub fn parse_size(text: &str) -> Result<(u32, u32), String> {
    let (w, h) = text
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("'{text}' is not WIDTHxHEIGHT, such as 1280x800"))?;
    let dim = |s: &str| -> Result<u32, String> {
        let v: u32 = s
            .trim()
            .parse()
            .map_err(|_| format!("'{s}' is not a whole number"))?;
        if (16..=8192).contains(&v) {
            Ok(v)
        } else {
            Err(format!("{v} is outside 16..=8192 pixels"))
        }
    };
    Ok((dim(w)?, dim(h)?))
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
    fn sizes_parse_and_are_checked() {
        assert_eq!(parse_size("1280x800"), Ok((1280, 800)));
        assert_eq!(parse_size("64X48"), Ok((64, 48)));
        assert!(parse_size("1280").is_err());
        assert!(parse_size("0x10").is_err());
        assert!(parse_size("axb").is_err());
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
        let cli = Cli::try_parse_from(["gantry", "twin", "x.gcode", "--screenshot", "o.png"])
            .expect("valid");
        assert!(matches!(
            cli.command,
            Some(Command::Twin(TwinArgs {
                screenshot: Some(_),
                ..
            }))
        ));
    }

    #[test]
    fn twin_live_takes_the_url_token_and_printer() {
        let cli = Cli::try_parse_from([
            "gantry",
            "twin",
            "--live",
            "ws://127.0.0.1:7125/websocket",
            "--token",
            "T",
            "--printer",
            "sim",
        ])
        .expect("valid");
        let Some(Command::Twin(args)) = cli.command else {
            panic!("twin");
        };
        let live = args.into_options().live.expect("live");
        assert_eq!(live.connect_url(), "ws://127.0.0.1:7125/websocket?token=T");
        assert_eq!(live.printer.as_deref(), Some("sim"));
        assert!(Cli::try_parse_from(["gantry", "twin", "--printer", "sim"]).is_err());
        assert!(
            Cli::try_parse_from([
                "gantry",
                "twin",
                "--live",
                "ws://x",
                "--live-sim",
                "a.gcode"
            ])
            .is_err()
        );
    }

    #[test]
    fn twin_at_takes_fractions_seconds_and_lines() {
        use gantry_twin::playback::Jump;
        assert_eq!(parse_at("0.5"), Ok(Jump::Fraction(0.5)));
        assert_eq!(parse_at("90s"), Ok(Jump::Seconds(90.0)));
        assert_eq!(parse_at("line:1234"), Ok(Jump::Line(1234)));
        assert!(parse_at("1.5").is_err());
        assert!(parse_at("-2s").is_err());
        assert!(parse_at("line:x").is_err());
        let cli = Cli::try_parse_from([
            "gantry", "twin", "x.gcode", "--at", "0.25", "--layer", "3", "--color", "speed",
            "--teach", "--bench",
        ])
        .expect("valid");
        let Some(Command::Twin(args)) = cli.command else {
            panic!("twin");
        };
        let o = args.into_options();
        assert_eq!(o.at, Some(Jump::Fraction(0.25)));
        assert_eq!(o.layer, Some(3));
        assert_eq!(o.color, gantry_twin::toolpath::ColorMode::Speed);
        assert!(o.teach && o.bench);
        assert!(Cli::try_parse_from(["gantry", "twin", "--color", "rainbow"]).is_err());
        assert!(Cli::try_parse_from(["gantry", "twin", "--sim-speed", "2"]).is_err());
    }
}
