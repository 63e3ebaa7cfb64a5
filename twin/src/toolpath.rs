//! The toolpath view: what the ribbons draw each frame — colours, the layer range, travel moves,
//! the cut at the nozzle during playback, and which level of detail each chunk uses.
//!
//! [`ViewSettings`] is what the user chose (colour by feature, speed, layer or flow; travels;
//! the layer range; the budget of segments per frame). Every frame [`build_frame`] turns it,
//! the camera and the playback position into a [`RibbonFrame`]: chunks outside the view or the
//! layer range are skipped, the rest get a level of detail (level 0 where the nozzle is and on
//! the highlighted layer), and contiguous chunks become single draw calls.

use bevy::camera::primitives::{Aabb, Frustum};
use bevy::camera::visibility::VisibilitySystems;
use bevy::prelude::*;
use bevy::transform::TransformSystems;
use gantry_core::motion::toolpath::Feature;

use crate::loader::LoadState;
use crate::lod::{self, Choice, ChunkView, LEVELS};
use crate::ribbons::{
    DrawRange, FLAG_GHOST_AFTER_CUT, FLAG_GHOST_ALL, FLAG_HIGHLIGHT, FLAG_TRAVEL, RibbonFrame,
    RibbonParams, Variant,
};
use crate::toolpath_data::{PAGE_SEGMENTS, ToolpathMeta};

/// What the colours of the beads say.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ColorMode {
    /// The slicer's feature (outer wall, infill, …).
    #[default]
    Feature,
    /// The programmed speed.
    Speed,
    /// The height (layer).
    Layer,
    /// The volumetric flow.
    Flow,
}

impl ColorMode {
    /// The next mode (the `C` key).
    pub fn next(self) -> Self {
        match self {
            Self::Feature => Self::Speed,
            Self::Speed => Self::Layer,
            Self::Layer => Self::Flow,
            Self::Flow => Self::Feature,
        }
    }

    /// Its name in the legend.
    pub fn label(self) -> &'static str {
        match self {
            Self::Feature => "feature",
            Self::Speed => "speed",
            Self::Layer => "layer",
            Self::Flow => "flow",
        }
    }

    /// From the command line's word.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "feature" => Some(Self::Feature),
            "speed" => Some(Self::Speed),
            "layer" => Some(Self::Layer),
            "flow" => Some(Self::Flow),
            _ => None,
        }
    }
}

/// While a file loads (no levels of detail yet), frames draw the budget divided by this: a
/// sparse preview, in frames a few times shorter on software Vulkan, where the renderer and the
/// loader share the CPU and a page waits for the frame being rendered to reach the GPU.
pub const LOADING_BUDGET_DIVISOR: u64 = 8;

/// How the toolpath is shown.
#[derive(Resource, Clone, Debug)]
pub struct ViewSettings {
    /// Colour by.
    pub color: ColorMode,
    /// Travel moves drawn.
    pub travel: bool,
    /// Lowest and highest height level shown (indices into [`HeightLevels`]); `None` = all.
    pub layer_range: Option<(usize, usize)>,
    /// Show the part not printed yet, greyed, during playback.
    pub ghost: bool,
    /// The most segments a frame draws (coarser levels of detail beyond it).
    pub budget: u64,
    /// Largest on-screen error of a level of detail, px.
    pub max_error_px: f32,
    /// Where the toolpath is drawn relative to the printer's origin, mm (the bed of a
    /// bed-slinger moves it).
    pub offset_mm: Vec3,
}

impl Default for ViewSettings {
    fn default() -> Self {
        Self {
            color: ColorMode::Feature,
            travel: false,
            layer_range: None,
            ghost: true,
            budget: 50_000_000,
            max_error_px: 0.75,
            offset_mm: Vec3::ZERO,
        }
    }
}

/// Where the nozzle is in the toolpath (set by playback, or the live feed).
#[derive(Resource, Clone, Copy, Debug, Default)]
pub struct NozzleCut {
    /// The segment being printed and where in it the nozzle is (printer mm); `None`: the
    /// whole toolpath is shown.
    pub at: Option<(u32, [f32; 3])>,
}

/// The distinct layer heights of the print, lowest first: what the layer slider steps through.
#[derive(Resource, Clone, Debug, Default)]
pub struct HeightLevels {
    /// Layer top heights, mm, ascending.
    pub z_mm: Vec<f32>,
}

impl HeightLevels {
    /// From the layers of a toolpath (heights within 1 µm are one level).
    pub fn from_meta(meta: &ToolpathMeta) -> Self {
        let mut z: Vec<f32> = meta.layers.iter().map(|l| l.z_mm).collect();
        z.sort_by(f32::total_cmp);
        z.dedup_by(|a, b| (*a - *b).abs() < 1e-3);
        Self { z_mm: z }
    }

