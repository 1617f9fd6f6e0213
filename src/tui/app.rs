//! The explorer's shared state and its one entry point, `App::update(Action)`, which dispatches
//! to the screen shown (`screen`). No I/O and no heavy work here: work the screens want done
//! (statistics, comparisons, fetches, plot export) is queued as `Effect`s in the job registry
//! (`jobs`) for the event loop, and its results come back as `Progress` and `Done` actions.

use super::export_panel::{self, ExportPanel};
pub use super::hits::{HeatmapHits, Hits, RowsHits, TableHits};
use super::jobs::{FetchJob, Job, JobId, JobKey, JobOutput, Jobs};
use super::keymap::{Command, Mode};
use super::screen::{AdapterScreen, CompareScreen, Go, ListScreen, RunScreen, Screen, Shared, Tab};
use crate::adapter::Adapter;
use crate::compute::compare::Comparison;
use crate::compute::stats::AdapterStats;
use crate::tui::model::ListRow;
use std::path::PathBuf;
use std::sync::Arc;

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
    /// Adapters the scan has read, in the walk's order: they join the list while it goes on.
    ScanRows {
        adapters: Vec<Adapter>,
    },
    /// The scan ended: `adapters` are those it did not send as `ScanRows` (all of them for a
    /// scan that sent none).
    ScanDone {
        adapters: Vec<Adapter>,
        note: Option<String>,
    },
    /// Adapters a Hub discovery (job `job`) has read, in the search's order: they join the Hub
    /// list while it goes on (also while the local list is shown).
    HubRows {
        job: JobId,
        rows: Vec<crate::hub::HubAdapter>,
    },
    /// Progress of a job: deltas (statistics, comparisons) or bytes (fetches) so far.
    Progress {
        job: JobId,
        done: usize,
        total: usize,
    },
    /// What a running job has computed so far (streamed base statistics): kept with the job
    /// and shown until its result comes; dropped like a result when the job no longer runs.
    Partial {
        job: JobId,
        output: JobOutput,
    },
    /// A job ended, with its output or the error, after `secs` seconds.
    Done {
        job: JobId,
        result: Result<JobOutput, String>,
        secs: f64,
    },
    PlotDone(Result<PathBuf, String>),
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
    /// The statistics of one adapter against its base model, found in `dir` (the snapshot
    /// `base::locate` gave) under `id`.
    Base {
        job: JobId,
        adapter: Arc<Adapter>,
        id: String,
        dir: PathBuf,
    },
    /// A merged model (full weights, `adapter`) minus its base, found in `dir` under `id`.
    Merged {
        job: JobId,
        adapter: Arc<Adapter>,
        id: String,
        dir: PathBuf,
    },
    /// The intruder dimensions of delta `delta` of `adapter` against the same base (slow: a
    /// dense SVD of the base weight, kept for the run).
    Intruders {
        job: JobId,
        adapter: Arc<Adapter>,
        delta: usize,
        id: String,
        dir: PathBuf,
    },
    /// The health check of one adapter (the list's health column), one at a time.
    Health {
        job: JobId,
        adapter: Arc<Adapter>,
    },
    Cancel(JobId),
    ExportPlot,
    /// Download `repo` from the Hub into the cache `cache` and read its adapters.
    Fetch {
        job: JobId,
        repo: crate::hub::RepoRef,
        cache: PathBuf,
    },
    /// List the adapters of `base` on the Hub and read their headers (the Hub source).
    Discover {
        job: JobId,
        base: String,
    },
    /// Export `adapter` into the folder `out` (the export panel), then read the written one.
    Export {
        job: JobId,
        adapter: Arc<Adapter>,
        out: PathBuf,
        opts: crate::export::Options,
    },
    /// The timeline of a run, a checkpoint at a time, each step's timeline so far published
    /// as the job's partial result.
    Timeline {
        job: JobId,
        loaded: Box<crate::run::Loaded>,
    },
}

