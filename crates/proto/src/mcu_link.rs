//! The MCU side of a link: how Klipper firmware accepts blocks, acknowledges them and refuses
//! the rest. The simulated MCU is built on it.
//!
//! The MCU expects one sequence nibble. A valid block with that nibble is accepted: the expected
//! nibble advances, the block's messages are handed out, then the caller sends any responses and
//! an ACK, all carrying the new nibble. A valid block with another nibble gets a NAK (an empty
//! block with the unchanged nibble). Bytes that do not make a valid block are dropped up to and
//! including the next sync byte (a leading sync byte is dropped silently) and get one NAK per
//! error burst: no further NAK until a valid block has been seen.

use crate::block::{self, Check};

/// The MCU end of one link.
#[derive(Debug, Clone, Default)]
pub struct McuLink {
    next_seq: u8,
    need_valid: bool,
    rx: Vec<u8>,
}

impl McuLink {
    /// A freshly reset MCU: it expects sequence 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// An MCU that kept its sequence from an earlier host session.
    pub fn with_next_seq(seq: u8) -> Self {
        Self {
            next_seq: seq & block::SEQ_MASK,
            ..Self::default()
        }
    }

    /// The sequence nibble the MCU expects next (and puts on its blocks).
    pub fn next_seq(&self) -> u8 {
        self.next_seq
    }

    /// Takes bytes received from the host.
    pub fn handle_input(&mut self, bytes: &[u8]) {
        self.rx.extend_from_slice(bytes);
    }

    /// Processes buffered bytes: writes NAKs into `out` and returns the payload of the next
    /// accepted block, if one is complete. After dispatching its messages the caller writes its
    /// responses with [`McuLink::respond`] and then [`McuLink::ack`].
    pub fn poll_block(&mut self, out: &mut Vec<u8>) -> Option<Vec<u8>> {
        loop {
            match block::check(&self.rx) {
                Check::Incomplete => return None,
                Check::Invalid(_) => {
                    let silent = self.rx.first() == Some(&block::SYNC);
                    let skip = block::resync_skip(&self.rx).max(1);
                    self.rx.drain(..skip);
                    if !silent && !self.need_valid {
                        self.need_valid = true;
                        self.ack(out);
                    }
                }
                Check::Block { len, seq } => {
                    let payload = block::payload(&self.rx[..len]).to_vec();
                    self.rx.drain(..len);
                    self.need_valid = false;
                    if seq == self.next_seq {
                        self.next_seq = (self.next_seq + 1) & block::SEQ_MASK;
                        return Some(payload);
                    }
                    self.ack(out);
                }
            }
        }
    }

    /// Writes a response block carrying `payload`.
    ///
    /// # Errors
    /// [`block::PayloadTooLarge`] when the payload exceeds a block.
    pub fn respond(&self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), block::PayloadTooLarge> {
        block::encode(self.next_seq, payload, out)
    }

    /// Writes an empty block with the expected sequence: an ACK after a block was accepted, a NAK
    /// otherwise.
    pub fn ack(&self, out: &mut Vec<u8>) {
        // An empty payload always fits.
        let _ = block::encode(self.next_seq, &[], out);
    }
}
