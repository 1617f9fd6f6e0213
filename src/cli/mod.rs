//! The command line: argument parsing, adapter lookup, and human/JSON output of each command.

// Every human text output goes through these (and so through `text::escape_controls`): names
// and messages come from files, folders and servers and must not drive the terminal.
macro_rules! out {
    ($($arg:tt)*) => { $crate::cli::write_text(&mut std::io::stdout(), &format!($($arg)*)) };
}
macro_rules! outln {
    ($($arg:tt)*) => { $crate::cli::write_text(&mut std::io::stdout(), &format!("{}\n", format_args!($($arg)*))) };
}
macro_rules! errln {
    ($($arg:tt)*) => { $crate::cli::write_text(&mut std::io::stderr(), &format!("{}\n", format_args!($($arg)*))) };
}

mod check;
mod compute;
mod export;
mod hub;
mod json_out;
mod plot;
mod report;
mod sarif;
pub mod table;
mod timeline;
mod tui;

pub use table::Table;

use crate::adapter::catalog::Catalog;
use crate::adapter::discovery::{self, ScanRequest};
use crate::adapter::layout::{LayoutOptions, LoraBLayout};
use crate::adapter::Adapter;
use crate::view::text;
use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "lorascope",
    version,
    about = "Explore LoRA adapters of Mixture-of-Experts models (gpt-oss first)"
)]
pub struct Cli {
    /// Hugging Face hub cache folder (default: HF_HUB_CACHE, HF_HOME/hub, ~/.cache/huggingface/hub)
    #[arg(long, global = true, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// List every adapter in the cache and in the given paths (reads headers only)
    Scan {
        /// Adapter folders, folders of adapters, .safetensors files or hub caches
        paths: Vec<PathBuf>,
        #[arg(long)]
        json: bool,
        /// List the adapters of a base model on the Hub instead (headers only, over HTTP)
        #[arg(long)]
        remote: bool,
        #[command(flatten)]
        discover: hub::DiscoverArgs,
    },
    /// Show an adapter's tensors and logical deltas
    Inspect {
        /// An id from `scan` (org/name, org/name/sub) or a path
        adapter: String,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        read: ReadOpts,
        /// ADAPTER is a Hub repo (ORG/NAME[/SUB][@REV]): read its headers over HTTP Range requests
        #[arg(long)]
        remote: bool,
    },
    /// Statistics of every delta: norms, effective/stable rank, singular values
    Stats(compute::StatsArgs),
    /// Health of adapters: dead or non-finite LoRA, outliers, unused rank, vLLM/SGLang serving
    /// (exit 3 when a finding reaches --fail-on)
    Check(check::CheckArgs),
    /// Compare two adapters delta by delta: norms, cosine, subspace similarity
    Compare(compute::CompareArgs),
    /// Summarise many adapters as the survey does: patterns, ranks, dtypes, expert layers
    Report(report::ReportArgs),
    /// Download an adapter repo's config and safetensors into the hub cache (resumable)
    Fetch(hub::FetchArgs),
    /// Write the adapter as a PEFT adapter an engine serves: layouts converted, scale folded,
    /// ranks reduced per delta (exact SVD), verified after writing
    Export(export::ExportArgs),
    /// Draw statistics to PNG: layers or experts heatmap, or singular value spectrum
    Plot(plot::PlotArgs),
    /// A training run's checkpoints as a timeline: every delta's norms, ranks and subspace
    /// similarity per step, when groups woke up, which never moved, the trainer's loss
    Timeline(timeline::TimelineArgs),
    /// Open the explorer (also what `lorascope` alone does on a terminal)
    Tui(tui::TuiArgs),
    /// Write a demo cache with one adapter of each layout (real gpt-oss-20b shapes, small ranks)
    Demo {
        /// Folder to write (default: ~/.cache/lorascope/demo-hub)
        dir: Option<PathBuf>,
    },
}

/// How factors are read.
#[derive(Args, Debug, Clone, Default)]
pub struct ReadOpts {
    /// Column order of PEFT's packed expert lora_B (some trainers wrote expert-major)
    #[arg(long, value_enum, default_value = "stride-e")]
    pub lora_b_layout: LoraBLayoutArg,
    /// Fused gate_up deltas as separate gate_proj and up_proj deltas (B's rows: interleaved
    /// for gpt-oss, halves otherwise)
    #[arg(long)]
    pub split_gate_up: bool,
}

