//! Step traces: what an MCU byte stream makes each stepper do, and how two such streams compare.
//!
//! The planner's acceptance rule is Klipper's own output: per stepper (matched by step pin), the
//! same step count and direction sequence, every step within 25 µs of Klipper's, and the end of
//! motion within 1 ms. This module checks it from two host→MCU byte streams (Klipper's framed
//! message blocks, as klippy batch mode writes them) and their data dictionaries:
//!
//! 1. [`Trace::from_stream`] decodes every message, reads the steppers from the config phase
//!    (`config_stepper oid step_pin dir_pin invert_step step_pulse_ticks`) and expands each
//!    stepper's `set_next_step_dir` / `queue_step` / `reset_step_clock` commands into absolute
//!    64-bit step clocks, exactly as the MCU schedules them (protocol notes §6.4): for a previous
//!    step (or reset) at `t0`, step k of `queue_step interval count add` is at
//!    `t0 + k·interval + add·k(k−1)/2`. Intervals are relative, so the clocks accumulate in `u64`
//!    and never wrap, however long the print.
//! 2. Two places carry only 32 bits of an absolute time, and are extended the way a host extends
//!    clocks, against the latest clock the stream has established (the largest "clock before a
//!    chunk" of any stepper so far; Klipper sends each MCU's step commands in that order):
//!    `reset_step_clock clock=` goes to the nearest 64-bit clock, and the lone step
//!    (`count=1`) that Klipper sends after a gap of 2^32 ticks or more (the interval on the wire
//!    is the gap mod 2^32: 268 s at 16 MHz, 24 s at 180 MHz) is moved on by whole 2^32-tick turns
//!    until it is no more than 2^31 ticks before that clock. A whole MCU idle for 2^32 ticks or
//!    more leaves nothing to extend against; such a gap is then read short by whole turns, the
//!    same on both sides of a comparison.
//! 3. [`compare`] (or [`compare_with`]) matches the steppers of two traces by step pin (or by
//!    oid) and measures every step in seconds, so a 16 MHz stream can be checked against a
//!    180 MHz one; the result's `Display` is the human-readable report.
//! 4. [`check_queue_steps`] flags commands the MCU would refuse or could not execute as written.
//!
//! A trace is compact: one `u64` per step plus a run-length list of directions, so a 7-million
//! step print is about 56 MB and expands in a fraction of a second.
//!
//! # Invariants
//! - No I/O: streams come in as byte slices.
//! - Never panics on malformed input: undecodable bytes, unknown message ids, commands for an
//!   unconfigured oid and out-of-range parameters are [`TraceError`]s naming the message.

use std::collections::HashMap;
use std::fmt;

use gantry_proto::Dictionary;
use gantry_proto::dump::{self, Decoded};
use gantry_proto::msgformat::{MessageFormat, Value};

/// The per-step limit: every step within 25 µs of the reference's.
pub const STEP_TIME_LIMIT_S: f64 = 25e-6;
/// The end-of-motion limit: each stepper's last step within 1 ms of the reference's.
pub const END_OF_MOTION_LIMIT_S: f64 = 1e-3;

/// Why a stream could not be traced. Message indexes count decoded messages from 0, so
/// `index + 1` is the line number in `parsedump` output of a clean stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceError {
    /// Bytes that are not a valid block or message (truncated block, bad CRC, cut message).
    #[error("undecodable bytes at offset {offset} (after message {index}): {reason}")]
    Stream {
        /// Messages decoded before the problem.
        index: usize,
        /// Byte offset in the stream.
        offset: usize,
        /// What the decoder said.
        reason: String,
    },
    /// A message id the dictionary does not declare.
    #[error("message {index}: id {id} is not in the dictionary")]
    UnknownMessage {
        /// The message's index.
        index: usize,
        /// Its id.
        id: i32,
    },
    /// A stepper command for an oid that no `config_stepper` configured (so far).
    #[error("message {index}: {command} for oid {oid}, which is not a configured stepper")]
    NotAStepper {
        /// The message's index.
        index: usize,
        /// The command's name.
        command: &'static str,
        /// The oid.
        oid: u8,
    },
    /// A second `config_stepper` for an oid.
    #[error("message {index}: config_stepper for oid {oid}, which is already configured")]
    DuplicateStepper {
        /// The message's index.
        index: usize,
        /// The oid.
        oid: u8,
    },
    /// A parameter missing or outside the range the MCU reads it in.
    #[error("message {index}: {command} oid {oid}: parameter '{param}' {why}")]
    BadParameter {
        /// The message's index.
        index: usize,
        /// The command's name.
        command: &'static str,
        /// The oid, when it was readable (else 0).
        oid: u8,
        /// The parameter.
        param: &'static str,
        /// What is wrong with it.
        why: String,
    },
    /// The dictionary declares a stepper command without a parameter this module needs.
    #[error("the dictionary's {command} has no parameter '{param}'")]
    Dictionary {
        /// The command's name.
        command: &'static str,
        /// The parameter.
        param: &'static str,
    },
}

/// A run of steps in one direction: from step `start` up to the next run's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirRun {
    /// The index of the run's first step.
    pub start: usize,
    /// The direction as sent (`set_next_step_dir dir=1` is `true`; dir-pin inversion included).
    pub dir: bool,
}

/// One `queue_step` as received, with where its steps landed in the trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueStep {
    /// The message's index in the stream.
    pub index: usize,
    /// Ticks from the previous step (or reset) to the first step.
    pub interval: u32,
    /// Steps.
    pub count: u16,
    /// Interval growth per step.
    pub add: i16,
    /// The index of its first step in [`StepperTrace::clocks`].
    pub first_step: usize,
    /// Whether `interval` is measured from a previous step (false: from clock 0 at start, or
    /// from a `reset_step_clock`).
    pub after_step: bool,
}

/// Everything one stepper did in a stream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StepperTrace {
    /// Its oid.
    pub oid: u8,
    /// The step pin's name from the dictionary's `pin` enumeration (the number when unnamed).
    pub step_pin: String,
    /// The dir pin's name, likewise.
    pub dir_pin: String,
    /// `invert_step` as configured (−1: step on both edges).
    pub invert_step: i64,
    /// `step_pulse_ticks` as configured (0 when the firmware's command lacks it).
    pub step_pulse_ticks: u32,
    /// Absolute MCU clock of every step, in order.
    pub clocks: Vec<u64>,
    /// Directions, run-length encoded; empty when there are no steps, else the first run starts
    /// at 0 and consecutive runs alternate.
    pub dir_runs: Vec<DirRun>,
    /// The `queue_step` commands, in order.
    pub queue_steps: Vec<QueueStep>,
    /// How many `reset_step_clock` commands it got.
    pub resets: usize,
    /// How many lone steps were moved on by whole 2^32-tick turns (see the module doc).
    pub far_steps_extended: usize,
}

