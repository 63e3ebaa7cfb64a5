//! Where things are: the workspace root, cargo's target directory (with the CI rule that moves it
//! out of the checkout), Gantry's cache directory, and commands preset for cargo and npm.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

/// Paths and environment shared by every step.
#[derive(Debug)]
pub(crate) struct Ctx {
    /// The workspace root (parent of xtask/).
    pub(crate) root: PathBuf,
    /// Cargo's target directory, absolute.
    pub(crate) target_dir: TargetDir,
    /// `$HOME/.cache/gantry`, if a home directory is known.
    pub(crate) cache_dir: Option<PathBuf>,
}

/// Cargo's target directory and whether xtask chose it (and so must pass it to cargo).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TargetDir {
    /// Absolute path.
    pub(crate) path: PathBuf,
    /// Why this directory: shown to the user.
    pub(crate) reason: &'static str,
    /// `Some` when xtask sets `CARGO_TARGET_DIR` for its cargo children.
    pub(crate) set_for_cargo: bool,
}

/// Resolves cargo's target directory from the environment.
///
/// - `CARGO_TARGET_DIR` set and non-empty: that (relative paths are relative to the workspace root,
///   where xtask runs cargo).
/// - else, on CI (`CI=true`) with a known home: `$HOME/.cache/gantry/ci-target`, outside the
///   checkout so that the next fresh clone on the same machine builds incrementally.
/// - else cargo's default, `<root>/target`.
pub(crate) fn resolve_target_dir(
    root: &Path,
    cargo_target_dir: Option<&OsStr>,
    ci: bool,
    home: Option<&Path>,
) -> TargetDir {
    if let Some(dir) = cargo_target_dir.filter(|dir| !dir.is_empty()) {
        let dir = Path::new(dir);
        let path = if dir.is_absolute() {
            dir.to_path_buf()
        } else {
            root.join(dir)
        };
        return TargetDir {
            path,
            reason: "from CARGO_TARGET_DIR",
            set_for_cargo: false,
        };
    }
    if ci && let Some(home) = home {
        return TargetDir {
            path: home.join(".cache").join("gantry").join("ci-target"),
            reason: "CI=true: outside the checkout, so fresh clones build incrementally",
            set_for_cargo: true,
        };
    }
    TargetDir {
        path: root.join("target"),
        reason: "cargo's default",
        set_for_cargo: false,
    }
}

/// Whether the `CI` variable says this is a CI run (`true` or `1`, any case).
pub(crate) fn is_ci(value: Option<&OsStr>) -> bool {
    value
        .and_then(OsStr::to_str)
        .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// The user's home directory from the environment.
fn home_dir() -> Option<PathBuf> {
    let var = if cfg!(windows) { "USERPROFILE" } else { "HOME" };
    std::env::var_os(var)
        .filter(|home| !home.is_empty())
        .map(PathBuf::from)
}

impl Ctx {
    /// Reads the environment once.
    pub(crate) fn new() -> Result<Self> {
        let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let root = manifest_dir
            .parent()
            .with_context(|| {
                format!(
                    "xtask manifest dir {} has no parent",
                    manifest_dir.display()
                )
            })?
            .to_path_buf();
        if !root.join("Cargo.toml").is_file() {
            bail!(
                "workspace root {} (baked in when xtask was built) has no Cargo.toml; \
                 was the checkout moved? Rebuild xtask with `cargo clean -p xtask`",
                root.display()
            );
        }
        let home = home_dir();
        let target_dir = resolve_target_dir(
            &root,
            std::env::var_os("CARGO_TARGET_DIR").as_deref(),
            is_ci(std::env::var_os("CI").as_deref()),
            home.as_deref(),
        );
        let cache_dir = home.map(|home| home.join(".cache").join("gantry"));
        Ok(Self {
            root,
            target_dir,
            cache_dir,
        })
    }

    /// `cargo` (the one that runs xtask), in the workspace root, with `CARGO_TARGET_DIR` when
    /// xtask chose the target directory.
    pub(crate) fn cargo(&self) -> Command {
        let program = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
        let mut cmd = Command::new(program);
        cmd.current_dir(&self.root);
        if self.target_dir.set_for_cargo {
            cmd.env("CARGO_TARGET_DIR", &self.target_dir.path);
        }
        cmd
    }

    /// The UI's directory.
    pub(crate) fn ui_dir(&self) -> PathBuf {
        self.root.join("ui")
    }

    /// `npm` in ui/.
    pub(crate) fn npm(&self) -> Command {
        let mut cmd = Command::new(npm_program());
        cmd.current_dir(self.ui_dir());
        cmd
    }

    /// The debug `gantry` binary that `cargo build -p gantry` and `cargo test` produce.
    pub(crate) fn gantry_bin(&self) -> PathBuf {
        self.target_dir
            .path
            .join("debug")
            .join(format!("gantry{}", std::env::consts::EXE_SUFFIX))
    }

    /// Prints the target directory line of the setup.
    pub(crate) fn print_target_dir(&self) {
        println!(
            "==> cargo target dir: {} ({})",
            self.target_dir.path.display(),
            self.target_dir.reason
        );
    }
}

/// npm's program name (a batch file on Windows, which `Command` does not find without its extension).
pub(crate) fn npm_program() -> &'static str {
    if cfg!(windows) { "npm.cmd" } else { "npm" }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Absolute on every platform.
    fn root() -> PathBuf {
        std::env::temp_dir().join("gantry")
    }

    fn home() -> PathBuf {
        std::env::temp_dir().join("home")
    }

    #[test]
    fn default_is_target_under_the_root() {
        let dir = resolve_target_dir(&root(), None, false, Some(&home()));
        assert_eq!(dir.path, root().join("target"));
        assert!(!dir.set_for_cargo);
    }

    #[test]
    fn ci_moves_the_target_dir_out_of_the_checkout() {
        let dir = resolve_target_dir(&root(), None, true, Some(&home()));
        assert_eq!(
            dir.path,
            home().join(".cache").join("gantry").join("ci-target")
        );
        assert!(dir.set_for_cargo);
        let empty = resolve_target_dir(&root(), Some(OsStr::new("")), true, Some(&home()));
        assert_eq!(empty, dir, "an empty CARGO_TARGET_DIR counts as unset");
    }

    #[test]
    fn ci_without_home_falls_back_to_the_default() {
        let dir = resolve_target_dir(&root(), None, true, None);
        assert_eq!(dir.path, root().join("target"));
        assert!(!dir.set_for_cargo);
    }

    #[test]
    fn cargo_target_dir_wins_and_is_relative_to_the_root() {
        let rel = resolve_target_dir(&root(), Some(OsStr::new("out")), true, Some(&home()));
        assert_eq!(rel.path, root().join("out"));
        assert!(
            !rel.set_for_cargo,
            "cargo reads it from the inherited environment"
        );
        let elsewhere = std::env::temp_dir().join("elsewhere");
        let abs = resolve_target_dir(&root(), Some(elsewhere.as_os_str()), false, None);
        assert_eq!(abs.path, elsewhere);
    }

    #[test]
    fn ci_values() {
        assert!(is_ci(Some(OsStr::new("true"))));
        assert!(is_ci(Some(OsStr::new("TRUE"))));
        assert!(is_ci(Some(OsStr::new("1"))));
        assert!(!is_ci(Some(OsStr::new("false"))));
        assert!(!is_ci(Some(OsStr::new(""))));
        assert!(!is_ci(None));
    }
}
