//! The method table: each JSON-RPC method's name and handler.
//!
//! Names follow Moonraker's where one fits (`server.info`), so a client written for Moonraker
//! finds familiar ground. Handlers that block (port enumeration reads sysfs and udev) run on the
//! blocking pool, never on the connection's task.

use serde_json::{Value, json};

use super::rpc::{INTERNAL_ERROR, INVALID_PARAMS, METHOD_NOT_FOUND, RpcError};
use crate::printers;

/// The version of this API: bumped in its minor part when methods are added.
pub const API_VERSION: [u32; 3] = [0, 1, 0];

/// Every method the server answers, sorted.
pub const METHODS: &[&str] = &["printers.list", "server.info"];

/// Runs one method and returns its result or error.
pub async fn call(method: &str, params: &Value) -> Result<Value, RpcError> {
    match method {
        "server.info" => {
            no_params(method, params)?;
            Ok(server_info())
        }
        "printers.list" => {
            no_params(method, params)?;
            let list = tokio::task::spawn_blocking(printers::list)
                .await
                .map_err(|e| RpcError::new(INTERNAL_ERROR, format!("printers.list failed: {e}")))?;
            Ok(json!({ "printers": list }))
        }
        other => Err(RpcError::new(
            METHOD_NOT_FOUND,
            format!("Method not found: {other}"),
        )),
    }
}

/// Methods without parameters accept absent, empty-object or empty-array params.
fn no_params(method: &str, params: &Value) -> Result<(), RpcError> {
    let empty = match params {
        Value::Null => true,
        Value::Object(o) => o.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    };
    if empty {
        Ok(())
    } else {
        Err(RpcError::new(
            INVALID_PARAMS,
            format!("{method} takes no parameters"),
        ))
    }
}

fn server_info() -> Value {
    let [major, minor, patch] = API_VERSION;
    json!({
        "gantry_version": crate::VERSION,
        "api_version": API_VERSION,
        "api_version_string": format!("{major}.{minor}.{patch}"),
        // Moonraker's fields: no Klipper host runs inside Gantry yet (the live host issue).
        "klippy_connected": false,
        "klippy_state": "disconnected",
        "hostname": hostname(),
        "platform": std::env::consts::OS,
        "methods": METHODS,
    })
}

fn hostname() -> String {
    // /proc is Linux's; elsewhere the environment usually names the host.
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn server_info_names_version_and_methods() {
        let info = call("server.info", &Value::Null)
            .await
            .expect("server.info");
        assert_eq!(info["gantry_version"], crate::VERSION);
        assert_eq!(info["api_version_string"], "0.1.0");
        assert_eq!(info["methods"], json!(["printers.list", "server.info"]));
        assert_eq!(info["klippy_state"], "disconnected");
    }

    #[tokio::test]
    async fn printers_list_always_has_the_simulated_printer() {
        let v = call("printers.list", &json!({}))
            .await
            .expect("printers.list");
        let printers = v["printers"].as_array().expect("an array");
        assert_eq!(printers[0]["id"], "sim");
        assert_eq!(printers[0]["kind"], "simulated");
    }

    #[tokio::test]
    async fn unknown_methods_and_stray_params_are_errors() {
        let e = call("printer.emergency_stop", &Value::Null)
            .await
            .expect_err("unknown");
        assert_eq!(e.code, METHOD_NOT_FOUND);
        assert_eq!(e.message, "Method not found: printer.emergency_stop");
        let e = call("server.info", &json!({"x": 1}))
            .await
            .expect_err("params");
        assert_eq!(e.code, INVALID_PARAMS);
    }

    #[test]
    fn method_table_is_sorted_and_unique() {
        let mut sorted = METHODS.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted, METHODS);
    }
}
