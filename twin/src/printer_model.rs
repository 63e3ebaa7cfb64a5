//! The printer around the print, from printer.cfg: a cartesian bed-slinger (the head moves in X
//! on a beam that rises in Z, the bed slides in Y and carries the print), a CoreXY gantry (the
//! head moves in X and Y on the gantry, the gantry rises in Z), or a linear delta (three towers
//! whose carriages stand where motion's inverse kinematics puts them, six arms to the
//! effector). The nozzle's tip carries a small bright marker: the point that prints.

use bevy::prelude::*;

use crate::SceneInfo;
use crate::lines::to_bevy;
use crate::machine::MachineKind;
use crate::playback::Nozzle;
use crate::scene::BedAnchor;
use crate::toolpath::ViewSettings;

/// The nozzle tip marker's colour (unlit, sRGB): a magenta nothing else in the scene uses.
pub const NOZZLE_TIP_COLOR: Color = Color::srgb(1.0, 0.0, 1.0);
/// Radius of the tip marker, mm.
pub const NOZZLE_TIP_RADIUS_MM: f32 = 2.0;

const FRAME_COLOR: Color = Color::srgb(0.36, 0.38, 0.42);
const HEAD_COLOR: Color = Color::srgb(0.75, 0.77, 0.8);
const BRASS: Color = Color::srgb(0.85, 0.65, 0.25);

#[derive(Component)]
struct Toolhead;
#[derive(Component)]
struct Beam;
#[derive(Component)]
struct Carriage(usize);
#[derive(Component)]
struct Arm(usize, f32);
#[derive(Component)]
struct GantryRails;

/// Adds the printer model.
pub fn plugin(app: &mut App) {
    app.add_systems(Startup, spawn_model)
        .add_systems(Update, move_model.after(crate::playback::PlaybackSystems));
}

