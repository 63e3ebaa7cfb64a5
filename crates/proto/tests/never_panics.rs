//! Property tests over whole messages with a real board's dictionary: every message round-trips
//! through encode/decode with any in-range values, and arbitrary bytes — to the message decoder,
//! to the stream decoder behind `gantry parsedump`, to the host link, and as identify data or
//! dictionary JSON — give errors, never a panic.

use std::path::PathBuf;
use std::sync::LazyLock;

use gantry_proto::link::HostLink;
use gantry_proto::{Dictionary, MessageFormat, ParamType, Value, dump};
use proptest::prelude::*;

static DICT: LazyLock<Dictionary> = LazyLock::new(|| {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/oracle/dict/stm32f407.dict");
    let text = std::fs::read_to_string(&path).expect("the STM32F407 dictionary fixture");
    Dictionary::from_json(&text).expect("a real dictionary parses")
});

/// The messages with a name (commands and responses; output formats too), in id order.
static MESSAGES: LazyLock<Vec<MessageFormat>> =
    LazyLock::new(|| DICT.messages().cloned().collect());

/// A value of `kind` from the raw material the strategy drew.
fn value_for(kind: ParamType, raw: u32, bytes: &[u8]) -> Value {
    match kind {
        ParamType::U32 => Value::Int(i64::from(raw)),
        ParamType::I32 => Value::Int(i64::from(raw.cast_signed())),
        ParamType::U16 => Value::Int(i64::from(raw & 0xffff)),
        ParamType::I16 => Value::Int(i64::from((raw & 0xffff) as u16 as i16)),
        ParamType::Byte => Value::Int(i64::from(raw & 0xff)),
        ParamType::String | ParamType::ProgmemBuffer | ParamType::Buffer => {
            Value::Bytes(bytes.to_vec())
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100_000))]

    #[test]
    fn every_message_round_trips(
        index in any::<prop::sample::Index>(),
        raws in proptest::collection::vec(any::<u32>(), 12),
        bytes in proptest::collection::vec(any::<u8>(), 0..48),
    ) {
        let msg = index.get(&MESSAGES);
        let values: Vec<Value> = msg
            .params
            .iter()
            .zip(raws.iter().cycle())
            .map(|(p, &raw)| value_for(p.kind, raw, &bytes))
            .collect();
        let mut wire = Vec::new();
        msg.encode(&values, &mut wire).expect("in-range values encode");
        let (id, id_len) = gantry_proto::vlq::decode(&wire).expect("an id");
        prop_assert_eq!(id.cast_signed(), msg.id);
        let (decoded, used) = msg.decode(&wire[id_len..]).expect("what was encoded decodes");
        prop_assert_eq!(used, wire.len() - id_len);
        prop_assert_eq!(decoded, values);
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(
        index in any::<prop::sample::Index>(),
        bytes in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let msg = index.get(&MESSAGES);
        if let Ok((values, used)) = msg.decode(&bytes) {
            prop_assert!(used <= bytes.len());
            prop_assert_eq!(values.len(), msg.params.len());
            let _ = msg.format_values(&values);
        }
    }

    #[test]
    fn the_stream_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut lines = 0_usize;
        dump::dump(&DICT, &bytes, |_| lines += 1);
        prop_assert!(lines <= bytes.len() + 1);
    }

    #[test]
    fn the_host_link_never_panics(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..80), 0..6),
    ) {
        let mut link = HostLink::new();
        link.send(vec![1, 2, 3]).expect("a small message fits");
        let mut out = Vec::new();
        let mut now = 0.0;
        for chunk in &chunks {
            link.poll_transmit(now, &mut out);
            link.handle_input(chunk, now);
            while link.poll_event().is_some() {}
            now += 0.01;
            if link.poll_timeout().is_some_and(|t| t <= now) {
                link.handle_timeout(now);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn bad_dictionaries_are_errors(
        bytes in proptest::collection::vec(any::<u8>(), 0..200),
        text in ".{0,200}",
    ) {
        let _ = Dictionary::from_identify_data(&bytes);
        let _ = Dictionary::from_json(&text);
        let _ = Dictionary::from_json(&format!("{{\"commands\": {{\"{text}\": 5}}}}"));
    }
}