/// The scan that fills the list (the local walk, or the Hub's discovery).
#[derive(Debug, Clone, PartialEq)]
pub enum ScanState {
    Scanning {
        what: String,
        done: usize,
        total: usize,
    },
    Done,
    /// It ended early: why, in one line (the Hub offline or unreachable, or stopped with Esc).
    Failed(String),
}

/// Where the list's adapters come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The hub cache and the paths named.
    Local,
    /// The Hub's adapters of a base model, headers only until one is fetched.
    Hub { base: String },
}

impl Source {
    /// `local`, `Hub (base model ORG/NAME)`.
    pub fn label(&self) -> String {
        match self {
            Source::Local => "local".into(),
            Source::Hub { base } => format!("Hub (base model {base})"),
        }
    }

    pub fn is_hub(&self) -> bool {
        matches!(self, Source::Hub { .. })
    }
}

/// The list model of the source not shown: everything `App` holds per source (adapters, rows,
/// selection, filter, marks, jobs and their cached results), parked as it was. `H` swaps it with
/// the one shown, so both sources run through the same code and keep their state.
#[derive(Debug)]
pub struct ListModel {
    pub source: Source,
    pub adapters: Vec<Arc<Adapter>>,
    pub remote: Vec<bool>,
    pub list: ListScreen,
    pub jobs: Jobs,
    pub scan: ScanState,
    pub note: Option<String>,
}

