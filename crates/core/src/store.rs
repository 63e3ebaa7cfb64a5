//! The SQLite store: print job history, temperature series and the printers a user added, in
//! one database file per host.
//!
//! The job history follows Moonraker's `server.history` (moonraker/components/history.py): a job
//! row is written `in_progress` when a print starts, updated with the print stats (print and total
//! duration, filament used) while it runs, and given its final status (`completed`, `cancelled`,
//! `error`, `klippy_shutdown`, …) and end time when it ends. [`JobRecord`] serializes with the
//! field names of Moonraker's `server.history.list` job objects, and [`Store::totals`] answers like
//! `server.history.totals`. Temperatures are samples of Klipper's heaters and sensors (`extruder`,
//! `heater_bed`, `temperature_sensor chamber`) with their target and heater power.
//!
//! # Invariants
//! - The schema version is `PRAGMA user_version`. The migrations in [`MIGRATIONS`] run in order at
//!   open, each in its own transaction together with the version bump, so a database is always at
//!   one known version. A database newer than this code knows is refused with
//!   [`StoreError::UnsupportedSchema`] and left untouched, never used half-understood.
//! - Every write is one transaction: a batch of temperature samples lands whole or not at all.
//! - Durability: WAL with `synchronous=NORMAL`. A committed transaction survives a crash of the
//!   process (kill -9 of the host); a power cut may lose the last commits, never the file.
//! - One host process owns a database file: opening it marks every job still `in_progress` as
//!   `interrupted` (its host died mid-print), as Moonraker does at start-up — except the jobs a
//!   store of this same process started and has not finished (one app drives several printers,
//!   each with its own store on the one file). A second process opening the same file while a
//!   print runs would mark that live job too.
//! - `saved_printers` holds what a user added (a printer server's address and credentials, or a
//!   printer.cfg), so that the app brings the same printers back at its next start. The file is
//!   created readable by its owner only (0600 on Unix): it holds those credentials.
//! - The API is synchronous and blocks (up to [`BUSY_TIMEOUT`] on a lock). Callers run it on the
//!   store's own thread or through `spawn_blocking`; [`Store`] is `Send`, not `Sync`.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, Type, Value, ValueRef};
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params, params_from_iter};
use serde::{Deserialize, Serialize};

/// How long a statement waits for another connection's lock before it fails as busy.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The host's database file when no other is named: `$GANTRY_DATA_DIR/gantry.db`, else the
/// platform's data folder (`$XDG_DATA_HOME` or `~/.local/share` on Linux, `~/Library/Application
/// Support` on macOS, `%APPDATA%` on Windows) under `gantry/`. `None` when no home is known.
pub fn default_database_path() -> Option<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let dir = if let Some(d) = env("GANTRY_DATA_DIR") {
        d
    } else if cfg!(windows) {
        env("APPDATA")?.join("gantry")
    } else if cfg!(target_os = "macos") {
        env("HOME")?.join("Library/Application Support/gantry")
    } else {
        env("XDG_DATA_HOME")
            .or_else(|| env("HOME").map(|h| h.join(".local/share")))?
            .join("gantry")
    };
    Some(dir.join("gantry.db"))
}

/// The schema, one SQL script per version: applying `MIGRATIONS[n]` takes a database from
/// `user_version` n to n + 1. Append only; never edit a released entry.
pub const MIGRATIONS: &[&str] = &[
    // 1: printers, Moonraker-style job history, temperature samples.
    "CREATE TABLE printers (
        id         INTEGER PRIMARY KEY,
        name       TEXT NOT NULL UNIQUE,
        kind       TEXT NOT NULL,
        config     TEXT NOT NULL,
        created_at REAL NOT NULL
    ) STRICT;
    CREATE TABLE jobs (
        id               INTEGER PRIMARY KEY AUTOINCREMENT,
        printer_id       INTEGER NOT NULL REFERENCES printers (id),
        filename         TEXT NOT NULL,
        status           TEXT NOT NULL,
        start_time       REAL NOT NULL,
        end_time         REAL,
        print_duration_s REAL NOT NULL DEFAULT 0,
        total_duration_s REAL NOT NULL DEFAULT 0,
        filament_used_mm REAL NOT NULL DEFAULT 0,
        message          TEXT,
        metadata         TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(metadata))
    ) STRICT;
    CREATE INDEX jobs_by_printer ON jobs (printer_id);
    CREATE TABLE temperature_samples (
        printer_id    INTEGER NOT NULL REFERENCES printers (id),
        job_id        INTEGER REFERENCES jobs (id),
        sensor        TEXT NOT NULL,
        time          REAL NOT NULL,
        temperature_c REAL NOT NULL,
        target_c      REAL,
        power         REAL CHECK (power BETWEEN 0 AND 1)
    ) STRICT;
    CREATE INDEX temperature_samples_by_sensor ON temperature_samples (printer_id, sensor, time);",
    // 2: the printers a user added, brought back at the next start.
    "CREATE TABLE saved_printers (
        fleet_id    TEXT PRIMARY KEY,
        name        TEXT NOT NULL,
        kind        TEXT NOT NULL,
        address     TEXT NOT NULL,
        credentials TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(credentials)),
        added_at    REAL NOT NULL
    ) STRICT;",
];

/// The schema version this code writes and understands: the number of [`MIGRATIONS`].
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The columns of `jobs` in the order [`job_from_row`] reads them.
const JOB_COLUMNS: &str = "id, printer_id, filename, status, start_time, end_time, \
     print_duration_s, total_duration_s, filament_used_mm, message, metadata";

/// What went wrong in the store. Each error names the database file (`:memory:` for a store in
/// memory).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An SQLite call failed.
    #[error("job store {db}: cannot {op}: {source}", db = .path.display())]
    Sqlite {
        /// What the store was doing.
        op: &'static str,
        /// The database file.
        path: PathBuf,
        /// SQLite's reason.
        source: rusqlite::Error,
    },
    /// The database's schema version is one this code does not know: written by a newer Gantry,
    /// or not a Gantry database. It was left untouched.
    #[error(
        "job store {db} has schema version {found}, but this Gantry knows versions 0 to {known}: \
         it was written by a newer Gantry or is not Gantry's; upgrade Gantry or use another file \
         (this one was left untouched)",
        db = .path.display()
    )]
    UnsupportedSchema {
        /// The database file.
        path: PathBuf,
        /// Its `PRAGMA user_version`.
        found: i64,
        /// [`SCHEMA_VERSION`].
        known: i64,
    },
    /// A migration failed; the database stays at the version before it.
    #[error(
        "job store {db}: migration to schema version {version} failed, the database stays at \
         version {}: {source}",
        .version - 1,
        db = .path.display()
    )]
    Migration {
        /// The database file.
        path: PathBuf,
        /// The version the migration leads to.
        version: i64,
        /// SQLite's reason.
        source: rusqlite::Error,
    },
    /// No printer has this id.
    #[error(
        "job store {db}: cannot start job {filename:?}: no printer {printer}",
        db = .path.display()
    )]
    UnknownPrinter {
        /// The database file.
        path: PathBuf,
        /// The id asked for.
        printer: PrinterId,
        /// The job's file.
        filename: String,
    },
    /// No job has this id.
    #[error("job store {db}: no job {job}", db = .path.display())]
    UnknownJob {
        /// The database file.
        path: PathBuf,
        /// The id asked for.
        job: JobId,
    },
    /// The job is no longer `in_progress`, so its stats and status are final.
    #[error(
        "job store {db}: cannot {op} job {job}: it already ended as {status}",
        db = .path.display()
    )]
    JobEnded {
        /// What was asked.
        op: &'static str,
        /// The database file.
        path: PathBuf,
        /// The job.
        job: JobId,
        /// Its status.
        status: JobStatus,
    },
    /// [`Store::finish_job`] was given `in_progress`.
    #[error(
        "job store {db}: cannot finish job {job} as {status}: not a final status",
        db = .path.display()
    )]
    NotFinal {
        /// The database file.
        path: PathBuf,
        /// The job.
        job: JobId,
        /// The status given.
        status: JobStatus,
    },
    /// A temperature sample was refused (unknown printer or job, power outside 0..1, NaN); none of
    /// its batch was stored.
    #[error(
        "job store {db}: cannot record temperature sample {index} of the batch ({sensor} at \
         {time}); the batch was not stored: {source}",
        db = .path.display()
    )]
    Sample {
        /// The database file.
        path: PathBuf,
        /// Its index in the batch.
        index: usize,
        /// Its sensor.
        sensor: String,
        /// Its time, Unix s.
        time: f64,
        /// SQLite's reason (boxed to keep `StoreError` small).
        source: Box<rusqlite::Error>,
    },
}

