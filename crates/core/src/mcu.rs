//! A live connection to one MCU: the port, the protocol session that drives it, and klippy's
//! start-up sequence (identify, clock synchronisation, the config phase or reuse of an already
//! configured MCU).
//!
//! One thread owns the port (a USB CDC device, a UART, a pseudo-terminal — `serialport` — or a
//! TCP socket such as `gantry sim --tcp` serves) and the sans-IO [`HostSession`] in front of it:
//! it reads with a 1 ms timeout, feeds the session with the host's monotonic time, writes what
//! the session gives, and runs its timers. Callers talk to that thread through a
//! [`McuHandle`] (commands in) and a channel of [`McuEvent`]s (what the MCU said, out). The thread
//! ends when the handle asks (explicit shutdown, joined by [`McuHandle::close`]), when the MCU
//! stops answering, or when the port fails — an unplugged board reports
//! [`McuEvent::Disconnected`] with the operating system's reason.
//!
//! [`connect`] runs Klipper's connect sequence on top (mcu.py `_connect`): wait for the dictionary
//! and clock synchronisation; `get_config`; a shut-down MCU is an error naming its reason (the
//! user restarts the firmware); an MCU configured with the same CRC is reused; one configured
//! with another CRC is restarted when its dictionary allows it ([`RestartCommand`]), otherwise it
//! is an error; an unconfigured one gets the config phase, and must then report itself
//! configured.

use std::io::{self, Read as _, Write as _};
use std::net::TcpStream;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gantry_proto::Dictionary;
use gantry_proto::clocksync::ClockSync;
use gantry_proto::session::{ConfigState, HostSession, SessionError, SessionEvent};
use tokio::sync::{mpsc, watch};

/// Where an MCU is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum McuTarget {
    /// A serial device path (`/dev/serial/by-id/usb-Klipper_…`, `/tmp/gantry-sim`), at a baud rate
    /// (ignored by USB CDC devices and pseudo-terminals).
    Serial {
        /// The device path.
        path: String,
        /// The baud rate for UARTs (printer.cfg's `baud`, 250000 by default).
        baud: u32,
    },
    /// A TCP address (`127.0.0.1:7777`), as `gantry sim --tcp` serves.
    Tcp(String),
}

impl McuTarget {
    /// The target a printer.cfg `serial:` value names: `tcp:HOST:PORT` or a device path.
    pub fn from_serial_option(serial: &str, baud: u32) -> Self {
        match serial.strip_prefix("tcp:") {
            Some(addr) => Self::Tcp(addr.to_owned()),
            None => Self::Serial {
                path: serial.to_owned(),
                baud,
            },
        }
    }
}

impl std::fmt::Display for McuTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Serial { path, .. } => f.write_str(path),
            Self::Tcp(addr) => write!(f, "tcp:{addr}"),
        }
    }
}

/// What the connection thread reports.
#[derive(Debug, Clone, PartialEq)]
pub enum McuEvent {
    /// A session event (dictionary, clock sync, config answers, responses, shutdowns).
    Session(SessionEvent),
    /// The port failed or closed (unplugged board, sim ended); the connection is over.
    Disconnected {
        /// The operating system's reason.
        why: String,
    },
}

/// Errors of an MCU connection.
#[derive(Debug, thiserror::Error)]
pub enum McuError {
    /// The port could not be opened.
    #[error("cannot open {target}: {source}")]
    Open {
        /// What was opened.
        target: McuTarget,
        /// Why not.
        #[source]
        source: io::Error,
    },
    /// The connection ended before the start-up sequence finished.
    #[error("MCU '{name}': {why}")]
    Ended {
        /// The MCU's name in printer.cfg.
        name: String,
        /// Why.
        why: String,
    },
    /// The MCU is shut down and must be restarted (klippy's FIRMWARE_RESTART).
    #[error(
        "MCU '{name}' is shut down: {reason}. Once the underlying issue is corrected, restart \
         the firmware (FIRMWARE_RESTART) and connect again"
    )]
    Shutdown {
        /// The MCU's name in printer.cfg.
        name: String,
        /// Klipper's shutdown message.
        reason: String,
    },
    /// The MCU runs another configuration and cannot be reset from here.
    #[error(
        "MCU '{name}' CRC does not match config (it runs another configuration): restart the \
         board and connect again"
    )]
    CrcMismatch {
        /// The MCU's name in printer.cfg.
        name: String,
    },
    /// A command did not encode with the MCU's dictionary.
    #[error("MCU '{name}': {source}")]
    Command {
        /// The MCU's name in printer.cfg.
        name: String,
        /// Why.
        #[source]
        source: SessionError,
    },
    /// The start-up sequence took too long.
    #[error(
        "MCU '{name}': no answer within {seconds} s (is it a Klipper board, at the right baud rate?)"
    )]
    Timeout {
        /// The MCU's name in printer.cfg.
        name: String,
        /// The limit.
        seconds: u64,
    },
    /// The connection thread is gone.
    #[error("the connection to MCU '{0}' is closed")]
    Closed(String),
    /// FIRMWARE_RESTART was asked of an MCU whose dictionary has neither `reset` nor
    /// `config_reset`.
    #[error(
        "MCU '{name}' cannot be restarted from the host (its firmware has neither 'reset' nor \
         'config_reset'): power-cycle the board or press its reset button, then connect again"
    )]
    NoRestart {
        /// The MCU's name in printer.cfg.
        name: String,
    },
}

