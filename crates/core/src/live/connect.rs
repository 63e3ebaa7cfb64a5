//! Connecting a live printer: klippy's start-up for a printer.cfg — the MCU's port from
//! `[mcu] serial:`, identify, clock synchronisation, the config phase built by motion for the
//! MCU's dictionary (or reuse of a matching configuration) — and the planner put live on the
//! connection. `gantry print`, the desktop's printers and `gantry serve --sim` all start here.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use gantry_motion::config::Config;
use gantry_motion::printer::Printer;
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
    /// What the start-up learned about the MCU.
    pub info: McuInfo,
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

/// Connects the printer of `config` (read from `path`) on `target` — by default its `[mcu]`
/// port (see [`mcu_target`]) — and puts the planner live on it.
///
/// # Errors
/// A printer with several MCUs (not supported yet), a config the MCU's dictionary cannot run,
/// an MCU that does not answer within `timeout` or refuses the configuration.
///
/// With `firmware_restart`, the MCU is reset first (klippy's FIRMWARE_RESTART: a shut-down MCU
/// comes back this way).
pub async fn connect(
    config: &Config,
    path: &Path,
    target: Option<McuTarget>,
    timeout: Duration,
    firmware_restart: bool,
) -> Result<LivePrinter, ConnectError> {
    if config.sections().any(|s| s.name().starts_with("mcu ")) {
        return Err(ConnectError::Config {
            path: path.display().to_string(),
            message: "printers with several MCUs cannot be driven live yet".into(),
        });
    }
    let target = match target {
        Some(t) => t,
        None => mcu_target(config, "mcu", path)?,
    };
    let mut built = None;
    let connected = {
        let mut build = |dict: &Dictionary| -> Result<Vec<String>, String> {
            let printer = Printer::new(config, &[("mcu", dict)])
                .map_err(|e| format!("printer.cfg not usable with this MCU: {e}"))?;
            let cmds = printer.mcus[0].config_phase();
            built = Some(printer);
            Ok(cmds)
        };
        mcu::connect_with("mcu", &target, &mut build, timeout, firmware_restart).await?
    };
    let Some(mut printer) = built else {
        return Err(ConnectError::NoConfig("mcu".into()));
    };
    let info = connected.info;
    let host = SerialHost::new(
        connected.handle,
        Arc::clone(&info.dictionary),
        connected.events,
    );
    printer.start_live(Box::new(host), &[usize::from(info.move_count)]);
    Ok(LivePrinter { printer, info })
}
