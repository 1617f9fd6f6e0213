//! Timeline figures (`PlotKind::Timeline`): a training run's layers × steps heatmap (the grid of
//! `view::timeline`, drawn by `heatmap`), the chosen deltas' lines under it and the trainer's
//! loss under them, on one step axis: a checkpoint's x in the line panels is its heatmap column's
//! centre, read back from the cells drawn.

use super::canvas::Rect;
use super::spectrum::{palette, GRID_MAJOR};
use super::*;
use crate::run::timeline::{DeltaTimeline, Timeline};
use crate::view::timeline as tlgrid;

/// Without `--layer`, lines for the deltas largest at the last step: this many.
const TOP_LINES: usize = 6;
/// With `--layer`, at most this many lines (the largest at the last step).
const MAX_LINES: usize = 8;

/// One line over the steps: a value (or nothing) per checkpoint.
pub(super) struct Series {
    label: String,
    color: RGBColor,
    values: Vec<Option<f64>>,
}

/// A timeline figure ready to draw.
pub(super) struct TimelineFigure {
    grid: Grid,
    measure: Measure,
    bar: Bar,
    lines: Vec<Series>,
    caption: &'static str,
    /// Nonnegative values: the y axis starts at 0.
    from_zero: bool,
    /// Fixed y range (similarities).
    fixed: Option<(f64, f64)>,
    /// The loss per checkpoint; None when the run logged none.
    loss: Option<Vec<Option<f64>>>,
    steps: Vec<String>,
}

/// The last ‖ΔW‖_F measured for a delta (lines are picked by it).
fn last_norm(d: &DeltaTimeline) -> f64 {
    d.steps
        .iter()
        .rev()
        .find_map(|s| s.fro_norm)
        .unwrap_or(f64::NEG_INFINITY)
}

fn line_label(d: &DeltaTimeline) -> String {
    let mut s = match d.layer {
        Some(l) => format!("L{l} {}", d.target.short()),
        None => d.target.short().to_string(),
    };
    if let Some(e) = d.expert {
        s.push_str(&format!(" e{e}"));
    }
    s
}

/// Checks the selection and shapes the figure: title, subtitle and panels.
pub(super) fn build_timeline(tl: &Timeline, opts: &PlotOptions) -> Result<Figure> {
    let id = &tl.run;
    if tl.deltas.is_empty() {
        return Err(Error::Other(format!(
            "{id}: no LoRA delta in the run's checkpoints (none could be read)"
        )));
    }
    let target = opts.target.as_deref();
    if let Some(t) = target {
        if !tl.deltas.iter().any(|d| d.target == t) {
            let ts: BTreeSet<&Target> = tl.deltas.iter().map(|d| &d.target).collect();
            return Err(Error::Other(format!(
                "{id}: no delta with target {t} (targets: {})",
                list(ts.into_iter().map(Target::to_string))
            )));
        }
    }
    let mine = |d: &&DeltaTimeline| target.is_none_or(|t| d.target == t);
    if let Some(l) = opts.layer {
        if !tl.deltas.iter().filter(mine).any(|d| d.layer == Some(l)) {
            let ls: BTreeSet<usize> = tl
                .deltas
                .iter()
                .filter(mine)
                .filter_map(|d| d.layer)
                .collect();
            return Err(Error::Other(format!(
                "{id}: no delta{} at layer {l} (layers: {})",
                target.map_or(String::new(), |t| format!(" of {t}")),
                list_layers(&ls)
            )));
        }
    }
    let m = opts.step_metric;
    let measure = Measure::Step(m);
    let grid = tlgrid::layer_step_grid(tl, target);
    let bar = Bar::of(measure, &[&grid]);
    let mut cand: Vec<&DeltaTimeline> = tl
        .deltas
        .iter()
        .filter(mine)
        .filter(|d| opts.layer.is_none_or(|l| d.layer == Some(l)))
        .collect();
    let n = cand.len();
    cand.sort_by(|a, b| last_norm(b).total_cmp(&last_norm(a)));
    let keep = if opts.layer.is_some() {
        MAX_LINES
    } else {
        TOP_LINES
    };
    cand.truncate(keep);
    let lines: Vec<Series> = cand
        .iter()
        .enumerate()
        .map(|(i, d)| Series {
            label: line_label(d),
            color: palette(i),
            values: tlgrid::delta_series(tl, d, m),
        })
        .collect();
    let of = target.map_or(String::new(), |t| format!(" of {t}"));
    let which = match opts.layer {
        Some(l) if n > cand.len() => {
            format!(
                "layer {l}'s {} deltas{of} largest at the last step (of {n})",
                cand.len()
            )
        }
        Some(l) => format!("layer {l}'s deltas{of}"),
        None => format!("the {} deltas{of} largest at the last step", cand.len()),
    };
    let loss: Vec<Option<f64>> = tl.checkpoints.iter().map(|c| c.loss).collect();
    let (first, last) = (
        tl.checkpoints.first().map_or(0, |c| c.step),
        tl.checkpoints.last().map_or(0, |c| c.step),
    );
    let title = format!(
        "{id}: {} by layer and step{}",
        m.name(),
        target.map_or(String::new(), |t| format!(" ({t})"))
    );
    let subtitle = format!(
        "{} checkpoints ({}), steps {first}–{last} · cells: {} · lines: {which}",
        tl.checkpoints.len(),
        tl.scheme.as_str(),
        tlgrid::aggregation(m)
    );
    let fig = TimelineFigure {
        steps: grid.cols.iter().map(|c| c.label.clone()).collect(),
        grid,
        measure,
        bar,
        lines,
        caption: m.label(),
        from_zero: !matches!(m, StepMetric::Growth),
        fixed: matches!(m, StepMetric::SimilarityPrev | StepMetric::SimilarityLast)
            .then_some((0.0, 1.0)),
        loss: loss.iter().any(Option::is_some).then_some(loss),
    };
    Ok(Figure::Timeline {
        title,
        subtitle,
        fig: Box::new(fig),
    })
}

