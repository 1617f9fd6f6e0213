//! View models: what the explorer and the PNG figures show, built once from adapters,
//! statistics and comparisons, and only drawn by `tui` and `plot`.

pub mod grid;