impl StepperTrace {
    /// The number of steps.
    pub fn step_count(&self) -> usize {
        self.clocks.len()
    }

    /// The clock of the last step (the end of its motion), if it stepped at all.
    pub fn end_clock(&self) -> Option<u64> {
        self.clocks.last().copied()
    }

    /// Net signed steps: Σ (dir ? +1 : −1) over all steps. This is the direction on the wire,
    /// so for a `!` dir pin the physical sense is the opposite.
    pub fn net_steps(&self) -> i64 {
        let n = self.clocks.len();
        let mut net = 0_i64;
        for (i, run) in self.dir_runs.iter().enumerate() {
            let end = self.dir_runs.get(i + 1).map_or(n, |r| r.start);
            let len = i64::try_from(end.saturating_sub(run.start)).unwrap_or(i64::MAX);
            net += if run.dir { len } else { -len };
        }
        net
    }

    /// The direction of step `index` (`None` past the last step).
    pub fn dir_at(&self, index: usize) -> Option<bool> {
        if index >= self.clocks.len() {
            return None;
        }
        let run = self.dir_runs.partition_point(|r| r.start <= index);
        self.dir_runs.get(run.checked_sub(1)?).map(|r| r.dir)
    }

    /// How many times the direction changes between steps.
    pub fn direction_changes(&self) -> usize {
        self.dir_runs.len().saturating_sub(1)
    }

    fn id(&self) -> StepperId {
        StepperId {
            oid: self.oid,
            step_pin: self.step_pin.clone(),
            steps: self.clocks.len(),
        }
    }
}

/// The steppers of one stream.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Trace {
    /// The steppers in `config_stepper` order.
    pub steppers: Vec<StepperTrace>,
    /// Messages decoded.
    pub messages: usize,
}

impl Trace {
    /// Decodes `data` with `dict` and expands every stepper's commands into step clocks.
    ///
    /// # Errors
    /// The first problem in the stream (see [`TraceError`]); messages after it are not read.
    pub fn from_stream(dict: &Dictionary, data: &[u8]) -> Result<Self, TraceError> {
        let mut builder = Builder::new(dict)?;
        dump::decode(dict, data, |item| builder.feed(item));
        builder.finish()
    }

    /// The stepper with this oid.
    pub fn stepper(&self, oid: u8) -> Option<&StepperTrace> {
        self.steppers.iter().find(|s| s.oid == oid)
    }

    /// The (first) stepper with this step pin.
    pub fn by_step_pin(&self, pin: &str) -> Option<&StepperTrace> {
        self.steppers.iter().find(|s| s.step_pin == pin)
    }

    /// Steps over all steppers.
    pub fn total_steps(&self) -> usize {
        self.steppers.iter().map(StepperTrace::step_count).sum()
    }

    /// `queue_step` commands over all steppers.
    pub fn total_queue_steps(&self) -> usize {
        self.steppers.iter().map(|s| s.queue_steps.len()).sum()
    }
}

/// A command's id and the positions of the parameters this module reads.
type Positions<const N: usize> = (i32, [usize; N]);

/// `config_stepper`'s id and parameter positions (the last two are optional in a firmware).
#[derive(Debug, Clone, Copy)]
struct ConfigLayout {
    required: Positions<3>,
    invert_step: Option<usize>,
    step_pulse_ticks: Option<usize>,
}

/// Parameter positions of the stepper commands in this dictionary.
#[derive(Debug, Clone, Copy)]
struct Layout {
    config: Option<ConfigLayout>,
    queue_step: Option<Positions<4>>,
    dir: Option<Positions<2>>,
    reset: Option<Positions<2>>,
}

