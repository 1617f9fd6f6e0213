//! The explorer's state and its one entry point, `App::update(Action)`. No I/O and no heavy work
//! here: work the app wants done (statistics, comparisons, plot export) is queued as `Effect`s
//! that the event loop runs, and their results come back as actions.

use super::keymap::{Command, Mode};
use super::model::{
    self, CompareMetric, CompareModel, Grid, ListColumn, ListRow, Metric, StatsColumn, StatsRow,
    TreeNode,
};
use crate::adapter::Adapter;
use crate::compare::Comparison;
use crate::stats::AdapterStats;
use ratatui::layout::{Position, Rect};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

pub type JobId = u64;

/// Everything that can happen to the app: commands from keys, mouse and terminal events, and
/// results of background work.
#[derive(Debug)]
pub enum Action {
    Command(Command),
    /// A character typed into the filter.
    Input(char),
    Click {
        x: u16,
        y: u16,
    },
    Scroll {
        x: u16,
        y: u16,
        down: bool,
    },
    Resize,
    ScanProgress {
        what: String,
        done: usize,
        total: usize,
    },
    ScanDone {
        adapters: Vec<Adapter>,
        note: Option<String>,
    },
    StatsProgress {
        job: JobId,
        done: usize,
        total: usize,
    },
    StatsDone {
        job: JobId,
        result: Result<AdapterStats, String>,
        secs: f64,
    },
    CompareProgress {
        job: JobId,
        done: usize,
        total: usize,
    },
    CompareDone {
        job: JobId,
        result: Result<CompareOutput, String>,
        secs: f64,
    },
    PlotDone(Result<PathBuf, String>),
    /// Bytes of a Hub fetch in place so far.
    FetchProgress {
        job: JobId,
        done: u64,
        total: u64,
    },
    /// A Hub fetch ended: the adapters of the fetched repo, read from the cache, or the error.
    FetchDone {
        job: JobId,
        result: Result<Vec<Adapter>, String>,
    },
}

/// What a compare job produces: the comparison and both adapters' statistics (for per-layer norms).
#[derive(Debug, Clone)]
pub struct CompareOutput {
    pub comparison: Comparison,
    pub stats_a: Arc<AdapterStats>,
    pub stats_b: Arc<AdapterStats>,
}

/// Work for the event loop.
#[derive(Debug)]
pub enum Effect {
    Stats {
        job: JobId,
        adapter: Arc<Adapter>,
    },
    /// Statistics already known are passed along so that only missing ones are computed.
    Compare {
        job: JobId,
        a: Arc<Adapter>,
        b: Arc<Adapter>,
        stats_a: Option<Arc<AdapterStats>>,
        stats_b: Option<Arc<AdapterStats>>,
    },
    Cancel(JobId),
    ExportPlot,
    /// Download `repo` from the Hub into the cache `cache` and read its adapters.
    Fetch {
        job: JobId,
        repo: crate::hub::RepoRef,
        cache: PathBuf,
    },
}

/// A Hub fetch in the background.
#[derive(Debug, Clone, PartialEq)]
pub struct FetchJob {
    pub id: JobId,
    /// The repo as typed (normalised): `ORG/NAME[@REV]`.
    pub repo: String,
    /// Bytes in place so far, of `total`.
    pub done: u64,
    pub total: u64,
}

/// Background work and its result, kept for the rest of the run once ready.
#[derive(Debug, Clone)]
pub enum Job<T> {
    Running {
        id: JobId,
        done: usize,
        total: usize,
    },
    Ready(T),
    Failed(String),
}

impl<T> Job<T> {
    /// Records progress if this is the running job `job`.
    fn progress(&mut self, job: JobId, done: usize, total: usize) {
        if let Job::Running {
            id,
            done: d,
            total: t,
        } = self
        {
            if *id == job {
                (*d, *t) = (done, total);
            }
        }
    }

    fn running_id(&self) -> Option<JobId> {
        match self {
            Job::Running { id, .. } => Some(*id),
            _ => None,
        }
    }
}

/// Removes the running job under `key` and returns its id (for cancelling); None if not running.
fn take_running<K: Eq + std::hash::Hash, T>(
    jobs: &mut HashMap<K, Job<T>>,
    key: &K,
) -> Option<JobId> {
    let id = jobs.get(key).and_then(Job::running_id)?;
    jobs.remove(key);
    Some(id)
}

/// The key whose running job is `job`; None when its result is no longer wanted (cancelled, or
/// the view was left), so the result is dropped.
fn running_key<K: Copy, T>(jobs: &HashMap<K, Job<T>>, job: JobId) -> Option<K> {
    jobs.iter()
        .find(|(_, j)| j.running_id() == Some(job))
        .map(|(k, _)| *k)
}

/// The scan that fills the list.
#[derive(Debug, Clone, PartialEq)]
pub enum ScanState {
    Scanning {
        what: String,
        done: usize,
        total: usize,
    },
    Done,
}

/// The four views of one adapter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tab {
    Tree,
    Layers,
    Experts,
    Stats,
}

impl Tab {
    pub const ALL: [Tab; 4] = [Tab::Tree, Tab::Layers, Tab::Experts, Tab::Stats];

