//! The host side of a link: sequence numbers, acknowledgements, retransmission and flow control,
//! as a state machine with time as an argument.
//!
//! Verbs, in the quinn style: [`HostLink::send`] queues an encoded message (id and parameters);
//! [`HostLink::handle_input`] takes bytes read from the port; [`HostLink::poll_transmit`] gives
//! bytes to write; [`HostLink::poll_timeout`] says when [`HostLink::handle_timeout`] must run;
//! [`HostLink::poll_event`] hands out what arrived. The owner of the port drives it; nothing here
//! sleeps, spawns or reads a clock.
//!
//! Klipper's rules, kept here:
//! - Every block carries the low 4 bits of a 64-bit sequence; the MCU's reply nibble is extended
//!   against the last one seen. At most [`MAX_PENDING_BLOCKS`] blocks are unacknowledged.
//! - Every MCU block acknowledges: its nibble is "one more than the last host block accepted".
//!   An empty block that does not advance is a NAK and triggers a fast retransmission.
//! - Unacknowledged blocks are retransmitted all together (go-back-N, a leading 0x7E, the
//!   original sequence bytes) after the retransmission timeout: RFC 6298 with Klipper's start
//!   (`srtt = 10 × first sample`), bounds 25 ms..5 s, doubling on timeout, Karn's rule. Unlike
//!   Klipper, the back-off ends at the first advancing acknowledgement: with 1 % of bytes
//!   corrupted and a full window, Klipper's rule left the timeout at 5 s for minutes.
//! - The MCU keeps its sequence counter across host sessions, so a new link must learn it. Klipper
//!   sends its first commands blind and adopts the nibble of the first reply, losing those
//!   commands (its callers retry). Gantry first sends an empty block as a probe — the MCU answers
//!   every valid block, ACK or NAK, with the nibble it expects, and an empty block carries no
//!   command to lose — then adopts that nibble and starts sending. The probe is repeated every
//!   retransmission timeout until a reply comes.
//! - An empty block whose nibble does not advance the last ACK is a NAK (a response block
//!   acknowledges too, but only empty blocks count for this rule, as in Klipper's serialqueue).

use std::collections::VecDeque;

use crate::block::{self, Check};

/// The most blocks in flight.
pub const MAX_PENDING_BLOCKS: u64 = 12;
/// The shortest retransmission timeout, seconds.
pub const MIN_RTO_S: f64 = 0.025;
/// The longest retransmission timeout, seconds.
pub const MAX_RTO_S: f64 = 5.0;

/// What the link reports.
#[derive(Debug, Clone, PartialEq)]
pub enum LinkEvent {
    /// A block of messages from the MCU (the payload: message ids and parameters).
    Received {
        /// The payload bytes.
        payload: Vec<u8>,
        /// Host time the block was read, seconds.
        receive_time_s: f64,
        /// Host time the newest acknowledged host block was sent, or `None` when it was
        /// retransmitted (unknown), as clock synchronisation needs.
        sent_time_s: Option<f64>,
    },
    /// The link learned the MCU's sequence; queued messages flow from now on.
    Synchronised {
        /// The sequence nibble the MCU expected.
        mcu_seq: u8,
    },
}

/// Counters for diagnostics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Blocks sent for the first time.
    pub blocks_sent: u64,
    /// Retransmission bursts.
    pub retransmits: u64,
    /// Valid blocks received.
    pub blocks_received: u64,
    /// Bytes dropped while resynchronising.
    pub bytes_invalid: u64,
    /// Valid blocks ignored (acknowledging a block never sent).
    pub blocks_ignored: u64,
    /// Synchronisation probes sent.
    pub probes_sent: u64,
}

#[derive(Debug, Clone)]
struct Sent {
    seq: u64,
    bytes: Vec<u8>,
    /// How many messages the block carries.
    message_count: usize,
    sent_time_s: f64,
}

