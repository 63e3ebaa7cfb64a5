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
    /// Scratch: the search ranges of one [`StepperSolver::generate_steps`] call.
    ranges: Vec<StepRange>,
}

/// One run of the half-step search: print times `[abs_start, abs_end]` of trapq entry `index`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct StepRange {
    index: usize,
    abs_start: f64,
    abs_end: f64,
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
            ranges: Vec::new(),
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
        let mut ranges = std::mem::take(&mut self.ranges);
        self.plan_ranges(tq, flush_time, &mut ranges);
        let mut result = Ok(());
        for r in &ranges {
            result = self.gen_steps_range(tq, sc, r.index, r.abs_start, r.abs_end);
            if result.is_err() {
                break;
            }
        }
        self.ranges = ranges;
        result
    }

    /// Generates the steps of several steppers: the same as calling
    /// [`StepperSolver::generate_steps`] on each, but two steppers' root searches run at a
    /// time, interleaved, so that the processor overlaps their long serial floating-point
    /// dependency chains (the searches of different steppers are independent). Only steppers
    /// whose position is a plain linear function of one trapq segment may be given (see
    /// [`StepperSolver::is_linear`]); each comes with its index into `results`, where its
    /// outcome goes. A stepper stops at its first error; the others still run.
    pub fn generate_steps_interleaved<'a>(
        mut steppers: impl Iterator<
            Item = (
                usize,
                &'a mut StepperSolver,
                &'a mut StepCompress,
                &'a TrapQ,
            ),
        >,
        flush_time: f64,
        results: &mut [Result<(), StepCompressError>],
    ) {
        let mut load = |results: &mut [Result<(), StepCompressError>]| -> Option<Lane<'a>> {
            for (index, solver, sc, tq) in steppers.by_ref() {
                debug_assert!(solver.is_linear());
                let lane = Lane::new(index, solver, sc, tq, flush_time);
                if lane.active {
                    return Some(lane);
                }
                lane.unload(results, Ok(()));
            }
            None
        };
        let mut a = load(results);
        let mut b = load(results);
        loop {
            match (a.as_mut(), b.as_mut()) {
                (Some(la), Some(lb)) => {
                    let (done_a, done_b) = run_pair(la, lb);
                    for (lane, done) in [(&mut a, done_a), (&mut b, done_b)] {
                        if let Some(outcome) = done
                            && let Some(l) = lane.take()
                        {
                            l.unload(results, outcome);
                            *lane = load(results);
                        }
                    }
                }
                (Some(l), None) | (None, Some(l)) => {
                    let outcome = l.run_alone();
                    for lane in [&mut a, &mut b] {
                        if let Some(l) = lane.take() {
                            l.unload(results, outcome.clone());
                        }
                    }
                    a = load(results);
                }
                (None, None) => return,
            }
        }
    }

    /// Whether the stepper's coordinate is `p + r·d(t)` of one trapq segment (a cartesian
    /// rail without input shaping, or the extruder without pressure advance), which
    /// [`StepperSolver::generate_steps_pair`] can interleave.
    pub fn is_linear(&self) -> bool {
        match &self.kin {
            Kinematics::Extruder(e) => e.half_smooth_time() <= 0.0,
            Kinematics::Cartesian { .. } => {
                self.shaper.as_ref().is_none_or(|s| !s.shapes(self.active))
            }
            _ => false,
        }
    }

    /// The linear position function of segment `m` (when [`StepperSolver::is_linear`]), with
    /// exactly the floating-point operations of the general path.
    fn linear(&self, m: &TrapMove) -> Linear {
        let (p, r) = match &self.kin {
            // `start_pos.x + distance`, and 1·d is d exactly.
            Kinematics::Extruder(_) => (m.start_pos.x, 1.0),
            Kinematics::Cartesian { axis } => (m.start_pos.axis(*axis), m.axes_r.axis(*axis)),
            _ => (m.start_pos.x, m.axes_r.x),
        };
        Linear {
            p,
            r,
            v: m.start_v,
            half_accel: m.half_accel,
        }
    }

    /// Walks the trapq from the last flush to `flush_time` and lists the search ranges, in
    /// order (Klipper's `itersolve_generate_steps` without the searches, which do not steer
    /// the walk). Updates the flush and activity times.
    fn plan_ranges(&mut self, tq: &TrapQ, flush_time: f64, out: &mut Vec<StepRange>) {
        out.clear();
        let last_flush_time = self.last_flush_time;
        self.last_flush_time = flush_time;
        let tail = tq.tail_index();
        let mut i = 0;
        while i < tail && last_flush_time >= tq.get(i).end_time() {
            i += 1;
        }
        let mut force_steps_time = self.last_move_time + self.post_active;
        let mut skip_count = 0usize;
        let mut range = |index: usize, abs_start: f64, abs_end: f64| {
            out.push(StepRange {
                index,
                abs_start,
                abs_end,
            });
        };
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
                        range(p, abs_start, flush_time);
                        p += 1;
                    }
                }
                range(i, last_flush_time, flush_time);
                if move_end >= flush_time {
                    self.last_move_time = flush_time;
                    return;
                }
                skip_count = 0;
                self.last_move_time = move_end;
                force_steps_time = self.last_move_time + self.post_active;
            } else {
                if move_start < force_steps_time {
                    // Steps just after this stepper's activity.
                    let abs_end = force_steps_time.min(flush_time);
                    range(i, last_flush_time, abs_end);
                    skip_count = 1;
                } else {
                    skip_count += 1;
                }
                if flush_time + self.pre_active <= move_end {
                    return;
                }
            }
            if i >= tail {
                return;
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
    ///
    /// The position function is chosen once per segment (not per evaluation) and the search
    /// loop is instantiated for each kind, so the common kinematics evaluate the segment's
    /// polynomial inline. Every variant performs the same floating-point operations, in the same
    /// order, as the general [`Kinematics::position_from_coord`] of [`TrapMove::coord`].
    fn gen_steps_range(
        &mut self,
        tq: &TrapQ,
        sc: &mut StepCompress,
        index: usize,
        abs_start: f64,
        abs_end: f64,
    ) -> Result<(), StepCompressError> {
        let m = *tq.get(index);
        let start = (abs_start - m.print_time).max(0.0);
        let end = (abs_end - m.print_time).min(m.move_t);
        let range = SearchRange {
            step_dist: self.step_dist,
            print_time: m.print_time,
            start,
            end,
        };
        let pos = &mut self.commanded_pos;
        if let Kinematics::Extruder(e) = &self.kin {
            if e.half_smooth_time() <= 0.0 {
                // ExtruderKin::calc_position without pressure advance.
                return search_steps(pos, sc, &range, |t| m.start_pos.x + m.distance(t));
            }
            return search_steps(pos, sc, &range, |t| e.calc_position(tq, index, t));
        }
        let active = self.active;
        if let Some(s) = &self.shaper
            && s.shapes(active)
        {
            let kin = &self.kin;
            return search_steps(pos, sc, &range, |t| {
                kin.position_from_coord(s.shaped_coord(tq, index, t, active))
            });
        }
        let (p, r) = (m.start_pos, m.axes_r);
        match &self.kin {
            Kinematics::Cartesian { axis } => {
                let lin = Linear {
                    p: p.axis(*axis),
                    r: r.axis(*axis),
                    v: m.start_v,
                    half_accel: m.half_accel,
                };
                search_steps(pos, sc, &range, |t| lin.at(t))
            }
            Kinematics::CoreXY { plus: true } => search_steps(pos, sc, &range, |t| {
                let d = m.distance(t);
                (p.x + r.x * d) + (p.y + r.y * d)
            }),
            Kinematics::CoreXY { plus: false } => search_steps(pos, sc, &range, |t| {
                let d = m.distance(t);
                (p.x + r.x * d) - (p.y + r.y * d)
            }),
            kin => search_steps(pos, sc, &range, |t| kin.position_from_coord(m.coord(t))),
        }
    }
}

