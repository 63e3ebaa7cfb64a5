//! printer.cfg in Klipper's syntax: sections, options, comments and multi-line values.
//!
//! The rules follow Klipper's config reader (Python's configparser as Klipper sets it up): section
//! headers in brackets; `option: value` or `option = value`; option names are case-insensitive
//! (stored lower-case); whole-line comments start with `#` or `;`, and an inline comment starts at
//! a `#` or `;` preceded by whitespace; an indented line continues the previous value; the
//! `#*#` lines of the SAVE_CONFIG block hold options of their own, which override the main body.
//! Includes (`[include file]`) need file access and are resolved by the caller in a later stage.

use std::fmt;

/// A parse or lookup failure, with the place it refers to.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// The text is not valid config syntax.
    #[error("{file}:{line}: {message}")]
    Syntax {
        /// The file's name as the caller gave it.
        file: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong, in Klipper's words where it has some.
        message: String,
    },
    /// A required option is absent.
    #[error("Option '{option}' in section '{section}' must be specified")]
    Missing {
        /// The section searched.
        section: String,
        /// The option missing.
        option: String,
    },
    /// An option's value is unusable.
    #[error("{file}:{line}: Option '{option}' in section '{section}' {message}")]
    Value {
        /// The file's name.
        file: String,
        /// 1-based line number of the option.
        line: usize,
        /// The section.
        section: String,
        /// The option.
        option: String,
        /// What is wrong ("must be above 0", "is not a number").
        message: String,
    },
}

/// One `option: value` with where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigOption {
    /// Lower-case option name.
    pub name: String,
    /// The value, continuation lines joined with `\n`, surrounding whitespace trimmed.
    pub value: String,
    /// 1-based line of the option name.
    pub line: usize,
}

/// One `[section]` and its options in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigSection {
    /// The name between the brackets, whitespace-trimmed (Klipper keeps its case).
    pub name: String,
    /// 1-based line of the header.
    pub line: usize,
    /// The options, each name once (a repeated option replaces the earlier value).
    pub options: Vec<ConfigOption>,
}

impl ConfigSection {
    /// The option called `name` (any case), if present.
    pub fn get(&self, name: &str) -> Option<&ConfigOption> {
        let name = name.to_ascii_lowercase();
        self.options.iter().find(|o| o.name == name)
    }

    fn set(&mut self, option: ConfigOption) {
        match self.options.iter_mut().find(|o| o.name == option.name) {
            Some(existing) => *existing = option,
            None => self.options.push(option),
        }
    }
}

/// A parsed printer.cfg.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file name given to [`Config::parse`], used in messages.
    pub file: String,
    /// Sections in file order, each name once (a repeated section merges into the first).
    pub sections: Vec<ConfigSection>,
}

impl Config {
    /// Parses config text; `file` names it in messages.
    ///
    /// # Errors
    /// The first syntax error, with its line.
    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        let mut config = Config {
            file: file.to_owned(),
            sections: Vec::new(),
        };
        let (body, saved) = split_save_config(text);
        config.parse_part(body.iter().copied())?;
        config.parse_part(saved.into_iter())?;
        Ok(config)
    }

    fn parse_part<'a>(
        &mut self,
        lines: impl Iterator<Item = (usize, &'a str)>,
    ) -> Result<(), ConfigError> {
        let mut current: Option<usize> = None;
        let mut last_option: Option<String> = None;
        for (line_no, raw) in lines {
            let syntax = |message: &str| ConfigError::Syntax {
                file: self.file.clone(),
                line: line_no,
                message: message.to_owned(),
            };
            let line = strip_inline_comment(raw);
            if line.trim().is_empty() {
                continue;
            }
            let indented = line.starts_with([' ', '\t']);
            if indented {
                if let (Some(s), Some(name)) = (current, &last_option) {
                    let section = &mut self.sections[s];
                    if let Some(opt) = section.options.iter_mut().find(|o| &o.name == name) {
                        if !opt.value.is_empty() {
                            opt.value.push('\n');
                        }
                        opt.value.push_str(line.trim());
                        continue;
                    }
                }
                return Err(syntax("continuation line without an option before it"));
            }
            let line = line.trim_end();
            if let Some(rest) = line.strip_prefix('[') {
                let Some(name) = rest.strip_suffix(']') else {
                    return Err(syntax("section header must end with ']'"));
                };
                let name = name.trim();
                if name.is_empty() {
                    return Err(syntax("empty section name"));
                }
                current = Some(match self.sections.iter().position(|s| s.name == name) {
                    Some(i) => i,
                    None => {
                        self.sections.push(ConfigSection {
                            name: name.to_owned(),
                            line: line_no,
                            options: Vec::new(),
                        });
                        self.sections.len() - 1
                    }
                });
                last_option = None;
                continue;
            }
            let Some(s) = current else {
                return Err(syntax("option outside of any section"));
            };
            let Some(split) = line.find([':', '=']) else {
                return Err(syntax("expected 'option: value'"));
            };
            let name = line[..split].trim().to_ascii_lowercase();
            if name.is_empty() {
                return Err(syntax("option name is empty"));
            }
            let value = line[split + 1..].trim().to_owned();
            self.sections[s].set(ConfigOption {
                name: name.clone(),
                value,
                line: line_no,
            });
            last_option = Some(name);
        }
        Ok(())
    }

    /// The section called `name`, if present.
    pub fn section(&self, name: &str) -> Option<&ConfigSection> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// A float option: `None` if the option (or section) is absent.
    ///
    /// # Errors
    /// When the value is not a finite number.
    pub fn get_f64(&self, section: &str, option: &str) -> Result<Option<f64>, ConfigError> {
        let Some(opt) = self.section(section).and_then(|s| s.get(option)) else {
            return Ok(None);
        };
        match opt.value.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(Some(v)),
            _ => Err(ConfigError::Value {
                file: self.file.clone(),
                line: opt.line,
                section: section.to_owned(),
                option: option.to_owned(),
                message: format!("is not a number: '{}'", opt.value),
            }),
        }
    }

    /// A string option: `None` if absent.
    pub fn get_str(&self, section: &str, option: &str) -> Option<&str> {
        self.section(section)
            .and_then(|s| s.get(option))
            .map(|o| o.value.as_str())
    }
}