enum Request {
    Text(String),
    Timed {
        message: Vec<u8>,
        min_clock: u64,
        req_clock: u64,
    },
    QueryConfig,
    Close,
}

/// The caller's side of a running connection.
#[derive(Debug)]
pub struct McuHandle {
    name: String,
    requests: std_mpsc::Sender<Request>,
    thread: Option<JoinHandle<()>>,
    /// The connection thread's time base (host seconds are measured from it).
    epoch: Instant,
    /// Clock synchronisation as the connection thread last updated it.
    clock: watch::Receiver<Option<ClockSync>>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Text(t) => write!(f, "Text({t})"),
            Self::Timed { .. } => f.write_str("Timed"),
            Self::QueryConfig => f.write_str("QueryConfig"),
            Self::Close => f.write_str("Close"),
        }
    }
}

impl McuHandle {
    /// The MCU's name in printer.cfg (`mcu`, `toolboard`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The print time now (klippy's `estimated_print_time`), once clocks are synchronised.
    pub fn estimated_print_time(&self) -> Option<f64> {
        let now_s = self.epoch.elapsed().as_secs_f64();
        self.clock
            .borrow()
            .as_ref()
            .map(|sync| sync.estimated_print_time(now_s))
    }

    /// Host time now on the connection's time base (what session events' `receive_time_s` use),
    /// s.
    pub fn host_time(&self) -> f64 {
        self.epoch.elapsed().as_secs_f64()
    }

    /// The MCU's print time at host time `time_s` ([`McuHandle::host_time`]'s base), once
    /// clocks are synchronised.
    pub fn estimated_print_time_at(&self, time_s: f64) -> Option<f64> {
        self.clock
            .borrow()
            .as_ref()
            .map(|sync| sync.estimated_print_time(time_s))
    }

    /// The MCU clock of a print time, once clocks are synchronised.
    pub fn print_time_to_clock(&self, print_time_s: f64) -> Option<u64> {
        self.clock
            .borrow()
            .as_ref()
            .map(|sync| sync.print_time_to_clock(print_time_s))
    }

    /// The clock synchronisation as the connection thread last updated it.
    pub fn clock_sync(&self) -> Option<ClockSync> {
        self.clock.borrow().clone()
    }

    /// Widens a 32-bit clock from the MCU (as in `analog_in_state`) to 64 bits.
    pub fn clock32_to_clock64(&self, clock32: u32) -> Option<u64> {
        self.clock
            .borrow()
            .as_ref()
            .map(|sync| sync.clock32_to_clock64(clock32))
    }

    /// Sends a command in Klipper's text form as soon as the link allows.
    ///
    /// # Errors
    /// When the connection is closed. A command the dictionary refuses is logged and dropped by
    /// the connection thread ([`connect`] checks the config phase before sending any of it).
    pub fn send_text(&self, text: impl Into<String>) -> Result<(), McuError> {
        self.request(Request::Text(text.into()))
    }

    /// Queues an encoded timed command (see [`HostSession::send_timed`]).
    ///
    /// # Errors
    /// When the connection is closed.
    pub fn send_timed(
        &self,
        message: Vec<u8>,
        min_clock: u64,
        req_clock: u64,
    ) -> Result<(), McuError> {
        self.request(Request::Timed {
            message,
            min_clock,
            req_clock,
        })
    }

    /// Asks `get_config`; the answer arrives as an event.
    ///
    /// # Errors
    /// When the connection is closed.
    pub fn query_config(&self) -> Result<(), McuError> {
        self.request(Request::QueryConfig)
    }

    fn request(&self, r: Request) -> Result<(), McuError> {
        self.requests
            .send(r)
            .map_err(|_| McuError::Closed(self.name.clone()))
    }

    /// Ends the connection and waits for its thread (the port is closed when this returns).
    pub async fn close(mut self) {
        let _ = self.requests.send(Request::Close);
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl McuHandle {
    /// Ends the connection and waits for its thread, blocking the caller (a thread outside the
    /// async runtime, such as a printer's): the port is closed when this returns.
    pub fn close_blocking(&mut self) {
        let _ = self.requests.send(Request::Close);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for McuHandle {
    fn drop(&mut self) {
        // A handle dropped without `close` still stops its thread; nobody waits for it then.
        let _ = self.requests.send(Request::Close);
    }
}

/// A byte stream with a short read timeout.
trait Port: Send {
    fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    fn write_all_bytes(&mut self, bytes: &[u8]) -> io::Result<()>;
}

struct SerialPort(Box<dyn serialport::SerialPort>);

impl Port for SerialPort {
    fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
    fn write_all_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.0.write_all(bytes)
    }
}

struct TcpPort(TcpStream);

impl Port for TcpPort {
    fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.0.read(buf) {
            Ok(0) => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the peer closed the connection",
            )),
            other => other,
        }
    }
    fn write_all_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.0.write_all(bytes)
    }
}

