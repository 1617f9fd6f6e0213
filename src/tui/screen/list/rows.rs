//! The list's rows: adapters, training runs (`run::detect`: one row each, in place of their
//! checkpoints) and the checkpoints of the runs expanded under them. Which rows are shown, in
//! which order, what their ID cells say and where the selection goes as rows change.

use super::ListScreen;
use crate::adapter::{Adapter, Kind};
use crate::health::Verdict;
use crate::run::Run;
use crate::tui::model::{ListColumn, ListRow};
use std::sync::Arc;

/// A row of the list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Row {
    /// The adapter at this index (not a checkpoint of a run).
    Adapter(usize),
    /// The run `ListScreen::runs[k]`.
    Run(usize),
    /// Run `k`'s checkpoint, the adapter at this index, under its expanded run.
    Checkpoint(usize, usize),
}

impl Row {
    /// The adapter of the row (None for a run).
    pub fn adapter(self) -> Option<usize> {
        match self {
            Row::Adapter(i) | Row::Checkpoint(_, i) => Some(i),
            Row::Run(_) => None,
        }
    }
}

/// A run of the list with its row.
#[derive(Debug, Clone)]
pub struct RunRow {
    pub run: Run,
    pub row: ListRow,
}

/// What the selection is on, kept across changes of the rows (run indices change as runs are
/// found; adapter indices and run ids do not).
enum Keep {
    Adapter(usize),
    Run(String),
}

/// A checkpoint that could not be read (it has no health to wait for).
fn unreadable(r: &ListRow) -> bool {
    matches!(r.kind, Kind::Error | Kind::NoSafetensors)
}

impl ListScreen {
    /// The formatted row of `r`.
    pub fn row(&self, r: Row) -> &ListRow {
        match r {
            Row::Adapter(i) | Row::Checkpoint(_, i) => &self.rows[i],
            Row::Run(k) => &self.runs[k].row,
        }
    }

    /// The row under the selection.
    pub fn selected_row(&self) -> Option<Row> {
        self.visible.get(self.selected).copied()
    }

    /// The run under the selection (an index into `runs`).
    pub fn selected_run(&self) -> Option<usize> {
        match self.selected_row()? {
            Row::Run(k) => Some(k),
            _ => None,
        }
    }

    /// Rows shown at the top level (adapters and runs, not the checkpoints under runs).
    pub fn top_level(&self) -> usize {
        self.visible
            .iter()
            .filter(|r| !matches!(r, Row::Checkpoint(..)))
            .count()
    }

    /// Adapters listed outside runs, and runs.
    pub fn counts(&self) -> (usize, usize) {
        let members = self.member.iter().flatten().count();
        (self.rows.len() - members, self.runs.len())
    }

    /// Finds the runs among `all` (the list's adapters, in its order) again: as rows arrive a
    /// folder's checkpoints become one run, and a fetch may change one.
    pub(super) fn find_runs(&mut self, all: &[Arc<Adapter>]) {
        self.member = vec![None; all.len()];
        self.runs = crate::run::detect::detect(all)
            .into_iter()
            .enumerate()
            .map(|(k, run)| {
                run.members
                    .iter()
                    .for_each(|m| self.member[m.index] = Some(k));
                let mut row = ListRow::run(all, &run);
                row.health = self.run_health(&run);
                RunRow { run, row }
            })
            .collect();
    }

    /// A run's health column: the worst verdict of its readable checkpoints once all are
    /// checked (`?` when a check failed).
    fn run_health(&self, run: &Run) -> Option<Option<Verdict>> {
        let (mut worst, mut failed) = (None, false);
        for m in &run.members {
            let r = &self.rows[m.index];
            if unreadable(r) {
                continue;
            }
            match r.health? {
                None => failed = true,
                Some(v) => worst = worst.max(Some(v)),
            }
        }
        Some(if failed { None } else { worst })
    }

    /// The health of adapter `idx` changed: so may its run's.
    pub(super) fn run_health_changed(&mut self, idx: usize) {
        if let Some(k) = self.member.get(idx).copied().flatten() {
            let h = self.run_health(&self.runs[k].run);
            self.runs[k].row.health = h;
        }
    }

    /// Whether run `k` shows its checkpoints.
    pub fn is_expanded(&self, k: usize) -> bool {
        self.runs
            .get(k)
            .is_some_and(|r| self.expanded.contains(&r.run.id))
    }

