//! The host's session with one MCU, sans-IO: the link, the identify download, clock
//! synchronisation, the queries a host asks, and the transmit schedule of timed commands.
//!
//! Klipper's host does this in serialhdl.py, clocksync.py and serialqueue.c; here it is one state
//! machine in the link's style — [`HostSession::handle_input`] takes bytes read from the port,
//! [`HostSession::poll_transmit`] gives bytes to write, [`HostSession::poll_timeout`] says when
//! [`HostSession::handle_timeout`] must run, and [`HostSession::poll_event`] hands out what the
//! MCU said. Time is an argument (host seconds); nothing here sleeps or reads a clock.
//!
//! The phases, as klippy connects: the link learns the MCU's sequence; `identify` downloads the
//! dictionary ([`SessionEvent::Identified`]); `get_uptime` seeds clock synchronisation and eight
//! `get_clock` 50 ms apart train it ([`SessionEvent::ClockSynced`]); from then on `get_clock` runs
//! every 0.9839 s, and more than four unanswered queries end the session with Klipper's "Lost
//! communication with MCU". The owner then runs the config phase with
//! [`HostSession::query_config`] and [`HostSession::send_text`].
//!
//! A query (`get_config`) is asked again until its answer arrives — an MCU never retransmits a
//! response, so a lost reply is only recovered by asking again, as klippy's
//! `send_with_response` does (5 retries with a doubling delay here from 0.1 s; then
//! [`SessionEvent::Lost`]).
//!
//! Timed commands (queue_step, queue_digital_out, …) carry Klipper's `min_clock` and `req_clock`
//! (spec §1.6): a command waits while the MCU may not have reached `min_clock` (its move-queue
//! slot frees at that clock) and ready commands go out lowest `req_clock` first. A block is sent
//! when ready commands fill it or one is due within 100 ms; otherwise they wait to fill blocks.
//! They are handed to the link only as fast as it sends, so untimed commands and queries (sent
//! at once, like klippy's commands without a `req_clock`) go ahead of them.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;

use crate::block;
use crate::clocksync::{self, ClockSync};
use crate::dictionary::{Constant, Dictionary};
use crate::identify::{Identify, IdentifyError};
use crate::link::{HostLink, LinkEvent, LinkStats};
use crate::msgformat::{MessageError, Value};
use crate::vlq;

/// Quick `get_clock` samples at start-up, and their spacing.
const STARTUP_CLOCK_SAMPLES: u32 = 8;
const STARTUP_CLOCK_PERIOD_S: f64 = 0.050;
/// A query is asked again after this long without its answer, doubling each time.
const QUERY_RETRY_S: f64 = 0.100;
/// How many times a query is asked again before the session counts the MCU as lost.
const QUERY_RETRIES: u32 = 5;
/// Ready commands due within this long of the transmit estimate go out at once.
const DUE_WINDOW_S: f64 = 0.100;
/// The same while the link is losing blocks.
const LOSSY_DUE_WINDOW_S: f64 = 0.500;
/// The identify download's budget (klippy allows 5 s a connect attempt).
const IDENTIFY_BUDGET_S: f64 = 5.0;

/// The MCU's answer to `get_config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigState {
    /// `finalize_config` has run.
    pub is_config: bool,
    /// The CRC given to `finalize_config`.
    pub crc: u32,
    /// The MCU is shut down.
    pub is_shutdown: bool,
    /// Move-queue slots (0 before `finalize_config`).
    pub move_count: u16,
}