    /// The z window (low, high) that shows levels `lo..=hi`: boundaries half-way between
    /// neighbouring levels.
    pub fn window(&self, lo: usize, hi: usize) -> (f32, f32) {
        let z = &self.z_mm;
        if z.is_empty() {
            return (f32::MIN, f32::MAX);
        }
        let hi = hi.min(z.len() - 1);
        let lo = lo.min(hi);
        let low = if lo == 0 {
            f32::MIN
        } else {
            0.5 * (z[lo - 1] + z[lo])
        };
        let high = if hi + 1 >= z.len() {
            f32::MAX
        } else {
            0.5 * (z[hi] + z[hi + 1])
        };
        (low, high)
    }

    /// The level whose height is nearest `z`.
    pub fn level_of(&self, z: f32) -> usize {
        let i = self.z_mm.partition_point(|&l| l < z);
        match (i.checked_sub(1), self.z_mm.get(i)) {
            (Some(p), Some(&n)) if (z - self.z_mm[p]).abs() <= (n - z).abs() => p,
            (Some(p), None) => p,
            _ => i,
        }
    }
}

/// A feature's colour (sRGB), after the slicers' usual palette.
pub fn feature_color(f: Feature) -> Color {
    let (r, g, b) = match f {
        Feature::Unknown => (0.55, 0.55, 0.55),
        Feature::OuterWall => (1.0, 0.49, 0.22),
        Feature::InnerWall => (1.0, 0.9, 0.3),
        Feature::OverhangWall => (0.12, 0.12, 1.0),
        Feature::SparseInfill => (0.69, 0.19, 0.16),
        Feature::SolidInfill => (0.59, 0.33, 0.8),
        Feature::TopSurface => (0.94, 0.25, 0.25),
        Feature::BottomSurface => (0.45, 0.35, 0.85),
        Feature::Bridge => (0.3, 0.5, 0.73),
        Feature::GapFill => (1.0, 1.0, 1.0),
        Feature::Skirt => (0.0, 0.53, 0.43),
        Feature::Support => (0.0, 1.0, 0.0),
        Feature::SupportInterface => (0.0, 0.5, 0.0),
        Feature::Ironing => (1.0, 0.55, 0.41),
        Feature::PrimeTower => (0.7, 0.89, 0.67),
        Feature::Custom => (0.37, 0.82, 0.58),
    };
    Color::srgb(r, g, b)
}

/// The stops of the speed, layer and flow ramp (sRGB), low to high.
pub const RAMP: [(f32, f32, f32); 5] = [
    (0.11, 0.25, 0.8),
    (0.0, 0.7, 0.85),
    (0.2, 0.8, 0.25),
    (0.98, 0.85, 0.1),
    (0.9, 0.15, 0.1),
];

/// The ramp's colour at `t` in 0–1 (as the shader computes it).
pub fn ramp_color(t: f32) -> Color {
    let x = t.clamp(0.0, 1.0) * 4.0;
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let i = (x.floor() as usize).min(3);
    let f = x - i as f32;
    let lin = |c: (f32, f32, f32)| LinearRgba::from(Color::srgb(c.0, c.1, c.2));
    let (a, b) = (lin(RAMP[i]), lin(RAMP[i + 1]));
    Color::LinearRgba(LinearRgba::rgb(
        a.red + (b.red - a.red) * f,
        a.green + (b.green - a.green) * f,
        a.blue + (b.blue - a.blue) * f,
    ))
}

/// Travel moves' colour (sRGB).
pub const TRAVEL_COLOR: Color = Color::srgb(0.3, 0.45, 0.75);
/// The unprinted part during playback (sRGB).
pub const GHOST_COLOR: Color = Color::srgb(0.3, 0.31, 0.34);

fn linear(c: Color) -> Vec4 {
    Vec4::from_array(LinearRgba::from(c).to_f32_array())
}

/// Adds the view.
pub fn plugin(app: &mut App) {
    app.init_resource::<ViewSettings>()
        .init_resource::<NozzleCut>()
        .init_resource::<HeightLevels>()
        .add_systems(Update, update_levels)
        .add_systems(
            PostUpdate,
            build_frame
                .after(VisibilitySystems::UpdateFrusta)
                .after(TransformSystems::Propagate),
        );
}

/// The layers, once a load has its toolpath (again after the file shown is replaced).
fn update_levels(
    state: Res<LoadState>,
    mut levels: ResMut<HeightLevels>,
    mut done: Local<Option<u32>>,
) {
    if *done == Some(state.generation) {
        return;
    }
    if let Some(meta) = &state.meta {
        *levels = HeightLevels::from_meta(meta);
        *done = Some(state.generation);
    }
}

