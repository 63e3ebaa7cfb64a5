//! Temperature sensors read through an ADC, as Klipper's host converts them
//! (klippy/extras/thermistor.py and adc_temperature.py; facts only, written anew).
//!
//! An ADC sensor turns a reading — the fraction of full scale, 0..1 — into a temperature
//! ([`AdcCurve::calc_temp`]) and a temperature into the reading it gives
//! ([`AdcCurve::calc_adc`]). Three kinds exist:
//!
//! - [`Thermistor`]: an NTC thermistor (with an optional inline resistor) on the low side of a
//!   divider whose pullup goes to the ADC reference, so the ADC reads `R / (R + pullup)`; the
//!   Steinhart–Hart equation `1/T = c1 + c2·ln R + c3·(ln R)³` (T in kelvin) relates resistance
//!   and temperature. The coefficients come from three (°C, Ω) points — falling back, as Klipper
//!   does, to the beta through the first and third point when they give `c3 ≤ 0` — or from one
//!   point and a beta (`c3 = 0`). The inverse solves the cubic with Cardano's formula.
//! - [`LinearVoltage`]: amplifier boards (AD595, PT100 INA826, `[adc_temperature]` with
//!   voltages) — a piecewise-linear map of (ADC fraction, °C) samples.
//! - [`LinearResistance`]: PT1000 and `[adc_temperature]` with resistances — a pullup divider
//!   and a piecewise-linear map of (Ω, °C) samples.
//!
//! [`SensorDef`] is what a `sensor_type` names before the heater's own options (pullup, ADC
//! voltage) are known; [`SensorDef::builtin`] knows Klipper's built-in sensors
//! (temperature_sensors.cfg and adc_temperature.py's tables), and [`OTHER_KLIPPER_SENSORS`] lists
//! the ones Klipper reads some other way (SPI, I2C, 1-wire, the host), which Gantry does not
//! model. The arithmetic follows Klipper's operation for operation (`x**3` as `powf(3.0)`), so
//! the ADC limits a heater sends the MCU (see [`AdcCurve::adc_range`]) are Klipper's integers.
//!
//! Pure: no I/O, no clock reads, never panics.

/// 0 K in °C.
pub const KELVIN_TO_CELSIUS: f64 = -273.15;
/// How often a heater's ADC reports, s (Klipper's REPORT_TIME).
pub const REPORT_TIME: f64 = 0.300;
/// Time of one ADC sample, s (SAMPLE_TIME).
pub const SAMPLE_TIME: f64 = 0.001;
/// Samples summed per report (SAMPLE_COUNT).
pub const SAMPLE_COUNT: u32 = 8;
/// Consecutive out-of-range reports before the MCU shuts down (RANGE_CHECK_COUNT).
pub const RANGE_CHECK_COUNT: u32 = 4;
/// Default pullup resistor, Ω.
pub const DEFAULT_PULLUP: f64 = 4700.0;
/// Default ADC reference voltage of a voltage sensor, V.
pub const DEFAULT_ADC_VOLTAGE: f64 = 5.0;

/// How a thermistor's curve is given.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ThermistorSpec {
    /// Three (°C, Ω) points for the Steinhart–Hart coefficients, sorted by temperature.
    Points([(f64, f64); 3]),
    /// One (°C, Ω) point and a beta value (K).
    Beta {
        /// The reference point (°C, Ω).
        point: (f64, f64),
        /// The beta value, K.
        beta: f64,
    },
}

/// A thermistor with its divider: Steinhart–Hart coefficients, pullup and inline resistor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Thermistor {
    /// Pullup resistor, Ω.
    pub pullup: f64,
    /// Resistor in series with the thermistor, Ω.
    pub inline_resistor: f64,
    /// Steinhart–Hart coefficients `c1`, `c2`, `c3`.
    pub coefficients: (f64, f64, f64),
}

impl Thermistor {
    /// The thermistor of `spec` behind a `pullup` (Ω) with an `inline_resistor` (Ω).
    pub fn new(spec: &ThermistorSpec, pullup: f64, inline_resistor: f64) -> Self {
        let coefficients = match *spec {
            ThermistorSpec::Points(points) => steinhart_hart(points),
            ThermistorSpec::Beta { point, beta } => from_beta(point, beta),
        };
        Self {
            pullup,
            inline_resistor,
            coefficients,
        }
    }

    /// The temperature (°C) for an ADC reading (fraction of full scale; clamped to
    /// 0.00001..0.99999 as Klipper does).
    pub fn calc_temp(&self, adc: f64) -> f64 {
        let (c1, c2, c3) = self.coefficients;
        let adc = adc.clamp(0.00001, 0.99999);
        let r = self.pullup * adc / (1.0 - adc);
        let ln_r = (r - self.inline_resistor).ln();
        let inv_t = c1 + c2 * ln_r + c3 * ln_r.powf(3.0);
        1.0 / inv_t + KELVIN_TO_CELSIUS
    }

