//! PNG plots of an adapter's statistics, alone or against a second adapter.
//!
//! Pure functions from [`AdapterStats`] (and a [`Comparison`]) to a PNG file: no adapter is read
//! here. Three kinds of figure:
//! - [`PlotKind::Layers`]: heatmap of layers × targets coloured by a [`Metric`]; an expert target
//!   gets two columns, the mean over the layer's experts and the largest expert.
//! - [`PlotKind::Experts`]: heatmap of layers × experts for one expert target.
//! - [`PlotKind::Spectrum`]: singular values on a log axis, one line per target, layer or expert.
//! - [`PlotKind::Timeline`]: a training run's layers × steps heatmap, its deltas' lines and the
//!   loss over the steps ([`render_timeline`], from a `run::timeline::Timeline`).
//!
//! With a comparison, both adapters are drawn side by side on one colour scale (or one y axis),
//! followed by a heatmap of the per-module cosine similarity. Cells where an adapter has no LoRA
//! are hatched grey; the colour maps (viridis, red–yellow–blue) never produce a neutral grey, so
//! empty cells cannot be mistaken for values.
//!
//! plotters (bitmap backend) draws shapes and series; text is rasterised with ab_glyph from DejaVu
//! Sans embedded from `assets/fonts` (its licence is next to it), so plotting needs no system font. Files are written to a temporary name in the destination folder and renamed,
//! so a failure never leaves a partial PNG behind.
//!
//! One file per part: `figure` (what a figure holds and how it is laid out), `heatmap`,
//! `spectrum` and `timeline` (each figure kind's panels), `grid_view` (the explorer's grids), `canvas` (font,
//! text, ticks, legends), `select` (selection checks), `file` (atomic PNG files).

use crate::adapter::layout::Target;
use crate::compute::compare::Comparison;
use crate::compute::stats::{AdapterStats, DeltaStats};
use crate::error::{Error, Result};
use crate::view::grid::{
    self, CellKind, Col, CompareMetric, Entry, Grid, Labels, Measure, Scale, ScaleKind, StepMetric,
};
use ab_glyph::{point, Font, FontRef, GlyphId, PxScale, ScaleFont};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::HPos;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

mod canvas;
mod figure;
mod file;
mod grid_view;
mod heatmap;
mod select;
mod spectrum;
mod timeline;

pub use canvas::NONFINITE;
use canvas::*;
use figure::*;
use file::*;
pub use grid_view::{export_grid, render_grid, GridView};
pub use heatmap::TARGET_AXIS;
use heatmap::*;
use select::*;
use spectrum::*;
pub use timeline::{render_timeline, write_timeline_png};

/// DejaVu Sans (Bitstream Vera licence, see assets/fonts/DejaVuSans-LICENSE.txt).
static FONT_BYTES: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// Default size of a single-adapter figure.
pub const DEFAULT_SIZE: (u32, u32) = (1200, 800);
/// Default size of a comparison: three panels side by side need the extra width.
pub const DEFAULT_COMPARE_SIZE: (u32, u32) = (1800, 800);
/// Accepted width and height, in pixels.
pub const SIZE_RANGE: std::ops::RangeInclusive<u32> = 300..=8000;

/// Which figure to draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PlotKind {
    /// Layers × targets heatmap of a metric.
    #[default]
    Layers,
    /// Layers × experts heatmap of a metric, for one expert target.
    Experts,
    /// Singular values on a log axis.
    Spectrum,
    /// A training run's layers × steps heatmap, deltas' lines and loss over steps.
    Timeline,
}

impl PlotKind {
    pub const ALL: [PlotKind; 4] = [
        PlotKind::Layers,
        PlotKind::Experts,
        PlotKind::Spectrum,
        PlotKind::Timeline,
    ];

    /// What the figure is, in a few words.
    pub fn help(self) -> &'static str {
        match self {
            PlotKind::Layers => "Layers × targets heatmap of a metric",
            PlotKind::Experts => "Layers × experts heatmap of a metric, for one expert target",
            PlotKind::Spectrum => "Singular values on a log axis",
            PlotKind::Timeline => {
                "A training run: layers × steps heatmap, deltas and loss over steps (RUN a run folder)"
            }
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PlotKind::Layers => "layers",
            PlotKind::Experts => "experts",
            PlotKind::Spectrum => "spectrum",
            PlotKind::Timeline => "timeline",
        }
    }
}

/// The per-delta number a heatmap shows: the explorer's metric too.
pub use crate::view::grid::Metric;

/// What to draw and how large.
#[derive(Debug, Clone, Default)]
pub struct PlotOptions {
    pub kind: PlotKind,
    pub metric: Metric,
    /// Only this target; for `experts`, the expert target to show (default: the first present).
    pub target: Option<String>,
    /// Only this layer.
    pub layer: Option<usize>,
    /// Pixels; `None` takes [`DEFAULT_SIZE`] or [`DEFAULT_COMPARE_SIZE`].
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// The first adapter's statistics against its base model (for the base metrics).
    pub base: Option<std::sync::Arc<crate::base::stats::BaseReport>>,
    /// What a timeline's heatmap and lines show ([`PlotKind::Timeline`] only).
    pub step_metric: StepMetric,
}

