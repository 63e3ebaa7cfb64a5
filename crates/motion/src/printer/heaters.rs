//! Heaters' temperature sensors (klippy/extras/heaters.py, thermistor.py, adc_temperature.py and
//! mcu.py's MCU_adc; facts only): which sensor a `sensor_type` names, the ADC a heater reads,
//! and the `query_analog_in` command that starts its sampling.
//!
//! Sensor types come from a registry filled as Klipper fills it: a `[thermistor NAME]` or
//! `[adc_temperature NAME]` section registers NAME when the config reaches it (file order), and
//! Klipper's built-in sensors are registered when the first sensor is set up — so a user section
//! after the first heater cannot replace a built-in of the same name, and a heater cannot use a
//! sensor section written after it (Klipper: "Unknown temperature sensor").
//!
//! A heater with an ADC sensor ([`crate::thermistor::AdcCurve`]) samples every
//! [`REPORT_TIME`] with [`SAMPLE_COUNT`] samples of [`SAMPLE_TIME`], and the MCU shuts down
//! after [`RANGE_CHECK_COUNT`] reports outside the readings of `min_temp` and `max_temp`.
//! Sensors Gantry does not model (SPI, I2C, 1-wire, host or MCU temperature) keep the plain
//! `config_analog_in` on their `sensor_pin` and send no query.

use super::{Printer, PrinterError, above, conf, minval};
use crate::config::{Config, ConfigError, FloatBounds, Section};
use crate::thermistor::{
    AdcCurve, BUILTIN_RESISTANCE_SENSORS, BUILTIN_THERMISTORS, BUILTIN_VOLTAGE_SENSORS,
    DEFAULT_ADC_VOLTAGE, DEFAULT_PULLUP, KELVIN_TO_CELSIUS, LinearResistance, LinearVoltage,
    OTHER_KLIPPER_SENSORS, RANGE_CHECK_COUNT, REPORT_TIME, SAMPLE_COUNT, SAMPLE_TIME, SensorDef,
    Thermistor, ThermistorSpec,
};

/// A heater's temperature sensor, as the config made it (see [`Printer::heater_sensor`]).
#[derive(Clone, Debug, PartialEq)]
pub struct HeaterSensor {
    /// The heater's section (`extruder`, `heater_bed`, `heater_generic chamber`).
    pub heater: String,
    /// The `sensor_type` as written.
    pub sensor_type: String,
    /// `min_temp`, °C.
    pub min_temp: f64,
    /// `max_temp`, °C.
    pub max_temp: f64,
    /// The MCU of the sensor pin (index into [`Printer::mcus`]).
    pub mcu: usize,
    /// The analog input's oid on that MCU.
    pub oid: u8,
    /// The reading ↔ temperature curve; `None` for a sensor Gantry does not model.
    pub curve: Option<AdcCurve>,
    /// The sampling the MCU was asked for; `None` when the curve is, or without a dictionary
    /// ([`Printer::for_planning`]).
    pub query: Option<AnalogInQuery>,
}

impl HeaterSensor {
    /// The temperature (°C) for a reading as a fraction of full scale (Klipper's `calc_temp`);
    /// `None` for a sensor Gantry does not model.
    pub fn calc_temp(&self, adc: f64) -> Option<f64> {
        self.curve.as_ref().map(|c| c.calc_temp(adc))
    }

    /// The temperature (°C) for a value of an `analog_in_state` report (the sum of
    /// [`SAMPLE_COUNT`] samples); `None` without a curve or a query.
    pub fn temperature_of_report(&self, value: u16) -> Option<f64> {
        let query = self.query.as_ref()?;
        self.calc_temp(query.fraction(value))
    }
}

/// A `query_analog_in` as Klipper's MCU_adc builds it: the first sample at
/// `print_time_to_clock(int(estimated_print_time + 1.5)) + slot_ticks`, then one report every
/// `rest_ticks`, each the sum of `sample_count` samples `sample_ticks` apart, with the range the
/// MCU checks.
#[derive(Clone, Debug, PartialEq)]
pub struct AnalogInQuery {
    /// The analog input's oid.
    pub oid: u8,
    /// The first sample's clock as batch mode sends it (estimated print time 0: print time 1 s).
    pub clock: u64,
    /// The oid's offset from the whole print-time second, ticks (`oid · 10 ms`), which spreads
    /// the MCU's ADC queries.
    pub slot_ticks: u64,
    /// Ticks between the samples of one report.
    pub sample_ticks: u64,
    /// Samples summed per report.
    pub sample_count: u32,
    /// Ticks between reports.
    pub rest_ticks: u64,
    /// Bytes per report when the dictionary's `query_analog_in` has the parameter (current
    /// firmware); `None` for older firmware's format.
    pub bytes_per_report: Option<u32>,
    /// Lowest summed value the MCU accepts.
    pub min_value: u16,
    /// Highest summed value the MCU accepts.
    pub max_value: u16,
    /// Reports out of range before the MCU shuts down.
    pub range_check_count: u32,
    /// Full scale of a report: `sample_count · ADC_MAX`.
    pub max_adc: f64,
}

