//! The one heatmap widget, shared by the layer map, the expert map and compare. ratatui has none:
//! cells are coloured blocks (with text when wide enough), or half-blocks `▀` (fg = upper row,
//! bg = lower row) when the rows do not fit. Without colour, values become shade glyphs ░▒▓█.
//! It only draws a `view::grid::Grid` with its `Scale`: the PNG export draws the same grid.

use super::{fit, put, Theme};
use crate::tui::app::{scroll, HeatmapHits};
use crate::view::grid::{present_color, CellKind, Grid, GridCell, Scale, NONFINITE};
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};

/// A palette colour as the terminal's.
pub fn rgb(c: [u8; 3]) -> Color {
    Color::Rgb(c[0], c[1], c[2])
}

/// Cells of non-finite deltas (NaN/inf): `view::grid::NONFINITE`, which neither palette produces.
pub const NONFINITE_BG: Color = Color::Rgb(NONFINITE[0], NONFINITE[1], NONFINITE[2]);
/// The mark of a non-finite cell, also without colour.
pub const NONFINITE_MARK: &str = "✕";

/// A value still being computed (streamed statistics): its mark and colour.
pub const PENDING_MARK: &str = "…";
pub const PENDING_FG: Color = Color::DarkGray;

/// Black or white, whichever reads on `bg`.
fn text_on(bg: Color) -> Color {
    match bg {
        Color::Rgb(r, g, b) if 0.299 * r as f64 + 0.587 * g as f64 + 0.114 * b as f64 > 140.0 => {
            Color::Black
        }
        _ => Color::White,
    }
}

const SHADES: [char; 4] = ['░', '▒', '▓', '█'];

fn shade(t: f64) -> char {
    SHADES[((t * 4.0).floor() as usize).min(3)]
}

/// What to draw and how.
pub struct Heatmap<'a> {
    pub grid: &'a Grid,
    /// The value each cell is coloured by (an index into its `values`).
    pub metric: usize,
    /// Text inside cells wide enough to hold it.
    pub text: &'a dyn Fn(&GridCell) -> String,
    pub scale: Option<Scale>,
    pub cursor: Option<(usize, usize)>,
    /// Offsets the last frame used, for stable scrolling.
    pub prev: Option<&'a HeatmapHits>,
}

