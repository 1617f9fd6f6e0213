//! What the views show, derived from adapters and statistics when they change (never while
//! drawing): list rows, the tensor tree, the layer and expert grids, the compare summary.

use crate::adapter::{Adapter, Kind};
use crate::compare::{by_target, Comparison, TargetSummary};
use crate::format::dtype_name;
use crate::layout::{is_expert_target, target_order, Delta, DeltaKey, ExpertLayout};
use crate::stats::AdapterStats;
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
    /// The detail line: path, base model, deltas, notes.
    pub detail: Vec<String>,
    /// Lower-case text the filter searches.
    haystack: String,
}

impl ListRow {
    pub fn new(a: &Adapter) -> ListRow {
        let s = a.summary();
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
            haystack,
        }
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
            ListColumn::Pattern => match self.unrecognised {
                0 => self.pattern.replace("attention", "attn"),
                n => format!("{} ?{n}", self.pattern.replace("attention", "attn")),
            },
            ListColumn::Targets => self.targets.clone(),
            ListColumn::AttnRank => text::opt(self.attn_rank),
            ListColumn::ExpertRank => text::opt(self.expert_rank),
            ListColumn::ExpertLayers => self.expert_layers_text.clone(),
            ListColumn::Dtype => self.dtype.clone(),
            ListColumn::Size => self.size.clone(),
            ListColumn::Tensors => self.tensors.to_string(),
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
}

