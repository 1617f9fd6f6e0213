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
    /// Factors whose shapes do not fit the layout that was inferred for them.
    #[error("{0}")]
    Shape(String),
    /// A module's LoRA tensors do not hold together as the layout they were read as.
    #[error("{module}: {msg}")]
    Layout { module: String, msg: String },
    #[error("no adapter '{id}'{}", suggest(.suggestions))]
    UnknownAdapter {
        id: String,
        suggestions: Vec<String>,
    },
    /// The adapter exists but cannot be used for the request (e.g. `kind` is `error`).
    #[error("{id}: {msg}")]
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
