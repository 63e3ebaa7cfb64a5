//! The printer driving real MCUs: klippy's reactor for one G-code stream, with time and the wire
//! passed in.
//!
//! Batch mode runs the planner as fast as it can; a live printer must wait for the MCU. klippy
//! does that with greenlets: a command that must wait (the toolhead buffer is full, a homing move
//! waits for its endstop, M109 waits for the temperature) pauses, and the reactor runs its timers
//! (the background step flush, the priming timer) and the MCU's responses meanwhile. Here the
//! waiting is [`Printer::reactor_pause`]: it asks the [`LiveHost`] for the time and the MCU's
//! messages, runs the timers and dispatches the responses (temperature reports, trsync states,
//! query answers) until the time comes. The host owns the ports and the clock synchronisation;
//! this module reads neither — a host on a virtual clock (tests, the simulation) drives it as a
//! serial port does.
//!
//! What runs live: the toolhead's buffering rules (`_check_pause`: at most
//! `BUFFER_TIME_HIGH` of motion queued ahead of the MCU; the priming timer; `wait_moves`),
//! motion_queuing's `_flush_handler` (steps generated 0.45–0.7 s ahead), and homing with the
//! MCU's endstops and trsync (homing.py's `HomingMove`, mcu.py's `MCU_endstop`/`MCU_trsync`: drip
//! moves, timeout extensions, the stepper positions read back, over-travel accounted).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{CommandError, Printer};
use crate::toolhead::{LIVE_BUFFER_TIME_HIGH, McuCommand, McuMessage, MoveError, QueueState};
use crate::trapq::Coord;

/// Klipper's PRIMING_CMD_TIME: the look-ahead is committed when input pauses this long, s.
const PRIMING_CMD_TIME: f64 = 0.100;
/// The least time ahead of the MCU's clock an output change is scheduled (Klipper's
/// PIN_MIN_TIME), s.
const PIN_MIN_TIME: f64 = 0.100;
/// How often a homing wait looks at its trsyncs' reports, s.
const TRSYNC_KEEPALIVE_CHECK_S: f64 = 0.025;
/// How many report periods after the last report the host still extends a trsync, s.
const TRSYNC_KEEPALIVE_REPORTS: u64 = 4;
/// How often the reactor offers the heaters a keepalive (see `Heater::keepalive`), s.
const HEATER_KEEPALIVE_CHECK_S: f64 = 0.1;
/// A drip move's steps are sent no more than this ahead of the MCU, s (Klipper's DRIP_TIME).
const DRIP_TIME: f64 = 0.100;
/// How long an MCU query may take before the printer gives up, s.
const QUERY_TIMEOUT: f64 = 5.0;
/// How often a query is asked again without an answer, and the first delay (doubling).
const QUERY_RETRIES: u32 = 5;
const QUERY_RETRY_DELAY: f64 = 0.050;
/// trsync's reasons (mcu.py).
const REASON_ENDSTOP_HIT: i64 = 1;
const REASON_HOST_REQUEST: i64 = 2;
const REASON_PAST_END_TIME: i64 = 3;
const REASON_COMMS_TIMEOUT: i64 = 4;
/// Responses kept for queries that have not asked yet.
const RESPONSES_KEPT: usize = 64;

/// What a live printer needs from its host: the time, the MCUs' clocks and the wire.
pub trait LiveHost: Send {
    /// The host's monotonic time, s.
    fn monotonic(&mut self) -> f64;
    /// The main MCU's print time at host time `eventtime` (clock estimate / CLOCK_FREQ).
    fn estimated_print_time(&mut self, eventtime: f64) -> f64;
    /// A 32-bit clock from MCU `mcu` (as in its reports) widened to 64 bits.
    fn clock32_to_clock64(&mut self, mcu: usize, clock32: u32) -> u64;
    /// Queues messages for MCU `mcu`, to be sent by their `min_clock`/`req_clock` rules.
    fn transmit(&mut self, mcu: usize, messages: Vec<McuMessage>);
    /// Waits until host time `until` or until something arrives, whichever is first.
    fn wait(&mut self, until: f64) -> Option<LiveEvent>;
    /// MCU `mcu`'s print time → clock line at host time `eventtime` with the toolhead at
    /// `print_time` (klippy's `calibrate_clock`), as `(time offset s, ticks per print-time
    /// second)`; `None` where the conversion is fixed (the primary MCU: `(0, CLOCK_FREQ)`).
    /// The printer asks for every secondary MCU when it goes live and then every
    /// [`CLOCK_CALIBRATE_PERIOD_S`].
    fn calibrate_clock(
        &mut self,
        mcu: usize,
        print_time: f64,
        eventtime: f64,
    ) -> Option<(f64, f64)> {
        let _ = (mcu, print_time, eventtime);
        None
    }
}

/// How often a live printer re-aims its secondary MCUs' clock conversions, s (klippy's stats
/// timer, which runs `check_active` → `calibrate_clock`).
pub const CLOCK_CALIBRATE_PERIOD_S: f64 = 1.0;

/// What arrives from the MCUs.
#[derive(Clone, Debug, PartialEq)]
pub enum LiveEvent {
    /// A response (not the clock sync's own).
    Response {
        /// Index of the MCU.
        mcu: usize,
        /// The response's name (`analog_in_state`).
        name: String,
        /// Its integer parameters by name.
        params: Vec<(String, i64)>,
        /// Its byte-string parameter, if it has one (`analog_in_state`'s `values`).
        data: Vec<u8>,
        /// Host time it arrived, s.
        receive_time: f64,
    },
    /// The MCU shut down (or says it is), with Klipper's message.
    Shutdown {
        /// Index of the MCU.
        mcu: usize,
        /// Klipper's message ("Timer too close").
        reason: String,
    },
    /// The connection is gone (unplugged, lost).
    Disconnected {
        /// Index of the MCU.
        mcu: usize,
        /// Why.
        why: String,
    },
}

impl LiveEvent {
    fn param(params: &[(String, i64)], name: &str) -> i64 {
        params
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |&(_, v)| v)
    }
}

/// A response kept for a query: (MCU index, name, parameters, host time it arrived).
type KeptResponse = (usize, String, Vec<(String, i64)>, f64);

/// A homing move's trsync as the host follows it (Klipper's trdispatch.c): one per MCU of an
/// endstop's homing — the endstop's first, then its steppers' other MCUs, all in one `group`.
#[derive(Clone, Debug)]
struct Trsync {
    mcu: usize,
    oid: u8,
    /// The endstop (rail index) whose homing this trsync serves.
    group: usize,
    /// Whether the group has trsyncs on several MCUs (the host relays the trigger, reports
    /// extend every member's timeout together, and the timeout is [`super::TRSYNC_TIMEOUT`]).
    multi: bool,
    /// Set once the MCU reported it can no longer trigger: the reason.
    done: Option<i64>,
    expire_clock: u64,
    expire_ticks: u64,
    min_extend_ticks: u64,
    /// The MCU's report period, ticks.
    report_ticks: u64,
    /// The clock of the last `trsync_state` report (the start clock before the first).
    last_report_clock: u64,
    /// End of the homing move: past it the host triggers the trsync itself.
    home_end_clock: Option<u64>,
}

impl Trsync {
    /// Moves the timeout to `expire` when that extends it by at least `min_extend_ticks`:
    /// the `trsync_set_timeout` to send at once (klippy asks for it by the expiry, so the
    /// session would hold it until 100 ms before, which a retransmission or two can miss; an
    /// extension sent early is harmless).
    fn extend_to(&mut self, expire: u64) -> Option<(usize, McuMessage)> {
        if expire < self.expire_clock + self.min_extend_ticks {
            return None;
        }
        self.expire_clock = expire;
        Some((
            self.mcu,
            McuMessage {
                req_clock: 0,
                min_clock: 0,
                command: McuCommand::Text(format!(
                    "trsync_set_timeout oid={} clock={expire}",
                    self.oid
                )),
            },
        ))
    }
}

