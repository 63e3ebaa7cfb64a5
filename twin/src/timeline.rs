//! Where the toolhead is at each moment of the print: the planner's committed moves, with their
//! trapezoids, as a timeline. Pure: no Bevy, no clock.
//!
//! The moves come from motion's planner ([`Printer::for_planning`], fed like `gantry estimate`
//! feeds it: klippy's 4096-byte batch reads, so look-ahead flushes where Klipper's do), each
//! with its print time, start and end, start and cruise speed, acceleration and its accel,
//! cruise and decel times. A position at time t is motion's own trapezoid arithmetic
//! ([`TrapMove::coord`] on the phase the time falls in, built as `TrapQ::append` builds it):
//! the twin never derives motion itself.
//!
//! A timeline is built as the planner goes ([`Planning`]), so playback can start before a long
//! file is planned to the end.

use gantry_core::motion::config::Config;
use gantry_core::motion::printer::{BATCH_READ_SIZE, Printer, PrinterError, Response};
use gantry_core::motion::toolhead::{MoveError, PlannedMove};
use gantry_core::motion::trapq::{Coord, TrapMove};

/// One committed move with its trapezoid.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TimedMove {
    /// When the move starts, s of print time.
    pub print_time: f64,
    /// Start (X, Y, Z), mm.
    pub start_mm: [f32; 3],
    /// End (X, Y, Z), mm.
    pub end_mm: [f32; 3],
    /// Speed at the start, mm/s.
    pub start_v: f32,
    /// Cruise speed, mm/s.
    pub cruise_v: f32,
    /// Speed at the end, mm/s.
    pub end_v: f32,
    /// Acceleration (and deceleration), mm/s².
    pub accel: f32,
    /// Accel, cruise and decel time, s.
    pub t: [f32; 3],
    /// Filament pushed, mm (negative: retraction).
    pub e_mm: f32,
    /// The G-code line that made it (0: none, such as a macro's own moves).
    pub line: u32,
}

impl TimedMove {
    /// From the planner's record.
    #[allow(clippy::cast_possible_truncation)]
    pub fn from_planned(m: &PlannedMove) -> Self {
        Self {
            print_time: m.print_time,
            start_mm: [
                m.start_pos[0] as f32,
                m.start_pos[1] as f32,
                m.start_pos[2] as f32,
            ],
            end_mm: [
                m.end_pos[0] as f32,
                m.end_pos[1] as f32,
                m.end_pos[2] as f32,
            ],
            start_v: m.v[0] as f32,
            cruise_v: m.v[1] as f32,
            end_v: m.v[2] as f32,
            accel: m.accel as f32,
            t: [m.t[0] as f32, m.t[1] as f32, m.t[2] as f32],
            e_mm: (m.end_pos[3] - m.start_pos[3]) as f32,
            line: m.line,
        }
    }

    /// Duration, s.
    pub fn duration(&self) -> f64 {
        f64::from(self.t[0]) + f64::from(self.t[1]) + f64::from(self.t[2])
    }

    /// When it ends, s of print time.
    pub fn end_time(&self) -> f64 {
        self.print_time + self.duration()
    }

