//! printer.cfg in Klipper's syntax, read the way Klipper reads it, with Klipper's typed getters.
//!
//! # Syntax (Klipper's `configfile.py` on top of Python's `configparser`)
//! - `[section]` headers: the name is everything between the leading `[` and the *last* `]` of the
//!   line, kept as written (case and inner spaces). A repeated section merges into the first one.
//! - `option: value` or `option = value`, split at the first `:` or `=`; option names are
//!   case-insensitive (stored lower-case); a repeated option replaces the earlier value (the
//!   option keeps its first position).
//! - Comments: everything from the first `#` on a line is dropped, wherever it stands (so
//!   `color: #ff0000` has an empty value, `a#b` reads `a`). A `;` starts a comment at the start of
//!   a line or after whitespace only (`a;b` stays).
//! - A line indented deeper than its option's line continues the value; the parts are joined
//!   with `\n`. An empty (or `#`-comment) line inside such a value adds an empty line to it;
//!   trailing empty lines are dropped. A value that starts on the next line (`gcode:`) therefore
//!   begins with `\n`, exactly as Klipper hands it to its modules.
//! - `[include path]` reads other files at that point: the path is relative to the including
//!   file and may be a glob (`*`, `?`, `[...]`, files sorted by name). A path without wildcards
//!   must exist; a glob may match nothing. Including a file that is already being read is an
//!   error. Each stretch of text between includes is parsed on its own, as in Klipper: an option
//!   right after an include needs a section header first.
//! - The SAVE_CONFIG block (the `#*#` lines after Klipper's exact header) holds options of its
//!   own, applied after the main file and its includes. Where the main configuration (includes
//!   too) already sets the same option, Klipper drops the saved line before reading the block
//!   (its `_strip_duplicates`; the option is the line's leading run of letters, digits and `_`),
//!   so **the main file wins**; Gantry does the same and adds a warning. (Klipper's SAVE_CONFIG
//!   command comments out the main file's copy when it writes a value, so after a save the saved
//!   value is the one in effect.) Saved options are never reported unused. A damaged block (text
//!   after the header that is not `#*# ` lines, or `#*# ` lines above it) is ignored with a
//!   warning, as Klipper does.
//! - `\r\n` and lone `\r` end lines, as when Python opens a file in text mode.
//!
//! Checked against Klipper's own reader: the 228 example configs and thousands of generated texts
//! (includes, globs, SAVE_CONFIG blocks, odd whitespace) read identically. Known differences:
//! configparser's `[DEFAULT]` section (whose options would apply to every section) is an ordinary
//! section here; `nan` is not accepted as a number; a `[section]` or `option` line's errors are
//! reported one at a time, with Gantry's wording.
//!
//! # Use
//! [`Config::parse`] reads one text; [`Config::load`] reads a file and its includes through a
//! [`ConfigSource`], so this crate does no I/O ([`MemorySource`] is an in-memory one). A
//! [`Section`] view has Klipper's getters ([`Section::getfloat`] with [`FloatBounds`],
//! [`Section::getint`], [`Section::getboolean`], [`Section::getchoice`], the list getters,
//! [`Section::getpin`]); their errors use Klipper's words and name `file:line`. Every read is
//! recorded, so [`Config::unused_options`], [`Config::unknown_sections`] and
//! [`Config::check_unused`] report what nobody read, as Klipper does after loading its objects.
//!
//! Pins: [`parse_pin`] (`^`/`~` pull, `!` invert, `chip:` prefix), [`check_pin_name`] against an
//! MCU's pin enumeration, [`PinAliases`] for `[board_pins]`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

// ---------------------------------------------------------------------------------------------
// Errors and locations
// ---------------------------------------------------------------------------------------------

/// Where something was written: a file as the caller named it and a 1-based line.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    /// The file's path as given to [`Config::load`] or built from an include.
    pub file: String,
    /// 1-based line number.
    pub line: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// `"file:line: "` or nothing.
fn prefix(at: &Option<Location>) -> String {
    at.as_ref().map_or_else(String::new, |at| format!("{at}: "))
}

/// A failure to read, parse or use a configuration, with the place it refers to.
///
/// The messages are Klipper's (`Option 'x' in section 'y' must be above 0.0`), preceded by
/// `file:line: ` where the place is known.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// The text is not valid config syntax.
    #[error("{at}: {message}")]
    Syntax {
        /// The offending line.
        at: Location,
        /// What is wrong.
        message: String,
    },
    /// A file could not be read, an include does not exist or includes itself.
    #[error("{}{message}", prefix(.at))]
    File {
        /// The `[include]` line, if the file was included.
        at: Option<Location>,
        /// Klipper's message ("Include file 'x' does not exist").
        message: String,
    },
    /// A required option is absent.
    #[error("{}Option '{option}' in section '{section}' must be specified", prefix(.at))]
    Missing {
        /// The section's header, if the section exists.
        at: Option<Location>,
        /// The section searched.
        section: String,
        /// The option missing.
        option: String,
    },
    /// A required section is absent.
    #[error("{file}: Section '{section}' must be specified")]
    MissingSection {
        /// The main file.
        file: String,
        /// The section missing.
        section: String,
    },
    /// An option's value is unusable.
    #[error("{}{message}", prefix(.at))]
    Value {
        /// The option's line (absent for a default that is itself invalid).
        at: Option<Location>,
        /// The section.
        section: String,
        /// The option.
        option: String,
        /// Klipper's whole sentence ("Option 'x' in section 'y' must be above 0.0").
        message: String,
    },
    /// An option nobody read (see [`Config::unused_options`]).
    #[error("{at}: Option '{option}' is not valid in section '{section}'")]
    NotValid {
        /// The option's line.
        at: Location,
        /// The section, lower-case as Klipper prints it.
        section: String,
        /// The option.
        option: String,
    },
    /// A section nobody knows (see [`Config::unknown_sections`]).
    #[error("{at}: Section '{section}' is not a valid config section")]
    InvalidSection {
        /// The section's header.
        at: Location,
        /// The section, lower-case as Klipper prints it.
        section: String,
    },
}

/// A pin description or pin name that Klipper would refuse; the message is Klipper's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PinError {
    /// Klipper's message ("Pin 'PZ9' is not a valid pin name on mcu 'mcu'").
    pub message: String,
}

fn pin_error(message: String) -> PinError {
    PinError { message }
}

// ---------------------------------------------------------------------------------------------
// Files: the source trait, globs and paths
// ---------------------------------------------------------------------------------------------

/// Where [`Config::load`] gets file text from; the binaries implement it on the file system.
///
/// Paths are `/`-separated (a `\` also separates, for Windows); the reader builds include paths
/// by joining the including file's directory with the include's text.
pub trait ConfigSource {
    /// The whole text of the file at `path`.
    ///
    /// # Errors
    /// Why the file cannot be read, in words; it becomes part of the message.
    fn read(&self, path: &str) -> Result<String, String>;

    /// The paths matching `pattern` as Python's `glob.glob` finds them: wildcards `*`, `?` and
    /// `[...]` never cross a `/` and skip names starting with `.` unless the pattern's part does
    /// too; a pattern without wildcards gives itself if that file exists, else nothing. The order
    /// does not matter (the reader sorts). [`glob_match`] implements the matching.
    ///
    /// # Errors
    /// When the search itself fails (not when nothing matches).
    fn glob(&self, pattern: &str) -> Result<Vec<String>, String>;
}

/// A [`ConfigSource`] over texts held in memory: for tests and for bundled configurations.
#[derive(Debug, Clone, Default)]
pub struct MemorySource {
    files: Vec<(String, String)>,
}

impl MemorySource {
    /// An empty source.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the file at `path`.
    pub fn insert(&mut self, path: &str, text: &str) {
        let key = normalize_path(path);
        match self.files.iter_mut().find(|(p, _)| *p == key) {
            Some(entry) => entry.1 = text.to_owned(),
            None => self.files.push((key, text.to_owned())),
        }
    }

    /// Builder form of [`MemorySource::insert`].
    #[must_use]
    pub fn with(mut self, path: &str, text: &str) -> Self {
        self.insert(path, text);
        self
    }
}

impl ConfigSource for MemorySource {
    fn read(&self, path: &str) -> Result<String, String> {
        let key = normalize_path(path);
        self.files
            .iter()
            .find(|(p, _)| *p == key)
            .map(|(_, text)| text.clone())
            .ok_or_else(|| "no such file".to_owned())
    }

    fn glob(&self, pattern: &str) -> Result<Vec<String>, String> {
        let key = normalize_path(pattern);
        if !has_glob_magic(pattern) {
            let exists = self.files.iter().any(|(p, _)| *p == key);
            return Ok(if exists {
                vec![pattern.to_owned()]
            } else {
                Vec::new()
            });
        }
        Ok(self
            .files
            .iter()
            .filter(|(p, _)| glob_match(&key, p))
            .map(|(p, _)| p.clone())
            .collect())
    }
}

/// A source for [`Config::parse`]: no files at all.
struct NoFiles;

impl ConfigSource for NoFiles {
    fn read(&self, _path: &str) -> Result<String, String> {
        Err("Config::parse reads no files; use Config::load".to_owned())
    }

    fn glob(&self, _pattern: &str) -> Result<Vec<String>, String> {
        Ok(Vec::new())
    }
}

fn is_separator(c: char) -> bool {
    c == '/' || c == '\\'
}

/// Whether `s` holds a glob wildcard (`*`, `?` or `[`), as Python's `glob.has_magic`.
fn has_glob_magic(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Whether `path` matches the glob `pattern`, part by part (`/`-separated), with Python's
/// `glob`/`fnmatch` rules: `*` any run of characters, `?` one character, `[abc]`, `[a-z]` and
/// `[!abc]` one character of (or not of) a set; wildcards never match a `/`, and a part with
/// wildcards that does not itself start with `.` matches no name starting with `.`.
/// Case-sensitive, as on Linux.
pub fn glob_match(pattern: &str, path: &str) -> bool {
    let pattern_parts: Vec<&str> = pattern.split(is_separator).collect();
    let path_parts: Vec<&str> = path.split(is_separator).collect();
    pattern_parts.len() == path_parts.len()
        && pattern_parts
            .iter()
            .zip(&path_parts)
            .all(|(pat, name)| match_part(pat, name))
}

/// One path component against one pattern component.
fn match_part(pattern: &str, name: &str) -> bool {
    if !has_glob_magic(pattern) {
        return pattern == name;
    }
    if name.starts_with('.') && !pattern.starts_with('.') {
        return false;
    }
    let pat: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = name.chars().collect();
    // Iterative wildcard matching with one backtrack point for the last `*`.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        let step = match pat.get(p) {
            Some('*') => {
                star = Some((p + 1, t));
                p += 1;
                continue;
            }
            Some('?') => Some(p + 1),
            Some('[') => match char_class(&pat, p) {
                Some((matches, next)) => matches(text[t]).then_some(next),
                None => (text[t] == '[').then_some(p + 1),
            },
            Some(&c) => (c == text[t]).then_some(p + 1),
            None => None,
        };
        match (step, star) {
            (Some(next), _) => {
                p = next;
                t += 1;
            }
            (None, Some((star_p, star_t))) => {
                p = star_p;
                t = star_t + 1;
                star = Some((star_p, star_t + 1));
            }
            (None, None) => return false,
        }
    }
    pat[p..].iter().all(|&c| c == '*')
}

