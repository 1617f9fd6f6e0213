//! An adapter as lorascope sees it: its files' headers, its config, its kind and its deltas.

pub mod catalog;
pub mod checkpoint;
pub mod config;
pub mod discovery;
pub mod format;
pub mod fsread;
pub mod gguf;
pub mod gguf_layout;
pub mod history;
pub mod incomplete;
pub mod layout;
pub mod mxfp4;
pub mod target;
pub mod torchtune;

use crate::adapter::config::ConfigStatus;
use crate::adapter::format::{Header, TensorInfo};
use crate::adapter::layout::{
    Delta, ExpertLayout, Format, FullTensor, Incomplete, LayoutOptions, Role, Target, TensorEntry,
};
use crate::error::Error;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// What kind of thing was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Lora,
    FullWeights,
    Empty,
    NoSafetensors,
    Error,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Lora => "lora",
            Kind::FullWeights => "full-weights",
            Kind::Empty => "empty",
            Kind::NoSafetensors => "no-safetensors",
            Kind::Error => "error",
        }
    }
}

/// The survey's patterns, as a finer reading of `Kind::Lora`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Pattern {
    #[serde(rename = "attention-only")]
    AttentionOnly,
    #[serde(rename = "attention+router")]
    AttentionRouter,
    #[serde(rename = "attention+experts per-expert")]
    ExpertsPerExpert,
    #[serde(rename = "attention+experts shared-3d")]
    ExpertsShared3d,
    #[serde(rename = "attention+experts per-expert (module list)")]
    ExpertsModuleList,
    #[serde(rename = "other-lora")]
    OtherLora,
    #[serde(rename = "full-weights")]
    FullWeights,
    /// Full weights that adapters of the same list name as their base (`Adapter::base_of`).
    #[serde(rename = "base model")]
    BaseModel,
    #[serde(rename = "empty")]
    Empty,
    #[serde(rename = "no-safetensors")]
    NoSafetensors,
    #[serde(rename = "error")]
    Error,
}

impl Pattern {
    pub fn as_str(self) -> &'static str {
        match self {
            Pattern::AttentionOnly => "attention-only",
            Pattern::AttentionRouter => "attention+router",
            Pattern::ExpertsPerExpert => "attention+experts per-expert",
            Pattern::ExpertsShared3d => "attention+experts shared-3d",
            Pattern::ExpertsModuleList => "attention+experts per-expert (module list)",
            Pattern::OtherLora => "other-lora",
            Pattern::FullWeights => "full-weights",
            Pattern::BaseModel => "base model",
            Pattern::Empty => "empty",
            Pattern::NoSafetensors => "no-safetensors",
            Pattern::Error => "error",
        }
    }
}

/// A safetensors file of the adapter, with what the data reader needs.
#[derive(Debug, Clone, Serialize)]
pub struct FileInfo {
    pub path: PathBuf,
    pub size: u64,
    pub data_start: u64,
}

/// Where an adapter lives, as discovery found it (nothing read yet).
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    pub id: String,
    /// The adapter's folder (its config lives here) or the single file named.
    pub path: PathBuf,
    pub dir: PathBuf,
    pub files: Vec<PathBuf>,
    pub revision: Option<String>,
    /// Set when discovery already knows it cannot be read (e.g. an unreadable folder).
    pub problem: Option<String>,
    /// Other notable files (e.g. `adapter_model.bin`) for adapters without safetensors.
    pub other_files: Vec<String>,
    /// Its place in its Hub repo's fetched history, when several revisions are in the cache.
    pub history: Option<history::History>,
}

/// An adapter: headers, config and layout, never tensor data.
#[derive(Debug, Clone)]
pub struct Adapter {
    pub id: String,
    pub path: PathBuf,
    pub revision: Option<String>,
    pub kind: Kind,
    pub error: Option<String>,
    pub files: Vec<FileInfo>,
    pub tensors: Vec<TensorEntry>,
    pub config: ConfigStatus,
    pub deltas: Vec<Delta>,
    pub full: Vec<FullTensor>,
    /// Modules whose factors make no delta (a lone lora_A, ranks that disagree): their tensors
    /// are `unknown`, the rest of the adapter is read.
    pub incomplete: Vec<Incomplete>,
    pub notes: Vec<String>,
    pub other_files: Vec<String>,
    /// Full weights: the base model their model card (README.md front matter) names, as merged
    /// uploads carry it. GGUF files: the base model their key/values name.
    pub card_base: Option<String>,
    /// How many adapters of the list it was read with name it as their base (`mark_bases`).
    pub base_of: usize,
    /// Its place in its Hub repo's fetched history (a run of revisions, `run::detect`).
    pub history: Option<history::History>,
}

