//! The toolpath as the GPU draws it: one polyline of 16-byte points in pages, plus what the CPU
//! needs beside it (layers, lines, objects, chunks with bounding boxes). Pure data, no Bevy.
//!
//! Every move starts where the previous one ended, so the path is a single polyline: point 0 is
//! the start, point i + 1 the end of segment i, and segment i is drawn from point i to point
//! i + 1 with the attributes packed into point i + 1 ([`Attr`]). A jump without a move (homing)
//! is a hidden segment. Positions are the printer's millimetres as `f32` (1 µm holds to 16 m).
//!
//! Points come in pages of [`PAGE_SEGMENTS`] segments (16 MiB: one GPU buffer each, well below
//! every device's buffer limit); page p holds points p·S … p·S + S, so the last point of a page
//! is the first of the next. Pages are split into chunks of [`CHUNK_SEGMENTS`] segments, each
//! with its bounding box and layer range: the unit of culling and level of detail.
//!
//! [`Builder`] is the [`Sink`] of motion's toolpath reader: it packs each move as it comes, so
//! a file streams from disk to GPU-ready pages without an intermediate list of moves.

use std::sync::Arc;

use bytemuck::{Pod, Zeroable};
use gantry_core::motion::toolpath::{Event, Feature, Move, Sink};

/// Segments per page (a power of two, a multiple of [`CHUNK_SEGMENTS`]).
pub const PAGE_SEGMENTS: usize = 1 << 20;
/// Segments per chunk.
pub const CHUNK_SEGMENTS: usize = 1 << 13;
/// Diagnostics kept (the rest are counted).
pub const DIAGNOSTICS_KEPT: usize = 200;

/// One point of the polyline: where a segment ends and how it is drawn.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Pod, Zeroable)]
pub struct GpuPoint {
    /// X, Y, Z in the printer's millimetres.
    pub pos: [f32; 3],
    /// The segment's attributes ([`Attr`]).
    pub attr: u32,
}

/// A segment's attributes packed in 32 bits: feature (bits 0–3), travel (4), hidden (5), width
/// in 0.01 mm (8–15), layer height in 0.005 mm (16–23), programmed speed in 2 mm/s (24–31).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Attr {
    /// The slicer's feature.
    pub feature: Feature,
    /// A move without extrusion.
    pub travel: bool,
    /// Not drawn (a jump, or a gap left by level of detail).
    pub hidden: bool,
    /// Extrusion width, mm (0–2.55).
    pub width_mm: f32,
    /// Layer height, mm (0–1.275).
    pub height_mm: f32,
    /// Programmed speed, mm/s (0–510).
    pub speed_mm_s: f32,
}

/// The travel flag.
pub const ATTR_TRAVEL: u32 = 1 << 4;
/// The hidden flag.
pub const ATTR_HIDDEN: u32 = 1 << 5;
/// Width unit, mm.
pub const WIDTH_UNIT_MM: f32 = 0.01;
/// Height unit, mm.
pub const HEIGHT_UNIT_MM: f32 = 0.005;
/// Speed unit, mm/s.
pub const SPEED_UNIT_MM_S: f32 = 2.0;

fn quantize(v: f32, unit: f32) -> u32 {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let q = (v / unit).round().clamp(0.0, 255.0) as u32;
    q
}

impl Attr {
    /// The packed form.
    pub fn pack(&self) -> u32 {
        u32::from(self.feature.index())
            | if self.travel { ATTR_TRAVEL } else { 0 }
            | if self.hidden { ATTR_HIDDEN } else { 0 }
            | quantize(self.width_mm, WIDTH_UNIT_MM) << 8
            | quantize(self.height_mm, HEIGHT_UNIT_MM) << 16
            | quantize(self.speed_mm_s, SPEED_UNIT_MM_S) << 24
    }

