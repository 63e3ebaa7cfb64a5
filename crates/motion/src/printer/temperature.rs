//! `[temperature_sensor NAME]` and `[temperature_fan NAME]` (klippy/extras/temperature_sensor.py,
//! temperature_fan.py and fan.py; facts only): the MCU objects they create, in Klipper's order,
//! and `SET_TEMPERATURE_FAN_TARGET`'s checks.
//!
//! A temperature sensor is an analog input sampled like a heater's (its `query_analog_in` range
//! from `min_temp`, default −273.15 °C, and `max_temp`, default 99 999 999.9 °C, through the
//! sensor's curve). A temperature fan is first a fan — a software-PWM output that starts off and
//! whose shutdown value is `shutdown_speed` (default 1: full speed when the MCU shuts down),
//! which Klipper's soft PWM allows only as 0 or 1 — then a sensor with required `min_temp` and
//! `max_temp`. Batch mode reads no temperatures, so neither sends anything after its startup
//! commands; their control (a fan's PID or bang-bang) runs only on a live printer.
//!
//! Sensors read otherwise than through an ADC on a `sensor_pin` (the MCU's own sensor, the host,
//! SPI, I2C, 1-wire) are not modelled: their section creates nothing, like a heater's.

use super::{Cfg, Printer, PrinterError, above, cfg_err, conf, heaters, minval};
use crate::config::{FloatBounds, PinFlags};
use crate::thermistor::KELVIN_TO_CELSIUS;

/// `[temperature_sensor]`'s default `max_temp`, °C.
const SENSOR_MAX_TEMP: f64 = 99_999_999.9;

/// A `[temperature_fan]`'s settings that `SET_TEMPERATURE_FAN_TARGET` changes and checks.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct TemperatureFan {
    /// The NAME of `[temperature_fan NAME]`.
    pub(super) name: String,
    min_temp: f64,
    max_temp: f64,
    target_temp_conf: f64,
    target_temp: f64,
    min_speed: f64,
    max_speed: f64,
}

impl Printer {
    /// The sensor of `[temperature_sensor NAME]` or `[temperature_fan NAME]` section `s`, with
    /// its range: an analog input on `sensor_pin`, when the sensor has one.
    fn build_section_sensor(
        &mut self,
        cfg: &Cfg<'_>,
        s: &str,
        min_temp: f64,
        max_temp: f64,
    ) -> Result<(), PrinterError> {
        let section = cfg.config.getsection(s);
        let sensor_type = section.get("sensor_type").map_err(conf)?.trim().to_owned();
        let Some(sensor) = section
            .getpin_opt("sensor_pin", PinFlags::PLAIN)
            .map_err(conf)?
        else {
            return Ok(());
        };
        let curve = self.sensor_types.setup_sensor(&section)?;
        let mi = self.pin_mcu(&sensor)?;
        let sampling = curve
            .as_ref()
            .map(|c| heaters::heater_sampling(c, min_temp, max_temp));
        let pin = sensor.pin.clone();
        let slot = self.mcus[mi].add_deferred(|slot| super::ConfigCallback::AnalogIn {
            slot,
            pin,
            sampling,
        });
        self.sensor_slots.push(slot);
        self.sensors.push(heaters::HeaterSensor {
            heater: s.to_owned(),
            sensor_type,
            min_temp,
            max_temp,
            mcu: mi,
            oid: 0,
            curve,
            query: None,
        });
        Ok(())
    }

    /// `[temperature_sensor NAME]`.
    pub(super) fn build_temperature_sensor(
        &mut self,
        cfg: &Cfg<'_>,
        s: &str,
    ) -> Result<(), PrinterError> {
        let section = cfg.config.getsection(s);
        let min_temp = section
            .getfloat(
                "min_temp",
                Some(KELVIN_TO_CELSIUS),
                minval(KELVIN_TO_CELSIUS),
            )
            .map_err(conf)?;
        let max_temp = section
            .getfloat("max_temp", Some(SENSOR_MAX_TEMP), above(min_temp))
            .map_err(conf)?;
        self.build_section_sensor(cfg, s, min_temp, max_temp)
    }

