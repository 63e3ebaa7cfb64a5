//! `gantry parsedump DICT FILE.serial`: decodes a raw MCU stream (such as the `-o` output of
//! Klipper's batch mode) into one message per line, as Klipper's `parsedump.py` prints it.
//!
//! Problems in the stream (bytes skipped, unknown ids, truncated messages) go to standard error
//! with their byte offset; decoding carries on after them, as Klipper's tool does.

use std::io::Write as _;
use std::path::Path;

use anyhow::Context as _;
use gantry_core::proto::{Dictionary, dump};

/// Decodes `serial` with the dictionary at `dict` and prints the messages.
///
/// # Errors
/// When a file cannot be read, the dictionary is invalid, or standard output is closed.
pub fn run(dict: &Path, serial: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(dict)
        .with_context(|| format!("cannot read dictionary {}", dict.display()))?;
    let dictionary = Dictionary::from_json(&text)
        .with_context(|| format!("invalid dictionary {}", dict.display()))?;
    let data =
        std::fs::read(serial).with_context(|| format!("cannot read {}", serial.display()))?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut write_error = None;
    let summary = dump::dump(&dictionary, &data, |event| match event {
        dump::Event::Message(line) => {
            if write_error.is_none()
                && let Err(e) = writeln!(out, "{line}")
            {
                write_error = Some(e);
            }
        }
        dump::Event::Invalid { offset, reason } => {
            tracing::warn!("{}: byte {offset}: {reason}", serial.display());
        }
    });
    if let Some(e) = write_error {
        return Err(e).context("cannot write to standard output");
    }
    out.flush().context("cannot write to standard output")?;
    tracing::debug!(
        blocks = summary.blocks,
        messages = summary.messages,
        "decoded"
    );
    Ok(())
}
