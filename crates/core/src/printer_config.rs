//! Reading printer.cfg from disk: the file system side of `gantry_motion::config`.
//!
//! The motion crate parses and never touches files; this module gives it a [`ConfigSource`] on
//! the file system (reads and `[include]` globs relative to the including file) and wraps the
//! result with the path in errors.

use std::path::{Path, PathBuf};

use gantry_motion::config::{Config, ConfigError, ConfigSource, glob_match};

/// The file system as a config source.
#[derive(Debug, Default, Clone, Copy)]
pub struct FsSource;

impl ConfigSource for FsSource {
    fn read(&self, path: &str) -> Result<String, String> {
        std::fs::read_to_string(path).map_err(|e| e.to_string())
    }

    fn glob(&self, pattern: &str) -> Result<Vec<String>, String> {
        let p = Path::new(pattern);
        let dir = p
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        let Some(name_pattern) = p.file_name().and_then(|n| n.to_str()) else {
            return Ok(Vec::new());
        };
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(format!("{}: {e}", dir.display())),
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if glob_match(name_pattern, name) {
                out.push(dir.join(name).to_string_lossy().into_owned());
            }
        }
        out.sort();
        Ok(out)
    }
}

/// Loads a printer.cfg and its includes.
///
/// # Errors
/// An unreadable file or a config error, naming the file and line.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    Config::load(&path.to_string_lossy(), &FsSource)
}