/// `p + r·((v + a·t)·t)`: one coordinate along a constant-acceleration segment, with the
/// operations of [`TrapMove::distance`] and [`TrapMove::coord`].
#[derive(Clone, Copy, Debug)]
struct Linear {
    p: f64,
    r: f64,
    v: f64,
    half_accel: f64,
}

impl Linear {
    #[inline(always)]
    fn at(&self, t: f64) -> f64 {
        self.p + self.r * ((self.v + self.half_accel * t) * t)
    }
}

/// One segment's search interval: `[start, end]` seconds into a segment that begins at
/// `print_time`, for a stepper of `step_dist` mm per step.
struct SearchRange {
    step_dist: f64,
    print_time: f64,
    start: f64,
    end: f64,
}

impl SearchRange {
    /// A placeholder range (no search).
    const EMPTY: Self = Self {
        step_dist: 0.0,
        print_time: 0.0,
        start: 0.0,
        end: 0.0,
    };
}

/// The half-step search of [`StepperSolver::gen_steps_range`] over one segment, with the
/// stepper coordinate at a time into the segment given by `position`. `commanded_pos` is the
/// coordinate of the last step (updated on return).
#[inline(always)]
fn search_steps(
    commanded_pos: &mut f64,
    sc: &mut StepCompress,
    range: &SearchRange,
    position: impl Fn(f64) -> f64,
) -> Result<(), StepCompressError> {
    let mut search = Search::new(*commanded_pos, sc.step_dir(), range);
    let mut error = None;
    let progress = loop {
        let p = search.iterate(&position, sc, &mut error);
        if p != Progress::Searching {
            break p;
        }
    };
    if progress == Progress::Failed {
        return finished(progress, error);
    }
    *commanded_pos = search.commanded_pos();
    Ok(())
}

