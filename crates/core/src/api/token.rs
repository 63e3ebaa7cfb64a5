//! The per-launch API token: 32 bytes from the operating system's random source, as hex.
//!
//! Comparison runs in constant time over the whole string so a local attacker cannot learn the
//! token a byte at a time from response timing.

use std::fmt;

/// A per-launch secret that every API client must present.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Draws a fresh token from the operating system's random source.
    ///
    /// # Errors
    /// When the operating system has no random source to give.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = [0_u8; 32];
        getrandom::fill(&mut bytes)?;
        let hex = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Ok(Self(hex))
    }

    /// The token as the client sends it: 64 lower-case hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `candidate` is this token, compared in constant time.
    pub fn matches(&self, candidate: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), candidate.as_bytes());
        if a.len() != b.len() {
            return false;
        }
        a.iter().zip(b).fold(0_u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret itself, not even in debug logs.
        f.write_str("Token(…)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_64_hex_digits_and_differ() {
        let a = Token::generate().expect("random source");
        let b = Token::generate().expect("random source");
        assert_eq!(a.as_str().len(), 64);
        assert!(
            a.as_str()
                .bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(a, b);
    }

    #[test]
    fn matches_only_the_exact_token() {
        let t = Token::generate().expect("random source");
        assert!(t.matches(t.as_str()));
        assert!(!t.matches(""));
        assert!(!t.matches(&t.as_str()[..63]));
        let mut wrong = t.as_str().to_owned();
        wrong.replace_range(0..1, if wrong.starts_with('0') { "1" } else { "0" });
        assert!(!t.matches(&wrong));
    }

    #[test]
    fn debug_hides_the_secret() {
        let t = Token::generate().expect("random source");
        assert!(!format!("{t:?}").contains(t.as_str()));
    }
}
