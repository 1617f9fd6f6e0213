//! What the views show, derived from adapters and statistics when they change (never while
//! drawing): list rows, the tensor tree, the compare summary. The layer, expert and compare
//! grids are `view::grid`'s.

use crate::adapter::layout::{Delta, DeltaKey, ExpertLayout, Target};
use crate::adapter::{Adapter, Kind};
use crate::base::merged::{MergedDelta, MergedReport};
use crate::base::stats::{BaseDeltaStats, BaseReport, Fields};
use crate::compute::compare::{by_target, Comparison, TargetSummary};
use crate::compute::stats::AdapterStats;
use crate::health::{Health, Verdict};
use crate::view::grid::{compare_grid, Grid, Metric};
use crate::view::text;
use crate::view::text::{compact_targets, short_name};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// One row of the adapter list, formatted once.
#[derive(Debug, Clone)]
pub struct ListRow {
    pub id: String,
    pub kind: Kind,
    pub pattern: &'static str,
    pub targets: String,
    pub attn_rank: Option<usize>,
    pub expert_rank: Option<usize>,
    pub expert_layers: Vec<usize>,
    pub expert_layers_text: String,
    pub dtype: String,
    pub bytes: u64,
    pub size: String,
    pub tensors: usize,
    pub error: Option<String>,
    /// Tensors not understood: marked `?N` after the pattern.
    pub unrecognised: usize,
    /// Adapters of the list that name it as their base (a base model row says how many).
    pub base_of: usize,
    /// The detail line: path, base model, deltas, notes.
    pub detail: Vec<String>,
    /// The health check: not yet (None), failed (Some(None)) or its verdict.
    pub health: Option<Option<Verdict>>,
    /// Downloads over the last 30 days, for a row of the Hub source.
    pub downloads: Option<u64>,
    /// Only its headers are here (a Hub row not fetched yet): nothing is computed on it.
    pub remote: bool,
    /// Lower-case text the filter searches.
    haystack: String,
}

impl ListRow {
    pub fn new(a: &Adapter) -> ListRow {
        ListRow::new_as(a, a.base_of)
    }

    /// The row when `base_of` adapters of the list name `a` as their base.
    pub fn new_as(a: &Adapter, base_of: usize) -> ListRow {
        let s = a.summary_as(base_of);
        let all_layers = a.layer_indices();
        let expert_layers_text = if s.expert_layers.len() > 1 && s.expert_layers == all_layers {
            format!("all {}", s.expert_layers.len())
        } else {
            text::layers(&s.expert_layers)
        };
        let dtype = if s.dtypes.is_empty() {
            "-".into()
        } else {
            s.dtypes.join(",")
        };
        let mut detail = vec![a.path.display().to_string()];
        let mut facts = vec![format!("{} ({})", s.kind.as_str(), s.pattern.as_str())];
        if let Some(r) = &s.revision {
            facts.push(format!("rev {}", &r[..r.len().min(10)]));
        }
        if let Some(b) = &s.base_model {
            facts.push(format!("base {b}"));
        }
        if s.base_of > 0 {
            facts.push(format!(
                "the base of {} adapter{} in the list",
                s.base_of,
                if s.base_of == 1 { "" } else { "s" }
            ));
        }
        if s.deltas > 0 {
            facts.push(format!("{} deltas on {} layers", s.deltas, s.layers));
        }
        if let Some(e) = s.experts {
            facts.push(format!("{e} experts"));
        }
        detail.push(facts.join(" · "));
        detail.extend(s.notes.iter().cloned());
        let targets = if let Some(e) = &s.error {
            // The reason without the file's path, which the detail line shows in full.
            e.rsplit_once(".safetensors: ")
                .map_or(e.as_str(), |(_, r)| r)
                .to_string()
        } else {
            compact_targets(&s.targets)
        };
        let haystack = format!(
            "{} {} {} {}{}",
            s.id,
            s.pattern.as_str(),
            s.targets.join(" "),
            dtype,
            if s.unrecognised > 0 {
                " unrecognised"
            } else {
                ""
            }
        )
        .to_lowercase();
        ListRow {
            id: s.id,
            kind: s.kind,
            pattern: s.pattern.as_str(),
            base_of: s.base_of,
            targets,
            attn_rank: s.attention_rank,
            expert_rank: s.expert_rank,
            expert_layers: s.expert_layers,
            expert_layers_text,
            dtype,
            bytes: s.bytes,
            size: text::bytes(s.bytes),
            tensors: s.tensors,
            error: s.error,
            unrecognised: s.unrecognised,
            detail,
            health: None,
            downloads: None,
            remote: false,
            haystack,
        }
    }

