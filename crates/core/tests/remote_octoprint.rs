//! Gantry's OctoPrint client against a real OctoPrint (PyPI, pinned in xtask/peers/) and its
//! bundled virtual printer: connect, upload a corpus file, print, follow progress and
//! temperatures, pause, resume, cancel; the application-key request flow; wrong keys.
//!
//! Ignored by default: `cargo xtask test` installs OctoPrint and runs them with
//! `--include-ignored`.

mod support;

use std::time::Duration;

use gantry_core::model::{KlippyState, PrintState, PrinterBackend, PrinterError, PrinterStatus};
use gantry_core::remote::octoprint::{AppKeyProgress, OctoPrint, request_app_key};
use gantry_core::remote::{Credentials, RemoteOptions, parse_address};
use support::peers;

fn options() -> RemoteOptions {
    RemoteOptions {
        request_timeout: Duration::from_secs(15),
        min_backoff: Duration::from_millis(200),
        max_backoff: Duration::from_secs(1),
        ..RemoteOptions::default()
    }
}

async fn wait_for(
    client: &dyn PrinterBackend,
    limit: Duration,
    what: &str,
    check: impl Fn(&PrinterStatus) -> bool,
) -> PrinterStatus {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let status = client.status();
        if check(&status) {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}; status: {}",
            status.summary()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs OctoPrint from PyPI; cargo xtask test installs it"]
async fn virtual_printer_job_flow() {
    let op = peers::OctoPrint::start().await;
    let url = parse_address(&op.url).expect("url");
    let client = OctoPrint::connect(url, Credentials::api_key(&op.api_key), options())
        .await
        .expect("connects with the application key");
    // Not yet connected to its printer: Klippy's vocabulary says disconnected.
    assert_eq!(
        client.status().klippy_state(),
        Some(KlippyState::Disconnected)
    );
    let err = client
        .gcode_script("M105")
        .await
        .expect_err("no printer yet");
    assert!(matches!(err, PrinterError::NotReady(_)), "{err:?}");

    client
        .connect_printer(Some("VIRTUAL"), Some(115200))
        .await
        .expect("virtual printer operational");
    wait_for(&client, Duration::from_secs(10), "ready", |s| {
        s.klippy_state() == Some(KlippyState::Ready)
    })
    .await;
    let info = client.info().await.expect("info");
    assert!(
        info.server_version.starts_with("OctoPrint 1.11"),
        "{info:?}"
    );
    assert_eq!(info.state, KlippyState::Ready);

    // Upload a real sliced file from the corpus.
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/gcode/superslicer-2.3.56_klipper_arcwelder.gcode");
    let data = std::fs::read(&path).expect("corpus file");
    let name = "gantry/superslicer_arcwelder.gcode";
    let entry = client
        .file_upload(name, data.clone(), false)
        .await
        .expect("upload");
    assert_eq!(entry.path, name);
    assert_eq!(
        std::fs::read(op.uploads().join(name)).expect("stored"),
        data,
        "OctoPrint stored the bytes we sent"
    );
    assert_eq!(
        client.file_download(name).await.expect("download"),
        data,
        "and sends them back"
    );
    let files = client.files_list().await.expect("list");
    assert!(
        files
            .iter()
            .any(|f| f.path == name && f.size == data.len() as u64),
        "{files:?}"
    );

    // Print it: the file heats to 240/110 °C first (the virtual printer heats 10 °C/s), which
    // the push socket's temperatures show.
    client.print_start(name).await.expect("start");
    let s = wait_for(
        &client,
        Duration::from_secs(15),
        "printing and heating",
        |s| {
            s.print_state() == Some(PrintState::Printing)
                && s.f64("extruder", "target") == Some(240.0)
                && s.f64("extruder", "temperature").unwrap_or(0.0) > 60.0
        },
    )
    .await;
    assert_eq!(s.summary().filename.as_deref(), Some(name));
    assert!(
        s.progress().unwrap_or(0.0) > 0.0,
        "the start G-code was sent: {}",
        s.summary()
    );
    let s = wait_for(
        &client,
        Duration::from_secs(60),
        "heated and moving on",
        |s| {
            s.f64("heater_bed", "temperature").unwrap_or(0.0) > 100.0
                && s.progress().unwrap_or(0.0) > 0.12
        },
    )
    .await;
    let before = s.progress().unwrap_or(0.0);

    // Pause: OctoPrint goes Pausing → Paused; progress stops.
    client.print_pause().await.expect("pause");
    wait_for(&client, Duration::from_secs(20), "paused", |s| {
        s.print_state() == Some(PrintState::Paused)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let paused_at = client.status().progress().unwrap_or(0.0);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        client.status().progress().unwrap_or(0.0),
        paused_at,
        "no progress while paused"
    );
    assert!(paused_at >= before);

    client.print_resume().await.expect("resume");
    wait_for(
        &client,
        Duration::from_secs(20),
        "resumed and advancing",
        |s| {
            s.print_state() == Some(PrintState::Printing) && s.progress().unwrap_or(0.0) > paused_at
        },
    )
    .await;

    client.print_cancel().await.expect("cancel");
    wait_for(&client, Duration::from_secs(30), "cancelled", |s| {
        s.print_state() == Some(PrintState::Cancelled)
    })
    .await;

    // Metadata from OctoPrint's analysis; OctoPrint has no history of its own.
    let meta = client.file_metadata(name).await.expect("metadata");
    assert_eq!(meta.size, Some(data.len() as u64));
    let err = client.history(5).await.expect_err("no history");
    assert_eq!(err.to_string(), "OctoPrint has no job history");
    client.file_delete(name).await.expect("delete");
    assert!(!op.uploads().join(name).exists());
    client.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs OctoPrint from PyPI; cargo xtask test installs it"]
async fn keys_are_checked_and_can_be_requested() {
    let op = peers::OctoPrint::start().await;
    let url = parse_address(&op.url).expect("url");
    let err = OctoPrint::connect(url.clone(), Credentials::None, options())
        .await
        .expect_err("no key");
    assert!(
        matches!(&err, PrinterError::Unauthorized { message, .. } if message.contains("needs an API key")),
        "{err:?}"
    );
    let err = OctoPrint::connect(url.clone(), Credentials::api_key("WRONGKEY"), options())
        .await
        .expect_err("wrong key");
    assert!(
        matches!(&err, PrinterError::Unauthorized { message, .. } if message.contains("refused")),
        "{err:?}"
    );
    assert!(
        !err.to_string().contains("WRONGKEY"),
        "the key is not echoed"
    );

    // The application-keys flow: Gantry asks, the user approves in OctoPrint, the key works.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let request = tokio::spawn({
        let url = url.clone();
        async move {
            request_app_key(
                url,
                "Gantry test",
                Some(peers::OCTOPRINT_USER),
                &options(),
                Duration::from_secs(60),
                move |p| {
                    let _ = tx.send(p);
                },
            )
            .await
        }
    });
    let AppKeyProgress::AwaitingApproval { auth_dialog } =
        tokio::time::timeout(Duration::from_secs(15), rx.recv())
            .await
            .expect("the request opens")
            .expect("progress");
    assert!(
        auth_dialog.contains("/plugin/appkeys/auth/"),
        "{auth_dialog}"
    );
    assert_eq!(op.approve_app_keys().await, 1);
    let key = tokio::time::timeout(Duration::from_secs(15), request)
        .await
        .expect("approved in time")
        .expect("task")
        .expect("a key");
    let client = OctoPrint::connect(url, Credentials::ApiKey { key }, options())
        .await
        .expect("the new key works");
    client.shutdown().await;
}
