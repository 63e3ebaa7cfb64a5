//! The toolhead and motion queuing: print-time bookkeeping, look-ahead flushing, step generation
//! and the per-MCU merge of step messages (Klipper's toolhead.py, motion_queuing.py and
//! steppersync.c).
//!
//! The toolhead turns moves into trapq segments back to back in print time; step generation runs
//! behind it in batches and each stepper's messages are merged per MCU in `req_clock` order with
//! the move-queue budget Klipper's steppersync keeps. The estimate of the MCU's current print
//! time is an input ([`Toolhead::set_est_print_time`]): 0 in batch mode, the clock-sync estimate
//! on a live printer. Nothing here reads a clock.

use std::collections::VecDeque;

use crate::batch_reader::BatchReader;
use crate::extruder::append_extrusion;
use crate::itersolve::StepperSolver;
use crate::lookahead::{AXES, LookAheadQueue, Move, MoveLimits};
use crate::stepcompress::{StepCompress, StepCompressError};
use crate::trapq::{Coord, NEVER_TIME, TrapQ};

/// Print time the first moves are placed ahead of the MCU's estimated time, s.
pub const BUFFER_TIME_START: f64 = 0.250;
/// Look-ahead budget after a full flush, and the input-throttling horizon, s.
pub const BUFFER_TIME_HIGH: f64 = 1.0;
/// Step generation never restarts closer than this to the MCU's estimated time, s.
pub const MIN_KIN_TIME: f64 = 0.100;
/// Step compression look-ahead kept between generated and flushed steps, s.
pub const STEPCOMPRESS_FLUSH_TIME: f64 = 0.050;
/// Window of the step+dir+step filter; the smallest kinematic flush delay, s.
pub const SDS_CHECK_TIME: f64 = 0.001;
/// Drip moves (homing) are generated in segments of this length, s.
pub const DRIP_SEGMENT_TIME: f64 = 0.050;
/// Trapq history kept for position queries, s.
pub const MOVE_HISTORY_EXPIRE: f64 = 30.0;
const BGFLUSH_LOW_TIME: f64 = 0.200;
const BGFLUSH_HIGH_TIME: f64 = 0.400;
const BGFLUSH_SG_LOW_TIME: f64 = 0.450;
const BGFLUSH_SG_HIGH_TIME: f64 = 0.700;
const BGFLUSH_EXTRA_TIME: f64 = 0.250;
/// What a live host keeps ahead of the MCU beyond klippy's times, s: the first move starts
/// this much later, steps are generated this much further ahead and G-code is read this much
/// further ahead ([`LIVE_BUFFER_TIME_HIGH`]). klippy runs on a quiet board computer; a desktop
/// under load can hold a thread or the kernel's serial path for longer than klippy's margins
/// (measured: both cores under `stress` plus a compiler, the pseudo-terminal to the simulated
/// MCU stalled ~0.6 s and a step command 0.45 s ahead arrived late — "Timer too close"). Batch
/// output is unaffected (it has no MCU to keep ahead of).
pub const LIVE_EXTRA_LEAD_S: f64 = 0.5;
/// The input-throttling horizon of a live host (klippy's `BUFFER_TIME_HIGH` plus
/// [`LIVE_EXTRA_LEAD_S`]): steps generated up to 1.2 s ahead need moves queued beyond that.
pub const LIVE_BUFFER_TIME_HIGH: f64 = BUFFER_TIME_HIGH + LIVE_EXTRA_LEAD_S;
/// The least a live host keeps generated steps ahead of the MCU while stepping, s: a stall of
/// the host or its serial path longer than this makes the MCU stop ("Timer too close").
pub const LIVE_MIN_STEP_LEAD_S: f64 = BGFLUSH_SG_LOW_TIME + LIVE_EXTRA_LEAD_S;
/// Maximum step compression error, s (Klipper's MAX_STEPCOMPRESS_ERROR).
pub const MAX_STEPCOMPRESS_ERROR: f64 = 0.000_025;

/// The print time at which `m`, starting at `start`, ends: `start + accel_t + cruise_t +
/// decel_t` summed left to right, as klippy accumulates its `next_move_time`. The grouping
/// matters: `start + m.total_t()` rounds differently, and the trapq times that result steer
/// every stepper's steps (most visibly the extruder's near pressure-advance reversals, where a
/// last-bit difference in a segment's start moves a step by tens of microseconds).
#[inline]
fn move_end_time(start: f64, m: &Move) -> f64 {
    start + m.accel_t + m.cruise_t + m.decel_t
}

/// Which trapq a stepper follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrapqId {
    /// The toolhead's (X/Y/Z).
    Toolhead,
    /// An extruder's (index into the extruders).
    Extruder(usize),
}

/// A stepper as motion sees it: solver, compressor and where its messages go.
#[derive(Debug)]
pub struct MotionStepper {
    /// Config section name (`stepper_x`, `extruder`).
    pub name: String,
    /// Index of its MCU.
    pub mcu: usize,
    /// Its oid on that MCU.
    pub oid: u8,
    /// Step time generation.
    pub solver: StepperSolver,
    /// Step compression.
    pub sc: StepCompress,
    /// The trapq it follows (None: not moving with anything).
    pub trapq: Option<TrapqId>,
    /// Offset between commanded position and the MCU step count, mm.
    pub mcu_position_offset: f64,
    /// Waiting for its first movement to switch its enable pin on.
    pub enable_pending: bool,
    /// The largest (min_clock, req_clock) of its messages so far: a live host sends in
    /// scheduling order, and a command that must follow them (the `reset_step_clock` after
    /// homing) takes these clocks, as klippy's per-stepper command queue keeps it behind them.
    pub last_clocks: (u64, u64),
}

/// A step count from a position in steps, rounded as klippy's `get_mcu_position` rounds
/// (half away from zero, through `int`).
pub(crate) fn klippy_round_steps(steps: f64) -> i64 {
    if steps >= 0.0 {
        (steps + 0.5) as i64
    } else {
        (steps - 0.5) as i64
    }
}

impl MotionStepper {
    /// The MCU step count matching the commanded position (Klipper's `get_mcu_position`).
    pub fn mcu_position(&self) -> i64 {
        let d = self.solver.commanded_pos() + self.mcu_position_offset;
        klippy_round_steps(d / self.solver.step_dist())
    }

    /// Keeps the MCU step count across a change of commanded position.
    pub fn set_mcu_position(&mut self, mcu_pos: i64) {
        let d = mcu_pos as f64 * self.solver.step_dist();
        self.mcu_position_offset = d - self.solver.commanded_pos();
    }
}

/// An extruder's motion state.
#[derive(Debug)]
pub struct ExtruderMotion {
    /// Config section name.
    pub name: String,
    /// Its trapq (x = filament position).
    pub trapq: TrapQ,
    /// max_extrude_ratio (cross section / filament area).
    pub max_extrude_ratio: f64,
    /// nozzle_diameter, mm.
    pub nozzle_diameter: f64,
    /// filament_area, mm².
    pub filament_area: f64,
    /// max_extrude_only_velocity, mm/s.
    pub max_e_velocity: f64,
    /// max_extrude_only_accel, mm/s².
    pub max_e_accel: f64,
    /// max_extrude_only_distance, mm.
    pub max_e_dist: f64,
    /// instantaneous_corner_velocity, mm/s.
    pub instant_corner_v: f64,
    /// Filament position at the end of the last queued extrusion, mm.
    pub last_position: f64,
}

/// Kinematic limits applied to each move.
#[derive(Clone, Debug)]
pub enum KinLimits {
    /// Cartesian / CoreXY: Z speed and acceleration limits, axis ranges.
    Cartesian {
        /// max_z_velocity, mm/s.
        max_z_velocity: f64,
        /// max_z_accel, mm/s².
        max_z_accel: f64,
    },
    /// Linear delta.
    Delta(DeltaLimits),
    /// No kinematics (extruder-only printers).
    None,
}

/// A linear delta's move limits (Klipper's delta.py `check_move`), with its state.
#[derive(Clone, Debug)]
pub struct DeltaLimits {
    /// max_z_velocity, mm/s.
    pub max_z_velocity: f64,
    /// max_z_accel, mm/s².
    pub max_z_accel: f64,
    /// max_velocity, mm/s.
    pub max_velocity: f64,
    /// max_accel, mm/s².
    pub max_accel: f64,
    /// delta_radius, mm.
    pub radius: f64,
    /// Shortest arm, mm.
    pub min_arm_length: f64,
    /// Printable radius², mm².
    pub max_xy2: f64,
    /// Radius² beyond which moves are slowed to half, mm².
    pub slow_xy2: f64,
    /// Radius² beyond which moves are slowed to a quarter, mm².
    pub very_slow_xy2: f64,
    /// Height above which the reachable radius tapers, mm.
    pub limit_z: f64,
    /// minimum_z_position, mm.
    pub min_z: f64,
    /// Highest reachable Z, mm.
    pub max_z: f64,
    /// The position after homing (all carriages at their endstops), mm.
    pub home_position: [f64; 3],
    /// Radius² within which XY moves need no checks (state), mm².
    pub limit_xy2: f64,
    /// Whether the towers still need homing (state).
    pub need_home: bool,
}

