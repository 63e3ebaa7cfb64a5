//! The teaching mode's "explain" overlay: what a G-code line does, in words, with the planner's
//! numbers for the move it made ("G1 X10 F3000: straight move at 50 mm/s, accelerating at
//! 3000 mm/s²"). Pure: the line's text, its move and the toolhead's state in, a sentence out.

use gantry_core::motion::gcode::{self, Line};

use crate::timeline::{Phase, Sample, TimedMove};

/// Formats a number without needless decimals (`50`, `2.5`, `0.04`).
fn num(v: f64) -> String {
    if !v.is_finite() {
        return "?".into();
    }
    let s = if v.abs() >= 100.0 || (v.round() - v).abs() < 1e-9 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

/// What a line does and what the planner made of it.
#[derive(Clone, Debug, PartialEq)]
pub struct Explanation {
    /// The G-code as written (comment dropped).
    pub code: String,
    /// One sentence: the command in words, with the planner's speed and phase for moves.
    pub sentence: String,
}

impl Explanation {
    /// "code: sentence".
    pub fn text(&self) -> String {
        if self.sentence.is_empty() {
            self.code.clone()
        } else {
            format!("{}: {}", self.code, self.sentence)
        }
    }
}

/// Explains `line` (its text) given the move it made (if any) and the toolhead now.
pub fn explain(line: &str, planned: Option<&TimedMove>, now: Option<&Sample>) -> Explanation {
    let code = line.split(';').next().unwrap_or("").trim().to_owned();
    let comment = line.split_once(';').map(|(_, c)| c.trim()).unwrap_or("");
    let sentence = match gcode::lex(line) {
        Line::Empty if !comment.is_empty() => format!("a comment: \"{comment}\""),
        Line::Empty => String::new(),
        Line::Invalid(why) => format!("cannot be read ({why})"),
        Line::Extended { name, args } => extended(&name, args),
        Line::Classic(c) => {
            let f = |l: char| c.float(l).ok().flatten();
            match c.name.as_str() {
                "G0" | "G1" | "G2" | "G3" => motion(&c.name, &f, planned, now),
                "G4" => format!(
                    "dwell: wait {} s with the toolhead standing",
                    num(f('P').map_or(f('S').unwrap_or(0.0), |p| p / 1000.0))
                ),
                "G28" => "home: drive the axes to their endstops to find zero".into(),
                "G90" => "absolute positioning: X Y Z are coordinates from here on".into(),
                "G91" => "relative positioning: X Y Z are distances from here on".into(),
                "G92" => "set position: the current place gets the given coordinates".into(),
                "M82" => "absolute extrusion: E is the filament position".into(),
                "M83" => "relative extrusion: E is filament to push per move".into(),
                "M104" => format!(
                    "set the hotend to {} °C and go on",
                    num(f('S').unwrap_or(0.0))
                ),
                "M109" => format!(
                    "heat the hotend to {} °C and wait",
                    num(f('S').unwrap_or(0.0))
                ),
                "M140" => format!("set the bed to {} °C and go on", num(f('S').unwrap_or(0.0))),
                "M190" => format!("heat the bed to {} °C and wait", num(f('S').unwrap_or(0.0))),
                "M106" => format!(
                    "part cooling fan at {} %",
                    num(f('S').unwrap_or(255.0) / 255.0 * 100.0)
                ),
                "M107" => "part cooling fan off".into(),
                "M204" => format!(
                    "set the acceleration to {} mm/s²",
                    num(f('S').unwrap_or(0.0))
                ),
                "M84" | "M18" => "turn the stepper motors off".into(),
                "M400" => "wait until every queued move has finished".into(),
                name => format!("{name} (not a motion command)"),
            }
        }
    };
    Explanation { code, sentence }
}

fn extended(name: &str, args: &str) -> String {
    match name {
        "EXCLUDE_OBJECT_START" => {
            format!("start printing object {}", args.trim_start_matches("NAME="))
        }
        "EXCLUDE_OBJECT_END" => "object done".into(),
        "EXCLUDE_OBJECT_DEFINE" => "declare an object (for cancelling it later)".into(),
        "SET_VELOCITY_LIMIT" => format!("change the speed limits ({args})"),
        "SET_PRESSURE_ADVANCE" => format!("change pressure advance ({args})"),
        _ => format!("the command {name}"),
    }
}

fn motion(
    name: &str,
    f: &dyn Fn(char) -> Option<f64>,
    planned: Option<&TimedMove>,
    now: Option<&Sample>,
) -> String {
    let has_xyz = f('X').is_some() || f('Y').is_some() || f('Z').is_some();
    let e = f('E');
    let mut parts = Vec::new();
    let what = match (name, has_xyz, e) {
        ("G2", _, _) => "clockwise arc",
        ("G3", _, _) => "counter-clockwise arc",
        (_, false, Some(e)) if e < 0.0 => "retract the filament",
        (_, false, Some(_)) => "push filament (extruder only)",
        (_, false, None) if f('F').is_some() => "set the speed for the next moves",
        (_, true, Some(e)) if e > 0.0 => "straight printing move",
        (_, true, _) => "straight travel move",
        _ => "move",
    };
    parts.push(what.to_owned());
    if let Some(m) = planned {
        let len = m.length_mm();
        if len > 0.0 {
            parts[0] = format!("{what} of {} mm", num(len));
        }
        let requested = f('F').map(|v| v / 60.0);
        let cruise = f64::from(m.cruise_v);
        match requested {
            Some(r) if (r - cruise).abs() > 0.05 * r.max(1.0) => parts.push(format!(
                "asks for {} mm/s, reaches {} mm/s",
                num(r),
                num(cruise)
            )),
            _ => parts.push(format!("at {} mm/s", num(cruise))),
        }
    } else if let Some(v) = f('F') {
        parts.push(format!("at {} mm/s", num(v / 60.0)));
    }
    if let Some(s) = now {
        match s.phase {
            Phase::Accelerate => {
                parts.push(format!("accelerating at {} mm/s²", num(s.accel_mm_s2)))
            }
            Phase::Decelerate => parts.push(format!(
                "decelerating at {} mm/s²{}",
                num(-s.accel_mm_s2),
                planned.map_or(String::new(), |m| format!(
                    " to {} mm/s",
                    num(f64::from(m.end_v))
                ))
            )),
            Phase::Cruise => parts.push("cruising".into()),
            Phase::ExtrudeOnly | Phase::Idle | Phase::Moving => {}
        }
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mv(cruise: f32, end_v: f32) -> TimedMove {
        TimedMove {
            print_time: 1.0,
            start_mm: [0.0; 3],
            end_mm: [10.0, 0.0, 0.0],
            start_v: 0.0,
            cruise_v: cruise,
            end_v,
            accel: 3000.0,
            t: [0.01, 0.1, 0.01],
            e_mm: 0.0,
            line: 7,
        }
    }

    fn now(phase: Phase, accel: f64) -> Sample {
        Sample {
            time: 1.0,
            pos_mm: [1.0, 0.0, 0.0],
            speed_mm_s: 20.0,
            accel_mm_s2: accel,
            phase,
            move_index: Some(0),
            line: 7,
        }
    }

    #[test]
    fn the_issues_example() {
        let e = explain(
            "G1 X10 F3000",
            Some(&mv(50.0, 0.0)),
            Some(&now(Phase::Accelerate, 3000.0)),
        );
        assert_eq!(
            e.text(),
            "G1 X10 F3000: straight travel move of 10 mm, at 50 mm/s, accelerating at 3000 mm/s²"
        );
    }

    #[test]
    fn a_move_the_planner_slows_down() {
        let e = explain(
            "G1 X10 E0.5 F12000 ; wall",
            Some(&mv(120.0, 5.0)),
            Some(&now(Phase::Decelerate, -3000.0)),
        );
        assert_eq!(
            e.text(),
            "G1 X10 E0.5 F12000: straight printing move of 10 mm, asks for 200 mm/s, \
             reaches 120 mm/s, decelerating at 3000 mm/s² to 5 mm/s"
        );
    }

    #[test]
    fn other_commands_in_words() {
        assert_eq!(
            explain("M104 S215", None, None).sentence,
            "set the hotend to 215 °C and go on"
        );
        assert_eq!(
            explain("G1 E-0.8 F2100", None, None).sentence,
            "retract the filament, at 35 mm/s"
        );
        assert_eq!(
            explain(";TYPE:Outer wall", None, None).sentence,
            "a comment: \"TYPE:Outer wall\""
        );
        assert_eq!(
            explain("G4 P500", None, None).sentence,
            "dwell: wait 0.5 s with the toolhead standing"
        );
        assert!(
            explain("EXCLUDE_OBJECT_START NAME=part_1", None, None)
                .sentence
                .contains("part_1")
        );
    }
}