    /// The row of an adapter of the Hub source: its downloads, and whether only its headers are
    /// here (the detail line then says how to get its data).
    pub fn hub(a: &Adapter, downloads: Option<u64>, remote: bool) -> ListRow {
        let mut r = ListRow::new(a);
        r.downloads = downloads;
        r.remote = remote;
        if remote && a.error.is_none() {
            r.detail.insert(
                2.min(r.detail.len()),
                "on the Hub, headers only: F in its views fetches it for statistics and health"
                    .into(),
            );
        }
        r
    }

    /// Records the health check's outcome; its worst finding joins the detail lines.
    pub fn set_health(&mut self, h: Option<&Health>) {
        self.health = Some(h.map(|h| h.verdict));
        let Some(h) = h else {
            return;
        };
        let worst = h.all().max_by_key(|f| f.severity);
        let line = match worst {
            Some(f) if h.verdict != Verdict::Ok => format!(
                "health {} {}: {} ({} findings: `lorascope check` lists them)",
                h.verdict.mark(),
                f.code,
                f.message,
                h.all().count()
            ),
            _ => format!("health {} ok", h.verdict.mark()),
        };
        self.detail.insert(2.min(self.detail.len()), line);
    }

    /// Every word of the filter must occur (case-insensitive).
    pub fn matches(&self, filter: &str) -> bool {
        filter
            .split_whitespace()
            .all(|w| self.haystack.contains(&w.to_lowercase()))
    }

    /// The natural width of a column for this row (an error message is cut, not widened for).
    pub fn width(&self, c: ListColumn) -> usize {
        match (c, &self.error) {
            (ListColumn::Targets, Some(_)) => 8,
            _ => self.cell(c).chars().count(),
        }
    }

    pub fn cell(&self, c: ListColumn) -> String {
        match c {
            ListColumn::Id => self.id.clone(),
            // `attn` keeps the column narrow; the detail line spells the pattern out.
            ListColumn::Pattern => {
                let p = if self.base_of > 0 {
                    text::pattern_cell(crate::adapter::Pattern::BaseModel, self.base_of)
                } else {
                    self.pattern.replace("attention", "attn")
                };
                match self.unrecognised {
                    0 => p,
                    n => format!("{p} ?{n}"),
                }
            }
            ListColumn::Targets => self.targets.clone(),
            ListColumn::AttnRank => text::opt(self.attn_rank),
            ListColumn::ExpertRank => text::opt(self.expert_rank),
            ListColumn::ExpertLayers => self.expert_layers_text.clone(),
            ListColumn::Dtype => self.dtype.clone(),
            ListColumn::Size => self.size.clone(),
            ListColumn::Tensors => self.tensors.to_string(),
            ListColumn::Downloads => text::opt(self.downloads),
            // A Hub row is checked once its data is here.
            ListColumn::Health if self.remote => "-".into(),
            ListColumn::Health => match self.health {
                Some(Some(v)) => v.mark().into(),
                Some(None) => "?".into(),
                None => "…".into(),
            },
        }
    }
}

/// A column of the adapter list (each one sorts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListColumn {
    Id,
    Pattern,
    Targets,
    AttnRank,
    ExpertRank,
    ExpertLayers,
    Dtype,
    Size,
    Tensors,
    Health,
    /// The Hub source's extra column.
    Downloads,
}

impl ListColumn {
    /// The columns of the local list.
    pub const ALL: [ListColumn; 10] = [
        ListColumn::Id,
        ListColumn::Pattern,
        ListColumn::Targets,
        ListColumn::AttnRank,
        ListColumn::ExpertRank,
        ListColumn::ExpertLayers,
        ListColumn::Dtype,
        ListColumn::Size,
        ListColumn::Tensors,
        ListColumn::Health,
    ];

    /// The columns of the Hub list: the local ones and downloads.
    pub const HUB: [ListColumn; 11] = {
        let mut c = [ListColumn::Downloads; 11];
        let mut i = 0;
        while i < ListColumn::ALL.len() {
            c[i] = ListColumn::ALL[i];
            i += 1;
        }
        c
    };

