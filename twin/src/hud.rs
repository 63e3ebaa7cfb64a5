//! The heads-up display (Bevy UI): file and machine, load progress, the legend, the playback bar
//! (scrub slider, time, speed, G-code line, speed, acceleration phase, layer, elapsed and
//! remaining time), the layer-range slider, object labels and a key help line. The teaching mode
//! ([`crate::teach`]) makes it large and high-contrast.

use bevy::prelude::*;
use bevy::ui::RelativeCursorPosition;
use gantry_core::motion::toolpath::Feature;

use crate::SceneInfo;
use crate::loader::LoadState;
use crate::playback::{Jump, Nozzle, Playback};
use crate::teach::Teaching;
use crate::toolpath::{ColorMode, HeightLevels, ViewSettings, feature_color, ramp_color};
use crate::toolpath_data::ToolpathMeta;

/// Whether the pointer is on the HUD (the camera then leaves the mouse alone).
#[derive(Resource, Default, Debug, Clone, Copy)]
pub struct PointerOnHud(pub bool);

/// Whether the HUD is shown (`F1` hides it; screenshots for tests hide it).
#[derive(Resource, Debug, Clone, Copy)]
pub struct HudVisible(pub bool);

impl Default for HudVisible {
    fn default() -> Self {
        Self(true)
    }
}

#[derive(Component)]
struct HudRoot;
#[derive(Component)]
struct TitleText;
#[derive(Component)]
struct InfoText;
#[derive(Component)]
struct StatusText;
/// The teaching mode's explanation of the current line.
#[derive(Component)]
pub struct ExplainText;
#[derive(Component)]
struct HelpText;
#[derive(Component)]
struct ProgressFill;
#[derive(Component)]
struct ProgressBar;
#[derive(Component)]
struct Legend;
#[derive(Component)]
struct ScrubTrack;
#[derive(Component)]
struct ScrubFill;
#[derive(Component)]
struct LayerTrack;
#[derive(Component)]
struct LayerRangeFill;
#[derive(Component)]
struct LayerText;
#[derive(Component)]
struct Panel;
#[derive(Component)]
struct Scaled(f32);
#[derive(Component)]
struct ObjectLabel(usize);
#[derive(Component)]
struct ProfileBox;
#[derive(Component)]
struct ProfileCaption;
#[derive(Component)]
struct ProfileBar(usize);

/// Bars in the velocity profile.
pub const PROFILE_BARS: usize = 96;

/// Adds the HUD.
pub fn plugin(app: &mut App) {
    app.init_resource::<PointerOnHud>()
        .init_resource::<HudVisible>()
        .add_systems(Startup, spawn_hud)
        .add_systems(
            Update,
            (
                pointer_on_hud,
                scrub,
                layer_slider,
                keys,
                texts,
                legend,
                progress,
                object_labels,
                profile,
                style,
            ),
        );
}

fn text(value: impl Into<String>, size: f32, color: Color) -> impl Bundle {
    (
        Text::new(value),
        TextFont {
            font_size: FontSize::Px(size),
            ..default()
        },
        TextColor(color),
        Scaled(size),
    )
}

const PANEL: Color = Color::srgba(0.04, 0.045, 0.055, 0.82);
const TEXT: Color = Color::srgb(0.88, 0.9, 0.93);
const DIM: Color = Color::srgb(0.6, 0.63, 0.68);
const ACCENT: Color = Color::srgb(1.0, 0.62, 0.2);

/// The HUD's typeface: DejaVu Sans (assets/fonts, Bitstream Vera licence), for the symbols
/// Bevy's built-in subset lacks (×, ·, ², …).
pub const FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

