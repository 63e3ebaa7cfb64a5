//! The TCP front: the simulated MCU on a TCP port, for hosts that reach boards over the network
//! (`serial: tcp@127.0.0.1:PORT`-style setups, tests over a real socket).
//!
//! One host at a time: while one is connected, further connections are accepted and closed at
//! once. The MCU keeps running between hosts, like a board that stays powered while its USB cable
//! is replugged: its clock, configuration and link sequence carry over; the caller hears of each
//! disconnect. One thread owns the
//! listener and the connection; it waits for bytes (1 ms at most), feeds them to [`SimMcu`] at
//! the MCU clock the wall clock gives (16 MHz from the start of the run), and writes the replies
//! until the stop flag is raised. Bytes the MCU sends while no host is connected are lost, as on
//! a UART.

use std::io::{self, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::dictionary::CLOCK_FREQ;
use crate::runtime::SimMcu;

/// How long one wait for input lasts.
const POLL: Duration = Duration::from_millis(1);

/// Serves `sim` on `listener` in real time until `stop` is raised; `host_gone` runs each time a
/// host disconnects (to write a report, say).
///
/// # Errors
/// When the listener fails (a failing connection only ends that host's session).
pub fn run(
    listener: &TcpListener,
    sim: &mut SimMcu,
    stop: &AtomicBool,
    mut host_gone: impl FnMut(&SimMcu),
) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let start = Instant::now();
    let mut host: Option<TcpStream> = None;
    let mut buf = [0_u8; 4096];
    let mut out = Vec::with_capacity(4096);
    while !stop.load(Ordering::Relaxed) {
        let mut gone = false;
        match host.as_mut() {
            Some(stream) => match stream.read(&mut buf) {
                Ok(0) => gone = true,
                Ok(n) => sim.handle_input(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(_) => gone = true,
            },
            None => std::thread::sleep(POLL),
        }
        let clock =
            u64::try_from(start.elapsed().as_nanos() * u128::from(CLOCK_FREQ) / 1_000_000_000)
                .unwrap_or(u64::MAX);
        out.clear();
        sim.poll(clock, &mut out);
        if !out.is_empty()
            && let Some(stream) = host.as_mut()
            && stream.write_all(&out).is_err()
        {
            gone = true;
        }
        if gone {
            host = None;
            host_gone(sim);
        }
        // After the read, so a host that left is let go before the next one is let in.
        match listener.accept() {
            // A connection that cannot be set up is dropped like one that failed later.
            Ok((stream, _)) if host.is_none() => host = connect(stream).ok(),
            // One host at a time: a second connection is closed at once.
            Ok((stream, _)) => drop(stream),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn connect(stream: TcpStream) -> io::Result<TcpStream> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(POLL))?;
    stream.set_write_timeout(Some(Duration::from_secs(1)))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}