impl AnalogInQuery {
    /// The command as batch mode sends it.
    pub fn command(&self) -> String {
        self.command_at(self.clock)
    }

    /// The command with its first sample at `clock` (a live host takes
    /// `print_time_to_clock(trunc(estimated_print_time + 1.5)) + slot_ticks`).
    pub fn command_at(&self, clock: u64) -> String {
        let bytes = self
            .bytes_per_report
            .map_or_else(String::new, |b| format!(" bytes_per_report={b}"));
        format!(
            "query_analog_in oid={} clock={clock} sample_ticks={} sample_count={} \
             rest_ticks={}{bytes} min_value={} max_value={} range_check_count={}",
            self.oid,
            self.sample_ticks,
            self.sample_count,
            self.rest_ticks,
            self.min_value,
            self.max_value,
            self.range_check_count
        )
    }

    /// A report's value as a fraction of full scale (what the sensor curves take).
    pub fn fraction(&self, value: u16) -> f64 {
        f64::from(value) * (1.0 / self.max_adc)
    }
}

/// What an analog input is asked to sample (Klipper's `setup_adc_sample`): report and sample
/// times, samples per report, and the accepted range as fractions of full scale.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct AdcSampling {
    pub(super) report_time: f64,
    pub(super) sample_time: f64,
    pub(super) sample_count: u32,
    pub(super) min: f64,
    pub(super) max: f64,
    pub(super) range_check_count: u32,
}

/// What the MCU's dictionary says about its ADC.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct McuAdcFacts {
    /// `ADC_MAX`, if the dictionary has it.
    pub(super) adc_max: Option<f64>,
    /// Whether `query_analog_in` has the older format (no `bytes_per_report`).
    pub(super) legacy_query: bool,
}

/// `query_analog_in` before batched reports.
const LEGACY_QUERY_ANALOG_IN: &str = "query_analog_in oid=%c clock=%u sample_ticks=%u \
     sample_count=%c rest_ticks=%u min_value=%hu max_value=%hu range_check_count=%c";

/// Bytes of one sample in a report.
const BYTES_PER_SAMPLE: u32 = 2;

impl McuAdcFacts {
    pub(super) fn of(dict: &gantry_proto::Dictionary) -> Self {
        use gantry_proto::dictionary::Constant;
        let adc_max = match dict.config.get("ADC_MAX") {
            Some(Constant::Int(i)) => Some(*i as f64),
            Some(Constant::Float(f)) => Some(*f),
            Some(Constant::Str(s)) => s.trim().parse().ok(),
            None => None,
        };
        let legacy_query = dict
            .command("query_analog_in")
            .is_some_and(|m| m.format == LEGACY_QUERY_ANALOG_IN);
        Self {
            adc_max,
            legacy_query,
        }
    }

    /// The query for analog input `oid` on an MCU at `freq` Hz (Klipper's
    /// `MCU_adc._build_config`, batch mode: estimated print time 0).
    ///
    /// # Errors
    /// No `ADC_MAX`, or a sample count whose sum does not fit 16 bits (Klipper's messages).
    pub(super) fn query(
        &self,
        mcu: &str,
        freq: f64,
        oid: u8,
        s: &AdcSampling,
    ) -> Result<AnalogInQuery, PrinterError> {
        let seconds_to_clock = |t: f64| (t * freq) as u64;
        let Some(adc_max) = self.adc_max else {
            return Err(PrinterError::Config(format!(
                "mcu '{mcu}': Firmware constant 'ADC_MAX' not found"
            )));
        };
        let max_adc = f64::from(s.sample_count) * adc_max;
        if max_adc >= 65536.0 {
            return Err(PrinterError::Config(format!(
                "ADC sample_count={} too large for MCU",
                s.sample_count
            )));
        }
        let slot_ticks = seconds_to_clock(f64::from(oid) * 0.01);
        // print_time_to_clock(int(0 + 1.5)) in batch mode.
        let clock = seconds_to_clock(1.0) + slot_ticks;
        let clamp = |v: f64| v.clamp(0.0, 65535.0) as u16;
        Ok(AnalogInQuery {
            oid,
            clock,
            slot_ticks,
            sample_ticks: seconds_to_clock(s.sample_time),
            sample_count: s.sample_count,
            rest_ticks: seconds_to_clock(s.report_time),
            // One sample per report (batch_num 1): the older format when the MCU has it.
            bytes_per_report: (!self.legacy_query).then_some(BYTES_PER_SAMPLE),
            min_value: clamp((s.min * max_adc).trunc()),
            max_value: clamp((s.max * max_adc).ceil()),
            range_check_count: s.range_check_count,
            max_adc,
        })
    }
}

