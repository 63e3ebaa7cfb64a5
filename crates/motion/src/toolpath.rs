//! The toolpath of a G-code file: every straight segment the nozzle travels, as the twin draws it.
//!
//! This follows the positioning state a printer keeps — absolute or relative moves (G90/G91),
//! absolute or relative extrusion (M82/M83), G92 offsets, inches (G20) — and expands G2/G3 arcs in
//! the XY plane into chords of `mm_per_arc_segment` like Klipper's `[gcode_arcs]`. It does no
//! timing: the planner gives positions over time. Unreadable lines become diagnostics with their
//! line number; they never stop the rest of the file from loading.

use crate::gcode::{self, Classic, Line};

/// What the nozzle does along a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveKind {
    /// Filament is pushed out: part of the print.
    Extrude,
    /// No extrusion (or a retraction): the nozzle moves between places.
    Travel,
}

/// One straight segment of the toolpath.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Segment {
    /// Start point in mm (X, Y, Z).
    pub start_mm: [f32; 3],
    /// End point in mm (X, Y, Z).
    pub end_mm: [f32; 3],
    /// Extrusion or travel.
    pub kind: MoveKind,
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

/// Options that change how moves are read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ToolpathOptions {
    /// Chord length for G2/G3 arcs, Klipper's `[gcode_arcs] resolution` (default 1 mm).
    pub mm_per_arc_segment: f64,
}

impl Default for ToolpathOptions {
    fn default() -> Self {
        Self {
            mm_per_arc_segment: 1.0,
        }
    }
}

/// The positioning state a printer keeps while reading G-code.
#[derive(Debug, Clone)]
struct State {
    /// Position in the file's coordinates (after G92 offsets), mm.
    pos: [f64; 4],
    absolute_xyz: bool,
    absolute_e: bool,
    unit_mm: f64,
}

/// Reads the toolpath of G-code text.
pub fn from_gcode(text: &str, options: ToolpathOptions) -> Toolpath {
    let mut path = Toolpath::default();
    let mut st = State {
        pos: [0.0; 4],
        absolute_xyz: true,
        absolute_e: true,
        unit_mm: 1.0,
    };
    for (i, raw) in text.lines().enumerate() {
        let line = u32::try_from(i + 1).unwrap_or(u32::MAX);
        let result = match gcode::lex(raw) {
            Line::Classic(c) => apply(&mut st, &c, line, options, &mut path.segments),
            Line::Invalid(why) => Err(why),
            Line::Empty | Line::Extended { .. } => Ok(()),
        };
        if let Err(message) = result {
            path.diagnostics.push(Diagnostic { line, message });
        }
    }
    path
}

fn apply(
    st: &mut State,
    c: &Classic<'_>,
    line: u32,
    options: ToolpathOptions,
    out: &mut Vec<Segment>,
) -> Result<(), String> {
    match c.name.as_str() {
        "G0" | "G1" => {
            let target = target(st, c)?;
            push(out, st.pos, target, line);
            st.pos = target;
        }
        "G2" | "G3" => arc(st, c, line, options, out)?,
        "G20" => st.unit_mm = 25.4,
        "G21" => st.unit_mm = 1.0,
        "G90" => st.absolute_xyz = true,
        "G91" => st.absolute_xyz = false,
        "M82" => st.absolute_e = true,
        "M83" => st.absolute_e = false,
        "G92" => {
            let all = !c.words.iter().any(|(l, _)| "XYZE".contains(*l));
            for (axis, letter) in ['X', 'Y', 'Z', 'E'].into_iter().enumerate() {
                if let Some(v) = c.float(letter)? {
                    st.pos[axis] = v * if axis < 3 { st.unit_mm } else { 1.0 };
                } else if all {
                    st.pos[axis] = 0.0;
                }
            }
        }
        "G28" => {
            // Homing ends at each homed axis's endstop; batch-style, that is position 0.
            let all = !c.words.iter().any(|(l, _)| "XYZ".contains(*l));
            let mut target = st.pos;
            for (axis, letter) in ['X', 'Y', 'Z'].into_iter().enumerate() {
                if all || c.has(letter) {
                    target[axis] = 0.0;
                }
            }
            st.pos = target;
        }
        _ => {}
    }
    Ok(())
}

fn target(st: &State, c: &Classic<'_>) -> Result<[f64; 4], String> {
    let mut t = st.pos;
    for (axis, letter) in ['X', 'Y', 'Z', 'E'].into_iter().enumerate() {
        if let Some(v) = c.float(letter)? {
            let (v, absolute) = if axis < 3 {
                (v * st.unit_mm, st.absolute_xyz)
            } else {
                (v, st.absolute_e)
            };
            t[axis] = if absolute { v } else { t[axis] + v };
        }
    }
    Ok(t)
}

fn push(out: &mut Vec<Segment>, from: [f64; 4], to: [f64; 4], line: u32) {
    if from[..3] == to[..3] {
        return; // An extrude-only or feed-rate-only line moves nothing in space.
    }
    let kind = if to[3] > from[3] {
        MoveKind::Extrude
    } else {
        MoveKind::Travel
    };
    // f32 keeps a segment at 28 bytes; 1 µm resolution holds up to ~16 m from the origin.
    #[allow(clippy::cast_possible_truncation)]
    let p = |v: [f64; 4]| [v[0] as f32, v[1] as f32, v[2] as f32];
    out.push(Segment {
        start_mm: p(from),
        end_mm: p(to),
        kind,
        line,
    });
}

/// G2 (clockwise) and G3 (counter-clockwise) in the XY plane, centre at I/J from the start.
fn arc(
    st: &mut State,
    c: &Classic<'_>,
    line: u32,
    options: ToolpathOptions,
    out: &mut Vec<Segment>,
) -> Result<(), String> {
    if c.has('R') {
        return Err("G2/G3 with R is not supported: use I and J".into());
    }
    let (i, j) = (c.float('I')?.unwrap_or(0.0), c.float('J')?.unwrap_or(0.0));
    if i == 0.0 && j == 0.0 {
        return Err(format!("{} needs I or J (the arc centre)", c.name));
    }
    let start = st.pos;
    let end = target(st, c)?;
    let centre = [start[0] + i * st.unit_mm, start[1] + j * st.unit_mm];
    let radius = (i * i + j * j).sqrt() * st.unit_mm;
    let a0 = (start[1] - centre[1]).atan2(start[0] - centre[0]);
    let a1 = (end[1] - centre[1]).atan2(end[0] - centre[0]);
    let clockwise = c.name == "G2";
    let mut sweep = a1 - a0;
    if clockwise && sweep >= 0.0 {
        sweep -= std::f64::consts::TAU;
    } else if !clockwise && sweep <= 0.0 {
        sweep += std::f64::consts::TAU;
    }
    let planar_mm = sweep.abs() * radius;
    let helical_mm = end[2] - start[2];
    let length_mm = planar_mm.hypot(helical_mm);
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let segments = ((length_mm / options.mm_per_arc_segment).floor() as usize).clamp(1, 100_000);
    let mut prev = start;
    for k in 1..=segments {
        #[allow(clippy::cast_precision_loss)]
        let f = k as f64 / segments as f64;
        let point = if k == segments {
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
        push(out, prev, point, line);
        prev = point;
    }
    st.pos = end;
    Ok(())
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
}
