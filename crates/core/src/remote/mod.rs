//! Remote printers: clients for Moonraker, OctoPrint and PrusaLink, each a
//! [`PrinterBackend`](crate::model::PrinterBackend) that keeps a [`StatusHub`](crate::model::StatusHub)
//! of Klipper's status objects current, and the probe that finds out which API answers at an
//! address a user typed.
//!
//! - [`moonraker`]: websocket JSON-RPC (`server.connection.identify`, `printer.objects.subscribe`
//!   with `notify_status_update`, G-code and its responses, print control, files, history,
//!   webcams), API key or JWT login with refresh, Moonraker's Klippy start-up states, and
//!   reconnection with backoff.
//! - [`octoprint`]: REST with `X-Api-Key` (and the application-keys request flow that the user
//!   approves in OctoPrint), the printer connection, job control, uploads, temperatures, and its
//!   push socket for live state.
//! - [`prusalink`]: PrusaLink's v1 API (status, upload, start, job control).
//! - [`probe`]: which of them answers at an address, or why nothing does.
//!
//! Every network call has a timeout ([`RemoteOptions`]); every failure is a
//! [`PrinterError`](crate::model::PrinterError) that says what happened (refused, timed out, TLS,
//! "needs an API key", malformed answer). Credentials are [`Secret`]s: their `Debug` and
//! `Display` print `***`, so they never reach a log.

pub(crate) mod http;
pub mod moonraker;
pub mod octoprint;
pub mod probe;
pub mod prusalink;
mod ws;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::{BackendKind, PrinterBackend, PrinterError, PrinterResult};

pub use probe::{ProbeReport, probe};
pub use reqwest::Url;

/// A credential: printed as `***` by `Debug` and `Display`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a credential.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The credential itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// How Gantry authenticates with a remote server.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Credentials {
    /// None (a Moonraker that trusts this address; a server without access control).
    #[default]
    None,
    /// An API key: Moonraker's `X-Api-Key`, an OctoPrint application key, PrusaLink's key.
    ApiKey {
        /// The key.
        key: Secret,
    },
    /// A user name and password: Moonraker's JWT login (`access.login`, then refreshed).
    Login {
        /// The user.
        username: String,
        /// The password.
        password: Secret,
    },
}

impl Credentials {
    /// An API key.
    pub fn api_key(key: impl Into<String>) -> Self {
        Self::ApiKey {
            key: Secret::new(key),
        }
    }

    /// Whether any credential is given.
    pub fn is_some(&self) -> bool {
        !matches!(self, Self::None)
    }
}

/// Timeouts and limits for one remote printer.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteOptions {
    /// Opening a TCP connection (and TLS).
    pub connect_timeout: Duration,
    /// One ordinary request, from sending it to the last byte of the answer.
    pub request_timeout: Duration,
    /// A G-code script, which returns only when the printer has run it (M109 waits for heat).
    pub gcode_timeout: Duration,
    /// An upload, whole.
    pub upload_timeout: Duration,
    /// The first reconnection delay; it doubles per failure up to `max_backoff`.
    pub min_backoff: Duration,
    /// The longest reconnection delay.
    pub max_backoff: Duration,
    /// A live connection with no message for this long is taken as dead (pings go out at a
    /// third of it).
    pub idle_timeout: Duration,
    /// The name Gantry gives itself (Moonraker's `client_name`, OctoPrint's app name).
    pub client_name: String,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(15),
            gcode_timeout: Duration::from_secs(30 * 60),
            upload_timeout: Duration::from_secs(10 * 60),
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(30),
            client_name: "Gantry".to_owned(),
        }
    }
}

/// A backend's connection task, stopped by raising the backend's shutdown signal.
pub(crate) struct BackendTask(std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>);

impl BackendTask {
    pub(crate) fn new(task: tokio::task::JoinHandle<()>) -> Self {
        Self(std::sync::Mutex::new(Some(task)))
    }