/// What the session reports.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionEvent {
    /// The dictionary arrived.
    Identified(Arc<Dictionary>),
    /// Clock synchronisation has its start-up samples: print times can be converted.
    ClockSynced {
        /// The MCU clock frequency measured against host time so far, Hz (eight samples over
        /// 0.35 s: rough until the periodic samples refine it, as in klippy).
        freq_hz: f64,
        /// The MCU's 64-bit clock at the last sample (its uptime in ticks).
        clock: u64,
    },
    /// The answer to [`HostSession::query_config`].
    Config(ConfigState),
    /// The MCU shut down (`shutdown`), or refused a command because it is (`is_shutdown`).
    Shutdown {
        /// Klipper's message ("Timer too close").
        reason: String,
        /// The MCU clock of the shutdown, when the MCU said (`shutdown` does, `is_shutdown`
        /// does not).
        clock: Option<u64>,
    },
    /// The MCU said `starting`: it has just booted (after a reset).
    Starting,
    /// Any other response, decoded.
    Response {
        /// Its name (`analog_in_state`).
        name: String,
        /// Its parameters, in format order.
        values: Vec<Value>,
        /// Host time the block arrived.
        receive_time_s: f64,
    },
    /// The MCU stopped answering; the session is over.
    Lost {
        /// Klipper's words for it.
        why: String,
    },
}

/// Why a command could not be queued.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The dictionary has not arrived yet.
    #[error("the MCU's dictionary has not arrived yet")]
    NotIdentified,
    /// The command does not encode with this dictionary.
    #[error("{text}: {source}")]
    Encode {
        /// The command as given.
        text: String,
        /// Why.
        #[source]
        source: MessageError,
    },
    /// The encoded command does not fit a block.
    #[error("{0}")]
    TooLarge(#[from] block::PayloadTooLarge),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Identify,
    Uptime,
    StartupClock { samples: u32 },
    Running,
    Lost,
}

#[derive(Debug, Clone)]
struct Query {
    request: Vec<u8>,
    response: &'static str,
    ask_at_s: f64,
    delay_s: f64,
    retries_left: u32,
}

/// A timed command waiting for its `min_clock`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Upcoming {
    min_clock: u64,
    req_clock: u64,
    order: u64,
    message: Vec<u8>,
}

/// The host end of a session with one MCU.
#[derive(Debug)]
pub struct HostSession {
    link: HostLink,
    phase: Phase,
    identify: Identify,
    identify_deadline_s: Option<f64>,
    dict: Option<Arc<Dictionary>>,
    sync: Option<ClockSync>,
    /// Queries in the order asked; one at a time is outstanding per response name.
    queries: Vec<Query>,
    next_clock_query_s: f64,
    upcoming: BinaryHeap<Reverse<Upcoming>>,
    /// Released timed commands, by `req_clock`, not yet handed to the link.
    ready: BinaryHeap<Reverse<(u64, u64, Vec<u8>)>>,
    ready_bytes: usize,
    order: u64,
    events: VecDeque<SessionEvent>,
}

impl Default for HostSession {
    fn default() -> Self {
        Self::new()
    }
}

impl HostSession {
    /// A session before the first byte.
    pub fn new() -> Self {
        Self {
            link: HostLink::new(),
            phase: Phase::Identify,
            identify: Identify::new(),
            identify_deadline_s: None,
            dict: None,
            sync: None,
            queries: Vec::new(),
            next_clock_query_s: 0.0,
            upcoming: BinaryHeap::new(),
            ready: BinaryHeap::new(),
            ready_bytes: 0,
            order: 0,
            events: VecDeque::new(),
        }
    }

    /// The dictionary, once identified.
    pub fn dictionary(&self) -> Option<&Arc<Dictionary>> {
        self.dict.as_ref()
    }

    /// Clock synchronisation, once identified.
    pub fn clock_sync(&self) -> Option<&ClockSync> {
        self.sync.as_ref()
    }

    /// Whether the start-up clock samples are in (print times can be converted).
    pub fn is_clock_synced(&self) -> bool {
        self.phase == Phase::Running
    }

    /// Whether the session ended ([`SessionEvent::Lost`]).
    pub fn is_lost(&self) -> bool {
        self.phase == Phase::Lost
    }

    /// The link's counters.
    pub fn link_stats(&self) -> LinkStats {
        self.link.stats()
    }

