//! One adapter's views: Tree, Layer map, Expert map, Stats (with the spectrum chart), Health.

use super::{AdapterScreen, Tab};
use crate::adapter::Adapter;
use crate::compute::stats::AdapterStats;
use crate::health::{self, Finding, Severity, Verdict};
use crate::tui::app::{App, Hits, RowsHits};
use crate::tui::jobs::{Job, JobKey, JobOutput};
use crate::tui::model::{NodeKind, StatsColumn, StatsData, StatsRow};
use crate::tui::ui::heatmap::{legend, mark_style, Heatmap, PENDING_MARK};
use crate::tui::ui::table::{self, Column, TableSpec};
use crate::tui::ui::{centered_message, fit, progress_line, put, Theme};
use crate::view::grid::{Grid, GridCell, Mark, Measure, Metric, Scale};
use crate::view::text::num;
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Block, Borders, Chart, Dataset, GraphType, Paragraph, Widget, Wrap};

pub fn draw(
    buf: &mut Buffer,
    area: Rect,
    app: &App,
    v: &AdapterScreen,
    theme: Theme,
    hits: &mut Hits,
) {
    let Some(a) = v.adapter(&app.adapters) else {
        return;
    };
    let [tabs, summary, body] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(0),
    ])
    .areas(area);
    draw_tabs(buf, tabs, v.tab, theme, hits);
    draw_summary(buf, summary, a, theme);
    let stats = app.jobs.get(&v.key());
    match v.tab {
        Tab::Tree => draw_tree(buf, body, app, v, theme, hits),
        Tab::Layers => draw_layers(buf, body, app, a, v, stats, theme, hits),
        Tab::Experts => draw_experts(buf, body, app, a, v, stats, theme, hits),
        Tab::Stats => draw_stats(buf, body, app, a, v, stats, theme, hits),
        Tab::Health => draw_health(buf, body, app, v, theme, hits),
    }
}

fn draw_tabs(buf: &mut Buffer, area: Rect, current: Tab, theme: Theme, hits: &mut Hits) {
    let mut x = area.x + 1;
    for (i, t) in Tab::ALL.iter().enumerate() {
        let label = format!(" {} {} ", i + 1, t.title());
        let style = if *t == current {
            theme.selected().add_modifier(Modifier::BOLD)
        } else {
            theme.dim()
        };
        let nx = put(buf, area, x, area.y, &label, style);
        hits.tabs
            .push((Rect::new(x, area.y, nx.saturating_sub(x), 1), *t));
        x = nx + 1;
    }
}

fn draw_summary(buf: &mut Buffer, area: Rect, a: &Adapter, theme: Theme) {
    let s = a.summary();
    let mut parts = vec![format!("{}", s.pattern.as_str())];
    if s.deltas > 0 {
        parts.push(format!("{} deltas", s.deltas));
    }
    parts.push(format!("{} tensors", s.tensors));
    parts.push(crate::view::text::bytes(s.bytes));
    if !s.dtypes.is_empty() {
        parts.push(s.dtypes.join(","));
    }
    if let Some(b) = &s.base_model {
        parts.push(format!("base {b}"));
    }
    put(
        buf,
        area,
        area.x + 1,
        area.y,
        &fit(&parts.join(" · "), area.width.saturating_sub(2) as usize),
        theme.dim(),
    );
}

/// For a Hub adapter whose data is not here: that `F` fetches it, or the fetch's progress.
fn remote_line(app: &App, v: &AdapterScreen, theme: Theme) -> Option<Line<'static>> {
    if !app.remote.get(v.idx).copied().unwrap_or(false) {
        return None;
    }
    let running = v.fetching.as_ref().and_then(|k| app.jobs.get(k));
    if let Some(Job::Running { done, total, .. }) = running {
        let mut l = Line::styled("fetching from the Hub ", theme.dim());
        l.spans.extend(
            progress_line(*done, (*total).max(1), 30, theme)
                .spans
                .into_iter()
                .take(2),
        );
        l.spans.push(Span::styled("  (Esc cancels)", theme.dim()));
        return Some(l);
    }
    Some(Line::styled(
        "on the Hub, headers only: F fetches it for statistics and health (Esc cancels)",
        theme.key(),
    ))
}

