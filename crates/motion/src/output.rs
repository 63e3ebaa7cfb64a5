//! Writing an MCU's command stream the way klippy's batch mode does: Klipper message blocks.
//!
//! The config phase goes first, then the runtime commands in the order the planner produced
//! them. Commands are packed greedily into blocks of at most 64 bytes with sequence numbers
//! starting at 1 (as klippy's serial queue does in file mode). Block packing differs from
//! klippy's (which depends on its threads' timing); the decoded command stream per oid is what
//! counts, and that is what `gantry_motion::steptrace` compares.

use gantry_proto::block::{self, PAYLOAD_MAX};
use gantry_proto::dictionary::Dictionary;
use gantry_proto::msgformat::{MessageError, MessageFormat, Value};
use gantry_proto::vlq;

use crate::stepcompress::StepCommand;
use crate::toolhead::{McuCommand, McuMessage};

/// Why a stream could not be written.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The dictionary lacks a command the printer needs, or a value does not fit.
    #[error("command {index} ({text}): {source}")]
    Encode {
        /// Position in the stream (0-based).
        index: usize,
        /// The command in text form.
        text: String,
        /// What the encoder said.
        #[source]
        source: MessageError,
    },
    /// A single command does not fit in a message block.
    #[error("command {index} ({text}) is {bytes} bytes, more than a message block holds")]
    TooLong {
        /// Position in the stream (0-based).
        index: usize,
        /// The command in text form.
        text: String,
        /// Its encoded size.
        bytes: usize,
    },
}

/// A step command's message format, checked once to take only integer parameters, so that
/// each message is written straight to the block without the generic encoder's checks.
#[derive(Clone, Copy)]
struct StepFormat<'a> {
    format: &'a MessageFormat,
    /// Whether the format has exactly the expected number of parameters, all integers.
    direct: bool,
}

impl<'a> StepFormat<'a> {
    fn new(dict: &'a Dictionary, name: &str, params: usize) -> Result<Self, OutputError> {
        let format = require(dict, name)?;
        let direct =
            format.params.len() == params && format.params.iter().all(|p| !p.kind.is_bytes());
        Ok(Self { format, direct })
    }

    /// The command's values in wire order — `params` with the format's id put in place of the
    /// first, a placeholder — each an integer truncated to 32 bits as the generic encoder takes
    /// it, where the format takes them so ([`StepFormat::direct`]).
    #[inline(always)]
    fn direct_values<const N: usize>(&self, params: [i32; N]) -> Option<[i32; N]> {
        self.direct.then(|| {
            let mut values = params;
            values[0] = self.format.id;
            values
        })
    }

    /// Encodes `values` (as the generic encoder does: each integer truncated to 32 bits) into
    /// `out`, which must be empty; returns the bytes used.
    fn encode(
        &self,
        values: &[i64],
        out: &mut [u8; STEP_MSG_MAX],
        scratch: &mut Vec<u8>,
    ) -> Result<usize, MessageError> {
        if !self.direct {
            // Let the generic encoder report the mismatch.
            let generic: Vec<Value> = values.iter().map(|&v| Value::Int(v)).collect();
            scratch.clear();
            self.format.encode(&generic, scratch)?;
            let n = scratch.len().min(STEP_MSG_MAX);
            out[..n].copy_from_slice(&scratch[..n]);
            return Ok(scratch.len());
        }
        let mut len = 0;
        let mut buf = [0_u8; vlq::MAX_LEN];
        for v in std::iter::once(self.format.id).chain(values.iter().map(|&v| v as i32)) {
            let n = vlq::encode_into(v, &mut buf);
            // The whole buffer, a fixed-size copy (no memcpy call); only `n` bytes count.
            let Some(slot) = out.get_mut(len..len + vlq::MAX_LEN) else {
                return Err(MessageError::BadArguments {
                    name: self.format.name.clone(),
                    why: format!("{} values, more than a step command has", values.len()),
                });
            };
            slot.copy_from_slice(&buf);
            len += n;
        }
        Ok(len)
    }
}

/// The longest step command: an id and four parameters of at most [`vlq::MAX_LEN`] bytes.
const STEP_MSG_MAX: usize = 5 * vlq::MAX_LEN;

/// Bytes a step command's last value writes past its encoding (each is stored as a whole word,
/// [`vlq::encode_word`]).
const WORD_SLACK: usize = 8 - 1;

/// The block buffer: header, payload, trailer, and room past a full payload for a step
/// command's bytes and its last word.
const FRAME_SIZE: usize = block::HEADER_SIZE + PAYLOAD_MAX + STEP_MSG_MAX + WORD_SLACK;

