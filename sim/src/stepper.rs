//! One stepper as Klipper firmware runs it.
//!
//! `queue_step interval count add` appends a move whose k-th step (k = 1..count) comes at
//! `t_last + k·interval + add·k(k−1)/2`, where `t_last` is the previous step's clock (or the clock
//! `reset_step_clock` set); after the move `t_last` is its last step. The direction is latched
//! when a move is queued, from the last `set_next_step_dir`. The position is Klipper's
//! `stepper_position`: steps taken with dir=1 minus steps with dir=0, raw dir bits (a `!` on the
//! dir pin in printer.cfg flips the sign the host reports, not this count). Clocks are the MCU's
//! 32-bit timer and wrap.
//!
//! Every step is walked, so each step's clock is exact (the timing checks build on it); the loop
//! does no allocation and no logging. Besides the MCU's 32-bit clock the stepper keeps a 64-bit
//! one, extended across wraps, so a replay knows how long the print ran.

/// Why a stepper command was refused (Klipper's shutdown message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepperFault(pub &'static str);

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
    /// Moves queued.
    pub moves: u64,
    /// Clock of the last step (or of the last `reset_step_clock`), the MCU's 32-bit timer.
    pub last_step_clock: u32,
    /// The same clock extended to 64 bits across wraps.
    pub last_step_clock64: u64,
    next_dir: bool,
    need_reset: bool,
}

impl Stepper {
    /// A stepper as `config_stepper` creates it: dir pin low, clock 0.
    pub fn new(step_pin: i64, dir_pin: i64) -> Self {
        Self {
            step_pin,
            dir_pin,
            position: 0,
            steps: 0,
            moves: 0,
            last_step_clock: 0,
            last_step_clock64: 0,
            next_dir: false,
            need_reset: false,
        }
    }

    /// `set_next_step_dir`.
    pub fn set_next_dir(&mut self, dir: bool) {
        self.next_dir = dir;
    }

    /// `reset_step_clock`: the reference for the next move; also leaves the stopped state.
    pub fn reset_step_clock(&mut self, clock: u32) {
        // The nearest 64-bit clock with these low 32 bits (a signed difference, as hosts extend).
        let diff = i64::from(clock.wrapping_sub(self.last_step_clock).cast_signed());
        self.last_step_clock64 = self.last_step_clock64.saturating_add_signed(diff);
        self.last_step_clock = clock;
        self.need_reset = false;
    }

    /// A trsync fired: stop and ignore moves until `reset_step_clock`.
    pub fn stop(&mut self) {
        self.need_reset = true;
    }

    /// `queue_step`, applied at once.
    ///
    /// # Errors
    /// `Invalid count parameter` for a zero count.
    pub fn queue_step(&mut self, interval: u32, count: u16, add: i16) -> Result<(), StepperFault> {
        if count == 0 {
            return Err(StepperFault("Invalid count parameter"));
        }
        if self.need_reset {
            return Ok(()); // Discarded after a trigger stop, as the firmware does.
        }
        let n = i64::from(count);
        // Step k (from 0) comes `interval + k·add` after the one before, in 32-bit timer
        // arithmetic as on the MCU.
        let mut clock = self.last_step_clock;
        let mut step_interval = interval;
        let add32 = i32::from(add).cast_unsigned();
        let mut span: u64 = 0;
        for _ in 0..count {
            clock = clock.wrapping_add(step_interval);
            span += u64::from(step_interval);
            step_interval = step_interval.wrapping_add(add32);
        }
        self.last_step_clock = clock;
        self.last_step_clock64 += span;
        self.position += if self.next_dir { n } else { -n };
        self.steps += u64::from(count);
        self.moves += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn klippers_worked_example() {
        // reset 1000, then interval=100 count=4 add=10: steps at 1100, 1210, 1330, 1460; then
        // interval=200 count=2: 1660, 1860.
        let mut s = Stepper::new(0, 1);
        s.reset_step_clock(1000);
        s.set_next_dir(true);
        s.queue_step(100, 4, 10).expect("valid");
        assert_eq!(s.last_step_clock, 1460);
        s.queue_step(200, 2, 0).expect("valid");
        assert_eq!(s.last_step_clock, 1860);
        assert_eq!((s.position, s.steps), (6, 6));
    }

    #[test]
    fn direction_is_latched_and_counted_raw() {
        let mut s = Stepper::new(0, 1);
        s.queue_step(10, 5, 0).expect("valid");
        s.set_next_dir(true);
        s.queue_step(10, 2, 0).expect("valid");
        assert_eq!((s.position, s.steps), (-3, 7));
    }

    #[test]
    fn negative_add_and_clock_wrap() {
        let mut s = Stepper::new(0, 1);
        // Move the clock forward in steps under 2^31, as a host's resets do.
        s.reset_step_clock(2_000_000_000);
        s.reset_step_clock(4_000_000_000);
        assert_eq!(s.last_step_clock64, 4_000_000_000);
        s.queue_step(100, 3, -10).expect("valid"); // 100 + 90 + 80 = 270
        assert_eq!(s.last_step_clock, 4_000_000_270);
        // One long step past 2^32: the 32-bit timer wraps, the 64-bit clock keeps counting.
        s.queue_step(300_000_000, 1, 0).expect("valid");
        assert_eq!(s.last_step_clock64, 4_300_000_270);
        assert_eq!(s.last_step_clock, (4_300_000_270_u64 - (1 << 32)) as u32);
        s.reset_step_clock(s.last_step_clock.wrapping_add(10));
        assert_eq!(
            s.last_step_clock64, 4_300_000_280,
            "a reset after the wrap lands after it"
        );
    }

    #[test]
    fn zero_count_is_klippers_shutdown_and_stopped_steppers_ignore_moves() {
        let mut s = Stepper::new(0, 1);
        assert_eq!(
            s.queue_step(10, 0, 0),
            Err(StepperFault("Invalid count parameter"))
        );
        s.stop();
        s.queue_step(10, 5, 0).expect("ignored, not refused");
        assert_eq!(s.steps, 0);
        s.reset_step_clock(0);
        s.queue_step(10, 5, 0).expect("valid");
        assert_eq!(s.steps, 5);
    }
}
