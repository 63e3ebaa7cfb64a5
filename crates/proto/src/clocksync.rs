//! Clock synchronisation: the MCU's clock as a function of host time, and the conversions between
//! host time, MCU clock and print time.
//!
//! The host asks `get_clock` about once a second (0.9839 s, an odd period that does not beat with
//! other timers) and feeds each `clock` reply here with the host time its request block was sent.
//! An exponentially weighted linear regression (weight 1/30 per sample) of clock on send time
//! gives the MCU frequency as seen from the host and a reference point. Samples far off the
//! prediction (beyond 5 σ and 0.5 ms) are dropped when late — a slow round trip, not a clock
//! change — and otherwise reset the prediction variance. The reference time is shifted by the
//! smallest half round trip seen (aged by 10 µs an hour), which estimates when the MCU read its
//! clock. The MCU's 32-bit clock wraps (every 23.9 s at 180 MHz), so replies are extended to 64
//! bits against the last known clock.
//!
//! Gantry's additions, for a host that is a busy desktop rather than a quiet board computer
//! (klippy's regression over its eight start-up samples came out 25–93 % low under load, measured
//! over a pty): a sample whose round trip is over twice the recent shortest (+2 ms) was delayed and
//! is left out (at most three in a row); while the regression is young, a sample with under half
//! the seed's round trip becomes the new seed; and the slope is pulled towards CLOCK_FREQ while the
//! samples span little time, and never strays 2 % from it.
//!
//! Time domains: host time (`_s`, the host's monotonic seconds), MCU clock (ticks, 64-bit here),
//! print time (seconds; for the primary MCU, print time 0 is MCU clock 0).

/// Weight of each new sample in the regression.
pub const DECAY: f64 = 1.0 / 30.0;
/// How fast an old best round trip loses its credit: 10 µs an hour.
pub const RTT_AGE: f64 = 0.000_010 / (60.0 * 60.0);
/// Extra margin on the transmit-scheduling estimate, seconds.
pub const TRANSMIT_EXTRA_S: f64 = 0.001;
/// The period between `get_clock` queries once running, seconds.
pub const QUERY_PERIOD_S: f64 = 0.9839;
/// Unanswered queries after which the MCU counts as lost.
pub const MAX_QUERIES_PENDING: u32 = 4;
/// How many recent round trips the delayed-sample test looks at.
const RTT_WINDOW: usize = 8;
/// A sample whose round trip exceeds this many times the recent shortest (plus
/// [`DELAYED_MARGIN_S`]) was delayed on the way (a busy host or MCU) and is left out.
const DELAYED_FACTOR: f64 = 2.0;
const DELAYED_MARGIN_S: f64 = 0.002;
/// At most this many samples in a row are left out as delayed (the estimate must not go stale).
const MAX_DELAYED_IN_A_ROW: u32 = 3;
/// While fewer samples than this are in the regression, one whose round trip is under half the
/// seed's replaces the seed.
const RESEED_SAMPLES: u32 = 8;
/// The prior on the frequency: CLOCK_FREQ with the weight of this much time variance, s².
const FREQ_PRIOR_WEIGHT_S2: f64 = 0.01;
/// No MCU oscillator is this far from its CLOCK_FREQ; a regression beyond it is bent by noise.
const FREQ_MAX_DEVIATION: f64 = 0.02;

/// A linear map from host time to MCU clock.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClockEstimate {
    /// Host time of the reference point, seconds.
    pub time_s: f64,
    /// MCU clock at the reference point, ticks.
    pub clock: f64,
    /// MCU ticks per host second.
    pub freq_hz: f64,
}

impl ClockEstimate {
    /// The MCU clock at host time `time_s`.
    pub fn clock_at(&self, time_s: f64) -> f64 {
        self.clock + (time_s - self.time_s) * self.freq_hz
    }
}

