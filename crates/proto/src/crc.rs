//! The CRC-16 on every message block, and the CRC-32 of the config phase.
//!
//! Klipper's "crc16_ccitt" is, in catalogue terms, CRC-16/MCRF4XX: the reflected polynomial
//! 0x8408, initial value 0xFFFF, no final XOR. It covers the length byte, the sequence byte and
//! the payload, and goes on the wire **high byte first** although the algorithm is the reflected
//! one. It is computed eight bytes at a time from eight 256-entry tables (slicing-by-8, built at
//! compile time from the per-byte step; 4 KiB), which takes the chain of dependent operations
//! per byte from about six to about one: every framed block of a batch run and of a live session
//! goes through it.

/// Klipper's per-byte step of the CRC, the definition the tables are built from.
const fn step(crc: u16, byte: u8) -> u16 {
    let mut d = byte ^ (crc & 0xFF) as u8;
    d ^= d << 4;
    let d = d as u16;
    ((d << 8) | (crc >> 8)) ^ (d >> 4) ^ (d << 3)
}

/// Bytes the CRC takes at a time.
const SLICE: usize = 8;

/// `TABLES[0][x]`: the step from a CRC of 0 with byte `x` (the step is linear: from any CRC,
/// `step(crc, b) = (crc >> 8) ^ TABLES[0][(crc ^ b) & 0xFF]`); `TABLES[i][x]`: the same
/// followed by `i` zero bytes.
static TABLES: [[u16; 256]; SLICE] = {
    let mut tables = [[0_u16; 256]; SLICE];
    let mut x = 0;
    while x < 256 {
        let mut crc = step(0, x as u8);
        tables[0][x] = crc;
        let mut i = 1;
        while i < SLICE {
            crc = step(crc, 0);
            tables[i][x] = crc;
            i += 1;
        }
        x += 1;
    }
    tables
};

/// The CRC of `data`.
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc = 0xFFFF_u16;
    let (words, rest) = data.as_chunks::<SLICE>();
    for w in words {
        // The CRC's two bytes are used up by the first two data bytes; the others only shift
        // through: byte `i` of the eight goes through the table of the `7 − i` bytes after it.
        let x = crc ^ u16::from_le_bytes([w[0], w[1]]);
        let [lo, hi] = x.to_le_bytes();
        crc = (TABLES[7][usize::from(lo)] ^ TABLES[6][usize::from(hi)])
            ^ (TABLES[5][usize::from(w[2])] ^ TABLES[4][usize::from(w[3])])
            ^ ((TABLES[3][usize::from(w[4])] ^ TABLES[2][usize::from(w[5])])
                ^ (TABLES[1][usize::from(w[6])] ^ TABLES[0][usize::from(w[7])]));
    }
    for &byte in rest {
        crc = (crc >> 8) ^ TABLES[0][usize::from((crc as u8) ^ byte)];
    }
    crc
}

/// zlib's CRC-32 (reflected polynomial 0xEDB88320, init and final XOR 0xFFFFFFFF): Klipper's
/// `finalize_config crc=` is this over the config commands joined by newlines.
pub fn crc32(data: &[u8]) -> u32 {
    !data.iter().fold(0xFFFF_FFFF_u32, |crc, &byte| {
        let mut c = crc ^ u32::from(byte);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
        }
        c
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn catalogue_check_value() {
        // CRC-16/MCRF4XX's check value for "123456789".
        assert_eq!(crc16(b"123456789"), 0x6F91);
    }

    /// The CRC byte by byte, as Klipper computes it.
    fn reference(data: &[u8]) -> u16 {
        data.iter().fold(0xFFFF, |crc, &byte| step(crc, byte))
    }

    #[test]
    fn eight_bytes_at_a_time_is_the_byte_by_byte_crc() {
        // Every length a block can have and more, at several alignments.
        let data: Vec<u8> = (0..300_u32)
            .map(|i| (i.wrapping_mul(167).wrapping_add(i >> 3) & 0xFF) as u8)
            .collect();
        for start in 0..8 {
            for end in start..data.len() {
                assert_eq!(crc16(&data[start..end]), reference(&data[start..end]));
            }
        }
        // Every byte value in every position of a word.
        for byte in 0..=255_u8 {
            for len in 1..=2 * SLICE + 1 {
                let block = vec![byte; len];
                assert_eq!(crc16(&block), reference(&block), "{byte} × {len}");
            }
        }
    }

    #[test]
    fn known_blocks() {
        // Empty blocks (ACK/NAK) as the MCU sends them, from the protocol notes.
        assert_eq!(crc16(&[0x05, 0x11]), 0x8F08);
        assert_eq!(crc16(&[0x05, 0x12]), 0xBD93);
        assert_eq!(crc16(&[0x05, 0x10]), 0x9E81);
        assert_eq!(crc16(&[0x06, 0x12, 0x07]), 0x3D74);
    }
}
