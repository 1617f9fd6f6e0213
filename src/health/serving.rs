//! Serving readiness: will vLLM or SGLang load the adapter and apply every part of it? One table
//! of rules per engine, as data: id, engine, severity, effect (refused, dropped, scale, flag,
//! wrong base, unverified), the engine version read, the upstream file and function that state
//! it, and a test on the adapter's headers and config (no tensor data is read). `check`, the
//! explorer's Health tab, `report --health`, SARIF and the tables of docs/health.md all come
//! from these tables.

use super::{code, list, place, EngineVerdict, Finding, Health, Serving, Severity, Verdict};
use crate::adapter::layout::{ExpertLayout, Format, Role};
use crate::adapter::{Adapter, Kind};
use serde::Serialize;
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
    /// Layers whose PEFT `target_parameters` gate_up factors are stored the other way round.
    pub transposed: Vec<Option<usize>>,
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
            transposed: transposed_layers(a),
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

    /// Targets of full tensors inside the layers (a saved router, norms).
    fn layered_full(&self) -> Vec<&str> {
        let mut t: Vec<&str> = self
            .adapter
            .full
            .iter()
            .filter(|f| f.layer.is_some())
            .map(|f| f.target.as_str())
            .collect();
        t.sort();
        t.dedup();
        t
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

/// Layers whose PEFT packed gate_up pair is transposed: lora_A's input is the 2·intermediate
/// side and lora_B's output the hidden side (PEFT 0.19.x on transformers 5, PEFT ≥ 0.20 on
/// transformers 4; PEFT PR 3165). Told from down_proj's sides in the same layer: gate_up read
/// as (out, in) is then (down's hidden side, 2 × down's intermediate side). gpt-oss-20b's
/// down_proj is square, so its own orientation cannot be told and follows gate_up's.
fn transposed_layers(a: &Adapter) -> Vec<Option<usize>> {
    let packed = |d: &&crate::adapter::layout::Delta, t: &str| {
        d.expert_layout == Some(ExpertLayout::PerExpert) && d.target.as_str() == t
    };
    let mut layers: BTreeSet<Option<usize>> = BTreeSet::new();
    for g in a.deltas.iter().filter(|d| packed(d, "gate_up_proj")) {
        let Some(down) = a
            .deltas
            .iter()
            .find(|d| packed(d, "down_proj") && d.layer == g.layer)
        else {
            continue;
        };
        let sides = [down.out_dim, down.in_dim];
        let fits = g.out_dim == 2 * down.in_dim && g.in_dim == down.out_dim;
        let swapped = g.in_dim % 2 == 0
            && sides.contains(&g.out_dim)
            && sides.contains(&(g.in_dim / 2))
            && g.out_dim + g.in_dim / 2 == down.out_dim + down.in_dim;
        if swapped && !fits {
            layers.insert(g.layer);
        }
    }
    layers.into_iter().collect()
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

/// The engine a rule is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Vllm,
    Sglang,
}

impl Engine {
    pub const ALL: [Engine; 2] = [Engine::Vllm, Engine::Sglang];

    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Vllm => "vllm",
            Engine::Sglang => "sglang",
        }
    }

    /// The name people know it by ("vLLM").
    pub fn label(self) -> &'static str {
        match self {
            Engine::Vllm => "vLLM",
            Engine::Sglang => "SGLang",
        }
    }

    /// Its rule table.
    pub fn rules(self) -> &'static [Rule] {
        match self {
            Engine::Vllm => VLLM,
            Engine::Sglang => SGLANG,
        }
    }
}

/// What the engine does with an adapter the rule fires on, as its code shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Effect {
    /// The load fails with an error.
    Refused,
    /// It loads, but part of the adapter is never applied.
    Dropped,
    /// It loads, but the served delta has another scale.
    Scale,
    /// It loads only with a non-default server option.
    Flag,
    /// It loads as a plain LoRA onto the unmodified base, which is not the base it was trained
    /// on (PiSSA-like inits): the served model is another model.
    WrongBase,
    /// The code read does not settle it; the rule's message says what is missing.
    Unverified,
}