/// The state of one half-step search (Klipper's `itersolve_gen_steps_range`), advanced one
/// guess at a time by [`Search::iterate`] so that two searches can run interleaved.
#[derive(Clone, Copy, Debug)]
struct Search {
    half_step: f64,
    full_step: f64,
    print_time: f64,
    end: f64,
    /// (time, position) of the previous and current guesses.
    old_t: f64,
    old_p: f64,
    cur_t: f64,
    cur_p: f64,
    sdir: bool,
    is_dir_change: bool,
    have_bracket: bool,
    check_oscillate: bool,
    target: f64,
    last_time: f64,
    low_time: f64,
    high_time: f64,
}

impl Search {
    /// A search over `range` from the last step at `commanded_pos`, last moving `sdir`.
    #[inline(always)]
    fn new(commanded_pos: f64, sdir: bool, range: &SearchRange) -> Self {
        let half_step = 0.5 * range.step_dist;
        let start = range.start;
        Self {
            half_step,
            full_step: half_step + half_step,
            print_time: range.print_time,
            end: range.end,
            old_t: start,
            old_p: commanded_pos,
            cur_t: start,
            cur_p: commanded_pos,
            sdir,
            is_dir_change: false,
            have_bracket: false,
            check_oscillate: false,
            target: commanded_pos + if sdir { half_step } else { -half_step },
            last_time: start,
            low_time: start,
            high_time: (start + SEEK_TIME_RESET).min(range.end),
        }
    }

    /// The coordinate of the last step (once the search is over).
    #[inline(always)]
    fn commanded_pos(&self) -> f64 {
        self.target
            - if self.sdir {
                self.half_step
            } else {
                -self.half_step
            }
    }

    /// The target one full step on in the current direction: `target ± half_step ± half_step`,
    /// two roundings as in Klipper. Adding `full_step` instead rounds once, and over millions
    /// of steps without a position reset (the extruder) the targets drift from Klipper's by
    /// ~1e-7 mm, enough to move a step at a near-standstill by tens of microseconds, or to
    /// take or skip a back-and-forth step pair where the position barely crosses a target.
    #[inline(always)]
    fn step_on(&self) -> f64 {
        if self.sdir {
            self.target + self.half_step + self.half_step
        } else {
            self.target - self.half_step - self.half_step
        }
    }

