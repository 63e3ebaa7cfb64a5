//! Step compression: requested step times in, Klipper `queue_step` commands out.
//!
//! The step generator produces one time per step. The MCU, instead, takes piecewise quadratic
//! schedules: `queue_step interval count add` means `count` steps where step `k` (1-based) is
//! at `t_last + k·interval + add·k(k−1)/2` ticks, `t_last` being the previous step (or the
//! `reset_step_clock` clock). [`StepCompress`] turns the former into the latter so that the MCU
//! produces the same step times as Klipper's host (`klippy/chelper/stepcompress.c`) would make
//! it produce: same windows, same search for `add`/`interval`/`count`, same direction,
//! far-step and step+dir+step handling, hence byte-identical command streams.
//!
//! # Tolerance
//! A requested step at `p` (ticks after the last step already sent to the MCU) may be placed
//! anywhere in `[p − min(max_error, (p − p_prev)/2), p]`: never late, at most `max_error` early,
//! and never closer to the previous step than half the requested gap. `p_prev` is the previous
//! requested step of the same command, or the last emitted step for the first step of a command.
//!
//! # Clocks
//! Host clocks are `u64`. Like Klipper, the queue of requested steps stores only the low 32 bits
//! and all search arithmetic is done on 32-bit offsets from the last emitted step; the far-step
//! rule (a step [`CLOCK_DIFF_MAX`] or more after the last emitted step flushes the queue first)
//! keeps those offsets well inside `i32`. Arithmetic that may wrap in Klipper's C wraps here too
//! (explicitly), so odd inputs end in a [`StepCompressError`], never in a panic.
//!
//! # Output
//! Commands are queued as [`StepMessage`]s carrying `req_clock`/`min_clock` exactly as Klipper
//! sets them for steppersync: a `queue_step` has `min_clock = req_clock =` the clock of the step
//! before it (a non-zero `min_clock` tells the consumer that the command takes a move-queue slot),
//! except that a lone far step has `req_clock =` its own clock; `set_next_step_dir` and
//! `reset_step_clock` have `min_clock = 0`. (As in Klipper, the first `queue_step` after a reset
//! to clock 0 also has `min_clock = 0`.) Read them with [`StepCompress::messages`] and drop the
//! ones taken with [`StepCompress::consume_messages`] (the toolhead's merge), or move them out
//! with [`StepCompress::drain_messages`].
//!
//! No I/O, no clock reads, no allocation per step: the step queue is a buffer that is compacted
//! in place and grows only when full.

use std::collections::VecDeque;

use crate::isa::Isa;

/// Largest gap (ticks) between the last emitted step and a queued one; a step at least this far
/// after the last emitted step is sent on its own (`count = 1`) after flushing the queue.
pub const CLOCK_DIFF_MAX: u64 = 3 << 28;

/// Step+dir+step filter (seconds): a step in the opposite direction this soon after a step that
/// is still uncommitted cancels both.
pub const SDS_FILTER_TIME: f64 = 0.000_750;

/// Largest `count` of one `queue_step`.
const MAX_COUNT: usize = 65_535;

/// Steps [`StepCompress::append_times`] converts and checks together.
const APPEND_CHUNK: usize = 64;

/// Pending steps beyond [`MAX_COUNT`] tolerated before the queue is flushed when it fills up.
const QUEUE_FLUSH_SLACK: usize = 2_000;

/// First allocation of the step queue, in steps.
const QUEUE_START_SIZE: usize = 1_024;

/// Bound used to narrow the `add` search: two quadratic sequences that both stay within
/// `max_error` of the same `count` points differ in `add` by at most `(6 + 4√2)·max_error/count²`;
/// Klipper rounds the factor down to 11 and so must we, for identical output.
const ADD_DEVIATION_FACTOR: u32 = 11;

/// Intervals at or above this value are rejected (the MCU treats them as negative).
const INTERVAL_LIMIT: u32 = 0x8000_0000;

/// One command for the MCU's stepper object (the `oid` is added by the caller).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepCommand {
    /// `queue_step oid interval count add`: `count` steps, step `k` at
    /// `t_last + k·interval + add·k(k−1)/2`.
    QueueStep {
        /// Ticks from the previous step to the first step of this command.
        interval: u32,
        /// Number of steps (1..=65535).
        count: u16,
        /// Change of the interval after each step.
        add: i16,
    },
    /// `set_next_step_dir oid dir`: the direction of the following `queue_step`s, already XORed
    /// with the stepper's `invert_dir`.
    SetNextStepDir {
        /// Direction pin level for the next steps.
        dir: bool,
    },
    /// `reset_step_clock oid clock`: new reference time for the next `queue_step`.
    ResetStepClock {
        /// The MCU clock (low 32 bits).
        clock: u32,
    },
}

/// A [`StepCommand`] with the clocks the move-queue scheduler (steppersync) orders and budgets by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StepMessage {
    /// Clock the command is ordered by (when the MCU will need it).
    pub req_clock: u64,
    /// For `queue_step`: the clock at which the MCU will have consumed the previous command (a
    /// non-zero value marks a command that takes a move-queue slot); 0 for the other commands.
    pub min_clock: u64,
    /// The command itself.
    pub command: StepCommand,
}

/// Why a step could not be turned into MCU commands. Klipper treats all of these as
/// "Internal error in stepcompress" and shuts the printer down.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum StepCompressError {
    /// `append` was called before `set_time` gave a usable MCU frequency.
    #[error("stepcompress: MCU frequency not set or invalid ({mcu_freq} Hz)")]
    NoFrequency {
        /// The frequency in use.
        mcu_freq: f64,
    },
    /// A step time is NaN or infinite, or too far away to be a clock.
    #[error(
        "stepcompress: step time out of range (print_time {print_time} s + step_time {step_time} s, \
         last step clock {last_step_clock})"
    )]
    TimeOutOfRange {
        /// The `print_time` argument.
        print_time: f64,
        /// The `step_time` argument.
        step_time: f64,
        /// The clock of the last step sent to the MCU.
        last_step_clock: u64,
    },
    /// A step was requested before the last step already sent to the MCU.
    #[error(
        "stepcompress: step at clock {step_clock} is before the last step clock {last_step_clock}"
    )]
    StepInPast {
        /// The requested clock (for a time-based append: the clock it rounds to, saturated at 0).
        step_clock: u64,
        /// The clock of the last step sent to the MCU.
        last_step_clock: u64,
    },
    /// The search produced a triple the MCU cannot execute (count 0, interval ≥ 2³¹, or a
    /// zero-interval multi-step command).
    #[error(
        "stepcompress: invalid sequence interval={interval} count={count} add={add} \
         (after clock {last_step_clock})"
    )]
    InvalidSequence {
        /// Proposed interval.
        interval: u32,
        /// Proposed count.
        count: u16,
        /// Proposed add.
        add: i16,
        /// The clock the command would start from.
        last_step_clock: u64,
    },
    /// Replaying the proposed triple puts a step outside its window.
    #[error(
        "stepcompress: interval={interval} count={count} add={add}: step {step} at +{offset} ticks \
         not in {min}..={max} (after clock {last_step_clock})"
    )]
    StepOutsideWindow {
        /// Proposed interval.
        interval: u32,
        /// Proposed count.
        count: u16,
        /// Proposed add.
        add: i16,
        /// 1-based index of the offending step.
        step: u32,
        /// Its replayed time, ticks after `last_step_clock` (32-bit wrapping, as the MCU does).
        offset: u32,
        /// Earliest acceptable offset.
        min: i32,
        /// Latest acceptable offset (the requested time).
        max: i32,
        /// The clock the command would start from.
        last_step_clock: u64,
    },
    /// Replaying the proposed triple makes an interval reach 2³¹ ticks or go negative.
    #[error(
        "stepcompress: interval={interval} count={count} add={add}: step {step} interval overflow \
         {step_interval} (after clock {last_step_clock})"
    )]
    IntervalOverflow {
        /// Proposed interval.
        interval: u32,
        /// Proposed count.
        count: u16,
        /// Proposed add.
        add: i16,
        /// 1-based index of the offending step.
        step: u32,
        /// The interval in effect before that step, as a 32-bit value.
        step_interval: u32,
        /// The clock the command would start from.
        last_step_clock: u64,
    },
}

/// One emitted `queue_step` (or a position marker) kept to answer "where was the stepper at
/// clock X" ([`StepCompress::find_past_position`]) and for step dumps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PastSteps {
    /// Clock of the first step (for a marker: the marker's clock).
    pub first_clock: u64,
    /// Clock of the last step (for a marker: the marker's clock).
    pub last_clock: u64,
    /// Stepper position (host steps) before the first step.
    pub start_position: i64,
    /// Signed number of steps (negative when moving in the host's negative direction; 0 for a
    /// marker).
    pub step_count: i32,
    /// The command's interval.
    pub interval: i32,
    /// The command's add.
    pub add: i32,
}

/// A candidate `queue_step`, in the C field types (truncated as Klipper truncates them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Triple {
    interval: u32,
    count: u16,
    add: i16,
}

impl Triple {
    /// Narrows the search's `i32` values to the wire types (wrapping, as the C struct does).
    fn from_search(interval: i32, count: i32, add: i32) -> Self {
        Self {
            interval: interval as u32,
            count: count as u16,
            add: add as i16,
        }
    }
}

/// One pass of [`StepCompress::best_triple`]'s search: its `add` and the interval bounds it
/// started from.
#[derive(Clone, Copy, Debug)]
struct Pass {
    add: i32,
    outer_min: i32,
    outer_max: i32,
}

/// The acceptable placement of one queued step, in ticks after the last emitted step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Window {
    earliest: i32,
    latest: i32,
}

impl Window {
    /// The window of a step requested `point` ticks after the last emitted step, the step
    /// before it at `previous` (0 for the first queued step): at most `max_error` early, and
    /// never earlier than halfway from the previous step.
    #[inline(always)]
    fn of(point: u32, previous: u32, max_error: u32) -> Self {
        let slack = (point.wrapping_sub(previous) / 2).min(max_error);
        Self {
            earliest: point.wrapping_sub(slack) as i32,
            latest: point as i32,
        }
    }
}

/// Klipper's step compressor for one stepper (see the module documentation).
#[derive(Debug, Clone)]
pub struct StepCompress {
    /// Allowed earliness of a step, in ticks.
    max_error: u32,
    /// `max_error·11 / count²` (wrapping as in Klipper) by count, for the counts where it is
    /// not 0, up to [`SPREAD_TABLE_MAX`]: the bisection takes it on every pass, and a
    /// division there sits on the pass's critical path.
    spreads: Box<[u32]>,
    /// Whether the direction pin is inverted (XORed into `set_next_step_dir`).
    invert_dir: bool,
    /// Print time of MCU clock 0.
    mcu_time_offset: f64,
    /// MCU ticks per second.
    mcu_freq: f64,
    /// `mcu_freq` is finite and positive (checked once, not per step).
    freq_ok: bool,
    /// Print time of `last_step_clock` minus half a tick (so that truncation rounds to nearest).
    last_step_print_time: f64,
    /// Clock of the last step sent (or of the last reset).
    last_step_clock: u64,
    /// Host direction of the last `set_next_step_dir` sent; `None` until one is sent after a
    /// reset. Flipped by [`StepCompress::set_invert_dir`] so that the next step re-sends it.
    sent_dir: Option<bool>,
    /// Step queue: low 32 bits of requested clocks; `queue.len()` is the allocated size and the
    /// live steps are `queue[queue_pos..queue_next]`.
    queue: Vec<u32>,
    queue_pos: usize,
    queue_next: usize,
    /// Full clock of the newest step put in the queue.
    last_queued: u64,
    /// Every queue entry from this index on was queued at or after the entry before it (in
    /// full clocks): where a command starts at or after it, [`StepCompress::proven`] may stand
    /// for [`StepCompress::validate`]. Steps always come in order from the step generator.
    ordered_from: usize,
    /// The newest requested step, not yet in the queue (it may still be cancelled by the
    /// step+dir+step filter).
    pending_clock: Option<u64>,
    /// Direction of the newest requested step (kept after it is queued or cancelled).
    pending_dir: bool,
    /// Position (host steps) after all emitted steps.
    last_position: i64,
    /// Emitted commands and position markers, oldest first.
    history: VecDeque<PastSteps>,
    /// Whether emitted commands are kept in `history` ([`StepCompress::set_keep_history`]).
    keep_history: bool,
    /// Commands not yet taken (consumed or drained), oldest first.
    messages: Vec<StepMessage>,
    /// The search's per-step bounds for the command being searched ([`StepBounds`]).
    bounds: StepBounds,
    /// The instruction set the search runs with ([`Isa`]).
    isa: Isa,
    /// [`StepCompress::append_chunk`]'s clocks: kept from call to call, so that they are not
    /// zeroed each time (a `memset` call per chunk; only the entries written are read).
    chunk_clocks: [u64; APPEND_CHUNK + 1],
}

impl StepCompress {
    /// A compressor allowing steps `max_error_ticks` early (Klipper: 25 µs in ticks), with the
    /// direction pin inverted if `invert_dir`. Call [`StepCompress::set_time`] before `append`.
    pub fn new(max_error_ticks: u32, invert_dir: bool) -> Self {
        Self {
            max_error: max_error_ticks,
            spreads: spread_table(max_error_ticks),
            invert_dir,
            mcu_time_offset: 0.0,
            mcu_freq: 0.0,
            freq_ok: false,
            last_step_print_time: 0.0,
            last_step_clock: 0,
            sent_dir: None,
            queue: Vec::new(),
            queue_pos: 0,
            queue_next: 0,
            last_queued: 0,
            ordered_from: 0,
            pending_clock: None,
            pending_dir: false,
            last_position: 0,
            history: VecDeque::new(),
            keep_history: true,
            messages: Vec::new(),
            bounds: StepBounds::default(),
            isa: Isa::detect(),
            chunk_clocks: [0; APPEND_CHUNK + 1],
        }
    }

    /// Runs the search with `isa` ([`Isa::BASELINE`], or one of [`Isa::available`]): the same
    /// commands with each, which the tests check.
    pub fn set_isa(&mut self, isa: Isa) {
        self.isa = isa;
    }

    /// Changes the direction-pin inversion. If a direction was already sent, the next step sends
    /// `set_next_step_dir` again (Klipper's behaviour: the remembered direction is flipped).
    pub fn set_invert_dir(&mut self, invert: bool) {
        if invert != self.invert_dir {
            self.invert_dir = invert;
            if let Some(dir) = self.sent_dir.as_mut() {
                *dir = !*dir;
            }
        }
    }

    /// Sets the print-time → MCU-clock conversion: clock = (print_time − time_offset)·mcu_freq.
    pub fn set_time(&mut self, time_offset: f64, mcu_freq: f64) {
        self.mcu_time_offset = time_offset;
        self.mcu_freq = mcu_freq;
        self.freq_ok = mcu_freq.is_finite() && mcu_freq > 0.0;
        self.update_last_step_print_time();
    }

    /// Whether the direction pin is inverted.
    pub fn invert_dir(&self) -> bool {
        self.invert_dir
    }

    /// The current host-side direction (that of the newest requested step), before inversion.
    pub fn step_dir(&self) -> bool {
        self.pending_dir
    }

    /// Clock of the last step sent to the MCU (or of the last reset).
    pub fn last_step_clock(&self) -> u64 {
        self.last_step_clock
    }

    /// Position (host steps) after all steps emitted so far.
    pub fn last_position(&self) -> i64 {
        self.last_position
    }

    /// MCU ticks per second (as given to [`StepCompress::set_time`]).
    pub fn mcu_freq(&self) -> f64 {
        self.mcu_freq
    }

    /// `print_time` as a fractional MCU clock, `(print_time − time_offset)·mcu_freq`: a step
    /// appended at `print_time` gets the clock of this value rounded to the nearest tick.
    pub fn clock_position(&self, print_time: f64) -> f64 {
        (print_time - self.mcu_time_offset) * self.mcu_freq
    }

    /// What [`StepCompress::append`] adds to a step's time (seconds after `print_time`) before
    /// it multiplies by the frequency: the clock of a step at `step_time` is the last step
    /// clock plus the integer part of `(step_time + append_offset(print_time))·mcu_freq`, with
    /// these operations, as long as the last step clock stays where it is
    /// ([`StepCompress::keeps_last_step_for`]).
    pub(crate) fn append_offset(&self, print_time: f64) -> f64 {
        print_time - self.last_step_print_time
    }