/// Splits off the SAVE_CONFIG block: its `#*# ` lines become config lines of their own.
/// Lines with their 1-based numbers.
type NumberedLines<'a> = Vec<(usize, &'a str)>;

fn split_save_config(text: &str) -> (NumberedLines<'_>, NumberedLines<'_>) {
    let mut body = Vec::new();
    let mut saved = Vec::new();
    for (i, line) in text.lines().enumerate() {
        match line.strip_prefix("#*#") {
            // Klipper's two header lines of the block carry no options.
            Some(rest)
                if rest.trim_start().starts_with("<-")
                    || rest.trim_start().starts_with("DO NOT EDIT THIS BLOCK") => {}
            Some(rest) => saved.push((i + 1, rest.strip_prefix(' ').unwrap_or(rest))),
            None => body.push((i + 1, line)),
        }
    }
    (body, saved)
}

/// Drops a whole-line comment, or an inline one that starts at whitespace + `#`/`;`.
fn strip_inline_comment(line: &str) -> &str {
    let trimmed = line.trim_start();
    if trimmed.starts_with(['#', ';']) {
        return "";
    }
    let bytes = line.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if (b == b'#' || b == b';') && i > 0 && bytes[i - 1].is_ascii_whitespace() {
            return &line[..i];
        }
    }
    line
}

/// The volume the toolhead can reach, in mm, from the stepper rails.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BuildVolume {
    /// Lowest reachable X, Y, Z in mm.
    pub min_mm: [f64; 3],
    /// Highest reachable X, Y, Z in mm.
    pub max_mm: [f64; 3],
}

impl BuildVolume {
    /// Reads the volume of a cartesian-family printer (cartesian, corexy, corexz, hybrid and
    /// limited variants) from `[stepper_x|y|z]` `position_min` (default 0) and `position_max`.
    ///
    /// # Errors
    /// When `position_max` is missing or not above `position_min`, or for kinematics whose volume
    /// is not a box of rails (delta, polar, …), named in the message.
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        let kinematics = config.get_str("printer", "kinematics").unwrap_or("");
        let boxed = [
            "cartesian",
            "corexy",
            "corexz",
            "hybrid_corexy",
            "hybrid_corexz",
        ];
        if !(boxed.contains(&kinematics) || kinematics.starts_with("limited_")) {
            return Err(ConfigError::Value {
                file: config.file.clone(),
                line: config
                    .section("printer")
                    .and_then(|s| s.get("kinematics"))
                    .map_or(0, |o| o.line),
                section: "printer".into(),
                option: "kinematics".into(),
                message: format!(
                    "'{kinematics}': the build volume of this kinematics is not supported yet"
                ),
            });
        }
        let mut volume = BuildVolume {
            min_mm: [0.0; 3],
            max_mm: [0.0; 3],
        };
        for (axis, section) in ["stepper_x", "stepper_y", "stepper_z"].iter().enumerate() {
            let min = config.get_f64(section, "position_min")?.unwrap_or(0.0);
            let max =
                config
                    .get_f64(section, "position_max")?
                    .ok_or_else(|| ConfigError::Missing {
                        section: (*section).to_owned(),
                        option: "position_max".to_owned(),
                    })?;
            if max <= min {
                let line = config
                    .section(section)
                    .and_then(|s| s.get("position_max"))
                    .map_or(0, |o| o.line);
                return Err(ConfigError::Value {
                    file: config.file.clone(),
                    line,
                    section: (*section).to_owned(),
                    option: "position_max".to_owned(),
                    message: format!("must be above {min}"),
                });
            }
            volume.min_mm[axis] = min;
            volume.max_mm[axis] = max;
        }
        Ok(volume)
    }
}

