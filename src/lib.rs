//! lorascope: explore LoRA adapters of Mixture-of-Experts models (gpt-oss first).
//!
//! Modules by responsibility: `discovery` finds adapters, `format` reads safetensors headers,
//! `config` reads adapter_config.json (`fsread` opens
//! only regular files), `layout` turns tensors into logical deltas, `adapter`
//! holds the result; `synth` writes synthetic adapters for tests, benchmarks and the demo.
//! `hub` talks to the Hugging Face Hub (remote headers, `fetch`), `report` summarises many
//! adapters as the survey does, and `survey` rebuilds the survey's 140 repos synthetically.
//! `stats` and `compare` compute on the factors, `view` models what is shown (`view::grid`: the
//! one heatmap model), `plot` draws it as PNG, `tui` is the explorer.

pub mod adapter;
pub mod catalog;
pub mod cli;
pub mod compare;
pub mod config;
pub mod demo;
pub mod discovery;
pub mod error;
pub mod format;
pub mod fsread;
pub mod hub;
pub mod layout;
pub mod math;
pub mod plot;
pub mod report;
pub mod sigbus;
pub mod stats;
pub mod survey;
pub mod synth;
pub mod tensor;
pub mod tui;
pub mod view;

pub use adapter::{Adapter, Kind, Pattern};
pub use error::{Error, Result};