/// How a sensor type is read.
#[derive(Clone, Debug, PartialEq)]
enum Factory {
    /// Through an ADC curve.
    Adc(SensorDef),
    /// A sensor Klipper reads otherwise (not modelled).
    Other,
}

/// The sensor types known so far, as Klipper's `heaters` object registers them.
#[derive(Clone, Debug, Default)]
pub(super) struct SensorRegistry {
    builtins_loaded: bool,
    /// Sections already loaded (Klipper loads each object once).
    loaded: Vec<String>,
    /// Sensor factories by `sensor_type`; a later registration replaces an earlier one.
    factories: Vec<(String, Factory)>,
}

/// The module of a section (its first word) and the rest of its name, words joined by spaces.
fn module_and_name(section: &str) -> (&str, String) {
    let mut words = section.split_whitespace();
    let module = words.next().unwrap_or("");
    (module, words.collect::<Vec<_>>().join(" "))
}

impl SensorRegistry {
    fn add(&mut self, name: String, factory: Factory) {
        match self.factories.iter_mut().find(|(n, _)| *n == name) {
            Some(entry) => entry.1 = factory,
            None => self.factories.push((name, factory)),
        }
    }

    /// A config section reached in file order: `[thermistor NAME]` and `[adc_temperature NAME]`
    /// register NAME; sections that set up a sensor (Klipper's `setup_sensor`) load the
    /// built-in sensors first.
    ///
    /// # Errors
    /// A sensor section's invalid or missing options.
    pub(super) fn section_reached(
        &mut self,
        config: &Config,
        section: &str,
    ) -> Result<(), PrinterError> {
        let (module, name) = module_and_name(section);
        match module {
            "thermistor" | "adc_temperature" if !name.is_empty() => {
                if self.loaded.iter().any(|s| s == section) {
                    return Ok(());
                }
                self.loaded.push(section.to_owned());
                let s = config.getsection(section);
                let def = if module == "thermistor" {
                    custom_thermistor(&s)?
                } else {
                    custom_adc_temperature(&s)?
                };
                self.add(name, Factory::Adc(def));
            }
            "temperature_sensor" | "temperature_fan" | "temperature_probe" | "z_thermal_adjust" => {
                self.load_builtins()
            }
            _ => {}
        }
        Ok(())
    }

    /// Klipper's temperature_sensors.cfg: the adc_temperature tables and the modules of other
    /// sensors, then the thermistors whose section is not loaded yet.
    fn load_builtins(&mut self) {
        if self.builtins_loaded {
            return;
        }
        self.builtins_loaded = true;
        for name in BUILTIN_VOLTAGE_SENSORS
            .iter()
            .chain(BUILTIN_RESISTANCE_SENSORS)
        {
            if let Some(def) = SensorDef::builtin(name) {
                self.add((*name).to_owned(), Factory::Adc(def));
            }
        }
        for name in OTHER_KLIPPER_SENSORS {
            self.add((*name).to_owned(), Factory::Other);
        }
        for (name, spec) in BUILTIN_THERMISTORS {
            let section = format!("thermistor {name}");
            if !self.loaded.contains(&section) {
                self.loaded.push(section);
                self.add(
                    (*name).to_owned(),
                    Factory::Adc(SensorDef::Thermistor(*spec)),
                );
            }
        }
    }

