//! WebDriver for the desktop end-to-end tests: tauri-driver (with WebKitWebDriver and the app)
//! in its own process group, and a session with the calls the tests make — find, wait, read,
//! click, type, run a script, take a screenshot. Each test includes it with `#[path]`.

#![allow(dead_code)] // each test uses part of it

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// tauri-driver with WebKitWebDriver and the app in its own process group, ended on drop.
pub(crate) struct Driver {
    child: Child,
    /// The WebDriver endpoint, `http://127.0.0.1:PORT`.
    pub(crate) base: String,
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

/// A free TCP port on loopback.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Starts tauri-driver (`GANTRY_TAURI_DRIVER`) on free ports and waits until it answers. The
/// app it starts inherits `GANTRY_MDNS=off` (nothing leaves loopback) and, when given, its own
/// data folder.
pub(crate) fn start_driver(data_dir: Option<&Path>) -> Driver {
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
    if let Some(dir) = data_dir {
        command.env("GANTRY_DATA_DIR", dir);
    }
    let child = command
        .args([
            "--port",
            &port.to_string(),
            "--native-port",
            &native.to_string(),
        ])
        // The app inherits this through WebKitWebDriver: no mDNS.
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

impl Driver {
    /// Opens a WebDriver session on the `gantry` app at `app`.
    pub(crate) fn open_app(&self, app: &Path) -> Session {
        let created = ureq::post(&format!("{}/session", self.base))
            .send_json(json!({"capabilities": {"alwaysMatch": {
                "browserName": "wry",
                "tauri:options": {"application": app}
            }}}))
            .expect("a session")
            .body_mut()
            .read_json::<Value>()
            .expect("JSON");
        let id = created["value"]["sessionId"]
            .as_str()
            .expect("a session id")
            .to_owned();
        Session(format!("{}/session/{id}", self.base))
    }
}

/// One WebDriver session on the app.
pub(crate) struct Session(String);

impl Session {
    /// Ends the session (the app's window closes).
    pub(crate) fn close(self) {
        let _ = ureq::delete(&self.0).call();
    }

    pub(crate) fn post(&self, path: &str, body: &Value) -> Value {
        let url = format!("{}{path}", self.0);
        let mut resp = ureq::post(&url)
            .send_json(body)
            .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        resp.body_mut().read_json().expect("JSON")
    }

    pub(crate) fn get(&self, path: &str) -> Value {
        let url = format!("{}{path}", self.0);
        let mut resp = ureq::get(&url)
            .call()
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        resp.body_mut().read_json().expect("JSON")
    }

    pub(crate) fn find(&self, css: &str) -> Option<String> {
        ureq::post(&format!("{}/element", self.0))
            .send_json(json!({"using": "css selector", "value": css}))
            .ok()
            .and_then(|mut r| r.body_mut().read_json::<Value>().ok())
            .and_then(|v| v["value"][ELEMENT_KEY].as_str().map(str::to_owned))
    }

    /// Polls for an element until `timeout`.
    pub(crate) fn wait(&self, css: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(id) = self.find(css) {
                return id;
            }
            assert!(
                Instant::now() < deadline,
                "no element {css} within {timeout:?}; the page reads:\n{}",
                self.page_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub(crate) fn text(&self, element: &str) -> String {
        self.get(&format!("/element/{element}/text"))["value"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    /// Polls an element's text until `check` holds; returns the text.
    pub(crate) fn wait_text(
        &self,
        css: &str,
        timeout: Duration,
        check: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(id) = self.find(css) {
                let text = self.text(&id);
                if check(&text) {
                    return text;
                }
                assert!(
                    Instant::now() < deadline,
                    "{css} reads {text:?} after {timeout:?}"
                );
            } else {
                assert!(
                    Instant::now() < deadline,
                    "no element {css} within {timeout:?}; the page reads:\n{}",
                    self.page_text()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    pub(crate) fn page_text(&self) -> String {
        self.find("body").map(|b| self.text(&b)).unwrap_or_default()
    }

    pub(crate) fn click(&self, css: &str) {
        let id = self.wait(css, Duration::from_secs(10));
        self.post(&format!("/element/{id}/click"), &json!({}));
    }

    pub(crate) fn type_into(&self, css: &str, text: &str) {
        let id = self.wait(css, Duration::from_secs(10));
        self.post(&format!("/element/{id}/clear"), &json!({}));
        self.post(&format!("/element/{id}/value"), &json!({ "text": text }));
    }

    pub(crate) fn script(&self, script: &str) -> Value {
        self.post("/execute/sync", &json!({ "script": script, "args": [] }))["value"].clone()
    }

    pub(crate) fn screenshot(&self, name: &str) -> PathBuf {
        let shot = self.get("/screenshot");
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["value"].as_str().expect("base64"))
            .expect("valid base64");
        assert!(png.starts_with(b"\x89PNG"), "the screenshot is a PNG");
        let dir = std::env::var_os("GANTRY_SHOTS_DIR")
            .map_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")), PathBuf::from);
        std::fs::create_dir_all(&dir).expect("the screenshot folder");
        let out = dir.join(name);
        std::fs::write(&out, png).expect("save the screenshot");
        out
    }
}