struct StepFormats<'a> {
    queue_step: StepFormat<'a>,
    set_next_step_dir: StepFormat<'a>,
    reset_step_clock: StepFormat<'a>,
}

fn step_text(oid: u8, c: &StepCommand) -> String {
    match c {
        StepCommand::QueueStep {
            interval,
            count,
            add,
        } => format!("queue_step oid={oid} interval={interval} count={count} add={add}"),
        StepCommand::SetNextStepDir { dir } => {
            format!("set_next_step_dir oid={oid} dir={}", u8::from(*dir))
        }
        StepCommand::ResetStepClock { clock } => {
            format!("reset_step_clock oid={oid} clock={clock}")
        }
    }
}

/// The text form of a planner message (as parsedump prints it).
pub fn message_text(m: &McuMessage) -> String {
    match &m.command {
        McuCommand::Step { oid, message } => step_text(*oid, message),
        McuCommand::Text(t) => t.clone(),
    }
}

fn require<'a>(dict: &'a Dictionary, name: &str) -> Result<&'a MessageFormat, OutputError> {
    dict.require_command(name)
        .map_err(|source| OutputError::Encode {
            index: 0,
            text: name.to_owned(),
            source,
        })
}

/// Encodes the config phase and the messages into framed blocks.
///
/// # Errors
/// When the dictionary lacks a command or a value does not fit its parameter.
pub fn encode_stream(
    dict: &Dictionary,
    config_phase: &[String],
    messages: &[McuMessage],
) -> Result<Vec<u8>, OutputError> {
    let mut enc = StreamEncoder::new(dict)?;
    let mut out = Vec::with_capacity(estimated_size(config_phase.len() + messages.len()));
    for (index, text) in config_phase.iter().enumerate() {
        enc.push_text(index, text, &mut out)?;
    }
    enc.push_all(config_phase.len(), messages, &mut out)?;
    enc.finish(&mut out);
    Ok(out)
}

/// A generous guess of the stream size for `commands` commands (step commands average about
/// eight bytes framed), to size the output once.
fn estimated_size(commands: usize) -> usize {
    commands.saturating_mul(9).saturating_add(64)
}

/// Packs commands into framed blocks as they come (what [`encode_stream`] does for a whole
/// stream), so that a caller may write the output while the planner runs: push the config
/// phase with [`StreamEncoder::push_text`], then each message with [`StreamEncoder::push`]
/// (indices count from 0 over both, for error messages), then [`StreamEncoder::finish`]. Bytes
/// are appended to the caller's buffer one whole block at a time.
pub struct StreamEncoder<'a> {
    dict: &'a Dictionary,
    formats: StepFormats<'a>,
    /// The block being filled, in place: its payload so far is the `payload_len` bytes from
    /// [`block::HEADER_SIZE`] on ([`block::seal`] frames it there).
    frame: [u8; FRAME_SIZE],
    payload_len: usize,
    scratch: Vec<u8>,
    seq: u8,
}

impl<'a> StreamEncoder<'a> {
    /// An encoder for an MCU with this dictionary.
    ///
    /// # Errors
    /// When the dictionary lacks a step command.
    pub fn new(dict: &'a Dictionary) -> Result<Self, OutputError> {
        Ok(Self {
            dict,
            formats: StepFormats {
                queue_step: StepFormat::new(dict, "queue_step", 4)?,
                set_next_step_dir: StepFormat::new(dict, "set_next_step_dir", 2)?,
                reset_step_clock: StepFormat::new(dict, "reset_step_clock", 2)?,
            },
            frame: [0; FRAME_SIZE],
            payload_len: 0,
            scratch: Vec::new(),
            seq: 1,
        })
    }

    /// Appends one command given in Klipper's text form (`index`: its position in the stream).
    ///
    /// # Errors
    /// An unknown command or bad parameters; a command too long for a block.
    pub fn push_text(
        &mut self,
        index: usize,
        text: &str,
        out: &mut Vec<u8>,
    ) -> Result<(), OutputError> {
        let msg = self
            .dict
            .encode_text(text)
            .map_err(|source| OutputError::Encode {
                index,
                text: text.to_owned(),
                source,
            })?;
        if msg.len() > PAYLOAD_MAX {
            return Err(OutputError::TooLong {
                index,
                text: text.to_owned(),
                bytes: msg.len(),
            });
        }
        self.append(&msg, out);
        Ok(())
    }

