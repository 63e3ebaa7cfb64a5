//! A host→MCU (or MCU→host) byte stream decoded message by message, as Klipper's `parsedump.py`
//! prints it: one line per message in Klipper's text form (`queue_step oid=2 interval=… …`).
//!
//! Like `parsedump.py`, bytes that do not start a valid block are skipped one at a time and
//! reported; a message id the dictionary lacks becomes a `#unknown` line holding the rest of its
//! block. The caller gets each event through a sink, so a 250 000-line stream is never held in
//! memory.

use std::fmt::Write as _;

use crate::block::{self, Check};
use crate::dictionary::Dictionary;
use crate::msgformat::{MessageFormat, Value, python_bytes_repr};
use crate::vlq;

/// One thing found in the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// A decoded message, in Klipper's text form.
    Message(&'a str),
    /// Bytes that could not be decoded, with where they start and why.
    Invalid {
        /// Byte offset in the stream.
        offset: usize,
        /// What was wrong.
        reason: String,
    },
}

/// What a whole stream held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    /// Valid blocks.
    pub blocks: usize,
    /// Messages decoded (including `#unknown` ones).
    pub messages: usize,
    /// Invalid events reported.
    pub invalid: usize,
}

/// One decoded item of a stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded<'a> {
    /// A message and its parameter values.
    Message {
        /// Its format, from the dictionary.
        format: &'a MessageFormat,
        /// Its values, in parameter order.
        values: &'a [Value],
    },
    /// A message id the dictionary lacks, with the rest of its block.
    Unknown {
        /// The id.
        id: i32,
        /// The bytes after the id, to the end of the block.
        data: &'a [u8],
    },
    /// Bytes that could not be decoded.
    Invalid {
        /// Byte offset in the stream.
        offset: usize,
        /// What was wrong.
        reason: String,
    },
}

