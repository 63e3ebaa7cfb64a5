//! The orbit camera: it looks at the middle of the build volume from the front right, and the user
//! turns it with the left mouse button or the arrow keys, pans with the right or middle button,
//! and zooms with the wheel or +/-. Presets: `1` iso, `2` top, `3` front, `4` or `F` follow the
//! nozzle; `O` orbits on its own; Home (or R) resets the view.
//!
//! The camera's pose is a pure function of [`Orbit`] (yaw, pitch, distance, focus), so a
//! screenshot with a preset is the same picture every time.

use bevy::camera::CameraProjection as _;
use bevy::core_pipeline::tonemapping::Tonemapping;
use bevy::input::mouse::{AccumulatedMouseMotion, AccumulatedMouseScroll, MouseScrollUnit};
use bevy::prelude::*;

use crate::SceneInfo;
use crate::hud::PointerOnHud;
use crate::lines::to_bevy;
use crate::playback::Nozzle;
use crate::toolpath::ViewSettings;

/// Where the camera is, as an orbit around a focus point.
#[derive(Component, Debug, Clone, Copy, PartialEq)]
pub struct Orbit {
    /// Rotation about the vertical axis, radians; 0 looks along −Z (from the front).
    pub yaw: f32,
    /// Elevation above the bed plane, radians.
    pub pitch: f32,
    /// Distance from the focus, mm.
    pub distance_mm: f32,
    /// The point looked at, in Bevy coordinates.
    pub focus: Vec3,
}

/// The camera presets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Preset {
    /// From the front right, 35° up: the whole volume.
    #[default]
    Iso,
    /// From above.
    Top,
    /// From the front, level with the bed.
    Front,
    /// Close to the nozzle, following it.
    Follow,
}

impl Preset {
    /// From the command line's word.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "iso" => Some(Self::Iso),
            "top" => Some(Self::Top),
            "front" => Some(Self::Front),
            "follow" => Some(Self::Follow),
            _ => None,
        }
    }
}

impl Orbit {
    /// The default view of a scene: front right, 35° up, the whole volume in frame.
    pub fn default_for(info: &SceneInfo) -> Self {
        Self::preset(info, Preset::Iso, None)
    }

    /// A preset's view; `nozzle` is where Follow looks (printer mm).
    pub fn preset(info: &SceneInfo, preset: Preset, nozzle: Option<[f32; 3]>) -> Self {
        #[allow(clippy::cast_possible_truncation)]
        let (lo, hi) = (
            info.volume_min_mm.map(|x| x as f32),
            info.volume_max_mm.map(|x| x as f32),
        );
        let focus = to_bevy([
            (lo[0] + hi[0]) / 2.0,
            (lo[1] + hi[1]) / 2.0,
            (hi[2] - lo[2]) * 0.4,
        ]);
        let diagonal = Vec3::new(hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]).length();
        let iso = Self {
            yaw: 0.5,
            pitch: 0.5,
            distance_mm: diagonal * 1.6,
            focus,
        };
        match preset {
            Preset::Iso => iso,
            Preset::Top => Self {
                yaw: 0.0,
                pitch: 1.5,
                focus: to_bevy([(lo[0] + hi[0]) / 2.0, (lo[1] + hi[1]) / 2.0, 0.0]),
                ..iso
            },
            Preset::Front => Self {
                yaw: 0.0,
                pitch: 0.12,
                ..iso
            },
            Preset::Follow => Self {
                yaw: 0.6,
                pitch: 0.55,
                distance_mm: 90.0,
                focus: to_bevy(nozzle.unwrap_or([
                    (lo[0] + hi[0]) / 2.0,
                    (lo[1] + hi[1]) / 2.0,
                    0.0,
                ])),
            },
        }
    }

    /// A view that frames the box `lo`–`hi` (printer mm) from the front right, 30° up.
    pub fn framing(lo: [f32; 3], hi: [f32; 3]) -> Self {
        let (lo, hi) = (Vec3::from(lo), Vec3::from(hi));
        let diagonal = (hi - lo).length().max(30.0);
        Self {
            yaw: 0.6,
            pitch: 0.5,
            distance_mm: diagonal * 1.9,
            focus: to_bevy(((lo + hi) / 2.0).to_array()),
        }
    }

    /// The camera transform for this orbit.
    pub fn transform(&self) -> Transform {
        let rotation = Quat::from_euler(EulerRot::YXZ, self.yaw, -self.pitch, 0.0);
        let position = self.focus + rotation * Vec3::new(0.0, 0.0, self.distance_mm);
        Transform::from_translation(position).looking_at(self.focus, Vec3::Y)
    }
}

