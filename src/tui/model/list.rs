//! The adapter list's rows and columns, formatted once per adapter.

use crate::adapter::{Adapter, Kind};
use crate::health::{Health, Verdict};
use crate::run::Run;
use crate::view::text;
use crate::view::text::compact_targets;
use std::borrow::Borrow;
use std::cmp::Ordering;

/// What a run row says of its run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunInfo {
    pub checkpoints: usize,
    pub first: u64,
    pub last: u64,
}

/// One row of the adapter list, formatted once.
#[derive(Debug, Clone)]
pub struct ListRow {
    pub id: String,
    pub kind: Kind,
    pub pattern: &'static str,
    pub targets: String,
    pub attn_rank: Option<usize>,
    pub expert_rank: Option<usize>,
    pub expert_layers: Vec<usize>,
    pub expert_layers_text: String,
    pub dtype: String,
    pub bytes: u64,
    pub size: String,
    pub tensors: usize,
    pub error: Option<String>,
    /// Tensors not understood: marked `?N` after the pattern.
    pub unrecognised: usize,
    /// Adapters of the list that name it as their base (a base model row says how many).
    pub base_of: usize,
    /// The detail line: path, base model, deltas, notes.
    pub detail: Vec<String>,
    /// The health check: not yet (None), failed (Some(None)) or its verdict.
    pub health: Option<Option<Verdict>>,
    /// Downloads over the last 30 days, for a row of the Hub source.
    pub downloads: Option<u64>,
    /// Only its headers are here (a Hub row not fetched yet): nothing is computed on it.
    pub remote: bool,
    /// The row of a training run: its checkpoints and steps.
    pub run: Option<RunInfo>,
    /// Lower-case text the filter searches.
    haystack: String,
}

impl ListRow {
    pub fn new(a: &Adapter) -> ListRow {
        ListRow::new_as(a, a.base_of)
    }

    /// The row when `base_of` adapters of the list name `a` as their base.
    pub fn new_as(a: &Adapter, base_of: usize) -> ListRow {
        ListRow::of_summary(a.summary_as(base_of), &a.layer_indices())
    }

    /// The row of a training run (`run::detect`): its summary (`run::summary`), `run` with its
    /// checkpoints and steps in the pattern column, and its unreadable checkpoints in the detail.
    pub fn run<A: Borrow<Adapter>>(adapters: &[A], r: &Run) -> ListRow {
        let at = |i: usize| -> &Adapter { adapters[i].borrow() };
        let mut row = ListRow::of_summary(
            crate::run::summary(adapters, r),
            &crate::run::shown(adapters, r).layer_indices(),
        );
        let (first, last) = r.steps();
        let info = RunInfo {
            checkpoints: r.members.len(),
            first,
            last,
        };
        row.pattern = "run";
        row.detail[1] = format!(
            "run ({} naming) · {} checkpoints · steps {first}–{last} · {}",
            r.scheme.as_str(),
            info.checkpoints,
            row.detail[1]
        );
        for m in &r.members {
            let a = at(m.index);
            if crate::run::detect::unreadable(a) {
                let why = a.error.as_deref().unwrap_or("no safetensors file");
                row.detail
                    .push(format!("step {} unreadable: {why}", m.step));
            }
        }
        row.haystack = format!("{} run {}", row.haystack, r.scheme.as_str());
        row.run = Some(info);
        row
    }

