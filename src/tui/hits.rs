//! What the last frame drew, kept for mouse hit-testing, page sizes and stable scroll offsets.

use super::screen::Tab;
use ratatui::layout::{Position, Rect};

/// A table the last frame drew: where its header columns and rows are.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TableHits {
    /// (x, width) of each column, in the header row `header_y`.
    pub cols: Vec<(u16, u16)>,
    pub header_y: u16,
    /// Where the rows are.
    pub body: Rect,
    pub offset: usize,
}

impl TableHits {
    pub fn row_at(&self, x: u16, y: u16) -> Option<usize> {
        self.body
            .contains(Position { x, y })
            .then(|| self.offset + (y - self.body.y) as usize)
    }

    pub fn col_at(&self, x: u16, y: u16) -> Option<usize> {
        if y != self.header_y {
            return None;
        }
        self.cols.iter().position(|&(cx, w)| x >= cx && x < cx + w)
    }
}

/// A list of rows (tree, per-layer table) the last frame drew.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RowsHits {
    pub area: Rect,
    pub offset: usize,
}

impl RowsHits {
    pub fn row_at(&self, x: u16, y: u16) -> Option<usize> {
        self.area
            .contains(Position { x, y })
            .then(|| self.offset + (y - self.area.y) as usize)
    }
}

/// A heatmap the last frame drew.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeatmapHits {
    /// The cells (without labels and header).
    pub cells: Rect,
    pub cell_w: u16,
    /// Grid rows per terminal line: 2 with half-block cells.
    pub rows_per_line: u16,
    pub row_offset: usize,
    pub col_offset: usize,
    pub nrows: usize,
    pub ncols: usize,
}

impl HeatmapHits {
    pub fn cell_at(&self, x: u16, y: u16) -> Option<(usize, usize)> {
        if !self.cells.contains(Position { x, y }) || self.cell_w == 0 {
            return None;
        }
        let r = self.row_offset + ((y - self.cells.y) * self.rows_per_line.max(1)) as usize;
        let c = self.col_offset + ((x - self.cells.x) / self.cell_w) as usize;
        (r < self.nrows && c < self.ncols).then_some((r, c))
    }
}

/// What the last frame drew, for mouse hit-testing, page sizes and stable scroll offsets.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Hits {
    pub tabs: Vec<(Rect, Tab)>,
    pub list: Option<TableHits>,
    pub stats: Option<TableHits>,
    pub health: Option<TableHits>,
    pub tree: Option<RowsHits>,
    pub heatmap: Option<HeatmapHits>,
    /// A second map beside the first (the Run screen's expert × step map).
    pub heatmap2: Option<HeatmapHits>,
    pub layers: Option<RowsHits>,
    pub help: Option<Rect>,
    /// Rows of the main scrolling area (for PgUp/PgDn).
    pub page: usize,
}