    /// The ADC reading (fraction of full scale) at `temp` °C; 1 at or below absolute zero.
    pub fn calc_adc(&self, temp: f64) -> f64 {
        if temp <= KELVIN_TO_CELSIUS {
            return 1.0;
        }
        let (c1, c2, c3) = self.coefficients;
        let inv_t = 1.0 / (temp - KELVIN_TO_CELSIUS);
        let ln_r = if c3 != 0.0 {
            // Cardano's formula for c3·x³ + c2·x + (c1 − 1/T) = 0.
            let y = (c1 - inv_t) / (2.0 * c3);
            let x = ((c2 / (3.0 * c3)).powf(3.0) + y.powf(2.0)).sqrt();
            (x - y).powf(1.0 / 3.0) - (x + y).powf(1.0 / 3.0)
        } else {
            (inv_t - c1) / c2
        };
        let r = ln_r.exp() + self.inline_resistor;
        r / (self.pullup + r)
    }
}

/// Steinhart–Hart coefficients through three (°C, Ω) points: three linear equations in c1, c2,
/// c3. When they give `c3 ≤ 0` the curve is not a thermistor's; Klipper then uses the beta
/// through the first and third point.
fn steinhart_hart(points: [(f64, f64); 3]) -> (f64, f64, f64) {
    let [(t1, r1), (t2, r2), (t3, r3)] = points;
    let inv_t1 = 1.0 / (t1 - KELVIN_TO_CELSIUS);
    let inv_t2 = 1.0 / (t2 - KELVIN_TO_CELSIUS);
    let inv_t3 = 1.0 / (t3 - KELVIN_TO_CELSIUS);
    let (ln_r1, ln_r2, ln_r3) = (r1.ln(), r2.ln(), r3.ln());
    let (ln3_r1, ln3_r2, ln3_r3) = (ln_r1.powf(3.0), ln_r2.powf(3.0), ln_r3.powf(3.0));
    let (inv_t12, inv_t13) = (inv_t1 - inv_t2, inv_t1 - inv_t3);
    let (ln_r12, ln_r13) = (ln_r1 - ln_r2, ln_r1 - ln_r3);
    let (ln3_r12, ln3_r13) = (ln3_r1 - ln3_r2, ln3_r1 - ln3_r3);
    let c3 = (inv_t12 - inv_t13 * ln_r12 / ln_r13) / (ln3_r12 - ln3_r13 * ln_r12 / ln_r13);
    if c3 <= 0.0 {
        let beta = ln_r13 / inv_t13;
        return from_beta((t1, r1), beta);
    }
    let c2 = (inv_t12 - c3 * ln3_r12) / ln_r12;
    let c1 = inv_t1 - c2 * ln_r1 - c3 * ln3_r1;
    (c1, c2, c3)
}

/// Coefficients equivalent to a beta through one (°C, Ω) point.
fn from_beta((t1, r1): (f64, f64), beta: f64) -> (f64, f64, f64) {
    let inv_t1 = 1.0 / (t1 - KELVIN_TO_CELSIUS);
    let c2 = 1.0 / beta;
    (inv_t1 - c2 * r1.ln(), c2, 0.0)
}

/// Why samples cannot make a piecewise-linear map (Klipper's words).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InterpolateError {
    /// Two samples have the same key.
    #[error("duplicate value")]
    Duplicate,
    /// Fewer than two usable samples.
    #[error("need at least two samples")]
    TooFew,
}

/// Klipper's `LinearInterpolate`: (key, value) samples sorted by key, one (gain, offset) line per
/// segment; a sample on the previous segment's line extends that segment.
#[derive(Clone, Debug, PartialEq)]
pub struct LinearInterpolate {
    keys: Vec<f64>,
    slopes: Vec<(f64, f64)>,
}

/// The key after the last segment (Klipper's sentinel).
const LAST_KEY: f64 = 9_999_999_999_999.0;

impl LinearInterpolate {
    /// The map through `samples` (key, value), in any order.
    ///
    /// # Errors
    /// Two samples with the same key, or fewer than two samples.
    pub fn new(samples: &[(f64, f64)]) -> Result<Self, InterpolateError> {
        let mut sorted = samples.to_vec();
        sorted.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
        let mut keys = Vec::new();
        let mut slopes: Vec<(f64, f64)> = Vec::new();
        let mut last: Option<(f64, f64)> = None;
        for (key, value) in sorted {
            let Some((last_key, last_value)) = last else {
                last = Some((key, value));
                continue;
            };
            if key <= last_key {
                return Err(InterpolateError::Duplicate);
            }
            let gain = (value - last_value) / (key - last_key);
            let offset = last_value - last_key * gain;
            if slopes.last() == Some(&(gain, offset)) {
                continue;
            }
            last = Some((key, value));
            keys.push(key);
            slopes.push((gain, offset));
        }
        let Some(&final_slope) = slopes.last() else {
            return Err(InterpolateError::TooFew);
        };
        keys.push(LAST_KEY);
        slopes.push(final_slope);
        Ok(Self { keys, slopes })
    }

