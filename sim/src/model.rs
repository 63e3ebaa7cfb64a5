//! The MCU's objects, command handlers and timers: a Klipper MCU without the link layer.
//!
//! Objects live in the oid table that `allocate_oids` creates and the `config_*` commands fill:
//! steppers, endstops, trsyncs, digital outputs and analog inputs. Handlers are looked up by
//! message *name* and read parameters by *name*, so the model runs with whatever dictionary
//! decoded the stream (an optional parameter such as `bytes_per_report` selects between Klipper's
//! formats). Errors are Klipper's shutdown messages ("Invalid oid type", "Can't assign oid", …);
//! the first one shuts the model down as the firmware does (steppers stop, outputs go to their
//! default, trsyncs disarm, analog inputs keep sampling without range checks), and later
//! commands are refused until `clear_shutdown`.
//!
//! Time is the 64-bit MCU clock, given as an argument: [`Mcu::advance`] runs the timers due by a
//! clock (endstop sampling, trsync reports and timeouts, digital-out loads and `max_duration`
//! deadlines, analog sampling; see [`crate::sched`]) with the steppers walked to each timer's
//! clock and the [`World`] run alongside, and [`Mcu::handle`] runs a command at the clock
//! reached. Clocks on the wire are 32-bit and widened against that clock. What the MCU sends
//! back queues up as [`Response`]s for the front to encode.
//!
//! Klipper's timing faults, in [`Mode::Live`]:
//! - "Timer too close": a command arms a timer (a stepper's first step from idle, an
//!   `endstop_home`, `trsync_start`/`trsync_set_timeout`, `queue_digital_out`,
//!   `query_analog_in`) at a clock already past by more than 1 ms. The firmware has no such
//!   slack; the sim allows it because its fronts handle input up to 1 ms after it arrived.
//! - "Stepper too far in past" (see [`crate::stepper`]).
//! - "Move queue overflow": `queue_step` and `queue_digital_out` each take a slot of the
//!   MCU-wide move queue (`move_count` slots from `finalize_config`) until the entry is loaded.
//! - "Missed scheduling of next digital out event" and "Scheduled digital out event will exceed
//!   max_duration": an output away from its default (or pulsing) must get its next update within
//!   `max_duration` (src/gpiocmds.c).
//!
//! [`Mode::Replay`] plays a recording, which has no arrival times and no host to answer: it does
//! not check arrival-dependent timing ("Timer too close", "Stepper too far in past", move queue
//! overflow), walks each move as soon as it is queued, and never arms endstop sampling, trsync
//! reports or timeouts, or analog sampling (see [`crate::replay`]).

use gantry_proto::{MessageFormat, Value};

use crate::objects::{AnalogIn, DigitalOut, Endstop, Trsync};
use crate::sched::{TimerId, TimerKind, Timers, clock32, extend};
use crate::stepper::{Queued, Stepper, StepperFault};
use crate::world::World;

/// Why the model stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// A firmware shutdown, with Klipper's message.
    Shutdown(&'static str),
    /// A command this model does not simulate; named so the gap is visible (the MCU reports
    /// "Invalid command").
    Unsupported(String),
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Shutdown(why) => write!(f, "shutdown: {why}"),
            Fault::Unsupported(what) => write!(f, "not simulated: {what}"),
        }
    }
}

impl From<StepperFault> for Fault {
    fn from(f: StepperFault) -> Self {
        Fault::Shutdown(f.0)
    }
}

/// One object in the oid table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Object {
    /// Allocated, not configured yet.
    Free,
    /// A stepper.
    Stepper(Stepper),
    /// An endstop.
    Endstop(Endstop),
    /// A trigger synchroniser.
    Trsync(Trsync),
    /// A digital or software-PWM output.
    DigitalOut(DigitalOut),
    /// An analog input.
    AnalogIn(AnalogIn),
}

/// How the model is driven.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Behind a link, answering a host, with every timing rule.
    Live,
    /// Playing a recorded stream (see the module documentation).
    Replay,
}

/// The MCU's build constants and how it is driven.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct McuConfig {
    /// Live or replay.
    pub mode: Mode,
    /// Ticks per second.
    pub clock_freq: f64,
    /// Move-queue slots after `finalize_config`.
    pub move_count: u16,
    /// The ADC's full scale (`ADC_MAX`).
    pub adc_max: u16,
}

impl McuConfig {
    /// The `gantry-sim` board, live.
    pub fn sim() -> Self {
        Self {
            mode: Mode::Live,
            clock_freq: f64::from(crate::dictionary::CLOCK_FREQ),
            move_count: crate::dictionary::MOVE_COUNT,
            adc_max: crate::dictionary::ADC_MAX,
        }
    }

    /// A board with `clock_freq`, replaying a recording.
    pub fn replay(clock_freq: f64) -> Self {
        Self {
            mode: Mode::Replay,
            clock_freq,
            ..Self::sim()
        }
    }

