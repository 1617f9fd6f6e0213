//! Synthetic gpt-oss base models in the Hugging Face layout (docs/base.md): BF16 attention and
//! router, experts in MXFP4 (`_blocks`/`_scales`, real E2M1 codes and E8M0 scales) or stacked BF16
//! (E, in, out), biases and norms, sharded through `model.safetensors.index.json` with gpt-oss's
//! 0-based shard names. Both expert storages hold the same values (MXFP4 values are exact in
//! BF16), so one W can be read both ways.

use crate::adapter::mxfp4;
use crate::synth::{encode, safetensors_bytes, Dims, Item, Rng, TensorData};
use safetensors::Dtype;
use std::collections::BTreeMap;
use std::path::Path;

/// How the experts are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpertStorage {
    /// The gpt-oss release: `gate_up_proj_blocks` (E, 2I, H/32, 16) U8 + `_scales` (E, 2I, H/32).
    Mxfp4,
    /// Dequantised / merged checkpoints: `gate_up_proj` (E, H, 2I) BF16, `down_proj` (E, I, H).
    Bf16,
}

/// What decides a synthetic base.
#[derive(Debug, Clone)]
pub struct BaseSpec {
    pub dims: Dims,
    pub experts: ExpertStorage,
    /// Number of shard files (layer L goes to shard L mod shards).
    pub shards: usize,
    pub seed: u64,
    /// `config.json`'s `model_type`.
    pub model_type: String,
}

impl BaseSpec {
    pub fn new(dims: Dims, experts: ExpertStorage) -> BaseSpec {
        BaseSpec {
            dims,
            experts,
            shards: 2,
            seed: 7,
            model_type: "gpt_oss".into(),
        }
    }
}

fn bf16(name: String, shape: Vec<usize>, values: &[f64]) -> TensorData {
    TensorData {
        name,
        dtype: Dtype::BF16,
        shape,
        bytes: Some(encode(values, Dtype::BF16)),
    }
}

fn u8s(name: String, shape: Vec<usize>, bytes: Vec<u8>) -> TensorData {
    TensorData {
        name,
        dtype: Dtype::U8,
        shape,
        bytes: Some(bytes),
    }
}

/// MXFP4 codes of E experts of (rows × cols): random nibbles under scales 2^-8 … 2^-4 that vary
/// by row, so that W has a spread spectrum. Returns (blocks, scales).
fn mxfp4_codes(rng: &mut Rng, e: usize, rows: usize, cols: usize) -> (Vec<u8>, Vec<u8>) {
    let g = cols / mxfp4::BLOCK;
    let blocks: Vec<u8> = (0..e * rows * g * mxfp4::BLOCK_BYTES)
        .map(|_| (rng.next_u64() & 0xFF) as u8)
        .collect();
    let scales: Vec<u8> = (0..e * rows * g)
        .map(|i| 119 + ((i / g) % 4) as u8 + (rng.next_u64() % 2) as u8)
        .collect();
    (blocks, scales)
}

/// The decoded values of expert-stacked codes, (E, rows, cols) row-major.
fn decoded(blocks: &[u8], scales: &[u8], e: usize, rows: usize, cols: usize) -> Vec<f64> {
    let g = cols / mxfp4::BLOCK;
    let mut out = vec![0.0; e * rows * cols];
    for (k, row) in out.chunks_exact_mut(cols).enumerate() {
        mxfp4::decode_row(
            &blocks[k * g * 16..(k + 1) * g * 16],
            &scales[k * g..(k + 1) * g],
            row,
        );
    }
    out
}

/// (E, rows, cols) → (E, cols, rows): the stacked (E, in, out) parameter of transformers.
fn transpose_experts(v: &[f64], e: usize, rows: usize, cols: usize) -> Vec<f64> {
    let mut out = vec![0.0; v.len()];
    for x in 0..e {
        for r in 0..rows {
            for c in 0..cols {
                out[x * rows * cols + c * rows + r] = v[x * rows * cols + r * cols + c];
            }
        }
    }
    out
}

fn normal(rng: &mut Rng, n: usize, sd: f64) -> Vec<f64> {
    (0..n).map(|_| rng.normal() * sd).collect()
}

/// A merge written over a base: W + ΔW, ΔW of rank `rank` with ‖ΔW‖_F = `relative`·‖W‖_F (a
/// little more on later layers), on the attention projections of `layers` and on the gate_up
/// and down of `experts` in those layers; every other weight is the base's, bit for bit.
#[derive(Debug, Clone)]
pub struct Merge {
    pub layers: Vec<usize>,
    pub experts: Vec<usize>,
    pub rank: usize,
    pub relative: f64,
    pub seed: u64,
    /// How the merged experts are stored: BF16 (E, in, out) as `merged_16bit` uploads store
    /// them; MXFP4 only when no expert changes (re-quantising a merge is not modelled).
    pub storage: ExpertStorage,
    /// The model card's `base_model` (README.md front matter), as the Hub writes it.
    pub base_model: String,
}

