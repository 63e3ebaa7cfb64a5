//! House rules that a test can check: every Rust file documents itself with a `//!` header, and
//! the pure crates keep I/O crates out of their dependencies (ARCHITECTURE.md's invariants).

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if path.is_dir() {
            if !matches!(name.as_ref(), "target" | "node_modules" | "gen" | "dist")
                && !name.starts_with('.')
            {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_rust_file_starts_with_a_module_doc() {
    let mut files = Vec::new();
    for dir in ["src-tauri", "crates", "sim", "twin", "xtask", "tests"] {
        rust_files(&root().join(dir), &mut files);
    }
    assert!(
        files.len() > 20,
        "found only {} files: is the walk wrong?",
        files.len()
    );
    let missing: Vec<_> = files
        .iter()
        .filter(|f| {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            !text.trim_start().starts_with("//!")
        })
        .map(|f| f.strip_prefix(root()).unwrap_or(f).display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "files without a `//!` module doc: {missing:?}"
    );
}

/// The `[dependencies]` table of a manifest, as dependency names.
fn dependencies(manifest: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(manifest).expect("manifest");
    let mut in_deps = false;
    let mut deps = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_deps = line == "[dependencies]";
        } else if in_deps
            && !line.is_empty()
            && !line.starts_with('#')
            && let Some(name) = line.split(['=', '.']).next()
        {
            deps.push(name.trim().to_owned());
        }
    }
    deps
}

#[test]
fn pure_crates_have_no_io_dependencies() {
    const IO: &[&str] = &[
        "tokio",
        "async-std",
        "smol",
        "serialport",
        "reqwest",
        "ureq",
        "hyper",
        "rusqlite",
        "mdns-sd",
        "tokio-tungstenite",
        "tauri",
        "bevy",
        "gantry-core",
    ];
    for krate in ["crates/proto", "crates/motion", "sim"] {
        let deps = dependencies(&root().join(krate).join("Cargo.toml"));
        let bad: Vec<_> = deps.iter().filter(|d| IO.contains(&d.as_str())).collect();
        assert!(bad.is_empty(), "{krate} depends on I/O crates {bad:?}");
    }
    let sim = dependencies(&root().join("sim/Cargo.toml"));
    assert!(
        !sim.iter()
            .any(|d| d.starts_with("gantry-") && d != "gantry-proto"),
        "sim may depend on gantry-proto only: {sim:?}"
    );
    let core = dependencies(&root().join("crates/core/Cargo.toml"));
    assert!(
        !core.iter().any(|d| d == "tauri" || d == "bevy"),
        "core must not depend on the shells"
    );
}
