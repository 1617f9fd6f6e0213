//! Finding adapters: the Hugging Face cache (huggingface_hub's conventions) and named paths.

use crate::adapter::layout::LayoutOptions;
use crate::adapter::{history, Adapter, Source};
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
    // Repos are walked in parallel (each is a few small folders: the walk is waiting on the
    // file system) and kept in folder order.
    let per_repo: Vec<Vec<Source>> = entries
        .par_iter()
        .map(|repo| {
            // A name that is not UTF-8 is listed lossily rather than skipped.
            let name = repo
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let Some(id) = repo_id_from_folder(&name) else {
                return vec![];
            };
            // A repo folder may be a link (a cache spread over disks); below it, links are not
            // followed.
            if !repo.is_dir() {
                return vec![];
            }
            match snapshot_of(repo) {
                Ok((rev, snap)) => {
                    let main = collect(&snap, &id, Some(rev.clone()));
                    with_history(repo, &id, &rev, main)
                }
                Err(msg) => vec![problem_source(&id, repo, msg)],
            }
        })
        .collect();
    out.extend(per_repo.into_iter().flatten());
    out
}

/// A repo's sources at its main revision and, when other revisions were fetched too, their
/// adapters (ids `org/name@0123abc…`), each marked with its place in the repo's history
/// (`adapter::history`) for `run::detect` to read as a run. An older revision's folder without
/// an adapter is not listed.
fn with_history(repo: &Path, id: &str, main_rev: &str, main: Vec<Source>) -> Vec<Source> {
    let revisions = history::revisions(repo);
    if revisions.is_empty() {
        return main;
    }
    let mark = |mut s: Source, r: &history::Revision, run_id: String| {
        s.history = Some(history::History {
            repo: repo.to_path_buf(),
            id: run_id,
            step: r.step,
            ordinal: r.ordinal,
        });
        s
    };
    let short = history::short_len(&revisions);
    let mut out = Vec::new();
    for r in &revisions {
        if r.rev == main_rev {
            out.extend(main.iter().cloned().map(|s| {
                let run_id = s.id.clone();
                mark(s, r, run_id)
            }));
        } else {
            let rid = history::revision_id(id, &r.rev, short);
            out.extend(
                collect(&r.snapshot, &rid, Some(r.rev.clone()))
                    .into_iter()
                    .filter(|s| !s.files.is_empty())
                    .map(|s| {
                        let run_id = format!("{id}{}", s.id.strip_prefix(&rid).unwrap_or(""));
                        mark(s, r, run_id)
                    }),
            );
        }
    }
    // The main revision's sources first, as without a history; then the others by step.
    out.sort_by_key(|s| s.revision.as_deref() != Some(main_rev));
    out
}

/// The snapshot `refs/main` points to, else the newest one.
pub fn snapshot_of(repo: &Path) -> Result<(String, PathBuf), String> {
    let snaps = repo.join("snapshots");
    let refs_main = repo.join("refs").join("main");
    match crate::adapter::fsread::read_regular(&refs_main) {
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
        history: None,
        id: id.to_string(),
        path: path.to_path_buf(),
        dir: path.to_path_buf(),
        files: vec![],
        revision: None,
        problem: Some(msg),
        other_files: vec![],
    }
}

/// Weight files other than safetensors (`.bin`, `.pt`, …), named in the no-safetensors note.
pub fn is_weight_file(name: &str) -> bool {
    [".bin", ".pt", ".pth", ".ckpt", ".gguf"]
        .iter()
        .any(|ext| name.ends_with(ext))
}

/// An adapter folder of a tree of files: a snapshot on disk or a remote repo's file list.
#[derive(Debug, Clone, PartialEq)]
pub struct Folder<T> {
    /// The folder, relative to the tree's root and `/`-separated (`""` = the root).
    pub sub: String,
    /// Its `.safetensors` files, by name.
    pub safetensors: Vec<T>,
    pub config: Option<T>,
    /// With no safetensors: weight files of other formats below it (relative to it, at most 8),
    /// for the no-safetensors note.
    pub other_files: Vec<String>,
}

/// The order of the walk: a folder, then its subfolders by name (`a`, `a/b`, `a-c`).
fn tree_order(rel: &str) -> Vec<&str> {
    rel.split('/').filter(|c| !c.is_empty()).collect()
}

