//! Drawing. `render` takes the app read-only, draws the frame and returns what it drew where
//! (`Hits`), which the app keeps for mouse hit-testing, page sizes and stable scrolling.
//! Everything drawn is clipped to its area, so no terminal size makes drawing panic.

pub mod heatmap;
pub mod table;

use super::app::{App, Hits};
use super::keymap;
use super::screen::Screen;
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Widget, Wrap};
use ratatui::Frame;

/// Styles, with or without colour (`NO_COLOR`: modifiers only, heatmaps in shade glyphs).
#[derive(Debug, Clone, Copy)]
pub struct Theme {
    pub color: bool,
}

impl Theme {
    pub fn new(color: bool) -> Theme {
        Theme { color }
    }

    fn fg(self, c: Color) -> Style {
        if self.color {
            Style::new().fg(c)
        } else {
            Style::new()
        }
    }

    pub fn title(self) -> Style {
        self.fg(Color::Cyan).add_modifier(Modifier::BOLD)
    }

    pub fn header(self) -> Style {
        self.fg(Color::Cyan).add_modifier(Modifier::BOLD)
    }

    pub fn selected(self) -> Style {
        if self.color {
            Style::new()
                .bg(Color::Rgb(45, 60, 95))
                .add_modifier(Modifier::BOLD)
        } else {
            Style::new().add_modifier(Modifier::REVERSED)
        }
    }

    pub fn error(self) -> Style {
        if self.color {
            Style::new().fg(Color::LightRed)
        } else {
            Style::new().add_modifier(Modifier::ITALIC)
        }
    }

    pub fn dim(self) -> Style {
        if self.color {
            Style::new().fg(Color::DarkGray)
        } else {
            Style::new().add_modifier(Modifier::DIM)
        }
    }

    pub fn key(self) -> Style {
        self.fg(Color::Yellow).add_modifier(Modifier::BOLD)
    }

    pub fn marked(self) -> Style {
        self.fg(Color::LightGreen).add_modifier(Modifier::BOLD)
    }

    /// Expert targets stand out.
    pub fn emphasis(self) -> Style {
        if self.color {
            Style::new()
                .fg(Color::LightMagenta)
                .add_modifier(Modifier::BOLD)
        } else {
            Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED)
        }
    }

    pub fn bar(self) -> Style {
        self.fg(Color::LightBlue)
    }
}

/// Draws the frame and says where things are.
pub fn render(frame: &mut Frame, app: &App) -> Hits {
    let area = frame.area();
    let theme = Theme::new(app.color);
    let mut hits = Hits::default();
    let [top, body, bottom] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(area);
    let buf = frame.buffer_mut();
    draw_title(buf, top, app, theme);
    match &app.screen {
        Screen::List => app.list.draw(buf, body, app, theme, &mut hits),
        Screen::Adapter(v) => v.draw(buf, body, app, theme, &mut hits),
        Screen::Compare(v) => v.draw(buf, body, app, theme, &mut hits),
        Screen::Run(v) => v.draw(buf, body, app, theme, &mut hits),
    }
    draw_status(buf, bottom, app, theme);
    if let Some(text) = &app.fetch_input {
        draw_fetch(buf, body, text, theme);
    }
    if let Some(p) = &app.export {
        super::export_panel::draw(buf, body, p, app, theme);
    }
    if let Some(h) = &app.help {
        hits.help = Some(draw_help(buf, area, &h.modes, h.scroll, theme));
    }
    hits
}

/// Writes `text` at (x, y), clipped to `area`; returns the x after it.
pub fn put(buf: &mut Buffer, area: Rect, x: u16, y: u16, text: &str, style: Style) -> u16 {
    if y < area.y || y >= area.bottom() || x >= area.right() || x < area.x {
        return x;
    }
    let (nx, _) = buf.set_stringn(x, y, text, (area.right() - x) as usize, style);
    nx
}

