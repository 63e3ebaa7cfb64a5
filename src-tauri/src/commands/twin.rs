//! `twin_open`: starts `gantry twin FILE` as its own process.
//!
//! Each twin owns its window and event loop (Tauri's and Bevy's loops cannot share a process on
//! every platform). The shell keeps the child handles, reaps the ones that ended, and ends the rest
//! when the app exits, so no twin outlives the app.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, PoisonError};

use serde::Serialize;

use super::CommandError;

/// The twin processes this app started.
#[derive(Debug, Default)]
pub struct TwinProcesses(Mutex<Vec<Child>>);

impl TwinProcesses {
    /// Ends every twin still running and waits for each.
    pub fn end_all(&self) {
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
pub struct TwinStarted {
    /// The twin's process id.
    pub pid: u32,
    /// The file it shows (or the bundled sample's name).
    pub path: String,
}

/// Starts the twin for `path`, or for the bundled sample when `path` is null.
#[tauri::command]
pub fn twin_open(
    path: Option<String>,
    state: tauri::State<'_, TwinProcesses>,
) -> Result<TwinStarted, CommandError> {
    let shown = path
        .clone()
        .unwrap_or_else(|| gantry_twin::SAMPLE_NAME.to_owned());
    let child = spawn_twin(path.map(PathBuf::from))?;
    let info = TwinStarted {
        pid: child.id(),
        path: shown,
    };
    state.add(child);
    Ok(info)
}

/// Spawns `<this executable> twin [FILE]`.
///
/// # Errors
/// When the file does not exist or the process cannot be started.
pub fn spawn_twin(path: Option<PathBuf>) -> Result<Child, CommandError> {
    let exe = std::env::current_exe().map_err(|e| {
        CommandError::new(
            "spawn_failed",
            format!("cannot find Gantry's own executable: {e}"),
        )
    })?;
    let mut command = Command::new(exe);
    command.arg("twin").stdin(Stdio::null());
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
