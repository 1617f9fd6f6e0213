//! The `x` key's export panel: the settings of `lorascope export` (format, engine, rank rule,
//! data type, `--drop-unservable`, the output folder or `.gguf` file) over the screen, the export as a cancellable job
//! with progress, and its report; the written adapter joins the list. The export itself is the
//! library's (`crate::export`), as the command line's; this module only collects the options,
//! starts the job and shows what came back.

use super::app::{App, Effect};
use super::jobs::{Job, JobKey, JobOutput};
use super::keymap::{Command, Mode};
use super::ui::{fit, progress_line, Theme};
use crate::adapter::discovery;
use crate::adapter::layout::LayoutOptions;
use crate::adapter::Adapter;
use crate::compute::stats::Control;
use crate::export::{self, Engine, Options, RankRule, Report};
use crate::view::text;
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Widget};
use safetensors::Dtype;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What an export job produces: the report, and the written adapter as the list reads it.
#[derive(Debug)]
pub struct Exported {
    pub report: Report,
    pub adapters: Vec<Adapter>,
}

/// The job's work (on the blocking pool): the export, then the written folder read back.
pub fn run(a: &Adapter, out: &Path, opts: &Options, ctl: &Control) -> Result<Exported, String> {
    let report = export::export(a, out, opts, ctl).map_err(|e| describe(&e))?;
    let adapters = discovery::load_all(&discovery::discover_path(out), LayoutOptions::default());
    Ok(Exported { report, adapters })
}

/// The error for the panel: a refusal lists each reason once, with how many parts it concerns
/// and the first of them (an adapter with a saved router has one per layer), and the way out.
fn describe(e: &crate::Error) -> String {
    let crate::Error::Export(export::ExportError::Refused { items }) = e else {
        return e.to_string();
    };
    let mut reasons: Vec<(&str, Vec<&str>)> = vec![];
    for d in items {
        match reasons.iter_mut().find(|(r, _)| *r == d.reason) {
            Some((_, names)) => names.push(&d.name),
            None => reasons.push((&d.reason, vec![&d.name])),
        }
    }
    let mut s = format!(
        "the adapter has {} parts the output cannot carry:",
        items.len()
    );
    for (reason, names) in reasons {
        let more = match names.len() {
            1 => String::new(),
            n => format!(" and {} more", n - 1),
        };
        s += &format!("\n• {}{more}: {reason}", names[0]);
    }
    s + "\nset drop unservable to leave them out"
}

/// How ranks change (`--rank K`, `--energy F`, or neither).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    Keep,
    Rank,
    Energy,
}

/// The panel's rows, top to bottom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// A PEFT folder or a GGUF file (`--format`).
    Format,
    Engine,
    Rule,
    /// K or F, as the rule says (skipped when ranks are kept).
    Value,
    /// `--dtype`.
    Dtype,
    Drop,
    Folder,
}

const ENGINES: [Engine; 3] = [Engine::Peft, Engine::Vllm, Engine::Sglang];
const RULES: [Rule; 3] = [Rule::Keep, Rule::Rank, Rule::Energy];
/// `--dtype` as the command line spells it ("source": not given); q8_0 is GGUF's only.
pub const DTYPES: [&str; 5] = ["source", "f32", "f16", "bf16", "q8_0"];

/// Where the panel is: choosing (with the last attempt's outcome), exporting, or done.
#[derive(Debug, Clone)]
pub enum State {
    Editing,
    Failed(String),
    Cancelled,
    Running,
    Done(Arc<Exported>),
}

/// The panel of one adapter (`App::adapters[idx]`).
#[derive(Debug, Clone)]
pub struct ExportPanel {
    pub idx: usize,
    pub id: String,
    /// The adapter's largest rank (the default K is half of it).
    pub rank: usize,
    /// GGUF for llama.cpp (`--format gguf`), else a PEFT folder.
    pub gguf: bool,
    pub engine: Engine,
    pub rule: Rule,
    /// K and F as typed (each kept while the other rule is shown).
    pub k: String,
    pub f: String,
    /// An entry of `DTYPES`.
    pub dtype: &'static str,
    pub drop_unservable: bool,
    pub folder: String,
    /// The folder was typed: settings no longer rename it.
    typed: bool,
    pub field: Field,
    pub state: State,
}