impl Heatmap<'_> {
    pub fn draw(&self, buf: &mut Buffer, area: Rect, theme: Theme) -> HeatmapHits {
        let g = self.grid;
        let (nr, nc) = (g.rows.len(), g.cols.len());
        let mut hits = HeatmapHits {
            nrows: nr,
            ncols: nc,
            rows_per_line: 1,
            ..HeatmapHits::default()
        };
        if nr == 0 || nc == 0 || area.width < 4 || area.height < 2 {
            return hits;
        }
        let label_w = g.rows.iter().map(|r| r.chars().count()).max().unwrap_or(1) as u16 + 2;
        let avail_w = area.width.saturating_sub(label_w);
        let text_w = g
            .cells
            .iter()
            .flatten()
            .map(|c| (self.text)(c).chars().count())
            .max()
            .unwrap_or(0);
        let col_label_w = g
            .cols
            .iter()
            .map(|c| c.label.chars().count())
            .max()
            .unwrap_or(1);
        // As wide as the text and labels want, as narrow as the width allows, one gap column.
        let want = (text_w.max(col_label_w) + 1).clamp(2, 14) as u16;
        let cell_w = (avail_w / nc as u16).clamp(1, want);
        let vis_cols = ((avail_w / cell_w) as usize).min(nc);
        let lines = (area.height - 1) as usize;
        // Half-blocks fit twice the rows, but hold no text and need colour to tell two rows apart.
        let half = nr > lines && text_w == 0 && theme.color;
        let rows_per_line = if half { 2 } else { 1 };
        let vis_rows = (lines * rows_per_line).min(nr);
        let (cr, cc) = self.cursor.unwrap_or((0, 0));
        let prev_r = self.prev.map_or(0, |p| p.row_offset);
        let prev_c = self.prev.map_or(0, |p| p.col_offset);
        let mut row_off = scroll(prev_r, cr, vis_rows, nr);
        if half {
            row_off -= row_off % 2;
        }
        let col_off = scroll(prev_c, cc, vis_cols, nc);
        let cells = Rect::new(
            area.x + label_w,
            area.y + 1,
            (vis_cols as u16) * cell_w,
            area.height - 1,
        );
        hits.cells = cells;
        hits.cell_w = cell_w;
        hits.rows_per_line = rows_per_line as u16;
        hits.row_offset = row_off;
        hits.col_offset = col_off;

        // Column labels: every one when they fit, else every k-th.
        let step = col_label_w.div_ceil(cell_w as usize).max(1);
        for c in (col_off..col_off + vis_cols).filter(|c| c % step == 0 || step == 1) {
            let x = cells.x + ((c - col_off) as u16) * cell_w;
            let room = if step == 1 {
                cell_w.saturating_sub(u16::from(cell_w > 2)) as usize
            } else {
                (step as u16 * cell_w) as usize
            };
            let mut style = if g.cols[c].emphasis {
                theme.emphasis()
            } else {
                theme.header()
            };
            if self.cursor.map(|k| k.1) == Some(c) {
                style = style.add_modifier(Modifier::REVERSED);
            }
            put(buf, area, x, area.y, &fit(&g.cols[c].label, room), style);
        }

        let gap = u16::from(cell_w >= 3);
        for line in 0..lines {
            let y = cells.y + line as u16;
            let r0 = row_off + line * rows_per_line;
            if r0 >= nr {
                break;
            }
            let on_cursor = self
                .cursor
                .is_some_and(|k| k.0 >= r0 && k.0 < r0 + rows_per_line);
            let label_style = if on_cursor {
                theme.header().add_modifier(Modifier::REVERSED)
            } else {
                theme.dim()
            };
            let label = format!("{:>w$} ", g.rows[r0], w = (label_w - 2) as usize);
            put(buf, area, area.x, y, &label, label_style);
            for c in col_off..col_off + vis_cols {
                let x = cells.x + ((c - col_off) as u16) * cell_w;
                let w = cell_w - gap;
                if half {
                    let color = |r: usize| match (g.kind(r, c, self.metric), self.scale) {
                        (CellKind::NonFinite, _) => NONFINITE_BG,
                        (CellKind::Value(v), Some(s)) => rgb(s.color(v)),
                        (CellKind::Pending, _) => PENDING_FG,
                        _ => Color::Reset,
                    };
                    let style = Style::new().fg(color(r0)).bg(color(r0 + 1));
                    put(buf, area, x, y, &"▀".repeat(w as usize), style);
                    continue;
                }
                let is_cur = self.cursor == Some((r0, c));
                let (text, mut style) = self.cell_look(r0, c, w, theme);
                if is_cur {
                    style = style.add_modifier(Modifier::REVERSED | Modifier::BOLD);
                }
                put(buf, area, x, y, &text, style);
            }
        }
        hits
    }

    /// The text and style of one full cell `w` columns wide.
    fn cell_look(&self, r: usize, c: usize, w: u16, theme: Theme) -> (String, Style) {
        let (text, style) = self.cell_body(r, c, w, theme);
        // A health mark replaces the cell's text, over its colour: the value stays readable
        // from the colour, the mark says what the check found there.
        match self.grid.cell(r, c).and_then(|x| x.mark) {
            Some(m) if self.grid.kind(r, c, self.metric) != CellKind::NonFinite => {
                let w = w as usize;
                let pad = w.saturating_sub(1);
                let body = format!(
                    "{}{}{}",
                    " ".repeat(pad / 2),
                    m.glyph(),
                    " ".repeat(pad - pad / 2)
                );
                (body, style.patch(mark_style()))
            }
            _ => (text, style),
        }
    }

    /// The text and style of one full cell without its health mark.
    fn cell_body(&self, r: usize, c: usize, w: u16, theme: Theme) -> (String, Style) {
        let emph = self.grid.cols[c].emphasis;
        let w = w as usize;
        let center = |s: &str| {
            let s = fit(s, w);
            let pad = w.saturating_sub(s.chars().count());
            format!("{}{}{}", " ".repeat(pad / 2), s, " ".repeat(pad - pad / 2))
        };
        let Some(cell) = self.grid.cell(r, c) else {
            return (center("·"), theme.dim());
        };
        let text = (self.text)(cell);
        let shown = if text.chars().count() <= w {
            text
        } else {
            String::new()
        };
        match (self.grid.kind(r, c, self.metric), self.scale) {
            (CellKind::NonFinite, _) => {
                let style = if theme.color {
                    Style::new().bg(NONFINITE_BG).fg(Color::Black)
                } else {
                    Style::new().add_modifier(Modifier::BOLD)
                };
                (center(NONFINITE_MARK), style)
            }
            (CellKind::Pending, _) => {
                // Neither a value nor "no value": a dim ellipsis on no colour.
                let style = if theme.color {
                    Style::new().fg(PENDING_FG)
                } else {
                    theme.dim()
                };
                (center(PENDING_MARK), style)
            }
            (CellKind::Value(v), Some(s)) if theme.color => {
                let bg = rgb(s.color(v));
                let body = if shown.is_empty() {
                    " ".repeat(w)
                } else {
                    center(&shown)
                };
                (body, Style::new().bg(bg).fg(text_on(bg)))
            }
            (CellKind::Value(v), Some(s)) => {
                // Without colour the shade tells the value; the text stays readable around it.
                let g = shade(s.t(v)).to_string();
                let n = shown.chars().count();
                let body = if n == 0 {
                    g.repeat(w)
                } else if n + 4 <= w {
                    let left = (w - n - 2) / 2;
                    format!("{} {shown} {}", g.repeat(left), g.repeat(w - n - 2 - left))
                } else {
                    center(&shown)
                };
                (body, Style::new())
            }
            _ => {
                let body = if shown.is_empty() {
                    center("■")
                } else {
                    center(&shown)
                };
                let style = if theme.color {
                    Style::new().bg(rgb(present_color(emph))).fg(Color::White)
                } else if emph {
                    theme.emphasis()
                } else {
                    Style::new()
                };
                (body, style)
            }
        }
    }
}

