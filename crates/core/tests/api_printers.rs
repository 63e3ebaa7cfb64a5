//! The API's `printers.*` section against a real OctoPrint (PyPI, pinned in xtask/peers/) and its
//! virtual printer: adding it by address — without a key, with a wrong key, with the right one —
//! following its state as OctoPrint connects its printer, the link lost when OctoPrint stops, and
//! removing it; and finding it over mDNS (in two network namespaces joined by a veth, so nothing
//! reaches the machine's network) and adding it from `printers.discovered`.
//!
//! Ignored by default: `cargo xtask test` installs OctoPrint and runs them with
//! `--include-ignored`. The mDNS test needs root and `ip netns`; elsewhere it says why and skips.

mod support;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;

use gantry_core::api::manage::ManagerOptions;
use gantry_core::api::methods::{self, Connection, Context};
use gantry_core::discovery::DiscoveryOptions;
use gantry_core::remote::RemoteOptions;
use serde_json::{Value, json};
use support::api::fleet_entry;
use support::netns::{self, Netns, cannot_run};
use support::peers::{self, PeerOptions};
use tokio::sync::mpsc;

fn context() -> (Connection, mpsc::UnboundedReceiver<Value>, Arc<Context>) {
    // Nothing leaves the machine: no mDNS here.
    context_with(None)
}

fn context_with(
    mdns: Option<DiscoveryOptions>,
) -> (Connection, mpsc::UnboundedReceiver<Value>, Arc<Context>) {
    let ctx = Arc::new(Context::new(ManagerOptions {
        mdns,
        remote: RemoteOptions {
            min_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(1),
            ..RemoteOptions::default()
        },
        ..ManagerOptions::default()
    }));
    let (tx, rx) = mpsc::unbounded_channel();
    (Connection::new(Arc::clone(&ctx), tx), rx, ctx)
}