impl ExportPanel {
    pub fn new(a: &Adapter, idx: usize, export_dir: &Path) -> ExportPanel {
        let rank = a.deltas.iter().map(|d| d.rank).max().unwrap_or(1);
        let mut p = ExportPanel {
            idx,
            id: a.id.clone(),
            rank,
            gguf: false,
            engine: Engine::Peft,
            rule: Rule::Keep,
            k: (rank / 2).max(1).to_string(),
            f: "0.99".into(),
            dtype: DTYPES[0],
            drop_unservable: false,
            folder: String::new(),
            typed: false,
            field: Field::Format,
            state: State::Editing,
        };
        p.rename(export_dir);
        p
    }

    pub fn modes(&self) -> Vec<Mode> {
        if self.field == Field::Folder && self.editable() {
            vec![Mode::ExportFolder, Mode::Global]
        } else {
            vec![Mode::Export, Mode::Global]
        }
    }

    fn editable(&self) -> bool {
        matches!(
            self.state,
            State::Editing | State::Failed(_) | State::Cancelled
        )
    }

    fn fields(&self) -> Vec<Field> {
        let mut f = vec![Field::Format, Field::Engine, Field::Rule];
        if self.rule != Rule::Keep {
            f.push(Field::Value);
        }
        f.extend([Field::Dtype, Field::Drop, Field::Folder]);
        f
    }