/// The reactor state of a live printer.
pub(super) struct LiveState {
    host: Box<dyn LiveHost>,
    /// When the background flush runs next (host time); `None`: idle until kicked.
    flush_wake: Option<f64>,
    /// When the priming timer fires (host time).
    priming_wake: Option<f64>,
    /// A drip move is stepping: the background flush is off.
    drip_active: bool,
    /// Responses not consumed by a handler, for queries (newest last).
    responses: VecDeque<KeptResponse>,
    /// The homing move's trsyncs.
    trsyncs: Vec<Trsync>,
    /// Set when an MCU shut down or the connection broke: the printer is halted.
    halted: Option<String>,
    /// Responses to MCU messages that arrived for nobody (counted, for diagnostics).
    pub(super) unhandled: u64,
    /// Raised by another thread for an emergency stop.
    emergency: Arc<AtomicBool>,
    /// When the secondary MCUs' clock conversions are re-aimed next (host time); `None` with
    /// one MCU.
    calibrate_wake: Option<f64>,
    /// Called from the reactor every period (see [`Printer::set_live_observer`]).
    observer: Option<Observer>,
    /// Gets every response as it is made (see [`Printer::set_response_sink`]).
    pub(super) response_sink: Option<ResponseSink>,
}

/// A function the reactor calls with the printer and the host time.
pub type ObserverFn = Box<dyn FnMut(&Printer, f64) + Send>;
/// A function that gets each response as it is made.
pub type ResponseSink = Box<dyn FnMut(&super::Response) + Send>;

struct Observer {
    period_s: f64,
    next: f64,
    f: ObserverFn,
}

impl std::fmt::Debug for LiveState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveState")
            .field("flush_wake", &self.flush_wake)
            .field("priming_wake", &self.priming_wake)
            .field("halted", &self.halted)
            .finish_non_exhaustive()
    }
}

/// A stepper's positions around a homing move (homing.py's `StepperPosition`).
struct StepperPosition {
    stepper: usize,
    trig_pos: i64,
    halt_pos: i64,
}

impl Printer {
    /// Turns this printer into a live one driven through `host` (after the MCUs were
    /// configured): the toolhead may pause, step messages use `move_count` slots of each MCU's
    /// move queue (from its `get_config` answer), and commands run in real time.
    pub fn start_live(&mut self, host: Box<dyn LiveHost>, move_counts: &[usize]) {
        self.toolhead.can_pause = true;
        for (mi, &count) in move_counts.iter().enumerate() {
            if let (Some(mcu), Some(q)) = (self.mcus.get(mi), self.toolhead.mcus.get_mut(mi)) {
                q.set_move_count(count.saturating_sub(mcu.reserved_move_slots));
            }
        }
        let mut live = Box::new(LiveState {
            host,
            flush_wake: None,
            priming_wake: None,
            drip_active: false,
            responses: VecDeque::new(),
            trsyncs: Vec::new(),
            halted: None,
            unhandled: 0,
            emergency: Arc::new(AtomicBool::new(false)),
            calibrate_wake: None,
            observer: None,
            response_sink: None,
        });
        let now = live.host.monotonic();
        let est = live.host.estimated_print_time(now);
        self.live = Some(live);
        self.toolhead.set_est_print_time(est);
        self.calibrate_secondary_clocks(now);
        self.queue_live_startup(est);
        // klippy sends the start-up commands as soon as it built them (mcu.py's
        // `_send_config`): their clocks are a few hundred milliseconds ahead, so they must not
        // wait for the first command's transmission.
        let _ = self.live_transmit();
    }

    /// The start-up commands (klippy's `is_init` config commands, sent after every connect)
    /// at live clocks: batch mode queued them for print time 0; a live MCU gets its analog
    /// queries at klippy's query slot (the whole print second 1.5 s ahead + oid · 10 ms) and
    /// its PWM start values 200 ms ahead (every later command of an output comes after them).
    fn queue_live_startup(&mut self, est: f64) {
        for mi in 0..self.mcus.len() {
            self.toolhead.mcus[mi].out.clear();
            let q = &self.toolhead.mcus[mi];
            let slot_base = q.print_time_to_clock((est + 1.5).trunc());
            let pwm_clock = q.print_time_to_clock(est + super::PWM_START_DELAY);
            let cmds: Vec<String> = self.mcus[mi]
                .startup_cmds
                .iter()
                .map(|cmd| {
                    let oid = command_oid(cmd);
                    if cmd.starts_with("query_analog_in ")
                        && let Some(q) = self
                            .heater_sensors
                            .iter()
                            .filter_map(|h| h.query.as_ref())
                            .find(|q| Some(q.oid) == oid)
                    {
                        return q.command_at(slot_base + q.slot_ticks);
                    }
                    if cmd.starts_with("queue_digital_out ") {
                        return cmd
                            .split(' ')
                            .map(|w| {
                                if w.starts_with("clock=") {
                                    format!("clock={pwm_clock}")
                                } else {
                                    w.to_owned()
                                }
                            })
                            .collect::<Vec<_>>()
                            .join(" ");
                    }
                    cmd.clone()
                })
                .collect();
            // Only the outputs given a start value here wait for it: an output without one
            // (a stepper's enable pin) has nothing queued before its first command, and a
            // `min_clock` at the start value's clock would hold that command back (measured: a
            // print's first stepper enable reached the MCU 50 ms before it was due, not 250).
            let started: Vec<u8> = cmds
                .iter()
                .filter(|c| c.starts_with("queue_digital_out "))
                .filter_map(|c| command_oid(c))
                .collect();
            for cmd in cmds {
                self.toolhead.send(mi, 0, 0, cmd);
            }
            for d in &mut self.digital_outs {
                if d.mcu == mi && started.contains(&d.oid) {
                    d.last_clock = d.last_clock.max(pwm_clock);
                }
            }
        }
    }

    /// Whether this printer drives MCUs live.
    pub fn is_live(&self) -> bool {
        self.live.is_some()
    }

    /// Why the printer halted (an MCU shut down or was lost), if it did.
    pub fn halted(&self) -> Option<&str> {
        self.live.as_ref().and_then(|l| l.halted.as_deref())
    }

    fn live_mut(&mut self) -> Result<&mut LiveState, MoveError> {
        self.live
            .as_deref_mut()
            .ok_or_else(|| MoveError::Halted("the printer is not live".into()))
    }

    fn now(&mut self) -> Result<f64, MoveError> {
        Ok(self.live_mut()?.host.monotonic())
    }

    fn est_print_time_at(&mut self, eventtime: f64) -> Result<f64, MoveError> {
        let est = self.live_mut()?.host.estimated_print_time(eventtime);
        self.toolhead.set_est_print_time(est);
        Ok(est)
    }

    /// Runs one G-code line live: the command (which may wait: homing, M109, M400), then
    /// klippy's `_check_pause` — if more than `BUFFER_TIME_HIGH` of motion is queued ahead of
    /// the MCU, wait until it is not.
    ///
    /// # Errors
    /// [`MoveError::Halted`] once an MCU shut down or was lost; internal step generation
    /// errors. Command errors become `!!` responses, as in klippy.
    pub fn live_run_line(&mut self, line: &str, line_no: u32) -> Result<(), MoveError> {
        if let Some(why) = self.halted() {
            return Err(MoveError::Halted(why.to_owned()));
        }
        let now = self.now()?;
        self.est_print_time_at(now)?;
        self.run_line(line, line_no)?;
        self.apply_enable_events();
        self.live_check_pause()
    }