/// Turns an SQLite error into [`StoreError::Sqlite`] for `op` on `path`.
fn sql_err(op: &'static str, path: &Path) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::Sqlite {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// A printer's row id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PrinterId(pub i64);

impl fmt::Display for PrinterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A job's row id. Shown and serialized as Moonraker's job `uid`: at least six upper-case hex
/// digits (`00002A`); parsed from any hex string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JobId(pub i64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:06X}", self.0)
    }
}

/// A job uid that is not a non-negative hex number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid job uid {0:?}: expected hex digits such as 00002A")]
pub struct ParseJobIdError(pub String);

impl FromStr for JobId {
    type Err = ParseJobIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ParseJobIdError(s.to_owned()));
        }
        i64::from_str_radix(s, 16)
            .map(JobId)
            .map_err(|_| ParseJobIdError(s.to_owned()))
    }
}

impl TryFrom<String> for JobId {
    type Error = ParseJobIdError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<JobId> for String {
    fn from(id: JobId) -> Self {
        id.to_string()
    }
}

/// How a job stands or ended: Moonraker's history statuses, serialized as its strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Printing (or paused) now.
    InProgress,
    /// Printed to the end.
    Completed,
    /// Cancelled by the user.
    Cancelled,
    /// Stopped by an error (a G-code error, a failed heater check).
    Error,
    /// Klipper shut down (`klippy_shutdown`): an MCU error or an emergency stop.
    KlippyShutdown,
    /// The connection to Klipper was lost (`klippy_disconnect`).
    KlippyDisconnect,
    /// The host was asked to exit while printing (`server_exit`).
    ServerExit,
    /// The host died mid-print; found `in_progress` when the store was next opened.
    Interrupted,
}

impl JobStatus {
    /// Every status, `in_progress` first.
    pub const ALL: [JobStatus; 8] = [
        Self::InProgress,
        Self::Completed,
        Self::Cancelled,
        Self::Error,
        Self::KlippyShutdown,
        Self::KlippyDisconnect,
        Self::ServerExit,
        Self::Interrupted,
    ];

    /// Moonraker's string for this status.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InProgress => "in_progress",
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
            Self::Error => "error",
            Self::KlippyShutdown => "klippy_shutdown",
            Self::KlippyDisconnect => "klippy_disconnect",
            Self::ServerExit => "server_exit",
            Self::Interrupted => "interrupted",
        }
    }

    /// Whether the job has ended (anything but `in_progress`).
    pub const fn is_final(self) -> bool {
        !matches!(self, Self::InProgress)
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is none of Moonraker's job statuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown job status {0:?}")]
pub struct ParseJobStatusError(pub String);

impl FromStr for JobStatus {
    type Err = ParseJobStatusError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| ParseJobStatusError(s.to_owned()))
    }
}

impl FromSql for JobStatus {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        value.as_str()?.parse().map_err(FromSqlError::other)
    }
}

/// One row of `printers`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PrinterRecord {
    /// Row id.
    pub id: PrinterId,
    /// Unique name, e.g. `sim` or `serial:/dev/ttyACM0`.
    pub name: String,
    /// What kind of printer: `simulated`, `serial` (see [`crate::printers::PrinterKind`]).
    pub kind: String,
    /// Its printer.cfg: the text, or the path of the file.
    pub config: String,
    /// When it was first stored, Unix s.
    pub created_at: f64,
}

/// One job of the history, serialized like a job object of Moonraker's `server.history.list`
/// (`job_id` as a hex uid, durations in s, filament in mm). Moonraker's `exists` (is the file
/// still there) and `user` belong to the file manager and the API layer, not to the store.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobRecord {
    /// The job's uid.
    pub job_id: JobId,
    /// The printer that ran it (Gantry's addition to Moonraker's fields).
    pub printer_id: PrinterId,
    /// The G-code file, relative to the gcodes root.
    pub filename: String,
    /// How it stands or ended.
    pub status: JobStatus,
    /// When it started, Unix s.
    pub start_time: f64,
    /// When it ended, Unix s; `None` while in progress and for interrupted jobs.
    pub end_time: Option<f64>,
    /// Time spent printing (pauses excluded), s.
    #[serde(rename = "print_duration")]
    pub print_duration_s: f64,
    /// Time from start to end, pauses included, s.
    #[serde(rename = "total_duration")]
    pub total_duration_s: f64,
    /// Filament extruded, mm.
    #[serde(rename = "filament_used")]
    pub filament_used_mm: f64,
    /// Why it ended: the error or shutdown message (Gantry's addition to Moonraker's fields).
    pub message: Option<String>,
    /// The file's metadata at start (slicer, estimated time, layer height, …).
    pub metadata: serde_json::Value,
}

/// Moonraker's `server.history.totals` `job_totals`: sums and maxima over the jobs that ended.
/// Jobs in progress and interrupted jobs are left out, as Moonraker only counts a job when it
/// finishes. Unlike Moonraker's running totals, these are computed from the rows kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct JobTotals {
    /// How many jobs ended.
    pub total_jobs: u64,
    /// Sum of their total durations, s.
    #[serde(rename = "total_time")]
    pub total_time_s: f64,
    /// Sum of their print durations, s.
    #[serde(rename = "total_print_time")]
    pub total_print_time_s: f64,
    /// Sum of their filament used, mm.
    #[serde(rename = "total_filament_used")]
    pub total_filament_used_mm: f64,
    /// The longest total duration, s.
    #[serde(rename = "longest_job")]
    pub longest_job_s: f64,
    /// The longest print duration, s.
    #[serde(rename = "longest_print")]
    pub longest_print_s: f64,
}

/// One temperature reading of a heater or sensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemperatureSample {
    /// The printer it belongs to.
    pub printer: PrinterId,
    /// The job printing when it was taken, if any.
    pub job: Option<JobId>,
    /// Klipper's object name: `extruder`, `heater_bed`, `temperature_sensor chamber`.
    pub sensor: String,
    /// When it was taken, Unix s.
    pub time: f64,
    /// The measured temperature, °C.
    pub temperature_c: f64,
    /// The heater's target, °C; `None` for a sensor without a heater.
    pub target_c: Option<f64>,
    /// The heater's power, 0 to 1; `None` for a sensor without a heater.
    pub power: Option<f64>,
}

