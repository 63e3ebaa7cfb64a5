//! The Printers page and a Dashboard end to end against a real OctoPrint, as a user meets them:
//! core's peer harness starts OctoPrint (PyPI) with its virtual printer connected and a camera
//! (an MJPEG stream this test serves on loopback, set in OctoPrint's webcam settings);
//! tauri-driver and WebKitWebDriver start the real `gantry` desktop app under X (Xvfb in CI). The
//! test adds OctoPrint by address with its API key on the Printers page, opens its Dashboard, sees
//! the virtual printer's temperatures and the camera, sets a hotend target and watches it heat,
//! sends M115 on the Console and sees the firmware answer, sees the Printers page say so when
//! OctoPrint stops, and removes the printer.
//! Screenshots of both pages go to `$GANTRY_SHOTS_DIR` (default: the test's temp dir).
//!
//! Needs `GANTRY_TAURI_DRIVER`, `DISPLAY`, WebKitWebDriver and OctoPrint; `cargo xtask test`
//! provides them and runs it with `--include-ignored`. mDNS stays off (`GANTRY_MDNS=off`): the
//! app sends nothing beyond loopback.

#[path = "../crates/core/tests/support/peers.rs"]
mod peers;
#[path = "support/webdriver.rs"]
mod webdriver;

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;

/// An MJPEG camera on loopback, as mjpg-streamer serves one: `?action=stream` is a
/// `multipart/x-mixed-replace` stream of JPEG frames, `?action=snapshot` one frame.
struct Camera {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Camera {
    fn start() -> Self {
        let jpeg: Arc<[u8]> = std::fs::read(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/webcam/test-card.jpg"),
        )
        .expect("the test card")
        .into();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the camera");
        let port = listener.local_addr().expect("addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let stop = Arc::clone(&stop);
            move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    let (jpeg, stop) = (Arc::clone(&jpeg), Arc::clone(&stop));
                    std::thread::spawn(move || serve_camera(stream, &jpeg, &stop));
                }
            }
        });
        Self {
            port,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self, action: &str) -> String {
        format!("http://127.0.0.1:{}/webcam/?action={action}", self.port)
    }
}