/// A gauge while statistics compute, or why there are none. None when they are ready.
fn stats_state<'a>(
    buf: &mut Buffer,
    area: Rect,
    a: &Adapter,
    stats: Option<&'a Job>,
    theme: Theme,
) -> Option<&'a AdapterStats> {
    if let Some(e) = &a.error {
        centered_message(
            buf,
            area,
            vec![Line::styled(format!("no statistics: {e}"), theme.error())],
            None,
            theme,
        );
        return None;
    }
    if a.deltas.is_empty() && a.full.is_empty() {
        centered_message(
            buf,
            area,
            vec![Line::raw(format!(
                "no LoRA deltas in this adapter ({})",
                a.kind.as_str()
            ))],
            None,
            theme,
        );
        return None;
    }
    match stats {
        Some(Job::Ready(JobOutput::Stats(s))) => Some(s),
        Some(Job::Running { done, total, .. }) => {
            centered_message(
                buf,
                area,
                vec![
                    Line::styled("computing statistics…", theme.title()),
                    Line::styled("Esc cancels", theme.dim()),
                ],
                Some((*done, *total)),
                theme,
            );
            None
        }
        Some(Job::Failed(e)) => {
            centered_message(
                buf,
                area,
                vec![Line::styled(
                    format!("statistics failed: {e}"),
                    theme.error(),
                )],
                None,
                theme,
            );
            None
        }
        Some(Job::Ready(_)) | None => {
            centered_message(
                buf,
                area,
                vec![Line::raw(
                    "statistics were cancelled: Tab away and back to compute them",
                )],
                None,
                theme,
            );
            None
        }
    }
}

fn draw_tree(
    buf: &mut Buffer,
    area: Rect,
    app: &App,
    v: &AdapterScreen,
    theme: Theme,
    hits: &mut Hits,
) {
    let st = app.stats_of(v.idx);
    let per_delta = st.zip(app.adapters.get(v.idx)).map(|(s, a)| s.per_delta(a));
    let height = area.height as usize;
    let prev = app.hits.tree.as_ref().map_or(0, |t| t.offset);
    let offset = crate::tui::app::scroll(prev, v.tree_sel, height, v.visible.len());
    for (line, &n) in v.visible.iter().skip(offset).take(height).enumerate() {
        let node = &v.tree[n];
        let y = area.y + line as u16;
        let selected = offset + line == v.tree_sel;
        let marker = if node.children == 0 {
            "  "
        } else if v.expanded[n] {
            "▾ "
        } else {
            "▸ "
        };
        let indent = "  ".repeat(node.depth);
        let label_style = match node.kind {
            NodeKind::Layer => theme.title(),
            NodeKind::Module => Style::new().add_modifier(Modifier::BOLD),
            NodeKind::Info if node.label.starts_with("error") => theme.error(),
            _ => Style::new(),
        };
        let base = if selected {
            theme.selected()
        } else {
            Style::new()
        };
        if selected {
            buf.set_style(Rect::new(area.x, y, area.width, 1), base);
        }
        let x = put(
            buf,
            area,
            area.x + 1,
            y,
            &format!("{indent}{marker}"),
            base.patch(theme.dim()),
        );
        let label = format!(
            "{:<w$}",
            node.label,
            w = 34usize.saturating_sub(indent.len())
        );
        let x = put(buf, area, x, y, &label, base.patch(label_style));
        let x = put(buf, area, x + 1, y, &node.info, base.patch(theme.dim()));
        let stat = node.delta.and_then(|d| {
            let ds = (*per_delta.as_ref()?.get(d)?)?;
            Some(format!(
                "‖ΔW‖_F {}  erank {:.2}",
                num(ds.fro_norm),
                ds.effective_rank
            ))
        });
        if let Some(s) = stat {
            put(buf, area, x + 2, y, &s, base.patch(theme.bar()));
        }
    }
    hits.page = height;
    hits.tree = Some(RowsHits { area, offset });
}

