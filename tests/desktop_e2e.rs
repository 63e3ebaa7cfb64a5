//! The desktop app end to end, as a user meets it: tauri-driver and WebKitWebDriver start the real
//! `gantry` binary under X (Xvfb in CI), the window opens on the Printers page, the web UI fetches
//! the endpoint from the shell, connects to core's WebSocket with the token, and lists the
//! simulated printer; then the Twin page starts the twin (the `gantry-twin` executable), which
//! ends with the app.
//!
//! Needs `GANTRY_TAURI_DRIVER` (the tauri-driver binary), `DISPLAY`, and WebKitWebDriver on PATH;
//! `cargo xtask test` provides all three and runs it with `--include-ignored`.

use std::path::PathBuf;
use std::time::Duration;

#[path = "support/webdriver.rs"]
mod webdriver;

#[test]
#[ignore = "needs Xvfb, WebKitWebDriver and tauri-driver; cargo xtask test runs it"]
fn the_app_opens_on_printers_and_lists_the_simulated_printer() {
    let driver = webdriver::start_driver(None);
    let s = driver.open_app(&PathBuf::from(env!("CARGO_BIN_EXE_gantry")));
    s.wait("[data-testid='page-printers']", Duration::from_secs(30));
    // The entry arrives over core's WebSocket: this proves the token hand-off and the CSP.
    let text = s.wait_text(
        "[data-testid='printer-sim']",
        Duration::from_secs(30),
        |t| !t.is_empty(),
    );
    assert!(
        text.contains("Gantry simulated printer"),
        "the entry reads: {text}"
    );
    s.screenshot("desktop-printers.png");

    // The twin: its own executable beside the app's, started from the Twin page, and ended
    // with the app.
    s.click("[data-testid='nav-twin']");
    s.click("[data-testid='twin-open-sample']");
    let started = s.wait_text(
        "[data-testid='twin-result']",
        Duration::from_secs(30),
        |t| t.contains("process id"),
    );
    let pid: u32 = started
        .split("process id")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no process id in: {started}"));
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).expect("the twin runs");
    assert_eq!(
        exe.file_name().and_then(|n| n.to_str()),
        Some("gantry-twin"),
        "the twin's process runs {}",
        exe.display()
    );
    s.screenshot("desktop-twin.png");
    s.close();
    let gone = std::time::Instant::now() + Duration::from_secs(20);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            std::time::Instant::now() < gone,
            "the twin outlived the app"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