    /// Unpacks `bits`.
    #[allow(clippy::cast_precision_loss)]
    pub fn unpack(bits: u32) -> Self {
        #[allow(clippy::cast_possible_truncation)]
        let feature = Feature::from_index((bits & 0xf) as u8);
        Self {
            feature,
            travel: bits & ATTR_TRAVEL != 0,
            hidden: bits & ATTR_HIDDEN != 0,
            width_mm: ((bits >> 8) & 0xff) as f32 * WIDTH_UNIT_MM,
            height_mm: ((bits >> 16) & 0xff) as f32 * HEIGHT_UNIT_MM,
            speed_mm_s: ((bits >> 24) & 0xff) as f32 * SPEED_UNIT_MM_S,
        }
    }
}

/// The width of an extrusion of cross-section `area_mm2` at layer height `h`: a rectangle with
/// semicircular ends (the slicers' flow model), `w = A / h + h (1 − π/4)`.
pub fn extrusion_width_mm(area_mm2: f64, height_mm: f64) -> f64 {
    area_mm2 / height_mm + height_mm * (1.0 - std::f64::consts::FRAC_PI_4)
}

/// A chunk: [`CHUNK_SEGMENTS`] segments (the last one fewer) with their extent.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Chunk {
    /// First segment (global index).
    pub first: u32,
    /// Segments in it.
    pub count: u32,
    /// Bounding box of its drawn segments (mm); empty (min > max) when none is drawn.
    pub min_mm: [f32; 3],
    /// See `min_mm`.
    pub max_mm: [f32; 3],
    /// Layer of its first segment.
    pub first_layer: u32,
    /// Layer of its last segment.
    pub last_layer: u32,
}

impl Chunk {
    fn new(first: u32, layer: u32) -> Self {
        Self {
            first,
            count: 0,
            min_mm: [f32::MAX; 3],
            max_mm: [f32::MIN; 3],
            first_layer: layer,
            last_layer: layer,
        }
    }

    /// Whether it has a drawn segment.
    pub fn is_empty(&self) -> bool {
        self.min_mm[0] > self.max_mm[0]
    }

    fn grow(&mut self, p: [f32; 3]) {
        for ((lo, hi), v) in self.min_mm.iter_mut().zip(&mut self.max_mm).zip(p) {
            *lo = lo.min(v);
            *hi = hi.max(v);
        }
    }
}

/// A layer of the print.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Layer {
    /// Height of the layer's top above the bed, mm.
    pub z_mm: f32,
    /// Its thickness, mm.
    pub height_mm: f32,
    /// Its first segment (global index); it ends where the next layer starts.
    pub first_segment: u32,
    /// The G-code line of its first extrusion.
    pub first_line: u32,
}

/// An object of the print (exclude_object or M486).
#[derive(Clone, Debug, PartialEq)]
pub struct Object {
    /// Its name.
    pub name: String,
    /// Its outline from `EXCLUDE_OBJECT_DEFINE` (empty when not given).
    pub polygon_mm: Vec<[f32; 2]>,
    /// The XY box of its extrusions (min, max), once it has any.
    pub extrusion_box_mm: Option<([f32; 2], [f32; 2])>,
}

impl Object {
    /// The outline to draw: the slicer's polygon, or the box around its extrusions.
    pub fn outline_mm(&self) -> Vec<[f32; 2]> {
        if self.polygon_mm.len() >= 3 {
            return self.polygon_mm.clone();
        }
        match self.extrusion_box_mm {
            Some((lo, hi)) => vec![
                [lo[0], lo[1]],
                [hi[0], lo[1]],
                [hi[0], hi[1]],
                [lo[0], hi[1]],
            ],
            None => Vec::new(),
        }
    }

    /// Where its label goes (the outline's centre of mass of vertices).
    pub fn label_at_mm(&self) -> Option<[f32; 2]> {
        let outline = self.outline_mm();
        if outline.is_empty() {
            return None;
        }
        #[allow(clippy::cast_precision_loss)]
        let n = outline.len() as f32;
        let sx: f32 = outline.iter().map(|p| p[0]).sum();
        let sy: f32 = outline.iter().map(|p| p[1]).sum();
        Some([sx / n, sy / n])
    }
}

