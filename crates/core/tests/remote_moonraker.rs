//! Gantry's Moonraker client against a real Moonraker (PyPI, pinned in xtask/peers/) with a
//! Klippy of our own behind it (tests/support/klippy.rs) for the `printer.*` methods.
//!
//! Ignored by default: `cargo xtask test` installs Moonraker and runs them with
//! `--include-ignored`.

mod support;

use std::time::Duration;

use gantry_core::model::{
    KlippyState, LinkState, PrintState, PrinterBackend, PrinterError, PrinterEvent,
};
use gantry_core::remote::moonraker::Moonraker;
use gantry_core::remote::{Credentials, RemoteOptions, Secret, parse_address};
use support::klippy::FakeKlippy;
use support::peers;

const IGNORE: &str = "needs Moonraker from PyPI; cargo xtask test installs it";

fn options() -> RemoteOptions {
    RemoteOptions {
        request_timeout: Duration::from_secs(10),
        min_backoff: Duration::from_millis(200),
        max_backoff: Duration::from_secs(1),
        ..RemoteOptions::default()
    }
}

/// Waits until `check` holds on the client's status, up to `limit`.
async fn wait_for(
    client: &dyn PrinterBackend,
    limit: Duration,
    what: &str,
    check: impl Fn(&gantry_core::model::PrinterStatus) -> bool,
) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let status = client.status();
        if check(&status) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}; status: {}",
            status.summary()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn corpus_file() -> (String, Vec<u8>) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/gcode/superslicer-2.3.56_klipper_arcwelder.gcode");
    let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    ("corpus/superslicer_arcwelder.gcode".to_owned(), data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Moonraker from PyPI; cargo xtask test installs it"]
async fn api_key_objects_gcode_files_print_history_webcams() {
    let _ = IGNORE;
    let mr = peers::Moonraker::start().await;
    let klippy = FakeKlippy::start(&mr.klippy_socket, &mr.gcodes(), Duration::ZERO);
    let url = parse_address(&mr.url).expect("url");
    let client = Moonraker::connect(url, Credentials::api_key(&mr.api_key), options())
        .await
        .expect("connects with the API key");
    let (_, mut events) = client.subscribe();

    // Moonraker connects to Klippy on its own schedule (0.25 s polls): wait for ready.
    wait_for(&client, Duration::from_secs(20), "klippy ready", |s| {
        s.klippy_state() == Some(KlippyState::Ready) && s.object("toolhead").is_some()
    })
    .await;
    let info = client.info().await.expect("info");
    assert_eq!(info.state, KlippyState::Ready);
    assert!(
        info.server_version.starts_with("Moonraker 0.11"),
        "{info:?}"
    );
    assert_eq!(
        info.firmware.as_deref(),
        Some("Klipper v0.13.0-gantry-test")
    );
    let objects = client.status().names();
    for name in [
        "webhooks",
        "toolhead",
        "extruder",
        "heater_bed",
        "print_stats",
        "virtual_sdcard",
    ] {
        assert!(objects.iter().any(|o| o == name), "{name} in {objects:?}");
    }

    // G-code: the script runs, the status follows through notify_status_update.
    client
        .gcode_script("M104 S200\nM140 S60")
        .await
        .expect("heaters on");
    wait_for(&client, Duration::from_secs(5), "targets", |s| {
        s.f64("extruder", "target") == Some(200.0) && s.f64("heater_bed", "target") == Some(60.0)
    })
    .await;
    wait_for(&client, Duration::from_secs(5), "heating", |s| {
        s.f64("extruder", "temperature").unwrap_or(0.0) > 26.0
    })
    .await;
    client
        .gcode_script("M118 hello from gantry")
        .await
        .expect("M118");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut saw_status = false;
    let mut saw_echo = false;
    while !(saw_status && saw_echo) {
        let ev = tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("notifications arrive")
            .expect("channel open");
        match ev {
            PrinterEvent::Status { delta, eventtime } => {
                saw_status = true;
                assert!(eventtime.is_some());
                assert!(!delta.is_empty());
            }
            PrinterEvent::GcodeResponse { line } if line.contains("hello from gantry") => {
                saw_echo = true;
            }
            _ => {}
        }
    }
    // Klipper's refusal comes back as a clear error.
    let err = client.gcode_script("G1 X10").await.expect_err("not homed");
    assert!(
        matches!(&err, PrinterError::Rejected(m) if m.contains("Must home axis first")),
        "{err:?}"
    );
    let err = client
        .gcode_script("NOT_A_COMMAND")
        .await
        .expect_err("unknown");
    assert!(err.to_string().contains("Unknown command"), "{err}");
    client
        .gcode_script("G28\nG1 X10 Y20 Z5")
        .await
        .expect("moves");
    wait_for(&client, Duration::from_secs(5), "position", |s| {
        s.summary().position == Some(vec![10.0, 20.0, 5.0, 0.0])
    })
    .await;

    // Files: upload, list, metadata.
    let (name, data) = corpus_file();
    let entry = client
        .file_upload(&name, data.clone(), false)
        .await
        .expect("upload");
    assert_eq!(entry.path, name);
    assert_eq!(entry.size, data.len() as u64);
    assert_eq!(
        client.file_download(&name).await.expect("download"),
        data,
        "the file comes back byte for byte"
    );
    let files = client.files_list().await.expect("list");
    assert!(
        files
            .iter()
            .any(|f| f.path == name && f.size == data.len() as u64),
        "{files:?}"
    );
    // Moonraker extracts metadata in the background: ask until it is there.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let meta = loop {
        match client.file_metadata(&name).await {
            Ok(m) if m.slicer.is_some() => break m,
            Ok(_) | Err(PrinterError::InvalidInput(_)) => {}
            Err(e) => panic!("metadata: {e}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no metadata for {name}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(meta.slicer.as_deref(), Some("SuperSlicer"), "{meta:?}");
    assert!(meta.estimated_time_s.is_some_and(|t| t > 0.0), "{meta:?}");

    // Print: start, follow progress, pause, resume, cancel; the history records it.
    client.print_start(&name).await.expect("start");
    wait_for(&client, Duration::from_secs(5), "printing", |s| {
        s.print_state() == Some(PrintState::Printing) && s.progress().unwrap_or(0.0) > 0.0
    })
    .await;
    assert_eq!(
        client.status().summary().filename.as_deref(),
        Some(name.as_str())
    );
    client.print_pause().await.expect("pause");
    wait_for(&client, Duration::from_secs(5), "paused", |s| {
        s.print_state() == Some(PrintState::Paused)
    })
    .await;
    let paused_at = client.status().progress();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        client.status().progress(),
        paused_at,
        "no progress while paused"
    );
    client.print_resume().await.expect("resume");
    wait_for(&client, Duration::from_secs(5), "resumed", |s| {
        s.print_state() == Some(PrintState::Printing) && s.progress() > paused_at
    })
    .await;
    client.print_cancel().await.expect("cancel");
    wait_for(&client, Duration::from_secs(5), "cancelled", |s| {
        s.print_state() == Some(PrintState::Cancelled)
    })
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let job = loop {
        let jobs = client.history(10).await.expect("history");
        if let Some(j) = jobs
            .iter()
            .find(|j| j.filename == name && j.status == "cancelled")
        {
            break j.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "history: {jobs:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        job.end_time.is_some() && job.print_duration > 0.0,
        "{job:?}"
    );

    // Webcams: the configured one, with URLs made absolute.
    let cams = client.webcams().await.expect("webcams");
    let front = cams
        .iter()
        .find(|c| c.name == "front")
        .expect("front webcam");
    assert_eq!(
        front.stream_url,
        format!("{}/webcam/?action=stream", mr.url)
    );
    assert!(front.flip_horizontal);
    assert_eq!(front.rotation, 90);

    // Emergency stop: Klippy shuts down, the state says so.
    client.emergency_stop().await.expect("estop");
    wait_for(&client, Duration::from_secs(5), "shutdown", |s| {
        s.klippy_state() == Some(KlippyState::Shutdown)
    })
    .await;
    assert_eq!(klippy.field("webhooks", "state"), Some("shutdown".into()));
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Moonraker from PyPI; cargo xtask test installs it"]
async fn credentials_are_required_and_checked() {
    let mr = peers::Moonraker::start().await;
    let url = parse_address(&mr.url).expect("url");
    let err = Moonraker::connect(url.clone(), Credentials::None, options())
        .await
        .expect_err("no credentials");
    assert!(
        matches!(&err, PrinterError::Unauthorized { message, .. } if message.contains("needs an API key")),
        "{err:?}"
    );
    let err = Moonraker::connect(
        url.clone(),
        Credentials::api_key("0123456789abcdef"),
        options(),
    )
    .await
    .expect_err("wrong key");
    assert!(matches!(err, PrinterError::Unauthorized { .. }), "{err:?}");
    let err = Moonraker::connect(
        url,
        Credentials::Login {
            username: "nobody".into(),
            password: Secret::new("wrong"),
        },
        options(),
    )
    .await
    .expect_err("unknown user");
    assert!(
        matches!(&err, PrinterError::Unauthorized { message, .. } if message.contains("login as nobody failed")),
        "{err:?}"
    );
    // The key never shows in what a user or a log sees.
    assert!(!format!("{err:?}").contains("wrong"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Moonraker from PyPI; cargo xtask test installs it"]
async fn jwt_login_refreshes_after_expiry() {
    let mr = peers::Moonraker::start().await;
    mr.create_user("maker", "s3cret-pw").await;
    let url = parse_address(&mr.url).expect("url");
    let creds = Credentials::Login {
        username: "maker".into(),
        password: Secret::new("s3cret-pw"),
    };
    let client = Moonraker::connect(url, creds, options())
        .await
        .expect("login and identify");
    let (access, _refresh) = client.tokens().await.expect("tokens after login");
    let info = client.http_get("/server/info").await.expect("bearer works");
    assert!(info["result"]["moonraker_version"].is_string());

    // Two hours later by Moonraker's clock the access token (1 h) has expired; the refresh token
    // (90 days) has not. The next request is refused, refreshed and retried.
    mr.shift_clock(2.0 * 3600.0).await;
    let info = client.http_get("/server/info").await.expect("refreshed");
    assert!(info["result"]["moonraker_version"].is_string());
    let (access2, _) = client.tokens().await.expect("tokens");
    assert_ne!(access.expose(), access2.expose(), "a new access token");
    // The websocket still answers (identified before); files over HTTP use the new token too.
    let (name, data) = corpus_file();
    client
        .file_upload(&name, data, false)
        .await
        .expect("upload with the refreshed token");
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Moonraker from PyPI; cargo xtask test installs it"]
async fn klippy_startup_disconnect_and_moonraker_restart() {
    let mut mr = peers::Moonraker::start().await;
    let url = parse_address(&mr.url).expect("url");
    // No Klippy yet: connected to Moonraker, Klippy disconnected, printer.* not ready.
    let client = Moonraker::connect(url, Credentials::api_key(&mr.api_key), options())
        .await
        .expect("connects");
    wait_for(&client, Duration::from_secs(5), "disconnected", |s| {
        s.klippy_state() == Some(KlippyState::Disconnected)
    })
    .await;
    let err = client.gcode_script("G28").await.expect_err("no Klippy");
    assert!(matches!(err, PrinterError::NotReady(_)), "{err:?}");

    // Klippy comes up in `startup` for 4 s (the client asks every 2 s, as Moonraker advises), then ready.
    let mut klippy = FakeKlippy::start(&mr.klippy_socket, &mr.gcodes(), Duration::from_secs(4));
    wait_for(&client, Duration::from_secs(10), "startup", |s| {
        s.klippy_state() == Some(KlippyState::Startup)
    })
    .await;
    wait_for(&client, Duration::from_secs(15), "ready", |s| {
        s.klippy_state() == Some(KlippyState::Ready) && s.object("extruder").is_some()
    })
    .await;

    // Klippy goes away: notify_klippy_disconnected.
    klippy.stop();
    wait_for(&client, Duration::from_secs(10), "klippy gone", |s| {
        s.klippy_state() == Some(KlippyState::Disconnected)
    })
    .await;
    let klippy = FakeKlippy::start(&mr.klippy_socket, &mr.gcodes(), Duration::ZERO);
    wait_for(&client, Duration::from_secs(15), "ready again", |s| {
        s.klippy_state() == Some(KlippyState::Ready) && s.object("extruder").is_some()
    })
    .await;

    // Moonraker itself restarts (same port, same data and key): the client reconnects with
    // backoff, identifies again and resubscribes.
    let (_, mut events) = client.subscribe();
    mr.restart().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut saw_reconnecting = false;
    loop {
        let ev = tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("link events")
            .expect("open");
        match ev {
            PrinterEvent::Link(LinkState::Reconnecting { .. }) => saw_reconnecting = true,
            PrinterEvent::Link(LinkState::Connected) => break,
            PrinterEvent::Link(LinkState::Closed { reason }) => panic!("gave up: {reason}"),
            _ => {}
        }
    }
    assert!(saw_reconnecting);
    wait_for(
        &client,
        Duration::from_secs(20),
        "ready after the restart",
        |s| s.klippy_state() == Some(KlippyState::Ready) && s.object("extruder").is_some(),
    )
    .await;
    client.gcode_script("M104 S123").await.expect("works again");
    wait_for(&client, Duration::from_secs(5), "target", |s| {
        s.f64("extruder", "target") == Some(123.0)
    })
    .await;
    drop(klippy);
    client.shutdown().await;
}
