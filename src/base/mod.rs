//! The base model an adapter changes: found in the hub cache (from `base_model_name_or_path` or
//! named), read through `model.safetensors.index.json` shards, headers only until a statistic
//! needs data, mmapped and never written. Each delta maps to its base weight W (out × in) and
//! orientation (`weight_for`); `adapter::mxfp4` decodes the gpt-oss experts one at a time; `stats` sets
//! every delta against its W. docs/base.md has the upstream sources.

pub mod merged;
pub mod stats;

/// The MXFP4 decoder lives with the file formats (`adapter::mxfp4`), below `synth`, which
/// writes MXFP4 bases with it.
pub use crate::adapter::mxfp4;

use crate::adapter::discovery;
use crate::adapter::format::{self, TensorInfo};
use crate::adapter::layout::{Delta, GateUpOrder, RowSel};
use crate::adapter::Adapter;
use crate::compute::tensor::{self, MappedFile};
use crate::error::{Error, Result};
use faer::{Mat, MatRef};
use safetensors::Dtype;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// huggingface_hub's names for a model's weights (`constants.py`).
const SINGLE_FILE: &str = "model.safetensors";
const INDEX_FILE: &str = "model.safetensors.index.json";

/// One shard of the base that is present and readable.
struct Shard {
    path: PathBuf,
    data_start: u64,
    map: MappedFile,
    /// The same file for pread (`expert_bytes`), opened after the map checked it.
    #[cfg_attr(not(unix), allow(dead_code))]
    file: std::fs::File,
}

/// An opened base model: its tensors by name, the shards they live in, and what is missing.
pub struct Base {
    /// The repo id (`openai/gpt-oss-20b`) or the path it was named by.
    pub id: String,
    /// The snapshot folder holding the weights.
    pub dir: PathBuf,
    /// What a person should know: missing shards, unreadable files.
    pub notes: Vec<String>,
    shards: Vec<Shard>,
    /// Tensor name → (shard, header entry), for tensors of present shards only.
    tensors: BTreeMap<String, (usize, TensorInfo)>,
    /// Tensor name → shard file, for tensors the index places in a shard that is absent.
    missing: BTreeMap<String, String>,
}

/// The first few of `items` and how many more: a note stays a line long however many shards an
/// index names.
fn capped_list(items: &[String]) -> String {
    const SHOWN: usize = 8;
    let mut s = items[..items.len().min(SHOWN)].join(", ");
    if items.len() > SHOWN {
        s.push_str(&format!(" and {} more", items.len() - SHOWN));
    }
    s
}

/// Where a base may be: the hub cache holding the adapter, and the other caches searched.
pub fn cache_roots(adapter: &Adapter, others: &[PathBuf]) -> Vec<PathBuf> {
    let mut roots = Vec::new();
    // `<root>/models--ORG--NAME/snapshots/<rev>/…`: the adapter's own cache comes first.
    if let Some(repo) = adapter.path.ancestors().find(|p| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("models--"))
    }) {
        roots.extend(repo.parent().map(Path::to_path_buf));
    }
    for o in others {
        if !roots.contains(o) {
            roots.push(o.clone());
        }
    }
    roots
}

/// Finds the base's snapshot folder: `named` (a repo id, a repo folder of the cache, or a folder
/// of weights), else the adapter's `base_model_name_or_path`, in `roots`. The error is a
/// sentence for the note.
pub fn locate(
    adapter: &Adapter,
    named: Option<&str>,
    roots: &[PathBuf],
) -> Result<(String, PathBuf), String> {
    let id = match named.filter(|n| !n.is_empty()) {
        Some(n) => n.to_string(),
        None => adapter.base_model().ok_or_else(|| {
            format!(
                "{} names no base model (no base_model_name_or_path): name one with --base ID|PATH",
                adapter.id
            )
        })?,
    };
    let path = PathBuf::from(&id);
    if path.is_dir() {
        if path.join("snapshots").is_dir() {
            let (_, snap) = discovery::snapshot_of(&path)?;
            return Ok((id, snap));
        }
        return Ok((id, path));
    }
    let folder = format!("models--{}", id.replace('/', "--"));
    for root in roots {
        let repo = root.join(&folder);
        if repo.is_dir() {
            let (_, snap) =
                discovery::snapshot_of(&repo).map_err(|e| format!("base model {id}: {e}"))?;
            return Ok((id, snap));
        }
    }
    let looked: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
    Err(format!(
        "base model {id} is not in the cache (looked in {})",
        if looked.is_empty() {
            "no cache".to_string()
        } else {
            looked.join(", ")
        }
    ))
}

