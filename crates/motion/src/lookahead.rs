//! Moves and the look-ahead queue: junction speeds and trapezoids (Klipper's toolhead `Move` and
//! `LookAheadQueue`).
//!
//! A move knows its limits (max cruise speed², how much v² it may gain over its length, the
//! junction limit with the move before it); the queue plans trapezoids backwards from an assumed
//! stop after the newest move and, in lazy mode, only commits moves that later input can no longer
//! change. Velocities are tracked squared (`_v2`), distances in mm, times in seconds.

/// Budget of move time after which a lazy flush is attempted, seconds.
pub const LOOKAHEAD_FLUSH_TIME: f64 = 0.150;

/// The toolhead limits a move is planned with.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MoveLimits {
    /// max_velocity, mm/s.
    pub max_velocity: f64,
    /// max_accel, mm/s².
    pub max_accel: f64,
    /// Junction deviation from square_corner_velocity, mm.
    pub junction_deviation: f64,
    /// Pseudo-acceleration for minimum_cruise_ratio, mm/s².
    pub mcr_pseudo_accel: f64,
}

impl MoveLimits {
    /// Limits from the printer's settings (Klipper's `_calc_junction_deviation`).
    pub fn new(
        max_velocity: f64,
        max_accel: f64,
        square_corner_velocity: f64,
        minimum_cruise_ratio: f64,
    ) -> Self {
        let scv2 = square_corner_velocity * square_corner_velocity;
        Self {
            max_velocity,
            max_accel,
            junction_deviation: scv2 * (std::f64::consts::SQRT_2 - 1.0) / max_accel,
            mcr_pseudo_accel: max_accel * (1.0 - minimum_cruise_ratio),
        }
    }
}

/// Number of axes a move carries: X, Y, Z, E.
pub const AXES: usize = 4;

/// One requested move and its plan.
#[derive(Clone, Copy, Debug)]
pub struct Move {
    /// Start position (X, Y, Z, E), mm.
    pub start_pos: [f64; AXES],
    /// End position, mm.
    pub end_pos: [f64; AXES],
    /// Acceleration used for the trapezoid, mm/s².
    pub accel: f64,
    /// Junction deviation in force when the move was made, mm.
    pub junction_deviation: f64,
    /// Whether X, Y or Z move (false: extrude-only).
    pub is_kinematic_move: bool,
    /// Per-axis displacement, mm.
    pub axes_d: [f64; AXES],
    /// Length over X/Y/Z (or |E| for extrude-only), mm.
    pub move_d: f64,
    /// Unit direction (E as a ratio to `move_d`).
    pub axes_r: [f64; AXES],
    /// Shortest possible duration at cruise speed, s.
    pub min_move_t: f64,
    /// Highest start speed², mm²/s².
    pub max_start_v2: f64,
    /// Highest cruise speed², mm²/s².
    pub max_cruise_v2: f64,
    /// Largest change of v² over the move, mm²/s².
    pub delta_v2: f64,
    /// Limit on the junction with the next move, mm²/s².
    pub next_junction_v2: f64,
    /// minimum_cruise_ratio bookkeeping: start speed² under the pseudo-acceleration.
    pub max_mcr_start_v2: f64,
    /// minimum_cruise_ratio bookkeeping: v² change under the pseudo-acceleration.
    pub mcr_delta_v2: f64,
    /// Planned start speed, mm/s.
    pub start_v: f64,
    /// Planned cruise speed, mm/s.
    pub cruise_v: f64,
    /// Planned end speed, mm/s.
    pub end_v: f64,
    /// Planned acceleration time, s.
    pub accel_t: f64,
    /// Planned cruise time, s.
    pub cruise_t: f64,
    /// Planned deceleration time, s.
    pub decel_t: f64,
    /// Source line of the G-code that made the move (1-based, 0 = none).
    pub line: u32,
}

/// Acceleration given to extrude-only moves before the extruder limits them.
const EXTRUDE_ONLY_ACCEL: f64 = 99_999_999.9;