/// A printer a user added, as kept in `saved_printers`.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedPrinter {
    /// Its fleet id (`octoprint:octopi.local:80`, `klipper:/home/me/printer.cfg`).
    pub fleet_id: String,
    /// The name shown.
    pub name: String,
    /// `moonraker`, `octoprint`, `prusalink` or `klipper` (a printer.cfg Gantry drives).
    pub kind: String,
    /// The server's URL, or the printer.cfg's path.
    pub address: String,
    /// The credentials, a JSON object (`{"kind": "none"}`, `{"kind": "api_key", "key": …}`,
    /// `{"kind": "login", "username": …, "password": …}`; `{}` for a printer.cfg).
    pub credentials: serde_json::Value,
    /// When it was added, Unix s.
    pub added_at: f64,
}

/// The jobs that stores of this process started and have not finished, by database file: the
/// ones that opening the file again must not mark `interrupted`.
static RUNNING_JOBS: LazyLock<Mutex<HashSet<(PathBuf, i64)>>> =
    LazyLock::new(|| Mutex::new(HashSet::new()));

fn running_jobs() -> std::sync::MutexGuard<'static, HashSet<(PathBuf, i64)>> {
    RUNNING_JOBS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The SQLite database of one host: printers, job history, temperature series.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
    path: PathBuf,
    interrupted_at_open: Vec<JobId>,
    /// The file as [`RUNNING_JOBS`] knows it (`None` in memory).
    registry_path: Option<PathBuf>,
    /// Jobs this store started and has not finished.
    running: Vec<JobId>,
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Some(path) = &self.registry_path {
            let mut jobs = running_jobs();
            for job in &self.running {
                jobs.remove(&(path.clone(), job.0));
            }
        }
    }
}

