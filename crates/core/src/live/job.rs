//! Printing a G-code file on a live printer — virtual_sdcard's part in Klipper: the lines run
//! one by one through klippy's reactor ([`Printer::live_run_line`] waits whenever the MCU needs
//! to catch up), then the printer waits for every move to finish. Progress is by file position,
//! as Klipper's virtual_sdcard reports it, with print_stats' durations.
//!
//! Between lines the job takes requests from other threads ([`JobRequest`]: the UI, the
//! console, a signal handler): `PAUSE`, `RESUME` and `CANCEL_PRINT` run as G-code, so macros
//! that take them over work as in Klipper, and so does a `PAUSE` in the file itself (an `M600`
//! macro). While paused the reactor keeps running (heaters, flushes) and console commands
//! (jogging, EXCLUDE_OBJECT) run. The job's history and the heaters' temperatures go to a
//! [`HistoryRecorder`] when one is given.

use std::sync::mpsc;

use gantry_motion::printer::{JobDirective, PrintState, Printer, Response};
use gantry_motion::toolhead::MoveError;

use super::history::HistoryRecorder;
use crate::store::JobStatus;

/// The answer to a request that waits for one: done, or Klipper's error message.
pub type Reply = tokio::sync::oneshot::Sender<Result<(), String>>;

/// Something asked of the printer by another thread (the API, the console, a signal handler),
/// served between the lines of a job (and by the local printer's loop when no job runs).
#[derive(Debug)]
pub enum JobRequest {
    /// Run `PAUSE`.
    Pause,
    /// Run `RESUME`.
    Resume,
    /// Run `CANCEL_PRINT`.
    Cancel,
    /// Run these G-code lines (the console), between the file's lines.
    Gcode(String),
    /// Run these G-code lines and say how it went: the first failing line stops the script and
    /// its error is the answer (Moonraker's `printer.gcode.script`).
    Script {
        /// The lines.
        script: String,
        /// Where the answer goes.
        done: Reply,
    },
    /// Print this file (refused while a job runs).
    Start {
        /// Its name, for print_stats and the history.
        filename: String,
        /// Its contents.
        gcode: Vec<u8>,
        /// Where the answer goes: once the job has started, or why it could not.
        done: Reply,
    },
}

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JobProgress {
    /// Bytes of the file run so far.
    pub file_position: usize,
    /// The file's size, bytes.
    pub file_size: usize,
    /// Lines run so far.
    pub lines: u32,
    /// Print time queued since the job started, s.
    pub print_time: f64,
    /// print_stats' state (printing or paused).
    pub state: PrintState,
    /// Time since the job started, s.
    pub total_duration_s: f64,
    /// Time printing (from the first extrusion, pauses left out), s.
    pub print_duration_s: f64,
    /// Filament used so far, mm.
    pub filament_used_mm: f64,
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

    /// The print time left as Mainsail estimates it from the file position: print duration
    /// scaled by the part of the file still to run, s (`None` before anything printed).
    pub fn remaining_s(&self) -> Option<f64> {
        let f = self.fraction();
        (f > 0.0 && self.print_duration_s > 0.0)
            .then(|| self.print_duration_s / f - self.print_duration_s)
    }
}

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOutcome {
    /// Every line ran and every move finished.
    Complete,
    /// `CANCEL_PRINT` stopped it (the moves already queued finished).
    Cancelled,
}

/// A finished job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobReport {
    /// Complete or cancelled.
    pub outcome: JobOutcome,
    /// Lines of the file run.
    pub lines: u32,
    /// Print time from the job's start to the end of the last move, s.
    pub print_time: f64,
    /// Time since the job started, s.
    pub total_duration_s: f64,
    /// Time printing (from the first extrusion, pauses left out), s.
    pub print_duration_s: f64,
    /// Filament used, mm.
    pub filament_used_mm: f64,
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
    /// A command of the file failed: the print stops there, as Klipper's virtual_sdcard stops
    /// it (console commands that fail do not stop it).
    #[error("line {line}: {message}")]
    Gcode {
        /// The file's line.
        line: u32,
        /// Klipper's message (without the `!! `).
        message: String,
    },
}

