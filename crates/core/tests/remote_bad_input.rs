//! Bad input from the network: an address where nothing listens, a server that never answers,
//! one that stalls halfway through its answer, malformed JSON, TLS spoken to a plain server, a
//! websocket that never identifies or goes quiet. Each must end in a clear error (or a
//! reconnection) within its timeout — never a hang or a panic. Servers here are local test
//! servers that misbehave on purpose; they run in every `cargo test`.

mod support;

use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use gantry_core::model::{BackendKind, LinkState, PrinterBackend, PrinterError, PrinterEvent};
use gantry_core::remote::moonraker::Moonraker;
use gantry_core::remote::octoprint::OctoPrint;
use gantry_core::remote::{Credentials, RemoteOptions, parse_address, probe};
use support::http_server::{self, Reply, json, response};

fn quick() -> RemoteOptions {
    RemoteOptions {
        connect_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(1),
        min_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(400),
        idle_timeout: Duration::from_millis(1500),
        ..RemoteOptions::default()
    }
}

/// Runs `f` and fails the test if it takes more than `limit` (a hang).
async fn within<T>(limit: Duration, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| panic!("hung for more than {limit:?}"))
}

fn closed_port_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    drop(l);
    format!("http://127.0.0.1:{port}")
}

#[tokio::test]
async fn nothing_listening_is_refused_clearly() {
    let url = parse_address(&closed_port_url()).expect("url");
    let report = within(
        Duration::from_secs(5),
        probe(&url, &Credentials::None, &quick()),
    )
    .await;
    assert_eq!(report.kind, None);
    assert!(
        report.message.starts_with("nothing answers at"),
        "{}",
        report.message
    );
    assert!(report.message.contains("refused"), "{}", report.message);
    let err = within(
        Duration::from_secs(5),
        Moonraker::connect(url.clone(), Credentials::None, quick()),
    )
    .await
    .expect_err("refused");
    assert!(matches!(err, PrinterError::Unreachable { .. }), "{err:?}");
    let err = within(
        Duration::from_secs(5),
        OctoPrint::connect(url, Credentials::api_key("k"), quick()),
    )
    .await
    .expect_err("refused");
    assert!(matches!(err, PrinterError::Unreachable { .. }), "{err:?}");
}

#[tokio::test]
async fn a_silent_server_times_out() {
    let server = http_server::serve(|_| Reply::Stall).await;
    let url = parse_address(&server.url()).expect("url");
    let started = Instant::now();
    let report = within(
        Duration::from_secs(5),
        probe(&url, &Credentials::None, &quick()),
    )
    .await;
    assert!(
        report.message.contains("did not answer within 1.0 s"),
        "{}",
        report.message
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    let err = within(
        Duration::from_secs(5),
        OctoPrint::connect(url.clone(), Credentials::api_key("k"), quick()),
    )
    .await
    .expect_err("timeout");
    assert!(matches!(err, PrinterError::Timeout { .. }), "{err:?}");
    assert!(err.to_string().contains("timed out after 1.0 s"), "{err}");
    // The websocket handshake gets no answer either.
    let err = within(
        Duration::from_secs(5),
        Moonraker::connect(url, Credentials::None, quick()),
    )
    .await
    .expect_err("timeout");
    assert!(matches!(err, PrinterError::Timeout { .. }), "{err:?}");
}

#[tokio::test]
async fn a_server_that_stalls_mid_response_times_out() {
    let server = http_server::serve(|_| {
        Reply::StallAfter(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{\"api\": \"0.1\", \"server\""
                .to_vec(),
        )
    })
    .await;
    let url = parse_address(&server.url()).expect("url");
    let err = within(
        Duration::from_secs(5),
        OctoPrint::connect(url.clone(), Credentials::api_key("k"), quick()),
    )
    .await
    .expect_err("stalled");
    assert!(matches!(err, PrinterError::Timeout { .. }), "{err:?}");
    let report = within(
        Duration::from_secs(5),
        probe(&url, &Credentials::None, &quick()),
    )
    .await;
    assert_eq!(report.kind, None, "{report:?}");
    assert!(
        report.message.contains("did not answer"),
        "{}",
        report.message
    );
}

#[tokio::test]
async fn malformed_json_is_a_clear_error() {
    let server = http_server::serve(|_| {
        response(200, &[("Content-Type", "application/json")], b"{\"api\": ")
    })
    .await;
    let url = parse_address(&server.url()).expect("url");
    let err = within(
        Duration::from_secs(5),
        OctoPrint::connect(url.clone(), Credentials::api_key("k"), quick()),
    )
    .await
    .expect_err("malformed");
    assert!(matches!(err, PrinterError::Protocol { .. }), "{err:?}");
    assert!(err.to_string().contains("malformed JSON"), "{err}");
    // A web server that is no printer: the probe says so.
    let report = within(
        Duration::from_secs(5),
        probe(&url, &Credentials::None, &quick()),
    )
    .await;
    assert_eq!(report.kind, None);
    assert!(
        report
            .message
            .contains("but not as Moonraker, OctoPrint or PrusaLink"),
        "{}",
        report.message
    );
}

#[tokio::test]
async fn tls_to_a_plain_server_says_tls() {
    // A plain HTTP server that answers at once, before any request (as a TLS client's hello
    // gets a plain-text reply from a port that does not speak TLS).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt as _;
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = stream
                .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                .await;
        }
    });
    let url = parse_address(&format!("https://{addr}")).expect("url");
    let report = within(
        Duration::from_secs(5),
        probe(&url, &Credentials::None, &quick()),
    )
    .await;
    assert!(report.message.starts_with("TLS with"), "{}", report.message);
    let err = within(
        Duration::from_secs(5),
        Moonraker::connect(url, Credentials::None, quick()),
    )
    .await
    .expect_err("tls");
    assert!(matches!(err, PrinterError::Tls { .. }), "{err:?}");
}