    /// Raises `shutdown` and waits for the task: it sees the signal at its next await; one
    /// stuck in a request is aborted after 2 s. Later calls return at once.
    pub(crate) async fn stop(&self, shutdown: &tokio::sync::watch::Sender<bool>) {
        let _ = shutdown.send(true);
        let task = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(mut task) = task
            && tokio::time::timeout(Duration::from_secs(2), &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }
}

/// Resolves once `shutdown` holds `true` (at once if it already does; a lost sender counts as
/// shutdown).
pub(crate) async fn stopped(shutdown: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Parses what a user typed as a printer's address: a URL (`http://octopi.local`,
/// `https://10.0.0.5:7125/printer`), or a host with an optional port (`10.0.0.5`,
/// `voron.local:7125`, `[fe80::1]:80`), which gets `http://`.
///
/// # Errors
/// [`PrinterError::InvalidInput`] when it is not an address, or names a scheme other than
/// http(s).
pub fn parse_address(text: &str) -> PrinterResult<Url> {
    let t = text.trim();
    if t.is_empty() {
        return Err(PrinterError::InvalidInput("the address is empty".into()));
    }
    let with_scheme = if t.contains("://") {
        t.to_owned()
    } else {
        format!("http://{t}")
    };
    let url = Url::parse(&with_scheme)
        .map_err(|e| PrinterError::InvalidInput(format!("'{t}' is not an address: {e}")))?;
    match url.scheme() {
        "http" | "https" => {}
        other => {
            return Err(PrinterError::InvalidInput(format!(
                "'{t}': Gantry talks to printers over http or https, not {other}"
            )));
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(PrinterError::InvalidInput(format!("'{t}' names no host")));
    }
    Ok(url)
}

/// Connects to the printer at `url` with the backend `kind` says (use [`probe`] to find it).
/// Returns once the first connection is up, so a wrong address or key fails here.
///
/// # Errors
/// Whatever the first connection met.
pub async fn connect(
    kind: BackendKind,
    url: Url,
    credentials: Credentials,
    options: RemoteOptions,
) -> PrinterResult<Arc<dyn PrinterBackend>> {
    Ok(match kind {
        BackendKind::Moonraker => {
            Arc::new(moonraker::Moonraker::connect(url, credentials, options).await?)
        }
        BackendKind::OctoPrint => {
            Arc::new(octoprint::OctoPrint::connect(url, credentials, options).await?)
        }
        BackendKind::PrusaLink => {
            Arc::new(prusalink::PrusaLink::connect(url, credentials, options).await?)
        }
        BackendKind::Local => {
            return Err(PrinterError::InvalidInput(
                "the local printer is not a remote one".into(),
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let c = Credentials::api_key("ABCDEF0123");
        assert!(!format!("{c:?}").contains("ABCDEF"));
        let c = Credentials::Login {
            username: "me".into(),
            password: Secret::new("hunter2"),
        };
        assert_eq!(
            format!("{c:?}"),
            "Login { username: \"me\", password: *** }"
        );
    }

    #[test]
    fn addresses_parse_as_users_type_them() {
        assert_eq!(
            parse_address("10.0.0.5").expect("ok").as_str(),
            "http://10.0.0.5/"
        );
        assert_eq!(
            parse_address(" voron.local:7125 ").expect("ok").as_str(),
            "http://voron.local:7125/"
        );
        assert_eq!(
            parse_address("https://octopi.local/octo/")
                .expect("ok")
                .as_str(),
            "https://octopi.local/octo/"
        );
        assert_eq!(
            parse_address("[fe80::1]:80").expect("ok").as_str(),
            "http://[fe80::1]/"
        );
        assert!(
            parse_address("ftp://x")
                .expect_err("scheme")
                .to_string()
                .contains("not ftp")
        );
        assert!(parse_address("").is_err());
        assert!(parse_address("http://").is_err());
        assert!(parse_address("exa mple").is_err());
    }
}