/// The command line's names for `layout::LoraBLayout` (the library type knows nothing of clap).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LoraBLayoutArg {
    #[default]
    /// PEFT: `B.reshape(out, r, E)`, expert e owns columns k·E + e.
    StrideE,
    /// Some trainers' files: `B.reshape(out, E, r)`, expert e owns columns e·r … e·r+r-1.
    ExpertMajor,
}

impl From<LoraBLayoutArg> for LoraBLayout {
    fn from(a: LoraBLayoutArg) -> LoraBLayout {
        match a {
            LoraBLayoutArg::StrideE => LoraBLayout::StrideE,
            LoraBLayoutArg::ExpertMajor => LoraBLayout::ExpertMajor,
        }
    }
}

impl ReadOpts {
    pub fn layout(&self) -> LayoutOptions {
        LayoutOptions {
            lora_b_layout: self.lora_b_layout.into(),
            split_gate_up: self.split_gate_up,
        }
    }
}

/// Runs the command line and maps errors to a one-line message and a non-zero exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            errln!("lorascope: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let cache = discovery::cache_root(cli.cache.as_deref());
    let ctx = Catalog {
        explicit_cache: cli.cache.is_some(),
        cache,
    };
    match cli.command {
        // Scripts and CI pipe `lorascope`: they keep getting the scan table.
        None if std::io::stdout().is_terminal() => tui::cmd_tui(&ctx, tui::TuiArgs::default()),
        None => cmd_default(&ctx),
        Some(Command::Tui(args)) => tui::cmd_tui(&ctx, args),
        Some(Command::Scan {
            paths,
            json,
            remote: true,
            discover,
        }) => hub::cmd_scan_remote(&ctx, &paths, json, &discover),
        Some(Command::Scan {
            paths,
            json,
            discover,
            ..
        }) => {
            discover.only_with_remote("scan --remote")?;
            cmd_scan(&ctx, &paths, json)
        }
        Some(Command::Inspect {
            adapter,
            json,
            read,
            remote: true,
        }) => hub::cmd_inspect_remote(&adapter, json, read.layout()),
        Some(Command::Inspect {
            adapter,
            json,
            read,
            remote: false,
        }) => cmd_inspect(&ctx, &adapter, json, read.layout()),
        Some(Command::Stats(args)) => compute::cmd_stats(&ctx, args),
        Some(Command::Compare(args)) => compute::cmd_compare(&ctx, args),
        Some(Command::Check(args)) => check::cmd_check(&ctx, args),
        Some(Command::Report(args)) => report::cmd_report(&ctx, args),
        Some(Command::Fetch(args)) => hub::cmd_fetch(&ctx, args),
        Some(Command::Plot(args)) => plot::cmd_plot(&ctx, args),
        Some(Command::Timeline(args)) => timeline::cmd_timeline(&ctx, args),
        Some(Command::Export(args)) => export::cmd_export(&ctx, args),
        Some(Command::Demo { dir }) => cmd_demo(dir),
    }
}

/// Writes human text with its control characters escaped (a closed pipe is not an error here).
pub(crate) fn write_text(w: &mut impl Write, text: &str) {
    let _ = w.write_all(text::escape_controls(text).as_bytes());
    let _ = w.flush();
}

