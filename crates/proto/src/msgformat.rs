//! One message's format: its name, its parameters' names and types, and how its parameters go on
//! and come off the wire.
//!
//! A command or response format reads `queue_step oid=%c interval=%u count=%hu add=%hi`: the
//! name, then `name=%type` per parameter, in wire order. An `output` format is a printf-style
//! debug string whose `%` specifiers are its parameters, printed by substitution. Every integer is
//! a VLQ on the wire whatever its declared width; the width decides how it is read back:
//! `%u` u32, `%i` i32, `%hu` u16, `%hi` i16, `%c` u8. Strings and buffers (`%s`, `%.*s`, `%*s`)
//! are one length byte and the raw bytes.

use std::fmt::Write as _;
use std::sync::Arc;

use crate::dictionary::Enumeration;
use crate::vlq;

/// A parameter's wire type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    /// `%u`: 32-bit unsigned.
    U32,
    /// `%i`: 32-bit signed.
    I32,
    /// `%hu`: 16-bit unsigned.
    U16,
    /// `%hi`: 16-bit signed.
    I16,
    /// `%c`: 8-bit unsigned.
    Byte,
    /// `%s`: a string (MCU to host).
    String,
    /// `%.*s`: a buffer from the MCU's flash (MCU to host).
    ProgmemBuffer,
    /// `%*s`: a buffer (both directions).
    Buffer,
}

impl ParamType {
    /// The type of a printf-style specifier such as `%hu`.
    pub fn from_spec(spec: &str) -> Option<Self> {
        Some(match spec {
            "%u" => Self::U32,
            "%i" => Self::I32,
            "%hu" => Self::U16,
            "%hi" => Self::I16,
            "%c" => Self::Byte,
            "%s" => Self::String,
            "%.*s" => Self::ProgmemBuffer,
            "%*s" => Self::Buffer,
            _ => return None,
        })
    }

    /// Whether values of this type are byte strings rather than integers.
    pub fn is_bytes(self) -> bool {
        matches!(self, Self::String | Self::ProgmemBuffer | Self::Buffer)
    }

    /// Reads a decoded 32-bit wire value as this integer type.
    fn widen(self, raw: u32) -> i64 {
        match self {
            Self::U32 => i64::from(raw),
            Self::I32 => i64::from(raw.cast_signed()),
            // Truncation to the declared width is the point here.
            #[allow(clippy::cast_possible_truncation)]
            Self::U16 => i64::from(raw as u16),
            #[allow(clippy::cast_possible_truncation)]
            Self::I16 => i64::from((raw as u16).cast_signed()),
            #[allow(clippy::cast_possible_truncation)]
            Self::Byte => i64::from(raw as u8),
            Self::String | Self::ProgmemBuffer | Self::Buffer => 0,
        }
    }
}

/// A parameter value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// Any integer type, widened.
    Int(i64),
    /// A string or buffer.
    Bytes(Vec<u8>),
}

/// One parameter of a message.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    /// Its name (`oid`, `step_pin`).
    pub name: String,
    /// Its wire type.
    pub kind: ParamType,
    /// The enumeration its integers name, if any (`pin` for `step_pin`).
    pub enumeration: Option<Arc<Enumeration>>,
}

/// Whether a format is a command/response or a debug output string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatKind {
    /// `name key=%x …`.
    Message,
    /// A printf-style `output` string.
    Output,
}

/// Why a message could not be decoded or encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// The format string has a specifier this protocol does not know.
    #[error("format '{format}': unknown parameter type '{spec}'")]
    UnknownType {
        /// The whole format string.
        format: String,
        /// The specifier.
        spec: String,
    },
    /// A parameter is not written `name=%type`.
    #[error("format '{format}': parameter '{word}' is not name=%type")]
    Malformed {
        /// The whole format string.
        format: String,
        /// The offending word.
        word: String,
    },
    /// The bytes ended inside the message.
    #[error("message {name}: truncated at parameter '{param}'")]
    Truncated {
        /// The message.
        name: String,
        /// The parameter being read.
        param: String,
    },
    /// Encoding got the wrong number or kind of values.
    #[error("message {name}: {why}")]
    BadArguments {
        /// The message.
        name: String,
        /// What was wrong.
        why: String,
    },
}

