//! Serving readiness: will vLLM or SGLang load the adapter and apply every part of it? One table
//! of rules per engine; each rule has an id, a severity, a finding code, the upstream file that
//! states it (docs/health.md quotes them) and a test on the adapter's headers and config (no
//! tensor data is read).

use super::{code, list, place, EngineVerdict, Finding, Serving, Severity, Verdict};
use crate::adapter::layout::{ExpertLayout, Format, Role};
use crate::adapter::{Adapter, Kind};
use std::collections::{BTreeMap, BTreeSet};

/// vLLM's allowed `--max-lora-rank` values; 16 is the default
/// (vllm/config/lora.py `MaxLoRARanks`, `max_lora_rank: MaxLoRARanks = 16`).
pub const VLLM_RANKS: [usize; 9] = [1, 8, 16, 32, 64, 128, 256, 320, 512];
pub const VLLM_DEFAULT_RANK: usize = 16;

/// What the rules look at, gathered once from headers and config.
pub struct Facts<'a> {
    pub adapter: &'a Adapter,
    /// Per layer with expert LoRA: has gate_up (fused, or gate and up), has down.
    pub moe_layers: BTreeMap<Option<usize>, (bool, bool)>,
    /// 2D per-expert layouts: (layer, expert) pairs missing gate/up/down, with what is missing.
    pub incomplete_experts: Vec<(Option<usize>, usize, Vec<&'static str>)>,
    pub layout: Option<ExpertLayout>,
    pub roles: Vec<Role>,
    pub max_rank: usize,
    pub gpt_oss: bool,
}

