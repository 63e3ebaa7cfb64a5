//! Gantry's PrusaLink client against a server that follows PrusaLink's OpenAPI document
//! (prusa3d/Prusa-Link-Web spec/openapi.yaml): no PrusaLink runs without a Prusa printer, so
//! this test server answers the v1 endpoints the client uses, with the documented shapes and
//! status codes, behind HTTP Digest authentication (user `maker`) as the printers ask for it.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gantry_core::model::{PrintState, PrinterBackend, PrinterError, PrinterStatus};
use gantry_core::remote::prusalink::{self, PrusaLink};
use gantry_core::remote::{Credentials, RemoteOptions, parse_address, probe};
use md5::{Digest as _, Md5};
use serde_json::{Value, json};
use support::http_server::{self, Reply, Request, json as reply_json, response};

const PASSWORD: &str = "Wd4xUaNqK7pJ";
const NONCE: &str = "a1b2c3d4e5f60718";
const REALM: &str = "Printer API";

#[derive(Default)]
struct Printer {
    files: BTreeMap<String, Vec<u8>>,
    job: Option<(u64, String, &'static str, f64)>,
    last: Option<&'static str>,
    next_id: u64,
}

fn md5_hex(s: &str) -> String {
    Md5::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Checks a Digest `Authorization` header as RFC 7616 (MD5, qop=auth) defines it.
fn authorised(req: &Request) -> bool {
    let Some(h) = req
        .header("authorization")
        .and_then(|h| h.strip_prefix("Digest "))
    else {
        return false;
    };
    let field = |name: &str| {
        h.split(", ").find_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            (k.trim() == name).then(|| v.trim_matches('"').to_owned())
        })
    };
    let (Some(user), Some(uri), Some(nc), Some(cnonce), Some(resp), Some(nonce)) = (
        field("username"),
        field("uri"),
        field("nc"),
        field("cnonce"),
        field("response"),
        field("nonce"),
    ) else {
        return false;
    };
    let ha1 = md5_hex(&format!("{user}:{REALM}:{PASSWORD}"));
    let ha2 = md5_hex(&format!("{}:{uri}", req.method));
    user == "maker"
        && nonce == NONCE
        && uri == req.path
        && resp == md5_hex(&format!("{ha1}:{NONCE}:{nc}:{cnonce}:auth:{ha2}"))
}