/// The character class starting at `pat[start] == '['`: a matcher and the index after its `]`,
/// or `None` when the `[` is not closed (then it is a literal `[`, as in fnmatch).
fn char_class(pat: &[char], start: usize) -> Option<(impl Fn(char) -> bool + '_, usize)> {
    let mut j = start + 1;
    let negate = pat.get(j) == Some(&'!');
    if negate {
        j += 1;
    }
    let first = j;
    if pat.get(j) == Some(&']') {
        j += 1;
    }
    while j < pat.len() && pat[j] != ']' {
        j += 1;
    }
    if j >= pat.len() {
        return None;
    }
    let set = &pat[first..j];
    let matches = move |c: char| {
        let mut i = 0;
        let mut found = false;
        while i < set.len() {
            if i + 2 < set.len() && set[i + 1] == '-' {
                found |= set[i] <= c && c <= set[i + 2];
                i += 3;
            } else {
                found |= set[i] == c;
                i += 1;
            }
        }
        found != negate
    };
    Some((matches, j + 1))
}

/// The directory part of `path` (Python's `os.path.dirname`).
fn dirname(path: &str) -> &str {
    match path.rfind(is_separator) {
        None => "",
        Some(i) => {
            let head = &path[..=i];
            let trimmed = head.trim_end_matches(is_separator);
            if trimmed.is_empty() { head } else { trimmed }
        }
    }
}

fn is_absolute(path: &str) -> bool {
    let b = path.as_bytes();
    path.starts_with(is_separator)
        || (b.len() >= 3
            && b[0].is_ascii_alphabetic()
            && b[1] == b':'
            && (b[2] == b'/' || b[2] == b'\\'))
}

/// `dir` joined with `rel` (Python's `os.path.join` for two parts).
fn join_path(dir: &str, rel: &str) -> String {
    if dir.is_empty() || is_absolute(rel) {
        rel.to_owned()
    } else if dir.ends_with(is_separator) {
        format!("{dir}{rel}")
    } else {
        format!("{dir}/{rel}")
    }
}

/// `path` with `.`, `..` and repeated separators resolved lexically, `/`-separated: the identity
/// used to notice a file including itself.
fn normalize_path(path: &str) -> String {
    let absolute = path.starts_with(is_separator);
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split(is_separator) {
        match part {
            "" | "." => {}
            ".." if parts.last().is_some_and(|p| *p != "..") => {
                parts.pop();
            }
            ".." if absolute => {}
            _ => parts.push(part),
        }
    }
    let joined = parts.join("/");
    if absolute {
        format!("/{joined}")
    } else {
        joined
    }
}

// ---------------------------------------------------------------------------------------------
// Python's text rules
// ---------------------------------------------------------------------------------------------

/// Python's `str.isspace` (Rust's `char::is_whitespace` plus the four ASCII separators).
fn py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

fn py_trim(s: &str) -> &str {
    s.trim_matches(py_space)
}

/// Drops the underscores Python allows between digits; `None` if one stands elsewhere.
fn without_digit_underscores(s: &str) -> Option<String> {
    let b = s.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        if c == b'_'
            && !(i > 0 && b[i - 1].is_ascii_digit() && b.get(i + 1).is_some_and(u8::is_ascii_digit))
        {
            return None;
        }
    }
    Some(s.replace('_', ""))
}

/// Python's `int(text)` for what fits an `i64`.
fn parse_int(text: &str) -> Option<i64> {
    let t = py_trim(text);
    let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit() || b == b'_') {
        return None;
    }
    without_digit_underscores(t)?.parse().ok()
}

/// Python's `float(text)`, except that NaN is refused (it would pass every bound check).
fn parse_float(text: &str) -> Option<f64> {
    let t = without_digit_underscores(py_trim(text))?;
    t.parse::<f64>().ok().filter(|v| !v.is_nan())
}

/// configparser's booleans.
fn parse_bool(text: &str) -> Option<bool> {
    match text.to_lowercase().as_str() {
        "1" | "yes" | "true" | "on" => Some(true),
        "0" | "no" | "false" | "off" => Some(false),
        _ => None,
    }
}

/// A float as Python's `str()` writes it (`0.0`, `2.5`, `1e-05`), for Klipper's messages.
fn py_float(v: f64) -> String {
    if v.is_nan() {
        return "nan".to_owned();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    let sci = format!("{v:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..16).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.abs());
    }
    if v.fract() == 0.0 {
        format!("{v:.1}")
    } else {
        format!("{v}")
    }
}

// ---------------------------------------------------------------------------------------------
// The parsed data
// ---------------------------------------------------------------------------------------------

/// An internal place: index into `Config::files` and a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Place {
    file: usize,
    line: usize,
}

/// One `option: value` with where it was written.
#[derive(Debug)]
pub struct ConfigOption {
    /// Lower-case option name.
    pub name: String,
    /// The value as Klipper reads it: continuation lines joined with `\n`, trailing empty lines
    /// dropped (see the module doc).
    pub value: String,
    /// 1-based line of the option name, in the file [`Section::location`] names.
    pub line: usize,
    /// Index into [`Config::files`].
    file: usize,
    /// Set from the SAVE_CONFIG block: never reported unused.
    autosave: bool,
    read: AtomicBool,
}

impl Clone for ConfigOption {
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            value: self.value.clone(),
            line: self.line,
            file: self.file,
            autosave: self.autosave,
            read: AtomicBool::new(self.read.load(Ordering::Relaxed)),
        }
    }
}

impl ConfigOption {
    fn at(&self) -> Place {
        Place {
            file: self.file,
            line: self.line,
        }
    }
}

/// One `[section]` and its options in file order (each name once).
///
/// Reading these fields directly is not recorded as access; the [`Section`] getters are.
#[derive(Debug)]
pub struct ConfigSection {
    /// The name between the brackets, as written.
    pub name: String,
    /// 1-based line of the first header, in the file [`Section::header_location`] names.
    pub line: usize,
    /// The options in the order first set; a repeated option replaced the earlier value.
    pub options: Vec<ConfigOption>,
    file: usize,
    /// Some getter looked into this section.
    touched: AtomicBool,
}

impl Clone for ConfigSection {
    fn clone(&self) -> Self {
        Self {
            name: self.name.clone(),
            line: self.line,
            options: self.options.clone(),
            file: self.file,
            touched: AtomicBool::new(self.touched.load(Ordering::Relaxed)),
        }
    }
}

impl ConfigSection {
    /// The option called `name` (any case), if present; not recorded as a read.
    pub fn get(&self, name: &str) -> Option<&ConfigOption> {
        self.find(&name.to_lowercase()).map(|i| &self.options[i])
    }

    fn find(&self, option_lower: &str) -> Option<usize> {
        self.options.iter().position(|o| o.name == option_lower)
    }

    fn at(&self) -> Place {
        Place {
            file: self.file,
            line: self.line,
        }
    }
}

fn find_section<'s>(sections: &'s [ConfigSection], name: &str) -> Option<&'s ConfigSection> {
    sections.iter().find(|s| s.name == name)
}

fn find_or_add(sections: &mut Vec<ConfigSection>, name: &str, at: Place) -> usize {
    if let Some(i) = sections.iter().position(|s| s.name == name) {
        return i;
    }
    sections.push(ConfigSection {
        name: name.to_owned(),
        line: at.line,
        options: Vec::new(),
        file: at.file,
        touched: AtomicBool::new(false),
    });
    sections.len() - 1
}