impl ListColumn {
    pub const ALL: [ListColumn; 9] = [
        ListColumn::Id,
        ListColumn::Pattern,
        ListColumn::Targets,
        ListColumn::AttnRank,
        ListColumn::ExpertRank,
        ListColumn::ExpertLayers,
        ListColumn::Dtype,
        ListColumn::Size,
        ListColumn::Tensors,
    ];

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
        }
    }

    pub fn right(self) -> bool {
        matches!(
            self,
            ListColumn::AttnRank | ListColumn::ExpertRank | ListColumn::Size | ListColumn::Tensors
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
            .entry((target_order(&t.name.target), t.name.module.clone()))
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
                format!("{} · {}", first.name.target, first.name.role.as_str())
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
                            dtype_name(t.info.dtype),
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

/// A colourable quantity of a delta.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    Fro,
    Spectral,
    ERank,
    SRank,
}

impl Metric {
    pub const ALL: [Metric; 4] = [Metric::Fro, Metric::Spectral, Metric::ERank, Metric::SRank];

    pub fn label(self) -> &'static str {
        match self {
            Metric::Fro => "‖ΔW‖_F",
            Metric::Spectral => "‖ΔW‖₂",
            Metric::ERank => "effective rank",
            Metric::SRank => "stable rank",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn next(self) -> Metric {
        Metric::ALL[(self.index() + 1) % Metric::ALL.len()]
    }

    fn of(self, d: &crate::stats::DeltaStats) -> f64 {
        match self {
            Metric::Fro => d.fro_norm,
            Metric::Spectral => d.spectral_norm,
            Metric::ERank => d.effective_rank,
            Metric::SRank => d.stable_rank,
        }
    }
}

/// Four numbers per cell: the layer map and expert map hold the `Metric`s, compare holds
/// `CompareMetric`s.
pub type Values = [Option<f64>; 4];

/// The largest value per metric and the expert it belongs to.
pub type Maxima = [Option<(f64, Option<usize>)>; 4];

/// One cell of a grid: some LoRA (or a full tensor) sits here.
#[derive(Debug, Clone, Default)]
pub struct GridCell {
    /// Short text for wide cells (`8`, `4×32`, `full`).
    pub text: String,
    /// Mean over the cell's deltas (experts), per metric.
    pub values: Values,
    /// Largest over the cell's deltas, with the expert it belongs to.
    pub max: Maxima,
    /// What a person reads when the cursor is here.
    pub detail: String,
}

/// A layers × columns grid for the heatmap widget.
#[derive(Debug, Clone, Default)]
pub struct Grid {
    pub title: String,
    pub rows: Vec<String>,
    pub row_layers: Vec<Option<usize>>,
    pub cols: Vec<String>,
    /// Columns that stand out (expert targets).
    pub emphasis: Vec<bool>,
    pub cells: Vec<Option<GridCell>>,
}

impl Grid {
    pub fn cell(&self, r: usize, c: usize) -> Option<&GridCell> {
        if c >= self.cols.len() {
            return None;
        }
        self.cells.get(r * self.cols.len() + c)?.as_ref()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty() || self.cols.is_empty()
    }

    /// Whether a cell holds a non-finite value of one of the given metrics.
    pub fn has_nonfinite(&self, metrics: &[usize]) -> bool {
        self.cells.iter().flatten().any(|c| {
            metrics
                .iter()
                .any(|&m| c.values[m].is_some_and(|v| !v.is_finite()))
        })
    }

    /// Smallest and largest value of the given metrics over all cells.
    pub fn range(&self, metrics: &[usize]) -> Option<(f64, f64)> {
        let mut r: Option<(f64, f64)> = None;
        for c in self.cells.iter().flatten() {
            for &m in metrics {
                if let Some(v) = c.values[m].filter(|v| v.is_finite()) {
                    r = Some(r.map_or((v, v), |(lo, hi)| (lo.min(v), hi.max(v))));
                }
            }
        }
        r
    }
}

/// Where each delta's statistics are (stats are in delta order when unfiltered; keys otherwise).
pub fn stats_index(a: &Adapter, st: &AdapterStats) -> Vec<Option<usize>> {
    let aligned = st.deltas.len() == a.deltas.len()
        && st
            .deltas
            .iter()
            .zip(&a.deltas)
            .all(|(s, d)| (s.layer, &s.target, s.expert) == (d.layer, &d.target, d.expert));
    if aligned {
        return (0..a.deltas.len()).map(Some).collect();
    }
    let by_key: HashMap<DeltaKey, usize> = st
        .deltas
        .iter()
        .enumerate()
        .map(|(i, s)| (s.key(), i))
        .collect();
    a.deltas
        .iter()
        .map(|d| by_key.get(&d.key()).copied())
        .collect()
}

fn sorted_targets<'a>(it: impl Iterator<Item = &'a str>) -> Vec<String> {
    let set: BTreeSet<(usize, &str)> = it.map(|t| (target_order(t), t)).collect();
    set.into_iter().map(|(_, t)| t.to_string()).collect()
}

fn sorted_layers(it: impl Iterator<Item = Option<usize>>) -> Vec<Option<usize>> {
    let set: BTreeSet<(bool, Option<usize>)> = it.map(|l| (l.is_none(), l)).collect();
    set.into_iter().map(|(_, l)| l).collect()
}

/// Mean and max over the deltas `idx`, per metric.
fn aggregate(
    a: &Adapter,
    st: Option<(&AdapterStats, &[Option<usize>])>,
    idx: &[usize],
) -> (Values, Maxima) {
    let mut values = [None; 4];
    let mut max = [None; 4];
    let Some((st, map)) = st else {
        return (values, max);
    };
    for m in Metric::ALL {
        let mut sum = 0.0;
        let mut n = 0usize;
        let mut best: Option<(f64, Option<usize>)> = None;
        let mut nonfinite = None;
        for &i in idx {
            if let Some(s) = map.get(i).copied().flatten().map(|j| &st.deltas[j]) {
                let v = m.of(s);
                if !s.finite || !v.is_finite() {
                    nonfinite.get_or_insert(a.deltas[i].expert);
                }
                sum += v;
                n += 1;
                if best.is_none_or(|(b, _)| v > b) {
                    best = Some((v, a.deltas[i].expert));
                }
            }
        }
        if let Some(e) = nonfinite {
            // One non-finite delta makes the cell non-finite (a max would skip its NaN).
            values[m.index()] = Some(f64::NAN);
            max[m.index()] = Some((f64::NAN, e));
        } else if n > 0 {
            values[m.index()] = Some(sum / n as f64);
            max[m.index()] = best;
        }
    }
    (values, max)
}

/// Layers × targets: where LoRA sits and its rank; values once statistics exist.
pub fn layer_grid(a: &Adapter, st: Option<&AdapterStats>) -> Grid {
    let map = st.map(|s| stats_index(a, s));
    let st = st.zip(map.as_deref());
    let cols = sorted_targets(
        a.deltas
            .iter()
            .map(|d| d.target.as_str())
            .chain(a.full.iter().map(|f| f.target.as_str())),
    );
    let layers = sorted_layers(
        a.deltas
            .iter()
            .map(|d| d.layer)
            .chain(a.full.iter().map(|f| f.layer)),
    );
    let mut cell_deltas: HashMap<(Option<usize>, &str), Vec<usize>> = HashMap::new();
    for (i, d) in a.deltas.iter().enumerate() {
        cell_deltas.entry((d.layer, &d.target)).or_default().push(i);
    }
    let full: BTreeSet<(Option<usize>, &str)> = a
        .full
        .iter()
        .map(|f| (f.layer, f.target.as_str()))
        .collect();
    let mut cells = Vec::with_capacity(layers.len() * cols.len());
    for &l in &layers {
        for t in &cols {
            let cell = match cell_deltas.get(&(l, t.as_str())) {
                Some(idx) => {
                    let d = &a.deltas[idx[0]];
                    let text = match (idx.len(), d.expert_layout) {
                        (1, Some(ExpertLayout::Shared3d)) => format!("{} sh", d.rank),
                        (1, _) => d.rank.to_string(),
                        (n, _) => format!("{}×{n}", d.rank),
                    };
                    let (values, max) = aggregate(a, st, idx);
                    let what = match idx.len() {
                        1 if d.expert_layout == Some(ExpertLayout::Shared3d) => {
                            format!("r {} shared by all experts", d.rank)
                        }
                        1 => format!("r {}", d.rank),
                        n => format!("r {} × {n} experts", d.rank),
                    };
                    Some(GridCell {
                        text,
                        values,
                        max,
                        detail: format!(
                            "layer {} · {t} · {what} · s {} · {}×{}",
                            layer_label(l),
                            text::num(d.scale),
                            d.out_dim,
                            d.in_dim
                        ),
                    })
                }
                None if full.contains(&(l, t.as_str())) => Some(GridCell {
                    text: "full".into(),
                    detail: format!(
                        "layer {} · {t} · full tensor (modules_to_save or merged weights), not a delta",
                        layer_label(l)
                    ),
                    ..GridCell::default()
                }),
                None => None,
            };
            cells.push(cell);
        }
    }
    Grid {
        title: "layers × targets".into(),
        rows: layers.iter().map(|&l| layer_label(l)).collect(),
        row_layers: layers,
        emphasis: cols.iter().map(|t| is_expert_target(t)).collect(),
        cols,
        cells,
    }
}

/// The targets whose deltas are per expert (or shared by all experts), in table order.
pub fn expert_targets(a: &Adapter) -> Vec<String> {
    sorted_targets(
        a.deltas
            .iter()
            .filter(|d| d.expert_layout.is_some())
            .map(|d| d.target.as_str()),
    )
}

/// Layers × experts of one expert target.
pub fn expert_grid(a: &Adapter, target: &str, st: Option<&AdapterStats>) -> Grid {
    let map = st.map(|s| stats_index(a, s));
    let st = st.zip(map.as_deref());
    let mine: Vec<usize> = (0..a.deltas.len())
        .filter(|&i| a.deltas[i].target == target && a.deltas[i].expert_layout.is_some())
        .collect();
    let layers = sorted_layers(mine.iter().map(|&i| a.deltas[i].layer));
    let experts: BTreeSet<Option<usize>> = mine.iter().map(|&i| a.deltas[i].expert).collect();
    let experts: Vec<Option<usize>> = experts.into_iter().collect();
    let mut at: HashMap<(Option<usize>, Option<usize>), usize> = HashMap::new();
    for &i in &mine {
        at.insert((a.deltas[i].layer, a.deltas[i].expert), i);
    }
    let mut cells = Vec::with_capacity(layers.len() * experts.len());
    for &l in &layers {
        for &e in &experts {
            cells.push(at.get(&(l, e)).map(|&i| {
                let d = &a.deltas[i];
                let (values, max) = aggregate(a, st, &[i]);
                GridCell {
                    text: String::new(),
                    values,
                    max,
                    detail: format!(
                        "layer {} · {target} · expert {} · r {} · s {}",
                        layer_label(l),
                        e.map_or("all (shared)".into(), |e| e.to_string()),
                        d.rank,
                        text::num(d.scale)
                    ),
                }
            }));
        }
    }
    Grid {
        title: format!("{target}: layers × experts"),
        rows: layers.iter().map(|&l| layer_label(l)).collect(),
        row_layers: layers,
        cols: experts
            .iter()
            .map(|e| e.map_or("all".into(), |e| e.to_string()))
            .collect(),
        emphasis: vec![false; experts.len()],
        cells,
    }
}

/// What compare shows in its grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareMetric {
    Cosine,
    Subspace,
    NormA,
    NormB,
}