    /// klippy's `_check_pause` after a command: re-arm the priming timer while moves wait in
    /// the look-ahead, then wait while the buffer is over `BUFFER_TIME_HIGH`.
    fn live_check_pause(&mut self) -> Result<(), MoveError> {
        let mut now = self.now()?;
        let mut est = self.est_print_time_at(now)?;
        if self.toolhead.state == QueueState::Priming && !self.toolhead.lookahead_is_empty() {
            let will_pause = self.toolhead.print_time - est - LIVE_BUFFER_TIME_HIGH;
            let wake = now + will_pause.max(0.0) + PRIMING_CMD_TIME;
            self.live_mut()?.priming_wake = Some(wake);
        }
        loop {
            let pause_time = self.toolhead.print_time - est - LIVE_BUFFER_TIME_HIGH;
            if pause_time <= 0.0 {
                break;
            }
            self.reactor_pause(now + pause_time.clamp(0.005, 1.0))?;
            now = self.now()?;
            est = self.est_print_time_at(now)?;
        }
        // Yield: run due timers and send what they produced.
        self.reactor_step(now)
    }

    /// Lets `seconds` of host time pass with the reactor running (an idle printer keeps its
    /// heaters and flushes going).
    ///
    /// # Errors
    /// As [`Printer::live_run_line`].
    pub fn live_idle(&mut self, seconds: f64) -> Result<(), MoveError> {
        let now = self.now()?;
        self.reactor_pause(now + seconds)
    }

    /// Waits until every heater is off on its MCU — the last PWM value sent is 0 and the MCU's
    /// clock has passed the time it takes effect (a temperature report must come first for the
    /// host to send it) — or until `timeout_s` of host time has passed. Returns whether every
    /// heater is off. The end of a print: once the host exits, nothing holds a heater but the
    /// MCU's `max_duration` cut-off.
    ///
    /// # Errors
    /// As [`Printer::live_run_line`].
    pub fn live_wait_heaters_off(&mut self, timeout_s: f64) -> Result<bool, MoveError> {
        // The estimate of the MCU's print time is good to well within this.
        const MARGIN_S: f64 = 0.050;
        let deadline = self.now()? + timeout_s;
        loop {
            let now = self.now()?;
            let est = self.est_print_time_at(now)?;
            let off = self
                .heaters
                .iter()
                .all(|h| h.off_from().is_some_and(|from| est >= from + MARGIN_S));
            if off {
                return Ok(true);
            }
            if now >= deadline {
                return Ok(false);
            }
            self.reactor_pause(now + 0.050)?;
        }
    }

    /// Waits until every queued move has run on the MCU (klippy's `wait_moves`: the end of a
    /// print, M400).
    ///
    /// # Errors
    /// As [`Printer::live_run_line`].
    pub fn live_wait_moves(&mut self) -> Result<(), MoveError> {
        self.toolhead.flush_lookahead_now()?;
        loop {
            let now = self.now()?;
            let est = self.est_print_time_at(now)?;
            if self.toolhead.state == QueueState::Main || self.toolhead.print_time >= est {
                self.reactor_pause(now + 0.100)?;
            } else {
                return Ok(());
            }
        }
    }

    /// Runs the reactor until host time `until`: timers, MCU events, transmission.
    ///
    /// # Errors
    /// [`MoveError::Halted`] when an MCU shut down or was lost meanwhile.
    pub(super) fn reactor_pause(&mut self, until: f64) -> Result<(), MoveError> {
        loop {
            let now = self.now()?;
            self.reactor_step(now)?;
            if now >= until {
                return Ok(());
            }
            self.reactor_wait(until)?;
        }
    }

    /// Waits for the next event or timer, at most until `until`, and handles what arrived.
    fn reactor_wait(&mut self, until: f64) -> Result<(), MoveError> {
        let has_heaters = !self.heaters.is_empty();
        let live = self.live_mut()?;
        let mut wake = until;
        if !live.drip_active
            && let Some(w) = live.flush_wake
        {
            wake = wake.min(w);
        }
        if let Some(w) = live.priming_wake {
            wake = wake.min(w);
        }
        if has_heaters {
            // The heaters' keepalive looks at the clock this often.
            wake = wake.min(live.host.monotonic() + HEATER_KEEPALIVE_CHECK_S);
        }
        if let Some(obs) = &live.observer {
            wake = wake.min(obs.next);
        }
        if let Some(w) = live.calibrate_wake {
            wake = wake.min(w);
        }
        if live.trsyncs.iter().any(|t| t.done.is_none()) {
            // And a homing move's trsync keepalive this often.
            wake = wake.min(live.host.monotonic() + TRSYNC_KEEPALIVE_CHECK_S);
        }
        if let Some(event) = live.host.wait(wake) {
            self.handle_live_event(event)?;
        }
        Ok(())
    }

    /// Runs the timers due at host time `now` and transmits what is queued.
    fn reactor_step(&mut self, now: f64) -> Result<(), MoveError> {
        if self.live_mut()?.emergency.swap(false, Ordering::Relaxed) {
            self.emergency_stop()?;
        }
        if let Some(why) = self.halted() {
            return Err(MoveError::Halted(why.to_owned()));
        }
        let est = self.est_print_time_at(now)?;
        let live = self.live_mut()?;
        let flush_due = !live.drip_active && live.flush_wake.is_some_and(|w| w <= now);
        let priming_due = live.priming_wake.is_some_and(|w| w <= now);
        if priming_due {
            live.priming_wake = None;
            self.toolhead.priming_timeout()?;
            self.apply_enable_events();
        }
        let drip_active = self.live_mut()?.drip_active;
        if !drip_active && (flush_due || self.toolhead.flush_timer_due()) {
            let next = self.toolhead.flush_handler_live(est)?;
            self.apply_enable_events();
            self.live_mut()?.flush_wake = next.map(|delay| now + delay);
        }
        if !self.live_mut()?.trsyncs.is_empty() {
            self.trsync_keepalive(now)?;
        }
        if self.live_mut()?.calibrate_wake.is_some_and(|w| w <= now) {
            self.calibrate_secondary_clocks(now);
        }
        for index in 0..self.heaters.len() {
            if let Some(c) = self.heaters[index].keepalive(now, est) {
                self.set_heater_pwm(index, c.print_time, c.value);
            }
        }
        let live = self.live_mut()?;
        if let Some(mut obs) = live.observer.take_if(|o| now >= o.next) {
            obs.next = now + obs.period_s;
            (obs.f)(self, now);
            self.live_mut()?.observer = Some(obs);
        }
        self.live_transmit()
    }

    /// Re-aims every secondary MCU's print time → clock line (klippy's `check_active` from its
    /// stats timer): its move queue's conversion and its steppers' step compression.
    fn calibrate_secondary_clocks(&mut self, now: f64) {
        let print_time = self.toolhead.print_time;
        let Some(live) = self.live.as_deref_mut() else {
            return;
        };
        let mut any = false;
        for mi in 1..self.toolhead.mcus.len() {
            let Some((offset, freq)) = live.host.calibrate_clock(mi, print_time, now) else {
                continue;
            };
            any = true;
            self.toolhead.mcus[mi].set_clock_conversion(offset, freq);
            for s in self.toolhead.steppers.iter_mut().filter(|s| s.mcu == mi) {
                s.sc.set_time(offset, freq);
            }
        }
        live.calibrate_wake = any.then_some(now + CLOCK_CALIBRATE_PERIOD_S);
    }

    /// Hands every MCU's queued messages to the host.
    fn live_transmit(&mut self) -> Result<(), MoveError> {
        for mi in 0..self.toolhead.mcus.len() {
            if self.toolhead.mcus[mi].out.is_empty() {
                continue;
            }
            let out = std::mem::take(&mut self.toolhead.mcus[mi].out);
            self.live_mut()?.host.transmit(mi, out);
        }
        Ok(())
    }

    /// Sends `text` to MCU `mcu` at once (no scheduling clocks).
    fn live_send_now(&mut self, mcu: usize, text: String) -> Result<(), MoveError> {
        self.live_transmit()?;
        let msg = McuMessage {
            req_clock: 0,
            min_clock: 0,
            command: McuCommand::Text(text),
        };
        self.live_mut()?.host.transmit(mcu, vec![msg]);
        Ok(())
    }