impl Adapter {
    fn new(src: &Source, config: ConfigStatus) -> Adapter {
        Adapter {
            id: src.id.clone(),
            path: src.path.clone(),
            revision: src.revision.clone(),
            kind: Kind::Error,
            error: None,
            files: vec![],
            tensors: vec![],
            config,
            deltas: vec![],
            full: vec![],
            incomplete: vec![],
            notes: vec![],
            other_files: src.other_files.clone(),
            card_base: None,
            history: src.history.clone(),
            base_of: 0,
        }
    }

    fn fail(mut self, msg: impl Into<String>) -> Adapter {
        self.kind = Kind::Error;
        self.error = Some(msg.into());
        self.deltas.clear();
        self.full.clear();
        self.incomplete.clear();
        self
    }

    /// Reads every header and the config from disk, and builds the layout. Never fails: problems
    /// become `Kind::Error` with a message.
    pub fn load(src: &Source, opts: LayoutOptions) -> Adapter {
        // A GGUF file carries its own alpha and base model: a folder's adapter_config.json
        // belongs to the safetensors next to it.
        let is_gguf = src.files.iter().any(|f| gguf::is_gguf_path(f));
        let cfg = if is_gguf {
            ConfigStatus::Missing
        } else {
            config::load(&src.dir)
        };
        let headers = src
            .files
            .iter()
            .map(|f| {
                if gguf::is_gguf_path(f) {
                    gguf::read_header(f)
                } else {
                    format::read_header(f)
                }
            })
            .collect();
        let read_scalar = |f: &FileInfo, t: &TensorInfo| {
            format::read_scalar(&f.path, f.data_start + t.begin, t.dtype)
        };
        let mut a = Adapter::from_headers(src, cfg, headers, opts, &read_scalar);
        if a.kind == Kind::FullWeights && a.card_base.is_none() {
            a.card_base = card_base_model(&src.dir.join("README.md"));
        }
        a
    }

