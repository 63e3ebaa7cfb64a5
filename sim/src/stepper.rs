//! One stepper as Klipper firmware runs it (src/stepper.c, the fully scheduled step path).
//!
//! `queue_step interval count add` appends a move whose k-th step (k = 1..count) comes
//! `interval + (k−1)·add` after the one before; the first comes `interval` after the previous
//! step (or after the clock `reset_step_clock` set). The direction is latched when a move is
//! queued, from the last `set_next_step_dir`. The position is Klipper's `stepper_position`: steps
//! taken with dir=1 minus steps with dir=0, raw dir bits (a `!` on the dir pin in printer.cfg
//! flips the sign the host reports, not this count). Intervals and adds wrap as the MCU's 32-bit
//! arithmetic does; times are kept on a 64-bit clock so a run knows how long it lasted.
//!
//! Moves are queued and walked lazily: [`Stepper::advance`] takes every step due by a clock, one
//! at a time, so each step's time is exact and the position at any event is right. The walk does
//! no allocation and no logging. Like the firmware, steps are never early and may be late: a step
//! comes no sooner than two pulse widths (`step_pulse_ticks`, step then unstep) after the previous
//! one, one pulse width when stepping on both edges. When a move follows another that is still
//! stepping and its first step would be more than 1 ms before that limit, the firmware shuts down
//! with "Stepper too far in past".
//!
//! After a trsync stop ([`Stepper::stop`]) the queue is flushed and new moves are discarded until
//! `reset_step_clock`, as the firmware's "need reset" state does.

use std::collections::VecDeque;

use crate::sched::{clock32, extend};

/// Why a stepper command was refused (Klipper's shutdown message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepperFault(pub &'static str);

/// One queued move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Move {
    interval: u32,
    count: u16,
    add: i16,
    dir: bool,
}

/// What `queue_step` did with a move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queued {
    /// The stepper was idle: the move was loaded at once (its move-queue slot is free again) and
    /// its first step is due at this clock.
    Started {
        /// The first step's clock.
        first_step_clock: u64,
    },
    /// The stepper is busy: the move waits in its queue and holds a move-queue slot.
    Waiting,
    /// The stepper was stopped by a trigger and needs `reset_step_clock`: the move was dropped.
    Discarded,
}

/// One stepper's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stepper {
    /// The step pin's enumeration value.
    pub step_pin: i64,
    /// The dir pin's enumeration value.
    pub dir_pin: i64,
    /// Steps with dir=1 minus steps with dir=0.
    pub position: i64,
    /// Steps taken, either direction.
    pub steps: u64,
    /// Moves loaded.
    pub moves: u64,
    /// The clock of the last step taken (0 before the first).
    pub last_step_clock64: u64,
    /// The soonest a step may follow the previous one (two pulse widths, or one when stepping on
    /// both edges).
    min_step_gap: u64,
    queue: VecDeque<Move>,
    /// Steps left in the current move.
    count: u32,
    /// The nominal clock of the next step (while `count > 0`).
    due: u64,
    /// The gap after the next step.
    interval: u32,
    add: i16,
    /// The current move's direction.
    dir: bool,
    /// The nominal clock of the last step (or of the reset): the next move's first step counts
    /// its interval from here.
    last_nominal: u64,
    /// The soonest the next step may come (0 when the stepper starts from idle).
    earliest: u64,
    /// The direction the next queued move takes.
    next_dir: bool,
    need_reset: bool,
}

impl Stepper {
    /// A stepper as `config_stepper` creates it: dir pin low, clock 0. `invert_step` −1 means
    /// stepping on both edges.
    pub fn new(step_pin: i64, dir_pin: i64, invert_step: i64, step_pulse_ticks: u32) -> Self {
        let pulse = u64::from(step_pulse_ticks);
        Self {
            step_pin,
            dir_pin,
            position: 0,
            steps: 0,
            moves: 0,
            last_step_clock64: 0,
            min_step_gap: if invert_step < 0 { pulse } else { 2 * pulse },
            queue: VecDeque::with_capacity(64),
            count: 0,
            due: 0,
            interval: 0,
            add: 0,
            dir: false,
            last_nominal: 0,
            earliest: 0,
            next_dir: false,
            need_reset: false,
        }
    }

    /// The clock of the last step, as the MCU's 32-bit timer reads it.
    pub fn last_step_clock(&self) -> u32 {
        clock32(self.last_step_clock64)
    }

    /// Whether steps are still due (the current move or queued ones).
    pub fn is_active(&self) -> bool {
        self.count > 0 || !self.queue.is_empty()
    }

    /// Moves waiting in the queue (each holds a move-queue slot).
    pub fn queued_moves(&self) -> usize {
        self.queue.len()
    }

