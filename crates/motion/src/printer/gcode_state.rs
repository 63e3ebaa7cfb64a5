//! Klipper's gcode_move state commands and the features built on them: `SAVE_GCODE_STATE` /
//! `RESTORE_GCODE_STATE` (with `MOVE=1`), `SET_GCODE_OFFSET`, and `[firmware_retraction]`'s
//! G10/G11 (`SET_RETRACTION`, `GET_RETRACTION`), which Klipper implements as a small G-code
//! script around a saved state — run here the same way, so the numbers are formatted and read
//! back exactly as Klipper does (`E-%.5f`, `F%d` of the speed in mm/min, truncated).

use std::borrow::Cow;

use super::{Cfg, Command, CommandError, GCodeMove, Printer, PrinterError};
use crate::config::FloatBounds;
use crate::lookahead::AXES;

/// One saved G-code state (`SAVE_GCODE_STATE NAME=`).
#[derive(Clone, Debug)]
pub(super) struct SavedState {
    name: String,
    state: GCodeMove,
}

/// `[firmware_retraction]` settings and whether the filament is retracted now.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct FirmwareRetraction {
    retract_length: f64,
    retract_speed: f64,
    unretract_extra_length: f64,
    unretract_speed: f64,
    is_retracted: bool,
}

impl FirmwareRetraction {
    pub(super) fn from_config(cfg: &Cfg<'_>) -> Result<Option<Self>, PrinterError> {
        let s = "firmware_retraction";
        if !cfg.has(s) {
            return Ok(None);
        }
        let min = |v| FloatBounds::NONE.min(v);
        Ok(Some(Self {
            retract_length: cfg.getfloat(s, "retract_length", Some(0.0), min(0.0))?,
            retract_speed: cfg.getfloat(s, "retract_speed", Some(20.0), min(1.0))?,
            unretract_extra_length: cfg.getfloat(
                s,
                "unretract_extra_length",
                Some(0.0),
                min(0.0),
            )?,
            unretract_speed: cfg.getfloat(s, "unretract_speed", Some(10.0), min(1.0))?,
            is_retracted: false,
        }))
    }

    fn unretract_length(&self) -> f64 {
        self.retract_length + self.unretract_extra_length
    }

    /// Klipper's status object `firmware_retraction`.
    pub(super) fn status(&self) -> [(&'static str, f64); 4] {
        [
            ("retract_length", self.retract_length),
            ("retract_speed", self.retract_speed),
            ("unretract_extra_length", self.unretract_extra_length),
            ("unretract_speed", self.unretract_speed),
        ]
    }
}

/// Python's `%d` of a float: truncation toward zero.
fn percent_d(v: f64) -> i64 {
    // Speeds are bounded (≥ 1 mm/s and finite), so the cast cannot saturate in practice.
    v.trunc() as i64
}

impl Printer {
    /// The G-code position of gcode_move's status (`gcode_position`): last position less the
    /// base, E divided by the extrude factor.
    pub(super) fn gcode_position(&self) -> [f64; AXES] {
        let g = &self.gcode;
        let mut p = [0.0; AXES];
        for (i, v) in p.iter_mut().enumerate() {
            *v = g.last_position[i] - g.base_position[i];
        }
        p[3] /= g.extrude_factor;
        p
    }

    pub(super) fn cmd_save_gcode_state(&mut self, cmd: &Command<'_>) -> Result<(), CommandError> {
        let name = cmd
            .param("NAME")
            .map_or_else(|| "default".to_owned(), Cow::into_owned);
        let state = self.gcode.clone();
        match self.saved_states.iter_mut().find(|s| s.name == name) {
            Some(s) => s.state = state,
            None => self.saved_states.push(SavedState { name, state }),
        }
        Ok(())
    }

    pub(super) fn cmd_restore_gcode_state(
        &mut self,
        cmd: &Command<'_>,
    ) -> Result<(), CommandError> {
        let name = cmd.param("NAME");
        let name = name.as_deref().unwrap_or("default");
        let Some(saved) = self.saved_states.iter().find(|s| s.name == name) else {
            return Err(CommandError::User(format!("Unknown g-code state: {name}")));
        };
        let st = saved.state.clone();
        let g = &mut self.gcode;
        g.absolute_coord = st.absolute_coord;
        g.absolute_extrude = st.absolute_extrude;
        g.base_position = st.base_position;
        g.homing_position = st.homing_position;
        g.speed = st.speed;
        g.speed_factor = st.speed_factor;
        g.extrude_factor = st.extrude_factor;
        // Keep the E position where it is now, relative to the restored base.
        let e_diff = g.last_position[3] - st.last_position[3];
        g.base_position[3] += e_diff;
        if cmd.get_int("MOVE", 0)? != 0 {
            let speed = cmd.get_float_above("MOVE_SPEED", self.gcode.speed, 0.0)?;
            self.gcode.last_position[..3].copy_from_slice(&st.last_position[..3]);
            let pos = self.gcode.last_position;
            self.move_with_transform(pos, speed)?;
        }
        Ok(())
    }

