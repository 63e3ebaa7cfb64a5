//! A printer.cfg's boards as a printer of the fleet: Gantry becomes the Klipper host of the MCUs
//! the file names (`[mcu] serial:` — a USB board, a UART, `gantry sim`'s pseudo-terminal or TCP
//! port — and every `[mcu NAME]`), connects and configures them ([`super::connect`]), and serves
//! the live printer as a [`LocalPrinter`]: status objects, console, files, jobs, history, and
//! FIRMWARE_RESTART / RESTART reconnecting the same way.
//!
//! The desktop's built-in simulated printer and a board added from the Printers page
//! (`printers.add` with a printer.cfg) both start here; only the file and the port differ.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use gantry_motion::config::Config;

use super::connect::{self, ConnectError};
use super::history::HistoryRecorder;
use super::local::{LocalError, LocalPrinter, LocalSetup, Reconnect};
use crate::mcu::McuTarget;
use crate::store::Store;

/// How a board printer is set up.
#[derive(Debug, Clone)]
pub struct BoardSetup {
    /// Its fleet id and name in the history (`sim`, `klipper:/home/me/printer.cfg`).
    pub id: String,
    /// Its printer.cfg, loaded (includes expanded).
    pub config: Config,
    /// Where the printer.cfg is (errors name it; a relative `serial:` is not resolved against it).
    pub config_path: PathBuf,
    /// The printer.cfg's text as the user wrote it, for the job history.
    pub config_text: String,
    /// The primary MCU's port instead of its `[mcu] serial:` (the built-in sim's TCP port).
    pub target: Option<McuTarget>,
    /// Gantry's data folder: the history database (`gantry.db`) and `gcodes/<folder>`; `None`:
    /// no history, files in the system's temporary folder.
    pub data_dir: Option<PathBuf>,
    /// The G-code folder's name under `gcodes/`.
    pub gcodes_folder: String,
    /// How long the MCUs may take to connect.
    pub timeout: Duration,
}

/// Why a board printer did not start.
#[derive(Debug, thiserror::Error)]
pub enum BoardError {
    /// The MCUs did not connect or refused the configuration, or printer.cfg lacks something.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The printer's host did not start.
    #[error(transparent)]
    Local(#[from] LocalError),
}

/// Connects the boards of `setup` and serves them as a local printer. Reconnection
/// (FIRMWARE_RESTART, RESTART) runs on the current tokio runtime, from the printer's thread.
///
/// # Errors
/// A connection that fails ([`ConnectError`], in Klipper's words where it has some) or a host
/// that does not start.
///
/// # Panics
/// Outside a tokio runtime.
pub async fn start(setup: BoardSetup) -> Result<Arc<LocalPrinter>, BoardError> {
    let live = connect::connect(
        &setup.config,
        &setup.config_path,
        setup.target.clone(),
        setup.timeout,
        false,
    )
    .await?;
    let firmware = live.firmware();
    let reconnect = reconnector(&setup);
    let history = setup
        .data_dir
        .as_deref()
        .and_then(|dir| open_history(dir, &setup.id, &setup.config_text));
    let gcodes_dir = setup
        .data_dir
        .clone()
        .unwrap_or_else(std::env::temp_dir)
        .join("gcodes")
        .join(&setup.gcodes_folder);
    let printer = LocalPrinter::start(
        live.printer,
        LocalSetup {
            name: setup.id.clone(),
            config: setup.config,
            gcodes_dir,
            firmware,
        },
        history,
        Some(reconnect),
    )?;
    Ok(printer)
}

/// FIRMWARE_RESTART / RESTART from the console: the same connection again, on this runtime. A
/// board that was just reset may take a moment to accept a host again: three tries.
fn reconnector(setup: &BoardSetup) -> Reconnect {
    let runtime = tokio::runtime::Handle::current();
    let config = setup.config.clone();
    let path = setup.config_path.clone();
    let target = setup.target.clone();
    let timeout = setup.timeout;
    Arc::new(move |firmware_restart| {
        let mut last = String::new();
        for attempt in 0..3 {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(500));
            }
            match runtime.block_on(connect::connect(
                &config,
                &path,
                target.clone(),
                timeout,
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
    })
}

/// The job history in `dir/gantry.db`; a database that cannot be opened is logged and the
/// printer runs without one.
fn open_history(dir: &Path, id: &str, config_text: &str) -> Option<HistoryRecorder> {
    let kind = if id == "sim" { "simulated" } else { "serial" };
    std::fs::create_dir_all(dir)
        .map_err(|e| e.to_string())
        .and_then(|()| Store::open(dir.join("gantry.db")).map_err(|e| e.to_string()))
        .and_then(|s| HistoryRecorder::spawn(s, id, kind, config_text).map_err(|e| e.to_string()))
        .inspect_err(|e| tracing::warn!(printer = id, error = %e, "job history off"))
        .ok()
}
