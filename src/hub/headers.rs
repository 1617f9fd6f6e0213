//! What a header-only read of a remote repo brings back ([`RepoRead`]: file list, configs, the raw
//! safetensors headers), and the header cache that keeps it between runs ([`HeaderCache`]).
//!
//! The cache lives in lorascope's own cache folder (`$XDG_CACHE_HOME/lorascope/hub-headers`,
//! never the hub cache), one JSON file per repo keyed by endpoint, repo id and commit sha: a
//! commit's files never change, so a file whose sha the Hub still lists is still right. Only
//! complete reads are kept (a timeout or cut leaves nothing behind); a file that does not parse
//! is ignored (and rewritten by the next read); writes are atomic.

use super::RepoInfo;
use crate::adapter::format::{self, Header};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Bumped when the file format changes: older files are then ignored.
const VERSION: u32 = 1;

/// The first 8 bytes, the file size and the header bytes of one remote safetensors file: what
/// [`format::header_len`] and [`format::parse_header`] need, so that a cached header gives the
/// same result (or the same error) as a fresh read.
#[derive(Debug, Clone)]
pub struct RawHeader {
    pub len8: [u8; 8],
    pub total: u64,
    pub json: Vec<u8>,
}

impl RawHeader {
    pub fn parse(&self, path: &Path) -> Result<Header> {
        let n = format::header_len(path, self.len8, self.total)?;
        if n != self.json.len() as u64 {
            return Err(Error::format(
                path,
                "header shorter than its announced length",
            ));
        }
        format::parse_header(path, &self.json, self.total)
    }
}

/// A repo at one commit as read from the Hub, headers only.
#[derive(Debug)]
pub struct RepoRead {
    pub info: RepoInfo,
    /// `adapter_config.json` bodies by path, or why one could not be read.
    pub configs: BTreeMap<String, std::result::Result<Vec<u8>, String>>,
    /// Headers by path; a folder's files after a failed one are not read (absent here).
    pub headers: BTreeMap<String, Result<RawHeader>>,
}

impl RepoRead {
    /// Whether every read succeeded, so that the read may be cached.
    fn complete(&self) -> bool {
        self.configs.values().all(|c| c.is_ok()) && self.headers.values().all(|h| h.is_ok())
    }
}

#[derive(Serialize, Deserialize)]
struct CachedHeader {
    /// The first 8 bytes as a little-endian number.
    len8: u64,
    total: u64,
    json: String,
}

#[derive(Serialize, Deserialize)]
struct CachedRepo {
    version: u32,
    repo: String,
    sha: String,
    files: Vec<String>,
    configs: BTreeMap<String, String>,
    headers: BTreeMap<String, CachedHeader>,
}

/// Reads and writes the header cache under `dir`.
#[derive(Debug, Clone)]
pub struct HeaderCache {
    pub dir: PathBuf,
    /// `--refresh`: nothing is read from the cache, everything read is written to it.
    pub refresh: bool,
}

impl HeaderCache {
    /// The default place: `$XDG_CACHE_HOME/lorascope/hub-headers` (else `~/.cache/…`).
    pub fn default_dir() -> Option<PathBuf> {
        Some(crate::adapter::catalog::own_cache_dir()?.join("hub-headers"))
    }

    pub fn new(dir: PathBuf, refresh: bool) -> HeaderCache {
        HeaderCache { dir, refresh }
    }

    /// `dir/<endpoint host_port>/<org>/<name>/<sha>.json`; the endpoint is part of the key, as a
    /// mirror's `org/name@sha` need not be the Hub's.
    fn path(&self, endpoint: &str, repo: &str, sha: &str) -> PathBuf {
        let host: String = endpoint
            .split("://")
            .nth(1)
            .unwrap_or(endpoint)
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        // Repo ids and shas are checked (`RepoRef`, `safe_component`) before they get here.
        self.dir.join(host).join(repo).join(format!("{sha}.json"))
    }

    /// The cached read of `repo` at `sha`, if there is a usable one.
    pub fn get(&self, endpoint: &str, repo: &str, sha: &str) -> Option<RepoRead> {
        if self.refresh {
            return None;
        }
        let bytes = std::fs::read(self.path(endpoint, repo, sha)).ok()?;
        let c: CachedRepo = serde_json::from_slice(&bytes).ok()?;
        if c.version != VERSION || c.repo != repo || c.sha != sha {
            return None;
        }
        Some(RepoRead {
            info: RepoInfo {
                sha: c.sha,
                files: c.files,
            },
            configs: c
                .configs
                .into_iter()
                .map(|(k, v)| (k, Ok(v.into_bytes())))
                .collect(),
            headers: c
                .headers
                .into_iter()
                .map(|(k, h)| {
                    let raw = RawHeader {
                        len8: h.len8.to_le_bytes(),
                        total: h.total,
                        json: h.json.into_bytes(),
                    };
                    (k, Ok(raw))
                })
                .collect(),
        })
    }

