//! Finding adapters: the Hugging Face cache (huggingface_hub's conventions) and named paths.

use crate::adapter::{Adapter, Source};
use crate::layout::LayoutOptions;
use rayon::prelude::*;
use std::fs;
use std::path::{Path, PathBuf};

/// How deep below a named folder (or a repo snapshot) adapters are looked for.
pub const MAX_DEPTH: usize = 4;

/// The hub cache folder as huggingface_hub resolves it, from an environment lookup.
/// Order: `HF_HUB_CACHE`, `HUGGINGFACE_HUB_CACHE`, `HF_HOME/hub`,
/// `XDG_CACHE_HOME/huggingface/hub`, `~/.cache/huggingface/hub`.
pub fn cache_root_with(env: impl Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let get = |k: &str| env(k).filter(|v| !v.is_empty());
    if let Some(v) = get("HF_HUB_CACHE").or_else(|| get("HUGGINGFACE_HUB_CACHE")) {
        return Some(expand_home(&v, &env));
    }
    if let Some(v) = get("HF_HOME") {
        return Some(expand_home(&v, &env).join("hub"));
    }
    if let Some(v) = get("XDG_CACHE_HOME") {
        return Some(expand_home(&v, &env).join("huggingface").join("hub"));
    }
    get("HOME").map(|h| {
        PathBuf::from(h)
            .join(".cache")
            .join("huggingface")
            .join("hub")
    })
}

