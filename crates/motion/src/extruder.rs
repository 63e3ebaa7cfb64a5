//! Extruder kinematics with pressure advance (Klipper's extruder stepper model).
//!
//! The extruder has a trapq of its own. Each toolhead move with E motion is copied into it with
//! the same timing ([`append_extrusion`]): `start_pos.x` is the E position, `axes_r.x = 1`, and
//! `axes_r.y = 1` flags segments where pressure advance may act (extruding while moving in XY).
//!
//! Pressure advance pushes extra filament in proportion to the nominal extrusion velocity:
//! `pa(t) = E(t) + K·v(t)`, with `K` the pressure-advance time (seconds) of the segment, or 0 on
//! unflagged segments. That signal jumps wherever the velocity does, so the stepper follows its
//! tent-weighted average over `[t − T/2, t + T/2]` (`T` the smooth time):
//! `E_out(t) = ∫ pa(x)·(T/2 − |t − x|) dx / (T/2)²`. On each segment `pa` is a quadratic in
//! time, so the integral has a closed form ([`ExtruderKin::calc_position`]); the window may reach
//! into neighbouring segments, which are visited in turn. A step search asks for the position at
//! many times inside one entry: [`ExtruderKin::prepare_window`] computes the integrand of every
//! segment the window can reach from there once, and [`ExtruderKin::calc_position_in`] then
//! gives the same bits as `calc_position` with less work per time.
//!
//! `K` changes are time-stamped ([`ExtruderKin::set_pressure_advance`]): a segment uses the value
//! in force at its own start. A smooth time of 0 turns the model off (plain `E(t)`).

use std::collections::VecDeque;

use crate::trapq::{Coord, TrapMove, TrapQ};

/// Default `pressure_advance_smooth_time`, seconds.
pub const DEFAULT_SMOOTH_TIME: f64 = 0.040;

/// Largest accepted `pressure_advance_smooth_time`, seconds.
pub const MAX_SMOOTH_TIME: f64 = 0.200;

/// One pressure-advance value and the print time from which segments use it.
#[derive(Clone, Copy, Debug, PartialEq)]
struct AdvanceChange {
    /// Segments starting at or after this print time use `advance`.
    from_time: f64,
    /// Pressure-advance time K, seconds.
    advance: f64,
}

/// The extruder stepper's kinematics: pressure-advance schedule and smoothing window.
#[derive(Clone, Debug)]
pub struct ExtruderKin {
    /// Time-ordered changes of K; never empty (starts with K = 0 from time 0). The first entry
    /// also serves segments older than every entry.
    schedule: VecDeque<AdvanceChange>,
    /// Half the smooth time, seconds (0 = pressure advance off).
    half_smooth_time: f64,
    /// `1 / half_smooth_time²`, valid while `half_smooth_time > 0`.
    inv_half_smooth_time2: f64,
}

impl Default for ExtruderKin {
    fn default() -> Self {
        Self::new()
    }
}

impl ExtruderKin {
    /// Pressure advance off: K = 0, no smoothing.
    pub fn new() -> Self {
        Self {
            schedule: VecDeque::from([AdvanceChange {
                from_time: 0.0,
                advance: 0.0,
            }]),
            half_smooth_time: 0.0,
            inv_half_smooth_time2: 0.0,
        }
    }

    /// Sets K (`pressure_advance`, s) from `print_time` on, and the smooth time (s).
    ///
    /// `last_flush_time` is how far steps have been generated: schedule entries that no segment
    /// still inside the smoothing window can use are dropped (the newest entry older than that
    /// horizon stays, as it still applies). A smooth time of 0 (what Klipper passes when K = 0)
    /// switches the model off and leaves the schedule otherwise alone. Otherwise an entry is
    /// added only when `pressure_advance` differs from the newest one.
    ///
    /// As in Klipper, a change of smooth time needs a full step-generation flush first (the
    /// caller then passes `print_time` 0); a change of K alone is queued at the end of the
    /// already planned moves. Smooth times that are negative or not finite count as 0.
    pub fn set_pressure_advance(
        &mut self,
        last_flush_time: f64,
        print_time: f64,
        pressure_advance: f64,
        smooth_time: f64,
    ) {
        let half = if smooth_time.is_finite() && smooth_time > 0.0 {
            0.5 * smooth_time
        } else {
            0.0
        };
        let widest = half.max(self.half_smooth_time);
        self.half_smooth_time = half;
        let horizon = last_flush_time - widest;
        while self
            .schedule
            .get(1)
            .is_some_and(|next| next.from_time < horizon)
        {
            self.schedule.pop_front();
        }
        if half == 0.0 {
            return;
        }
        self.inv_half_smooth_time2 = 1.0 / (half * half);
        if self
            .schedule
            .back()
            .is_some_and(|last| last.advance == pressure_advance)
        {
            return;
        }
        self.schedule.push_back(AdvanceChange {
            from_time: print_time,
            advance: pressure_advance,
        });
    }

    /// Half the smooth time, seconds (0 when pressure advance is off).
    pub fn half_smooth_time(&self) -> f64 {
        self.half_smooth_time
    }

