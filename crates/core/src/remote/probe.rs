//! Which printer API answers at an address a user typed: Moonraker (`GET /server/info`),
//! OctoPrint (`GET /api/version`, whose `text` names it; `GET /plugin/appkeys/probe` without a
//! key) or PrusaLink (`GET /api/version` naming PrusaLink, `GET /api/v1/info`, or a 401 with an
//! HTTP Digest challenge) — and, when none does, why: refused, timed out, TLS, or a web server
//! that is not a printer.
//!
//! The probe never fails: every outcome is a [`ProbeReport`] with one sentence for the user.

use std::time::Instant;

use reqwest::{Method, Url};
use serde::Serialize;
use serde_json::Value;

use crate::model::{BackendKind, PrinterError};

use super::http::{Http, HttpAuth, excerpt, parse_json};
use super::{Credentials, RemoteOptions};

/// One request the probe made.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeAttempt {
    /// `GET /server/info`.
    pub request: String,
    /// What came back: `HTTP 200`, `HTTP 401`, or the error.
    pub outcome: String,
}

/// What the probe found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProbeReport {
    /// The address probed.
    pub url: String,
    /// The API that answered, if any.
    pub kind: Option<BackendKind>,
    /// Its version text, such as `Moonraker v0.11.0` or `OctoPrint 1.11.8`.
    pub version: Option<String>,
    /// The API answered but wants credentials (or refused the given ones).
    pub needs_credentials: bool,
    /// One sentence for the user.
    pub message: String,
    /// The failure behind an unsuccessful probe.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Every request made, in order.
    pub attempts: Vec<ProbeAttempt>,
    /// How long the probe took, milliseconds.
    pub elapsed_ms: u64,
}

impl ProbeReport {
    /// Whether a printer API was found and the credentials (if any) were accepted.
    pub fn usable(&self) -> bool {
        self.kind.is_some() && !self.needs_credentials
    }
}

enum Answer {
    Status(u16, Option<String>, String),
    Failed(PrinterError),
}

