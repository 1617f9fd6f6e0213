//! Fixtures shared by the tests and benchmarks: hub caches built from `lorascope::synth`
//! adapters (through the library's cache writer), a tree fingerprint, a factor reader, a runner
//! for the binary, a Hub-like HTTP server (`server`), a pseudo-terminal (`pty`) and a PNG
//! reader (`image`). Each user needs only part of it.
#![allow(dead_code, unused_imports)]

pub mod image;
pub mod pty;
pub mod server;

use lorascope::adapter::layout::{Factor, Pick};
use lorascope::adapter::Adapter;
use lorascope::hub::cache::{commit_id, CacheRepo};
use lorascope::synth::survey::{Item, SurveyRepo};
use lorascope::synth::{self, Spec};
use safetensors::Dtype;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub use lorascope::hub::cache::sha256_hex as sha_hex;

/// A 40-hex revision derived from `seed` (git commit ids have this shape).
pub fn rev(seed: &str) -> String {
    commit_id(seed)
}

/// A Hugging Face hub cache under construction: `root` is what `--cache` points at, and files
/// are staged next to it before they move into `blobs/`.
pub struct Hub {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    staging: PathBuf,
}

impl Hub {
    pub fn new() -> Hub {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("hub");
        let staging = dir.path().join("staging");
        fs::create_dir_all(&root).expect("hub root");
        Hub { dir, root, staging }
    }

    /// `models--ORG--NAME` for `org/name`.
    pub fn repo_dir(&self, id: &str) -> PathBuf {
        CacheRepo::new(&self.root, id).dir
    }

    /// A fresh, empty staging folder for one snapshot.
    pub fn stage(&self) -> PathBuf {
        let _ = fs::remove_dir_all(&self.staging);
        fs::create_dir_all(&self.staging).expect("staging");
        self.staging.clone()
    }

    /// Moves everything under the staging folder into snapshot `rev` of `id` the way
    /// huggingface_hub stores it: each file becomes `blobs/<hash>` and the snapshot holds a
    /// relative symlink to it. Blob names hash the path, not the content (lorascope never checks
    /// them, and hashing gigabytes of sparse benchmark files would dominate the set-up).
    pub fn commit(&self, id: &str, rev: &str) -> PathBuf {
        let cache = CacheRepo::new(&self.root, id);
        for rel in files_under(&self.staging) {
            let rel_s = rel.to_string_lossy().into_owned();
            let blob = sha_hex(format!("{id}@{rev}:{rel_s}").as_bytes());
            let staged = self.staging.join(&rel);
            cache
                .put(rev, &rel_s, &blob, |b| fs::rename(&staged, b))
                .expect("to blob");
        }
        for dir in [cache.blobs(), cache.snapshot(rev), cache.dir.join("refs")] {
            fs::create_dir_all(dir).expect("cache folders");
        }
        let _ = fs::remove_dir_all(&self.staging);
        cache.snapshot(rev)
    }

    pub fn set_ref(&self, id: &str, rev: &str) {
        CacheRepo::new(&self.root, id)
            .set_ref("main", rev)
            .expect("refs/main");
    }

    /// One synthetic adapter as the `main` snapshot of `id`.
    pub fn add(&self, id: &str, spec: &Spec) -> synth::Generated {
        let g = synth::write_adapter(&self.stage(), spec).expect("synth adapter");
        let r = rev(id);
        self.commit(id, &r);
        self.set_ref(id, &r);
        g
    }

    /// Arbitrary files (relative path, bytes) as the `main` snapshot of `id`.
    pub fn add_files(&self, id: &str, files: &[(&str, &[u8])]) {
        let stage = self.stage();
        for (rel, bytes) in files {
            let p = stage.join(rel);
            fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            fs::write(p, bytes).expect("write");
        }
        let r = rev(id);
        self.commit(id, &r);
        self.set_ref(id, &r);
    }
}

impl Default for Hub {
    fn default() -> Self {
        Hub::new()
    }
}