    /// The schedule as `(from print time, K)` pairs, oldest first.
    pub fn schedule(&self) -> impl Iterator<Item = (f64, f64)> + '_ {
        self.schedule.iter().map(|c| (c.from_time, c.advance))
    }

    /// The K a flagged segment starting at `segment_start` uses: the newest entry not after it,
    /// or the oldest entry when all are later.
    #[inline]
    pub fn pressure_advance_at(&self, segment_start: f64) -> f64 {
        // The newest entry serves nearly every segment (K rarely changes mid-print).
        if let Some(newest) = self.schedule.back()
            && newest.from_time <= segment_start
        {
            return newest.advance;
        }
        self.schedule
            .iter()
            .rev()
            .find(|c| c.from_time <= segment_start)
            .or(self.schedule.front())
            .map_or(0.0, |c| c.advance)
    }

    /// How long before a move steps may be needed (half the smooth time), seconds.
    pub fn pre_active(&self) -> f64 {
        self.half_smooth_time
    }

    /// How long after a move steps may be needed (half the smooth time), seconds.
    pub fn post_active(&self) -> f64 {
        self.half_smooth_time
    }

    /// The extruder stepper's position at `move_time` seconds into entry `index` of the
    /// extruder trapq: plain E with pressure advance off, otherwise the tent-smoothed
    /// `E + K·v` described in the module docs.
    ///
    /// The caller keeps the tail sentinel current ([`TrapQ::check_sentinels`]) and `move_time`
    /// within the entry, as step generation does. Outside that contract the result is still
    /// defined (no panic): an index past the tail is taken as the tail, and time before the
    /// first queued entry reads as standing still at that entry's start.
    pub fn calc_position(&self, tq: &TrapQ, index: usize, move_time: f64) -> f64 {
        let index = index.min(tq.tail_index());
        let m = tq.get(index);
        let half = self.half_smooth_time;
        if half <= 0.0 {
            return m.start_pos.x + m.distance(move_time);
        }
        m.start_pos.x + self.window_area(tq, index, move_time, half) * self.inv_half_smooth_time2
    }

    /// `∫ (pa(x) − E₀)·(h − |t − x|) dx` over `[t − h, t + h]`, `E₀` the start of entry `index`.
    fn window_area(&self, tq: &TrapQ, index: usize, move_time: f64, half: f64) -> f64 {
        let current = tq.get(index);
        let origin = current.start_pos.x;
        let rise_from = move_time - half;
        let fall_to = move_time + half;
        // The rising flank weighs x by (x − rise_from), the falling one by (fall_to − x).
        let mut area = self.moment(current, 0.0, rise_from, move_time, rise_from)
            - self.moment(current, 0.0, move_time, fall_to, fall_to);

        // Earlier entries: the window start, re-based onto each entry as we step back.
        let (mut at, mut start) = (index, rise_from);
        while start < 0.0 {
            if at <= 1 {
                // Nothing older is queued: the extruder stood at this entry's start.
                let base = tq.get(at).start_pos.x - origin;
                area += base * 0.5 * start * start;
                break;
            }
            at -= 1;
            let prev = tq.get(at);
            start += prev.move_t;
            area += self.moment(prev, prev.start_pos.x - origin, start, prev.move_t, start);
        }

        // Later entries: the window end, re-based likewise as we step forward.
        let tail = tq.tail_index();
        let (mut at, mut end) = (index, fall_to);
        while at < tail && end > tq.get(at).move_t {
            end -= tq.get(at).move_t;
            at += 1;
            let next = tq.get(at);
            area -= self.moment(next, next.start_pos.x - origin, 0.0, end, end);
        }
        area
    }

    /// `∫ (base + pa(x) − start_pos.x)·(x − pivot) dx` over `[lo, hi]` clipped to segment `m`
    /// (times relative to its start), with the segment's K applied when it is flagged.
    #[inline(always)]
    fn moment(&self, m: &TrapMove, base: f64, lo: f64, hi: f64, pivot: f64) -> f64 {
        let f = self.integrand(m, base);
        let (lo, hi) = (f.clamp_lo(lo), f.clamp_hi(hi));
        f.moment(f.at(lo), f.at(hi), pivot)
    }

    /// Segment `m`'s `pa(x) − start_pos.x + base`, its K applied when it is flagged.
    #[inline(always)]
    fn integrand(&self, m: &TrapMove, base: f64) -> Integrand {
        let advance = if m.axes_r.y != 0.0 {
            self.pressure_advance_at(m.print_time)
        } else {
            0.0
        };
        Integrand {
            c0: base + advance * m.start_v,
            c1: m.start_v + 2.0 * advance * m.half_accel,
            c2: m.half_accel,
            move_t: m.move_t,
        }
    }

    /// Sets `window` up for [`ExtruderKin::calc_position_in`] at times `start..=end` into entry
    /// `index`: the integrand of every segment the smoothing window can reach from there,
    /// and what does not depend on the time. An empty window (every time passed on to
    /// [`ExtruderKin::calc_position`]) when pressure advance is off or a bound is not a number.
    #[expect(
        clippy::neg_cmp_op_on_partial_ord,
        reason = "the walk forward stops where `window_area`'s loop condition fails (a NaN too)"
    )]
    pub fn prepare_window(
        &self,
        tq: &TrapQ,
        index: usize,
        start: f64,
        end: f64,
        window: &mut SmoothingWindow,
    ) {
        window.earlier.clear();
        window.later.clear();
        window.ready = false;
        let half = self.half_smooth_time;
        if half <= 0.0 || start.is_nan() || end.is_nan() {
            return;
        }
        let index = index.min(tq.tail_index());
        let current = tq.get(index);
        let origin = current.start_pos.x;
        window.index = index;
        window.start = start;
        window.end = end;
        window.origin = origin;
        window.current = Segment::new(self.integrand(current, 0.0));

        // The walks of `window_area` for the earliest and the latest time: every time in
        // between walks no further either way (adding the same durations to a later start,
        // or taking them from an earlier end, keeps the order: rounding is monotonic).
        window.oldest = None;
        let (mut at, mut from) = (index, start - half);
        while from < 0.0 {
            if at <= 1 {
                window.oldest = Some(tq.get(at).start_pos.x - origin);
                break;
            }
            at -= 1;
            let prev = tq.get(at);
            from += prev.move_t;
            let base = prev.start_pos.x - origin;
            window
                .earlier
                .push(Segment::new(self.integrand(prev, base)));
        }
        let tail = tq.tail_index();
        let (mut at, mut to) = (index, end + half);
        window.stop = None;
        while at < tail {
            let before = tq.get(at).move_t;
            if !(to > before) {
                window.stop = Some(before);
                break;
            }
            to -= before;
            at += 1;
            let next = tq.get(at);
            let base = next.start_pos.x - origin;
            window
                .later
                .push((before, Segment::new(self.integrand(next, base))));
        }
        window.ready = true;
    }

    /// [`ExtruderKin::calc_position`] with the segments' integrands from `window` (made by
    /// [`ExtruderKin::prepare_window`]): the same operations on the same values, so the same
    /// bits, without looking them up again at every time a step search tries. Times outside
    /// the window's, and other entries, go to `calc_position`.
    #[inline]
    pub fn calc_position_in(
        &self,
        tq: &TrapQ,
        window: &SmoothingWindow,
        index: usize,
        move_time: f64,
    ) -> f64 {
        let half = self.half_smooth_time;
        if !(window.ready
            && index == window.index
            && half > 0.0
            && move_time >= window.start
            && move_time <= window.end)
        {
            return self.calc_position(tq, index, move_time);
        }
        match self.window_area_in(window, move_time, half) {
            Some(area) => window.origin + area * self.inv_half_smooth_time2,
            None => self.calc_position(tq, index, move_time),
        }
    }

    /// `window_area` from `window`'s segments; `None` where its walk would leave them (not
    /// for a time inside the window's range).
    #[inline(always)]
    #[expect(
        clippy::neg_cmp_op_on_partial_ord,
        reason = "the walk forward stops where `window_area`'s loop condition fails (a NaN too)"
    )]
    fn window_area_in(&self, window: &SmoothingWindow, move_time: f64, half: f64) -> Option<f64> {
        let current = &window.current;
        let rise_from = move_time - half;
        let fall_to = move_time + half;
        let f = &current.integrand;
        let (rise_lo, rise_hi) = (f.clamp_lo(rise_from), f.clamp_hi(move_time));
        let (fall_lo, fall_hi) = (f.clamp_lo(move_time), f.clamp_hi(fall_to));
        let at_rise_hi = current.at(rise_hi);
        let at_fall_lo = if fall_lo.to_bits() == rise_hi.to_bits() {
            at_rise_hi
        } else {
            current.at(fall_lo)
        };
        let mut area = f.moment(current.at(rise_lo), at_rise_hi, rise_from)
            - f.moment(at_fall_lo, current.at(fall_hi), fall_to);

        let mut start = rise_from;
        let mut earlier = window.earlier.iter();
        while start < 0.0 {
            let Some(prev) = earlier.next() else {
                area += window.oldest? * 0.5 * start * start;
                break;
            };
            let f = &prev.integrand;
            start += f.move_t;
            area += f.moment(prev.at(f.clamp_lo(start)), prev.at_end, start);
        }

        let mut end = fall_to;
        let mut later = window.later.iter();
        loop {
            let Some((before, next)) = later.next() else {
                // The walk stopped at the tail, or where the latest time's end fell short
                // of a segment's end: so does this one's.
                if window.stop.is_some_and(|before| end > before) {
                    return None;
                }
                break;
            };
            if !(end > *before) {
                break;
            }
            end -= *before;
            let f = &next.integrand;
            area -= f.moment(next.at_zero, next.at(f.clamp_hi(end)), end);
        }
        Some(area)
    }
}