    /// Whether `steps` more steps in direction `dir`, none of them a far step, enter the queue
    /// without a command being emitted — no direction to send first, no flush to make room —
    /// so that the last step clock (and its print time) stays where it is meanwhile.
    pub(crate) fn keeps_last_step_for(&self, dir: bool, steps: usize) -> bool {
        self.freq_ok
            && self.sent_dir == Some(dir)
            && (self.pending_clock.is_none() || self.pending_dir == dir)
            && (self.queue_next - self.queue_pos)
                .saturating_add(steps)
                .saturating_add(1)
                < MAX_COUNT + QUEUE_FLUSH_SLACK
    }

    /// The allowed earliness of a step, in ticks.
    pub fn max_error(&self) -> u32 {
        self.max_error
    }

    /// Commands not yet drained, oldest first.
    pub fn messages(&self) -> &[StepMessage] {
        &self.messages
    }

    /// Moves all queued commands to the end of `out`, oldest first.
    pub fn drain_messages(&mut self, out: &mut Vec<StepMessage>) {
        self.drain_messages_from(0, out);
    }

    /// Moves the queued commands from the `from`-th on (oldest first) to the end of `out`;
    /// the ones before stay queued.
    pub fn drain_messages_from(&mut self, from: usize, out: &mut Vec<StepMessage>) {
        let from = from.min(self.messages.len());
        out.extend(self.messages.drain(from..));
    }

    /// Drops the `n` oldest queued commands (a consumer took them from
    /// [`StepCompress::messages`]).
    pub fn consume_messages(&mut self, n: usize) {
        self.messages.drain(..n.min(self.messages.len()));
    }