    pub fn title(self) -> &'static str {
        match self {
            ListColumn::Id => "ID",
            ListColumn::Pattern => "PATTERN",
            ListColumn::Targets => "TARGETS",
            ListColumn::AttnRank => "ATTN R",
            ListColumn::ExpertRank => "EXP R",
            ListColumn::ExpertLayers => "EXPERT LAYERS",
            ListColumn::Dtype => "DTYPE",
            ListColumn::Size => "SIZE",
            ListColumn::Tensors => "TENSORS",
            ListColumn::Health => "HEALTH",
            ListColumn::Downloads => "DOWNLOADS",
        }
    }

    pub fn right(self) -> bool {
        matches!(
            self,
            ListColumn::AttnRank
                | ListColumn::ExpertRank
                | ListColumn::Size
                | ListColumn::Tensors
                | ListColumn::Downloads
        )
    }

    pub fn cmp(self, a: &ListRow, b: &ListRow) -> Ordering {
        let o = match self {
            ListColumn::Id => a.id.cmp(&b.id),
            ListColumn::Pattern => a.pattern.cmp(b.pattern),
            ListColumn::Targets => a.targets.cmp(&b.targets),
            ListColumn::AttnRank => a.attn_rank.cmp(&b.attn_rank),
            ListColumn::ExpertRank => a.expert_rank.cmp(&b.expert_rank),
            ListColumn::ExpertLayers => (a.expert_layers.len(), &a.expert_layers)
                .cmp(&(b.expert_layers.len(), &b.expert_layers)),
            ListColumn::Dtype => a.dtype.cmp(&b.dtype),
            ListColumn::Size => a.bytes.cmp(&b.bytes),
            ListColumn::Tensors => a.tensors.cmp(&b.tensors),
            ListColumn::Health => a.health.cmp(&b.health),
            ListColumn::Downloads => a.downloads.cmp(&b.downloads),
        };
        o.then_with(|| a.id.cmp(&b.id))
    }
}

/// What a tree node stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    Layer,
    Module,
    Tensor,
    Experts,
    Expert,
    Info,
}

/// A node of the tensor tree, in pre-order with its depth.
#[derive(Debug, Clone)]
pub struct TreeNode {
    pub depth: usize,
    pub kind: NodeKind,
    pub label: String,
    pub info: String,
    pub parent: Option<usize>,
    pub children: usize,
    /// The delta this node is (a module with one delta, or an expert), for its statistics.
    pub delta: Option<usize>,
}

fn layer_label(l: Option<usize>) -> String {
    l.map_or("-".into(), |l| l.to_string())
}

/// `r 4 × 32 experts · s 2` for a module's deltas.
fn deltas_info(ds: &[&Delta]) -> String {
    let Some(d) = ds.first() else {
        return String::new();
    };
    let scale = text::num(d.scale);
    match (ds.len(), d.expert_layout) {
        (1, Some(ExpertLayout::Shared3d)) if d.expert.is_none() => {
            format!(
                "{} · r {} shared by all experts · s {scale}",
                d.target, d.rank
            )
        }
        (1, _) => format!(
            "{} · r {} · s {scale} · {}×{}",
            d.target, d.rank, d.out_dim, d.in_dim
        ),
        (n, _) => format!(
            "{} · r {} × {n} experts · s {scale} · {}×{} each",
            d.target, d.rank, d.out_dim, d.in_dim
        ),
    }
}

/// A layer's modules, in table order, with their tensors.
type Modules = BTreeMap<(usize, String), Vec<usize>>;

