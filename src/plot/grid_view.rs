//! The explorer's grids as figures: what `p` exports, exactly as the screen shows it.

use super::*;

/// A grid of the explorer, as it shows it: what `p` exports.
#[derive(Debug, Clone, Copy)]
pub struct GridView<'a> {
    pub grid: &'a Grid,
    /// What the cells are coloured by.
    pub measure: Measure,
    /// The adapter's id (and the second one of a comparison), for the title and file name.
    pub id: &'a str,
    pub compare_id: Option<&'a str>,
    /// The figure kind and target the file name says.
    pub kind: PlotKind,
    pub target: Option<&'a str>,
    /// The axis titles: rows (`layer`, `expert`) and columns (`target`, `step`).
    pub row_title: &'a str,
    pub col_title: &'a str,
}

impl GridView<'_> {
    pub(super) fn figure(&self) -> Figure {
        let ids = match self.compare_id {
            Some(b) => format!("{} vs {b}", self.id),
            None => self.id.to_string(),
        };
        let bar = Bar::of(self.measure, &[self.grid]);
        let mut subtitle = "as shown in the explorer".to_string();
        if let Some(e) = bar.empty_label {
            subtitle.push_str(&format!(" · hatched: {e}"));
        }
        Figure::Heat {
            title: format!("{ids}: {} · {}", self.measure.label(), self.grid.title),
            subtitle,
            panels: vec![(Panel::Single, String::new(), self.grid.clone())],
            value: self.measure.index(),
            bar,
            cosine: None,
            row_title: self.row_title.to_string(),
            col_title: self.col_title.to_string(),
        }
    }

    /// The file name [`export_grid`] writes: as [`file_name`], a comparison's metric named
    /// unless it is the cosine, a timeline's unless it is ‖ΔW‖_F.
    pub fn file_name(&self) -> String {
        let (metric, other) = match self.measure {
            Measure::Delta(m) => (m, None),
            Measure::Compare(m) => (
                Metric::Fro,
                (m != CompareMetric::Cosine).then(|| m.as_str()),
            ),
            Measure::Step(m) => (Metric::Fro, (m != StepMetric::Fro).then(|| m.as_str())),
        };
        let opts = PlotOptions {
            metric,
            target: self.target.map(String::from),
            ..PlotOptions::new(self.kind)
        };
        let name = file_name(self.id, self.compare_id, &opts);
        match other {
            Some(m) => format!("{}-{m}.png", name.trim_end_matches(".png")),
            None => name,
        }
    }
}

/// Draws an explorer grid into memory: its rows, columns, values and colours, nothing else.
pub fn render_grid(view: &GridView) -> Result<Rendered> {
    typeface()?;
    paint(&view.figure(), DEFAULT_SIZE)
}

/// Writes the grid the explorer shows into `dir` (named by [`GridView::file_name`]) and returns
/// its path and what was drawn: `p`'s export of the layer map, expert map and compare map.
pub fn export_grid(view: &GridView, dir: &Path) -> Result<(PathBuf, Rendered)> {
    let path = dir.join(view.file_name());
    let r = render_grid(view)?;
    save(&r, &path)?;
    Ok((path, r))
}