impl Effect {
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Refused => "refused",
            Effect::Dropped => "dropped",
            Effect::Scale => "scale",
            Effect::Flag => "flag",
            Effect::WrongBase => "wrong-base",
            Effect::Unverified => "unverified",
        }
    }

    /// Whether the engine serves something other than the adapter (part of it refused, dropped,
    /// rescaled or applied to another base): what `export` must not write.
    pub fn unservable(self) -> bool {
        !matches!(self, Effect::Flag | Effect::Unverified)
    }

    /// The finding code a rule with this effect raises.
    pub fn code(self) -> &'static str {
        match self {
            Effect::Refused => code::SERVE_REFUSED,
            Effect::Dropped => code::SERVE_DROPPED,
            Effect::Scale => code::SERVE_SCALE,
            Effect::Flag => code::SERVE_FLAG,
            Effect::WrongBase => code::SERVE_WRONG_BASE,
            Effect::Unverified => code::SERVE_UNVERIFIED,
        }
    }
}

/// One serving rule: a row of the rule table (docs/health.md renders the same rows, checked by
/// a test, and `check --format sarif` lists them as the tool's rules).
pub struct Rule {
    pub id: &'static str,
    pub engine: Engine,
    pub severity: Severity,
    pub effect: Effect,
    /// When it fires, in a few words (SARIF's shortDescription).
    pub condition: &'static str,
    /// The engine version(s) whose code was read: a commit of the engine's repository.
    pub versions: &'static str,
    /// The upstream file and function that state the rule.
    pub source: &'static str,
    pub check: fn(&Facts) -> Option<Hit>,
}

impl Rule {
    pub fn code(&self) -> &'static str {
        self.effect.code()
    }

    /// Its anchor in docs/health.md (`vllm.dora` → `vllm-dora`).
    pub fn anchor(&self) -> String {
        self.id.replace('.', "-")
    }
}

/// Every rule, vLLM's then SGLang's.
pub fn all_rules() -> impl Iterator<Item = &'static Rule> {
    VLLM.iter().chain(SGLANG)
}

/// The rule with this id.
pub fn rule(id: &str) -> Option<&'static Rule> {
    all_rules().find(|r| r.id == id)
}

