//! Two marked adapters compared: the comparison runs as a job when opened, its model fills the
//! screen when it is done.

mod draw;

use super::{step2, Go, Shared};
use crate::tui::app::{App, Effect, Hits};
use crate::tui::jobs::{Job, JobKey};
use crate::tui::keymap::{Command, Mode};
use crate::tui::model::{self, CompareModel};
use crate::tui::ui::Theme;
use crate::view::grid::CompareMetric;
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;

/// The compare screen of adapters `a` and `b` (indices).
#[derive(Debug, Clone)]
pub struct CompareScreen {
    pub a: usize,
    pub b: usize,
    pub model: Option<CompareModel>,
    pub cursor: (usize, usize),
    pub metric: CompareMetric,
}

impl CompareScreen {
    /// The screen of `a` and `b`: with the comparison when known, else its job is started
    /// (statistics already known go along, so only missing ones are computed).
    pub fn open(shared: &mut Shared, a: usize, b: usize) -> CompareScreen {
        let mut v = CompareScreen {
            a,
            b,
            model: None,
            cursor: (0, 0),
            metric: CompareMetric::Cosine,
        };
        let key = v.key();
        if shared.jobs.contains(&key) {
            v.fill(shared);
            return v;
        }
        let (Some(aa), Some(bb)) = (
            shared.adapters.get(a).cloned(),
            shared.adapters.get(b).cloned(),
        ) else {
            return v;
        };
        if let Some(e) = [&aa, &bb].iter().find_map(|x| {
            x.error
                .as_ref()
                .map(|e| format!("{} cannot be compared: {e}", x.id))
        }) {
            shared.jobs.insert(key, Job::Failed(e));
            return v;
        }
        let total = aa.deltas.len() + bb.deltas.len();
        let (stats_a, stats_b) = (
            shared.jobs.stats(a, false).cloned(),
            shared.jobs.stats(b, false).cloned(),
        );
        shared.jobs.start(key, total, |job| Effect::Compare {
            job,
            a: aa,
            b: bb,
            stats_a,
            stats_b,
        });
        v
    }

    pub fn draw(&self, buf: &mut Buffer, area: Rect, app: &App, theme: Theme, hits: &mut Hits) {
        draw::draw(buf, area, app, self, theme, hits);
    }

    /// The title bar's crumb.
    pub fn title(&self, app: &App) -> (String, String) {
        let id = |i: usize| app.adapters.get(i).map_or("?", |a| a.id.as_str());
        (
            format!("compare {} ↔ {}", id(self.a), id(self.b)),
            String::new(),
        )
    }

    pub fn modes(&self) -> Vec<Mode> {
        vec![Mode::Compare, Mode::Move, Mode::Global]
    }

    fn key(&self) -> JobKey {
        JobKey::Compare(self.a, self.b)
    }

    /// The model of the comparison, when it is known.
    fn fill(&mut self, shared: &Shared) -> bool {
        let Some(c) = shared.jobs.comparison(self.a, self.b) else {
            return false;
        };
        self.model = Some(model::compare_model(
            &c.comparison,
            Some(&c.stats_a),
            Some(&c.stats_b),
        ));
        true
    }

    /// A job ended: this comparison fills the screen.
    pub fn job_done(&mut self, key: &JobKey, shared: &mut Shared, secs: f64) {
        if *key != self.key() || !self.fill(shared) {
            return;
        }
        let n = shared
            .jobs
            .comparison(self.a, self.b)
            .map_or(0, |c| c.comparison.pairs.len());
        shared.say(format!("{n} matched deltas compared in {secs:.2} s"));
    }

    pub fn command(&mut self, c: Command, shared: &mut Shared) -> Go {
        match c {
            Command::Escape => {
                if shared.jobs.cancel(&self.key()) {
                    shared.say("compare cancelled");
                }
                return Go::List;
            }
            Command::Back => {
                shared.jobs.cancel(&self.key());
                return Go::List;
            }
            Command::ExportPlot => shared.jobs.request(Effect::ExportPlot),
            Command::NextMetric => self.metric = self.metric.next(),
            _ => {
                if let Some(m) = &self.model {
                    self.cursor = step2(self.cursor, &m.grid, c, shared.page);
                }
            }
        }
        Go::Stay
    }

    /// A click on a heatmap cell moves the cursor there.
    pub fn click(&mut self, x: u16, y: u16, hits: &Hits) -> Go {
        if let Some(cell) = hits.heatmap.as_ref().and_then(|h| h.cell_at(x, y)) {
            self.cursor = cell;
        }
        Go::Stay
    }
}
