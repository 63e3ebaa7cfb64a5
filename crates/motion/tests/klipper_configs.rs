//! Klipper's 228 example configs (`tests/fixtures/klipper-config/`) read exactly as Klipper's own
//! reader reads them (digests made by Klipper's `configfile.py`), every option of each reads back,
//! the core sections pass Klipper's typed checks; includes through the file system; messages with
//! `file:line`; and the reader never panics on arbitrary text.

use std::path::{Path, PathBuf};

use gantry_motion::config::{
    BuildVolume, Config, ConfigError, ConfigSource, FloatBounds, IntBounds, MemorySource,
    PinAliases, PinFlags, glob_match, parse_pin,
};
use proptest::prelude::*;

/// A [`ConfigSource`] on the real file system, with Python's `glob` rules.
struct FsSource;

impl ConfigSource for FsSource {
    fn read(&self, path: &str) -> Result<String, String> {
        std::fs::read_to_string(path).map_err(|e| e.to_string())
    }

    fn glob(&self, pattern: &str) -> Result<Vec<String>, String> {
        let magic = |s: &str| s.contains(['*', '?', '[']);
        let mut found = vec![if pattern.starts_with('/') {
            "/".to_owned()
        } else {
            String::new()
        }];
        for part in pattern.split('/').filter(|p| !p.is_empty()) {
            let mut next = Vec::new();
            for dir in &found {
                let join = |name: &str| match dir.as_str() {
                    "" => name.to_owned(),
                    d if d.ends_with('/') => format!("{d}{name}"),
                    d => format!("{d}/{name}"),
                };
                if !magic(part) {
                    next.push(join(part));
                    continue;
                }
                let listing = std::fs::read_dir(if dir.is_empty() { "." } else { dir });
                for entry in listing.into_iter().flatten().flatten() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if glob_match(part, &name) {
                        next.push(join(&name));
                    }
                }
            }
            found = next;
        }
        Ok(found
            .into_iter()
            .filter(|p| Path::new(p).symlink_metadata().is_ok())
            .collect())
    }
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/klipper-config")
}

/// The corpus's config files, sorted by name.
fn corpus() -> Vec<(String, PathBuf)> {
    let mut files: Vec<(String, PathBuf)> = std::fs::read_dir(fixtures())
        .expect("fixtures folder")
        .flatten()
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .filter(|(name, _)| name.ends_with(".cfg"))
        .collect();
    files.sort();
    files
}

fn load(path: &Path) -> Result<Config, ConfigError> {
    Config::load(&path.to_string_lossy(), &FsSource)
}

/// The canonical dump `klipper-reader-digests.py` makes of Klipper's reading.
fn dump(config: &Config) -> String {
    let esc = |s: &str| s.replace('\\', "\\\\").replace('\n', "\\n");
    let mut out = String::new();
    for section in &config.sections {
        out.push_str(&format!("[{}]\n", esc(&section.name)));
        for option in &section.options {
            out.push_str(&format!("{}={}\n", esc(&option.name), esc(&option.value)));
        }
    }
    out
}

fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[test]
fn all_228_configs_read_exactly_as_klipper_reads_them() {
    let digests =
        std::fs::read_to_string(fixtures().join("klipper-reader.digests")).expect("digest file");
    let expected: Vec<(&str, &str)> = digests
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(digest, name)| (name, digest))
        .collect();
    let files = corpus();
    assert_eq!(
        files.len(),
        228,
        "the corpus should hold Klipper's 228 configs"
    );
    assert_eq!(expected.len(), 228);
    let mut wrong = Vec::new();
    for ((name, path), (digest_name, digest)) in files.iter().zip(&expected) {
        assert_eq!(name, digest_name, "digest file out of step with the folder");
        match load(path) {
            Ok(config) => {
                let ours = format!("{:016x}", fnv1a64(dump(&config).as_bytes()));
                if ours != *digest {
                    wrong.push(format!("{name}: reads differently from Klipper"));
                }
                assert!(
                    config.warnings().is_empty(),
                    "{name}: {:?}",
                    config.warnings()
                );
            }
            Err(e) => wrong.push(format!("{name}: {e}")),
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of 228 differ: {wrong:#?}",
        wrong.len()
    );
}

#[test]
fn every_option_of_every_config_reads_back() {
    let mut sections = 0;
    for (name, path) in corpus() {
        let config = load(&path).expect("parses");
        sections += config.sections.len();
        for section in config.sections() {
            assert!(section.header_location().is_some());
            let names: Vec<&str> = section.options().map(|(option, _)| option).collect();
            for option in names {
                let value = section.get(option).expect("present");
                assert_eq!(section.get_opt(&option.to_uppercase()), Some(value));
                let at = section.location(option).expect("placed");
                assert!(at.line >= 1 && at.file.ends_with(&name), "{name}: {at}");
            }
        }
        assert_eq!(config.unused_options(), [], "{name}");
        // Only sections without options (`[pause_resume]`) are left unknown, and naming them
        // makes the config valid.
        let empty: Vec<&str> = config
            .sections
            .iter()
            .filter(|s| s.options.is_empty())
            .map(|s| s.name.as_str())
            .collect();
        let unknown: Vec<String> = config
            .unknown_sections(&[])
            .into_iter()
            .map(|e| match e {
                ConfigError::InvalidSection { section, .. } => section,
                other => other.to_string(),
            })
            .collect();
        assert_eq!(unknown, empty, "{name}");
        assert_eq!(config.check_unused(&empty), Ok(()), "{name}");
    }
    // (example-extras.cfg is all comments.)
    assert!(sections > 2500, "only {sections} sections");
}

/// Klipper's typed reads (with its bounds) of the sections every printer has.
fn read_core_sections(config: &Config) -> Result<(), ConfigError> {
    let none = FloatBounds::NONE;
    if let Some(printer) = config.section("printer") {
        printer.get("kinematics")?;
        printer.getfloat("max_velocity", None, none.above(0.0))?;
        printer.getfloat("max_accel", None, none.above(0.0))?;
        printer.getfloat_opt("max_z_velocity", none.above(0.0))?;
        printer.getfloat_opt("max_z_accel", none.above(0.0))?;
        printer.getfloat("square_corner_velocity", Some(5.0), none.min(0.0))?;
        printer.getfloat("minimum_cruise_ratio", Some(0.5), none.min(0.0).below(1.0))?;
    }
    // (`sample-*` files are fragments to add to a printer's config.)
    let whole = config.has_section("printer");
    for stepper in config.sections_with_prefix("stepper_") {
        for pin in ["step_pin", "dir_pin"] {
            match whole {
                true => stepper.getpin(pin, PinFlags::INVERT).map(Some)?,
                false => stepper.getpin_opt(pin, PinFlags::INVERT)?,
            };
        }
        stepper.getpin_opt("enable_pin", PinFlags::INVERT)?;
        stepper.getpin_opt("endstop_pin", PinFlags::ENDSTOP)?;
        stepper.getint_opt("microsteps", IntBounds::NONE.min(1))?;
        stepper.getfloat_opt("rotation_distance", none.above(0.0))?;
        stepper.getint("full_steps_per_rotation", Some(200), IntBounds::NONE.min(1))?;
        stepper.getlists_opt("gear_ratio", [":", ","], Some(2))?;
        let min = stepper.getfloat("position_min", Some(0.0), none)?;
        stepper.getfloat_opt("position_endstop", none)?;
        stepper.getfloat_opt("position_max", none.above(min))?;
        stepper.getfloat("homing_speed", Some(5.0), none.above(0.0))?;
        stepper.getfloat("homing_retract_dist", Some(5.0), none.min(0.0))?;
        if stepper.has_option("homing_positive_dir") {
            stepper.getboolean("homing_positive_dir", None)?;
        }
    }
    let heaters = config
        .sections_with_prefix("extruder")
        .into_iter()
        .chain(config.section("heater_bed"));
    for heater in heaters {
        if heater.name() != "extruder_stepper" && heater.has_option("heater_pin") {
            heater.getpin("heater_pin", PinFlags::INVERT)?;
            heater.getpin("sensor_pin", PinFlags::PLAIN)?;
            heater.get("sensor_type")?;
            let min = heater.getfloat("min_temp", None, none.min(-273.15))?;
            heater.getfloat("max_temp", None, none.above(min))?;
            heater.getfloat("max_power", Some(1.0), none.above(0.0).max(1.0))?;
            if heater.getchoice("control", &["watermark", "pid"], Some("pid"))? == "pid"
                && heater.has_option("pid_kp")
            {
                for gain in ["pid_Kp", "pid_Ki", "pid_Kd"] {
                    heater.getfloat(gain, None, none)?;
                }
            }
        }
        if heater.has_option("nozzle_diameter") {
            let nozzle = heater.getfloat("nozzle_diameter", None, none.above(0.0))?;
            heater.getfloat("filament_diameter", None, none.min(nozzle))?;
            heater.getfloat("pressure_advance", Some(0.0), none.min(0.0))?;
        }
    }
    for mcu in config.sections_with_prefix("mcu") {
        mcu.get_opt("serial");
        mcu.getint_opt("baud", IntBounds::NONE.min(2400))?;
        mcu.getchoice(
            "restart_method",
            &["arduino", "cheetah", "command", "rpi_usb"],
            Some("command"),
        )?;
    }
    if let Some(mesh) = config.section("bed_mesh")
        && mesh.has_option("mesh_min")
    {
        mesh.getfloatlist("mesh_min", None, ",", Some(2))?;
        mesh.getfloatlist("mesh_max", None, ",", Some(2))?;
        mesh.getintlist("probe_count", Some(&[3, 3][..]), ",", None)?;
    }
    Ok(())
}

#[test]
fn the_core_sections_pass_klippers_typed_checks() {
    let mut pins = 0;
    for (name, path) in corpus() {
        let config = load(&path).expect("parses");
        if let Err(e) = read_core_sections(&config) {
            panic!("{name}: {e}");
        }
        // sample-aliases.cfg is a library of alternative boards for one MCU: loaded whole,
        // Klipper refuses it just so.
        match PinAliases::from_config(&config, "mcu") {
            Ok(_) => assert_ne!(name, "sample-aliases.cfg"),
            Err(e) if name == "sample-aliases.cfg" => assert!(
                e.to_string().ends_with(
                    "sample-aliases.cfg:18: Alias ar0 mapped to PD0 - can't alias to PE0"
                ),
                "{e}"
            ),
            Err(e) => panic!("{name}: {e}"),
        }
        // Every pin option holds a valid pin description.
        for section in config.sections() {
            for (option, value) in section.options() {
                // (`[display] analog_range_*_pin` holds resistances, not pins.)
                if (option == "pin" || option.ends_with("_pin"))
                    && !option.starts_with("analog_range")
                {
                    parse_pin(value, PinFlags::ENDSTOP)
                        .unwrap_or_else(|e| panic!("{name} [{}] {option}: {e}", section.name()));
                    pins += 1;
                }
            }
        }
        if let Some(kinematics) = config.getsection("printer").get_opt("kinematics")
            && ["cartesian", "corexy", "corexz"].contains(&kinematics)
        {
            let volume = BuildVolume::from_config(&config).expect("a box");
            assert!(volume.max_mm.iter().all(|&m| m > 0.0), "{name}: {volume}");
        }
    }
    assert!(pins > 2000, "only {pins} pins seen");
}

#[test]
fn bound_errors_name_the_real_file_and_line() {
    let path = fixtures().join("example-cartesian.cfg");
    let text = std::fs::read_to_string(&path).expect("fixture");
    let file = path.to_string_lossy().into_owned();
    let line_of = |needle: &str| {
        text.lines()
            .position(|l| l.starts_with(needle))
            .map(|i| i + 1)
            .expect("option in file")
    };
    let config = load(&path).expect("parses");
    let x = config.getsection("stepper_x");
    let printer = config.getsection("printer");
    let none = FloatBounds::NONE;
    let cases: [(Result<f64, ConfigError>, String); 4] = [
        (
            x.getfloat("rotation_distance", None, none.above(40.0)),
            format!(
                "{file}:{}: Option 'rotation_distance' in section 'stepper_x' must be above 40.0",
                line_of("rotation_distance")
            ),
        ),
        (
            printer.getfloat("max_accel", None, none.below(3000.0)),
            format!(
                "{file}:{}: Option 'max_accel' in section 'printer' must be below 3000.0",
                line_of("max_accel")
            ),
        ),
        (
            printer.getfloat("max_velocity", None, none.min(501.5)),
            format!(
                "{file}:{}: Option 'max_velocity' in section 'printer' must have minimum of 501.5",
                line_of("max_velocity")
            ),
        ),
        (
            printer.getfloat("max_velocity", None, none.max(299.0)),
            format!(
                "{file}:{}: Option 'max_velocity' in section 'printer' must have maximum of 299.0",
                line_of("max_velocity")
            ),
        ),
    ];
    for (result, message) in cases {
        assert_eq!(result.expect_err("out of bounds").to_string(), message);
    }
    let microsteps = x.getint("microsteps", None, IntBounds::NONE.min(32));
    assert_eq!(
        microsteps.expect_err("below").to_string(),
        format!(
            "{file}:{}: Option 'microsteps' in section 'stepper_x' must have minimum of 32",
            line_of("microsteps")
        )
    );
    let kinematics = printer.getchoice("kinematics", &["corexy"], None);
    assert_eq!(
        kinematics.expect_err("choice").to_string(),
        format!(
            "{file}:{}: Choice 'cartesian' for option 'kinematics' in section 'printer' is not a valid choice",
            line_of("kinematics")
        )
    );
    assert_eq!(
        x.getfloat("step_pin", None, none)
            .expect_err("text")
            .to_string(),
        format!(
            "{file}:{}: Unable to parse option 'step_pin' in section 'stepper_x'",
            line_of("step_pin")
        )
    );
    let missing = config.getsection("stepper_x").get("no_such_option");
    assert_eq!(
        missing.expect_err("missing").to_string(),
        format!(
            "{file}:{}: Option 'no_such_option' in section 'stepper_x' must be specified",
            line_of("[stepper_x]")
        )
    );
}

/// A scratch folder under the system's temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "gantry-klipper-configs-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("parts")).expect("temp dir");
        Self(dir)
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write");
        path.to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn includes_and_save_config_on_the_file_system() {
    let dir = TempDir::new("includes");
    let cartesian = fixtures().join("example-cartesian.cfg");
    let main = dir.write(
        "printer.cfg",
        &format!(
            "[include {}]\n[include parts/*.cfg]\n[include parts/none-*.cfg]\n\
             [printer]\nmax_velocity: 250\n\n\
             #*# <---------------------- SAVE_CONFIG ---------------------->\n\
             #*# DO NOT EDIT THIS BLOCK OR BELOW. The contents are auto-generated.\n\
             #*#\n#*# [stepper_z]\n#*# position_endstop = 0.7\n#*#\n\
             #*# [extruder]\n#*# pid_kp = 20.1\n#*# pressure_advance = 0.05\n",
            cartesian.display()
        ),
    );
    dir.write("parts/b.cfg", "[fan]\npin: PH6\n");
    dir.write("parts/a.cfg", "[stepper_x]\nposition_max: 180\n");
    let config = Config::load(&main, &FsSource).expect("valid");
    assert_eq!(config.files().len(), 4);
    assert!(config.files()[2].ends_with("parts/a.cfg"));
    assert_eq!(config.getsection("printer").get("max_velocity"), Ok("250"));
    assert_eq!(
        config.getsection("stepper_x").get("position_max"),
        Ok("180")
    );
    assert_eq!(config.getsection("fan").get("pin"), Ok("PH6"));
    // The included example sets position_endstop and pid_Kp, so Klipper ignores those saved
    // values; pressure_advance is new and applies.
    assert_eq!(
        config.getsection("stepper_z").get("position_endstop"),
        Ok("0.5")
    );
    let extruder = config.getsection("extruder");
    assert_eq!(extruder.get("pid_kp"), Ok("22.2"));
    assert_eq!(extruder.get("pressure_advance"), Ok("0.05"));
    assert_eq!(config.warnings().len(), 2);
    let volume = BuildVolume::from_config(&config).expect("a box");
    assert_eq!(volume.max_mm[0], 180.0);

    let missing = dir.write("missing.cfg", "[include parts/nothing.cfg]\n");
    assert_eq!(
        Config::load(&missing, &FsSource)
            .expect_err("missing")
            .to_string(),
        format!(
            "{missing}:1: Include file '{}' does not exist",
            dir.0.join("parts/nothing.cfg").display()
        )
    );
    let cycle = dir.write("cycle.cfg", "[a]\n[include parts/back.cfg]\n");
    dir.write("parts/back.cfg", "[b]\n[include ../cycle.cfg]\n");
    let e = Config::load(&cycle, &FsSource)
        .expect_err("cycle")
        .to_string();
    assert!(
        e.contains("parts/back.cfg:2: Recursive include of config file"),
        "{e}"
    );
}

/// Text that looks like a config often enough to reach deep paths.
fn configish() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just("[printer]\n".to_owned()),
            Just("[stepper_x]\n".to_owned()),
            Just("[board_pins]\n".to_owned()),
            Just("[include other.cfg]\n".to_owned()),
            Just("[include *.cfg]\n".to_owned()),
            Just("[include missing.cfg]\n".to_owned()),
            Just("position_max: 200\n".to_owned()),
            Just("aliases: a=PA1, b=<x>\n".to_owned()),
            Just("pin: ^!mcu:PA1\n".to_owned()),
            Just("points:\n  1, 2\n  3,4\n".to_owned()),
            Just("\n#*# <---------------------- SAVE_CONFIG ---------------------->\n#*# DO NOT EDIT THIS BLOCK OR BELOW. The contents are auto-generated.\n#*#\n".to_owned()),
            Just("#*# ".to_owned()),
            Just("x = ".to_owned()),
            Just("\n".to_owned()),
            Just("\r".to_owned()),
            Just("  ".to_owned()),
            Just(" ; ".to_owned()),
            Just("#".to_owned()),
            "\\PC{0,8}",
            "[\\[\\]:=#; \t\n\r\u{1c}\u{a0}é]{0,6}",
        ],
        0..40,
    )
    .prop_map(|parts| parts.concat())
}

