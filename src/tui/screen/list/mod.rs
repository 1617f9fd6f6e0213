//! The adapter list (home): filter, sort, marks, runs that expand to their checkpoints, and
//! opening an adapter, a run or a comparison.

mod draw;
mod rows;

pub use rows::{Row, RunRow};

use super::{step, Go, Shared};
use crate::adapter::Adapter;
use crate::tui::app::{App, Hits};
use crate::tui::jobs::JobKey;
use crate::tui::keymap::{Command, Mode};
use crate::tui::model::{ListColumn, ListRow};
use crate::tui::ui::Theme;
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use std::sync::Arc;

/// The list's state.
#[derive(Debug, Clone)]
pub struct ListScreen {
    /// One row per adapter, in the order of `App::adapters`.
    pub rows: Vec<ListRow>,
    pub filter: String,
    pub editing: bool,
    pub sort: ListColumn,
    pub asc: bool,
    /// Rows shown, in display order.
    pub visible: Vec<Row>,
    /// Index into `visible`.
    pub selected: usize,
    /// Marked adapters (first is A, second is B).
    pub marked: Vec<usize>,
    /// Natural column widths over every row, so that they do not jump while scrolling.
    pub widths: Vec<u16>,
    /// The base models the list's adapters name, counted as rows arrive.
    uses: crate::adapter::BaseUses,
    /// The columns shown (the Hub list has one more).
    pub columns: Vec<ListColumn>,
    /// The folder every id starts with (`org/`, or a named folder), when all rows share one: the
    /// ID column's title shows it once and the cells leave it out, so that ids keep their
    /// distinctive part at 120 columns.
    pub org: Option<String>,
    /// The training runs among the adapters (`run::detect`), each listed as one row.
    pub runs: Vec<RunRow>,
    /// Per adapter: the run (index into `runs`) it is a checkpoint of.
    member: Vec<Option<usize>>,
    /// The ids of the runs whose checkpoints are shown under them.
    expanded: std::collections::BTreeSet<String>,
}

impl Default for ListScreen {
    fn default() -> Self {
        ListScreen {
            rows: vec![],
            filter: String::new(),
            editing: false,
            sort: ListColumn::Id,
            asc: true,
            visible: vec![],
            selected: 0,
            marked: vec![],
            widths: vec![],
            uses: Default::default(),
            columns: ListColumn::ALL.to_vec(),
            org: None,
            runs: vec![],
            member: vec![],
            expanded: Default::default(),
        }
    }
}

impl ListScreen {
    pub fn draw(&self, buf: &mut Buffer, area: Rect, app: &App, theme: Theme, hits: &mut Hits) {
        draw::draw(buf, area, app, self, theme, hits);
    }

    /// The title bar's crumb and right-hand note.
    pub fn title(&self, app: &App) -> (String, String) {
        draw::title(app, self)
    }

    pub fn modes(&self) -> Vec<Mode> {
        if self.editing {
            vec![Mode::Filter, Mode::Global]
        } else {
            vec![Mode::List, Mode::Move, Mode::Global]
        }
    }

    /// The adapter under the selection (None on a run's row).
    pub fn selected_adapter(&self) -> Option<usize> {
        self.selected_row()?.adapter()
    }

    /// The list of the Hub source: the local columns and downloads.
    pub fn hub() -> ListScreen {
        ListScreen {
            columns: ListColumn::HUB.to_vec(),
            ..ListScreen::default()
        }
    }

    /// Rows for the last `rows.len()` adapters of `all`, appended to the list (the scan's or the
    /// Hub's, as they arrive): sorted and filtered in, the selected adapter staying selected. A
    /// full model that an adapter (before or after it) names as its base becomes a `base model` row.
    pub fn add_rows(&mut self, all: &[Arc<Adapter>], rows: Vec<ListRow>) {
        let first = all.len() - rows.len();
        for a in &all[first..] {
            self.uses.add(a);
        }
        self.rows.extend(rows);
        // Rows whose count changed (full weights only: a few rows).
        for (i, a) in all.iter().enumerate() {
            let n = self.uses.count(a);
            if self.rows.get(i).is_some_and(|r| r.base_of != n) {
                let old = &self.rows[i];
                let (health, downloads, remote) = (old.health, old.downloads, old.remote);
                self.rows[i] = ListRow::new_as(a, n);
                self.rows[i].health = health;
                self.rows[i].downloads = downloads;
                self.rows[i].remote = remote;
            }
        }
        self.find_runs(all);
        self.widths();
        self.refilter();
    }

    /// The health check of adapter `idx` ended (None: it failed).
    pub fn set_health(&mut self, idx: usize, h: Option<&crate::health::Health>) {
        if let Some(r) = self.rows.get_mut(idx) {
            r.set_health(h);
        }
        self.run_health_changed(idx);
    }

