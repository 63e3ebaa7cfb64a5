//! The state of the current print job as Klipper's `print_stats` and `pause_resume` objects
//! describe it, and the commands that change it: `PAUSE`, `RESUME [VELOCITY=]`, `CLEAR_PAUSE`,
//! `CANCEL_PRINT`.
//!
//! The job runner (core's `live::job`, playing virtual_sdcard's part) tells the printer when a
//! file starts, ends, or failed, and reads back whether a command paused or cancelled it: a
//! `PAUSE` from the file itself (an `M600` macro), from the console, or from the UI all go
//! through the same command, so user macros that take `PAUSE` over (`rename_existing`) work as
//! in Klipper. Durations follow print_stats.py: `print_duration` leaves out the time before the
//! first extrusion and the time spent paused. Times are host event times passed in: motion
//! reads no clock.

use super::{Command, CommandError, Printer};

/// Klipper's `print_stats.state` (its spelling in JSON too). The one type for it: core's printer
/// model uses it for remote printers as well.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum PrintState {
    /// No job.
    #[default]
    Standby,
    /// A job runs.
    Printing,
    /// A job is paused.
    Paused,
    /// The last job ran to its end.
    Complete,
    /// The last job was cancelled.
    Cancelled,
    /// The last job ended with an error (its message in [`PrintStats::message`]).
    Error,
}

impl PrintState {
    /// Klipper's name for the state.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Standby => "standby",
            Self::Printing => "printing",
            Self::Paused => "paused",
            Self::Complete => "complete",
            Self::Cancelled => "cancelled",
            Self::Error => "error",
        }
    }

    /// Parses Klipper's spelling; anything else is `None`.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "standby" => Self::Standby,
            "printing" => Self::Printing,
            "paused" => Self::Paused,
            "complete" => Self::Complete,
            "cancelled" => Self::Cancelled,
            "error" => Self::Error,
            _ => return None,
        })
    }
}

impl std::fmt::Display for PrintState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// print_stats.py: the current or last job's state, file and durations.
#[derive(Debug, Clone, Default)]
pub struct PrintStats {
    /// The job's state.
    pub state: PrintState,
    /// The file being printed (empty without a job).
    pub filename: String,
    /// The error that ended the job.
    pub message: String,
    /// Filament pushed through the extruder since the job started (net, retractions
    /// included), mm.
    pub filament_used_mm: f64,
    print_start_time: Option<f64>,
    last_pause_time: Option<f64>,
    prev_pause_duration: f64,
    total_duration: f64,
    init_duration: f64,
    last_epos: f64,
}

impl PrintStats {
    fn reset(&mut self) {
        *self = Self::default();
    }

    /// `note_start`: a job starts (or resumes) at host time `eventtime`, the extruder at
    /// `epos` (mm).
    fn note_start(&mut self, eventtime: f64, epos: f64) {
        match self.print_start_time {
            None => self.print_start_time = Some(eventtime),
            Some(_) => {
                if let Some(paused_at) = self.last_pause_time.take() {
                    self.prev_pause_duration += eventtime - paused_at;
                }
            }
        }
        self.last_epos = epos;
        self.state = PrintState::Printing;
        self.message.clear();
    }

    fn note_pause(&mut self, eventtime: f64, epos: f64) {
        if self.last_pause_time.is_none() {
            self.last_pause_time = Some(eventtime);
            // Filament up to the pause counts; moves made while paused do not.
            self.update_filament(epos);
        }
        if self.state != PrintState::Error {
            self.state = PrintState::Paused;
        }
    }

    fn note_end(&mut self, eventtime: f64, epos: f64, state: PrintState, message: &str) {
        self.update(eventtime, epos);
        self.state = state;
        self.message = message.to_owned();
        self.print_start_time = None;
        self.last_pause_time = None;
    }

    fn update_filament(&mut self, epos: f64) {
        self.filament_used_mm += epos - self.last_epos;
        self.last_epos = epos;
    }