/// Finds and opens the base of `adapter` (`named`, else its config's) in its own cache and
/// `others`. The error is the note to show (the adapter's own statistics stay as they are).
pub fn session_for(
    adapter: &Adapter,
    named: Option<&str>,
    others: &[PathBuf],
) -> Result<stats::Session, String> {
    let roots = cache_roots(adapter, others);
    let (id, dir) = locate(adapter, named, &roots)?;
    Base::open(&id, &dir).map(stats::Session::new)
}

impl Base {
    /// Reads `config.json`, the index and every present shard's header of the snapshot `dir`.
    /// A base of another architecture, or with no weights at all, is an error (a sentence); a
    /// partial one opens with notes.
    pub fn open(id: &str, dir: &Path) -> Result<Base, String> {
        if let Ok(bytes) = crate::adapter::fsread::read_regular(&dir.join("config.json")) {
            let cfg: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|e| format!("base model {id}: config.json is not valid JSON ({e})"))?;
            if let Some(mt) = cfg.get("model_type").and_then(|v| v.as_str()) {
                if mt != "gpt_oss" {
                    return Err(format!(
                        "base model {id} is a {mt} model, not gpt-oss: its weights are not read"
                    ));
                }
            }
        }
        // huggingface_hub's rule (`get_local_safetensors_metadata`): a single file wins, else the
        // index; shard names come from `weight_map` only (gpt-oss names them 0-based).
        let mut placed: BTreeMap<String, String> = BTreeMap::new();
        let single = dir.join(SINGLE_FILE);
        let shard_names: Vec<String> = if single.exists() {
            vec![SINGLE_FILE.to_string()]
        } else {
            let index = dir.join(INDEX_FILE);
            let bytes = crate::adapter::fsread::read_regular(&index).map_err(|_| {
                let hint = if dir.join("original").is_dir() {
                    " (only original/ is there: lorascope reads the Hugging Face format at the root)"
                } else {
                    ""
                };
                format!(
                    "base model {id}: no {SINGLE_FILE} or {INDEX_FILE} in {}{hint}",
                    dir.display()
                )
            })?;
            let v: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|e| format!("base model {id}: {INDEX_FILE} is not valid JSON ({e})"))?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| format!("base model {id}: {INDEX_FILE} has no weight_map"))?;
            for (name, file) in map {
                if let Some(f) = file.as_str() {
                    placed.insert(name.clone(), f.to_string());
                }
            }
            placed
                .values()
                .cloned()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect()
        };
        let mut base = Base {
            id: id.to_string(),
            dir: dir.to_path_buf(),
            notes: vec![],
            shards: vec![],
            tensors: BTreeMap::new(),
            missing: BTreeMap::new(),
        };
        // An index may spell one file many ways (`a`, `./a`, a link to it): each file is opened
        // once, keyed by the path it resolves to, and every spelling of it points at that shard.
        let mut by_file: HashMap<PathBuf, Option<usize>> = HashMap::new();
        let mut shard_of: HashMap<&str, usize> = HashMap::new();
        let mut headers: Vec<HashMap<String, TensorInfo>> = vec![];
        let mut absent = vec![];
        for name in &shard_names {
            if name.contains("..") || Path::new(name).is_absolute() {
                absent.push(format!("{name} (not a file of the snapshot)"));
                continue;
            }
            let path = dir.join(name);
            let file = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
            if let Some(seen) = by_file.get(&file) {
                // Opened (or found unreadable) under another spelling already.
                if let Some(k) = seen {
                    shard_of.insert(name, *k);
                }
                continue;
            }
            let opened = format::read_header(&path).and_then(|h| {
                let map = MappedFile::open(&path, h.file_size)?;
                let file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
                Ok((h, map, file))
            });
            match opened {
                Ok((h, map, handle)) => {
                    let k = base.shards.len();
                    by_file.insert(file, Some(k));
                    shard_of.insert(name, k);
                    headers.push(h.tensors.into_iter().map(|t| (t.name.clone(), t)).collect());
                    base.shards.push(Shard {
                        path,
                        data_start: h.data_start,
                        map,
                        file: handle,
                    });
                }
                Err(e) => {
                    by_file.insert(file, None);
                    absent.push(match e {
                        Error::Io { .. } => format!("{name} (missing)"),
                        other => format!("{name} ({})", crate::adapter::describe(&other)),
                    })
                }
            }
        }
        if placed.is_empty() {
            // The single file holds every tensor.
            for (k, h) in headers.into_iter().enumerate() {
                base.tensors.extend(h.into_iter().map(|(n, t)| (n, (k, t))));
            }
        } else {
            // The index decides where a tensor lives.
            for (t, f) in &placed {
                let found = shard_of
                    .get(f.as_str())
                    .and_then(|&k| Some((k, headers[k].remove(t)?)));
                match found {
                    Some(entry) => {
                        base.tensors.insert(t.clone(), entry);
                    }
                    None => {
                        base.missing.insert(t.clone(), f.clone());
                    }
                }
            }
        }
        if !absent.is_empty() {
            base.notes.push(format!(
                "base model {id} is partial: {} of {} shards unreadable: {}; weights in them have no base statistics",
                absent.len(),
                absent.len() + base.shards.len(),
                capped_list(&absent)
            ));
        }
        if base.shards.is_empty() {
            return Err(base.notes.pop().unwrap_or_else(|| {
                format!("base model {id}: no readable weights in {}", dir.display())
            }));
        }
        Ok(base)
    }

    /// Number of tensors present.
    pub fn tensor_count(&self) -> usize {
        self.tensors.len()
    }

    /// The layers (`model.layers.N.`) that have tensors present, ascending.
    pub fn layers(&self) -> Vec<usize> {
        let set: BTreeSet<usize> = self
            .tensors
            .keys()
            .filter_map(|n| {
                n.strip_prefix("model.layers.")?
                    .split('.')
                    .next()?
                    .parse()
                    .ok()
            })
            .collect();
        set.into_iter().collect()
    }

    fn info(&self, name: &str) -> Option<&(usize, TensorInfo)> {
        self.tensors.get(name)
    }

    /// The bytes of a present tensor, checked against a file that changed under the map.
    fn bytes<R>(&self, name: &str, read: impl FnOnce(&[u8]) -> Result<R>) -> Result<R> {
        let (k, t) = self
            .info(name)
            .ok_or_else(|| Error::Other(format!("base model {}: no tensor {name}", self.id)))?;
        let s = &self.shards[*k];
        let changed = || Error::Changed {
            path: s.path.clone(),
        };
        if !s.map.unchanged() {
            return Err(changed());
        }
        let start = (s.data_start + t.begin) as usize;
        let end = (s.data_start + t.end) as usize;
        let out = read(s.map.bytes().get(start..end).ok_or_else(changed)?)?;
        if !s.map.unchanged() {
            return Err(changed());
        }
        Ok(out)
    }

    /// Why the base has no tensor `name`: absent from it, or in a shard that is missing.
    fn why_not(&self, name: &str) -> String {
        match self.missing.get(name) {
            Some(f) => format!("{name} is in {f}, which is missing"),
            None => format!("the base has no {name}"),
        }
    }
}