    /// One millisecond in ticks: the slack of "Timer too close" and the limit of "Stepper too far
    /// in past".
    fn ms_ticks(&self) -> u64 {
        // A positive, finite frequency (from a dictionary) in ticks.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let t = (self.clock_freq / 1000.0) as u64;
        t
    }
}

/// A message the MCU sends by itself or in answer to a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// `trsync_state`.
    TrsyncState {
        /// The trsync.
        oid: u8,
        /// Still armed.
        can_trigger: bool,
        /// The first trigger's reason.
        trigger_reason: u8,
        /// The clock the report was made (0 in answer to `trsync_trigger`).
        clock: u32,
    },
    /// `endstop_state`.
    EndstopState {
        /// The endstop.
        oid: u8,
        /// Armed by `endstop_home`.
        homing: bool,
        /// After a hit: the first matching sample's clock plus `rest_ticks`.
        next_clock: u32,
        /// The pin's level now.
        pin_value: bool,
    },
    /// `stepper_position`.
    StepperPosition {
        /// The stepper.
        oid: u8,
        /// Steps with dir=1 minus steps with dir=0 (32-bit, as the MCU counts).
        pos: i32,
    },
    /// `analog_in_state`: one sum in the older format, a batch in the current one.
    AnalogInState {
        /// The analog input.
        oid: u8,
        /// The start of the next sampling cycle.
        next_clock: u32,
        /// The sums, oldest first.
        values: Vec<u16>,
    },
    /// `shutdown`.
    Shutdown {
        /// When.
        clock: u32,
        /// Klipper's message.
        reason: &'static str,
    },
}

/// The simulated MCU's state.
#[derive(Debug, Clone)]
pub struct Mcu {
    /// The oid table (empty until `allocate_oids`).
    pub objects: Vec<Object>,
    /// The config CRC once `finalize_config` ran.
    pub config_crc: Option<u32>,
    /// Set by the first fault, cleared by `clear_shutdown`.
    pub fault: Option<Fault>,
    /// The clock of the last shutdown.
    pub shutdown_clock: Option<u64>,
    /// The command whose handling faulted, as text with the clock it was handled at
    /// (`queue_digital_out oid=12 clock=… on_ticks=… @ clock 320748262`), for diagnosis.
    pub fault_command: Option<String>,
    /// Commands handled.
    pub commands: u64,
    config: McuConfig,
    timers: Timers,
    world: World,
    /// Free move-queue slots (not counted in replay).
    free_moves: u32,
    now: u64,
    /// Replay: the latest clock the stream has reached (the reference for widening clocks).
    latest: u64,
    shutdown_reason: Option<&'static str>,
    responses: Vec<Response>,
}

struct Args<'a> {
    msg: &'a MessageFormat,
    values: &'a [Value],
}

impl Args<'_> {
    fn int_opt(&self, name: &str) -> Option<i64> {
        self.msg
            .params
            .iter()
            .zip(self.values)
            .find(|(p, _)| p.name == name)
            .and_then(|(_, v)| match v {
                Value::Int(i) => Some(*i),
                Value::Bytes(_) => None,
            })
    }

    fn int(&self, name: &str) -> Result<i64, Fault> {
        self.int_opt(name).ok_or_else(|| {
            Fault::Unsupported(format!("'{}' without integer {name}", self.msg.format))
        })
    }

    fn oid(&self, name: &str) -> Result<usize, Fault> {
        usize::try_from(self.int(name)?).map_err(|_| Fault::Shutdown("Invalid oid type"))
    }

    // Wire integers are at most 32 bits; narrower types keep their low bits as the firmware's
    // C conversions do.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    fn u32(&self, name: &str) -> Result<u32, Fault> {
        Ok(self.int(name)? as u32)
    }

    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    fn u16(&self, name: &str) -> Result<u16, Fault> {
        Ok(self.int(name)? as u16)
    }

    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    fn u8(&self, name: &str) -> Result<u8, Fault> {
        Ok(self.int(name)? as u8)
    }

    fn flag(&self, name: &str) -> Result<bool, Fault> {
        Ok(self.int(name)? != 0)
    }
}

/// Oids are bytes on the wire, and the table never has more than 256 entries.
#[allow(clippy::cast_possible_truncation)]
fn oid8(oid: usize) -> u8 {
    oid as u8
}

impl Mcu {
    /// A freshly reset MCU wired to `world`.
    pub fn new(config: McuConfig, world: World) -> Self {
        Self {
            objects: Vec::new(),
            config_crc: None,
            fault: None,
            shutdown_clock: None,
            fault_command: None,
            commands: 0,
            config,
            timers: Timers::new(),
            world,
            free_moves: 0,
            now: 0,
            latest: 0,
            shutdown_reason: None,
            responses: Vec::with_capacity(16),
        }
    }

