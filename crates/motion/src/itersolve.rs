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
//! Where the coordinate is quadratic in time (a cartesian or corexy motor without input
//! shaping, the extruder without pressure advance) the steps are solved in closed form instead
//! (`linear_steps`): the same steps, reversals and commits as the search, each at its exact
//! crossing, which the search would have found to within 1e-9 mm. Whenever the outcome is a
//! near thing (a threshold within 1 µm, a step where the motor crawls below 0.1 mm/s) the search
//! runs instead; and where a step's clock is (a half tick within the search's tolerance of the
//! root, `TickCheck`), the search takes the range up to that step, so that every clock is the
//! one Klipper's search gives. At constant speed the search's landings are known far more
//! closely once it has taken a step at its first guess (`cruise_tolerance`, ~10⁻¹² mm instead
//! of 10⁻⁹): there the search runs only until it has, and on to the last clock uncertain that
//! closely, usually two or three steps instead of most of a long range. The closed form works a
//! range at a time: the half-step targets (a progression where they stay in one binade,
//! `Targets`; else Klipper's chain of additions), their roots and clock checks (`push_roots`),
//! then the compressor's chunked append.
//!
//! With input shaping the coordinate of a cartesian or corexy motor is a sum of time-shifted
//! copies of the path, so a range splits into pieces over which every pulse reads one trapq
//! entry and the coordinate is again a quadratic (`shaped_pieces`). Where it moves one way,
//! at 0.1 mm/s or more, over the whole range, in the direction of the last step, each piece is
//! solved in closed form; a range where the shaped motion turns or crawls is searched, as
//! Klipper does (`shaped_steps`).
//!
//! Times are print times in seconds; the generated steps go straight into the stepper's
//! [`StepCompress`].

use crate::extruder::{ExtruderKin, SmoothingWindow};
use crate::isa::Isa;
use crate::shaper::{AxisShapers, AxisWindow};
use crate::stepcompress::{
    CLOCK_DIFF_MAX, ROUND_TO_INTEGER, StepCompress, StepCompressError, whole_ticks,
};
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

    /// The stepper coordinate as `w·(x, y, z)` where it is linear in the toolhead's position
    /// (Cartesian, CoreXY); `None` otherwise.
    fn axis_weights(&self) -> Option<[f64; 3]> {
        match self {
            Self::Cartesian { axis } => {
                let mut w = [0.0; 3];
                *w.get_mut(*axis)? = 1.0;
                Some(w)
            }
            Self::CoreXY { plus } => Some([1.0, if *plus { 1.0 } else { -1.0 }, 0.0]),
            Self::Delta { .. } | Self::Extruder(_) => None,
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
    /// Whether segments with a quadratic coordinate are solved in closed form
    /// ([`linear_steps`]); off, every step is searched for (the tests compare the two).
    closed_form: bool,
    /// Scratch of the shaped closed form: a range's piece boundaries, then its pieces.
    breaks: Vec<f64>,
    pieces: Vec<ShapedPiece>,
    /// Scratch of the closed form: a range's step times, and (shaped) its pieces' plans.
    roots: Roots,
    plans: Vec<LinearPlan>,
    /// Scratch of the extruder's search with pressure advance: a range's smoothing window.
    window: SmoothingWindow,
    /// Scratch of the shaped searches: a range's entries along X and Y.
    axis_windows: [AxisWindow; 2],
    /// The instruction set the step loops run with ([`Isa`]).
    isa: Isa,
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
            closed_form: true,
            breaks: Vec::new(),
            pieces: Vec::new(),
            roots: Roots::default(),
            plans: Vec::new(),
            window: SmoothingWindow::default(),
            axis_windows: Default::default(),
            isa: Isa::detect(),
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
        let isa = self.isa;
        let result = isa.run(
            #[inline(always)]
            || {
                for r in &ranges {
                    self.gen_steps_range(tq, sc, r.index, r.abs_start, r.abs_end)?;
                }
                Ok(())
            },
        );
        self.ranges = ranges;
        result
    }

    /// Runs the step loops with `isa` ([`Isa::BASELINE`], or what [`Isa::detect`] gives):
    /// the same steps either way, which the tests check.
    pub fn set_isa(&mut self, isa: Isa) {
        self.isa = isa;
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
    #[inline(always)]
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
        let roots = &mut self.roots;
        let closed_form = self.closed_form;
        if let Kinematics::Extruder(e) = &self.kin {
            if e.half_smooth_time() <= 0.0 {
                // ExtruderKin::calc_position without pressure advance.
                let lin = Linear::new(m.start_pos.x, 1.0, m.start_v, m.half_accel);
                let terms = m.start_pos.x.abs() + m.start_v.abs() * end.abs();
                return linear_steps(closed_form, pos, sc, &range, lin, terms, roots, |t| {
                    m.start_pos.x + m.distance(t)
                });
            }
            return pressure_advance_steps(e, &mut self.window, pos, sc, tq, index, &range);
        }
        let active = self.active;
        if let Some(s) = &self.shaper
            && s.shapes(active)
        {
            let kin = &self.kin;
            let windows = &mut self.axis_windows;
            prepare_axis_windows(kin, s, tq, index, (start, end), windows);
            let windows = &*windows;
            let position = |t| shaped_position(kin, s, windows, tq, index, t, active);
            if closed_form
                && let Some(weights) = kin.axis_weights()
                && shaped_pieces(
                    s,
                    tq,
                    index,
                    weights,
                    (start, end),
                    &mut self.breaks,
                    &mut self.pieces,
                )
            {
                return shaped_steps(
                    pos,
                    sc,
                    &range,
                    &self.pieces,
                    roots,
                    &mut self.plans,
                    position,
                );
            }
            return search_steps(pos, sc, &range, position);
        }
        let (p, r) = (m.start_pos, m.axes_r);
        // (The magnitudes the search's evaluations go through, `cruise_tolerance`'s `terms`:
        // the start, and the distance along the segment.)
        let distance = m.start_v.abs() * end.abs();
        match &self.kin {
            Kinematics::Cartesian { axis } => {
                // The search's position: Klipper's operations, on the segment's own signs.
                let exact = Linear {
                    p: p.axis(*axis),
                    r: r.axis(*axis),
                    v: m.start_v,
                    half_accel: m.half_accel,
                };
                let lin = Linear::new(exact.p, exact.r, exact.v, exact.half_accel);
                let terms = exact.p.abs() + distance;
                linear_steps(closed_form, pos, sc, &range, lin, terms, roots, |t| {
                    exact.at(t)
                })
            }
            Kinematics::CoreXY { plus } => {
                let sign = if *plus { 1.0 } else { -1.0 };
                let lin = Linear::new(p.x + sign * p.y, r.x + sign * r.y, m.start_v, m.half_accel);
                let terms = p.x.abs() + p.y.abs() + 2.0 * distance;
                if *plus {
                    linear_steps(closed_form, pos, sc, &range, lin, terms, roots, |t| {
                        let d = m.distance(t);
                        (p.x + r.x * d) + (p.y + r.y * d)
                    })
                } else {
                    linear_steps(closed_form, pos, sc, &range, lin, terms, roots, |t| {
                        let d = m.distance(t);
                        (p.x + r.x * d) - (p.y + r.y * d)
                    })
                }
            }
            kin => search_steps(pos, sc, &range, |t| kin.position_from_coord(m.coord(t))),
        }
    }
}

/// The stepper coordinate of `kin` with the toolhead at its shaped position, `t` seconds into
/// trapq entry `index`: `kin.position_from_coord(shapers.shaped_coord(…))` to the bit, with
/// only the axes a Cartesian or CoreXY stepper reads evaluated (an unshaped axis's
/// [`ShaperPulses::shaped_axis`] is its plain position, as in `shaped_coord`), from `windows`
/// where [`prepare_axis_windows`] prepared them for `t` (the same bits; an empty window reads
/// the trapq).
///
/// [`ShaperPulses::shaped_axis`]: crate::shaper::ShaperPulses::shaped_axis
#[inline(always)]
fn shaped_position(
    kin: &Kinematics,
    shapers: &AxisShapers,
    windows: &[AxisWindow; 2],
    tq: &TrapQ,
    index: usize,
    t: f64,
    active: ActiveAxes,
) -> f64 {
    match kin {
        Kinematics::Cartesian { axis } => {
            shapers
                .axis(*axis)
                .shaped_axis_in(tq, &windows[0], index, *axis, t)
        }
        Kinematics::CoreXY { plus } => {
            let x = shapers.axis(0).shaped_axis_in(tq, &windows[0], index, 0, t);
            let y = shapers.axis(1).shaped_axis_in(tq, &windows[1], index, 1, t);
            if *plus { x + y } else { x - y }
        }
        kin => kin.position_from_coord(shapers.shaped_coord(tq, index, t, active)),
    }
}