fn print_json<T: Serialize>(v: &T) -> Result<()> {
    // Stdout is line-buffered: unbuffered, pretty JSON costs a write call per line (120 000 of
    // them, a third of the run, for a 2400-delta adapter's statistics).
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let mut ser = serde_json::Serializer::with_formatter(&mut out, json_out::Escaping::pretty());
    let written = v
        .serialize(&mut ser)
        .map_err(std::io::Error::from)
        .and_then(|_| writeln!(out))
        .and_then(|_| out.flush());
    match written {
        // A reader that stopped early (`| head`, `| jq` quitting): as for text, not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

/// The adapters `lorascope` with no subcommand shows: the cache, else the demo cache.
fn default_adapters(ctx: &Catalog, paths: &[PathBuf]) -> Result<(Vec<Adapter>, Option<String>)> {
    let (src, note) = crate::synth::demo::sources_or_demo(ctx, paths)?;
    Ok((discovery::load_all(&src, LayoutOptions::default()), note))
}

fn cmd_default(ctx: &Catalog) -> Result<ExitCode> {
    let (adapters, note) = default_adapters(ctx, &[])?;
    if let Some(n) = note {
        errln!("{n}");
    }
    out!("{}", scan_table_runs(&adapters));
    Ok(ExitCode::SUCCESS)
}

fn cmd_scan(ctx: &Catalog, paths: &[PathBuf], json: bool) -> Result<ExitCode> {
    let req = ScanRequest {
        cache: ctx.cache.clone(),
        paths: paths.to_vec(),
        layout: LayoutOptions::default(),
    };
    let adapters = discovery::scan(&req);
    if json {
        print_json(&scan_json(&adapters))?;
    } else {
        if adapters.is_empty() {
            errln!(
                "no adapters found in {}",
                ctx.cache
                    .as_deref()
                    .map_or("the hub cache".into(), |c| c.display().to_string())
            );
        }
        out!("{}", scan_table_runs(&adapters));
    }
    Ok(ExitCode::SUCCESS)
}

/// One row of `scan`: an adapter, or a run in place of its checkpoints.
enum ScanRow<'a> {
    Adapter(&'a Adapter),
    Run(&'a crate::run::Run),
}

/// The rows of a scan: each run (`run::detect`) at the place of its first checkpoint, its
/// other checkpoints folded into it.
fn scan_rows<'a>(adapters: &'a [Adapter], runs: &'a [crate::run::Run]) -> Vec<ScanRow<'a>> {
    let mut at = std::collections::BTreeMap::new();
    let mut member = vec![false; adapters.len()];
    for r in runs {
        let first = r.members.iter().map(|m| m.index).min().unwrap_or(0);
        at.insert(first, r);
        r.members.iter().for_each(|m| member[m.index] = true);
    }
    let mut rows = Vec::with_capacity(adapters.len());
    for (i, a) in adapters.iter().enumerate() {
        if let Some(r) = at.get(&i) {
            rows.push(ScanRow::Run(r));
        } else if !member[i] {
            rows.push(ScanRow::Adapter(a));
        }
    }
    rows
}

/// `scan --json`: adapters as `Adapter::summary`, a run as its summary with `kind` `run` and
/// `checkpoints`, `steps`, `scheme`, `checkpoint_ids`, `unreadable` added (docs/json.md).
fn scan_json(adapters: &[Adapter]) -> Vec<serde_json::Value> {
    let runs = crate::run::detect::detect(adapters);
    scan_rows(adapters, &runs)
        .into_iter()
        .map(|row| match row {
            ScanRow::Adapter(a) => serde_json::to_value(a.summary()).unwrap_or_default(),
            ScanRow::Run(r) => {
                let mut v =
                    serde_json::to_value(crate::run::summary(adapters, r)).unwrap_or_default();
                let (first, last) = r.steps();
                let ids: Vec<&str> = r
                    .members
                    .iter()
                    .map(|m| adapters[m.index].id.as_str())
                    .collect();
                let bad = r
                    .members
                    .iter()
                    .filter(|m| crate::run::detect::unreadable(&adapters[m.index]))
                    .count();
                if let Some(o) = v.as_object_mut() {
                    o.insert("kind".into(), "run".into());
                    o.insert("checkpoints".into(), r.members.len().into());
                    o.insert("steps".into(), serde_json::json!([first, last]));
                    o.insert("scheme".into(), r.scheme.as_str().into());
                    o.insert("checkpoint_ids".into(), ids.into());
                    o.insert("unreadable".into(), bad.into());
                }
                v
            }
        })
        .collect()
}

/// The human table of `scan` with runs folded into one row each: `run: N checkpoints, steps
/// A–B` in the pattern column; its unreadable checkpoints are listed under `errors:`.
pub fn scan_table_runs(adapters: &[Adapter]) -> String {
    let runs = crate::run::detect::detect(adapters);
    let rows = scan_rows(adapters, &runs).into_iter().map(|row| match row {
        ScanRow::Adapter(a) => (a.summary(), None, vec![], vec![]),
        ScanRow::Run(r) => {
            let (first, last) = r.steps();
            let label = format!("run: {} checkpoints, steps {first}–{last}", r.members.len());
            let errors = r
                .members
                .iter()
                .map(|m| &adapters[m.index])
                .filter(|a| crate::run::detect::unreadable(a))
                .map(|a| {
                    let why = a
                        .error
                        .clone()
                        .unwrap_or_else(|| "no safetensors file".into());
                    (a.id.clone(), why)
                })
                .collect();
            (
                crate::run::summary(adapters, r),
                Some(label),
                errors,
                vec![],
            )
        }
    });
    table_of(rows, &[])
}

/// The human table of `scan`, with error messages listed under it.
pub fn scan_table(adapters: &[Adapter]) -> String {
    scan_table_with(adapters.iter().map(|a| (a, vec![])), &[])
}

/// [`scan_table`] with more columns: `extra` names them, each row brings its cells.
pub(crate) fn scan_table_with<'a>(
    rows: impl Iterator<Item = (&'a Adapter, Vec<String>)>,
    extra: &[&str],
) -> String {
    table_of(
        rows.map(|(a, more)| (a.summary(), None, vec![], more)),
        extra,
    )
}

/// A scan row for the table: its summary, a pattern cell that replaces the summary's, errors of
/// its parts (id, message) and extra cells.
type TableRow = (
    crate::adapter::Summary,
    Option<String>,
    Vec<(String, String)>,
    Vec<String>,
);

fn table_of(rows: impl Iterator<Item = TableRow>, extra: &[&str]) -> String {
    let mut heads = vec![
        "ID",
        "PATTERN",
        "TARGETS",
        "ATTN R>",
        "EXPERT R>",
        "EXPERT LAYERS",
        "DTYPE",
        "SIZE>",
        "TENSORS>",
    ];
    heads.extend_from_slice(extra);
    let mut t = Table::new(&heads);
    let mut errors = String::new();
    let mut unknown = String::new();
    for (s, pattern, part_errors, more) in rows {
        let mut cells = vec![
            s.id.clone(),
            pattern.unwrap_or_else(|| text::pattern_cell(s.pattern, s.base_of)),
            text::compact_targets(&s.targets),
            text::opt(s.attention_rank),
            text::opt(s.expert_rank),
            text::layers(&s.expert_layers),
            if s.dtypes.is_empty() {
                "-".into()
            } else {
                s.dtypes.join(",")
            },
            text::bytes(s.bytes),
            s.tensors.to_string(),
        ];
        cells.extend(more);
        t.row(cells);
        // One line each, whatever the id or message holds.
        let line = |what: &str| text::escape_line(&format!("  {}: {what}", s.id)).into_owned();
        if let Some(e) = &s.error {
            errors.push_str(&line(e));
            errors.push('\n');
        }
        for (id, e) in part_errors {
            errors.push_str(&text::escape_line(&format!("  {id}: {e}")));
            errors.push('\n');
        }
        if let Some(n) = s.notes.iter().find(|n| n.starts_with("unrecognised:")) {
            unknown.push_str(&line(n));
            unknown.push('\n');
        }
    }
    let mut out = t.render();
    if !errors.is_empty() {
        out.push_str("\nerrors:\n");
        out.push_str(&errors);
    }
    if !unknown.is_empty() {
        out.push_str("\nnot understood:\n");
        out.push_str(&unknown);
    }
    out
}

#[derive(Serialize)]
struct TensorJson<'a> {
    name: &'a str,
    file: String,
    dtype: String,
    shape: &'a [usize],
    bytes: u64,
    role: &'static str,
    module: &'a str,
    layer: Option<usize>,
    target: &'a str,
    /// Why a tensor of role `unknown` is not understood (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    unknown: Option<&'a str>,
}

#[derive(Serialize)]
struct InspectJson<'a> {
    id: &'a str,
    path: String,
    revision: Option<&'a str>,
    kind: crate::adapter::Kind,
    pattern: crate::adapter::Pattern,
    error: Option<&'a str>,
    notes: &'a [String],
    tensors: Vec<TensorJson<'a>>,
    deltas: &'a [crate::adapter::layout::Delta],
    full_tensors: &'a [crate::adapter::layout::FullTensor],
}

fn cmd_inspect(ctx: &Catalog, id: &str, json: bool, layout: LayoutOptions) -> Result<ExitCode> {
    let a = ctx.find(id, layout)?;
    show_inspect(&a, json)
}

/// Prints an adapter as `inspect` does (local or remote); fails when it is an `error`.
fn show_inspect(a: &Adapter, json: bool) -> Result<ExitCode> {
    if json {
        let tensors = a
            .tensors
            .iter()
            .map(|t| TensorJson {
                name: &t.info.name,
                file: a.files[t.file]
                    .path
                    .file_name()
                    .map_or(String::new(), |n| n.to_string_lossy().into_owned()),
                dtype: t.info.dtype_name(),
                shape: &t.info.shape,
                bytes: t.info.nbytes(),
                role: t.name.role.as_str(),
                module: &t.name.module,
                layer: t.name.layer,
                target: t.name.target.as_str(),
                unknown: t.name.unknown.as_deref(),
            })
            .collect();
        print_json(&InspectJson {
            id: &a.id,
            path: a.path.display().to_string(),
            revision: a.revision.as_deref(),
            kind: a.kind,
            pattern: a.pattern(),
            error: a.error.as_deref(),
            notes: &a.notes,
            tensors,
            deltas: &a.deltas,
            full_tensors: &a.full,
        })?;
    } else {
        out!("{}", inspect_text(a));
    }
    if let Some(e) = &a.error {
        bail!("{}: {e}", a.id);
    }
    Ok(ExitCode::SUCCESS)
}

/// The human view of `inspect`: header, tensor tree by layer, deltas.
pub fn inspect_text(a: &Adapter) -> String {
    let s = a.summary();
    let mut out = format!("{}\n  path      {}\n", a.id, a.path.display());
    if let Some(r) = &a.revision {
        out.push_str(&format!("  revision  {r}\n"));
    }
    out.push_str(&format!(
        "  kind      {} ({})\n  files     {}  tensors {}  size {}  dtypes {}\n",
        a.kind.as_str(),
        a.pattern().as_str(),
        s.files,
        s.tensors,
        text::bytes(s.bytes),
        s.dtypes.join(",")
    ));
    if let Some(c) = a.config.config() {
        out.push_str(&format!(
            "  config    r={} lora_alpha={} rslora={} base={}\n",
            c.r,
            c.lora_alpha,
            c.use_rslora,
            c.base_model.as_deref().unwrap_or("?")
        ));
    }
    if let Some(e) = &a.error {
        out.push_str(&format!("  error     {e}\n"));
    }
    for n in &a.notes {
        out.push_str(&format!("  note      {n}\n"));
    }
    if !a.tensors.is_empty() {
        out.push_str("\nTensors\n");
        let mut order: Vec<usize> = (0..a.tensors.len()).collect();
        order.sort_by_key(|&i| (a.tensors[i].name.layer, &a.tensors[i].info.name));
        let mut t = Table::new(&["  NAME", "ROLE", "SHAPE", "DTYPE", "BYTES>"]);
        let mut last_layer = None;
        for i in order {
            let e = &a.tensors[i];
            if last_layer != Some(e.name.layer) {
                last_layer = Some(e.name.layer);
                let head = e
                    .name
                    .layer
                    .map_or("(no layer)".into(), |l| format!("layer {l}"));
                t.row(vec![head]);
            }
            let short = text::short_name(&e.info.name);
            t.row(vec![
                format!("  {short}"),
                e.name.role.as_str().into(),
                format!("{:?}", e.info.shape),
                e.info.dtype_name(),
                text::bytes(e.info.nbytes()),
            ]);
        }
        out.push_str(&t.render());
    }
    if !a.deltas.is_empty() {
        out.push_str(&format!("\nDeltas ({})\n", a.deltas.len()));
        let mut t = Table::new(&[
            "LAYER>", "TARGET", "EXPERT>", "RANK>", "SCALE>", "OUT>", "IN>",
        ]);
        for d in &a.deltas {
            t.row(vec![
                text::opt(d.layer),
                d.target.to_string(),
                text::opt(d.expert),
                d.rank.to_string(),
                text::num(d.scale),
                d.out_dim.to_string(),
                d.in_dim.to_string(),
            ]);
        }
        out.push_str(&t.render());
    }
    out
}

fn cmd_demo(dir: Option<PathBuf>) -> Result<ExitCode> {
    let dir = match dir {
        Some(d) => d,
        None => crate::adapter::catalog::demo_dir()
            .context("no HOME or XDG_CACHE_HOME for the demo cache")?,
    };
    let n = crate::synth::demo::write_demo(&dir)
        .with_context(|| format!("writing {}", dir.display()))?;
    outln!("wrote {n} demo repos to {}", dir.display());
    outln!("try: lorascope scan --cache {}", dir.display());
    Ok(ExitCode::SUCCESS)
}