fn positions<const N: usize>(
    format: &MessageFormat,
    command: &'static str,
    names: [&'static str; N],
) -> Result<[usize; N], TraceError> {
    let mut out = [0; N];
    for (slot, name) in out.iter_mut().zip(names) {
        *slot = position(format, name).ok_or(TraceError::Dictionary {
            command,
            param: name,
        })?;
    }
    Ok(out)
}

fn position(format: &MessageFormat, name: &str) -> Option<usize> {
    format.params.iter().position(|p| p.name == name)
}

impl Layout {
    fn new(dict: &Dictionary) -> Result<Self, TraceError> {
        let config = match dict.command("config_stepper") {
            Some(f) => Some(ConfigLayout {
                required: (
                    f.id,
                    positions(f, "config_stepper", ["oid", "step_pin", "dir_pin"])?,
                ),
                invert_step: position(f, "invert_step"),
                step_pulse_ticks: position(f, "step_pulse_ticks"),
            }),
            None => None,
        };
        let queue_step = match dict.command("queue_step") {
            Some(f) => Some((
                f.id,
                positions(f, "queue_step", ["oid", "interval", "count", "add"])?,
            )),
            None => None,
        };
        let dir = match dict.command("set_next_step_dir") {
            Some(f) => Some((f.id, positions(f, "set_next_step_dir", ["oid", "dir"])?)),
            None => None,
        };
        let reset = match dict.command("reset_step_clock") {
            Some(f) => Some((f.id, positions(f, "reset_step_clock", ["oid", "clock"])?)),
            None => None,
        };
        Ok(Self {
            config,
            queue_step,
            dir,
            reset,
        })
    }
}

/// A stepper being expanded.
#[derive(Debug, Default)]
struct Live {
    trace: StepperTrace,
    /// The clock the next `queue_step`'s interval counts from.
    reference: u64,
    /// Whether `reference` is a step (not start or a reset).
    reference_is_step: bool,
    /// The direction the next `queue_step` uses (the MCU's dir pin starts low).
    next_dir: bool,
}

struct Builder {
    layout: Layout,
    index: usize,
    by_oid: [Option<usize>; 256],
    steppers: Vec<Live>,
    /// The largest "clock before a chunk" of any stepper so far.
    latest: u64,
    error: Option<TraceError>,
}

impl Builder {
    fn new(dict: &Dictionary) -> Result<Self, TraceError> {
        Ok(Self {
            layout: Layout::new(dict)?,
            index: 0,
            by_oid: [None; 256],
            steppers: Vec::new(),
            latest: 0,
            error: None,
        })
    }

    fn feed(&mut self, item: Decoded<'_>) {
        if self.error.is_some() {
            return;
        }
        let result = match item {
            Decoded::Message { format, values } => {
                let r = self.message(format, values);
                self.index += 1;
                r
            }
            Decoded::Unknown { id, .. } => Err(TraceError::UnknownMessage {
                index: self.index,
                id,
            }),
            Decoded::Invalid { offset, reason } => Err(TraceError::Stream {
                index: self.index,
                offset,
                reason,
            }),
        };
        if let Err(e) = result {
            self.error = Some(e);
        }
    }

    fn finish(self) -> Result<Trace, TraceError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        Ok(Trace {
            steppers: self.steppers.into_iter().map(|l| l.trace).collect(),
            messages: self.index,
        })
    }

    fn message(&mut self, format: &MessageFormat, values: &[Value]) -> Result<(), TraceError> {
        let id = format.id;
        let layout = self.layout;
        if let Some((qid, [o, i, c, a])) = layout.queue_step
            && id == qid
        {
            const CMD: &str = "queue_step";
            let (index, oid) = (self.index, self.oid(values, o, CMD)?);
            let interval = int::<u32>(values, i, index, CMD, oid, "interval")?;
            let count = int::<u16>(values, c, index, CMD, oid, "count")?;
            let add = int::<i16>(values, a, index, CMD, oid, "add")?;
            let latest = self.latest;
            let live = self.live(oid, index, CMD)?;
            let before = live.reference;
            queue_step(live, latest, index, interval, count, add);
            self.latest = latest.max(before);
        } else if let Some((did, [o, d])) = layout.dir
            && id == did
        {
            const CMD: &str = "set_next_step_dir";
            let (index, oid) = (self.index, self.oid(values, o, CMD)?);
            let dir = int::<u8>(values, d, index, CMD, oid, "dir")?;
            self.live(oid, index, CMD)?.next_dir = dir != 0;
        } else if let Some((rid, [o, c])) = layout.reset
            && id == rid
        {
            const CMD: &str = "reset_step_clock";
            let (index, oid) = (self.index, self.oid(values, o, CMD)?);
            let clock = int::<u32>(values, c, index, CMD, oid, "clock")?;
            let latest = self.latest;
            let live = self.live(oid, index, CMD)?;
            live.reference = extend_clock(live.reference.max(latest), clock);
            live.reference_is_step = false;
            live.trace.resets += 1;
        } else if let Some(ConfigLayout {
            required: (cid, [o, sp, dp]),
            invert_step: inv,
            step_pulse_ticks: pulse,
        }) = layout.config
            && id == cid
        {
            const CMD: &str = "config_stepper";
            let (index, oid) = (self.index, self.oid(values, o, CMD)?);
            if self.by_oid[usize::from(oid)].is_some() {
                return Err(TraceError::DuplicateStepper { index, oid });
            }
            let pin = |p: usize, name: &'static str| -> Result<String, TraceError> {
                let v = int::<i64>(values, p, index, CMD, oid, name)?;
                Ok(format.params[p]
                    .enumeration
                    .as_ref()
                    .and_then(|e| e.name_of(v))
                    .map_or_else(|| v.to_string(), str::to_owned))
            };
            let trace = StepperTrace {
                oid,
                step_pin: pin(sp, "step_pin")?,
                dir_pin: pin(dp, "dir_pin")?,
                invert_step: match inv {
                    Some(p) => int::<i64>(values, p, index, CMD, oid, "invert_step")?,
                    None => 0,
                },
                step_pulse_ticks: match pulse {
                    Some(p) => int::<u32>(values, p, index, CMD, oid, "step_pulse_ticks")?,
                    None => 0,
                },
                ..StepperTrace::default()
            };
            self.by_oid[usize::from(oid)] = Some(self.steppers.len());
            self.steppers.push(Live {
                trace,
                ..Live::default()
            });
        }
        Ok(())
    }

    fn oid(&self, values: &[Value], pos: usize, command: &'static str) -> Result<u8, TraceError> {
        int::<u8>(values, pos, self.index, command, 0, "oid")
    }

    fn live(
        &mut self,
        oid: u8,
        index: usize,
        command: &'static str,
    ) -> Result<&mut Live, TraceError> {
        self.by_oid[usize::from(oid)]
            .and_then(|i| self.steppers.get_mut(i))
            .ok_or(TraceError::NotAStepper {
                index,
                command,
                oid,
            })
    }
}

/// Reads parameter `pos` as an integer of type `T`.
fn int<T: TryFrom<i64>>(
    values: &[Value],
    pos: usize,
    index: usize,
    command: &'static str,
    oid: u8,
    param: &'static str,
) -> Result<T, TraceError> {
    let bad = |why: String| TraceError::BadParameter {
        index,
        command,
        oid,
        param,
        why,
    };
    match values.get(pos) {
        Some(Value::Int(v)) => T::try_from(*v).map_err(|_| {
            bad(format!(
                "= {v} is out of range for {}",
                std::any::type_name::<T>()
            ))
        }),
        Some(Value::Bytes(_)) => Err(bad("is a byte string, not an integer".to_owned())),
        None => Err(bad("is missing".to_owned())),
    }
}

/// Extends a 32-bit clock to the 64-bit clock nearest `near` (within ±2^31 ticks), as Klipper's
/// host does for clocks it reads back; never below 0.
fn extend_clock(near: u64, clock: u32) -> u64 {
    // Truncation to the low 32 bits is the point.
    #[allow(clippy::cast_possible_truncation)]
    let diff = clock.wrapping_sub(near as u32).cast_signed();
    match near.checked_add_signed(i64::from(diff)) {
        Some(c) => c,
        None => near + u64::from(diff.cast_unsigned()),
    }
}

/// Appends the steps of one `queue_step` (§6.4): step k at `t0 + k·interval + add·k(k−1)/2`;
/// a lone step is first moved on by whole 2^32-tick turns while more than 2^31 ticks before
/// `latest` (see the module doc).
fn queue_step(live: &mut Live, latest: u64, index: usize, interval: u32, count: u16, add: i16) {
    let trace = &mut live.trace;
    let first_step = trace.clocks.len();
    trace.queue_steps.push(QueueStep {
        index,
        interval,
        count,
        add,
        first_step,
        after_step: live.reference_is_step,
    });
    if count == 0 {
        return;
    }
    if trace.dir_runs.last().is_none_or(|r| r.dir != live.next_dir) {
        trace.dir_runs.push(DirRun {
            start: first_step,
            dir: live.next_dir,
        });
    }
    trace.clocks.reserve(usize::from(count));
    let (mut clock, mut gap, add) = (live.reference, i64::from(interval), i64::from(add));
    if count == 1 {
        const HALF: u64 = 1 << 31;
        const TURN: u64 = 1 << 32;
        let step = clock.saturating_add(u64::from(interval));
        if step.saturating_add(HALF) < latest {
            let turns = (latest - HALF - step).div_ceil(TURN);
            let extra = turns.saturating_mul(TURN);
            gap = i64::try_from(u64::from(interval).saturating_add(extra)).unwrap_or(i64::MAX);
            trace.far_steps_extended += 1;
        }
    }
    for _ in 0..count {
        // A negative gap (add driving the interval below zero) is a wrap on the MCU; the trace
        // keeps the signed value, floored at clock 0, and check_queue_steps reports it.
        clock = clock.saturating_add_signed(gap);
        trace.clocks.push(clock);
        gap += add;
    }
    live.reference = clock;
    live.reference_is_step = true;
}