/// A y axis: its range and round ticks.
struct Axis {
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
    dec: usize,
}

impl Axis {
    /// Over the finite `values` (0…1 without any), from 0 when asked, padded by 5 %; a growth
    /// axis always shows 0.
    fn of(values: impl Iterator<Item = f64>, from_zero: bool, fixed: Option<(f64, f64)>) -> Axis {
        let (lo, hi) = fixed.unwrap_or_else(|| {
            let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
            for v in values.filter(|v| v.is_finite()) {
                lo = lo.min(v);
                hi = hi.max(v);
            }
            if lo > hi {
                return (0.0, 1.0);
            }
            if from_zero {
                lo = lo.min(0.0);
            }
            if lo == hi {
                let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
                return (lo - pad, hi + pad);
            }
            let pad = (hi - lo) * 0.05;
            (if from_zero && lo >= 0.0 { lo } else { lo - pad }, hi + pad)
        });
        let (ticks, dec) = nice_ticks(lo, hi, 4);
        Axis { lo, hi, ticks, dec }
    }

    fn width(&self, f: Fonts) -> i32 {
        self.ticks
            .iter()
            .map(|&t| text_width(&tick_label(t, self.dec), f.tick))
            .max()
            .unwrap_or(0)
    }
}

/// One line panel: its rectangle, the heatmap's horizontal extent and column centres.
struct LinePanel<'a> {
    r: Rect,
    /// The plot area's left and right edges (the heatmap's cells').
    x: (i32, i32),
    xs: &'a [i32],
    axis: &'a Axis,
    caption: &'a str,
    /// Step labels and the axis title under this panel (the lowest one).
    steps: Option<&'a [String]>,
    note: Option<&'a str>,
}

