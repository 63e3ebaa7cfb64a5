//! Running child processes: with inherited stdio, with stdout teed (printed live and kept for
//! count parsing), or quietly for a probe such as `node --version`.

use std::fmt;
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use anyhow::{Context as _, Result, bail};

/// An error whose message has already been printed; `main` only sets the exit code.
#[derive(Debug)]
pub(crate) struct Reported;

impl fmt::Display for Reported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(reported above)")
    }
}

impl std::error::Error for Reported {}

/// `program arg…` for messages.
pub(crate) fn describe(cmd: &Command) -> String {
    // The program's file name: cargo is often `…/toolchains/…/bin/cargo`.
    let program = Path::new(cmd.get_program());
    let mut text = program
        .file_name()
        .unwrap_or(program.as_os_str())
        .to_string_lossy()
        .into_owned();
    for arg in cmd.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// Runs `cmd` with inherited stdio and returns its exit status.
pub(crate) fn status(cmd: &mut Command) -> Result<ExitStatus> {
    cmd.status()
        .with_context(|| format!("could not start `{}`", describe(cmd)))
}

/// Runs `cmd` with inherited stdio; an unsuccessful exit is an error.
pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    let status = status(cmd)?;
    if !status.success() {
        bail!("`{}` failed ({status})", describe(cmd));
    }
    Ok(())
}

/// Runs `cmd` with stdin closed and stderr inherited, copying its stdout to ours as it comes
/// while keeping it. Returns the exit status and the stdout text (lossy UTF-8).
pub(crate) fn run_tee(cmd: &mut Command) -> Result<(ExitStatus, String)> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start `{}`", describe(cmd)))?;
    let mut kept = Vec::new();
    if let Some(mut pipe) = child.stdout.take() {
        let mut buf = [0u8; 8192];
        let mut out = std::io::stdout();
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    kept.extend_from_slice(&buf[..n]);
                    // Our stdout going away (e.g. `| head`) must not stop the child's output
                    // from being kept.
                    let _ = out.write_all(&buf[..n]).and_then(|()| out.flush());
                }
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(err) => {
                    return Err(err).with_context(|| format!("reading from `{}`", describe(cmd)));
                }
            }
        }
    }
    let status = child
        .wait()
        .with_context(|| format!("waiting for `{}`", describe(cmd)))?;
    Ok((status, String::from_utf8_lossy(&kept).into_owned()))
}

/// Runs `cmd` quietly and returns its trimmed stdout, or `None` if it cannot start or fails.
pub(crate) fn probe(cmd: &mut Command) -> Option<String> {
    let output = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Finds `program` in `PATH`.
pub(crate) fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| is_file(p))
}

fn is_file(path: &Path) -> bool {
    path.metadata().is_ok_and(|m| m.is_file())
}

/// The exit code to pass on for a child's status (128 + signal for a killed Unix child).
pub(crate) fn exit_code(status: ExitStatus) -> u8 {
    if let Some(code) = status.code() {
        return u8::try_from(code).unwrap_or(1);
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt as _;
        if let Some(signal) = status.signal() {
            return u8::try_from(128 + signal).unwrap_or(1);
        }
    }
    1
}
