//! Setup shared by `run` and `test`: Debian/Ubuntu system packages, Node.js/npm, and the web UI
//! (`npm ci` when needed, then `npm run build`, which must happen before cargo builds the app
//! because the app embeds ui/dist).

use std::path::Path;
use std::process::Command;
use std::time::SystemTime;

use anyhow::{Context as _, Result, bail};

use crate::context::{Ctx, npm_program};
use crate::process::{self, Reported, probe};

/// Debian packages for building and running the Tauri app and the Bevy twin, rendering with
/// software Vulkan (lavapipe), and the desktop end-to-end test (Xvfb, WebKitWebDriver); the set
/// measured sufficient on Debian 12. `run` alone would not need xvfb, webkit2gtk-driver and
/// xauth, but one list keeps the two commands' setup identical.
pub(crate) const PACKAGES: &[&str] = &[
    "libwebkit2gtk-4.1-dev",
    "libgtk-3-dev",
    "libayatana-appindicator3-dev",
    "librsvg2-dev",
    "libssl-dev",
    "pkg-config",
    "build-essential",
    "libxdo-dev",
    "libasound2-dev",
    "libudev-dev",
    "libwayland-dev",
    "libxkbcommon-dev",
    "mesa-vulkan-drivers",
    "libvulkan1",
    "xvfb",
    "webkit2gtk-driver",
    "xauth",
    "libgl1-mesa-dri",
    "libegl1",
    "libegl-mesa0",
    "libgles2",
    // `kill`, which the end-to-end tests use to stop tauri-driver and `gantry sim` by signal.
    "procps",
    // The peer servers (OctoPrint, Moonraker) in Python virtual environments: venv, headers and a
    // compiler for netifaces, libsodium for Moonraker's libnacl; `ip netns` for the mDNS test.
    "python3-venv",
    "python3-dev",
    "libsodium23",
    "iproute2",
];

/// Oldest Node.js (major, minor) accepted when ui/package.json names none in `engines.node`.
const NODE_MIN_DEFAULT: (u32, u32) = (18, 0);

/// Whether an os-release file describes Debian or a derivative (Ubuntu, …).
pub(crate) fn is_debian_like(os_release: &str) -> bool {
    os_release.lines().any(|line| {
        let Some((key, value)) = line.split_once('=') else {
            return false;
        };
        let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
        (key == "ID" || key == "ID_LIKE")
            && value
                .split_whitespace()
                .any(|id| id == "debian" || id == "ubuntu")
    })
}

/// The effective user id from `/proc/self/status` text (`Uid:` then the real, effective,
/// saved and filesystem ids, tab-separated).
pub(crate) fn effective_uid(proc_status: &str) -> Option<u32> {
    let line = proc_status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// (major, minor) from a version such as `v20.11.1` (`node --version`) or `20.19`.
pub(crate) fn node_version(version: &str) -> Option<(u32, u32)> {
    let mut parts = version.trim().trim_start_matches('v').split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().map_or(Some(0), |minor| minor.parse().ok())?;
    Some((major, minor))
}

/// The minimum in package.json's `"engines": { "node": ">=20.19" }`, if it has that form.
/// A scan for this one field keeps xtask free of a JSON dependency.
pub(crate) fn engines_node_min(package_json: &str) -> Option<(u32, u32)> {
    let engines = &package_json[package_json.find("\"engines\"")?..];
    let engines = &engines[..engines.find('}')?];
    let node = &engines[engines.find("\"node\"")? + "\"node\"".len()..];
    let value = node
        .trim_start()
        .strip_prefix(':')?
        .trim_start()
        .strip_prefix('"')?;
    let value = &value[..value.find('"')?];
    node_version(value.trim().strip_prefix(">=")?)
}

fn is_debian() -> bool {
    if !cfg!(target_os = "linux") {
        return false;
    }
    match std::fs::read_to_string("/etc/os-release") {
        Ok(text) if is_debian_like(&text) => true,
        _ => process::which("apt-get").is_some(),
    }
}

fn is_root() -> bool {
    if let Some(uid) = std::fs::read_to_string("/proc/self/status")
        .ok()
        .as_deref()
        .and_then(effective_uid)
    {
        return uid == 0;
    }
    probe(Command::new("id").arg("-u")).is_some_and(|uid| uid == "0")
}

fn is_installed(package: &str) -> bool {
    probe(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))
        .is_some_and(|status| status.contains("ok installed"))
}

/// apt-get install as root, waiting for a concurrent apt/dpkg run instead of failing.
fn apt_install(packages: &[&str]) -> Result<()> {
    process::run(Command::new("apt-get").args(["-o", "DPkg::Lock::Timeout=600", "update"]))?;
    process::run(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args([
                "-o",
                "DPkg::Lock::Timeout=600",
                "install",
                "-y",
                "--no-install-recommends",
            ])
            .args(packages),
    )
}

/// Step 1: system packages. Installs what is missing when root on Debian/Ubuntu; otherwise prints
/// the one command to run and fails. On other systems it only says what is needed.
pub(crate) fn system_packages() -> Result<()> {
    if !cfg!(target_os = "linux") {
        println!(
            "==> system packages: none to install on this OS (needs a C toolchain: Xcode command \
             line tools on macOS; MSVC build tools and WebView2 on Windows)"
        );
        return Ok(());
    }
    ensure_packages("system packages", PACKAGES)
}

