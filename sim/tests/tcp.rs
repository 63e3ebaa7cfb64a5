//! The TCP front over a real socket, in real time: a host connects, synchronises the link,
//! downloads the dictionary with identify and asks `get_config`; a second host is turned away
//! while the first is connected; the MCU stops when told to.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use gantry_proto::identify::Identify;
use gantry_proto::link::{HostLink, LinkEvent};
use gantry_proto::{Dictionary, Value, vlq};
use gantry_sim::runtime::SimMcu;

#[test]
fn a_host_identifies_and_configures_over_tcp() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    let addr = listener.local_addr().expect("bound");
    let stop = Arc::new(AtomicBool::new(false));
    let server = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut sim = SimMcu::new();
            let mut disconnects = 0;
            gantry_sim::tcp::run(&listener, &mut sim, &stop, |_| disconnects += 1)
                .map(|()| (sim, disconnects))
        })
    };

    let mut socket = TcpStream::connect(addr).expect("connects");
    socket
        .set_read_timeout(Some(Duration::from_millis(1)))
        .expect("timeout");
    let start = Instant::now();
    let mut host = HostLink::new();
    let mut identify = Identify::new();
    let mut dict: Option<Dictionary> = None;
    let mut config: Option<Vec<Value>> = None;
    let mut asked_at = f64::NEG_INFINITY;
    let (mut buf, mut out) = ([0_u8; 1024], Vec::new());
    while config.is_none() {
        let now_s = start.elapsed().as_secs_f64();
        assert!(now_s < 20.0, "no config within 20 s");
        match socket.read(&mut buf) {
            Ok(0) => panic!("the sim closed the connection"),
            Ok(n) => host.handle_input(&buf[..n], now_s),
            Err(_) => {}
        }
        while let Some(event) = host.poll_event() {
            let LinkEvent::Received { payload, .. } = event else {
                continue;
            };
            match &dict {
                None => {
                    dict = identify
                        .handle_message(&payload)
                        .expect("valid identify data");
                }
                Some(d) => {
                    let (id, n) = vlq::decode(&payload).expect("an id");
                    let format = d.message(id.cast_signed()).expect("known");
                    if format.name == "config" {
                        config = Some(format.decode(&payload[n..]).expect("decodes").0);
                    }
                }
            }
        }
        if host.is_synchronised() {
            match &dict {
                None => {
                    if let Some(request) = identify.poll_request(now_s) {
                        host.send(request).expect("fits");
                    }
                }
                Some(d) if now_s - asked_at > 0.1 => {
                    let get_config = d.encode_command("get_config", &[]).expect("declared");
                    host.send(get_config).expect("fits");
                    asked_at = now_s;
                }
                Some(_) => {}
            }
        }
        host.handle_timeout(now_s);
        out.clear();
        if host.poll_transmit(now_s, &mut out) {
            socket.write_all(&out).expect("writes");
        }
    }
    let dict = dict.expect("identified");
    assert_eq!(dict.mcu(), Some("gantry-sim"));
    // is_config=0 crc=0 is_shutdown=0 move_count=0: a fresh, unconfigured MCU.
    assert_eq!(
        config,
        Some(vec![Value::Int(0); 4]),
        "get_config of a fresh MCU"
    );

    // One host at a time: a second connection is closed at once.
    let mut second = TcpStream::connect(addr).expect("the port accepts");
    second
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut byte = [0_u8; 1];
    assert_eq!(second.read(&mut byte).ok(), Some(0), "turned away");

    // The first host leaves; the sim hears of it and serves the next one.
    drop(socket);
    std::thread::sleep(Duration::from_millis(50));
    let mut third = TcpStream::connect(addr).expect("the port accepts");
    third
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    // The sim keeps the connection: the read times out instead of seeing the end.
    assert!(third.read(&mut byte).is_err(), "served, not turned away");

    stop.store(true, Ordering::Relaxed);
    let (sim, disconnects) = server.join().expect("no panic").expect("served");
    assert_eq!(disconnects, 1);
    assert_eq!(sim.shutdown_reason(), None);
}