    /// Requests a step in direction `sdir` (host side, before inversion) at
    /// `print_time + step_time` seconds. The clock is the nearest tick:
    /// `last_step_clock + trunc((step_time + print_time − last_step_print_time)·mcu_freq)`.
    #[inline]
    #[expect(
        clippy::neg_cmp_op_on_partial_ord,
        reason = "the negated comparison also rejects NaN, in one test"
    )]
    pub fn append(
        &mut self,
        sdir: bool,
        print_time: f64,
        step_time: f64,
    ) -> Result<(), StepCompressError> {
        if !self.freq_ok {
            return Err(StepCompressError::NoFrequency {
                mcu_freq: self.mcu_freq,
            });
        }
        // Same operation order as Klipper, so that rounding matches to the tick.
        let offset = print_time - self.last_step_print_time;
        let ticks = (step_time + offset) * self.mcu_freq;
        let out_of_range = || StepCompressError::TimeOutOfRange {
            print_time,
            step_time,
            last_step_clock: self.last_step_clock,
        };
        // 2^63: far beyond any real clock, and exactly representable. (NaN and +∞ fail here;
        // −∞ is caught with the steps in the past.)
        if !(ticks < 9_223_372_036_854_775_808.0) {
            return Err(out_of_range());
        }
        if ticks <= -1.0 {
            if ticks == f64::NEG_INFINITY {
                return Err(out_of_range());
            }
            return Err(StepCompressError::StepInPast {
                step_clock: self.last_step_clock.saturating_sub((-ticks) as u64),
                last_step_clock: self.last_step_clock,
            });
        }
        // Truncation toward zero (a value in (−1, 0) gives the last step clock, as in C). In
        // (−1, 2⁶³) the conversion through i64 is exact and cheaper than a direct one to u64.
        let step_clock = self
            .last_step_clock
            .checked_add((ticks as i64) as u64)
            .ok_or_else(out_of_range)?;
        self.append_clock(sdir, step_clock)
    }

    /// [`StepCompress::append`] of one step per entry of `step_times` (seconds after
    /// `print_time`, not decreasing), in direction `sdir`: the same results, with the common
    /// case — the step before pending in the same direction or none pending (a commit took
    /// it), the direction sent, room in the queue, nothing far — taken for the whole slice at
    /// once: the clocks are computed as
    /// `append` computes them, checked together, and written to the queue behind the pending
    /// step (the step generator's inner loop). Otherwise step by step through `append`.
    ///
    /// # Errors
    /// As [`StepCompress::append`], at the first step that fails.
    #[inline(always)]
    pub fn append_times(
        &mut self,
        sdir: bool,
        print_time: f64,
        step_times: &[f64],
    ) -> Result<(), StepCompressError> {
        let mut rest = step_times;
        while !rest.is_empty() {
            let n = rest.len().min(APPEND_CHUNK);
            let (chunk, after) = rest.split_at(n);
            rest = after;
            if !self.append_chunk(sdir, print_time, chunk) {
                for &step_time in chunk {
                    self.append(sdir, print_time, step_time)?;
                }
            }
        }
        Ok(())
    }

    /// The fast path of [`StepCompress::append_times`] for at most [`APPEND_CHUNK`] steps
    /// (the rest of a longer slice is ignored); `false` (and nothing changed) when some step
    /// needs `append`'s general path.
    #[inline(always)]
    fn append_chunk(&mut self, sdir: bool, print_time: f64, step_times: &[f64]) -> bool {
        let step_times = &step_times[..step_times.len().min(APPEND_CHUNK)];
        let n = step_times.len();
        if n == 0
            || !self.freq_ok
            || self.pending_clock.is_some() && self.pending_dir != sdir
            || self.sent_dir != Some(sdir)
            || self.queue_next + n > self.queue.len()
        {
            return false;
        }
        // The operations of `append`, so that every clock is the same to the tick.
        let offset = print_time - self.last_step_print_time;
        // Every step at 0 ≤ ticks after the last step sent and short of a far step — the
        // newest too, though only the pending step and the ones before the newest enter the
        // queue now (a far newest step is rare: `append` takes it). A NaN fails.
        let limit = CLOCK_DIFF_MAX as f64;
        let base = self.last_step_clock;
        // The clocks in order: the pending step's (if any) at 0, then the new ones from 1 on.
        // Each loop below is element-wise (no value carried from step to step), so that it
        // vectorises.
        let clocks = &mut self.chunk_clocks;
        let mut in_range = true;
        for (clock, &step_time) in clocks[1..].iter_mut().zip(step_times) {
            let tick = (step_time + offset) * self.mcu_freq;
            in_range &= (0.0..limit).contains(&tick);
            // (Truncation, as `append`'s; used only where every tick is in range: then the
            // conversion is exact and base + ticks stays short of the far clock.)
            *clock = base.wrapping_add(truncated(tick));
        }
        if !in_range {
            return false;
        }
        // With no step pending (a commit took it), the first step becomes the pending one, as
        // `append_clock` makes it (not far: checked with the others).
        let first = match self.pending_clock {
            Some(previous) => {
                clocks[0] = previous;
                0
            }
            None => 1,
        };
        // (`..n + 1` rather than `..=n`: the inclusive form's check is a call in some builds.)
        let clocks = &clocks[first..n + 1];
        let previous = clocks[0];
        if previous >= base.saturating_add(CLOCK_DIFF_MAX) {
            return false;
        }
        // All but the newest enter the queue; each is checked against the one queued before.
        let queued = clocks.len() - 1;
        let entering = &clocks[..queued];
        let slots = &mut self.queue[self.queue_next..self.queue_next + queued];
        for (slot, &clock) in slots.iter_mut().zip(entering) {
            *slot = clock as u32;
        }
        let mut disordered = queued > 0 && previous < self.last_queued;
        for (&clock, &prior) in entering.get(1..).unwrap_or_default().iter().zip(entering) {
            disordered |= clock < prior;
        }
        self.queue_next += queued;
        // (The newest stays pending, and is compared with the last queued when it is queued.)
        if let Some(&last) = entering.last() {
            self.last_queued = last;
        }
        if disordered {
            self.ordered_from = self.queue_next;
        }
        let newest = clocks[queued];
        self.pending_clock = Some(newest);
        self.pending_dir = sdir;
        true
    }

    /// Requests a step in direction `sdir` at an absolute MCU clock (what [`StepCompress::append`]
    /// does after converting time to clock).
    #[inline]
    pub fn append_clock(&mut self, sdir: bool, step_clock: u64) -> Result<(), StepCompressError> {
        if step_clock < self.last_step_clock {
            return Err(StepCompressError::StepInPast {
                step_clock,
                last_step_clock: self.last_step_clock,
            });
        }
        if let Some(pending) = self.pending_clock {
            if sdir != self.pending_dir {
                // A reversal this soon after an uncommitted step: drop both (jitter around a
                // step boundary would otherwise toggle the pin back and forth).
                let gap = step_clock.wrapping_sub(pending) as i64 as f64;
                if gap < SDS_FILTER_TIME * self.mcu_freq {
                    self.pending_clock = None;
                    self.pending_dir = sdir;
                    return Ok(());
                }
            }
            self.queue_pending()?;
        }
        self.pending_clock = Some(step_clock);
        self.pending_dir = sdir;
        Ok(())
    }

    /// Makes the newest requested step final: it can no longer be cancelled by the
    /// step+dir+step filter.
    #[inline]
    pub fn commit(&mut self) -> Result<(), StepCompressError> {
        if self.pending_clock.is_some() {
            self.queue_pending()?;
        }
        Ok(())
    }

    /// Emits commands for every requested step before `move_clock` (a step at exactly
    /// `move_clock` is committed and may be emitted too). `u64::MAX` emits everything.
    pub fn flush(&mut self, move_clock: u64) -> Result<(), StepCompressError> {
        if let Some(pending) = self.pending_clock
            && move_clock >= pending
        {
            self.queue_pending()?;
        }
        self.flush_queue(move_clock)
    }

    /// Flushes everything, then restarts the step clock at `last_step_clock` (Klipper does this
    /// with 0 after homing stops a stepper) and queues the matching `reset_step_clock`. The next
    /// step re-sends its direction.
    pub fn reset(&mut self, last_step_clock: u64) -> Result<(), StepCompressError> {
        self.flush(u64::MAX)?;
        self.last_step_clock = last_step_clock;
        self.last_queued = last_step_clock;
        self.sent_dir = None;
        self.update_last_step_print_time();
        self.messages.push(StepMessage {
            req_clock: last_step_clock,
            min_clock: 0,
            command: StepCommand::ResetStepClock {
                clock: last_step_clock as u32,
            },
        });
        Ok(())
    }

    /// Flushes everything, then declares the stepper to be at `last_position` (host steps) as
    /// of `clock` (e.g. from `stepper_get_position`), leaving a marker in the history.
    pub fn set_last_position(
        &mut self,
        clock: u64,
        last_position: i64,
    ) -> Result<(), StepCompressError> {
        self.flush(u64::MAX)?;
        self.last_position = last_position;
        if self.keep_history {
            self.history.push_back(PastSteps {
                first_clock: clock,
                last_clock: clock,
                start_position: last_position,
                step_count: 0,
                interval: 0,
                add: 0,
            });
        }
        Ok(())
    }

    /// The stepper position (host steps) at `clock`, counting every step at or before it,
    /// from the history of emitted commands (only emitted steps are known).
    pub fn find_past_position(&self, clock: u64) -> i64 {
        let mut position = self.last_position;
        for entry in self.history.iter().rev() {
            if clock < entry.first_clock {
                position = entry.start_position;
                continue;
            }
            if clock >= entry.last_clock {
                return entry.start_position + i64::from(entry.step_count);
            }
            // Inside a command: how many of its steps are at or before `clock`? Step k (from 1)
            // is at first_clock − interval + k·interval + add·k(k−1)/2, so the count is the
            // integer part of the k solving add/2·k² + (interval − add/2)·k = ticks, where
            // ticks = clock − first_clock + interval.
            let interval = entry.interval;
            let add = entry.add;
            let ticks = ((clock - entry.first_clock) as i32).wrapping_add(interval);
            let steps: i32 = if add == 0 {
                if interval == 0 {
                    0
                } else {
                    ticks.wrapping_div(interval)
                }
            } else {
                // Quadratic formula; a NaN (no real root) becomes 0, as a saturating cast.
                let a = 0.5 * f64::from(add);
                let b = f64::from(interval) - 0.5 * f64::from(add);
                let c = -f64::from(ticks);
                (((b * b - 4.0 * a * c).sqrt() - b) / (2.0 * a)) as i32
            };
            return if entry.step_count < 0 {
                entry.start_position - i64::from(steps)
            } else {
                entry.start_position + i64::from(steps)
            };
        }
        position
    }

    /// Whether emitted commands are kept in the history behind
    /// [`StepCompress::find_past_position`] and [`StepCompress::past_steps`] (on by default).
    /// A run that never asks for a past position (a batch run) switches it off: the messages
    /// are the same, the history stays empty (switching off forgets it), and its queries
    /// answer the current position for every clock.
    pub fn set_keep_history(&mut self, keep: bool) {
        self.keep_history = keep;
        if !keep {
            self.history.clear();
        }
    }

    /// Forgets the oldest history entries that end at or before `end_clock`. The history grows
    /// by one entry per emitted `queue_step` until this is called (Klipper's steppersync calls it
    /// on every flush with the clock of the oldest time still of interest).
    pub fn history_expire(&mut self, end_clock: u64) {
        while let Some(oldest) = self.history.front() {
            if oldest.last_clock > end_clock {
                break;
            }
            self.history.pop_front();
        }
    }

    /// History entries overlapping `start_clock..end_clock`, newest first (Klipper's
    /// `stepcompress_extract_old`, used for step dumps).
    pub fn past_steps(
        &self,
        start_clock: u64,
        end_clock: u64,
    ) -> impl Iterator<Item = PastSteps> + '_ {
        self.history
            .iter()
            .rev()
            .take_while(move |entry| start_clock < entry.last_clock)
            .filter(move |entry| end_clock > entry.first_clock)
            .copied()
    }

    // ---- internals -------------------------------------------------------------------------

    fn update_last_step_print_time(&mut self) {
        let clock = self.last_step_clock as f64;
        self.last_step_print_time = self.mcu_time_offset + (clock - 0.5) / self.mcu_freq;
    }

    /// Moves the pending step into the queue, sending a direction change or a far step first
    /// when needed.
    #[inline]
    fn queue_pending(&mut self) -> Result<(), StepCompressError> {
        let Some(step_clock) = self.pending_clock else {
            return Ok(());
        };
        // The usual case, inline: same direction, not far, room in the buffer.
        if self.sent_dir == Some(self.pending_dir)
            && step_clock < self.last_step_clock.saturating_add(CLOCK_DIFF_MAX)
            && let Some(slot) = self.queue.get_mut(self.queue_next)
        {
            *slot = step_clock as u32;
            self.note_queued(step_clock);
            self.queue_next += 1;
            self.pending_clock = None;
            return Ok(());
        }
        self.queue_pending_slow(step_clock)
    }

    /// [`StepCompress::queue_pending`] when a direction change, a far step or a full buffer
    /// needs handling.
    #[inline(never)]
    fn queue_pending_slow(&mut self, step_clock: u64) -> Result<(), StepCompressError> {
        if self.sent_dir != Some(self.pending_dir) {
            self.send_dir(self.pending_dir)?;
        }
        if step_clock >= self.last_step_clock.saturating_add(CLOCK_DIFF_MAX) {
            self.pending_clock = None;
            return self.queue_far_step(step_clock);
        }
        self.push_step(step_clock)?;
        self.pending_clock = None;
        Ok(())
    }

    /// A step at least [`CLOCK_DIFF_MAX`] after the last emitted one: emit what can be emitted
    /// before it; if it is still that far, send it alone.
    fn queue_far_step(&mut self, step_clock: u64) -> Result<(), StepCompressError> {
        self.flush_queue(step_clock - CLOCK_DIFF_MAX + 1)?;
        if step_clock >= self.last_step_clock.saturating_add(CLOCK_DIFF_MAX) {
            let lone = Triple {
                interval: step_clock.wrapping_sub(self.last_step_clock) as u32,
                count: 1,
                add: 0,
            };
            self.emit(step_clock, lone);
            self.update_last_step_print_time();
            return Ok(());
        }
        self.push_step(step_clock)
    }

    /// Sends `set_next_step_dir` after emitting every queued step (they go the old way).
    fn send_dir(&mut self, dir: bool) -> Result<(), StepCompressError> {
        if self.sent_dir == Some(dir) {
            return Ok(());
        }
        self.flush_queue(u64::MAX)?;
        self.sent_dir = Some(dir);
        self.messages.push(StepMessage {
            req_clock: self.last_step_clock,
            min_clock: 0,
            command: StepCommand::SetNextStepDir {
                dir: dir ^ self.invert_dir,
            },
        });
        Ok(())
    }

    /// Keeps `ordered_from` for the step at `step_clock` just written at `queue_next`.
    #[inline(always)]
    fn note_queued(&mut self, step_clock: u64) {
        if step_clock < self.last_queued {
            self.ordered_from = self.queue_next + 1;
        }
        self.last_queued = step_clock;
    }

    /// Appends a clock to the queue, making room first if the buffer is full.
    fn push_step(&mut self, step_clock: u64) -> Result<(), StepCompressError> {
        if self.queue_next >= self.queue.len() {
            self.make_room()?;
        }
        // Only the low 32 bits are kept; offsets from the last step clock are what matter.
        self.queue[self.queue_next] = step_clock as u32;
        self.note_queued(step_clock);
        self.queue_next += 1;
        Ok(())
    }

    /// The queue is full: flush down to the newest [`MAX_COUNT`] steps if far more are pending,
    /// then compact the live steps to the front, or grow the buffer if they fill it.
    fn make_room(&mut self) -> Result<(), StepCompressError> {
        if self.queue_next - self.queue_pos > MAX_COUNT + QUEUE_FLUSH_SLACK {
            let keep_from = self.queue[self.queue_next - MAX_COUNT];
            let ahead = keep_from.wrapping_sub(self.last_step_clock as u32);
            self.flush_queue(self.last_step_clock.saturating_add(u64::from(ahead)))?;
        }
        if self.queue_next >= self.queue.len() {
            let live = self.queue_next - self.queue_pos;
            if self.queue_pos > 0 {
                self.queue.copy_within(self.queue_pos..self.queue_next, 0);
                self.ordered_from = self.ordered_from.saturating_sub(self.queue_pos);
            } else {
                let mut size = self.queue.len().max(QUEUE_START_SIZE);
                while live >= size {
                    size *= 2;
                }
                self.queue.resize(size, 0);
            }
            self.queue_pos = 0;
            self.queue_next = live;
        }
        Ok(())
    }

    /// Emits `queue_step`s for queued steps until the last emitted step reaches `move_clock`
    /// (or the queue is empty).
    fn flush_queue(&mut self, move_clock: u64) -> Result<(), StepCompressError> {
        if self.queue_pos >= self.queue_next {
            return Ok(());
        }
        // The search compiled for the instruction set chosen: its passes are short chains of
        // two-lane and integer operations, shorter in three-operand forms.
        let result = self.isa.run(
            #[inline(always)]
            || self.flush_queue_inner(move_clock),
        );
        self.update_last_step_print_time();
        result
    }

    #[inline(always)]
    fn flush_queue_inner(&mut self, move_clock: u64) -> Result<(), StepCompressError> {
        while self.last_step_clock < move_clock {
            let mut bounds = std::mem::take(&mut self.bounds);
            let (triple, pass) = self.best_triple(&mut bounds);
            self.bounds = bounds;
            if self.proven(triple, pass) {
                // The proof stands for the replay; tests replay anyway, to hold it to that.
                debug_assert!(
                    self.validate(triple).is_ok(),
                    "a proven {triple:?} fails: {:?}",
                    self.validate(triple)
                );
            } else {
                self.validate(triple)?;
            }
            let first_clock = self
                .last_step_clock
                .wrapping_add(u64::from(triple.interval));
            self.emit(first_clock, triple);
            let used = usize::from(triple.count);
            if self.queue_pos + used >= self.queue_next {
                self.queue_pos = 0;
                self.queue_next = 0;
                self.ordered_from = 0;
                break;
            }
            self.queue_pos += used;
        }
        Ok(())
    }

    /// Queues a `queue_step` whose first step is at `first_clock`, records it in the history
    /// and advances the last step clock and position.
    #[inline(always)]
    fn emit(&mut self, first_clock: u64, triple: Triple) {
        let count = i64::from(triple.count);
        let span = i64::from(triple.interval) * (count - 1)
            + i64::from(triple.add) * (count * (count - 1) / 2);
        let last_clock = first_clock.wrapping_add_signed(span);

        let mut req_clock = self.last_step_clock;
        if triple.count == 1 && first_clock >= self.last_step_clock.saturating_add(CLOCK_DIFF_MAX) {
            req_clock = first_clock;
        }
        self.messages.push(StepMessage {
            req_clock,
            min_clock: self.last_step_clock,
            command: StepCommand::QueueStep {
                interval: triple.interval,
                count: triple.count,
                add: triple.add,
            },
        });
        self.last_step_clock = last_clock;

        // Klipper counts a command as positive unless the last direction sent was negative.
        let step_count = if self.sent_dir == Some(false) {
            -i32::from(triple.count)
        } else {
            i32::from(triple.count)
        };
        if self.keep_history {
            self.history.push_back(PastSteps {
                first_clock,
                last_clock,
                start_position: self.last_position,
                step_count,
                interval: triple.interval as i32,
                add: i32::from(triple.add),
            });
        }
        self.last_position += i64::from(step_count);
    }

    /// The acceptable placement of queue entry `index` (absolute index into `queue`).
    #[inline]
    fn window(&self, index: usize) -> Window {
        let base = self.last_step_clock as u32;
        let point = self.queue[index].wrapping_sub(base);
        let previous = if index > self.queue_pos {
            self.queue[index - 1].wrapping_sub(base)
        } else {
            0
        };
        Window::of(point, previous, self.max_error)
    }

    /// Searches the `queue_step` that covers the most queued steps from `queue_pos` on.
    ///
    /// For a fixed `add`, the steps reachable by one command form a prefix: step k (1-based) at
    /// `k·interval + add·k(k−1)/2` must land in window k, which bounds `interval` to an integer
    /// range that shrinks as k grows; the prefix ends where the range becomes empty, and the
    /// largest feasible interval is used. The search over `add` is a bisection steered by the
    /// first step that could not be reached (too early → larger `add`, too late → smaller),
    /// narrowed further by the quadratic-deviation bound and by what that step permits. The
    /// best candidate is the one reaching furthest in time; `add = 0` wins if it covers almost
    /// as many steps (within 1/16). All arithmetic is 32-bit and wraps, as in Klipper.
    ///
    /// With the triple comes the pass of the search that found it (its `add` and the interval
    /// bounds it started from), for [`StepCompress::proven`]; `None` for the fallback.
    #[inline(always)]
    fn best_triple(&self, bounds: &mut StepBounds) -> (Triple, Option<Pass>) {
        bounds.clear();
        let start = self.queue_pos;
        let available = (self.queue_next - start).min(MAX_COUNT);
        let first = self.window(start);
        // Interval bounds implied by the steps every candidate must cover (tightened as the
        // bisection learns which side each failure came from).
        let mut outer_min = first.earliest;
        let mut outer_max = first.latest;
        let mut add: i32 = 0;
        let mut add_min: i32 = -0x8000;
        let mut add_max: i32 = 0x7fff;

        let mut best = (0i32, 1i32, 1i32); // (interval, count, add)
        let mut best_pass = None;
        let mut best_reach = i32::MIN;
        let mut zero_add = (0i32, 0i32); // (interval, count) found with add = 0
        let mut zero_pass = None;

        loop {
            let pass = Pass {
                add,
                outer_min,
                outer_max,
            };
            // Longest prefix reachable with this `add`.
            let scan = self.scan(start, available, add, outer_min, outer_max, bounds);
            let PassScan {
                lo,
                hi,
                interval,
                tried,
                missed,
            } = scan;
            let Some(missed) = missed else {
                // Every queued step fits: nothing longer can exist.
                return (Triple::from_search(interval, tried, add), Some(pass));
            };

            let count = tried - 1;
            let reach = add
                .wrapping_mul(triangle(count))
                .wrapping_add(interval.wrapping_mul(count));
            // (The updates below are selects rather than branches: which way each goes is
            // data, and a pass's successor waits on all of them.)
            let better = reach > best_reach || (reach == best_reach && interval > best.0);
            let zero_better = better && add == 0;
            best = if better { (interval, count, add) } else { best };
            best_pass = if better { Some(pass) } else { best_pass };
            best_reach = if better { reach } else { best_reach };
            zero_add = if zero_better {
                (interval, count)
            } else {
                zero_add
            };
            zero_pass = if zero_better { Some(pass) } else { zero_pass };
            if better && count > 0x200 {
                // Long enough that no other `add` can do meaningfully better (and larger
                // counts would overflow the products below).
                break;
            }

            // Was the missed step too early or too late for this `add`?
            let missed_triangle = triangle(tried);
            let missed_at = add
                .wrapping_mul(missed_triangle)
                .wrapping_add(interval.wrapping_mul(tried));
            let early = missed_at < missed.earliest;
            add_min = if early { add.wrapping_add(1) } else { add_min };
            add_max = if early { add_max } else { add.wrapping_sub(1) };
            outer_max = if early { hi } else { outer_max };
            outer_min = if early { outer_min } else { lo };

            // Two valid quadratic sequences over `count` steps cannot differ much in `add`.
            let spread = self.spread(count) as i32;
            let spread_min = add.wrapping_sub(spread);
            let spread_max = add.wrapping_add(spread);
            add_min = if count > 1 && add_min < spread_min {
                spread_min
            } else {
                add_min
            };
            add_max = if count > 1 && add_max > spread_max {
                spread_max
            } else {
                add_max
            };

            // Reaching the missed step bounds `add` given the interval bounds.
            let late_room = missed.earliest.wrapping_sub(outer_max.wrapping_mul(tried));
            let early_room = missed.latest.wrapping_sub(outer_min.wrapping_mul(tried));
            let (late_add, early_add) = match TRIANGLE_DIVISORS.get(tried as usize) {
                Some(&divisor) => (
                    divisor.ceil(late_room, missed_triangle),
                    divisor.floor(early_room, missed_triangle),
                ),
                None => (
                    div_ceil(late_room, missed_triangle),
                    div_floor(early_room, missed_triangle),
                ),
            };
            add_min = if add_min.wrapping_mul(missed_triangle) < late_room {
                late_add
            } else {
                add_min
            };
            add_max = if add_max.wrapping_mul(missed_triangle) > early_room {
                early_add
            } else {
                add_max
            };

            if add_min > add_max {
                break;
            }
            add = add_max.wrapping_sub(add_max.wrapping_sub(add_min) / 4);
        }

        let (zero_interval, zero_count) = zero_add;
        if zero_count + zero_count / 16 >= best.1 {
            return (Triple::from_search(zero_interval, zero_count, 0), zero_pass);
        }
        (Triple::from_search(best.0, best.1, best.2), best_pass)
    }

    /// One pass of [`StepCompress::best_triple`]'s search: the longest prefix of the queued
    /// steps from `start` (at most `available`) that one command with `add` reaches, its
    /// interval bounds starting at `outer_min..=outer_max`. Step `k` (1-based) bounds the
    /// interval to `ceil((earliest − add·k(k−1)/2)/k) ..= floor((latest − add·k(k−1)/2)/k)`;
    /// the prefix ends at the first step whose bounds leave none.
    ///
    /// Klipper's C tightens a bound only where `lo·k` (or `hi·k`) is short of it, in 32-bit
    /// wrapping arithmetic, with its own rounding divisions. Where none of that can wrap, that
    /// is a maximum (minimum) of the step's bound, which [`StepCompress::scan_fast`] takes
    /// without a division or a branch per step. That holds while
    /// - the queue is in order from `start` on: every point is in `[0, 2³⁰)` (see
    ///   [`StepCompress::proven`]);
    /// - `|add|·k(k−1)/2 < 2³⁰ − 2¹⁶`: the numerators stay within `±(2³¹ − 2¹⁶)`, where
    ///   Klipper's rounding divisions (`n + k − 1`, `n − k + 1`) cannot wrap;
    /// - `max(|outer_min|, |outer_max|)·k < 2³¹`: the products cannot wrap (`lo` and `hi` stay
    ///   inside `outer_min..=outer_max` until the pass ends);
    /// - `k` ≤ [`TRIANGLE_EXACT_MAX`].
    ///
    /// Beyond ([`fast_scan_steps`]), the pass goes on with the C's operations
    /// ([`StepCompress::scan_exact`]).
    #[inline(always)]
    fn scan(
        &self,
        start: usize,
        available: usize,
        add: i32,
        outer_min: i32,
        outer_max: i32,
        bounds: &mut StepBounds,
    ) -> PassScan {
        let base = self.last_step_clock as u32;
        let clocks = &self.queue[start..start + available];
        let steps = &clocks[1..];
        let fast = if self.ordered_from <= start {
            fast_scan_steps(add, outer_min, outer_max, steps.len())
        } else {
            0
        };
        if fast == 0 {
            let state = ScanState::first(outer_min, outer_max, clocks[0].wrapping_sub(base));
            return self.scan_exact(steps, base, add, state);
        }
        match self.scan_fast(&clocks[..=fast], base, add, outer_min, outer_max, bounds) {
            Ok(scan) => scan,
            Err(state) => self.scan_exact(&steps[fast..], base, add, state),
        }
    }

    /// [`StepCompress::scan`] over `clocks` (the first step's, then those the pass may take
    /// without Klipper's operations): the pass's end where it misses one of them, else where
    /// it got to.
    ///
    /// The bounds are held as reals `[≈lo, ≈−hi]` whose nearest integers are `lo` and `−hi`
    /// ([`step_bounds`]), tightened together by one maximum (per block of [`SCAN_BLOCK`]
    /// steps, the block's own tightened first by a tree of maxima): rounding to the nearest
    /// integer, being monotonic, commutes with the maximum, so a pass rounds only where it
    /// tests for a crossing ([`crossed`]) and where it ends ([`integers`]). Each step's
    /// bounds come from the command's [`StepBounds`] (computed here as the pass first
    /// reaches them, for the passes after it too) plus the pass's `add` times the step's
    /// [`HALF_K_PAIRS`].
    #[inline(always)]
    fn scan_fast(
        &self,
        clocks: &[u32],
        base: u32,
        add: i32,
        outer_min: i32,
        outer_max: i32,
        bounds: &mut StepBounds,
    ) -> Result<PassScan, ScanState> {
        let scale = [f64::from(add); 2];
        // [lo, −hi]: both bounds tightened by one maximum.
        let mut bound = [f64::from(outer_min), -f64::from(outer_max)];
        let pairs = &HALF_K_PAIRS[2..];
        let steps = clocks.len() - 1;
        let mut done = 0;
        while done < steps {
            let chunk_end = (done + BOUNDS_CHUNK).min(steps);
            if bounds.len < chunk_end {
                bounds.extend(clocks, base, self.max_error, chunk_end);
            }
            // A block of steps at a time while none crosses (the bounds only tighten, so a
            // block crosses where one of its steps does), then step by step. A block's steps
            // are tightened together, by a tree of maxima: one maximum per block on the
            // pass's chain of dependent operations, not one per step.
            let (blocks, _) = bounds.quotients()[done..chunk_end].as_chunks::<SCAN_BLOCK>();
            let (pair_blocks, _) = pairs[done..chunk_end].as_chunks::<SCAN_BLOCK>();
            for (block, pair_block) in blocks.iter().zip(pair_blocks) {
                let steps: [[f64; 2]; SCAN_BLOCK] =
                    std::array::from_fn(|i| step_bounds(block[i], scale, pair_block[i]));
                let next = tightened(
                    bound,
                    tightened(tightened(steps[0], steps[1]), tightened(steps[2], steps[3])),
                );
                if crossed(next) {
                    // Which step crossed, without a branch per step: the bounds after each.
                    let mut prefixes = [bound; SCAN_BLOCK + 1];
                    for (i, &step) in steps.iter().enumerate() {
                        prefixes[i + 1] = tightened(prefixes[i], step);
                    }
                    let taken = prefixes[1..SCAN_BLOCK]
                        .iter()
                        .map(|&prefix| usize::from(!crossed(prefix)))
                        .sum::<usize>();
                    let index = done + taken;
                    return Ok(self.pass_end(
                        clocks,
                        base,
                        index,
                        prefixes[taken],
                        prefixes[taken + 1],
                    ));
                }
                bound = next;
                done += SCAN_BLOCK;
            }
            let chunk = bounds.quotients()[done..chunk_end]
                .iter()
                .zip(&pairs[done..]);
            for ((&quotients, &pair), index) in chunk.zip(done..) {
                let before = bound;
                bound = tightened(bound, step_bounds(quotients, scale, pair));
                if crossed(bound) {
                    return Ok(self.pass_end(clocks, base, index, before, bound));
                }
            }
            done = chunk_end;
        }
        let taken = steps;
        let tried = taken as i32 + 1;
        let [lo, hi] = integers(bound);
        Err(ScanState {
            lo,
            hi,
            interval: hi,
            tried,
            tried_triangle: triangle(tried),
            previous: clocks[taken].wrapping_sub(base),
        })
    }

    /// The end of a [`StepCompress::scan_fast`] pass that missed `clocks[index + 1]`: the bounds
    /// `before` and `after` that step (in the form of [`step_bounds`]).
    #[inline(always)]
    fn pass_end(
        &self,
        clocks: &[u32],
        base: u32,
        index: usize,
        before: [f64; 2],
        after: [f64; 2],
    ) -> PassScan {
        let (previous, point) = (
            clocks[index].wrapping_sub(base),
            clocks[index + 1].wrapping_sub(base),
        );
        let [lo, hi] = integers(after);
        PassScan {
            lo,
            hi,
            interval: integers(before)[1],
            tried: index as i32 + 2,
            missed: Some(Window::of(point, previous, self.max_error)),
        }
    }

    /// [`StepCompress::scan`] with Klipper's operations, from `state` on over `steps`.
    #[inline(always)]
    fn scan_exact(&self, steps: &[u32], base: u32, add: i32, mut state: ScanState) -> PassScan {
        for &clock in steps {
            state.tried += 1;
            let tried = state.tried;
            // triangle(n) = triangle(n − 1) + n − 1 while n(n − 1) fits an i32; beyond, the
            // product wraps as in Klipper's C and the formula must be used.
            state.tried_triangle = if tried <= TRIANGLE_EXACT_MAX {
                state.tried_triangle + (tried - 1)
            } else {
                triangle(tried)
            };
            let point = clock.wrapping_sub(base);
            let window = Window::of(point, state.previous, self.max_error);
            state.previous = point;
            let from_add = add.wrapping_mul(state.tried_triangle);
            let need_min = window.earliest.wrapping_sub(from_add);
            let need_max = window.latest.wrapping_sub(from_add);
            // `tried` ≥ 2 here: the divisions by a positive count.
            if state.lo.wrapping_mul(tried) < need_min {
                state.lo = div_ceil_by_count(need_min, tried as u32);
            }
            if state.hi.wrapping_mul(tried) > need_max {
                state.hi = div_floor_by_count(need_max, tried as u32);
            }
            if state.lo > state.hi {
                return state.end(Some(window));
            }
            state.interval = state.hi;
        }
        state.end(None)
    }

    /// [`deviation`] for `count` (> 1): looked up in [`StepCompress::spreads`], divided only
    /// past the table.
    #[inline]
    fn spread(&self, count: i32) -> u32 {
        match self.spreads.get(count as usize) {
            Some(&spread) => spread,
            None if (count as usize) < SPREAD_TABLE_MAX => 0,
            None => deviation(self.max_error, count),
        }
    }

    /// Whether `triple`, found by `pass` of [`StepCompress::best_triple`], lands every step in
    /// its window — so that [`StepCompress::validate`]'s replay of it can be skipped — proven
    /// from facts that cost a few operations, not a walk over its steps:
    ///
    /// - The queue is in order from the command's first step on (`ordered_from`). Every queued
    ///   step was short of a far step ([`CLOCK_DIFF_MAX`] < 2³⁰ ticks) after the last step
    ///   sent, so every point is then in `[0, 2³⁰)`, every window's earliest in `[0, point]`
    ///   and at or after the step before.
    /// - The pass started from interval bounds inside the first step's window, with a
    ///   non-negative lower one, and its `add` fits the command's 16 bits.
    /// - `|add|·k(k−1)/2` stays below 2³⁰ and `outer_max·count` below 2³¹ (and `count` below
    ///   [`TRIANGLE_EXACT_MAX`] unless `add` is 0): then the pass's 32-bit arithmetic up to
    ///   `count` never wrapped. Its bounds `lo ≤ hi` stayed in `[outer_min, outer_max]` at every
    ///   step it took, so its `interval` (the last `hi`) satisfied, exactly, every step `k`:
    ///   `earliest ≤ k·interval + add·k(k−1)/2 ≤ latest`, and the first step's window.
    ///
    /// The MCU's sums are then those exact values (below 2³⁰, so the 32-bit replay agrees),
    /// each interval is non-negative (a step lands at or after the previous step's point,
    /// which is at or after that step) and below 2³¹. What the replay also refuses — no
    /// steps, more steps than queued, a zero interval and add over several steps — is
    /// checked here as it is there. Debug builds (the tests) replay every proven command too.
    #[inline(always)]
    fn proven(&self, triple: Triple, pass: Option<Pass>) -> bool {
        const LIMIT_2_30: i64 = 1 << 30;
        let Some(pass) = pass else {
            return false;
        };
        let Triple {
            interval,
            count,
            add,
        } = triple;
        let first = self.window(self.queue_pos);
        let n = i64::from(count);
        let spread = i64::from(pass.add).abs() * (n * (n - 1) / 2);
        self.ordered_from <= self.queue_pos
            && usize::from(count) <= self.queue_next - self.queue_pos
            && count > 0
            && !(interval == 0 && add == 0 && count > 1)
            && i32::from(add) == pass.add
            && first.earliest >= 0
            && i64::from(first.latest) < LIMIT_2_30
            && first.earliest <= pass.outer_min
            && pass.outer_min <= pass.outer_max
            && pass.outer_max <= first.latest
            && i64::from(interval) >= i64::from(pass.outer_min)
            && i64::from(interval) <= i64::from(pass.outer_max)
            && (pass.add == 0 || (n <= i64::from(TRIANGLE_EXACT_MAX) && spread < LIMIT_2_30))
            && i64::from(pass.outer_max) * n < (1 << 31)
    }

    /// Whether the queue holds to what `ordered_from` claims: from it on, every live entry at
    /// or after the one before it (live entries are less than 2³¹ ticks apart).
    #[cfg(test)]
    fn ordered_as_claimed(&self) -> bool {
        let from = self.ordered_from.max(self.queue_pos + 1);
        (from..self.queue_next).all(|i| self.queue[i].wrapping_sub(self.queue[i - 1]) as i32 >= 0)
    }

    /// Replays `triple` over the queued steps it claims to cover, as the MCU will execute it
    /// (32-bit wrapping), and rejects it unless every step lands in its window.
    fn validate(&self, triple: Triple) -> Result<(), StepCompressError> {
        let Triple {
            interval,
            count,
            add,
        } = triple;
        let last_step_clock = self.last_step_clock;
        if count == 0
            || (interval == 0 && add == 0 && count > 1)
            || interval >= INTERVAL_LIMIT
            || usize::from(count) > self.queue_next - self.queue_pos
        {
            return Err(StepCompressError::InvalidSequence {
                interval,
                count,
                add,
                last_step_clock,
            });
        }
        let mut step_interval = interval;
        let mut offset: u32 = 0;
        let base = last_step_clock as u32;
        let mut previous = 0;
        let steps = &self.queue[self.queue_pos..self.queue_pos + usize::from(count)];
        for (step, &clock) in (0_u32..).zip(steps) {
            let point = clock.wrapping_sub(base);
            let window = Window::of(point, previous, self.max_error);
            previous = point;
            offset = offset.wrapping_add(step_interval);
            if offset < window.earliest as u32 || offset > window.latest as u32 {
                return Err(StepCompressError::StepOutsideWindow {
                    interval,
                    count,
                    add,
                    step: step + 1,
                    offset,
                    min: window.earliest,
                    max: window.latest,
                    last_step_clock,
                });
            }
            if step_interval >= INTERVAL_LIMIT {
                return Err(StepCompressError::IntervalOverflow {
                    interval,
                    count,
                    add,
                    step: step + 1,
                    step_interval,
                    last_step_clock,
                });
            }
            step_interval = step_interval.wrapping_add(i32::from(add) as u32);
        }
        Ok(())
    }
}