const READ_TIMEOUT: Duration = Duration::from_millis(1);

fn open_port(target: &McuTarget) -> io::Result<Box<dyn Port>> {
    match target {
        McuTarget::Serial { path, baud } => {
            let port = serialport::new(path, *baud)
                .timeout(READ_TIMEOUT)
                .open()
                .map_err(io::Error::from)?;
            Ok(Box::new(SerialPort(port)))
        }
        McuTarget::Tcp(addr) => {
            let stream = TcpStream::connect(addr)?;
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(READ_TIMEOUT))?;
            Ok(Box::new(TcpPort(stream)))
        }
    }
}

/// The host's time base: every connection measures host time from this instant, so the clock
/// estimates of a printer's MCUs share one time line (klippy's reactor clock).
pub fn host_epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Opens `target` and starts the connection thread for MCU `name`.
///
/// # Errors
/// [`McuError::Open`] when the port cannot be opened.
pub async fn open(
    name: &str,
    target: &McuTarget,
) -> Result<(McuHandle, mpsc::UnboundedReceiver<McuEvent>), McuError> {
    let t = target.clone();
    let port = tokio::task::spawn_blocking(move || open_port(&t))
        .await
        .map_err(|e| McuError::Open {
            target: target.clone(),
            source: io::Error::other(e.to_string()),
        })?
        .map_err(|source| McuError::Open {
            target: target.clone(),
            source,
        })?;
    let (req_tx, req_rx) = std_mpsc::channel();
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let (clock_tx, clock_rx) = watch::channel(None);
    let epoch = host_epoch();
    let thread_name = format!("mcu {name}");
    let mcu_name = name.to_owned();
    let thread = std::thread::Builder::new()
        .name(thread_name)
        .spawn(move || run_port(port, &mcu_name, epoch, &req_rx, &ev_tx, &clock_tx))
        .map_err(|source| McuError::Open {
            target: target.clone(),
            source,
        })?;
    tracing::info!(mcu = name, %target, "MCU port open");
    Ok((
        McuHandle {
            name: name.to_owned(),
            requests: req_tx,
            thread: Some(thread),
            epoch,
            clock: clock_rx,
        },
        ev_rx,
    ))
}

/// A block unacknowledged this long draws the starvation warning, s.
const LINK_STALL_WARN_S: f64 = 0.2;
/// At most one starvation warning this often, s.
const LINK_STALL_WARN_EVERY_S: f64 = 10.0;

/// The connection thread: owns the port and the session until asked to stop or the link ends.
fn run_port(
    mut port: Box<dyn Port>,
    name: &str,
    epoch: Instant,
    requests: &std_mpsc::Receiver<Request>,
    events: &mpsc::UnboundedSender<McuEvent>,
    clock: &watch::Sender<Option<ClockSync>>,
) {
    let now = || epoch.elapsed().as_secs_f64();
    let mut published_clock = None;
    let mut session = HostSession::new();
    let mut buf = [0_u8; 4096];
    let mut out = Vec::with_capacity(4096);
    let mut last_stall_warning = f64::NEG_INFINITY;
    loop {
        loop {
            match requests.try_recv() {
                Ok(Request::Close) | Err(std_mpsc::TryRecvError::Disconnected) => {
                    flush_on_close(port.as_mut(), &mut session, &now);
                    return;
                }
                Ok(Request::Text(text)) => {
                    if let Err(e) = session.send_text(&text) {
                        tracing::warn!(mcu = name, "command not sent: {e}");
                    }
                }
                Ok(Request::Timed {
                    message,
                    min_clock,
                    req_clock,
                }) => {
                    if let Err(e) = session.send_timed(message, min_clock, req_clock) {
                        tracing::warn!(mcu = name, "timed command not sent: {e}");
                    }
                }
                Ok(Request::QueryConfig) => {
                    if let Err(e) = session.query_config(now()) {
                        tracing::warn!(mcu = name, "get_config not sent: {e}");
                    }
                }
                Err(std_mpsc::TryRecvError::Empty) => break,
            }
        }
        out.clear();
        session.poll_transmit(now(), &mut out);
        if !out.is_empty()
            && let Err(e) = port.write_all_bytes(&out)
        {
            let _ = events.send(McuEvent::Disconnected {
                why: format!("write failed: {e}"),
            });
            return;
        }
        match port.read_some(&mut buf) {
            Ok(n) => session.handle_input(&buf[..n], now()),
            Err(e) if nothing_to_read(&e) => {}
            Err(e) => {
                let _ = events.send(McuEvent::Disconnected {
                    why: format!("read failed: {e}"),
                });
                return;
            }
        }
        // The warning before "Timer too close": a block unanswered this long means the host
        // or the OS's serial path is starved (the MCU answers within milliseconds).
        if let Some(age) = session.oldest_unacked_age_s(now())
            && age > LINK_STALL_WARN_S
            && now() - last_stall_warning >= LINK_STALL_WARN_EVERY_S
        {
            last_stall_warning = now();
            tracing::warn!(
                mcu = name,
                "the link to the MCU stalls: a command sent {:.0} ms ago is not acknowledged; \
                 the host is starved (a busy desktop, or the USB/serial path) and past about \
                 {:.1} s the MCU stops with \"Timer too close\" — close busy programs",
                age * 1e3,
                gantry_motion::toolhead::LIVE_MIN_STEP_LEAD_S
            );
        }
        // Publish clock synchronisation after each new sample (about once a second).
        if session.is_clock_synced()
            && let Some(sync) = session.clock_sync()
            && published_clock != Some(sync.last_clock())
        {
            published_clock = Some(sync.last_clock());
            clock.send_replace(Some(sync.clone()));
        }
        while let Some(event) = session.poll_event() {
            let lost = matches!(event, SessionEvent::Lost { .. });
            if events.send(McuEvent::Session(event)).is_err() || lost {
                return;
            }
        }
    }
}

