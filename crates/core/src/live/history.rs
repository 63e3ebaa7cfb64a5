//! Job history and temperature series of a live printer, written to the [`Store`] by a thread
//! that owns it: the job runner hands records over a channel and never waits on the disk (a
//! slow disk cannot starve the MCU of steps). Each record is committed on its own, so a host
//! killed mid-print (kill -9) leaves every record written before it; the next open marks the
//! job `interrupted`.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::store::{JobId, JobStatus, PrinterId, Store, StoreError, TemperatureSample};

/// One heater or sensor reading: Klipper's object name, temperature °C, target °C, power 0–1.
pub type HeaterReading = (String, f64, f64, f64);

enum Record {
    Start {
        filename: String,
        time: f64,
        metadata: serde_json::Value,
    },
    Progress {
        print_duration_s: f64,
        total_duration_s: f64,
        filament_used_mm: f64,
    },
    Temperatures {
        time: f64,
        readings: Vec<HeaterReading>,
    },
    Finish {
        status: JobStatus,
        time: f64,
        message: Option<String>,
    },
    /// Run a read on the store's thread (the one connection that owns the file).
    Read(Box<dyn FnOnce(&Store) + Send>),
}

/// Why the recorder could not start.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The store refused the printer row.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The writer thread could not start.
    #[error("cannot start the job history writer thread: {0}")]
    Thread(std::io::Error),
}

/// Writes one printer's jobs and temperatures to a [`Store`] from its own thread.
#[derive(Debug)]
pub struct HistoryRecorder {
    tx: Option<mpsc::Sender<Record>>,
    thread: Option<JoinHandle<()>>,
    errors: Arc<Mutex<Vec<String>>>,
    printer: PrinterId,
}

/// Unix time now, s.
pub fn unix_time() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl HistoryRecorder {
    /// Registers printer `name` (kind, config text) in `store` and starts the writer thread.
    ///
    /// # Errors
    /// The printer row cannot be written, or the thread cannot start.
    pub fn spawn(
        mut store: Store,
        name: &str,
        kind: &str,
        config: &str,
    ) -> Result<Self, HistoryError> {
        let printer = store.upsert_printer(name, kind, config)?;
        let (tx, rx) = mpsc::channel();
        let errors = Arc::new(Mutex::new(Vec::new()));
        let thread_errors = Arc::clone(&errors);
        let thread = std::thread::Builder::new()
            .name("gantry-history".into())
            .spawn(move || writer(store, printer, &rx, &thread_errors))
            .map_err(HistoryError::Thread)?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
            errors,
            printer,
        })
    }

    /// The printer's id in the store.
    pub fn printer(&self) -> PrinterId {
        self.printer
    }

    fn send(&self, record: Record) {
        if let Some(tx) = &self.tx
            && tx.send(record).is_err()
            && let Ok(mut e) = self.errors.lock()
        {
            e.push("the history writer thread has stopped".into());
        }
    }

    /// A job starts printing `filename`.
    pub fn job_started(&self, filename: &str, metadata: serde_json::Value) {
        self.send(Record::Start {
            filename: filename.to_owned(),
            time: unix_time(),
            metadata,
        });
    }

    /// The running job's print stats.
    pub fn job_progress(
        &self,
        print_duration_s: f64,
        total_duration_s: f64,
        filament_used_mm: f64,
    ) {
        self.send(Record::Progress {
            print_duration_s,
            total_duration_s,
            filament_used_mm,
        });
    }

    /// Heater readings taken now (with the running job's id, if one runs).
    pub fn temperatures(&self, readings: Vec<HeaterReading>) {
        self.send(Record::Temperatures {
            time: unix_time(),
            readings,
        });
    }

    /// The running job ended with `status` (and Klipper's message for an error).
    pub fn job_finished(&self, status: JobStatus, message: Option<&str>) {
        self.send(Record::Finish {
            status,
            time: unix_time(),
            message: message.map(str::to_owned),
        });
    }

    /// Runs `f` on the store's thread after everything queued before it and returns its
    /// result (`None` when the thread has stopped). Blocks: call it from a blocking context.
    pub fn read<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> R + Send + 'static,
    ) -> Option<R> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(Record::Read(Box::new(move |store| {
            let _ = tx.send(f(store));
        })));
        rx.recv().ok()
    }

    /// Writes what is queued, stops the thread and returns the errors it met (empty: every
    /// record was committed).
    pub fn close(mut self) -> Vec<String> {
        self.stop()
    }

    fn stop(&mut self) -> Vec<String> {
        self.tx = None;
        if let Some(t) = self.thread.take()
            && t.join().is_err()
            && let Ok(mut e) = self.errors.lock()
        {
            e.push("the history writer thread panicked".into());
        }
        self.errors
            .lock()
            .map(|mut e| std::mem::take(&mut *e))
            .unwrap_or_default()
    }
}

impl Drop for HistoryRecorder {
    fn drop(&mut self) {
        for e in self.stop() {
            tracing::error!(error = %e, "job history");
        }
    }
}

fn writer(
    mut store: Store,
    printer: PrinterId,
    rx: &mpsc::Receiver<Record>,
    errors: &Mutex<Vec<String>>,
) {
    let mut job: Option<JobId> = None;
    for record in rx {
        let result = match record {
            Record::Start {
                filename,
                time,
                metadata,
            } => store
                .start_job(printer, &filename, time, &metadata)
                .map(|id| job = Some(id)),
            Record::Progress {
                print_duration_s,
                total_duration_s,
                filament_used_mm,
            } => match job {
                Some(id) => store.update_job_progress(
                    id,
                    print_duration_s,
                    total_duration_s,
                    filament_used_mm,
                ),
                None => Ok(()),
            },
            Record::Temperatures { time, readings } => {
                let samples: Vec<TemperatureSample> = readings
                    .into_iter()
                    .filter(|(_, t, _, _)| t.is_finite())
                    .map(|(sensor, t, target, power)| TemperatureSample {
                        printer,
                        job,
                        sensor,
                        time,
                        temperature_c: t,
                        target_c: Some(target),
                        power: Some(power.clamp(0.0, 1.0)),
                    })
                    .collect();
                store.record_temperatures(&samples)
            }
            Record::Finish {
                status,
                time,
                message,
            } => match job.take() {
                Some(id) => store.finish_job(id, status, time, message.as_deref()),
                None => Ok(()),
            },
            Record::Read(f) => {
                f(&store);
                Ok(())
            }
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "job history");
            if let Ok(mut list) = errors.lock() {
                list.push(e.to_string());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_and_its_temperatures_reach_the_store() {
        let dir = std::env::temp_dir().join(format!("gantry-history-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("history.db");
        let _ = std::fs::remove_file(&path);
        let store = Store::open(&path).expect("store");
        let rec = HistoryRecorder::spawn(store, "sim", "simulated", "[printer]").expect("spawn");
        let printer = rec.printer();
        rec.job_started("part.gcode", serde_json::json!({}));
        rec.temperatures(vec![("extruder".into(), 201.5, 200.0, 0.4)]);
        rec.job_progress(12.0, 30.0, 55.5);
        rec.job_finished(JobStatus::Completed, None);
        assert!(rec.close().is_empty());
        let store = Store::open(&path).expect("reopen");
        let jobs = store.job_history(Some(printer), 0, None).expect("history");
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].status, JobStatus::Completed);
        assert_eq!(jobs[0].filament_used_mm, 55.5);
        let temps = store
            .temperature_series(printer, "extruder", 0.0, f64::MAX)
            .expect("series");
        assert_eq!(temps.len(), 1);
        assert_eq!(temps[0].job, Some(jobs[0].job_id));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