impl Move {
    /// Plans nothing yet: the limits of a move from `start` to `end` at `speed` mm/s.
    pub fn new(limits: &MoveLimits, start: [f64; AXES], end: [f64; AXES], speed: f64) -> Self {
        let mut end_pos = end;
        let mut axes_d = [0.0; AXES];
        for i in 0..AXES {
            axes_d[i] = end[i] - start[i];
        }
        let mut move_d =
            (axes_d[0] * axes_d[0] + axes_d[1] * axes_d[1] + axes_d[2] * axes_d[2]).sqrt();
        let mut accel = limits.max_accel;
        let mut velocity = speed.min(limits.max_velocity);
        let mut is_kinematic_move = true;
        let inv_move_d;
        if move_d < 0.000_000_001 {
            // Extrude-only move.
            end_pos[..3].copy_from_slice(&start[..3]);
            axes_d[0] = 0.0;
            axes_d[1] = 0.0;
            axes_d[2] = 0.0;
            move_d = axes_d[3..].iter().fold(0.0_f64, |a, d| a.max(d.abs()));
            inv_move_d = if move_d != 0.0 { 1.0 / move_d } else { 0.0 };
            accel = EXTRUDE_ONLY_ACCEL;
            velocity = speed;
            is_kinematic_move = false;
        } else {
            inv_move_d = 1.0 / move_d;
        }
        let mut axes_r = [0.0; AXES];
        for i in 0..AXES {
            axes_r[i] = axes_d[i] * inv_move_d;
        }
        Self {
            start_pos: start,
            end_pos,
            accel,
            junction_deviation: limits.junction_deviation,
            is_kinematic_move,
            axes_d,
            move_d,
            axes_r,
            min_move_t: move_d / velocity,
            max_start_v2: 0.0,
            max_cruise_v2: velocity * velocity,
            delta_v2: 2.0 * move_d * accel,
            next_junction_v2: 999_999_999.9,
            max_mcr_start_v2: 0.0,
            mcr_delta_v2: 2.0 * move_d * limits.mcr_pseudo_accel,
            start_v: 0.0,
            cruise_v: 0.0,
            end_v: 0.0,
            accel_t: 0.0,
            cruise_t: 0.0,
            decel_t: 0.0,
            line: 0,
        }
    }

    /// Lowers the move's speed and acceleration limits (kinematics and extruder checks).
    pub fn limit_speed(&mut self, speed: f64, accel: f64) {
        let speed2 = speed * speed;
        if speed2 < self.max_cruise_v2 {
            self.max_cruise_v2 = speed2;
            self.min_move_t = self.move_d / speed;
        }
        self.accel = self.accel.min(accel);
        self.delta_v2 = 2.0 * self.move_d * self.accel;
        self.mcr_delta_v2 = self.mcr_delta_v2.min(self.delta_v2);
    }

    /// Lowers the speed at the junction with the next move.
    pub fn limit_next_junction_speed(&mut self, speed: f64) {
        self.next_junction_v2 = self.next_junction_v2.min(speed * speed);
    }

    /// Total planned duration, s.
    pub fn total_t(&self) -> f64 {
        self.accel_t + self.cruise_t + self.decel_t
    }

    /// Junction limits with `prev` ("approximated centripetal velocity"); `extra_v2` are the
    /// limits of extra axes (the extruder's instantaneous corner velocity).
    pub fn calc_junction(&mut self, prev: &Move, extra_v2: f64) {
        if !self.is_kinematic_move || !prev.is_kinematic_move {
            return;
        }
        let mut max_start_v2 = self
            .max_cruise_v2
            .min(prev.max_cruise_v2)
            .min(prev.next_junction_v2)
            .min(prev.max_start_v2 + prev.delta_v2)
            .min(extra_v2);
        let r = &self.axes_r;
        let p = &prev.axes_r;
        let junction_cos_theta = -(r[0] * p[0] + r[1] * p[1] + r[2] * p[2]);
        let sin_theta_d2 = (0.5 * (1.0 - junction_cos_theta)).max(0.0).sqrt();
        let cos_theta_d2 = (0.5 * (1.0 + junction_cos_theta)).max(0.0).sqrt();
        let one_minus_sin_theta_d2 = 1.0 - sin_theta_d2;
        if one_minus_sin_theta_d2 > 0.0 && cos_theta_d2 > 0.0 {
            let r_jd = sin_theta_d2 / one_minus_sin_theta_d2;
            let move_jd_v2 = r_jd * self.junction_deviation * self.accel;
            let pmove_jd_v2 = r_jd * prev.junction_deviation * prev.accel;
            // The approximating circle must touch each move no further than its middle.
            let quarter_tan_theta_d2 = 0.25 * sin_theta_d2 / cos_theta_d2;
            let move_centripetal_v2 = self.delta_v2 * quarter_tan_theta_d2;
            let pmove_centripetal_v2 = prev.delta_v2 * quarter_tan_theta_d2;
            max_start_v2 = max_start_v2
                .min(move_jd_v2)
                .min(pmove_jd_v2)
                .min(move_centripetal_v2)
                .min(pmove_centripetal_v2);
        }
        self.max_start_v2 = max_start_v2;
        self.max_mcr_start_v2 = max_start_v2.min(prev.max_mcr_start_v2 + prev.mcr_delta_v2);
    }

