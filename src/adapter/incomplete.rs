//! Modules whose LoRA factors make no delta (a lone lora_A, ranks or shapes that disagree): what
//! is wrong with them. `layout::build` sets such a module aside, once for every layout family: its
//! factors become `unknown`, the rest of the adapter is read, and `health` reports it
//! (`incomplete-pair`). docs/layouts.md ("What is not understood") lists the problems.

use crate::adapter::target::Target;
use serde::Serialize;

/// Why a module's factors make no delta (`Incomplete::problem`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PairProblem {
    /// lora_A (lora_down, lora_a) without its B factor.
    MissingB,
    /// lora_B without its A factor.
    MissingA,
    /// The factors' ranks disagree, with each other or with the per-expert rank of the config.
    Rank,
    /// The shapes do not chain into ΔW (2D with 3D, expert counts that do not broadcast, a zero
    /// dimension, more experts than `layout::MAX_EXPERTS`).
    Shape,
    /// A PEFT ParamWrapper nested deeper than `target_parameters` has parameters to wrap.
    Unplaced,
    /// GGUF factors in a quantisation lorascope does not decode (anything but Q8_0).
    Quantisation,
}

impl PairProblem {
    pub fn as_str(self) -> &'static str {
        match self {
            PairProblem::MissingB => "lora_A without lora_B",
            PairProblem::MissingA => "lora_B without lora_A",
            PairProblem::Rank => "ranks disagree",
            PairProblem::Shape => "shapes do not chain",
            PairProblem::Unplaced => "no parameter to place it on",
            PairProblem::Quantisation => "quantisation not read",
        }
    }
}

/// What is wrong with one module's pair, before it is placed.
pub(crate) struct Broken {
    pub problem: PairProblem,
    pub detail: String,
}

impl Broken {
    pub fn new(problem: PairProblem, detail: String) -> Broken {
        Broken { problem, detail }
    }
}

/// A module whose LoRA factors make no delta (a lone lora_A, ranks or shapes that disagree). Its
/// factors are `unknown`; the adapter is still read, and `check` reports it (`incomplete-pair`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Incomplete {
    pub module: String,
    pub layer: Option<usize>,
    pub target: Target,
    /// The expert of a module-list module (`gate_up_projs.3`); None for a packed or 3D pair.
    pub expert: Option<usize>,
    pub problem: PairProblem,
    /// What exactly does not fit ("lora_A has 4 rows but lora_B has 3 columns"); empty when
    /// `problem` says it all.
    pub detail: String,
    /// The factors present (their role is now `unknown`).
    pub tensors: Vec<usize>,
}

impl Incomplete {
    /// "ranks disagree (lora_A has 4 rows but lora_B has 3 columns)".
    pub fn why(&self) -> String {
        if self.detail.is_empty() {
            self.problem.as_str().to_string()
        } else {
            format!("{} ({})", self.problem.as_str(), self.detail)
        }
    }
}