/// Which steppers of two traces are the same motor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MatchBy {
    /// The same step pin name (the rule for Gantry against Klipper on the same board).
    #[default]
    StepPin,
    /// The same oid (for the same config on boards with different pin names).
    Oid,
}

/// The limits a comparison passes within.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// The largest allowed |Δt| of any step, in seconds.
    pub step_time_s: f64,
    /// The largest allowed |Δt| of each stepper's last step, in seconds.
    pub end_of_motion_s: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            step_time_s: STEP_TIME_LIMIT_S,
            end_of_motion_s: END_OF_MOTION_LIMIT_S,
        }
    }
}

/// A stepper named in a comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepperId {
    /// Its oid.
    pub oid: u8,
    /// Its step pin.
    pub step_pin: String,
    /// Its step count.
    pub steps: usize,
}

/// One step on both sides.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepPair {
    /// The step's index (0-based) in both traces.
    pub index: usize,
    /// Its clock in the expected trace.
    pub expected_clock: u64,
    /// Its clock in the actual trace.
    pub actual_clock: u64,
    /// Its time in the expected trace, in seconds.
    pub expected_s: f64,
    /// Its time in the actual trace, in seconds.
    pub actual_s: f64,
}

impl StepPair {
    /// Actual minus expected, in seconds.
    pub fn delta_s(&self) -> f64 {
        self.actual_s - self.expected_s
    }
}

/// How one matched pair of steppers compares.
#[derive(Debug, Clone, PartialEq)]
pub struct StepperComparison {
    /// The stepper in the expected trace.
    pub expected: StepperId,
    /// The stepper in the actual trace.
    pub actual: StepperId,
    /// Net signed steps of the expected stepper.
    pub expected_net: i64,
    /// Net signed steps of the actual stepper.
    pub actual_net: i64,
    /// The first step (within the common length) whose direction differs.
    pub first_dir_mismatch: Option<usize>,
    /// The largest |Δt| over the common steps, in seconds (0 when there are none).
    pub max_abs_delta_s: f64,
    /// The step with that largest |Δt|.
    pub worst: Option<StepPair>,
    /// The first step whose |Δt| exceeds the limit.
    pub first_over_limit: Option<StepPair>,
    /// How many steps exceed the limit.
    pub steps_over_limit: usize,
    /// The expected last step, in seconds.
    pub expected_end_s: Option<f64>,
    /// The actual last step, in seconds.
    pub actual_end_s: Option<f64>,
    /// The limits judged against.
    pub limits: Limits,
}

impl StepperComparison {
    /// Whether both have the same number of steps.
    pub fn counts_match(&self) -> bool {
        self.expected.steps == self.actual.steps
    }

    /// Actual minus expected end of motion, in seconds (`None` unless both stepped).
    pub fn end_delta_s(&self) -> Option<f64> {
        Some(self.actual_end_s? - self.expected_end_s?)
    }

    /// Whether the ends of motion agree within the limit (both idle counts as agreeing).
    pub fn end_ok(&self) -> bool {
        match (self.expected_end_s, self.actual_end_s) {
            (None, None) => true,
            (Some(e), Some(a)) => (a - e).abs() <= self.limits.end_of_motion_s,
            _ => false,
        }
    }

    /// Whether this stepper passes: same count, same directions, every step and the end within
    /// the limits.
    pub fn passes(&self) -> bool {
        self.counts_match()
            && self.first_dir_mismatch.is_none()
            && self.steps_over_limit == 0
            && self.end_ok()
    }
}

/// The comparison of two traces; `Display` writes the report.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// How steppers were matched.
    pub match_by: MatchBy,
    /// The limits judged against.
    pub limits: Limits,
    /// The matched steppers, in the expected trace's order.
    pub steppers: Vec<StepperComparison>,
    /// Steppers only in the expected trace.
    pub only_expected: Vec<StepperId>,
    /// Steppers only in the actual trace.
    pub only_actual: Vec<StepperId>,
}

impl Comparison {
    /// The verdict: every matched stepper passes, and no stepper present on one side only has
    /// any steps (an idle stepper configured on one side only is reported but does not fail).
    pub fn passes(&self) -> bool {
        self.steppers.iter().all(StepperComparison::passes)
            && self
                .only_expected
                .iter()
                .chain(&self.only_actual)
                .all(|s| s.steps == 0)
    }

    /// The matched steppers that fail.
    pub fn failing(&self) -> impl Iterator<Item = &StepperComparison> {
        self.steppers.iter().filter(|s| !s.passes())
    }

    /// The matched stepper whose expected side has this step pin.
    pub fn stepper(&self, expected_step_pin: &str) -> Option<&StepperComparison> {
        self.steppers
            .iter()
            .find(|s| s.expected.step_pin == expected_step_pin)
    }

    /// The largest |Δt| over all matched steppers, in seconds.
    pub fn max_abs_delta_s(&self) -> f64 {
        self.steppers
            .iter()
            .map(|s| s.max_abs_delta_s)
            .fold(0.0, f64::max)
    }
}

/// Compares `actual` against `expected` with steppers matched by step pin and the default
/// limits (25 µs per step, 1 ms end of motion). The clock frequencies (Hz) turn each side's
/// clocks into seconds.
pub fn compare(
    expected: &Trace,
    actual: &Trace,
    clock_freq_expected: f64,
    clock_freq_actual: f64,
) -> Comparison {
    compare_with(
        expected,
        actual,
        clock_freq_expected,
        clock_freq_actual,
        MatchBy::StepPin,
        Limits::default(),
    )
}

