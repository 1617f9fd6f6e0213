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

/// Reads the headers of `sources` and returns the runs among them.
pub fn load(sources: &[Source], layout: LayoutOptions) -> Vec<Loaded> {
    runs_of(&discovery::load_all(sources, layout))
}
