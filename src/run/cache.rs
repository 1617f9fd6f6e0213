//! Statistics of checkpoints already measured, kept in lorascope's own cache folder
//! (`<own cache>/runs-stats/`, never the Hugging Face cache): one JSON entry per checkpoint, named
//! by its identity (each safetensors file's path, size, mtime and header hash, and its
//! adapter_config.json's bytes), holding its deltas' statistics and its similarities to the
//! checkpoints it was compared with. Entries are written atomically (`hub::cache::write_atomic`);
//! one that does not read, parse or fit the checkpoint it names is ignored and measured again.

use crate::adapter::{fsread, Adapter};
use crate::hub::cache::{sha256_hex, write_atomic};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Bumped whenever the entry's fields or their meaning change.
const VERSION: u32 = 1;
/// An entry larger than this is not read.
const MAX_ENTRY_BYTES: u64 = 64 << 20;
/// A header larger than this is not hashed (the safetensors reader refuses it too).
const MAX_HEADER_BYTES: u64 = 100 << 20;
/// Similarities kept per entry (the previous and the last checkpoints of a few runs' states).
const MAX_NEIGHBOURS: usize = 8;

/// One delta's statistics at one checkpoint (`finite: false` leaves the numbers 0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeltaMeasure {
    pub layer: Option<usize>,
    pub target: String,
    pub expert: Option<usize>,
    pub fro_norm: f64,
    pub spectral_norm: f64,
    pub effective_rank: f64,
    pub energy_rank_99: usize,
    pub dead: bool,
    pub finite: bool,
}

/// A checkpoint's cache entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub version: u32,
    pub key: String,
    pub deltas: Vec<DeltaMeasure>,
    /// Similarity per delta (aligned with `deltas`) to the checkpoint of another key.
    pub sims: BTreeMap<String, Vec<Option<f64>>>,
}

impl Entry {
    pub fn new(key: String, deltas: Vec<DeltaMeasure>) -> Entry {
        Entry {
            version: VERSION,
            key,
            deltas,
            sims: BTreeMap::new(),
        }
    }

    /// Records the similarities to `other`, keeping at most `MAX_NEIGHBOURS` (the others go).
    pub fn set_sims(&mut self, other: &str, sims: Vec<Option<f64>>) {
        if !self.sims.contains_key(other) && self.sims.len() >= MAX_NEIGHBOURS {
            if let Some(k) = self.sims.keys().next().cloned() {
                self.sims.remove(&k);
            }
        }
        self.sims.insert(other.to_string(), sims);
    }
}

/// The identity of a checkpoint: a hex digest of each safetensors file's path, size, mtime and header
/// hash and of its adapter_config.json's bytes (its scale and ranks). None when a file cannot
/// be read.
pub fn identity(a: &Adapter) -> Option<String> {
    let mut h = Sha256::new();
    for f in &a.files {
        let md = std::fs::metadata(&f.path).ok()?;
        let mtime = md
            .modified()
            .ok()?
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_nanos();
        // The path too: a run's checkpoints share their header and size, and files written
        // within one clock tick their mtime.
        let at = std::fs::canonicalize(&f.path).unwrap_or_else(|_| f.path.clone());
        h.update(at.to_string_lossy().as_bytes());
        h.update(format!("\0{}\0{}\0{}\0", f.size, mtime, header_hash(&f.path)?).as_bytes());
    }
    let dir = if a.path.is_dir() {
        a.path.clone()
    } else {
        a.path.parent()?.to_path_buf()
    };
    let cfg = fsread::read_capped(&dir.join("adapter_config.json"), 1 << 20).unwrap_or_default();
    h.update(sha256_hex(&cfg).as_bytes());
    Some(crate::hub::cache::hex(&h.finalize()))
}

/// The sha256 of a safetensors file's 8-byte length and header.
fn header_hash(path: &Path) -> Option<String> {
    let mut f = fsread::open_regular(path).ok()?;
    let mut n = [0u8; 8];
    f.read_exact(&mut n).ok()?;
    let len = u64::from_le_bytes(n);
    if len > MAX_HEADER_BYTES {
        return None;
    }
    let mut header = Vec::with_capacity(len as usize + 8);
    header.extend_from_slice(&n);
    f.take(len).read_to_end(&mut header).ok()?;
    (header.len() as u64 == len + 8).then(|| sha256_hex(&header))
}

/// The cache folder of run statistics.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    pub fn new(dir: PathBuf) -> Cache {
        Cache { dir }
    }

    /// `<own cache>/runs-stats`, or None without a home folder.
    pub fn default_dir() -> Option<PathBuf> {
        Some(crate::adapter::catalog::own_cache_dir()?.join("runs-stats"))
    }

    fn path(&self, key: &str) -> Option<PathBuf> {
        // Keys are hex digests: anything else never names a file.
        (!key.is_empty() && key.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| self.dir.join(format!("{key}.json")))
    }

    /// The entry of `key` if it reads, parses, is of this version and names `key`.
    pub fn get(&self, key: &str) -> Option<Entry> {
        let bytes = fsread::read_capped(&self.path(key)?, MAX_ENTRY_BYTES).ok()?;
        let e: Entry = serde_json::from_slice(&bytes).ok()?;
        let sane = e.sims.values().all(|s| s.len() == e.deltas.len())
            && e.deltas.iter().all(|d| {
                [d.fro_norm, d.spectral_norm, d.effective_rank]
                    .iter()
                    .all(|x| x.is_finite() && *x >= 0.0)
            })
            && e.sims
                .values()
                .flatten()
                .flatten()
                .all(|x| (0.0..=1.0).contains(x));
        (e.version == VERSION && e.key == key && sane).then_some(e)
    }

    /// Writes an entry (atomically; a failure only means it is measured again next time).
    pub fn put(&self, e: &Entry) {
        if let (Some(p), Ok(bytes)) = (self.path(&e.key), serde_json::to_vec(e)) {
            let _ = write_atomic(&p, &bytes);
        }
    }
}
