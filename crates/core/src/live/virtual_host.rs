//! The simulated MCU in process on a virtual clock: a [`LiveHost`] for tests, offline simulation
//! and the twin's live-sim mode.
//!
//! Host and sim run in lockstep: each tick (0.5 ms of virtual time by default) the host session
//! transmits, the wire carries the bytes (with latency, and optionally corrupting them), the sim
//! runs its timers up to its own clock (a crystal 50 ppm slow, booted 2 s before host time 0) and
//! answers. Nothing sleeps: a print runs as fast as the planner and the sim can go. The host side
//! is the same code a serial port drives — proto's `HostSession` with its retransmission, clock
//! synchronisation and timed-command schedule — so what passes here passes for the right reasons.
//!
//! A printer with several MCUs gets one sim per MCU ([`VirtualHost::with_mcus`]), each with its
//! own crystal error and boot time, ticked together; the secondaries' print time → clock lines
//! are kept in step with the primary's as on a real host ([`SecondarySync`]).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use gantry_motion::printer::LiveEvent;
use gantry_motion::toolhead::McuMessage;
use gantry_proto::Dictionary;
use gantry_proto::clocksync::SecondarySync;
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

/// One simulated MCU with its own crystal.
#[derive(Debug, Clone, Copy)]
pub struct VirtualMcuOptions {
    /// The sim crystal's error at host time 0, parts per million (negative: slow).
    pub crystal_ppm: f64,
    /// How fast that error changes, ppm per second (a board warming up next to a hotend).
    pub drift_ppm_per_s: f64,
    /// How long before host time 0 the sim booted, s.
    pub boot_s: f64,
}

impl VirtualMcuOptions {
    /// The MCU clock at host time `host_s` of a board whose nominal clock is `freq_hz`: the
    /// crystal's error, drifting linearly from host time 0, integrated since boot.
    pub fn clock_at(&self, freq_hz: f64, host_s: f64) -> f64 {
        let t = host_s + self.boot_s;
        let ppm_time = self.crystal_ppm * t + 0.5 * self.drift_ppm_per_s * host_s * host_s;
        freq_hz * (t + ppm_time * 1e-6)
    }

    /// The host time at which the clock reads `clock` (the inverse of
    /// [`VirtualMcuOptions::clock_at`]).
    pub fn host_time_at(&self, freq_hz: f64, clock: f64) -> f64 {
        let mut t = clock / freq_hz - self.boot_s;
        for _ in 0..8 {
            let rate = freq_hz * (1.0 + (self.crystal_ppm + self.drift_ppm_per_s * t) * 1e-6);
            t -= (self.clock_at(freq_hz, t) - clock) / rate;
        }
        t
    }
}

/// One sim and the host session that drives it.
struct Link {
    session: HostSession,
    sim: SimMcu,
    to_mcu: FaultyWire,
    to_host: FaultyWire,
    freq: f64,
    crystal: VirtualMcuOptions,
    dict: Option<Arc<Dictionary>>,
    /// Session events during connect (before the printer takes over).
    session_events: VecDeque<SessionEvent>,
    /// A secondary MCU's print time → clock line, once the printer asked.
    secondary: Option<SecondarySync>,
}

impl Link {
    fn new(sim: SimMcu, options: &VirtualOptions, crystal: VirtualMcuOptions, index: u64) -> Self {
        let seed = options.seed.wrapping_add(index.wrapping_mul(1_000));
        Self {
            session: HostSession::new(),
            sim,
            to_mcu: FaultyWire::new(options.latency_s, options.corrupt, 0.0, seed),
            to_host: FaultyWire::new(
                options.latency_s,
                options.corrupt,
                0.0,
                seed.wrapping_add(7),
            ),
            freq: f64::from(gantry_sim::dictionary::CLOCK_FREQ),
            crystal,
            dict: None,
            session_events: VecDeque::new(),
            secondary: None,
        }
    }

    fn mcu_clock(&self, now: f64) -> u64 {
        let c = self.crystal.clock_at(self.freq, now);
        if c <= 0.0 { 0 } else { c as u64 }
    }
}

/// Couples the sims' worlds after every tick (see [`VirtualHost::link_worlds`]).
type WorldLink = Box<dyn FnMut(&mut [&mut SimMcu]) + Send>;

struct Inner {
    links: Vec<Link>,
    /// Physics shared between boards (a probe on the toolboard touching the bed the mainboard
    /// moves).
    world_link: Option<WorldLink>,
    now: f64,
    options: VirtualOptions,
    events: VecDeque<LiveEvent>,
    connected: bool,
    buf: Vec<u8>,
    /// The last messages handed to the sessions, with the host time and the MCU's index: what
    /// a failing test shows.
    recent: VecDeque<(f64, usize, McuMessage)>,
}