/// The conservative estimate used to decide when to transmit (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TransmitEstimate {
    /// MCU ticks per host second.
    pub freq_hz: f64,
    /// Host time of the reference point (with a 1 ms margin), seconds.
    pub time_s: f64,
    /// MCU clock at the reference point, three standard deviations early, ticks.
    pub clock: u64,
    /// The last clock received.
    pub last_clock: u64,
}

/// The synchronisation state of one MCU.
#[derive(Debug, Clone)]
pub struct ClockSync {
    mcu_freq_hz: f64,
    last_clock: u64,
    estimate: ClockEstimate,
    transmit: TransmitEstimate,
    time_avg_s: f64,
    time_variance: f64,
    clock_avg: f64,
    clock_covariance: f64,
    prediction_variance: f64,
    last_prediction_time_s: f64,
    min_half_rtt_s: f64,
    min_rtt_time_s: f64,
    queries_pending: u32,
    /// Round trip of the sample the regression was seeded with, s.
    seed_rtt_s: f64,
    /// The last round trips, s (oldest first).
    recent_rtts: std::collections::VecDeque<f64>,
    /// Samples in the regression since the seed.
    regression_samples: u32,
    /// Samples left out as delayed in a row.
    delayed_in_a_row: u32,
}

impl ClockSync {
    /// Synchronisation for an MCU whose dictionary says `CLOCK_FREQ = mcu_freq_hz`.
    pub fn new(mcu_freq_hz: f64) -> Self {
        let estimate = ClockEstimate {
            time_s: 0.0,
            clock: 0.0,
            freq_hz: mcu_freq_hz,
        };
        Self {
            mcu_freq_hz,
            last_clock: 0,
            estimate,
            transmit: TransmitEstimate {
                freq_hz: mcu_freq_hz,
                time_s: 0.0,
                clock: 0,
                last_clock: 0,
            },
            time_avg_s: 0.0,
            time_variance: 0.0,
            clock_avg: 0.0,
            clock_covariance: 0.0,
            prediction_variance: (0.001 * mcu_freq_hz).powi(2),
            last_prediction_time_s: 0.0,
            min_half_rtt_s: 999_999_999.9,
            min_rtt_time_s: 0.0,
            queries_pending: 0,
            seed_rtt_s: f64::INFINITY,
            recent_rtts: std::collections::VecDeque::with_capacity(RTT_WINDOW),
            regression_samples: 0,
            delayed_in_a_row: 0,
        }
    }

    /// Seeds the regression from `uptime` (the 64-bit clock `high << 32 | clock`), the host
    /// time its request was sent and the time the answer came.
    pub fn handle_uptime(&mut self, clock64: u64, sent_time_s: f64, receive_time_s: f64) {
        self.seed(clock64, sent_time_s, receive_time_s - sent_time_s);
    }

    fn seed(&mut self, clock64: u64, sent_time_s: f64, rtt_s: f64) {
        self.seed_rtt_s = rtt_s.max(0.0);
        self.regression_samples = 0;
        self.last_clock = clock64;
        #[allow(clippy::cast_precision_loss)]
        let clock = clock64 as f64;
        self.clock_avg = clock;
        self.time_avg_s = sent_time_s;
        self.time_variance = 0.0;
        self.clock_covariance = 0.0;
        self.prediction_variance = (0.001 * self.mcu_freq_hz).powi(2);
        self.estimate = ClockEstimate {
            time_s: sent_time_s,
            clock,
            freq_hz: self.mcu_freq_hz,
        };
        self.transmit = TransmitEstimate {
            freq_hz: self.mcu_freq_hz,
            time_s: sent_time_s,
            clock: clock64,
            last_clock: clock64,
        };
        self.queries_pending = 0;
    }

    /// Counts a `get_clock` sent; see [`ClockSync::is_active`].
    pub fn query_sent(&mut self) {
        self.queries_pending = self.queries_pending.saturating_add(1);
    }

    /// False once more than [`MAX_QUERIES_PENDING`] queries went unanswered ("Lost communication
    /// with MCU").
    pub fn is_active(&self) -> bool {
        self.queries_pending <= MAX_QUERIES_PENDING
    }