/// The legend/status line and the detail line under a map.
fn map_footer(
    buf: &mut Buffer,
    area: Rect,
    (scale, marks, pending): (Option<&Scale>, &[Mark], bool),
    label: &str,
    detail: Line<'static>,
    waiting: Option<Line<'static>>,
    theme: Theme,
) {
    if area.height == 0 {
        return;
    }
    let mut line = match (scale, waiting) {
        (_, Some(w)) => w,
        (Some(s), None) => legend(label, s, area.width, theme),
        (None, None) => Line::styled("no values", theme.dim()),
    };
    // Values still being computed (streamed), then the health marks, after the scale.
    if pending {
        line.spans.push(Span::raw("  "));
        line.spans.push(Span::styled(PENDING_MARK, theme.dim()));
        line.spans.push(Span::raw(" computing"));
    }
    for m in marks {
        line.spans.push(Span::raw("  "));
        line.spans.push(Span::styled(m.glyph(), mark_style()));
        line.spans.push(Span::raw(format!(" {}", m.label())));
    }
    buf.set_line(area.x + 1, area.y, &line, area.width.saturating_sub(1));
    if area.height > 1 {
        buf.set_line(
            area.x + 1,
            area.y + 1,
            &detail,
            area.width.saturating_sub(1),
        );
    }
}

/// Detail of the cell under the cursor, with the current metric's mean and max.
fn cell_detail(cell: Option<&GridCell>, metric: usize, label: &str, theme: Theme) -> Line<'static> {
    let Some(c) = cell else {
        return Line::styled("no LoRA here", theme.dim());
    };
    let mut spans = vec![Span::raw(c.detail.clone())];
    if let Some(m) = c.mark {
        spans.push(Span::styled(
            format!("  {} {} (Health tab)", m.glyph(), m.label()),
            mark_style(),
        ));
    }
    if c.pending[metric] {
        spans.push(Span::styled(
            format!("  {label} {PENDING_MARK} computing"),
            theme.dim(),
        ));
    }
    if let Some(v) = c.values[metric] {
        let mean = if c.max[metric].is_some_and(|(m, _)| m != v) {
            "mean "
        } else {
            ""
        };
        spans.push(Span::styled(
            format!("  {mean}{label} {}", num(v)),
            theme.bar(),
        ));
        if let Some((m, Some(e))) = c.max[metric].filter(|(m, _)| *m != v) {
            spans.push(Span::styled(
                format!(" · max {} (expert {e})", num(m)),
                theme.bar(),
            ));
        }
    }
    Line::from(spans)
}

/// The scale of a grid's metric, as the PNG export draws it.
fn grid_scale(g: &Grid, metric: Metric) -> Option<Scale> {
    Measure::Delta(metric).scale(&[g])
}

fn waiting_line(a: &Adapter, stats: Option<&Job>, theme: Theme) -> Option<Line<'static>> {
    match stats {
        Some(Job::Ready(_)) => None,
        Some(Job::Running { done, total, .. }) => {
            let mut l = Line::styled("statistics ", theme.dim());
            l.spans
                .extend(progress_line(*done, *total, 30, theme).spans);
            l.spans.push(Span::styled("  (Esc cancels)", theme.dim()));
            Some(l)
        }
        Some(Job::Failed(e)) => Some(Line::styled(
            format!("statistics failed: {e}"),
            theme.error(),
        )),
        None if a.error.is_some() => Some(Line::styled(
            "no statistics for an adapter that cannot be read",
            theme.error(),
        )),
        None => Some(Line::styled(
            "numbers: rank (r×E: per expert); colours once statistics exist",
            theme.dim(),
        )),
    }
}