    /// Builds an adapter from headers and a config already read (from disk, or over HTTP by
    /// `hub`), so that local and remote adapters share one path. `read_scalar` fetches the few
    /// bytes of kohya's `.alpha` scalars. Never fails: problems become `Kind::Error`.
    pub fn from_headers(
        src: &Source,
        cfg: ConfigStatus,
        headers: crate::Result<Vec<Header>>,
        opts: LayoutOptions,
        read_scalar: &ScalarReader,
    ) -> Adapter {
        let mut a = Adapter::new(src, cfg);
        if let Some(p) = &src.problem {
            return a.fail(p.clone());
        }
        if src.files.is_empty() {
            a.kind = Kind::NoSafetensors;
            a.notes.push(if a.other_files.is_empty() {
                "no .safetensors file".to_string()
            } else {
                format!("no .safetensors file (found {})", a.other_files.join(", "))
            });
            a.notes.extend(torchtune::pickle_note(&a.other_files));
            return a;
        }
        let headers = match headers {
            Ok(h) => h,
            Err(e) => return a.fail(describe(&e)),
        };
        let mut gguf_meta = None;
        for (fi, h) in headers.into_iter().enumerate() {
            a.files.push(FileInfo {
                path: h.path.clone(),
                size: h.file_size,
                data_start: h.data_start,
            });
            let is_gguf = h.gguf_version.is_some();
            if is_gguf {
                gguf_meta = Some(gguf_layout::Meta::of(&h.metadata));
            }
            for t in h.tensors {
                let name = if is_gguf {
                    gguf_layout::parse_name(&t.name)
                } else {
                    layout::parse_name(&t.name)
                };
                a.tensors.push(TensorEntry {
                    file: fi,
                    info: t,
                    name,
                });
            }
        }
        if let Some(m) = &gguf_meta {
            a.notes.extend(m.notes());
            a.card_base = m.base_model.clone();
        } else if let Some(p) = a.config.problem() {
            a.notes.push(p);
        }
        if let Some(c) = a.config.config() {
            if !c.defaulted.is_empty() {
                a.notes.push(format!(
                    "adapter_config.json has no {}: PEFT's defaults used",
                    c.defaulted.join(", ")
                ));
            }
        }
        if a.tensors.is_empty() {
            a.kind = Kind::Empty;
            return a;
        }
        let alphas = match &gguf_meta {
            Some(m) => gguf_alphas(&a, m),
            None => match kohya_alphas(&a, read_scalar) {
                Ok(x) => x,
                Err(e) => return a.fail(e),
            },
        };
        let lay = layout::build(&a.tensors, a.config.config(), &alphas, opts);
        // A file whose names look like LoRA is never read as full weights.
        let any_lora =
            a.tensors.iter().any(|t| {
                matches!(t.name.role, Role::LoraA | Role::LoraB) || t.name.format.is_some()
            }) || !lay.unknown.is_empty();
        a.kind = if any_lora {
            Kind::Lora
        } else {
            Kind::FullWeights
        };
        a.deltas = lay.deltas;
        a.full = lay.full;
        a.incomplete = lay.incomplete;
        a.notes.extend(lay.notes);
        for u in &lay.unknown {
            let n = &mut a.tensors[u.tensor].name;
            n.role = Role::Unknown;
            n.unknown = Some(u.reason.clone());
        }
        if let Some(n) = unrecognised_note(&a) {
            a.notes.push(n);
        }
        let extras: BTreeSet<&str> = a
            .tensors
            .iter()
            .filter(|t| {
                matches!(
                    t.name.role,
                    Role::DoraMagnitude | Role::LoraBias | Role::TrainableTokens
                )
            })
            .map(|t| t.name.role.as_str())
            .collect();
        if !extras.is_empty() {
            a.notes.push(format!(
                "also holds {} (listed, not part of ΔW = s·B·A)",
                extras.iter().copied().collect::<Vec<_>>().join(", ")
            ));
        }
        if extras.contains(Role::DoraMagnitude.as_str()) {
            a.notes.push(
                "DoRA: statistics are of s·B·A, not of the magnitude-normalised update".into(),
            );
        }
        // Full copies of embeddings make adapters gigabytes large: say so with their size.
        let copies: Vec<String> = a
            .full
            .iter()
            .filter(|f| {
                matches!(
                    f.target.as_str(),
                    "embed_tokens" | "lm_head" | "unembed_tokens"
                )
            })
            .map(|f| {
                let bytes = a.tensors[f.tensor].info.nbytes();
                format!("{} ({:.1} MB)", f.name, bytes as f64 / 1e6)
            })
            .collect();
        if a.kind == Kind::Lora && !copies.is_empty() {
            a.notes.push(format!("full copies: {}", copies.join(", ")));
        }
        a
    }

    /// Tensors not understood (role `unknown`): never part of a delta.
    pub fn unrecognised(&self) -> usize {
        self.tensors
            .iter()
            .filter(|t| t.name.role == Role::Unknown)
            .count()
    }

    /// The writer whose conventions the LoRA tensors follow (the most specific one seen).
    pub fn format(&self) -> Option<Format> {
        if self.kind != Kind::Lora {
            return None;
        }
        // The writer of the deltas; an unknown tensor names it only when nothing else does.
        let of = |unknown: bool| {
            self.tensors
                .iter()
                .filter(|t| (t.name.role == Role::Unknown) == unknown)
                .filter_map(|t| t.name.format)
                .max()
        };
        of(false).or_else(|| of(true))
    }

    pub fn is_error(&self) -> bool {
        self.kind == Kind::Error
    }

    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    pub fn dtypes(&self) -> Vec<String> {
        let s: BTreeSet<String> = self.tensors.iter().map(|t| t.info.dtype_name()).collect();
        s.into_iter().collect()
    }

    /// Names of the targets of deltas and full tensors, sorted by name (the `scan` JSON order).
    pub fn targets(&self) -> Vec<String> {
        let names = self.deltas.iter().map(|d| &d.target);
        let s: BTreeSet<String> = names
            .chain(self.full.iter().map(|f| &f.target))
            .map(|t| t.to_string())
            .collect();
        s.into_iter().collect()
    }

