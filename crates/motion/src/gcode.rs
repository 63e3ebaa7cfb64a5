//! G-code lexers: one line of text into a command and its parameters.
//!
//! Two readers live here. [`lex`] serves the twin's toolpath: Klipper's rules in a tidy form.
//! Text after `;` is a comment; a leading `N<number>` line number and a trailing
//! `*<checksum>` are dropped; a "classic" command is a letter and a number (`G1`, `M104`) followed
//! by letter+number words; any other first word is an "extended" command (`SET_VELOCITY_LIMIT
//! VELOCITY=200`) whose parameters are `KEY=VALUE` pairs. Names and letters are upper-cased.
//! The lexer never fails on a line: what it cannot read becomes [`Line::Invalid`] with a reason.
//!
//! [`parse_command`] is the planner's reader: klippy's own split (`gcode.py`: the upper-cased
//! line cut by the regex `([A-Z_]+|[A-Z*])`, every separator a parameter name and the text up to
//! the next one its value; extended commands re-read shell-style), with its corner cases kept.
//! It borrows from the line and does not allocate for ordinary lines, so a planner can read
//! hundreds of MB/s of G-code with it.

use std::borrow::Cow;

/// One lexed line.
#[derive(Debug, Clone, PartialEq)]
pub enum Line<'a> {
    /// Nothing but whitespace, a comment or a line number.
    Empty,
    /// A classic command such as `G1 X10 E0.5`.
    Classic(Classic<'a>),
    /// An extended command such as `EXCLUDE_OBJECT_START NAME=part_1`.
    Extended {
        /// The command name, upper-case.
        name: String,
        /// The raw text after the name, for the command to read its `KEY=VALUE` parameters.
        args: &'a str,
    },
    /// A line the lexer could not read, and why.
    Invalid(String),
}

/// A classic command: its name and its letter+number words in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Classic<'a> {
    /// The command, upper-case, such as `G1` or `M104` (`G1.0` stays as written).
    pub name: String,
    /// The parameter words, letter upper-cased, value as written (empty for a bare letter).
    pub words: Vec<(char, &'a str)>,
}

impl Classic<'_> {
    /// The numeric value of parameter `letter`, if present.
    ///
    /// # Errors
    /// When the parameter is present but not a finite number; the message names it.
    pub fn float(&self, letter: char) -> Result<Option<f64>, String> {
        let Some((_, text)) = self.words.iter().rev().find(|(l, _)| *l == letter) else {
            return Ok(None);
        };
        match text.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(Some(v)),
            _ => Err(format!("Unable to parse '{letter}{text}' as a number")),
        }
    }

    /// Whether parameter `letter` is present at all.
    pub fn has(&self, letter: char) -> bool {
        self.words.iter().any(|(l, _)| *l == letter)
    }
}

