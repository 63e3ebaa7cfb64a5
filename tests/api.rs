//! The local API as a client meets it: a real WebSocket on 127.0.0.1, the token check, the first
//! methods, and `gantry serve` as a separate process.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use gantry_core::api::{ApiServer, Endpoint};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{self, Message};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn call(ws: &mut Ws, id: u64, method: &str) -> Value {
    let request = json!({"jsonrpc": "2.0", "id": id, "method": method});
    ws.send(Message::text(request.to_string()))
        .await
        .expect("send");
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a reply within 10 s")
            .expect("the connection stays open")
            .expect("a valid frame");
        if let Message::Text(text) = msg {
            let reply: Value = serde_json::from_str(text.as_str()).expect("JSON");
            assert_eq!(reply["jsonrpc"], "2.0");
            assert_eq!(reply["id"], id);
            return reply;
        }
    }
}

fn http_status(err: tungstenite::Error) -> u16 {
    match err {
        tungstenite::Error::Http(resp) => resp.status().as_u16(),
        other => panic!("expected an HTTP refusal, got {other}"),
    }
}

async fn check_endpoint(endpoint: &Endpoint) {
    let (mut ws, _) = tokio_tungstenite::connect_async(endpoint.url_with_token())
        .await
        .expect("connects with the token");
    let info = call(&mut ws, 1, "server.info").await;
    assert_eq!(info["result"]["gantry_version"], env!("CARGO_PKG_VERSION"));
    let printers = call(&mut ws, 2, "printers.list").await;
    let list = printers["result"]["printers"].as_array().expect("a list");
    assert_eq!(list[0]["id"], "sim");
    assert_eq!(list[0]["name"], "Gantry simulated printer");
    for p in &list[1..] {
        assert_eq!(p["kind"], "serial");
        assert!(
            p["port"].is_string(),
            "every serial entry names its port: {p}"
        );
    }
    let unknown = call(&mut ws, 3, "printer.frobnicate").await;
    assert_eq!(unknown["error"]["code"], -32601);
    // A printer method with no printer served: 503, in words.
    let none = call(&mut ws, 4, "printer.gcode.script").await;
    assert_eq!(none["error"]["code"], 503);
    assert_eq!(none["error"]["message"], "No printer is connected");

    // Without the token, or with a wrong one, the handshake is refused before any frame.
    let refused = tokio_tungstenite::connect_async(endpoint.ws_url.clone())
        .await
        .expect_err("refused");
    assert_eq!(http_status(refused), 401);
    let wrong = format!("{}?token={}", endpoint.ws_url, "0".repeat(64));
    let refused = tokio_tungstenite::connect_async(wrong)
        .await
        .expect_err("refused");
    assert_eq!(http_status(refused), 401);
    let other_path = endpoint.url_with_token().replace("/websocket", "/other");
    let refused = tokio_tungstenite::connect_async(other_path)
        .await
        .expect_err("refused");
    assert_eq!(http_status(refused), 404);
}

#[tokio::test]
async fn in_process_server_answers_with_the_token_and_refuses_without() {
    let server = ApiServer::bind_localhost().await.expect("binds");
    assert!(server.local_addr().ip().is_loopback());
    let endpoint = server.endpoint();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    check_endpoint(&endpoint).await;

    // Shutdown closes open connections and the task ends.
    let (mut ws, _) = tokio_tungstenite::connect_async(endpoint.url_with_token())
        .await
        .expect("connects");
    stop.send(()).expect("server running");
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(msg)) = ws.next().await {
            if matches!(msg, Message::Close(_)) {
                return true;
            }
        }
        true
    })
    .await
    .expect("closed within 10 s");
    assert!(closed);
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("stops")
        .expect("no panic");
}

#[tokio::test]
async fn gantry_serve_prints_its_endpoint_and_serves() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .arg("serve")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("gantry serve starts");
    let stdout = child.stdout.take().expect("piped");
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    })
    .await
    .expect("reader")
    .expect("a line");
    let endpoint: Value = serde_json::from_str(&line).expect("one JSON line");
    let endpoint = Endpoint {
        ws_url: endpoint["ws_url"].as_str().expect("ws_url").to_owned(),
        token: endpoint["token"].as_str().expect("token").to_owned(),
    };
    assert!(
        endpoint.ws_url.starts_with("ws://127.0.0.1:"),
        "{}",
        endpoint.ws_url
    );
    assert_eq!(endpoint.token.len(), 64);
    check_endpoint(&endpoint).await;
    child.kill().expect("kill");
    child.wait().expect("reaped");
}

#[tokio::test]
async fn a_silent_connection_is_dropped_after_the_handshake_timeout() {
    use tokio::io::AsyncReadExt as _;
    let server = ApiServer::bind_localhost()
        .await
        .expect("binds")
        .with_handshake_timeout(Duration::from_millis(200));
    let addr = server.local_addr();
    let endpoint = server.endpoint();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    // A client that connects and says nothing is closed by the server…
    let mut idle = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connects");
    let mut buf = [0_u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf))
        .await
        .expect("the server closes it within 5 s");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "closed, not answered: {read:?}"
    );
    // …and the server goes on serving others.
    let (mut ws, _) = tokio_tungstenite::connect_async(endpoint.url_with_token())
        .await
        .expect("connects");
    let info = call(&mut ws, 1, "server.info").await;
    assert!(info["result"].is_object());
    stop.send(()).expect("server running");
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("stops")
        .expect("no panic");
}
