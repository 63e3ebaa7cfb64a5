//! The toolpath of a G-code file: every straight piece the nozzle travels, as the twin draws it,
//! with what the slicer said about it (feature, layer, object).
//!
//! [`Reader`] reads G-code bytes as they come (a file a block at a time) and hands each straight
//! piece ([`Move`]) and each event ([`Event`]: a layer, a feature, an object, a jump, a line it
//! could not read) to a [`Sink`]. It keeps the positioning state a printer keeps — absolute or
//! relative moves (G90/G91), absolute or relative extrusion (M82/M83), G92 offsets, inches (G20),
//! homing (G28 ends at 0, as batch mode takes it) — and expands G2/G3 arcs in the XY plane into
//! chords: Klipper's `[gcode_arcs] resolution` as the longest chord, and, when asked, a largest
//! distance of a chord from the true arc so that small arcs stay round on screen. It does no
//! timing: the planner gives positions over time.
//!
//! Slicers' comments are read for what they say about the print: `;TYPE:` (PrusaSlicer, Orca,
//! Cura, ideaMaker), `; FEATURE:` (Bambu Studio) and `; feature` (Simplify3D) name the feature
//! being printed; `;LAYER_CHANGE`, `;LAYER:`, `; CHANGE_LAYER` and `; layer N, Z = …` start a
//! layer, `;Z:`/`; Z_HEIGHT:` and `;HEIGHT:`/`; LAYER_HEIGHT:` give its height. Files without
//! layer comments get a layer whenever extrusion moves to another height. Objects come from
//! Klipper's `EXCLUDE_OBJECT_DEFINE/START/END` and from `M486` labels.
//!
//! The reader works on bytes (a G-code file need not be UTF-8), finds lines eight bytes at a
//! time and reads plain decimals with an exact fast path: it is generic over the sink, so the
//! whole loop is compiled where it is used. Unreadable lines become [`Event::Diagnostic`]s with
//! their line number; they never stop the rest of the file from loading.

use crate::gcode;

/// What the nozzle does along a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveKind {
    /// Filament is pushed out: part of the print.
    Extrude,
    /// No extrusion (or a retraction): the nozzle moves between places.
    Travel,
}

/// What a slicer says it is printing, from its comments (canonical names across slicers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Feature {
    /// No comment said, or a name no rule knows.
    Unknown = 0,
    /// The outermost wall (external perimeter, `WALL-OUTER`).
    OuterWall,
    /// Inner walls (perimeters, `WALL-INNER`).
    InnerWall,
    /// Walls over air.
    OverhangWall,
    /// Sparse infill (internal infill, `FILL`).
    SparseInfill,
    /// Solid infill inside the part (`SKIN`, `SOLID-FILL`, solid layer).
    SolidInfill,
    /// The top surface.
    TopSurface,
    /// The bottom surface.
    BottomSurface,
    /// Bridges.
    Bridge,
    /// Gap fill.
    GapFill,
    /// Skirt and brim.
    Skirt,
    /// Support material.
    Support,
    /// Support interface.
    SupportInterface,
    /// Ironing.
    Ironing,
    /// Wipe or prime tower.
    PrimeTower,
    /// The slicer's custom G-code (start, end, purge lines).
    Custom,
}

impl Feature {
    /// Every feature, in [`Feature::index`] order.
    pub const ALL: [Feature; 16] = [
        Feature::Unknown,
        Feature::OuterWall,
        Feature::InnerWall,
        Feature::OverhangWall,
        Feature::SparseInfill,
        Feature::SolidInfill,
        Feature::TopSurface,
        Feature::BottomSurface,
        Feature::Bridge,
        Feature::GapFill,
        Feature::Skirt,
        Feature::Support,
        Feature::SupportInterface,
        Feature::Ironing,
        Feature::PrimeTower,
        Feature::Custom,
    ];

    /// A small integer (0–15) for packing.
    pub fn index(self) -> u8 {
        self as u8
    }

    /// The feature with [`Feature::index`] `i` (`Unknown` for anything else).
    pub fn from_index(i: u8) -> Self {
        Self::ALL
            .get(usize::from(i))
            .copied()
            .unwrap_or(Self::Unknown)
    }

    /// The name shown in legends.
    pub fn label(self) -> &'static str {
        match self {
            Feature::Unknown => "Other",
            Feature::OuterWall => "Outer wall",
            Feature::InnerWall => "Inner wall",
            Feature::OverhangWall => "Overhang wall",
            Feature::SparseInfill => "Sparse infill",
            Feature::SolidInfill => "Solid infill",
            Feature::TopSurface => "Top surface",
            Feature::BottomSurface => "Bottom surface",
            Feature::Bridge => "Bridge",
            Feature::GapFill => "Gap fill",
            Feature::Skirt => "Skirt / brim",
            Feature::Support => "Support",
            Feature::SupportInterface => "Support interface",
            Feature::Ironing => "Ironing",
            Feature::PrimeTower => "Prime tower",
            Feature::Custom => "Custom",
        }
    }

    /// The feature a slicer's name stands for (case and spacing do not matter).
    pub fn from_slicer_name(name: &[u8]) -> Self {
        let mut buf = [0u8; 40];
        let mut n = 0;
        for &c in name.iter().take(buf.len()) {
            let c = c.to_ascii_lowercase();
            // One spelling for "WALL-OUTER", "Outer_wall", "outer wall".
            buf[n] = if c == b'-' || c == b'_' { b' ' } else { c };
            n += 1;
        }
        let s = std::str::from_utf8(&buf[..n]).unwrap_or("").trim();
        let has = |w: &str| s.contains(w);
        if has("support") {
            if has("interface") || has("transition") || has("roof") || has("floor") {
                Feature::SupportInterface
            } else {
                Feature::Support
            }
        } else if has("overhang") {
            Feature::OverhangWall
        } else if has("outer") || has("external") || s == "wall outer" {
            Feature::OuterWall
        } else if has("wall") || has("perimeter") {
            Feature::InnerWall
        } else if has("top") {
            Feature::TopSurface
        } else if has("bottom") {
            Feature::BottomSurface
        } else if has("bridge") {
            Feature::Bridge
        } else if has("gap") {
            Feature::GapFill
        } else if has("skirt") || has("brim") || has("raft") || has("shield") {
            Feature::Skirt
        } else if has("iron") {
            Feature::Ironing
        } else if has("tower") || has("pillar") || has("wipe") || has("prime") {
            Feature::PrimeTower
        } else if has("solid") || s == "skin" {
            Feature::SolidInfill
        } else if has("infill") || s == "fill" {
            Feature::SparseInfill
        } else if has("custom") || has("purge") {
            Feature::Custom
        } else {
            Feature::Unknown
        }
    }
}

