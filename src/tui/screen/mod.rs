//! The explorer's screens. Each one owns its state, handles its commands and clicks, and draws
//! itself (`draw.rs` next to it). A screen sees what the screens share through `Shared` (adapters,
//! jobs, status bar), queues work through the job registry, and says where to go next with `Go`;
//! `App` does the going. The list lives for the whole run (it keeps its filter, selection and
//! marks under the other screens); an adapter, compare or run screen is built when opened.

pub mod adapter;
pub mod compare;
pub mod list;
pub mod run;

pub use adapter::{AdapterScreen, Tab};
pub use compare::CompareScreen;
pub use list::ListScreen;
pub use run::RunScreen;

use super::jobs::Jobs;
use super::keymap::Command;
use crate::adapter::Adapter;
use crate::view::grid::Grid;
use std::sync::Arc;

/// The screen shown (the list is `App::list`).
#[derive(Debug, Clone)]
pub enum Screen {
    List,
    Adapter(Box<AdapterScreen>),
    Compare(Box<CompareScreen>),
    Run(Box<RunScreen>),
}

impl Screen {
    /// Whether the screen shows adapter `idx` (the list shows every adapter in rows only).
    pub fn shows(&self, idx: usize) -> bool {
        match self {
            Screen::List => false,
            Screen::Adapter(v) => v.idx == idx,
            Screen::Compare(v) => v.a == idx || v.b == idx,
            Screen::Run(v) => v.shows(idx),
        }
    }
}

/// What the screens share, lent by the app while a screen handles a command or a result.
pub struct Shared<'a> {
    pub adapters: &'a [Arc<Adapter>],
    /// Per adapter: only its headers are here (a Hub row not fetched yet).
    pub remote: &'a [bool],
    pub jobs: &'a mut Jobs,
    /// The status bar's message.
    pub status: &'a mut Option<String>,
    /// Rows of the main scrolling area in the last frame (PgUp/PgDn).
    pub page: usize,
    /// The hub cache (`--cache` or the resolved one), searched for base models after the
    /// adapter's own cache.
    pub cache: Option<&'a std::path::Path>,
}

impl Shared<'_> {
    pub fn say(&mut self, msg: impl Into<String>) {
        *self.status = Some(msg.into());
    }

    /// Whether adapter `idx` has only its headers here (a Hub row not fetched yet).
    pub fn is_remote(&self, idx: usize) -> bool {
        self.remote.get(idx).copied().unwrap_or(false)
    }
}

/// Where a screen wants to go after a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Go {
    Stay,
    List,
    /// The adapter screen of this adapter.
    Adapter(usize),
    /// The compare screen of adapters A and B.
    Compare(usize, usize),
    /// The fetch popup.
    Fetch,
    /// The other source's list (`H`).
    Source,
    /// The export panel of this adapter (`x`).
    Export(usize),
    /// The Run screen of the list's run `ListScreen::runs[k]`.
    Run(usize),
    Quit,
}

/// Moves a selection of `len` items.
pub fn step(sel: usize, len: usize, cmd: Command, page: usize) -> usize {
    if len == 0 {
        return 0;
    }
    let last = len - 1;
    match cmd {
        Command::Up => sel.saturating_sub(1),
        Command::Down => (sel + 1).min(last),
        Command::Top => 0,
        Command::Bottom => last,
        Command::PageUp => sel.saturating_sub(page.max(1)),
        Command::PageDown => (sel + page.max(1)).min(last),
        _ => sel.min(last),
    }
}

/// Moves a heatmap cursor.
pub fn step2(cur: (usize, usize), grid: &Grid, cmd: Command, page: usize) -> (usize, usize) {
    let (nr, nc) = (grid.rows.len(), grid.cols.len());
    if nr == 0 || nc == 0 {
        return (0, 0);
    }
    let (r, c) = (cur.0.min(nr - 1), cur.1.min(nc - 1));
    match cmd {
        Command::Left => (r, c.saturating_sub(1)),
        Command::Right => (r, (c + 1).min(nc - 1)),
        _ => (step(r, nr, cmd, page), c),
    }
}
