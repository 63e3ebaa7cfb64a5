//! The built-in simulated printer of the desktop app and `gantry serve --sim`: a real
//! `gantry sim --tcp` process (the simulated MCU, Klipper's wire protocol on a TCP port) with
//! Gantry as its Klipper host — connected, configured and served as the fleet's `sim`
//! printer by core's local printer. The same code path drives a board on USB; only the port
//! differs.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use gantry_core::fleet::{Fleet, FleetPrinter};
use gantry_core::live::history::HistoryRecorder;
use gantry_core::live::local::{LocalPrinter, LocalSetup, Reconnect};
use gantry_core::mcu::McuTarget;
use gantry_core::motion::config::Config;
use gantry_core::printers::{SIMULATED_CONFIG, SIMULATED_CONFIG_NAME};
use gantry_core::store::{self, Store};

/// How long the simulated MCU may take to start and connect.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The running simulated printer: the sim process and the local printer driving it.
pub struct SimPrinter {
    child: Child,
    printer: Arc<LocalPrinter>,
}

impl std::fmt::Debug for SimPrinter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimPrinter")
            .field("pid", &self.child.id())
            .finish_non_exhaustive()
    }
}

/// Gantry's data folder: `$GANTRY_DATA_DIR`, else the platform's (see
/// [`store::default_database_path`]).
pub fn data_dir() -> Option<PathBuf> {
    store::default_database_path().and_then(|p| p.parent().map(PathBuf::from))
}

impl SimPrinter {
    /// Starts `gantry sim --tcp 127.0.0.1:0`, connects to it as its Klipper host, and adds it
    /// to `fleet` as `sim`. Its files go to `<data>/gcodes/sim`, its history to
    /// `<data>/gantry.db` (when there is a data folder).
    ///
    /// # Errors
    /// The sim process does not start or say its port, or the connection fails.
    pub async fn start(fleet: &Fleet) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("cannot find the gantry program")?;
        let mut child = Command::new(exe)
            .args(["sim", "--tcp", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start the simulated MCU (gantry sim)")?;
        let started = match tokio::task::spawn_blocking({
            let stdout = child.stdout.take();
            move || read_address(stdout)
        })
        .await
        {
            Ok(Ok(addr)) => Ok(addr),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(anyhow::anyhow!("{e}")),
        };
        let addr = match started {
            Ok(a) => a,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        match connect(fleet, &addr).await {
            Ok(printer) => Ok(Self { child, printer }),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(e)
            }
        }
    }

    /// Stops the printer's host and the sim process.
    pub fn stop(mut self, fleet: &Fleet) {
        let _ = fleet.remove("sim");
        self.printer.close();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads `gantry-sim: serving on tcp ADDR` from the sim's standard output.
fn read_address(stdout: Option<std::process::ChildStdout>) -> anyhow::Result<String> {
    let Some(stdout) = stdout else {
        bail!("the simulated MCU has no output to read");
    };
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line.context("cannot read the simulated MCU's output")?;
        if let Some(addr) = line.strip_prefix("gantry-sim: serving on tcp ") {
            let addr = addr.trim().to_owned();
            // Keep draining its output so the sim never blocks on a full pipe.
            std::thread::spawn(move || for _ in lines {});
            return Ok(addr);
        }
    }
    bail!("the simulated MCU exited before it served its port")
}

async fn connect(fleet: &Fleet, addr: &str) -> anyhow::Result<Arc<LocalPrinter>> {
    let config = Config::parse(SIMULATED_CONFIG, SIMULATED_CONFIG_NAME)
        .context("the built-in printer.cfg does not parse")?;
    let target = McuTarget::from_serial_option(&format!("tcp:{addr}"), 250_000);
    let live = gantry_core::live::connect::connect(
        &config,
        std::path::Path::new(SIMULATED_CONFIG_NAME),
        Some(target.clone()),
        START_TIMEOUT,
        false,
    )
    .await
    .context("cannot connect to the simulated MCU")?;
    // FIRMWARE_RESTART / RESTART from the console: the same connection again, on this runtime.
    let runtime = tokio::runtime::Handle::current();
    let reconnect_config = config.clone();
    let reconnect: Reconnect = Arc::new(move |firmware_restart| {
        // A board that was just reset may take a moment to accept a host again: three tries.
        let mut last = String::new();
        for attempt in 0..3 {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(500));
            }
            match runtime.block_on(gantry_core::live::connect::connect(
                &reconnect_config,
                std::path::Path::new(SIMULATED_CONFIG_NAME),
                Some(target.clone()),
                START_TIMEOUT,
                firmware_restart && attempt == 0,
            )) {
                Ok(live) => {
                    let firmware = live.firmware();
                    return Ok((live.printer, firmware));
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(last)
    });
    let firmware = live.firmware();
    let data = data_dir();
    let history = data.as_ref().and_then(|dir| {
        let opened = std::fs::create_dir_all(dir)
            .map_err(|e| e.to_string())
            .and_then(|()| Store::open(dir.join("gantry.db")).map_err(|e| e.to_string()))
            .and_then(|s| {
                HistoryRecorder::spawn(s, "sim", "simulated", SIMULATED_CONFIG)
                    .map_err(|e| e.to_string())
            });
        opened
            .inspect_err(|e| tracing::warn!(error = %e, "job history off"))
            .ok()
    });
    let gcodes_dir = data
        .unwrap_or_else(std::env::temp_dir)
        .join("gcodes")
        .join("sim");
    let printer = LocalPrinter::start(
        live.printer,
        LocalSetup {
            name: "sim".into(),
            config,
            gcodes_dir,
            firmware,
        },
        history,
        Some(reconnect),
    )
    .context("cannot start the simulated printer's host")?;
    fleet
        .add(FleetPrinter {
            id: "sim".into(),
            name: "Gantry simulated printer".into(),
            address: format!("gantry sim (tcp {addr})"),
            backend: Arc::clone(&printer) as _,
        })
        .context("cannot add the simulated printer")?;
    tracing::info!(%addr, "simulated printer ready");
    Ok(printer)
}
