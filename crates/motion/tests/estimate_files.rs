//! `estimate` on real files: how layers are counted (slicer comments, spiral vases, non-planar
//! paths), the final unterminated line, and binary G-code (`.bgcode`) decoded and planned.
//!
//! The files are corpus copies in tests/fixtures/gcode (see its README); the printer is the
//! Creality K1 Max config of oracle case o.

use std::path::PathBuf;

use gantry_motion::bgcode::{BgcodeReader, BlockType, decode_gcode};
use gantry_motion::config::Config;
use gantry_motion::estimate::{Estimate, Estimator, LayerRule, estimate};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn k1max() -> Config {
    let path = fixtures().join("oracle-extra/o_orca_k1max/printer.cfg");
    let text = std::fs::read_to_string(&path).expect("config");
    Config::parse(&text, "printer.cfg").expect("config parses")
}

fn gcode(name: &str) -> Vec<u8> {
    std::fs::read(fixtures().join("gcode").join(name)).expect("fixture")
}

/// Every comment line that marks a layer change made plain (`;`), so that the file has to be
/// counted by its heights.
fn without_layer_comments(text: &[u8]) -> Vec<u8> {
    let text = std::str::from_utf8(text).expect("UTF-8");
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        if gantry_motion::estimate::is_layer_change_comment(line) {
            out.push_str(";\n");
        } else {
            out.push_str(line);
        }
    }
    out.into_bytes()
}

fn layer_sum(est: &Estimate) -> f64 {
    est.layers.iter().map(|l| l.time_s).sum()
}

/// Regression: a spiral vase was counted a layer per Z step (5470 "layers" for this file).
/// PrusaSlicer marks its 334 layers (5 solid bottom layers, then one per turn of the spiral);
/// counted by heights instead (the comments removed), the turns of the path give the same
/// count within one.
#[test]
fn a_spiral_vase_has_a_layer_per_turn() {
    let config = k1max();
    let file = gcode("prusaslicer-2.7.4_spiral_vase.gcode");
    let est = estimate(&config, &file).expect("estimate");
    assert_eq!(est.layer_rule, LayerRule::Comments);
    assert_eq!(est.layers.len(), 334);
    // Layer 30's comment says ;Z:9 (0.3 mm layers from 0.3).
    assert!(
        (est.layers[29].z_mm - 9.0).abs() < 1e-9,
        "{:?}",
        est.layers[29]
    );
    assert!(layer_sum(&est) <= est.print_time_s + 1e-6);

    let by_height = estimate(&config, &without_layer_comments(&file)).expect("estimate");
    assert_eq!(by_height.layer_rule, LayerRule::ZHeights);
    let n = by_height.layers.len();
    assert!((334..=336).contains(&n), "{n} layers by height");
    // The same plan, only counted otherwise.
    assert_eq!(by_height.print_time_s, est.print_time_s);
}

/// Regression: FullControl's non-planar ripple vase (no layer comments, Z rising on every one
/// of its 16 765 segments) was counted as 16 765 layers. Its path turns 167 times, 0.36 mm a
/// turn, after a flat primer line.
#[test]
fn a_non_planar_vase_without_comments_is_counted_by_turns() {
    let est = estimate(&k1max(), &gcode("fullcontrol_ripple_vase.gcode")).expect("estimate");
    assert_eq!(est.layer_rule, LayerRule::ZHeights);
    assert_eq!(est.layers.len(), 1 + 167, "primer line + turns");
    let top = est.layers.last().expect("layers").z_mm;
    assert!((top - 60.0444).abs() < 1e-9, "top layer at {top}");
    // Each turn rises about 0.36 mm.
    let rise = est.layers[100].z_mm - est.layers[99].z_mm;
    assert!((rise - 0.36).abs() < 0.01, "{rise}");
    // The file ends in `M84` without a line end, which Klipper does not run: named.
    assert_eq!(
        est.unterminated_line,
        Some((16817, "M84 ; disable steppers".to_owned()))
    );
}

/// Planar prints: the slicers' comments and the heights agree.
#[test]
fn layer_comments_of_each_slicer_are_recognised() {
    for (line, is) in [
        (";LAYER_CHANGE", true),
        (";LAYER_CHANGE\r", true),
        (";LAYER:12", true),
        (";LAYER:-2", true),
        ("; CHANGE_LAYER", true),
        ("; layer 3, Z = 0.700", true),
        (";LAYER_COUNT:25", false),
        ("; layer_height = 0.2", false),
        ("; layer end", false),
        ("G1 X1 ;LAYER_CHANGE", false),
        (";LAYER:", false),
    ] {
        assert_eq!(
            gantry_motion::estimate::is_layer_change_comment(line),
            is,
            "{line:?}"
        );
    }
}

