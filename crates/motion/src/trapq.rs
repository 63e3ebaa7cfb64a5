//! The trapezoid motion queue (Klipper's trapq): constant-acceleration segments in print time.
//!
//! A toolhead move becomes up to three segments (accel, cruise, decel). Gaps between segments
//! are filled with null moves (zero velocity) so that every print time after the first move maps
//! to exactly one segment. The queue keeps a head sentinel (index 0, print time −1, zero length)
//! and a tail sentinel (last index, "never" ends) so that walkers may step to the neighbour of
//! any real segment without bounds checks; kinematics that look around a time (input shaper,
//! pressure-advance smoothing) walk with [`TrapQ::axis_across`] and friends.
//!
//! Segments whose end is before the step generator's horizon are moved to a history list (for
//! position queries) by [`TrapQ::finalize_moves`]; step generation never needs them again.

use std::collections::VecDeque;

/// A point or direction in Cartesian space, in mm (or a unit vector).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Coord {
    /// X.
    pub x: f64,
    /// Y.
    pub y: f64,
    /// Z.
    pub z: f64,
}

impl Coord {
    /// A coordinate from its parts.
    pub const fn new(x: f64, y: f64, z: f64) -> Self {
        Self { x, y, z }
    }

    /// One axis by index (0 = x, 1 = y, 2 = z).
    pub fn axis(&self, axis: usize) -> f64 {
        match axis {
            0 => self.x,
            1 => self.y,
            _ => self.z,
        }
    }

    /// Sets one axis by index (0 = x, 1 = y, 2 = z).
    pub fn set_axis(&mut self, axis: usize, value: f64) {
        match axis {
            0 => self.x = value,
            1 => self.y = value,
            _ => self.z = value,
        }
    }
}

/// "Never": the end of the tail sentinel, in seconds of print time.
pub const NEVER_TIME: f64 = 9_999_999_999_999_999.9;

/// The longest null move inserted before the first real move, for numerical stability.
const MAX_NULL_MOVE_S: f64 = 1.0;

/// One constant-acceleration segment.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct TrapMove {
    /// Start of the segment, seconds of print time.
    pub print_time: f64,
    /// Duration, seconds.
    pub move_t: f64,
    /// Velocity along `axes_r` at the start, mm/s.
    pub start_v: f64,
    /// Half the acceleration along `axes_r`, mm/s² (negative while decelerating).
    pub half_accel: f64,
    /// Position at the start, mm.
    pub start_pos: Coord,
    /// Direction (unit vector for toolhead moves; the extruder queue uses x = 1, y = PA flag).
    pub axes_r: Coord,
}

impl TrapMove {
    /// Distance travelled along `axes_r` after `move_time` seconds.
    #[inline]
    pub fn distance(&self, move_time: f64) -> f64 {
        (self.start_v + self.half_accel * move_time) * move_time
    }

    /// Position after `move_time` seconds.
    #[inline]
    pub fn coord(&self, move_time: f64) -> Coord {
        let d = self.distance(move_time);
        Coord {
            x: self.start_pos.x + self.axes_r.x * d,
            y: self.start_pos.y + self.axes_r.y * d,
            z: self.start_pos.z + self.axes_r.z * d,
        }
    }

    /// One axis of the position after `move_time` seconds (0 = x, 1 = y, 2 = z).
    #[inline]
    pub fn axis_position(&self, axis: usize, move_time: f64) -> f64 {
        self.start_pos.axis(axis) + self.axes_r.axis(axis) * self.distance(move_time)
    }

    /// Print time at which the segment ends.
    #[inline]
    pub fn end_time(&self) -> f64 {
        self.print_time + self.move_t
    }

    /// Whether the segment moves at all (null moves and sentinels do not).
    #[inline]
    pub fn is_moving(&self) -> bool {
        self.start_v != 0.0 || self.half_accel != 0.0
    }
}

