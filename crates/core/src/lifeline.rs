//! A child process's lifeline to the process that started it: the parent gives the child a pipe
//! as its standard input and keeps the other end; the operating system closes that end however
//! the parent ends (an exit, a crash, a kill), and the child, reading its input to the end,
//! learns that it is on its own. `gantry sim --until-stdin-closes` (the desktop's and `gantry
//! serve --sim`'s simulated printer) and `gantry-twin --until-stdin-closes` (the desktop's twin
//! windows) stop then.

use std::io::Read as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Raises `flag` once standard input has ended (or can no longer be read), from a thread of its
/// own that holds standard input until then. Whatever arrives is ignored. The thread is not
/// joined: it waits in a read until the input ends, and otherwise ends with the process.
///
/// # Errors
/// When the thread cannot start.
pub fn raise_when_stdin_ends(flag: Arc<AtomicBool>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("stdin-lifeline".into())
        .spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buffer = [0_u8; 256];
            while matches!(stdin.read(&mut buffer), Ok(n) if n > 0) {}
            tracing::info!("standard input ended: the process that started this one is gone");
            flag.store(true, Ordering::Relaxed);
        })
        .map(drop)
}