impl PlotOptions {
    pub fn new(kind: PlotKind) -> PlotOptions {
        PlotOptions {
            kind,
            ..PlotOptions::default()
        }
    }

    /// The figure's size, checked against [`SIZE_RANGE`].
    pub fn size(&self, compare: bool) -> Result<(u32, u32)> {
        let (dw, dh) = if compare {
            DEFAULT_COMPARE_SIZE
        } else {
            DEFAULT_SIZE
        };
        let (w, h) = (self.width.unwrap_or(dw), self.height.unwrap_or(dh));
        if !SIZE_RANGE.contains(&w) || !SIZE_RANGE.contains(&h) {
            return Err(Error::Other(format!(
                "plot size {w}×{h} is out of range: width and height must be {} to {} pixels",
                SIZE_RANGE.start(),
                SIZE_RANGE.end()
            )));
        }
        Ok((w, h))
    }
}

/// The second adapter of a comparison: its statistics and the matched pairs.
#[derive(Debug, Clone, Copy)]
pub struct CompareWith<'a> {
    pub stats: &'a AdapterStats,
    pub comparison: &'a Comparison,
}

/// Which heatmap of a figure a cell belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Panel {
    /// The only heatmap of a single-adapter figure.
    Single,
    /// The first adapter of a comparison.
    A,
    /// The second adapter of a comparison.
    B,
    /// Cosine similarity of a comparison.
    Cosine,
}

/// One heatmap cell as drawn: where, what, and in which colour (`None`: empty, hatched).
#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    pub panel: Panel,
    /// Row label (the layer number, or "none" for deltas without a layer).
    pub row: String,
    /// Column label: a short target ("q", "gate_up mean", "gate_up max") or an expert number.
    pub col: String,
    /// Pixels, x0 ≤ x < x1, y0 ≤ y < y1.
    pub x0: i32,
    pub y0: i32,
    pub x1: i32,
    pub y1: i32,
    /// The finite value drawn; None for an empty cell and for a non-finite one (fill
    /// [`NONFINITE`]).
    pub value: Option<f64>,
    pub fill: Option<[u8; 3]>,
}

/// A figure in memory: RGB pixels row by row, and the heatmap cells (for tests and hit-testing).
#[derive(Debug, Clone)]
pub struct Rendered {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
    pub cells: Vec<Cell>,
}

/// Draws the figure `opts` asks for into memory.
pub fn render(
    stats: &AdapterStats,
    compare: Option<CompareWith>,
    opts: &PlotOptions,
) -> Result<Rendered> {
    typeface()?;
    let (w, h) = opts.size(compare.is_some())?;
    // Validate and shape the data before drawing anything.
    let fig = build(stats, compare, opts)?;
    paint(&fig, (w, h))
}

/// Draws a figure on a white canvas of `w`×`h` pixels.
fn paint(fig: &Figure, (w, h): (u32, u32)) -> Result<Rendered> {
    let mut rgb = vec![255u8; w as usize * h as usize * 3];
    let mut cells = Vec::new();
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        draw(&root, fig, (w, h), &mut cells)?;
        root.present().map_err(draw_err)?;
    }
    Ok(Rendered {
        width: w,
        height: h,
        rgb,
        cells,
    })
}

/// Draws the figure and writes it to `out` (a `.png` path) atomically: a temporary file in the
/// same folder is renamed over `out` only once complete, so a failure leaves nothing behind.
pub fn write_png(
    stats: &AdapterStats,
    compare: Option<CompareWith>,
    opts: &PlotOptions,
    out: &Path,
) -> Result<Rendered> {
    check_png(out)?;
    // Render first: no temporary file exists while the figure is built, so a failure (or a
    // crash) there cannot leave one behind; any later failure removes it (TempFile's Drop).
    let r = render(stats, compare, opts)?;
    save(&r, out)?;
    Ok(r)
}

/// A figure is written to a `.png` path only.
fn check_png(out: &Path) -> Result<()> {
    let is_png = out
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"));
    if !is_png {
        return Err(Error::Other(format!(
            "{}: the output must be a .png file",
            out.display()
        )));
    }
    Ok(())
}

/// Encodes a drawn figure to `out` through a temporary file renamed once complete.
fn save(r: &Rendered, out: &Path) -> Result<()> {
    let tmp = TempFile::create(out)?;
    tmp.finish(|f| encode_png(f, r))
}

