//! gantry-twin: the Bevy digital twin — a G-code toolpath as lit beads coloured by feature,
//! speed, layer or flow, replayed on the planner's clock inside a model of the printer, with a
//! HUD, a teaching mode for projectors and live feeds: a printer served by core's API, or the
//! simulated MCU in process.
//!
//! The twin runs as its own process (`gantry twin FILE`), with its own window and event loop:
//! Tauri's and winit's event loops cannot share a process portably (both want the main thread on
//! macOS), and a GPU driver crash in the twin must not take the desktop UI down. The desktop shell
//! starts it; the twin reads the file itself through `gantry_core::motion`.
//!
//! With `--screenshot` the twin renders offscreen into an image (no window, no display server; Mesa's
//! software Vulkan is enough), waits until the toolpath is on the GPU and every render pipeline
//! is compiled — frames drawn before that are empty on software Vulkan — saves one frame as PNG
//! and exits. `--bench` measures loading and frame times the same way and prints one JSON object.
//!
//! One plugin per file: [`scene`] (bed, volume, axes, light), [`ribbons`] (the toolpath renderer),
//! [`toolpath`] (what the ribbons draw each frame, level of detail), [`loader`] (background
//! loading and planning), [`playback`], [`printer_model`], [`camera`], [`hud`], [`teach`],
//! [`live`] (the simulated MCU's steppers), [`feed`] (a printer served by core's API: its live
//! nozzle and its job's file) and [`capture`] (offscreen render, screenshot, bench).
//! Pure modules beside them: [`toolpath_data`] (the GPU format), [`lod`], [`timeline`]
//! (positions over time from the planner), [`machine`] (kinematics), [`explain`], [`lines`].

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use bevy::prelude::*;
use gantry_core::motion::config::Config;
use gantry_core::motion::toolpath::ToolpathOptions;

pub mod camera;
pub mod capture;
pub mod explain;
pub mod feed;
pub mod hud;
pub mod lines;
pub mod live;
pub mod loader;
pub mod lod;
pub mod machine;
pub mod parent;
pub mod playback;
pub mod printer_model;
pub mod ribbons;
pub mod scene;
pub mod teach;
pub mod timeline;
pub mod toolpath;
pub mod toolpath_data;

/// The bundled sample print, shown when no file is given.
pub const SAMPLE_GCODE: &str = include_str!("../../assets/gcode/sample.gcode");
/// The name the sample is shown under.
pub const SAMPLE_NAME: &str = "sample.gcode (bundled)";

/// Segments a frame draws on a software renderer (lavapipe) before coarser levels of detail
/// take over: about half a second a frame there (≈ 1.2 µs a segment without multisampling).
pub const SOFTWARE_BUDGET: u64 = 400_000;
/// Segments a frame draws on a GPU.
pub const GPU_BUDGET: u64 = 40_000_000;

/// What the twin should show and how.
#[derive(Debug, Clone)]
pub struct TwinOptions {
    /// The G-code file; `None` shows the bundled sample.
    pub gcode: Option<PathBuf>,
    /// A printer.cfg for the machine and the planner; `None` uses the built-in simulated printer.
    pub config: Option<PathBuf>,
    /// Render offscreen, save this PNG and exit.
    pub screenshot: Option<PathBuf>,
    /// Window or image size in pixels.
    pub size: (u32, u32),
    /// Where playback starts (and what a screenshot shows).
    pub at: Option<playback::Jump>,
    /// Show layers 1 ..= N only (1-based, as the HUD counts), the top one highlighted.
    pub layer: Option<usize>,
    /// Colour by.
    pub color: toolpath::ColorMode,
    /// Draw travel moves.
    pub travel: bool,
    /// Start in teaching mode.
    pub teach: bool,
    /// Hide the HUD.
    pub no_hud: bool,
    /// The camera preset to start with.
    pub view: camera::Preset,
    /// Start playing at this speed.
    pub play: Option<f64>,
    /// Measure load and frame times offscreen and print one JSON object.
    pub bench: bool,
    /// The most segments a frame draws (default: by the adapter).
    pub budget: Option<u64>,
    /// Run this file on the simulated MCU in process and show its steppers.
    pub live_sim: Option<PathBuf>,
    /// Virtual seconds per real second for `live_sim`.
    pub sim_speed: f64,
    /// Follow a printer served by core's API (the job's file, when readable, is the ghost).
    pub live: Option<feed::FeedTarget>,
    /// End when standard input ends (the desktop app holds it: the twin ends with the app,
    /// however the app ends).
    pub until_stdin_closes: bool,
}