impl From<MoveError> for JobError {
    fn from(e: MoveError) -> Self {
        match e {
            MoveError::Halted(why) => Self::Halted(why),
            other => Self::Planner(other),
        }
    }
}

/// What a job is run with besides the printer and the file.
#[derive(Debug, Default)]
pub struct JobOptions<'a> {
    /// The file's name, for print_stats and the history.
    pub filename: &'a str,
    /// Requests from other threads (pause, resume, cancel, console G-code).
    pub requests: Option<&'a mpsc::Receiver<JobRequest>>,
    /// Where the job's history goes.
    pub history: Option<&'a HistoryRecorder>,
    /// Also record the heaters' temperatures in the history once a second while the job runs
    /// (off when the caller records them itself, as the local printer does all the time).
    pub record_temperatures: bool,
}

/// How often temperatures are recorded, s of host time.
const TEMPERATURE_PERIOD_S: f64 = 1.0;
/// How often the job's row is updated, s of host time.
const PROGRESS_PERIOD_S: f64 = 5.0;
/// How long a paused job lets the reactor run between looks at its requests, s.
const PAUSED_POLL_S: f64 = 0.050;

struct Runner<'a, P, R> {
    options: JobOptions<'a>,
    progress: P,
    respond: R,
    responses: Vec<Response>,
    start_print_time: f64,
    next_temperatures: f64,
    next_progress: f64,
    file_size: usize,
}