/// How a base weight is stored.
#[derive(Debug, Clone, PartialEq)]
pub enum Storage {
    /// A 2D float tensor (out, in): attention, router.
    Dense { tensor: String },
    /// gpt-oss MXFP4 experts: `_blocks` (E, out, G, 16) and `_scales` (E, out, G) decode to
    /// (out, in) per expert as they are.
    Mxfp4 {
        blocks: String,
        scales: String,
        expert: usize,
    },
    /// BF16/F32 stacked experts (E, in, out) (transformers' `GptOssExperts` parameters, the
    /// dequantised and merged checkpoints): W_e = P[e]ᵀ.
    Stacked { tensor: String, expert: usize },
}

/// The base weight W (out × in) a delta changes, and how the delta lines up with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Weight {
    pub storage: Storage,
    /// Rows of the stored matrix that form W (gate or up of a fused gate_up), None: all.
    pub rows: Option<RowSel>,
    /// W's shape (out, in).
    pub out: usize,
    pub inn: usize,
    /// The delta is ΔWᵀ of W's orientation (PEFT's swapped in/out features): use its transpose.
    pub transposed: bool,
}

impl Weight {
    /// Identifies the weight in the session cache (all adapters on it share the entry).
    pub fn key(&self) -> String {
        let rows = self
            .rows
            .map_or(String::new(), |r| format!("[{}::{}]", r.start, r.step));
        match &self.storage {
            Storage::Dense { tensor } => format!("{tensor}{rows}"),
            Storage::Mxfp4 { blocks, expert, .. } => format!("{blocks}#{expert}{rows}"),
            Storage::Stacked { tensor, expert } => format!("{tensor}#{expert}{rows}"),
        }
    }
}