/// The shaped axes' [`AxisWindow`]s for times `start..=end` into entry `index`, where the
/// kinematics reads one axis (Cartesian) or X and Y (CoreXY); otherwise left empty.
fn prepare_axis_windows(
    kin: &Kinematics,
    shapers: &AxisShapers,
    tq: &TrapQ,
    index: usize,
    range: (f64, f64),
    windows: &mut [AxisWindow; 2],
) {
    match kin {
        Kinematics::Cartesian { axis } => {
            shapers
                .axis(*axis)
                .prepare_window(tq, index, *axis, range, &mut windows[0]);
        }
        Kinematics::CoreXY { .. } => {
            let [x, y] = windows;
            shapers.axis(0).prepare_window(tq, index, 0, range, x);
            shapers.axis(1).prepare_window(tq, index, 1, range, y);
        }
        _ => {}
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
    /// `p + r·((v + half_accel·t)·t)`, held as the same function with a distance that grows
    /// (the extruder's segments carry signed speeds, a retraction a negative `v` and
    /// `half_accel`), which [`Linear::time_and_speed_at`] needs.
    #[inline(always)]
    fn new(p: f64, r: f64, v: f64, half_accel: f64) -> Self {
        if v < 0.0 || (v == 0.0 && half_accel < 0.0) {
            Self {
                p,
                r: -r,
                v: -v,
                half_accel: -half_accel,
            }
        } else {
            Self {
                p,
                r,
                v,
                half_accel,
            }
        }
    }

    #[inline(always)]
    fn at(&self, t: f64) -> f64 {
        self.p + self.r * ((self.v + self.half_accel * t) * t)
    }

    /// The time into the segment at which the coordinate is `target`: the root of
    /// `half_accel·t² + v·t = (target − p)/r`, in the form that neither cancels nor divides by
    /// a zero acceleration; with the speed there, `v + 2·half_accel·t` (the root of the
    /// discriminant). Only for a target the segment reaches.
    #[inline(always)]
    fn time_and_speed_at(&self, target: f64, inv_r: f64) -> (f64, f64) {
        let d = (target - self.p) * inv_r;
        let disc = (self.v * self.v + 4.0 * self.half_accel * d).max(0.0);
        let speed = disc.sqrt();
        ((d + d) / (self.v + speed), speed)
    }
}

/// How close (mm) the coordinate may come to one of the half-step search's thresholds before
/// [`linear_steps`] leaves the decision to the search itself. The thresholds are 1e-9 mm (a
/// guess that close to the target is a step) and 1e-8 mm (beyond a full step back is a
/// reversal); the coordinate's own rounding is ~1e-13 mm.
const ANALYTIC_MARGIN: f64 = 1e-6;

/// Slowest stepper speed (mm/s) at a step that [`linear_steps`] solves in closed form. The
/// search stops anywhere within 1e-9 mm of a target, so where the coordinate crawls the step it
/// finds depends on the path its guesses took — that is, on Klipper's exact search, which only
/// the search reproduces. From 0.1 mm/s up the band is at most 10 ns wide.
const ANALYTIC_MIN_SPEED: f64 = 0.1;

/// The half-step crossings of a segment whose coordinate is quadratic in time, solved in closed
/// form: the same steps as [`search_steps`] (the same targets, reversal, step+dir+step commits),
/// at the same MCU clocks.
///
/// Within one trapq segment the coordinate only moves one way (the speed never changes sign),
/// so the search's choices follow from the coordinate at a few instants: the range's start and
/// end, and the search's first probe 100 µs in (where a reversal's pending step is or is not
/// committed). The search runs the whole range instead whenever one of them lies within
/// [`ANALYTIC_MARGIN`] of a threshold (for the last step's commit at the end, where the end's
/// coordinate falls short of the step's position by no more than the evaluations' rounding:
/// the search evaluates it there, with the same operations), the segment does not clearly
/// move, a step falls
/// where the stepper is slower than [`ANALYTIC_MIN_SPEED`], or a step's clock is a near thing
/// ([`TickCheck`]): all of that is decided before the first step is taken. `position` is the
/// coordinate with the search's own floating-point operations; `lin` the same function as a
/// polynomial, for the roots.
#[inline(always)]
#[expect(
    clippy::too_many_arguments,
    reason = "one inlined range, its inputs spelled out"
)]
fn linear_steps(
    closed_form: bool,
    commanded_pos: &mut f64,
    sc: &mut StepCompress,
    range: &SearchRange,
    lin: Linear,
    terms: f64,
    roots: &mut Roots,
    position: impl Fn(f64) -> f64,
) -> Result<(), StepCompressError> {
    roots.clear();
    let plan = if closed_form {
        plan_linear(*commanded_pos, sc, range, lin, None, roots, &position)
    } else {
        None
    };
    let Some(plan) = plan else {
        return search_steps(commanded_pos, sc, range, position);
    };
    let roots = &roots[..plan.steps];
    if plan.searched == 0 {
        return plan.take(commanded_pos, sc, range.print_time, roots, 0);
    }
    // Some clock is a near thing. At constant speed the search's landings are known far more
    // closely once it has taken a step at its first guess (`cruise_tolerance`): it runs until
    // then, and on to the last clock still uncertain that closely.
    let cruise = cruise_tolerance(lin, terms, range).zip(plan.check);
    let (count, first_guess_within) = match cruise.map(|(tolerance, check)| {
        check.last_uncertain(roots, check.window_for(tolerance), |_| lin.v)
    }) {
        // (Past the plan's last step the search is not needed for any clock.)
        Some(count) => (count, Some(plan.steps)),
        None => (plan.searched, None),
    };
    if count >= plan.steps {
        return search_steps(commanded_pos, sc, range, position);
    }
    match search_prefix(
        commanded_pos,
        sc,
        range,
        &position,
        count,
        first_guess_within,
    )? {
        Some(taken) => plan.take(commanded_pos, sc, range.print_time, roots, taken),
        None => Ok(()),
    }
}

/// The largest [`cruise_tolerance`]: far inside the search's own 1e-9 mm, so that a landing
/// this close is always accepted.
const CRUISE_TOLERANCE_MAX_MM: f64 = 1e-10;

/// How far (mm) from its target the search lands on a step of `range` once it has taken the
/// step before at its first guess, where the coordinate `lin` is linear in time (`None`
/// otherwise, or where the bound is not far below the search's tolerance). `terms` bounds the
/// magnitudes the search's evaluation of the coordinate goes through (its start and its rate
/// times the range's time).
///
/// After a step taken at its first guess, the search's last two points are that step and the
/// one before: both on the line (to the evaluation's rounding), a step's time apart. The
/// next guess is their secant's crossing of the next target, a step on — the line's own
/// crossing, but for the rounding of the two distances (amplified at most three times by
/// extrapolating one step beyond two a step apart) and of the secant's products and
/// division, relative to the times; so within `e = 64·ε·(terms + speed·time + step)` of the
/// target, with a margin of two or more. That guess is inside the search's window (it
/// reaches 1.5 steps ahead), and `e` below 1e-9 mm makes it the step, taken at its first
/// guess again: by induction every later step of the range lands within `e`.
#[inline(always)]
fn cruise_tolerance(lin: Linear, terms: f64, range: &SearchRange) -> Option<f64> {
    if lin.half_accel != 0.0 {
        return None;
    }
    let time = range.start.abs().max(range.end.abs());
    let tolerance =
        64.0 * f64::EPSILON * (terms + (lin.r * lin.v).abs() * time + range.step_dist.abs());
    (tolerance <= CRUISE_TOLERANCE_MAX_MM).then_some(tolerance)
}

/// Runs the search of [`search_steps`] over `range` until it has taken `count` steps and,
/// given `first_guess_within`, on until the last step it took was at its first guess after a
/// step before it, or it took that many steps: how many it took then, `None` when it
/// finished the range first (or failed: then with the error).
fn search_prefix(
    commanded_pos: &mut f64,
    sc: &mut StepCompress,
    range: &SearchRange,
    position: &impl Fn(f64) -> f64,
    count: usize,
    first_guess_within: Option<usize>,
) -> Result<Option<usize>, StepCompressError> {
    let mut search = Search::new(*commanded_pos, sc.step_dir(), range);
    let mut error = None;
    let settled = |search: &Search| match first_guess_within {
        Some(limit) => search.at_first_guess || search.steps >= limit,
        None => true,
    };
    loop {
        match search.iterate(position, sc, &mut error) {
            Progress::Searching if search.steps < count || !settled(&search) => {}
            Progress::Searching => return Ok(Some(search.steps)),
            Progress::RangeDone => {
                *commanded_pos = search.commanded_pos();
                return Ok(None);
            }
            Progress::Failed => return finished(Progress::Failed, error).map(|()| None),
        }
    }
}

/// How [`plan_linear`] takes a range's steps into the compressor, their times already in the
/// roots buffer.
#[derive(Clone, Copy, Debug)]
struct LinearPlan {
    /// Direction of the steps.
    dir: bool,
    /// Commit the pending step first (a reversal's first probe found it final).
    commit_first: bool,
    /// How many roots (from the buffer's start, or from where the previous plan's end).
    steps: usize,
    /// How many of them only the search gives exactly (up to the last whose clock is
    /// uncertain, [`TickCheck`]): the range's search runs until it has taken these.
    searched: usize,
    /// Commit the last step at the end (the coordinate got to its position).
    commit_last: bool,
    /// The coordinate of the last step afterwards.
    commanded_pos: f64,
    /// The check of the roots' clocks (`None` for a plan without steps).
    check: Option<TickCheck>,
}

impl LinearPlan {
    /// Takes the plan's steps, `roots` (times after `print_time`), but for the first
    /// `by_search` of them, which the range's search already took (it then also made the first
    /// commit's decision), and ends as the plan does.
    #[inline(always)]
    fn take(
        &self,
        commanded_pos: &mut f64,
        sc: &mut StepCompress,
        print_time: f64,
        roots: &[f64],
        by_search: usize,
    ) -> Result<(), StepCompressError> {
        if self.commit_first && by_search == 0 {
            sc.commit()?;
        }
        sc.append_times(self.dir, print_time, &roots[by_search..])?;
        *commanded_pos = self.commanded_pos;
        if self.commit_last {
            sc.commit()?;
        }
        Ok(())
    }
}