/// A read that found nothing within its timeout (or was interrupted): not a failed port.
fn nothing_to_read(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// How long a closing connection keeps sending what it was handed and waiting for the MCU's
/// acknowledgement, s.
const CLOSE_FLUSH_S: f64 = 0.1;

/// Sends the commands handed to the connection before it was closed — an M112's
/// `emergency_stop` just before the printer lets go of the MCU — and waits (at most
/// [`CLOSE_FLUSH_S`]) for the MCU to acknowledge them; a port that fails ends it at once.
fn flush_on_close(port: &mut dyn Port, session: &mut HostSession, now: &dyn Fn() -> f64) {
    let deadline = now() + CLOSE_FLUSH_S;
    let mut buf = [0_u8; 4096];
    let mut out = Vec::new();
    loop {
        out.clear();
        session.poll_transmit(now(), &mut out);
        if !out.is_empty() && port.write_all_bytes(&out).is_err() {
            return;
        }
        if session.pending() == 0 || session.is_lost() || now() >= deadline {
            return;
        }
        match port.read_some(&mut buf) {
            Ok(n) => session.handle_input(&buf[..n], now()),
            Err(e) if nothing_to_read(&e) => {}
            Err(_) => return,
        }
    }
}

/// How [`connect`] found the MCU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigOutcome {
    /// It was unconfigured and got the config phase.
    Configured,
    /// It already ran this configuration (same CRC); nothing was sent.
    Reused,
}

/// What [`connect`] learned.
#[derive(Debug, Clone)]
pub struct McuInfo {
    /// The MCU's dictionary.
    pub dictionary: Arc<Dictionary>,
    /// Configured now or reused.
    pub outcome: ConfigOutcome,
    /// Move-queue slots.
    pub move_count: u16,
    /// The MCU clock frequency measured by clock synchronisation, Hz.
    pub measured_freq_hz: f64,
    /// The MCU's clock at start-up sync, ticks (its uptime).
    pub uptime_clock: u64,
}

/// The config phase for a dictionary: Klipper's text commands, the last being
/// `finalize_config crc=…`. Built once the dictionary is known (pins are checked against it).
pub type ConfigBuilder<'a> = dyn FnMut(&Dictionary) -> Result<Vec<String>, String> + Send + 'a;

/// A connected, configured MCU.
#[derive(Debug)]
pub struct Connected {
    /// Commands in.
    pub handle: McuHandle,
    /// What the MCU says from now on.
    pub events: mpsc::UnboundedReceiver<McuEvent>,
    /// What the start-up learned.
    pub info: McuInfo,
}

/// Opens `target` and runs klippy's connect sequence (see the module doc). An MCU running another
/// configuration is restarted (`reset`, or `emergency_stop` + `config_reset`: see
/// [`RestartCommand`]) and connected again: the port is reopened, as a USB board re-enumerates
/// after a reset and Klipper's Linux MCU makes a new pseudo-terminal.
///
/// # Errors
/// Shutdown, CRC mismatch without a restart command (or again after one), a config the
/// dictionary refuses, a port that fails or does not open, or no progress within `timeout`.
pub async fn connect(
    name: &str,
    target: &McuTarget,
    build_config: &mut ConfigBuilder<'_>,
    timeout: Duration,
) -> Result<Connected, McuError> {
    connect_with(name, target, build_config, timeout, false).await
}

