//! Typed errors of the library. The binary adds context at the edges (anyhow).

use std::path::PathBuf;

/// Everything that can go wrong while reading adapters or computing on them.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A safetensors file whose header or size does not hold together.
    #[error("{path}: {msg}")]
    Format { path: PathBuf, msg: String },
    /// A file that was truncated or rewritten while it was read (its results are discarded).
    #[error("{} changed while it was read", path.display())]
    Changed { path: PathBuf },
    /// Factors whose shapes do not fit the layout that was inferred for them.
    #[error("{0}")]
    Shape(String),
    #[error("no adapter '{id}'{}", suggest(.suggestions))]
    UnknownAdapter {
        id: String,
        suggestions: Vec<String>,
    },
    /// The adapter exists but cannot be used for the request (e.g. `kind` is `error`).
    #[error("{}", unusable(.id, .msg))]
    Unusable { id: String, msg: String },
    /// Talking to the Hugging Face Hub failed (see `hub::HubError`).
    #[error(transparent)]
    Hub(#[from] crate::hub::HubError),
    #[error("cancelled")]
    Cancelled,
    #[error("{0}")]
    Other(String),
}

fn suggest(s: &[String]) -> String {
    if s.is_empty() {
        String::new()
    } else {
        format!("; did you mean {}?", s.join(", "))
    }
}

/// `id: msg`, or just `msg` when it already names the adapter (an adapter given by path has the
/// path as its id, and its error names the file inside it): each message names a path once.
fn unusable(id: &str, msg: &str) -> String {
    if msg.contains(id) {
        msg.to_string()
    } else {
        format!("{id}: {msg}")
    }
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
    pub fn format(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Format {
            path: path.into(),
            msg: msg.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