/// What [`ExtruderKin::calc_position_in`] keeps for the times of one step search: the
/// smoothing window's segments from one entry, each integrand computed once. Its buffers keep
/// their size from search to search.
#[derive(Clone, Debug, Default)]
pub struct SmoothingWindow {
    ready: bool,
    index: usize,
    /// The times (into entry `index`) it serves.
    start: f64,
    end: f64,
    /// `start_pos.x` of entry `index`.
    origin: f64,
    current: Segment,
    /// Earlier segments, newest first.
    earlier: Vec<Segment>,
    /// Where the walk back reached the oldest queued entry: its base.
    oldest: Option<f64>,
    /// Later segments, oldest first, each with the duration of the segment before it (the
    /// walk's test).
    later: Vec<(f64, Segment)>,
    /// The duration the walk forward stopped short of (`None`: it stopped at the tail).
    stop: Option<f64>,
}

/// A segment's [`Integrand`] and its antiderivatives at its start and end, where whole
/// segments (and the window's edges past them) take them.
#[derive(Clone, Copy, Debug, Default)]
struct Segment {
    integrand: Integrand,
    at_zero: [f64; 2],
    at_end: [f64; 2],
}

impl Segment {
    fn new(integrand: Integrand) -> Self {
        Self {
            integrand,
            at_zero: integrand.at(0.0),
            at_end: integrand.at(integrand.move_t),
        }
    }

    /// [`Integrand::at`], taken from those kept at the segment's ends (the same bits: the
    /// same operations on the same values).
    #[inline(always)]
    fn at(&self, x: f64) -> [f64; 2] {
        if x.to_bits() == 0 {
            self.at_zero
        } else if x.to_bits() == self.integrand.move_t.to_bits() {
            self.at_end
        } else {
            self.integrand.at(x)
        }
    }
}

/// One segment's `pa(x) − start_pos.x + base = c0 + c1·x + c2·x²` (x seconds into it) and its
/// duration.
#[derive(Clone, Copy, Debug, Default)]
struct Integrand {
    c0: f64,
    c1: f64,
    c2: f64,
    move_t: f64,
}

impl Integrand {
    /// `x` clipped below at the segment's start (a NaN stays).
    #[inline(always)]
    fn clamp_lo(&self, x: f64) -> f64 {
        if x < 0.0 { 0.0 } else { x }
    }