impl<'a> Facts<'a> {
    pub fn of(a: &'a Adapter) -> Facts<'a> {
        let mut moe_layers: BTreeMap<Option<usize>, (bool, bool)> = BTreeMap::new();
        for d in a.deltas.iter().filter(|d| d.target.is_expert()) {
            let e = moe_layers.entry(d.layer).or_default();
            match d.target.as_str() {
                "down_proj" => e.1 = true,
                _ => e.0 = true,
            }
        }
        let layout = a.expert_layout();
        let mut incomplete_experts = vec![];
        if layout == Some(ExpertLayout::ModuleList) {
            let n = a.experts().unwrap_or(0);
            let mut have: BTreeMap<(Option<usize>, usize), BTreeSet<&str>> = BTreeMap::new();
            for d in a.deltas.iter().filter(|d| d.target.is_expert()) {
                if let Some(e) = d.expert {
                    have.entry((d.layer, e))
                        .or_default()
                        .insert(d.target.as_str());
                }
            }
            let layers: BTreeSet<Option<usize>> = have.keys().map(|k| k.0).collect();
            for layer in layers {
                for e in 0..n {
                    let t = have.get(&(layer, e)).cloned().unwrap_or_default();
                    let fused = t.contains("gate_up_proj");
                    let mut missing = vec![];
                    if !fused && !t.contains("gate_proj") {
                        missing.push("gate");
                    }
                    if !fused && !t.contains("up_proj") {
                        missing.push("up");
                    }
                    if !t.contains("down_proj") {
                        missing.push("down");
                    }
                    if !missing.is_empty() {
                        incomplete_experts.push((layer, e, missing));
                    }
                }
            }
        }
        let base = a.base_model().unwrap_or_default().to_lowercase();
        Facts {
            adapter: a,
            moe_layers,
            incomplete_experts,
            layout,
            roles: {
                let mut r: Vec<Role> = vec![];
                for t in &a.tensors {
                    if !r.contains(&t.name.role) {
                        r.push(t.name.role);
                    }
                }
                r
            },
            max_rank: a.deltas.iter().map(|d| d.rank).max().unwrap_or(0),
            gpt_oss: base.contains("gpt-oss") || base.contains("gpt_oss"),
        }
    }

    fn config(&self) -> Option<&crate::adapter::config::AdapterConfig> {
        self.adapter.config.config()
    }

    fn dora(&self) -> bool {
        self.config().is_some_and(|c| c.use_dora) || self.roles.contains(&Role::DoraMagnitude)
    }

    fn full_targets(&self) -> Vec<&str> {
        let mut t: Vec<&str> = self
            .adapter
            .full
            .iter()
            .map(|f| f.target.as_str())
            .collect();
        t.sort();
        t.dedup();
        t
    }

    fn delta_targets(&self, pick: &[&str]) -> bool {
        self.adapter
            .deltas
            .iter()
            .any(|d| pick.contains(&d.target.as_str()))
    }

    /// Layers whose expert LoRA has gate_up but no down (`gate_up_only`) or the reverse.
    fn one_sided(&self, gate_up_only: bool) -> Vec<Option<usize>> {
        self.moe_layers
            .iter()
            .filter(|(_, &(g, d))| if gate_up_only { g && !d } else { d && !g })
            .map(|(l, _)| *l)
            .collect()
    }
}

/// What a rule says about an adapter when it fires: a sentence and where.
pub struct Hit {
    pub message: String,
    pub layer: Option<usize>,
    pub target: Option<String>,
    pub expert: Option<usize>,
}

impl Hit {
    fn new(message: String) -> Option<Hit> {
        Some(Hit {
            message,
            layer: None,
            target: None,
            expert: None,
        })
    }
}

/// One serving rule.
pub struct Rule {
    pub id: &'static str,
    pub severity: Severity,
    pub code: &'static str,
    /// The upstream file (and function) that states the rule.
    pub source: &'static str,
    pub check: fn(&Facts) -> Option<Hit>,
}

fn layers_text(layers: &[Option<usize>]) -> String {
    let l: Vec<usize> = layers.iter().filter_map(|x| *x).collect();
    if l.is_empty() {
        "the expert layers".into()
    } else {
        format!("layer{} {}", if l.len() == 1 { "" } else { "s" }, list(&l))
    }
}

fn first_layer(layers: &[Option<usize>]) -> Option<usize> {
    layers.first().copied().flatten()
}

fn one_sided_hit(f: &Facts, gate_up_only: bool, what: &str) -> Option<Hit> {
    let l = f.one_sided(gate_up_only);
    if l.is_empty() {
        return None;
    }
    let (has, lacks) = if gate_up_only {
        ("gate_up", "down")
    } else {
        ("down", "gate_up")
    };
    let mut h = Hit::new(format!(
        "expert LoRA on {has} but not {lacks} in {}: {what}",
        layers_text(&l)
    ))?;
    h.layer = first_layer(&l);
    h.target = Some(
        if gate_up_only {
            "gate_up_proj"
        } else {
            "down_proj"
        }
        .into(),
    );
    Some(h)
}

fn rank_needed(r: usize) -> Option<usize> {
    VLLM_RANKS.iter().copied().find(|&x| x >= r)
}

/// vLLM's rules (vllm-project/vllm; paths as in docs/health.md).
pub const VLLM: &[Rule] = &[
    Rule {
        id: "vllm.moe-3d-missing-down",
        severity: Severity::Error,
        code: code::SERVE_DROPPED,
        source: "vllm/lora/model_manager.py _stack_moe_lora_weights, activate_adapter (reset_lora)",
        check: |f| one_sided_hit(f, true, "vLLM loads gate_up but never applies it (the down entry drives the stacking)"),
    },
    Rule {
        id: "vllm.moe-3d-missing-gate-up",
        severity: Severity::Error,
        code: code::SERVE_REFUSED,
        source: "vllm/lora/model_manager.py _stack_moe_lora_weights (assert gate_up_proj_lora is not None)",
        check: |f| one_sided_hit(f, false, "vLLM's loader asserts that both are present"),
    },
    Rule {
        id: "vllm.moe-2d-incomplete-expert",
        severity: Severity::Error,
        code: code::SERVE_REFUSED,
        source: "vllm/lora/lora_weights.py PackedLoRALayerWeights.pack_moe (assert w1/w2/w3_lora is not None)",
        check: |f| {
            let (layer, e, missing) = f.incomplete_experts.first()?;
            let mut h = Hit::new(format!(
                "{} experts lack one of gate/up/down, e.g. {} lacks {}: vLLM refuses per-expert LoRA that is incomplete",
                f.incomplete_experts.len(),
                place(*layer, &format!("expert {e}"), None),
                missing.join(", ")
            ))?;
            h.layer = *layer;
            h.expert = Some(*e);
            Some(h)
        },
    },
    Rule {
        id: "vllm.moe-2d-on-3d-model",
        severity: Severity::Error,
        code: code::SERVE_REFUSED,
        source: "vllm/lora/lora_model.py check_unexpected_modules; vllm/model_executor/models/gpt_oss.py is_3d_moe_weight",
        check: |f| {
            (f.gpt_oss && f.layout == Some(ExpertLayout::ModuleList)).then(|| Hit {
                message: "per-expert 2D expert LoRA on gpt-oss, whose experts are 3D: vLLM refuses it (unexpected modules) unless started with --enable-mixed-moe-lora-format, and refuses names outside the model's expert mapping (Unsloth's gate_up_projs.{e}) in every mode".into(),
                layer: None,
                target: None,
                expert: None,
            })
        },
    },
    Rule {
        id: "vllm.moe-shared-3d",
        severity: Severity::Warning,
        code: code::SERVE_FLAG,
        source: "vllm/lora/lora_weights.py pack_moe_stacked; vllm/config/lora.py enable_moe_shared_loras",
        check: |f| {
            (f.layout == Some(ExpertLayout::Shared3d)).then(|| Hit {
                message: "3D stacked expert LoRA (factors per expert or shared across experts): vLLM needs --enable-moe-shared-loras, and on gpt-oss probably --enable-mixed-moe-lora-format too (unverified)".into(),
                layer: None,
                target: None,
                expert: None,
            })
        },
    },
    Rule {
        id: "vllm.tensor-names",
        severity: Severity::Error,
        code: code::SERVE_REFUSED,
        source: "vllm/lora/utils.py parse_fine_tuned_lora_name (\"is unsupported LoRA weight\")",
        check: |f| {
            let fmt = f.adapter.format();
            let foreign = matches!(fmt, Some(Format::Mlx | Format::Kohya | Format::Lycoris));
            let unknown = f.roles.contains(&Role::Unknown);
            (foreign || unknown).then(|| Hit {
                message: format!(
                    "tensor names vLLM does not parse ({}): only *.lora_A.weight / *.lora_B.weight (and lora_embedding_A/B) load",
                    if foreign { format!("{} naming", fmt.map_or("", Format::as_str)) } else { "tensors not understood".into() }
                ),
                layer: None,
                target: None,
                expert: None,
            })
        },
    },
    Rule {
        id: "vllm.modules-to-save",
        severity: Severity::Error,
        code: code::SERVE_REFUSED,
        source: "vllm/lora/peft_helper.py PEFTHelper._validate_features (\"vLLM only supports modules_to_save being None\")",
        check: |f| {
            let cfg: Vec<String> = f.config().map(|c| c.modules_to_save.clone()).unwrap_or_default();
            let full = f.full_targets();
            if f.adapter.kind != Kind::Lora || (cfg.is_empty() && full.is_empty()) {
                return None;
            }
            let what = if cfg.is_empty() { full.join(", ") } else { cfg.join(", ") };
            let mut h = Hit::new(format!(
                "modules_to_save ({what}): vLLM refuses adapters with full module copies"
            ))?;
            h.target = full.first().map(|t| t.to_string());
            Some(h)
        },
    },
    Rule {
        id: "vllm.dora",
        severity: Severity::Error,
        code: code::SERVE_REFUSED,
        source: "vllm/lora/peft_helper.py PEFTHelper._validate_features (\"vLLM does not yet support DoRA.\")",
        check: |f| f.dora().then(|| Hit {
            message: "DoRA adapter: vLLM does not support DoRA".into(),
            layer: None,
            target: None,
            expert: None,
        }),
    },
    Rule {
        id: "vllm.bias",
        severity: Severity::Error,
        code: code::SERVE_REFUSED,
        source: "vllm/lora/peft_helper.py PEFTHelper.validate_legal (\"Adapter bias is not supported.\")",
        check: |f| f.roles.contains(&Role::LoraBias).then(|| Hit {
            message: "LoRA bias tensors (lora_B.bias): vLLM does not support adapter bias".into(),
            layer: None,
            target: None,
            expert: None,
        }),
    },
    Rule {
        id: "vllm.trainable-tokens",
        severity: Severity::Error,
        code: code::SERVE_REFUSED,
        source: "vllm/lora/utils.py parse_fine_tuned_lora_name (trainable_tokens_delta is not a LoRA weight)",
        check: |f| f.roles.contains(&Role::TrainableTokens).then(|| Hit {
            message: "trainable tokens (trainable_tokens_delta): refused unless your vLLM has --max-lora-trainable-tokens".into(),
            layer: None,
            target: None,
            expert: None,
        }),
    },
    Rule {
        id: "vllm.embedding",
        severity: Severity::Warning,
        code: code::SERVE_UNVERIFIED,
        source: "vllm/lora/lora_model.py from_lora_tensors (embedding LoRA size must match the base vocabulary)",
        check: |f| f.delta_targets(&["embed_tokens", "lm_head"]).then(|| Hit {
            message: "embedding / lm_head LoRA: vLLM loads it only when the vocabulary was not resized; gpt-oss support unverified".into(),
            layer: None,
            target: Some("embed_tokens".into()),
            expert: None,
        }),
    },
    Rule {
        id: "vllm.rank",
        severity: Severity::Warning,
        code: code::SERVE_FLAG,
        source: "vllm/config/lora.py max_lora_rank (default 16); vllm/lora/peft_helper.py validate_legal",
        check: |f| {
            (f.max_rank > VLLM_DEFAULT_RANK).then(|| Hit {
                message: match rank_needed(f.max_rank) {
                    Some(n) => format!("rank {} is above vLLM's default --max-lora-rank 16: needs --max-lora-rank {n}", f.max_rank),
                    None => format!("rank {} is above vLLM's largest --max-lora-rank 512: refused", f.max_rank),
                },
                layer: None,
                target: None,
                expert: None,
            })
        },
    },
    Rule {
        id: "vllm.rank-pattern",
        severity: Severity::Warning,
        code: code::SERVE_SCALE,
        source: "vllm/lora/peft_helper.py PEFTHelper (no rank_pattern/alpha_pattern field; one scaling for all modules)",
        check: |f| {
            let c = f.config()?;
            let differs = c.rank_pattern.entries().iter().any(|(_, r)| *r != c.r)
                || c.alpha_pattern.entries().iter().any(|(_, a)| *a != c.lora_alpha);
            differs.then(|| Hit {
                message: "rank_pattern/alpha_pattern: vLLM versions that apply one alpha/r to every module serve some deltas at another scale (depends on the vLLM version)".into(),
                layer: None,
                target: None,
                expert: None,
            })
        },
    },
    Rule {
        id: "vllm.router-lora",
        severity: Severity::Info,
        code: code::SERVE_UNVERIFIED,
        source: "vllm/lora/utils.py get_supported_lora_modules; vllm/lora/layers/gate_linear.py",
        check: |f| f.delta_targets(&["router"]).then(|| Hit {
            message: "LoRA on the router: supported only by vLLM versions whose gpt-oss router is a GateLinear".into(),
            layer: None,
            target: Some("router".into()),
            expert: None,
        }),
    },
];

/// SGLang's rules (sgl-project/sglang, python/sglang/srt/lora/…).
pub const SGLANG: &[Rule] = &[
    Rule {
        id: "sglang.moe-one-sided",
        severity: Severity::Error,
        code: code::SERVE_DROPPED,
        source: "python/sglang/srt/lora/lora_manager.py init_lora_modules (FusedMoE wrapped only when both gate_up_proj and down_proj are targets); sgl-project/sglang#32376",
        check: |f| {
            one_sided_hit(f, true, "SGLang does not wrap the MoE layer, the expert LoRA is never applied")
                .or_else(|| one_sided_hit(f, false, "SGLang does not wrap the MoE layer, the expert LoRA is never applied"))
        },
    },
    Rule {
        id: "sglang.moe-layouts",
        severity: Severity::Warning,
        code: code::SERVE_UNVERIFIED,
        source: "python/sglang/srt/lora/lora.py _ROUTED_EXPERT_PATTERN; sgl-project/sglang#21375 (gpt-oss MoE LoRA, closed)",
        check: |f| {
            let msg = match f.layout? {
                ExpertLayout::PerExpert => "PEFT's packed experts.base_layer expert LoRA: no SGLang code reads this layout",
                ExpertLayout::ModuleList if f.adapter.format() == Some(Format::Unsloth) => "Unsloth's gate_up_projs.{e} expert names: SGLang matches only experts.{e}.{gate,up,down}_proj",
                _ if f.gpt_oss => "expert LoRA on gpt-oss: SGLang's gpt-oss MoE LoRA support was not merged (PR #21375 closed)",
                _ => return None,
            };
            Hit::new(msg.into())
        },
    },
    Rule {
        id: "sglang.modules-to-save",
        severity: Severity::Error,
        code: code::SERVE_DROPPED,
        source: "python/sglang/srt/lora/lora_config.py (never reads modules_to_save); lora.py _process_weight",
        check: |f| {
            if f.adapter.kind != Kind::Lora {
                return None;
            }
            let full = f.full_targets();
            full.contains(&"router").then(|| Hit {
                message: "the saved router (modules_to_save) is ignored by SGLang: the served model routes tokens as the base model does, not as the trained one".into(),
                layer: None,
                target: Some("router".into()),
                expert: None,
            })
        },
    },
    Rule {
        id: "sglang.modules-to-save-other",
        severity: Severity::Warning,
        code: code::SERVE_DROPPED,
        source: "python/sglang/srt/lora/lora_config.py (never reads modules_to_save); lora.py _process_weight",
        check: |f| {
            if f.adapter.kind != Kind::Lora {
                return None;
            }
            let other: Vec<&str> = f.full_targets().into_iter().filter(|t| *t != "router").collect();
            let first = other.first()?.to_string();
            let mut h = Hit::new(format!(
                "full module copies ({}) are ignored by SGLang (unverified)",
                other.join(", ")
            ))?;
            h.target = Some(first);
            Some(h)
        },
    },
    Rule {
        id: "sglang.dora",
        severity: Severity::Error,
        code: code::SERVE_REFUSED,
        source: "python/sglang/srt/lora/lora_manager.py validate_new_adapter (\"doesn't support DoRA adapters\")",
        check: |f| f.dora().then(|| Hit {
            message: "DoRA adapter: SGLang does not support DoRA".into(),
            layer: None,
            target: None,
            expert: None,
        }),
    },
    Rule {
        id: "sglang.rslora",
        severity: Severity::Warning,
        code: code::SERVE_SCALE,
        source: "python/sglang/srt/lora/lora.py LoRAAdapter.__init__ (scaling = lora_alpha / r)",
        check: |f| f.config().is_some_and(|c| c.use_rslora).then(|| Hit {
            message: "rsLoRA: SGLang scales by alpha/r, not alpha/√r: the served delta is √r times too small".into(),
            layer: None,
            target: None,
            expert: None,
        }),
    },
    Rule {
        id: "sglang.router-lora",
        severity: Severity::Warning,
        code: code::SERVE_DROPPED,
        source: "python/sglang/srt/lora/utils.py _KNOWN_LORA_TARGET_MODULES (no router/gate)",
        check: |f| f.delta_targets(&["router"]).then(|| Hit {
            message: "LoRA on the router: not a target SGLang knows (unverified)".into(),
            layer: None,
            target: Some("router".into()),
            expert: None,
        }),
    },
    Rule {
        id: "sglang.bias-trainable-tokens",
        severity: Severity::Info,
        code: code::SERVE_UNVERIFIED,
        source: "python/sglang/srt/lora/lora_config.py, lora.py (no handling of lora_B.bias or trainable_tokens_delta found)",
        check: |f| (f.roles.contains(&Role::LoraBias) || f.roles.contains(&Role::TrainableTokens)).then(|| Hit {
            message: "LoRA bias or trainable tokens: no SGLang code handles them (unverified)".into(),
            layer: None,
            target: None,
            expert: None,
        }),
    },
];

fn run(rules: &[Rule], facts: &Facts) -> EngineVerdict {
    let findings: Vec<Finding> = rules
        .iter()
        .filter_map(|r| {
            let h = (r.check)(facts)?;
            let mut f = Finding::new(r.code, r.severity, h.message);
            f.layer = h.layer;
            f.target = h.target;
            f.expert = h.expert;
            f.rule = Some(r.id);
            f.source = Some(r.source);
            Some(f)
        })
        .collect();
    EngineVerdict {
        applies: true,
        verdict: Verdict::of(findings.iter()),
        findings,
    }
}

/// Both engines' verdicts on an adapter (headers and config only). Adapters that are not LoRA
/// (errors, empty files, merged weights) are no engine's business: not applicable.
pub fn judge(a: &Adapter) -> Serving {
    if a.kind != Kind::Lora {
        let na = EngineVerdict {
            applies: false,
            verdict: Verdict::Ok,
            findings: vec![],
        };
        return Serving {
            vllm: na.clone(),
            sglang: na,
        };
    }
    let facts = Facts::of(a);
    Serving {
        vllm: run(VLLM, &facts),
        sglang: run(SGLANG, &facts),
    }
}