/// The host end of one MCU link.
#[derive(Debug, Clone)]
pub struct HostLink {
    synchronised: bool,
    probe_due: bool,
    send_seq: u64,
    receive_seq: u64,
    last_ack_seq: u64,
    ready: VecDeque<Vec<u8>>,
    sent: VecDeque<Sent>,
    rx: Vec<u8>,
    out: Vec<u8>,
    events: VecDeque<LinkEvent>,
    rto_s: f64,
    rto_base_s: f64,
    srtt_s: f64,
    rttvar_s: f64,
    rtt_sample: Option<(u64, f64)>,
    ignore_nak_seq: u64,
    retransmit_seq: u64,
    retransmit_at_s: Option<f64>,
    last_ack_sent_time_s: Option<f64>,
    receive_window: Option<usize>,
    stats: LinkStats,
}

impl Default for HostLink {
    fn default() -> Self {
        Self::new()
    }
}

impl HostLink {
    /// A link before its first reply.
    pub fn new() -> Self {
        Self {
            synchronised: false,
            probe_due: true,
            send_seq: 1,
            receive_seq: 1,
            last_ack_seq: 1,
            ready: VecDeque::new(),
            sent: VecDeque::new(),
            rx: Vec::new(),
            out: Vec::new(),
            events: VecDeque::new(),
            rto_s: MIN_RTO_S,
            rto_base_s: MIN_RTO_S,
            srtt_s: 0.0,
            rttvar_s: 0.0,
            rtt_sample: None,
            ignore_nak_seq: 0,
            retransmit_seq: 0,
            retransmit_at_s: None,
            last_ack_sent_time_s: None,
            receive_window: None,
            stats: LinkStats::default(),
        }
    }

    /// Limits unacknowledged bytes to the MCU's `RECEIVE_WINDOW`, when its dictionary has one.
    pub fn set_receive_window(&mut self, bytes: Option<usize>) {
        self.receive_window = bytes;
    }

    /// Queues one encoded message (id and parameters, at most 59 bytes).
    ///
    /// # Errors
    /// [`block::PayloadTooLarge`] when the message cannot fit in a block.
    pub fn send(&mut self, message: Vec<u8>) -> Result<(), block::PayloadTooLarge> {
        if message.len() > block::PAYLOAD_MAX {
            return Err(block::PayloadTooLarge(message.len()));
        }
        self.ready.push_back(message);
        Ok(())
    }

    /// The current retransmission timeout, seconds.
    pub fn rto_s(&self) -> f64 {
        self.rto_s
    }

    /// Counters so far.
    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    /// Bytes of messages queued and not yet put in a block.
    pub fn unsent_bytes(&self) -> usize {
        self.ready.iter().map(Vec::len).sum()
    }

    /// Messages queued or in flight.
    pub fn pending_messages(&self) -> usize {
        self.ready.len() + self.sent.iter().map(|s| s.message_count).sum::<usize>()
    }

    /// Takes bytes read from the port at host time `now_s`.
    pub fn handle_input(&mut self, bytes: &[u8], now_s: f64) {
        self.rx.extend_from_slice(bytes);
        let mut pos = 0;
        loop {
            match block::check(&self.rx[pos..]) {
                Check::Incomplete => break,
                Check::Invalid(_) => {
                    let skip = block::resync_skip(&self.rx[pos..]).max(1);
                    self.stats.bytes_invalid += skip as u64;
                    pos += skip;
                }
                Check::Block { len, seq } => {
                    let payload = block::payload(&self.rx[pos..pos + len]).to_vec();
                    pos += len;
                    self.handle_block(seq, payload, now_s);
                }
            }
        }
        self.rx.drain(..pos);
    }