    /// `x` clipped above at the segment's end (a NaN stays).
    #[inline(always)]
    fn clamp_hi(&self, x: f64) -> f64 {
        if x > self.move_t { self.move_t } else { x }
    }

    /// The antiderivatives of `x·pa` and of `pa` at `x`, with kin_extruder.c's operations (a
    /// third is `(1/3)·c`, not `c/3`: the two differ in the last bit now and then, and the
    /// search for a step near a pressure-advance reversal is sensitive to that).
    #[inline(always)]
    fn at(&self, x: f64) -> [f64; 2] {
        let (c0, c1, c2) = (self.c0, self.c1, self.c2);
        let timed = x * x * (0.5 * c0 + x * ((1.0 / 3.0) * c1 + x * (0.25 * c2)));
        let plain = x * (c0 + x * (0.5 * c1 + x * ((1.0 / 3.0) * c2)));
        [timed, plain]
    }

    /// `∫ pa(x)·(x − pivot) dx` between the points whose antiderivatives are `lo` and `hi`.
    #[inline(always)]
    fn moment(&self, lo: [f64; 2], hi: [f64; 2], pivot: f64) -> f64 {
        (hi[0] - lo[0]) - pivot * (hi[1] - lo[1])
    }
}

/// Whether pressure advance may act on an extrusion: it extrudes (E ratio > 0) while the
/// toolhead moves in X or Y.
pub fn pressure_advance_applies(e_ratio: f64, has_xy_motion: bool) -> bool {
    e_ratio > 0.0 && has_xy_motion
}

