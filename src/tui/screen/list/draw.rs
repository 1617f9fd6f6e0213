//! The adapter list (home): the scan's progress, then one row per adapter with a detail pane.

use super::{ListScreen, Row};
use crate::adapter::Kind;
use crate::tui::app::{App, Hits, ScanState, Source};
use crate::tui::model::ListColumn;
use crate::tui::ui::table::{self, Column, TableSpec};
use crate::tui::ui::{centered_message, fit, put, Theme};
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Widget, Wrap};

pub fn draw(
    buf: &mut Buffer,
    area: Rect,
    app: &App,
    l: &ListScreen,
    theme: Theme,
    hits: &mut Hits,
) {
    // Until the first rows arrive, the scan's progress; then the rows (the title counts them).
    if let (ScanState::Scanning { what, done, total }, true) = (&app.scan, app.adapters.is_empty())
    {
        let progress = (*total > 0).then_some((*done, *total));
        centered_message(
            buf,
            area,
            vec![Line::styled(format!("{what}…"), theme.title())],
            progress,
            theme,
        );
        return;
    }
    let filtering = l.editing || !l.filter.is_empty();
    let [filter, table_area, detail] = Layout::vertical([
        Constraint::Length(u16::from(filtering)),
        Constraint::Min(1),
        Constraint::Length(5),
    ])
    .areas(area);
    if filtering {
        let x = put(buf, filter, filter.x + 1, filter.y, "/ ", theme.key());
        let x = put(buf, filter, x, filter.y, &l.filter, Style::new());
        if l.editing {
            put(buf, filter, x, filter.y, "▏", theme.key());
        }
        let n = format!("  {} match", l.top_level());
        put(buf, filter, x + 2, filter.y, &n, theme.dim());
    }
    if app.adapters.is_empty() {
        let lines = match (&app.scan, &app.source) {
            // One line: why the Hub list is empty (offline, unreachable, stopped).
            (ScanState::Failed(why), _) => {
                let w = table_area.width.saturating_sub(2) as usize;
                vec![Line::styled(fit(why, w), theme.error())]
            }
            (_, Source::Hub { base }) => vec![Line::raw(format!(
                "no adapters of {base} on the Hub · H shows the local adapters"
            ))],
            _ => vec![
                Line::raw("no adapters found"),
                Line::styled("try `lorascope demo DIR` and `--cache DIR`", theme.dim()),
            ],
        };
        centered_message(buf, table_area, lines, None, theme);
        return;
    }
    let w = |i: usize| l.widths.get(i).copied().unwrap_or(8);
    let titles: Vec<String> = l.columns.iter().map(|&c| l.column_title(c)).collect();
    let spec = TableSpec {
        columns: l
            .columns
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                // The id is what a person reads the list by: targets give up room first, then
                // the pattern, the id last (a little more in the Hub's list, so that its
                // downloads fit in 120 columns too).
                let tight = u16::from(l.columns.contains(&ListColumn::Downloads));
                let (shrink, min) = match c {
                    ListColumn::Targets => (1, 9 - tight),
                    ListColumn::Pattern => (2, 13 - 2 * tight),
                    ListColumn::Id => (3, 16 - 4 * tight),
                    _ => (0, w(i)),
                };
                Column {
                    title: &titles[i],
                    width: w(i),
                    right: c.right(),
                    shrink,
                    min,
                    middle: c == ListColumn::Id,
                }
            })
            .collect(),
        len: l.visible.len(),
        selected: (!l.visible.is_empty()).then_some(l.selected),
        sort: l
            .columns
            .iter()
            .position(|&c| c == l.sort)
            .map(|i| (i, l.asc)),
        prev_offset: app.hits.list.as_ref().map_or(0, |h| h.offset),
        lead_width: 2,
    };
    let row = |i: usize| {
        let shown = l.visible[i];
        let r = l.row(shown);
        let style = if r.kind == Kind::Error {
            theme.error()
        } else {
            Style::new()
        };
        // The last checkpoint under its run closes the branch.
        let last = !matches!(l.visible.get(i + 1), Some(Row::Checkpoint(..)));
        let cells = l.columns.iter().map(|&c| l.cell_of(shown, c, last));
        (cells.collect(), style)
    };
    let mut lead = |buf: &mut Buffer, x: u16, y: u16, i: usize| {
        // A folded run shows the marks of its checkpoints.
        let marked = |idx: usize| l.marked.iter().position(|&m| m == idx);
        let mark = match l.visible[i] {
            Row::Run(k) if !l.is_expanded(k) => {
                let members = &l.runs[k].run.members;
                members.iter().find_map(|m| marked(m.index))
            }
            r => r.adapter().and_then(marked),
        };
        if let Some(p) = mark {
            put(buf, table_area, x, y, ["A", "B"][p.min(1)], theme.marked());
        }
    };
    let t = table::draw(buf, table_area, &spec, theme, &row, &mut lead);
    hits.page = t.body.height as usize;
    hits.list = Some(t);
    draw_detail(buf, detail, l, theme);
}

/// The selected adapter's path, facts and notes; an error's message in full.
fn draw_detail(buf: &mut Buffer, area: Rect, l: &ListScreen, theme: Theme) {
    let Some(r) = l.selected_row().map(|s| l.row(s)) else {
        return;
    };
    let mut lines: Vec<Line> = Vec::new();
    if let Some(e) = &r.error {
        lines.push(Line::from(vec![
            Span::styled("error: ", theme.error().add_modifier(Modifier::BOLD)),
            Span::styled(e.clone(), theme.error()),
        ]));
    }
    for (i, d) in r.detail.iter().enumerate() {
        let style = if i == 0 { theme.dim() } else { Style::new() };
        lines.push(Line::styled(d.clone(), style));
    }
    let marks = match l.marked.len() {
        0 => String::new(),
        n => format!(" {n} marked "),
    };
    Paragraph::new(lines)
        .wrap(Wrap { trim: false })
        .block(
            Block::default()
                .borders(Borders::TOP)
                .title(Span::styled(format!(" {} ", r.id), theme.title()))
                .title(Line::styled(marks, theme.marked()).right_aligned())
                .border_style(theme.dim()),
        )
        .render(area, buf);
}

/// The title bar's crumb (the source, for the Hub's list) and right-hand note: how many
/// adapters are shown.
pub fn title(app: &App, l: &ListScreen) -> (String, String) {
    let crumb = match &app.source {
        Source::Local => "adapters".to_string(),
        hub => format!("{} adapters", hub.label()),
    };
    if let ScanState::Scanning { total, .. } = &app.scan {
        let right = match app.adapters.len() {
            0 => "scanning…".to_string(),
            n => format!("scanning… {n} of {total} read"),
        };
        return (crumb, right);
    }
    let (n, runs) = l.counts();
    let plural = |n: usize, one: &str| format!("{n} {one}{}", if n == 1 { "" } else { "s" });
    let shown = l.top_level();
    let mut right = match (n, runs) {
        (_, 0) => plural(n, "adapter"),
        (0, r) => plural(r, "run"),
        (n, r) => format!("{} · {}", plural(n, "adapter"), plural(r, "run")),
    };
    if shown < n + runs {
        right = format!("{shown} of {right}");
    }
    if let Some((done, all)) = app.health_progress() {
        right.push_str(&format!(" · health {done} of {all}"));
    }
    (crumb, right)
}
