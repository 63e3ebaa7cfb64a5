//! Printing a G-code file on a live printer: the lines run one by one through klippy's reactor
//! ([`Printer::live_run_line`] waits whenever the MCU needs to catch up), then the printer waits
//! for every move to finish. Progress is by file position, as Klipper's virtual_sdcard reports
//! it.

use gantry_motion::printer::{Printer, Response};
use gantry_motion::toolhead::MoveError;

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JobProgress {
    /// Bytes of the file run so far.
    pub file_position: usize,
    /// The file's size, bytes.
    pub file_size: usize,
    /// Lines run so far.
    pub lines: u32,
    /// Print time of the end of the queued motion, s.
    pub print_time: f64,
    /// The extruder's temperature and target, °C.
    pub extruder: Option<(f64, f64)>,
    /// The bed's temperature and target, °C.
    pub heater_bed: Option<(f64, f64)>,
}

impl JobProgress {
    /// Fraction of the file run, 0–1 (Klipper's `virtual_sdcard.progress`).
    pub fn fraction(&self) -> f64 {
        if self.file_size == 0 {
            1.0
        } else {
            self.file_position as f64 / self.file_size as f64
        }
    }
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq)]
pub struct JobReport {
    /// Lines run.
    pub lines: u32,
    /// Print time at the end of the last move, s.
    pub print_time: f64,
    /// Every response of the printer (`!!` errors, `//` info), with its line.
    pub responses: Vec<Response>,
}

/// Why a job stopped early.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The printer halted: an MCU shut down or was lost (Klipper's message).
    #[error("{0}")]
    Halted(String),
    /// The planner failed internally.
    #[error("{0}")]
    Planner(MoveError),
}

impl From<MoveError> for JobError {
    fn from(e: MoveError) -> Self {
        match e {
            MoveError::Halted(why) => Self::Halted(why),
            other => Self::Planner(other),
        }
    }
}

/// Prints `gcode` on the live `printer`, calling `progress` after each line (cheap: the caller
/// decides how often to show it) and `respond` with each response as it comes.
///
/// # Errors
/// The printer halted or the planner failed; what ran before stays done.
pub fn run(
    printer: &mut Printer,
    gcode: &[u8],
    mut progress: impl FnMut(&JobProgress),
    mut respond: impl FnMut(&Response),
) -> Result<JobReport, JobError> {
    let mut responses = Vec::new();
    let mut position = 0;
    let mut lines = 0_u32;
    // Klipper's readers split at '\n'; a last line without one is run too (a file, unlike
    // batch mode's stream, has a known end).
    for raw in gcode.split_inclusive(|&b| b == b'\n') {
        position += raw.len();
        lines += 1;
        let text = String::from_utf8_lossy(raw);
        let line = text.trim_end_matches(['\n', '\r']);
        let result = printer.live_run_line(line, lines);
        for r in printer.responses.drain(..) {
            respond(&r);
            responses.push(r);
        }
        result?;
        progress(&JobProgress {
            file_position: position,
            file_size: gcode.len(),
            lines,
            print_time: printer.toolhead.print_time,
            extruder: printer.heater_temperature("extruder"),
            heater_bed: printer.heater_temperature("heater_bed"),
        });
    }
    printer.live_wait_moves()?;
    for r in printer.responses.drain(..) {
        respond(&r);
        responses.push(r);
    }
    Ok(JobReport {
        lines,
        print_time: printer.toolhead.print_time,
        responses,
    })
}
