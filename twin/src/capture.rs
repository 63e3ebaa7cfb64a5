//! Offscreen rendering for `gantry twin --screenshot` and `--bench`: no window, no display server.
//!
//! The camera renders into an image. Software Vulkan (Mesa's lavapipe) compiles render pipelines
//! slowly, and a frame drawn before its pipelines exist is silently empty, so the capture waits:
//! until the scene is complete ([`crate::scene_ready`]: the toolpath on the GPU, the planner
//! done when playback needs it), then until a probe in the render world sees at least one
//! pipeline and none waiting for [`STABLE_FRAMES`] frames in a row. A pipeline that fails to
//! compile, or a render that is not ready after [`READY_TIMEOUT`], fails the run with a message
//! instead of saving a blank picture.
//!
//! `--bench` then renders [`BENCH_FRAMES`] frames with the camera turning a little each frame;
//! the render world waits for the device after each frame, so a frame's time is the whole of
//! its CPU and GPU work. It prints one JSON object ([`BenchReport`]).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bevy::app::ScheduleRunnerPlugin;
use bevy::camera::RenderTarget;
use bevy::image::Image;
use bevy::log::LogPlugin;
use bevy::prelude::*;
use bevy::render::render_resource::{CachedPipelineState, PipelineCache, TextureFormat};
use bevy::render::view::screenshot::{Screenshot, ScreenshotCaptured};
use bevy::render::{Render, RenderApp, RenderPlugin, RenderSystems};
use bevy::shader::ShaderCacheError;
use bevy::window::ExitCondition;
use bevy::winit::WinitPlugin;

use crate::camera;

/// Frames in a row with no waiting pipeline before the capture.
pub const STABLE_FRAMES: u32 = 3;
/// How long to wait for the render to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(300);

/// Frames rendered for `--bench` after the first.
pub const BENCH_FRAMES: usize = 9;

/// Where to save the capture, how big it is, and whether to benchmark.
#[derive(Resource, Debug, Clone)]
pub struct CaptureRequest {
    /// The PNG to write (none: benchmark only).
    pub path: Option<PathBuf>,
    /// Image size, px.
    pub size: (u32, u32),
    /// Measure and print a [`BenchReport`].
    pub bench: bool,
}

/// The image the camera renders into.
#[derive(Resource, Debug, Clone)]
struct CaptureTarget(Handle<Image>);

/// How the capture is going; [`crate::run`] reads the final state after the app exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaptureOutcome {
    /// Waiting for the pipelines.
    Waiting,
    /// Frames are being timed for `--bench`.
    Benchmarking,
    /// The screenshot was requested and is on its way.
    Requested,
    /// The PNG was written.
    Saved,
    /// The render could not be captured, and why.
    Failed(String),
}

/// A shared handle on the [`CaptureOutcome`]: `App::run` consumes the app, so the outcome must
/// outlive its world.
#[derive(Resource, Debug, Clone)]
pub struct CaptureStatus(Arc<Mutex<CaptureOutcome>>);

impl CaptureStatus {
    /// The outcome now.
    pub fn get(&self) -> CaptureOutcome {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, outcome: CaptureOutcome) {
        if let CaptureOutcome::Failed(why) = &outcome {
            bevy::log::error!("screenshot failed: {why}");
        }
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = outcome;
    }
}

/// What the render world's probe saw in the pipeline cache on the last frame.
#[derive(Debug, Default, Clone)]
struct ProbeReading {
    frames: u64,
    pipelines: usize,
    waiting: usize,
    errors: Vec<String>,
}

/// Shared between the render world (writes) and the main world (reads).
#[derive(Resource, Debug, Default, Clone)]
struct PipelineProbe(Arc<Mutex<ProbeReading>>);

/// Sets `app` up to render offscreen and save one frame or benchmark; the returned handle tells
/// how it went once the app has exited.
pub fn configure_headless(app: &mut App, request: CaptureRequest) -> CaptureStatus {
    let status = CaptureStatus(Arc::new(Mutex::new(CaptureOutcome::Waiting)));
    app.add_plugins(
        DefaultPlugins
            .set(WindowPlugin {
                primary_window: None,
                exit_condition: ExitCondition::DontExit,
                ..default()
            })
            .set(RenderPlugin {
                synchronous_pipeline_compilation: true,
                ..default()
            })
            .disable::<WinitPlugin>()
            // `gantry` installed the process's tracing subscriber already.
            .disable::<LogPlugin>(),
    )
    .add_plugins(ScheduleRunnerPlugin::run_loop(Duration::from_millis(1)))
    .insert_resource(request)
    .insert_resource(status.clone())
    .init_resource::<SceneReady>()
    .init_resource::<PlannerDone>()
    .init_resource::<Bench>()
    .add_systems(Startup, render_to_image.after(camera::spawn_camera))
    .add_systems(First, check_scene)
    .add_systems(Update, (capture_when_ready, bench_frames).chain());

    let probe = PipelineProbe::default();
    let timing = FrameTiming::default();
    app.insert_resource(probe.clone())
        .insert_resource(timing.clone());
    if let Some(render_app) = app.get_sub_app_mut(RenderApp) {
        render_app
            .insert_resource(probe)
            .insert_resource(timing)
            .add_systems(
                Render,
                (probe_pipelines, wait_for_device)
                    .chain()
                    .in_set(RenderSystems::Cleanup),
            );
    }
    status
}

