//! A wire that damages what crosses it, for fault tests: each byte arrives after a fixed latency,
//! and with the given probabilities is corrupted (one bit flipped) or dropped. The randomness is a
//! seeded xorshift generator, so every run of a test sees the same faults.

use std::collections::VecDeque;

/// A deterministic random source (xorshift64*).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed (0 is replaced by a fixed non-zero seed).
    pub fn new(seed: u64) -> Self {
        Self(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        #[allow(clippy::cast_precision_loss)]
        let x = (self.next_u64() >> 11) as f64 / (1_u64 << 53) as f64;
        x < p
    }
}

/// One direction of a damaged link.
#[derive(Debug, Clone)]
pub struct FaultyWire {
    in_flight: VecDeque<(f64, u8)>,
    latency_s: f64,
    corrupt: f64,
    drop: f64,
    rng: Rng,
}

impl FaultyWire {
    /// A wire with `latency_s`, corrupting each byte with probability `corrupt` and dropping it
    /// with probability `drop`.
    pub fn new(latency_s: f64, corrupt: f64, drop: f64, seed: u64) -> Self {
        Self {
            in_flight: VecDeque::new(),
            latency_s,
            corrupt,
            drop,
            rng: Rng::new(seed),
        }
    }

    /// Sends `bytes` at time `now_s`.
    pub fn write(&mut self, now_s: f64, bytes: &[u8]) {
        for &b in bytes {
            if self.rng.chance(self.drop) {
                continue;
            }
            let b = if self.rng.chance(self.corrupt) {
                b ^ (1 << (self.rng.next_u64() % 8))
            } else {
                b
            };
            self.in_flight.push_back((now_s + self.latency_s, b));
        }
    }

    /// The bytes that have arrived by `now_s`.
    pub fn read(&mut self, now_s: f64) -> Vec<u8> {
        let n = self
            .in_flight
            .iter()
            .take_while(|(t, _)| *t <= now_s)
            .count();
        self.in_flight.drain(..n).map(|(_, b)| b).collect()
    }

    /// Whether nothing is in flight.
    pub fn is_idle(&self) -> bool {
        self.in_flight.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clean_wire_delays_only() {
        let mut w = FaultyWire::new(0.01, 0.0, 0.0, 1);
        w.write(0.0, b"abc");
        assert!(w.read(0.005).is_empty());
        assert_eq!(w.read(0.01), b"abc");
        assert!(w.is_idle());
    }

    #[test]
    fn damage_rates_are_about_right() {
        let mut w = FaultyWire::new(0.0, 0.01, 0.01, 7);
        let sent = vec![0_u8; 100_000];
        w.write(0.0, &sent);
        let got = w.read(0.0);
        let dropped = sent.len() - got.len();
        let corrupted = got.iter().filter(|&&b| b != 0).count();
        assert!((800..1200).contains(&dropped), "{dropped} dropped");
        assert!((800..1200).contains(&corrupted), "{corrupted} corrupted");
    }
}