    fn max_rank(&self, expert: bool) -> Option<usize> {
        self.deltas
            .iter()
            .filter(|d| d.expert_layout.is_some() == expert)
            .map(|d| d.rank)
            .max()
    }

    /// Rank of the non-expert deltas (the attention projections in gpt-oss); the largest if mixed.
    pub fn attention_rank(&self) -> Option<usize> {
        self.max_rank(false)
    }

    /// Per-expert rank r (not r·E) of the expert deltas.
    pub fn expert_rank(&self) -> Option<usize> {
        self.max_rank(true)
    }

    pub fn expert_layout(&self) -> Option<ExpertLayout> {
        self.deltas.iter().find_map(|d| d.expert_layout)
    }

    pub fn expert_layers(&self) -> Vec<usize> {
        let s: BTreeSet<usize> = self
            .deltas
            .iter()
            .filter(|d| d.expert_layout.is_some())
            .filter_map(|d| d.layer)
            .collect();
        s.into_iter().collect()
    }

    /// Number of experts per expert target (the largest), if any.
    pub fn experts(&self) -> Option<usize> {
        self.deltas
            .iter()
            // Saturating: an index comes from a tensor name and may be usize::MAX.
            .filter_map(|d| d.expert.map(|e| e.saturating_add(1)))
            .max()
    }

    /// Distinct layers touched by deltas or full tensors, sorted.
    pub fn layer_indices(&self) -> Vec<usize> {
        let mut s: BTreeSet<usize> = self.deltas.iter().filter_map(|d| d.layer).collect();
        s.extend(self.full.iter().filter_map(|f| f.layer));
        s.into_iter().collect()
    }

    /// The base model the adapter names: its config's, else (full weights) its model card's.
    pub fn base_model(&self) -> Option<String> {
        self.config
            .config()
            .and_then(|c| c.base_model.clone())
            .or_else(|| self.card_base.clone())
    }

    /// The survey's pattern.
    pub fn pattern(&self) -> Pattern {
        self.pattern_as(self.base_of)
    }

    /// The pattern when `base_of` adapters of the list name it as their base.
    pub fn pattern_as(&self, base_of: usize) -> Pattern {
        match self.kind {
            Kind::Error => Pattern::Error,
            Kind::Empty => Pattern::Empty,
            Kind::NoSafetensors => Pattern::NoSafetensors,
            Kind::FullWeights if base_of > 0 => Pattern::BaseModel,
            Kind::FullWeights => Pattern::FullWeights,
            Kind::Lora => match self.expert_layout() {
                Some(ExpertLayout::PerExpert) => Pattern::ExpertsPerExpert,
                Some(ExpertLayout::Shared3d) => Pattern::ExpertsShared3d,
                Some(ExpertLayout::ModuleList) => Pattern::ExpertsModuleList,
                None if self.full.iter().any(|f| f.target == Target::Router) => {
                    Pattern::AttentionRouter
                }
                None if self.attention_rank().is_some() => Pattern::AttentionOnly,
                None => Pattern::OtherLora,
            },
        }
    }

    /// Whether the adapter is a DoRA (PEFT's `lora_magnitude_vector` next to its factors).
    pub fn is_dora(&self) -> bool {
        self.tensors
            .iter()
            .any(|t| t.name.role == layout::Role::DoraMagnitude)
    }

    /// Whether the adapter has fused gate_up deltas that `with_split_gate_up` would split.
    pub fn has_fused_gate_up(&self) -> bool {
        self.deltas.iter().any(layout::splits_gate_up)
    }

    /// The adapter as `load` with `LayoutOptions::split_gate_up` reads it, from the deltas
    /// already built (the split is the layout step's last one): no file is read again.
    pub fn with_split_gate_up(&self) -> Adapter {
        let mut a = self.clone();
        let order = layout::GateUpOrder::for_config(self.config.config());
        a.deltas = layout::split_gate_up(std::mem::take(&mut a.deltas), order);
        a
    }

    /// The tensor a factor or full tensor points at, with its file.
    pub fn tensor_file(&self, tensor: usize) -> (&TensorEntry, &FileInfo) {
        let t = &self.tensors[tensor];
        (t, &self.files[t.file])
    }
}