    fn handle_block(&mut self, seq: u8, payload: Vec<u8>, now_s: f64) {
        self.stats.blocks_received += 1;
        if !self.synchronised {
            // Any valid block tells the nibble the MCU expects: start our sequence there.
            let start = 16 + u64::from(seq);
            self.send_seq = start;
            self.receive_seq = start;
            self.last_ack_seq = start;
            self.ignore_nak_seq = start;
            self.retransmit_seq = start;
            self.synchronised = true;
            self.probe_due = false;
            self.retransmit_at_s = None;
            self.events
                .push_back(LinkEvent::Synchronised { mcu_seq: seq });
        } else {
            let behind = u64::from(seq.wrapping_sub((self.receive_seq & 0xF) as u8) & 0xF);
            let rseq = self.receive_seq + behind;
            if rseq > self.send_seq {
                // An acknowledgement of a block never sent: ignore it, as Klipper does.
                self.stats.blocks_ignored += 1;
                return;
            }
            if rseq != self.receive_seq {
                self.acknowledge(rseq, now_s);
            }
            if payload.is_empty() {
                if rseq > self.last_ack_seq {
                    self.last_ack_seq = rseq;
                } else if rseq > self.ignore_nak_seq && !self.sent.is_empty() {
                    // A duplicate acknowledgement is a NAK: retransmit at once (at most twice a
                    // burst).
                    self.ignore_nak_seq = if self.ignore_nak_seq < self.retransmit_seq {
                        self.retransmit_seq
                    } else {
                        self.receive_seq
                    };
                    self.retransmit(now_s, false);
                }
            }
        }
        if !payload.is_empty() {
            let sent_time_s = if self.receive_seq > self.retransmit_seq {
                self.last_ack_sent_time_s
            } else {
                None
            };
            self.events.push_back(LinkEvent::Received {
                payload,
                receive_time_s: now_s,
                sent_time_s,
            });
        }
    }

    fn acknowledge(&mut self, rseq: u64, now_s: f64) {
        self.receive_seq = rseq;
        // An advancing acknowledgement shows the link works again: drop the timeout back-off.
        // (Klipper keeps it until a new RTT sample, which a full window may not allow for long.)
        self.rto_s = self.rto_base_s;
        while self.sent.front().is_some_and(|s| s.seq < rseq) {
            if let Some(acked) = self.sent.pop_front() {
                self.last_ack_sent_time_s = Some(acked.sent_time_s);
            }
        }
        if let Some((sample_seq, sent_s)) = self.rtt_sample
            && rseq > sample_seq
        {
            self.update_rtt(now_s - sent_s);
            self.rtt_sample = None;
        }
        self.retransmit_at_s = (!self.sent.is_empty()).then_some(now_s + self.rto_s);
    }

    fn update_rtt(&mut self, delta_s: f64) {
        let delta_s = delta_s.max(0.0);
        if self.srtt_s == 0.0 {
            self.rttvar_s = delta_s / 2.0;
            self.srtt_s = delta_s * 10.0;
        } else {
            self.rttvar_s = (3.0 * self.rttvar_s + (self.srtt_s - delta_s).abs()) / 4.0;
            self.srtt_s = (7.0 * self.srtt_s + delta_s) / 8.0;
        }
        let rttvar4 = (4.0 * self.rttvar_s).max(0.001);
        self.rto_base_s = (self.srtt_s + rttvar4).clamp(MIN_RTO_S, MAX_RTO_S);
        self.rto_s = self.rto_base_s;
    }

    fn retransmit(&mut self, now_s: f64, timed_out: bool) {
        if self.sent.is_empty() {
            self.retransmit_at_s = None;
            return;
        }
        if timed_out {
            self.rto_s = (self.rto_s * 2.0).min(MAX_RTO_S);
            self.ignore_nak_seq = self.send_seq;
        }
        self.retransmit_seq = self.send_seq;
        self.rtt_sample = None;
        self.stats.retransmits += 1;
        self.out.push(block::SYNC);
        for s in &self.sent {
            self.out.extend_from_slice(&s.bytes);
        }
        self.retransmit_at_s = Some(now_s + self.rto_s);
    }

    /// When [`HostLink::handle_timeout`] must next run, host time in seconds.
    pub fn poll_timeout(&self) -> Option<f64> {
        self.retransmit_at_s
    }

    /// Runs the retransmission timer (and, before synchronisation, the probe timer).
    pub fn handle_timeout(&mut self, now_s: f64) {
        if self.retransmit_at_s.is_some_and(|t| now_s >= t) {
            if self.synchronised {
                self.retransmit(now_s, true);
            } else {
                self.rto_s = (self.rto_s * 2.0).min(MAX_RTO_S);
                self.probe_due = true;
                self.retransmit_at_s = None;
            }
        }
    }

    /// Whether the MCU's sequence is known and messages flow.
    pub fn is_synchronised(&self) -> bool {
        self.synchronised
    }

