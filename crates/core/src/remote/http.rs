//! The HTTP side shared by the remote clients: one `reqwest` client per printer with connect and
//! request timeouts, TLS through rustls (ring) with the operating system's roots, and the mapping
//! of every failure to a [`PrinterError`] a user can act on — refused, timed out, TLS, 401/403
//! ("needs an API key"), malformed JSON, the server's own error message.

use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde_json::Value;
use std::sync::Once;

use crate::model::{PrinterError, PrinterResult};

use super::{RemoteOptions, Secret};

/// Installs ring as rustls' process-wide crypto provider (once; a provider installed by someone
/// else first is kept).
pub(crate) fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // ring rather than aws-lc-rs: it builds with a plain C compiler in seconds. Its provider
        // lacks the post-quantum key exchange, which printers on a LAN do not offer anyway.
        #[allow(deprecated)]
        let provider = rustls::crypto::ring::default_provider();
        let _ = provider.install_default();
    });
}

/// How a request authenticates.
#[derive(Debug, Clone, Default)]
pub(crate) enum HttpAuth {
    /// No credentials.
    #[default]
    None,
    /// `X-Api-Key: KEY` (Moonraker, OctoPrint, older PrusaLink).
    ApiKey(Secret),
    /// `Authorization: Bearer TOKEN` (Moonraker's JWT).
    Bearer(Secret),
}

/// One server's base URL and a client with its timeouts.
#[derive(Debug, Clone)]
pub(crate) struct Http {
    client: reqwest::Client,
    base: Url,
    options: RemoteOptions,
}

impl Http {
    /// A client for `base` (its path, if any, is kept as a prefix).
    pub(crate) fn new(base: Url, options: &RemoteOptions) -> PrinterResult<Self> {
        install_crypto_provider();
        let client = reqwest::Client::builder()
            .connect_timeout(options.connect_timeout)
            .timeout(options.request_timeout)
            .user_agent(concat!("Gantry/", env!("CARGO_PKG_VERSION")))
            .no_proxy()
            .build()
            .map_err(|e| PrinterError::InvalidInput(format!("cannot build an HTTP client: {e}")))?;
        Ok(Self {
            client,
            base,
            options: options.clone(),
        })
    }

    /// The base URL.
    pub(crate) fn base(&self) -> &Url {
        &self.base
    }

    /// The options.
    pub(crate) fn options(&self) -> &RemoteOptions {
        &self.options
    }

    /// `path` (starting with `/`) against the base, keeping the base's own path prefix.
    pub(crate) fn url(&self, path: &str) -> Url {
        let mut url = self.base.clone();
        let prefix = self.base.path().trim_end_matches('/');
        let (path, query) = path
            .split_once('?')
            .map_or((path, None), |(p, q)| (p, Some(q)));
        url.set_path(&format!("{prefix}{path}"));
        url.set_query(query);
        url
    }

    /// A request builder for `path` with `auth`.
    pub(crate) fn request(&self, method: Method, path: &str, auth: &HttpAuth) -> RequestBuilder {
        let req = self.client.request(method, self.url(path));
        match auth {
            HttpAuth::None => req,
            HttpAuth::ApiKey(key) => req.header("X-Api-Key", key.expose()),
            HttpAuth::Bearer(token) => req.bearer_auth(token.expose()),
        }
    }

    /// Sends `req` and maps transport failures.
    pub(crate) async fn send(&self, what: &str, req: RequestBuilder) -> PrinterResult<Response> {
        req.send()
            .await
            .map_err(|e| transport_error(self.base.as_str(), what, &e, &self.options))
    }

    /// Sends `req`, requires a 2xx status and returns the body as JSON (`Null` for an empty
    /// body, such as 204).
    pub(crate) async fn json(
        &self,
        what: &str,
        req: RequestBuilder,
        auth_given: bool,
    ) -> PrinterResult<Value> {
        let resp = self.send(what, req).await?;
        let status = resp.status();
        let body = self.body_text(what, resp).await?;
        if !status.is_success() {
            return Err(status_error(self.base.as_str(), status, &body, auth_given));
        }
        parse_json(self.base.as_str(), what, &body)
    }

