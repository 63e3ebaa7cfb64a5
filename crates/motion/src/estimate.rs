//! Print-time estimates from the real planner (`gantry estimate`).
//!
//! The G-code runs through the same [`Printer`] as `gantry batch` — same look-ahead, junction
//! speeds, flush behaviour and kinematic limits — with step generation switched off and the axes
//! taken as homed (slicer files usually home inside a start macro of the printer's). The
//! committed moves then give the print time, per-layer times, filament used and the highest
//! speed reached.

use crate::config::Config;
use crate::printer::{Printer, PrinterError, Response};
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

/// Plans `gcode` on the printer described by `config`.
///
/// # Errors
/// A config the planner cannot use; an internal planner failure.
pub fn estimate(config: &Config, gcode: &[u8]) -> Result<Estimate, EstimateError> {
    let mut printer = Printer::for_planning(config)?;
    printer.assume_homed()?;
    printer.run_batch(gcode)?;
    let moves = printer.toolhead.record.take().unwrap_or_default();
    let filament_area = printer
        .toolhead
        .extruders
        .first()
        .map_or(0.0, |e| e.filament_area);
    let lines = printer.lines_read();
    Ok(summarise(&moves, filament_area, lines, &printer.responses))
}

fn summarise(
    moves: &[PlannedMove],
    filament_area: f64,
    lines: u32,
    responses: &[Response],
) -> Estimate {
    let start = moves.first().map_or(0.0, |m| m.print_time);
    let end = moves
        .last()
        .map_or(0.0, |m| m.print_time + m.t[0] + m.t[1] + m.t[2]);
    let mut filament_mm = 0.0;
    let mut max_speed: f64 = 0.0;
    let mut layers: Vec<LayerTime> = Vec::new();
    let mut layer_start = 0.0;
    for m in moves {
        let de = m.end_pos[3] - m.start_pos[3];
        filament_mm += de;
        let dxyz = (0..3)
            .map(|i| (m.end_pos[i] - m.start_pos[i]).powi(2))
            .sum::<f64>()
            .sqrt();
        if dxyz > 0.0 {
            max_speed = max_speed.max(m.v[1]);
        }
        let extruding = de > 0.0 && dxyz > 0.0;
        if !extruding {
            continue;
        }
        let z = m.start_pos[2];
        let new_layer = layers.last().is_none_or(|l| (l.z_mm - z).abs() > 1e-6);
        if new_layer {
            if let Some(last) = layers.last_mut() {
                last.time_s = m.print_time - layer_start;
            }
            layer_start = m.print_time;
            layers.push(LayerTime {
                layer: layers.len(),
                z_mm: z,
                time_s: 0.0,
                first_line: m.line,
            });
        }
    }
    if let Some(last) = layers.last_mut() {
        last.time_s = end - layer_start;
    }
    Estimate {
        print_time_s: end - start,
        layers,
        filament_mm,
        filament_mm3: filament_mm * filament_area,
        max_speed_mm_s: max_speed,
        moves: moves.len(),
        lines,
        messages: responses.iter().map(|r| (r.line, r.text.clone())).collect(),
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
