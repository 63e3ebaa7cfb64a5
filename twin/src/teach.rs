//! The teaching mode, for a projector: a large, high-contrast HUD, the camera orbiting on its
//! own, an "explain" line saying what the current G-code line does with the planner's numbers,
//! and the velocity profile of the next moves (the bars under it: speed over the next
//! [`PROFILE_SECONDS`] of print time, the white bar is now). `T` toggles it.

use bevy::prelude::*;

use crate::camera::Orbit;
use crate::explain::explain;
use crate::hud::ExplainText;
use crate::loader::LoadState;
use crate::playback::Nozzle;

/// Whether the teaching mode is on.
#[derive(Resource, Debug, Clone, Copy, Default)]
pub struct Teaching(pub bool);

/// Print time the velocity profile covers, s.
pub const PROFILE_SECONDS: f64 = 3.0;
/// Auto-orbit speed, radians per second.
const ORBIT_RAD_S: f32 = 0.12;

/// Adds the teaching mode.
pub fn plugin(app: &mut App) {
    app.init_resource::<Teaching>()
        .add_systems(Update, (toggle, orbit, explain_line));
}

fn toggle(keys: Res<ButtonInput<KeyCode>>, mut teaching: ResMut<Teaching>) {
    if keys.just_pressed(KeyCode::KeyT) {
        teaching.0 = !teaching.0;
    }
}

/// The teaching camera: it frames the print (which a bed-slinger's bed carries, so the print
/// stays in the middle of the picture) and turns around it slowly.
#[allow(clippy::too_many_arguments)]
fn orbit(
    teaching: Res<Teaching>,
    time: Res<Time>,
    mouse: Res<ButtonInput<MouseButton>>,
    state: Res<LoadState>,
    settings: Res<crate::toolpath::ViewSettings>,
    mut cameras: Query<&mut Orbit>,
    mut framed: Local<bool>,
) {
    if !teaching.0 {
        *framed = false;
        return;
    }
    let Some(meta) = state.meta.as_ref().filter(|m| m.stats.has_extrusion()) else {
        return;
    };
    let o = settings.offset_mm;
    let (lo, hi) = (
        Vec3::from(meta.stats.extrusion_min_mm) + o,
        Vec3::from(meta.stats.extrusion_max_mm) + o,
    );
    let frame = Orbit::framing(lo.to_array(), hi.to_array());
    for mut orbit in &mut cameras {
        if !*framed {
            *orbit = frame;
        } else {
            orbit.focus = frame.focus;
            if !mouse.pressed(MouseButton::Left) {
                orbit.yaw += ORBIT_RAD_S * time.delta_secs();
            }
        }
    }
    *framed = true;
}

fn explain_line(
    teaching: Res<Teaching>,
    state: Res<LoadState>,
    nozzle: Res<Nozzle>,
    mut texts: Query<&mut Text, With<ExplainText>>,
    mut cache: Local<(u32, String)>,
) {
    if !teaching.0 {
        return;
    }
    let s = nozzle.sample;
    if cache.0 != s.line {
        cache.0 = s.line;
        cache.1 = state
            .line_index
            .line_text(&state.source, s.line)
            .unwrap_or_default();
    }
    let planned = s.move_index.and_then(|i| state.timeline.moves().get(i));
    let e = explain(&cache.1, planned, Some(&s));
    let text = if s.line == 0 {
        "waiting for the first move".to_owned()
    } else {
        format!("line {}  {}", s.line, e.text())
    };
    for mut t in &mut texts {
        **t = text.clone();
    }
}