    /// Fixes the trapezoid from the planned start, cruise and end speeds².
    pub fn set_junction(&mut self, start_v2: f64, cruise_v2: f64, end_v2: f64) {
        let half_inv_accel = 0.5 / self.accel;
        let accel_d = (cruise_v2 - start_v2) * half_inv_accel;
        let decel_d = (cruise_v2 - end_v2) * half_inv_accel;
        let cruise_d = self.move_d - accel_d - decel_d;
        self.start_v = start_v2.sqrt();
        self.cruise_v = cruise_v2.sqrt();
        self.end_v = end_v2.sqrt();
        self.accel_t = accel_d / ((self.start_v + self.cruise_v) * 0.5);
        self.cruise_t = cruise_d / self.cruise_v;
        self.decel_t = decel_d / ((self.end_v + self.cruise_v) * 0.5);
    }
}

/// Pending moves awaiting their plan.
#[derive(Clone, Debug)]
pub struct LookAheadQueue {
    queue: Vec<Move>,
    junction_flush: f64,
    /// Per-move scratch for the backward pass (start², cruise² or NaN, end²).
    scratch: Vec<(f64, f64, f64)>,
}

impl Default for LookAheadQueue {
    fn default() -> Self {
        Self::new()
    }
}

impl LookAheadQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self {
            queue: Vec::new(),
            junction_flush: LOOKAHEAD_FLUSH_TIME,
            scratch: Vec::new(),
        }
    }

    /// Drops every pending move.
    pub fn reset(&mut self) {
        self.queue.clear();
        self.junction_flush = LOOKAHEAD_FLUSH_TIME;
    }

    /// Sets the move-time budget before the next lazy flush.
    pub fn set_flush_time(&mut self, flush_time: f64) {
        self.junction_flush = flush_time;
    }

    /// Number of pending moves.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether no move is pending.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The newest pending move.
    pub fn last_mut(&mut self) -> Option<&mut Move> {
        self.queue.last_mut()
    }

    /// The newest pending move.
    pub fn last(&self) -> Option<&Move> {
        self.queue.last()
    }

    /// Queues a move (its junction with the previous one is computed by the caller through
    /// `extra_v2`); returns whether enough move time is queued for a lazy flush.
    pub fn add_move(&mut self, mut m: Move, extra_v2: impl FnOnce(&Move, &Move) -> f64) -> bool {
        let Some(prev) = self.queue.last() else {
            self.queue.push(m);
            return false;
        };
        let ev2 = extra_v2(prev, &m);
        m.calc_junction(prev, ev2);
        self.junction_flush -= m.min_move_t;
        self.queue.push(m);
        self.junction_flush <= 0.0
    }

    /// Plans and removes the moves that are final: all of them (`lazy == false`, a stop is
    /// assumed after the newest), or in lazy mode only those before the last speed peak that
    /// later moves cannot change. The planned moves are appended to `out`.
    pub fn flush(&mut self, lazy: bool, out: &mut Vec<Move>) {
        self.junction_flush = LOOKAHEAD_FLUSH_TIME;
        let mut update_flush_count = lazy;
        let n = self.queue.len();
        let mut flush_count = n;
        self.scratch.clear();
        self.scratch.resize(n, (0.0, f64::NAN, 0.0));
        let mut next_start_v2 = 0.0;
        let mut next_mcr_start_v2 = 0.0;
        let mut peak_cruise_v2 = 0.0;
        let mut pending_cv2_assign = 0usize;
        for i in (0..n).rev() {
            let m = &self.queue[i];
            let reachable_start_v2 = next_start_v2 + m.delta_v2;
            let start_v2 = m.max_start_v2.min(reachable_start_v2);
            let mut cruise_v2 = f64::NAN;
            pending_cv2_assign += 1;
            let reach_mcr_start_v2 = next_mcr_start_v2 + m.mcr_delta_v2;
            let mcr_start_v2 = m.max_mcr_start_v2.min(reach_mcr_start_v2);
            if mcr_start_v2 < reach_mcr_start_v2 {
                // This move can accelerate.
                if mcr_start_v2 + m.mcr_delta_v2 > next_mcr_start_v2 || pending_cv2_assign > 1 {
                    // It can both accelerate and decelerate, or it accelerates all the way into
                    // a move that decelerates all the way: a peak.
                    if update_flush_count && peak_cruise_v2 != 0.0 {
                        flush_count = i + pending_cv2_assign;
                        update_flush_count = false;
                    }
                    peak_cruise_v2 = (mcr_start_v2 + reach_mcr_start_v2) * 0.5;
                }
                cruise_v2 = ((start_v2 + reachable_start_v2) * 0.5)
                    .min(m.max_cruise_v2)
                    .min(peak_cruise_v2);
                pending_cv2_assign = 0;
            }
            self.scratch[i] = (start_v2, cruise_v2, next_start_v2);
            next_start_v2 = start_v2;
            next_mcr_start_v2 = mcr_start_v2;
        }
        if update_flush_count || flush_count == 0 {
            return;
        }
        // Forward pass: moves that cannot accelerate keep the previous cruise speed.
        let mut prev_cruise_v2 = 0.0_f64;
        for i in 0..flush_count {
            let (start_v2, cruise_v2, end_v2) = self.scratch[i];
            let cruise_v2 = if cruise_v2.is_nan() {
                prev_cruise_v2.min(start_v2)
            } else {
                cruise_v2
            };
            self.queue[i].set_junction(start_v2.min(cruise_v2), cruise_v2, end_v2.min(cruise_v2));
            prev_cruise_v2 = cruise_v2;
        }
        // (A bulk copy, and one shift of the moves kept: `drain` into `extend` copies move by
        // move, a `memcpy` call each.)
        out.extend_from_slice(&self.queue[..flush_count]);
        self.queue.drain(..flush_count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> MoveLimits {
        MoveLimits::new(500.0, 3000.0, 5.0, 0.5)
    }

    fn plan(points: &[[f64; 4]], speed: f64) -> Vec<Move> {
        let l = limits();
        let mut q = LookAheadQueue::new();
        for w in points.windows(2) {
            q.add_move(Move::new(&l, w[0], w[1], speed), |_, m| m.max_cruise_v2);
        }
        let mut out = Vec::new();
        q.flush(false, &mut out);
        out
    }

    #[test]
    fn a_single_move_is_a_symmetric_trapezoid() {
        let moves = plan(&[[0.0; 4], [100.0, 0.0, 0.0, 0.0]], 100.0);
        let m = &moves[0];
        // 0→100 mm/s at 3000 mm/s²: 1/30 s and 5/3 mm each way.
        assert!((m.accel_t - 1.0 / 30.0).abs() < 1e-12);
        assert!((m.decel_t - 1.0 / 30.0).abs() < 1e-12);
        assert!((m.cruise_t - (100.0 - 10.0 / 3.0) / 100.0).abs() < 1e-12);
    }

    #[test]
    fn a_square_corner_is_taken_at_square_corner_velocity() {
        let moves = plan(
            &[[0.0; 4], [50.0, 0.0, 0.0, 0.0], [50.0, 50.0, 0.0, 0.0]],
            100.0,
        );
        assert!((moves[0].end_v - 5.0).abs() < 1e-9, "{}", moves[0].end_v);
        assert!((moves[1].start_v - 5.0).abs() < 1e-9);
    }

    #[test]
    fn straight_continuation_keeps_speed() {
        let moves = plan(
            &[[0.0; 4], [50.0, 0.0, 0.0, 0.0], [100.0, 0.0, 0.0, 0.0]],
            100.0,
        );
        assert!((moves[0].end_v - 100.0).abs() < 1e-9);
        assert_eq!(moves[0].decel_t, 0.0);
    }

    #[test]
    fn lazy_flush_keeps_moves_that_may_change() {
        let l = limits();
        let mut q = LookAheadQueue::new();
        let mut out = Vec::new();
        q.add_move(
            Move::new(&l, [0.0; 4], [10.0, 0.0, 0.0, 0.0], 100.0),
            |_, m| m.max_cruise_v2,
        );
        q.flush(true, &mut out);
        assert!(out.is_empty(), "one accelerating move is never final");
    }

    #[test]
    fn extrude_only_moves_are_not_kinematic() {
        let m = Move::new(&limits(), [0.0; 4], [0.0, 0.0, 0.0, -2.0], 40.0);
        assert!(!m.is_kinematic_move);
        assert_eq!(m.move_d, 2.0);
        assert_eq!(m.axes_r[3], -1.0);
    }
}