    /// A replaying MCU at `clock_freq` with an empty world.
    pub fn replay(clock_freq: f64) -> Self {
        Self::new(McuConfig::replay(clock_freq), World::empty(clock_freq))
    }

    /// The build constants and mode.
    pub fn config(&self) -> &McuConfig {
        &self.config
    }

    /// The clock the model has run to.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// The world around the MCU.
    pub fn world(&self) -> &World {
        &self.world
    }

    /// The world, to inject faults.
    pub fn world_mut(&mut self) -> &mut World {
        &mut self.world
    }

    /// `move_count` as `get_config` reports it: 0 until `finalize_config`.
    pub fn move_count(&self) -> u16 {
        if self.config_crc.is_some() {
            self.config.move_count
        } else {
            0
        }
    }

    /// Free move-queue slots.
    pub fn free_moves(&self) -> u32 {
        self.free_moves
    }

    /// The clock 32-bit wire clocks are widened against: now, or in a replay the latest clock
    /// the stream reached.
    pub fn reference_clock(&self) -> u64 {
        match self.config.mode {
            Mode::Live => self.now,
            Mode::Replay => self.latest.max(self.now),
        }
    }

    /// Whether the MCU is shut down.
    pub fn is_shutdown(&self) -> bool {
        self.fault.is_some()
    }

