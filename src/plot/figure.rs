//! A figure from statistics: which panels, grids and lines `lorascope plot` draws (`build`), and
//! laying them out on the canvas (`draw`).

use super::canvas::Rect;
use super::spectrum::GroupBy;
use super::*;

/// A figure ready to draw (all data validated).
pub(super) enum Figure {
    Heat {
        title: String,
        subtitle: String,
        panels: Vec<(Panel, String, Grid)>,
        /// Which of the cells' values the panels show.
        value: usize,
        bar: Bar,
        cosine: Option<Grid>,
        row_title: String,
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
    Timeline {
        title: String,
        subtitle: String,
        fig: Box<super::timeline::TimelineFigure>,
    },
}

/// A grid of the figures of `lorascope plot`: rows "none" outside any layer, no cell text.
pub(super) fn figure_grid(rows: &[Option<usize>], cols: Vec<Col>, entries: &[Entry]) -> Grid {
    grid::assemble(
        String::new(),
        rows,
        "none",
        cols,
        entries,
        &mut |_, _, _| Default::default(),
    )
}

pub(super) fn build(
    stats: &AdapterStats,
    compare: Option<CompareWith>,
    opts: &PlotOptions,
) -> Result<Figure> {
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
        PlotKind::Timeline => Err(Error::Other(format!(
            "{ids}: --kind timeline draws a training run (a folder of checkpoints), not an adapter"
        ))),
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
                row_title: "layer".into(),
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

pub(super) fn draw(
    root: &Area,
    fig: &Figure,
    (w, h): (u32, u32),
    cells: &mut Vec<Cell>,
) -> Result<()> {
    let f = Fonts::for_size(w, h);
    let (title, subtitle) = match fig {
        Figure::Heat {
            title, subtitle, ..
        }
        | Figure::Spectrum {
            title, subtitle, ..
        }
        | Figure::Timeline {
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
        Figure::Timeline { fig, .. } => super::timeline::draw_timeline(root, body, fig, f, cells)?,
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