/// Sets an option (replacing an earlier value in place); returns its index.
fn set_option(
    sections: &mut [ConfigSection],
    section: usize,
    name: String,
    value: String,
    at: Place,
) -> usize {
    let s = &mut sections[section];
    match s.find(&name) {
        Some(i) => {
            let o = &mut s.options[i];
            o.value = value;
            o.line = at.line;
            o.file = at.file;
            o.autosave = false;
            i
        }
        None => {
            s.options.push(ConfigOption {
                name,
                value,
                line: at.line,
                file: at.file,
                autosave: false,
                read: AtomicBool::new(false),
            });
            s.options.len() - 1
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The reader
// ---------------------------------------------------------------------------------------------

/// Klipper's SAVE_CONFIG header, with the newline before it.
const AUTOSAVE_HEADER: &str = "\n#*# <---------------------- SAVE_CONFIG ---------------------->\n#*# DO NOT EDIT THIS BLOCK OR BELOW. The contents are auto-generated.\n#*#\n";

/// The parser state for one stretch of text between includes (configparser's `read_file`).
struct Chunk {
    file: usize,
    section: Option<usize>,
    /// The option whose value continuation lines extend.
    option: Option<usize>,
    /// Indentation (in characters) of the last option or header line.
    indent: usize,
}

impl Chunk {
    fn new(file: usize) -> Self {
        Self {
            file,
            section: None,
            option: None,
            indent: 0,
        }
    }

    /// Drops trailing empty lines from the open value.
    fn close_value(&mut self, sections: &mut [ConfigSection]) {
        if let (Some(s), Some(o)) = (self.section, self.option.take()) {
            let value = &mut sections[s].options[o].value;
            let kept = value.trim_end_matches(py_space).len();
            value.truncate(kept);
        }
    }

    /// One line, its `#` comment already cut.
    fn feed(
        &mut self,
        sections: &mut Vec<ConfigSection>,
        files: &[String],
        line_no: usize,
        line: &str,
    ) -> Result<(), ConfigError> {
        let place = Place {
            file: self.file,
            line: line_no,
        };
        let comment = if py_trim(line).starts_with(';') {
            Some(0)
        } else {
            line.match_indices(';')
                .map(|(i, _)| i)
                .find(|&i| i == 0 || line[..i].chars().next_back().is_some_and(py_space))
        };
        let content = py_trim(&line[..comment.unwrap_or(line.len())]);
        if content.is_empty() {
            if comment.is_none()
                && let (Some(s), Some(o)) = (self.section, self.option)
            {
                sections[s].options[o].value.push('\n');
            }
            return Ok(());
        }
        let indent = line.chars().take_while(|&c| py_space(c)).count();
        if let (Some(s), Some(o)) = (self.section, self.option)
            && indent > self.indent
        {
            let value = &mut sections[s].options[o].value;
            value.push('\n');
            value.push_str(content);
            return Ok(());
        }
        self.indent = indent;
        let syntax = |message: String| ConfigError::Syntax {
            at: Location {
                file: files[place.file].clone(),
                line: line_no,
            },
            message,
        };
        if let Some(name) = section_header(content) {
            self.close_value(sections);
            self.section = Some(find_or_add(sections, name, place));
            return Ok(());
        }
        let Some(section) = self.section else {
            return Err(syntax(format!(
                "File contains no section headers: '{content}' is outside of any [section]"
            )));
        };
        let parsing_error = || {
            syntax(format!(
                "Source contains parsing errors: '{content}' (expected 'option: value' or \
                 '[section]')"
            ))
        };
        let Some(split) = content.find([':', '=']) else {
            return Err(parsing_error());
        };
        let name = content[..split].trim_end_matches(py_space).to_lowercase();
        if name.is_empty() {
            return Err(parsing_error());
        }
        let value = py_trim(&content[split + 1..]).to_owned();
        self.close_value(sections);
        self.option = Some(set_option(sections, section, name, value, place));
        Ok(())
    }
}

/// The name in a `[section]` line: from the first `[` to the last `]`, at least one character.
fn section_header(line: &str) -> Option<&str> {
    let rest = line.strip_prefix('[')?;
    let end = rest.rfind(']')?;
    (end > 0).then(|| &rest[..end])
}

/// `\r\n` and lone `\r` as `\n`, as Python's text-mode `open` reads a file.
fn universal_newlines(text: &str) -> String {
    text.replace("\r\n", "\n").replace('\r', "\n")
}

/// Everything before the line's first `#`.
fn cut_hash(line: &str) -> &str {
    line.find('#').map_or(line, |i| &line[..i])
}

struct Reader<'s> {
    source: &'s dyn ConfigSource,
    files: Vec<String>,
    sections: Vec<ConfigSection>,
    /// Normalized paths of the files being read, outermost first.
    visiting: Vec<String>,
    warnings: Vec<String>,
}

impl Reader<'_> {
    fn file_index(&mut self, name: &str) -> usize {
        match self.files.iter().position(|f| f == name) {
            Some(i) => i,
            None => {
                self.files.push(name.to_owned());
                self.files.len() - 1
            }
        }
    }

    fn location(&self, place: Place) -> Location {
        Location {
            file: self.files[place.file].clone(),
            line: place.line,
        }
    }

    /// Reads the main file's text: the body with its includes, then the SAVE_CONFIG block.
    fn main(&mut self, text: &str, file: &str) -> Result<(), ConfigError> {
        let text = universal_newlines(text);
        let file_idx = self.file_index(file);
        let (body, saved) = self.split_autosave(&text, file);
        self.file(body, file, None)?;
        if let Some((first_line, mut saved)) = saved {
            self.drop_overridden(&mut saved, first_line);
            let mut block = Vec::new();
            let mut chunk = Chunk::new(file_idx);
            for (i, line) in saved.iter().enumerate() {
                chunk.feed(&mut block, &self.files, first_line + i, cut_hash(line))?;
            }
            chunk.close_value(&mut block);
            self.merge_autosave(block);
        }
        Ok(())
    }

    /// The body and, if the block is intact, its first line number and its lines without `#*#`.
    fn split_autosave<'t>(
        &mut self,
        text: &'t str,
        file: &str,
    ) -> (&'t str, Option<(usize, Vec<&'t str>)>) {
        let Some(pos) = text.find(AUTOSAVE_HEADER) else {
            return (text, None);
        };
        let body = &text[..pos];
        let after = &text[pos + AUTOSAVE_HEADER.len()..];
        let block = py_trim(after);
        let block_start =
            pos + AUTOSAVE_HEADER.len() + (after.len() - after.trim_start_matches(py_space).len());
        let first_line = text[..block_start].matches('\n').count() + 1;
        if body.contains("\n#*# ") || block.contains(AUTOSAVE_HEADER) {
            self.warnings.push(format!(
                "{file}: Can't read autosave from config file - autosave state corrupted"
            ));
            return (text, None);
        }
        let mut lines = Vec::new();
        if !block.is_empty() {
            for line in block.split('\n') {
                let Some(rest) = line.strip_prefix("#*#") else {
                    return self.autosave_modified(text, file);
                };
                if rest.is_empty() {
                    lines.push("");
                } else if let Some(rest) = rest.strip_prefix(' ') {
                    lines.push(rest);
                } else {
                    return self.autosave_modified(text, file);
                }
            }
        }
        (body, Some((first_line, lines)))
    }

    fn autosave_modified<'t>(
        &mut self,
        text: &'t str,
        file: &str,
    ) -> (&'t str, Option<(usize, Vec<&'t str>)>) {
        self.warnings.push(format!(
            "{file}: Can't read autosave from config file - modifications after header"
        ));
        (text, None)
    }

    /// Blanks the SAVE_CONFIG lines that set an option the main configuration already sets,
    /// with their continuation lines, by Klipper's line rule: a line's section is the text
    /// between its brackets, its option the leading run of letters, digits and `_`.
    fn drop_overridden(&mut self, lines: &mut [&str], first_line: usize) {
        let mut section = String::new();
        let mut dropping = false;
        for (i, line) in lines.iter_mut().enumerate() {
            let pruned = line
                .find(['#', ';'])
                .map_or(*line, |cut| &line[..cut])
                .trim_end_matches(py_space);
            if pruned.is_empty() {
                continue;
            }
            if pruned.starts_with(py_space) {
                if dropping {
                    *line = "";
                }
                continue;
            }
            dropping = false;
            if pruned.starts_with('[') {
                let mut inner = pruned.chars();
                inner.next();
                inner.next_back();
                section = py_trim(inner.as_str()).to_owned();
                continue;
            }
            let field_len = pruned
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(pruned.len());
            let field = pruned[..field_len].to_lowercase();
            let overridden =
                find_section(&self.sections, &section).is_some_and(|s| s.find(&field).is_some());
            if overridden {
                let at = self.location(Place {
                    file: 0,
                    line: first_line + i,
                });
                self.warnings.push(format!(
                    "{at}: SAVE_CONFIG value of option '{field}' in section '{section}' is \
                     ignored: the configuration above sets it (remove one of them)"
                ));
                *line = "";
                dropping = true;
            }
        }
    }

    /// Applies the SAVE_CONFIG block's options (marked as saved) over the main configuration.
    fn merge_autosave(&mut self, block: Vec<ConfigSection>) {
        for section in block {
            let target = find_or_add(&mut self.sections, &section.name, section.at());
            let options = &mut self.sections[target].options;
            for option in section.options {
                let option = ConfigOption {
                    autosave: true,
                    ..option
                };
                match options.iter_mut().find(|o| o.name == option.name) {
                    Some(existing) => *existing = option,
                    None => options.push(option),
                }
            }
        }
    }

    /// Reads one file's text (no SAVE_CONFIG handling), following its includes.
    fn file(
        &mut self,
        text: &str,
        file: &str,
        included_at: Option<&Location>,
    ) -> Result<(), ConfigError> {
        let identity = normalize_path(file);
        if self.visiting.contains(&identity) {
            return Err(ConfigError::File {
                at: included_at.cloned(),
                message: format!("Recursive include of config file '{file}'"),
            });
        }
        self.visiting.push(identity);
        let file_idx = self.file_index(file);
        let mut chunk = Chunk::new(file_idx);
        for (i, raw) in text.split('\n').enumerate() {
            let line = cut_hash(raw);
            match section_header(line).and_then(|h| h.strip_prefix("include ")) {
                Some(spec) => {
                    chunk.close_value(&mut self.sections);
                    chunk = Chunk::new(file_idx);
                    let at = Location {
                        file: file.to_owned(),
                        line: i + 1,
                    };
                    self.include(file, py_trim(spec), &at)?;
                }
                None => chunk.feed(&mut self.sections, &self.files, i + 1, line)?,
            }
        }
        chunk.close_value(&mut self.sections);
        self.visiting.pop();
        Ok(())
    }

    fn include(&mut self, from: &str, spec: &str, at: &Location) -> Result<(), ConfigError> {
        let pattern = join_path(dirname(from), spec);
        let file_error = |message: String| ConfigError::File {
            at: Some(at.clone()),
            message,
        };
        let mut paths = self.source.glob(&pattern).map_err(|why| {
            file_error(format!("Unable to search for include '{pattern}': {why}"))
        })?;
        if paths.is_empty() && !has_glob_magic(&pattern) {
            return Err(file_error(format!(
                "Include file '{pattern}' does not exist"
            )));
        }
        paths.sort();
        for path in paths {
            let text = self
                .source
                .read(&path)
                .map_err(|why| file_error(format!("Unable to open config file {path} ({why})")))?;
            self.file(&universal_newlines(&text), &path, Some(at))?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------------------

/// A parsed printer.cfg (with its includes and SAVE_CONFIG block), with access tracking.
///
/// Reads through [`Section`] getters are recorded (interior mutability: the config is shared by
/// `&` and stays `Send + Sync`).
#[derive(Debug, Clone)]
pub struct Config {
    /// The main file's name as given, used in messages.
    pub file: String,
    /// Sections in file order, each name once (a repeated section merged into the first).
    /// Reading them directly is not recorded as access; the [`Section`] getters are.
    pub sections: Vec<ConfigSection>,
    /// The main file first, then included files in the order first read.
    files: Vec<String>,
    warnings: Vec<String>,
}

impl Config {
    /// Parses one config text; `file` names it in messages. An `[include]` without wildcards is
    /// an error here (there are no files to read); use [`Config::load`] for includes.
    ///
    /// # Errors
    /// The first syntax error, with its line.
    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        Self::read(text, file, &NoFiles)
    }

    /// Reads the config file at `path` and everything it includes from `source`.
    ///
    /// # Errors
    /// An unreadable file ("Unable to open config file …"), a missing include ("Include file '…'
    /// does not exist"), an include cycle ("Recursive include of config file '…'") or the first
    /// syntax error, each with its `file:line`.
    pub fn load(path: &str, source: &dyn ConfigSource) -> Result<Self, ConfigError> {
        let text = source.read(path).map_err(|why| ConfigError::File {
            at: None,
            message: format!("Unable to open config file {path} ({why})"),
        })?;
        Self::read(&text, path, source)
    }

    fn read(text: &str, file: &str, source: &dyn ConfigSource) -> Result<Self, ConfigError> {
        let mut reader = Reader {
            source,
            files: Vec::new(),
            sections: Vec::new(),
            visiting: Vec::new(),
            warnings: Vec::new(),
        };
        reader.main(text, file)?;
        Ok(Self {
            file: file.to_owned(),
            files: reader.files,
            sections: reader.sections,
            warnings: reader.warnings,
        })
    }

    /// Every file read: the main file, then includes in the order first read.
    pub fn files(&self) -> &[String] {
        &self.files
    }

    /// Things Klipper would log while reading, each with its place: a damaged SAVE_CONFIG block,
    /// a saved option the main configuration overrides.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    fn location(&self, place: Place) -> Location {
        Location {
            file: self.files.get(place.file).cloned().unwrap_or_default(),
            line: place.line,
        }
    }

    /// The text of `option` in `section`, if both exist (recorded as a read): shorthand for
    /// `config.section(section)?.get_opt(option)`.
    pub fn get_str(&self, section: &str, option: &str) -> Option<&str> {
        self.section(section)?.get_opt(option)
    }

    /// A number option with no bounds: shorthand for
    /// `config.getsection(section).getfloat_opt(option, FloatBounds::NONE)`.
    ///
    /// # Errors
    /// When the value is not a number ("Unable to parse option …").
    pub fn get_f64(&self, section: &str, option: &str) -> Result<Option<f64>, ConfigError> {
        self.getsection(section)
            .getfloat_opt(option, FloatBounds::NONE)
    }

    /// The section called exactly `name` (Klipper's section names are case-sensitive), if present.
    pub fn section(&self, name: &str) -> Option<Section<'_>> {
        find_section(&self.sections, name).map(|data| Section {
            config: self,
            name: Cow::Borrowed(&data.name),
            data: Some(data),
        })
    }

    /// The section called `name`, present or not (Klipper's `getsection`): reading from an
    /// absent one gives defaults or "Option 'x' in section 'name' must be specified".
    pub fn getsection(&self, name: &str) -> Section<'_> {
        self.section(name).unwrap_or(Section {
            config: self,
            name: Cow::Owned(name.to_owned()),
            data: None,
        })
    }

    /// The section called `name`.
    ///
    /// # Errors
    /// [`ConfigError::MissingSection`] when it is absent.
    pub fn require_section(&self, name: &str) -> Result<Section<'_>, ConfigError> {
        self.section(name)
            .ok_or_else(|| ConfigError::MissingSection {
                file: self.file.clone(),
                section: name.to_owned(),
            })
    }

    /// Whether a section called exactly `name` exists.
    pub fn has_section(&self, name: &str) -> bool {
        find_section(&self.sections, name).is_some()
    }

    /// All sections in file order.
    pub fn sections(&self) -> impl Iterator<Item = Section<'_>> {
        self.sections.iter().map(|data| Section {
            config: self,
            name: Cow::Borrowed(&data.name),
            data: Some(data),
        })
    }

    /// The sections whose name starts with `prefix` (case-sensitive, as Klipper's
    /// `get_prefix_sections`), in file order.
    pub fn sections_with_prefix(&self, prefix: &str) -> Vec<Section<'_>> {
        self.sections()
            .filter(|s| s.name.starts_with(prefix))
            .collect()
    }

    /// Every option no getter has read, as [`ConfigError::NotValid`] ("Option 'x' is not valid in
    /// section 'y'"), in file order. Options from the SAVE_CONFIG block are never listed, as in
    /// Klipper.
    pub fn unused_options(&self) -> Vec<ConfigError> {
        self.sections
            .iter()
            .flat_map(|s| s.options.iter().map(move |o| (s, o)))
            .filter(|(_, o)| !o.autosave && !o.read.load(Ordering::Relaxed))
            .map(|(s, o)| ConfigError::NotValid {
                at: self.location(o.at()),
                section: s.name.to_lowercase(),
                option: o.name.clone(),
            })
            .collect()
    }

    /// Every section that no getter looked into and that `known` does not name, as
    /// [`ConfigError::InvalidSection`], in file order.
    ///
    /// An entry of `known` names a section when the section's lower-case name equals it, starts
    /// with it followed by a space (`"gcode_macro"` covers `[gcode_macro START]`), or starts with
    /// it when it ends in `_` or a space (`"stepper_"` covers `[stepper_x]`).
    pub fn unknown_sections(&self, known: &[&str]) -> Vec<ConfigError> {
        self.sections
            .iter()
            .filter(|s| !s.touched.load(Ordering::Relaxed))
            .filter(|s| {
                let name = s.name.to_lowercase();
                !known
                    .iter()
                    .any(|k| section_known(&name, &k.to_lowercase()))
            })
            .map(|s| ConfigError::InvalidSection {
                at: self.location(s.at()),
                section: s.name.to_lowercase(),
            })
            .collect()
    }

    /// Klipper's final check after every module has read its options: the first unknown section
    /// or unread option, in file order.
    ///
    /// # Errors
    /// [`ConfigError::InvalidSection`] or [`ConfigError::NotValid`].
    pub fn check_unused(&self, known: &[&str]) -> Result<(), ConfigError> {
        let unknown = self.unknown_sections(known);
        let unused = self.unused_options();
        for section in &self.sections {
            let lower = section.name.to_lowercase();
            let found = unknown.iter().chain(&unused).find(|e| match e {
                ConfigError::InvalidSection { section, .. }
                | ConfigError::NotValid { section, .. } => *section == lower,
                _ => false,
            });
            if let Some(e) = found {
                return Err(e.clone());
            }
        }
        Ok(())
    }
}