    /// The sensor of heater section `s` (Klipper's `setup_sensor` and the sensor's own
    /// options): an ADC curve, or `None` for a sensor Gantry does not model.
    ///
    /// # Errors
    /// No `sensor_type`, an unknown one ("Unknown temperature sensor 'x'"), or invalid sensor
    /// options.
    pub(super) fn setup_sensor(
        &mut self,
        s: &Section<'_>,
    ) -> Result<Option<AdcCurve>, PrinterError> {
        self.load_builtins();
        let sensor_type = s.get("sensor_type").map_err(conf)?.trim();
        let Some((_, factory)) = self.factories.iter().find(|(n, _)| n == sensor_type) else {
            return Err(conf(ConfigError::Value {
                at: s.location("sensor_type"),
                section: s.name().to_owned(),
                option: "sensor_type".to_owned(),
                message: format!("Unknown temperature sensor '{sensor_type}'"),
            }));
        };
        let Factory::Adc(def) = factory else {
            return Ok(None);
        };
        let interp_err = |e: crate::thermistor::InterpolateError| {
            conf(ConfigError::Value {
                at: s.header_location(),
                section: s.name().to_owned(),
                option: "sensor_type".to_owned(),
                message: format!("adc_temperature {e} in heater {}", s.name()),
            })
        };
        let curve = match def {
            SensorDef::Thermistor(spec) => {
                let pullup = s
                    .getfloat("pullup_resistor", Some(DEFAULT_PULLUP), above(0.0))
                    .map_err(conf)?;
                let inline = s
                    .getfloat("inline_resistor", Some(0.0), minval(0.0))
                    .map_err(conf)?;
                AdcCurve::Thermistor(Thermistor::new(spec, pullup, inline))
            }
            SensorDef::Voltage(samples) => {
                let adc_voltage = s
                    .getfloat("adc_voltage", Some(DEFAULT_ADC_VOLTAGE), above(0.0))
                    .map_err(conf)?;
                let offset = s
                    .getfloat("voltage_offset", Some(0.0), FloatBounds::NONE)
                    .map_err(conf)?;
                AdcCurve::Voltage(
                    LinearVoltage::new(samples, adc_voltage, offset).map_err(interp_err)?,
                )
            }
            SensorDef::Resistance(samples) => {
                let pullup = s
                    .getfloat("pullup_resistor", Some(DEFAULT_PULLUP), above(0.0))
                    .map_err(conf)?;
                AdcCurve::Resistance(LinearResistance::new(samples, pullup).map_err(interp_err)?)
            }
        };
        Ok(Some(curve))
    }
}

/// `[thermistor NAME]`: one point and a beta, or three points (sorted by temperature).
fn custom_thermistor(s: &Section<'_>) -> Result<SensorDef, PrinterError> {
    let temp = |i: u32| {
        s.getfloat(&format!("temperature{i}"), None, minval(KELVIN_TO_CELSIUS))
            .map_err(conf)
    };
    let res = |i: u32| {
        s.getfloat(&format!("resistance{i}"), None, minval(0.0))
            .map_err(conf)
    };
    let t1 = temp(1)?;
    let r1 = res(1)?;
    if let Some(beta) = s.getfloat_opt("beta", above(0.0)).map_err(conf)? {
        return Ok(SensorDef::Thermistor(ThermistorSpec::Beta {
            point: (t1, r1),
            beta,
        }));
    }
    let (t2, r2) = (temp(2)?, res(2)?);
    let (t3, r3) = (temp(3)?, res(3)?);
    let mut points = [(t1, r1), (t2, r2), (t3, r3)];
    points.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    Ok(SensorDef::Thermistor(ThermistorSpec::Points(points)))
}

/// `[adc_temperature NAME]`: temperatureN with voltageN, or with resistanceN when `resistance1`
/// is set; the list ends at the first absent temperatureN.
fn custom_adc_temperature(s: &Section<'_>) -> Result<SensorDef, PrinterError> {
    let by_resistance = s.get_opt("resistance1").is_some();
    let other = if by_resistance {
        "resistance"
    } else {
        "voltage"
    };
    let mut samples = Vec::new();
    for i in 1..1000 {
        let Some(t) = s
            .getfloat_opt(&format!("temperature{i}"), FloatBounds::NONE)
            .map_err(conf)?
        else {
            break;
        };
        let v = s
            .getfloat(&format!("{other}{i}"), None, FloatBounds::NONE)
            .map_err(conf)?;
        samples.push((t, v));
    }
    Ok(if by_resistance {
        SensorDef::Resistance(samples)
    } else {
        SensorDef::Voltage(samples)
    })
}

/// A heater's ADC sampling: [`REPORT_TIME`], [`SAMPLE_TIME`], [`SAMPLE_COUNT`] and the readings
/// of `min_temp` and `max_temp` (Klipper's `setup_minmax`).
pub(super) fn heater_sampling(curve: &AdcCurve, min_temp: f64, max_temp: f64) -> AdcSampling {
    let (min, max) = curve.adc_range(min_temp, max_temp);
    AdcSampling {
        report_time: REPORT_TIME,
        sample_time: SAMPLE_TIME,
        sample_count: SAMPLE_COUNT,
        min,
        max,
        range_check_count: RANGE_CHECK_COUNT,
    }
}

impl Printer {
    /// The sensor of heater `heater` (its section name: `extruder`, `extruder1`,
    /// `heater_bed`, `heater_generic chamber`), if that heater has one.
    pub fn heater_sensor(&self, heater: &str) -> Option<&HeaterSensor> {
        self.heater_sensors.iter().find(|h| h.heater == heater)
    }