/// [`connect`], and with `firmware_restart` klippy's FIRMWARE_RESTART: the MCU is restarted
/// first whatever state it is in (shut down included) with the command its dictionary has
/// ([`RestartCommand`]), then connected and configured afresh.
///
/// # Errors
/// As [`connect`]; with `firmware_restart`, also [`McuError::NoRestart`] when the dictionary has
/// neither `reset` nor `config_reset` (the board is restarted by hand: power or its button).
pub async fn connect_with(
    name: &str,
    target: &McuTarget,
    build_config: &mut ConfigBuilder<'_>,
    timeout: Duration,
    firmware_restart: bool,
) -> Result<Connected, McuError> {
    let attempt = connect_loop(name, target, build_config, firmware_restart, false);
    match tokio::time::timeout(timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(McuError::Timeout {
            name: name.to_owned(),
            seconds: timeout.as_secs(),
        }),
    }
}

/// The connect sequence until the MCU is configured, reconnecting once after a reset.
async fn connect_loop(
    name: &str,
    target: &McuTarget,
    build_config: &mut ConfigBuilder<'_>,
    firmware_restart: bool,
    mut reset_done: bool,
) -> Result<Connected, McuError> {
    loop {
        let (handle, mut events) = open_retrying(name, target, reset_done).await?;
        let force = firmware_restart && !reset_done;
        match run_sequence(&handle, &mut events, build_config, !reset_done, force).await {
            Err(e) => {
                // The port is closed before the error is returned, so the caller may open it
                // again at once (a serial port is opened exclusively).
                handle.close().await;
                return Err(e);
            }
            Ok(Sequence::Done(info)) => {
                return Ok(Connected {
                    handle,
                    events,
                    info,
                });
            }
            Ok(Sequence::ResetSent) => {
                handle.close().await;
                reset_done = true;
            }
        }
    }
}

/// The config phases of a printer's MCUs, built together once every dictionary is known (pins
/// and oids of all MCUs come from one printer.cfg): one command list per MCU, in order.
pub type PrinterConfigBuilder<'a> =
    dyn FnOnce(&[Arc<Dictionary>]) -> Result<Vec<Vec<String>>, String> + Send + 'a;

/// Connects every MCU of a printer (`(name, port)`, the primary first) as klippy does: each is
/// opened and identified, then `build_config` makes all config phases from the dictionaries,
/// then each MCU is configured (or reused, or reset and configured, as [`connect_with`]).
///
/// # Errors
/// As [`connect_with`], for the first MCU that fails; a board whose firmware changed across a
/// reset.
pub async fn connect_all(
    mcus: &[(String, McuTarget)],
    build_config: Box<PrinterConfigBuilder<'_>>,
    timeout: Duration,
    firmware_restart: bool,
) -> Result<Vec<Connected>, McuError> {
    let first = mcus.first().map_or("mcu", |(n, _)| n.as_str()).to_owned();
    let mut opened = Vec::with_capacity(mcus.len());
    let mut connected = Vec::with_capacity(mcus.len());
    let attempt = connect_all_steps(
        mcus,
        build_config,
        firmware_restart,
        &mut opened,
        &mut connected,
    );
    let result = match tokio::time::timeout(timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(McuError::Timeout {
            name: first,
            seconds: timeout.as_secs(),
        }),
    };
    match result {
        Ok(()) => Ok(connected),
        Err(e) => {
            // Every port is closed before the error is returned (see `connect_loop`).
            for (handle, _) in opened {
                handle.close().await;
            }
            for c in connected {
                c.handle.close().await;
            }
            Err(e)
        }
    }
}

/// [`connect_all`]'s sequence; the ports it opened stay in `opened` until configured (then in
/// `connected`), so that a failure or a timeout can close them.
async fn connect_all_steps(
    mcus: &[(String, McuTarget)],
    build_config: Box<PrinterConfigBuilder<'_>>,
    firmware_restart: bool,
    opened: &mut Vec<(McuHandle, mpsc::UnboundedReceiver<McuEvent>)>,
    connected: &mut Vec<Connected>,
) -> Result<(), McuError> {
    let mut dicts = Vec::with_capacity(mcus.len());
    for (name, target) in mcus {
        let (handle, mut events) = open(name, target).await?;
        let dict = wait_identified(&handle, &mut events).await;
        opened.push((handle, events));
        dicts.push(dict?);
    }
    let all_cmds = build_config(&dicts).map_err(|why| McuError::Ended {
        name: mcus.first().map_or("mcu", |(n, _)| n.as_str()).to_owned(),
        why,
    })?;
    for ((dict, cmds), (name, target)) in dicts.iter().zip(all_cmds).zip(mcus) {
        check_encodes(name, dict, &cmds)?;
        // The MCUs are configured in order: this one is the first still only opened.
        let (handle, events) = &mut opened[0];
        let sequence = finish_sequence(handle, events, dict, &cmds, true, firmware_restart).await?;
        let (handle, events) = opened.remove(0);
        match sequence {
            Sequence::Done(info) => connected.push(Connected {
                handle,
                events,
                info,
            }),
            Sequence::ResetSent => {
                handle.close().await;
                // The board restarts: connected again with the same config phase, as long as it
                // comes back with the same firmware.
                let mut again = |d: &Dictionary| -> Result<Vec<String>, String> {
                    if d.version == dict.version && d.build_versions == dict.build_versions {
                        Ok(cmds.clone())
                    } else {
                        Err("the MCU came back from its restart with other firmware".into())
                    }
                };
                connected.push(connect_loop(name, target, &mut again, false, true).await?);
            }
        }
    }
    Ok(())
}

