//! Print-time estimates from the real planner (`gantry estimate`).
//!
//! The G-code runs through the same [`Printer`] as `gantry batch` — same look-ahead, junction
//! speeds, flush behaviour and kinematic limits — with step generation switched off and the axes
//! taken as homed (slicer files usually home inside a start macro of the printer's). The
//! committed moves then give the print time, per-layer times, filament used and the highest
//! speed reached.
//!
//! # Layers
//! Layers are counted the way the file's slicer counts them when it marks them: each
//! layer-change comment ([`is_layer_change_comment`]: `;LAYER_CHANGE` of PrusaSlicer,
//! SuperSlicer and OrcaSlicer, `;LAYER:n` of Cura and ideaMaker, `; CHANGE_LAYER` of
//! BambuStudio, `; layer n, Z = z` of Simplify3D) begins a layer, which lasts from the first
//! move after it to the first move after the next one (a spiral-vase file thus has one layer per
//! turn, as its slicer numbers them). Files without such comments are counted by the Z of their
//! extruding moves: a move that extrudes at one height begins a layer when its Z differs from
//! the layer's by more than 1 µm; moves that rise while they extrude (spiral vase, non-planar
//! paths such as FullControl's) make one layer per full turn of the path — the heading of the
//! extruding moves is followed, and a layer ends where it has turned through 360° — so that a
//! vase is not counted a layer per Z step. A layer's Z is the highest at which it extrudes.
//!
//! # The end of the file
//! A last line without a line end is not run, as in Klipper, whose SD-card print
//! (virtual_sdcard) and batch mode both drop it ([`Printer::finish_batch`]); the estimate names
//! it in [`Estimate::unterminated_line`].

use crate::config::Config;
use std::collections::VecDeque;

use crate::printer::{BATCH_READ_SIZE, Printer, PrinterError, Response};
use crate::toolhead::{MoveError, PlannedMove};

/// One layer: the Z at which it extrudes and how long it takes (see the module docs).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct LayerTime {
    /// Layer number from 0.
    pub layer: usize,
    /// The highest Z at which it extrudes (the toolhead's Z at its start when it does not
    /// extrude), mm.
    pub z_mm: f64,
    /// Time from this layer's start to the next layer's (the end of the print for the last), s.
    pub time_s: f64,
    /// G-code line where it begins: its layer-change comment, or its first extruding move.
    pub first_line: u32,
}

/// How the layers of an [`Estimate`] were found (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerRule {
    /// From the slicer's layer-change comments.
    Comments,
    /// From the Z of the extruding moves (no layer-change comments in the file).
    #[default]
    ZHeights,
}

/// Whether `line` is a slicer's layer-change comment: `;LAYER_CHANGE` (PrusaSlicer,
/// SuperSlicer, OrcaSlicer), `;LAYER:n` (Cura, ideaMaker; negative for Cura's raft),
/// `; CHANGE_LAYER` (BambuStudio) or `; layer n, Z = z` (Simplify3D).
#[inline]
pub fn is_layer_change_comment(line: &str) -> bool {
    let b = line.as_bytes();
    // Every line of the file comes here: most are rejected by their first two bytes.
    if b.first() != Some(&b';') {
        return false;
    }
    match b.get(1) {
        Some(b'L') => {}
        Some(b' ') if matches!(b.get(2), Some(b'C' | b'l')) => {}
        _ => return false,
    }
    let line = line.trim_end();
    if line == ";LAYER_CHANGE" || line == "; CHANGE_LAYER" {
        return true;
    }
    if let Some(n) = line.strip_prefix(";LAYER:") {
        let n = n.strip_prefix('-').unwrap_or(n);
        return !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit());
    }
    if let Some(rest) = line.strip_prefix("; layer ")
        && let Some((n, _)) = rest.split_once(", Z = ")
    {
        return !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit());
    }
    false
}

