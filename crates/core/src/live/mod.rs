//! The live host: Gantry's planner driving MCUs in real time (or on a virtual clock).
//!
//! [`gantry_motion::printer::Printer`] runs klippy's reactor for one G-code stream through the
//! [`LiveHost`] trait (time, clock estimates, the wire). This module provides the hosts:
//! - [`virtual_host::VirtualHost`]: the simulated MCU in process on a virtual clock — the test
//!   suite's printer and offline simulation, faster than real time, with an optionally faulty
//!   wire.
//! - [`serial_host::SerialHost`]: real connections ([`crate::mcu`]'s threads owning the ports) in
//!   real time.
//!
//! and [`job`], which prints a G-code file through either: progress by file position, the
//! printer's responses, the end state. [`connect`] runs klippy's start-up for a printer.cfg
//! and puts the planner live on the MCU; [`board`] does it for a printer.cfg and serves the
//! result in the fleet; [`local`] serves such a printer as a
//! [`crate::model::PrinterBackend`] from its own thread (status objects, console, files,
//! jobs, history).

pub mod board;
pub mod connect;
pub mod history;
pub mod job;
pub mod local;
pub mod serial_host;
pub mod virtual_host;

use gantry_motion::output::StreamEncoder;
use gantry_motion::printer::LiveEvent;
use gantry_motion::toolhead::McuMessage;
use gantry_proto::Dictionary;
use gantry_proto::msgformat::Value;
use gantry_proto::session::SessionEvent;

pub use gantry_motion::printer::LiveHost;

/// A secondary MCU's print time → clock line re-aimed at host time `eventtime` with the
/// toolhead at `print_time` ([`LiveHost::calibrate_clock`]); `line` is made from both clock
/// estimates the first time.
fn calibrate_secondary(
    line: &mut Option<gantry_proto::clocksync::SecondarySync>,
    main: &gantry_proto::clocksync::ClockSync,
    local: &gantry_proto::clocksync::ClockSync,
    print_time: f64,
    eventtime: f64,
) -> (f64, f64) {
    line.get_or_insert_with(|| {
        gantry_proto::clocksync::SecondarySync::connect(main, local, eventtime)
    })
    .calibrate(main, local, print_time, eventtime)
}

/// Converts a session event of MCU `mcu` to what the printer takes (`None`: the session's own
/// business — dictionary, clock sync, config answers).
pub fn live_event(dict: Option<&Dictionary>, mcu: usize, event: SessionEvent) -> Option<LiveEvent> {
    match event {
        SessionEvent::Response {
            name,
            values,
            receive_time_s,
        } => {
            let format = dict.and_then(|d| d.response(&name));
            let mut params = Vec::with_capacity(values.len());
            let mut data = Vec::new();
            for (i, v) in values.into_iter().enumerate() {
                match v {
                    Value::Int(n) => {
                        let key = format
                            .and_then(|f| f.params.get(i))
                            .map_or_else(|| format!("#{i}"), |p| p.name.clone());
                        params.push((key, n));
                    }
                    Value::Bytes(b) if data.is_empty() => data = b,
                    Value::Bytes(_) => {}
                }
            }
            Some(LiveEvent::Response {
                mcu,
                name,
                params,
                data,
                receive_time: receive_time_s,
            })
        }
        SessionEvent::Shutdown { reason, .. } => Some(LiveEvent::Shutdown { mcu, reason }),
        SessionEvent::Lost { why } => Some(LiveEvent::Disconnected { mcu, why }),
        SessionEvent::Identified(_)
        | SessionEvent::ClockSynced { .. }
        | SessionEvent::Config(_)
        | SessionEvent::Starting => None,
    }
}

/// Encodes planner messages for `dict`, each unframed, calling `queue(bytes, min_clock,
/// req_clock)` for each. A message the dictionary refuses is an error naming it (nothing after
/// it is queued: the planner and the firmware disagree, so the print cannot go on).
///
/// # Errors
/// The first message that does not encode.
pub fn encode_messages(
    dict: &Dictionary,
    messages: &[McuMessage],
    mut queue: impl FnMut(Vec<u8>, u64, u64),
) -> Result<(), String> {
    let mut enc = StreamEncoder::new(dict).map_err(|e| e.to_string())?;
    for m in messages {
        let mut bytes = Vec::with_capacity(8);
        enc.encode_message(m, &mut bytes)
            .map_err(|e| e.to_string())?;
        queue(bytes, m.min_clock, m.req_clock);
    }
    Ok(())
}