/// Lexes one line (without its newline).
pub fn lex(line: &str) -> Line<'_> {
    let code = line.split(';').next().unwrap_or("");
    // A trailing checksum belongs to the line-number protocol; Klipper checks it only for N lines.
    let code = match code.rfind('*') {
        Some(i) if code.trim_start().starts_with(['N', 'n']) => &code[..i],
        _ => code,
    };
    let mut rest = code.trim();
    if rest.starts_with(['N', 'n']) && rest[1..].starts_with(|c: char| c.is_ascii_digit()) {
        rest = rest[1..]
            .trim_start_matches(|c: char| c.is_ascii_digit())
            .trim_start();
    }
    if rest.is_empty() {
        return Line::Empty;
    }
    // A classic command is a letter and a number; the number ends at whitespace or the next
    // letter, so `G1X1Y2` is `G1 X1 Y2` as Klipper splits it.
    let mut chars = rest.char_indices();
    let letter = chars.next().map_or(' ', |(_, c)| c);
    let number_end = chars
        .find(|(_, c)| !(c.is_ascii_digit() || *c == '.'))
        .map_or(rest.len(), |(i, _)| i);
    let after = rest[number_end..].chars().next();
    let is_classic = letter.is_ascii_alphabetic()
        && number_end > letter.len_utf8()
        && after.is_none_or(|c| c.is_whitespace() || c.is_ascii_alphabetic());
    if !is_classic {
        let first_end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        return Line::Extended {
            name: rest[..first_end].to_ascii_uppercase(),
            args: rest[first_end..].trim(),
        };
    }
    let first = &rest[..number_end];
    let first_end = number_end;
    let mut words = Vec::new();
    let mut tail = rest[first_end..].trim_start();
    while !tail.is_empty() {
        let mut it = tail.char_indices();
        let Some((_, l)) = it.next() else { break };
        if !l.is_ascii_alphabetic() {
            return Line::Invalid(format!("Malformed command '{}'", rest.trim()));
        }
        // The value runs to the next letter or whitespace, as Klipper splits words.
        let end = it
            .find(|(_, c)| c.is_whitespace() || c.is_ascii_alphabetic())
            .map_or(tail.len(), |(i, _)| i);
        words.push((l.to_ascii_uppercase(), tail[l.len_utf8()..end].trim()));
        tail = tail[end..].trim_start();
    }
    Line::Classic(Classic {
        name: first.to_ascii_uppercase(),
        words,
    })
}

/// Parameter words kept inline before [`GCodeCommand`] spills to the heap.
const INLINE_WORDS: usize = 8;

/// A classic command's word: byte ranges of a separator run and of the (trimmed) text after
/// it, in the command's code (the line up to its comment).
#[derive(Clone, Copy, Debug, Default)]
struct Word {
    key: (u32, u32),
    value: (u32, u32),
    /// The key's first byte, upper-cased (a quick reject in lookups).
    head: u8,
}

/// The parameters of a [`GCodeCommand`].
#[derive(Clone, Debug)]
enum Params<'a> {
    /// Classic split: every separator and the text after it, as written; read upper-cased.
    Classic {
        words: [Word; INLINE_WORDS],
        len: usize,
        more: Vec<Word>,
    },
    /// Extended command: `KEY=value` words, keys upper-cased, values as written.
    Extended(Vec<(Cow<'a, str>, Cow<'a, str>)>),
}

/// One line as the planner reads it: klippy's split, borrowed from the line (see
/// [`parse_command`]).
#[derive(Clone, Debug)]
pub struct GCodeCommand<'a> {
    raw: &'a str,
    /// `raw` up to its comment: what the word ranges index.
    code: &'a str,
    name: Cow<'a, str>,
    params: Params<'a>,
}

