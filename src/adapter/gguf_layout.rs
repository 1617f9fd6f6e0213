//! What the tensors and key/values of a GGUF file mean: llama.cpp's LoRA adapter layout
//! (`convert_lora_to_gguf.py`, `src/llama-adapter.cpp`) mapped onto lorascope's targets, so that
//! GGUF deltas go through the same layout step (`layout::build`) as safetensors ones.
//!
//! An adapter tensor is the base tensor's name plus `.lora_a` / `.lora_b`
//! (`blk.7.attn_q.weight.lora_a`). ggml's `ne` lists the fastest dimension first, so
//! `lora_a` `[in, r]` and `lora_b` `[r, out]` are, row-major, PEFT's A (r × in) and B (out × r):
//! the converter writes PEFT's tensors as they are. Stacked experts `[in, r, E]` / `[r, out, E]`
//! are A (E, r, in) and B (E, out, r), the 3D layout of `layout::stacked_experts`.
//! docs/layouts.md ("GGUF") cites the upstream lines.

use crate::adapter::layout::{Format, NameInfo, Role};
use crate::adapter::target::Target;
use std::collections::BTreeMap;

/// llama.cpp's tensor names (gguf-py/gguf/constants.py `TENSOR_NAMES`, the `blk.{bid}.` ones)
/// and the lorascope target each changes. Expert tensors (`*_exps`) are 3D and become per-expert
/// deltas through the 3D rule; the dense FFN tensors of the same projection share its target.
pub(crate) const TARGETS: &[(&str, &str)] = &[
    ("attn_q", "q_proj"),
    ("attn_k", "k_proj"),
    ("attn_v", "v_proj"),
    ("attn_output", "o_proj"),
    ("attn_qkv", "qkv_proj"),
    ("ffn_gate_inp", "router"),
    ("ffn_gate_exps", "gate_proj"),
    ("ffn_up_exps", "up_proj"),
    ("ffn_down_exps", "down_proj"),
    ("ffn_gate_up_exps", "gate_up_proj"),
    ("ffn_gate", "gate_proj"),
    ("ffn_up", "up_proj"),
    ("ffn_down", "down_proj"),
];

/// Tensors outside the blocks (`token_embd`, `output`) and their targets.
pub(crate) const GLOBAL: &[(&str, &str)] = &[("token_embd", "embed_tokens"), ("output", "lm_head")];

/// Parses a GGUF tensor name: a LoRA factor (`….lora_a`, `….lora_b`) or a whole tensor (a
/// model's weights, or the norm vectors mergekit's extractions carry, which llama.cpp skips).
pub fn parse_name(name: &str) -> NameInfo {
    let (role, base) = match (name.strip_suffix(".lora_a"), name.strip_suffix(".lora_b")) {
        (Some(b), _) => (Role::LoraA, b),
        (_, Some(b)) => (Role::LoraB, b),
        _ => (Role::Full, name),
    };
    let module = base.strip_suffix(".weight").unwrap_or(base);
    let (layer, tensor) = match module.strip_prefix("blk.").and_then(|r| r.split_once('.')) {
        Some((n, t)) => (n.parse::<usize>().ok(), t),
        None => (None, module),
    };
    let table = if layer.is_some() { TARGETS } else { GLOBAL };
    let target = table
        .iter()
        .find(|(g, _)| *g == tensor)
        .map_or(tensor, |(_, t)| *t);
    let factor = role != Role::Full;
    // llama.cpp's token embedding LoRA is flipped (`llm_build_inp_embd`; the converter writes
    // `lora_a` = Aᵀ (V × r) and `lora_b` = B (H × r)): ΔW (V × H) = lora_a · lora_bᵀ. Read as
    // PEFT's embedding LoRA: A = lora_aᵀ (r × V), B = lora_b, ΔW = (B·A)ᵀ.
    let embd = factor && module == "token_embd";
    NameInfo {
        role,
        module: module.to_string(),
        layer,
        target: Target::parse(target),
        expert: None,
        wrapper_depth: None,
        format: factor.then_some(Format::Gguf),
        transposed: embd && role == Role::LoraA,
        unknown: None,
        adapter_segment: false,
        swap: embd,
    }
}

/// What the key/values of a GGUF file say about it (llama-adapter.cpp
/// `llama_adapter_lora_init_impl`: `general.type` must be `adapter`, `adapter.type` `lora`,
/// `adapter.lora.alpha` an f32 that is 0 when absent).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Meta {
    pub general_type: Option<String>,
    pub adapter_type: Option<String>,
    pub alpha: Option<f64>,
    pub architecture: Option<String>,
    pub base_model: Option<String>,
}