/// Opens the port; after a reset, keeps trying every 250 ms while the board comes back.
async fn open_retrying(
    name: &str,
    target: &McuTarget,
    after_reset: bool,
) -> Result<(McuHandle, mpsc::UnboundedReceiver<McuEvent>), McuError> {
    if after_reset {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    loop {
        match open(name, target).await {
            Err(McuError::Open { .. }) if after_reset => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            other => return other,
        }
    }
}

enum Sequence {
    Done(McuInfo),
    ResetSent,
}

async fn run_sequence(
    handle: &McuHandle,
    events: &mut mpsc::UnboundedReceiver<McuEvent>,
    build_config: &mut ConfigBuilder<'_>,
    may_reset: bool,
    force_reset: bool,
) -> Result<Sequence, McuError> {
    let name = handle.name().to_owned();
    let dict = wait_identified(handle, events).await?;
    let cmds = build_config(&dict).map_err(|why| McuError::Ended {
        name: name.clone(),
        why,
    })?;
    check_encodes(&name, &dict, &cmds)?;
    finish_sequence(handle, events, &dict, &cmds, may_reset, force_reset).await
}

/// Waits for the MCU's dictionary: the first step of the connect sequence (clock
/// synchronisation starts after it; its events wait in the channel).
async fn wait_identified(
    handle: &McuHandle,
    events: &mut mpsc::UnboundedReceiver<McuEvent>,
) -> Result<Arc<Dictionary>, McuError> {
    let name = handle.name().to_owned();
    loop {
        let Some(event) = events.recv().await else {
            return Err(McuError::Closed(name));
        };
        match event {
            McuEvent::Disconnected { why } | McuEvent::Session(SessionEvent::Lost { why }) => {
                return Err(McuError::Ended { name, why });
            }
            McuEvent::Session(SessionEvent::Identified(dict)) => {
                tracing::info!(
                    mcu = %name,
                    version = dict.version.as_deref().unwrap_or("?"),
                    "dictionary loaded"
                );
                return Ok(dict);
            }
            McuEvent::Session(SessionEvent::Shutdown { reason, .. }) => {
                return Err(McuError::Shutdown { name, reason });
            }
            McuEvent::Session(_) => {}
        }
    }
}

/// Every config command must encode with the MCU's dictionary before any is sent.
fn check_encodes(name: &str, dict: &Dictionary, cmds: &[String]) -> Result<(), McuError> {
    for c in cmds {
        dict.encode_text(c).map_err(|e| McuError::Command {
            name: name.to_owned(),
            source: SessionError::Encode {
                text: c.clone(),
                source: e,
            },
        })?;
    }
    Ok(())
}

/// The connect sequence after identify: clock synchronisation, `get_config`, and the config
/// phase `cmds`, its reuse, or a reset (see the module doc).
async fn finish_sequence(
    handle: &McuHandle,
    events: &mut mpsc::UnboundedReceiver<McuEvent>,
    dict: &Arc<Dictionary>,
    cmds: &[String],
    may_reset: bool,
    force_reset: bool,
) -> Result<Sequence, McuError> {
    let name = handle.name().to_owned();
    let ended = |why: String| McuError::Ended {
        name: name.clone(),
        why,
    };
    let mut sent_config = false;
    let mut measured_freq_hz = 0.0;
    let mut uptime_clock = 0;
    loop {
        let Some(event) = events.recv().await else {
            return Err(McuError::Closed(name));
        };
        let event = match event {
            McuEvent::Disconnected { why } => return Err(ended(why)),
            McuEvent::Session(e) => e,
        };
        match event {
            SessionEvent::ClockSynced { freq_hz, clock } => {
                measured_freq_hz = freq_hz;
                uptime_clock = clock;
                handle.query_config()?;
            }
            SessionEvent::Config(state) => {
                if force_reset && may_reset {
                    let Some(restart) = RestartCommand::of(dict) else {
                        return Err(McuError::NoRestart { name });
                    };
                    tracing::info!(mcu = %name, ?restart, "firmware restart");
                    restart.send(handle).await?;
                    return Ok(Sequence::ResetSent);
                }
                match decide(state, config_crc(cmds), sent_config) {
                    Step::Shutdown => {
                        return Err(McuError::Shutdown {
                            name,
                            reason: "get_config reports it shut down".into(),
                        });
                    }
                    Step::Done(outcome) => {
                        return Ok(Sequence::Done(McuInfo {
                            dictionary: Arc::clone(dict),
                            outcome,
                            move_count: state.move_count,
                            measured_freq_hz,
                            uptime_clock,
                        }));
                    }
                    Step::SendConfig => {
                        for c in cmds {
                            handle.send_text(c.clone())?;
                        }
                        sent_config = true;
                        handle.query_config()?;
                    }
                    Step::Mismatch => match RestartCommand::of(dict).filter(|_| may_reset) {
                        Some(restart) => {
                            tracing::warn!(
                                mcu = %name,
                                ?restart,
                                "MCU runs another configuration: restarting it"
                            );
                            restart.send(handle).await?;
                            return Ok(Sequence::ResetSent);
                        }
                        None => return Err(McuError::CrcMismatch { name }),
                    },
                    Step::NotYet => handle.query_config()?,
                }
            }
            SessionEvent::Shutdown { reason, .. } => {
                return Err(McuError::Shutdown { name, reason });
            }
            SessionEvent::Lost { why } => return Err(ended(why)),
            SessionEvent::Identified(_)
            | SessionEvent::Starting
            | SessionEvent::Response { .. } => {}
        }
    }
}

/// How the host restarts an MCU's firmware (klippy's `_restart_via_command`), by what its
/// dictionary offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartCommand {
    /// `reset`: the board reboots (AVR, ARM, the simulator).
    Reset,
    /// `emergency_stop`, then `config_reset`, which clears the configuration and is accepted
    /// only once the MCU is shut down: boards without `reset` — Klipper's Linux-process MCU
    /// (it re-executes itself, with a new pseudo-terminal behind its symlink) and the PRU.
    ConfigReset,
}