/// Writes the plot of the explorer's current view into `dir` and returns its path.
///
/// The file is named `<id>-<kind>[-<target>][-layer<N>][-<metric>].png`, with the adapter id's
/// `/` (and any other character unsafe in file names) turned into `-`; a comparison names both
/// adapters, `<a>-vs-<b>-<kind>…`. The metric is named only when it is not the default `fro`
/// (and never for a spectrum). An existing file of that name is replaced; `dir` must exist.
/// Errors are clear messages for a status bar: an adapter without expert LoRA asked for
/// [`PlotKind::Experts`], an unknown target or layer, an unwritable folder.
///
/// ```no_run
/// # use lorascope::plot::{export_view, PlotKind, PlotOptions};
/// # fn f(stats: &lorascope::compute::stats::AdapterStats) -> lorascope::Result<()> {
/// let path = export_view(stats, None, &PlotOptions::new(PlotKind::Layers), ".".as_ref())?;
/// println!("wrote {}", path.display());
/// # Ok(()) }
/// ```
pub fn export_view(
    stats: &AdapterStats,
    compare: Option<CompareWith>,
    opts: &PlotOptions,
    dir: &Path,
) -> Result<PathBuf> {
    let path = dir.join(file_name(
        &stats.id,
        compare.map(|c| c.stats.id.as_str()),
        opts,
    ));
    write_png(stats, compare, opts, &path)?;
    Ok(path)
}

/// The file name [`export_view`] writes.
pub fn file_name(id: &str, compare_id: Option<&str>, opts: &PlotOptions) -> String {
    let mut name = safe_name(id);
    if let Some(b) = compare_id {
        name.push_str("-vs-");
        name.push_str(&safe_name(b));
    }
    name.push('-');
    name.push_str(opts.kind.as_str());
    if let Some(t) = &opts.target {
        name.push('-');
        name.push_str(&safe_name(t));
    }
    if let Some(l) = opts.layer {
        name.push_str(&format!("-layer{l}"));
    }
    if opts.metric != Metric::Fro && opts.kind != PlotKind::Spectrum {
        name.push('-');
        name.push_str(opts.metric.as_str());
    }
    name.push_str(".png");
    name
}

/// Letters, digits, `.`, `_` and `-` kept; anything else (`/`, spaces, `:`) becomes `-`.
fn safe_name(s: &str) -> String {
    let mapped: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    // A path given as the id would otherwise start with `-` or `.` (a hidden or odd file).
    let trimmed = mapped.trim_start_matches(['-', '.']);
    if trimmed.is_empty() {
        "adapter".into()
    } else {
        trimmed.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round() {
        let (t, d) = nice_ticks(0.0, 1.0, 5);
        assert_eq!(t, vec![0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]);
        assert_eq!(d, 1);
        assert_eq!(tick_label(t[3], d), "0.6");
        assert!(nice_ticks(1.0, 1.0, 5).0.is_empty());
        assert!(nice_ticks(f64::NAN, 1.0, 5).0.is_empty());
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(sig3(0.012345), "0.0123");
        assert_eq!(sig3(12.345), "12.3");
        assert_eq!(sig3(0.0), "0");
        assert_eq!(sig3(1.5e-5), "1.50e-5");
        assert_eq!(sig_log(0.1), "0.1");
        assert_eq!(sig_log(1e-5), "1e-5");
        assert_eq!(sig_log(5e-3), "5e-3");
        assert_eq!(sig_log(2.5e-3), "2.5e-3");
        assert_eq!(nice_step(3), 5);
        assert_eq!(nice_step(11), 20);
    }

    #[test]
    fn axes_get_readable_ticks() {
        assert_eq!(x_ticks(4), vec![1, 2, 3, 4]);
        assert_eq!(x_ticks(64), vec![1, 10, 20, 30, 40, 50, 60]);
        assert_eq!(log_ticks(1e-3, 2.0), vec![1e-3, 0.01, 0.1, 1.0]);
        assert_eq!(log_ticks(0.15, 0.9), vec![0.2, 0.5]);
        assert!(log_ticks(1e-30, 1.0).len() <= 8);
        assert!(log_ticks(0.0, 1.0).is_empty());
        assert!(log_ticks(f64::NAN, 1.0).is_empty());
    }

    #[test]
    fn names_are_safe() {
        let o = PlotOptions::new(PlotKind::Layers);
        assert_eq!(
            file_name("org/name", None, &o),
            "org-name-layers.png".to_string()
        );
        assert_eq!(safe_name("/tmp/x y"), "tmp-x-y");
        assert_eq!(safe_name("///"), "adapter");
    }

    #[test]
    fn scales_never_fail() {
        let s = Bar::sequential([f64::NAN].into_iter(), "x");
        assert_eq!((s.scale.lo, s.scale.hi), (0.0, 1.0));
        let _ = s.color(f64::NAN);
        let _ = Bar::cosine().color(5.0);
        let s = Bar::sequential([2.0, 2.0].into_iter(), "x");
        assert!(s.scale.lo < 2.0 && s.scale.hi > 2.0);
    }
}
