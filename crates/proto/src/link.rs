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
//!   An empty block that does not advance is a NAK and triggers a fast retransmission (a
//!   response block acknowledges too, but only empty blocks count as NAKs, as in serialqueue).
//! - Unacknowledged blocks are retransmitted all together (go-back-N, a leading 0x7E, the
//!   original sequence bytes) after the retransmission timeout: RFC 6298 with Klipper's start
//!   (`srtt = 10 × first sample`), bounds 25 ms..5 s, doubling on timeout, Karn's rule.
//!
//! Deliberate departures, for links that damage bytes (each measured with 1 % of the bytes
//! corrupted both ways on the virtual wire, where Klipper's rules make timed commands late):
//! - The back-off ends at the first advancing ACK (Klipper's rule left the timeout at 5 s for
//!   minutes), and doubles to at most 4 × its base: a lost block on a point-to-point link is
//!   damage, not congestion.
//! - After a retransmission Klipper ignores NAKs until the next timeout; here a NAK that comes a
//!   round trip (the shortest seen) after it answers the retransmitted blocks themselves and
//!   retransmits at once.
//! - Blocks get shorter while they are lost (see [`HostLink::is_lossy`]): a 64-byte block
//!   survives 1 % damage half the time, a 19-byte one four times in five.
//! - The MCU keeps its sequence counter across host sessions, so a new link must learn it. Klipper
//!   sends its first commands blind and adopts the nibble of the first reply, losing those
//!   commands (its callers retry). Gantry first sends an empty block as a probe — the MCU answers
//!   every valid block, ACK or NAK, with the nibble it expects, and an empty block carries no
//!   command to lose — then adopts that nibble and starts sending. The probe is repeated every
//!   retransmission timeout until a reply comes.

use std::collections::VecDeque;

use crate::block::{self, Check};