/// Why a move was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MoveError {
    /// Outside the axis limits (Klipper's text).
    #[error("{0}")]
    OutOfRange(String),
    /// The extruder refused it (Klipper's text).
    #[error("{0}")]
    Extruder(String),
    /// Step generation failed.
    #[error("Internal error in stepcompress: {0}")]
    StepCompress(#[from] StepCompressError),
    /// A live printer halted: an MCU shut down or was lost (Klipper's message).
    #[error("{0}")]
    Halted(String),
}

/// The toolhead's queuing state (Klipper's `special_queuing_state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueState {
    /// Idle: the next flush resynchronises print time.
    NeedPrime,
    /// Moves arriving after idle.
    Priming,
    /// Streaming.
    Main,
}

/// Something to do at a move's end time once the look-ahead commits it.
#[derive(Clone, Debug, PartialEq)]
pub enum TimedAction {
    /// Change the pressure advance of extruder `extruder` at that time.
    PressureAdvance {
        /// Extruder index.
        extruder: usize,
        /// New pressure_advance, s.
        pressure_advance: f64,
        /// Smooth time, s.
        smooth_time: f64,
    },
    /// Nothing but the synchronisation itself (Klipper's heaters register such a callback: with
    /// an idle look-ahead it flushes and resynchronises print time).
    Nothing,
    /// A PWM request for `pwm_queues[queue]`.
    PwmRequest {
        /// Index into the toolhead's PWM queues.
        queue: usize,
        /// Requested value 0..1.
        value: f64,
    },
}

/// One message for an MCU with its scheduling clocks.
#[derive(Clone, Debug, PartialEq)]
pub struct McuMessage {
    /// MCU clock from which the MCU should have it.
    pub req_clock: u64,
    /// Earliest clock the message may be transmitted (move-queue budget).
    pub min_clock: u64,
    /// The command.
    pub command: McuCommand,
}

/// A command for an MCU.
#[derive(Clone, Debug, PartialEq)]
pub enum McuCommand {
    /// A stepper's step command.
    Step {
        /// The stepper's oid.
        oid: u8,
        /// The command.
        message: crate::stepcompress::StepCommand,
    },
    /// Any other command, as Klipper's text form (`queue_digital_out oid=3 clock=… on_ticks=1`).
    Text(String),
}

/// Per-MCU output: time conversion and the move-queue budget.
#[derive(Debug)]
pub struct McuQueue {
    /// CLOCK_FREQ, Hz (durations: [`McuQueue::seconds_to_clock`]).
    pub freq: f64,
    /// Print time of clock 0 (batch and the primary MCU: 0).
    pub time_offset: f64,
    /// Ticks per second of print time (CLOCK_FREQ but for a live secondary MCU, whose
    /// conversion the host re-aims: see [`McuQueue::set_clock_conversion`]).
    pub clock_freq: f64,
    /// Move-queue slots for step commands: the clocks at which each slot frees up, ascending.
    /// (Klipper keeps them in a heap; only the smallest is ever read, so any structure holding
    /// the same values gives the same output. Commands take slots in nearly ascending clock
    /// order, so a sorted ring mostly just pops the front and pushes the back.)
    move_clocks: VecDeque<u64>,
    /// Messages ready for transmission, in order.
    pub out: Vec<McuMessage>,
}

impl McuQueue {
    /// A queue for an MCU at `freq` Hz with `move_count` step slots.
    pub fn new(freq: f64, move_count: usize) -> Self {
        Self {
            freq,
            time_offset: 0.0,
            clock_freq: freq,
            move_clocks: std::iter::repeat_n(0, move_count.max(1)).collect(),
            out: Vec::new(),
        }
    }

    /// Sets the number of move-queue slots step commands may use (an MCU's `move_count` less
    /// the slots its outputs reserve); clears the slot bookkeeping.
    pub fn set_move_count(&mut self, move_count: usize) {
        self.move_clocks.clear();
        self.move_clocks.resize(move_count.max(1), 0);
    }

    /// Print time → MCU clock (Klipper's `print_time_to_clock`: truncating).
    pub fn print_time_to_clock(&self, print_time: f64) -> u64 {
        let c = (print_time - self.time_offset) * self.clock_freq;
        if c <= 0.0 { 0 } else { c as u64 }
    }

    /// MCU clock → print time (Klipper's `clock_to_print_time`).
    pub fn clock_to_print_time(&self, clock: u64) -> f64 {
        clock as f64 / self.clock_freq + self.time_offset
    }

    /// Time → clock rounded (Klipper's `clock_from_time` for step flushing).
    pub fn clock_from_time(&self, time: f64) -> u64 {
        let c = (time - self.time_offset) * self.clock_freq + 0.5;
        if c <= 0.0 { 0 } else { c as u64 }
    }

    /// Sets the print time → clock line `clock = (print_time − time_offset) · clock_freq` (a
    /// live secondary MCU's, re-aimed by the host about once a second).
    pub fn set_clock_conversion(&mut self, time_offset: f64, clock_freq: f64) {
        if clock_freq.is_finite() && clock_freq > 0.0 && time_offset.is_finite() {
            self.time_offset = time_offset;
            self.clock_freq = clock_freq;
        }
    }

    /// Seconds → ticks (Klipper's `seconds_to_clock`).
    pub fn seconds_to_clock(&self, seconds: f64) -> u64 {
        (seconds * self.freq) as u64
    }

    /// The clock at which the next slot frees up.
    fn next_free_slot(&self) -> u64 {
        self.move_clocks.front().copied().unwrap_or(0)
    }

    /// Takes the slot that frees up first for a command that frees it again at `clock`
    /// (Klipper's `heap_replace`).
    fn take_slot(&mut self, clock: u64) {
        let slots = &mut self.move_clocks;
        slots.pop_front();
        if slots.back().is_none_or(|&newest| newest <= clock) {
            slots.push_back(clock);
        } else {
            // Out of order (a far step's slot): after every equal clock, as a heap would not
            // care.
            let at = slots.partition_point(|&c| c <= clock);
            slots.insert(at, clock);
        }
    }
}

/// Motion queuing state (Klipper's motion_queuing module).
#[derive(Clone, Copy, Debug, Default)]
struct FlushState {
    last_flush_time: f64,
    last_step_gen_time: f64,
    need_flush_time: f64,
    need_step_gen_time: f64,
    kin_flush_delay: f64,
    /// The background flush timer wants to run (Klipper kicks it to "now").
    flush_timer_due: bool,
    do_kick_flush_timer: bool,
}

/// Outcome of one run of the batch-mode flush handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushTimer {
    /// It wants to run again as soon as possible.
    Again,
    /// It is idle until new motion kicks it.
    Idle,
}

/// Klipper's MIN_SCHEDULE_TIME: the least lead an output change is scheduled with, s.
pub const MIN_SCHEDULE_TIME: f64 = 0.100;

/// A software-PWM output (fan) driven from G-code through a request queue (Klipper's
/// `GCodeRequestQueue` + `Fan._apply_speed` + `MCU_pwm.set_pwm`).
#[derive(Clone, Debug)]
pub struct PwmRequestQueue {
    /// MCU index.
    pub mcu: usize,
    /// Output oid.
    pub oid: u8,
    /// PWM cycle in ticks (software PWM: `on_ticks` scale).
    pub cycle_ticks: u64,
    /// Inverted pin.
    pub invert: bool,
    /// max_power.
    pub max_power: f64,
    /// kick_start_time, s.
    pub kick_start_time: f64,
    /// off_below.
    pub off_below: f64,
    /// Pending requests (print time, value).
    pub rqueue: Vec<(f64, f64)>,
    /// Next request no earlier than this, s.
    pub next_min_flush_time: f64,
    /// Last value applied.
    pub last_fan_value: f64,
    /// Last value requested.
    pub last_req_value: f64,
    /// Clock of the last change.
    pub last_clock: u64,
}