    /// Appends planner messages in order, the first at position `first_index` in the stream
    /// ([`StreamEncoder::push`] for each, in one loop).
    ///
    /// # Errors
    /// As [`StreamEncoder::push`], at the first message that fails (the ones before it are
    /// appended).
    pub fn push_all(
        &mut self,
        first_index: usize,
        messages: &[McuMessage],
        out: &mut Vec<u8>,
    ) -> Result<(), OutputError> {
        for (index, m) in (first_index..).zip(messages) {
            self.push(index, m, out)?;
        }
        Ok(())
    }

    /// Appends one planner message (`index`: its position in the stream).
    ///
    /// # Errors
    /// A value that does not fit its parameter; a command too long for a block.
    #[inline]
    pub fn push(
        &mut self,
        index: usize,
        m: &McuMessage,
        out: &mut Vec<u8>,
    ) -> Result<(), OutputError> {
        // A step command of a format that takes its fields as they are: written straight into
        // the block.
        if let McuCommand::Step { oid, message } = m.command {
            let oid = i32::from(oid);
            let formats = &self.formats;
            let written = match message {
                StepCommand::QueueStep {
                    interval,
                    count,
                    add,
                } => formats
                    .queue_step
                    .direct_values([
                        0,
                        oid,
                        interval.cast_signed(),
                        i32::from(count),
                        i32::from(add),
                    ])
                    .map(|values| self.append_values(values, out)),
                StepCommand::SetNextStepDir { dir } => formats
                    .set_next_step_dir
                    .direct_values([0, oid, i32::from(dir)])
                    .map(|values| self.append_values(values, out)),
                StepCommand::ResetStepClock { clock } => formats
                    .reset_step_clock
                    .direct_values([0, oid, clock.cast_signed()])
                    .map(|values| self.append_values(values, out)),
            };
            if written.is_some() {
                return Ok(());
            }
        }
        let mut buf = [0_u8; STEP_MSG_MAX];
        match self.encode_step(index, m, &mut buf)? {
            Some(len) => {
                self.append_step(&buf, len, out);
                Ok(())
            }
            None => match &m.command {
                McuCommand::Text(t) => self.push_text(index, t, out),
                McuCommand::Step { .. } => Ok(()),
            },
        }
    }

    /// Encodes one planner message alone, unframed (a live host queues each message with its
    /// own clocks): its bytes are appended to `out`.
    ///
    /// # Errors
    /// An unknown command, a value that does not fit its parameter, a message too long.
    pub fn encode_message(&mut self, m: &McuMessage, out: &mut Vec<u8>) -> Result<(), OutputError> {
        let mut buf = [0_u8; STEP_MSG_MAX];
        if let Some(len) = self.encode_step(0, m, &mut buf)? {
            out.extend_from_slice(&buf[..len]);
            return Ok(());
        }
        let McuCommand::Text(text) = &m.command else {
            return Ok(());
        };
        let msg = self
            .dict
            .encode_text(text)
            .map_err(|source| OutputError::Encode {
                index: 0,
                text: text.clone(),
                source,
            })?;
        if msg.len() > PAYLOAD_MAX {
            return Err(OutputError::TooLong {
                index: 0,
                text: text.clone(),
                bytes: msg.len(),
            });
        }
        out.extend_from_slice(&msg);
        Ok(())
    }

    /// A step command's bytes in `buf` (their length), or `None` for a text command.
    fn encode_step(
        &mut self,
        index: usize,
        m: &McuMessage,
        buf: &mut [u8; STEP_MSG_MAX],
    ) -> Result<Option<usize>, OutputError> {
        let (oid, message) = match &m.command {
            McuCommand::Step { oid, message } => (i64::from(*oid), message),
            McuCommand::Text(_) => return Ok(None),
        };
        let result = match *message {
            StepCommand::QueueStep {
                interval,
                count,
                add,
            } => self.formats.queue_step.encode(
                &[oid, i64::from(interval), i64::from(count), i64::from(add)],
                buf,
                &mut self.scratch,
            ),
            StepCommand::SetNextStepDir { dir } => self.formats.set_next_step_dir.encode(
                &[oid, i64::from(dir)],
                buf,
                &mut self.scratch,
            ),
            StepCommand::ResetStepClock { clock } => self.formats.reset_step_clock.encode(
                &[oid, i64::from(clock)],
                buf,
                &mut self.scratch,
            ),
        };
        let len = result.map_err(|source| OutputError::Encode {
            index,
            text: message_text(m),
            source,
        })?;
        if len > PAYLOAD_MAX || len > STEP_MSG_MAX {
            return Err(OutputError::TooLong {
                index,
                text: message_text(m),
                bytes: len,
            });
        }
        Ok(Some(len))
    }

