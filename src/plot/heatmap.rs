//! Heatmap figures (`PlotKind::Layers`, `PlotKind::Experts`, the cosine panel of a comparison):
//! cells from `view::grid`, hatched empty cells, the colour bar.

use super::canvas::Rect;
use super::*;

/// A colour bar: the grid's scale, its caption and the swatches explained under it.
#[derive(Debug, Clone)]
pub(super) struct Bar {
    pub(super) scale: Scale,
    pub(super) caption: String,
    /// The hatched "empty" swatch's label.
    pub(super) empty_label: Option<&'static str>,
    /// The label of the swatch of cells with LoRA but no value, when some cell is one.
    pub(super) present_label: Option<&'static str>,
    /// The health marks some cell carries (a swatch each).
    pub(super) marks: Vec<grid::Mark>,
    /// Cell values with two decimals (cosines), else three significant digits.
    pub(super) two_decimals: bool,
}

impl Bar {
    pub(super) fn new(scale: Scale, caption: &str) -> Bar {
        Bar {
            scale,
            caption: caption.into(),
            empty_label: Some("no LoRA"),
            present_label: None,
            marks: vec![],
            two_decimals: false,
        }
    }

    /// Smallest to largest finite value (0…1 when there is none).
    pub(super) fn sequential(values: impl Iterator<Item = f64>, caption: &str) -> Bar {
        let s = Scale::sequential(values).unwrap_or(Scale::fixed(0.0, 1.0, ScaleKind::Sequential));
        Bar::new(s, caption)
    }

    /// The scale of `measure` over `grids`, as the explorer draws it.
    pub(super) fn of(measure: Measure, grids: &[&Grid]) -> Bar {
        let s = measure
            .scale(grids)
            .unwrap_or(Scale::fixed(0.0, 1.0, ScaleKind::Sequential));
        let mut b = Bar::new(s, measure.caption());
        b.marks = grid::Mark::ALL
            .into_iter()
            .filter(|m| grids.iter().any(|g| g.marks().contains(m)))
            .collect();
        match measure {
            Measure::Compare(m) => {
                b.empty_label = Some("not in both");
                b.two_decimals = m == CompareMetric::Cosine;
            }
            Measure::Step(_) => b.empty_label = Some("no delta, unreadable"),
            Measure::Delta(_) => {}
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
                Measure::Step(_) => "no value (yet)",
            });
        }
        b
    }

    #[cfg(test)]
    pub(super) fn cosine() -> Bar {
        Bar::of(Measure::Compare(CompareMetric::Cosine), &[])
    }

    /// A value as written in a cell.
    pub(super) fn label(&self, v: f64) -> String {
        if self.two_decimals {
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

    pub(super) fn color(&self, v: f64) -> RGBColor {
        rgb(self.scale.color(v))
    }
}

pub(super) fn rgb(c: [u8; 3]) -> RGBColor {
    RGBColor(c[0], c[1], c[2])
}

/// The cosine heatmap of a comparison and its colour bar, taken from the left of `body`.
#[allow(clippy::too_many_arguments)]
pub(super) fn draw_cosine(
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
pub(super) struct Heatmap<'a> {
    pub(super) panel: Panel,
    pub(super) title: &'a str,
    pub(super) grid: &'a Grid,
    /// Which of the cells' values to draw.
    pub(super) value: usize,
    pub(super) bar: &'a Bar,
    pub(super) row_title: &'a str,
    pub(super) col_title: &'a str,
}

/// How column labels fit under the cells.
pub(super) enum ColLabels {
    /// Horizontal, one or two lines, every `step`-th column.
    Flat { size: f64, step: usize },
    /// Reading upwards, one line each.
    Up { size: f64 },
}

/// A panel's title centred at the top of `r`, shrunk to fit; returns where the panel's content
/// starts below it, or None when there is no title.
pub(super) fn panel_title(root: &Area, title: &str, r: Rect, f: Fonts) -> Result<Option<i32>> {
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
pub(super) fn draw_heatmap(
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

/// A vertical colour bar beside cells spanning `(y0, y1)`, with ticks, caption and the
/// empty-cell swatch.
pub(super) fn draw_colorbar(
    root: &Area,
    r: Rect,
    (y0, y1): (i32, i32),
    b: &Bar,
    f: Fonts,
) -> Result<()> {
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