#[allow(clippy::too_many_arguments)]
fn draw_layers(
    buf: &mut Buffer,
    area: Rect,
    app: &App,
    a: &Adapter,
    v: &AdapterScreen,
    stats: Option<&Job>,
    theme: Theme,
    hits: &mut Hits,
) {
    if v.layers.is_empty() {
        let why = a.error.as_deref().map_or_else(
            || {
                format!(
                    "nothing to map: no deltas or full tensors ({})",
                    a.kind.as_str()
                )
            },
            |e| format!("cannot map: {e}"),
        );
        centered_message(buf, area, vec![Line::raw(why)], None, theme);
        return;
    }
    let [map, footer] = Layout::vertical([Constraint::Min(2), Constraint::Length(2)]).areas(area);
    let title = Line::from(vec![
        Span::styled(format!(" {} ", v.layers.title), theme.header()),
        Span::styled(
            format!(" coloured by {} (m)", v.metric.label()),
            theme.dim(),
        ),
        Span::styled("   expert targets", theme.emphasis()),
    ]);
    let map = titled(buf, map, title);
    let text = |c: &GridCell| c.text.clone();
    let waiting = remote_line(app, v, theme)
        .or_else(|| merged_waiting(app, a, v, theme))
        .or_else(|| waiting_line(a, stats, theme));
    let grid = (&v.layers, v.layer_cursor);
    draw_grid(
        buf,
        (map, footer),
        app,
        grid,
        v.metric,
        &text,
        waiting,
        theme,
        hits,
    );
}

/// The body of the layer and expert maps: `grid` as a heatmap in `map` (its hits recorded), then
/// the footer: colour bar, the selected cell's detail, and `waiting`.
#[allow(clippy::too_many_arguments)]
fn draw_grid(
    buf: &mut Buffer,
    (map, footer): (Rect, Rect),
    app: &App,
    (grid, cursor): (&Grid, (usize, usize)),
    metric: Metric,
    text: &dyn Fn(&GridCell) -> String,
    waiting: Option<Line<'static>>,
    theme: Theme,
    hits: &mut Hits,
) {
    let m = metric.index();
    let scale = grid_scale(grid, metric);
    let h = Heatmap {
        grid,
        metric: m,
        text,
        scale,
        cursor: Some(cursor),
        prev: app.hits.heatmap.as_ref(),
    }
    .draw(buf, map, theme);
    hits.page = (h.cells.height as usize).max(1);
    hits.heatmap = Some(h);
    let detail = cell_detail(grid.cell(cursor.0, cursor.1), m, metric.label(), theme);
    let label = metric.label();
    let marks = grid.marks();
    let legend = (scale.as_ref(), marks.as_slice(), grid.has_pending(m));
    map_footer(buf, footer, legend, label, detail, waiting, theme);
}

/// Writes a title line at the top of `area` and returns the rest.
fn titled(buf: &mut Buffer, area: Rect, title: Line<'static>) -> Rect {
    if area.height == 0 {
        return area;
    }
    buf.set_line(area.x, area.y, &title, area.width);
    Rect::new(area.x, area.y + 1, area.width, area.height - 1)
}

#[allow(clippy::too_many_arguments)]
fn draw_experts(
    buf: &mut Buffer,
    area: Rect,
    app: &App,
    a: &Adapter,
    v: &AdapterScreen,
    stats: Option<&Job>,
    theme: Theme,
    hits: &mut Hits,
) {
    if v.expert_targets.is_empty() {
        let why = a.error.as_deref().map_or_else(
            || "no expert LoRA in this adapter (attention or full tensors only)".to_string(),
            |e| format!("cannot map: {e}"),
        );
        centered_message(buf, area, vec![Line::raw(why)], None, theme);
        return;
    }
    let [map, footer] = Layout::vertical([Constraint::Min(2), Constraint::Length(2)]).areas(area);
    let targets: Vec<Span> = v
        .expert_targets
        .iter()
        .enumerate()
        .map(|(i, t)| {
            if i == v.expert_target {
                Span::styled(format!(" {t} "), theme.selected())
            } else {
                Span::styled(format!(" {t} "), theme.dim())
            }
        })
        .collect();
    let mut title = vec![Span::styled(" target (t):", theme.header())];
    title.extend(targets);
    title.push(Span::styled(
        format!("  coloured by {} (m)", v.metric.label()),
        theme.dim(),
    ));
    let map = titled(buf, map, Line::from(title));
    let text = |_: &GridCell| String::new();
    let waiting = remote_line(app, v, theme)
        .or_else(|| merged_waiting(app, a, v, theme))
        .or_else(|| {
            waiting_line(a, stats, theme).map(|l| {
                if stats.is_none() && a.error.is_none() {
                    Line::styled(
                        "■ marks an expert with LoRA; colours once statistics exist",
                        theme.dim(),
                    )
                } else {
                    l
                }
            })
        });
    let grid = (&v.experts, v.expert_cursor);
    draw_grid(
        buf,
        (map, footer),
        app,
        grid,
        v.metric,
        &text,
        waiting,
        theme,
        hits,
    );
}

