//! The MCU's timer list: timed events keyed by the 64-bit MCU clock.
//!
//! Klipper firmware keeps one sorted list of timers (src/sched.c); each object owns its timers and
//! re-arms or deletes them. Here each timer is named by the object's oid and a [`TimerKind`]; an
//! object has at most one live timer of each kind, as in the firmware, and arming a timer again
//! replaces it. Events due at the same clock run in the order they were armed.
//!
//! Steppers are not on this list: they walk their steps up to each event's clock (see
//! [`crate::stepper`]), which is cheaper than one event per step and gives the same times.
//!
//! The wire carries the MCU's 32-bit timer; [`extend`] widens such a clock to the 64-bit clock
//! nearest a reference, as the firmware's signed comparisons (`timer_is_before`) imply.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// What a timer does when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TimerKind {
    /// An endstop samples its pin (`endstop_home`).
    EndstopSample,
    /// A trsync sends its periodic `trsync_state`.
    TrsyncReport,
    /// A trsync's timeout (`trsync_set_timeout`) expires.
    TrsyncExpire,
    /// A digital output loads its next queued update or checks its `max_duration`.
    DigitalOut,
    /// An analog input finishes a sampling cycle (`query_analog_in`).
    AnalogIn,
}

const KINDS: usize = 5;

impl TimerKind {
    fn index(self) -> usize {
        match self {
            TimerKind::EndstopSample => 0,
            TimerKind::TrsyncReport => 1,
            TimerKind::TrsyncExpire => 2,
            TimerKind::DigitalOut => 3,
            TimerKind::AnalogIn => 4,
        }
    }
}

/// One timer: the object that owns it and what it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TimerId {
    /// The owner's oid.
    pub oid: u8,
    /// What the timer does.
    pub kind: TimerKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    clock: u64,
    seq: u64,
    id: TimerId,
    generation: u32,
}

/// The armed timers, earliest first.
#[derive(Debug, Clone)]
pub struct Timers {
    heap: BinaryHeap<Reverse<Entry>>,
    seq: u64,
    /// The live generation of each (oid, kind); a heap entry of another generation was deleted.
    generations: Vec<[u32; KINDS]>,
}

impl Default for Timers {
    fn default() -> Self {
        Self::new()
    }
}

impl Timers {
    /// No timers.
    pub fn new() -> Self {
        Self {
            heap: BinaryHeap::with_capacity(64),
            seq: 0,
            generations: vec![[0; KINDS]; 256],
        }
    }

    /// Arms `id` at `clock`, replacing its earlier arming if any.
    pub fn arm(&mut self, id: TimerId, clock: u64) {
        let generation = self.bump(id);
        self.seq += 1;
        self.heap.push(Reverse(Entry {
            clock,
            seq: self.seq,
            id,
            generation,
        }));
    }

    /// Deletes `id` (nothing happens if it is not armed).
    pub fn cancel(&mut self, id: TimerId) {
        self.bump(id);
    }

    /// Deletes every timer.
    pub fn clear(&mut self) {
        for g in &mut self.generations {
            for k in g.iter_mut() {
                *k = k.wrapping_add(1);
            }
        }
        self.heap.clear();
    }

    /// The clock of the earliest live timer.
    pub fn next_clock(&mut self) -> Option<u64> {
        self.drop_stale();
        self.heap.peek().map(|Reverse(e)| e.clock)
    }

    /// Removes and returns the earliest live timer if it is due at or before `clock`.
    pub fn pop_due(&mut self, clock: u64) -> Option<(u64, TimerId)> {
        self.drop_stale();
        match self.heap.peek() {
            Some(Reverse(e)) if e.clock <= clock => {
                let (at, id) = (e.clock, e.id);
                self.heap.pop();
                // A fired timer is no longer armed: bump so a stale copy can never fire.
                self.bump(id);
                Some((at, id))
            }
            _ => None,
        }
    }

    fn drop_stale(&mut self) {
        while let Some(Reverse(e)) = self.heap.peek() {
            if self.generations[usize::from(e.id.oid)][e.id.kind.index()] == e.generation {
                return;
            }
            self.heap.pop();
        }
    }

    fn bump(&mut self, id: TimerId) -> u32 {
        let g = &mut self.generations[usize::from(id.oid)][id.kind.index()];
        *g = g.wrapping_add(1);
        *g
    }
}

/// The 64-bit clock nearest `reference` whose low 32 bits are `clock` (within ±2^31 ticks).
pub fn extend(reference: u64, clock: u32) -> u64 {
    // Wire clocks are the MCU's 32-bit timer; only the low bits of the reference matter here.
    #[allow(clippy::cast_possible_truncation)]
    let low = reference as u32;
    let diff = i64::from(clock.wrapping_sub(low).cast_signed());
    reference.saturating_add_signed(diff)
}

/// The low 32 bits of a 64-bit clock: what the MCU's timer reads.
pub fn clock32(clock: u64) -> u32 {
    // Truncation is the point: the MCU's timer is 32 bits wide.
    #[allow(clippy::cast_possible_truncation)]
    let low = clock as u32;
    low
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: TimerId = TimerId {
        oid: 1,
        kind: TimerKind::AnalogIn,
    };
    const B: TimerId = TimerId {
        oid: 2,
        kind: TimerKind::DigitalOut,
    };

    #[test]
    fn timers_fire_in_clock_then_arming_order() {
        let mut t = Timers::new();
        t.arm(A, 100);
        t.arm(B, 50);
        t.arm(TimerId { oid: 3, ..B }, 100);
        assert_eq!(t.next_clock(), Some(50));
        assert_eq!(t.pop_due(49), None);
        assert_eq!(t.pop_due(200), Some((50, B)));
        assert_eq!(t.pop_due(200), Some((100, A)));
        assert_eq!(t.pop_due(200).map(|(_, id)| id.oid), Some(3));
        assert_eq!(t.pop_due(u64::MAX), None);
    }

    #[test]
    fn rearming_replaces_and_cancel_deletes() {
        let mut t = Timers::new();
        t.arm(A, 100);
        t.arm(A, 300);
        t.arm(B, 200);
        t.cancel(B);
        assert_eq!(t.pop_due(1000), Some((300, A)));
        assert_eq!(t.pop_due(1000), None);
        t.arm(A, 5);
        t.clear();
        assert_eq!(t.next_clock(), None);
    }

    #[test]
    fn clocks_extend_to_the_nearest_wrap() {
        assert_eq!(extend(0, 1000), 1000);
        assert_eq!(extend(5_000_000_000, 10), (1 << 32) + 10);
        // Just before a wrap, a small clock is after it; just after, a large clock is before.
        assert_eq!(extend((1 << 32) - 100, 50), (1 << 32) + 50);
        assert_eq!(extend((1 << 32) + 100, u32::MAX - 50), (1 << 32) - 51);
        // Never below zero.
        assert_eq!(extend(100, u32::MAX), 0);
        assert_eq!(clock32((1 << 32) + 7), 7);
    }
}
