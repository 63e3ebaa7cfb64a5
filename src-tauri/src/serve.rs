//! `gantry serve`: core's local API server without a window.
//!
//! It prints its endpoint (`{"ws_url": …, "token": …}`) as one JSON line on standard output, so a
//! browser page, a script or a test can connect, then serves until interrupted (Ctrl-C or SIGTERM)
//! and shuts down cleanly. With `--sim` it first starts the built-in simulated printer
//! (`gantry sim` with Gantry as its Klipper host) and serves it as printer `sim`; with
//! `--printer printer.cfg` (repeatable) it becomes the Klipper host of the boards each file names
//! and serves them (printer `klipper:PATH`) — a print farm's host without a window. With
//! `--remember` the printers added through the API are kept in the data folder's database and
//! brought back at the next start, as the desktop app does.

use std::io::Write as _;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use gantry_core::api::ApiServer;
use gantry_core::api::manage::ManagerOptions;
use gantry_core::api::methods::Context;

use crate::sim_printer::SimPrinter;

/// Arguments of `gantry serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Also run the built-in simulated printer (`gantry sim`) and serve it as printer `sim`.
    #[arg(long)]
    pub sim: bool,
    /// Drive the boards of this printer.cfg (its `[mcu] serial:` and every `[mcu NAME]`) and
    /// serve them as printer `klipper:PATH`; may be given several times.
    #[arg(long = "printer", value_name = "PRINTER_CFG")]
    pub printers: Vec<std::path::PathBuf>,
    /// Keep the printers added through the API (`printers.add`) in the data folder's database
    /// and bring them back at the next start, as the desktop app does.
    #[arg(long)]
    pub remember: bool,
}

/// Runs the API server until the process is asked to stop.
///
/// # Errors
/// When the runtime, the server or the simulated printer cannot start, or standard output is
/// closed.
pub fn run(args: &ServeArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let context = Arc::new(Context::new(ManagerOptions {
            keep_printers: args.remember,
            ..ManagerOptions::from_env()
        }));
        let sim = if args.sim {
            Some(SimPrinter::start(&context.fleet).await?)
        } else {
            None
        };
        if let Err(e) = add_boards(&context, &args.printers).await {
            context.shutdown().await;
            if let Some(sim) = sim {
                let fleet_context = Arc::clone(&context);
                let _ = tokio::task::spawn_blocking(move || sim.stop(&fleet_context.fleet)).await;
            }
            return Err(e);
        }
        // The saved printers (`--remember`) after those, which stay first; one also named by
        // `--printer` is in the fleet already and stays as that started it.
        context.manager.restore(&context.fleet).await;
        let server = ApiServer::bind_localhost()
            .await
            .context("cannot start the API server")?
            .with_context(Arc::clone(&context));
        let endpoint = serde_json::to_string(&server.endpoint())?;
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{endpoint}").context("cannot write to standard output")?;
            out.flush().context("cannot write to standard output")?;
        }
        server.run(stop_signal()).await;
        // Remote printers close and discovery stops before the simulated printer goes.
        context.shutdown().await;
        if let Some(sim) = sim {
            tokio::task::spawn_blocking(move || sim.stop(&context.fleet))
                .await
                .context("stopping the simulated printer")?;
        }
        Ok(())
    })
}

/// Adds the boards of each printer.cfg to the fleet (core's `printers.add` with `config`).
async fn add_boards(context: &Arc<Context>, paths: &[std::path::PathBuf]) -> anyhow::Result<()> {
    if paths.is_empty() {
        return Ok(());
    }
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let mut conn = gantry_core::api::methods::Connection::new(Arc::clone(context), tx);
    for path in paths {
        let full = std::path::absolute(path)
            .with_context(|| format!("cannot resolve {}", path.display()))?;
        // Named on the command line each time: not saved.
        let params = serde_json::json!({ "config": full.display().to_string(), "save": false });
        let added = gantry_core::api::methods::call(&mut conn, "printers.add", &params)
            .await
            .map_err(|e| anyhow::anyhow!("{}", e.message))?;
        tracing::info!(id = %added["printer"]["id"], "serving a printer");
    }
    Ok(())
}

/// Resolves on Ctrl-C, or on SIGTERM where there is one.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; stopping on Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("stop requested");
}