/// Installs what of `packages` is missing for `purpose` (a command's name): with apt-get when
/// root on Debian/Ubuntu; otherwise prints the one command to run and fails. On other systems it
/// only says what is needed.
pub(crate) fn ensure_packages(purpose: &str, packages: &[&str]) -> Result<()> {
    if !is_debian() {
        println!(
            "==> {purpose}: not Debian/Ubuntu, so packages are not checked; it needs your \
             distribution's equivalents of: {}",
            packages.join(" ")
        );
        return Ok(());
    }
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !is_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        println!(
            "sudo apt-get install -y --no-install-recommends {}",
            missing.join(" ")
        );
        return Err(Reported.into());
    }
    println!("==> {purpose}: installing {}", missing.join(" "));
    apt_install(&missing)
}

/// Node and npm versions, if both run.
fn node_versions() -> (Option<String>, Option<String>) {
    let node = probe(Command::new("node").arg("--version"));
    let npm = probe(Command::new(npm_program()).arg("--version"));
    (node, npm)
}

/// Step 2: Node.js (at least ui/package.json's `engines.node`, else 18) and npm, installed with
/// apt-get when missing and root on Debian/Ubuntu.
pub(crate) fn node(ctx: &Ctx) -> Result<()> {
    let (min_major, min_minor) = std::fs::read_to_string(ctx.ui_dir().join("package.json"))
        .ok()
        .as_deref()
        .and_then(engines_node_min)
        .unwrap_or(NODE_MIN_DEFAULT);
    println!("==> node/npm: checking for node >= {min_major}.{min_minor} and npm");
    let (mut node, mut npm) = node_versions();
    if (node.is_none() || npm.is_none()) && is_debian() && is_root() {
        println!("==> node/npm: installing nodejs npm with apt-get");
        apt_install(&["nodejs", "npm"])?;
        (node, npm) = node_versions();
    }
    let version = node.as_deref().and_then(node_version);
    match (version, &npm) {
        (Some(version), Some(_)) if version >= (min_major, min_minor) => Ok(()),
        _ => bail!(
            "the web UI (ui/) is built with Node.js >= {min_major}.{min_minor} and npm; found \
             node {}, npm {}. Install them from https://nodejs.org or your package manager \
             (Debian/Ubuntu: `apt-get install nodejs npm`, if its version is new enough), then \
             run this again",
            node.as_deref().unwrap_or("(none)"),
            npm.as_deref().unwrap_or("(none)"),
        ),
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    path.metadata().and_then(|m| m.modified()).ok()
}

/// Whether `npm ci` must run: no node_modules, or package-lock.json is newer than the copy npm
/// keeps in node_modules/.package-lock.json.
fn needs_npm_ci(ui: &Path) -> bool {
    let installed = modified(&ui.join("node_modules").join(".package-lock.json"));
    let wanted = modified(&ui.join("package-lock.json"));
    match (installed, wanted) {
        (Some(installed), Some(wanted)) => wanted > installed,
        _ => true,
    }
}

/// Step 3: `npm ci` when needed, then `npm run build` (Vite → ui/dist).
pub(crate) fn ui_build(ctx: &Ctx) -> Result<()> {
    let ui = ctx.ui_dir();
    if !ui.join("package.json").is_file() {
        bail!(
            "{} not found: the web UI is missing",
            ui.join("package.json").display()
        );
    }
    if needs_npm_ci(&ui) {
        println!("==> ui: npm ci (ui/node_modules missing or older than package-lock.json)");
        process::run(ctx.npm().arg("ci")).context("installing the UI's dependencies")?;
    }
    println!("==> ui: npm run build (Vite -> ui/dist, embedded by the app build)");
    process::run(ctx.npm().args(["run", "build"])).context("building the web UI")
}

/// The setup both commands share apart from the UI build: system packages, Node/npm, and the
/// target-dir line. Failures here stop the command; `test` runs the UI build as its own step so
/// that the rest still runs when it fails.
pub(crate) fn prerequisites(ctx: &Ctx) -> Result<()> {
    system_packages()?;
    node(ctx)?;
    ctx.print_target_dir();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_debian_and_derivatives() {
        assert!(is_debian_like(
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n"
        ));
        assert!(is_debian_like("ID=ubuntu\nID_LIKE=debian\n"));
        assert!(is_debian_like("ID=linuxmint\nID_LIKE=\"ubuntu debian\"\n"));
        assert!(!is_debian_like("ID=fedora\n"));
        assert!(!is_debian_like("ID=arch\nNAME=\"debian-ish\"\n"));
    }

    #[test]
    fn reads_the_effective_uid() {
        assert_eq!(effective_uid("Name:\tx\nUid:\t1000\t0\t0\t0\n"), Some(0));
        assert_eq!(effective_uid("Uid:\t1000\t1000\t1000\t1000\n"), Some(1000));
        assert_eq!(effective_uid("Name:\tx\n"), None);
    }

    #[test]
    fn parses_node_versions() {
        assert_eq!(node_version("v20.11.1\n"), Some((20, 11)));
        assert_eq!(node_version("v18.19.0"), Some((18, 19)));
        assert_eq!(node_version("22"), Some((22, 0)));
        assert_eq!(node_version("garbage"), None);
        assert!(node_version("v20.20.2") >= Some((20, 19)));
        assert!(node_version("v18.19.0") < Some((20, 19)));
    }

    #[test]
    fn reads_the_engines_minimum() {
        let package = r#"{ "name": "ui", "engines": {
            "node": ">=20.19" }, "scripts": { "node": "x" } }"#;
        assert_eq!(engines_node_min(package), Some((20, 19)));
        assert_eq!(
            engines_node_min(r#"{"engines":{"npm":">=9"},"node":">=1"}"#),
            None
        );
        assert_eq!(
            engines_node_min(r#"{"engines":{"node":"^20.19 || >=22.12"}}"#),
            None
        );
        assert_eq!(engines_node_min(r#"{"name":"ui"}"#), None);
    }
}
