//! `api_endpoint`: hands the webview core's WebSocket URL and this launch's token.
//!
//! The token never leaves the process except through this command and the webview's connection
//! to 127.0.0.1; it is not written to disk or logged.

use gantry_core::api::Endpoint;

/// Core's API endpoint, managed as Tauri state.
#[derive(Debug)]
pub(crate) struct ApiState {
    /// Where the API server listens and its token.
    pub(crate) endpoint: Endpoint,
}

/// Returns `{ ws_url, token }` for the web UI's JSON-RPC client.
#[tauri::command]
pub(crate) fn api_endpoint(state: tauri::State<'_, ApiState>) -> Endpoint {
    state.endpoint.clone()
}