    /// Every heater's sensor, in the order the heaters were created.
    pub fn heater_sensors(&self) -> &[HeaterSensor] {
        &self.heater_sensors
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_proto::Dictionary;

    const AVR_DICT: &str = include_str!("../../../../tests/fixtures/oracle/dict/atmega2560.dict");
    const STM32_DICT: &str = include_str!("../../../../tests/fixtures/oracle/dict/stm32f446.dict");

    /// Every kind of ADC sensor Gantry models, on an AVR: user thermistors (three points, in any
    /// order, and beta), user `[adc_temperature]` with voltages and with resistances, built-in
    /// voltage and resistance sensors, pullup, inline resistor, ADC voltage and offset, and
    /// `pwm_cycle_time`.
    const SENSORS_CFG: &str = "
[mcu]
serial: /dev/null

[printer]
kinematics: none
max_velocity: 300
max_accel: 3000

[thermistor my3pt]
temperature1: 250
resistance1: 230
temperature2: 25
resistance2: 100000
temperature3: 150
resistance3: 1770

[thermistor mybeta]
temperature1: 25
resistance1: 100000
beta: 3950

[adc_temperature myvolt]
temperature1: 20
voltage1: 0.5
temperature2: 120
voltage2: 1.5
temperature3: 300
voltage3: 3.0

[adc_temperature myres]
temperature1: 0
resistance1: 100
temperature2: 100
resistance2: 138.5
temperature3: 300
resistance3: 212.0

[heater_generic chamber]
heater_pin: PH4
sensor_type: mybeta
sensor_pin: PK1
control: watermark
min_temp: -10
max_temp: 80
pwm_cycle_time: 0.25

[heater_bed]
heater_pin: PH5
sensor_type: myvolt
sensor_pin: PK6
adc_voltage: 3.3
voltage_offset: 0.1
control: watermark
min_temp: 0
max_temp: 130

[heater_generic amp]
heater_pin: PH6
sensor_type: AD8495
sensor_pin: PK2
control: watermark
min_temp: 0
max_temp: 400

[heater_generic rtd]
heater_pin: PE3
sensor_type: PT1000
sensor_pin: PK3
pullup_resistor: 2200
control: watermark
min_temp: 0
max_temp: 300

[heater_generic res]
heater_pin: PE4
sensor_type: myres
sensor_pin: PK4
pullup_resistor: 470
control: watermark
min_temp: 5
max_temp: 280

[heater_generic ina]
heater_pin: PE5
sensor_type: PT100 INA826
sensor_pin: PK7
control: watermark
min_temp: 0
max_temp: 350

[extruder]
step_pin: PA4
dir_pin: PA6
enable_pin: !PA2
microsteps: 16
rotation_distance: 33.5
nozzle_diameter: 0.4
filament_diameter: 1.75
heater_pin: PB4
sensor_type: my3pt
sensor_pin: PK5
pullup_resistor: 4600
inline_resistor: 150
control: pid
pid_Kp: 22.2
pid_Ki: 1.08
pid_Kd: 114
min_temp: 0
max_temp: 275
";

    /// What unmodified Klipper sent for [`SENSORS_CFG`] in batch mode with the atmega2560
    /// dictionary: the config phase, then the startup commands.
    const KLIPPER_AVR: &[&str] = &[
        "allocate_oids count=16",
        "config_analog_in oid=1 pin=PK1",
        "config_digital_out oid=2 pin=PH4 value=0 default_value=0 max_duration=48000000",
        "set_digital_out_pwm_cycle oid=2 cycle_ticks=4000000",
        "config_analog_in oid=3 pin=PK6",
        "config_digital_out oid=4 pin=PH5 value=0 default_value=0 max_duration=48000000",
        "set_digital_out_pwm_cycle oid=4 cycle_ticks=1600000",
        "config_analog_in oid=5 pin=PK2",
        "config_digital_out oid=6 pin=PH6 value=0 default_value=0 max_duration=48000000",
        "set_digital_out_pwm_cycle oid=6 cycle_ticks=1600000",
        "config_analog_in oid=7 pin=PK3",
        "config_digital_out oid=8 pin=PE3 value=0 default_value=0 max_duration=48000000",
        "set_digital_out_pwm_cycle oid=8 cycle_ticks=1600000",
        "config_analog_in oid=9 pin=PK4",
        "config_digital_out oid=10 pin=PE4 value=0 default_value=0 max_duration=48000000",
        "set_digital_out_pwm_cycle oid=10 cycle_ticks=1600000",
        "config_analog_in oid=11 pin=PK7",
        "config_digital_out oid=12 pin=PE5 value=0 default_value=0 max_duration=48000000",
        "set_digital_out_pwm_cycle oid=12 cycle_ticks=1600000",
        "config_analog_in oid=13 pin=PK5",
        "config_digital_out oid=14 pin=PB4 value=0 default_value=0 max_duration=48000000",
        "set_digital_out_pwm_cycle oid=14 cycle_ticks=1600000",
        "config_stepper oid=0 step_pin=PA4 dir_pin=PA6 invert_step=0 step_pulse_ticks=32",
        "config_digital_out oid=15 pin=PA2 value=1 default_value=1 max_duration=0",
        "finalize_config crc=3637272986",
        "query_analog_in oid=1 clock=16160000 sample_ticks=16000 sample_count=8 rest_ticks=4800000 bytes_per_report=2 min_value=5973 max_value=8119 range_check_count=4",
        "queue_digital_out oid=2 clock=3200000 on_ticks=0",
        "query_analog_in oid=3 clock=16480000 sample_ticks=16000 sample_count=8 rest_ticks=4800000 bytes_per_report=2 min_value=496 max_value=3679 range_check_count=4",
        "queue_digital_out oid=4 clock=3200000 on_ticks=0",
        "query_analog_in oid=5 clock=16800000 sample_ticks=16000 sample_count=8 rest_ticks=4800000 bytes_per_report=2 min_value=4 max_value=3290 range_check_count=4",
        "queue_digital_out oid=6 clock=3200000 on_ticks=0",
        "query_analog_in oid=7 clock=17120000 sample_ticks=16000 sample_count=8 rest_ticks=4800000 bytes_per_report=2 min_value=2557 max_value=4017 range_check_count=4",
        "queue_digital_out oid=8 clock=3200000 on_ticks=0",
        "query_analog_in oid=9 clock=17440000 sample_ticks=16000 sample_count=8 rest_ticks=4800000 bytes_per_report=2 min_value=1458 max_value=2483 range_check_count=4",
        "queue_digital_out oid=10 clock=3200000 on_ticks=0",
        "query_analog_in oid=11 clock=17760000 sample_ticks=16000 sample_count=8 rest_ticks=4800000 bytes_per_report=2 min_value=1818 max_value=4061 range_check_count=4",
        "queue_digital_out oid=12 clock=3200000 on_ticks=0",
        "query_analog_in oid=13 clock=18080000 sample_ticks=16000 sample_count=8 rest_ticks=4800000 bytes_per_report=2 min_value=505 max_value=8064 range_check_count=4",
        "queue_digital_out oid=14 clock=3200000 on_ticks=0",
    ];

    /// Klipper's `query_analog_in`s for [`SENSORS_CFG`] on an STM32F446 (ADC_MAX 4095, 180 MHz),
    /// the pins moved to that chip's names.
    const KLIPPER_STM32_QUERIES: &[&str] = &[
        "query_analog_in oid=1 clock=181800000 sample_ticks=180000 sample_count=8 rest_ticks=54000000 bytes_per_report=2 min_value=23912 max_value=32498 range_check_count=4",
        "query_analog_in oid=3 clock=185400000 sample_ticks=180000 sample_count=8 rest_ticks=54000000 bytes_per_report=2 min_value=1985 max_value=14726 range_check_count=4",
        "query_analog_in oid=5 clock=189000000 sample_ticks=180000 sample_count=8 rest_ticks=54000000 bytes_per_report=2 min_value=19 max_value=13170 range_check_count=4",
        "query_analog_in oid=7 clock=192600000 sample_ticks=180000 sample_count=8 rest_ticks=54000000 bytes_per_report=2 min_value=10237 max_value=16079 range_check_count=4",
        "query_analog_in oid=9 clock=196200000 sample_ticks=180000 sample_count=8 rest_ticks=54000000 bytes_per_report=2 min_value=5838 max_value=9938 range_check_count=4",
        "query_analog_in oid=11 clock=199800000 sample_ticks=180000 sample_count=8 rest_ticks=54000000 bytes_per_report=2 min_value=7280 max_value=16255 range_check_count=4",
        "query_analog_in oid=13 clock=203400000 sample_ticks=180000 sample_count=8 rest_ticks=54000000 bytes_per_report=2 min_value=2025 max_value=32280 range_check_count=4",
    ];

    fn dict(text: &str) -> Dictionary {
        Dictionary::from_json(text).expect("valid dictionary")
    }

    fn build(cfg: &str, dict: &Dictionary) -> Result<Printer, PrinterError> {
        let config = Config::parse(cfg, "printer.cfg").expect("config parses");
        Printer::new(&config, &[("mcu", dict)])
    }

    fn startup(p: &Printer) -> Vec<String> {
        let m = &p.mcus[0];
        m.config_phase()
            .into_iter()
            .chain(m.startup_cmds.iter().cloned())
            .collect()
    }

    #[test]
    fn config_phase_and_queries_are_klippers() {
        let p = build(SENSORS_CFG, &dict(AVR_DICT)).expect("printer builds");
        assert_eq!(startup(&p), KLIPPER_AVR);
    }

    #[test]
    fn queries_on_a_32_bit_mcu_are_klippers() {
        let pins = [
            ("PH4", "PB1"),
            ("PK1", "PA1"),
            ("PH5", "PB2"),
            ("PK6", "PA2"),
            ("PH6", "PB3"),
            ("PK2", "PA3"),
            ("PE3", "PB4"),
            ("PK3", "PA4"),
            ("PE4", "PB5"),
            ("PK4", "PA5"),
            ("PE5", "PB6"),
            ("PK7", "PA6"),
            ("PA4", "PC1"),
            ("PA6", "PC2"),
            ("!PA2", "!PC3"),
            ("PB4", "PB7"),
            ("PK5", "PA7"),
        ];
        let cfg: String = SENSORS_CFG
            .lines()
            .map(|line| match line.split_once("_pin: ") {
                Some((key, pin)) => {
                    let to = pins.iter().find(|(f, _)| *f == pin).map_or(pin, |p| p.1);
                    format!("{key}_pin: {to}\n")
                }
                None => format!("{line}\n"),
            })
            .collect();
        let p = build(&cfg, &dict(STM32_DICT)).expect("printer builds");
        let queries: Vec<&String> = p.mcus[0]
            .startup_cmds
            .iter()
            .filter(|c| c.starts_with("query_analog_in"))
            .collect();
        assert_eq!(queries, KLIPPER_STM32_QUERIES);
    }

    /// Older firmware declares `query_analog_in` without `bytes_per_report`; Klipper then sends
    /// that format (checked against Klipper with such a dictionary).
    #[test]
    fn older_firmware_gets_the_older_query() {
        let new = "rest_ticks=%u bytes_per_report=%c min_value";
        assert!(AVR_DICT.contains(new));
        let legacy = dict(&AVR_DICT.replace(new, "rest_ticks=%u min_value"));
        let p = build(SENSORS_CFG, &legacy).expect("printer builds");
        let queries: Vec<String> = p.mcus[0]
            .startup_cmds
            .iter()
            .filter(|c| c.starts_with("query_analog_in"))
            .cloned()
            .collect();
        let expected: Vec<String> = KLIPPER_AVR
            .iter()
            .filter(|c| c.starts_with("query_analog_in"))
            .map(|c| c.replace(" bytes_per_report=2", ""))
            .collect();
        assert_eq!(queries, expected);
        assert_eq!(queries.len(), 7);
    }

    #[test]
    fn heater_sensors_convert_reports_to_temperatures() {
        let p = build(SENSORS_CFG, &dict(AVR_DICT)).expect("printer builds");
        let names: Vec<&str> = p
            .heater_sensors()
            .iter()
            .map(|h| h.heater.as_str())
            .collect();
        assert_eq!(
            names,
            [
                "heater_generic chamber",
                "heater_bed",
                "heater_generic amp",
                "heater_generic rtd",
                "heater_generic res",
                "heater_generic ina",
                "extruder"
            ]
        );
        let e = p.heater_sensor("extruder").expect("extruder sensor");
        assert_eq!((e.mcu, e.oid, e.sensor_type.as_str()), (0, 13, "my3pt"));
        assert_eq!((e.min_temp, e.max_temp), (0.0, 275.0));
        let q = e.query.as_ref().expect("query");
        assert_eq!(q.command(), KLIPPER_AVR[KLIPPER_AVR.len() - 2]);
        assert_eq!(q.max_adc, 8184.0);
        assert_eq!(q.slot_ticks, 2_080_000);
        // The range limits read back as the range's ends.
        let hot = e.temperature_of_report(q.min_value).expect("temperature");
        let cold = e.temperature_of_report(q.max_value).expect("temperature");
        assert!((hot - 275.0).abs() < 0.5, "{hot}");
        assert!(cold.abs() < 0.5, "{cold}");
        for temp in [25.0, 210.0] {
            let adc = e.curve.as_ref().expect("curve").calc_adc(temp);
            let back = e.calc_temp(adc).expect("temperature");
            assert!((back - temp).abs() < 1e-9, "{temp}: {back}");
        }
        assert!(p.heater_sensor("heater_generic nope").is_none());
    }

    #[test]
    fn planning_has_sensors_but_no_queries() {
        let config = Config::parse(SENSORS_CFG, "printer.cfg").expect("config parses");
        let p = Printer::for_planning(&config).expect("printer builds");
        assert!(
            p.mcus[0]
                .startup_cmds
                .iter()
                .all(|c| !c.starts_with("query"))
        );
        let bed = p.heater_sensor("heater_bed").expect("bed sensor");
        assert!(bed.query.is_none());
        assert!(bed.calc_temp(0.2).is_some());
    }

    fn with_heater_bed(bed: &str) -> String {
        format!(
            "[mcu]\nserial: /dev/null\n[printer]\nkinematics: none\nmax_velocity: 300\n\
             max_accel: 3000\n{bed}"
        )
    }

    fn error_of(cfg: &str) -> String {
        match build(cfg, &dict(AVR_DICT)) {
            Ok(_) => panic!("config accepted: {cfg}"),
            Err(e) => e.to_string(),
        }
    }

    const BED: &str = "[heater_bed]\nheater_pin: PH5\nsensor_pin: PK6\ncontrol: watermark\n\
                       min_temp: 0\nmax_temp: 110\n";

    #[test]
    fn errors_are_klippers() {
        assert_eq!(
            error_of(&with_heater_bed(&format!("{BED}sensor_type: Foo\n"))),
            "printer.cfg:13: Unknown temperature sensor 'Foo'"
        );
        // A sensor section after the heater that names it is not known yet (Klipper loads
        // sections in file order).
        assert_eq!(
            error_of(&with_heater_bed(&format!(
                "{BED}sensor_type: late\n[thermistor late]\ntemperature1: 25\nresistance1: \
                 100000\nbeta: 3950\n"
            ))),
            "printer.cfg:13: Unknown temperature sensor 'late'"
        );
        assert_eq!(
            error_of(&with_heater_bed(BED)),
            "printer.cfg:7: Option 'sensor_type' in section 'heater_bed' must be specified"
        );
        assert_eq!(
            error_of(&with_heater_bed(&format!(
                "[adc_temperature one]\ntemperature1: 20\nvoltage1: 1.0\n\
                 {BED}sensor_type: one\n"
            ))),
            "printer.cfg:10: adc_temperature need at least two samples in heater heater_bed"
        );
        assert_eq!(
            error_of(&with_heater_bed(&format!(
                "{BED}sensor_type: PT1000\npwm_cycle_time: 0.5\n"
            ))),
            "printer.cfg:14: Option 'pwm_cycle_time' in section 'heater_bed' must have \
             maximum of 0.3"
        );
        assert_eq!(
            error_of(&with_heater_bed(&format!(
                "[thermistor t]\ntemperature1: 25\nresistance1: 100000\n{BED}sensor_type: t\n"
            ))),
            "printer.cfg:7: Option 'temperature2' in section 'thermistor t' must be specified"
        );
        let no_adc_max = dict(&AVR_DICT.replace("\"ADC_MAX\"", "\"ADC_MAX_\""));
        let cfg = with_heater_bed(&format!("{BED}sensor_type: Generic 3950\n"));
        assert_eq!(
            build(&cfg, &no_adc_max).map(|_| ()),
            Err(PrinterError::Config(
                "mcu 'mcu': Firmware constant 'ADC_MAX' not found".into()
            ))
        );
    }

    /// A sensor Klipper reads some other way keeps the plain `config_analog_in` it had, with no
    /// query and no curve.
    #[test]
    fn other_sensors_keep_a_plain_analog_in() {
        let p = build(
            &with_heater_bed(&format!("{BED}sensor_type: MAX31865\n")),
            &dict(AVR_DICT),
        )
        .expect("printer builds");
        assert!(
            p.mcus[0]
                .config_cmds
                .contains(&"config_analog_in oid=0 pin=PK6".to_owned())
        );
        assert!(
            p.mcus[0]
                .startup_cmds
                .iter()
                .all(|c| !c.starts_with("query"))
        );
        let bed = p.heater_sensor("heater_bed").expect("bed sensor");
        assert_eq!((bed.curve.as_ref(), bed.query.as_ref()), (None, None));
        assert_eq!(bed.calc_temp(0.5), None);
    }

    /// A user section named like a built-in, before the first heater, replaces it (Klipper loads
    /// it first; the built-in of that name is then skipped).
    #[test]
    fn user_sensor_sections_replace_builtins() {
        let own = "[thermistor Generic 3950]\ntemperature1: 25\nresistance1: 50000\nbeta: 3950\n";
        let bed = format!("{BED}sensor_type: Generic 3950\n");
        let p = build(&with_heater_bed(&format!("{own}{bed}")), &dict(AVR_DICT))
            .expect("printer builds");
        assert!(matches!(
            p.heater_sensor("heater_bed").and_then(|h| h.curve.as_ref()),
            Some(AdcCurve::Thermistor(t)) if t.coefficients.2 == 0.0
        ));
    }
}
