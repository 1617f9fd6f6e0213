//! Spectrum figures (`PlotKind::Spectrum`): σ_k per target, layer or expert on a log axis, with
//! min–max bands, a legend or a colour bar.

use super::canvas::Rect;
use super::*;

/// Grouping of the spectrum's lines.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum GroupBy {
    Target,
    Layer,
    Expert,
}

/// A spectrum line: σ_k (geometric mean over its deltas) and the min–max band.
#[derive(Debug, Clone)]
pub(super) struct Line {
    pub(super) key: usize,
    pub(super) points: Vec<(f64, f64)>,
    pub(super) band: Vec<(f64, f64, f64)>,
}

/// How a spectrum figure groups deltas into lines, and a sentence saying so.
pub(super) fn spectrum_grouping(sets: &[&AdapterStats], opts: &PlotOptions) -> (GroupBy, String) {
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
pub(super) fn group_key(
    d: &DeltaStats,
    by: GroupBy,
    opts: &PlotOptions,
    targets: &[Target],
) -> Option<usize> {
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

pub(super) fn key_label(key: usize, by: GroupBy, targets: &[Target]) -> String {
    match by {
        GroupBy::Target => targets.get(key).map(Target::to_string).unwrap_or_default(),
        GroupBy::Layer if key == usize::MAX => "no layer".into(),
        GroupBy::Layer => format!("layer {key}"),
        GroupBy::Expert => format!("expert {key}"),
    }
}

pub(super) fn spectrum_lines(
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
pub(super) const PALETTE: [(u8, u8, u8); 10] = [
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

pub(super) fn palette(key: usize) -> RGBColor {
    let (r, g, b) = PALETTE[key % PALETTE.len()];
    RGBColor(r, g, b)
}

/// More lines than this are drawn without their min–max bands.
pub(super) const MAX_BANDS: usize = 6;

/// More lines than this get a colour bar instead of a legend.
pub(super) const MAX_LEGEND: usize = 12;

/// How spectrum lines are coloured and explained.
pub(super) enum LineColors {
    /// Fixed palette, a legend entry per line.
    Legend(Vec<(String, RGBColor)>),
    /// Viridis over the keys (layers or experts), explained by a colour bar.
    Bar(Bar),
}

impl LineColors {
    pub(super) fn color(&self, key: usize) -> RGBColor {
        match self {
            LineColors::Legend(_) => palette(key),
            LineColors::Bar(s) => s.color(key as f64),
        }
    }
}

/// The shared axes of the spectrum panels: (σ min, σ max, largest index).
pub(super) fn spectrum_range(panels: &[(String, Vec<Line>)], bands: bool) -> (f64, f64, usize) {
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
pub(super) fn draw_spectrum(
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

pub(super) const GRID_MAJOR: RGBColor = RGBColor(215, 215, 215);
pub(super) const GRID_MINOR: RGBColor = RGBColor(240, 240, 240);

/// Indices to label on the k axis: all up to 10, else 1 and round multiples.
pub(super) fn x_ticks(n: usize) -> Vec<usize> {
    let step = nice_step(n.div_ceil(10));
    let mut v: Vec<usize> = (1..=n).filter(|k| k % step == 0).collect();
    if step > 1 {
        v.insert(0, 1);
    }
    v
}

/// Values to label on a log axis: powers of ten (at most 8), with 2 and 5 × 10^k added when the
/// range holds fewer than three of them.
pub(super) fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
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
pub(super) fn sig_log(y: f64) -> String {
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