/// One straight piece of the nozzle's path, from the end of the previous one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Move {
    /// Where the piece ends, in the printer's coordinates (mm, after G92 offsets).
    pub end_mm: [f64; 3],
    /// Filament pushed along the piece, mm (negative: retraction).
    pub e_mm: f64,
    /// The programmed speed (the last F), mm/s.
    pub feed_mm_s: f64,
    /// 1-based line of the G-code that made it.
    pub line: u32,
    /// Whether the piece is a chord of a G2/G3 arc.
    pub arc: bool,
}

impl Move {
    /// Extrusion or travel.
    pub fn kind(&self) -> MoveKind {
        if self.e_mm > 0.0 {
            MoveKind::Extrude
        } else {
            MoveKind::Travel
        }
    }
}

/// Something the file says besides moves.
#[derive(Debug, Clone, PartialEq)]
pub enum Event<'a> {
    /// The nozzle is somewhere else without a move to draw (homing ends, the start position).
    Jump {
        /// The new position, mm.
        to_mm: [f64; 3],
        /// The line that caused it.
        line: u32,
    },
    /// From here on the slicer prints this feature.
    Feature(Feature),
    /// A new layer starts with the next move (given just before its first extrusion).
    Layer {
        /// Layer number from 0.
        index: u32,
        /// The layer's height above the bed (the slicer's `;Z:` or the extrusion's Z), mm.
        z_mm: f64,
        /// Its thickness (the slicer's `;HEIGHT:`, or the rise from the layer below), mm.
        height_mm: f64,
        /// The line of its first extrusion.
        line: u32,
    },
    /// An object of the print (Klipper's `EXCLUDE_OBJECT_DEFINE`).
    ObjectDefined {
        /// Its name.
        name: &'a str,
        /// Its centre (X, Y), mm, when given.
        center_mm: Option<[f64; 2]>,
        /// Its outline (X, Y), mm; empty when not given.
        polygon_mm: Vec<[f64; 2]>,
    },
    /// The moves that follow belong to this object (`EXCLUDE_OBJECT_START`, `M486 S`).
    ObjectStart {
        /// Its name (for `M486`, the label number or its `A` name).
        name: &'a str,
    },
    /// The moves that follow belong to no object.
    ObjectEnd,
    /// A line that could not be used, and why.
    Diagnostic {
        /// 1-based line number.
        line: u32,
        /// What was wrong.
        message: String,
    },
}

/// Where the reader's output goes.
pub trait Sink {
    /// A straight piece of the path.
    fn moved(&mut self, m: &Move);
    /// Anything else the file says.
    fn event(&mut self, e: Event<'_>);
}

/// Options that change how moves are read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ToolpathOptions {
    /// Longest chord of a G2/G3 arc, Klipper's `[gcode_arcs] resolution` (default 1 mm).
    pub mm_per_arc_segment: f64,
    /// Largest distance of a chord from its arc, mm (`None`: chords of `mm_per_arc_segment`
    /// only, as Klipper cuts them).
    pub max_arc_deviation_mm: Option<f64>,
    /// Filament diameter, mm (for the extruded volume).
    pub filament_diameter_mm: f64,
}

impl Default for ToolpathOptions {
    fn default() -> Self {
        Self {
            mm_per_arc_segment: 1.0,
            max_arc_deviation_mm: None,
            filament_diameter_mm: 1.75,
        }
    }
}

/// The most chords one arc becomes (a 2 m circle at 0.01 mm deviation is far below it).
const MAX_ARC_CHORDS: usize = 100_000;
/// A layer without slicer comments starts when extrusion moves this far up or down, mm.
const LAYER_Z_STEP_MM: f64 = 0.02;

/// A G-code reader: feed it bytes, it calls the sink.
#[derive(Debug, Clone)]
pub struct Reader {
    options: ToolpathOptions,
    /// Physical position X, Y, Z, E, mm.
    pos: [f64; 4],
    /// G92 offsets: physical = written × unit + base (absolute mode).
    base: [f64; 4],
    absolute_xyz: bool,
    absolute_e: bool,
    unit_mm: f64,
    feed_mm_s: f64,
    /// The line being read (1-based) once a line starts.
    line_no: u32,
    /// The start of a line cut by the end of the previous `feed`.
    partial: Vec<u8>,
    layers: LayerTracker,
    /// An `M486 S` label that waits for its `A` name.
    m486_label: Option<String>,
    m486_names: Vec<(i64, String)>,
}

/// Layer bookkeeping: comments start layers when the file has them, heights otherwise.
#[derive(Debug, Clone, Default)]
struct LayerTracker {
    /// Whether the file marks layers in comments (once one is seen).
    marked: bool,
    /// A marker was seen and its layer has not started yet.
    pending: bool,
    /// `;Z:` of the pending layer.
    comment_z: Option<f64>,
    /// `;HEIGHT:` (stays until the next one).
    comment_height: Option<f64>,
    /// The current layer: (index, z).
    current: Option<(u32, f64)>,
    /// The Z of the highest layer so far, for heights of files without comments.
    below_z: Option<f64>,
}

impl Default for Reader {
    fn default() -> Self {
        Self::new(ToolpathOptions::default())
    }
}

impl Reader {
    /// A reader at the origin, absolute positioning, relative nothing, mm.
    pub fn new(options: ToolpathOptions) -> Self {
        Self {
            options,
            pos: [0.0; 4],
            base: [0.0; 4],
            absolute_xyz: true,
            absolute_e: true,
            unit_mm: 1.0,
            feed_mm_s: 25.0,
            line_no: 0,
            partial: Vec::new(),
            layers: LayerTracker::default(),
            m486_label: None,
            m486_names: Vec::new(),
        }
    }

    /// Lines read so far (a line cut by the end of the input counts once it is complete).
    pub fn lines_read(&self) -> u32 {
        self.line_no
    }

    /// The filament's cross-section, mm².
    pub fn filament_area_mm2(&self) -> f64 {
        let r = self.options.filament_diameter_mm / 2.0;
        std::f64::consts::PI * r * r
    }

