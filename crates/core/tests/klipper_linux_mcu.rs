//! Gantry's start-up against real Klipper firmware: Klipper's Linux-process MCU (`src/linux`,
//! the firmware a Raspberry Pi runs as `[mcu host]`), built from Klipper's source by
//! `cargo xtask klipper-mcu` and started here as a child process that serves a pseudo-terminal.
//!
//! The host runs klippy's start-up on it through the public API: identify (the firmware's own
//! compressed dictionary), clock synchronisation, the config phase for a printer.cfg the Linux
//! MCU runs without hardware (`kinematics: none`, so `allocate_oids count=0` and
//! `finalize_config`, whose CRC must equal the one klippy sent in the captured session of
//! shared/oracle/live), reuse of that configuration by CRC on a second connect, a restart on a
//! CRC mismatch, and FIRMWARE_RESTART — the Linux MCU has no `reset`, only `config_reset` (re-executes itself, and
//! only when shut down), so the host sends `emergency_stop` then `config_reset` as klippy does —
//! both on a running MCU and on one shut down by M112.
//!
//! Ignored by default, and skipped (with the reason printed) unless `GANTRY_KLIPPER_MCU` names
//! the built `klipper.elf`: CI has no Klipper checkout. `cargo xtask klipper-mcu` builds it and
//! runs this test.

#![cfg(unix)]
#![allow(
    clippy::print_stderr,
    reason = "the test reports the firmware's version, clock and timings it saw"
)]

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gantry_core::live::connect::{ConnectError, LivePrinter, connect};
use gantry_core::mcu::{self, ConfigOutcome, McuError};
use gantry_core::motion::config::Config;
use gantry_core::motion::printer::Printer;
use gantry_core::proto::Dictionary;
use gantry_core::proto::dictionary::Constant;

/// The CRC klippy sent in `finalize_config` for this printer.cfg to the same firmware
/// (shared/oracle/live/linux_mcu_session.decoded.txt): crc32 of `allocate_oids count=0`.
const KLIPPY_CRC: u32 = 3_912_464_276;

/// The Linux MCU's nominal clock (src/linux/Kconfig `CLOCK_FREQ`).
const LINUX_CLOCK_FREQ: f64 = 50_000_000.0;

const TIMEOUT: Duration = Duration::from_secs(20);

/// The firmware process: killed, reaped and its directory removed when dropped, also when an
/// assertion fails.
struct KlipperMcu {
    child: Child,
    dir: PathBuf,
    /// Everything it wrote on stderr.
    stderr: Arc<Mutex<String>>,
}

impl KlipperMcu {
    /// Starts `elf -I DIR/klipper_host_mcu` (DIR named after the test) and waits for the pty symlink it creates.
    fn start(elf: &Path, test: &str) -> Self {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("klipper-linux-mcu-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let tty = dir.join("klipper_host_mcu");
        // No `-r` (realtime scheduling needs privileges) and no `-w` (watchdog device).
        let mut child = Command::new(elf)
            .arg("-I")
            .arg(&tty)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", elf.display()));
        let stderr = Arc::new(Mutex::new(String::new()));
        if let Some(pipe) = child.stderr.take() {
            let kept = Arc::clone(&stderr);
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    eprintln!("klipper.elf: {line}");
                    if let Ok(mut s) = kept.lock() {
                        s.push_str(&line);
                        s.push('\n');
                    }
                }
            });
        }
        let mut mcu = Self { child, dir, stderr };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_link(&tty).is_err() {
            if let Ok(Some(status)) = mcu.child.try_wait() {
                panic!(
                    "klipper.elf exited ({status}) before creating {}: {}",
                    tty.display(),
                    mcu.stderr_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "klipper.elf did not create {} within 10 s",
                tty.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        mcu
    }

    fn tty(&self) -> PathBuf {
        self.dir.join("klipper_host_mcu")
    }

    fn stderr_text(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Panics with the firmware's stderr if it is no longer running.
    fn assert_running(&mut self, when: &str) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "klipper.elf exited ({status}) {when}: {}",
                self.stderr_text()
            );
        }
    }
}