#[tokio::test]
async fn the_probe_recognises_each_api_and_its_credentials() {
    let moonraker = http_server::serve(|req| match req.path.as_str() {
        "/server/info" => json(
            401,
            &serde_json::json!({"error": {"code": 401, "message": "Unauthorized", "traceback": ""}}),
        ),
        _ => json(404, &serde_json::json!({})),
    })
    .await;
    let url = parse_address(&moonraker.url()).expect("url");
    let r = probe(&url, &Credentials::None, &quick()).await;
    assert_eq!(
        (r.kind, r.needs_credentials),
        (Some(BackendKind::Moonraker), true)
    );
    assert_eq!(
        r.message,
        "Moonraker answered and needs an API key (or a login)"
    );

    let prusalink = http_server::serve(|req| match req.path.as_str() {
        "/api/version" | "/api/v1/info" => response(
            401,
            &[(
                "WWW-Authenticate",
                "Digest realm=\"Printer API\", nonce=\"abc\", qop=\"auth\"",
            )],
            b"",
        ),
        _ => response(404, &[], b""),
    })
    .await;
    let url = parse_address(&prusalink.url()).expect("url");
    let r = probe(&url, &Credentials::None, &quick()).await;
    assert_eq!(
        (r.kind, r.needs_credentials),
        (Some(BackendKind::PrusaLink), true)
    );
    assert!(r.message.contains("needs its password"), "{}", r.message);
    assert_eq!(r.attempts.len(), 2, "{:?}", r.attempts);
}

/// A websocket server: accepts the upgrade, then runs `after` on the socket.
async fn ws_server<F, Fut>(after: F) -> std::net::SocketAddr
where
    F: Fn(tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            if let Ok(ws) = tokio_tungstenite::accept_async(stream).await {
                tokio::spawn(after(ws));
            }
        }
    });
    addr
}

#[tokio::test]
async fn a_websocket_that_never_identifies_times_out() {
    let addr = ws_server(|mut ws| async move {
        // Read and ignore everything.
        while ws.next().await.is_some() {}
    })
    .await;
    let url = parse_address(&format!("http://{addr}")).expect("url");
    let err = within(
        Duration::from_secs(5),
        Moonraker::connect(url, Credentials::api_key("k"), quick()),
    )
    .await
    .expect_err("no identify");
    assert!(
        matches!(&err, PrinterError::Timeout { what, .. } if what == "server.connection.identify"),
        "{err:?}"
    );
}

#[tokio::test]
async fn garbage_frames_are_a_protocol_error() {
    use futures_util::SinkExt as _;
    let addr = ws_server(|mut ws| async move {
        if ws.next().await.is_some() {
            let _ = ws
                .send(tokio_tungstenite::tungstenite::Message::text(
                    "<<not json>>",
                ))
                .await;
        }
        while ws.next().await.is_some() {}
    })
    .await;
    let url = parse_address(&format!("http://{addr}")).expect("url");
    let err = within(
        Duration::from_secs(5),
        Moonraker::connect(url, Credentials::None, quick()),
    )
    .await
    .expect_err("garbage");
    assert!(matches!(err, PrinterError::Protocol { .. }), "{err:?}");
    assert!(err.to_string().contains("malformed JSON"), "{err}");
}

#[tokio::test]
async fn a_connection_that_goes_quiet_is_dropped_and_retried() {
    use futures_util::SinkExt as _;
    // Answers identify, then stops reading (so pings get no pong) and says nothing more.
    let addr = ws_server(|mut ws| async move {
        if let Some(Ok(msg)) = ws.next().await {
            let req: serde_json::Value =
                serde_json::from_str(msg.to_text().unwrap_or("{}")).unwrap_or_default();
            let reply = serde_json::json!({"jsonrpc": "2.0", "id": req["id"], "result": {"connection_id": 1}});
            let _ = ws
                .send(tokio_tungstenite::tungstenite::Message::text(reply.to_string()))
                .await;
        }
        std::future::pending::<()>().await;
    })
    .await;
    let url = parse_address(&format!("http://{addr}")).expect("url");
    let client = within(
        Duration::from_secs(5),
        Moonraker::connect(url, Credentials::None, quick()),
    )
    .await
    .expect("identified");
    let (_, mut events) = client.subscribe();
    let reason = within(Duration::from_secs(10), async {
        loop {
            if let Ok(PrinterEvent::Link(LinkState::Reconnecting { reason, .. })) =
                events.recv().await
            {
                break reason;
            }
        }
    })
    .await;
    assert!(
        reason.contains("timed out") || reason.contains("server.info"),
        "{reason}"
    );
    // Calls fail fast while it is down, and shutdown is prompt.
    let err = within(Duration::from_secs(3), client.gcode_script("G28"))
        .await
        .expect_err("down");
    assert!(err.is_transient(), "{err:?}");
    within(Duration::from_secs(5), client.shutdown()).await;
}
