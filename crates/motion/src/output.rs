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

struct StepFormats<'a> {
    queue_step: &'a MessageFormat,
    set_next_step_dir: &'a MessageFormat,
    reset_step_clock: &'a MessageFormat,
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
    let formats = StepFormats {
        queue_step: require(dict, "queue_step")?,
        set_next_step_dir: require(dict, "set_next_step_dir")?,
        reset_step_clock: require(dict, "reset_step_clock")?,
    };
    let mut out = Vec::new();
    let mut payload: Vec<u8> = Vec::with_capacity(PAYLOAD_MAX);
    let mut msg = Vec::with_capacity(PAYLOAD_MAX);
    let mut seq: u8 = 1;
    let flush = |payload: &mut Vec<u8>, out: &mut Vec<u8>, seq: &mut u8| {
        if payload.is_empty() {
            return;
        }
        // Never larger than PAYLOAD_MAX: each message is checked before it is appended.
        let _ = block::encode(*seq, payload, out);
        *seq = seq.wrapping_add(1);
        payload.clear();
    };
    let encode_err = |index: usize, text: String, source: MessageError| OutputError::Encode {
        index,
        text,
        source,
    };
    let total = config_phase.len() + messages.len();
    for index in 0..total {
        msg.clear();
        if index < config_phase.len() {
            let text = &config_phase[index];
            msg = dict
                .encode_text(text)
                .map_err(|e| encode_err(index, text.clone(), e))?;
        } else {
            let m = &messages[index - config_phase.len()];
            let result = match &m.command {
                McuCommand::Step { oid, message } => {
                    let oid = Value::Int(i64::from(*oid));
                    match message {
                        StepCommand::QueueStep {
                            interval,
                            count,
                            add,
                        } => formats.queue_step.encode(
                            &[
                                oid,
                                Value::Int(i64::from(*interval)),
                                Value::Int(i64::from(*count)),
                                Value::Int(i64::from(*add)),
                            ],
                            &mut msg,
                        ),
                        StepCommand::SetNextStepDir { dir } => formats
                            .set_next_step_dir
                            .encode(&[oid, Value::Int(i64::from(*dir))], &mut msg),
                        StepCommand::ResetStepClock { clock } => formats
                            .reset_step_clock
                            .encode(&[oid, Value::Int(i64::from(*clock))], &mut msg),
                    }
                }
                McuCommand::Text(t) => dict.encode_text(t).map(|b| msg = b),
            };
            result.map_err(|e| encode_err(index, message_text(m), e))?;
        }
        if msg.len() > PAYLOAD_MAX {
            let text = config_phase
                .get(index)
                .cloned()
                .unwrap_or_else(|| message_text(&messages[index - config_phase.len()]));
            return Err(OutputError::TooLong {
                index,
                text,
                bytes: msg.len(),
            });
        }
        if payload.len() + msg.len() > PAYLOAD_MAX {
            flush(&mut payload, &mut out, &mut seq);
        }
        payload.extend_from_slice(&msg);
    }
    flush(&mut payload, &mut out, &mut seq);
    Ok(out)
}