    fn of_summary(s: crate::adapter::Summary, all_layers: &[usize]) -> ListRow {
        let expert_layers_text = if s.expert_layers.len() > 1 && s.expert_layers == all_layers {
            format!("all {}", s.expert_layers.len())
        } else {
            text::layers(&s.expert_layers)
        };
        let dtype = if s.dtypes.is_empty() {
            "-".into()
        } else {
            s.dtypes.join(",")
        };
        let mut detail = vec![s.path.clone()];
        let mut facts = vec![format!("{} ({})", s.kind.as_str(), s.pattern.as_str())];
        if let Some(r) = &s.revision {
            facts.push(format!("rev {}", &r[..r.len().min(10)]));
        }
        if let Some(b) = &s.base_model {
            facts.push(format!("base {b}"));
        }
        if s.base_of > 0 {
            facts.push(format!(
                "the base of {} adapter{} in the list",
                s.base_of,
                if s.base_of == 1 { "" } else { "s" }
            ));
        }
        if s.deltas > 0 {
            facts.push(format!("{} deltas on {} layers", s.deltas, s.layers));
        }
        if let Some(e) = s.experts {
            facts.push(format!("{e} experts"));
        }
        detail.push(facts.join(" · "));
        detail.extend(s.notes.iter().cloned());
        let targets = if let Some(e) = &s.error {
            // The reason without the file's path, which the detail line shows in full.
            e.rsplit_once(".safetensors: ")
                .map_or(e.as_str(), |(_, r)| r)
                .to_string()
        } else {
            compact_targets(&s.targets)
        };
        let haystack = format!(
            "{} {} {} {}{}",
            s.id,
            s.pattern.as_str(),
            s.targets.join(" "),
            dtype,
            if s.unrecognised > 0 {
                " unrecognised"
            } else {
                ""
            }
        )
        .to_lowercase();
        ListRow {
            id: s.id,
            kind: s.kind,
            pattern: s.pattern.as_str(),
            base_of: s.base_of,
            targets,
            attn_rank: s.attention_rank,
            expert_rank: s.expert_rank,
            expert_layers: s.expert_layers,
            expert_layers_text,
            dtype,
            bytes: s.bytes,
            size: text::bytes(s.bytes),
            tensors: s.tensors,
            error: s.error,
            unrecognised: s.unrecognised,
            detail,
            health: None,
            downloads: None,
            remote: false,
            run: None,
            haystack,
        }
    }

    /// The row of an adapter of the Hub source: its downloads, and whether only its headers are
    /// here (the detail line then says how to get its data).
    pub fn hub(a: &Adapter, downloads: Option<u64>, remote: bool) -> ListRow {
        let mut r = ListRow::new(a);
        r.downloads = downloads;
        r.remote = remote;
        if remote && a.error.is_none() {
            r.detail.insert(
                2.min(r.detail.len()),
                "on the Hub, headers only: F in its views fetches it for statistics and health"
                    .into(),
            );
        }
        r
    }

    /// Records the health check's outcome; its worst finding joins the detail lines.
    pub fn set_health(&mut self, h: Option<&Health>) {
        self.health = Some(h.map(|h| h.verdict));
        let Some(h) = h else {
            return;
        };
        let worst = h.all().max_by_key(|f| f.severity);
        let line = match worst {
            Some(f) if h.verdict != Verdict::Ok => format!(
                "health {} {}: {} ({} findings: `lorascope check` lists them)",
                h.verdict.mark(),
                f.code,
                f.message,
                h.all().count()
            ),
            _ => format!("health {} ok", h.verdict.mark()),
        };
        self.detail.insert(2.min(self.detail.len()), line);
    }

    /// Every word of the filter must occur (case-insensitive).
    pub fn matches(&self, filter: &str) -> bool {
        filter
            .split_whitespace()
            .all(|w| self.haystack.contains(&w.to_lowercase()))
    }

    /// The natural width of a column for this row (an error message is cut, not widened for).
    pub fn width(&self, c: ListColumn) -> usize {
        match (c, &self.error) {
            (ListColumn::Targets, Some(_)) => 8,
            _ => self.cell(c).chars().count(),
        }
    }