impl Drop for Camera {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_camera(mut stream: TcpStream, jpeg: &[u8], stop: &AtomicBool) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut request = Vec::new();
    let mut buf = [0_u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&request);
    if head.contains("action=snapshot") {
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            jpeg.len()
        );
        let _ = stream.write_all(jpeg);
        return;
    }
    if stream
        .write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=frame\r\n\
              Cache-Control: no-cache\r\nConnection: close\r\n\r\n",
        )
        .is_err()
    {
        return;
    }
    while !stop.load(Ordering::Relaxed) {
        let part = format!(
            "--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
            jpeg.len()
        );
        if stream.write_all(part.as_bytes()).is_err()
            || stream.write_all(jpeg).is_err()
            || stream.write_all(b"\r\n").is_err()
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// OctoPrint's classic webcam pointed at `camera`, as a user sets it in OctoPrint's settings.
async fn set_webcam(op: &peers::OctoPrint, camera: &Camera) {
    let body = json!({"plugins": {"classicwebcam": {
        "stream": camera.url("stream"),
        "snapshot": camera.url("snapshot"),
    }}})
    .to_string();
    let (status, text) = peers::http(
        op.addr,
        None,
        "POST",
        "/api/settings",
        &[("X-Api-Key", op.api_key.as_str())],
        Some(&body),
    )
    .await
    .expect("POST /api/settings");
    assert_eq!(status, 200, "webcam settings: {text}");
}

fn temperature(text: &str) -> f64 {
    text.trim_end_matches(" °C")
        .trim()
        .parse()
        .unwrap_or(f64::NAN)
}

#[test]
#[ignore = "needs Xvfb, WebKitWebDriver, tauri-driver and OctoPrint; cargo xtask test runs it"]
#[allow(clippy::print_stderr)] // where the screenshots went, for the person running it
fn printers_page_and_dashboard_against_a_real_octoprint() {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let camera = Camera::start();
    let mut op = runtime.block_on(async {
        let op = peers::OctoPrint::start().await;
        op.connect_virtual_printer().await;
        set_webcam(&op, &camera).await;
        op
    });
    let data = peers::TempDir::new("printers-e2e");
    let driver = webdriver::start_driver(Some(data.path()));
    let s = driver.open_app(&PathBuf::from(env!("CARGO_BIN_EXE_gantry")));
    let long = Duration::from_secs(60);

    // The Printers page, with Gantry's simulated printer in the fleet.
    s.wait("[data-testid='page-printers']", Duration::from_secs(30));
    s.wait("[data-testid='printer-sim']", long);

    // Add OctoPrint by address: first without its key (it says it needs one), then with it.
    s.type_into("[data-testid='add-url']", &op.url);
    s.click("[data-testid='add-submit']");
    let error = s.wait_text("[data-testid='add-error']", long, |t| !t.is_empty());
    assert!(error.contains("needs an API key"), "{error}");
    s.type_into("[data-testid='add-key']", &op.api_key);
    s.click("[data-testid='add-submit']");
    let added = s.wait_text("[data-testid='add-result']", long, |t| !t.is_empty());
    assert!(added.contains("OctoPrint 1.11"), "{added}");
    // The form is ready for the next printer, its fields empty: no credential stays in it.
    s.wait_text("[data-testid='add-submit']", long, |t| t == "Add printer");
    for field in ["add-url", "add-key"] {
        let value = s.script(&format!(
            "return document.querySelector(\"[data-testid='{field}']\").value"
        ));
        assert_eq!(value, json!(""), "{field} is emptied after adding");
    }
    assert!(
        s.find("[data-testid='add-error']").is_none(),
        "{}",
        s.page_text()
    );
    let card = format!(
        "[data-testid='printer-octoprint-127-0-0-1-{}']",
        op.addr.port()
    );
    s.wait_text(&format!("{card} [data-testid='fleet-state']"), long, |t| {
        t == "Printer: Ready"
    });
    s.wait_text(&format!("{card} [data-testid='fleet-link']"), long, |t| {
        t == "Connected"
    });
    assert!(
        !s.page_text().contains(&op.api_key),
        "the key is not shown after adding"
    );
    s.wait_text("[data-testid='add-saved']", long, |t| {
        t.contains("when Gantry starts again")
    });
    std::thread::sleep(Duration::from_millis(500));
    let printers_shot = s.screenshot("printers-octoprint.png");

    // Renamed in place on its card.
    s.click(&format!("{card} [data-testid='fleet-rename']"));
    s.type_into(
        &format!("{card} [data-testid='fleet-rename-input']"),
        "  Farm printer 3 ",
    );
    std::thread::sleep(Duration::from_millis(300));
    let rename_shot = s.screenshot("printers-rename.png");
    s.click(&format!("{card} [data-testid='fleet-rename-save']"));
    let name = s.wait_text(&format!("{card} [data-testid='fleet-name']"), long, |t| {
        t == "Farm printer 3"
    });

    // Gantry closed and started again: the printer is back in the list under its new name,
    // and connects by itself with the key it was added with.
    s.close();
    let s = driver.open_app(&PathBuf::from(env!("CARGO_BIN_EXE_gantry")));
    s.wait("[data-testid='page-printers']", Duration::from_secs(30));
    s.wait_text(&format!("{card} [data-testid='fleet-name']"), long, |t| {
        t == name
    });
    s.wait_text(&format!("{card} [data-testid='fleet-link']"), long, |t| {
        t == "Connected"
    });
    s.wait_text(&format!("{card} [data-testid='fleet-state']"), long, |t| {
        t == "Printer: Ready"
    });
    assert!(
        !s.page_text().contains(&op.api_key),
        "the key is not shown after a restart"
    );
    // Gantry's simulated printer is still the first, shown on the Dashboard.
    s.wait(
        "[data-testid='printer-sim'] [data-testid='selected-badge']",
        long,
    );
    std::thread::sleep(Duration::from_millis(500));
    let restored_shot = s.screenshot("printers-octoprint-restored.png");

    // Its Dashboard: the virtual printer's temperatures, the camera, and a target set.
    s.click(&format!("{card} [data-testid='fleet-open']"));
    s.wait("[data-testid='page-dashboard']", long);
    s.wait_text("[data-testid='klippy-state']", long, |t| t == "Ready");
    let now = s.wait_text("[data-testid='temp-extruder']", long, |t| {
        temperature(t) > 0.0
    });
    assert!(temperature(&now) < 40.0, "a cold hotend first: {now}");
    s.wait_text("[data-testid='temp-heater_bed']", long, |t| {
        temperature(t) > 0.0
    });
    s.wait("[data-testid='webcam-image']", long);
    let deadline = Instant::now() + long;
    while s.script("return document.querySelector(\"[data-testid='webcam-image']\").naturalWidth")
        != json!(640)
    {
        assert!(
            Instant::now() < deadline,
            "the camera's frames did not show: {}",
            s.page_text()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    s.type_into("[data-testid='target-extruder']", "60");
    s.click("[data-testid='heater-extruder'] button[type='submit']");
    s.wait_text(
        "[data-testid='heater-extruder'] td:nth-of-type(2)",
        long,
        |t| t == "60 °C",
    );
    // The virtual printer heats: the Dashboard follows OctoPrint's push socket.
    s.wait_text("[data-testid='temp-extruder']", long, |t| {
        temperature(t) > 45.0
    });
    assert!(s.find("[data-testid='dashboard-error']").is_none());
    // The whole page from its top: the job, the toolhead, the camera, the temperatures.
    s.script(
        "document.querySelector('main').scrollTo(0, 0); document.activeElement.blur(); return null",
    );
    std::thread::sleep(Duration::from_millis(1500));
    let dashboard_shot = s.screenshot("dashboard-octoprint.png");

    // The Console: M115 goes to OctoPrint, the firmware's answer comes back.
    s.click("[data-testid='nav-console']");
    s.wait("[data-testid='page-console']", long);
    s.type_into("[data-testid='console-input']", "M115");
    s.click("form.input button[type='submit']");
    s.wait_text("[data-testid='console-log']", long, |t| {
        t.contains("> M115") && t.contains("FIRMWARE_NAME")
    });
    s.screenshot("console-octoprint.png");

    // OctoPrint goes away: the Printers page says so, with the cause and what to do.
    s.click("[data-testid='nav-printers']");
    op.process.stop();
    s.wait_text(&format!("{card} [data-testid='fleet-link']"), long, |t| {
        t.starts_with("Reconnecting")
    });
    s.wait_text(&format!("{card} [data-testid='fleet-state']"), long, |t| {
        t == "Printer: Ready (last seen)"
    });
    let problem = s.wait_text(
        &format!("{card} [data-testid='fleet-problem']"),
        long,
        |t| !t.is_empty(),
    );
    assert!(problem.contains("Gantry lost the connection"), "{problem}");
    assert!(
        problem.contains("Check that OctoPrint is running"),
        "{problem}"
    );
    std::thread::sleep(Duration::from_millis(500));
    let lost_shot = s.screenshot("printers-octoprint-lost.png");
    // Its Dashboard says so too, rather than showing the last temperatures as current.
    s.click("[data-testid='nav-dashboard']");
    s.wait_text("[data-testid='link-lost']", long, |t| {
        t == "Connection lost"
    });

    // Remove it.
    s.click("[data-testid='nav-printers']");
    s.click(&format!("{card} [data-testid='fleet-remove']"));
    s.click(&format!("{card} [data-testid='fleet-remove-yes']"));
    let deadline = Instant::now() + long;
    while s.find(&card).is_some() {
        assert!(Instant::now() < deadline, "the card stays after removing");
        std::thread::sleep(Duration::from_millis(200));
    }
    s.wait(
        "[data-testid='printer-sim'] [data-testid='selected-badge']",
        long,
    );

    s.close();
    drop(driver);
    drop(op);
    drop(camera);
    eprintln!(
        "screenshots: {} {} {} {} {}",
        printers_shot.display(),
        rename_shot.display(),
        restored_shot.display(),
        dashboard_shot.display(),
        lost_shot.display()
    );
}