/// Where the printer point `point_mm` appears in an image of `size` seen from `orbit` through
/// Bevy's default perspective camera (the twin's), in pixels from the top left; `None` behind
/// the camera. Tests use it to check pictures against positions.
pub fn project(orbit: &Orbit, size: (u32, u32), point_mm: [f32; 3]) -> Option<Vec2> {
    #[allow(clippy::cast_precision_loss)]
    let (w, h) = (size.0 as f32, size.1 as f32);
    let projection = PerspectiveProjection {
        aspect_ratio: w / h,
        ..default()
    };
    let clip_from_view = projection.get_clip_from_view();
    let view_from_world = orbit.transform().to_matrix().inverse();
    let clip = clip_from_view * view_from_world * to_bevy(point_mm).extend(1.0);
    if clip.w <= 0.0 {
        return None;
    }
    let ndc = clip.truncate() / clip.w;
    Some(Vec2::new((ndc.x + 1.0) / 2.0 * w, (1.0 - ndc.y) / 2.0 * h))
}

/// The orbit the view resets to.
#[derive(Component, Debug, Clone, Copy)]
pub struct HomeOrbit(pub Orbit);

/// Camera behaviour the user toggles.
#[derive(Resource, Debug, Clone, Copy, Default)]
pub struct CameraMode {
    /// The focus follows the nozzle.
    pub follow: bool,
    /// The camera turns on its own.
    pub auto_orbit: bool,
    /// The preset to start with.
    pub start: Preset,
}

/// Adds the camera and its controls.
pub fn plugin(app: &mut App) {
    app.init_resource::<CameraMode>()
        .add_systems(Startup, spawn_camera)
        .add_systems(
            Update,
            (control_orbit, presets, follow, apply_orbit).chain(),
        );
}

/// Spawns the camera at the starting preset.
pub fn spawn_camera(
    mut commands: Commands,
    info: Res<SceneInfo>,
    mode: Res<CameraMode>,
    adapter: Option<Res<bevy::render::renderer::RenderAdapterInfo>>,
) {
    // Software Vulkan pays for every sample of every tiny bead: multisampling triples its frame
    // time (measured: 123 k segments, 704 ms with 4× MSAA, 260 ms without).
    // (wgpu's DeviceType is not re-exported by Bevy; its name is.)
    let software = adapter.is_some_and(|a| format!("{:?}", a.device_type) == "Cpu");
    let msaa = if software { Msaa::Off } else { Msaa::Sample4 };
    let home = Orbit::default_for(&info);
    let orbit = Orbit::preset(&info, mode.start, None);
    commands.spawn((
        Name::new("Twin camera"),
        Camera3d::default(),
        // The HUD draws on this camera, also when it renders into an image.
        bevy::ui::IsDefaultUiCamera,
        // Colours are shown as authored: the pixel tests and the legend rely on it.
        Tonemapping::None,
        orbit.transform(),
        orbit,
        HomeOrbit(home),
        msaa,
    ));
}

#[allow(clippy::too_many_arguments)]
fn control_orbit(
    mouse: Res<ButtonInput<MouseButton>>,
    keys: Res<ButtonInput<KeyCode>>,
    motion: Res<AccumulatedMouseMotion>,
    scroll: Res<AccumulatedMouseScroll>,
    time: Res<Time>,
    on_hud: Res<PointerOnHud>,
    mut mode: ResMut<CameraMode>,
    mut cameras: Query<(&mut Orbit, &HomeOrbit)>,
) {
    let shift = keys.pressed(KeyCode::ShiftLeft) || keys.pressed(KeyCode::ShiftRight);
    for (mut orbit, home) in &mut cameras {
        let dt = time.delta_secs();
        if !on_hud.0 {
            if mouse.pressed(MouseButton::Left) {
                orbit.yaw -= motion.delta.x * 0.005;
                orbit.pitch += motion.delta.y * 0.005;
            }
            if mouse.pressed(MouseButton::Right) || mouse.pressed(MouseButton::Middle) {
                let t = orbit.transform();
                let scale = orbit.distance_mm * 0.0015;
                let pan = (-t.right() * motion.delta.x + t.up() * motion.delta.y) * scale;
                orbit.focus += pan;
                mode.follow = false;
            }
        }
        let key_rate = 1.5 * dt;
        if !shift {
            if keys.pressed(KeyCode::ArrowLeft) {
                orbit.yaw -= key_rate;
            }
            if keys.pressed(KeyCode::ArrowRight) {
                orbit.yaw += key_rate;
            }
            if keys.pressed(KeyCode::ArrowUp) {
                orbit.pitch += key_rate;
            }
            if keys.pressed(KeyCode::ArrowDown) {
                orbit.pitch -= key_rate;
            }
        }
        if mode.auto_orbit {
            orbit.yaw += 0.12 * dt;
        }
        let wheel = if on_hud.0 {
            0.0
        } else {
            match scroll.unit {
                MouseScrollUnit::Line => scroll.delta.y,
                MouseScrollUnit::Pixel => scroll.delta.y / 40.0,
            }
        };
        let mut zoom = wheel * 0.1;
        if keys.pressed(KeyCode::Equal) || keys.pressed(KeyCode::NumpadAdd) {
            zoom += 2.0 * dt;
        }
        if keys.pressed(KeyCode::Minus) || keys.pressed(KeyCode::NumpadSubtract) {
            zoom -= 2.0 * dt;
        }
        orbit.distance_mm = (orbit.distance_mm * (-zoom).exp()).clamp(5.0, 20_000.0);
        orbit.pitch = orbit.pitch.clamp(-1.5, 1.5);
        if keys.just_pressed(KeyCode::Home) || keys.just_pressed(KeyCode::KeyR) {
            *orbit = home.0;
            mode.follow = false;
        }
    }
}