impl PwmRequestQueue {
    /// A queue for a fan-like output.
    pub fn new(
        mcu: usize,
        oid: u8,
        cycle_ticks: u64,
        max_power: f64,
        kick_start_time: f64,
    ) -> Self {
        Self {
            mcu,
            oid,
            cycle_ticks,
            invert: false,
            max_power,
            kick_start_time,
            off_below: 0.0,
            rqueue: Vec::new(),
            next_min_flush_time: 0.0,
            last_fan_value: 0.0,
            last_req_value: 0.0,
            last_clock: 0,
        }
    }
}

/// What applying a request did.
enum RequestAction {
    Normal,
    Discard,
    Repeat(f64),
}

/// The toolhead, its trapqs and steppers, and the motion queuing behind them.
#[derive(Debug)]
pub struct Toolhead {
    /// Planning limits in force.
    pub limits: MoveLimits,
    /// max_velocity, mm/s.
    pub max_velocity: f64,
    /// max_accel, mm/s².
    pub max_accel: f64,
    /// minimum_cruise_ratio.
    pub min_cruise_ratio: f64,
    /// square_corner_velocity, mm/s.
    pub square_corner_velocity: f64,
    /// Commanded position (X, Y, Z, E), mm.
    pub commanded_pos: [f64; AXES],
    /// Print time at the end of the last queued move, s.
    pub print_time: f64,
    /// Queuing state.
    pub state: QueueState,
    /// The look-ahead queue.
    lookahead: LookAheadQueue,
    /// X/Y/Z segments.
    pub trapq: TrapQ,
    /// Extruders (index 0 is `[extruder]`).
    pub extruders: Vec<ExtruderMotion>,
    /// The active extruder.
    pub active_extruder: Option<usize>,
    /// Kinematic limits.
    pub kin_limits: KinLimits,
    /// Axis limits (min, max) per axis; min > max = not homed.
    pub axis_limits: [(f64, f64); 3],
    /// Every stepper.
    pub steppers: Vec<MotionStepper>,
    /// Every MCU.
    pub mcus: Vec<McuQueue>,
    /// Print time the MCU is estimated to be at now.
    est_print_time: f64,
    flush: FlushState,
    /// Timed actions waiting on moves, with the 1-based position (oldest first) in the
    /// look-ahead queue of the move they follow.
    timed_actions: Vec<(TimedAction, usize)>,
    /// Planned moves of the last flush (reused buffer).
    flushed: Vec<Move>,
    /// The print time at the end of each of `flushed` (reused buffer).
    flushed_ends: Vec<f64>,
    /// How many of each stepper's queued step messages ([`StepCompress::messages`]) the
    /// current merge has taken.
    step_msg_taken: Vec<usize>,
    /// The `req_clock` of each stepper's next message in the current merge (`None`: none
    /// left, or a stepper of another MCU).
    step_msg_heads: Vec<Option<u64>>,
    /// Scratch: each stepper's step generation outcome in one flush.
    gen_results: Vec<Result<(), StepCompressError>>,
    /// Every committed move (for estimates and the twin), if recording.
    pub record: Option<Vec<PlannedMove>>,
    /// Steppers switched on by their first movement: (stepper index, print time).
    pub enabled: Vec<(usize, f64)>,
    /// PWM outputs fed by G-code requests (fans).
    pub pwm_queues: Vec<PwmRequestQueue>,
    /// Whether steps are generated (false: plan only, for estimates).
    pub step_generation: bool,
    /// Print time after which the next move checks whether to yield or pause (Klipper's
    /// `need_check_pause`; infinite once batch mode gave up pausing).
    need_check_pause: f64,
    /// Whether the host may wait for the MCU to catch up (live); batch mode cannot.
    pub can_pause: bool,
    /// Batch mode's G-code reader under the reactor: whether the background flush runs after
    /// a read.
    batch_reader: BatchReader,
    /// Yields to the reactor since the last batch read.
    reactor_yields: u32,
}

/// A committed move with its timing, as recorded for estimates and replays.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PlannedMove {
    /// Start print time, s.
    pub print_time: f64,
    /// Start position (X, Y, Z, E), mm.
    pub start_pos: [f64; AXES],
    /// End position, mm.
    pub end_pos: [f64; AXES],
    /// Start, cruise and end speed, mm/s.
    pub v: [f64; 3],
    /// Accel, cruise and decel time, s.
    pub t: [f64; 3],
    /// Acceleration, mm/s².
    pub accel: f64,
    /// G-code line (1-based; 0 = none).
    pub line: u32,
}

impl Toolhead {
    /// A toolhead with the printer's limits; steppers, extruders and MCUs are added after.
    pub fn new(
        max_velocity: f64,
        max_accel: f64,
        minimum_cruise_ratio: f64,
        square_corner_velocity: f64,
        kin_limits: KinLimits,
    ) -> Self {
        let mut lookahead = LookAheadQueue::new();
        lookahead.set_flush_time(BUFFER_TIME_HIGH);
        Self {
            limits: MoveLimits::new(
                max_velocity,
                max_accel,
                square_corner_velocity,
                minimum_cruise_ratio,
            ),
            max_velocity,
            max_accel,
            min_cruise_ratio: minimum_cruise_ratio,
            square_corner_velocity,
            commanded_pos: [0.0; AXES],
            print_time: 0.0,
            state: QueueState::NeedPrime,
            lookahead,
            trapq: TrapQ::new(),
            extruders: Vec::new(),
            active_extruder: None,
            kin_limits,
            axis_limits: [(1.0, -1.0); 3],
            steppers: Vec::new(),
            mcus: Vec::new(),
            est_print_time: 0.0,
            flush: FlushState {
                kin_flush_delay: SDS_CHECK_TIME,
                do_kick_flush_timer: true,
                ..FlushState::default()
            },
            timed_actions: Vec::new(),
            flushed: Vec::new(),
            flushed_ends: Vec::new(),
            step_msg_taken: Vec::new(),
            step_msg_heads: Vec::new(),
            gen_results: Vec::new(),
            record: None,
            enabled: Vec::new(),
            pwm_queues: Vec::new(),
            step_generation: true,
            need_check_pause: -1.0,
            can_pause: false,
            batch_reader: BatchReader::new(),
            reactor_yields: 0,
        }
    }

    /// Sets the estimated MCU print time (batch mode keeps 0).
    pub fn set_est_print_time(&mut self, est: f64) {
        self.est_print_time = est;
    }

    /// The MCU's print time as last estimated (0 in batch mode).
    pub fn est_print_time(&self) -> f64 {
        self.est_print_time
    }

    /// The kinematic flush delay: how far step generation must trail the trapq, s.
    pub fn kin_flush_delay(&self) -> f64 {
        self.flush.kin_flush_delay
    }

    /// Print time up to which steps have been generated, s.
    pub fn last_step_gen_time(&self) -> f64 {
        self.flush.last_step_gen_time
    }

    /// Print time up to which step messages have been flushed, s.
    pub fn last_flush_time(&self) -> f64 {
        self.flush.last_flush_time
    }

    /// Print time up to which steps are needed, s.
    pub fn need_flush_time(&self) -> f64 {
        self.flush.need_flush_time
    }

    /// Whether the background flush timer wants to run.
    pub fn flush_timer_due(&self) -> bool {
        self.flush.flush_timer_due
    }

    /// Recomputes the kinematic flush delay from every stepper's windows.
    pub fn check_step_generation_scan_windows(&mut self) {
        let mut kfd = SDS_CHECK_TIME;
        for s in &self.steppers {
            if s.trapq.is_none() {
                continue;
            }
            kfd = kfd
                .max(s.solver.gen_steps_pre_active())
                .max(s.solver.gen_steps_post_active());
        }
        self.flush.kin_flush_delay = kfd;
    }

    /// Changes the velocity limits (SET_VELOCITY_LIMIT, M204).
    pub fn set_max_velocities(
        &mut self,
        max_velocity: Option<f64>,
        max_accel: Option<f64>,
        square_corner_velocity: Option<f64>,
        min_cruise_ratio: Option<f64>,
    ) {
        if let Some(v) = max_velocity {
            self.max_velocity = v;
        }
        if let Some(a) = max_accel {
            self.max_accel = a;
        }
        if let Some(s) = square_corner_velocity {
            self.square_corner_velocity = s;
        }
        if let Some(m) = min_cruise_ratio {
            self.min_cruise_ratio = m;
        }
        self.limits = MoveLimits::new(
            self.max_velocity,
            self.max_accel,
            self.square_corner_velocity,
            self.min_cruise_ratio,
        );
    }

    // ---- print time --------------------------------------------------------------------

