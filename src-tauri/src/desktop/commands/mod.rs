//! Tauri commands: adapters between the webview and core or the operating system, one file per
//! area. They hold no logic of their own; each returns a serialisable value or a [`CommandError`].

use serde::Serialize;

pub(crate) mod api;
pub(crate) mod twin;

/// An error as the webview receives it: `{ "kind": …, "message": … }`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub(crate) struct CommandError {
    /// A stable machine-readable kind, such as `not_found` or `spawn_failed`.
    pub(crate) kind: &'static str,
    /// A sentence for the user.
    pub(crate) message: String,
}

impl CommandError {
    /// An error of `kind` with `message`.
    pub(crate) fn new(kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}
