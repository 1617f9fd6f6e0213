//! A Hub repo's history in the cache: when several revisions of one repo were fetched
//! (`snapshots/<commit>/` beside the one `refs/main` names), each is a checkpoint of a run
//! (`run::detect`, scheme `hub`). huggingface_hub keeps no commit dates in the cache, so a
//! revision's step is read from what the cache does keep, in this order:
//! 1. a ref naming it with a step (`refs/checkpoint-500`, `refs/step-500`: a branch fetched by
//!    name is written under `refs/` by huggingface_hub; Pythia-style `step143000` branches);
//! 2. its `trainer_state.json`'s `global_step`, at the root or in `last-checkpoint/` (where the
//!    Trainer's `hub_strategy="checkpoint"` pushes the checkpoint folder);
//! 3. else, when any revision has neither, every revision's step is its place in the order the
//!    revisions were fetched (1, 2, …, by the snapshot folder's modification time), and the run
//!    says so (`History::ordinal`).

use std::fs;
use std::path::{Path, PathBuf};

/// Revisions beyond this many are not read as a history (a cache is not a training log).
pub const MAX_REVISIONS: usize = 256;

/// An adapter's place in its repo's fetched history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    /// The repo folder (`models--org--name`).
    pub repo: PathBuf,
    /// The adapter's id at the repo's main revision (`org/name`, `org/name/sub`): the run's id.
    pub id: String,
    pub step: u64,
    /// The step is the revision's place in fetch order, not a training step.
    pub ordinal: bool,
}

/// A fetched revision of a repo and its step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    pub rev: String,
    pub snapshot: PathBuf,
    pub step: u64,
    pub ordinal: bool,
}