impl Store {
    /// Opens the database at `path`, creating it if needed: WAL journal, `synchronous=NORMAL`,
    /// foreign keys on, [`BUSY_TIMEOUT`]; applies the pending [`MIGRATIONS`]; then marks jobs left
    /// `in_progress` by a host that died as `interrupted` (see [`Store::interrupted_at_open`]).
    ///
    /// # Errors
    /// The file cannot be opened or is not a database, its schema is newer than this code
    /// ([`StoreError::UnsupportedSchema`]), or a migration failed.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let existed = path.exists();
        let conn = Connection::open(&path).map_err(sql_err("open the database file", &path))?;
        if !existed {
            owner_only(&path);
        }
        let registry = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
        Self::init(conn, path, Some(registry))
    }

    /// A fresh store in memory (for tests): the same schema, gone when dropped.
    ///
    /// # Errors
    /// SQLite could not set it up.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        let path = PathBuf::from(":memory:");
        let conn = Connection::open_in_memory().map_err(sql_err("open in memory", &path))?;
        Self::init(conn, path, None)
    }

    fn init(
        conn: Connection,
        path: PathBuf,
        registry_path: Option<PathBuf>,
    ) -> Result<Self, StoreError> {
        let mut store = Self {
            conn,
            path,
            interrupted_at_open: Vec::new(),
            registry_path,
            running: Vec::new(),
        };
        let path = &store.path;
        store
            .conn
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(sql_err("set busy_timeout", path))?;
        // Refuse a newer schema before changing anything, the journal mode included.
        let found = user_version(&store.conn).map_err(sql_err("read user_version", path))?;
        if !(0..=SCHEMA_VERSION).contains(&found) {
            return Err(StoreError::UnsupportedSchema {
                path: path.clone(),
                found,
                known: SCHEMA_VERSION,
            });
        }
        // An in-memory database answers `memory`: it has no journal file to put in WAL mode.
        let mode: String = store
            .conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(sql_err("set journal_mode=WAL", path))?;
        tracing::debug!(path = %path.display(), journal_mode = %mode, "job store opened");
        store
            .conn
            .pragma_update(None, "synchronous", "NORMAL")
            .map_err(sql_err("set synchronous=NORMAL", path))?;
        store
            .conn
            .pragma_update(None, "foreign_keys", true)
            .map_err(sql_err("set foreign_keys=ON", path))?;
        if found < SCHEMA_VERSION {
            // Checked again under the write lock, in case another process migrates meanwhile.
            migrate(&mut store.conn, &store.path, MIGRATIONS)?;
        }
        let interrupted = store.mark_interrupted()?;
        if !interrupted.is_empty() {
            let jobs: Vec<String> = interrupted.iter().map(JobId::to_string).collect();
            tracing::warn!(
                path = %store.path.display(),
                ?jobs,
                "jobs left in_progress by the last run are now interrupted"
            );
        }
        store.interrupted_at_open = interrupted;
        Ok(store)
    }

    /// The database file (`:memory:` for a store in memory).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The jobs that [`Store::open`] found `in_progress` and marked `interrupted`, oldest first.
    pub fn interrupted_at_open(&self) -> &[JobId] {
        &self.interrupted_at_open
    }

    /// Marks every job still `in_progress` as `interrupted` and returns them, oldest first.
    /// [`Store::open`] calls it: a job in progress at open belongs to a host that died — unless
    /// a store of this process started it and runs it still. Its end time stays empty and its
    /// stats are the last progress written (as Moonraker does).
    ///
    /// # Errors
    /// SQLite failed; nothing was changed.
    pub fn mark_interrupted(&mut self) -> Result<Vec<JobId>, StoreError> {
        let path = &self.path;
        let live: Vec<i64> = self.registry_path.as_ref().map_or_else(Vec::new, |file| {
            running_jobs()
                .iter()
                .filter(|(p, _)| p == file)
                .map(|(_, id)| *id)
                .collect()
        });
        let live = serde_json::to_string(&live).unwrap_or_else(|_| "[]".to_owned());
        let mut stmt = self
            .conn
            .prepare_cached(
                "UPDATE jobs SET status = 'interrupted' WHERE status = 'in_progress'
                 AND id NOT IN (SELECT value FROM json_each(?1)) RETURNING id",
            )
            .map_err(sql_err("mark interrupted jobs", path))?;
        let mut ids = stmt
            .query_map([live], |row| row.get(0).map(JobId))
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(sql_err("mark interrupted jobs", path))?;
        ids.sort_unstable();
        Ok(ids)
    }

    /// Stores the printer called `name`, or updates its kind and config if it exists, and
    /// returns its id (stable across updates).
    ///
    /// # Errors
    /// SQLite failed.
    pub fn upsert_printer(
        &mut self,
        name: &str,
        kind: &str,
        config: &str,
    ) -> Result<PrinterId, StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO printers (name, kind, config, created_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (name) DO UPDATE SET kind = excluded.kind, config = excluded.config
                 RETURNING id",
            )
            .and_then(|mut stmt| {
                stmt.query_row(params![name, kind, config, unix_now_s()], |row| {
                    row.get(0).map(PrinterId)
                })
            })
            .map_err(sql_err("store printer", &self.path))
    }

    /// Every stored printer, by id.
    ///
    /// # Errors
    /// SQLite failed.
    pub fn printers(&self) -> Result<Vec<PrinterRecord>, StoreError> {
        self.conn
            .prepare_cached("SELECT id, name, kind, config, created_at FROM printers ORDER BY id")
            .and_then(|mut stmt| {
                stmt.query_map([], |row| {
                    Ok(PrinterRecord {
                        id: PrinterId(row.get(0)?),
                        name: row.get(1)?,
                        kind: row.get(2)?,
                        config: row.get(3)?,
                        created_at: row.get(4)?,
                    })
                })?
                .collect()
            })
            .map_err(sql_err("list printers", &self.path))
    }

    /// Starts a job: a new history row, `in_progress`, with no stats yet.
    ///
    /// `start_time` is Unix s; `metadata` is the file's metadata (any JSON, usually an object).
    ///
    /// # Errors
    /// [`StoreError::UnknownPrinter`], or SQLite failed.
    pub fn start_job(
        &mut self,
        printer: PrinterId,
        filename: &str,
        start_time: f64,
        metadata: &serde_json::Value,
    ) -> Result<JobId, StoreError> {
        let result = self
            .conn
            .prepare_cached(
                "INSERT INTO jobs (printer_id, filename, status, start_time, metadata)
                 VALUES (?1, ?2, 'in_progress', ?3, ?4) RETURNING id",
            )
            .and_then(|mut stmt| {
                stmt.query_row(
                    params![printer.0, filename, start_time, metadata.to_string()],
                    |row| row.get(0).map(JobId),
                )
            });
        match result {
            Ok(id) => {
                if let Some(file) = &self.registry_path {
                    running_jobs().insert((file.clone(), id.0));
                }
                self.running.push(id);
                Ok(id)
            }
            Err(e)
                if e.sqlite_extended_error_code()
                    == Some(rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY) =>
            {
                Err(StoreError::UnknownPrinter {
                    path: self.path.clone(),
                    printer,
                    filename: filename.to_owned(),
                })
            }
            Err(e) => Err(sql_err("start job", &self.path)(e)),
        }
    }

    /// Writes a running job's print stats: print duration (s, pauses excluded), total duration
    /// (s), filament used (mm). Cheap enough to call every few seconds.
    ///
    /// # Errors
    /// [`StoreError::UnknownJob`], [`StoreError::JobEnded`], or SQLite failed.
    pub fn update_job_progress(
        &mut self,
        job: JobId,
        print_duration_s: f64,
        total_duration_s: f64,
        filament_used_mm: f64,
    ) -> Result<(), StoreError> {
        const OP: &str = "update the progress of";
        let changed = self
            .conn
            .prepare_cached(
                "UPDATE jobs SET print_duration_s = ?2, total_duration_s = ?3, filament_used_mm = ?4
                 WHERE id = ?1 AND status = 'in_progress'",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    job.0,
                    print_duration_s,
                    total_duration_s,
                    filament_used_mm
                ])
            })
            .map_err(sql_err("update job progress", &self.path))?;
        if changed == 0 {
            return Err(self.not_in_progress(OP, job));
        }
        Ok(())
    }

    /// Ends a running job with its final `status`, its end time (Unix s) and, for errors and
    /// shutdowns, the message why.
    ///
    /// # Errors
    /// [`StoreError::NotFinal`] for `in_progress`, [`StoreError::UnknownJob`],
    /// [`StoreError::JobEnded`], or SQLite failed.
    pub fn finish_job(
        &mut self,
        job: JobId,
        status: JobStatus,
        end_time: f64,
        message: Option<&str>,
    ) -> Result<(), StoreError> {
        if !status.is_final() {
            return Err(StoreError::NotFinal {
                path: self.path.clone(),
                job,
                status,
            });
        }
        let changed = self
            .conn
            .prepare_cached(
                "UPDATE jobs SET status = ?2, end_time = ?3, message = ?4
                 WHERE id = ?1 AND status = 'in_progress'",
            )
            .and_then(|mut stmt| stmt.execute(params![job.0, status.as_str(), end_time, message]))
            .map_err(sql_err("finish job", &self.path))?;
        if changed == 0 {
            return Err(self.not_in_progress("finish", job));
        }
        if let Some(at) = self.running.iter().position(|j| *j == job) {
            self.running.swap_remove(at);
            if let Some(file) = &self.registry_path {
                running_jobs().remove(&(file.clone(), job.0));
            }
        }
        Ok(())
    }

    /// Keeps a printer a user added (replacing the one with the same fleet id).
    ///
    /// # Errors
    /// SQLite failed.
    pub fn save_printer(&mut self, printer: &SavedPrinter) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO saved_printers (fleet_id, name, kind, address, credentials, added_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (fleet_id) DO UPDATE SET name = excluded.name,
                     kind = excluded.kind, address = excluded.address,
                     credentials = excluded.credentials",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    printer.fleet_id,
                    printer.name,
                    printer.kind,
                    printer.address,
                    printer.credentials.to_string(),
                    printer.added_at
                ])
            })
            .map_err(sql_err("save printer", &self.path))?;
        Ok(())
    }

    /// Renames a saved printer; whether it was kept.
    ///
    /// # Errors
    /// SQLite failed.
    pub fn rename_printer(&mut self, fleet_id: &str, name: &str) -> Result<bool, StoreError> {
        self.conn
            .prepare_cached("UPDATE saved_printers SET name = ?2 WHERE fleet_id = ?1")
            .and_then(|mut stmt| stmt.execute(params![fleet_id, name]))
            .map(|n| n > 0)
            .map_err(sql_err("rename printer", &self.path))
    }

    /// Forgets a saved printer; whether it was kept.
    ///
    /// # Errors
    /// SQLite failed.
    pub fn forget_printer(&mut self, fleet_id: &str) -> Result<bool, StoreError> {
        self.conn
            .prepare_cached("DELETE FROM saved_printers WHERE fleet_id = ?1")
            .and_then(|mut stmt| stmt.execute([fleet_id]))
            .map(|n| n > 0)
            .map_err(sql_err("forget printer", &self.path))
    }

    /// The saved printers, in the order they were added.
    ///
    /// # Errors
    /// SQLite failed.
    pub fn saved_printers(&self) -> Result<Vec<SavedPrinter>, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT fleet_id, name, kind, address, credentials, added_at
                 FROM saved_printers ORDER BY added_at, rowid",
            )
            .and_then(|mut stmt| {
                stmt.query_map([], |row| {
                    let credentials: String = row.get(4)?;
                    Ok(SavedPrinter {
                        fleet_id: row.get(0)?,
                        name: row.get(1)?,
                        kind: row.get(2)?,
                        address: row.get(3)?,
                        credentials: serde_json::from_str(&credentials).map_err(|e| {
                            rusqlite::Error::FromSqlConversionFailure(4, Type::Text, Box::new(e))
                        })?,
                        added_at: row.get(5)?,
                    })
                })?
                .collect()
            })
            .map_err(sql_err("list saved printers", &self.path))
    }

    /// Why `job` could not be changed: it does not exist, or it already ended.
    fn not_in_progress(&self, op: &'static str, job: JobId) -> StoreError {
        let status = self
            .conn
            .query_row("SELECT status FROM jobs WHERE id = ?1", [job.0], |row| {
                row.get::<_, JobStatus>(0)
            })
            .optional();
        match status {
            Ok(Some(status)) => StoreError::JobEnded {
                op,
                path: self.path.clone(),
                job,
                status,
            },
            Ok(None) => StoreError::UnknownJob {
                path: self.path.clone(),
                job,
            },
            Err(e) => sql_err("read job status", &self.path)(e),
        }
    }

    /// Stores a batch of temperature samples in one transaction: all of them or, if one is
    /// refused, none.
    ///
    /// # Errors
    /// [`StoreError::Sample`] names the refused sample, or SQLite failed.
    pub fn record_temperatures(&mut self, samples: &[TemperatureSample]) -> Result<(), StoreError> {
        if samples.is_empty() {
            return Ok(());
        }
        let path = &self.path;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql_err("begin a temperature batch", path))?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO temperature_samples
                     (printer_id, job_id, sensor, time, temperature_c, target_c, power)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(sql_err("record temperature samples", path))?;
            for (index, s) in samples.iter().enumerate() {
                stmt.execute(params![
                    s.printer.0,
                    s.job.map(|job| job.0),
                    s.sensor,
                    s.time,
                    s.temperature_c,
                    s.target_c,
                    s.power
                ])
                .map_err(|source| StoreError::Sample {
                    path: path.clone(),
                    index,
                    sensor: s.sensor.clone(),
                    time: s.time,
                    source: Box::new(source),
                })?;
            }
        }
        tx.commit()
            .map_err(sql_err("commit temperature samples", path))
    }

    /// The job history, newest first (by job id, as Moonraker orders it), at most `limit` jobs
    /// (0: all). `printer` keeps one printer's jobs; `before` (Unix s) keeps the jobs that ended
    /// before it, as Moonraker's `before` does, which leaves out jobs without an end time (in
    /// progress or interrupted).
    ///
    /// # Errors
    /// SQLite failed, or a row holds a value this code cannot read.
    pub fn job_history(
        &self,
        printer: Option<PrinterId>,
        limit: u32,
        before: Option<f64>,
    ) -> Result<Vec<JobRecord>, StoreError> {
        let mut sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE 1");
        let mut values = Vec::with_capacity(3);
        if let Some(printer) = printer {
            values.push(Value::Integer(printer.0));
            sql += &format!(" AND printer_id = ?{}", values.len());
        }
        if let Some(before) = before {
            values.push(Value::Real(before));
            sql += &format!(" AND end_time < ?{}", values.len());
        }
        values.push(Value::Integer(if limit == 0 { -1 } else { limit.into() }));
        sql += &format!(" ORDER BY id DESC LIMIT ?{}", values.len());
        self.conn
            .prepare_cached(&sql)
            .and_then(|mut stmt| {
                stmt.query_map(params_from_iter(&values), job_from_row)?
                    .collect()
            })
            .map_err(sql_err("read job history", &self.path))
    }

    /// One job, or `None` if there is no such job.
    ///
    /// # Errors
    /// SQLite failed, or the row holds a value this code cannot read.
    pub fn job(&self, job: JobId) -> Result<Option<JobRecord>, StoreError> {
        self.conn
            .prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"))
            .and_then(|mut stmt| stmt.query_row([job.0], job_from_row).optional())
            .map_err(sql_err("read job", &self.path))
    }

    /// One sensor's samples of one printer with `from_time <= time < to_time` (Unix s), oldest
    /// first.
    ///
    /// # Errors
    /// SQLite failed.
    pub fn temperature_series(
        &self,
        printer: PrinterId,
        sensor: &str,
        from_time: f64,
        to_time: f64,
    ) -> Result<Vec<TemperatureSample>, StoreError> {
        self.conn
            .prepare_cached(
                "SELECT printer_id, job_id, sensor, time, temperature_c, target_c, power
                 FROM temperature_samples
                 WHERE printer_id = ?1 AND sensor = ?2 AND time >= ?3 AND time < ?4
                 ORDER BY time, rowid",
            )
            .and_then(|mut stmt| {
                stmt.query_map(params![printer.0, sensor, from_time, to_time], |row| {
                    Ok(TemperatureSample {
                        printer: PrinterId(row.get(0)?),
                        job: row.get::<_, Option<i64>>(1)?.map(JobId),
                        sensor: row.get(2)?,
                        time: row.get(3)?,
                        temperature_c: row.get(4)?,
                        target_c: row.get(5)?,
                        power: row.get(6)?,
                    })
                })?
                .collect()
            })
            .map_err(sql_err("read temperature series", &self.path))
    }

    /// Totals over every printer's ended jobs, like Moonraker's `server.history.totals`.
    ///
    /// # Errors
    /// SQLite failed.
    pub fn totals(&self) -> Result<JobTotals, StoreError> {
        self.conn
            .query_row(
                "SELECT count(*), total(total_duration_s), total(print_duration_s),
                        total(filament_used_mm), coalesce(max(total_duration_s), 0.0),
                        coalesce(max(print_duration_s), 0.0)
                 FROM jobs WHERE status NOT IN ('in_progress', 'interrupted')",
                [],
                |row| {
                    Ok(JobTotals {
                        // count(*) is never negative.
                        total_jobs: u64::try_from(row.get::<_, i64>(0)?).unwrap_or(0),
                        total_time_s: row.get(1)?,
                        total_print_time_s: row.get(2)?,
                        total_filament_used_mm: row.get(3)?,
                        longest_job_s: row.get(4)?,
                        longest_print_s: row.get(5)?,
                    })
                },
            )
            .map_err(sql_err("read job totals", &self.path))
    }
}

