//! `twin_open`: starts the twin (`gantry-twin [FILE]`, the executable beside this one) as its own
//! process; with `live`, the twin follows the
//! app's printer through core's API (`--live URL`, the token in `GANTRY_API_TOKEN`: an
//! environment is private to the user, a command line is not).
//!
//! Each twin owns its window and event loop (Tauri's and Bevy's loops cannot share a process on
//! every platform). The shell keeps the child handles, reaps the ones that ended, and ends the rest
//! when the app exits, so no twin outlives the app; and each twin's standard input is a pipe from
//! the app (`--until-stdin-closes`), so that it ends too when the app crashed or was killed.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, PoisonError};

use gantry_core::api::Endpoint;
use serde::Serialize;

use super::CommandError;
use super::api::ApiState;

/// The twin processes this app started.
#[derive(Debug, Default)]
pub(crate) struct TwinProcesses(Mutex<Vec<Child>>);

impl TwinProcesses {
    /// Ends every twin still running and waits for each.
    pub(crate) fn end_all(&self) {
        let mut children = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for mut child in children.drain(..) {
            // The child may have exited on its own already; both calls then fail harmlessly.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn add(&self, child: Child) {
        let mut children = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        children.retain_mut(|c| matches!(c.try_wait(), Ok(None)));
        children.push(child);
    }
}

/// What the webview learns about a started twin.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TwinStarted {
    /// The twin's process id.
    pub(crate) pid: u32,
    /// The file it shows (or the bundled sample's name).
    pub(crate) path: String,
}

/// Starts the twin for `path`, or for the bundled sample when `path` is null; with `live`, it
/// follows the app's printer (its job's file as the ghost, else `path`).
#[tauri::command]
pub(crate) fn twin_open(
    path: Option<String>,
    live: Option<bool>,
    state: tauri::State<'_, TwinProcesses>,
    api: tauri::State<'_, ApiState>,
) -> Result<TwinStarted, CommandError> {
    let live = live.unwrap_or(false);
    let shown = match (&path, live) {
        (Some(p), _) => p.clone(),
        (None, true) => "the printer's job".to_owned(),
        (None, false) => gantry_twin::SAMPLE_NAME.to_owned(),
    };
    let child = spawn_twin(path.map(PathBuf::from), live.then_some(&api.endpoint))?;
    let info = TwinStarted {
        pid: child.id(),
        path: shown,
    };
    state.add(child);
    Ok(info)
}

/// Spawns the twin (`gantry-twin [FILE]`, beside this executable, as `gantry twin` runs it),
/// following the printer served at `live`.
///
/// # Errors
/// When the file does not exist or the process cannot be started.
pub(crate) fn spawn_twin(
    path: Option<PathBuf>,
    live: Option<&Endpoint>,
) -> Result<Child, CommandError> {
    let exe = gantry_lib::launch::sibling_executable(gantry_lib::launch::TWIN_EXE)
        .map_err(|e| CommandError::new("spawn_failed", format!("{e:#}")))?;
    let mut command = Command::new(exe);
    // The twin ends when this pipe does: the child handle kept in `TwinProcesses` holds it, and
    // the operating system closes it however this app ends (a crash or a kill included).
    command.arg("--until-stdin-closes").stdin(Stdio::piped());
    if let Some(endpoint) = live {
        command
            .args(["--live", &endpoint.ws_url])
            .env("GANTRY_API_TOKEN", &endpoint.token);
    }
    if let Some(path) = &path {
        if !path.is_file() {
            return Err(CommandError::new(
                "not_found",
                format!("no such file: {}", path.display()),
            ));
        }
        command.arg(path);
    }
    command
        .spawn()
        .map_err(|e| CommandError::new("spawn_failed", format!("cannot start the twin: {e}")))
}
