//! Step time generation (Klipper's itersolve): when does each stepper cross its next half step?
//!
//! Every stepper has a position function of trapq time — its own linear coordinate from the
//! toolhead's Cartesian position (cartesian, corexy, delta), optionally through an input shaper,
//! or the extruder's smoothed filament position. A step is due when that coordinate crosses the
//! half-step point ahead of the last commanded step in the current direction. Roots are found by
//! the secant method inside a bracket, falling back to bisection and, before a bracket exists, to
//! an exponential search from a 100 µs window — the same search Klipper uses, so that steps near
//! direction reversals come out the same. Converged at 1 nm or a 1 ns bracket.
//!
//! Times are print times in seconds; the generated steps go straight into the stepper's
//! [`StepCompress`].

use crate::extruder::ExtruderKin;
use crate::shaper::AxisShapers;
use crate::stepcompress::{StepCompress, StepCompressError};
use crate::trapq::{Coord, TrapMove, TrapQ};

pub use crate::shaper::ActiveAxes;

/// Whether a trapq segment moves any of the `axes`.
#[inline]
pub fn touches(axes: ActiveAxes, m: &TrapMove) -> bool {
    (axes.x && m.axes_r.x != 0.0) || (axes.y && m.axes_r.y != 0.0) || (axes.z && m.axes_r.z != 0.0)
}

/// How a stepper's coordinate follows from the toolhead's position.
#[derive(Clone, Debug)]
pub enum Kinematics {
    /// Cartesian rail on one axis (0 = x, 1 = y, 2 = z).
    Cartesian {
        /// The axis.
        axis: usize,
    },
    /// CoreXY motor: A = x + y (`plus`), B = x − y.
    CoreXY {
        /// Motor A (true) or B (false).
        plus: bool,
    },
    /// Linear delta tower: carriage height = z + √(arm² − (tx − x)² − (ty − y)²).
    Delta {
        /// Arm length squared, mm².
        arm2: f64,
        /// Tower X, mm.
        tower_x: f64,
        /// Tower Y, mm.
        tower_y: f64,
    },
    /// The extruder (its own trapq, x = filament position), with pressure advance.
    Extruder(ExtruderKin),
}

impl Kinematics {
    /// The axes whose motion moves this stepper.
    pub fn active_axes(&self) -> ActiveAxes {
        match self {
            Self::Cartesian { axis: 0 } => ActiveAxes::X,
            Self::Cartesian { axis: 1 } => ActiveAxes::Y,
            Self::Cartesian { .. } => ActiveAxes::Z,
            Self::CoreXY { .. } => ActiveAxes::XY,
            Self::Delta { .. } => ActiveAxes::XYZ,
            Self::Extruder(_) => ActiveAxes::X,
        }
    }

    /// The stepper coordinate (mm) with the toolhead at `c`.
    #[inline]
    pub fn position_from_coord(&self, c: Coord) -> f64 {
        match self {
            Self::Cartesian { axis } => c.axis(*axis),
            Self::CoreXY { plus: true } => c.x + c.y,
            Self::CoreXY { plus: false } => c.x - c.y,
            Self::Delta {
                arm2,
                tower_x,
                tower_y,
            } => {
                let dx = tower_x - c.x;
                let dy = tower_y - c.y;
                (arm2 - dx * dx - dy * dy).sqrt() + c.z
            }
            Self::Extruder(_) => c.x,
        }
    }
}

/// One stepper's solver state: its kinematics, optional input shaper and step bookkeeping.
#[derive(Clone, Debug)]
pub struct StepperSolver {
    kin: Kinematics,
    shaper: Option<AxisShapers>,
    step_dist: f64,
    commanded_pos: f64,
    last_flush_time: f64,
    last_move_time: f64,
    active: ActiveAxes,
    pre_active: f64,
    post_active: f64,
}

/// Klipper's initial exponential-search window, seconds.
const SEEK_TIME_RESET: f64 = 0.000_100;

impl StepperSolver {
    /// A solver for `kin` with `step_dist` mm per step, at coordinate 0.
    pub fn new(kin: Kinematics, step_dist: f64) -> Self {
        let active = kin.active_axes();
        let mut s = Self {
            kin,
            shaper: None,
            step_dist,
            commanded_pos: 0.0,
            last_flush_time: 0.0,
            last_move_time: 0.0,
            active,
            pre_active: 0.0,
            post_active: 0.0,
        };
        s.update_windows();
        s
    }

    /// The kinematics.
    pub fn kinematics(&self) -> &Kinematics {
        &self.kin
    }

