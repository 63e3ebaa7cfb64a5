//! The desktop app proper: core's API server on a tokio runtime, and the Tauri window whose web
//! UI talks to it.
//!
//! Start-up order matters: the API server binds first (a free port on 127.0.0.1, a fresh token), so
//! the window's content security policy can name exactly that origin in `connect-src` — the web
//! UI can reach core's WebSocket and nothing else on the network (images excepted: a printer's
//! webcam is an image from the printer's host). The built-in simulated printer
//! (`gantry sim` with Gantry as its Klipper host) starts in the background and joins the fleet
//! as `sim` when it is ready. Shutdown is explicit: when the last window closes, twin processes
//! are ended, the server stops and its task is awaited, then the simulated printer stops.

use std::sync::Arc;

use anyhow::Context as _;
use gantry_core::api::ApiServer;
use gantry_core::api::manage::ManagerOptions;
use gantry_core::api::methods::Context;
use tauri::utils::config::Csp;

use gantry_lib::sim_printer::SimPrinter;

use crate::commands;

/// The content security policy for a window whose API server listens on `port`.
pub(crate) fn content_security_policy(port: u16) -> String {
    [
        "default-src 'self' ipc: http://ipc.localhost".to_owned(),
        format!("connect-src ipc: http://ipc.localhost ws://127.0.0.1:{port}"),
        "script-src 'self'".to_owned(),
        "style-src 'self' 'unsafe-inline'".to_owned(),
        // Webcams: a remote printer's MJPEG stream or snapshot, shown as an image from its host.
        "img-src 'self' data: asset: http://asset.localhost http: https:".to_owned(),
        "object-src 'none'".to_owned(),
        "base-uri 'none'".to_owned(),
    ]
    .join("; ")
}

/// Opens the desktop window and runs until it is closed.
///
/// # Errors
/// When the runtime, the API server or the window cannot start.
pub(crate) fn run() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    tauri::async_runtime::set(runtime.handle().clone());

    // The printers a user adds are kept in the data folder's database and back at the next
    // start (connecting in the background, so the window does not wait for them).
    let api_context = Arc::new(Context::new(ManagerOptions {
        keep_printers: true,
        ..ManagerOptions::from_env()
    }));

    let server = runtime
        .block_on(ApiServer::bind_localhost())
        .context("cannot start the API server")?
        .with_context(Arc::clone(&api_context));
    let sim_context = Arc::clone(&api_context);
    let sim_task = runtime.spawn(async move {
        let sim = match SimPrinter::start(&sim_context.fleet).await {
            Ok(sim) => Some(sim),
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "the simulated printer did not start");
                None
            }
        };
        // After the simulated printer, which stays first in the list (the default printer).
        let restored = sim_context.manager.restore(&sim_context.fleet).await;
        if !restored.is_empty() {
            tracing::info!(?restored, "saved printers are back in the list");
        }
        sim
    });
    let endpoint = server.endpoint();
    let port = server.local_addr().port();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server_task = runtime.spawn(server.run(async {
        // A dropped sender also means "stop": the app is gone either way.
        let _ = stop_rx.await;
    }));
    tracing::info!(ws_url = %endpoint.ws_url, "core API ready");

    let mut context = tauri::generate_context!();
    context.config_mut().app.security.csp = Some(Csp::Policy(content_security_policy(port)));

    let app = tauri::Builder::default()
        .plugin(tauri_plugin_dialog::init())
        .manage(commands::api::ApiState { endpoint })
        .manage(commands::twin::TwinProcesses::default())
        .invoke_handler(tauri::generate_handler![
            commands::api::api_endpoint,
            commands::twin::twin_open,
        ])
        .build(context)
        .context("cannot start the desktop window")?;

    let code = app.run_return(|handle, event| {
        if let tauri::RunEvent::Exit = event {
            use tauri::Manager as _;
            handle.state::<commands::twin::TwinProcesses>().end_all();
        }
    });

    // The receiver may already be gone if the server stopped on its own; nothing to do then.
    let _ = stop_tx.send(());
    runtime
        .block_on(server_task)
        .context("the API server task failed")?;
    // Remote printers close and discovery stops before the simulated printer goes.
    runtime.block_on(api_context.shutdown());
    if let Ok(Some(sim)) = runtime.block_on(sim_task) {
        sim.stop(&api_context.fleet);
    }
    if code == 0 {
        Ok(())
    } else {
        anyhow::bail!("the desktop app exited with code {code}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_allows_exactly_the_api_origin() {
        let csp = content_security_policy(43_210);
        let connect = csp
            .split("; ")
            .find(|d| d.starts_with("connect-src"))
            .expect("connect-src");
        assert_eq!(
            connect,
            "connect-src ipc: http://ipc.localhost ws://127.0.0.1:43210"
        );
        assert!(!csp.contains("'unsafe-eval'"));
        assert!(csp.contains("script-src 'self'"));
    }
}
