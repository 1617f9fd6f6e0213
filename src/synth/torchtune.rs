//! Synthetic adapters under torchtune's own names (`adapter::torchtune`), as its recipes save the
//! adapter state dict of a model they do not convert to PEFT (Llama 4's grouped experts):
//! `layers.N.attn.{q,k,v,output}_proj.lora_{a,b}.weight` as they are, and the stacked experts as
//! `LoRAGroupedExperts` holds them, `layers.N.mlp.experts.lora_{gate,up,down}_a` (E, in, r) and
//! `…_b` (E, r, out): each expert's PEFT factor transposed, a factor shared across experts
//! (Tinker's leading dim of 1) repeated for every expert. The config is the one torchtune writes
//! (`r`, `lora_alpha`, PEFT `target_modules`, `peft_type`, `base_model_name_or_path`).
//!
//! The tensors come from the safetensors generator (patterns `Attention` and `Tinker3d`), so a
//! torchtune adapter and the PEFT/Tinker adapter it mirrors hold the same deltas.

use crate::synth::{generate, write_safetensors, Generated, Spec, TensorData};
use std::path::Path;

/// The torchtune name of a generated PEFT/Tinker tensor, and whether it is a stacked expert
/// factor (stored transposed per expert).
fn torchtune_name(name: &str) -> Option<(String, bool)> {
    let rest = name.strip_prefix("base_model.model.model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let (module, side) = rest
        .strip_suffix(".lora_A.weight")
        .map(|m| (m, "a"))
        .or_else(|| rest.strip_suffix(".lora_B.weight").map(|m| (m, "b")))?;
    let linear = |l: &str| Some((format!("layers.{layer}.attn.{l}.lora_{side}.weight"), false));
    match module.rsplit_once('.')? {
        (_, "q_proj") => linear("q_proj"),
        (_, "k_proj") => linear("k_proj"),
        (_, "v_proj") => linear("v_proj"),
        (_, "o_proj") => linear("output_proj"),
        ("mlp.experts", w) => {
            let proj = match w {
                "w1" => "gate",
                "w2" => "down",
                "w3" => "up",
                _ => return None,
            };
            Some((
                format!("layers.{layer}.mlp.experts.lora_{proj}_{side}"),
                true,
            ))
        }
        _ => None,
    }
}

/// Each (rows × cols) slice of `bytes` transposed, for elements of `w` bytes.
fn transpose_slices(bytes: &[u8], (e, rows, cols): (usize, usize, usize), w: usize) -> Vec<u8> {
    let mut out = vec![0u8; bytes.len()];
    for s in 0..e {
        let base = s * rows * cols * w;
        for i in 0..rows {
            for j in 0..cols {
                let from = base + (i * cols + j) * w;
                let to = base + (j * rows + i) * w;
                out[to..to + w].copy_from_slice(&bytes[from..from + w]);
            }
        }
    }
    out
}

/// The torchtune tensors of a generated adapter.
pub fn tensors(g: &Generated, spec: &Spec) -> Vec<TensorData> {
    let experts = spec.dims.experts;
    g.tensors
        .iter()
        .filter_map(|t| {
            let (name, stacked) = torchtune_name(&t.name)?;
            if !stacked {
                return Some(TensorData { name, ..t.clone() });
            }
            let (mut e, rows, cols) = (t.shape[0], t.shape[1], t.shape[2]);
            let mut bytes = t.bytes.clone();
            if e == 1 {
                bytes = bytes.map(|b| b.repeat(experts));
                e = experts;
            }
            let w = t.dtype.bitsize() / 8;
            Some(TensorData {
                name,
                dtype: t.dtype,
                shape: vec![e, cols, rows],
                bytes: bytes.map(|b| transpose_slices(&b, (e, rows, cols), w)),
            })
        })
        .collect()
}

/// The adapter_config.json torchtune writes (recipes' `_adapter_config` through
/// convert_weights.py `tune_to_peft_adapter_config`).
pub fn config(g: &Generated, spec: &Spec) -> serde_json::Value {
    let mut targets: Vec<&str> = vec!["q_proj", "k_proj", "v_proj", "o_proj"];
    if g.tensors.iter().any(|t| t.name.contains(".mlp.experts.")) {
        targets.extend(["gate_proj", "down_proj", "up_proj"]);
    }
    serde_json::json!({
        "r": spec.attn_rank,
        "lora_alpha": spec.alpha,
        "target_modules": targets,
        "peft_type": "LORA",
        "base_model_name_or_path": spec.base_model,
    })
}

/// Writes `adapter_model.safetensors` with torchtune's names and torchtune's
/// `adapter_config.json` into `dir` (created); returns what was generated (its planted spectra).
pub fn write_adapter(dir: &Path, spec: &Spec) -> std::io::Result<Generated> {
    std::fs::create_dir_all(dir)?;
    let g = generate(spec);
    write_safetensors(
        &dir.join("adapter_model.safetensors"),
        &tensors(&g, spec),
        spec.aligned,
    )?;
    std::fs::write(
        dir.join("adapter_config.json"),
        serde_json::to_vec_pretty(&config(&g, spec)).expect("json"),
    )?;
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_torchtune() {
        let n = |s: &str| torchtune_name(s);
        assert_eq!(
            n("base_model.model.model.layers.3.attn.o_proj.lora_B.weight"),
            Some(("layers.3.attn.output_proj.lora_b.weight".into(), false))
        );
        assert_eq!(
            n("base_model.model.model.layers.0.mlp.experts.w3.lora_A.weight"),
            Some(("layers.0.mlp.experts.lora_up_a".into(), true))
        );
        assert_eq!(n("base_model.model.model.layers.0.mlp.router.weight"), None);
    }

    #[test]
    fn slices_transpose() {
        // Two 2×3 slices of 1-byte elements.
        let b: Vec<u8> = (0..12).collect();
        assert_eq!(
            transpose_slices(&b, (2, 2, 3), 1),
            vec![0, 3, 1, 4, 2, 5, 6, 9, 7, 10, 8, 11]
        );
    }
}
