//! Level of detail for large toolpaths: coarser copies of every chunk, and the choice of which
//! copy each chunk draws in a frame. Pure: no Bevy.
//!
//! A level drops travel moves, merges consecutive beads of the same feature and width while no
//! merged point strays more than the level's tolerance from the merged segment, and — from level
//! 2 on — keeps only every 2ᵏ-th layer (and the last one) with its beads drawn 2ᵏ times as tall,
//! so walls seen from outside keep their surface ("merged layers"). Each level is about half the
//! size of the one before, so all levels together cost about as much memory as level 0.
//!
//! Each frame, [`choose`] gives every visible chunk the coarsest level whose error is under a
//! pixel on screen, then coarsens everything until the frame fits the segment budget of the
//! device (software rendering draws a few hundred thousand segments a second; a GPU tens of
//! millions). Where no level fits — while a file loads, before its levels exist — an even
//! sample of the chunks keeps the frame within the budget.

use crate::toolpath_data::{
    ATTR_HIDDEN, ATTR_TRAVEL, Attr, Chunk, GpuPoint, LoadedToolpath, PAGE_SEGMENTS, Page,
};

/// One level of detail.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Level {
    /// How far a merged point may stray from its segment, mm.
    pub tolerance_mm: f32,
    /// Only every 2^`layer_stride_log2`-th layer is kept.
    pub layer_stride_log2: u32,
}

impl Level {
    /// How tall the kept beads are drawn.
    pub fn height_scale(&self) -> f32 {
        #[allow(clippy::cast_precision_loss)]
        let s = (1u32 << self.layer_stride_log2) as f32;
        s
    }
}

/// Levels 1 … (level 0 is the toolpath itself).
pub const LEVELS: [Level; 7] = [
    Level {
        tolerance_mm: 0.02,
        layer_stride_log2: 0,
    },
    Level {
        tolerance_mm: 0.08,
        layer_stride_log2: 1,
    },
    Level {
        tolerance_mm: 0.25,
        layer_stride_log2: 2,
    },
    Level {
        tolerance_mm: 0.6,
        layer_stride_log2: 3,
    },
    Level {
        tolerance_mm: 1.5,
        layer_stride_log2: 4,
    },
    Level {
        tolerance_mm: 3.0,
        layer_stride_log2: 5,
    },
    Level {
        tolerance_mm: 6.0,
        layer_stride_log2: 6,
    },
];

/// Where a chunk's copy at one level lies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    /// Index of its page in [`Lods::pages`].
    pub page: u32,
    /// First segment in that page.
    pub first: u32,
    /// Segments.
    pub count: u32,
}

/// The coarser copies of a toolpath.
#[derive(Clone, Debug, Default)]
pub struct Lods {
    /// Pages of points, all levels (empty once handed to the renderer: only the GPU needs them).
    pub pages: Vec<Page>,
    /// Bytes of all the pages of points, held or handed over.
    pub page_bytes: usize,
    /// `spans[level - 1][chunk]`.
    pub spans: Vec<Vec<Span>>,
}

impl Lods {
    /// Segments at `level` (1-based) in all.
    pub fn segments(&self, level: usize) -> u64 {
        self.spans
            .get(level - 1)
            .map_or(0, |s| s.iter().map(|x| u64::from(x.count)).sum())
    }

    /// Bytes of the levels: their points (wherever they are now) and spans.
    pub fn bytes(&self) -> usize {
        self.page_bytes + self.spans.iter().map(|s| s.len() * 12).sum::<usize>()
    }
}

/// Fills pages of one level.
struct PageWriter {
    pages: Vec<Page>,
    page: Vec<GpuPoint>,
    /// Index of the first page this writer makes in [`Lods::pages`].
    base: u32,
}

impl PageWriter {
    fn new(base: u32) -> Self {
        Self {
            pages: Vec::new(),
            page: Vec::new(),
            base,
        }
    }

    /// Starts a chunk whose copy has at most `max_segments`: returns (page, first segment).
    fn begin(&mut self, start: [f32; 3], max_segments: usize) -> (u32, u32) {
        if self.page.len() + max_segments + 1 > PAGE_SEGMENTS + 1 && !self.page.is_empty() {
            self.pages.push(std::mem::take(&mut self.page).into());
        }
        self.page.push(GpuPoint {
            pos: start,
            attr: ATTR_HIDDEN,
        });
        #[allow(clippy::cast_possible_truncation)]
        let at = (
            self.base + self.pages.len() as u32,
            (self.page.len() - 1) as u32,
        );
        at
    }