/// Decides whether the closed form gives the search's steps over `range` (see
/// [`linear_steps`]) and, where it does, appends their times to `roots` — for a piece of a
/// shaped range, plus the piece's start in the range (`piece_start`);
/// `None` (and `roots` left as it was or longer, to be discarded) where the search must run.
/// Reads the compressor (its direction, its clock), changes nothing.
#[inline(always)]
#[expect(
    clippy::neg_cmp_op_on_partial_ord,
    reason = "negated comparisons are how NaN takes the search here"
)]
fn plan_linear(
    commanded_pos: f64,
    sc: &StepCompress,
    range: &SearchRange,
    lin: Linear,
    piece_start: Option<f64>,
    roots: &mut Roots,
    position: &impl Fn(f64) -> f64,
) -> Option<LinearPlan> {
    let (start, end) = (range.start, range.end);
    let half = 0.5 * range.step_dist;
    let full = half + half;
    let (p_start, p_end) = (position(start), position(end));
    let moved = p_end - p_start;
    // `!(x > y)` so that NaN also takes the search.
    if !(end > start) || !(moved.abs() > ANALYTIC_MARGIN) || lin.r == 0.0 {
        return None;
    }
    let dir = moved > 0.0;
    // How far the coordinate `p` is past `target` in direction `d` (the search's `rel_dist`).
    let past = |p: f64, target: f64, d: bool| if d { p - target } else { -(p - target) };
    let near = |x: f64, threshold: f64| (x - threshold).abs() <= ANALYTIC_MARGIN;
    // A full step back from the target (plus 1e-8 mm) is a reversal to the search.
    let reversal = -(full + 0.000_000_010);
    let sdir = sc.step_dir();
    let mut target = commanded_pos + if sdir { half } else { -half };
    let mut commit_first = false;
    let flipped = sdir != dir;
    if !flipped {
        // The target ahead, and the coordinate not a full step behind it (the search's first
        // probe would take that for a reversal).
        let at_start = past(p_start, target, dir);
        if !(at_start < -ANALYTIC_MARGIN) || !(at_start > reversal + ANALYTIC_MARGIN) {
            return None;
        }
    } else {
        // A reversal: the search's first probe decides whether the last step is committed,
        // the range's end whether the direction flips here at all.
        let probe = (start + SEEK_TIME_RESET).min(end);
        let at_probe = past(position(probe), target, sdir);
        let at_end = past(p_end, target, sdir);
        if at_probe > -ANALYTIC_MARGIN
            || near(at_probe, reversal)
            || near(at_probe, -half)
            || near(at_end, reversal)
        {
            return None;
        }
        // (At the probe the coordinate has not gone a full step back: no reversal yet.)
        commit_first = at_probe >= -half;
        if at_end >= reversal {
            // Back by less than a full step: no step in this range.
            return Some(LinearPlan {
                dir: sdir,
                commit_first,
                steps: 0,
                searched: 0,
                commit_last: false,
                commanded_pos,
                check: None,
            });
        }
        target = step_on(target, half, dir);
        // The first step the new way lies clearly after the range's start.
        if !(past(p_start, target, dir) < -ANALYTIC_MARGIN) {
            return None;
        }
    }
    // The targets the range reaches, and where its end leaves the next one.
    let targets = Targets::new(target, half, dir, p_end);
    let (steps, ahead, last_target) = match &targets {
        Some(targets) => targets.reached(|x| past(p_end, x, dir)),
        None => {
            let (mut steps, mut last_target, mut next) = (0_usize, target, target);
            let ahead = loop {
                let ahead = past(p_end, next, dir);
                if !(ahead > ANALYTIC_MARGIN) {
                    break ahead;
                }
                steps += 1;
                last_target = next;
                next = step_on(next, half, dir);
            };
            (steps, ahead, last_target)
        }
    };
    let magnitude = coordinate_magnitude(p_start, p_end, lin);
    // Whether the last step is committed at the range's end: the search commits it at any
    // guess (short of a step) whose coordinate has got to the step's position, `ahead ≥
    // −half`. It evaluates the coordinate at the range's very end before the range is done,
    // so where `ahead` (that evaluation, with the search's operations) says so, it commits.
    // Where `ahead` falls short, its guesses before the end — at most the end's coordinate,
    // the coordinate being monotone, but for the rounding of two evaluations — may still get
    // there where `ahead` falls short by no more than that rounding: only that band is left
    // to the search. (A piece of a shaped range ends at a time of its own, not the range's
    // end: there the band is the margin's.)
    let commit_undecided = match piece_start {
        None => ahead < -half && ahead >= -half - 4.0 * evaluation_rounding_mm(magnitude),
        Some(_) => near(ahead, -half),
    };
    // (A reversal's first step lies inside the range, or the flip was a near thing.)
    if !(ahead < -ANALYTIC_MARGIN) || commit_undecided || (flipped && steps == 0) {
        return None;
    }
    let inv_r = 1.0 / lin.r;
    if steps > 0 {
        // The speed is monotonic over a segment: its lowest at a step is at the first or last.
        // At the target `p + r·d` it is `|r|·(v + 2·half_accel·t)` where
        // `half_accel·t² + v·t = d`, so its square is `r²·(v² + 4·half_accel·d)`: compared
        // squared, without the root and division of the step's time.
        let speed_squared_at = |target: f64| {
            let d = (target - lin.p) * inv_r;
            lin.r * lin.r * (lin.v * lin.v + 4.0 * lin.half_accel * d)
        };
        const MIN_SPEED_SQUARED: f64 = ANALYTIC_MIN_SPEED * ANALYTIC_MIN_SPEED;
        if !(speed_squared_at(target) >= MIN_SPEED_SQUARED
            && speed_squared_at(last_target) >= MIN_SPEED_SQUARED)
        {
            return None;
        }
    }
    if steps == 0 {
        // No step here (a quarter of case f's ranges, mostly its extruder's: a move there is a
        // fraction of a step): no roots, nothing for a clock check; the coordinate stays before
        // the first target.
        return Some(LinearPlan {
            dir,
            commit_first,
            steps: 0,
            searched: 0,
            commit_last: ahead >= -half,
            commanded_pos: target - if dir { half } else { -half },
            check: None,
        });
    }
    // (32-bit step indices in the roots' loops.)
    if steps >= u32::MAX as usize {
        return None;
    }
    let time_shift = piece_start.unwrap_or(0.0);
    let whole_range = piece_start.is_none().then_some((dir, steps));
    let check = TickCheck::new(sc, range, lin, time_shift, magnitude, whole_range)?;
    let from = roots.len();
    let (searched, after) = match &targets {
        Some(targets) => {
            let target = |k| targets.at_index(k);
            let searched = push_roots(roots, steps, target, lin, inv_r, range, time_shift, &check);
            (searched, targets.at(steps))
        }
        None => {
            // The chain walked once: each target in turn, then the one after the last.
            let mut chain = target;
            let next = |_| {
                let t = chain;
                chain = step_on(chain, half, dir);
                t
            };
            let searched = push_roots(roots, steps, next, lin, inv_r, range, time_shift, &check);
            (searched, chain)
        }
    };
    // The rarer uncertain clocks taken again, where the compressor allows the exact check:
    // most that the conversion's error bound left uncertain are not.
    let searched = match check.append_offset {
        Some(_) if searched > 0 => {
            let uncertain = &roots[from..from + searched];
            check.last_uncertain(uncertain, check.window, |t| {
                lin.v + 2.0 * lin.half_accel * t
            })
        }
        _ => searched,
    };
    Some(LinearPlan {
        dir,
        commit_first,
        steps,
        searched,
        // Not reached: the last step is final once the coordinate got to its position.
        commit_last: ahead >= -half,
        commanded_pos: after - if dir { half } else { -half },
        check: Some(check),
    })
}

/// The magnitude (mm) of the values a range's coordinate `lin` takes and of the root
/// computation's terms, for [`TickCheck::new`], from the coordinate at the range's start and
/// end.
#[inline(always)]
fn coordinate_magnitude(p_start: f64, p_end: f64, lin: Linear) -> f64 {
    p_start.abs().max(p_end.abs()) + lin.p.abs()
}

/// The coordinate's rounding (mm), in the search's evaluations and in a root, where its values
/// and the terms that make them are at most `magnitude` ([`coordinate_magnitude`]): a few
/// dozen ulps.
#[inline(always)]
fn evaluation_rounding_mm(magnitude: f64) -> f64 {
    64.0 * f64::EPSILON * (magnitude + 1.0)
}

/// The search's tolerance: it stops within this distance (mm) of a half-step target.
const SEARCH_TOLERANCE_MM: f64 = 0.000_000_001;