impl<P: FnMut(&JobProgress), R: FnMut(&Response)> Runner<'_, P, R> {
    fn take_responses(&mut self, printer: &mut Printer) {
        for r in printer.responses.drain(..) {
            (self.respond)(&r);
            self.responses.push(r);
        }
    }

    /// Runs `line` as the console would (line 0), keeping its responses.
    fn run_console(&mut self, printer: &mut Printer, line: &str) -> Result<(), MoveError> {
        let result = printer.live_run_line(line, 0);
        self.take_responses(printer);
        result
    }

    /// Runs the requests waiting now.
    fn handle_requests(&mut self, printer: &mut Printer) -> Result<(), MoveError> {
        let Some(rx) = self.options.requests else {
            return Ok(());
        };
        loop {
            let request = match rx.try_recv() {
                Ok(request) => request,
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    // Whoever sent requests is gone (the printer is closing): the job stops.
                    if printer.job_directive() != JobDirective::Cancel {
                        self.run_console(printer, "CANCEL_PRINT")?;
                    }
                    break;
                }
            };
            match request {
                JobRequest::Pause => self.run_console(printer, "PAUSE")?,
                JobRequest::Resume => self.run_console(printer, "RESUME")?,
                JobRequest::Cancel => self.run_console(printer, "CANCEL_PRINT")?,
                JobRequest::Gcode(script) => {
                    for line in script.lines() {
                        self.run_console(printer, line)?;
                    }
                }
                JobRequest::Script { script, done } => {
                    match run_script(printer, &script, |p, line| self.run_console(p, line)) {
                        Ok(answer) => {
                            let _ = done.send(answer);
                        }
                        Err(e) => {
                            let _ = done.send(Err(e.to_string()));
                            return Err(e);
                        }
                    }
                }
                JobRequest::Start { done, .. } => {
                    let _ = done.send(Err("A print is already running".into()));
                }
            }
        }
        Ok(())
    }

    /// print_stats brought up to now, the history fed, and the caller told.
    fn report(
        &mut self,
        printer: &mut Printer,
        file_position: usize,
        lines: u32,
    ) -> Result<(), MoveError> {
        let now = printer.host_time()?;
        printer.job_update(now);
        let stats = printer.print_stats();
        let progress = JobProgress {
            file_position,
            file_size: self.file_size,
            lines,
            print_time: printer.toolhead.print_time - self.start_print_time,
            state: stats.state,
            total_duration_s: stats.total_duration_s(),
            print_duration_s: stats.print_duration_s(),
            filament_used_mm: stats.filament_used_mm,
            extruder: printer.heater_temperature("extruder"),
            heater_bed: printer.heater_temperature("heater_bed"),
        };
        if let Some(h) = self.options.history {
            if self.options.record_temperatures && now >= self.next_temperatures {
                self.next_temperatures = now + TEMPERATURE_PERIOD_S;
                h.temperatures(
                    printer
                        .heater_statuses()
                        .into_iter()
                        .map(|(n, t, target, power)| (n.to_owned(), t, target, power))
                        .collect(),
                );
            }
            if now >= self.next_progress {
                self.next_progress = now + PROGRESS_PERIOD_S;
                h.job_progress(
                    progress.print_duration_s,
                    progress.total_duration_s,
                    progress.filament_used_mm,
                );
            }
        }
        (self.progress)(&progress);
        Ok(())
    }

    /// The file's lines, with pauses and requests between them.
    fn run_file(
        &mut self,
        printer: &mut Printer,
        gcode: &[u8],
    ) -> Result<(JobOutcome, u32), JobError> {
        let mut position = 0;
        let mut lines = 0_u32;
        // Klipper's readers split at '\n'. virtual_sdcard runs only complete lines: a last line
        // without a line end is not run (said as a notice, unless it is blank or a comment).
        for raw in gcode.split_inclusive(|&b| b == b'\n') {
            if !raw.ends_with(b"\n") {
                let text = String::from_utf8_lossy(raw);
                let code = text.split(';').next().unwrap_or("").trim();
                if !code.is_empty() {
                    let notice = Response {
                        line: lines + 1,
                        text: format!(
                            "// Line {} has no line end and was not run, as Klipper does not run \
                             it: {}",
                            lines + 1,
                            text.trim()
                        ),
                    };
                    (self.respond)(&notice);
                    self.responses.push(notice);
                }
                position += raw.len();
                break;
            }
            self.handle_requests(printer)?;
            match printer.job_directive() {
                JobDirective::Continue => {}
                JobDirective::Cancel => return Ok((JobOutcome::Cancelled, lines)),
                JobDirective::Pause => {
                    if self.paused(printer, position, lines)? == JobDirective::Cancel {
                        return Ok((JobOutcome::Cancelled, lines));
                    }
                }
            }
            position += raw.len();
            lines += 1;
            let text = String::from_utf8_lossy(raw);
            let line = text.trim_end_matches(['\n', '\r']);
            let result = printer.live_run_line(line, lines);
            self.take_responses(printer);
            result?;
            if let Some(error) = printer.line_error() {
                return Err(JobError::Gcode {
                    line: lines,
                    message: error.to_owned(),
                });
            }
            self.report(printer, position, lines)?;
        }
        // A PAUSE or CANCEL_PRINT on the last line, or requests that came meanwhile.
        self.handle_requests(printer)?;
        if printer.job_directive() == JobDirective::Pause
            && self.paused(printer, position, lines)? == JobDirective::Cancel
        {
            return Ok((JobOutcome::Cancelled, lines));
        }
        if printer.job_directive() == JobDirective::Cancel {
            return Ok((JobOutcome::Cancelled, lines));
        }
        Ok((JobOutcome::Complete, lines))
    }

    /// Paused: the reactor runs and requests are served until RESUME or CANCEL_PRINT.
    fn paused(
        &mut self,
        printer: &mut Printer,
        position: usize,
        lines: u32,
    ) -> Result<JobDirective, MoveError> {
        let now = printer.host_time()?;
        printer.job_pause_noted(now);
        loop {
            self.report(printer, position, lines)?;
            self.handle_requests(printer)?;
            match printer.job_directive() {
                JobDirective::Pause => printer.live_idle(PAUSED_POLL_S)?,
                JobDirective::Continue => {
                    let now = printer.host_time()?;
                    printer.job_resume_noted(now);
                    return Ok(JobDirective::Continue);
                }
                JobDirective::Cancel => return Ok(JobDirective::Cancel),
            }
        }
    }
}