    /// Length in XYZ, mm (0 for an extrude-only move).
    pub fn length_mm(&self) -> f64 {
        let d = self.delta();
        (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt()
    }

    fn delta(&self) -> [f64; 3] {
        [
            f64::from(self.end_mm[0]) - f64::from(self.start_mm[0]),
            f64::from(self.end_mm[1]) - f64::from(self.start_mm[1]),
            f64::from(self.end_mm[2]) - f64::from(self.start_mm[2]),
        ]
    }

    /// Whether the toolhead moves in XYZ (extrude-only moves leave it standing).
    pub fn is_kinematic(&self) -> bool {
        self.start_mm != self.end_mm
    }

    /// The trapq segments of the move as `TrapQ::append` makes them: (phase, segment).
    pub fn trap_moves(&self) -> impl Iterator<Item = (Phase, TrapMove)> {
        let d = self.delta();
        let len = self.length_mm();
        let axes_r = if len > 0.0 {
            Coord::new(d[0] / len, d[1] / len, d[2] / len)
        } else {
            Coord::default()
        };
        let s = self.start_mm;
        let mut start_pos = Coord::new(f64::from(s[0]), f64::from(s[1]), f64::from(s[2]));
        let mut print_time = self.print_time;
        let accel = f64::from(self.accel);
        let phases = [
            (
                Phase::Accelerate,
                self.t[0],
                f64::from(self.start_v),
                0.5 * accel,
            ),
            (Phase::Cruise, self.t[1], f64::from(self.cruise_v), 0.0),
            (
                Phase::Decelerate,
                self.t[2],
                f64::from(self.cruise_v),
                -0.5 * accel,
            ),
        ];
        let mut out = Vec::with_capacity(3);
        for (phase, t, start_v, half_accel) in phases {
            if t == 0.0 {
                continue;
            }
            let m = TrapMove {
                print_time,
                move_t: f64::from(t),
                start_v,
                half_accel,
                start_pos,
                axes_r,
            };
            out.push((phase, m));
            print_time += f64::from(t);
            start_pos = m.coord(f64::from(t));
        }
        out.into_iter()
    }
}

/// What the toolhead is doing at a moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Before the first move, after the last, or between moves (dwell, waiting).
    Idle,
    /// Speeding up.
    Accelerate,
    /// At constant speed.
    Cruise,
    /// Slowing down.
    Decelerate,
    /// Only the extruder moves (retraction, priming).
    ExtrudeOnly,
    /// Moving, as the live feed sees it (no plan to say how).
    Moving,
}

impl Phase {
    /// A word for the HUD.
    pub fn label(self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Accelerate => "accelerating",
            Phase::Cruise => "cruising",
            Phase::Decelerate => "decelerating",
            Phase::ExtrudeOnly => "extruder only",
            Phase::Moving => "moving",
        }
    }
}

/// The toolhead at a moment.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// Print time, s.
    pub time: f64,
    /// Position (X, Y, Z), mm.
    pub pos_mm: [f64; 3],
    /// Speed along the path, mm/s.
    pub speed_mm_s: f64,
    /// Acceleration along the path, mm/s² (negative while slowing down).
    pub accel_mm_s2: f64,
    /// What it is doing.
    pub phase: Phase,
    /// The move it is in (or the last one before, when idle).
    pub move_index: Option<usize>,
    /// That move's G-code line (0 when none).
    pub line: u32,
}

/// The committed moves in print-time order.
#[derive(Clone, Debug, Default)]
pub struct Timeline {
    moves: Vec<TimedMove>,
}

impl Timeline {
    /// A timeline of `moves` (in the order the planner committed them).
    pub fn new(moves: Vec<TimedMove>) -> Self {
        Self { moves }
    }

    /// Adds moves the planner committed since.
    pub fn extend(&mut self, moves: impl IntoIterator<Item = TimedMove>) {
        self.moves.extend(moves);
    }

    /// The moves.
    pub fn moves(&self) -> &[TimedMove] {
        &self.moves
    }

    /// Whether there is no move.
    pub fn is_empty(&self) -> bool {
        self.moves.is_empty()
    }

    /// When the first move starts, s (0 without moves).
    pub fn start_time(&self) -> f64 {
        self.moves.first().map_or(0.0, |m| m.print_time)
    }

    /// When the last move ends, s (0 without moves).
    pub fn end_time(&self) -> f64 {
        self.moves.last().map_or(0.0, TimedMove::end_time)
    }

    /// The index of the move running at `time`: the last one that starts at or before it.
    pub fn move_at(&self, time: f64) -> Option<usize> {
        self.moves
            .partition_point(|m| m.print_time <= time)
            .checked_sub(1)
    }