/// A trapezoid motion queue: sentinels, active segments, and a bounded history.
#[derive(Clone, Debug)]
pub struct TrapQ {
    /// `[head sentinel, active segments…, tail sentinel]`.
    moves: VecDeque<TrapMove>,
    /// Finished segments, newest first (position queries, motion reports).
    history: VecDeque<TrapMove>,
    /// Whether the tail sentinel must be recomputed.
    tail_stale: bool,
    /// Whether finished segments go to the history (a planner that reads no positions back,
    /// such as `estimate`'s, keeps none).
    keep_history: bool,
}

impl Default for TrapQ {
    fn default() -> Self {
        Self::new()
    }
}

impl TrapQ {
    /// An empty queue.
    pub fn new() -> Self {
        let head = TrapMove {
            print_time: -1.0,
            ..TrapMove::default()
        };
        let tail = TrapMove {
            print_time: NEVER_TIME,
            move_t: NEVER_TIME,
            ..TrapMove::default()
        };
        Self {
            moves: VecDeque::from([head, tail]),
            history: VecDeque::new(),
            tail_stale: false,
            keep_history: true,
        }
    }

    /// Whether finished segments are kept in the history (position queries, motion reports);
    /// on by default.
    pub fn set_keep_history(&mut self, keep: bool) {
        self.keep_history = keep;
    }

    /// Number of entries including both sentinels (indices `0..len()`).
    #[inline]
    pub fn len(&self) -> usize {
        self.moves.len()
    }

    /// Whether no real segment is queued.
    pub fn is_empty(&self) -> bool {
        self.moves.len() == 2
    }

    /// Entry `index` (0 is the head sentinel, `len() - 1` the tail sentinel).
    #[inline]
    pub fn get(&self, index: usize) -> &TrapMove {
        &self.moves[index]
    }

    /// Index of the tail sentinel.
    #[inline]
    pub fn tail_index(&self) -> usize {
        self.moves.len() - 1
    }

    /// Brings the tail sentinel up to date (start = end of the last segment, at its end point).
    pub fn check_sentinels(&mut self) {
        if !self.tail_stale {
            return;
        }
        self.tail_stale = false;
        let n = self.moves.len();
        if n == 2 {
            self.moves[1].print_time = NEVER_TIME;
            return;
        }
        let last = self.moves[n - 2];
        let tail = &mut self.moves[n - 1];
        tail.print_time = last.end_time();
        tail.start_pos = last.coord(last.move_t);
    }

    fn add_move(&mut self, m: TrapMove) {
        let tail_index = self.moves.len() - 1;
        let prev = &self.moves[tail_index - 1];
        if prev.end_time() < m.print_time {
            let start = if prev.print_time <= 0.0 && m.print_time > MAX_NULL_MOVE_S {
                m.print_time - MAX_NULL_MOVE_S
            } else {
                prev.end_time()
            };
            let null_move = TrapMove {
                print_time: start,
                move_t: m.print_time - start,
                start_pos: m.start_pos,
                ..TrapMove::default()
            };
            self.insert_before_tail(null_move);
        }
        self.insert_before_tail(m);
        self.tail_stale = true;
    }

    /// Inserts `m` just before the tail sentinel (the sentinel moves one place back).
    #[inline]
    fn insert_before_tail(&mut self, m: TrapMove) {
        if let Some(tail) = self.moves.back_mut() {
            let tail = std::mem::replace(tail, m);
            self.moves.push_back(tail);
        }
    }

    /// Appends a trapezoidal move starting at `print_time` (Klipper's `trapq_append`).
    #[allow(clippy::too_many_arguments)]
    pub fn append(
        &mut self,
        mut print_time: f64,
        accel_t: f64,
        cruise_t: f64,
        decel_t: f64,
        mut start_pos: Coord,
        axes_r: Coord,
        start_v: f64,
        cruise_v: f64,
        accel: f64,
    ) {
        if accel_t != 0.0 {
            let m = TrapMove {
                print_time,
                move_t: accel_t,
                start_v,
                half_accel: 0.5 * accel,
                start_pos,
                axes_r,
            };
            self.add_move(m);
            print_time += accel_t;
            start_pos = m.coord(accel_t);
        }
        if cruise_t != 0.0 {
            let m = TrapMove {
                print_time,
                move_t: cruise_t,
                start_v: cruise_v,
                half_accel: 0.0,
                start_pos,
                axes_r,
            };
            self.add_move(m);
            print_time += cruise_t;
            start_pos = m.coord(cruise_t);
        }
        if decel_t != 0.0 {
            let m = TrapMove {
                print_time,
                move_t: decel_t,
                start_v: cruise_v,
                half_accel: -0.5 * accel,
                start_pos,
                axes_r,
            };
            self.add_move(m);
        }
    }

