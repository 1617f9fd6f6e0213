//! The demo cache: one adapter of each layout of the survey, at real gpt-oss-20b shapes with small
//! ranks, written in the real hub cache layout (blobs, snapshot symlinks, refs/main).

use crate::adapter::Source;
use crate::error::{Error, Result};
use crate::synth::{self, Dims, Pattern, Spec};
use safetensors::Dtype;
use sha2::{Digest, Sha256};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::catalog::{demo_dir, demo_is_complete, Catalog, DEMO_MARKER};

struct Repo {
    name: &'static str,
    files: Vec<(String, Vec<u8>)>,
}

fn adapter_files(spec: &Spec, sub: &str) -> Vec<(String, Vec<u8>)> {
    let g = synth::generate(spec);
    vec![
        (
            format!("{sub}{}", spec.pattern.file_name()),
            synth::safetensors_bytes(&g.tensors, true),
        ),
        (
            format!("{sub}adapter_config.json"),
            serde_json::to_vec_pretty(&g.config).expect("json"),
        ),
    ]
}

fn spec(pattern: Pattern, r: usize, er: usize, dtype: Dtype, seed: u64) -> Spec {
    let mut s = Spec::new(Dims::GPT_OSS_20B, pattern);
    s.attn_rank = r;
    s.expert_rank = er;
    s.alpha = 2.0 * r as f64;
    s.dtype = dtype;
    s.seed = seed;
    s
}

fn repos() -> Vec<Repo> {
    let d = Dims::GPT_OSS_20B;
    let mut qv = spec(Pattern::Attention, 8, 0, Dtype::BF16, 2);
    qv.targets = vec!["q_proj", "v_proj"];
    // Small ranks and few layers keep the demo near its size (the expert lists are 32 × 2 pairs).
    let mut unsloth = spec(
        Pattern::UnslothExperts { layers: vec![15] },
        4,
        4,
        Dtype::BF16,
        6,
    );
    unsloth.targets = vec!["q_proj", "v_proj"];
    let mut multi = vec![];
    for (i, sub) in ["", "lora-b/", "lora-c/"].into_iter().enumerate() {
        let mut s = spec(Pattern::Attention, 4, 0, Dtype::BF16, 20 + i as u64);
        s.targets = vec!["q_proj", "v_proj"];
        multi.extend(adapter_files(&s, sub));
    }
    let mut corrupt = adapter_files(&spec(Pattern::Attention, 4, 0, Dtype::F32, 9), "");
    let half = corrupt[0].1.len() / 2;
    corrupt[0].1.truncate(half); // an interrupted download
    let mut full = Spec::new(
        d,
        Pattern::FullWeights {
            layers: (0..19).collect(),
        },
    );
    full.dtype = Dtype::BF16;
    let full = synth::generate(&full);
    vec![
        Repo {
            name: "gpt-oss-20b-attn-r8",
            files: adapter_files(&spec(Pattern::Attention, 8, 0, Dtype::F32, 1), ""),
        },
        Repo {
            name: "gpt-oss-20b-qv-r8",
            files: adapter_files(&qv, ""),
        },
        Repo {
            name: "gpt-oss-20b-attn-router",
            files: adapter_files(&spec(Pattern::AttentionRouter, 8, 0, Dtype::BF16, 3), ""),
        },
        Repo {
            name: "gpt-oss-20b-moe-peft",
            files: adapter_files(
                &spec(
                    Pattern::PeftExperts {
                        layers: vec![0, 7, 15, 23],
                    },
                    8,
                    4,
                    Dtype::BF16,
                    4,
                ),
                "",
            ),
        },
        Repo {
            name: "gpt-oss-20b-unsloth-experts",
            files: adapter_files(&unsloth, ""),
        },
        Repo {
            name: "gpt-oss-20b-mlx",
            files: adapter_files(&spec(Pattern::Mlx { layers: 1 }, 4, 4, Dtype::BF16, 7), ""),
        },
        Repo {
            name: "gpt-oss-20b-tinker-3d",
            files: adapter_files(&spec(Pattern::Tinker3d, 4, 4, Dtype::BF16, 5), ""),
        },
        Repo {
            name: "gpt-oss-20b-merged",
            files: vec![
                (
                    "model.safetensors".into(),
                    synth::safetensors_bytes(&full.tensors, true),
                ),
                (
                    "config.json".into(),
                    br#"{"model_type": "gpt_oss"}"#.to_vec(),
                ),
            ],
        },
        Repo {
            name: "gpt-oss-20b-multi-adapter",
            files: multi,
        },
        Repo {
            name: "gpt-oss-20b-empty",
            files: vec![
                (
                    "adapter_model.safetensors".into(),
                    synth::safetensors_bytes(&[], true),
                ),
                (
                    "adapter_config.json".into(),
                    br#"{"peft_type": "LORA", "r": 16, "lora_alpha": 32}"#.to_vec(),
                ),
            ],
        },
        Repo {
            name: "gpt-oss-20b-checkpoint-only",
            files: vec![
                (
                    "adapter_config.json".into(),
                    br#"{"peft_type": "LORA", "r": 16, "lora_alpha": 32}"#.to_vec(),
                ),
                (
                    "checkpoint-500/adapter_model.bin".into(),
                    b"PK\x03\x04 pickled torch checkpoint".to_vec(),
                ),
            ],
        },
        Repo {
            name: "gpt-oss-20b-corrupt",
            files: corrupt,
        },
    ]
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes one repo in the hub cache layout: blobs named by sha256, snapshot symlinks, refs/main.
fn write_repo(root: &Path, org: &str, repo: &Repo) -> io::Result<()> {
    let dir = root.join(format!("models--{org}--{}", repo.name));
    let rev = hex(&Sha256::digest(format!("{org}/{}", repo.name).as_bytes()))[..40].to_string();
    let snap = dir.join("snapshots").join(&rev);
    fs::create_dir_all(dir.join("blobs"))?;
    fs::create_dir_all(dir.join("refs"))?;
    for (name, bytes) in &repo.files {
        let blob = hex(&Sha256::digest(bytes));
        fs::write(dir.join("blobs").join(&blob), bytes)?;
        let link = snap.join(name);
        let parent = link.parent().expect("snapshot file has a parent");
        fs::create_dir_all(parent)?;
        let depth = name.matches('/').count() + 2;
        let target: PathBuf = std::iter::repeat_n("..", depth)
            .collect::<PathBuf>()
            .join("blobs")
            .join(&blob);
        let _ = fs::remove_file(&link);
        symlink(&target, &link)?;
    }
    fs::write(dir.join("refs").join("main"), &rev)
}

#[cfg(unix)]
fn symlink(target: &Path, link: &Path) -> io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(not(unix))]
fn symlink(target: &Path, link: &Path) -> io::Result<()> {
    let abs = link.parent().expect("parent").join(target);
    fs::copy(abs, link).map(|_| ())
}