    fn handle_live_event(&mut self, event: LiveEvent) -> Result<(), MoveError> {
        match event {
            LiveEvent::Response {
                mcu,
                name,
                params,
                data,
                receive_time,
            } => {
                if name == "trsync_state" {
                    // Followed by the homing move, and kept for the final query's answer.
                    self.handle_trsync_state(mcu, &params)?;
                }
                if name == "analog_in_state"
                    && self.handle_analog_in_state(mcu, &params, &data, receive_time)?
                {
                    return Ok(());
                }
                let live = self.live_mut()?;
                if live.responses.len() >= RESPONSES_KEPT {
                    live.responses.pop_front();
                    live.unhandled += 1;
                }
                live.responses.push_back((mcu, name, params, receive_time));
            }
            LiveEvent::Shutdown { mcu, reason } => {
                let name = self.mcus.get(mcu).map_or("mcu", |m| m.name.as_str());
                let msg = format!("MCU '{name}' shutdown: {reason}");
                for h in &mut self.heaters {
                    h.shutdown();
                }
                self.stop_other_mcus(mcu);
                self.live_mut()?.halted.get_or_insert(msg);
            }
            LiveEvent::Disconnected { mcu, why } => {
                let name = self.mcus.get(mcu).map_or("mcu", |m| m.name.as_str());
                let msg = format!("Lost communication with MCU '{name}': {why}");
                self.stop_other_mcus(mcu);
                self.live_mut()?.halted.get_or_insert(msg);
            }
        }
        Ok(())
    }

    /// Sends a query and waits for its answer (klippy's `send_with_response`): the first
    /// `response` from MCU `mcu` whose `oid` matches, arriving after the query was sent.
    fn live_query(
        &mut self,
        mcu: usize,
        text: String,
        response: &str,
        oid: u8,
    ) -> Result<(Vec<(String, i64)>, f64), MoveError> {
        let matches = |r: &KeptResponse| {
            r.0 == mcu && r.1 == response && LiveEvent::param(&r.2, "oid") == i64::from(oid)
        };
        self.live_mut()?.responses.retain(|r| !matches(r));
        self.live_send_now(mcu, text.clone())?;
        let start = self.now()?;
        let deadline = start + QUERY_TIMEOUT;
        // serialhdl.py's send_with_response: asked again while no answer came, with a
        // doubling delay, QUERY_RETRIES times (these queries are all safe to repeat).
        let (mut retries, mut retry_delay) = (QUERY_RETRIES, QUERY_RETRY_DELAY);
        let mut retry_at = start + retry_delay;
        loop {
            let live = self.live_mut()?;
            if let Some(pos) = live.responses.iter().position(matches)
                && let Some((_, _, params, time)) = live.responses.remove(pos)
            {
                return Ok((params, time));
            }
            let now = self.now()?;
            if now >= deadline {
                return Err(MoveError::Halted(format!(
                    "Timeout on wait for '{response}' response to '{text}'"
                )));
            }
            if retries > 0 && now >= retry_at {
                retries -= 1;
                retry_delay *= 2.0;
                retry_at = now + retry_delay;
                self.live_send_now(mcu, text.clone())?;
            }
            self.reactor_step(now)?;
            let wake = if retries > 0 {
                retry_at.min(deadline)
            } else {
                deadline
            };
            self.reactor_wait(wake)?;
        }
    }

    // ---- heaters' temperature reports --------------------------------------------------

    /// An `analog_in_state` report: if it is a heater's sensor, the heater's control runs on it.
    /// Returns whether it was one.
    fn handle_analog_in_state(
        &mut self,
        mcu: usize,
        params: &[(String, i64)],
        data: &[u8],
        receive_time: f64,
    ) -> Result<bool, MoveError> {
        let oid = LiveEvent::param(params, "oid");
        let Some(index) = self
            .heater_sensors
            .iter()
            .position(|h| h.mcu == mcu && i64::from(h.oid) == oid)
        else {
            return Ok(false);
        };
        let Some(query) = self.heater_sensors[index].query.clone() else {
            return Ok(true);
        };
        let next_clock32 = LiveEvent::param(params, "next_clock");
        let next_clock = self
            .live_mut()?
            .host
            .clock32_to_clock64(mcu, (next_clock32 & 0xffff_ffff) as u32);
        // Current firmware sends the sums of the last reports as little-endian integers,
        // oldest first (`values=%*s`); older firmware one `value=%hu`.
        let mut samples: Vec<u16> = Vec::new();
        if params.iter().any(|(n, _)| n == "value") {
            let v = LiveEvent::param(params, "value");
            samples.push(u16::try_from(v.clamp(0, i64::from(u16::MAX))).unwrap_or(u16::MAX));
        } else {
            let width = query.bytes_per_report.unwrap_or(2).clamp(1, 2) as usize;
            samples.extend(data.chunks_exact(width).map(|c| {
                c.iter()
                    .rev()
                    .fold(0_u16, |acc, &b| (acc << 8) | u16::from(b))
            }));
        }
        // The heater takes the newest sample (adc_temperature.py's `adc_callback`): sample i
        // of n was taken at next_clock − (n − i) · rest_ticks.
        let Some(&value) = samples.last() else {
            return Ok(true);
        };
        let read_clock = next_clock.saturating_sub(query.rest_ticks);
        let q = &self.toolhead.mcus[mcu];
        let read_time = q.clock_to_print_time(read_clock);
        let temp = self.heater_sensors[index].temperature_of_report(value);
        self.heater_report(index, read_time, temp, receive_time)?;
        Ok(true)
    }

    /// A heater's temperature report (the sample's print time, the host time it arrived):
    /// the heater's control runs on it and its PWM is queued, and verify_heater checks it once
    /// a second (heaters.py's `temperature_callback`, verify_heater.py).
    fn heater_report(
        &mut self,
        index: usize,
        read_print_time: f64,
        temp: Option<f64>,
        receive_time: f64,
    ) -> Result<(), MoveError> {
        if let Some(t) = self.heater_temps.get_mut(index) {
            *t = temp;
        }
        let Some(heater) = self.heaters.get_mut(index) else {
            return Ok(());
        };
        // This thread is alive and handling reports: the heater may stay on.
        let _ = heater.stats(receive_time);
        let command =
            heater.temperature_update(receive_time, read_print_time, temp.unwrap_or(f64::NAN));
        let (current, target) = heater.get_temp(receive_time);
        if let Some(c) = command {
            // Klipper queues the value a report period after the sample. A report that arrived
            // late (a damaged block before it held the link up) would put that in the past:
            // the value goes out PIN_MIN_TIME ahead of the MCU's clock instead.
            let earliest = self.est_print_time_at(receive_time)? + PIN_MIN_TIME;
            self.set_heater_pwm(index, c.print_time.max(earliest), c.value);
        }
        let (check, next) = &mut self.heater_checks[index];
        if receive_time >= *next {
            match check.check(receive_time, current, target) {
                Ok(n) => *next = n,
                Err(msg) => return self.invoke_shutdown(msg),
            }
        }
        Ok(())
    }

    /// Queues heater `index`'s PWM value at `print_time` (MCU_pwm.set_pwm for a software-PWM
    /// output: on-ticks of the cycle).
    fn set_heater_pwm(&mut self, index: usize, print_time: f64, value: f64) {
        let (_, out, cycle_ticks) = self.heater_outputs[index];
        let d = &mut self.digital_outs[out];
        let v = if d.invert { 1.0 - value } else { value };
        let on_ticks = (v.clamp(0.0, 1.0) * cycle_ticks as f64 + 0.5) as u64;
        let clock = self.toolhead.mcus[d.mcu].print_time_to_clock(print_time);
        let (mcu, oid, min_clock) = (d.mcu, d.oid, d.last_clock);
        d.last_clock = clock;
        self.toolhead.send(
            mcu,
            clock,
            min_clock,
            format!("queue_digital_out oid={oid} clock={clock} on_ticks={on_ticks}"),
        );
    }

