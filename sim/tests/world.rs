//! The simulated MCU and its world through the wire protocol, on a virtual clock: a host link in
//! the same process heats the extruder with software PWM and reads its thermistor through
//! `analog_in_state` in both of Klipper's formats (batched `values=%*s` and the older
//! `value=%hu`), turning the sums into temperatures as Klipper's host does; an open thermistor
//! shuts the MCU down with "ADC out of range".

use gantry_proto::link::{HostLink, LinkEvent};
use gantry_proto::{Dictionary, Value, vlq};
use gantry_sim::dictionary::{self, AnalogInFormat};
use gantry_sim::runtime::SimMcu;
use gantry_sim::thermistor::{Thermistor, klipper_sensor};
use gantry_sim::world::{World, WorldFault};

const FREQ: f64 = 16e6;

struct Host {
    sim: SimMcu,
    link: HostLink,
    dict: Dictionary,
    now_s: f64,
    received: Vec<(String, Vec<Value>)>,
}

impl Host {
    fn new(format: AnalogInFormat) -> Self {
        let dict = dictionary::parsed_with(format);
        let world = World::default_for(&dict).expect("the default world");
        Self {
            sim: SimMcu::with_format(world, format),
            link: HostLink::new(),
            dict,
            now_s: 0.0,
            received: Vec::new(),
        }
    }

    fn pin(&self, name: &str) -> i64 {
        self.dict.enumerations["pin"].value_of(name).expect("a pin")
    }

    /// Sends `name` with parameters by name (a parameter the format lacks is left out).
    fn send(&mut self, name: &str, params: &[(&str, i64)]) {
        let format = self.dict.command(name).expect("declared");
        let values: Vec<Value> = format
            .params
            .iter()
            .map(|p| {
                let v = params.iter().find(|(n, _)| *n == p.name);
                Value::Int(v.unwrap_or_else(|| panic!("{name}: no {}", p.name)).1)
            })
            .collect();
        let message = self.dict.encode_command(name, &values).expect("encodes");
        self.link.send(message).expect("fits");
    }

    fn clock(&self, at_s: f64) -> i64 {
        i64::from((at_s * FREQ) as u32)
    }

    /// Runs host and MCU for `seconds` in 1 ms ticks.
    fn run(&mut self, seconds: f64) {
        let end = self.now_s + seconds;
        let mut buf = Vec::new();
        while self.now_s < end {
            self.now_s += 0.001;
            let now = self.now_s;
            self.link.handle_timeout(now);
            buf.clear();
            self.link.poll_transmit(now, &mut buf);
            self.sim.handle_input(&buf);
            buf.clear();
            self.sim.poll((now * FREQ) as u64, &mut buf);
            self.link.handle_input(&buf, now);
            while let Some(event) = self.link.poll_event() {
                if let LinkEvent::Received { payload, .. } = event {
                    let (id, n) = vlq::decode(&payload).expect("an id");
                    let format = self.dict.message(id.cast_signed()).expect("known");
                    let (values, _) = format.decode(&payload[n..]).expect("decodes");
                    self.received.push((format.name.clone(), values));
                }
            }
        }
    }

    /// The sums reported by `analog_in_state`, in either format.
    fn sums(&self) -> Vec<u16> {
        let mut out = Vec::new();
        for (name, values) in &self.received {
            if name != "analog_in_state" {
                continue;
            }
            match &values[2] {
                Value::Bytes(b) => {
                    out.extend(b.chunks_exact(2).map(|p| u16::from_le_bytes([p[0], p[1]])));
                }
                Value::Int(v) => out.push(u16::try_from(*v).expect("u16")),
            }
        }
        out
    }