    /// Klipper's message for the current shutdown.
    pub fn shutdown_reason(&self) -> Option<&'static str> {
        self.shutdown_reason
    }

    /// Takes the responses queued since the last call, oldest first.
    pub fn take_responses(&mut self) -> std::vec::Drain<'_, Response> {
        self.responses.drain(..)
    }

    /// The steppers with their oids.
    pub fn steppers(&self) -> impl Iterator<Item = (usize, &Stepper)> {
        self.objects
            .iter()
            .enumerate()
            .filter_map(|(oid, o)| match o {
                Object::Stepper(s) => Some((oid, s)),
                _ => None,
            })
    }

    /// Handles one decoded command at the clock the model has reached. After a fault, commands
    /// are refused with that fault.
    ///
    /// # Errors
    /// The fault that shut the model down (also kept in [`Mcu::fault`]).
    pub fn handle(&mut self, msg: &MessageFormat, values: &[Value]) -> Result<(), Fault> {
        if let Some(f) = &self.fault {
            return Err(f.clone());
        }
        self.commands += 1;
        let result = self.dispatch(&Args { msg, values });
        if let Err(f) = &result {
            if self.fault.is_none() {
                self.fault_command = Some(format!(
                    "{} @ clock {}",
                    msg.format_values(values),
                    self.now
                ));
            }
            self.fail(f.clone());
        }
        result
    }

    /// Shuts the MCU down with Klipper's message `reason` (nothing happens if it already is).
    pub fn shutdown(&mut self, reason: &'static str) {
        self.fail(Fault::Shutdown(reason));
    }

    /// `clear_shutdown`: leaves the shutdown state; when not shut down, that is itself a
    /// shutdown, as in the firmware.
    pub fn clear_shutdown(&mut self) {
        if self.fault.is_none() {
            self.shutdown("Shutdown cleared when not shutdown");
        } else {
            self.fault = None;
            self.shutdown_reason = None;
            self.fault_command = None;
        }
    }

    /// `reset` (as on AVR, ARM and RP2040 boards; klippy's FIRMWARE_RESTART sends it): the board
    /// restarts. The configuration is gone and the MCU is not shut down;
    /// the physical world (carriage positions, temperatures) stays where it is. The clock keeps
    /// counting (hosts resynchronise after a reset either way).
    pub fn reset(&mut self) {
        if self.fault.is_none() {
            // A running board stops driving its outputs when it resets.
            self.on_shutdown();
        }
        self.forget_config();
    }

    fn forget_config(&mut self) {
        // The carriages stay where the steps took them: fold the step counts into their start.
        for i in 0..self.world.carriages.len() {
            let pin = self.world.carriages[i].step_pin;
            let steps = self.objects.iter().find_map(|o| match o {
                Object::Stepper(s) if s.step_pin == pin => Some(s.position),
                _ => None,
            });
            if let Some(steps) = steps {
                let carriage = &mut self.world.carriages[i];
                carriage.start_mm = carriage.position_mm(steps);
            }
        }
        self.objects.clear();
        self.config_crc = None;
        self.timers.clear();
        self.fault = None;
        self.shutdown_reason = None;
        self.fault_command = None;
        self.free_moves = 0;
    }

    /// Runs every timer due at or before `clock`, with the steppers and the world run to each
    /// timer's clock, and then everything to `clock`.
    pub fn advance(&mut self, clock: u64) {
        while let Some((due, id)) = self.timers.pop_due(clock) {
            // A timer armed within the "Timer too close" slack runs late, never early.
            let at = due.max(self.now);
            self.now = at;
            self.run_to(at);
            self.fire(id, due);
        }
        self.now = self.now.max(clock);
        self.run_to(self.now);
    }

    fn live(&self) -> bool {
        self.config.mode == Mode::Live
    }

    fn run_to(&mut self, clock: u64) {
        if self.live() {
            let limit = self.config.ms_ticks();
            let mut fault = None;
            for o in &mut self.objects {
                if let Object::Stepper(s) = o {
                    match s.advance(clock, limit) {
                        Ok(loaded) => self.free_moves += u32::try_from(loaded).unwrap_or(0),
                        Err(f) => fault = fault.or(Some(f.0)),
                    }
                }
            }
            if let Some(why) = fault {
                self.shutdown(why);
            }
        }
        self.world.advance(clock);
    }

    fn fail(&mut self, fault: Fault) {
        if self.fault.is_some() {
            return;
        }
        let reason = match &fault {
            Fault::Shutdown(why) => why,
            Fault::Unsupported(_) => "Invalid command",
        };
        self.fault = Some(fault);
        self.shutdown_reason = Some(reason);
        self.shutdown_clock = Some(self.now);
        self.on_shutdown();
        self.emit(Response::Shutdown {
            clock: clock32(self.now),
            reason,
        });
    }

    /// The firmware's shutdown handlers.
    fn on_shutdown(&mut self) {
        self.timers.clear();
        let live = self.live();
        for (oid, o) in self.objects.iter_mut().enumerate() {
            match o {
                Object::Stepper(s) => {
                    s.stop();
                }
                Object::DigitalOut(d) => {
                    d.queue.clear();
                    d.on = d.default_on;
                    d.toggling = false;
                    d.check_end = false;
                    self.world.set_output(d.pin, d.duty(), self.now);
                }
                Object::Trsync(t) => {
                    t.can_trigger = false;
                    t.steppers.clear();
                    t.trigger_reason = 0;
                    t.expire_reason = 0;
                }
                Object::AnalogIn(a) if live && a.sample_count > 0 => {
                    // Sampling goes on (no range checks once shut down) from the next cycle.
                    a.next_begin += u64::from(a.rest_ticks);
                    let id = TimerId {
                        oid: oid8(oid),
                        kind: TimerKind::AnalogIn,
                    };
                    self.timers.arm(id, a.cycle_end());
                }
                _ => {}
            }
        }
        self.free_moves = u32::from(self.move_count());
    }

    fn emit(&mut self, response: Response) {
        if self.live() {
            self.responses.push(response);
        }
    }

    /// "Timer too close" when `clock` is already past (beyond the slack).
    fn check_timer(&self, clock: u64) -> Result<(), Fault> {
        if self.live() && clock + self.config.ms_ticks() < self.now {
            return Err(Fault::Shutdown("Timer too close"));
        }
        Ok(())
    }

    /// Widens a wire clock; in a replay, `note` moves the stream's latest clock forward.
    fn wire_clock(&mut self, clock: u32, note: bool) -> u64 {
        let c = extend(self.reference_clock(), clock);
        if note && !self.live() {
            self.latest = self.latest.max(c);
        }
        c
    }

    fn take_move_slot(&mut self) -> Result<(), Fault> {
        if self.live() {
            if self.free_moves == 0 {
                return Err(Fault::Shutdown("Move queue overflow"));
            }
            self.free_moves -= 1;
        }
        Ok(())
    }

    fn dispatch(&mut self, a: &Args<'_>) -> Result<(), Fault> {
        match a.msg.name.as_str() {
            "allocate_oids" => {
                if !self.objects.is_empty() {
                    return Err(Fault::Shutdown("oids already allocated"));
                }
                let count = usize::try_from(a.int("count")?).unwrap_or(0);
                self.objects = vec![Object::Free; count];
            }
            "finalize_config" => {
                if self.config_crc.is_some() {
                    return Err(Fault::Shutdown("Already finalized"));
                }
                self.config_crc = Some(a.u32("crc")?);
                self.free_moves = u32::from(self.config.move_count);
            }
            "config_stepper" => {
                let s = Stepper::new(
                    a.int("step_pin")?,
                    a.int("dir_pin")?,
                    a.int_opt("invert_step").unwrap_or(0),
                    a.int_opt("step_pulse_ticks").map_or(0, |t| {
                        // %u on the wire.
                        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                        let t = t as u32;
                        t
                    }),
                );
                self.assign(a.oid("oid")?, Object::Stepper(s))?;
            }
            "queue_step" => self.queue_step(a)?,
            "set_next_step_dir" => {
                let dir = a.flag("dir")?;
                self.stepper(a.oid("oid")?)?.set_next_dir(dir);
            }
            "reset_step_clock" => {
                let oid = a.oid("oid")?;
                self.stepper(oid)?;
                let clock = self.wire_clock(a.u32("clock")?, false);
                self.stepper(oid)?.reset_step_clock(clock)?;
            }
            "stepper_get_position" => {
                let oid = a.oid("oid")?;
                // The MCU's counter is 32 bits.
                #[allow(clippy::cast_possible_truncation)]
                let pos = self.stepper(oid)?.position as i32;
                self.emit(Response::StepperPosition {
                    oid: oid8(oid),
                    pos,
                });
            }
            "stepper_stop_on_trigger" => {
                let stepper = a.oid("oid")?;
                self.stepper(stepper)?;
                let trsync = a.oid("trsync_oid")?;
                self.trsync(trsync)?;
                let s8 = oid8(stepper);
                if self.live() {
                    if self
                        .objects
                        .iter()
                        .any(|o| matches!(o, Object::Trsync(t) if t.steppers.contains(&s8)))
                    {
                        return Err(Fault::Shutdown("Can't add signal that is already active"));
                    }
                } else {
                    // A recording lacks the host's `trsync_trigger` queries that release the
                    // stepper after homing; the newest registration wins.
                    for o in &mut self.objects {
                        if let Object::Trsync(t) = o {
                            t.steppers.retain(|&s| s != s8);
                        }
                    }
                }
                self.trsync(trsync)?.steppers.push(s8);
            }
            "config_endstop" => {
                let e = Endstop::new(a.int("pin")?, a.int_opt("pull_up").unwrap_or(0) != 0);
                self.assign(a.oid("oid")?, Object::Endstop(e))?;
            }
            "endstop_home" => self.endstop_home(a)?,
            "endstop_query_state" => {
                let oid = a.oid("oid")?;
                let e = self.endstop(oid)?;
                let (homing, next_clock) = (e.homing, clock32(e.next_wake));
                let pin_value = self.endstop_level(oid);
                self.emit(Response::EndstopState {
                    oid: oid8(oid),
                    homing,
                    next_clock,
                    pin_value,
                });
            }
            "config_trsync" => self.assign(a.oid("oid")?, Object::Trsync(Trsync::default()))?,
            "trsync_start" => self.trsync_start(a)?,
            "trsync_set_timeout" => {
                let oid = a.oid("oid")?;
                if self.trsync(oid)?.can_trigger {
                    let id = timer(oid, TimerKind::TrsyncExpire);
                    self.timers.cancel(id);
                    let clock = self.wire_clock(a.u32("clock")?, true);
                    if self.live() {
                        self.check_timer(clock)?;
                        self.timers.arm(id, clock);
                    }
                }
            }
            "trsync_trigger" => {
                let oid = a.oid("oid")?;
                self.trsync(oid)?;
                self.trigger(oid, a.u8("reason")?, false);
                self.timers.cancel(timer(oid, TimerKind::TrsyncReport));
                self.timers.cancel(timer(oid, TimerKind::TrsyncExpire));
                let t = self.trsync(oid)?;
                t.can_trigger = false;
                let trigger_reason = t.trigger_reason;
                self.emit(Response::TrsyncState {
                    oid: oid8(oid),
                    can_trigger: false,
                    trigger_reason,
                    clock: 0,
                });
            }
            "config_digital_out" => {
                let d = DigitalOut::new(
                    a.int("pin")?,
                    a.flag("value")?,
                    a.flag("default_value")?,
                    a.u32("max_duration")?,
                );
                let (pin, duty) = (d.pin, d.duty());
                self.assign(a.oid("oid")?, Object::DigitalOut(d))?;
                self.world.set_output(pin, duty, self.now);
            }
            "set_digital_out_pwm_cycle" => {
                let cycle = a.u32("cycle_ticks")?;
                let d = self.digital_out(a.oid("oid")?)?;
                if !d.queue.is_empty() {
                    return Err(Fault::Shutdown(
                        "Can not set soft pwm cycle ticks while updates pending",
                    ));
                }
                d.cycle_ticks = cycle;
            }
            "queue_digital_out" => self.queue_digital_out(a)?,
            "update_digital_out" => {
                let oid = a.oid("oid")?;
                let on = a.flag("value")?;
                let now = self.now;
                self.digital_out(oid)?;
                let id = timer(oid, TimerKind::DigitalOut);
                self.timers.cancel(id);
                let d = self.digital_out(oid)?;
                if !d.queue.is_empty() {
                    return Err(Fault::Shutdown(
                        "update_digital_out not valid with active queue",
                    ));
                }
                d.on = on;
                d.toggling = false;
                d.check_end = on != d.default_on && d.max_duration != 0;
                let deadline = d.check_end.then(|| now + u64::from(d.max_duration));
                if let Some(end) = deadline {
                    d.end_time = end;
                }
                let (pin, duty) = (d.pin, d.duty());
                if let Some(end) = deadline {
                    self.timers.arm(id, end);
                }
                self.world.set_output(pin, duty, now);
            }
            "config_analog_in" => {
                let input = AnalogIn::new(a.int("pin")?);
                self.assign(a.oid("oid")?, Object::AnalogIn(input))?;
            }
            "query_analog_in" => self.query_analog_in(a)?,
            "emergency_stop" => return Err(Fault::Shutdown("Command request")),
            // Link-level queries change no state here; the live front answers them.
            "identify" | "get_config" | "get_clock" | "get_uptime" | "clear_shutdown" => {}
            other => return Err(Fault::Unsupported(other.to_owned())),
        }
        Ok(())
    }

    fn queue_step(&mut self, a: &Args<'_>) -> Result<(), Fault> {
        let oid = a.oid("oid")?;
        let (interval, count) = (a.u32("interval")?, a.u16("count")?);
        // %hi on the wire: the low 16 bits, signed.
        let add = a.u16("add")?.cast_signed();
        self.stepper(oid)?;
        self.take_move_slot()?;
        let (reference, live) = (self.reference_clock(), self.live());
        match self
            .stepper(oid)?
            .queue_step(interval, count, add, reference)?
        {
            Queued::Started { first_step_clock } => {
                self.free_moves += 1;
                if live {
                    self.check_timer(first_step_clock)?;
                } else {
                    let s = self.stepper(oid)?;
                    s.advance(u64::MAX, u64::MAX)?;
                    let last = s.last_step_clock64;
                    self.latest = self.latest.max(last);
                }
            }
            Queued::Waiting => {}
            Queued::Discarded => self.free_moves += 1,
        }
        Ok(())
    }

    fn endstop_home(&mut self, a: &Args<'_>) -> Result<(), Fault> {
        let oid = a.oid("oid")?;
        self.endstop(oid)?;
        let id = timer(oid, TimerKind::EndstopSample);
        self.timers.cancel(id);
        let sample_count = a.u8("sample_count")?;
        if sample_count == 0 {
            let e = self.endstop(oid)?;
            e.homing = false;
            e.pin_value = false;
            e.confirming = false;
            return Ok(());
        }
        let clock = self.wire_clock(a.u32("clock")?, true);
        let trsync_oid = a.oid("trsync_oid")?;
        self.trsync(trsync_oid)?;
        let e = self.endstop(oid)?;
        e.sample_ticks = a.u32("sample_ticks")?;
        e.sample_count = sample_count;
        e.rest_ticks = a.u32("rest_ticks")?;
        e.pin_value = a.flag("pin_value")?;
        e.trsync_oid = oid8(trsync_oid);
        e.trigger_reason = a.u8("trigger_reason")?;
        e.trigger_count = sample_count;
        e.homing = true;
        e.confirming = false;
        if self.live() {
            self.check_timer(clock)?;
            self.timers.arm(id, clock);
        }
        Ok(())
    }

    fn trsync_start(&mut self, a: &Args<'_>) -> Result<(), Fault> {
        let oid = a.oid("oid")?;
        self.trsync(oid)?;
        let report = timer(oid, TimerKind::TrsyncReport);
        self.timers.cancel(report);
        self.timers.cancel(timer(oid, TimerKind::TrsyncExpire));
        let report_ticks = a.u32("report_ticks")?;
        let report_clock = self.wire_clock(a.u32("report_clock")?, report_ticks != 0);
        let t = self.trsync(oid)?;
        t.steppers.clear();
        t.can_trigger = true;
        t.trigger_reason = 0;
        t.expire_reason = a.u8("expire_reason")?;
        t.report_ticks = report_ticks;
        if report_ticks != 0 && self.live() {
            self.check_timer(report_clock)?;
            self.timers.arm(report, report_clock);
        }
        Ok(())
    }

    fn queue_digital_out(&mut self, a: &Args<'_>) -> Result<(), Fault> {
        let oid = a.oid("oid")?;
        self.digital_out(oid)?;
        self.take_move_slot()?;
        let clock = self.wire_clock(a.u32("clock")?, true);
        let on_ticks = a.u32("on_ticks")?;
        let d = self.digital_out(oid)?;
        d.queue.push_back((clock, on_ticks));
        if d.queue.len() > 1 {
            return Ok(());
        }
        if d.check_end && d.end_time < clock {
            return Err(Fault::Shutdown(
                "Scheduled digital out event will exceed max_duration",
            ));
        }
        d.end_time = clock;
        d.check_end = true;
        self.check_timer(clock)?;
        self.timers.arm(timer(oid, TimerKind::DigitalOut), clock);
        Ok(())
    }

    fn query_analog_in(&mut self, a: &Args<'_>) -> Result<(), Fault> {
        let oid = a.oid("oid")?;
        self.analog_in(oid)?;
        let id = timer(oid, TimerKind::AnalogIn);
        self.timers.cancel(id);
        let sample_count = a.u8("sample_count")?;
        let clock = self.wire_clock(a.u32("clock")?, sample_count != 0);
        let bytes_per_report = match a.int_opt("bytes_per_report") {
            Some(_) => Some(a.u8("bytes_per_report")?),
            None => None,
        };
        let input = self.analog_in(oid)?;
        input.next_begin = clock;
        input.sample_ticks = a.u32("sample_ticks")?;
        input.sample_count = sample_count;
        input.rest_ticks = a.u32("rest_ticks")?;
        input.bytes_per_report = bytes_per_report;
        input.min_value = a.u16("min_value")?;
        input.max_value = a.u16("max_value")?;
        input.range_check_count = a.u8("range_check_count")?;
        input.pending.clear();
        if sample_count == 0 {
            return Ok(());
        }
        if bytes_per_report.is_some_and(|b| b > 48) {
            return Err(Fault::Shutdown("Invalid analog_in bytes_per_report"));
        }
        let end = input.cycle_end();
        if self.live() {
            self.check_timer(clock)?;
            self.timers.arm(id, end);
        }
        Ok(())
    }

    fn fire(&mut self, id: TimerId, due: u64) {
        let oid = usize::from(id.oid);
        match id.kind {
            TimerKind::EndstopSample => self.endstop_sample(oid, due),
            TimerKind::TrsyncReport => {
                let now = self.now;
                let Ok(t) = self.trsync(oid) else { return };
                let (can_trigger, trigger_reason, ticks) =
                    (t.can_trigger, t.trigger_reason, t.report_ticks);
                self.emit(Response::TrsyncState {
                    oid: id.oid,
                    can_trigger,
                    trigger_reason,
                    clock: clock32(now),
                });
                if ticks != 0 {
                    self.timers.arm(id, due + u64::from(ticks));
                }
            }
            TimerKind::TrsyncExpire => {
                let Ok(t) = self.trsync(oid) else { return };
                let reason = t.expire_reason;
                self.trigger(oid, reason, true);
            }
            TimerKind::DigitalOut => self.digital_load(oid, due),
            TimerKind::AnalogIn => self.analog_cycle(oid),
        }
    }

    /// Fires trsync `oid` with `reason` if it is armed: its steppers stop at once. `report`
    /// sends `trsync_state` now (a trigger from `trsync_trigger` answers by itself).
    fn trigger(&mut self, oid: usize, reason: u8, report: bool) {
        let Some(Object::Trsync(t)) = self.objects.get_mut(oid) else {
            return;
        };
        if !t.can_trigger {
            return;
        }
        t.can_trigger = false;
        t.trigger_reason = reason;
        let steppers = std::mem::take(&mut t.steppers);
        for s in steppers {
            if let Some(Object::Stepper(st)) = self.objects.get_mut(usize::from(s)) {
                self.free_moves += u32::try_from(st.stop()).unwrap_or(0);
            }
        }
        if report {
            self.emit(Response::TrsyncState {
                oid: oid8(oid),
                can_trigger: false,
                trigger_reason: reason,
                clock: clock32(self.now),
            });
        }
    }

    fn endstop_sample(&mut self, oid: usize, due: u64) {
        let level = self.endstop_level(oid);
        let id = timer(oid, TimerKind::EndstopSample);
        let Some(Object::Endstop(e)) = self.objects.get_mut(oid) else {
            return;
        };
        if !e.confirming {
            if level != e.pin_value {
                self.timers.arm(id, due + u64::from(e.rest_ticks));
                return;
            }
            e.next_wake = due + u64::from(e.rest_ticks);
            e.confirming = true;
            e.trigger_count = e.sample_count;
        }
        if level != e.pin_value {
            e.confirming = false;
            e.trigger_count = e.sample_count;
            self.timers.arm(id, e.next_wake);
            return;
        }
        e.trigger_count = e.trigger_count.saturating_sub(1);
        if e.trigger_count == 0 {
            let (trsync, reason) = (usize::from(e.trsync_oid), e.trigger_reason);
            self.trigger(trsync, reason, true);
        } else {
            self.timers.arm(id, due + u64::from(e.sample_ticks));
        }
    }

    /// The level of endstop `oid`'s pin now: from the world, or its pull-up when the world does
    /// not drive it.
    fn endstop_level(&self, oid: usize) -> bool {
        let Some(Object::Endstop(e)) = self.objects.get(oid) else {
            return false;
        };
        self.world
            .endstop_level(e.pin, |i| {
                let pin = self.world.carriages.get(i)?.step_pin;
                self.steppers()
                    .find(|(_, s)| s.step_pin == pin)
                    .map(|(_, s)| s.position)
            })
            .unwrap_or(e.pull_up)
    }

    fn digital_load(&mut self, oid: usize, due: u64) {
        let now = self.now;
        let id = timer(oid, TimerKind::DigitalOut);
        let Some(Object::DigitalOut(d)) = self.objects.get_mut(oid) else {
            return;
        };
        let Some((_, on_ticks)) = d.queue.pop_front() else {
            self.shutdown("Missed scheduling of next digital out event");
            return;
        };
        self.free_moves += 1;
        d.on = on_ticks != 0;
        d.on_ticks = on_ticks;
        d.toggling = d.on && on_ticks < d.cycle_ticks;
        let deadline = due + u64::from(d.max_duration);
        let mut check_end = d.max_duration != 0 && (d.toggling || d.on != d.default_on);
        let mut end = deadline;
        let mut exceeded = false;
        if let Some(&(next, _)) = d.queue.front() {
            exceeded = check_end && end < next;
            end = next;
            check_end = true;
        }
        d.check_end = check_end;
        d.end_time = end;
        let (pin, duty) = (d.pin, d.duty());
        self.world.set_output(pin, duty, now);
        if exceeded {
            self.shutdown("Scheduled digital out event will exceed max_duration");
        } else if check_end {
            self.timers.arm(id, end);
        }
    }

    fn analog_cycle(&mut self, oid: usize) {
        let live_checks = self.fault.is_none();
        let Some(Object::AnalogIn(input)) = self.objects.get(oid) else {
            return;
        };
        let fraction = self.world.adc_fraction(input.pin).unwrap_or(0.0);
        let adc_max = f64::from(self.config.adc_max);
        // A fraction of full scale, rounded to a conversion.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let sample = (fraction.clamp(0.0, 1.0) * adc_max).round() as u32;
        // The firmware sums into 16 bits.
        #[allow(clippy::cast_possible_truncation)]
        let value = (sample * u32::from(input.sample_count)) as u16;
        let Some(Object::AnalogIn(input)) = self.objects.get_mut(oid) else {
            return;
        };
        input.last_value = value;
        if live_checks {
            if (input.min_value..=input.max_value).contains(&value) {
                input.invalid_count = 0;
            } else {
                input.invalid_count = input.invalid_count.saturating_add(1);
                if input.invalid_count >= input.range_check_count {
                    input.invalid_count = 0;
                    self.shutdown("ADC out of range");
                    return;
                }
            }
        }
        input.next_begin += u64::from(input.rest_ticks);
        let next_clock = clock32(input.next_begin);
        let end = input.cycle_end();
        let report = match input.bytes_per_report {
            None => Some(vec![value]),
            Some(bytes) => {
                input.pending.push(value);
                (2 * (input.pending.len() + 1) > usize::from(bytes))
                    .then(|| std::mem::take(&mut input.pending))
            }
        };
        self.timers.arm(timer(oid, TimerKind::AnalogIn), end);
        if let Some(values) = report {
            self.emit(Response::AnalogInState {
                oid: oid8(oid),
                next_clock,
                values,
            });
        }
    }

    fn assign(&mut self, oid: usize, object: Object) -> Result<(), Fault> {
        let finalized = self.config_crc.is_some();
        match self.objects.get_mut(oid) {
            Some(slot @ Object::Free) if !finalized => {
                *slot = object;
                Ok(())
            }
            _ => Err(Fault::Shutdown("Can't assign oid")),
        }
    }

    fn stepper(&mut self, oid: usize) -> Result<&mut Stepper, Fault> {
        match self.objects.get_mut(oid) {
            Some(Object::Stepper(s)) => Ok(s),
            _ => Err(Fault::Shutdown("Invalid oid type")),
        }
    }

    fn endstop(&mut self, oid: usize) -> Result<&mut Endstop, Fault> {
        match self.objects.get_mut(oid) {
            Some(Object::Endstop(e)) => Ok(e),
            _ => Err(Fault::Shutdown("Invalid oid type")),
        }
    }

    fn trsync(&mut self, oid: usize) -> Result<&mut Trsync, Fault> {
        match self.objects.get_mut(oid) {
            Some(Object::Trsync(t)) => Ok(t),
            _ => Err(Fault::Shutdown("Invalid oid type")),
        }
    }

    fn digital_out(&mut self, oid: usize) -> Result<&mut DigitalOut, Fault> {
        match self.objects.get_mut(oid) {
            Some(Object::DigitalOut(d)) => Ok(d),
            _ => Err(Fault::Shutdown("Invalid oid type")),
        }
    }

    fn analog_in(&mut self, oid: usize) -> Result<&mut AnalogIn, Fault> {
        match self.objects.get_mut(oid) {
            Some(Object::AnalogIn(a)) => Ok(a),
            _ => Err(Fault::Shutdown("Invalid oid type")),
        }
    }
}

fn timer(oid: usize, kind: TimerKind) -> TimerId {
    TimerId {
        oid: oid8(oid),
        kind,
    }
}

#[cfg(test)]
#[path = "model_tests.rs"]
mod tests;
