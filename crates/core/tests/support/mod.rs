//! Test support shared by the remote-printer tests: the peer servers ([`peers`]) and a Klippy of
//! our own for Moonraker's `printer.*` methods ([`klippy`]).
#![allow(dead_code, unreachable_pub)]

pub mod http_server;
pub mod klippy;
pub mod peers;