impl Inner {
    /// One lockstep tick of `dt` seconds.
    fn tick(&mut self, dt: f64) {
        let now = self.now;
        for (index, link) in self.links.iter_mut().enumerate() {
            self.buf.clear();
            link.session.poll_transmit(now, &mut self.buf);
            link.to_mcu.write(now, &self.buf);
            let bytes = link.to_mcu.read(now);
            link.sim.handle_input(&bytes);
            self.buf.clear();
            let clock = link.mcu_clock(now);
            link.sim.poll(clock, &mut self.buf);
            link.to_host.write(now, &self.buf);
            let bytes = link.to_host.read(now);
            link.session.handle_input(&bytes, now);
            while let Some(event) = link.session.poll_event() {
                if self.connected {
                    if let Some(e) = live_event(link.dict.as_deref(), index, event) {
                        self.events.push_back(e);
                    }
                } else {
                    link.session_events.push_back(event);
                }
            }
        }
        if let Some(f) = self.world_link.as_mut() {
            let mut sims: Vec<&mut SimMcu> = self.links.iter_mut().map(|l| &mut l.sim).collect();
            f(&mut sims);
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
        let crystal = VirtualMcuOptions {
            crystal_ppm: options.crystal_ppm,
            drift_ppm_per_s: 0.0,
            boot_s: 2.0,
        };
        Self::with_mcus(vec![(sim, crystal)], options)
    }

    /// A host for a printer's MCUs, the primary first, each a sim with its own crystal; the
    /// wire of `options` (its `crystal_ppm` is not used).
    pub fn with_mcus(mcus: Vec<(SimMcu, VirtualMcuOptions)>, options: VirtualOptions) -> Self {
        let links = mcus
            .into_iter()
            .enumerate()
            .map(|(i, (sim, crystal))| Link::new(sim, &options, crystal, i as u64))
            .collect();
        let inner = Inner {
            links,
            world_link: None,
            now: 0.0,
            options,
            events: VecDeque::new(),
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
        let counts = self.connect_all(|dicts| {
            let dict = dicts.first().ok_or("no MCU")?;
            Ok(vec![build_config(dict)?])
        })?;
        counts.first().copied().ok_or_else(|| "no MCU".into())
    }

    /// [`VirtualHost::connect`] for every MCU: all identified, then `build_config` makes each
    /// MCU's config phase from all dictionaries (in order), then each is configured. Returns
    /// the MCUs' move-queue sizes.
    ///
    /// # Errors
    /// As [`VirtualHost::connect`], for the first MCU that fails.
    pub fn connect_all(
        &self,
        build_config: impl FnOnce(&[Arc<Dictionary>]) -> Result<Vec<Vec<String>>, String>,
    ) -> Result<Vec<u16>, String> {
        let mut inner = self.lock();
        let deadline = inner.now + 60.0;
        let n = inner.links.len();
        let mut build = Some(build_config);
        let mut cmds: Option<Vec<Vec<String>>> = None;
        let mut sent = vec![false; n];
        let mut move_counts: Vec<Option<u16>> = vec![None; n];
        let mut dicts: Vec<Option<Arc<Dictionary>>> = vec![None; n];
        // Config answers that came before every dictionary was known.
        let mut pending: Vec<VecDeque<SessionEvent>> = vec![VecDeque::new(); n];
        loop {
            if let Some(done) = move_counts.iter().copied().collect::<Option<Vec<u16>>>() {
                inner.connected = true;
                return Ok(done);
            }
            if inner.now > deadline {
                return Err("the simulated MCUs did not finish connecting in 60 s".into());
            }
            let dt = inner.options.tick_s;
            inner.tick(dt);
            let now = inner.now;
            for (link, queue) in inner.links.iter_mut().zip(pending.iter_mut()) {
                queue.extend(link.session_events.drain(..));
            }
            for i in 0..n {
                while let Some(event) = pending[i].front().cloned() {
                    let link = &mut inner.links[i];
                    match event {
                        SessionEvent::Identified(dict) => {
                            link.dict = Some(Arc::clone(&dict));
                            dicts[i] = Some(dict);
                            if cmds.is_none()
                                && let Some(all) = dicts.iter().cloned().collect::<Option<Vec<_>>>()
                                && let Some(b) = build.take()
                            {
                                cmds = Some(b(&all)?);
                            }
                        }
                        SessionEvent::ClockSynced { .. } => {
                            link.session.query_config(now).map_err(|e| e.to_string())?;
                        }
                        SessionEvent::Config(state) => {
                            // Kept until every dictionary is known and the phases are built.
                            let Some(mine) = cmds.as_ref().and_then(|c| c.get(i)) else {
                                break;
                            };
                            if state.is_shutdown {
                                return Err(format!("simulated MCU {i} is shut down"));
                            }
                            let crc = crate::mcu::config_crc(mine);
                            if state.is_config && Some(state.crc) == crc {
                                move_counts[i] = Some(state.move_count);
                            } else if state.is_config || sent[i] {
                                return Err(format!(
                                    "simulated MCU {i} runs another configuration (CRC {})",
                                    state.crc
                                ));
                            } else {
                                for c in mine {
                                    link.session.send_text(c).map_err(|e| e.to_string())?;
                                }
                                sent[i] = true;
                                link.session.query_config(now).map_err(|e| e.to_string())?;
                            }
                        }
                        SessionEvent::Shutdown { reason, .. } => {
                            return Err(format!("simulated MCU {i} shut down: {reason}"));
                        }
                        SessionEvent::Lost { why } => return Err(why),
                        SessionEvent::Starting | SessionEvent::Response { .. } => {}
                    }
                    pending[i].pop_front();
                }
            }
        }
    }

    /// Runs `f` on every sim (the primary first) after each tick: the physics that joins the
    /// boards' worlds, such as a toolboard's probe that triggers when the mainboard's Z carriage
    /// reaches the bed.
    pub fn link_worlds(&self, f: impl FnMut(&mut [&mut SimMcu]) + Send + 'static) {
        self.lock().world_link = Some(Box::new(f));
    }

    /// Runs `f` on the (primary) simulated MCU (to read its report, or to inject a fault).
    pub fn with_sim<R>(&self, f: impl FnOnce(&mut SimMcu) -> R) -> R {
        self.with_sim_at(0, f)
    }

    /// Runs `f` on simulated MCU `mcu` (0: the primary).
    ///
    /// # Panics
    /// When there is no MCU `mcu` (a test's mistake).
    pub fn with_sim_at<R>(&self, mcu: usize, f: impl FnOnce(&mut SimMcu) -> R) -> R {
        f(&mut self.lock().links[mcu].sim)
    }

    /// Changes the probability that a wire byte is corrupted (each direction), once no bytes
    /// are in flight.
    pub fn set_corruption(&self, corrupt: f64) {
        let mut inner = self.lock();
        let deadline = inner.now + 1.0;
        while !inner
            .links
            .iter()
            .all(|l| l.to_mcu.is_idle() && l.to_host.is_idle())
            && inner.now < deadline
        {
            let dt = inner.options.tick_s;
            inner.tick(dt);
        }
        inner.options.corrupt = corrupt;
        let o = inner.options;
        for (i, link) in inner.links.iter_mut().enumerate() {
            let seed = o.seed.wrapping_add(1_000 * i as u64);
            link.to_mcu = FaultyWire::new(o.latency_s, corrupt, 0.0, seed.wrapping_add(13));
            link.to_host = FaultyWire::new(o.latency_s, corrupt, 0.0, seed.wrapping_add(29));
        }
    }

    /// The last messages sent (host time, message), oldest first, as text.
    pub fn recent_messages(&self) -> Vec<String> {
        self.lock()
            .recent
            .iter()
            .map(|(t, mcu, m)| {
                format!(
                    "{t:.4} mcu{mcu} min={} req={} {}",
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

    /// Bytes the (primary) session retransmitted and other link counters.
    pub fn link_stats(&self) -> gantry_proto::link::LinkStats {
        self.lock().links[0].session.link_stats()
    }
}

impl LiveHost for VirtualHost {
    fn monotonic(&mut self) -> f64 {
        self.lock().now
    }

    fn estimated_print_time(&mut self, eventtime: f64) -> f64 {
        self.lock().links[0]
            .session
            .clock_sync()
            .map_or(0.0, |s| s.estimated_print_time(eventtime))
    }

    fn clock32_to_clock64(&mut self, mcu: usize, clock32: u32) -> u64 {
        self.lock()
            .links
            .get(mcu)
            .and_then(|l| l.session.clock_sync())
            .map_or(u64::from(clock32), |s| s.clock32_to_clock64(clock32))
    }

    fn calibrate_clock(
        &mut self,
        mcu: usize,
        print_time: f64,
        eventtime: f64,
    ) -> Option<(f64, f64)> {
        if mcu == 0 {
            return None;
        }
        let mut inner = self.lock();
        let main = inner.links.first()?.session.clock_sync()?.clone();
        let link = inner.links.get_mut(mcu)?;
        let local = link.session.clock_sync()?.clone();
        Some(super::calibrate_secondary(
            &mut link.secondary,
            &main,
            &local,
            print_time,
            eventtime,
        ))
    }

    fn transmit(&mut self, mcu: usize, messages: Vec<McuMessage>) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let Some(link) = inner.links.get_mut(mcu) else {
            return;
        };
        let Some(dict) = link.dict.clone() else {
            return;
        };
        let mut failed = None;
        for m in &messages {
            if inner.recent.len() == RECENT_KEPT {
                inner.recent.pop_front();
            }
            inner.recent.push_back((inner.now, mcu, m.clone()));
        }
        let result = encode_messages(&dict, &messages, |bytes, min_clock, req_clock| {
            if let Err(e) = link.session.send_timed(bytes, min_clock, req_clock) {
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
