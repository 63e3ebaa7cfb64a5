//! Klipper's variable-length integers.
//!
//! Big-endian base 128: every byte but the last has bit 7 set, each byte carries 7 bits. The
//! first byte is sign-extended when its bits 6 and 5 are both set, so `0x60` is −32 and 96 needs
//! two bytes (`80 60`). Values are 32-bit and wrap; the encoder picks the shortest form for the
//! value read as a signed 32-bit number. A u32 at or above 2³¹ may arrive in either the 5-byte
//! positive form (Klipper's Python host) or the short negative form (its C firmware): both
//! decode to the same 32 bits.

/// The longest encoding of a 32-bit value.
pub const MAX_LEN: usize = 5;

/// The input ended inside a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("truncated variable-length integer")]
pub struct Truncated;

/// Appends the encoding of `v` (read as signed 32-bit) to `out`; returns the bytes written.
pub fn encode(v: i32, out: &mut Vec<u8>) -> usize {
    let mut buf = [0_u8; MAX_LEN];
    let n = encode_into(v, &mut buf);
    out.extend_from_slice(&buf[..n]);
    n
}

/// Encodes `v` into the front of `buf`; returns the bytes used.
pub fn encode_into(v: i32, buf: &mut [u8; MAX_LEN]) -> usize {
    let (word, len) = encode_word(v);
    buf[..len].copy_from_slice(&word.to_le_bytes()[..len]);
    len
}

/// The encoding of `v`, in the low bytes of a word in little-endian order (the first byte
/// lowest; the bytes past the encoding are 0), and its length: for writers that store the
/// whole word and advance by the length, without a loop or a branch per byte.
///
/// The 7-bit groups of `v` (sign-extended, so that the fifth carries the top bits as the
/// first byte of the 5-byte form does) are spread one per byte, lowest group lowest, every
/// byte but the lowest marked as continued; reversing the bytes and shifting out all but the
/// `len` that the encoding uses puts them in wire order.
#[inline]
#[must_use]
pub fn encode_word(v: i32) -> (u64, usize) {
    // The shortest length whose range [−2^(7n−2), 3·2^(7n−2)) holds `v`: each test is whether
    // `v` plus the low end falls outside the range's 2^(7n) values (a sum that wraps comes from a
    // `v` far above every bound, and reads as one outside too).
    let beyond = |low: i32, values: u32| usize::from(v.wrapping_add(low).cast_unsigned() >= values);
    let len = 1
        + beyond(1 << 5, 1 << 7)
        + beyond(1 << 12, 1 << 14)
        + beyond(1 << 19, 1 << 21)
        + beyond(1 << 26, 1 << 28);
    let bits = i64::from(v).cast_unsigned();
    let groups = (bits & 0x7F)
        | ((bits << 1) & 0x7F00)
        | ((bits << 2) & 0x007F_0000)
        | ((bits << 3) & 0x7F00_0000)
        | ((bits << 4) & 0x7F_0000_0000);
    let continued = groups | 0x80_8080_8000;
    (continued.swap_bytes() >> (64 - 8 * len), len)
}

/// How many bytes [`encode`] uses for `v`.
pub fn encoded_len(v: i32) -> usize {
    match v {
        -32..=95 => 1,
        -4096..=12_287 => 2,
        -524_288..=1_572_863 => 3,
        -67_108_864..=201_326_591 => 4,
        _ => 5,
    }
}

