//! The identify flow: how a host downloads the MCU's data dictionary.
//!
//! The host asks `identify offset=N count=40` and the MCU answers `identify_response offset=N
//! data=…` with up to 40 bytes of the zlib-compressed dictionary; an empty `data` marks the end.
//! Ids 1 (`identify`) and 0 (`identify_response`) are the only fixed ids in the protocol. The link
//! delivers requests reliably, but the MCU never retransmits a response, so a request whose answer
//! does not come within a timeout (50 ms, doubling up to 1 s) is asked again. Answers for another
//! offset (late duplicates) are ignored.

use crate::dictionary::{Dictionary, DictionaryError};
use crate::msgformat::{FormatKind, MessageFormat, Param, ParamType, Value};
use crate::vlq;

/// The fixed id of `identify`.
pub const IDENTIFY_ID: i32 = 1;
/// The fixed id of `identify_response`.
pub const IDENTIFY_RESPONSE_ID: i32 = 0;
/// Bytes asked for per request.
pub const CHUNK: u8 = 40;
/// The first re-request timeout, seconds.
pub const FIRST_TIMEOUT_S: f64 = 0.05;
/// The longest re-request timeout, seconds.
pub const MAX_TIMEOUT_S: f64 = 1.0;
/// The most compressed dictionary bytes accepted.
pub const MAX_DATA: usize = 1 << 20;

/// What went wrong in the download.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentifyError {
    /// The compressed dictionary is unusable.
    #[error(transparent)]
    Dictionary(#[from] DictionaryError),
    /// The MCU sent more than [`MAX_DATA`] bytes.
    #[error("the identify data exceeds {MAX_DATA} bytes")]
    TooLarge,
}

/// The download's state.
#[derive(Debug, Clone)]
pub struct Identify {
    data: Vec<u8>,
    asked_at_s: Option<f64>,
    timeout_s: f64,
    requests: u32,
    response: MessageFormat,
    request: MessageFormat,
}

impl Default for Identify {
    fn default() -> Self {
        Self::new()
    }
}

impl Identify {
    /// A download from offset 0.
    pub fn new() -> Self {
        Self {
            data: Vec::new(),
            asked_at_s: None,
            timeout_s: FIRST_TIMEOUT_S,
            requests: 0,
            response: fixed(
                IDENTIFY_RESPONSE_ID,
                "identify_response offset=%u data=%.*s",
            ),
            request: fixed(IDENTIFY_ID, "identify offset=%u count=%c"),
        }
    }

    /// The next `identify` message to send (id and parameters), when one is due at `now_s`.
    pub fn poll_request(&mut self, now_s: f64) -> Option<Vec<u8>> {
        if let Some(asked) = self.asked_at_s {
            if now_s < asked + self.timeout_s {
                return None;
            }
            self.timeout_s = (self.timeout_s * 2.0).min(MAX_TIMEOUT_S);
        }
        self.asked_at_s = Some(now_s);
        self.requests += 1;
        let offset = i64::try_from(self.data.len()).unwrap_or(i64::MAX);
        let mut out = Vec::new();
        // The two values match the fixed format's two integer parameters.
        let _ = self.request.encode(
            &[Value::Int(offset), Value::Int(i64::from(CHUNK))],
            &mut out,
        );
        Some(out)
    }

    /// When [`Identify::poll_request`] may next produce a request.
    pub fn poll_timeout(&self) -> Option<f64> {
        self.asked_at_s.map(|t| t + self.timeout_s)
    }

    /// How many requests were made so far.
    pub fn requests(&self) -> u32 {
        self.requests
    }