/// Layers → modules → tensors, with the experts of expert modules under their module.
pub fn build_tree(a: &Adapter) -> Vec<TreeNode> {
    let mut nodes: Vec<TreeNode> = Vec::new();
    let push = |nodes: &mut Vec<TreeNode>, n: TreeNode| {
        if let Some(p) = n.parent {
            nodes[p].children += 1;
        }
        nodes.push(n);
        nodes.len() - 1
    };
    if let Some(e) = &a.error {
        push(&mut nodes, info_node(format!("error: {e}")));
    }
    for n in &a.notes {
        push(&mut nodes, info_node(format!("note: {n}")));
    }
    if a.tensors.is_empty() && a.error.is_none() {
        push(&mut nodes, info_node("no tensors".into()));
    }
    // (no-layer last, layer) → module → tensor indices.
    let mut by_layer: BTreeMap<(bool, Option<usize>), Modules> = BTreeMap::new();
    for (i, t) in a.tensors.iter().enumerate() {
        by_layer
            .entry((t.name.layer.is_none(), t.name.layer))
            .or_default()
            .entry((t.name.target.order(), t.name.module.clone()))
            .or_default()
            .push(i);
    }
    let mut deltas_of: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, d) in a.deltas.iter().enumerate() {
        deltas_of.entry(d.module.as_str()).or_default().push(i);
    }
    for ((_, layer), modules) in by_layer {
        let n_tensors: usize = modules.values().map(Vec::len).sum();
        let bytes: u64 = modules
            .values()
            .flatten()
            .map(|&i| a.tensors[i].info.nbytes())
            .sum();
        let lnode = push(
            &mut nodes,
            TreeNode {
                depth: 0,
                kind: NodeKind::Layer,
                label: layer.map_or("no layer".into(), |l| format!("layer {l}")),
                info: format!(
                    "{} modules · {n_tensors} tensors · {}",
                    modules.len(),
                    text::bytes(bytes)
                ),
                parent: None,
                children: 0,
                delta: None,
            },
        );
        for ((_, module), tensors) in modules {
            let ds: Vec<usize> = deltas_of.get(module.as_str()).cloned().unwrap_or_default();
            let drefs: Vec<&Delta> = ds.iter().map(|&i| &a.deltas[i]).collect();
            let first = &a.tensors[tensors[0]];
            let info = if drefs.is_empty() {
                // A module without a delta says why: its role, and for one not understood (an
                // incomplete pair, a name of no layout) the reason.
                let role = first.name.role.as_str();
                match &first.name.unknown {
                    Some(why) => format!("{} · {role}: {why}", first.name.target),
                    None => format!("{} · {role}", first.name.target),
                }
            } else {
                deltas_info(&drefs)
            };
            let mnode = push(
                &mut nodes,
                TreeNode {
                    depth: 1,
                    kind: NodeKind::Module,
                    label: short_name(&module).to_string(),
                    info,
                    parent: Some(lnode),
                    children: 0,
                    delta: (ds.len() == 1).then(|| ds[0]),
                },
            );
            for &ti in &tensors {
                let t = &a.tensors[ti];
                let label = t
                    .info
                    .name
                    .split_once(&format!("{module}."))
                    .map_or_else(|| short_name(&t.info.name).to_string(), |(_, s)| s.into());
                push(
                    &mut nodes,
                    TreeNode {
                        depth: 2,
                        kind: NodeKind::Tensor,
                        label,
                        info: format!(
                            "{:?}  {}  {}  {}",
                            t.info.shape,
                            t.info.dtype_name(),
                            text::bytes(t.info.nbytes()),
                            t.name.role.as_str()
                        ),
                        parent: Some(mnode),
                        children: 0,
                        delta: None,
                    },
                );
            }
            if ds.len() > 1 {
                let enode = push(
                    &mut nodes,
                    TreeNode {
                        depth: 2,
                        kind: NodeKind::Experts,
                        label: format!("experts ({})", ds.len()),
                        info: format!("one rank-{} LoRA per expert", drefs[0].rank),
                        parent: Some(mnode),
                        children: 0,
                        delta: None,
                    },
                );
                for &di in &ds {
                    let d = &a.deltas[di];
                    push(
                        &mut nodes,
                        TreeNode {
                            depth: 3,
                            kind: NodeKind::Expert,
                            label: format!("expert {}", layer_label(d.expert)),
                            info: format!("r {} · s {}", d.rank, text::num(d.scale)),
                            parent: Some(enode),
                            children: 0,
                            delta: Some(di),
                        },
                    );
                }
            }
        }
    }
    nodes
}

fn info_node(label: String) -> TreeNode {
    TreeNode {
        depth: 0,
        kind: NodeKind::Info,
        label,
        info: String::new(),
        parent: None,
        children: 0,
        delta: None,
    }
}

