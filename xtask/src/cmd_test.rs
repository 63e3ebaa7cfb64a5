//! `cargo xtask test [--quick]`: every check in order, continuing after failures, then a summary
//! table and, as the very last line, `total: N passed, N failed`.
//!
//! Steps: ui build, ui check, cargo fmt, cargo clippy, tauri-driver, Xvfb, peer servers, cargo
//! test, ui test.
//! `--quick` (and non-Linux systems) skip tauri-driver and Xvfb and run cargo test without
//! `--include-ignored`, so the desktop end-to-end, twin screenshot and remote-printer tests do not
//! run.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Result, bail};

use crate::context::Ctx;
use crate::counts::{self, Counts};
use crate::peers;
use crate::process;
use crate::setup;
use crate::summary::{self, Kind, Status, StepReport};
use crate::xvfb::Xvfb;

/// The tauri-driver release the desktop end-to-end test was verified with.
const TAURI_DRIVER_VERSION: &str = "2.1.0";
/// Where webkit2gtk-driver installs the WebDriver server that tauri-driver starts.
const WEBKIT_WEBDRIVER: &str = "/usr/bin/WebKitWebDriver";

/// Runs the steps and keeps their reports.
struct Runner {
    reports: Vec<StepReport>,
    total_steps: usize,
}

impl Runner {
    fn begin(&self, name: &str) -> Instant {
        println!(
            "\n==> [{}/{}] {name}",
            self.reports.len() + 1,
            self.total_steps
        );
        Instant::now()
    }

    fn finish(&mut self, name: &str, started: Instant, status: Status, kind: Kind) {
        let elapsed = started.elapsed();
        let verdict = if status == Status::Ok { "ok" } else { "FAILED" };
        println!(
            "==> {name}: {verdict} in {}",
            summary::format_duration(elapsed)
        );
        self.reports.push(StepReport {
            name: name.to_owned(),
            status,
            elapsed: Some(elapsed),
            kind,
        });
    }

    /// A step that passes or fails as a whole (`Kind::Gate` or `Kind::Setup`).
    fn step(&mut self, name: &str, kind: Kind, f: impl FnOnce() -> Result<()>) {
        let started = self.begin(name);
        let status = match f() {
            Ok(()) => Status::Ok,
            Err(err) => {
                eprintln!("error: {err:#}");
                Status::Failed
            }
        };
        self.finish(name, started, status, kind)
    }

    /// A test runner: its stdout is teed and parsed with `parse`.
    fn tests(&mut self, name: &str, mut cmd: Command, parse: fn(&str) -> Counts) {
        let started = self.begin(name);
        let (status, counts) = match process::run_tee(&mut cmd) {
            Ok((exit, output)) => {
                let counts = parse(&output);
                if exit.success() {
                    (Status::Ok, counts)
                } else {
                    eprintln!("error: `{}` failed ({exit})", process::describe(&cmd));
                    (Status::Failed, counts)
                }
            }
            Err(err) => {
                eprintln!("error: {err:#}");
                (Status::Failed, Counts::default())
            }
        };
        self.finish(name, started, status, Kind::Tests(counts))
    }

    fn skip(&mut self, name: &str, why: &str) {
        println!(
            "\n==> [{}/{}] {name}: skipped ({why})",
            self.reports.len() + 1,
            self.total_steps
        );
        self.reports.push(StepReport {
            name: name.to_owned(),
            status: Status::Skipped,
            elapsed: None,
            kind: Kind::Setup,
        });
    }
}

/// Installs tauri-driver into `<cache>/tools` unless it is there, and checks for WebKitWebDriver.
fn tauri_driver(ctx: &Ctx, driver: Option<&Path>) -> Result<()> {
    let (Some(driver), Some(cache)) = (driver, &ctx.cache_dir) else {
        bail!("no home directory (HOME) to keep tools in");
    };
    if driver.is_file() {
        println!("==> tauri-driver: {} is there", driver.display());
    } else {
        let tools = cache.join("tools");
        println!(
            "==> tauri-driver: cargo install tauri-driver {TAURI_DRIVER_VERSION} into {}",
            tools.display()
        );
        // Not `ctx.cargo()`: the install builds in its own temporary target directory.
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        process::run(
            Command::new(cargo)
                .args([
                    "install",
                    "tauri-driver",
                    "--locked",
                    "--version",
                    TAURI_DRIVER_VERSION,
                ])
                .arg("--root")
                .arg(&tools),
        )?;
    }
    if !Path::new(WEBKIT_WEBDRIVER).is_file() {
        bail!("{WEBKIT_WEBDRIVER} not found (Debian package webkit2gtk-driver)");
    }
    Ok(())
}

