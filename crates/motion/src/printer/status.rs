//! Klipper's status objects as `[gcode_macro]` templates read them (`printer.toolhead`,
//! `printer.gcode_move`, `printer.extruder`, `printer.configfile`, …): built on demand from the
//! planner's state, only for the objects a template touches.

use minijinja::Value;

use super::Printer;
use crate::macros::{StatusProvider, coord, dict_value, list_value};

/// A read-only view of the printer for one macro render.
pub(super) struct PrinterStatus<'a> {
    pub(super) printer: &'a Printer,
}

/// A config value as Klipper's `configfile.settings` types it (numbers as numbers, `True` /
/// `False` as booleans, anything else as text).
fn setting_value(raw: &str) -> Value {
    let t = raw.trim();
    if let Ok(i) = t.parse::<i64>() {
        return Value::from(i);
    }
    if let Ok(f) = t.parse::<f64>()
        && f.is_finite()
    {
        return Value::from(f);
    }
    match t.to_ascii_lowercase().as_str() {
        "true" => Value::from(true),
        "false" => Value::from(false),
        _ => Value::from(t),
    }
}

impl PrinterStatus<'_> {
    fn toolhead(&self) -> Value {
        let th = &self.printer.toolhead;
        let pos = th.commanded_pos;
        let homed: String = ["x", "y", "z"]
            .iter()
            .zip(th.axis_limits)
            .filter(|(_, (lo, hi))| lo <= hi)
            .map(|(a, _)| *a)
            .collect();
        let (mut min, mut max) = ([0.0; 3], [0.0; 3]);
        for (i, (lo, hi)) in self.printer.rails_limits().into_iter().enumerate().take(3) {
            min[i] = lo;
            max[i] = hi;
        }
        dict_value(vec![
            ("homed_axes".into(), Value::from(homed)),
            ("axis_minimum".into(), coord(min[0], min[1], min[2], 0.0)),
            ("axis_maximum".into(), coord(max[0], max[1], max[2], 0.0)),
            ("position".into(), coord(pos[0], pos[1], pos[2], pos[3])),
            ("print_time".into(), Value::from(th.print_time)),
            (
                "estimated_print_time".into(),
                Value::from(th.est_print_time()),
            ),
            ("extruder".into(), Value::from("extruder")),
            ("max_velocity".into(), Value::from(th.max_velocity)),
            ("max_accel".into(), Value::from(th.max_accel)),
            (
                "minimum_cruise_ratio".into(),
                Value::from(th.min_cruise_ratio),
            ),
            (
                "square_corner_velocity".into(),
                Value::from(th.square_corner_velocity),
            ),
            ("stalls".into(), Value::from(0)),
        ])
    }

    fn gcode_move(&self) -> Value {
        let g = &self.printer.gcode;
        let gp = self.printer.gcode_position();
        let (lp, hp) = (g.last_position, g.homing_position);
        dict_value(vec![
            ("speed_factor".into(), Value::from(g.speed_factor * 60.0)),
            ("speed".into(), Value::from(g.speed / g.speed_factor)),
            ("extrude_factor".into(), Value::from(g.extrude_factor)),
            ("absolute_coordinates".into(), Value::from(g.absolute_coord)),
            ("absolute_extrude".into(), Value::from(g.absolute_extrude)),
            ("homing_origin".into(), coord(hp[0], hp[1], hp[2], hp[3])),
            ("position".into(), coord(lp[0], lp[1], lp[2], lp[3])),
            ("gcode_position".into(), coord(gp[0], gp[1], gp[2], gp[3])),
        ])
    }

    fn heater(&self, name: &str) -> Option<Value> {
        let target = self
            .printer
            .heater_targets
            .iter()
            .find(|(n, _)| n == name)?
            .1;
        // A live heater reads its sensor; in batch mode nothing reports (0 °C, as Klipper).
        let live = self
            .printer
            .heater_outputs
            .iter()
            .position(|(n, _, _)| n == name)
            .and_then(|i| self.printer.heaters.get(i))
            .map(crate::heater_control::Heater::get_status);
        let (temperature, power) = live.map_or((0.0, 0.0), |h| (h.temperature, h.power));
        let mut entries = vec![
            ("temperature".into(), Value::from(temperature)),
            ("target".into(), Value::from(target)),
            ("power".into(), Value::from(power)),
        ];
        if let Some(ei) = self
            .printer
            .toolhead
            .extruders
            .iter()
            .position(|e| e.name == name)
        {
            let (pa, smooth) = self
                .printer
                .extruder_pa
                .get(ei)
                .copied()
                .unwrap_or((0.0, 0.0));
            entries.push(("can_extrude".into(), Value::from(true)));
            entries.push(("pressure_advance".into(), Value::from(pa)));
            entries.push(("smooth_time".into(), Value::from(smooth)));
        }
        Some(dict_value(entries))
    }

    fn configfile(&self) -> Value {
        let mut config = Vec::new();
        let mut settings = Vec::new();
        for (section, options) in &self.printer.config_snapshot {
            config.push((
                section.clone(),
                dict_value(
                    options
                        .iter()
                        .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
                        .collect(),
                ),
            ));
            settings.push((
                section.clone(),
                dict_value(
                    options
                        .iter()
                        .map(|(k, v)| (k.clone(), setting_value(v)))
                        .collect(),
                ),
            ));
        }
        dict_value(vec![
            ("config".into(), dict_value(config)),
            ("settings".into(), dict_value(settings)),
            ("save_config_pending".into(), Value::from(false)),
        ])
    }

    /// motion_report.py's status: where the toolhead and the extruder are at the MCU's
    /// estimated print time (the move the MCU executes now, from the trapq and its history),
    /// and how fast they move.
    fn motion_report(&self) -> Value {
        let th = &self.printer.toolhead;
        let print_time = th.est_print_time();
        let (xyz, velocity) = trapq_position(&th.trapq, print_time)
            .map_or(([0.0; 3], 0.0), |(c, v)| ([c.x, c.y, c.z], v));
        let (e, e_velocity) = th
            .extruders
            .first()
            .and_then(|ex| trapq_position(&ex.trapq, print_time))
            .map_or((0.0, 0.0), |(c, v)| (c.x, v));
        dict_value(vec![
            ("live_position".into(), coord(xyz[0], xyz[1], xyz[2], e)),
            ("live_velocity".into(), Value::from(velocity)),
            ("live_extruder_velocity".into(), Value::from(e_velocity)),
        ])
    }

    /// display_status.py's status: the M117 message and the M73 progress (the job runner
    /// supplies the file progress when no M73 came).
    fn display_status(&self) -> Value {
        dict_value(vec![
            (
                "progress".into(),
                Value::from(self.printer.display_progress.unwrap_or(0.0)),
            ),
            (
                "message".into(),
                if self.printer.display_message.is_empty() {
                    Value::from(())
                } else {
                    Value::from(self.printer.display_message.as_str())
                },
            ),
        ])
    }

    fn exclude_object(&self) -> Option<Value> {
        let ex = self.printer.exclude_object.as_ref()?;
        let objects = ex
            .objects
            .iter()
            .map(|o| {
                let mut e = vec![("name".into(), Value::from(o.name.as_str()))];
                if let Some(c) = &o.center {
                    e.push((
                        "center".into(),
                        list_value(c.iter().map(|v| Value::from(*v)).collect()),
                    ));
                }
                if let Some(p) = &o.polygon {
                    e.push((
                        "polygon".into(),
                        list_value(
                            p.iter()
                                .map(|[x, y]| list_value(vec![Value::from(*x), Value::from(*y)]))
                                .collect(),
                        ),
                    ));
                }
                dict_value(e)
            })
            .collect();
        Some(dict_value(vec![
            ("objects".into(), list_value(objects)),
            (
                "excluded_objects".into(),
                list_value(
                    ex.excluded
                        .iter()
                        .map(|s| Value::from(s.as_str()))
                        .collect(),
                ),
            ),
            (
                "current_object".into(),
                ex.current.as_deref().map_or(Value::from(()), Value::from),
            ),
        ]))
    }
}