/// The help popup, listing the keys of the screen it was opened on.
#[derive(Debug, Clone)]
pub struct Help {
    pub modes: Vec<Mode>,
    pub scroll: usize,
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

/// What the screens share, the popups over them, and the screen shown. `update` dispatches each
/// action to the screen it is for (see `screen`).
pub struct App {
    pub color: bool,
    pub export_dir: PathBuf,
    /// The source of the list shown; the fields up to `note` are that source's list model.
    pub source: Source,
    pub scan: ScanState,
    pub adapters: Vec<Arc<Adapter>>,
    /// Per adapter: only its headers are here (a Hub row not fetched yet).
    pub remote: Vec<bool>,
    /// The list: the home screen, kept while other screens are shown.
    pub list: ListScreen,
    pub screen: Screen,
    pub help: Option<Help>,
    /// A message for the status bar, cleared by the next key.
    pub status: Option<String>,
    /// A lasting note (e.g. that the demo cache is shown).
    pub note: Option<String>,
    /// Background work: statistics, comparisons and fetches, running or done.
    pub jobs: Jobs,
    pub hits: Hits,
    pub quit: bool,
    /// The fetch popup's text, while it is open.
    pub fetch_input: Option<String>,
    /// The hub cache fetches write into (`--cache` or the resolved HF cache; never the demo
    /// cache). None: there is none, and `F` says so.
    pub fetch_cache: Option<PathBuf>,
    /// Check every adapter's health in the background after the scan (the list's column). Off
    /// unless the explorer turns it on: `App::update` tests then see only the work they start.
    pub health: bool,
    /// The other source's list model (None until `H` is first pressed).
    pub parked: Option<Box<ListModel>>,
    /// The export panel (`x`), while it is open.
    pub export: Option<Box<ExportPanel>>,
    /// The screen to go back to when the one shown goes to the list: the Run screen under a
    /// checkpoint or a comparison of two it opened.
    pub back: Option<Screen>,
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
            source: Source::Local,
            scan: ScanState::Scanning {
                what: opts.scanning,
                done: 0,
                total: 0,
            },
            adapters: vec![],
            remote: vec![],
            list: ListScreen::default(),
            screen: Screen::List,
            help: None,
            status: None,
            note: None,
            jobs: Jobs::default(),
            hits: Hits::default(),
            quit: false,
            fetch_input: None,
            fetch_cache: None,
            health: false,
            parked: None,
            export: None,
            back: None,
        }
    }

    /// Turns the background health checks on (and starts the first when adapters are listed).
    pub fn enable_health(&mut self) {
        self.health = true;
        self.next_health();
    }

    /// Background health checks: (checked, to check) while some remain, for the list's title.
    /// Hub rows not fetched have no data to check.
    pub fn health_progress(&self) -> Option<(usize, usize)> {
        if !self.health || !matches!(self.scan, ScanState::Done) {
            return None;
        }
        let local = self.list.rows.iter().filter(|r| !r.remote);
        let (n, done) = local.fold((0, 0), |(n, d), r| {
            (n + 1, d + usize::from(r.health.is_some()))
        });
        (done < n).then_some((done, n))
    }

    /// Work queued by the last updates (for either source), for the event loop.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        let mut e = self.jobs.take_effects();
        if let Some(p) = &mut self.parked {
            e.extend(p.jobs.take_effects());
        }
        e
    }

    /// The active keymap modes, most specific first.
    pub fn modes(&self) -> Vec<Mode> {
        if self.help.is_some() {
            return vec![Mode::Help, Mode::Global];
        }
        if self.fetch_input.is_some() {
            return vec![Mode::Fetch, Mode::Global];
        }
        if let Some(p) = &self.export {
            return p.modes();
        }
        match &self.screen {
            Screen::List => self.list.modes(),
            Screen::Adapter(v) => v.modes(),
            Screen::Compare(v) => v.modes(),
            Screen::Run(v) => v.modes(),
        }
    }

    /// The adapter under the list's selection.
    pub fn selected_adapter(&self) -> Option<usize> {
        self.list.selected_adapter()
    }

    /// The adapter whose views are shown, in the layout shown (gate/up split or not).
    pub fn current_adapter(&self) -> Option<&Arc<Adapter>> {
        match &self.screen {
            Screen::Adapter(v) => v.adapter(&self.adapters),
            _ => None,
        }
    }

    /// The statistics of an adapter in its layout as loaded, when computed.
    pub fn stats_of(&self, idx: usize) -> Option<&Arc<AdapterStats>> {
        self.jobs.stats(idx, false)
    }

    /// The comparison shown, when computed.
    pub fn current_comparison(&self) -> Option<&Arc<CompareOutput>> {
        match &self.screen {
            Screen::Compare(v) => self.jobs.comparison(v.a, v.b),
            _ => None,
        }
    }

    /// The running fetch, if any (one at a time, whichever list started it).
    pub fn fetch(&self) -> Option<FetchJob> {
        self.jobs
            .fetch()
            .or_else(|| self.parked.as_ref().and_then(|p| p.jobs.fetch()))
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
                } else if let Some(p) = &mut self.export {
                    p.input(ch, &self.export_dir);
                } else {
                    self.list.input(ch);
                }
            }
            Action::Click { x, y } => self.click(x, y),
            Action::Scroll { x, y, down } => self.wheel(x, y, down),
            Action::Resize => {}
            // The local scan's messages are for the local list, wherever it is.
            Action::ScanProgress { what, done, total } => {
                self.on_model(false, |app| {
                    if app.scan != ScanState::Done {
                        app.scan = ScanState::Scanning { what, done, total };
                    }
                });
            }
            Action::ScanRows { adapters } => {
                self.on_model(false, |app| app.scan_rows(adapters));
            }
            Action::ScanDone { adapters, note } => {
                self.on_model(false, |app| app.scan_done(adapters, note));
            }
            // A job's messages go to the list model whose registry runs it.
            Action::HubRows { job, rows } => self.on_job(job, |app| app.hub_rows(rows)),
            Action::Progress { job, done, total } => {
                self.on_job(job, |app| app.progress(job, done, total))
            }
            Action::Partial { job, output } => self.on_job(job, |app| app.job_partial(job, output)),
            Action::Done { job, result, secs } => {
                self.on_job(job, |app| app.job_done(job, result, secs))
            }
            Action::PlotDone(r) => {
                self.status = Some(match r {
                    Ok(p) => format!("plot written to {}", p.display()),
                    Err(e) => e,
                });
            }
        }
    }

    /// The screen shown, the list, and what the screens share, borrowed apart.
    fn split(&mut self) -> (&mut Screen, &mut ListScreen, Shared<'_>) {
        let shared = Shared {
            adapters: &self.adapters,
            remote: &self.remote,
            jobs: &mut self.jobs,
            status: &mut self.status,
            page: self.hits.page.max(1),
            cache: self.fetch_cache.as_deref(),
        };
        (&mut self.screen, &mut self.list, shared)
    }

    /// Runs `f` on the screen shown, then goes where it asked.
    fn with_screen(&mut self, f: impl FnOnce(&mut Screen, &mut ListScreen, &mut Shared) -> Go) {
        let (screen, list, mut shared) = self.split();
        let go = f(screen, list, &mut shared);
        self.go(go);
    }

    /// Goes where a screen asked.
    fn go(&mut self, go: Go) {
        // A checkpoint or comparison opened from the Run screen comes back to it.
        let from_run = matches!(self.screen, Screen::Run(_));
        let keep_run = |app: &mut App| {
            if from_run {
                app.back = Some(std::mem::replace(&mut app.screen, Screen::List));
            }
        };
        match go {
            Go::Stay => {}
            Go::List => {
                self.screen = match self.back.take() {
                    Some(s) if !from_run => s,
                    _ => Screen::List,
                };
                // Its job may have ended while it was under another screen.
                self.with_screen(|screen, _, shared| {
                    if let Screen::Run(v) = screen {
                        v.sync(shared);
                    }
                    Go::Stay
                });
            }
            Go::Adapter(i) => {
                let (_, _, shared) = self.split();
                if let Some(v) = AdapterScreen::open(&shared, i) {
                    keep_run(self);
                    self.screen = Screen::Adapter(Box::new(v));
                }
            }
            Go::Compare(a, b) => {
                keep_run(self);
                let (screen, _, mut shared) = self.split();
                *screen = Screen::Compare(Box::new(CompareScreen::open(&mut shared, a, b)));
            }
            Go::Run(k) => {
                let (screen, list, mut shared) = self.split();
                if let Some(v) = RunScreen::open(&mut shared, list, k) {
                    *screen = Screen::Run(Box::new(v));
                }
            }
            Go::Fetch => self.fetch_input = Some(String::new()),
            Go::Source => self.toggle_source(),
            Go::Export(i) => export_panel::open(self, i),
            Go::Quit => self.quit = true,
        }
    }

    /// Swaps the list model shown with `m`.
    fn swap_model(&mut self, m: &mut ListModel) {
        std::mem::swap(&mut self.source, &mut m.source);
        std::mem::swap(&mut self.adapters, &mut m.adapters);
        std::mem::swap(&mut self.remote, &mut m.remote);
        std::mem::swap(&mut self.list, &mut m.list);
        std::mem::swap(&mut self.jobs, &mut m.jobs);
        std::mem::swap(&mut self.scan, &mut m.scan);
        std::mem::swap(&mut self.note, &mut m.note);
    }

    /// Runs `f` with the parked list model in place of the one shown: the same code serves
    /// both. A parked list has no screen open, so `f` sees the list screen (and what it does
    /// to the screen is dropped). None when nothing is parked.
    fn on_parked<R>(&mut self, f: impl FnOnce(&mut App) -> R) -> Option<R> {
        let mut m = self.parked.take()?;
        self.swap_model(&mut m);
        let screen = std::mem::replace(&mut self.screen, Screen::List);
        let back = self.back.take();
        let hits = std::mem::take(&mut self.hits);
        let r = f(self);
        self.screen = screen;
        self.back = back;
        self.hits = hits;
        self.swap_model(&mut m);
        self.parked = Some(m);
        Some(r)
    }

    /// Runs `f` on the Hub's list model (`hub`) or the local one, shown or parked.
    fn on_model<R>(&mut self, hub: bool, f: impl FnOnce(&mut App) -> R) -> Option<R> {
        if self.source.is_hub() == hub {
            Some(f(self))
        } else {
            self.on_parked(f)
        }
    }

    /// Runs `f` on the list model whose registry runs `job` (results of jobs no registry runs
    /// any more, cancelled or abandoned, are dropped).
    fn on_job(&mut self, job: JobId, f: impl FnOnce(&mut App)) {
        if self.jobs.runs(job) {
            f(self);
        } else if self.parked.as_ref().is_some_and(|p| p.jobs.runs(job)) {
            self.on_parked(f);
        }
    }

    /// `H`: shows the other source's list as it was left. The Hub's is made (and its discovery
    /// started) the first time, for the base the local adapters name (as `report --remote`);
    /// a discovery that failed or was stopped starts again when nothing else runs there.
    fn toggle_source(&mut self) {
        let mut other = match self.parked.take() {
            Some(m) => m,
            None => {
                let base = crate::hub::discover::default_base(
                    self.adapters.iter().filter_map(|a| a.base_model()),
                );
                Box::new(self.hub_model(base))
            }
        };
        let idle = !other
            .jobs
            .values()
            .any(|j| matches!(j, Job::Running { .. }));
        if let (Source::Hub { base }, ScanState::Failed(_), true) =
            (&other.source, &other.scan, idle)
        {
            other = Box::new(self.hub_model(base.clone()));
        }
        self.swap_model(&mut other);
        self.parked = Some(other);
        self.screen = Screen::List;
        // Scroll offsets and page sizes belong to the list they were drawn for.
        self.hits = Hits::default();
        if let (Source::Hub { base }, true) = (&self.source, self.list.rows.is_empty()) {
            if self.jobs.discovery().is_none() && self.scan != ScanState::Done {
                let base = base.clone();
                self.jobs
                    .start(JobKey::Discover(base.clone()), 0, |job| Effect::Discover {
                        job,
                        base,
                    });
            }
        }
        self.status = Some(format!("{} adapters (H switches)", self.source.label()));
    }

    /// A new list model for the Hub's adapters of `base`, listing.
    fn hub_model(&self, base: String) -> ListModel {
        ListModel {
            scan: ScanState::Scanning {
                what: format!("listing the adapters of {base} on the Hub"),
                done: 0,
                total: 0,
            },
            source: Source::Hub { base },
            adapters: vec![],
            remote: vec![],
            list: ListScreen::hub(),
            jobs: self.jobs.sibling(),
            note: None,
        }
    }

    /// Progress of a job of the list model shown; a discovery's is the list's scan progress.
    fn progress(&mut self, job: JobId, done: usize, total: usize) {
        self.jobs.progress(job, done, total);
        if let Some(JobKey::Discover(base)) = self.jobs.key_of(job) {
            self.scan = ScanState::Scanning {
                what: format!("reading the headers of {base}'s adapters on the Hub"),
                done,
                total,
            };
        }
    }

    fn scan_rows(&mut self, adapters: Vec<Adapter>) {
        self.add_rows(adapters.into_iter().map(|a| (a, None)).collect());
    }

    fn hub_rows(&mut self, rows: Vec<crate::hub::HubAdapter>) {
        self.add_rows(
            rows.into_iter()
                .map(|r| (r.adapter, Some(r.meta)))
                .collect(),
        );
    }

    /// Rows that arrive while the scan (or discovery) goes on are appended, so that the indices
    /// the list, the marks and the jobs hold stay valid; the list keeps its sort, filter and
    /// selection. A row with the Hub's `meta` has only its headers here.
    fn add_rows(&mut self, rows: Vec<(Adapter, Option<crate::hub::HubMeta>)>) {
        let mut made = Vec::with_capacity(rows.len());
        for (a, meta) in rows {
            let remote = meta.is_some();
            made.push(match meta {
                Some(m) => ListRow::hub(&a, m.downloads, true),
                None => ListRow::new(&a),
            });
            self.adapters.push(Arc::new(a));
            self.remote.push(remote);
        }
        self.list.add_rows(&self.adapters, made);
    }

    fn scan_done(&mut self, adapters: Vec<Adapter>, note: Option<String>) {
        self.scan_rows(adapters);
        self.note = note;
        self.scan = ScanState::Done;
        if self.adapters.is_empty() {
            self.status = Some("no adapters found".into());
        }
        self.next_health();
    }

    /// Starts the health check of the cheapest adapter not yet checked, unless one runs: one at a
    /// time on one core, so that keys and the views' own jobs keep the rest of the machine.
    pub(super) fn next_health(&mut self) {
        if !self.health || self.jobs.health_running() {
            return;
        }
        let next = (0..self.adapters.len())
            // A Hub row's data is not here until it is fetched.
            .filter(|&i| !self.remote[i])
            .filter(|&i| !self.jobs.contains(&JobKey::Health(i)))
            .min_by_key(|&i| (self.adapters[i].bytes(), i));
        if let Some(i) = next {
            let adapter = self.adapters[i].clone();
            let total = adapter.deltas.len();
            self.jobs
                .start(JobKey::Health(i), total, |job| Effect::Health {
                    job,
                    adapter,
                });
        }
    }

    /// A running job's result so far: kept with the job, and the screen shown redraws from it.
    fn job_partial(&mut self, job: JobId, output: JobOutput) {
        let Some(key) = self.jobs.partial(job, output) else {
            return;
        };
        self.with_screen(|screen, _, shared| {
            match screen {
                Screen::Adapter(v) => v.job_partial(&key, shared),
                Screen::Run(v) => v.job_partial(&key, shared),
                _ => {}
            }
            Go::Stay
        });
    }

    /// The one end of every job: the registry keeps (or drops) the result, a failure goes to
    /// the status bar, a fetch's adapters join the list, and the screen shown takes the rest.
    fn job_done(&mut self, job: JobId, result: Result<JobOutput, String>, secs: f64) {
        let Some(key) = self.jobs.finish(job, &result) else {
            return;
        };
        if let JobKey::Health(i) = key {
            // The list's column shows the verdict, or `?` when the check failed.
            let h = self.jobs.health(i).cloned();
            self.list.set_health(i, h.as_deref());
            self.next_health();
            if let Screen::Adapter(_) = &self.screen {
                self.with_screen(|screen, _, shared| {
                    if let Screen::Adapter(v) = screen {
                        v.job_done(&key, shared, secs);
                    }
                    Go::Stay
                });
            }
            return;
        }
        if let JobKey::Discover(base) = &key {
            self.discovered(base, result);
            return;
        }
        if let JobKey::Export(_) = key {
            return export_panel::done(self, result);
        }
        match result {
            Err(e) => self.status = Some(key.failure(&e)),
            Ok(JobOutput::Fetch(adapters)) => {
                if let JobKey::Fetch(repo) = &key {
                    self.fetched(repo, adapters);
                }
            }
            Ok(_) => self.with_screen(|screen, _, shared| {
                match screen {
                    Screen::Adapter(v) => v.job_done(&key, shared, secs),
                    Screen::Compare(v) => v.job_done(&key, shared, secs),
                    Screen::Run(v) => v.job_done(&key, shared, secs),
                    Screen::List => {}
                }
                Go::Stay
            }),
        }
    }

    /// The Hub's discovery ended: the list is complete, or says in one line why it is not.
    fn discovered(&mut self, base: &str, result: Result<JobOutput, String>) {
        match result {
            Ok(JobOutput::Discovered(st)) => {
                self.scan = ScanState::Done;
                self.note = Some(format!(
                    "Hub: {} repos of {base}, {} failed, {} received",
                    st.repos,
                    st.failed,
                    crate::view::text::bytes(st.bytes_transferred)
                ));
                if self.adapters.is_empty() {
                    self.status = Some(format!("no adapters of {base} on the Hub"));
                }
            }
            Ok(_) => {}
            // The title names the base; the line says why, with the way back.
            Err(e) => {
                self.scan = ScanState::Failed(format!("Hub {e} · H shows the local adapters"));
            }
        }
    }

    /// Adds the adapters of a finished fetch (replacing those already listed under the same id)
    /// and selects the first. A Hub row fetched from its own views stays open there, on the
    /// same view, and computes as a local adapter would.
    fn fetched(&mut self, repo: &str, adapters: Vec<Adapter>) {
        if adapters.is_empty() {
            self.status = Some(format!("fetched {repo}, but found no adapter in it"));
            return;
        }
        let n = adapters.len();
        let mut first = None;
        let mut reopen = None;
        for a in adapters {
            let old = self.adapters.iter().position(|x| x.id == a.id);
            if let (Some(i), Screen::Adapter(v)) = (old, &self.screen) {
                if v.idx == i && self.remote[i] {
                    reopen = Some((i, v.tab));
                }
            }
            first.get_or_insert(self.put_local(a));
        }
        self.list.select_new(first.unwrap_or(0));
        self.next_health();
        let noun = if n == 1 { "adapter" } else { "adapters" };
        self.status = Some(format!("fetched {repo}: {n} {noun}"));
        if let Some((i, tab)) = reopen {
            self.go(Go::Adapter(i));
            let view = Tab::ALL.iter().position(|&t| t == tab).unwrap_or(0);
            self.with_screen(|screen, _, shared| match screen {
                Screen::Adapter(v) => v.command(Command::View(view), shared),
                _ => Go::Stay,
            });
        }
    }

    /// Lists `a` (fetched or exported), replacing the adapter of the same id (what was
    /// computed from it goes, and a screen showing it closes); returns its index.
    pub(super) fn put_local(&mut self, a: Adapter) -> usize {
        let idx = match self.adapters.iter().position(|x| x.id == a.id) {
            Some(i) => {
                self.jobs.retain(|k| match *k {
                    JobKey::Stats(x, _)
                    | JobKey::Base(x, _)
                    | JobKey::Intruders(x, ..)
                    | JobKey::Merged(x)
                    | JobKey::Health(x)
                    | JobKey::Export(x) => x != i,
                    JobKey::Compare(x, y) => x != i && y != i,
                    JobKey::Fetch(_) | JobKey::Discover(_) | JobKey::Timeline(..) => true,
                });
                if self.screen.shows(i) || self.back.as_ref().is_some_and(|b| b.shows(i)) {
                    self.screen = Screen::List;
                    self.back = None;
                }
                self.adapters[i] = Arc::new(a);
                self.remote[i] = false;
                i
            }
            None => {
                self.adapters.push(Arc::new(a));
                self.remote.push(false);
                self.adapters.len() - 1
            }
        };
        self.list.set_row(idx, &self.adapters);
        idx
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
                if let Some(f) = self.fetch() {
                    self.status = Some(format!("{} is still being fetched", f.repo));
                    return;
                }
                let label = repo.to_string();
                if let Err(e) = self
                    .jobs
                    .start_fetch(label, repo, self.fetch_cache.as_deref())
                {
                    self.status = Some(e);
                }
            }
            _ => {}
        }
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
        if c != Command::Help && self.export.is_some() {
            return export_panel::command(self, c);
        }
        if c == Command::Help {
            self.help = Some(Help {
                modes: self.modes(),
                scroll: 0,
            });
            return;
        }
        self.screen_command(c);
    }

    /// A command for the screen shown.
    fn screen_command(&mut self, c: Command) {
        self.with_screen(|screen, list, shared| match screen {
            Screen::List => list.command(c, shared),
            Screen::Adapter(v) => v.command(c, shared),
            Screen::Compare(v) => v.command(c, shared),
            Screen::Run(v) => v.command(c, shared),
        });
        // A discovery stopped with Esc leaves the rows it read; `H` there again lists anew.
        if self.source.is_hub()
            && matches!(self.scan, ScanState::Scanning { .. })
            && self.jobs.discovery().is_none()
        {
            self.scan = ScanState::Failed(format!(
                "stopped after {} adapters · H twice lists them again",
                self.adapters.len()
            ));
        }
    }

    fn click(&mut self, x: u16, y: u16) {
        self.status = None;
        if self.help.is_some() {
            self.help = None;
            return;
        }
        let hits = self.hits.clone();
        self.with_screen(|screen, list, shared| match screen {
            Screen::List => list.click(x, y, &hits, shared),
            Screen::Adapter(v) => v.click(x, y, &hits, shared),
            Screen::Compare(v) => v.click(x, y, &hits),
            Screen::Run(v) => v.click(x, y, &hits, shared),
        });
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
            self.screen_command(c);
        }
    }
}