    /// Has `f` called from the reactor every `period_s` of host time with the printer and the
    /// time — also while a command waits (homing, M109, M400) — so a caller can publish the
    /// printer's status live. The caller's function must not block.
    ///
    /// # Errors
    /// [`MoveError::Halted`] when the printer is not live.
    pub fn set_live_observer(&mut self, period_s: f64, f: ObserverFn) -> Result<(), MoveError> {
        let now = self.now()?;
        self.live_mut()?.observer = Some(Observer {
            period_s,
            next: now,
            f,
        });
        Ok(())
    }

    /// Runs the observer now (a halted printer's reactor no longer does: this reports the
    /// halt). Does nothing without an observer or a live host.
    pub fn live_observe_now(&mut self) {
        let Ok(now) = self.now() else {
            return;
        };
        let Some(live) = self.live.as_mut() else {
            return;
        };
        if let Some(mut obs) = live.observer.take() {
            obs.next = now + obs.period_s;
            (obs.f)(self, now);
            if let Some(live) = self.live.as_mut() {
                live.observer = Some(obs);
            }
        }
    }

    /// Has `sink` get every response (`//` info, `!!` errors, M105 temperatures) as it is made,
    /// before the line that made it ends. A live printer with a sink keeps no copy in
    /// [`Printer::responses`]: a printer that runs for days must not grow.
    ///
    /// # Errors
    /// [`MoveError::Halted`] when the printer is not live.
    pub fn set_response_sink(&mut self, sink: ResponseSink) -> Result<(), MoveError> {
        self.live_mut()?.response_sink = Some(sink);
        Ok(())
    }

    /// The MCU's print time now, as the host estimates it (also kept for the status objects).
    ///
    /// # Errors
    /// [`MoveError::Halted`] when the printer is not live.
    pub fn live_estimated_print_time(&mut self) -> Result<f64, MoveError> {
        let now = self.now()?;
        self.est_print_time_at(now)
    }

    /// M112 (or the UI's emergency stop): klippy's `invoke_shutdown` with its message.
    ///
    /// # Errors
    /// [`MoveError::Halted`] when the printer is not live.
    pub fn emergency_stop(&mut self) -> Result<(), MoveError> {
        self.invoke_shutdown("Shutdown due to M112 command".into())
    }

    /// A flag another thread may raise to stop the printer at once (the UI's emergency stop
    /// while a command waits: homing, M109); the reactor checks it at every step.
    ///
    /// # Errors
    /// [`MoveError::Halted`] when the printer is not live.
    pub fn emergency_flag(&mut self) -> Result<Arc<AtomicBool>, MoveError> {
        Ok(Arc::clone(&self.live_mut()?.emergency))
    }

    /// When MCU `failed` shut down or was lost, the printer's other MCUs are told to stop too
    /// (klippy's shutdown of the whole printer): a toolboard's shutdown must not leave the
    /// mainboard's steppers and bed heater running. Once per halt.
    fn stop_other_mcus(&mut self, failed: usize) {
        if self.halted().is_some() {
            return;
        }
        for mi in (0..self.mcus.len()).filter(|&mi| mi != failed) {
            let _ = self.live_send_now(mi, "emergency_stop".into());
        }
    }

    /// klippy's `invoke_shutdown`: every MCU is told to stop (`emergency_stop`: heaters off,
    /// steppers stop) and the printer halts with `msg`.
    fn invoke_shutdown(&mut self, msg: String) -> Result<(), MoveError> {
        for h in &mut self.heaters {
            h.shutdown();
        }
        for mi in 0..self.mcus.len() {
            self.live_send_now(mi, "emergency_stop".into())?;
        }
        self.live_mut()?.halted.get_or_insert(msg);
        Ok(())
    }

