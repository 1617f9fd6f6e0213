//! The `p` key's hook: writes the current view's plot as PNG into `app.export_dir`, through
//! `crate::plot`. The one place the explorer calls the plot module. It runs on the event loop
//! after the key (never while drawing); a figure of a gpt-oss-size adapter takes well under 1 s.

use super::app::App;
use super::model::{Metric, StatsRow};
use super::screen::{Screen, Tab};
use crate::plot::{self, CompareWith, PlotKind, PlotOptions};
use std::path::PathBuf;

fn plot_metric(m: Metric) -> plot::Metric {
    match m {
        Metric::Fro => plot::Metric::Fro,
        Metric::Spectral => plot::Metric::Spectral,
        Metric::ERank => plot::Metric::Erank,
        Metric::SRank => plot::Metric::Srank,
    }
}

/// What the view shows, as a figure: the Tree and the Layer map give the layers heatmap, the
/// Expert map the experts heatmap of its target, Stats the spectra of the selected delta's target
/// and layer, Compare both adapters' layers heatmaps and their cosine. Returns the file written,
/// or a message for the status bar.
pub fn export_plot(app: &App) -> Result<PathBuf, String> {
    let failed = |e: crate::Error| format!("plot export failed: {e}");
    match &app.screen {
        Screen::List => {
            Err("open an adapter (Enter) or a comparison (c) to export its plot".into())
        }
        Screen::Adapter(v) => {
            let st = v.stats(&app.jobs).ok_or_else(|| {
                "statistics are not ready yet: the plot draws them (the Layer map computes them)"
                    .to_string()
            })?;
            let mut opts = PlotOptions::new(PlotKind::Layers);
            opts.metric = plot_metric(v.metric);
            match v.tab {
                Tab::Tree | Tab::Layers => {}
                Tab::Experts => {
                    opts.kind = PlotKind::Experts;
                    opts.target = v.expert_targets.get(v.expert_target).cloned();
                }
                Tab::Stats => {
                    opts.kind = PlotKind::Spectrum;
                    if let Some(&StatsRow::Delta(i)) = v.stats_rows.get(v.stats_sel) {
                        let d = &st.deltas[i];
                        opts.target = Some(d.target.clone());
                        opts.layer = d.layer;
                    }
                }
            }
            plot::export_view(st, None, &opts, &app.export_dir).map_err(failed)
        }
        Screen::Compare(_) => {
            let c = app
                .current_comparison()
                .ok_or_else(|| "the comparison is not ready yet".to_string())?;
            let with = CompareWith {
                stats: &c.stats_b,
                comparison: &c.comparison,
            };
            let opts = PlotOptions::new(PlotKind::Layers);
            plot::export_view(&c.stats_a, Some(with), &opts, &app.export_dir).map_err(failed)
        }
    }
}