#[allow(clippy::too_many_arguments)]
fn draw_stats(
    buf: &mut Buffer,
    area: Rect,
    app: &App,
    a: &Adapter,
    v: &AdapterScreen,
    stats: Option<&Job>,
    theme: Theme,
    hits: &mut Hits,
) {
    if let Some(l) = remote_line(app, v, theme).filter(|_| a.error.is_none()) {
        centered_message(buf, area, vec![l], None, theme);
        return;
    }
    let Some(st) = stats_state(buf, area, a, stats, theme) else {
        return;
    };
    let data = StatsData {
        st,
        base: v.base_report(&app.jobs).map(|b| b.as_ref()),
        merged: app.jobs.merged(v.idx).map(|m| m.as_ref()),
    };
    // A merged model: one line on its weights minus its base's, or why there are none.
    let area = match merged_line(app, a, v, theme) {
        Some(l) if area.height > 4 => {
            buf.set_line(area.x + 1, area.y, &l, area.width.saturating_sub(1));
            Rect {
                y: area.y + 1,
                height: area.height - 1,
                ..area
            }
        }
        _ => area,
    };
    let chart_h = if area.height >= 20 {
        12
    } else {
        area.height / 2
    };
    let [table_area, chart_area] =
        Layout::vertical([Constraint::Min(2), Constraint::Length(chart_h)]).areas(area);
    let w = |i: usize| v.stats_widths.get(i).copied().unwrap_or(8);
    let spec = TableSpec {
        columns: v
            .stats_cols
            .iter()
            .enumerate()
            .map(|(i, &c)| Column {
                shrink: u8::from(c == StatsColumn::Target),
                min: 8,
                middle: false,
                ..Column::fixed(c.title(), w(i), c.right())
            })
            .collect(),
        len: v.stats_rows.len(),
        selected: (!v.stats_rows.is_empty()).then_some(v.stats_sel),
        sort: v
            .stats_cols
            .iter()
            .position(|&c| c == v.stats_sort)
            .map(|i| (i, v.stats_asc)),
        prev_offset: app.hits.stats.as_ref().map_or(0, |h| h.offset),
        lead_width: 1,
    };
    let row = |i: usize| {
        let r = v.stats_rows[i];
        let cells = v.stats_cols.iter().map(|&c| data.cell(r, c)).collect();
        (cells, Style::new())
    };
    let t = table::draw(buf, table_area, &spec, theme, &row, &mut |_, _, _, _| {});
    hits.page = t.body.height as usize;
    hits.stats = Some(t);
    if let Some(&r) = v.stats_rows.get(v.stats_sel) {
        draw_spectrum(buf, chart_area, &data, r, theme);
    }
}

/// A map's footer while a merged model's differences are not there: computing, or why not.
fn merged_waiting(
    app: &App,
    a: &Adapter,
    v: &AdapterScreen,
    theme: Theme,
) -> Option<Line<'static>> {
    merged_line(app, a, v, theme).filter(|_| app.jobs.merged(v.idx).is_none())
}