/// Whether the scene is complete (see [`crate::scene_ready`]), updated every frame.
#[derive(Resource, Debug, Default, Clone, Copy)]
struct SceneReady(bool);

/// Whether the planner finished (or there is none), updated every frame.
#[derive(Resource, Debug, Default, Clone, Copy)]
struct PlannerDone(bool);

fn check_scene(world: &mut World) {
    let ready = crate::scene_ready(world);
    world.resource_mut::<SceneReady>().0 = ready;
    let planned = world.get_resource::<crate::live::LiveState>().is_some()
        || world
            .get_resource::<crate::loader::LoadState>()
            .is_none_or(|s| s.planned);
    world.resource_mut::<PlannerDone>().0 = planned;
}

/// When each rendered frame finished on the device, shared by the render world (writes).
#[derive(Resource, Debug, Default, Clone)]
struct FrameTiming(Arc<Mutex<Vec<std::time::Instant>>>);

fn wait_for_device(device: Res<bevy::render::renderer::RenderDevice>, timing: Res<FrameTiming>) {
    // Offscreen frames are not paced by a display: wait for the device so that each frame's
    // time is its whole cost, and frames never pile up in the queue.
    let _ = device.poll(bevy::render::render_resource::PollType::wait_indefinitely());
    timing
        .0
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(std::time::Instant::now());
}

/// What `--bench` prints.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BenchReport {
    /// Size of the G-code file, bytes.
    pub file_bytes: u64,
    /// Segments of the toolpath.
    pub segments: u64,
    /// G-code lines.
    pub lines: u32,
    /// From the start of reading to the last page of points (level 0) on the GPU, s.
    pub load_s: f64,
    /// Parsing alone (file to pages in memory), s.
    pub parse_s: f64,
    /// Points, G-code lines and chunks held for level 0, per segment.
    pub bytes_per_segment: f64,
    /// The levels of detail, per segment of level 0.
    pub lod_bytes_per_segment: f64,
    /// When the levels of detail were ready, s from the start.
    pub lod_ready_s: f64,
    /// When the planner had timed the whole file, s from the start.
    pub plan_s: f64,
    /// Moves the planner committed.
    pub moves: usize,
    /// The planner's timeline, bytes per move.
    pub timeline_bytes_per_move: f64,
    /// From the start to the first frame with the whole toolpath drawn, s.
    pub first_frame_s: f64,
    /// Median frame time after the first, ms.
    pub frame_ms_median: f64,
    /// Slowest frame after the first, ms.
    pub frame_ms_max: f64,
    /// Segments drawn in the last frame (after level of detail).
    pub segments_drawn: u64,
    /// The segment budget per frame.
    pub budget: u64,
    /// Image size, px.
    pub size: (u32, u32),
    /// The graphics adapter.
    pub adapter: String,
}

/// The benchmark's progress.
#[derive(Resource, Debug, Default)]
struct Bench {
    /// Frame-finish times recorded before the first measured frame.
    skip: usize,
    /// Frame-finish times recorded when the scene became ready: the next is the first full frame.
    ready_at: Option<usize>,
}

fn render_to_image(
    mut commands: Commands,
    request: Res<CaptureRequest>,
    mut images: ResMut<Assets<Image>>,
    cameras: Query<Entity, With<Camera3d>>,
) {
    let (w, h) = request.size;
    let image = Image::new_target_texture(w, h, TextureFormat::Rgba8UnormSrgb, None);
    let handle = images.add(image);
    for camera in &cameras {
        commands
            .entity(camera)
            .insert(RenderTarget::Image(handle.clone().into()));
    }
    commands.insert_resource(CaptureTarget(handle));
}

fn probe_pipelines(cache: Res<PipelineCache>, probe: Res<PipelineProbe>) {
    let mut reading = probe.0.lock().unwrap_or_else(PoisonError::into_inner);
    reading.frames += 1;
    reading.pipelines = cache.pipelines().count();
    reading.waiting = cache.waiting_pipelines().count();
    reading.errors = cache
        .pipelines()
        .filter_map(|p| pipeline_failure(&p.state))
        .collect();
}