/// [`compare`] with a choice of matching and limits. Steppers that share a key are paired in
/// config order.
pub fn compare_with(
    expected: &Trace,
    actual: &Trace,
    clock_freq_expected: f64,
    clock_freq_actual: f64,
    match_by: MatchBy,
    limits: Limits,
) -> Comparison {
    let key = |s: &StepperTrace| match match_by {
        MatchBy::StepPin => s.step_pin.clone(),
        MatchBy::Oid => s.oid.to_string(),
    };
    let mut pool: HashMap<String, Vec<&StepperTrace>> = HashMap::new();
    for s in actual.steppers.iter().rev() {
        pool.entry(key(s)).or_default().push(s);
    }
    let mut comparison = Comparison {
        match_by,
        limits,
        steppers: Vec::new(),
        only_expected: Vec::new(),
        only_actual: Vec::new(),
    };
    let mut used = Vec::new();
    for e in &expected.steppers {
        match pool.get_mut(&key(e)).and_then(Vec::pop) {
            Some(a) => {
                used.push(std::ptr::from_ref(a));
                comparison.steppers.push(compare_stepper(
                    e,
                    a,
                    1.0 / clock_freq_expected,
                    1.0 / clock_freq_actual,
                    limits,
                ));
            }
            None => comparison.only_expected.push(e.id()),
        }
    }
    comparison.only_actual = actual
        .steppers
        .iter()
        .filter(|a| !used.contains(&std::ptr::from_ref(*a)))
        .map(StepperTrace::id)
        .collect();
    comparison
}

// Clocks are below 2^53 for any real print (2^53 ticks at 1 GHz is 104 days).
#[allow(clippy::cast_precision_loss)]
fn seconds(clock: u64, period: f64) -> f64 {
    clock as f64 * period
}

fn compare_stepper(
    e: &StepperTrace,
    a: &StepperTrace,
    period_e: f64,
    period_a: f64,
    limits: Limits,
) -> StepperComparison {
    let pair = |index: usize| StepPair {
        index,
        expected_clock: e.clocks[index],
        actual_clock: a.clocks[index],
        expected_s: seconds(e.clocks[index], period_e),
        actual_s: seconds(a.clocks[index], period_a),
    };
    let mut max = 0.0_f64;
    let mut worst = None;
    let mut first_over = None;
    let mut over = 0;
    for (i, (&ce, &ca)) in e.clocks.iter().zip(&a.clocks).enumerate() {
        let d = (seconds(ca, period_a) - seconds(ce, period_e)).abs();
        if d > max || worst.is_none() {
            max = max.max(d);
            worst = Some(i);
        }
        if d > limits.step_time_s {
            over += 1;
            first_over.get_or_insert(i);
        }
    }
    let common = e.clocks.len().min(a.clocks.len());
    StepperComparison {
        expected: e.id(),
        actual: a.id(),
        expected_net: e.net_steps(),
        actual_net: a.net_steps(),
        first_dir_mismatch: first_dir_mismatch(&e.dir_runs, &a.dir_runs, common),
        max_abs_delta_s: max,
        worst: worst.map(pair),
        first_over_limit: first_over.map(pair),
        steps_over_limit: over,
        expected_end_s: e.end_clock().map(|c| seconds(c, period_e)),
        actual_end_s: a.end_clock().map(|c| seconds(c, period_a)),
        limits,
    }
}

/// The first step below `n` whose direction differs between two run lists.
fn first_dir_mismatch(a: &[DirRun], b: &[DirRun], n: usize) -> Option<usize> {
    let (mut ia, mut ib, mut pos) = (0, 0, 0);
    while pos < n {
        let (ra, rb) = (a.get(ia)?, b.get(ib)?);
        if ra.dir != rb.dir {
            return Some(pos);
        }
        let next_a = a.get(ia + 1).map_or(usize::MAX, |r| r.start);
        let next_b = b.get(ib + 1).map_or(usize::MAX, |r| r.start);
        pos = next_a.min(next_b);
        if next_a == pos {
            ia += 1;
        }
        if next_b == pos {
            ib += 1;
        }
    }
    None
}

fn write_time(f: &mut fmt::Formatter<'_>, clock: u64, s: f64) -> fmt::Result {
    write!(f, "{s:.9} s (clock {clock})")
}

fn sign(n: i64) -> String {
    if n > 0 {
        format!("+{n}")
    } else {
        n.to_string()
    }
}

impl fmt::Display for StepperComparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (e, a) = (&self.expected, &self.actual);
        write!(f, "stepper {} (oid {})", e.step_pin, e.oid)?;
        if a.step_pin != e.step_pin || a.oid != e.oid {
            write!(f, " vs {} (oid {})", a.step_pin, a.oid)?;
        }
        let verdict = if self.passes() { "ok" } else { "FAIL" };
        writeln!(f, ": {verdict}")?;
        if self.counts_match() {
            write!(f, "    steps: {}", e.steps)?;
        } else {
            write!(
                f,
                "    steps: expected {}, actual {} (DIFFER)",
                e.steps, a.steps
            )?;
        }
        write!(
            f,
            "; net: expected {}, actual {}",
            sign(self.expected_net),
            sign(self.actual_net)
        )?;
        match self.first_dir_mismatch {
            Some(i) => writeln!(f, "; directions DIFFER from step {i}")?,
            None => writeln!(f, "; directions identical")?,
        }
        if let Some(w) = &self.worst {
            writeln!(
                f,
                "    max |dt|: {:.3} us at step {}",
                self.max_abs_delta_s * 1e6,
                w.index
            )?;
        }
        if let Some(b) = &self.first_over_limit {
            write!(
                f,
                "    first step over {:.3} us: step {}: expected ",
                self.limits.step_time_s * 1e6,
                b.index
            )?;
            write_time(f, b.expected_clock, b.expected_s)?;
            f.write_str(", actual ")?;
            write_time(f, b.actual_clock, b.actual_s)?;
            writeln!(
                f,
                " (dt {:+.3} us); {} steps over",
                b.delta_s() * 1e6,
                self.steps_over_limit
            )?;
        }
        match (self.expected_end_s, self.actual_end_s) {
            (Some(es), Some(as_)) => writeln!(
                f,
                "    end of motion: expected {es:.9} s, actual {as_:.9} s (dt {:+.3} us{})",
                (as_ - es) * 1e6,
                if self.end_ok() { "" } else { ", over limit" }
            ),
            (None, None) => writeln!(f, "    end of motion: no steps on either side"),
            (es, as_) => writeln!(
                f,
                "    end of motion: expected {}, actual {}",
                es.map_or_else(|| "none".to_owned(), |s| format!("{s:.9} s")),
                as_.map_or_else(|| "none".to_owned(), |s| format!("{s:.9} s"))
            ),
        }
    }
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let failing = self.failing().count();
        let verdict = if self.passes() { "PASS" } else { "FAIL" };
        writeln!(
            f,
            "step trace comparison: {verdict}: {} steppers matched by {}, {failing} failing \
             (limits: {:.3} us per step, {:.3} ms end of motion)",
            self.steppers.len(),
            match self.match_by {
                MatchBy::StepPin => "step pin",
                MatchBy::Oid => "oid",
            },
            self.limits.step_time_s * 1e6,
            self.limits.end_of_motion_s * 1e3,
        )?;
        for s in &self.steppers {
            write!(f, "{s}")?;
        }
        for (side, list) in [
            ("expected", &self.only_expected),
            ("actual", &self.only_actual),
        ] {
            for s in list {
                writeln!(
                    f,
                    "stepper {} (oid {}): only in {side}, {} steps{}",
                    s.step_pin,
                    s.oid,
                    s.steps,
                    if s.steps == 0 { "" } else { ": FAIL" }
                )?;
            }
        }
        Ok(())
    }
}