    /// The kinematics, mutable (pressure advance changes).
    pub fn kinematics_mut(&mut self) -> &mut Kinematics {
        &mut self.kin
    }

    /// Installs (or removes) an input shaper in front of the kinematics.
    pub fn set_shaper(&mut self, shaper: Option<AxisShapers>) {
        self.shaper = shaper;
        self.update_windows();
    }

    /// Recomputes the step-generation windows (after a shaper or pressure-advance change).
    pub fn update_windows(&mut self) {
        let (mut pre, mut post) = (0.0_f64, 0.0_f64);
        if let Kinematics::Extruder(e) = &self.kin {
            pre = e.pre_active();
            post = e.post_active();
        }
        if let Some(s) = &self.shaper {
            pre = pre.max(s.pre_active(self.active));
            post = post.max(s.post_active(self.active));
        }
        self.pre_active = pre;
        self.post_active = post;
    }

    /// mm per step.
    pub fn step_dist(&self) -> f64 {
        self.step_dist
    }

    /// Changes mm per step (rotation distance changes).
    pub fn set_step_dist(&mut self, step_dist: f64) {
        self.step_dist = step_dist;
    }

    /// The coordinate of the last commanded step, mm.
    pub fn commanded_pos(&self) -> f64 {
        self.commanded_pos
    }

    /// Seconds of trapq history needed before a move (shaper/smoothing look-back).
    pub fn gen_steps_pre_active(&self) -> f64 {
        self.pre_active
    }

    /// Seconds of trapq needed after a move.
    pub fn gen_steps_post_active(&self) -> f64 {
        self.post_active
    }

    /// The axes that move this stepper.
    pub fn active_axes(&self) -> ActiveAxes {
        self.active
    }

    /// The stepper coordinate with the toolhead at `c` (no shaping).
    pub fn position_from_coord(&self, c: Coord) -> f64 {
        self.kin.position_from_coord(c)
    }

    /// Declares the toolhead at `c`: the commanded coordinate follows.
    pub fn set_position(&mut self, c: Coord) {
        self.commanded_pos = self.kin.position_from_coord(c);
    }

    /// The stepper coordinate at `move_time` into trapq entry `index`.
    #[inline]
    fn calc_position(&self, tq: &TrapQ, index: usize, move_time: f64) -> f64 {
        if let Kinematics::Extruder(e) = &self.kin {
            return e.calc_position(tq, index, move_time);
        }
        match &self.shaper {
            Some(s) if s.shapes(self.active) => {
                let c = s.shaped_coord(tq, index, move_time, self.active);
                self.kin.position_from_coord(c)
            }
            _ => self.kin.position_from_coord(tq.get(index).coord(move_time)),
        }
    }

    /// Generates this stepper's steps from the trapq up to `flush_time` into `sc`.
    ///
    /// # Errors
    /// When step compression rejects a step (an internal error).
    pub fn generate_steps(
        &mut self,
        tq: &TrapQ,
        sc: &mut StepCompress,
        flush_time: f64,
    ) -> Result<(), StepCompressError> {
        let last_flush_time = self.last_flush_time;
        self.last_flush_time = flush_time;
        let tail = tq.tail_index();
        let mut i = 0;
        while i < tail && last_flush_time >= tq.get(i).end_time() {
            i += 1;
        }
        let mut force_steps_time = self.last_move_time + self.post_active;
        let mut skip_count = 0usize;
        loop {
            let m = *tq.get(i);
            let move_start = m.print_time;
            let move_end = move_start + m.move_t;
            if touches(self.active, &m) {
                if skip_count > 0 && self.pre_active != 0.0 {
                    // Steps leading up to this stepper's activity (shaper/smoothing look-ahead).
                    let abs_start = (move_start - self.pre_active)
                        .max(last_flush_time)
                        .max(force_steps_time);
                    let mut p = i - 1;
                    skip_count -= 1;
                    while skip_count > 0 && tq.get(p).print_time > abs_start {
                        p -= 1;
                        skip_count -= 1;
                    }
                    while p != i {
                        self.gen_steps_range(tq, sc, p, abs_start, flush_time)?;
                        p += 1;
                    }
                }
                self.gen_steps_range(tq, sc, i, last_flush_time, flush_time)?;
                if move_end >= flush_time {
                    self.last_move_time = flush_time;
                    return Ok(());
                }
                skip_count = 0;
                self.last_move_time = move_end;
                force_steps_time = self.last_move_time + self.post_active;
            } else {
                if move_start < force_steps_time {
                    // Steps just after this stepper's activity.
                    let abs_end = force_steps_time.min(flush_time);
                    self.gen_steps_range(tq, sc, i, last_flush_time, abs_end)?;
                    skip_count = 1;
                } else {
                    skip_count += 1;
                }
                if flush_time + self.pre_active <= move_end {
                    return Ok(());
                }
            }
            if i >= tail {
                return Ok(());
            }
            i += 1;
        }
    }

