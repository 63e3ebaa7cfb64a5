//! Playback: the print replayed on the planner's clock, 1× to 1000×, with play, pause, scrub and
//! jumps to a layer or a G-code line. The toolhead's position at each moment is the timeline's
//! (motion's trapezoids), and the toolpath is drawn up to the nozzle.
//!
//! Keys: Space plays or pauses, `[` and `]` halve and double the speed (1× … 1000×), `,` and `.`
//! step back and forward by one second of print time (Shift: ten), PageUp/PageDown jump to the
//! next or previous layer, End shows the finished print, Backspace goes back to the start.

use bevy::prelude::*;

use crate::loader::LoadState;
use crate::timeline::Sample;
use crate::toolpath::NozzleCut;

/// The playback speeds offered by `[` and `]`.
pub const SPEEDS: [f64; 10] = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0];

/// Where playback is.
#[derive(Resource, Clone, Debug)]
pub struct Playback {
    /// Print time shown, s.
    pub time: f64,
    /// Whether time runs.
    pub playing: bool,
    /// Print seconds per real second.
    pub speed: f64,
    /// Whether the toolpath is cut at the nozzle (false: the whole print is shown).
    pub active: bool,
    /// A request not yet met (the planner has not reached it).
    pub pending: Option<Jump>,
}

impl Default for Playback {
    fn default() -> Self {
        Self {
            time: 0.0,
            playing: false,
            speed: 10.0,
            active: false,
            pending: None,
        }
    }
}

/// A place to go to.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Jump {
    /// A fraction (0–1) of the print time.
    Fraction(f64),
    /// Seconds from the print's start.
    Seconds(f64),
    /// A G-code line.
    Line(u32),
    /// A layer (file order, from 0).
    Layer(usize),
}

/// The toolhead now: where the timeline puts it (or the live feed).
#[derive(Resource, Clone, Copy, Debug)]
pub struct Nozzle {
    /// The sample.
    pub sample: Sample,
    /// Whether it comes from the live feed rather than the timeline.
    pub live: bool,
}

impl Default for Nozzle {
    fn default() -> Self {
        Self {
            sample: Sample {
                time: 0.0,
                pos_mm: [0.0; 3],
                speed_mm_s: 0.0,
                accel_mm_s2: 0.0,
                phase: crate::timeline::Phase::Idle,
                move_index: None,
                line: 0,
            },
            live: false,
        }
    }
}

/// The playback systems: the nozzle is placed for this frame once they ran.
#[derive(SystemSet, Debug, Clone, PartialEq, Eq, Hash)]
pub struct PlaybackSystems;

/// Adds playback.
pub fn plugin(app: &mut App) {
    app.init_resource::<Playback>()
        .init_resource::<Nozzle>()
        .add_systems(
            Update,
            (keys, advance, resolve_jump, place_nozzle)
                .chain()
                .in_set(PlaybackSystems),
        );
}

/// Print time at the start of the timeline and its end.
fn span(state: &LoadState) -> (f64, f64) {
    (state.timeline.start_time(), state.timeline.end_time())
}

impl Playback {
    /// Asks to go somewhere; playback shows the cut toolpath from then on.
    pub fn jump(&mut self, to: Jump) {
        self.pending = Some(to);
        self.active = true;
    }
}

fn keys(keys: Res<ButtonInput<KeyCode>>, mut playback: ResMut<Playback>, state: Res<LoadState>) {
    let shift = keys.pressed(KeyCode::ShiftLeft) || keys.pressed(KeyCode::ShiftRight);
    if keys.just_pressed(KeyCode::Space) {
        if !playback.active {
            playback.active = true;
            if playback.time >= state.timeline.end_time() || playback.time <= 0.0 {
                playback.time = state.timeline.start_time();
            }
        }
        playback.playing = !playback.playing;
    }
    let at = SPEEDS
        .iter()
        .position(|s| *s >= playback.speed)
        .unwrap_or(SPEEDS.len() - 1);
    if keys.just_pressed(KeyCode::BracketRight) {
        playback.speed = SPEEDS[(at + 1).min(SPEEDS.len() - 1)];
    }
    if keys.just_pressed(KeyCode::BracketLeft) {
        playback.speed = SPEEDS[at.saturating_sub(1)];
    }
    let step = if shift { 10.0 } else { 1.0 };
    if keys.just_pressed(KeyCode::Period) {
        playback.active = true;
        playback.time += step;
    }
    if keys.just_pressed(KeyCode::Comma) {
        playback.active = true;
        playback.time -= step;
    }
    if keys.just_pressed(KeyCode::End) {
        playback.active = false;
        playback.playing = false;
        playback.time = state.timeline.end_time();
    }
    if keys.just_pressed(KeyCode::Backspace) {
        playback.active = true;
        playback.time = state.timeline.start_time();
    }
    if let Some(meta) = &state.meta {
        let current = state.timeline.sample(playback.time).line;
        let layer = meta
            .last_segment_at_line(current)
            .map_or(0, |s| meta.layer_of_segment(s) as usize);
        if keys.just_pressed(KeyCode::PageUp) {
            playback.jump(Jump::Layer(
                (layer + 1).min(meta.layers.len().saturating_sub(1)),
            ));
        }
        if keys.just_pressed(KeyCode::PageDown) {
            playback.jump(Jump::Layer(layer.saturating_sub(1)));
        }
    }
}