/// For a merged model (full weights that name a base): its weights minus the base's computing,
/// computed, or the one line saying why they are not shown. None for other models.
fn merged_line(app: &App, a: &Adapter, v: &AdapterScreen, theme: Theme) -> Option<Line<'static>> {
    if a.kind != crate::adapter::Kind::FullWeights || a.base_of > 0 {
        return None;
    }
    let line = match (&v.base, app.jobs.get(&v.merged_key())) {
        (Err(e), _) => Line::styled(format!("merged minus base not shown: {e}"), theme.dim()),
        (_, Some(Job::Ready(JobOutput::Merged(m)))) => Line::styled(
            format!(
                "merged minus base {}: {} of {} weights changed{}",
                m.base,
                m.changed,
                m.compared,
                if m.weights.iter().any(|w| w.approximate) {
                    " · ~ ranks from the top 64 σ"
                } else {
                    ""
                }
            ),
            theme.dim(),
        ),
        (_, Some(Job::Running { done, total, .. })) => {
            let mut l = Line::styled("merged minus base ", theme.dim());
            l.spans
                .extend(progress_line(*done, (*total).max(1), 30, theme).spans);
            l.spans.push(Span::styled("  (Esc cancels)", theme.dim()));
            l
        }
        (_, Some(Job::Failed(e))) => {
            Line::styled(format!("merged minus base failed: {e}"), theme.error())
        }
        (Ok(_), _) => Line::styled(
            "merged minus base: cancelled (Tab away and back computes it)",
            theme.dim(),
        ),
    };
    Some(line)
}

/// The health check: verdicts, rank advice, then one row per finding (the data's, then each
/// engine's) and the selected finding in full.
fn draw_health(
    buf: &mut Buffer,
    area: Rect,
    app: &App,
    v: &AdapterScreen,
    theme: Theme,
    hits: &mut Hits,
) {
    let h = match app.jobs.get(&JobKey::Health(v.idx)) {
        Some(Job::Ready(JobOutput::Health(h))) => h,
        Some(Job::Failed(e)) => {
            let msg = format!("health check failed: {e}");
            centered_message(
                buf,
                area,
                vec![Line::styled(msg, theme.error())],
                None,
                theme,
            );
            return;
        }
        Some(Job::Running { done, total, .. }) => {
            let lines = vec![Line::styled("checking health…", theme.title())];
            centered_message(buf, area, lines, Some((*done, *total)), theme);
            return;
        }
        _ => {
            if let Some(l) = remote_line(app, v, theme) {
                centered_message(buf, area, vec![l], None, theme);
            }
            return;
        }
    };
    if area.height < 4 {
        return;
    }
    // The selected finding in full below the table: messages (a path, a list of layers) are
    // longer than the table's column, so they wrap over up to three lines, then the source.
    let detail_rows = if area.height >= 14 { 4 } else { 2 };
    let [verdicts, advice, table_area, detail] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(2),
        Constraint::Length(detail_rows),
    ])
    .areas(area);
    let w = area.width.saturating_sub(2) as usize;
    let verdict_style = |x: Verdict| match x {
        Verdict::Ok => Style::new(),
        _ => theme.error(),
    };
    let mut x = area.x + 1;
    for (name, verdict, (mark, label)) in [
        ("verdict", h.verdict, (h.verdict.mark(), h.verdict.as_str())),
        ("vLLM", h.serving.vllm.verdict, h.serving.vllm.label()),
        ("SGLang", h.serving.sglang.verdict, h.serving.sglang.label()),
    ] {
        x = put(
            buf,
            verdicts,
            x,
            verdicts.y,
            &format!("{name} "),
            theme.dim(),
        );
        let text = format!("{mark} {label}");
        x = put(buf, verdicts, x, verdicts.y, &text, verdict_style(verdict)) + 3;
    }
    let rank = if h.rank_advice.is_empty() {
        "rank advice: none (no measured deltas)".to_string()
    } else {
        let parts: Vec<String> = h
            .rank_advice
            .iter()
            .map(|r| {
                format!(
                    "{} r {} → 99 % {}, 90 % {}",
                    r.target, r.rank, r.rank_99, r.rank_90
                )
            })
            .collect();
        format!("rank advice: {}", parts.join(" · "))
    };
    put(
        buf,
        advice,
        area.x + 1,
        advice.y,
        &fit(&rank, w),
        theme.dim(),
    );
    let findings: Vec<(&str, &Finding)> = h
        .findings
        .iter()
        .map(|f| ("data", f))
        .chain(h.serving.vllm.findings.iter().map(|f| ("vLLM", f)))
        .chain(h.serving.sglang.findings.iter().map(|f| ("SGLang", f)))
        .collect();
    if findings.is_empty() {
        let msg = "no findings: nothing dead, non-finite or unusual, and both engines serve it";
        put(buf, table_area, area.x + 1, table_area.y, msg, Style::new());
        hits.health = None;
        return;
    }
    let place = |f: &Finding| match &f.target {
        Some(t) => health::place(f.layer, t, f.expert),
        None => "-".into(),
    };
    let cells = |f: &(&str, &Finding)| {
        vec![
            f.1.severity.as_str().to_string(),
            f.0.to_string(),
            f.1.code.to_string(),
            place(f.1),
            f.1.message.clone(),
        ]
    };
    let titles = ["SEVERITY", "BY", "CODE", "WHERE", "MESSAGE"];
    let width = |i: usize| {
        findings
            .iter()
            .map(|f| cells(f)[i].chars().count())
            .max()
            .unwrap_or(0)
            .max(titles[i].len()) as u16
    };
    let spec = TableSpec {
        columns: titles
            .iter()
            .enumerate()
            .map(|(i, t)| Column {
                shrink: match i {
                    4 => 1,
                    3 => 2,
                    _ => 0,
                },
                min: 8,
                ..Column::fixed(t, width(i), false)
            })
            .collect(),
        len: findings.len(),
        selected: Some(v.health_sel.min(findings.len() - 1)),
        sort: None,
        prev_offset: app.hits.health.as_ref().map_or(0, |h| h.offset),
        lead_width: 1,
    };
    let row = |i: usize| {
        let f = &findings[i];
        let style = match f.1.severity {
            Severity::Error => theme.error(),
            Severity::Warning => theme.key(),
            Severity::Info => Style::new(),
        };
        (cells(f), style)
    };
    let t = table::draw(buf, table_area, &spec, theme, &row, &mut |_, _, _, _| {});
    hits.page = t.body.height as usize;
    hits.health = Some(t);
    if let Some((_, f)) = findings.get(v.health_sel) {
        let hint = match f.source {
            Some(src) => Some(format!(
                "{}source: {src} (read at {})",
                f.effect
                    .map_or(String::new(), |e| format!("effect: {e} · ")),
                f.versions.unwrap_or("?")
            )),
            None => f
                .target
                .is_some()
                .then(|| "Enter shows this cell on the map".to_string()),
        };
        let inner = Rect {
            x: detail.x + 1,
            width: detail.width.saturating_sub(2),
            ..detail
        };
        // The hint keeps its last line; the message gets the rest, wrapped.
        let hint_rows = u16::from(hint.is_some());
        let [msg_area, hint_area] = Layout::vertical([
            Constraint::Length(inner.height.saturating_sub(hint_rows)),
            Constraint::Length(hint_rows),
        ])
        .areas(inner);
        Paragraph::new(f.message.clone())
            .wrap(Wrap { trim: true })
            .render(msg_area, buf);
        if let Some(h) = hint {
            put(
                buf,
                hint_area,
                hint_area.x,
                hint_area.y,
                &fit(&h, w),
                theme.dim(),
            );
        }
    }
}

