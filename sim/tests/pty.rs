//! The pty front in real time: a host that stops reading must not stall the simulated MCU.
//! Regression test: the sim wrote its replies with a blocking write, so once a host went away
//! (or stopped reading) and the pty's buffer filled, the MCU froze in `write` and never saw
//! SIGTERM.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use gantry_proto::{block, vlq};
use gantry_sim::runtime::SimMcu;

#[test]
fn a_host_that_never_reads_does_not_stall_the_mcu() {
    let path = std::env::temp_dir().join(format!("gantry-sim-pty-test-{}", std::process::id()));
    let mut pty = gantry_sim::pty::open(&path).expect("a pty");
    let stop = Arc::new(AtomicBool::new(false));
    let (done_tx, done_rx) = mpsc::channel();
    let server = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut sim = SimMcu::new();
            let served = gantry_sim::pty::run(&mut pty, &mut sim, &stop);
            let _ = done_tx.send(served.map_err(|e| e.to_string()));
        })
    };

    // Blocks of `identify offset=0 count=40` (command id 1 in every dictionary): each asks for
    // ~45 bytes back, hundreds of kilobytes in all — far more than a pty buffers.
    let mut payload = Vec::new();
    while payload.len() + 3 <= block::PAYLOAD_MAX {
        vlq::encode(1, &mut payload);
        vlq::encode(0, &mut payload);
        vlq::encode(40, &mut payload);
    }
    // The host writes on its own thread: with the old blocking write the MCU stopped reading,
    // and a host writing on the test's thread would hang the test instead of failing it.
    let host = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .expect("the host opens the pty");
    let writer = std::thread::spawn(move || {
        let mut host = host;
        let mut wire = Vec::new();
        for seq in 0..600_u16 {
            wire.clear();
            block::encode((seq % 16) as u8, &payload, &mut wire).expect("fits a block");
            host.write_all(&wire)
                .expect("the MCU reads what the host writes");
        }
        host
    });
    std::thread::sleep(Duration::from_millis(500));

    stop.store(true, Ordering::Relaxed);
    let served = done_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the MCU stops within 5 s of its stop flag although nobody reads its replies");
    assert_eq!(served, Ok(()));
    server.join().expect("the MCU thread ends");
    drop(writer.join().expect("the host wrote every block"));
    pty_link_cleanup(&path).expect("the link is gone");
}

/// The pty removes its link when dropped; a failed run may leave it behind.
fn pty_link_cleanup(path: &std::path::Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