    /// The value at `key` (the segments extend beyond the first and last sample).
    pub fn interpolate(&self, key: f64) -> f64 {
        let pos = self.keys.partition_point(|&k| k <= key);
        let (gain, offset) = self.slopes[pos.min(self.slopes.len() - 1)];
        key * gain + offset
    }

    /// The key at which the map gives `value` (Klipper's search: the first segment end past
    /// `value` in the map's direction).
    pub fn reverse_interpolate(&self, value: f64) -> f64 {
        let values: Vec<f64> = self
            .keys
            .iter()
            .zip(&self.slopes)
            .map(|(key, (gain, offset))| key * gain + offset)
            .collect();
        let n = values.len();
        let rising = n >= 2 && values[0] < values[n - 2];
        let pos = values
            .iter()
            .position(|&v| if rising { v >= value } else { v <= value })
            .unwrap_or(n - 1);
        let (gain, offset) = self.slopes[pos];
        (value - offset) / gain
    }
}

/// A voltage-output sensor (amplifier board): (ADC fraction → °C) samples.
#[derive(Clone, Debug, PartialEq)]
pub struct LinearVoltage {
    map: LinearInterpolate,
}

impl LinearVoltage {
    /// The sensor of (°C, V) `samples` read by an ADC with reference `adc_voltage` (V), the
    /// output shifted by `voltage_offset` (V). Samples outside the ADC's range are left out (Klipper
    /// logs "Ignoring adc sample").
    ///
    /// # Errors
    /// Fewer than two usable samples, or two at the same voltage.
    pub fn new(
        samples: &[(f64, f64)],
        adc_voltage: f64,
        voltage_offset: f64,
    ) -> Result<Self, InterpolateError> {
        let points: Vec<(f64, f64)> = samples
            .iter()
            .map(|&(temp, volt)| ((volt - voltage_offset) / adc_voltage, temp))
            .filter(|&(adc, _)| (0.0..=1.0).contains(&adc))
            .collect();
        Ok(Self {
            map: LinearInterpolate::new(&points)?,
        })
    }
}

/// A resistance sensor (PT1000) behind a pullup: (Ω → °C) samples.
#[derive(Clone, Debug, PartialEq)]
pub struct LinearResistance {
    /// Pullup resistor, Ω.
    pub pullup: f64,
    map: LinearInterpolate,
}

impl LinearResistance {
    /// The sensor of (°C, Ω) `samples` behind `pullup` (Ω).
    ///
    /// # Errors
    /// Fewer than two samples, or two at the same resistance.
    pub fn new(samples: &[(f64, f64)], pullup: f64) -> Result<Self, InterpolateError> {
        let points: Vec<(f64, f64)> = samples.iter().map(|&(t, r)| (r, t)).collect();
        Ok(Self {
            pullup,
            map: LinearInterpolate::new(&points)?,
        })
    }
}

/// An ADC temperature sensor: reading (fraction of full scale) ↔ temperature (°C).
#[derive(Clone, Debug, PartialEq)]
pub enum AdcCurve {
    /// An NTC thermistor.
    Thermistor(Thermistor),
    /// A voltage-output sensor.
    Voltage(LinearVoltage),
    /// A resistance sensor.
    Resistance(LinearResistance),
}

impl AdcCurve {
    /// The temperature (°C) for an ADC reading (fraction of full scale).
    pub fn calc_temp(&self, adc: f64) -> f64 {
        match self {
            Self::Thermistor(t) => t.calc_temp(adc),
            Self::Voltage(v) => v.map.interpolate(adc),
            Self::Resistance(r) => {
                let adc = adc.clamp(0.00001, 0.99999);
                r.map.interpolate(r.pullup * adc / (1.0 - adc))
            }
        }
    }

    /// The ADC reading (fraction of full scale) at `temp` °C.
    pub fn calc_adc(&self, temp: f64) -> f64 {
        match self {
            Self::Thermistor(t) => t.calc_adc(temp),
            Self::Voltage(v) => v.map.reverse_interpolate(temp),
            Self::Resistance(r) => {
                let ohms = r.map.reverse_interpolate(temp);
                ohms / (r.pullup + ohms)
            }
        }
    }

    /// The readings at `min_temp` and `max_temp`, lower first (an NTC thermistor reads lower
    /// when hotter): the range outside which the MCU shuts the heater down (Klipper's
    /// `setup_minmax`).
    pub fn adc_range(&self, min_temp: f64, max_temp: f64) -> (f64, f64) {
        let (a, b) = (self.calc_adc(min_temp), self.calc_adc(max_temp));
        if b < a { (b, a) } else { (a, b) }
    }
}

/// What a `sensor_type` names, before the heater's own options (pullup, ADC voltage) apply.
#[derive(Clone, Debug, PartialEq)]
pub enum SensorDef {
    /// A thermistor (`[thermistor]` or built in); the heater gives `pullup_resistor` and
    /// `inline_resistor`.
    Thermistor(ThermistorSpec),
    /// (°C, V) samples (`[adc_temperature]` with voltages, or built in); the heater gives
    /// `adc_voltage` and `voltage_offset`.
    Voltage(Vec<(f64, f64)>),
    /// (°C, Ω) samples (`[adc_temperature]` with resistances, or PT1000); the heater gives
    /// `pullup_resistor`.
    Resistance(Vec<(f64, f64)>),
}

