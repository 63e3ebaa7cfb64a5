//! The CRC-16 on every message block, and the CRC-32 of the config phase.
//!
//! Klipper's "crc16_ccitt" is, in catalogue terms, CRC-16/MCRF4XX: the reflected polynomial
//! 0x8408, initial value 0xFFFF, no final XOR. It covers the length byte, the sequence byte and
//! the payload, and goes on the wire **high byte first** although the algorithm is the reflected
//! one. The per-byte step below is the table-free form, cheap enough for 64-byte blocks.

/// The CRC of `data`.
pub fn crc16(data: &[u8]) -> u16 {
    data.iter().fold(0xFFFF_u16, |crc, &byte| {
        let mut d = byte ^ (crc & 0xFF) as u8;
        d ^= d << 4;
        let d = u16::from(d);
        ((d << 8) | (crc >> 8)) ^ (d >> 4) ^ (d << 3)
    })
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

    #[test]
    fn known_blocks() {
        // Empty blocks (ACK/NAK) as the MCU sends them, from the protocol notes.
        assert_eq!(crc16(&[0x05, 0x11]), 0x8F08);
        assert_eq!(crc16(&[0x05, 0x12]), 0xBD93);
        assert_eq!(crc16(&[0x05, 0x10]), 0x9E81);
        assert_eq!(crc16(&[0x06, 0x12, 0x07]), 0x3D74);
    }
}