/// Which nodes show, given which are expanded (a collapsed node hides its subtree).
pub fn visible_nodes(nodes: &[TreeNode], expanded: &[bool]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut hide_below: Option<usize> = None;
    for (i, n) in nodes.iter().enumerate() {
        if let Some(d) = hide_below {
            if n.depth > d {
                continue;
            }
            hide_below = None;
        }
        out.push(i);
        if n.children > 0 && !expanded.get(i).copied().unwrap_or(false) {
            hide_below = Some(n.depth);
        }
    }
    out
}

/// Per-layer ‖ΔW‖ of both adapters: √Σ‖ΔW_i‖²_F over the layer's deltas.
#[derive(Debug, Clone)]
pub struct LayerNorms {
    pub layer: String,
    pub a: Option<f64>,
    pub b: Option<f64>,
}

/// Everything the compare view shows.
#[derive(Debug, Clone)]
pub struct CompareModel {
    pub a: String,
    pub b: String,
    pub matched: usize,
    pub not_comparable: usize,
    pub only_a: String,
    pub only_b: String,
    pub layers: Vec<LayerNorms>,
    pub grid: Grid,
    pub targets: Vec<TargetSummary>,
}

/// `k_proj (layers 0-23), gate_up_proj ×32 experts (layers 0,7)`.
fn describe_keys(keys: &[DeltaKey]) -> String {
    if keys.is_empty() {
        return "nothing".into();
    }
    let mut by: BTreeMap<&Target, (BTreeSet<usize>, BTreeSet<usize>)> = BTreeMap::new();
    for k in keys {
        let e = by.entry(&k.target).or_default();
        if let Some(l) = k.layer {
            e.0.insert(l);
        }
        if let Some(x) = k.expert {
            e.1.insert(x);
        }
    }
    let parts: Vec<String> = by
        .into_iter()
        .map(|(t, (ls, es))| {
            let ls: Vec<usize> = ls.into_iter().collect();
            let experts = if es.is_empty() {
                String::new()
            } else {
                format!(" ×{} experts", es.len())
            };
            format!("{t}{experts} (layers {})", text::layers(&ls))
        })
        .collect();
    format!("{} deltas: {}", keys.len(), parts.join(", "))
}

fn layer_norms(st: &AdapterStats) -> BTreeMap<(bool, Option<usize>), f64> {
    let mut m: BTreeMap<(bool, Option<usize>), f64> = BTreeMap::new();
    for d in &st.deltas {
        *m.entry((d.layer.is_none(), d.layer)).or_default() += d.fro_norm * d.fro_norm;
    }
    m.values_mut().for_each(|v| *v = v.sqrt());
    m
}

/// Builds the compare view's data from a comparison and (when known) both adapters' statistics.
pub fn compare_model(
    c: &Comparison,
    st_a: Option<&AdapterStats>,
    st_b: Option<&AdapterStats>,
) -> CompareModel {
    let (na, nb) = (
        st_a.map(layer_norms).unwrap_or_default(),
        st_b.map(layer_norms).unwrap_or_default(),
    );
    let keys: BTreeSet<(bool, Option<usize>)> = na.keys().chain(nb.keys()).copied().collect();
    let layers = keys
        .into_iter()
        .map(|k| LayerNorms {
            layer: layer_label(k.1),
            a: na.get(&k).copied(),
            b: nb.get(&k).copied(),
        })
        .collect();
    CompareModel {
        a: c.a.clone(),
        b: c.b.clone(),
        matched: c.pairs.len(),
        not_comparable: c.pairs.iter().filter(|p| !p.comparable).count(),
        only_a: describe_keys(&c.only_a),
        only_b: describe_keys(&c.only_b),
        layers,
        grid: compare_grid(c),
        targets: by_target(c),
    }
}

/// A column of the stats table (each one sorts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatsColumn {
    Layer,
    Target,
    Expert,
    Rank,
    Scale,
    Fro,
    Spectral,
    ERank,
    SRank,
    /// Against the base model (docs/base.md): shown once its statistics exist.
    Relative,
    Amplification,
    Alignment,
    /// A DoRA adapter's exact update (`BaseDeltaStats::dora`), next to the factored ‖ΔW‖_F
    /// and relative change.
    DoraFro,
    DoraRelative,
}