impl Drop for KlipperMcu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A printer.cfg the Linux MCU runs without GPIO, SPI, I2C or IIO devices.
fn write_config(dir: &Path, tty: &Path) -> (Config, PathBuf) {
    let text = format!(
        "[mcu]\nserial: {}\n\n[printer]\nkinematics: none\nmax_velocity: 1\nmax_accel: 1\n",
        tty.display()
    );
    let path = dir.join("printer.cfg");
    std::fs::write(&path, &text).expect("write printer.cfg");
    let config = Config::parse(&text, "printer.cfg").expect("printer.cfg parses");
    (config, path)
}

/// The config phase Gantry builds for `config` and this dictionary.
fn config_phase(config: &Config, dict: &Dictionary) -> Vec<String> {
    Printer::new(config, &[("mcu", dict)])
        .expect("the printer builds for the Linux MCU")
        .mcus[0]
        .config_phase()
}

/// Whether the firmware process behind `uptime_clock` (its clock at start-up sync) started less
/// than `elapsed` ago. Klipper's Linux MCU starts its 32-bit clock less than one second before it
/// wraps (src/linux/timer.c counts from the whole second after start-up), so a process that
/// started within `elapsed` reads at most 2^32 + `elapsed` × CLOCK_FREQ; one older than
/// `elapsed` + 1 s reads more.
fn started_within(uptime_clock: u64, elapsed: Duration) -> bool {
    #[allow(clippy::cast_precision_loss, reason = "ticks of a few minutes' uptime")]
    let since_wrap_s = (uptime_clock as f64 - 4_294_967_296.0) / LINUX_CLOCK_FREQ;
    since_wrap_s <= elapsed.as_secs_f64()
}

/// How long the firmware runs before a restart is asked, so that a restart shows in its clock
/// ([`started_within`]) however long the connect takes (up to this minus one second).
const AGE_BEFORE_RESTART: Duration = Duration::from_secs(3);