    /// `set_next_step_dir`.
    pub fn set_next_dir(&mut self, dir: bool) {
        self.next_dir = dir;
    }

    /// `reset_step_clock` at a 64-bit clock: the reference for the next move; also leaves the
    /// stopped state.
    ///
    /// # Errors
    /// "Can't reset time when stepper active" while steps are due.
    pub fn reset_step_clock(&mut self, clock: u64) -> Result<(), StepperFault> {
        if self.is_active() {
            return Err(StepperFault("Can't reset time when stepper active"));
        }
        self.last_nominal = clock;
        self.need_reset = false;
        Ok(())
    }

    /// A trsync fired: stop at once, flush the queue, set the dir pin low and ignore moves until
    /// `reset_step_clock`. Returns the moves flushed (their move-queue slots are free again).
    pub fn stop(&mut self) -> usize {
        let flushed = self.queue.len();
        self.queue.clear();
        self.count = 0;
        self.last_nominal = 0;
        self.earliest = 0;
        self.next_dir = false;
        self.need_reset = true;
        flushed
    }

    /// `queue_step`, arriving when the MCU clock is near `now` (a stepper that starts from idle
    /// schedules its first step on the 64-bit clock nearest `now`). The caller has taken a
    /// move-queue slot for the move.
    ///
    /// # Errors
    /// "Invalid count parameter" for a zero count.
    pub fn queue_step(
        &mut self,
        interval: u32,
        count: u16,
        add: i16,
        now: u64,
    ) -> Result<Queued, StepperFault> {
        if count == 0 {
            return Err(StepperFault("Invalid count parameter"));
        }
        let m = Move {
            interval,
            count,
            add,
            dir: self.next_dir,
        };
        if self.is_active() {
            self.queue.push_back(m);
            return Ok(Queued::Waiting);
        }
        if self.need_reset {
            return Ok(Queued::Discarded);
        }
        let first = extend(now, clock32(self.last_nominal).wrapping_add(interval));
        self.load(m, first);
        self.earliest = 0;
        Ok(Queued::Started {
            first_step_clock: first,
        })
    }

    fn load(&mut self, m: Move, first: u64) {
        self.count = u32::from(m.count);
        self.due = first;
        self.interval = m.interval.wrapping_add(i32::from(m.add).cast_unsigned());
        self.add = m.add;
        self.dir = m.dir;
        self.moves += 1;
    }

    /// Takes every step due at or before `clock`. Returns the moves loaded from the queue (their
    /// move-queue slots are free again).
    ///
    /// # Errors
    /// "Stepper too far in past" when a queued move's first step is more than `past_limit` ticks
    /// before the soonest the stepper can take it.
    pub fn advance(&mut self, clock: u64, past_limit: u64) -> Result<usize, StepperFault> {
        let mut loaded = 0;
        loop {
            if self.count == 0 {
                // The firmware loads the next move right after the last step's pulse.
                if self.queue.is_empty() || self.earliest > clock {
                    return Ok(loaded);
                }
                let Some(m) = self.queue.pop_front() else {
                    return Ok(loaded);
                };
                // Signed 32-bit arithmetic, as the firmware compares the two clocks.
                let first = extend(
                    self.earliest,
                    clock32(self.last_nominal).wrapping_add(m.interval),
                );
                if first.saturating_add(past_limit) < self.earliest {
                    self.queue.push_front(m);
                    return Err(StepperFault("Stepper too far in past"));
                }
                self.load(m, first);
                loaded += 1;
            }
            if !self.walk(clock) {
                return Ok(loaded);
            }
        }
    }