    /// `[temperature_fan NAME]`: the fan's output, then its sensor.
    pub(super) fn build_temperature_fan(
        &mut self,
        cfg: &Cfg<'_>,
        s: &str,
    ) -> Result<(), PrinterError> {
        let section = cfg.config.getsection(s);
        let f = |option: &str, default: Option<f64>, b: FloatBounds| {
            section.getfloat(option, default, b).map_err(conf)
        };
        // fan.Fan(config, default_shutdown_speed=1.)
        let max_power = f(
            "max_power",
            Some(1.0),
            FloatBounds::NONE.above(0.0).max(1.0),
        )?;
        f("kick_start_time", Some(0.1), minval(0.0))?;
        f("off_below", Some(0.0), FloatBounds::NONE.min(0.0).max(1.0))?;
        let cycle_time = f("cycle_time", Some(0.010), above(0.0))?;
        let shutdown_speed = f(
            "shutdown_speed",
            Some(1.0),
            FloatBounds::NONE.min(0.0).max(1.0),
        )?;
        let pin = section.getpin("pin", PinFlags::INVERT).map_err(conf)?;
        let mi = self.pin_mcu(&pin)?;
        // MCU_pwm.setup_start_value(0, shutdown_power), inverted for an inverted pin.
        let shutdown_power = shutdown_speed.min(max_power).max(0.0);
        let (start, shutdown) = if pin.invert {
            (1.0, 1.0 - shutdown_power)
        } else {
            (0.0, shutdown_power)
        };
        if shutdown != 0.0 && shutdown != 1.0 {
            return Err(cfg_err(format!(
                "[{s}] pin {}: shutdown value must be 0.0 or 1.0 on soft pwm",
                pin.pin
            )));
        }
        let cycle = (cycle_time * self.mcus[mi].freq) as u64;
        self.add_pwm_out(mi, &pin, 0, cycle, start >= 1.0, shutdown >= 0.5);
        // The fan's sensor and control.
        let min_temp = f("min_temp", None, minval(KELVIN_TO_CELSIUS))?;
        let max_temp = f("max_temp", None, above(min_temp))?;
        self.build_section_sensor(cfg, s, min_temp, max_temp)?;
        let max_speed = f(
            "max_speed",
            Some(1.0),
            FloatBounds::NONE.above(0.0).max(1.0),
        )?;
        let min_speed = f("min_speed", Some(0.3), FloatBounds::NONE.min(0.0).max(1.0))?;
        let target_default = if max_temp > 40.0 { 40.0 } else { max_temp };
        let target_temp = f(
            "target_temp",
            Some(target_default),
            FloatBounds::NONE.min(min_temp).max(max_temp),
        )?;
        match section
            .getchoice("control", &["watermark", "pid"], None)
            .map_err(conf)?
        {
            "watermark" => {
                f("max_delta", Some(2.0), above(0.0))?;
            }
            _ => {
                f("pid_kp", None, FloatBounds::NONE)?;
                f("pid_ki", None, FloatBounds::NONE)?;
                f("pid_kd", None, FloatBounds::NONE)?;
                f("pid_deriv_time", Some(2.0), above(0.0))?;
            }
        }
        self.temperature_fans.push(TemperatureFan {
            name: s.split_whitespace().nth(1).unwrap_or("").to_owned(),
            min_temp,
            max_temp,
            target_temp_conf: target_temp,
            target_temp,
            min_speed,
            max_speed,
        });
        Ok(())
    }

    /// The sensors of `[temperature_sensor]` and `[temperature_fan]` sections with an analog
    /// input, in creation order (`heater` holds the section name).
    pub fn temperature_sensors(&self) -> &[heaters::HeaterSensor] {
        &self.sensors
    }

