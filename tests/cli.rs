//! The `gantry` command line as a user meets it: help, version, and clear errors on bad input.

use std::process::Command;

fn gantry(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(args)
        .output()
        .expect("gantry runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_lists_the_subcommands() {
    let (ok, stdout, _) = gantry(&["--help"]);
    assert!(ok);
    for sub in ["twin", "serve", "parsedump", "sim", "version"] {
        assert!(
            stdout.lines().any(|l| l.trim_start().starts_with(sub)),
            "--help lacks {sub}:\n{stdout}"
        );
    }
}

#[test]
fn version_in_text_and_json() {
    let (ok, stdout, _) = gantry(&["version"]);
    assert!(ok);
    assert_eq!(
        stdout.trim(),
        format!("gantry {}", env!("CARGO_PKG_VERSION"))
    );
    let (ok, stdout, _) = gantry(&["version", "--json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    let (ok, stdout, _) = gantry(&["--version"]);
    assert!(ok);
    assert!(stdout.contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn twin_reports_a_missing_file_clearly() {
    let (ok, _, stderr) = gantry(&[
        "twin",
        "/nonexistent/part.gcode",
        "--screenshot",
        "/tmp/never.png",
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("cannot read G-code file /nonexistent/part.gcode"),
        "unclear error: {stderr}"
    );
}

#[test]
fn twin_reports_a_bad_printer_config_with_its_place() {
    let dir = std::env::temp_dir().join(format!("gantry-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let cfg = dir.join("printer.cfg");
    // The simulated board's config, one value broken: the twin builds the whole printer (as
    // klippy does), so the rest must be complete for the stepper's error to be the first.
    let (ok, example, _) = gantry(&["sim", "--example-config"]);
    assert!(ok, "the example config");
    let mut section = String::new();
    let mut broken_line = 0;
    let text: Vec<String> = example
        .lines()
        .enumerate()
        .map(|(i, line)| {
            if line.starts_with('[') {
                section = line.to_owned();
            }
            if section == "[stepper_x]" && line.starts_with("position_max") {
                broken_line = i + 1;
                "position_max: wide".to_owned()
            } else {
                line.to_owned()
            }
        })
        .collect();
    assert!(broken_line > 0, "stepper_x has a position_max: {example}");
    std::fs::write(&cfg, text.join("\n")).expect("write");
    let (ok, _, stderr) = gantry(&[
        "twin",
        "--config",
        cfg.to_str().expect("utf-8"),
        "--screenshot",
        "/tmp/never.png",
    ]);
    assert!(!ok);
    let expected = format!(
        "printer.cfg:{broken_line}: Unable to parse option 'position_max' in section 'stepper_x'"
    );
    assert!(stderr.contains(&expected), "unclear error: {stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bad_sizes_are_refused_by_the_parser() {
    let (ok, _, stderr) = gantry(&["twin", "--size", "big", "--screenshot", "/tmp/never.png"]);
    assert!(!ok);
    assert!(stderr.contains("WIDTHxHEIGHT"), "{stderr}");
}

#[test]
fn sim_replay_reports_where_the_steppers_ended() {
    let oracle = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/oracle");
    let dict = oracle.join("dict/atmega2560.dict");
    let serial = oracle.join("cases/b_cartesian_shaper_pa/output.serial");
    let (ok, stdout, stderr) = gantry(&[
        "sim",
        "replay",
        "--json",
        "--dict",
        dict.to_str().expect("utf-8"),
        serial.to_str().expect("utf-8"),
    ]);
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");
    assert_eq!(v["fault"], serde_json::Value::Null);
    let positions: Vec<i64> = v["steppers"]
        .as_array()
        .expect("steppers")
        .iter()
        .map(|s| s["position"].as_i64().expect("int"))
        .collect();
    assert_eq!(
        positions,
        [0, 0, 4000, 72],
        "X, Y, Z and extruder, as the oracle README lists"
    );
}

#[test]
fn batch_bench_reports_the_run_and_the_step_loops_instruction_set() {
    let case = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/oracle/cases/a_cartesian_moves");
    let dict = case.join("../../dict/atmega2560.dict");
    let dir = std::env::temp_dir().join(format!("gantry-batch-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let out = dir.join("out.serial");
    let path = |p: &std::path::Path| p.to_str().expect("utf-8").to_owned();
    let (ok, stdout, stderr) = gantry(&[
        "batch",
        "--bench",
        "--config",
        &path(&case.join("printer.cfg")),
        "--dict",
        &path(&dict),
        "-i",
        &path(&case.join("input.gcode")),
        "-o",
        &path(&out),
    ]);
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    let written = std::fs::metadata(&out).expect("the stream").len();
    std::fs::remove_dir_all(&dir).expect("clean up");
    assert_eq!(v["output_bytes"].as_u64(), Some(written), "{v}");
    assert!(v["messages"].as_u64().expect("messages") > 0, "{v}");
    // Timings compare across machines only where the same copy of the step loops ran.
    let isa = v["isa"].as_str().expect("isa");
    assert!(["baseline", "avx2", "avx512"].contains(&isa), "{isa}");
}

#[test]
fn sim_replay_bench_times_the_print_alike_at_16_and_180_mhz() {
    // Cases a and g are the same moves on a 16 MHz AVR and a 180 MHz STM32: the last step must
    // come at the same print time (the README gives 8.385 s for the whole print, dwell included).
    let oracle = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/oracle");
    let bench = |case: &str, dict: &str| -> serde_json::Value {
        let (ok, stdout, stderr) = gantry(&[
            "sim",
            "replay",
            "--bench",
            "--dict",
            oracle.join("dict").join(dict).to_str().expect("utf-8"),
            oracle
                .join("cases")
                .join(case)
                .join("output.serial")
                .to_str()
                .expect("utf-8"),
        ]);
        assert!(ok, "{stderr}");
        serde_json::from_str(&stdout).expect("JSON")
    };
    let a = bench("a_cartesian_moves", "atmega2560.dict");
    let g = bench("g_cartesian_moves_stm32f446", "stm32f446.dict");
    let (ta, tg) = (
        a["print_time_s"].as_f64().expect("a time"),
        g["print_time_s"].as_f64().expect("g time"),
    );
    assert!((ta - tg).abs() < 1e-6, "16 MHz {ta} s vs 180 MHz {tg} s");
    assert!(ta > 7.9 && ta < 8.385, "last step at {ta} s");
    assert_eq!(a["steps"], 76_960);
    assert!(a["steps_per_s"].as_f64().expect("rate") > 0.0);
}

/// The shared libraries an ELF64 little-endian executable names as needed (`DT_NEEDED`), read
/// from its program headers and dynamic section.
#[cfg(target_os = "linux")]
fn needed_libraries(path: &str) -> Vec<String> {
    let elf = std::fs::read(path).expect("read the executable");
    let u16_at = |o: usize| u16::from_le_bytes(elf[o..o + 2].try_into().expect("2 bytes"));
    let u32_at = |o: usize| u32::from_le_bytes(elf[o..o + 4].try_into().expect("4 bytes"));
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().expect("8 bytes"));
    assert_eq!(&elf[..5], b"\x7fELF\x02", "{path}: not an ELF64 file");
    let (phoff, phentsize, phnum) = (u64_at(0x20) as usize, u16_at(0x36), u16_at(0x38));
    let headers: Vec<usize> = (0..usize::from(phnum))
        .map(|i| phoff + i * usize::from(phentsize))
        .collect();
    // A virtual address inside a PT_LOAD segment → its file offset.
    let file_offset = |vaddr: u64| -> usize {
        headers
            .iter()
            .filter(|&&h| u32_at(h) == 1)
            .find_map(|&h| {
                let (offset, start, size) = (u64_at(h + 8), u64_at(h + 16), u64_at(h + 32));
                (start..start + size)
                    .contains(&vaddr)
                    .then(|| (vaddr - start + offset) as usize)
            })
            .expect("address in a loaded segment")
    };
    let dynamic = headers
        .iter()
        .find(|&&h| u32_at(h) == 2)
        .expect("a dynamic section");
    let (start, size) = (u64_at(dynamic + 8) as usize, u64_at(dynamic + 32) as usize);
    let entries: Vec<(u64, u64)> = (start..start + size)
        .step_by(16)
        .map(|o| (u64_at(o), u64_at(o + 8)))
        .take_while(|&(tag, _)| tag != 0)
        .collect();
    let strtab = entries
        .iter()
        .find(|&&(tag, _)| tag == 5)
        .map(|&(_, addr)| file_offset(addr))
        .expect("DT_STRTAB");
    entries
        .iter()
        .filter(|&&(tag, _)| tag == 1)
        .map(|&(_, name)| {
            let from = strtab + name as usize;
            let len = elf[from..].iter().position(|&b| b == 0).expect("NUL");
            String::from_utf8_lossy(&elf[from..from + len]).into_owned()
        })
        .collect()
}

/// Regression (ARCHITECTURE.md, "Three executables"): `gantry` linked the twin's engine, 69 MB
/// of Bevy and wgpu code and ~310,000 relocations that every subcommand's start paid for,
/// because its command line parsed the twin's options with the twin's types. `gantry twin` now
/// passes its arguments on to `gantry-twin`; nothing of Bevy may be in `gantry` (its crates'
/// names are in every build's symbols and panic locations).
#[test]
fn the_command_line_links_no_twin_engine() {
    let contains = |path: &str, needle: &[u8]| {
        let bytes = std::fs::read(path).expect("read the executable");
        bytes.windows(needle.len()).any(|w| w == needle)
    };
    assert!(
        !contains(env!("CARGO_BIN_EXE_gantry"), b"bevy_ecs"),
        "gantry links Bevy"
    );
    assert!(
        contains(env!("CARGO_BIN_EXE_gantry-twin"), b"bevy_ecs"),
        "gantry-twin is the twin"
    );
    // The arguments reach the twin: its own parser refuses a bad value, and its help is
    // `gantry twin`'s.
    let (ok, _, stderr) = gantry(&["twin", "--view", "sideways"]);
    assert!(!ok);
    assert!(
        stderr.contains("'sideways' is not iso, top, front or follow"),
        "{stderr}"
    );
    let (ok, stdout, _) = gantry(&["twin", "--help"]);
    assert!(ok);
    assert!(
        stdout.contains("Usage: gantry twin [OPTIONS] [FILE]"),
        "{stdout}"
    );
}

/// Regression (ARCHITECTURE.md, "Three executables"): `gantry` loaded WebKitGTK and ~160 other
/// libraries before `main` (75 MB resident for `gantry batch`). The command line must link no
/// desktop library; the desktop executable beside it does.
#[cfg(target_os = "linux")]
#[test]
fn the_command_line_links_no_desktop_library() {
    let desktop = |libs: &[String]| {
        libs.iter()
            .filter(|l| l.starts_with("libwebkit2gtk") || l.starts_with("libgtk-"))
            .cloned()
            .collect::<Vec<_>>()
    };
    let cli = needed_libraries(env!("CARGO_BIN_EXE_gantry"));
    assert!(desktop(&cli).is_empty(), "gantry links {cli:?}");
    assert!(
        cli.len() <= 8,
        "gantry links {} libraries: {cli:?}",
        cli.len()
    );
    let app = needed_libraries(env!("CARGO_BIN_EXE_gantry-desktop"));
    assert!(!desktop(&app).is_empty(), "gantry-desktop links {app:?}");
}

/// Regression: a desktop app killed by a signal left its `gantry sim --tcp` child running for
/// good. The child now gets a pipe as its input and `--until-stdin-closes`: when the pipe's
/// other end goes, with whatever process held it, the sim stops and exits cleanly.
#[test]
fn the_sim_ends_when_its_input_closes() {
    use std::io::BufRead as _;
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    let mut child = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["sim", "--tcp", "127.0.0.1:0", "--until-stdin-closes"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("gantry sim starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut line)
        .expect("the sim says where it serves");
    assert!(line.starts_with("gantry-sim: serving on tcp"), "{line}");
    // Still serving while its input is open.
    std::thread::sleep(Duration::from_millis(300));
    assert!(matches!(child.try_wait(), Ok(None)), "the sim ended early");
    drop(child.stdin.take());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the sim still runs 20 s after its input closed");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}