    fn advance_move_time(&mut self, next_print_time: f64) {
        self.print_time = self.print_time.max(next_print_time);
    }

    fn calc_step_gen_restart(&self, est_print_time: f64) -> f64 {
        let kin_time = (est_print_time + MIN_KIN_TIME).max(self.flush.last_step_gen_time);
        kin_time + self.flush.kin_flush_delay
    }

    fn calc_print_time(&mut self) {
        let est = self.est_print_time;
        let kin_time = self.calc_step_gen_restart(est);
        let start = if self.can_pause {
            BUFFER_TIME_START + LIVE_EXTRA_LEAD_S
        } else {
            BUFFER_TIME_START
        };
        let min_print_time = (est + start).max(kin_time);
        if min_print_time > self.print_time {
            self.print_time = min_print_time;
        }
    }

    fn process_lookahead(&mut self, lazy: bool) -> Result<(), MoveError> {
        let mut moves = std::mem::take(&mut self.flushed);
        moves.clear();
        self.lookahead.flush(lazy, &mut moves);
        if moves.is_empty() {
            self.flushed = moves;
            return Ok(());
        }
        if self.state != QueueState::Main {
            self.state = QueueState::Main;
            self.need_check_pause = -1.0;
            self.calc_print_time();
        }
        let mut next_move_time = self.print_time;
        let mut ends = std::mem::take(&mut self.flushed_ends);
        ends.clear();
        for m in &moves {
            self.queue_move(m, next_move_time);
            next_move_time = move_end_time(next_move_time, m);
            ends.push(next_move_time);
        }
        self.flushed = moves;
        self.fire_timed_actions(&ends);
        self.flushed_ends = ends;
        self.advance_move_time(next_move_time);
        self.note_mcu_movequeue_activity(next_move_time, true);
        Ok(())
    }

    /// Puts a planned move into the trapqs at `print_time`: the toolhead's for X/Y/Z, the active
    /// extruder's for E (Klipper's `trapq_append` + `process_move`), and into the record.
    fn queue_move(&mut self, m: &Move, print_time: f64) {
        if m.is_kinematic_move {
            self.trapq.append(
                print_time,
                m.accel_t,
                m.cruise_t,
                m.decel_t,
                Coord::new(m.start_pos[0], m.start_pos[1], m.start_pos[2]),
                Coord::new(m.axes_r[0], m.axes_r[1], m.axes_r[2]),
                m.start_v,
                m.cruise_v,
                m.accel,
            );
        }
        if m.axes_d[3] != 0.0
            && let Some(e) = self.active_extruder
        {
            let ex = &mut self.extruders[e];
            append_extrusion(
                &mut ex.trapq,
                print_time,
                m.accel_t,
                m.cruise_t,
                m.decel_t,
                m.start_pos[3],
                m.axes_r[3],
                m.start_v,
                m.cruise_v,
                m.accel,
                m.axes_d[0] != 0.0 || m.axes_d[1] != 0.0,
            );
            ex.last_position = m.end_pos[3];
        }
        if let Some(rec) = &mut self.record {
            rec.push(PlannedMove {
                print_time,
                start_pos: m.start_pos,
                end_pos: m.end_pos,
                v: [m.start_v, m.cruise_v, m.end_v],
                t: [m.accel_t, m.cruise_t, m.decel_t],
                accel: m.accel,
                line: m.line,
            });
        }
    }

    /// Fires the timed actions whose move was among those just committed, each at its move's
    /// end in `ends` (the print time after each committed move, in order); the others wait for
    /// moves that many places earlier in the queue now.
    fn fire_timed_actions(&mut self, ends: &[f64]) {
        if self.timed_actions.is_empty() {
            return;
        }
        let n_flushed = ends.len();
        let actions = std::mem::take(&mut self.timed_actions);
        for (action, waits) in actions {
            if waits <= n_flushed {
                self.apply_timed_action(action, ends[waits - 1]);
            } else {
                self.timed_actions.push((action, waits - n_flushed));
            }
        }
    }

    fn apply_timed_action(&mut self, action: TimedAction, at: f64) {
        match action {
            TimedAction::PressureAdvance {
                extruder,
                pressure_advance,
                smooth_time,
            } => {
                for s in &mut self.steppers {
                    if s.trapq == Some(TrapqId::Extruder(extruder)) {
                        let lft = self.flush.last_step_gen_time;
                        if let crate::itersolve::Kinematics::Extruder(k) = s.solver.kinematics_mut()
                        {
                            k.set_pressure_advance(lft, at, pressure_advance, smooth_time);
                        }
                    }
                }
            }
            TimedAction::Nothing => {}
            TimedAction::PwmRequest { queue, value } => {
                self.pwm_queues[queue].rqueue.push((at, value));
                self.note_mcu_movequeue_activity(at, false);
            }
        }
    }

    /// Runs `action` at the end of the newest queued move, or now (at the last move time) if
    /// nothing is queued (Klipper's `register_lookahead_callback`).
    pub fn register_lookahead_callback(&mut self, action: TimedAction) -> Result<(), MoveError> {
        if self.lookahead.is_empty() {
            let t = self.get_last_move_time()?;
            self.apply_timed_action(action, t);
            return Ok(());
        }
        let pending = self.lookahead.len();
        self.timed_actions.push((action, pending));
        Ok(())
    }

    fn flush_lookahead(&mut self) -> Result<(), MoveError> {
        self.process_lookahead(false)?;
        self.state = QueueState::NeedPrime;
        self.need_check_pause = -1.0;
        self.lookahead.set_flush_time(BUFFER_TIME_HIGH);
        Ok(())
    }

    /// Flushes the look-ahead and generates every pending step.
    pub fn flush_step_generation(&mut self) -> Result<(), MoveError> {
        self.flush_lookahead()?;
        let t = self.flush.need_step_gen_time;
        self.advance_flush_time(t, 0.0)
    }

    /// The print time at which the next move would start (flushing the look-ahead if idle).
    pub fn get_last_move_time(&mut self) -> Result<f64, MoveError> {
        if self.state != QueueState::Main {
            self.flush_lookahead()?;
            self.calc_print_time();
        } else {
            self.process_lookahead(false)?;
        }
        Ok(self.print_time)
    }

    /// Waits `delay` seconds of print time (G4).
    pub fn dwell(&mut self, delay: f64) -> Result<(), MoveError> {
        self.flush_lookahead()?;
        let t = self.get_last_move_time()? + delay.max(0.0);
        self.advance_move_time(t);
        self.check_pause()
    }

    /// Waits for all moves (M400): in batch mode this only flushes the look-ahead.
    pub fn wait_moves(&mut self) -> Result<(), MoveError> {
        self.flush_lookahead()
    }

    /// Klipper's `_check_pause` after a move: leave the idle state, give up pausing when too
    /// far ahead in batch mode, and otherwise yield to the reactor — which in batch mode runs the
    /// background flush if it is due (and that can flush the whole look-ahead when step
    /// generation is about to catch up with it, early in a print), and reads G-code ahead (the
    /// yield is counted for [`Toolhead::batch_chunk_done`]). Klipper's priming timer (0.1 s of
    /// wall time) is not modelled: batch mode reads far faster than that.
    fn check_pause(&mut self) -> Result<(), MoveError> {
        if self.state != QueueState::Main && !self.lookahead.is_empty() {
            self.state = QueueState::Priming;
            self.need_check_pause = -1.0;
        }
        let pause_time = self.print_time - self.est_print_time - BUFFER_TIME_HIGH;
        if pause_time > 0.0 && !self.can_pause {
            self.need_check_pause = f64::INFINITY;
            return Ok(());
        }
        if self.state == QueueState::Main {
            self.need_check_pause = self.print_time;
            self.reactor_yields = self.reactor_yields.saturating_add(1);
            if !self.can_pause && self.flush.flush_timer_due {
                let _: FlushTimer = self.flush_handler_batch()?;
            }
        }
        Ok(())
    }

    /// Declares the toolhead at `pos` (G92-like for the kinematics; homing; SET_KINEMATIC_POSITION).
    /// `homing_axes` are the axes (0..3) that become homed.
    pub fn set_position(
        &mut self,
        pos: [f64; AXES],
        homing_axes: &[usize],
    ) -> Result<(), MoveError> {
        self.flush_step_generation()?;
        let c = Coord::new(pos[0], pos[1], pos[2]);
        self.trapq.set_position(self.print_time, c);
        self.commanded_pos[..3].copy_from_slice(&pos[..3]);
        for s in &mut self.steppers {
            if s.trapq == Some(TrapqId::Toolhead) {
                let mcu_pos = s.mcu_position();
                s.solver.set_position(c);
                s.set_mcu_position(mcu_pos);
            }
        }
        if let KinLimits::Delta(d) = &mut self.kin_limits {
            d.limit_xy2 = -1.0;
            if homing_axes.len() == 3 {
                d.need_home = false;
            }
        }
        Ok(())
    }