fn spawn_hud(mut commands: Commands, mut fonts: ResMut<Assets<Font>>) {
    // Replace the default font, so every text of the app uses it.
    if let Err(e) = fonts.insert(AssetId::default(), Font::from_bytes(FONT.to_vec())) {
        bevy::log::warn!("cannot install the HUD font: {e}");
    }
    let panel = |extra: Node| {
        (
            Node {
                position_type: PositionType::Absolute,
                flex_direction: FlexDirection::Column,
                padding: UiRect::all(Val::Px(8.0)),
                row_gap: Val::Px(4.0),
                ..extra
            },
            BackgroundColor(PANEL),
            Panel,
        )
    };
    commands
        .spawn((
            HudRoot,
            Node {
                width: Val::Percent(100.0),
                height: Val::Percent(100.0),
                position_type: PositionType::Absolute,
                ..default()
            },
        ))
        .with_children(|root| {
            root.spawn(panel(Node {
                left: Val::Px(10.0),
                top: Val::Px(10.0),
                max_width: Val::Percent(48.0),
                ..default()
            }))
            .with_children(|p| {
                p.spawn((text("", 17.0, TEXT), TitleText));
                p.spawn((text("", 13.0, DIM), InfoText));
                p.spawn((
                    ProgressBar,
                    Node {
                        width: Val::Px(260.0),
                        height: Val::Px(6.0),
                        ..default()
                    },
                    BackgroundColor(Color::srgb(0.18, 0.19, 0.22)),
                ))
                .with_children(|b| {
                    b.spawn((
                        ProgressFill,
                        Node {
                            width: Val::Percent(0.0),
                            height: Val::Percent(100.0),
                            ..default()
                        },
                        BackgroundColor(ACCENT),
                    ));
                });
            });
            root.spawn((
                panel(Node {
                    right: Val::Px(10.0),
                    top: Val::Px(10.0),
                    ..default()
                }),
                Legend,
            ));
            root.spawn(panel(Node {
                left: Val::Px(10.0),
                right: Val::Px(10.0),
                bottom: Val::Px(10.0),
                ..default()
            }))
            .with_children(|p| {
                p.spawn((
                    ScrubTrack,
                    Interaction::default(),
                    RelativeCursorPosition::default(),
                    Node {
                        width: Val::Percent(100.0),
                        height: Val::Px(10.0),
                        ..default()
                    },
                    BackgroundColor(Color::srgb(0.18, 0.19, 0.22)),
                ))
                .with_children(|t| {
                    t.spawn((
                        ScrubFill,
                        Node {
                            width: Val::Percent(0.0),
                            height: Val::Percent(100.0),
                            ..default()
                        },
                        BackgroundColor(ACCENT),
                    ));
                });
                p.spawn((text("", 14.0, TEXT), StatusText));
                p.spawn((text("", 14.0, Color::WHITE), ExplainText));
                p.spawn((text("", 12.0, DIM), ProfileCaption));
                p.spawn((
                    ProfileBox,
                    Node {
                        height: Val::Px(70.0),
                        width: Val::Percent(100.0),
                        align_items: AlignItems::FlexEnd,
                        column_gap: Val::Px(1.0),
                        display: Display::None,
                        ..default()
                    },
                    BackgroundColor(Color::srgb(0.08, 0.09, 0.1)),
                ))
                .with_children(|b| {
                    for i in 0..PROFILE_BARS {
                        b.spawn((
                            ProfileBar(i),
                            Node {
                                flex_grow: 1.0,
                                height: Val::Percent(0.0),
                                ..default()
                            },
                            BackgroundColor(ACCENT),
                        ));
                    }
                });
                p.spawn((text("", 12.0, DIM), HelpText));
            });
            root.spawn(panel(Node {
                right: Val::Px(10.0),
                top: Val::Percent(30.0),
                height: Val::Percent(40.0),
                align_items: AlignItems::Center,
                ..default()
            }))
            .with_children(|p| {
                p.spawn((text("", 12.0, TEXT), LayerText));
                p.spawn((
                    LayerTrack,
                    Interaction::default(),
                    RelativeCursorPosition::default(),
                    Node {
                        width: Val::Px(12.0),
                        flex_grow: 1.0,
                        ..default()
                    },
                    BackgroundColor(Color::srgb(0.18, 0.19, 0.22)),
                ))
                .with_children(|t| {
                    t.spawn((
                        LayerRangeFill,
                        Node {
                            position_type: PositionType::Absolute,
                            width: Val::Percent(100.0),
                            top: Val::Percent(0.0),
                            height: Val::Percent(100.0),
                            ..default()
                        },
                        BackgroundColor(ACCENT),
                    ));
                });
            });
        });
}