/// Decodes `data` block by block, calling `sink` for every message and every problem, in
/// stream order.
pub fn decode(dict: &Dictionary, data: &[u8], mut sink: impl FnMut(Decoded<'_>)) -> Summary {
    let mut summary = Summary::default();
    let mut pos = 0;
    // Consecutive bad bytes are one report, not one per byte.
    let mut bad_run: Option<(usize, block::Invalid)> = None;
    while pos < data.len() {
        match block::check(&data[pos..]) {
            Check::Incomplete => {
                let reason = format!(
                    "{} trailing bytes do not make a whole block",
                    data.len() - pos
                );
                sink(Decoded::Invalid {
                    offset: pos,
                    reason,
                });
                summary.invalid += 1;
                break;
            }
            Check::Invalid(why) => {
                bad_run.get_or_insert((pos, why));
                pos += 1;
            }
            Check::Block { len, .. } => {
                if let Some((offset, why)) = bad_run.take() {
                    let reason = format!("{} bytes skipped ({why:?})", pos - offset);
                    sink(Decoded::Invalid { offset, reason });
                    summary.invalid += 1;
                }
                summary.blocks += 1;
                let payload = block::payload(&data[pos..pos + len]);
                decode_payload(
                    dict,
                    payload,
                    pos + block::HEADER_SIZE,
                    &mut summary,
                    &mut sink,
                );
                pos += len;
            }
        }
    }
    if let Some((offset, why)) = bad_run {
        let reason = format!("{} bytes skipped ({why:?})", pos - offset);
        sink(Decoded::Invalid { offset, reason });
        summary.invalid += 1;
    }
    summary
}

/// Decodes `data` into Klipper's text lines (see the module doc).
pub fn dump(dict: &Dictionary, data: &[u8], mut sink: impl FnMut(Event<'_>)) -> Summary {
    let mut line = String::new();
    decode(dict, data, |item| match item {
        Decoded::Message { format, values } => {
            line.clear();
            line.push_str(&format.format_values(values));
            sink(Event::Message(&line));
        }
        Decoded::Unknown { id, data } => {
            line.clear();
            let _ = write!(line, "#unknown id={id} data=");
            python_bytes_repr(&mut line, data);
            sink(Event::Message(&line));
        }
        Decoded::Invalid { offset, reason } => sink(Event::Invalid { offset, reason }),
    })
}

fn decode_payload(
    dict: &Dictionary,
    payload: &[u8],
    base: usize,
    summary: &mut Summary,
    sink: &mut impl FnMut(Decoded<'_>),
) {
    let mut pos = 0;
    while pos < payload.len() {
        let Ok((raw_id, id_len)) = vlq::decode(&payload[pos..]) else {
            sink(Decoded::Invalid {
                offset: base + pos,
                reason: "truncated message id".into(),
            });
            summary.invalid += 1;
            return;
        };
        let id = raw_id.cast_signed();
        let Some(format) = dict.message(id) else {
            sink(Decoded::Unknown {
                id,
                data: &payload[pos + id_len..],
            });
            summary.messages += 1;
            return;
        };
        match format.decode(&payload[pos + id_len..]) {
            Ok((values, used)) => {
                sink(Decoded::Message {
                    format,
                    values: &values,
                });
                summary.messages += 1;
                pos += id_len + used;
            }
            Err(e) => {
                sink(Decoded::Invalid {
                    offset: base + pos,
                    reason: e.to_string(),
                });
                summary.invalid += 1;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DICT: &str = r#"{"config": {"CLOCK_FREQ": 16000000},
        "enumerations": {"pin": {"PA0": [0, 8]}},
        "commands": {"queue_step oid=%c interval=%u count=%hu add=%hi": 22,
                     "config_endstop oid=%c pin=%c pull_up=%c": 23, "get_clock": 5}}"#;

    fn collect(dict: &Dictionary, data: &[u8]) -> (Vec<String>, Summary) {
        let mut lines = Vec::new();
        let summary = dump(dict, data, |e| match e {
            Event::Message(m) => lines.push(m.to_owned()),
            Event::Invalid { offset, reason } => lines.push(format!("! {offset}: {reason}")),
        });
        (lines, summary)
    }

    #[test]
    fn blocks_with_several_messages() {
        let dict = Dictionary::from_json(DICT).expect("valid");
        let mut payload = Vec::new();
        let endstop = dict.command("config_endstop").expect("present");
        endstop
            .encode(&[Value::Int(0), Value::Int(5), Value::Int(1)], &mut payload)
            .expect("ok");
        dict.command("get_clock")
            .expect("present")
            .encode(&[], &mut payload)
            .expect("ok");
        let mut stream = vec![0x7e];
        block::encode(1, &payload, &mut stream).expect("fits");
        let step = dict.command("queue_step").expect("present");
        payload.clear();
        step.encode(
            &[
                Value::Int(2),
                Value::Int(7458),
                Value::Int(10),
                Value::Int(-331),
            ],
            &mut payload,
        )
        .expect("ok");
        block::encode(2, &payload, &mut stream).expect("fits");
        let (lines, summary) = collect(&dict, &stream);
        assert_eq!(
            lines,
            [
                "! 0: 1 bytes skipped (Length)",
                "config_endstop oid=0 pin=PA5 pull_up=1",
                "get_clock",
                "queue_step oid=2 interval=7458 count=10 add=-331",
            ]
        );
        assert_eq!(
            summary,
            Summary {
                blocks: 2,
                messages: 3,
                invalid: 1
            }
        );
    }

    #[test]
    fn unknown_ids_and_truncation_are_reported() {
        let dict = Dictionary::from_json(DICT).expect("valid");
        let mut stream = Vec::new();
        block::encode(0, &[0x30, 0x01, 0x02], &mut stream).expect("fits");
        block::encode(1, &[22, 0x81], &mut stream).expect("fits");
        stream.extend_from_slice(&[0x08, 0x11]);
        let (lines, summary) = collect(&dict, &stream);
        assert_eq!(lines[0], r"#unknown id=48 data=b'\x01\x02'");
        assert_eq!(
            lines[1],
            "! 10: message queue_step: truncated at parameter 'oid'"
        );
        assert_eq!(lines[2], "! 15: 2 trailing bytes do not make a whole block");
        assert_eq!(summary.invalid, 2);
    }
}