/// Where a pass of [`StepCompress::scan`] is, after the steps it took.
#[derive(Clone, Copy, Debug)]
struct ScanState {
    /// Interval bounds every step so far allows.
    lo: i32,
    hi: i32,
    /// The largest interval reaching every step so far.
    interval: i32,
    /// Steps taken (the first included).
    tried: i32,
    /// `triangle(tried)`.
    tried_triangle: i32,
    /// Point of the last step taken.
    previous: u32,
}

impl ScanState {
    /// A pass's start: its first step (at `point`) taken, within the bounds `outer_min..=
    /// outer_max`.
    fn first(outer_min: i32, outer_max: i32, point: u32) -> Self {
        Self {
            lo: outer_min,
            hi: outer_max,
            interval: outer_max,
            tried: 1,
            tried_triangle: 0,
            previous: point,
        }
    }

    /// The pass's end here: at the step of window `missed` (counted in `tried`) that no
    /// interval reaches, or (`None`) with every queued step reached.
    #[inline(always)]
    fn end(self, missed: Option<Window>) -> PassScan {
        PassScan {
            lo: self.lo,
            hi: self.hi,
            interval: self.interval,
            tried: self.tried,
            missed,
        }
    }
}

/// The end of one pass of [`StepCompress::scan`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PassScan {
    /// The bounds after the last step tried (crossed where a step was missed).
    lo: i32,
    hi: i32,
    /// The largest interval reaching every step before the missed one.
    interval: i32,
    /// Steps tried: those reached, plus the missed one if any.
    tried: i32,
    /// The window of the step missed; `None` when every queued step was reached.
    missed: Option<Window>,
}

/// How many of the `len` steps after the first a pass of [`StepCompress::scan`] with `add` and
/// the interval bounds `outer_min..=outer_max` may take without Klipper's operations (the queue
/// in order given): as many as `k ≤ TRIANGLE_EXACT_MAX`, `|add|·k(k−1)/2 < 2³⁰ − 2¹⁶` and
/// `max(|outer_min|, |outer_max|)·k < 2³¹` allow — all `len` where the products say so at
/// once, else a bound from the square root, conservative by 10⁻⁹ (far beyond its rounding).
#[inline(always)]
fn fast_scan_steps(add: i32, outer_min: i32, outer_max: i32, len: usize) -> usize {
    const ADD_SPAN: u64 = (1 << 30) - (1 << 16);
    const PRODUCT_LIMIT: u64 = 1 << 31;
    let bound = u64::from(
        outer_min
            .unsigned_abs()
            .max(outer_max.unsigned_abs())
            .max(1),
    );
    let add = u64::from(add.unsigned_abs());
    // The last step's `k`; `len` < 2¹⁶ (at most a command's count), so the products fit.
    let last = len as u64 + 1;
    if last <= TRIANGLE_EXACT_MAX as u64
        && bound * last < PRODUCT_LIMIT
        && add * (last * (last - 1) / 2) < ADD_SPAN
    {
        return len;
    }
    let by_products = (PRODUCT_LIMIT - 1) / bound;
    // k ≤ √(2·span/|add|) gives |add|·k²/2 ≤ span, so |add|·k(k−1)/2 < span.
    let by_add = if add == 0 {
        u64::MAX
    } else {
        ((2.0 * ADD_SPAN as f64 / add as f64).sqrt() * (1.0 - 1e-9)) as u64
    };
    let k = by_products
        .min(by_add)
        .min(TRIANGLE_EXACT_MAX as u64)
        .min(last);
    k.saturating_sub(1) as usize
}

/// Steps whose [`StepBounds`] are computed together, as a pass first reaches them.
const BOUNDS_CHUNK: usize = 16;

/// Steps a pass tightens its bounds with together ([`StepCompress::scan_fast`]): the chain of
/// maxima from step to step, not the arithmetic, bounded a pass's speed (case f's whole batch
/// 1.18× faster with blocks of 4; 8 gained less). The tree of maxima there is written for 4.
const SCAN_BLOCK: usize = 4;

/// What every pass of one command's search divides, the same for each: for the `k`-th step
/// (`k` ≥ 2) of the command, of window `earliest..=latest`,
/// `[earliest·(1/k) + HALF_LESS, −latest·(1/k) + HALF_LESS]` ([`HALF_LESS`]; each operation
/// rounded; [`step_bounds`] adds a pass's `add`). Computed once per command, as
/// far as its passes get, instead of once per pass: the buffer keeps its size from command to
/// command (like the roots of `itersolve`: only what a command computes is read), emptied by
/// [`StepCompress::best_triple`].
#[derive(Debug, Clone, Default)]
struct StepBounds {
    /// The quotients for `k` = 2, 3, … (the first `len` of them this command's).
    buf: Vec<[f64; 2]>,
    len: usize,
}

impl StepBounds {
    /// Forgets the command's quotients.
    #[inline(always)]
    fn clear(&mut self) {
        self.len = 0;
    }

    /// The command's quotients so far.
    #[inline(always)]
    fn quotients(&self) -> &[[f64; 2]] {
        &self.buf[..self.len]
    }

    /// Computes the quotients of the steps of `clocks` (the command's first step, then the
    /// others) up to the `upto`-th after the first.
    #[inline(always)]
    fn extend(&mut self, clocks: &[u32], base: u32, max_error: u32, upto: usize) {
        let from = self.len;
        if self.buf.len() < upto {
            self.grow(upto);
        }
        let out = &mut self.buf[from..upto];
        let previous = &clocks[from..upto];
        let points = &clocks[from + 1..=upto];
        let inverses = &INVERSES[from + 2..upto + 2];
        for (((slot, &previous), &point), &inverse) in
            out.iter_mut().zip(previous).zip(points).zip(inverses)
        {
            let window = Window::of(
                point.wrapping_sub(base),
                previous.wrapping_sub(base),
                max_error,
            );
            *slot = biased_quotients(window, inverse);
        }
        self.len = upto;
    }

    #[cold]
    #[inline(never)]
    fn grow(&mut self, len: usize) {
        self.buf.resize(len.next_power_of_two(), [0.0; 2]);
    }
}

/// `1/k` for every count `k` of a command (index 0 unused). Tables computed at compile time
/// (the same IEEE operations as at run time): in the binary's read-only data, only the pages a
/// run reads are mapped, where a table built at start-up wrote all 1.5 MB of both (384 page
/// faults, 28 % of a batch run's).
static INVERSES: [f64; MAX_COUNT + 1] = {
    let mut table = [0.0; MAX_COUNT + 1];
    let mut k = 0;
    while k <= MAX_COUNT {
        table[k] = 1.0 / k as f64;
        k += 1;
    }
    table
};

/// `[−(k − 1)/2, (k − 1)/2]` for every count `k` of a command (index 0 unused): what a
/// pass's `add` is multiplied by for the `k`-th step's bounds ([`step_bounds`]), a load.
static HALF_K_PAIRS: [[f64; 2]; MAX_COUNT + 1] = {
    let mut table = [[0.0; 2]; MAX_COUNT + 1];
    let mut k = 0;
    while k <= MAX_COUNT {
        let half_k = (k as f64 - 1.0) / 2.0;
        table[k] = [-half_k, half_k];
        k += 1;
    }
    table
};

/// The rounding bias of [`StepCompress::scan`]: a half, less 2⁻¹⁸.
const HALF_LESS: f64 = 0.5 - 1.0 / 262_144.0;

/// A [`StepBounds`] entry: `[earliest·(1/k) + HALF_LESS, −latest·(1/k) + HALF_LESS]` for the
/// window of the `k`-th step (`inverse` = `1/k`).
#[inline(always)]
fn biased_quotients(window: Window, inverse: f64) -> [f64; 2] {
    [
        f64::from(window.earliest) * inverse + HALF_LESS,
        -(f64::from(window.latest) * inverse) + HALF_LESS,
    ]
}

/// The interval bounds that the `k`-th step of a command (`quotients` from [`StepBounds`],
/// `pair` from [`HALF_K_PAIRS`]) allows with `add` (`scale` = `[add, add]`), as reals
/// `[x, y]` whose nearest integers are `lo` and `−hi`, where for the step's window
/// `earliest..=latest` `lo = ceil((earliest − add·k(k−1)/2)/k)` and
/// `hi = floor((latest − add·k(k−1)/2)/k)`: `x ≈ n/k − add·(k−1)/2 + (½ − 2⁻¹⁸)` for
/// `n = earliest`, `y` the same for `n = −latest` with the opposite sign of `add`.
///
/// Exact where [`StepCompress::scan`] uses it (`2 ≤ k ≤ 65535`, numerators below 2³¹ in
/// magnitude): `n·(1/k)` is within 2⁻²² of `n/k` (below 2³⁰ in magnitude, two roundings),
/// and `n/k` is an integer or at least `1/k > 2⁻¹⁶` from one, so `n/k − add·(k−1)/2 ±
/// (½ − 2⁻¹⁸)` (`add·(k−1)/2` a multiple of ½) is at least 2⁻¹⁸ from a half-integer. The
/// quotient's error, the bias's sum and the product's (exact: a multiple of ½ below 2³⁰)
/// add at most 3·2⁻²² — far less — so the nearest integer is the ceiling (for `y`, minus
/// the floor) of the exact `(n ∓ add·k(k−1)/2)/k`.
#[inline(always)]
fn step_bounds(quotients: [f64; 2], scale: [f64; 2], pair: [f64; 2]) -> [f64; 2] {
    [
        quotients[0] + scale[0] * pair[0],
        quotients[1] + scale[1] * pair[1],
    ]
}

