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
use gantry_core::live::board::{self, BoardSetup};
use gantry_core::live::local::LocalPrinter;
use gantry_core::mcu::McuTarget;
use gantry_core::motion::config::Config;
use gantry_core::printers::{SIMULATED_CONFIG, SIMULATED_CONFIG_NAME};
use gantry_core::store;

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
    /// Starts `gantry sim --tcp 127.0.0.1:0` (the `gantry` beside the running executable, which is
    /// `gantry` itself or `gantry-desktop`), connects to it as its Klipper host, and adds it
    /// to `fleet` as `sim`. Its files go to `<data>/gcodes/sim`, its history to
    /// `<data>/gantry.db` (when there is a data folder).
    ///
    /// # Errors
    /// The sim process does not start or say its port, or the connection fails.
    pub async fn start(fleet: &Fleet) -> anyhow::Result<Self> {
        let exe = crate::launch::sibling_executable(crate::launch::CLI_EXE)?;
        // Its standard input is a pipe that `child` holds open: when this process ends, however
        // it ends (a desktop app killed by a signal runs no shutdown), the sim sees the end of
        // its input and stops too.
        let mut child = Command::new(exe)
            .args(["sim", "--tcp", "127.0.0.1:0", "--until-stdin-closes"])
            .stdin(Stdio::piped())
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
    let printer = board::start(BoardSetup {
        id: "sim".into(),
        config,
        config_path: PathBuf::from(SIMULATED_CONFIG_NAME),
        config_text: SIMULATED_CONFIG.to_owned(),
        target: Some(McuTarget::from_serial_option(
            &format!("tcp:{addr}"),
            250_000,
        )),
        data_dir: data_dir(),
        gcodes_folder: "sim".into(),
        timeout: START_TIMEOUT,
    })
    .await
    .context("cannot connect to the simulated MCU")?;
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