/// The database's `PRAGMA user_version`.
fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
}

/// Brings the database up to `migrations.len()`, one transaction per step (taken with a write
/// lock, so two processes opening the same file cannot both apply a step).
fn migrate(conn: &mut Connection, path: &Path, migrations: &[&str]) -> Result<(), StoreError> {
    let known = i64::try_from(migrations.len()).unwrap_or(i64::MAX);
    loop {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql_err("begin a migration", path))?;
        let version = user_version(&tx).map_err(sql_err("read user_version", path))?;
        let Some(sql) = usize::try_from(version)
            .ok()
            .filter(|_| version <= known)
            .map(|v| migrations.get(v))
        else {
            return Err(StoreError::UnsupportedSchema {
                path: path.to_path_buf(),
                found: version,
                known,
            });
        };
        let Some(sql) = sql else {
            return Ok(()); // Up to date; dropping `tx` ends it.
        };
        let next = version + 1;
        let failed = |source| StoreError::Migration {
            path: path.to_path_buf(),
            version: next,
            source,
        };
        tx.execute_batch(sql).map_err(failed)?;
        tx.pragma_update(None, "user_version", next)
            .map_err(failed)?;
        tx.commit().map_err(failed)?;
        tracing::info!(path = %path.display(), version = next, "job store migrated");
    }
}

/// Reads a row of [`JOB_COLUMNS`].
fn job_from_row(row: &Row<'_>) -> rusqlite::Result<JobRecord> {
    let metadata: String = row.get(10)?;
    let metadata = serde_json::from_str(&metadata)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(10, Type::Text, Box::new(e)))?;
    Ok(JobRecord {
        job_id: JobId(row.get(0)?),
        printer_id: PrinterId(row.get(1)?),
        filename: row.get(2)?,
        status: row.get(3)?,
        start_time: row.get(4)?,
        end_time: row.get(5)?,
        print_duration_s: row.get(6)?,
        total_duration_s: row.get(7)?,
        filament_used_mm: row.get(8)?,
        message: row.get(9)?,
        metadata,
    })
}

