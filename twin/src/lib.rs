//! gantry-twin: the Bevy digital twin — the build volume, the bed, the axes and a G-code toolpath.
//!
//! The twin runs as its own process (`gantry twin FILE`), with its own window and event loop:
//! Tauri's and winit's event loops cannot share a process portably (both want the main thread on
//! macOS), and a GPU driver crash in the twin must not take the desktop UI down. The desktop shell
//! starts it; the twin reads the file itself through `gantry_core::motion`.
//!
//! With `--screenshot` the twin renders offscreen into an image (no window, no display server; Mesa's
//! software Vulkan is enough), waits until every render pipeline is compiled — frames drawn before
//! that are empty on software Vulkan — saves one frame as PNG and exits.
//!
//! One plugin per file: [`scene`] (bed, volume, axes, light), [`toolpath`] (the lines),
//! [`camera`] (orbit camera), [`capture`] (offscreen render and screenshot). [`lines`] builds line
//! meshes for all of them.

use std::path::PathBuf;

use anyhow::Context as _;
use bevy::prelude::*;
use gantry_core::motion::config::{BuildVolume, Config};
use gantry_core::motion::toolpath::{Toolpath, ToolpathOptions, from_gcode};

pub mod camera;
pub mod capture;
pub mod lines;
pub mod scene;
pub mod toolpath;

/// The bundled sample print, shown when no file is given.
pub const SAMPLE_GCODE: &str = include_str!("../../assets/gcode/sample.gcode");
/// The name the sample is shown under.
pub const SAMPLE_NAME: &str = "sample.gcode (bundled)";

/// What the twin should show and how.
#[derive(Debug, Clone)]
pub struct TwinOptions {
    /// The G-code file; `None` shows the bundled sample.
    pub gcode: Option<PathBuf>,
    /// A printer.cfg for the build volume; `None` uses the built-in simulated printer's.
    pub config: Option<PathBuf>,
    /// Render offscreen, save this PNG and exit.
    pub screenshot: Option<PathBuf>,
    /// Window or image size in pixels.
    pub size: (u32, u32),
}

/// Everything the scene is built from, read before the app starts.
#[derive(Resource, Debug, Clone)]
pub struct TwinScene {
    /// What the toolpath came from, for the window title.
    pub source_name: String,
    /// The reachable volume.
    pub volume: BuildVolume,
    /// The toolpath to draw.
    pub toolpath: Toolpath,
}

impl TwinScene {
    /// Reads the G-code and printer.cfg the options name.
    ///
    /// # Errors
    /// When a file cannot be read or the printer.cfg is invalid, naming the file.
    pub fn load(options: &TwinOptions) -> anyhow::Result<Self> {
        let (source_name, text) = match &options.gcode {
            Some(path) => (
                path.display().to_string(),
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read G-code file {}", path.display()))?,
            ),
            None => (SAMPLE_NAME.to_owned(), SAMPLE_GCODE.to_owned()),
        };
        let volume = match &options.config {
            Some(path) => {
                // Through core's loader, so [include] files are read too.
                let config = gantry_core::printer_config::load(path)
                    .with_context(|| format!("cannot load printer config {}", path.display()))?;
                BuildVolume::from_config(&config)?
            }
            None => {
                let config = Config::parse(
                    gantry_core::printers::SIMULATED_CONFIG,
                    gantry_core::printers::SIMULATED_CONFIG_NAME,
                )?;
                BuildVolume::from_config(&config)?
            }
        };
        let toolpath = from_gcode(&text, ToolpathOptions::default());
        Ok(Self {
            source_name,
            volume,
            toolpath,
        })
    }
}

/// The twin's plugins, composed.
pub struct TwinPlugin;

impl Plugin for TwinPlugin {
    fn build(&self, app: &mut App) {
        app.add_plugins((scene::plugin, toolpath::plugin, camera::plugin));
    }
}

/// Runs the twin: a window, or with `screenshot` an offscreen render that saves one PNG.
///
/// # Errors
/// When the inputs cannot be loaded, or the offscreen render fails.
pub fn run(options: TwinOptions) -> anyhow::Result<()> {
    let scene = TwinScene::load(&options)?;
    for d in scene.toolpath.diagnostics.iter().take(20) {
        bevy::log::warn!("{}:{}: {}", scene.source_name, d.line, d.message);
    }
    if let Some(more) = scene
        .toolpath
        .diagnostics
        .len()
        .checked_sub(20)
        .filter(|n| *n > 0)
    {
        bevy::log::warn!("{}: {more} more lines could not be read", scene.source_name);
    }
    let mut app = App::new();
    let capture = match &options.screenshot {
        Some(path) => Some(capture::configure_headless(
            &mut app,
            path.clone(),
            options.size,
        )),
        None => {
            let title = format!("Gantry twin — {}", scene.source_name);
            app.add_plugins(
                DefaultPlugins
                    .set(WindowPlugin {
                        primary_window: Some(Window {
                            title,
                            resolution: options.size.into(),
                            ..default()
                        }),
                        ..default()
                    })
                    // `gantry` installed the process's tracing subscriber already.
                    .disable::<bevy::log::LogPlugin>(),
            );
            None
        }
    };
    app.insert_resource(scene).add_plugins(TwinPlugin);
    let exit = app.run();
    match (capture.map(|c| c.get()), exit) {
        (Some(capture::CaptureOutcome::Failed(why)), _) => anyhow::bail!("{why}"),
        (Some(capture::CaptureOutcome::Saved), AppExit::Success) | (None, AppExit::Success) => {
            Ok(())
        }
        (Some(other), _) => {
            anyhow::bail!("the twin stopped before the screenshot was saved ({other:?})")
        }
        (None, AppExit::Error(code)) => anyhow::bail!("the twin exited with error {code}"),
    }
}