    /// Feeds one `clock` reply: its 32-bit clock, the host time its request was sent (`None` when
    /// the request was retransmitted, which makes the sample useless), and when it arrived.
    pub fn handle_clock(&mut self, clock32: u32, sent_time_s: Option<f64>, receive_time_s: f64) {
        self.queries_pending = 0;
        let delta = u64::from(clock32.wrapping_sub(self.last_clock as u32));
        self.last_clock += delta;
        let Some(sent_s) = sent_time_s else { return };
        #[allow(clippy::cast_precision_loss)]
        let clock = self.last_clock as f64;

        let half_rtt_s = 0.5 * (receive_time_s - sent_s);
        let aged_s = (sent_s - self.min_rtt_time_s) * RTT_AGE;
        if half_rtt_s < self.min_half_rtt_s + aged_s {
            self.min_half_rtt_s = half_rtt_s;
            self.min_rtt_time_s = sent_s;
        }

        // Gantry's additions to klippy's regression, for a host that is not a quiet board
        // computer: a sample whose round trip was long was delayed on the way, and its clock
        // could have been read anywhere in it — left out (three at most in a row); and a sample
        // far tighter than the seed replaces a seed taken while the host was busy.
        let rtt_s = (receive_time_s - sent_s).max(0.0);
        let recent_min_s = self
            .recent_rtts
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min);
        if self.recent_rtts.len() == RTT_WINDOW {
            self.recent_rtts.pop_front();
        }
        self.recent_rtts.push_back(rtt_s);
        if self.regression_samples < RESEED_SAMPLES && rtt_s < 0.5 * self.seed_rtt_s {
            self.seed(self.last_clock, sent_s, rtt_s);
            return;
        }
        if rtt_s > DELAYED_FACTOR * recent_min_s + DELAYED_MARGIN_S
            && self.delayed_in_a_row < MAX_DELAYED_IN_A_ROW
        {
            self.delayed_in_a_row += 1;
            return;
        }
        self.delayed_in_a_row = 0;
        self.regression_samples += 1;

        let expected = (sent_s - self.time_avg_s) * self.estimate.freq_hz + self.clock_avg;
        let diff2 = (clock - expected).powi(2);
        if diff2 > 25.0 * self.prediction_variance && diff2 > (0.0005 * self.mcu_freq_hz).powi(2) {
            if clock > expected && sent_s < self.last_prediction_time_s + 10.0 {
                // Late: the reply was slow, the clock did not jump. Ignore the sample.
                return;
            }
            self.prediction_variance = (0.001 * self.mcu_freq_hz).powi(2);
        } else {
            self.last_prediction_time_s = sent_s;
            self.prediction_variance = (1.0 - DECAY) * (self.prediction_variance + diff2 * DECAY);
        }

        let dt = sent_s - self.time_avg_s;
        self.time_avg_s += DECAY * dt;
        self.time_variance = (1.0 - DECAY) * (self.time_variance + dt * dt * DECAY);
        let dc = clock - self.clock_avg;
        self.clock_avg += DECAY * dc;
        self.clock_covariance = (1.0 - DECAY) * (self.clock_covariance + dt * dc * DECAY);