/// The most blocks in flight.
pub const MAX_PENDING_BLOCKS: u64 = 12;
/// The shortest retransmission timeout, seconds.
pub const MIN_RTO_S: f64 = 0.025;
/// The longest retransmission timeout, seconds.
pub const MAX_RTO_S: f64 = 5.0;
/// How long after a retransmission the link still counts as lossy, s.
const LOSSY_MEMORY_S: f64 = 5.0;
/// How far timeouts may multiply the retransmission timeout.
const MAX_BACKOFF: f64 = 4.0;
/// The weight of one block's fate in the smoothed loss estimate.
const LOSS_EWMA_WEIGHT: f64 = 0.05;
/// Above this share of lost blocks, new blocks get shorter.
const LOSS_SHRINK: f64 = 0.15;
/// Below this share, new blocks grow back.
const LOSS_GROW: f64 = 0.03;
/// The shortest payload limit, bytes (a queue_step and a bit).
const MIN_PAYLOAD_LIMIT: usize = 14;
/// The least time after a retransmission before a NAK may trigger the next one, seconds.
const MIN_NAK_HOLDOFF_S: f64 = 0.001;

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
    /// The longest a block waited from its first transmission to its acknowledgement, µs.
    pub max_ack_wait_us: u64,
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
    /// The most payload bytes a new block carries: [`block::PAYLOAD_MAX`] on a clean link,
    /// less while blocks are being lost (see [`HostLink::adapt_block_size`]).
    payload_limit: usize,
    /// Smoothed share of blocks that needed a retransmission (0..1).
    loss_ewma: f64,
    /// Host time of the last retransmission burst.
    last_retransmit_s: f64,
    /// The shortest round trip seen, s (a NAK sooner than this after a retransmission was
    /// caused by what was sent before it).
    min_rtt_s: Option<f64>,
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
            payload_limit: block::PAYLOAD_MAX,
            loss_ewma: 0.0,
            last_retransmit_s: f64::NEG_INFINITY,
            min_rtt_s: None,
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
                } else if !self.sent.is_empty()
                    && (rseq > self.ignore_nak_seq || self.nak_answers_retransmission(now_s))
                {
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
                if acked.seq >= self.retransmit_seq {
                    self.note_block_outcome(false);
                }
                let wait_us = ((now_s - acked.sent_time_s).max(0.0) * 1e6) as u64;
                self.stats.max_ack_wait_us = self.stats.max_ack_wait_us.max(wait_us);
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

    /// Feeds the loss estimate with one block's fate (`lost`: a retransmission was needed) and
    /// adapts the block size to it.
    fn note_block_outcome(&mut self, lost: bool) {
        let sample = if lost { 1.0 } else { 0.0 };
        self.loss_ewma += (sample - self.loss_ewma) * LOSS_EWMA_WEIGHT;
        self.adapt_block_size(lost);
    }

    /// Shorter blocks on a lossy link: a block of n bytes survives a per-byte error rate p with
    /// chance (1 − p)^n, so with 1 % of bytes damaged a full 64-byte block is lost half the time
    /// and one of 24 bytes a fifth of the time. Every retransmission costs a round trip or a
    /// timeout, and a string of them can make a timed command late; the limit halves while more
    /// than [`LOSS_SHRINK`] of the blocks need retransmitting and grows back below
    /// [`LOSS_GROW`]. (Klipper always fills blocks.)
    fn adapt_block_size(&mut self, lost: bool) {
        if lost && self.loss_ewma > LOSS_SHRINK {
            self.payload_limit = (self.payload_limit / 2).max(MIN_PAYLOAD_LIMIT);
        } else if !lost && self.loss_ewma < LOSS_GROW {
            self.payload_limit = (self.payload_limit * 2).min(block::PAYLOAD_MAX);
        }
    }

    /// Whether blocks are being lost: the payload limit is below the full block, or a block
    /// was retransmitted in the last [`LOSSY_MEMORY_S`].
    pub fn is_lossy(&self, now_s: f64) -> bool {
        self.payload_limit < block::PAYLOAD_MAX || now_s - self.last_retransmit_s < LOSSY_MEMORY_S
    }

    /// The payload limit of new blocks now, bytes.
    pub fn payload_limit(&self) -> usize {
        self.payload_limit
    }

    /// Whether a NAK at `now_s` came at least one round trip after the last retransmission:
    /// then the MCU refused the retransmitted blocks themselves, not blocks sent before them.
    fn nak_answers_retransmission(&self, now_s: f64) -> bool {
        let holdoff = self.min_rtt_s.unwrap_or(MIN_RTO_S).max(MIN_NAK_HOLDOFF_S);
        now_s - self.last_retransmit_s >= holdoff
    }

    fn update_rtt(&mut self, delta_s: f64) {
        let delta_s = delta_s.max(0.0);
        self.min_rtt_s = Some(self.min_rtt_s.map_or(delta_s, |m| m.min(delta_s)));
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
            // Timeouts double the RTO as in Klipper, but only up to MAX_BACKOFF times its base: on
            // a point-to-point link a lost block is damage, not congestion (flow control and the
            // receive window guard the MCU's buffer), and a back-off to seconds would make timed
            // commands late.
            self.rto_s = (self.rto_s * 2.0)
                .min(self.rto_base_s * MAX_BACKOFF)
                .min(MAX_RTO_S);
            self.ignore_nak_seq = self.send_seq;
        }
        self.note_block_outcome(true);
        self.retransmit_seq = self.send_seq;
        self.last_retransmit_s = now_s;
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
                // A message longer than the limit still goes, alone.
                if !payload.is_empty() && payload.len() + m.len() > self.payload_limit {
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

    /// An empty MCU block with sequence `seq` (an ACK or a NAK).
    fn empty_block(seq: u64) -> Vec<u8> {
        let mut b = Vec::new();
        block::encode((seq & 0xF) as u8, &[], &mut b).expect("fits");
        b
    }

    #[test]
    fn timeouts_back_off_to_four_times_the_base_at_most() {
        let mut link = synchronised();
        link.send(vec![7; 20]).expect("fits");
        let mut out = Vec::new();
        let mut now = 0.002;
        link.poll_transmit(now, &mut out);
        let mut rtos = Vec::new();
        for _ in 0..8 {
            now = link.poll_timeout().expect("armed");
            link.handle_timeout(now);
            rtos.push(link.rto_s());
        }
        assert_eq!(rtos[..3], [0.05, 0.1, 0.1], "{rtos:?}");
        assert!(rtos.iter().all(|&r| r <= 4.0 * MIN_RTO_S), "{rtos:?}");
    }

    #[test]
    fn a_nak_a_round_trip_after_a_timeout_retransmits_again() {
        let mut link = synchronised();
        // One round trip measured: 2 ms.
        link.send(vec![1; 10]).expect("fits");
        let mut out = Vec::new();
        link.poll_transmit(0.010, &mut out);
        link.handle_input(&empty_block(17), 0.012);
        assert_eq!(link.stats().retransmits, 0);
        // The next block is lost; the timeout retransmits it.
        link.send(vec![2; 10]).expect("fits");
        link.poll_transmit(0.020, &mut out);
        let t = link.poll_timeout().expect("armed");
        link.handle_timeout(t);
        assert_eq!(link.stats().retransmits, 1);
        // A NAK at once was caused by the first copy: Klipper's rule ignores it, and so do we.
        link.handle_input(&empty_block(17), t + 0.0005);
        assert_eq!(link.stats().retransmits, 1);
        // A NAK a round trip later answers the retransmission itself (it was damaged too):
        // retransmit now instead of waiting for a doubled timeout.
        link.handle_input(&empty_block(17), t + 0.003);
        assert_eq!(link.stats().retransmits, 2);
    }

    #[test]
    fn blocks_shrink_while_lost_and_grow_back() {
        let mut link = synchronised();
        let mut out = Vec::new();
        let mut now = 0.002;
        assert_eq!(link.payload_limit(), block::PAYLOAD_MAX);
        for _ in 0..20 {
            link.send(vec![3; 10]).expect("fits");
            link.poll_transmit(now, &mut out);
            now = link.poll_timeout().expect("armed");
            link.handle_timeout(now);
        }
        assert_eq!(link.payload_limit(), MIN_PAYLOAD_LIMIT);
        assert!(link.is_lossy(now));
        // Blocks now carry one 10-byte message each.
        for _ in 0..3 {
            link.send(vec![4; 10]).expect("fits");
        }
        // Acknowledge everything in flight, then send: one message a block.
        let acked = link.send_seq;
        link.handle_input(&empty_block(acked), now + 0.001);
        out.clear();
        let before = link.stats().blocks_sent;
        let waiting = link.ready.len() as u64;
        assert!(waiting >= 3);
        link.poll_transmit(now + 0.001, &mut out);
        assert_eq!(link.stats().blocks_sent - before, waiting);
        // Many clean acknowledgements later the blocks are full size again.
        let mut t = now + 0.002;
        for _ in 0..200 {
            link.send(vec![5; 10]).expect("fits");
            link.poll_transmit(t, &mut out);
            let seq = link.send_seq;
            link.handle_input(&empty_block(seq), t + 0.001);
            t += 0.002;
        }
        assert_eq!(link.payload_limit(), block::PAYLOAD_MAX);
        assert!(!link.is_lossy(t + LOSSY_MEMORY_S));
    }
}