impl StatsColumn {
    /// The adapter's own columns, always shown.
    pub const ALL: [StatsColumn; 9] = [
        StatsColumn::Layer,
        StatsColumn::Target,
        StatsColumn::Expert,
        StatsColumn::Rank,
        StatsColumn::Scale,
        StatsColumn::Fro,
        StatsColumn::Spectral,
        StatsColumn::ERank,
        StatsColumn::SRank,
    ];

    /// The columns against the base model.
    pub const BASE: [StatsColumn; 3] = [
        StatsColumn::Relative,
        StatsColumn::Amplification,
        StatsColumn::Alignment,
    ];

    /// The columns shown: the adapter's own, then the base ones when the base is there.
    pub fn shown(base: bool) -> Vec<StatsColumn> {
        StatsColumn::shown_with(base, false)
    }

    /// `shown`, with a DoRA adapter's exact-update columns (`dora`, with the base) each after
    /// its factored twin.
    pub fn shown_with(base: bool, dora: bool) -> Vec<StatsColumn> {
        let mut cols = StatsColumn::ALL.to_vec();
        if base {
            cols.extend(StatsColumn::BASE);
            if dora {
                for (after, c) in [
                    (StatsColumn::Fro, StatsColumn::DoraFro),
                    (StatsColumn::Relative, StatsColumn::DoraRelative),
                ] {
                    let i = cols.iter().position(|&x| x == after).unwrap_or(0);
                    cols.insert(i + 1, c);
                }
            }
        }
        cols
    }

    /// The columns of a merged model minus its base: the adapter's own and the relative change.
    pub fn merged() -> Vec<StatsColumn> {
        let mut cols = StatsColumn::ALL.to_vec();
        cols.push(StatsColumn::Relative);
        cols
    }

    /// The base metric of a base column.
    fn metric(self) -> Option<Metric> {
        match self {
            StatsColumn::Relative => Some(Metric::Relative),
            StatsColumn::Amplification => Some(Metric::Amplification),
            StatsColumn::Alignment => Some(Metric::Alignment),
            _ => None,
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            StatsColumn::Layer => "LAYER",
            StatsColumn::Target => "TARGET",
            StatsColumn::Expert => "EXPERT",
            StatsColumn::Rank => "RANK",
            StatsColumn::Scale => "SCALE",
            StatsColumn::Fro => "‖ΔW‖_F",
            StatsColumn::Spectral => "‖ΔW‖₂",
            StatsColumn::ERank => "ERANK",
            StatsColumn::SRank => "SRANK",
            StatsColumn::Relative => "RELATIVE",
            StatsColumn::Amplification => "AMPLIF.",
            StatsColumn::Alignment => "ALIGN",
            StatsColumn::DoraFro => "DORA ‖ΔW‖_F",
            StatsColumn::DoraRelative => "DORA REL.",
        }
    }

    pub fn right(self) -> bool {
        !matches!(self, StatsColumn::Target)
    }
}

/// A row of the stats table: a weight of a merged model minus its base, a delta, or a full
/// tensor (router) after the deltas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatsRow {
    Merged(usize),
    Delta(usize),
    Full(usize),
}

pub fn stats_rows(st: &AdapterStats) -> Vec<StatsRow> {
    StatsData::new(st, None).rows()
}

/// What the Stats table shows: the adapter's statistics, its base statistics (some fields
/// possibly still pending) and, for a merged model, its weights minus its base's.
#[derive(Debug, Clone, Copy)]
pub struct StatsData<'a> {
    pub st: &'a AdapterStats,
    pub base: Option<&'a BaseReport>,
    pub merged: Option<&'a MergedReport>,
}

/// The cell of a value still being computed (streamed base statistics).
pub const PENDING: &str = "…";

/// A base column's value of one delta: still to come, or there (None: no base, or the base
/// lacks the weight).
enum BaseCell {
    Pending,
    Value(Option<f64>),
}