        // The regression's slope, pulled towards CLOCK_FREQ while the samples span little time
        // (a prior worth FREQ_PRIOR_WEIGHT_S2 of time variance), and kept within
        // FREQ_MAX_DEVIATION of it.
        let nominal = self.mcu_freq_hz;
        let freq_hz = ((self.clock_covariance + FREQ_PRIOR_WEIGHT_S2 * nominal)
            / (self.time_variance + FREQ_PRIOR_WEIGHT_S2))
            .clamp(
                nominal * (1.0 - FREQ_MAX_DEVIATION),
                nominal * (1.0 + FREQ_MAX_DEVIATION),
            );
        let sigma = self.prediction_variance.sqrt();
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let transmit_clock = (self.clock_avg - 3.0 * sigma).max(0.0) as u64;
        self.transmit = TransmitEstimate {
            freq_hz,
            time_s: self.time_avg_s + TRANSMIT_EXTRA_S,
            clock: transmit_clock,
            last_clock: self.last_clock,
        };
        self.estimate = ClockEstimate {
            time_s: self.time_avg_s + self.min_half_rtt_s,
            clock: self.clock_avg,
            freq_hz,
        };
    }

    /// The current estimate of the MCU clock against host time.
    pub fn estimate(&self) -> ClockEstimate {
        self.estimate
    }

    /// The conservative estimate for transmit scheduling.
    pub fn transmit_estimate(&self) -> TransmitEstimate {
        self.transmit
    }

    /// The MCU's nominal frequency (`CLOCK_FREQ`).
    pub fn mcu_freq_hz(&self) -> f64 {
        self.mcu_freq_hz
    }

    /// The last 64-bit clock received.
    pub fn last_clock(&self) -> u64 {
        self.last_clock
    }

    /// Extends a 32-bit clock from the MCU to 64 bits: the value nearest the last known clock
    /// (a signed 32-bit difference), so slightly older clocks work too.
    pub fn clock32_to_clock64(&self, clock32: u32) -> u64 {
        let diff = i64::from(clock32.wrapping_sub(self.last_clock as u32).cast_signed());
        self.last_clock.saturating_add_signed(diff)
    }

    /// The print time (seconds) that host time `time_s` corresponds to.
    pub fn estimated_print_time(&self, time_s: f64) -> f64 {
        self.estimate.clock_at(time_s) / self.mcu_freq_hz
    }

    /// The MCU clock for a print time, rounded down (primary MCU: print time 0 is clock 0).
    pub fn print_time_to_clock(&self, print_time_s: f64) -> u64 {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let clock = (print_time_s * self.mcu_freq_hz).max(0.0) as u64;
        clock
    }

    /// The print time of an MCU clock.
    pub fn clock_to_print_time(&self, clock: u64) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let clock = clock as f64;
        clock / self.mcu_freq_hz
    }
}

/// How far past the later of the toolhead's print time and the primary's present a secondary
/// MCU's conversion is aimed, s (klippy: 4 s).
pub const SECONDARY_SYNC_AHEAD_S: f64 = 4.0;

/// A secondary MCU's print time: its clock mapped onto the primary MCU's print time.
///
/// Print time is the primary MCU's clock in seconds. A secondary MCU (a toolboard, a second
/// mainboard) runs its own crystal, booted at another moment, so its clock is converted with an
/// adjustable line `clock = (print_time − offset) · freq` that the host re-aims about once a
/// second (klippy's `SecondarySync.calibrate_clock`): the line keeps its value at
/// `sync1 = max(print time, primary's present)` — so commands already queued keep their clocks —
/// and passes through the secondary's estimated clock at the host time when the primary reaches
/// `sync2`, at least [`SECONDARY_SYNC_AHEAD_S`] later. Both MCUs' crystal errors and drift are
/// absorbed this way; steps on the two boards stay together within the clock estimates' error.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SecondarySync {
    /// Print time of this MCU's clock 0, s.
    pub offset_s: f64,
    /// This MCU's ticks per second of print time.
    pub freq_hz: f64,
    /// The last `sync2` aimed at (never aimed earlier again), print time s.
    last_sync_print_time: f64,
}

impl SecondarySync {
    /// The conversion right after the secondary `local` synchronised its clock at host time
    /// `time_s`: its present print time equals the primary's, then it is calibrated once.
    pub fn connect(main: &ClockSync, local: &ClockSync, time_s: f64) -> Self {
        let main_print_time = main.estimated_print_time(time_s);
        let local_print_time = local.estimated_print_time(time_s);
        let mut sync = Self {
            offset_s: main_print_time - local_print_time,
            freq_hz: local.mcu_freq_hz(),
            last_sync_print_time: 0.0,
        };
        sync.calibrate(main, local, 0.0, time_s);
        sync
    }

