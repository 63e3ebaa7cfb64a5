//! The simulated MCU never panics, whatever a host sends: arbitrary bytes on the wire, and
//! well-framed blocks of the sim's own commands with arbitrary parameter values (oids that do not
//! exist, clocks in the past, counts of zero, pins outside the enumeration). Bad input ends in
//! one of Klipper's shutdowns, and the MCU still answers `get_config` afterwards.

use gantry_proto::{Dictionary, MessageFormat, ParamType, Value, block, vlq};
use gantry_sim::runtime::SimMcu;
use proptest::prelude::*;

/// The sim's commands (every one a host could send).
fn commands(dict: &Dictionary) -> Vec<MessageFormat> {
    dict.messages()
        .filter(|m| dict.command(&m.name).is_some_and(|c| c.id == m.id))
        .cloned()
        .collect()
}

fn encode(msg: &MessageFormat, raws: &[u32], bytes: &[u8]) -> Vec<u8> {
    let values: Vec<Value> = msg
        .params
        .iter()
        .zip(raws.iter().cycle())
        .map(|(p, &raw)| match p.kind {
            ParamType::U32 => Value::Int(i64::from(raw)),
            ParamType::I32 => Value::Int(i64::from(raw.cast_signed())),
            ParamType::U16 => Value::Int(i64::from(raw & 0xffff)),
            ParamType::I16 => Value::Int(i64::from((raw & 0xffff) as u16 as i16)),
            // Small values, so oids and pins often name something real.
            ParamType::Byte => Value::Int(i64::from(raw % 12)),
            _ => Value::Bytes(bytes.to_vec()),
        })
        .collect();
    let mut out = Vec::new();
    msg.encode(&values, &mut out)
        .expect("in-range values encode");
    out
}

fn answers_get_config(sim: &mut SimMcu, seq: u8, clock: u64) -> bool {
    let dict = sim.dictionary().clone();
    let mut payload = Vec::new();
    let get_config = dict.command("get_config").expect("declared");
    get_config.encode(&[], &mut payload).expect("no parameters");
    let mut wire = Vec::new();
    block::encode(seq, &payload, &mut wire).expect("fits");
    sim.handle_input(&wire);
    let mut out = Vec::new();
    sim.poll(clock, &mut out);
    let config_id = dict.response("config").expect("declared").id;
    let mut rest = out.as_slice();
    while let block::Check::Block { len, .. } = block::check(rest) {
        let payload = block::payload(&rest[..len]);
        if vlq::decode(payload).is_ok_and(|(id, _)| id.cast_signed() == config_id) {
            return true;
        }
        rest = &rest[len..];
    }
    false
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3_000))]

    #[test]
    fn arbitrary_commands_never_panic(
        picks in proptest::collection::vec((any::<prop::sample::Index>(), proptest::collection::vec(any::<u32>(), 9)), 1..24),
        bytes in proptest::collection::vec(any::<u8>(), 0..8),
        step_ms in 0_u64..50,
    ) {
        let mut sim = SimMcu::new();
        let cmds = commands(sim.dictionary());
        let mut out = Vec::new();
        let mut clock = 16_000_000_u64;
        sim.poll(clock, &mut out);
        let mut seq = 0_u8;
        for (index, raws) in &picks {
            let msg = index.get(&cmds);
            if msg.name == "reset" {
                continue; // a reset restarts the link; covered by the unit tests
            }
            let payload = encode(msg, raws, &bytes);
            let mut wire = Vec::new();
            if block::encode(seq, &payload, &mut wire).is_ok() {
                seq = (seq + 1) & 0x0f;
                sim.handle_input(&wire);
            }
            clock += step_ms * 16_000;
            sim.poll(clock, &mut out);
        }
        clock += 16_000_000;
        sim.poll(clock, &mut out);
        prop_assert!(answers_get_config(&mut sim, seq, clock + 16_000));
    }

    #[test]
    fn arbitrary_bytes_never_panic(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..96), 0..8)) {
        let mut sim = SimMcu::new();
        let mut out = Vec::new();
        let mut clock = 0_u64;
        for chunk in &chunks {
            sim.handle_input(chunk);
            clock += 160_000;
            sim.poll(clock, &mut out);
        }
    }
}
