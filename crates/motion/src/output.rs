//! Writing an MCU's command stream the way klippy's batch mode does: Klipper message blocks.
//!
//! The config phase goes first, then the runtime commands in the order the planner produced
//! them. Commands are packed greedily into blocks of at most 64 bytes with sequence numbers
//! starting at 1 (as klippy's serial queue does in file mode). Block packing differs from
//! klippy's (which depends on its threads' timing); the decoded command stream per oid is what
//! counts, and that is what `gantry_motion::steptrace` compares.

use gantry_proto::block::{self, PAYLOAD_MAX};
use gantry_proto::dictionary::Dictionary;
use gantry_proto::msgformat::{MessageError, MessageFormat};
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

/// A step command's message format, checked once to take its parameters as the planner gives
/// them — the expected names, in order, all integers — so that each message is written straight
/// to the block without the generic encoder's checks; otherwise messages go by their text form.
#[derive(Clone, Copy)]
struct StepFormat {
    /// The message id, encoded once ([`vlq::encode_word`]).
    id_word: (u64, usize),
    /// Whether the format takes the planner's values as they are.
    direct: bool,
}

impl StepFormat {
    fn new(dict: &Dictionary, name: &str, params: &[&str]) -> Result<Self, OutputError> {
        let format = require(dict, name)?;
        let direct = format.params.len() == params.len()
            && format
                .params
                .iter()
                .zip(params)
                .all(|(p, &expected)| p.name == expected && !p.kind.is_bytes());
        Ok(Self {
            id_word: vlq::encode_word(format.id),
            direct,
        })
    }
}

/// The most values a step command has: an id and four parameters.
const STEP_VALUES_MAX: usize = 5;

/// The most parameters a step command has.
const STEP_PARAMS_MAX: usize = STEP_VALUES_MAX - 1;

/// A step command as its format takes it ([`StepFormats::values`]).
#[derive(Clone, Copy)]
struct StepValues {
    /// The message id's encoding.
    id_word: (u64, usize),
    /// The parameters, in wire order (each an integer truncated to 32 bits, as the generic
    /// encoder takes it); those past `n` are 0.
    params: [i32; STEP_PARAMS_MAX],
    n: usize,
}

/// The longest step command: its values at [`vlq::MAX_LEN`] bytes each.
const STEP_MSG_MAX: usize = STEP_VALUES_MAX * vlq::MAX_LEN;

/// Bytes a step command's last value writes past its encoding (each is stored as a whole word,
/// [`vlq::encode_word`]).
const WORD_SLACK: usize = 8 - 1;

/// The block buffer: header, payload, trailer, and room past a full payload for a step
/// command's bytes and its last word.
const FRAME_SIZE: usize = block::HEADER_SIZE + PAYLOAD_MAX + STEP_MSG_MAX + WORD_SLACK;

struct StepFormats {
    queue_step: StepFormat,
    set_next_step_dir: StepFormat,
    reset_step_clock: StepFormat,
}

impl StepFormats {
    /// `message` (of stepper `oid`) as its format takes it: the id's encoding and the
    /// parameters in wire order; `None` where the format does not take them so.
    #[inline(always)]
    fn values(&self, oid: u8, message: StepCommand) -> Option<StepValues> {
        let oid = i32::from(oid);
        let (format, params, n) = match message {
            StepCommand::QueueStep {
                interval,
                count,
                add,
            } => (
                self.queue_step,
                [
                    oid,
                    interval.cast_signed(),
                    i32::from(count),
                    i32::from(add),
                ],
                4,
            ),
            StepCommand::SetNextStepDir { dir } => {
                (self.set_next_step_dir, [oid, i32::from(dir), 0, 0], 2)
            }
            StepCommand::ResetStepClock { clock } => {
                (self.reset_step_clock, [oid, clock.cast_signed(), 0, 0], 2)
            }
        };
        format.direct.then_some(StepValues {
            id_word: format.id_word,
            params,
            n,
        })
    }
}

/// The VLQ words of a step command's values ([`vlq::encode_word`]; the id's, encoded once, then
/// the parameters'), the length of each (0 past the parameters the command has) and their sum.
#[inline(always)]
fn step_words(values: StepValues) -> ([(u64, usize); STEP_VALUES_MAX], usize) {
    // (A plain loop: `params.map(..)` is left as a call in some builds, a third of the cost.)
    let mut words = [values.id_word; STEP_VALUES_MAX];
    let mut len = values.id_word.1;
    for (i, (word, &value)) in words[1..].iter_mut().zip(&values.params).enumerate() {
        let (bytes, used) = vlq::encode_word(value);
        let used = if i < values.n { used } else { 0 };
        *word = (bytes, used);
        len += used;
    }
    (words, len)
}