impl<'a> StatsData<'a> {
    pub fn new(st: &'a AdapterStats, base: Option<&'a BaseReport>) -> StatsData<'a> {
        StatsData {
            st,
            base,
            merged: None,
        }
    }

    /// A merged model's weights minus its base's (its own full tensors would mix norms of W
    /// with norms of differences in one column), else the deltas, then the full tensors.
    pub fn rows(&self) -> Vec<StatsRow> {
        if let Some(m) = self.merged {
            return (0..m.weights.len()).map(StatsRow::Merged).collect();
        }
        (0..self.st.deltas.len())
            .map(StatsRow::Delta)
            .chain((0..self.st.full_tensors.len()).map(StatsRow::Full))
            .collect()
    }

    /// A delta's base statistics, as `index` counts the adapter's deltas.
    fn base_of(&self, i: usize) -> Option<&'a BaseDeltaStats> {
        self.base?.deltas.get(self.st.deltas[i].index)
    }

    fn base_cell(&self, row: StatsRow, c: StatsColumn) -> BaseCell {
        let StatsRow::Delta(i) = row else {
            return BaseCell::Value(None);
        };
        let Some(b) = self.base_of(i) else {
            return BaseCell::Value(None);
        };
        // The exact DoRA update is computed with amplification, after the cheap first pass.
        let (pending, v) = match c {
            StatsColumn::DoraFro => (
                b.pending(Fields::Amplification),
                b.dora.as_ref().map(|d| d.fro_norm),
            ),
            StatsColumn::DoraRelative => (
                b.pending(Fields::Amplification),
                b.dora.as_ref().and_then(|d| d.relative_change),
            ),
            _ => match c.metric() {
                Some(m) => (m.pending_in(b), m.of_base(b)),
                None => (false, None),
            },
        };
        if pending {
            BaseCell::Pending
        } else {
            BaseCell::Value(v)
        }
    }

    /// The cell text of a row.
    pub fn cell(&self, row: StatsRow, c: StatsColumn) -> String {
        if let StatsRow::Merged(i) = row {
            return self
                .merged
                .map_or("-".into(), |m| merged_cell(&m.weights[i], c));
        }
        if let StatsRow::Delta(_) = row {
            if c.is_base() {
                return match self.base_cell(row, c) {
                    BaseCell::Pending => PENDING.into(),
                    BaseCell::Value(v) => text::opt(v.map(text::num)),
                };
            }
        }
        stats_cell_own(self.st, row, c)
    }

    fn key(&self, row: StatsRow, c: StatsColumn) -> (Option<f64>, String) {
        if let StatsRow::Merged(i) = row {
            return self
                .merged
                .map_or((None, String::new()), |m| merged_key(&m.weights[i], c));
        }
        if let (StatsRow::Delta(_), true) = (row, c.is_base()) {
            return match self.base_cell(row, c) {
                BaseCell::Pending => (None, String::new()),
                BaseCell::Value(v) => (v, String::new()),
            };
        }
        stats_key_own(self.st, row, c)
    }

    /// Rows in the order of `col` (ascending or not); ties keep the table's natural order.
    pub fn sorted(&self, col: StatsColumn, asc: bool) -> Vec<StatsRow> {
        let mut rows = self.rows();
        rows.sort_by(|&x, &y| {
            let (kx, ky) = (self.key(x, col), self.key(y, col));
            let o =
                kx.0.partial_cmp(&ky.0)
                    .unwrap_or(Ordering::Equal)
                    .then_with(|| kx.1.cmp(&ky.1));
            if asc {
                o
            } else {
                o.reverse()
            }
        });
        rows
    }
}

impl StatsColumn {
    /// Whether the column is set against the base model.
    fn is_base(self) -> bool {
        self.metric().is_some() || matches!(self, StatsColumn::DoraFro | StatsColumn::DoraRelative)
    }
}

/// A merged weight minus its base's, in a column (`~`: ranks from the top of the spectrum).
fn merged_cell(w: &MergedDelta, c: StatsColumn) -> String {
    let mark = if w.approximate { "~" } else { "" };
    match c {
        StatsColumn::Layer => w.layer.to_string(),
        StatsColumn::Target => w.target.to_string(),
        StatsColumn::Expert => text::opt(w.expert),
        StatsColumn::Rank => "full".into(),
        StatsColumn::Fro => text::num(w.fro_norm),
        StatsColumn::Spectral => text::num(w.spectral_norm),
        StatsColumn::ERank => format!("{mark}{:.2}", w.effective_rank),
        StatsColumn::SRank => format!("{:.2}", w.stable_rank),
        StatsColumn::Relative => text::opt(w.relative_change.map(text::num)),
        _ => "-".into(),
    }
}