/// The reason a pipeline failed for good, or `None` while it may still compile.
///
/// A shader that has not loaded yet is retried by the pipeline cache on a later frame: that is
/// waiting, not failure (under load, software Vulkan runs showed it on about one run in three).
fn pipeline_failure(state: &CachedPipelineState) -> Option<String> {
    match state {
        CachedPipelineState::Err(
            ShaderCacheError::ShaderNotLoaded(_) | ShaderCacheError::ShaderImportNotYetAvailable,
        ) => None,
        CachedPipelineState::Err(e) => Some(e.to_string()),
        _ => None,
    }
}

#[allow(clippy::too_many_arguments)]
fn capture_when_ready(
    mut commands: Commands,
    probe: Res<PipelineProbe>,
    target: Option<Res<CaptureTarget>>,
    time: Res<Time<Real>>,
    status: Res<CaptureStatus>,
    scene: Res<SceneReady>,
    request: Res<CaptureRequest>,
    timing: Res<FrameTiming>,
    mut bench: ResMut<Bench>,
    planned: Res<PlannerDone>,
    mut stable: Local<u32>,
    mut exit: MessageWriter<AppExit>,
) {
    if status.get() != CaptureOutcome::Waiting {
        return;
    }
    let reading = probe
        .0
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let failure = if let Some(e) = reading.errors.first() {
        Some(format!("a render pipeline failed to compile: {e}"))
    } else if time.elapsed() > READY_TIMEOUT {
        Some(format!(
            "the render was not ready after {} s ({} pipelines, {} waiting)",
            READY_TIMEOUT.as_secs(),
            reading.pipelines,
            reading.waiting
        ))
    } else {
        None
    };
    if let Some(why) = failure {
        status.set(CaptureOutcome::Failed(why));
        exit.write(AppExit::error());
        return;
    }
    *stable = if scene.0 && reading.frames >= 2 && reading.pipelines > 0 && reading.waiting == 0 {
        *stable + 1
    } else {
        0
    };
    let Some(target) = target else { return };
    if *stable < STABLE_FRAMES {
        return;
    }
    bevy::log::info!(
        "render ready after {:.1} s and {} frames ({} pipelines)",
        time.elapsed_secs(),
        reading.frames,
        reading.pipelines
    );
    if request.bench {
        bench.ready_at.get_or_insert_with(|| {
            timing
                .0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .len()
        });
        // Frames are timed once the planner is done too, so that they are the renderer's alone.
        if !planned.0 {
            return;
        }
        status.set(CaptureOutcome::Benchmarking);
        bench.skip = timing
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        return;
    }
    status.set(CaptureOutcome::Requested);
    commands
        .spawn(Screenshot::image(target.0.clone()))
        .observe(finish_capture);
}

#[allow(clippy::too_many_arguments)]
fn bench_frames(
    mut commands: Commands,
    status: Res<CaptureStatus>,
    bench: Res<Bench>,
    timing: Res<FrameTiming>,
    request: Res<CaptureRequest>,
    target: Option<Res<CaptureTarget>>,
    state: Res<crate::loader::LoadState>,
    upload: Res<crate::ribbons::UploadStatus>,
    settings: Res<crate::toolpath::ViewSettings>,
    mut cameras: Query<&mut crate::camera::Orbit>,
    mut exit: MessageWriter<AppExit>,
) {
    if status.get() != CaptureOutcome::Benchmarking {
        return;
    }
    // Turn the camera a little each frame, as a user orbiting the print.
    for mut o in &mut cameras {
        o.yaw += 0.03;
    }
    let times = timing
        .0
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    // Frames finished since the measurement began: the first is the first full frame.
    let done = &times[bench.skip.min(times.len())..];
    if done.len() < BENCH_FRAMES + 1 {
        return;
    }
    let mut frame_ms: Vec<f64> = done
        .windows(2)
        .map(|w| w[1].duration_since(w[0]).as_secs_f64() * 1000.0)
        .collect();
    frame_ms.sort_by(f64::total_cmp);
    let reading = upload.get();
    let meta = state.meta.as_deref();
    let segments = meta.map_or(0, |m| m.segments);
    let level0 = state.loaded().map_or(0, |l| l.resident_bytes());
    let lod_bytes = state.lods.as_ref().map_or(0, |l| l.bytes());
    #[allow(clippy::cast_precision_loss)]
    let per = |b: usize| {
        if segments == 0 {
            0.0
        } else {
            b as f64 / segments as f64
        }
    };
    let since = |t: Option<std::time::Instant>| {
        t.map_or(0.0, |t| t.duration_since(state.started).as_secs_f64())
    };
    let report = BenchReport {
        file_bytes: state.file_bytes,
        segments,
        lines: meta.map_or(0, |m| m.lines_read),
        // Level-0 pages in GPU buffers (made by the render world, in order).
        load_s: since(
            reading
                .uploaded_at
                .get(state.pages.len().saturating_sub(1))
                .copied(),
        ),
        parse_s: state.parse_time.map_or(0.0, |d| d.as_secs_f64()),
        bytes_per_segment: per(level0),
        lod_bytes_per_segment: per(lod_bytes),
        lod_ready_s: state.lod_time.map_or(0.0, |d| d.as_secs_f64()),
        plan_s: state.plan_time.map_or(0.0, |d| d.as_secs_f64()),
        moves: state.timeline.moves().len(),
        #[allow(clippy::cast_precision_loss)]
        timeline_bytes_per_move: state.timeline.resident_bytes() as f64
            / state.timeline.moves().len().max(1) as f64,
        // The first frame drawn once the toolpath, its levels of detail and the pipelines
        // were ready (the planner may still be running then).
        first_frame_s: since(bench.ready_at.and_then(|i| times.get(i)).copied()),
        frame_ms_median: frame_ms[frame_ms.len() / 2],
        frame_ms_max: frame_ms.last().copied().unwrap_or(0.0),
        segments_drawn: reading.drawn_segments,
        budget: settings.budget,
        size: request.size,
        adapter: reading.adapter.unwrap_or_default(),
    };
    match serde_json::to_string(&report) {
        Ok(json) => {
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            if let Err(e) = writeln!(out, "{json}").and_then(|()| out.flush()) {
                bevy::log::error!("cannot write the benchmark: {e}");
            }
        }
        Err(e) => bevy::log::error!("cannot write the benchmark: {e}"),
    }
    match (&request.path, target) {
        (Some(_), Some(target)) => {
            status.set(CaptureOutcome::Requested);
            commands
                .spawn(Screenshot::image(target.0.clone()))
                .observe(finish_capture);
        }
        _ => {
            status.set(CaptureOutcome::Saved);
            exit.write(AppExit::Success);
        }
    }
}

