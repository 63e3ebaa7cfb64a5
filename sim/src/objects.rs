//! The MCU's objects other than steppers, as the firmware keeps them: endstops (src/endstop.c),
//! trsyncs (src/trsync.c), digital outputs with software PWM (src/gpiocmds.c) and analog inputs
//! (src/adccmds.c). These are plain state; [`crate::model`] runs their commands and timers.

use std::collections::VecDeque;

/// An endstop and its homing state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endstop {
    /// The pin's enumeration value.
    pub pin: i64,
    /// Whether the pin's pull-up is on (an undriven pin then reads high).
    pub pull_up: bool,
    /// Armed by `endstop_home` (stays set after a trigger until disarmed).
    pub homing: bool,
    /// The level that counts as triggered.
    pub pin_value: bool,
    /// Ticks between confirming samples.
    pub sample_ticks: u32,
    /// Samples that must all match.
    pub sample_count: u8,
    /// Ticks between sampling attempts.
    pub rest_ticks: u32,
    /// The trsync to trigger and the reason to give it.
    pub trsync_oid: u8,
    /// The trigger reason.
    pub trigger_reason: u8,
    /// Matching samples still needed while confirming.
    pub trigger_count: u8,
    /// Whether a match is being confirmed.
    pub confirming: bool,
    /// After a match: the first matching sample's clock plus `rest_ticks` (Klipper's
    /// `next_clock` in `endstop_state`).
    pub next_wake: u64,
}

impl Endstop {
    /// An endstop as `config_endstop` creates it.
    pub fn new(pin: i64, pull_up: bool) -> Self {
        Self {
            pin,
            pull_up,
            homing: false,
            pin_value: false,
            sample_ticks: 0,
            sample_count: 0,
            rest_ticks: 0,
            trsync_oid: 0,
            trigger_reason: 0,
            trigger_count: 0,
            confirming: false,
            next_wake: 0,
        }
    }
}

/// A trigger synchroniser.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trsync {
    /// Armed by `trsync_start`, cleared by the first trigger.
    pub can_trigger: bool,
    /// The first trigger's reason.
    pub trigger_reason: u8,
    /// The reason a timeout triggers with.
    pub expire_reason: u8,
    /// The period of `trsync_state` reports (0: none).
    pub report_ticks: u32,
    /// Steppers registered with `stepper_stop_on_trigger`, by oid.
    pub steppers: Vec<u8>,
}

/// A digital output, possibly pulsed as software PWM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigitalOut {
    /// The pin's enumeration value.
    pub pin: i64,
    /// Whether the output is on (or pulsing).
    pub on: bool,
    /// On-ticks per cycle while pulsing.
    pub on_ticks: u32,
    /// Whether it is pulsing (on for part of each cycle).
    pub toggling: bool,
    /// The level `shutdown` restores.
    pub default_on: bool,
    /// How long the output may stay away from its default without an update (0: forever).
    pub max_duration: u32,
    /// The software PWM cycle (`set_digital_out_pwm_cycle`).
    pub cycle_ticks: u32,
    /// Queued updates: (clock, on-ticks). Each holds a move-queue slot.
    pub queue: VecDeque<(u64, u32)>,
    /// Whether an end time is set (the next update or the `max_duration` deadline).
    pub check_end: bool,
    /// The end time.
    pub end_time: u64,
}

impl DigitalOut {
    /// An output as `config_digital_out` creates it.
    pub fn new(pin: i64, on: bool, default_on: bool, max_duration: u32) -> Self {
        Self {
            pin,
            on,
            on_ticks: 0,
            toggling: false,
            default_on,
            max_duration,
            cycle_ticks: 0,
            queue: VecDeque::new(),
            check_end: false,
            end_time: 0,
        }
    }

    /// The duty cycle the pin puts out (0..1).
    pub fn duty(&self) -> f64 {
        match (self.on, self.toggling) {
            (false, _) => 0.0,
            (true, false) => 1.0,
            (true, true) => f64::from(self.on_ticks) / f64::from(self.cycle_ticks.max(1)),
        }
    }
}

/// An analog input and its sampling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnalogIn {
    /// The pin's enumeration value.
    pub pin: i64,
    /// Ticks between the samples of one cycle.
    pub sample_ticks: u32,
    /// Samples summed per cycle (0: not sampling).
    pub sample_count: u8,
    /// Ticks between cycles.
    pub rest_ticks: u32,
    /// Bytes per batched report; `None` for the older one-value-per-report format.
    pub bytes_per_report: Option<u8>,
    /// The range a sum must stay in.
    pub min_value: u16,
    /// The range's top.
    pub max_value: u16,
    /// Consecutive out-of-range sums that shut the MCU down.
    pub range_check_count: u8,
    /// Consecutive out-of-range sums so far.
    pub invalid_count: u8,
    /// The start of the current (or next) cycle.
    pub next_begin: u64,
    /// Sums waiting for a batched report.
    pub pending: Vec<u16>,
    /// The last sum.
    pub last_value: u16,
}

impl AnalogIn {
    /// An input as `config_analog_in` creates it.
    pub fn new(pin: i64) -> Self {
        Self {
            pin,
            sample_ticks: 0,
            sample_count: 0,
            rest_ticks: 0,
            bytes_per_report: None,
            min_value: 0,
            max_value: 0,
            range_check_count: 0,
            invalid_count: 0,
            next_begin: 0,
            pending: Vec::with_capacity(24),
            last_value: 0,
        }
    }

    /// The clock of the cycle's last sample, when the sum is complete.
    pub fn cycle_end(&self) -> u64 {
        self.next_begin
            + u64::from(self.sample_ticks) * u64::from(self.sample_count.saturating_sub(1))
    }
}
