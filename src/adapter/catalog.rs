//! Where adapters are looked for, and finding one by id or path: the hub cache, the demo cache
//! (when it exists) and named paths, with the closest known ids when nothing matches.

use crate::adapter::discovery::{self, ScanRequest};
use crate::adapter::layout::LayoutOptions;
use crate::adapter::{closest, Adapter, Source};
use crate::error::Error;
use std::path::{Path, PathBuf};

/// Written last into the demo cache: a demo folder without it is incomplete.
pub const DEMO_MARKER: &str = ".lorascope-demo-complete";

/// The demo's own folder: `$XDG_CACHE_HOME/lorascope/demo-hub` or `~/.cache/lorascope/demo-hub`.
/// Never inside the Hugging Face cache, which lorascope only reads.
pub fn demo_dir() -> Option<PathBuf> {
    Some(own_cache_dir()?.join("demo-hub"))
}

/// lorascope's own cache folder (demo cache, Hub header cache): `$XDG_CACHE_HOME/lorascope`, else
/// `~/.cache/lorascope`. Never the Hugging Face cache.
pub fn own_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("lorascope"))
}

/// Whether `dir` holds a demo cache written to the end.
pub fn demo_is_complete(dir: &Path) -> bool {
    dir.join(DEMO_MARKER).is_file()
}

/// Where adapters are looked for: the hub cache (resolved as huggingface_hub does, or named).
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub cache: Option<PathBuf>,
    /// The cache was named (`--cache`), not found from the environment.
    pub explicit_cache: bool,
}

impl Catalog {
    /// The sources of the cache and of `paths` (nothing read yet).
    pub fn sources(&self, paths: &[PathBuf]) -> Vec<Source> {
        discovery::sources(&ScanRequest {
            cache: self.cache.clone(),
            paths: paths.to_vec(),
            layout: LayoutOptions::default(),
        })
    }

    /// All sources: the cache, then the demo cache when it exists (its ids never clash).
    fn lookup_sources(&self) -> Vec<Source> {
        let mut src = self
            .cache
            .as_deref()
            .map(discovery::discover_cache)
            .unwrap_or_default();
        if let Some(d) = demo_dir().filter(|d| demo_is_complete(d)) {
            if self.cache.as_deref() != Some(d.as_path()) {
                src.extend(discovery::discover_cache(&d));
            }
        }
        src
    }

    /// The caches searched for a base model: the hub cache, then the demo cache when complete.
    pub fn roots(&self) -> Vec<PathBuf> {
        let mut r: Vec<PathBuf> = self.cache.iter().cloned().collect();
        if let Some(d) = demo_dir().filter(|d| demo_is_complete(d)) {
            if !r.contains(&d) {
                r.push(d);
            }
        }
        r
    }

    /// Finds one adapter by id or path, reading only its headers.
    pub fn find(&self, id: &str, layout: LayoutOptions) -> Result<Adapter, Error> {
        let path = Path::new(id);
        if path.exists() {
            let src = discovery::discover_path(path);
            let pick = src
                .iter()
                .find(|s| s.id == id || s.path == path)
                .or_else(|| src.first());
            if let Some(s) = pick {
                return Ok(Adapter::load(s, layout));
            }
        }
        let src = self.lookup_sources();
        let exact = src
            .iter()
            .find(|s| s.id == id)
            .or_else(|| src.iter().find(|s| s.id.eq_ignore_ascii_case(id)));
        match exact {
            Some(s) => Ok(Adapter::load(s, layout)),
            None => Err(Error::UnknownAdapter {
                id: id.to_string(),
                suggestions: closest(id, src.iter().map(|s| s.id.as_str())),
            }),
        }
    }

    /// Finds an adapter that can be computed on (not an error, has deltas or full tensors).
    pub fn find_usable(&self, id: &str, layout: LayoutOptions) -> Result<Adapter, Error> {
        let a = self.find(id, layout)?;
        if let Some(e) = &a.error {
            return Err(Error::Unusable {
                id: a.id.clone(),
                msg: e.clone(),
            });
        }
        Ok(a)
    }
}