    /// Sets the extruder position (G92 E / activating an extruder).
    pub fn set_extruder_position(&mut self, e: f64) {
        self.commanded_pos[3] = e;
    }

    /// Checks a move against the kinematics and extruder, lowering its limits.
    fn check_move(&mut self, m: &mut Move) -> Result<(), MoveError> {
        if m.is_kinematic_move {
            self.check_kinematic_move(m)?;
        }
        if m.axes_d[3] != 0.0 {
            let Some(e) = self.active_extruder else {
                return Err(MoveError::Extruder(
                    "Extrude when no extruder present".to_owned(),
                ));
            };
            let ex = &self.extruders[e];
            let axis_r = m.axes_r[3];
            let axis_d = m.axes_d[3];
            if (m.axes_d[0] == 0.0 && m.axes_d[1] == 0.0) || axis_r < 0.0 {
                if axis_d.abs() > ex.max_e_dist {
                    return Err(MoveError::Extruder(format!(
                        "Extrude only move too long ({axis_d:.3}mm vs {:.3}mm)\n\
                         See the 'max_extrude_only_distance' config option for details",
                        ex.max_e_dist
                    )));
                }
                let inv_extrude_r = 1.0 / axis_r.abs();
                m.limit_speed(
                    ex.max_e_velocity * inv_extrude_r,
                    ex.max_e_accel * inv_extrude_r,
                );
            } else if axis_r > ex.max_extrude_ratio {
                if axis_d <= ex.nozzle_diameter * ex.max_extrude_ratio {
                    return Ok(());
                }
                let area = axis_r * ex.filament_area;
                return Err(MoveError::Extruder(format!(
                    "Move exceeds maximum extrusion ({area:.3}mm^2 vs {:.3}mm^2)\n\
                     See the 'max_extrude_cross_section' config option for details",
                    ex.max_extrude_ratio * ex.filament_area
                )));
            }
        }
        Ok(())
    }

    fn move_error(m: &Move, msg: &str) -> MoveError {
        let ep = m.end_pos;
        MoveError::OutOfRange(format!(
            "{msg}: {:.3} {:.3} {:.3} [{:.3}]",
            ep[0], ep[1], ep[2], ep[3]
        ))
    }

    fn check_endstops(axis_limits: &[(f64, f64); 3], m: &Move) -> Result<(), MoveError> {
        for (i, &(lo, hi)) in axis_limits.iter().enumerate() {
            if m.axes_d[i] != 0.0 && (m.end_pos[i] < lo || m.end_pos[i] > hi) {
                if lo > hi {
                    return Err(Self::move_error(m, "Must home axis first"));
                }
                return Err(Self::move_error(m, "Move out of range"));
            }
        }
        Ok(())
    }

    fn check_kinematic_move(&mut self, m: &mut Move) -> Result<(), MoveError> {
        let axis_limits = self.axis_limits;
        match &mut self.kin_limits {
            KinLimits::Cartesian {
                max_z_velocity,
                max_z_accel,
            } => {
                let l = &axis_limits;
                let (x, y) = (m.end_pos[0], m.end_pos[1]);
                if x < l[0].0 || x > l[0].1 || y < l[1].0 || y > l[1].1 {
                    Self::check_endstops(&axis_limits, m)?;
                }
                if m.axes_d[2] == 0.0 {
                    return Ok(());
                }
                Self::check_endstops(&axis_limits, m)?;
                let z_ratio = m.move_d / m.axes_d[2].abs();
                m.limit_speed(*max_z_velocity * z_ratio, *max_z_accel * z_ratio);
                Ok(())
            }
            KinLimits::Delta(d) => {
                let ep = m.end_pos;
                let end_xy2 = ep[0] * ep[0] + ep[1] * ep[1];
                if end_xy2 <= d.limit_xy2 && m.axes_d[2] == 0.0 {
                    return Ok(());
                }
                if d.need_home {
                    return Err(Self::move_error(m, "Must home first"));
                }
                let end_z = ep[2];
                let mut limit_xy2 = d.max_xy2;
                if end_z > d.limit_z {
                    let above = end_z - d.limit_z;
                    let min_arm2 = d.min_arm_length * d.min_arm_length;
                    let r = d.min_arm_length - above;
                    let allowed_radius = d.radius - (min_arm2 - r * r).sqrt();
                    limit_xy2 = limit_xy2.min(allowed_radius * allowed_radius);
                }
                if end_xy2 > limit_xy2 || end_z > d.max_z || end_z < d.min_z {
                    let at_home_xy = ep[0] == d.home_position[0] && ep[1] == d.home_position[1];
                    if !at_home_xy || end_z < d.min_z || end_z > d.home_position[2] {
                        return Err(Self::move_error(m, "Move out of range"));
                    }
                    limit_xy2 = -1.0;
                }
                if m.axes_d[2] != 0.0 {
                    let z_ratio = m.move_d / m.axes_d[2].abs();
                    m.limit_speed(d.max_z_velocity * z_ratio, d.max_z_accel * z_ratio);
                    limit_xy2 = -1.0;
                }
                let start_xy2 = m.start_pos[0] * m.start_pos[0] + m.start_pos[1] * m.start_pos[1];
                let extreme_xy2 = end_xy2.max(start_xy2);
                if extreme_xy2 > d.slow_xy2 {
                    let r = if extreme_xy2 > d.very_slow_xy2 {
                        0.25
                    } else {
                        0.5
                    };
                    m.limit_speed(d.max_velocity * r, d.max_accel * r);
                    limit_xy2 = -1.0;
                }
                d.limit_xy2 = limit_xy2.min(d.slow_xy2);
                Ok(())
            }
            KinLimits::None => Ok(()),
        }
    }

    /// Queues a move to `newpos` at `speed` mm/s (Klipper's `toolhead.move`).
    ///
    /// # Errors
    /// Out-of-range and extruder limits, in Klipper's words; step generation failures.
    pub fn move_to(&mut self, newpos: [f64; AXES], speed: f64, line: u32) -> Result<(), MoveError> {
        let mut m = Move::new(&self.limits, self.commanded_pos, newpos, speed);
        m.line = line;
        if m.move_d == 0.0 {
            return Ok(());
        }
        self.check_move(&mut m)?;
        self.commanded_pos = m.end_pos;
        let icv = self
            .active_extruder
            .map(|e| self.extruders[e].instant_corner_v);
        let want_flush = self.lookahead.add_move(m, |prev, cur| {
            let diff_r = cur.axes_r[3] - prev.axes_r[3];
            match icv {
                Some(icv) if diff_r != 0.0 => (icv / diff_r.abs()).powi(2),
                _ => cur.max_cruise_v2,
            }
        });
        if want_flush {
            self.process_lookahead(true)?;
        }
        if self.print_time > self.need_check_pause {
            self.check_pause()?;
        }
        Ok(())
    }

    /// Homing's "drip" move: queued alone and stepped out in 50 ms segments up to its end.
    /// Batch mode has no endstop, so the move always runs to its end (Klipper's batch homing).
    /// Returns the move's (start, end) print time.
    pub fn drip_move(&mut self, newpos: [f64; 3], speed: f64) -> Result<(f64, f64), MoveError> {
        let (start_time, end_time) = self.drip_load(newpos, speed)?;
        self.drip_start(start_time)?;
        // Step it out in segments (no endstop in batch mode: it runs to the end).
        let mut flush_time = start_time;
        while flush_time < end_time {
            flush_time = (flush_time + DRIP_SEGMENT_TIME).min(end_time);
            self.drip_segment(flush_time)?;
        }
        self.drip_finish(flush_time)?;
        Ok((start_time, end_time))
    }