/// The one grouping rule, for the local walk and the remote file list alike. `files` are
/// (path relative to the root, `/`-separated; what the caller keeps for the file). A folder
/// holding `.safetensors` or `adapter_config.json` is an adapter folder; files deeper than
/// `MAX_DEPTH` folders or inside hidden folders are not seen. Folders come in walk order; with
/// none, the root alone, naming the weight files of other formats it holds.
pub fn group_folders<T: Clone>(files: &[(String, T)]) -> Vec<Folder<T>> {
    let mut files: Vec<&(String, T)> = files
        .iter()
        .filter(|(rel, _)| {
            let comps: Vec<&str> = rel.split('/').collect();
            comps.len() <= MAX_DEPTH + 1
                && comps[..comps.len() - 1].iter().all(|c| !c.starts_with('.'))
        })
        .collect();
    files.sort_by(|a, b| tree_order(&a.0).cmp(&tree_order(&b.0)));
    let split = |rel: &str| -> (String, String) {
        rel.rsplit_once('/')
            .map_or((String::new(), rel.to_string()), |(d, n)| {
                (d.to_string(), n.to_string())
            })
    };
    let weights_under = |dir: &str| -> Vec<String> {
        let mut v: Vec<String> = files
            .iter()
            .filter_map(|(rel, _)| match dir {
                "" => Some(rel.as_str()),
                d => rel.strip_prefix(d)?.strip_prefix('/'),
            })
            .filter(|rel| is_weight_file(rel))
            .map(str::to_string)
            .collect();
        v.sort();
        v.truncate(8);
        v
    };
    let is_safetensors = |name: &str| name.ends_with(".safetensors");
    let mut dirs: Vec<String> = files
        .iter()
        .map(|(rel, _)| split(rel))
        .filter(|(_, name)| is_safetensors(name) || name == "adapter_config.json")
        .map(|(dir, _)| dir)
        .collect();
    dirs.sort_by(|a, b| tree_order(a).cmp(&tree_order(b)));
    dirs.dedup();
    if dirs.is_empty() {
        return vec![Folder {
            sub: String::new(),
            safetensors: vec![],
            config: None,
            other_files: weights_under(""),
        }];
    }
    dirs.into_iter()
        .map(|d| {
            let here: Vec<(String, &T)> = files
                .iter()
                .map(|(rel, at)| (split(rel), at))
                .filter(|((dir, _), _)| *dir == d)
                .map(|((_, name), at)| (name, at))
                .collect();
            let safetensors: Vec<T> = here
                .iter()
                .filter(|(name, _)| is_safetensors(name))
                .map(|(_, at)| (*at).clone())
                .collect();
            let other_files = if safetensors.is_empty() {
                weights_under(&d)
            } else {
                vec![]
            };
            Folder {
                config: here
                    .iter()
                    .find(|(name, _)| name == "adapter_config.json")
                    .map(|(_, at)| (*at).clone()),
                sub: d,
                safetensors,
                other_files,
            }
        })
        .collect()
}

/// The files below `root` as the walk sees them (real folders only, not hidden, at most
/// `MAX_DEPTH` deep), and the folders it could not read, each relative to `root`.
#[allow(clippy::type_complexity)]
fn list_tree(root: &Path) -> (Vec<(String, PathBuf)>, Vec<(String, PathBuf, String)>) {
    fn walk(
        dir: &Path,
        prefix: &str,
        depth: usize,
        files: &mut Vec<(String, PathBuf)>,
        unreadable: &mut Vec<(String, PathBuf, String)>,
    ) {
        let entries = match sorted_entries(dir) {
            Ok(e) => e,
            Err(e) => {
                let msg = format!("cannot read folder {}: {e}", dir.display());
                let sub = prefix.trim_end_matches('/').to_string();
                unreadable.push((sub, dir.to_path_buf(), msg));
                return;
            }
        };
        for p in entries {
            // A name that is not UTF-8 is grouped lossily; the file keeps its real path.
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !real_dir(&p) {
                files.push((format!("{prefix}{name}"), p));
            } else if depth < MAX_DEPTH && walkable(&p) {
                walk(
                    &p,
                    &format!("{prefix}{name}/"),
                    depth + 1,
                    files,
                    unreadable,
                );
            }
        }
    }
    let (mut files, mut unreadable) = (Vec::new(), Vec::new());
    walk(root, "", 0, &mut files, &mut unreadable);
    (files, unreadable)
}

/// The sources below `dir` (and it): one per adapter folder (`group_folders`), one per folder
/// that cannot be read, or else `dir` itself as a no-safetensors source.
fn collect(dir: &Path, id: &str, rev: Option<String>) -> Vec<Source> {
    let (files, unreadable) = list_tree(dir);
    let id_of = |sub: &str| match sub {
        "" => id.to_string(),
        s => format!("{id}/{s}"),
    };
    let ggufs = gguf_sources(&files, &id_of, rev.as_ref());
    let mut out: Vec<(String, Source)> = group_folders(&files)
        .into_iter()
        // With a folder it could not read, the walk found something: no no-safetensors root;
        // nor with GGUF files, which are adapters of their own.
        .filter(|f| {
            (unreadable.is_empty() && ggufs.is_empty())
                || !f.safetensors.is_empty()
                || f.config.is_some()
        })
        .flat_map(|mut f| {
            f.other_files.retain(|n| !is_gguf_name(n));
            // The folder's real path: its files' parent (names may not be UTF-8).
            let at = f
                .safetensors
                .first()
                .or(f.config.as_ref())
                .and_then(|p| p.parent())
                .map_or_else(|| dir.to_path_buf(), Path::to_path_buf);
            let src = Source {
                history: None,
                id: id_of(&f.sub),
                path: at.clone(),
                dir: at,
                files: f.safetensors,
                revision: rev.clone(),
                problem: None,
                other_files: f.other_files,
            };
            // Checkpoints side by side (mlx-lm, kohya) are adapters of their own.
            let sub = f.sub;
            crate::adapter::checkpoint::split(src)
                .into_iter()
                .map(move |s| (sub.clone(), s))
        })
        .collect();
    for (sub, path, msg) in unreadable {
        out.push((sub.clone(), problem_source(&id_of(&sub), &path, msg)));
    }
    out.extend(ggufs);
    out.sort_by(|a, b| tree_order(&a.0).cmp(&tree_order(&b.0)));
    out.into_iter().map(|(_, s)| s).collect()
}