    /// Reads the next piece of the G-code; a line cut at the end waits for the next piece.
    #[inline]
    pub fn feed<S: Sink>(&mut self, data: &[u8], sink: &mut S) {
        let mut rest = data;
        if !self.partial.is_empty() {
            match memchr_nl(rest) {
                Some(i) => {
                    let mut line = std::mem::take(&mut self.partial);
                    line.extend_from_slice(&rest[..i]);
                    self.line(&line, sink);
                    line.clear();
                    self.partial = line;
                    rest = &rest[i + 1..];
                }
                None => {
                    self.partial.extend_from_slice(rest);
                    return;
                }
            }
        }
        while let Some(i) = memchr_nl(rest) {
            self.line(&rest[..i], sink);
            rest = &rest[i + 1..];
        }
        self.partial.extend_from_slice(rest);
    }

    /// The end of the input: reads a last line without a newline.
    pub fn finish<S: Sink>(&mut self, sink: &mut S) {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.line(&line, sink);
        }
    }

    /// Reads one line (without its newline).
    #[inline]
    fn line<S: Sink>(&mut self, raw: &[u8], sink: &mut S) {
        self.line_no = self.line_no.saturating_add(1);
        let mut i = skip_space(raw, 0);
        let Some(&first) = raw.get(i) else { return };
        if first == b';' {
            self.comment(&raw[i + 1..], sink);
            return;
        }
        // A line number (N123) is dropped, and with it a trailing checksum.
        let mut code = raw;
        if (first == b'N' || first == b'n') && raw.get(i + 1).is_some_and(u8::is_ascii_digit) {
            i += 1;
            while raw.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            i = skip_space(raw, i);
            if let Some(star) = raw.iter().rposition(|&c| c == b'*') {
                code = &raw[..star.max(i)];
            }
        }
        let Some(&letter) = code.get(i) else { return };
        let letter = letter.to_ascii_uppercase();
        // A classic command: a letter and an integer (G1, M83); the number ends at a space,
        // a letter, a `;` or the end.
        let mut j = i + 1;
        let mut number: u32 = 0;
        while let Some(&c) = code.get(j).filter(|c| c.is_ascii_digit()) {
            number = number
                .saturating_mul(10)
                .saturating_add(u32::from(c - b'0'));
            j += 1;
        }
        let classic = letter.is_ascii_alphabetic()
            && j > i + 1
            && code.get(j).is_none_or(|&c| {
                c == b' ' || c == b'\t' || c == b';' || c.is_ascii_alphabetic() || c == b'\r'
            });
        if !classic {
            if letter.is_ascii_alphabetic() {
                self.extended(&code[i..], sink);
            }
            return;
        }
        match (letter, number) {
            (b'G', 0 | 1) => self.linear(code, j, sink),
            (b'G', 2 | 3) => self.arc(code, j, number == 2, sink),
            (b'G', 20) => self.unit_mm = 25.4,
            (b'G', 21) => self.unit_mm = 1.0,
            (b'G', 28) => self.home(code, j, sink),
            (b'G', 90) => self.absolute_xyz = true,
            (b'G', 91) => self.absolute_xyz = false,
            (b'G', 92) => self.set_position(code, j, sink),
            (b'M', 82) => self.absolute_e = true,
            (b'M', 83) => self.absolute_e = false,
            (b'M', 486) => self.m486(code, j, sink),
            _ => {}
        }
    }

    /// G0/G1.
    #[inline]
    fn linear<S: Sink>(&mut self, code: &[u8], from: usize, sink: &mut S) {
        let words = match read_words(code, from) {
            Ok(w) => w,
            Err(message) => return self.diagnostic(message, sink),
        };
        if let Some(f) = words.get(b'F')
            && f > 0.0
        {
            self.feed_mm_s = f * self.unit_mm / 60.0;
        }
        let target = self.target(&words);
        self.move_to(target, false, sink);
    }

    /// Where X/Y/Z/E words take the nozzle.
    #[inline]
    fn target(&self, w: &Words) -> [f64; 4] {
        let mut t = self.pos;
        for (axis, letter) in [b'X', b'Y', b'Z', b'E'].into_iter().enumerate() {
            if let Some(v) = w.get(letter) {
                let (v, absolute) = if axis < 3 {
                    (v * self.unit_mm, self.absolute_xyz)
                } else {
                    (v, self.absolute_e)
                };
                t[axis] = if absolute {
                    v + self.base[axis]
                } else {
                    t[axis] + v
                };
            }
        }
        t
    }

    #[inline]
    fn move_to<S: Sink>(&mut self, to: [f64; 4], arc: bool, sink: &mut S) {
        let from = self.pos;
        self.pos = to;
        if from[..3] == to[..3] {
            return; // Extrude-only or feed-only: nothing moves in space.
        }
        let e = to[3] - from[3];
        if e > 0.0 {
            self.layer_for_extrusion(to[2], sink);
        }
        sink.moved(&Move {
            end_mm: [to[0], to[1], to[2]],
            e_mm: e,
            feed_mm_s: self.feed_mm_s,
            line: self.line_no,
            arc,
        });
    }

    /// G2 (clockwise) and G3 (counter-clockwise) in the XY plane, centre at I/J from the start.
    fn arc<S: Sink>(&mut self, code: &[u8], from: usize, clockwise: bool, sink: &mut S) {
        let words = match read_words(code, from) {
            Ok(w) => w,
            Err(message) => return self.diagnostic(message, sink),
        };
        if words.get(b'R').is_some() {
            return self.diagnostic("G2/G3 with R is not supported: use I and J".into(), sink);
        }
        let (i, j) = (
            words.get(b'I').unwrap_or(0.0),
            words.get(b'J').unwrap_or(0.0),
        );
        if i == 0.0 && j == 0.0 {
            let name = if clockwise { "G2" } else { "G3" };
            return self.diagnostic(format!("{name} needs I or J (the arc centre)"), sink);
        }
        if let Some(f) = words.get(b'F')
            && f > 0.0
        {
            self.feed_mm_s = f * self.unit_mm / 60.0;
        }
        let start = self.pos;
        let end = self.target(&words);
        let centre = [start[0] + i * self.unit_mm, start[1] + j * self.unit_mm];
        let radius = (i * i + j * j).sqrt() * self.unit_mm;
        let a0 = (start[1] - centre[1]).atan2(start[0] - centre[0]);
        let a1 = (end[1] - centre[1]).atan2(end[0] - centre[0]);
        let mut sweep = a1 - a0;
        if clockwise && sweep >= 0.0 {
            sweep -= std::f64::consts::TAU;
        } else if !clockwise && sweep <= 0.0 {
            sweep += std::f64::consts::TAU;
        }
        let helical_mm = end[2] - start[2];
        let length_mm = (sweep.abs() * radius).hypot(helical_mm);
        let mut chords = (length_mm / self.options.mm_per_arc_segment).floor();
        if let Some(dev) = self.options.max_arc_deviation_mm.filter(|d| *d > 0.0) {
            // A chord of angle θ lies r(1 − cos θ/2) from its arc at most.
            let step = if dev >= radius {
                std::f64::consts::PI
            } else {
                2.0 * (1.0 - dev / radius).acos()
            };
            chords = chords.max((sweep.abs() / step).ceil());
        }
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let chords = (chords as usize).clamp(1, MAX_ARC_CHORDS);
        for k in 1..=chords {
            #[allow(clippy::cast_precision_loss)]
            let f = k as f64 / chords as f64;
            let point = if k == chords {
                end
            } else {
                let a = a0 + sweep * f;
                [
                    centre[0] + radius * a.cos(),
                    centre[1] + radius * a.sin(),
                    start[2] + helical_mm * f,
                    start[3] + (end[3] - start[3]) * f,
                ]
            };
            self.move_to(point, true, sink);
        }
    }

    /// G28: the homed axes end at 0 (all of them without axis letters).
    fn home<S: Sink>(&mut self, code: &[u8], from: usize, sink: &mut S) {
        let (has, _) = letters_present(code, from);
        let all = !(has[0] || has[1] || has[2]);
        let before = self.pos;
        for (axis, &named) in has.iter().enumerate() {
            if all || named {
                self.pos[axis] = 0.0;
                self.base[axis] = 0.0;
            }
        }
        if before[..3] != self.pos[..3] {
            sink.event(Event::Jump {
                to_mm: [self.pos[0], self.pos[1], self.pos[2]],
                line: self.line_no,
            });
        }
    }

    /// G92: the written coordinates of the axes named (all without names) become the values
    /// given; the nozzle does not move.
    fn set_position<S: Sink>(&mut self, code: &[u8], from: usize, sink: &mut S) {
        let words = match read_words(code, from) {
            Ok(w) => w,
            Err(message) => return self.diagnostic(message, sink),
        };
        let all = [b'X', b'Y', b'Z', b'E']
            .iter()
            .all(|l| words.get(*l).is_none());
        for (axis, letter) in [b'X', b'Y', b'Z', b'E'].into_iter().enumerate() {
            let unit = if axis < 3 { self.unit_mm } else { 1.0 };
            if let Some(v) = words.get(letter) {
                self.base[axis] = self.pos[axis] - v * unit;
            } else if all {
                self.base[axis] = self.pos[axis];
            }
        }
    }

    /// `M486 S<n>` starts label n (`S-1` ends it), `M486 A<name>` names the current label.
    fn m486<S: Sink>(&mut self, code: &[u8], from: usize, sink: &mut S) {
        let rest = &code[from..];
        let text = String::from_utf8_lossy(rest);
        let text = text.split(';').next().unwrap_or("").trim();
        if let Some(name) = text.strip_prefix(['A', 'a']) {
            let name = name.trim().trim_matches('"').to_owned();
            if let Some(label) = self.m486_label.take() {
                if let Ok(id) = label.parse::<i64>() {
                    self.m486_names.push((id, name.clone()));
                }
                sink.event(Event::ObjectStart { name: &name });
                self.m486_label = Some(name);
            }
            return;
        }
        if let Some(id) = text.strip_prefix(['S', 's']) {
            let Ok(id) = id.trim().parse::<i64>() else {
                return self.diagnostic(format!("M486: bad label '{text}'"), sink);
            };
            if id < 0 {
                self.m486_label = None;
                sink.event(Event::ObjectEnd);
            } else {
                let name = self
                    .m486_names
                    .iter()
                    .find(|(i, _)| *i == id)
                    .map_or_else(|| id.to_string(), |(_, n)| n.clone());
                sink.event(Event::ObjectStart { name: &name });
                self.m486_label = Some(id.to_string());
            }
        }
    }

    /// Commands named by a word (Klipper's extended G-code): the objects.
    fn extended<S: Sink>(&mut self, code: &[u8], sink: &mut S) {
        let name_end = code
            .iter()
            .position(|c| c.is_ascii_whitespace() || *c == b';')
            .unwrap_or(code.len());
        let name = &code[..name_end];
        if !name.starts_with(b"EXCLUDE_OBJECT") && !name.starts_with(b"exclude_object") {
            return;
        }
        let args = String::from_utf8_lossy(&code[name_end..]);
        let args = args.split(';').next().unwrap_or("");
        let param = |key: &str| -> Option<&str> {
            // KEY=VALUE pairs; POLYGON's value has no spaces in slicer output, but read up to
            // its closing bracket in case it has.
            let upper = args.to_ascii_uppercase();
            let at = upper.find(&format!("{key}="))?;
            let value = &args[at + key.len() + 1..];
            let end = if value.starts_with('[') {
                value.rfind(']').map_or(value.len(), |i| i + 1)
            } else {
                value.find(char::is_whitespace).unwrap_or(value.len())
            };
            Some(value[..end].trim_matches('"'))
        };
        match name.to_ascii_uppercase().as_slice() {
            b"EXCLUDE_OBJECT_DEFINE" => {
                let Some(object) = param("NAME") else {
                    return self.diagnostic("EXCLUDE_OBJECT_DEFINE without NAME".into(), sink);
                };
                let center_mm = param("CENTER").and_then(|c| {
                    let mut it = c.split(',').map(|v| v.trim().parse::<f64>());
                    match (it.next(), it.next()) {
                        (Some(Ok(x)), Some(Ok(y))) => Some([x, y]),
                        _ => None,
                    }
                });
                let polygon_mm = param("POLYGON").map(parse_polygon).unwrap_or_default();
                sink.event(Event::ObjectDefined {
                    name: object,
                    center_mm,
                    polygon_mm,
                });
            }
            b"EXCLUDE_OBJECT_START" => {
                if let Some(object) = param("NAME") {
                    sink.event(Event::ObjectStart { name: object });
                }
            }
            b"EXCLUDE_OBJECT_END" => sink.event(Event::ObjectEnd),
            _ => {}
        }
    }

    /// A comment: features and layers.
    fn comment<S: Sink>(&mut self, text: &[u8], sink: &mut S) {
        let t = trim_ascii(text);
        let Some(&c0) = t.first() else { return };
        // Most comments are settings or thumbnails; the ones read here start with one of these.
        if !matches!(c0, b'T' | b'F' | b'f' | b'L' | b'l' | b'Z' | b'H' | b'C') {
            return;
        }
        if let Some(name) = t
            .strip_prefix(b"TYPE:")
            .or_else(|| t.strip_prefix(b"FEATURE:"))
            .or_else(|| t.strip_prefix(b"feature "))
        {
            sink.event(Event::Feature(Feature::from_slicer_name(trim_ascii(name))));
        } else if t == b"LAYER_CHANGE" || t == b"CHANGE_LAYER" || t.starts_with(b"LAYER:") {
            self.layers.mark();
        } else if let Some(rest) = t.strip_prefix(b"layer ") {
            // Simplify3D: "; layer 12, Z = 2.500".
            if rest.first().is_some_and(u8::is_ascii_digit) {
                self.layers.mark();
                if let Some(at) = find(rest, b"Z = ") {
                    self.layers.comment_z = parse_number_text(&rest[at + 4..]);
                }
            }
        } else if let Some(z) = t
            .strip_prefix(b"Z:")
            .or_else(|| t.strip_prefix(b"Z_HEIGHT:"))
        {
            if self.layers.pending {
                self.layers.comment_z = parse_number_text(z);
            }
        } else if let Some(h) = t
            .strip_prefix(b"HEIGHT:")
            .or_else(|| t.strip_prefix(b"LAYER_HEIGHT:"))
            && let Some(h) = parse_number_text(h).filter(|h| *h > 0.0)
        {
            self.layers.comment_height = Some(h);
        }
    }

    /// Starts a layer before an extrusion at `z` when one is due.
    #[inline]
    fn layer_for_extrusion<S: Sink>(&mut self, z: f64, sink: &mut S) {
        let l = &mut self.layers;
        let due = if l.marked {
            l.pending || l.current.is_none()
        } else {
            l.current
                .is_none_or(|(_, cz)| (z - cz).abs() > LAYER_Z_STEP_MM)
        };
        if !due {
            return;
        }
        let index = l.current.map_or(0, |(i, _)| i + 1);
        let z_mm = l.comment_z.filter(|cz| cz.is_finite()).unwrap_or(z);
        let rise = match l.below_z {
            Some(b) if z_mm > b => z_mm - b,
            _ => z_mm,
        };
        let height_mm = l.comment_height.unwrap_or(rise);
        l.current = Some((index, z_mm));
        l.below_z = Some(z_mm);
        l.pending = false;
        l.comment_z = None;
        sink.event(Event::Layer {
            index,
            z_mm,
            height_mm: height_mm.clamp(0.01, 5.0),
            line: self.line_no,
        });
    }

    fn diagnostic<S: Sink>(&self, message: String, sink: &mut S) {
        sink.event(Event::Diagnostic {
            line: self.line_no,
            message,
        });
    }
}