/// What `gantry estimate` reports.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Estimate {
    /// From the first move's start to the last move's end, s.
    pub print_time_s: f64,
    /// What klippy reports as "print time" when the same file ends in batch mode: the print
    /// time at the end of the input, counted from the planner's start (0.25 s buffer and
    /// step-generation lead included), s.
    pub klipper_print_time_s: f64,
    /// Per layer.
    pub layers: Vec<LayerTime>,
    /// How the layers were found.
    pub layer_rule: LayerRule,
    /// Net filament pushed (extrusions minus retractions), mm.
    pub filament_mm: f64,
    /// Filament volume, mm³ (from the extruder's filament_diameter).
    pub filament_mm3: f64,
    /// Highest cruise speed of any move, mm/s.
    pub max_speed_mm_s: f64,
    /// Moves planned.
    pub moves: usize,
    /// G-code lines read.
    pub lines: u32,
    /// Errors and notices from the G-code (Klipper's messages), with their lines; each text
    /// at most [`crate::printer::RESPONSES_KEPT_PER_TEXT`] times.
    pub messages: Vec<(u32, String)>,
    /// The texts that came more often than that, each with how many times it came in all.
    pub repeated_messages: Vec<(String, u64)>,
    /// A last line without a line end, which was not run (Klipper does not run it either):
    /// its number and text.
    pub unterminated_line: Option<(u32, String)>,
}