/// The typical layer height of a print, mm (for the error of merged layers).
fn typical_layer_mm(meta: Option<&ToolpathMeta>) -> f32 {
    let Some(meta) = meta else { return 0.2 };
    let mut h: Vec<f32> = meta.layers.iter().map(|l| l.height_mm).collect();
    if h.is_empty() {
        return 0.2;
    }
    let mid = h.len() / 2;
    *h.select_nth_unstable_by(mid, f32::total_cmp).1
}

/// Builds this frame's draw list; see the module documentation.
#[allow(clippy::too_many_lines)]
pub fn build_frame(
    state: Res<LoadState>,
    settings: Res<ViewSettings>,
    levels: Res<HeightLevels>,
    cut: Res<NozzleCut>,
    cameras: Query<(&Camera, &GlobalTransform, &Frustum), With<Camera3d>>,
    mut frame: ResMut<RibbonFrame>,
    mut typical_layer: Local<Option<(u32, f32)>>,
) {
    let meta = state.meta.as_deref();
    if typical_layer.is_none_or(|(g, _)| g != state.generation) && meta.is_some() {
        *typical_layer = Some((state.generation, typical_layer_mm(meta)));
    }
    let mut p = RibbonParams::default();
    for f in Feature::ALL {
        p.palette[usize::from(f.index())] = linear(feature_color(f));
    }
    for (i, c) in RAMP.iter().enumerate() {
        p.ramp[i] = linear(Color::srgb(c.0, c.1, c.2));
    }
    p.travel_color = linear(TRAVEL_COLOR);
    p.ghost_color = linear(GHOST_COLOR);
    p.modes.y = match settings.color {
        ColorMode::Feature => 0,
        ColorMode::Speed => 1,
        ColorMode::Layer => 2,
        ColorMode::Flow => 3,
    };
    let mut flags = 0;
    if settings.travel {
        flags |= FLAG_TRAVEL;
    }
    if let Some(meta) = meta {
        let s = &meta.stats;
        if s.has_extrusion() {
            p.ranges = Vec4::new(
                s.speed_range_mm_s.0,
                s.speed_range_mm_s.1,
                s.flow_range_mm3_s.0,
                s.flow_range_mm3_s.1,
            );
            p.z_range.x = s.extrusion_min_mm[2];
            p.z_range.y = s.extrusion_max_mm[2];
        }
    }
    let (z_lo, z_hi) = match settings.layer_range {
        Some((lo, hi)) => levels.window(lo, hi),
        None => (f32::MIN, f32::MAX),
    };
    p.z_window.x = z_lo;
    p.z_window.y = z_hi;
    // The highlighted layer: the top of the range while the range is cut, else none.
    let highlight = settings
        .layer_range
        .filter(|(_, hi)| *hi + 1 < levels.z_mm.len())
        .map(|(_, hi)| levels.window(hi, hi));
    if let Some((a, b)) = highlight {
        flags |= FLAG_HIGHLIGHT;
        p.z_window.z = a;
        p.z_window.w = b;
    }
    let offset = settings.offset_mm;
    p.offset = offset.extend(0.0);
    let cut_at = cut.at;
    if let Some((_, point)) = cut_at {
        p.cut_point = Vec3::from_array(point).extend(1.0);
        if settings.ghost {
            flags |= FLAG_GHOST_AFTER_CUT;
        }
    }
    p.modes.z = flags;
    frame.params = p;

    // Variants: 0 the cut at the nozzle, 1 plain, 2 ghost; then plain and ghost per level.
    let mut variants = vec![
        Variant {
            cut_index: cut_at.map_or(u32::MAX, |(k, _)| k % PAGE_SEGMENTS as u32),
            height_scale: 1.0,
            flags: 0,
        },
        Variant {
            cut_index: u32::MAX,
            height_scale: 1.0,
            flags: 0,
        },
        Variant {
            cut_index: u32::MAX,
            height_scale: 1.0,
            flags: FLAG_GHOST_ALL,
        },
    ];
    for l in LEVELS {
        for ghost in [0, FLAG_GHOST_ALL] {
            variants.push(Variant {
                cut_index: u32::MAX,
                height_scale: l.height_scale(),
                flags: ghost,
            });
        }
    }
    frame.variants = variants;
    frame.draws.clear();

    let Some((camera, camera_transform, frustum)) = cameras.iter().next() else {
        return;
    };
    let viewport_h = camera
        .physical_viewport_size()
        .map_or(800.0, |s| s.y as f32);
    let proj_y = camera.clip_from_view().col(1).y;
    let eye = camera_transform.translation();
    let cut_index = cut_at.map(|(k, _)| k);
    let highlight_z = highlight;
    let views: Vec<ChunkView> = state
        .chunks
        .iter()
        .map(|c| {
            if c.is_empty() {
                return ChunkView {
                    visible: false,
                    px_per_mm: 0.0,
                    full_detail: false,
                };
            }
            let lo = Vec3::from_array(c.min_mm) + offset;
            let hi = Vec3::from_array(c.max_mm) + offset;
            let in_window = hi.z >= z_lo - 1e-3 && lo.z <= z_hi + 1e-3;
            let after_cut = cut_index.is_some_and(|k| c.first > k);
            // Printer (x, y, z) → Bevy (x, z, −y).
            let bevy_lo = Vec3::new(lo.x, lo.z, -hi.y);
            let bevy_hi = Vec3::new(hi.x, hi.z, -lo.y);
            let aabb = Aabb::from_min_max(bevy_lo - 1.0, bevy_hi + 1.0);
            let in_view =
                frustum.intersects_obb(&aabb, &bevy::math::Affine3A::IDENTITY, true, false);
            let nearest = eye.clamp(bevy_lo, bevy_hi);
            let distance = eye.distance(nearest).max(1.0);
            let holds_cut = cut_index.is_some_and(|k| k >= c.first && k < c.first + c.count);
            let on_highlight =
                highlight_z.is_some_and(|(a, b)| hi.z >= a - 1e-3 && lo.z <= b + 1e-3);
            ChunkView {
                visible: in_window && in_view && (!after_cut || settings.ghost),
                px_per_mm: viewport_h * proj_y / (2.0 * distance),
                full_detail: holds_cut || on_highlight,
            }
        })
        .collect();
    let lods = state.lods.as_deref();
    // Until the levels of detail exist (the file is still loading), a preview: a share of the
    // budget, so that frames stay short and the loader keeps the CPU.
    let budget = if lods.is_none() {
        settings.budget / LOADING_BUDGET_DIVISOR
    } else {
        settings.budget
    };
    let (choices, _) = lod::choose(
        &state.chunks,
        lods,
        &views,
        settings.max_error_px,
        typical_layer.map_or(0.2, |(_, h)| h),
        budget,
    );
    let page_segments = PAGE_SEGMENTS as u32;
    for (c, choice) in state.chunks.iter().zip(&choices) {
        let Choice::Level(level) = *choice else {
            continue;
        };
        let after_cut = cut_index.is_some_and(|k| c.first > k);
        let holds_cut = cut_index.is_some_and(|k| k >= c.first && k < c.first + c.count);
        let range = if level == 0 {
            DrawRange {
                page: c.first / page_segments,
                first: c.first % page_segments,
                count: c.count,
                variant: if holds_cut {
                    0
                } else if after_cut {
                    2
                } else {
                    1
                },
            }
        } else {
            let Some(span) = lods
                .and_then(|l| l.spans.get(level - 1))
                .and_then(|s| s.get(c.first as usize / crate::toolpath_data::CHUNK_SEGMENTS))
            else {
                continue;
            };
            #[allow(clippy::cast_possible_truncation)]
            let variant = 3 + 2 * (level as u32 - 1) + u32::from(after_cut);
            DrawRange {
                page: span.page,
                first: span.first,
                count: span.count,
                variant,
            }
        };
        // Contiguous ranges of the same page and variant become one draw.
        if let Some(last) = frame.draws.last_mut()
            && last.page == range.page
            && last.variant == range.variant
            && last.first + last.count == range.first
        {
            last.count += range.count;
            continue;
        }
        frame.draws.push(range);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn height_levels_window_between_neighbours() {
        let l = HeightLevels {
            z_mm: vec![0.2, 0.4, 0.6, 0.8],
        };
        assert_eq!(l.window(0, 3), (f32::MIN, f32::MAX));
        let (a, b) = l.window(1, 2);
        assert!((a - 0.3).abs() < 1e-6 && (b - 0.7).abs() < 1e-6);
        assert_eq!(l.level_of(0.41), 1);
        assert_eq!(l.level_of(0.59), 2);
        assert_eq!(l.level_of(5.0), 3);
        assert_eq!(l.level_of(0.0), 0);
    }

    #[test]
    fn ramp_ends_are_its_stops() {
        let lin = |c: Color| LinearRgba::from(c).to_f32_array();
        let a = lin(ramp_color(0.0));
        let b = lin(Color::srgb(RAMP[0].0, RAMP[0].1, RAMP[0].2));
        assert!(a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5));
        let a = lin(ramp_color(1.0));
        let b = lin(Color::srgb(RAMP[4].0, RAMP[4].1, RAMP[4].2));
        assert!(a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5));
    }
}