/// Print time advances at one second per host second, within `tolerance_s` over `window`.
fn assert_print_time_rate(
    mut estimate: impl FnMut() -> f64,
    window: Duration,
    tolerance_s: f64,
    what: &str,
) {
    let (t0, h0) = (estimate(), Instant::now());
    std::thread::sleep(window);
    let (t1, h1) = (estimate(), Instant::now());
    let host_s = (h1 - h0).as_secs_f64();
    let print_s = t1 - t0;
    eprintln!("{what}: print time advanced {print_s:.4} s in {host_s:.4} s of host time");
    assert!(
        (print_s - host_s).abs() < tolerance_s,
        "{what}: print time advanced {print_s} s in {host_s} s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Klipper's Linux MCU: `cargo xtask klipper-mcu` builds it and runs this test"]
async fn identify_config_reuse_and_firmware_restart_on_klippers_linux_mcu() {
    let Some(elf) = std::env::var_os("GANTRY_KLIPPER_MCU").filter(|p| !p.is_empty()) else {
        eprintln!(
            "skipped: GANTRY_KLIPPER_MCU is not set (the path of Klipper's Linux-process MCU, \
             out/klipper.elf; `cargo xtask klipper-mcu` builds it from Klipper's source and runs \
             this test)"
        );
        return;
    };
    let elf = PathBuf::from(elf);
    assert!(
        elf.is_file(),
        "GANTRY_KLIPPER_MCU={} is not a file",
        elf.display()
    );
    let mut firmware = KlipperMcu::start(&elf, "restart");
    let (config, cfg_path) = write_config(&firmware.dir, &firmware.tty());

    // 1. A fresh MCU: identify, clock sync, the config phase.
    let started = Instant::now();
    let live: LivePrinter = connect(&config, &cfg_path, None, TIMEOUT, false)
        .await
        .unwrap_or_else(|e| panic!("connect: {e}\nklipper.elf: {}", firmware.stderr_text()));
    let handshake = started.elapsed();
    let info = live.info.clone();
    let dict = Arc::clone(&info.dictionary);
    let (commands, responses, outputs) = dict.counts();
    eprintln!(
        "firmware: {}; MCU {:?}; {commands} commands, {responses} responses, {outputs} outputs",
        live.firmware(),
        dict.config.get("MCU")
    );
    eprintln!(
        "handshake (open -> configured): {:.0} ms; measured clock {:.0} Hz ({:+.0} ppm); \
         uptime {} ticks; {} moves",
        handshake.as_secs_f64() * 1e3,
        info.measured_freq_hz,
        (info.measured_freq_hz / LINUX_CLOCK_FREQ - 1.0) * 1e6,
        info.uptime_clock,
        info.move_count
    );
    assert_eq!(
        dict.config.get("MCU"),
        Some(&Constant::Str("linux".into())),
        "the Linux MCU names itself 'linux'"
    );
    assert_eq!(dict.clock_freq().ok(), Some(LINUX_CLOCK_FREQ));
    assert!(dict.version.is_some(), "the dictionary has a version");
    assert!(
        dict.build_versions
            .as_deref()
            .is_some_and(|b| b.contains("gcc")),
        "build_versions names the compiler: {:?}",
        dict.build_versions
    );
    for name in [
        "config_reset",
        "emergency_stop",
        "finalize_config",
        "get_config",
    ] {
        assert!(dict.command(name).is_some(), "the dictionary has {name}");
    }
    assert!(
        dict.command("reset").is_none(),
        "the Linux MCU has no `reset`"
    );
    assert_eq!(info.outcome, ConfigOutcome::Configured);
    assert!(
        info.move_count > 0,
        "finalize_config allocated the move queue"
    );
    // klippy's sanity bound on the start-up estimate is 1 %; both clocks here are the same
    // CLOCK_MONOTONIC, so a wider error would mean a wrong sample.
    assert!(
        (info.measured_freq_hz / LINUX_CLOCK_FREQ - 1.0).abs() < 0.01,
        "measured {} Hz",
        info.measured_freq_hz
    );
    let phase = config_phase(&config, &dict);
    assert_eq!(
        phase.last().map(String::as_str),
        Some(format!("finalize_config crc={KLIPPY_CRC}").as_str()),
        "Gantry's config phase has klippy's CRC: {phase:?}"
    );
    let mut live = live;
    assert_print_time_rate(
        || {
            live.printer
                .live_estimated_print_time()
                .expect("the printer is live")
        },
        Duration::from_secs(2),
        0.02,
        "live printer",
    );
    assert!(
        live.printer.halted().is_none(),
        "{:?}",
        live.printer.halted()
    );
    let first_uptime = info.uptime_clock;
    drop(live);
    firmware.assert_running("after the first connect");

    // 2. A second connect (through mcu.rs, the layer `gantry connect` uses) finds the MCU
    // configured with the same CRC and reuses it, as klippy does.
    let target = mcu::McuTarget::from_serial_option(&firmware.tty().to_string_lossy(), 250_000);
    let mut build =
        |d: &Dictionary| -> Result<Vec<String>, String> { Ok(config_phase(&config, d)) };
    let started = Instant::now();
    let connected = mcu::connect_with("mcu", &target, &mut build, TIMEOUT, false)
        .await
        .unwrap_or_else(|e| panic!("reconnect: {e}\nklipper.elf: {}", firmware.stderr_text()));
    eprintln!(
        "reconnect (reuse): {:.0} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    assert_eq!(connected.info.outcome, ConfigOutcome::Reused);
    assert!(
        connected.info.uptime_clock > first_uptime,
        "the same firmware process kept running"
    );
    // Periodic get_clock samples (one a second) keep the estimate on the MCU's clock.
    let handle = &connected.handle;
    assert_print_time_rate(
        || handle.estimated_print_time().expect("clock synchronised"),
        Duration::from_secs(3),
        0.02,
        "reused connection",
    );
    let now_print_time = handle.estimated_print_time().expect("clock synchronised");
    let clock = handle
        .print_time_to_clock(now_print_time)
        .expect("clock synchronised");
    #[allow(clippy::cast_precision_loss, reason = "ticks of a few minutes' uptime")]
    let clock_s = clock as f64 / LINUX_CLOCK_FREQ;
    assert!(
        (clock_s - now_print_time).abs() < 0.01,
        "print time {now_print_time} s is the MCU clock {clock} / CLOCK_FREQ"
    );
    connected.handle.close().await;
    firmware.assert_running("after the reuse");

    // 2b. Another configuration (the same commands with another CRC, as after a printer.cfg
    // edit): klippy's CRC mismatch, which restarts the MCU (emergency_stop + config_reset) and
    // configures it afresh.
    let mut build_other = |d: &Dictionary| -> Result<Vec<String>, String> {
        let mut phase = config_phase(&config, d);
        phase.pop();
        phase.push("finalize_config crc=1".into());
        Ok(phase)
    };
    let started = Instant::now();
    let other = mcu::connect_with("mcu", &target, &mut build_other, TIMEOUT, false)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "connect with another config: {e}\nklipper.elf: {}",
                firmware.stderr_text()
            )
        });
    eprintln!(
        "CRC mismatch -> config_reset -> configured: {:.0} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    assert_eq!(other.info.outcome, ConfigOutcome::Configured);
    assert!(
        started_within(other.info.uptime_clock, started.elapsed()),
        "the CRC mismatch restarted the firmware (uptime {} ticks)",
        other.info.uptime_clock
    );
    other.handle.close().await;
    firmware.assert_running("after the CRC mismatch's config_reset");

    // 3. FIRMWARE_RESTART on a running, configured MCU: emergency_stop + config_reset; the
    // process re-executes itself (a fresh clock) and gets the config phase again.
    std::thread::sleep(AGE_BEFORE_RESTART);
    let started = Instant::now();
    let restarted = connect(&config, &cfg_path, None, TIMEOUT, true)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "FIRMWARE_RESTART: {e}\nklipper.elf: {}",
                firmware.stderr_text()
            )
        });
    eprintln!(
        "FIRMWARE_RESTART (running MCU): {:.0} ms, uptime after {} ticks",
        started.elapsed().as_secs_f64() * 1e3,
        restarted.info.uptime_clock
    );
    assert_eq!(restarted.info.outcome, ConfigOutcome::Configured);
    assert!(
        started_within(restarted.info.uptime_clock, started.elapsed()),
        "config_reset restarted the firmware (uptime {} ticks)",
        restarted.info.uptime_clock
    );
    firmware.assert_running("after config_reset (it re-executes itself in place)");

    // 4. M112 shuts the MCU down; a plain connect reports it, FIRMWARE_RESTART recovers it.
    let mut restarted = restarted;
    restarted
        .printer
        .emergency_stop()
        .expect("the printer is live");
    drop(restarted);
    match connect(&config, &cfg_path, None, TIMEOUT, false).await {
        Err(ConnectError::Mcu(McuError::Shutdown { reason, .. })) => {
            eprintln!("connect to the shut-down MCU: {reason}");
        }
        Err(e) => panic!("connect to the shut-down MCU: unexpected error {e}"),
        Ok(live) => panic!(
            "connect to the shut-down MCU succeeded ({:?})",
            live.info.outcome
        ),
    }
    std::thread::sleep(AGE_BEFORE_RESTART);
    let started = Instant::now();
    let recovered = connect(&config, &cfg_path, None, TIMEOUT, true)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "FIRMWARE_RESTART of a shut-down MCU: {e}\nklipper.elf: {}",
                firmware.stderr_text()
            )
        });
    eprintln!(
        "FIRMWARE_RESTART (shut-down MCU): {:.0} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    assert_eq!(recovered.info.outcome, ConfigOutcome::Configured);
    assert!(
        started_within(recovered.info.uptime_clock, started.elapsed()),
        "config_reset restarted the shut-down firmware (uptime {} ticks)",
        recovered.info.uptime_clock
    );
    drop(recovered);
    firmware.assert_running("at the end");
}