impl RestartCommand {
    /// The restart `dict` allows: `reset` when it has it (klippy prefers it), else
    /// `config_reset`, else none.
    pub fn of(dict: &Dictionary) -> Option<Self> {
        if dict.command("reset").is_some() {
            Some(Self::Reset)
        } else if dict.command("config_reset").is_some() && dict.command("emergency_stop").is_some()
        {
            Some(Self::ConfigReset)
        } else {
            None
        }
    }

    /// The commands, in order, with the pause klippy leaves after each (15 ms: the shutdown
    /// takes effect before `config_reset`, and the last command goes out before the port
    /// closes; a little longer here for a desktop's serial path).
    pub fn commands(self) -> &'static [&'static str] {
        match self {
            Self::Reset => &["reset"],
            Self::ConfigReset => &["emergency_stop", "config_reset"],
        }
    }

    async fn send(self, handle: &McuHandle) -> Result<(), McuError> {
        for command in self.commands() {
            handle.send_text(*command)?;
            tokio::time::sleep(RESTART_PAUSE).await;
        }
        Ok(())
    }
}

/// The pause after each restart command.
const RESTART_PAUSE: Duration = Duration::from_millis(50);

/// The CRC klippy sends in `finalize_config` (the last config command).
pub(crate) fn config_crc(cmds: &[String]) -> Option<u32> {
    cmds.last()?
        .strip_prefix("finalize_config crc=")?
        .parse()
        .ok()
}

#[derive(Debug, PartialEq, Eq)]
enum Step {
    Shutdown,
    SendConfig,
    Mismatch,
    NotYet,
    Done(ConfigOutcome),
}