/// An engine's rule table as docs/health.md shows it (tests/health.rs keeps the two equal).
pub fn markdown_table(engine: Engine) -> String {
    let mut s = String::from(
        "| rule | severity / effect | condition | versions read | source (file, function) |\n\
         |---|---|---|---|---|\n",
    );
    for r in engine.rules() {
        s.push_str(&format!(
            "| <a id=\"{}\"></a>`{}` | {} / {} | {} | {} | {} |\n",
            r.anchor(),
            r.id,
            r.severity.as_str(),
            r.effect.as_str(),
            r.condition.replace('|', "\\|"),
            r.versions.replace('|', "\\|"),
            r.source.replace('|', "\\|"),
        ));
    }
    s
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

/// The smallest `--max-lora-rank` vLLM accepts that holds rank `r`.
pub fn rank_needed(r: usize) -> Option<usize> {
    VLLM_RANKS.iter().copied().find(|&x| x >= r)
}

fn transposed_hit(f: &Facts, what: &str) -> Option<Hit> {
    let l = &f.transposed;
    if l.is_empty() {
        return None;
    }
    let mut h = Hit::new(format!(
        "the expert factors of {} are stored the other way round (gate_up lora_A has the \
         intermediate side as its input, as PEFT 0.19.x on transformers 5 and PEFT ≥ 0.20 on \
         transformers 4 wrote them; fixed in PEFT 0.20 by PR 3165): {what}; down_proj follows \
         gate_up's orientation in the same file",
        layers_text(l)
    ))?;
    h.layer = first_layer(l);
    h.target = Some("gate_up_proj".into());
    Some(h)
}

/// PEFT inits that rewrite the base weights when the adapter is created (PEFT
/// `src/peft/tuners/lora/layer.py` `update_layer`: pissa, corda, olora, loftq); EVA, gaussian,
/// orthogonal and mica only set the adapter's own initial values.
pub fn base_changing_init(c: &crate::adapter::config::AdapterConfig) -> Option<String> {
    let init = c.init_lora_weights.as_deref()?.to_lowercase();
    ["pissa", "olora", "corda", "loftq"]
        .iter()
        .any(|k| init.starts_with(k))
        .then_some(init)
}

const V_VLLM_RUNTIME: &str = "vllm-project/vllm @055e47c (vllm/runtime/modeling/lora/*); the same code in vllm/lora/* before it moved";
const V_VLLM_HELPER: &str =
    "vllm/lora/peft_helper.py: @e745baf and the newest stored text (commit not attributable)";
const V_SGLANG_CONFIG: &str =
    "sgl-project/sglang: newest stored python/sglang/srt/lora/lora_config.py (commit 0ceb81f)";
const V_SGLANG_POOL: &str = "sgl-project/sglang: newest stored mem_pool.py (with --lora-strict-loading) and utils.py (commits not attributable)";

/// vLLM's rules (vllm-project/vllm; docs/health.md quotes each).
pub const VLLM: &[Rule] = &[
    Rule {
        id: "vllm.config",
        engine: Engine::Vllm,
        severity: Severity::Error,
        effect: Effect::Refused,
        condition: "adapter_config.json missing, unreadable, not a JSON object, r or lora_alpha not a positive number, or r, lora_alpha or target_modules absent",
        versions: V_VLLM_HELPER,
        source: "peft_helper.py PEFTHelper.from_local_dir (open(adapter_config.json), json.load) and from_dict (\"Missing required configuration fields\" for r, lora_alpha, target_modules); __post_init__ divides lora_alpha by r",
        check: |f| {
            let why = f.adapter.config.unloadable()?;
            Hit::new(format!("{why}: vLLM cannot load the adapter without a PEFT config it can read"))
        },
    },
    Rule {
        id: "vllm.moe-3d-missing-down",
        engine: Engine::Vllm,
        severity: Severity::Error,
        effect: Effect::Dropped,
        condition: "a layer has expert LoRA on gate_up but not on down",
        versions: V_VLLM_RUNTIME,
        source: "model_manager.py _stack_moe_lora_weights runs only for the down entry (\"experts.base_layer is the gate_up_proj and experts is the down_proj\"); activate_adapter then calls reset_lora (\"No LoRA weights found for module %s, skipping.\")",
        check: |f| one_sided_hit(f, true, "vLLM loads gate_up but never applies it (the down entry drives the stacking)"),
    },
    Rule {
        id: "vllm.moe-3d-missing-gate-up",
        engine: Engine::Vllm,
        severity: Severity::Error,
        effect: Effect::Refused,
        condition: "a layer has expert LoRA on down but not on gate_up",
        versions: V_VLLM_RUNTIME,
        source: "model_manager.py _stack_moe_lora_weights: assert gate_up_proj_lora is not None",
        check: |f| one_sided_hit(f, false, "vLLM's loader asserts that both are present"),
    },
    Rule {
        id: "vllm.moe-2d-incomplete-expert",
        engine: Engine::Vllm,
        severity: Severity::Error,
        effect: Effect::Refused,
        condition: "a 2-D per-expert adapter lacks gate, up or down for some expert of a layer with expert LoRA",
        versions: V_VLLM_RUNTIME,
        source: "lora_weights.py PackedLoRALayerWeights.pack_moe: \"Consider the case where some experts don't have LoRA added\", assert w1_lora / w2_lora / w3_lora is not None",
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
        engine: Engine::Vllm,
        severity: Severity::Warning,
        effect: Effect::Flag,
        condition: "2-D per-expert LoRA named experts.{e}.{gate,up,down}_proj on gpt-oss (3-D experts)",
        versions: V_VLLM_RUNTIME,
        source: "lora_model.py check_unexpected_modules (expert names outside expected_lora_modules → ValueError); utils.py process_packed_modules_mapping adds per-expert names only for 2-D models or with enable_mixed_moe_lora_format; gpt_oss.py is_3d_moe_weight = True",
        check: |f| {
            (f.gpt_oss
                && f.layout == Some(ExpertLayout::ModuleList)
                && f.adapter.format() != Some(Format::Unsloth))
            .then(|| Hit {
                message: "per-expert 2-D expert LoRA on gpt-oss, whose experts are 3-D: vLLM loads it only when started with --enable-mixed-moe-lora-format (versions without that option refuse it)".into(),
                layer: None,
                target: None,
                expert: None,
            })
        },
    },
    Rule {
        id: "vllm.moe-unsloth-names",
        engine: Engine::Vllm,
        severity: Severity::Error,
        effect: Effect::Refused,
        condition: "Unsloth's per-expert names experts.gate_up_projs.{e} / down_projs.{e}",
        versions: V_VLLM_RUNTIME,
        source: "lora_model.py check_unexpected_modules: the expert suffix must be a name of the model's expert mapping (get_moe_expert_mapping: experts.{e}.gate_proj/up_proj/down_proj), else ValueError \"expected target modules in … but received …\"",
        check: |f| {
            (f.layout == Some(ExpertLayout::ModuleList) && f.adapter.format() == Some(Format::Unsloth)).then(|| Hit {
                message: "Unsloth's gate_up_projs.{e} expert names are no expert name vLLM knows: refused in every mode (convert to PEFT's target_parameters layout)".into(),
                layer: None,
                target: None,
                expert: None,
            })
        },
    },
    Rule {
        id: "vllm.moe-shared-3d",
        engine: Engine::Vllm,
        severity: Severity::Warning,
        effect: Effect::Flag,
        condition: "3-D stacked expert LoRA (Tinker experts.w1/w2/w3, MLX SwitchLinear)",
        versions: V_VLLM_RUNTIME,
        source: "lora_weights.py pack_moe_stacked (\"shared-outer adapters\"); config/lora.py enable_moe_shared_loras; on gpt-oss FusedMoE3DWithLoRA.set_lora asserts two factors per side (whether --enable-mixed-moe-lora-format is needed too: not established)",
        check: |f| {
            (f.layout == Some(ExpertLayout::Shared3d)).then(|| Hit {
                message: "3-D stacked expert LoRA (factors per expert or shared across experts): vLLM needs --enable-moe-shared-loras, and on gpt-oss probably --enable-mixed-moe-lora-format too (unverified)".into(),
                layer: None,
                target: None,
                expert: None,
            })
        },
    },
    Rule {
        id: "vllm.moe-transposed",
        engine: Engine::Vllm,
        severity: Severity::Error,
        effect: Effect::Refused,
        condition: "PEFT target_parameters expert factors stored the other way round (gate_up lora_A (r·E, 2·intermediate), lora_B (hidden, r·E))",
        versions: "vllm/lora/layers/fused_moe.py @34c0ea7; model_manager.py @055e47c",
        source: "model_manager.py _stack_moe_lora_weights reshapes lora_a to (E, r, in) taking in as the hidden side; fused_moe.py FusedMoEWithLoRA.set_lora copies it into w13_lora_a_stacked (max_loras, E, max_lora_rank, hidden): a 2·intermediate-wide A does not fit (copy_ size mismatch)",
        check: |f| transposed_hit(f, "vLLM reads lora_A as the input side, so loading fails (gate_up's A does not fit its hidden-wide buffer); re-export with PEFT ≥ 0.20 on transformers 5, or transpose the factors"),
    },
    Rule {
        id: "vllm.tensor-names",
        engine: Engine::Vllm,
        severity: Severity::Error,
        effect: Effect::Refused,
        condition: "names other than *.lora_A.weight / *.lora_B.weight / lora_embedding_A/B (mlx-lm lora_a, kohya lora_down, LyCORIS) or tensors not understood",
        versions: "vllm/lora/utils.py @0fd1570, vllm/lora/lora_model.py @532cc25",
        source: "utils.py parse_fine_tuned_lora_name: raise ValueError(f\"{name} is unsupported LoRA weight\"), called by lora_model.py check_unexpected_modules on every key",
        check: |f| {
            let fmt = f.adapter.format();
            let foreign = matches!(fmt, Some(Format::Mlx | Format::Kohya | Format::Lycoris | Format::Gguf | Format::Torchtune));
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
        engine: Engine::Vllm,
        severity: Severity::Error,
        effect: Effect::Refused,
        condition: "modules_to_save in the config, or full tensors (e.g. the router)",
        versions: V_VLLM_HELPER,
        source: "peft_helper.py PEFTHelper._validate_features: \"vLLM only supports modules_to_save being None.\" (newest: None or [\"classifier\", \"score\"]); a full tensor also fails parse_fine_tuned_lora_name",
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
        engine: Engine::Vllm,
        severity: Severity::Error,
        effect: Effect::Refused,
        condition: "use_dora: true or lora_magnitude_vector tensors",
        versions: V_VLLM_HELPER,
        source: "peft_helper.py PEFTHelper._validate_features: \"vLLM does not yet support DoRA.\"",
        check: |f| f.dora().then(|| Hit {
            message: "DoRA adapter: vLLM does not support DoRA".into(),
            layer: None,
            target: None,
            expert: None,
        }),
    },
    Rule {
        id: "vllm.lora-bias",
        engine: Engine::Vllm,
        severity: Severity::Error,
        effect: Effect::Refused,
        condition: "lora_B.bias tensors or lora_bias: true",
        versions: "vllm/lora/utils.py @0fd1570, vllm/lora/lora_model.py @532cc25; peft_helper.py newest stored text",
        source: "lora_model.py check_unexpected_modules → utils.py parse_fine_tuned_lora_name: a *.lora_B.bias key is an \"unsupported LoRA weight\" (ValueError); newest PEFTHelper._validate_features: \"vLLM does not support LoRA bias (lora_bias).\"",
        check: |f| (f.roles.contains(&Role::LoraBias) || f.config().is_some_and(|c| c.lora_bias)).then(|| Hit {
            message: "LoRA bias (lora_B.bias / lora_bias): vLLM does not load it".into(),
            layer: None,
            target: None,
            expert: None,
        }),
    },
    Rule {
        id: "vllm.bias",
        engine: Engine::Vllm,
        severity: Severity::Error,
        effect: Effect::Refused,
        condition: "bias in adapter_config.json other than \"none\" (trained base biases)",
        versions: V_VLLM_HELPER,
        source: "peft_helper.py PEFTHelper.validate_legal: \"Adapter bias is not supported.\" (at e745baf: \"Adapter bias cannot be used without bias_enabled\")",
        check: |f| {
            let b = f.config()?.bias.clone().filter(|b| b != "none")?;
            Hit::new(format!("bias = \"{b}\": vLLM refuses adapters that train the base biases"))
        },
    },
    Rule {
        id: "vllm.trainable-tokens",
        engine: Engine::Vllm,
        severity: Severity::Error,
        effect: Effect::Refused,
        condition: "trainable_tokens_delta tensors",
        versions: "vllm/lora/utils.py @0fd1570; one stored peft_helper.py (commit not attributable) accepts them up to --max-lora-trainable-tokens",
        source: "utils.py parse_fine_tuned_lora_name (trainable_tokens_delta is not a LoRA weight)",
        check: |f| f.roles.contains(&Role::TrainableTokens).then(|| Hit {
            message: "trainable tokens (trainable_tokens_delta): refused unless your vLLM has --max-lora-trainable-tokens".into(),
            layer: None,
            target: None,
            expert: None,
        }),
    },
    Rule {
        id: "vllm.embedding-gpt-oss",
        engine: Engine::Vllm,
        severity: Severity::Error,
        effect: Effect::Refused,
        condition: "embedding or lm_head LoRA on gpt-oss",
        versions: "vllm/model_executor/models/gpt_oss.py @a6b6cfa; vllm/lora/utils.py @0fd1570; lora_model.py @532cc25",
        source: "gpt_oss.py GptOssForCausalLM declares no embedding_modules; utils.py get_supported_lora_modules takes embedding names only from embedding_modules (VocabParallelEmbedding and ParallelLMHead are no LinearBase); lora_model.py check_unexpected_modules → ValueError",
        check: |f| (f.gpt_oss && f.delta_targets(&["embed_tokens", "lm_head"])).then(|| Hit {
            message: "embedding / lm_head LoRA on gpt-oss: vLLM's gpt-oss class supports no embedding LoRA, the load fails (unexpected modules)".into(),
            layer: None,
            target: Some("embed_tokens".into()),
            expert: None,
        }),
    },
    Rule {
        id: "vllm.embedding",
        engine: Engine::Vllm,
        severity: Severity::Warning,
        effect: Effect::Unverified,
        condition: "embedding or lm_head LoRA on another base model",
        versions: "vllm/lora/utils.py @0fd1570; lora_model.py @532cc25",
        source: "utils.py get_supported_lora_modules (the model class's embedding_modules decide); lora_model.py from_lora_tensors: \"The embedding LoRA size … must be consistent with the base model's vocabulary size\". Missing: the base model's vLLM class",
        check: |f| (!f.gpt_oss && f.delta_targets(&["embed_tokens", "lm_head"])).then(|| Hit {
            message: "embedding / lm_head LoRA: vLLM loads it only when the base model's vLLM class lists embedding modules and the vocabulary was not resized (which class serves this base was not checked)".into(),
            layer: None,
            target: Some("embed_tokens".into()),
            expert: None,
        }),
    },
    Rule {
        id: "vllm.rank",
        engine: Engine::Vllm,
        severity: Severity::Warning,
        effect: Effect::Flag,
        condition: "a delta's rank > 16 (the message names the --max-lora-rank to pass; above 512: refused)",
        versions: "vllm/config/lora.py @a78dc92; peft_helper.py @e745baf",
        source: "config/lora.py MaxLoRARanks = Literal[1, 8, 16, 32, 64, 128, 256, 320, 512], max_lora_rank = 16; peft_helper.py PEFTHelper.validate_legal: \"LoRA rank {r} is greater than max_lora_rank\"",
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
        engine: Engine::Vllm,
        severity: Severity::Warning,
        effect: Effect::Scale,
        condition: "rank_pattern / alpha_pattern values that differ from r / lora_alpha",
        versions: "peft_helper.py @e745baf (no such fields); the newest stored text has get_rank_and_scaling",
        source: "peft_helper.py PEFTHelper.from_dict drops unknown fields and one vllm_lora_scaling_factor serves every module; newer versions add get_rank_and_scaling (\"Same rule as PEFT's get_pattern_key\")",
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
        engine: Engine::Vllm,
        severity: Severity::Warning,
        effect: Effect::Refused,
        condition: "LoRA on gpt-oss's router",
        versions: "vllm/model_executor/models/gpt_oss.py @a6b6cfa and @0025d69 (router torch.nn.Linear); later versions make it a GateLinear (vllm/lora/layers/gate_linear.py @2e1ad76) and apply it",
        source: "gpt_oss.py MLPBlock: self.router = torch.nn.Linear, no LinearBase, so utils.py get_supported_lora_modules omits it and lora_model.py check_unexpected_modules raises; gate_linear.py GateLinearWithLoRA (\"should always be replaced\") where the router is a GateLinear",
        check: |f| (f.gpt_oss && f.delta_targets(&["router"])).then(|| Hit {
            message: "LoRA on gpt-oss's router: refused by vLLM versions whose router is a torch.nn.Linear; applied by versions whose router is a GateLinear".into(),
            layer: None,
            target: Some("router".into()),
            expert: None,
        }),
    },
    Rule {
        id: "vllm.init-base",
        engine: Engine::Vllm,
        severity: Severity::Error,
        effect: Effect::Refused,
        condition: "init_lora_weights pissa*, olora, corda or loftq (the base was changed in training; not converted)",
        versions: "peft_helper.py newest stored text (_init_is_supported); at e745baf the field is not read and the adapter is served onto the unmodified base",
        source: "peft_helper.py PEFTHelper._validate_features / _init_is_supported: \"Inits such as PiSSA, OLoRA, CorDA and LoftQ modify the base model weights … Convert it … with PEFT's path_initial_model_for_weight_conversion\" (gaussian, eva, orthogonal, mica, lora_ga pass)",
        check: |f| {
            let init = base_changing_init(f.config()?)?;
            Hit::new(format!(
                "init_lora_weights = \"{init}\": the adapter is right only on the base it modified; current vLLM refuses it, older versions serve it onto the original base (another model). Convert it with PEFT's path_initial_model_for_weight_conversion"
            ))
        },
    },
];

/// SGLang's rules (sgl-project/sglang, python/sglang/srt/lora/…).
pub const SGLANG: &[Rule] = &[
    Rule {
        id: "sglang.config",
        engine: Engine::Sglang,
        severity: Severity::Error,
        effect: Effect::Refused,
        condition: "adapter_config.json missing, unreadable, not a JSON object, r or lora_alpha not a positive number, or r, lora_alpha or target_modules absent",
        versions: V_SGLANG_CONFIG,
        source: "lora_config.py LoRAConfig.get_lora_config (open(adapter_config.json), json.load) and __init__ (hf_config[\"target_modules\"], [\"r\"], [\"lora_alpha\"]: KeyError when absent)",
        check: |f| {
            let why = f.adapter.config.unloadable()?;
            Hit::new(format!("{why}: SGLang cannot load the adapter without a PEFT config it can read"))
        },
    },
    Rule {
        id: "sglang.moe-one-sided",
        engine: Engine::Sglang,
        severity: Severity::Error,
        effect: Effect::Dropped,
        condition: "expert LoRA on gate_up or down only",
        versions: "lora_manager.py (newest stored text); sgl-project/sglang#32376",
        source: "lora_manager.py init_lora_modules: a FusedMoE is wrapped only when all(x in self.target_modules for x in [\"gate_up_proj\", \"down_proj\"]); #32376: \"Targeting only one left the layer unwrapped with no diagnostic\"",
        check: |f| {
            one_sided_hit(f, true, "SGLang does not wrap the MoE layer, the expert LoRA is never applied")
                .or_else(|| one_sided_hit(f, false, "SGLang does not wrap the MoE layer, the expert LoRA is never applied"))
        },
    },
    Rule {
        id: "sglang.target-parameters",
        engine: Engine::Sglang,
        severity: Severity::Error,
        effect: Effect::Refused,
        condition: "PEFT target_parameters expert LoRA (experts.base_layer.lora_* / experts.lora_*)",
        versions: V_SGLANG_POOL,
        source: "lora_config.py LoRAConfig reads target_modules, r, lora_alpha, use_dora, never target_parameters; mem_pool.py LoRAMemoryPool.load_lora_weight_to_buffer calls utils.py get_target_module_name on every layer weight, which raises ValueError(\"Cannot find target module name …\") for experts.base_layer.lora_A (--lora-strict-loading only makes it fail earlier)",
        check: |f| (f.layout == Some(ExpertLayout::PerExpert)).then(|| Hit {
            message: "PEFT's target_parameters expert LoRA (experts.base_layer): SGLang matches no target module to these keys and the load fails; the experts are not served".into(),
            layer: None,
            target: Some("gate_up_proj".into()),
            expert: None,
        }),
    },
    Rule {
        id: "sglang.moe-layouts",
        engine: Engine::Sglang,
        severity: Severity::Warning,
        effect: Effect::Unverified,
        condition: "Unsloth's gate_up_projs.{e} names, or other expert LoRA on gpt-oss",
        versions: "lora.py (newest stored text, _ROUTED_EXPERT_PATTERN); sgl-project/sglang#21375 closed unmerged",
        source: "lora.py _ROUTED_EXPERT_PATTERN and mem_pool.py (per-expert keys experts.{e}.…, shared-outer 3-D keys). Missing: gpt-oss MoE LoRA in SGLang (PR #21375 \"Support gpt oss moe lora\" closed); Unsloth's names match gate_up_proj by substring but not the per-expert pattern",
        check: |f| {
            let msg = match f.layout? {
                ExpertLayout::ModuleList if f.adapter.format() == Some(Format::Unsloth) => "Unsloth's gate_up_projs.{e} expert names: SGLang's per-expert pattern is experts.{e}.…; what it does with these was not established",
                ExpertLayout::PerExpert => return None,
                _ if f.gpt_oss => "expert LoRA on gpt-oss: SGLang's gpt-oss MoE LoRA support was not merged (PR #21375 closed)",
                _ => return None,
            };
            Hit::new(msg.into())
        },
    },
    Rule {
        id: "sglang.modules-to-save",
        engine: Engine::Sglang,
        severity: Severity::Error,
        effect: Effect::Refused,
        condition: "full tensors inside the layers (a saved router, norms)",
        versions: V_SGLANG_POOL,
        source: "lora.py LoRAAdapter._process_weight keeps every tensor with a layer id; mem_pool.py load_lora_weight_to_buffer → utils.py get_target_module_name raises ValueError for a name containing no target module (mlp.router.weight)",
        check: |f| {
            if f.adapter.kind != Kind::Lora {
                return None;
            }
            let layered: Vec<&str> = f.layered_full();
            let first = layered.first()?.to_string();
            let mut h = Hit::new(format!(
                "full module copies inside the layers ({}): SGLang finds no LoRA target for them and the load fails",
                layered.join(", ")
            ))?;
            h.target = Some(first);
            Some(h)
        },
    },
    Rule {
        id: "sglang.modules-to-save-embedding",
        engine: Engine::Sglang,
        severity: Severity::Warning,
        effect: Effect::Dropped,
        condition: "full copies of embed_tokens or lm_head",
        versions: V_SGLANG_POOL,
        source: "lora.py LoRAAdapter._process_weight keeps embed_tokens / lm_head tensors only when targeted (else \"Skipping …\"); mem_pool.py loads only lora_embedding_A/B and lora_A/B names of them",
        check: |f| {
            if f.adapter.kind != Kind::Lora {
                return None;
            }
            let top: Vec<&str> = f.full_targets().into_iter().filter(|t| !f.layered_full().contains(t)).collect();
            let first = top.first()?.to_string();
            let mut h = Hit::new(format!(
                "full module copies ({}) are not loaded by SGLang: the served model keeps the base's",
                top.join(", ")
            ))?;
            h.target = Some(first);
            Some(h)
        },
    },
    Rule {
        id: "sglang.dora",
        engine: Engine::Sglang,
        severity: Severity::Error,
        effect: Effect::Refused,
        condition: "use_dora: true or magnitude tensors",
        versions: "lora_manager.py (newest stored text)",
        source: "lora_manager.py LoRAManager.validate_new_adapter: \"LoRA serving currently doesn't support DoRA adapters\"",
        check: |f| f.dora().then(|| Hit {
            message: "DoRA adapter: SGLang does not support DoRA".into(),
            layer: None,
            target: None,
            expert: None,
        }),
    },
    Rule {
        id: "sglang.rslora",
        engine: Engine::Sglang,
        severity: Severity::Warning,
        effect: Effect::Scale,
        condition: "use_rslora: true",
        versions: "lora.py (newest stored text); lora_config.py @8487760 and newest",
        source: "lora.py LoRAAdapter.__init__: self.scaling = self.config.lora_alpha / self.config.r; lora_config.py never reads use_rslora: the served delta is √r times too small",
        check: |f| f.config().is_some_and(|c| c.use_rslora).then(|| Hit {
            message: "rsLoRA: SGLang scales by alpha/r, not alpha/√r: the served delta is √r times too small".into(),
            layer: None,
            target: None,
            expert: None,
        }),
    },
    Rule {
        id: "sglang.router-lora",
        engine: Engine::Sglang,
        severity: Severity::Error,
        effect: Effect::Refused,
        condition: "LoRA on the router",
        versions: V_SGLANG_POOL,
        source: "utils.py _KNOWN_LORA_TARGET_MODULES has no router/gate; mem_pool.py load_lora_weight_to_buffer → get_target_module_name raises ValueError for mlp.router.lora_*",
        check: |f| f.delta_targets(&["router"]).then(|| Hit {
            message: "LoRA on the router: no target module SGLang knows, the load fails".into(),
            layer: None,
            target: Some("router".into()),
            expert: None,
        }),
    },
    Rule {
        id: "sglang.trainable-tokens",
        engine: Engine::Sglang,
        severity: Severity::Warning,
        effect: Effect::Dropped,
        condition: "trainable_tokens_delta tensors",
        versions: V_SGLANG_POOL,
        source: "lora.py LoRAAdapter._process_weight files embed_tokens tensors under embedding_layers (or skips them when untargeted); mem_pool.py loads only lora_embedding_A/B and lora_A/B names: the delta is never applied",
        check: |f| f.roles.contains(&Role::TrainableTokens).then(|| Hit {
            message: "trainable tokens (trainable_tokens_delta): SGLang never loads them, the trained token rows are not served".into(),
            layer: None,
            target: Some("embed_tokens".into()),
            expert: None,
        }),
    },
    Rule {
        id: "sglang.lora-bias",
        engine: Engine::Sglang,
        severity: Severity::Info,
        effect: Effect::Unverified,
        condition: "lora_B.bias tensors",
        versions: V_SGLANG_POOL,
        source: "mem_pool.py load_lora_weight_to_buffer files any non-lora_A name of a matched module as lora_B. Missing: whether a bias then replaces the module's lora_B or fails a shape check",
        check: |f| f.roles.contains(&Role::LoraBias).then(|| Hit {
            message: "LoRA bias (lora_B.bias): SGLang has no handling for it; what its loader does with it was not established (unverified)".into(),
            layer: None,
            target: None,
            expert: None,
        }),
    },
    Rule {
        id: "sglang.init-base",
        engine: Engine::Sglang,
        severity: Severity::Error,
        effect: Effect::WrongBase,
        condition: "init_lora_weights pissa*, olora, corda or loftq (the base was changed in training; not converted)",
        versions: "lora_config.py @8487760 and the newest stored text",
        source: "lora_config.py LoRAConfig.__init__ reads only target_modules, r, lora_alpha (and use_dora, added tokens): init_lora_weights is never read, the adapter is applied to the unmodified base",
        check: |f| {
            let init = base_changing_init(f.config()?)?;
            Hit::new(format!(
                "init_lora_weights = \"{init}\": SGLang applies it to the original base, not the base it was trained on: the served model is another model. Convert it with PEFT's path_initial_model_for_weight_conversion"
            ))
        },
    },
];

fn run(rules: &[Rule], facts: &Facts) -> EngineVerdict {
    let findings: Vec<Finding> = rules
        .iter()
        .filter_map(|r| {
            let h = (r.check)(facts)?;
            let mut f = Finding::new(r.code(), r.severity, h.message);
            f.layer = h.layer;
            f.target = h.target;
            f.expert = h.expert;
            f.rule = Some(r.id);
            f.effect = Some(r.effect.as_str());
            f.versions = Some(r.versions);
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

impl Serving {
    /// One engine's verdict.
    pub fn of(&self, e: Engine) -> &EngineVerdict {
        match e {
            Engine::Vllm => &self.vllm,
            Engine::Sglang => &self.sglang,
        }
    }
}

/// Keeps one engine's serving verdict (`check --engine`): the other engine's findings are
/// dropped and the adapter's verdict is taken again without them.
pub fn limit(h: &mut Health, keep: Engine) {
    let other = match keep {
        Engine::Vllm => &mut h.serving.sglang,
        Engine::Sglang => &mut h.serving.vllm,
    };
    other.findings.clear();
    other.verdict = Verdict::Ok;
    h.verdict = Verdict::of(h.all());
}