#[allow(clippy::too_many_lines)]
fn spawn_model(
    mut commands: Commands,
    info: Res<SceneInfo>,
    mut meshes: ResMut<Assets<Mesh>>,
    mut materials: ResMut<Assets<StandardMaterial>>,
) {
    let frame = materials.add(StandardMaterial {
        base_color: FRAME_COLOR,
        perceptual_roughness: 0.6,
        ..default()
    });
    let head = materials.add(StandardMaterial {
        base_color: HEAD_COLOR,
        perceptual_roughness: 0.4,
        ..default()
    });
    // The hotend body is see-through: the nozzle and the bead under it stay in sight.
    let body = materials.add(StandardMaterial {
        base_color: HEAD_COLOR.with_alpha(0.35),
        alpha_mode: AlphaMode::Blend,
        perceptual_roughness: 0.4,
        ..default()
    });
    let brass = materials.add(StandardMaterial {
        base_color: BRASS,
        metallic: 0.6,
        perceptual_roughness: 0.35,
        ..default()
    });
    let tip = materials.add(StandardMaterial {
        base_color: NOZZLE_TIP_COLOR,
        unlit: true,
        ..default()
    });
    // The toolhead: tip marker at its origin, the nozzle cone above it, the heater block, the
    // hotend body.
    commands
        .spawn((
            Name::new("Toolhead"),
            Toolhead,
            Transform::default(),
            Visibility::default(),
        ))
        .with_children(|h| {
            h.spawn((
                Mesh3d(meshes.add(Sphere::new(NOZZLE_TIP_RADIUS_MM))),
                MeshMaterial3d(tip),
            ));
            h.spawn((
                Mesh3d(meshes.add(Cone::new(2.5, 5.0))),
                MeshMaterial3d(brass.clone()),
                // Apex down: the cone's apex is +Y, turn it over; its middle 2.5 mm up.
                Transform::from_xyz(0.0, 3.2, 0.0)
                    .with_rotation(Quat::from_rotation_x(std::f32::consts::PI)),
            ));
            h.spawn((
                Mesh3d(meshes.add(Cuboid::new(16.0, 10.0, 12.0))),
                MeshMaterial3d(brass),
                Transform::from_xyz(0.0, 10.7, 0.0),
            ));
            h.spawn((
                Mesh3d(meshes.add(Cuboid::new(36.0, 34.0, 30.0))),
                MeshMaterial3d(body),
                Transform::from_xyz(0.0, 33.0, 4.0),
            ));
        });
    #[allow(clippy::cast_possible_truncation)]
    let (lo, hi) = (
        info.volume_min_mm.map(|x| x as f32),
        info.volume_max_mm.map(|x| x as f32),
    );
    let beam = |len: f32, across: f32| Cuboid::new(len, across, across);
    match &info.machine.kind {
        MachineKind::BedSlinger => {
            let y_c = (lo[1] + hi[1]) / 2.0;
            let height = hi[2] - lo[2] + 80.0;
            for x in [lo[0] - 45.0, hi[0] + 45.0] {
                commands.spawn((
                    Name::new("Z upright"),
                    Mesh3d(meshes.add(Cuboid::new(20.0, height, 20.0))),
                    MeshMaterial3d(frame.clone()),
                    Transform::from_translation(to_bevy([x, y_c + 22.0, height / 2.0 - 10.0])),
                ));
            }
            commands.spawn((
                Name::new("X beam"),
                Beam,
                Mesh3d(meshes.add(beam(hi[0] - lo[0] + 110.0, 18.0))),
                MeshMaterial3d(frame.clone()),
                Transform::default(),
            ));
        }
        MachineKind::CoreXY => {
            let height = hi[2] - lo[2] + 90.0;
            for (x, y) in [
                (lo[0] - 40.0, lo[1] - 40.0),
                (hi[0] + 40.0, lo[1] - 40.0),
                (lo[0] - 40.0, hi[1] + 40.0),
                (hi[0] + 40.0, hi[1] + 40.0),
            ] {
                commands.spawn((
                    Name::new("Frame post"),
                    Mesh3d(meshes.add(Cuboid::new(20.0, height, 20.0))),
                    MeshMaterial3d(frame.clone()),
                    Transform::from_translation(to_bevy([x, y, height / 2.0 - 20.0])),
                ));
            }
            let y_len = hi[1] - lo[1] + 80.0;
            commands
                .spawn((
                    Name::new("Gantry"),
                    GantryRails,
                    Transform::default(),
                    Visibility::default(),
                ))
                .with_children(|g| {
                    for x in [lo[0] - 30.0, hi[0] + 30.0] {
                        g.spawn((
                            Mesh3d(meshes.add(Cuboid::new(16.0, 16.0, y_len))),
                            MeshMaterial3d(frame.clone()),
                            Transform::from_translation(Vec3::new(x, 0.0, -(lo[1] + hi[1]) / 2.0)),
                        ));
                    }
                });
            commands.spawn((
                Name::new("X beam"),
                Beam,
                Mesh3d(meshes.add(beam(hi[0] - lo[0] + 60.0, 16.0))),
                MeshMaterial3d(frame.clone()),
                Transform::default(),
            ));
        }
        MachineKind::Delta {
            towers_mm, arms_mm, ..
        } => {
            let top = hi[2] + arms_mm.iter().copied().fold(0.0, f64::max) as f32 + 80.0;
            for (i, t) in towers_mm.iter().enumerate() {
                #[allow(clippy::cast_possible_truncation)]
                let (tx, ty) = (t[0] as f32, t[1] as f32);
                // The tower stands a little outside its carriage's line.
                let out = Vec2::new(tx, ty).normalize_or_zero() * 18.0;
                commands.spawn((
                    Name::new("Tower"),
                    Mesh3d(meshes.add(Cuboid::new(22.0, top, 22.0))),
                    MeshMaterial3d(frame.clone()),
                    Transform::from_translation(to_bevy([
                        tx + out.x,
                        ty + out.y,
                        top / 2.0 - 10.0,
                    ])),
                ));
                commands.spawn((
                    Name::new("Carriage"),
                    Carriage(i),
                    Mesh3d(meshes.add(Cuboid::new(40.0, 24.0, 40.0))),
                    MeshMaterial3d(head.clone()),
                    Transform::default(),
                ));
                for side in [-1.0, 1.0] {
                    commands.spawn((
                        Name::new("Arm"),
                        Arm(i, side),
                        Mesh3d(meshes.add(Cylinder::new(2.0, 1.0))),
                        MeshMaterial3d(frame.clone()),
                        Transform::default(),
                    ));
                }
            }
        }
        MachineKind::Other => {}
    }
}

