//! Connecting a live printer: klippy's start-up for a printer.cfg — the MCU's port from
//! `[mcu] serial:`, identify, clock synchronisation, the config phase built by motion for the
//! MCU's dictionary (or reuse of a matching configuration) — and the planner put live on the
//! connection. `gantry print`, the desktop's printers and `gantry serve --sim` all start here.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use gantry_motion::config::Config;
use gantry_motion::printer::{Printer, mcu_names};
use gantry_proto::Dictionary;

use super::serial_host::SerialHost;
use crate::mcu::{self, McuError, McuInfo, McuTarget};

/// Why a live printer could not be connected.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// printer.cfg lacks what a live printer needs.
    #[error("{path}: {message}")]
    Config {
        /// The printer.cfg.
        path: String,
        /// What is missing or wrong, in Klipper's words where it has some.
        message: String,
    },
    /// The MCU did not connect or refused the configuration.
    #[error(transparent)]
    Mcu(#[from] McuError),
    /// The connection came up without the configuration being built (cannot happen with a
    /// well-behaved MCU).
    #[error("MCU '{0}' connected without a configuration")]
    NoConfig(String),
}

/// A printer connected and live on its MCU.
#[derive(Debug)]
pub struct LivePrinter {
    /// The planner, live: run lines with [`Printer::live_run_line`].
    pub printer: Printer,
    /// What the start-up learned about the primary MCU.
    pub info: McuInfo,
    /// The other MCUs (`[mcu NAME]`) by name, in printer.cfg's order.
    pub secondaries: Vec<(String, McuInfo)>,
}

impl LivePrinter {
    /// The MCU firmware's version and build, as klippy prints it (`v0.12.0-… / gcc …`).
    pub fn firmware(&self) -> String {
        let d = &self.info.dictionary;
        format!(
            "{} / {}",
            d.version.as_deref().unwrap_or("?"),
            d.build_versions.as_deref().unwrap_or("?")
        )
    }
}

/// The port of MCU `mcu` (`mcu` or the NAME of `[mcu NAME]`) from its section's `serial` and
/// `baud` options.
///
/// # Errors
/// [`ConnectError::Config`] when the section has no `serial` or a `baud` that is not an integer.
pub fn mcu_target(config: &Config, mcu: &str, path: &Path) -> Result<McuTarget, ConnectError> {
    let section = if mcu == "mcu" {
        "mcu".to_owned()
    } else {
        format!("mcu {mcu}")
    };
    let config_error = |message: String| ConnectError::Config {
        path: path.display().to_string(),
        message,
    };
    let Some(serial) = config.get_str(&section, "serial") else {
        return Err(config_error(format!(
            "section [{section}] has no 'serial' option (the port of the board)"
        )));
    };
    let baud = match config.get_str(&section, "baud") {
        Some(b) => b.trim().parse().map_err(|_| {
            config_error(format!(
                "Unable to parse option 'baud' in section '{section}'"
            ))
        })?,
        None => 250_000,
    };
    Ok(McuTarget::from_serial_option(serial, baud))
}

/// Connects the printer of `config` (read from `path`) and puts the planner live on its MCUs:
/// the primary on `target` — by default its `[mcu]` port — and every `[mcu NAME]` on its own
/// port (see [`mcu_target`]); klippy's order: all identified, then all configured.
///
/// # Errors
/// A config the MCUs' dictionaries cannot run, an MCU that does not answer within `timeout` or
/// refuses the configuration.
///
/// With `firmware_restart`, every MCU is reset first (klippy's FIRMWARE_RESTART: a shut-down
/// MCU comes back this way).
pub async fn connect(
    config: &Config,
    path: &Path,
    target: Option<McuTarget>,
    timeout: Duration,
    firmware_restart: bool,
) -> Result<LivePrinter, ConnectError> {
    let names = mcu_names(config);
    let mut targets = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let t = match (i, &target) {
            (0, Some(t)) => t.clone(),
            _ => mcu_target(config, name, path)?,
        };
        targets.push((name.clone(), t));
    }
    let config_error = |message: String| ConnectError::Config {
        path: path.display().to_string(),
        message,
    };
    let built: std::sync::Mutex<Option<Printer>> = std::sync::Mutex::new(None);
    // Why the printer could not be built from the dictionaries, if it could not: a config
    // problem, told apart from a connection that failed.
    let build_error: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);
    let connected = {
        let names = &names;
        let built = &built;
        let build_error = &build_error;
        let build = move |dicts: &[Arc<Dictionary>]| -> Result<Vec<Vec<String>>, String> {
            let pairs: Vec<(&str, &Dictionary)> = names
                .iter()
                .map(String::as_str)
                .zip(dicts.iter().map(|d| &**d))
                .collect();
            let printer = Printer::new(config, &pairs).map_err(|e| {
                let why = format!("printer.cfg not usable with these MCUs: {e}");
                *build_error
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(why.clone());
                why
            })?;
            let cmds = printer.mcus.iter().map(|m| m.config_phase()).collect();
            *built
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(printer);
            Ok(cmds)
        };
        match mcu::connect_all(&targets, Box::new(build), timeout, firmware_restart).await {
            Ok(c) => c,
            Err(e) => {
                let why = build_error
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take();
                return Err(why.map_or_else(|| e.into(), config_error));
            }
        }
    };
    let Some(mut printer) = built
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
    else {
        return Err(ConnectError::NoConfig("mcu".into()));
    };
    let move_counts: Vec<usize> = connected
        .iter()
        .map(|c| usize::from(c.info.move_count))
        .collect();
    let mut links = Vec::with_capacity(connected.len());
    let mut infos = Vec::with_capacity(connected.len());
    for (c, name) in connected.into_iter().zip(&names) {
        links.push((c.handle, Arc::clone(&c.info.dictionary), c.events));
        infos.push((name.clone(), c.info));
    }
    let host = SerialHost::with_mcus(links);
    printer.start_live(Box::new(host), &move_counts);
    let (_, info) = infos.remove(0);
    Ok(LivePrinter {
        printer,
        info,
        secondaries: infos,
    })
}