impl Meta {
    pub fn of(kv: &BTreeMap<String, String>) -> Meta {
        let get = |k: &str| kv.get(k).cloned();
        Meta {
            general_type: get("general.type"),
            adapter_type: get("adapter.type"),
            alpha: kv
                .get("adapter.lora.alpha")
                .and_then(|v| v.parse::<f64>().ok()),
            architecture: get("general.architecture"),
            base_model: base_model(kv),
        }
    }

    /// Whether the file declares itself a LoRA adapter.
    pub fn is_lora(&self) -> bool {
        self.general_type.as_deref() == Some("adapter")
            && self.adapter_type.as_deref() == Some("lora")
    }

    /// The scale llama.cpp applies to a factor pair of rank r (`llama_adapter_lora_weight::
    /// get_scale`, src/llama-adapter.h: `alpha ? alpha / rank : 1`, rank = `lora_b->ne[0]`).
    pub fn scale(&self, rank: usize) -> f64 {
        match self.alpha {
            Some(a) if a != 0.0 && rank > 0 => a / rank as f64,
            _ => 1.0,
        }
    }

    /// Notes for people: what the file is, and what llama.cpp would refuse.
    pub fn notes(&self) -> Vec<String> {
        let mut n = vec![format!(
            "GGUF {} (llama.cpp){}",
            match (&self.general_type, &self.adapter_type) {
                (Some(g), Some(a)) => format!("{g}, {a}"),
                (Some(g), None) => g.clone(),
                _ => "file".into(),
            },
            self.architecture
                .as_deref()
                .map_or(String::new(), |a| format!(", architecture {a}"))
        )];
        match self.alpha {
            Some(a) if a != 0.0 => n.push(format!("adapter.lora.alpha = {a}: s = alpha / rank")),
            _ if self.is_lora() => {
                n.push("no adapter.lora.alpha (or 0): s = 1, as llama.cpp applies it".into())
            }
            _ => {}
        }
        if self.general_type.as_deref() == Some("adapter") && !self.is_lora() {
            n.push(format!(
                "adapter.type is {}, not lora: llama.cpp would not load it as a LoRA",
                self.adapter_type.as_deref().unwrap_or("missing")
            ));
        }
        n
    }
}

/// The base model a GGUF file names (gguf-py `Keys.General.BASE_MODEL_*`, written from the model
/// card by the converters): the Hub id of `general.base_model.0.repo_url`, else its
/// organization/name, else its name.
fn base_model(kv: &BTreeMap<String, String>) -> Option<String> {
    let get = |k: &str| kv.get(&format!("general.base_model.0.{k}")).cloned();
    if let Some(url) = get("repo_url") {
        if let Some(id) = url
            .strip_prefix("https://huggingface.co/")
            .filter(|s| !s.is_empty())
        {
            return Some(id.trim_end_matches('/').to_string());
        }
    }
    match (get("organization"), get("name")) {
        (Some(o), Some(n)) => Some(format!("{o}/{n}")),
        (_, n) => n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_targets_and_layers() {
        let n = parse_name("blk.7.attn_output.weight.lora_b");
        assert_eq!(
            (n.role, n.layer, n.target.as_str(), n.module.as_str()),
            (Role::LoraB, Some(7), "o_proj", "blk.7.attn_output")
        );
        let n = parse_name("blk.0.ffn_gate_exps.weight.lora_a");
        assert_eq!((n.role, n.target.as_str()), (Role::LoraA, "gate_proj"));
        assert_eq!(
            parse_name("blk.1.ffn_gate_inp.weight.lora_a").target,
            Target::Router
        );
        let n = parse_name("blk.1.attn_norm.weight");
        assert_eq!((n.role, n.format, n.layer), (Role::Full, None, Some(1)));
        let n = parse_name("token_embd.weight.lora_a");
        assert!(n.swap && n.transposed && n.target == Target::Embed);
        assert!(!parse_name("token_embd.weight.lora_b").transposed);
    }

    #[test]
    fn scale_is_alpha_over_rank_or_one() {
        let m = |a: Option<f64>| Meta {
            alpha: a,
            ..Meta::default()
        };
        assert_eq!(m(Some(32.0)).scale(16), 2.0);
        assert_eq!(m(Some(0.0)).scale(16), 1.0);
        assert_eq!(m(None).scale(16), 1.0);
    }

    #[test]
    fn base_model_from_repo_url_else_name() {
        let kv = |p: &[(&str, &str)]| {
            p.iter()
                .map(|(k, v)| (format!("general.base_model.0.{k}"), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        let url = kv(&[("repo_url", "https://huggingface.co/openai/gpt-oss-20b")]);
        assert_eq!(base_model(&url).as_deref(), Some("openai/gpt-oss-20b"));
        let named = kv(&[("name", "Gpt Oss 20b"), ("organization", "Openai")]);
        assert_eq!(base_model(&named).as_deref(), Some("Openai/Gpt Oss 20b"));
        assert_eq!(base_model(&BTreeMap::new()), None);
    }
}