/// Stores `words` ([`step_words`]) from the front of `out`, each whole (8 bytes), the next one
/// where the one before ends: `out` holds their length plus [`WORD_SLACK`].
#[inline(always)]
fn store_words(words: &[(u64, usize); STEP_VALUES_MAX], out: &mut [u8]) {
    let mut at = 0;
    for &(word, len) in words {
        out[at..at + 8].copy_from_slice(&word.to_le_bytes());
        at += len;
    }
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
/// phase with [`StreamEncoder::push_text`], then the messages with [`StreamEncoder::push`] or
/// [`StreamEncoder::push_all`] (indices count from 0 over both, for error messages), then
/// [`StreamEncoder::finish`]. Bytes
/// are appended to the caller's buffer one whole block at a time.
pub struct StreamEncoder<'a> {
    dict: &'a Dictionary,
    formats: StepFormats,
    /// The block being filled, in place: its payload so far is the `payload_len` bytes from
    /// [`block::HEADER_SIZE`] on ([`block::seal`] frames it there).
    frame: [u8; FRAME_SIZE],
    payload_len: usize,
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
                queue_step: StepFormat::new(
                    dict,
                    "queue_step",
                    &["oid", "interval", "count", "add"],
                )?,
                set_next_step_dir: StepFormat::new(dict, "set_next_step_dir", &["oid", "dir"])?,
                reset_step_clock: StepFormat::new(dict, "reset_step_clock", &["oid", "clock"])?,
            },
            frame: [0; FRAME_SIZE],
            payload_len: 0,
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
        let msg = self.encode_text(index, text)?;
        self.append(&msg, out);
        Ok(())
    }

    /// One command given in Klipper's text form, encoded (`index`: its position in the stream,
    /// for errors), checked to fit a block.
    fn encode_text(&self, index: usize, text: &str) -> Result<Vec<u8>, OutputError> {
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
        Ok(msg)
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
        match &m.command {
            &McuCommand::Step { oid, message } => match self.formats.values(oid, message) {
                // Written straight into the block.
                Some(values) => {
                    self.append_values(values, out);
                    Ok(())
                }
                None => self.push_text(index, &message_text(m), out),
            },
            McuCommand::Text(t) => self.push_text(index, t, out),
        }
    }

    /// Encodes one planner message alone, unframed (a live host queues each message with its
    /// own clocks): its bytes are appended to `out`.
    ///
    /// # Errors
    /// An unknown command, a value that does not fit its parameter, a message too long.
    pub fn encode_message(&mut self, m: &McuMessage, out: &mut Vec<u8>) -> Result<(), OutputError> {
        let msg = match &m.command {
            &McuCommand::Step { oid, message } => match self.formats.values(oid, message) {
                Some(values) => {
                    let (words, len) = step_words(values);
                    let mut buf = [0_u8; STEP_MSG_MAX + WORD_SLACK];
                    store_words(&words, &mut buf);
                    out.extend_from_slice(&buf[..len]);
                    return Ok(());
                }
                None => self.encode_text(0, &message_text(m))?,
            },
            McuCommand::Text(text) => self.encode_text(0, text)?,
        };
        out.extend_from_slice(&msg);
        Ok(())
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

    /// Appends a step command ([`StepFormats::values`]): each value is
    /// encoded as a word ([`vlq::encode_word`]) and stored whole, the next one where its
    /// encoding ends — no loop per byte, no branch but the block's.
    #[inline(always)]
    fn append_values(&mut self, values: StepValues, out: &mut Vec<u8>) {
        let (words, len) = step_words(values);
        self.make_room(len, out);
        // (`payload_len` ≤ PAYLOAD_MAX here: the frame has room past a full block for the
        // command and its last word.)
        store_words(&words, self.payload_from(self.payload_len));
        self.payload_len += len;
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

    /// The stream of `messages` written by [`StreamEncoder::push_all`] and, for comparison, from
    /// their text forms (which the dictionary encodes by parameter name).
    fn direct_and_generic(dict: &Dictionary, messages: &[McuMessage]) -> (Vec<u8>, Vec<u8>) {
        let mut direct = Vec::new();
        let mut encoder = StreamEncoder::new(dict).expect("step commands");
        encoder.push_all(0, messages, &mut direct).expect("encodes");
        encoder.finish(&mut direct);
        let mut generic = Vec::new();
        let mut encoder = StreamEncoder::new(dict).expect("step commands");
        for (index, m) in messages.iter().enumerate() {
            encoder
                .push_text(index, &message_text(m), &mut generic)
                .expect("encodes");
        }
        encoder.finish(&mut generic);
        (direct, generic)
    }

    #[test]
    fn step_commands_go_by_name_where_a_format_orders_them_otherwise() {
        let json = AVR_DICT.replace(
            "queue_step oid=%c interval=%u count=%hu add=%hi",
            "queue_step oid=%c count=%hu add=%hi interval=%u",
        );
        assert_ne!(json, AVR_DICT, "the fixture's format changed");
        let dict = Dictionary::from_json(&json).expect("the edited fixture parses");
        let queue_step = McuMessage {
            req_clock: 0,
            min_clock: 0,
            command: McuCommand::Step {
                oid: 3,
                message: StepCommand::QueueStep {
                    interval: 7458,
                    count: 10,
                    add: 331,
                },
            },
        };
        let messages = vec![queue_step.clone(); 3];
        let (direct, generic) = direct_and_generic(&dict, &messages);
        assert_eq!(direct, generic);
        let mut live = Vec::new();
        let mut encoder = StreamEncoder::new(&dict).expect("step commands");
        encoder
            .encode_message(&queue_step, &mut live)
            .expect("encodes");
        let expected = dict
            .encode_text("queue_step oid=3 interval=7458 count=10 add=331")
            .expect("encodes");
        assert_eq!(live, expected);
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
            let (direct, generic) = direct_and_generic(&dict, &messages);
            prop_assert_eq!(direct, generic);
            // One at a time, unframed, as a live host sends them.
            let mut encoder = StreamEncoder::new(&dict).expect("step commands");
            for m in &messages {
                let mut live = Vec::new();
                encoder.encode_message(m, &mut live).expect("encodes");
                let text = dict.encode_text(&message_text(m)).expect("encodes");
                prop_assert_eq!(live, text);
            }
        }
    }
}
