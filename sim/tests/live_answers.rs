//! The host side of the captured live session (klippy talking to a real Klipper MCU) replayed
//! against the simulated MCU at its captured times: the sim answers every request with the same
//! kind of response the real MCU gave, and sends the same unsolicited messages (`starting` at
//! boot, `stats` every 5 s).

use std::collections::BTreeMap;
use std::path::PathBuf;

use gantry_proto::identify::IDENTIFY_RESPONSE_ID;
use gantry_proto::link::{HostLink, LinkEvent};
use gantry_proto::{Value, vlq};
use gantry_sim::runtime::SimMcu;

struct Captured {
    time_s: f64,
    to_mcu: bool,
    name: String,
    values: Vec<i64>,
}

/// Reads Klipper's decoding of the capture: block headers with times, then message lines.
fn captured() -> Vec<Captured> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/oracle/live/linux_mcu_session.decoded.txt");
    let text = std::fs::read_to_string(path).expect("fixture");
    let mut out = Vec::new();
    let (mut time_s, mut to_mcu) = (0.0, false);
    for line in text.lines() {
        if let Some(msg) = line.strip_prefix("    ") {
            let mut words = msg.split_whitespace();
            let name = words.next().unwrap_or_default().to_owned();
            let values = words
                .filter_map(|w| w.split_once('=').and_then(|(_, v)| v.parse::<i64>().ok()))
                .collect();
            out.push(Captured {
                time_s,
                to_mcu,
                name,
                values,
            });
        } else if line.contains(" block(") {
            let stamp = line.split_whitespace().next().unwrap_or_default();
            let secs: Vec<f64> = stamp.split(':').filter_map(|p| p.parse().ok()).collect();
            if let [h, m, s] = secs.as_slice() {
                time_s = h * 3600.0 + m * 60.0 + s;
            }
            to_mcu = line.contains("host->mcu");
        }
    }
    let t0 = out.first().map_or(0.0, |c| c.time_s);
    for c in &mut out {
        c.time_s -= t0;
    }
    out
}

fn count<'a>(names: impl Iterator<Item = &'a str>) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for n in names {
        *m.entry(n.to_owned()).or_insert(0) += 1;
    }
    m
}

#[test]
fn the_sim_answers_the_live_hosts_requests_like_the_real_mcu() {
    let capture = captured();
    let real = count(
        capture
            .iter()
            .filter(|c| !c.to_mcu)
            .map(|c| c.name.as_str()),
    );
    let mut requests: Vec<&Captured> = capture.iter().filter(|c| c.to_mcu).collect();
    requests.reverse();

    let mut sim = SimMcu::new();
    let dict = sim.dictionary().clone();
    let mut host = HostLink::new();
    let mut answers: Vec<String> = Vec::new();
    let (mut to_mcu, mut to_host) = (Vec::new(), Vec::new());
    let end_s = capture.last().map_or(0.0, |c| c.time_s) + 0.01;
    let mut tick = 0_u32;
    loop {
        let now_s = f64::from(tick) * 0.0005;
        tick += 1;
        if now_s > end_s {
            break;
        }
        while requests.last().is_some_and(|r| r.time_s <= now_s) {
            let Some(r) = requests.pop() else { break };
            // The live MCU's ids differ; the sim's dictionary encodes the same command by name.
            let values: Vec<Value> = r.values.iter().map(|v| Value::Int(*v)).collect();
            let message = dict
                .encode_command(&r.name, &values)
                .unwrap_or_else(|e| panic!("{}: {e}", r.name));
            host.send(message).expect("fits");
        }
        host.handle_timeout(now_s);
        to_mcu.clear();
        host.poll_transmit(now_s, &mut to_mcu);
        sim.handle_input(&to_mcu);
        to_host.clear();
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        sim.poll((now_s * 16e6) as u64, &mut to_host);
        host.handle_input(&to_host, now_s);
        while let Some(event) = host.poll_event() {
            if let LinkEvent::Received { payload, .. } = event {
                let (id, _) = vlq::decode(&payload).expect("an id");
                let id = id.cast_signed();
                let name = if id == IDENTIFY_RESPONSE_ID {
                    "identify_response".to_owned()
                } else {
                    dict.message(id)
                        .map(|m| m.name.clone())
                        .expect("a known response")
                };
                answers.push(name);
            }
        }
    }
    assert!(requests.is_empty(), "every captured request was sent");
    let sim_answers = count(answers.iter().map(String::as_str));
    // Same kinds of answers, the same number of each for the fixed-size exchanges.
    assert_eq!(
        sim_answers.keys().collect::<Vec<_>>(),
        real.keys().collect::<Vec<_>>()
    );
    for kind in ["clock", "config", "uptime", "starting"] {
        assert_eq!(sim_answers.get(kind), real.get(kind), "{kind}");
    }
    // identify_response: one per identify sent (the sim's dictionary is shorter, so the host's
    // later offsets get empty data); stats: one per 5 s, as on the real MCU.
    assert_eq!(sim_answers["identify_response"], 104);
    assert!((1..=3).contains(&sim_answers["stats"]), "{:?}", sim_answers);
    assert!(sim.shutdown_reason().is_none());
}