/// The HUD's sliders.
type Sliders = Or<(With<ScrubTrack>, With<LayerTrack>)>;

fn pointer_on_hud(tracks: Query<&Interaction, Sliders>, mut on: ResMut<PointerOnHud>) {
    on.0 = tracks.iter().any(|i| *i != Interaction::None);
}

fn scrub(
    track: Query<(&Interaction, &RelativeCursorPosition), With<ScrubTrack>>,
    mut playback: ResMut<Playback>,
    state: Res<LoadState>,
) {
    for (i, pos) in &track {
        if *i != Interaction::Pressed {
            continue;
        }
        let Some(n) = pos.normalized else { continue };
        let f = f64::from((n.x + 0.5).clamp(0.0, 1.0));
        let (a, b) = (state.timeline.start_time(), state.timeline.end_time());
        playback.active = true;
        playback.time = a + (b - a) * f;
    }
}

fn layer_slider(
    track: Query<(&Interaction, &RelativeCursorPosition), With<LayerTrack>>,
    mut settings: ResMut<ViewSettings>,
    levels: Res<HeightLevels>,
) {
    let n = levels.z_mm.len();
    if n == 0 {
        return;
    }
    for (i, pos) in &track {
        if *i != Interaction::Pressed {
            continue;
        }
        let Some(p) = pos.normalized else { continue };
        // Top of the track is the top layer.
        let f = (0.5 - p.y).clamp(0.0, 1.0);
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let level = ((f * (n - 1) as f32).round() as usize).min(n - 1);
        let (lo, hi) = settings.layer_range.unwrap_or((0, n - 1));
        // The nearer end moves.
        let range = if level.abs_diff(lo) < level.abs_diff(hi) {
            (level.min(hi), hi)
        } else {
            (lo, level.max(lo))
        };
        settings.layer_range = if range == (0, n - 1) {
            None
        } else {
            Some(range)
        };
    }
}

fn keys(
    keys: Res<ButtonInput<KeyCode>>,
    mut settings: ResMut<ViewSettings>,
    levels: Res<HeightLevels>,
    mut visible: ResMut<HudVisible>,
) {
    if keys.just_pressed(KeyCode::KeyC) {
        settings.color = settings.color.next();
    }
    if keys.just_pressed(KeyCode::KeyM) {
        settings.travel = !settings.travel;
    }
    if keys.just_pressed(KeyCode::KeyG) {
        settings.ghost = !settings.ghost;
    }
    if keys.just_pressed(KeyCode::F1) {
        visible.0 = !visible.0;
    }
    let n = levels.z_mm.len();
    if n > 0 {
        let (lo, hi) = settings.layer_range.unwrap_or((0, n - 1));
        let mut range = (lo, hi);
        if keys.just_pressed(KeyCode::ArrowUp) && keys.pressed(KeyCode::ShiftLeft) {
            range.1 = (hi + 1).min(n - 1);
        }
        if keys.just_pressed(KeyCode::ArrowDown) && keys.pressed(KeyCode::ShiftLeft) {
            range.1 = hi.saturating_sub(1).max(lo);
        }
        if keys.just_pressed(KeyCode::KeyA) {
            range = (0, n - 1);
        }
        if range != (lo, hi) || keys.just_pressed(KeyCode::KeyA) {
            settings.layer_range = if range == (0, n - 1) {
                None
            } else {
                Some(range)
            };
        }
    }
}

