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
//! It borrows from the line, does not allocate for ordinary lines and splits only as far as it
//! is asked ([`GCodeCommand::letter_floats`] reads a move's numbers in one pass), and [`lines`]
//! cuts text into lines eight bytes at a time, so a planner can read hundreds of MB/s of G-code.

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

/// A classic command's word: the byte ranges of a separator run and of the (trimmed) text
/// after it, in the command's code (the line up to its comment).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Word {
    key: (usize, usize),
    value: (usize, usize),
}

/// A classic command's words in order, found as they are asked for (see [`parse_command`]
/// for the split).
#[derive(Clone, Debug)]
struct ClassicWords<'a> {
    /// The line (trimmed); the words end at its first `;`.
    code: &'a str,
    /// Where the search for the next separator goes on.
    pos: usize,
    /// The end of the code (the first `;`, or the end of the line), once reached.
    code_end: usize,
    /// The separator whose value is being read, if any.
    key: Option<(usize, usize)>,
}

impl<'a> ClassicWords<'a> {
    fn new(code: &'a str) -> Self {
        Self {
            code,
            pos: 0,
            code_end: code.len(),
            key: None,
        }
    }

    /// The next separator (a run of `[A-Za-z_]` or one `*`) from `self.pos`, as a byte range;
    /// `None` at the end of the code (then `code_end` is where it ends).
    #[inline]
    fn next_separator(&mut self) -> Option<(usize, usize)> {
        match separator_from(self.code.as_bytes(), self.pos) {
            Ok((start, end)) => {
                self.pos = end;
                Some((start, end))
            }
            Err(end) => {
                self.code_end = end;
                self.pos = end;
                None
            }
        }
    }
}

impl Iterator for ClassicWords<'_> {
    type Item = Word;

    #[inline]
    fn next(&mut self) -> Option<Word> {
        loop {
            let sep = self.next_separator();
            let value_end = sep.map_or(self.code_end, |(start, _)| start);
            let word = self.key.map(|(ks, ke)| Word {
                key: (ks, ke),
                value: trim_range(self.code, ke, value_end),
            });
            self.key = sep;
            if word.is_some() || sep.is_none() {
                return word;
            }
        }
    }
}

/// One line as the planner reads it: klippy's split, borrowed from the line (see
/// [`parse_command`]).
#[derive(Clone, Debug)]
pub struct GCodeCommand<'a> {
    /// The line, trimmed; a classic command's words are read from it up to its first `;`.
    raw: &'a str,
    name: Cow<'a, str>,
    /// An extended command's `KEY=value` words; `None` for a classic command, whose words
    /// are read from `raw` when asked for.
    extended: Option<Extended<'a>>,
}

/// An extended command's parameters: shell-style words (quotes removed; a `#` or `;` outside
/// quotes ends them) that contain `=`, keys compared upper-cased, values as written.
#[derive(Clone, Debug)]
enum Extended<'a> {
    /// The words' text, without quotes: split when asked for.
    Plain(&'a str),
    /// Words with quotes, taken apart once: (key upper-cased, value).
    Quoted(Vec<(String, String)>),
}

impl<'a> Extended<'a> {
    /// The text after the command name (up to the comment).
    fn new(args: &'a str) -> Self {
        let b = args.as_bytes();
        let quote = |c: &u8| matches!(c, b'"' | b'\'');
        match b.iter().position(|c| quote(c) || matches!(c, b'#' | b';')) {
            None => Self::Plain(args),
            Some(i) if !quote(&b[i]) && !b[i..].iter().any(quote) => Self::Plain(&args[..i]),
            Some(_) => Self::Quoted(quoted_words(args)),
        }
    }

    /// The `KEY=value` words of a plain text, in order, keys as written: the text split at
    /// white space (`str::split(char::is_whitespace)`, byte-wise for ASCII text), words
    /// without `=` left out.
    fn plain_words(text: &'a str) -> impl Iterator<Item = (&'a str, &'a str)> {
        let ascii = text.is_ascii();
        let mut rest = text;
        std::iter::from_fn(move || {
            while !rest.is_empty() {
                let (word, after) = if ascii {
                    match rest.bytes().position(is_space) {
                        Some(end) => (&rest[..end], &rest[end + 1..]),
                        None => (rest, ""),
                    }
                } else {
                    match rest.char_indices().find(|(_, c)| c.is_whitespace()) {
                        Some((end, c)) => (&rest[..end], &rest[end + c.len_utf8()..]),
                        None => (rest, ""),
                    }
                };
                rest = after;
                if let Some(eq) = word.bytes().position(|c| c == b'=') {
                    return Some((&word[..eq], &word[eq + 1..]));
                }
            }
            None
        })
    }