/// Writes the demo cache into `dir` (refusing a folder that holds anything but a demo).
/// Returns the number of repos written.
pub fn write_demo(dir: &Path) -> io::Result<usize> {
    if dir.exists() && !demo_is_complete(dir) {
        let foreign = fs::read_dir(dir)?.filter_map(|e| e.ok()).any(|e| {
            !e.file_name()
                .to_string_lossy()
                .starts_with("models--lorascope-demo--")
        });
        if foreign {
            return Err(io::Error::other(format!(
                "{} is not empty and not a lorascope demo cache: refusing to write there",
                dir.display()
            )));
        }
    }
    fs::create_dir_all(dir)?;
    let repos = repos();
    for r in &repos {
        write_repo(dir, "lorascope-demo", r)?;
    }
    fs::write(dir.join(DEMO_MARKER), b"written by lorascope demo\n")?;
    Ok(repos.len())
}

/// The demo cache under the user's cache folder, written once.
pub fn ensure_default() -> io::Result<PathBuf> {
    let dir = demo_dir().ok_or_else(|| io::Error::other("no HOME or XDG_CACHE_HOME"))?;
    if !demo_is_complete(&dir) {
        write_demo(&dir)?;
    }
    Ok(dir)
}

/// The sources `lorascope` with no subcommand shows: the cache and `paths`, else the demo cache
/// (written on first use), with a note saying so. Nothing is read yet, so that the explorer can
/// read the headers with a progress bar.
pub fn sources_or_demo(cat: &Catalog, paths: &[PathBuf]) -> Result<(Vec<Source>, Option<String>)> {
    let found = cat.sources(paths);
    if !found.is_empty() || !paths.is_empty() {
        return Ok((found, None));
    }
    let demo =
        ensure_default().map_err(|e| Error::Other(format!("writing the demo cache: {e}")))?;
    let note = format!(
        "no adapters in {}; showing the demo cache at {}",
        cat.cache
            .as_deref()
            .map_or("the hub cache".into(), |c| c.display().to_string()),
        demo.display()
    );
    let demo = Catalog {
        cache: Some(demo),
        explicit_cache: true,
    };
    Ok((demo.sources(&[]), Some(note)))
}