/// Why an estimate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum EstimateError {
    /// The printer.cfg is not usable.
    #[error(transparent)]
    Config(#[from] PrinterError),
    /// The planner failed internally.
    #[error(transparent)]
    Planner(#[from] MoveError),
}

/// Plans `gcode` on the printer described by `config`, exactly as batch mode runs it: the file
/// (or its start macro) homes the printer, and homing takes the time Klipper's batch mode gives
/// it. See [`estimate_assuming_homed`] for files that never home.
///
/// # Errors
/// A config the planner cannot use; an internal planner failure.
pub fn estimate(config: &Config, gcode: &[u8]) -> Result<Estimate, EstimateError> {
    estimate_with(config, gcode, false)
}

/// Like [`estimate`], with every axis taken as homed at X0 Y0 Z0 before the file starts.
///
/// # Errors
/// A config the planner cannot use; an internal planner failure.
pub fn estimate_assuming_homed(config: &Config, gcode: &[u8]) -> Result<Estimate, EstimateError> {
    estimate_with(config, gcode, true)
}

/// Plans `gcode` on the printer described by `config`.
///
/// # Errors
/// A config the planner cannot use; an internal planner failure.
fn estimate_with(
    config: &Config,
    gcode: &[u8],
    assume_homed: bool,
) -> Result<Estimate, EstimateError> {
    let mut estimator = Estimator::new(config, assume_homed)?;
    estimator.feed(gcode)?;
    estimator.finish()
}

/// An estimate made as the G-code comes, in pieces of any size (a file read a block at a
/// time): memory does not grow with the length of the file.
///
/// The planner still reads the input in klippy's [`BATCH_READ_SIZE`] chunks through
/// [`Printer::feed_batch_chunk`], as [`Printer::run_batch`] does (so the plan is the same
/// however the input is cut), and the committed moves are summarised after each chunk.
pub struct Estimator {
    printer: Printer,
    summary: Summary,
    /// The start of the next chunk (less than [`BATCH_READ_SIZE`] bytes).
    pending: Vec<u8>,
}

impl Estimator {
    /// A planner for the printer described by `config`; with `assume_homed`, every axis is
    /// taken as homed at X0 Y0 Z0 first (see [`estimate_assuming_homed`]).
    ///
    /// # Errors
    /// A config the planner cannot use.
    pub fn new(config: &Config, assume_homed: bool) -> Result<Self, EstimateError> {
        let mut printer = Printer::for_planning(config)?;
        printer.layer_marks = Some(Vec::new());
        if assume_homed {
            printer.assume_homed()?;
        }
        Ok(Self {
            printer,
            summary: Summary::default(),
            pending: Vec::with_capacity(BATCH_READ_SIZE),
        })
    }

    /// Plans the next piece of the G-code.
    ///
    /// # Errors
    /// An internal planner failure.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), EstimateError> {
        if !self.pending.is_empty() {
            let take = (BATCH_READ_SIZE - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() < BATCH_READ_SIZE {
                return Ok(());
            }
            let chunk = std::mem::take(&mut self.pending);
            let result = self.chunk(&chunk);
            self.pending = chunk;
            self.pending.clear();
            result?;
        }
        let mut chunks = data.chunks_exact(BATCH_READ_SIZE);
        for chunk in &mut chunks {
            self.chunk(chunk)?;
        }
        self.pending.extend_from_slice(chunks.remainder());
        Ok(())
    }

    fn chunk(&mut self, chunk: &[u8]) -> Result<(), EstimateError> {
        self.printer.feed_batch_chunk(chunk)?;
        self.summary.take(&mut self.printer);
        Ok(())
    }

    /// The end of the G-code: the last chunk, batch mode's end, and the estimate.
    ///
    /// # Errors
    /// An internal planner failure.
    pub fn finish(mut self) -> Result<Estimate, EstimateError> {
        if !self.pending.is_empty() {
            let chunk = std::mem::take(&mut self.pending);
            self.chunk(&chunk)?;
        }
        let printer = &mut self.printer;
        printer.finish_batch()?;
        self.summary.take(printer);
        let filament_area = printer
            .toolhead
            .extruders
            .first()
            .map_or(0.0, |e| e.filament_area);
        let lines = printer.lines_read();
        let mut est = self
            .summary
            .finish(filament_area, lines, &printer.responses);
        est.klipper_print_time_s = printer.end_print_time;
        est.unterminated_line = printer.unterminated_line.take();
        est.repeated_messages = printer
            .repeated_responses()
            .map(|r| (r.text.clone(), r.count))
            .collect();
        Ok(est)
    }
}

/// The running totals over committed moves, oldest first.
#[derive(Default)]
struct Summary {
    /// Start of the first move, s.
    start: Option<f64>,
    /// End of the newest move, s.
    end: f64,
    filament_mm: f64,
    max_speed: f64,
    moves: usize,
    /// Layers by the Z of the extruding moves.
    by_z: ZLayers,
    /// Layers by the file's layer-change comments.
    by_comment: CommentLayers,
}

/// Two heights closer than this are the same, mm.
const SAME_Z_MM: f64 = 1e-6;

impl Summary {
    /// Consumes the moves the planner has recorded so far (keeping the buffer for reuse), and
    /// the layer-change comments read so far.
    fn take(&mut self, printer: &mut Printer) {
        if let Some(marks) = printer.layer_marks.as_mut() {
            self.by_comment.pending.extend(marks.drain(..));
        }
        if let Some(rec) = printer.toolhead.record.as_mut() {
            for m in rec.iter() {
                self.add(m);
            }
            rec.clear();
        }
    }

    fn add(&mut self, m: &PlannedMove) {
        self.start.get_or_insert(m.print_time);
        self.end = m.print_time + m.t[0] + m.t[1] + m.t[2];
        self.moves += 1;
        let de = m.end_pos[3] - m.start_pos[3];
        self.filament_mm += de;
        // Whether the head moves (the squared distance is as good as the distance for that).
        let moves_xyz = (0..3)
            .map(|i| (m.end_pos[i] - m.start_pos[i]).powi(2))
            .sum::<f64>()
            > 0.0;
        if moves_xyz {
            self.max_speed = self.max_speed.max(m.v[1]);
        }
        let extruding = de > 0.0 && moves_xyz;
        if self.by_comment.seen() {
            // Comment layers win over heights (see `finish`): heights are no longer needed.
            self.by_comment.add(m, extruding);
        } else if extruding {
            self.by_z.add(m);
        }
    }

    fn finish(self, filament_area: f64, lines: u32, responses: &[Response]) -> Estimate {
        let end = if self.moves == 0 { 0.0 } else { self.end };
        let (layers, layer_rule) = if self.by_comment.seen() {
            (self.by_comment.finish(end), LayerRule::Comments)
        } else {
            (self.by_z.finish(end), LayerRule::ZHeights)
        };
        Estimate {
            print_time_s: end - self.start.unwrap_or(0.0),
            klipper_print_time_s: 0.0,
            layers,
            layer_rule,
            filament_mm: self.filament_mm,
            filament_mm3: self.filament_mm * filament_area,
            max_speed_mm_s: self.max_speed,
            moves: self.moves,
            lines,
            messages: responses.iter().map(|r| (r.line, r.text.clone())).collect(),
            repeated_messages: Vec::new(),
            unterminated_line: None,
        }
    }
}

/// Ends the last of `layers` at `time` (its start was `start`).
fn close_layer(layers: &mut [LayerTime], start: f64, time: f64) {
    if let Some(last) = layers.last_mut() {
        last.time_s = time - start;
    }
}

/// Layers from layer-change comments: each comment begins a layer at the first move after it.
#[derive(Default)]
struct CommentLayers {
    /// Lines of the comments no move has come after yet, in order.
    pending: VecDeque<u32>,
    layers: Vec<LayerTime>,
    /// When the current layer began, s.
    start: f64,
    /// The current layer has extruded.
    extruded: bool,
}

impl CommentLayers {
    fn seen(&self) -> bool {
        !self.layers.is_empty() || !self.pending.is_empty()
    }

    fn begin(&mut self, line: u32, time: f64, z: f64) {
        close_layer(&mut self.layers, self.start, time);
        self.start = time;
        self.extruded = false;
        self.layers.push(LayerTime {
            layer: self.layers.len(),
            z_mm: z,
            time_s: 0.0,
            first_line: line,
        });
    }

    fn add(&mut self, m: &PlannedMove, extruding: bool) {
        while let Some(&line) = self.pending.front()
            && line < m.line
        {
            self.pending.pop_front();
            self.begin(line, m.print_time, m.start_pos[2]);
        }
        if extruding && let Some(layer) = self.layers.last_mut() {
            let top = m.start_pos[2].max(m.end_pos[2]);
            layer.z_mm = if self.extruded {
                layer.z_mm.max(top)
            } else {
                top
            };
            self.extruded = true;
        }
    }

    fn finish(mut self, end: f64) -> Vec<LayerTime> {
        // Comments after the last move begin layers without moves.
        let z = self.layers.last().map_or(0.0, |l| l.z_mm);
        while let Some(line) = self.pending.pop_front() {
            self.begin(line, end, z);
        }
        close_layer(&mut self.layers, self.start, end);
        self.layers
    }
}

/// Layers from the Z of the extruding moves (see the module docs).
#[derive(Default)]
struct ZLayers {
    layers: Vec<LayerTime>,
    /// When the current layer began, s.
    start: f64,
    /// The current layer rises as it extrudes: how far its path has turned.
    spiral: Option<Spiral>,
}

/// A layer whose extrusion rises: the path's heading and how far it has turned, radians.
#[derive(Clone, Copy)]
struct Spiral {
    heading: Option<f64>,
    turned: f64,
}

impl ZLayers {
    fn begin(&mut self, m: &PlannedMove, z: f64) {
        close_layer(&mut self.layers, self.start, m.print_time);
        self.start = m.print_time;
        self.layers.push(LayerTime {
            layer: self.layers.len(),
            z_mm: z,
            time_s: 0.0,
            first_line: m.line,
        });
    }

    /// An extruding move.
    fn add(&mut self, m: &PlannedMove) {
        let (z0, z1) = (m.start_pos[2], m.end_pos[2]);
        // The path's heading, needed only while a layer rises (atan2 is not cheap).
        let heading = || {
            let (dx, dy) = (m.end_pos[0] - m.start_pos[0], m.end_pos[1] - m.start_pos[1]);
            (dx != 0.0 || dy != 0.0).then(|| dy.atan2(dx))
        };
        let rising = z1 != z0;
        let top = self.layers.last().map_or(f64::NAN, |l| l.z_mm);
        match &mut self.spiral {
            // Rising on, or level at the top the spiral has reached: the same spiral.
            Some(sp) if rising || (z0 - top).abs() <= SAME_Z_MM => {
                let heading = heading();
                if let (Some(h), Some(prev)) = (heading, sp.heading) {
                    let mut turn = h - prev;
                    if turn > std::f64::consts::PI {
                        turn -= std::f64::consts::TAU;
                    } else if turn <= -std::f64::consts::PI {
                        turn += std::f64::consts::TAU;
                    }
                    sp.turned += turn;
                }
                if heading.is_some() {
                    sp.heading = heading;
                }
                if sp.turned.abs() >= std::f64::consts::TAU {
                    let next = Spiral {
                        heading: sp.heading,
                        turned: sp.turned - std::f64::consts::TAU.copysign(sp.turned),
                    };
                    self.begin(m, z0.max(z1));
                    self.spiral = Some(next);
                } else if let Some(last) = self.layers.last_mut() {
                    last.z_mm = last.z_mm.max(z0.max(z1));
                }
            }
            _ if rising => {
                self.begin(m, z0.max(z1));
                self.spiral = Some(Spiral {
                    heading: heading(),
                    turned: 0.0,
                });
            }
            spiral => {
                if spiral.is_some() || self.layers.is_empty() || (z0 - top).abs() > SAME_Z_MM {
                    *spiral = None;
                    self.begin(m, z0);
                }
            }
        }
    }

    fn finish(mut self, end: f64) -> Vec<LayerTime> {
        close_layer(&mut self.layers, self.start, end);
        self.layers
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::printer::RESPONSES_KEPT_PER_TEXT;

    const CFG: &str = "[printer]\nkinematics: cartesian\nmax_velocity: 300\nmax_accel: 3000\n\
        [stepper_x]\nstep_pin: PA0\ndir_pin: PA1\nendstop_pin: PA2\nmicrosteps: 16\nrotation_distance: 40\nposition_endstop: 0\nposition_max: 200\n\
        [stepper_y]\nstep_pin: PA3\ndir_pin: PA4\nendstop_pin: PA5\nmicrosteps: 16\nrotation_distance: 40\nposition_endstop: 0\nposition_max: 200\n\
        [stepper_z]\nstep_pin: PA6\ndir_pin: PA7\nendstop_pin: PB0\nmicrosteps: 16\nrotation_distance: 8\nposition_endstop: 0\nposition_max: 200\n\
        [extruder]\nstep_pin: PB1\ndir_pin: PB2\nmicrosteps: 16\nrotation_distance: 33.5\nnozzle_diameter: 0.4\nfilament_diameter: 1.75\n\
        [mcu]\nserial: /dev/null\n";

    #[test]
    fn a_single_move_takes_its_trapezoid_time() {
        let config = Config::parse(CFG, "printer.cfg").expect("config");
        let est = estimate(
            &config,
            b"SET_KINEMATIC_POSITION X=0 Y=0 Z=0\nG1 X100 F6000\n",
        )
        .expect("estimate");
        // 0→100 mm/s at 3000 mm/s²: 1/30 s each way, 100 − 10/3 mm at 100 mm/s.
        let expect = 2.0 / 30.0 + (100.0 - 10.0 / 3.0) / 100.0;
        assert!(
            (est.print_time_s - expect).abs() < 1e-9,
            "{}",
            est.print_time_s
        );
        assert!((est.max_speed_mm_s - 100.0).abs() < 1e-9);
        assert_eq!(est.moves, 1);
    }

    #[test]
    fn layers_and_filament_are_counted() {
        let config = Config::parse(CFG, "printer.cfg").expect("config");
        let gcode = b"SET_KINEMATIC_POSITION X=0 Y=0 Z=0\nM83\nG1 Z0.2 F600\nG1 X10 E1 F1200\n\
            G1 E-0.5 F1800\nG1 Z0.4\nG1 E0.5\nG1 X0 E1.0 F1200\n";
        let est = estimate(&config, gcode).expect("estimate");
        assert_eq!(est.layers.len(), 2);
        assert!((est.layers[0].z_mm - 0.2).abs() < 1e-9);
        assert!((est.filament_mm - 2.0).abs() < 1e-9, "{}", est.filament_mm);
        let area = std::f64::consts::PI * 0.875 * 0.875;
        assert!((est.filament_mm3 - 2.0 * area).abs() < 1e-9);
        let sum: f64 = est.layers.iter().map(|l| l.time_s).sum();
        assert!(sum <= est.print_time_s + 1e-9);
    }

    #[test]
    fn repeated_messages_are_counted_not_all_kept() {
        let config = Config::parse(CFG, "printer.cfg").expect("config");
        let mut gcode = b"SET_KINEMATIC_POSITION X=0 Y=0 Z=0\n".to_vec();
        for _ in 0..250 {
            gcode.extend_from_slice(b"FOO\nG1 X500\n");
        }
        gcode.extend_from_slice(b"BAR\n");
        let est = estimate(&config, &gcode).expect("estimate");
        let kept = RESPONSES_KEPT_PER_TEXT as usize;
        let foo = "// Unknown command:\"FOO\"";
        let count = |text: &str| est.messages.iter().filter(|(_, m)| m == text).count();
        assert_eq!(count(foo), kept);
        assert_eq!(count("// Unknown command:\"BAR\""), 1);
        // The kept ones are the first ones, with their lines.
        assert_eq!(est.messages[0], (2, foo.to_owned()));
        assert_eq!(
            est.repeated_messages.len(),
            2,
            "{:?}",
            est.repeated_messages
        );
        assert_eq!(est.repeated_messages[0], (foo.to_owned(), 250));
        assert!(
            est.repeated_messages[1]
                .0
                .starts_with("!! Move out of range")
        );
        assert_eq!(est.repeated_messages[1].1, 250);
    }

    #[test]
    fn an_estimate_does_not_depend_on_how_the_input_is_cut() {
        let config = Config::parse(CFG, "printer.cfg").expect("config");
        let mut gcode = b"SET_KINEMATIC_POSITION X=0 Y=0 Z=0\nM83\n".to_vec();
        for i in 0..2000 {
            let x = (i * 37 % 190) as f64 + 0.5;
            gcode.extend_from_slice(format!("G1 X{x:.3} Y{:.3} E0.1 F6000\n", x / 2.0).as_bytes());
        }
        gcode.extend_from_slice(b"G1 X5 Y5");
        let whole = estimate(&config, &gcode).expect("estimate");
        assert!(gcode.len() > 3 * BATCH_READ_SIZE);
        for piece in [1, 7, 4095, 4096, 4097, 10_000] {
            let mut est = Estimator::new(&config, false).expect("estimator");
            for part in gcode.chunks(piece) {
                est.feed(part).expect("feed");
            }
            let cut = est.finish().expect("estimate");
            assert_eq!(cut, whole, "pieces of {piece}");
        }
        // The last line has no line end: not run, as in Klipper, and named.
        assert_eq!(whole.lines, 2002);
        assert_eq!(whole.unterminated_line, Some((2003, "G1 X5 Y5".to_owned())));
    }

    #[test]
    fn out_of_range_moves_are_reported_not_fatal() {
        let config = Config::parse(CFG, "printer.cfg").expect("config");
        let est = estimate(
            &config,
            b"SET_KINEMATIC_POSITION X=0 Y=0 Z=0\nG1 X500\nG1 X10\n",
        )
        .expect("estimate");
        assert!(
            est.messages
                .iter()
                .any(|(line, m)| *line == 2 && m.starts_with("!! Move out of range")),
            "{:?}",
            est.messages
        );
        assert_eq!(est.moves, 1);
    }
}