impl LayerTracker {
    fn mark(&mut self) {
        self.marked = true;
        self.pending = true;
        self.comment_z = None;
    }
}

/// The X, Y, Z, E, F, I, J, R words of a classic command.
#[derive(Debug, Default, Clone, Copy)]
struct Words {
    /// Bit per letter present (A = bit 0).
    present: u32,
    values: [f64; 8],
}

impl Words {
    #[inline]
    fn slot(letter: u8) -> Option<usize> {
        match letter {
            b'X' => Some(0),
            b'Y' => Some(1),
            b'Z' => Some(2),
            b'E' => Some(3),
            b'F' => Some(4),
            b'I' => Some(5),
            b'J' => Some(6),
            b'R' => Some(7),
            _ => None,
        }
    }

    #[inline]
    fn get(&self, letter: u8) -> Option<f64> {
        let slot = Self::slot(letter)?;
        (self.present & (1 << slot) != 0).then(|| self.values[slot])
    }
}

/// Reads `letter value` words from `from` to the end of the code (a `;` or the end); words
/// may be glued (`X1Y2`). Letters other than the eight read here are checked and skipped.
#[inline]
fn read_words(code: &[u8], from: usize) -> Result<Words, String> {
    let mut w = Words::default();
    let mut i = from;
    loop {
        i = skip_space(code, i);
        let Some(&c) = code.get(i) else { break };
        if c == b';' {
            break;
        }
        let letter = c.to_ascii_uppercase();
        if !letter.is_ascii_alphabetic() {
            return Err(format!(
                "Malformed command '{}'",
                String::from_utf8_lossy(trim_ascii(
                    code.split(|&b| b == b';').next().unwrap_or(code)
                ))
            ));
        }
        i += 1;
        let start = i;
        while code
            .get(i)
            .is_some_and(|&b| !(b.is_ascii_alphabetic() || b == b' ' || b == b'\t' || b == b';'))
        {
            i += 1;
        }
        let text = trim_ascii(&code[start..i]);
        let Some(slot) = Words::slot(letter) else {
            continue;
        };
        match parse_number_exact(text) {
            Some(v) => {
                w.values[slot] = v;
                w.present |= 1 << slot;
            }
            None => {
                return Err(format!(
                    "Unable to parse '{}{}' as a number",
                    char::from(letter),
                    String::from_utf8_lossy(text)
                ));
            }
        }
    }
    Ok(w)
}

