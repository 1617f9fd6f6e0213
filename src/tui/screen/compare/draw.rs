//! Two adapters side by side: what only one has, per-layer ‖ΔW‖ of both, and cosine / subspace
//! similarity per module on the shared heatmap.

use super::CompareScreen;
use crate::tui::app::{App, Hits, RowsHits};
use crate::tui::jobs::{Job, JobKey};
use crate::tui::model::CompareModel;
use crate::tui::ui::heatmap::{legend, Heatmap};
use crate::tui::ui::table::{self, Column, TableSpec};
use crate::tui::ui::{centered_message, fit, put, Theme};
use crate::view::grid::{CompareMetric, GridCell, Measure};
use crate::view::text::num;
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};

pub fn draw(
    buf: &mut Buffer,
    area: Rect,
    app: &App,
    v: &CompareScreen,
    theme: Theme,
    hits: &mut Hits,
) {
    let id = |i: usize| {
        app.adapters
            .get(i)
            .map_or("?".to_string(), |a| a.id.clone())
    };
    let [head, body] = Layout::vertical([Constraint::Length(6), Constraint::Min(0)]).areas(area);
    let mut lines: Vec<(&str, String)> = vec![("A ", id(v.a)), ("B ", id(v.b))];
    if let Some(m) = &v.model {
        let mut matched = format!("{} matched deltas", m.matched);
        if m.not_comparable > 0 {
            matched.push_str(&format!(
                ", {} not comparable (different shapes)",
                m.not_comparable
            ));
        }
        lines.push(("= ", matched));
        lines.push(("only A: ", m.only_a.clone()));
        lines.push(("only B: ", m.only_b.clone()));
    }
    for (i, (tag, text)) in lines.iter().enumerate() {
        let y = head.y + i as u16;
        let x = put(buf, head, head.x + 1, y, tag, theme.marked());
        let style = if i < 2 {
            Style::new().add_modifier(Modifier::BOLD)
        } else {
            Style::new()
        };
        put(
            buf,
            head,
            x,
            y,
            &fit(text, head.right().saturating_sub(x + 1) as usize),
            style,
        );
    }
    match (&v.model, app.jobs.get(&JobKey::Compare(v.a, v.b))) {
        (Some(m), _) => draw_model(buf, body, app, v, m, theme, hits),
        (None, job) => {
            let (msg, progress) = match job {
                Some(Job::Running { done, total, .. }) => (
                    Line::styled("comparing… (Esc cancels)", theme.title()),
                    Some((*done, *total)),
                ),
                Some(Job::Failed(e)) => (Line::styled(e.clone(), theme.error()), None),
                _ => (Line::raw("not compared"), None),
            };
            centered_message(buf, body, vec![msg], progress, theme);
        }
    }
}

/// Two decimals, without a minus sign on zero.
fn two(x: f64) -> String {
    let s = format!("{x:.2}");
    if s == "-0.00" {
        "0.00".into()
    } else {
        s
    }
}

