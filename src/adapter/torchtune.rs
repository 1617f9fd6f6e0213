//! torchtune's own names (pytorch/torchtune): the adapter state dict its recipes save as
//! `adapter_model.pt` (and people convert to safetensors), and the only one it writes for the
//! models its checkpointer cannot convert to PEFT (Llama 4, whose MoE experts are
//! `LoRAGroupedExperts`; Phi-3/4; Llama 3.2 Vision). For the other models it also writes
//! `adapter_model.safetensors` with PEFT names, which the PEFT layout reads.
//!
//! - `LoRALinear` / `DoRALinear` (torchtune/modules/peft/lora.py, dora.py): `<module>.lora_a.weight`
//!   (r, in) and `<module>.lora_b.weight` (out, r), `nn.Linear` weights, ΔW = (alpha/rank)·B·A;
//!   DoRA adds `<module>.magnitude` (out). MLX's `lora_a` has no `.weight` and is (in, r).
//! - `LoRAGroupedExperts` (torchtune/modules/moe/experts.py): `<moe>.experts.lora_{gate,up,down}_a`
//!   (E, in, r) and `…_b` (E, r, out), applied as `x @ a @ b`: expert e's ΔW (out × in) is
//!   (alpha/rank)·b[e]ᵀ·a[e]ᵀ (`get_merged_lora_ckpt` in torchtune/modules/peft/_utils.py), so
//!   PEFT's A is a[e]ᵀ and B is b[e]ᵀ (`layout::Pick::IndexTransposed`).
//!
//! Module names follow torchtune's models (`layers.N.attn.{q,k,v,output}_proj`, `mlp.w1/w2/w3`,
//! `output`; Llama 4 under `decoder.`), mapped to lorascope's targets as torchtune's own
//! converter maps them to PEFT's (`_TO_PEFT_TARGET_MODULES`, torchtune/models/convert_weights.py).
//! The scale comes from `adapter_config.json` (`r`, `lora_alpha`) when the folder has one.

use crate::adapter::layout::{self, Format, NameInfo, Role};
use crate::adapter::target::Target;

/// torchtune's LoRA-able linear layers and their targets (convert_weights.py
/// `_TO_PEFT_TARGET_MODULES`).
const LINEARS: [(&str, &str); 8] = [
    ("q_proj", "q_proj"),
    ("k_proj", "k_proj"),
    ("v_proj", "v_proj"),
    ("output_proj", "o_proj"),
    ("w1", "gate_proj"),
    ("w2", "down_proj"),
    ("w3", "up_proj"),
    ("output", "lm_head"),
];

/// `LoRAGroupedExperts`' projections (`lora_<p>_a`, `lora_<p>_b`) and their targets.
const EXPERT_PROJS: [(&str, &str); 3] = [
    ("gate", "gate_proj"),
    ("up", "up_proj"),
    ("down", "down_proj"),
];

/// The target of a torchtune module (its last component), verbatim when not a known linear.
fn target_of(module: &[&str]) -> Target {
    let last = module.last().copied().unwrap_or("");
    let name = LINEARS
        .iter()
        .find(|(l, _)| *l == last)
        .map_or(last, |(_, t)| *t);
    Target::parse(name)
}

fn info(role: Role, module: &[&str], module_name: String, target: Target) -> NameInfo {
    NameInfo {
        role,
        module: module_name,
        layer: layout::layer_of(module),
        target,
        expert: None,
        wrapper_depth: None,
        format: Some(Format::Torchtune),
        transposed: false,
        unknown: None,
        adapter_segment: false,
        swap: false,
    }
}

/// Reads a tensor name (split at `.`, without PEFT's `base_model.model.` prefix) as torchtune
/// writes it, or None when it is not one of torchtune's LoRA names.
pub fn parse_name(comps: &[&str]) -> Option<NameInfo> {
    match comps {
        [module @ .., f @ ("lora_a" | "lora_b"), "weight"] if !module.is_empty() => {
            let role = if *f == "lora_a" {
                Role::LoraA
            } else {
                Role::LoraB
            };
            Some(info(role, module, module.join("."), target_of(module)))
        }
        [module @ .., lin, "magnitude"] if LINEARS.iter().any(|(l, _)| l == lin) => {
            let module = [module, &[*lin]].concat();
            Some(info(
                Role::DoraMagnitude,
                &module,
                module.join("."),
                target_of(&module),
            ))
        }
        [owner @ .., "experts", param] => {
            let (proj, side) = param.strip_prefix("lora_")?.rsplit_once('_')?;
            let role = match side {
                "a" => Role::LoraA,
                "b" => Role::LoraB,
                _ => return None,
            };
            let (_, target) = EXPERT_PROJS.iter().find(|(p, _)| *p == proj)?;
            // One module per projection, so that gate's a pairs with gate's b.
            let name = format!("{}.experts.{target}", owner.join("."));
            let mut n = info(role, owner, name, Target::parse(target));
            n.transposed = true;
            Some(n)
        }
        _ => None,
    }
}