/// The selected delta's (or merged weight's difference's) singular values, on a log scale.
fn draw_spectrum(buf: &mut Buffer, area: Rect, data: &StatsData, row: StatsRow, theme: Theme) {
    if area.height < 4 || area.width < 20 {
        return;
    }
    let (layer, target, expert, sigma, fro, whose) = match row {
        StatsRow::Delta(i) => {
            let d = &data.st.deltas[i];
            let s = &d.singular_values;
            (d.layer, &d.target, d.expert, s, d.fro_norm, "")
        }
        StatsRow::Merged(i) if data.merged.is_some_and(|m| i < m.weights.len()) => {
            let w = &data.merged.map_or(&[][..], |m| &m.weights)[i];
            let s = &w.singular_values;
            (
                Some(w.layer),
                &w.target,
                w.expert,
                s,
                w.fro_norm,
                " merged − base",
            )
        }
        _ => {
            centered_message(
                buf,
                area,
                vec![Line::styled(
                    "a full tensor (not a delta): no spectrum",
                    theme.dim(),
                )],
                None,
                theme,
            );
            return;
        }
    };
    let what = format!(
        " σ of layer {} {}{}{whose} (log scale, {} values) ",
        layer.map_or("-".into(), |l| l.to_string()),
        target,
        expert.map_or(String::new(), |e| format!(" expert {e}")),
        sigma.len()
    );
    let pts: Vec<(f64, f64)> = sigma
        .iter()
        .enumerate()
        .filter(|(_, &s)| s > 0.0)
        .map(|(k, &s)| ((k + 1) as f64, s.log10()))
        .collect();
    let block = Block::default()
        .borders(Borders::TOP)
        .title(Span::styled(what, theme.header()))
        .border_style(theme.dim());
    if pts.is_empty() {
        centered_message(
            buf,
            block.inner(area),
            vec![Line::raw("ΔW = 0: every singular value is zero")],
            None,
            theme,
        );
        block.render(area, buf);
        return;
    }
    let lo = pts
        .iter()
        .map(|p| p.1)
        .fold(f64::INFINITY, f64::min)
        .floor();
    let hi = pts
        .iter()
        .map(|p| p.1)
        .fold(f64::NEG_INFINITY, f64::max)
        .ceil();
    let hi = if hi <= lo { lo + 1.0 } else { hi };
    let n = sigma.len().max(2) as f64;
    let ylabels: Vec<Span> = [lo, (lo + hi) / 2.0, hi]
        .iter()
        .map(|e| Span::raw(format!("1e{e:.0}").replace("1e-0", "1e0")))
        .collect();
    let xlabels: Vec<Span> = [1.0, (1.0 + n) / 2.0, n]
        .iter()
        .map(|x| Span::raw(format!("{x:.0}")))
        .collect();
    let style = if theme.color {
        Style::new().fg(Color::LightCyan)
    } else {
        Style::new()
    };
    let line = Dataset::default()
        .marker(Marker::Braille)
        .graph_type(GraphType::Line)
        .style(style)
        .data(&pts);
    Chart::new(vec![line])
        .block(block)
        .x_axis(Axis::default().bounds([1.0, n]).labels(xlabels))
        .y_axis(Axis::default().bounds([lo, hi]).labels(ylabels))
        .render(area, buf);
    // The largest and smallest values in numbers, since the axis is logarithmic.
    let note = format!(
        "σ₁ {}  σ_min {}  ‖ΔW‖_F {}",
        num(sigma[0]),
        num(*sigma.last().unwrap_or(&0.0)),
        num(fro)
    );
    let x = area.right().saturating_sub(note.chars().count() as u16 + 1);
    put(buf, area, x, area.y, &note, theme.dim());
}