    /// The value of `key` (upper-case), the last one if repeated.
    fn value(&self, key: &str) -> Option<Cow<'a, str>> {
        match self {
            Self::Plain(text) => Self::plain_words(text)
                .filter(|(k, _)| upper_eq(k, key))
                .last()
                .map(|(_, v)| Cow::Borrowed(v)),
            Self::Quoted(words) => words
                .iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| Cow::Owned(v.clone())),
        }
    }

    /// The value of `key` as a borrowed text.
    fn text(&self, key: &str) -> Option<&str> {
        match self {
            Self::Plain(text) => Self::plain_words(text)
                .filter(|(k, _)| upper_eq(k, key))
                .last()
                .map(|(_, v)| v),
            Self::Quoted(words) => words
                .iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str()),
        }
    }

    /// Every word, keys upper-cased.
    fn words(&self) -> Vec<(Cow<'a, str>, Cow<'a, str>)> {
        match self {
            Self::Plain(text) => Self::plain_words(text)
                .map(|(k, v)| (upper(k), Cow::Borrowed(v)))
                .collect(),
            Self::Quoted(words) => words
                .iter()
                .map(|(k, v)| (Cow::Owned(k.clone()), Cow::Owned(v.clone())))
                .collect(),
        }
    }

    fn len(&self) -> usize {
        match self {
            Self::Plain(text) => Self::plain_words(text).count(),
            Self::Quoted(words) => words.len(),
        }
    }
}

/// Whether `text` upper-cased (ASCII) is `key`.
fn upper_eq(text: &str, key: &str) -> bool {
    text.len() == key.len()
        && text
            .bytes()
            .zip(key.bytes())
            .all(|(a, b)| a.to_ascii_uppercase() == b)
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
        self.extended.is_some()
    }

    /// The value of parameter `key` (upper-case), the last one if repeated: for a classic
    /// command upper-cased and trimmed as klippy has it, for an extended one as written.
    pub fn param(&self, key: &str) -> Option<Cow<'a, str>> {
        match &self.extended {
            None => self.classic_value(key).map(upper),
            Some(words) => words.value(key),
        }
    }

    /// The value of parameter `key` as it is written in the line (not upper-cased), for
    /// reading numbers without a copy; the same value as [`GCodeCommand::param`] up to case.
    pub fn param_text(&self, key: &str) -> Option<&str> {
        match &self.extended {
            None => self.classic_value(key),
            Some(words) => words.text(key),
        }
    }

    /// The values of parameters `keys` (upper-case) as written, read in one pass over the
    /// words: element `i` is [`GCodeCommand::param_text`] of `keys[i]` (the last one if
    /// repeated).
    pub fn param_texts<const N: usize>(&self, keys: [&str; N]) -> [Option<&str>; N] {
        let mut out = [None; N];
        let mut set = |k: &str, v| {
            if let Some(i) = keys.iter().position(|key| upper_eq(k, key)) {
                out[i] = Some(v);
            }
        };
        match &self.extended {
            None => {
                for w in ClassicWords::new(self.raw) {
                    set(self.text(w.key), self.text(w.value));
                }
            }
            Some(Extended::Plain(text)) => {
                for (k, v) in Extended::plain_words(text) {
                    set(k, v);
                }
            }
            Some(Extended::Quoted(words)) => {
                for (k, v) in words {
                    set(k, v);
                }
            }
        }
        out
    }

    /// Parameter `key` as a finite number, if present: `Some(Err(text))` when it is not one
    /// (Python's `float()` as the planner applies it: surrounding whitespace allowed).
    pub fn float(&self, key: &str) -> Option<Result<f64, &str>> {
        let text = self.param_text(key)?;
        Some(parse_float(text).ok_or(text))
    }

    /// The one-letter parameters `letters` (upper-case ASCII) as numbers, read in one pass over
    /// the words: element `i` is [`GCodeCommand::float`] of `letters[i]` (the last one if
    /// repeated). A move reads its `X Y Z E F` this way; a plain decimal is read while its
    /// word is scanned.
    #[inline]
    pub fn letter_floats<const N: usize>(
        &self,
        letters: [u8; N],
    ) -> [Option<Result<f64, &str>>; N] {
        let mut out = [None; N];
        if self.extended.is_some() {
            for (slot, &l) in out.iter_mut().zip(&letters) {
                let key = [l];
                *slot = std::str::from_utf8(&key).ok().and_then(|k| self.float(k));
            }
            return out;
        }
        let b = self.raw.as_bytes();
        let mut i = next_split(b, 0);
        // Each separator (a run of [A-Za-z_] or a '*') up to the comment or the end.
        while let Some(&c) = b.get(i) {
            let class = CLASS[usize::from(c)];
            if class == COMMENT {
                break;
            }
            let start = i;
            i += 1;
            if class == WORD {
                while b.get(i).is_some_and(|&c| CLASS[usize::from(c)] == WORD) {
                    i += 1;
                }
            }
            let wanted = if i - start == 1 {
                let head = c.to_ascii_uppercase();
                letters.iter().position(|&l| l == head)
            } else {
                None
            };
            let Some(slot) = wanted else {
                i = next_split(b, i);
                continue;
            };
            // A plain decimal up to the next separator is read in place; anything else is
            // read from its trimmed text.
            if let Some((v, next)) = decimal_at(b, i) {
                out[slot] = Some(Ok(v));
                i = next;
            } else {
                let end = next_split(b, i);
                let text = self.text(trim_range(self.raw, i, end));
                out[slot] = Some(parse_float(text).ok_or(text));
                i = end;
            }
        }
        out
    }

    /// How many parameters the command has (the length of [`GCodeCommand::params`]).
    pub fn param_count(&self) -> usize {
        match &self.extended {
            None => ClassicWords::new(self.raw).count(),
            Some(words) => words.len(),
        }
    }

    /// Every parameter in order: classic words (names and values upper-cased) or extended
    /// `KEY=value` pairs (for macros, tests and diagnostics; allocates).
    pub fn params(&self) -> Vec<(Cow<'a, str>, Cow<'a, str>)> {
        match &self.extended {
            None => ClassicWords::new(self.raw)
                .map(|w| (upper(self.text(w.key)), upper(self.text(w.value))))
                .collect(),
            Some(words) => words.words(),
        }
    }

    #[inline]
    fn text(&self, (start, end): (usize, usize)) -> &'a str {
        self.raw.get(start..end).unwrap_or("")
    }

    /// The classic value of `key` as written (keys compare upper-cased).
    fn classic_value(&self, key: &str) -> Option<&'a str> {
        let code = self.raw.as_bytes();
        let key = key.as_bytes();
        ClassicWords::new(self.raw)
            .filter(|w| {
                code.get(w.key.0..w.key.1).is_some_and(|k| {
                    k.len() == key.len()
                        && k.iter().zip(key).all(|(a, b)| a.to_ascii_uppercase() == *b)
                })
            })
            .last()
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