    /// One guess: evaluates the position there and submits a step when it lands on the
    /// target. Returns whether the search goes on, is over (the range is exhausted) or failed
    /// (the compressor refused a step: the error is left in `error`). A small status rather
    /// than a `Result` carrying the error: the loops that call this test it every guess.
    #[inline(always)]
    #[expect(
        clippy::neg_cmp_op_on_partial_ord,
        reason = "a negated comparison is how NaN takes the fallback here, and compiles to less"
    )]
    fn iterate(
        &mut self,
        position: &impl Fn(f64) -> f64,
        sc: &mut StepCompress,
        error: &mut Option<StepCompressError>,
    ) -> Progress {
        // Secant guess from the last two points.
        let cur_dist = self.cur_p - self.target;
        let old_dist = self.old_p - self.target;
        let mut next_time = (self.old_t * cur_dist - self.cur_t * old_dist) / (cur_dist - old_dist);
        // Written so that NaN also counts as out of bounds.
        let in_bounds = next_time > self.low_time && next_time < self.high_time;
        if !in_bounds {
            if self.have_bracket {
                next_time = (self.low_time + self.high_time) * 0.5;
                self.check_oscillate = false;
            } else if self.cur_t >= self.end {
                return Progress::RangeDone;
            } else {
                next_time = self.high_time;
                self.high_time = (2.0 * self.high_time - self.last_time).min(self.end);
            }
        }
        self.old_t = self.cur_t;
        self.old_p = self.cur_p;
        self.cur_t = next_time;
        self.cur_p = position(next_time);
        let dist = self.cur_p - self.target;
        if dist.abs() > 0.000_000_001 {
            let rel_dist = if self.sdir { dist } else { -dist };
            if rel_dist > 0.0 {
                // Past the target: a step lies in the bracket.
                if self.have_bracket && self.old_t <= self.low_time {
                    if self.check_oscillate {
                        // Force a bisection next to break a persistent oscillation.
                        self.old_t = self.cur_t;
                        self.old_p = self.cur_p;
                    }
                    self.check_oscillate = true;
                }
                self.high_time = self.cur_t;
                self.have_bracket = true;
            } else if rel_dist < -(self.full_step + 0.000_000_010) {
                // More than a full step behind: the direction changed.
                self.sdir = !self.sdir;
                self.target = self.step_on();
                self.low_time = self.last_time;
                self.high_time = self.cur_t;
                self.is_dir_change = true;
                self.have_bracket = true;
                self.check_oscillate = false;
            } else {
                self.low_time = self.cur_t;
            }
            if !self.have_bracket || self.high_time - self.low_time > 0.000_000_001 {
                // Once the stepper reached the last step's position for good, that step is
                // final.
                if !self.is_dir_change
                    && rel_dist >= -self.half_step
                    && let Err(e) = sc.commit()
                {
                    *error = Some(e);
                    return Progress::Failed;
                }
                return Progress::Searching;
            }
        }
        if let Err(e) = sc.append(self.sdir, self.print_time, self.cur_t) {
            *error = Some(e);
            return Progress::Failed;
        }
        self.target = self.step_on();
        // Comparisons rather than f64::max/min, which compile to less, with the same results:
        // a NaN seek becomes the floor, and a NaN window end the range's end (never NaN).
        let mut seek = 1.5 * (self.cur_t - self.last_time);
        if !(seek >= 0.000_000_001) {
            seek = 0.000_000_001;
        }
        if self.is_dir_change && seek > SEEK_TIME_RESET {
            seek = SEEK_TIME_RESET;
        }
        self.last_time = self.cur_t;
        self.low_time = self.cur_t;
        let high_time = self.cur_t + seek;
        self.high_time = if high_time <= self.end {
            high_time
        } else {
            self.end
        };
        self.is_dir_change = false;
        self.have_bracket = false;
        self.check_oscillate = false;
        Progress::Searching
    }
}

/// Where a [`Search`] stands after a guess.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Progress {
    /// More guesses to make.
    Searching,
    /// The range is exhausted.
    RangeDone,
    /// The compressor refused a step.
    Failed,
}

/// A finished search's outcome: its error if it failed (a failed search always left one).
#[inline]
fn finished(progress: Progress, error: Option<StepCompressError>) -> Result<(), StepCompressError> {
    match (progress, error) {
        (Progress::Failed, Some(e)) => Err(e),
        _ => Ok(()),
    }
}

/// One stepper being generated by [`StepperSolver::generate_steps_interleaved`]: its solver,
/// compressor, trapq, planned ranges and the search in progress.
struct Lane<'a> {
    index: usize,
    solver: &'a mut StepperSolver,
    sc: &'a mut StepCompress,
    tq: &'a TrapQ,
    /// The stepper's ranges (its scratch buffer, given back by [`Lane::unload`]).
    ranges: Vec<StepRange>,
    next: usize,
    search: Search,
    position: Linear,
    /// A search is in progress.
    active: bool,
}