fn is_gguf_name(name: &str) -> bool {
    crate::adapter::gguf::is_gguf_path(Path::new(name))
}

/// One source per `.gguf` file of the walk (a GGUF file is a whole adapter or model), with the
/// id `<folder id>/<file name>` so that it never takes the id of safetensors beside it. Files
/// as `group_folders` sees them: not in hidden folders, at most `MAX_DEPTH` deep.
fn gguf_sources(
    files: &[(String, PathBuf)],
    id_of: &dyn Fn(&str) -> String,
    rev: Option<&String>,
) -> Vec<(String, Source)> {
    files
        .iter()
        .filter(|(rel, _)| {
            let comps: Vec<&str> = rel.split('/').collect();
            is_gguf_name(rel)
                && comps.len() <= MAX_DEPTH + 1
                && comps[..comps.len() - 1].iter().all(|c| !c.starts_with('.'))
        })
        .map(|(rel, path)| {
            let (sub, name) = rel.rsplit_once('/').unwrap_or(("", rel));
            let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
            let src = Source {
                history: None,
                id: format!("{}/{name}", id_of(sub)),
                path: path.clone(),
                dir,
                files: vec![path.clone()],
                revision: rev.cloned(),
                problem: None,
                other_files: vec![],
            };
            (sub.to_string(), src)
        })
        .collect()
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
        if path.extension().is_some_and(|x| x == "safetensors")
            || crate::adapter::gguf::is_gguf_path(path)
        {
            let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
            return vec![Source {
                history: None,
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
            format!("{id} is not a .safetensors or .gguf file or a folder"),
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
    collect(path, &id, None)
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
    load_all_with(src, layout, default_readers())
}

/// `load_all` with `threads` readers (1: serially): the result does not depend on it. Full
/// models that adapters of the list name as their base are marked (`Adapter::base_of`).
pub fn load_all_with(src: &[Source], layout: LayoutOptions, threads: usize) -> Vec<Adapter> {
    let mut out = Vec::with_capacity(src.len());
    load_each(src, layout, threads, |a| out.push(a));
    crate::adapter::mark_bases(&mut out);
    out
}

/// How many header readers a scan uses: rayon's thread count (headers are small reads, so more
/// readers than cores only add contention).
pub fn default_readers() -> usize {
    rayon::current_num_threads()
}

/// Reads the headers of every source with `threads` readers and hands each adapter to `each`
/// in the order of `src`, as soon as it and every source before it are read: a caller can show
/// the first adapters while the rest are read, and still gets the walk's order.
///
/// The readers take sources one at a time from a shared counter, so that they finish roughly in
/// order (a split of `src` into halves would hold the second half back until the first is read).
pub fn load_each(
    src: &[Source],
    layout: LayoutOptions,
    threads: usize,
    each: impl FnMut(Adapter) + Send,
) {
    struct Ready<F> {
        /// The next index to hand out, and the adapters read ahead of it.
        next: usize,
        ahead: std::collections::BTreeMap<usize, Adapter>,
        each: F,
    }
    let ready = std::sync::Mutex::new(Ready {
        next: 0,
        ahead: Default::default(),
        each,
    });
    let taken = std::sync::atomic::AtomicUsize::new(0);
    let reader = || loop {
        let i = taken.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let Some(s) = src.get(i) else { break };
        let a = Adapter::load(s, layout);
        // A reader that panicked elsewhere leaves consistent state: take it back.
        let mut r = ready.lock().unwrap_or_else(|p| p.into_inner());
        r.ahead.insert(i, a);
        // Whoever completes the prefix hands it on, under the lock, so `each` sees the order.
        loop {
            let next = r.next;
            let Some(a) = r.ahead.remove(&next) else {
                break;
            };
            r.next += 1;
            (r.each)(a);
        }
    };
    let threads = threads.clamp(1, src.len().max(1));
    if threads == 1 {
        reader();
        return;
    }
    std::thread::scope(|s| {
        for _ in 1..threads {
            s.spawn(reader);
        }
        reader();
    });
}

/// Discovers and loads everything a request names.
pub fn scan(req: &ScanRequest) -> Vec<Adapter> {
    load_all(&sources(req), req.layout)
}
