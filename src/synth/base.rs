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

/// The shard file of shard `k` of `shards`: gpt-oss's converter numbers them from 0 and writes
/// "of" the last id (docs/base.md).
fn shard_name(k: usize, shards: usize) -> String {
    format!("model-{k:05}-of-{:05}.safetensors", shards - 1)
}

fn check_dims(spec: &BaseSpec) {
    let d = spec.dims;
    assert!(
        d.hidden % mxfp4::BLOCK == 0 && d.inter % mxfp4::BLOCK == 0,
        "MXFP4 needs hidden and inter sizes that are multiples of 32"
    );
}

/// The model-level tensors (after every layer's), in the last shard.
fn final_tensors(spec: &BaseSpec) -> Vec<TensorData> {
    let h = spec.dims.hidden;
    vec![bf16("model.norm.weight".into(), vec![h], &vec![1.0; h])]
}

fn index_json(weight_map: &BTreeMap<String, String>, total: usize) -> Vec<u8> {
    let index = serde_json::json!({"metadata": {"total_size": total}, "weight_map": weight_map});
    serde_json::to_vec_pretty(&index).expect("json")
}

fn config_json(spec: &BaseSpec, storage: ExpertStorage) -> Vec<u8> {
    let d = spec.dims;
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
    serde_json::to_vec_pretty(&config).expect("json")
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
    check_dims(spec);
    let shards = spec.shards.max(1);
    let mut rng = Rng::new(spec.seed);
    let mut per_shard: Vec<Vec<TensorData>> = vec![vec![]; shards];
    for l in 0..spec.dims.layers {
        per_shard[l % shards].extend(layer_tensors(
            spec,
            l,
            &mut rng,
            storage,
            edit.as_deref_mut(),
        ));
    }
    per_shard[shards - 1].extend(final_tensors(spec));
    let mut weight_map = BTreeMap::new();
    let mut total = 0usize;
    let mut items = vec![];
    for (k, mut tensors) in per_shard.into_iter().enumerate() {
        tensors.sort_by(|a, b| a.name.cmp(&b.name));
        for t in &tensors {
            weight_map.insert(t.name.clone(), shard_name(k, shards));
            total += t.bytes.as_ref().map_or(0, Vec::len);
        }
        items.push(Item::Raw {
            name: shard_name(k, shards),
            bytes: safetensors_bytes(&tensors, true),
        });
    }
    items.push(Item::Raw {
        name: "model.safetensors.index.json".into(),
        bytes: index_json(&weight_map, total),
    });
    items.push(Item::Raw {
        name: "config.json".into(),
        bytes: config_json(spec, storage),
    });
    items
}

/// Bytes kept for each shard's header before its data is streamed in (a 24-layer gpt-oss shard
/// needs ~25 KB); the unused part is JSON whitespace, which safetensors readers accept.
const HEADER_RESERVE: usize = 1 << 20;

/// One shard file being streamed: its data follows a reserved header, written last.
struct ShardWriter {
    path: std::path::PathBuf,
    file: std::io::BufWriter<std::fs::File>,
    tensors: Vec<TensorData>,
}

/// Writes the base into the folder `dir` (`config.json`, `model.safetensors.index.json`, the
/// shards) holding one layer's tensors in memory at a time, for full-size bases (gpt-oss-20b's
/// experts alone are ~10 GB). The tensors are `base_items`'s, from the same generator and seed;
/// only the layout inside each shard differs (data in layer order after a padded header).
/// Returns the bytes written.
pub fn write_base_dir(dir: &Path, spec: &BaseSpec) -> crate::Result<u64> {
    use std::io::{Seek, SeekFrom, Write};
    check_dims(spec);
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e| crate::Error::io(p, e)
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let shards = spec.shards.max(1);
    let mut out: Vec<ShardWriter> = vec![];
    for k in 0..shards {
        let path = dir.join(shard_name(k, shards));
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path).map_err(io(&path))?);
        file.write_all(&vec![0u8; 8 + HEADER_RESERVE])
            .map_err(io(&path))?;
        out.push(ShardWriter {
            path,
            file,
            tensors: vec![],
        });
    }
    let mut put = |k: usize, tensors: Vec<TensorData>| -> crate::Result<()> {
        let s = &mut out[k];
        for mut t in tensors {
            let bytes = t.bytes.take().unwrap_or_default();
            s.file.write_all(&bytes).map_err(io(&s.path))?;
            s.tensors.push(t);
        }
        Ok(())
    };
    let mut rng = Rng::new(spec.seed);
    for l in 0..spec.dims.layers {
        put(
            l % shards,
            layer_tensors(spec, l, &mut rng, spec.experts, None),
        )?;
    }
    put(shards - 1, final_tensors(spec))?;
    let mut weight_map = BTreeMap::new();
    let mut total = 0usize;
    for (k, s) in out.into_iter().enumerate() {
        let mut file = s
            .file
            .into_inner()
            .map_err(|e| io(&s.path)(e.into_error()))?;
        let (mut header, data) =
            crate::adapter::format::header_bytes(&s.tensors, super::WRITER, true);
        if header.len() > HEADER_RESERVE {
            return Err(crate::Error::Other(format!(
                "{}: a header of {} bytes does not fit the {HEADER_RESERVE} reserved",
                s.path.display(),
                header.len()
            )));
        }
        header.resize(HEADER_RESERVE, b' ');
        file.seek(SeekFrom::Start(0)).map_err(io(&s.path))?;
        file.write_all(&(HEADER_RESERVE as u64).to_le_bytes())
            .and_then(|()| file.write_all(&header))
            .and_then(|()| file.flush())
            .map_err(io(&s.path))?;
        for t in &s.tensors {
            weight_map.insert(t.name.clone(), shard_name(k, shards));
        }
        total += data;
    }
    let files = [
        (
            "model.safetensors.index.json",
            index_json(&weight_map, total),
        ),
        ("config.json", config_json(spec, spec.experts)),
    ];
    for (name, bytes) in files {
        let p = dir.join(name);
        std::fs::write(&p, bytes).map_err(io(&p))?;
    }
    Ok((shards * (8 + HEADER_RESERVE) + total) as u64)
}

/// Writes the base as repo `id` of the hub cache at `root`. Returns the bytes written.
pub fn write_base(root: &Path, id: &str, spec: &BaseSpec) -> crate::Result<u64> {
    crate::synth::write_hub_repo(root, id, &base_items(spec))
}

/// Writes a merge over the base `spec` as repo `id` of the hub cache at `root`.
pub fn write_merged(root: &Path, id: &str, spec: &BaseSpec, merge: &Merge) -> crate::Result<u64> {
    crate::synth::write_hub_repo(root, id, &merged_items(spec, merge))
}