impl<'a> Lane<'a> {
    /// Plans the stepper's ranges up to `flush_time` and starts the first search.
    fn new(
        index: usize,
        solver: &'a mut StepperSolver,
        sc: &'a mut StepCompress,
        tq: &'a TrapQ,
        flush_time: f64,
    ) -> Self {
        let mut ranges = std::mem::take(&mut solver.ranges);
        solver.plan_ranges(tq, flush_time, &mut ranges);
        let mut lane = Self {
            index,
            solver,
            sc,
            tq,
            ranges,
            next: 0,
            search: Search::new(0.0, false, &SearchRange::EMPTY),
            position: Linear {
                p: 0.0,
                r: 0.0,
                v: 0.0,
                half_accel: 0.0,
            },
            active: false,
        };
        lane.start_next();
        lane
    }

    /// Gives the scratch buffer back and records the stepper's outcome.
    fn unload(self, results: &mut [Result<(), StepCompressError>], outcome: StepResult) {
        self.solver.ranges = self.ranges;
        if let Some(r) = results.get_mut(self.index) {
            *r = outcome;
        }
    }

    /// Starts the next planned range, if any (after the previous search has finished).
    #[inline]
    fn start_next(&mut self) {
        self.active = false;
        let Some(r) = self.ranges.get(self.next) else {
            return;
        };
        self.next += 1;
        let m = *self.tq.get(r.index);
        let range = SearchRange {
            step_dist: self.solver.step_dist,
            print_time: m.print_time,
            start: (r.abs_start - m.print_time).max(0.0),
            end: (r.abs_end - m.print_time).min(m.move_t),
        };
        self.position = self.solver.linear(&m);
        self.search = Search::new(self.solver.commanded_pos, self.sc.step_dir(), &range);
        self.active = true;
    }

    /// Finishes the current search and starts the next.
    #[inline]
    fn finish_search(&mut self) {
        self.solver.commanded_pos = self.search.commanded_pos();
        self.start_next();
    }

    /// Runs the lane's remaining searches alone.
    fn run_alone(&mut self) -> StepResult {
        let mut error = None;
        while self.active {
            let position = self.position;
            let mut search = self.search;
            let progress = loop {
                let p = search.iterate(&|t| position.at(t), self.sc, &mut error);
                if p != Progress::Searching {
                    break p;
                }
            };
            self.search = search;
            if progress == Progress::Failed {
                return finished(progress, error);
            }
            self.finish_search();
        }
        Ok(())
    }
}

/// A stepper's outcome.
type StepResult = Result<(), StepCompressError>;

/// Advances two lanes' searches in turn until one lane has run out of ranges or failed;
/// returns that lane's outcome (`None` for a lane still going).
fn run_pair(a: &mut Lane<'_>, b: &mut Lane<'_>) -> (Option<StepResult>, Option<StepResult>) {
    loop {
        let (pa, pb) = (a.position, b.position);
        let (mut error_a, mut error_b) = (None, None);
        // The searches as locals while they run (kept in registers, not in the lanes).
        let (mut search_a, mut search_b) = (a.search, b.search);
        // One guess each per turn until one of the searches ends its range.
        let (done_a, done_b) = loop {
            let done_a = search_a.iterate(&|t| pa.at(t), a.sc, &mut error_a);
            let done_b = search_b.iterate(&|t| pb.at(t), b.sc, &mut error_b);
            if done_a != Progress::Searching || done_b != Progress::Searching {
                break (done_a, done_b);
            }
        };
        (a.search, b.search) = (search_a, search_b);
        let mut out = (None, None);
        match done_a {
            Progress::Failed => out.0 = Some(finished(done_a, error_a)),
            Progress::RangeDone => {
                a.finish_search();
                if !a.active {
                    out.0 = Some(Ok(()));
                }
            }
            Progress::Searching => {}
        }
        match done_b {
            Progress::Failed => out.1 = Some(finished(done_b, error_b)),
            Progress::RangeDone => {
                b.finish_search();
                if !b.active {
                    out.1 = Some(Ok(()));
                }
            }
            Progress::Searching => {}
        }
        if out.0.is_some() || out.1.is_some() {
            return out;
        }
    }
}
