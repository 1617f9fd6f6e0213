//! The Run screen: what the run is and how far its timeline is read, the layer × step and
//! expert × step maps side by side, a legend and the cursor's detail under them, then the
//! selected row's sparklines and the loss curve.

use super::{charts, Focus, RunScreen};
use crate::tui::app::{App, HeatmapHits, Hits};
use crate::tui::jobs::Job;
use crate::tui::ui::heatmap::{legend, Heatmap};
use crate::tui::ui::{centered_message, fit, progress_line, put, Theme};
use crate::view::grid::{Grid, GridCell};
use crate::view::measure::{Measure, StepMetric};
use crate::view::text::num;
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};

pub fn draw(buf: &mut Buffer, area: Rect, app: &App, v: &RunScreen, theme: Theme, hits: &mut Hits) {
    // The curves under the maps get less room, then none, on small terminals.
    let bottom = match area.height {
        h if h >= 30 => 8,
        h if h >= 20 => 6,
        _ => 0,
    };
    let [head, maps, legends, detail, curves] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Min(3),
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(bottom),
    ])
    .areas(area);
    draw_head(buf, head, app, v, theme);
    let Some(data) = &v.data else {
        let msg = match app.jobs.get(&v.key()) {
            Some(Job::Failed(e)) => Line::styled(e.clone(), theme.error()),
            _ => Line::styled("reading the run…", theme.title()),
        };
        centered_message(buf, maps, vec![msg], None, theme);
        return;
    };
    let measure = Measure::Step(v.metric);
    let (left, right, left_legend, right_legend) = match v.maps.has_experts {
        true => {
            let [l, r] = Layout::horizontal([Constraint::Fill(1), Constraint::Fill(1)])
                .spacing(2)
                .areas(maps);
            let [ll, rl] = Layout::horizontal([Constraint::Fill(1), Constraint::Fill(1)])
                .spacing(2)
                .areas(legends);
            (l, Some(r), ll, Some(rl))
        }
        false => (maps, None, legends, None),
    };
    let target = v.target().map_or("all", |t| t.as_str());
    let title = vec![
        Span::styled(format!(" {} ", v.metric.label()), theme.header()),
        Span::styled("(m) ", theme.dim()),
        Span::raw(format!("layers × steps · {target} ")),
        Span::styled("(t)", theme.dim()),
    ];
    let h = draw_map(
        buf,
        left,
        left_legend,
        title,
        (&v.maps.layers, measure),
        Some(v.cursor),
        v.focus == Focus::Layers,
        app.hits.heatmap.as_ref(),
        theme,
    );
    hits.page = (h.cells.height as usize).max(1);
    hits.heatmap = Some(h);
    if let (Some((t, g)), Some(r), Some(rl)) = (&v.maps.experts, right, right_legend) {
        let layer = v
            .maps
            .layers
            .rows
            .get(v.cursor.0)
            .cloned()
            .unwrap_or_default();
        let title = vec![
            Span::styled(format!(" {t} "), theme.emphasis()),
            Span::raw(format!("experts × steps at layer {layer} ")),
            Span::styled("(Tab)", theme.dim()),
        ];
        let h = draw_map(
            buf,
            r,
            rl,
            title,
            (g, measure),
            Some((v.expert_row, v.cursor.1)),
            v.focus == Focus::Experts,
            app.hits.heatmap2.as_ref(),
            theme,
        );
        if v.focus == Focus::Experts {
            hits.page = (h.cells.height as usize).max(1);
        }
        hits.heatmap2 = Some(h);
    } else if let Some(r) = right {
        centered_message(
            buf,
            r,
            vec![Line::styled("no expert LoRA at this layer", theme.dim())],
            None,
            theme,
        );
    }
    draw_detail(buf, detail, v, theme);
    if curves.height > 0 {
        draw_curves(buf, curves, v, data, theme);
    }
}

/// One map with its title above and its legend below; returns where its cells are.
#[allow(clippy::too_many_arguments)]
fn draw_map(
    buf: &mut Buffer,
    area: Rect,
    legend_area: Rect,
    title: Vec<Span<'static>>,
    (grid, measure): (&Grid, Measure),
    cursor: Option<(usize, usize)>,
    focused: bool,
    prev: Option<&HeatmapHits>,
    theme: Theme,
) -> HeatmapHits {
    if area.height < 2 {
        return HeatmapHits::default();
    }
    let mut line = Line::from(title);
    if focused {
        line = line.patch_style(Style::new().add_modifier(Modifier::UNDERLINED));
    }
    buf.set_line(area.x, area.y, &line, area.width);
    let map = Rect::new(area.x, area.y + 1, area.width, area.height - 1);
    let scale = measure.scale(&[grid]);
    let k = measure.index();
    let text = |c: &GridCell| {
        c.values[k]
            .filter(|v| v.is_finite())
            .map_or(String::new(), num)
    };
    let h = Heatmap {
        grid,
        metric: k,
        text: &text,
        scale,
        cursor,
        prev,
    }
    .draw(buf, map, theme);
    if let Some(s) = &scale {
        let l = legend(measure.label(), s, legend_area.width, theme);
        buf.set_line(legend_area.x, legend_area.y, &l, legend_area.width);
    }
    h
}