/// The final line without a line end does not run, in batch mode as in an estimate (Klipper
/// drops it in both of its file readers), and is named; a file whose last line is terminated
/// is planned the same.
#[test]
fn a_last_line_without_a_line_end_does_not_run() {
    let config = k1max();
    let head = b"SET_KINEMATIC_POSITION X=10 Y=10 Z=10\nG1 X100 F6000\n".to_vec();
    let mut unterminated = head.clone();
    unterminated.extend_from_slice(b"G1 X200");
    let mut terminated = unterminated.clone();
    terminated.push(b'\n');
    let a = estimate(&config, &head).expect("estimate");
    let b = estimate(&config, &unterminated).expect("estimate");
    let c = estimate(&config, &terminated).expect("estimate");
    assert_eq!(b.print_time_s, a.print_time_s, "the last line did not run");
    assert_eq!(b.moves, 1);
    assert_eq!(b.unterminated_line, Some((3, "G1 X200".to_owned())));
    assert_eq!(a.unterminated_line, None);
    assert_eq!(c.moves, 2);
    assert_eq!(c.unterminated_line, None);
    // A comment or blank text at the end is nothing to report.
    let mut comment = head.clone();
    comment.extend_from_slice(b"; the end");
    assert_eq!(
        estimate(&config, &comment)
            .expect("estimate")
            .unterminated_line,
        None
    );
    // Batch mode: the same stream with and without the unterminated line.
    let batch = |input: &[u8]| {
        let mut printer = gantry_motion::printer::Printer::for_planning(&config).expect("printer");
        printer.run_batch(input).expect("batch");
        (
            printer.toolhead.print_time,
            printer.unterminated_line.clone(),
        )
    };
    assert_eq!(batch(&unterminated).0, batch(&head).0);
    assert_eq!(batch(&unterminated).1, Some((3, "G1 X200".to_owned())));
}

/// Binary G-code: the corpus's PrusaSlicer 2.9.1 file (Heatshrink + MeatPack G-code blocks)
/// decodes to G-code that plans without an error; its filament matches what PrusaSlicer wrote
/// in the file's metadata; the streamed decoding plans the same as the whole text.
#[test]
fn binary_gcode_decodes_and_plans() {
    let bytes = gcode("prusaslicer-2.9.1_coreone_binary.bgcode");
    let text = decode_gcode(&bytes).expect("decodes");
    let text_str = std::str::from_utf8(&text).expect("the G-code is text");
    assert!(text_str.starts_with(";"), "{}", &text_str[..80]);
    // MeatPack's G lines come back with their spaces.
    assert!(text_str.contains("\nG1 X"), "G1 lines with spaces");
    assert!(
        !text_str.contains("\n\n"),
        "no empty lines (as libbgcode decodes)"
    );
    let reader = BgcodeReader::new(&bytes).expect("header");
    let print = reader.metadata(BlockType::PrintMetadata).expect("metadata");
    let filament_mm: f64 = print
        .iter()
        .find(|(k, _)| k == "filament used [mm]")
        .and_then(|(_, v)| v.parse().ok())
        .expect("filament used [mm]");
    assert_eq!(filament_mm, 1640.76);
    let printer = reader
        .metadata(BlockType::PrinterMetadata)
        .expect("metadata");
    assert!(printer.contains(&("printer_model".to_owned(), "COREONE".to_owned())));

    let path = fixtures().join("gcode/coreone-like.cfg");
    let config = Config::parse(
        &std::fs::read_to_string(&path).expect("config"),
        "coreone.cfg",
    )
    .expect("config parses");
    let est = estimate(&config, &text).expect("estimate");
    // 4474 arcs in 0.1 mm segments.
    assert!(est.moves > 100_000, "{} moves", est.moves);
    // The sum of the file's E words is 1638.957 mm; PrusaSlicer counts 1640.76.
    assert!(
        (est.filament_mm - filament_mm).abs() < 0.002 * filament_mm,
        "filament {} mm, PrusaSlicer {filament_mm} mm",
        est.filament_mm
    );
    assert_eq!(est.layer_rule, LayerRule::Comments);
    assert_eq!(est.layers.len(), 25, "max_layer_z 5.00 at 0.2 mm");
    // Prusa's own commands (M862.x, G29, M569, M572…) are unknown to Klipper, but nothing is
    // an error.
    let errors: Vec<_> = est
        .messages
        .iter()
        .filter(|(_, m)| m.starts_with("!!"))
        .collect();
    assert!(errors.is_empty(), "{errors:?}");

    // Block by block, as `gantry estimate` reads it.
    let mut reader = BgcodeReader::new(&bytes).expect("header");
    let mut estimator = Estimator::new(&config, false).expect("estimator");
    let mut block = Vec::new();
    let mut blocks = 0;
    while reader.next_gcode(&mut block).expect("block") {
        estimator.feed(&block).expect("feed");
        block.clear();
        blocks += 1;
    }
    assert_eq!(blocks, 17);
    assert_eq!(estimator.finish().expect("estimate"), est);
}
