//! Offscreen rendering for `gantry twin --screenshot`: no window, no display server.
//!
//! The camera renders into an image. Software Vulkan (Mesa's lavapipe) compiles render pipelines
//! slowly, and a frame drawn before its pipelines exist is silently empty, so the capture waits:
//! a probe in the render world counts the pipeline cache's waiting pipelines each frame, and the
//! screenshot is taken only once at least one pipeline exists and none has been waiting for
//! [`STABLE_FRAMES`] frames in a row. A pipeline that fails to compile, or a render that is not
//! ready after [`READY_TIMEOUT`], fails the run with a message instead of saving a blank picture.

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

/// Where to save the capture and how big it is.
#[derive(Resource, Debug, Clone)]
struct CaptureRequest {
    path: PathBuf,
    size: (u32, u32),
}

/// The image the camera renders into.
#[derive(Resource, Debug, Clone)]
struct CaptureTarget(Handle<Image>);

/// How the capture is going; [`crate::run`] reads the final state after the app exits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaptureOutcome {
    /// Waiting for the pipelines.
    Waiting,
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

/// Sets `app` up to render offscreen at `size` and save one frame to `path`; the returned handle
/// tells how it went once the app has exited.
pub fn configure_headless(app: &mut App, path: PathBuf, size: (u32, u32)) -> CaptureStatus {
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
    .insert_resource(CaptureRequest { path, size })
    .insert_resource(status.clone())
    .add_systems(Startup, render_to_image.after(camera::spawn_camera))
    .add_systems(Update, capture_when_ready);

    let probe = PipelineProbe::default();
    app.insert_resource(probe.clone());
    if let Some(render_app) = app.get_sub_app_mut(RenderApp) {
        render_app
            .insert_resource(probe)
            .add_systems(Render, probe_pipelines.in_set(RenderSystems::Cleanup));
    }
    status
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

fn capture_when_ready(
    mut commands: Commands,
    probe: Res<PipelineProbe>,
    target: Option<Res<CaptureTarget>>,
    time: Res<Time<Real>>,
    status: Res<CaptureStatus>,
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
    *stable = if reading.frames >= 2 && reading.pipelines > 0 && reading.waiting == 0 {
        *stable + 1
    } else {
        0
    };
    let Some(target) = target else { return };
    if *stable < STABLE_FRAMES {
        return;
    }
    bevy::log::info!(
        "render ready after {:.1} s and {} frames ({} pipelines); capturing",
        time.elapsed_secs(),
        reading.frames,
        reading.pipelines
    );
    status.set(CaptureOutcome::Requested);
    commands
        .spawn(Screenshot::image(target.0.clone()))
        .observe(finish_capture);
}

fn finish_capture(
    captured: On<ScreenshotCaptured>,
    request: Res<CaptureRequest>,
    status: Res<CaptureStatus>,
    mut exit: MessageWriter<AppExit>,
) {
    match write_png(&captured.image, &request.path) {
        Ok(()) => {
            bevy::log::info!("saved {}", request.path.display());
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
