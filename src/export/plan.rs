//! Which delta of the output each delta of the source becomes, under PEFT's names, and what the
//! output cannot carry (said, never silently left out).
//!
//! gpt-oss experts are written as PEFT's `target_parameters` pairs (`ParamWrapper`): on transformers'
//! gpt-oss the experts are 3-D parameters, not modules, so no other PEFT layout loads. mlx-lm's and
//! Tinker's separate gate and up deltas of an expert become one fused gate_up delta, gate on the
//! even rows and up on the odd ones (gpt-oss interleaves them). With `--for peft`, gpt-oss's router
//! (an (E, hidden) parameter, no `nn.Linear`) is a 2-D `target_parameters` entry and an embedding
//! LoRA is PEFT's `Embedding` LoRA. Everything else that is a delta stays a PEFT `Linear` LoRA on
//! the module it adapts.

use crate::adapter::layout::{Delta, DeltaKey, ExpertLayout, Format, Role, Target, MAX_EXPERTS};
use crate::adapter::Adapter;
use crate::error::{Dropped, ExportError};
use serde::Serialize;
use std::collections::BTreeMap;

/// The engine the output is for: it decides what must be left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Peft,
    Vllm,
    Sglang,
}

impl Engine {
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Peft => "peft",
            Engine::Vllm => "vllm",
            Engine::Sglang => "sglang",
        }
    }
}

/// Where an output delta's factors come from (indices into the source's `deltas`).
#[derive(Debug, Clone, PartialEq)]
pub enum Src {
    One(usize),
    /// A gpt-oss gate_up delta fused from an expert's separate gate and up deltas.
    GateUp {
        gate: Option<usize>,
        up: Option<usize>,
    },
}

/// A parameter of gpt-oss's experts, in the order transformers registers them (`GptOssExperts`):
/// PEFT wraps in that order, so gate_up is the inner wrapper (`experts.base_layer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Param {
    GateUp,
    Down,
}

impl Param {
    pub fn name(self) -> &'static str {
        match self {
            Param::GateUp => "gate_up_proj",
            Param::Down => "down_proj",
        }
    }
}