/// A parsed message format with its id.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageFormat {
    /// The message id (may be negative: ids are VLQ-decoded bytes).
    pub id: i32,
    /// The format string exactly as the dictionary gives it.
    pub format: String,
    /// The message name (the whole string for an output format).
    pub name: String,
    /// The parameters in wire order.
    pub params: Vec<Param>,
    /// Command/response or output string.
    pub kind: FormatKind,
}

impl MessageFormat {
    /// Parses a command or response format (`name key=%x …`).
    ///
    /// # Errors
    /// When a parameter is not `name=%type` or has an unknown type.
    pub fn parse_message(id: i32, format: &str) -> Result<Self, MessageError> {
        let mut words = format.split_whitespace();
        let name = words.next().unwrap_or("").to_owned();
        let params = words
            .map(|word| {
                let (pname, spec) =
                    word.split_once('=')
                        .ok_or_else(|| MessageError::Malformed {
                            format: format.to_owned(),
                            word: word.to_owned(),
                        })?;
                let kind = ParamType::from_spec(spec).ok_or_else(|| MessageError::UnknownType {
                    format: format.to_owned(),
                    spec: spec.to_owned(),
                })?;
                Ok(Param {
                    name: pname.to_owned(),
                    kind,
                    enumeration: None,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            id,
            format: format.to_owned(),
            name,
            params,
            kind: FormatKind::Message,
        })
    }

    /// Parses an `output` format: every `%` specifier is a positional parameter.
    ///
    /// # Errors
    /// When a specifier is unknown.
    pub fn parse_output(id: i32, format: &str) -> Result<Self, MessageError> {
        let mut params = Vec::new();
        for spec in output_specs(format) {
            if spec == "%%" {
                continue;
            }
            let kind = ParamType::from_spec(spec).ok_or_else(|| MessageError::UnknownType {
                format: format.to_owned(),
                spec: spec.to_owned(),
            })?;
            params.push(Param {
                name: format!("arg{}", params.len()),
                kind,
                enumeration: None,
            });
        }
        Ok(Self {
            id,
            format: format.to_owned(),
            name: format.to_owned(),
            params,
            kind: FormatKind::Output,
        })
    }

    /// Decodes the parameters at the front of `input` (just after the message id); returns them
    /// and the bytes used.
    ///
    /// # Errors
    /// [`MessageError::Truncated`] when the input ends inside a parameter.
    pub fn decode(&self, input: &[u8]) -> Result<(Vec<Value>, usize), MessageError> {
        let mut values = Vec::with_capacity(self.params.len());
        let mut pos = 0;
        for p in &self.params {
            let truncated = || MessageError::Truncated {
                name: self.name.clone(),
                param: p.name.clone(),
            };
            let rest = input.get(pos..).unwrap_or(&[]);
            if p.kind.is_bytes() {
                let (&len, data) = rest.split_first().ok_or_else(truncated)?;
                let bytes = data.get(..usize::from(len)).ok_or_else(truncated)?;
                values.push(Value::Bytes(bytes.to_vec()));
                pos += 1 + bytes.len();
            } else {
                let (raw, used) = vlq::decode(rest).map_err(|_| truncated())?;
                values.push(Value::Int(p.kind.widen(raw)));
                pos += used;
            }
        }
        Ok((values, pos))
    }

    /// Appends the message id and `values` to `out`.
    ///
    /// # Errors
    /// When the values do not match the parameters in number or kind, or a buffer exceeds 255
    /// bytes.
    pub fn encode(&self, values: &[Value], out: &mut Vec<u8>) -> Result<(), MessageError> {
        let bad = |why: String| MessageError::BadArguments {
            name: self.name.clone(),
            why,
        };
        if values.len() != self.params.len() {
            return Err(bad(format!(
                "{} parameters given, {} expected",
                values.len(),
                self.params.len()
            )));
        }
        // Check everything before writing anything, so a failed call leaves `out` as it was.
        for (p, v) in self.params.iter().zip(values) {
            match (p.kind.is_bytes(), v) {
                (false, Value::Int(_)) => {}
                (true, Value::Bytes(b)) if b.len() <= 255 => {}
                (true, Value::Bytes(b)) => {
                    return Err(bad(format!(
                        "'{}' holds {} bytes, at most 255",
                        p.name,
                        b.len()
                    )));
                }
                _ => return Err(bad(format!("'{}' has the wrong kind of value", p.name))),
            }
        }
        vlq::encode(self.id, out);
        for (p, v) in self.params.iter().zip(values) {
            match (p.kind.is_bytes(), v) {
                (false, Value::Int(i)) => {
                    // Every integer travels as 32 bits; a u32 above i32::MAX wraps to its
                    // negative twin, which decodes to the same bits.
                    #[allow(clippy::cast_possible_truncation)]
                    vlq::encode(*i as i32, out);
                }
                (true, Value::Bytes(b)) => {
                    // Checked above: at most 255 bytes.
                    #[allow(clippy::cast_possible_truncation)]
                    out.push(b.len() as u8);
                    out.extend_from_slice(b);
                }
                // Checked above: kinds match.
                _ => {}
            }
        }
        Ok(())
    }

    /// Klipper's text form of decoded values: `name key=value …` (enumerated integers by name,
    /// unknown ones as `?N`, byte strings as Python's `bytes` repr), or the output string with its
    /// values substituted.
    pub fn format_values(&self, values: &[Value]) -> String {
        match self.kind {
            FormatKind::Message => {
                let mut out = self.name.clone();
                for (p, v) in self.params.iter().zip(values) {
                    out.push(' ');
                    out.push_str(&p.name);
                    out.push('=');
                    write_value(&mut out, p, v);
                }
                out
            }
            FormatKind::Output => {
                let mut out = String::new();
                let mut rest = self.format.as_str();
                let mut args = self.params.iter().zip(values);
                while let Some(i) = rest.find('%') {
                    out.push_str(&rest[..i]);
                    let spec = spec_at(&rest[i..]);
                    if spec == "%%" {
                        out.push('%');
                    } else if let Some((p, v)) = args.next() {
                        match v {
                            Value::Bytes(b) => out.push_str(&String::from_utf8_lossy(b)),
                            Value::Int(_) => write_value(&mut out, p, v),
                        }
                    }
                    rest = &rest[i + spec.len()..];
                }
                out.push_str(rest);
                out
            }
        }
    }
}

fn write_value(out: &mut String, p: &Param, v: &Value) {
    match v {
        Value::Int(i) => match p.enumeration.as_ref().map(|e| e.name_of(*i)) {
            Some(Some(name)) => out.push_str(name),
            Some(None) => {
                let _ = write!(out, "?{i}");
            }
            None => {
                let _ = write!(out, "{i}");
            }
        },
        Value::Bytes(b) => python_bytes_repr(out, b),
    }
}

/// The specifiers of an output format in order (`%%` included, so callers can skip it).
fn output_specs(format: &str) -> impl Iterator<Item = &str> {
    let mut rest = format;
    std::iter::from_fn(move || {
        let i = rest.find('%')?;
        let spec = spec_at(&rest[i..]);
        rest = &rest[i + spec.len()..];
        Some(spec)
    })
}

/// The printf specifier at the front of `s` (which starts with `%`).
fn spec_at(s: &str) -> &str {
    for (i, c) in s.char_indices().skip(1) {
        if c.is_ascii_alphabetic() || c == '%' {
            return &s[..i + c.len_utf8()];
        }
    }
    s
}

/// Appends Python's `repr()` of a `bytes` value, as Klipper's tools print buffers.
pub fn python_bytes_repr(out: &mut String, b: &[u8]) {
    let quote = if b.contains(&b'\'') && !b.contains(&b'"') {
        '"'
    } else {
        '\''
    };
    out.push('b');
    out.push(quote);
    for &c in b {
        match c {
            b'\\' => out.push_str("\\\\"),
            b'\t' => out.push_str("\\t"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            c if char::from(c) == quote => {
                out.push('\\');
                out.push(quote);
            }
            0x20..=0x7e => out.push(char::from(c)),
            _ => {
                let _ = write!(out, "\\x{c:02x}");
            }
        }
    }
    out.push(quote);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_step_round_trips() {
        let f = MessageFormat::parse_message(22, "queue_step oid=%c interval=%u count=%hu add=%hi")
            .expect("valid");
        let values = [
            Value::Int(3),
            Value::Int(7458),
            Value::Int(10),
            Value::Int(331),
        ];
        let mut out = Vec::new();
        f.encode(&values, &mut out).expect("encodes");
        assert_eq!(out, [0x16, 0x03, 0xba, 0x22, 0x0a, 0x82, 0x4b]);
        let (decoded, used) = f.decode(&out[1..]).expect("decodes");
        assert_eq!((decoded.as_slice(), used), (&values[..], 6));
        assert_eq!(
            f.format_values(&decoded),
            "queue_step oid=3 interval=7458 count=10 add=331"
        );
    }

    #[test]
    fn widths_and_signs() {
        let f = MessageFormat::parse_message(5, "m a=%u b=%i c=%hu d=%hi e=%c").expect("valid");
        // 0xFFFFFFFF in its short form, read at each width.
        let (v, _) = f.decode(&[0x7f, 0x7f, 0x7f, 0x7f, 0x7f]).expect("decodes");
        assert_eq!(
            v,
            [
                Value::Int(4_294_967_295),
                Value::Int(-1),
                Value::Int(65_535),
                Value::Int(-1),
                Value::Int(255)
            ]
        );
        assert_eq!(
            f.format_values(&v),
            "m a=4294967295 b=-1 c=65535 d=-1 e=255"
        );
    }

    #[test]
    fn buffers_and_their_repr() {
        let f = MessageFormat::parse_message(0, "identify_response offset=%u data=%.*s")
            .expect("valid");
        let (v, used) = f
            .decode(&[0x00, 0x04, b'x', 0xda, b'\'', b'\\'])
            .expect("decodes");
        assert_eq!(used, 6);
        assert_eq!(
            f.format_values(&v),
            r#"identify_response offset=0 data=b"x\xda'\\""#
        );
        let mut s = String::new();
        python_bytes_repr(&mut s, b"a'b\"c\n");
        assert_eq!(s, r#"b'a\'b"c\n'"#);
    }

    #[test]
    fn output_strings_substitute() {
        let f = MessageFormat::parse_output(-20, "Stepper %c at %u is 100%% %s").expect("valid");
        assert_eq!(f.params.len(), 3);
        let mut bytes = vec![0x02, 0x81, 0x00, 0x02];
        bytes.extend_from_slice(b"ok");
        let (v, _) = f.decode(&bytes).expect("decodes");
        assert_eq!(f.format_values(&v), "Stepper 2 at 128 is 100% ok");
    }

    #[test]
    fn errors_are_specific() {
        let e = MessageFormat::parse_message(1, "m a=%q").expect_err("bad type");
        assert_eq!(
            e.to_string(),
            "format 'm a=%q': unknown parameter type '%q'"
        );
        let e = MessageFormat::parse_message(1, "m a").expect_err("bad word");
        assert_eq!(
            e.to_string(),
            "format 'm a': parameter 'a' is not name=%type"
        );
        let f = MessageFormat::parse_message(1, "m a=%u b=%*s").expect("valid");
        assert_eq!(
            f.decode(&[0x81]).expect_err("truncated").to_string(),
            "message m: truncated at parameter 'a'"
        );
        assert!(
            f.decode(&[0x01, 0x05, 0x00]).is_err(),
            "a buffer longer than the input"
        );
        let mut out = Vec::new();
        assert!(f.encode(&[Value::Int(1)], &mut out).is_err());
        assert!(
            f.encode(&[Value::Bytes(vec![]), Value::Int(1)], &mut out)
                .is_err()
        );
    }
}