/// Every getter on every option; none may panic.
fn read_everything(config: &Config) {
    let none = FloatBounds::NONE;
    for section in config.sections() {
        let names: Vec<&str> = section.options().map(|(name, _)| name).collect();
        for option in names {
            let _ = section.get(option);
            let _ = section.getfloat(option, None, none.above(0.0).below(1.0));
            let _ = section.getint(option, Some(1), IntBounds::NONE.min(0).max(9));
            let _ = section.getboolean(option, None);
            let _ = section.getchoice(option, &["a", "b"], None);
            let _ = section.getlist(option, None, ",", Some(2));
            let _ = section.getfloatlist(option, None, "", None);
            let _ = section.getlists(option, [",", "\n"], Some(2));
            let _ = section.getfloatlists(option, ["", ""], None);
            let _ = section.getpin(option, PinFlags::ENDSTOP);
            let _ = section.location(option);
        }
    }
    let _ = PinAliases::from_config(config, "mcu");
    let _ = BuildVolume::from_config(config);
    let _ = config.unused_options();
    let _ = config.unknown_sections(&["stepper_"]);
    let _ = config.check_unused(&[]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn the_reader_never_panics_on_configish_text(main in configish(), other in configish()) {
        let source = MemorySource::new()
            .with("printer.cfg", &main)
            .with("other.cfg", &other);
        if let Ok(config) = Config::load("printer.cfg", &source) {
            read_everything(&config);
        }
    }

    #[test]
    fn the_reader_never_panics_on_arbitrary_text(text in "\\PC{0,400}") {
        if let Ok(config) = Config::parse(&text, "fuzz.cfg") {
            read_everything(&config);
        }
        let _ = parse_pin(&text, PinFlags::ENDSTOP);
        let _ = glob_match(&text, "a/b.cfg");
    }
}

/// Klipper accepts every one of its example configs, so the config report finds no unknown
/// section and no unknown option in any of them: where the planner builds, after the build (the
/// options it read are recorded); where it does not (kinematics it lacks, fragments), the
/// sections' modules alone.
#[test]
fn the_config_report_finds_nothing_klipper_would_refuse_in_real_configs() {
    use gantry_motion::printer::{NoticeKind, Printer, config_report, unknown_modules};
    let (mut built, mut not_implemented) = (0, 0);
    let mut wrong = Vec::new();
    for (name, path) in corpus() {
        let config = load(&path).expect("parses");
        let notices = match Printer::for_planning(&config) {
            Ok(_) => {
                built += 1;
                config_report(&config)
            }
            Err(_) => unknown_modules(&config),
        };
        for n in notices {
            if n.kind == NoticeKind::NotImplemented {
                not_implemented += 1;
            } else {
                wrong.push(format!("{name}: {n}"));
            }
        }
    }
    if std::env::var_os("CONFIG_REPORT_SHOW").is_some() {
        #[allow(clippy::print_stderr)]
        {
            eprintln!("built {built}, not-implemented notices {not_implemented}");
            for w in &wrong {
                eprintln!("{w}");
            }
        }
    }
    assert!(built >= 192, "only {built} configs build");
    assert!(not_implemented > 0);
    assert!(wrong.is_empty(), "{} notices: {wrong:#?}", wrong.len());
}
