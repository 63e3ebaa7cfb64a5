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

fn orbit(
    teaching: Res<Teaching>,
    time: Res<Time>,
    mouse: Res<ButtonInput<MouseButton>>,
    mut cameras: Query<&mut Orbit>,
) {
    if !teaching.0 || mouse.pressed(MouseButton::Left) {
        return;
    }
    for mut o in &mut cameras {
        o.yaw += ORBIT_RAD_S * time.delta_secs();
    }
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
