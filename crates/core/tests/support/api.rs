//! Reading the API as the UI does: a fleet printer's entry from `printers.fleet`.

use gantry_core::api::methods::{self, Connection};
use serde_json::Value;

/// The `printers.fleet` entry of printer `id` (null when it is not in the fleet).
pub async fn fleet_entry(conn: &mut Connection, id: &str) -> Value {
    let fleet = methods::call(conn, "printers.fleet", &Value::Null)
        .await
        .expect("printers.fleet");
    fleet["printers"]
        .as_array()
        .and_then(|l| l.iter().find(|p| p["id"] == id))
        .cloned()
        .unwrap_or(Value::Null)
}
