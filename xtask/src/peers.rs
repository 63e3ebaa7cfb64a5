//! The peer servers the remote-printer tests run against: real OctoPrint and Moonraker from PyPI,
//! each in its own Python virtual environment (their dependencies conflict), pinned by the lock
//! files in `xtask/peers/` (`pip freeze` output).
//!
//! The environments live in `$HOME/.cache/gantry/peers/{octoprint,moonraker}`, outside the
//! checkout, so a fresh clone on the same machine (CI) reuses them. Each holds a copy of the lock
//! file it was installed from; a different lock file reinstalls it. The tests find them through
//! `GANTRY_OCTOPRINT` and `GANTRY_MOONRAKER` (the programs), which `cargo xtask test` sets.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::context::Ctx;
use crate::process;

/// One peer: its name (the venv's directory and its program) and its lock file.
struct Peer {
    name: &'static str,
    lock: &'static str,
    env: &'static str,
}

const PEERS: &[Peer] = &[
    Peer {
        name: "octoprint",
        lock: "octoprint.txt",
        env: "GANTRY_OCTOPRINT",
    },
    Peer {
        name: "moonraker",
        lock: "moonraker.txt",
        env: "GANTRY_MOONRAKER",
    },
];

/// The copy of the lock file kept in an installed environment.
const MARKER: &str = "gantry-lock.txt";

/// The Python the environments are made with: Debian's own when present (its `venv` module and
/// headers come from the packages xtask installs), else the first `python3` on PATH.
fn python() -> PathBuf {
    let debian = Path::new("/usr/bin/python3");
    if debian.is_file() {
        debian.to_path_buf()
    } else {
        PathBuf::from("python3")
    }
}

fn program(venv: &Path, name: &str) -> PathBuf {
    if cfg!(windows) {
        venv.join("Scripts").join(format!("{name}.exe"))
    } else {
        venv.join("bin").join(name)
    }
}

/// Installs whatever peer environment is missing or stale and returns the environment variables
/// that point the tests at the programs.
pub(crate) fn install(ctx: &Ctx) -> Result<Vec<(&'static str, PathBuf)>> {
    let Some(cache) = &ctx.cache_dir else {
        bail!("no home directory (HOME) to keep the peer servers in");
    };
    let root = cache.join("peers");
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let mut vars = Vec::new();
    for peer in PEERS {
        let lock_path = ctx.root.join("xtask").join("peers").join(peer.lock);
        let lock = std::fs::read_to_string(&lock_path)
            .with_context(|| format!("reading {}", lock_path.display()))?;
        let venv = root.join(peer.name);
        let exe = program(&venv, peer.name);
        let installed = std::fs::read_to_string(venv.join(MARKER)).ok();
        if installed.as_deref() == Some(lock.as_str()) && exe.is_file() {
            println!("==> peers: {} is installed ({})", peer.name, venv.display());
        } else {
            println!(
                "==> peers: installing {} from xtask/peers/{} into {}",
                peer.name,
                peer.lock,
                venv.display()
            );
            if venv.exists() {
                std::fs::remove_dir_all(&venv)
                    .with_context(|| format!("removing the stale {}", venv.display()))?;
            }
            process::run(Command::new(python()).args(["-m", "venv"]).arg(&venv))
                .context("creating a Python virtual environment (Debian: python3-venv)")?;
            process::run(
                Command::new(program(&venv, "pip"))
                    .args([
                        "install",
                        "--disable-pip-version-check",
                        "--no-input",
                        "--quiet",
                        "-r",
                    ])
                    .arg(&lock_path),
            )
            .with_context(|| format!("installing {} with pip", peer.name))?;
            if !exe.is_file() {
                bail!(
                    "{} was installed but {} is missing",
                    peer.name,
                    exe.display()
                );
            }
            std::fs::write(venv.join(MARKER), &lock)
                .with_context(|| format!("writing {}", venv.join(MARKER).display()))?;
        }
        vars.push((peer.env, exe));
    }
    Ok(vars)
}
