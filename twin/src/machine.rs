//! The printer as a machine: its kinematics, build volume and steppers, read from printer.cfg
//! through motion's printer (the planner's own rails and kinematics). Pure: no Bevy.
//!
//! The twin draws three kinds of machine: a cartesian bed-slinger (the head moves in X and Z,
//! the bed in Y), a CoreXY gantry (the head moves in X and Y on a gantry, the gantry in Z) and a
//! linear delta (three carriages on towers, the effector on six arms). Each stepper's position
//! for a toolhead position is motion's inverse kinematics ([`Kinematics::position_from_coord`]);
//! the live feed goes the other way from step counts ([`Machine::toolhead_from_steppers`]).

use gantry_core::motion::config::{BuildVolume, Config};
use gantry_core::motion::itersolve::Kinematics;
use gantry_core::motion::printer::{KinematicsKind, Printer, trilateration};
use gantry_core::motion::toolhead::KinLimits;
use gantry_core::motion::trapq::Coord;

/// What kind of machine to draw.
#[derive(Clone, Debug, PartialEq)]
pub enum MachineKind {
    /// Cartesian: the bed moves in Y.
    BedSlinger,
    /// CoreXY: the head moves in X and Y on the gantry.
    CoreXY,
    /// Linear delta.
    Delta {
        /// Tower positions (X, Y), mm, A B C.
        towers_mm: [[f64; 2]; 3],
        /// Arm lengths, mm.
        arms_mm: [f64; 3],
        /// delta_radius, mm.
        radius_mm: f64,
    },
    /// No motion system the twin draws.
    Other,
}

/// One stepper of the toolhead.
#[derive(Clone, Debug)]
pub struct StepperInfo {
    /// Config section (`stepper_x`, `stepper_a`).
    pub name: String,
    /// How its position follows from the toolhead's.
    pub kinematics: Kinematics,
    /// mm per full step… per (micro)step.
    pub step_dist_mm: f64,
}

/// The machine.
#[derive(Clone, Debug)]
pub struct Machine {
    /// The kind.
    pub kind: MachineKind,
    /// Reachable volume (min, max) in mm.
    pub volume_min_mm: [f64; 3],
    /// See `volume_min_mm`.
    pub volume_max_mm: [f64; 3],
    /// The toolhead's steppers in kinematics order.
    pub steppers: Vec<StepperInfo>,
    /// max_velocity, mm/s, and max_accel, mm/s².
    pub limits: (f64, f64),
    /// Filament diameter of the first extruder, mm.
    pub filament_diameter_mm: f64,
}

