//! The crate's one error type.

/// Everything that can go wrong in the load generator or collector before or around the
/// measurement; per-connection failures are counted (`connection_drops`), not returned.
#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    /// A duration flag such as `--interval 1s` could not be read.
    #[error("invalid duration {input:?}: {reason}")]
    BadDuration { input: String, reason: &'static str },
    /// The `--server` value does not name a host and port.
    #[error("invalid server address {input:?}: {reason}")]
    BadServer { input: String, reason: &'static str },
    /// A setting is out of range (e.g. `--fps 0`).
    #[error("invalid setting --{name}: {reason}")]
    BadConfig { name: &'static str, reason: String },
    /// A file or socket operation failed; `context` says which.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// Installing the SIGINT/SIGTERM handler failed.
    #[error("cannot install handler for signal {signal}: {source}")]
    Signal {
        signal: i32,
        #[source]
        source: std::io::Error,
    },
}

impl LoadgenError {
    /// Wrap an I/O error with what we were doing.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        LoadgenError::Io {
            context: context.into(),
            source,
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = LoadgenError> = std::result::Result<T, E>;