/// The run, and its job: progress while it reads, or why it stopped; the marked steps.
fn draw_head(buf: &mut Buffer, area: Rect, app: &App, v: &RunScreen, theme: Theme) {
    let (first, last) = v.run.steps();
    let mut facts = format!(
        "run ({} naming) · {} checkpoints · steps {first}–{last}",
        v.run.scheme.as_str(),
        v.run.members.len()
    );
    let unreadable: Vec<String> = v
        .data
        .iter()
        .flat_map(|d| &d.timeline.checkpoints)
        .filter(|c| c.error.is_some())
        .map(|c| c.step.to_string())
        .collect();
    if !unreadable.is_empty() {
        facts.push_str(&format!(" · unreadable: step {}", unreadable.join(", ")));
    }
    let w = area.width.saturating_sub(2) as usize;
    put(buf, area, area.x + 1, area.y, &fit(&facts, w), Style::new());
    if area.height < 2 {
        return;
    }
    let y = area.y + 1;
    let line = match app.jobs.get(&v.key()) {
        Some(Job::Running { done, total, .. }) => {
            let x = put(
                buf,
                area,
                area.x + 1,
                y,
                "reading checkpoints ",
                theme.title(),
            );
            let room = area.right().saturating_sub(x + 14) as usize;
            let bar = progress_line(*done, *total, room.min(40), theme);
            let x2 = x + bar.width() as u16;
            buf.set_line(x, y, &bar, area.right().saturating_sub(x));
            put(buf, area, x2 + 1, y, "(Esc cancels)", theme.dim());
            return;
        }
        Some(Job::Failed(e)) => Line::styled(fit(e, w), theme.error()),
        None if v.data.is_some() => Line::styled(
            "cancelled: the steps read so far (reopen the run to read the rest)",
            theme.dim(),
        ),
        _ => Line::raw(""),
    };
    let mut line = line;
    if !v.marked.is_empty() {
        let steps: Vec<String> = v
            .marked
            .iter()
            .zip(["A", "B"])
            .filter_map(|(&c, tag)| Some(format!("{tag} step {}", v.run.members.get(c)?.step)))
            .collect();
        let hint = if v.marked.len() == 2 {
            " (c compares)"
        } else {
            ""
        };
        if !line.spans.is_empty() {
            line.spans.push(Span::raw(" · "));
        }
        line.spans.push(Span::styled(
            format!("marked {}{hint}", steps.join(", ")),
            theme.marked(),
        ));
    }
    buf.set_line(area.x + 1, y, &line, area.width.saturating_sub(2));
}

/// The focused cell's detail (an unreadable checkpoint says why).
fn draw_detail(buf: &mut Buffer, area: Rect, v: &RunScreen, theme: Theme) {
    let step = v.cursor.1;
    let why = v
        .data
        .as_ref()
        .and_then(|d| d.timeline.checkpoints.get(step))
        .and_then(|c| Some(format!("step {}: {}", c.step, c.error.as_ref()?)));
    let (text, style) = match why {
        Some(w) => (w, theme.error()),
        None => {
            let cell = match (&v.focus, &v.maps.experts) {
                (Focus::Experts, Some((_, g))) => g.cell(v.expert_row, step),
                _ => v.maps.layers.cell(v.cursor.0, step),
            };
            let text = cell.map_or_else(|| "no LoRA here".to_string(), |c| c.detail.clone());
            (text, Style::new())
        }
    };
    let w = area.width.saturating_sub(2) as usize;
    put(buf, area, area.x + 1, area.y, &fit(&text, w), style);
}

/// The selected row's ‖ΔW‖_F and effective rank over the steps, and the loss curve.
fn draw_curves(
    buf: &mut Buffer,
    area: Rect,
    v: &RunScreen,
    data: &crate::tui::jobs::RunOutput,
    theme: Theme,
) {
    let [spark, loss] = Layout::horizontal([Constraint::Fill(1), Constraint::Fill(1)])
        .spacing(2)
        .areas(area);
    let (grid, row) = match (&v.focus, &v.maps.experts) {
        (Focus::Experts, Some((_, g))) => (g, v.expert_row),
        _ => (&v.maps.layers, v.cursor.0),
    };
    let series = |m: StepMetric| -> Vec<Option<f64>> {
        (0..grid.cols.len())
            .map(|c| {
                grid.cell(row, c)
                    .filter(|x| !x.pending[m.index()])
                    .and_then(|x| x.values[m.index()])
            })
            .collect()
    };
    let what = grid.rows.get(row).cloned().unwrap_or_default();
    let name = match (&v.focus, &v.maps.experts) {
        (Focus::Experts, Some((t, _))) => format!("{t} expert {what}"),
        _ => format!("layer {what}"),
    };
    let [top, bottom] = Layout::vertical([Constraint::Fill(1), Constraint::Fill(1)]).areas(spark);
    charts::sparkline(
        buf,
        top,
        &format!("‖ΔW‖_F of {name}"),
        &series(StepMetric::Fro),
        v.cursor.1,
        charts::Bars::FromZero,
        theme,
    );
    charts::sparkline(
        buf,
        bottom,
        &format!("effective rank of {name}"),
        &series(StepMetric::Erank),
        v.cursor.1,
        charts::Bars::Range,
        theme,
    );
    let checkpoints: Vec<(u64, Option<f64>)> = data
        .timeline
        .checkpoints
        .iter()
        .map(|c| (c.step, c.loss))
        .collect();
    charts::loss_chart(buf, loss, &data.loss, &checkpoints, v.cursor.1, theme);
}

/// The title bar: the run's id, and how far its timeline is.
pub fn title(app: &App, v: &RunScreen) -> (String, String) {
    let right = match app.jobs.get(&v.key()) {
        Some(Job::Running { done, total, .. }) => format!("timeline {done}/{total} checkpoints"),
        Some(Job::Ready(_)) => "timeline ready".into(),
        Some(Job::Failed(_)) => "timeline failed".into(),
        None if v.data.is_some() => "timeline cancelled".into(),
        None => String::new(),
    };
    (format!("run {}", v.run.id), right)
}
