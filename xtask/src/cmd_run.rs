//! `cargo xtask run`: set up, build `gantry`, then start the desktop app, or on a headless Linux
//! machine render the bundled sample print offscreen.

use std::ffi::OsString;
use std::process::{Command, ExitCode};

use anyhow::{Context as _, Result, bail};

use crate::context::Ctx;
use crate::process;
use crate::setup;

/// The sample print that the headless job renders, relative to the workspace root.
const SAMPLE_GCODE: &str = "assets/gcode/sample.gcode";

/// Whether a desktop session can show a window: always on macOS and Windows; on Linux and other
/// Unix systems when `DISPLAY` or `WAYLAND_DISPLAY` is set.
fn has_display() -> bool {
    if cfg!(any(target_os = "macos", target_os = "windows")) {
        return true;
    }
    ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|var| std::env::var_os(var).is_some_and(|value| !value.is_empty()))
}

/// Runs `cargo xtask run [-- GANTRY_ARGS…]`.
pub(crate) fn run(gantry_args: &[OsString]) -> Result<ExitCode> {
    let ctx = Ctx::new()?;
    setup::prerequisites(&ctx)?;
    setup::ui_build(&ctx)?;

    // All three executables: `gantry` with no subcommand starts `gantry-desktop` from beside
    // itself, and `gantry twin` runs `gantry-twin`.
    println!("==> cargo build -p gantry --bins");
    process::run(ctx.cargo().args(["build", "-p", "gantry", "--bins"]))?;
    let bin = ctx.gantry_bin();
    if !bin.is_file() {
        bail!("cargo built gantry, but {} does not exist", bin.display());
    }

    if has_display() || !gantry_args.is_empty() {
        let mut cmd = Command::new(&bin);
        cmd.args(gantry_args);
        println!("==> {}", process::describe(&cmd));
        let status = process::status(&mut cmd)?;
        return Ok(ExitCode::from(process::exit_code(status)));
    }

    // Headless: the twin renders offscreen with Vulkan (lavapipe works without an X server).
    let sample = ctx.root.join(SAMPLE_GCODE);
    let screenshot = ctx.target_dir.path.join("gantry-sample.png");
    if screenshot.exists() {
        std::fs::remove_file(&screenshot)
            .with_context(|| format!("removing the old {}", screenshot.display()))?;
    }
    let mut cmd = Command::new(&bin);
    cmd.arg("twin")
        .arg(&sample)
        .arg("--screenshot")
        .arg(&screenshot);
    println!("==> headless: {}", process::describe(&cmd));
    process::run(&mut cmd)?;
    if !screenshot.is_file() {
        bail!(
            "gantry twin exited successfully but wrote no {}",
            screenshot.display()
        );
    }
    println!(
        "Headless machine (no DISPLAY or WAYLAND_DISPLAY): rendered the bundled sample print to {}",
        screenshot.display()
    );
    Ok(ExitCode::SUCCESS)
}
