//! The toolpath as lines: extrusion in the print colour, travel moves faint.
//!
//! The whole file becomes one `LineList` mesh (two vertices and two colours per segment), built
//! once at start-up. Per-feature colours, tubes, level of detail and playback arrive with the full
//! twin; this is the foundation's view of the file.

use bevy::prelude::*;

use crate::TwinScene;
use crate::lines::{LineBuilder, line_material};
use gantry_core::motion::toolpath::MoveKind;

/// Extrusion lines: a saturated orange that no other part of the scene uses.
pub const EXTRUDE_COLOR: Color = Color::srgb(1.0, 0.45, 0.05);
/// Travel lines: a dim blue-grey.
pub const TRAVEL_COLOR: Color = Color::srgb(0.25, 0.32, 0.42);

/// Adds the toolpath mesh.
pub fn plugin(app: &mut App) {
    app.add_systems(Startup, spawn_toolpath);
}

fn spawn_toolpath(
    mut commands: Commands,
    scene: Res<TwinScene>,
    mut meshes: ResMut<Assets<Mesh>>,
    mut materials: ResMut<Assets<StandardMaterial>>,
) {
    let segments = &scene.toolpath.segments;
    let mut lines = LineBuilder::with_capacity(segments.len());
    for s in segments {
        let color = match s.kind {
            MoveKind::Extrude => EXTRUDE_COLOR,
            MoveKind::Travel => TRAVEL_COLOR,
        };
        lines.line(s.start_mm, s.end_mm, color);
    }
    if lines.is_empty() {
        bevy::log::warn!("{}: no moves to draw", scene.source_name);
        return;
    }
    bevy::log::info!("{}: {} segments", scene.source_name, lines.len());
    commands.spawn((
        Name::new("Toolpath"),
        Mesh3d(meshes.add(lines.build())),
        MeshMaterial3d(materials.add(line_material())),
    ));
}