fn expand_home(v: &str, env: &impl Fn(&str) -> Option<String>) -> PathBuf {
    match (v.strip_prefix("~/"), env("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(v),
    }
}

/// The cache folder: `explicit` (from `--cache`), else the environment.
pub fn cache_root(explicit: Option<&Path>) -> Option<PathBuf> {
    explicit
        .map(Path::to_path_buf)
        .or_else(|| cache_root_with(|k| std::env::var(k).ok()))
}

/// `models--ORG--NAME` → `ORG/NAME` (huggingface_hub replaces `/` with `--`).
pub fn repo_id_from_folder(name: &str) -> Option<String> {
    name.strip_prefix("models--").map(|r| r.replace("--", "/"))
}

/// Every model repo of a cache, sorted by folder name.
pub fn discover_cache(root: &Path) -> Vec<Source> {
    let mut out = Vec::new();
    let entries = match sorted_entries(root) {
        Ok(e) => e,
        Err(_) => return out, // no cache at all is not an error
    };
    for repo in entries {
        // A name that is not UTF-8 is listed lossily rather than skipped.
        let name = repo
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let Some(id) = repo_id_from_folder(&name) else {
            continue;
        };
        // A repo folder may be a link (a cache spread over disks); below it, links are not followed.
        if !repo.is_dir() {
            continue;
        }
        match snapshot_of(&repo) {
            Ok((rev, snap)) => {
                let found = collect(&snap, &id, Some(rev.clone()), 0, &mut out);
                if !found {
                    out.push(no_safetensors(&id, &snap, Some(rev)));
                }
            }
            Err(msg) => out.push(problem_source(&id, &repo, msg)),
        }
    }
    out
}

/// The snapshot `refs/main` points to, else the newest one.
fn snapshot_of(repo: &Path) -> Result<(String, PathBuf), String> {
    let snaps = repo.join("snapshots");
    let refs_main = repo.join("refs").join("main");
    match crate::fsread::read_regular(&refs_main) {
        Ok(bytes) => {
            let rev = String::from_utf8_lossy(&bytes).trim().to_string();
            if !is_revision_name(&rev) {
                return Err(format!(
                    "{} names '{}', not a snapshot: a revision must be a plain folder name \
                     inside snapshots/",
                    refs_main.display(),
                    rev.escape_debug()
                ));
            }
            let dir = snaps.join(&rev);
            if real_dir(&dir) {
                return Ok((rev, dir));
            }
        }
        Err(crate::Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.to_string()),
    }
    let newest = fs::read_dir(&snaps)
        .map_err(|e| format!("cannot read {}: {e}", snaps.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| real_dir(&e.path()))
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok());
    match newest {
        Some(e) => Ok((e.file_name().to_string_lossy().into_owned(), e.path())),
        None => Err("no snapshot in the cache (download incomplete?)".into()),
    }
}

/// A revision as `refs/main` may name it: one plain path component (huggingface_hub writes a
/// commit hash), so that joining it to `snapshots/` stays inside.
fn is_revision_name(rev: &str) -> bool {
    !rev.is_empty()
        && rev != "."
        && rev != ".."
        && !rev.contains(['/', '\\', '\0'])
        && Path::new(rev).is_relative()
}

/// The one walking rule: only real folders are entered. huggingface_hub's snapshots hold real
/// folders and symlinked files (into `blobs/`), so a symlinked folder is never needed, and
/// following one could loop or fan out (k links to `.` give k^depth paths).
fn real_dir(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok_and(|m| m.is_dir())
}

/// A folder the walk descends into: a real folder, not hidden.
fn walkable(p: &Path) -> bool {
    real_dir(p)
        && !p
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
}

fn sorted_entries(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .collect();
    v.sort();
    Ok(v)
}

fn problem_source(id: &str, path: &Path, msg: String) -> Source {
    Source {
        id: id.to_string(),
        path: path.to_path_buf(),
        dir: path.to_path_buf(),
        files: vec![],
        revision: None,
        problem: Some(msg),
        other_files: vec![],
    }
}

fn no_safetensors(id: &str, dir: &Path, revision: Option<String>) -> Source {
    let mut other = Vec::new();
    walk_names(dir, "", 0, &mut other);
    other.sort();
    other.truncate(8);
    Source {
        id: id.to_string(),
        path: dir.to_path_buf(),
        dir: dir.to_path_buf(),
        files: vec![],
        revision,
        problem: None,
        other_files: other,
    }
}

/// Weight files other than safetensors (`.bin`, `.pt`, …), named in the no-safetensors note.
pub fn is_weight_file(name: &str) -> bool {
    [".bin", ".pt", ".pth", ".ckpt", ".gguf"]
        .iter()
        .any(|ext| name.ends_with(ext))
}

/// Names of weight-like files (e.g. `.bin`, `.pt`) under `dir`, for the no-safetensors note.
fn walk_names(dir: &Path, prefix: &str, depth: usize, out: &mut Vec<String>) {
    let Ok(entries) = sorted_entries(dir) else {
        return;
    };
    for p in entries {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if depth < MAX_DEPTH && walkable(&p) {
            walk_names(&p, &format!("{prefix}{name}/"), depth + 1, out);
        } else if is_weight_file(&name) {
            out.push(format!("{prefix}{name}"));
        }
    }
}

/// Adds `dir` (if it holds an adapter) and adapter folders below it. Returns whether any was found.
fn collect(dir: &Path, id: &str, rev: Option<String>, depth: usize, out: &mut Vec<Source>) -> bool {
    let entries = match sorted_entries(dir) {
        Ok(e) => e,
        Err(e) => {
            out.push(problem_source(
                id,
                dir,
                format!("cannot read folder {}: {e}", dir.display()),
            ));
            return true;
        }
    };
    let files: Vec<PathBuf> = entries
        .iter()
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .cloned()
        .collect();
    let has_config = entries.iter().any(|p| p.ends_with("adapter_config.json"));
    let mut found = false;
    if !files.is_empty() || has_config {
        out.push(Source {
            id: id.to_string(),
            path: dir.to_path_buf(),
            dir: dir.to_path_buf(),
            files,
            revision: rev.clone(),
            problem: None,
            other_files: vec![],
        });
        if has_config && out.last().is_some_and(|s| s.files.is_empty()) {
            let last = out.pop().expect("just pushed");
            out.push(no_safetensors(&last.id, dir, rev.clone()));
        }
        found = true;
    }
    if depth >= MAX_DEPTH {
        return found;
    }
    for sub in entries {
        let name = sub
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if walkable(&sub) {
            found |= collect(&sub, &format!("{id}/{name}"), rev.clone(), depth + 1, out);
        }
    }
    found
}

/// Sources for a path named on the command line: a `.safetensors` file, an adapter folder,
/// a folder of adapter folders, or a whole hub cache.
pub fn discover_path(path: &Path) -> Vec<Source> {
    let id = path.display().to_string();
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) => return vec![problem_source(&id, path, format!("cannot open {id}: {e}"))],
    };
    if meta.is_file() {
        if path.extension().is_some_and(|x| x == "safetensors") {
            let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
            return vec![Source {
                id,
                path: path.to_path_buf(),
                dir,
                files: vec![path.to_path_buf()],
                revision: None,
                problem: None,
                other_files: vec![],
            }];
        }
        return vec![problem_source(
            &id,
            path,
            format!("{id} is not a .safetensors file or a folder"),
        )];
    }
    let is_cache = sorted_entries(path)
        .map(|e| {
            e.iter().any(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("models--"))
            })
        })
        .unwrap_or(false);
    if is_cache {
        return discover_cache(path);
    }
    let mut out = Vec::new();
    if !collect(path, &id, None, 0, &mut out) {
        out.push(no_safetensors(&id, path, None));
    }
    out
}

/// What to scan.
#[derive(Debug, Clone, Default)]
pub struct ScanRequest {
    /// The cache folder; None when there is none (no `--cache`, no HOME).
    pub cache: Option<PathBuf>,
    pub paths: Vec<PathBuf>,
    pub layout: LayoutOptions,
}

/// All sources of a request: the cache's repos, then each path's.
pub fn sources(req: &ScanRequest) -> Vec<Source> {
    let mut src = req.cache.as_deref().map(discover_cache).unwrap_or_default();
    for p in &req.paths {
        src.extend(discover_path(p));
    }
    src
}

/// Reads the headers of every source, in parallel; order follows `sources`.
pub fn load_all(src: &[Source], layout: LayoutOptions) -> Vec<Adapter> {
    src.par_iter().map(|s| Adapter::load(s, layout)).collect()
}

/// Discovers and loads everything a request names.
pub fn scan(req: &ScanRequest) -> Vec<Adapter> {
    load_all(&sources(req), req.layout)
}