    /// Re-aims the conversion at host time `time_s` with the toolhead at `print_time` (see the
    /// type's doc); returns the new `(offset_s, freq_hz)`.
    pub fn calibrate(
        &mut self,
        main: &ClockSync,
        local: &ClockSync,
        print_time: f64,
        time_s: f64,
    ) -> (f64, f64) {
        let main_est = main.estimate();
        let main_freq = main.mcu_freq_hz();
        let est_print_time = main_est.clock_at(time_s) / main_freq;
        let sync1_print_time = print_time.max(est_print_time);
        let sync2_print_time = (sync1_print_time + SECONDARY_SYNC_AHEAD_S)
            .max(self.last_sync_print_time)
            .max(print_time + 2.5 * (print_time - est_print_time));
        // The host time at which the primary reaches sync2 (its estimate inverted).
        let sync2_time_s =
            main_est.time_s + (sync2_print_time * main_freq - main_est.clock) / main_est.freq_hz;
        #[allow(clippy::cast_precision_loss)]
        let sync1_clock = self.print_time_to_clock(sync1_print_time) as f64;
        let sync2_clock = local.estimate().clock_at(sync2_time_s).floor();
        let freq_hz = (sync2_clock - sync1_clock) / (sync2_print_time - sync1_print_time);
        if freq_hz.is_finite() && freq_hz > 0.0 {
            self.freq_hz = freq_hz;
            self.offset_s = sync1_print_time - sync1_clock / freq_hz;
            self.last_sync_print_time = sync2_print_time;
        }
        (self.offset_s, self.freq_hz)
    }

    /// This MCU's clock at a print time, rounded down.
    pub fn print_time_to_clock(&self, print_time: f64) -> u64 {
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let clock = ((print_time - self.offset_s) * self.freq_hz).max(0.0) as u64;
        clock
    }