/// Totals over the file, for legends and the camera.
#[derive(Clone, Debug, PartialEq)]
pub struct Stats {
    /// Bounding box of the extrusion (mm); min > max when nothing is extruded.
    pub extrusion_min_mm: [f32; 3],
    /// See `extrusion_min_mm`.
    pub extrusion_max_mm: [f32; 3],
    /// Slowest and fastest programmed extrusion speed, mm/s.
    pub speed_range_mm_s: (f32, f32),
    /// Lowest and highest volumetric flow of an extrusion, mm³/s.
    pub flow_range_mm3_s: (f32, f32),
    /// Which features occur (bit per [`Feature::index`]).
    pub features: u16,
    /// Extrusion segments.
    pub extrusions: u64,
    /// Travel segments.
    pub travels: u64,
    /// Filament pushed, mm.
    pub filament_mm: f64,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            extrusion_min_mm: [f32::MAX; 3],
            extrusion_max_mm: [f32::MIN; 3],
            speed_range_mm_s: (f32::MAX, 0.0),
            flow_range_mm3_s: (f32::MAX, 0.0),
            features: 0,
            extrusions: 0,
            travels: 0,
            filament_mm: 0.0,
        }
    }
}

impl Stats {
    /// Whether anything is extruded.
    pub fn has_extrusion(&self) -> bool {
        self.extrusions > 0
    }
}

/// Everything but the points: what the CPU needs to draw and navigate the toolpath.
#[derive(Clone, Debug, Default)]
pub struct ToolpathMeta {
    /// Segments in all.
    pub segments: u64,
    /// Each segment's G-code line (non-decreasing).
    pub lines: Vec<u32>,
    /// Layers in file order.
    pub layers: Vec<Layer>,
    /// Objects in order of appearance.
    pub objects: Vec<Object>,
    /// Totals.
    pub stats: Stats,
    /// Lines that could not be read (the first [`DIAGNOSTICS_KEPT`]).
    pub diagnostics: Vec<(u32, String)>,
    /// How many lines could not be read in all.
    pub diagnostic_count: u64,
    /// G-code lines read.
    pub lines_read: u32,
}

impl ToolpathMeta {
    /// The layer of segment `i` (0 before the first layer).
    pub fn layer_of_segment(&self, i: u32) -> u32 {
        let n = self.layers.partition_point(|l| l.first_segment <= i);
        #[allow(clippy::cast_possible_truncation)]
        let layer = n.saturating_sub(1) as u32;
        layer
    }

    /// The segments of layer `l` (start, end) as global indices.
    pub fn layer_segments(&self, l: usize) -> (u32, u32) {
        let start = self.layers.get(l).map_or(0, |x| x.first_segment);
        #[allow(clippy::cast_possible_truncation)]
        let end = self
            .layers
            .get(l + 1)
            .map_or(self.segments as u32, |x| x.first_segment);
        (start, end)
    }

    /// The last segment made by a line at or before `line` (`None` before the first).
    pub fn last_segment_at_line(&self, line: u32) -> Option<u32> {
        let n = self.lines.partition_point(|&l| l <= line);
        #[allow(clippy::cast_possible_truncation)]
        n.checked_sub(1).map(|i| i as u32)
    }

    /// The segments made by `line` (start, end), empty when it made none.
    pub fn segments_of_line(&self, line: u32) -> (u32, u32) {
        let a = self.lines.partition_point(|&l| l < line);
        let b = self.lines.partition_point(|&l| l <= line);
        #[allow(clippy::cast_possible_truncation)]
        (a as u32, b as u32)
    }
}

/// A finished page of points.
pub type Page = Arc<[GpuPoint]>;

/// Packs moves into pages as the reader hands them over; see the module documentation.
pub struct Builder {
    filament_area_mm2: f64,
    /// Points of the page being filled (its first is the last of the previous page).
    page: Vec<GpuPoint>,
    /// Finished pages not yet taken.
    finished: Vec<(Page, Vec<Chunk>)>,
    chunks: Vec<Chunk>,
    chunk: Chunk,
    meta: ToolpathMeta,
    at: [f32; 3],
    feature: Feature,
    layer_height_mm: f64,
    layer: u32,
    object: Option<usize>,
}