    /// Where the toolhead is and what it does at `time`.
    pub fn sample(&self, time: f64) -> Sample {
        let idle = |pos: [f32; 3], index: Option<usize>, line: u32| Sample {
            time,
            pos_mm: pos.map(f64::from),
            speed_mm_s: 0.0,
            accel_mm_s2: 0.0,
            phase: Phase::Idle,
            move_index: index,
            line,
        };
        let Some(i) = self.move_at(time) else {
            return match self.moves.first() {
                Some(m) => idle(m.start_mm, None, 0),
                None => idle([0.0; 3], None, 0),
            };
        };
        let m = &self.moves[i];
        if time >= m.end_time() {
            return idle(m.end_mm, Some(i), m.line);
        }
        if !m.is_kinematic() {
            let mut s = idle(m.start_mm, Some(i), m.line);
            s.phase = Phase::ExtrudeOnly;
            return s;
        }
        let mut last = None;
        for (phase, tm) in m.trap_moves() {
            last = Some((phase, tm));
            if time < tm.end_time() {
                break;
            }
        }
        let Some((phase, tm)) = last else {
            return idle(m.start_mm, Some(i), m.line);
        };
        let tau = (time - tm.print_time).clamp(0.0, tm.move_t);
        let c = tm.coord(tau);
        Sample {
            time,
            pos_mm: [c.x, c.y, c.z],
            speed_mm_s: tm.start_v + 2.0 * tm.half_accel * tau,
            accel_mm_s2: 2.0 * tm.half_accel,
            phase,
            move_index: Some(i),
            line: m.line,
        }
    }

    /// Speed over time from `time` for `horizon` seconds: the corners of the piecewise-linear
    /// speed curve (time, mm/s), exact, with zero speed where the toolhead stands.
    pub fn speed_profile(&self, time: f64, horizon: f64) -> Vec<(f64, f64)> {
        let end = time + horizon;
        let mut out = vec![(time, self.sample(time).speed_mm_s)];
        let first = self.move_at(time).unwrap_or(0);
        let mut last_end = time;
        for m in self.moves[first.min(self.moves.len())..].iter() {
            if m.print_time >= end {
                break;
            }
            if !m.is_kinematic() {
                continue;
            }
            if m.print_time > last_end + 1e-9 {
                out.push((last_end.max(time), 0.0));
                out.push((m.print_time, 0.0));
            }
            for (_, tm) in m.trap_moves() {
                for (t, v) in [
                    (tm.print_time, tm.start_v),
                    (tm.end_time(), tm.start_v + 2.0 * tm.half_accel * tm.move_t),
                ] {
                    if t > time && t < end {
                        out.push((t, v));
                    }
                }
            }
            last_end = m.end_time();
        }
        let tail = self.sample(end.min(self.end_time().max(time)));
        out.push((end.min(self.end_time().max(time)), tail.speed_mm_s));
        out.sort_by(|a, b| a.0.total_cmp(&b.0));
        out
    }

    /// The print time at which G-code `line` starts moving (its first move, or the first move
    /// of a later line); `None` past the last move.
    pub fn time_of_line(&self, line: u32) -> Option<f64> {
        self.moves
            .iter()
            .find(|m| m.line >= line)
            .map(|m| m.print_time)
    }

    /// Gives back the room kept for more moves (the planner is done).
    pub fn shrink_to_fit(&mut self) {
        self.moves.shrink_to_fit();
    }

    /// Bytes held.
    pub fn resident_bytes(&self) -> usize {
        self.moves.capacity() * std::mem::size_of::<TimedMove>()
    }
}

/// The planner running over a file, a piece at a time, handing over the moves it commits.
pub struct Planning {
    printer: Printer,
    pending: Vec<u8>,
}

