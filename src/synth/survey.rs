//! The survey of docs/survey.md (140 public gpt-oss-20b adapter repos) rebuilt synthetically: the
//! same patterns, ranks, dtypes and counts, at real gpt-oss-20b shapes. Written as a hub cache with
//! sparse files (real headers and sizes, tensor data left as holes), so ~19 GB of adapters take a
//! few MB of disk. Used by the report tests, the remote survey test and the figures in docs/hub.md.
//!
//! The survey's own numbers do not all add up; where they disagree this keeps every exact count it
//! states and resolves the approximate ones so that the total is its 140 repos:
//! - pattern A: its six groups, 30 + 22 + 20 + 19 + 1 + 1 = 93 repos (it says "91+");
//!   A2 (q/v, r = 8) 2 repos, A3 (q/v, r = 16) 1 repo;
//! - pattern C: 15 repos (its "~15"): r = 16 ×3 (one with experts on layers 7, 15, 23),
//!   r = 64 ×3, r = 8 ×9 (one with experts on layers 0, 7, 10, 15, 23); the survey's "expert rank"
//!   256 / 512 / 2048 is r·E with E = 32;
//! - B 2, D 1, E 1 (19 layers), F 1 (root + 10 sub-adapters, 11 × 192 = 2112 tensors), empty 2;
//! - no safetensors: the remaining 22 (it says "~30", which would exceed 140).
//!
//! Tensor counts follow the layouts rather than the survey where it lists unexplained extras
//! (A2's 144 and D's 338 tensors; E's full weights are its small tensors only).

use crate::synth::{self, Dims, Pattern, Spec};
use safetensors::Dtype;
use std::path::Path;

pub use crate::synth::Item;

/// A synthetic repo and the report row the survey puts it in.
#[derive(Debug, Clone)]
pub struct SurveyRepo {
    pub id: String,
    pub row: &'static str,
    pub items: Vec<Item>,
}

fn spec(pattern: Pattern, r: usize, dtype: Dtype, seed: u64) -> Spec {
    let mut s = Spec::new(Dims::GPT_OSS_20B, pattern);
    s.attn_rank = r;
    s.expert_rank = r;
    s.alpha = 2.0 * r as f64;
    s.dtype = dtype;
    s.seed = seed;
    s.sparse = true;
    s
}

fn adapter(spec: Spec) -> Vec<Item> {
    vec![Item::Adapter {
        sub: String::new(),
        spec,
    }]
}

fn dtype_tag(d: Dtype) -> &'static str {
    if d == Dtype::BF16 {
        "bf16"
    } else {
        "fp32"
    }
}

/// The survey's 140 repos, in a fixed order.
pub fn repos() -> Vec<SurveyRepo> {
    let mut out = Vec::new();
    let mut seed = 0u64;
    let mut next = || {
        seed += 1;
        seed
    };
    let all: Vec<usize> = (0..Dims::GPT_OSS_20B.layers).collect();
    // Pattern A groups: (count, rank, dtype).
    for (n, r, d) in [
        (30, 32, Dtype::F32),
        (22, 128, Dtype::BF16),
        (20, 16, Dtype::F32),
        (19, 8, Dtype::F32),
        (1, 128, Dtype::F32),
        (1, 8, Dtype::BF16),
    ] {
        for i in 0..n {
            out.push(SurveyRepo {
                id: format!("survey/a-r{r}-{}-{i:02}", dtype_tag(d)),
                row: "attention-only",
                items: adapter(spec(Pattern::Attention, r, d, next())),
            });
        }
    }
    for (n, r, name) in [(2, 8, "a2-qv-r8"), (1, 16, "a3-qv-r16")] {
        for i in 0..n {
            let mut s = spec(Pattern::Attention, r, Dtype::F32, next());
            s.targets = vec!["q_proj", "v_proj"];
            out.push(SurveyRepo {
                id: format!("survey/{name}-{i:02}"),
                row: "attention-only",
                items: adapter(s),
            });
        }
    }
    for i in 0..2 {
        out.push(SurveyRepo {
            id: format!("survey/b-router-r8-{i:02}"),
            row: "attention+router",
            items: adapter(spec(Pattern::AttentionRouter, 8, Dtype::F32, next())),
        });
    }
    // Pattern C: (count, r, expert layers of the first repo of the group).
    for (n, r, first) in [
        (3, 16, Some(vec![7, 15, 23])),
        (3, 64, None),
        (9, 8, Some(vec![0, 7, 10, 15, 23])),
    ] {
        for i in 0..n {
            let layers = match (&first, i) {
                (Some(l), 0) => l.clone(),
                _ => all.clone(),
            };
            out.push(SurveyRepo {
                id: format!("survey/c-peft-experts-r{r}-{i:02}"),
                row: "attention+experts per-expert",
                items: adapter(spec(Pattern::PeftExperts { layers }, r, Dtype::F32, next())),
            });
        }
    }
    out.push(SurveyRepo {
        id: "survey/d-tinker-3d-r32".into(),
        row: "attention+experts shared-3d",
        items: adapter(spec(Pattern::Tinker3d, 32, Dtype::F32, next())),
    });
    out.push(SurveyRepo {
        id: "survey/e-merged-19-layers".into(),
        row: "full-weights",
        items: vec![Item::Model {
            spec: spec(
                Pattern::FullWeights {
                    layers: (0..19).collect(),
                },
                0,
                Dtype::BF16,
                next(),
            ),
        }],
    });
    out.push(SurveyRepo {
        id: "survey/f-multi-adapter-r16".into(),
        row: "multi-adapter repos",
        items: std::iter::once(String::new())
            .chain((1..=10).map(|i| format!("lora-{i:02}")))
            .map(|sub| Item::Adapter {
                sub,
                spec: spec(Pattern::Attention, 16, Dtype::F32, next()),
            })
            .collect(),
    });
    for i in 0..2 {
        out.push(SurveyRepo {
            id: format!("survey/empty-{i:02}"),
            row: "empty",
            items: adapter(spec(Pattern::Empty, 16, Dtype::F32, next())),
        });
    }
    let config = br#"{"peft_type": "LORA", "r": 16, "lora_alpha": 32}"#.to_vec();
    let raw = |name: &str, bytes: &[u8]| Item::Raw {
        name: name.into(),
        bytes: bytes.to_vec(),
    };
    for i in 0..22 {
        let items = match i % 3 {
            0 => vec![
                raw("adapter_config.json", &config),
                raw("adapter_model.bin", b"PK\x03\x04 pickled torch weights"),
            ],
            1 => vec![
                raw("adapter_config.json", &config),
                raw(
                    "checkpoint-500/adapter_model.bin",
                    b"PK\x03\x04 pickled torch weights",
                ),
            ],
            _ => vec![raw(
                "README.md",
                b"# training notes, weights not uploaded\n",
            )],
        };
        out.push(SurveyRepo {
            id: format!("survey/no-safetensors-{i:02}"),
            row: "no-safetensors",
            items,
        });
    }
    out
}

/// What was written.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Written {
    pub repos: usize,
    /// Apparent size of all files (what a download would transfer).
    pub bytes: u64,
}

/// Writes `repos` as a hub cache under `root` (`synth::write_hub_repo`: blobs, relative
/// snapshot symlinks, `refs/main`).
pub fn write_cache(root: &Path, repos: &[SurveyRepo]) -> crate::Result<Written> {
    let mut bytes = 0u64;
    for r in repos {
        bytes += synth::write_hub_repo(root, &r.id, &r.items)?;
    }
    Ok(Written {
        repos: repos.len(),
        bytes,
    })
}