    /// First part of a drip move (Klipper's `drip_move` up to `_drip_load_trapq`): checks the
    /// move, dwells the kinematic flush delay and loads the move into the trapq on its own.
    /// Returns its (start, end) print time. Then [`Toolhead::drip_start`], a
    /// [`Toolhead::drip_segment`] per 50 ms (live: as the MCU catches up, until the endstop
    /// triggers) and [`Toolhead::drip_finish`].
    ///
    /// # Errors
    /// Out-of-range moves; step generation failures.
    pub fn drip_load(&mut self, newpos: [f64; 3], speed: f64) -> Result<(f64, f64), MoveError> {
        let mut target = self.commanded_pos;
        target[..3].copy_from_slice(&newpos);
        let mut m = Move::new(&self.limits, self.commanded_pos, target, speed);
        if m.move_d != 0.0 {
            self.check_kinematic_move(&mut m)?;
        }
        let kfd = self.flush.kin_flush_delay;
        self.dwell(kfd)?;
        self.process_lookahead(false)?;
        // Load the move into the trapq on its own.
        if m.move_d != 0.0 {
            self.commanded_pos = m.end_pos;
            self.lookahead.add_move(m, |_, cur| cur.max_cruise_v2);
        }
        let mut moves = Vec::new();
        self.lookahead.flush(false, &mut moves);
        self.calc_print_time();
        let start_time = self.print_time;
        let mut end_time = start_time;
        for mv in &moves {
            self.queue_move(mv, end_time);
            end_time = move_end_time(end_time, mv);
        }
        self.lookahead.reset();
        Ok((start_time, end_time))
    }

    /// Generates the steps up to a drip move's start (the background flush is off while it
    /// runs).
    ///
    /// # Errors
    /// Step generation failures.
    pub fn drip_start(&mut self, start_time: f64) -> Result<(), MoveError> {
        self.flush.do_kick_flush_timer = false;
        self.advance_flush_time(start_time - SDS_CHECK_TIME, start_time)
    }

    /// Generates a drip move's steps up to `flush_time`.
    ///
    /// # Errors
    /// Step generation failures.
    pub fn drip_segment(&mut self, flush_time: f64) -> Result<(), MoveError> {
        self.note_mcu_movequeue_activity(flush_time, true);
        self.advance_flush_time(flush_time - SDS_CHECK_TIME, flush_time)
    }

    /// Ends a drip move whose steps were generated up to `flush_time`: the background flush
    /// resumes, and what is left of the move is wiped from the trapq (an endstop stopped it).
    ///
    /// # Errors
    /// Step generation failures.
    pub fn drip_finish(&mut self, flush_time: f64) -> Result<(), MoveError> {
        self.flush.flush_timer_due = true;
        let kfd = self.flush.kin_flush_delay;
        self.advance_flush_time(flush_time + kfd, 0.0)?;
        // Expire what is left of the drip move from the trapq.
        self.trapq.finalize_moves(NEVER_TIME, 0.0);
        Ok(())
    }

    // ---- live mode ---------------------------------------------------------------------

    /// Live mode's background flush (Klipper's `_flush_handler`) at MCU print time
    /// `est_print_time`: while steps are needed, generate them in batches 0.45–0.7 s ahead of
    /// the MCU; otherwise flush what is due up to 0.4 s ahead. Returns when to run again, as
    /// seconds from now, or `None` when idle until new motion kicks it
    /// ([`Toolhead::flush_timer_due`]).
    ///
    /// # Errors
    /// Step generation failures.
    pub fn flush_handler_live(&mut self, est_print_time: f64) -> Result<Option<f64>, MoveError> {
        self.flush.flush_timer_due = false;
        let est = est_print_time;
        let f = self.flush;
        let aggr_sg_time = f.need_step_gen_time - 2.0 * f.kin_flush_delay;
        if f.last_step_gen_time < aggr_sg_time {
            // Stepping: aggressive flushing, batched from the last step generation time.
            let mut want_sg_time = est + BGFLUSH_SG_HIGH_TIME + LIVE_EXTRA_LEAD_S;
            let batch_time = BGFLUSH_SG_HIGH_TIME - BGFLUSH_SG_LOW_TIME;
            let mut next_batch_time = f.last_step_gen_time + batch_time;
            if next_batch_time > est {
                if next_batch_time > want_sg_time + 0.005 {
                    next_batch_time = f.last_step_gen_time;
                }
                want_sg_time = next_batch_time;
            }
            let want_sg_time = want_sg_time.min(aggr_sg_time);
            if want_sg_time > f.last_step_gen_time {
                self.advance_flush_time(0.0, want_sg_time)?;
            }
        } else {
            let want_flush_time =
                (est + BGFLUSH_HIGH_TIME).min(f.need_flush_time + BGFLUSH_EXTRA_TIME);
            if want_flush_time > f.last_flush_time {
                self.advance_flush_time(want_flush_time, 0.0)?;
            }
        }
        let f = self.flush;
        let aggr_sg_time = f.need_step_gen_time - 2.0 * f.kin_flush_delay;
        if f.last_step_gen_time < aggr_sg_time {
            return Ok(Some(
                f.last_step_gen_time - BGFLUSH_SG_LOW_TIME - LIVE_EXTRA_LEAD_S - est,
            ));
        }
        self.flush.do_kick_flush_timer = true;
        if f.last_flush_time >= f.need_flush_time + BGFLUSH_EXTRA_TIME {
            return Ok(None);
        }
        Ok(Some(f.last_flush_time - BGFLUSH_LOW_TIME - est))
    }

    /// Klipper's priming timer: input went quiet while moves wait in the look-ahead, so
    /// commit them (no-op unless priming).
    ///
    /// # Errors
    /// Step generation failures.
    pub fn priming_timeout(&mut self) -> Result<(), MoveError> {
        if self.state == QueueState::Priming {
            self.flush_lookahead()?;
        }
        Ok(())
    }

    /// Commits the look-ahead (Klipper's `_flush_lookahead`): the start of live `wait_moves`.
    ///
    /// # Errors
    /// Step generation failures.
    pub fn flush_lookahead_now(&mut self) -> Result<(), MoveError> {
        self.flush_lookahead()
    }

    /// Whether the look-ahead holds no move.
    pub fn lookahead_is_empty(&self) -> bool {
        self.lookahead.is_empty()
    }

    /// Print time up to which the MCU needs steps (with the kinematic flush delay), s.
    pub fn need_step_gen_time(&self) -> f64 {
        self.flush.need_step_gen_time
    }

    /// Stepper `i` after a homing move stopped it: its compressor starts over (with a
    /// `reset_step_clock` to 0, Klipper's `note_homing_end`) and it is at `mcu_pos` steps (from
    /// `stepper_get_position`, direction-corrected) as of MCU clock `clock`.
    ///
    /// # Errors
    /// Step compression failures.
    pub fn stepper_homing_end(
        &mut self,
        i: usize,
        clock: u64,
        mcu_pos: i64,
    ) -> Result<(), MoveError> {
        let s = &mut self.steppers[i];
        // (Messages queued before, not yet merged, stay for the merge.)
        let merged_later = s.sc.messages().len();
        s.sc.reset(0)?;
        s.sc.set_last_position(clock, mcu_pos)?;
        s.set_mcu_position(mcu_pos);
        let mut msgs = Vec::new();
        s.sc.drain_messages_from(merged_later, &mut msgs);
        let (mi, oid) = (s.mcu, s.oid);
        // Behind every step command sent before (which the stopped stepper ignores until this
        // reset): the same clocks keep it after them on the wire.
        let (last_min, last_req) = s.last_clocks;
        for m in msgs {
            self.mcus[mi].out.push(McuMessage {
                req_clock: m.req_clock.max(last_req),
                min_clock: m.min_clock.max(last_min),
                command: McuCommand::Step {
                    oid,
                    message: m.command,
                },
            });
        }
        Ok(())
    }

    // ---- motion queuing ----------------------------------------------------------------

    /// Notes that motion up to `mq_time` needs steps (Klipper's `note_mcu_movequeue_activity`).
    pub fn note_mcu_movequeue_activity(&mut self, mut mq_time: f64, is_step_gen: bool) {
        if is_step_gen {
            mq_time += self.flush.kin_flush_delay;
            self.flush.need_step_gen_time = self.flush.need_step_gen_time.max(mq_time);
        }
        self.flush.need_flush_time = self.flush.need_flush_time.max(mq_time);
        if self.flush.do_kick_flush_timer {
            self.flush.do_kick_flush_timer = false;
            self.flush.flush_timer_due = true;
        }
    }

    /// The toolhead's flush callback: in the main state, flush the look-ahead when step
    /// generation is about to run out of queued motion.
    fn handle_step_flush(&mut self, step_gen_time: f64) -> Result<(), MoveError> {
        if self.state != QueueState::Main {
            return Ok(());
        }
        let kfd = self.flush.kin_flush_delay;
        if step_gen_time >= self.print_time - kfd - 0.001 {
            self.flush_lookahead()?;
        }
        Ok(())
    }

