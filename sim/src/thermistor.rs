//! Thermistors as Klipper's host reads them (klippy/extras/thermistor.py, facts only): a thermistor
//! on the low side of a divider with a pullup to the ADC reference, so the ADC reads
//! `R / (R + pullup)` of full scale, and the Steinhart–Hart equation
//! `1/T = c1 + c2·ln R + c3·(ln R)³` (T in kelvin) relating resistance and temperature.
//!
//! The coefficients come from three (temperature, resistance) points, or from one point and a
//! beta value (`c3 = 0`); like Klipper, three points that give `c3 ≤ 0` fall back to the beta
//! through the first and third. The sim runs the equation backwards (temperature → resistance →
//! ADC fraction) to synthesise readings a host turns back into the same temperature.
//! [`KLIPPER_SENSORS`] lists Klipper's built-in thermistors by the names printer.cfg uses.

/// 0 °C in kelvin.
const KELVIN: f64 = 273.15;

/// Why a thermistor's curve or divider is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CurveError(pub String);

/// How a thermistor is specified.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Curve {
    /// Three (°C, Ω) points for the Steinhart–Hart coefficients.
    Points([(f64, f64); 3]),
    /// One (°C, Ω) point and a beta value.
    Beta {
        /// The reference point (°C, Ω).
        point: (f64, f64),
        /// The beta value, in kelvin.
        beta: f64,
    },
}

/// Klipper's built-in thermistors (klippy/extras/temperature_sensors.cfg), by `sensor_type`.
pub const KLIPPER_SENSORS: &[(&str, Curve)] = &[
    (
        "ATC Semitec 104GT-2",
        Curve::Points([(20.0, 126_800.0), (150.0, 1360.0), (300.0, 80.65)]),
    ),
    (
        "ATC Semitec 104NT-4-R025H42G",
        Curve::Points([(25.0, 100_000.0), (160.0, 1074.0), (300.0, 82.78)]),
    ),
    (
        "EPCOS 100K B57560G104F",
        Curve::Points([(25.0, 100_000.0), (150.0, 1641.9), (250.0, 226.15)]),
    ),
    (
        "Generic 3950",
        Curve::Points([(25.0, 100_000.0), (150.0, 1770.0), (250.0, 230.0)]),
    ),
    (
        "SliceEngineering 450",
        Curve::Points([(25.0, 500_000.0), (200.0, 3734.0), (400.0, 240.0)]),
    ),
    (
        "TDK NTCG104LH104JT1",
        Curve::Points([(25.0, 100_000.0), (50.0, 31_230.0), (125.0, 2066.0)]),
    ),
    (
        "Honeywell 100K 135-104LAG-J01",
        Curve::Beta {
            point: (25.0, 100_000.0),
            beta: 3974.0,
        },
    ),
    (
        "NTC 100K MGB18-104F39050L32",
        Curve::Beta {
            point: (25.0, 100_000.0),
            beta: 4100.0,
        },
    ),
];

/// The curve of one of Klipper's built-in thermistors.
pub fn klipper_sensor(name: &str) -> Option<Curve> {
    KLIPPER_SENSORS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, c)| *c)
}

/// A thermistor in its divider.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thermistor {
    c1: f64,
    c2: f64,
    c3: f64,
    /// The pullup resistor, Ω (Klipper's default is 4700).
    pub pullup_ohm: f64,
    /// A resistor in series with the thermistor, Ω (Klipper's `inline_resistor`, default 0).
    pub inline_ohm: f64,
}

impl Thermistor {
    /// A thermistor with `curve` behind `pullup_ohm` (and `inline_ohm` in series).
    ///
    /// # Errors
    /// When a resistance or temperature is not positive (in kelvin), or the points coincide.
    pub fn new(curve: Curve, pullup_ohm: f64, inline_ohm: f64) -> Result<Self, CurveError> {
        if !(pullup_ohm > 0.0 && pullup_ohm.is_finite()) {
            return Err(CurveError(format!(
                "pullup_ohm must be > 0, not {pullup_ohm}"
            )));
        }
        if !(inline_ohm >= 0.0 && inline_ohm.is_finite()) {
            return Err(CurveError(format!(
                "inline_ohm must be >= 0, not {inline_ohm}"
            )));
        }
        let (c1, c2, c3) = match curve {
            Curve::Points(points) => {
                for (t, r) in points {
                    check_point(t, r)?;
                }
                steinhart_hart(points)?
            }
            Curve::Beta { point, beta } => {
                check_point(point.0, point.1)?;
                if !(beta > 0.0 && beta.is_finite()) {
                    return Err(CurveError(format!("beta must be > 0, not {beta}")));
                }
                from_beta(point, beta)
            }
        };
        Ok(Self {
            c1,
            c2,
            c3,
            pullup_ohm,
            inline_ohm,
        })
    }

    /// The thermistor's resistance at `temp_c`, Ω.
    pub fn resistance_ohm(&self, temp_c: f64) -> f64 {
        let y = 1.0 / (temp_c + KELVIN);
        let ln_r = if self.c3 == 0.0 {
            (y - self.c1) / self.c2
        } else {
            // c3·x³ + c2·x + (c1 − y) = 0 with p = c2/c3 > 0 has one real root (Cardano).
            let p = self.c2 / self.c3;
            let q = (self.c1 - y) / self.c3;
            let d = (q * q / 4.0 + p * p * p / 27.0).sqrt();
            (-q / 2.0 + d).cbrt() + (-q / 2.0 - d).cbrt()
        };
        ln_r.exp()
    }