/// Draws a panel of lines over the step axis; returns its plot area's vertical extent.
fn draw_lines(root: &Area, p: &LinePanel, series: &[Series], f: Fonts) -> Result<(i32, i32)> {
    let gap = (f.tick * 0.5) as i32;
    let (left, right) = p.x;
    let top = p.r.y + gap * 2;
    let below = match p.steps {
        Some(_) => (f.tick * 1.8 + f.label * 1.6) as i32,
        None => gap,
    };
    let bottom = (p.r.y + p.r.h - gap - below).max(top + 2);
    let a = p.axis;
    let y = |v: f64| {
        bottom - 1 - ((v - a.lo) / (a.hi - a.lo) * (bottom - 1 - top) as f64).round() as i32
    };
    let line =
        |pts: Vec<(i32, i32)>, c: RGBColor| root.draw(&PathElement::new(pts, c)).map_err(draw_err);
    for &t in &a.ticks {
        let py = y(t);
        line(vec![(left, py), (right - 1, py)], GRID_MAJOR)?;
        line(vec![(left - 5, py), (left - 1, py)], INK)?;
        let l = tick_label(t, a.dec);
        text_at(root, &l, (left - 8, py), f.tick, INK, HPos::Right, false)?;
    }
    for &x in p.xs {
        line(vec![(x, top), (x, bottom - 1)], GRID_MAJOR)?;
    }
    line(vec![(left, top), (left, bottom), (right - 1, bottom)], INK)?;
    let (cap, cs) = fit(p.caption, f.label, bottom - top);
    text(
        root,
        &cap,
        (p.r.x + (f.label * 0.7) as i32, (top + bottom) / 2),
        cs,
        INK,
        true,
    )?;
    if let Some(steps) = p.steps {
        // Every label when they fit between neighbours, else every k-th (1, 2, 5, 10, …).
        let room =
            p.xs.windows(2)
                .map(|w| w[1] - w[0])
                .min()
                .unwrap_or(right - left);
        let widest = steps
            .iter()
            .map(|s| text_width(s, f.tick))
            .max()
            .unwrap_or(0);
        let every = nice_step(((widest + 8) as f64 / room.max(1) as f64).ceil() as usize);
        for (i, (&x, s)) in p.xs.iter().zip(steps).enumerate() {
            line(vec![(x, bottom), (x, bottom + 4)], INK)?;
            if i % every == 0 {
                text(
                    root,
                    s,
                    (x, bottom + 6 + (f.tick * 0.6) as i32),
                    f.tick,
                    INK,
                    false,
                )?;
            }
        }
        let ty = bottom + 6 + (f.tick * 1.4 + f.label * 0.8) as i32;
        text(root, "step", ((left + right) / 2, ty), f.label, INK, false)?;
    }
    if let Some(n) = p.note {
        let (t, s) = fit(n, f.label, right - left - 8);
        text(
            root,
            &t,
            ((left + right) / 2, (top + bottom) / 2),
            s,
            GREY_TEXT,
            false,
        )?;
    }
    let stroke = ((2.0 * f.scale).round() as u32).max(1);
    let radius = ((3.0 * f.scale).round() as i32).max(2);
    for s in series {
        let pts: Vec<Option<(i32, i32)>> =
            p.xs.iter()
                .zip(&s.values)
                .map(|(&x, v)| v.map(|v| (x, y(v.clamp(a.lo, a.hi)))))
                .collect();
        // A gap (a checkpoint without a value) breaks the line.
        for run in pts.split(Option::is_none) {
            let run: Vec<(i32, i32)> = run.iter().flatten().copied().collect();
            if run.len() > 1 {
                root.draw(&PathElement::new(run.clone(), s.color.stroke_width(stroke)))
                    .map_err(draw_err)?;
            }
            if p.xs.len() <= 64 {
                for q in run {
                    root.draw(&Circle::new(q, radius, s.color.filled()))
                        .map_err(draw_err)?;
                }
            }
        }
    }
    Ok((top, bottom))
}