    pub fn cell(&self, c: ListColumn) -> String {
        match c {
            ListColumn::Id => self.id.clone(),
            // `attn` keeps the column narrow; the detail line spells the pattern out.
            ListColumn::Pattern => {
                if let Some(r) = &self.run {
                    return format!("run {} ckpts {}–{}", r.checkpoints, r.first, r.last);
                }
                let p = if self.base_of > 0 {
                    text::pattern_cell(crate::adapter::Pattern::BaseModel, self.base_of)
                } else {
                    self.pattern.replace("attention", "attn")
                };
                match self.unrecognised {
                    0 => p,
                    n => format!("{p} ?{n}"),
                }
            }
            ListColumn::Targets => self.targets.clone(),
            ListColumn::AttnRank => text::opt(self.attn_rank),
            ListColumn::ExpertRank => text::opt(self.expert_rank),
            ListColumn::ExpertLayers => self.expert_layers_text.clone(),
            ListColumn::Dtype => self.dtype.clone(),
            ListColumn::Size => self.size.clone(),
            ListColumn::Tensors => self.tensors.to_string(),
            ListColumn::Downloads => text::opt(self.downloads),
            // A Hub row is checked once its data is here.
            ListColumn::Health if self.remote => "-".into(),
            ListColumn::Health => match self.health {
                Some(Some(v)) => v.mark().into(),
                Some(None) => "?".into(),
                None => "…".into(),
            },
        }
    }
}

/// A column of the adapter list (each one sorts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListColumn {
    Id,
    Pattern,
    Targets,
    AttnRank,
    ExpertRank,
    ExpertLayers,
    Dtype,
    Size,
    Tensors,
    Health,
    /// The Hub source's extra column.
    Downloads,
}

impl ListColumn {
    /// The columns of the local list.
    pub const ALL: [ListColumn; 10] = [
        ListColumn::Id,
        ListColumn::Pattern,
        ListColumn::Targets,
        ListColumn::AttnRank,
        ListColumn::ExpertRank,
        ListColumn::ExpertLayers,
        ListColumn::Dtype,
        ListColumn::Size,
        ListColumn::Tensors,
        ListColumn::Health,
    ];

    /// The columns of the Hub list: the local ones and downloads.
    pub const HUB: [ListColumn; 11] = {
        let mut c = [ListColumn::Downloads; 11];
        let mut i = 0;
        while i < ListColumn::ALL.len() {
            c[i] = ListColumn::ALL[i];
            i += 1;
        }
        c
    };

    pub fn title(self) -> &'static str {
        match self {
            ListColumn::Id => "ID",
            ListColumn::Pattern => "PATTERN",
            ListColumn::Targets => "TARGETS",
            ListColumn::AttnRank => "ATTN R",
            ListColumn::ExpertRank => "EXP R",
            ListColumn::ExpertLayers => "EXPERT LAYERS",
            ListColumn::Dtype => "DTYPE",
            ListColumn::Size => "SIZE",
            ListColumn::Tensors => "TENSORS",
            ListColumn::Health => "HEALTH",
            ListColumn::Downloads => "DOWNLOADS",
        }
    }

    pub fn right(self) -> bool {
        matches!(
            self,
            ListColumn::AttnRank
                | ListColumn::ExpertRank
                | ListColumn::Size
                | ListColumn::Tensors
                | ListColumn::Downloads
        )
    }

    pub fn cmp(self, a: &ListRow, b: &ListRow) -> Ordering {
        let o = match self {
            ListColumn::Id => a.id.cmp(&b.id),
            ListColumn::Pattern => a.pattern.cmp(b.pattern),
            ListColumn::Targets => a.targets.cmp(&b.targets),
            ListColumn::AttnRank => a.attn_rank.cmp(&b.attn_rank),
            ListColumn::ExpertRank => a.expert_rank.cmp(&b.expert_rank),
            ListColumn::ExpertLayers => (a.expert_layers.len(), &a.expert_layers)
                .cmp(&(b.expert_layers.len(), &b.expert_layers)),
            ListColumn::Dtype => a.dtype.cmp(&b.dtype),
            ListColumn::Size => a.bytes.cmp(&b.bytes),
            ListColumn::Tensors => a.tensors.cmp(&b.tensors),
            ListColumn::Health => a.health.cmp(&b.health),
            ListColumn::Downloads => a.downloads.cmp(&b.downloads),
        };
        o.then_with(|| a.id.cmp(&b.id))
    }
}