    pub fn title(self) -> &'static str {
        match self {
            Tab::Tree => "Tree",
            Tab::Layers => "Layer map",
            Tab::Experts => "Expert map",
            Tab::Stats => "Stats",
        }
    }

    fn mode(self) -> Mode {
        match self {
            Tab::Tree => Mode::Tree,
            Tab::Layers => Mode::LayerMap,
            Tab::Experts => Mode::ExpertMap,
            Tab::Stats => Mode::Stats,
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// Views that show statistics start computing them.
    fn wants_stats(self) -> bool {
        self != Tab::Tree
    }
}

/// The adapter list's state.
#[derive(Debug, Clone)]
pub struct ListState {
    pub filter: String,
    pub editing: bool,
    pub sort: ListColumn,
    pub asc: bool,
    /// Adapter indices shown, in display order.
    pub visible: Vec<usize>,
    /// Index into `visible`.
    pub selected: usize,
    /// Marked adapters (first is A, second is B).
    pub marked: Vec<usize>,
    /// Natural column widths over every row, so that they do not jump while scrolling.
    pub widths: Vec<u16>,
}

impl Default for ListState {
    fn default() -> Self {
        ListState {
            filter: String::new(),
            editing: false,
            sort: ListColumn::Id,
            asc: true,
            visible: vec![],
            selected: 0,
            marked: vec![],
            widths: vec![],
        }
    }
}

/// One adapter's views.
#[derive(Debug, Clone)]
pub struct AdapterView {
    pub idx: usize,
    pub tab: Tab,
    pub tree: Vec<TreeNode>,
    pub expanded: Vec<bool>,
    pub visible: Vec<usize>,
    pub tree_sel: usize,
    pub metric: Metric,
    pub layers: Grid,
    pub layer_cursor: (usize, usize),
    pub expert_targets: Vec<String>,
    pub expert_target: usize,
    pub experts: Grid,
    pub expert_cursor: (usize, usize),
    pub stats_rows: Vec<StatsRow>,
    pub stats_sort: StatsColumn,
    pub stats_asc: bool,
    pub stats_sel: usize,
    pub stats_widths: Vec<u16>,
}

/// The compare screen.
#[derive(Debug, Clone)]
pub struct CompareView {
    pub a: usize,
    pub b: usize,
    pub model: Option<CompareModel>,
    pub cursor: (usize, usize),
    pub metric: CompareMetric,
}

#[derive(Debug, Clone)]
pub enum Screen {
    List,
    Adapter(Box<AdapterView>),
    Compare(Box<CompareView>),
}

/// The help popup, listing the keys of the screen it was opened on.
#[derive(Debug, Clone)]
pub struct Help {
    pub modes: Vec<Mode>,
    pub scroll: usize,
}

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
    pub tree: Option<RowsHits>,
    pub heatmap: Option<HeatmapHits>,
    pub layers: Option<RowsHits>,
    pub help: Option<Rect>,
    /// Rows of the main scrolling area (for PgUp/PgDn).
    pub page: usize,
}

/// Settings from the command line and the environment.
#[derive(Debug, Clone)]
pub struct Options {
    /// False under `NO_COLOR`.
    pub color: bool,
    /// Where `p` writes plots.
    pub export_dir: PathBuf,
    /// What is being scanned, for the first frame.
    pub scanning: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            color: true,
            export_dir: PathBuf::from("."),
            scanning: "looking for adapters".into(),
        }
    }
}

pub struct App {
    pub color: bool,
    pub export_dir: PathBuf,
    pub scan: ScanState,
    pub adapters: Vec<Arc<Adapter>>,
    pub rows: Vec<ListRow>,
    pub list: ListState,
    pub screen: Screen,
    pub help: Option<Help>,
    /// A message for the status bar, cleared by the next key.
    pub status: Option<String>,
    /// A lasting note (e.g. that the demo cache is shown).
    pub note: Option<String>,
    pub stats: HashMap<usize, Job<Arc<AdapterStats>>>,
    pub compares: HashMap<(usize, usize), Job<Arc<CompareOutput>>>,
    pub hits: Hits,
    pub quit: bool,
    /// The fetch popup's text, while it is open.
    pub fetch_input: Option<String>,
    /// The fetch running in the background.
    pub fetch: Option<FetchJob>,
    /// The hub cache fetches write into (`--cache` or the resolved HF cache; never the demo
    /// cache). None: there is none, and `F` says so.
    pub fetch_cache: Option<PathBuf>,
    effects: Vec<Effect>,
    next_job: JobId,
}