/// The firmware as a printer's second MCU, as a Raspberry Pi's `[mcu host]` next to the
/// mainboard: the built-in simulated printer's board (the sim, 16 MHz, in this process behind a
/// pseudo-terminal) is the primary, Klipper's Linux MCU (50 MHz, its own process) the secondary.
/// Both are identified, configured, kept in clock sync, and a homed print runs to the step with
/// neither MCU shutting down.
#[test]
#[ignore = "needs Klipper's Linux MCU: `cargo xtask klipper-mcu` builds it and runs this test"]
fn klippers_linux_mcu_as_a_second_mcu_while_printing() {
    use std::sync::atomic::{AtomicBool, Ordering};

    use gantry_core::live::job::{self, JobOptions};
    use gantry_sim::runtime::SimMcu;

    let Some(elf) = std::env::var_os("GANTRY_KLIPPER_MCU").filter(|p| !p.is_empty()) else {
        eprintln!("skipped: GANTRY_KLIPPER_MCU is not set (see the first test)");
        return;
    };
    let firmware = KlipperMcu::start(Path::new(&elf), "second-mcu");
    let sim_tty = firmware.dir.join("gantry-sim");
    let mut pty = gantry_sim::pty::open(&sim_tty).expect("the sim's pty");
    let stop = Arc::new(AtomicBool::new(false));
    let sim = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut sim = SimMcu::new();
            let served = gantry_sim::pty::run(&mut pty, &mut sim, &stop);
            (sim, served.map_err(|e| e.to_string()))
        })
    };
    let text = gantry_core::printers::SIMULATED_CONFIG
        .replace(
            "serial: gantry-sim\n",
            &format!("serial: {}\n", sim_tty.display()),
        )
        .replace(
            "[printer]\n",
            &format!(
                "[mcu host]\nserial: {}\n\n[printer]\n",
                firmware.tty().display()
            ),
        );
    let path = firmware.dir.join("printer.cfg");
    std::fs::write(&path, &text).expect("write printer.cfg");
    let config = Config::parse(&text, "printer.cfg").expect("printer.cfg parses");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let mut live = runtime
        .block_on(connect(&config, &path, None, TIMEOUT, false))
        .unwrap_or_else(|e| panic!("connect: {e}\nklipper.elf: {}", firmware.stderr_text()));
    let (name, host) = live.secondaries.first().expect("the second MCU");
    assert_eq!(name, "host");
    assert_eq!(
        host.dictionary.config.get("MCU"),
        Some(&Constant::Str("linux".into()))
    );
    let gcode =
        "G28\nG90\nG1 Z5 F600\nG1 X50 Y60 F6000\nG1 X120 Y100 F3000\nG4 P1500\nG1 X10 Y10 F9000\n";
    let report = job::run(
        &mut live.printer,
        gcode.as_bytes(),
        JobOptions::default(),
        |_| {},
        |_| {},
    )
    .unwrap_or_else(|e| panic!("job: {e}\nklipper.elf: {}", firmware.stderr_text()));
    assert!(
        report.responses.iter().all(|r| !r.text.starts_with("!!")),
        "{:?}",
        report.responses
    );
    // The secondary's print time → clock line was aimed from both clock estimates: its slope
    // is the Linux MCU's 50 MHz as seen against the sim's clock (both count the same host
    // clock, so within 0.1 %).
    let q = &live.printer.toolhead.mcus[1];
    eprintln!(
        "[mcu host]: {:.1} ticks per print-time second, print time of its clock 0 = {:.3} s",
        q.clock_freq, q.time_offset
    );
    assert!(
        (q.clock_freq / LINUX_CLOCK_FREQ - 1.0).abs() < 1e-3,
        "{}",
        q.clock_freq
    );
    live.printer.live_idle(2.0).expect("both MCUs keep running");
    assert!(
        live.printer.halted().is_none(),
        "{:?}",
        live.printer.halted()
    );
    let pos = live.printer.toolhead.commanded_pos;
    drop(live);
    stop.store(true, Ordering::Relaxed);
    let (sim, served) = sim.join().expect("the sim thread");
    served.expect("the sim served its pty");
    let r = sim.report();
    assert!(r.fault.is_none(), "sim fault: {:?}", r.fault);
    for (axis, want) in [("x", pos[0]), ("y", pos[1]), ("z", pos[2])] {
        let c = r
            .carriages
            .iter()
            .find(|c| c.axis == axis)
            .expect("carriage");
        assert!(
            (c.position_mm - want).abs() < 1e-9,
            "{axis}: sim at {} mm, toolhead at {want} mm",
            c.position_mm
        );
    }
}