/// Waits for a `notify_printers_changed` whose change matches, skipping others.
async fn change(
    rx: &mut mpsc::UnboundedReceiver<Value>,
    what: &str,
    check: impl Fn(&Value) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let msg = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no change '{what}' within 30 s"))
            .expect("open");
        if msg["method"] == "notify_printers_changed" && check(&msg["params"][0]) {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs OctoPrint from PyPI; cargo xtask test installs it"]
async fn add_follow_and_remove_a_real_octoprint() {
    let mut op = peers::OctoPrint::start().await;
    let (mut conn, mut rx, ctx) = context();
    methods::call(&mut conn, "printers.subscribe", &json!({}))
        .await
        .expect("subscribe");

    let e = methods::call(&mut conn, "printers.add", &json!({"url": op.url}))
        .await
        .expect_err("no key");
    assert_eq!(e.code, 401, "{}", e.message);
    assert!(e.message.contains("OctoPrint answered"), "{}", e.message);
    assert!(e.message.contains("needs an API key"), "{}", e.message);
    let e = methods::call(
        &mut conn,
        "printers.add",
        &json!({"url": op.url, "api_key": "0123456789ABCDEF0123456789ABCDEF"}),
    )
    .await
    .expect_err("wrong key");
    assert_eq!(e.code, 401, "{}", e.message);
    assert!(e.message.contains("refused the API key"), "{}", e.message);
    assert!(
        !e.message.contains("0123456789ABCDEF"),
        "the key is not echoed"
    );

    let added = methods::call(
        &mut conn,
        "printers.add",
        &json!({"url": op.url, "api_key": op.api_key, "name": "Octo"}),
    )
    .await
    .expect("added with its key");
    let id = format!("octoprint:{}", op.addr);
    let printer = &added["printer"];
    assert_eq!(printer["id"], id.as_str());
    assert_eq!(printer["name"], "Octo");
    assert_eq!(printer["kind"], "octoprint");
    assert_eq!(printer["link"]["state"], "connected");
    assert!(
        added["probe"]["version"]
            .as_str()
            .is_some_and(|v| v.starts_with("OctoPrint 1.11")),
        "{added}"
    );
    assert!(
        !added.to_string().contains(&op.api_key),
        "the key is not echoed"
    );
    // Not connected to its printer yet: the entry says so and what to do.
    assert_eq!(printer["state"], "disconnected");
    assert!(
        printer["problem"]["advice"]
            .as_str()
            .is_some_and(|a| a.contains("Connection panel")),
        "{printer}"
    );
    change(&mut rx, "added", |c| {
        c["action"] == "added" && c["id"] == id.as_str()
    })
    .await;
    let e = methods::call(
        &mut conn,
        "printers.add",
        &json!({"url": op.url, "api_key": op.api_key}),
    )
    .await
    .expect_err("twice");
    assert_eq!(e.code, 409, "{}", e.message);

    // OctoPrint connects its virtual printer: the state changes, and its temperatures show.
    op.connect_virtual_printer().await;
    change(&mut rx, "state", |c| {
        c["action"] == "state" && c["id"] == id.as_str()
    })
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let entry = fleet_entry(&mut conn, &id).await;
        if entry["state"] == "ready" {
            assert!(entry["problem"].is_null(), "{entry}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not ready: {entry}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    loop {
        let q = methods::call(
            &mut conn,
            "printer.objects.query",
            &json!({"printer": id, "objects": {"extruder": null}}),
        )
        .await
        .expect("query");
        if q["status"]["extruder"]["temperature"].is_number() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no temperature: {q}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A job's file reaches this machine (what the twin shows as the ghost of a printer it
    // follows): uploaded through the API, copied back from OctoPrint byte for byte.
    let gcode = b"; a remote job\nG28\nG1 X10 Y10 F3000\nG1 X20 E1\n";
    let up = methods::call(
        &mut conn,
        "server.files.upload",
        &json!({"printer": id, "filename": "ghost job.gcode",
                "content_base64": base64::engine::general_purpose::STANDARD.encode(gcode)}),
    )
    .await
    .expect("upload");
    let name = up["item"]["path"]
        .as_str()
        .expect("the stored name")
        .to_owned();
    let copy = methods::call(
        &mut conn,
        "server.files.local_copy",
        &json!({"printer": id, "filename": name}),
    )
    .await
    .expect("local copy");
    assert_eq!(copy["copied"], true, "{copy}");
    assert_eq!(copy["size"], gcode.len(), "{copy}");
    let path = std::path::PathBuf::from(copy["path"].as_str().expect("a path"));
    assert!(path.ends_with(&name), "{copy}");
    assert_eq!(std::fs::read(&path).expect("the copy"), gcode);
    let _ = std::fs::remove_file(&path);
    let e = methods::call(
        &mut conn,
        "server.files.local_copy",
        &json!({"printer": id, "filename": "../outside.gcode"}),
    )
    .await
    .expect_err("not under the G-code folder");
    assert_eq!(e.code, -32602, "{}", e.message);
    let e = methods::call(
        &mut conn,
        "server.files.local_copy",
        &json!({"printer": id, "filename": "no such file.gcode"}),
    )
    .await
    .expect_err("missing");
    assert!(e.message.contains("404"), "{}", e.message);

    // OctoPrint goes away: the link says so with the cause, and comes back with it.
    op.process.stop();
    change(&mut rx, "link", |c| {
        c["action"] == "link" && c["id"] == id.as_str()
    })
    .await;
    let entry = fleet_entry(&mut conn, &id).await;
    assert_eq!(entry["link"]["state"], "reconnecting", "{entry}");
    assert!(
        entry["problem"]["cause"]
            .as_str()
            .is_some_and(|c| c.contains("lost the connection")),
        "{entry}"
    );
    assert!(
        entry["problem"]["advice"]
            .as_str()
            .is_some_and(|a| a.contains("tries again")),
        "{entry}"
    );

    let removed = methods::call(&mut conn, "printers.remove", &json!({"id": id}))
        .await
        .expect("removed");
    assert_eq!(removed["removed"], id.as_str());
    change(&mut rx, "removed", |c| c["action"] == "removed").await;
    assert!(fleet_entry(&mut conn, &id).await.is_null());
    ctx.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, ip netns and OctoPrint; cargo xtask test runs it"]
async fn finds_a_real_octoprint_over_mdns_and_adds_it() {
    if let Some(why) = cannot_run() {
        #[allow(clippy::print_stdout)]
        {
            println!("SKIPPED finds_a_real_octoprint_over_mdns_and_adds_it: {why}");
        }
        return;
    }
    let net = Netns::create('p').expect("network namespaces");
    let bind = net.addr_b();
    let op = peers::OctoPrint::start_with(PeerOptions {
        netns: Some(net.b.clone()),
        bind: Some(bind),
        mdns: true,
        port: Some(5000),
    })
    .await;
    let (ns, veth) = (net.a.clone(), net.veth_a.clone());
    // Gantry's side runs on a thread inside namespace A, with a runtime of its own there.
    let gantry = std::thread::spawn(move || {
        netns::enter(&ns, &veth).expect("inside namespace A");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(mdns_flow(op, veth, bind));
    });
    if let Err(panic) = tokio::task::spawn_blocking(move || gantry.join())
        .await
        .expect("join")
    {
        std::panic::resume_unwind(panic);
    }
    drop(net);
}

async fn mdns_flow(mut op: peers::OctoPrint, veth: String, bind: std::net::IpAddr) {
    let (mut conn, mut rx, ctx) = context_with(Some(DiscoveryOptions {
        interfaces: Some(vec![veth]),
        ipv4_only: true,
        ..DiscoveryOptions::default()
    }));
    let started = tokio::time::Instant::now();
    let state = methods::call(&mut conn, "printers.subscribe", &json!({}))
        .await
        .expect("subscribe");
    assert_eq!(state["mdns"]["state"], "browsing", "{state}");
    // The advertisement arrives: a change, then the entry in printers.discovered.
    let entry = loop {
        let found = methods::call(&mut conn, "printers.discovered", &json!({}))
            .await
            .expect("discovered");
        let octo = found["network"]
            .as_array()
            .and_then(|l| l.iter().find(|p| p["kind"] == "octoprint"))
            .cloned();
        if let Some(p) = octo {
            break p;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "OctoPrint not found over mDNS within 5 s: {found}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    #[allow(clippy::print_stdout)]
    {
        println!("found over mDNS after {:?}: {entry}", started.elapsed());
    }
    change(&mut rx, "network added", |c| {
        c["source"] == "network" && c["action"] == "added"
    })
    .await;
    let url = format!("http://{bind}:5000/");
    assert_eq!(entry["url"], url.as_str());
    assert_eq!(entry["backend"], "octoprint");
    assert!(entry["added"].is_null(), "{entry}");

    // Add it as the Printers page's Add button does: it wants its key first.
    let e = methods::call(&mut conn, "printers.add", &json!({"url": entry["url"]}))
        .await
        .expect_err("no key");
    assert_eq!(e.code, 401, "{}", e.message);
    let added = methods::call(
        &mut conn,
        "printers.add",
        &json!({"url": entry["url"], "api_key": op.api_key}),
    )
    .await
    .expect("added");
    let id = format!("octoprint:{bind}:5000");
    assert_eq!(added["printer"]["id"], id.as_str());
    let found = methods::call(&mut conn, "printers.discovered", &json!({}))
        .await
        .expect("discovered");
    let again = found["network"]
        .as_array()
        .and_then(|l| l.iter().find(|p| p["id"] == entry["id"]))
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(again["added"], id.as_str(), "{found}");

    // It stops: its goodbye removes the entry, and the fleet printer's link says it is gone.
    op.process.stop();
    change(&mut rx, "network removed", |c| {
        c["source"] == "network" && c["action"] == "removed"
    })
    .await;
    let entry = fleet_entry(&mut conn, &id).await;
    assert_ne!(entry["link"]["state"], "connected", "{entry}");
    ctx.shutdown().await;
    assert!(
        fleet_entry(&mut conn, &id).await.is_null(),
        "closed at shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Moonraker from PyPI; cargo xtask test installs it"]
async fn add_a_real_moonraker_by_key_and_by_login() {
    let mr = peers::Moonraker::start().await;
    mr.create_user("maker", "gantry-pw").await;
    let (mut conn, _rx, ctx) = context();
    let e = methods::call(&mut conn, "printers.add", &json!({"url": mr.url}))
        .await
        .expect_err("no key");
    assert_eq!(e.code, 401, "{}", e.message);
    assert!(e.message.contains("Moonraker answered"), "{}", e.message);
    assert!(
        e.message.contains("user name and password"),
        "{}",
        e.message
    );

    // With its API key: added; no Klipper behind this Moonraker, which the entry says.
    let added = methods::call(
        &mut conn,
        "printers.add",
        &json!({"url": mr.url, "api_key": mr.api_key}),
    )
    .await
    .expect("added with the key");
    let id = format!("moonraker:{}", mr.addr);
    let printer = &added["printer"];
    assert_eq!(printer["id"], id.as_str());
    assert_eq!(printer["state"], "disconnected", "{printer}");
    assert!(
        printer["problem"]["cause"]
            .as_str()
            .is_some_and(|c| c.contains("Klipper is not running")),
        "{printer}"
    );
    methods::call(&mut conn, "printers.remove", &json!({"id": id}))
        .await
        .expect("removed");

    // A wrong password, then the right login (JWT): the same printer again.
    let e = methods::call(
        &mut conn,
        "printers.add",
        &json!({"url": mr.url, "username": "maker", "password": "Wr0ng-Pa55"}),
    )
    .await
    .expect_err("wrong password");
    assert_eq!(e.code, 401, "{}", e.message);
    assert!(
        !e.message.contains("Wr0ng-Pa55"),
        "the password is not echoed: {}",
        e.message
    );
    #[allow(clippy::print_stdout)]
    {
        println!("wrong login: {}", e.message);
    }
    let added = methods::call(
        &mut conn,
        "printers.add",
        &json!({"url": mr.url, "username": "maker", "password": "gantry-pw"}),
    )
    .await
    .expect("added with a login");
    assert_eq!(added["printer"]["id"], id.as_str());
    assert_eq!(added["printer"]["link"]["state"], "connected");
    ctx.shutdown().await;
}
