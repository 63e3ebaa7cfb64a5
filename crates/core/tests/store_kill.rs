//! A database killed mid-job (kill -9 of the host) keeps every history row written before it.
//!
//! The test runs its own binary again as a child (`GANTRY_STORE_CHILD=<db path>`, this test only,
//! `--exact --nocapture`). The child plays the host: it opens the store, starts a job and writes
//! batches of temperature samples with the job's progress, printing `@store_kill committed N`
//! after the N-th batch is committed. The parent reads those lines, kills the child with SIGKILL
//! after [`COMMITS_BEFORE_KILL`] of them (wherever it is, perhaps mid-transaction), reopens the
//! database and checks that every reported batch is there whole, no batch is there in part, and
//! the job is now `interrupted`. No sleeps: the pipe paces the parent.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use gantry_core::store::{JobId, JobStatus, PrinterId, Store, TemperatureSample};

/// Set in the child's environment to the database path.
const CHILD_ENV: &str = "GANTRY_STORE_CHILD";
/// This test's name, for the child's filter.
const TEST_NAME: &str = "a_killed_host_keeps_every_committed_row";
/// Starts each line of the child's report. libtest may print on the same line before it (`test
/// NAME ... `), so the parent looks for it anywhere in a line.
const MARK: &str = "@store_kill ";
/// Batches the parent waits for before the kill.
const COMMITS_BEFORE_KILL: u64 = 20;
/// The child stops on its own after this many batches, should nobody kill it.
const MAX_BATCHES: u64 = 100_000;
/// The sensors sampled, with samples per sensor per batch.
const SENSORS: [&str; 2] = ["extruder", "heater_bed"];
const SAMPLES_PER_SENSOR: u64 = 4;

/// The time of sample `i` of batch `batch`, Unix s (exact in f64: quarter seconds).
fn sample_time(batch: u64, i: u64) -> f64 {
    1.7e9 + (batch * SAMPLES_PER_SENSOR + i) as f64 * 0.25
}

/// Print stats written with batch `batch`: (print_duration_s, total_duration_s, filament_used_mm).
fn progress(batch: u64) -> (f64, f64, f64) {
    let t = (batch + 1) as f64;
    (t, t + 0.5, 10.0 * t)
}

#[test]
fn a_killed_host_keeps_every_committed_row() {
    if let Some(db) = std::env::var_os(CHILD_ENV) {
        child(Path::new(&db));
        return;
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("store_kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the test dir");
    let db = dir.join("gantry.db");

    let mut child = Command::new(std::env::current_exe().expect("current_exe"))
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &db)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the child");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut job = None;
    let mut committed = 0;
    // Kept open until after the kill: a closed pipe would let the child end on its own.
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line.expect("read the child's stdout");
        let Some((_, report)) = line.split_once(MARK) else {
            continue; // The test harness talking.
        };
        if let Some(id) = report.strip_prefix("job ") {
            job = Some(id.parse::<JobId>().expect("job uid"));
        } else if let Some(n) = report.strip_prefix("committed ") {
            committed = n.parse::<u64>().expect("batch count");
            if committed >= COMMITS_BEFORE_KILL {
                break;
            }
        }
    }
    if committed < COMMITS_BEFORE_KILL {
        let status = child.wait().expect("wait for the child");
        panic!("the child stopped after {committed} batches: {status}");
    }
    child.kill().expect("SIGKILL the child");
    let status = child.wait().expect("reap the child");
    assert!(
        !status.success(),
        "the child must have been killed: {status}"
    );
    drop(lines);
    let job = job.expect("the child printed its job");

    let store = Store::open(&db).expect("reopen after the kill");
    assert_eq!(store.interrupted_at_open(), [job]);
    let record = store
        .job(job)
        .expect("read the job")
        .expect("the job row exists");
    assert_eq!(record.status, JobStatus::Interrupted);
    assert_eq!(record.end_time, None);
    let (print_s, total_s, filament_mm) = progress(committed - 1);
    assert!(record.print_duration_s >= print_s, "{record:?}");
    assert!(record.total_duration_s >= total_s, "{record:?}");
    assert!(record.filament_used_mm >= filament_mm, "{record:?}");

    for sensor in SENSORS {
        let series = store
            .temperature_series(record.printer_id, sensor, 0.0, f64::INFINITY)
            .expect("read the series");
        assert!(series.iter().all(|s| s.job == Some(job)));
        let times: Vec<f64> = series.iter().map(|s| s.time).collect();
        let batches = times.len() as u64 / SAMPLES_PER_SENSOR;
        assert_eq!(
            times.len() as u64 % SAMPLES_PER_SENSOR,
            0,
            "{sensor}: a batch was stored in part"
        );
        assert!(
            batches >= committed,
            "{sensor}: {batches} batches kept, {committed} reported committed"
        );
        let expected: Vec<f64> = (0..batches)
            .flat_map(|b| (0..SAMPLES_PER_SENSOR).map(move |i| sample_time(b, i)))
            .collect();
        assert_eq!(times, expected, "{sensor}: samples lost or out of order");
    }
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The host: writes batches until killed, reporting each commit on stdout.
fn child(db: &Path) {
    let mut store = Store::open(db).expect("child: open");
    let printer: PrinterId = store
        .upsert_printer("sim", "simulated", "gantry-sim.cfg")
        .expect("child: printer");
    let job = store
        .start_job(
            printer,
            "benchy.gcode",
            sample_time(0, 0),
            &serde_json::json!({ "slicer": "PrusaSlicer" }),
        )
        .expect("child: start job");
    let mut out = std::io::stdout().lock();
    writeln!(out, "{MARK}job {job}").expect("child: write");
    out.flush().expect("child: flush");
    let mut batch = Vec::with_capacity(SENSORS.len() * SAMPLES_PER_SENSOR as usize);
    for n in 0..MAX_BATCHES {
        batch.clear();
        for sensor in SENSORS {
            for i in 0..SAMPLES_PER_SENSOR {
                batch.push(TemperatureSample {
                    printer,
                    job: Some(job),
                    sensor: sensor.to_owned(),
                    time: sample_time(n, i),
                    temperature_c: 200.0 + i as f64,
                    target_c: Some(210.0),
                    power: Some(0.4),
                });
            }
        }
        store.record_temperatures(&batch).expect("child: record");
        let (print_s, total_s, filament_mm) = progress(n);
        store
            .update_job_progress(job, print_s, total_s, filament_mm)
            .expect("child: progress");
        // The parent stops reading once it has seen enough; a closed pipe ends the child too.
        if writeln!(out, "{MARK}committed {}", n + 1)
            .and_then(|()| out.flush())
            .is_err()
        {
            return;
        }
    }
    store
        .finish_job(job, JobStatus::Completed, sample_time(MAX_BATCHES, 0), None)
        .expect("child: finish");
}