/// `unrecognised: N tensors` with each reason, its count and an example name.
fn unrecognised_note(a: &Adapter) -> Option<String> {
    let mut by_reason: BTreeMap<&str, (usize, &str)> = BTreeMap::new();
    for t in a.tensors.iter().filter(|t| t.name.role == Role::Unknown) {
        let reason = t.name.unknown.as_deref().unwrap_or("not understood");
        by_reason.entry(reason).or_insert((0, &t.info.name)).0 += 1;
    }
    let total: usize = by_reason.values().map(|v| v.0).sum();
    (total > 0).then(|| {
        let parts: Vec<String> = by_reason
            .iter()
            .map(|(r, (n, ex))| format!("{n} × {r} (e.g. {ex})"))
            .collect();
        format!(
            "unrecognised: {total} tensor{} not understood, not counted in any delta: {}",
            if total == 1 { "" } else { "s" },
            parts.join("; ")
        )
    })
}

/// The `base_model` of a model card's YAML front matter (huggingface_hub `ModelCardData`: a
/// repo id or a list of them; the first is taken). Only the first 64 kB are read.
fn card_base_model(path: &std::path::Path) -> Option<String> {
    use std::io::Read;
    let f = fsread::open_regular(path).ok()?;
    let mut text = String::new();
    f.take(64 << 10).read_to_string(&mut text).ok()?;
    let body = text.strip_prefix("---")?;
    let front = &body[..body.find("\n---")?];
    let unquote = |v: &str| {
        let v = v.trim().trim_matches(|c| c == '"' || c == '\'');
        (!v.is_empty()).then(|| v.to_string())
    };
    let mut lines = front.lines().skip_while(|l| !l.starts_with("base_model:"));
    let first = lines.next()?["base_model:".len()..].trim();
    if let Some(list) = first.strip_prefix('[') {
        return list.trim_end_matches(']').split(',').find_map(unquote);
    }
    if !first.is_empty() {
        return unquote(first);
    }
    lines
        .next()
        .and_then(|l| l.trim_start().strip_prefix('-'))
        .and_then(unquote)
}

/// How many adapters of a list name each model as their base (config or model card), so that
/// a full model of the list that others name is shown as a base model with that count.
#[derive(Debug, Default, Clone)]
pub struct BaseUses(BTreeMap<String, usize>);

/// Hub ids are case-insensitive; a path may end in `/`.
fn base_key(s: &str) -> String {
    s.trim().trim_end_matches('/').to_lowercase()
}

impl BaseUses {
    pub fn of<'a>(list: impl IntoIterator<Item = &'a Adapter>) -> BaseUses {
        let mut u = BaseUses::default();
        for a in list {
            u.add(a);
        }
        u
    }

    /// Counts the base `a` names.
    pub fn add(&mut self, a: &Adapter) {
        if let Some(b) = a.base_model() {
            *self.0.entry(base_key(&b)).or_default() += 1;
        }
    }

    /// How many of the counted adapters name `a` (by id or path) as their base: 0 unless `a` is
    /// full weights.
    pub fn count(&self, a: &Adapter) -> usize {
        if a.kind != Kind::FullWeights {
            return 0;
        }
        let own = a.base_model().map(|b| base_key(&b));
        let mut keys = vec![base_key(&a.id), base_key(&a.path.display().to_string())];
        keys.dedup();
        keys.iter()
            .filter(|k| own.as_ref() != Some(*k))
            .map(|k| self.0.get(k).copied().unwrap_or(0))
            .sum()
    }
}

/// Sets `base_of` of every adapter of the list from the others' base models.
pub fn mark_bases(list: &mut [Adapter]) {
    let uses = BaseUses::of(list.iter());
    for a in list.iter_mut() {
        a.base_of = uses.count(a);
    }
}

/// A message for people: the file and what is wrong with it.
pub fn describe(e: &Error) -> String {
    e.to_string()
}

/// Reads the value of a scalar tensor (kohya's `.alpha`) of one of the adapter's files.
pub type ScalarReader<'a> = dyn Fn(&FileInfo, &TensorInfo) -> crate::Result<f64> + Sync + 'a;