/// The lines of `text`: `text.split('\n')`, with the newlines found eight bytes at a time
/// (G-code lines are short, and a per-line search call costs more than the search).
pub fn lines(text: &str) -> Lines<'_> {
    Lines { text, pos: Some(0) }
}

/// The iterator of [`lines`].
#[derive(Clone, Debug)]
pub struct Lines<'a> {
    text: &'a str,
    /// Where the next line starts; `None` after the last.
    pos: Option<usize>,
}

impl<'a> Iterator for Lines<'a> {
    type Item = &'a str;

    #[inline]
    fn next(&mut self) -> Option<&'a str> {
        let start = self.pos?;
        let b = self.text.as_bytes();
        let mut i = start;
        let end = loop {
            if let Some(chunk) = b.get(i..i + 8)
                && let Ok(arr) = <[u8; 8]>::try_from(chunk)
            {
                let nl = zero_bytes(u64::from_le_bytes(arr) ^ splat(b'\n'));
                if nl == 0 {
                    i += 8;
                    continue;
                }
                break Some(i + (nl.trailing_zeros() / 8) as usize);
            }
            break b[i.min(b.len())..]
                .iter()
                .position(|&c| c == b'\n')
                .map(|k| i + k);
        };
        self.pos = end.map(|e| e + 1);
        // A newline is always a character boundary.
        self.text.get(start..end.unwrap_or(b.len()))
    }
}

/// The first separator of a classic command at or after `from`: a run of `[A-Za-z_]` or one
/// `*`, as `Ok((start, end))`; `Err(end of code)` (the first `;`, or the end) when none is left.
#[inline(always)]
fn separator_from(b: &[u8], from: usize) -> Result<(usize, usize), usize> {
    let start = next_split(b, from);
    let class = match b.get(start) {
        Some(&c) if CLASS[usize::from(c)] != COMMENT => CLASS[usize::from(c)],
        _ => return Err(start),
    };
    let mut end = start + 1;
    if class == WORD {
        while b.get(end).is_some_and(|&c| CLASS[usize::from(c)] == WORD) {
            end += 1;
        }
    }
    Ok((start, end))
}

