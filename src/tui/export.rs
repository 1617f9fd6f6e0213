//! The `p` key's hook: writes the current view's plot as PNG into `app.export_dir`, through
//! `crate::plot`. The one place the explorer calls the plot module. It runs on the event loop
//! after the key (never while drawing); a figure of a gpt-oss-size adapter takes well under 1 s.

use super::app::App;
use super::model::StatsRow;
use super::screen::run::Focus;
use super::screen::{Screen, Tab};
use crate::adapter::layout::Target;
use crate::plot::{self, GridView, PlotKind, PlotOptions, Rendered};
use crate::view::grid::Measure;
use std::path::PathBuf;

/// What the view shows, as a figure: the Tree and the Layer map give the layer map's grid, the
/// Expert map its target's grid, Compare its grid, each exactly as on screen (rows, columns,
/// metric, target, palette); Stats the spectra of the selected delta's target and layer.
/// Returns the file written, or a message for the status bar.
pub fn export_plot(app: &App) -> Result<PathBuf, String> {
    export_view(app).map(|(path, _)| path)
}

/// [`export_plot`], with the figure as drawn (its cells: where, which row and column, which
/// colour).
pub fn export_view(app: &App) -> Result<(PathBuf, Rendered), String> {
    let failed = |e: crate::Error| format!("plot export failed: {e}");
    let dir = &app.export_dir;
    match &app.screen {
        Screen::List => {
            Err("open an adapter (Enter) or a comparison (c) to export its plot".into())
        }
        Screen::Adapter(v) => {
            let st = v.stats(&app.jobs).ok_or_else(|| {
                "statistics are not ready yet: the plot draws them (the Layer map computes them)"
                    .to_string()
            })?;
            let target = v.expert_targets.get(v.expert_target).map(Target::as_str);
            let col_title = format!("expert ({})", target.unwrap_or(""));
            let (grid, kind, target, col_title) = match v.tab {
                Tab::Tree | Tab::Layers | Tab::Health => {
                    (&v.layers, PlotKind::Layers, None, "target")
                }
                Tab::Experts => (&v.experts, PlotKind::Experts, target, col_title.as_str()),
                // The spectra plot draws deltas' singular values; a merged model's weights
                // minus its base are not deltas (its maps export as they are shown).
                Tab::Stats if app.jobs.merged(v.idx).is_some() => {
                    return Err("the Stats tab of a merged model has no plot export yet: \
                         its Layer and Expert maps export (p there)"
                        .into())
                }
                Tab::Stats => {
                    let mut opts = PlotOptions::new(PlotKind::Spectrum);
                    if let Some(&StatsRow::Delta(i)) = v.stats_rows.get(v.stats_sel) {
                        let d = &st.deltas[i];
                        opts.target = Some(d.target.to_string());
                        opts.layer = d.layer;
                    }
                    let path = dir.join(plot::file_name(&st.id, None, &opts));
                    let r = plot::write_png(st, None, &opts, &path).map_err(failed)?;
                    return Ok((path, r));
                }
            };
            let view = GridView {
                grid,
                measure: Measure::Delta(v.metric),
                id: &st.id,
                compare_id: None,
                kind,
                target,
                row_title: "layer",
                col_title,
            };
            plot::export_grid(&view, dir).map_err(failed)
        }
        Screen::Run(v) => {
            if v.data.is_none() {
                return Err("the run's timeline is not read yet".into());
            }
            // The map the keys move in: the layer map, or the expert map of the cursor's layer.
            let layer = v
                .maps
                .layers
                .rows
                .get(v.cursor.0)
                .cloned()
                .unwrap_or_default();
            let (grid, target, row_title) = match (v.focus, &v.maps.experts) {
                (Focus::Experts, Some((t, g))) => (g, Some(format!("{t}-layer{layer}")), "expert"),
                _ => (&v.maps.layers, v.target().map(|t| t.to_string()), "layer"),
            };
            let view = GridView {
                grid,
                measure: Measure::Step(v.metric),
                id: &v.run.id,
                compare_id: None,
                kind: PlotKind::Timeline,
                target: target.as_deref(),
                row_title,
                col_title: "step",
            };
            plot::export_grid(&view, dir).map_err(failed)
        }
        Screen::Compare(v) => {
            let (Some(c), Some(m)) = (app.current_comparison(), v.model.as_ref()) else {
                return Err("the comparison is not ready yet".to_string());
            };
            let view = GridView {
                grid: &m.grid,
                measure: Measure::Compare(v.metric),
                id: &c.stats_a.id,
                compare_id: Some(&c.stats_b.id),
                kind: PlotKind::Layers,
                target: None,
                row_title: "layer",
                col_title: plot::TARGET_AXIS,
            };
            plot::export_grid(&view, dir).map_err(failed)
        }
    }
}