    fn configure_extruder(&mut self) {
        let (sensor, heater) = (self.pin("PA7"), self.pin("PD5"));
        self.send("allocate_oids", &[("count", 2)]);
        self.send("config_analog_in", &[("oid", 0), ("pin", sensor)]);
        self.send(
            "config_digital_out",
            &[
                ("oid", 1),
                ("pin", heater),
                ("value", 0),
                ("default_value", 0),
                ("max_duration", 48_000_000),
            ],
        );
        self.send(
            "set_digital_out_pwm_cycle",
            &[("oid", 1), ("cycle_ticks", 1_600_000)],
        );
        self.send("finalize_config", &[("crc", 1)]);
        // Klipper's thermistor query: 8 samples 1 ms apart every 0.3 s, 0..250 °C, 4 strikes.
        let start = self.clock(0.5);
        self.send(
            "query_analog_in",
            &[
                ("oid", 0),
                ("clock", start),
                ("sample_ticks", 16_000),
                ("sample_count", 8),
                ("rest_ticks", 4_800_000),
                ("bytes_per_report", 2),
                ("min_value", 1000),
                ("max_value", 32_300),
                ("range_check_count", 4),
            ],
        );
    }
}

fn celsius(sum: u16) -> f64 {
    let curve = klipper_sensor("EPCOS 100K B57560G104F").expect("built in");
    let t = Thermistor::new(curve, 4700.0, 0.0).expect("valid");
    t.temperature_from_adc(f64::from(sum) / (8.0 * 4095.0))
}

fn heat_and_read(format: AnalogInFormat) {
    let mut h = Host::new(format);
    h.configure_extruder();
    h.run(1.0);
    let cold = h.sums();
    assert!(!cold.is_empty(), "{format:?}: no readings");
    let room = celsius(*cold.last().expect("a reading"));
    assert!((room - 25.0).abs() < 0.3, "{format:?}: {room} °C at rest");
    // Full power, re-sent every 2 s (max_duration is 3 s), for 20 s.
    for _ in 0..10 {
        let at = h.now_s + 0.2;
        let clock = h.clock(at);
        h.send(
            "queue_digital_out",
            &[("oid", 1), ("clock", clock), ("on_ticks", 1_600_000)],
        );
        h.run(2.0);
    }
    let clock = h.clock(h.now_s + 0.2);
    h.send(
        "queue_digital_out",
        &[("oid", 1), ("clock", clock), ("on_ticks", 0)],
    );
    h.run(1.0);
    let hot = celsius(*h.sums().last().expect("a reading"));
    assert!(hot > 60.0, "{format:?}: {hot} °C after 20 s at full power");
    let world_t = h.sim.model().world().heaters[0].temperature_c;
    assert!(
        (hot - world_t).abs() < 1.0,
        "{hot} read, {world_t} in the world"
    );
    h.run(40.0);
    let cooled = celsius(*h.sums().last().expect("a reading"));
    assert!(
        cooled < hot - 10.0,
        "{format:?}: {cooled} °C after 40 s off"
    );
    assert_eq!(h.sim.shutdown_reason(), None);
}

#[test]
fn thermistor_readings_in_the_current_batched_format() {
    heat_and_read(AnalogInFormat::Current);
}

#[test]
fn thermistor_readings_in_the_older_format() {
    heat_and_read(AnalogInFormat::Legacy);
}

#[test]
fn an_open_thermistor_shuts_the_mcu_down() {
    let mut h = Host::new(AnalogInFormat::Current);
    h.configure_extruder();
    h.run(1.0);
    h.sim
        .model_mut()
        .world_mut()
        .inject(&WorldFault::OpenThermistor("extruder".into()))
        .expect("a heater");
    h.run(2.0);
    let id = i64::from(dictionary::static_string_id("ADC out of range").expect("declared"));
    let shutdowns: Vec<&Vec<Value>> = h
        .received
        .iter()
        .filter(|(n, _)| n == "shutdown")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(shutdowns.len(), 1, "{:?}", h.received);
    assert_eq!(shutdowns[0][1], Value::Int(id));
    // Commands now get is_shutdown; get_config says so.
    h.send("get_config", &[]);
    h.send("emergency_stop", &[]);
    h.send("stepper_get_position", &[("oid", 0)]);
    h.run(0.1);
    let config = h.received.iter().rev().find(|(n, _)| n == "config");
    assert_eq!(config.map(|(_, v)| v[2].clone()), Some(Value::Int(1)));
    assert!(
        h.received
            .iter()
            .any(|(n, v)| n == "is_shutdown" && v[0] == Value::Int(id))
    );
}