    /// Walks the current move up to `clock`; true when the move is done.
    fn walk(&mut self, clock: u64) -> bool {
        // Locals keep the loop in registers.
        let (mut due, mut earliest, mut interval) = (self.due, self.earliest, self.interval);
        let mut count = self.count;
        let add = i32::from(self.add).cast_unsigned();
        let gap = self.min_step_gap;
        let (mut last, mut last_nominal) = (self.last_step_clock64, self.last_nominal);
        let mut taken: u32 = 0;
        while count > 0 {
            let at = due.max(earliest);
            if at > clock {
                break;
            }
            last = at;
            last_nominal = due;
            earliest = at + gap;
            count -= 1;
            taken += 1;
            // The MCU adds the interval in 32-bit arithmetic and compares signed.
            due = due.saturating_add_signed(i64::from(interval.cast_signed()));
            interval = interval.wrapping_add(add);
        }
        self.due = due;
        self.earliest = earliest;
        self.interval = interval;
        self.count = count;
        self.last_step_clock64 = last;
        self.last_nominal = last_nominal;
        let n = i64::from(taken);
        self.position += if self.dir { n } else { -n };
        self.steps += u64::from(taken);
        count == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walked(s: &mut Stepper) {
        s.advance(u64::MAX, 16_000).expect("no fault");
    }

    #[test]
    fn klippers_worked_example() {
        // reset 1000, then interval=100 count=4 add=10: steps at 1100, 1210, 1330, 1460; then
        // interval=200 count=2: 1660, 1860.
        let mut s = Stepper::new(0, 1, 0, 0);
        s.reset_step_clock(1000).expect("idle");
        s.set_next_dir(true);
        assert_eq!(
            s.queue_step(100, 4, 10, 1000),
            Ok(Queued::Started {
                first_step_clock: 1100
            })
        );
        assert_eq!(s.queue_step(200, 2, 0, 0), Ok(Queued::Waiting));
        s.advance(1330, 16_000).expect("no fault");
        assert_eq!((s.steps, s.last_step_clock64), (3, 1330));
        assert_eq!(
            s.advance(1659, 16_000),
            Ok(1),
            "the next move loads after the last step"
        );
        assert_eq!(s.last_step_clock64, 1460);
        walked(&mut s);
        assert_eq!(s.last_step_clock64, 1860);
        assert_eq!((s.position, s.steps, s.moves), (6, 6, 2));
        assert!(!s.is_active());
    }

    #[test]
    fn direction_is_latched_and_counted_raw() {
        let mut s = Stepper::new(0, 1, 0, 0);
        s.queue_step(10, 5, 0, 0).expect("valid");
        s.set_next_dir(true);
        s.queue_step(10, 2, 0, 0).expect("valid");
        walked(&mut s);
        assert_eq!((s.position, s.steps), (-3, 7));
    }

    #[test]
    fn negative_add_and_clock_wrap() {
        let mut s = Stepper::new(0, 1, 0, 0);
        s.reset_step_clock(4_000_000_000).expect("idle");
        s.queue_step(100, 3, -10, 4_000_000_000).expect("valid"); // 100 + 90 + 80 = 270
        walked(&mut s);
        assert_eq!(s.last_step_clock64, 4_000_000_270);
        // One long step past 2^32: the 32-bit timer wraps, the 64-bit clock keeps counting.
        s.queue_step(300_000_000, 1, 0, s.last_step_clock64)
            .expect("valid");
        walked(&mut s);
        assert_eq!(s.last_step_clock64, 4_300_000_270);
        assert_eq!(s.last_step_clock(), (4_300_000_270_u64 - (1 << 32)) as u32);
    }

    #[test]
    fn steps_are_late_never_early() {
        // 32-tick pulses: a step comes at least 64 ticks after the one before.
        let mut s = Stepper::new(0, 1, 0, 32);
        s.queue_step(100, 1, 0, 0).expect("valid");
        s.queue_step(10, 3, 0, 0).expect("valid"); // nominal 110, 120, 130
        walked(&mut s);
        assert_eq!(s.last_step_clock64, 100 + 3 * 64);
        // Stepping on both edges halves the gap.
        let mut s = Stepper::new(0, 1, -1, 32);
        s.queue_step(100, 1, 0, 0).expect("valid");
        s.queue_step(10, 3, 0, 0).expect("valid");
        walked(&mut s);
        assert_eq!(s.last_step_clock64, 100 + 3 * 32);
    }

    #[test]
    fn a_move_far_before_the_last_step_is_klippers_shutdown() {
        let mut s = Stepper::new(0, 1, 0, 32);
        s.reset_step_clock(1_000_000).expect("idle");
        s.queue_step(100, 1, 0, 1_000_000).expect("valid");
        // An interval of -20000 ticks as the MCU's signed arithmetic reads it.
        s.queue_step((-20_000_i32).cast_unsigned(), 1, 0, 0)
            .expect("queued");
        assert_eq!(
            s.advance(u64::MAX, 16_000),
            Err(StepperFault("Stepper too far in past"))
        );
    }

    #[test]
    fn zero_count_is_klippers_shutdown_and_stopped_steppers_ignore_moves() {
        let mut s = Stepper::new(0, 1, 0, 0);
        assert_eq!(
            s.queue_step(10, 0, 0, 0),
            Err(StepperFault("Invalid count parameter"))
        );
        s.queue_step(10, 5, 0, 0).expect("valid");
        s.queue_step(10, 5, 0, 0).expect("valid");
        s.advance(20, 0).expect("no fault");
        assert_eq!(s.stop(), 1, "one queued move flushed");
        assert_eq!(s.steps, 2);
        assert_eq!(s.queue_step(10, 5, 0, 0), Ok(Queued::Discarded));
        assert_eq!(
            s.reset_step_clock(0),
            Ok(()),
            "stopped, so not active any more"
        );
        s.queue_step(10, 5, 0, 0).expect("valid");
        walked(&mut s);
        assert_eq!((s.steps, s.position), (7, -7));
    }
}