impl Planning {
    /// A planner for the printer described by `config`, every axis taken as homed at X0 Y0 Z0
    /// (a file that homes homes again, with the time batch mode gives homing).
    ///
    /// # Errors
    /// A config the planner cannot use.
    pub fn new(config: &Config) -> Result<Self, PrinterError> {
        let mut printer = Printer::for_planning(config)?;
        printer
            .assume_homed()
            .map_err(|e| PrinterError::Config(e.to_string()))?;
        Ok(Self {
            printer,
            pending: Vec::with_capacity(BATCH_READ_SIZE),
        })
    }

    /// Plans the next piece of the G-code; the moves committed so far go to `out`.
    ///
    /// # Errors
    /// An internal planner failure.
    pub fn feed(&mut self, mut data: &[u8], out: &mut Vec<TimedMove>) -> Result<(), MoveError> {
        if !self.pending.is_empty() {
            let take = (BATCH_READ_SIZE - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() < BATCH_READ_SIZE {
                return Ok(());
            }
            let chunk = std::mem::take(&mut self.pending);
            let result = self.printer.feed_batch_chunk(&chunk);
            self.pending = chunk;
            self.pending.clear();
            result?;
            self.drain(out);
        }
        let mut chunks = data.chunks_exact(BATCH_READ_SIZE);
        for chunk in &mut chunks {
            self.printer.feed_batch_chunk(chunk)?;
            self.drain(out);
        }
        self.pending.extend_from_slice(chunks.remainder());
        Ok(())
    }

    /// The end of the file: the last moves go to `out`.
    ///
    /// # Errors
    /// An internal planner failure.
    pub fn finish(&mut self, out: &mut Vec<TimedMove>) -> Result<(), MoveError> {
        if !self.pending.is_empty() {
            let chunk = std::mem::take(&mut self.pending);
            self.printer.feed_batch_chunk(&chunk)?;
        }
        self.printer.finish_batch()?;
        self.drain(out);
        Ok(())
    }

    /// Errors and notices the G-code caused since the last call (Klipper's messages); the
    /// printer forgets them (a long file's messages would otherwise pile up there).
    pub fn new_responses(&mut self) -> Vec<Response> {
        std::mem::take(&mut self.printer.responses)
    }

    /// The printer being planned (kinematics, rails).
    pub fn printer(&self) -> &Printer {
        &self.printer
    }

    fn drain(&mut self, out: &mut Vec<TimedMove>) {
        if let Some(rec) = self.printer.toolhead.record.as_mut() {
            out.extend(rec.iter().map(TimedMove::from_planned));
            rec.clear();
        }
    }
}

/// Plans a whole file (tests, small files).
///
/// # Errors
/// A config the planner cannot use; an internal planner failure.
pub fn plan(config: &Config, gcode: &[u8]) -> anyhow::Result<Timeline> {
    let mut planning = Planning::new(config)?;
    let mut moves = Vec::new();
    planning.feed(gcode, &mut moves)?;
    planning.finish(&mut moves)?;
    Ok(Timeline::new(moves))
}

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_core::motion::trapq::TrapQ;

    const CFG: &str = "[printer]\nkinematics: cartesian\nmax_velocity: 300\nmax_accel: 3000\n\
        square_corner_velocity: 5\n\
        [stepper_x]\nstep_pin: PA0\ndir_pin: PA1\nendstop_pin: PA2\nmicrosteps: 16\nrotation_distance: 40\nposition_endstop: 0\nposition_max: 200\n\
        [stepper_y]\nstep_pin: PA3\ndir_pin: PA4\nendstop_pin: PA5\nmicrosteps: 16\nrotation_distance: 40\nposition_endstop: 0\nposition_max: 200\n\
        [stepper_z]\nstep_pin: PA6\ndir_pin: PA7\nendstop_pin: PB0\nmicrosteps: 16\nrotation_distance: 8\nposition_endstop: 0\nposition_max: 200\n\
        [extruder]\nstep_pin: PB1\ndir_pin: PB2\nmicrosteps: 16\nrotation_distance: 33.5\nnozzle_diameter: 0.4\nfilament_diameter: 1.75\n\
        [mcu]\nserial: /dev/null\n";

