//! A private X server (Xvfb) for the desktop end-to-end and window tests, stopped when its guard
//! is dropped, so that a failing or panicking step never leaves it running.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

/// Displays tried, in order; high numbers stay clear of real sessions.
const DISPLAYS: std::ops::RangeInclusive<u32> = 90..=99;
/// How long Xvfb gets to create its socket.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// A running Xvfb; stopped (SIGTERM, then SIGKILL) on drop.
#[derive(Debug)]
pub(crate) struct Xvfb {
    child: Child,
    number: u32,
}

fn socket(number: u32) -> PathBuf {
    Path::new("/tmp/.X11-unix").join(format!("X{number}"))
}

fn lock_file(number: u32) -> PathBuf {
    PathBuf::from(format!("/tmp/.X{number}-lock"))
}

/// Whether display `number` belongs to a live X server: its lock file names a running process.
/// A stale socket or lock file (left by a killed server) is removed so the display can be used.
fn in_use(number: u32) -> bool {
    if let Ok(text) = std::fs::read_to_string(lock_file(number)) {
        let alive = match text.trim().parse::<u32>() {
            Ok(pid) => Path::new("/proc").join(pid.to_string()).exists(),
            Err(_) => true,
        };
        if alive {
            return true;
        }
    }
    for stale in [lock_file(number), socket(number)] {
        if stale.exists() && std::fs::remove_file(&stale).is_err() {
            return true; // Someone else's: leave it alone.
        }
    }
    false
}

impl Xvfb {
    /// Starts `Xvfb :N -screen 0 1280x800x24 -nolisten tcp` on the first free display in :90..:99
    /// and waits for its socket /tmp/.X11-unix/XN. Its output goes to a log file in the temp
    /// directory, named in the error if it does not start.
    pub(crate) fn start() -> Result<Self> {
        let mut tried = Vec::new();
        for number in DISPLAYS {
            if in_use(number) {
                continue;
            }
            let log_path = std::env::temp_dir().join(format!("gantry-xvfb-{number}.log"));
            let log = File::create(&log_path)
                .with_context(|| format!("creating {}", log_path.display()))?;
            let stderr = log.try_clone().context("duplicating the Xvfb log handle")?;
            let child = Command::new("Xvfb")
                .args([format!(":{number}").as_str(), "-screen", "0", "1280x800x24"])
                .args(["-nolisten", "tcp"])
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(stderr)
                .spawn()
                .context("could not start Xvfb (Debian package: xvfb)")?;
            let mut xvfb = Self { child, number };
            let deadline = Instant::now() + START_TIMEOUT;
            loop {
                if let Ok(Some(status)) = xvfb.child.try_wait() {
                    // Lost a race for this display, or a real failure: see the log.
                    tried.push(format!(
                        ":{number} exited ({status}), log {}",
                        log_path.display()
                    ));
                    break;
                }
                if socket(number).exists() {
                    return Ok(xvfb);
                }
                if Instant::now() > deadline {
                    tried.push(format!(
                        ":{number} made no socket in {}s, log {}",
                        START_TIMEOUT.as_secs(),
                        log_path.display()
                    ));
                    break; // Dropping `xvfb` kills it.
                }
                sleep(Duration::from_millis(50));
            }
        }
        if tried.is_empty() {
            bail!("no free X display in :90..:99 (each has a live X server's lock file in /tmp)");
        }
        bail!("Xvfb did not start: {}", tried.join("; "))
    }

    /// The `DISPLAY` value, e.g. `:90`.
    pub(crate) fn display(&self) -> String {
        format!(":{}", self.number)
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        // SIGTERM lets Xvfb remove its socket and lock file; SIGKILL only if it does not exit.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        println!("==> stopped Xvfb {}", self.display());
    }
}
