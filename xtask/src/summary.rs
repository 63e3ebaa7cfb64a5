//! The record of a `cargo xtask test` run: one row per step, what each contributes to the totals,
//! and the summary table whose last line is `total: N passed, N failed`.

use std::fmt::Write as _;
use std::time::Duration;

use crate::counts::Counts;

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Ok,
    Failed,
    Skipped,
}

/// What a step contributes to the totals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A check that is not a test runner (fmt, clippy, ui check/build): one test passed or failed.
    Gate,
    /// Preparation (tauri-driver, Xvfb): nothing when it works, one failed test when it does not.
    Setup,
    /// A test runner with the counts parsed from its output. A failed runner counts at least one
    /// failed test, even if it reported none (a compile error, a crash).
    Tests(Counts),
}

/// One row of the summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StepReport {
    pub(crate) name: String,
    pub(crate) status: Status,
    pub(crate) elapsed: Option<Duration>,
    pub(crate) kind: Kind,
}

impl StepReport {
    /// The tests this step adds to the total.
    pub(crate) fn counted(&self) -> Counts {
        let failed = u64::from(self.status == Status::Failed);
        match (self.status, self.kind) {
            (Status::Skipped, _) => Counts::default(),
            (_, Kind::Gate) => Counts {
                passed: 1 - failed,
                failed,
            },
            (_, Kind::Setup) => Counts { passed: 0, failed },
            (_, Kind::Tests(counts)) => Counts {
                passed: counts.passed,
                failed: counts.failed.max(failed),
            },
        }
    }
}

/// `12.3s`, or `3m 4.0s` from a minute on.
pub(crate) fn format_duration(duration: Duration) -> String {
    let secs = duration.as_secs_f64();
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        let minutes = duration.as_secs() / 60;
        format!("{minutes}m {:.1}s", secs - (minutes * 60) as f64)
    }
}

/// The sum of every step's contribution.
pub(crate) fn totals(reports: &[StepReport]) -> Counts {
    let mut total = Counts::default();
    for report in reports {
        total += report.counted();
    }
    total
}

/// The summary table; its last line is `total: N passed, N failed` (no trailing newline).
pub(crate) fn format_summary(reports: &[StepReport]) -> String {
    let rows: Vec<[String; 4]> = reports
        .iter()
        .map(|report| {
            let result = match report.status {
                Status::Ok => "ok",
                Status::Failed => "FAILED",
                Status::Skipped => "skipped",
            };
            let time = report
                .elapsed
                .map_or_else(|| "-".to_owned(), format_duration);
            let counted = report.counted();
            let tests = match (report.status, report.kind) {
                (Status::Skipped, _) | (Status::Ok, Kind::Setup) => "-".to_owned(),
                (_, Kind::Tests(_)) => {
                    format!("{} passed, {} failed", counted.passed, counted.failed)
                }
                _ if counted.failed > 0 => "1 failed".to_owned(),
                _ => "1 passed".to_owned(),
            };
            [report.name.clone(), result.to_owned(), time, tests]
        })
        .collect();
    let header = ["step", "result", "time", "tests"].map(str::to_owned);
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let line = format!(
            "{:<w0$}  {:<w1$}  {:>w2$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
    let total = totals(reports);
    let _ = write!(
        out,
        "total: {} passed, {} failed",
        total.passed, total.failed
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(name: &str, status: Status, secs: Option<u64>, kind: Kind) -> StepReport {
        StepReport {
            name: name.to_owned(),
            status,
            elapsed: secs.map(Duration::from_secs),
            kind,
        }
    }

    fn tests(passed: u64, failed: u64) -> Kind {
        Kind::Tests(Counts { passed, failed })
    }

    #[test]
    fn durations() {
        assert_eq!(format_duration(Duration::from_millis(400)), "0.4s");
        assert_eq!(format_duration(Duration::from_millis(12_340)), "12.3s");
        assert_eq!(format_duration(Duration::from_millis(184_000)), "3m 4.0s");
        assert_eq!(format_duration(Duration::from_secs(3_720)), "62m 0.0s");
    }

    #[test]
    fn contributions() {
        let c = |r: StepReport| {
            let n = r.counted();
            (n.passed, n.failed)
        };
        assert_eq!(c(report("fmt", Status::Ok, Some(1), Kind::Gate)), (1, 0));
        assert_eq!(
            c(report("fmt", Status::Failed, Some(1), Kind::Gate)),
            (0, 1)
        );
        assert_eq!(c(report("xvfb", Status::Ok, Some(1), Kind::Setup)), (0, 0));
        assert_eq!(
            c(report("xvfb", Status::Failed, Some(1), Kind::Setup)),
            (0, 1)
        );
        assert_eq!(
            c(report("xvfb", Status::Skipped, None, Kind::Setup)),
            (0, 0)
        );
        assert_eq!(c(report("t", Status::Ok, Some(1), tests(12, 0))), (12, 0));
        assert_eq!(
            c(report("t", Status::Failed, Some(1), tests(11, 2))),
            (11, 2)
        );
        // Failed without a parsed failure (compile error, crash): one failed.
        assert_eq!(c(report("t", Status::Failed, Some(1), tests(3, 0))), (3, 1));
    }

    #[test]
    fn table_and_total_line() {
        let reports = [
            report("ui build", Status::Ok, Some(41), Kind::Gate),
            report("cargo fmt --check", Status::Failed, Some(1), Kind::Gate),
            report("tauri-driver", Status::Skipped, None, Kind::Setup),
            report("xvfb", Status::Ok, Some(0), Kind::Setup),
            report("cargo test", Status::Ok, Some(192), tests(57, 0)),
            report("ui test", Status::Failed, Some(9), tests(8, 1)),
        ];
        let expected = "\
step               result       time  tests
ui build           ok          41.0s  1 passed
cargo fmt --check  FAILED       1.0s  1 failed
tauri-driver       skipped         -  -
xvfb               ok           0.0s  -
cargo test         ok       3m 12.0s  57 passed, 0 failed
ui test            FAILED       9.0s  8 passed, 1 failed
total: 66 passed, 2 failed";
        assert_eq!(format_summary(&reports), expected);
    }

    #[test]
    fn empty_run() {
        assert_eq!(
            format_summary(&[]),
            "step  result  time  tests\ntotal: 0 passed, 0 failed"
        );
    }
}