    pub(super) fn cmd_set_gcode_offset(&mut self, cmd: &Command<'_>) -> Result<(), CommandError> {
        let mut move_delta = [0.0; AXES];
        for (i, axis) in ["X", "Y", "Z", "E"].iter().enumerate() {
            let offset = match cmd.get_float(axis, None)? {
                Some(v) => v,
                None => match cmd.get_float(&format!("{axis}_ADJUST"), None)? {
                    Some(adj) => adj + self.gcode.homing_position[i],
                    None => continue,
                },
            };
            let delta = offset - self.gcode.homing_position[i];
            move_delta[i] = delta;
            self.gcode.base_position[i] += delta;
            self.gcode.homing_position[i] = offset;
        }
        if cmd.get_int("MOVE", 0)? != 0 {
            let speed = cmd.get_float_above("MOVE_SPEED", self.gcode.speed, 0.0)?;
            for (p, d) in self.gcode.last_position.iter_mut().zip(move_delta) {
                *p += d;
            }
            let pos = self.gcode.last_position;
            self.move_with_transform(pos, speed)?;
        }
        Ok(())
    }

    pub(super) fn cmd_g10(&mut self) -> Result<(), CommandError> {
        let Some(fr) = self.firmware_retraction.as_ref() else {
            return Ok(());
        };
        if fr.is_retracted {
            return Ok(());
        }
        let script = format!(
            "SAVE_GCODE_STATE NAME=_retract_state\nG91\nG1 E-{:.5} F{}\n\
             RESTORE_GCODE_STATE NAME=_retract_state",
            fr.retract_length,
            percent_d(fr.retract_speed * 60.0)
        );
        self.run_script(&script)?;
        if let Some(fr) = self.firmware_retraction.as_mut() {
            fr.is_retracted = true;
        }
        Ok(())
    }

    pub(super) fn cmd_g11(&mut self) -> Result<(), CommandError> {
        let Some(fr) = self.firmware_retraction.as_ref() else {
            return Ok(());
        };
        if !fr.is_retracted {
            return Ok(());
        }
        let script = format!(
            "SAVE_GCODE_STATE NAME=_retract_state\nG91\nG1 E{:.5} F{}\n\
             RESTORE_GCODE_STATE NAME=_retract_state",
            fr.unretract_length(),
            percent_d(fr.unretract_speed * 60.0)
        );
        self.run_script(&script)?;
        if let Some(fr) = self.firmware_retraction.as_mut() {
            fr.is_retracted = false;
        }
        Ok(())
    }

    pub(super) fn cmd_set_retraction(&mut self, cmd: &Command<'_>) -> Result<(), CommandError> {
        let Some(fr) = self.firmware_retraction.clone() else {
            return Ok(());
        };
        let updated = FirmwareRetraction {
            retract_length: cmd.get_float_min("RETRACT_LENGTH", fr.retract_length, 0.0)?,
            retract_speed: cmd.get_float_min("RETRACT_SPEED", fr.retract_speed, 1.0)?,
            unretract_extra_length: cmd.get_float_min(
                "UNRETRACT_EXTRA_LENGTH",
                fr.unretract_extra_length,
                0.0,
            )?,
            unretract_speed: cmd.get_float_min("UNRETRACT_SPEED", fr.unretract_speed, 1.0)?,
            is_retracted: false,
        };
        self.firmware_retraction = Some(updated);
        Ok(())
    }

    pub(super) fn cmd_get_retraction(&mut self) -> Result<(), CommandError> {
        if let Some(fr) = self.firmware_retraction.clone() {
            self.respond_info(&format!(
                "RETRACT_LENGTH={:.5} RETRACT_SPEED={:.5} UNRETRACT_EXTRA_LENGTH={:.5} \
                 UNRETRACT_SPEED={:.5}",
                fr.retract_length, fr.retract_speed, fr.unretract_extra_length, fr.unretract_speed
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::percent_d;

    #[test]
    fn percent_d_truncates_like_python() {
        assert_eq!(percent_d(2100.0), 2100);
        assert_eq!(percent_d(2129.999), 2129);
        assert_eq!(percent_d(-1.5), -1);
    }
}
