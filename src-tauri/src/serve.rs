//! `gantry serve`: core's local API server without a window.
//!
//! It prints its endpoint (`{"ws_url": …, "token": …}`) as one JSON line on standard output, so a
//! browser page, a script or a test can connect, then serves until interrupted (Ctrl-C or SIGTERM)
//! and shuts down cleanly.

use std::io::Write as _;

use anyhow::Context as _;
use gantry_core::api::ApiServer;

/// Runs the API server until the process is asked to stop.
///
/// # Errors
/// When the runtime or the server cannot start, or standard output is closed.
pub fn run() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let server = ApiServer::bind_localhost()
            .await
            .context("cannot start the API server")?;
        let endpoint = serde_json::to_string(&server.endpoint())?;
        {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{endpoint}").context("cannot write to standard output")?;
            out.flush().context("cannot write to standard output")?;
        }
        server.run(stop_signal()).await;
        Ok(())
    })
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