fn merged_key(w: &MergedDelta, c: StatsColumn) -> (Option<f64>, String) {
    let num = |v: f64| (Some(v), String::new());
    match c {
        StatsColumn::Layer => num(w.layer as f64),
        StatsColumn::Target => (Some(w.target.order() as f64), w.target.to_string()),
        StatsColumn::Expert => (w.expert.map(|x| x as f64), String::new()),
        StatsColumn::Fro => num(w.fro_norm),
        StatsColumn::Spectral => num(w.spectral_norm),
        StatsColumn::ERank => num(w.effective_rank),
        StatsColumn::SRank => num(w.stable_rank),
        StatsColumn::Relative => (w.relative_change, String::new()),
        _ => (None, String::new()),
    }
}

/// The cell text of a stats row; `base` fills the base columns.
pub fn stats_cell(
    st: &AdapterStats,
    base: Option<&BaseReport>,
    row: StatsRow,
    c: StatsColumn,
) -> String {
    StatsData::new(st, base).cell(row, c)
}

/// The cell text of a delta or full-tensor row in the adapter's own columns.
fn stats_cell_own(st: &AdapterStats, row: StatsRow, c: StatsColumn) -> String {
    match row {
        StatsRow::Merged(_) => "-".into(),
        StatsRow::Delta(i) => {
            let d = &st.deltas[i];
            match c {
                StatsColumn::Layer => text::opt(d.layer),
                StatsColumn::Target => d.target.to_string(),
                StatsColumn::Expert => text::opt(d.expert),
                StatsColumn::Rank => d.rank.to_string(),
                StatsColumn::Scale => text::num(d.scale),
                StatsColumn::Fro => text::num(d.fro_norm),
                StatsColumn::Spectral => text::num(d.spectral_norm),
                // NaN would print as a number-like "NaN": Fro and Spectral say non-finite.
                StatsColumn::ERank if !d.finite => "-".into(),
                StatsColumn::SRank if !d.finite => "-".into(),
                StatsColumn::ERank => format!("{:.2}", d.effective_rank),
                StatsColumn::SRank => format!("{:.2}", d.stable_rank),
                // The base columns are `StatsData::cell`'s.
                _ => "-".into(),
            }
        }
        StatsRow::Full(i) => {
            let f = &st.full_tensors[i];
            match c {
                StatsColumn::Layer => text::opt(f.layer),
                StatsColumn::Target => format!("{} (full)", f.target),
                StatsColumn::Rank => "full".into(),
                StatsColumn::Fro => text::num(f.fro_norm),
                StatsColumn::Spectral => text::opt(f.spectral_norm.map(text::num)),
                _ => "-".into(),
            }
        }
    }
}

fn stats_key_own(st: &AdapterStats, row: StatsRow, c: StatsColumn) -> (Option<f64>, String) {
    let num = |v: f64| (Some(v), String::new());
    match row {
        StatsRow::Merged(_) => (None, String::new()),
        StatsRow::Delta(i) => {
            let d = &st.deltas[i];
            match c {
                StatsColumn::Layer => (d.layer.map(|x| x as f64), String::new()),
                StatsColumn::Target => (Some(d.target.order() as f64), d.target.to_string()),
                StatsColumn::Expert => (d.expert.map(|x| x as f64), String::new()),
                StatsColumn::Rank => num(d.rank as f64),
                StatsColumn::Scale => num(d.scale),
                StatsColumn::Fro => num(d.fro_norm),
                StatsColumn::Spectral => num(d.spectral_norm),
                StatsColumn::ERank => num(d.effective_rank),
                StatsColumn::SRank => num(d.stable_rank),
                _ => (None, String::new()),
            }
        }
        StatsRow::Full(i) => {
            let f = &st.full_tensors[i];
            match c {
                StatsColumn::Layer => (f.layer.map(|x| x as f64), String::new()),
                StatsColumn::Target => (Some(f.target.order() as f64), f.target.to_string()),
                StatsColumn::Fro => num(f.fro_norm),
                StatsColumn::Spectral => (f.spectral_norm, String::new()),
                _ => (None, String::new()),
            }
        }
    }
}

/// Rows in the order of `col` (ascending or not); ties keep the table's natural order.
pub fn sort_stats_rows(
    st: &AdapterStats,
    base: Option<&BaseReport>,
    col: StatsColumn,
    asc: bool,
) -> Vec<StatsRow> {
    StatsData::new(st, base).sorted(col, asc)
}