    /// Brings the durations and filament up to host time `eventtime` (print_stats.py's
    /// `get_status`).
    pub fn update(&mut self, eventtime: f64, epos: f64) {
        let Some(start) = self.print_start_time else {
            return;
        };
        let mut time_paused = self.prev_pause_duration;
        match self.last_pause_time {
            Some(paused_at) => time_paused += eventtime - paused_at,
            None => self.update_filament(epos),
        }
        self.total_duration = eventtime - start;
        if self.filament_used_mm < 0.000_000_1 {
            // Time before the first extrusion (heating, homing) is not print time.
            self.init_duration = self.total_duration - time_paused;
        }
    }

    /// Time since the job started, s.
    pub fn total_duration_s(&self) -> f64 {
        self.total_duration
    }

    /// Time spent printing: from the first extrusion, pauses left out, s.
    pub fn print_duration_s(&self) -> f64 {
        let mut time_paused = self.prev_pause_duration;
        if let (Some(paused_at), Some(start)) = (self.last_pause_time, self.print_start_time) {
            time_paused += start + self.total_duration - paused_at;
        }
        (self.total_duration - self.init_duration - time_paused).max(0.0)
    }
}

/// pause_resume.py's state.
#[derive(Debug, Clone)]
pub struct PauseResume {
    /// `PAUSE` ran and no `RESUME` or `CLEAR_PAUSE` since.
    pub is_paused: bool,
    /// `[pause_resume] recover_velocity`: the speed of RESUME's return move, mm/s.
    pub recover_velocity: f64,
    /// A job is reading a file (virtual_sdcard is active).
    pub(super) job_active: bool,
    /// The job is asked to stop reading its file (`PAUSE` while a job runs).
    pub(super) job_paused: bool,
    /// `CANCEL_PRINT` asked the job to stop.
    pub(super) cancel_requested: bool,
}

impl Default for PauseResume {
    fn default() -> Self {
        Self {
            is_paused: false,
            recover_velocity: 50.0,
            job_active: false,
            job_paused: false,
            cancel_requested: false,
        }
    }
}

/// What a job runner does after a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobDirective {
    /// Read the next line.
    Continue,
    /// Stop reading until `RESUME` (or `CANCEL_PRINT`).
    Pause,
    /// Stop the job: `CANCEL_PRINT` ran.
    Cancel,
}

impl Printer {
    /// The job state (`print_stats`).
    pub fn print_stats(&self) -> &PrintStats {
        &self.print_stats
    }

    /// The pause state (`pause_resume`).
    pub fn pause_resume(&self) -> &PauseResume {
        &self.pause_resume
    }

    fn extruder_position(&self) -> f64 {
        self.gcode.last_position[3]
    }

    /// A job starts printing `filename` at host time `eventtime` (virtual_sdcard's
    /// `do_resume` of a newly loaded file, print_stats' `set_current_file` + `note_start`).
    pub fn job_started(&mut self, filename: &str, eventtime: f64) {
        self.print_stats.reset();
        self.print_stats.filename = filename.to_owned();
        let epos = self.extruder_position();
        self.print_stats.note_start(eventtime, epos);
        self.pause_resume.job_active = true;
        self.pause_resume.job_paused = false;
        self.pause_resume.cancel_requested = false;
    }

    /// Brings `print_stats` up to host time `eventtime`.
    pub fn job_update(&mut self, eventtime: f64) {
        let epos = self.extruder_position();
        self.print_stats.update(eventtime, epos);
    }

    /// What the job should do now: a `PAUSE` or `CANCEL_PRINT` may have run (from the file,
    /// the console or a macro).
    pub fn job_directive(&self) -> JobDirective {
        if self.pause_resume.cancel_requested {
            JobDirective::Cancel
        } else if self.pause_resume.job_paused {
            JobDirective::Pause
        } else {
            JobDirective::Continue
        }
    }

    /// The job ended at host time `eventtime`: `state` is complete, cancelled or error (with
    /// `message`).
    pub fn job_ended(&mut self, eventtime: f64, state: PrintState, message: &str) {
        let epos = self.extruder_position();
        self.print_stats.note_end(eventtime, epos, state, message);
        self.pause_resume.job_active = false;
        self.pause_resume.job_paused = false;
        self.pause_resume.cancel_requested = false;
        self.pause_resume.is_paused = false;
    }

