//! Printers kept across launches (`ManagerOptions::keep_printers`, as the desktop app runs):
//! a printer added through the API is saved with its name and credentials, back in the list at
//! the next start — connecting by itself when its server answers again — and forgotten when
//! removed.
//!
//! The first test uses a real Moonraker (PyPI, pinned in xtask/peers/) and is ignored by
//! default: `cargo xtask test` installs Moonraker and runs it with `--include-ignored`. The
//! second needs nothing: its saved printer's address has nothing listening.

mod support;

use std::sync::Arc;
use std::time::Duration;

use gantry_core::api::manage::ManagerOptions;
use gantry_core::api::methods::{self, Connection, Context};
use gantry_core::remote::RemoteOptions;
use gantry_core::saved::Retry;
use gantry_core::store::{SavedPrinter, Store};
use serde_json::{Value, json};
use support::api::fleet_entry;
use support::peers::{self, TempDir};
use tokio::sync::mpsc;

/// A context that keeps its printers in `data`, retrying quickly.
fn context(data: &TempDir) -> (Connection, Arc<Context>) {
    let ctx = Arc::new(Context::new(ManagerOptions {
        mdns: None,
        data_dir: Some(data.path().to_path_buf()),
        keep_printers: true,
        retry: Retry {
            first: Duration::from_millis(200),
            longest: Duration::from_secs(1),
        },
        remote: RemoteOptions {
            min_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(1),
            ..RemoteOptions::default()
        },
        ..ManagerOptions::default()
    }));
    let (tx, rx) = mpsc::unbounded_channel();
    // Notifications are not looked at here.
    drop(rx);
    (Connection::new(Arc::clone(&ctx), tx), ctx)
}

/// Polls the fleet entry of `id` until `check` holds (20 s at most).
async fn wait_entry(conn: &mut Connection, id: &str, what: &str, check: impl Fn(&Value) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let entry = fleet_entry(conn, id).await;
        if check(&entry) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} within 20 s: {entry}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Moonraker from PyPI; cargo xtask test installs it"]