fn handle(state: &Mutex<Printer>, req: Request) -> Reply {
    if !authorised(&req) {
        let challenge =
            format!("Digest realm=\"{REALM}\", nonce=\"{NONCE}\", qop=\"auth\", algorithm=MD5");
        return response(401, &[("WWW-Authenticate", challenge.as_str())], b"");
    }
    let mut p = state.lock().expect("state");
    let path = req.path.clone();
    match (req.method.as_str(), path.as_str()) {
        ("GET", "/api/version") => reply_json(
            200,
            &json!({"api": "2.0.0", "server": "2.1.2", "nozzle_diameter": 0.4, "text": "PrusaLink",
                    "hostname": "prusa-mk4", "capabilities": {"upload-by-put": true}}),
        ),
        ("GET", "/api/v1/info") => reply_json(
            200,
            &json!({"hostname": "prusa-mk4", "serial": "10589-3742441631225", "nozzle_diameter": 0.4,
                    "mmu": false, "min_extrusion_temp": 170}),
        ),
        ("GET", "/api/v1/storage") => reply_json(
            200,
            &json!({"storage_list": [{"type": "USB", "path": "/usb", "name": "usb",
                                       "available": true, "read_only": false, "free_space": 1_000_000}]}),
        ),
        ("GET", "/api/v1/status") => {
            let mut body = json!({
                "storage": {"path": "/usb/", "name": "usb", "read_only": false},
                "printer": {"state": "IDLE", "temp_bed": 59.8, "target_bed": 60.0, "temp_nozzle": 214.9,
                            "target_nozzle": 215.0, "axis_z": 0.2, "axis_x": 10.0, "axis_y": 20.0,
                            "flow": 100, "speed": 100, "fan_hotend": 5000, "fan_print": 3000}
            });
            if let Some((id, _, state, progress)) = &mut p.job {
                if *state == "PRINTING" {
                    *progress = (*progress + 5.0).min(99.0);
                }
                body["printer"]["state"] = json!(*state);
                body["job"] = json!({"id": *id, "progress": *progress, "time_remaining": 600,
                                     "time_printing": 30});
            } else if let Some(last) = p.last {
                body["printer"]["state"] = json!(last);
            }
            reply_json(200, &body)
        }
        ("GET", "/api/v1/job") => match &p.job {
            None => response(204, &[], b""),
            Some((id, name, state, progress)) => reply_json(
                200,
                &json!({"id": id, "state": state, "progress": progress, "time_printing": 30,
                        "file": {"name": name, "display_name": name, "path": "/usb", "size": 10}}),
            ),
        },
        ("GET", "/api/v1/files/usb") => {
            let children: Vec<Value> = p
                .files
                .iter()
                .map(|(n, d)| {
                    json!({"name": n, "display_name": n, "type": "PRINT_FILE",
                                      "size": d.len(), "m_timestamp": 1_700_000_000})
                })
                .collect();
            reply_json(
                200,
                &json!({"type": "FOLDER", "name": "usb", "ro": false, "children": children}),
            )
        }
        (method, p2) if p2.starts_with("/api/v1/files/usb/") => {
            let name = p2.trim_start_matches("/api/v1/files/usb/").to_owned();
            match method {
                "GET" => {
                    let Some(data) = p.files.get(&name) else {
                        return reply_json(
                            404,
                            &json!({"title": "Not Found", "message": "File not found"}),
                        );
                    };
                    // The details name the download by the printer's short (8.3) name, as the
                    // Buddy firmware does; two files are listed without a usable link.
                    let mut details = json!({"name": short_name(&name), "display_name": name,
                        "type": "PRINT_FILE", "size": data.len(), "m_timestamp": 1_700_000_000,
                        "refs": {"download": format!("/usb/{}", short_name(&name))},
                        "meta": {"estimated print time": 600}});
                    if name.starts_with("nolink") {
                        details["refs"] = json!({});
                    } else if name.starts_with("elsewhere") {
                        details["refs"]["download"] = json!("//other.example/usb/X.GCO");
                    }
                    reply_json(200, &details)
                }
                "PUT" => {
                    if p.files.contains_key(&name) && req.header("overwrite") != Some("?1") {
                        return reply_json(
                            409,
                            &json!({"title": "Conflict", "message": "File already exists"}),
                        );
                    }
                    p.files.insert(name.clone(), req.body.clone());
                    if req.header("print-after-upload") == Some("?1") {
                        p.next_id += 1;
                        p.job = Some((p.next_id, name, "PRINTING", 0.0));
                    }
                    response(201, &[], b"")
                }
                "POST" => {
                    if p.job.is_some() {
                        return reply_json(
                            409,
                            &json!({"title": "Conflict", "message": "Printer is busy"}),
                        );
                    }
                    if !p.files.contains_key(&name) {
                        return reply_json(
                            404,
                            &json!({"title": "Not Found", "message": "File not found"}),
                        );
                    }
                    p.next_id += 1;
                    p.job = Some((p.next_id, name, "PRINTING", 0.0));
                    response(204, &[], b"")
                }
                "DELETE" => {
                    p.files.remove(&name);
                    response(204, &[], b"")
                }
                _ => response(405, &[], b""),
            }
        }
        ("GET", p2) if p2.starts_with("/usb/") => {
            let short = p2.trim_start_matches("/usb/");
            match p.files.iter().find(|(n, _)| short_name(n) == short) {
                Some((_, data)) => {
                    response(200, &[("Content-Type", "application/octet-stream")], data)
                }
                None => reply_json(
                    404,
                    &json!({"title": "Not Found", "message": "File not found"}),
                ),
            }
        }
        (method, p2) if p2.starts_with("/api/v1/job/") => {
            let rest = p2.trim_start_matches("/api/v1/job/");
            let (id, action) = rest.split_once('/').unwrap_or((rest, ""));
            let Some(job) = p.job.as_mut().filter(|j| j.0.to_string() == id) else {
                return reply_json(
                    404,
                    &json!({"title": "Not Found", "message": "No such job"}),
                );
            };
            match (method, action, job.2) {
                ("PUT", "pause", "PRINTING") => job.2 = "PAUSED",
                ("PUT", "resume", "PAUSED") => job.2 = "PRINTING",
                ("DELETE", "", _) => {
                    p.job = None;
                    p.last = Some("STOPPED");
                }
                _ => {
                    return reply_json(
                        409,
                        &json!({"title": "Conflict", "message": "Invalid state"}),
                    );
                }
            }
            response(204, &[], b"")
        }
        _ => reply_json(
            404,
            &json!({"title": "Not Found", "message": "No such endpoint"}),
        ),
    }
}

/// The 8.3 name a Prusa printer's USB storage gives a file: `cube.bgcode` is `CUBE~1.BGC`.
fn short_name(name: &str) -> String {
    let (stem, ext) = name.rsplit_once('.').unwrap_or((name, ""));
    let stem: String = stem.chars().take(6).collect();
    let ext: String = ext.chars().take(3).collect();
    format!("{}~1.{}", stem.to_uppercase(), ext.to_uppercase())
}