fn section_known(name: &str, entry: &str) -> bool {
    if name == entry {
        return true;
    }
    match name.strip_prefix(entry) {
        Some(rest) => rest.starts_with(' ') || entry.ends_with(['_', ' ']),
        None => false,
    }
}

// ---------------------------------------------------------------------------------------------
// Section views and getters
// ---------------------------------------------------------------------------------------------

/// Bounds for [`Section::getfloat`], checked in Klipper's order (minimum, maximum, above,
/// below) on values read from the file, never on defaults.
///
/// `FloatBounds::NONE.above(0.0).max(1.0)`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FloatBounds {
    /// Smallest allowed ("must have minimum of").
    pub minval: Option<f64>,
    /// Largest allowed ("must have maximum of").
    pub maxval: Option<f64>,
    /// Exclusive lower bound ("must be above").
    pub above: Option<f64>,
    /// Exclusive upper bound ("must be below").
    pub below: Option<f64>,
}

impl FloatBounds {
    /// No bounds.
    pub const NONE: Self = Self {
        minval: None,
        maxval: None,
        above: None,
        below: None,
    };

    /// With a minimum.
    #[must_use]
    pub const fn min(self, minval: f64) -> Self {
        Self {
            minval: Some(minval),
            ..self
        }
    }

    /// With a maximum.
    #[must_use]
    pub const fn max(self, maxval: f64) -> Self {
        Self {
            maxval: Some(maxval),
            ..self
        }
    }

    /// With an exclusive lower bound.
    #[must_use]
    pub const fn above(self, above: f64) -> Self {
        Self {
            above: Some(above),
            ..self
        }
    }

    /// With an exclusive upper bound.
    #[must_use]
    pub const fn below(self, below: f64) -> Self {
        Self {
            below: Some(below),
            ..self
        }
    }

    /// The first bound `v` breaks, as the tail of Klipper's message.
    fn violation(&self, v: f64) -> Option<String> {
        if let Some(m) = self.minval.filter(|&m| v < m) {
            return Some(format!("must have minimum of {}", py_float(m)));
        }
        if let Some(m) = self.maxval.filter(|&m| v > m) {
            return Some(format!("must have maximum of {}", py_float(m)));
        }
        if let Some(m) = self.above.filter(|&m| v <= m) {
            return Some(format!("must be above {}", py_float(m)));
        }
        if let Some(m) = self.below.filter(|&m| v >= m) {
            return Some(format!("must be below {}", py_float(m)));
        }
        None
    }
}

/// Bounds for [`Section::getint`]: `IntBounds::NONE.min(1)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IntBounds {
    /// Smallest allowed ("must have minimum of").
    pub minval: Option<i64>,
    /// Largest allowed ("must have maximum of").
    pub maxval: Option<i64>,
}

impl IntBounds {
    /// No bounds.
    pub const NONE: Self = Self {
        minval: None,
        maxval: None,
    };

    /// With a minimum.
    #[must_use]
    pub const fn min(self, minval: i64) -> Self {
        Self {
            minval: Some(minval),
            ..self
        }
    }

    /// With a maximum.
    #[must_use]
    pub const fn max(self, maxval: i64) -> Self {
        Self {
            maxval: Some(maxval),
            ..self
        }
    }

    fn violation(&self, v: i64) -> Option<String> {
        if let Some(m) = self.minval.filter(|&m| v < m) {
            return Some(format!("must have minimum of {m}"));
        }
        if let Some(m) = self.maxval.filter(|&m| v > m) {
            return Some(format!("must have maximum of {m}"));
        }
        None
    }
}

/// What a pin option may carry: `!` (invert) and `^`/`~` (pull-up/down), as Klipper's
/// `lookup_pin(can_invert, can_pullup)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PinFlags {
    /// `!` allowed.
    pub can_invert: bool,
    /// `^` and `~` allowed.
    pub can_pullup: bool,
}

impl PinFlags {
    /// Neither (ADC and SPI pins).
    pub const PLAIN: Self = Self {
        can_invert: false,
        can_pullup: false,
    };
    /// `!` only (step, dir, enable, heater, fan pins).
    pub const INVERT: Self = Self {
        can_invert: true,
        can_pullup: false,
    };
    /// `!`, `^` and `~` (endstops and buttons).
    pub const ENDSTOP: Self = Self {
        can_invert: true,
        can_pullup: true,
    };
}

/// Why a getter failed to turn text into a value.
enum ParseFailure {
    /// Klipper's "Unable to parse option".
    Unparsable,
    /// A message of its own.
    Message(String),
}

/// A view of one section (present or not) with Klipper's getters. Values it returns borrow
/// from the [`Config`] only.
///
/// Option names are case-insensitive. Each getter records the read for
/// [`Config::unused_options`]; [`Section::options`], [`Section::has_option`] and
/// [`Section::location`] do not.
#[derive(Debug, Clone)]
pub struct Section<'a> {
    config: &'a Config,
    /// The section's name (owned only for an absent section).
    name: Cow<'a, str>,
    data: Option<&'a ConfigSection>,
}

impl<'a> Section<'a> {
    /// The section's name as written.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the section is in the configuration.
    pub fn exists(&self) -> bool {
        self.data.is_some()
    }

    /// Where the section's header first appears.
    pub fn header_location(&self) -> Option<Location> {
        self.data.map(|d| self.config.location(d.at()))
    }

    /// Where the option's value in effect was written.
    pub fn location(&self, option: &str) -> Option<Location> {
        self.find(option).map(|o| self.config.location(o.at()))
    }

    /// Whether the option is set (not recorded as a read).
    pub fn has_option(&self, option: &str) -> bool {
        self.find(option).is_some()
    }

    /// All options as `(name, value)` in file order (not recorded as reads).
    pub fn options(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.data
            .into_iter()
            .flat_map(|d| d.options.iter())
            .map(|o| (o.name.as_str(), o.value.as_str()))
    }