impl Default for TwinOptions {
    fn default() -> Self {
        Self {
            gcode: None,
            config: None,
            screenshot: None,
            size: (1280, 800),
            at: None,
            layer: None,
            color: toolpath::ColorMode::Feature,
            travel: false,
            teach: false,
            no_hud: false,
            view: camera::Preset::Iso,
            play: None,
            bench: false,
            budget: None,
            live_sim: None,
            sim_speed: 1.0,
            live: None,
            until_stdin_closes: false,
        }
    }
}

/// The printer and file being shown, read before the app starts.
#[derive(Resource, Debug, Clone)]
pub struct SceneInfo {
    /// What the toolpath came from, for the window title.
    pub source_name: String,
    /// The reachable volume's low corner, mm.
    pub volume_min_mm: [f64; 3],
    /// Its high corner, mm.
    pub volume_max_mm: [f64; 3],
    /// The machine (kinematics, steppers).
    pub machine: machine::Machine,
    /// A one-line description of the machine.
    pub machine_desc: String,
}

impl SceneInfo {
    /// The scene of `machine` showing `source_name`.
    pub fn new(source_name: impl Into<String>, machine: machine::Machine) -> Self {
        Self {
            source_name: source_name.into(),
            volume_min_mm: machine.volume_min_mm,
            volume_max_mm: machine.volume_max_mm,
            machine_desc: machine.describe(),
            machine,
        }
    }
}

/// The printer.cfg the options name, or the simulated printer's.
///
/// # Errors
/// A file that cannot be read or parsed, named in the message.
pub fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<Config> {
    match path {
        // Through core's loader, so [include] files are read too.
        Some(path) => gantry_core::printer_config::load(path)
            .with_context(|| format!("cannot load printer config {}", path.display())),
        None => Ok(Config::parse(
            gantry_core::printers::SIMULATED_CONFIG,
            gantry_core::printers::SIMULATED_CONFIG_NAME,
        )?),
    }
}

/// The toolpath reader's options for a machine: Klipper's 1 mm arc chords, refined so that no
/// chord strays more than 10 µm from its arc (arcs are drawn as arcs).
pub fn reader_options(machine: &machine::Machine) -> ToolpathOptions {
    ToolpathOptions {
        mm_per_arc_segment: 1.0,
        max_arc_deviation_mm: Some(0.01),
        filament_diameter_mm: machine.filament_diameter_mm,
    }
}

/// The twin's plugins, composed (the app's window or headless setup comes first).
pub struct TwinPlugin;

impl Plugin for TwinPlugin {
    fn build(&self, app: &mut App) {
        app.add_plugins((
            ribbons::plugin,
            toolpath::plugin,
            scene::plugin,
            camera::plugin,
            playback::plugin,
            printer_model::plugin,
            hud::plugin,
            teach::plugin,
        ))
        .add_systems(Update, choose_budget);
    }
}

/// The segment budget by adapter, once the renderer knows it (unless the user set one).
#[derive(Resource, Debug, Clone, Copy)]
struct BudgetChoice {
    fixed: Option<u64>,
    done: bool,
}

///
/// The adapter is known as soon as the renderer is (before the loader starts): a budget chosen
/// only after the first upload, as it was, let the first frames of a large file draw every page
/// loaded so far.
fn choose_budget(
    mut choice: ResMut<BudgetChoice>,
    adapter: Option<Res<bevy::render::renderer::RenderAdapterInfo>>,
    mut settings: ResMut<toolpath::ViewSettings>,
) {
    if choice.done {
        return;
    }
    if let Some(b) = choice.fixed {
        settings.budget = b;
        choice.done = true;
        return;
    }
    let Some(adapter) = adapter else {
        return;
    };
    settings.budget = if format!("{:?}", adapter.device_type) == "Cpu" {
        SOFTWARE_BUDGET
    } else {
        GPU_BUDGET
    };
    choice.done = true;
}

