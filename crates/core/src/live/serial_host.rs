//! A live MCU over a real connection ([`crate::mcu`]: the thread owning the serial port or TCP
//! socket and the protocol session) in real time: the [`LiveHost`] that `gantry print` drives
//! a board or `gantry sim --pty` with.

use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use gantry_motion::printer::LiveEvent;
use gantry_motion::toolhead::McuMessage;
use gantry_proto::Dictionary;
use tokio::sync::mpsc;

use super::{LiveHost, encode_messages, live_event};
use crate::mcu::{McuEvent, McuHandle};

/// The printer's side of one connected MCU.
#[derive(Debug)]
pub struct SerialHost {
    handle: McuHandle,
    dictionary: Arc<Dictionary>,
    events: std_mpsc::Receiver<McuEvent>,
    /// A message that could not be sent: the next `wait` reports it and the printer halts.
    failure: Option<String>,
    forwarder: Option<std::thread::JoinHandle<()>>,
}

impl SerialHost {
    /// Wraps a connected MCU (see [`crate::mcu::connect`]): its events are forwarded from the
    /// async channel to the printer's thread.
    pub fn new(
        handle: McuHandle,
        dictionary: Arc<Dictionary>,
        mut events: mpsc::UnboundedReceiver<McuEvent>,
    ) -> Self {
        let (tx, rx) = std_mpsc::channel();
        let forwarder = std::thread::Builder::new()
            .name(format!("mcu-{}-events", handle.name()))
            .spawn(move || {
                while let Some(e) = events.blocking_recv() {
                    if tx.send(e).is_err() {
                        return;
                    }
                }
            })
            .ok();
        Self {
            handle,
            dictionary,
            events: rx,
            failure: None,
            forwarder,
        }
    }
}

impl Drop for SerialHost {
    fn drop(&mut self) {
        // The printer (and its thread) let go of the MCU: the port is closed before this
        // returns, so a reconnection (FIRMWARE_RESTART) can open it again at once.
        self.handle.close_blocking();
        // The forwarder ends once the connection thread dropped its sender.
        if let Some(f) = self.forwarder.take() {
            let _ = f.join();
        }
    }
}

impl LiveHost for SerialHost {
    fn monotonic(&mut self) -> f64 {
        self.handle.host_time()
    }

    fn estimated_print_time(&mut self, eventtime: f64) -> f64 {
        self.handle
            .estimated_print_time_at(eventtime)
            .unwrap_or(0.0)
    }

    fn clock32_to_clock64(&mut self, _mcu: usize, clock32: u32) -> u64 {
        self.handle
            .clock32_to_clock64(clock32)
            .unwrap_or(u64::from(clock32))
    }

    fn transmit(&mut self, mcu: usize, messages: Vec<McuMessage>) {
        let handle = &self.handle;
        let mut failed = None;
        let result = encode_messages(
            &self.dictionary,
            &messages,
            |bytes, min_clock, req_clock| {
                if let Err(e) = handle.send_timed(bytes, min_clock, req_clock) {
                    failed.get_or_insert(e.to_string());
                }
            },
        );
        if let Some(why) = result.err().or(failed) {
            tracing::error!(mcu, %why, "cannot send to the MCU");
            self.failure.get_or_insert(why);
        }
    }

    fn wait(&mut self, until: f64) -> Option<LiveEvent> {
        if let Some(why) = self.failure.take() {
            return Some(LiveEvent::Disconnected {
                mcu: 0,
                why: format!("cannot send to the MCU: {why}"),
            });
        }
        loop {
            let left = until - self.handle.host_time();
            let event = if left <= 0.0 {
                self.events.try_recv().ok()?
            } else {
                match self.events.recv_timeout(Duration::from_secs_f64(left)) {
                    Ok(e) => e,
                    Err(std_mpsc::RecvTimeoutError::Timeout) => return None,
                    Err(std_mpsc::RecvTimeoutError::Disconnected) => {
                        return Some(LiveEvent::Disconnected {
                            mcu: 0,
                            why: "the connection thread ended".into(),
                        });
                    }
                }
            };
            match event {
                McuEvent::Disconnected { why } => {
                    return Some(LiveEvent::Disconnected { mcu: 0, why });
                }
                McuEvent::Session(e) => {
                    if let Some(e) = live_event(Some(&self.dictionary), 0, e) {
                        return Some(e);
                    }
                }
            }
        }
    }
}
