//! One adapter's screen: five views (Tree, Layer map, Expert map, Stats, Health); the views that
//! show statistics start computing them, the Health view starts the adapter's health check (the
//! job of the list's health column, so a result already there is reused).

mod draw;

use super::{step, step2, Go, Shared};
use crate::adapter::layout::Target;
use crate::adapter::Adapter;
use crate::adapter::Kind;
use crate::base::merged::MergedReport;
use crate::base::stats::{BaseReport, Intruders};
use crate::compute::stats::AdapterStats;
use crate::health::Health;
use crate::tui::app::{App, Effect, Hits};
use crate::tui::jobs::{Job, JobKey, Jobs};
use crate::tui::keymap::{Command, Mode};
use crate::tui::model::{self, StatsColumn, StatsData, StatsRow, TreeNode};
use crate::tui::ui::Theme;
use crate::view::grid::{self, Grid, Metric};
use ratatui::buffer::Buffer;
use ratatui::layout::{Position, Rect};
use std::path::PathBuf;
use std::sync::Arc;

/// The views of one adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Tree,
    Layers,
    Experts,
    Stats,
    Health,
}

impl Tab {
    pub const ALL: [Tab; 5] = [
        Tab::Tree,
        Tab::Layers,
        Tab::Experts,
        Tab::Stats,
        Tab::Health,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Tab::Tree => "Tree",
            Tab::Layers => "Layer map",
            Tab::Experts => "Expert map",
            Tab::Stats => "Stats",
            Tab::Health => "Health",
        }
    }

    fn mode(self) -> Mode {
        match self {
            Tab::Tree => Mode::Tree,
            Tab::Layers => Mode::LayerMap,
            Tab::Experts => Mode::ExpertMap,
            Tab::Stats => Mode::Stats,
            Tab::Health => Mode::Health,
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// Views that show statistics start computing them.
    fn wants_stats(self) -> bool {
        !matches!(self, Tab::Tree | Tab::Health)
    }
}

/// One adapter's views.
#[derive(Debug, Clone)]
pub struct AdapterScreen {
    pub idx: usize,
    pub tab: Tab,
    pub tree: Vec<TreeNode>,
    pub expanded: Vec<bool>,
    pub visible: Vec<usize>,
    pub tree_sel: usize,
    pub metric: Metric,
    pub layers: Grid,
    pub layer_cursor: (usize, usize),
    pub expert_targets: Vec<Target>,
    pub expert_target: usize,
    pub experts: Grid,
    pub expert_cursor: (usize, usize),
    pub stats_rows: Vec<StatsRow>,
    pub stats_sort: StatsColumn,
    pub stats_asc: bool,
    pub stats_sel: usize,
    pub stats_widths: Vec<u16>,
    /// The Stats columns shown: the base ones join once the base statistics exist.
    pub stats_cols: Vec<StatsColumn>,
    /// The base model found for the adapter (id, snapshot folder), or why there is none.
    pub base: Result<(String, PathBuf), String>,
    /// Whether the status bar has said why the base metrics are absent (it says so once).
    base_told: bool,
    /// The intruder-dimensions job last asked for with `i` (one at a time).
    pub intruder: Option<JobKey>,
    /// The selected finding of the Health view (an index into `Health::all`).
    pub health_sel: usize,
    /// `u`: the adapter with its fused gate_up deltas split (built from the loaded deltas), shown
    /// instead of the loaded one by the maps and Stats. The Tree always shows the file as stored.
    pub split: Option<Arc<Adapter>>,
    /// The fetch `F` started for this (Hub) adapter, while it may run: Esc stops it.
    pub fetching: Option<JobKey>,
}

impl AdapterScreen {
    /// The screen of adapter `idx`, on its tree; None if there is no such adapter.
    pub fn open(shared: &Shared, idx: usize) -> Option<AdapterScreen> {
        let a = shared.adapters.get(idx)?;
        let tree = model::build_tree(a);
        // The first layer starts open so that the tree shows its depth at once.
        let mut expanded = vec![false; tree.len()];
        if let Some(first) = tree.iter().position(|n| n.kind == model::NodeKind::Layer) {
            expanded[first] = true;
        }
        let visible = model::visible_nodes(&tree, &expanded);
        // The lookup of `stats --base` (a few directory checks; the base is read by its job).
        let others: Vec<PathBuf> = shared.cache.map(PathBuf::from).into_iter().collect();
        let base = crate::base::locate(a, None, &crate::base::cache_roots(a, &others));
        let mut v = AdapterScreen {
            idx,
            tab: Tab::Tree,
            tree,
            expanded,
            visible,
            tree_sel: 0,
            metric: Metric::Fro,
            layers: Grid::default(),
            layer_cursor: (0, 0),
            expert_targets: grid::expert_targets(a),
            expert_target: 0,
            experts: Grid::default(),
            expert_cursor: (0, 0),
            stats_rows: vec![],
            stats_sort: StatsColumn::Layer,
            stats_asc: true,
            stats_sel: 0,
            stats_widths: vec![],
            stats_cols: StatsColumn::shown(false),
            base,
            base_told: false,
            intruder: None,
            health_sel: 0,
            split: None,
            fetching: None,
        };
        let got = (
            shared.jobs.stats(idx, false).map(Arc::as_ref),
            shared.jobs.base(idx, false).map(Arc::as_ref),
            shared.jobs.merged(idx).map(Arc::as_ref),
        );
        v.refresh(a, got, shared.jobs.health(idx).map(Arc::as_ref));
        Some(v)
    }

    pub fn draw(&self, buf: &mut Buffer, area: Rect, app: &App, theme: Theme, hits: &mut Hits) {
        draw::draw(buf, area, app, self, theme, hits);
    }

    /// The title bar's crumb and right-hand note.
    pub fn title(&self, app: &App) -> (String, String) {
        draw::title(app, self)
    }

    pub fn modes(&self) -> Vec<Mode> {
        vec![self.tab.mode(), Mode::Adapter, Mode::Move, Mode::Global]
    }

    /// Whether fused gate_up deltas are shown as gate and up deltas.
    pub fn split_gate_up(&self) -> bool {
        self.split.is_some()
    }

    /// The adapter as the maps and Stats show it: split or as loaded.
    pub fn adapter<'a>(&'a self, adapters: &'a [Arc<Adapter>]) -> Option<&'a Arc<Adapter>> {
        self.split.as_ref().or_else(|| adapters.get(self.idx))
    }

    /// The statistics of the layout shown, when computed.
    pub fn stats<'a>(&self, jobs: &'a Jobs) -> Option<&'a Arc<AdapterStats>> {
        jobs.stats(self.idx, self.split_gate_up())
    }

    /// The job of the statistics of the layout shown.
    pub fn key(&self) -> JobKey {
        JobKey::Stats(self.idx, self.split_gate_up())
    }

    /// The base statistics of the layout shown, when computed.
    pub fn base_report<'a>(&self, jobs: &'a Jobs) -> Option<&'a Arc<BaseReport>> {
        jobs.base(self.idx, self.split_gate_up())
    }

    /// The job of the base statistics of the layout shown.
    pub fn base_key(&self) -> JobKey {
        JobKey::Base(self.idx, self.split_gate_up())
    }

    /// A job ended: statistics of this adapter (its own, or against the base) fill the views.
    pub fn job_done(&mut self, key: &JobKey, shared: &mut Shared, secs: f64) {
        if self.intruder.as_ref() == Some(key) {
            if let Some(ir) = shared.jobs.intruders(key) {
                let text = intruder_text(ir);
                shared.say(format!("{text} ({secs:.1} s)"));
            }
            return;
        }
        if *key == JobKey::Health(self.idx) {
            // The maps mark what the check found.
            self.refresh_from(shared);
            return;
        }
        if ![self.key(), self.base_key(), self.merged_key()].contains(key) {
            return;
        }
        if self.adapter(shared.adapters).is_none() {
            return;
        }
        let st = self.stats(shared.jobs).cloned();
        let base = self.base_report(shared.jobs).cloned();
        self.refresh_from(shared);
        if *key == self.merged_key() {
            if let Some(m) = shared.jobs.merged(self.idx).cloned() {
                shared.say(format!(
                    "merged minus base {}: {} of {} weights changed in {secs:.2} s (m)",
                    m.base, m.changed, m.compared
                ));
            }
            return;
        }
        match (*key == self.key(), st, base) {
            // Full weights (a merged model, a base) have no delta: say what was measured.
            (true, Some(st), _) if st.deltas.is_empty() => shared.say(format!(
                "norms of {} full tensors in {secs:.2} s",
                st.full_tensors.len()
            )),
            (true, Some(st), _) => shared.say(format!(
                "statistics of {} deltas in {secs:.2} s",
                st.deltas.len()
            )),
            (false, _, Some(b)) => shared.say(format!(
                "against the base {}: relative change, amplification, alignment of {} deltas in {secs:.2} s (m)",
                b.base,
                b.deltas.len()
            )),
            _ => {}
        }
    }

    /// The job of a merged model minus its base.
    pub fn merged_key(&self) -> JobKey {
        JobKey::Merged(self.idx)
    }

    /// A running job published what it has so far: the base statistics (the rest pending)
    /// fill the views as they come.
    pub fn job_partial(&mut self, key: &JobKey, shared: &mut Shared) {
        if *key == self.base_key() {
            self.refresh_from(shared);
        }
    }

    /// `m`: the next metric, through the base metrics once they are computed. Without them
    /// the status bar says why, once.
    fn next_metric(&mut self, shared: &mut Shared) {
        if shared.jobs.merged(self.idx).is_some() {
            // Merged minus base: its norms, ranks and relative change (no factors to align).
            self.metric = self.metric.next_in(&Metric::MERGED);
            return;
        }
        let have = self.base_report(shared.jobs).is_some();
        self.metric = self.metric.next_with(have);
        if have || self.base_told {
            return;
        }
        let why = match (&self.base, shared.jobs.get(&self.base_key())) {
            (Err(e), _) => Some(e.clone()),
            (Ok(_), Some(Job::Running { done, total, .. })) => {
                Some(format!("still computing ({done}/{total} deltas)"))
            }
            // A failure was said when the job ended.
            (Ok(_), _) => None,
        };
        if let Some(why) = why {
            shared.say(format!("no base metrics: {why}"));
            // A running computation is not the final word: say it again until it ends.
            self.base_told = self.base.is_err();
        }
    }

    /// Cancels this view's computations; true if one ran.
    fn cancel_jobs(&self, shared: &mut Shared) -> bool {
        let own = shared.jobs.cancel(&self.key());
        let base = shared.jobs.cancel(&self.base_key());
        let merged = shared.jobs.cancel(&self.merged_key());
        let deep = self
            .intruder
            .as_ref()
            .is_some_and(|k| shared.jobs.cancel(k));
        own || base || merged || deep
    }

    /// `i`: the selected delta's intruder dimensions against the base, in the background (one
    /// job at a time: asking for another delta cancels the one running).
    fn start_intruders(&mut self, shared: &mut Shared) {
        let (id, dir) = match &self.base {
            Ok(found) => found.clone(),
            Err(e) => {
                shared.say(format!("no intruder dimensions: {e}"));
                return;
            }
        };
        let (Some(&StatsRow::Delta(row)), Some(st)) =
            (self.stats_rows.get(self.stats_sel), self.stats(shared.jobs))
        else {
            shared.say("select a delta for its intruder dimensions");
            return;
        };
        let delta = st.deltas[row].index;
        let key = JobKey::Intruders(self.idx, self.split_gate_up(), delta);
        if let Some(prev) = self.intruder.replace(key.clone()) {
            if prev != key {
                shared.jobs.cancel(&prev);
            }
        }
        if let Some(ir) = shared.jobs.intruders(&key) {
            let text = intruder_text(ir);
            shared.say(text);
            return;
        }
        if shared.jobs.contains(&key) {
            return;
        }
        let Some(adapter) = self.adapter(shared.adapters).cloned() else {
            return;
        };
        shared.jobs.start(key, 1, |job| Effect::Intruders {
            job,
            adapter,
            delta,
            id,
            dir,
        });
        shared.say("intruder dimensions: a dense SVD of the base weight (Esc cancels)");
    }

    pub fn command(&mut self, c: Command, shared: &mut Shared) -> Go {
        match c {
            Command::NextView | Command::PrevView | Command::View(_) => {
                let i = self.tab.index();
                let n = Tab::ALL.len();
                let next = match c {
                    Command::NextView => (i + 1) % n,
                    Command::PrevView => (i + n - 1) % n,
                    Command::View(k) => k.min(n - 1),
                    _ => i,
                };
                self.switch_tab(Tab::ALL[next], shared);
                return Go::Stay;
            }
            Command::Escape => {
                if let Some(key) = self.fetching.take().filter(|k| shared.jobs.cancel(k)) {
                    let JobKey::Fetch(repo) = key else {
                        return Go::Stay;
                    };
                    // The event loop aborts it and takes back what it added to the cache.
                    shared.say(format!(
                        "fetch of {repo} cancelled: nothing of it is left in the cache"
                    ));
                    return Go::Stay;
                }
                if self.cancel_jobs(shared) {
                    shared.say("statistics cancelled");
                    return Go::Stay;
                }
                return Go::List;
            }
            Command::FetchThis => {
                self.fetch_remote(shared);
                return Go::Stay;
            }
            Command::Back => {
                // Leaving the view drops its computations: nobody would see the results.
                self.cancel_jobs(shared);
                return Go::List;
            }
            Command::ExportPlot => {
                shared.jobs.request(Effect::ExportPlot);
                return Go::Stay;
            }
            // The adapter as loaded (`u` only changes how the views show it).
            Command::Export => return Go::Export(self.idx),
            Command::SplitGateUp => {
                self.toggle_split(shared);
                return Go::Stay;
            }
            _ => {}
        }
        let page = shared.page;
        match self.tab {
            Tab::Tree => self.tree_command(c, page),
            Tab::Layers => match c {
                Command::NextMetric => self.next_metric(shared),
                Command::Open => self.open_layer_cell(shared),
                _ => self.layer_cursor = step2(self.layer_cursor, &self.layers, c, page),
            },
            Tab::Experts => match c {
                Command::NextMetric => self.next_metric(shared),
                Command::NextTarget => {
                    if !self.expert_targets.is_empty() {
                        self.expert_target = (self.expert_target + 1) % self.expert_targets.len();
                        self.refresh_from(shared);
                    }
                }
                Command::Open => self.open_expert_cell(shared),
                _ => self.expert_cursor = step2(self.expert_cursor, &self.experts, c, page),
            },
            Tab::Stats => match c {
                Command::SortNext | Command::SortReverse => {
                    // The order is kept even before the statistics exist: they arrive sorted.
                    if c == Command::SortNext {
                        let cols = &self.stats_cols;
                        let i = cols.iter().position(|&x| x == self.stats_sort).unwrap_or(0);
                        self.stats_sort = cols[(i + 1) % cols.len()];
                        self.stats_asc = true;
                    } else {
                        self.stats_asc = !self.stats_asc;
                    }
                    self.sort_stats(self.stats_sort, self.stats_asc, shared);
                }
                Command::Intruders => self.start_intruders(shared),
                _ => self.stats_sel = step(self.stats_sel, self.stats_rows.len(), c, page),
            },
            Tab::Health => match c {
                Command::Open => self.open_finding(shared),
                _ => {
                    let n = self.health(shared.jobs).map_or(0, |h| h.all().count());
                    self.health_sel = step(self.health_sel, n, c, page);
                }
            },
        }
        Go::Stay
    }

    /// Tabs switch views; a click on a tree row, map cell or table row selects it, on the
    /// selected one opens it; a click on a stats header sorts by its column.
    pub fn click(&mut self, x: u16, y: u16, hits: &Hits, shared: &mut Shared) -> Go {
        if let Some(&(_, tab)) = hits
            .tabs
            .iter()
            .find(|(r, _)| r.contains(Position { x, y }))
        {
            self.switch_tab(tab, shared);
            return Go::Stay;
        }
        match self.tab {
            Tab::Tree => {
                let Some(r) = hits.tree.as_ref().and_then(|t| t.row_at(x, y)) else {
                    return Go::Stay;
                };
                if r < self.visible.len() {
                    if r == self.tree_sel {
                        self.tree_command(Command::Open, 1);
                    } else {
                        self.tree_sel = r;
                    }
                }
            }
            tab @ (Tab::Layers | Tab::Experts) => {
                let Some(cell) = hits.heatmap.as_ref().and_then(|h| h.cell_at(x, y)) else {
                    return Go::Stay;
                };
                let cur = if tab == Tab::Layers {
                    &mut self.layer_cursor
                } else {
                    &mut self.expert_cursor
                };
                if *cur == cell {
                    return self.command(Command::Open, shared);
                }
                *cur = cell;
            }
            Tab::Stats => {
                let Some(t) = &hits.stats else {
                    return Go::Stay;
                };
                if let Some(col) = t.col_at(x, y) {
                    let col = self.stats_cols[col.min(self.stats_cols.len() - 1)];
                    let asc = col != self.stats_sort || !self.stats_asc;
                    self.sort_stats(col, asc, shared);
                } else if let Some(r) = t.row_at(x, y).filter(|&r| r < self.stats_rows.len()) {
                    self.stats_sel = r;
                }
            }
            Tab::Health => {
                let n = self.health(shared.jobs).map_or(0, |h| h.all().count());
                let Some(r) = hits.health.as_ref().and_then(|t| t.row_at(x, y)) else {
                    return Go::Stay;
                };
                if r == self.health_sel {
                    return self.command(Command::Open, shared);
                }
                if r < n {
                    self.health_sel = r;
                }
            }
        }
        Go::Stay
    }

    /// Enter on a layer-map cell of an expert target opens its expert map at that layer.
    fn open_layer_cell(&mut self, shared: &mut Shared) {
        let (r, col) = self.layer_cursor;
        let target = self.layers.cols.get(col).map(|c| c.target.clone());
        let layer = self.layers.row_layers.get(r).copied();
        let Some(t) = target.filter(|t| self.expert_targets.contains(t)) else {
            shared.say("not an expert target: Enter opens expert cells");
            return;
        };
        self.expert_target = self
            .expert_targets
            .iter()
            .position(|x| *x == t)
            .unwrap_or(0);
        self.refresh_from(shared);
        let row = self
            .experts
            .row_layers
            .iter()
            .position(|l| Some(*l) == layer)
            .unwrap_or(0);
        self.expert_cursor = (row, 0);
        self.switch_tab(Tab::Experts, shared);
    }

    /// Enter on an expert-map cell selects its delta in the Stats view.
    fn open_expert_cell(&mut self, shared: &mut Shared) {
        let Some(st) = self.stats(shared.jobs) else {
            shared.say("statistics are not ready yet");
            return;
        };
        let (r, col) = self.expert_cursor;
        let layer = self.experts.row_layers.get(r).copied().flatten();
        let expert = self.experts.cols.get(col).and_then(|c| c.expert.flatten());
        let target = self.expert_targets.get(self.expert_target);
        let hit = self.stats_rows.iter().position(|row| match *row {
            StatsRow::Delta(i) => {
                let d = &st.deltas[i];
                d.layer == layer && Some(&d.target) == target && d.expert == expert
            }
            StatsRow::Merged(i) => shared.jobs.merged(self.idx).is_some_and(|m| {
                let w = &m.weights[i];
                Some(w.layer) == layer && Some(&w.target) == target && w.expert == expert
            }),
            StatsRow::Full(_) => false,
        });
        if let Some(h) = hit {
            self.stats_sel = h;
            self.switch_tab(Tab::Stats, shared);
        }
    }

    /// The adapter's health, when checked (always of the adapter as loaded: `u` does not change
    /// what is checked).
    pub fn health<'a>(&self, jobs: &'a Jobs) -> Option<&'a Arc<Health>> {
        jobs.health(self.idx)
    }

    /// Enter on a finding with a place: its cell on the expert map when it names an expert,
    /// else on the layer map (a finding of a whole target: the target's column).
    fn open_finding(&mut self, shared: &mut Shared) {
        let Some(h) = self.health(shared.jobs).cloned() else {
            shared.say("the health check is not ready yet");
            return;
        };
        let Some(f) = h.all().nth(self.health_sel) else {
            return;
        };
        let Some(target) = f.target.as_deref().map(Target::parse) else {
            shared.say("this finding is about the whole adapter: no cell to show");
            return;
        };
        // The maps may show gate_up split: its findings then point at the gate half.
        let shown = |ts: &[Target]| {
            if !ts.contains(&target) && target == Target::GateUp && ts.contains(&Target::Gate) {
                Target::Gate
            } else {
                target.clone()
            }
        };
        if let Some(e) = f.expert {
            let t = shown(&self.expert_targets);
            if let Some(i) = self.expert_targets.iter().position(|x| *x == t) {
                self.expert_target = i;
                self.refresh_from(shared);
                let row = self.experts.row_layers.iter().position(|l| *l == f.layer);
                let col = self
                    .experts
                    .cols
                    .iter()
                    .position(|c| c.expert == Some(Some(e)));
                if let (Some(r), Some(c)) = (row, col) {
                    self.expert_cursor = (r, c);
                    self.switch_tab(Tab::Experts, shared);
                    return;
                }
            }
        }
        let cols: Vec<Target> = self.layers.cols.iter().map(|c| c.target.clone()).collect();
        let t = shown(&cols);
        let Some(c) = cols.iter().position(|x| *x == t) else {
            shared.say(format!("{t} is not on the layer map"));
            return;
        };
        // The finding's layer, or (a whole target) the target's first cell.
        let g = &self.layers;
        let rows = 0..g.rows.len();
        let r = rows
            .clone()
            .find(|&r| g.row_layers[r] == f.layer && g.cell(r, c).is_some())
            .or_else(|| rows.clone().find(|&r| g.cell(r, c).is_some()))
            .unwrap_or(0);
        self.layer_cursor = (r, c);
        self.switch_tab(Tab::Layers, shared);
    }

    fn sort_stats(&mut self, col: StatsColumn, asc: bool, shared: &mut Shared) {
        let Some(st) = self.stats(shared.jobs) else {
            return;
        };
        let data = StatsData {
            st,
            base: self.base_report(shared.jobs).map(Arc::as_ref),
            merged: shared.jobs.merged(self.idx).map(Arc::as_ref),
        };
        let keep = self.stats_rows.get(self.stats_sel).copied();
        self.stats_sort = col;
        self.stats_asc = asc;
        self.stats_rows = data.sorted(col, asc);
        self.stats_sel = keep
            .and_then(|k| self.stats_rows.iter().position(|&r| r == k))
            .unwrap_or(0);
        shared.say(format!(
            "sorted by {} {}",
            col.title(),
            if asc { "ascending" } else { "descending" }
        ));
    }

    fn switch_tab(&mut self, tab: Tab, shared: &mut Shared) {
        self.tab = tab;
        if tab.wants_stats() {
            self.ensure_stats(shared);
        }
        if tab == Tab::Health {
            self.ensure_health(shared);
        }
    }

    /// A Hub adapter has only its headers here: asking for what needs its data offers to fetch
    /// it (true), else nothing (false).
    fn offer_fetch(&self, shared: &mut Shared, what: &str) -> bool {
        if !shared.is_remote(self.idx) {
            return false;
        }
        if self
            .fetching
            .as_ref()
            .is_some_and(|k| shared.jobs.contains(k))
        {
            return true;
        }
        let failed = shared
            .adapters
            .get(self.idx)
            .is_some_and(|a| a.error.is_some());
        if !failed {
            shared.say(format!(
                "{what} need the adapter's data: only its headers are here. F fetches it (Esc cancels)"
            ));
        }
        true
    }

    /// `F` on a Hub adapter: downloads it into the hub cache in the background (progress in the
    /// status bar, Esc cancels); when it is in, the views compute as for a local adapter.
    fn fetch_remote(&mut self, shared: &mut Shared) {
        let Some(a) = shared.adapters.get(self.idx).cloned() else {
            return;
        };
        if !shared.is_remote(self.idx) {
            shared.say(format!("{} is here already: nothing to fetch", a.id));
            return;
        }
        let repo = match a.id.parse::<crate::hub::RepoRef>() {
            Ok(r) => crate::hub::RepoRef {
                // The commit its headers were read at.
                revision: a.revision.clone().unwrap_or_else(|| r.revision.clone()),
                ..r
            },
            Err(e) => {
                shared.say(e.to_string());
                return;
            }
        };
        let short: String = repo.revision.chars().take(10).collect();
        let label = format!("{}@{short}", a.id);
        match shared.jobs.start_fetch(label, repo, shared.cache) {
            Ok(key) => self.fetching = Some(key),
            Err(e) => shared.say(e),
        }
    }

    /// Starts the health check unless the list's background checks already did (or do).
    fn ensure_health(&self, shared: &mut Shared) {
        let key = JobKey::Health(self.idx);
        if self.offer_fetch(shared, "health checks") {
            return;
        }
        let Some(a) = shared.adapters.get(self.idx) else {
            return;
        };
        if shared.jobs.contains(&key) {
            return;
        }
        let adapter = a.clone();
        shared
            .jobs
            .start(key, a.deltas.len(), |job| Effect::Health { job, adapter });
    }

    /// Starts the statistics unless they are known, running, or cannot exist (yet: a Hub
    /// adapter is fetched first).
    fn ensure_stats(&self, shared: &mut Shared) {
        if self.offer_fetch(shared, "statistics") {
            return;
        }
        let Some(a) = self.adapter(shared.adapters) else {
            return;
        };
        if a.error.is_some() || (a.deltas.is_empty() && a.full.is_empty()) {
            return;
        }
        if !shared.jobs.contains(&self.key()) {
            let adapter = a.clone();
            shared
                .jobs
                .start(self.key(), a.deltas.len(), |job| Effect::Stats {
                    job,
                    adapter,
                });
        }
        // Against the base too, when it was found (a base that cannot be opened fails the job
        // with the reason, said once in the status bar).
        if let Ok((id, dir)) = &self.base {
            if a.kind == Kind::FullWeights && !shared.jobs.contains(&self.merged_key()) {
                // A merged model: its weights minus the base's (total: the weights, once known).
                let (adapter, id, dir) = (a.clone(), id.clone(), dir.clone());
                shared
                    .jobs
                    .start(self.merged_key(), 0, |job| Effect::Merged {
                        job,
                        adapter,
                        id,
                        dir,
                    });
            }
            if !a.deltas.is_empty() && !shared.jobs.contains(&self.base_key()) {
                let (adapter, id, dir) = (a.clone(), id.clone(), dir.clone());
                shared
                    .jobs
                    .start(self.base_key(), a.deltas.len(), |job| Effect::Base {
                        job,
                        adapter,
                        id,
                        dir,
                    });
            }
        }
    }

    fn tree_command(&mut self, c: Command, page: usize) {
        let Some(&node) = self.visible.get(self.tree_sel) else {
            return;
        };
        let has_children = self.tree[node].children > 0;
        let set = |v: &mut AdapterScreen, open: bool| {
            v.expanded[node] = open;
            v.visible = model::visible_nodes(&v.tree, &v.expanded);
            v.tree_sel = v.visible.iter().position(|&n| n == node).unwrap_or(0);
        };
        match c {
            Command::Open if has_children => {
                let open = !self.expanded[node];
                set(self, open);
            }
            Command::Expand if has_children => set(self, true),
            Command::Collapse => {
                if has_children && self.expanded[node] {
                    set(self, false);
                } else if let Some(p) = self.tree[node].parent {
                    self.tree_sel = self
                        .visible
                        .iter()
                        .position(|&n| n == p)
                        .unwrap_or(self.tree_sel);
                }
            }
            Command::ExpandAll => {
                // Expand everything, or collapse everything when all is already open.
                let all_open = self
                    .tree
                    .iter()
                    .zip(&self.expanded)
                    .all(|(n, &e)| n.children == 0 || e);
                for (i, n) in self.tree.iter().enumerate() {
                    self.expanded[i] = n.children > 0 && !all_open;
                }
                self.visible = model::visible_nodes(&self.tree, &self.expanded);
                self.tree_sel = self
                    .visible
                    .iter()
                    .position(|&n| n == node)
                    .unwrap_or_else(|| {
                        // The node was hidden: select its top-level ancestor.
                        let mut top = node;
                        while let Some(p) = self.tree[top].parent {
                            top = p;
                        }
                        self.visible.iter().position(|&n| n == top).unwrap_or(0)
                    });
            }
            _ => self.tree_sel = step(self.tree_sel, self.visible.len(), c, page),
        }
    }

    fn refresh_from(&mut self, shared: &Shared) {
        if let Some(a) = self.adapter(shared.adapters).cloned() {
            let (st, base) = (self.stats(shared.jobs), self.base_report(shared.jobs));
            let health = self.health(shared.jobs).map(Arc::as_ref);
            let merged = shared.jobs.merged(self.idx).map(Arc::as_ref);
            let got = (st.map(Arc::as_ref), base.map(Arc::as_ref), merged);
            self.refresh(&a, got, health);
        }
    }

    /// `u`: shows fused gate_up deltas as gate and up deltas, or fused again. Statistics are
    /// kept per layout (`JobKey::Stats`): the other layout's are shown when known, else
    /// computed; a computation still running for the layout left is cancelled, so its result
    /// never reaches this view.
    fn toggle_split(&mut self, shared: &mut Shared) {
        let Some(loaded) = shared.adapters.get(self.idx) else {
            return;
        };
        if self.split.is_none() && !loaded.has_fused_gate_up() {
            shared.say("no fused gate_up deltas to split in this adapter");
            return;
        }
        self.cancel_jobs(shared);
        let target = self.expert_targets.get(self.expert_target).cloned();
        self.split = match self.split {
            Some(_) => None,
            None => Some(Arc::new(loaded.with_split_gate_up())),
        };
        let Some(a) = self.adapter(shared.adapters).cloned() else {
            return;
        };
        // Stay on the same projection: gate_up ↔ its gate half, gate or up ↔ gate_up.
        self.expert_targets = grid::expert_targets(&a);
        let want = match (target, self.split_gate_up()) {
            (Some(Target::GateUp), true) => Some(Target::Gate),
            (Some(Target::Gate | Target::Up), false) => Some(Target::GateUp),
            (t, _) => t,
        };
        self.expert_target = want
            .and_then(|t| self.expert_targets.iter().position(|x| *x == t))
            .unwrap_or(0);
        // The rows index the other layout's statistics.
        self.stats_rows.clear();
        self.stats_widths.clear();
        self.stats_sel = 0;
        self.refresh_from(shared);
        if self.tab.wants_stats() {
            self.ensure_stats(shared);
        }
        shared.say(if self.split_gate_up() {
            "gate/up split: gate_proj and up_proj as deltas of their own"
        } else {
            "gate/up fused: gate_up_proj as one delta"
        });
    }

    /// Rebuilds what the views derive from the statistics (grids, the stats table), with the
    /// base metrics when `base` is there and the health check's marks on the maps.
    /// A merged model minus its base (`merged`) shows its differences instead of the model's
    /// full tensors.
    fn refresh(
        &mut self,
        a: &Adapter,
        (st, base, merged): (
            Option<&AdapterStats>,
            Option<&BaseReport>,
            Option<&MergedReport>,
        ),
        health: Option<&Health>,
    ) {
        if let Some(m) = merged {
            self.expert_targets = grid::merged_expert_targets(m);
            self.expert_target = self
                .expert_target
                .min(self.expert_targets.len().saturating_sub(1));
            self.layers = grid::merged_layer_grid(m);
            self.experts = match self.expert_targets.get(self.expert_target) {
                Some(t) => grid::merged_expert_grid(m, t),
                None => Grid::default(),
            };
            if !Metric::MERGED.contains(&self.metric) {
                self.metric = Metric::Fro;
            }
            self.stats_cols = StatsColumn::merged();
        } else {
            self.layers = grid::layer_grid(a, st, base);
            self.experts = match self.expert_targets.get(self.expert_target) {
                Some(t) => grid::expert_grid(a, t, st, base),
                None => Grid::default(),
            };
            // A layout without base statistics (yet) shows the adapter's own metrics and columns.
            if base.is_none() && self.metric.needs_base() {
                self.metric = Metric::Fro;
            }
            self.stats_cols = StatsColumn::shown_with(base.is_some(), a.is_dora());
        }
        if !self.stats_cols.contains(&self.stats_sort) {
            (self.stats_sort, self.stats_asc) = (StatsColumn::Layer, true);
        }
        if let Some(h) = health {
            grid::mark_findings(&mut self.layers, &h.findings);
            grid::mark_findings(&mut self.experts, &h.findings);
        }
        let clamp = |cur: (usize, usize), g: &Grid| {
            (
                cur.0.min(g.rows.len().saturating_sub(1)),
                cur.1.min(g.cols.len().saturating_sub(1)),
            )
        };
        self.layer_cursor = clamp(self.layer_cursor, &self.layers);
        self.expert_cursor = clamp(self.expert_cursor, &self.experts);
        if let Some(st) = st {
            let data = StatsData { st, base, merged };
            let keep = self.stats_rows.get(self.stats_sel).copied();
            self.stats_rows = data.sorted(self.stats_sort, self.stats_asc);
            self.stats_sel = keep
                .and_then(|k| self.stats_rows.iter().position(|&r| r == k))
                .unwrap_or(self.stats_sel)
                .min(self.stats_rows.len().saturating_sub(1));
            self.stats_widths = self
                .stats_cols
                .iter()
                .map(|&c| {
                    let w = self
                        .stats_rows
                        .iter()
                        .map(|&r| data.cell(r, c).chars().count())
                        .max()
                        .unwrap_or(0);
                    w.max(c.title().chars().count()) as u16
                })
                .collect();
        }
    }
}

/// `3 intruder dimensions in the top 10 (ε 0.5): σ 1.2, 0.8, 0.3`.
pub fn intruder_text(ir: &Intruders) -> String {
    let sigma: Vec<String> = ir
        .sigma
        .iter()
        .map(|&s| crate::view::text::num(s))
        .collect();
    let head = format!(
        "{} intruder dimensions in the top {} (ε {})",
        ir.count, ir.k, ir.epsilon
    );
    if sigma.is_empty() {
        head
    } else {
        format!("{head}: σ {}", sigma.join(", "))
    }
}
