//! Print-time estimates from the real planner (`gantry estimate`).
//!
//! The G-code runs through the same [`Printer`] as `gantry batch` — same look-ahead, junction
//! speeds, flush behaviour and kinematic limits — with step generation switched off and the axes
//! taken as homed (slicer files usually home inside a start macro of the printer's). The
//! committed moves then give the print time, per-layer times, filament used and the highest
//! speed reached.

use crate::config::Config;
use crate::printer::{BATCH_READ_SIZE, Printer, PrinterError, Response};
use crate::toolhead::{MoveError, PlannedMove};

/// One layer: the Z at which it extrudes and how long it takes.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct LayerTime {
    /// Layer number from 0.
    pub layer: usize,
    /// Z height, mm.
    pub z_mm: f64,
    /// Time from this layer's first extruding move to the next layer's, s.
    pub time_s: f64,
    /// G-code line of its first extruding move.
    pub first_line: u32,
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
    /// Errors and notices from the G-code (Klipper's messages), with their lines.
    pub messages: Vec<(u32, String)>,
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
/// The input goes through [`Printer::feed_batch_chunk`] in the same chunks as
/// [`Printer::run_batch`] (so the plan is the same), and the committed moves are summarised
/// after each chunk: memory does not grow with the length of the file.
///
/// # Errors
/// A config the planner cannot use; an internal planner failure.
fn estimate_with(
    config: &Config,
    gcode: &[u8],
    assume_homed: bool,
) -> Result<Estimate, EstimateError> {
    let mut printer = Printer::for_planning(config)?;
    if assume_homed {
        printer.assume_homed()?;
    }
    let mut summary = Summary::default();
    for chunk in gcode.chunks(BATCH_READ_SIZE) {
        printer.feed_batch_chunk(chunk)?;
        summary.take(&mut printer);
    }
    printer.finish_batch()?;
    summary.take(&mut printer);
    let filament_area = printer
        .toolhead
        .extruders
        .first()
        .map_or(0.0, |e| e.filament_area);
    let lines = printer.lines_read();
    let mut est = summary.finish(filament_area, lines, &printer.responses);
    est.klipper_print_time_s = printer.end_print_time;
    Ok(est)
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
    layers: Vec<LayerTime>,
    layer_start: f64,
    moves: usize,
}

impl Summary {
    /// Consumes the moves the planner has recorded so far (keeping the buffer for reuse).
    fn take(&mut self, printer: &mut Printer) {
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
        let dxyz = (0..3)
            .map(|i| (m.end_pos[i] - m.start_pos[i]).powi(2))
            .sum::<f64>()
            .sqrt();
        if dxyz > 0.0 {
            self.max_speed = self.max_speed.max(m.v[1]);
        }
        let extruding = de > 0.0 && dxyz > 0.0;
        if !extruding {
            return;
        }
        let z = m.start_pos[2];
        let new_layer = self.layers.last().is_none_or(|l| (l.z_mm - z).abs() > 1e-6);
        if new_layer {
            if let Some(last) = self.layers.last_mut() {
                last.time_s = m.print_time - self.layer_start;
            }
            self.layer_start = m.print_time;
            self.layers.push(LayerTime {
                layer: self.layers.len(),
                z_mm: z,
                time_s: 0.0,
                first_line: m.line,
            });
        }
    }

    fn finish(mut self, filament_area: f64, lines: u32, responses: &[Response]) -> Estimate {
        let end = if self.moves == 0 { 0.0 } else { self.end };
        if let Some(last) = self.layers.last_mut() {
            last.time_s = end - self.layer_start;
        }
        Estimate {
            print_time_s: end - self.start.unwrap_or(0.0),
            klipper_print_time_s: 0.0,
            layers: self.layers,
            filament_mm: self.filament_mm,
            filament_mm3: self.filament_mm * filament_area,
            max_speed_mm_s: self.max_speed,
            moves: self.moves,
            lines,
            messages: responses.iter().map(|r| (r.line, r.text.clone())).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