impl fmt::Display for BuildVolume {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = |i: usize| self.max_mm[i] - self.min_mm[i];
        write!(f, "{} × {} × {} mm", s(0), s(1), s(2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
# A comment
[printer]
kinematics: corexy
max_velocity = 300   ; inline comment
[stepper_x]
Position_Max: 250
position_min: -5
[stepper_y]
position_max: 250
[stepper_z]
position_max: 200
[gcode_macro START]
gcode:
  G28
  G1 Z5 # raise
[stepper_z]
position_max: 210
#*# <---------------------- SAVE_CONFIG ---------------------->
#*# DO NOT EDIT THIS BLOCK OR BELOW. The contents are auto-generated.
#*#
#*# [stepper_y]
#*# position_max = 240
";

    #[test]
    fn parses_klipper_syntax() {
        let c = Config::parse(SAMPLE, "printer.cfg").expect("valid");
        assert_eq!(c.get_str("printer", "kinematics"), Some("corexy"));
        assert_eq!(c.get_f64("printer", "max_velocity"), Ok(Some(300.0)));
        assert_eq!(c.get_f64("stepper_x", "position_max"), Ok(Some(250.0)));
        assert_eq!(c.get_str("gcode_macro START", "gcode"), Some("G28\nG1 Z5"));
        // The repeated section merged; the later value won; SAVE_CONFIG overrides the body.
        assert_eq!(c.get_f64("stepper_z", "position_max"), Ok(Some(210.0)));
        assert_eq!(c.get_f64("stepper_y", "position_max"), Ok(Some(240.0)));
        assert_eq!(
            c.sections.iter().filter(|s| s.name == "stepper_z").count(),
            1
        );
    }

    #[test]
    fn build_volume_from_rails() {
        let c = Config::parse(SAMPLE, "printer.cfg").expect("valid");
        let v = BuildVolume::from_config(&c).expect("a box");
        assert_eq!(v.min_mm, [-5.0, 0.0, 0.0]);
        assert_eq!(v.max_mm, [250.0, 240.0, 210.0]);
        assert_eq!(v.to_string(), "255 × 240 × 210 mm");
    }

    #[test]
    fn errors_name_file_line_section_and_option() {
        let e = Config::parse("[printer]\nkinematics cartesian\n", "p.cfg").expect_err("bad");
        assert_eq!(e.to_string(), "p.cfg:2: expected 'option: value'");
        let e = Config::parse("x: 1\n", "p.cfg").expect_err("bad");
        assert_eq!(e.to_string(), "p.cfg:1: option outside of any section");
        let e = Config::parse("[a\n", "p.cfg").expect_err("bad");
        assert_eq!(e.to_string(), "p.cfg:1: section header must end with ']'");

        let c = Config::parse(
            "[printer]\nkinematics: cartesian\n[stepper_x]\nposition_max: abc\n",
            "p.cfg",
        )
        .expect("syntax is fine");
        let e = BuildVolume::from_config(&c).expect_err("bad value");
        assert_eq!(
            e.to_string(),
            "p.cfg:4: Option 'position_max' in section 'stepper_x' is not a number: 'abc'"
        );
        let c = Config::parse(
            "[printer]\nkinematics: cartesian\n[stepper_x]\nposition_max: 0\n",
            "p.cfg",
        )
        .expect("syntax is fine");
        let e = BuildVolume::from_config(&c).expect_err("bad value");
        assert_eq!(
            e.to_string(),
            "p.cfg:4: Option 'position_max' in section 'stepper_x' must be above 0"
        );
        let c = Config::parse("[printer]\nkinematics: delta\n", "p.cfg").expect("syntax is fine");
        assert!(BuildVolume::from_config(&c).is_err());
    }

    #[test]
    fn a_hash_inside_a_value_is_not_a_comment() {
        let c = Config::parse("[led]\ncolor: #ff0000\nname: a#b\n", "p.cfg").expect("valid");
        // Klipper (configparser) only treats whitespace + '#' as a comment start.
        assert_eq!(c.get_str("led", "color"), Some(""));
        assert_eq!(c.get_str("led", "name"), Some("a#b"));
    }

    #[test]
    fn the_bundled_simulated_printer_parses() {
        let text = include_str!("../../../assets/printers/gantry-sim.cfg");
        let c = Config::parse(text, "gantry-sim.cfg").expect("valid");
        let v = BuildVolume::from_config(&c).expect("a box");
        assert_eq!(v.max_mm, [220.0, 220.0, 250.0]);
    }
}