/// Whether a root in closed form gives the clock the search gives. The compressor turns a time
/// into a clock by rounding `(print_time + t − time_offset)·mcu_freq` to the nearest tick;
/// where no rounding boundary (a half tick) lies within the search's possible distance from
/// the root (with a quarter to spare, and the coordinate's rounding), both land on one clock.
/// Where the compressor's last step clock stays put over the range, that is checked with its
/// own conversion at both ends of that window, exactly; elsewhere with a bound on the
/// conversion's floating-point error (which grows with the clock: at 16 MHz after 25 minutes
/// it is 10⁻⁴ tick, more than the search's distance at constant speed). Otherwise the range is
/// searched, as Klipper searches it.
///
/// The search stops at the first guess within [`SEARCH_TOLERANCE_MM`] of the target: in time,
/// that over the stepper's speed there (at 16 MHz and 50 mm/s, 3·10⁻⁴ tick). Its other stop, a
/// bracket narrower than 1 ns whose last guess is further off, needs a crawl: secant guesses
/// inside so narrow a bracket land on the root to rounding, so at any real speed a guess is
/// accepted by distance first (none of the 10 million steps of oracle cases f, i, n and p,
/// all searched, stopped by the bracket) — on a smooth coordinate. A shaped coordinate has
/// kinks inside a range, where the search may crawl: [`near_kinks`] checks those steps against
/// the bracket's 1 ns. Even at constant speed the distance is not just
/// rounding: a step whose search took two close guesses hands the next one a secant through
/// them, whose rounding is amplified by the step interval over their gap, and that guess may
/// be accepted anywhere inside the tolerance. Once a step was taken at its first guess,
/// though, that cannot happen again at constant speed: the bound is then
/// [`cruise_tolerance`], which [`TickCheck::last_uncertain`] checks the roots against.
#[derive(Clone, Copy, Debug)]
struct TickCheck {
    /// `(print_time − time_offset)·mcu_freq + ½`: a root's clock is the integer part of
    /// `base + t·mcu_freq`.
    base: f64,
    mcu_freq: f64,
    /// The search's distance from the root (and a quarter), in ticks, times the speed (in
    /// units of the segment's distance per second) at the root.
    window: f64,
    /// The conversion's floating-point error, in ticks.
    rounding: f64,
    /// `window` is `1.25·(tolerance + rounding_mm)·mcu_freq/|r|` for the search's tolerance;
    /// these give it for another ([`TickCheck::last_uncertain`]).
    rounding_mm: f64,
    per_mm: f64,
    /// Where the compressor's last step clock stays put over the range's steps: its
    /// [`StepCompress::append_offset`], with which the check converts times to clocks with
    /// the compressor's own operations ([`TickCheck::certain`]).
    append_offset: Option<f64>,
}

impl TickCheck {
    /// For the roots of `range` (shifted by `time_shift`) of a coordinate `lin`, whose values
    /// there are at most `magnitude` (mm); `None` where the clock is out of reach of the check.
    /// `steps` (in direction `dir`) are the range's, when they are all of them (not a piece's
    /// of a shaped range): where the compressor keeps its last step clock over them, roots
    /// are converted to clocks as it converts them.
    #[inline(always)]
    fn new(
        sc: &StepCompress,
        range: &SearchRange,
        lin: Linear,
        time_shift: f64,
        magnitude: f64,
        steps: Option<(bool, usize)>,
    ) -> Option<Self> {
        let mcu_freq = sc.mcu_freq();
        let base = sc.clock_position(range.print_time) + 0.5;
        let seconds = time_shift.abs() + range.end.abs();
        let span = base.abs() + seconds * mcu_freq.abs();
        // Clocks from 2⁵¹ ticks on cannot be split into whole and fraction (`margin`).
        if span.is_nan() || span >= 2_251_799_813_685_248.0 {
            return None;
        }
        let rounding_mm = evaluation_rounding_mm(magnitude);
        // Every step of the range short of a far step (with a millisecond to spare beyond its
        // end), the pending one before them too.
        let append_offset = steps
            .filter(|&(dir, steps)| sc.keeps_last_step_for(dir, steps))
            .map(|_| sc.append_offset(range.print_time))
            .filter(|&offset| {
                let last = ((range.end + 0.001) + offset) * mcu_freq;
                last < FAR_TICKS
            });
        Some(Self {
            base,
            mcu_freq,
            window: 1.25 * (SEARCH_TOLERANCE_MM + rounding_mm) * mcu_freq / lin.r.abs(),
            rounding: 16.0 * f64::EPSILON * span + 1e-9,
            rounding_mm,
            per_mm: 1.25 * mcu_freq / lin.r.abs(),
            append_offset,
        })
    }

    /// Whether the clock of a step the search takes within `window / speed` ticks of `t` (a
    /// root, at `speed` there, in units of the segment's distance per second) is the root's:
    /// by the distance to the nearest rounding boundary, less the conversion's error
    /// ([`TickCheck::margin`]), or, failing that, with the compressor's own conversion
    /// ([`StepCompress::append_offset`]), exactly: its rounded sum and product are monotone
    /// in the time, so every time between two whose clocks agree has that clock too; the two
    /// ends of the window are those two (their own rounding lies far inside the window's
    /// quarter to spare). (A NaN anywhere counts as uncertain.)
    #[inline(always)]
    fn certain(&self, t: f64, speed: f64, window: f64) -> bool {
        if self.margin(t) * speed > window {
            return true;
        }
        let Some(offset) = self.append_offset else {
            return false;
        };
        let reach = window / (speed * self.mcu_freq);
        let earliest = ((t - reach) + offset) * self.mcu_freq;
        let latest = ((t + reach) + offset) * self.mcu_freq;
        earliest >= 0.0 && latest < FAR_TICKS && whole_ticks(earliest) == whole_ticks(latest)
    }

    /// The window of [`TickCheck::certain`] for a search that lands within `tolerance_mm`
    /// of its targets (`window` is the one for the search's own tolerance).
    fn window_for(&self, tolerance_mm: f64) -> f64 {
        self.per_mm * (tolerance_mm + self.rounding_mm)
    }

    /// One past the last of `roots` whose clock is uncertain ([`TickCheck::certain`] with
    /// `window`, the speed at a root `t` being `speed(t)`); 0 when none is.
    fn last_uncertain(&self, roots: &[f64], window: f64, speed: impl Fn(f64) -> f64) -> usize {
        roots
            .iter()
            .rposition(|&t| !self.certain(t, speed(t), window))
            .map_or(0, |k| k + 1)
    }

    /// How far (ticks) a clock at `t` is from a rounding boundary (an integer of `base +
    /// t·mcu_freq`), less the conversion's error. The clock is certain where this, times the
    /// speed there, exceeds `window`.
    #[inline(always)]
    fn margin(&self, t: f64) -> f64 {
        let ticks = self.base + t * self.mcu_freq;
        let nearest = (ticks + ROUND_TO_INTEGER) - ROUND_TO_INTEGER;
        (ticks - nearest).abs() - self.rounding
    }
}

/// A far step's distance after the last step sent, in ticks ([`CLOCK_DIFF_MAX`]).
const FAR_TICKS: f64 = CLOCK_DIFF_MAX as f64;

/// Appends the roots of targets `0..steps` (`target(k)`, in order) plus `time_shift` to
/// `roots`, each clamped into the range; returns how many lead up to the last one whose clock
/// is uncertain ([`TickCheck`]; 0 when all are certain). The roots are `(target − p)/(r·v)`
/// at constant speed, else [`Linear::time_and_speed_at`]'s; clamped with selects (rounding
/// cannot move a root out of its range by more than an ulp, and NaN cannot occur:
/// [`plan_linear`]'s speed check computed the extreme roots). Straight loops without
/// branches, so that the steps overlap in the processor.
#[inline(always)]
#[expect(
    clippy::too_many_arguments,
    reason = "one inlined step loop, its inputs spelled out"
)]
fn push_roots(
    roots: &mut Roots,
    steps: usize,
    mut target: impl FnMut(f64) -> f64,
    lin: Linear,
    inv_r: f64,
    range: &SearchRange,
    time_shift: f64,
    check: &TickCheck,
) -> usize {
    let (start, end) = (range.start, range.end);
    let clamp = |t: f64| {
        let t = if t > start { t } else { start };
        if t < end { t } else { end }
    };
    let out = roots.extend_by(steps);
    // One past the last uncertain clock (a NaN margin counts as one): a maximum over the
    // steps, with 32-bit indices (a range's steps fit, [`plan_linear`] checked), so that the
    // loops vectorise.
    let mut searched: u32 = 0;
    let uncertain = |certain: bool, k: u32| (k + 1) & u32::from(!certain).wrapping_neg();
    if lin.half_accel == 0.0 {
        let per_mm = inv_r / lin.v;
        for (k, slot) in (0_u32..).zip(out.iter_mut()) {
            let t = clamp((target(f64::from(k)) - lin.p) * per_mm) + time_shift;
            searched = searched.max(uncertain(check.margin(t) * lin.v > check.window, k));
            *slot = t;
        }
    } else {
        for (k, slot) in (0_u32..).zip(out) {
            let (t, speed) = lin.time_and_speed_at(target(f64::from(k)), inv_r);
            let t = clamp(t) + time_shift;
            searched = searched.max(uncertain(check.margin(t) * speed > check.window, k));
            *slot = t;
        }
    }
    searched as usize
}

/// The closed form's step times, in a buffer that keeps its size from range to range: new
/// slots are handed out as they are (their old contents, to be written over), not cleared
/// first, which would write every slot twice.
#[derive(Debug, Default, Clone)]
struct Roots {
    buf: Vec<f64>,
    len: usize,
}

impl Roots {
    fn clear(&mut self) {
        self.len = 0;
    }

    /// `n` more slots at the end, to be written: their contents are left over.
    #[inline(always)]
    fn extend_by(&mut self, n: usize) -> &mut [f64] {
        let from = self.len;
        let to = from.saturating_add(n);
        if self.buf.len() < to {
            self.grow(to);
        }
        self.len = to;
        &mut self.buf[from..to]
    }

    #[cold]
    #[inline(never)]
    fn grow(&mut self, len: usize) {
        self.buf.resize(len, 0.0);
    }
}

impl std::ops::Deref for Roots {
    type Target = [f64];

    #[inline]
    fn deref(&self) -> &[f64] {
        &self.buf[..self.len]
    }
}