    /// The first print time at or after the last flush at which a segment moves this stepper,
    /// looking no further than `flush_time` (Klipper's `itersolve_check_active`); 0 if none.
    pub fn check_active(&self, tq: &TrapQ, flush_time: f64) -> f64 {
        let tail = tq.tail_index();
        let mut i = 0;
        while i < tail && self.last_flush_time >= tq.get(i).end_time() {
            i += 1;
        }
        loop {
            let m = tq.get(i);
            if touches(self.active, m) {
                return m.print_time;
            }
            if flush_time <= m.end_time() || i >= tail {
                return 0.0;
            }
            i += 1;
        }
    }

    /// Finds and submits every half-step crossing within `[abs_start, abs_end]` of entry `index`.
    fn gen_steps_range(
        &mut self,
        tq: &TrapQ,
        sc: &mut StepCompress,
        index: usize,
        abs_start: f64,
        abs_end: f64,
    ) -> Result<(), StepCompressError> {
        let m = tq.get(index);
        let half_step = 0.5 * self.step_dist;
        let full_step = half_step + half_step;
        let start = (abs_start - m.print_time).max(0.0);
        let end = (abs_end - m.print_time).min(m.move_t);
        // (time, position) of the previous and current guesses.
        let (mut old_t, mut old_p) = (start, self.commanded_pos);
        let (mut cur_t, mut cur_p) = (old_t, old_p);
        let mut sdir = sc.step_dir();
        let mut is_dir_change = false;
        let mut have_bracket = false;
        let mut check_oscillate = false;
        let mut target = self.commanded_pos + if sdir { half_step } else { -half_step };
        let mut last_time = start;
        let mut low_time = start;
        let mut high_time = (start + SEEK_TIME_RESET).min(end);
        loop {
            // Secant guess from the last two points.
            let cur_dist = cur_p - target;
            let old_dist = old_p - target;
            let mut next_time = (old_t * cur_dist - cur_t * old_dist) / (cur_dist - old_dist);
            // Written so that NaN also counts as out of bounds.
            let in_bounds = next_time > low_time && next_time < high_time;
            if !in_bounds {
                if have_bracket {
                    next_time = (low_time + high_time) * 0.5;
                    check_oscillate = false;
                } else if cur_t >= end {
                    break;
                } else {
                    next_time = high_time;
                    high_time = (2.0 * high_time - last_time).min(end);
                }
            }
            old_t = cur_t;
            old_p = cur_p;
            cur_t = next_time;
            cur_p = self.calc_position(tq, index, next_time);
            let dist = cur_p - target;
            if dist.abs() > 0.000_000_001 {
                let rel_dist = if sdir { dist } else { -dist };
                if rel_dist > 0.0 {
                    // Past the target: a step lies in the bracket.
                    if have_bracket && old_t <= low_time {
                        if check_oscillate {
                            // Force a bisection next to break a persistent oscillation.
                            old_t = cur_t;
                            old_p = cur_p;
                        }
                        check_oscillate = true;
                    }
                    high_time = cur_t;
                    have_bracket = true;
                } else if rel_dist < -(full_step + 0.000_000_010) {
                    // More than a full step behind: the direction changed.
                    sdir = !sdir;
                    target = if sdir {
                        target + full_step
                    } else {
                        target - full_step
                    };
                    low_time = last_time;
                    high_time = cur_t;
                    is_dir_change = true;
                    have_bracket = true;
                    check_oscillate = false;
                } else {
                    low_time = cur_t;
                }
                if !have_bracket || high_time - low_time > 0.000_000_001 {
                    if !is_dir_change && rel_dist >= -half_step {
                        // The stepper reached the last step's position for good.
                        sc.commit()?;
                    }
                    continue;
                }
            }
            sc.append(sdir, m.print_time, cur_t)?;
            target = if sdir {
                target + full_step
            } else {
                target - full_step
            };
            let mut seek = (1.5 * (cur_t - last_time)).max(0.000_000_001);
            if is_dir_change && seek > SEEK_TIME_RESET {
                seek = SEEK_TIME_RESET;
            }
            last_time = cur_t;
            low_time = cur_t;
            high_time = (cur_t + seek).min(end);
            is_dir_change = false;
            have_bracket = false;
            check_oscillate = false;
        }
        self.commanded_pos = target - if sdir { half_step } else { -half_step };
        Ok(())
    }
}