/// Lays the figure out under its title: the heatmap and its colour bar on top, the lines with
/// their legend, the loss at the bottom, all sharing the heatmap's columns.
pub(super) fn draw_timeline(
    root: &Area,
    body: Rect,
    tf: &TimelineFigure,
    f: Fonts,
    cells: &mut Vec<Cell>,
) -> Result<()> {
    let entries: Vec<(String, RGBColor)> = tf
        .lines
        .iter()
        .map(|s| (s.label.clone(), s.color))
        .collect();
    // The right column holds the colour bar with its swatches, and the legend.
    let swatch_w = [tf.bar.empty_label, tf.bar.present_label]
        .into_iter()
        .flatten()
        .map(|l| (f.tick * 2.6) as i32 + text_width(l, f.tick))
        .max()
        .unwrap_or(0);
    let right_w = ((f.tick * 9.0) as i32)
        .max(legend_width(&entries, f))
        .max(swatch_w);
    let heat_h = body.h * 52 / 100;
    let lines_h = body.h * 26 / 100;
    let lines_axis = Axis::of(
        tf.lines
            .iter()
            .flat_map(|s| s.values.iter().flatten().copied()),
        tf.from_zero,
        tf.fixed,
    );
    let loss_axis = Axis::of(tf.loss.iter().flatten().flatten().copied(), false, None);
    // The heatmap's cells start after its axis title and row labels; the line panels' y labels
    // may need more room: the heatmap moves right so that both start at one x.
    let gap = (f.tick * 0.5) as i32;
    let caption_w = (f.label * 1.6) as i32;
    let row_w = tf
        .grid
        .rows
        .iter()
        .map(|l| text_width(l, f.tick))
        .max()
        .unwrap_or(0);
    let need = caption_w + lines_axis.width(f).max(loss_axis.width(f)) + gap + 8;
    let shift = (need - (caption_w + row_w + gap)).max(0);
    let heat = Rect {
        x: body.x + shift,
        y: body.y,
        w: body.w - right_w - shift,
        h: heat_h,
    };
    let start = cells.len();
    let hm = Heatmap {
        panel: Panel::Single,
        title: "",
        grid: &tf.grid,
        value: tf.measure.index(),
        bar: &tf.bar,
        row_title: "layer",
        col_title: "step",
    };
    let span = draw_heatmap(root, heat, &hm, f, cells)?;
    let side = |y: i32, h: i32| Rect {
        x: body.x + body.w - right_w,
        y,
        w: right_w,
        h,
    };
    draw_colorbar(root, side(body.y, heat_h), span, &tf.bar, f)?;
    // Column centres of the first row: the step axis of every panel below.
    let ncols = tf.grid.cols.len();
    let first_row = &cells[start..start + ncols];
    let xs: Vec<i32> = first_row.iter().map(|c| (c.x0 + c.x1) / 2).collect();
    let x = (first_row[0].x0, first_row[ncols - 1].x1);
    let width = body.w - right_w;
    let lines = LinePanel {
        r: Rect {
            x: body.x,
            y: body.y + heat_h,
            w: width,
            h: lines_h,
        },
        x,
        xs: &xs,
        axis: &lines_axis,
        caption: tf.caption,
        steps: None,
        note: tf.lines.is_empty().then_some("no delta in this selection"),
    };
    let (top, _) = draw_lines(root, &lines, &tf.lines, f)?;
    // The legend starts below the colour bar's swatches.
    let swatches = 1
        + usize::from(tf.bar.present_label.is_some())
        + usize::from(tf.bar.scale.nonfinite)
        + tf.bar.marks.len();
    let below_bar = span.1 + (f.tick * (0.8 + 1.8 * swatches as f64)) as i32;
    draw_legend(root, side(top, lines_h), top.max(below_bar), &entries, f)?;
    let loss_y = body.y + heat_h + lines_h;
    let loss_series = tf.loss.as_ref().map(|v| Series {
        label: "loss".into(),
        color: INK,
        values: v.clone(),
    });
    let loss = LinePanel {
        r: Rect {
            x: body.x,
            y: loss_y,
            w: width,
            h: body.y + body.h - loss_y,
        },
        x,
        xs: &xs,
        axis: &loss_axis,
        caption: "loss",
        steps: Some(&tf.steps),
        note: tf
            .loss
            .is_none()
            .then_some("no trainer_state.json: no loss logged for this run"),
    };
    draw_lines(root, &loss, loss_series.as_slice(), f)?;
    Ok(())
}

/// Draws a run's timeline figure into memory (`PlotKind::Timeline`: `opts.step_metric`,
/// `target`, `layer`, size).
pub fn render_timeline(tl: &Timeline, opts: &PlotOptions) -> Result<Rendered> {
    typeface()?;
    let size = opts.size(false)?;
    let fig = build_timeline(tl, opts)?;
    paint(&fig, size)
}

/// [`render_timeline`] written to `out` (a `.png` path) atomically, as [`write_png`].
pub fn write_timeline_png(tl: &Timeline, opts: &PlotOptions, out: &Path) -> Result<Rendered> {
    check_png(out)?;
    let r = render_timeline(tl, opts)?;
    save(&r, out)?;
    Ok(r)
}