    /// Timed commands not yet handed to the link, and messages queued or in flight there.
    pub fn pending(&self) -> usize {
        self.upcoming.len() + self.ready.len() + self.link.pending_messages()
    }

    /// Asks `get_config`; the answer comes as [`SessionEvent::Config`].
    ///
    /// # Errors
    /// Before the dictionary arrived, or when it lacks `get_config`.
    pub fn query_config(&mut self, now_s: f64) -> Result<(), SessionError> {
        let request = self.encode("get_config")?;
        self.ask(request, "config", now_s);
        Ok(())
    }

    /// Queues a command given in Klipper's text form (`allocate_oids count=3`) to go out as soon
    /// as the link allows, in order with other such commands.
    ///
    /// # Errors
    /// Before the dictionary arrived; a command the dictionary does not declare or whose values
    /// do not fit.
    pub fn send_text(&mut self, text: &str) -> Result<(), SessionError> {
        let message = self.encode(text)?;
        self.link.send(message)?;
        Ok(())
    }

    /// Queues an encoded command (id and parameters) to go out as soon as the link allows.
    ///
    /// # Errors
    /// A message longer than a block's payload.
    pub fn send(&mut self, message: Vec<u8>) -> Result<(), SessionError> {
        self.link.send(message)?;
        Ok(())
    }

    /// Queues an encoded timed command: not sent before the MCU may have reached `min_clock`,
    /// and ahead of commands with a later `req_clock`.
    ///
    /// # Errors
    /// A message longer than a block's payload.
    pub fn send_timed(
        &mut self,
        message: Vec<u8>,
        min_clock: u64,
        req_clock: u64,
    ) -> Result<(), SessionError> {
        if message.len() > block::PAYLOAD_MAX {
            return Err(block::PayloadTooLarge(message.len()).into());
        }
        self.order += 1;
        self.upcoming.push(Reverse(Upcoming {
            min_clock,
            req_clock,
            order: self.order,
            message,
        }));
        Ok(())
    }

    /// Encodes a command in Klipper's text form with this MCU's dictionary.
    ///
    /// # Errors
    /// As [`HostSession::send_text`].
    pub fn encode(&self, text: &str) -> Result<Vec<u8>, SessionError> {
        let dict = self.dict.as_ref().ok_or(SessionError::NotIdentified)?;
        dict.encode_text(text)
            .map_err(|source| SessionError::Encode {
                text: text.to_owned(),
                source,
            })
    }

    /// Takes bytes read from the port at host time `now_s`.
    pub fn handle_input(&mut self, bytes: &[u8], now_s: f64) {
        self.link.handle_input(bytes, now_s);
        while let Some(event) = self.link.poll_event() {
            if let LinkEvent::Received {
                payload,
                receive_time_s,
                sent_time_s,
            } = event
            {
                self.handle_payload(&payload, receive_time_s, sent_time_s);
            }
        }
    }