/// Runs `script` line by line through `run_line` (a live line runner): the first line whose
/// command fails stops it, and its error is the inner `Err`; the outer `Err` is a halted
/// printer.
pub fn run_script(
    printer: &mut Printer,
    script: &str,
    mut run_line: impl FnMut(&mut Printer, &str) -> Result<(), MoveError>,
) -> Result<Result<(), String>, MoveError> {
    for line in script.lines() {
        run_line(printer, line)?;
        if let Some(e) = printer.line_error() {
            return Ok(Err(e.to_owned()));
        }
    }
    Ok(Ok(()))
}

/// Prints `gcode` on the live `printer`, calling `progress` after each line and while paused
/// (cheap: the caller decides how often to show it) and `respond` with each response as it
/// comes.
///
/// # Errors
/// The printer halted or the planner failed; what ran before stays done, and the history
/// records the job as `klippy_shutdown` or `error`.
pub fn run(
    printer: &mut Printer,
    gcode: &[u8],
    options: JobOptions<'_>,
    progress: impl FnMut(&JobProgress),
    respond: impl FnMut(&Response),
) -> Result<JobReport, JobError> {
    let now = printer.host_time()?;
    printer.job_started(options.filename, now);
    if let Some(h) = options.history {
        h.job_started(options.filename, serde_json::json!({ "size": gcode.len() }));
    }
    let mut runner = Runner {
        options,
        progress,
        respond,
        responses: Vec::new(),
        start_print_time: printer.toolhead.print_time,
        next_temperatures: now,
        next_progress: now + PROGRESS_PERIOD_S,
        file_size: gcode.len(),
    };
    let mut result = runner.run_file(printer, gcode);
    // The moves already queued finish, also after a failed command (klippy's toolhead flushes
    // them); only a halted printer has none to run.
    if matches!(result, Ok(_) | Err(JobError::Gcode { .. }))
        && let Err(e) = printer.live_wait_moves()
    {
        result = Err(e.into());
    }
    runner.take_responses(printer);
    let end = printer.host_time().unwrap_or(now);
    let (state, status, message) = match &result {
        Ok((JobOutcome::Complete, _)) => (PrintState::Complete, JobStatus::Completed, None),
        Ok((JobOutcome::Cancelled, _)) => (PrintState::Cancelled, JobStatus::Cancelled, None),
        Err(JobError::Halted(why)) => (
            PrintState::Error,
            if why.starts_with("Lost communication") {
                JobStatus::KlippyDisconnect
            } else {
                JobStatus::KlippyShutdown
            },
            Some(why.clone()),
        ),
        Err(JobError::Gcode { message, .. }) => {
            (PrintState::Error, JobStatus::Error, Some(message.clone()))
        }
        Err(e) => (PrintState::Error, JobStatus::Error, Some(e.to_string())),
    };
    printer.job_ended(end, state, message.as_deref().unwrap_or(""));
    let stats = printer.print_stats().clone();
    if let Some(h) = runner.options.history {
        h.job_progress(
            stats.print_duration_s(),
            stats.total_duration_s(),
            stats.filament_used_mm,
        );
        h.job_finished(status, message.as_deref());
    }
    let (outcome, lines) = result?;
    Ok(JobReport {
        outcome,
        lines,
        print_time: printer.toolhead.print_time - runner.start_print_time,
        total_duration_s: stats.total_duration_s(),
        print_duration_s: stats.print_duration_s(),
        filament_used_mm: stats.filament_used_mm,
        responses: runner.responses,
    })
}