impl<'a> GCodeCommand<'a> {
    /// The command name, upper-case (`G1`, `SET_VELOCITY_LIMIT`; empty for a lone line number).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The whole line, trimmed, comment included (for messages).
    pub fn raw(&self) -> &'a str {
        self.raw
    }

    /// Whether the command is an extended one (`NAME KEY=VALUE …`): a name longer than two
    /// characters whose second character is not a digit.
    pub fn is_extended(&self) -> bool {
        matches!(self.params, Params::Extended(_))
    }

    /// The value of parameter `key` (upper-case), the last one if repeated: for a classic
    /// command upper-cased and trimmed as klippy has it, for an extended one as written.
    pub fn param(&self, key: &str) -> Option<Cow<'a, str>> {
        match &self.params {
            Params::Classic { .. } => self.classic_value(key).map(upper),
            Params::Extended(words) => words
                .iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone()),
        }
    }

    /// The value of parameter `key` as it is written in the line (not upper-cased), for
    /// reading numbers without a copy; the same value as [`GCodeCommand::param`] up to case.
    pub fn param_text(&self, key: &str) -> Option<&str> {
        match &self.params {
            Params::Classic { .. } => self.classic_value(key),
            Params::Extended(words) => words
                .iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_ref()),
        }
    }

    /// Parameter `key` as a finite number, if present: `Some(Err(text))` when it is not one
    /// (Python's `float()` as the planner applies it: surrounding whitespace allowed).
    pub fn float(&self, key: &str) -> Option<Result<f64, &str>> {
        let text = self.param_text(key)?;
        Some(parse_float(text).ok_or(text))
    }

    /// Every parameter in order: classic words (names and values upper-cased) or extended
    /// `KEY=value` pairs (for tests and diagnostics; allocates).
    pub fn params(&self) -> Vec<(Cow<'a, str>, Cow<'a, str>)> {
        match &self.params {
            Params::Classic { words, len, more } => words[..*len]
                .iter()
                .chain(more)
                .map(|w| (upper(self.text(w.key)), upper(self.text(w.value))))
                .collect(),
            Params::Extended(words) => words.clone(),
        }
    }

    #[inline]
    fn text(&self, (start, end): (u32, u32)) -> &'a str {
        self.code.get(start as usize..end as usize).unwrap_or("")
    }

    /// The classic value of `key` as written (keys compare upper-cased).
    fn classic_value(&self, key: &str) -> Option<&'a str> {
        let Params::Classic { words, len, more } = &self.params else {
            return None;
        };
        let code = self.code.as_bytes();
        let key = key.as_bytes();
        let head = key.first().copied().unwrap_or(0);
        let matches = |w: &&Word| {
            let (start, end) = (w.key.0 as usize, w.key.1 as usize);
            w.head == head
                && end - start == key.len()
                && code
                    .get(start..end)
                    .is_some_and(|k| k.iter().zip(key).all(|(a, b)| a.to_ascii_uppercase() == *b))
        };
        more.iter()
            .rev()
            .find(matches)
            .or_else(|| words[..*len].iter().rev().find(matches))
            .map(|w| self.text(w.value))
    }
}

/// A finite number as the planner reads parameters (`text.trim().parse::<f64>()`, finite
/// only), with a fast exact path for plain decimals such as `-12.345`.
///
/// Up to 2⁵³ digits-as-integer and at most 22 decimals, `m / 10ᵏ` is one correctly rounded
/// division of two exact values (Clinger's fast path), hence the same `f64` as the general
/// parser gives; anything else (exponents, long mantissas, `inf`) goes to `str::parse`.
pub fn parse_float(text: &str) -> Option<f64> {
    let t = trim(text);
    let b = t.as_bytes();
    let negative = b.first() == Some(&b'-');
    let mut i = usize::from(matches!(b.first(), Some(b'-' | b'+')));
    let mut mantissa: u64 = 0;
    let mut digits = 0usize;
    while let Some(&c) = b.get(i).filter(|c| c.is_ascii_digit()) {
        mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(c - b'0'));
        digits += 1;
        i += 1;
    }
    let mut decimals = 0usize;
    if b.get(i) == Some(&b'.') {
        i += 1;
        while let Some(&c) = b.get(i).filter(|c| c.is_ascii_digit()) {
            mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(c - b'0'));
            digits += 1;
            decimals += 1;
            i += 1;
        }
    }
    // At most 19 digits cannot overflow u64; the value must be exact in f64.
    if i == b.len() && digits > 0 && digits <= 19 && mantissa <= 1 << 53 && decimals < POW10.len() {
        let v = mantissa as f64 / POW10[decimals];
        return Some(if negative { -v } else { v });
    }
    match t.parse::<f64>() {
        Ok(v) if v.is_finite() => Some(v),
        _ => None,
    }
}

/// 10⁰ … 10²², all exact in `f64`.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// `text` upper-cased (ASCII), borrowed when it has no lower-case letter.
fn upper(text: &str) -> Cow<'_, str> {
    if text.bytes().any(|b| b.is_ascii_lowercase()) {
        Cow::Owned(text.to_ascii_uppercase())
    } else {
        Cow::Borrowed(text)
    }
}