    /// When [`HostSession::handle_timeout`] (or [`HostSession::poll_transmit`]) must next run.
    pub fn poll_timeout(&self) -> Option<f64> {
        let mut next = self.link.poll_timeout();
        let mut take = |t: Option<f64>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n: f64| n.min(t)));
            }
        };
        match self.phase {
            Phase::Identify => take(self.identify.poll_timeout().or(Some(0.0))),
            Phase::StartupClock { .. } | Phase::Running => take(Some(self.next_clock_query_s)),
            Phase::Uptime | Phase::Lost => {}
        }
        take(self.queries.iter().map(|q| q.ask_at_s).reduce(f64::min));
        if let Some(Reverse(u)) = self.upcoming.peek()
            && let Some(t) = self.host_time_of(u.min_clock)
        {
            take(Some(t));
        }
        if let Some(Reverse((req, _, _))) = self.ready.peek()
            && let Some(t) = self.host_time_of(*req)
        {
            take(Some(t - DUE_WINDOW_S));
        }
        next
    }

    /// Runs the timers due at `now_s`: retransmission, queries asked again, clock queries.
    pub fn handle_timeout(&mut self, now_s: f64) {
        self.link.handle_timeout(now_s);
        if self.phase == Phase::Lost {
            return;
        }
        if self.phase == Phase::Identify && self.link.is_synchronised() {
            let deadline = *self
                .identify_deadline_s
                .get_or_insert(now_s + IDENTIFY_BUDGET_S);
            if now_s > deadline {
                self.lose("Timeout on identify (no complete dictionary in 5 s)".into());
                return;
            }
            if let Some(request) = self.identify.poll_request(now_s) {
                let _ = self.link.send(request);
            }
        }
        if matches!(self.phase, Phase::StartupClock { .. } | Phase::Running)
            && now_s >= self.next_clock_query_s
        {
            let period = if self.phase == Phase::Running {
                clocksync::QUERY_PERIOD_S
            } else {
                STARTUP_CLOCK_PERIOD_S
            };
            self.next_clock_query_s = now_s + period;
            if let Ok(request) = self.encode("get_clock") {
                if let Some(sync) = self.sync.as_mut() {
                    sync.query_sent();
                    if !sync.is_active() {
                        self.lose(format!("Lost communication with MCU '{}'", self.mcu_name()));
                        return;
                    }
                }
                let _ = self.link.send(request);
            }
        }
        let mut lost = None;
        for q in &mut self.queries {
            if now_s < q.ask_at_s {
                continue;
            }
            if q.retries_left == 0 {
                lost = Some(format!("Unable to obtain '{}' response", q.response));
                break;
            }
            q.retries_left -= 1;
            q.ask_at_s = now_s + q.delay_s;
            q.delay_s *= 2.0;
            let _ = self.link.send(q.request.clone());
        }
        if let Some(why) = lost {
            self.lose(why);
        }
    }

    /// Appends bytes to write now to `out`; returns whether any were added.
    pub fn poll_transmit(&mut self, now_s: f64, out: &mut Vec<u8>) -> bool {
        self.handle_timeout(now_s);
        self.release_timed(now_s);
        self.link.poll_transmit(now_s, out)
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    /// The MCU clock the transmit estimate gives for host time `now_s` (conservative: the MCU
    /// has at least reached it), once clock synchronisation runs.
    pub fn transmit_clock(&self, now_s: f64) -> Option<u64> {
        if self.phase != Phase::Running {
            return None;
        }
        let t = self.sync.as_ref()?.transmit_estimate();
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let ahead = ((now_s - t.time_s) * t.freq_hz).max(0.0) as u64;
        Some(t.clock.saturating_add(ahead))
    }

    /// Host time at which the transmit estimate reaches `clock`.
    fn host_time_of(&self, clock: u64) -> Option<f64> {
        if self.phase != Phase::Running {
            return None;
        }
        let t = self.sync.as_ref()?.transmit_estimate();
        #[allow(clippy::cast_precision_loss)]
        let delta = clock as f64 - t.clock as f64;
        Some(t.time_s + delta / t.freq_hz)
    }

    /// Moves timed commands whose `min_clock` has come into the ready set, and hands ready
    /// commands to the link, lowest `req_clock` first, when they fill a block or one is due.
    fn release_timed(&mut self, now_s: f64) {
        let Some(ack_clock) = self.transmit_clock(now_s) else {
            return;
        };
        while let Some(Reverse(u)) = self.upcoming.peek() {
            if u.min_clock > ack_clock {
                break;
            }
            let Some(Reverse(u)) = self.upcoming.pop() else {
                break;
            };
            self.ready_bytes += u.message.len();
            self.ready.push(Reverse((u.req_clock, u.order, u.message)));
        }
        let due_clock = self.sync.as_ref().map_or(0, |s| {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let window = (self.due_window_s(now_s) * s.transmit_estimate().freq_hz) as u64;
            ack_clock.saturating_add(window)
        });
        let mut due = self
            .ready
            .peek()
            .is_some_and(|Reverse((req, _, _))| *req <= due_clock);
        // Timed commands reach the link only as it can take them (two blocks' worth waiting), so
        // untimed commands and queries — `get_clock` above all — never queue behind seconds of
        // steps.
        while !self.ready.is_empty()
            && (due || self.ready_bytes >= self.link.payload_limit())
            && self.link.unsent_bytes() < 2 * block::PAYLOAD_MAX
        {
            let Some(Reverse((_, _, message))) = self.ready.pop() else {
                break;
            };
            self.ready_bytes -= message.len();
            // Every timed message was checked against the block size when queued.
            let _ = self.link.send(message);
            due = self
                .ready
                .peek()
                .is_some_and(|Reverse((req, _, _))| *req <= due_clock);
        }
    }

    /// How long before its `req_clock` a ready command goes out even if it does not fill a
    /// block: Klipper's 100 ms, or [`LOSSY_DUE_WINDOW_S`] while the link loses blocks (a
    /// command may need several retransmissions, each a round trip or a timeout).
    fn due_window_s(&self, now_s: f64) -> f64 {
        if self.link.is_lossy(now_s) {
            LOSSY_DUE_WINDOW_S
        } else {
            DUE_WINDOW_S
        }
    }

    fn mcu_name(&self) -> String {
        self.dict
            .as_ref()
            .and_then(|d| d.mcu().map(str::to_owned))
            .unwrap_or_else(|| "mcu".into())
    }

    fn ask(&mut self, request: Vec<u8>, response: &'static str, now_s: f64) {
        if self.queries.iter().any(|q| q.response == response) {
            return;
        }
        let _ = self.link.send(request.clone());
        self.queries.push(Query {
            request,
            response,
            ask_at_s: now_s + QUERY_RETRY_S,
            delay_s: QUERY_RETRY_S * 2.0,
            retries_left: QUERY_RETRIES,
        });
    }

    fn answered(&mut self, response: &str) -> bool {
        let before = self.queries.len();
        self.queries.retain(|q| q.response != response);
        self.queries.len() != before
    }

    fn lose(&mut self, why: String) {
        self.phase = Phase::Lost;
        self.queries.clear();
        self.events.push_back(SessionEvent::Lost { why });
    }

    fn handle_payload(&mut self, payload: &[u8], receive_time_s: f64, sent_time_s: Option<f64>) {
        if self.phase == Phase::Identify {
            match self.identify.handle_message(payload) {
                Ok(Some(dict)) => self.identified(dict, receive_time_s),
                Ok(None) => {}
                Err(e @ (IdentifyError::TooLarge | IdentifyError::Dictionary(_))) => {
                    self.lose(format!("Invalid identify data: {e}"));
                }
            }
            return;
        }
        let Some(dict) = self.dict.clone() else {
            return;
        };
        let mut rest = payload;
        while !rest.is_empty() {
            let Ok((id, used)) = vlq::decode(rest) else {
                return;
            };
            let Some(format) = dict.message(id.cast_signed()) else {
                return; // an id the dictionary lacks: the rest cannot be read
            };
            let Ok((values, len)) = format.decode(&rest[used..]) else {
                return;
            };
            rest = &rest[used + len..];
            self.handle_message(&dict, &format.name, values, receive_time_s, sent_time_s);
        }
    }

    fn identified(&mut self, dict: Dictionary, now_s: f64) {
        let window = match dict.config.get("RECEIVE_WINDOW") {
            Some(Constant::Int(w)) => usize::try_from(*w).ok(),
            _ => None,
        };
        self.link.set_receive_window(window);
        let freq = dict.clock_freq().unwrap_or(0.0);
        let dict = Arc::new(dict);
        self.dict = Some(Arc::clone(&dict));
        self.events.push_back(SessionEvent::Identified(dict));
        if freq <= 0.0 {
            self.lose("The MCU's dictionary has no CLOCK_FREQ".into());
            return;
        }
        self.sync = Some(ClockSync::new(freq));
        self.phase = Phase::Uptime;
        if let Ok(request) = self.encode("get_uptime") {
            self.ask(request, "uptime", now_s);
        }
    }

    fn handle_message(
        &mut self,
        dict: &Dictionary,
        name: &str,
        values: Vec<Value>,
        receive_time_s: f64,
        sent_time_s: Option<f64>,
    ) {
        let int = |i: usize| match values.get(i) {
            Some(Value::Int(v)) => *v,
            _ => 0,
        };
        let u32_at = |i: usize| u32::try_from(int(i) & 0xffff_ffff).unwrap_or(0);
        match name {
            "uptime" if self.phase == Phase::Uptime => {
                // A retransmitted request has no usable send time; ask again.
                let Some(sent) = sent_time_s else {
                    return;
                };
                self.answered("uptime");
                let clock64 = (u64::from(u32_at(0)) << 32) | u64::from(u32_at(1));
                if let Some(sync) = self.sync.as_mut() {
                    sync.handle_uptime(clock64, sent, receive_time_s);
                }
                self.phase = Phase::StartupClock { samples: 0 };
                self.next_clock_query_s = receive_time_s;
            }
            "clock" => {
                let Some(sync) = self.sync.as_mut() else {
                    return;
                };
                sync.handle_clock(u32_at(0), sent_time_s, receive_time_s);
                if let Phase::StartupClock { samples } = self.phase {
                    let samples = samples + u32::from(sent_time_s.is_some());
                    if samples >= STARTUP_CLOCK_SAMPLES {
                        self.phase = Phase::Running;
                        self.next_clock_query_s = receive_time_s + clocksync::QUERY_PERIOD_S;
                        let freq_hz = sync.estimate().freq_hz;
                        let clock = sync.last_clock();
                        self.events
                            .push_back(SessionEvent::ClockSynced { freq_hz, clock });
                    } else {
                        self.phase = Phase::StartupClock { samples };
                    }
                }
            }
            "config" => {
                if self.answered("config") {
                    self.events.push_back(SessionEvent::Config(ConfigState {
                        is_config: int(0) != 0,
                        crc: u32_at(1),
                        is_shutdown: int(2) != 0,
                        move_count: u16::try_from(int(3)).unwrap_or(0),
                    }));
                }
            }
            "shutdown" | "is_shutdown" => {
                let id_index = usize::from(name == "shutdown");
                let reason = dict
                    .enumerations
                    .get("static_string_id")
                    .and_then(|e| e.name_of(int(id_index)))
                    .map_or_else(
                        || format!("Unknown shutdown reason {}", int(id_index)),
                        str::to_owned,
                    );
                let clock = (name == "shutdown").then(|| {
                    self.sync
                        .as_ref()
                        .map_or(u64::from(u32_at(0)), |s| s.clock32_to_clock64(u32_at(0)))
                });
                self.events
                    .push_back(SessionEvent::Shutdown { reason, clock });
            }
            "starting" => self.events.push_back(SessionEvent::Starting),
            _ => self.events.push_back(SessionEvent::Response {
                name: name.to_owned(),
                values,
                receive_time_s,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_encodes_before_the_dictionary() {
        let mut s = HostSession::new();
        assert!(matches!(
            s.send_text("get_config"),
            Err(SessionError::NotIdentified)
        ));
        assert!(matches!(
            s.query_config(0.0),
            Err(SessionError::NotIdentified)
        ));
        assert!(s.transmit_clock(0.0).is_none());
    }

    #[test]
    fn oversized_timed_commands_are_refused() {
        let mut s = HostSession::new();
        assert!(matches!(
            s.send_timed(vec![0; 200], 0, 0),
            Err(SessionError::TooLarge(_))
        ));
        assert_eq!(s.pending(), 0);
    }
}