    /// Appends bytes to write now to `out`; returns whether any were added.
    pub fn poll_transmit(&mut self, now_s: f64, out: &mut Vec<u8>) -> bool {
        let before = out.len();
        out.append(&mut self.out);
        if !self.synchronised {
            if self.probe_due {
                // An empty block: accepted or refused, the MCU answers with the nibble it expects.
                let _ = block::encode((self.send_seq & 0xF) as u8, &[], out);
                self.probe_due = false;
                self.retransmit_at_s = Some(now_s + self.rto_s);
                self.stats.probes_sent += 1;
            }
            return out.len() > before;
        }
        while !self.ready.is_empty() && self.may_send_block() {
            let mut payload = Vec::with_capacity(block::PAYLOAD_MAX);
            let mut message_count = 0;
            while let Some(m) = self.ready.front() {
                if payload.len() + m.len() > block::PAYLOAD_MAX {
                    break;
                }
                payload.extend_from_slice(m);
                message_count += 1;
                self.ready.pop_front();
            }
            let seq = self.send_seq;
            let mut bytes = Vec::with_capacity(payload.len() + block::MESSAGE_MIN);
            // `send` refuses messages over PAYLOAD_MAX, and packing stops before the limit.
            if block::encode((seq & 0xF) as u8, &payload, &mut bytes).is_err() {
                break;
            }
            out.extend_from_slice(&bytes);
            if self.sent.is_empty() {
                self.retransmit_at_s = Some(now_s + self.rto_s);
            }
            if self.rtt_sample.is_none() {
                self.rtt_sample = Some((seq, now_s));
            }
            self.sent.push_back(Sent {
                seq,
                bytes,
                message_count,
                sent_time_s: now_s,
            });
            self.send_seq += 1;
            self.stats.blocks_sent += 1;
        }
        out.len() > before
    }

    fn may_send_block(&self) -> bool {
        if self.send_seq - self.receive_seq >= MAX_PENDING_BLOCKS {
            return false;
        }
        match self.receive_window {
            Some(window) => {
                let in_flight: usize = self.sent.iter().map(|s| s.bytes.len()).sum();
                in_flight + block::MESSAGE_MAX <= window
            }
            None => true,
        }
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<LinkEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A link synchronised by the MCU's empty block with sequence 0.
    fn synchronised() -> HostLink {
        let mut link = HostLink::new();
        let mut out = Vec::new();
        link.poll_transmit(0.0, &mut out);
        link.handle_input(&[0x05, 0x10, 0x9e, 0x81, 0x7e], 0.001);
        assert!(link.is_synchronised());
        link
    }

    #[test]
    fn the_receive_window_limits_unacknowledged_bytes() {
        let mut link = synchronised();
        link.set_receive_window(Some(192));
        for _ in 0..40 {
            link.send(vec![7; 20]).expect("fits");
        }
        let mut out = Vec::new();
        link.poll_transmit(0.002, &mut out);
        // Blocks go out only while the bytes in flight plus one more full block fit the window.
        assert!(
            !out.is_empty() && out.len() <= 192,
            "{} bytes in flight",
            out.len()
        );
        let first_burst = out.len();
        out.clear();
        link.poll_transmit(0.003, &mut out);
        assert!(out.is_empty(), "nothing more until an acknowledgement");
        // The MCU acknowledges everything sent (sequence 16 + blocks sent): more flows.
        let acked = 16 + link.stats().blocks_sent;
        let mut ack = Vec::new();
        block::encode((acked & 0xF) as u8, &[], &mut ack).expect("fits");
        link.handle_input(&ack, 0.004);
        link.poll_transmit(0.005, &mut out);
        assert!(
            !out.is_empty(),
            "the window opened again after {first_burst} bytes"
        );
    }

    #[test]
    fn without_a_window_twelve_blocks_may_be_in_flight() {
        let mut link = synchronised();
        for _ in 0..100 {
            link.send(vec![7; 50]).expect("fits");
        }
        let mut out = Vec::new();
        link.poll_transmit(0.002, &mut out);
        assert_eq!(link.stats().blocks_sent, MAX_PENDING_BLOCKS);
    }
}