/// Queues a toolhead move's extrusion on the extruder trapq, as Klipper's extruder does when
/// the toolhead hands it a move.
///
/// - `print_time`, `accel_t`, `cruise_t`, `decel_t`: the toolhead move's timing, unchanged.
/// - `start_e`: the move's *start* E coordinate (the toolhead position's E component at the
///   start of the move, after extrude-factor scaling); the extruder's last position becomes the
///   move's end E, which the caller tracks.
/// - `e_ratio`: `dE / move_d` of the move (±1 for extrude-only moves).
/// - `start_v`, `cruise_v`, `accel`: the toolhead move's values, scaled here by `e_ratio`.
/// - `has_xy_motion`: whether the move's X or Y displacement is non-zero.
///
/// The segments get `start_pos = (start_e, 0, 0)` and `axes_r = (1, flag, 0)` with the flag
/// from [`pressure_advance_applies`].
#[allow(clippy::too_many_arguments)]
pub fn append_extrusion(
    tq: &mut TrapQ,
    print_time: f64,
    accel_t: f64,
    cruise_t: f64,
    decel_t: f64,
    start_e: f64,
    e_ratio: f64,
    start_v: f64,
    cruise_v: f64,
    accel: f64,
    has_xy_motion: bool,
) {
    let flag = if pressure_advance_applies(e_ratio, has_xy_motion) {
        1.0
    } else {
        0.0
    };
    tq.append(
        print_time,
        accel_t,
        cruise_t,
        decel_t,
        Coord::new(start_e, 0.0, 0.0),
        Coord::new(1.0, flag, 0.0),
        start_v * e_ratio,
        cruise_v * e_ratio,
        accel * e_ratio,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    fn at(kin: &ExtruderKin, q: &TrapQ, time: f64) -> f64 {
        let index = q.find_from(0, time);
        kin.calc_position(q, index, time - q.get(index).print_time)
    }

    fn plain_at(q: &TrapQ, time: f64) -> f64 {
        let index = q.find_from(0, time);
        let m = q.get(index);
        m.start_pos.x + m.distance(time - m.print_time)
    }

    fn kin_with(advance: f64, smooth: f64) -> ExtruderKin {
        let mut kin = ExtruderKin::new();
        kin.set_pressure_advance(0.0, 0.0, advance, smooth);
        kin
    }

    /// One extrusion with XY motion: accel 0.5 s, cruise 1 s, decel 0.5 s (toolhead 0→60 mm/s).
    fn long_move(e_ratio: f64) -> TrapQ {
        let mut q = TrapQ::new();
        append_extrusion(
            &mut q, 2.0, 0.5, 1.0, 0.5, 10.0, e_ratio, 0.0, 60.0, 120.0, true,
        );
        q.check_sentinels();
        q
    }

    #[test]
    fn plain_e_when_smoothing_is_off() {
        let q = long_move(0.05);
        let kin = ExtruderKin::new();
        assert_eq!((kin.pre_active(), kin.post_active()), (0.0, 0.0));
        for k in 0..40 {
            let time = 1.9 + k as f64 * 0.06;
            assert_eq!(at(&kin, &q, time), plain_at(&q, time));
        }
        // K = 0 switches smoothing off in Klipper's callers (smooth time 0): plain E again.
        let kin = kin_with(0.1, 0.0);
        assert_eq!(at(&kin, &q, 2.3), plain_at(&q, 2.3));
    }

    #[test]
    fn zero_advance_smoothing_is_exact_on_lines_and_shifts_parabolas() {
        let q = long_move(0.05);
        let smooth = 0.04;
        let half: f64 = smooth / 2.0;
        let kin = kin_with(0.0, smooth);
        assert_eq!((kin.pre_active(), kin.post_active()), (half, half));
        // Cruise (2.5 .. 3.5 s): a linear function averages to itself.
        for k in 0..20 {
            let time = 2.55 + k as f64 * 0.045;
            assert!(
                close(at(&kin, &q, time), plain_at(&q, time), 1e-12),
                "t {time}"
            );
        }
        // Acceleration: E gains a·h²/12 (the tent's variance h²/6 times a/2).
        let e_accel = 120.0 * 0.05;
        for k in 0..10 {
            let time = 2.05 + k as f64 * 0.04;
            let want = plain_at(&q, time) + e_accel * half * half / 12.0;
            assert!(close(at(&kin, &q, time), want, 1e-12), "t {time}");
        }
        // Deceleration: the same with the opposite sign.
        let time = 3.75;
        let want = plain_at(&q, time) - e_accel * half * half / 12.0;
        assert!(close(at(&kin, &q, time), want, 1e-12));
    }

    #[test]
    fn advance_adds_k_times_velocity() {
        let e_ratio = 0.05;
        let q = long_move(e_ratio);
        let (k, smooth) = (0.06, 0.05);
        let half: f64 = smooth / 2.0;
        let kin = kin_with(k, smooth);
        let v_cruise = 60.0 * e_ratio;
        for j in 0..20 {
            let time = 2.55 + j as f64 * 0.045;
            let want = plain_at(&q, time) + k * v_cruise;
            assert!(close(at(&kin, &q, time), want, 1e-12), "t {time}");
        }
        // Accelerating: velocity is linear, so it averages exactly too.
        let e_accel = 120.0 * e_ratio;
        let time = 2.3;
        let v = e_accel * (time - 2.0);
        let want = plain_at(&q, time) + e_accel * half * half / 12.0 + k * v;
        assert!(close(at(&kin, &q, time), want, 1e-12));
        // Long after the move the extruder rests at the end position (no lingering advance).
        assert!(close(at(&kin, &q, 5.0), plain_at(&q, 5.0), 1e-12));
    }

    #[test]
    fn unflagged_segments_get_no_advance() {
        let kin = kin_with(0.08, 0.04);
        // Retraction while moving, and extrusion without XY motion: no advance, only smoothing.
        for (e_ratio, xy) in [(-0.05, true), (0.05, false)] {
            let mut q = TrapQ::new();
            append_extrusion(
                &mut q, 2.0, 0.5, 1.0, 0.5, 10.0, e_ratio, 0.0, 60.0, 120.0, xy,
            );
            q.check_sentinels();
            assert_eq!(q.get(2).axes_r, Coord::new(1.0, 0.0, 0.0));
            assert!(close(at(&kin, &q, 3.0), plain_at(&q, 3.0), 1e-12));
        }
    }

    /// The prepared window's walks to both ends of the queue: back past a first entry shorter
    /// than the half window (the queue's start, where the extruder stood at an earlier
    /// segment's start: a base other than 0) and forward to the tail, every time to the bit.
    #[test]
    fn window_walks_to_the_queue_ends_like_calc_position() {
        let mut q = TrapQ::new();
        // A 5 ms acceleration, a cruise, a deceleration.
        append_extrusion(
            &mut q, 1.0, 0.005, 0.05, 0.005, 4.0, 0.04, 0.0, 40.0, 8000.0, true,
        );
        q.check_sentinels();
        // (The null move filling the queue up to the first segment goes to the history, as
        // step generation's flushes send it: the acceleration is then the oldest entry.)
        q.finalize_moves(1.0, 0.0);
        let kin = kin_with(0.05, 0.2);
        let mut window = SmoothingWindow::default();
        for index in 1..=3 {
            let move_t = q.get(index).move_t;
            kin.prepare_window(&q, index, 0.0, move_t, &mut window);
            for k in 0..=64 {
                let t = move_t * f64::from(k) / 64.0;
                let want = kin.calc_position(&q, index, t);
                let got = kin.calc_position_in(&q, &window, index, t);
                assert_eq!(got.to_bits(), want.to_bits(), "entry {index} t {t}");
            }
        }
        // The walk back from the cruise reached the queue's start a segment early.
        kin.prepare_window(&q, 2, 0.0, 0.01, &mut window);
        assert!(window.oldest.is_some_and(|base| base != 0.0));
    }

    /// A cruise at 2 mm/s of E from 1.0 to 3.0 s in 1/8 s segments (exact boundaries).
    fn cruise_in_pieces() -> TrapQ {
        let mut q = TrapQ::new();
        for i in 0..16 {
            let t = 1.0 + i as f64 * 0.125;
            let e = 2.0 * (t - 1.0);
            append_extrusion(&mut q, t, 0.0, 0.125, 0.0, e, 0.04, 50.0, 50.0, 0.0, true);
        }
        q.check_sentinels();
        q
    }

    #[test]
    fn an_advance_change_takes_effect_at_its_print_time() {
        let q = cruise_in_pieces();
        let mut kin = kin_with(0.05, 0.04);
        kin.set_pressure_advance(0.0, 2.0, 0.1, 0.04);
        assert_eq!(kin.pressure_advance_at(1.999), 0.05);
        assert_eq!(kin.pressure_advance_at(2.0), 0.1);
        assert!(close(
            at(&kin, &q, 1.5),
            plain_at(&q, 1.5) + 0.05 * 2.0,
            1e-12
        ));
        assert!(close(
            at(&kin, &q, 1.98),
            plain_at(&q, 1.98) + 0.05 * 2.0,
            1e-12
        ));
        // At the change the window straddles both values equally.
        assert!(close(
            at(&kin, &q, 2.0),
            plain_at(&q, 2.0) + 0.075 * 2.0,
            1e-12
        ));
        assert!(close(
            at(&kin, &q, 2.02),
            plain_at(&q, 2.02) + 0.1 * 2.0,
            1e-12
        ));
        assert!(close(
            at(&kin, &q, 2.5),
            plain_at(&q, 2.5) + 0.1 * 2.0,
            1e-12
        ));
    }

    #[test]
    fn schedule_keeps_changes_only_and_drops_what_is_flushed() {
        let mut kin = ExtruderKin::new();
        assert_eq!(kin.schedule().collect::<Vec<_>>(), [(0.0, 0.0)]);
        kin.set_pressure_advance(0.0, 0.0, 0.05, 0.04);
        kin.set_pressure_advance(0.0, 1.0, 0.05, 0.04); // same value: nothing added
        kin.set_pressure_advance(0.0, 2.0, 0.07, 0.04);
        kin.set_pressure_advance(0.0, 3.0, 0.09, 0.04);
        assert_eq!(
            kin.schedule().collect::<Vec<_>>(),
            [(0.0, 0.0), (0.0, 0.05), (2.0, 0.07), (3.0, 0.09)]
        );
        // Steps are generated up to 3.01 s; with h = 0.02 segments from 2.99 s on still matter,
        // so the entry in force then (from 2.0) stays and older ones go.
        kin.set_pressure_advance(3.01, 4.0, 0.09, 0.04);
        assert_eq!(
            kin.schedule().collect::<Vec<_>>(),
            [(2.0, 0.07), (3.0, 0.09)]
        );
        // The widest of the old and new windows protects entries.
        kin.set_pressure_advance(3.02, 4.0, 0.09, 0.01);
        assert_eq!(kin.schedule().count(), 2);
        // Turning off still cleans up, but adds nothing.
        kin.set_pressure_advance(100.0, 100.0, 0.0, 0.0);
        assert_eq!(kin.schedule().collect::<Vec<_>>(), [(3.0, 0.09)]);
        assert_eq!(kin.half_smooth_time(), 0.0);
        // The oldest entry also serves segments older than it.
        assert_eq!(kin.pressure_advance_at(0.5), 0.09);
    }

    #[test]
    fn append_extrusion_follows_the_toolhead_move() {
        let mut q = TrapQ::new();
        append_extrusion(
            &mut q, 5.0, 0.1, 0.2, 0.05, 12.5, 0.04, 10.0, 50.0, 400.0, true,
        );
        // null, accel, cruise, decel
        assert_eq!(q.len(), 6);
        let (accel, cruise, decel) = (q.get(2), q.get(3), q.get(4));
        assert_eq!(accel.print_time, 5.0);
        assert_eq!(
            (accel.move_t, cruise.move_t, decel.move_t),
            (0.1, 0.2, 0.05)
        );
        assert_eq!(accel.start_pos, Coord::new(12.5, 0.0, 0.0));
        assert_eq!(accel.axes_r, Coord::new(1.0, 1.0, 0.0));
        assert!(close(accel.start_v, 0.4, 1e-15));
        assert!(close(accel.half_accel, 8.0, 1e-15));
        assert!(close(cruise.start_v, 2.0, 1e-15));
        assert!(close(decel.half_accel, -8.0, 1e-15));
        assert!(close(
            cruise.start_pos.x,
            12.5 + 0.4 * 0.1 + 8.0 * 0.01,
            1e-12
        ));
        assert!(pressure_advance_applies(0.01, true));
        assert!(!pressure_advance_applies(0.0, true));
        assert!(!pressure_advance_applies(-0.01, true));
        assert!(!pressure_advance_applies(0.01, false));
    }

    /// The queue and pressure-advance schedule of the Klipper harness runs below: PA moves,
    /// a retraction and a PA-less extrusion, with K changing at 2.16 s.
    fn harness_queue() -> (TrapQ, ExtruderKin) {
        let moves = [
            (2.0, 0.02, 0.05, 0.02, 3.0, 0.04, 5.0, 25.0, 1000.0, true),
            (
                2.09,
                0.0,
                0.03,
                0.01,
                3.0 + 0.04 * (0.2 + 1.25 + 0.45),
                0.05,
                25.0,
                25.0,
                1500.0,
                true,
            ),
            (2.13, 0.01, 0.0, 0.01, 3.2, -1.0, 0.0, 20.0, 2000.0, false),
            (2.16, 0.012, 0.02, 0.012, 3.1, 0.03, 2.0, 26.0, 2000.0, true),
            (2.21, 0.01, 0.02, 0.01, 3.4, 0.5, 0.0, 10.0, 1000.0, false),
        ];
        let mut q = TrapQ::new();
        for (pt, at_, ct, dt, se, r, sv, cv, ac, xy) in moves {
            append_extrusion(&mut q, pt, at_, ct, dt, se, r, sv, cv, ac, xy);
        }
        q.check_sentinels();
        let mut kin = ExtruderKin::new();
        kin.set_pressure_advance(0.0, 0.0, 0.045, 0.04);
        kin.set_pressure_advance(0.0, 2.16, 0.07, 0.04);
        (q, kin)
    }

    #[test]
    fn matches_klipper_step_generator() {
        // kin_extruder.c's position on the same queue (Klipper's C built as a harness).
        let reference: [(f64, f64); 20] = [
            (1.99, 3.0020000000000002),
            (2.0, 3.011833333333333),
            (2.01, 3.031208333333333),
            (2.03, 3.0662916666666664),
            (2.06, 3.0962083333333332),
            (2.085, 3.1071458333333335),
            (2.09, 3.116458333333333),
            (2.1, 3.1397395833333337),
            (2.12, 3.163348958333334),
            (2.13, 3.150213541666668),
            (2.14, 3.1067135416666654),
            (2.155, 3.0896019833333335),
            (2.16, 3.1059617333333347),
            (2.17, 3.1421253999999994),
            (2.19, 3.1753400999999997),
            (2.2, 3.2355000333333335),
            (2.215, 3.3915100979166644),
            (2.23, 3.475000000000001),
            (2.25, 3.5421875000000007),
            (2.3, 3.55),
        ];
        let (q, kin) = harness_queue();
        for (time, want) in reference {
            let got = at(&kin, &q, time);
            assert!(close(got, want, 1e-9), "t {time}: {got} vs {want}");
        }
    }

    /// Regression: the integral's polynomial is evaluated with kin_extruder.c's operations —
    /// `(1/3)·c` rather than `c/3`, which differs in the last bit now and then — so positions
    /// equal Klipper's to the bit. These are times (1.98 s + k·0.5 ms, k in 0..=700) where the
    /// two forms differ; the harness agreed bit for bit at all 701.
    #[test]
    fn integral_rounds_like_klipper() {
        let reference: [(u32, f64); 8] = [
            (271, 3.1605423177083334),
            (273, 3.1613678125),
            (274, 3.1617520833333335),
            (282, 3.163475744791667),
            (291, 3.1603467067057296),
            (318, 3.1115641666666676),
            (519, 3.5153934928385424),
            (200, 3.10234375),
        ];
        let (q, kin) = harness_queue();
        for (k, want) in reference {
            let time = 1.98 + f64::from(k) * 0.0005;
            let got = at(&kin, &q, time);
            assert_eq!(
                got.to_bits(),
                want.to_bits(),
                "t {time}: {got:?} vs {want:?}"
            );
        }
    }

    /// Regression (the o_orca_k1max oracle case): after thousands of steps the half-step
    /// targets must still be Klipper's to the bit, or a pressure-advance reversal whose
    /// extremum barely reaches a target comes out differently. From E = 10000 mm at
    /// 426.7 steps/mm, a 15 s extrusion ends in a PA reversal, then a short move extrudes
    /// again and retracts by PA; its peak passes a half-step target by less than 4e-8 mm, so
    /// Klipper steps forward and back there (16.1055 s, 16.1063 s). With the targets advanced
    /// by one full step at a time (one rounding instead of Klipper's two) they had drifted by
    /// 3.5e-8 mm by then, and that pair was missing. Reference: Klipper's itersolve.c,
    /// kin_extruder.c and trapq.c built as a harness, with the step+dir+step filter.
    #[test]
    fn long_extrusion_then_pa_reversal_steps_like_klipper() {
        use crate::itersolve::{Kinematics, StepperSolver};
        use crate::stepcompress::StepCompress;
        let mut q = TrapQ::new();
        append_extrusion(
            &mut q,
            1.0,
            0.02,
            15.0,
            0.02,
            10000.000136422377,
            1.0,
            0.0,
            3.0,
            150.0,
            true,
        );
        append_extrusion(
            &mut q,
            16.052,
            0.01,
            0.05,
            0.01,
            10045.060136422377,
            1.0,
            0.0,
            1.5,
            150.0,
            true,
        );
        q.check_sentinels();
        let step_dist = 7.5 / 3200.0;
        let mut solver = StepperSolver::new(Kinematics::Extruder(kin_with(0.04, 0.04)), step_dist);
        solver.set_position(Coord::new(10000.0, 0.0, 0.0));
        let freq = 1e8;
        let mut sc = StepCompress::new(0, false);
        sc.set_time(0.0, freq);
        solver.generate_steps(&q, &mut sc, 17.052).expect("steps");
        sc.flush(u64::MAX).expect("flush");
        let mut messages = Vec::new();
        sc.drain_messages(&mut messages);
        let steps = crate::stepcompress::expand_steps(&messages);
        // Klipper: 19344 steps, the direction runs' first and last steps at these times.
        assert_eq!(steps.len(), 19344);
        let runs: [(usize, usize, bool, f64, f64); 4] = [
            (0, 19254, true, 0.9873434542666366, 16.017400573879616),
            (19255, 19278, false, 16.019787250925674, 16.04433246856679),
            (19279, 19327, true, 16.046452819472, 16.10552897526545),
            (19328, 19343, false, 16.10627941131777, 16.134424441809177),
        ];
        for (first, last, dir, first_s, last_s) in runs {
            assert!(
                steps[first..=last].iter().all(|s| s.0 == dir),
                "run {first}..={last}"
            );
            for (index, time) in [(first, first_s), (last, last_s)] {
                let got = steps[index].1 as f64 / freq;
                assert!(
                    (got - time).abs() <= 2.0 / freq,
                    "step {index}: {got} vs {time}"
                );
            }
        }
        assert_eq!(
            solver.commanded_pos().to_bits(),
            10045.149999971967_f64.to_bits()
        );
    }

    /// Tent-weighted average of `E + K·v` by composite Simpson, looking segments up by absolute
    /// time (independent of the closed form's walking). `k_of` gives K for a segment start.
    fn simpson(q: &TrapQ, time: f64, half: f64, k_of: &dyn Fn(f64) -> f64) -> f64 {
        // The segment holding absolute time `x` (0 = before the queue, standing at its start).
        let tail = q.tail_index();
        let segment_at = |x: f64| {
            if x < q.get(1).print_time {
                return 0;
            }
            (1..tail).find(|&i| x < q.get(i).end_time()).unwrap_or(tail)
        };
        // E + K·v of segment `i` at absolute time `x`.
        let pa = |i: usize, x: f64| {
            if i == 0 {
                return q.get(1).start_pos.x;
            }
            let m = q.get(i);
            let dt = x - m.print_time;
            let k = if m.axes_r.y != 0.0 {
                k_of(m.print_time)
            } else {
                0.0
            };
            m.start_pos.x + m.distance(dt) + k * (m.start_v + 2.0 * m.half_accel * dt)
        };
        let (lo, hi) = (time - half, time + half);
        let mut cuts = vec![lo, time, hi];
        for i in 1..=tail {
            let b = q.get(i).print_time;
            if b > lo && b < hi {
                cuts.push(b);
            }
        }
        cuts.sort_by(f64::total_cmp);
        let mut total = 0.0;
        for w in cuts.windows(2) {
            let (a, b) = (w[0], w[1]);
            if b <= a {
                continue;
            }
            // Each piece lies in one segment: the one holding its midpoint.
            let seg = segment_at(0.5 * (a + b));
            let f = |x: f64| pa(seg, x) * (half - (time - x).abs());
            let n = 64;
            let h = (b - a) / n as f64;
            let mut s = f(a) + f(b);
            for j in 1..n {
                let x = a + j as f64 * h;
                s += if j % 2 == 1 { 4.0 * f(x) } else { 2.0 * f(x) };
            }
            total += s * h / 3.0;
        }
        total / (half * half)
    }

    /// (gap, start_v, accel, accel_t, cruise_t, decel fraction, e_ratio, xy) of a random move.
    type RandomMove = (f64, f64, f64, f64, f64, f64, f64, bool);

    fn move_strategy() -> impl Strategy<Value = Vec<RandomMove>> {
        prop::collection::vec(
            (
                prop_oneof![Just(0.0), 0.0f64..0.05],
                0.0f64..40.0,
                200.0f64..3000.0,
                0.0f64..0.05,
                0.001f64..0.1,
                0.0f64..1.0,
                -0.05f64..0.08,
                any::<bool>(),
            ),
            1..7,
        )
    }

    /// The extruder queue of `moves` from print time 2 s and E = 1 mm; with its end time.
    fn random_queue(moves: &[RandomMove]) -> (TrapQ, f64) {
        let mut q = TrapQ::new();
        let (mut time, mut e) = (2.0, 1.0);
        for &(gap, v0, accel, accel_t, cruise_t, decel_frac, ratio, xy) in moves {
            time += gap;
            let cruise_v = v0 + accel * accel_t;
            let decel_t = decel_frac * cruise_v / accel;
            append_extrusion(
                &mut q, time, accel_t, cruise_t, decel_t, e, ratio, v0, cruise_v, accel, xy,
            );
            let d =
                (v0 + cruise_v) * 0.5 * accel_t + cruise_v * cruise_t + cruise_v * 0.5 * decel_t;
            e += d * ratio;
            time += accel_t + cruise_t + decel_t;
        }
        q.check_sentinels();
        (q, time)
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 256,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn closed_form_matches_numerical_integration(
            moves in move_strategy(),
            k1 in 0.0f64..0.3,
            k2 in 0.0f64..0.3,
            change in 0.0f64..1.0,
            smooth in 0.002f64..0.2,
            probes in prop::collection::vec(0.0f64..1.0, 1..6),
        ) {
            let (q, time) = random_queue(&moves);
            let change_time = 2.0 + change * (time - 2.0);
            let mut kin = ExtruderKin::new();
            kin.set_pressure_advance(0.0, 0.0, k1, smooth);
            kin.set_pressure_advance(0.0, change_time, k2, smooth);
            let k_of = |start: f64| if start >= change_time && k1 != k2 { k2 } else { k1 };
            for p in probes {
                let t = 2.0 + p * (time - 2.0);
                let got = at(&kin, &q, t);
                let want = simpson(&q, t, 0.5 * smooth, &k_of);
                prop_assert!(close(got, want, 1e-9 * want.abs().max(1.0)), "t {}: {} vs {}", t, got, want);
            }
        }

        /// The search's evaluation from a prepared window is `calc_position` to the bit, at
        /// times inside the window's range (and, passed on, outside it), whichever entry and
        /// range: walks that reach the queue's start or its tail, K changing on the way.
        #[test]
        fn window_positions_are_calc_position_to_the_bit(
            moves in move_strategy(),
            k1 in 0.0f64..0.3,
            k2 in 0.0f64..0.3,
            change in 0.0f64..1.0,
            smooth in 0.002f64..0.2,
            entry in any::<prop::sample::Index>(),
            range in (0.0f64..1.0, 0.0f64..1.0),
            probes in prop::collection::vec(-0.2f64..1.2, 1..12),
        ) {
            let (mut q, time) = random_queue(&moves);
            // (The null move up to the first segment flushed, as step generation does: the
            // walk back can reach the queue's start from a later entry.)
            q.finalize_moves(2.0, 0.0);
            let mut kin = ExtruderKin::new();
            kin.set_pressure_advance(0.0, 0.0, k1, smooth);
            kin.set_pressure_advance(0.0, 2.0 + change * (time - 2.0), k2, smooth);
            let index = entry.index(q.tail_index() + 1);
            let move_t = q.get(index).move_t;
            let (a, b) = (range.0.min(range.1) * move_t, range.0.max(range.1) * move_t);
            let mut window = SmoothingWindow::default();
            kin.prepare_window(&q, index, a, b, &mut window);
            // The range's ends, the entry's, and times in and around the range.
            let times = [a, b, 0.0, move_t]
                .into_iter()
                .chain(probes.iter().map(|p| a + p * (b - a)));
            for t in times {
                let want = kin.calc_position(&q, index, t);
                let got = kin.calc_position_in(&q, &window, index, t);
                prop_assert_eq!(got.to_bits(), want.to_bits(), "entry {} t {}: {} vs {}", index, t, got, want);
            }
        }

        #[test]
        fn never_panics(
            index in any::<usize>(),
            move_time in prop::num::f64::ANY,
            flush in prop::num::f64::ANY,
            print_time in prop::num::f64::ANY,
            advance in prop::num::f64::ANY,
            smooth in prop::num::f64::ANY,
        ) {
            let mut q = TrapQ::new();
            append_extrusion(&mut q, 1.0, 0.01, 0.02, 0.01, 0.0, 0.05, 0.0, 50.0, 5000.0, true);
            q.check_sentinels();
            let empty = TrapQ::new();
            let mut kin = kin_with(0.05, 0.04);
            kin.set_pressure_advance(flush, print_time, advance, smooth);
            kin.set_pressure_advance(flush, print_time, advance, 0.04);
            for queue in [&q, &empty] {
                let _ = kin.calc_position(queue, index, move_time);
                let _ = kin.calc_position(queue, index % 8, move_time);
                let _ = kin.calc_position(queue, index % 8, 0.001);
            }
            let _ = kin.pressure_advance_at(print_time);
        }
    }
}
