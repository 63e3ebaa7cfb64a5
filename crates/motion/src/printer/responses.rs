//! Counting the printer's responses, so that memory stays flat on files that repeat one.
//!
//! Klipper prints every response. A file can make hundreds of thousands of the same one (G2/G3
//! without `[gcode_arcs]`: `Unknown command:"G3"` on every arc), so [`Printer::responses`]
//! keeps each distinct text only its first [`RESPONSES_KEPT_PER_TEXT`] times and the rest are
//! counted ([`Printer::repeated_responses`]). The text is formatted into a reused buffer and
//! looked up there; a copy is made only for a response that is kept.
//!
//! [`Printer::responses`]: super::Printer::responses
//! [`Printer::repeated_responses`]: super::Printer::repeated_responses

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::{BuildHasherDefault, Hasher};

/// How many times one response text is kept in [`super::Printer::responses`]; later copies
/// are only counted.
pub const RESPONSES_KEPT_PER_TEXT: u32 = 100;

/// How many distinct response texts are counted; texts after those (messages that quote
/// positions differ every time) are all kept, so the count itself cannot grow without bound.
const TEXTS_COUNTED: usize = 10_000;

/// A response text that came more often than [`RESPONSES_KEPT_PER_TEXT`] times.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepeatedResponse {
    /// The text.
    pub text: String,
    /// How many times it came in all.
    pub count: u64,
}

/// A word-at-a-time multiplicative hash (as rustc's FxHash): response texts are short, and
/// SipHash's resistance to chosen keys buys nothing for a count.
#[derive(Default)]
struct WordHash(u64);

impl WordHash {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for WordHash {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0_u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0_u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 59));
        }
    }
}

/// Every response text so far and how often it came.
#[derive(Debug, Default)]
pub(super) struct ResponseCounts {
    /// The texts in the order they first came, with their counts …
    counts: Vec<RepeatedResponse>,
    /// … and where each is in `counts`.
    index: HashMap<String, usize, BuildHasherDefault<WordHash>>,
    /// The text being recorded.
    scratch: String,
}

impl ResponseCounts {
    /// Counts one response; its text when it is to be kept.
    pub(super) fn record(&mut self, text: std::fmt::Arguments<'_>) -> Option<String> {
        self.scratch.clear();
        // Writing to a String cannot fail.
        let _ = self.scratch.write_fmt(text);
        if let Some(&i) = self.index.get(self.scratch.as_str()) {
            let r = &mut self.counts[i];
            r.count += 1;
            if r.count > u64::from(RESPONSES_KEPT_PER_TEXT) {
                return None;
            }
        } else if self.counts.len() < TEXTS_COUNTED {
            self.index.insert(self.scratch.clone(), self.counts.len());
            self.counts.push(RepeatedResponse {
                text: self.scratch.clone(),
                count: 1,
            });
        }
        Some(self.scratch.clone())
    }

    /// The texts that came more than [`RESPONSES_KEPT_PER_TEXT`] times, in the order they first
    /// came.
    pub(super) fn repeated(&self) -> impl Iterator<Item = &RepeatedResponse> {
        self.counts
            .iter()
            .filter(|r| r.count > u64::from(RESPONSES_KEPT_PER_TEXT))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_are_kept_up_to_the_limit_then_counted() {
        let mut c = ResponseCounts::default();
        let kept = (0..250)
            .filter(|_| c.record(format_args!("// a {}", 1)).is_some())
            .count();
        assert_eq!(kept, RESPONSES_KEPT_PER_TEXT as usize);
        assert_eq!(c.record(format_args!("// b")), Some("// b".to_owned()));
        let repeated: Vec<_> = c.repeated().cloned().collect();
        assert_eq!(
            repeated,
            vec![RepeatedResponse {
                text: "// a 1".to_owned(),
                count: 250
            }]
        );
    }

    #[test]
    fn texts_beyond_the_counted_ones_are_all_kept() {
        let mut c = ResponseCounts::default();
        for i in 0..TEXTS_COUNTED {
            assert!(c.record(format_args!("{i}")).is_some());
        }
        for _ in 0..(RESPONSES_KEPT_PER_TEXT + 5) {
            assert!(c.record(format_args!("new")).is_some());
        }
        assert_eq!(c.repeated().count(), 0);
    }
}