/// Probes `url` with `credentials` (sent as an API key; none is fine).
pub async fn probe(url: &Url, credentials: &Credentials, options: &RemoteOptions) -> ProbeReport {
    let started = Instant::now();
    let mut report = ProbeReport {
        url: url.as_str().to_owned(),
        kind: None,
        version: None,
        needs_credentials: false,
        message: String::new(),
        error: None,
        attempts: Vec::new(),
        elapsed_ms: 0,
    };
    let http = match Http::new(url.clone(), options) {
        Ok(h) => h,
        Err(e) => {
            report.message = e.to_string();
            report.error = Some(e.to_string());
            return report;
        }
    };
    let auth = match credentials {
        Credentials::ApiKey { key } => HttpAuth::ApiKey(key.clone()),
        _ => HttpAuth::None,
    };
    let given = credentials.is_some();
    let get = |path: &'static str| {
        let http = &http;
        let auth = &auth;
        async move {
            let req = http.request(Method::GET, path, auth);
            match http.send(&format!("GET {path}"), req).await {
                Err(e) => Answer::Failed(e),
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let challenge = resp
                        .headers()
                        .get("www-authenticate")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    match http.body_text(&format!("GET {path}"), resp).await {
                        Ok(body) => Answer::Status(status, challenge, body),
                        Err(e) => Answer::Failed(e),
                    }
                }
            }
        }
    };
    let record = |report: &mut ProbeReport, path: &str, answer: &Answer| {
        report.attempts.push(ProbeAttempt {
            request: format!("GET {path}"),
            outcome: match answer {
                Answer::Status(s, _, _) => format!("HTTP {s}"),
                Answer::Failed(e) => e.to_string(),
            },
        });
    };

    // 1. Moonraker. A transport failure here ends the probe: every path would fail the same way.
    let answer = get("/server/info").await;
    record(&mut report, "/server/info", &answer);
    match &answer {
        Answer::Failed(e) => {
            report.message = match e {
                PrinterError::Unreachable { reason, .. } => {
                    format!("nothing answers at {url}: {reason}")
                }
                PrinterError::Timeout { after, .. } => format!(
                    "{url} did not answer within {:.1} s (wrong address, or a firewall)",
                    after.as_secs_f64()
                ),
                PrinterError::Tls { reason, .. } => format!(
                    "TLS with {url} failed: {reason} (try http://, or trust the printer's certificate)"
                ),
                other => other.to_string(),
            };
            report.error = Some(e.to_string());
            report.elapsed_ms = elapsed_ms(started);
            return report;
        }
        Answer::Status(200, _, body) => {
            if let Ok(v) = parse_json(url.as_str(), "GET /server/info", body)
                && let Some(version) = v["result"]["moonraker_version"].as_str()
            {
                let klippy = v["result"]["klippy_state"].as_str().unwrap_or("unknown");
                report.kind = Some(BackendKind::Moonraker);
                report.version = Some(format!("Moonraker {version}"));
                report.message = format!("Moonraker {version} answered (Klippy: {klippy})");
                report.elapsed_ms = elapsed_ms(started);
                return report;
            }
        }
        Answer::Status(401 | 403, _, body) if is_moonraker_error(body) => {
            report.kind = Some(BackendKind::Moonraker);
            report.needs_credentials = true;
            report.message = if given {
                "Moonraker answered, but refused the API key".into()
            } else {
                "Moonraker answered and needs an API key (or a login)".into()
            };
            report.elapsed_ms = elapsed_ms(started);
            return report;
        }
        Answer::Status(..) => {}
    }

    // 2. /api/version: OctoPrint, or PrusaLink (which copies its shape).
    let answer = get("/api/version").await;
    record(&mut report, "/api/version", &answer);
    match &answer {
        Answer::Status(200, _, body) => {
            if let Ok(v) = parse_json(url.as_str(), "GET /api/version", body) {
                let text = v["text"].as_str().unwrap_or("");
                let server = v["server"].as_str().unwrap_or("?");
                if text.starts_with("OctoPrint") {
                    report.kind = Some(BackendKind::OctoPrint);
                    report.version = Some(text.to_owned());
                    report.message = format!("{text} answered");
                } else if text.contains("Prusa") || v.get("capabilities").is_some() {
                    report.kind = Some(BackendKind::PrusaLink);
                    report.version = Some(format!("PrusaLink {server}"));
                    report.message = format!("PrusaLink {server} answered");
                }
                if report.kind.is_some() {
                    report.elapsed_ms = elapsed_ms(started);
                    return report;
                }
            }
        }
        Answer::Status(401, Some(challenge), _) if challenge.starts_with("Digest") => {
            report.kind = Some(BackendKind::PrusaLink);
            report.needs_credentials = true;
            report.message = "PrusaLink answered and needs its password (user maker, the \
                              password shown on the printer) or an API key"
                .into();
            report.elapsed_ms = elapsed_ms(started);
            return report;
        }
        Answer::Status(401 | 403, _, _) => {
            // OctoPrint refuses /api/version without a key; its appkeys probe needs none.
            let probe = get("/plugin/appkeys/probe").await;
            record(&mut report, "/plugin/appkeys/probe", &probe);
            if matches!(probe, Answer::Status(204, _, _)) {
                report.kind = Some(BackendKind::OctoPrint);
                report.needs_credentials = true;
                report.message = if given {
                    "OctoPrint answered, but refused the API key".into()
                } else {
                    "OctoPrint answered and needs an API key (request one with \
                     `gantry remote URL request-key`, or copy one from OctoPrint's settings)"
                        .into()
                };
                report.elapsed_ms = elapsed_ms(started);
                return report;
            }
        }
        _ => {}
    }

    // 3. PrusaLink's own info endpoint.
    let answer = get("/api/v1/info").await;
    record(&mut report, "/api/v1/info", &answer);
    match &answer {
        Answer::Status(200, _, body) => {
            if let Ok(v) = parse_json(url.as_str(), "GET /api/v1/info", body)
                && v.is_object()
            {
                report.kind = Some(BackendKind::PrusaLink);
                report.version = Some("PrusaLink".into());
                report.message = format!(
                    "PrusaLink answered ({})",
                    v["hostname"].as_str().unwrap_or("no hostname")
                );
                report.elapsed_ms = elapsed_ms(started);
                return report;
            }
        }
        Answer::Status(401, Some(challenge), _) if challenge.starts_with("Digest") => {
            report.kind = Some(BackendKind::PrusaLink);
            report.needs_credentials = true;
            report.message = "PrusaLink answered and needs its password".into();
            report.elapsed_ms = elapsed_ms(started);
            return report;
        }
        _ => {}
    }

    let last = report.attempts.first().map_or("", |a| a.outcome.as_str());
    report.message = format!(
        "a web server answers at {url}, but not as Moonraker, OctoPrint or PrusaLink ({last} \
         to GET /server/info)"
    );
    if let Answer::Status(_, _, body) = &answer {
        report.error = Some(format!("last answer: {}", excerpt(body)));
    }
    report.elapsed_ms = elapsed_ms(started);
    report
}

fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Moonraker's error shape: `{"error": {"code": …, "message": …}}`.
fn is_moonraker_error(body: &str) -> bool {
    serde_json::from_str::<Value>(body)
        .ok()
        .is_some_and(|v| v["error"]["code"].is_number() && v["error"]["message"].is_string())
}