/// The step a ref's name carries: `checkpoint-500`, `step-500`, `step_500`, `step500`.
pub fn step_of_ref(name: &str) -> Option<u64> {
    if let Some(s) = crate::adapter::checkpoint::trainer_step(name) {
        return Some(s);
    }
    let digits = name.strip_prefix("step")?;
    let digits = digits
        .strip_prefix('-')
        .or_else(|| digits.strip_prefix('_'))
        .unwrap_or(digits);
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// `global_step` of a snapshot's `trainer_state.json`, at its root or in `last-checkpoint/`
/// (read as the cache is read: a regular file, bounded).
fn trainer_global_step(snapshot: &Path) -> Option<u64> {
    ["trainer_state.json", "last-checkpoint/trainer_state.json"]
        .iter()
        .find_map(|rel| {
            let bytes = crate::adapter::fsread::read_regular(&snapshot.join(rel)).ok()?;
            let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
            v.get("global_step")?.as_u64()
        })
}

/// Every fetched revision of `repo` (real folders in `snapshots/`), with its step, ascending;
/// empty when there are fewer than two or more than `MAX_REVISIONS`.
pub fn revisions(repo: &Path) -> Vec<Revision> {
    let Ok(entries) = fs::read_dir(repo.join("snapshots")) else {
        return vec![];
    };
    let mut snaps: Vec<(String, PathBuf, Option<std::time::SystemTime>)> = Vec::new();
    for e in entries.flatten() {
        let Ok(m) = fs::symlink_metadata(e.path()) else {
            continue;
        };
        if !m.is_dir() {
            continue;
        }
        let Some(rev) = e.file_name().to_str().map(str::to_string) else {
            continue;
        };
        snaps.push((rev, e.path(), m.modified().ok()));
        if snaps.len() > MAX_REVISIONS {
            return vec![];
        }
    }
    if snaps.len() < 2 {
        return vec![];
    }
    let refs = ref_steps(&repo.join("refs"));
    let stepped: Vec<Option<u64>> = snaps
        .iter()
        .map(|(rev, snap, _)| {
            refs.iter()
                .find(|(r, _)| r == rev)
                .map(|(_, s)| *s)
                .or_else(|| trainer_global_step(snap))
        })
        .collect();
    let mut out: Vec<Revision> = if stepped.iter().all(Option::is_some) {
        snaps
            .into_iter()
            .zip(stepped)
            .map(|((rev, snapshot, _), s)| Revision {
                rev,
                snapshot,
                step: s.unwrap_or_default(),
                ordinal: false,
            })
            .collect()
    } else {
        snaps.sort_by(|a, b| (a.2, &a.0).cmp(&(b.2, &b.0)));
        snaps
            .into_iter()
            .enumerate()
            .map(|(i, (rev, snapshot, _))| Revision {
                rev,
                snapshot,
                step: i as u64 + 1,
                ordinal: true,
            })
            .collect()
    };
    out.sort_by(|a, b| (a.step, &a.rev).cmp(&(b.step, &b.rev)));
    out
}

/// (commit, step) of every ref under `refs/` whose name carries a step (one level: a branch
/// name with a `/` is a folder huggingface_hub writes, read one deep).
fn ref_steps(refs: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(refs) else {
        return out;
    };
    for e in entries.flatten().take(MAX_REVISIONS) {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(step) = step_of_ref(&name) else {
            continue;
        };
        if let Ok(bytes) = crate::adapter::fsread::read_regular(&e.path()) {
            let rev = String::from_utf8_lossy(&bytes).trim().to_string();
            out.push((rev, step));
        }
    }
    out
}

/// The id of an adapter of a revision other than main: the repo's id with the commit's first
/// `len` characters (`org/name@0123abc`).
pub fn revision_id(repo_id: &str, rev: &str, len: usize) -> String {
    let short: String = rev.chars().take(len).collect();
    format!("{repo_id}@{short}")
}

/// The shortest prefix length, at least 7 (git's), that tells the revisions apart, so that ids
/// stay unique in the list.
pub fn short_len(revisions: &[Revision]) -> usize {
    let longest = revisions
        .iter()
        .map(|r| r.rev.chars().count())
        .max()
        .unwrap_or(0);
    (7..longest.max(7))
        .find(|&n| {
            let mut seen = std::collections::BTreeSet::new();
            revisions
                .iter()
                .all(|r| seen.insert(r.rev.chars().take(n).collect::<String>()))
        })
        .unwrap_or(longest.max(7))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ids_grow_until_they_differ() {
        let rev = |r: &str| Revision {
            rev: r.into(),
            snapshot: PathBuf::new(),
            step: 0,
            ordinal: false,
        };
        assert_eq!(short_len(&[rev("0123456789"), rev("abcdef0123")]), 7);
        assert_eq!(short_len(&[rev("0000000100"), rev("0000000200")]), 8);
        assert_eq!(short_len(&[rev("main"), rev("dev")]), 7);
        assert_eq!(revision_id("o/n", "0000000100", 8), "o/n@00000001");
    }

    #[test]
    fn steps_from_ref_names() {
        assert_eq!(step_of_ref("checkpoint-500"), Some(500));
        assert_eq!(step_of_ref("step-20"), Some(20));
        assert_eq!(step_of_ref("step_20"), Some(20));
        assert_eq!(step_of_ref("step20"), Some(20));
        assert_eq!(step_of_ref("main"), None);
        assert_eq!(step_of_ref("step"), None);
        assert_eq!(step_of_ref("step-2x"), None);
        assert_eq!(step_of_ref("stepper"), None);
    }

    fn snapshot(repo: &Path, rev: &str, state: Option<u64>) {
        let d = repo.join("snapshots").join(rev);
        fs::create_dir_all(&d).unwrap();
        if let Some(s) = state {
            fs::write(
                d.join("trainer_state.json"),
                format!("{{\"global_step\": {s}, \"log_history\": []}}"),
            )
            .unwrap();
        }
    }

    #[test]
    fn steps_from_refs_then_trainer_state() {
        let t = tempfile::tempdir().unwrap();
        let repo = t.path();
        snapshot(repo, "aaa", None);
        snapshot(repo, "bbb", Some(40));
        fs::create_dir_all(repo.join("refs")).unwrap();
        fs::write(repo.join("refs/checkpoint-20"), "aaa").unwrap();
        fs::write(repo.join("refs/main"), "bbb").unwrap();
        let r = revisions(repo);
        let got: Vec<(&str, u64, bool)> = r
            .iter()
            .map(|r| (r.rev.as_str(), r.step, r.ordinal))
            .collect();
        assert_eq!(got, vec![("aaa", 20, false), ("bbb", 40, false)]);
    }

    #[test]
    fn fetch_order_when_a_step_is_unknown() {
        let t = tempfile::tempdir().unwrap();
        let repo = t.path();
        snapshot(repo, "zzz", Some(100));
        snapshot(repo, "aaa", None);
        // zzz fetched first.
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        fs::File::open(repo.join("snapshots/zzz"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        let r = revisions(repo);
        let got: Vec<(&str, u64, bool)> = r
            .iter()
            .map(|r| (r.rev.as_str(), r.step, r.ordinal))
            .collect();
        assert_eq!(got, vec![("zzz", 1, true), ("aaa", 2, true)]);
    }

    #[test]
    fn one_revision_or_links_are_no_history() {
        let t = tempfile::tempdir().unwrap();
        let repo = t.path();
        snapshot(repo, "aaa", Some(1));
        assert!(revisions(repo).is_empty());
        #[cfg(unix)]
        std::os::unix::fs::symlink(repo.join("snapshots/aaa"), repo.join("snapshots/bbb")).unwrap();
        assert!(
            revisions(repo).is_empty(),
            "a linked snapshot is not entered"
        );
    }
}
