//! The real-time front: the simulated MCU behind a pseudo-terminal, so any host — Gantry's, or
//! real klippy — opens it like a USB board (`serial: /tmp/gantry-sim` in printer.cfg).
//!
//! `open` creates the pty pair in raw mode and points a symlink at the slave device. `run` owns the
//! master side: it waits for bytes (1 ms at most), feeds them to [`SimMcu`] at the MCU clock that
//! the wall clock gives (16 MHz from the start of the run), and writes the replies, until the
//! stop flag is raised (SIGINT/SIGTERM in `gantry sim`). One thread owns the pty; the model stays
//! pure. The slave side is kept open by the sim, so a host may close and reopen the path; while
//! no host reads, replies that do not fit the pty's buffer are dropped (the master is
//! non-blocking), so the sim keeps time and stops on its signal.

use std::fs::File;
use std::io::{self, Read as _, Write as _};
use std::os::fd::{AsFd as _, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::pty::openpty;
use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};

use crate::dictionary::CLOCK_FREQ;
use crate::runtime::SimMcu;

/// An open pseudo-terminal with a symlink at the requested path.
#[derive(Debug)]
pub struct Pty {
    master: File,
    _slave: OwnedFd,
    link: PathBuf,
    device: PathBuf,
}

impl Pty {
    /// The path hosts open (the symlink).
    pub fn path(&self) -> &Path {
        &self.link
    }

    /// The pty device the symlink points at.
    pub fn device(&self) -> &Path {
        &self.device
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        // Only remove the link if it still points at our device.
        if std::fs::read_link(&self.link).is_ok_and(|t| t == self.device) {
            let _ = std::fs::remove_file(&self.link);
        }
    }
}

/// Opens a raw pty and links `path` to it (replacing an old symlink there, never a real file).
///
/// # Errors
/// When the pty cannot be opened or configured, or `path` exists and is not a symlink.
pub fn open(path: &Path) -> io::Result<Pty> {
    let pair = openpty(None, None).map_err(io::Error::from)?;
    let mut termios = tcgetattr(pair.slave.as_fd()).map_err(io::Error::from)?;
    cfmakeraw(&mut termios);
    tcsetattr(pair.slave.as_fd(), SetArg::TCSANOW, &termios).map_err(io::Error::from)?;
    let device = nix::unistd::ttyname(pair.slave.as_fd()).map_err(io::Error::from)?;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not a symlink; not replacing it",
                    path.display()
                ),
            ));
        }
        Err(_) => {}
    }
    std::os::unix::fs::symlink(&device, path)?;
    let flags = fcntl(pair.master.as_fd(), FcntlArg::F_GETFL).map_err(io::Error::from)?;
    fcntl(
        pair.master.as_fd(),
        FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
    )
    .map_err(io::Error::from)?;
    Ok(Pty {
        master: File::from(pair.master),
        _slave: pair.slave,
        link: path.to_owned(),
        device,
    })
}

/// Serves `sim` on `pty` in real time until `stop` is raised.
///
/// # Errors
/// When reading or writing the pty fails.
pub fn run(pty: &mut Pty, sim: &mut SimMcu, stop: &AtomicBool) -> io::Result<()> {
    let start = Instant::now();
    let mut buf = [0_u8; 4096];
    let mut out = Vec::with_capacity(4096);
    while !stop.load(Ordering::Relaxed) {
        let ready = {
            let mut fds = [PollFd::new(pty.master.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(1_u8)) {
                Ok(n) => n > 0,
                Err(nix::errno::Errno::EINTR) => false,
                Err(e) => return Err(e.into()),
            }
        };
        if ready {
            match pty.master.read(&mut buf) {
                Ok(n) => sim.handle_input(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        let elapsed = start.elapsed();
        let clock = u64::try_from(elapsed.as_nanos() * u128::from(CLOCK_FREQ) / 1_000_000_000)
            .unwrap_or(u64::MAX);
        out.clear();
        sim.poll(clock, &mut out);
        if !out.is_empty() {
            write_or_drop(&mut pty.master, &out)?;
        }
    }
    Ok(())
}

/// Writes `bytes` to the non-blocking master; what the pty cannot take now is dropped, as a
/// UART's bytes are when no host listens. Without a host reading the slave side its buffer
/// fills, and a blocking write would stop the MCU — and with it the stop flag's check — for good.
fn write_or_drop(master: &mut File, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        match master.write(bytes) {
            Ok(0) => return Ok(()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