    /// Shows or hides run `k`'s checkpoints; the run stays selected.
    pub(super) fn set_expanded(&mut self, k: usize, open: bool) {
        let Some(id) = self.runs.get(k).map(|r| r.run.id.clone()) else {
            return;
        };
        if open {
            self.expanded.insert(id);
        } else {
            self.expanded.remove(&id);
        }
        self.refilter();
        if let Some(p) = self.visible.iter().position(|&r| r == Row::Run(k)) {
            self.selected = p;
        }
    }

    /// The ID cell: without the shared org; a run with its ▸/▾, a checkpoint indented under its
    /// run with the rest of its id (`last`: the last checkpoint shown under it).
    pub fn id_cell(&self, r: Row, last: bool) -> String {
        let short = |id: &str| -> String {
            match &self.org {
                Some(org) => id.strip_prefix(org.as_str()).unwrap_or(id).into(),
                None => id.into(),
            }
        };
        match r {
            Row::Adapter(i) => short(&self.rows[i].id),
            Row::Run(k) => {
                let mark = if self.is_expanded(k) { "▾" } else { "▸" };
                format!("{mark} {}", short(&self.runs[k].row.id))
            }
            Row::Checkpoint(k, i) => {
                let id = &self.rows[i].id;
                let run = format!("{}/", self.runs[k].row.id);
                let tail = id
                    .strip_prefix(run.as_str())
                    .map_or_else(|| short(id), String::from);
                format!("  {} {tail}", if last { "└" } else { "├" })
            }
        }
    }

    /// A row's cell as the list shows it.
    pub fn cell_of(&self, r: Row, c: ListColumn, last: bool) -> String {
        match c {
            ListColumn::Id => self.id_cell(r, last),
            _ => self.row(r).cell(c),
        }
    }

    /// Every row the list can show (each run's checkpoints too, so that widths do not jump as
    /// runs open and close).
    pub(super) fn all_rows(&self) -> Vec<Row> {
        let mut out: Vec<Row> = (0..self.rows.len())
            .filter(|&i| self.member.get(i).copied().flatten().is_none())
            .map(Row::Adapter)
            .collect();
        for (k, r) in self.runs.iter().enumerate() {
            out.push(Row::Run(k));
            out.extend(r.run.members.iter().map(|m| Row::Checkpoint(k, m.index)));
        }
        out
    }

    fn keep(&self) -> Option<Keep> {
        Some(match self.selected_row()? {
            Row::Adapter(i) | Row::Checkpoint(_, i) => Keep::Adapter(i),
            Row::Run(k) => Keep::Run(self.runs.get(k)?.run.id.clone()),
        })
    }

    /// Recomputes the rows shown: adapters and runs that match the filter (a run matches when
    /// it or one of its checkpoints does), sorted; under each expanded run its checkpoints in
    /// step order (those matching, or all when the run itself matches). The selection stays on
    /// its adapter or run (on the run, when its checkpoint is folded into it).
    pub(super) fn refilter(&mut self) {
        let keep = self.keep();
        let f = self.filter.as_str();
        let matches = |i: usize| self.rows[i].matches(f);
        let mut top: Vec<Row> = (0..self.rows.len())
            .filter(|&i| self.member.get(i).copied().flatten().is_none() && matches(i))
            .map(Row::Adapter)
            .collect();
        for (k, r) in self.runs.iter().enumerate() {
            if r.row.matches(f) || r.run.members.iter().any(|m| matches(m.index)) {
                top.push(Row::Run(k));
            }
        }
        let (col, asc) = (self.sort, self.asc);
        top.sort_by(|&a, &b| {
            let o = col.cmp(self.row(a), self.row(b));
            if asc {
                o
            } else {
                o.reverse()
            }
        });
        let mut v = Vec::with_capacity(top.len());
        for r in top {
            v.push(r);
            if let Row::Run(k) = r {
                if self.is_expanded(k) {
                    let all = self.runs[k].row.matches(f);
                    let members = self.runs[k].run.members.iter();
                    v.extend(
                        members
                            .filter(|m| all || matches(m.index))
                            .map(|m| Row::Checkpoint(k, m.index)),
                    );
                }
            }
        }
        let at = |want: &dyn Fn(&Row) -> bool| v.iter().position(want);
        self.selected = match keep {
            Some(Keep::Adapter(i)) => at(&|r| r.adapter() == Some(i)).or_else(|| {
                let k = self.member.get(i).copied().flatten()?;
                at(&|r| *r == Row::Run(k))
            }),
            Some(Keep::Run(id)) => at(&|r| matches!(r, Row::Run(k) if self.runs[*k].run.id == id)),
            None => None,
        }
        .unwrap_or(0);
        self.visible = v;
    }
}
