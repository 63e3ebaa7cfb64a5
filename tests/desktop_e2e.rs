//! The desktop app end to end, as a user meets it: tauri-driver and WebKitWebDriver start the real
//! `gantry` binary under X (Xvfb in CI), the window opens on the Printers page, the web UI fetches
//! the endpoint from the shell, connects to core's WebSocket with the token, and lists the
//! simulated printer.
//!
//! Needs `GANTRY_TAURI_DRIVER` (the tauri-driver binary), `DISPLAY`, and WebKitWebDriver on PATH;
//! `cargo xtask test` provides all three and runs it with `--include-ignored`.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

struct Driver {
    child: Child,
    base: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        // tauri-driver, WebKitWebDriver and the app share one process group (see `start_driver`).
        // Ending only tauri-driver with SIGKILL orphans WebKitWebDriver, which then holds the test
        // runner's output pipe open for ever: end the whole group.
        #[cfg(unix)]
        {
            let group = format!("-{}", self.child.id());
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("addr")
        .port()
}

fn start_driver() -> Driver {
    let driver = std::env::var("GANTRY_TAURI_DRIVER")
        .expect("GANTRY_TAURI_DRIVER must name the tauri-driver binary (cargo xtask test sets it)");
    assert!(
        std::env::var_os("DISPLAY").is_some(),
        "DISPLAY must be set (cargo xtask test starts Xvfb)"
    );
    let (port, native) = (free_port(), free_port());
    let mut command = Command::new(driver);
    // Its own process group, so that `Drop` can end WebKitWebDriver and the app with it.
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let child = command
        .args([
            "--port",
            &port.to_string(),
            "--native-port",
            &native.to_string(),
        ])
        // The app's Printers page browses mDNS; in tests nothing may leave loopback.
        .env("GANTRY_MDNS", "off")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("tauri-driver starts");
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while ureq::get(&format!("{base}/status")).call().is_err() {
        assert!(
            Instant::now() < deadline,
            "tauri-driver did not answer within 30 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    Driver { child, base }
}

fn post(url: &str, body: &Value) -> Value {
    let mut resp = ureq::post(url)
        .send_json(body)
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    resp.body_mut().read_json().expect("JSON")
}

fn get(url: &str) -> Value {
    let mut resp = ureq::get(url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    resp.body_mut().read_json().expect("JSON")
}

/// Polls for an element matching `css` until `timeout`, returning its id.
fn wait_for(session: &str, css: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let found = ureq::post(&format!("{session}/element"))
            .send_json(json!({"using": "css selector", "value": css}))
            .ok()
            .and_then(|mut r| r.body_mut().read_json::<Value>().ok())
            .and_then(|v| v["value"][ELEMENT_KEY].as_str().map(str::to_owned));
        if let Some(id) = found {
            return id;
        }
        assert!(
            Instant::now() < deadline,
            "no element {css} within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
#[ignore = "needs Xvfb, WebKitWebDriver and tauri-driver; cargo xtask test runs it"]
fn the_app_opens_on_printers_and_lists_the_simulated_printer() {
    let driver = start_driver();
    let app = PathBuf::from(env!("CARGO_BIN_EXE_gantry"));
    let created = post(
        &format!("{}/session", driver.base),
        &json!({"capabilities": {"alwaysMatch": {
            "browserName": "wry",
            "tauri:options": {"application": app}
        }}}),
    );
    let id = created["value"]["sessionId"]
        .as_str()
        .expect("a session id")
        .to_owned();
    let session = format!("{}/session/{id}", driver.base);

    wait_for(
        &session,
        "[data-testid='page-printers']",
        Duration::from_secs(30),
    );
    // The entry arrives over core's WebSocket: this proves the token hand-off and the CSP.
    let sim = wait_for(
        &session,
        "[data-testid='printer-sim']",
        Duration::from_secs(30),
    );
    let text = get(&format!("{session}/element/{sim}/text"));
    let text = text["value"].as_str().expect("text");
    assert!(
        text.contains("Gantry simulated printer"),
        "the entry reads: {text}"
    );

    let shot = get(&format!("{session}/screenshot"));
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["value"].as_str().expect("base64"))
        .expect("valid base64");
    assert!(png.starts_with(b"\x89PNG"), "the screenshot is a PNG");
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("desktop-printers.png");
    std::fs::write(&out, png).expect("save the screenshot");

    let _ = ureq::delete(&session).call();
}
