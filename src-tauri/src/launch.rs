//! `gantry` with no subcommand: the desktop app, which is its own executable (`gantry-desktop`)
//! installed beside `gantry`; and the reverse lookup, the desktop finding `gantry` for its twin
//! processes.
//!
//! Why two executables (ARCHITECTURE.md, "Two executables"): an executable that links the
//! desktop's libraries loads all of them before `main`, about 65 MB resident and 60 ms of CPU,
//! on every `gantry batch` or `gantry estimate`; and a headless machine would need WebKitGTK
//! installed to run any subcommand.

use std::path::PathBuf;
use std::process::Command;

use anyhow::Context as _;

/// The desktop app's executable name (without the platform's suffix).
pub const DESKTOP_EXE: &str = "gantry-desktop";
/// The command line's executable name (without the platform's suffix).
pub const CLI_EXE: &str = "gantry";

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
            "{} is missing: Gantry's executables `{CLI_EXE}` and `{DESKTOP_EXE}` are installed \
             together (build both with `cargo build -p gantry --bins`)",
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
    let mut command = desktop_command(sibling_executable(DESKTOP_EXE)?, verbose);
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt as _;
        let error = command.exec();
        Err(error).with_context(|| format!("cannot start {}", command.get_program().display()))
    }
    #[cfg(not(unix))]
    {
        command
            .spawn()
            .with_context(|| format!("cannot start {}", command.get_program().display()))?;
        Ok(())
    }
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