/// The title bar: the adapter's id, the gate/up split when on, and how the statistics of the
/// layout shown are doing.
pub fn title(app: &App, v: &AdapterScreen) -> (String, String) {
    let id = app.adapters.get(v.idx).map_or("?", |a| a.id.as_str());
    let stats = match app.jobs.get(&v.key()) {
        Some(Job::Running { done, total, .. }) => format!("statistics {done}/{total}"),
        Some(Job::Ready(_)) => "statistics ready".into(),
        Some(Job::Failed(_)) => "statistics failed".into(),
        None => String::new(),
    };
    // The base's progress while it computes (amplification takes a while on a real base).
    let stats = match app.jobs.get(&v.base_key()) {
        Some(Job::Running { done, total, .. }) if stats.is_empty() => {
            format!("base {done}/{total}")
        }
        Some(Job::Running { done, total, .. }) => format!("{stats} · base {done}/{total}"),
        _ => stats,
    };
    let stats = match app.jobs.get(&v.merged_key()) {
        Some(Job::Running { done, total, .. }) if stats.is_empty() => {
            format!("merged − base {done}/{total}")
        }
        Some(Job::Running { done, total, .. }) => {
            format!("{stats} · merged − base {done}/{total}")
        }
        _ => stats,
    };
    let stats = match v.intruder.as_ref().and_then(|k| app.jobs.get(k)) {
        Some(Job::Running { .. }) => format!("{stats} · intruder dimensions…"),
        _ => stats,
    };
    let right = match (v.split_gate_up(), stats.is_empty()) {
        (false, _) => stats,
        (true, true) => "gate/up split".into(),
        (true, false) => format!("gate/up split · {stats}"),
    };
    (id.to_string(), right)
}