/// Decodes one integer from the front of `input`; returns it (as 32 bits) and the bytes used.
///
/// # Errors
/// [`Truncated`] when the input ends before the last byte of the number.
pub fn decode(input: &[u8]) -> Result<(u32, usize), Truncated> {
    let (&first, _) = input.split_first().ok_or(Truncated)?;
    let mut v = u32::from(first & 0x7F);
    if first & 0x60 == 0x60 {
        v |= !0x1F;
    }
    let mut used = 1;
    let mut byte = first;
    while byte & 0x80 != 0 {
        byte = *input.get(used).ok_or(Truncated)?;
        used += 1;
        v = (v << 7) | u32::from(byte & 0x7F);
    }
    Ok((v, used))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn enc(v: i32) -> Vec<u8> {
        let mut out = Vec::new();
        encode(v, &mut out);
        out
    }

    /// The encoding byte by byte, as the format is defined: the two's-complement bits of the
    /// value, 7 per byte from the top, every byte but the last with bit 7 set; the first byte
    /// of the 5-byte form carries the top 4 bits sign-extended (an arithmetic shift, unmasked),
    /// so a negative value's first byte keeps its 0x60 sign bits.
    fn reference(v: i32) -> Vec<u8> {
        let len = encoded_len(v);
        let bits = v.cast_unsigned();
        (0..len)
            .map(|i| {
                let seven = if len == MAX_LEN && i == 0 {
                    (v >> 28) as u8
                } else {
                    ((bits >> (7 * (len - 1 - i))) & 0x7F) as u8
                };
                if i + 1 < len { seven | 0x80 } else { seven }
            })
            .collect()
    }

    /// [`encode_word`]'s bytes and length.
    fn word_bytes(v: i32) -> Vec<u8> {
        let (word, len) = encode_word(v);
        assert_eq!(word >> (8 * len), 0, "bytes past the encoding of {v}");
        word.to_le_bytes()[..len].to_vec()
    }

    #[test]
    fn words_are_the_encoding_at_every_length_boundary() {
        let mut values = vec![0, 1, -1, i32::MAX, i32::MIN];
        for n in 1..=4 {
            let low = -(1_i64 << (7 * n - 2));
            let high = 3 * (1_i64 << (7 * n - 2));
            for edge in [low, high] {
                for v in edge - 2..=edge + 2 {
                    values.push(i32::try_from(v).expect("boundaries fit"));
                }
            }
        }
        for v in values {
            assert_eq!(word_bytes(v), reference(v), "encoding {v}");
            assert_eq!(enc(v), reference(v), "encoding {v}");
        }
    }

    #[test]
    fn worked_examples_from_klipper() {
        let cases: &[(i32, &[u8])] = &[
            (0, &[0x00]),
            (1, &[0x01]),
            (95, &[0x5f]),
            (96, &[0x80, 0x60]),
            (-1, &[0x7f]),
            (-32, &[0x60]),
            (-33, &[0xff, 0x5f]),
            (127, &[0x80, 0x7f]),
            (128, &[0x81, 0x00]),
            (12_287, &[0xdf, 0x7f]),
            (12_288, &[0x80, 0xe0, 0x00]),
            (-4096, &[0xe0, 0x00]),
            (-4097, &[0xff, 0xdf, 0x7f]),
            (7458, &[0xba, 0x22]),
            (331, &[0x82, 0x4b]),
            (-331, &[0xfd, 0x35]),
            (100_000, &[0x86, 0x8d, 0x20]),
            (i32::MAX, &[0x87, 0xff, 0xff, 0xff, 0x7f]),
            (i32::MIN, &[0xf8, 0x80, 0x80, 0x80, 0x00]),
        ];
        for &(v, bytes) in cases {
            assert_eq!(enc(v), bytes, "encoding {v}");
            assert_eq!(
                decode(bytes),
                Ok((v.cast_unsigned(), bytes.len())),
                "decoding {bytes:02x?}"
            );
        }
    }

    #[test]
    fn both_forms_of_large_u32_decode_alike() {
        // Klipper's Python host sends 2^32-1 in five bytes, its firmware in one.
        assert_eq!(decode(&[0x8f, 0xff, 0xff, 0xff, 0x7f]), Ok((u32::MAX, 5)));
        assert_eq!(decode(&[0x7f]), Ok((u32::MAX, 1)));
        assert_eq!(decode(&[0x88, 0x80, 0x80, 0x80, 0x00]), Ok((1 << 31, 5)));
    }

    #[test]
    fn truncation_is_an_error() {
        assert_eq!(decode(&[]), Err(Truncated));
        assert_eq!(decode(&[0x81]), Err(Truncated));
        assert_eq!(decode(&[0x81, 0x80]), Err(Truncated));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(100_000))]

        #[test]
        fn every_i32_round_trips_in_its_shortest_form(v in any::<i32>()) {
            let bytes = enc(v);
            prop_assert_eq!(bytes.len(), encoded_len(v));
            prop_assert_eq!(decode(&bytes), Ok((v.cast_unsigned(), bytes.len())));
        }

        #[test]
        fn words_are_the_encoding(v in any::<i32>()) {
            prop_assert_eq!(word_bytes(v), reference(v));
            prop_assert_eq!(enc(v), reference(v));
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..12)) {
            if let Ok((_, used)) = decode(&bytes) {
                prop_assert!(used >= 1 && used <= bytes.len());
            }
        }
    }
}
