//! `cargo xtask klipper-mcu`: the check against real Klipper firmware that CI cannot run. It
//! builds Klipper's Linux-process MCU (`src/linux`, "Linux process" in Klipper's menuconfig: the
//! firmware a Raspberry Pi runs as `[mcu host]`) from Klipper's source and runs Gantry's start-up
//! against it (crates/core/tests/klipper_linux_mcu.rs, with `GANTRY_KLIPPER_MCU` set).
//!
//! The source is `KLIPPER_SRC` when set, else a shallow clone from GitHub kept in
//! `~/.cache/gantry/klipper`. The build never writes into the source: Klipper's Makefile takes
//! its `.config` (`KCONFIG_CONFIG`) and output directory (`OUT`) from the command line, and both
//! live in `<target>/klipper-linux-mcu/`, so a user's own Klipper checkout keeps its board's
//! configuration. It needs make, gcc and python3 (Klipper's bundled kconfiglib and its code
//! generator); on Debian/Ubuntu the missing packages are installed as for `run` and `test`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context as _, Result, bail};

use crate::context::Ctx;
use crate::process;
use crate::setup;

/// Klipper's repository, cloned when `KLIPPER_SRC` is not set.
const KLIPPER_GIT: &str = "https://github.com/Klipper3d/klipper";

/// The build's Kconfig: the Linux-process MCU; `make olddefconfig` fills in the defaults.
const LINUX_CONFIG: &str = "CONFIG_MACH_LINUX=y\n";

/// The test that drives the firmware, and the variable that tells it where the firmware is.
const TEST: &str = "klipper_linux_mcu";
const TEST_VAR: &str = "GANTRY_KLIPPER_MCU";

/// Builds the Linux MCU and runs the test against it.
pub(crate) fn run() -> Result<ExitCode> {
    if !cfg!(target_os = "linux") {
        bail!("Klipper's Linux-process MCU builds and runs on Linux only");
    }
    let ctx = Ctx::new()?;
    let given = std::env::var_os("KLIPPER_SRC")
        .filter(|s| !s.is_empty())
        .map(PathBuf::from);
    let mut packages = vec!["build-essential", "python3"];
    if given.is_none() {
        packages.push("git");
    }
    setup::ensure_packages("klipper-mcu", &packages)?;
    let src = match given {
        Some(src) => {
            println!(
                "==> klipper-mcu: Klipper's source from KLIPPER_SRC: {}",
                src.display()
            );
            src
        }
        None => clone(&ctx)?,
    };
    if !src.join("src").join("linux").join("main.c").is_file() {
        bail!(
            "{} is not Klipper's source (no src/linux/main.c); set KLIPPER_SRC to a Klipper \
             checkout",
            src.display()
        );
    }
    let elf = build(&ctx, &src)?;
    println!("==> klipper-mcu: {}", elf.display());
    ctx.print_target_dir();
    println!("==> klipper-mcu: cargo test -p gantry-core --test {TEST} with {TEST_VAR} set");
    let status = process::status(
        ctx.cargo()
            .args(["test", "-p", "gantry-core", "--test", TEST, "--"])
            .args(["--include-ignored", "--nocapture"])
            .env(TEST_VAR, &elf)
            .env("NO_COLOR", "1"),
    )?;
    Ok(ExitCode::from(process::exit_code(status)))
}

/// `~/.cache/gantry/klipper`, cloned (depth 1) if it is not there yet.
fn clone(ctx: &Ctx) -> Result<PathBuf> {
    let Some(cache) = &ctx.cache_dir else {
        bail!("no home directory (HOME) to clone Klipper into; set KLIPPER_SRC instead");
    };
    let dir = cache.join("klipper");
    if dir.join("Makefile").is_file() {
        println!(
            "==> klipper-mcu: using the clone in {} (`git -C {} pull` updates it)",
            dir.display(),
            dir.display()
        );
        return Ok(dir);
    }
    std::fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
    println!(
        "==> klipper-mcu: git clone --depth 1 {KLIPPER_GIT} {}",
        dir.display()
    );
    process::run(
        Command::new("git")
            .args(["clone", "--depth", "1", KLIPPER_GIT])
            .arg(&dir),
    )
    .context("cloning Klipper (no network? set KLIPPER_SRC to a Klipper checkout)")?;
    Ok(dir)
}

/// `make olddefconfig` and `make` for the Linux MCU, out of tree; returns `out/klipper.elf`.
fn build(ctx: &Ctx, src: &Path) -> Result<PathBuf> {
    let dir = ctx.target_dir.path.join("klipper-linux-mcu");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let config = dir.join("linux.config");
    let current = std::fs::read_to_string(&config).unwrap_or_default();
    if !current.lines().any(|l| l.trim() == LINUX_CONFIG.trim()) {
        std::fs::write(&config, LINUX_CONFIG)
            .with_context(|| format!("writing {}", config.display()))?;
    }
    // Klipper's Makefile joins paths to OUT without a separator.
    let out = format!("{}/", dir.join("out").display());
    let make = |target: Option<&str>| {
        let mut cmd = Command::new("make");
        cmd.arg("-C")
            .arg(src)
            .arg(format!("KCONFIG_CONFIG={}", config.display()))
            .arg(format!("OUT={out}"));
        if let Some(target) = target {
            cmd.arg(target);
        } else {
            let jobs = std::thread::available_parallelism().map_or(1, usize::from);
            cmd.arg(format!("-j{jobs}"));
        }
        cmd
    };
    println!(
        "==> klipper-mcu: building the Linux MCU in {}",
        dir.display()
    );
    process::run(&mut make(Some("olddefconfig"))).context("Klipper's make olddefconfig")?;
    process::run(&mut make(None)).context("building Klipper's Linux MCU")?;
    let elf = dir.join("out").join("klipper.elf");
    if !elf.is_file() {
        bail!("make succeeded but {} is missing", elf.display());
    }
    Ok(elf)
}
