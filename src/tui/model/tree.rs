//! The tensor tree of an adapter: layers → modules → tensors, experts under their module.

use crate::adapter::layout::{Delta, ExpertLayout};
use crate::adapter::Adapter;
use crate::view::text;
use crate::view::text::short_name;
use std::collections::{BTreeMap, HashMap};

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

pub(super) fn layer_label(l: Option<usize>) -> String {
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