/// Where the output stores a delta.
#[derive(Debug, Clone, PartialEq)]
pub enum Slot {
    /// Its own PEFT `Linear` LoRA: `base_model.model.{module}.lora_{A,B}.weight`.
    Linear { module: String },
    /// PEFT's `Embedding` LoRA of an `nn.Embedding` (V, H):
    /// `base_model.model.{module}.lora_embedding_A` (r, V) and `lora_embedding_B` (H, r), whose
    /// ΔW is (B·A)ᵀ.
    Embedding { module: String },
    /// A 2-D parameter wrapped by PEFT's `ParamWrapper` (`target_parameters` `{module}.{param}`,
    /// one expert: `Linear`'s ΔW = B·A and tensor names), e.g. gpt-oss's router weight.
    Param { module: String, param: &'static str },
    /// Expert `expert` of a packed `target_parameters` pair of `module` (`model.layers.L.mlp.experts`).
    Packed {
        module: String,
        param: Param,
        expert: usize,
    },
}

/// One delta of the output.
#[derive(Debug, Clone)]
pub struct OutDelta {
    /// Its identity in the output (a fused gate/up pair becomes `gate_up_proj`).
    pub key: DeltaKey,
    pub slot: Slot,
    pub src: Src,
}

/// The output's deltas, the experts each packed pair holds, and what is left out.
#[derive(Debug)]
pub struct Plan {
    pub deltas: Vec<OutDelta>,
    /// E of every packed pair (0 without experts).
    pub experts: usize,
    pub dropped: Vec<Dropped>,
}

/// Experts per layer of the gpt-oss models, for a source that adapts only the first ones.
const GPT_OSS_EXPERTS: [(&str, usize); 2] = [("gpt-oss-120b", 128), ("gpt-oss-20b", 32)];

/// Whether the source adapts a gpt-oss model: its config names one, or it has fused gate_up
/// expert deltas (no other model lorascope knows fuses them).
fn is_gpt_oss(a: &Adapter) -> bool {
    let named = a
        .base_model()
        .is_some_and(|b| b.to_ascii_lowercase().contains("gpt-oss"));
    named
        || a.deltas
            .iter()
            .any(|d| d.expert.is_some() && d.target == Target::GateUp)
}

/// An embedding LoRA whose ΔW the reader gives as (V, H), the embedding's own shape: PEFT's
/// `lora_embedding_A/B` and mlx-lm's `LoRAEmbedding` (the reader's `swap`).
fn is_embedding(a: &Adapter, d: &Delta) -> bool {
    a.tensors[d.a.tensor].name.swap
}

/// gpt-oss names attention `self_attn`; Tinker writes `attn`.
fn module_path(a: &Adapter, module: &str, gpt_oss: bool) -> String {
    if gpt_oss && a.format() == Some(Format::Tinker) {
        module.replace(".attn.", ".self_attn.")
    } else {
        module.to_string()
    }
}

/// Plans the output of `a` for `engine`. What the output cannot carry is an error listing it all,
/// unless `drop_unservable`, which leaves it out and lists it in `Plan::dropped`.
pub fn plan(a: &Adapter, engine: Engine, drop_unservable: bool) -> Result<Plan, ExportError> {
    if a.is_dora() || a.config.config().is_some_and(|c| c.use_dora) {
        return Err(ExportError::Refused {
            items: vec![Dropped {
                name: a.id.clone(),
                reason: "DoRA: its update is not s·B·A and cannot be folded into plain LoRA \
                         exactly (export writes plain LoRA)"
                    .into(),
            }],
        });
    }
    let gpt_oss = is_gpt_oss(a);
    let mut left_out = Vec::new();
    for t in &a.tensors {
        let why = match t.name.role {
            Role::Unknown => format!(
                "not understood by lorascope ({})",
                t.name.unknown.as_deref().unwrap_or("unknown role")
            ),
            Role::LoraBias => "LoRA bias (lora_B.bias): export writes factors only".into(),
            Role::TrainableTokens => "trainable tokens: export writes factors only".into(),
            _ => continue,
        };
        left_out.push(Dropped {
            name: t.info.name.clone(),
            reason: why,
        });
    }
    for f in &a.full {
        left_out.push(Dropped {
            name: f.name.clone(),
            reason: "a full tensor (modules_to_save or a saved copy), not a delta: export writes \
                     LoRA factors only"
                .into(),
        });
    }
    let mut deltas = Vec::new();
    // (layer, expert) → (gate, up) of experts whose gate and up are separate deltas.
    let mut split: BTreeMap<(usize, usize), (Option<usize>, Option<usize>)> = BTreeMap::new();
    for (i, d) in a.deltas.iter().enumerate() {
        let drop = |why: &str| Dropped {
            name: d.module.clone() + &d.expert.map_or(String::new(), |e| format!(" expert {e}")),
            reason: why.to_string(),
        };
        match (d.expert, &d.target, d.layer) {
            // transformers' GptOssTopKRouter is no nn.Linear: its (E, hidden) `weight` is reached
            // as a 2-D target parameter, which only PEFT reads.
            (None, Target::Router, _) if gpt_oss => match engine {
                Engine::Peft => deltas.push(OutDelta {
                    key: d.key(),
                    slot: Slot::Param {
                        module: module_path(a, &d.module, gpt_oss),
                        param: "weight",
                    },
                    src: Src::One(i),
                }),
                _ => left_out.push(drop(
                    "router LoRA of gpt-oss: its router is no nn.Linear, so the only PEFT form \
                     is a target parameter (mlp.router.weight), written only with --for peft",
                )),
            },
            (None, _, _) if is_embedding(a, d) => match engine {
                Engine::Peft => deltas.push(OutDelta {
                    key: d.key(),
                    slot: Slot::Embedding {
                        module: d.module.clone(),
                    },
                    src: Src::One(i),
                }),
                _ => left_out.push(drop(
                    "embedding LoRA: written only with --for peft (vLLM's gpt-oss class has no \
                     embedding LoRA; `check --engine` says what an engine serves)",
                )),
            },
            (None, Target::Embed, _) => left_out.push(drop(
                "embedding LoRA saved neither as PEFT's lora_embedding_A/B nor as mlx-lm's \
                 LoRAEmbedding: which side is the vocabulary is unknown",
            )),
            (None, _, _) => deltas.push(OutDelta {
                key: d.key(),
                slot: Slot::Linear {
                    module: module_path(a, &d.module, gpt_oss),
                },
                src: Src::One(i),
            }),
            (Some(_), _, None) => left_out.push(drop("an expert delta with no layer index")),
            (Some(e), Target::GateUp | Target::Down, Some(l)) if gpt_oss => {
                let param = if d.target == Target::GateUp {
                    Param::GateUp
                } else {
                    Param::Down
                };
                deltas.push(packed(l, param, e, Src::One(i)));
            }
            (Some(e), Target::Gate | Target::Up, Some(l)) if gpt_oss => {
                let s = split.entry((l, e)).or_default();
                if d.target == Target::Gate {
                    s.0 = Some(i);
                } else {
                    s.1 = Some(i);
                }
            }
            (Some(_), _, _) if gpt_oss => left_out.push(drop(
                "not an expert parameter of gpt-oss (gate_up_proj, down_proj)",
            )),
            // transformers-v4 MoE models (Mixtral, Qwen-MoE): each expert is an nn.Linear.
            (Some(_), _, _)
                if d.expert_layout == Some(ExpertLayout::ModuleList)
                    && a.format() != Some(Format::Unsloth) =>
            {
                deltas.push(OutDelta {
                    key: d.key(),
                    slot: Slot::Linear {
                        module: d.module.clone(),
                    },
                    src: Src::One(i),
                })
            }
            (Some(_), _, _) => left_out.push(drop(
                "3-D expert LoRA of a model other than gpt-oss: export writes no PEFT layout for \
                 it yet",
            )),
        }
    }
    for ((l, e), (gate, up)) in split {
        deltas.push(packed(l, Param::GateUp, e, Src::GateUp { gate, up }));
    }
    if engine == Engine::Sglang {
        // SGLang's LoRA config has no target_parameters: packed experts would not be applied.
        deltas.retain(|d| {
            let keep = matches!(d.slot, Slot::Linear { .. });
            if !keep {
                left_out.push(Dropped {
                    name: format!("{} expert {}", d.key.target, d.key.expert.unwrap_or(0)),
                    reason: "SGLang does not read PEFT's target_parameters: expert LoRA of \
                             gpt-oss is not applied"
                        .into(),
                });
            }
            keep
        });
    }
    if !left_out.is_empty() && !drop_unservable {
        return Err(ExportError::Refused { items: left_out });
    }
    if deltas.is_empty() {
        return Err(ExportError::Nothing);
    }
    let max_expert = deltas
        .iter()
        .filter(|d| matches!(d.slot, Slot::Packed { .. }))
        .filter_map(|d| d.key.expert)
        .max();
    // An expert index comes from a tensor name: bound what a packed pair may be asked to hold.
    if let Some(m) = max_expert.filter(|&m| m >= MAX_EXPERTS) {
        return Err(ExportError::Option(format!(
            "expert index {m} is above the {MAX_EXPERTS} experts a packed pair may hold"
        )));
    }
    let experts = max_expert.map_or(0, |m| {
        let known = a.base_model().and_then(|b| {
            let b = b.to_ascii_lowercase();
            GPT_OSS_EXPERTS
                .iter()
                .find(|(name, _)| b.contains(name))
                .map(|(_, e)| *e)
        });
        known.unwrap_or(0).max(m + 1)
    });
    deltas.sort_by(|x, y| x.key.cmp(&y.key));
    Ok(Plan {
        deltas,
        experts,
        dropped: left_out,
    })
}

fn packed(layer: usize, param: Param, expert: usize, src: Src) -> OutDelta {
    let target = match param {
        Param::GateUp => Target::GateUp,
        Param::Down => Target::Down,
    };
    OutDelta {
        key: DeltaKey::new(Some(layer), target, Some(expert)),
        slot: Slot::Packed {
            module: format!("model.layers.{layer}.mlp.experts"),
            param,
            expert,
        },
        src,
    }
}
