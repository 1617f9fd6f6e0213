//! Synthetic GGUF LoRA adapters, written the way llama.cpp's `convert_lora_to_gguf.py` writes a
//! PEFT adapter: each PEFT tensor under its base tensor's llama.cpp name plus `.lora_a`/`.lora_b`,
//! shapes as they are (ggml's `ne` is the row-major shape reversed), `general.type = adapter`,
//! `adapter.type = lora`, `adapter.lora.alpha`, and Q8_0 falling back to F16 for rows that are
//! not whole 32-value blocks (convert_hf_to_gguf.py `prepare_tensors`, gguf-py `QuantError`).
//!
//! The tensors come from the safetensors generator (`synth::generate`, patterns `Attention` and
//! `Tinker3d`), so a GGUF adapter and the safetensors adapter it mirrors hold the same deltas.

use crate::adapter::gguf::{self, GgmlType, Value, WriteTensor};
use crate::synth::{generate, Generated, Spec};
use std::path::Path;

/// The llama.cpp name of a PEFT/Tinker tensor name of the generator, or None.
fn gguf_name(name: &str) -> Option<String> {
    let rest = name.strip_prefix("base_model.model.model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let (module, factor) = rest
        .strip_suffix(".lora_A.weight")
        .map(|m| (m, "lora_a"))
        .or_else(|| rest.strip_suffix(".lora_B.weight").map(|m| (m, "lora_b")))?;
    let tensor = match module.rsplit_once('.')? {
        (_, "q_proj") => "attn_q",
        (_, "k_proj") => "attn_k",
        (_, "v_proj") => "attn_v",
        (_, "o_proj") => "attn_output",
        ("mlp.experts", "w1") => "ffn_gate_exps",
        ("mlp.experts", "w3") => "ffn_up_exps",
        ("mlp.experts", "w2") => "ffn_down_exps",
        _ => return None,
    };
    Some(format!("blk.{layer}.{tensor}.weight.{factor}"))
}

/// The GGUF tensors of a generated adapter in type `ty`. A 3D factor shared across experts
/// (Tinker's leading dim of 1) is written once per expert: llama.cpp's `ggml_mul_mat_id` reads
/// one slice per expert. Sparse (hole) tensors have no data (`gguf::write_file` leaves holes).
pub fn tensors(g: &Generated, spec: &Spec, ty: GgmlType) -> Vec<WriteTensor> {
    let experts = spec.dims.experts;
    g.tensors
        .iter()
        .filter_map(|t| {
            let name = gguf_name(&t.name)?;
            let mut shape = t.shape.clone();
            let mut values = t.bytes.as_ref().map(|b| decode(b, t.dtype));
            if shape.len() == 3 && shape[0] == 1 && experts > 1 {
                values = values.map(|v| v.repeat(experts));
                shape[0] = experts;
            }
            let ne: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
            let ty = if ty == GgmlType::Q8_0 && ne[0] % 32 != 0 {
                GgmlType::F16
            } else {
                ty
            };
            Some(WriteTensor {
                data: values.map_or_else(Vec::new, |v| gguf::encode(&v, ty)),
                name,
                ty,
                ne,
            })
        })
        .collect()
}

/// The values of a synthetic tensor's bytes (the float dtypes `format::encode` writes).
fn decode(b: &[u8], dtype: safetensors::Dtype) -> Vec<f64> {
    use safetensors::Dtype;
    match dtype {
        Dtype::F64 => b
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect(),
        Dtype::F16 => b
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f64())
            .collect(),
        Dtype::BF16 => b
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f64())
            .collect(),
        _ => b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64)
            .collect(),
    }
}

/// The key/values `convert_lora_to_gguf.py` writes (type, adapter type, alpha, architecture, the
/// base model of the model card).
pub fn metadata(spec: &Spec) -> Vec<(&'static str, Value)> {
    vec![
        ("general.architecture", Value::Str("gpt-oss".into())),
        ("general.type", Value::Str("adapter".into())),
        (
            "general.name",
            Value::Str("lorascope synthetic adapter".into()),
        ),
        ("general.base_model.count", Value::U32(1)),
        (
            "general.base_model.0.repo_url",
            Value::Str(format!("https://huggingface.co/{}", spec.base_model)),
        ),
        ("adapter.type", Value::Str("lora".into())),
        ("adapter.lora.alpha", Value::F32(spec.alpha as f32)),
        ("general.quantization_version", Value::U32(2)),
    ]
}

/// Writes the GGUF adapter of `spec` (pattern `Attention` or `Tinker3d`) in type `ty` to `path`,
/// and returns what was generated (its planted spectra).
pub fn write_adapter(path: &Path, spec: &Spec, ty: GgmlType) -> std::io::Result<Generated> {
    let g = generate(spec);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    gguf::write_file(path, &metadata(spec), &tensors(&g, spec, ty))?;
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_llama_cpp() {
        let n = |s: &str| gguf_name(s);
        assert_eq!(
            n("base_model.model.model.layers.3.self_attn.o_proj.lora_B.weight").as_deref(),
            Some("blk.3.attn_output.weight.lora_b")
        );
        assert_eq!(
            n("base_model.model.model.layers.0.mlp.experts.w3.lora_A.weight").as_deref(),
            Some("blk.0.ffn_up_exps.weight.lora_a")
        );
        assert_eq!(n("base_model.model.model.layers.0.mlp.router.weight"), None);
    }
}
