//! What a header-only read of a remote repo brings back ([`RepoRead`]: file list, configs, the raw
//! safetensors headers), and the header cache that keeps it between runs ([`HeaderCache`]).
//!
//! The cache lives in lorascope's own cache folder (`$XDG_CACHE_HOME/lorascope/hub-headers`,
//! never the hub cache), one JSON file per repo keyed by endpoint, repo id and commit sha: a
//! commit's files never change, so a file whose sha the Hub still lists is still right. Only
//! complete reads whose headers parsed are kept (a timeout, a cut or junk leaves nothing
//! behind); a file that does not parse is ignored (and rewritten by the next read); writes are
//! atomic. The folder is lorascope's own: no link in it is followed, only files named as its
//! entries are ever removed, an entry has a size cap and the folder a bound.

use super::RepoInfo;
use crate::adapter::format::{self, Header};
use crate::adapter::fsread;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Bumped when the file format changes: older files are then ignored.
const VERSION: u32 = 1;

/// The largest entry written or read (a repo's file list, configs and headers, as JSON). The
/// largest gpt-oss header, an Unsloth per-expert LoRA on all 128 experts of gpt-oss-120b's 36
/// layers, is 2.7 MB (2.9 MB in an entry): a repo of twenty such checkpoints fits.
pub const MAX_ENTRY_BYTES: u64 = 64 << 20;

/// What the whole folder may hold by default: past it, the oldest entries are removed.
pub const MAX_CACHE_BYTES: u64 = 1 << 30;

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
    /// Whether every read succeeded (one condition for the read to be cached).
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
    /// What the folder may hold ([`MAX_CACHE_BYTES`] unless [`HeaderCache::with_bound`]).
    bound: u64,
    /// Bytes of the folder's entries: counted at this cache's first write, then kept up to date
    /// by its writes (shared by its clones), so that a scan walks the folder once.
    usage: Arc<Mutex<Option<u64>>>,
}

/// An entry found in the folder.
struct Entry {
    path: PathBuf,
    size: u64,
    modified: SystemTime,
}

impl HeaderCache {
    /// The default place: `$XDG_CACHE_HOME/lorascope/hub-headers` (else `~/.cache/…`).
    pub fn default_dir() -> Option<PathBuf> {
        Some(crate::adapter::catalog::own_cache_dir()?.join("hub-headers"))
    }

    pub fn new(dir: PathBuf, refresh: bool) -> HeaderCache {
        HeaderCache {
            dir,
            refresh,
            bound: MAX_CACHE_BYTES,
            usage: Arc::default(),
        }
    }

    /// The same cache with another bound for the whole folder.
    pub fn with_bound(mut self, bytes: u64) -> HeaderCache {
        self.bound = bytes;
        self
    }

    /// The folder of `repo`'s entries: `dir/<endpoint host_port>/<org>/<name>` (the endpoint is
    /// part of the key, as a mirror's `org/name@sha` need not be the Hub's). Each of these three
    /// must be a real folder, not a link, so that nothing is read or written outside; with
    /// `create`, missing ones are made (`mkdir` does not follow a link in its last place).
    fn repo_dir(&self, endpoint: &str, repo: &str, create: bool) -> Option<PathBuf> {
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
        // Repo ids are checked (`RepoRef`) before they get here; this only keeps the promise.
        let (org, name) = repo.split_once('/')?;
        if create {
            fs::create_dir_all(&self.dir).ok()?;
        }
        let mut dir = self.dir.clone();
        for c in [host.as_str(), org, name] {
            if matches!(c, "" | "." | "..") || c.contains(['/', '\\']) {
                return None;
            }
            dir.push(c);
            if !real_dir(&dir, create) {
                return None;
            }
        }
        Some(dir)
    }