async fn a_saved_moonraker_is_back_after_a_restart_and_connects_when_it_answers() {
    let mut mr = peers::Moonraker::start().await;
    let data = TempDir::new("saved-moonraker");

    // Added with its key and a name: saved.
    let (mut conn, ctx) = context(&data);
    let added = methods::call(
        &mut conn,
        "printers.add",
        &json!({"url": mr.url, "api_key": mr.api_key, "name": "Voron"}),
    )
    .await
    .expect("added");
    assert_eq!(added["saved"], true, "{added}");
    let id = added["printer"]["id"].as_str().expect("an id").to_owned();
    ctx.shutdown().await;
    drop(conn);

    // Moonraker is down at the next start: the printer is listed, says why it is not
    // connected, and calls to it say so too.
    mr.stop();
    let (mut conn, ctx) = context(&data);
    assert_eq!(ctx.manager.restore(&ctx.fleet).await, [id.as_str()]);
    let entry = fleet_entry(&mut conn, &id).await;
    assert_eq!(entry["name"], "Voron", "{entry}");
    assert_eq!(entry["kind"], "moonraker", "{entry}");
    wait_entry(&mut conn, &id, "a failed try shown", |e| {
        e["link"]["state"] == "connecting"
            && e["link"]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("Cannot reach"))
            && e["problem"]["cause"]
                .as_str()
                .is_some_and(|c| c.starts_with("Not connected since Gantry started"))
            && e["problem"]["advice"]
                .as_str()
                .is_some_and(|a| a.contains("Check that Moonraker is running at"))
    })
    .await;
    let e = methods::call(
        &mut conn,
        "printer.gcode.script",
        &json!({"printer": id, "script": "M115"}),
    )
    .await
    .expect_err("not connected");
    assert!(
        e.message.contains("not connected to it yet"),
        "{}",
        e.message
    );

    // Moonraker answers again: the printer connects by itself, with the saved key.
    mr.start_again().await;
    wait_entry(&mut conn, &id, "connected", |e| {
        e["link"]["state"] == "connected"
    })
    .await;
    let q = methods::call(
        &mut conn,
        "printer.objects.query",
        &json!({"printer": id, "objects": {"webhooks": null}}),
    )
    .await
    .expect("a query through the restored printer");
    assert!(q["status"]["webhooks"]["state"].is_string(), "{q}");

    // A saved key the server refuses is not retried: the link is closed, and the printer says
    // to add it again with a key that works.
    {
        let mut store = Store::open(data.path().join("gantry.db")).expect("store");
        store
            .save_printer(&SavedPrinter {
                fleet_id: "moonraker:old-key".into(),
                name: "Voron, old key".into(),
                kind: "moonraker".into(),
                address: mr.url.clone(),
                credentials: json!({"kind": "api_key", "key": "0123456789abcdef0123456789abcdef"}),
                added_at: 3.0,
            })
            .expect("save");
    }
    assert_eq!(ctx.manager.restore(&ctx.fleet).await, ["moonraker:old-key"]);
    wait_entry(&mut conn, "moonraker:old-key", "closed for its key", |e| {
        e["link"]["state"] == "closed"
            && e["problem"]["advice"]
                .as_str()
                .is_some_and(|a| a.contains("add it again with credentials Moonraker accepts"))
    })
    .await;
    methods::call(
        &mut conn,
        "printers.remove",
        &json!({"id": "moonraker:old-key"}),
    )
    .await
    .expect("removed");

    // Removed: forgotten, not back at the next start.
    methods::call(&mut conn, "printers.remove", &json!({"id": id}))
        .await
        .expect("removed");
    ctx.shutdown().await;
    let (_conn, ctx) = context(&data);
    assert!(ctx.manager.restore(&ctx.fleet).await.is_empty());
    assert!(ctx.fleet.list().is_empty());
    ctx.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saved_printer_that_does_not_answer_is_listed_retried_and_removable() {
    let data = TempDir::new("saved-silent");
    let port = peers::free_port();
    let address = format!("http://127.0.0.1:{port}/");
    let id = format!("octoprint:127.0.0.1:{port}");
    {
        let mut store = Store::open(data.path().join("gantry.db")).expect("store");
        store
            .save_printer(&SavedPrinter {
                fleet_id: id.clone(),
                name: "Prusa in the shed".into(),
                kind: "octoprint".into(),
                address,
                credentials: json!({"kind": "api_key", "key": "0123456789ABCDEF"}),
                added_at: 1.0,
            })
            .expect("save");
        // A row this Gantry cannot use is skipped, not fatal.
        store
            .save_printer(&SavedPrinter {
                fleet_id: "teapot:x".into(),
                name: "?".into(),
                kind: "teapot".into(),
                address: "http://x/".into(),
                credentials: json!({}),
                added_at: 2.0,
            })
            .expect("save");
    }
    let (mut conn, ctx) = context(&data);
    assert_eq!(ctx.manager.restore(&ctx.fleet).await, [id.as_str()]);
    // Restoring twice adds nothing.
    assert!(ctx.manager.restore(&ctx.fleet).await.is_empty());
    wait_entry(&mut conn, &id, "a failed try shown", |e| {
        e["name"] == "Prusa in the shed"
            && e["link"]["state"] == "connecting"
            && e["link"]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("Cannot reach"))
    })
    .await;
    // The wait grows from try to try, up to the longest.
    wait_entry(&mut conn, &id, "the longest wait", |e| {
        e["link"]["retry_in_ms"] == 1000
    })
    .await;
    assert!(
        !fleet_entry(&mut conn, &id)
            .await
            .to_string()
            .contains("0123456789ABCDEF"),
        "the key is not shown"
    );
    methods::call(&mut conn, "printers.remove", &json!({"id": id}))
        .await
        .expect("removed");
    assert!(fleet_entry(&mut conn, &id).await.is_null());
    ctx.shutdown().await;
    let store = Store::open(data.path().join("gantry.db")).expect("reopen");
    let left: Vec<String> = store
        .saved_printers()
        .expect("list")
        .into_iter()
        .map(|p| p.fleet_id)
        .collect();
    assert_eq!(left, ["teapot:x"]);
}
