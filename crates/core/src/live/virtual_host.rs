//! The simulated MCU in process on a virtual clock: a [`LiveHost`] for tests, offline simulation
//! and the twin's live-sim mode.
//!
//! Host and sim run in lockstep: each tick (0.5 ms of virtual time by default) the host session
//! transmits, the wire carries the bytes (with latency, and optionally corrupting them), the sim
//! runs its timers up to its own clock (a crystal 50 ppm slow, booted 2 s before host time 0) and
//! answers. Nothing sleeps: a print runs as fast as the planner and the sim can go. The host side
//! is the same code a serial port drives — proto's `HostSession` with its retransmission, clock
//! synchronisation and timed-command schedule — so what passes here passes for the right reasons.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use gantry_motion::printer::LiveEvent;
use gantry_motion::toolhead::McuMessage;
use gantry_proto::Dictionary;
use gantry_proto::session::{HostSession, SessionEvent};
use gantry_sim::faulty::FaultyWire;
use gantry_sim::runtime::SimMcu;

use super::{LiveHost, encode_messages, live_event};

/// How many sent messages [`VirtualHost::recent_messages`] keeps.
const RECENT_KEPT: usize = 64;

/// How the virtual wire and clock behave.
#[derive(Debug, Clone, Copy)]
pub struct VirtualOptions {
    /// Virtual time per lockstep tick, s.
    pub tick_s: f64,
    /// One-way wire latency, s.
    pub latency_s: f64,
    /// Probability that a byte is corrupted on the wire (each direction).
    pub corrupt: f64,
    /// Seed of the wire's faults.
    pub seed: u64,
    /// The sim crystal's error, parts per million (negative: slow).
    pub crystal_ppm: f64,
}

impl Default for VirtualOptions {
    fn default() -> Self {
        Self {
            tick_s: 0.0005,
            latency_s: 0.0005,
            corrupt: 0.0,
            seed: 1,
            crystal_ppm: -50.0,
        }
    }
}

struct Inner {
    session: HostSession,
    sim: SimMcu,
    to_mcu: FaultyWire,
    to_host: FaultyWire,
    now: f64,
    options: VirtualOptions,
    freq: f64,
    dict: Option<Arc<Dictionary>>,
    events: VecDeque<LiveEvent>,
    /// Session events during connect (before the printer takes over).
    session_events: VecDeque<SessionEvent>,
    connected: bool,
    buf: Vec<u8>,
    /// The last messages handed to the session, with the host time: what a failing test
    /// shows.
    recent: VecDeque<(f64, McuMessage)>,
}

impl Inner {
    fn mcu_clock(&self, now: f64) -> u64 {
        let c = (now + 2.0) * self.freq * (1.0 + self.options.crystal_ppm * 1e-6);
        if c <= 0.0 { 0 } else { c as u64 }
    }

    /// One lockstep tick of `dt` seconds.
    fn tick(&mut self, dt: f64) {
        let now = self.now;
        self.buf.clear();
        self.session.poll_transmit(now, &mut self.buf);
        self.to_mcu.write(now, &self.buf);
        let bytes = self.to_mcu.read(now);
        self.sim.handle_input(&bytes);
        self.buf.clear();
        let clock = self.mcu_clock(now);
        self.sim.poll(clock, &mut self.buf);
        self.to_host.write(now, &self.buf);
        let bytes = self.to_host.read(now);
        self.session.handle_input(&bytes, now);
        while let Some(event) = self.session.poll_event() {
            if self.connected {
                if let Some(e) = live_event(self.dict.as_deref(), 0, event) {
                    self.events.push_back(e);
                }
            } else {
                self.session_events.push_back(event);
            }
        }
        self.now += dt;
    }
}

/// A simulated MCU and its host session on a virtual clock. Clones share the same MCU: give
/// one to the printer, keep one to look at the sim.
#[derive(Clone)]
pub struct VirtualHost {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for VirtualHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtualHost").finish_non_exhaustive()
    }
}