    /// The cached read of `repo` at `sha`, if there is a usable one. The entry is opened as
    /// lorascope opens any file of a cache (a regular file, never blocking: a FIFO, a device or
    /// a link to one is refused) and read only if its size is within [`MAX_ENTRY_BYTES`].
    pub fn get(&self, endpoint: &str, repo: &str, sha: &str) -> Option<RepoRead> {
        if self.refresh || !is_commit(sha) {
            return None;
        }
        let path = self.repo_dir(endpoint, repo, false)?.join(entry_name(sha));
        // Entries are written as regular files: a link is not lorascope's, and not followed.
        if !fs::symlink_metadata(&path).ok()?.is_file() {
            return None;
        }
        let bytes = fsread::read_capped(&path, MAX_ENTRY_BYTES).ok()?;
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

    /// Keeps a complete read whose headers all parsed (the caller, `Hub::adapters_at`, keeps
    /// only those: junk headers are not cached) and of at most [`MAX_ENTRY_BYTES`], removes the
    /// repo's entries of other commits, and keeps the folder within its bound. An incomplete
    /// read, or one with bytes that are not UTF-8, is not kept. Failing to write is not an error
    /// of the scan: the cache is only a speed-up.
    pub fn put(&self, endpoint: &str, repo: &str, read: &RepoRead) {
        if !read.complete() || !is_commit(&read.info.sha) {
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
        if bytes.len() as u64 > MAX_ENTRY_BYTES.min(self.bound) {
            return;
        }
        let Some(dir) = self.repo_dir(endpoint, repo, true) else {
            return;
        };
        let keep = entry_name(&read.info.sha);
        let path = dir.join(&keep);
        let replaced = fs::symlink_metadata(&path)
            .ok()
            .filter(|m| m.is_file())
            .map_or(0, |m| m.len());
        if super::cache::write_atomic(&path, &bytes).is_err() {
            return;
        }
        // The repo's entries of other commits; nothing that is not an entry.
        let mut freed = replaced;
        for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = e.file_name();
            if name == *keep || !is_entry_name(&name) {
                continue;
            }
            // `DirEntry::metadata` does not follow a link: only regular files go.
            if let Some(md) = e.metadata().ok().filter(|m| m.is_file()) {
                if fs::remove_file(e.path()).is_ok() {
                    freed += md.len();
                }
            }
        }
        self.account(&path, bytes.len() as u64, freed);
    }

    /// Counts a write of `added` bytes that freed `freed`; past the bound, removes the oldest
    /// entries (never `written`) until the folder holds at most three quarters of it, so that
    /// the next writes do not each walk the folder again.
    fn account(&self, written: &Path, added: u64, freed: u64) {
        let mut usage = self.usage.lock().unwrap_or_else(|e| e.into_inner());
        let now = match *usage {
            Some(u) => (u + added).saturating_sub(freed),
            // The first write of this cache: the walk sees the new entry already.
            None => self.entries().iter().map(|e| e.size).sum(),
        };
        *usage = Some(if now > self.bound {
            self.evict(self.bound / 4 * 3, written)
        } else {
            now
        });
    }

    /// Removes the oldest entries (by modification time) until at most `target` bytes remain;
    /// returns what remains.
    fn evict(&self, target: u64, keep: &Path) -> u64 {
        let mut entries = self.entries();
        entries.sort_by(|a, b| (a.modified, &a.path).cmp(&(b.modified, &b.path)));
        let mut total: u64 = entries.iter().map(|e| e.size).sum();
        for e in entries.iter().filter(|e| e.path != keep) {
            if total <= target {
                break;
            }
            if fs::remove_file(&e.path).is_ok() {
                total -= e.size;
                // The repo's folder, if that was its last entry (fails when it is not empty).
                if let Some(d) = e.path.parent() {
                    let _ = fs::remove_dir(d);
                }
            }
        }
        total
    }

    /// Every entry of the folder: regular files named as entries in `<host>/<org>/<name>`, each
    /// folder a real one (links are not followed).
    fn entries(&self) -> Vec<Entry> {
        fn dirs(p: &Path) -> Vec<PathBuf> {
            fs::read_dir(p)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()
        }
        let mut out = Vec::new();
        for host in dirs(&self.dir) {
            for org in dirs(&host) {
                for name in dirs(&org) {
                    for e in fs::read_dir(&name).into_iter().flatten().flatten() {
                        if !is_entry_name(&e.file_name()) {
                            continue;
                        }
                        if let Some(md) = e.metadata().ok().filter(|m| m.is_file()) {
                            out.push(Entry {
                                path: e.path(),
                                size: md.len(),
                                modified: md.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                            });
                        }
                    }
                }
            }
        }
        out
    }
}

/// Whether `p` is a real folder (not a link to one); with `create`, a missing one is made.
fn real_dir(p: &Path, create: bool) -> bool {
    match fs::symlink_metadata(p) {
        Ok(m) => m.is_dir(),
        Err(e) if create && e.kind() == std::io::ErrorKind::NotFound => {
            let _ = fs::create_dir(p); // another scan may make it first
            fs::symlink_metadata(p).is_ok_and(|m| m.is_dir())
        }
        Err(_) => false,
    }
}

/// A commit hash as git writes them: 40 (SHA-1) to 64 (SHA-256) lowercase hex digits. Only reads
/// at such a commit are cached, so that every entry's name says it is one.
fn is_commit(sha: &str) -> bool {
    (40..=64).contains(&sha.len()) && sha.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `<sha>.json`: the name of an entry.
fn entry_name(sha: &str) -> std::ffi::OsString {
    format!("{sha}.json").into()
}

/// Whether a file name is an entry's: the only files lorascope removes from the folder.
fn is_entry_name(name: &OsStr) -> bool {
    name.to_str()
        .and_then(|n| n.strip_suffix(".json"))
        .is_some_and(is_commit)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "abc1230000000000000000000000000000000000";
    const B: &str = "def4560000000000000000000000000000000000";

    fn read() -> RepoRead {
        let json = br#"{"__metadata__":{}}"#.to_vec();
        RepoRead {
            info: RepoInfo {
                sha: A.into(),
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
        assert!(c.get(ep, "o/n", A).is_none());
        c.put(ep, "o/n", &read());
        let got = c.get(ep, "o/n", A).expect("cached");
        assert_eq!(got.info, read().info);
        let h = got.headers["a.safetensors"].as_ref().unwrap();
        assert!(h.parse(Path::new("a.safetensors")).is_ok());
        // Another endpoint, another sha: misses.
        assert!(c.get("https://huggingface.co", "o/n", A).is_none());
        assert!(c.get(ep, "o/n", B).is_none());
        // Truncated: ignored, then rewritten by the next put.
        let path = c.repo_dir(ep, "o/n", false).unwrap().join(entry_name(A));
        let full = std::fs::read(&path).unwrap();
        std::fs::write(&path, &full[..full.len() / 2]).unwrap();
        assert!(c.get(ep, "o/n", A).is_none());
        c.put(ep, "o/n", &read());
        assert!(c.get(ep, "o/n", A).is_some());
        // --refresh reads nothing.
        assert!(HeaderCache::new(tmp.path().into(), true)
            .get(ep, "o/n", A)
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
        assert!(c.get(ep, "o/n", A).is_none());
        c.put(ep, "o/n", &read());
        let mut r2 = read();
        r2.info.sha = B.into();
        c.put(ep, "o/n", &r2);
        assert!(c.get(ep, "o/n", B).is_some());
        assert!(c.get(ep, "o/n", A).is_none(), "old commit pruned");
    }
}
