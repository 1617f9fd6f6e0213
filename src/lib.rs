//! lorascope: explore LoRA adapters of Mixture-of-Experts models (gpt-oss first).
//!
//! The pipeline, one way down (docs/architecture.md draws it):
//! - `adapter`: finding adapters (`discovery`, `catalog`), reading safetensors headers (`format`)
//!   and adapter_config.json (`config`), turning tensors into logical deltas (`layout`).
//! - `compute`: mmapped factors (`tensor`), the factored SVD core (`math`), per-delta statistics
//!   (`stats`) and comparisons (`compare`).
//! - `health`: findings (dead, non-finite, outlier, coverage, …) and vLLM/SGLang serving rules.
//! - `base`: the base model an adapter changes (hub cache, shards, MXFP4) and the statistics
//!   of every delta against its base weight.
//! - `export`: an adapter rewritten as a PEFT adapter an engine serves (layouts converted,
//!   ranks cut by the exact factored SVD), verified by re-reading it.
//! - `view`: what every front end shows (text formatting, the heatmap grid model).
//! - `plot`, `tui`, `report`: what people see; `hub`: the Hugging Face Hub over HTTP.
//! - `synth`: synthetic adapters for tests, benchmarks and the demo cache.
//! - `cli` is the command line, a leaf that only `main.rs` uses.

pub mod adapter;
pub mod base;
pub mod cli;
pub mod compute;
pub mod error;
pub mod export;
pub mod health;
pub mod hub;
pub mod plot;
pub mod report;
pub mod run;
pub mod synth;
pub mod tui;
pub mod view;

pub use adapter::{Adapter, Kind, Pattern};
pub use error::{Error, Result};
