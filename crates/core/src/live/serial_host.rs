//! Live MCUs over real connections ([`crate::mcu`]: one thread owning each serial port or TCP
//! socket and its protocol session) in real time: the [`LiveHost`] that `gantry print` drives
//! a board or `gantry sim --pty` with — one MCU, or a printer's several (a toolboard, a second
//! mainboard).
//!
//! Every MCU's events are forwarded into one channel for the printer's thread, tagged with the
//! MCU's index. The first MCU is the primary: print time is its clock in seconds. Each other
//! MCU's print time → clock line is a [`SecondarySync`] re-aimed from both clock estimates when
//! the printer asks ([`LiveHost::calibrate_clock`]).

use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use gantry_motion::printer::LiveEvent;
use gantry_motion::toolhead::McuMessage;
use gantry_proto::Dictionary;
use gantry_proto::clocksync::SecondarySync;
use tokio::sync::mpsc;

use super::{LiveHost, encode_messages, live_event};
use crate::mcu::{McuEvent, McuHandle};

/// One connected MCU as the host drives it.
#[derive(Debug)]
struct Link {
    handle: McuHandle,
    dictionary: Arc<Dictionary>,
    /// A secondary MCU's conversion once the primary and it are synchronised.
    secondary: Option<SecondarySync>,
}

/// The printer's side of its connected MCUs.
#[derive(Debug)]
pub struct SerialHost {
    links: Vec<Link>,
    events: std_mpsc::Receiver<(usize, McuEvent)>,
    /// A message that could not be sent: the next `wait` reports it and the printer halts.
    failure: Option<(usize, String)>,
    forwarders: Vec<std::thread::JoinHandle<()>>,
}

impl SerialHost {
    /// Wraps a printer's connected MCUs, the primary first (see [`crate::mcu::connect_all`]):
    /// their events are forwarded from the async channels to the printer's thread.
    pub fn with_mcus(
        mcus: Vec<(
            McuHandle,
            Arc<Dictionary>,
            mpsc::UnboundedReceiver<McuEvent>,
        )>,
    ) -> Self {
        let (tx, rx) = std_mpsc::channel();
        let mut links = Vec::with_capacity(mcus.len());
        let mut forwarders = Vec::with_capacity(mcus.len());
        for (index, (handle, dictionary, mut events)) in mcus.into_iter().enumerate() {
            let tx = tx.clone();
            let forwarder = std::thread::Builder::new()
                .name(format!("mcu-{}-events", handle.name()))
                .spawn(move || {
                    while let Some(e) = events.blocking_recv() {
                        if tx.send((index, e)).is_err() {
                            return;
                        }
                    }
                });
            match forwarder {
                Ok(f) => forwarders.push(f),
                Err(e) => tracing::error!(mcu = handle.name(), "no event thread: {e}"),
            }
            links.push(Link {
                handle,
                dictionary,
                secondary: None,
            });
        }
        Self {
            links,
            events: rx,
            failure: None,
            forwarders,
        }
    }

    fn primary(&self) -> &McuHandle {
        &self.links[0].handle
    }
}

impl Drop for SerialHost {
    fn drop(&mut self) {
        // The printer (and its thread) let go of the MCUs: the ports are closed before this
        // returns, so a reconnection (FIRMWARE_RESTART) can open them again at once.
        for link in &mut self.links {
            link.handle.close_blocking();
        }
        // The forwarders end once the connection threads dropped their senders.
        for f in self.forwarders.drain(..) {
            let _ = f.join();
        }
    }
}

impl LiveHost for SerialHost {
    fn monotonic(&mut self) -> f64 {
        self.primary().host_time()
    }

    fn estimated_print_time(&mut self, eventtime: f64) -> f64 {
        self.primary()
            .estimated_print_time_at(eventtime)
            .unwrap_or(0.0)
    }

    fn clock32_to_clock64(&mut self, mcu: usize, clock32: u32) -> u64 {
        self.links
            .get(mcu)
            .and_then(|l| l.handle.clock32_to_clock64(clock32))
            .unwrap_or(u64::from(clock32))
    }

    fn calibrate_clock(
        &mut self,
        mcu: usize,
        print_time: f64,
        eventtime: f64,
    ) -> Option<(f64, f64)> {
        if mcu == 0 {
            return None;
        }
        let main = self.links.first()?.handle.clock_sync()?;
        let link = self.links.get_mut(mcu)?;
        let local = link.handle.clock_sync()?;
        Some(super::calibrate_secondary(
            &mut link.secondary,
            &main,
            &local,
            print_time,
            eventtime,
        ))
    }

    fn transmit(&mut self, mcu: usize, messages: Vec<McuMessage>) {
        let Some(link) = self.links.get(mcu) else {
            self.failure
                .get_or_insert((mcu, format!("no MCU with index {mcu}")));
            return;
        };
        let handle = &link.handle;
        let mut failed = None;
        let result = encode_messages(
            &link.dictionary,
            &messages,
            |bytes, min_clock, req_clock| {
                if let Err(e) = handle.send_timed(bytes, min_clock, req_clock) {
                    failed.get_or_insert(e.to_string());
                }
            },
        );
        if let Some(why) = result.err().or(failed) {
            tracing::error!(mcu = handle.name(), %why, "cannot send to the MCU");
            self.failure.get_or_insert((mcu, why));
        }
    }

    fn wait(&mut self, until: f64) -> Option<LiveEvent> {
        if let Some((mcu, why)) = self.failure.take() {
            return Some(LiveEvent::Disconnected {
                mcu,
                why: format!("cannot send to the MCU: {why}"),
            });
        }
        loop {
            let left = until - self.primary().host_time();
            let (mcu, event) = if left <= 0.0 {
                self.events.try_recv().ok()?
            } else {
                match self.events.recv_timeout(Duration::from_secs_f64(left)) {
                    Ok(e) => e,
                    Err(std_mpsc::RecvTimeoutError::Timeout) => return None,
                    Err(std_mpsc::RecvTimeoutError::Disconnected) => {
                        return Some(LiveEvent::Disconnected {
                            mcu: 0,
                            why: "the connection threads ended".into(),
                        });
                    }
                }
            };
            match event {
                McuEvent::Disconnected { why } => {
                    return Some(LiveEvent::Disconnected { mcu, why });
                }
                McuEvent::Session(e) => {
                    let dict = self.links.get(mcu).map(|l| &*l.dictionary);
                    if let Some(e) = live_event(dict, mcu, e) {
                        return Some(e);
                    }
                }
            }
        }
    }
}