    /// Generates steps up to `want_step_gen_time` and flushes messages up to `want_flush_time`
    /// (Klipper's `_advance_flush_time`).
    pub fn advance_flush_time(
        &mut self,
        want_flush_time: f64,
        want_step_gen_time: f64,
    ) -> Result<(), MoveError> {
        let flush_time = want_flush_time
            .max(self.flush.last_flush_time)
            .max(want_step_gen_time - STEPCOMPRESS_FLUSH_TIME);
        let step_gen_time = want_step_gen_time
            .max(self.flush.last_step_gen_time)
            .max(flush_time);
        self.handle_step_flush(step_gen_time)?;
        self.check_enable_callbacks(step_gen_time);
        self.flush_pwm_requests(flush_time);
        let kfd = self.flush.kin_flush_delay;
        let trapq_free_time = step_gen_time - kfd;
        let clear_history_time = (trapq_free_time - MOVE_HISTORY_EXPIRE).max(0.0);
        self.gen_steps(flush_time, step_gen_time, clear_history_time)?;
        self.flush.last_flush_time = flush_time;
        self.flush.last_step_gen_time = step_gen_time;
        self.trapq
            .finalize_moves(trapq_free_time, clear_history_time);
        for e in &mut self.extruders {
            e.trapq.finalize_moves(trapq_free_time, clear_history_time);
        }
        Ok(())
    }

    fn check_enable_callbacks(&mut self, step_gen_time: f64) {
        for (i, s) in self.steppers.iter_mut().enumerate() {
            if !s.enable_pending {
                continue;
            }
            let tq = match s.trapq {
                Some(TrapqId::Toolhead) => &mut self.trapq,
                Some(TrapqId::Extruder(e)) => &mut self.extruders[e].trapq,
                None => continue,
            };
            tq.check_sentinels();
            let t = s.solver.check_active(tq, step_gen_time);
            if t != 0.0 {
                s.enable_pending = false;
                self.enabled.push((i, t));
            }
        }
    }

    fn gen_steps(
        &mut self,
        flush_time: f64,
        step_gen_time: f64,
        clear_history_time: f64,
    ) -> Result<(), MoveError> {
        self.trapq.check_sentinels();
        for e in &mut self.extruders {
            e.trapq.check_sentinels();
        }
        if !self.step_generation {
            return Ok(());
        }
        // Generate every stepper's steps, then flush them in stepper order. The steppers are
        // independent, so only which error is reported first depends on the order, and that is
        // the order of Klipper's loop.
        let n = self.steppers.len();
        let mut results = std::mem::take(&mut self.gen_results);
        results.clear();
        results.resize(n, Ok(()));
        let (trapq, extruders) = (&self.trapq, &self.extruders);
        for (i, s) in self.steppers.iter_mut().enumerate() {
            let tq = match s.trapq {
                Some(TrapqId::Toolhead) => trapq,
                Some(TrapqId::Extruder(e)) => &extruders[e].trapq,
                None => continue,
            };
            results[i] = s.solver.generate_steps(tq, &mut s.sc, step_gen_time);
        }
        let mut outcome = Ok(());
        for (i, s) in self.steppers.iter_mut().enumerate() {
            if s.trapq.is_none() {
                continue;
            }
            outcome = std::mem::replace(&mut results[i], Ok(()))
                .map_err(MoveError::from)
                .and_then(|()| Self::finish_stepper(&self.mcus, s, flush_time, clear_history_time));
            if outcome.is_err() {
                break;
            }
        }
        self.gen_results = results;
        outcome?;
        for mi in 0..self.mcus.len() {
            let flush_clock = self.mcus[mi].clock_from_time(flush_time);
            self.steppersync_flush(mi, flush_clock);
        }
        Ok(())
    }

    /// After step generation: flushes a stepper's compressor up to `flush_time` and forgets
    /// its history before `clear_history_time`. Its messages stay queued in the compressor
    /// until a merge ([`Toolhead::steppersync_flush`]) takes them.
    fn finish_stepper(
        mcus: &[McuQueue],
        s: &mut MotionStepper,
        flush_time: f64,
        clear_history_time: f64,
    ) -> Result<(), MoveError> {
        let mcu = &mcus[s.mcu];
        s.sc.flush(mcu.clock_from_time(flush_time))?;
        s.sc.history_expire(mcu.clock_from_time(clear_history_time));
        Ok(())
    }

    /// Merges pending step messages of MCU `mi` in `req_clock` order up to `move_clock`.
    fn steppersync_flush(&mut self, mi: usize, move_clock: u64) {
        self.step_msg_taken.clear();
        self.step_msg_taken.resize(self.steppers.len(), 0);
        let heads = &mut self.step_msg_heads;
        heads.clear();
        heads.extend(self.steppers.iter().map(|s| {
            s.sc.messages()
                .first()
                .filter(|_| s.mcu == mi)
                .map(|m| m.req_clock)
        }));
        loop {
            // The earliest next message (the first stepper's among equals).
            let mut best: Option<(usize, u64)> = None;
            for (i, head) in heads.iter().enumerate() {
                if let Some(c) = *head
                    && best.is_none_or(|(_, b)| c < b)
                {
                    best = Some((i, c));
                }
            }
            let Some((i, req_clock)) = best else { break };
            let taken = self.step_msg_taken[i];
            let queued = self.steppers[i].sc.messages();
            let msg = queued[taken];
            if msg.min_clock != 0 && req_clock > move_clock {
                break;
            }
            self.step_msg_taken[i] = taken + 1;
            heads[i] = queued.get(taken + 1).map(|m| m.req_clock);
            let mcu = &mut self.mcus[mi];
            let next_avail = mcu.next_free_slot();
            if msg.min_clock != 0 {
                mcu.take_slot(msg.min_clock);
            }
            let (mut min_clock, mut req_clock) = (next_avail, msg.req_clock);
            if self.can_pause {
                // Live: a stepper's commands reach the MCU in order (klippy keeps one command
                // queue per stepper), so none may be scheduled before the one ahead of it.
                let last = &mut self.steppers[i].last_clocks;
                min_clock = min_clock.max(last.0);
                req_clock = req_clock.max(last.1);
                *last = (min_clock, req_clock);
            }
            mcu.out.push(McuMessage {
                req_clock,
                min_clock,
                command: McuCommand::Step {
                    oid: self.steppers[i].oid,
                    message: msg.command,
                },
            });
        }
        for (s, &taken) in self.steppers.iter_mut().zip(&self.step_msg_taken) {
            s.sc.consume_messages(taken);
        }
    }

    /// Batch mode's background flush (Klipper's `_flush_handler_debug`): generate steps up to
    /// 1.5 s behind the needed time in 0.25 s batches; when caught up, flush everything needed
    /// plus 0.25 s (which also flushes the look-ahead when it runs dry).
    pub fn flush_handler_batch(&mut self) -> Result<FlushTimer, MoveError> {
        self.flush.flush_timer_due = false;
        let faux_time = self.flush.need_flush_time - 1.5;
        let batch_time = BGFLUSH_SG_HIGH_TIME - BGFLUSH_SG_LOW_TIME;
        let mut flush_count = 0u32;
        while self.flush.last_step_gen_time < faux_time {
            let mut target = self.flush.last_step_gen_time + batch_time;
            if flush_count > 100 && faux_time > target {
                target += ((faux_time - target) / batch_time).trunc() * batch_time;
            }
            self.advance_flush_time(0.0, target)?;
            flush_count += 1;
        }
        if flush_count > 0 {
            self.flush.flush_timer_due = true;
            return Ok(FlushTimer::Again);
        }
        let t = self.flush.need_flush_time + BGFLUSH_EXTRA_TIME;
        self.advance_flush_time(t, 0.0)?;
        self.flush.do_kick_flush_timer = true;
        Ok(FlushTimer::Idle)
    }

    /// Batch mode reads `chunk` of G-code (one of klippy's 4096-byte reads; see
    /// [`crate::batch_reader`]). Call before running its lines.
    pub fn batch_chunk_read(&mut self, chunk: &[u8]) {
        let newlines = chunk.iter().filter(|&&b| b == b'\n').count();
        self.batch_reader.read(newlines);
        self.reactor_yields = 0;
    }