/// What a layer's writer changes: the merge and its own random stream (the base's stream is
/// consumed as for the base alone, so unchanged weights are equal).
struct Edit<'a> {
    merge: &'a Merge,
    rng: Rng,
}

impl Edit<'_> {
    /// Adds ΔW = B·A (rank r, scaled to `relative`·‖W‖_F) to W (out × in, row-major).
    fn add(&mut self, w: &mut [f64], out: usize, inn: usize, l: usize) {
        let r = self.merge.rank.min(out).min(inn);
        let b = normal(&mut self.rng, out * r, 1.0);
        let a = normal(&mut self.rng, r * inn, 1.0);
        let mut dw = vec![0.0; out * inn];
        for o in 0..out {
            for k in 0..r {
                let bk = b[o * r + k];
                for (x, ak) in dw[o * inn..(o + 1) * inn].iter_mut().zip(&a[k * inn..]) {
                    *x += bk * ak;
                }
            }
        }
        let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
        let (nw, nd) = (norm(w), norm(&dw));
        if nd == 0.0 {
            return;
        }
        let s = self.merge.relative * (1.0 + l as f64 / 8.0) * nw / nd;
        for (x, d) in w.iter_mut().zip(&dw) {
            *x += s * d;
        }
    }
}

/// The tensors of one layer, experts stored as `storage`, with the merge's changes if any.
fn layer_tensors(
    spec: &BaseSpec,
    l: usize,
    rng: &mut Rng,
    storage: ExpertStorage,
    mut edit: Option<&mut Edit<'_>>,
) -> Vec<TensorData> {
    let d = spec.dims;
    let merged = edit.as_ref().is_some_and(|e| e.merge.layers.contains(&l));
    let p = format!("model.layers.{l}");
    let mut t = vec![];
    for proj in ["q_proj", "k_proj", "v_proj", "o_proj"] {
        let (o, i) = d.attn_shape(proj);
        let mut w = normal(rng, o * i, 0.02);
        if let Some(e) = edit.as_deref_mut().filter(|_| merged) {
            e.add(&mut w, o, i, l);
        }
        t.push(bf16(format!("{p}.self_attn.{proj}.weight"), vec![o, i], &w));
        t.push(bf16(
            format!("{p}.self_attn.{proj}.bias"),
            vec![o],
            &normal(rng, o, 0.01),
        ));
    }
    t.push(bf16(
        format!("{p}.self_attn.sinks"),
        vec![(d.q_out / 64).max(1)],
        &normal(rng, (d.q_out / 64).max(1), 1.0),
    ));
    t.push(bf16(
        format!("{p}.mlp.router.weight"),
        vec![d.experts, d.hidden],
        &normal(rng, d.experts * d.hidden, 0.02),
    ));
    t.push(bf16(
        format!("{p}.mlp.router.bias"),
        vec![d.experts],
        &normal(rng, d.experts, 0.01),
    ));
    t.push(bf16(
        format!("{p}.input_layernorm.weight"),
        vec![d.hidden],
        &vec![1.0; d.hidden],
    ));
    t.push(bf16(
        format!("{p}.post_attention_layernorm.weight"),
        vec![d.hidden],
        &vec![1.0; d.hidden],
    ));
    let e = d.experts;
    // (name, out, in) of each expert matrix, as the MXFP4 blocks hold it.
    for (name, out, inn) in [
        ("gate_up_proj", 2 * d.inter, d.hidden),
        ("down_proj", d.hidden, d.inter),
    ] {
        t.push(bf16(
            format!("{p}.mlp.experts.{name}_bias"),
            vec![e, out],
            &normal(rng, e * out, 0.01),
        ));
        let (blocks, scales) = mxfp4_codes(rng, e, out, inn);
        let changed: Vec<usize> = match edit.as_deref() {
            Some(ed) if merged => ed
                .merge
                .experts
                .iter()
                .copied()
                .filter(|&x| x < e)
                .collect(),
            _ => vec![],
        };
        assert!(
            changed.is_empty() || storage == ExpertStorage::Bf16,
            "a merge that changes experts is written with BF16 experts"
        );
        match storage {
            ExpertStorage::Bf16 if !changed.is_empty() => {
                let mut v = decoded(&blocks, &scales, e, out, inn);
                let ed = edit.as_deref_mut().expect("an edit");
                for &x in &changed {
                    ed.add(&mut v[x * out * inn..(x + 1) * out * inn], out, inn, l);
                }
                t.push(bf16(
                    format!("{p}.mlp.experts.{name}"),
                    vec![e, inn, out],
                    &transpose_experts(&v, e, out, inn),
                ));
            }
            ExpertStorage::Mxfp4 => {
                let g = inn / mxfp4::BLOCK;
                t.push(u8s(
                    format!("{p}.mlp.experts.{name}_blocks"),
                    vec![e, out, g, 16],
                    blocks,
                ));
                t.push(u8s(
                    format!("{p}.mlp.experts.{name}_scales"),
                    vec![e, out, g],
                    scales,
                ));
            }
            ExpertStorage::Bf16 => {
                let v = transpose_experts(&decoded(&blocks, &scales, e, out, inn), e, out, inn);
                t.push(bf16(
                    format!("{p}.mlp.experts.{name}"),
                    vec![e, inn, out],
                    &v,
                ));
            }
        }
    }
    t
}