impl VirtualHost {
    /// A host for `sim` with the wire and clock of `options`.
    pub fn new(sim: SimMcu, options: VirtualOptions) -> Self {
        let freq = f64::from(gantry_sim::dictionary::CLOCK_FREQ);
        let inner = Inner {
            session: HostSession::new(),
            sim,
            to_mcu: FaultyWire::new(options.latency_s, options.corrupt, 0.0, options.seed),
            to_host: FaultyWire::new(
                options.latency_s,
                options.corrupt,
                0.0,
                options.seed.wrapping_add(7),
            ),
            now: 0.0,
            options,
            freq,
            dict: None,
            events: VecDeque::new(),
            session_events: VecDeque::new(),
            connected: false,
            buf: Vec::new(),
            recent: VecDeque::new(),
        };
        Self {
            inner: Arc::new(Mutex::new(inner)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// klippy's connect sequence on the virtual clock: identify, clock sync, `get_config`, the
    /// config phase `build_config` makes from the dictionary (unless the MCU already runs it),
    /// `get_config` again. Returns the MCU's move-queue size.
    ///
    /// # Errors
    /// A shutdown MCU, a config the dictionary refuses, a CRC mismatch, a lost session, or no
    /// progress within 60 s of virtual time.
    pub fn connect(
        &self,
        build_config: impl FnOnce(&Dictionary) -> Result<Vec<String>, String>,
    ) -> Result<u16, String> {
        let mut inner = self.lock();
        let deadline = inner.now + 60.0;
        let mut build = Some(build_config);
        let mut cmds: Option<Vec<String>> = None;
        let mut sent = false;
        loop {
            if inner.now > deadline {
                return Err("the simulated MCU did not finish connecting in 60 s".into());
            }
            let dt = inner.options.tick_s;
            inner.tick(dt);
            while let Some(event) = inner.session_events.pop_front() {
                let now = inner.now;
                match event {
                    SessionEvent::Identified(dict) => {
                        if let Some(b) = build.take() {
                            cmds = Some(b(&dict)?);
                        }
                        inner.dict = Some(dict);
                    }
                    SessionEvent::ClockSynced { .. } => {
                        inner.session.query_config(now).map_err(|e| e.to_string())?;
                    }
                    SessionEvent::Config(state) => {
                        let Some(cmds) = cmds.as_ref() else { continue };
                        if state.is_shutdown {
                            return Err("the simulated MCU is shut down".into());
                        }
                        let crc = crate::mcu::config_crc(cmds);
                        if state.is_config && Some(state.crc) == crc {
                            inner.connected = true;
                            return Ok(state.move_count);
                        }
                        if state.is_config || sent {
                            return Err(format!(
                                "the simulated MCU runs another configuration (CRC {})",
                                state.crc
                            ));
                        }
                        for c in cmds {
                            inner.session.send_text(c).map_err(|e| e.to_string())?;
                        }
                        sent = true;
                        inner.session.query_config(now).map_err(|e| e.to_string())?;
                    }
                    SessionEvent::Shutdown { reason, .. } => {
                        return Err(format!("the simulated MCU shut down: {reason}"));
                    }
                    SessionEvent::Lost { why } => return Err(why),
                    SessionEvent::Starting | SessionEvent::Response { .. } => {}
                }
            }
        }
    }

    /// Runs `f` on the simulated MCU (to read its report, or to inject a fault).
    pub fn with_sim<R>(&self, f: impl FnOnce(&mut SimMcu) -> R) -> R {
        f(&mut self.lock().sim)
    }

    /// Changes the probability that a wire byte is corrupted (each direction), once no bytes
    /// are in flight.
    pub fn set_corruption(&self, corrupt: f64) {
        let mut inner = self.lock();
        let deadline = inner.now + 1.0;
        while !(inner.to_mcu.is_idle() && inner.to_host.is_idle()) && inner.now < deadline {
            let dt = inner.options.tick_s;
            inner.tick(dt);
        }
        inner.options.corrupt = corrupt;
        let o = inner.options;
        inner.to_mcu = FaultyWire::new(o.latency_s, corrupt, 0.0, o.seed.wrapping_add(13));
        inner.to_host = FaultyWire::new(o.latency_s, corrupt, 0.0, o.seed.wrapping_add(29));
    }

    /// The last messages sent (host time, message), oldest first, as text.
    pub fn recent_messages(&self) -> Vec<String> {
        self.lock()
            .recent
            .iter()
            .map(|(t, m)| {
                format!(
                    "{t:.4} min={} req={} {}",
                    m.min_clock,
                    m.req_clock,
                    gantry_motion::output::message_text(m)
                )
            })
            .collect()
    }

    /// Virtual host time now, s.
    pub fn now(&self) -> f64 {
        self.lock().now
    }

    /// Bytes the session retransmitted and other link counters.
    pub fn link_stats(&self) -> gantry_proto::link::LinkStats {
        self.lock().session.link_stats()
    }
}

impl LiveHost for VirtualHost {
    fn monotonic(&mut self) -> f64 {
        self.lock().now
    }

    fn estimated_print_time(&mut self, eventtime: f64) -> f64 {
        self.lock()
            .session
            .clock_sync()
            .map_or(0.0, |s| s.estimated_print_time(eventtime))
    }

    fn clock32_to_clock64(&mut self, _mcu: usize, clock32: u32) -> u64 {
        self.lock()
            .session
            .clock_sync()
            .map_or(u64::from(clock32), |s| s.clock32_to_clock64(clock32))
    }

    fn transmit(&mut self, mcu: usize, messages: Vec<McuMessage>) {
        let mut inner = self.lock();
        let Some(dict) = inner.dict.clone() else {
            return;
        };
        let mut failed = None;
        let inner = &mut *inner;
        for m in &messages {
            if inner.recent.len() == RECENT_KEPT {
                inner.recent.pop_front();
            }
            inner.recent.push_back((inner.now, m.clone()));
        }
        let result = encode_messages(&dict, &messages, |bytes, min_clock, req_clock| {
            if let Err(e) = inner.session.send_timed(bytes, min_clock, req_clock) {
                failed.get_or_insert(e.to_string());
            }
        });
        if let Some(why) = result.err().or(failed) {
            inner.events.push_back(LiveEvent::Disconnected {
                mcu,
                why: format!("cannot send to the MCU: {why}"),
            });
        }
    }

    fn wait(&mut self, until: f64) -> Option<LiveEvent> {
        let mut inner = self.lock();
        loop {
            if let Some(e) = inner.events.pop_front() {
                return Some(e);
            }
            let left = until - inner.now;
            if left <= 0.0 {
                return None;
            }
            let dt = inner.options.tick_s.min(left).max(1e-6);
            inner.tick(dt);
        }
    }
}