    /// The engines of the format: llama.cpp alone reads GGUF.
    fn engines(&self) -> &'static [Engine] {
        if self.gguf {
            &[Engine::Llamacpp]
        } else {
            &ENGINES
        }
    }

    /// The data types of the format (Q8_0 is a GGUF type).
    fn dtypes(&self) -> &'static [&'static str] {
        if self.gguf {
            &DTYPES
        } else {
            &DTYPES[..4]
        }
    }

    /// `--format gguf` or not: the engine and data type follow (llama.cpp; no Q8_0 in PEFT).
    fn set_gguf(&mut self, gguf: bool) {
        self.gguf = gguf;
        self.engine = self.engines()[0];
        if !self.dtypes().contains(&self.dtype) {
            self.dtype = DTYPES[0];
        }
    }

    /// `<export dir>/<adapter name>-<engine>[-r<K>|-e<F>][-<dtype>][.gguf]`, until a folder or
    /// file is typed.
    fn rename(&mut self, export_dir: &Path) {
        if self.typed {
            return;
        }
        let name = self
            .id
            .rsplit('/')
            .find(|s| !s.is_empty())
            .unwrap_or("adapter");
        let name = name.strip_suffix(".safetensors").unwrap_or(name);
        let rule = match self.rule {
            Rule::Keep => String::new(),
            Rule::Rank => format!("-r{}", self.k),
            Rule::Energy => format!("-e{}", self.f),
        };
        let name = name.strip_suffix(".gguf").unwrap_or(name);
        let dtype = match self.dtype {
            "source" => String::new(),
            d => format!("-{d}"),
        };
        let ext = if self.gguf { ".gguf" } else { "" };
        let name: String = format!("{name}-{}{rule}{dtype}{ext}", self.engine.as_str())
            .chars()
            .map(|c| {
                if c.is_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        self.folder = export_dir.join(name).display().to_string();
    }

    /// A character typed: into the folder, or K or F (digits, and `.` for F).
    pub fn input(&mut self, ch: char, export_dir: &Path) {
        if !self.editable() {
            return;
        }
        match (self.field, self.rule) {
            (Field::Folder, _) => {
                self.folder.push(ch);
                self.typed = true;
            }
            (Field::Value, Rule::Rank) if ch.is_ascii_digit() => self.k.push(ch),
            (Field::Value, Rule::Energy) if ch.is_ascii_digit() || ch == '.' => self.f.push(ch),
            _ => return,
        }
        self.rename(export_dir);
    }

    fn delete(&mut self, export_dir: &Path) {
        match (self.field, self.rule) {
            (Field::Folder, _) => {
                self.folder.pop();
                self.typed = true;
            }
            (Field::Value, Rule::Rank) => {
                self.k.pop();
            }
            (Field::Value, Rule::Energy) => {
                self.f.pop();
            }
            _ => return,
        }
        self.rename(export_dir);
    }

    fn step_field(&mut self, down: bool) {
        let f = self.fields();
        let i = f.iter().position(|&x| x == self.field).unwrap_or(0);
        let n = f.len();
        self.field = f[if down { (i + 1) % n } else { (i + n - 1) % n }];
    }

    /// ←/→: the previous or next choice; K by one, F by 0.01.
    fn change(&mut self, up: bool, export_dir: &Path) {
        fn cycle<T: PartialEq + Copy>(all: &[T], cur: T, up: bool) -> T {
            let i = all.iter().position(|&x| x == cur).unwrap_or(0);
            let n = all.len();
            all[if up { (i + 1) % n } else { (i + n - 1) % n }]
        }
        match self.field {
            Field::Format => self.set_gguf(!self.gguf),
            Field::Engine => self.engine = cycle(self.engines(), self.engine, up),
            Field::Dtype => self.dtype = cycle(self.dtypes(), self.dtype, up),
            Field::Rule => self.rule = cycle(&RULES, self.rule, up),
            Field::Value if self.rule == Rule::Rank => {
                let k = self.k.parse::<usize>().unwrap_or(self.rank);
                let k = if up { k + 1 } else { k.saturating_sub(1) };
                self.k = k.max(1).to_string();
            }
            Field::Value => {
                let f = self.f.parse::<f64>().unwrap_or(0.99);
                let f = if up { f + 0.01 } else { f - 0.01 };
                self.f = format!("{:.2}", f.clamp(0.01, 1.0));
            }
            Field::Drop => self.drop_unservable = !self.drop_unservable,
            Field::Folder => {}
        }
        self.rename(export_dir);
    }

    /// The rank rule, or why K or F cannot be used.
    fn rank_rule(&self) -> Result<RankRule, String> {
        match self.rule {
            Rule::Keep => Ok(RankRule::Keep),
            Rule::Rank => match self.k.parse::<usize>() {
                Ok(k) if k >= 1 => Ok(RankRule::Rank(k)),
                _ => Err(format!(
                    "K must be a whole number of at least 1, not '{}'",
                    self.k
                )),
            },
            Rule::Energy => match self.f.parse::<f64>() {
                Ok(f) if f > 0.0 && f <= 1.0 => Ok(RankRule::Energy(f)),
                _ => Err(format!("F must be in (0, 1], not '{}'", self.f)),
            },
        }
    }

    /// The folder to write: `~/` is the home folder, as a shell would have it.
    fn out(&self) -> Result<PathBuf, String> {
        let typed = self.folder.trim();
        if typed.is_empty() {
            return Err("type the folder to write".into());
        }
        match (typed.strip_prefix("~/"), std::env::var_os("HOME")) {
            (Some(rest), Some(home)) => Ok(PathBuf::from(home).join(rest)),
            _ => Ok(PathBuf::from(typed)),
        }
    }
}

/// `x`: opens the panel on adapter `idx`, or says in the status bar why it cannot export.
pub fn open(app: &mut App, idx: usize) {
    let Some(a) = app.adapters.get(idx) else {
        return;
    };
    let why = if app.remote.get(idx).copied().unwrap_or(false) {
        Some(format!(
            "{} has only its headers here: F in its views fetches it, then x exports it",
            a.id
        ))
    } else if let Some(e) = &a.error {
        Some(format!("{} cannot be exported: {e}", a.id))
    } else if a.deltas.is_empty() {
        Some(format!("{} has no LoRA delta to export", a.id))
    } else {
        None
    };
    match why {
        Some(msg) => app.status = Some(msg),
        None => app.export = Some(Box::new(ExportPanel::new(a, idx, &app.export_dir))),
    }
}

/// A key while the panel is open (it takes every key but `?` and Ctrl-c).
pub fn command(app: &mut App, c: Command) {
    let Some(p) = app.export.as_deref_mut() else {
        return;
    };
    let dir = &app.export_dir;
    match (&p.state, c) {
        (State::Running, Command::Escape) => {
            // The job's flag stops it at its next delta; a cancelled export leaves nothing.
            app.jobs.cancel(&JobKey::Export(p.idx));
            p.state = State::Cancelled;
        }
        (State::Done(_), Command::Escape | Command::ExportStart) => app.export = None,
        (State::Running | State::Done(_), _) => {}
        (_, Command::Escape) => app.export = None,
        (_, Command::ExportStart) => start(app),
        (_, Command::Up | Command::Down) => p.step_field(c == Command::Down),
        (_, Command::Left | Command::Right) => p.change(c == Command::Right, dir),
        (_, Command::FilterDelete) => p.delete(dir),
        _ => {}
    }
}

/// Enter: the export starts as a job, or the panel says what is wrong with its settings.
fn start(app: &mut App) {
    let Some(p) = app.export.as_mut() else {
        return;
    };
    let settings = p.rank_rule().and_then(|r| Ok((r, p.out()?)));
    let (rank, out) = match settings {
        Ok(s) => s,
        Err(e) => {
            p.state = State::Failed(e);
            return;
        }
    };
    let opts = Options {
        format: if p.gguf {
            export::Format::Gguf {
                q8_0: p.dtype == "q8_0",
            }
        } else {
            export::Format::Peft
        },
        engine: p.engine,
        rank,
        max_rank: None,
        dtype: match p.dtype {
            "f32" => Some(Dtype::F32),
            "f16" => Some(Dtype::F16),
            "bf16" => Some(Dtype::BF16),
            _ => None,
        },
        drop_unservable: p.drop_unservable,
        force: false,
        protected: export::protected_roots(app.fetch_cache.as_deref()),
    };
    let adapter = app.adapters[p.idx].clone();
    p.state = State::Running;
    let total = adapter.deltas.len();
    app.jobs
        .start(JobKey::Export(p.idx), total, |job| Effect::Export {
            job,
            adapter,
            out,
            opts,
        });
}

/// The export job ended: the report (and the written adapter joins the list), or the error.
pub fn done(app: &mut App, result: Result<JobOutput, String>) {
    let exported = match result {
        Ok(JobOutput::Export(e)) => e,
        Ok(_) => return,
        Err(e) => {
            match app.export.as_mut() {
                Some(p) => p.state = State::Failed(e),
                None => app.status = Some(JobKey::Export(0).failure(&e)),
            }
            return;
        }
    };
    let mut first = None;
    for a in &exported.adapters {
        first.get_or_insert(app.put_local(a.clone()));
    }
    // The panel shows the whole path; the status bar has room for the folder's name.
    let out = &exported.report.out;
    let name = out.file_name().unwrap_or(out.as_os_str()).to_string_lossy();
    app.status = Some(match first {
        Some(i) => {
            app.list.select_new(i);
            app.next_health();
            format!("exported {name}: it joins the list")
        }
        None => format!("exported {name}, but it does not read back as an adapter"),
    });
    if let Some(p) = app.export.as_mut() {
        p.state = State::Done(exported);
    }
}

/// `text` in lines of at most `w` columns, broken at spaces (a longer word is cut); the lines
/// after the first are indented by two, under the text of a `• ` item.
fn wrap(text: &str, w: usize) -> Vec<String> {
    let w = w.max(8);
    let mut out = vec![];
    let mut line = String::new();
    let mut has_word = false;
    for word in text.split(' ') {
        let need = line.chars().count() + usize::from(has_word) + word.chars().count();
        if has_word && need > w {
            out.push(std::mem::replace(&mut line, "  ".into()));
            has_word = false;
        }
        if has_word {
            line.push(' ');
        }
        line.push_str(word);
        has_word = true;
        while line.chars().count() > w {
            let head = line.chars().take(w).collect();
            let tail: String = line.chars().skip(w).collect();
            out.push(head);
            line = format!("  {tail}");
        }
    }
    out.push(line);
    out
}

/// `lo` or `lo–hi`.
fn span(values: impl Iterator<Item = usize>) -> String {
    let (lo, hi) = values.fold((usize::MAX, 0), |(lo, hi), v| (lo.min(v), hi.max(v)));
    match (lo, hi) {
        (usize::MAX, _) => "-".into(),
        (lo, hi) if lo == hi => lo.to_string(),
        (lo, hi) => format!("{lo}–{hi}"),
    }
}

/// The report in a few lines: what was written, ranks, energy, sizes, the check, what was left out.
pub fn summary(r: &Report) -> Vec<String> {
    let energy = r.deltas.iter().map(|d| d.energy_kept).fold(1.0, f64::min);
    let error = r
        .deltas
        .iter()
        .map(|d| d.relative_error)
        .fold(0.0, f64::max);
    let mut out = vec![
        format!("wrote {}", r.out.display()),
        format!(
            "{} for {}, {}, {} deltas: rank {} → {}",
            if r.format == "gguf" { "GGUF" } else { "PEFT" },
            r.engine.as_str(),
            r.dtype,
            r.deltas.len(),
            span(r.deltas.iter().map(|d| d.rank_before)),
            r.r
        ),
        format!(
            "energy kept ≥ {:.2} % · relative error ≤ {error:.2e}",
            100.0 * energy
        ),
        format!(
            "size {} → {} · verified: {} deltas re-read, within {:.1e} (tolerance {:.0e})",
            text::bytes(r.bytes_before),
            text::bytes(r.bytes_after),
            r.verified.deltas,
            r.verified.max_difference,
            r.verified.tolerance
        ),
    ];
    if let Some(v) = r.max_lora_rank {
        out.push(format!("vLLM: serve with --max-lora-rank {v}"));
    }
    out.extend(r.notes.iter().map(|n| format!("note: {n}")));
    if !r.dropped.is_empty() {
        out.push(format!("left out ({}):", r.dropped.len()));
        out.extend(
            r.dropped
                .iter()
                .map(|d| format!("  {}: {}", d.name, d.reason)),
        );
    }
    out
}

/// The panel over `area` (the screen's body).
pub fn draw(buf: &mut Buffer, area: Rect, p: &ExportPanel, app: &App, theme: Theme) {
    let w = area.width.saturating_sub(4).min(84);
    let inner = w.saturating_sub(2) as usize;
    let mut rows: Vec<Line> = Vec::new();
    let focus = |f: Field| p.editable() && p.field == f;
    let row = |f: Field, label: &str, value: Vec<Span<'static>>| {
        let mark = if focus(f) { " ▸ " } else { "   " };
        let mut spans = vec![
            Span::styled(mark.to_string(), theme.key()),
            Span::styled(format!("{label:<17}"), theme.header()),
        ];
        spans.extend(value);
        Line::from(spans)
    };
    let choices = |names: &[&str], chosen: usize| -> Vec<Span<'static>> {
        let mut v = vec![];
        for (i, n) in names.iter().enumerate() {
            v.push(if i == chosen {
                Span::styled(format!("[{n}]"), theme.marked())
            } else {
                Span::styled(format!(" {n} "), theme.dim())
            });
            v.push(Span::raw(" "));
        }
        v
    };
    let caret = |f: Field| Span::styled(if focus(f) { "▏" } else { "" }, theme.key());
    rows.push(row(
        Field::Format,
        "format",
        choices(&["peft folder", "gguf file"], usize::from(p.gguf)),
    ));
    let engines: Vec<&str> = p.engines().iter().map(|e| e.as_str()).collect();
    let engine = p.engines().iter().position(|&e| e == p.engine).unwrap_or(0);
    rows.push(row(Field::Engine, "for", choices(&engines, engine)));
    let rule = RULES.iter().position(|&r| r == p.rule).unwrap_or(0);
    rows.push(row(
        Field::Rule,
        "rank",
        choices(&["keep", "rank K", "energy F"], rule),
    ));
    let bold = Style::new().add_modifier(Modifier::BOLD);
    rows.push(match p.rule {
        Rule::Keep => row(
            Field::Value,
            "",
            vec![Span::styled(
                format!(" every delta keeps its rank (up to {})", p.rank),
                theme.dim(),
            )],
        ),
        Rule::Rank => row(
            Field::Value,
            "K",
            vec![
                Span::styled(format!(" {}", p.k), bold),
                caret(Field::Value),
                Span::styled(
                    format!("  best rank-K approximation (now up to {})", p.rank),
                    theme.dim(),
                ),
            ],
        ),
        Rule::Energy => row(
            Field::Value,
            "F",
            vec![
                Span::styled(format!(" {}", p.f), bold),
                caret(Field::Value),
                Span::styled("  per delta, the smallest K keeping F of Σσ²", theme.dim()),
            ],
        ),
    });
    let dtype = p.dtypes().iter().position(|&d| d == p.dtype).unwrap_or(0);
    rows.push(row(Field::Dtype, "dtype", choices(p.dtypes(), dtype)));
    let drop = if p.drop_unservable {
        "[x] leave out what the engine refuses, and say so"
    } else {
        "[ ] stop and list what the engine refuses"
    };
    rows.push(row(Field::Drop, "drop unservable", vec![Span::raw(drop)]));
    // The end of a long folder stays in view, as it is being typed.
    let room = inner.saturating_sub(22);
    let n = p.folder.chars().count();
    let shown: String = p
        .folder
        .chars()
        .skip((n + 1).saturating_sub(room))
        .collect();
    rows.push(row(
        Field::Folder,
        if p.gguf {
            "output file"
        } else {
            "output folder"
        },
        vec![
            Span::styled(format!(" {shown}"), bold),
            caret(Field::Folder),
        ],
    ));
    rows.push(Line::raw(""));
    let (msg, footer) = outcome(p, app, inner, theme);
    rows.extend(msg);
    let h = (rows.len() as u16 + 2).min(area.height);
    let r = Rect::new(
        area.x + area.width.saturating_sub(w) / 2,
        area.y + area.height.saturating_sub(h) / 3,
        w,
        h,
    );
    Clear.render(r, buf);
    let title = format!(" Export {} ", fit(&p.id, inner.saturating_sub(8)));
    Paragraph::new(rows)
        .block(
            Block::default()
                .borders(Borders::ALL)
                .title(title)
                .title_bottom(footer)
                .border_style(theme.title()),
        )
        .render(r, buf);
}