/// kohya's per-module `.alpha` scalars (tiny reads of a few bytes each).
fn kohya_alphas(a: &Adapter, read_scalar: &ScalarReader) -> Result<BTreeMap<String, f64>, String> {
    let mut out = BTreeMap::new();
    for t in a.tensors.iter().filter(|t| t.name.role == Role::Alpha) {
        // Reading a scalar from a tensor of another size would read a neighbour's bytes (shape
        // [0]) or an arbitrary first element: only a single value is an alpha.
        if t.info.numel() != 1 {
            return Err(format!(
                "{}: tensor '{}': alpha has shape {:?} ({} values), expected one scalar",
                a.files[t.file].path.display(),
                t.info.name,
                t.info.shape,
                t.info.numel()
            ));
        }
        let v = read_scalar(&a.files[t.file], &t.info).map_err(|e| describe(&e))?;
        out.insert(t.name.module.clone(), v);
    }
    Ok(out)
}

/// A GGUF file's one `adapter.lora.alpha` for every module, as the per-module alphas the layout
/// step scales with (alpha / r); none when it is 0 or absent (llama.cpp then applies s = 1).
fn gguf_alphas(a: &Adapter, m: &gguf_layout::Meta) -> BTreeMap<String, f64> {
    match m.alpha {
        Some(alpha) if alpha != 0.0 => a
            .tensors
            .iter()
            .filter(|t| matches!(t.name.role, Role::LoraA | Role::LoraB))
            .map(|t| (t.name.module.clone(), alpha))
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// Ids close to `id` (substring or small edit distance), for "did you mean".
pub fn closest<'a>(id: &str, known: impl Iterator<Item = &'a str>) -> Vec<String> {
    let lower = id.to_lowercase();
    let mut scored: Vec<(usize, &str)> = known
        .map(|k| {
            let kl = k.to_lowercase();
            let d = if kl.contains(&lower) || lower.contains(&kl) {
                0
            } else {
                edit_distance(&lower, &kl)
            };
            (d, k)
        })
        .filter(|(d, k)| *d <= (k.len().max(id.len()) / 2).max(3))
        .collect();
    scored.sort();
    scored
        .into_iter()
        .take(3)
        .map(|(_, k)| k.to_string())
        .collect()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The `scan --json` object of an adapter (a contract: fields may be added, never renamed).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub id: String,
    pub path: String,
    pub revision: Option<String>,
    pub kind: Kind,
    pub pattern: Pattern,
    pub error: Option<String>,
    pub files: usize,
    pub tensors: usize,
    pub bytes: u64,
    pub dtypes: Vec<String>,
    pub targets: Vec<String>,
    pub attention_rank: Option<usize>,
    pub expert_rank: Option<usize>,
    pub experts: Option<usize>,
    pub expert_layers: Vec<usize>,
    pub expert_layout: Option<ExpertLayout>,
    pub layers: usize,
    pub deltas: usize,
    pub base_model: Option<String>,
    pub notes: Vec<String>,
    /// The writer's conventions (`peft`, `unsloth`, `tinker`, `mlx`, `kohya`, `lycoris`), or null.
    pub format: Option<Format>,
    /// Tensors not understood (role `unknown` in `inspect`).
    pub unrecognised: usize,
    /// How many adapters of the list name it as their base (pattern `base model` when > 0).
    pub base_of: usize,
}

impl Adapter {
    pub fn summary(&self) -> Summary {
        self.summary_as(self.base_of)
    }

    /// The summary when `base_of` adapters of the list name it as their base.
    pub fn summary_as(&self, base_of: usize) -> Summary {
        let base_of = if self.kind == Kind::FullWeights {
            base_of
        } else {
            0
        };
        Summary {
            id: self.id.clone(),
            path: self.path.display().to_string(),
            revision: self.revision.clone(),
            kind: self.kind,
            pattern: self.pattern_as(base_of),
            error: self.error.clone(),
            files: self.files.len(),
            tensors: self.tensors.len(),
            bytes: self.bytes(),
            dtypes: self.dtypes(),
            targets: self.targets(),
            attention_rank: self.attention_rank(),
            expert_rank: self.expert_rank(),
            experts: self.experts(),
            expert_layers: self.expert_layers(),
            expert_layout: self.expert_layout(),
            layers: self.layer_indices().len(),
            deltas: self.deltas.len(),
            base_model: self.base_model(),
            notes: self.notes.clone(),
            format: self.format(),
            unrecognised: self.unrecognised(),
            base_of,
        }
    }
}