/// Klipper's built-in thermistors (temperature_sensors.cfg), by `sensor_type`.
pub const BUILTIN_THERMISTORS: &[(&str, ThermistorSpec)] = &[
    (
        "ATC Semitec 104GT-2",
        ThermistorSpec::Points([(20.0, 126_800.0), (150.0, 1360.0), (300.0, 80.65)]),
    ),
    (
        "ATC Semitec 104NT-4-R025H42G",
        ThermistorSpec::Points([(25.0, 100_000.0), (160.0, 1074.0), (300.0, 82.78)]),
    ),
    (
        "EPCOS 100K B57560G104F",
        ThermistorSpec::Points([(25.0, 100_000.0), (150.0, 1641.9), (250.0, 226.15)]),
    ),
    (
        "Generic 3950",
        ThermistorSpec::Points([(25.0, 100_000.0), (150.0, 1770.0), (250.0, 230.0)]),
    ),
    (
        "SliceEngineering 450",
        ThermistorSpec::Points([(25.0, 500_000.0), (200.0, 3734.0), (400.0, 240.0)]),
    ),
    (
        "TDK NTCG104LH104JT1",
        ThermistorSpec::Points([(25.0, 100_000.0), (50.0, 31_230.0), (125.0, 2066.0)]),
    ),
    (
        "Honeywell 100K 135-104LAG-J01",
        ThermistorSpec::Beta {
            point: (25.0, 100_000.0),
            beta: 3974.0,
        },
    ),
    (
        "NTC 100K MGB18-104F39050L32",
        ThermistorSpec::Beta {
            point: (25.0, 100_000.0),
            beta: 4100.0,
        },
    ),
];

/// Klipper's built-in voltage sensors (adc_temperature.py), by `sensor_type`.
pub const BUILTIN_VOLTAGE_SENSORS: &[&str] = &[
    "AD595",
    "AD597",
    "AD8494",
    "AD8495",
    "AD8496",
    "AD8497",
    "PT100 INA826",
];

/// Klipper's built-in resistance sensors (adc_temperature.py), by `sensor_type`.
pub const BUILTIN_RESISTANCE_SENSORS: &[&str] = &["PT1000"];

/// Sensor types Klipper knows but reads other than through a heater's ADC curve (SPI
/// thermocouple and RTD chips, I2C and 1-wire sensors, the host's and MCU's own temperature,
/// combined sensors). Gantry does not model them.
pub const OTHER_KLIPPER_SENSORS: &[&str] = &[
    "MAX6675",
    "MAX31855",
    "MAX31856",
    "MAX31865",
    "BME280",
    "DS18B20",
    "SI7013",
    "SI7020",
    "SI7021",
    "SHT21",
    "HTU21D",
    "SHT3X",
    "AHT10",
    "AHT1X",
    "AHT2X",
    "AHT3X",
    "LM75",
    "temperature_host",
    "temperature_mcu",
    "temperature_combined",
];

impl SensorDef {
    /// One of Klipper's built-in ADC sensors, by its `sensor_type`.
    pub fn builtin(name: &str) -> Option<Self> {
        if let Some((_, spec)) = BUILTIN_THERMISTORS.iter().find(|(n, _)| *n == name) {
            return Some(Self::Thermistor(*spec));
        }
        let table = match name {
            "AD595" => AD595,
            "AD597" => AD597,
            "AD8494" => AD8494,
            "AD8495" => AD8495,
            "AD8496" => AD8496,
            "AD8497" => AD8497,
            "PT100 INA826" => {
                let samples = pt100_table(100.0)
                    .into_iter()
                    .map(|(t, r)| (t, 10.0 * 5.0 * r / (4400.0 + r)))
                    .collect();
                return Some(Self::Voltage(samples));
            }
            "PT1000" => return Some(Self::Resistance(pt100_table(1000.0))),
            _ => return None,
        };
        Some(Self::Voltage(table.to_vec()))
    }
}

/// Callendar–Van Dusen resistances of a platinum RTD of `base` Ω at 0 °C, every 10 °C from 0 to
/// 490 °C: (°C, Ω).
pub fn pt100_table(base: f64) -> Vec<(f64, f64)> {
    const A: f64 = 3.9083e-3;
    const B: f64 = -5.775e-7;
    (0..50)
        .map(|i| {
            let t = f64::from(i * 10);
            (t, base * (1.0 + A * t + B * t * t))
        })
        .collect()
}