    /// Keeps a complete read (an incomplete one, or one with bytes that are not UTF-8, is not
    /// kept) and removes the repo's files of other commits. Failing to write is not an error of
    /// the scan: the cache is only a speed-up.
    pub fn put(&self, endpoint: &str, repo: &str, read: &RepoRead) {
        if !read.complete() {
            return;
        }
        let text = |b: &[u8]| String::from_utf8(b.to_vec()).ok();
        let mut configs = BTreeMap::new();
        for (k, v) in &read.configs {
            let Some(t) = v.as_ref().ok().and_then(|b| text(b)) else {
                return;
            };
            configs.insert(k.clone(), t);
        }
        let mut headers = BTreeMap::new();
        for (k, h) in &read.headers {
            let Some((h, json)) = h.as_ref().ok().and_then(|h| Some((h, text(&h.json)?))) else {
                return;
            };
            let len8 = u64::from_le_bytes(h.len8);
            headers.insert(
                k.clone(),
                CachedHeader {
                    len8,
                    total: h.total,
                    json,
                },
            );
        }
        let c = CachedRepo {
            version: VERSION,
            repo: repo.into(),
            sha: read.info.sha.clone(),
            files: read.info.files.clone(),
            configs,
            headers,
        };
        let Ok(bytes) = serde_json::to_vec(&c) else {
            return;
        };
        let path = self.path(endpoint, repo, &read.info.sha);
        if super::cache::write_atomic(&path, &bytes).is_err() {
            return;
        }
        let keep = path.file_name().map(|n| n.to_owned());
        if let (Some(dir), Some(keep)) = (path.parent(), keep) {
            for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let n = e.file_name();
                if n != keep && n.to_string_lossy().ends_with(".json") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read() -> RepoRead {
        let json = br#"{"__metadata__":{}}"#.to_vec();
        RepoRead {
            info: RepoInfo {
                sha: "abc123".into(),
                files: vec!["a.safetensors".into(), "adapter_config.json".into()],
            },
            configs: [("adapter_config.json".into(), Ok(b"{\"r\": 8}".to_vec()))].into(),
            headers: [(
                "a.safetensors".into(),
                Ok(RawHeader {
                    len8: (json.len() as u64).to_le_bytes(),
                    total: 8 + json.len() as u64,
                    json,
                }),
            )]
            .into(),
        }
    }

    #[test]
    fn round_trip_and_corrupt_files() {
        let tmp = tempfile::tempdir().unwrap();
        let c = HeaderCache::new(tmp.path().into(), false);
        let ep = "http://127.0.0.1:8080";
        assert!(c.get(ep, "o/n", "abc123").is_none());
        c.put(ep, "o/n", &read());
        let got = c.get(ep, "o/n", "abc123").expect("cached");
        assert_eq!(got.info, read().info);
        let h = got.headers["a.safetensors"].as_ref().unwrap();
        assert!(h.parse(Path::new("a.safetensors")).is_ok());
        // Another endpoint, another sha: misses.
        assert!(c.get("https://huggingface.co", "o/n", "abc123").is_none());
        assert!(c.get(ep, "o/n", "def456").is_none());
        // Truncated: ignored, then rewritten by the next put.
        let path = c.path(ep, "o/n", "abc123");
        let full = std::fs::read(&path).unwrap();
        std::fs::write(&path, &full[..full.len() / 2]).unwrap();
        assert!(c.get(ep, "o/n", "abc123").is_none());
        c.put(ep, "o/n", &read());
        assert!(c.get(ep, "o/n", "abc123").is_some());
        // --refresh reads nothing.
        assert!(HeaderCache::new(tmp.path().into(), true)
            .get(ep, "o/n", "abc123")
            .is_none());
    }

    #[test]
    fn incomplete_reads_are_not_kept_and_new_commits_replace_old() {
        let tmp = tempfile::tempdir().unwrap();
        let c = HeaderCache::new(tmp.path().into(), false);
        let ep = "http://h";
        let mut r = read();
        r.headers.insert(
            "b.safetensors".into(),
            Err(Error::Other("timed out".into())),
        );
        c.put(ep, "o/n", &r);
        assert!(c.get(ep, "o/n", "abc123").is_none());
        c.put(ep, "o/n", &read());
        let mut r2 = read();
        r2.info.sha = "def456".into();
        c.put(ep, "o/n", &r2);
        assert!(c.get(ep, "o/n", "def456").is_some());
        assert!(c.get(ep, "o/n", "abc123").is_none(), "old commit pruned");
    }
}