fn finish_capture(
    captured: On<ScreenshotCaptured>,
    request: Res<CaptureRequest>,
    status: Res<CaptureStatus>,
    mut exit: MessageWriter<AppExit>,
) {
    let Some(path) = &request.path else {
        status.set(CaptureOutcome::Saved);
        exit.write(AppExit::Success);
        return;
    };
    match write_png(&captured.image, path) {
        Ok(()) => {
            bevy::log::info!("saved {}", path.display());
            status.set(CaptureOutcome::Saved);
            exit.write(AppExit::Success);
        }
        Err(why) => {
            status.set(CaptureOutcome::Failed(why));
            exit.write(AppExit::error());
        }
    }
}

/// Writes an 8-bit RGBA or BGRA image as an RGB PNG (the alpha channel carries nothing here).
fn write_png(image: &Image, path: &std::path::Path) -> Result<(), String> {
    let (w, h) = (image.width(), image.height());
    let format = image.texture_descriptor.format;
    let bgra = match format {
        TextureFormat::Rgba8UnormSrgb | TextureFormat::Rgba8Unorm => false,
        TextureFormat::Bgra8UnormSrgb | TextureFormat::Bgra8Unorm => true,
        other => {
            return Err(format!(
                "cannot save a screenshot of texture format {other:?}"
            ));
        }
    };
    let data = image
        .data
        .as_deref()
        .ok_or("the screenshot has no pixel data")?;
    let expected = (w as usize) * (h as usize) * 4;
    if data.len() != expected {
        return Err(format!(
            "the screenshot has {} bytes, expected {expected}",
            data.len()
        ));
    }
    let rgb: Vec<u8> = data
        .chunks_exact(4)
        .flat_map(|p| {
            if bgra {
                [p[2], p[1], p[0]]
            } else {
                [p[0], p[1], p[2]]
            }
        })
        .collect();
    let file = std::fs::File::create(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), w, h);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder
        .write_header()
        .and_then(|mut writer| writer.write_image_data(&rgb))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a shader still loading made `--screenshot` fail intermittently.
    #[test]
    fn a_shader_still_loading_is_not_a_failure() {
        let loading =
            CachedPipelineState::Err(ShaderCacheError::ShaderNotLoaded(AssetId::default()));
        assert_eq!(pipeline_failure(&loading), None);
        let import = CachedPipelineState::Err(ShaderCacheError::ShaderImportNotYetAvailable);
        assert_eq!(pipeline_failure(&import), None);
        assert_eq!(pipeline_failure(&CachedPipelineState::Queued), None);
        let broken =
            CachedPipelineState::Err(ShaderCacheError::CreateShaderModule("bad WGSL".into()));
        assert_eq!(
            pipeline_failure(&broken).as_deref(),
            Some("Could not create shader module: bad WGSL")
        );
    }
}