    /// The row of adapter `idx` of `all` changed (a fetch replaced it) or is new (`idx ==
    /// rows.len()`). A fetched Hub row keeps its downloads; its data is local now.
    pub fn set_row(&mut self, idx: usize, all: &[Arc<Adapter>]) {
        let a = &all[idx];
        if idx >= self.rows.len() {
            self.uses.add(a);
        }
        let mut row = ListRow::new_as(a, self.uses.count(a));
        row.downloads = self.rows.get(idx).and_then(|r| r.downloads);
        match self.rows.get_mut(idx) {
            Some(r) => *r = row,
            None => self.rows.push(row),
        }
        self.find_runs(all);
    }

    /// After `set_row`s: widths and order again, with adapter `first` selected (the filter is
    /// cleared when it would hide it).
    pub fn select_new(&mut self, first: usize) {
        self.widths();
        if !self.rows[first].matches(&self.filter) {
            self.filter.clear();
            self.editing = false;
        }
        // A checkpoint of a run shows under its run, opened.
        if let Some(k) = self.member.get(first).copied().flatten() {
            self.expanded.insert(self.runs[k].run.id.clone());
        }
        self.refilter();
        if let Some(p) = self.visible.iter().position(|r| r.adapter() == Some(first)) {
            self.selected = p;
        }
    }

    /// A character typed into the filter.
    pub fn input(&mut self, ch: char) {
        if self.editing {
            self.filter.push(ch);
            self.refilter();
        }
    }

    pub fn command(&mut self, c: Command, shared: &mut Shared) -> Go {
        let len = self.visible.len();
        match c {
            Command::Up
            | Command::Down
            | Command::Top
            | Command::Bottom
            | Command::PageUp
            | Command::PageDown => {
                self.selected = step(self.selected, len, c, shared.page);
            }
            Command::Open => match self.selected_row() {
                Some(Row::Run(k)) => {
                    let members = &self.runs[k].run.members;
                    if members.iter().any(|m| shared.is_remote(m.index)) {
                        shared
                            .say("a run's timeline needs its checkpoints' data: fetch them first");
                        return Go::Stay;
                    }
                    return Go::Run(k);
                }
                Some(r) => return r.adapter().map_or(Go::Stay, Go::Adapter),
                None => {}
            },
            Command::Expand => {
                if let Some(k) = self.selected_run() {
                    self.set_expanded(k, true);
                }
            }
            Command::Collapse => {
                if let Some(Row::Run(k) | Row::Checkpoint(k, _)) = self.selected_row() {
                    self.set_expanded(k, false);
                }
            }
            Command::Filter => self.editing = true,
            Command::FilterKeep => self.editing = false,
            Command::FilterClear => {
                self.editing = false;
                self.filter.clear();
                self.refilter();
            }
            Command::FilterDelete => {
                self.filter.pop();
                self.refilter();
            }
            Command::Fetch => return Go::Fetch,
            Command::Mark => self.toggle_mark(shared),
            Command::Compare => {
                if let [a, b] = self.marked[..] {
                    if shared.is_remote(a) || shared.is_remote(b) {
                        shared.say("a comparison needs both adapters' data: F in a Hub adapter's views fetches it");
                        return Go::Stay;
                    }
                    return Go::Compare(a, b);
                }
                shared.say("mark two adapters (Space) to compare them");
            }
            Command::SortNext => {
                let cols = &self.columns;
                let i = cols.iter().position(|&x| x == self.sort).unwrap_or(0);
                self.sort(cols[(i + 1) % cols.len()], true, shared);
            }
            Command::SortReverse => self.sort(self.sort, !self.asc, shared),
            Command::Source => return Go::Source,
            Command::Export => {
                if let Some(i) = self.selected_adapter() {
                    return Go::Export(i);
                }
                if self.selected_run().is_some() {
                    shared.say("x exports one adapter: open the run (l) and pick a checkpoint");
                }
            }
            Command::Escape => {
                if let Some(f) = shared.jobs.fetch() {
                    // The fetch started here: Esc stops it first. The event loop aborts it
                    // and takes back what it added to the cache.
                    shared.jobs.cancel(&JobKey::Fetch(f.repo.clone()));
                    shared.say(format!(
                        "fetch of {} cancelled: nothing of it is left in the cache",
                        f.repo
                    ));
                } else if let Some(base) = shared.jobs.cancel_discovery() {
                    shared.say(format!(
                        "listing the adapters of {base} on the Hub stopped at {} (H twice lists them again)",
                        self.rows.len()
                    ));
                } else if !self.filter.is_empty() {
                    self.filter.clear();
                    self.refilter();
                } else if !self.marked.is_empty() {
                    self.marked.clear();
                    shared.say("marks cleared");
                }
            }
            Command::Back => return Go::Quit,
            _ => {}
        }
        Go::Stay
    }