/// The first byte position at which `text` upper-cased contains `needle` (`str::find` on the
/// upper-cased text, without making it).
fn find_upper(text: &str, needle: &str) -> Option<usize> {
    let (t, n) = (text.as_bytes(), needle.as_bytes());
    if n.len() > t.len() {
        return None;
    }
    (0..=t.len() - n.len()).find(|&i| {
        t[i..i + n.len()]
            .iter()
            .zip(n)
            .all(|(a, b)| a.to_ascii_uppercase() == *b)
    })
}

/// Byte classes of the klippy split, as bits: a separator-run byte (`[A-Za-z_]`), the
/// one-byte separator `*`, the comment start `;`, and ASCII white space (as
/// `char::is_whitespace` has it: tab, line feed, vertical tab, form feed, carriage return,
/// space). Plain text has none.
const WORD: u8 = 1;
const STAR: u8 = 2;
const COMMENT: u8 = 4;
const SPACE: u8 = 8;
/// The classes that end plain text in the split.
const SPLIT: u8 = WORD | STAR | COMMENT;

/// The class of every byte value.
static CLASS: [u8; 256] = {
    let mut t = [0; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = if c.is_ascii_alphabetic() || c == b'_' {
            WORD
        } else if c == b'*' {
            STAR
        } else if c == b';' {
            COMMENT
        } else if c == b' ' || (c >= b'\t' && c <= b'\r') {
            SPACE
        } else {
            0
        };
        b += 1;
    }
    t
};

/// Whether `b` is ASCII white space.
#[inline]
fn is_space(b: u8) -> bool {
    CLASS[usize::from(b)] & SPACE != 0
}

/// The range `start..end` of `text` with white space trimmed from both ends (as `str::trim`
/// does; only ends that are not ASCII need the general function).
#[inline]
fn trim_range(text: &str, mut start: usize, mut end: usize) -> (usize, usize) {
    let b = text.as_bytes();
    while start < end && is_space(b[start]) {
        start += 1;
    }
    while end > start && is_space(b[end - 1]) {
        end -= 1;
    }
    if start < end && (b[start] >= 0x80 || b[end - 1] >= 0x80) {
        let inner = text.get(start..end).unwrap_or("");
        let t = inner.trim();
        let s = start + (t.as_ptr() as usize - inner.as_ptr() as usize);
        return (s, s + t.len());
    }
    (start, end)
}

/// A byte of a separator run once upper-cased (`[A-Z_]`).
#[inline]
fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

/// `str::trim` (Unicode white space), quick for ASCII ends (see [`trim_range`]).
#[inline]
fn trim(text: &str) -> &str {
    let (start, end) = trim_range(text, 0, text.len());
    text.get(start..end).unwrap_or("")
}

