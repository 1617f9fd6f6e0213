//! `timeline`: a training run's checkpoints measured as a timeline (docs/runs.md).

use super::compute::StderrProgress;
use super::print_json;
use super::table::Table;
use crate::adapter::catalog::Catalog;
use crate::adapter::layout::LayoutOptions;
use crate::compute::stats::{Control, Filter};
use crate::health::place;
use crate::run::cache::Cache;
use crate::run::timeline::{self, Timeline};
use crate::run::{self, Loaded};
use crate::view::text;
use anyhow::{bail, Result};
use clap::Args;
use std::path::Path;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct TimelineArgs {
    /// A run folder (Trainer checkpoint-N folders, mlx-lm or kohya checkpoint files) or its id
    /// from `scan`
    pub run: String,
    #[arg(long)]
    pub json: bool,
    /// Only this target (q_proj, gate_up_proj, ...)
    #[arg(long)]
    pub target: Option<String>,
    /// Only this layer
    #[arg(long)]
    pub layer: Option<usize>,
    /// Only this expert
    #[arg(long)]
    pub expert: Option<usize>,
    /// Worker threads (default: all cores)
    #[arg(long)]
    pub threads: Option<usize>,
    /// Measure every checkpoint again, reading and writing no cached statistics
    #[arg(long)]
    pub no_cache: bool,
}

/// The run `name` is: a folder holding one run (or the run's own folder among several), else
/// the id of a run in the cache.
fn find_run(ctx: &Catalog, name: &str) -> Result<Loaded> {
    let path = Path::new(name);
    let (runs, place) = if path.exists() {
        let src = crate::adapter::discovery::discover_path(path);
        (
            run::load(&src, LayoutOptions::default()),
            path.display().to_string(),
        )
    } else {
        let runs = run::load(&ctx.sources(&[]), LayoutOptions::default());
        (runs, "the cache".to_string())
    };
    let same = |l: &&Loaded| l.run.id == name || l.run.path == path;
    if let Some(l) = runs.iter().find(same) {
        return Ok(l.clone());
    }
    let ids = || {
        runs.iter()
            .map(|l| l.run.id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match runs.len() {
        0 => bail!("{name}: no training run in {place} (a folder of checkpoints of one adapter)"),
        // A folder holding one run is that run; a name must be a run's of the cache.
        1 if path.exists() => Ok(runs[0].clone()),
        _ if !path.exists() => bail!(
            "{name}: no training run of that name in {place} (runs: {})",
            ids()
        ),
        n => bail!("{name}: {n} runs in {place}; name one of them: {}", ids()),
    }
}

/// The timeline of the run `name` (see `find_run`), its deltas narrowed by `filter`, measured
/// with progress on stderr and lorascope's statistics cache (none with `no_cache`): `timeline`'s
/// and `plot --kind timeline`'s.
pub(super) fn measure_run(
    ctx: &Catalog,
    name: &str,
    filter: &Filter,
    threads: Option<usize>,
    no_cache: bool,
) -> Result<Timeline> {
    let loaded = find_run(ctx, name)?;
    let cache = if no_cache {
        None
    } else {
        Cache::default_dir().map(Cache::new)
    };
    let progress = StderrProgress::new("checkpoints");
    let cb = |d, t| progress.update(d, t);
    let ctl = Control {
        threads,
        progress: Some(&cb),
        cancel: None,
    };
    let tl = timeline::compute(loaded, filter, cache, &ctl)?;
    progress.finish();
    Ok(tl)
}

pub fn cmd_timeline(ctx: &Catalog, args: TimelineArgs) -> Result<ExitCode> {
    let filter = Filter {
        target: args.target.clone(),
        layer: args.layer,
        expert: args.expert,
    };
    let tl = measure_run(ctx, &args.run, &filter, args.threads, args.no_cache)?;
    if args.json {
        print_json(&tl)?;
    } else {
        out!("{}", render(&tl));
    }
    Ok(ExitCode::SUCCESS)
}

/// At most this many step columns in the delta table (first, last and evenly between).
const MAX_STEP_COLUMNS: usize = 8;

fn opt(x: Option<f64>) -> String {
    x.map_or("-".into(), text::num)
}

/// The human timeline: the checkpoints with the trainer's log, then each delta's ‖ΔW‖_F over
/// (at most 8 of) the steps with its last 99 %-energy rank and similarity, then the groups.
pub fn render(tl: &Timeline) -> String {
    let n = tl.checkpoints.len();
    let (first, last) = (
        tl.checkpoints.first().map_or(0, |c| c.step),
        tl.checkpoints.last().map_or(0, |c| c.step),
    );
    let mut out = format!(
        "run {} ({}, {n} checkpoints, steps {first}–{last})\n\n",
        tl.run,
        tl.scheme.as_str()
    );
    let mut t = Table::new(&[
        "STEP>",
        "LOSS>",
        "LEARNING RATE>",
        "GRAD NORM>",
        "CHECKPOINT",
    ]);
    for c in &tl.checkpoints {
        t.row(vec![
            c.step.to_string(),
            opt(c.loss),
            opt(c.learning_rate),
            opt(c.grad_norm),
            match &c.error {
                Some(e) => format!("{}: {e}", c.id),
                None => c.id.clone(),
            },
        ]);
    }
    out.push_str(&t.render());
    let shown: Vec<usize> = if n <= MAX_STEP_COLUMNS {
        (0..n).collect()
    } else {
        let mut v: Vec<usize> = (0..MAX_STEP_COLUMNS)
            .map(|j| j * (n - 1) / (MAX_STEP_COLUMNS - 1))
            .collect();
        v.dedup();
        v
    };
    let heads: Vec<String> = ["DELTA".to_string()]
        .into_iter()
        .chain(
            shown
                .iter()
                .map(|&i| format!("@{}>", tl.checkpoints[i].step)),
        )
        .chain(["E99>", "SIM PREV>", "WOKE AT>", "NOTE"].map(String::from))
        .collect();
    let refs: Vec<&str> = heads.iter().map(String::as_str).collect();
    let mut t = Table::new(&refs);
    for (d, g) in tl.deltas.iter().zip(&tl.groups) {
        let last_read = d.steps.iter().rev().find(|s| s.finite.is_some());
        let mut cells = vec![place(d.layer, d.target.as_str(), d.expert)];
        cells.extend(shown.iter().map(|&i| opt(d.steps[i].fro_norm)));
        cells.push(
            last_read
                .and_then(|s| s.energy_rank_99)
                .map_or("-".into(), |r| r.to_string()),
        );
        cells.push(opt(last_read.and_then(|s| s.similarity_prev)));
        cells.push(g.woke_at.map_or("-".into(), |s| s.to_string()));
        let note = match (g.never_moved, g.still_growing) {
            (true, _) => "never moved",
            (_, true) => "still growing",
            _ => "",
        };
        cells.push(note.into());
        t.row(cells);
    }
    out.push_str(&format!(
        "\n‖ΔW‖_F by step{}\n",
        if shown.len() < n {
            format!(" ({} of {n} steps shown; --json has all)", shown.len())
        } else {
            String::new()
        }
    ));
    out.push_str(&t.render());
    let late = tl
        .groups
        .iter()
        .filter(|g| g.woke_at.is_some_and(|s| s > first))
        .count();
    let never = tl.groups.iter().filter(|g| g.never_moved).count();
    let growing = tl.groups.iter().filter(|g| g.still_growing).count();
    out.push_str(&format!(
        "\n{} groups: {late} woke after step {first}, {never} never moved, {growing} still growing\n",
        tl.groups.len()
    ));
    out
}
