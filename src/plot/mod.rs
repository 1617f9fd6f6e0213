//! PNG plots of an adapter's statistics, alone or against a second adapter.
//!
//! Pure functions from [`AdapterStats`] (and a [`Comparison`]) to a PNG file: no adapter is read
//! here. Three kinds of figure:
//! - [`PlotKind::Layers`]: heatmap of layers × targets coloured by a [`Metric`]; an expert target
//!   gets two columns, the mean over the layer's experts and the largest expert.
//! - [`PlotKind::Experts`]: heatmap of layers × experts for one expert target.
//! - [`PlotKind::Spectrum`]: singular values on a log axis, one line per target, layer or expert.
//!
//! With a comparison, both adapters are drawn side by side on one colour scale (or one y axis),
//! followed by a heatmap of the per-module cosine similarity. Cells where an adapter has no LoRA
//! are hatched grey; the colour maps (viridis, red–yellow–blue) never produce a neutral grey, so
//! empty cells cannot be mistaken for values.
//!
//! plotters (bitmap backend) draws shapes and series; text is rasterised with ab_glyph from DejaVu
//! Sans embedded from `assets/fonts` (its licence is next to it), so plotting needs no system font. Files are written to a temporary name in the destination folder and renamed,
//! so a failure never leaves a partial PNG behind.

use crate::adapter::layout::Target;
use crate::compute::compare::Comparison;
use crate::compute::stats::{AdapterStats, DeltaStats};
use crate::error::{Error, Result};
use crate::view::grid::{
    self, CellKind, Col, CompareMetric, Entry, Grid, Labels, Measure, Scale, ScaleKind,
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
}

impl PlotKind {
    pub const ALL: [PlotKind; 3] = [PlotKind::Layers, PlotKind::Experts, PlotKind::Spectrum];

