//! The orbit camera: it looks at the middle of the bed from the front right, and the user turns it
//! with the left mouse button or the arrow keys, pans with the right or middle button, and zooms
//! with the wheel or +/-. Home (or R) resets the view.
//!
//! The camera's pose is a pure function of [`Orbit`] (yaw, pitch, distance, focus), so a
//! screenshot with the default orbit is the same picture every time.

use bevy::core_pipeline::tonemapping::Tonemapping;
use bevy::input::mouse::{AccumulatedMouseMotion, AccumulatedMouseScroll, MouseScrollUnit};
use bevy::prelude::*;

use crate::TwinScene;
use crate::lines::to_bevy;

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

impl Orbit {
    /// The default view of a scene: front right, 35° up, the whole volume in frame.
    pub fn default_for(scene: &TwinScene) -> Self {
        let v = scene.volume;
        #[allow(clippy::cast_possible_truncation)]
        let (lo, hi) = (v.min_mm.map(|x| x as f32), v.max_mm.map(|x| x as f32));
        let focus = to_bevy([
            (lo[0] + hi[0]) / 2.0,
            (lo[1] + hi[1]) / 2.0,
            (hi[2] - lo[2]) * 0.4,
        ]);
        let diagonal = Vec3::new(hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]).length();
        Self {
            yaw: 0.5,
            pitch: 0.5,
            distance_mm: diagonal * 1.6,
            focus,
        }
    }

    /// The camera transform for this orbit.
    pub fn transform(&self) -> Transform {
        let rotation = Quat::from_euler(EulerRot::YXZ, self.yaw, -self.pitch, 0.0);
        let position = self.focus + rotation * Vec3::new(0.0, 0.0, self.distance_mm);
        Transform::from_translation(position).looking_at(self.focus, Vec3::Y)
    }
}

/// The orbit the view resets to.
#[derive(Component, Debug, Clone, Copy)]
pub struct HomeOrbit(pub Orbit);

/// Adds the camera and its controls.
pub fn plugin(app: &mut App) {
    app.add_systems(Startup, spawn_camera)
        .add_systems(Update, (control_orbit, apply_orbit).chain());
}

/// Spawns the camera at the scene's default orbit.
pub fn spawn_camera(mut commands: Commands, scene: Res<TwinScene>) {
    let orbit = Orbit::default_for(&scene);
    commands.spawn((
        Name::new("Twin camera"),
        Camera3d::default(),
        // Colours are shown as authored: the pixel tests and the legend rely on it.
        Tonemapping::None,
        orbit.transform(),
        orbit,
        HomeOrbit(orbit),
    ));
}

fn control_orbit(
    mouse: Res<ButtonInput<MouseButton>>,
    keys: Res<ButtonInput<KeyCode>>,
    motion: Res<AccumulatedMouseMotion>,
    scroll: Res<AccumulatedMouseScroll>,
    time: Res<Time>,
    mut cameras: Query<(&mut Orbit, &HomeOrbit)>,
) {
    for (mut orbit, home) in &mut cameras {
        let dt = time.delta_secs();
        if mouse.pressed(MouseButton::Left) {
            orbit.yaw -= motion.delta.x * 0.005;
            orbit.pitch += motion.delta.y * 0.005;
        }
        if mouse.pressed(MouseButton::Right) || mouse.pressed(MouseButton::Middle) {
            let t = orbit.transform();
            let scale = orbit.distance_mm * 0.0015;
            let pan = (-t.right() * motion.delta.x + t.up() * motion.delta.y) * scale;
            orbit.focus += pan;
        }
        let key_rate = 1.5 * dt;
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
        let wheel = match scroll.unit {
            MouseScrollUnit::Line => scroll.delta.y,
            MouseScrollUnit::Pixel => scroll.delta.y / 40.0,
        };
        let mut zoom = wheel * 0.1;
        if keys.pressed(KeyCode::Equal) || keys.pressed(KeyCode::NumpadAdd) {
            zoom += 2.0 * dt;
        }
        if keys.pressed(KeyCode::Minus) || keys.pressed(KeyCode::NumpadSubtract) {
            zoom -= 2.0 * dt;
        }
        orbit.distance_mm = (orbit.distance_mm * (-zoom).exp()).clamp(10.0, 20_000.0);
        orbit.pitch = orbit.pitch.clamp(-1.5, 1.5);
        if keys.just_pressed(KeyCode::Home) || keys.just_pressed(KeyCode::KeyR) {
            *orbit = home.0;
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
