//! Fixtures shared by `tests/foundation.rs` and `benches/scan.rs`: hub caches built from
//! `lorascope::synth` adapters, a tree fingerprint, a factor reader and a runner for the binary.
//! Each user needs only part of it.
#![allow(dead_code)]

use lorascope::adapter::Adapter;
use lorascope::layout::{Factor, Pick};
use lorascope::synth::{self, Dims, Pattern, Spec};
use safetensors::Dtype;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn sha_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A 40-hex revision derived from `seed` (git commit ids have this shape).
pub fn rev(seed: &str) -> String {
    sha_hex(seed.as_bytes())[..40].to_string()
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
        self.root.join(format!("models--{}", id.replace('/', "--")))
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
        let repo = self.repo_dir(id);
        let snap = repo.join("snapshots").join(rev);
        fs::create_dir_all(repo.join("blobs")).expect("blobs");
        fs::create_dir_all(repo.join("refs")).expect("refs");
        fs::create_dir_all(&snap).expect("snapshot");
        for rel in files_under(&self.staging) {
            let rel_s = rel.to_string_lossy().into_owned();
            let blob = sha_hex(format!("{id}@{rev}:{rel_s}").as_bytes());
            fs::rename(self.staging.join(&rel), repo.join("blobs").join(&blob)).expect("to blob");
            let link = snap.join(&rel);
            fs::create_dir_all(link.parent().expect("parent")).expect("snapshot subfolder");
            let mut target = PathBuf::new();
            for _ in 0..rel.components().count() + 1 {
                target.push("..");
            }
            std::os::unix::fs::symlink(target.join("blobs").join(&blob), &link).expect("symlink");
        }
        let _ = fs::remove_dir_all(&self.staging);
        snap
    }

    pub fn set_ref(&self, id: &str, rev: &str) {
        fs::write(self.repo_dir(id).join("refs").join("main"), rev).expect("refs/main");
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
    let data = decode(
        &bytes[start..start + t.info.nbytes() as usize],
        t.info.dtype,
    );
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

/// The survey's population (docs/survey.md): how many adapters of each kind, at which
/// ranks and dtypes. 140 repos: 118 with safetensors (one holding 11 adapters), 22 without.
pub struct SurveyRepo {
    pub id: String,
    pub what: SurveyKind,
}

pub enum SurveyKind {
    Adapter(Box<Spec>),
    /// Pattern F: the root adapter plus named sub-adapters, each with its own config.
    Multi(Box<Spec>, Vec<String>),
    NoSafetensors,
}

fn spec(
    dims: Dims,
    pattern: Pattern,
    targets: &[&'static str],
    r: usize,
    er: usize,
    dtype: Dtype,
) -> Spec {
    let mut s = Spec::new(dims, pattern);
    s.targets = targets.to_vec();
    s.attn_rank = r;
    s.expert_rank = er;
    s.alpha = 2.0 * r as f64;
    s.dtype = dtype;
    s
}

pub fn survey(dims: Dims, sparse: bool) -> Vec<SurveyRepo> {
    const QKVO: &[&str] = &["q_proj", "k_proj", "v_proj", "o_proj"];
    const QV: &[&str] = &["q_proj", "v_proj"];
    let all: Vec<usize> = (0..dims.layers).collect();
    // The survey's layer numbers, folded into smaller models.
    let sel = |l: &[usize]| -> Vec<usize> { l.iter().map(|x| x % dims.layers).collect() };
    let (f32_, bf16) = (Dtype::F32, Dtype::BF16);
    let attn = |t, r, d| spec(dims, Pattern::Attention, t, r, 0, d);
    let peft = |layers: &[usize], r, er| {
        spec(
            dims,
            Pattern::PeftExperts {
                layers: layers.to_vec(),
            },
            QKVO,
            r,
            er,
            f32_,
        )
    };
    // (count, name, spec): the survey's groups.
    let groups: Vec<(usize, &str, Spec)> = vec![
        (30, "attn-r32", attn(QKVO, 32, f32_)),
        (22, "attn-r128-bf16", attn(QKVO, 128, bf16)),
        (20, "attn-r16", attn(QKVO, 16, f32_)),
        (19, "attn-r8", attn(QKVO, 8, f32_)),
        (1, "attn-r128", attn(QKVO, 128, f32_)),
        (1, "attn-r8-bf16", attn(QKVO, 8, bf16)),
        (2, "qv-r8", attn(QV, 8, f32_)),
        (1, "qv-r16", attn(QV, 16, f32_)),
        (
            2,
            "router-r8",
            spec(dims, Pattern::AttentionRouter, QKVO, 8, 0, f32_),
        ),
        // Pattern C: "expert rank" r·E of 256 / 512 / 2048 over 32 experts is r = 8 / 16 / 64.
        // Two of them put expert LoRA on a few layers only, as the survey saw.
        (9, "moe-r8", peft(&all, 8, 8)),
        (2, "moe-r16", peft(&all, 16, 16)),
        (1, "moe-r16-sel", peft(&sel(&[7, 15, 23]), 16, 16)),
        (2, "moe-r64", peft(&all, 64, 64)),
        (1, "moe-r64-sel", peft(&sel(&[0, 7, 10, 15, 23]), 64, 64)),
        (
            1,
            "tinker-r32",
            spec(dims, Pattern::Tinker3d, QKVO, 32, 32, f32_),
        ),
        (
            1,
            "merged",
            spec(
                dims,
                Pattern::FullWeights {
                    layers: (0..dims.layers.min(19)).collect(),
                },
                QKVO,
                0,
                0,
                bf16,
            ),
        ),
        (2, "empty", spec(dims, Pattern::Empty, QKVO, 16, 0, f32_)),
    ];
    let mut out = Vec::new();
    let mut seed = 0u64;
    for (count, name, s) in &groups {
        for i in 0..*count {
            seed += 1;
            let mut s = s.clone();
            s.sparse = sparse;
            s.seed = seed;
            out.push(SurveyRepo {
                id: format!("survey/{name}-{i}"),
                what: SurveyKind::Adapter(Box::new(s)),
            });
        }
    }
    let mut multi = attn(QKVO, 16, f32_);
    multi.sparse = sparse;
    out.push(SurveyRepo {
        id: "survey/multi-adapter".into(),
        what: SurveyKind::Multi(
            Box::new(multi),
            (1..=10).map(|i| format!("task-{i}")).collect(),
        ),
    });
    for i in 0..22 {
        out.push(SurveyRepo {
            id: format!("survey/no-safetensors-{i}"),
            what: SurveyKind::NoSafetensors,
        });
    }
    out
}

/// Writes the survey population into `hub`; returns the number of adapters a scan should list.
pub fn write_survey(hub: &Hub, repos: &[SurveyRepo]) -> usize {
    let mut adapters = 0;
    for r in repos {
        match &r.what {
            SurveyKind::Adapter(s) => {
                hub.add(&r.id, s);
                adapters += 1;
            }
            SurveyKind::Multi(s, subs) => {
                let stage = hub.stage();
                synth::write_adapter(&stage, s).expect("root adapter");
                for (i, sub) in subs.iter().enumerate() {
                    let mut si = (**s).clone();
                    si.seed = 1000 + i as u64;
                    synth::write_adapter(&stage.join(sub), &si).expect("sub-adapter");
                }
                let rv = rev(&r.id);
                hub.commit(&r.id, &rv);
                hub.set_ref(&r.id, &rv);
                adapters += 1 + subs.len();
            }
            SurveyKind::NoSafetensors => {
                hub.add_files(
                    &r.id,
                    &[
                        ("adapter_config.json", br#"{"peft_type": "LORA", "r": 16}"#),
                        ("checkpoint-500/adapter_model.bin", b"PK\x03\x04"),
                        ("README.md", b"# an upload without safetensors"),
                    ],
                );
                adapters += 1;
            }
        }
    }
    adapters
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