impl CompareMetric {
    pub const ALL: [CompareMetric; 4] = [
        CompareMetric::Cosine,
        CompareMetric::Subspace,
        CompareMetric::NormA,
        CompareMetric::NormB,
    ];

    pub fn label(self) -> &'static str {
        match self {
            CompareMetric::Cosine => "cosine",
            CompareMetric::Subspace => "subspace similarity",
            CompareMetric::NormA => "‖ΔW_A‖_F",
            CompareMetric::NormB => "‖ΔW_B‖_F",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn next(self) -> CompareMetric {
        CompareMetric::ALL[(self.index() + 1) % 4]
    }

    /// Metrics that share one colour scale (A's and B's norms must be read on the same one).
    pub fn scale_group(self) -> &'static [usize] {
        match self {
            CompareMetric::Cosine => &[0],
            CompareMetric::Subspace => &[1],
            CompareMetric::NormA | CompareMetric::NormB => &[2, 3],
        }
    }
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
fn describe_keys(keys: &[crate::compare::Key]) -> String {
    if keys.is_empty() {
        return "nothing".into();
    }
    let mut by: BTreeMap<(usize, String), (BTreeSet<usize>, BTreeSet<usize>)> = BTreeMap::new();
    for k in keys {
        let e = by
            .entry((target_order(&k.target), k.target.clone()))
            .or_default();
        if let Some(l) = k.layer {
            e.0.insert(l);
        }
        if let Some(x) = k.expert {
            e.1.insert(x);
        }
    }
    let parts: Vec<String> = by
        .into_iter()
        .map(|((_, t), (ls, es))| {
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
    // The grid: layers × targets of the matched pairs, means over experts.
    let cols = sorted_targets(c.pairs.iter().map(|p| p.target.as_str()));
    let rows = sorted_layers(c.pairs.iter().map(|p| p.layer));
    let mut groups: HashMap<(Option<usize>, &str), Vec<&crate::compare::Pair>> = HashMap::new();
    for p in &c.pairs {
        groups.entry((p.layer, &p.target)).or_default().push(p);
    }
    let mut cells = Vec::with_capacity(rows.len() * cols.len());
    for &l in &rows {
        for t in &cols {
            cells.push(groups.get(&(l, t.as_str())).map(|ps| {
                let mean = |f: &dyn Fn(&crate::compare::Pair) -> Option<f64>| {
                    let v: Vec<f64> = ps.iter().filter_map(|p| f(p)).collect();
                    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
                };
                let values = [
                    mean(&|p| p.cosine),
                    mean(&|p| p.subspace_similarity),
                    mean(&|p| p.fro_norm_a),
                    mean(&|p| p.fro_norm_b),
                ];
                let experts = if ps.len() > 1 {
                    format!(" · mean over {} experts", ps.len())
                } else {
                    String::new()
                };
                let note = ps
                    .iter()
                    .find_map(|p| p.note.clone())
                    .map_or(String::new(), |n| format!(" · {n}"));
                GridCell {
                    text: String::new(),
                    values,
                    max: [None; 4],
                    detail: format!("layer {} · {t}{experts}{note}", layer_label(l)),
                }
            }));
        }
    }
    CompareModel {
        a: c.a.clone(),
        b: c.b.clone(),
        matched: c.pairs.len(),
        not_comparable: c.pairs.iter().filter(|p| !p.comparable).count(),
        only_a: describe_keys(&c.only_a),
        only_b: describe_keys(&c.only_b),
        layers,
        grid: Grid {
            title: "layers × targets (matched deltas)".into(),
            rows: rows.iter().map(|&l| layer_label(l)).collect(),
            row_layers: rows,
            emphasis: cols.iter().map(|t| is_expert_target(t)).collect(),
            // Short names (`q`, `gate_up`): three maps share the screen here.
            cols: cols
                .iter()
                .map(|t| t.trim_end_matches("_proj").to_string())
                .collect(),
            cells,
        },
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
}

impl StatsColumn {
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
        }
    }

    pub fn right(self) -> bool {
        !matches!(self, StatsColumn::Target)
    }
}

/// A row of the stats table: a delta, or a full tensor (router) after the deltas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatsRow {
    Delta(usize),
    Full(usize),
}

pub fn stats_rows(st: &AdapterStats) -> Vec<StatsRow> {
    (0..st.deltas.len())
        .map(StatsRow::Delta)
        .chain((0..st.full_tensors.len()).map(StatsRow::Full))
        .collect()
}

/// The cell text of a stats row.
pub fn stats_cell(st: &AdapterStats, row: StatsRow, c: StatsColumn) -> String {
    match row {
        StatsRow::Delta(i) => {
            let d = &st.deltas[i];
            match c {
                StatsColumn::Layer => text::opt(d.layer),
                StatsColumn::Target => d.target.clone(),
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

fn stats_key(st: &AdapterStats, row: StatsRow, c: StatsColumn) -> (Option<f64>, String) {
    let num = |v: f64| (Some(v), String::new());
    match row {
        StatsRow::Delta(i) => {
            let d = &st.deltas[i];
            match c {
                StatsColumn::Layer => (d.layer.map(|x| x as f64), String::new()),
                StatsColumn::Target => (Some(target_order(&d.target) as f64), d.target.clone()),
                StatsColumn::Expert => (d.expert.map(|x| x as f64), String::new()),
                StatsColumn::Rank => num(d.rank as f64),
                StatsColumn::Scale => num(d.scale),
                StatsColumn::Fro => num(d.fro_norm),
                StatsColumn::Spectral => num(d.spectral_norm),
                StatsColumn::ERank => num(d.effective_rank),
                StatsColumn::SRank => num(d.stable_rank),
            }
        }
        StatsRow::Full(i) => {
            let f = &st.full_tensors[i];
            match c {
                StatsColumn::Layer => (f.layer.map(|x| x as f64), String::new()),
                StatsColumn::Target => (Some(target_order(&f.target) as f64), f.target.clone()),
                StatsColumn::Fro => num(f.fro_norm),
                StatsColumn::Spectral => (f.spectral_norm, String::new()),
                _ => (None, String::new()),
            }
        }
    }
}

/// Rows in the order of `col` (ascending or not); ties keep the table's natural order.
pub fn sort_stats_rows(st: &AdapterStats, col: StatsColumn, asc: bool) -> Vec<StatsRow> {
    let mut rows = stats_rows(st);
    rows.sort_by(|&x, &y| {
        let (kx, ky) = (stats_key(st, x, col), stats_key(st, y, col));
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