impl Builder {
    /// A builder for filament of `filament_diameter_mm`, the path starting at the origin.
    pub fn new(filament_diameter_mm: f64) -> Self {
        let r = filament_diameter_mm / 2.0;
        let mut page = Vec::with_capacity(PAGE_SEGMENTS + 1);
        page.push(GpuPoint {
            pos: [0.0; 3],
            attr: ATTR_HIDDEN,
        });
        Self {
            filament_area_mm2: std::f64::consts::PI * r * r,
            page,
            finished: Vec::new(),
            chunks: Vec::new(),
            chunk: Chunk::new(0, 0),
            meta: ToolpathMeta::default(),
            at: [0.0; 3],
            feature: Feature::Unknown,
            layer_height_mm: 0.2,
            layer: 0,
            object: None,
        }
    }

    /// Segments so far.
    pub fn segments(&self) -> u64 {
        self.meta.segments
    }

    /// Pages finished since the last call, each with its chunks.
    pub fn take_finished(&mut self) -> Vec<(Page, Vec<Chunk>)> {
        std::mem::take(&mut self.finished)
    }

    /// The end: the last (partial) page with its chunks, and the rest of the toolpath.
    pub fn finish(mut self, lines_read: u32) -> (Vec<(Page, Vec<Chunk>)>, ToolpathMeta) {
        if self.chunk.count > 0 {
            self.chunks.push(self.chunk);
        }
        if self.page.len() > 1 {
            let page: Page = std::mem::take(&mut self.page).into();
            let chunks = std::mem::take(&mut self.chunks);
            self.finished.push((page, chunks));
        }
        self.meta.lines_read = lines_read;
        (self.finished, self.meta)
    }

    #[inline]
    fn push(&mut self, end: [f32; 3], attr: u32, line: u32, drawn: bool) {
        self.page.push(GpuPoint { pos: end, attr });
        self.meta.lines.push(line);
        if drawn {
            self.chunk.grow(self.at);
            self.chunk.grow(end);
        }
        self.chunk.count += 1;
        self.chunk.last_layer = self.layer;
        self.meta.segments += 1;
        self.at = end;
        if self.chunk.count as usize == CHUNK_SEGMENTS {
            #[allow(clippy::cast_possible_truncation)]
            let next = Chunk::new(self.meta.segments as u32, self.layer);
            self.chunks.push(std::mem::replace(&mut self.chunk, next));
        }
        if self.page.len() == PAGE_SEGMENTS + 1 {
            let mut next = Vec::with_capacity(PAGE_SEGMENTS + 1);
            next.push(GpuPoint {
                pos: end,
                attr: ATTR_HIDDEN,
            });
            let page: Page = std::mem::replace(&mut self.page, next).into();
            let chunks = std::mem::take(&mut self.chunks);
            self.finished.push((page, chunks));
        }
    }
}