/// A piece of a shaped range over which every pulse of every shaped axis reads one trapq entry,
/// so that the stepper coordinate is a quadratic: `c0 + c1·τ + c2·τ²` at `τ` seconds after
/// `t0` (seconds into the range's entry), until `t1`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct ShapedPiece {
    t0: f64,
    t1: f64,
    c0: f64,
    c1: f64,
    c2: f64,
}

/// Most pieces a shaped range is split into for the closed form; beyond, it is searched.
const SHAPED_PIECES_MAX: usize = 64;

/// The entry holding time `u` (seconds from the start of entry `index`) and that entry's start
/// on the same scale, walking as [`crate::shaper::ShaperPulses::shaped_axis`] walks; `None`
/// where the walk would clamp before the oldest entry kept.
fn entry_at(tq: &TrapQ, index: usize, u: f64) -> Option<(usize, f64)> {
    let tail = tq.tail_index();
    let (mut at, mut offset) = (index.min(tail), 0.0);
    if u < 0.0 {
        while u - offset < 0.0 {
            if at <= 1 {
                return None;
            }
            at -= 1;
            offset -= tq.get(at).move_t;
        }
    } else {
        while at < tail && u - offset > tq.get(at).move_t {
            offset += tq.get(at).move_t;
            at += 1;
        }
    }
    Some((at, offset))
}

/// Adds `k·(axis coordinate of entry at)` as a quadratic in `τ`, where `τ = 0` is `w0` seconds
/// into that entry.
fn add_entry(piece: &mut ShapedPiece, m: &TrapMove, axis: usize, k: f64, w0: f64) {
    let (p, r) = (m.start_pos.axis(axis), m.axes_r.axis(axis));
    piece.c0 += k * (p + r * ((m.start_v + m.half_accel * w0) * w0));
    piece.c1 += k * r * (m.start_v + 2.0 * m.half_accel * w0);
    piece.c2 += k * r * m.half_accel;
}

/// Splits `[start, end]` of entry `index` into the pieces where the stepper coordinate
/// `Σ weights[a]·(shaped axis a)` is one quadratic (into `pieces`; `breaks` is scratch).
/// `false` when the closed form does not apply: a pulse reads before the oldest entry (the
/// shaper clamps there), or too many pieces.
fn shaped_pieces(
    shapers: &AxisShapers,
    tq: &TrapQ,
    index: usize,
    weights: [f64; 3],
    (start, end): (f64, f64),
    breaks: &mut Vec<f64>,
    pieces: &mut Vec<ShapedPiece>,
) -> bool {
    breaks.clear();
    pieces.clear();
    // (NaN bounds also end here.)
    if end.partial_cmp(&start) != Some(std::cmp::Ordering::Greater) {
        return false;
    }
    breaks.push(start);
    breaks.push(end);
    for (axis, &weight) in weights.iter().enumerate() {
        let pulses = shapers.axis(axis);
        if weight == 0.0 || pulses.is_empty() {
            continue;
        }
        for &shift in pulses.times() {
            let (Some((first, mut offset)), Some((last, _))) = (
                entry_at(tq, index, start + shift),
                entry_at(tq, index, end + shift),
            ) else {
                return false;
            };
            if last.saturating_sub(first) > SHAPED_PIECES_MAX {
                return false;
            }
            for at in first..last {
                offset += tq.get(at).move_t;
                let t = offset - shift;
                if t > start && t < end {
                    breaks.push(t);
                }
            }
        }
    }
    if breaks.len() > SHAPED_PIECES_MAX + 1 {
        return false;
    }
    breaks.sort_by(f64::total_cmp);
    breaks.dedup();
    let entry = tq.get(index.min(tq.tail_index()));
    for pair in breaks.windows(2) {
        let (t0, t1) = (pair[0], pair[1]);
        let middle = 0.5 * (t0 + t1);
        let mut piece = ShapedPiece {
            t0,
            t1,
            ..ShapedPiece::default()
        };
        for (axis, &weight) in weights.iter().enumerate() {
            if weight == 0.0 {
                continue;
            }
            let pulses = shapers.axis(axis);
            if pulses.is_empty() {
                add_entry(&mut piece, entry, axis, weight, t0);
                continue;
            }
            for (&shift, &amp) in pulses.times().iter().zip(pulses.amplitudes()) {
                let Some((at, offset)) = entry_at(tq, index, middle + shift) else {
                    return false;
                };
                add_entry(
                    &mut piece,
                    tq.get(at),
                    axis,
                    weight * amp,
                    t0 + shift - offset,
                );
            }
        }
        pieces.push(piece);
    }
    true
}

/// The steps of a shaped range from its [`ShapedPiece`]s, each in closed form by
/// [`linear_steps`], where that gives the search's steps: the coordinate moves one way at
/// [`ANALYTIC_MIN_SPEED`] or faster over the whole range, the way the last step went (no
/// reversal, which only the search itself reproduces). Then each piece is a monotone
/// quadratic, a step lies at the exact crossing of its half-step target wherever the search
/// runs, and a piece that [`linear_steps`] hands to the search is searched alone. Otherwise
/// the whole range is searched, as Klipper does.
fn shaped_steps(
    commanded_pos: &mut f64,
    sc: &mut StepCompress,
    range: &SearchRange,
    pieces: &[ShapedPiece],
    roots: &mut Roots,
    plans: &mut Vec<LinearPlan>,
    position: impl Fn(f64) -> f64,
) -> Result<(), StepCompressError> {
    let dir = pieces.first().is_some_and(|p| p.c1 > 0.0);
    let sign = if dir { 1.0 } else { -1.0 };
    let fast = |v: f64| sign * v >= ANALYTIC_MIN_SPEED;
    let monotone = pieces
        .iter()
        .all(|p| fast(p.c1) && fast(p.c1 + 2.0 * p.c2 * (p.t1 - p.t0)));
    if !monotone || sc.step_dir() != dir {
        return search_steps(commanded_pos, sc, range, position);
    }
    // Every piece planned before any step is taken: the search, where one needs it, runs over
    // the whole range, as Klipper's does.
    roots.clear();
    plans.clear();
    let mut planned_pos = *commanded_pos;
    let mut searched = 0;
    for piece in pieces {
        let sub = SearchRange {
            step_dist: range.step_dist,
            print_time: range.print_time,
            start: 0.0,
            end: piece.t1 - piece.t0,
        };
        let lin = Linear::new(piece.c0, 1.0, piece.c1, piece.c2);
        let before = roots.len();
        let Some(plan) = plan_linear(planned_pos, sc, &sub, lin, Some(piece.t0), roots, &|tau| {
            position(piece.t0 + tau)
        }) else {
            return search_steps(commanded_pos, sc, range, position);
        };
        // (No reversal inside: the direction is the last step's throughout, so no piece
        // commits first.)
        // The search runs over the whole range: up to the last uncertain step of any piece.
        if plan.searched > 0 {
            searched = before + plan.searched;
        }
        planned_pos = plan.commanded_pos;
        plans.push(plan);
    }
    let searched = searched.max(near_kinks(pieces, range.start, roots, plans));
    if searched >= roots.len() && searched > 0 {
        return search_steps(commanded_pos, sc, range, position);
    }
    if searched > 0 && search_prefix(commanded_pos, sc, range, &position, searched, None)?.is_none()
    {
        return Ok(());
    }
    let mut taken = 0;
    for plan in plans.iter() {
        let (from, to) = (taken, taken + plan.steps);
        taken = to;
        if to < searched {
            // Taken by the search.
            continue;
        }
        let by_search = searched.saturating_sub(from);
        plan.take(
            commanded_pos,
            sc,
            range.print_time,
            &roots[from..to],
            by_search,
        )?;
    }
    Ok(())
}

/// How many of a shaped range's `roots` (planned piece by piece, `plans`) lead up to the last
/// whose clock is uncertain for a search that may cross a kink of the shaped coordinate (0
/// when none is).
///
/// Where a piece of `pieces` ends inside the range the shaped speed jumps: the coordinate has
/// a kink there. A secant search whose bracket holds a kink may close in on the root from one
/// side only, step by step, and stop where its bracket is narrower than 1 ns rather than
/// within 1e-9 mm of the target (at 520 MHz a step 305 ns past a kink was taken 0.5 tick
/// early so). Its step is then only known to lie within 1 ns of the root (the bracket holds
/// both). So a step whose search may see a kink — one between the step before it (the
/// range's start for the first) and twice as far past its root (the search's window reaches
/// half an interval past it, wider when it has to double) — is certain only where no clock
/// boundary lies within 1 ns of its root and a quarter to spare.
#[expect(
    clippy::neg_cmp_op_on_partial_ord,
    reason = "a NaN margin counts as uncertain"
)]
fn near_kinks(pieces: &[ShapedPiece], start: f64, roots: &[f64], plans: &[LinearPlan]) -> usize {
    let kinks = pieces.iter().skip(1).map(|p| p.t0);
    let mut kinks = kinks.peekable();
    let mut previous = start;
    let mut uncertain = 0;
    let mut index = 0;
    for plan in plans {
        let Some(check) = plan.check else {
            // (No check: a plan without steps; any steps it had would count as uncertain.)
            if plan.steps > 0 {
                index += plan.steps;
                uncertain = index;
            }
            continue;
        };
        let window_ticks = 1.25 * BRACKET_STOP_S * check.mcu_freq;
        for &t in &roots[index..index + plan.steps] {
            while kinks.next_if(|&kink| kink <= previous).is_some() {}
            let reach = t + 2.0 * (t - previous);
            if kinks.peek().is_some_and(|&kink| kink <= reach) && !(check.margin(t) > window_ticks)
            {
                uncertain = index + 1;
            }
            previous = t;
            index += 1;
        }
    }
    uncertain
}