/// Moves a selection of `len` items.
fn step(sel: usize, len: usize, cmd: Command, page: usize) -> usize {
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
fn step2(cur: (usize, usize), grid: &Grid, cmd: Command, page: usize) -> (usize, usize) {
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

/// The offset that keeps `sel` visible in `height` rows, moving as little as possible from `prev`.
pub fn scroll(prev: usize, sel: usize, height: usize, len: usize) -> usize {
    if height == 0 || len <= height {
        return 0;
    }
    let max = len - height;
    let off = if sel < prev {
        sel
    } else if sel >= prev + height {
        sel + 1 - height
    } else {
        prev
    };
    off.min(max)
}

impl App {
    pub fn new(opts: Options) -> App {
        App {
            color: opts.color,
            export_dir: opts.export_dir,
            scan: ScanState::Scanning {
                what: opts.scanning,
                done: 0,
                total: 0,
            },
            adapters: vec![],
            rows: vec![],
            list: ListState::default(),
            screen: Screen::List,
            help: None,
            status: None,
            note: None,
            stats: HashMap::new(),
            compares: HashMap::new(),
            hits: Hits::default(),
            quit: false,
            fetch_input: None,
            fetch: None,
            fetch_cache: None,
            effects: vec![],
            next_job: 1,
        }
    }

    /// Work queued by the last updates, for the event loop.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// The active keymap modes, most specific first.
    pub fn modes(&self) -> Vec<Mode> {
        if self.help.is_some() {
            return vec![Mode::Help, Mode::Global];
        }
        if self.fetch_input.is_some() {
            return vec![Mode::Fetch, Mode::Global];
        }
        match &self.screen {
            Screen::List if self.list.editing => vec![Mode::Filter, Mode::Global],
            Screen::List => vec![Mode::List, Mode::Move, Mode::Global],
            Screen::Adapter(v) => vec![v.tab.mode(), Mode::Adapter, Mode::Move, Mode::Global],
            Screen::Compare(_) => vec![Mode::Compare, Mode::Move, Mode::Global],
        }
    }

    /// The adapter under the list's selection.
    pub fn selected_adapter(&self) -> Option<usize> {
        self.list.visible.get(self.list.selected).copied()
    }

    /// The adapter whose views are shown.
    pub fn current_adapter(&self) -> Option<&Arc<Adapter>> {
        match &self.screen {
            Screen::Adapter(v) => self.adapters.get(v.idx),
            _ => None,
        }
    }

    /// The statistics of an adapter, when computed.
    pub fn stats_of(&self, idx: usize) -> Option<&Arc<AdapterStats>> {
        match self.stats.get(&idx) {
            Some(Job::Ready(s)) => Some(s),
            _ => None,
        }
    }

    /// The comparison shown, when computed.
    pub fn current_comparison(&self) -> Option<&Arc<CompareOutput>> {
        match &self.screen {
            Screen::Compare(v) => match self.compares.get(&(v.a, v.b)) {
                Some(Job::Ready(c)) => Some(c),
                _ => None,
            },
            _ => None,
        }
    }

    pub fn update(&mut self, action: Action) {
        match action {
            Action::Command(c) => {
                self.status = None;
                self.command(c);
            }
            Action::Input(ch) => {
                if let Some(t) = &mut self.fetch_input {
                    t.push(ch);
                } else if self.list.editing {
                    self.list.filter.push(ch);
                    self.refilter();
                }
            }
            Action::Click { x, y } => self.click(x, y),
            Action::Scroll { x, y, down } => self.wheel(x, y, down),
            Action::Resize => {}
            Action::ScanProgress { what, done, total } => {
                if self.scan != ScanState::Done {
                    self.scan = ScanState::Scanning { what, done, total };
                }
            }
            Action::ScanDone { adapters, note } => self.scan_done(adapters, note),
            Action::StatsProgress { job, done, total } => {
                self.stats
                    .values_mut()
                    .for_each(|j| j.progress(job, done, total));
            }
            Action::StatsDone { job, result, secs } => self.stats_done(job, result, secs),
            Action::CompareProgress { job, done, total } => {
                self.compares
                    .values_mut()
                    .for_each(|j| j.progress(job, done, total));
            }
            Action::CompareDone { job, result, secs } => self.compare_done(job, result, secs),
            Action::FetchProgress { job, done, total } => {
                if let Some(f) = self.fetch.as_mut().filter(|f| f.id == job) {
                    (f.done, f.total) = (done, total);
                }
            }
            Action::FetchDone { job, result } => self.fetch_done(job, result),
            Action::PlotDone(r) => {
                self.status = Some(match r {
                    Ok(p) => format!("plot written to {}", p.display()),
                    Err(e) => e,
                });
            }
        }
    }

    fn scan_done(&mut self, adapters: Vec<Adapter>, note: Option<String>) {
        self.rows = adapters.iter().map(ListRow::new).collect();
        self.adapters = adapters.into_iter().map(Arc::new).collect();
        self.note = note;
        self.scan = ScanState::Done;
        self.list_widths();
        self.refilter();
        if self.adapters.is_empty() {
            self.status = Some("no adapters found".into());
        }
    }

    fn list_widths(&mut self) {
        self.list.widths = ListColumn::ALL
            .iter()
            .map(|&c| {
                let w = self.rows.iter().map(|r| r.width(c)).max().unwrap_or(0);
                w.max(c.title().chars().count()) as u16
            })
            .collect();
    }

    /// Adds the adapters of a finished fetch (replacing those already listed under the same id)
    /// and selects the first.
    fn fetch_done(&mut self, job: JobId, result: Result<Vec<Adapter>, String>) {
        let Some(f) = self.fetch.take_if(|f| f.id == job) else {
            return;
        };
        let adapters = match result {
            Ok(a) => a,
            Err(e) => {
                self.status = Some(e);
                return;
            }
        };
        if adapters.is_empty() {
            self.status = Some(format!("fetched {}, but found no adapter in it", f.repo));
            return;
        }
        let n = adapters.len();
        let mut first = None;
        for a in adapters {
            let row = ListRow::new(&a);
            let idx = match self.adapters.iter().position(|x| x.id == a.id) {
                Some(i) => {
                    // A new version: what was computed from the old one goes.
                    self.stats.remove(&i);
                    self.compares.retain(|k, _| k.0 != i && k.1 != i);
                    let shown = match &self.screen {
                        Screen::Adapter(v) => v.idx == i,
                        Screen::Compare(v) => v.a == i || v.b == i,
                        Screen::List => false,
                    };
                    if shown {
                        self.screen = Screen::List;
                    }
                    self.rows[i] = row;
                    self.adapters[i] = Arc::new(a);
                    i
                }
                None => {
                    self.rows.push(row);
                    self.adapters.push(Arc::new(a));
                    self.adapters.len() - 1
                }
            };
            first.get_or_insert(idx);
        }
        self.list_widths();
        let first = first.unwrap_or(0);
        if !self.rows[first].matches(&self.list.filter) {
            self.list.filter.clear();
            self.list.editing = false;
        }
        self.refilter();
        if let Some(p) = self.list.visible.iter().position(|&i| i == first) {
            self.list.selected = p;
        }
        let noun = if n == 1 { "adapter" } else { "adapters" };
        self.status = Some(format!("fetched {}: {n} {noun}", f.repo));
    }

    /// Keys while the fetch popup is open.
    fn fetch_command(&mut self, c: Command) {
        let Some(text) = &mut self.fetch_input else {
            return;
        };
        match c {
            Command::FilterDelete => {
                text.pop();
            }
            Command::FetchCancel | Command::Escape => self.fetch_input = None,
            Command::FetchStart => {
                let typed = text.trim().to_string();
                if typed.is_empty() {
                    return;
                }
                let repo: crate::hub::RepoRef = match typed.parse() {
                    Ok(r) => r,
                    Err(e) => {
                        // The popup stays open so that the id can be corrected.
                        self.status = Some(e.to_string());
                        return;
                    }
                };
                self.fetch_input = None;
                if let Some(f) = &self.fetch {
                    self.status = Some(format!("{} is still being fetched", f.repo));
                    return;
                }
                let Some(cache) = self.fetch_cache.clone() else {
                    self.status = Some(
                        "no hub cache folder to fetch into: pass --cache DIR or set \
                         HF_HUB_CACHE / HF_HOME / HOME"
                            .into(),
                    );
                    return;
                };
                let job = self.new_job();
                self.fetch = Some(FetchJob {
                    id: job,
                    repo: repo.to_string(),
                    done: 0,
                    total: 0,
                });
                self.effects.push(Effect::Fetch { job, repo, cache });
            }
            _ => {}
        }
    }

    /// Recomputes the visible rows, keeping the selected adapter selected when it stays visible.
    fn refilter(&mut self) {
        let keep = self.selected_adapter();
        let rows = &self.rows;
        let mut v: Vec<usize> = (0..rows.len())
            .filter(|&i| rows[i].matches(&self.list.filter))
            .collect();
        let (col, asc) = (self.list.sort, self.list.asc);
        v.sort_by(|&a, &b| {
            let o = col.cmp(&rows[a], &rows[b]);
            if asc {
                o
            } else {
                o.reverse()
            }
        });
        self.list.selected = keep
            .and_then(|k| v.iter().position(|&i| i == k))
            .unwrap_or(0);
        self.list.visible = v;
    }

    fn page(&self) -> usize {
        self.hits.page.max(1)
    }

    fn command(&mut self, c: Command) {
        if c == Command::Quit {
            self.quit = true;
            return;
        }
        if let Some(h) = &mut self.help {
            match c {
                Command::Escape | Command::Help | Command::Back => self.help = None,
                Command::Down => h.scroll += 1,
                Command::Up => h.scroll = h.scroll.saturating_sub(1),
                _ => {}
            }
            return;
        }
        if self.fetch_input.is_some() {
            self.fetch_command(c);
            return;
        }
        if c == Command::Help {
            self.help = Some(Help {
                modes: self.modes(),
                scroll: 0,
            });
            return;
        }
        match &self.screen {
            Screen::List => self.list_command(c),
            Screen::Adapter(_) => self.adapter_command(c),
            Screen::Compare(_) => self.compare_command(c),
        }
    }

    fn list_command(&mut self, c: Command) {
        let len = self.list.visible.len();
        match c {
            Command::Up
            | Command::Down
            | Command::Top
            | Command::Bottom
            | Command::PageUp
            | Command::PageDown => {
                self.list.selected = step(self.list.selected, len, c, self.page());
            }
            Command::Open => {
                if let Some(i) = self.selected_adapter() {
                    self.open_adapter(i);
                }
            }
            Command::Filter => self.list.editing = true,
            Command::FilterKeep => self.list.editing = false,
            Command::FilterClear => {
                self.list.editing = false;
                self.list.filter.clear();
                self.refilter();
            }
            Command::FilterDelete => {
                self.list.filter.pop();
                self.refilter();
            }
            Command::Fetch => self.fetch_input = Some(String::new()),
            Command::Mark => self.toggle_mark(),
            Command::Compare => self.open_compare(),
            Command::SortNext => {
                let i = ListColumn::ALL
                    .iter()
                    .position(|&x| x == self.list.sort)
                    .unwrap_or(0);
                self.sort_list(ListColumn::ALL[(i + 1) % ListColumn::ALL.len()], true);
            }
            Command::SortReverse => self.sort_list(self.list.sort, !self.list.asc),
            Command::Escape => {
                if !self.list.filter.is_empty() {
                    self.list.filter.clear();
                    self.refilter();
                } else if !self.list.marked.is_empty() {
                    self.list.marked.clear();
                    self.status = Some("marks cleared".into());
                }
            }
            Command::Back => self.quit = true,
            _ => {}
        }
    }

    fn sort_list(&mut self, col: ListColumn, asc: bool) {
        self.list.sort = col;
        self.list.asc = asc;
        self.refilter();
        self.status = Some(format!(
            "sorted by {} {}",
            col.title().to_lowercase(),
            if asc { "ascending" } else { "descending" }
        ));
    }

    fn toggle_mark(&mut self) {
        let Some(i) = self.selected_adapter() else {
            return;
        };
        if let Some(p) = self.list.marked.iter().position(|&m| m == i) {
            self.list.marked.remove(p);
        } else {
            self.list.marked.push(i);
            if self.list.marked.len() > 2 {
                self.list.marked.remove(0);
            }
        }
        self.status = Some(match self.list.marked.len() {
            2 => "two marked: c compares them".into(),
            1 => "one marked: mark another to compare".into(),
            _ => "no adapter marked".into(),
        });
    }

    fn new_job(&mut self) -> JobId {
        self.next_job += 1;
        self.next_job
    }

    fn open_adapter(&mut self, idx: usize) {
        let Some(a) = self.adapters.get(idx).cloned() else {
            return;
        };
        let tree = model::build_tree(&a);
        // The first layer starts open so that the tree shows its depth at once.
        let mut expanded = vec![false; tree.len()];
        if let Some(first) = tree.iter().position(|n| n.kind == model::NodeKind::Layer) {
            expanded[first] = true;
        }
        let visible = model::visible_nodes(&tree, &expanded);
        let mut v = AdapterView {
            idx,
            tab: Tab::Tree,
            tree,
            expanded,
            visible,
            tree_sel: 0,
            metric: Metric::Fro,
            layers: Grid::default(),
            layer_cursor: (0, 0),
            expert_targets: model::expert_targets(&a),
            expert_target: 0,
            experts: Grid::default(),
            expert_cursor: (0, 0),
            stats_rows: vec![],
            stats_sort: StatsColumn::Layer,
            stats_asc: true,
            stats_sel: 0,
            stats_widths: vec![],
        };
        refresh_view(&mut v, &a, self.stats_of(idx).map(Arc::as_ref));
        self.screen = Screen::Adapter(Box::new(v));
    }

    /// Starts statistics of adapter `idx` unless they are known, running, or cannot exist.
    fn ensure_stats(&mut self, idx: usize) {
        let Some(a) = self.adapters.get(idx).cloned() else {
            return;
        };
        if a.error.is_some() || (a.deltas.is_empty() && a.full.is_empty()) {
            return;
        }
        if self.stats.contains_key(&idx) {
            return;
        }
        let job = self.new_job();
        self.stats.insert(
            idx,
            Job::Running {
                id: job,
                done: 0,
                total: a.deltas.len(),
            },
        );
        self.effects.push(Effect::Stats { job, adapter: a });
    }

    /// Cancels a running statistics job of `idx`; true if there was one.
    fn cancel_stats(&mut self, idx: usize) -> bool {
        let id = take_running(&mut self.stats, &idx);
        self.cancel(id)
    }

    /// Asks the event loop to cancel job `id`; true if there was one.
    fn cancel(&mut self, id: Option<JobId>) -> bool {
        id.map(|id| self.effects.push(Effect::Cancel(id))).is_some()
    }

    fn stats_done(&mut self, job: JobId, result: Result<AdapterStats, String>, secs: f64) {
        let Some(idx) = running_key(&self.stats, job) else {
            return;
        };
        match result {
            Ok(s) => {
                let n = s.deltas.len();
                let s = Arc::new(s);
                self.stats.insert(idx, Job::Ready(s.clone()));
                if let Screen::Adapter(v) = &mut self.screen {
                    if v.idx == idx {
                        refresh_view(v, &self.adapters[idx], Some(&s));
                        self.status = Some(format!("statistics of {n} deltas in {secs:.2} s"));
                    }
                }
            }
            Err(e) => {
                self.stats.insert(idx, Job::Failed(e.clone()));
                self.status = Some(format!("statistics failed: {e}"));
            }
        }
    }

    fn adapter_command(&mut self, c: Command) {
        let page = self.page();
        let Screen::Adapter(v) = &mut self.screen else {
            return;
        };
        let idx = v.idx;
        match c {
            Command::NextView | Command::PrevView | Command::View(_) => {
                let i = v.tab.index();
                let n = Tab::ALL.len();
                let next = match c {
                    Command::NextView => (i + 1) % n,
                    Command::PrevView => (i + n - 1) % n,
                    Command::View(k) => k.min(n - 1),
                    _ => i,
                };
                self.switch_tab(Tab::ALL[next]);
                return;
            }
            Command::Escape => {
                if self.cancel_stats(idx) {
                    self.status = Some("statistics cancelled".into());
                } else {
                    self.screen = Screen::List;
                }
                return;
            }
            Command::Back => {
                // Leaving the view drops its computation: nobody would see the result.
                self.cancel_stats(idx);
                self.screen = Screen::List;
                return;
            }
            Command::ExportPlot => {
                self.effects.push(Effect::ExportPlot);
                return;
            }
            _ => {}
        }
        match v.tab {
            Tab::Tree => tree_command(v, c, page),
            Tab::Layers => match c {
                Command::NextMetric => v.metric = v.metric.next(),
                Command::Open => {
                    let (r, col) = v.layer_cursor;
                    let target = v.layers.cols.get(col).cloned();
                    let layer = v.layers.row_layers.get(r).copied();
                    if let Some(t) = target.filter(|t| v.expert_targets.contains(t)) {
                        v.expert_target =
                            v.expert_targets.iter().position(|x| *x == t).unwrap_or(0);
                        let a = self.adapters[idx].clone();
                        let st = self.stats_of(idx).cloned();
                        let Screen::Adapter(v) = &mut self.screen else {
                            return;
                        };
                        refresh_view(v, &a, st.as_deref());
                        let row = v
                            .experts
                            .row_layers
                            .iter()
                            .position(|l| Some(*l) == layer)
                            .unwrap_or(0);
                        v.expert_cursor = (row, 0);
                        self.switch_tab(Tab::Experts);
                    } else {
                        self.status = Some("not an expert target: Enter opens expert cells".into());
                    }
                }
                _ => v.layer_cursor = step2(v.layer_cursor, &v.layers, c, page),
            },
            Tab::Experts => match c {
                Command::NextMetric => v.metric = v.metric.next(),
                Command::NextTarget => {
                    if !v.expert_targets.is_empty() {
                        v.expert_target = (v.expert_target + 1) % v.expert_targets.len();
                        let a = self.adapters[idx].clone();
                        let st = self.stats_of(idx).cloned();
                        let Screen::Adapter(v) = &mut self.screen else {
                            return;
                        };
                        refresh_view(v, &a, st.as_deref());
                    }
                }
                Command::Open => {
                    let Some(st) = self.stats_of(idx).cloned() else {
                        self.status = Some("statistics are not ready yet".into());
                        return;
                    };
                    let Screen::Adapter(v) = &mut self.screen else {
                        return;
                    };
                    let (r, col) = v.expert_cursor;
                    let layer = v.experts.row_layers.get(r).copied().flatten();
                    let expert = v
                        .experts
                        .cols
                        .get(col)
                        .and_then(|e| e.parse::<usize>().ok());
                    let target = v.expert_targets.get(v.expert_target).cloned();
                    let hit = v.stats_rows.iter().position(|row| match *row {
                        StatsRow::Delta(i) => {
                            let d = &st.deltas[i];
                            d.layer == layer
                                && Some(&d.target) == target.as_ref()
                                && d.expert == expert
                        }
                        StatsRow::Full(_) => false,
                    });
                    if let Some(h) = hit {
                        v.stats_sel = h;
                        self.switch_tab(Tab::Stats);
                    }
                }
                _ => v.expert_cursor = step2(v.expert_cursor, &v.experts, c, page),
            },
            Tab::Stats => match c {
                Command::SortNext | Command::SortReverse => {
                    if c == Command::SortNext {
                        let i = StatsColumn::ALL
                            .iter()
                            .position(|&x| x == v.stats_sort)
                            .unwrap_or(0);
                        v.stats_sort = StatsColumn::ALL[(i + 1) % StatsColumn::ALL.len()];
                        v.stats_asc = true;
                    } else {
                        v.stats_asc = !v.stats_asc;
                    }
                    let (col, asc) = (v.stats_sort, v.stats_asc);
                    self.sort_stats(col, asc);
                }
                _ => v.stats_sel = step(v.stats_sel, v.stats_rows.len(), c, page),
            },
        }
    }

    fn sort_stats(&mut self, col: StatsColumn, asc: bool) {
        let Screen::Adapter(v) = &mut self.screen else {
            return;
        };
        let Some(Job::Ready(st)) = self.stats.get(&v.idx) else {
            return;
        };
        let keep = v.stats_rows.get(v.stats_sel).copied();
        v.stats_sort = col;
        v.stats_asc = asc;
        v.stats_rows = model::sort_stats_rows(st, col, asc);
        v.stats_sel = keep
            .and_then(|k| v.stats_rows.iter().position(|&r| r == k))
            .unwrap_or(0);
        self.status = Some(format!(
            "sorted by {} {}",
            col.title(),
            if asc { "ascending" } else { "descending" }
        ));
    }

    fn switch_tab(&mut self, tab: Tab) {
        let Screen::Adapter(v) = &mut self.screen else {
            return;
        };
        v.tab = tab;
        let idx = v.idx;
        if tab.wants_stats() {
            self.ensure_stats(idx);
        }
    }

    fn open_compare(&mut self) {
        if self.list.marked.len() != 2 {
            self.status = Some("mark two adapters (Space) to compare them".into());
            return;
        }
        let (a, b) = (self.list.marked[0], self.list.marked[1]);
        let mut view = CompareView {
            a,
            b,
            model: None,
            cursor: (0, 0),
            metric: CompareMetric::Cosine,
        };
        let (aa, bb) = (self.adapters[a].clone(), self.adapters[b].clone());
        match self.compares.get(&(a, b)) {
            Some(Job::Ready(c)) => {
                view.model = Some(model::compare_model(
                    &c.comparison,
                    Some(&c.stats_a),
                    Some(&c.stats_b),
                ))
            }
            Some(_) => {}
            None => {
                if let Some(e) = [&aa, &bb].iter().find_map(|x| {
                    x.error
                        .as_ref()
                        .map(|e| format!("{} cannot be compared: {e}", x.id))
                }) {
                    self.compares.insert((a, b), Job::Failed(e));
                } else {
                    let job = self.new_job();
                    let total = aa.deltas.len() + bb.deltas.len();
                    self.compares.insert(
                        (a, b),
                        Job::Running {
                            id: job,
                            done: 0,
                            total,
                        },
                    );
                    self.effects.push(Effect::Compare {
                        job,
                        a: aa,
                        b: bb,
                        stats_a: self.stats_of(a).cloned(),
                        stats_b: self.stats_of(b).cloned(),
                    });
                }
            }
        }
        self.screen = Screen::Compare(Box::new(view));
    }

    fn cancel_compare(&mut self, key: (usize, usize)) -> bool {
        let id = take_running(&mut self.compares, &key);
        self.cancel(id)
    }

    fn compare_done(&mut self, job: JobId, result: Result<CompareOutput, String>, secs: f64) {
        let Some(key) = running_key(&self.compares, job) else {
            return;
        };
        match result {
            Ok(out) => {
                // The statistics came along: keep them for the adapter views too.
                for (i, s) in [(key.0, &out.stats_a), (key.1, &out.stats_b)] {
                    if self.stats_of(i).is_none() {
                        self.stats.insert(i, Job::Ready(s.clone()));
                    }
                }
                let n = out.comparison.pairs.len();
                let out = Arc::new(out);
                self.compares.insert(key, Job::Ready(out.clone()));
                if let Screen::Compare(v) = &mut self.screen {
                    if (v.a, v.b) == key {
                        v.model = Some(model::compare_model(
                            &out.comparison,
                            Some(&out.stats_a),
                            Some(&out.stats_b),
                        ));
                        self.status = Some(format!("{n} matched deltas compared in {secs:.2} s"));
                    }
                }
            }
            Err(e) => {
                self.compares.insert(key, Job::Failed(e.clone()));
                self.status = Some(format!("compare failed: {e}"));
            }
        }
    }

    fn compare_command(&mut self, c: Command) {
        let page = self.page();
        let Screen::Compare(v) = &mut self.screen else {
            return;
        };
        let key = (v.a, v.b);
        match c {
            Command::Escape => {
                if self.cancel_compare(key) {
                    self.status = Some("compare cancelled".into());
                }
                self.screen = Screen::List;
            }
            Command::Back => {
                self.cancel_compare(key);
                self.screen = Screen::List;
            }
            Command::ExportPlot => self.effects.push(Effect::ExportPlot),
            Command::NextMetric => v.metric = v.metric.next(),
            _ => {
                if let Some(m) = &v.model {
                    v.cursor = step2(v.cursor, &m.grid, c, page);
                }
            }
        }
    }

    fn click(&mut self, x: u16, y: u16) {
        self.status = None;
        if self.help.is_some() {
            self.help = None;
            return;
        }
        if let Some(&(_, tab)) = self
            .hits
            .tabs
            .iter()
            .find(|(r, _)| r.contains(Position { x, y }))
        {
            self.switch_tab(tab);
            return;
        }
        let hits = self.hits.clone();
        let tab = match &self.screen {
            Screen::List => None,
            Screen::Adapter(v) => Some(v.tab),
            Screen::Compare(_) => {
                if let (Some(cell), Screen::Compare(v)) = (
                    hits.heatmap.as_ref().and_then(|h| h.cell_at(x, y)),
                    &mut self.screen,
                ) {
                    v.cursor = cell;
                }
                return;
            }
        };
        match tab {
            None => {
                let Some(t) = &hits.list else {
                    return;
                };
                if let Some(col) = t.col_at(x, y) {
                    let col = ListColumn::ALL[col.min(ListColumn::ALL.len() - 1)];
                    let asc = col != self.list.sort || !self.list.asc;
                    self.sort_list(col, asc);
                } else if let Some(r) = t.row_at(x, y).filter(|&r| r < self.list.visible.len()) {
                    // A click selects; a click on the selected row opens it.
                    if r == self.list.selected {
                        self.list_command(Command::Open);
                    } else {
                        self.list.selected = r;
                    }
                }
            }
            Some(Tab::Tree) => {
                let row = hits.tree.as_ref().and_then(|t| t.row_at(x, y));
                let (Some(r), Screen::Adapter(v)) = (row, &mut self.screen) else {
                    return;
                };
                if r < v.visible.len() {
                    if r == v.tree_sel {
                        tree_command(v, Command::Open, 1);
                    } else {
                        v.tree_sel = r;
                    }
                }
            }
            Some(tab @ (Tab::Layers | Tab::Experts)) => {
                let cell = hits.heatmap.as_ref().and_then(|h| h.cell_at(x, y));
                let (Some(cell), Screen::Adapter(v)) = (cell, &mut self.screen) else {
                    return;
                };
                let cur = if tab == Tab::Layers {
                    &mut v.layer_cursor
                } else {
                    &mut v.expert_cursor
                };
                if *cur == cell {
                    self.adapter_command(Command::Open);
                } else {
                    *cur = cell;
                }
            }
            Some(Tab::Stats) => {
                let (Some(t), Screen::Adapter(v)) = (&hits.stats, &mut self.screen) else {
                    return;
                };
                if let Some(col) = t.col_at(x, y) {
                    let col = StatsColumn::ALL[col.min(StatsColumn::ALL.len() - 1)];
                    let asc = col != v.stats_sort || !v.stats_asc;
                    self.sort_stats(col, asc);
                } else if let Some(r) = t.row_at(x, y).filter(|&r| r < v.stats_rows.len()) {
                    v.stats_sel = r;
                }
            }
        }
    }

    fn wheel(&mut self, _x: u16, _y: u16, down: bool) {
        let c = if down { Command::Down } else { Command::Up };
        if let Some(h) = &mut self.help {
            h.scroll = if down {
                h.scroll + 1
            } else {
                h.scroll.saturating_sub(1)
            };
            return;
        }
        // The wheel moves the selection (three rows a notch, as terminals scroll).
        for _ in 0..3 {
            match &self.screen {
                Screen::List => self.list_command(c),
                Screen::Adapter(_) => self.adapter_command(c),
                Screen::Compare(_) => self.compare_command(c),
            }
        }
    }
}

fn tree_command(v: &mut AdapterView, c: Command, page: usize) {
    let Some(&node) = v.visible.get(v.tree_sel) else {
        return;
    };
    let has_children = v.tree[node].children > 0;
    let set = |v: &mut AdapterView, open: bool| {
        v.expanded[node] = open;
        v.visible = model::visible_nodes(&v.tree, &v.expanded);
        v.tree_sel = v.visible.iter().position(|&n| n == node).unwrap_or(0);
    };
    match c {
        Command::Open if has_children => {
            let open = !v.expanded[node];
            set(v, open);
        }
        Command::Expand if has_children => set(v, true),
        Command::Collapse => {
            if has_children && v.expanded[node] {
                set(v, false);
            } else if let Some(p) = v.tree[node].parent {
                v.tree_sel = v.visible.iter().position(|&n| n == p).unwrap_or(v.tree_sel);
            }
        }
        Command::ExpandAll => {
            // Expand everything, or collapse everything when all is already open.
            let all_open = v
                .tree
                .iter()
                .zip(&v.expanded)
                .all(|(n, &e)| n.children == 0 || e);
            for (i, n) in v.tree.iter().enumerate() {
                v.expanded[i] = n.children > 0 && !all_open;
            }
            v.visible = model::visible_nodes(&v.tree, &v.expanded);
            v.tree_sel = v
                .visible
                .iter()
                .position(|&n| n == node)
                .unwrap_or_else(|| {
                    // The node was hidden: select its top-level ancestor.
                    let mut top = node;
                    while let Some(p) = v.tree[top].parent {
                        top = p;
                    }
                    v.visible.iter().position(|&n| n == top).unwrap_or(0)
                });
        }
        _ => v.tree_sel = step(v.tree_sel, v.visible.len(), c, page),
    }
}

/// Rebuilds what an adapter view derives from the statistics (grids, the stats table).
fn refresh_view(v: &mut AdapterView, a: &Adapter, st: Option<&AdapterStats>) {
    v.layers = model::layer_grid(a, st);
    v.experts = match v.expert_targets.get(v.expert_target) {
        Some(t) => model::expert_grid(a, t, st),
        None => Grid::default(),
    };
    let clamp = |cur: (usize, usize), g: &Grid| {
        (
            cur.0.min(g.rows.len().saturating_sub(1)),
            cur.1.min(g.cols.len().saturating_sub(1)),
        )
    };
    v.layer_cursor = clamp(v.layer_cursor, &v.layers);
    v.expert_cursor = clamp(v.expert_cursor, &v.experts);
    if let Some(st) = st {
        v.stats_rows = model::sort_stats_rows(st, v.stats_sort, v.stats_asc);
        v.stats_sel = v.stats_sel.min(v.stats_rows.len().saturating_sub(1));
        v.stats_widths = StatsColumn::ALL
            .iter()
            .map(|&c| {
                let w = v
                    .stats_rows
                    .iter()
                    .map(|&r| model::stats_cell(st, r, c).chars().count())
                    .max()
                    .unwrap_or(0);
                w.max(c.title().chars().count()) as u16
            })
            .collect();
    }
}
