//! Message blocks: the frames that carry messages between host and MCU.
//!
//! ```text
//! LEN (1) | SEQ (1) | payload (0..=59) | CRC hi | CRC lo | SYNC 0x7E
//! ```
//! LEN counts the whole block (5..=64). SEQ is `0x10 | (seq & 0x0F)`. The CRC ([`crate::crc`])
//! covers LEN, SEQ and the payload. 0x7E is not escaped: framing follows LEN, and the sync byte
//! only helps a receiver find its feet after an error. An empty block is an ACK or a NAK.

use crate::crc::crc16;

/// The shortest block: header and trailer, no payload.
pub const MESSAGE_MIN: usize = 5;
/// The longest block.
pub const MESSAGE_MAX: usize = 64;
/// Bytes before the payload (LEN, SEQ).
pub const HEADER_SIZE: usize = 2;
/// Bytes after the payload (CRC hi, CRC lo, SYNC).
pub const TRAILER_SIZE: usize = 3;
/// The most payload one block carries.
pub const PAYLOAD_MAX: usize = MESSAGE_MAX - HEADER_SIZE - TRAILER_SIZE;
/// The low bits of SEQ that carry the sequence number.
pub const SEQ_MASK: u8 = 0x0F;
/// The fixed high bits of SEQ.
pub const DEST: u8 = 0x10;
/// The last byte of every block.
pub const SYNC: u8 = 0x7E;

/// A payload too large for one block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a block carries at most {PAYLOAD_MAX} payload bytes, not {0}")]
pub struct PayloadTooLarge(pub usize);

/// Appends one block with sequence `seq` (its low 4 bits) and `payload` to `out`.
///
/// # Errors
/// [`PayloadTooLarge`] when `payload` exceeds [`PAYLOAD_MAX`]; nothing is written then.
pub fn encode(seq: u8, payload: &[u8], out: &mut Vec<u8>) -> Result<(), PayloadTooLarge> {
    let mut frame = [0_u8; MESSAGE_MAX];
    let Some(slot) = frame.get_mut(HEADER_SIZE..HEADER_SIZE + payload.len()) else {
        return Err(PayloadTooLarge(payload.len()));
    };
    slot.copy_from_slice(payload);
    let len = seal(seq, &mut frame, payload.len())?;
    out.extend_from_slice(&frame[..len]);
    Ok(())
}

/// Makes a block around a payload already in place, `frame[HEADER_SIZE..HEADER_SIZE +
/// payload_len]` (for writers that build the payload there, as a block goes out, instead of
/// copying it): writes the header before it and the trailer after it, and returns the
/// block's length, `payload_len + MESSAGE_MIN`. The block is what [`encode`] writes.
///
/// # Errors
/// [`PayloadTooLarge`] when `payload_len` exceeds [`PAYLOAD_MAX`]; nothing is written then.
pub fn seal<const N: usize>(
    seq: u8,
    frame: &mut [u8; N],
    payload_len: usize,
) -> Result<usize, PayloadTooLarge> {
    const { assert!(N >= MESSAGE_MAX, "a frame holds the longest block") };
    if payload_len > PAYLOAD_MAX {
        return Err(PayloadTooLarge(payload_len));
    }
    let end = HEADER_SIZE + payload_len;
    // The length fits a byte: at most MESSAGE_MAX (64).
    #[allow(clippy::cast_possible_truncation)]
    let len_byte = (payload_len + MESSAGE_MIN) as u8;
    frame[0] = len_byte;
    frame[1] = DEST | (seq & SEQ_MASK);
    let [crc_hi, crc_lo] = crc16(&frame[..end]).to_be_bytes();
    frame[end] = crc_hi;
    frame[end + 1] = crc_lo;
    frame[end + 2] = SYNC;
    Ok(end + TRAILER_SIZE)
}

/// What the front of a receive buffer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Not enough bytes yet to tell.
    Incomplete,
    /// A valid block of `len` bytes with sequence nibble `seq`.
    Block {
        /// The block's total length.
        len: usize,
        /// The low 4 bits of its SEQ byte.
        seq: u8,
    },
    /// The front is not a valid block.
    Invalid(Invalid),
}

/// Why the front of a buffer is not a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// LEN outside 5..=64.
    Length,
    /// SEQ's high nibble is not 0x1.
    Sequence,
    /// The byte at LEN-1 is not 0x7E.
    Sync,
    /// The CRC does not match.
    Crc,
}

/// Checks the front of `input` the way Klipper's receivers do.
pub fn check(input: &[u8]) -> Check {
    if input.len() < MESSAGE_MIN {
        return Check::Incomplete;
    }
    let len = usize::from(input[0]);
    if !(MESSAGE_MIN..=MESSAGE_MAX).contains(&len) {
        return Check::Invalid(Invalid::Length);
    }
    if input[1] & !SEQ_MASK != DEST {
        return Check::Invalid(Invalid::Sequence);
    }
    if input.len() < len {
        return Check::Incomplete;
    }
    if input[len - 1] != SYNC {
        return Check::Invalid(Invalid::Sync);
    }
    let crc = u16::from_be_bytes([input[len - 3], input[len - 2]]);
    if crc != crc16(&input[..len - TRAILER_SIZE]) {
        return Check::Invalid(Invalid::Crc);
    }
    Check::Block {
        len,
        seq: input[1] & SEQ_MASK,
    }
}