/// Runs `cargo xtask test [--quick]`.
pub(crate) fn test(quick: bool) -> Result<ExitCode> {
    let ctx = Ctx::new()?;
    let suite_started = Instant::now();
    // Packages and Node are prerequisites of every step: without them, stop here.
    setup::prerequisites(&ctx)?;

    let linux = cfg!(target_os = "linux");
    let full = !quick && linux;
    let mut runner = Runner {
        reports: Vec::new(),
        total_steps: 9,
    };

    // 1. The UI: built first, because the app embeds ui/dist.
    runner.step("ui build", Kind::Gate, || setup::ui_build(&ctx));
    runner.step("ui check", Kind::Gate, || {
        process::run(ctx.npm().args(["run", "check"]))
    });

    // 2–3. Formatting and lints.
    runner.step("cargo fmt --check", Kind::Gate, || {
        process::run(ctx.cargo().args(["fmt", "--all", "--check"]))
    });
    runner.step("cargo clippy -D warnings", Kind::Gate, || {
        let args = [
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ];
        process::run(ctx.cargo().args(args))
    });

    // 4–5. What the ignored tests need: tauri-driver + WebKitWebDriver, and an X server.
    let driver: Option<PathBuf> = ctx.cache_dir.as_ref().map(|cache| {
        cache
            .join("tools")
            .join("bin")
            .join(format!("tauri-driver{}", std::env::consts::EXE_SUFFIX))
    });
    let skip_reason = if quick { "--quick" } else { "Linux only" };
    let mut xvfb = None;
    if full {
        runner.step("tauri-driver", Kind::Setup, || {
            tauri_driver(&ctx, driver.as_deref())
        });
        runner.step("xvfb", Kind::Setup, || {
            let server = Xvfb::start()?;
            println!("==> xvfb: DISPLAY={}", server.display());
            xvfb = Some(server);
            Ok(())
        });
    } else {
        runner.skip("tauri-driver", skip_reason);
        runner.skip("xvfb", skip_reason);
    }
    // The real OctoPrint and Moonraker the remote-printer tests start (ignored tests).
    let mut peer_vars = Vec::new();
    if full {
        runner.step("peer servers", Kind::Setup, || {
            peer_vars = peers::install(&ctx)?;
            Ok(())
        });
    } else {
        runner.skip("peer servers", skip_reason);
    }

    // 6. Every Rust test; with the environment above, the ignored ones too.
    let mut cmd = ctx.cargo();
    cmd.args(["test", "--workspace", "--no-fail-fast"])
        .env("NO_COLOR", "1");
    if full {
        cmd.args(["--", "--include-ignored"])
            .env("GANTRY_E2E", "1")
            .env("WGPU_BACKEND", "vulkan");
        if let Some(driver) = &driver {
            cmd.env("GANTRY_TAURI_DRIVER", driver);
        }
        cmd.envs(peer_vars.iter().map(|(k, v)| (k, v)));
        if let Some(server) = &xvfb {
            // Windows must open on Xvfb, not on the developer's Wayland session.
            cmd.env("DISPLAY", server.display())
                .env_remove("WAYLAND_DISPLAY");
        }
    }
    let name = if full {
        "cargo test --include-ignored"
    } else {
        "cargo test"
    };
    runner.tests(name, cmd, counts::parse_cargo_test);

    // 7. The UI's tests, the integration test against the gantry binary built by cargo test.
    let bin = ctx.gantry_bin();
    let mut cmd = ctx.npm();
    cmd.arg("test")
        .env("GANTRY_BIN", &bin)
        .env("NO_COLOR", "1")
        .env("FORCE_COLOR", "0");
    if !bin.is_file() {
        eprintln!(
            "warning: {} does not exist (cargo test did not build it)",
            bin.display()
        );
    }
    runner.tests("ui test", cmd, counts::parse_vitest);

    drop(xvfb);
    let failed = runner.reports.iter().any(|r| r.status == Status::Failed);
    println!(
        "\n==> summary ({} in all)",
        summary::format_duration(suite_started.elapsed())
    );
    println!("{}", summary::format_summary(&runner.reports));
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
