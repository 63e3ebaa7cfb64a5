//! `gantry parsedump` against Klipper's own decoding: for every oracle case, the output of
//! `gantry parsedump DICT output.serial` equals `output.txt` (what Klipper's parsedump.py printed
//! for the same bytes) line for line.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Command;

fn oracle() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/oracle")
}

fn expected_lines(case: &Path) -> String {
    let plain = case.join("output.txt");
    if plain.exists() {
        return std::fs::read_to_string(plain).expect("readable");
    }
    let gz = std::fs::File::open(case.join("output.txt.gz")).expect("output.txt or output.txt.gz");
    let mut text = String::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_string(&mut text)
        .expect("gzip text");
    text
}

fn check_case(name: &str, dict: &str) {
    let case = oracle().join("cases").join(name);
    let out = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .arg("parsedump")
        .arg(oracle().join("dict").join(dict))
        .arg(case.join("output.serial"))
        .output()
        .expect("gantry runs");
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{name}: problems reported: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ours = String::from_utf8(out.stdout).expect("UTF-8");
    let theirs = expected_lines(&case);
    let (ours, theirs): (Vec<_>, Vec<_>) = (ours.lines().collect(), theirs.lines().collect());
    for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        assert_eq!(a, b, "{name}: line {} differs", i + 1);
    }
    assert_eq!(ours.len(), theirs.len(), "{name}: line counts differ");
}

#[test]
fn a_cartesian_moves() {
    check_case("a_cartesian_moves", "atmega2560.dict");
}

#[test]
fn b_cartesian_shaper_pa() {
    check_case("b_cartesian_shaper_pa", "atmega2560.dict");
}

#[test]
fn c_corexy() {
    check_case("c_corexy", "atmega2560.dict");
}

#[test]
fn d_delta() {
    check_case("d_delta", "atmega2560.dict");
}

#[test]
fn e_cartesian_home_print_square() {
    check_case("e_cartesian_home_print_square", "atmega2560.dict");
}

#[test]
fn f_large_cylinder() {
    check_case("f_large_cylinder", "atmega2560.dict");
}

#[test]
fn g_cartesian_moves_stm32f446() {
    check_case("g_cartesian_moves_stm32f446", "stm32f446.dict");
}

#[test]
fn a_bad_dictionary_is_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("gantry-parsedump-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let dict = dir.join("broken.dict");
    std::fs::write(&dict, r#"{"commands": {"x a=%q": 2}}"#).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .arg("parsedump")
        .arg(&dict)
        .arg(oracle().join("cases/a_cartesian_moves/output.serial"))
        .output()
        .expect("gantry runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("invalid dictionary") && stderr.contains("unknown parameter type '%q'"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