    /// The names of the options starting with `prefix` (Klipper's `get_prefix_options`).
    pub fn option_names_with_prefix(&self, prefix: &str) -> Vec<&'a str> {
        let prefix = prefix.to_lowercase();
        self.options()
            .map(|(name, _)| name)
            .filter(|name| name.starts_with(&prefix))
            .collect()
    }

    fn find(&self, option: &str) -> Option<&'a ConfigOption> {
        let data = self.data?;
        data.find(&option.to_lowercase()).map(|i| &data.options[i])
    }

    /// The option, recording the read.
    fn lookup(&self, option: &str) -> Option<&'a ConfigOption> {
        if let Some(d) = self.data {
            d.touched.store(true, Ordering::Relaxed);
        }
        let found = self.find(option);
        if let Some(o) = found {
            o.read.store(true, Ordering::Relaxed);
        }
        found
    }

    fn missing(&self, option: &str) -> ConfigError {
        ConfigError::Missing {
            at: self.header_location(),
            section: self.name.to_string(),
            option: option.to_owned(),
        }
    }

    fn value_error(&self, option: &str, at: Option<Place>, message: String) -> ConfigError {
        ConfigError::Value {
            at: at.map(|p| self.config.location(p)),
            section: self.name.to_string(),
            option: option.to_owned(),
            message,
        }
    }

    fn bound_error(&self, option: &str, at: Place, tail: String) -> ConfigError {
        let message = format!("Option '{option}' in section '{}' {tail}", self.name);
        self.value_error(option, Some(at), message)
    }

    /// The option parsed by `parse`, with its place; `None` when absent.
    fn parsed<T>(
        &self,
        option: &str,
        parse: impl FnOnce(&'a str) -> Result<T, ParseFailure>,
    ) -> Result<Option<(T, Place)>, ConfigError> {
        let Some(o) = self.lookup(option) else {
            return Ok(None);
        };
        match parse(&o.value) {
            Ok(v) => Ok(Some((v, o.at()))),
            Err(ParseFailure::Unparsable) => Err(self.value_error(
                option,
                Some(o.at()),
                format!(
                    "Unable to parse option '{option}' in section '{}'",
                    self.name
                ),
            )),
            Err(ParseFailure::Message(m)) => Err(self.value_error(option, Some(o.at()), m)),
        }
    }

    /// The option's text (Klipper's `get` with no default).
    ///
    /// # Errors
    /// [`ConfigError::Missing`] when absent.
    pub fn get(&self, option: &str) -> Result<&'a str, ConfigError> {
        self.get_opt(option).ok_or_else(|| self.missing(option))
    }

    /// The option's text, or `default` when absent.
    pub fn get_or<'d>(&self, option: &str, default: &'d str) -> &'d str
    where
        'a: 'd,
    {
        self.get_opt(option).unwrap_or(default)
    }

    /// The option's text, if present.
    pub fn get_opt(&self, option: &str) -> Option<&'a str> {
        self.lookup(option).map(|o| o.value.as_str())
    }

    /// An integer (Python's `int()`: sign, digits, `_` between digits), `default` when absent
    /// (`None`: required); `bounds` apply to a value from the file.
    ///
    /// # Errors
    /// Missing, unparsable ("Unable to parse option …") or out of bounds ("must have minimum of").
    pub fn getint(
        &self,
        option: &str,
        default: Option<i64>,
        bounds: IntBounds,
    ) -> Result<i64, ConfigError> {
        match (self.getint_opt(option, bounds)?, default) {
            (Some(v), _) | (None, Some(v)) => Ok(v),
            (None, None) => Err(self.missing(option)),
        }
    }

    /// [`Section::getint`] with no default: `None` when absent.
    ///
    /// # Errors
    /// Unparsable or out of bounds.
    pub fn getint_opt(&self, option: &str, bounds: IntBounds) -> Result<Option<i64>, ConfigError> {
        let Some((v, at)) =
            self.parsed(option, |s| parse_int(s).ok_or(ParseFailure::Unparsable))?
        else {
            return Ok(None);
        };
        match bounds.violation(v) {
            Some(tail) => Err(self.bound_error(option, at, tail)),
            None => Ok(Some(v)),
        }
    }

    /// A number (Python's `float()`, `nan` refused), `default` when absent (`None`: required);
    /// `bounds` apply to a value from the file.
    ///
    /// # Errors
    /// Missing, unparsable, or out of bounds ("must have minimum of", "must have maximum of",
    /// "must be above", "must be below").
    pub fn getfloat(
        &self,
        option: &str,
        default: Option<f64>,
        bounds: FloatBounds,
    ) -> Result<f64, ConfigError> {
        match (self.getfloat_opt(option, bounds)?, default) {
            (Some(v), _) | (None, Some(v)) => Ok(v),
            (None, None) => Err(self.missing(option)),
        }
    }

    /// [`Section::getfloat`] with no default: `None` when absent.
    ///
    /// # Errors
    /// Unparsable or out of bounds.
    pub fn getfloat_opt(
        &self,
        option: &str,
        bounds: FloatBounds,
    ) -> Result<Option<f64>, ConfigError> {
        let Some((v, at)) =
            self.parsed(option, |s| parse_float(s).ok_or(ParseFailure::Unparsable))?
        else {
            return Ok(None);
        };
        match bounds.violation(v) {
            Some(tail) => Err(self.bound_error(option, at, tail)),
            None => Ok(Some(v)),
        }
    }

    /// A boolean (`1/yes/true/on`, `0/no/false/off`, any case), `default` when absent
    /// (`None`: required).
    ///
    /// # Errors
    /// Missing or unparsable.
    pub fn getboolean(&self, option: &str, default: Option<bool>) -> Result<bool, ConfigError> {
        let parsed = self.parsed(option, |s| parse_bool(s).ok_or(ParseFailure::Unparsable))?;
        match (parsed, default) {
            (Some((v, _)), _) | (None, Some(v)) => Ok(v),
            (None, None) => Err(self.missing(option)),
        }
    }

    /// The option's text, which must be one of `choices` (exactly); `default` when absent
    /// (`None`: required; a default is checked too, as in Klipper).
    ///
    /// # Errors
    /// Missing, or "Choice 'z' for option 'x' in section 'y' is not a valid choice".
    pub fn getchoice<'c>(
        &self,
        option: &str,
        choices: &[&'c str],
        default: Option<&str>,
    ) -> Result<&'c str, ConfigError> {
        let pairs: Vec<(&str, &'c str)> = choices.iter().map(|&c| (c, c)).collect();
        self.getchoice_map(option, &pairs, default)
    }

    /// Like [`Section::getchoice`], mapping each choice's text to a value (Klipper's dict form).
    ///
    /// # Errors
    /// Missing, or not a valid choice.
    pub fn getchoice_map<T: Clone>(
        &self,
        option: &str,
        choices: &[(&str, T)],
        default: Option<&str>,
    ) -> Result<T, ConfigError> {
        let (text, at) = match (self.lookup(option), default) {
            (Some(o), _) => (o.value.as_str(), Some(o.at())),
            (None, Some(d)) => (d, None),
            (None, None) => return Err(self.missing(option)),
        };
        match choices.iter().find(|(name, _)| *name == text) {
            Some((_, value)) => Ok(value.clone()),
            None => Err(self.value_error(
                option,
                at,
                format!(
                    "Choice '{text}' for option '{option}' in section '{}' is not a valid choice",
                    self.name
                ),
            )),
        }
    }

    fn list<T: Clone>(
        &self,
        option: &str,
        default: Option<&[T]>,
        sep: &str,
        count: Option<usize>,
        item: impl Fn(&'a str) -> Option<T>,
    ) -> Result<Vec<T>, ConfigError> {
        let section: &str = &self.name;
        let parsed = self.parsed(option, |value| {
            parse_list(value, sep, count, &item, option, section)
        })?;
        match (parsed, default) {
            (Some((v, _)), _) => Ok(v),
            (None, Some(d)) => Ok(d.to_vec()),
            (None, None) => Err(self.missing(option)),
        }
    }

    /// A list of texts split at `sep` (Klipper's `getlist`: parts whitespace-trimmed, a blank
    /// value is an empty list), `default` when absent (`None`: required).
    ///
    /// # Errors
    /// Missing, or "Option 'x' in section 'y' must have N elements" when `count` differs.
    pub fn getlist(
        &self,
        option: &str,
        default: Option<&[&'a str]>,
        sep: &str,
        count: Option<usize>,
    ) -> Result<Vec<&'a str>, ConfigError> {
        self.list(option, default, sep, count, Some)
    }

    /// [`Section::getlist`] of integers.
    ///
    /// # Errors
    /// Missing, unparsable or the wrong count.
    pub fn getintlist(
        &self,
        option: &str,
        default: Option<&[i64]>,
        sep: &str,
        count: Option<usize>,
    ) -> Result<Vec<i64>, ConfigError> {
        self.list(option, default, sep, count, parse_int)
    }

    /// [`Section::getlist`] of numbers.
    ///
    /// # Errors
    /// Missing, unparsable or the wrong count.
    pub fn getfloatlist(
        &self,
        option: &str,
        default: Option<&[f64]>,
        sep: &str,
        count: Option<usize>,
    ) -> Result<Vec<f64>, ConfigError> {
        self.list(option, default, sep, count, parse_float)
    }

    fn lists<T>(
        &self,
        option: &str,
        seps: [&str; 2],
        count: Option<usize>,
        item: impl Fn(&'a str) -> Option<T>,
    ) -> Result<Option<Vec<Vec<T>>>, ConfigError> {
        let section: &str = &self.name;
        let [inner, outer] = seps;
        let parsed = self.parsed(option, |value| {
            if outer.is_empty() {
                return Err(ParseFailure::Unparsable);
            }
            split_list(value, outer)
                .into_iter()
                .filter(|p| !p.is_empty())
                .map(|p| parse_list(p, inner, count, &item, option, section))
                .collect()
        })?;
        Ok(parsed.map(|(v, _)| v))
    }

    /// A list of lists (Klipper's `getlists` with two separators, given in Klipper's order:
    /// `[inner, outer]`, e.g. `[",", "\n"]` for one comma-separated row per line). Empty outer
    /// parts are skipped; `count` applies to each inner list.
    ///
    /// # Errors
    /// Missing, or the wrong count.
    pub fn getlists(
        &self,
        option: &str,
        seps: [&str; 2],
        count: Option<usize>,
    ) -> Result<Vec<Vec<&'a str>>, ConfigError> {
        self.lists(option, seps, count, Some)?
            .ok_or_else(|| self.missing(option))
    }

    /// [`Section::getlists`], `None` when absent.
    ///
    /// # Errors
    /// The wrong count.
    pub fn getlists_opt(
        &self,
        option: &str,
        seps: [&str; 2],
        count: Option<usize>,
    ) -> Result<Option<Vec<Vec<&'a str>>>, ConfigError> {
        self.lists(option, seps, count, Some)
    }

    /// [`Section::getlists`] of numbers.
    ///
    /// # Errors
    /// Missing, unparsable or the wrong count.
    pub fn getfloatlists(
        &self,
        option: &str,
        seps: [&str; 2],
        count: Option<usize>,
    ) -> Result<Vec<Vec<f64>>, ConfigError> {
        self.lists(option, seps, count, parse_float)?
            .ok_or_else(|| self.missing(option))
    }

    /// [`Section::getfloatlists`], `None` when absent.
    ///
    /// # Errors
    /// Unparsable or the wrong count.
    pub fn getfloatlists_opt(
        &self,
        option: &str,
        seps: [&str; 2],
        count: Option<usize>,
    ) -> Result<Option<Vec<Vec<f64>>>, ConfigError> {
        self.lists(option, seps, count, parse_float)
    }

    /// A pin description (see [`parse_pin`]).
    ///
    /// # Errors
    /// Missing, or Klipper's "Invalid pin description" with the option's place.
    pub fn getpin(&self, option: &str, flags: PinFlags) -> Result<PinDesc, ConfigError> {
        self.getpin_opt(option, flags)?
            .ok_or_else(|| self.missing(option))
    }

    /// [`Section::getpin`], `None` when absent.
    ///
    /// # Errors
    /// An invalid pin description.
    pub fn getpin_opt(
        &self,
        option: &str,
        flags: PinFlags,
    ) -> Result<Option<PinDesc>, ConfigError> {
        Ok(self
            .parsed(option, |s| {
                parse_pin(s, flags).map_err(|e| ParseFailure::Message(e.message))
            })?
            .map(|(pin, _)| pin))
    }
}

/// Parts of `value` split at `sep`, trimmed; nothing for a blank value.
fn split_list<'v>(value: &'v str, sep: &str) -> Vec<&'v str> {
    if py_trim(value).is_empty() {
        return Vec::new();
    }
    value.split(sep).map(py_trim).collect()
}