fn advance(time: Res<Time>, mut playback: ResMut<Playback>, state: Res<LoadState>) {
    let (start, end) = span(&state);
    if playback.playing {
        let dt = f64::from(time.delta_secs()) * playback.speed;
        playback.time += dt;
        if playback.time >= end && state.planned {
            playback.time = end;
            playback.playing = false;
        }
    }
    // Never ahead of what the planner has committed, never before the start.
    if !state.timeline.is_empty() {
        playback.time = playback.time.clamp(start, end);
    }
}

fn resolve_jump(mut playback: ResMut<Playback>, state: Res<LoadState>) {
    let Some(jump) = playback.pending else { return };
    let (start, end) = span(&state);
    let target = match jump {
        Jump::Fraction(f) => state
            .planned
            .then(|| start + (end - start) * f.clamp(0.0, 1.0)),
        Jump::Seconds(s) => (start + s <= end || state.planned).then(|| (start + s).min(end)),
        Jump::Line(line) => state
            .timeline
            .time_of_line(line)
            .or_else(|| state.planned.then_some(end)),
        Jump::Layer(layer) => state.meta.as_ref().and_then(|meta| {
            let line = meta.layers.get(layer)?.first_line;
            state
                .timeline
                .time_of_line(line)
                .or_else(|| state.planned.then_some(end))
        }),
    };
    if let Some(t) = target {
        playback.time = t;
        playback.pending = None;
    }
}

/// Moves the nozzle to the playback time and cuts the toolpath there.
fn place_nozzle(
    playback: Res<Playback>,
    state: Res<LoadState>,
    mut nozzle: ResMut<Nozzle>,
    mut cut: ResMut<NozzleCut>,
) {
    if nozzle.live {
        return;
    }
    // Without playback the whole print is shown and the nozzle rests where the file ends
    // (known as soon as the file is read, so a screenshot does not wait for the planner).
    let sample = if playback.active {
        state.timeline.sample(playback.time)
    } else {
        let end = state.pages.last().and_then(|p| p.last()).map(|p| p.pos);
        Sample {
            time: state.timeline.end_time(),
            pos_mm: end.unwrap_or([0.0; 3]).map(f64::from),
            speed_mm_s: 0.0,
            accel_mm_s2: 0.0,
            phase: crate::timeline::Phase::Idle,
            move_index: None,
            line: state
                .meta
                .as_ref()
                .and_then(|m| m.lines.last().copied())
                .unwrap_or(0),
        }
    };
    nozzle.sample = sample;
    cut.at = if playback.active {
        state
            .meta
            .as_ref()
            .and_then(|meta| segment_at(&state, meta, &sample))
    } else {
        None
    };
}

/// The toolpath segment the nozzle is on at `sample`, and where on it: among the segments of
/// the sample's G-code line, the one nearest the nozzle (arcs make several); else the last
/// segment before that line.
pub fn segment_at(
    state: &LoadState,
    meta: &crate::toolpath_data::ToolpathMeta,
    sample: &Sample,
) -> Option<(u32, [f32; 3])> {
    #[allow(clippy::cast_possible_truncation)]
    let p = sample.pos_mm.map(|v| v as f32);
    let (a, b) = meta.segments_of_line(sample.line);
    if a < b {
        let mut best = (f32::MAX, a);
        for i in a..b.min(a + 4096) {
            let Some((s, e)) = segment(state, i) else {
                break;
            };
            let d = dist_to_segment(p, s, e);
            if d < best.0 {
                best = (d, i);
            }
        }
        return Some((best.1, p));
    }
    let last = meta.last_segment_at_line(sample.line)?;
    let (_, e) = segment(state, last)?;
    Some((last, e))
}

/// The segment nearest `pos` among the `window` segments up to the last one of G-code `line`
/// (the live feed: the host reads ahead of where the steppers are), latest first on a tie.
pub fn segment_near(
    state: &LoadState,
    meta: &crate::toolpath_data::ToolpathMeta,
    pos: [f64; 3],
    line: u32,
    window: u32,
) -> Option<(u32, [f32; 3])> {
    #[allow(clippy::cast_possible_truncation)]
    let p = pos.map(|v| v as f32);
    let last = meta.last_segment_at_line(line)?;
    let mut best: Option<(f32, u32)> = None;
    for i in (last.saturating_sub(window)..=last).rev() {
        let Some((s, e)) = segment(state, i) else {
            continue;
        };
        let d = dist_to_segment(p, s, e);
        if best.is_none_or(|(b, _)| d < b) {
            best = Some((d, i));
        }
    }
    best.map(|(_, i)| (i, p))
}

/// How far `pos` (printer mm) is from segment `i` of the toolpath, mm.
pub fn distance_to_segment(state: &LoadState, i: u32, pos: [f32; 3]) -> Option<f32> {
    let (a, b) = segment(state, i)?;
    Some(dist_to_segment(pos, a, b))
}

fn segment(state: &LoadState, i: u32) -> Option<([f32; 3], [f32; 3])> {
    let i = i as usize;
    let page = state.pages.get(i / crate::toolpath_data::PAGE_SEGMENTS)?;
    let j = i % crate::toolpath_data::PAGE_SEGMENTS;
    Some((page.get(j)?.pos, page.get(j + 1)?.pos))
}

fn dist_to_segment(p: [f32; 3], a: [f32; 3], b: [f32; 3]) -> f32 {
    let (p, a, b) = (Vec3::from(p), Vec3::from(a), Vec3::from(b));
    let ab = b - a;
    let t = if ab.length_squared() > 0.0 {
        ((p - a).dot(ab) / ab.length_squared()).clamp(0.0, 1.0)
    } else {
        0.0
    };
    p.distance(a + ab * t)
}