/// The files of the base repo: `config.json`, the index and the shards, as hub-cache items.
/// Needs `hidden` and `inter` multiples of 32 (MXFP4 blocks).
pub fn base_items(spec: &BaseSpec) -> Vec<Item> {
    repo_items(spec, spec.experts, None)
}

/// The files of a model merged over the base `spec` describes (same values wherever `merge`
/// changes nothing), with a model card naming the base, as merged uploads carry one.
pub fn merged_items(spec: &BaseSpec, merge: &Merge) -> Vec<Item> {
    let mut edit = Edit {
        merge,
        rng: Rng::new(merge.seed),
    };
    let mut items = repo_items(spec, merge.storage, Some(&mut edit));
    items.push(Item::Raw {
        name: "README.md".into(),
        bytes: format!(
            "---\nbase_model: {}\nlibrary_name: transformers\ntags:\n- merged\n---\n\nA synthetic merge written by lorascope.\n",
            merge.base_model
        )
        .into_bytes(),
    });
    items
}

fn repo_items(
    spec: &BaseSpec,
    storage: ExpertStorage,
    mut edit: Option<&mut Edit<'_>>,
) -> Vec<Item> {
    let d = spec.dims;
    assert!(
        d.hidden % mxfp4::BLOCK == 0 && d.inter % mxfp4::BLOCK == 0,
        "MXFP4 needs hidden and inter sizes that are multiples of 32"
    );
    let shards = spec.shards.max(1);
    let mut rng = Rng::new(spec.seed);
    let mut per_shard: Vec<Vec<TensorData>> = vec![vec![]; shards];
    for l in 0..d.layers {
        per_shard[l % shards].extend(layer_tensors(
            spec,
            l,
            &mut rng,
            storage,
            edit.as_deref_mut(),
        ));
    }
    per_shard[shards - 1].push(bf16(
        "model.norm.weight".into(),
        vec![d.hidden],
        &vec![1.0; d.hidden],
    ));
    // gpt-oss's converter: 0-based shard ids, "of" the last id (docs/base.md).
    let name = |k: usize| format!("model-{k:05}-of-{:05}.safetensors", shards - 1);
    let mut weight_map = BTreeMap::new();
    let mut total = 0usize;
    let mut items = vec![];
    for (k, mut tensors) in per_shard.into_iter().enumerate() {
        tensors.sort_by(|a, b| a.name.cmp(&b.name));
        for t in &tensors {
            weight_map.insert(t.name.clone(), name(k));
            total += t.bytes.as_ref().map_or(0, Vec::len);
        }
        items.push(Item::Raw {
            name: name(k),
            bytes: safetensors_bytes(&tensors, true),
        });
    }
    let index = serde_json::json!({"metadata": {"total_size": total}, "weight_map": weight_map});
    let config = serde_json::json!({
        "architectures": ["GptOssForCausalLM"],
        "model_type": spec.model_type,
        "hidden_size": d.hidden,
        "intermediate_size": d.inter,
        "num_hidden_layers": d.layers,
        "num_local_experts": d.experts,
        "quantization_config": if storage == ExpertStorage::Mxfp4 {
            serde_json::json!({"quant_method": "mxfp4", "modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"]})
        } else {
            serde_json::Value::Null
        },
    });
    items.push(Item::Raw {
        name: "model.safetensors.index.json".into(),
        bytes: serde_json::to_vec_pretty(&index).expect("json"),
    });
    items.push(Item::Raw {
        name: "config.json".into(),
        bytes: serde_json::to_vec_pretty(&config).expect("json"),
    });
    items
}

/// Writes the base as repo `id` of the hub cache at `root`. Returns the bytes written.
pub fn write_base(root: &Path, id: &str, spec: &BaseSpec) -> crate::Result<u64> {
    crate::synth::write_hub_repo(root, id, &base_items(spec))
}

/// Writes a merge over the base `spec` as repo `id` of the hub cache at `root`.
pub fn write_merged(root: &Path, id: &str, spec: &BaseSpec, merge: &Merge) -> crate::Result<u64> {
    crate::synth::write_hub_repo(root, id, &merged_items(spec, merge))
}