impl Machine {
    /// The machine a printer.cfg describes.
    ///
    /// # Errors
    /// A config the planner cannot use, named in the message.
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let printer = Printer::for_planning(config)?;
        let steppers: Vec<StepperInfo> = printer
            .rails
            .iter()
            .filter_map(|r| r.steppers.first())
            .filter_map(|&i| printer.toolhead.steppers.get(i))
            .map(|s| StepperInfo {
                name: s.name.clone(),
                kinematics: s.solver.kinematics().clone(),
                step_dist_mm: s.solver.step_dist(),
            })
            .collect();
        let filament_diameter_mm = config
            .get_f64("extruder", "filament_diameter")
            .ok()
            .flatten()
            .unwrap_or(1.75);
        let (max_v, max_a) = (
            config
                .get_f64("printer", "max_velocity")
                .ok()
                .flatten()
                .unwrap_or(0.0),
            config
                .get_f64("printer", "max_accel")
                .ok()
                .flatten()
                .unwrap_or(0.0),
        );
        let (kind, min, max) = match printer.kinematics {
            KinematicsKind::Delta => {
                let KinLimits::Delta(d) = &printer.toolhead.kin_limits else {
                    anyhow::bail!("delta printer without delta limits");
                };
                let mut towers = [[0.0; 2]; 3];
                let mut arms = [0.0; 3];
                for (i, s) in steppers.iter().take(3).enumerate() {
                    if let Kinematics::Delta {
                        arm2,
                        tower_x,
                        tower_y,
                    } = s.kinematics
                    {
                        towers[i] = [tower_x, tower_y];
                        arms[i] = arm2.sqrt();
                    }
                }
                let r = d.max_xy2.sqrt();
                (
                    MachineKind::Delta {
                        towers_mm: towers,
                        arms_mm: arms,
                        radius_mm: d.radius,
                    },
                    [-r, -r, d.min_z],
                    [r, r, d.max_z],
                )
            }
            kind => {
                let v = BuildVolume::from_config(config)?;
                let k = match kind {
                    KinematicsKind::Cartesian => MachineKind::BedSlinger,
                    KinematicsKind::CoreXY => MachineKind::CoreXY,
                    _ => MachineKind::Other,
                };
                (k, v.min_mm, v.max_mm)
            }
        };
        Ok(Self {
            kind,
            volume_min_mm: min,
            volume_max_mm: max,
            steppers,
            limits: (max_v, max_a),
            filament_diameter_mm,
        })
    }

    /// Each stepper's position (mm along its rail) with the toolhead at `pos`: motion's inverse
    /// kinematics.
    pub fn stepper_positions(&self, pos: [f64; 3]) -> Vec<f64> {
        let c = Coord::new(pos[0], pos[1], pos[2]);
        self.steppers
            .iter()
            .map(|s| s.kinematics.position_from_coord(c))
            .collect()
    }

    /// The toolhead position from the steppers' positions (mm along each rail): forward
    /// kinematics (cartesian, CoreXY, delta by trilateration as Klipper does it).
    pub fn toolhead_from_steppers(&self, positions: &[f64]) -> Option<[f64; 3]> {
        match &self.kind {
            MachineKind::Delta { towers_mm, .. } => {
                let mut spheres = [[0.0; 3]; 3];
                let mut arm2 = [0.0; 3];
                for i in 0..3 {
                    let Kinematics::Delta { arm2: a2, .. } = self.steppers.get(i)?.kinematics
                    else {
                        return None;
                    };
                    spheres[i] = [towers_mm[i][0], towers_mm[i][1], *positions.get(i)?];
                    arm2[i] = a2;
                }
                Some(trilateration(&spheres, &arm2))
            }
            _ => {
                let mut out = [0.0; 3];
                let mut a_plus_b = None;
                for (s, &p) in self.steppers.iter().zip(positions) {
                    match s.kinematics {
                        Kinematics::Cartesian { axis } if axis < 3 => out[axis] = p,
                        Kinematics::CoreXY { plus: true } => {
                            a_plus_b = Some((p, a_plus_b.map_or(0.0, |(_, b)| b)));
                        }
                        Kinematics::CoreXY { plus: false } => {
                            a_plus_b = Some((a_plus_b.map_or(0.0, |(a, _)| a), p));
                        }
                        _ => {}
                    }
                }
                if let Some((a, b)) = a_plus_b {
                    out[0] = 0.5 * (a + b);
                    out[1] = 0.5 * (a - b);
                }
                Some(out)
            }
        }
    }

    /// A one-line description for the HUD.
    pub fn describe(&self) -> String {
        let size = |i: usize| self.volume_max_mm[i] - self.volume_min_mm[i];
        match &self.kind {
            MachineKind::BedSlinger => format!(
                "cartesian bed-slinger, {:.0} × {:.0} × {:.0} mm",
                size(0),
                size(1),
                size(2)
            ),
            MachineKind::CoreXY => format!(
                "CoreXY, {:.0} × {:.0} × {:.0} mm",
                size(0),
                size(1),
                size(2)
            ),
            MachineKind::Delta { radius_mm, .. } => format!(
                "linear delta, Ø{:.0} × {:.0} mm (delta radius {radius_mm:.1} mm)",
                size(0),
                size(2)
            ),
            MachineKind::Other => "printer".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEPPERS: &str = "microsteps: 16\nrotation_distance: 40\nendstop_pin: PA2\n";

    fn cfg(kinematics: &str, extra: &str) -> Config {
        let mut t = format!(
            "[mcu]\nserial: /dev/null\n[printer]\nkinematics: {kinematics}\nmax_velocity: 300\nmax_accel: 3000\n"
        );
        t.push_str(extra);
        Config::parse(&t, "printer.cfg").expect("config")
    }

    fn boxy(kinematics: &str) -> Config {
        let mut extra = String::new();
        for (i, a) in ["x", "y", "z"].iter().enumerate() {
            extra.push_str(&format!(
                "[stepper_{a}]\nstep_pin: PA{}\ndir_pin: PB{}\n{STEPPERS}position_endstop: 0\nposition_max: {}\n",
                i,
                i,
                [220, 200, 250][i]
            ));
        }
        cfg(kinematics, &extra)
    }

    #[test]
    fn cartesian_and_corexy_round_trip_through_the_steppers() {
        for (k, kind) in [
            ("cartesian", MachineKind::BedSlinger),
            ("corexy", MachineKind::CoreXY),
        ] {
            let m = Machine::from_config(&boxy(k)).expect("machine");
            assert_eq!(m.kind, kind);
            assert_eq!(m.volume_max_mm, [220.0, 200.0, 250.0]);
            let pos = [12.5, 40.25, 3.0];
            let steppers = m.stepper_positions(pos);
            if kind == MachineKind::CoreXY {
                assert_eq!(steppers[0], 52.75, "A = x + y");
                assert_eq!(steppers[1], -27.75, "B = x − y");
            }
            assert_eq!(m.toolhead_from_steppers(&steppers), Some(pos));
        }
    }

    #[test]
    fn delta_carriages_by_inverse_kinematics_and_back() {
        let mut extra = String::from("delta_radius: 174.75\n");
        for (i, t) in ["a", "b", "c"].iter().enumerate() {
            extra.push_str(&format!(
                "[stepper_{t}]\nstep_pin: PA{i}\ndir_pin: PB{i}\n{STEPPERS}position_endstop: 297.05\narm_length: 333.0\n"
            ));
        }
        let m = Machine::from_config(&cfg("delta", &extra)).expect("machine");
        let MachineKind::Delta {
            towers_mm, arms_mm, ..
        } = &m.kind
        else {
            panic!("not a delta: {:?}", m.kind);
        };
        assert_eq!(arms_mm, &[333.0; 3]);
        // Tower C at 90°: straight up the Y axis.
        assert!(towers_mm[2][0].abs() < 1e-9 && (towers_mm[2][1] - 174.75).abs() < 1e-9);
        let pos = [20.0, -35.0, 12.0];
        let carriages = m.stepper_positions(pos);
        for (i, h) in carriages.iter().enumerate() {
            let dx = towers_mm[i][0] - pos[0];
            let dy = towers_mm[i][1] - pos[1];
            // The arm spans from the carriage to the effector.
            let arm = (dx * dx + dy * dy + (h - pos[2]).powi(2)).sqrt();
            assert!((arm - 333.0).abs() < 1e-9);
        }
        let back = m.toolhead_from_steppers(&carriages).expect("forward");
        for i in 0..3 {
            assert!((back[i] - pos[i]).abs() < 1e-6, "{back:?}");
        }
        assert!(m.volume_max_mm[0] > 100.0 && m.volume_max_mm[2] > 250.0);
    }
}