    /// Moves segments that end at or before `print_time` to the history and drops history that
    /// ended before `clear_history_time` (the newest history entry is always kept).
    pub fn finalize_moves(&mut self, print_time: f64, clear_history_time: f64) {
        // Segments 1..done end by `print_time`: into the history, then out of the queue with
        // the head sentinel taking the place of the last of them.
        let tail = self.moves.len() - 1;
        let mut done = 1;
        while done < tail {
            let m = self.moves[done];
            if m.end_time() > print_time {
                break;
            }
            if m.is_moving() && self.keep_history {
                self.history.push_front(m);
            }
            done += 1;
        }
        if done > 1 {
            self.moves[done - 1] = self.moves[0];
            self.moves.drain(..done - 1);
        }
        if self.moves.len() == 2 {
            self.moves[1].print_time = NEVER_TIME;
            self.tail_stale = false;
        }
        while self.history.len() > 1 {
            let Some(oldest) = self.history.back() else {
                break;
            };
            if oldest.end_time() > clear_history_time {
                break;
            }
            self.history.pop_back();
        }
    }

    /// Declares the toolhead at `pos` from `print_time` on: flushes every segment to the
    /// history, trims history interrupted at `print_time`, and records a marker there.
    pub fn set_position(&mut self, print_time: f64, pos: Coord) {
        self.finalize_moves(NEVER_TIME, 0.0);
        while let Some(m) = self.history.front_mut() {
            if m.print_time < print_time {
                if m.end_time() > print_time {
                    m.move_t = print_time - m.print_time;
                }
                break;
            }
            self.history.pop_front();
        }
        self.history.push_front(TrapMove {
            print_time,
            start_pos: pos,
            ..TrapMove::default()
        });
    }

    /// Segments (active and history) overlapping `[start_time, end_time)`, newest first, at
    /// most `max` of them (Klipper's `trapq_extract_old`). Null moves are left out.
    pub fn extract_old(&self, start_time: f64, end_time: f64, max: usize) -> Vec<TrapMove> {
        let mut out = Vec::new();
        let active = self.moves.iter().skip(1).take(self.moves.len() - 2).rev();
        for m in active {
            if start_time >= m.end_time() || out.len() >= max {
                return out;
            }
            if end_time <= m.print_time || !m.is_moving() {
                continue;
            }
            out.push(*m);
        }
        for m in &self.history {
            if start_time >= m.end_time() || out.len() >= max {
                break;
            }
            if end_time <= m.print_time {
                continue;
            }
            out.push(*m);
        }
        out
    }

    /// Index of the first entry whose end is after `time` (searching from index `from`).
    #[inline]
    pub fn find_from(&self, mut from: usize, time: f64) -> usize {
        while from < self.tail_index() && time >= self.moves[from].end_time() {
            from += 1;
        }
        from
    }

    /// One axis of the position at `move_time` relative to entry `index`, walking to earlier or
    /// later entries when the time falls outside it (used by shapers and smoothing).
    #[inline]
    pub fn axis_across(&self, mut index: usize, axis: usize, mut move_time: f64) -> f64 {
        while move_time < 0.0 && index > 0 {
            index -= 1;
            move_time += self.moves[index].move_t;
        }
        while move_time > self.moves[index].move_t && index < self.tail_index() {
            move_time -= self.moves[index].move_t;
            index += 1;
        }
        self.moves[index].axis_position(axis, move_time)
    }