    /// What the figure is, in a few words.
    pub fn help(self) -> &'static str {
        match self {
            PlotKind::Layers => "Layers × targets heatmap of a metric",
            PlotKind::Experts => "Layers × experts heatmap of a metric, for one expert target",
            PlotKind::Spectrum => "Singular values on a log axis",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PlotKind::Layers => "layers",
            PlotKind::Experts => "experts",
            PlotKind::Spectrum => "spectrum",
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
    let is_png = out
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"));
    if !is_png {
        return Err(Error::Other(format!(
            "{}: the output must be a .png file",
            out.display()
        )));
    }
    // Fail on an unwritable destination before spending time on drawing.
    // Render first: no temporary file exists while the figure is built, so a failure (or a
    // crash) there cannot leave one behind; any later failure removes it (TempFile's Drop).
    let r = render(stats, compare, opts)?;
    save(&r, out)?;
    Ok(r)
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

// ---------------------------------------------------------------------------------------------
// Files

/// A temporary file next to the destination, removed unless renamed onto it.
struct TempFile {
    tmp: PathBuf,
    out: PathBuf,
    file: Option<File>,
}

impl TempFile {
    fn create(out: &Path) -> Result<TempFile> {
        let cannot = |why: String| Error::Other(format!("cannot write {}: {why}", out.display()));
        let name = out
            .file_name()
            .ok_or_else(|| cannot("not a file name".into()))?;
        if out.is_dir() {
            return Err(cannot("it is a folder".into()));
        }
        let dir = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if !dir.is_dir() {
            return Err(cannot(format!("folder {} does not exist", dir.display())));
        }
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let tmp = dir.join(format!(
            ".{}.{}-{}.tmp",
            name.to_string_lossy(),
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| cannot(e.to_string()))?;
        Ok(TempFile {
            tmp,
            out: out.to_path_buf(),
            file: Some(file),
        })
    }

    fn finish(mut self, write: impl FnOnce(&mut File) -> std::io::Result<()>) -> Result<()> {
        let cannot =
            |e: std::io::Error| Error::Other(format!("cannot write {}: {e}", self.out.display()));
        let mut f = self.file.take().expect("file present until finish");
        write(&mut f).map_err(cannot)?;
        f.sync_all().map_err(cannot)?;
        drop(f);
        fs::rename(&self.tmp, &self.out).map_err(cannot)?;
        self.tmp = PathBuf::new();
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

fn encode_png(f: &mut File, r: &Rendered) -> std::io::Result<()> {
    let mut w = BufWriter::new(f);
    {
        let mut enc = png::Encoder::new(&mut w, r.width, r.height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_compression(png::Compression::Default);
        let mut wr = enc.write_header().map_err(std::io::Error::other)?;
        wr.write_image_data(&r.rgb).map_err(std::io::Error::other)?;
        wr.finish().map_err(std::io::Error::other)?;
    }
    w.flush()
}

// ---------------------------------------------------------------------------------------------
// Data: from statistics to grids and lines

fn list_layers(s: &BTreeSet<usize>) -> String {
    let v: Vec<usize> = s.iter().copied().collect();
    if v.is_empty() {
        "none".into()
    } else {
        crate::view::text::layers_prose(&v)
    }
}

fn list(v: impl IntoIterator<Item = String>) -> String {
    let v: Vec<String> = v.into_iter().collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// Checks that the selection has data, with messages that say what there is instead.
fn check_selection(ids: &str, stats: &[&AdapterStats], opts: &PlotOptions) -> Result<()> {
    let deltas = || stats.iter().flat_map(|s| s.deltas.iter());
    if deltas().next().is_none() {
        return Err(Error::Other(format!("{ids}: no LoRA deltas to plot")));
    }
    if let Some(t) = &opts.target {
        if !deltas().any(|d| &d.target == t) {
            let ts: BTreeSet<&Target> = deltas().map(|d| &d.target).collect();
            return Err(Error::Other(format!(
                "{ids}: no delta with target {t} (targets: {})",
                list(ts.into_iter().map(Target::to_string))
            )));
        }
    }
    if let Some(l) = opts.layer {
        let sel = |d: &&DeltaStats| opts.target.as_ref().is_none_or(|t| &d.target == t);
        if !deltas().filter(sel).any(|d| d.layer == Some(l)) {
            let ls: BTreeSet<usize> = deltas().filter(sel).filter_map(|d| d.layer).collect();
            return Err(Error::Other(format!(
                "{ids}: no delta{} at layer {l} (layers: {})",
                opts.target
                    .as_ref()
                    .map_or(String::new(), |t| format!(" of {t}")),
                list_layers(&ls)
            )));
        }
    }
    Ok(())
}

/// The expert target of an experts plot: the one asked for, else the first with expert deltas.
fn expert_target(ids: &str, all: &[(Target, bool)], asked: Option<&str>) -> Result<Target> {
    let split: Vec<&Target> = all.iter().filter(|(_, s)| *s).map(|(t, _)| t).collect();
    match asked {
        Some(t) if split.iter().any(|s| *s == t) => Ok(Target::parse(t)),
        Some(t) => Err(Error::Other(format!(
            "{ids}: {t} has no per-expert LoRA deltas, so there is no experts plot of it \
             (targets with experts: {})",
            list(split.iter().map(|s| s.to_string()))
        ))),
        None => split.first().map(|&s| s.clone()).ok_or_else(|| {
            Error::Other(format!(
                "{ids} has no per-expert LoRA deltas (targets: {}): nothing to draw in an experts \
                 plot; the layers plot shows every target",
                list(all.iter().map(|(t, _)| t.to_string()))
            ))
        }),
    }
}

/// A colour bar: the grid's scale, its caption and the swatches explained under it.
#[derive(Debug, Clone)]
struct Bar {
    scale: Scale,
    caption: String,
    /// The hatched "empty" swatch's label.
    empty_label: Option<&'static str>,
    /// The label of the swatch of cells with LoRA but no value, when some cell is one.
    present_label: Option<&'static str>,
    /// The health marks some cell carries (a swatch each).
    marks: Vec<grid::Mark>,
}

impl Bar {
    fn new(scale: Scale, caption: &str) -> Bar {
        Bar {
            scale,
            caption: caption.into(),
            empty_label: Some("no LoRA"),
            present_label: None,
            marks: vec![],
        }
    }

    /// Smallest to largest finite value (0…1 when there is none).
    fn sequential(values: impl Iterator<Item = f64>, caption: &str) -> Bar {
        let s = Scale::sequential(values).unwrap_or(Scale::fixed(0.0, 1.0, ScaleKind::Sequential));
        Bar::new(s, caption)
    }

    /// The scale of `measure` over `grids`, as the explorer draws it.
    fn of(measure: Measure, grids: &[&Grid]) -> Bar {
        let s = measure
            .scale(grids)
            .unwrap_or(Scale::fixed(0.0, 1.0, ScaleKind::Sequential));
        let mut b = Bar::new(s, measure.caption());
        b.marks = grid::Mark::ALL
            .into_iter()
            .filter(|m| grids.iter().any(|g| g.marks().contains(m)))
            .collect();
        if matches!(measure, Measure::Compare(_)) {
            b.empty_label = Some("not in both");
        }
        let k = measure.index();
        let present = grids.iter().any(|g| {
            (0..g.rows.len())
                .any(|r| (0..g.cols.len()).any(|c| g.kind(r, c, k) == CellKind::Present))
        });
        if present {
            b.present_label = Some(match measure {
                Measure::Delta(_) => "LoRA, no value (full tensor)",
                Measure::Compare(_) => "not comparable",
            });
        }
        b
    }

    #[cfg(test)]
    fn cosine() -> Bar {
        Bar::of(Measure::Compare(CompareMetric::Cosine), &[])
    }

    /// A value as written in a cell.
    fn label(&self, v: f64) -> String {
        if self.scale.kind == ScaleKind::Diverging {
            // Cosines: two decimals say enough, and −0.00 would be noise.
            let s = format!("{v:.2}");
            if s == "-0.00" {
                "0.00".into()
            } else {
                s
            }
        } else {
            sig3(v)
        }
    }

    fn color(&self, v: f64) -> RGBColor {
        rgb(self.scale.color(v))
    }
}

fn rgb(c: [u8; 3]) -> RGBColor {
    RGBColor(c[0], c[1], c[2])
}

/// Grouping of the spectrum's lines.
#[derive(Debug, Clone, Copy, PartialEq)]
enum GroupBy {
    Target,
    Layer,
    Expert,
}

/// A spectrum line: σ_k (geometric mean over its deltas) and the min–max band.
#[derive(Debug, Clone)]
struct Line {
    key: usize,
    points: Vec<(f64, f64)>,
    band: Vec<(f64, f64, f64)>,
}

/// How a spectrum figure groups deltas into lines, and a sentence saying so.
fn spectrum_grouping(sets: &[&AdapterStats], opts: &PlotOptions) -> (GroupBy, String) {
    let any_expert = |t: &str, l: Option<usize>| {
        sets.iter()
            .flat_map(|s| s.deltas.iter())
            .any(|d| d.target == t && d.expert.is_some() && l.is_none_or(|l| d.layer == Some(l)))
    };
    match (&opts.target, opts.layer) {
        (None, None) => (
            GroupBy::Target,
            "one line per target: geometric mean of σ_k over its layers and experts".into(),
        ),
        (None, Some(l)) => (
            GroupBy::Target,
            format!("layer {l}, one line per target (expert targets: geometric mean of σ_k over experts)"),
        ),
        (Some(t), None) => (
            GroupBy::Layer,
            if any_expert(t, None) {
                format!("{t}, one line per layer: geometric mean of σ_k over experts")
            } else {
                format!("{t}, one line per layer")
            },
        ),
        (Some(t), Some(l)) if any_expert(t, Some(l)) => {
            (GroupBy::Expert, format!("{t} at layer {l}, one line per expert"))
        }
        (Some(t), Some(l)) => (GroupBy::Target, format!("{t} at layer {l}")),
    }
}

/// The group key of a delta (target order index, layer or expert), or None if not selected.
fn group_key(d: &DeltaStats, by: GroupBy, opts: &PlotOptions, targets: &[Target]) -> Option<usize> {
    if opts.target.as_ref().is_some_and(|t| &d.target != t)
        || opts.layer.is_some_and(|l| d.layer != Some(l))
    {
        return None;
    }
    match by {
        GroupBy::Target => targets.iter().position(|t| *t == d.target),
        GroupBy::Layer => Some(d.layer.unwrap_or(usize::MAX)),
        GroupBy::Expert => d.expert,
    }
}

fn key_label(key: usize, by: GroupBy, targets: &[Target]) -> String {
    match by {
        GroupBy::Target => targets.get(key).map(Target::to_string).unwrap_or_default(),
        GroupBy::Layer if key == usize::MAX => "no layer".into(),
        GroupBy::Layer => format!("layer {key}"),
        GroupBy::Expert => format!("expert {key}"),
    }
}

fn spectrum_lines(
    s: &AdapterStats,
    by: GroupBy,
    opts: &PlotOptions,
    targets: &[Target],
) -> Vec<Line> {
    let mut groups: BTreeMap<usize, Vec<&DeltaStats>> = BTreeMap::new();
    for d in &s.deltas {
        if let Some(k) = group_key(d, by, opts, targets) {
            groups.entry(k).or_default().push(d);
        }
    }
    groups
        .into_iter()
        .filter_map(|(key, ds)| {
            let n = ds
                .iter()
                .map(|d| d.singular_values.len())
                .max()
                .unwrap_or(0);
            let (mut points, mut band) = (vec![], vec![]);
            for k in 0..n {
                // Zeros and non-finite values have no place on a log axis.
                let vals: Vec<f64> = ds
                    .iter()
                    .filter_map(|d| d.singular_values.get(k).copied())
                    .filter(|v| v.is_finite() && *v > 0.0)
                    .collect();
                if vals.is_empty() {
                    continue;
                }
                let g = (vals.iter().map(|v| v.ln()).sum::<f64>() / vals.len() as f64).exp();
                let lo = vals.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let x = (k + 1) as f64;
                points.push((x, g));
                band.push((x, lo, hi));
            }
            if ds.len() < 2 {
                band.clear();
            }
            (!points.is_empty()).then_some(Line { key, points, band })
        })
        .collect()
}

/// Ten distinct line colours (Tableau 10 with its grey, which reads as "empty", made black),
/// one per target in the model's order.
const PALETTE: [(u8, u8, u8); 10] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (23, 190, 207),
    (188, 189, 34),
    (20, 20, 20),
];

fn palette(key: usize) -> RGBColor {
    let (r, g, b) = PALETTE[key % PALETTE.len()];
    RGBColor(r, g, b)
}

/// More lines than this are drawn without their min–max bands.
const MAX_BANDS: usize = 6;

/// More lines than this get a colour bar instead of a legend.
const MAX_LEGEND: usize = 12;

/// How spectrum lines are coloured and explained.
enum LineColors {
    /// Fixed palette, a legend entry per line.
    Legend(Vec<(String, RGBColor)>),
    /// Viridis over the keys (layers or experts), explained by a colour bar.
    Bar(Bar),
}

impl LineColors {
    fn color(&self, key: usize) -> RGBColor {
        match self {
            LineColors::Legend(_) => palette(key),
            LineColors::Bar(s) => s.color(key as f64),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Figures

/// A figure ready to draw (all data validated).
enum Figure {
    Heat {
        title: String,
        subtitle: String,
        panels: Vec<(Panel, String, Grid)>,
        /// Which of the cells' values the panels show.
        value: usize,
        bar: Bar,
        cosine: Option<Grid>,
        row_title: &'static str,
        col_title: String,
    },
    Spectrum {
        title: String,
        subtitle: String,
        panels: Vec<(String, Vec<Line>)>,
        /// Whether lines carry their min–max band.
        bands: bool,
        colors: LineColors,
        cosine: Option<Grid>,
    },
}

/// A grid of the figures of `lorascope plot`: rows "none" outside any layer, no cell text.
fn figure_grid(rows: &[Option<usize>], cols: Vec<Col>, entries: &[Entry]) -> Grid {
    grid::assemble(
        String::new(),
        rows,
        "none",
        cols,
        entries,
        &mut |_, _, _| Default::default(),
    )
}

fn build(stats: &AdapterStats, compare: Option<CompareWith>, opts: &PlotOptions) -> Result<Figure> {
    let mut all: Vec<&AdapterStats> = vec![stats];
    all.extend(compare.map(|c| c.stats));
    let ids = match compare {
        Some(c) => format!("{} vs {}", stats.id, c.stats.id),
        None => stats.id.clone(),
    };
    check_selection(&ids, &all, opts)?;
    if opts.metric.needs_base() && (opts.base.is_none() || compare.is_some()) {
        return Err(Error::Other(format!(
            "{ids}: --metric {} is set against the base model, for one adapter at a time",
            opts.metric.as_str()
        )));
    }
    let sets: Vec<Vec<Entry>> = all
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let base = opts.base.as_deref().filter(|_| i == 0);
            grid::delta_entries_with(s, base, opts.layer)
        })
        .collect();
    let every = || sets.iter().flatten();
    let rows = match opts.layer {
        Some(l) => vec![Some(l)],
        None => grid::rows_of(every().map(|e| e.layer)),
    };
    let cos_items = compare.map(|c| grid::pair_entries(c.comparison, opts.layer));
    let panel_titles: Vec<(Panel, String)> = match compare {
        Some(c) => vec![
            (Panel::A, format!("a: {}", stats.id)),
            (Panel::B, format!("b: {}", c.stats.id)),
        ],
        None => vec![(Panel::Single, String::new())],
    };
    let all_targets = grid::targets_of(every().map(|e| (e.target, e.expert.is_some())));
    let only = opts.target.as_deref();
    let target_cols = |with_max| grid::target_cols(&all_targets, only, Labels::Figure { with_max });
    match opts.kind {
        PlotKind::Layers | PlotKind::Experts => {
            let (cols, cos_cols, title, subtitle, col_title) = if opts.kind == PlotKind::Layers {
                (
                    target_cols(true),
                    target_cols(false),
                    format!("{ids}: {} by layer and target", opts.metric.name()),
                    "expert targets: mean over the layer's experts and the largest expert (max) · \
                     hatched: no LoRA"
                        .to_string(),
                    TARGET_AXIS.to_string(),
                )
            } else {
                let t = expert_target(&ids, &all_targets, only)?;
                let experts = every().filter(|e| *e.target == t && e.expert.is_some());
                let cols = grid::expert_cols(experts.map(|e| e.expert), &t);
                (
                    cols.clone(),
                    cols,
                    format!("{ids}: {} of {t} by layer and expert", opts.metric.name()),
                    format!("one cell per expert's LoRA delta of {t} · hatched: no LoRA"),
                    format!("expert ({t})"),
                )
            };
            let panels: Vec<(Panel, String, Grid)> = panel_titles
                .into_iter()
                .zip(&sets)
                .map(|((p, t), items)| (p, t, figure_grid(&rows, cols.clone(), items)))
                .collect();
            let measure = Measure::Delta(opts.metric);
            let grids: Vec<&Grid> = panels.iter().map(|(_, _, g)| g).collect();
            let bar = Bar::of(measure, &grids);
            let cosine = cos_items.map(|c| figure_grid(&rows, cos_cols, &c));
            Ok(Figure::Heat {
                title,
                subtitle,
                panels,
                value: measure.index(),
                bar,
                cosine,
                row_title: "layer",
                col_title,
            })
        }
        PlotKind::Spectrum => {
            let (by, subtitle) = spectrum_grouping(&all, opts);
            let tnames: Vec<Target> = all_targets.iter().map(|(t, _)| t.clone()).collect();
            let panels: Vec<(String, Vec<Line>)> = panel_titles
                .into_iter()
                .zip(&all)
                .map(|((_, t), s)| (t, spectrum_lines(s, by, opts, &tnames)))
                .collect();
            if panels.iter().all(|(_, l)| l.is_empty()) {
                return Err(Error::Other(format!(
                    "{ids}: every selected delta is zero: no singular value to draw on a log axis"
                )));
            }
            let keys: BTreeSet<usize> = panels
                .iter()
                .flat_map(|(_, ls)| ls.iter().map(|l| l.key))
                .collect();
            let colors = if by == GroupBy::Target || keys.len() <= MAX_LEGEND {
                LineColors::Legend(
                    keys.iter()
                        .map(|&k| (key_label(k, by, &tnames), palette(k)))
                        .collect(),
                )
            } else {
                let caption = if by == GroupBy::Layer {
                    "layer"
                } else {
                    "expert"
                };
                let real = keys.iter().copied().filter(|&k| k != usize::MAX);
                let lo = real.clone().min().unwrap_or(0) as f64;
                let hi = real.max().unwrap_or(0) as f64;
                let mut s = Bar::sequential([lo, hi].into_iter(), caption);
                s.empty_label = None;
                LineColors::Bar(s)
            };
            let cosine = cos_items.map(|c| figure_grid(&rows, target_cols(false), &c));
            // Bands of many lines only blur into each other.
            let bands = panels.iter().all(|(_, l)| l.len() <= MAX_BANDS)
                && panels.iter().flat_map(|(_, l)| l).any(|l| l.band.len() > 1);
            let subtitle = if bands {
                subtitle + "; shaded: min–max"
            } else {
                subtitle
            };
            Ok(Figure::Spectrum {
                title: format!("{ids}: singular values of ΔW"),
                subtitle,
                bands,
                panels,
                colors,
                cosine,
            })
        }
    }
}

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
    pub col_title: &'a str,
}

impl GridView<'_> {
    fn figure(&self) -> Figure {
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
            row_title: "layer",
            col_title: self.col_title.to_string(),
        }
    }

    /// The file name [`export_grid`] writes: as [`file_name`], a comparison's metric named
    /// unless it is the cosine.
    pub fn file_name(&self) -> String {
        let metric = match self.measure {
            Measure::Delta(m) => m,
            Measure::Compare(_) => Metric::Fro,
        };
        let opts = PlotOptions {
            metric,
            target: self.target.map(String::from),
            ..PlotOptions::new(self.kind)
        };
        let name = file_name(self.id, self.compare_id, &opts);
        match self.measure {
            Measure::Compare(m) if m != CompareMetric::Cosine => {
                format!("{}-{}.png", name.trim_end_matches(".png"), m.as_str())
            }
            _ => name,
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

// ---------------------------------------------------------------------------------------------
// Drawing

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

fn draw_err(e: impl std::fmt::Display) -> Error {
    Error::Other(format!("drawing the plot failed: {e}"))
}

/// The embedded font, parsed once, with its cap height per pixel of size (for centring).
struct Typeface {
    font: FontRef<'static>,
    cap: f32,
}

fn typeface() -> Result<&'static Typeface> {
    static FACE: OnceLock<Option<Typeface>> = OnceLock::new();
    FACE.get_or_init(|| {
        let font = FontRef::try_from_slice(FONT_BYTES).ok()?;
        let h = font.glyph_id('H').with_scale(PxScale::from(100.0));
        let cap = font
            .outline_glyph(h)
            .map_or(0.63, |o| o.px_bounds().height() / 100.0);
        Some(Typeface { font, cap })
    })
    .as_ref()
    .ok_or_else(|| Error::Other("the embedded font could not be read".into()))
}

/// Glyphs of `s` at `size` with their pen positions, and the advance of the whole line.
fn layout(face: &Typeface, s: &str, size: f64) -> (Vec<(GlyphId, f32)>, f32) {
    let sf = face.font.as_scaled(PxScale::from(size as f32));
    let (mut caret, mut prev, mut out) = (0f32, None, Vec::new());
    for c in s.chars() {
        let id = sf.glyph_id(c);
        if let Some(p) = prev {
            caret += sf.kern(p, id);
        }
        out.push((id, caret));
        caret += sf.h_advance(id);
        prev = Some(id);
    }
    (out, caret)
}

/// Font sizes, scaled with the figure so that a larger export stays legible.
#[derive(Debug, Clone, Copy)]
struct Fonts {
    /// The figure's scale against 1200×800, for line widths and markers.
    scale: f64,
    title: f64,
    label: f64,
    tick: f64,
}

impl Fonts {
    fn for_size(w: u32, h: u32) -> Fonts {
        let s = (w as f64 / 1200.0).min(h as f64 / 800.0).clamp(0.6, 3.0);
        // Below about 10 px DejaVu stops being legible: small figures get crowded instead.
        Fonts {
            scale: s,
            title: (22.0 * s).max(13.0),
            label: (16.0 * s).max(11.0),
            tick: (14.0 * s).max(10.0),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Rect {
    x: i32,
    y: i32,
    w: i32,
    h: i32,
}

impl Rect {
    /// Splits off `w` pixels at the left.
    fn take_left(&mut self, w: i32) -> Rect {
        let w = w.min(self.w).max(0);
        let r = Rect { w, ..*self };
        self.x += w;
        self.w -= w;
        r
    }
}

const INK: RGBColor = RGBColor(30, 30, 30);
const GREY_TEXT: RGBColor = RGBColor(90, 90, 90);
const EMPTY_BG: RGBColor = RGBColor(238, 238, 238);
const EMPTY_HATCH: RGBColor = RGBColor(190, 190, 190);
/// Cells of non-finite deltas (NaN/inf): `view::grid::NONFINITE`, as on screen.
pub const NONFINITE: RGBColor =
    RGBColor(grid::NONFINITE[0], grid::NONFINITE[1], grid::NONFINITE[2]);

fn text_width(s: &str, size: f64) -> i32 {
    typeface().map_or((s.chars().count() as f64 * size * 0.6) as i32, |f| {
        layout(f, s, size).1.ceil() as i32
    })
}

/// Draws text centred on `(x, y)`, horizontally or reading upwards.
fn text(
    area: &Area,
    s: &str,
    (x, y): (i32, i32),
    size: f64,
    color: RGBColor,
    up: bool,
) -> Result<()> {
    text_at(area, s, (x, y), size, color, HPos::Center, up)
}

/// Draws text with its capitals centred on `y`, anchored left, centre or right at `x`, either
/// horizontal or reading upwards.
///
/// Glyphs are rasterised with ab_glyph here rather than through plotters, whose ab_glyph path
/// drops each glyph's side bearing and rounds pen positions, so digits such as "1" wobbled.
fn text_at(
    area: &Area,
    s: &str,
    (x, y): (i32, i32),
    size: f64,
    color: RGBColor,
    h: HPos,
    up: bool,
) -> Result<()> {
    let face = typeface()?;
    let (glyphs, width) = layout(face, s, size);
    // Text frame: u along the baseline from the anchor, v downwards; (0, 0) is the anchor.
    let u0 = match h {
        HPos::Left => 0.0,
        HPos::Center => -width / 2.0,
        HPos::Right => -width,
    };
    let base = face.cap * size as f32 / 2.0;
    let scale = PxScale::from(size as f32);
    for (id, caret) in glyphs {
        let g = id.with_scale_and_position(scale, point(u0 + caret, base));
        let Some(o) = face.font.outline_glyph(g) else {
            continue;
        };
        let b = o.px_bounds();
        let mut err = None;
        o.draw(|gx, gy, cov| {
            if cov <= 0.0 || err.is_some() {
                return;
            }
            let (u, v) = (b.min.x as i32 + gx as i32, b.min.y as i32 + gy as i32);
            let p = if up { (x + v, y - u) } else { (x + u, y + v) };
            if let Err(e) = area.draw_pixel(p, &color.mix(cov.min(1.0) as f64)) {
                err = Some(e);
            }
        });
        if let Some(e) = err {
            return Err(draw_err(e));
        }
    }
    Ok(())
}

/// Shortens `s` with "…" until it fits in `max` pixels, after trying a smaller font.
fn fit(s: &str, size: f64, max: i32) -> (String, f64) {
    let mut size = size;
    while text_width(s, size) > max && size > 10.0 {
        size *= 0.92;
    }
    if text_width(s, size) <= max {
        return (s.to_string(), size);
    }
    let chars: Vec<char> = s.chars().collect();
    let mut n = chars.len();
    while n > 1 {
        n -= 1;
        let t: String = chars[..n].iter().collect::<String>() + "…";
        if text_width(&t, size) <= max {
            return (t, size);
        }
    }
    ("…".into(), size)
}

fn draw(root: &Area, fig: &Figure, (w, h): (u32, u32), cells: &mut Vec<Cell>) -> Result<()> {
    let f = Fonts::for_size(w, h);
    let (title, subtitle) = match fig {
        Figure::Heat {
            title, subtitle, ..
        }
        | Figure::Spectrum {
            title, subtitle, ..
        } => (title, subtitle),
    };
    let pad = (f.tick * 0.8) as i32;
    let (t, ts) = fit(title, f.title, w as i32 - 2 * pad);
    let ty = pad + (ts * 0.7) as i32;
    text(root, &t, (w as i32 / 2, ty), ts, INK, false)?;
    let (st, ss) = fit(subtitle, f.tick, w as i32 - 2 * pad);
    let sy = ty + (ts * 0.6 + ss * 1.0) as i32;
    text(root, &st, (w as i32 / 2, sy), ss, GREY_TEXT, false)?;
    let top = sy + (ss * 1.2) as i32;
    let mut body = Rect {
        x: pad,
        y: top,
        w: w as i32 - 2 * pad,
        h: h as i32 - top - pad,
    };
    let bar_w = (f.tick * 9.0) as i32;
    match fig {
        Figure::Heat {
            panels,
            value,
            bar,
            cosine,
            row_title,
            col_title,
            ..
        } => {
            let n = (panels.len() + usize::from(cosine.is_some())) as i32;
            let bars = 1 + i32::from(cosine.is_some());
            let pw = (body.w - bars * bar_w) / n;
            let mut span = None;
            for (panel, ptitle, grid) in panels {
                let r = body.take_left(pw);
                let hm = Heatmap {
                    panel: *panel,
                    title: ptitle,
                    grid,
                    value: *value,
                    bar,
                    row_title,
                    col_title,
                };
                span = Some(draw_heatmap(root, r, &hm, f, cells)?);
            }
            let bar_r = body.take_left(bar_w);
            if let Some((y0, y1)) = span {
                draw_colorbar(root, bar_r, (y0, y1), bar, f)?;
            }
            if let Some(cg) = cosine {
                let title = "cosine(ΔW_a, ΔW_b)";
                draw_cosine(root, &mut body, (pw, bar_w), cg, title, col_title, f, cells)?;
            }
        }
        Figure::Spectrum {
            panels,
            bands,
            colors,
            cosine,
            ..
        } => {
            let (lo, hi, xmax) = spectrum_range(panels, *bands);
            let legend_w = match colors {
                LineColors::Legend(e) => legend_width(e, f),
                LineColors::Bar(_) => bar_w,
            };
            let n = (panels.len() + usize::from(cosine.is_some())) as i32;
            let extra = legend_w + if cosine.is_some() { bar_w } else { 0 };
            let pw = (body.w - extra) / n;
            let mut plot_span = (body.y, body.y + body.h);
            for (ptitle, lines) in panels {
                let r = body.take_left(pw);
                plot_span =
                    draw_spectrum(root, r, ptitle, lines, *bands, colors, (lo, hi), xmax, f)?;
            }
            let lr = body.take_left(legend_w);
            match colors {
                LineColors::Legend(e) => draw_legend(root, lr, plot_span.0, e, f)?,
                LineColors::Bar(s) => draw_colorbar(root, lr, plot_span, s, f)?,
            }
            if let Some(cg) = cosine {
                let (title, cols) = ("cosine(ΔW_a, ΔW_b), mean over experts", TARGET_AXIS);
                draw_cosine(root, &mut body, (pw, bar_w), cg, title, cols, f, cells)?;
            }
        }
    }
    Ok(())
}

/// The cosine heatmap of a comparison and its colour bar, taken from the left of `body`.
#[allow(clippy::too_many_arguments)]
fn draw_cosine(
    root: &Area,
    body: &mut Rect,
    (pw, bar_w): (i32, i32),
    grid: &Grid,
    title: &str,
    col_title: &str,
    f: Fonts,
    cells: &mut Vec<Cell>,
) -> Result<()> {
    let cs = Bar::of(Measure::Compare(CompareMetric::Cosine), &[grid]);
    let hm = Heatmap {
        panel: Panel::Cosine,
        title,
        grid,
        value: CompareMetric::Cosine.index(),
        bar: &cs,
        row_title: "layer",
        col_title,
    };
    let span = draw_heatmap(root, body.take_left(pw), &hm, f, cells)?;
    draw_colorbar(root, body.take_left(bar_w), span, &cs, f)
}

/// The column axis title of target heatmaps.
pub const TARGET_AXIS: &str = "target (_proj omitted)";

/// One heatmap panel: the routine behind the layers, experts and cosine maps.
struct Heatmap<'a> {
    panel: Panel,
    title: &'a str,
    grid: &'a Grid,
    /// Which of the cells' values to draw.
    value: usize,
    bar: &'a Bar,
    row_title: &'a str,
    col_title: &'a str,
}

/// How column labels fit under the cells.
enum ColLabels {
    /// Horizontal, one or two lines, every `step`-th column.
    Flat { size: f64, step: usize },
    /// Reading upwards, one line each.
    Up { size: f64 },
}

/// A panel's title centred at the top of `r`, shrunk to fit; returns where the panel's content
/// starts below it, or None when there is no title.
fn panel_title(root: &Area, title: &str, r: Rect, f: Fonts) -> Result<Option<i32>> {
    if title.is_empty() {
        return Ok(None);
    }
    let gap = (f.tick * 0.5) as i32;
    let (t, s) = fit(title, f.label, r.w - gap);
    let y = r.y + (f.label * 0.8) as i32;
    text(root, &t, (r.x + r.w / 2, y), s, INK, false)?;
    Ok(Some(r.y + (f.label * 1.8) as i32))
}

/// Draws a heatmap into `r`; returns the vertical extent of its cells (for the colour bar).
fn draw_heatmap(
    root: &Area,
    r: Rect,
    hm: &Heatmap,
    f: Fonts,
    cells: &mut Vec<Cell>,
) -> Result<(i32, i32)> {
    let g = hm.grid;
    let gap = (f.tick * 0.5) as i32;
    let top = panel_title(root, hm.title, r, f)?.unwrap_or(r.y);
    // Left: axis title (reading upwards), then row labels right-aligned against the cells.
    let row_w = g
        .rows
        .iter()
        .map(|l| text_width(l, f.tick))
        .max()
        .unwrap_or(0);
    let left = r.x + (f.label * 1.6) as i32 + row_w + gap;
    let ncols = g.cols.len().max(1) as i32;
    let nrows = g.rows.len().max(1) as i32;
    let right = r.x + r.w - gap;
    let cw = (right - left) as f64 / ncols as f64;
    // Column labels: flat if they fit (shrinking to 80 %), else thinned (numbers) or upright.
    let widest = |size: f64| {
        g.cols
            .iter()
            .flat_map(|c| c.lines())
            .map(|l| text_width(l, size))
            .max()
            .unwrap_or(0)
    };
    let numeric = g.cols.iter().all(|c| {
        c.lines()
            .iter()
            .all(|l| l.chars().all(|ch| ch.is_ascii_digit()))
    });
    let lines = g.cols.iter().map(|c| c.lines().len()).max().unwrap_or(1) as i32;
    let labels = if widest(f.tick) as f64 <= cw - 4.0 {
        ColLabels::Flat {
            size: f.tick,
            step: 1,
        }
    } else if widest(f.tick * 0.8) as f64 <= cw - 4.0 {
        ColLabels::Flat {
            size: f.tick * 0.8,
            step: 1,
        }
    } else if numeric {
        let step = ((widest(f.tick) as f64 + 8.0) / cw.max(1.0)).ceil() as usize;
        ColLabels::Flat {
            size: f.tick,
            step: nice_step(step),
        }
    } else {
        ColLabels::Up { size: f.tick }
    };
    let label_h = match &labels {
        ColLabels::Flat { size, .. } => (*size * 1.25 * lines as f64) as i32,
        ColLabels::Up { size } => g
            .cols
            .iter()
            .map(|c| text_width(&c.lines().join(" "), *size))
            .max()
            .unwrap_or(0),
    };
    let bottom = r.y + r.h - gap - (f.label * 1.5) as i32 - label_h;
    let rh = (bottom - top) as f64 / nrows as f64;
    let xe = |i: i32| left + (i as f64 * cw).round() as i32;
    let ye = |j: i32| top + (j as f64 * rh).round() as i32;
    // 1-pixel white gaps keep neighbouring cells of similar colour apart.
    let sep = i32::from(cw >= 6.0 && rh >= 6.0);
    // Values are written in the cells only when every one fits: a map with numbers in some cells
    // and not in others reads as if the blank ones were special.
    let cell_font = f.tick.min(rh * 0.62);
    let min_w = (0..ncols)
        .map(|i| xe(i + 1) - xe(i) - sep)
        .min()
        .unwrap_or(0);
    let k = [hm.value];
    let annotate = cell_font >= 9.0
        && g.finite(&k)
            .all(|v| text_width(&hm.bar.label(v), cell_font) + 6 <= min_w);
    for j in 0..g.rows.len() {
        for i in 0..g.cols.len() {
            let kind = g.kind(j, i, hm.value);
            let (x0, x1, y0, y1) = (
                xe(i as i32),
                xe(i as i32 + 1),
                ye(j as i32),
                ye(j as i32 + 1),
            );
            let (cx1, cy1) = (x1 - sep, y1 - sep);
            let (v, fill) = match kind {
                CellKind::Empty => (None, None),
                // A figure is drawn from finished statistics; a pending value has none yet.
                CellKind::Present | CellKind::Pending => {
                    (None, Some(rgb(grid::present_color(g.cols[i].emphasis))))
                }
                CellKind::Value(v) => (Some(v), Some(hm.bar.color(v))),
                CellKind::NonFinite => (None, Some(NONFINITE)),
            };
            match fill {
                Some(c) => root
                    .draw(&Rectangle::new([(x0, y0), (cx1 - 1, cy1 - 1)], c.filled()))
                    .map_err(draw_err)?,
                None => hatch(root, (x0, y0, cx1, cy1))?,
            }
            let mark = g.cell(j, i).and_then(|c| c.mark);
            if let Some(m) = mark.filter(|_| kind != CellKind::NonFinite) {
                let ink = match fill {
                    Some(c) if luminance(c) <= 0.5 => WHITE,
                    _ => INK,
                };
                let size = ((cx1 - x0).min(cy1 - y0) / 3).max(2);
                mark_shape(root, m, ((x0 + cx1) / 2, (y0 + cy1) / 2), size, ink)?;
            } else if let (Some(val), Some(c), true) = (v, fill, annotate) {
                let ink = if luminance(c) > 0.5 { INK } else { WHITE };
                let s = hm.bar.label(val);
                text(
                    root,
                    &s,
                    ((x0 + cx1) / 2, (y0 + cy1) / 2),
                    cell_font,
                    ink,
                    false,
                )?;
            }
            cells.push(Cell {
                panel: hm.panel,
                row: g.rows[j].clone(),
                col: g.cols[i].lines().join(" "),
                x0,
                y0,
                x1: cx1,
                y1: cy1,
                value: v,
                fill: fill.map(|c| [c.0, c.1, c.2]),
            });
        }
    }
    // Row labels: every row if they fit, else a readable subset.
    let rstep = nice_step(((f.tick * 1.2) / rh.max(1.0)).ceil() as usize);
    for (j, l) in g.rows.iter().enumerate() {
        if j % rstep == 0 {
            let y = (ye(j as i32) + ye(j as i32 + 1)) / 2;
            text_at(
                root,
                l,
                (left - gap / 2 - 2, y),
                f.tick,
                INK,
                HPos::Right,
                false,
            )?;
        }
    }
    text(
        root,
        hm.row_title,
        (r.x + (f.label * 0.7) as i32, (top + bottom) / 2),
        f.label,
        INK,
        true,
    )?;
    match labels {
        ColLabels::Flat { size, step } => {
            for (i, c) in g.cols.iter().enumerate() {
                if i % step != 0 {
                    continue;
                }
                let x = (xe(i as i32) + xe(i as i32 + 1)) / 2;
                for (k, l) in c.lines().iter().enumerate() {
                    let y = bottom + gap / 2 + (size * (0.65 + 1.2 * k as f64)) as i32;
                    let ink = if k == 0 { INK } else { GREY_TEXT };
                    text(root, l, (x, y), size, ink, false)?;
                }
            }
        }
        ColLabels::Up { size } => {
            for (i, c) in g.cols.iter().enumerate() {
                let x = (xe(i as i32) + xe(i as i32 + 1)) / 2;
                let l = c.lines().join(" ");
                let y = bottom + gap / 2 + text_width(&l, size) / 2;
                text(root, &l, (x, y), size, INK, true)?;
            }
        }
    }
    text(
        root,
        hm.col_title,
        (
            (left + right) / 2,
            bottom + gap + label_h + (f.label * 0.8) as i32,
        ),
        f.label,
        INK,
        false,
    )?;
    Ok((top, bottom))
}

/// An empty cell: light grey with diagonal hatching.
fn hatch(root: &Area, (x0, y0, x1, y1): (i32, i32, i32, i32)) -> Result<()> {
    let (w, h) = (x1 - x0, y1 - y0);
    if w <= 0 || h <= 0 {
        return Ok(());
    }
    root.draw(&Rectangle::new(
        [(x0, y0), (x1 - 1, y1 - 1)],
        EMPTY_BG.filled(),
    ))
    .map_err(draw_err)?;
    let step = 8;
    let mut s = -(h / step) * step;
    while s < w {
        // The line x − x0 = s + (y − y0), clipped to the cell.
        let u0 = (-s).max(0);
        let u1 = (w - 1 - s).min(h - 1);
        if u1 >= u0 {
            root.draw(&PathElement::new(
                vec![(x0 + s + u0, y0 + u0), (x0 + s + u1, y0 + u1)],
                EMPTY_HATCH,
            ))
            .map_err(draw_err)?;
        }
        s += step;
    }
    Ok(())
}

fn luminance(c: RGBColor) -> f64 {
    (0.2126 * c.0 as f64 + 0.7152 * c.1 as f64 + 0.0722 * c.2 as f64) / 255.0
}

/// 1, 2, 5, 10, 20, … at least `n`.
fn nice_step(n: usize) -> usize {
    let mut m = 1;
    loop {
        for k in [1, 2, 5] {
            if k * m >= n {
                return k * m;
            }
        }
        m *= 10;
    }
}

/// Three significant digits, switching to exponents for very small or large values.
fn sig3(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return if v == 0.0 { "0".into() } else { v.to_string() };
    }
    let e = v.abs().log10().floor() as i32;
    if !(-3..5).contains(&e) {
        format!("{v:.2e}")
    } else {
        format!("{v:.*}", (2 - e).max(0) as usize)
    }
}

/// About `n` round tick values between `lo` and `hi`, with their label precision.
fn nice_ticks(lo: f64, hi: f64, n: usize) -> (Vec<f64>, usize) {
    if !(lo.is_finite() && hi.is_finite()) || hi <= lo {
        return (vec![], 0);
    }
    let raw = (hi - lo) / n.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    let ticks = (first..=last).map(|i| i as f64 * step).collect();
    // Digits after the point that the step needs (2.5 × 10^k needs one more).
    let mut dec = (-(step.log10().floor()) as i32).max(0) as usize;
    if ((step / mag) - 2.5).abs() < 1e-9 {
        dec += 1;
    }
    (ticks, dec)
}

fn tick_label(v: f64, dec: usize) -> String {
    let a = v.abs();
    if a != 0.0 && !(1e-4..1e5).contains(&a) {
        format!("{v:.1e}")
    } else {
        format!("{v:.dec$}")
    }
}

/// A vertical colour bar beside cells spanning `(y0, y1)`, with ticks, caption and the
/// empty-cell swatch.
fn draw_colorbar(root: &Area, r: Rect, (y0, y1): (i32, i32), b: &Bar, f: Fonts) -> Result<()> {
    let s = &b.scale;
    let bw = (f.tick * 1.6) as i32;
    let x0 = r.x + (f.tick * 0.6) as i32;
    let h = (y1 - y0).max(1);
    for y in y0..y1 {
        // Top is the high end.
        let v = s.hi - (y - y0) as f64 / h as f64 * (s.hi - s.lo);
        root.draw(&PathElement::new(
            vec![(x0, y), (x0 + bw - 1, y)],
            b.color(v),
        ))
        .map_err(draw_err)?;
    }
    root.draw(&Rectangle::new([(x0, y0), (x0 + bw - 1, y1 - 1)], INK))
        .map_err(draw_err)?;
    let (ticks, dec) = nice_ticks(s.lo, s.hi, 5);
    let mut label_w = 0;
    for t in ticks {
        let y = y1 - 1 - ((t - s.lo) / (s.hi - s.lo) * (h - 1) as f64).round() as i32;
        root.draw(&PathElement::new(vec![(x0 + bw, y), (x0 + bw + 4, y)], INK))
            .map_err(draw_err)?;
        let l = tick_label(t, dec);
        label_w = label_w.max(text_width(&l, f.tick));
        text_at(root, &l, (x0 + bw + 7, y), f.tick, INK, HPos::Left, false)?;
    }
    let cx = x0 + bw + 7 + label_w + (f.label * 0.9) as i32;
    let (cap, cs) = fit(&b.caption, f.label, h);
    text(root, &cap, (cx, (y0 + y1) / 2), cs, INK, true)?;
    // Swatches under the bar: hatched for empty cells, magenta for non-finite ones.
    let sw = (f.tick * 1.3) as i32;
    let mut sy = y1 + (f.tick * 0.8) as i32;
    // Each swatch says where it went (health marks are drawn over theirs).
    let mut swatch = |fill: Option<RGBColor>, label: &str| -> Result<i32> {
        match fill {
            Some(c) => root
                .draw(&Rectangle::new(
                    [(x0, sy), (x0 + sw - 1, sy + sw - 1)],
                    c.filled(),
                ))
                .map_err(draw_err)?,
            None => hatch(root, (x0, sy, x0 + sw, sy + sw))?,
        }
        root.draw(&Rectangle::new([(x0, sy), (x0 + sw - 1, sy + sw - 1)], INK))
            .map_err(draw_err)?;
        let (t, ts) = fit(label, f.tick, r.x + r.w - (x0 + sw + 5));
        text_at(
            root,
            &t,
            (x0 + sw + 5, sy + sw / 2),
            ts,
            INK,
            HPos::Left,
            false,
        )?;
        let at = sy;
        sy += sw + (f.tick * 0.5) as i32;
        Ok(at)
    };
    if let Some(l) = b.empty_label {
        swatch(None, l)?;
    }
    if let Some(l) = b.present_label {
        swatch(Some(rgb(grid::PRESENT)), l)?;
    }
    if s.nonfinite {
        swatch(Some(NONFINITE), "non-finite (NaN/inf)")?;
    }
    for &m in &b.marks {
        let y = swatch(Some(WHITE), m.label())?;
        mark_shape(root, m, (x0 + sw / 2, y + sw / 2), (sw / 3).max(2), INK)?;
    }
    Ok(())
}

/// A cell's health mark, as a shape (fonts need not hold the screen's glyphs): a ring for a
/// dead delta, a triangle for an outlier, a cross for a non-finite one.
fn mark_shape(root: &Area, m: grid::Mark, at: (i32, i32), size: i32, ink: RGBColor) -> Result<()> {
    let style = ink.stroke_width(2);
    match m {
        grid::Mark::Dead => root.draw(&Circle::new(at, size, style)),
        grid::Mark::Outlier => root.draw(&TriangleMarker::new(at, size, ink.filled())),
        grid::Mark::NonFinite => root.draw(&Cross::new(at, size, style)),
    }
    .map_err(draw_err)
}

fn legend_width(entries: &[(String, RGBColor)], f: Fonts) -> i32 {
    let w = entries
        .iter()
        .map(|(l, _)| text_width(l, f.tick))
        .max()
        .unwrap_or(0);
    w + (f.tick * 4.0) as i32
}

fn draw_legend(
    root: &Area,
    r: Rect,
    top: i32,
    entries: &[(String, RGBColor)],
    f: Fonts,
) -> Result<()> {
    let x = r.x + (f.tick * 0.8) as i32;
    let dy = (f.tick * 1.6) as i32;
    for (i, (l, c)) in entries.iter().enumerate() {
        let y = top + dy / 2 + i as i32 * dy;
        let seg = (f.tick * 1.8) as i32;
        root.draw(&PathElement::new(
            vec![(x, y), (x + seg, y)],
            c.stroke_width((3.0 * f.scale).round().max(2.0) as u32),
        ))
        .map_err(draw_err)?;
        text_at(root, l, (x + seg + 6, y), f.tick, INK, HPos::Left, false)?;
    }
    Ok(())
}

/// The shared axes of the spectrum panels: (σ min, σ max, largest index).
fn spectrum_range(panels: &[(String, Vec<Line>)], bands: bool) -> (f64, f64, usize) {
    let (mut lo, mut hi, mut n) = (f64::INFINITY, 0.0f64, 1usize);
    for l in panels.iter().flat_map(|(_, ls)| ls.iter()) {
        for &(x, y) in &l.points {
            lo = lo.min(y);
            hi = hi.max(y);
            n = n.max(x as usize);
        }
        for &(_, a, b) in l.band.iter().filter(|_| bands) {
            lo = lo.min(a);
            hi = hi.max(b);
        }
    }
    if !(lo.is_finite() && hi > 0.0) {
        return (0.1, 10.0, n);
    }
    // Room above and below; a flat spectrum still spans a decade.
    let mid = (lo * hi).sqrt();
    let half = ((hi / lo).sqrt() * 1.5).max(10f64.sqrt());
    (mid / half, mid * half, n)
}

/// One spectrum panel: plotters maps coordinates (log y) and draws the series; axes, grid and
/// labels are drawn here so that all text goes through [`text_at`]. Returns the plot's y extent.
#[allow(clippy::too_many_arguments)]
fn draw_spectrum(
    root: &Area,
    r: Rect,
    title: &str,
    lines: &[Line],
    bands: bool,
    colors: &LineColors,
    (lo, hi): (f64, f64),
    xmax: usize,
    f: Fonts,
) -> Result<(i32, i32)> {
    let gap = (f.tick * 0.5) as i32;
    let top = panel_title(root, title, r, f)?.unwrap_or(r.y + gap);
    let yt = log_ticks(lo, hi);
    let label_w = yt
        .iter()
        .map(|&y| text_width(&sig_log(y), f.tick))
        .max()
        .unwrap_or(0);
    let left = r.x + (f.label * 1.6) as i32 + label_w + gap + 6;
    let right = r.x + r.w - gap;
    let bottom = r.y + r.h - gap - (f.label * 1.6) as i32 - (f.tick * 1.8) as i32;
    let area = root.clone().shrink(
        (left, top),
        ((right - left).max(1) as u32, (bottom - top).max(1) as u32),
    );
    let mut chart = ChartBuilder::on(&area)
        .build_cartesian_2d(0.5f64..xmax as f64 + 0.5, (lo..hi).log_scale())
        .map_err(draw_err)?;
    let hline = |y: i32, c: RGBColor| {
        root.draw(&PathElement::new(vec![(left, y), (right - 1, y)], c))
            .map_err(draw_err)
    };
    let vline = |x: i32, c: RGBColor| {
        root.draw(&PathElement::new(vec![(x, top), (x, bottom - 1)], c))
            .map_err(draw_err)
    };
    // Grid: minor lines at 2…9 × 10^k when few decades are shown, major at the labels.
    let (e0, e1) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    if e1 - e0 <= 4 {
        for e in e0..=e1 {
            for m in 2..10 {
                let y = m as f64 * 10f64.powi(e);
                if y > lo && y < hi {
                    hline(chart.backend_coord(&(1.0, y)).1, GRID_MINOR)?;
                }
            }
        }
    }
    for &y in &yt {
        let py = chart.backend_coord(&(1.0, y)).1;
        hline(py, GRID_MAJOR)?;
        root.draw(&PathElement::new(vec![(left - 5, py), (left - 1, py)], INK))
            .map_err(draw_err)?;
        text_at(
            root,
            &sig_log(y),
            (left - 8, py),
            f.tick,
            INK,
            HPos::Right,
            false,
        )?;
    }
    for k in x_ticks(xmax) {
        let px = chart.backend_coord(&(k as f64, lo)).0;
        vline(px, GRID_MAJOR)?;
        root.draw(&PathElement::new(vec![(px, bottom), (px, bottom + 4)], INK))
            .map_err(draw_err)?;
        let ty = bottom + 6 + (f.tick * 0.6) as i32;
        text(root, &k.to_string(), (px, ty), f.tick, INK, false)?;
    }
    root.draw(&PathElement::new(
        vec![(left, top), (left, bottom), (right - 1, bottom)],
        INK,
    ))
    .map_err(draw_err)?;
    let xdesc_y = bottom + 6 + (f.tick * 1.4 + f.label * 0.8) as i32;
    text(
        root,
        "k (index of σ_k, largest first)",
        ((left + right) / 2, xdesc_y),
        f.label,
        INK,
        false,
    )?;
    let (yd, ys) = fit("σ_k of ΔW (weight units, log scale)", f.label, bottom - top);
    text(
        root,
        &yd,
        (r.x + (f.label * 0.7) as i32, (top + bottom) / 2),
        ys,
        INK,
        true,
    )?;
    if lines.is_empty() {
        // One side of a comparison may have nothing in the selection: say so.
        let (cx, cy) = ((left + right) / 2, (top + bottom) / 2);
        text(
            root,
            "no LoRA delta in this selection",
            (cx, cy),
            f.label,
            GREY_TEXT,
            false,
        )?;
    }
    for l in lines.iter().filter(|l| bands && l.band.len() > 1) {
        let c = colors.color(l.key);
        let mut poly: Vec<(f64, f64)> = l.band.iter().map(|&(x, a, _)| (x, a)).collect();
        poly.extend(l.band.iter().rev().map(|&(x, _, b)| (x, b)));
        chart
            .draw_series(std::iter::once(Polygon::new(poly, c.mix(0.12).filled())))
            .map_err(draw_err)?;
    }
    let (stroke, radius) = (
        (2.0 * f.scale).round() as u32,
        (3.0 * f.scale).round() as u32,
    );
    for l in lines {
        let c = colors.color(l.key);
        chart
            .draw_series(LineSeries::new(
                l.points.iter().copied(),
                c.stroke_width(stroke.max(1)),
            ))
            .map_err(draw_err)?;
        if l.points.len() <= 64 {
            chart
                .draw_series(
                    l.points
                        .iter()
                        .map(|&p| Circle::new(p, radius.max(2), c.filled())),
                )
                .map_err(draw_err)?;
        }
    }
    Ok((top, bottom))
}

const GRID_MAJOR: RGBColor = RGBColor(215, 215, 215);
const GRID_MINOR: RGBColor = RGBColor(240, 240, 240);

/// Indices to label on the k axis: all up to 10, else 1 and round multiples.
fn x_ticks(n: usize) -> Vec<usize> {
    let step = nice_step(n.div_ceil(10));
    let mut v: Vec<usize> = (1..=n).filter(|k| k % step == 0).collect();
    if step > 1 {
        v.insert(0, 1);
    }
    v
}

/// Values to label on a log axis: powers of ten (at most 8), with 2 and 5 × 10^k added when the
/// range holds fewer than three of them.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    if !(lo > 0.0 && hi > lo && hi.is_finite()) {
        return vec![];
    }
    let (e0, e1) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    let inside = |t: &f64| *t >= lo * (1.0 - 1e-9) && *t <= hi * (1.0 + 1e-9);
    let decades: Vec<f64> = (e0..=e1).map(|e| 10f64.powi(e)).filter(inside).collect();
    if decades.len() >= 3 {
        let step = decades.len().div_ceil(8);
        return decades.into_iter().step_by(step).collect();
    }
    (e0..=e1)
        .flat_map(|e| [1.0, 2.0, 5.0].map(|m| m * 10f64.powi(e)))
        .filter(inside)
        .collect()
}

/// Log-axis labels: `0.01`, `0.5`, `20`, or `1e-4` outside [0.01, 10⁴).
fn sig_log(y: f64) -> String {
    if y.is_nan() || y <= 0.0 {
        return String::new();
    }
    if (1e-2..1e4).contains(&y) {
        let s = format!("{y:.3}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        s.to_string()
    } else {
        let e = y.log10().floor() as i32;
        let m = y / 10f64.powi(e);
        if (m - m.round()).abs() < 1e-6 {
            format!("{}e{e}", m.round())
        } else {
            format!("{m:.1}e{e}")
        }
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