    /// A click on a header sorts by its column; on a row selects it, or opens it if selected.
    pub fn click(&mut self, x: u16, y: u16, hits: &Hits, shared: &mut Shared) -> Go {
        let Some(t) = &hits.list else {
            return Go::Stay;
        };
        if let Some(col) = t.col_at(x, y) {
            let col = self.columns[col.min(self.columns.len() - 1)];
            let asc = col != self.sort || !self.asc;
            self.sort(col, asc, shared);
        } else if let Some(r) = t.row_at(x, y).filter(|&r| r < self.visible.len()) {
            if r == self.selected {
                return self.command(Command::Open, shared);
            }
            self.selected = r;
        }
        Go::Stay
    }

    fn sort(&mut self, col: ListColumn, asc: bool, shared: &mut Shared) {
        self.sort = col;
        self.asc = asc;
        self.refilter();
        shared.say(format!(
            "sorted by {} {}",
            col.title().to_lowercase(),
            if asc { "ascending" } else { "descending" }
        ));
    }

    fn toggle_mark(&mut self, shared: &mut Shared) {
        let Some(i) = self.selected_adapter() else {
            if self.selected_run().is_some() {
                shared.say("a run is many adapters: open it (l) and mark two checkpoints, or Enter and mark two steps");
            }
            return;
        };
        if let Some(p) = self.marked.iter().position(|&m| m == i) {
            self.marked.remove(p);
        } else {
            self.marked.push(i);
            if self.marked.len() > 2 {
                self.marked.remove(0);
            }
        }
        shared.say(match self.marked.len() {
            2 => "two marked: c compares them",
            1 => "one marked: mark another to compare",
            _ => "no adapter marked",
        });
    }

    fn widths(&mut self) {
        let ids = self.rows.iter().map(|r| r.id.as_str());
        self.org = shared_org(ids.chain(self.runs.iter().map(|r| r.row.id.as_str())));
        let all = self.all_rows();
        let widths = self
            .columns
            .iter()
            .map(|&c| {
                let w = all
                    .iter()
                    .map(|&r| match c {
                        ListColumn::Id => self.id_cell(r, false).chars().count(),
                        _ => self.row(r).width(c),
                    })
                    .max()
                    .unwrap_or(0);
                w.max(self.column_title(c).chars().count()) as u16
            })
            .collect();
        self.widths = widths;
    }

    /// A column's title: the ID column names the org its cells leave out.
    pub fn column_title(&self, c: ListColumn) -> String {
        match (c, &self.org) {
            (ListColumn::Id, Some(org)) => format!("ID · {org}"),
            _ => c.title().into(),
        }
    }
}

/// The folder prefix every id shares (`org/` of Hub ids, `/runs/x/` of named files), up to its
/// last `/`, when there are two ids or more and each has a name after it (`/` and `./` alone are
/// no prefix worth naming).
fn shared_org<'a>(mut ids: impl Iterator<Item = &'a str>) -> Option<String> {
    let first = ids.next()?;
    let mut len = first.rfind('/').map_or(0, |i| i + 1);
    let mut n = 1;
    for id in ids {
        let common = first
            .bytes()
            .zip(id.bytes())
            .take(len)
            .take_while(|(a, b)| a == b)
            .count();
        // Bytes, not chars: `/` is ASCII, so the cut stays on a char boundary.
        len = first.as_bytes()[..common]
            .iter()
            .rposition(|&b| b == b'/')
            .map_or(0, |i| i + 1);
        if len == 0 || id.len() == len {
            return None;
        }
        n += 1;
    }
    let prefix = &first[..len];
    let named = first.len() > len && !matches!(prefix, "" | "/" | "./" | "../");
    (n >= 2 && named).then(|| prefix.to_string())
}

#[cfg(test)]
mod tests {
    use super::shared_org;

    #[test]
    fn the_org_every_id_shares_is_named_once() {
        let org = |ids: &[&str]| shared_org(ids.iter().copied());
        assert_eq!(org(&["a/x", "a/y/z"]).as_deref(), Some("a/"));
        assert_eq!(org(&["a/x", "b/y"]), None);
        assert_eq!(org(&["a/x"]), None, "one row keeps its whole id");
        assert_eq!(org(&["a/x", "/tmp/a"]), None);
        assert_eq!(org(&["/r/0001.st", "/r/0002.st"]).as_deref(), Some("/r/"));
        assert_eq!(org(&["a/b/x", "a/b/y"]).as_deref(), Some("a/b/"));
        assert_eq!(org(&["a/b/x", "a/bc/y"]).as_deref(), Some("a/"));
        assert_eq!(org(&["/a/x", "/b/y"]), None, "the root alone is no prefix");
        assert_eq!(org(&["a/b", "a/b/c"]).as_deref(), Some("a/"));
        assert_eq!(
            org(&["a/é", "a/è"]).as_deref(),
            Some("a/"),
            "cut on a char boundary"
        );
        assert_eq!(org(&["./x", "./y"]), None, "relative paths are not orgs");
        assert_eq!(org(&["a/x", "plain"]), None);
        assert_eq!(org(&[]), None);
    }
}
