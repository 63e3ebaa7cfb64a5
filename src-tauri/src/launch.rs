//! `gantry` with no subcommand: the desktop app, which is its own executable (`gantry-desktop`)
//! installed beside `gantry`; `gantry twin`: the 3D twin, also its own executable
//! (`gantry-twin`); and the reverse lookups, the desktop finding `gantry` for the simulated
//! printer and `gantry-twin` for its twin windows.
//!
//! Why three executables (ARCHITECTURE.md, "Three executables"): an executable that links the
//! desktop's libraries loads all of them before `main`, about 65 MB resident and 60 ms of CPU,
//! on every `gantry batch` or `gantry estimate`, and a headless machine would need WebKitGTK
//! installed to run any subcommand; the twin's engine (Bevy, wgpu) is most of an executable's
//! code and relocations, which every subcommand would load and relocate at start.

use std::path::PathBuf;
use std::process::Command;

use anyhow::Context as _;

/// The desktop app's executable name (without the platform's suffix).
pub const DESKTOP_EXE: &str = "gantry-desktop";
/// The command line's executable name (without the platform's suffix).
pub const CLI_EXE: &str = "gantry";
/// The twin's executable name (without the platform's suffix).
pub const TWIN_EXE: &str = "gantry-twin";

/// The path of executable `name` in the directory of the running executable.
///
/// # Errors
/// When the running executable's path is unknown or `name` is not beside it.
pub fn sibling_executable(name: &str) -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe().context("cannot find Gantry's own executable")?;
    let dir = me
        .parent()
        .with_context(|| format!("{} has no parent directory", me.display()))?;
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if !path.is_file() {
        anyhow::bail!(
            "{} is missing: Gantry's executables `{CLI_EXE}`, `{DESKTOP_EXE}` and `{TWIN_EXE}` \
             are installed together (build them with `cargo build -p gantry --bins`)",
            path.display()
        );
    }
    Ok(path)
}

/// The command line starting the desktop executable at `exe` for `gantry` run with
/// `verbose` × `-v` and no subcommand.
pub fn desktop_command(exe: PathBuf, verbose: u8) -> Command {
    let mut command = Command::new(exe);
    if verbose > 0 {
        command.arg(format!("-{}", "v".repeat(usize::from(verbose))));
    }
    command
}

/// Opens the desktop app. On Unix the process becomes the desktop app (same process id, so
/// whoever started `gantry` — a terminal, a launcher, a WebDriver — keeps its handle); elsewhere
/// the app is started and this process ends (the desktop app has no console of its own).
///
/// # Errors
/// When the desktop executable is missing or cannot be started.
pub fn run(verbose: u8) -> anyhow::Result<()> {
    let command = desktop_command(sibling_executable(DESKTOP_EXE)?, verbose);
    #[cfg(unix)]
    {
        become_command(command)
    }
    #[cfg(not(unix))]
    {
        let mut command = command;
        command.spawn().with_context(|| cannot_start(&command))?;
        Ok(())
    }
}

/// The arguments `gantry-twin` takes for a `gantry` command line that ran the `twin`
/// subcommand: all of them but the program and the subcommand's name (the options before it
/// are the global ones, `-v`, which `gantry-twin` takes too).
pub fn twin_arguments(
    gantry_args: impl IntoIterator<Item = std::ffi::OsString>,
) -> Vec<std::ffi::OsString> {
    let mut args: Vec<_> = gantry_args.into_iter().skip(1).collect();
    if let Some(at) = args.iter().position(|a| a.as_os_str() == "twin") {
        args.remove(at);
    }
    args
}

