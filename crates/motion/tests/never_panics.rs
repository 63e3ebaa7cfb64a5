//! Bad input never panics: the config reader, the G-code lexer and the toolpath reader take any
//! text — non-ASCII, control characters, half-written lines — and answer with values, errors or
//! diagnostics.

use gantry_motion::config::{BuildVolume, Config};
use gantry_motion::gcode;
use gantry_motion::toolpath::{self, ToolpathOptions};
use proptest::prelude::*;

/// Text that looks like G-code or config often enough to reach deep paths.
fn gcodeish() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just("G1 ".to_owned()),
            Just("G2 ".to_owned()),
            Just("G3 ".to_owned()),
            Just("G92 ".to_owned()),
            Just("N12 ".to_owned()),
            Just("*71".to_owned()),
            Just("X1.5 ".to_owned()),
            Just("I-3 J4 ".to_owned()),
            Just("E.2 ".to_owned()),
            Just("; é ".to_owned()),
            Just("[stepper_x]\n".to_owned()),
            Just("position_max: 200\n".to_owned()),
            Just("#*# ".to_owned()),
            Just("\n".to_owned()),
            Just("  ".to_owned()),
            "\\PC{0,8}",
        ],
        0..40,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20_000))]

    #[test]
    fn the_lexer_never_panics(line in "\\PC{0,60}") {
        let _ = gcode::lex(&line);
    }

    #[test]
    fn the_toolpath_reader_never_panics(text in gcodeish()) {
        let path = toolpath::from_gcode(&text, ToolpathOptions::default());
        for s in &path.segments {
            prop_assert!(s.line >= 1);
        }
    }

    #[test]
    fn the_config_reader_never_panics(text in gcodeish()) {
        if let Ok(config) = Config::parse(&text, "fuzz.cfg") {
            let _ = BuildVolume::from_config(&config);
        }
    }
}