/// The bounds `[≈lo, ≈−hi]` ([`step_bounds`]) after a step that allows `step` (the same
/// form): the larger of each (the nearest integer of the larger is the larger nearest
/// integer).
#[inline(always)]
fn tightened(bound: [f64; 2], step: [f64; 2]) -> [f64; 2] {
    [
        if step[0] > bound[0] {
            step[0]
        } else {
            bound[0]
        },
        if step[1] > bound[1] {
            step[1]
        } else {
            bound[1]
        },
    ]
}

/// The bounds `[≈lo, ≈−hi]` ([`step_bounds`]) rounded, as `[ROUND + lo, −(ROUND + hi)]`:
/// a double below 2⁵¹ in magnitude plus (minus) [`ROUND`] is rounded to the nearest integer.
#[inline(always)]
fn rounded_bounds(bound: [f64; 2]) -> [f64; 2] {
    [bound[0] + ROUND, bound[1] - ROUND]
}

/// Whether bounds `[≈lo, ≈−hi]` have crossed (`lo > hi`): the sum of their
/// [`rounded_bounds`] is `lo − hi`, exactly (both are integers below 2³¹ in magnitude,
/// offset by `±ROUND`).
#[inline(always)]
fn crossed(bound: [f64; 2]) -> bool {
    let rounded = rounded_bounds(bound);
    rounded[0] + rounded[1] > 0.0
}

/// `[lo, hi]` of bounds `[≈lo, ≈−hi]` (below 2³¹ in magnitude): the low 32 bits of the
/// significands of their [`rounded_bounds`], which hold `2⁵¹ + lo` and `2⁵¹ + hi`.
#[inline(always)]
fn integers(bound: [f64; 2]) -> [i32; 2] {
    rounded_bounds(bound).map(|x| x.to_bits() as u32 as i32)
}

/// Adding and subtracting 2⁵² rounds a value below 2⁵¹ in magnitude to an integer (the
/// nearest: the default rounding), with adds that vectorise.
pub(crate) const ROUND_TO_INTEGER: f64 = 4_503_599_627_370_496.0;

/// The integer part of `ticks` (at least 0, below 2⁵¹), with adds and a compare that vectorise.
#[inline(always)]
pub(crate) fn whole_ticks(ticks: f64) -> f64 {
    let nearest = (ticks + ROUND_TO_INTEGER) - ROUND_TO_INTEGER;
    if nearest > ticks {
        nearest - 1.0
    } else {
        nearest
    }
}

/// `tick as u64` (truncation) for `0 ≤ tick < 2⁵¹`, in operations that vectorise: Rust's `as`
/// saturates, and the compiler converts a vector of doubles one lane at a time for that. Here
/// the [`whole_ticks`] plus 2⁵² (exact) holds the integer in its significand's low bits.
#[inline(always)]
fn truncated(tick: f64) -> u64 {
    (whole_ticks(tick) + ROUND_TO_INTEGER)
        .to_bits()
        .wrapping_sub(ROUND_TO_INTEGER.to_bits())
}

/// `1.5·2⁵²`: a double below 2⁵¹ in magnitude plus this has unit ulp, so the sum is rounded to
/// the nearest integer (plus this).
const ROUND: f64 = 6_755_399_441_055_744.0;

/// The longest table of [`StepCompress::spreads`]: counts up to it are looked up (beyond the
/// table's end, below this, the value is 0), longer ones divided.
const SPREAD_TABLE_MAX: usize = 1024;

/// Klipper's bound on how far `add` may move for a sequence of `count` (> 1) steps:
/// `max_error·11 / count²` in 32-bit wrapping arithmetic.
#[inline]
fn deviation(max_error: u32, count: i32) -> u32 {
    max_error.wrapping_mul(ADD_DEVIATION_FACTOR) / (count.wrapping_mul(count) as u32).max(1)
}

/// [`deviation`] for every count until it is 0 (at most [`SPREAD_TABLE_MAX`] entries).
fn spread_table(max_error: u32) -> Box<[u32]> {
    (0..SPREAD_TABLE_MAX as i32)
        .map(|count| deviation(max_error, count))
        .take_while(|&spread| spread > 0)
        .collect()
}

/// The largest `n` whose `n(n−1)` fits an `i32` (so that `triangle` is exact).
const TRIANGLE_EXACT_MAX: i32 = 46_341;

/// `n(n−1)/2` in wrapping 32-bit arithmetic (the `add` multiplier of the n-th step).
#[inline]
fn triangle(n: i32) -> i32 {
    n.wrapping_mul(n.wrapping_sub(1)) / 2
}

/// `m / d` truncated toward zero, as `i32` division by a positive `d` (never overflows, so
/// no checks for zero or −1 divisors are needed).
#[inline(always)]
fn div_trunc_by_count(m: i32, d: u32) -> i32 {
    if m >= 0 {
        (m as u32 / d) as i32
    } else {
        ((m.unsigned_abs() / d) as i32).wrapping_neg()
    }
}

/// Klipper's `idiv_up` numerator: `n + d − 1` for `n ≥ 0` (wrapping), else `n` — truncated
/// by `d`, the quotient rounded toward +∞ (where the sum does not wrap).
#[inline(always)]
fn ceil_numerator(n: i32, d: i32) -> i32 {
    if n >= 0 {
        n.wrapping_add(d).wrapping_sub(1)
    } else {
        n
    }
}

/// Klipper's `idiv_down` numerator: `n` for `n ≥ 0`, else `n − d + 1` (wrapping) — truncated
/// by `d`, the quotient rounded toward −∞ (where the difference does not wrap).
#[inline(always)]
fn floor_numerator(n: i32, d: i32) -> i32 {
    if n >= 0 {
        n
    } else {
        n.wrapping_sub(d).wrapping_add(1)
    }
}

/// [`div_ceil`] for a positive divisor, with the same wrapping.
#[inline(always)]
fn div_ceil_by_count(n: i32, d: u32) -> i32 {
    div_trunc_by_count(ceil_numerator(n, d as i32), d)
}

/// [`div_floor`] for a positive divisor, with the same wrapping.
#[inline(always)]
fn div_floor_by_count(n: i32, d: u32) -> i32 {
    div_trunc_by_count(floor_numerator(n, d as i32), d)
}

/// Division by one positive `d` below 2³² as a multiplication and a shift: for every
/// `0 ≤ x ≤ 2³¹`, `x / d = (x·m) >> s` with `s = 31 + ⌈log₂ d⌉` and `m = ⌈2ˢ/d⌉`. Writing
/// `m·d = 2ˢ + e` (`0 ≤ e < d ≤ 2^⌈log₂ d⌉`) and `x = q·d + r`, `x·m/2ˢ = q + r/d + x·e/(d·2ˢ)`,
/// and `x·e < 2³¹·2^⌈log₂ d⌉ = 2ˢ` keeps the last two terms below 1; `x·m < 2⁶⁴` (`m ≤ 2³²`).
/// For `d = 0` every quotient is 0, as [`div_ceil`] and [`div_floor`] give.
#[derive(Clone, Copy, Debug)]
struct Divisor {
    multiplier: u64,
    shift: u32,
}

impl Divisor {
    const fn new(d: u32) -> Self {
        if d == 0 {
            return Self {
                multiplier: 0,
                shift: 0,
            };
        }
        let log = if d <= 1 {
            0
        } else {
            32 - (d - 1).leading_zeros()
        };
        let shift = 31 + log;
        let power = 1_u128 << shift;
        let d = d as u128;
        Self {
            multiplier: power.div_ceil(d) as u64,
            shift,
        }
    }

    /// `m / d`, truncated toward zero, for any `m`.
    #[inline(always)]
    fn trunc(self, m: i32) -> i32 {
        let q = ((u64::from(m.unsigned_abs()) * self.multiplier) >> self.shift) as i32;
        if m < 0 { q.wrapping_neg() } else { q }
    }

    /// [`div_ceil`] by this divisor, `d` (the same, as an `i32`).
    #[inline(always)]
    fn ceil(self, n: i32, d: i32) -> i32 {
        self.trunc(ceil_numerator(n, d))
    }

    /// [`div_floor`] by this divisor, `d` (the same, as an `i32`).
    #[inline(always)]
    fn floor(self, n: i32, d: i32) -> i32 {
        self.trunc(floor_numerator(n, d))
    }
}

/// Counts up to which the search's divisions by `triangle(count)` are looked up.
const TRIANGLE_DIVISORS_MAX: usize = 1024;

/// [`Divisor`] of `triangle(k)` for every `k` up to [`TRIANGLE_DIVISORS_MAX`] (`triangle(0)`
/// and `triangle(1)` are 0).
static TRIANGLE_DIVISORS: [Divisor; TRIANGLE_DIVISORS_MAX + 1] = {
    let mut table = [Divisor::new(0); TRIANGLE_DIVISORS_MAX + 1];
    let mut k = 2;
    while k <= TRIANGLE_DIVISORS_MAX {
        table[k] = Divisor::new((k * (k - 1) / 2) as u32);
        k += 1;
    }
    table
};

/// Division rounding toward +∞ for a positive divisor (wrapping; 0 for a zero divisor).
#[inline]
fn div_ceil(n: i32, d: i32) -> i32 {
    if d == 0 {
        return 0;
    }
    ceil_numerator(n, d).wrapping_div(d)
}

/// Division rounding toward −∞ for a positive divisor (wrapping; 0 for a zero divisor).
#[inline]
fn div_floor(n: i32, d: i32) -> i32 {
    if d == 0 {
        return 0;
    }
    floor_numerator(n, d).wrapping_div(d)
}

