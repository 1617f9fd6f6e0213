//! Training runs: a folder of checkpoints of one adapter read as a timeline (docs/runs.md).
//! `detect` finds runs among scanned adapters, `timeline` measures them a checkpoint at a time
//! (with progress and cancellation, for the explorer's background jobs), `cache` keeps what was
//! measured, `state` reads the trainer's log, `similarity` compares checkpoints' subspaces.
//! Uses adapter, compute, health's notion of dead (`compute::stats::is_dead`) and hub's atomic
//! writer; never cli or tui.

pub mod cache;
pub mod detect;
pub mod similarity;
pub mod state;
pub mod timeline;

use crate::adapter::discovery;
use crate::adapter::layout::LayoutOptions;
use crate::adapter::{Adapter, Source};
pub use detect::Run;
use std::borrow::Borrow;

/// A run and its checkpoints' adapters (`adapters[i]` is `run.members[i]`).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub run: Run,
    pub adapters: Vec<Adapter>,
}

/// The runs among adapters already read (their order), each with its checkpoints.
pub fn runs_of(adapters: &[Adapter]) -> Vec<Loaded> {
    detect::detect(adapters)
        .into_iter()
        .map(|run| Loaded {
            adapters: run
                .members
                .iter()
                .map(|m| adapters[m.index].clone())
                .collect(),
            run,
        })
        .collect()
}

/// The checkpoint that speaks for a run in lists: its last readable one (else its first).
pub fn shown<'a, A: Borrow<Adapter>>(adapters: &'a [A], r: &Run) -> &'a Adapter {
    let at = |i: usize| -> &'a Adapter { adapters[i].borrow() };
    r.members
        .iter()
        .rev()
        .map(|m| at(m.index))
        .find(|a| !detect::unreadable(a))
        .unwrap_or_else(|| at(r.members[0].index))
}

/// A run's summary as `scan` lists it: `shown`'s, with the run folder as its id and path and
/// the files and bytes of every checkpoint.
pub fn summary<A: Borrow<Adapter>>(adapters: &[A], r: &Run) -> crate::adapter::Summary {
    let at = |i: usize| -> &Adapter { adapters[i].borrow() };
    let mut s = shown(adapters, r).summary();
    s.id = r.id.clone();
    s.path = r.path.display().to_string();
    s.error = None;
    s.files = r.members.iter().map(|m| at(m.index).files.len()).sum();
    s.bytes = r.members.iter().map(|m| at(m.index).bytes()).sum();
    s
}

/// Reads the headers of `sources` and returns the runs among them.
pub fn load(sources: &[Source], layout: LayoutOptions) -> Vec<Loaded> {
    runs_of(&discovery::load_all(sources, layout))
}