    fn push(&mut self, p: GpuPoint) {
        self.page.push(p);
    }

    fn finish(mut self) -> Vec<Page> {
        if !self.page.is_empty() {
            self.pages.push(std::mem::take(&mut self.page).into());
        }
        self.pages
    }
}

fn dist_to_segment(p: [f32; 3], a: [f32; 3], b: [f32; 3]) -> f32 {
    let ab = [b[0] - a[0], b[1] - a[1], b[2] - a[2]];
    let ap = [p[0] - a[0], p[1] - a[1], p[2] - a[2]];
    let len2 = ab[0] * ab[0] + ab[1] * ab[1] + ab[2] * ab[2];
    let t = if len2 > 0.0 {
        ((ap[0] * ab[0] + ap[1] * ab[1] + ap[2] * ab[2]) / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let d = [ap[0] - ab[0] * t, ap[1] - ab[1] * t, ap[2] - ab[2] * t];
    (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt()
}

/// Longest run of points merged into one segment.
const MAX_MERGED: usize = 64;

/// The merge of one chunk at one level.
struct Simplifier<'a> {
    level: Level,
    out: &'a mut PageWriter,
    /// The last point written (the start of the next segment written).
    written: [f32; 3],
    /// The open run: anchor (written), points inside, its end and attributes.
    run: Option<([f32; 3], [f32; 3], u32)>,
    mids: Vec<[f32; 3]>,
    count: u32,
}

impl Simplifier<'_> {
    fn emit(&mut self, pos: [f32; 3], attr: u32) {
        self.out.push(GpuPoint { pos, attr });
        self.written = pos;
        self.count += 1;
    }

    fn close_run(&mut self) {
        if let Some((_, end, attr)) = self.run.take() {
            self.emit(end, attr);
        }
        self.mids.clear();
    }

    fn bead(&mut self, a: [f32; 3], b: [f32; 3], attr: u32) {
        if let Some((anchor, end, run_attr)) = self.run {
            let same = compatible(run_attr, attr) && end == a && self.mids.len() < MAX_MERGED;
            if same
                && self
                    .mids
                    .iter()
                    .chain(std::iter::once(&end))
                    .all(|&m| dist_to_segment(m, anchor, b) <= self.level.tolerance_mm)
            {
                self.mids.push(end);
                self.run = Some((anchor, b, run_attr));
                return;
            }
            self.close_run();
        }
        if self.written != a {
            // A hidden segment to where the bead starts (a dropped travel or layer).
            self.emit(a, ATTR_HIDDEN);
        }
        self.run = Some((a, b, attr));
    }
}

/// Whether two beads can merge: same feature and flags, widths within 0.05 mm.
fn compatible(a: u32, b: u32) -> bool {
    let (x, y) = (Attr::unpack(a), Attr::unpack(b));
    x.feature == y.feature
        && x.travel == y.travel
        && (x.width_mm - y.width_mm).abs() <= 0.05
        && (x.height_mm - y.height_mm).abs() <= 0.011
}

/// Builds every level of `path`; its pages are numbered from `page_base` in the renderer.
pub fn build(path: &LoadedToolpath, page_base: u32) -> Lods {
    let mut lods = Lods::default();
    let last_layer = path.meta.layers.len().saturating_sub(1);
    let mut next_base = page_base;
    for level in LEVELS {
        let mut writer = PageWriter::new(next_base);
        let mut spans = Vec::with_capacity(path.chunks.len());
        for chunk in &path.chunks {
            spans.push(simplify_chunk(path, chunk, level, last_layer, &mut writer));
        }
        let pages = writer.finish();
        #[allow(clippy::cast_possible_truncation)]
        {
            next_base += pages.len() as u32;
        }
        lods.pages.extend(pages);
        lods.spans.push(spans);
    }
    lods.page_bytes = lods
        .pages
        .iter()
        .map(|p| std::mem::size_of_val(&p[..]))
        .sum();
    lods
}

fn simplify_chunk(
    path: &LoadedToolpath,
    chunk: &Chunk,
    level: Level,
    last_layer: usize,
    writer: &mut PageWriter,
) -> Span {
    let Some((start, _)) = path.segment(chunk.first) else {
        return Span::default();
    };
    let (page, first) = writer.begin(start.pos, chunk.count as usize * 2);
    let stride = 1usize << level.layer_stride_log2;
    let mut s = Simplifier {
        level,
        out: writer,
        written: start.pos,
        run: None,
        mids: Vec::with_capacity(MAX_MERGED),
        count: 0,
    };
    let meta = &path.meta;
    let mut layer = meta.layer_of_segment(chunk.first) as usize;
    for i in chunk.first..chunk.first + chunk.count {
        while meta
            .layers
            .get(layer + 1)
            .is_some_and(|l| l.first_segment <= i)
        {
            layer += 1;
        }
        let Some((a, b)) = path.segment(i) else { break };
        let keep_layer = layer.is_multiple_of(stride) || layer == last_layer;
        if b.attr & (ATTR_HIDDEN | ATTR_TRAVEL) != 0 || !keep_layer {
            s.close_run();
            continue;
        }
        s.bead(a.pos, b.pos, b.attr);
    }
    s.close_run();
    Span {
        page,
        first,
        count: s.count,
    }
}

/// What one chunk draws this frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    /// Nothing (culled, hidden by the layer range, or not printed yet).
    Skip,
    /// Level 0 or a level of detail.
    Level(usize),
}