    /// The job runner noticed the pause at host time `eventtime`.
    pub fn job_pause_noted(&mut self, eventtime: f64) {
        let epos = self.extruder_position();
        self.print_stats.note_pause(eventtime, epos);
    }

    /// The job runner resumes reading at host time `eventtime`.
    pub fn job_resume_noted(&mut self, eventtime: f64) {
        let epos = self.extruder_position();
        self.print_stats.note_start(eventtime, epos);
    }

    /// `PAUSE`: the job stops reading its file after this command, and the G-code state
    /// (position, speed, modes) is saved as `PAUSE_STATE` for `RESUME`.
    pub(super) fn cmd_pause(&mut self) -> Result<(), CommandError> {
        if self.pause_resume.is_paused {
            self.respond_info("Print already paused");
            return Ok(());
        }
        if self.pause_resume.job_active {
            self.pause_resume.job_paused = true;
        } else {
            self.respond_info("action:paused");
        }
        self.run_script("SAVE_GCODE_STATE NAME=PAUSE_STATE")?;
        self.pause_resume.is_paused = true;
        Ok(())
    }

    /// `RESUME [VELOCITY=]`: back to the saved position at `VELOCITY` (default
    /// `recover_velocity`), then the job reads on.
    pub(super) fn cmd_resume(&mut self, cmd: &Command<'_>) -> Result<(), CommandError> {
        if !self.pause_resume.is_paused {
            self.respond_info("Print is not paused, resume aborted");
            return Ok(());
        }
        let velocity = cmd.get_float_above("VELOCITY", self.pause_resume.recover_velocity, 0.0)?;
        self.run_script(&format!(
            "RESTORE_GCODE_STATE NAME=PAUSE_STATE MOVE=1 MOVE_SPEED={velocity:.4}"
        ))?;
        if self.pause_resume.job_active {
            self.pause_resume.job_paused = false;
        } else {
            self.respond_info("action:resumed");
        }
        self.pause_resume.is_paused = false;
        Ok(())
    }

    /// `CLEAR_PAUSE`: forget the pause without moving.
    pub(super) fn cmd_clear_pause(&mut self) {
        self.pause_resume.is_paused = false;
    }

    /// `CANCEL_PRINT`: the job stops (its queued moves still run); the pause is cleared.
    pub(super) fn cmd_cancel_print(&mut self) {
        if self.pause_resume.job_active {
            self.pause_resume.cancel_requested = true;
        } else {
            self.respond_info("action:cancel");
        }
        self.pause_resume.is_paused = false;
    }

    /// `TURN_OFF_HEATERS`: every heater's target to 0.
    pub(super) fn cmd_turn_off_heaters(&mut self) -> Result<(), CommandError> {
        for i in 0..self.heaters.len() {
            self.heaters[i]
                .set_target(0.0)
                .map_err(CommandError::User)?;
        }
        for entry in &mut self.heater_targets {
            entry.1 = 0.0;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn print_duration_leaves_out_heating_and_pauses() {
        let mut s = PrintStats::default();
        s.note_start(100.0, 0.0);
        // Heating for 60 s: no filament yet.
        s.update(160.0, 0.0);
        assert_eq!(s.print_duration_s(), 0.0);
        // Printing 40 s, 10 mm of filament.
        s.update(200.0, 10.0);
        assert!((s.print_duration_s() - 40.0).abs() < 1e-9);
        // Paused 30 s; moves while paused (a purge) do not count.
        s.note_pause(200.0, 10.0);
        s.update(230.0, 25.0);
        assert!((s.print_duration_s() - 40.0).abs() < 1e-9);
        assert!((s.filament_used_mm - 10.0).abs() < 1e-9);
        s.note_start(230.0, 25.0);
        s.update(250.0, 30.0);
        assert!((s.print_duration_s() - 60.0).abs() < 1e-9);
        assert!((s.total_duration_s() - 150.0).abs() < 1e-9);
        assert!((s.filament_used_mm - 15.0).abs() < 1e-9);
        s.note_end(260.0, 30.0, PrintState::Complete, "");
        assert_eq!(s.state, PrintState::Complete);
        assert!((s.total_duration_s() - 160.0).abs() < 1e-9);
    }
}
