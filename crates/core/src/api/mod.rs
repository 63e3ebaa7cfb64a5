//! The local API: JSON-RPC 2.0 over a WebSocket, served on 127.0.0.1 for the UI and the twin.
//!
//! A client connects to `ws://127.0.0.1:PORT/websocket?token=TOKEN` (Moonraker's path and query
//! name). The token is 32 random bytes drawn at launch ([`Token`]); a handshake without it is
//! refused with HTTP 401 before any frame is exchanged, so another local user's process cannot
//! drive the printer. `docs/api.md` is the contract for every method.
//!
//! - [`rpc`]: the JSON-RPC 2.0 envelope (requests, responses, error codes), pure.
//! - [`methods`]: the method table and each method's handler.
//! - [`manage`]: the `printers.*` section — adding, removing and finding printers.
//! - [`server`]: the listener, the handshake check and one task per connection.

pub mod manage;
pub mod methods;
pub mod rpc;
pub mod server;
mod token;

pub use server::{ApiError, ApiServer, Endpoint};
pub use token::Token;