/// Klipper's AD595 table: (°C, volts).
#[rustfmt::skip]
const AD595: &[(f64, f64)] = &[
    (0.0, 0.0027), (10.0, 0.101), (20.0, 0.2), (25.0, 0.25), (30.0, 0.3), (40.0, 0.401),
    (50.0, 0.503), (60.0, 0.605), (80.0, 0.81), (100.0, 1.015), (120.0, 1.219), (140.0, 1.42),
    (160.0, 1.62), (180.0, 1.817), (200.0, 2.015), (220.0, 2.213), (240.0, 2.413), (260.0, 2.614),
    (280.0, 2.817), (300.0, 3.022), (320.0, 3.227), (340.0, 3.434), (360.0, 3.641),
    (380.0, 3.849), (400.0, 4.057), (420.0, 4.266), (440.0, 4.476), (460.0, 4.686),
    (480.0, 4.896),
];

/// Klipper's AD597 table: (°C, volts).
#[rustfmt::skip]
const AD597: &[(f64, f64)] = &[
    (0.0, 0.0), (10.0, 0.097), (20.0, 0.196), (25.0, 0.245), (30.0, 0.295), (40.0, 0.395),
    (50.0, 0.496), (60.0, 0.598), (80.0, 0.802), (100.0, 1.005), (120.0, 1.207), (140.0, 1.407),
    (160.0, 1.605), (180.0, 1.801), (200.0, 1.997), (220.0, 2.194), (240.0, 2.392),
    (260.0, 2.592), (280.0, 2.794), (300.0, 2.996), (320.0, 3.201), (340.0, 3.406),
    (360.0, 3.611), (380.0, 3.817), (400.0, 4.024), (420.0, 4.232), (440.0, 4.44), (460.0, 4.649),
    (480.0, 4.857), (500.0, 5.066),
];

/// Klipper's AD8494 table: (°C, volts).
#[rustfmt::skip]
const AD8494: &[(f64, f64)] = &[
    (-180.0, -0.714), (-160.0, -0.658), (-140.0, -0.594), (-120.0, -0.523), (-100.0, -0.446),
    (-80.0, -0.365), (-60.0, -0.278), (-40.0, -0.188), (-20.0, -0.095), (0.0, 0.002), (20.0, 0.1),
    (25.0, 0.125), (40.0, 0.201), (60.0, 0.303), (80.0, 0.406), (100.0, 0.511), (120.0, 0.617),
    (140.0, 0.723), (160.0, 0.829), (180.0, 0.937), (200.0, 1.044), (220.0, 1.151),
    (240.0, 1.259), (260.0, 1.366), (280.0, 1.473), (300.0, 1.58), (320.0, 1.687), (340.0, 1.794),
    (360.0, 1.901), (380.0, 2.008), (400.0, 2.114), (420.0, 2.221), (440.0, 2.328),
    (460.0, 2.435), (480.0, 2.542), (500.0, 2.65), (520.0, 2.759), (540.0, 2.868), (560.0, 2.979),
    (580.0, 3.09), (600.0, 3.203), (620.0, 3.316), (640.0, 3.431), (660.0, 3.548), (680.0, 3.666),
    (700.0, 3.786), (720.0, 3.906), (740.0, 4.029), (760.0, 4.152), (780.0, 4.276),
    (800.0, 4.401), (820.0, 4.526), (840.0, 4.65), (860.0, 4.774), (880.0, 4.897), (900.0, 5.018),
    (920.0, 5.138), (940.0, 5.257), (960.0, 5.374), (980.0, 5.49), (1000.0, 5.606),
    (1020.0, 5.72), (1040.0, 5.833), (1060.0, 5.946), (1080.0, 6.058), (1100.0, 6.17),
    (1120.0, 6.282), (1140.0, 6.394), (1160.0, 6.505), (1180.0, 6.616), (1200.0, 6.727),
];

/// Klipper's AD8495 table: (°C, volts).
#[rustfmt::skip]
const AD8495: &[(f64, f64)] = &[
    (-260.0, -0.786), (-240.0, -0.774), (-220.0, -0.751), (-200.0, -0.719), (-180.0, -0.677),
    (-160.0, -0.627), (-140.0, -0.569), (-120.0, -0.504), (-100.0, -0.432), (-80.0, -0.355),
    (-60.0, -0.272), (-40.0, -0.184), (-20.0, -0.093), (0.0, 0.003), (20.0, 0.1), (25.0, 0.125),
    (40.0, 0.2), (60.0, 0.301), (80.0, 0.402), (100.0, 0.504), (120.0, 0.605), (140.0, 0.705),
    (160.0, 0.803), (180.0, 0.901), (200.0, 0.999), (220.0, 1.097), (240.0, 1.196),
    (260.0, 1.295), (280.0, 1.396), (300.0, 1.497), (320.0, 1.599), (340.0, 1.701),
    (360.0, 1.803), (380.0, 1.906), (400.0, 2.01), (420.0, 2.113), (440.0, 2.217), (460.0, 2.321),
    (480.0, 2.425), (500.0, 2.529), (520.0, 2.634), (540.0, 2.738), (560.0, 2.843),
    (580.0, 2.947), (600.0, 3.051), (620.0, 3.155), (640.0, 3.259), (660.0, 3.362),
    (680.0, 3.465), (700.0, 3.568), (720.0, 3.67), (740.0, 3.772), (760.0, 3.874), (780.0, 3.975),
    (800.0, 4.076), (820.0, 4.176), (840.0, 4.275), (860.0, 4.374), (880.0, 4.473),
    (900.0, 4.571), (920.0, 4.669), (940.0, 4.766), (960.0, 4.863), (980.0, 4.959),
    (1000.0, 5.055), (1020.0, 5.15), (1040.0, 5.245), (1060.0, 5.339), (1080.0, 5.432),
    (1100.0, 5.525), (1120.0, 5.617), (1140.0, 5.709), (1160.0, 5.8), (1180.0, 5.891),
    (1200.0, 5.98), (1220.0, 6.069), (1240.0, 6.158), (1260.0, 6.245), (1280.0, 6.332),
    (1300.0, 6.418), (1320.0, 6.503), (1340.0, 6.587), (1360.0, 6.671), (1380.0, 6.754),
];