    /// `SET_TEMPERATURE_FAN_TARGET TEMPERATURE_FAN=NAME [TARGET=…] [MIN_SPEED=…] [MAX_SPEED=…]`,
    /// with Klipper's checks (batch mode has no temperatures, so only the settings change).
    pub(super) fn cmd_set_temperature_fan_target(
        &mut self,
        cmd: &super::Command<'_>,
    ) -> Result<(), super::CommandError> {
        let user = |msg: String| super::CommandError::User(msg);
        let Some(name) = cmd.param("TEMPERATURE_FAN") else {
            return Err(user(
                "Error on 'SET_TEMPERATURE_FAN_TARGET': missing TEMPERATURE_FAN".to_owned(),
            ));
        };
        let Some(i) = self.temperature_fans.iter().position(|t| t.name == name) else {
            return Err(user(format!(
                "The value '{name}' is not valid for TEMPERATURE_FAN"
            )));
        };
        let fan = &self.temperature_fans[i];
        let temp = cmd
            .get_float("TARGET", Some(fan.target_temp_conf))?
            .unwrap_or(fan.target_temp_conf);
        if temp != 0.0 && (temp < fan.min_temp || temp > fan.max_temp) {
            return Err(user(format!(
                "Requested temperature ({temp:.1}) out of range ({:.1}:{:.1})",
                fan.min_temp, fan.max_temp
            )));
        }
        let min_speed = cmd
            .get_float("MIN_SPEED", Some(fan.min_speed))?
            .unwrap_or(fan.min_speed);
        let max_speed = cmd
            .get_float("MAX_SPEED", Some(fan.max_speed))?
            .unwrap_or(fan.max_speed);
        if min_speed > max_speed {
            return Err(user(format!(
                "Requested min speed ({min_speed:.1}) is greater than max speed ({max_speed:.1})"
            )));
        }
        for (which, speed) in [("min", min_speed), ("max", max_speed)] {
            if speed != 0.0 && !(0.0..=1.0).contains(&speed) {
                return Err(user(format!(
                    "Requested {which} speed ({speed:.1}) out of range (0.0 : 1.0)"
                )));
            }
        }
        let fan = &mut self.temperature_fans[i];
        fan.target_temp = temp;
        fan.min_speed = min_speed;
        fan.max_speed = max_speed;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::printer::Printer;
    use gantry_proto::Dictionary;

    const AVR_DICT: &str = include_str!("../../../../tests/fixtures/oracle/dict/atmega2560.dict");

    /// A cartesian printer (oracle case a's steppers, on the AVR) with `extra` sections.
    fn printer(extra: &str) -> Result<Printer, crate::printer::PrinterError> {
        let cfg = format!(
            "[stepper_x]\nstep_pin: PF0\ndir_pin: PF1\nenable_pin: !PD7\nmicrosteps: 16\n\
             rotation_distance: 40\nendstop_pin: ^PE5\nposition_endstop: 0\nposition_max: 200\n\
             [stepper_y]\nstep_pin: PF6\ndir_pin: !PF7\nenable_pin: !PF2\nmicrosteps: 16\n\
             rotation_distance: 40\nendstop_pin: ^PJ1\nposition_endstop: 0\nposition_max: 200\n\
             [stepper_z]\nstep_pin: PL3\ndir_pin: PL1\nenable_pin: !PK0\nmicrosteps: 16\n\
             rotation_distance: 8\nendstop_pin: ^PD3\nposition_endstop: 0.5\nposition_max: 200\n\
             [mcu]\nserial: /dev/ttyACM0\n\
             [printer]\nkinematics: cartesian\nmax_velocity: 300\nmax_accel: 3000\n{extra}"
        );
        let config = Config::parse(&cfg, "printer.cfg").expect("config parses");
        let dict = Dictionary::from_json(AVR_DICT).expect("dictionary");
        Printer::new(&config, &[("mcu", &dict)])
    }

    /// The config phase and startup commands as Klipper builds them (klippy/mcu.py's MCU_adc
    /// and MCU_pwm `_build_config`, temperature_sensor.py, temperature_fan.py, fan.py), derived
    /// from Klipper's code: the extras' objects register their config callbacks in file order,
    /// before the toolhead's steppers, and take their oids when the callbacks run (after the
    /// steppers' and endstops', which have theirs from the start); a temperature fan's PWM
    /// output (created by fan.Fan) comes before its sensor; a sensor's `query_analog_in` covers
    /// min_temp..max_temp through its curve (the defaults −273.15 °C and 99 999 999.9 °C make
    /// it the whole ADC range, 0..8 × 1023) and starts at print time 1 s + oid · 10 ms; the PWM
    /// output starts off at print time 0.2 s with `default_value` 1 (shutdown_speed 1).
    #[test]
    fn config_phase_is_klippers() {
        let p = printer(
            "[temperature_sensor chamber]\nsensor_type: EPCOS 100K B57560G104F\nsensor_pin: PK7\n\
             [temperature_fan board]\npin: PH4\nsensor_type: EPCOS 100K B57560G104F\n\
             sensor_pin: PK6\nmin_temp: 0\nmax_temp: 90\ncontrol: watermark\n",
        )
        .expect("printer builds");
        let config = p.mcus[0].config_phase();
        assert_eq!(config[0], "allocate_oids count=15");
        let body: Vec<&str> = config[1..6].iter().map(String::as_str).collect();
        assert_eq!(
            body,
            [
                "config_analog_in oid=9 pin=PK7",
                "config_digital_out oid=10 pin=PH4 value=0 default_value=1 max_duration=0",
                "set_digital_out_pwm_cycle oid=10 cycle_ticks=160000",
                "config_analog_in oid=11 pin=PK6",
                "config_endstop oid=0 pin=PE5 pull_up=1",
            ]
        );
        // EPCOS 100K at 0 °C and 90 °C behind the default 4.7 kΩ pullup.
        let epcos = &crate::thermistor::BUILTIN_THERMISTORS
            .iter()
            .find(|(n, _)| *n == "EPCOS 100K B57560G104F")
            .expect("built in")
            .1;
        let thermistor = crate::thermistor::Thermistor::new(epcos, 4700.0, 0.0);
        let (lo, hi) = crate::thermistor::AdcCurve::Thermistor(thermistor).adc_range(0.0, 90.0);
        let max_adc = 8.0 * 1023.0;
        let query = |oid: u32, min: u32, max: u32| {
            format!(
                "query_analog_in oid={oid} clock={} sample_ticks=16000 sample_count=8 \
                 rest_ticks=4800000 bytes_per_report=2 min_value={min} max_value={max} \
                 range_check_count=4",
                16_000_000 + oid * 160_000
            )
        };
        assert_eq!(
            p.mcus[0].startup_cmds,
            [
                query(9, 0, 8184),
                "queue_digital_out oid=10 clock=3200000 on_ticks=0".to_owned(),
                query(11, (lo * max_adc) as u32, (hi * max_adc).ceil() as u32),
            ]
        );
        let sensors = p.temperature_sensors();
        assert_eq!(sensors.len(), 2);
        assert_eq!((sensors[0].oid, sensors[1].oid), (9, 11));
        assert_eq!(sensors[1].heater, "temperature_fan board");
        assert!(sensors[1].query.is_some());
    }

    #[test]
    fn an_inverted_fan_and_a_fan_without_a_shutdown_speed() {
        let p = printer(
            "[temperature_fan a]\npin: !PH4\nsensor_type: EPCOS 100K B57560G104F\n\
             sensor_pin: PK6\nmin_temp: 0\nmax_temp: 90\ncontrol: pid\npid_Kp: 1\npid_Ki: 1\n\
             pid_Kd: 1\nshutdown_speed: 0\n",
        )
        .expect("printer builds");
        // Inverted: starts at 1 (off); shutdown_speed 0 shuts it down at 1 (off) too.
        assert_eq!(
            p.mcus[0].config_phase()[1],
            "config_digital_out oid=9 pin=PH4 value=1 default_value=1 max_duration=0"
        );
        assert!(
            p.mcus[0]
                .startup_cmds
                .contains(&"queue_digital_out oid=9 clock=3200000 on_ticks=160000".to_owned())
        );
    }

    #[test]
    fn klippers_config_errors() {
        let fan = |extra: &str| {
            printer(&format!(
                "[temperature_fan a]\npin: PH4\nsensor_type: EPCOS 100K B57560G104F\n\
                 sensor_pin: PK6\ncontrol: watermark\n{extra}"
            ))
            .map(|_| ())
            .map_err(|e| e.to_string())
        };
        let err = fan("max_temp: 90\n").expect_err("min_temp is required");
        assert!(err.contains("min_temp"), "{err}");
        // A shutdown speed between 0 and 1 cannot be a soft PWM's shutdown value.
        let err = fan("min_temp: 0\nmax_temp: 90\nshutdown_speed: 0.5\n").expect_err("soft pwm");
        assert!(
            err.contains("shutdown value must be 0.0 or 1.0 on soft pwm"),
            "{err}"
        );
        let err = fan("min_temp: 0\nmax_temp: 90\ntarget_temp: 95\n").expect_err("target");
        assert!(err.contains("target_temp"), "{err}");
        let err = printer("[temperature_sensor x]\nsensor_type: nope\nsensor_pin: PK6\n")
            .map(|_| ())
            .expect_err("unknown sensor");
        assert!(
            err.to_string()
                .contains("Unknown temperature sensor 'nope'"),
            "{err}"
        );
        // The MCU's own sensor is not modelled: nothing is created.
        let p = printer("[temperature_sensor mcu]\nsensor_type: temperature_mcu\n").expect("ok");
        assert!(p.temperature_sensors().is_empty());
    }

    #[test]
    fn set_temperature_fan_target_checks_like_klipper() {
        let mut p = printer(
            "[temperature_fan board]\npin: PH4\nsensor_type: EPCOS 100K B57560G104F\n\
             sensor_pin: PK6\nmin_temp: 0\nmax_temp: 90\ncontrol: watermark\n",
        )
        .expect("printer builds");
        let run = |p: &mut Printer, line: &str| {
            p.responses.clear();
            p.run_line(line, 1).expect("runs");
            p.responses.first().map(|r| r.text.clone())
        };
        assert_eq!(
            run(
                &mut p,
                "SET_TEMPERATURE_FAN_TARGET TEMPERATURE_FAN=board TARGET=50"
            ),
            None
        );
        assert_eq!(p.temperature_fans[0].target_temp, 50.0);
        assert_eq!(
            run(
                &mut p,
                "SET_TEMPERATURE_FAN_TARGET TEMPERATURE_FAN=board TARGET=95"
            )
            .as_deref(),
            Some("!! Requested temperature (95.0) out of range (0.0:90.0)")
        );
        assert_eq!(
            run(
                &mut p,
                "SET_TEMPERATURE_FAN_TARGET TEMPERATURE_FAN=board MIN_SPEED=0.8 MAX_SPEED=0.5"
            )
            .as_deref(),
            Some("!! Requested min speed (0.8) is greater than max speed (0.5)")
        );
        assert_eq!(
            run(&mut p, "SET_TEMPERATURE_FAN_TARGET TEMPERATURE_FAN=x").as_deref(),
            Some("!! The value 'x' is not valid for TEMPERATURE_FAN")
        );
    }
}
