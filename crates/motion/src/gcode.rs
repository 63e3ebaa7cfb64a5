//! The G-code lexer: one line of text into a command and its parameters, as Klipper reads it.
//!
//! Klipper's rules: text after `;` is a comment; a leading `N<number>` line number and a trailing
//! `*<checksum>` are dropped; a "classic" command is a letter and a number (`G1`, `M104`) followed
//! by letter+number words; any other first word is an "extended" command (`SET_VELOCITY_LIMIT
//! VELOCITY=200`) whose parameters are `KEY=VALUE` pairs. Names and letters are upper-cased.
//! The lexer never fails on a line: what it cannot read becomes [`Line::Invalid`] with a reason.

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
}