/// Which of X, Y, Z appear as words, and whether any other word does.
fn letters_present(code: &[u8], from: usize) -> ([bool; 3], bool) {
    let mut has = [false; 3];
    let mut other = false;
    for &c in code[from..].iter().take_while(|&&c| c != b';') {
        match c.to_ascii_uppercase() {
            b'X' => has[0] = true,
            b'Y' => has[1] = true,
            b'Z' => has[2] = true,
            c if c.is_ascii_alphabetic() => other = true,
            _ => {}
        }
    }
    (has, other)
}

/// A number that is the whole of `text`: a plain decimal exactly (Clinger's fast path), anything
/// else through the standard parser; `None` unless finite.
#[inline]
fn parse_number_exact(text: &[u8]) -> Option<f64> {
    let negative = text.first() == Some(&b'-');
    let mut i = usize::from(matches!(text.first(), Some(b'-' | b'+')));
    let mut mantissa: u64 = 0;
    let mut digits = 0usize;
    while let Some(&c) = text.get(i).filter(|c| c.is_ascii_digit()) {
        mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(c - b'0'));
        digits += 1;
        i += 1;
    }
    let mut decimals = 0usize;
    if text.get(i) == Some(&b'.') {
        i += 1;
        while let Some(&c) = text.get(i).filter(|c| c.is_ascii_digit()) {
            mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(c - b'0'));
            digits += 1;
            decimals += 1;
            i += 1;
        }
    }
    if i == text.len() && digits > 0 && digits <= 19 && mantissa <= 1 << 53 && decimals < 23 {
        #[allow(clippy::cast_precision_loss)]
        let v = mantissa as f64 / POW10[decimals];
        return Some(if negative { -v } else { v });
    }
    std::str::from_utf8(text).ok().and_then(gcode::parse_float)
}