    /// The commanded toolhead position at `print_time` from the queue or its history, if known.
    pub fn position_at(&self, print_time: f64) -> Option<Coord> {
        for m in self.moves.iter().skip(1).take(self.moves.len() - 2) {
            if print_time >= m.print_time && print_time <= m.end_time() {
                return Some(m.coord(print_time - m.print_time));
            }
        }
        for m in &self.history {
            if print_time >= m.print_time {
                let t = (print_time - m.print_time).min(m.move_t);
                return Some(m.coord(t));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q_with_one_move() -> TrapQ {
        let mut q = TrapQ::new();
        // 0→100 mm/s at 1000 mm/s²: 0.1 s accel (5 mm), 0.1 s cruise (10 mm), 0.1 s decel.
        q.append(
            0.5,
            0.1,
            0.1,
            0.1,
            Coord::default(),
            Coord::new(1.0, 0.0, 0.0),
            0.0,
            100.0,
            1000.0,
        );
        q
    }

    #[test]
    fn append_splits_into_segments_with_a_leading_null_move() {
        let q = q_with_one_move();
        // head, null [−1, 0.5), accel, cruise, decel, tail
        assert_eq!(q.len(), 6);
        assert_eq!(q.get(1).print_time, -1.0);
        assert!((q.get(1).move_t - 1.5).abs() < 1e-12);
        assert!((q.get(3).start_pos.x - 5.0).abs() < 1e-9);
        assert!((q.get(4).start_pos.x - 15.0).abs() < 1e-9);
        let end = q.get(4).coord(0.1);
        assert!((end.x - 20.0).abs() < 1e-9);
    }

    #[test]
    fn the_first_null_move_is_at_most_one_second() {
        let mut q = TrapQ::new();
        q.append(
            5.0,
            0.0,
            1.0,
            0.0,
            Coord::default(),
            Coord::new(1.0, 0.0, 0.0),
            10.0,
            10.0,
            0.0,
        );
        assert_eq!(q.get(1).print_time, 4.0);
        assert_eq!(q.get(1).move_t, 1.0);
    }

    #[test]
    fn finalize_moves_keeps_moving_segments_in_history() {
        let mut q = q_with_one_move();
        q.finalize_moves(0.65, 0.0);
        // null and accel gone (null dropped, accel in history); cruise, decel remain
        assert_eq!(q.len(), 4);
        assert_eq!(q.history.len(), 1);
        let p = q.position_at(0.55).expect("in history");
        assert!((p.x - 1.25).abs() < 1e-9);
        q.finalize_moves(NEVER_TIME, 0.0);
        assert!(q.is_empty());
        assert_eq!(q.history.len(), 3);
        q.finalize_moves(NEVER_TIME, NEVER_TIME);
        assert_eq!(
            q.history.len(),
            1,
            "the newest history entry is always kept"
        );
    }

    #[test]
    fn a_queue_without_history_still_finalizes() {
        let mut q = q_with_one_move();
        q.set_keep_history(false);
        q.finalize_moves(0.65, 0.0);
        assert_eq!(q.len(), 4, "the same segments leave the queue");
        assert!(q.history.is_empty());
        assert!(q.position_at(0.55).is_none());
        q.finalize_moves(NEVER_TIME, 0.0);
        assert!(q.is_empty());
        assert!(q.history.is_empty());
    }

    #[test]
    fn axis_across_walks_to_neighbours() {
        let mut q = q_with_one_move();
        q.check_sentinels();
        // cruise segment is index 3; 0.15 s after its start lies 0.05 s into the decel.
        let x = q.axis_across(3, 0, 0.15);
        let expect = 15.0 + 100.0 * 0.05 - 500.0 * 0.05 * 0.05;
        assert!((x - expect).abs() < 1e-9);
        let x = q.axis_across(3, 0, -0.05);
        assert!((x - (5.0 - (100.0 * 0.05 - 500.0 * 0.05 * 0.05))).abs() < 1e-9);
        // Past the end: the tail sentinel holds the end position.
        assert!((q.axis_across(4, 0, 10.0) - 20.0).abs() < 1e-9);
    }

    #[test]
    fn set_position_trims_history_and_marks() {
        let mut q = q_with_one_move();
        q.set_position(0.55, Coord::new(3.0, 0.0, 0.0));
        assert!(q.is_empty());
        assert_eq!(q.history.front().map(|m| m.start_pos.x), Some(3.0));
        assert!((q.history[1].move_t - 0.05).abs() < 1e-12);
    }
}