/// `text` cut to `w` columns with an ellipsis.
pub fn fit(text: &str, w: usize) -> String {
    let n = text.chars().count();
    if n <= w {
        return text.to_string();
    }
    if w == 0 {
        return String::new();
    }
    let mut s: String = text.chars().take(w - 1).collect();
    s.push('…');
    s
}

/// `████▌     37/140` in `w` columns.
pub fn progress_line(done: usize, total: usize, w: usize, theme: Theme) -> Line<'static> {
    let label = format!(" {done}/{total}");
    let bar_w = w.saturating_sub(label.len()).min(40);
    let frac = if total == 0 {
        0.0
    } else {
        (done as f64 / total as f64).clamp(0.0, 1.0)
    };
    let eighths = (frac * bar_w as f64 * 8.0).round() as usize;
    let mut bar: String = "█".repeat(eighths / 8);
    if eighths % 8 > 0 && bar.chars().count() < bar_w {
        bar.push(['▏', '▎', '▍', '▌', '▋', '▊', '▉'][eighths % 8 - 1]);
    }
    let rest = bar_w.saturating_sub(bar.chars().count());
    Line::from(vec![
        Span::styled(bar, theme.bar()),
        Span::styled("░".repeat(rest), theme.dim()),
        Span::raw(label),
    ])
}

/// A message in the middle of `area` (with a progress bar under it when given).
pub fn centered_message(
    buf: &mut Buffer,
    area: Rect,
    lines: Vec<Line<'static>>,
    progress: Option<(usize, usize)>,
    theme: Theme,
) {
    let mut lines = lines;
    if let Some((d, t)) = progress {
        lines.push(Line::raw(""));
        lines.push(progress_line(
            d,
            t,
            area.width.saturating_sub(4) as usize,
            theme,
        ));
    }
    let h = (lines.len() as u16).min(area.height);
    let y = area.y + area.height.saturating_sub(h) / 2;
    let r = Rect::new(area.x, y, area.width, h);
    Paragraph::new(lines)
        .alignment(ratatui::layout::Alignment::Center)
        .wrap(Wrap { trim: true })
        .render(r, buf);
}

fn draw_title(buf: &mut Buffer, area: Rect, app: &App, theme: Theme) {
    let (crumb, right) = match &app.screen {
        Screen::List => app.list.title(app),
        Screen::Adapter(v) => v.title(app),
        Screen::Compare(v) => v.title(app),
        Screen::Run(v) => v.title(app),
    };
    let x = put(buf, area, area.x, area.y, " lorascope ", theme.title());
    let x = put(buf, area, x, area.y, "› ", theme.dim());
    let room = area
        .right()
        .saturating_sub(x + right.chars().count() as u16 + 2);
    put(
        buf,
        area,
        x,
        area.y,
        &fit(&crumb, room as usize),
        Style::new().add_modifier(Modifier::BOLD),
    );
    let rx = area
        .right()
        .saturating_sub(right.chars().count() as u16 + 1);
    if rx > x {
        put(buf, area, rx, area.y, &right, theme.dim());
    }
}

/// `fetching ORG/NAME ████░░░░ 37%` for the status bar (short: the key hints come first).
fn fetch_progress(f: &super::jobs::FetchJob) -> String {
    const W: usize = 8;
    if f.total == 0 {
        return format!("fetching {}…", f.repo);
    }
    let frac = (f.done as f64 / f.total as f64).clamp(0.0, 1.0);
    let full = (frac * W as f64).round() as usize;
    format!(
        "fetching {} {}{} {:.0}%",
        f.repo,
        "█".repeat(full),
        "░".repeat(W - full),
        frac * 100.0
    )
}