impl Sink for Builder {
    #[inline]
    fn moved(&mut self, m: &Move) {
        #[allow(clippy::cast_possible_truncation)]
        let end = m.end_mm.map(|v| v as f32);
        let d = [
            end[0] - self.at[0],
            end[1] - self.at[1],
            end[2] - self.at[2],
        ];
        let length = f64::from((d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt());
        let extrude = m.e_mm > 0.0 && length > 0.0;
        #[allow(clippy::cast_possible_truncation)]
        let speed = m.feed_mm_s as f32;
        let mut attr = Attr {
            feature: self.feature,
            travel: !extrude,
            hidden: false,
            width_mm: 0.0,
            height_mm: self.layer_height_mm as f32,
            speed_mm_s: speed,
        };
        let stats = &mut self.meta.stats;
        if extrude {
            let area = m.e_mm * self.filament_area_mm2 / length;
            let width = extrusion_width_mm(area, self.layer_height_mm);
            #[allow(clippy::cast_possible_truncation)]
            {
                attr.width_mm = width as f32;
            }
            stats.extrusions += 1;
            stats.filament_mm += m.e_mm;
            stats.features |= 1 << self.feature.index();
            stats.speed_range_mm_s.0 = stats.speed_range_mm_s.0.min(speed);
            stats.speed_range_mm_s.1 = stats.speed_range_mm_s.1.max(speed);
            #[allow(clippy::cast_possible_truncation)]
            let flow = (area * m.feed_mm_s) as f32;
            stats.flow_range_mm3_s.0 = stats.flow_range_mm3_s.0.min(flow);
            stats.flow_range_mm3_s.1 = stats.flow_range_mm3_s.1.max(flow);
            for p in [self.at, end] {
                let (lo, hi) = (&mut stats.extrusion_min_mm, &mut stats.extrusion_max_mm);
                for ((lo, hi), v) in lo.iter_mut().zip(hi.iter_mut()).zip(p) {
                    *lo = lo.min(v);
                    *hi = hi.max(v);
                }
            }
            if let Some(o) = self.object {
                let b = &mut self.meta.objects[o].extrusion_box_mm;
                let (mut lo, mut hi) = b.unwrap_or(([f32::MAX; 2], [f32::MIN; 2]));
                for p in [self.at, end] {
                    lo = [lo[0].min(p[0]), lo[1].min(p[1])];
                    hi = [hi[0].max(p[0]), hi[1].max(p[1])];
                }
                *b = Some((lo, hi));
            }
        } else {
            stats.travels += 1;
        }
        self.push(end, attr.pack(), m.line, true);
    }

    fn event(&mut self, e: Event<'_>) {
        match e {
            Event::Jump { to_mm, line } => {
                #[allow(clippy::cast_possible_truncation)]
                let to = to_mm.map(|v| v as f32);
                self.push(to, ATTR_HIDDEN, line, false);
            }
            Event::Feature(f) => self.feature = f,
            Event::Layer {
                index,
                z_mm,
                height_mm,
                line,
            } => {
                self.layer_height_mm = height_mm;
                self.layer = index;
                #[allow(clippy::cast_possible_truncation)]
                self.meta.layers.push(Layer {
                    z_mm: z_mm as f32,
                    height_mm: height_mm as f32,
                    first_segment: self.meta.segments as u32,
                    first_line: line,
                });
                if self.chunk.count == 0 {
                    self.chunk.first_layer = index;
                }
                self.chunk.last_layer = index;
            }
            Event::ObjectDefined {
                name, polygon_mm, ..
            } => {
                #[allow(clippy::cast_possible_truncation)]
                let polygon: Vec<[f32; 2]> = polygon_mm
                    .iter()
                    .map(|p| [p[0] as f32, p[1] as f32])
                    .collect();
                match self.meta.objects.iter_mut().find(|o| o.name == name) {
                    Some(o) => o.polygon_mm = polygon,
                    None => self.meta.objects.push(Object {
                        name: name.to_owned(),
                        polygon_mm: polygon,
                        extrusion_box_mm: None,
                    }),
                }
            }
            Event::ObjectStart { name } => {
                let i = match self.meta.objects.iter().position(|o| o.name == name) {
                    Some(i) => i,
                    None => {
                        self.meta.objects.push(Object {
                            name: name.to_owned(),
                            polygon_mm: Vec::new(),
                            extrusion_box_mm: None,
                        });
                        self.meta.objects.len() - 1
                    }
                };
                self.object = Some(i);
            }
            Event::ObjectEnd => self.object = None,
            Event::Diagnostic { line, message } => {
                self.meta.diagnostic_count += 1;
                if self.meta.diagnostics.len() < DIAGNOSTICS_KEPT {
                    self.meta.diagnostics.push((line, message));
                }
            }
        }
    }
}

/// A whole toolpath in memory: pages, chunks and meta (what the loader hands over at the end).
#[derive(Clone, Debug, Default)]
pub struct LoadedToolpath {
    /// Pages of points (level 0).
    pub pages: Vec<Page>,
    /// Chunks of all pages, in order.
    pub chunks: Vec<Chunk>,
    /// Everything else.
    pub meta: ToolpathMeta,
}

impl LoadedToolpath {
    /// Reads G-code bytes in one go (tests, small files).
    pub fn from_gcode(
        gcode: &[u8],
        options: gantry_core::motion::toolpath::ToolpathOptions,
    ) -> Self {
        let mut reader = gantry_core::motion::toolpath::Reader::new(options);
        let mut builder = Builder::new(options.filament_diameter_mm);
        reader.feed(gcode, &mut builder);
        reader.finish(&mut builder);
        let (pages, meta) = builder.finish(reader.lines_read());
        let mut out = Self {
            meta,
            ..Self::default()
        };
        for (page, chunks) in pages {
            out.pages.push(page);
            out.chunks.extend(chunks);
        }
        out
    }

