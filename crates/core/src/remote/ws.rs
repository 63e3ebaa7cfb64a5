//! Opening a WebSocket to a printer's server with the same timeouts, TLS and error mapping as
//! the HTTP side.

use std::sync::Arc;

use reqwest::Url;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::model::{PrinterError, PrinterResult};

use super::RemoteOptions;
use super::http::{install_crypto_provider, root_cause, tls_reason};

/// A client WebSocket.
pub(crate) type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The ws:// or wss:// URL of `path` on the server at `base` (http → ws, https → wss).
pub(crate) fn ws_url(base: &Url, path: &str) -> Url {
    let mut url = base.clone();
    let scheme = if base.scheme() == "https" {
        "wss"
    } else {
        "ws"
    };
    // http→ws and https→wss are both "special" schemes, so set_scheme accepts them.
    let _ = url.set_scheme(scheme);
    let prefix = base.path().trim_end_matches('/');
    url.set_path(&format!("{prefix}{path}"));
    url.set_query(None);
    url
}

/// Connects within the connect timeout, with the operating system's roots for wss.
pub(crate) async fn connect(
    url: &Url,
    headers: &[(&str, &str)],
    options: &RemoteOptions,
) -> PrinterResult<Socket> {
    let shown = url.as_str().to_owned();
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| PrinterError::InvalidInput(format!("{shown}: {e}")))?;
    for (k, v) in headers {
        let value = v
            .parse()
            .map_err(|_| PrinterError::InvalidInput(format!("header {k} is not valid")))?;
        let name: tokio_tungstenite::tungstenite::http::HeaderName = k
            .parse()
            .map_err(|_| PrinterError::InvalidInput(format!("header name {k} is not valid")))?;
        request.headers_mut().insert(name, value);
    }
    let connector = if url.scheme() == "wss" {
        install_crypto_provider();
        let config = tls_config().map_err(|reason| PrinterError::Tls {
            url: shown.clone(),
            reason,
        })?;
        Some(Connector::Rustls(Arc::new(config)))
    } else {
        None
    };
    let attempt = tokio_tungstenite::connect_async_tls_with_config(request, None, true, connector);
    match tokio::time::timeout(options.connect_timeout, attempt).await {
        Err(_) => Err(PrinterError::Timeout {
            url: shown,
            what: "opening the websocket".into(),
            after: options.connect_timeout,
        }),
        Ok(Ok((socket, _response))) => Ok(socket),
        Ok(Err(e)) => Err(ws_error(&shown, e)),
    }
}

fn tls_config() -> Result<rustls::ClientConfig, String> {
    use rustls_platform_verifier::BuilderVerifierExt as _;
    Ok(rustls::ClientConfig::builder()
        .with_platform_verifier()
        .map_err(|e| e.to_string())?
        .with_no_client_auth())
}

/// Maps a tungstenite error to a user-facing error.
pub(crate) fn ws_error(url: &str, e: tokio_tungstenite::tungstenite::Error) -> PrinterError {
    use tokio_tungstenite::tungstenite::Error as E;
    if let Some(reason) = tls_reason(&e) {
        return PrinterError::Tls {
            url: url.to_owned(),
            reason,
        };
    }
    match e {
        E::Http(resp) => {
            let status = resp.status().as_u16();
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            match status {
                401 | 403 => PrinterError::Unauthorized {
                    url: url.to_owned(),
                    message: format!("the websocket was refused (HTTP {status})"),
                },
                _ => PrinterError::Http {
                    url: url.to_owned(),
                    status,
                    message: format!(
                        "the websocket was refused: {}",
                        super::http::server_message(&body)
                    ),
                },
            }
        }
        E::Io(io) => PrinterError::Unreachable {
            url: url.to_owned(),
            reason: root_cause(&io),
        },
        E::Tls(t) => PrinterError::Tls {
            url: url.to_owned(),
            reason: t.to_string(),
        },
        other => PrinterError::Protocol {
            url: url.to_owned(),
            message: format!("websocket: {other}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn websocket_urls_follow_the_scheme_and_prefix() {
        let base: Url = "http://10.0.0.5:7125/".parse().expect("url");
        assert_eq!(
            ws_url(&base, "/websocket").as_str(),
            "ws://10.0.0.5:7125/websocket"
        );
        let base: Url = "https://octopi.local/octo/".parse().expect("url");
        assert_eq!(
            ws_url(&base, "/sockjs/websocket").as_str(),
            "wss://octopi.local/octo/sockjs/websocket"
        );
    }
}