    /// Sends `req`, requires a 2xx status and returns the body's bytes (a file download).
    pub(crate) async fn bytes(
        &self,
        what: &str,
        req: RequestBuilder,
        auth_given: bool,
    ) -> PrinterResult<Vec<u8>> {
        let resp = self.send(what, req).await?;
        let status = resp.status();
        let body = self.body_bytes(what, resp).await?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body);
            return Err(status_error(self.base.as_str(), status, &text, auth_given));
        }
        Ok(body)
    }

    /// The body of `resp` as bytes (with the request's own timeout still running).
    pub(crate) async fn body_bytes(&self, what: &str, resp: Response) -> PrinterResult<Vec<u8>> {
        resp.bytes()
            .await
            .map(|b| b.to_vec())
            .map_err(|e| transport_error(self.base.as_str(), what, &e, &self.options))
    }

    /// The body of `resp` as text (with the request's own timeout still running).
    pub(crate) async fn body_text(&self, what: &str, resp: Response) -> PrinterResult<String> {
        resp.text()
            .await
            .map_err(|e| transport_error(self.base.as_str(), what, &e, &self.options))
    }
}

/// A file path relative to a server's file root as URL path segments: every byte but the
/// unreserved ones and `/` percent-encoded (spaces, `#`, `?`, non-ASCII names), so that it
/// reaches the server as the name it listed.
pub(crate) fn encode_file_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.trim_start_matches('/').bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Parses a JSON body; an empty body is `Null`.
pub(crate) fn parse_json(url: &str, what: &str, body: &str) -> PrinterResult<Value> {
    if body.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(body).map_err(|e| PrinterError::Protocol {
        url: url.to_owned(),
        message: format!("{what}: malformed JSON ({e}): {}", excerpt(body)),
    })
}

/// The first 120 characters of a body, for messages.
pub(crate) fn excerpt(body: &str) -> String {
    let t = body.trim();
    match t.char_indices().nth(120) {
        Some((i, _)) => format!("{}…", &t[..i]),
        None => t.to_owned(),
    }
}

/// The error message a server put in its body: Moonraker's `{"error": {"message"}}`,
/// OctoPrint's `{"error": "…"}`, PrusaLink's `{"title", "message"}`, or the text itself.
pub(crate) fn server_message(body: &str) -> String {
    if let Ok(v) = serde_json::from_str::<Value>(body) {
        let from_json = v
            .pointer("/error/message")
            .or_else(|| v.get("error"))
            .or_else(|| v.get("message"))
            .or_else(|| v.get("title"))
            .and_then(Value::as_str);
        if let Some(m) = from_json {
            return m.to_owned();
        }
    }
    // HTML error pages: the title is the message.
    if let (Some(a), Some(b)) = (body.find("<title>"), body.find("</title>"))
        && a + 7 <= b
    {
        return body[a + 7..b].trim().to_owned();
    }
    excerpt(body)
}

/// Maps a non-2xx status to an error.
pub(crate) fn status_error(
    url: &str,
    status: StatusCode,
    body: &str,
    auth_given: bool,
) -> PrinterError {
    let message = server_message(body);
    match status.as_u16() {
        401 | 403 => PrinterError::Unauthorized {
            url: url.to_owned(),
            message: if auth_given {
                format!(
                    "the credentials were refused (HTTP {}): {message}",
                    status.as_u16()
                )
            } else {
                format!("needs an API key (HTTP {}): {message}", status.as_u16())
            },
        },
        409 => PrinterError::NotReady(message),
        code => PrinterError::Http {
            url: url.to_owned(),
            status: code,
            message,
        },
    }
}