/// Health marks: bold, so they show on any colour and without colour.
pub fn mark_style() -> Style {
    Style::new().add_modifier(Modifier::BOLD)
}

/// `‖ΔW‖_F  0.0976 ▕gradient▏ 0.6996`, or the shade thresholds without colour.
pub fn legend(label: &str, scale: &Scale, width: u16, theme: Theme) -> Line<'static> {
    let num = |x: f64| crate::view::text::num(x);
    let mut spans = vec![Span::styled(format!("{label}  "), theme.header())];
    if theme.color {
        let n = (width as usize)
            .saturating_sub(label.chars().count() + 30)
            .clamp(4, 32);
        spans.push(Span::raw(format!("{} ", num(scale.lo))));
        for i in 0..n {
            let v = scale.lo + (scale.hi - scale.lo) * (i as f64 + 0.5) / n as f64;
            spans.push(Span::styled(" ", Style::new().bg(rgb(scale.color(v)))));
        }
        spans.push(Span::raw(format!(" {}", num(scale.hi))));
    } else {
        for (i, g) in SHADES.iter().enumerate() {
            let upto = scale.lo + (scale.hi - scale.lo) * (i + 1) as f64 / 4.0;
            spans.push(Span::raw(format!("{g} ≤{}  ", num(upto))));
        }
    }
    spans.push(Span::styled("   · none", theme.dim()));
    if scale.nonfinite {
        let style = if theme.color {
            Style::new().bg(NONFINITE_BG).fg(Color::Black)
        } else {
            Style::new().add_modifier(Modifier::BOLD)
        };
        spans.push(Span::raw("  "));
        spans.push(Span::styled(NONFINITE_MARK, style));
        spans.push(Span::raw(" non-finite"));
    }
    Line::from(spans)
}