/// `h:mm:ss`.
pub fn clock(seconds: f64) -> String {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let s = seconds.max(0.0).round() as u64;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// The layer (file order) of the nozzle.
fn current_layer(meta: &ToolpathMeta, line: u32) -> usize {
    meta.last_segment_at_line(line)
        .map_or(0, |s| meta.layer_of_segment(s) as usize)
}

/// Which G-code line the HUD shows, and its label: the line of the move the nozzle is on
/// (`printed`, 0 when none). A printer followed through the API also reports the line its host
/// is reading (`host_reading`, Klipper's `virtual_sdcard.file_position`), which runs ahead of
/// the nozzle by the planner's lookahead: shown as such beside the printed line, and alone
/// while the nozzle is on none of the file's moves (heating, a macro).
pub fn line_label(printed: u32, host_reading: Option<u32>) -> Option<(u32, String)> {
    match (printed, host_reading.filter(|&r| r > 0)) {
        (0, Some(r)) => Some((r, format!("reading line {r}"))),
        (0, None) => None,
        (p, Some(r)) if r > p => Some((p, format!("line {p} (host reading line {r})"))),
        (p, _) => Some((p, format!("line {p}"))),
    }
}

#[allow(clippy::too_many_arguments, clippy::type_complexity)]
fn texts(
    state: Res<LoadState>,
    info: Res<SceneInfo>,
    playback: Res<Playback>,
    nozzle: Res<Nozzle>,
    settings: Res<ViewSettings>,
    levels: Res<HeightLevels>,
    teaching: Res<Teaching>,
    live: Option<Res<crate::live::LiveState>>,
    mut q: ParamSet<(
        Query<&mut Text, With<TitleText>>,
        Query<&mut Text, With<InfoText>>,
        Query<&mut Text, With<StatusText>>,
        Query<&mut Text, With<HelpText>>,
        Query<&mut Text, With<LayerText>>,
        Query<&mut Node, With<ScrubFill>>,
        Query<&mut Node, With<LayerRangeFill>>,
    )>,
    mut line_cache: Local<(u32, String)>,
) {
    for mut t in &mut q.p0() {
        **t = format!("{} — {}", state.source_name, info.machine_desc);
    }
    let mut info_line;
    if let Some(e) = &state.error {
        info_line = format!("error: {e}");
    } else if let Some(meta) = &state.meta {
        info_line = format!(
            "{} segments · {} layers · {:.1} m of filament",
            group(meta.segments),
            meta.layers.len(),
            meta.stats.filament_mm / 1000.0
        );
        if meta.diagnostic_count > 0 {
            info_line.push_str(&format!(" · {} unreadable lines", meta.diagnostic_count));
        }
        if let Some(t) = state.parse_time {
            info_line.push_str(&format!(" · loaded in {:.2} s", t.as_secs_f64()));
        }
        if let Some(live) = &live {
            info_line.push_str(&format!("\nlive: {} · {}", live.source, live.message));
        } else if state.planned {
            info_line.push_str(&format!(
                " · print time {}",
                clock(state.timeline.end_time() - state.timeline.start_time())
            ));
        } else {
            info_line.push_str(" · planning…");
        }
        if let Some(e) = &state.plan_error {
            info_line.push_str(&format!("\nplanner: {e}"));
        }
    } else {
        info_line = format!(
            "loading… {:.0} % ({} segments)",
            state.progress() * 100.0,
            group(state.segments())
        );
    }
    for mut t in &mut q.p1() {
        **t = info_line.clone();
    }

    let (start, end) = (state.timeline.start_time(), state.timeline.end_time());
    let s = &nozzle.sample;
    let elapsed = (s.time - start).max(0.0);
    let remaining = (end - s.time).max(0.0);
    let layer = state
        .meta
        .as_ref()
        .map(|m| (current_layer(m, s.line), m.layers.len()))
        .filter(|(_, n)| *n > 0);
    // A live printer (the in-process sim, or one followed through the API) also says which line
    // its host is reading.
    let host_reading = live.as_ref().map(|l| l.line);
    let shown_line = line_label(s.line, host_reading);
    if let Some((n, _)) = shown_line
        && line_cache.0 != n
    {
        line_cache.0 = n;
        line_cache.1 = state
            .line_index
            .line_text(&state.source, n)
            .unwrap_or_default();
    }
    let mut status = match &live {
        Some(l) if l.stepper_mm.is_empty() => format!(
            "LIVE  {}  ·  nozzle {}",
            clock(l.time),
            l.position_mm.map_or_else(
                || "—".to_owned(),
                |p| format!("X{:.2} Y{:.2} Z{:.2}", p[0], p[1], p[2])
            )
        ),
        Some(l) => format!(
            "LIVE  {}  ·  steppers {}",
            clock(l.time),
            l.stepper_mm
                .iter()
                .map(|v| format!("{v:.2}"))
                .collect::<Vec<_>>()
                .join(" / ")
        ),
        None => format!(
            "{} {}×  {} / {}  (remaining {})",
            if playback.playing { "▶" } else { "paused" },
            playback.speed,
            clock(elapsed),
            clock(end - start),
            clock(remaining)
        ),
    };
    if let Some((l, n)) = layer {
        status.push_str(&format!(
            "  ·  layer {}/{}  z {:.2} mm",
            l + 1,
            n,
            s.pos_mm[2]
        ));
    }
    status.push_str(&format!(
        "  ·  {:.1} mm/s  {}{}",
        s.speed_mm_s,
        s.phase.label(),
        if s.accel_mm_s2 != 0.0 {
            format!(" {:.0} mm/s²", s.accel_mm_s2.abs())
        } else {
            String::new()
        }
    ));
    // The teaching mode's explanation shows the line itself.
    if let Some((_, label)) = shown_line
        && !teaching.0
    {
        status.push_str(&format!("\n{label}: {}", line_cache.1));
    }
    for mut t in &mut q.p2() {
        **t = status.clone();
    }
    let help = if teaching.0 {
        "T teaching off · Space play · [ ] speed · PgUp/PgDn layer".to_owned()
    } else {
        format!(
            "Space play/pause · [ ] speed · , . step · PgUp/PgDn layer · End whole print · \
             C colour ({}) · M travel ({}) · G ghost · Shift+↑↓ top layer · A all layers · \
             1–4 views · F follow · O orbit · T teaching · F1 HUD",
            settings.color.label(),
            if settings.travel { "on" } else { "off" }
        )
    };
    for mut t in &mut q.p3() {
        **t = help.clone();
    }
    let n = levels.z_mm.len();
    let (lo, hi) = settings.layer_range.unwrap_or((0, n.saturating_sub(1)));
    let layer_label = if n == 0 {
        "layers".to_owned()
    } else {
        format!("{}\n…\n{}", hi + 1, lo + 1)
    };
    for mut t in &mut q.p4() {
        **t = layer_label.clone();
    }
    #[allow(clippy::cast_possible_truncation)]
    let f = if end > start {
        ((s.time - start) / (end - start)).clamp(0.0, 1.0) as f32
    } else {
        0.0
    };
    for mut node in &mut q.p5() {
        node.width = Val::Percent(f * 100.0);
    }
    if n > 0 {
        #[allow(clippy::cast_precision_loss)]
        let (a, b) = (lo as f32 / n as f32, (hi + 1) as f32 / n as f32);
        for mut node in &mut q.p6() {
            node.top = Val::Percent((1.0 - b) * 100.0);
            node.height = Val::Percent((b - a) * 100.0);
        }
    }
}

/// `1234567` as `1 234 567`.
pub fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

fn legend(
    mut commands: Commands,
    settings: Res<ViewSettings>,
    state: Res<LoadState>,
    teaching: Res<Teaching>,
    legend: Query<Entity, With<Legend>>,
    mut last: Local<Option<(ColorMode, u16, bool, bool)>>,
) {
    let Some(meta) = &state.meta else { return };
    let key = (
        settings.color,
        meta.stats.features,
        settings.travel,
        teaching.0,
    );
    if *last == Some(key) {
        return;
    }
    *last = Some(key);
    let scale = if teaching.0 { 1.8 } else { 1.0 };
    for entity in &legend {
        commands.entity(entity).despawn_children();
        commands.entity(entity).with_children(|l| {
            l.spawn(text(
                format!("colour: {} (C)", settings.color.label()),
                13.0 * scale,
                TEXT,
            ));
            let mut row = |color: Color, label: String| {
                l.spawn(Node {
                    column_gap: Val::Px(6.0),
                    align_items: AlignItems::Center,
                    ..default()
                })
                .with_children(|r| {
                    r.spawn((
                        Node {
                            width: Val::Px(14.0 * scale),
                            height: Val::Px(10.0 * scale),
                            ..default()
                        },
                        BackgroundColor(color),
                    ));
                    r.spawn(text(label, 13.0 * scale, TEXT));
                });
            };
            let s = &meta.stats;
            match settings.color {
                ColorMode::Feature => {
                    for f in Feature::ALL {
                        if s.features & (1 << f.index()) != 0 {
                            row(feature_color(f), f.label().to_owned());
                        }
                    }
                }
                mode => {
                    let (lo, hi, unit) = match mode {
                        ColorMode::Speed => (s.speed_range_mm_s.0, s.speed_range_mm_s.1, "mm/s"),
                        ColorMode::Flow => (s.flow_range_mm3_s.0, s.flow_range_mm3_s.1, "mm³/s"),
                        _ => (s.extrusion_min_mm[2], s.extrusion_max_mm[2], "mm"),
                    };
                    for i in (0..5).rev() {
                        #[allow(clippy::cast_precision_loss)]
                        let t = i as f32 / 4.0;
                        row(ramp_color(t), format!("{:.1} {unit}", lo + (hi - lo) * t));
                    }
                }
            }
            if settings.travel {
                row(crate::toolpath::TRAVEL_COLOR, "Travel".into());
            }
        });
    }
}

fn progress(
    state: Res<LoadState>,
    mut fill: Query<&mut Node, With<ProgressFill>>,
    mut bar: Query<&mut Visibility, With<ProgressBar>>,
) {
    for mut node in &mut fill {
        node.width = Val::Percent(state.progress() * 100.0);
    }
    let done = state.parsed();
    for mut v in &mut bar {
        *v = if done {
            Visibility::Hidden
        } else {
            Visibility::Inherited
        };
    }
}

fn object_labels(
    mut commands: Commands,
    state: Res<LoadState>,
    settings: Res<ViewSettings>,
    cameras: Query<(&Camera, &GlobalTransform), With<Camera3d>>,
    mut labels: Query<(&ObjectLabel, &mut Node, &mut Visibility)>,
    roots: Query<Entity, With<HudRoot>>,
    mut spawned: Local<bool>,
) {
    let Some(meta) = &state.meta else { return };
    if !*spawned {
        *spawned = true;
        let Some(root) = roots.iter().next() else {
            return;
        };
        commands.entity(root).with_children(|r| {
            for (i, o) in meta.objects.iter().enumerate() {
                r.spawn((
                    ObjectLabel(i),
                    text(o.name.clone(), 12.0, Color::srgb(0.75, 0.95, 1.0)),
                    Node {
                        position_type: PositionType::Absolute,
                        ..default()
                    },
                    BackgroundColor(Color::srgba(0.0, 0.0, 0.0, 0.55)),
                    Visibility::Hidden,
                ));
            }
        });
        return;
    }
    let Some((camera, transform)) = cameras.iter().next() else {
        return;
    };
    for (label, mut node, mut vis) in &mut labels {
        let Some(at) = meta.objects.get(label.0).and_then(|o| o.label_at_mm()) else {
            continue;
        };
        let p = Vec3::new(at[0], at[1], 0.0) + settings.offset_mm;
        let world = crate::lines::to_bevy(p.to_array());
        match camera.world_to_viewport(transform, world) {
            Ok(px) => {
                node.left = Val::Px(px.x);
                node.top = Val::Px(px.y + 4.0);
                *vis = Visibility::Inherited;
            }
            Err(_) => *vis = Visibility::Hidden,
        }
    }
}

#[allow(clippy::type_complexity)]
fn profile(
    state: Res<LoadState>,
    nozzle: Res<Nozzle>,
    teaching: Res<Teaching>,
    mut boxes: Query<&mut Node, (With<ProfileBox>, Without<ProfileBar>)>,
    mut bars: Query<(&ProfileBar, &mut Node, &mut BackgroundColor), Without<ProfileBox>>,
    mut caption: Query<
        (&mut Text, &mut Node),
        (
            With<ProfileCaption>,
            Without<ProfileBox>,
            Without<ProfileBar>,
        ),
    >,
) {
    // The profile is the plan's; the live feed has none.
    let show = teaching.0 && !nozzle.live;
    let display = if show { Display::Flex } else { Display::None };
    for mut b in &mut boxes {
        b.display = display;
    }
    for (_, mut n) in &mut caption {
        n.display = display;
    }
    if !show {
        return;
    }
    let horizon = crate::teach::PROFILE_SECONDS;
    let t0 = nozzle.sample.time;
    let profile = state.timeline.speed_profile(t0, horizon);
    let vmax = profile.iter().map(|p| p.1).fold(1.0, f64::max);
    for (mut t, _) in &mut caption {
        **t = format!(
            "the planner's speed over the next {horizon:.0} s of the print (now at the left, \
             top = {vmax:.0} mm/s)"
        );
    }
    for (bar, mut node, mut color) in &mut bars {
        #[allow(clippy::cast_precision_loss)]
        let t = t0 + horizon * (bar.0 as f64 + 0.5) / PROFILE_BARS as f64;
        let v = interpolate(&profile, t);
        #[allow(clippy::cast_possible_truncation)]
        let h = (v / vmax * 100.0) as f32;
        node.height = Val::Percent(h.max(1.0));
        *color = BackgroundColor(if bar.0 == 0 {
            Color::WHITE
        } else {
            #[allow(clippy::cast_possible_truncation)]
            ramp_color((v / vmax) as f32)
        });
    }
}

/// The piecewise-linear profile's value at `t`.
fn interpolate(profile: &[(f64, f64)], t: f64) -> f64 {
    let i = profile.partition_point(|p| p.0 <= t);
    match (
        i.checked_sub(1).and_then(|j| profile.get(j)),
        profile.get(i),
    ) {
        (Some(a), Some(b)) if b.0 > a.0 => a.1 + (b.1 - a.1) * (t - a.0) / (b.0 - a.0),
        (Some(a), _) => a.1,
        (None, Some(b)) => b.1,
        (None, None) => 0.0,
    }
}

fn style(
    teaching: Res<Teaching>,
    visible: Res<HudVisible>,
    mut fonts: Query<(&Scaled, &mut TextFont)>,
    mut panels: Query<&mut BackgroundColor, With<Panel>>,
    mut root: Query<&mut Visibility, With<HudRoot>>,
    mut explain: Query<&mut Node, With<ExplainText>>,
) {
    if !teaching.is_changed() && !visible.is_changed() {
        return;
    }
    let scale = if teaching.0 { 1.6 } else { 1.0 };
    for (s, mut f) in &mut fonts {
        f.font_size = FontSize::Px(s.0 * scale);
    }
    for mut bg in &mut panels {
        *bg = BackgroundColor(if teaching.0 { Color::BLACK } else { PANEL });
    }
    for mut v in &mut root {
        *v = if visible.0 {
            Visibility::Inherited
        } else {
            Visibility::Hidden
        };
    }
    for mut n in &mut explain {
        n.display = if teaching.0 {
            Display::Flex
        } else {
            Display::None
        };
    }
}

/// Jumps requested from outside (the command line).
pub fn request_jump(playback: &mut Playback, jump: Jump) {
    playback.jump(jump);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_shown_is_the_nozzles_and_the_hosts_only_when_labelled() {
        // Playback and the simulated MCU: the line of the move.
        assert_eq!(line_label(12, None), Some((12, "line 12".into())));
        assert_eq!(line_label(0, None), None);
        // A followed printer: the nozzle's line, with the host's read-ahead beside it.
        assert_eq!(
            line_label(120, Some(134)),
            Some((120, "line 120 (host reading line 134)".into()))
        );
        assert_eq!(line_label(120, Some(120)), Some((120, "line 120".into())));
        // The nozzle on none of the file's moves (heating): what the host reads, said so.
        assert_eq!(line_label(0, Some(7)), Some((7, "reading line 7".into())));
        assert_eq!(line_label(0, Some(0)), None);
    }

    #[test]
    fn clock_and_grouping() {
        assert_eq!(clock(3725.4), "1:02:05");
        assert_eq!(clock(-3.0), "0:00:00");
        assert_eq!(group(1_234_567), "1 234 567");
        assert_eq!(group(12), "12");
    }

    #[test]
    fn profile_interpolates_between_corners() {
        let p = [(0.0, 0.0), (1.0, 100.0), (3.0, 100.0), (4.0, 0.0)];
        assert_eq!(interpolate(&p, 0.5), 50.0);
        assert_eq!(interpolate(&p, 2.0), 100.0);
        assert_eq!(interpolate(&p, 5.0), 0.0);
        assert_eq!(interpolate(&p, -1.0), 0.0);
    }
}