    /// Writes the last, partly filled block.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        self.flush(out);
    }

    /// The payload from byte `at` on, as far as the frame goes.
    #[inline(always)]
    fn payload_from(&mut self, at: usize) -> &mut [u8] {
        &mut self.frame[block::HEADER_SIZE + at..]
    }

    /// Adds an encoded message (at most [`PAYLOAD_MAX`] bytes) to the current block, starting
    /// a new block when it does not fit.
    fn append(&mut self, msg: &[u8], out: &mut Vec<u8>) {
        self.make_room(msg.len(), out);
        self.payload_from(self.payload_len)[..msg.len()].copy_from_slice(msg);
        self.payload_len += msg.len();
    }

    /// [`StreamEncoder::append`] for a step command, the first `len` bytes of `buf`: the whole
    /// buffer is copied (a fixed-size copy, no call), only `len` bytes count.
    #[inline]
    fn append_step(&mut self, buf: &[u8; STEP_MSG_MAX], len: usize, out: &mut Vec<u8>) {
        self.make_room(len, out);
        // (`payload_len` ≤ PAYLOAD_MAX here: the frame has room past a full block.)
        self.payload_from(self.payload_len)[..STEP_MSG_MAX].copy_from_slice(buf);
        self.payload_len += len;
    }

    /// Appends a step command of `N` (≤ 5) integers, its id first: each is encoded as a word
    /// ([`vlq::encode_word`]) and stored whole, the next one where its encoding ends — no loop
    /// per byte, no branch but the block's.
    #[inline(always)]
    fn append_values<const N: usize>(&mut self, values: [i32; N], out: &mut Vec<u8>) {
        const { assert!(N * vlq::MAX_LEN <= STEP_MSG_MAX) };
        let words = values.map(vlq::encode_word);
        let len = words.iter().map(|&(_, n)| n).sum();
        self.make_room(len, out);
        // (`payload_len` ≤ PAYLOAD_MAX here: the frame has room past a full block for the
        // command and its last word.)
        let mut at = self.payload_len;
        for (word, n) in words {
            self.payload_from(at)[..8].copy_from_slice(&word.to_le_bytes());
            at += n;
        }
        self.payload_len = at;
    }

    /// Starts a new block when a message of `len` bytes does not fit the current one.
    #[inline]
    fn make_room(&mut self, len: usize, out: &mut Vec<u8>) {
        if self.payload_len + len > PAYLOAD_MAX {
            self.flush(out);
        }
    }

    fn flush(&mut self, out: &mut Vec<u8>) {
        if self.payload_len == 0 {
            return;
        }
        // Never larger than PAYLOAD_MAX: each message is checked before it is appended.
        if let Ok(len) = block::seal(self.seq, &mut self.frame, self.payload_len) {
            out.extend_from_slice(&self.frame[..len]);
        }
        self.seq = self.seq.wrapping_add(1);
        self.payload_len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const AVR_DICT: &str = include_str!("../../../tests/fixtures/oracle/dict/atmega2560.dict");

    fn step(oid: u8, message: StepCommand) -> McuMessage {
        McuMessage {
            req_clock: 0,
            min_clock: 0,
            command: McuCommand::Step { oid, message },
        }
    }

    fn step_command() -> impl Strategy<Value = StepCommand> {
        prop_oneof![
            (any::<u32>(), any::<u16>(), any::<i16>()).prop_map(|(interval, count, add)| {
                StepCommand::QueueStep {
                    interval,
                    count,
                    add,
                }
            }),
            any::<bool>().prop_map(|dir| StepCommand::SetNextStepDir { dir }),
            any::<u32>().prop_map(|clock| StepCommand::ResetStepClock { clock }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// The step commands written straight into the block are the bytes the dictionary's
        /// generic encoder gives for their text form, block by block.
        #[test]
        fn direct_step_commands_are_the_generic_encoding(
            commands in proptest::collection::vec((any::<u8>(), step_command()), 0..200),
        ) {
            let dict = Dictionary::from_json(AVR_DICT).expect("the fixture parses");
            let messages: Vec<McuMessage> =
                commands.iter().map(|&(oid, c)| step(oid, c)).collect();
            let mut direct = Vec::new();
            let mut encoder = StreamEncoder::new(&dict).expect("step commands");
            encoder.push_all(0, &messages, &mut direct).expect("encodes");
            encoder.finish(&mut direct);
            let mut generic = Vec::new();
            let mut encoder = StreamEncoder::new(&dict).expect("step commands");
            for (index, m) in messages.iter().enumerate() {
                encoder.push_text(index, &message_text(m), &mut generic).expect("encodes");
            }
            encoder.finish(&mut generic);
            prop_assert_eq!(direct, generic);
        }
    }
}