    /// The print time of this MCU's clock.
    pub fn clock_to_print_time(&self, clock: u64) -> f64 {
        #[allow(clippy::cast_precision_loss)]
        let clock = clock as f64;
        clock / self.freq_hz + self.offset_s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An MCU whose crystal runs `ppm` fast and that booted `boot_s` before host time 0.
    struct Mcu {
        freq_hz: f64,
        boot_s: f64,
    }

    impl Mcu {
        fn clock64(&self, host_s: f64) -> u64 {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let c = ((host_s + self.boot_s) * self.freq_hz) as u64;
            c
        }
    }

    /// A deterministic jitter source in [0, 1).
    fn jitter(i: u32) -> f64 {
        let x = (u64::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) as f64;
        x / (1_u64 << 53) as f64
    }

    fn run(
        nominal_hz: f64,
        ppm: f64,
        samples: u32,
        late_every: Option<u32>,
    ) -> (ClockSync, Mcu, f64) {
        let mcu = Mcu {
            freq_hz: nominal_hz * (1.0 + ppm * 1e-6),
            boot_s: 3.7,
        };
        let mut sync = ClockSync::new(nominal_hz);
        sync.handle_uptime(mcu.clock64(0.0), 0.0, 0.0);
        let mut t = 0.05;
        let mut last_read_s = 0.0;
        for i in 0..samples {
            // Round trips of 0.3..0.8 ms, the MCU reads its clock in the middle; some replies late.
            let mut rtt = 0.0003 + 0.0005 * jitter(i);
            if late_every.is_some_and(|n| i % n == n - 1) {
                rtt += 0.030;
            }
            let read_at = t + rtt / 2.0;
            last_read_s = read_at;
            sync.query_sent();
            sync.handle_clock(mcu.clock64(read_at) as u32, Some(t), t + rtt);
            t += if i < 8 { 0.05 } else { QUERY_PERIOD_S };
        }
        (sync, mcu, last_read_s)
    }

    /// Regression: on a busy desktop the `uptime` answer came 300 ms late and some start-up
    /// samples 20–40 ms late; klippy's regression over those eight samples made the frequency
    /// 25–93 % low (measured over a pty under load), every timed command went out late and the
    /// MCU shut down with "Timer too close" within seconds.
    #[test]
    fn a_busy_start_up_does_not_bend_the_estimate() {
        let mcu = Mcu {
            freq_hz: 16_000_000.0 * (1.0 + 40e-6),
            boot_s: 1.2,
        };
        let mut sync = ClockSync::new(16_000_000.0);
        // The MCU read its clock 0.3 s after the request was sent (the host or the MCU was busy).
        sync.handle_uptime(mcu.clock64(0.3), 0.0, 0.3005);
        let mut t = 0.35;
        for i in 0..8_u32 {
            let delay = if i % 2 == 1 {
                0.02 + 0.02 * jitter(i)
            } else {
                0.0
            };
            let rtt = 0.0004 + delay;
            sync.query_sent();
            sync.handle_clock(mcu.clock64(t + delay + 0.0002) as u32, Some(t), t + rtt);
            t += 0.05;
        }
        let est = sync.estimate();
        let off = est.freq_hz / mcu.freq_hz - 1.0;
        assert!(off.abs() < 0.005, "frequency off by {:.3} %", off * 100.0);
        // Half a second on, where the first commands are scheduled, the prediction holds.
        let now = t + 0.5;
        #[allow(clippy::cast_precision_loss)]
        let truth = mcu.clock64(now) as f64;
        let error_ms = (est.clock_at(now) - truth) / mcu.freq_hz * 1e3;
        assert!(
            error_ms.abs() < 2.0,
            "clock prediction off by {error_ms:.2} ms"
        );
    }

    #[test]
    fn learns_a_fast_crystal_and_predicts_the_clock() {
        let (sync, mcu, _) = run(16_000_000.0, 50.0, 300, None);
        let est = sync.estimate();
        let ppm_error = (est.freq_hz / mcu.freq_hz - 1.0) * 1e6;
        assert!(ppm_error.abs() < 1.0, "frequency off by {ppm_error:.3} ppm");
        let now = 300.0;
        #[allow(clippy::cast_precision_loss)]
        let truth = mcu.clock64(now) as f64;
        let error_us = (est.clock_at(now) - truth) / mcu.freq_hz * 1e6;
        assert!(
            error_us.abs() < 200.0,
            "clock prediction off by {error_us:.1} µs"
        );
        assert!(sync.is_active());
    }

    #[test]
    fn follows_a_180_mhz_clock_through_many_32_bit_wraps() {
        // 2^32 ticks at 180 MHz is 23.9 s; 300 samples cover about 12 wraps.
        let (sync, mcu, end) = run(180_000_000.0, -20.0, 300, None);
        assert!(
            sync.last_clock() > u64::from(u32::MAX) * 10,
            "the 64-bit clock kept counting"
        );
        let truth = mcu.clock64(end);
        assert_eq!(
            sync.last_clock(),
            truth,
            "the last reply, extended to 64 bits"
        );
        // A 32-bit clock slightly older or newer than the last one extends to the right value.
        let last = sync.last_clock();
        assert_eq!(sync.clock32_to_clock64((last - 1000) as u32), last - 1000);
        assert_eq!(sync.clock32_to_clock64((last + 1000) as u32), last + 1000);
    }

    #[test]
    fn late_replies_do_not_bend_the_estimate() {
        let (clean, mcu, _) = run(16_000_000.0, 10.0, 200, None);
        let (noisy, _, _) = run(16_000_000.0, 10.0, 200, Some(7));
        let ppm = |s: &ClockSync| (s.estimate().freq_hz / mcu.freq_hz - 1.0) * 1e6;
        assert!(
            ppm(&noisy).abs() < 1.0,
            "late samples bent the frequency: {:.3} ppm",
            ppm(&noisy)
        );
        let t = 150.0;
        let shift_us =
            (noisy.estimate().clock_at(t) - clean.estimate().clock_at(t)) / mcu.freq_hz * 1e6;
        assert!(
            shift_us.abs() < 50.0,
            "late samples moved the prediction by {shift_us:.1} µs"
        );
    }

    #[test]
    fn lost_mcu_after_five_unanswered_queries() {
        let mut sync = ClockSync::new(16e6);
        for _ in 0..4 {
            sync.query_sent();
        }
        assert!(sync.is_active());
        sync.query_sent();
        assert!(!sync.is_active());
        sync.handle_clock(1, None, 1.0);
        assert!(sync.is_active(), "any reply revives it");
    }

    #[test]
    fn print_time_and_clock_convert_both_ways() {
        let sync = ClockSync::new(16_000_000.0);
        assert_eq!(sync.print_time_to_clock(1.5), 24_000_000);
        assert!((sync.clock_to_print_time(24_000_000) - 1.5).abs() < 1e-12);
        assert_eq!(sync.print_time_to_clock(-1.0), 0);
    }

    /// A synchronised `ClockSync` for `mcu` after `seconds` of queries (quiet link).
    fn synced(mcu: &Mcu, nominal_hz: f64, seconds: f64) -> ClockSync {
        let mut sync = ClockSync::new(nominal_hz);
        sync.handle_uptime(mcu.clock64(0.0), 0.0, 0.0);
        let mut t = 0.05;
        let mut i = 0;
        while t < seconds {
            let rtt = 0.0003 + 0.0005 * jitter(i);
            sync.query_sent();
            sync.handle_clock(mcu.clock64(t + rtt / 2.0) as u32, Some(t), t + rtt);
            t += if i < 8 { 0.05 } else { QUERY_PERIOD_S };
            i += 1;
        }
        sync
    }

    /// A toolboard at 64 MHz, 120 ppm fast, booted 41 s before a 180 MHz mainboard 30 ppm
    /// slow: for print times from now to 4 s ahead, the secondary's clock for a print time is
    /// within 20 µs of its true clock at the host time the primary reaches that print time, and
    /// re-aiming never moves a clock the toolhead already used.
    #[test]
    fn a_secondary_mcus_clock_follows_the_primarys_print_time() {
        let main = Mcu {
            freq_hz: 180e6 * (1.0 - 30e-6),
            boot_s: 2.5,
        };
        let tool = Mcu {
            freq_hz: 64e6 * (1.0 + 120e-6),
            boot_s: 43.5,
        };
        let main_sync = synced(&main, 180e6, 120.0);
        let tool_sync = synced(&tool, 64e6, 120.0);
        let now = 120.0;
        let mut sec = SecondarySync::connect(&main_sync, &tool_sync, now);
        let mut print_time = main_sync.estimated_print_time(now) + 0.5;
        for step in 0..30 {
            let now = now + f64::from(step);
            let before = sec.print_time_to_clock(print_time);
            sec.calibrate(&main_sync, &tool_sync, print_time, now);
            let after = sec.print_time_to_clock(print_time);
            assert!(before.abs_diff(after) <= 1, "re-aiming moved a used clock");
            for k in 0..=8 {
                let pt = print_time + f64::from(k) * 0.5;
                // The host time at which the primary's clock reaches `pt`.
                let host_s = pt * 180e6 / main.freq_hz - main.boot_s;
                #[allow(clippy::cast_precision_loss)]
                let truth = tool.clock64(host_s) as f64;
                #[allow(clippy::cast_precision_loss)]
                let got = sec.print_time_to_clock(pt) as f64;
                let error_us = (got - truth) / tool.freq_hz * 1e6;
                assert!(
                    error_us.abs() < 20.0,
                    "step {step}, {k}: off by {error_us:.1} µs"
                );
            }
            print_time += 1.0;
        }
        let back = sec.clock_to_print_time(sec.print_time_to_clock(print_time));
        assert!((back - print_time).abs() < 1e-7);
    }
}