#[allow(clippy::type_complexity)]
fn move_model(
    nozzle: Res<Nozzle>,
    info: Res<SceneInfo>,
    mut settings: ResMut<ViewSettings>,
    mut parts: ParamSet<(
        Query<&mut Transform, With<Toolhead>>,
        Query<&mut Transform, With<Beam>>,
        Query<&mut Transform, With<GantryRails>>,
        Query<(&Carriage, &mut Transform)>,
        Query<(&Arm, &mut Transform)>,
        Query<&mut Transform, With<BedAnchor>>,
    )>,
) {
    #[allow(clippy::cast_possible_truncation)]
    let p = nozzle.sample.pos_mm.map(|v| v as f32);
    #[allow(clippy::cast_possible_truncation)]
    let (lo, hi) = (
        info.volume_min_mm.map(|x| x as f32),
        info.volume_max_mm.map(|x| x as f32),
    );
    let machine = &info.machine;
    // Where the nozzle is in the world: a bed-slinger's stays at the middle of Y and the bed
    // (with the print) moves the other way.
    let (world, bed_offset) = match machine.kind {
        MachineKind::BedSlinger => {
            let y_c = (lo[1] + hi[1]) / 2.0;
            ([p[0], y_c, p[2]], Vec3::new(0.0, y_c - p[1], 0.0))
        }
        _ => (p, Vec3::ZERO),
    };
    if settings.offset_mm != bed_offset {
        settings.offset_mm = bed_offset;
    }
    for mut t in &mut parts.p5() {
        t.translation = to_bevy(bed_offset.to_array());
    }
    for mut t in &mut parts.p0() {
        t.translation = to_bevy(world);
    }
    match &machine.kind {
        MachineKind::BedSlinger => {
            let y_c = (lo[1] + hi[1]) / 2.0;
            for mut t in &mut parts.p1() {
                t.translation = to_bevy([(lo[0] + hi[0]) / 2.0, y_c + 22.0, p[2] + 40.0]);
            }
        }
        MachineKind::CoreXY => {
            for mut t in &mut parts.p2() {
                t.translation = Vec3::new(0.0, p[2] + 40.0, 0.0);
            }
            for mut t in &mut parts.p1() {
                t.translation = to_bevy([(lo[0] + hi[0]) / 2.0, p[1] + 20.0, p[2] + 40.0]);
            }
        }
        MachineKind::Delta { towers_mm, .. } => {
            let heights = machine.stepper_positions(nozzle.sample.pos_mm);
            for (c, mut t) in &mut parts.p3() {
                let (Some(tw), Some(h)) = (towers_mm.get(c.0), heights.get(c.0)) else {
                    continue;
                };
                #[allow(clippy::cast_possible_truncation)]
                let at = [tw[0] as f32, tw[1] as f32, *h as f32];
                t.translation = to_bevy(at);
            }
            for (arm, mut t) in &mut parts.p4() {
                let (Some(tw), Some(h)) = (towers_mm.get(arm.0), heights.get(arm.0)) else {
                    continue;
                };
                #[allow(clippy::cast_possible_truncation)]
                let carriage = Vec3::new(tw[0] as f32, tw[1] as f32, *h as f32);
                let effector = Vec3::from(p) + Vec3::new(0.0, 0.0, 12.0);
                // Parallel arms: 14 mm either side, across the tower's direction.
                let across =
                    Vec3::new(-tw[1] as f32, tw[0] as f32, 0.0).normalize_or_zero() * 14.0 * arm.1;
                let (a, b) = (
                    to_bevy((carriage + across).to_array()),
                    to_bevy((effector + across).to_array()),
                );
                let len = a.distance(b);
                let dir = (b - a).normalize_or_zero();
                *t = Transform {
                    translation: (a + b) / 2.0,
                    rotation: Quat::from_rotation_arc(Vec3::Y, dir),
                    scale: Vec3::new(1.0, len, 1.0),
                };
            }
        }
        MachineKind::Other => {}
    }
}