    /// The lines of the chunk last read have run: runs the background flush if it is due and
    /// klippy's reactor gets to its timers now — only after a call of its G-code reader that
    /// never yielded; after one that did, the reactor reads on first. Returns whether the flush
    /// ran.
    ///
    /// # Errors
    /// Internal step generation errors.
    pub fn batch_chunk_done(&mut self) -> Result<bool, MoveError> {
        let yields = std::mem::take(&mut self.reactor_yields);
        if self.batch_reader.processed(yields) && self.flush.flush_timer_due {
            let _: FlushTimer = self.flush_handler_batch()?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Emits a non-step command for MCU `mcu` with its request clock.
    pub fn send(&mut self, mcu: usize, req_clock: u64, min_clock: u64, text: String) {
        self.mcus[mcu].out.push(McuMessage {
            req_clock,
            min_clock,
            command: McuCommand::Text(text),
        });
    }

    /// Queues a PWM request (M106) at the end of the queued moves.
    pub fn queue_pwm_request(&mut self, queue: usize, value: f64) -> Result<(), MoveError> {
        self.register_lookahead_callback(TimedAction::PwmRequest { queue, value })
    }

    fn pwm_apply(&mut self, qi: usize, print_time: f64, value: f64) -> RequestAction {
        let q = &mut self.pwm_queues[qi];
        let mut value = if value < q.off_below { 0.0 } else { value };
        value = (value * q.max_power).clamp(0.0, q.max_power);
        if value == q.last_fan_value {
            return RequestAction::Discard;
        }
        let kick = value != 0.0
            && q.kick_start_time != 0.0
            && (q.last_fan_value == 0.0 || value - q.last_fan_value > 0.5);
        let (applied, action) = if kick {
            q.last_req_value = value;
            q.last_fan_value = q.max_power;
            (
                q.max_power,
                RequestAction::Repeat(print_time + q.kick_start_time),
            )
        } else {
            q.last_fan_value = value;
            q.last_req_value = value;
            (value, RequestAction::Normal)
        };
        let v = if q.invert { 1.0 - applied } else { applied };
        let on_ticks = (v.clamp(0.0, 1.0) * q.cycle_ticks as f64 + 0.5) as u64;
        let (mcu, oid, min_clock) = (q.mcu, q.oid, q.last_clock);
        let clock = self.mcus[mcu].print_time_to_clock(print_time);
        self.pwm_queues[qi].last_clock = clock;
        self.send(
            mcu,
            clock,
            min_clock,
            format!("queue_digital_out oid={oid} clock={clock} on_ticks={on_ticks}"),
        );
        action
    }

    fn flush_pwm_requests(&mut self, must_flush_time: f64) {
        for qi in 0..self.pwm_queues.len() {
            loop {
                let q = &self.pwm_queues[qi];
                let Some(&(first_t, _)) = q.rqueue.first() else {
                    break;
                };
                let next_time = first_t.max(q.next_min_flush_time);
                if next_time > must_flush_time {
                    break;
                }
                let mut pos = 0;
                while pos + 1 < q.rqueue.len() && q.rqueue[pos + 1].0 <= next_time {
                    pos += 1;
                }
                let value = q.rqueue[pos].1;
                let action = self.pwm_apply(qi, next_time, value);
                let q = &mut self.pwm_queues[qi];
                match action {
                    RequestAction::Discard => {
                        q.rqueue.drain(..=pos);
                        continue;
                    }
                    RequestAction::Repeat(next_min) => {
                        q.next_min_flush_time = q.next_min_flush_time.max(next_min);
                        q.rqueue.drain(..pos);
                    }
                    RequestAction::Normal => {
                        q.rqueue.drain(..=pos);
                    }
                }
                q.next_min_flush_time = q.next_min_flush_time.max(next_time + MIN_SCHEDULE_TIME);
                let t = q.next_min_flush_time;
                self.note_mcu_movequeue_activity(t, false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The move-queue slots answer as Klipper's heap does: after any sequence of commands
    /// taking slots (mostly in clock order, some far steps' older clocks among them), the
    /// clock at which the next slot frees up is the heap's minimum.
    #[test]
    fn move_queue_slots_free_up_as_klippers_heap_says() {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        for (slots, seed) in [(1_usize, 1_u64), (2, 7), (16, 3), (500, 11)] {
            let mut queue = McuQueue::new(16e6, slots);
            let mut heap: BinaryHeap<Reverse<u64>> = (0..slots).map(|_| Reverse(0)).collect();
            let mut state = seed;
            let mut clock = 0_u64;
            for _ in 0..20_000 {
                // xorshift: mostly rising clocks, a tenth of them older (far steps).
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                clock += state % 1_000;
                let taken = if state % 10 == 0 {
                    clock.saturating_sub(state % 50_000)
                } else {
                    clock
                };
                assert_eq!(
                    Some(queue.next_free_slot()),
                    heap.peek().map(|&Reverse(first_free)| first_free)
                );
                queue.take_slot(taken);
                heap.pop();
                heap.push(Reverse(taken));
            }
        }
    }

    /// Regression: klippy advances its `next_move_time` by `+ accel_t + cruise_t + decel_t`,
    /// left to right. Adding the move's total time instead rounds differently now and then, so
    /// trapq times (and with them every step) drifted from Klipper's in the last bits — enough
    /// to move an extruder step at a pressure-advance reversal by tens of microseconds.
    #[test]
    fn moves_follow_each_other_as_klippy_adds_their_times() {
        let mut th = Toolhead::new(300.0, 3000.0, 0.5, 5.0, KinLimits::None);
        th.record = Some(Vec::new());
        for i in 1..=300_u32 {
            let k = f64::from(i);
            let x = (k * 13.7) % 97.3;
            let y = (k * 7.9) % 61.1;
            th.move_to([x, y, 0.0, 0.0], 40.0 + (k * 3.3) % 200.0, 0)
                .expect("move");
        }
        th.wait_moves().expect("flush");
        let moves = th.record.as_deref().unwrap_or_default();
        assert_eq!(moves.len(), 300);
        let mut total_t_differs = 0;
        for pair in moves.windows(2) {
            let (m, next) = (&pair[0], &pair[1]);
            let klippy = m.print_time + m.t[0] + m.t[1] + m.t[2];
            assert_eq!(next.print_time.to_bits(), klippy.to_bits());
            if m.print_time + (m.t[0] + m.t[1] + m.t[2]) != klippy {
                total_t_differs += 1;
            }
        }
        // The grouping matters on this input.
        assert!(total_t_differs > 0);
    }

    /// Case j's opening as one batch read: a long move, then one whose addition flushes the
    /// first (print time still under a second, so the move yields to the reactor and the flush
    /// timer runs there), then enough motion to queue 15 s more, and M400.
    fn j_like_read(th: &mut Toolhead) {
        th.batch_chunk_read(&[b'\n'; 34]);
        th.commanded_pos = [20.0, 20.0, 1.0, 0.0];
        th.move_to([120.0, 20.0, 1.0, 0.0], 200.0, 0).expect("move");
        th.move_to([120.0, 120.0, 1.0, 0.0], 100.0, 0)
            .expect("move");
        for i in 0..30 {
            let x = if i % 2 == 0 { 20.0 } else { 120.0 };
            th.move_to([x, 120.0, 1.0, 0.0], 100.0, 0).expect("move");
        }
        th.wait_moves().expect("M400");
    }

    /// Regression (oracle case j): after a read whose G-code yielded to the reactor, klippy's
    /// reactor reads on (here: the end of the input) before it runs the background flush timer
    /// again. Running the flush there generated steps in 0.25 s batches that Klipper generates
    /// in one piece at exit, and moved every later X, Y and E step by up to 25 µs.
    #[test]
    fn no_background_flush_right_after_a_read_that_yielded() {
        let mut th = Toolhead::new(500.0, 3000.0, 0.4, 8.0, KinLimits::None);
        j_like_read(&mut th);
        let after_yield = th.last_step_gen_time();
        assert!(after_yield > 1.0 && after_yield < 1.1, "{after_yield}");
        assert!(th.flush_timer_due(), "new motion kicked the flush timer");
        assert!(th.need_flush_time() > 15.0);
        assert!(!th.batch_chunk_done().expect("flush"));
        assert_eq!(th.last_step_gen_time(), after_yield);
    }

    /// The same read without the yield (the flush timer does not run inside it): the reactor
    /// runs the timer right after the read, which generates steps in batches.
    #[test]
    fn background_flush_right_after_a_read_that_did_not_yield() {
        let mut th = Toolhead::new(500.0, 3000.0, 0.4, 8.0, KinLimits::None);
        th.batch_chunk_read(&[b'\n'; 2]);
        th.commanded_pos = [20.0, 20.0, 1.0, 0.0];
        for i in 0..30 {
            let x = if i % 2 == 0 { 120.0 } else { 20.0 };
            th.move_to([x, 20.0, 1.0, 0.0], 100.0, 0).expect("move");
        }
        th.wait_moves().expect("M400");
        assert_eq!(th.last_step_gen_time(), 0.0);
        assert!(th.batch_chunk_done().expect("flush"));
        assert!(th.last_step_gen_time() > 10.0);
    }
}
