//! The adapter list (home): the scan's progress, then one row per adapter with a detail pane.

use super::table::{self, Column, TableSpec};
use super::{centered_message, put, Theme};
use crate::adapter::Kind;
use crate::tui::app::{App, Hits, ScanState};
use crate::tui::model::ListColumn;
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Widget, Wrap};

pub fn draw(buf: &mut Buffer, area: Rect, app: &App, theme: Theme, hits: &mut Hits) {
    if let ScanState::Scanning { what, done, total } = &app.scan {
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
    let filtering = app.list.editing || !app.list.filter.is_empty();
    let [filter, table_area, detail] = Layout::vertical([
        Constraint::Length(u16::from(filtering)),
        Constraint::Min(1),
        Constraint::Length(5),
    ])
    .areas(area);
    if filtering {
        let x = put(buf, filter, filter.x + 1, filter.y, "/ ", theme.key());
        let x = put(buf, filter, x, filter.y, &app.list.filter, Style::new());
        if app.list.editing {
            put(buf, filter, x, filter.y, "▏", theme.key());
        }
        let n = format!("  {} match", app.list.visible.len());
        put(buf, filter, x + 2, filter.y, &n, theme.dim());
    }
    if app.adapters.is_empty() {
        centered_message(
            buf,
            table_area,
            vec![
                Line::raw("no adapters found"),
                Line::styled("try `lorascope demo DIR` and `--cache DIR`", theme.dim()),
            ],
            None,
            theme,
        );
        return;
    }
    let w = |i: usize| app.list.widths.get(i).copied().unwrap_or(8);
    let spec = TableSpec {
        columns: ListColumn::ALL
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                // Targets give up room first, then the pattern, the id last.
                let (shrink, min) = match c {
                    ListColumn::Targets => (1, 14),
                    ListColumn::Pattern => (2, 18),
                    ListColumn::Id => (3, 16),
                    _ => (0, w(i)),
                };
                Column {
                    title: c.title(),
                    width: w(i),
                    right: c.right(),
                    shrink,
                    min,
                    middle: c == ListColumn::Id,
                }
            })
            .collect(),
        len: app.list.visible.len(),
        selected: (!app.list.visible.is_empty()).then_some(app.list.selected),
        sort: ListColumn::ALL
            .iter()
            .position(|&c| c == app.list.sort)
            .map(|i| (i, app.list.asc)),
        prev_offset: app.hits.list.as_ref().map_or(0, |h| h.offset),
        lead_width: 2,
    };
    let row = |i: usize| {
        let r = &app.rows[app.list.visible[i]];
        let style = if r.kind == Kind::Error {
            theme.error()
        } else {
            Style::new()
        };
        (ListColumn::ALL.iter().map(|&c| r.cell(c)).collect(), style)
    };
    let mut lead = |buf: &mut Buffer, x: u16, y: u16, i: usize| {
        let idx = app.list.visible[i];
        if let Some(p) = app.list.marked.iter().position(|&m| m == idx) {
            put(buf, table_area, x, y, ["A", "B"][p.min(1)], theme.marked());
        }
    };
    let t = table::draw(buf, table_area, &spec, theme, &row, &mut lead);
    hits.page = t.body.height as usize;
    hits.list = Some(t);
    draw_detail(buf, detail, app, theme);
}

/// The selected adapter's path, facts and notes; an error's message in full.
fn draw_detail(buf: &mut Buffer, area: Rect, app: &App, theme: Theme) {
    let Some(r) = app.selected_adapter().map(|i| &app.rows[i]) else {
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
    let marks = match app.list.marked.len() {
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