/// The fetch popup: one line of input over the list.
fn draw_fetch(buf: &mut Buffer, area: Rect, text: &str, theme: Theme) {
    let w = area.width.saturating_sub(4).min(64);
    let h = 3.min(area.height);
    let r = Rect::new(
        area.x + area.width.saturating_sub(w) / 2,
        area.y + area.height.saturating_sub(h) / 3,
        w,
        h,
    );
    Clear.render(r, buf);
    let room = w.saturating_sub(6) as usize;
    // The end of a long id stays in view, as it is being typed.
    let n = text.chars().count();
    let shown: String = text.chars().skip((n + 1).saturating_sub(room)).collect();
    let lines = vec![Line::from(vec![
        Span::styled(" › ", theme.key()),
        Span::styled(shown, Style::new().add_modifier(Modifier::BOLD)),
        Span::styled("▏", theme.key()),
    ])];
    Paragraph::new(lines)
        .block(
            Block::default()
                .borders(Borders::ALL)
                .title(" Fetch from the Hub: ORG/NAME[@REV] ")
                .title_bottom(" Enter fetches · Esc cancels ")
                .border_style(theme.title()),
        )
        .render(r, buf);
}

fn draw_status(buf: &mut Buffer, area: Rect, app: &App, theme: Theme) {
    let progress = app.fetch().as_ref().map(fetch_progress);
    let msg = app
        .status
        .as_deref()
        .or(progress.as_deref())
        .or(app.note.as_deref())
        .unwrap_or("");
    let hints = keymap::hints(&app.modes());
    let hints_w: usize = hints
        .iter()
        .map(|(k, d)| k.chars().count() + d.chars().count() + 3)
        .sum();
    // The keys come first; the message takes the rest, but never less than a third.
    let room = (area.width as usize).saturating_sub(hints_w + 2);
    let msg_w = (msg.chars().count().min(room.max(area.width as usize / 3))) as u16;
    let hint_room = area.width.saturating_sub(msg_w + 1);
    let mut x = area.x + 1;
    for (keys, desc) in hints {
        let w = (keys.chars().count() + desc.chars().count() + 1) as u16;
        if x + w > area.x + hint_room {
            break;
        }
        x = put(buf, area, x, area.y, &keys, theme.key());
        x = put(buf, area, x + 1, area.y, desc, Style::new());
        x += 2;
    }
    if msg_w > 0 {
        let mx = area.right().saturating_sub(msg_w + 1);
        let style = if app.status.is_some() {
            Style::new().add_modifier(Modifier::BOLD)
        } else {
            theme.dim()
        };
        put(buf, area, mx, area.y, &fit(msg, msg_w as usize), style);
    }
}

/// The help popup: every key of the screen it was opened on, from the keymap.
fn draw_help(
    buf: &mut Buffer,
    area: Rect,
    modes: &[keymap::Mode],
    scroll: usize,
    theme: Theme,
) -> Rect {
    let mut lines: Vec<Line> = Vec::new();
    for (mode, rows) in keymap::effective(modes) {
        if !lines.is_empty() {
            lines.push(Line::raw(""));
        }
        lines.push(Line::styled(mode.title(), theme.header()));
        for b in rows {
            lines.push(Line::from(vec![
                Span::styled(format!("  {:<16}", keymap::keys_label(b)), theme.key()),
                Span::raw(b.desc),
            ]));
        }
    }
    let w = area.width.saturating_sub(4).min(64);
    let h = (lines.len() as u16 + 2).min(area.height.saturating_sub(2));
    let r = Rect::new(
        area.x + (area.width.saturating_sub(w)) / 2,
        area.y + (area.height.saturating_sub(h)) / 2,
        w,
        h,
    );
    let scroll = scroll.min(lines.len().saturating_sub(h.saturating_sub(2) as usize));
    Clear.render(r, buf);
    let title = format!(" Keys: {} ", modes.first().map_or("", |m| m.title()));
    Paragraph::new(lines)
        .block(
            Block::default()
                .borders(Borders::ALL)
                .title(title)
                .title_bottom(" Esc closes ")
                .border_style(theme.title()),
        )
        .scroll((scroll as u16, 0))
        .render(r, buf);
    r
}
