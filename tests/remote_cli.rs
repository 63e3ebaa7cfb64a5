//! `gantry remote` and `gantry discover` as a user runs them: against a real OctoPrint (started
//! by core's peer harness) the whole job flow from the command line; without any server, clear
//! errors and no hang.

#[path = "../crates/core/tests/support/peers.rs"]
mod peers;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn gantry(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(args)
        .env_remove("GANTRY_API_KEY")
        .env_remove("GANTRY_PASSWORD")
        .output()
        .expect("gantry runs")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn nothing_there_is_a_clear_error() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", l.local_addr().expect("addr"));
    drop(l);
    let started = Instant::now();
    let out = gantry(&["remote", &url, "--timeout", "2", "status"]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("nothing answers at"), "{stderr}");
    assert!(stderr.contains("refused"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let out = gantry(&["remote", "ftp://x", "status"]);
    assert!(!out.status.success());
    assert!(text(&out).1.contains("not ftp"), "{:?}", text(&out));
}

#[test]
fn discover_lists_usb_without_the_network() {
    let out = gantry(&["discover", "--no-network", "--json"]);
    assert!(out.status.success(), "{:?}", text(&out));
    let v: serde_json::Value = serde_json::from_str(&text(&out).0).expect("JSON");
    assert_eq!(v["network"], serde_json::json!([]));
    assert!(v["usb"].is_array());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs OctoPrint from PyPI; cargo xtask test installs it"]
async fn the_job_flow_from_the_command_line() {
    let op = peers::OctoPrint::start().await;
    let url = op.url.clone();
    let key = op.api_key.clone();
    let run = move |args: Vec<String>| {
        let url = url.clone();
        let key = key.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let mut all = vec!["remote".to_owned(), url, "--api-key".to_owned(), key];
                all.extend(args);
                let refs: Vec<&str> = all.iter().map(String::as_str).collect();
                gantry(&refs)
            })
            .await
            .expect("join")
        }
    };
    let args = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();

    // Probe, with and without the key.
    let out = gantry(&["remote", &op.url, "probe"]);
    assert!(out.status.success());
    assert!(
        text(&out)
            .0
            .contains("OctoPrint answered and needs an API key"),
        "{:?}",
        text(&out)
    );
    let out = run(args(&["probe"])).await;
    assert_eq!(text(&out).0.trim(), "OctoPrint 1.11.8 answered");

    // A wrong key: refused, and the key is not echoed.
    let out = gantry(&["remote", &op.url, "--api-key", "NOTTHEKEY", "status"]);
    assert!(!out.status.success());
    let (_, stderr) = text(&out);
    assert!(stderr.contains("refused"), "{stderr}");
    assert!(!stderr.contains("NOTTHEKEY"), "{stderr}");

    let out = run(args(&[
        "connect",
        "--port",
        "VIRTUAL",
        "--baudrate",
        "115200",
    ]))
    .await;
    assert!(out.status.success(), "{:?}", text(&out));
    let out = run(args(&["gcode", "M104 S50"])).await;
    assert!(out.status.success(), "{:?}", text(&out));

    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gcode/superslicer-2.3.56_klipper_arcwelder.gcode");
    let out = run(vec!["upload".into(), file.display().to_string()]).await;
    assert!(out.status.success(), "{:?}", text(&out));
    assert!(
        text(&out)
            .0
            .contains("uploaded superslicer-2.3.56_klipper_arcwelder.gcode")
    );
    let out = run(args(&[
        "print",
        "superslicer-2.3.56_klipper_arcwelder.gcode",
    ]))
    .await;
    assert!(out.status.success(), "{:?}", text(&out));

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = run(args(&["--json", "status"])).await;
        assert!(out.status.success(), "{:?}", text(&out));
        let v: serde_json::Value = serde_json::from_str(&text(&out).0).expect("JSON");
        if v["summary"]["print_state"] == "printing"
            && v["summary"]["progress"].as_f64() > Some(0.0)
        {
            assert_eq!(v["info"]["kind"], "octoprint");
            break;
        }
        assert!(Instant::now() < deadline, "not printing: {v}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let out = run(args(&["status"])).await;
    let (stdout, _) = text(&out);
    assert!(stdout.contains("job: printing superslicer"), "{stdout}");
    assert!(stdout.contains("extruder:"), "{stdout}");
    for cmd in ["cancel"] {
        let out = run(args(&[cmd])).await;
        assert!(out.status.success(), "{cmd}: {:?}", text(&out));
    }
    let out = run(args(&["history"])).await;
    assert!(!out.status.success());
    assert!(
        text(&out).1.contains("OctoPrint has no job history"),
        "{:?}",
        text(&out)
    );
}
