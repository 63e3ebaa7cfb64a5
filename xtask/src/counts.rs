//! Test counts parsed from runner output: libtest's `test result:` lines (cargo test) and
//! Vitest's `Tests` summary line. ANSI escape sequences are stripped first, so colored output
//! parses the same as plain output.

use std::ops::AddAssign;

/// Passed and failed tests. Ignored, skipped and todo tests are not counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) passed: u64,
    pub(crate) failed: u64,
}

impl AddAssign for Counts {
    fn add_assign(&mut self, other: Self) {
        self.passed += other.passed;
        self.failed += other.failed;
    }
}

/// Removes ANSI escape sequences: CSI (`ESC [ … final`), OSC (`ESC ] … BEL` or `ESC ] … ESC \`)
/// and two-character escapes.
pub(crate) fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('[') => {
                // Parameter and intermediate bytes, then one final byte in 0x40..=0x7e.
                for c in chars.by_ref() {
                    if ('\u{40}'..='\u{7e}').contains(&c) {
                        break;
                    }
                }
            }
            Some(']') => {
                while let Some(c) = chars.next() {
                    if c == '\u{7}' {
                        break;
                    }
                    if c == '\u{1b}' {
                        if chars.peek() == Some(&'\\') {
                            chars.next();
                        }
                        break;
                    }
                }
            }
            Some(_) | None => {}
        }
    }
    out
}

/// `N label` at the end of `part` (e.g. ` ok. 12 passed` → `(12, "passed")`).
fn count_and_label(part: &str) -> Option<(u64, &str)> {
    let mut words = part.split_whitespace().rev();
    let label = words.next()?;
    let count = words.next()?.parse().ok()?;
    Some((count, label))
}

/// Sums libtest summaries over all test binaries and doc tests, e.g.
/// `test result: FAILED. 11 passed; 1 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.01s`.
pub(crate) fn parse_cargo_test(output: &str) -> Counts {
    let mut total = Counts::default();
    for line in strip_ansi(output).lines() {
        let Some(rest) = line.trim_start().strip_prefix("test result:") else {
            continue;
        };
        for part in rest.split(';') {
            match count_and_label(part) {
                Some((n, "passed")) => total.passed += n,
                Some((n, "failed")) => total.failed += n,
                _ => {}
            }
        }
    }
    total
}

/// Sums Vitest's summary lines, e.g. `      Tests  1 failed | 8 passed | 1 skipped (10)`.
/// The `Test Files` line is not counted.
pub(crate) fn parse_vitest(output: &str) -> Counts {
    let mut total = Counts::default();
    for line in strip_ansi(output).lines() {
        let Some(rest) = line.trim_start().strip_prefix("Tests") else {
            continue;
        };
        if !rest.starts_with(char::is_whitespace) {
            continue;
        }
        // Drop the trailing `(total)`.
        let rest = rest.split('(').next().unwrap_or_default();
        for part in rest.split('|') {
            match count_and_label(part) {
                Some((n, "passed")) => total.passed += n,
                Some((n, "failed")) => total.failed += n,
                _ => {}
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(passed: u64, failed: u64) -> Counts {
        Counts { passed, failed }
    }

    #[test]
    fn strips_csi_osc_and_short_escapes() {
        assert_eq!(
            strip_ansi("\u{1b}[1m\u{1b}[32mok\u{1b}[39m\u{1b}[22m"),
            "ok"
        );
        assert_eq!(strip_ansi("a\u{1b}[2Kb\u{1b}[1Gc"), "abc");
        assert_eq!(
            strip_ansi("\u{1b}]8;;http://x\u{7}link\u{1b}]8;;\u{1b}\\!"),
            "link!"
        );
        assert_eq!(strip_ansi("x\u{1b}7y\u{1b}"), "xy");
        assert_eq!(strip_ansi("plain ✓ text"), "plain ✓ text");
    }

    #[test]
    fn sums_cargo_test_results_over_binaries_and_doc_tests() {
        let output = "\
running 12 tests
test a ... ok
test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s

running 3 tests
test b ... FAILED
test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.20s

   Doc-tests gantry_proto

running 0 tests
test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s
";
        assert_eq!(parse_cargo_test(output), counts(14, 1));
    }

    #[test]
    fn cargo_test_with_ansi_and_crlf() {
        let output = "\u{1b}[0mtest result: \u{1b}[32mok\u{1b}[0m. 5 passed; 0 failed; 0 ignored; \
                      0 measured; 3 filtered out; finished in 0.00s\r\n";
        assert_eq!(parse_cargo_test(output), counts(5, 0));
    }

    #[test]
    fn cargo_test_ignores_other_lines() {
        let output = "test result_parsing::works ... ok\nerror: test failed, to rerun pass `--lib`\n\
                      test result: garbage\n";
        assert_eq!(parse_cargo_test(output), Counts::default());
    }

    #[test]
    fn vitest_passed_only() {
        let output =
            " Test Files  3 passed (3)\n      Tests  9 passed (9)\n   Start at  10:00:00\n";
        assert_eq!(parse_vitest(output), counts(9, 0));
    }

    #[test]
    fn vitest_failed_passed_and_skipped() {
        let output = " Test Files  1 failed | 2 passed (3)\n      Tests  1 failed | 8 passed | 2 skipped (11)\n";
        assert_eq!(parse_vitest(output), counts(8, 1));
    }

    #[test]
    fn vitest_colored() {
        let output = "\u{1b}[2m Test Files \u{1b}[22m \u{1b}[1m\u{1b}[31m1 failed\u{1b}[39m\u{1b}[22m\u{1b}[2m | \
                      \u{1b}[22m\u{1b}[1m\u{1b}[32m2 passed\u{1b}[39m\u{1b}[22m\u{1b}[90m (3)\u{1b}[39m\n\
                      \u{1b}[2m      Tests \u{1b}[22m \u{1b}[1m\u{1b}[31m1 failed\u{1b}[39m\u{1b}[22m\u{1b}[2m | \
                      \u{1b}[22m\u{1b}[1m\u{1b}[32m8 passed\u{1b}[39m\u{1b}[22m\u{1b}[90m (9)\u{1b}[39m\n";
        assert_eq!(parse_vitest(output), counts(8, 1));
    }

    #[test]
    fn vitest_4_colored_with_skipped() {
        // Captured from Vitest 4.1 with FORCE_COLOR=1.
        let output = "\u{1b}[2m      Tests \u{1b}[22m \u{1b}[1m\u{1b}[32m49 passed\u{1b}[39m\u{1b}[22m\
                      \u{1b}[2m | \u{1b}[22m\u{1b}[33m6 skipped\u{1b}[39m\u{1b}[90m (55)\u{1b}[39m\n";
        assert_eq!(parse_vitest(output), counts(49, 0));
    }

    #[test]
    fn vitest_without_tests() {
        assert_eq!(parse_vitest("      Tests  no tests\n"), Counts::default());
        assert_eq!(parse_vitest("TestsPassing 3 passed\n"), Counts::default());
    }
}
