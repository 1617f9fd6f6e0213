//! Which adapters of a list are the checkpoints of one training run: children of one folder
//! named by one scheme (`adapter::checkpoint`), at least two of them, and every readable one the
//! same adapter as far as its headers tell (same kind, base model and tensor names, so the same
//! deltas). A checkpoint that cannot be read (corrupt, no safetensors) stays in its run, shown as
//! such; a folder mixing two adapters is no run, and its adapters are listed as before.

use crate::adapter::checkpoint::{self, Scheme};
use crate::adapter::{Adapter, Kind};
use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One checkpoint of a run: its step and its adapter's position in the list.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub step: u64,
    pub index: usize,
}

/// A run found in a list of adapters.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    /// The run folder's id (its checkpoints' ids without their last component).
    pub id: String,
    /// The run folder.
    pub path: PathBuf,
    pub scheme: Scheme,
    /// Ascending step.
    pub members: Vec<Member>,
}

impl Run {
    pub fn steps(&self) -> (u64, u64) {
        let first = self.members.first().map_or(0, |m| m.step);
        (first, self.members.last().map_or(0, |m| m.step))
    }
}

/// The scheme, run folder, run name and step of an adapter that is a checkpoint by its name.
fn checkpoint_of(a: &Adapter) -> Option<(Scheme, PathBuf, String, u64)> {
    if let Some(h) = &a.history {
        let scheme = if h.ordinal {
            Scheme::HubFetchOrder
        } else {
            Scheme::Hub
        };
        return Some((scheme, h.repo.clone(), h.id.clone(), h.step));
    }
    let name = a.path.file_name()?.to_str()?;
    let parent = a.path.parent()?.to_path_buf();
    let is_file = a.path.extension().is_some_and(|x| x == "safetensors");
    if !is_file {
        return checkpoint::trainer_step(name).map(|s| (Scheme::Trainer, parent, String::new(), s));
    }
    checkpoint::file_step(name).map(|(sc, n, s)| (sc, parent, n.to_string(), s))
}

/// What must agree between the readable checkpoints of a run: kind, base model, tensor names
/// and shapes.
type Identity<'a> = (Kind, Option<String>, Vec<(&'a str, &'a [usize])>);

fn identity(a: &Adapter) -> Identity<'_> {
    let mut names: Vec<(&str, &[usize])> = a
        .tensors
        .iter()
        .map(|t| (t.info.name.as_str(), t.info.shape.as_slice()))
        .collect();
    names.sort_unstable();
    (a.kind, a.base_model(), names)
}

/// Whether a checkpoint could not be read: it is shown as such and skipped by the timeline.
pub fn unreadable(a: &Adapter) -> bool {
    matches!(a.kind, Kind::Error | Kind::NoSafetensors)
}

/// The runs among `adapters`, in the order of their first checkpoint in the list (owned or
/// shared adapters: the explorer holds them in `Arc`s).
pub fn detect<A: Borrow<Adapter>>(adapters: &[A]) -> Vec<Run> {
    let mut groups: BTreeMap<(Scheme, PathBuf, String), Vec<Member>> = BTreeMap::new();
    let mut first_seen: BTreeMap<(Scheme, PathBuf, String), usize> = BTreeMap::new();
    for (index, a) in adapters.iter().enumerate() {
        if let Some((sc, dir, name, step)) = checkpoint_of(a.borrow()) {
            let key = (sc, dir, name);
            first_seen.entry(key.clone()).or_insert(index);
            groups.entry(key).or_default().push(Member { step, index });
        }
    }
    let mut runs: Vec<(usize, Run)> = groups
        .into_iter()
        .filter_map(|(key, mut members)| {
            members.sort_by_key(|m| (m.step, m.index));
            let readable: Vec<&Adapter> = members
                .iter()
                .map(|m| adapters[m.index].borrow())
                .filter(|a| !unreadable(a))
                .collect();
            let one = readable.first().map(|a| identity(a));
            let same = readable.iter().all(|a| Some(identity(a)) == one);
            let lora = one.as_ref().is_some_and(|(k, _, _)| *k == Kind::Lora);
            if members.len() < 2 || !same || !lora {
                return None;
            }
            let first: &Adapter = adapters[members[0].index].borrow();
            let id = match key.0 {
                Scheme::Hub | Scheme::HubFetchOrder => key.2.clone(),
                _ => run_id(&first.id, &key.1),
            };
            Some((
                first_seen[&key],
                Run {
                    id,
                    path: key.1.clone(),
                    scheme: key.0,
                    members,
                },
            ))
        })
        .collect();
    runs.sort_by_key(|(i, _)| *i);
    runs.into_iter().map(|(_, r)| r).collect()
}

/// A checkpoint's id without its last component (`outputs/checkpoint-500` → `outputs`), or the
/// run folder's path when the id has none.
fn run_id(member_id: &str, dir: &Path) -> String {
    match member_id.rsplit_once('/') {
        Some((head, _)) if !head.is_empty() => head.to_string(),
        _ => dir.display().to_string(),
    }
}