/// Files (not folders) under `dir`, relative to it, sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).expect("under base").to_path_buf());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Everything observable about a tree without following symlinks: each entry's type, mode and
/// mtime, a file's length and SHA-256, a symlink's target. Equal fingerprints = nothing written.
pub fn fingerprint(root: &Path) -> BTreeMap<PathBuf, String> {
    use std::os::unix::fs::MetadataExt;
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
        let mut entries: Vec<PathBuf> = fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").path())
            .collect();
        entries.sort();
        for p in entries {
            let m = fs::symlink_metadata(&p).expect("metadata");
            let rel = p.strip_prefix(base).expect("under base").to_path_buf();
            let stamp = format!("mode {:o} mtime {}.{}", m.mode(), m.mtime(), m.mtime_nsec());
            let what = if m.file_type().is_symlink() {
                format!(
                    "link -> {} {stamp}",
                    fs::read_link(&p).expect("link").display()
                )
            } else if m.is_dir() {
                walk(base, &p, out);
                format!("dir {stamp}")
            } else {
                let bytes = fs::read(&p).expect("read");
                format!("file {} {} {stamp}", bytes.len(), sha_hex(&bytes))
            };
            out.insert(rel, what);
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Runs the real binary with a private HOME and none of the hub variables, plus `env`.
pub fn lorascope(args: &[&str], home: &Path, env: &[(&str, &Path)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lorascope"));
    c.args(args);
    run_isolated(c, home, env)
}

/// `lorascope` in a private HOME whose hub cache is empty and whose user cache is HOME/xdg.
pub fn lorascope_at_home(home: &Path, args: &[&str]) -> Output {
    let (xdg, hub) = (home.join("xdg"), home.join("empty-hub"));
    lorascope(
        args,
        home,
        &[("XDG_CACHE_HOME", &xdg), ("HF_HUB_CACHE", &hub)],
    )
}

/// Starts `lorascope export ARGS` in `home` (pausing before it moves its staged output into
/// place), waits until `staged_file` exists in a `lorascope-export` staging folder under `home`,
/// then kills it: what a crash between writing and renaming leaves behind.
pub fn kill_when_staged(home: &Path, args: &[&str], staged_file: &str) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lorascope"))
        .args(args)
        .env("HOME", home)
        .env("LORASCOPE_TEST_PAUSE_BEFORE_COMMIT", "30000")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let staged = fs::read_dir(home).unwrap().any(|e| {
            let p = e.unwrap().path();
            p.to_string_lossy().contains("lorascope-export") && p.join(staged_file).exists()
        });
        if staged || std::time::Instant::now() > deadline {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// As `lorascope`, with the address space limited to `kib` KiB (`ulimit -v`): an allocation
/// beyond it fails at once instead of swapping the machine.
pub fn lorascope_limited(args: &[&str], home: &Path, env: &[(&str, &Path)], kib: u64) -> Output {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(format!("ulimit -v {kib} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_lorascope"))
        .args(args);
    run_isolated(c, home, env)
}

fn run_isolated(mut c: Command, home: &Path, env: &[(&str, &Path)]) -> Output {
    c.env("HOME", home);
    for k in [
        "HF_HUB_CACHE",
        "HUGGINGFACE_HUB_CACHE",
        "HF_HOME",
        "XDG_CACHE_HOME",
    ] {
        c.env_remove(k);
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run lorascope")
}

/// Reads a factor's matrix (rows × cols, row-major, f64) from the file, applying its `Pick`.
pub fn read_factor(a: &Adapter, f: Factor) -> (usize, usize, Vec<f64>) {
    let (rows, cols, v) = read_picked(a, f);
    match f.rows {
        None => (rows, cols, v),
        Some(r) => {
            let sel: Vec<f64> = (0..r.len)
                .flat_map(|k| {
                    let i = r.start + k * r.step;
                    v[i * cols..(i + 1) * cols].to_vec()
                })
                .collect();
            (r.len, cols, sel)
        }
    }
}

fn read_picked(a: &Adapter, f: Factor) -> (usize, usize, Vec<f64>) {
    let (t, file) = a.tensor_file(f.tensor);
    let bytes = fs::read(&file.path).expect("read adapter file");
    let start = (file.data_start + t.info.begin) as usize;
    let raw = &bytes[start..start + t.info.nbytes() as usize];
    let data = match t.info.quant {
        // GGUF Q8_0 (ggml-quants.c dequantize_row_q8_0): blocks of an f16 d and 32 i8 q, d·q.
        Some(q) if q.name() == "Q8_0" => raw
            .chunks_exact(34)
            .flat_map(|b| {
                let d = half::f16::from_le_bytes([b[0], b[1]]).to_f64();
                b[2..].iter().map(move |&q| d * (q as i8) as f64)
            })
            .collect(),
        Some(q) => panic!("test reader: quantisation {} not read", q.name()),
        None => decode(raw, t.info.dtype),
    };
    let s = &t.info.shape;
    let at2 = |cols: usize, i: usize, j: usize| data[i * cols + j];
    match f.pick {
        Pick::All => {
            assert_eq!(s.len(), 2, "Pick::All on a {}D tensor", s.len());
            (s[0], s[1], data)
        }
        Pick::Transposed => {
            assert_eq!(s.len(), 2, "Pick::Transposed on a {}D tensor", s.len());
            let v = (0..s[1])
                .flat_map(|j| (0..s[0]).map(move |i| (i, j)))
                .map(|(i, j)| at2(s[1], i, j))
                .collect();
            (s[1], s[0], v)
        }
        Pick::Rows { start, len } => {
            assert_eq!(s.len(), 2);
            let v = (start..start + len)
                .flat_map(|i| (0..s[1]).map(move |j| (i, j)))
                .map(|(i, j)| at2(s[1], i, j))
                .collect();
            (len, s[1], v)
        }
        Pick::Cols { start, step, len } => {
            assert_eq!(s.len(), 2);
            let v = (0..s[0])
                .flat_map(|i| (0..len).map(move |k| (i, start + k * step)))
                .map(|(i, j)| at2(s[1], i, j))
                .collect();
            (s[0], len, v)
        }
        Pick::Index { index } => {
            assert_eq!(s.len(), 3);
            let n = s[1] * s[2];
            (s[1], s[2], data[index * n..(index + 1) * n].to_vec())
        }
        Pick::IndexTransposed { index } => {
            assert_eq!(s.len(), 3);
            let n = s[1] * s[2];
            let slice = &data[index * n..(index + 1) * n];
            let v = (0..s[2])
                .flat_map(|j| (0..s[1]).map(move |i| slice[i * s[2] + j]))
                .collect();
            (s[2], s[1], v)
        }
    }
}

fn decode(b: &[u8], dtype: Dtype) -> Vec<f64> {
    match dtype {
        Dtype::F32 => b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
            .collect(),
        Dtype::F64 => b
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect(),
        Dtype::BF16 => b
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f64())
            .collect(),
        Dtype::F16 => b
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f64())
            .collect(),
        other => panic!("test reader: unexpected dtype {other:?}"),
    }
}

/// XᵀX of a rows × cols matrix (cols × cols), or XXᵀ with `rows_gram`.
pub fn gram(rows: usize, cols: usize, x: &[f64], rows_gram: bool) -> Vec<Vec<f64>> {
    let n = if rows_gram { rows } else { cols };
    let mut g = vec![vec![0.0; n]; n];
    for (p, gp) in g.iter_mut().enumerate() {
        for (q, v) in gp.iter_mut().enumerate() {
            *v = if rows_gram {
                (0..cols).map(|j| x[p * cols + j] * x[q * cols + j]).sum()
            } else {
                (0..rows).map(|i| x[i * cols + p] * x[i * cols + q]).sum()
            };
        }
    }
    g
}

/// (Σσ², Σσ⁴) of B·A from its factors, without forming it: the trace of M = (BᵀB)(AAᵀ) and of
/// M². Two spectral invariants pin down which expert's data a pick reached.
pub fn spectral_traces(b: (usize, usize, Vec<f64>), a: (usize, usize, Vec<f64>)) -> (f64, f64) {
    let gb = gram(b.0, b.1, &b.2, false);
    let ga = gram(a.0, a.1, &a.2, true);
    let r = gb.len();
    let m: Vec<Vec<f64>> = (0..r)
        .map(|i| {
            (0..r)
                .map(|j| (0..r).map(|k| gb[i][k] * ga[k][j]).sum())
                .collect()
        })
        .collect();
    let t1 = (0..r).map(|i| m[i][i]).sum();
    let t2 = (0..r)
        .map(|i| (0..r).map(|k| m[i][k] * m[k][i]).sum::<f64>())
        .sum();
    (t1, t2)
}

/// How many adapters a scan lists for `repos`: each adapter folder, or the repo itself when it
/// holds none (listed as no-safetensors).
pub fn survey_adapters(repos: &[SurveyRepo]) -> usize {
    repos
        .iter()
        .map(|r| {
            r.items
                .iter()
                .filter(|i| matches!(i, Item::Adapter { .. }))
                .count()
                .max(1)
        })
        .sum()
}

/// Apparent size (sum of file lengths) of a tree, following nothing.
pub fn apparent_size(root: &Path) -> u64 {
    files_under(root)
        .iter()
        .filter_map(|p| fs::symlink_metadata(root.join(p)).ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

/// Runs `f` on its own thread and fails the test if it takes longer than `secs`: a regression
/// that stalls then fails rather than blocking the suite (a bound, not a speed goal).
pub fn within<T: Send + 'static>(
    secs: u64,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(std::time::Duration::from_secs(secs))
        .unwrap_or_else(|_| panic!("{what}: still running after {secs} s (stalled)"))
}

/// Writes a synthetic adapter with extra tensors (F32, values given row-major) and its config
/// edited into `dir`.
pub fn write_with_extra(
    dir: &Path,
    spec: &Spec,
    extra: &[(String, Vec<usize>, Vec<f64>)],
    edit: impl Fn(&mut serde_json::Value),
) {
    let mut g = synth::generate(spec);
    for (name, shape, v) in extra {
        g.tensors.push(lorascope::adapter::format::TensorData {
            name: name.clone(),
            dtype: Dtype::F32,
            shape: shape.clone(),
            bytes: Some(lorascope::adapter::format::encode(v, Dtype::F32)),
        });
    }
    g.tensors.sort_by(|x, y| x.name.cmp(&y.name));
    edit(&mut g.config);
    fs::create_dir_all(dir).unwrap();
    synth::write_safetensors(&dir.join(spec.pattern.file_name()), &g.tensors, true).unwrap();
    fs::write(
        dir.join("adapter_config.json"),
        serde_json::to_vec(&g.config).unwrap(),
    )
    .unwrap();
}

/// A toy adapter of `pattern` (attention rank 3, expert rank 2).
pub fn toy_spec(pattern: synth::Pattern) -> Spec {
    let mut s = Spec::new(synth::Dims::TOY, pattern);
    s.attn_rank = 3;
    s.expert_rank = 2;
    s
}

/// One toy adapter of each layout family export reads (PEFT attention with rsLoRA and patterns,
/// PEFT experts, Unsloth module lists, Tinker 3-D, mlx-lm), named.
pub fn export_families() -> Vec<(&'static str, Spec)> {
    use synth::Pattern;
    let mut rs = toy_spec(Pattern::Attention);
    rs.rslora = true;
    rs.rank_pattern = vec![("q_proj".into(), 2)];
    rs.alpha_pattern = vec![("v_proj".into(), 5.0)];
    vec![
        ("peft attention, rsLoRA and patterns", rs),
        (
            "peft target_parameters experts",
            toy_spec(Pattern::PeftExperts { layers: vec![0, 2] }),
        ),
        (
            "unsloth module lists",
            toy_spec(Pattern::UnslothExperts { layers: vec![1] }),
        ),
        ("tinker 3-D", toy_spec(Pattern::Tinker3d)),
        ("mlx-lm", toy_spec(Pattern::Mlx { layers: 2 })),
    ]
}