    fn timeline(gcode: &str) -> Timeline {
        let config = Config::parse(CFG, "printer.cfg").expect("config");
        plan(&config, gcode.as_bytes()).expect("plan")
    }

    #[test]
    fn a_single_move_accelerates_cruises_and_decelerates() {
        // 0 → 100 mm/s at 3000 mm/s²: 1/30 s and 5/3 mm each way, 96.67 mm at 100 mm/s.
        let t = timeline("G1 X100 F6000\n");
        assert_eq!(t.moves().len(), 1);
        let m = t.moves()[0];
        let t0 = m.print_time;
        let ta = 1.0 / 30.0;
        let s = t.sample(t0 + ta / 2.0);
        assert_eq!(s.phase, Phase::Accelerate);
        assert!(
            (s.pos_mm[0] - 0.5 * 3000.0 * (ta / 2.0).powi(2)).abs() < 1e-4,
            "{s:?}"
        );
        assert!((s.speed_mm_s - 50.0).abs() < 1e-3);
        assert!((s.accel_mm_s2 - 3000.0).abs() < 1e-3);
        let s = t.sample(t0 + ta + 0.5);
        assert_eq!(s.phase, Phase::Cruise);
        assert!((s.pos_mm[0] - (5.0 / 3.0 + 50.0)).abs() < 1e-3, "{s:?}");
        assert!((s.speed_mm_s - 100.0).abs() < 1e-3);
        let end = m.end_time();
        let s = t.sample(end - ta / 2.0);
        assert_eq!(s.phase, Phase::Decelerate);
        assert!((s.pos_mm[0] - (100.0 - 0.5 * 3000.0 * (ta / 2.0).powi(2))).abs() < 1e-3);
        assert!((s.accel_mm_s2 + 3000.0).abs() < 1e-3);
        let s = t.sample(end + 1.0);
        assert_eq!(s.phase, Phase::Idle);
        assert_eq!(s.pos_mm, [100.0, 0.0, 0.0]);
        let s = t.sample(t0 - 1.0);
        assert_eq!(s.phase, Phase::Idle);
        assert_eq!(s.pos_mm, [0.0, 0.0, 0.0]);
    }