/// The targets that have a base weight in every gpt-oss layer, in table order.
pub const WEIGHT_TARGETS: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "router",
    "gate_up_proj",
    "down_proj",
];

/// The tensor name (gpt-oss, Hugging Face format) of a target's weight in layer `l`; experts
/// without the `_blocks` suffix.
pub fn tensor_name(l: usize, target: &str) -> Option<String> {
    let p = format!("model.layers.{l}");
    Some(match target {
        t @ ("q_proj" | "k_proj" | "v_proj" | "o_proj") => format!("{p}.self_attn.{t}.weight"),
        "router" => format!("{p}.mlp.router.weight"),
        t @ ("gate_up_proj" | "down_proj") => format!("{p}.mlp.experts.{t}"),
        _ => return None,
    })
}

/// The base tensor names (gpt-oss, Hugging Face format) of a delta's target, with the rows of a
/// fused gate_up that belong to a separate gate or up delta.
fn names_for(d: &Delta) -> Option<(String, Option<(usize, String)>)> {
    let l = d.layer?;
    Some(match d.target.as_str() {
        t @ ("gate_proj" | "up_proj") => {
            let half = usize::from(t == "up_proj");
            (tensor_name(l, "gate_up_proj")?, Some((half, t.to_string())))
        }
        t => (tensor_name(l, t)?, None),
    })
}

/// Maps a delta to its base weight and orientation. Err is the reason it has none (a note).
pub fn weight_for(base: &Base, d: &Delta, order: GateUpOrder) -> Result<Weight, String> {
    let (name, half) = names_for(d).ok_or_else(|| {
        format!(
            "no base weight is known for target {}{}",
            d.target,
            if d.layer.is_none() {
                " outside a layer"
            } else {
                ""
            }
        )
    })?;
    if name.contains(".mlp.experts.") && d.expert.is_none() {
        return Err(format!(
            "{}: a delta shared by all experts has no single base weight",
            d.target
        ));
    }
    let (storage, stored_out, stored_in) = base.stored(&name, d.expert.unwrap_or(0))?;
    let rows = match &half {
        Some((h, _)) if stored_out % 2 == 0 => Some(order.rows(*h, stored_out)),
        Some((_, t)) => return Err(format!("{name} has {stored_out} rows: no {t} half to take")),
        None => None,
    };
    let out = rows.map_or(stored_out, |r| r.len);
    // The shapes decide the orientation; a square weight is read as (out, in) like nn.Linear.
    let transposed = if (d.out_dim, d.in_dim) == (out, stored_in) {
        false
    } else if (d.out_dim, d.in_dim) == (stored_in, out) {
        true
    } else {
        return Err(format!(
            "{}: ΔW is {}×{} but the base weight {name} is {out}×{stored_in}",
            d.module, d.out_dim, d.in_dim
        ));
    };
    Ok(Weight {
        storage,
        rows,
        out,
        inn: stored_in,
        transposed,
    })
}