    /// Segment `i`: (start, end) points.
    pub fn segment(&self, i: u32) -> Option<(GpuPoint, GpuPoint)> {
        let i = i as usize;
        let page = self.pages.get(i / PAGE_SEGMENTS)?;
        let j = i % PAGE_SEGMENTS;
        Some((*page.get(j)?, *page.get(j + 1)?))
    }

    /// Bytes held for drawing: points, lines and chunks.
    pub fn resident_bytes(&self) -> usize {
        self.pages
            .iter()
            .map(|p| std::mem::size_of_val(&p[..]))
            .sum::<usize>()
            + self.meta.lines.len() * 4
            + self.chunks.len() * std::mem::size_of::<Chunk>()
            + self.meta.layers.len() * std::mem::size_of::<Layer>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_core::motion::toolpath::ToolpathOptions;

    fn load(text: &str) -> LoadedToolpath {
        LoadedToolpath::from_gcode(text.as_bytes(), ToolpathOptions::default())
    }

    #[test]
    fn attributes_pack_and_unpack() {
        let a = Attr {
            feature: Feature::TopSurface,
            travel: false,
            hidden: false,
            width_mm: 0.45,
            height_mm: 0.2,
            speed_mm_s: 150.0,
        };
        let b = Attr::unpack(a.pack());
        assert_eq!(b.feature, Feature::TopSurface);
        assert!(!b.travel && !b.hidden);
        assert!((b.width_mm - 0.45).abs() < 0.006);
        assert!((b.height_mm - 0.2).abs() < 0.003);
        assert!((b.speed_mm_s - 150.0).abs() < 1.01);
        let t = Attr::unpack(
            Attr {
                travel: true,
                hidden: true,
                width_mm: 9.0,
                speed_mm_s: 2000.0,
                ..a
            }
            .pack(),
        );
        assert!(t.travel && t.hidden);
        assert!((t.width_mm - 2.55).abs() < 1e-5, "saturates");
        assert!((t.speed_mm_s - 510.0).abs() < 1e-3, "saturates");
    }

    #[test]
    fn width_comes_from_the_extruded_volume() {
        // 0.4 × 0.2 mm lines: A = (w − h)·h + π h²/4 = 0.2·0.2 + 0.0314 = 0.0714 mm² per mm.
        let area = (0.4 - 0.2) * 0.2 + std::f64::consts::PI * 0.04 / 4.0;
        assert!((extrusion_width_mm(area, 0.2) - 0.4).abs() < 1e-12);
        let filament = std::f64::consts::PI * 0.875 * 0.875;
        let e = area * 10.0 / filament;
        let p = load(&format!(
            ";LAYER_CHANGE\n;Z:0.2\n;HEIGHT:0.2\nG1 Z0.2\nM83\nG1 X10 E{e:.6}\n"
        ));
        let (_, end) = p.segment(1).expect("second segment");
        let a = Attr::unpack(end.attr);
        assert!((a.width_mm - 0.4).abs() < 0.006, "{a:?}");
        assert!((a.height_mm - 0.2).abs() < 0.003);
        assert!(!a.travel);
    }

    #[test]
    fn the_polyline_carries_moves_jumps_and_lines() {
        let p = load("G1 X10 F6000\nG1 X10 Y10 E1\nG28\nG1 X5\n");
        assert_eq!(p.meta.segments, 4);
        assert_eq!(p.meta.lines, vec![1, 2, 3, 4]);
        let ends: Vec<[f32; 3]> = (0..4).map(|i| p.segment(i).expect("seg").1.pos).collect();
        assert_eq!(
            ends,
            vec![
                [10.0, 0.0, 0.0],
                [10.0, 10.0, 0.0],
                [0.0; 3],
                [5.0, 0.0, 0.0]
            ]
        );
        let attrs: Vec<Attr> = (0..4)
            .map(|i| Attr::unpack(p.segment(i).expect("seg").1.attr))
            .collect();
        assert!(attrs[0].travel && !attrs[0].hidden);
        assert!(!attrs[1].travel);
        assert!(attrs[2].hidden, "homing is a jump");
        assert!((attrs[0].speed_mm_s - 100.0).abs() < 1e-3);
        assert_eq!(p.chunks.len(), 1);
        assert_eq!(p.chunks[0].count, 4);
        assert_eq!(p.meta.last_segment_at_line(3), Some(2));
        assert_eq!(p.meta.segments_of_line(2), (1, 2));
        assert_eq!(p.meta.last_segment_at_line(0), None);
    }

    #[test]
    fn pages_share_their_boundary_point_and_chunks_tile_the_path() {
        let mut g = String::from("M83\n");
        let n = PAGE_SEGMENTS + CHUNK_SEGMENTS + 5;
        for i in 0..n {
            g.push_str(if i % 2 == 0 {
                "G1 X1 E0.1\n"
            } else {
                "G1 X0 E0.1\n"
            });
        }
        let p = load(&g);
        assert_eq!(p.meta.segments as usize, n);
        assert_eq!(p.pages.len(), 2);
        assert_eq!(p.pages[0].len(), PAGE_SEGMENTS + 1);
        assert_eq!(p.pages[0][PAGE_SEGMENTS].pos, p.pages[1][0].pos);
        let mut next = 0;
        for c in &p.chunks {
            assert_eq!(c.first, next);
            next += c.count;
        }
        assert_eq!(next as usize, n);
        // Segment indices across the page boundary read the right points.
        #[allow(clippy::cast_possible_truncation)]
        let (a, b) = p.segment(PAGE_SEGMENTS as u32).expect("first of page 1");
        assert_eq!(a.pos, [0.0, 0.0, 0.0]);
        assert_eq!(b.pos, [1.0, 0.0, 0.0]);
    }

    #[test]
    fn layers_objects_and_stats() {
        let text = "EXCLUDE_OBJECT_DEFINE NAME=a CENTER=5,5 POLYGON=[[0,0],[10,0],[10,10]]\n\
            M83\n;LAYER_CHANGE\n;Z:0.2\n;HEIGHT:0.2\nG1 Z0.2\n;TYPE:Outer wall\n\
            EXCLUDE_OBJECT_START NAME=a\nG1 X10 E0.5 F1200\nEXCLUDE_OBJECT_END NAME=a\n\
            M486 S1\nG1 X20 Y5 E0.5\n;LAYER_CHANGE\n;Z:0.4\nG1 Z0.4\nG1 X30 E0.5 F3000\n";
        let p = load(text);
        assert_eq!(p.meta.layers.len(), 2);
        assert_eq!(p.meta.layers[1].first_segment, 4);
        assert_eq!(p.meta.layer_of_segment(4), 1);
        assert_eq!(p.meta.layer_of_segment(2), 0);
        assert_eq!(p.meta.layer_segments(0), (1, 4));
        assert_eq!(p.meta.objects.len(), 2);
        assert_eq!(p.meta.objects[0].outline_mm().len(), 3);
        assert_eq!(p.meta.objects[1].name, "1");
        assert_eq!(
            p.meta.objects[1].extrusion_box_mm,
            Some(([10.0, 0.0], [30.0, 5.0]))
        );
        let s = &p.meta.stats;
        assert_eq!(s.extrusions, 3);
        assert_eq!(s.features, 1 << Feature::OuterWall.index());
        assert_eq!(s.speed_range_mm_s, (20.0, 50.0));
        assert_eq!(s.extrusion_max_mm, [30.0, 5.0, 0.4]);
    }
}