/// The panel's lower part (what happens, happened or went wrong) and its bottom line.
fn outcome(
    p: &ExportPanel,
    app: &App,
    inner: usize,
    theme: Theme,
) -> (Vec<Line<'static>>, &'static str) {
    let indent = |s: String, style: Style| Line::styled(format!("   {s}"), style);
    let editing = " Enter exports · Esc closes ";
    match &p.state {
        State::Editing => {
            let what = match p.engine {
                Engine::Peft => "a PEFT adapter folder (PeftModel.from_pretrained loads it)",
                Engine::Vllm => "a PEFT folder vLLM serves: one rank, its --max-lora-rank printed",
                Engine::Sglang => "a PEFT folder SGLang serves: one rank for the whole adapter",
                Engine::Llamacpp => "a GGUF file llama.cpp loads (export --format gguf)",
            };
            let lines = vec![
                indent(format!("writes {what};"), theme.dim()),
                indent(
                    "re-reads and checks it before moving it into place".into(),
                    theme.dim(),
                ),
            ];
            (lines, editing)
        }
        State::Failed(e) => {
            let lines = e
                .lines()
                .flat_map(|l| wrap(l, inner.saturating_sub(3)))
                .map(|l| indent(l, theme.error()))
                .collect();
            (lines, editing)
        }
        State::Cancelled => (
            vec![indent(
                "cancelled: nothing was written".into(),
                theme.error(),
            )],
            editing,
        ),
        State::Running => {
            let (done, total) = match app.jobs.get(&JobKey::Export(p.idx)) {
                Some(&Job::Running { done, total, .. }) => (done, total),
                _ => (0, 0),
            };
            let what = if total > 0 && done >= total {
                "writing and verifying…"
            } else {
                "reading and resizing the deltas…"
            };
            let mut bar = progress_line(done, total, inner.saturating_sub(3), theme);
            bar.spans.insert(0, Span::raw("   "));
            (
                vec![indent(what.into(), Style::new()), bar],
                " Esc cancels (nothing is left behind) ",
            )
        }
        State::Done(e) => {
            let lines = summary(&e.report)
                .into_iter()
                .enumerate()
                .flat_map(|(i, s)| {
                    let style = if i == 0 { theme.marked() } else { Style::new() };
                    wrap(&s, inner.saturating_sub(3))
                        .into_iter()
                        .map(move |l| indent(l, style))
                })
                .collect();
            (lines, " Enter or Esc closes ")
        }
    }
}