/// Klipper's AD8496 table: (°C, volts).
#[rustfmt::skip]
const AD8496: &[(f64, f64)] = &[
    (-180.0, -0.642), (-160.0, -0.59), (-140.0, -0.53), (-120.0, -0.464), (-100.0, -0.392),
    (-80.0, -0.315), (-60.0, -0.235), (-40.0, -0.15), (-20.0, -0.063), (0.0, 0.027),
    (20.0, 0.119), (25.0, 0.142), (40.0, 0.213), (60.0, 0.308), (80.0, 0.405), (100.0, 0.503),
    (120.0, 0.601), (140.0, 0.701), (160.0, 0.8), (180.0, 0.9), (200.0, 1.001), (220.0, 1.101),
    (240.0, 1.201), (260.0, 1.302), (280.0, 1.402), (300.0, 1.502), (320.0, 1.602),
    (340.0, 1.702), (360.0, 1.801), (380.0, 1.901), (400.0, 2.001), (420.0, 2.1), (440.0, 2.2),
    (460.0, 2.3), (480.0, 2.401), (500.0, 2.502), (520.0, 2.603), (540.0, 2.705), (560.0, 2.808),
    (580.0, 2.912), (600.0, 3.017), (620.0, 3.124), (640.0, 3.231), (660.0, 3.34), (680.0, 3.451),
    (700.0, 3.562), (720.0, 3.675), (740.0, 3.789), (760.0, 3.904), (780.0, 4.02), (800.0, 4.137),
    (820.0, 4.254), (840.0, 4.37), (860.0, 4.486), (880.0, 4.6), (900.0, 4.714), (920.0, 4.826),
    (940.0, 4.937), (960.0, 5.047), (980.0, 5.155), (1000.0, 5.263), (1020.0, 5.369),
    (1040.0, 5.475), (1060.0, 5.581), (1080.0, 5.686), (1100.0, 5.79), (1120.0, 5.895),
    (1140.0, 5.999), (1160.0, 6.103), (1180.0, 6.207), (1200.0, 6.311),
];