/// How many bytes an MCU drops after an invalid block front: one leading sync byte silently, else
/// everything up to and including the next sync byte (all of `input` when there is none).
pub fn resync_skip(input: &[u8]) -> usize {
    match input.first() {
        Some(&SYNC) => 1,
        Some(_) => input
            .iter()
            .position(|&b| b == SYNC)
            .map_or(input.len(), |i| i + 1),
        None => 0,
    }
}

/// The payload of a block that [`check`] accepted.
pub fn payload(block: &[u8]) -> &[u8] {
    &block[HEADER_SIZE..block.len() - TRAILER_SIZE]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn worked_blocks() {
        let mut out = Vec::new();
        encode(1, &[], &mut out).expect("fits");
        assert_eq!(out, [0x05, 0x11, 0x8f, 0x08, 0x7e]);
        out.clear();
        encode(2, &[0x07], &mut out).expect("fits");
        assert_eq!(out, [0x06, 0x12, 0x07, 0x3d, 0x74, 0x7e]);
        out.clear();
        // queue_step oid=3 interval=7458 count=10 add=331 with the linux MCU's id 22.
        encode(3, &[0x16, 0x03, 0xba, 0x22, 0x0a, 0x82, 0x4b], &mut out).expect("fits");
        assert_eq!(
            out,
            [
                0x0c, 0x13, 0x16, 0x03, 0xba, 0x22, 0x0a, 0x82, 0x4b, 0xaa, 0x3e, 0x7e
            ]
        );
        assert_eq!(check(&out), Check::Block { len: 12, seq: 3 });
        assert_eq!(payload(&out), &out[2..9]);
    }

    #[test]
    fn sealed_in_place_is_encoded() {
        // Longer than a block: what follows the block is left alone.
        let mut frame = [0xAA_u8; MESSAGE_MAX + 4];
        let payload = [0x16, 0x03, 0xba, 0x22, 0x0a, 0x82, 0x4b];
        frame[HEADER_SIZE..HEADER_SIZE + payload.len()].copy_from_slice(&payload);
        let len = seal(3, &mut frame, payload.len()).expect("fits");
        let mut out = Vec::new();
        encode(3, &payload, &mut out).expect("fits");
        assert_eq!(&frame[..len], out.as_slice());
        assert!(frame[len..].iter().all(|&b| b == 0xAA));
        assert_eq!(
            seal(0, &mut frame, PAYLOAD_MAX + 1),
            Err(PayloadTooLarge(PAYLOAD_MAX + 1))
        );
        assert_eq!(seal(0, &mut frame, PAYLOAD_MAX), Ok(MESSAGE_MAX));
    }

    #[test]
    fn receiver_checks() {
        let good = [0x05, 0x11, 0x8f, 0x08, 0x7e];
        assert_eq!(check(&good[..4]), Check::Incomplete);
        assert_eq!(
            check(&[0x04, 0x11, 0, 0, 0x7e]),
            Check::Invalid(Invalid::Length)
        );
        assert_eq!(
            check(&[0x05, 0x21, 0x8f, 0x08, 0x7e]),
            Check::Invalid(Invalid::Sequence)
        );
        assert_eq!(
            check(&[0x05, 0x11, 0x8f, 0x08, 0x7d]),
            Check::Invalid(Invalid::Sync)
        );
        assert_eq!(
            check(&[0x05, 0x11, 0x8f, 0x09, 0x7e]),
            Check::Invalid(Invalid::Crc)
        );
        assert_eq!(check(&[0x08, 0x11, 0x01]), Check::Incomplete);
        assert_eq!(check(&good), Check::Block { len: 5, seq: 1 });
    }

    #[test]
    fn payload_limit() {
        let mut out = Vec::new();
        assert_eq!(encode(0, &[0; 60], &mut out), Err(PayloadTooLarge(60)));
        assert!(out.is_empty());
        encode(0, &[0; 59], &mut out).expect("fits");
        assert_eq!(out.len(), 64);
    }

    #[test]
    fn resync_rules() {
        assert_eq!(resync_skip(&[0x7e, 0x05]), 1);
        assert_eq!(resync_skip(&[0x01, 0x02, 0x7e, 0x05]), 3);
        assert_eq!(resync_skip(&[0x01, 0x02]), 2);
        assert_eq!(resync_skip(&[]), 0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(100_000))]

        #[test]
        fn blocks_round_trip(seq in 0_u8..16, payload_bytes in proptest::collection::vec(any::<u8>(), 0..=59)) {
            let mut out = Vec::new();
            encode(seq, &payload_bytes, &mut out).expect("fits");
            prop_assert_eq!(check(&out), Check::Block { len: out.len(), seq });
            prop_assert_eq!(payload(&out), &payload_bytes[..]);
        }

        #[test]
        fn check_never_panics_and_blocks_are_in_bounds(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Check::Block { len, .. } = check(&bytes) {
                prop_assert!((MESSAGE_MIN..=MESSAGE_MAX).contains(&len) && len <= bytes.len());
            }
            prop_assert!(resync_skip(&bytes) <= bytes.len());
        }
    }
}