/// A plain decimal (`[+-]?digits[.digits]`, blanks around it) that starts at `start` of a
/// classic command's text and runs to the next separator, comment or end: its value and where
/// that next part starts. `None` when the text there is anything else, or a number the exact
/// fast path of [`parse_float`] does not take (the caller then reads the text in full, so the
/// value is always [`parse_float`]'s).
#[inline]
fn decimal_at(b: &[u8], start: usize) -> Option<(f64, usize)> {
    let mut i = start;
    while b.get(i).is_some_and(|&c| is_space(c)) {
        i += 1;
    }
    let negative = b.get(i) == Some(&b'-');
    if matches!(b.get(i), Some(b'-' | b'+')) {
        i += 1;
    }
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
    while b.get(i).is_some_and(|&c| is_space(c)) {
        i += 1;
    }
    let at_end = b.get(i).is_none_or(|&c| CLASS[usize::from(c)] & SPLIT != 0);
    // The conditions of `parse_float`'s exact fast path: the same division gives its value.
    if at_end && digits > 0 && digits <= 19 && mantissa <= 1 << 53 && decimals < POW10.len() {
        let v = mantissa as f64 / POW10[decimals];
        return Some((if negative { -v } else { v }, i));
    }
    None
}

/// `byte` in every byte of a word.
const fn splat(byte: u8) -> u64 {
    u64::from_ne_bytes([byte; 8])
}

/// A word with the high bit set in each byte of `w` that is zero (exactly those).
#[inline]
fn zero_bytes(w: u64) -> u64 {
    !(((w & splat(0x7f)) + splat(0x7f)) | w) & splat(0x80)
}

/// The first position from `i` on where `bytes` has a byte of the [`SPLIT`] classes (or its
/// length), eight bytes at a time: a number and the blanks after it are skipped in one or two
/// steps instead of a branch per byte.
#[inline(always)]
fn next_split(bytes: &[u8], mut i: usize) -> usize {
    while let Some(chunk) = bytes.get(i..i + 8) {
        let Ok(arr) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        let w = u64::from_le_bytes(arr);
        // Every byte that may be of a SPLIT class: those from 0x40 on (letters, `_`, and a few
        // others), `*` and `;`. Exact per byte (no carry crosses bytes), so the lowest one
        // found is the first candidate.
        let high = (((w & splat(0x7f)) + splat(0x40)) | w) & splat(0x80);
        let candidates = high | zero_bytes(w ^ splat(b'*')) | zero_bytes(w ^ splat(b';'));
        if candidates == 0 {
            i += 8;
            continue;
        }
        i += (candidates.trailing_zeros() / 8) as usize;
        if CLASS[usize::from(bytes[i])] & SPLIT != 0 {
            return i;
        }
        i += 1;
    }
    while i < bytes.len() && CLASS[usize::from(bytes[i])] & SPLIT == 0 {
        i += 1;
    }
    i
}

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
/// This is the planner's `parse_line` rule for rule. Only the start of the line is split here
/// (enough for the name); the words are read when asked for, a move's numbers in one pass
/// ([`GCodeCommand::letter_floats`]). It allocates only for lower-case names and extended
/// commands with quotes.
#[inline(always)]
pub fn parse_command(line: &str) -> Option<GCodeCommand<'_>> {
    let raw = trim(line);
    let bytes = raw.as_bytes();
    // The first separators: each is `Ok((start, end))`, or `Err(end of code)` after the last.
    let first = separator_from(bytes, 0);
    let second = first.and_then(|(_, end)| separator_from(bytes, end));
    let start_of = |sep: Result<(usize, usize), usize>| match sep {
        Ok((start, _)) | Err(start) => start,
    };
    // text₀ is empty and sep₁ is exactly "N": a line number first.
    let line_number =
        first.is_ok_and(|(start, end)| start == 0 && end == 1 && matches!(bytes[0], b'N' | b'n'));
    let name_text = if line_number {
        match second {
            Ok((start, end)) => &raw[start..start_of(separator_from(bytes, end))],
            Err(_) => "",
        }
    } else {
        &raw[..start_of(second)]
    };
    let name = upper(trim(name_text));
    // The line up to its comment (classic words are read from the line and stop there).
    let code = || raw.find(';').map_or(raw, |end| &raw[..end]);
    if name.is_empty() && trim(code()).is_empty() {
        return None;
    }
    let is_extended = name.len() > 2 && !name.chars().nth(1).is_some_and(|c| c.is_ascii_digit());
    let extended = is_extended.then(|| {
        let code = code();
        let start = find_upper(code, &name).map_or(code.len(), |p| p + name.len());
        Extended::new(&code[start..])
    });
    Some(GCodeCommand {
        raw,
        name,
        extended,
    })
}

