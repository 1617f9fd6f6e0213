//! The Run screen: a training run's timeline (docs/runs.md). A layer × step map of the metric
//! `m` picks, an expert × step map of the selected layer's expert target, sparklines of the
//! selected row over the steps and the trainer's loss curve. The timeline is a background job
//! that measures a checkpoint at a time and publishes what it knows after each, so columns fill
//! in as checkpoints are read. Enter opens a step's checkpoint, two marked steps open the
//! compare screen; both come back here.

mod charts;
mod draw;
mod maps;

use super::list::ListScreen;
use super::{step2, Go, Shared};
use crate::adapter::layout::Target;
use crate::run::{Loaded, Run};
use crate::tui::app::{App, Effect, Hits};
use crate::tui::jobs::{Job, JobKey, RunOutput};
use crate::tui::keymap::{Command, Mode};
use crate::tui::ui::Theme;
use crate::view::measure::StepMetric;
pub use maps::Maps;
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use std::sync::Arc;

/// Which map the cursor keys move in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Focus {
    Layers,
    Experts,
}

/// The Run screen's state.
#[derive(Debug, Clone)]
pub struct RunScreen {
    /// The run (its checkpoints: steps and the list's adapter indices).
    pub run: Run,
    pub metric: StepMetric,
    /// The layer map's targets: every target together (None), then each one.
    pub targets: Vec<Option<Target>>,
    pub target: usize,
    pub focus: Focus,
    /// The layer map's cursor: (layer row, step column).
    pub cursor: (usize, usize),
    /// The expert map's row (its step column is the layer map's).
    pub expert_row: usize,
    /// Marked step columns (first is A, second is B).
    pub marked: Vec<usize>,
    /// What the job has read so far (kept when it is cancelled).
    pub data: Option<Arc<RunOutput>>,
    /// The maps of `data` as shown.
    pub maps: Maps,
}

impl RunScreen {
    /// The screen of the list's run `k`; its timeline job starts unless it ran or runs already.
    pub fn open(shared: &mut Shared, list: &ListScreen, k: usize) -> Option<RunScreen> {
        let run = list.runs.get(k)?.run.clone();
        let shown = crate::run::shown(shared.adapters, &run);
        let mut targets: Vec<Target> = shown.deltas.iter().map(|d| d.target.clone()).collect();
        targets.sort();
        targets.dedup();
        let mut v = RunScreen {
            targets: std::iter::once(None)
                .chain(targets.into_iter().map(Some))
                .collect(),
            target: 0,
            metric: StepMetric::default(),
            focus: Focus::Layers,
            cursor: (0, 0),
            expert_row: 0,
            marked: vec![],
            data: None,
            maps: Maps::default(),
            run,
        };
        let key = v.key();
        if !shared.jobs.contains(&key) {
            let adapters = v
                .run
                .members
                .iter()
                .map(|m| (*shared.adapters[m.index]).clone())
                .collect();
            let loaded = Box::new(Loaded {
                run: v.run.clone(),
                adapters,
            });
            let n = v.run.members.len();
            shared
                .jobs
                .start(key, n, |job| Effect::Timeline { job, loaded });
        }
        // The last column first: it is measured first, and it is where a run ends up.
        v.cursor.1 = v.run.members.len().saturating_sub(1);
        v.sync(shared);
        Some(v)
    }

    /// The timeline job's key.
    pub fn key(&self) -> JobKey {
        JobKey::Timeline(self.run.id.clone(), self.run.members.len())
    }

    /// Whether the screen shows adapter `idx` (one of its checkpoints).
    pub fn shows(&self, idx: usize) -> bool {
        self.run.members.iter().any(|m| m.index == idx)
    }

    pub fn draw(&self, buf: &mut Buffer, area: Rect, app: &App, theme: Theme, hits: &mut Hits) {
        draw::draw(buf, area, app, self, theme, hits);
    }

    pub fn title(&self, app: &App) -> (String, String) {
        draw::title(app, self)
    }

    pub fn modes(&self) -> Vec<Mode> {
        vec![Mode::Run, Mode::Move, Mode::Global]
    }

    /// The layer map's target (None: every target).
    pub fn target(&self) -> Option<&Target> {
        self.targets.get(self.target).and_then(Option::as_ref)
    }

    /// Takes the job's latest result (or what it has so far) and rebuilds the maps.
    pub fn sync(&mut self, shared: &mut Shared) {
        if let Some(d) = shared.jobs.timeline(&self.key()) {
            self.data = Some(d.clone());
        }
        self.rebuild();
    }

    /// The maps of the data shown, for the target, metric and cursor chosen.
    fn rebuild(&mut self) {
        let target = self.target().cloned();
        self.maps = Maps::build(self.data.as_deref(), target.as_ref(), self.cursor.0);
        // Until the first columns are known there is nothing to keep the cursor in.
        let (nr, nc) = (self.maps.layers.rows.len(), self.maps.layers.cols.len());
        if nr > 0 && nc > 0 {
            self.cursor = (self.cursor.0.min(nr - 1), self.cursor.1.min(nc - 1));
        }
        let ne = self.maps.experts.as_ref().map_or(0, |(_, g)| g.rows.len());
        self.expert_row = self.expert_row.min(ne.saturating_sub(1));
        if ne == 0 {
            self.focus = Focus::Layers;
        }
    }