fn draw_model(
    buf: &mut Buffer,
    area: Rect,
    app: &App,
    v: &CompareScreen,
    m: &CompareModel,
    theme: Theme,
    hits: &mut Hits,
) {
    let [cols, detail] = Layout::vertical([Constraint::Min(2), Constraint::Length(1)]).areas(area);
    let [layers, map, targets] = Layout::horizontal([
        Constraint::Length(38),
        Constraint::Min(20),
        Constraint::Length(46),
    ])
    .spacing(1)
    .areas(cols);
    draw_layer_norms(buf, layers, app, v, m, theme, hits);

    let metric = v.metric;
    let k = metric.index();
    let [map, legend_area] =
        Layout::vertical([Constraint::Min(2), Constraint::Length(1)]).areas(map);
    if map.height > 0 {
        let title = Line::from(vec![
            Span::styled(format!(" {} ", metric.label()), theme.header()),
            Span::styled(" per module (m)", theme.dim()),
        ]);
        buf.set_line(map.x, map.y, &title, map.width);
    }
    let map = Rect::new(
        map.x,
        map.y + 1.min(map.height),
        map.width,
        map.height.saturating_sub(1),
    );
    // The scale the PNG export draws too.
    let scale = Measure::Compare(metric).scale(&[&m.grid]);
    let text = |c: &GridCell| c.values[k].map_or("-".into(), two);
    let h = Heatmap {
        grid: &m.grid,
        metric: k,
        text: &text,
        scale,
        cursor: Some(v.cursor),
        prev: app.hits.heatmap.as_ref(),
    }
    .draw(buf, map, theme);
    hits.page = (h.cells.height as usize).max(1);
    hits.heatmap = Some(h);
    if let (Some(s), true) = (&scale, legend_area.height > 0) {
        let l = legend(metric.label(), s, legend_area.width, theme);
        buf.set_line(legend_area.x, legend_area.y, &l, legend_area.width);
    }
    let text = match m.grid.cell(v.cursor.0, v.cursor.1) {
        Some(c) => {
            let vals: Vec<String> = CompareMetric::ALL
                .iter()
                .map(|mm| {
                    format!(
                        "{} {}",
                        mm.label(),
                        match c.values[mm.index()] {
                            Some(v) if !v.is_finite() => "non-finite".into(),
                            Some(v) => num(v),
                            None => "-".into(),
                        }
                    )
                })
                .collect();
            format!("{} · {}", c.detail, vals.join(" · "))
        }
        None => "no matched delta here".into(),
    };
    put(
        buf,
        detail,
        detail.x + 1,
        detail.y,
        &fit(&text, detail.width.saturating_sub(2) as usize),
        Style::new(),
    );

    // Per-target means, as `compare` prints them.
    let spec = TableSpec {
        columns: vec![
            Column {
                shrink: 1,
                min: 6,
                ..Column::fixed("TARGET", 12, false)
            },
            Column::fixed("PAIRS", 5, true),
            Column::fixed("COSINE", 6, true),
            Column::fixed("SUBSPACE", 8, true),
            Column::fixed("B/A ‖ΔW‖", 8, true),
        ],
        len: m.targets.len(),
        selected: None,
        sort: None,
        prev_offset: 0,
        lead_width: 0,
    };
    let f = |x: Option<f64>| {
        x.map_or("-".to_string(), |x| {
            format!("{x:.3}").replace("-0.000", "0.000")
        })
    };
    let row = |i: usize| {
        let t = &m.targets[i];
        (
            vec![
                t.target.to_string(),
                t.pairs.to_string(),
                f(t.mean_cosine),
                f(t.mean_subspace_similarity),
                f(t.mean_norm_ratio),
            ],
            Style::new(),
        )
    };
    if targets.height > 1 {
        put(
            buf,
            targets,
            targets.x,
            targets.y,
            "means per target",
            theme.header(),
        );
        let t = Rect::new(targets.x, targets.y + 1, targets.width, targets.height - 1);
        table::draw(buf, t, &spec, theme, &row, &mut |_, _, _, _| {});
    }
}

/// LAYER  ‖ΔW_A‖ bar  ‖ΔW_B‖ bar, one scale for both, the cursor's layer highlighted.
#[allow(clippy::too_many_arguments)]
fn draw_layer_norms(
    buf: &mut Buffer,
    area: Rect,
    app: &App,
    v: &CompareScreen,
    m: &CompareModel,
    theme: Theme,
    hits: &mut Hits,
) {
    if area.height < 2 {
        return;
    }
    put(
        buf,
        area,
        area.x + 1,
        area.y,
        "LAYER   ‖ΔW_A‖_F       ‖ΔW_B‖_F",
        theme.header(),
    );
    let body = Rect::new(area.x, area.y + 1, area.width, area.height - 1);
    let max = m
        .layers
        .iter()
        .flat_map(|l| [l.a, l.b])
        .flatten()
        .fold(0.0f64, f64::max);
    let bar = |x: Option<f64>| {
        let Some(x) = x else {
            return "-".to_string();
        };
        let frac = if max > 0.0 { x / max } else { 0.0 };
        let eighths = (frac * 6.0 * 8.0).round() as usize;
        let mut s = "█".repeat(eighths / 8);
        if eighths % 8 > 0 {
            s.push(['▏', '▎', '▍', '▌', '▋', '▊', '▉'][eighths % 8 - 1]);
        }
        s
    };
    let cursor_layer = m.grid.rows.get(v.cursor.0);
    let sel = m
        .layers
        .iter()
        .position(|l| Some(&l.layer) == cursor_layer)
        .unwrap_or(0);
    let prev = app.hits.layers.as_ref().map_or(0, |h| h.offset);
    let offset = crate::tui::app::scroll(prev, sel, body.height as usize, m.layers.len());
    for (line, l) in m
        .layers
        .iter()
        .skip(offset)
        .take(body.height as usize)
        .enumerate()
    {
        let y = body.y + line as u16;
        let style = if Some(&l.layer) == cursor_layer {
            theme.selected()
        } else {
            Style::new()
        };
        if Some(&l.layer) == cursor_layer {
            buf.set_style(Rect::new(body.x, y, body.width, 1), style);
        }
        let x = put(
            buf,
            body,
            body.x + 1,
            y,
            &format!("{:>5}  ", l.layer),
            style,
        );
        let a = l.a.map_or("-".into(), num);
        let b = l.b.map_or("-".into(), num);
        let x = put(buf, body, x, y, &format!("{a:>7} "), style);
        let x = put(
            buf,
            body,
            x,
            y,
            &format!("{:<7}", bar(l.a)),
            style.patch(theme.bar()),
        );
        let x = put(buf, body, x, y, &format!("{b:>7} "), style);
        put(buf, body, x, y, &bar(l.b), style.patch(theme.marked()));
    }
    hits.layers = Some(RowsHits { area: body, offset });
}
