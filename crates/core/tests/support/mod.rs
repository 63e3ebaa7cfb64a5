//! Test support shared by the remote-printer tests: the peer servers ([`peers`]), a Klippy of
//! our own for Moonraker's `printer.*` methods ([`klippy`]), and network namespaces for mDNS
//! ([`netns`]).
#![allow(dead_code, unreachable_pub)]

pub mod http_server;
pub mod klippy;
pub mod netns;
pub mod peers;