    /// What the job has published meanwhile: the columns measured so far.
    pub fn job_partial(&mut self, key: &JobKey, shared: &mut Shared) {
        if *key == self.key() {
            self.sync(shared);
        }
    }

    pub fn job_done(&mut self, key: &JobKey, shared: &mut Shared, secs: f64) {
        if *key != self.key() {
            return;
        }
        self.sync(shared);
        if let Some(Job::Ready(_)) = shared.jobs.get(key) {
            let n = self.run.members.len();
            let cached = self.data.as_ref().map_or(0, |d| {
                d.timeline.checkpoints.iter().filter(|c| c.cached).count()
            });
            shared.say(format!(
                "timeline of {n} checkpoints in {secs:.2} s ({cached} from the cache)"
            ));
        }
    }

    /// The adapter (list index) of step column `c`.
    fn checkpoint(&self, c: usize) -> Option<usize> {
        self.run.members.get(c).map(|m| m.index)
    }

    pub fn command(&mut self, c: Command, shared: &mut Shared) -> Go {
        match c {
            Command::Escape => {
                if let Some(Job::Running { done, total, .. }) = shared.jobs.get(&self.key()) {
                    let msg = format!("timeline cancelled after {done} of {total} checkpoints");
                    shared.jobs.cancel(&self.key());
                    shared.say(msg);
                    return Go::Stay;
                }
                return Go::List;
            }
            Command::Back => {
                shared.jobs.cancel(&self.key());
                return Go::List;
            }
            Command::Open => {
                if let Some(i) = self.checkpoint(self.cursor.1) {
                    return Go::Adapter(i);
                }
            }
            Command::Mark => self.toggle_mark(shared),
            Command::Compare => {
                if let [a, b] = self.marked[..] {
                    let (a, b) = (a.min(b), a.max(b));
                    if let (Some(x), Some(y)) = (self.checkpoint(a), self.checkpoint(b)) {
                        return Go::Compare(x, y);
                    }
                }
                shared.say("mark two steps (Space) to compare their checkpoints");
            }
            Command::NextMetric => {
                self.metric = self.metric.next();
                self.rebuild();
            }
            Command::NextTarget => {
                self.target = (self.target + 1) % self.targets.len().max(1);
                self.rebuild();
            }
            Command::NextView => {
                if self.focus == Focus::Layers && self.maps.experts.is_some() {
                    self.focus = Focus::Experts;
                } else {
                    self.focus = Focus::Layers;
                }
            }
            Command::ExportPlot => shared.jobs.request(Effect::ExportPlot),
            _ => self.move_cursor(c, shared.page),
        }
        Go::Stay
    }

    fn move_cursor(&mut self, c: Command, page: usize) {
        match (self.focus, &self.maps.experts) {
            (Focus::Experts, Some((_, g))) => {
                let (r, col) = step2((self.expert_row, self.cursor.1), g, c, page);
                self.expert_row = r;
                self.cursor.1 = col;
            }
            _ => {
                let layer = self.cursor.0;
                self.cursor = step2(self.cursor, &self.maps.layers, c, page);
                // Another layer has other experts.
                if self.cursor.0 != layer {
                    self.rebuild();
                }
            }
        }
    }

    fn toggle_mark(&mut self, shared: &mut Shared) {
        let c = self.cursor.1;
        if c >= self.run.members.len() {
            return;
        }
        if let Some(p) = self.marked.iter().position(|&m| m == c) {
            self.marked.remove(p);
        } else {
            self.marked.push(c);
            if self.marked.len() > 2 {
                self.marked.remove(0);
            }
        }
        shared.say(match self.marked.len() {
            2 => "two steps marked: c compares their checkpoints",
            1 => "one step marked: mark another to compare",
            _ => "no step marked",
        });
    }

    /// A click on a map's cell moves the cursor there (and the keys to that map); a second
    /// click on the selected step opens its checkpoint.
    pub fn click(&mut self, x: u16, y: u16, hits: &Hits, shared: &mut Shared) -> Go {
        if let Some((r, c)) = hits.heatmap.as_ref().and_then(|h| h.cell_at(x, y)) {
            if self.focus == Focus::Layers && (r, c) == self.cursor {
                return self.command(Command::Open, shared);
            }
            self.focus = Focus::Layers;
            let layer = self.cursor.0;
            self.cursor = (r, c);
            if r != layer {
                self.rebuild();
            }
        } else if let Some((r, c)) = hits.heatmap2.as_ref().and_then(|h| h.cell_at(x, y)) {
            if self.focus == Focus::Experts && (r, c) == (self.expert_row, self.cursor.1) {
                return self.command(Command::Open, shared);
            }
            self.focus = Focus::Experts;
            self.expert_row = r;
            self.cursor.1 = c;
        }
        Go::Stay
    }
}