/// What is wrong with one `queue_step`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssueKind {
    /// `count=0`: the MCU shuts down ("Invalid count parameter").
    ZeroCount,
    /// The interval to step `step` (1-based within the command) is negative or at least 2^31
    /// ticks: the MCU's 32-bit timer arithmetic wraps, and the step fires at once or the MCU
    /// shuts down (Klipper's host refuses such commands too). A lone step (`count=1`) is exempt:
    /// that is how Klipper sends a step after a long idle, and it works because the MCU gets it
    /// shortly before it is due.
    Wrap {
        /// The step within the command, 1-based.
        step: u16,
        /// The interval before it, in ticks (signed, as the formula gives it).
        gap: i64,
    },
    /// Step `step` comes sooner after the previous step than the MCU can step: its full-step
    /// path holds the pin high `step_pulse_ticks` and low as long again before the next step,
    /// and pushes an earlier step later. Measured against at least 1 tick (two steps at one
    /// clock are impossible on any MCU).
    TooClose {
        /// The step within the command, 1-based.
        step: u16,
        /// The interval before it, in ticks.
        gap: i64,
        /// The smallest interval the MCU can do, in ticks.
        min_gap: u64,
    },
}

/// One problem found by [`check_queue_steps`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueStepIssue {
    /// The stepper's oid.
    pub oid: u8,
    /// Its step pin.
    pub step_pin: String,
    /// The `queue_step` message's index in the stream.
    pub index: usize,
    /// The command's parameters.
    pub interval: u32,
    /// The command's count.
    pub count: u16,
    /// The command's add.
    pub add: i16,
    /// What is wrong.
    pub kind: IssueKind,
}

impl fmt::Display for QueueStepIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "message {}: queue_step oid={} ({}) interval={} count={} add={}: ",
            self.index, self.oid, self.step_pin, self.interval, self.count, self.add
        )?;
        match self.kind {
            IssueKind::ZeroCount => f.write_str("count=0 (the MCU shuts down)"),
            IssueKind::Wrap { step, gap } => write!(
                f,
                "step {step} comes {gap} ticks after the previous one (wraps the MCU's 32-bit timer)"
            ),
            IssueKind::TooClose { step, gap, min_gap } => write!(
                f,
                "step {step} comes {gap} ticks after the previous one (the MCU needs {min_gap})"
            ),
        }
    }
}