    /// The temperature at resistance `ohm`, °C.
    pub fn temperature_c(&self, ohm: f64) -> f64 {
        let ln_r = ohm.ln();
        1.0 / (self.c1 + self.c2 * ln_r + self.c3 * ln_r.powi(3)) - KELVIN
    }

    /// The ADC reading at `temp_c` as a fraction of full scale.
    pub fn adc_fraction(&self, temp_c: f64) -> f64 {
        let r = self.resistance_ohm(temp_c) + self.inline_ohm;
        r / (self.pullup_ohm + r)
    }

    /// The temperature a host computes from an ADC fraction, as Klipper does (the fraction
    /// clamped to [0.00001, 0.99999]).
    pub fn temperature_from_adc(&self, fraction: f64) -> f64 {
        let f = fraction.clamp(0.00001, 0.99999);
        let r = self.pullup_ohm * f / (1.0 - f) - self.inline_ohm;
        self.temperature_c(r)
    }
}

fn check_point(t: f64, r: f64) -> Result<(), CurveError> {
    if !(t + KELVIN > 0.0 && t.is_finite() && r > 0.0 && r.is_finite()) {
        return Err(CurveError(format!("({t} °C, {r} Ω) is not a valid point")));
    }
    Ok(())
}

fn from_beta(point: (f64, f64), beta: f64) -> (f64, f64, f64) {
    let c2 = 1.0 / beta;
    (1.0 / (point.0 + KELVIN) - c2 * point.1.ln(), c2, 0.0)
}

/// Solves `1/T = c1 + c2·L + c3·L³` through three points by eliminating c1 and applying
/// Cramer's rule to the two remaining equations.
fn steinhart_hart(points: [(f64, f64); 3]) -> Result<(f64, f64, f64), CurveError> {
    let y = points.map(|(t, _)| 1.0 / (t + KELVIN));
    let l = points.map(|(_, r)| r.ln());
    let (a1, b1, e1) = (l[0] - l[1], l[0].powi(3) - l[1].powi(3), y[0] - y[1]);
    let (a2, b2, e2) = (l[0] - l[2], l[0].powi(3) - l[2].powi(3), y[0] - y[2]);
    let det = a1 * b2 - a2 * b1;
    if det == 0.0 || !det.is_finite() {
        return Err(CurveError(
            "the three points do not define a curve".to_owned(),
        ));
    }
    let c2 = (e1 * b2 - e2 * b1) / det;
    let c3 = (a1 * e2 - a2 * e1) / det;
    if c3 <= 0.0 {
        // Klipper falls back to the beta through the first and third points.
        let beta = (l[0] - l[2]) / (y[0] - y[2]);
        return Ok(from_beta(points[0], beta));
    }
    Ok((y[0] - c2 * l[0] - c3 * l[0].powi(3), c2, c3))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epcos() -> Thermistor {
        let curve = klipper_sensor("EPCOS 100K B57560G104F").expect("built in");
        Thermistor::new(curve, 4700.0, 0.0).expect("valid")
    }

    #[test]
    fn epcos_matches_klippers_coefficients_and_sanity_values() {
        let t = epcos();
        // The coefficients Klipper computes for this sensor (the spec's table).
        assert!((t.c1 - 7.221_363_089_7e-4).abs() < 1e-12, "{}", t.c1);
        assert!((t.c2 - 2.167_665_664_9e-4).abs() < 1e-12, "{}", t.c2);
        assert!((t.c3 - 8.929_358_045_3e-8).abs() < 1e-15, "{}", t.c3);
        // At 200 °C: R ≈ 552.8 Ω, ADC ≈ 0.10524; at 25 °C the ADC reads ≈ 0.95511.
        assert!((t.resistance_ohm(200.0) - 552.8).abs() < 0.1);
        assert!((t.adc_fraction(200.0) - 0.105_24).abs() < 1e-5);
        assert!((t.adc_fraction(25.0) - 0.955_11).abs() < 1e-5);
    }

    #[test]
    fn every_klipper_sensor_round_trips() {
        for (name, curve) in KLIPPER_SENSORS {
            let t = Thermistor::new(*curve, 4700.0, 10.0).expect(name);
            for temp in [0.0, 25.0, 60.0, 110.0, 200.0, 280.0] {
                let back = t.temperature_from_adc(t.adc_fraction(temp));
                assert!((back - temp).abs() < 1e-6, "{name} at {temp}: {back}");
            }
        }
    }

    #[test]
    fn bad_curves_are_errors() {
        assert!(Thermistor::new(Curve::Points([(25.0, 1.0); 3]), 4700.0, 0.0).is_err());
        let beta = Curve::Beta {
            point: (25.0, 100_000.0),
            beta: 0.0,
        };
        assert!(Thermistor::new(beta, 4700.0, 0.0).is_err());
        let curve = klipper_sensor("Generic 3950").expect("built in");
        assert!(Thermistor::new(curve, 0.0, 0.0).is_err());
    }
}