/// Reads one line (without its newline) as klippy's `gcode.py` does; `None` for a line with
/// nothing but whitespace and a comment.
///
/// The line is trimmed and cut at the first `;`. The rest, upper-cased, is split at each run
/// of `[A-Z_]` and at each `*` (the regex `([A-Z_]+|[A-Z*])`): the parts are `text₀ sep₁ text₁
/// sep₂ text₂ …`. The name is `text₀ sep₁ text₁`, trimmed, or, after a leading line number
/// (`text₀` empty, `sep₁` = `N`), `sep₂ text₂`. Every `sepᵢ` is a parameter with the trimmed
/// `textᵢ` as its value. A name longer than two characters whose second character is not a
/// digit makes an extended command: its parameters are the shell-style words after the name
/// (quotes removed, up to a `#` or `;`) that contain `=`, keys upper-cased.
///
/// This is the planner's `parse_line` rule for rule; it allocates only for lines with more
/// than eight words, extended commands, or lower-case names.
pub fn parse_command(line: &str) -> Option<GCodeCommand<'_>> {
    let raw = trim(line);
    let bytes = raw.as_bytes();
    if u32::try_from(bytes.len()).is_err() {
        return None;
    }
    let mut cmd = GCodeCommand {
        raw,
        code: raw,
        name: Cow::Borrowed(""),
        params: Params::Classic {
            words: [Word::default(); INLINE_WORDS],
            len: 0,
            more: Vec::new(),
        },
    };
    let Params::Classic { words, len, more } = &mut cmd.params else {
        return None;
    };
    // Where the first three separators start (the end of the code when there are fewer).
    let mut sep_starts = [usize::MAX; 3];
    let mut seps = 0;
    let mut key: Option<(usize, usize)> = None;
    let mut i = 0;
    let code_end = loop {
        // Find the next separator (a run of [A-Za-z_] or a '*') or the comment.
        while i < bytes.len() && CLASS[usize::from(bytes[i])] & SPLIT == 0 {
            i += 1;
        }
        let start = i;
        let class = bytes.get(i).map_or(COMMENT, |&b| CLASS[usize::from(b)]);
        if class == STAR {
            i += 1;
        } else if class == WORD {
            while i < bytes.len() && CLASS[usize::from(bytes[i])] == WORD {
                i += 1;
            }
        }
        if let Some((ks, ke)) = key {
            // The previous separator's value runs to here. Offsets fit u32 (checked above).
            let (vs, ve) = trim_range(raw, ke, start);
            let w = Word {
                key: (ks as u32, ke as u32),
                value: (vs as u32, ve as u32),
                head: bytes[ks].to_ascii_uppercase(),
            };
            if let Some(slot) = words.get_mut(*len) {
                *slot = w;
                *len += 1;
            } else {
                more.push(w);
            }
        }
        if class == COMMENT {
            break start;
        }
        key = Some((start, i));
        if let Some(slot) = sep_starts.get_mut(seps) {
            *slot = start;
        }
        seps += 1;
    };
    let code = &raw[..code_end];
    cmd.code = code;
    let bytes = code.as_bytes();
    for s in &mut sep_starts {
        *s = (*s).min(code_end);
    }
    // text₀ is empty and sep₁ is exactly "N": a line number first.
    let line_number = seps >= 1
        && sep_starts[0] == 0
        && matches!(bytes[0], b'N' | b'n')
        && bytes.get(1).is_none_or(|&b| !is_word_byte(b));
    let name_text = if line_number {
        if seps >= 2 {
            &code[sep_starts[1]..sep_starts[2]]
        } else {
            ""
        }
    } else {
        &code[..sep_starts[1]]
    };
    let name = upper(trim(name_text));
    if name.is_empty() && trim(code).is_empty() {
        return None;
    }
    let is_extended = name.len() > 2 && !name.chars().nth(1).is_some_and(|c| c.is_ascii_digit());
    if is_extended {
        let start = find_upper(code, &name).map_or(code.len(), |p| p + name.len());
        cmd.params = Params::Extended(extended_words(&code[start..]));
    }
    cmd.name = name;
    Some(cmd)
}