impl Base {
    /// How the weight `name` (expert `e` of an expert tensor) is stored, and its (out, in).
    /// Err is the reason it is not there (a note).
    pub fn stored(&self, name: &str, e: usize) -> Result<(Storage, usize, usize), String> {
        let base = self;
        if name.contains(".mlp.experts.") {
            let (blocks, scales) = (format!("{name}_blocks"), format!("{name}_scales"));
            if let (Some((_, b)), Some((_, s))) = (base.info(&blocks), base.info(&scales)) {
                let ok = b.dtype == Dtype::U8
                    && s.dtype == Dtype::U8
                    && b.shape.len() == 4
                    && b.shape[3] == mxfp4::BLOCK_BYTES
                    && s.shape == b.shape[..3];
                if !ok {
                    return Err(format!(
                        "{blocks} {:?} / {scales} {:?} are not MXFP4 blocks and scales",
                        b.shape, s.shape
                    ));
                }
                if e >= b.shape[0] {
                    return Err(format!(
                        "{blocks} has {} experts, not {}",
                        b.shape[0],
                        e + 1
                    ));
                }
                Ok((
                    Storage::Mxfp4 {
                        blocks,
                        scales,
                        expert: e,
                    },
                    b.shape[1],
                    b.shape[2] * mxfp4::BLOCK,
                ))
            } else if let Some((_, t)) = base.info(name) {
                if t.shape.len() != 3 || e >= t.shape[0] {
                    return Err(format!(
                        "{name} {:?} is not stacked experts (E, in, out) with expert {e}",
                        t.shape
                    ));
                }
                Ok((
                    Storage::Stacked {
                        tensor: name.to_string(),
                        expert: e,
                    },
                    t.shape[2],
                    t.shape[1],
                ))
            } else if base.missing.contains_key(&blocks) {
                Err(base.why_not(&blocks))
            } else {
                Err(base.why_not(name))
            }
        } else {
            let (_, t) = base.info(name).ok_or_else(|| base.why_not(name))?;
            if t.shape.len() != 2 {
                return Err(format!("{name} {:?} is not a matrix", t.shape));
            }
            Ok((
                Storage::Dense {
                    tensor: name.to_string(),
                },
                t.shape[0],
                t.shape[1],
            ))
        }
    }

    /// The number of experts of the expert tensor `name` (without `_blocks`), if present.
    pub fn experts_of(&self, name: &str) -> Option<usize> {
        self.info(&format!("{name}_blocks"))
            .or_else(|| self.info(name))
            .and_then(|(_, t)| t.shape.first().copied())
    }

    /// Whether a tensor of that name (or its `_blocks`) is present.
    pub fn has(&self, name: &str) -> bool {
        self.info(name).is_some() || self.info(&format!("{name}_blocks")).is_some()
    }
}

impl Base {
    /// ‖W‖_F² read from the file: MXFP4 rows by table sums (no decode), float tensors directly.
    pub fn fro_sq(&self, w: &Weight) -> Result<f64> {
        let rows = self.row_indices(w);
        match &w.storage {
            Storage::Mxfp4 {
                blocks,
                scales,
                expert,
            } => {
                let (g, _) = self.mxfp4_geometry(blocks)?;
                self.expert_bytes(blocks, scales, *expert, |eb, es| {
                    Ok(rows
                        .iter()
                        .map(|&o| {
                            mxfp4::row_sq_norm(
                                &eb[o * g * 16..(o + 1) * g * 16],
                                &es[o * g..(o + 1) * g],
                            )
                        })
                        .sum())
                })
            }
            Storage::Dense { tensor } => {
                // Straight from the values: no matrix (a q_proj is 94 MB as f64).
                let (_, t) = self.info(tensor).expect("mapped weight");
                let cols = t.shape[1];
                self.bytes(tensor, |raw| {
                    let v = tensor::float_values(raw, t.dtype, tensor)?;
                    Ok(rows
                        .iter()
                        .map(|&o| {
                            v[o * cols..(o + 1) * cols]
                                .iter()
                                .map(|x| x * x)
                                .sum::<f64>()
                        })
                        .sum())
                })
            }
            Storage::Stacked { .. } => {
                let m = self.dense_t(w)?;
                Ok(m.col_iter()
                    .map(|c| c.iter().map(|x| x * x).sum::<f64>())
                    .sum())
            }
        }
    }

    /// One MXFP4 expert's blocks (rows × G × 16 bytes) and scales (rows × G), read with pread
    /// into per-thread buffers. A pass over a 20b base reads ~10 GB: mapping it page by page
    /// (a minor fault, page-table and LRU work per 4 KB) cost several times the copy.
    fn expert_bytes<R>(
        &self,
        blocks: &str,
        scales: &str,
        expert: usize,
        read: impl FnOnce(&[u8], &[u8]) -> Result<R>,
    ) -> Result<R> {
        thread_local! {
            static BUFS: std::cell::RefCell<(Vec<u8>, Vec<u8>)> =
                const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
        }
        let (g, out) = self.mxfp4_geometry(blocks)?;
        let (nb, ns) = (out * g * mxfp4::BLOCK_BYTES, out * g);
        BUFS.with_borrow_mut(|(bb, sb)| {
            self.read_at(blocks, expert * nb, nb, bb)?;
            self.read_at(scales, expert * ns, ns, sb)?;
            read(bb, sb)
        })
    }