/// Klipper's AD8497 table: (°C, volts).
#[rustfmt::skip]
const AD8497: &[(f64, f64)] = &[
    (-260.0, -0.785), (-240.0, -0.773), (-220.0, -0.751), (-200.0, -0.718), (-180.0, -0.676),
    (-160.0, -0.626), (-140.0, -0.568), (-120.0, -0.503), (-100.0, -0.432), (-80.0, -0.354),
    (-60.0, -0.271), (-40.0, -0.184), (-20.0, -0.092), (0.0, 0.003), (20.0, 0.101), (25.0, 0.126),
    (40.0, 0.2), (60.0, 0.301), (80.0, 0.403), (100.0, 0.505), (120.0, 0.605), (140.0, 0.705),
    (160.0, 0.804), (180.0, 0.902), (200.0, 0.999), (220.0, 1.097), (240.0, 1.196),
    (260.0, 1.296), (280.0, 1.396), (300.0, 1.498), (320.0, 1.599), (340.0, 1.701),
    (360.0, 1.804), (380.0, 1.907), (400.0, 2.01), (420.0, 2.114), (440.0, 2.218), (460.0, 2.322),
    (480.0, 2.426), (500.0, 2.53), (520.0, 2.634), (540.0, 2.739), (560.0, 2.843), (580.0, 2.948),
    (600.0, 3.052), (620.0, 3.156), (640.0, 3.259), (660.0, 3.363), (680.0, 3.466),
    (700.0, 3.569), (720.0, 3.671), (740.0, 3.773), (760.0, 3.874), (780.0, 3.976),
    (800.0, 4.076), (820.0, 4.176), (840.0, 4.276), (860.0, 4.375), (880.0, 4.474),
    (900.0, 4.572), (920.0, 4.67), (940.0, 4.767), (960.0, 4.863), (980.0, 4.96), (1000.0, 5.055),
    (1020.0, 5.151), (1040.0, 5.245), (1060.0, 5.339), (1080.0, 5.433), (1100.0, 5.526),
    (1120.0, 5.618), (1140.0, 5.71), (1160.0, 5.801), (1180.0, 5.891), (1200.0, 5.981),
    (1220.0, 6.07), (1240.0, 6.158), (1260.0, 6.246), (1280.0, 6.332), (1300.0, 6.418),
    (1320.0, 6.503), (1340.0, 6.588), (1360.0, 6.671), (1380.0, 6.754),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * a.abs().max(b.abs()).max(1e-300)
    }

    /// The integer limits Klipper's MCU_adc sends: `int(min·max_adc)`, `ceil(max·max_adc)`.
    fn limits(curve: &AdcCurve, min_temp: f64, max_temp: f64, adc_max: f64) -> (i64, i64) {
        let (lo, hi) = curve.adc_range(min_temp, max_temp);
        let scale = adc_max * f64::from(SAMPLE_COUNT);
        ((lo * scale) as i64, (hi * scale).ceil() as i64)
    }

    fn builtin(name: &str) -> AdcCurve {
        let def = SensorDef::builtin(name).expect("built in");
        match def {
            SensorDef::Thermistor(spec) => {
                AdcCurve::Thermistor(Thermistor::new(&spec, DEFAULT_PULLUP, 0.0))
            }
            SensorDef::Voltage(s) => {
                AdcCurve::Voltage(LinearVoltage::new(&s, DEFAULT_ADC_VOLTAGE, 0.0).expect("ok"))
            }
            SensorDef::Resistance(s) => {
                AdcCurve::Resistance(LinearResistance::new(&s, DEFAULT_PULLUP).expect("ok"))
            }
        }
    }

    #[test]
    fn epcos_coefficients_and_curve_are_klippers() {
        let AdcCurve::Thermistor(t) = builtin("EPCOS 100K B57560G104F") else {
            panic!("a thermistor");
        };
        let (c1, c2, c3) = t.coefficients;
        // Klipper's Thermistor.setup_coefficients on the same points.
        assert!(close(c1, 0.000_722_136_308_968_056_5), "{c1}");
        assert!(close(c2, 0.000_216_766_566_488_498), "{c2}");
        assert!(close(c3, 8.929_358_045_310_955e-8), "{c3}");
        for (temp, adc) in [
            (0.0, 0.986_023_047_618_441_2),
            (25.0, 0.955_109_837_631_327_7),
            (110.0, 0.501_059_868_411_312_1),
            (250.0, 0.045_908_062_076_875_505),
        ] {
            assert!(close(t.calc_adc(temp), adc), "{temp}: {}", t.calc_adc(temp));
        }
        for (adc, temp) in [
            (0.5, 110.146_891_099_077_66),
            (0.05, 244.540_752_070_500_84),
            (0.9, 45.403_435_725_001_884),
        ] {
            assert!(close(t.calc_temp(adc), temp), "{adc}: {}", t.calc_temp(adc));
        }
    }

    /// The min_value/max_value Klipper sent in real runs (oracle case j, ADC_MAX 1023) and
    /// computed by Klipper's own code for other sensors (ADC_MAX 1023 and 4095).
    #[test]
    fn adc_limits_are_klippers_integers() {
        let epcos = builtin("EPCOS 100K B57560G104F");
        assert_eq!(limits(&epcos, 0.0, 250.0, 1023.0), (375, 8070));
        assert_eq!(limits(&epcos, 0.0, 110.0, 1023.0), (4100, 8070));
        assert_eq!(limits(&epcos, 0.0, 300.0, 4095.0), (731, 32303));
        let cases = [
            ("ATC Semitec 104GT-2", 250.0, (292, 8077), (552, 32331)),
            ("SliceEngineering 450", 250.0, (2051, 8159), (4558, 32658)),
            ("TDK NTCG104LH104JT1", 250.0, (189, 8085), (334, 32362)),
        ];
        for (name, max_temp, avr, arm) in cases {
            let c = builtin(name);
            assert_eq!(limits(&c, 0.0, max_temp, 1023.0), avr, "{name}");
            assert_eq!(limits(&c, 0.0, 300.0, 4095.0), arm, "{name}");
        }
        let mgb = builtin("NTC 100K MGB18-104F39050L32");
        assert_eq!(limits(&mgb, 0.0, 120.0, 4095.0), (14220, 32329));
        assert!(close(mgb.calc_temp(0.25), 154.144_870_276_764_83));
        let pt1000 = builtin("PT1000");
        assert_eq!(limits(&pt1000, 0.0, 300.0, 4095.0), (5747, 10186));
        assert!(close(pt1000.calc_temp(0.25), 148.239_804_499_453_16));
        let pt1000_1k = AdcCurve::Resistance(
            LinearResistance::new(&pt100_table(1000.0), 1000.0).expect("samples"),
        );
        assert_eq!(limits(&pt1000_1k, 0.0, 300.0, 4095.0), (16380, 22262));
        let ad8495 = builtin("AD8495");
        assert_eq!(limits(&ad8495, 0.0, 400.0, 4095.0), (19, 13170));
        assert!(close(ad8495.calc_temp(0.3), 300.588_235_294_117_6));
        let SensorDef::Voltage(ina) = SensorDef::builtin("PT100 INA826").expect("built in") else {
            panic!("a voltage sensor");
        };
        let ina33 = AdcCurve::Voltage(LinearVoltage::new(&ina, 3.3, 0.0).expect("samples"));
        assert_eq!(limits(&ina33, 0.0, 350.0, 4095.0), (11030, 24629));
        assert!(close(ina33.calc_temp(0.3), -28.590_194_531_687_246));
    }

    #[test]
    fn beta_and_inline_resistor() {
        let honeywell = builtin("Honeywell 100K 135-104LAG-J01");
        assert!(close(honeywell.calc_adc(100.0), 0.593_539_996_570_114_9));
        assert!(close(honeywell.calc_temp(0.3), 148.541_282_875_572_9));
        let spec = ThermistorSpec::Points([(25.0, 100_000.0), (150.0, 1770.0), (250.0, 230.0)]);
        let t = Thermistor::new(&spec, DEFAULT_PULLUP, 1000.0);
        assert!(close(t.calc_adc(200.0), 0.251_747_305_084_017_5));
        assert!(close(t.calc_temp(0.2), 266.554_131_403_611_56));
    }

    /// Three points that give c3 ≤ 0 fall back to the beta through the first and third.
    #[test]
    fn three_points_without_a_thermistor_curve_use_the_beta() {
        for r2 in [500.0, 1000.0, 1200.0] {
            let spec = ThermistorSpec::Points([(25.0, 100_000.0), (150.0, r2), (250.0, 226.15)]);
            let t = Thermistor::new(&spec, DEFAULT_PULLUP, 0.0);
            let (c1, c2, c3) = t.coefficients;
            assert_eq!(c3, 0.0);
            assert!(close(c1, 0.000_627_759_785_728_862_9), "{c1}");
            assert!(close(c2, 0.000_236_799_643_778_352), "{c2}");
            assert!(close(t.calc_adc(200.0), 0.101_461_502_055_735_95));
        }
    }

    #[test]
    fn readings_and_temperatures_round_trip() {
        for name in [
            "ATC Semitec 104GT-2",
            "EPCOS 100K B57560G104F",
            "Generic 3950",
            "SliceEngineering 450",
            "Honeywell 100K 135-104LAG-J01",
            "PT1000",
            "AD595",
            "PT100 INA826",
        ] {
            let c = builtin(name);
            for temp in [20.0, 60.0, 110.0, 235.0] {
                let back = c.calc_temp(c.calc_adc(temp));
                assert!((back - temp).abs() < 1e-6, "{name} {temp}: {back}");
            }
        }
    }

    #[test]
    fn linear_interpolation_follows_klipper() {
        // A sample on the previous segment's line extends it (Klipper keeps the segment start).
        let li = LinearInterpolate::new(&[(0.0, 0.0), (1.0, 1.0), (2.0, 2.0), (3.0, 5.0)])
            .expect("samples");
        assert_eq!(li.keys, [1.0, 3.0, LAST_KEY]);
        assert_eq!(li.slopes, [(1.0, 0.0), (2.0, -1.0), (2.0, -1.0)]);
        assert_eq!(li.interpolate(2.5), 4.0);
        assert_eq!(li.reverse_interpolate(3.5), 2.25);
        let falling =
            LinearInterpolate::new(&[(2.0, 2.0), (0.0, 5.0), (1.0, 3.0)]).expect("samples");
        assert_eq!(falling.interpolate(-1.0), 7.0);
        assert_eq!(falling.reverse_interpolate(2.5), 1.5);
        assert_eq!(falling.reverse_interpolate(10.0), -2.5);
        assert_eq!(
            LinearInterpolate::new(&[(1.0, 0.0), (1.0, 2.0)]),
            Err(InterpolateError::Duplicate)
        );
        assert_eq!(
            LinearInterpolate::new(&[(1.0, 0.0)]),
            Err(InterpolateError::TooFew)
        );
        assert_eq!(
            InterpolateError::TooFew.to_string(),
            "need at least two samples"
        );
    }

    #[test]
    fn every_builtin_name_resolves() {
        for (name, _) in BUILTIN_THERMISTORS {
            assert!(matches!(
                SensorDef::builtin(name),
                Some(SensorDef::Thermistor(_))
            ));
        }
        for name in BUILTIN_VOLTAGE_SENSORS {
            assert!(matches!(
                SensorDef::builtin(name),
                Some(SensorDef::Voltage(_))
            ));
        }
        assert!(matches!(
            SensorDef::builtin("PT1000"),
            Some(SensorDef::Resistance(_))
        ));
        for name in OTHER_KLIPPER_SENSORS {
            assert_eq!(SensorDef::builtin(name), None);
        }
        assert_eq!(SensorDef::builtin("epcos 100k b57560g104f"), None);
    }
}