/// The `KEY=value` words of an extended command's text with quotes: shell-style words
/// (quotes removed; a `#` or `;` outside quotes ends them) that contain `=`, keys upper-cased.
fn quoted_words(raw: &str) -> Vec<(String, String)> {
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
        .map(|(k, v)| (k.to_ascii_uppercase(), v.to_owned()))
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
                    if o.param_texts([key.as_str()])[0] != o.param_text(key) {
                        return Err(format!("{line:?}: param_texts {key}"));
                    }
                }
                let keys = ["X", "Y", "NAME", "E", "S"];
                if o.param_texts(keys) != keys.map(|k| o.param_text(k)) {
                    return Err(format!("{line:?}: param_texts {keys:?}"));
                }
                // The one-pass read of letters gives what `float` gives, bit for bit.
                let letters = *b"XYZEFGMNST_*";
                fn bits(r: Option<Result<f64, &str>>) -> Option<Result<u64, &str>> {
                    r.map(|r| r.map(f64::to_bits))
                }
                for (l, got) in letters.iter().zip(o.letter_floats(letters)) {
                    let key = char::from(*l).to_string();
                    if bits(got) != bits(o.float(&key)) {
                        return Err(format!(
                            "{line:?}: letter_floats {key}: {got:?} vs {:?}",
                            o.float(&key)
                        ));
                    }
                }
                if o.param_count() != t.params.len() {
                    return Err(format!("{line:?}: param_count {}", o.param_count()));
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
            "G1 X1 ;Y2",
            "G1 X 1 Y- 2 Z+3 E.5 F1200.",
            "G1 X1.5\u{a0}Y2",
            "G1 X12345678901234567890 Y1e3 Z0.00000000000000000000001",
            "G1 X9007199254740993 Y-0 E-.0",
            "G1 X1;2",
            "G1 X1*2 Y3",
            "G1 X1 X2 X",
            "G1 X-- Y.",
            "G1X1Y2Z3E4F5",
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
            line in "[GgMmNnXxYyEeFfTSs_*;#'\"= 0-9.+\\-\t\u{a0}é]{0,24}"
        ) {
            if let Err(e) = agrees(&line) {
                proptest::prop_assert!(false, "{}", e);
            }
        }
    }

    #[test]
    fn lines_split_at_newlines() {
        for text in [
            "",
            "\n",
            "\n\n",
            "a",
            "a\n",
            "G1 X1\nG1 X2\n\nM104 S200 ; héllo\nlast",
            "0123456\n01234567\n012345678\n\n0123456789abcdef0123456789",
            "ü\nĀ\n€€€€€€€€\n",
        ] {
            let ours: Vec<&str> = lines(text).collect();
            let theirs: Vec<&str> = text.split('\n').collect();
            assert_eq!(ours, theirs, "{text:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn lines_are_split_like_str_split(text in "[a\n é]{0,40}") {
            let ours: Vec<&str> = lines(&text).collect();
            let theirs: Vec<&str> = text.split('\n').collect();
            proptest::prop_assert_eq!(ours, theirs);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(20000))]
        #[test]
        fn letter_floats_agree_with_float(
            line in "G1( ?[XYZEF] ?[-+]?[0-9]{0,9}(\\.[0-9]{0,9})? ?){0,5}[ ;*]?[0-9a]?"
        ) {
            if let Err(e) = agrees(&line) {
                proptest::prop_assert!(false, "{}", e);
            }
        }
    }

    #[test]
    fn next_split_finds_the_first_split_byte() {
        let naive = |b: &[u8], i: usize| {
            (i..b.len())
                .find(|&j| CLASS[usize::from(b[j])] & SPLIT != 0)
                .unwrap_or(b.len())
        };
        // Every byte value at every offset of a 20-byte window of digits.
        for v in 0..=255u8 {
            for at in 0..20 {
                let mut b = vec![b'7'; 20];
                b[at] = v;
                for from in 0..=20 {
                    assert_eq!(
                        next_split(&b, from),
                        naive(&b, from),
                        "{v:#x} at {at} from {from}"
                    );
                }
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