async fn wait_for(client: &PrusaLink, what: &str, check: impl Fn(&PrinterStatus) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s = client.status();
        if check(&s) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: {}",
            s.summary()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_upload_print_pause_resume_cancel_with_digest() {
    let state = Arc::new(Mutex::new(Printer::default()));
    let server = {
        let state = Arc::clone(&state);
        http_server::serve(move |req| handle(&state, req)).await
    };
    let url = parse_address(&server.url()).expect("url");
    let options = RemoteOptions {
        request_timeout: Duration::from_secs(5),
        ..RemoteOptions::default()
    };

    let report = probe(&url, &Credentials::None, &options).await;
    assert!(
        report.needs_credentials && report.message.contains("PrusaLink"),
        "{report:?}"
    );
    let err = PrusaLink::connect(
        url.clone(),
        prusalink::credentials("wrong"),
        options.clone(),
    )
    .await
    .expect_err("wrong password");
    assert!(matches!(err, PrinterError::Unauthorized { .. }), "{err:?}");

    let client = PrusaLink::connect(url, prusalink::credentials(PASSWORD), options)
        .await
        .expect("digest login");
    let s = client.status();
    assert_eq!(s.print_state(), Some(PrintState::Standby));
    assert_eq!(s.f64("extruder", "target"), Some(215.0));
    assert_eq!(s.summary().position, Some(vec![10.0, 20.0, 0.2, 0.0]));
    let info = client.info().await.expect("info");
    assert_eq!(info.server_version, "PrusaLink 2.1.2");
    assert_eq!(info.hostname.as_deref(), Some("prusa-mk4"));

    let entry = client
        .file_upload("cube.gcode", b"G28\nG1 X10\n".to_vec(), false)
        .await
        .expect("upload");
    assert_eq!(entry.path, "usb/cube.gcode");
    let files = client.files_list().await.expect("list");
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].path, "usb/cube.gcode");
    assert_eq!(
        state.lock().expect("state").files["cube.gcode"],
        b"G28\nG1 X10\n"
    );

    // Downloaded through the link the file's details give (the twin takes the file this
    // way), byte for byte: binary G-code is not text.
    assert_eq!(
        client
            .file_download("usb/cube.gcode")
            .await
            .expect("download"),
        b"G28\nG1 X10\n"
    );
    let binary: Vec<u8> = b"GCDE\x01\x00\x00\x00\xff\xfe\x80"
        .iter()
        .copied()
        .chain((0..=255_u8).cycle().take(70_000))
        .collect();
    client
        .file_upload("benchy.bgcode", binary.clone(), false)
        .await
        .expect("upload binary");
    assert_eq!(
        client
            .file_download("usb/benchy.bgcode")
            .await
            .expect("download binary"),
        binary
    );
    for name in ["nolink.gcode", "elsewhere.gcode"] {
        client
            .file_upload(name, b"G28\n".to_vec(), false)
            .await
            .expect("upload");
        let err = client
            .file_download(&format!("usb/{name}"))
            .await
            .expect_err("no usable link");
        assert!(
            matches!(err, PrinterError::Protocol { .. })
                && err.to_string().contains("no download link"),
            "{err}"
        );
    }
    let err = client
        .file_download("usb/missing.gcode")
        .await
        .expect_err("missing");
    assert!(err.to_string().contains("404"), "{err}");
    for name in ["benchy.bgcode", "nolink.gcode", "elsewhere.gcode"] {
        client
            .file_delete(&format!("usb/{name}"))
            .await
            .expect("delete");
    }

    client.print_start("cube.gcode").await.expect("start");
    wait_for(&client, "printing", |s| {
        s.print_state() == Some(PrintState::Printing)
            && s.progress().unwrap_or(0.0) > 0.0
            && s.str("print_stats", "filename") == Some("usb/cube.gcode")
    })
    .await;
    let err = client.print_start("cube.gcode").await.expect_err("busy");
    assert!(
        matches!(err, PrinterError::NotReady(ref m) if m == "Printer is busy"),
        "{err:?}"
    );
    client.print_pause().await.expect("pause");
    wait_for(&client, "paused", |s| {
        s.print_state() == Some(PrintState::Paused)
    })
    .await;
    client.print_resume().await.expect("resume");
    wait_for(&client, "resumed", |s| {
        s.print_state() == Some(PrintState::Printing)
    })
    .await;
    client.print_cancel().await.expect("cancel");
    wait_for(&client, "cancelled", |s| {
        s.print_state() == Some(PrintState::Cancelled)
    })
    .await;
    let err = client.print_pause().await.expect_err("no job");
    assert!(matches!(err, PrinterError::NotReady(_)), "{err:?}");

    let err = client.gcode_script("G28").await.expect_err("no console");
    assert_eq!(err.to_string(), "PrusaLink has no G-code console");
    client.shutdown().await;
}
