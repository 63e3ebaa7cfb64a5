//! The printer's bed and build volume, the axes and the light.
//!
//! Sizes come from the printer.cfg ([`SceneInfo`]: the rails' limits, or a delta's printable
//! radius and height). The bed, its 10 mm grid, the volume's edges and the axes hang under one
//! [`BedAnchor`] entity, which the printer model moves with the bed (a bed-slinger's bed moves
//! in Y). The axes start at the origin (X red, Y green, Z blue) and are 40 mm long.

use bevy::prelude::*;

use crate::SceneInfo;
use crate::lines::{LineBuilder, line_material, to_bevy};
use crate::machine::MachineKind;

/// The bed's colour: a dark neutral grey, so toolpath colours stand out.
pub const BED_COLOR: Color = Color::srgb(0.16, 0.17, 0.19);
/// The background (clear) colour.
pub const BACKGROUND_COLOR: Color = Color::srgb(0.055, 0.06, 0.07);
/// The bed's 10 mm grid: a shade lighter than the bed.
pub const GRID_COLOR: Color = Color::srgb(0.22, 0.235, 0.26);
/// The build volume's edges.
pub const VOLUME_COLOR: Color = Color::srgb(0.45, 0.5, 0.58);

/// The bed and everything fixed to it.
#[derive(Component, Debug)]
pub struct BedAnchor;

/// Adds the static scene.
pub fn plugin(app: &mut App) {
    app.insert_resource(ClearColor(BACKGROUND_COLOR))
        .add_systems(Startup, spawn_scene);
}

fn spawn_scene(
    mut commands: Commands,
    info: Res<SceneInfo>,
    mut meshes: ResMut<Assets<Mesh>>,
    mut materials: ResMut<Assets<StandardMaterial>>,
) {
    #[allow(clippy::cast_possible_truncation)]
    let (lo, hi) = (
        info.volume_min_mm.map(|x| x as f32),
        info.volume_max_mm.map(|x| x as f32),
    );
    let delta = matches!(info.machine.kind, MachineKind::Delta { .. });
    let bed_material = materials.add(StandardMaterial {
        base_color: BED_COLOR,
        unlit: true,
        ..default()
    });
    let mut edges = LineBuilder::with_capacity(12 + 3 + 100);
    // The grid lies 0.02 mm above the bed's top face so it is drawn over it, below the first layer.
    let grid_z = -0.03;
    let bed = if delta {
        // A round bed of the printable radius.
        let r = hi[0];
        let mut x = (lo[0] / 10.0).ceil() * 10.0;
        while x <= hi[0] {
            let h = (r * r - x * x).max(0.0).sqrt();
            edges.line([x, -h, grid_z], [x, h, grid_z], GRID_COLOR);
            edges.line([-h, x, grid_z], [h, x, grid_z], GRID_COLOR);
            x += 10.0;
        }
        let n = 96;
        for i in 0..n {
            #[allow(clippy::cast_precision_loss)]
            let (a, b) = (
                i as f32 / n as f32 * std::f32::consts::TAU,
                (i + 1) as f32 / n as f32 * std::f32::consts::TAU,
            );
            for z in [0.0, hi[2]] {
                edges.line(
                    [r * a.cos(), r * a.sin(), z],
                    [r * b.cos(), r * b.sin(), z],
                    VOLUME_COLOR,
                );
            }
        }
        (
            meshes.add(Cylinder::new(r, 2.0)),
            to_bevy([0.0, 0.0, -1.05]),
        )
    } else {
        let mut x = (lo[0] / 10.0).ceil() * 10.0;
        while x <= hi[0] {
            edges.line([x, lo[1], grid_z], [x, hi[1], grid_z], GRID_COLOR);
            x += 10.0;
        }
        let mut y = (lo[1] / 10.0).ceil() * 10.0;
        while y <= hi[1] {
            edges.line([lo[0], y, grid_z], [hi[0], y, grid_z], GRID_COLOR);
            y += 10.0;
        }
        let corner = |i: usize| {
            [
                if i & 1 == 0 { lo[0] } else { hi[0] },
                if i & 2 == 0 { lo[1] } else { hi[1] },
                if i & 4 == 0 { lo[2] } else { hi[2] },
            ]
        };
        for a in 0..8_usize {
            for bit in [1, 2, 4] {
                if a & bit == 0 {
                    edges.line(corner(a), corner(a | bit), VOLUME_COLOR);
                }
            }
        }
        // The bed: a plate whose top face is 0.05 mm under Z = 0, so first-layer lines sit above it.
        let size = Vec3::new(hi[0] - lo[0], 2.0, hi[1] - lo[1]);
        (
            meshes.add(Cuboid::from_size(size)),
            to_bevy([(lo[0] + hi[0]) / 2.0, (lo[1] + hi[1]) / 2.0, -1.05]),
        )
    };
    let axis = 40.0;
    edges.line([0.0; 3], [axis, 0.0, 0.0], Color::srgb(0.9, 0.2, 0.2));
    edges.line([0.0; 3], [0.0, axis, 0.0], Color::srgb(0.2, 0.85, 0.3));
    edges.line([0.0; 3], [0.0, 0.0, axis], Color::srgb(0.25, 0.45, 1.0));
    commands
        .spawn((
            Name::new("Bed"),
            BedAnchor,
            Transform::default(),
            Visibility::default(),
        ))
        .with_children(|b| {
            b.spawn((
                Name::new("Bed plate"),
                Mesh3d(bed.0),
                MeshMaterial3d(bed_material),
                Transform::from_translation(bed.1),
            ));
            b.spawn((
                Name::new("Build volume and axes"),
                Mesh3d(meshes.add(edges.build())),
                MeshMaterial3d(materials.add(line_material())),
            ));
        });

    commands.spawn((
        DirectionalLight {
            illuminance: 8_000.0,
            ..default()
        },
        Transform::from_xyz(100.0, 400.0, 200.0).looking_at(Vec3::ZERO, Vec3::Y),
    ));
}