/// Maps a reqwest failure (no HTTP status) to an error.
pub(crate) fn transport_error(
    url: &str,
    what: &str,
    e: &reqwest::Error,
    options: &RemoteOptions,
) -> PrinterError {
    if let Some(reason) = tls_reason(e) {
        return PrinterError::Tls {
            url: url.to_owned(),
            reason,
        };
    }
    if e.is_timeout() {
        let after = if e.is_connect() {
            options.connect_timeout
        } else {
            options.request_timeout
        };
        return PrinterError::Timeout {
            url: url.to_owned(),
            what: what.to_owned(),
            after,
        };
    }
    let root = root_cause(e);
    if e.is_connect() {
        return PrinterError::Unreachable {
            url: url.to_owned(),
            reason: root,
        };
    }
    if e.is_decode() || e.is_body() {
        return PrinterError::Protocol {
            url: url.to_owned(),
            message: format!("{what}: the answer broke off: {root}"),
        };
    }
    PrinterError::Unreachable {
        url: url.to_owned(),
        reason: format!("{what}: {root}"),
    }
}

/// The innermost error's text (such as "Connection refused (os error 111)").
pub(crate) fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur: &(dyn std::error::Error + 'static) = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// If a TLS failure is anywhere in the chain, its text.
pub(crate) fn tls_reason(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls.to_string());
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(tls) = inner.downcast_ref::<rustls::Error>()
        {
            return Some(tls.to_string());
        }
        cur = err.source();
    }
    // Some layers (hyper-util's connector) box the TLS error in a way that hides its type; its
    // text still names it.
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if TLS_WORDS.iter().any(|w| text.contains(w)) {
            return Some(text);
        }
        cur = err.source();
    }
    None
}

/// Phrases of rustls' and the platform verifier's errors.
const TLS_WORDS: &[&str] = &[
    "InvalidContentType",
    "corrupt message",
    "invalid peer certificate",
    "certificate",
    "HandshakeFailure",
    "received fatal alert",
    "peer is incompatible",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_the_base_prefix() {
        let base: Url = "http://10.0.0.5:7125/printer1/".parse().expect("url");
        let http = Http::new(base, &RemoteOptions::default()).expect("client");
        assert_eq!(
            http.url("/server/info?x=1").as_str(),
            "http://10.0.0.5:7125/printer1/server/info?x=1"
        );
        let base: Url = "http://octopi.local".parse().expect("url");
        let http = Http::new(base, &RemoteOptions::default()).expect("client");
        assert_eq!(
            http.url("/api/version").as_str(),
            "http://octopi.local/api/version"
        );
    }

    #[test]
    fn server_messages_are_found_in_every_shape() {
        assert_eq!(
            server_message(r#"{"error":{"code":401,"message":"Unauthorized","traceback":"…"}}"#),
            "Unauthorized"
        );
        assert_eq!(
            server_message(r#"{"error":"Printer is not operational"}"#),
            "Printer is not operational"
        );
        assert_eq!(
            server_message("<html><title>403 Forbidden</title></html>"),
            "403 Forbidden"
        );
        assert_eq!(server_message("plain"), "plain");
    }

    #[test]
    fn statuses_become_clear_errors() {
        let e = status_error("http://p", StatusCode::FORBIDDEN, "{}", false);
        assert!(e.to_string().contains("needs an API key"), "{e}");
        let e = status_error("http://p", StatusCode::UNAUTHORIZED, "{}", true);
        assert!(e.to_string().contains("credentials were refused"), "{e}");
        let e = status_error(
            "http://p",
            StatusCode::CONFLICT,
            r#"{"error":"Printer is not operational"}"#,
            true,
        );
        assert_eq!(
            e,
            PrinterError::NotReady("Printer is not operational".into())
        );
    }

    #[test]
    fn malformed_json_says_where() {
        let e = parse_json("http://p", "GET /api/version", "{\"api\": ").expect_err("bad");
        assert!(
            e.to_string()
                .starts_with("http://p: unexpected answer: GET /api/version: malformed JSON"),
            "{e}"
        );
        assert_eq!(parse_json("u", "w", "  "), Ok(Value::Null));
    }
}