/// An extended command's `KEY=value` words: shell-style words (quotes removed; a `#` or `;`
/// outside quotes ends them) that contain `=`, keys upper-cased. Borrowed unless a word had
/// quotes or a lower-case key.
fn extended_words(raw: &str) -> Vec<(Cow<'_, str>, Cow<'_, str>)> {
    if !raw.contains(['"', '\'']) {
        let end = raw.find(['#', ';']).unwrap_or(raw.len());
        return raw[..end]
            .split(char::is_whitespace)
            .filter_map(|w| w.split_once('='))
            .map(|(k, v)| (upper(k), Cow::Borrowed(v)))
            .collect();
    }
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    for c in raw.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => cur.push(c),
            None if c == '"' || c == '\'' => quote = Some(c),
            None if c == '#' || c == ';' => break,
            None if c.is_whitespace() => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            None => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
        .iter()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (Cow::Owned(k.to_ascii_uppercase()), Cow::Owned(v.to_owned())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classic(line: &str) -> Classic<'_> {
        match lex(line) {
            Line::Classic(c) => c,
            other => panic!("{line:?} lexed as {other:?}"),
        }
    }

    #[test]
    fn classic_commands_and_words() {
        let c = classic("g1 x10.5 Y-3 e.2 F3000 ; move");
        assert_eq!(c.name, "G1");
        assert_eq!(
            c.words,
            vec![('X', "10.5"), ('Y', "-3"), ('E', ".2"), ('F', "3000")]
        );
        assert_eq!(c.float('E'), Ok(Some(0.2)));
        assert_eq!(c.float('Z'), Ok(None));
        let packed = classic("G1X1Y2");
        assert_eq!(packed.words, vec![('X', "1"), ('Y', "2")]);
    }

    #[test]
    fn line_numbers_checksums_and_comments_are_dropped() {
        assert_eq!(classic("N12 G28 X*57").words, vec![('X', "")]);
        assert_eq!(lex("   ; only a comment"), Line::Empty);
        assert_eq!(lex(""), Line::Empty);
        assert_eq!(lex("N5"), Line::Empty);
    }

    #[test]
    fn extended_commands_keep_their_arguments() {
        assert_eq!(
            lex("exclude_object_start NAME=part_1 ;x"),
            Line::Extended {
                name: "EXCLUDE_OBJECT_START".into(),
                args: "NAME=part_1"
            }
        );
        assert!(matches!(
            lex("M117 Hello"),
            Line::Invalid(_) | Line::Classic(_)
        ));
    }

    #[test]
    fn bad_numbers_are_reported_not_guessed() {
        let c = classic("G1 X1-2");
        assert_eq!(
            c.float('X'),
            Err("Unable to parse 'X1-2' as a number".into())
        );
        assert!(matches!(lex("G1 10"), Line::Invalid(_)));
    }

    /// The planner's `parse_line` and `parse_extended` (printer.rs) as they were when
    /// [`parse_command`] was written: the reference it must agree with.
    mod reference {
        pub(super) struct Command {
            pub name: String,
            pub params: Vec<(String, String)>,
            pub raw: String,
        }

        pub(super) fn parse_line(line: &str) -> Option<Command> {
            let orig = line.trim();
            let code = match orig.find(';') {
                Some(i) => &orig[..i],
                None => orig,
            };
            let upper = code.to_ascii_uppercase();
            let mut parts: Vec<&str> = Vec::new();
            let bytes = upper.as_bytes();
            let mut i = 0;
            let mut last = 0;
            while i < bytes.len() {
                let b = bytes[i];
                if b.is_ascii_uppercase() || b == b'_' {
                    let s = i;
                    while i < bytes.len() && (bytes[i].is_ascii_uppercase() || bytes[i] == b'_') {
                        i += 1;
                    }
                    parts.push(&upper[last..s]);
                    parts.push(&upper[s..i]);
                    last = i;
                } else if b == b'*' {
                    parts.push(&upper[last..i]);
                    parts.push(&upper[i..i + 1]);
                    i += 1;
                    last = i;
                } else {
                    i += 1;
                }
            }
            parts.push(&upper[last..]);
            let name = if parts.len() >= 2 && format!("{}{}", parts[0], parts[1]) == "N" {
                parts.get(3..5).map(|p| p.concat()).unwrap_or_default()
            } else {
                parts.iter().take(3).copied().collect::<String>()
            };
            let name = name.trim().to_owned();
            if name.is_empty() && code.trim().is_empty() {
                return None;
            }
            let mut params = Vec::new();
            let mut k = 1;
            while k + 1 < parts.len() {
                params.push((parts[k].to_owned(), parts[k + 1].trim().to_owned()));
                k += 2;
            }
            let is_extended =
                name.len() > 2 && !name.chars().nth(1).is_some_and(|c| c.is_ascii_digit());
            if is_extended {
                let start = code
                    .to_ascii_uppercase()
                    .find(&name)
                    .map(|p| p + name.len())
                    .unwrap_or(code.len());
                params = parse_extended(&code[start..]);
            }
            Some(Command {
                name,
                params,
                raw: orig.to_owned(),
            })
        }

        fn parse_extended(raw: &str) -> Vec<(String, String)> {
            let mut out = Vec::new();
            let mut cur = String::new();
            let mut quote: Option<char> = None;
            let mut words = Vec::new();
            for c in raw.chars() {
                match quote {
                    Some(q) if c == q => quote = None,
                    Some(_) => cur.push(c),
                    None if c == '"' || c == '\'' => quote = Some(c),
                    None if c == '#' || c == ';' => break,
                    None if c.is_whitespace() => {
                        if !cur.is_empty() {
                            words.push(std::mem::take(&mut cur));
                        }
                    }
                    None => cur.push(c),
                }
            }
            if !cur.is_empty() {
                words.push(cur);
            }
            for w in words {
                if let Some((k, v)) = w.split_once('=') {
                    out.push((k.to_ascii_uppercase(), v.to_owned()));
                }
            }
            out
        }
    }

    /// Checks [`parse_command`] against the reference on one line.
    fn agrees(line: &str) -> Result<(), String> {
        let ours = parse_command(line);
        let theirs = reference::parse_line(line);
        match (ours, theirs) {
            (None, None) => Ok(()),
            (Some(o), Some(t)) => {
                let params: Vec<(String, String)> = o
                    .params()
                    .into_iter()
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect();
                if o.name() != t.name || o.raw() != t.raw || params != t.params {
                    return Err(format!(
                        "{line:?}: ours {:?} {:?} {params:?}, reference {:?} {:?} {:?}",
                        o.name(),
                        o.raw(),
                        t.name,
                        t.raw,
                        t.params
                    ));
                }
                for (key, _) in &t.params {
                    let want = t
                        .params
                        .iter()
                        .rev()
                        .find(|(k, _)| k == key)
                        .map(|(_, v)| v.as_str());
                    let got = o.param(key);
                    if got.as_deref() != want {
                        return Err(format!("{line:?}: param {key}: {got:?} vs {want:?}"));
                    }
                    let text = o.param_text(key).map(str::to_ascii_uppercase);
                    if !o.is_extended() && text.as_deref() != want {
                        return Err(format!("{line:?}: param_text {key}: {text:?}"));
                    }
                }
                Ok(())
            }
            (o, t) => Err(format!(
                "{line:?}: ours {:?}, reference {:?}",
                o.map(|c| c.name().to_owned()),
                t.map(|c| c.name)
            )),
        }
    }

    #[test]
    fn parse_command_splits_like_klippy() {
        let c = parse_command("N12 g1 x10.5 Y-3 E.2 F3000*55 ; move").expect("command");
        assert_eq!(c.name(), "G1");
        assert_eq!(c.param("X").as_deref(), Some("10.5"));
        assert_eq!(c.param("E").as_deref(), Some(".2"));
        assert_eq!(c.float("F"), Some(Ok(3000.0)));
        let c = parse_command("SET_KINEMATIC_POSITION X=0 y=\"1\" ; c").expect("command");
        assert_eq!(c.name(), "SET_KINEMATIC_POSITION");
        assert!(c.is_extended());
        assert_eq!(c.param("Y").as_deref(), Some("1"));
        assert!(parse_command("   ; only a comment").is_none());
        let c = parse_command("G1X1Y2").expect("command");
        assert_eq!(c.param("Y").as_deref(), Some("2"));
        let c = parse_command("M117 hello world").expect("command");
        assert_eq!(c.param("HELLO").as_deref(), Some(""));
        assert_eq!(c.float("M"), Some(Ok(117.0)));
        let c = parse_command("G1 X1-2").expect("command");
        assert_eq!(c.float("X"), Some(Err("1-2")));
    }

    #[test]
    fn parse_command_agrees_with_the_reference_on_corner_cases() {
        let lines = [
            "",
            "N5",
            "n5 g1 x1",
            "N",
            "NX1",
            "N10 SET_VELOCITY_LIMIT ACCEL=500",
            "N10 N20 G1",
            "1G1 X5",
            "G1 X1 X2",
            "g28 x y",
            "G1 X1 ; c ; d",
            "*5",
            "G1 X1*5",
            "G1 X1 Y2 Z3 E4 F5 A6 B7 C8 D9 H10 I11 J12 K13 L14",
            "EXCLUDE_OBJECT_START NAME=part_1",
            "exclude_object_start name='a b' #c",
            "SET_PRESSURE_ADVANCE ADVANCE=0.05 SMOOTH_TIME=.02 ; c",
            "SET_FAN x=\"\" y= z",
            "M117 Ünïcödé µ X1",
            "G1\u{a0}X1\u{a0}",
            "\u{a0}G1 X1",
            "  G1 X1 ",
            "_A_B=1",
            "M1 Xa",
            "T0",
            "G1 X-.5e1",
            "SET_KINEMATIC_POSITION X=1 X=2",
            "ABC",
            "A1B",
            "Ab1 X=2",
            "G1 x1 ; \u{2003}",
        ];
        for line in lines {
            if let Err(e) = agrees(line) {
                panic!("{e}");
            }
        }
    }

    #[test]
    fn parse_command_agrees_with_the_reference_on_the_fixtures() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut files = Vec::new();
        for dir in [
            "tests/fixtures/oracle/cases",
            "tests/fixtures/oracle-extra/cases",
        ] {
            if let Ok(entries) = std::fs::read_dir(root.join(dir)) {
                files.extend(entries.flatten().map(|e| e.path().join("input.gcode")));
            }
        }
        // The shared corpus, where this machine has it.
        if let Ok(entries) = std::fs::read_dir("/work/shared/corpus") {
            files.extend(entries.flatten().map(|e| e.path()));
        }
        let mut lines = 0;
        for f in files {
            let Ok(bytes) = std::fs::read(&f) else {
                continue;
            };
            let text = String::from_utf8_lossy(&bytes);
            for line in text.split('\n') {
                if let Err(e) = agrees(line) {
                    panic!("{}: {e}", f.display());
                }
                lines += 1;
            }
        }
        assert!(lines > 1000, "only {lines} lines checked");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4000))]
        #[test]
        fn parse_command_agrees_with_the_reference(
            line in "[GgMmNnXxYyEeFfTSs_*;#'\"= 0-9.\\-\t\u{a0}é]{0,24}"
        ) {
            if let Err(e) = agrees(&line) {
                proptest::prop_assert!(false, "{}", e);
            }
        }
    }

    fn reference_float(text: &str) -> Option<f64> {
        match text.trim().parse::<f64>() {
            Ok(v) if v.is_finite() => Some(v),
            _ => None,
        }
    }

    #[test]
    fn parse_float_is_the_standard_parser() {
        for text in [
            "",
            "-",
            "+",
            ".",
            "-.",
            "0",
            "-0",
            "+0",
            "-0.0",
            ".5",
            "5.",
            "-.5",
            "1.2.3",
            "1e5",
            "1E-3",
            "inf",
            "-inf",
            "NaN",
            "nan",
            " 12.5 ",
            "\t-3\u{a0}",
            "0.1",
            "0.3",
            "9007199254740992",
            "9007199254740993",
            "90071992547409930",
            "123456789012345678",
            "0.0000000000000000000001",
            "0.00000000000000000000001",
            "1-2",
            "1 2",
            "٣",
            "00000000000000000000000000000000000001.5",
            "-0.000",
            "1.7976931348623157e308",
            "1e400",
        ] {
            let (ours, theirs) = (parse_float(text), reference_float(text));
            assert_eq!(
                ours.map(f64::to_bits),
                theirs.map(f64::to_bits),
                "{text:?}: {ours:?} vs {theirs:?}"
            );
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(20000))]
        #[test]
        fn parse_float_agrees_on_decimals(text in "[-+]?[0-9]{0,18}(\\.[0-9]{0,24})?") {
            proptest::prop_assert_eq!(
                parse_float(&text).map(f64::to_bits),
                reference_float(&text).map(f64::to_bits),
                "{:?}", text
            );
        }
    }
}