/// Per chunk, what the frame needs to know to choose a level.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ChunkView {
    /// Whether it is drawn at all (in view, in the layer range, printed).
    pub visible: bool,
    /// Pixels per millimetre at its nearest point.
    pub px_per_mm: f32,
    /// Must be drawn at level 0 (the cut at the nozzle, the highlighted layer).
    pub full_detail: bool,
}

/// Chooses a level for every chunk: the coarsest whose error is under `max_error_px` on screen,
/// then, while the frame has more than `budget` segments, everything one level coarser.
/// `typical_layer_mm` sizes the error of merged layers.
pub fn choose(
    path_chunks: &[Chunk],
    lods: Option<&Lods>,
    views: &[ChunkView],
    max_error_px: f32,
    typical_layer_mm: f32,
    budget: u64,
) -> (Vec<Choice>, u64) {
    let count_at = |c: usize, level: usize| -> u64 {
        if level == 0 {
            u64::from(path_chunks[c].count)
        } else {
            lods.and_then(|l| l.spans.get(level - 1))
                .and_then(|s| s.get(c))
                .map_or(u64::from(path_chunks[c].count), |s| u64::from(s.count))
        }
    };
    let max_level = lods.map_or(0, |l| l.spans.len());
    let mut choices: Vec<Choice> = views
        .iter()
        .map(|v| {
            if !v.visible {
                return Choice::Skip;
            }
            if v.full_detail {
                return Choice::Level(0);
            }
            let mut level = 0;
            for (i, l) in LEVELS.iter().enumerate().take(max_level) {
                let error_mm = l
                    .tolerance_mm
                    .max((l.height_scale() - 1.0) * typical_layer_mm);
                if error_mm * v.px_per_mm <= max_error_px {
                    level = i + 1;
                } else {
                    break;
                }
            }
            Choice::Level(level)
        })
        .collect();
    let total = |choices: &[Choice]| -> u64 {
        choices
            .iter()
            .enumerate()
            .map(|(c, ch)| match ch {
                Choice::Skip => 0,
                Choice::Level(l) => count_at(c, *l),
            })
            .sum()
    };
    let mut sum = total(&choices);
    while sum > budget {
        let mut changed = false;
        for (c, ch) in choices.iter_mut().enumerate() {
            if let Choice::Level(l) = ch
                && *l < max_level
                && !views[c].full_detail
            {
                *l += 1;
                changed = true;
            }
        }
        if !changed {
            break;
        }
        sum = total(&choices);
    }
    if sum > budget {
        sum = thin(&mut choices, views, &count_at, sum, budget);
    }
    (choices, sum)
}