/// The search's other stop ([`Search`]): a bracket narrower than this (seconds).
const BRACKET_STOP_S: f64 = 0.000_000_001;

/// The half-step search's targets in closed form: `x₀`, `step_on(x₀)`, … where `step_on`
/// adds (or subtracts) half a step twice, rounding each time, as Klipper does. Within one
/// binade every value is a multiple of the same ulp and the rounding of `x ± half` depends only
/// on whether `x`/ulp is odd or even, so once two consecutive `step_on`s have added the same
/// increment `D` — one from each parity, or from the only parity there is — every later one
/// does too, and the `k`-th target is exactly `x₀ + k·D` (a product and sum that are exact:
/// their results are multiples of the ulp inside the binade). Without the chain of `2k`
/// dependent additions, the roots of a range no longer wait on one another.
#[derive(Clone, Copy, Debug)]
struct Targets {
    first: f64,
    increment: f64,
}

impl Targets {
    /// The targets from `first` on, in direction `dir`, up to about `bound`; `None` unless
    /// every value the chain would take there (with a step to spare either side) lies in
    /// one binade of normal numbers, and the increments agree.
    #[inline(always)]
    fn new(first: f64, half: f64, dir: bool, bound: f64) -> Option<Self> {
        let second = step_on(first, half, dir);
        let increment = second - first;
        if step_on(second, half, dir) - second != increment || increment == 0.0 {
            return None;
        }
        let spare = 2.0 * increment.abs();
        let (low, high) = (first.min(bound) - spare, first.max(bound) + spare);
        // Sign and exponent bits: equal at both ends means one binade for everything
        // between; exponent 0 (zero, subnormals) and 0x7ff (infinities, NaN) are out.
        let binade = |x: f64| x.to_bits() >> 52;
        let exponent = binade(low) & 0x7ff;
        (binade(low) == binade(high) && exponent != 0 && exponent != 0x7ff)
            .then_some(Self { first, increment })
    }

    /// The `k`-th target (0 is the first), bit for bit the chain's.
    #[inline(always)]
    fn at(&self, k: usize) -> f64 {
        self.at_index(k as f64)
    }

    /// [`Targets::at`] for `k` given as a float (an integer, below 2⁵³, so exact).
    #[inline(always)]
    fn at_index(&self, k: f64) -> f64 {
        self.first + k * self.increment
    }

    /// How many targets lie more than [`ANALYTIC_MARGIN`] inside the range (`ahead` gives a
    /// target's distance before the range's end, decreasing by a step per target), how far
    /// the next one is, and the last one reached (the first when none is).
    #[inline(always)]
    #[expect(
        clippy::neg_cmp_op_on_partial_ord,
        reason = "a NaN distance counts as not reached"
    )]
    fn reached(&self, ahead: impl Fn(f64) -> f64) -> (usize, f64, f64) {
        let first_ahead = ahead(self.first);
        let mut steps = if first_ahead > ANALYTIC_MARGIN {
            // The estimate (the ceiling, but for an integral quotient one more: no libm call
            // without SSE4.1), then exact corrections (a few ulps at most, or that one).
            (((first_ahead - ANALYTIC_MARGIN) / self.increment.abs()) as usize).saturating_add(1)
        } else {
            0
        };
        while steps > 0 && !(ahead(self.at(steps - 1)) > ANALYTIC_MARGIN) {
            steps -= 1;
        }
        while ahead(self.at(steps)) > ANALYTIC_MARGIN {
            steps += 1;
        }
        let last = self.at(steps.saturating_sub(1));
        (steps, ahead(self.at(steps)), last)
    }
}

/// One segment's search interval: `[start, end]` seconds into a segment that begins at
/// `print_time`, for a stepper of `step_dist` mm per step.
#[derive(Clone, Copy, Debug)]
struct SearchRange {
    step_dist: f64,
    print_time: f64,
    start: f64,
    end: f64,
}