    /// Bytes [offset, offset + len) of tensor `name`, read from its shard into `buf`; a file
    /// that changed or shrank since it was opened is `Error::Changed`.
    fn read_at(&self, name: &str, offset: usize, len: usize, buf: &mut Vec<u8>) -> Result<()> {
        let (k, t) = self
            .info(name)
            .ok_or_else(|| Error::Other(self.why_not(name)))?;
        let s = &self.shards[*k];
        let changed = || Error::Changed {
            path: s.path.clone(),
        };
        if offset + len > (t.end - t.begin) as usize || !s.map.unchanged() {
            return Err(changed());
        }
        buf.resize(len, 0);
        let pos = s.data_start + t.begin + offset as u64;
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileExt;
            s.file.read_exact_at(buf, pos).map_err(|_| changed())?;
        }
        #[cfg(not(unix))]
        buf.copy_from_slice(
            s.map
                .bytes()
                .get(pos as usize..pos as usize + len)
                .ok_or_else(changed)?,
        );
        if !s.map.unchanged() {
            return Err(changed());
        }
        Ok(())
    }

    fn mxfp4_geometry(&self, blocks: &str) -> Result<(usize, usize)> {
        let (_, t) = self
            .info(blocks)
            .ok_or_else(|| Error::Other(self.why_not(blocks)))?;
        Ok((t.shape[2], t.shape[1]))
    }

    /// The stored rows that make W, in order.
    fn row_indices(&self, w: &Weight) -> Vec<usize> {
        match w.rows {
            Some(r) => (0..r.len).map(|k| r.start + k * r.step).collect(),
            None => (0..w.out).collect(),
        }
    }

    /// W·V (out × k) for V (in × k). MXFP4 experts are decoded a panel of rows at a time into
    /// one small buffer and multiplied there: a dense 5760×2880 W would be 133 MB to allocate,
    /// fault in and clear for every delta, which cost more than the products.
    pub fn mul(&self, w: &Weight, v: MatRef<'_, f64>) -> Result<Mat<f64>> {
        let Storage::Mxfp4 {
            blocks,
            scales,
            expert,
        } = &w.storage
        else {
            return Ok(self.dense_t(w)?.transpose() * v);
        };
        const PANEL: usize = 256;
        thread_local! {
            // One panel buffer per thread, reused: a fresh one per delta was a fresh mapping
            // to fault in and clear.
            static BUF: std::cell::RefCell<Vec<f64>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        let rows = self.row_indices(w);
        let (g, _) = self.mxfp4_geometry(blocks)?;
        let inn = g * mxfp4::BLOCK;
        let mut res = Mat::<f64>::zeros(rows.len(), v.ncols());
        self.expert_bytes(blocks, scales, *expert, |eb, es| {
            BUF.with_borrow_mut(|buf| {
                buf.resize(inn * PANEL, 0.0);
                for (c, chunk) in rows.chunks(PANEL).enumerate() {
                    for (&o, col) in chunk.iter().zip(buf.chunks_exact_mut(inn)) {
                        mxfp4::decode_row(
                            &eb[o * g * 16..(o + 1) * g * 16],
                            &es[o * g..(o + 1) * g],
                            col,
                        );
                    }
                    let panel = MatRef::from_column_major_slice(
                        &buf[..inn * chunk.len()],
                        inn,
                        chunk.len(),
                    );
                    let prod = panel.transpose() * v;
                    res.as_mut()
                        .subrows_mut(c * PANEL, chunk.len())
                        .copy_from(&prod);
                }
            });
            Ok(())
        })?;
        Ok(res)
    }

    /// W as a dense f64 matrix (out × in): one expert decoded, never the whole layer.
    pub fn dense(&self, w: &Weight) -> Result<Mat<f64>> {
        Ok(self.dense_t(w)?.transpose().to_owned())
    }

    /// Wᵀ (in × out), column-major: each of W's rows is one contiguous column, so an MXFP4 row
    /// decodes straight into place (W's own column-major layout would scatter every row).
    /// `wt.transpose()` is W for the products.
    pub fn dense_t(&self, w: &Weight) -> Result<Mat<f64>> {
        let rows = self.row_indices(w);
        match &w.storage {
            Storage::Dense { tensor } => {
                let (_, t) = self.info(tensor).expect("mapped weight");
                let cols = t.shape[1];
                let v = self.bytes(tensor, |raw| tensor::float_values(raw, t.dtype, tensor))?;
                Ok(Mat::from_fn(cols, rows.len(), |j, i| v[rows[i] * cols + j]))
            }
            Storage::Stacked { tensor, expert } => {
                let (_, t) = self.info(tensor).expect("mapped weight");
                let (inn, out) = (t.shape[1], t.shape[2]);
                let size = inn * out * t.dtype.bitsize() / 8;
                let v = self.bytes(tensor, |raw| {
                    tensor::float_values(&raw[expert * size..(expert + 1) * size], t.dtype, tensor)
                })?;
                // P[e] is (in, out) = Wᵀ.
                Ok(Mat::from_fn(inn, rows.len(), |j, i| v[j * out + rows[i]]))
            }
            Storage::Mxfp4 {
                blocks,
                scales,
                expert,
            } => {
                let (g, _) = self.mxfp4_geometry(blocks)?;
                let inn = g * mxfp4::BLOCK;
                let mut m = Mat::<f64>::zeros(inn, rows.len());
                self.expert_bytes(blocks, scales, *expert, |eb, es| {
                    for (i, &o) in rows.iter().enumerate() {
                        mxfp4::decode_row(
                            &eb[o * g * 16..(o + 1) * g * 16],
                            &es[o * g..(o + 1) * g],
                            m.col_as_slice_mut(i),
                        );
                    }
                    Ok(())
                })?;
                Ok(m)
            }
        }
    }

    /// m += sign·W (out × in), streamed from the file one stored row at a time (a row of W, or
    /// for stacked experts a column of W): no copy of W besides `m`.
    pub fn add_to(&self, w: &Weight, sign: f64, m: &mut Mat<f64>) -> Result<()> {
        // The stored rows that make W (a fused gate_up's gate or up takes every other one).
        let rows = self.row_indices(w);
        match &w.storage {
            Storage::Dense { tensor } => {
                let (_, t) = self.info(tensor).expect("mapped weight");
                let (cols, size) = (t.shape[1], t.dtype.bitsize() / 8);
                self.bytes(tensor, |raw| {
                    for (i, &r) in rows.iter().enumerate() {
                        let row = &raw[r * cols * size..(r + 1) * cols * size];
                        for (j, x) in tensor::float_values(row, t.dtype, tensor)?
                            .into_iter()
                            .enumerate()
                        {
                            m[(i, j)] += sign * x;
                        }
                    }
                    Ok(())
                })
            }
            Storage::Stacked { tensor, expert } => {
                let (_, t) = self.info(tensor).expect("mapped weight");
                let (inn, out, size) = (t.shape[1], t.shape[2], t.dtype.bitsize() / 8);
                // P[e] is (in, out) and W = P[e]ᵀ: stored row j is column j of W.
                self.bytes(tensor, |raw| {
                    let p = &raw[expert * inn * out * size..(expert + 1) * inn * out * size];
                    for j in 0..inn {
                        let col = tensor::float_values(
                            &p[j * out * size..(j + 1) * out * size],
                            t.dtype,
                            tensor,
                        )?;
                        for (i, &r) in rows.iter().enumerate() {
                            m[(i, j)] += sign * col[r];
                        }
                    }
                    Ok(())
                })
            }
            Storage::Mxfp4 {
                blocks,
                scales,
                expert,
            } => {
                let (g, _) = self.mxfp4_geometry(blocks)?;
                let mut row = vec![0.0; g * mxfp4::BLOCK];
                self.expert_bytes(blocks, scales, *expert, |eb, es| {
                    for (i, &o) in rows.iter().enumerate() {
                        mxfp4::decode_row(
                            &eb[o * g * 16..(o + 1) * g * 16],
                            &es[o * g..(o + 1) * g],
                            &mut row,
                        );
                        for (j, x) in row.iter().enumerate() {
                            m[(i, j)] += sign * x;
                        }
                    }
                    Ok(())
                })
            }
        }
    }
}