    #[test]
    fn positions_equal_motions_trapq_at_every_time() {
        // The same moves appended to motion's own TrapQ give the same positions.
        let gcode = "G1 X10 Y5 F6000\nG1 X30 Y5\nG1 X30 Y40 F12000\nG1 X5 Y5 Z1 F3000\nM83\n\
            G1 E-1 F2400\nG1 X50 Y50 F9000\nG4 P500\nG1 X60 Y40\n";
        let t = timeline(gcode);
        let mut q = TrapQ::new();
        for m in t.moves() {
            if !m.is_kinematic() {
                continue;
            }
            let d = [
                f64::from(m.end_mm[0] - m.start_mm[0]),
                f64::from(m.end_mm[1] - m.start_mm[1]),
                f64::from(m.end_mm[2] - m.start_mm[2]),
            ];
            let len = (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt();
            q.append(
                m.print_time,
                f64::from(m.t[0]),
                f64::from(m.t[1]),
                f64::from(m.t[2]),
                Coord::new(
                    f64::from(m.start_mm[0]),
                    f64::from(m.start_mm[1]),
                    f64::from(m.start_mm[2]),
                ),
                Coord::new(d[0] / len, d[1] / len, d[2] / len),
                f64::from(m.start_v),
                f64::from(m.cruise_v),
                f64::from(m.accel),
            );
        }
        q.check_sentinels();
        let (start, end) = (t.start_time(), t.end_time());
        let mut k = 1;
        for i in 0..=2000 {
            let time = start + (end - start) * f64::from(i) / 2000.0;
            while k + 1 < q.len() && q.get(k).end_time() <= time {
                k += 1;
            }
            let tm = q.get(k);
            if time < tm.print_time {
                continue; // in a gap the trapq fills with a null move
            }
            let c = tm.coord(time - tm.print_time);
            let s = t.sample(time);
            for (a, b) in [c.x, c.y, c.z].iter().zip(s.pos_mm) {
                assert!(
                    (a - b).abs() < 1e-6,
                    "t={time}: trapq {c:?}, timeline {s:?}"
                );
            }
        }
    }

    #[test]
    fn the_planner_limits_short_moves_and_corners() {
        // Two 2 mm moves at a right angle: too short to reach 200 mm/s, and the corner slows
        // to the junction speed of square_corner_velocity 5 mm/s.
        let t = timeline("G1 X2 F12000\nG1 X2 Y2\n");
        let m = t.moves();
        assert_eq!(m.len(), 2);
        assert!(m[0].cruise_v < 200.0);
        assert!((m[0].end_v - m[1].start_v).abs() < 1e-6);
        assert!(m[0].end_v > 0.0 && m[0].end_v <= 5.0 + 1e-3, "{:?}", m[0]);
        let corner = t.sample(m[0].end_time());
        assert!((corner.pos_mm[0] - 2.0).abs() < 1e-4);
    }

    #[test]
    fn extrude_only_moves_leave_the_toolhead_standing() {
        let t = timeline("G1 X10 F6000\nM83\nG1 E-2 F1800\n");
        let m = t.moves()[1];
        assert!(!m.is_kinematic());
        let s = t.sample(m.print_time + m.duration() / 2.0);
        assert_eq!(s.phase, Phase::ExtrudeOnly);
        assert_eq!(s.pos_mm, [10.0, 0.0, 0.0]);
        assert_eq!(s.line, 3);
    }

    #[test]
    fn speed_profile_has_the_trapezoid_corners() {
        let t = timeline("G1 X100 F6000\nG4 P1000\nG1 X0\n");
        let start = t.start_time();
        let p = t.speed_profile(start, t.end_time() - start);
        let max = p.iter().map(|x| x.1).fold(0.0, f64::max);
        assert!((max - 100.0).abs() < 1e-3);
        // Standing still during the dwell.
        let m0 = t.moves()[0];
        let m1 = t.moves()[1];
        assert!(
            m1.print_time - m0.end_time() > 0.9,
            "the dwell is in the plan"
        );
        let standing = p
            .iter()
            .filter(|&&(time, v)| {
                time >= m0.end_time() - 1e-9 && time <= m1.print_time + 1e-9 && v == 0.0
            })
            .count();
        assert!(
            standing >= 2,
            "zero speed from one move's end to the next's start: {p:?}"
        );
        // Times are ordered.
        assert!(p.windows(2).all(|w| w[0].0 <= w[1].0));
    }

    #[test]
    fn lines_map_to_times() {
        let t = timeline("G1 X10 F6000\nG1 X20\n\nG1 X30\n");
        let l4 = t.time_of_line(4).expect("line 4 moves");
        assert_eq!(t.sample(l4 + 1e-6).line, 4);
        assert_eq!(
            t.time_of_line(3),
            Some(l4),
            "an empty line runs at the next move"
        );
        assert_eq!(t.time_of_line(99), None);
    }

    #[test]
    fn planning_in_pieces_gives_the_same_moves() {
        let mut g = String::from("M83\n");
        for i in 0..3000 {
            g.push_str(&format!(
                "G1 X{:.2} Y{:.2} E0.1 F6000\n",
                (i * 37 % 190) as f64,
                (i * 11 % 170) as f64
            ));
        }
        let config = Config::parse(CFG, "printer.cfg").expect("config");
        let whole = plan(&config, g.as_bytes()).expect("plan");
        let mut p = Planning::new(&config).expect("planning");
        let mut moves = Vec::new();
        for piece in g.as_bytes().chunks(777) {
            p.feed(piece, &mut moves).expect("feed");
        }
        p.finish(&mut moves).expect("finish");
        assert_eq!(moves, whole.moves());
    }
}