/// The extruder's steps over `range` of entry `index` with pressure advance: Klipper's search,
/// its positions from a [`SmoothingWindow`] prepared for the range. Out of line: the step
/// loops of the other kinematics are compiled apart from it.
#[inline(never)]
fn pressure_advance_steps(
    e: &ExtruderKin,
    window: &mut SmoothingWindow,
    commanded_pos: &mut f64,
    sc: &mut StepCompress,
    tq: &TrapQ,
    index: usize,
    range: &SearchRange,
) -> Result<(), StepCompressError> {
    e.prepare_window(tq, index, range.start, range.end, window);
    let window = &*window;
    search_steps(commanded_pos, sc, range, |t| {
        e.calc_position_in(tq, window, index, t)
    })
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

/// The target one full step on from `target` in direction `dir`: `target ± half ± half`, two
/// roundings as in Klipper. Adding a full step instead rounds once, and over millions of steps
/// without a position reset (the extruder) the targets drift from Klipper's by ~1e-7 mm,
/// enough to move a step at a near-standstill by tens of microseconds, or to take or skip a
/// back-and-forth step pair where the position barely crosses a target.
#[inline(always)]
fn step_on(target: f64, half: f64, dir: bool) -> f64 {
    if dir {
        target + half + half
    } else {
        target - half - half
    }
}

/// The state of one half-step search (Klipper's `itersolve_gen_steps_range`), advanced one
/// guess at a time by [`Search::iterate`].
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
    /// Steps taken so far.
    steps: usize,
    /// Guesses since the last step (or the start).
    guesses: u32,
    /// The last step was taken at the first guess after a step before it: the last two
    /// points are two steps ([`cruise_tolerance`]).
    at_first_guess: bool,
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
            steps: 0,
            guesses: 0,
            at_first_guess: false,
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

    /// The target one full step on in the current direction ([`step_on`]).
    #[inline(always)]
    fn step_on(&self) -> f64 {
        step_on(self.target, self.half_step, self.sdir)
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
        self.guesses += 1;
        let dist = self.cur_p - self.target;
        if dist.abs() > SEARCH_TOLERANCE_MM {
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
            if !self.have_bracket || self.high_time - self.low_time > BRACKET_STOP_S {
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
        self.at_first_guess = self.steps > 0 && self.guesses == 1;
        self.guesses = 0;
        self.steps += 1;
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// MCU clock of the comparisons: 10 ns ticks.
    const FREQ: f64 = 1e8;

    /// One move of a random path: a trapezoid from `start_v` (a share of the cruise speed) up
    /// to `v` and down to rest.
    #[derive(Clone, Debug)]
    struct PathMove {
        dx: f64,
        dy: f64,
        v: f64,
        accel: f64,
        start_share: f64,
        /// Carried as the extruder carries a retraction: the direction reversed, the speeds
        /// and acceleration negative (the same motion).
        signed: bool,
    }

    /// The moves as trapq segments from (100, 100), one after the other; the end print time.
    /// For an extruder's trapq (`filament`), x is the filament position: every segment has
    /// `axes_r` (1, 0, 0) and a move's sign is carried by its speeds, as Klipper's extruder
    /// queues a retraction; the move's length is its `dx`.
    fn trapq_of(moves: &[PathMove], filament: bool) -> (TrapQ, f64) {
        let mut q = TrapQ::new();
        let mut t = 0.1;
        let mut pos = Coord::new(100.0, 100.0, 0.0);
        for m in moves {
            let len = if filament {
                m.dx.abs()
            } else {
                m.dx.hypot(m.dy)
            };
            if len < 1e-9 {
                t += 0.01;
                continue;
            }
            let r = Coord::new(m.dx / len, m.dy / len, 0.0);
            let a = m.accel;
            let start_v = (m.start_share * m.v).min((2.0 * a * len).sqrt() * 0.999);
            let mut cruise_v = m.v.max(start_v);
            let ramps = |cv: f64| (cv * cv - start_v * start_v) / (2.0 * a) + cv * cv / (2.0 * a);
            if ramps(cruise_v) > len {
                cruise_v = ((2.0 * a * len + start_v * start_v) / 2.0)
                    .sqrt()
                    .max(start_v);
            }
            let accel_t = (cruise_v - start_v) / a;
            let decel_t = cruise_v / a;
            let cruise_t = ((len - ramps(cruise_v)) / cruise_v).max(0.0);
            if filament {
                let x = Coord::new(1.0, 0.0, 0.0);
                let sign = m.dx.signum();
                let (v0, v1, a) = (sign * start_v, sign * cruise_v, sign * a);
                q.append(t, accel_t, cruise_t, decel_t, pos, x, v0, v1, a);
            } else if m.signed {
                let back = Coord::new(-r.x, -r.y, 0.0);
                q.append(
                    t, accel_t, cruise_t, decel_t, pos, back, -start_v, -cruise_v, -a,
                );
            } else {
                q.append(t, accel_t, cruise_t, decel_t, pos, r, start_v, cruise_v, a);
            }
            t += accel_t + cruise_t + decel_t;
            pos = if filament {
                Coord::new(pos.x + m.dx, pos.y, 0.0)
            } else {
                Coord::new(pos.x + r.x * len, pos.y + r.y * len, 0.0)
            };
        }
        q.check_sentinels();
        (q, t)
    }

    /// How a test run takes its steps.
    #[derive(Clone, Copy, Debug)]
    enum Solve {
        /// Every step searched.
        Search,
        /// The closed form where it applies, its loops run with the instruction set.
        ClosedForm(Isa),
    }

    /// A stepper's steps over the path, generated in flushes at `flushes` (then to the end),
    /// as `solve` says; and its final commanded position.
    fn run(
        q: &TrapQ,
        end: f64,
        kin: &Kinematics,
        step_dist: f64,
        flushes: &[f64],
        solve: Solve,
    ) -> (Vec<(bool, u64)>, f64) {
        run_shaped(q, end, kin, None, step_dist, flushes, solve, FREQ)
    }

    /// [`run`] with an input shaper in front of the kinematics, at an MCU frequency.
    #[expect(
        clippy::too_many_arguments,
        reason = "a test helper: each case's parameters"
    )]
    fn run_shaped(
        q: &TrapQ,
        end: f64,
        kin: &Kinematics,
        shaper: Option<AxisShapers>,
        step_dist: f64,
        flushes: &[f64],
        solve: Solve,
        mcu_freq: f64,
    ) -> (Vec<(bool, u64)>, f64) {
        let mut solver = StepperSolver::new(kin.clone(), step_dist);
        solver.set_shaper(shaper);
        let mut sc = StepCompress::new(0, false);
        match solve {
            Solve::Search => solver.closed_form = false,
            Solve::ClosedForm(isa) => {
                solver.set_isa(isa);
                sc.set_isa(isa);
            }
        }
        solver.set_position(Coord::new(100.0, 100.0, 0.0));
        sc.set_time(0.0, mcu_freq);
        let mut times: Vec<f64> = flushes.iter().map(|f| f * end).collect();
        times.sort_by(f64::total_cmp);
        times.push(end + 1.0);
        for t in times {
            solver.generate_steps(q, &mut sc, t).expect("steps");
        }
        sc.flush(u64::MAX).expect("flush");
        let mut messages = Vec::new();
        sc.drain_messages(&mut messages);
        (
            crate::stepcompress::expand_steps(&messages),
            solver.commanded_pos(),
        )
    }

    fn path_move() -> impl Strategy<Value = PathMove> {
        let length = prop_oneof![
            -0.05..0.05_f64,
            -5.0..5.0_f64,
            Just(0.0125),
            Just(-0.00625),
            Just(0.0),
            // Whole steps of 0.0125 mm (and of 0.0025 mm): moves that end on a step's
            // position, where the last step's commit is a near thing.
            (-40_i32..=40).prop_map(|k| f64::from(k) * 0.0125),
        ];
        (
            length.clone(),
            length,
            0.5..300.0_f64,
            // Up to violent accelerations, so that reversals come within the step+dir+step
            // filter's 750 µs and commits decide which steps survive.
            prop_oneof![10.0..5000.0_f64, 5000.0..500_000.0_f64],
            prop_oneof![Just(0.0), 0.0..1.0_f64, Just(1.0)],
            any::<bool>(),
        )
            .prop_map(|(dx, dy, v, accel, start_share, signed)| PathMove {
                dx,
                dy,
                v,
                accel,
                start_share,
                signed,
            })
    }

    /// The kinematics whose shaped position reads single axes (Cartesian, CoreXY). Its own
    /// list, not [`kinematics`]'s: the saved regression seeds of
    /// `shaped_position_is_the_shaped_coord_one` replay this one.
    fn shaped_axis_kinematics() -> impl Strategy<Value = Kinematics> {
        prop_oneof![
            Just(Kinematics::Cartesian { axis: 2 }),
            Just(Kinematics::Cartesian { axis: 0 }),
            Just(Kinematics::Cartesian { axis: 1 }),
            Just(Kinematics::CoreXY { plus: false }),
            Just(Kinematics::CoreXY { plus: true }),
        ]
    }

    fn kinematics() -> impl Strategy<Value = Kinematics> {
        prop_oneof![
            Just(Kinematics::Cartesian { axis: 0 }),
            Just(Kinematics::Cartesian { axis: 1 }),
            Just(Kinematics::CoreXY { plus: true }),
            Just(Kinematics::CoreXY { plus: false }),
            Just(Kinematics::Extruder(crate::extruder::ExtruderKin::new())),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

        /// The closed form takes exactly the search's steps (count, directions, the reversals'
        /// step+dir+step cancellations, the final commanded position) at the same clocks, at
        /// MCU frequencies from 16 to 520 MHz.
        #[test]
        fn closed_form_takes_the_searched_steps(
            moves in prop::collection::vec(path_move(), 1..12),
            kin in kinematics(),
            step_dist in prop_oneof![
                Just(0.0125), Just(0.0025), Just(0.010_468_75), 0.001..0.05_f64
            ],
            flushes in prop::collection::vec(0.0..1.0_f64, 0..4),
            mcu_freq in mcu_freq(),
        ) {
            let (q, end) = trapq_of(&moves, matches!(kin, Kinematics::Extruder(_)));
            let run = |solve| {
                run_shaped(&q, end, &kin, None, step_dist, &flushes, solve, mcu_freq)
            };
            same_steps_every_way(run)?;
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

        /// [`cruise_tolerance`] holds: on a segment at constant speed (any motor the closed
        /// form solves), once the search took a step at its first guess, it takes every later
        /// one at its first guess too, within that tolerance of its target — wherever in a
        /// step the range starts, at speeds from a crawl to 1 m/s, far from the origin.
        #[test]
        fn cruise_search_lands_within_its_tolerance(
            x in -400.0..400.0_f64,
            y in -400.0..400.0_f64,
            angle in 0.0..std::f64::consts::TAU,
            v in prop_oneof![0.1..5.0_f64, 5.0..1000.0_f64],
            duration in 0.001..20.0_f64,
            start_share in 0.0..1.0_f64,
            behind in 0.0..1.0_f64,
            step_dist in prop_oneof![Just(0.0125), Just(0.0025), 0.0005..0.05_f64],
            motor in 0..4_u8,
        ) {
            // (At most a few thousand steps.)
            let duration = duration.min(4000.0 * step_dist / v);
            let mut q = TrapQ::new();
            let r = Coord::new(angle.cos(), angle.sin(), 0.0);
            q.append(1.0, 0.0, duration, 0.0, Coord::new(x, y, 0.0), r, v, v, 1000.0);
            q.check_sentinels();
            let index = (0..=q.tail_index())
                .find(|&i| q.get(i).print_time == 1.0)
                .expect("the cruise");
            let m = *q.get(index);
            let range = SearchRange {
                step_dist,
                print_time: m.print_time,
                start: m.move_t * start_share,
                end: m.move_t,
            };
            // The motors' coordinates as `gen_steps_range` gives them.
            let (p, r) = (m.start_pos, m.axes_r);
            let distance = m.start_v.abs() * range.end.abs();
            let exact = Linear { p: p.x, r: r.x, v: m.start_v, half_accel: m.half_accel };
            let (lin, terms, position): (Linear, f64, Box<dyn Fn(f64) -> f64>) = match motor {
                0 => (
                    Linear::new(exact.p, exact.r, exact.v, exact.half_accel),
                    exact.p.abs() + distance,
                    Box::new(move |t| exact.at(t)),
                ),
                1 => (
                    Linear::new(p.x + p.y, r.x + r.y, m.start_v, m.half_accel),
                    p.x.abs() + p.y.abs() + 2.0 * distance,
                    Box::new(move |t| {
                        let d = m.distance(t);
                        (p.x + r.x * d) + (p.y + r.y * d)
                    }),
                ),
                2 => (
                    Linear::new(p.x - p.y, r.x - r.y, m.start_v, m.half_accel),
                    p.x.abs() + p.y.abs() + 2.0 * distance,
                    Box::new(move |t| {
                        let d = m.distance(t);
                        (p.x + r.x * d) - (p.y + r.y * d)
                    }),
                ),
                // The extruder's filament coordinate.
                _ => (
                    Linear::new(p.x, 1.0, m.start_v, m.half_accel),
                    p.x.abs() + distance,
                    Box::new(move |t| p.x + m.distance(t)),
                ),
            };
            let Some(tolerance) = cruise_tolerance(lin, terms, &range) else {
                return Ok(());
            };
            // The last step up to a step behind the range's start.
            let here = position(range.start);
            let dir = position(range.end) > here;
            let commanded = if dir {
                here - behind * step_dist
            } else {
                here + behind * step_dist
            };
            let mut sc = StepCompress::new(0, false);
            sc.set_time(0.0, FREQ);
            let mut search = Search::new(commanded, dir, &range);
            let mut error = None;
            loop {
                let (target, steps, settled) = (search.target, search.steps, search.at_first_guess);
                match search.iterate(&position, &mut sc, &mut error) {
                    Progress::Searching => {}
                    Progress::RangeDone => break,
                    Progress::Failed => prop_assert!(false, "{error:?}"),
                }
                if search.steps > steps && settled {
                    prop_assert!(search.at_first_guess, "step {steps}: not at its first guess");
                    let off = (search.cur_p - target).abs();
                    prop_assert!(
                        off <= tolerance,
                        "step {steps}: {off:e} mm off, tolerance {tolerance:e}"
                    );
                }
            }
        }
    }

    /// A run's steps searched, and in closed form with each instruction set this processor
    /// runs ([`Isa::available`], the widest first): all the same (count, directions, clocks,
    /// and the final commanded position to the bit).
    fn same_steps_every_way(
        run: impl Fn(Solve) -> (Vec<(bool, u64)>, f64),
    ) -> Result<(), TestCaseError> {
        let (searched, searched_pos) = run(Solve::Search);
        for isa in Isa::available().into_iter().rev() {
            let (solved, solved_pos) = run(Solve::ClosedForm(isa));
            prop_assert_eq!(first_difference(&searched, &solved), None, "{}", isa.name());
            prop_assert_eq!(
                searched_pos.to_bits(),
                solved_pos.to_bits(),
                "{}",
                isa.name()
            );
        }
        Ok(())
    }

    /// Moves of whole steps that stop on a step's position and go straight back: whether the
    /// last step was committed at the end (the coordinate got to its position, to the last bit
    /// of the search's evaluation) decides whether the way back cancels it (step+dir+step), and
    /// the closed form takes those ends where the evaluation at the end settles it.
    #[test]
    fn whole_step_moves_commit_their_last_step_as_the_search_does() {
        for steps in 1..=40_i32 {
            for (step_dist, accel) in [(0.0125, 200_000.0), (0.0025, 60_000.0), (0.0125, 3_000.0)] {
                let forth = f64::from(steps) * step_dist;
                let path = |dx: f64| PathMove {
                    dx,
                    dy: 0.0,
                    v: 80.0,
                    accel,
                    start_share: 0.0,
                    signed: false,
                };
                let (q, end) = trapq_of(&[path(forth), path(-forth), path(forth)], false);
                let kin = Kinematics::Cartesian { axis: 0 };
                let run = |solve| run(&q, end, &kin, step_dist, &[], solve);
                let result = same_steps_every_way(run);
                assert!(
                    result.is_ok(),
                    "{steps} steps of {step_dist} mm: {result:?}"
                );
            }
        }
    }

    /// Where two step lists first differ: the index, and each list's step there (if any).
    type Difference = (usize, Option<(bool, u64)>, Option<(bool, u64)>);

    /// The first step where two step lists differ, if any.
    fn first_difference(a: &[(bool, u64)], b: &[(bool, u64)]) -> Option<Difference> {
        (0..a.len().max(b.len()))
            .map(|i| (i, a.get(i).copied(), b.get(i).copied()))
            .find(|(_, x, y)| x != y)
    }

    /// MCU clocks: AVR (16 MHz), the test's 100 MHz, STM32F4 (180 MHz), STM32H7 (520 MHz).
    fn mcu_freq() -> impl Strategy<Value = f64> {
        prop_oneof![Just(16e6), Just(FREQ), Just(180e6), Just(520e6)]
    }

    fn shaper_pulses() -> impl Strategy<Value = crate::shaper::ShaperPulses> {
        use crate::shaper::{ShaperPulses, ShaperSpec, ShaperType};
        prop_oneof![
            1 => Just(ShaperPulses::none()),
            4 => (
                prop::sample::select(ShaperType::ALL.to_vec()),
                prop_oneof![20.0..120.0_f64, Just(40.0), Just(57.3)],
                prop_oneof![Just(0.1), 0.0..0.3_f64],
            )
                .prop_map(|(kind, freq, damping)| {
                    ShaperPulses::from_spec(&ShaperSpec::plain(kind), freq, damping)
                        .expect("a valid shaper")
                }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

        /// With input shaping, the closed form over the pieces of a range takes exactly the
        /// search's steps too: the same count and directions (reversals, where the shaped
        /// motion turns, are left to the search), at the same clocks.
        #[test]
        fn shaped_closed_form_takes_the_searched_steps(
            moves in prop::collection::vec(path_move(), 1..12),
            kin in prop_oneof![
                Just(Kinematics::Cartesian { axis: 0 }),
                Just(Kinematics::Cartesian { axis: 1 }),
                Just(Kinematics::CoreXY { plus: true }),
                Just(Kinematics::CoreXY { plus: false }),
            ],
            x in shaper_pulses(),
            y in shaper_pulses(),
            step_dist in prop_oneof![Just(0.0125), Just(0.0025), 0.001..0.05_f64],
            flushes in prop::collection::vec(0.0..1.0_f64, 0..4),
            mcu_freq in mcu_freq(),
        ) {
            let shaper = AxisShapers { x, y, z: crate::shaper::ShaperPulses::none() };
            let (q, end) = trapq_of(&moves, false);
            let run = |solve| {
                run_shaped(&q, end, &kin, Some(shaper), step_dist, &flushes, solve, mcu_freq)
            };
            same_steps_every_way(run)?;
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// The shaped stepper coordinate from the axes a stepper reads is the one from the
        /// whole shaped position, to the bit (the searches' guesses depend on it).
        #[test]
        fn shaped_position_is_the_shaped_coord_one(
            moves in prop::collection::vec(path_move(), 1..12),
            kin in shaped_axis_kinematics(),
            x in shaper_pulses(),
            y in shaper_pulses(),
            z in shaper_pulses(),
            at in prop::collection::vec((0.0..1.0_f64, 0.0..1.0_f64), 1..20),
        ) {
            let shapers = AxisShapers { x, y, z };
            let (q, _) = trapq_of(&moves, false);
            let active = kin.active_axes();
            for (which, when) in at {
                let index = 1 + ((q.tail_index() - 1) as f64 * which) as usize;
                let t = q.get(index).move_t * when;
                let whole = kin.position_from_coord(shapers.shaped_coord(&q, index, t, active));
                let read = shaped_position(&kin, &shapers, &Default::default(), &q, index, t, active);
                prop_assert_eq!(read.to_bits(), whole.to_bits(), "entry {} at {}", index, t);
            }
        }

        /// A search's shaped position from windows prepared for its range is the one from
        /// the trapq (empty windows) to the bit, at times inside the range (and, passed on, outside
        /// it), whichever entry, range and trains: walks clamped at the queue's start and
        /// stopped at its tail included.
        #[test]
        fn windowed_shaped_position_is_shaped_position(
            moves in prop::collection::vec(path_move(), 1..12),
            kin in shaped_axis_kinematics(),
            x in shaper_pulses(),
            y in shaper_pulses(),
            z in shaper_pulses(),
            which in 0.0..1.0_f64,
            range in (0.0..1.0_f64, 0.0..1.0_f64),
            probes in prop::collection::vec(-0.2..1.2_f64, 1..16),
        ) {
            let shapers = AxisShapers { x, y, z };
            let (mut q, _) = trapq_of(&moves, false);
            // (The null move up to the first segment flushed, as step generation does: walks
            // back then clamp on a moving entry.)
            q.finalize_moves(q.get(1).end_time(), 0.0);
            let active = kin.active_axes();
            let index = 1 + ((q.tail_index() - 1) as f64 * which) as usize;
            let move_t = q.get(index).move_t;
            let (a, b) = (range.0.min(range.1) * move_t, range.0.max(range.1) * move_t);
            let mut windows: [AxisWindow; 2] = Default::default();
            prepare_axis_windows(&kin, &shapers, &q, index, (a, b), &mut windows);
            let times = [a, b, 0.0, move_t].into_iter().chain(probes.iter().map(|p| a + p * (b - a)));
            for t in times {
                let want = shaped_position(&kin, &shapers, &Default::default(), &q, index, t, active);
                let got = shaped_position(&kin, &shapers, &windows, &q, index, t, active);
                prop_assert_eq!(got.to_bits(), want.to_bits(), "entry {} at {}", index, t);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// Where the closed form of the targets applies, it is the chain of roundings, bit
        /// for bit, at every step (ties to even included: the half steps of real
        /// rotation distances, and halves that are exact binary fractions).
        #[test]
        fn targets_in_closed_form_are_the_chain(
            first in prop_oneof![-300.0..300.0_f64, 0.0..2.0_f64, 2000.0..5000.0_f64],
            half in prop_oneof![
                Just(0.00625), Just(0.00125), Just(0.005_234_375), Just(0.5_f64.powi(9)),
                0.000_1..0.05_f64,
            ],
            dir in any::<bool>(),
            steps in 1_usize..3000,
        ) {
            let step_on = |x: f64| if dir { x + half + half } else { x - half - half };
            let bound = first + if dir { 1.0 } else { -1.0 } * 2.0 * half * steps as f64;
            if let Some(targets) = Targets::new(first, half, dir, bound) {
                let mut chain = first;
                for k in 0..=steps {
                    prop_assert_eq!(targets.at(k).to_bits(), chain.to_bits(), "target {}", k);
                    chain = step_on(chain);
                }
            }
        }
    }

    /// The closed form of the targets holds in a binade and is refused across one.
    #[test]
    fn targets_stay_in_one_binade() {
        assert!(Targets::new(100.0, 0.00625, true, 120.0).is_some());
        assert!(Targets::new(100.0, 0.00625, true, 130.0).is_none());
        assert!(Targets::new(0.3, 0.00125, false, 0.2).is_none());
        assert!(Targets::new(0.0, 0.00125, true, 0.1).is_none());
    }

    /// Cruise at 100 mm/s along X with 80 steps/mm: one step every 125 µs, at the half steps.
    #[test]
    fn closed_form_cruise_steps_are_at_the_half_steps() {
        let mut q = TrapQ::new();
        let x = Coord::new(1.0, 0.0, 0.0);
        q.append(
            1.0,
            0.0,
            0.1,
            0.0,
            Coord::new(100.0, 0.0, 0.0),
            x,
            100.0,
            100.0,
            0.0,
        );
        q.check_sentinels();
        let (steps, pos) = run(
            &q,
            1.1,
            &Kinematics::Cartesian { axis: 0 },
            0.0125,
            &[],
            Solve::ClosedForm(Isa::detect()),
        );
        assert_eq!(steps.len(), 800);
        for (k, (dir, clock)) in steps.iter().enumerate() {
            assert!(*dir);
            let exact = (1.0 + (k as f64 + 0.5) * 0.000_125) * FREQ;
            assert!(
                (*clock as f64 - exact).abs() <= 1.0,
                "step {k}: {clock} vs {exact}"
            );
        }
        assert!((pos - 110.0).abs() < 1e-9, "{pos}");
    }
}