/// Checks every `queue_step` of every stepper for what the MCU would refuse or could not step
/// as written: `count=0`, an interval that wraps the 32-bit timer (negative or ≥ 2^31 ticks,
/// including intervals that `add` drives there; a lone step's interval may be anything), and
/// steps closer together than 2·`step_pulse_ticks` (at least 1 tick). At most one issue of each
/// kind per command, stepper by stepper, in stream order.
pub fn check_queue_steps(trace: &Trace) -> Vec<QueueStepIssue> {
    const WRAP: i64 = 1 << 31;
    let mut issues = Vec::new();
    for s in &trace.steppers {
        let min_gap = (2 * u64::from(s.step_pulse_ticks)).max(1);
        let min_gap_i = i64::try_from(min_gap).unwrap_or(i64::MAX);
        for q in &s.queue_steps {
            let mut push = |kind| {
                issues.push(QueueStepIssue {
                    oid: s.oid,
                    step_pin: s.step_pin.clone(),
                    index: q.index,
                    interval: q.interval,
                    count: q.count,
                    add: q.add,
                    kind,
                });
            };
            if q.count == 0 {
                push(IssueKind::ZeroCount);
                continue;
            }
            let (mut wrap, mut close) = (None, None);
            let mut gap = i64::from(q.interval);
            for step in 1..=q.count {
                if wrap.is_none() && q.count > 1 && !(0..WRAP).contains(&gap) {
                    wrap = Some(IssueKind::Wrap { step, gap });
                } else if close.is_none() && (step > 1 || q.after_step) && gap < min_gap_i {
                    close = Some(IssueKind::TooClose { step, gap, min_gap });
                }
                if wrap.is_some() && close.is_some() {
                    break;
                }
                gap += i64::from(q.add);
            }
            wrap.into_iter().chain(close).for_each(&mut push);
        }
    }
    issues
}

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_proto::block;

    const DICT: &str = r#"{"config": {"CLOCK_FREQ": 16000000},
        "enumerations": {"pin": {"PA0": [0, 8], "PB0": [8, 8]}},
        "commands": {"config_stepper oid=%c step_pin=%c dir_pin=%c invert_step=%c step_pulse_ticks=%u": 10,
                     "queue_step oid=%c interval=%u count=%hu add=%hi": 11,
                     "set_next_step_dir oid=%c dir=%c": 12,
                     "reset_step_clock oid=%c clock=%u": 13,
                     "get_clock": 14}}"#;

    fn dict() -> Dictionary {
        Dictionary::from_json(DICT).expect("valid dictionary")
    }

    /// Encodes `(command, values)` messages, a few per block.
    fn stream(dict: &Dictionary, messages: &[(&str, &[i64])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (seq, chunk) in messages.chunks(3).enumerate() {
            let mut payload = Vec::new();
            for (name, values) in chunk {
                let values: Vec<Value> = values.iter().map(|&v| Value::Int(v)).collect();
                dict.command(name)
                    .expect("command in dictionary")
                    .encode(&values, &mut payload)
                    .expect("values fit");
            }
            let seq = u8::try_from(seq % 16).expect("small");
            block::encode(seq, &payload, &mut out).expect("fits a block");
        }
        out
    }

    fn trace(messages: &[(&str, &[i64])]) -> Result<Trace, TraceError> {
        let d = dict();
        Trace::from_stream(&d, &stream(&d, messages))
    }

    const CONFIG: (&str, &[i64]) = ("config_stepper", &[2, 0, 9, 0, 32]);

    #[test]
    fn worked_example_of_section_6_4() {
        let t = trace(&[
            CONFIG,
            ("get_clock", &[]),
            ("reset_step_clock", &[2, 1000]),
            ("set_next_step_dir", &[2, 1]),
            ("queue_step", &[2, 100, 4, 10]),
            ("queue_step", &[2, 200, 2, 0]),
        ])
        .expect("traces");
        assert_eq!(t.messages, 6);
        let s = t.stepper(2).expect("stepper 2");
        assert_eq!(s.step_pin, "PA0");
        assert_eq!(s.dir_pin, "PB1");
        assert_eq!(s.step_pulse_ticks, 32);
        assert_eq!(s.clocks, [1100, 1210, 1330, 1460, 1660, 1860]);
        assert_eq!(
            s.dir_runs,
            [DirRun {
                start: 0,
                dir: true
            }]
        );
        assert_eq!(s.net_steps(), 6);
        assert_eq!(s.resets, 1);
        assert_eq!(s.queue_steps[1].first_step, 4);
        assert!(!s.queue_steps[0].after_step && s.queue_steps[1].after_step);
        assert!(check_queue_steps(&t).is_empty());
    }

    #[test]
    fn directions_and_clock_accumulation() {
        // Starts from clock 0 with the dir pin low; intervals accumulate past 2^32.
        let t = trace(&[
            CONFIG,
            ("queue_step", &[2, 2_000_000_000, 1, 0]),
            ("queue_step", &[2, 2_000_000_000, 2, 0]),
            ("set_next_step_dir", &[2, 1]),
            ("set_next_step_dir", &[2, 0]),
            ("queue_step", &[2, 100, 2, -10]),
            ("set_next_step_dir", &[2, 1]),
            ("queue_step", &[2, 50, 3, 0]),
        ])
        .expect("traces");
        let s = t.stepper(2).expect("stepper 2");
        assert_eq!(
            s.clocks,
            [
                2_000_000_000,
                4_000_000_000,
                6_000_000_000,
                6_000_000_100,
                6_000_000_190,
                6_000_000_240,
                6_000_000_290,
                6_000_000_340
            ]
        );
        assert_eq!(
            s.dir_runs,
            [
                DirRun {
                    start: 0,
                    dir: false
                },
                DirRun {
                    start: 5,
                    dir: true
                }
            ]
        );
        assert_eq!(s.net_steps(), -2);
        assert_eq!(s.dir_at(4), Some(false));
        assert_eq!(s.dir_at(5), Some(true));
        assert_eq!(s.dir_at(8), None);
        assert_eq!(s.direction_changes(), 1);
    }

    #[test]
    fn lone_steps_after_long_gaps_are_extended() {
        // Stepper 2 runs to clock 5e9; stepper 5 then takes its first step at 5_000_000_100,
        // which the wire carries as that clock mod 2^32 (from reference 0).
        let t = trace(&[
            CONFIG,
            ("config_stepper", &[5, 1, 2, 0, 32]),
            ("queue_step", &[2, 2_000_000_000, 1, 0]),
            ("queue_step", &[2, 2_000_000_000, 1, 0]),
            ("queue_step", &[2, 1_000_000_000, 1, 0]),
            ("queue_step", &[2, 100, 1, 0]),
            ("queue_step", &[5, 705_032_804, 1, 0]),
            ("queue_step", &[5, 100, 2, 0]),
            // A reset near clock 0 mod 2^32 is taken near the stream's clock too.
            ("reset_step_clock", &[5, 705_033_100]),
            ("queue_step", &[5, 100, 1, 0]),
        ])
        .expect("traces");
        let x = t.stepper(2).expect("stepper 2");
        assert_eq!(x.end_clock(), Some(5_000_000_100));
        assert_eq!(x.far_steps_extended, 0);
        let y = t.stepper(5).expect("stepper 5");
        assert_eq!(
            y.clocks,
            [5_000_000_100, 5_000_000_200, 5_000_000_300, 5_000_000_496]
        );
        assert_eq!(y.far_steps_extended, 1);
        assert!(check_queue_steps(&t).is_empty());
    }

    #[test]
    fn reset_clocks_extend_near_the_last_step() {
        assert_eq!(extend_clock(0, 1000), 1000);
        assert_eq!(extend_clock(5_000_000_000, 1000), (1 << 32) + 1000);
        assert_eq!(
            extend_clock(5_000_000_000, 700_000_000),
            5_000_000_000 - 5_032_704
        );
        // Never below zero: a clock "just before" 0 is read forward.
        assert_eq!(extend_clock(10, u32::MAX), u64::from(u32::MAX));
    }

    #[test]
    fn malformed_streams_are_errors() {
        let d = dict();
        let err = trace(&[("queue_step", &[2, 100, 1, 0])]).expect_err("no config");
        assert_eq!(
            err,
            TraceError::NotAStepper {
                index: 0,
                command: "queue_step",
                oid: 2
            }
        );
        assert_eq!(
            err.to_string(),
            "message 0: queue_step for oid 2, which is not a configured stepper"
        );
        let err = trace(&[CONFIG, ("get_clock", &[]), CONFIG]).expect_err("twice");
        assert_eq!(err, TraceError::DuplicateStepper { index: 2, oid: 2 });

        let mut bytes = stream(&d, &[CONFIG, ("queue_step", &[2, 100, 1, 0])]);
        bytes.truncate(bytes.len() - 2);
        let err = Trace::from_stream(&d, &bytes).expect_err("truncated");
        assert!(
            matches!(
                err,
                TraceError::Stream {
                    index: 0,
                    offset: 0,
                    ..
                }
            ),
            "{err}"
        );

        let mut bytes = stream(&d, &[CONFIG]);
        block::encode(1, &[0x30, 1, 2], &mut bytes).expect("fits");
        let err = Trace::from_stream(&d, &bytes).expect_err("unknown id");
        assert_eq!(err, TraceError::UnknownMessage { index: 1, id: 48 });

        // A firmware declaring count as %u can carry a count the MCU's u16 cannot.
        let wide = Dictionary::from_json(
            r#"{"commands": {"config_stepper oid=%c step_pin=%c dir_pin=%c": 10,
                             "queue_step oid=%c interval=%u count=%u add=%hi": 11}}"#,
        )
        .expect("valid");
        let bytes = stream(
            &wide,
            &[
                ("config_stepper", &[3, 1, 2]),
                ("queue_step", &[3, 100, 70_000, 0]),
            ],
        );
        let err = Trace::from_stream(&wide, &bytes).expect_err("count too large");
        assert_eq!(
            err.to_string(),
            "message 1: queue_step oid 3: parameter 'count' = 70000 is out of range for u16"
        );

        let bad = Dictionary::from_json(
            r#"{"commands": {"queue_step oid=%c interval=%u count=%hu": 11}}"#,
        )
        .expect("valid");
        assert_eq!(
            Trace::from_stream(&bad, &[]).expect_err("no add"),
            TraceError::Dictionary {
                command: "queue_step",
                param: "add"
            }
        );
        // An empty stream is an empty trace.
        assert_eq!(Trace::from_stream(&d, &[]), Ok(Trace::default()));
    }

    #[test]
    fn queue_step_checks() {
        let t = trace(&[
            CONFIG,
            ("queue_step", &[2, 100, 0, 0]),
            ("queue_step", &[2, 3_000_000_000, 2, 0]),
            ("queue_step", &[2, 100, 12, -10]),
            ("queue_step", &[2, 40, 2, 0]),
            ("queue_step", &[2, 1000, 1, 0]),
            // A lone step after a long idle is Klipper's way; fine.
            ("queue_step", &[2, 4_000_000_000, 1, 0]),
        ])
        .expect("traces");
        let issues = check_queue_steps(&t);
        let kinds: Vec<_> = issues.iter().map(|i| (i.index, i.kind)).collect();
        assert_eq!(
            kinds,
            [
                (1, IssueKind::ZeroCount),
                (
                    2,
                    IssueKind::Wrap {
                        step: 1,
                        gap: 3_000_000_000
                    }
                ),
                (3, IssueKind::Wrap { step: 12, gap: -10 }),
                (
                    3,
                    IssueKind::TooClose {
                        step: 5,
                        gap: 60,
                        min_gap: 64
                    }
                ),
                (
                    4,
                    IssueKind::TooClose {
                        step: 1,
                        gap: 40,
                        min_gap: 64
                    }
                ),
            ]
        );
        assert_eq!(
            issues[0].to_string(),
            "message 1: queue_step oid=2 (PA0) interval=100 count=0 add=0: count=0 (the MCU shuts down)"
        );
        assert_eq!(
            issues[4].to_string(),
            "message 4: queue_step oid=2 (PA0) interval=40 count=2 add=0: step 1 comes 40 ticks \
             after the previous one (the MCU needs 64)"
        );
    }

    fn simple(oid: u8, pin: &str, clocks: Vec<u64>, runs: Vec<DirRun>) -> StepperTrace {
        StepperTrace {
            oid,
            step_pin: pin.to_owned(),
            clocks,
            dir_runs: runs,
            ..StepperTrace::default()
        }
    }

    #[test]
    fn comparison_and_report() {
        let fwd = |start| DirRun { start, dir: true };
        let back = |start| DirRun { start, dir: false };
        let expected = Trace {
            steppers: vec![
                simple(2, "PF0", vec![16_000, 32_000, 48_000], vec![fwd(0)]),
                simple(5, "PF6", vec![16_000, 32_000], vec![fwd(0), back(1)]),
                simple(9, "PA4", vec![], vec![]),
                simple(8, "PL3", vec![160], vec![fwd(0)]),
            ],
            messages: 0,
        };
        // 180 MHz: PF0 matches to 0.1 µs, PF6 is 40 µs late on step 1 and turns later.
        let actual = Trace {
            steppers: vec![
                simple(2, "PF0", vec![180_018, 360_000, 540_000], vec![fwd(0)]),
                simple(5, "PF6", vec![180_000, 367_200], vec![fwd(0)]),
                simple(11, "PB1", vec![1], vec![fwd(0)]),
            ],
            messages: 0,
        };
        let c = compare(&expected, &actual, 16e6, 180e6);
        assert!(!c.passes());
        let x = c.stepper("PF0").expect("matched");
        assert!(x.passes(), "{x}");
        assert!((x.max_abs_delta_s - 0.1e-6).abs() < 1e-12);
        let y = c.stepper("PF6").expect("matched");
        assert!(!y.passes());
        assert_eq!(y.first_dir_mismatch, Some(1));
        assert_eq!(y.steps_over_limit, 1);
        assert_eq!(
            c.only_expected,
            [
                StepperId {
                    oid: 9,
                    step_pin: "PA4".into(),
                    steps: 0
                },
                StepperId {
                    oid: 8,
                    step_pin: "PL3".into(),
                    steps: 1
                }
            ]
        );
        assert_eq!(c.only_actual.len(), 1);
        let report = c.to_string();
        let expected_report = "\
step trace comparison: FAIL: 2 steppers matched by step pin, 1 failing (limits: 25.000 us per step, 1.000 ms end of motion)
stepper PF0 (oid 2): ok
    steps: 3; net: expected +3, actual +3; directions identical
    max |dt|: 0.100 us at step 0
    end of motion: expected 0.003000000 s, actual 0.003000000 s (dt +0.000 us)
stepper PF6 (oid 5): FAIL
    steps: 2; net: expected 0, actual +2; directions DIFFER from step 1
    max |dt|: 40.000 us at step 1
    first step over 25.000 us: step 1: expected 0.002000000 s (clock 32000), actual 0.002040000 s (clock 367200) (dt +40.000 us); 1 steps over
    end of motion: expected 0.002000000 s, actual 0.002040000 s (dt +40.000 us)
stepper PA4 (oid 9): only in expected, 0 steps
stepper PL3 (oid 8): only in expected, 1 steps: FAIL
stepper PB1 (oid 11): only in actual, 1 steps: FAIL
";
        assert_eq!(report, expected_report);

        // By oid, with a count mismatch and an end of motion over 1 ms.
        let late = Trace {
            steppers: vec![simple(
                2,
                "X",
                vec![16_000, 32_000, 48_000, 70_000],
                vec![fwd(0)],
            )],
            messages: 0,
        };
        let c = compare_with(
            &expected,
            &late,
            16e6,
            16e6,
            MatchBy::Oid,
            Limits::default(),
        );
        let x = &c.steppers[0];
        assert!(!x.counts_match() && !x.end_ok() && x.first_over_limit.is_none());
        assert!(
            x.to_string().starts_with(
                "stepper PF0 (oid 2) vs X (oid 2): FAIL\n    steps: expected 3, actual 4 (DIFFER)"
            ),
            "{x}"
        );
        assert!(
            x.to_string().contains("(dt +1375.000 us, over limit)"),
            "{x}"
        );
    }

    #[test]
    fn direction_mismatch_search() {
        let r = |start, dir| DirRun { start, dir };
        let a = [r(0, true), r(5, false), r(9, true)];
        assert_eq!(first_dir_mismatch(&a, &a, 12), None);
        let b = [r(0, true), r(6, false), r(9, true)];
        assert_eq!(first_dir_mismatch(&a, &b, 12), Some(5));
        assert_eq!(first_dir_mismatch(&a, &b, 5), None);
        let c = [r(0, true), r(5, false), r(9, true), r(11, false)];
        assert_eq!(first_dir_mismatch(&a, &c, 12), Some(11));
        assert_eq!(first_dir_mismatch(&[], &[], 0), None);
    }
}