/// klippy's decision on a `config` answer.
fn decide(state: ConfigState, crc: Option<u32>, sent_config: bool) -> Step {
    if state.is_shutdown {
        return Step::Shutdown;
    }
    match (state.is_config, sent_config) {
        (false, false) => Step::SendConfig,
        (false, true) => Step::NotYet,
        (true, _) if Some(state.crc) != crc => Step::Mismatch,
        (true, false) => Step::Done(ConfigOutcome::Reused),
        (true, true) => Step::Done(ConfigOutcome::Configured),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(is_config: bool, crc: u32, is_shutdown: bool) -> ConfigState {
        ConfigState {
            is_config,
            crc,
            is_shutdown,
            move_count: 1024,
        }
    }

    #[test]
    fn klippys_decisions_on_a_config_answer() {
        assert_eq!(
            decide(state(false, 0, false), Some(7), false),
            Step::SendConfig
        );
        assert_eq!(decide(state(false, 0, false), Some(7), true), Step::NotYet);
        assert_eq!(
            decide(state(true, 7, false), Some(7), false),
            Step::Done(ConfigOutcome::Reused)
        );
        assert_eq!(
            decide(state(true, 7, false), Some(7), true),
            Step::Done(ConfigOutcome::Configured)
        );
        assert_eq!(
            decide(state(true, 8, false), Some(7), false),
            Step::Mismatch
        );
        assert_eq!(decide(state(true, 7, true), Some(7), false), Step::Shutdown);
    }

    #[test]
    fn the_crc_is_read_from_finalize_config() {
        let cmds = vec![
            "allocate_oids count=0".to_owned(),
            "finalize_config crc=1234".into(),
        ];
        assert_eq!(config_crc(&cmds), Some(1234));
        assert_eq!(config_crc(&[]), None);
    }

    /// Regression: FIRMWARE_RESTART and a CRC mismatch only knew `reset`, so Klipper's
    /// Linux-process MCU (`config_reset` only) was silently reused instead of restarted.
    #[test]
    fn restarts_with_reset_or_else_emergency_stop_and_config_reset() {
        let dict = |commands: &[&str]| {
            let entries: Vec<String> = commands
                .iter()
                .enumerate()
                .map(|(i, c)| format!("\"{c}\": {}", i + 10))
                .collect();
            Dictionary::from_json(&format!(
                r#"{{"commands": {{{}}}, "responses": {{}}, "config": {{"CLOCK_FREQ": 50000000}}}}"#,
                entries.join(", ")
            ))
            .expect("dictionary")
        };
        let linux = dict(&["config_reset", "emergency_stop", "get_config"]);
        assert_eq!(
            RestartCommand::of(&linux),
            Some(RestartCommand::ConfigReset)
        );
        assert_eq!(
            RestartCommand::ConfigReset.commands(),
            ["emergency_stop", "config_reset"]
        );
        let arm = dict(&["reset", "config_reset", "emergency_stop"]);
        assert_eq!(RestartCommand::of(&arm), Some(RestartCommand::Reset));
        assert_eq!(RestartCommand::Reset.commands(), ["reset"]);
        assert_eq!(RestartCommand::of(&dict(&["emergency_stop"])), None);
        assert_eq!(RestartCommand::of(&dict(&["config_reset"])), None);
    }

    /// Regression: a command handed to the connection just before `close` (an M112's
    /// `emergency_stop` as the printer lets go of the MCU) was dropped with the queue, so the
    /// MCU kept running. Against the simulated MCU on a pty: the next connect finds it shut down,
    /// and FIRMWARE_RESTART at once after that failed connect brings it back.
    #[cfg(unix)]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commands_sent_just_before_close_still_reach_the_mcu() {
        use std::sync::atomic::{AtomicBool, Ordering};

        let link = std::env::temp_dir().join(format!("gantry-mcu-close-{}", std::process::id()));
        let mut pty = gantry_sim::pty::open(&link).expect("pty");
        let stop = Arc::new(AtomicBool::new(false));
        let sim_stop = Arc::clone(&stop);
        let sim = std::thread::spawn(move || {
            let mut sim = gantry_sim::runtime::SimMcu::new();
            gantry_sim::pty::run(&mut pty, &mut sim, &sim_stop)
        });
        let target = McuTarget::from_serial_option(&link.to_string_lossy(), 250_000);
        let mut build = |_: &Dictionary| -> Result<Vec<String>, String> {
            let phase = "allocate_oids count=0";
            let crc = gantry_proto::crc::crc32(phase.as_bytes());
            Ok(vec![phase.to_owned(), format!("finalize_config crc={crc}")])
        };
        let timeout = Duration::from_secs(20);
        let first = connect("mcu", &target, &mut build, timeout)
            .await
            .expect("the sim connects");
        assert_eq!(first.info.outcome, ConfigOutcome::Configured);
        first.handle.send_text("emergency_stop").expect("sent");
        first.handle.close().await;
        let again = connect("mcu", &target, &mut build, timeout).await;
        // Regression: a connect that failed left its port open for a moment (the thread was not
        // joined), so FIRMWARE_RESTART right after found it busy ("Unable to acquire exclusive
        // lock on serial port").
        let restarted = connect_with("mcu", &target, &mut build, timeout, true).await;
        stop.store(true, Ordering::Relaxed);
        let _ = sim.join();
        match again {
            Err(McuError::Shutdown { .. }) => {}
            Err(e) => panic!("unexpected error: {e}"),
            Ok(c) => panic!(
                "the MCU never got emergency_stop: it is {:?}",
                c.info.outcome
            ),
        }
        let restarted = restarted.expect("FIRMWARE_RESTART right after the failed connect");
        assert_eq!(restarted.info.outcome, ConfigOutcome::Configured);
    }

    #[test]
    fn serial_options_name_ports_or_tcp() {
        assert_eq!(
            McuTarget::from_serial_option("tcp:127.0.0.1:7777", 250_000),
            McuTarget::Tcp("127.0.0.1:7777".into())
        );
        assert_eq!(
            McuTarget::from_serial_option("/dev/ttyACM0", 250_000).to_string(),
            "/dev/ttyACM0"
        );
    }
}