impl StatusProvider for PrinterStatus<'_> {
    fn object_names(&self) -> Vec<String> {
        let mut names: Vec<String> = [
            "toolhead",
            "gcode_move",
            "configfile",
            "print_stats",
            "pause_resume",
            "motion_report",
            "display_status",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        names.extend(self.printer.heater_targets.iter().map(|(n, _)| n.clone()));
        if self.printer.fan_queue.is_some() {
            names.push("fan".into());
        }
        if self.printer.exclude_object.is_some() {
            names.push("exclude_object".into());
        }
        if self.printer.firmware_retraction.is_some() {
            names.push("firmware_retraction".into());
        }
        if self.printer.input_shaper.is_some() {
            names.push("input_shaper".into());
        }
        names
    }

    fn get_status(&self, object: &str) -> Option<Value> {
        match object {
            "toolhead" => Some(self.toolhead()),
            "gcode_move" => Some(self.gcode_move()),
            "configfile" => Some(self.configfile()),
            "exclude_object" => self.exclude_object(),
            "motion_report" => Some(self.motion_report()),
            "display_status" => Some(self.display_status()),
            "print_stats" => {
                let ps = &self.printer.print_stats;
                Some(dict_value(vec![
                    ("filename".into(), Value::from(ps.filename.as_str())),
                    ("total_duration".into(), Value::from(ps.total_duration_s())),
                    ("print_duration".into(), Value::from(ps.print_duration_s())),
                    ("filament_used".into(), Value::from(ps.filament_used_mm)),
                    ("state".into(), Value::from(ps.state.as_str())),
                    ("message".into(), Value::from(ps.message.as_str())),
                ]))
            }
            "pause_resume" => Some(dict_value(vec![(
                "is_paused".into(),
                Value::from(self.printer.pause_resume.is_paused),
            )])),
            "fan" if self.printer.fan_queue.is_some() => {
                let speed = self
                    .printer
                    .fan_queue
                    .and_then(|q| self.printer.toolhead.pwm_queues.get(q))
                    .map_or(0.0, |q| q.last_req_value);
                Some(dict_value(vec![("speed".into(), Value::from(speed))]))
            }
            "firmware_retraction" => {
                let fr = self.printer.firmware_retraction.as_ref()?;
                Some(dict_value(
                    fr.status()
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
                        .collect(),
                ))
            }
            other => self.heater(other),
        }
    }
}

/// The position and speed along the move at `print_time` in `trapq` (Klipper's
/// `get_trapq_position`: the newest segment that starts before it, clamped to its end).
fn trapq_position(
    trapq: &crate::trapq::TrapQ,
    print_time: f64,
) -> Option<(crate::trapq::Coord, f64)> {
    let m = trapq.extract_old(0.0, print_time, 1).into_iter().next()?;
    let move_time = (print_time - m.print_time).clamp(0.0, m.move_t);
    Some((
        m.coord(move_time),
        m.start_v + 2.0 * m.half_accel * move_time,
    ))
}

impl Printer {
    /// The names of the printer's status objects (Klipper's `printer.objects.list`; macros'
    /// `gcode_macro` objects are not listed).
    pub fn status_object_names(&self) -> Vec<String> {
        PrinterStatus { printer: self }.object_names()
    }

    /// One status object as Klipper's `get_status` gives it, or `None` for an unknown name.
    /// Live printers report their sensors and the MCU's estimated print time as of the last
    /// reactor step.
    pub fn status_object(&self, name: &str) -> Option<Value> {
        PrinterStatus { printer: self }.get_status(name)
    }
}