/// The number at the start of `text` (after spaces), up to the first byte that cannot be part of
/// it: for comments such as `;Z:0.2` or `Z = 2.500`.
fn parse_number_text(text: &[u8]) -> Option<f64> {
    let t = trim_ascii(text);
    let end = t
        .iter()
        .position(|c| !(c.is_ascii_digit() || matches!(c, b'.' | b'-' | b'+' | b'e' | b'E')))
        .unwrap_or(t.len());
    parse_number_exact(&t[..end])
}

/// `[[x,y],[x,y],…]` as points; what does not read as numbers is left out.
fn parse_polygon(text: &str) -> Vec<[f64; 2]> {
    let numbers: Vec<f64> = text
        .split(['[', ']', ','])
        .filter(|s| !s.trim().is_empty())
        .filter_map(|s| s.trim().parse::<f64>().ok())
        .collect();
    numbers
        .chunks_exact(2)
        .map(|p| [p[0], p[1]])
        .filter(|p| p[0].is_finite() && p[1].is_finite())
        .collect()
}

/// 10⁰ … 10²², all exact in `f64`.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

#[inline]
fn skip_space(b: &[u8], mut i: usize) -> usize {
    while b
        .get(i)
        .is_some_and(|&c| c == b' ' || c == b'\t' || c == b'\r')
    {
        i += 1;
    }
    i
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    b.trim_ascii()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The first `\n` in `b`, eight bytes at a time.
#[inline]
pub fn memchr_nl(b: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let nl = LO * u64::from(b'\n');
    let mut i = 0;
    while let Some(chunk) = b.get(i..i + 8) {
        let mut arr = [0u8; 8];
        arr.copy_from_slice(chunk);
        let x = u64::from_le_bytes(arr) ^ nl;
        let zero = x.wrapping_sub(LO) & !x & HI;
        if zero != 0 {
            return Some(i + (zero.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    b[i..].iter().position(|&c| c == b'\n').map(|k| i + k)
}

// -------------------------------------------------------------------------------------------
// The segments of a file in memory (tests, small files)
// -------------------------------------------------------------------------------------------

/// One straight segment of the toolpath.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Segment {
    /// Start point in mm (X, Y, Z).
    pub start_mm: [f32; 3],
    /// End point in mm (X, Y, Z).
    pub end_mm: [f32; 3],
    /// Extrusion or travel.
    pub kind: MoveKind,
    /// The slicer's feature.
    pub feature: Feature,
    /// 1-based line of the G-code that made it.
    pub line: u32,
}

/// A line that could not be used, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    /// 1-based line number.
    pub line: u32,
    /// What was wrong.
    pub message: String,
}

/// The segments of a file plus what could not be read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Toolpath {
    /// Segments in file order.
    pub segments: Vec<Segment>,
    /// Layers: (index, z, height, first line).
    pub layers: Vec<(u32, f64, f64, u32)>,
    /// Problems found, in file order.
    pub diagnostics: Vec<Diagnostic>,
}

impl Toolpath {
    /// The smallest box holding every extrusion segment (`None` when nothing is extruded).
    pub fn extrusion_bounds_mm(&self) -> Option<([f32; 3], [f32; 3])> {
        let mut it = self.segments.iter().filter(|s| s.kind == MoveKind::Extrude);
        let first = it.next()?;
        let (mut lo, mut hi) = (first.start_mm, first.start_mm);
        for s in std::iter::once(first).chain(it) {
            for p in [s.start_mm, s.end_mm] {
                for i in 0..3 {
                    lo[i] = lo[i].min(p[i]);
                    hi[i] = hi[i].max(p[i]);
                }
            }
        }
        Some((lo, hi))
    }
}

/// Collects a [`Toolpath`].
struct Collect {
    path: Toolpath,
    at: [f32; 3],
    feature: Feature,
}

impl Sink for Collect {
    fn moved(&mut self, m: &Move) {
        #[allow(clippy::cast_possible_truncation)]
        let end = m.end_mm.map(|v| v as f32);
        self.path.segments.push(Segment {
            start_mm: self.at,
            end_mm: end,
            kind: m.kind(),
            feature: self.feature,
            line: m.line,
        });
        self.at = end;
    }

    fn event(&mut self, e: Event<'_>) {
        match e {
            #[allow(clippy::cast_possible_truncation)]
            Event::Jump { to_mm, .. } => self.at = to_mm.map(|v| v as f32),
            Event::Feature(f) => self.feature = f,
            Event::Layer {
                index,
                z_mm,
                height_mm,
                line,
            } => self.path.layers.push((index, z_mm, height_mm, line)),
            Event::Diagnostic { line, message } => {
                self.path.diagnostics.push(Diagnostic { line, message });
            }
            Event::ObjectDefined { .. } | Event::ObjectStart { .. } | Event::ObjectEnd => {}
        }
    }
}

/// Reads the toolpath of G-code text.
pub fn from_gcode(text: &str, options: ToolpathOptions) -> Toolpath {
    let mut sink = Collect {
        path: Toolpath::default(),
        at: [0.0; 3],
        feature: Feature::Unknown,
    };
    let mut reader = Reader::new(options);
    reader.feed(text.as_bytes(), &mut sink);
    reader.finish(&mut sink);
    sink.path
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(text: &str) -> Toolpath {
        from_gcode(text, ToolpathOptions::default())
    }

    #[test]
    fn absolute_and_relative_moves() {
        let p = path("G90\nM82\nG1 X10 Y0 E1\nG91\nG1 X5 E1\nG1 Y5\nM83\nG90\nG1 X0 E0.5\n");
        let ends: Vec<_> = p.segments.iter().map(|s| (s.end_mm, s.kind)).collect();
        assert_eq!(
            ends,
            vec![
                ([10.0, 0.0, 0.0], MoveKind::Extrude),
                ([15.0, 0.0, 0.0], MoveKind::Travel), // absolute E: E1 → E1 is no extrusion
                ([15.0, 5.0, 0.0], MoveKind::Travel),
                ([0.0, 5.0, 0.0], MoveKind::Extrude),
            ]
        );
        assert!(p.diagnostics.is_empty());
    }

    #[test]
    fn g92_inches_and_homing() {
        let p = path("G1 X10 E5\nG92 E0\nG1 X20 E1\nG20\nG1 X1\nG21\nG28 X\nG1 Y1\n");
        let kinds: Vec<_> = p.segments.iter().map(|s| s.kind).collect();
        assert_eq!(
            kinds[1],
            MoveKind::Extrude,
            "E restarts from 0 after G92 E0"
        );
        assert_eq!(p.segments[2].end_mm, [25.4, 0.0, 0.0]);
        assert_eq!(
            p.segments[3].start_mm,
            [0.0, 0.0, 0.0],
            "G28 X homes X only"
        );
    }

    #[test]
    fn g92_on_an_axis_offsets_later_absolute_moves() {
        // At X10, "G92 X0" makes the written X0 the physical X10: X5 is physically X15.
        let p = path("G1 X10\nG92 X0\nG1 X5\nG91\nG1 X1\n");
        let ends: Vec<_> = p.segments.iter().map(|s| s.end_mm[0]).collect();
        assert_eq!(ends, vec![10.0, 15.0, 16.0]);
    }

    #[test]
    fn arcs_become_chords_on_the_circle() {
        // A half circle of radius 10 from (0,0) to (20,0) around (10,0), counter-clockwise.
        let p = path("G1 X0 Y0\nG3 X20 Y0 I10 J0 E3\n");
        let n = p.segments.len();
        assert_eq!(n, 31, "floor(pi * 10 / 1 mm) chords");
        for s in &p.segments {
            let r = ((s.end_mm[0] - 10.0).powi(2) + s.end_mm[1].powi(2)).sqrt();
            assert!((r - 10.0).abs() < 1e-4, "point off the circle: {s:?}");
            assert!(
                s.end_mm[1] <= 1e-4,
                "G3 from (0,0) to (20,0) around (10,0) passes below"
            );
        }
        assert_eq!(p.segments[n - 1].end_mm, [20.0, 0.0, 0.0]);
    }

    #[test]
    fn small_arcs_stay_round_with_a_deviation_limit() {
        // A full circle of radius 1 mm: 6 chords of 1 mm, or enough to stay within 0.01 mm.
        let text = "G1 X0 Y0\nG2 X0 Y0 I1 J0 E1\n";
        assert_eq!(path(text).segments.len(), 6);
        let fine = from_gcode(
            text,
            ToolpathOptions {
                max_arc_deviation_mm: Some(0.01),
                ..ToolpathOptions::default()
            },
        );
        let n = fine.segments.len();
        let step = std::f64::consts::TAU / n as f64;
        assert!(1.0 - (step / 2.0).cos() <= 0.01 + 1e-12, "{n} chords");
        assert!(n <= 25, "{n} chords is more than needed");
    }

    #[test]
    fn problems_are_reported_with_their_line() {
        let p = path("G1 X1\nG1 Xabc\nG2 X1 Y1 R5\nG1 X2\n");
        let lines: Vec<_> = p.diagnostics.iter().map(|d| d.line).collect();
        assert_eq!(lines, vec![2, 3]);
        assert_eq!(
            p.segments.len(),
            2,
            "good lines around the bad ones still load"
        );
    }

    #[test]
    fn bounds_cover_only_extrusion() {
        let p = path("G1 X100 Y100\nG1 X110 E1\nG1 X0 Y0\n");
        assert_eq!(
            p.extrusion_bounds_mm(),
            Some(([100.0, 100.0, 0.0], [110.0, 100.0, 0.0]))
        );
    }

    #[test]
    fn glued_words_line_numbers_checksums_and_comments() {
        let p = path("N10 G1X1Y2 E.5*71\ng1 x3 ; comment X99\nG1 X4 F6000;c\n");
        let ends: Vec<_> = p.segments.iter().map(|s| s.end_mm).collect();
        assert_eq!(
            ends,
            vec![[1.0, 2.0, 0.0], [3.0, 2.0, 0.0], [4.0, 2.0, 0.0]]
        );
        assert_eq!(p.segments[0].kind, MoveKind::Extrude);
        assert!(p.diagnostics.is_empty(), "{:?}", p.diagnostics);
    }

    #[test]
    fn slicer_feature_names_map_to_features() {
        for (name, f) in [
            ("Outer wall", Feature::OuterWall),
            ("External perimeter", Feature::OuterWall),
            ("WALL-OUTER", Feature::OuterWall),
            ("outer perimeter", Feature::OuterWall),
            ("Inner wall", Feature::InnerWall),
            ("Perimeter", Feature::InnerWall),
            ("WALL-INNER", Feature::InnerWall),
            ("Overhang perimeter", Feature::OverhangWall),
            ("Sparse infill", Feature::SparseInfill),
            ("Internal infill", Feature::SparseInfill),
            ("FILL", Feature::SparseInfill),
            ("Internal solid infill", Feature::SolidInfill),
            ("SKIN", Feature::SolidInfill),
            ("SOLID-FILL", Feature::SolidInfill),
            ("solid layer", Feature::SolidInfill),
            ("Top surface", Feature::TopSurface),
            ("Top solid infill", Feature::TopSurface),
            ("TOP-SURFACE", Feature::TopSurface),
            ("Bottom surface", Feature::BottomSurface),
            ("Bridge infill", Feature::Bridge),
            ("Internal Bridge", Feature::Bridge),
            ("Gap infill", Feature::GapFill),
            ("GAP-FILL", Feature::GapFill),
            ("Skirt/Brim", Feature::Skirt),
            ("SKIRT", Feature::Skirt),
            ("Support material interface", Feature::SupportInterface),
            ("SUPPORT", Feature::Support),
            ("Wipe tower", Feature::PrimeTower),
            ("Ironing", Feature::Ironing),
            ("Custom", Feature::Custom),
            ("something new", Feature::Unknown),
        ] {
            assert_eq!(Feature::from_slicer_name(name.as_bytes()), f, "{name}");
        }
        for f in Feature::ALL {
            assert_eq!(Feature::from_index(f.index()), f);
        }
    }

    #[test]
    fn features_and_layers_from_comments() {
        let text = "M83\n;LAYER_CHANGE\n;Z:0.2\n;HEIGHT:0.2\n;TYPE:Outer wall\nG1 Z0.2\nG1 X10 E1\n\
            ; FEATURE: Sparse infill\nG1 X0 E1\n;LAYER_CHANGE\n;Z:0.4\n;HEIGHT:0.2\nG1 Z0.4\n\
            G1 X5 E1\n";
        let p = path(text);
        let f: Vec<_> = p.segments.iter().map(|s| (s.kind, s.feature)).collect();
        assert_eq!(
            f,
            vec![
                (MoveKind::Travel, Feature::OuterWall),
                (MoveKind::Extrude, Feature::OuterWall),
                (MoveKind::Extrude, Feature::SparseInfill),
                (MoveKind::Travel, Feature::SparseInfill),
                (MoveKind::Extrude, Feature::SparseInfill),
            ]
        );
        assert_eq!(p.layers, vec![(0, 0.2, 0.2, 7), (1, 0.4, 0.2, 14)]);
    }

    #[test]
    fn files_without_layer_comments_get_layers_by_height() {
        let p =
            path("M83\nG1 Z0.3\nG1 X1 E1\nG1 Z0.55\nG1 X0 E1\nG1 Z1.2\nG1 X1\nG1 Z0.8\nG1 X0 E1\n");
        let layers: Vec<_> = p
            .layers
            .iter()
            .map(|l| (l.0, (l.1 * 100.0).round(), (l.2 * 100.0).round()))
            .collect();
        // A Z hop without extrusion (Z1.2) makes no layer.
        assert_eq!(
            layers,
            vec![(0, 30.0, 30.0), (1, 55.0, 25.0), (2, 80.0, 25.0)]
        );
    }

    #[test]
    fn simplify3d_and_bambu_layer_comments() {
        let s3d = path(
            "M83\n; layer 1, Z = 0.300\nG1 Z0.3\nG1 X1 E1\n; layer 2, Z = 0.500\nG1 Z0.5\nG1 X0 E1\n",
        );
        assert_eq!(
            s3d.layers.iter().map(|l| l.1).collect::<Vec<_>>(),
            vec![0.3, 0.5]
        );
        let bambu = path(
            "M83\n; CHANGE_LAYER\n; Z_HEIGHT: 0.2\n; LAYER_HEIGHT: 0.2\nG1 Z.2\nG1 X1 E1\n\
             ; CHANGE_LAYER\n; Z_HEIGHT: 0.36\n; LAYER_HEIGHT: 0.16\nG1 Z.36\nG1 X0 E1\n",
        );
        assert_eq!(bambu.layers, vec![(0, 0.2, 0.2, 6), (1, 0.36, 0.16, 11)]);
    }

    #[derive(Default)]
    struct Objects(Vec<String>);
    impl Sink for Objects {
        fn moved(&mut self, _: &Move) {}
        fn event(&mut self, e: Event<'_>) {
            match e {
                Event::ObjectDefined {
                    name,
                    center_mm,
                    polygon_mm,
                } => self
                    .0
                    .push(format!("define {name} {center_mm:?} {}", polygon_mm.len())),
                Event::ObjectStart { name } => self.0.push(format!("start {name}")),
                Event::ObjectEnd => self.0.push("end".into()),
                _ => {}
            }
        }
    }

    #[test]
    fn objects_from_exclude_object_and_m486() {
        let mut sink = Objects::default();
        let mut r = Reader::default();
        r.feed(
            b"EXCLUDE_OBJECT_DEFINE NAME=part_1 CENTER=150,150 POLYGON=[[1,2],[3,4],[5,6]]\n\
              EXCLUDE_OBJECT_START NAME=part_1\nG1 X1 E1\nEXCLUDE_OBJECT_END NAME=part_1\n\
              M486 S0\nM486 ABox\nM486 S-1\nM486 S0\n",
            &mut sink,
        );
        r.finish(&mut sink);
        assert_eq!(
            sink.0,
            vec![
                "define part_1 Some([150.0, 150.0]) 3",
                "start part_1",
                "end",
                "start 0",
                "start Box",
                "end",
                "start Box",
            ]
        );
    }

    #[test]
    fn input_cut_anywhere_reads_the_same() {
        let text = "G90\nM83\n;TYPE:Outer wall\nG1 X10 Y5 E1 F1200\nG2 X20 Y5 I5 J0 E2\nG1 X1\n";
        let whole = path(text);
        for cut in 1..text.len() {
            let mut sink = Collect {
                path: Toolpath::default(),
                at: [0.0; 3],
                feature: Feature::Unknown,
            };
            let mut r = Reader::default();
            r.feed(&text.as_bytes()[..cut], &mut sink);
            r.feed(&text.as_bytes()[cut..], &mut sink);
            r.finish(&mut sink);
            assert_eq!(sink.path, whole, "cut at {cut}");
        }
    }

    #[test]
    fn feed_rate_is_carried_in_mm_per_second() {
        struct Feeds(Vec<f64>);
        impl Sink for Feeds {
            fn moved(&mut self, m: &Move) {
                self.0.push(m.feed_mm_s);
            }
            fn event(&mut self, _: Event<'_>) {}
        }
        let mut sink = Feeds(Vec::new());
        let mut r = Reader::default();
        r.feed(b"G1 X1 F3000\nG1 X2\nG1 F600\nG1 X3\n", &mut sink);
        assert_eq!(sink.0, vec![50.0, 50.0, 10.0]);
    }
}