fn parse_list<'v, T>(
    value: &'v str,
    sep: &str,
    count: Option<usize>,
    item: impl Fn(&'v str) -> Option<T>,
    option: &str,
    section: &str,
) -> Result<Vec<T>, ParseFailure> {
    if sep.is_empty() {
        return Err(ParseFailure::Unparsable);
    }
    let items = split_list(value, sep)
        .into_iter()
        .map(item)
        .collect::<Option<Vec<T>>>()
        .ok_or(ParseFailure::Unparsable)?;
    match count {
        Some(n) if items.len() != n => Err(ParseFailure::Message(format!(
            "Option '{option}' in section '{section}' must have {n} elements"
        ))),
        _ => Ok(items),
    }
}

// ---------------------------------------------------------------------------------------------
// Pins
// ---------------------------------------------------------------------------------------------

/// A pin's pull resistor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Pull {
    /// None requested.
    #[default]
    None,
    /// `^`: pull-up (Klipper's `pullup = 1`).
    Up,
    /// `~`: pull-down (Klipper's `pullup = -1`).
    Down,
}

/// A parsed pin description: `[^~][!][chip:]name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinDesc {
    /// The chip: `mcu` unless written (`z:P1.28`, `probe:z_virtual_endstop`).
    pub chip: String,
    /// The pin's name on that chip (before any `[board_pins]` alias is resolved).
    pub pin: String,
    /// `!`: active low.
    pub invert: bool,
    /// `^` or `~`.
    pub pull: Pull,
}

/// Parses Klipper's pin syntax: optional `^` (pull-up) or `~` (pull-down) when `flags` allow a
/// pull, then `!` (invert) when they allow inverting, then `chip:` (default `mcu`), then the
/// pin's name (no whitespace, `^`, `~`, `!` or `:` left in it).
///
/// # Errors
/// Klipper's "Invalid pin description '…'\nFormat is: `[^~] [!] [chip_name:] pin_name`".
pub fn parse_pin(desc: &str, flags: PinFlags) -> Result<PinDesc, PinError> {
    let mut rest = py_trim(desc);
    let mut pull = Pull::None;
    if flags.can_pullup
        && let Some(sign) = rest.chars().next().filter(|c| matches!(c, '^' | '~'))
    {
        pull = if sign == '^' { Pull::Up } else { Pull::Down };
        rest = py_trim(&rest[1..]);
    }
    let mut invert = false;
    if flags.can_invert
        && let Some(r) = rest.strip_prefix('!')
    {
        invert = true;
        rest = py_trim(r);
    }
    let (chip, pin) = match rest.split_once(':') {
        Some((chip, pin)) => (py_trim(chip), py_trim(pin)),
        None => ("mcu", rest),
    };
    if pin.contains(['^', '~', '!', ':']) || pin.contains(py_space) {
        let mut format = String::new();
        if flags.can_pullup {
            format.push_str("[^~] ");
        }
        if flags.can_invert {
            format.push_str("[!] ");
        }
        return Err(pin_error(format!(
            "Invalid pin description '{desc}'\nFormat is: {format}[chip_name:] pin_name"
        )));
    }
    Ok(PinDesc {
        chip: chip.to_owned(),
        pin: pin.to_owned(),
        invert,
        pull,
    })
}

impl PinDesc {
    /// Checks the chip against the known chip names (`mcu`, extra MCUs, `probe`, TMC drivers…).
    ///
    /// # Errors
    /// Klipper's "Unknown pin chip name '…'".
    pub fn check_chip<'n>(&self, chips: impl IntoIterator<Item = &'n str>) -> Result<(), PinError> {
        if chips.into_iter().any(|c| c == self.chip) {
            Ok(())
        } else {
            Err(pin_error(format!("Unknown pin chip name '{}'", self.chip)))
        }
    }
}

/// Checks a (resolved) pin name against an MCU's pin enumeration, the names its data
/// dictionary lists.
///
/// # Errors
/// Klipper's "Pin 'x' is not a valid pin name on mcu 'y'".
pub fn check_pin_name<'n>(
    pin: &str,
    mcu: &str,
    names: impl IntoIterator<Item = &'n str>,
) -> Result<(), PinError> {
    if names.into_iter().any(|n| n == pin) {
        Ok(())
    } else {
        Err(pin_error(format!(
            "Pin '{pin}' is not a valid pin name on mcu '{mcu}'"
        )))
    }
}

/// The pin aliases and reserved pins `[board_pins]` sections give one MCU.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PinAliases {
    aliases: HashMap<String, String>,
    reserved: HashMap<String, String>,
}

impl PinAliases {
    /// Reads every `[board_pins]` / `[board_pins name]` section whose `mcu` list (default
    /// `mcu`) names `mcu`: `aliases` (required) and `aliases_*` options, each a comma-separated
    /// list of `name=pin`; a value in `<…>` reserves the pin instead.
    ///
    /// # Errors
    /// Klipper's alias errors ("Alias x mapped to y - can't alias to z", "Invalid pin alias 'x'",
    /// "Pin x reserved for y - can't reserve for z"), or a malformed list, with the option's place.
    pub fn from_config(config: &Config, mcu: &str) -> Result<Self, ConfigError> {
        let mut out = Self::default();
        let sections = config
            .sections()
            .filter(|s| s.name() == "board_pins" || s.name().starts_with("board_pins "));
        for section in sections {
            let mcus = section.getlist("mcu", Some(&["mcu"][..]), ",", None)?;
            if !mcus.contains(&mcu) {
                continue;
            }
            let mut options = vec!["aliases"];
            options.extend(section.option_names_with_prefix("aliases_"));
            for option in options {
                let pairs = section.getlists(option, ["=", ","], Some(2))?;
                for pair in pairs {
                    let (name, value) = (pair[0], pair[1]);
                    let result = if value.starts_with('<') && value.ends_with('>') {
                        out.reserve(name, value)
                    } else {
                        out.alias(name, value)
                    };
                    result.map_err(|e| ConfigError::Value {
                        at: section.location(option),
                        section: section.name().to_owned(),
                        option: option.to_owned(),
                        message: e.message,
                    })?;
                }
            }
        }
        Ok(out)
    }

    fn reserve(&mut self, pin: &str, by: &str) -> Result<(), PinError> {
        if let Some(existing) = self.reserved.get(pin).filter(|e| *e != by) {
            return Err(pin_error(format!(
                "Pin {pin} reserved for {existing} - can't reserve for {by}"
            )));
        }
        self.reserved.insert(pin.to_owned(), by.to_owned());
        Ok(())
    }

    fn alias(&mut self, alias: &str, pin: &str) -> Result<(), PinError> {
        if let Some(existing) = self.aliases.get(alias).filter(|e| *e != pin) {
            return Err(pin_error(format!(
                "Alias {alias} mapped to {existing} - can't alias to {pin}"
            )));
        }
        if pin.contains(['^', '~', '!', ':']) || pin.contains(py_space) {
            return Err(pin_error(format!("Invalid pin alias '{pin}'\n")));
        }
        let target = self
            .aliases
            .get(pin)
            .cloned()
            .unwrap_or_else(|| pin.to_owned());
        for existing in self.aliases.values_mut() {
            if existing == alias {
                existing.clone_from(&target);
            }
        }
        self.aliases.insert(alias.to_owned(), target);
        Ok(())
    }

