//! `gantry twin`'s arguments, parsed by the twin's executable (`gantry` passes them on as they
//! come): the file, the printer.cfg, the offscreen render, where to start, how to draw, and
//! what to follow live.

use std::path::PathBuf;

use clap::Args;

/// Arguments of `gantry twin`.
#[derive(Debug, Args)]
pub(crate) struct TwinArgs {
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
    /// Close when standard input ends (the desktop app starts its twins with a pipe it holds,
    /// so that they end with it however it ends).
    #[arg(long)]
    pub until_stdin_closes: bool,
}

impl TwinArgs {
    /// The twin's options from these arguments.
    pub(crate) fn into_options(self) -> gantry_twin::TwinOptions {
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
            until_stdin_closes: self.until_stdin_closes,
        }
    }
}

/// `--at`: `0.5` (fraction of the print time), `90s` (seconds), `line:1234`.
///
/// # Errors
/// Text that is none of these.
pub(crate) fn parse_at(text: &str) -> Result<gantry_twin::playback::Jump, String> {
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

/// Parses `WxH` (each 16 to 8192 pixels).
pub(crate) fn parse_size(text: &str) -> Result<(u32, u32), String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TwinCli;
    use clap::{CommandFactory as _, Parser as _};

    #[test]
    fn the_command_line_is_consistent() {
        TwinCli::command().debug_assert();
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
    fn twin_live_takes_the_url_token_and_printer() {
        let cli = TwinCli::try_parse_from([
            "gantry twin",
            "--live",
            "ws://127.0.0.1:7125/websocket",
            "--token",
            "T",
            "--printer",
            "sim",
        ])
        .expect("valid");
        let args = cli.args;
        let live = args.into_options().live.expect("live");
        assert_eq!(live.connect_url(), "ws://127.0.0.1:7125/websocket?token=T");
        assert_eq!(live.printer.as_deref(), Some("sim"));
        assert!(TwinCli::try_parse_from(["gantry twin", "--printer", "sim"]).is_err());
        assert!(
            TwinCli::try_parse_from(["gantry twin", "--live", "ws://x", "--live-sim", "a.gcode"])
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
        let cli = TwinCli::try_parse_from([
            "gantry twin",
            "x.gcode",
            "--at",
            "0.25",
            "--layer",
            "3",
            "--color",
            "speed",
            "--teach",
            "--bench",
        ])
        .expect("valid");
        let args = cli.args;
        let o = args.into_options();
        assert_eq!(o.at, Some(Jump::Fraction(0.25)));
        assert_eq!(o.layer, Some(3));
        assert_eq!(o.color, gantry_twin::toolpath::ColorMode::Speed);
        assert!(o.teach && o.bench);
        assert!(TwinCli::try_parse_from(["gantry twin", "--color", "rainbow"]).is_err());
        assert!(TwinCli::try_parse_from(["gantry twin", "--sim-speed", "2"]).is_err());
    }
}