    /// Feeds one message from the MCU (id and parameters). Returns the dictionary once the last
    /// chunk arrived; other messages are ignored.
    ///
    /// # Errors
    /// When the data grows too large or the finished dictionary is invalid.
    pub fn handle_message(&mut self, message: &[u8]) -> Result<Option<Dictionary>, IdentifyError> {
        let Ok((id, used)) = vlq::decode(message) else {
            return Ok(None);
        };
        if id.cast_signed() != IDENTIFY_RESPONSE_ID {
            return Ok(None);
        }
        let Ok((values, _)) = self.response.decode(&message[used..]) else {
            return Ok(None);
        };
        let [Value::Int(offset), Value::Bytes(chunk)] = values.as_slice() else {
            return Ok(None);
        };
        if usize::try_from(*offset).ok() != Some(self.data.len()) {
            return Ok(None); // A late answer to an earlier request.
        }
        self.asked_at_s = None;
        self.timeout_s = FIRST_TIMEOUT_S;
        if chunk.is_empty() {
            return Ok(Some(Dictionary::from_identify_data(&self.data)?));
        }
        if self.data.len() + chunk.len() > MAX_DATA {
            return Err(IdentifyError::TooLarge);
        }
        self.data.extend_from_slice(chunk);
        Ok(None)
    }
}

/// One of the protocol's two fixed formats, built directly: `params` in wire order.
fn fixed(id: i32, format: &str) -> MessageFormat {
    let mut words = format.split_whitespace();
    let name = words.next().unwrap_or_default().to_owned();
    let params = words
        .filter_map(|w| w.split_once('='))
        .filter_map(|(pname, spec)| {
            ParamType::from_spec(spec).map(|kind| Param {
                name: pname.to_owned(),
                kind,
                enumeration: None,
            })
        })
        .collect();
    MessageFormat {
        id,
        format: format.to_owned(),
        name,
        params,
        kind: FormatKind::Message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(offset: i64, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        fixed(
            IDENTIFY_RESPONSE_ID,
            "identify_response offset=%u data=%.*s",
        )
        .encode(&[Value::Int(offset), Value::Bytes(data.to_vec())], &mut out)
        .expect("encodes");
        out
    }

    #[test]
    fn requests_offsets_and_assembles() {
        let json =
            br#"{"config":{"CLOCK_FREQ":1000},"commands":{"identify offset=%u count=%c":1}}"#;
        let zipped = miniz_oxide::deflate::compress_to_vec_zlib(json, 9);
        let mut id = Identify::new();
        assert_eq!(id.poll_request(0.0), Some(vec![1, 0, 40]));
        assert_eq!(id.poll_request(0.01), None, "waiting for the answer");
        let mut offset = 0;
        let mut done = None;
        for chunk in zipped.chunks(40).chain(std::iter::once(&[][..])) {
            assert!(done.is_none());
            done = id.handle_message(&response(offset, chunk)).expect("valid");
            offset += i64::try_from(chunk.len()).expect("small");
        }
        let dict = done.expect("finished");
        assert_eq!(dict.clock_freq(), Ok(1000.0));
    }

    #[test]
    fn the_fixed_formats_are_what_the_parser_makes() {
        for (id, f) in [
            (0, "identify_response offset=%u data=%.*s"),
            (1, "identify offset=%u count=%c"),
        ] {
            assert_eq!(
                fixed(id, f),
                MessageFormat::parse_message(id, f).expect("valid")
            );
        }
    }

    #[test]
    fn lost_answers_are_asked_again_with_backoff() {
        let mut id = Identify::new();
        assert!(id.poll_request(0.0).is_some());
        assert!(id.poll_request(0.049).is_none());
        assert!(id.poll_request(0.05).is_some(), "asked again after 50 ms");
        let next = id.poll_timeout().expect("a timeout");
        assert!(
            (next - 0.15).abs() < 1e-9,
            "then after 100 ms, not at {next}"
        );
        assert_eq!(id.requests(), 2);
    }

    #[test]
    fn late_duplicates_and_other_messages_are_ignored() {
        let mut id = Identify::new();
        id.poll_request(0.0);
        assert_eq!(id.handle_message(&response(40, b"x")), Ok(None));
        assert_eq!(id.handle_message(&[0x7b, 0x01]), Ok(None));
        assert_eq!(id.handle_message(&[]), Ok(None));
        assert!(matches!(
            id.handle_message(&response(0, &[])),
            Err(IdentifyError::Dictionary(_))
        ));
    }
}