/// Expands step commands into `(direction, clock)` per step, as the MCU runs them (the
/// direction as sent, `reset_step_clock` restarting the count) — for tests.
#[cfg(test)]
pub(crate) fn expand_steps(messages: &[StepMessage]) -> Vec<(bool, u64)> {
    let (mut clock, mut dir, mut out) = (0_u64, false, Vec::new());
    for message in messages {
        match message.command {
            StepCommand::SetNextStepDir { dir: d } => dir = d,
            StepCommand::ResetStepClock { clock: c } => clock = u64::from(c),
            StepCommand::QueueStep {
                interval,
                count,
                add,
            } => {
                let mut interval = i64::from(interval);
                for _ in 0..count {
                    clock = clock.saturating_add_signed(interval);
                    out.push((dir, clock));
                    interval += i64::from(add);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FREQ: f64 = 50e6;
    const MAX_ERROR: u32 = 1250;

    /// One emitted step: direction (host side, after undoing `invert_dir`) and clock.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    struct Step {
        dir: bool,
        clock: u64,
    }

    /// Expands messages with the MCU's rule t_k = t_last + k·interval + add·k(k−1)/2.
    fn expand(messages: &[StepMessage], start_clock: u64, invert: bool) -> Vec<Step> {
        let mut out = Vec::new();
        let mut last = start_clock as i64;
        let mut dir = None;
        for message in messages {
            match message.command {
                StepCommand::SetNextStepDir { dir: pin } => dir = Some(pin ^ invert),
                StepCommand::ResetStepClock { clock } => last = i64::from(clock),
                StepCommand::QueueStep {
                    interval,
                    count,
                    add,
                } => {
                    let dir = dir.expect("queue_step before set_next_step_dir");
                    if message.req_clock != message.min_clock {
                        // A far step: the MCU sees its gap modulo 2^32; its true clock is the
                        // message's req_clock.
                        assert_eq!(count, 1);
                        assert_eq!(
                            message.req_clock as u32,
                            (last as u32).wrapping_add(interval)
                        );
                        last = message.req_clock as i64;
                        out.push(Step {
                            dir,
                            clock: message.req_clock,
                        });
                        continue;
                    }
                    let first = last;
                    for k in 1..=i64::from(count) {
                        let t = first + k * i64::from(interval) + i64::from(add) * k * (k - 1) / 2;
                        out.push(Step {
                            dir,
                            clock: t as u64,
                        });
                        last = t;
                    }
                }
            }
        }
        out
    }

    fn triples(messages: &[StepMessage]) -> Vec<(u32, u16, i16)> {
        messages
            .iter()
            .filter_map(|m| match m.command {
                StepCommand::QueueStep {
                    interval,
                    count,
                    add,
                } => Some((interval, count, add)),
                _ => None,
            })
            .collect()
    }

    fn drain(sc: &mut StepCompress) -> Vec<StepMessage> {
        let mut out = Vec::new();
        sc.drain_messages(&mut out);
        out
    }

    // ---- §7.10 golden vector -----------------------------------------------------------------

    /// One constant-acceleration segment of a trapq.
    struct Segment {
        print_time: f64,
        move_t: f64,
        start_v: f64,
        half_accel: f64,
        start_pos: f64,
        axis: f64,
    }

    impl Segment {
        fn distance(&self, t: f64) -> f64 {
            (self.start_v + self.half_accel * t) * t
        }
    }

    /// A trapezoidal move as up to three segments (accel, cruise, decel), positions chained
    /// the way the trapq chains them.
    #[allow(clippy::too_many_arguments)]
    fn trapezoid(
        print_time: f64,
        accel_t: f64,
        cruise_t: f64,
        decel_t: f64,
        start_pos: f64,
        axis: f64,
        start_v: f64,
        cruise_v: f64,
        accel: f64,
    ) -> Vec<Segment> {
        let mut out = Vec::new();
        let mut t0 = print_time;
        let mut pos = start_pos;
        for (move_t, v, half_accel) in [
            (accel_t, start_v, 0.5 * accel),
            (cruise_t, cruise_v, 0.0),
            (decel_t, cruise_v, -0.5 * accel),
        ] {
            if move_t == 0.0 {
                continue;
            }
            let segment = Segment {
                print_time: t0,
                move_t,
                start_v: v,
                half_accel,
                start_pos: pos,
                axis,
            };
            t0 += move_t;
            pos = segment.start_pos + axis * segment.distance(move_t);
            out.push(segment);
        }
        out
    }

    /// Time (relative to its segment) at which a move reaches `target`, and the segment's
    /// print time: the root of start_pos + axis·(v·t + ha·t²) = target in the segment holding it.
    fn crossing(segments: &[Segment], target: f64) -> (f64, f64) {
        for segment in segments {
            let d = (target - segment.start_pos) * segment.axis;
            if d < 0.0 || d > segment.distance(segment.move_t) {
                continue;
            }
            let v = segment.start_v;
            let t = 2.0 * d / (v + (v * v + 4.0 * segment.half_accel * d).sqrt());
            return (segment.print_time, t);
        }
        panic!("target {target} not reached");
    }

    const GOLDEN_OUT: [(u32, u16, i16); 26] = [
        (25176777, 1, 0),
        (129409, 1, 0),
        (88317, 2, -15114),
        (61377, 4, -4820),
        (43369, 7, -1730),
        (31714, 12, -696),
        (23786, 19, -310),
        (18422, 23, -161),
        (14968, 37, -83),
        (12131, 46, -47),
        (10115, 65, -27),
        (8468, 88, -16),
        (7155, 103, -10),
        (6251, 807, 0),
        (6390, 92, 9),
        (7318, 76, 14),
        (8463, 68, 24),
        (10241, 46, 41),
        (12265, 36, 76),
        (15185, 25, 149),
        (19100, 17, 315),
        (24659, 11, 715),
        (32958, 7, 1726),
        (47411, 3, 4363),
        (61841, 2, 11362),
        (89100, 1, 0),
    ];
    const GOLDEN_OUT_TAIL: (u32, u16, i16) = (129409, 1, 0);
    const GOLDEN_BACK: [(u32, u16, i16); 18] = [
        (5353554, 1, 0),
        (129409, 1, 0),
        (88317, 2, -15114),
        (61377, 4, -4820),
        (43369, 7, -1730),
        (31714, 12, -696),
        (23786, 19, -310),
        (18422, 23, -161),
        (14968, 35, -83),
        (12506, 202, 0),
        (12801, 35, 90),
        (16250, 22, 173),
        (20540, 14, 350),
        (25753, 10, 803),
        (34021, 6, 2012),
        (46259, 4, 5227),
        (72323, 2, 17557),
        (129410, 1, 0),
    ];

    /// The requested steps of §7.10, as (dir, segment print time, time in segment).
    fn golden_requests() -> Vec<(bool, f64, f64)> {
        let step_dist = 0.0125;
        let out = trapezoid(0.5, 0.1, 0.1, 0.1, 0.0, 1.0, 0.0, 100.0, 1000.0);
        let back = trapezoid(0.9, 0.05, 0.05, 0.05, 20.0, -1.0, 0.0, 50.0, 1000.0);
        let mut requests = Vec::new();
        for k in 1..=1600 {
            let (pt, t) = crossing(&out, (f64::from(k) - 0.5) * step_dist);
            requests.push((true, pt, t));
        }
        for k in 1..=400 {
            let (pt, t) = crossing(&back, 20.0 - (f64::from(k) - 0.5) * step_dist);
            requests.push((false, pt, t));
        }
        requests
    }

    #[test]
    fn golden_vector_matches_klipper() {
        let mut sc = StepCompress::new(MAX_ERROR, false);
        sc.set_time(0.0, FREQ);
        for (dir, print_time, step_time) in golden_requests() {
            sc.append(dir, print_time, step_time).expect("append");
        }
        sc.flush(u64::MAX).expect("flush");
        let messages = drain(&mut sc);

        let mut expected = vec![StepCommand::SetNextStepDir { dir: true }];
        let queue_step = |(interval, count, add): (u32, u16, i16)| StepCommand::QueueStep {
            interval,
            count,
            add,
        };
        expected.extend(GOLDEN_OUT.iter().copied().map(queue_step));
        expected.push(queue_step(GOLDEN_OUT_TAIL));
        expected.push(StepCommand::SetNextStepDir { dir: false });
        expected.extend(GOLDEN_BACK.iter().copied().map(queue_step));
        let got: Vec<StepCommand> = messages.iter().map(|m| m.command).collect();
        assert_eq!(got.len(), 47);
        assert_eq!(got, expected);

        // Counts per direction and the clocks the consumer orders by.
        let steps = expand(&messages, 0, false);
        assert_eq!(steps.iter().filter(|s| s.dir).count(), 1600);
        assert_eq!(steps.iter().filter(|s| !s.dir).count(), 400);
        let mut last = 0;
        let mut i = 0;
        for message in &messages {
            match message.command {
                StepCommand::QueueStep { count, .. } => {
                    assert_eq!(message.min_clock, last);
                    if last == 0 {
                        // The very first step is 25 M ticks out: not "far", so req = min.
                        assert_eq!(message.req_clock, 0);
                    }
                    assert_eq!(message.req_clock, last);
                    i += usize::from(count);
                    last = steps[i - 1].clock;
                }
                StepCommand::SetNextStepDir { .. } => {
                    assert_eq!((message.req_clock, message.min_clock), (last, 0));
                }
                StepCommand::ResetStepClock { .. } => unreachable!(),
            }
        }
        assert_eq!(sc.last_step_clock(), last);
        assert_eq!(sc.last_position(), 1200);
    }

    /// The same vector with periodic flushes that keep a lookahead of queued steps (as
    /// steppersync does) gives the same commands.
    #[test]
    fn golden_vector_with_incremental_flushes() {
        let mut sc = StepCompress::new(MAX_ERROR, false);
        sc.set_time(0.0, FREQ);
        let mut flushed_to = 0.0;
        for (dir, print_time, step_time) in golden_requests() {
            let t = print_time + step_time;
            // Flush everything more than 100 ms old.
            if t - flushed_to > 0.15 {
                flushed_to = t - 0.1;
                sc.flush((flushed_to * FREQ) as u64).expect("flush");
            }
            sc.append(dir, print_time, step_time).expect("append");
        }
        sc.flush(u64::MAX).expect("flush");
        let messages = drain(&mut sc);
        let mut expected: Vec<(u32, u16, i16)> = GOLDEN_OUT.to_vec();
        expected.push(GOLDEN_OUT_TAIL);
        expected.extend_from_slice(&GOLDEN_BACK);
        assert_eq!(triples(&messages), expected);
    }

    // ---- §6.4 worked example ----------------------------------------------------------------

    #[test]
    fn worked_example_exact_quadratic() {
        // Exact windows (max_error 0): only interval=100 count=4 add=10 hits 100,210,330,460.
        let mut sc = StepCompress::new(0, false);
        sc.set_time(0.0, FREQ);
        sc.reset(1000).expect("reset");
        for clock in [1100, 1210, 1330, 1460] {
            sc.append_clock(true, clock).expect("append");
        }
        sc.flush(u64::MAX).expect("flush");
        let messages = drain(&mut sc);
        assert_eq!(
            messages.iter().map(|m| m.command).collect::<Vec<_>>(),
            vec![
                StepCommand::ResetStepClock { clock: 1000 },
                StepCommand::SetNextStepDir { dir: true },
                StepCommand::QueueStep {
                    interval: 100,
                    count: 4,
                    add: 10
                },
            ]
        );
        let steps = expand(&messages, 0, false);
        let clocks: Vec<u64> = steps.iter().map(|s| s.clock).collect();
        assert_eq!(clocks, vec![1100, 1210, 1330, 1460]);
        // A following queue_step interval=200 count=2 add=0 → 1660, 1860.
        sc.append_clock(true, 1660).expect("append");
        sc.append_clock(true, 1860).expect("append");
        sc.flush(u64::MAX).expect("flush");
        let more = drain(&mut sc);
        assert_eq!(triples(&more), vec![(200, 2, 0)]);
        assert_eq!(more[0].req_clock, 1460);
        assert_eq!(more[0].min_clock, 1460);
    }

    #[test]
    fn worked_example_with_tolerance_prefers_add_zero() {
        // With 25 µs of tolerance the same steps fit a constant interval (steps 1100, 1200,
        // 1300, 1400 are each at most half a gap early).
        let mut sc = StepCompress::new(MAX_ERROR, false);
        sc.set_time(0.0, FREQ);
        sc.reset(1000).expect("reset");
        for clock in [1100, 1210, 1330, 1460] {
            sc.append_clock(true, clock).expect("append");
        }
        sc.flush(u64::MAX).expect("flush");
        assert_eq!(triples(&drain(&mut sc)), vec![(100, 4, 0)]);
    }

    // ---- far steps, reset, filter, history ----------------------------------------------------

    #[test]
    fn far_step_is_sent_alone_with_its_own_req_clock() {
        let mut sc = StepCompress::new(MAX_ERROR, false);
        sc.set_time(0.0, FREQ);
        for clock in [1000, 2000, 3000] {
            sc.append_clock(true, clock).expect("append");
        }
        let far = 3000 + CLOCK_DIFF_MAX + 12345;
        sc.append_clock(true, far).expect("append");
        sc.append_clock(true, far + 1000).expect("append");
        sc.flush(u64::MAX).expect("flush");
        let messages = drain(&mut sc);
        let qs: Vec<&StepMessage> = messages
            .iter()
            .filter(|m| matches!(m.command, StepCommand::QueueStep { .. }))
            .collect();
        assert_eq!(
            triples(&messages),
            vec![
                (1000, 3, 0),
                ((CLOCK_DIFF_MAX + 12345) as u32, 1, 0),
                (1000, 1, 0)
            ]
        );
        assert_eq!((qs[0].req_clock, qs[0].min_clock), (0, 0));
        assert_eq!((qs[1].req_clock, qs[1].min_clock), (far, 3000));
        assert_eq!((qs[2].req_clock, qs[2].min_clock), (far, far));
        // A gap just under the limit is an ordinary step.
        let mut sc = StepCompress::new(MAX_ERROR, false);
        sc.set_time(0.0, FREQ);
        sc.append_clock(true, CLOCK_DIFF_MAX - 1).expect("append");
        sc.flush(u64::MAX).expect("flush");
        let messages = drain(&mut sc);
        assert_eq!(messages[1].req_clock, 0);
        // A gap beyond 2^32 ticks wraps in the interval (the MCU's clock is 32-bit).
        let mut sc = StepCompress::new(MAX_ERROR, false);
        sc.set_time(0.0, FREQ);
        sc.append_clock(false, (1 << 32) + 5).expect("append");
        sc.flush(u64::MAX).expect("flush");
        let messages = drain(&mut sc);
        assert_eq!(triples(&messages), vec![(5, 1, 0)]);
        assert_eq!(messages[1].req_clock, (1 << 32) + 5);
        assert_eq!(sc.last_step_clock(), (1 << 32) + 5);
    }

    #[test]
    fn far_step_after_a_gap_in_time() {
        let mut sc = StepCompress::new(MAX_ERROR, false);
        sc.set_time(0.25, FREQ);
        sc.append(true, 0.5, 0.0).expect("append");
        // 20 s later (1e9 ticks ≥ 3<<28).
        sc.append(true, 20.5, 0.0).expect("append");
        sc.flush(u64::MAX).expect("flush");
        let messages = drain(&mut sc);
        assert_eq!(
            triples(&messages),
            vec![(12_500_000, 1, 0), (1_000_000_000, 1, 0)]
        );
        assert_eq!(messages[2].req_clock, 1_012_500_000);
        assert_eq!(messages[2].min_clock, 12_500_000);
    }

    #[test]
    fn reset_restarts_the_clock_and_resends_direction() {
        let mut sc = StepCompress::new(MAX_ERROR, true);
        sc.set_time(0.0, FREQ);
        sc.append_clock(true, 1_000_000).expect("append");
        sc.append_clock(true, 1_010_000).expect("append");
        sc.reset(0).expect("reset");
        assert_eq!(sc.last_step_clock(), 0);
        // After homing: the host's clock is far past 0, so the next step goes out alone.
        sc.append_clock(true, 2_000_000_000).expect("append");
        sc.flush(u64::MAX).expect("flush");
        let messages = drain(&mut sc);
        let commands: Vec<StepCommand> = messages.iter().map(|m| m.command).collect();
        assert_eq!(
            commands,
            vec![
                StepCommand::SetNextStepDir { dir: false },
                StepCommand::QueueStep {
                    interval: 1_000_000,
                    count: 1,
                    add: 0
                },
                StepCommand::QueueStep {
                    interval: 10_000,
                    count: 1,
                    add: 0
                },
                StepCommand::ResetStepClock { clock: 0 },
                StepCommand::SetNextStepDir { dir: false },
                StepCommand::QueueStep {
                    interval: 2_000_000_000,
                    count: 1,
                    add: 0
                },
            ]
        );
        assert_eq!((messages[3].req_clock, messages[3].min_clock), (0, 0));
        assert_eq!((messages[4].req_clock, messages[4].min_clock), (0, 0));
        assert_eq!(
            (messages[5].req_clock, messages[5].min_clock),
            (2_000_000_000, 0)
        );
        let steps = expand(&messages, 0, true);
        assert!(steps.iter().all(|s| s.dir));
        let clocks: Vec<u64> = steps.iter().map(|s| s.clock).collect();
        assert_eq!(clocks, vec![1_000_000, 1_010_000, 2_000_000_000]);
        assert_eq!(sc.last_position(), 3);
    }

    /// The toolhead's merge takes messages from the queue (`consume_messages`), and homing's
    /// reset takes only the messages it adds (`drain_messages_from`): older ones, not merged
    /// yet, stay queued in order.
    #[test]
    fn consumers_take_queued_messages_in_order() {
        let mut sc = StepCompress::new(MAX_ERROR, false);
        sc.set_time(0.0, FREQ);
        sc.append_clock(true, 1_000_000).expect("append");
        sc.append_clock(true, 1_010_000).expect("append");
        sc.flush(u64::MAX).expect("flush");
        let all = sc.messages().to_vec();
        assert_eq!(all.len(), 3, "{all:?}");
        sc.consume_messages(1);
        assert_eq!(sc.messages(), &all[1..]);
        let before_reset = sc.messages().len();
        sc.reset(0).expect("reset");
        let mut reset = Vec::new();
        sc.drain_messages_from(before_reset, &mut reset);
        assert_eq!(
            reset.iter().map(|m| m.command).collect::<Vec<_>>(),
            vec![StepCommand::ResetStepClock { clock: 0 }]
        );
        assert_eq!(sc.messages(), &all[1..]);
        // Past the end: nothing taken; consuming more than queued empties the queue.
        sc.drain_messages_from(10, &mut reset);
        assert_eq!(reset.len(), 1);
        sc.consume_messages(10);
        assert!(sc.messages().is_empty());
    }

    #[test]
    fn step_dir_step_within_filter_time_cancels_both() {
        let filter = (SDS_FILTER_TIME * FREQ) as u64; // 37500 ticks
        let mut sc = StepCompress::new(MAX_ERROR, false);
        sc.set_time(0.0, FREQ);
        sc.append_clock(true, 100_000).expect("append");
        sc.commit().expect("commit");
        sc.append_clock(true, 200_000).expect("append");
        // Reversal 0.5 ms later: the uncommitted step at 200000 and this one vanish.
        sc.append_clock(false, 200_000 + filter - 12_500)
            .expect("append");
        assert!(!sc.step_dir());
        sc.flush(u64::MAX).expect("flush");
        let messages = drain(&mut sc);
        let steps = expand(&messages, 0, false);
        assert_eq!(
            steps,
            vec![Step {
                dir: true,
                clock: 100_000
            }]
        );
        assert_eq!(sc.last_position(), 1);

        // Committed steps are never cancelled.
        let mut sc = StepCompress::new(MAX_ERROR, false);
        sc.set_time(0.0, FREQ);
        sc.append_clock(true, 100_000).expect("append");
        sc.commit().expect("commit");
        sc.append_clock(false, 110_000).expect("append");
        sc.flush(u64::MAX).expect("flush");
        let steps = expand(&drain(&mut sc), 0, false);
        assert_eq!(steps.len(), 2);
        assert_eq!(sc.last_position(), 0);

        // Reversal after the filter time: both steps stay.
        let mut sc = StepCompress::new(MAX_ERROR, false);
        sc.set_time(0.0, FREQ);
        sc.append_clock(true, 100_000).expect("append");
        sc.append_clock(false, 100_000 + filter).expect("append");
        sc.flush(u64::MAX).expect("flush");
        let messages = drain(&mut sc);
        let commands: Vec<StepCommand> = messages.iter().map(|m| m.command).collect();
        assert_eq!(
            commands,
            vec![
                StepCommand::SetNextStepDir { dir: true },
                StepCommand::QueueStep {
                    interval: 100_000,
                    count: 1,
                    add: 0
                },
                StepCommand::SetNextStepDir { dir: false },
                StepCommand::QueueStep {
                    interval: filter as u32,
                    count: 1,
                    add: 0
                },
            ]
        );
        assert_eq!(messages[2].req_clock, 100_000);

        // A flush that covers the pending step commits it.
        let mut sc = StepCompress::new(MAX_ERROR, false);
        sc.set_time(0.0, FREQ);
        sc.append_clock(true, 100_000).expect("append");
        sc.flush(100_000).expect("flush");
        sc.append_clock(false, 101_000).expect("append");
        sc.flush(u64::MAX).expect("flush");
        assert_eq!(expand(&drain(&mut sc), 0, false).len(), 2);
    }

    #[test]
    fn flush_emits_steps_before_move_clock_only() {
        let mut sc = StepCompress::new(MAX_ERROR, false);
        sc.set_time(0.0, FREQ);
        for i in 1..=100u64 {
            sc.append_clock(true, i * 10_000 + (i * i) % 7)
                .expect("append");
        }
        sc.flush(500_000).expect("flush");
        let messages = drain(&mut sc);
        let steps = expand(&messages, 0, false);
        assert!(steps.len() >= 49, "{} steps", steps.len());
        assert!(sc.last_step_clock() >= 500_000);
        assert!(steps.len() < 100);
        sc.flush(u64::MAX).expect("flush");
        let rest = drain(&mut sc);
        let all = expand(&[messages, rest].concat(), 0, false);
        assert_eq!(all.len(), 100);
    }

    /// A compressor (allowing `max_error`, keeping its history or not) that has sent +4 steps
    /// at 1100, 1210, 1330, 1460 (one quadratic command) and −3 at 2000, 2100, 2200.
    fn four_up_three_down(max_error: u32, keep_history: bool) -> StepCompress {
        let mut sc = StepCompress::new(max_error, false);
        sc.set_keep_history(keep_history);
        sc.set_time(0.0, FREQ);
        sc.reset(1000).expect("reset");
        for clock in [1100, 1210, 1330, 1460] {
            sc.append_clock(true, clock).expect("append");
        }
        // (Without this, the reversal 540 ticks later would cancel the step at 1460.)
        sc.commit().expect("commit");
        for clock in [2000, 2100, 2200] {
            sc.append_clock(false, clock).expect("append");
        }
        sc.flush(u64::MAX).expect("flush");
        sc
    }

    #[test]
    fn without_history_the_messages_are_the_same() {
        let run = |keep: bool| {
            let mut sc = four_up_three_down(25, keep);
            sc.set_last_position(3000, 50).expect("set_last_position");
            sc.append_clock(true, 4000).expect("append");
            sc.flush(u64::MAX).expect("flush");
            sc
        };
        let (kept, not_kept) = (run(true), run(false));
        assert_eq!(kept.messages(), not_kept.messages());
        assert_eq!(kept.last_position(), not_kept.last_position());
        assert!(kept.history.len() > 1);
        assert!(not_kept.history.is_empty());
        assert_eq!(kept.find_past_position(3500), 50);
        assert_eq!(not_kept.find_past_position(3500), 51);
    }

    #[test]
    fn find_past_position_walks_the_history() {
        let mut sc = four_up_three_down(0, true);
        let expected = |clock: u64| -> i64 {
            let ups = [1100, 1210, 1330, 1460]
                .iter()
                .filter(|&&c| c <= clock)
                .count() as i64;
            let downs = [2000, 2100, 2200].iter().filter(|&&c| c <= clock).count() as i64;
            ups - downs
        };
        for clock in [
            0, 999, 1000, 1099, 1100, 1101, 1209, 1210, 1329, 1330, 1459, 1460, 1999, 2000, 2099,
            2100, 2150, 2200, 5000,
        ] {
            assert_eq!(
                sc.find_past_position(clock),
                expected(clock),
                "clock {clock}"
            );
        }
        assert_eq!(sc.last_position(), 1);

        // A marker from a position query redefines the position from its clock on.
        sc.set_last_position(3000, 50).expect("set_last_position");
        assert_eq!(sc.find_past_position(2500), 1);
        assert_eq!(sc.find_past_position(3000), 50);
        assert_eq!(sc.find_past_position(9000), 50);
        sc.append_clock(true, 4000).expect("append");
        sc.flush(u64::MAX).expect("flush");
        assert_eq!(sc.find_past_position(3999), 50);
        assert_eq!(sc.find_past_position(4000), 51);
        // Step dumps: newest first, clipped to the clock range.
        let newest: Vec<PastSteps> = sc.past_steps(3500, u64::MAX).collect();
        assert_eq!(newest.len(), 1);
        assert_eq!((newest[0].first_clock, newest[0].step_count), (4000, 1));
        let before: Vec<PastSteps> = sc.past_steps(0, 3000).collect();
        assert_eq!(before.len(), sc.history.len() - 2);
        assert_eq!(before.iter().map(|p| p.step_count).sum::<i32>(), 1);
        assert!(
            before
                .windows(2)
                .all(|w| w[0].first_clock > w[1].first_clock)
        );

        // Expiring keeps what is still needed.
        sc.history_expire(2200);
        assert_eq!(sc.past_steps(0, u64::MAX).count(), 2);
        assert_eq!(sc.find_past_position(3500), 50);
        // Before everything still kept: the oldest kept entry's start position.
        assert_eq!(sc.find_past_position(10), 50);
        sc.history_expire(u64::MAX);
        assert_eq!(sc.find_past_position(10), 51);
    }

    #[test]
    fn find_past_position_inside_long_quadratic_commands() {
        // An accelerating then decelerating stepper: compare against the expanded steps.
        let mut sc = StepCompress::new(MAX_ERROR, false);
        sc.set_time(0.0, FREQ);
        let mut requested = Vec::new();
        let mut t = 0.0f64;
        for k in 0..3000 {
            let v = if k < 1500 {
                1.0 + k as f64
            } else {
                3000.0 - k as f64
            };
            t += 50_000.0 / v.max(1.0).sqrt();
            requested.push(t as u64 + 1000);
        }
        for &clock in &requested {
            sc.append_clock(true, clock).expect("append");
        }
        sc.flush(u64::MAX).expect("flush");
        let messages = drain(&mut sc);
        let steps = expand(&messages, 0, false);
        assert_eq!(steps.len(), 3000);
        // At each step's clock, and one tick before it (where rounding would show).
        for (i, step) in steps.iter().enumerate() {
            let before = steps
                .iter()
                .take(i)
                .filter(|s| s.clock < step.clock)
                .count() as i64;
            let at = steps.iter().filter(|s| s.clock <= step.clock).count() as i64;
            assert_eq!(sc.find_past_position(step.clock - 1), before, "step {i}");
            assert_eq!(sc.find_past_position(step.clock), at, "step {i}");
        }
        assert_eq!(sc.find_past_position(u64::MAX), 3000);
        assert!(messages.len() < 300, "{} messages", messages.len());
    }

    #[test]
    fn set_invert_dir_resends_direction() {
        let mut sc = StepCompress::new(MAX_ERROR, false);
        sc.set_time(0.0, FREQ);
        sc.append_clock(true, 1000).expect("append");
        sc.commit().expect("commit");
        sc.flush(u64::MAX).expect("flush");
        sc.set_invert_dir(true);
        sc.append_clock(true, 2000).expect("append");
        sc.flush(u64::MAX).expect("flush");
        let commands: Vec<StepCommand> = drain(&mut sc).iter().map(|m| m.command).collect();
        assert_eq!(commands[0], StepCommand::SetNextStepDir { dir: true });
        assert_eq!(commands[2], StepCommand::SetNextStepDir { dir: false });
        assert!(sc.step_dir());
    }

    #[test]
    fn errors_instead_of_panics() {
        let mut sc = StepCompress::new(MAX_ERROR, false);
        assert!(matches!(
            sc.append(true, 1.0, 0.0),
            Err(StepCompressError::NoFrequency { .. })
        ));
        sc.set_time(0.0, FREQ);
        assert!(matches!(
            sc.append(true, f64::NAN, 0.0),
            Err(StepCompressError::TimeOutOfRange { .. })
        ));
        assert!(matches!(
            sc.append(true, 1e300, 0.0),
            Err(StepCompressError::TimeOutOfRange { .. })
        ));
        sc.append_clock(true, 1_000_000).expect("append");
        sc.flush(u64::MAX).expect("flush");
        let err = sc.append(true, 0.001, 0.0).expect_err("step in the past");
        assert!(matches!(err, StepCompressError::StepInPast { .. }), "{err}");
        assert!(err.to_string().contains("1000000"), "{err}");
        // Steps that go backwards inside the queue end in a validation error.
        let mut sc = StepCompress::new(MAX_ERROR, false);
        sc.set_time(0.0, FREQ);
        sc.append_clock(true, 100_000).expect("append");
        sc.append_clock(true, 200_000).expect("append");
        sc.append_clock(true, 150_000).expect("append");
        let err = sc.flush(u64::MAX).expect_err("backwards steps");
        assert!(err.to_string().starts_with("stepcompress"), "{err}");
    }

    #[test]
    fn identical_clocks_may_error_like_klipper() {
        // Two steps on one tick are fine (the first is placed early)...
        let mut sc = StepCompress::new(MAX_ERROR, false);
        sc.set_time(0.0, FREQ);
        sc.append_clock(true, 100).expect("append");
        sc.append_clock(true, 100).expect("append");
        sc.flush(u64::MAX).expect("flush");
        assert_eq!(triples(&drain(&mut sc)), vec![(50, 2, 0)]);
        // ...but several on the tick of the last emitted step cannot be encoded: Klipper's
        // search proposes interval=0 add=0 and its validation rejects it, as here.
        for _ in 0..3 {
            sc.append_clock(true, 100).expect("append");
        }
        let err = sc.flush(u64::MAX).expect_err("three steps at one clock");
        assert!(
            matches!(err, StepCompressError::InvalidSequence { count: 3, .. }),
            "{err}"
        );
    }

    #[test]
    fn the_spread_table_is_the_division() {
        for max_error in [0, 1, 400, 13_000, 95_000, 1 << 29, u32::MAX] {
            let sc = StepCompress::new(max_error, false);
            for count in 2..3_000_i32 {
                assert_eq!(
                    sc.spread(count),
                    deviation(max_error, count),
                    "{max_error} {count}"
                );
            }
        }
    }

    /// Every looked-up triangle divides exactly where a multiply-shift is likeliest to be off
    /// by one: at and around each multiple of the divisor near the top of the range, and at
    /// the ends (`|i32::MIN|` = 2³¹ is the largest magnitude).
    #[test]
    fn triangle_divisors_divide_exactly() {
        for (k, divisor) in TRIANGLE_DIVISORS.iter().enumerate().skip(2) {
            let d = i64::from(triangle(k as i32));
            let top = (1_i64 << 31) / d;
            let mut numerators = vec![0, 1, d - 1, d, d + 1, (1 << 31) - 1, 1 << 31];
            for q in [1, 2, top - 1, top] {
                numerators.extend([q * d - 1, q * d, q * d + 1]);
            }
            for x in numerators.into_iter().filter(|x| (0..=1 << 31).contains(x)) {
                for m in [x, -x] {
                    let Ok(m) = i32::try_from(m) else { continue };
                    assert_eq!(
                        i64::from(divisor.trunc(m)),
                        i64::from(m) / d,
                        "{m} / {d} (k = {k})"
                    );
                }
            }
        }
    }

    /// Steps out of order (not from the step generator, which never does this): the window of
    /// a step before the one ahead of it may reach below the last step sent, where the search's
    /// signed arithmetic and the MCU's unsigned sums disagree. Such a command is never taken
    /// as proven; it is replayed, and refused as Klipper's replay refuses it.
    #[test]
    fn steps_out_of_order_are_replayed_not_proven() {
        let mut sc = StepCompress::new(400, false);
        sc.set_time(0.0, FREQ);
        sc.append_clock(true, 100).expect("append");
        sc.append_clock(true, 50).expect("append");
        sc.commit().expect("commit");
        assert_eq!(sc.ordered_from, 2, "the second entry is out of order");
        let (triple, pass) = sc.best_triple(&mut StepBounds::default());
        assert!(!sc.proven(triple, pass), "{triple:?}");
        let replayed = sc.validate(triple);
        assert_eq!(sc.flush(u64::MAX).err(), replayed.err());
    }

    #[test]
    fn huge_queue_is_flushed_and_compacted() {
        // 140k steps without any flush: the queue keeps at most ~64K of them pending.
        let mut sc = StepCompress::new(MAX_ERROR, false);
        sc.set_time(0.0, FREQ);
        let mut requested = Vec::new();
        let mut clock = 0u64;
        for i in 0..140_000u64 {
            clock += 4000 + (i * 7919) % 23;
            requested.push(clock);
            sc.append_clock(true, clock).expect("append");
        }
        // The buffer grows to 128Ki entries; when it fills, all but the newest 65535 are sent.
        assert_eq!(sc.queue.len(), 131_072);
        assert!(sc.queue_next - sc.queue_pos < 131_072);
        assert!(!sc.messages().is_empty());
        sc.flush(u64::MAX).expect("flush");
        let messages = drain(&mut sc);
        let steps = expand(&messages, 0, false);
        check_windows(
            &steps,
            &requested
                .iter()
                .map(|&c| Step {
                    dir: true,
                    clock: c,
                })
                .collect::<Vec<_>>(),
            0,
            MAX_ERROR,
        );
    }

    // ---- property tests ---------------------------------------------------------------------

    /// Asserts that `emitted` are `requested` step for step (same directions), each at most
    /// `max_error` early, never late, and never closer to the previous emitted step than half
    /// its distance to it: t ≥ p − min(max_error, (p − t_prev)/2).
    fn check_windows(emitted: &[Step], requested: &[Step], start: u64, max_error: u32) {
        assert_eq!(emitted.len(), requested.len(), "step count");
        let mut previous = start;
        for (i, (e, r)) in emitted.iter().zip(requested).enumerate() {
            assert_eq!(e.dir, r.dir, "direction of step {i}");
            assert!(
                e.clock <= r.clock,
                "step {i} late: {} > {}",
                e.clock,
                r.clock
            );
            let slack = ((r.clock - previous) / 2).min(u64::from(max_error));
            assert!(
                e.clock >= r.clock - slack,
                "step {i} too early: {} < {} - {slack} (previous {previous})",
                e.clock,
                r.clock
            );
            previous = e.clock;
        }
    }

    /// One burst of steps in one direction: a smooth (quadratic-ish) schedule plus jitter.
    #[derive(Clone, Debug)]
    struct Burst {
        dir: bool,
        first_gap: u64,
        interval: f64,
        growth: f64,
        count: usize,
        jitter: u64,
        seed: u64,
        commit: bool,
        flush_back: Option<u64>,
    }

    fn burst() -> impl Strategy<Value = Burst> {
        let first_gap = prop_oneof![
            4 => 0u64..100,
            4 => 100u64..40_000,
            3 => 40_000u64..5_000_000,
            1 => (CLOCK_DIFF_MAX - 3)..(CLOCK_DIFF_MAX + 5_000_000_000),
        ];
        let interval = prop_oneof![
            1 => 0.0f64..50.0,
            3 => 50.0f64..5_000.0,
            3 => 5_000.0f64..200_000.0,
            1 => 200_000.0f64..3_000_000.0,
        ];
        (
            any::<bool>(),
            first_gap,
            interval,
            -0.02f64..0.02,
            1usize..300,
            prop_oneof![2 => Just(0u64), 1 => 0u64..3_000],
            any::<u64>(),
            any::<bool>(),
            proptest::option::of(0u64..1_000_000),
        )
            .prop_map(
                |(dir, first_gap, interval, growth, count, jitter, seed, commit, flush_back)| {
                    Burst {
                        dir,
                        first_gap,
                        interval,
                        growth,
                        count,
                        jitter,
                        seed,
                        commit,
                        flush_back,
                    }
                },
            )
    }

    /// Reference model of which requested steps survive the step+dir+step filter.
    struct FilterModel {
        pending: Option<Step>,
        survivors: Vec<Step>,
        filter_ticks: f64,
    }

    impl FilterModel {
        fn step(&mut self, step: Step) {
            if let Some(pending) = self.pending.take() {
                if pending.dir != step.dir
                    && ((step.clock - pending.clock) as f64) < self.filter_ticks
                {
                    return;
                }
                self.survivors.push(pending);
            }
            self.pending = Some(step);
        }
        fn commit(&mut self) {
            self.survivors.extend(self.pending.take());
        }
        fn flush(&mut self, move_clock: u64) {
            if self.pending.is_some_and(|p| move_clock >= p.clock) {
                self.commit();
            }
        }
    }

    fn run_bursts(bursts: &[Burst], max_error: u32, invert: bool) {
        let mut sc = StepCompress::new(max_error, invert);
        sc.set_time(0.0, FREQ);
        let mut model = FilterModel {
            pending: None,
            survivors: Vec::new(),
            filter_ticks: SDS_FILTER_TIME * FREQ,
        };
        let mut messages = Vec::new();
        let mut clock = 0u64;
        for b in bursts {
            let mut rng = b.seed | 1;
            let mut gap = b.interval;
            for i in 0..b.count {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let jitter = if b.jitter > 0 { rng % b.jitter } else { 0 };
                // Requested clocks strictly increase: like Klipper, runs of identical clocks
                // can end in "invalid sequence" (see `identical_clocks_may_error_like_klipper`).
                clock += if i == 0 {
                    b.first_gap
                } else {
                    gap as u64 + jitter
                }
                .max(1);
                gap = (gap * (1.0 + b.growth)).max(0.0);
                let step = Step { dir: b.dir, clock };
                model.step(step);
                sc.append_clock(b.dir, clock).expect("append");
            }
            if b.commit {
                model.commit();
                sc.commit().expect("commit");
            }
            if let Some(back) = b.flush_back {
                let move_clock = clock.saturating_sub(back);
                model.flush(move_clock);
                sc.flush(move_clock).expect("flush");
                // Every surviving step before move_clock is out.
                sc.drain_messages(&mut messages);
                let emitted = expand(&messages, 0, invert).len();
                let due = model
                    .survivors
                    .iter()
                    .filter(|s| s.clock < move_clock)
                    .count();
                assert!(
                    emitted >= due,
                    "flush({move_clock}): {emitted} emitted < {due} due"
                );
            }
        }
        sc.flush(u64::MAX).expect("final flush");
        model.commit();
        sc.drain_messages(&mut messages);

        let emitted = expand(&messages, 0, invert);
        check_windows(&emitted, &model.survivors, 0, max_error);
        let position: i64 = model
            .survivors
            .iter()
            .map(|s| if s.dir { 1 } else { -1 })
            .sum();
        assert_eq!(sc.last_position(), position);

        // Message clocks: queue_step carries the previous step's clock (or its own if far).
        let mut last = 0u64;
        let mut index = 0;
        for message in &messages {
            match message.command {
                StepCommand::QueueStep { count, .. } => {
                    assert_eq!(message.min_clock, last);
                    let first = emitted[index].clock;
                    if count == 1 && first >= last + CLOCK_DIFF_MAX {
                        assert_eq!(message.req_clock, first);
                    } else {
                        assert_eq!(message.req_clock, last);
                        assert!(first - last < CLOCK_DIFF_MAX);
                    }
                    index += usize::from(count);
                    last = emitted[index - 1].clock;
                }
                StepCommand::SetNextStepDir { .. } => {
                    assert_eq!((message.req_clock, message.min_clock), (last, 0));
                }
                StepCommand::ResetStepClock { .. } => unreachable!(),
            }
        }
        // find_past_position agrees with the expansion just before and at every 7th step.
        let mut position = 0i64;
        let mut counted = 0;
        for step in emitted.iter().step_by(7) {
            let position_at = |clock: u64, counted: &mut usize, position: &mut i64| {
                while *counted < emitted.len() && emitted[*counted].clock <= clock {
                    *position += if emitted[*counted].dir { 1 } else { -1 };
                    *counted += 1;
                }
                *position
            };
            if step.clock > 0 {
                let before = position_at(step.clock - 1, &mut counted, &mut position);
                assert_eq!(sc.find_past_position(step.clock - 1), before);
            }
            let at = position_at(step.clock, &mut counted, &mut position);
            assert_eq!(sc.find_past_position(step.clock), at);
        }
    }

    /// Gaps between the requested clocks of [`run_gaps`]: mostly short, some backwards (out of
    /// order), some near or past the far-step limit, some zero.
    fn step_gaps() -> impl Strategy<Value = Vec<i64>> {
        proptest::collection::vec(
            prop_oneof![
                6 => 0i64..2_000,
                2 => -3_000i64..0,
                1 => 0i64..200_000_000,
                1 => Just(0i64),
            ],
            1..400,
        )
    }

    /// Requests steps at clocks from 1000 on, `gaps` apart (never below 0), flushing to half
    /// the clock every `flush_every` steps, then everything: what each call returned.
    fn run_gaps(
        sc: &mut StepCompress,
        gaps: &[i64],
        flush_every: usize,
    ) -> Vec<Result<(), StepCompressError>> {
        let mut clock: i64 = 1_000;
        let mut outcomes = Vec::new();
        for (i, gap) in gaps.iter().enumerate() {
            clock = (clock + gap).max(0);
            outcomes.push(sc.append_clock(true, clock as u64));
            if i % flush_every == 0 {
                outcomes.push(sc.flush(clock as u64 / 2));
            }
        }
        outcomes.push(sc.flush(u64::MAX));
        outcomes
    }

    /// A queue for [`fast_scan_is_klippers_scan`] (base, clocks, their `add`): clocks on a
    /// quadratic (`interval`, `add` from `base`) up to `noise` ticks late, now and then with a
    /// gap far off it.
    fn scan_queue() -> impl Strategy<Value = (u64, Vec<u32>, i32)> {
        (
            prop_oneof![
                0u64..1 << 20,
                (1u64 << 32) - 100_000..(1 << 32) + 100_000,
                any::<u32>().prop_map(u64::from),
            ],
            1i64..200_000,
            prop_oneof![-20i64..20, -2_000i64..2_000],
            0i64..400,
            proptest::collection::vec((0i64..1 << 16, 0u32..200), 1..1_200),
        )
            .prop_map(|(base, interval, add, noise, jitter)| {
                let mut clocks = Vec::with_capacity(jitter.len());
                let (mut offset, mut step_interval) = (0_i64, interval);
                for &(late, far) in &jitter {
                    offset += step_interval.max(0);
                    step_interval += add;
                    if far == 0 {
                        offset += late * 64;
                    }
                    let late = if noise == 0 { 0 } else { late % noise };
                    let point = (offset + late).clamp(0, (3 << 28) - 1);
                    clocks.push(base.wrapping_add(point as u64) as u32);
                }
                (base, clocks, add as i32)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 256,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// `step_bounds`' nearest integers are the exact ceiling and floor of
        /// `(n − add·k(k−1)/2)/k` wherever a fast pass uses them (`2 ≤ k ≤ 65535`, window ends
        /// in `[0, 2³⁰)`, `|add|·k(k−1)/2 < 2³⁰ − 2¹⁶`), quotients near an integer included:
        /// the bounds as `StepBounds` and `HALF_K_PAIRS` make them, tightened and rounded as a
        /// pass does.
        #[test]
        fn step_bounds_round_to_the_exact_ceiling_and_floor(
            k in prop_oneof![2u32..64, 2u32..=65_535],
            (earliest_k, earliest_off) in (0i64..1 << 30, -2i64..=2),
            (latest_k, latest_off) in (0i64..1 << 30, -2i64..=2),
            add_fraction in -1.0f64..=1.0,
            near_integer in any::<bool>(),
        ) {
            let k64 = i64::from(k);
            let triangle = k64 * (k64 - 1) / 2;
            let add_max = ((1_i64 << 30) - (1 << 16) - 1) / triangle;
            let add = ((add_max as f64 * add_fraction) as i64).clamp(-add_max, add_max);
            // Window ends in [0, 2³⁰): free, or the product of `k` and an integer (± 2), where
            // the quotient of the numerator is (nearly) whole.
            let end = |value: i64, off: i64| {
                let value = if near_integer {
                    (value / k64) * k64 + add * triangle % k64 + off
                } else {
                    value
                };
                value.clamp(0, (1 << 30) - 1)
            };
            let (earliest, latest) = (end(earliest_k, earliest_off), end(latest_k, latest_off));
            let window = Window {
                earliest: earliest as i32,
                latest: latest as i32,
            };
            let quotients = biased_quotients(window, INVERSES[k as usize]);
            let step = step_bounds(quotients, [add as f64; 2], HALF_K_PAIRS[k as usize]);
            // A pass starts from the outer bounds and tightens with the step; take them wide.
            let bound = tightened([f64::from(i32::MIN), -f64::from(i32::MAX)], step);
            let [lo, hi] = integers(bound);
            let expected_lo = (earliest - add * triangle).div_euclid(k64)
                + i64::from((earliest - add * triangle).rem_euclid(k64) != 0);
            let expected_hi = (latest - add * triangle).div_euclid(k64);
            prop_assert_eq!(i64::from(lo), expected_lo);
            prop_assert_eq!(i64::from(hi), expected_hi);
            prop_assert_eq!(crossed(bound), expected_lo > expected_hi);
        }

        /// A pass with Klipper's operations throughout and one with the exact fast path, where
        /// it applies, end alike: queues in order (and some not), every `add` a search tries,
        /// interval bounds from the first window (or anywhere, to cross the path's limits).
        #[test]
        fn fast_scan_is_klippers_scan(
            (base, clocks, queue_add) in scan_queue(),
            add in prop_oneof![-3i32..=3, -40i32..40, -0x8000i32..=0x7fff],
            bounds in prop_oneof![
                4 => Just(None),
                1 => (any::<i32>(), any::<i32>()).prop_map(Some),
                1 => (-3_000i32..3_000, 0i32..3_000).prop_map(|(lo, span)| Some((lo, lo + span))),
            ],
            max_error in prop_oneof![Just(MAX_ERROR), 400u32..3_000, 1u32..400],
            shuffled in proptest::bool::weighted(0.1),
        ) {
            let mut sc = StepCompress::new(max_error, false);
            sc.last_step_clock = base;
            let mut clocks = clocks;
            let len = clocks.len();
            if shuffled && len > 2 {
                clocks.swap(1, len - 1);
            }
            let ordered = clocks.windows(2).all(|pair| {
                pair[0].wrapping_sub(base as u32) <= pair[1].wrapping_sub(base as u32)
            });
            sc.queue = clocks.clone();
            sc.queue_pos = 0;
            sc.queue_next = clocks.len();
            sc.ordered_from = if ordered { 0 } else { clocks.len() };
            let first = sc.window(0);
            let (outer_min, outer_max) = bounds.unwrap_or((first.earliest, first.latest));
            let start = ScanState::first(outer_min, outer_max, first.latest as u32);
            // Mostly near the queue's own `add`, where passes run long.
            let add = if add.abs() <= 3 { queue_add.saturating_add(add).clamp(-0x8000, 0x7fff) } else { add };
            let klipper = sc.scan_exact(&clocks[1..], base as u32, add, start);
            let fast = sc.scan(0, len, add, outer_min, outer_max, &mut StepBounds::default());
            prop_assert_eq!(fast, klipper);
            // With the quotients of an earlier pass of the command (shorter or longer) kept.
            let mut bounds = StepBounds::default();
            let _ = sc.scan(0, len, 0, first.earliest, first.latest, &mut bounds);
            let after = sc.scan(0, len, add, outer_min, outer_max, &mut bounds);
            prop_assert_eq!(after, klipper);
        }

        #[test]
        fn compressed_steps_expand_to_the_requested_ones(
            bursts in proptest::collection::vec(burst(), 1..12),
            max_error in prop_oneof![Just(MAX_ERROR), 0u32..3_000],
            invert in any::<bool>(),
        ) {
            run_bursts(&bursts, max_error, invert);
        }

        /// A command whose replay is skipped must pass it: every command of these runs — steps
        /// in and out of order, equal, near the far-step limit, any window — is replayed by
        /// the debug assertion in `flush_queue_inner`, which panics on a proven command that
        /// fails (errors from the steps themselves are fine here).
        #[test]
        fn proven_commands_pass_their_replay(
            gaps in step_gaps(),
            max_error in prop_oneof![Just(MAX_ERROR), 0u32..3_000, 1u32 << 29..u32::MAX],
            flush_every in 1usize..200,
        ) {
            let mut sc = StepCompress::new(max_error, false);
            sc.set_time(0.0, FREQ);
            let _ = run_gaps(&mut sc, &gaps, flush_every);
        }

        /// The search compiled for each instruction set this processor runs ([`Isa`]) gives
        /// the same commands and the same errors, on steps in and out of order, far apart and
        /// with any window.
        #[test]
        fn the_commands_are_the_same_on_each_isa(
            gaps in step_gaps(),
            max_error in prop_oneof![Just(MAX_ERROR), 0u32..3_000, 1u32 << 29..u32::MAX],
            flush_every in 1usize..200,
        ) {
            let run = |isa: Isa| {
                let mut sc = StepCompress::new(max_error, false);
                sc.set_isa(isa);
                sc.set_time(0.0, FREQ);
                let outcomes = run_gaps(&mut sc, &gaps, flush_every);
                (outcomes, drain(&mut sc))
            };
            let baseline = run(Isa::BASELINE);
            for isa in Isa::available() {
                prop_assert_eq!(&run(isa), &baseline, "{}", isa.name());
            }
        }

        /// [`truncated`] is `as`'s truncation wherever `append_chunk` uses it (and beyond).
        #[test]
        fn truncated_is_as_truncation(
            tick in prop_oneof![
                0.0..f64::from(1u32 << 31),
                (0u64..1 << 40).prop_map(|n| n as f64),
                (0u64..1 << 40, -2i32..=2)
                    .prop_map(|(n, ulps)| f64::from_bits((n as f64).to_bits().saturating_add_signed(ulps.into()))),
                (0u64..1 << 40).prop_map(|n| n as f64 + 0.5),
            ],
        ) {
            prop_assume!((0.0..(1u64 << 51) as f64).contains(&tick));
            prop_assert_eq!(truncated(tick), tick as u64);
        }

        /// The search's divisions by a looked-up triangle are `div_ceil`'s and `div_floor`'s,
        /// for any numerator (the wrapped ones near the ends of `i32` too).
        #[test]
        fn triangle_divisors_are_the_divisions(
            k in 0..=TRIANGLE_DIVISORS_MAX,
            n in prop_oneof![
                any::<i32>(),
                -1_000_000..1_000_000_i32,
                (0..=600_000_i32).prop_map(|x| i32::MAX - x),
                (0..=600_000_i32).prop_map(|x| i32::MIN + x),
            ],
        ) {
            let d = triangle(k as i32);
            let divisor = TRIANGLE_DIVISORS[k];
            prop_assert_eq!(divisor.ceil(n, d), div_ceil(n, d));
            prop_assert_eq!(divisor.floor(n, d), div_floor(n, d));
        }

        #[test]
        fn append_never_panics(
            ops in proptest::collection::vec(
                (0u8..8, any::<bool>(), -1e12f64..1e12, -1e3f64..1e3, any::<u64>()),
                1..200,
            ),
            max_error in any::<u32>(),
        ) {
            let mut sc = StepCompress::new(max_error, false);
            sc.set_time(0.0, FREQ);
            let mut out = Vec::new();
            for (op, dir, a, b, c) in ops {
                let _ = match op {
                    0..=2 => sc.append(dir, a.abs() % 1e3, b),
                    3 => sc.append(dir, a, b),
                    4 => sc.append_clock(dir, c % (1 << 40)),
                    5 => sc.flush(c),
                    6 => sc.commit(),
                    _ => match c % 4 {
                        0 => sc.reset(c % (1 << 34)),
                        1 => sc.set_last_position(c, a as i64),
                        2 => { sc.set_time(a / 1e9, 1e6 + b.abs() * 1e5); Ok(()) }
                        _ => { sc.set_invert_dir(dir); sc.history_expire(c); Ok(()) }
                    },
                };
                let _ = sc.find_past_position(c);
                sc.drain_messages(&mut out);
            }
            let _ = sc.flush(u64::MAX);
        }

        /// `append_times` is `append` step by step: the same commands, history and errors,
        /// whatever the chunking — through far steps, reversals, NaN and negative times, and a
        /// queue that fills up.
        #[test]
        fn append_times_is_append_step_by_step(
            runs in proptest::collection::vec(
                (
                    any::<bool>(),
                    prop_oneof![Just(0.0), 0.0f64..10.0],
                    proptest::collection::vec(
                        prop_oneof![
                            300 => 0.0f64..2e-3,
                            3 => 0.0f64..40.0,
                            1 => Just(f64::NAN),
                            1 => -1e-3f64..0.0,
                            // (Encodes a step up to 1 ms before the one before it.)
                            12 => 10.0f64..10.001,
                        ],
                        0..300,
                    ),
                    1usize..80,
                    any::<bool>(),
                ),
                1..10,
            ),
            freq in prop_oneof![Just(FREQ), Just(16e6), Just(520e6)],
        ) {
            let mut one = StepCompress::new(MAX_ERROR, false);
            let mut many = StepCompress::new(MAX_ERROR, false);
            one.set_time(0.0, freq);
            many.set_time(0.0, freq);
            let mut print_time = 0.0;
            // With `commits`, the step generator's commit after every `chunk` steps (a range
            // whose last step is final), so that a slice often starts with no step pending.
            for (dir, pause, gaps, chunk, commits) in runs {
                // Each run after the one before; its times not decreasing, as the step
                // generator's are, but for a few out of order (a NaN or a negative gap stays
                // as it is: an error).
                let mut t = 0.0;
                let times: Vec<f64> = gaps
                    .iter()
                    .map(|&gap| {
                        if (10.0..=10.001).contains(&gap) {
                            return (t - (gap - 10.0)).max(0.0);
                        }
                        t += gap.abs();
                        if gap.is_nan() || gap < 0.0 { gap } else { t }
                    })
                    .collect();
                let mut expected = Ok(());
                for (i, &time) in times.iter().enumerate() {
                    expected = one.append(dir, print_time, time);
                    if expected.is_ok() && commits && (i + 1) % chunk == 0 {
                        expected = one.commit();
                    }
                    if expected.is_err() {
                        break;
                    }
                }
                let mut got = Ok(());
                for piece in times.chunks(chunk) {
                    got = many.append_times(dir, print_time, piece);
                    if got.is_ok() && commits && piece.len() == chunk {
                        got = many.commit();
                    }
                    if got.is_err() {
                        break;
                    }
                }
                // (As text: an error may carry a NaN time, which equals nothing.)
                prop_assert_eq!(format!("{got:?}"), format!("{expected:?}"));
                if expected.is_err() {
                    return Ok(());
                }
                prop_assert!(one.ordered_as_claimed() && many.ordered_as_claimed());
                let flushed = one.flush(u64::MAX);
                prop_assert_eq!(&flushed, &many.flush(u64::MAX));
                prop_assert_eq!(drain(&mut one), drain(&mut many));
                if flushed.is_err() {
                    // (Steps out of order that no command can take: the stepper is lost, as
                    // Klipper's would be.)
                    return Ok(());
                }
                prop_assert_eq!(one.last_position(), many.last_position());
                print_time += t + pause;
            }
        }
    }
}