/// When no level fits the budget — the levels of detail are not built yet (a file still
/// loading), or the coarsest is still too large — an even sample of the chunks is drawn: every
/// full-detail chunk, and of the others a share `room / rest` spread evenly along the path (a
/// sketch of the whole print rather than its first part). Without this a large file drew every
/// segment loaded so far in each frame while it loaded: frames of seconds on software Vulkan,
/// holding the queue (and every buffer upload behind it) the whole time. Returns the new sum.
fn thin(
    choices: &mut [Choice],
    views: &[ChunkView],
    count_at: &impl Fn(usize, usize) -> u64,
    sum: u64,
    budget: u64,
) -> u64 {
    let fixed: u64 = choices
        .iter()
        .enumerate()
        .filter(|(c, _)| views[*c].full_detail)
        .map(|(c, ch)| match ch {
            Choice::Skip => 0,
            Choice::Level(l) => count_at(c, *l),
        })
        .sum();
    let rest = u128::from(sum - fixed);
    let room = u128::from(budget.saturating_sub(fixed));
    // Integer Bresenham over segments: a chunk of n segments is kept when the credit holds
    // n · rest, and each chunk adds n · room, so the kept segments never exceed `room`.
    let mut credit = 0u128;
    let mut kept = fixed;
    for (c, ch) in choices.iter_mut().enumerate() {
        let Choice::Level(l) = *ch else { continue };
        if views[c].full_detail {
            continue;
        }
        let n = count_at(c, l);
        credit += u128::from(n) * room;
        if credit >= u128::from(n) * rest {
            credit -= u128::from(n) * rest;
            kept += n;
        } else {
            *ch = Choice::Skip;
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::toolpath_data::CHUNK_SEGMENTS;
    use gantry_core::motion::toolpath::ToolpathOptions;

    fn load(text: &str) -> LoadedToolpath {
        LoadedToolpath::from_gcode(text.as_bytes(), ToolpathOptions::default())
    }

    /// A 20-layer print of circles (many small segments) with travels between layers.
    fn circles() -> String {
        let mut g = String::from("M83\n");
        for layer in 0..20 {
            let z = 0.2 * f64::from(layer + 1);
            g.push_str(&format!(";LAYER_CHANGE\n;Z:{z}\n;HEIGHT:0.2\nG1 Z{z} F600\nG1 X60 Y50 F9000\n;TYPE:Outer wall\n"));
            for i in 1..=360 {
                let a = f64::from(i).to_radians();
                g.push_str(&format!(
                    "G1 X{:.4} Y{:.4} E0.02 F1800\n",
                    50.0 + 10.0 * a.cos(),
                    50.0 + 10.0 * a.sin()
                ));
            }
        }
        g
    }

    #[test]
    fn levels_shrink_and_stay_close_to_the_path() {
        let path = load(&circles());
        let lods = build(&path, 1);
        let l0 = path.meta.segments;
        let mut prev = l0;
        for level in 1..=LEVELS.len() {
            let n = lods.segments(level);
            assert!(
                n < prev || n <= 40,
                "level {level}: {n} segments, level before {prev}"
            );
            prev = n;
        }
        // Level 1 merges 1° chords of a 10 mm circle only within 0.02 mm: r(1 − cos θ/2) ≤ 0.02
        // allows about 7° per segment.
        let l1 = lods.segments(1);
        assert!(l1 < l0 / 4, "{l1} of {l0}");
        // Every point of level 1 lies on the circle of its layer (within float error).
        for p in lods.pages.iter().flat_map(|p| p.iter()) {
            if p.attr & ATTR_HIDDEN != 0 {
                continue;
            }
            let r = ((p.pos[0] - 50.0).powi(2) + (p.pos[1] - 50.0).powi(2)).sqrt();
            assert!((r - 10.0).abs() < 1e-3, "{p:?}");
        }
        // Pages are numbered after the base.
        assert_eq!(lods.spans[0][0].page, 1);
    }

    #[test]
    fn merged_layers_keep_every_other_layer_and_the_last() {
        let path = load(&circles());
        let lods = build(&path, 0);
        let span = lods.spans[1][0]; // level 2: every other layer
        let page = &lods.pages[span.page as usize];
        let mut zs: Vec<i32> = page[span.first as usize + 1..=(span.first + span.count) as usize]
            .iter()
            .filter(|p| p.attr & ATTR_HIDDEN == 0)
            .map(|p| (p.pos[2] * 10.0).round() as i32)
            .collect();
        zs.dedup();
        assert_eq!(zs, vec![2, 6, 10, 14, 18, 22, 26, 30, 34, 38, 40]);
    }

    #[test]
    fn features_do_not_merge_across() {
        let path = load(
            ";TYPE:Outer wall\nM83\nG1 X1 E1\nG1 X2 E1\n;TYPE:Inner wall\nG1 X3 E1\nG1 X4 E1\n",
        );
        let lods = build(&path, 0);
        assert_eq!(lods.segments(1), 2);
    }

    #[test]
    fn choice_meets_the_budget_and_keeps_full_detail_where_asked() {
        let path = load(&circles());
        let lods = build(&path, 0);
        let near = ChunkView {
            visible: true,
            px_per_mm: 100.0,
            full_detail: false,
        };
        let views = vec![near; path.chunks.len()];
        let (choices, n) = choose(&path.chunks, Some(&lods), &views, 1.0, 0.2, u64::MAX);
        assert!(
            choices.iter().all(|c| *c == Choice::Level(0)),
            "close up: full detail"
        );
        assert_eq!(n, path.meta.segments);
        let far = ChunkView {
            px_per_mm: 0.5,
            ..near
        };
        let views = vec![far; path.chunks.len()];
        let (choices, _) = choose(&path.chunks, Some(&lods), &views, 1.0, 0.2, u64::MAX);
        assert!(
            choices
                .iter()
                .all(|c| matches!(c, Choice::Level(l) if *l >= 3)),
            "{choices:?}"
        );
        let budget = 200;
        let (_, n) = choose(
            &path.chunks,
            Some(&lods),
            &vec![near; path.chunks.len()],
            1.0,
            0.2,
            budget,
        );
        assert!(n <= budget, "{n}");
        let mut views = vec![near; path.chunks.len()];
        views[0].full_detail = true;
        let (choices, _) = choose(&path.chunks, Some(&lods), &views, 1.0, 0.2, 1);
        assert_eq!(choices[0], Choice::Level(0));
    }

    /// Regression: while a large file loaded (no levels of detail yet) every frame drew all the
    /// segments loaded so far — 6 M segments, seconds a frame on software Vulkan, and the
    /// loader's buffer uploads waited behind each frame (a 6 M-segment file took 14 s to load,
    /// 3 M took 0.7 s). Without levels the budget still holds, by an even sample of chunks.
    #[test]
    fn without_levels_the_budget_holds_by_an_even_sample() {
        let views_of = |n: usize| {
            vec![
                ChunkView {
                    visible: true,
                    px_per_mm: 10.0,
                    full_detail: false,
                };
                n
            ]
        };
        // 1000 chunks of CHUNK_SEGMENTS: 8 M segments, a budget of 400 000.
        let chunks: Vec<Chunk> = (0..1000u32)
            .map(|i| Chunk {
                first: i * CHUNK_SEGMENTS as u32,
                count: CHUNK_SEGMENTS as u32,
                min_mm: [0.0; 3],
                max_mm: [1.0; 3],
                first_layer: i,
                last_layer: i,
            })
            .collect();
        let budget = 400_000;
        let mut views = views_of(chunks.len());
        views[999].full_detail = true;
        let (choices, n) = choose(&chunks, None, &views, 1.0, 0.2, budget);
        let drawn: u64 = chunks
            .iter()
            .zip(&choices)
            .filter(|(_, ch)| **ch == Choice::Level(0))
            .map(|(c, _)| u64::from(c.count))
            .sum();
        assert_eq!(drawn, n);
        assert!(n <= budget, "{n} segments drawn for a budget of {budget}");
        assert!(n > budget * 3 / 4, "the budget is used: {n}");
        assert_eq!(choices[999], Choice::Level(0), "full detail is kept");
        // Spread along the whole path, not the first chunks only: every tenth of the path has
        // some of it.
        for tenth in choices[..990].chunks(99) {
            assert!(tenth.contains(&Choice::Level(0)), "{choices:?}");
        }
        // A budget that fits draws everything.
        let (choices, n) = choose(&chunks, None, &views, 1.0, 0.2, u64::MAX);
        assert_eq!(n, 1000 * CHUNK_SEGMENTS as u64);
        assert!(choices.iter().all(|c| *c == Choice::Level(0)));
    }
}
