//! The one heatmap widget, shared by the layer map, the expert map and compare. ratatui has none:
//! cells are coloured blocks (with text when wide enough), or half-blocks `▀` (fg = upper row,
//! bg = lower row) when the rows do not fit. Without colour, values become shade glyphs ░▒▓█.

use super::{fit, put, Theme};
use crate::tui::app::{scroll, HeatmapHits};
use crate::tui::model::{Grid, GridCell};
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};

/// How values map to colours.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Palette {
    /// Low to high (viridis).
    Sequential,
    /// −1 … 0 … +1 (cool–warm), for cosines.
    Diverging,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scale {
    pub lo: f64,
    pub hi: f64,
    pub palette: Palette,
    /// Some cell is non-finite: the legend explains its mark.
    pub nonfinite: bool,
}

impl Scale {
    /// Position of `v` on the scale, 0…1.
    pub fn t(&self, v: f64) -> f64 {
        if !v.is_finite() {
            return 0.0;
        }
        if self.hi > self.lo {
            ((v - self.lo) / (self.hi - self.lo)).clamp(0.0, 1.0)
        } else {
            0.5
        }
    }

    pub fn color(&self, v: f64) -> Color {
        let t = self.t(v);
        match self.palette {
            Palette::Sequential => ramp(&VIRIDIS, t),
            Palette::Diverging => ramp(&COOLWARM, t),
        }
    }
}

const VIRIDIS: [(u8, u8, u8); 10] = [
    (68, 1, 84),
    (72, 40, 120),
    (62, 74, 137),
    (49, 104, 142),
    (38, 130, 142),
    (31, 158, 137),
    (53, 183, 121),
    (109, 205, 89),
    (180, 222, 44),
    (253, 231, 37),
];

const COOLWARM: [(u8, u8, u8); 5] = [
    (59, 76, 192),
    (141, 176, 254),
    (221, 221, 221),
    (244, 154, 123),
    (180, 4, 38),
];

fn ramp(stops: &[(u8, u8, u8)], t: f64) -> Color {
    let n = stops.len() - 1;
    let x = t * n as f64;
    let i = (x.floor() as usize).min(n - 1);
    let f = x - i as f64;
    let mix = |a: u8, b: u8| (a as f64 + (b as f64 - a as f64) * f).round() as u8;
    let (a, b) = (stops[i], stops[i + 1]);
    Color::Rgb(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// Cells of non-finite deltas (NaN/inf): magenta, which neither ramp ever produces.
pub const NONFINITE_BG: Color = Color::Rgb(255, 0, 255);
/// The mark of a non-finite cell, also without colour.
pub const NONFINITE_MARK: &str = "✕";

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

/// Cells without a value (statistics not there yet): grey, expert targets in purple.
fn structure_bg(emphasis: bool) -> Color {
    if emphasis {
        Color::Rgb(95, 55, 120)
    } else {
        Color::Rgb(70, 70, 70)
    }
}

/// What to draw and how.
pub struct Heatmap<'a> {
    pub grid: &'a Grid,
    /// The number each cell is coloured by.
    pub value: &'a dyn Fn(&GridCell) -> Option<f64>,
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
        let col_label_w = g.cols.iter().map(|c| c.chars().count()).max().unwrap_or(1);
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
            let mut style = if g.emphasis.get(c).copied().unwrap_or(false) {
                theme.emphasis()
            } else {
                theme.header()
            };
            if self.cursor.map(|k| k.1) == Some(c) {
                style = style.add_modifier(Modifier::REVERSED);
            }
            put(buf, area, x, area.y, &fit(&g.cols[c], room), style);
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
                    let top = g.cell(r0, c).and_then(|k| (self.value)(k));
                    let bot = g.cell(r0 + 1, c).and_then(|k| (self.value)(k));
                    let color = |v: Option<f64>| match (v, self.scale) {
                        (Some(v), _) if !v.is_finite() => NONFINITE_BG,
                        (Some(v), Some(s)) => s.color(v),
                        _ => Color::Reset,
                    };
                    let style = Style::new().fg(color(top)).bg(color(bot));
                    put(buf, area, x, y, &"▀".repeat(w as usize), style);
                    continue;
                }
                let cell = g.cell(r0, c);
                let is_cur = self.cursor == Some((r0, c));
                let emph = g.emphasis.get(c).copied().unwrap_or(false);
                let (text, mut style) = self.cell_look(cell, w, emph, theme);
                if is_cur {
                    style = style.add_modifier(Modifier::REVERSED | Modifier::BOLD);
                }
                put(buf, area, x, y, &text, style);
            }
        }
        hits
    }

    /// The text and style of one full cell `w` columns wide.
    fn cell_look(
        &self,
        cell: Option<&GridCell>,
        w: u16,
        emph: bool,
        theme: Theme,
    ) -> (String, Style) {
        let w = w as usize;
        let center = |s: &str| {
            let s = fit(s, w);
            let pad = w.saturating_sub(s.chars().count());
            format!("{}{}{}", " ".repeat(pad / 2), s, " ".repeat(pad - pad / 2))
        };
        let Some(cell) = cell else {
            return (center("·"), theme.dim());
        };
        let text = (self.text)(cell);
        let shown = if text.chars().count() <= w {
            text
        } else {
            String::new()
        };
        match ((self.value)(cell), self.scale) {
            (Some(v), _) if !v.is_finite() => {
                let style = if theme.color {
                    Style::new().bg(NONFINITE_BG).fg(Color::Black)
                } else {
                    Style::new().add_modifier(Modifier::BOLD)
                };
                (center(NONFINITE_MARK), style)
            }
            (Some(v), Some(s)) if theme.color => {
                let bg = s.color(v);
                let body = if shown.is_empty() {
                    " ".repeat(w)
                } else {
                    center(&shown)
                };
                (body, Style::new().bg(bg).fg(text_on(bg)))
            }
            (Some(v), Some(s)) => {
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
                    Style::new().bg(structure_bg(emph)).fg(Color::White)
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
            spans.push(Span::styled(" ", Style::new().bg(scale.color(v))));
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