fn presets(
    keys: Res<ButtonInput<KeyCode>>,
    info: Res<SceneInfo>,
    nozzle: Res<Nozzle>,
    settings: Res<ViewSettings>,
    state: Res<crate::loader::LoadState>,
    mut mode: ResMut<CameraMode>,
    mut cameras: Query<&mut Orbit>,
) {
    let pick = [
        (KeyCode::Digit1, Preset::Iso),
        (KeyCode::Digit2, Preset::Top),
        (KeyCode::Digit3, Preset::Front),
        (KeyCode::Digit4, Preset::Follow),
    ]
    .into_iter()
    .find(|(k, _)| keys.just_pressed(*k))
    .map(|(_, p)| p);
    if keys.just_pressed(KeyCode::Digit5)
        && let Some(meta) = &state.meta
        && meta.stats.has_extrusion()
    {
        let o = settings.offset_mm;
        let (lo, hi) = (
            Vec3::from(meta.stats.extrusion_min_mm) + o,
            Vec3::from(meta.stats.extrusion_max_mm) + o,
        );
        mode.follow = false;
        for mut orbit in &mut cameras {
            *orbit = Orbit::framing(lo.to_array(), hi.to_array());
        }
    }
    if keys.just_pressed(KeyCode::KeyF) {
        mode.follow = !mode.follow;
    }
    if keys.just_pressed(KeyCode::KeyO) {
        mode.auto_orbit = !mode.auto_orbit;
    }
    let Some(preset) = pick else { return };
    mode.follow = preset == Preset::Follow;
    let n = nozzle_world(&nozzle, &settings, &info);
    for mut o in &mut cameras {
        *o = Orbit::preset(&info, preset, Some(n));
    }
}

/// Where the nozzle is drawn, printer mm (a bed-slinger's nozzle stays at the middle of Y).
pub fn nozzle_world(nozzle: &Nozzle, settings: &ViewSettings, info: &SceneInfo) -> [f32; 3] {
    #[allow(clippy::cast_possible_truncation)]
    let p = nozzle.sample.pos_mm.map(|v| v as f32);
    let _ = info;
    (Vec3::from(p) + settings.offset_mm).to_array()
}

fn follow(
    mode: Res<CameraMode>,
    nozzle: Res<Nozzle>,
    settings: Res<ViewSettings>,
    info: Res<SceneInfo>,
    mut cameras: Query<&mut Orbit>,
) {
    if !mode.follow {
        return;
    }
    let target = to_bevy(nozzle_world(&nozzle, &settings, &info));
    for mut o in &mut cameras {
        if o.focus.distance(target) > 1e-4 {
            o.focus = target;
        }
    }
}

fn apply_orbit(mut cameras: Query<(&Orbit, &mut Transform), Changed<Orbit>>) {
    for (orbit, mut transform) in &mut cameras {
        *transform = orbit.transform();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orbit_camera_looks_at_its_focus_from_its_distance() {
        let o = Orbit {
            yaw: 0.3,
            pitch: 0.5,
            distance_mm: 300.0,
            focus: Vec3::new(10.0, 5.0, -20.0),
        };
        let t = o.transform();
        assert!((t.translation.distance(o.focus) - 300.0).abs() < 1e-3);
        let forward = t.forward();
        let to_focus = (o.focus - t.translation).normalize();
        assert!(forward.dot(to_focus) > 0.9999);
        assert!(
            t.translation.y > o.focus.y,
            "positive pitch looks down from above"
        );
    }
}