    /// The MCU pin name `pin` stands for (itself when it is no alias).
    ///
    /// # Errors
    /// Klipper's "pin x is reserved for y".
    pub fn resolve<'p>(&'p self, pin: &'p str) -> Result<&'p str, PinError> {
        let resolved = self.aliases.get(pin).map_or(pin, String::as_str);
        match self.reserved.get(resolved) {
            Some(by) => Err(pin_error(format!("pin {pin} is reserved for {by}"))),
            None => Ok(resolved),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The build volume
// ---------------------------------------------------------------------------------------------

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
    /// limited variants) from `[stepper_x|y|z]` `position_min` (default 0) and `position_max`
    /// (which must be above `position_min`, as Klipper's rail requires).
    ///
    /// # Errors
    /// When `kinematics` or `position_max` is missing or a value is invalid (Klipper's messages),
    /// or for kinematics whose volume is not a box of rails (delta, polar, …), named in the
    /// message.
    pub fn from_config(config: &Config) -> Result<Self, ConfigError> {
        let printer = config.getsection("printer");
        let kinematics = printer.get("kinematics")?;
        let boxed = [
            "cartesian",
            "corexy",
            "corexz",
            "hybrid_corexy",
            "hybrid_corexz",
        ];
        if !(boxed.contains(&kinematics) || kinematics.starts_with("limited_")) {
            return Err(ConfigError::Value {
                at: printer.location("kinematics"),
                section: "printer".into(),
                option: "kinematics".into(),
                message: format!(
                    "Option 'kinematics' in section 'printer' is '{kinematics}': the build volume \
                     of this kinematics is not supported yet"
                ),
            });
        }
        let mut volume = BuildVolume {
            min_mm: [0.0; 3],
            max_mm: [0.0; 3],
        };
        for (axis, name) in ["stepper_x", "stepper_y", "stepper_z"]
            .into_iter()
            .enumerate()
        {
            let rail = config.getsection(name);
            let min = rail.getfloat("position_min", Some(0.0), FloatBounds::NONE)?;
            let max = rail.getfloat("position_max", None, FloatBounds::NONE.above(min))?;
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

    fn parse(text: &str) -> Config {
        Config::parse(text, "p.cfg").expect("valid")
    }

    fn err(text: &str) -> String {
        Config::parse(text, "p.cfg")
            .expect_err("invalid")
            .to_string()
    }

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
#*# position_endstop = 1.5
#*#
#*# [bed_mesh default]
#*# points =
#*# \t  0.1, 0.2
#*# \t  0.3, 0.4
";

    #[test]
    fn parses_klipper_syntax() {
        let c = parse(SAMPLE);
        let printer = c.section("printer").expect("present");
        assert_eq!(printer.get("kinematics"), Ok("corexy"));
        assert_eq!(
            printer.getfloat("max_velocity", None, FloatBounds::NONE),
            Ok(300.0)
        );
        let x = c.getsection("stepper_x");
        assert_eq!(
            x.getfloat("position_max", None, FloatBounds::NONE),
            Ok(250.0)
        );
        // Klipper hands a value that starts on the next line over with a leading newline.
        assert_eq!(
            c.getsection("gcode_macro START").get("gcode"),
            Ok("\nG28\nG1 Z5")
        );
        // The repeated section merged; the later value won.
        let z = c.getsection("stepper_z");
        assert_eq!(z.get("position_max"), Ok("210"));
        assert_eq!(z.location("position_max").map(|l| l.line), Some(17));
        assert_eq!(c.sections().filter(|s| s.name() == "stepper_z").count(), 1);
    }

    #[test]
    fn the_main_file_wins_over_save_config_as_in_klipper() {
        let c = parse(SAMPLE);
        let y = c.getsection("stepper_y");
        // The body sets position_max, so Klipper drops the saved value (and we warn).
        assert_eq!(y.get("position_max"), Ok("250"));
        assert_eq!(c.warnings().len(), 1);
        assert!(
            c.warnings()[0].starts_with("p.cfg:23: SAVE_CONFIG value of option 'position_max'")
        );
        // Options only the block sets are added, with their real lines.
        assert_eq!(y.get("position_endstop"), Ok("1.5"));
        assert_eq!(y.location("position_endstop").map(|l| l.line), Some(24));
        let mesh = c.getsection("bed_mesh default");
        assert_eq!(mesh.get("points"), Ok("\n0.1, 0.2\n0.3, 0.4"));
        assert_eq!(
            mesh.getfloatlists("points", [",", "\n"], Some(2)),
            Ok(vec![vec![0.1, 0.2], vec![0.3, 0.4]])
        );
        // Saved options are never reported unused; the body's are.
        let unused: Vec<String> = c.unused_options().iter().map(|e| e.to_string()).collect();
        assert!(unused.contains(
            &"p.cfg:7: Option 'position_min' is not valid in section 'stepper_x'".to_owned()
        ));
        assert!(!unused.iter().any(|u| u.contains("position_endstop")));
    }

    #[test]
    fn a_damaged_save_config_block_is_ignored_with_a_warning() {
        let header = AUTOSAVE_HEADER;
        let text = format!(
            "[printer]\nkinematics: none{header}#*# [printer]\n#*# max_velocity = 5\nextra: 1\n"
        );
        let c = parse(&text);
        assert!(!c.getsection("printer").has_option("max_velocity"));
        assert!(c.warnings()[0].contains("modifications after header"));
        // `#*#` lines in the body mean the block was tampered with.
        let text = format!(
            "[printer]\n#*# x = 1\nkinematics: none{header}#*# [printer]\n#*# max_velocity = 5\n"
        );
        let c = parse(&text);
        assert!(!c.getsection("printer").has_option("max_velocity"));
        assert!(c.warnings()[0].contains("autosave state corrupted"));
        // Without the exact header, `#*#` lines are comments.
        let c = parse("[printer]\n#*# [stepper_x]\n#*# position_max = 5\n");
        assert!(!c.has_section("stepper_x"));
    }

    #[test]
    fn comments_follow_klipper() {
        let c = parse(
            "[led]\ncolor: #ff0000\nname: a#b\nsemi: a;b\nsemi2: a ;b\nsemi3: a\t;b\n; whole line\n",
        );
        let led = c.getsection("led");
        // Klipper cuts every line at its first '#'; ';' only after whitespace.
        assert_eq!(led.get("color"), Ok(""));
        assert_eq!(led.get("name"), Ok("a"));
        assert_eq!(led.get("semi"), Ok("a;b"));
        assert_eq!(led.get("semi2"), Ok("a"));
        assert_eq!(led.get("semi3"), Ok("a"));
        // A section header with a comment after it.
        let c = parse("[printer] # main\nx: 1\n[fan] ; part\ny: 2\n");
        assert!(c.has_section("printer") && c.has_section("fan"));
    }

    #[test]
    fn multi_line_values_follow_configparser() {
        let c = parse(
            "[m]\ngcode:\n  G28\n# comment at column 0\n\n  G1 X1 ; a ';' comment line keeps no blank\n    ; only a comment\n  G1 X2\n\n\nnext: 1\n  more\n",
        );
        let m = c.getsection("m");
        // '#' lines and blank lines inside a value become empty lines; ';' comment lines do not.
        assert_eq!(m.get("gcode"), Ok("\nG28\n\n\nG1 X1\nG1 X2"));
        assert_eq!(m.get("next"), Ok("1\nmore"));
        // Deeper than the option line continues it, the same depth starts a new option.
        let c = parse("[s]\n  a: 1\n   b: 2\n  c: 3\n");
        let s = c.getsection("s");
        assert_eq!(s.get("a"), Ok("1\nb: 2"));
        assert_eq!(s.get("c"), Ok("3"));
        // Continuation right after a header is a syntax error.
        assert_eq!(
            err("[s]\n  text without delimiter\n"),
            "p.cfg:2: Source contains parsing errors: 'text without delimiter' (expected 'option: value' or '[section]')"
        );
    }

    #[test]
    fn headers_and_options_edge_cases() {
        let c = parse("[ spaced ]\nKey With Space : v = w\n[a]b]\nx=1:2\n[c] trailing\n\r\n");
        // configparser keeps the name as written between '[' and the last ']'.
        let s = c.getsection(" spaced ");
        assert!(s.exists());
        assert_eq!(s.get("key with space"), Ok("v = w"));
        assert_eq!(c.getsection("a]b").get("x"), Ok("1:2"));
        assert!(c.has_section("c"));
        // Case-sensitive section names, case-insensitive options.
        let c = parse("[Printer]\nMAX_Velocity: 1\n");
        assert!(!c.has_section("printer"));
        assert_eq!(c.getsection("Printer").get("max_velocity"), Ok("1"));
        // CRLF reads as LF.
        let c = parse("[p]\r\nx: 1\r\ny:\r\n  2\r\n");
        assert_eq!(c.getsection("p").get("y"), Ok("\n2"));
    }

    #[test]
    fn syntax_errors_name_file_and_line() {
        assert_eq!(
            err("[printer]\nkinematics cartesian\n"),
            "p.cfg:2: Source contains parsing errors: 'kinematics cartesian' (expected 'option: value' or '[section]')"
        );
        assert_eq!(
            err("x: 1\n"),
            "p.cfg:1: File contains no section headers: 'x: 1' is outside of any [section]"
        );
        assert!(err("[a\n").starts_with("p.cfg:1: File contains no section headers"));
        assert!(err("[a]\n[]\n").starts_with("p.cfg:2: Source contains parsing errors"));
        assert!(err("[a]\n: v\n").starts_with("p.cfg:2: Source contains parsing errors"));
    }

    fn source() -> MemorySource {
        MemorySource::new()
            .with("cfg/printer.cfg", "[printer]\nkinematics: cartesian\n[include parts/*.cfg]\n[stepper_x]\nposition_max: 200\n[include macros.cfg]\n")
            .with("cfg/parts/b.cfg", "[stepper_x]\nposition_max: 100\nposition_min: -1\n")
            .with("cfg/parts/a.cfg", "[extruder]\nnozzle_diameter: 0.4\n[include ../macros.cfg]\n")
            .with("cfg/parts/.hidden.cfg", "[hidden]\n")
            .with("cfg/macros.cfg", "[gcode_macro X]\ngcode:\n  G28\n")
    }

    #[test]
    fn includes_follow_klipper() {
        let c = Config::load("cfg/printer.cfg", &source()).expect("valid");
        // Sorted glob matches, relative to the including file, hidden files skipped; overrides
        // apply in reading order.
        assert_eq!(
            c.files(),
            [
                "cfg/printer.cfg",
                "cfg/parts/a.cfg",
                "cfg/parts/../macros.cfg",
                "cfg/parts/b.cfg",
                "cfg/macros.cfg"
            ]
        );
        let x = c.getsection("stepper_x");
        assert_eq!(x.get("position_max"), Ok("200"));
        assert_eq!(
            x.location("position_min"),
            Some(Location {
                file: "cfg/parts/b.cfg".into(),
                line: 3
            })
        );
        assert!(!c.has_section("hidden"));
        assert_eq!(c.getsection("gcode_macro X").get("gcode"), Ok("\nG28"));

        // A glob that matches nothing is fine; a plain path must exist.
        let s = MemorySource::new().with("p.cfg", "[include none/*.cfg]\n[include missing.cfg]\n");
        assert_eq!(
            Config::load("p.cfg", &s).expect_err("missing").to_string(),
            "p.cfg:2: Include file 'missing.cfg' does not exist"
        );
        // Cycles are errors.
        let s = MemorySource::new()
            .with("a.cfg", "[x]\n[include b.cfg]\n")
            .with("b.cfg", "[include ./a.cfg]\n");
        assert_eq!(
            Config::load("a.cfg", &s).expect_err("cycle").to_string(),
            "b.cfg:1: Recursive include of config file './a.cfg'"
        );
        // Each stretch between includes is parsed on its own: an option needs a header first.
        let s = MemorySource::new()
            .with("a.cfg", "[x]\n[include b.cfg]\ny: 1\n")
            .with("b.cfg", "[z]\n");
        assert!(
            Config::load("a.cfg", &s)
                .expect_err("no header")
                .to_string()
                .starts_with("a.cfg:3: File contains no section headers")
        );
        // Included files have no SAVE_CONFIG block, and the main file must be readable.
        assert_eq!(
            Config::load("nope.cfg", &s)
                .expect_err("unreadable")
                .to_string(),
            "Unable to open config file nope.cfg (no such file)"
        );
        // Config::parse reads no files.
        assert!(Config::parse("[include x.cfg]\n", "p.cfg").is_err());
        assert!(Config::parse("[include x*.cfg]\n", "p.cfg").is_ok());
    }

    #[test]
    fn glob_and_path_helpers() {
        assert!(glob_match("a/*.cfg", "a/b.cfg"));
        assert!(!glob_match("a/*.cfg", "a/b/c.cfg"));
        assert!(!glob_match("*.cfg", ".x.cfg"));
        assert!(glob_match(".*.cfg", ".x.cfg"));
        assert!(glob_match("p?.cfg", "p1.cfg"));
        assert!(glob_match("p[0-9].cfg", "p7.cfg"));
        assert!(!glob_match("p[!0-9].cfg", "p7.cfg"));
        assert!(glob_match("p[!0-9].cfg", "px.cfg"));
        assert!(glob_match("p[.cfg", "p[.cfg"));
        assert!(glob_match("*a*b*", "xxaxxbxx"));
        assert!(!glob_match("*a*b", "xxaxxbxx"));
        assert!(glob_match("[]]", "]"));
        assert_eq!(dirname("a/b/c.cfg"), "a/b");
        assert_eq!(dirname("/c.cfg"), "/");
        assert_eq!(dirname("c.cfg"), "");
        assert_eq!(join_path("a", "/abs.cfg"), "/abs.cfg");
        assert_eq!(normalize_path("./a//b/../c.cfg"), "a/c.cfg");
        assert_eq!(normalize_path("/../a"), "/a");
    }

    #[test]
    fn getters_use_klipper_defaults_and_messages() {
        let c = parse(
            "[s]\nf: 2.5\nneg: -1\ni: 7\nbad: x1\nb: Yes\nbb: maybe\nch: mzv\nl: a, b ,c\nfl: 1,2,x\nempty:\nunder: 1_000\n",
        );
        let s = c.getsection("s");
        let fb = FloatBounds::NONE;
        assert_eq!(s.getfloat("f", None, fb.above(0.0).below(3.0)), Ok(2.5));
        assert_eq!(s.getfloat("absent", Some(9.0), fb.above(10.0)), Ok(9.0));
        assert_eq!(s.getfloat_opt("absent", fb), Ok(None));
        assert_eq!(s.getint("i", None, IntBounds::NONE.min(1).max(7)), Ok(7));
        assert_eq!(s.getint("under", None, IntBounds::NONE), Ok(1000));
        assert_eq!(s.getboolean("b", None), Ok(true));
        assert_eq!(s.getboolean("absent", Some(false)), Ok(false));
        assert_eq!(s.getchoice("ch", &["zv", "mzv"], None), Ok("mzv"));
        assert_eq!(s.getchoice("absent", &["zv", "mzv"], Some("zv")), Ok("zv"));
        assert_eq!(s.getlist("l", None, ",", Some(3)), Ok(vec!["a", "b", "c"]));
        assert_eq!(s.getlist("empty", None, ",", None), Ok(vec![]));
        assert_eq!(
            s.getintlist("absent", Some(&[1, 2][..]), ",", None),
            Ok(vec![1, 2])
        );
        assert_eq!(s.get_or("absent", "dflt"), "dflt");
        assert_eq!(s.get_opt("absent"), None);

        let e = |r: Result<f64, ConfigError>| r.expect_err("bad").to_string();
        assert_eq!(
            e(s.getfloat("f", None, fb.min(3.0))),
            "p.cfg:2: Option 'f' in section 's' must have minimum of 3.0"
        );
        assert_eq!(
            e(s.getfloat("f", None, fb.max(1.5))),
            "p.cfg:2: Option 'f' in section 's' must have maximum of 1.5"
        );
        assert_eq!(
            e(s.getfloat("neg", None, fb.above(0.0))),
            "p.cfg:3: Option 'neg' in section 's' must be above 0.0"
        );
        assert_eq!(
            e(s.getfloat("f", None, fb.below(1e-5))),
            "p.cfg:2: Option 'f' in section 's' must be below 1e-05"
        );
        assert_eq!(
            e(s.getfloat("bad", None, fb)),
            "p.cfg:5: Unable to parse option 'bad' in section 's'"
        );
        assert_eq!(
            e(s.getfloat("absent", None, fb)),
            "p.cfg:1: Option 'absent' in section 's' must be specified"
        );
        assert_eq!(
            c.getsection("nosuch")
                .get("x")
                .expect_err("missing")
                .to_string(),
            "Option 'x' in section 'nosuch' must be specified"
        );
        assert_eq!(
            s.getint("i", None, IntBounds::NONE.min(8))
                .expect_err("bad")
                .to_string(),
            "p.cfg:4: Option 'i' in section 's' must have minimum of 8"
        );
        assert_eq!(
            s.getint("i", None, IntBounds::NONE.max(6))
                .expect_err("bad")
                .to_string(),
            "p.cfg:4: Option 'i' in section 's' must have maximum of 6"
        );
        assert_eq!(
            s.getint("f", None, IntBounds::NONE)
                .expect_err("bad")
                .to_string(),
            "p.cfg:2: Unable to parse option 'f' in section 's'"
        );
        assert_eq!(
            s.getboolean("bb", None).expect_err("bad").to_string(),
            "p.cfg:7: Unable to parse option 'bb' in section 's'"
        );
        assert_eq!(
            s.getchoice("ch", &["zv", "ei"], None)
                .expect_err("bad")
                .to_string(),
            "p.cfg:8: Choice 'mzv' for option 'ch' in section 's' is not a valid choice"
        );
        assert_eq!(
            s.getlist("l", None, ",", Some(2))
                .expect_err("bad")
                .to_string(),
            "p.cfg:9: Option 'l' in section 's' must have 2 elements"
        );
        assert_eq!(
            s.getfloatlist("fl", None, ",", None)
                .expect_err("bad")
                .to_string(),
            "p.cfg:10: Unable to parse option 'fl' in section 's'"
        );
        assert!(matches!(
            c.require_section("nosuch"),
            Err(ConfigError::MissingSection { .. })
        ));
        assert!(c.require_section("s").is_ok());
    }

    #[test]
    fn numbers_follow_python() {
        assert_eq!(parse_float(" 1. "), Some(1.0));
        assert_eq!(parse_float("1_0.5"), Some(10.5));
        assert_eq!(parse_float("1__0"), None);
        assert_eq!(parse_float("_1"), None);
        assert_eq!(parse_float("inf"), Some(f64::INFINITY));
        assert_eq!(parse_float("nan"), None);
        assert_eq!(parse_float("0x10"), None);
        assert_eq!(parse_int("+12"), Some(12));
        assert_eq!(parse_int("1.0"), None);
        assert_eq!(parse_int("- 1"), None);
        assert_eq!(parse_int("99999999999999999999"), None);
        assert_eq!(py_float(0.0), "0.0");
        assert_eq!(py_float(-5.0), "-5.0");
        assert_eq!(py_float(0.1), "0.1");
        assert_eq!(py_float(0.0001), "0.0001");
        assert_eq!(py_float(1e16), "1e+16");
        assert_eq!(py_float(1.5e-7), "1.5e-07");
    }

    #[test]
    fn access_tracking_reports_what_nobody_read() {
        let c = parse(
            "[printer]\nkinematics: none\nmax_velocty: 5\n[typo_section]\nx: 1\n[gcode_macro A]\ngcode: G28\n[stepper_x]\nstep_pin: PA1\n",
        );
        let p = c.getsection("printer");
        assert_eq!(p.get("kinematics"), Ok("none"));
        let _ = p.getfloat("max_velocity", Some(1.0), FloatBounds::NONE);
        let unused: Vec<String> = c.unused_options().iter().map(|e| e.to_string()).collect();
        assert_eq!(
            unused[0],
            "p.cfg:3: Option 'max_velocty' is not valid in section 'printer'"
        );
        assert_eq!(unused.len(), 4);
        let unknown: Vec<String> = c
            .unknown_sections(&["gcode_macro", "stepper_"])
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(
            unknown,
            ["p.cfg:4: Section 'typo_section' is not a valid config section"]
        );
        assert_eq!(
            c.check_unused(&["gcode_macro", "stepper_"])
                .expect_err("typos")
                .to_string(),
            "p.cfg:3: Option 'max_velocty' is not valid in section 'printer'"
        );
        // Reading without recording: options(), has_option(), location().
        let c = parse("[a]\nx: 1\n");
        let a = c.getsection("a");
        assert_eq!(a.options().collect::<Vec<_>>(), [("x", "1")]);
        assert!(a.has_option("X"));
        assert_eq!(c.unused_options().len(), 1);
        assert_eq!(c.unknown_sections(&[]).len(), 1);
        let _ = a.get_opt("y");
        assert_eq!(c.unknown_sections(&[]).len(), 0);
        assert!(section_known("fan", "fan") && !section_known("fan_generic x", "fan"));
        assert!(section_known("gcode_macro a", "gcode_macro"));
    }

    #[test]
    fn pins_follow_klipper() {
        let p = parse_pin("^!PA1", PinFlags::ENDSTOP).expect("valid");
        assert_eq!(
            p,
            PinDesc {
                chip: "mcu".into(),
                pin: "PA1".into(),
                invert: true,
                pull: Pull::Up
            }
        );
        let p = parse_pin(" ~ ! z : P1.28 ", PinFlags::ENDSTOP).expect("valid");
        assert_eq!(
            (p.chip.as_str(), p.pin.as_str(), p.invert, p.pull),
            ("z", "P1.28", true, Pull::Down)
        );
        assert_eq!(
            parse_pin("!^PA1", PinFlags::ENDSTOP)
                .expect_err("order")
                .to_string(),
            "Invalid pin description '!^PA1'\nFormat is: [^~] [!] [chip_name:] pin_name"
        );
        assert_eq!(
            parse_pin("^PA1", PinFlags::INVERT)
                .expect_err("no pull")
                .to_string(),
            "Invalid pin description '^PA1'\nFormat is: [!] [chip_name:] pin_name"
        );
        assert!(parse_pin("PA 1", PinFlags::PLAIN).is_err());
        assert!(p.check_chip(["mcu", "z"]).is_ok());
        assert_eq!(
            p.check_chip(["mcu"]).expect_err("unknown").to_string(),
            "Unknown pin chip name 'z'"
        );
        assert!(check_pin_name("PA1", "mcu", ["PA0", "PA1"]).is_ok());
        assert_eq!(
            check_pin_name("PZ9", "mcu", ["PA0"])
                .expect_err("bad")
                .to_string(),
            "Pin 'PZ9' is not a valid pin name on mcu 'mcu'"
        );
        let c = parse("[stepper_x]\nstep_pin: !PA1\nendstop_pin: ^^PA2\n");
        let s = c.getsection("stepper_x");
        assert!(
            s.getpin("step_pin", PinFlags::INVERT)
                .expect("valid")
                .invert
        );
        assert_eq!(
            s.getpin("endstop_pin", PinFlags::ENDSTOP)
                .expect_err("bad")
                .to_string(),
            "p.cfg:3: Invalid pin description '^^PA2'\nFormat is: [^~] [!] [chip_name:] pin_name"
        );
    }

    #[test]
    fn board_pin_aliases() {
        let c = parse(
            "[board_pins arduino]\naliases: ar0=PE0, ar1=PE1\naliases_swd: PA13=<swd>\n[board_pins other]\nmcu: z\naliases: x=PB0\n",
        );
        let a = PinAliases::from_config(&c, "mcu").expect("valid");
        assert_eq!(a.resolve("ar1"), Ok("PE1"));
        assert_eq!(a.resolve("PB3"), Ok("PB3"));
        assert_eq!(a.resolve("x"), Ok("x"));
        assert_eq!(
            a.resolve("PA13").expect_err("reserved").to_string(),
            "pin PA13 is reserved for <swd>"
        );
        let c = parse("[board_pins]\naliases: a=PE0, a=PE1\n");
        assert_eq!(
            PinAliases::from_config(&c, "mcu")
                .expect_err("conflict")
                .to_string(),
            "p.cfg:2: Alias a mapped to PE0 - can't alias to PE1"
        );
        let c = parse("[board_pins]\naliases: a\n");
        assert!(PinAliases::from_config(&c, "mcu").is_err());
    }

    #[test]
    fn build_volume_from_rails() {
        let c = parse(SAMPLE);
        let v = BuildVolume::from_config(&c).expect("a box");
        assert_eq!(v.min_mm, [-5.0, 0.0, 0.0]);
        assert_eq!(v.max_mm, [250.0, 250.0, 210.0]);
        assert_eq!(v.to_string(), "255 × 250 × 210 mm");
    }

    #[test]
    fn build_volume_errors_name_file_line_section_and_option() {
        let c = parse("[printer]\nkinematics: cartesian\n[stepper_x]\nposition_max: abc\n");
        let e = BuildVolume::from_config(&c).expect_err("bad value");
        assert_eq!(
            e.to_string(),
            "p.cfg:4: Unable to parse option 'position_max' in section 'stepper_x'"
        );
        let c = parse("[printer]\nkinematics: cartesian\n[stepper_x]\nposition_max: 0\n");
        let e = BuildVolume::from_config(&c).expect_err("bad value");
        assert_eq!(
            e.to_string(),
            "p.cfg:4: Option 'position_max' in section 'stepper_x' must be above 0.0"
        );
        let c = parse("[printer]\nkinematics: delta\n");
        assert!(
            BuildVolume::from_config(&c)
                .expect_err("delta")
                .to_string()
                .starts_with("p.cfg:2: ")
        );
    }

    #[test]
    fn the_bundled_simulated_printer_parses() {
        let text = include_str!("../../../assets/printers/gantry-sim.cfg");
        let c = Config::parse(text, "gantry-sim.cfg").expect("valid");
        let v = BuildVolume::from_config(&c).expect("a box");
        assert_eq!(v.max_mm, [220.0, 220.0, 250.0]);
    }
}
