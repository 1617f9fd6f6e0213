//! Typed errors of the library. The binary adds context at the edges (anyhow).

use std::path::PathBuf;
use std::time::Duration;

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
    /// Talking to the Hugging Face Hub failed.
    #[error(transparent)]
    Hub(#[from] HubError),
    #[error("cancelled")]
    Cancelled,
    /// `export` refused or could not verify what it wrote.
    #[error(transparent)]
    Export(#[from] ExportError),
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

/// Why an export did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// Parts of the source the output cannot carry (pass `--drop-unservable` to leave them out).
    #[error("the adapter has parts the output cannot carry:{}", list(.items))]
    Refused { items: Vec<Dropped> },
    #[error("nothing to export: the adapter has no delta the output can carry")]
    Nothing,
    /// `--out` is somewhere lorascope does not write.
    #[error("will not write {}: {why}", .out.display())]
    Out { out: PathBuf, why: String },
    /// The written adapter does not read back as the source's deltas (nothing was moved into place).
    #[error("the written adapter does not match its source, so it was not kept: {0}")]
    Mismatch(String),
    /// The written adapter breaks a rule of the engine it is for (nothing was moved into place).
    #[error("the written adapter would not be served as it is by {engine}, so it was not kept:{}", findings.iter().map(|f| format!("\n  {f}")).collect::<String>())]
    Unservable {
        engine: &'static str,
        findings: Vec<String>,
    },
    #[error("{0}")]
    Option(String),
}

fn list(items: &[Dropped]) -> String {
    items
        .iter()
        .map(|d| format!("\n  {}: {}", d.name, d.reason))
        .collect()
}

/// Something of the source an export does not carry, and why.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Dropped {
    pub name: String,
    pub reason: String,
}

/// What went wrong talking to the Hub.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("HF_HUB_OFFLINE is set: {0} needs the network (unset HF_HUB_OFFLINE to allow it)")]
    Offline(String),
    #[error(
        "'{0}' is not a Hub repo id (expected ORG/NAME, ORG/NAME/SUBFOLDER or ORG/NAME@REVISION)"
    )]
    BadRepoId(String),
    #[error("{url}: HTTP {status}{}", status_hint(*.status, *.with_token))]
    Status {
        url: String,
        status: u16,
        with_token: bool,
        /// The server's `Retry-After` (delay-seconds form), honoured before the next attempt.
        retry_after: Option<Duration>,
    },
    #[error("{url}: no answer, or too little of one, within {} s (timed out)", .after.as_secs_f64())]
    Timeout { url: String, after: Duration },
    /// Answers that keep coming too slowly to ever be worth waiting for: a metadata answer past
    /// its overall deadline, a download whose connections bring too little (not retried).
    #[error("{url}: too slow: {msg}")]
    TooSlow { url: String, msg: String },
    #[error("{url}: {msg}")]
    Network { url: String, msg: String },
    /// The server answered something lorascope cannot use (missing headers, unsafe names, …).
    #[error("{url}: {msg}")]
    Protocol { url: String, msg: String },
}

fn status_hint(status: u16, with_token: bool) -> &'static str {
    match (status, with_token) {
        (401 | 403, false) => " (gated or private repo: set HF_TOKEN)",
        (401 | 403, true) => " (HF_TOKEN does not grant access to this repo)",
        (404, false) => " (no such repo, revision or file; or a private repo: set HF_TOKEN)",
        (404, true) => " (no such repo, revision or file)",
        (416, _) => " (range not satisfiable)",
        (429, _) => " (rate limited)",
        (500..=599, _) => " (server error)",
        _ => "",
    }
}

impl HubError {
    /// Worth another attempt.
    pub fn is_transient(&self) -> bool {
        match self {
            HubError::Timeout { .. } | HubError::Network { .. } => true,
            HubError::Status { status, .. } => matches!(status, 408 | 429 | 500..=599),
            _ => false,
        }
    }
}
