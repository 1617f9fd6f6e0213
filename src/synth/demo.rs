//! The demo cache: one adapter of each layout of the survey, at real gpt-oss-20b shapes with small
//! ranks, written in the real hub cache layout (blobs, snapshot symlinks, refs/main); and a small
//! base model with an adapter and a merge on it, so that the views against the base work on a
//! fresh machine.

use crate::adapter::Source;
use crate::error::{Error, Result};
use crate::synth::base::{self as synth_base, BaseSpec, ExpertStorage, Merge};
use crate::synth::{self, Dims, Item, Pattern, Spec};
use safetensors::Dtype;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::adapter::catalog::{demo_dir, demo_is_complete, Catalog, DEMO_MARKER};

struct Repo {
    name: &'static str,
    files: Vec<Item>,
}

/// A file as written: blobs are named by content, as huggingface_hub names them.
fn raw(name: impl Into<String>, bytes: Vec<u8>) -> Item {
    Item::Raw {
        name: name.into(),
        bytes,
    }
}

fn adapter_files(spec: &Spec, sub: &str) -> Vec<Item> {
    let g = synth::generate(spec);
    vec![
        raw(
            format!("{sub}{}", spec.pattern.file_name()),
            synth::safetensors_bytes(&g.tensors, true),
        ),
        raw(
            format!("{sub}adapter_config.json"),
            serde_json::to_vec_pretty(&g.config).expect("json"),
        ),
    ]
}

/// The GGUF twin of an adapter (llama.cpp's convert_lora_to_gguf.py layout, Q8_0 where rows
/// are whole blocks): the same deltas as the safetensors adapter of the same spec.
fn gguf_file(name: &str, spec: &Spec) -> Item {
    use crate::adapter::gguf::{file_bytes, GgmlType};
    let g = synth::generate(spec);
    let tensors = synth::gguf::tensors(&g, spec, GgmlType::Q8_0);
    raw(name, file_bytes(&synth::gguf::metadata(spec), &tensors))
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

/// The demo's base model: gpt-oss's tensor names, layout and MXFP4 experts at reduced sizes
/// (a real gpt-oss-20b base is 13 GB). Sharded in two, like the release.
pub const BASE_ID: &str = "lorascope-demo/gpt-oss-mini";
pub const BASE_DIMS: Dims = Dims {
    layers: 6,
    hidden: 256,
    q_out: 256,
    kv_out: 64,
    experts: 8,
    inter: 256,
};

fn base_spec() -> BaseSpec {
    BaseSpec::new(BASE_DIMS, ExpertStorage::Mxfp4)
}

/// The repos on the demo base: the base itself, a PEFT expert adapter naming it, and a
/// `merged_16bit`-style merge over it (BF16 experts) that changed two layers and three experts.
fn base_repos() -> Vec<Repo> {
    let mut peft = Spec::new(BASE_DIMS, Pattern::PeftExperts { layers: vec![1, 4] });
    peft.attn_rank = 8;
    peft.expert_rank = 4;
    peft.alpha = 16.0;
    peft.dtype = Dtype::BF16;
    peft.seed = 31;
    peft.base_model = BASE_ID.into();
    let merge = Merge {
        layers: vec![2, 4],
        experts: vec![0, 3, 5],
        rank: 8,
        relative: 0.05,
        seed: 32,
        storage: ExpertStorage::Bf16,
        base_model: BASE_ID.into(),
    };
    let name = |id: &'static str| id.strip_prefix("lorascope-demo/").expect("demo id");
    vec![
        Repo {
            name: name(BASE_ID),
            files: synth_base::base_items(&base_spec()),
        },
        Repo {
            name: "gpt-oss-mini-moe-peft",
            files: adapter_files(&peft, ""),
        },
        Repo {
            name: "gpt-oss-mini-merged",
            files: synth_base::merged_items(&base_spec(), &merge),
        },
    ]
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
    // Health verdicts a new user should see (docs/health.md): expert LoRA whose gate_up factors
    // never left their zero init (unsloth-zoo issue 606: "gate_up dead and down alive"), and an
    // adapter with a NaN block. Rank 2 on q/v keeps both near 1 MB each.
    let mut untrained = spec(
        Pattern::PeftExperts { layers: vec![11] },
        2,
        1,
        Dtype::BF16,
        12,
    );
    untrained.targets = vec!["q_proj", "v_proj"];
    untrained.damage = vec![synth::Damage::new(
        None,
        Some("gate_up_proj"),
        None,
        synth::DamageKind::Dead,
    )];
    let mut nan = spec(Pattern::Attention, 2, 0, Dtype::BF16, 13);
    nan.targets = vec!["q_proj", "v_proj"];
    nan.damage = vec![synth::Damage::new(
        Some(11),
        Some("v_proj"),
        None,
        synth::DamageKind::NonFinite,
    )];
    let mut corrupt = adapter_files(&spec(Pattern::Attention, 4, 0, Dtype::F32, 9), "");
    if let Item::Raw { bytes, .. } = &mut corrupt[0] {
        bytes.truncate(bytes.len() / 2); // an interrupted download
    }
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
            name: "gpt-oss-20b-qv-r8-gguf",
            files: vec![gguf_file("gpt-oss-20b-qv-r8-q8_0.gguf", &qv)],
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
                raw(
                    "model.safetensors",
                    synth::safetensors_bytes(&full.tensors, true),
                ),
                raw("config.json", br#"{"model_type": "gpt_oss"}"#.to_vec()),
            ],
        },
        Repo {
            name: "gpt-oss-20b-multi-adapter",
            files: multi,
        },
        Repo {
            name: "gpt-oss-20b-empty",
            files: vec![
                raw(
                    "adapter_model.safetensors",
                    synth::safetensors_bytes(&[], true),
                ),
                raw(
                    "adapter_config.json",
                    br#"{"peft_type": "LORA", "r": 16, "lora_alpha": 32}"#.to_vec(),
                ),
            ],
        },
        Repo {
            name: "gpt-oss-20b-checkpoint-only",
            files: vec![
                raw(
                    "adapter_config.json",
                    br#"{"peft_type": "LORA", "r": 16, "lora_alpha": 32}"#.to_vec(),
                ),
                raw(
                    "checkpoint-500/adapter_model.bin",
                    b"PK\x03\x04 pickled torch checkpoint".to_vec(),
                ),
            ],
        },
        Repo {
            name: "gpt-oss-20b-corrupt",
            files: corrupt,
        },
        Repo {
            name: "gpt-oss-20b-untrained-experts",
            files: adapter_files(&untrained, ""),
        },
        Repo {
            name: "gpt-oss-20b-nan-block",
            files: adapter_files(&nan, ""),
        },
    ]
    .into_iter()
    .chain(base_repos())
    .collect()
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
        synth::write_hub_repo(dir, &format!("lorascope-demo/{}", r.name), &r.files)
            .map_err(io::Error::other)?;
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