/// Makes a new database file readable and writable by its owner only (it may hold printers'
/// credentials); elsewhere than Unix the folder's permissions apply.
fn owner_only(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
            tracing::warn!(path = %path.display(), error = %e, "cannot make the database private");
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// Now, Unix s (0 if the clock is before 1970).
pub fn unix_now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A directory under the system's temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "gantry-store-{tag}-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("create temp dir");
            Self(dir)
        }

        fn db(&self) -> PathBuf {
            self.0.join("gantry.db")
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn store_with_printer() -> (Store, PrinterId) {
        let mut store = Store::open_in_memory().expect("open in memory");
        let printer = store
            .upsert_printer("sim", "simulated", "gantry-sim.cfg")
            .expect("upsert");
        (store, printer)
    }

    /// Regression: one app drives several printers, each with a store on the one file. Opening
    /// the second marked the first's running print `interrupted`, and its end was then refused.
    #[test]
    fn a_second_store_of_this_process_leaves_a_running_job_alone() {
        let dir = TempDir::new("second-store");
        let mut first = Store::open(dir.db()).expect("first store");
        let printer = first
            .upsert_printer("sim", "simulated", "")
            .expect("printer");
        let job = first
            .start_job(printer, "cube.gcode", 1.0, &serde_json::json!({}))
            .expect("start");
        let second = Store::open(dir.db()).expect("second store, same file");
        assert!(second.interrupted_at_open().is_empty());
        first
            .update_job_progress(job, 1.0, 2.0, 3.0)
            .expect("the job still runs");
        drop(second);
        // A job left running by a store that is gone is interrupted, as after a crash.
        let other = first
            .start_job(printer, "left.gcode", 2.0, &serde_json::json!({}))
            .expect("start");
        first
            .finish_job(job, JobStatus::Completed, 3.0, None)
            .expect("finish");
        drop(first);
        let reopened = Store::open(dir.db()).expect("reopen");
        assert_eq!(reopened.interrupted_at_open(), [other]);
        assert_eq!(
            reopened.job(job).expect("job").map(|j| j.status),
            Some(JobStatus::Completed)
        );
    }

    #[test]
    fn saved_printers_are_kept_replaced_and_forgotten() {
        let dir = TempDir::new("saved");
        let octoprint = SavedPrinter {
            fleet_id: "octoprint:octopi.local:80".into(),
            name: "OctoPrint on octopi".into(),
            kind: "octoprint".into(),
            address: "http://octopi.local/".into(),
            credentials: serde_json::json!({"api_key": "K"}),
            added_at: 10.0,
        };
        let board = SavedPrinter {
            fleet_id: "klipper:/home/me/printer.cfg".into(),
            name: "printer.cfg on /dev/ttyACM0".into(),
            kind: "klipper".into(),
            address: "/home/me/printer.cfg".into(),
            credentials: serde_json::json!({}),
            added_at: 20.0,
        };
        {
            let mut store = Store::open(dir.db()).expect("open");
            store.save_printer(&board).expect("save");
            store.save_printer(&octoprint).expect("save");
        }
        let mut store = Store::open(dir.db()).expect("reopen");
        assert_eq!(
            store.saved_printers().expect("list"),
            [octoprint.clone(), board.clone()]
        );
        let renamed = SavedPrinter {
            name: "Voron".into(),
            ..octoprint.clone()
        };
        store.save_printer(&renamed).expect("replace");
        assert_eq!(store.saved_printers().expect("list")[0].name, "Voron");
        assert!(
            store
                .rename_printer(&octoprint.fleet_id, "Voron 2.4")
                .expect("rename")
        );
        assert!(
            !store
                .rename_printer("moonraker:nope:7125", "X")
                .expect("none")
        );
        let listed = store.saved_printers().expect("list");
        assert_eq!(listed[0].name, "Voron 2.4");
        assert_eq!(
            listed[0].credentials, octoprint.credentials,
            "only the name changes"
        );
        assert!(store.forget_printer(&octoprint.fleet_id).expect("forget"));
        assert!(!store.forget_printer(&octoprint.fleet_id).expect("again"));
        assert_eq!(store.saved_printers().expect("list"), [board]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.db())
                .expect("file")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "the file holds credentials");
        }
    }

    fn table_names(store: &Store) -> Vec<String> {
        let mut stmt = store
            .conn
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
            .expect("prepare");
        stmt.query_map([], |row| row.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
    }

    fn sample(
        printer: PrinterId,
        job: Option<JobId>,
        sensor: &str,
        time: f64,
    ) -> TemperatureSample {
        TemperatureSample {
            printer,
            job,
            sensor: sensor.to_owned(),
            time,
            temperature_c: 20.0 + time,
            target_c: Some(210.0),
            power: Some(0.5),
        }
    }

    #[test]
    fn migrates_from_empty_and_reopens_idempotently() {
        let dir = TempDir::new("migrate");
        let printer = {
            let mut store = Store::open(dir.db()).expect("first open");
            assert_eq!(user_version(&store.conn).expect("version"), SCHEMA_VERSION);
            assert_eq!(
                table_names(&store),
                [
                    "jobs",
                    "printers",
                    "saved_printers",
                    "sqlite_sequence",
                    "temperature_samples"
                ]
            );
            let mode: String = store
                .conn
                .pragma_query_value(None, "journal_mode", |row| row.get(0))
                .expect("journal_mode");
            assert_eq!(mode, "wal");
            let fk: bool = store
                .conn
                .pragma_query_value(None, "foreign_keys", |row| row.get(0))
                .expect("foreign_keys");
            assert!(fk);
            store
                .upsert_printer("sim", "simulated", "[printer]\nkinematics: cartesian\n")
                .expect("upsert")
        };
        for _ in 0..2 {
            let mut store = Store::open(dir.db()).expect("reopen");
            assert_eq!(user_version(&store.conn).expect("version"), SCHEMA_VERSION);
            assert!(store.interrupted_at_open().is_empty());
            let printers = store.printers().expect("printers");
            assert_eq!(printers.len(), 1);
            assert_eq!(printers[0].id, printer);
            assert_eq!(
                store
                    .upsert_printer("sim", "simulated", "x")
                    .expect("upsert"),
                printer
            );
        }
        let store = Store::open_in_memory().expect("in memory");
        assert_eq!(user_version(&store.conn).expect("version"), SCHEMA_VERSION);
        assert_eq!(store.path(), Path::new(":memory:"));
    }

    #[test]
    fn refuses_a_newer_schema_and_leaves_it_untouched() {
        let dir = TempDir::new("too-new");
        drop(Store::open(dir.db()).expect("create"));
        {
            let conn = Connection::open(dir.db()).expect("raw open");
            conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
                .expect("bump");
        }
        let err = Store::open(dir.db()).expect_err("a newer schema must be refused");
        match &err {
            StoreError::UnsupportedSchema { path, found, known } => {
                assert_eq!(path, &dir.db());
                assert_eq!(*found, SCHEMA_VERSION + 1);
                assert_eq!(*known, SCHEMA_VERSION);
            }
            other => panic!("expected UnsupportedSchema, got {other:?}"),
        }
        let text = err.to_string();
        assert!(text.contains(&dir.db().display().to_string()), "{text}");
        assert!(text.contains("newer Gantry"), "{text}");
        let conn = Connection::open(dir.db()).expect("raw open");
        assert_eq!(user_version(&conn).expect("version"), SCHEMA_VERSION + 1);
    }

    #[test]
    fn a_failed_migration_keeps_the_previous_version() {
        let mut conn = Connection::open_in_memory().expect("open");
        let path = Path::new(":memory:");
        let steps = [
            "CREATE TABLE a (x INTEGER);",
            "CREATE TABLE b (x INTEGER); SELEC oops;",
        ];
        let err = migrate(&mut conn, path, &steps).expect_err("the second step is bad");
        assert!(
            matches!(err, StoreError::Migration { version: 2, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("stays at version 1"), "{err}");
        assert_eq!(user_version(&conn).expect("version"), 1);
        let b_exists: bool = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name = 'b'",
                [],
                |row| row.get(0),
            )
            .expect("query");
        assert!(!b_exists, "the failed step's table must be rolled back");
        migrate(&mut conn, path, &steps[..1]).expect("up to date is fine");
    }

    #[test]
    fn job_lifecycle() {
        let (mut store, printer) = store_with_printer();
        let metadata = json!({ "slicer": "PrusaSlicer", "estimated_time": 3600 });
        let job = store
            .start_job(printer, "benchy.gcode", 1_000.0, &metadata)
            .expect("start");
        let record = store.job(job).expect("read").expect("exists");
        assert_eq!(record.status, JobStatus::InProgress);
        assert_eq!(record.end_time, None);
        assert_eq!(record.metadata, metadata);
        assert_eq!(record.print_duration_s, 0.0);

        store
            .update_job_progress(job, 50.0, 60.0, 1_234.5)
            .expect("progress");
        store
            .finish_job(job, JobStatus::Completed, 1_070.0, None)
            .expect("finish");
        let record = store.job(job).expect("read").expect("exists");
        assert_eq!(
            record,
            JobRecord {
                job_id: job,
                printer_id: printer,
                filename: "benchy.gcode".to_owned(),
                status: JobStatus::Completed,
                start_time: 1_000.0,
                end_time: Some(1_070.0),
                print_duration_s: 50.0,
                total_duration_s: 60.0,
                filament_used_mm: 1_234.5,
                message: None,
                metadata,
            }
        );

        let err = store
            .update_job_progress(job, 1.0, 1.0, 1.0)
            .expect_err("ended");
        assert!(
            matches!(
                err,
                StoreError::JobEnded {
                    status: JobStatus::Completed,
                    ..
                }
            ),
            "{err:?}"
        );
        let err = store
            .finish_job(job, JobStatus::Error, 1.0, Some("late"))
            .expect_err("ended");
        assert!(matches!(err, StoreError::JobEnded { .. }), "{err:?}");
        let missing = JobId(job.0 + 100);
        let err = store
            .update_job_progress(missing, 1.0, 1.0, 1.0)
            .expect_err("no such job");
        assert!(matches!(err, StoreError::UnknownJob { job, .. } if job == missing));
        assert_eq!(store.job(missing).expect("read"), None);

        let job2 = store
            .start_job(printer, "cube.gcode", 2_000.0, &json!({}))
            .expect("start");
        let err = store
            .finish_job(job2, JobStatus::InProgress, 2_001.0, None)
            .expect_err("not final");
        assert!(matches!(err, StoreError::NotFinal { .. }), "{err:?}");
        store
            .finish_job(
                job2,
                JobStatus::KlippyShutdown,
                2_010.0,
                Some("MCU 'mcu' shutdown: Timer too close"),
            )
            .expect("finish");
        let record = store.job(job2).expect("read").expect("exists");
        assert_eq!(record.status, JobStatus::KlippyShutdown);
        assert_eq!(
            record.message.as_deref(),
            Some("MCU 'mcu' shutdown: Timer too close")
        );

        let err = store
            .start_job(PrinterId(99), "x.gcode", 0.0, &json!({}))
            .expect_err("unknown printer");
        assert!(
            matches!(
                err,
                StoreError::UnknownPrinter {
                    printer: PrinterId(99),
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn upsert_printer_updates_in_place() {
        let (mut store, printer) = store_with_printer();
        let other = store
            .upsert_printer("serial:/dev/ttyACM0", "serial", "/home/pi/printer.cfg")
            .expect("insert");
        assert_ne!(other, printer);
        let again = store
            .upsert_printer("sim", "simulated", "changed.cfg")
            .expect("update");
        assert_eq!(again, printer);
        let printers = store.printers().expect("printers");
        assert_eq!(printers.len(), 2);
        assert_eq!(printers[0].config, "changed.cfg");
        assert_eq!(printers[1].kind, "serial");
        assert!(printers[0].created_at > 0.0);
    }

    #[test]
    fn history_is_newest_first_with_limit_before_and_printer() {
        let (mut store, a) = store_with_printer();
        let b = store.upsert_printer("b", "serial", "b.cfg").expect("b");
        let mut jobs = Vec::new();
        for i in 0..6_u8 {
            let printer = if i % 2 == 0 { a } else { b };
            let start = 1_000.0 * f64::from(i);
            let job = store
                .start_job(printer, &format!("part{i}.gcode"), start, &json!({}))
                .expect("start");
            store
                .finish_job(job, JobStatus::Completed, start + 500.0, None)
                .expect("finish");
            jobs.push(job);
        }
        let running = store
            .start_job(a, "running.gcode", 9_000.0, &json!({}))
            .expect("start");

        let ids = |records: Vec<JobRecord>| records.iter().map(|r| r.job_id).collect::<Vec<_>>();
        let all = ids(store.job_history(None, 0, None).expect("all"));
        let mut expected: Vec<_> = jobs.iter().copied().chain([running]).collect();
        expected.reverse();
        assert_eq!(all, expected);
        assert_eq!(
            ids(store.job_history(None, 2, None).expect("limit")),
            [running, jobs[5]]
        );
        assert_eq!(
            ids(store.job_history(Some(a), 0, None).expect("printer a")),
            [running, jobs[4], jobs[2], jobs[0]]
        );
        // Ended before 3_000 s: jobs 0 (ends 500) and 1 (ends 1_500), 2 (ends 2_500).
        assert_eq!(
            ids(store.job_history(None, 0, Some(3_000.0)).expect("before")),
            [jobs[2], jobs[1], jobs[0]]
        );
        assert_eq!(
            ids(store
                .job_history(Some(b), 1, Some(3_000.0))
                .expect("all filters")),
            [jobs[1]]
        );
        assert!(
            store
                .job_history(Some(PrinterId(42)), 0, None)
                .expect("none")
                .is_empty()
        );
    }

    #[test]
    fn totals_count_ended_jobs_only() {
        let (mut store, printer) = store_with_printer();
        assert_eq!(store.totals().expect("empty"), JobTotals::default());
        let stats = [
            (JobStatus::Completed, 100.0, 120.0, 1_000.0),
            (JobStatus::Cancelled, 300.0, 400.0, 2_000.0),
            (JobStatus::Error, 50.0, 55.0, 10.0),
        ];
        for (i, (status, print_s, total_s, filament_mm)) in stats.into_iter().enumerate() {
            let job = store
                .start_job(printer, &format!("{i}.gcode"), 0.0, &json!({}))
                .expect("start");
            store
                .update_job_progress(job, print_s, total_s, filament_mm)
                .expect("progress");
            store
                .finish_job(job, status, total_s, None)
                .expect("finish");
        }
        let running = store
            .start_job(printer, "running.gcode", 0.0, &json!({}))
            .expect("start");
        store
            .update_job_progress(running, 9_999.0, 9_999.0, 9_999.0)
            .expect("progress");
        assert_eq!(
            store.totals().expect("totals"),
            JobTotals {
                total_jobs: 3,
                total_time_s: 575.0,
                total_print_time_s: 450.0,
                total_filament_used_mm: 3_010.0,
                longest_job_s: 400.0,
                longest_print_s: 300.0,
            }
        );
        assert_eq!(
            serde_json::to_value(store.totals().expect("totals")).expect("json"),
            json!({
                "total_jobs": 3, "total_time": 575.0, "total_print_time": 450.0,
                "total_filament_used": 3010.0, "longest_job": 400.0, "longest_print": 300.0,
            })
        );
    }

    #[test]
    fn temperature_series_is_a_half_open_range_of_one_sensor() {
        let (mut store, printer) = store_with_printer();
        let other = store.upsert_printer("b", "serial", "b.cfg").expect("b");
        let job = store
            .start_job(printer, "a.gcode", 0.0, &json!({}))
            .expect("start");
        let mut batch = Vec::new();
        for i in (0..10).rev() {
            let t = f64::from(i);
            batch.push(sample(printer, Some(job), "extruder", t));
            batch.push(sample(printer, None, "heater_bed", t));
            batch.push(sample(other, None, "extruder", t));
        }
        batch.push(TemperatureSample {
            target_c: None,
            power: None,
            ..sample(printer, None, "temperature_sensor chamber", 3.0)
        });
        store.record_temperatures(&batch).expect("record");
        store.record_temperatures(&[]).expect("empty batch");

        let series = store
            .temperature_series(printer, "extruder", 2.0, 5.0)
            .expect("series");
        let times: Vec<f64> = series.iter().map(|s| s.time).collect();
        assert_eq!(times, [2.0, 3.0, 4.0]);
        assert!(
            series
                .iter()
                .all(|s| s.printer == printer && s.job == Some(job) && s.sensor == "extruder")
        );
        assert_eq!(series[0], sample(printer, Some(job), "extruder", 2.0));
        let chamber = store
            .temperature_series(printer, "temperature_sensor chamber", 0.0, 100.0)
            .expect("chamber");
        assert_eq!(chamber.len(), 1);
        assert_eq!(chamber[0].target_c, None);
        assert_eq!(
            store
                .temperature_series(other, "extruder", 0.0, 100.0)
                .expect("other")
                .len(),
            10
        );
        assert!(
            store
                .temperature_series(printer, "extruder", 5.0, 5.0)
                .expect("empty range")
                .is_empty()
        );
    }

    #[test]
    fn a_refused_sample_drops_its_whole_batch() {
        let (mut store, printer) = store_with_printer();
        let batch = [
            sample(printer, None, "extruder", 1.0),
            TemperatureSample {
                power: Some(1.5),
                ..sample(printer, None, "extruder", 2.0)
            },
        ];
        let err = store.record_temperatures(&batch).expect_err("power > 1");
        assert!(
            matches!(err, StoreError::Sample { index: 1, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("extruder at 2"), "{err}");
        assert!(
            store
                .temperature_series(printer, "extruder", 0.0, 10.0)
                .expect("series")
                .is_empty()
        );
        let err = store
            .record_temperatures(&[sample(PrinterId(7), None, "extruder", 1.0)])
            .expect_err("unknown printer");
        assert!(
            matches!(err, StoreError::Sample { index: 0, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn open_marks_jobs_left_in_progress_interrupted() {
        let dir = TempDir::new("interrupted");
        let (done, left) = {
            let mut store = Store::open(dir.db()).expect("open");
            let printer = store
                .upsert_printer("sim", "simulated", "")
                .expect("printer");
            let done = store
                .start_job(printer, "done.gcode", 1.0, &json!({}))
                .expect("start");
            store
                .finish_job(done, JobStatus::Completed, 2.0, None)
                .expect("finish");
            let left = store
                .start_job(printer, "left.gcode", 3.0, &json!({}))
                .expect("start");
            store
                .update_job_progress(left, 10.0, 12.0, 100.0)
                .expect("progress");
            (done, left)
        }; // Dropped without finishing `left`: as if the host died.
        let mut store = Store::open(dir.db()).expect("reopen");
        assert_eq!(store.interrupted_at_open(), [left]);
        let record = store.job(left).expect("read").expect("exists");
        assert_eq!(record.status, JobStatus::Interrupted);
        assert_eq!(record.end_time, None);
        assert_eq!(record.total_duration_s, 12.0);
        assert_eq!(
            store.job(done).expect("read").expect("exists").status,
            JobStatus::Completed
        );
        assert!(store.mark_interrupted().expect("again").is_empty());
        drop(store);
        let store = Store::open(dir.db()).expect("third open");
        assert!(store.interrupted_at_open().is_empty());
    }

    #[test]
    fn statuses_and_records_use_moonraker_names() {
        let names: Vec<String> = JobStatus::ALL
            .iter()
            .map(|s| {
                serde_json::to_value(s)
                    .expect("json")
                    .as_str()
                    .expect("string")
                    .to_owned()
            })
            .collect();
        assert_eq!(
            names,
            [
                "in_progress",
                "completed",
                "cancelled",
                "error",
                "klippy_shutdown",
                "klippy_disconnect",
                "server_exit",
                "interrupted"
            ]
        );
        for status in JobStatus::ALL {
            assert_eq!(
                names[JobStatus::ALL
                    .iter()
                    .position(|s| *s == status)
                    .expect("in ALL")],
                status.as_str()
            );
            assert_eq!(status.as_str().parse::<JobStatus>(), Ok(status));
        }
        assert!("done".parse::<JobStatus>().is_err());

        let (mut store, printer) = store_with_printer();
        let job = store
            .start_job(printer, "a.gcode", 5.0, &json!({ "layer_height": 0.2 }))
            .expect("start");
        let record = store.job(job).expect("read").expect("exists");
        assert_eq!(
            serde_json::to_value(&record).expect("json"),
            json!({
                "job_id": format!("{:06X}", job.0),
                "printer_id": printer.0,
                "filename": "a.gcode",
                "status": "in_progress",
                "start_time": 5.0,
                "end_time": null,
                "print_duration": 0.0,
                "total_duration": 0.0,
                "filament_used": 0.0,
                "message": null,
                "metadata": { "layer_height": 0.2 },
            })
        );
        assert_eq!(JobId(42).to_string(), "00002A");
        assert_eq!("00002A".parse::<JobId>(), Ok(JobId(42)));
        assert_eq!("2a".parse::<JobId>(), Ok(JobId(42)));
        assert!("-1".parse::<JobId>().is_err());
        assert!("".parse::<JobId>().is_err());
        assert_eq!(
            serde_json::from_str::<JobId>("\"0000FF\"").expect("json"),
            JobId(255)
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// The series is exactly the samples of that printer and sensor in `[from, to)`, by time.
        #[test]
        fn temperature_series_matches_a_filter(
            samples in prop::collection::vec((0_u8..2, 0_u8..3, 0_u16..1_000), 0..60),
            from in 0_u16..1_000,
            len in 0_u16..1_000,
        ) {
            let (mut store, a) = store_with_printer();
            let b = store.upsert_printer("b", "serial", "").expect("b");
            let sensors = ["extruder", "heater_bed", "extruder1"];
            let batch: Vec<TemperatureSample> = samples
                .iter()
                .map(|&(p, s, t)| {
                    sample(if p == 0 { a } else { b }, None, sensors[usize::from(s)], f64::from(t))
                })
                .collect();
            store.record_temperatures(&batch).expect("record");
            let (from, to) = (f64::from(from), f64::from(from) + f64::from(len));
            for printer in [a, b] {
                for sensor in sensors {
                    let got = store
                        .temperature_series(printer, sensor, from, to)
                        .expect("series");
                    let mut want: Vec<&TemperatureSample> = batch
                        .iter()
                        .filter(|s| s.printer == printer && s.sensor == sensor)
                        .filter(|s| s.time >= from && s.time < to)
                        .collect();
                    want.sort_by(|x, y| x.time.total_cmp(&y.time));
                    let got_times: Vec<f64> = got.iter().map(|s| s.time).collect();
                    let want_times: Vec<f64> = want.iter().map(|s| s.time).collect();
                    prop_assert_eq!(got_times, want_times);
                }
            }
        }
    }
}
