//! One table drawer for the adapter list, the stats table and compare's per-target table: fixed
//! column widths (so hit-testing knows exactly where each column is), a sort arrow, a selection.

use super::{fit, put, Theme};
use crate::tui::app::{scroll, TableHits};
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::Style;

pub struct Column<'a> {
    pub title: &'a str,
    /// Natural width (widest cell over all rows).
    pub width: u16,
    pub right: bool,
    /// When the table does not fit, columns give up room in this order (1 first; 0 never),
    /// down to `min`.
    pub shrink: u8,
    pub min: u16,
    /// Cut in the middle (ids: the org and the distinctive tail stay visible).
    pub middle: bool,
}

impl<'a> Column<'a> {
    pub fn fixed(title: &'a str, width: u16, right: bool) -> Column<'a> {
        Column {
            title,
            width,
            right,
            shrink: 0,
            min: width,
            middle: false,
        }
    }
}

pub struct TableSpec<'a> {
    pub columns: Vec<Column<'a>>,
    pub len: usize,
    pub selected: Option<usize>,
    /// Sorted column and direction.
    pub sort: Option<(usize, bool)>,
    pub prev_offset: usize,
    /// Columns before the first (e.g. the mark column), drawn by `lead`.
    pub lead_width: u16,
}

const GAP: u16 = 2;

/// Widths that fit `avail`, taking room from the columns in their `shrink` order.
fn fit_widths(cols: &[Column], avail: u16) -> Vec<u16> {
    let mut w: Vec<u16> = cols.iter().map(|c| c.width).collect();
    let total = |w: &[u16]| w.iter().sum::<u16>() + GAP * w.len().saturating_sub(1) as u16;
    for pass in 1..=u8::MAX {
        if !cols.iter().any(|c| c.shrink >= pass) {
            break;
        }
        for (i, c) in cols.iter().enumerate().filter(|(_, c)| c.shrink == pass) {
            let over = total(&w).saturating_sub(avail);
            w[i] -= over.min(w[i].saturating_sub(c.min));
        }
    }
    w
}

/// `text` cut to `w` columns in the middle: `lorascope-demo/…multi-adapter/lora-b`.
fn fit_middle(text: &str, w: usize) -> String {
    let n = text.chars().count();
    if n <= w || w < 8 {
        return fit(text, w);
    }
    let head = w / 3;
    let tail = w - head - 1;
    let mut s: String = text.chars().take(head).collect();
    s.push('…');
    s.extend(text.chars().skip(n - tail));
    s
}

/// Draws the header and the visible rows. `row(i)` gives the cells and style of row `i`;
/// `lead(buf, x, y, i)` draws the lead columns.
pub fn draw(
    buf: &mut Buffer,
    area: Rect,
    spec: &TableSpec,
    theme: Theme,
    row: &dyn Fn(usize) -> (Vec<String>, Style),
    lead: &mut dyn FnMut(&mut Buffer, u16, u16, usize),
) -> TableHits {
    let mut hits = TableHits::default();
    if area.height == 0 || area.width == 0 {
        return hits;
    }
    let x0 = area.x + spec.lead_width;
    let widths = fit_widths(&spec.columns, area.width.saturating_sub(spec.lead_width));
    let mut x = x0;
    for (i, (c, &w)) in spec.columns.iter().zip(&widths).enumerate() {
        // The sort arrow sits in the gap before the title, so titles keep their width.
        if let Some((_, asc)) = spec.sort.filter(|(s, _)| *s == i) {
            let arrow = if asc { "▲" } else { "▼" };
            put(buf, area, x.saturating_sub(1), area.y, arrow, theme.key());
        }
        let title = fit(c.title, w as usize);
        let tx = if c.right {
            x + w.saturating_sub(title.chars().count() as u16)
        } else {
            x
        };
        put(buf, area, tx, area.y, &title, theme.header());
        hits.cols.push((x, w));
        x = x.saturating_add(w + GAP);
    }
    hits.header_y = area.y;
    let body = Rect::new(area.x, area.y + 1, area.width, area.height - 1);
    hits.body = body;
    let height = body.height as usize;
    let sel = spec.selected.unwrap_or(0);
    let offset = scroll(spec.prev_offset, sel, height, spec.len);
    hits.offset = offset;
    for (line, i) in (offset..spec.len).take(height).enumerate() {
        let y = body.y + line as u16;
        let (cells, style) = row(i);
        let style = if spec.selected == Some(i) {
            style.patch(theme.selected())
        } else {
            style
        };
        if spec.selected == Some(i) {
            buf.set_style(Rect::new(body.x, y, body.width, 1), style);
        }
        lead(buf, area.x, y, i);
        let mut x = x0;
        for ((c, &w), text) in spec.columns.iter().zip(&widths).zip(&cells) {
            let t = if c.middle {
                fit_middle(text, w as usize)
            } else {
                fit(text, w as usize)
            };
            let tx = if c.right {
                x + w.saturating_sub(t.chars().count() as u16)
            } else {
                x
            };
            put(buf, body, tx, y, &t, style);
            x = x.saturating_add(w + GAP);
        }
    }
    hits
}
