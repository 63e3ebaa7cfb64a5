//! Test support shared by the remote-printer tests: the peer servers ([`peers`]), a Klippy of
//! our own for Moonraker's `printer.*` methods ([`klippy`]), network namespaces for mDNS
//! ([`netns`]), and the API as the UI reads it ([`api`]).
#![allow(dead_code, unreachable_pub)]

pub mod api;
pub mod http_server;
pub mod klippy;
pub mod netns;
pub mod peers;