/// Runs `gantry twin`: the twin's executable with the same arguments. On Unix the process
/// becomes the twin; elsewhere the twin runs as a child and its exit status is this one's.
///
/// # Errors
/// When the twin's executable is missing, cannot be started, or fails.
pub fn run_twin() -> anyhow::Result<()> {
    let mut command = Command::new(sibling_executable(TWIN_EXE)?);
    command.args(twin_arguments(std::env::args_os()));
    #[cfg(target_os = "linux")]
    if let Some(dir) = runtime_dir_for(std::env::var_os("XDG_RUNTIME_DIR").as_deref()) {
        command.env("XDG_RUNTIME_DIR", dir);
    }
    #[cfg(unix)]
    {
        become_command(command)
    }
    #[cfg(not(unix))]
    {
        let status = command.status().with_context(|| cannot_start(&command))?;
        if !status.success() {
            anyhow::bail!("the twin ended with {status}");
        }
        Ok(())
    }
}

/// The `XDG_RUNTIME_DIR` to give the twin where the environment has none (a headless
/// machine, a `su` or `ssh` session without a login manager): `/tmp/runtime-<uid>`, the
/// fallback Qt and others use, created private (0700) if missing. Without one, the graphics
/// stack's Wayland probe prints "error: XDG_RUNTIME_DIR is invalid or not set in the
/// environment." twice on every start, although nothing is wrong. `None` when the variable is
/// set, or the fallback is not a private directory of this user.
#[cfg(target_os = "linux")]
fn runtime_dir_for(current: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
    if current.is_some_and(|dir| !dir.is_empty()) {
        return None;
    }
    // This process's user: the owner of its /proc entry (no libc call needed).
    let uid = std::fs::metadata("/proc/self").ok()?.uid();
    let dir = std::env::temp_dir().join(format!("runtime-{uid}"));
    // (An existing one is checked below, whatever this returns.)
    let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
    let meta = std::fs::symlink_metadata(&dir).ok()?;
    let private = meta.is_dir() && meta.uid() == uid && meta.permissions().mode() & 0o077 == 0;
    private.then_some(dir)
}

/// Replaces this process with `command` (the process id stays, so whoever started it keeps its
/// handle); returns only when that fails.
#[cfg(unix)]
fn become_command(mut command: Command) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt as _;
    let error = command.exec();
    Err(error).with_context(|| cannot_start(&command))
}

/// The error context of a command that did not start.
fn cannot_start(command: &Command) -> String {
    format!("cannot start {}", command.get_program().display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbosity_is_passed_on() {
        let quiet = desktop_command(PathBuf::from("/opt/gantry/gantry-desktop"), 0);
        assert_eq!(quiet.get_args().count(), 0);
        let chatty = desktop_command(PathBuf::from("/opt/gantry/gantry-desktop"), 2);
        assert_eq!(chatty.get_args().collect::<Vec<_>>(), ["-vv"]);
    }

    #[test]
    fn the_twin_gets_every_argument_but_the_subcommand() {
        let args = |list: &[&str]| {
            list.iter()
                .map(std::ffi::OsString::from)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            twin_arguments(args(&["gantry", "-v", "twin", "a.gcode", "--at", "0.5"])),
            args(&["-v", "a.gcode", "--at", "0.5"])
        );
        // A file named `twin` after the subcommand is the twin's.
        assert_eq!(
            twin_arguments(args(&["/opt/gantry", "twin", "twin", "-vv"])),
            args(&["twin", "-vv"])
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_runtime_dir_only_where_none_is_set() {
        assert_eq!(
            runtime_dir_for(Some(std::ffi::OsStr::new("/run/user/1000"))),
            None
        );
        // Unset or empty: the private fallback, created if needed.
        for current in [None, Some(std::ffi::OsStr::new(""))] {
            let dir = runtime_dir_for(current).expect("a private runtime directory in /tmp");
            assert!(dir.is_dir(), "{}", dir.display());
            assert!(
                dir.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("runtime-")),
                "{}",
                dir.display()
            );
        }
    }

    #[test]
    fn a_missing_executable_is_named_with_the_fix() {
        // The test executable's directory (target/*/deps) holds no `gantry-desktop`.
        let error = sibling_executable(DESKTOP_EXE).expect_err("no desktop beside the test");
        let message = format!("{error:#}");
        assert!(message.contains("gantry-desktop"), "{message}");
        assert!(
            message.contains("cargo build -p gantry --bins"),
            "{message}"
        );
    }
}