/// Runs the twin: a window, or with `screenshot`/`bench` an offscreen render.
///
/// # Errors
/// When the inputs cannot be loaded, or the offscreen render fails.
pub fn run(options: TwinOptions) -> anyhow::Result<()> {
    let config = load_config(options.config.as_deref())?;
    let machine = machine::Machine::from_config(&config)?;
    let gcode = options.gcode.as_ref().or(options.live_sim.as_ref());
    let (source_name, source) = match gcode {
        // Following a printer without a file: nothing to draw until its job's file is known.
        None if options.live.is_some() => (
            "no file yet".to_owned(),
            loader::GcodeSource::Memory(Arc::from(&b""[..])),
        ),
        Some(path) => {
            std::fs::metadata(path)
                .with_context(|| format!("cannot read G-code file {}", path.display()))?;
            (
                path.display().to_string(),
                loader::GcodeSource::File(path.clone()),
            )
        }
        None => (
            SAMPLE_NAME.to_owned(),
            loader::GcodeSource::Memory(Arc::from(SAMPLE_GCODE.as_bytes())),
        ),
    };
    let info = SceneInfo::new(source_name.clone(), machine.clone());

    let mut app = App::new();
    let headless = options.screenshot.is_some() || options.bench;
    let capture = if headless {
        Some(capture::configure_headless(
            &mut app,
            capture::CaptureRequest {
                path: options.screenshot.clone(),
                size: options.size,
                bench: options.bench,
            },
        ))
    } else {
        let title = format!("Gantry twin — {source_name}");
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
    };
    app.insert_resource(info)
        .insert_resource(BudgetChoice {
            fixed: options.budget,
            done: false,
        })
        .insert_resource(camera::CameraMode {
            follow: options.view == camera::Preset::Follow,
            auto_orbit: false,
            start: options.view,
        })
        .insert_resource(teach::Teaching(options.teach))
        .insert_resource(hud::HudVisible(!options.no_hud))
        .insert_resource(toolpath::ViewSettings {
            color: options.color,
            travel: options.travel,
            layer_range: None,
            ..default()
        });
    let mut playback = playback::Playback::default();
    if let Some(jump) = options
        .at
        .filter(|_| options.live_sim.is_none() && options.live.is_none())
    {
        playback.jump(jump);
    }
    if let Some(speed) = options.play {
        playback.active = true;
        playback.playing = true;
        playback.speed = speed;
    }
    app.insert_resource(playback);
    app.add_plugins(TwinPlugin);
    if options.until_stdin_closes {
        app.add_plugins(parent::plugin);
    }
    if let Some(n) = options.layer {
        app.insert_resource(StartLayer(n));
        app.add_systems(Update, apply_start_layer);
    }
    let live = options.live_sim.is_some() || options.live.is_some();
    if let Some(target) = options.live.clone() {
        let ghost = options.gcode.clone();
        feed::start(
            &mut app,
            target,
            config.clone(),
            reader_options(&machine),
            ghost,
        )?;
    }
    if let Some(file) = &options.live_sim {
        // In live mode `--at 60s` means: show the printer after 60 s of (virtual) time.
        let after = match options.at {
            Some(playback::Jump::Seconds(s)) => s,
            _ => 0.0,
        };
        // A picture holds the print still at that moment.
        live::start(&mut app, &config, file, options.sim_speed, after, headless)?;
    }
    // The toolpath is drawn in both modes; the live feed needs no timeline of its own.
    loader::start(
        &mut app,
        source_name,
        source,
        config,
        reader_options(&machine),
        !live,
    );
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

/// `--layer N`, applied once the layers are known.
#[derive(Resource, Debug, Clone, Copy)]
struct StartLayer(usize);

fn apply_start_layer(
    mut commands: Commands,
    start: Option<Res<StartLayer>>,
    levels: Res<toolpath::HeightLevels>,
    mut settings: ResMut<toolpath::ViewSettings>,
) {
    let Some(start) = start else { return };
    if levels.z_mm.is_empty() {
        return;
    }
    let top = start.0.saturating_sub(1).min(levels.z_mm.len() - 1);
    settings.layer_range = Some((0, top));
    commands.remove_resource::<StartLayer>();
}

/// Whether everything a picture depends on has arrived: the toolpath read and on the GPU with
/// its levels of detail, and the planner done when playback waits for it.
pub fn scene_ready(world: &World) -> bool {
    // A printer followed over the API is ready as its feed says (a server that reports no
    // position has no nozzle to wait for); the in-process sim once it has a position.
    let live_ready = match world.get_resource::<feed::LiveFeed>() {
        Some(f) => f.settled(),
        None => world
            .get_resource::<live::LiveState>()
            .is_none_or(live::LiveState::ready),
    };
    if !live_ready {
        return false;
    }
    let Some(state) = world.get_resource::<loader::LoadState>() else {
        return false;
    };
    if state.error.is_some() {
        return true; // capture reports it
    }
    let (epoch, pages) = world
        .get_resource::<ribbons::RibbonPages>()
        .map_or((0, 0), ribbons::RibbonPages::pushed);
    let uploaded = world
        .get_resource::<ribbons::UploadStatus>()
        .map(ribbons::UploadStatus::get)
        .filter(|s| s.epoch == epoch)
        .map_or(0, |s| s.pages);
    let live = world.get_resource::<live::LiveState>().is_some();
    let playback_ready = live
        || world
            .get_resource::<playback::Playback>()
            .is_none_or(|p| p.pending.is_none() && (!p.active || state.planned));
    let layers_ready = world.get_resource::<StartLayer>().is_none();
    state.parsed() && state.lods.is_some() && uploaded >= pages && playback_ready && layers_ready
}
