//! The captured live session between klippy and a real Klipper MCU (a Linux-process MCU), read as
//! Gantry would meet it: the dictionary is rebuilt from the `identify_response` chunks in the
//! capture itself, then both directions decode to exactly the messages Klipper's own decoding
//! printed.

use std::collections::BTreeMap;
use std::path::PathBuf;

use gantry_proto::dump::{self, Event};
use gantry_proto::{Dictionary, MessageFormat, Value, block};

fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/oracle/live")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The socat hex dump as two byte streams: (host→MCU, MCU→host).
fn streams() -> (Vec<u8>, Vec<u8>) {
    let (mut to_mcu, mut to_host) = (Vec::new(), Vec::new());
    let mut current: Option<&mut Vec<u8>> = None;
    for line in fixture("linux_mcu_session.socat-hex.txt").lines() {
        if line.starts_with("> ") {
            current = Some(&mut to_mcu);
        } else if line.starts_with("< ") {
            current = Some(&mut to_host);
        } else if let Some(buf) = current.as_deref_mut() {
            for hex in line.split_whitespace() {
                buf.push(u8::from_str_radix(hex, 16).expect("hex byte"));
            }
        }
    }
    (to_mcu, to_host)
}

/// Klipper's decoding, per direction, message lines only.
fn klipper_lines() -> (Vec<String>, Vec<String>) {
    let (mut to_mcu, mut to_host) = (Vec::new(), Vec::new());
    let mut host_side = false;
    for line in fixture("linux_mcu_session.decoded.txt").lines() {
        if let Some(msg) = line.strip_prefix("    ") {
            if host_side {
                to_mcu.push(msg.to_owned())
            } else {
                to_host.push(msg.to_owned())
            }
        } else {
            host_side = line.contains(" host->mcu ");
        }
    }
    (to_mcu, to_host)
}

/// Rebuilds the dictionary from the identify_response messages (id 0), as a host does.
fn dictionary_from_identify(to_host: &[u8]) -> Dictionary {
    let identify_response =
        MessageFormat::parse_message(0, "identify_response offset=%u data=%.*s").expect("valid");
    let mut chunks = BTreeMap::new();
    let mut pos = 0;
    while pos < to_host.len() {
        match block::check(&to_host[pos..]) {
            block::Check::Block { len, .. } => {
                let payload = block::payload(&to_host[pos..pos + len]);
                if payload.first() == Some(&0) {
                    let (values, _) = identify_response.decode(&payload[1..]).expect("decodes");
                    if let [Value::Int(offset), Value::Bytes(data)] = values.as_slice() {
                        chunks.insert(*offset, data.clone());
                    }
                }
                pos += len;
            }
            _ => pos += 1,
        }
    }
    let mut data = Vec::new();
    for (offset, chunk) in chunks {
        assert_eq!(
            usize::try_from(offset).expect("offset"),
            data.len(),
            "chunks are contiguous"
        );
        data.extend_from_slice(&chunk);
    }
    Dictionary::from_identify_data(&data).expect("the captured identify data is a dictionary")
}

fn decode(dict: &Dictionary, data: &[u8]) -> Vec<String> {
    let mut lines = Vec::new();
    dump::dump(dict, data, |e| {
        if let Event::Message(m) = e {
            lines.push(m.to_owned());
        }
    });
    lines
}

#[test]
fn the_live_capture_decodes_as_klipper_decoded_it() {
    let (to_mcu, to_host) = streams();
    let dict = dictionary_from_identify(&to_host);
    assert_eq!(dict.mcu(), Some("linux"));
    assert!(dict.clock_freq().is_ok());
    let (klipper_to_mcu, klipper_to_host) = klipper_lines();
    assert_eq!(decode(&dict, &to_host), klipper_to_host, "MCU → host");
    assert_eq!(decode(&dict, &to_mcu), klipper_to_mcu, "host → MCU");
}