    /// The temperatures as M105 reports them (`B:60.0 /60.0 T0:200.0 /200.0`).
    pub(super) fn temperature_line(&self, eventtime: f64) -> String {
        let mut parts: Vec<(String, f64, f64)> = self
            .heater_outputs
            .iter()
            .zip(&self.heaters)
            .filter_map(|((name, _, _), h)| {
                let id = match name.as_str() {
                    "heater_bed" => "B".to_owned(),
                    "extruder" => "T0".to_owned(),
                    n => format!("T{}", n.strip_prefix("extruder")?.parse::<u32>().ok()?),
                };
                let (cur, target) = h.get_temp(eventtime);
                Some((id, cur, target))
            })
            .collect();
        parts.sort_by(|a, b| a.0.cmp(&b.0));
        if parts.is_empty() {
            return "T:0".into();
        }
        parts
            .iter()
            .map(|(id, cur, target)| format!("{id}:{cur:.1} /{target:.1}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// M109/M190's wait (heaters.py `_wait_for_temperature`): until the heater settles at its
    /// target, reporting the temperatures once a second.
    pub(super) fn live_wait_for_heater(&mut self, index: usize) -> Result<(), MoveError> {
        loop {
            let now = self.now()?;
            if !self.heaters[index].is_busy(now) {
                return Ok(());
            }
            self.toolhead.get_last_move_time()?;
            let line = self.temperature_line(now);
            self.respond(format_args!("{line}"));
            self.reactor_pause(now + 1.0)?;
        }
    }

    /// TEMPERATURE_WAIT: until heater `index`'s temperature is within `minimum..=maximum`.
    pub(super) fn live_temperature_wait(
        &mut self,
        index: usize,
        minimum: f64,
        maximum: f64,
    ) -> Result<(), MoveError> {
        loop {
            let now = self.now()?;
            if self.heaters[index].temperature_wait_done(now, minimum, maximum) {
                return Ok(());
            }
            self.toolhead.get_last_move_time()?;
            let line = self.temperature_line(now);
            self.respond(format_args!("{line}"));
            self.reactor_pause(now + 1.0)?;
        }
    }

    /// Heater `heater`'s temperature and target as last reported, °C.
    pub fn heater_temperature(&self, heater: &str) -> Option<(f64, f64)> {
        let i = self
            .heater_outputs
            .iter()
            .position(|(n, _, _)| n == heater)?;
        let h = &self.heaters[i];
        Some((h.last_temp(), h.target()))
    }

    /// Every heater's (name, temperature °C, target °C, power 0–1), in config order — those
    /// whose sensor has reported (before that there is no temperature to give).
    pub fn heater_statuses(&self) -> Vec<(&str, f64, f64, f64)> {
        self.heater_outputs
            .iter()
            .zip(&self.heaters)
            .filter(|(_, h)| h.has_reading())
            .map(|((name, _, _), h)| (name.as_str(), h.last_temp(), h.target(), h.power()))
            .collect()
    }

    /// The live host's time now, s (its monotonic clock).
    ///
    /// # Errors
    /// [`MoveError::Halted`] when the printer is not live.
    pub fn host_time(&mut self) -> Result<f64, MoveError> {
        self.now()
    }

    // ---- homing ------------------------------------------------------------------------

    /// A homing move on a live printer (homing.py's `HomingMove.homing_move` with mcu.py's
    /// endstop and trsync): arm the endstops, drip the move out until they trigger, stop,
    /// read back where the steppers halted and set the toolhead there.
    pub(super) fn homing_move_live(
        &mut self,
        rails: &[usize],
        movepos: [f64; 4],
        speed: f64,
    ) -> Result<(), CommandError> {
        self.live_flush_step_generation()?;
        let mut positions: Vec<StepperPosition> = Vec::new();
        for &ri in rails {
            for &si in &self.rails[ri].steppers {
                positions.push(StepperPosition {
                    stepper: si,
                    trig_pos: 0,
                    halt_pos: 0,
                });
            }
        }
        let print_time = self.toolhead.get_last_move_time()?;
        // Arm every endstop (MCU_endstop.home_start with its TriggerDispatch): a trsync on the
        // endstop's MCU and on each other MCU its steppers are on.
        let mut armed = Vec::new();
        self.live_mut()?.trsyncs.clear();
        for &ri in rails {
            let rest_time = self.endstop_rest_time(ri, movepos, speed);
            let (mi, es_oid, trsync_oid) = self.rails[ri].endstop;
            let mut members = vec![(mi, trsync_oid)];
            members.extend(self.rails[ri].stepper_trsyncs.iter().copied());
            let multi = members.len() > 1;
            let timeout = if multi {
                super::TRSYNC_TIMEOUT
            } else {
                super::TRSYNC_SINGLE_MCU_TIMEOUT
            };
            let count = members.len();
            for (k, &(tmi, toid)) in members.iter().enumerate() {
                let q = &self.toolhead.mcus[tmi];
                let clock = q.print_time_to_clock(print_time);
                let expire_ticks = q.seconds_to_clock(timeout);
                let report_ticks = q.seconds_to_clock(timeout * 0.3);
                let expire_clock = clock + expire_ticks;
                let min_extend_ticks = (report_ticks as f64 * 0.8 + 0.5) as u64;
                #[allow(clippy::cast_precision_loss)]
                let report_offset = k as f64 / count as f64;
                let report_clock = clock + (report_ticks as f64 * report_offset + 0.5) as u64;
                self.live_mut()?.trsyncs.push(Trsync {
                    mcu: tmi,
                    oid: toid,
                    group: ri,
                    multi,
                    done: None,
                    expire_clock,
                    expire_ticks,
                    min_extend_ticks,
                    report_ticks,
                    last_report_clock: clock,
                    home_end_clock: None,
                });
                // One command queue per MCU in klippy: the same request clock keeps them in
                // order.
                self.send_trsync_arm(
                    ri,
                    (tmi, toid),
                    clock,
                    (report_clock, report_ticks),
                    expire_clock,
                    clock,
                );
            }
            let rest_ticks = self.send_endstop_home(ri, print_time, rest_time);
            armed.push((ri, mi, es_oid, trsync_oid, rest_ticks));
        }
        self.toolhead.dwell(super::HOMING_START_DELAY)?;
        // The drip move, stopped by the first trigger.
        let mut error = None;
        match self.live_drip_move([movepos[0], movepos[1], movepos[2]], speed) {
            Ok(()) => {}
            Err(MoveError::Halted(why)) => return Err(MoveError::Halted(why).into()),
            Err(e) => error = Some(format!("Error during homing move: {e}")),
        }
        self.apply_enable_events();
        let move_end = self.toolhead.get_last_move_time()?;
        // Wait for each endstop (MCU_endstop.home_wait).
        let mut trigger_times = Vec::new();
        for (ri, mi, es_oid, trsync_oid, rest_ticks) in armed {
            let name = self.rails[ri].name.clone();
            let end_clock = self.toolhead.mcus[mi].print_time_to_clock(move_end);
            match self.live_home_wait(ri, mi, es_oid, trsync_oid, rest_ticks, end_clock) {
                Ok(Some(t)) => trigger_times.push((ri, t)),
                Ok(None) => {
                    if error.is_none() {
                        let endstop = name.strip_prefix("stepper_").unwrap_or(&name);
                        error = Some(format!("No trigger on {endstop} after full movement"));
                    }
                }
                Err(MoveError::Halted(why)) => return Err(MoveError::Halted(why).into()),
                Err(e) => {
                    if error.is_none() {
                        error = Some(format!("Error during homing {name}: {e}"));
                    }
                }
            }
        }
        // Where the steppers halted versus where the endstop triggered.
        self.live_flush_step_generation()?;
        for sp in &mut positions {
            let ri = rails
                .iter()
                .copied()
                .find(|&ri| self.rails[ri].steppers.contains(&sp.stepper))
                .unwrap_or(rails[0]);
            let t = trigger_times
                .iter()
                .find(|(r, _)| *r == ri)
                .map_or(move_end, |&(_, t)| t);
            let s = &self.toolhead.steppers[sp.stepper];
            let clock = self.toolhead.mcus[s.mcu].print_time_to_clock(t);
            sp.trig_pos = s.sc.find_past_position(clock);
            sp.halt_pos = s.mcu_position();
        }
        let over_steps: Vec<(usize, i64)> = positions
            .iter()
            .map(|sp| (sp.stepper, sp.halt_pos - sp.trig_pos))
            .collect();
        let mut haltpos = movepos;
        if over_steps.iter().any(|&(_, d)| d != 0) {
            self.set_position(movepos, &[])?;
            haltpos = self.calc_toolhead_pos(&over_steps);
        }
        self.set_position(haltpos, &[])?;
        match error {
            Some(e) => Err(CommandError::User(e)),
            None => Ok(()),
        }
    }

    /// Arms trsync `toid` on MCU `tmi` for rail `ri`'s homing (`trsync_start` at `clock`,
    /// each of the rail's steppers on that MCU told to stop on it, `trsync_set_timeout` to
    /// `expire_clock`), for the batch and the live homing both. `stop_clock` is the request
    /// clock of the stop commands (0 in klippy's batch output, `clock` live).
    pub(super) fn send_trsync_arm(
        &mut self,
        ri: usize,
        (tmi, toid): (usize, u8),
        clock: u64,
        (report_clock, report_ticks): (u64, u64),
        expire_clock: u64,
        stop_clock: u64,
    ) {
        self.toolhead.send(
            tmi,
            clock,
            0,
            format!(
                "trsync_start oid={toid} report_clock={report_clock} report_ticks={report_ticks} expire_reason={REASON_COMMS_TIMEOUT}"
            ),
        );
        for &si in &self.rails[ri].steppers {
            let s = &self.toolhead.steppers[si];
            if s.mcu != tmi {
                continue;
            }
            let soid = s.oid;
            self.toolhead.send(
                tmi,
                stop_clock,
                0,
                format!("stepper_stop_on_trigger oid={soid} trsync_oid={toid}"),
            );
        }
        self.toolhead.send(
            tmi,
            clock,
            0,
            format!("trsync_set_timeout oid={toid} clock={expire_clock}"),
        );
    }

    /// Sends rail `ri`'s `endstop_home` at `print_time`, resting `rest_time` between sample
    /// runs; returns the rest in ticks.
    pub(super) fn send_endstop_home(&mut self, ri: usize, print_time: f64, rest_time: f64) -> u64 {
        let r = &self.rails[ri];
        let (mi, es_oid, trsync_oid) = r.endstop;
        let pin_value = u8::from(!r.endstop_invert);
        let q = &self.toolhead.mcus[mi];
        let clock = q.print_time_to_clock(print_time);
        let rest_ticks = q.print_time_to_clock(print_time + rest_time) - clock;
        let sample_ticks = q.seconds_to_clock(super::ENDSTOP_SAMPLE_TIME);
        let sample_count = super::ENDSTOP_SAMPLE_COUNT;
        self.toolhead.send(
            mi,
            clock,
            0,
            format!(
                "endstop_home oid={es_oid} clock={clock} sample_ticks={sample_ticks} sample_count={sample_count} rest_ticks={rest_ticks} pin_value={pin_value} trsync_oid={trsync_oid} trigger_reason={REASON_ENDSTOP_HIT}"
            ),
        );
        rest_ticks
    }

    /// The endstop sampling rest time of rail `ri` for a move to `movepos` (homing.py's
    /// `_calc_endstop_rate`: the move time per step of its fastest stepper).
    pub(super) fn endstop_rest_time(&self, ri: usize, movepos: [f64; 4], speed: f64) -> f64 {
        let startpos = self.toolhead.commanded_pos;
        let d: f64 = (0..3)
            .map(|i| (movepos[i] - startpos[i]).powi(2))
            .sum::<f64>()
            .sqrt();
        let move_t = d / speed;
        let max_steps = self.rails[ri]
            .steppers
            .iter()
            .map(|&si| {
                let s = &self.toolhead.steppers[si].solver;
                let a = s.position_from_coord(Coord::new(startpos[0], startpos[1], startpos[2]));
                let b = s.position_from_coord(Coord::new(movepos[0], movepos[1], movepos[2]));
                (a - b).abs() / s.step_dist()
            })
            .fold(0.0_f64, f64::max);
        if max_steps <= 0.0 {
            0.001
        } else {
            move_t / max_steps
        }
    }

    /// The toolhead position from the steppers' commanded positions moved by `offsets` steps
    /// (homing.py's `calc_toolhead_pos`, through the kinematics' `calc_position`).
    pub(super) fn calc_toolhead_pos(&self, offsets: &[(usize, i64)]) -> [f64; 4] {
        let spos = |si: usize| {
            let s = &self.toolhead.steppers[si].solver;
            let off = offsets
                .iter()
                .find(|&&(i, _)| i == si)
                .map_or(0, |&(_, d)| d);
            s.commanded_pos() + off as f64 * s.step_dist()
        };
        let mut pos = self.toolhead.commanded_pos;
        let first = |axis: usize| {
            self.rails
                .get(axis)
                .and_then(|r| r.steppers.first().copied())
        };
        match self.kinematics {
            super::KinematicsKind::Cartesian => {
                for (axis, p) in pos.iter_mut().enumerate().take(3) {
                    if let Some(si) = first(axis) {
                        *p = spos(si);
                    }
                }
            }
            super::KinematicsKind::CoreXY => {
                if let (Some(a), Some(b)) = (first(0), first(1)) {
                    let (a, b) = (spos(a), spos(b));
                    pos[0] = 0.5 * (a + b);
                    pos[1] = 0.5 * (a - b);
                }
                if let Some(z) = first(2) {
                    pos[2] = spos(z);
                }
            }
            super::KinematicsKind::Delta => {
                let mut spheres = Vec::new();
                let mut arm2 = Vec::new();
                for axis in 0..3 {
                    let Some(si) = first(axis) else { continue };
                    if let crate::itersolve::Kinematics::Delta {
                        arm2: a2,
                        tower_x,
                        tower_y,
                    } = self.toolhead.steppers[si].solver.kinematics()
                    {
                        spheres.push([*tower_x, *tower_y, spos(si)]);
                        arm2.push(*a2);
                    }
                }
                if spheres.len() == 3 {
                    let p = super::trilateration(&spheres, &arm2);
                    pos[..3].copy_from_slice(&p);
                }
            }
            super::KinematicsKind::None => {}
        }
        pos
    }

    /// klippy's `flush_step_generation` live: commit the look-ahead and generate every step.
    fn live_flush_step_generation(&mut self) -> Result<(), MoveError> {
        self.toolhead.flush_step_generation()?;
        self.apply_enable_events();
        self.live_transmit()
    }

    /// toolhead.drip_move + motion_queuing.drip_update_time, live: step the move out at most
    /// `DRIP_TIME` ahead of the MCU, 50 ms at a time, until it ends or an endstop triggers.
    fn live_drip_move(&mut self, newpos: [f64; 3], speed: f64) -> Result<(), MoveError> {
        let (start_time, end_time) = self.toolhead.drip_load(newpos, speed)?;
        // _await_flush_time(start_time): not too far ahead of the MCU.
        loop {
            let now = self.now()?;
            let est = self.est_print_time_at(now)?;
            let wait = start_time - 0.400 - est;
            if wait <= 0.0 {
                break;
            }
            self.reactor_pause(now + wait.min(1.0))?;
        }
        self.live_mut()?.drip_active = true;
        let result = self.live_drip_steps(start_time, end_time);
        self.live_mut()?.drip_active = false;
        let flush_time = result?;
        self.toolhead.drip_finish(flush_time)?;
        self.apply_enable_events();
        self.live_transmit()
    }

    fn live_drip_steps(&mut self, start_time: f64, end_time: f64) -> Result<f64, MoveError> {
        self.toolhead.drip_start(start_time)?;
        self.apply_enable_events();
        self.live_transmit()?;
        let mut flush_time = start_time;
        while flush_time < end_time {
            if self.trsync_triggered()? {
                break;
            }
            let now = self.now()?;
            let est = self.est_print_time_at(now)?;
            let wait = flush_time - est - DRIP_TIME;
            if wait > 0.0 {
                self.reactor_step(now)?;
                self.reactor_wait(now + wait)?;
                continue;
            }
            flush_time = (flush_time + crate::toolhead::DRIP_SEGMENT_TIME).min(end_time);
            self.toolhead.drip_segment(flush_time)?;
            self.apply_enable_events();
            self.live_transmit()?;
        }
        Ok(flush_time)
    }

    fn trsync_triggered(&mut self) -> Result<bool, MoveError> {
        Ok(self.live_mut()?.trsyncs.iter().any(|t| t.done.is_some()))
    }

    /// A `trsync_state` report: a trigger (or timeout) ends the homing move; otherwise the host
    /// extends the timeout, or triggers it itself once the move's end has passed.
    fn handle_trsync_state(
        &mut self,
        mcu: usize,
        params: &[(String, i64)],
    ) -> Result<(), MoveError> {
        let oid = LiveEvent::param(params, "oid");
        let can_trigger = LiveEvent::param(params, "can_trigger");
        let reason = LiveEvent::param(params, "trigger_reason");
        let clock32 = LiveEvent::param(params, "clock");
        let clock = self
            .live_mut()?
            .host
            .clock32_to_clock64(mcu, (clock32 & 0xffff_ffff) as u32);
        let live = self.live_mut()?;
        let Some(i) = live
            .trsyncs
            .iter()
            .position(|t| t.mcu == mcu && i64::from(t.oid) == oid)
        else {
            live.unhandled += 1;
            return Ok(());
        };
        if live.trsyncs[i].done.is_some() {
            return Ok(());
        }
        if can_trigger == 0 {
            live.trsyncs[i].done = Some(reason);
            // trdispatch: the first trsync of a group to stop stops the others at once.
            let group = live.trsyncs[i].group;
            let others: Vec<(usize, McuMessage)> = live
                .trsyncs
                .iter()
                .filter(|t| t.group == group && t.done.is_none())
                .map(|t| {
                    (
                        t.mcu,
                        McuMessage {
                            req_clock: 0,
                            min_clock: 0,
                            command: McuCommand::Text(format!(
                                "trsync_trigger oid={} reason={REASON_HOST_REQUEST}",
                                t.oid
                            )),
                        },
                    )
                })
                .collect();
            for (mcu, msg) in others {
                live.host.transmit(mcu, vec![msg]);
            }
            return Ok(());
        }
        if live.trsyncs[i].multi {
            live.trsyncs[i].last_report_clock = live.trsyncs[i].last_report_clock.max(clock);
            if let Some(end) = live.trsyncs[i].home_end_clock
                && clock >= end
            {
                live.trsyncs[i].home_end_clock = None;
                let text = format!(
                    "trsync_trigger oid={} reason={REASON_PAST_END_TIME}",
                    live.trsyncs[i].oid
                );
                return self.live_send_now(mcu, text);
            }
            let group = live.trsyncs[i].group;
            return self.extend_trsync_group(group);
        }
        let t = &mut live.trsyncs[i];
        t.last_report_clock = t.last_report_clock.max(clock);
        if let Some(end) = t.home_end_clock
            && clock >= end
        {
            t.home_end_clock = None;
            let text = format!("trsync_trigger oid={} reason={REASON_PAST_END_TIME}", t.oid);
            return self.live_send_now(mcu, text);
        }
        if let Some((mcu, msg)) = t.extend_to(clock + t.expire_ticks) {
            live.host.transmit(mcu, vec![msg]);
        }
        Ok(())
    }

    /// trdispatch's timeout extension for a group on several MCUs: every member's timeout runs
    /// from the oldest report heard from any member (in print time), so an MCU whose reports
    /// stop lets every member time out together.
    fn extend_trsync_group(&mut self, group: usize) -> Result<(), MoveError> {
        let Some(live) = self.live.as_deref_mut() else {
            return Ok(());
        };
        let queues = &self.toolhead.mcus;
        let oldest = live
            .trsyncs
            .iter()
            .filter(|t| t.group == group)
            .map(|t| queues[t.mcu].clock_to_print_time(t.last_report_clock))
            .fold(f64::INFINITY, f64::min);
        if !oldest.is_finite() {
            return Ok(());
        }
        let mut out = Vec::new();
        for t in live
            .trsyncs
            .iter_mut()
            .filter(|t| t.group == group && t.done.is_none())
        {
            let expire = queues[t.mcu].print_time_to_clock(oldest) + t.expire_ticks;
            out.extend(t.extend_to(expire));
        }
        for (mcu, msg) in out {
            live.host.transmit(mcu, vec![msg]);
        }
        Ok(())
    }

    /// Extends a homing trsync's timeout when its reports stopped coming for a little while
    /// (Gantry's addition). Klipper extends it only from each `trsync_state` report, so three
    /// lost reports in a row (a damaged link) end a homing move with "Communication timeout
    /// during homing" although host and MCU are fine. Here the host also extends it from its
    /// own estimate of the MCU's clock between reports (at most once a report period on top of
    /// the reports' own extensions, so either keeps the move alive) — but only for
    /// [`TRSYNC_KEEPALIVE_REPORTS`] report periods after the last report heard, so an MCU whose
    /// reports stopped for good still times out, a little later than in Klipper.
    fn trsync_keepalive(&mut self, now: f64) -> Result<(), MoveError> {
        let est = self.est_print_time_at(now)?;
        let clocks: Vec<u64> = self
            .toolhead
            .mcus
            .iter()
            .map(|q| q.print_time_to_clock(est))
            .collect();
        let live = self.live_mut()?;
        let mut out = Vec::new();
        // Groups on several MCUs are extended only from their reports (trdispatch), as in
        // Klipper: the host relays between them and must not keep one alive alone.
        for t in live
            .trsyncs
            .iter_mut()
            .filter(|t| t.done.is_none() && !t.multi)
        {
            let Some(&clock) = clocks.get(t.mcu) else {
                continue;
            };
            let since = clock.saturating_sub(t.last_report_clock);
            let overdue = since * 2 >= t.report_ticks;
            let stale = since > t.report_ticks * TRSYNC_KEEPALIVE_REPORTS;
            if overdue && !stale {
                out.extend(t.extend_to(clock + t.expire_ticks));
            }
        }
        for (mcu, msg) in out {
            live.host.transmit(mcu, vec![msg]);
        }
        Ok(())
    }

    /// MCU_endstop.home_wait: wait for the trigger (or the move's end), stop the endstop and
    /// the trsync, read the steppers back; the trigger's print time, or `None` when the move
    /// ended without one.
    fn live_home_wait(
        &mut self,
        ri: usize,
        mi: usize,
        es_oid: u8,
        trsync_oid: u8,
        rest_ticks: u64,
        end_clock: u64,
    ) -> Result<Option<f64>, MoveError> {
        if let Some(t) = self
            .live_mut()?
            .trsyncs
            .iter_mut()
            .find(|t| t.mcu == mi && t.oid == trsync_oid)
        {
            t.home_end_clock = Some(end_clock);
        }
        // Wait for the trsyncs to finish (trigger, past end, or timeout): the first of the
        // group to stop ends the wait (the host stops the others).
        let deadline = self.now()? + QUERY_TIMEOUT + 30.0;
        loop {
            let trsyncs = &self.live_mut()?.trsyncs;
            let done = trsyncs
                .iter()
                .filter(|t| t.group == ri)
                .any(|t| t.done.is_some())
                || !trsyncs.iter().any(|t| t.group == ri);
            if done {
                break;
            }
            let now = self.now()?;
            if now >= deadline {
                return Err(MoveError::Halted(
                    "Timeout waiting for the endstop's trsync".into(),
                ));
            }
            self.reactor_step(now)?;
            self.reactor_wait(deadline)?;
        }
        self.live_send_now(
            mi,
            format!(
                "endstop_home oid={es_oid} clock=0 sample_ticks=0 sample_count=0 rest_ticks=0 pin_value=0 trsync_oid=0 trigger_reason=0"
            ),
        )?;
        // TriggerDispatch.stop → MCU_trsync.stop for each trsync of the group, the endstop's
        // first: query its final state, then its steppers' positions (note_homing_end). A
        // communication timeout on any MCU fails the homing; otherwise the endstop's reason.
        let mut members = vec![(mi, trsync_oid)];
        members.extend(self.rails[ri].stepper_trsyncs.iter().copied());
        let mut reason = 0;
        for (k, &(tmi, toid)) in members.iter().enumerate() {
            let (params, _) = self.live_query(
                tmi,
                format!("trsync_trigger oid={toid} reason={REASON_HOST_REQUEST}"),
                "trsync_state",
                toid,
            )?;
            let r = LiveEvent::param(&params, "trigger_reason");
            if k == 0 || (r >= REASON_COMMS_TIMEOUT && reason < REASON_COMMS_TIMEOUT) {
                reason = r;
            }
            let steppers: Vec<usize> = self.rails[ri]
                .steppers
                .iter()
                .copied()
                .filter(|&si| self.toolhead.steppers[si].mcu == tmi)
                .collect();
            for si in steppers {
                self.live_stepper_homing_end(si)?;
            }
        }
        if reason >= REASON_COMMS_TIMEOUT {
            return Err(MoveError::OutOfRange(
                "Communication timeout during homing".into(),
            ));
        }
        if reason != REASON_ENDSTOP_HIT {
            return Ok(None);
        }
        let (params, _) = self.live_query(
            mi,
            format!("endstop_query_state oid={es_oid}"),
            "endstop_state",
            es_oid,
        )?;
        let next_clock32 = LiveEvent::param(&params, "next_clock");
        let next_clock = self
            .live_mut()?
            .host
            .clock32_to_clock64(mi, (next_clock32 & 0xffff_ffff) as u32);
        let q = &self.toolhead.mcus[mi];
        let clock = next_clock.saturating_sub(rest_ticks);
        Ok(Some(q.clock_to_print_time(clock)))
    }

    /// MCU_stepper.note_homing_end: the compressor restarts and the stepper's position is read
    /// back from the MCU.
    fn live_stepper_homing_end(&mut self, si: usize) -> Result<(), MoveError> {
        let (mi, oid, invert) = {
            let s = &self.toolhead.steppers[si];
            (s.mcu, s.oid, s.sc.invert_dir())
        };
        let (params, receive_time) = self.live_query(
            mi,
            format!("stepper_get_position oid={oid}"),
            "stepper_position",
            oid,
        )?;
        let mut pos = LiveEvent::param(&params, "pos");
        if invert {
            pos = -pos;
        }
        let est = self.live_mut()?.host.estimated_print_time(receive_time);
        let clock = self.toolhead.mcus[mi].print_time_to_clock(est);
        self.toolhead.stepper_homing_end(si, clock, pos)?;
        self.live_transmit()
    }
}

/// The `oid=` of an MCU command's text, if it has one.
fn command_oid(cmd: &str) -> Option<u8> {
    cmd.split_whitespace()
        .find_map(|w| w.strip_prefix("oid="))
        .and_then(|v| v.parse().ok())
}