/// The checkpoint files whose names show torchtune wrote them (pickled `torch.save` files
/// lorascope does not open): `adapter_model.pt` and `recipe_state.pt` (torchtune ≥ 0.5,
/// torchtune/training/checkpointing/_checkpointer.py; PEFT writes `adapter_model.bin`), and
/// before it `adapter_<epoch>.pt` and `hf_model_<shard>_<epoch>.pt`.
pub fn is_torchtune_file(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    let numbered = |rest: &str| {
        !rest.is_empty()
            && rest
                .split('_')
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    };
    match name.strip_suffix(".pt") {
        Some("adapter_model" | "recipe_state") => true,
        Some(stem) => {
            stem.strip_prefix("adapter_").is_some_and(numbered)
                || stem.strip_prefix("hf_model_").is_some_and(numbered)
        }
        None => false,
    }
}

/// The no-safetensors note's addition when the files found are torchtune's.
pub fn pickle_note(other_files: &[String]) -> Option<String> {
    let tt: Vec<&str> = other_files
        .iter()
        .map(String::as_str)
        .filter(|f| is_torchtune_file(f))
        .collect();
    (!tt.is_empty()).then(|| {
        format!(
            "{} written by torchtune: pickled checkpoints lorascope does not open (torchtune also \
             writes adapter_model.safetensors, with PEFT names, for the models it can convert)",
            tt.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(name: &str) -> Option<NameInfo> {
        parse_name(&name.split('.').collect::<Vec<_>>())
    }

    #[test]
    fn linear_names_map_to_peft_targets() {
        let n = parse("layers.3.attn.output_proj.lora_b.weight").unwrap();
        assert_eq!(
            (n.role, n.layer, n.target.as_str(), n.module.as_str()),
            (Role::LoraB, Some(3), "o_proj", "layers.3.attn.output_proj")
        );
        assert!(!n.transposed);
        let n = parse("decoder.layers.0.mlp.shared_expert.w1.lora_a.weight").unwrap();
        assert_eq!((n.layer, n.target.as_str()), (Some(0), "gate_proj"));
        assert_eq!(
            parse("output.lora_a.weight").unwrap().target.as_str(),
            "lm_head"
        );
        let m = parse("layers.1.attn.q_proj.magnitude").unwrap();
        assert_eq!(
            (m.role, m.module.as_str()),
            (Role::DoraMagnitude, "layers.1.attn.q_proj")
        );
        // MLX's (no `.weight`), PEFT's and unrelated names are not torchtune's.
        for other in [
            "model.layers.0.self_attn.q_proj.lora_a",
            "model.layers.0.self_attn.q_proj.lora_A.weight",
            "layers.0.attn.q_proj.weight",
            "layers.0.norm.magnitude",
            "lora_a.weight",
        ] {
            assert!(parse(other).is_none(), "{other}");
        }
    }

    #[test]
    fn grouped_experts_pair_per_projection() {
        let a = parse("decoder.layers.5.mlp.experts.lora_up_a").unwrap();
        let b = parse("decoder.layers.5.mlp.experts.lora_up_b").unwrap();
        assert_eq!((a.role, b.role), (Role::LoraA, Role::LoraB));
        assert_eq!(a.module, b.module);
        assert_eq!(a.module, "decoder.layers.5.mlp.experts.up_proj");
        assert_eq!((a.layer, a.target.as_str()), (Some(5), "up_proj"));
        assert!(a.transposed && b.transposed);
        for other in [
            "layers.0.mlp.experts.lora_side_a",
            "layers.0.mlp.experts.lora_up_c",
        ] {
            assert!(parse(other).is_none(), "{other}");
        }
    }

    #[test]
    fn torchtune_files_by_name() {
        for f in [
            "adapter_model.pt",
            "epoch_0/adapter_model.pt",
            "recipe_state/recipe_state.pt",
            "adapter_2.pt",
            "hf_model_0001_2.pt",
        ] {
            assert!(is_torchtune_file(f), "{f}");
        }
        for f in [
            "adapter_model.bin",
            "adapter_x.pt",
            "pytorch_model.pt",
            "adapter_.pt",
        ] {
            assert!(!is_torchtune_file(f), "{f}");
        }
        assert!(pickle_note(&["adapter_model.bin".into()]).is_none());
        let n = pickle_note(&["epoch_0/adapter_model.pt".into()]).unwrap();
        assert!(n.contains("torchtune") && n.contains("epoch_0/adapter_model.pt"));
    }
}
